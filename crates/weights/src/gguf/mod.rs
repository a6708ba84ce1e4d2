//! GGUF (llama.cpp's format), versions 2 and 3, validated strictly.
//!
//! A file is the magic `GGUF`, a `u32` version, a `u64` tensor count and a `u64` metadata count,
//! then that many metadata key-values (a string key, a `u32` value type, the value), then that
//! many tensor infos (a string name, a `u32` dimension count, `u64` dimensions with `ne[0]`
//! first, a `u32` ggml type, a `u64` offset into the data section), then padding up to the
//! alignment (`general.alignment`, default 32) where the data section starts. Everything is
//! little-endian; strings are a `u64` length then UTF-8 bytes. See ggml's `docs/gguf.md`.
//!
//! [`parse_header`] checks every rule below before a single tensor is handed out, as
//! [`crate::safetensors`] does, and [`GgufFile`] then serves tensor bytes from a read-only map:
//! - counts, string and array lengths, key and name lengths and dimensions are bounded, and every
//!   count is checked against the bytes left before anything is allocated for it;
//! - every size and offset is checked arithmetic; a tensor's first dimension is a whole number of
//!   blocks of its type;
//! - value types and tensor types the format does not define are errors, and so are tensor types
//!   we do not read (the `IQ*` family and others, refused by name);
//! - duplicate keys and tensor names, nested arrays, bools other than 0/1, non-UTF-8 strings,
//!   non-ASCII keys and path-like tensor names are errors;
//! - each tensor lies inside the data section, starts on a multiple of the alignment, and no two
//!   overlap; like llama.cpp's own reader we also refuse gaps between tensors beyond alignment
//!   padding, and any bytes after the last tensor's padding (nothing may hide in the file).

mod error;
mod ggml_type;
mod metadata;

use crate::tensor_names::{NameFault, QUOTE_LIMIT, name_fault, quote as truncate};
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

pub use error::GgufError;
pub use ggml_type::{ALL_GGML_TYPES, GgmlType};
pub use metadata::{MetadataArray, MetadataValue, StringArray, ValueType};

use crate::error::{Error, Result};
use crate::mapped::MappedFile;

/// Most tensors one file may declare (real models have a few thousand at most).
pub const MAX_TENSORS: u64 = 1 << 16;
/// Most metadata key-values one file may declare (real models have a few dozen).
pub const MAX_METADATA_KEYS: u64 = 1 << 16;
/// Most elements in one metadata array (vocabularies and merge lists are below a million).
pub const MAX_ARRAY_LEN: u64 = 1 << 24;
/// Longest metadata string value, in bytes: room for a `tokenizer.huggingface.json`.
pub const MAX_STRING_LEN: u64 = 16 << 20;
/// Longest string inside a metadata array (a token, a merge), in bytes.
pub const MAX_ARRAY_STRING_LEN: u64 = 1 << 20;
/// Longest metadata key, in bytes (the format's limit).
pub const MAX_KEY_LEN: u64 = u16::MAX as u64;
/// Longest tensor name, in bytes (ggml's own limit is 63).
pub const MAX_TENSOR_NAME_LEN: u64 = 1024;
/// Most dimensions of one tensor (ggml's `GGML_MAX_DIMS`).
pub const MAX_DIMS: u32 = 4;
/// The alignment of the data section and of every tensor when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// The key that sets the alignment.
pub const ALIGNMENT_KEY: &str = "general.alignment";
/// The key of the model's architecture (`"llama"`).
pub const ARCHITECTURE_KEY: &str = "general.architecture";
/// The key of the chat template (a Jinja template, rendered only in our sandbox).
pub const CHAT_TEMPLATE_KEY: &str = "tokenizer.chat_template";

/// The fewest bytes one metadata key-value takes: key length, type, a 1-byte value (an empty
/// key is refused, but only once it has been read).
const MIN_KEY_VALUE_BYTES: u64 = 8 + 4 + 1;
/// The fewest bytes one tensor info takes: name length, dimension count, type, offset.
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 4 + 4 + 8;
/// One tensor of a validated file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufTensorInfo {
    /// The tensor's name (`blk.0.attn_q.weight`).
    pub name: String,
    /// Its type.
    pub ggml_type: GgmlType,
    /// Its dimensions in GGUF order: `ne[0]` (the contiguous one) first.
    pub dims: Vec<u64>,
    /// Its dimensions in PyTorch (row-major) order: the reverse of [`GgufTensorInfo::dims`].
    pub shape: Vec<usize>,
    /// Its offset in the data section, as declared.
    pub offset: u64,
    /// Its absolute byte range in the file, always inside the file.
    pub range: Range<usize>,
}

impl GgufTensorInfo {
    /// Number of elements.
    pub fn element_count(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Size of its data in bytes.
    pub fn byte_len(&self) -> usize {
        self.range.len()
    }
}

/// A validated GGUF header: every rule of this module holds for it.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufHeader {
    version: u32,
    alignment: u64,
    data_start: u64,
    metadata: BTreeMap<String, MetadataValue>,
    tensors: Vec<GgufTensorInfo>,
    /// Indices into `tensors`, sorted by name.
    by_name: Vec<usize>,
}

/// Validates the header of a whole GGUF file (`file` holds every byte of it) against every rule
/// of this module. Nothing is allocated for a count before the bytes left could hold it.
pub fn parse_header(file: &[u8]) -> Result<GgufHeader, GgufError> {
    let mut cursor = Cursor::new(file);
    let version = read_preamble(&mut cursor)?;
    let tensor_count = cursor.u64(|| "the tensor count".to_string())?;
    let key_count = cursor.u64(|| "the metadata key count".to_string())?;
    if tensor_count > MAX_TENSORS {
        return Err(GgufError::TooManyTensors {
            count: tensor_count,
        });
    }
    if key_count > MAX_METADATA_KEYS {
        return Err(GgufError::TooManyMetadataKeys { count: key_count });
    }
    check_count_fits(&cursor, "metadata keys", key_count, MIN_KEY_VALUE_BYTES)?;
    let metadata = read_metadata(&mut cursor, key_count)?;
    let alignment = alignment_of(&metadata)?;
    check_count_fits(&cursor, "tensors", tensor_count, MIN_TENSOR_INFO_BYTES)?;
    let mut infos = Vec::with_capacity(usize::try_from(tensor_count).unwrap_or(0));
    for index in 0..tensor_count {
        infos.push(read_tensor_info(&mut cursor, index)?);
    }
    let by_name = index_by_name(&infos)?;
    let header_end = cursor.offset as u64;
    // Saturating: a data section that would start past the file holds no tensor.
    let data_start = header_end
        .checked_next_multiple_of(alignment)
        .unwrap_or(u64::MAX);
    let tensors = validate_layout(infos, file.len() as u64, data_start, alignment)?;
    Ok(GgufHeader {
        version,
        alignment,
        data_start,
        metadata,
        tensors,
        by_name,
    })
}

impl GgufHeader {
    /// The format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The alignment of the data section and of every tensor in it.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// File offset of the data section.
    pub fn data_start(&self) -> u64 {
        self.data_start
    }

    /// Every metadata key-value, sorted by key.
    pub fn metadata(&self) -> &BTreeMap<String, MetadataValue> {
        &self.metadata
    }

    /// The value of `key`, if the file has it.
    pub fn get(&self, key: &str) -> Option<&MetadataValue> {
        self.metadata.get(key)
    }

    /// The tensors, in the order the file declares them.
    pub fn tensors(&self) -> &[GgufTensorInfo] {
        &self.tensors
    }

    /// The tensor named `name`.
    pub fn tensor(&self, name: &str) -> Option<&GgufTensorInfo> {
        let position = self
            .by_name
            .binary_search_by(|&index| {
                let tensor_name = self.tensors.get(index).map_or("", |tensor| &tensor.name);
                tensor_name.cmp(name)
            })
            .ok()?;
        self.tensors.get(*self.by_name.get(position)?)
    }

    /// How many tensors of each type the file holds.
    pub fn type_counts(&self) -> BTreeMap<GgmlType, usize> {
        let mut counts = BTreeMap::new();
        for tensor in &self.tensors {
            *counts.entry(tensor.ggml_type).or_insert(0) += 1;
        }
        counts
    }

    /// The string value of `key`; an error if it is there with another type.
    pub fn get_string(&self, key: &str) -> Result<Option<&str>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(MetadataValue::String(text)) => Ok(Some(text)),
            Some(other) => Err(wrong_type(key, "a string", other)),
        }
    }

    /// The integer value of `key` (of any integer type whose value fits a `u32`).
    pub fn get_u32(&self, key: &str) -> Result<Option<u32>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(value) => value
                .as_u64()
                .and_then(|value| u32::try_from(value).ok())
                .map(Some)
                .ok_or_else(|| wrong_type(key, "an integer that fits u32", value)),
        }
    }

    /// The integer value of `key` (of any integer type, if not negative).
    pub fn get_u64(&self, key: &str) -> Result<Option<u64>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(value) => value
                .as_u64()
                .map(Some)
                .ok_or_else(|| wrong_type(key, "a non-negative integer", value)),
        }
    }

    /// The `f32` value of `key`.
    pub fn get_f32(&self, key: &str) -> Result<Option<f32>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(MetadataValue::F32(value)) => Ok(Some(*value)),
            Some(other) => Err(wrong_type(key, "an f32", other)),
        }
    }

    /// The `bool` value of `key`.
    pub fn get_bool(&self, key: &str) -> Result<Option<bool>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(MetadataValue::Bool(value)) => Ok(Some(*value)),
            Some(other) => Err(wrong_type(key, "a bool", other)),
        }
    }

    /// The array value of `key`, of any element type.
    pub fn get_array(&self, key: &str) -> Result<Option<&MetadataArray>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(MetadataValue::Array(array)) => Ok(Some(array)),
            Some(other) => Err(wrong_type(key, "an array", other)),
        }
    }

    /// The array-of-strings value of `key` (`tokenizer.ggml.tokens`).
    pub fn get_string_array(&self, key: &str) -> Result<Option<&StringArray>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(MetadataValue::Array(MetadataArray::String(array))) => Ok(Some(array)),
            Some(other) => Err(wrong_type(key, "an array of strings", other)),
        }
    }

    /// `general.architecture` (`"llama"`).
    pub fn architecture(&self) -> Result<Option<&str>, GgufError> {
        self.get_string(ARCHITECTURE_KEY)
    }

    /// `tokenizer.chat_template`: a Jinja template to render only in a sandbox.
    pub fn chat_template(&self) -> Result<Option<&str>, GgufError> {
        self.get_string(CHAT_TEMPLATE_KEY)
    }
}

fn wrong_type(key: &str, expected: &'static str, found: &MetadataValue) -> GgufError {
    let found = match found {
        MetadataValue::String(_) | MetadataValue::Array(_) => found.summary(QUOTE_LIMIT),
        scalar => format!("{} {}", scalar.value_type(), scalar.summary(QUOTE_LIMIT)),
    };
    GgufError::MetadataType {
        key: key.to_string(),
        expected,
        found,
    }
}

/// A GGUF file, validated, with its bytes: a read-only map of the file, or bytes in memory.
#[derive(Debug)]
pub struct GgufFile {
    path: PathBuf,
    bytes: FileBytes,
    header: GgufHeader,
}

#[derive(Debug)]
enum FileBytes {
    Mapped(MappedFile),
    Owned(Vec<u8>),
}

impl FileBytes {
    fn bytes(&self) -> &[u8] {
        match self {
            FileBytes::Mapped(file) => file.bytes(),
            FileBytes::Owned(bytes) => bytes,
        }
    }
}

/// One tensor of a [`GgufFile`]: its info and its raw bytes (blocks, for a quantized type).
#[derive(Debug, Clone, Copy)]
pub struct GgufTensor<'a> {
    /// Name, type, dimensions and place in the file.
    pub info: &'a GgufTensorInfo,
    /// Its bytes, exactly [`GgufTensorInfo::byte_len`] of them. From a mapped file they start on
    /// a multiple of the file's alignment in memory too (the map starts on a page).
    pub data: &'a [u8],
}

impl GgufFile {
    /// Maps `path` read-only (refusing anything but a regular file) and validates it.
    pub fn open(path: &Path) -> Result<GgufFile> {
        GgufFile::from_mapped(MappedFile::open(path)?)
    }

    /// Validates an already mapped file.
    pub fn from_mapped(file: MappedFile) -> Result<GgufFile> {
        let path = file.path().to_path_buf();
        GgufFile::validated(path, FileBytes::Mapped(file))
    }

    /// Validates a whole file held in memory; `path` names it in errors.
    ///
    /// ```
    /// use safeformers_weights::gguf::GgufFile;
    ///
    /// // The smallest valid file: magic, version 3, no tensors, no metadata.
    /// let mut bytes = b"GGUF".to_vec();
    /// bytes.extend_from_slice(&3u32.to_le_bytes());
    /// bytes.extend_from_slice(&0u64.to_le_bytes());
    /// bytes.extend_from_slice(&0u64.to_le_bytes());
    /// let file = GgufFile::from_bytes(bytes, "empty.gguf")?;
    /// assert_eq!(file.header().version(), 3);
    /// assert_eq!(file.tensors().len(), 0);
    ///
    /// let error = GgufFile::from_bytes(b"GGUF\x01\0\0\0".to_vec(), "old.gguf").unwrap_err();
    /// assert!(error.to_string().starts_with("old.gguf: invalid GGUF file: GGUF version 1"));
    /// # Ok::<(), safeformers_weights::Error>(())
    /// ```
    pub fn from_bytes(bytes: Vec<u8>, path: impl Into<PathBuf>) -> Result<GgufFile> {
        GgufFile::validated(path.into(), FileBytes::Owned(bytes))
    }

    fn validated(path: PathBuf, bytes: FileBytes) -> Result<GgufFile> {
        match parse_header(bytes.bytes()) {
            Ok(header) => Ok(GgufFile {
                path,
                bytes,
                header,
            }),
            Err(source) => Err(Error::Gguf { path, source }),
        }
    }

    /// A copy of `tensor`'s bytes, shared. From a mapped file they are read from the file, not
    /// through the map, into memory that nothing touched before (so not resident until then):
    /// a model built from such copies holds each tensor once in memory (see
    /// [`MappedFile::copy_range`]).
    pub fn copy_tensor(&self, tensor: &GgufTensor<'_>) -> Result<std::sync::Arc<[u8]>> {
        let mut shared: std::sync::Arc<[u8]> = vec![0u8; tensor.data.len()].into();
        let Some(dest) = std::sync::Arc::get_mut(&mut shared) else {
            return Ok(tensor.data.into());
        };
        match &self.bytes {
            FileBytes::Mapped(file) => file.copy_range(tensor.info.range.clone(), dest)?,
            FileBytes::Owned(_) => dest.copy_from_slice(tensor.data),
        }
        Ok(shared)
    }

    /// The file's path (or the name given to [`GgufFile::from_bytes`]).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The validated header: version, metadata and tensor infos.
    pub fn header(&self) -> &GgufHeader {
        &self.header
    }

    /// The tensor named `name`, with its bytes.
    pub fn tensor(&self, name: &str) -> Option<GgufTensor<'_>> {
        self.header.tensor(name).map(|info| self.with_data(info))
    }

    /// Every tensor with its bytes, in the order the file declares them.
    pub fn tensors(&self) -> impl ExactSizeIterator<Item = GgufTensor<'_>> + '_ {
        self.header.tensors.iter().map(|info| self.with_data(info))
    }

    fn with_data<'a>(&'a self, info: &'a GgufTensorInfo) -> GgufTensor<'a> {
        // Every range was checked against these very bytes by `parse_header`.
        let data = self.bytes.bytes().get(info.range.clone()).unwrap_or(&[]);
        GgufTensor { info, data }
    }
}

// --- reading ----------------------------------------------------------------------------------

/// A position in the file, reading forward; every read is bounds-checked.
struct Cursor<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Cursor<'a> {
    fn new(bytes: &'a [u8]) -> Cursor<'a> {
        Cursor { bytes, offset: 0 }
    }

    fn rest(&self) -> &'a [u8] {
        self.bytes.get(self.offset..).unwrap_or(&[])
    }

    fn remaining(&self) -> u64 {
        self.rest().len() as u64
    }

    fn truncated(&self, what: String, needed: u64) -> GgufError {
        GgufError::Truncated {
            what,
            offset: self.offset as u64,
            needed,
            available: self.remaining(),
        }
    }

    /// The next `len` bytes.
    fn take(&mut self, len: u64, what: impl FnOnce() -> String) -> Result<&'a [u8], GgufError> {
        let Some(chunk) = usize::try_from(len)
            .ok()
            .and_then(|len| self.rest().get(..len))
        else {
            return Err(self.truncated(what(), len));
        };
        self.offset += chunk.len();
        Ok(chunk)
    }

    /// The next `N` bytes, as an array.
    fn fixed<const N: usize>(
        &mut self,
        what: impl FnOnce() -> String,
    ) -> Result<[u8; N], GgufError> {
        let Some((chunk, _)) = self.rest().split_first_chunk::<N>() else {
            return Err(self.truncated(what(), N as u64));
        };
        self.offset += N;
        Ok(*chunk)
    }

    fn u32(&mut self, what: impl FnOnce() -> String) -> Result<u32, GgufError> {
        self.fixed(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: impl FnOnce() -> String) -> Result<u64, GgufError> {
        self.fixed(what).map(u64::from_le_bytes)
    }

    /// A string: a `u64` length (at most `limit`), then that many bytes of UTF-8.
    fn string(&mut self, limit: u64, what: impl Fn() -> String) -> Result<&'a str, GgufError> {
        let len = self.u64(|| format!("the length of {}", what()))?;
        if len > limit {
            return Err(GgufError::StringTooLong {
                what: what(),
                len,
                limit,
            });
        }
        let start = self.offset as u64;
        let bytes = self.take(len, &what)?;
        std::str::from_utf8(bytes).map_err(|error| GgufError::InvalidUtf8 {
            what: what(),
            offset: start + error.valid_up_to() as u64,
        })
    }
}

/// The magic and the version; returns the version.
fn read_preamble(cursor: &mut Cursor<'_>) -> Result<u32, GgufError> {
    let magic = cursor.fixed::<4>(|| "the magic `GGUF`".to_string())?;
    if &magic != b"GGUF" {
        return Err(GgufError::BadMagic {
            found: format!("{:?}", magic.escape_ascii().to_string()),
        });
    }
    let version = cursor.u32(|| "the version".to_string())?;
    match version {
        2 | 3 => Ok(version),
        1 => Err(GgufError::VersionOne),
        // A big-endian writer byte-swaps the version (and everything after it), so a small
        // version reads as a large multiple of 2^24 here.
        _ if (1..=3).contains(&version.swap_bytes()) => Err(GgufError::BigEndian { version }),
        _ => Err(GgufError::UnsupportedVersion { version }),
    }
}

/// Refuses a count of items of at least `min_bytes` each that the rest of the file cannot hold.
fn check_count_fits(
    cursor: &Cursor<'_>,
    what: &'static str,
    count: u64,
    min_bytes: u64,
) -> Result<(), GgufError> {
    let available = cursor.remaining();
    let most = available / min_bytes;
    if count > most {
        return Err(GgufError::CountPastEnd {
            what,
            count,
            available,
            most,
        });
    }
    Ok(())
}

fn read_metadata(
    cursor: &mut Cursor<'_>,
    count: u64,
) -> Result<BTreeMap<String, MetadataValue>, GgufError> {
    let mut metadata = BTreeMap::new();
    for index in 0..count {
        let key = read_key(cursor, index)?;
        let type_id = cursor.u32(|| format!("the value type of key `{key}`"))?;
        let value_type =
            ValueType::from_id(type_id).ok_or_else(|| GgufError::UnknownValueType {
                key: key.clone(),
                type_id,
            })?;
        let value = read_value(cursor, &key, value_type)?;
        if metadata.contains_key(&key) {
            return Err(GgufError::DuplicateKey { key });
        }
        metadata.insert(key, value);
    }
    Ok(metadata)
}

/// A key: non-empty printable ASCII of at most [`MAX_KEY_LEN`] bytes.
fn read_key(cursor: &mut Cursor<'_>, index: u64) -> Result<String, GgufError> {
    let key = cursor
        .string(MAX_KEY_LEN, || format!("metadata key {index}"))
        .map_err(|error| match error {
            GgufError::StringTooLong { len, .. } => GgufError::KeyTooLong { index, len },
            other => other,
        })?;
    if key.is_empty() {
        return Err(GgufError::EmptyKey { index });
    }
    if !key.bytes().all(|byte| byte.is_ascii_graphic()) {
        return Err(GgufError::InvalidKey { key: truncate(key) });
    }
    Ok(key.to_string())
}

fn read_value(
    cursor: &mut Cursor<'_>,
    key: &str,
    value_type: ValueType,
) -> Result<MetadataValue, GgufError> {
    let what = || format!("the value of key `{key}`");
    Ok(match value_type {
        ValueType::U8 => MetadataValue::U8(u8::from_le_bytes(cursor.fixed(what)?)),
        ValueType::I8 => MetadataValue::I8(i8::from_le_bytes(cursor.fixed(what)?)),
        ValueType::U16 => MetadataValue::U16(u16::from_le_bytes(cursor.fixed(what)?)),
        ValueType::I16 => MetadataValue::I16(i16::from_le_bytes(cursor.fixed(what)?)),
        ValueType::U32 => MetadataValue::U32(u32::from_le_bytes(cursor.fixed(what)?)),
        ValueType::I32 => MetadataValue::I32(i32::from_le_bytes(cursor.fixed(what)?)),
        ValueType::F32 => MetadataValue::F32(f32::from_le_bytes(cursor.fixed(what)?)),
        ValueType::U64 => MetadataValue::U64(u64::from_le_bytes(cursor.fixed(what)?)),
        ValueType::I64 => MetadataValue::I64(i64::from_le_bytes(cursor.fixed(what)?)),
        ValueType::F64 => MetadataValue::F64(f64::from_le_bytes(cursor.fixed(what)?)),
        ValueType::Bool => {
            let [byte] = cursor.fixed(what)?;
            MetadataValue::Bool(bool_of(byte, what)?)
        }
        ValueType::String => {
            MetadataValue::String(cursor.string(MAX_STRING_LEN, what)?.to_string())
        }
        ValueType::Array => MetadataValue::Array(read_array(cursor, key)?),
    })
}

fn bool_of(byte: u8, what: impl FnOnce() -> String) -> Result<bool, GgufError> {
    match byte {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(GgufError::InvalidBool { what: what(), byte }),
    }
}

/// An array: element type (any but array), `u64` length, elements. The length is checked
/// against the bytes left before anything is allocated for the elements.
fn read_array(cursor: &mut Cursor<'_>, key: &str) -> Result<MetadataArray, GgufError> {
    let type_id = cursor.u32(|| format!("the element type of array `{key}`"))?;
    let element_type = ValueType::from_id(type_id).ok_or_else(|| GgufError::UnknownValueType {
        key: format!("{key}[]"),
        type_id,
    })?;
    if element_type == ValueType::Array {
        return Err(GgufError::NestedArray {
            key: key.to_string(),
        });
    }
    let len = cursor.u64(|| format!("the length of array `{key}`"))?;
    if len > MAX_ARRAY_LEN {
        return Err(GgufError::ArrayTooLong {
            key: key.to_string(),
            len,
        });
    }
    // At most 2^24 elements of at most 8 bytes: no overflow.
    let min_bytes = len * element_type.min_encoded_len();
    let elements = || format!("the {len} elements of array `{key}`");
    if min_bytes > cursor.remaining() {
        return Err(cursor.truncated(elements(), min_bytes));
    }
    Ok(match element_type {
        ValueType::U8 => MetadataArray::U8(cursor.take(min_bytes, elements)?.to_vec()),
        ValueType::I8 => {
            MetadataArray::I8(decode(cursor.take(min_bytes, elements)?, i8::from_le_bytes))
        }
        ValueType::U16 => MetadataArray::U16(decode(
            cursor.take(min_bytes, elements)?,
            u16::from_le_bytes,
        )),
        ValueType::I16 => MetadataArray::I16(decode(
            cursor.take(min_bytes, elements)?,
            i16::from_le_bytes,
        )),
        ValueType::U32 => MetadataArray::U32(decode(
            cursor.take(min_bytes, elements)?,
            u32::from_le_bytes,
        )),
        ValueType::I32 => MetadataArray::I32(decode(
            cursor.take(min_bytes, elements)?,
            i32::from_le_bytes,
        )),
        ValueType::F32 => MetadataArray::F32(decode(
            cursor.take(min_bytes, elements)?,
            f32::from_le_bytes,
        )),
        ValueType::U64 => MetadataArray::U64(decode(
            cursor.take(min_bytes, elements)?,
            u64::from_le_bytes,
        )),
        ValueType::I64 => MetadataArray::I64(decode(
            cursor.take(min_bytes, elements)?,
            i64::from_le_bytes,
        )),
        ValueType::F64 => MetadataArray::F64(decode(
            cursor.take(min_bytes, elements)?,
            f64::from_le_bytes,
        )),
        ValueType::Bool => {
            let bytes = cursor.take(min_bytes, elements)?;
            let mut values = Vec::with_capacity(bytes.len());
            for (index, &byte) in bytes.iter().enumerate() {
                values.push(bool_of(byte, || {
                    format!("element {index} of array `{key}`")
                })?);
            }
            MetadataArray::Bool(values)
        }
        ValueType::String => MetadataArray::String(read_string_array(cursor, key, len)?),
        ValueType::Array => {
            return Err(GgufError::NestedArray {
                key: key.to_string(),
            });
        }
    })
}

/// Fixed-size little-endian values, one per `N` bytes.
fn decode<const N: usize, T>(bytes: &[u8], convert: fn([u8; N]) -> T) -> Vec<T> {
    bytes
        .as_chunks::<N>()
        .0
        .iter()
        .map(|&chunk| convert(chunk))
        .collect()
}

/// `len` strings; `len * 8` bytes are known to remain, which justifies the index's capacity.
fn read_string_array(
    cursor: &mut Cursor<'_>,
    key: &str,
    len: u64,
) -> Result<StringArray, GgufError> {
    let count = usize::try_from(len).unwrap_or(0);
    let mut array = StringArray::with_capacity(count, 0);
    for index in 0..len {
        let value = cursor.string(MAX_ARRAY_STRING_LEN, || {
            format!("element {index} of array `{key}`")
        })?;
        array.push(value);
    }
    Ok(array)
}

/// `general.alignment`: a `u32` power of two, or [`DEFAULT_ALIGNMENT`] when absent.
fn alignment_of(metadata: &BTreeMap<String, MetadataValue>) -> Result<u64, GgufError> {
    match metadata.get(ALIGNMENT_KEY) {
        None => Ok(DEFAULT_ALIGNMENT),
        Some(MetadataValue::U32(alignment)) if alignment.is_power_of_two() => {
            Ok(u64::from(*alignment))
        }
        Some(MetadataValue::U32(alignment)) => Err(GgufError::AlignmentNotPowerOfTwo {
            alignment: *alignment,
        }),
        Some(other) => Err(GgufError::AlignmentNotU32 {
            found: other.value_type(),
        }),
    }
}

/// A tensor info as declared, with its byte size, before the layout rules are checked.
struct RawTensorInfo {
    name: String,
    ggml_type: GgmlType,
    dims: Vec<u64>,
    offset: u64,
    byte_len: u64,
}

fn read_tensor_info(cursor: &mut Cursor<'_>, index: u64) -> Result<RawTensorInfo, GgufError> {
    let name = cursor
        .string(MAX_TENSOR_NAME_LEN, || {
            format!("the name of tensor {index}")
        })?
        .to_string();
    check_tensor_name(&name, index)?;
    let n_dims = cursor.u32(|| format!("the dimension count of tensor `{name}`"))?;
    if n_dims > MAX_DIMS {
        return Err(GgufError::TooManyDimensions {
            tensor: name,
            n_dims,
        });
    }
    let mut dims = Vec::with_capacity(MAX_DIMS as usize);
    for _ in 0..n_dims {
        dims.push(cursor.u64(|| format!("the dimensions of tensor `{name}`"))?);
    }
    let type_id = cursor.u32(|| format!("the type of tensor `{name}`"))?;
    let ggml_type = match GgmlType::from_id(type_id) {
        Ok(ggml_type) => ggml_type,
        Err(Some(type_name)) => {
            return Err(GgufError::RefusedTensorType {
                tensor: name,
                type_name,
                type_id,
            });
        }
        Err(None) => {
            return Err(GgufError::UnknownTensorType {
                tensor: name,
                type_id,
            });
        }
    };
    let offset = cursor.u64(|| format!("the data offset of tensor `{name}`"))?;
    let byte_len = tensor_byte_len(&name, ggml_type, &dims)?;
    Ok(RawTensorInfo {
        name,
        ggml_type,
        dims,
        offset,
        byte_len,
    })
}

/// Checks a tensor name against the rules of every format's names (the length was bounded when
/// it was read).
fn check_tensor_name(name: &str, index: u64) -> Result<(), GgufError> {
    match name_fault(name) {
        None => Ok(()),
        Some(NameFault::Empty) => Err(GgufError::EmptyTensorName { index }),
        Some(NameFault::ControlCharacter) => Err(GgufError::TensorNameControlCharacter {
            tensor: truncate(name),
        }),
        Some(NameFault::PathTraversal) => Err(GgufError::TensorNamePathTraversal {
            tensor: truncate(name),
        }),
    }
}

/// Bytes a tensor of `ggml_type` and `dims` (GGUF order) takes: whole blocks along `ne[0]`,
/// times the other dimensions; element count and size must fit 63 bits, as ggml counts them in
/// `int64_t`.
fn tensor_byte_len(name: &str, ggml_type: GgmlType, dims: &[u64]) -> Result<u64, GgufError> {
    if dims.contains(&0) {
        return Err(GgufError::ZeroDimension {
            tensor: name.to_string(),
            dims: dims.to_vec(),
        });
    }
    let overflow = || GgufError::ShapeOverflow {
        tensor: name.to_string(),
        dims: dims.to_vec(),
    };
    let fits = |value: &u64| i64::try_from(*value).is_ok() && usize::try_from(*value).is_ok();
    let elements = dims
        .iter()
        .try_fold(1u64, |acc, &dim| acc.checked_mul(dim))
        .filter(fits)
        .ok_or_else(overflow)?;
    let first_dim = dims.first().copied().unwrap_or(1);
    let block_len = ggml_type.block_len();
    if !first_dim.is_multiple_of(block_len) {
        return Err(GgufError::NotBlockMultiple {
            tensor: name.to_string(),
            ggml_type,
            first_dim,
            block_len,
        });
    }
    let rows = elements / first_dim;
    (first_dim / block_len)
        .checked_mul(ggml_type.block_bytes())
        .and_then(|row_bytes| row_bytes.checked_mul(rows))
        .filter(fits)
        .ok_or_else(overflow)
}

/// Tensor indices sorted by name; refuses a name declared twice.
fn index_by_name(infos: &[RawTensorInfo]) -> Result<Vec<usize>, GgufError> {
    let name_of = |index: &usize| infos.get(*index).map_or("", |info| info.name.as_str());
    let mut by_name: Vec<usize> = (0..infos.len()).collect();
    by_name.sort_unstable_by(|a, b| name_of(a).cmp(name_of(b)));
    for pair in by_name.windows(2) {
        if let [first, second] = pair
            && name_of(first) == name_of(second)
        {
            return Err(GgufError::DuplicateTensor {
                tensor: name_of(first).to_string(),
            });
        }
    }
    Ok(by_name)
}

/// Checks alignment, bounds, overlaps, gaps and trailing bytes, and makes the ranges absolute.
fn validate_layout(
    infos: Vec<RawTensorInfo>,
    file_len: u64,
    data_start: u64,
    alignment: u64,
) -> Result<Vec<GgufTensorInfo>, GgufError> {
    let data_len = file_len.saturating_sub(data_start);
    for info in &infos {
        if !info.offset.is_multiple_of(alignment) {
            return Err(GgufError::MisalignedTensor {
                tensor: info.name.clone(),
                offset: info.offset,
                alignment,
            });
        }
    }
    let mut by_offset: Vec<&RawTensorInfo> = infos.iter().collect();
    by_offset.sort_unstable_by_key(|info| (info.offset, info.byte_len));
    // End of the previous tensor's padding: where the next one must begin.
    let mut covered = 0u64;
    let mut previous: Option<(&str, u64)> = None;
    for info in by_offset {
        if let Some((previous_name, previous_end)) = previous
            && info.offset < previous_end
        {
            return Err(GgufError::OverlappingTensors {
                tensor: info.name.clone(),
                begin: info.offset,
                previous: previous_name.to_string(),
                previous_end,
            });
        }
        if info.offset != covered {
            return Err(GgufError::GapBetweenTensors {
                tensor: info.name.clone(),
                gap_begin: covered,
                gap_end: info.offset,
            });
        }
        let end = info.offset.saturating_add(info.byte_len);
        if end > data_len {
            return Err(GgufError::TensorPastEnd {
                tensor: info.name.clone(),
                end,
                data_len,
            });
        }
        covered = end.checked_next_multiple_of(alignment).unwrap_or(u64::MAX);
        previous = Some((&info.name, end));
    }
    if data_len > covered {
        return Err(GgufError::TrailingData { covered, data_len });
    }
    // Every range now lies inside the file, whose length is a `usize`.
    Ok(infos
        .into_iter()
        .map(|info| {
            let start = (data_start + info.offset) as usize;
            GgufTensorInfo {
                shape: info.dims.iter().rev().map(|&dim| dim as usize).collect(),
                range: start..start + info.byte_len as usize,
                name: info.name,
                ggml_type: info.ggml_type,
                dims: info.dims,
                offset: info.offset,
            }
        })
        .collect())
}
