//! safetensors, validated strictly.
//!
//! A file is an 8-byte little-endian header length `N`, `N` bytes of UTF-8 JSON (an object that
//! maps tensor names to `{"dtype", "shape", "data_offsets"}`, plus an optional `__metadata__`
//! map of strings), then the data section. [`parse_header`] checks every rule below before a
//! single tensor is handed out; [`open`] then serves the tensors zero-copy from a read-only
//! memory map.
//!
//! We are stricter than the reference crate (see `shared/research/pickle-safetensors.md` §3):
//! duplicate JSON keys, unknown fields, leading whitespace or anything but spaces after the
//! JSON object, absurd ranks, hostile names and shapes whose strides overflow are all errors.
//! Tensor data that is not aligned to its element size (at most 8) in the file is read, as the
//! reference reads it: [`open`] copies just those tensors into aligned memory (the tensors are
//! disjoint, so the copies never exceed the file's size) and says so through
//! [`Checkpoint::is_copied_for_alignment`]. [`serialize`] writes files that pass every rule, with
//! every tensor aligned.

use crate::tensor_names::{NameFault, name_fault, quote as truncate};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::io::Write;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use safeformers_files::FileError;
use serde::de::{self, DeserializeSeed, Deserializer as _, MapAccess, SeqAccess, Visitor};

use crate::checkpoint::{AlignedBytes, Checkpoint, TensorBytes, TensorView};
use crate::dtype::Dtype;
use crate::error::{Error, Result};
use crate::format::FileFormat;
use crate::mapped::MappedFile;

/// Largest header (the JSON part) we read, in bytes; the same limit as the reference crate.
pub const MAX_HEADER_LEN: u64 = 100_000_000;
/// Most tensors one file may declare.
pub const MAX_TENSORS: usize = 1_000_000;
/// Most dimensions one tensor may have.
pub const MAX_RANK: usize = 64;
/// Longest tensor name, in bytes.
pub const MAX_NAME_LEN: usize = 4096;

/// The key of the optional string-to-string metadata map in the header.
const METADATA_KEY: &str = "__metadata__";
/// A UTF-8 byte order mark.
const BOM: &[u8] = b"\xEF\xBB\xBF";
/// A rule a safetensors file broke. Each variant is one rule and says where it was broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SafetensorsError {
    /// The file cannot even hold the 8-byte header length.
    #[error("the file is {len} bytes long, shorter than the 8-byte header length")]
    FileTooShort {
        /// The file's length.
        len: u64,
    },

    /// The header length exceeds [`MAX_HEADER_LEN`].
    #[error("the header claims {claimed} bytes, more than the {MAX_HEADER_LEN}-byte limit")]
    HeaderTooLarge {
        /// The length the file claims.
        claimed: u64,
    },

    /// The header length runs past the end of the file.
    #[error("the header claims {claimed} bytes but only {available} bytes follow the length")]
    HeaderPastEnd {
        /// The length the file claims.
        claimed: u64,
        /// Bytes after the 8-byte length.
        available: u64,
    },

    /// The header starts with a UTF-8 byte order mark.
    #[error("the header starts with a UTF-8 byte order mark; it must start with `{{`")]
    ByteOrderMark,

    /// The header is not valid UTF-8.
    #[error("the header is not valid UTF-8 (first bad byte at header offset {valid_up_to})")]
    InvalidUtf8 {
        /// Header offset of the first byte that is not UTF-8.
        valid_up_to: usize,
    },

    /// The header does not start (at file offset 8) with the `{` of a JSON object.
    #[error(
        "the header must be a JSON object starting right after the length (found {found} \
         at file offset 8, leading whitespace is not allowed)"
    )]
    NotAnObject {
        /// What was there instead.
        found: String,
    },

    /// The header is not well-formed JSON, or a value has the wrong JSON type.
    #[error("the header is not valid JSON: {message}")]
    InvalidJson {
        /// serde_json's description, with line and column.
        message: String,
    },

    /// Something other than space padding follows the JSON object inside the header.
    #[error(
        "unexpected bytes after the JSON object at header offset {offset} (only spaces may pad \
         the header)"
    )]
    TrailingCharacters {
        /// Header offset of the first unexpected byte.
        offset: usize,
    },

    /// The same tensor name is a key twice.
    #[error("tensor `{tensor}` is declared twice in the header")]
    DuplicateTensor {
        /// The name.
        tensor: String,
    },

    /// `__metadata__` appears twice.
    #[error("`__metadata__` appears twice in the header")]
    DuplicateMetadata,

    /// A key of `__metadata__` appears twice.
    #[error("metadata key `{key}` appears twice in `__metadata__`")]
    DuplicateMetadataKey {
        /// The key.
        key: String,
    },

    /// `__metadata__` is not a JSON object.
    #[error("`__metadata__` must be a map of strings to strings, found {found}")]
    MetadataNotMap {
        /// The JSON type found.
        found: &'static str,
    },

    /// A `__metadata__` value is not a string.
    #[error("metadata value of `{key}` must be a string, found {found}")]
    MetadataValueNotString {
        /// The key.
        key: String,
        /// The JSON type found.
        found: &'static str,
    },

    /// A tensor entry is not a JSON object.
    #[error(
        "tensor `{tensor}` must be an object with dtype, shape and data_offsets, found {found}"
    )]
    EntryNotObject {
        /// The tensor.
        tensor: String,
        /// The JSON type found.
        found: &'static str,
    },

    /// A tensor entry has a field other than `dtype`, `shape` and `data_offsets`.
    #[error("tensor `{tensor}` has unknown field `{field}`")]
    UnknownField {
        /// The tensor.
        tensor: String,
        /// The field.
        field: String,
    },

    /// A tensor entry has the same field twice.
    #[error("tensor `{tensor}` has field `{field}` twice")]
    DuplicateField {
        /// The tensor.
        tensor: String,
        /// The field.
        field: &'static str,
    },

    /// A tensor entry lacks a field.
    #[error("tensor `{tensor}` has no `{field}`")]
    MissingField {
        /// The tensor.
        tensor: String,
        /// The missing field.
        field: &'static str,
    },

    /// A field has the wrong JSON type.
    #[error("`{field}` of tensor `{tensor}` must be {expected}, found {found}")]
    WrongFieldType {
        /// The tensor.
        tensor: String,
        /// The field.
        field: &'static str,
        /// What the field must be.
        expected: &'static str,
        /// The JSON type found.
        found: &'static str,
    },

    /// A dtype name that the format does not define (names are exact and case-sensitive).
    #[error("tensor `{tensor}` has unknown dtype `{dtype}`")]
    UnknownDtype {
        /// The tensor.
        tensor: String,
        /// The name found (truncated).
        dtype: String,
    },

    /// A shape dimension or an offset is not a non-negative integer that fits 64 bits.
    #[error(
        "`{field}` of tensor `{tensor}` must hold non-negative integers below 2^64, found {found}"
    )]
    NotUnsignedInteger {
        /// The tensor.
        tensor: String,
        /// `shape` or `data_offsets`.
        field: &'static str,
        /// What was found.
        found: String,
    },

    /// `data_offsets` does not have exactly two elements.
    #[error("`data_offsets` of tensor `{tensor}` must have exactly 2 elements, found {found}")]
    OffsetsNotPair {
        /// The tensor.
        tensor: String,
        /// Elements found (counting stops at 3).
        found: usize,
    },

    /// More dimensions than [`MAX_RANK`].
    #[error("tensor `{tensor}` has more than {MAX_RANK} dimensions")]
    RankTooLarge {
        /// The tensor.
        tensor: String,
    },

    /// More tensors than [`MAX_TENSORS`].
    #[error("the header declares more than {MAX_TENSORS} tensors")]
    TooManyTensors,

    /// A tensor name is empty.
    #[error("a tensor has an empty name")]
    EmptyName,

    /// A tensor name is longer than [`MAX_NAME_LEN`].
    #[error("tensor name `{prefix}...` is {len} bytes long, more than {MAX_NAME_LEN}")]
    NameTooLong {
        /// The start of the name.
        prefix: String,
        /// Its length in bytes.
        len: usize,
    },

    /// A tensor name holds NUL or another control character.
    #[error("tensor name {tensor:?} contains a control character")]
    NameControlCharacter {
        /// The name (truncated, escaped).
        tensor: String,
    },

    /// A tensor name is path-like in a way that could escape a directory.
    #[error("tensor name `{tensor}` starts with a slash or has a `..` path segment")]
    NamePathTraversal {
        /// The name.
        tensor: String,
    },

    /// `data_offsets` is reversed (begin > end).
    #[error("tensor `{tensor}` has data_offsets [{begin}, {end}] with begin after end")]
    ReversedOffsets {
        /// The tensor.
        tensor: String,
        /// Declared begin.
        begin: u64,
        /// Declared end.
        end: u64,
    },

    /// The product of the shape's dimensions (or its size in bits) overflows 64 bits.
    ///
    /// Zero dimensions are skipped when checking, so that a shape like `[0, 2^32, 2^32]`, which
    /// holds no element but whose strides overflow, is rejected too.
    #[error("the shape {shape:?} of tensor `{tensor}` overflows 64-bit sizes or strides")]
    ShapeOverflow {
        /// The tensor.
        tensor: String,
        /// The shape.
        shape: Vec<u64>,
    },

    /// A sub-byte dtype whose elements do not fill whole bytes (an odd number of `F4`, say).
    #[error("tensor `{tensor}` has {elements} elements of {dtype}, which do not fill whole bytes")]
    PartialByte {
        /// The tensor.
        tensor: String,
        /// Its dtype.
        dtype: Dtype,
        /// Its element count.
        elements: u64,
    },

    /// `data_offsets` spans a different number of bytes than shape × dtype needs.
    #[error(
        "tensor `{tensor}` ({dtype}, shape {shape:?}) needs {expected} bytes but its data_offsets \
         span {actual}"
    )]
    SizeMismatch {
        /// The tensor.
        tensor: String,
        /// Its dtype.
        dtype: Dtype,
        /// Its shape.
        shape: Vec<usize>,
        /// Bytes the shape and dtype need.
        expected: u64,
        /// Bytes `data_offsets` spans.
        actual: u64,
    },

    /// The tensor with the lowest offset does not start the data section.
    #[error(
        "the data section must start with a tensor, but the first, `{tensor}`, begins at {begin}"
    )]
    DataNotStartingAtZero {
        /// The first tensor by offset.
        tensor: String,
        /// Its begin offset.
        begin: u64,
    },

    /// Two tensors share bytes.
    #[error(
        "tensor `{tensor}` (data_offsets [{begin}, {end}]) overlaps tensor `{previous}`, which \
         ends at {previous_end}"
    )]
    OverlappingTensors {
        /// The tensor that starts inside another.
        tensor: String,
        /// Its begin offset.
        begin: u64,
        /// Its end offset.
        end: u64,
        /// The tensor it overlaps.
        previous: String,
        /// That tensor's end.
        previous_end: u64,
    },

    /// Bytes between two tensors belong to no tensor.
    #[error(
        "bytes {gap_begin}..{gap_end} of the data section, before tensor `{tensor}`, belong to no tensor"
    )]
    GapBetweenTensors {
        /// The tensor after the gap.
        tensor: String,
        /// Start of the gap.
        gap_begin: u64,
        /// End of the gap.
        gap_end: u64,
    },

    /// A tensor extends past the end of the file.
    #[error(
        "tensor `{tensor}` ends at data offset {end} but the data section is only {data_len} bytes"
    )]
    TensorPastEnd {
        /// The tensor.
        tensor: String,
        /// Its end offset.
        end: u64,
        /// Length of the data section.
        data_len: u64,
    },

    /// The data section goes on after the last tensor (polyglot defence: nothing may hide there).
    #[error(
        "the tensors cover {covered} bytes of the {data_len}-byte data section; trailing bytes \
         belong to no tensor"
    )]
    TrailingData {
        /// Bytes covered by tensors.
        covered: u64,
        /// Length of the data section.
        data_len: u64,
    },
}

/// One tensor of a validated header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderTensor {
    /// The tensor's name.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// Absolute byte range in the file (header included), always inside the file.
    pub range: Range<usize>,
}

impl HeaderTensor {
    /// Whether its data starts, in the file, on a multiple of its element size (at most 8):
    /// otherwise [`open`] serves an aligned copy of it.
    pub fn is_aligned_in_file(&self) -> bool {
        (self.range.start as u64).is_multiple_of(alignment(self.dtype))
    }
}

/// A validated safetensors header: every rule of this module holds for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    tensors: Vec<HeaderTensor>,
    metadata: BTreeMap<String, String>,
    data_start: usize,
}

impl Header {
    /// The tensors, in file order (by offset).
    pub fn tensors(&self) -> &[HeaderTensor] {
        &self.tensors
    }

    /// The `__metadata__` map (empty when the file has none).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// File offset of the data section (`8 + N`).
    pub fn data_start(&self) -> usize {
        self.data_start
    }
}

/// Validates the header of a whole safetensors file (`file` holds every byte of it) against
/// every rule of this module.
///
/// Nothing proportional to the claimed header length is allocated before that length has been
/// checked against the file; the cost is linear in the header plus `O(n log n)` in the number of
/// tensors.
///
/// ```
/// use std::collections::BTreeMap;
/// use safeformers_weights::{Dtype, TensorView, safetensors};
///
/// let data = 1.5f32.to_le_bytes();
/// let view = TensorView { name: "w", dtype: Dtype::F32, shape: &[1], data: &data };
/// let file = safetensors::serialize(&[view], &BTreeMap::new())?;
/// let header = safetensors::parse_header(&file)?;
/// assert_eq!(header.tensors()[0].name, "w");
/// # Ok::<(), safetensors::SafetensorsError>(())
/// ```
pub fn parse_header(file: &[u8]) -> Result<Header, SafetensorsError> {
    let file_len = file.len() as u64;
    let Some((length_bytes, rest)) = file.split_first_chunk::<8>() else {
        return Err(SafetensorsError::FileTooShort { len: file_len });
    };
    let claimed = u64::from_le_bytes(*length_bytes);
    if claimed > MAX_HEADER_LEN {
        return Err(SafetensorsError::HeaderTooLarge { claimed });
    }
    let available = rest.len() as u64;
    let header_len = usize::try_from(claimed)
        .ok()
        .filter(|&len| len <= rest.len())
        .ok_or(SafetensorsError::HeaderPastEnd { claimed, available })?;
    let (header_bytes, data) = rest.split_at(header_len);
    let data_start = 8 + header_len;

    let raw = parse_json(header_bytes)?;
    let tensors = validate_layout(raw.tensors, data.len() as u64, data_start)?;
    Ok(Header {
        tensors,
        metadata: raw.metadata,
        data_start,
    })
}

/// Opens one safetensors file: maps it, validates the whole header, and serves its tensors
/// zero-copy, except those not aligned for their dtype in the file, which are copied into
/// aligned memory.
pub fn open(path: &Path) -> Result<Checkpoint> {
    let file = Arc::new(MappedFile::open(path)?);
    let mut checkpoint = Checkpoint::new(FileFormat::Safetensors);
    load_into(&mut checkpoint, file)?;
    Ok(checkpoint)
}

/// Validates `file` as safetensors and adds its tensors to `checkpoint` (one shard of many).
pub(crate) fn load_into(checkpoint: &mut Checkpoint, file: Arc<MappedFile>) -> Result<()> {
    let header = parse_header(file.bytes()).map_err(|source| Error::Safetensors {
        path: file.path().to_path_buf(),
        source,
    })?;
    let map = Arc::clone(&file);
    let source = checkpoint.add_source(file);
    let Header {
        tensors, metadata, ..
    } = header;
    for (key, value) in metadata {
        checkpoint.insert_metadata(key, value);
    }
    for tensor in tensors {
        let bytes = tensor_bytes(map.bytes(), source, tensor.range, tensor.dtype);
        checkpoint.insert(tensor.name, tensor.dtype, tensor.shape, bytes, source)?;
    }
    Ok(())
}

/// Where a validated tensor's bytes are served from: the map itself when its first byte is
/// aligned for `dtype` in memory (the map starts on a page, so that is its file offset's
/// alignment), else an aligned copy of just those bytes.
fn tensor_bytes(file: &[u8], source: usize, range: Range<usize>, dtype: Dtype) -> TensorBytes {
    let alignment = alignment(dtype) as usize;
    match file.get(range.clone()) {
        Some(data) if !data.is_empty() && !data.as_ptr().addr().is_multiple_of(alignment) => {
            TensorBytes::CopiedForAlignment(AlignedBytes::copy_of(data, alignment))
        }
        _ => TensorBytes::Mapped { source, range },
    }
}

/// Serializes `tensors` and `metadata` into a complete safetensors file.
///
/// The header is padded with spaces so that the data section starts on a multiple of 8, and
/// tensors are laid out by descending element size (then name), so each starts aligned to its
/// element size. The input is checked against the same rules as [`parse_header`] (names, sizes,
/// duplicates, header length), so the result always parses.
pub fn serialize(
    tensors: &[TensorView<'_>],
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>, SafetensorsError> {
    let (header, order) = serialized_header(tensors, metadata)?;
    let data_len: usize = order.iter().map(|view| view.data.len()).sum();
    let mut out = Vec::with_capacity(header.len() + data_len);
    out.extend_from_slice(&header);
    for view in order {
        out.extend_from_slice(view.data);
    }
    Ok(out)
}

/// Writes `tensors` and `metadata` as a safetensors file at `path`, streaming the tensor data
/// (nothing the size of the data is buffered). Same layout and checks as [`serialize`].
pub fn write_file(
    path: &Path,
    tensors: &[TensorView<'_>],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let (header, order) =
        serialized_header(tensors, metadata).map_err(|source| Error::Safetensors {
            path: path.to_path_buf(),
            source,
        })?;
    let io_error = |source| Error::from(FileError::io(path, source));
    let file = std::fs::File::create(path).map_err(io_error)?;
    let mut writer = std::io::BufWriter::new(file);
    writer.write_all(&header).map_err(io_error)?;
    for view in order {
        writer.write_all(view.data).map_err(io_error)?;
    }
    writer
        .into_inner()
        .map_err(|error| io_error(error.into_error()))?
        .sync_all()
        .map_err(io_error)
}

/// The 8-byte length plus the padded JSON header, and the tensors in data order.
fn serialized_header<'v, 'a>(
    tensors: &'v [TensorView<'a>],
    metadata: &BTreeMap<String, String>,
) -> Result<(Vec<u8>, Vec<&'v TensorView<'a>>), SafetensorsError> {
    if tensors.len() > MAX_TENSORS {
        return Err(SafetensorsError::TooManyTensors);
    }
    let mut names = HashSet::with_capacity(tensors.len());
    for view in tensors {
        check_name(view.name)?;
        if !names.insert(view.name) {
            return Err(SafetensorsError::DuplicateTensor {
                tensor: view.name.to_string(),
            });
        }
        if view.shape.len() > MAX_RANK {
            return Err(SafetensorsError::RankTooLarge {
                tensor: view.name.to_string(),
            });
        }
        let shape: Vec<u64> = view.shape.iter().map(|&dim| dim as u64).collect();
        let expected = expected_bytes(view.name, view.dtype, &shape)?;
        if expected != view.data.len() as u64 {
            return Err(SafetensorsError::SizeMismatch {
                tensor: view.name.to_string(),
                dtype: view.dtype,
                shape: view.shape.to_vec(),
                expected,
                actual: view.data.len() as u64,
            });
        }
    }
    let mut order: Vec<&TensorView<'_>> = tensors.iter().collect();
    order.sort_by(|a, b| {
        alignment(b.dtype)
            .cmp(&alignment(a.dtype))
            .then_with(|| a.name.cmp(b.name))
    });

    let mut json = String::from("{");
    let quote = |text: &str| serde_json::Value::from(text).to_string();
    if !metadata.is_empty() {
        json.push_str(&quote(METADATA_KEY));
        json.push_str(":{");
        for (index, (key, value)) in metadata.iter().enumerate() {
            if index > 0 {
                json.push(',');
            }
            json.push_str(&quote(key));
            json.push(':');
            json.push_str(&quote(value));
        }
        json.push('}');
    }
    let mut cursor = 0usize;
    for (index, view) in order.iter().enumerate() {
        if index > 0 || !metadata.is_empty() {
            json.push(',');
        }
        let end = cursor + view.data.len();
        let shape: Vec<String> = view.shape.iter().map(usize::to_string).collect();
        json.push_str(&format!(
            "{}:{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{cursor},{end}]}}",
            quote(view.name),
            view.dtype.name(),
            shape.join(","),
        ));
        cursor = end;
    }
    json.push('}');
    while (8 + json.len()) % 8 != 0 {
        json.push(' ');
    }
    let header_len = json.len() as u64;
    if header_len > MAX_HEADER_LEN {
        return Err(SafetensorsError::HeaderTooLarge {
            claimed: header_len,
        });
    }
    let mut header = Vec::with_capacity(8 + json.len());
    header.extend_from_slice(&header_len.to_le_bytes());
    header.extend_from_slice(json.as_bytes());
    Ok((header, order))
}

/// The alignment a dtype's data is served with: its element size, capped at 8 (sub-byte: 1).
fn alignment(dtype: Dtype) -> u64 {
    (dtype.bits() / 8).clamp(1, 8)
}

/// Checks a tensor name: non-empty, bounded, no control characters, no path escape.
fn check_name(name: &str) -> Result<(), SafetensorsError> {
    if name.len() > MAX_NAME_LEN {
        return Err(SafetensorsError::NameTooLong {
            prefix: truncate(name),
            len: name.len(),
        });
    }
    match name_fault(name) {
        None => Ok(()),
        Some(NameFault::Empty) => Err(SafetensorsError::EmptyName),
        Some(NameFault::ControlCharacter) => Err(SafetensorsError::NameControlCharacter {
            tensor: truncate(name),
        }),
        Some(NameFault::PathTraversal) => Err(SafetensorsError::NamePathTraversal {
            tensor: truncate(name),
        }),
    }
}

/// Bytes a tensor of `dtype` and `shape` needs, checking that sizes and strides fit 64 bits.
fn expected_bytes(tensor: &str, dtype: Dtype, shape: &[u64]) -> Result<u64, SafetensorsError> {
    let overflow = || SafetensorsError::ShapeOverflow {
        tensor: tensor.to_string(),
        shape: shape.to_vec(),
    };
    // The product of the non-zero dimensions bounds every stride, in elements and in bits.
    let stride_bound = shape
        .iter()
        .filter(|&&dim| dim != 0)
        .try_fold(1u64, |acc, &dim| acc.checked_mul(dim))
        .ok_or_else(overflow)?;
    stride_bound
        .checked_mul(dtype.bits())
        .ok_or_else(overflow)?;
    if shape.iter().any(|&dim| usize::try_from(dim).is_err())
        || usize::try_from(stride_bound).is_err()
    {
        return Err(overflow());
    }
    let elements = if shape.contains(&0) { 0 } else { stride_bound };
    dtype
        .byte_len(elements)
        .ok_or_else(|| SafetensorsError::PartialByte {
            tensor: tensor.to_string(),
            dtype,
            elements,
        })
}

// --- JSON -------------------------------------------------------------------------------------

/// A tensor entry as declared, before the layout rules are checked.
struct RawTensor {
    name: String,
    dtype: Dtype,
    shape: Vec<u64>,
    begin: u64,
    end: u64,
}

/// The header's JSON, with every key kept.
struct RawHeader {
    tensors: Vec<RawTensor>,
    metadata: BTreeMap<String, String>,
}

/// Where a visitor records the rule it found broken; serde only carries a string error, so
/// the typed error travels beside it.
type Violation<'a> = &'a RefCell<Option<SafetensorsError>>;

/// Records `error` and returns a serde error that aborts parsing.
fn fail<E: de::Error>(slot: Violation<'_>, error: SafetensorsError) -> E {
    let message = error.to_string();
    *slot.borrow_mut() = Some(error);
    E::custom(message)
}

/// Parses the JSON header: an object at offset 0, then only spaces.
fn parse_json(header: &[u8]) -> Result<RawHeader, SafetensorsError> {
    if header.starts_with(BOM) {
        return Err(SafetensorsError::ByteOrderMark);
    }
    if let Err(error) = std::str::from_utf8(header) {
        return Err(SafetensorsError::InvalidUtf8 {
            valid_up_to: error.valid_up_to(),
        });
    }
    match header.first() {
        Some(b'{') => {}
        Some(byte) => {
            return Err(SafetensorsError::NotAnObject {
                found: format!("byte 0x{byte:02x}"),
            });
        }
        None => {
            return Err(SafetensorsError::NotAnObject {
                found: "an empty header".to_string(),
            });
        }
    }
    let slot = RefCell::new(None);
    let mut deserializer = serde_json::Deserializer::from_slice(header);
    let parsed = deserializer.deserialize_map(HeaderVisitor { slot: &slot });
    let raw = match parsed {
        Ok(raw) => raw,
        Err(error) => {
            return Err(slot.into_inner().unwrap_or(SafetensorsError::InvalidJson {
                message: error.to_string(),
            }));
        }
    };
    // The object ended; the rest may only be spaces (the spec's padding).
    let object_end = header.len()
        - header
            .iter()
            .rev()
            .take_while(|&&byte| byte == b' ')
            .count();
    let last = header
        .get(..object_end)
        .and_then(|bytes| bytes.last())
        .copied();
    if last != Some(b'}') || deserializer.end().is_err() {
        // Find the first byte after the object that is not a space, for the message.
        let mut stream = serde_json::Deserializer::from_slice(header).into_iter::<de::IgnoredAny>();
        let _ = stream.next();
        let mut offset = stream.byte_offset();
        while header.get(offset) == Some(&b' ') {
            offset += 1;
        }
        return Err(SafetensorsError::TrailingCharacters { offset });
    }
    Ok(raw)
}

/// The JSON type a visitor was handed, for messages.
macro_rules! reject_other_types {
    ($($method:ident($($arg:ty)?) => $found:literal;)*) => {
        $(
            fn $method<E: de::Error>(self $(, _value: $arg)?) -> Result<Self::Value, E> {
                Err(self.wrong_type($found))
            }
        )*
    };
}

/// Visitor methods for every JSON type except maps, each calling `self.wrong_type`.
macro_rules! reject_non_maps {
    () => {
        reject_other_types! {
            visit_bool(bool) => "a boolean";
            visit_i64(i64) => "a negative number";
            visit_u64(u64) => "a number";
            visit_f64(f64) => "a number";
            visit_str(&str) => "a string";
            visit_unit() => "null";
        }
        fn visit_seq<A: SeqAccess<'de>>(self, _seq: A) -> Result<Self::Value, A::Error> {
            Err(self.wrong_type("an array"))
        }
    };
}

struct HeaderVisitor<'a> {
    slot: Violation<'a>,
}

impl<'de> Visitor<'de> for HeaderVisitor<'_> {
    type Value = RawHeader;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object of tensors")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawHeader, A::Error> {
        let mut tensors = Vec::new();
        let mut names = HashSet::new();
        let mut metadata = None;
        while let Some(key) = map.next_key::<String>()? {
            if key == METADATA_KEY {
                if metadata.is_some() {
                    return Err(fail(self.slot, SafetensorsError::DuplicateMetadata));
                }
                metadata = Some(map.next_value_seed(MetadataSeed { slot: self.slot })?);
                continue;
            }
            if tensors.len() >= MAX_TENSORS {
                return Err(fail(self.slot, SafetensorsError::TooManyTensors));
            }
            if let Err(error) = check_name(&key) {
                return Err(fail(self.slot, error));
            }
            if !names.insert(key.clone()) {
                return Err(fail(
                    self.slot,
                    SafetensorsError::DuplicateTensor { tensor: key },
                ));
            }
            let tensor = map.next_value_seed(EntrySeed {
                slot: self.slot,
                name: key,
            })?;
            tensors.push(tensor);
        }
        Ok(RawHeader {
            tensors,
            metadata: metadata.unwrap_or_default(),
        })
    }
}

struct MetadataSeed<'a> {
    slot: Violation<'a>,
}

impl MetadataSeed<'_> {
    fn wrong_type<E: de::Error>(&self, found: &'static str) -> E {
        fail(self.slot, SafetensorsError::MetadataNotMap { found })
    }
}

impl<'de> DeserializeSeed<'de> for MetadataSeed<'_> {
    type Value = BTreeMap<String, String>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for MetadataSeed<'_> {
    type Value = BTreeMap<String, String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map of strings to strings")
    }

    reject_non_maps!();

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut metadata = BTreeMap::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(StringSeed {
                slot: self.slot,
                key: &key,
            })?;
            if metadata.contains_key(&key) {
                return Err(fail(
                    self.slot,
                    SafetensorsError::DuplicateMetadataKey {
                        key: truncate(&key),
                    },
                ));
            }
            metadata.insert(key, value);
        }
        Ok(metadata)
    }
}

/// A metadata value: a string and nothing else.
struct StringSeed<'a, 'k> {
    slot: Violation<'a>,
    key: &'k str,
}

impl<'de> DeserializeSeed<'de> for StringSeed<'_, '_> {
    type Value = String;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<String, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl StringSeed<'_, '_> {
    fn wrong_type<E: de::Error>(&self, found: &'static str) -> E {
        fail(
            self.slot,
            SafetensorsError::MetadataValueNotString {
                key: truncate(self.key),
                found,
            },
        )
    }
}

impl<'de> Visitor<'de> for StringSeed<'_, '_> {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    reject_other_types! {
        visit_bool(bool) => "a boolean";
        visit_i64(i64) => "a number";
        visit_u64(u64) => "a number";
        visit_f64(f64) => "a number";
        visit_unit() => "null";
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<String, E> {
        Ok(value.to_string())
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<String, E> {
        Ok(value)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _seq: A) -> Result<String, A::Error> {
        Err(self.wrong_type("an array"))
    }

    fn visit_map<A: MapAccess<'de>>(self, _map: A) -> Result<String, A::Error> {
        Err(self.wrong_type("an object"))
    }
}

/// One tensor entry: exactly `dtype`, `shape` and `data_offsets`.
struct EntrySeed<'a> {
    slot: Violation<'a>,
    name: String,
}

impl EntrySeed<'_> {
    fn wrong_type<E: de::Error>(&self, found: &'static str) -> E {
        fail(
            self.slot,
            SafetensorsError::EntryNotObject {
                tensor: self.name.clone(),
                found,
            },
        )
    }
}

impl<'de> DeserializeSeed<'de> for EntrySeed<'_> {
    type Value = RawTensor;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<RawTensor, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for EntrySeed<'_> {
    type Value = RawTensor;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a tensor entry")
    }

    reject_non_maps!();

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawTensor, A::Error> {
        let mut dtype = None;
        let mut shape = None;
        let mut offsets = None;
        while let Some(field) = map.next_key::<String>()? {
            let (name, duplicate) = match field.as_str() {
                "dtype" => ("dtype", dtype.is_some()),
                "shape" => ("shape", shape.is_some()),
                "data_offsets" => ("data_offsets", offsets.is_some()),
                _ => {
                    return Err(fail(
                        self.slot,
                        SafetensorsError::UnknownField {
                            tensor: self.name,
                            field: truncate(&field),
                        },
                    ));
                }
            };
            if duplicate {
                return Err(fail(
                    self.slot,
                    SafetensorsError::DuplicateField {
                        tensor: self.name,
                        field: name,
                    },
                ));
            }
            let seed = IntListSeed {
                slot: self.slot,
                tensor: &self.name,
                field: name,
            };
            match name {
                "dtype" => {
                    dtype = Some(map.next_value_seed(DtypeSeed {
                        slot: self.slot,
                        tensor: &self.name,
                    })?);
                }
                "shape" => shape = Some(map.next_value_seed(seed)?),
                _ => offsets = Some(map.next_value_seed(seed)?),
            }
        }
        let missing = |field| SafetensorsError::MissingField {
            tensor: self.name.clone(),
            field,
        };
        let Some(dtype) = dtype else {
            return Err(fail(self.slot, missing("dtype")));
        };
        let Some(shape) = shape else {
            return Err(fail(self.slot, missing("shape")));
        };
        let Some(offsets) = offsets else {
            return Err(fail(self.slot, missing("data_offsets")));
        };
        let [begin, end] = offsets[..] else {
            let found = offsets.len();
            return Err(fail(
                self.slot,
                SafetensorsError::OffsetsNotPair {
                    tensor: self.name,
                    found,
                },
            ));
        };
        Ok(RawTensor {
            name: self.name,
            dtype,
            shape,
            begin,
            end,
        })
    }
}

struct DtypeSeed<'a, 't> {
    slot: Violation<'a>,
    tensor: &'t str,
}

impl DtypeSeed<'_, '_> {
    fn wrong_type<E: de::Error>(&self, found: &'static str) -> E {
        fail(
            self.slot,
            SafetensorsError::WrongFieldType {
                tensor: self.tensor.to_string(),
                field: "dtype",
                expected: "a string",
                found,
            },
        )
    }
}

impl<'de> DeserializeSeed<'de> for DtypeSeed<'_, '_> {
    type Value = Dtype;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Dtype, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for DtypeSeed<'_, '_> {
    type Value = Dtype;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a dtype name")
    }

    reject_other_types! {
        visit_bool(bool) => "a boolean";
        visit_i64(i64) => "a number";
        visit_u64(u64) => "a number";
        visit_f64(f64) => "a number";
        visit_unit() => "null";
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Dtype, E> {
        Dtype::from_name(value).ok_or_else(|| {
            fail(
                self.slot,
                SafetensorsError::UnknownDtype {
                    tensor: self.tensor.to_string(),
                    dtype: truncate(value),
                },
            )
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _seq: A) -> Result<Dtype, A::Error> {
        Err(self.wrong_type("an array"))
    }

    fn visit_map<A: MapAccess<'de>>(self, _map: A) -> Result<Dtype, A::Error> {
        Err(self.wrong_type("an object"))
    }
}

/// `shape` or `data_offsets`: an array of unsigned integers, bounded in length.
#[derive(Clone, Copy)]
struct IntListSeed<'a, 't> {
    slot: Violation<'a>,
    tensor: &'t str,
    field: &'static str,
}

impl IntListSeed<'_, '_> {
    fn wrong_type<E: de::Error>(&self, found: &'static str) -> E {
        fail(
            self.slot,
            SafetensorsError::WrongFieldType {
                tensor: self.tensor.to_string(),
                field: self.field,
                expected: "an array of integers",
                found,
            },
        )
    }
}

impl<'de> DeserializeSeed<'de> for IntListSeed<'_, '_> {
    type Value = Vec<u64>;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Vec<u64>, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for IntListSeed<'_, '_> {
    type Value = Vec<u64>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of non-negative integers")
    }

    reject_other_types! {
        visit_bool(bool) => "a boolean";
        visit_i64(i64) => "a number";
        visit_u64(u64) => "a number";
        visit_f64(f64) => "a number";
        visit_str(&str) => "a string";
        visit_unit() => "null";
    }

    fn visit_map<A: MapAccess<'de>>(self, _map: A) -> Result<Vec<u64>, A::Error> {
        Err(self.wrong_type("an object"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u64>, A::Error> {
        let limit = if self.field == "shape" { MAX_RANK } else { 2 };
        let mut values = Vec::new();
        while let Some(value) = seq.next_element_seed(UintSeed(self))? {
            if values.len() == limit {
                let error = if self.field == "shape" {
                    SafetensorsError::RankTooLarge {
                        tensor: self.tensor.to_string(),
                    }
                } else {
                    SafetensorsError::OffsetsNotPair {
                        tensor: self.tensor.to_string(),
                        found: limit + 1,
                    }
                };
                return Err(fail(self.slot, error));
            }
            values.push(value);
        }
        Ok(values)
    }
}

/// One element of `shape` or `data_offsets`.
struct UintSeed<'a, 't>(IntListSeed<'a, 't>);

impl UintSeed<'_, '_> {
    fn wrong_type<E: de::Error>(&self, found: &'static str) -> E {
        self.not_unsigned(found.to_string())
    }

    fn not_unsigned<E: de::Error>(&self, found: String) -> E {
        fail(
            self.0.slot,
            SafetensorsError::NotUnsignedInteger {
                tensor: self.0.tensor.to_string(),
                field: self.0.field,
                found,
            },
        )
    }
}

impl<'de> DeserializeSeed<'de> for UintSeed<'_, '_> {
    type Value = u64;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<u64, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for UintSeed<'_, '_> {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a non-negative integer")
    }

    reject_other_types! {
        visit_bool(bool) => "a boolean";
        visit_str(&str) => "a string";
        visit_unit() => "null";
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<u64, E> {
        Ok(value)
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<u64, E> {
        u64::try_from(value).map_err(|_| self.not_unsigned(value.to_string()))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<u64, E> {
        Err(self.not_unsigned(format!("the non-integer {value}")))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _seq: A) -> Result<u64, A::Error> {
        Err(self.wrong_type("an array"))
    }

    fn visit_map<A: MapAccess<'de>>(self, _map: A) -> Result<u64, A::Error> {
        Err(self.wrong_type("an object"))
    }
}

// --- layout -----------------------------------------------------------------------------------

/// Checks sizes, contiguity and coverage, and makes the ranges absolute. Alignment is not a
/// rule: a misaligned tensor is copied when it is served (see [`open`]).
fn validate_layout(
    mut tensors: Vec<RawTensor>,
    data_len: u64,
    data_start: usize,
) -> Result<Vec<HeaderTensor>, SafetensorsError> {
    for tensor in &tensors {
        if tensor.begin > tensor.end {
            return Err(SafetensorsError::ReversedOffsets {
                tensor: tensor.name.clone(),
                begin: tensor.begin,
                end: tensor.end,
            });
        }
        let expected = expected_bytes(&tensor.name, tensor.dtype, &tensor.shape)?;
        let actual = tensor.end - tensor.begin;
        if expected != actual {
            return Err(SafetensorsError::SizeMismatch {
                tensor: tensor.name.clone(),
                dtype: tensor.dtype,
                shape: tensor.shape.iter().map(|&dim| dim as usize).collect(),
                expected,
                actual,
            });
        }
    }
    // Contiguity after sorting: each tensor begins where the previous ended. This rejects the
    // "10 M tensors over the same bytes" shape in O(n log n).
    tensors.sort_by_key(|tensor| (tensor.begin, tensor.end));
    let mut cursor = 0u64;
    let mut previous: Option<&RawTensor> = None;
    for tensor in &tensors {
        if tensor.begin != cursor {
            return Err(match previous {
                None => SafetensorsError::DataNotStartingAtZero {
                    tensor: tensor.name.clone(),
                    begin: tensor.begin,
                },
                Some(previous) if tensor.begin < cursor => SafetensorsError::OverlappingTensors {
                    tensor: tensor.name.clone(),
                    begin: tensor.begin,
                    end: tensor.end,
                    previous: previous.name.clone(),
                    previous_end: cursor,
                },
                Some(_) => SafetensorsError::GapBetweenTensors {
                    tensor: tensor.name.clone(),
                    gap_begin: cursor,
                    gap_end: tensor.begin,
                },
            });
        }
        if tensor.end > data_len {
            return Err(SafetensorsError::TensorPastEnd {
                tensor: tensor.name.clone(),
                end: tensor.end,
                data_len,
            });
        }
        cursor = tensor.end;
        previous = Some(tensor);
    }
    if cursor != data_len {
        return Err(SafetensorsError::TrailingData {
            covered: cursor,
            data_len,
        });
    }
    // Every offset is now at most `data_len`, so the absolute ranges fit the file.
    Ok(tensors
        .into_iter()
        .map(|tensor| HeaderTensor {
            range: data_start + tensor.begin as usize..data_start + tensor.end as usize,
            shape: tensor.shape.into_iter().map(|dim| dim as usize).collect(),
            name: tensor.name,
            dtype: tensor.dtype,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alignment_per_dtype() {
        assert_eq!(alignment(Dtype::F4), 1);
        assert_eq!(alignment(Dtype::F6E2M3), 1);
        assert_eq!(alignment(Dtype::BF16), 2);
        assert_eq!(alignment(Dtype::F32), 4);
        assert_eq!(alignment(Dtype::C64), 8);
        assert_eq!(alignment(Dtype::U64), 8);
    }

    #[test]
    fn expected_bytes_is_checked() {
        assert_eq!(expected_bytes("t", Dtype::F32, &[2, 3]), Ok(24));
        assert_eq!(expected_bytes("t", Dtype::F32, &[]), Ok(4));
        assert_eq!(expected_bytes("t", Dtype::F4, &[3, 2]), Ok(3));
        assert_eq!(expected_bytes("t", Dtype::F32, &[0, 1 << 40]), Ok(0));
        assert!(matches!(
            expected_bytes("t", Dtype::F64, &[1 << 62]),
            Err(SafetensorsError::ShapeOverflow { .. })
        ));
        assert!(matches!(
            expected_bytes("t", Dtype::F4, &[1]),
            Err(SafetensorsError::PartialByte { .. })
        ));
    }

    #[test]
    fn names() {
        assert!(check_name("model.layers.0.self_attn.q_proj.weight").is_ok());
        assert!(check_name("a..b").is_ok());
        assert_eq!(check_name(""), Err(SafetensorsError::EmptyName));
        assert!(check_name("a/../b").is_err());
        assert!(check_name("/abs").is_err());
        assert!(check_name("tab\there").is_err());
    }

    #[test]
    fn serialized_layout_is_aligned_and_parses() {
        let one = [1u8];
        let four = [0u8; 4];
        let eight = [0u8; 8];
        let views = [
            TensorView {
                name: "u8",
                dtype: Dtype::U8,
                shape: &[1],
                data: &one,
            },
            TensorView {
                name: "f32",
                dtype: Dtype::F32,
                shape: &[1],
                data: &four,
            },
            TensorView {
                name: "f64",
                dtype: Dtype::F64,
                shape: &[1],
                data: &eight,
            },
        ];
        let file = serialize(&views, &BTreeMap::new()).unwrap();
        let header = parse_header(&file).unwrap();
        assert_eq!(header.data_start() % 8, 0);
        let names: Vec<&str> = header.tensors().iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["f64", "f32", "u8"]);
    }
}
