//! Every rule of a GGUF file, as one error variant each.

use super::ggml_type::GgmlType;
use super::metadata::ValueType;
use super::{MAX_ARRAY_LEN, MAX_DIMS, MAX_KEY_LEN, MAX_METADATA_KEYS, MAX_TENSORS};

/// A rule a GGUF file broke. Each variant is one rule and says where it was broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    /// The file ends (or the header's declared sizes run) before something it must hold.
    #[error(
        "truncated: {what} needs {needed} bytes at offset {offset}, but only {available} remain"
    )]
    Truncated {
        /// What was being read (`"the value of key `general.name`"`).
        what: String,
        /// File offset where it starts.
        offset: u64,
        /// Bytes it needs.
        needed: u64,
        /// Bytes left in the file from `offset`.
        available: u64,
    },

    /// The file does not start with `GGUF`.
    #[error("not a GGUF file: it starts with {found} instead of the magic `GGUF`")]
    BadMagic {
        /// The first bytes, escaped.
        found: String,
    },

    /// Version 1 of the format (32-bit counts and lengths, 2023), which nothing writes anymore.
    #[error(
        "GGUF version 1 is not supported (it predates 64-bit counts); convert the model again \
         with a current llama.cpp to get version 3"
    )]
    VersionOne,

    /// A byte-swapped version: the file was written big-endian, which we do not read.
    #[error(
        "this GGUF file is big-endian (its version reads as {version:#010x} little-endian); only \
         little-endian GGUF files are supported"
    )]
    BigEndian {
        /// The version field, read little-endian.
        version: u32,
    },

    /// A version other than 2 or 3.
    #[error("unsupported GGUF version {version} (versions 2 and 3 are supported)")]
    UnsupportedVersion {
        /// The version field.
        version: u32,
    },

    /// More tensors than [`MAX_TENSORS`].
    #[error("the header declares {count} tensors, more than the limit of {MAX_TENSORS}")]
    TooManyTensors {
        /// The declared count.
        count: u64,
    },

    /// More metadata keys than [`MAX_METADATA_KEYS`].
    #[error(
        "the header declares {count} metadata keys, more than the limit of {MAX_METADATA_KEYS}"
    )]
    TooManyMetadataKeys {
        /// The declared count.
        count: u64,
    },

    /// A count that the rest of the file cannot hold, whatever its contents.
    #[error(
        "the header declares {count} {what}, but the {available} bytes left in the file hold \
         at most {most}"
    )]
    CountPastEnd {
        /// What is counted (`"tensors"`, `"metadata keys"`).
        what: &'static str,
        /// The declared count.
        count: u64,
        /// Bytes left in the file.
        available: u64,
        /// How many could fit in them.
        most: u64,
    },

    /// A string longer than its limit.
    #[error("{what} is {len} bytes long, more than the limit of {limit}")]
    StringTooLong {
        /// Which string.
        what: String,
        /// Its declared length.
        len: u64,
        /// The limit for strings of its kind.
        limit: u64,
    },

    /// A string that is not UTF-8.
    #[error("{what} is not valid UTF-8 (first bad byte at file offset {offset})")]
    InvalidUtf8 {
        /// Which string.
        what: String,
        /// File offset of the first byte that is not UTF-8.
        offset: u64,
    },

    /// A metadata key that is empty.
    #[error("metadata key {index} is empty")]
    EmptyKey {
        /// Its position among the keys.
        index: u64,
    },

    /// A metadata key longer than [`MAX_KEY_LEN`] bytes (the format's limit).
    #[error("metadata key {index} is {len} bytes long, more than the format's {MAX_KEY_LEN}")]
    KeyTooLong {
        /// Its position among the keys.
        index: u64,
        /// Its length.
        len: u64,
    },

    /// A metadata key with anything but printable ASCII (the format says keys are ASCII).
    #[error("metadata key {key:?} holds a character other than printable ASCII")]
    InvalidKey {
        /// The key (truncated).
        key: String,
    },

    /// The same metadata key twice.
    #[error("metadata key `{key}` appears twice")]
    DuplicateKey {
        /// The key.
        key: String,
    },

    /// A value type id the format does not define.
    #[error("metadata key `{key}` has value type {type_id}, which the format does not define")]
    UnknownValueType {
        /// The key (`key[]` for an array's element type).
        key: String,
        /// The type id found.
        type_id: u32,
    },

    /// An array of arrays, which no GGUF writer produces.
    #[error("metadata key `{key}` is an array of arrays; nested arrays are refused")]
    NestedArray {
        /// The key.
        key: String,
    },

    /// An array longer than [`MAX_ARRAY_LEN`].
    #[error("metadata array `{key}` has {len} elements, more than the limit of {MAX_ARRAY_LEN}")]
    ArrayTooLong {
        /// The key.
        key: String,
        /// The declared length.
        len: u64,
    },

    /// A boolean byte other than 0 or 1.
    #[error("{what} is a bool holding byte {byte:#04x}; a bool must be 0 or 1")]
    InvalidBool {
        /// Which value.
        what: String,
        /// The byte found.
        byte: u8,
    },

    /// `general.alignment` is not a `u32`.
    #[error("`general.alignment` must be a u32, found {found}")]
    AlignmentNotU32 {
        /// The type found.
        found: ValueType,
    },

    /// `general.alignment` is zero or not a power of two.
    #[error("`general.alignment` is {alignment}, which is not a power of two")]
    AlignmentNotPowerOfTwo {
        /// The value found.
        alignment: u32,
    },

    /// A tensor with an empty name.
    #[error("tensor {index} has an empty name")]
    EmptyTensorName {
        /// Its position among the tensor infos.
        index: u64,
    },

    /// A tensor name holding NUL or another control character.
    #[error("tensor name {tensor:?} contains a control character")]
    TensorNameControlCharacter {
        /// The name (truncated, escaped).
        tensor: String,
    },

    /// A tensor name that is path-like in a way that could escape a directory.
    #[error("tensor name `{tensor}` starts with a slash or has a `..` path segment")]
    TensorNamePathTraversal {
        /// The name (truncated).
        tensor: String,
    },

    /// The same tensor name twice.
    #[error("tensor `{tensor}` is declared twice")]
    DuplicateTensor {
        /// The name.
        tensor: String,
    },

    /// More than [`MAX_DIMS`] dimensions.
    #[error("tensor `{tensor}` has {n_dims} dimensions, more than ggml's {MAX_DIMS}")]
    TooManyDimensions {
        /// The tensor.
        tensor: String,
        /// The declared number of dimensions.
        n_dims: u32,
    },

    /// A dimension of zero: a tensor of no elements, which no writer produces.
    #[error("tensor `{tensor}` has a zero dimension in {dims:?} (GGUF order)")]
    ZeroDimension {
        /// The tensor.
        tensor: String,
        /// Its dimensions, in GGUF order (`ne[0]` first).
        dims: Vec<u64>,
    },

    /// Element count or byte size that overflows 63 bits (ggml counts in `int64_t`).
    #[error("the dimensions {dims:?} of tensor `{tensor}` overflow 63-bit sizes")]
    ShapeOverflow {
        /// The tensor.
        tensor: String,
        /// Its dimensions, in GGUF order.
        dims: Vec<u64>,
    },

    /// A tensor type we know by name but do not read.
    #[error(
        "tensor `{tensor}` has type {type_name} (id {type_id}), which safeformers does not read; \
         use a file quantized to F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 or a k-quant"
    )]
    RefusedTensorType {
        /// The tensor.
        tensor: String,
        /// The type's name (`"IQ2_XXS"`).
        type_name: &'static str,
        /// Its id.
        type_id: u32,
    },

    /// A tensor type id ggml does not define.
    #[error("tensor `{tensor}` has type id {type_id}, which ggml does not define")]
    UnknownTensorType {
        /// The tensor.
        tensor: String,
        /// The id found.
        type_id: u32,
    },

    /// The first GGUF dimension is not a whole number of blocks.
    #[error(
        "tensor `{tensor}` ({ggml_type}) has first dimension {first_dim}, not a multiple of the \
         type's block of {block_len}"
    )]
    NotBlockMultiple {
        /// The tensor.
        tensor: String,
        /// Its type.
        ggml_type: GgmlType,
        /// `ne[0]`.
        first_dim: u64,
        /// Elements per block of its type.
        block_len: u64,
    },

    /// A tensor offset that is not a multiple of the file's alignment.
    #[error(
        "tensor `{tensor}` starts at data offset {offset}, not a multiple of the alignment {alignment}"
    )]
    MisalignedTensor {
        /// The tensor.
        tensor: String,
        /// Its offset in the data section.
        offset: u64,
        /// The file's alignment.
        alignment: u64,
    },

    /// Two tensors share bytes.
    #[error(
        "tensor `{tensor}` (data offset {begin}) overlaps tensor `{previous}`, which ends at \
         {previous_end}"
    )]
    OverlappingTensors {
        /// The tensor that starts inside another.
        tensor: String,
        /// Its offset.
        begin: u64,
        /// The tensor it overlaps.
        previous: String,
        /// That tensor's end offset.
        previous_end: u64,
    },

    /// Bytes between two tensors (beyond alignment padding) that belong to no tensor.
    #[error(
        "bytes {gap_begin}..{gap_end} of the data section, before tensor `{tensor}`, belong to \
         no tensor (more than alignment padding)"
    )]
    GapBetweenTensors {
        /// The tensor after the gap.
        tensor: String,
        /// Start of the gap (after padding).
        gap_begin: u64,
        /// End of the gap.
        gap_end: u64,
    },

    /// A tensor that extends past the end of the file.
    #[error(
        "tensor `{tensor}` ends at data offset {end} but the data section is only {data_len} bytes"
    )]
    TensorPastEnd {
        /// The tensor.
        tensor: String,
        /// Its end offset (saturated at `u64::MAX`).
        end: u64,
        /// Length of the data section.
        data_len: u64,
    },

    /// Bytes after the last tensor (and its padding): nothing may hide there.
    #[error(
        "the tensors and their padding cover {covered} bytes of the {data_len}-byte data \
         section; trailing bytes belong to no tensor"
    )]
    TrailingData {
        /// Bytes covered by tensors and padding.
        covered: u64,
        /// Length of the data section.
        data_len: u64,
    },

    /// A metadata value of another type than the one asked for.
    #[error("metadata key `{key}` must be {expected}, found {found}")]
    MetadataType {
        /// The key.
        key: String,
        /// What the caller needs (`"a string"`, `"an integer that fits u32"`).
        expected: &'static str,
        /// What is there (type and, for scalars, value).
        found: String,
    },
}
