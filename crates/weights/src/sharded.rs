//! Sharded checkpoints: `*.index.json` files mapping tensor names to shard files.
//!
//! An index is `{"metadata": {...}, "weight_map": {"<tensor>": "<shard file>", ...}}`. Shard
//! paths come from strangers, so each must be a plain, normalized relative path that stays inside
//! the index's folder. When the shards are opened, every tensor must be found exactly once, in
//! the shard the index names.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::{self, DeserializeSeed, Deserializer as _, MapAccess, Visitor};

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::format::{FileFormat, detect_format};
use crate::mapped::MappedFile;
use crate::policy::{LoadPolicy, WeightsPolicy};

/// Largest index file we read, in bytes.
pub const MAX_INDEX_LEN: u64 = 64 * 1024 * 1024;
/// Longest shard path, in bytes.
const MAX_SHARD_PATH_LEN: usize = 4096;
/// How much of an attacker-chosen string goes into an error message.
const QUOTE_LIMIT: usize = 120;

/// What is wrong with a shard index.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    /// The index file is larger than [`MAX_INDEX_LEN`].
    #[error("the index is {len} bytes, more than the {MAX_INDEX_LEN}-byte limit")]
    TooLarge {
        /// Its length (or a lower bound).
        len: u64,
    },

    /// The index is not well-formed JSON or a value has the wrong type.
    #[error("not valid JSON: {message}")]
    InvalidJson {
        /// serde_json's description, with line and column.
        message: String,
    },

    /// The index has a top-level field other than `metadata` and `weight_map`.
    #[error("unknown top-level field `{field}` (expected `metadata` and `weight_map`)")]
    UnknownField {
        /// The field.
        field: String,
    },

    /// A key appears twice (at the top level, in `metadata` or in `weight_map`).
    #[error("key `{key}` appears twice in {within}")]
    DuplicateKey {
        /// The key.
        key: String,
        /// Which object.
        within: &'static str,
    },

    /// The index has no `weight_map`.
    #[error("the index has no `weight_map`")]
    MissingWeightMap,

    /// A shard path is not a plain relative path inside the index's folder.
    #[error("tensor `{tensor}` points at shard {shard:?}, which is {reason}")]
    UnsafeShardPath {
        /// The tensor whose entry names the shard.
        tensor: String,
        /// The shard path (truncated).
        shard: String,
        /// Why it is refused.
        reason: &'static str,
    },

    /// A tensor the index lists is not in the shard it names.
    #[error("tensor `{tensor}` is listed in shard {} but that shard does not contain it", shard.display())]
    TensorMissingFromShard {
        /// The tensor.
        tensor: String,
        /// The shard the index names.
        shard: PathBuf,
    },

    /// A shard holds a tensor the index does not list at all.
    #[error("shard {} contains tensor `{tensor}`, which the index does not list", shard.display())]
    UnlistedTensor {
        /// The tensor.
        tensor: String,
        /// The shard that holds it.
        shard: PathBuf,
    },

    /// A shard holds a tensor the index lists under another shard.
    #[error(
        "shard {} contains tensor `{tensor}`, which the index lists in {}",
        found_in.display(),
        listed_in.display()
    )]
    TensorInWrongShard {
        /// The tensor.
        tensor: String,
        /// The shard that holds it.
        found_in: PathBuf,
        /// The shard the index names.
        listed_in: PathBuf,
    },
}

/// A parsed and path-checked shard index.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardIndex {
    /// The index file.
    pub path: PathBuf,
    /// The `metadata` object (`total_size`, ...), kept as JSON; empty when absent.
    pub metadata: BTreeMap<String, serde_json::Value>,
    /// Tensor name to shard path (relative to the index's folder, already checked).
    pub weight_map: BTreeMap<String, String>,
}

impl ShardIndex {
    /// The folder the index lives in, which every shard path is relative to.
    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    /// The distinct shard paths (relative), sorted.
    pub fn shards(&self) -> BTreeSet<&str> {
        self.weight_map.values().map(String::as_str).collect()
    }

    /// The full path of a shard named in the index.
    pub fn shard_path(&self, shard: &str) -> PathBuf {
        self.dir().join(shard)
    }
}

/// Reads and checks an index file: size cap, strict JSON (no duplicate keys, no unknown
/// top-level fields), and every shard path plain, relative and inside the index's folder.
pub fn read_index(index_path: &Path) -> Result<ShardIndex> {
    let index_error = |source| Error::ShardIndex {
        path: index_path.to_path_buf(),
        source,
    };
    let cap = safeformers_files::ReadCap::new("a shard index", MAX_INDEX_LEN);
    let bytes = match safeformers_files::read_capped(index_path, cap) {
        Ok(bytes) => bytes,
        Err(safeformers_files::FileError::TooLarge { size, .. }) => {
            return Err(index_error(IndexError::TooLarge {
                len: size.unwrap_or(MAX_INDEX_LEN + 1),
            }));
        }
        Err(error) => return Err(error.into()),
    };
    let (metadata, weight_map) = parse_index(&bytes).map_err(index_error)?;
    Ok(ShardIndex {
        path: index_path.to_path_buf(),
        metadata,
        weight_map,
    })
}

type Parsed = (
    BTreeMap<String, serde_json::Value>,
    BTreeMap<String, String>,
);

/// Parses the JSON of an index and checks its shard paths.
fn parse_index(bytes: &[u8]) -> Result<Parsed, IndexError> {
    let slot = RefCell::new(None);
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let parsed = deserializer
        .deserialize_map(IndexVisitor { slot: &slot })
        .and_then(|parsed| deserializer.end().map(|()| parsed));
    let (metadata, weight_map) = match parsed {
        Ok(parsed) => parsed,
        Err(error) => {
            return Err(slot.into_inner().unwrap_or(IndexError::InvalidJson {
                message: error.to_string(),
            }));
        }
    };
    let weight_map = weight_map.ok_or(IndexError::MissingWeightMap)?;
    for (tensor, shard) in &weight_map {
        check_shard_path(shard).map_err(|reason| IndexError::UnsafeShardPath {
            tensor: truncate(tensor),
            shard: truncate(shard),
            reason,
        })?;
    }
    Ok((metadata.unwrap_or_default(), weight_map))
}

/// Why `shard` is not a plain, normalized, relative path inside the index's folder.
fn check_shard_path(shard: &str) -> std::result::Result<(), &'static str> {
    if shard.is_empty() {
        return Err("empty");
    }
    if shard.len() > MAX_SHARD_PATH_LEN {
        return Err("too long");
    }
    if shard.chars().any(char::is_control) {
        return Err("a path with NUL or control characters");
    }
    if shard.contains('\\') {
        return Err("a path with backslashes (a Windows or UNC path)");
    }
    if shard.contains("://") {
        return Err("a URL");
    }
    let bytes = shard.as_bytes();
    if bytes.get(1) == Some(&b':') && bytes.first().is_some_and(u8::is_ascii_alphabetic) {
        return Err("a Windows drive path");
    }
    if shard.contains(':') {
        return Err("a path with a colon (a URL scheme or drive)");
    }
    if shard.starts_with('/') {
        return Err("an absolute path");
    }
    for component in shard.split('/') {
        match component {
            ".." => return Err("a path that climbs out of the folder (`..`)"),
            "" | "." => return Err("not a normalized path (empty or `.` component)"),
            _ => {}
        }
    }
    Ok(())
}

fn truncate(text: &str) -> String {
    text.chars().take(QUOTE_LIMIT).collect()
}

type Violation<'a> = &'a RefCell<Option<IndexError>>;

fn fail<E: de::Error>(slot: Violation<'_>, error: IndexError) -> E {
    let message = error.to_string();
    *slot.borrow_mut() = Some(error);
    E::custom(message)
}

type RawIndex = (
    Option<BTreeMap<String, serde_json::Value>>,
    Option<BTreeMap<String, String>>,
);

struct IndexVisitor<'a> {
    slot: Violation<'a>,
}

impl<'de> Visitor<'de> for IndexVisitor<'_> {
    type Value = RawIndex;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object with `metadata` and `weight_map`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawIndex, A::Error> {
        let mut metadata = None;
        let mut weight_map = None;
        while let Some(key) = map.next_key::<String>()? {
            let duplicate = match key.as_str() {
                "metadata" => metadata.is_some(),
                "weight_map" => weight_map.is_some(),
                _ => {
                    return Err(fail(
                        self.slot,
                        IndexError::UnknownField {
                            field: truncate(&key),
                        },
                    ));
                }
            };
            if duplicate {
                return Err(fail(
                    self.slot,
                    IndexError::DuplicateKey {
                        key,
                        within: "the index",
                    },
                ));
            }
            if key == "metadata" {
                metadata = Some(map.next_value_seed(UniqueMap::<serde_json::Value> {
                    slot: self.slot,
                    within: "`metadata`",
                    marker: std::marker::PhantomData,
                })?);
            } else {
                weight_map = Some(map.next_value_seed(UniqueMap::<String> {
                    slot: self.slot,
                    within: "`weight_map`",
                    marker: std::marker::PhantomData,
                })?);
            }
        }
        Ok((metadata, weight_map))
    }
}

/// A JSON object whose keys must be unique, with values of type `V`.
struct UniqueMap<'a, V> {
    slot: Violation<'a>,
    within: &'static str,
    marker: std::marker::PhantomData<V>,
}

impl<'de, V: de::Deserialize<'de>> DeserializeSeed<'de> for UniqueMap<'_, V> {
    type Value = BTreeMap<String, V>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de, V: de::Deserialize<'de>> Visitor<'de> for UniqueMap<'_, V> {
    type Value = BTreeMap<String, V>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an object for {}", self.within)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = BTreeMap::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value::<V>()?;
            if out.contains_key(&key) {
                return Err(fail(
                    self.slot,
                    IndexError::DuplicateKey {
                        key: truncate(&key),
                        within: self.within,
                    },
                ));
            }
            out.insert(key, value);
        }
        Ok(out)
    }
}

/// Opens a sharded checkpoint through its index, under `policy`.
///
/// Each shard's format is decided by its content; all shards must share one format, and
/// pickle-based shards need [`WeightsPolicy::AllowPickle`]. Every tensor the index lists must be
/// in the shard it names, and no shard may hold a tensor the index does not list there.
pub fn open_sharded(index_path: &Path, policy: &LoadPolicy) -> Result<Checkpoint> {
    let index = read_index(index_path)?;
    let mut shards = Vec::new();
    for shard in index.shards() {
        let path = index.shard_path(shard);
        let file = Arc::new(MappedFile::open(&path)?);
        let format = detect_format(file.bytes());
        if matches!(
            format,
            FileFormat::Zip | FileFormat::Gguf | FileFormat::Unknown
        ) {
            // A pickle-named shard the policy refuses is refused whatever its bytes.
            policy.check_weights_file(&path, format)?;
            return Err(Error::UnsupportedFormat { path, format });
        }
        shards.push((shard, file, format));
    }
    let Some(&(first_shard, _, format)) = shards.first() else {
        // An empty weight_map: an empty checkpoint.
        return Ok(Checkpoint::new(FileFormat::Safetensors));
    };
    if let Some((other, _, other_format)) = shards.iter().find(|(_, _, f)| *f != format) {
        return Err(Error::ShardFormatRefused {
            path: index_path.to_path_buf(),
            reason: format!(
                "shards mix formats: {first_shard} is {format} but {other} is {other_format}; \
                 all shards of one checkpoint must have the same format"
            ),
        });
    }
    if format.is_pickle_based() && policy.weights != WeightsPolicy::AllowPickle {
        return Err(Error::ShardFormatRefused {
            path: index_path.to_path_buf(),
            reason: format!(
                "the shards are pickle-based ({format}, first: {first_shard}); refusing them \
                 under the safetensors-only policy; pass --allow-pickle to read them with the \
                 restricted (non-executing) unpickler"
            ),
        });
    }

    let mut checkpoint = Checkpoint::new(format);
    let mut seen: HashSet<String> = HashSet::new();
    for (shard, file, _) in shards {
        let shard_path = file.path().to_path_buf();
        if format == FileFormat::Safetensors {
            crate::safetensors::load_into(&mut checkpoint, file)?;
        } else {
            crate::torch::load_into(&mut checkpoint, file)?;
        }
        // The names this shard added (a name seen in an earlier shard was already refused by
        // `Checkpoint::insert` as a duplicate).
        let added: Vec<String> = checkpoint
            .names()
            .filter(|name| !seen.contains(*name))
            .map(str::to_string)
            .collect();
        for name in added {
            match index.weight_map.get(&name) {
                Some(listed) if listed == shard => {}
                Some(listed) => {
                    return Err(Error::ShardIndex {
                        path: index_path.to_path_buf(),
                        source: IndexError::TensorInWrongShard {
                            tensor: name,
                            found_in: shard_path,
                            listed_in: index.shard_path(listed),
                        },
                    });
                }
                None => {
                    return Err(Error::ShardIndex {
                        path: index_path.to_path_buf(),
                        source: IndexError::UnlistedTensor {
                            tensor: name,
                            shard: shard_path,
                        },
                    });
                }
            }
            seen.insert(name);
        }
    }
    for (tensor, shard) in &index.weight_map {
        if checkpoint.tensor(tensor).is_none() {
            return Err(Error::ShardIndex {
                path: index_path.to_path_buf(),
                source: IndexError::TensorMissingFromShard {
                    tensor: tensor.clone(),
                    shard: index.shard_path(shard),
                },
            });
        }
    }
    Ok(checkpoint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_paths() {
        for ok in [
            "model-00001-of-00002.safetensors",
            "sub/shard.safetensors",
            "a..b",
        ] {
            assert_eq!(check_shard_path(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "../../etc/passwd",
            "sub/../../x",
            "/etc/passwd",
            "C:\\x",
            "C:x",
            "\\\\server\\share\\x",
            "a\\b",
            "https://evil.example/x",
            "file:///etc/passwd",
            "a\0b",
            "a\nb",
            "./x",
            "a//b",
            "a/",
        ] {
            assert!(check_shard_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn index_json_strictness() {
        let ok = br#"{"metadata":{"total_size":8},"weight_map":{"a":"s.safetensors"}}"#;
        assert!(parse_index(ok).is_ok());
        let dup = br#"{"weight_map":{"a":"s.safetensors","a":"t.safetensors"}}"#;
        assert!(matches!(
            parse_index(dup),
            Err(IndexError::DuplicateKey { .. })
        ));
        let dup_top = br#"{"weight_map":{},"weight_map":{}}"#;
        assert!(matches!(
            parse_index(dup_top),
            Err(IndexError::DuplicateKey { .. })
        ));
        let unknown = br#"{"weight_map":{},"extra":1}"#;
        assert!(matches!(
            parse_index(unknown),
            Err(IndexError::UnknownField { .. })
        ));
        assert!(matches!(
            parse_index(br#"{"metadata":{}}"#),
            Err(IndexError::MissingWeightMap)
        ));
        assert!(matches!(
            parse_index(br#"{"weight_map":{"a":1}}"#),
            Err(IndexError::InvalidJson { .. })
        ));
        assert!(matches!(
            parse_index(br#"{"weight_map":{}} x"#),
            Err(IndexError::InvalidJson { .. })
        ));
    }
}
