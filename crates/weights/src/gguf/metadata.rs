//! GGUF metadata values: the thirteen value types of the format, typed.

/// The type of a metadata value, with the ids the format gives them (`gguf_metadata_value_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueType {
    /// Unsigned 8-bit integer (id 0).
    U8,
    /// Signed 8-bit integer (id 1).
    I8,
    /// Unsigned 16-bit integer (id 2).
    U16,
    /// Signed 16-bit integer (id 3).
    I16,
    /// Unsigned 32-bit integer (id 4).
    U32,
    /// Signed 32-bit integer (id 5).
    I32,
    /// 32-bit float (id 6).
    F32,
    /// Boolean, one byte holding 0 or 1 (id 7).
    Bool,
    /// UTF-8 string: a u64 length, then the bytes (id 8).
    String,
    /// Array: an element type, a u64 count, then the elements (id 9).
    Array,
    /// Unsigned 64-bit integer (id 10).
    U64,
    /// Signed 64-bit integer (id 11).
    I64,
    /// 64-bit float (id 12).
    F64,
}

impl ValueType {
    /// The type with format id `id`, if the format defines one.
    pub fn from_id(id: u32) -> Option<ValueType> {
        Some(match id {
            0 => ValueType::U8,
            1 => ValueType::I8,
            2 => ValueType::U16,
            3 => ValueType::I16,
            4 => ValueType::U32,
            5 => ValueType::I32,
            6 => ValueType::F32,
            7 => ValueType::Bool,
            8 => ValueType::String,
            9 => ValueType::Array,
            10 => ValueType::U64,
            11 => ValueType::I64,
            12 => ValueType::F64,
            _ => return None,
        })
    }

    /// The format's id of this type.
    pub fn id(self) -> u32 {
        match self {
            ValueType::U8 => 0,
            ValueType::I8 => 1,
            ValueType::U16 => 2,
            ValueType::I16 => 3,
            ValueType::U32 => 4,
            ValueType::I32 => 5,
            ValueType::F32 => 6,
            ValueType::Bool => 7,
            ValueType::String => 8,
            ValueType::Array => 9,
            ValueType::U64 => 10,
            ValueType::I64 => 11,
            ValueType::F64 => 12,
        }
    }

    /// A short lowercase name (`"u32"`, `"string"`, `"array"`).
    pub fn name(self) -> &'static str {
        match self {
            ValueType::U8 => "u8",
            ValueType::I8 => "i8",
            ValueType::U16 => "u16",
            ValueType::I16 => "i16",
            ValueType::U32 => "u32",
            ValueType::I32 => "i32",
            ValueType::F32 => "f32",
            ValueType::Bool => "bool",
            ValueType::String => "string",
            ValueType::Array => "array",
            ValueType::U64 => "u64",
            ValueType::I64 => "i64",
            ValueType::F64 => "f64",
        }
    }

    /// The fewest bytes one value of this type takes in a file (a string is at least its
    /// 8-byte length, an array at least its type and count). Bounds how many elements an
    /// array can hold in the bytes that remain, before anything is allocated for them.
    pub fn min_encoded_len(self) -> u64 {
        match self {
            ValueType::U8 | ValueType::I8 | ValueType::Bool => 1,
            ValueType::U16 | ValueType::I16 => 2,
            ValueType::U32 | ValueType::I32 | ValueType::F32 => 4,
            ValueType::U64 | ValueType::I64 | ValueType::F64 | ValueType::String => 8,
            ValueType::Array => 12,
        }
    }
}

impl std::fmt::Display for ValueType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum MetadataValue {
    /// `u8`.
    U8(u8),
    /// `i8`.
    I8(i8),
    /// `u16`.
    U16(u16),
    /// `i16`.
    I16(i16),
    /// `u32`.
    U32(u32),
    /// `i32`.
    I32(i32),
    /// `f32`.
    F32(f32),
    /// `bool`.
    Bool(bool),
    /// `string` (valid UTF-8).
    String(String),
    /// `array` of any type but arrays.
    Array(MetadataArray),
    /// `u64`.
    U64(u64),
    /// `i64`.
    I64(i64),
    /// `f64`.
    F64(f64),
}

impl MetadataValue {
    /// The value's type.
    pub fn value_type(&self) -> ValueType {
        match self {
            MetadataValue::U8(_) => ValueType::U8,
            MetadataValue::I8(_) => ValueType::I8,
            MetadataValue::U16(_) => ValueType::U16,
            MetadataValue::I16(_) => ValueType::I16,
            MetadataValue::U32(_) => ValueType::U32,
            MetadataValue::I32(_) => ValueType::I32,
            MetadataValue::F32(_) => ValueType::F32,
            MetadataValue::Bool(_) => ValueType::Bool,
            MetadataValue::String(_) => ValueType::String,
            MetadataValue::Array(_) => ValueType::Array,
            MetadataValue::U64(_) => ValueType::U64,
            MetadataValue::I64(_) => ValueType::I64,
            MetadataValue::F64(_) => ValueType::F64,
        }
    }

    /// The value as a non-negative integer, whatever its integer width (writers disagree on
    /// widths: `context_length` is a `u32` in one file and a `u64` in another). `None` for
    /// anything that is not an integer, and for negative integers.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetadataValue::U8(value) => Some(u64::from(value)),
            MetadataValue::U16(value) => Some(u64::from(value)),
            MetadataValue::U32(value) => Some(u64::from(value)),
            MetadataValue::U64(value) => Some(value),
            MetadataValue::I8(value) => u64::try_from(value).ok(),
            MetadataValue::I16(value) => u64::try_from(value).ok(),
            MetadataValue::I32(value) => u64::try_from(value).ok(),
            MetadataValue::I64(value) => u64::try_from(value).ok(),
            _ => None,
        }
    }

    /// A one-line rendering for `scan` and `inspect`: scalars as they are, strings quoted and
    /// cut to `max_chars` characters (with their length when cut), arrays as their element type
    /// and length.
    pub fn summary(&self, max_chars: usize) -> String {
        match self {
            MetadataValue::U8(value) => value.to_string(),
            MetadataValue::I8(value) => value.to_string(),
            MetadataValue::U16(value) => value.to_string(),
            MetadataValue::I16(value) => value.to_string(),
            MetadataValue::U32(value) => value.to_string(),
            MetadataValue::I32(value) => value.to_string(),
            MetadataValue::F32(value) => value.to_string(),
            MetadataValue::Bool(value) => value.to_string(),
            MetadataValue::U64(value) => value.to_string(),
            MetadataValue::I64(value) => value.to_string(),
            MetadataValue::F64(value) => value.to_string(),
            MetadataValue::String(text) => quote_truncated(text, max_chars),
            MetadataValue::Array(array) => {
                format!("array of {} {}", array.len(), array.element_type())
            }
        }
    }
}

/// `text` as a quoted, escaped string of at most `max_chars` characters of the original, with
/// the full length in bytes when cut.
fn quote_truncated(text: &str, max_chars: usize) -> String {
    let shown: String = text.chars().take(max_chars).collect();
    if shown.len() == text.len() {
        format!("{shown:?}")
    } else {
        format!("{shown:?}... ({} bytes)", text.len())
    }
}

/// A metadata array: the elements of one type, stored as a typed vector.
#[derive(Debug, Clone, PartialEq)]
pub enum MetadataArray {
    /// `u8` elements.
    U8(Vec<u8>),
    /// `i8` elements.
    I8(Vec<i8>),
    /// `u16` elements.
    U16(Vec<u16>),
    /// `i16` elements.
    I16(Vec<i16>),
    /// `u32` elements.
    U32(Vec<u32>),
    /// `i32` elements.
    I32(Vec<i32>),
    /// `f32` elements (`tokenizer.ggml.scores`).
    F32(Vec<f32>),
    /// `bool` elements.
    Bool(Vec<bool>),
    /// `string` elements (`tokenizer.ggml.tokens`, `tokenizer.ggml.merges`).
    String(StringArray),
    /// `u64` elements.
    U64(Vec<u64>),
    /// `i64` elements.
    I64(Vec<i64>),
    /// `f64` elements.
    F64(Vec<f64>),
}

impl MetadataArray {
    /// The number of elements.
    pub fn len(&self) -> usize {
        match self {
            MetadataArray::U8(values) => values.len(),
            MetadataArray::I8(values) => values.len(),
            MetadataArray::U16(values) => values.len(),
            MetadataArray::I16(values) => values.len(),
            MetadataArray::U32(values) => values.len(),
            MetadataArray::I32(values) => values.len(),
            MetadataArray::F32(values) => values.len(),
            MetadataArray::Bool(values) => values.len(),
            MetadataArray::String(values) => values.len(),
            MetadataArray::U64(values) => values.len(),
            MetadataArray::I64(values) => values.len(),
            MetadataArray::F64(values) => values.len(),
        }
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The type of the elements.
    pub fn element_type(&self) -> ValueType {
        match self {
            MetadataArray::U8(_) => ValueType::U8,
            MetadataArray::I8(_) => ValueType::I8,
            MetadataArray::U16(_) => ValueType::U16,
            MetadataArray::I16(_) => ValueType::I16,
            MetadataArray::U32(_) => ValueType::U32,
            MetadataArray::I32(_) => ValueType::I32,
            MetadataArray::F32(_) => ValueType::F32,
            MetadataArray::Bool(_) => ValueType::Bool,
            MetadataArray::String(_) => ValueType::String,
            MetadataArray::U64(_) => ValueType::U64,
            MetadataArray::I64(_) => ValueType::I64,
            MetadataArray::F64(_) => ValueType::F64,
        }
    }
}

/// An array of strings stored as one text buffer and the end of each string in it: two
/// allocations however many strings, and never more memory than the file's bytes justify
/// (each string costs at least 8 bytes of the file, and one `usize` here).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StringArray {
    text: String,
    ends: Vec<usize>,
}

impl StringArray {
    /// An empty array with room for `count` strings of `text_len` bytes in all.
    pub(crate) fn with_capacity(count: usize, text_len: usize) -> StringArray {
        StringArray {
            text: String::with_capacity(text_len),
            ends: Vec::with_capacity(count),
        }
    }

    /// Appends one string.
    pub(crate) fn push(&mut self, value: &str) {
        self.text.push_str(value);
        self.ends.push(self.text.len());
    }

    /// The number of strings.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there are no strings.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The string at `index`.
    pub fn get(&self, index: usize) -> Option<&str> {
        let end = *self.ends.get(index)?;
        let start = match index.checked_sub(1) {
            Some(previous) => *self.ends.get(previous)?,
            None => 0,
        };
        self.text.get(start..end)
    }

    /// The strings, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.ends.iter().enumerate().map(|(index, &end)| {
            let start = match index.checked_sub(1) {
                Some(previous) => self.ends.get(previous).copied().unwrap_or(0),
                None => 0,
            };
            self.text.get(start..end).unwrap_or("")
        })
    }
}

impl<'a> FromIterator<&'a str> for StringArray {
    fn from_iter<I: IntoIterator<Item = &'a str>>(strings: I) -> StringArray {
        let mut array = StringArray::default();
        for value in strings {
            array.push(value);
        }
        array
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_type_ids_round_trip() {
        for id in 0..13 {
            let value_type = ValueType::from_id(id).unwrap();
            assert_eq!(value_type.id(), id);
        }
        assert_eq!(ValueType::from_id(13), None);
    }

    #[test]
    fn string_array_keeps_every_string() {
        let array: StringArray = ["a", "", "héllo", "Ġthe"].into_iter().collect();
        assert_eq!(array.len(), 4);
        assert_eq!(array.get(0), Some("a"));
        assert_eq!(array.get(1), Some(""));
        assert_eq!(array.get(2), Some("héllo"));
        assert_eq!(array.get(3), Some("Ġthe"));
        assert_eq!(array.get(4), None);
        let all: Vec<&str> = array.iter().collect();
        assert_eq!(all, ["a", "", "héllo", "Ġthe"]);
    }

    #[test]
    fn summaries() {
        assert_eq!(MetadataValue::U32(576).summary(10), "576");
        assert_eq!(
            MetadataValue::String("short".to_string()).summary(10),
            "\"short\""
        );
        assert_eq!(
            MetadataValue::String("a long string".to_string()).summary(4),
            "\"a lo\"... (13 bytes)"
        );
        let tokens: StringArray = ["a", "b"].into_iter().collect();
        assert_eq!(
            MetadataValue::Array(MetadataArray::String(tokens)).summary(10),
            "array of 2 string"
        );
    }

    #[test]
    fn integer_widths_widen() {
        assert_eq!(MetadataValue::U32(7).as_u64(), Some(7));
        assert_eq!(MetadataValue::I64(7).as_u64(), Some(7));
        assert_eq!(MetadataValue::I32(-1).as_u64(), None);
        assert_eq!(MetadataValue::F32(1.0).as_u64(), None);
    }
}
