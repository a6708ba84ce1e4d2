//! Which format a file is in, decided by its content, never by its name.

use serde::Serialize;

/// The format of a file, as `scan` and `inspect` report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum FileFormat {
    /// safetensors: an 8-byte little-endian header length, then a JSON header.
    #[serde(rename = "safetensors")]
    Safetensors,
    /// A PyTorch zip checkpoint (`torch.save` since 1.6): a zip with `<root>/data.pkl`.
    #[serde(rename = "pytorch-zip")]
    PytorchZip,
    /// A zip that is not a PyTorch checkpoint.
    #[serde(rename = "zip")]
    Zip,
    /// A legacy PyTorch checkpoint (before 1.6): stacked pickles, then raw storages.
    /// Reported as `pickle` in JSON, because that is what it is.
    #[serde(rename = "pickle")]
    PytorchLegacy,
    /// A raw pickle stream (any protocol, including 0 and 1 which have no magic byte).
    #[serde(rename = "pickle")]
    Pickle,
    /// GGUF (llama.cpp), read by [`crate::gguf`].
    #[serde(rename = "gguf")]
    Gguf,
    /// Python source, recognised by name when the content is no binary format (Python has no
    /// magic number), reviewed by [`crate::python`]. [`detect_format`] never returns it.
    #[serde(rename = "python")]
    Python,
    /// Anything else.
    #[serde(rename = "unknown")]
    Unknown,
}

impl FileFormat {
    /// The name used in JSON output (`"safetensors"`, `"pytorch-zip"`, `"pickle"`, ...).
    pub fn json_name(self) -> &'static str {
        match self {
            FileFormat::Safetensors => "safetensors",
            FileFormat::PytorchZip => "pytorch-zip",
            FileFormat::Zip => "zip",
            FileFormat::PytorchLegacy | FileFormat::Pickle => "pickle",
            FileFormat::Gguf => "gguf",
            FileFormat::Python => "python",
            FileFormat::Unknown => "unknown",
        }
    }

    /// Whether reading this format means running the restricted unpickler.
    pub fn is_pickle_based(self) -> bool {
        matches!(
            self,
            FileFormat::PytorchZip | FileFormat::PytorchLegacy | FileFormat::Pickle
        )
    }
}

impl std::fmt::Display for FileFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FileFormat::Safetensors => "safetensors",
            FileFormat::PytorchZip => "PyTorch zip checkpoint",
            FileFormat::Zip => "zip archive",
            FileFormat::PytorchLegacy => "legacy PyTorch checkpoint (stacked pickles)",
            FileFormat::Pickle => "pickle",
            FileFormat::Gguf => "GGUF",
            FileFormat::Python => "Python source",
            FileFormat::Unknown => "unknown",
        })
    }
}

/// Signature of a local file header, which a zip (and so a PyTorch checkpoint) starts with.
pub const ZIP_LOCAL_HEADER_MAGIC: &[u8; 4] = b"PK\x03\x04";

/// The legacy PyTorch magic number `0x1950a86a20f9469cfc6c` as the first pickle writes it:
/// `PROTO 2`, `LONG1` of 10 bytes, little-endian.
pub const TORCH_LEGACY_PREFIX: [u8; 14] = [
    0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19,
];

/// Detects the format of `bytes` (a whole file, or at least its first few kilobytes) by content.
///
/// The decision uses only the bytes at offset 0, as PyTorch does: a pickle with a zip appended is
/// a pickle (and `scan` reports the appended zip as a finding), and a zip with bytes before its
/// first local header is not a zip.
pub fn detect_format(bytes: &[u8]) -> FileFormat {
    if bytes.starts_with(ZIP_LOCAL_HEADER_MAGIC) {
        return if first_zip_member_is_data_pkl(bytes) {
            FileFormat::PytorchZip
        } else {
            FileFormat::Zip
        };
    }
    if bytes.starts_with(b"GGUF") {
        return FileFormat::Gguf;
    }
    if bytes.starts_with(&TORCH_LEGACY_PREFIX) {
        return FileFormat::PytorchLegacy;
    }
    if looks_like_safetensors(bytes) {
        return FileFormat::Safetensors;
    }
    if crate::pickle::looks_like_pickle(bytes) {
        return FileFormat::Pickle;
    }
    FileFormat::Unknown
}

/// An 8-byte header length followed by a JSON object (after at most a little whitespace, which
/// the validator then refuses). Whether the length fits the file is for the safetensors
/// validator to say too, so that a truncated or sloppy file is reported as an invalid
/// safetensors file rather than as unknown.
fn looks_like_safetensors(bytes: &[u8]) -> bool {
    let Some((length_bytes, rest)) = bytes.split_first_chunk::<8>() else {
        return false;
    };
    let first_non_space = rest
        .iter()
        .take(64)
        .find(|byte| !matches!(byte, b' ' | b'\t' | b'\r' | b'\n'));
    u64::from_le_bytes(*length_bytes) >= 2 && first_non_space == Some(&b'{')
}

/// Whether the first local header names `<root>/data.pkl` (PyTorch writes it first).
fn first_zip_member_is_data_pkl(bytes: &[u8]) -> bool {
    let Some(&[low, high]) = bytes.get(26..28) else {
        return false;
    };
    let name_len = usize::from(u16::from_le_bytes([low, high]));
    bytes
        .get(30..30 + name_len)
        .is_some_and(|name| name.ends_with(b"/data.pkl") || name == b"data.pkl")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_by_content() {
        let mut safetensors = 2u64.to_le_bytes().to_vec();
        safetensors.extend_from_slice(b"{}");
        assert_eq!(detect_format(&safetensors), FileFormat::Safetensors);
        assert_eq!(detect_format(b"GGUF\x03\x00\x00\x00"), FileFormat::Gguf);
        assert_eq!(
            detect_format(&TORCH_LEGACY_PREFIX),
            FileFormat::PytorchLegacy
        );
        assert_eq!(detect_format(b"\x89PNG\r\n\x1a\n"), FileFormat::Unknown);
        assert_eq!(detect_format(b""), FileFormat::Unknown);
        assert_eq!(detect_format(b"PK\x03\x04"), FileFormat::Zip);
    }

    #[test]
    fn truncated_safetensors_is_still_safetensors() {
        let mut bytes = 1000u64.to_le_bytes().to_vec();
        bytes.extend_from_slice(b"{}");
        assert_eq!(detect_format(&bytes), FileFormat::Safetensors);
    }
}
