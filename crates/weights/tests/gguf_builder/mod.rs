//! Hand-built GGUF files for the reader's tests: every field written explicitly, so a test can
//! break exactly one rule.
#![allow(dead_code, reason = "each test binary uses part of the builder")]

/// Value type ids of the format.
pub mod value_type {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;
}

/// ggml type ids used in the tests.
pub mod ggml {
    pub const F32: u32 = 0;
    pub const F16: u32 = 1;
    pub const Q4_0: u32 = 2;
    pub const Q4_1: u32 = 3;
    pub const Q8_0: u32 = 8;
    pub const Q4_K: u32 = 12;
    pub const Q6_K: u32 = 14;
    pub const BF16: u32 = 30;
    pub const IQ2_XXS: u32 = 16;
}

/// A GGUF string: u64 length, bytes.
pub fn string(text: &[u8]) -> Vec<u8> {
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(text);
    out
}

/// One tensor info, and how many data bytes to lay out for it.
#[derive(Clone, Debug)]
pub struct TensorSpec {
    pub name: Vec<u8>,
    pub dims: Vec<u64>,
    pub type_id: u32,
    /// `None`: placed after the previous tensor, padded to the alignment.
    pub offset: Option<u64>,
    /// Bytes of data this tensor needs (the builder does not compute it: tests state it).
    pub data_len: u64,
}

/// A GGUF file under construction.
#[derive(Clone, Debug)]
pub struct Gguf {
    pub version: u32,
    /// Encoded key-values (key, type, value).
    pub key_values: Vec<Vec<u8>>,
    pub tensors: Vec<TensorSpec>,
    /// Alignment used for the layout (set `general.alignment` separately to change the file's).
    pub alignment: u64,
    /// Overrides of the declared counts.
    pub tensor_count: Option<u64>,
    pub key_count: Option<u64>,
    /// Bytes appended after the data section.
    pub trailing: Vec<u8>,
    /// Whether to pad the last tensor to the alignment.
    pub pad_last: bool,
    /// Overrides the length of the data section the layout computes.
    pub data_len: Option<u64>,
}

impl Gguf {
    pub fn new(version: u32) -> Gguf {
        Gguf {
            version,
            key_values: Vec::new(),
            tensors: Vec::new(),
            alignment: 32,
            tensor_count: None,
            key_count: None,
            trailing: Vec::new(),
            pad_last: true,
            data_len: None,
        }
    }

    /// A key with a raw type id and raw value bytes.
    pub fn raw_kv(mut self, key: &[u8], type_id: u32, value: &[u8]) -> Gguf {
        let mut kv = string(key);
        kv.extend_from_slice(&type_id.to_le_bytes());
        kv.extend_from_slice(value);
        self.key_values.push(kv);
        self
    }

    pub fn kv_u32(self, key: &str, value: u32) -> Gguf {
        self.raw_kv(key.as_bytes(), value_type::U32, &value.to_le_bytes())
    }

    pub fn kv_f32(self, key: &str, value: f32) -> Gguf {
        self.raw_kv(key.as_bytes(), value_type::F32, &value.to_le_bytes())
    }

    pub fn kv_bool(self, key: &str, value: bool) -> Gguf {
        self.raw_kv(key.as_bytes(), value_type::BOOL, &[u8::from(value)])
    }

    pub fn kv_string(self, key: &str, value: &str) -> Gguf {
        self.raw_kv(
            key.as_bytes(),
            value_type::STRING,
            &string(value.as_bytes()),
        )
    }

    /// An array: element type, count, raw element bytes.
    pub fn kv_array(self, key: &str, element_type: u32, count: u64, elements: &[u8]) -> Gguf {
        let mut value = element_type.to_le_bytes().to_vec();
        value.extend_from_slice(&count.to_le_bytes());
        value.extend_from_slice(elements);
        self.raw_kv(key.as_bytes(), value_type::ARRAY, &value)
    }

    pub fn kv_strings(self, key: &str, values: &[&str]) -> Gguf {
        let elements: Vec<u8> = values
            .iter()
            .flat_map(|value| string(value.as_bytes()))
            .collect();
        self.kv_array(key, value_type::STRING, values.len() as u64, &elements)
    }

    /// A tensor placed after the previous one.
    pub fn tensor(mut self, name: &str, dims: &[u64], type_id: u32, data_len: u64) -> Gguf {
        self.tensors.push(TensorSpec {
            name: name.as_bytes().to_vec(),
            dims: dims.to_vec(),
            type_id,
            offset: None,
            data_len,
        });
        self
    }

    /// A tensor at an explicit data offset.
    pub fn tensor_at(
        mut self,
        name: &str,
        dims: &[u64],
        type_id: u32,
        offset: u64,
        data_len: u64,
    ) -> Gguf {
        self.tensors.push(TensorSpec {
            name: name.as_bytes().to_vec(),
            dims: dims.to_vec(),
            type_id,
            offset: Some(offset),
            data_len,
        });
        self
    }

    fn align(&self, value: u64) -> u64 {
        value
            .div_ceil(self.alignment)
            .saturating_mul(self.alignment)
    }

    /// The offsets of every tensor and the data section's length.
    fn layout(&self) -> (Vec<u64>, u64) {
        let mut cursor = 0;
        let mut offsets = Vec::new();
        let mut data_len = 0;
        for (index, tensor) in self.tensors.iter().enumerate() {
            let offset = tensor.offset.unwrap_or(cursor);
            offsets.push(offset);
            let end = offset.saturating_add(tensor.data_len);
            let last = index + 1 == self.tensors.len();
            cursor = self.align(end);
            let padded = if last && !self.pad_last { end } else { cursor };
            data_len = data_len.max(padded);
        }
        (offsets, data_len)
    }

    /// The bytes before the tensor infos: magic, version, counts, key-values.
    pub fn preamble(&self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend_from_slice(&self.version.to_le_bytes());
        let tensor_count = self.tensor_count.unwrap_or(self.tensors.len() as u64);
        let key_count = self.key_count.unwrap_or(self.key_values.len() as u64);
        out.extend_from_slice(&tensor_count.to_le_bytes());
        out.extend_from_slice(&key_count.to_le_bytes());
        for kv in &self.key_values {
            out.extend_from_slice(kv);
        }
        out
    }

    pub fn build(&self) -> Vec<u8> {
        let mut out = self.preamble();
        let (offsets, data_len) = self.layout();
        let data_len = self.data_len.unwrap_or(data_len);
        for (tensor, offset) in self.tensors.iter().zip(&offsets) {
            out.extend_from_slice(&string(&tensor.name));
            out.extend_from_slice(&(tensor.dims.len() as u32).to_le_bytes());
            for dim in &tensor.dims {
                out.extend_from_slice(&dim.to_le_bytes());
            }
            out.extend_from_slice(&tensor.type_id.to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
        }
        let data_start = self.align(out.len() as u64);
        if !self.tensors.is_empty() {
            out.resize(data_start as usize, 0);
        }
        // A recognisable pattern: byte i of the data section is i % 251.
        out.extend((0..data_len).map(|index| (index % 251) as u8));
        out.extend_from_slice(&self.trailing);
        out
    }
}

/// A small valid model-like file: metadata of every scalar type, arrays, and tensors of several
/// types.
pub fn valid(version: u32) -> Gguf {
    Gguf::new(version)
        .kv_string("general.architecture", "llama")
        .kv_u32("llama.embedding_length", 64)
        .kv_f32("llama.attention.layer_norm_rms_epsilon", 1e-5)
        .kv_bool("tokenizer.ggml.add_bos_token", true)
        .raw_kv(b"test.u8", value_type::U8, &[7])
        .raw_kv(b"test.i8", value_type::I8, &[0xff])
        .raw_kv(b"test.u16", value_type::U16, &513u16.to_le_bytes())
        .raw_kv(b"test.i16", value_type::I16, &(-2i16).to_le_bytes())
        .raw_kv(b"test.i32", value_type::I32, &(-3i32).to_le_bytes())
        .raw_kv(b"test.u64", value_type::U64, &(1u64 << 40).to_le_bytes())
        .raw_kv(b"test.i64", value_type::I64, &(-4i64).to_le_bytes())
        .raw_kv(b"test.f64", value_type::F64, &0.5f64.to_le_bytes())
        .kv_strings("tokenizer.ggml.tokens", &["<s>", "</s>", "Ġthe", "héllo"])
        .kv_array(
            "tokenizer.ggml.scores",
            value_type::F32,
            2,
            &[1.0f32.to_le_bytes(), 2.0f32.to_le_bytes()].concat(),
        )
        .kv_array(
            "tokenizer.ggml.token_type",
            value_type::I32,
            1,
            &1i32.to_le_bytes(),
        )
        .kv_string("tokenizer.chat_template", "{{ messages }}")
        .tensor("token_embd.weight", &[64, 4], ggml::Q4_1, 4 * 2 * 20)
        .tensor("blk.0.attn_norm.weight", &[64], ggml::F32, 256)
        .tensor("blk.0.ffn_up.weight", &[256, 2], ggml::Q6_K, 2 * 210)
        .tensor("output.weight", &[32, 3], ggml::Q8_0, 3 * 34)
        .tensor("blk.0.small", &[3], ggml::F16, 6)
}
