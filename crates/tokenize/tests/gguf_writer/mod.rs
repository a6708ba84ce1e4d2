//! GGUF files for the tokenizer tests: metadata only (no tensors), written from typed values so
//! a test can take the real SmolLM2 metadata and change one key, or build a tiny vocabulary.
#![allow(dead_code, reason = "each test binary uses part of the writer")]

use std::collections::BTreeMap;

use safeformers_weights::gguf::{GgufFile, MetadataArray, MetadataValue};

fn string(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
}

fn array(out: &mut Vec<u8>, array: &MetadataArray) {
    out.extend_from_slice(&array.element_type().id().to_le_bytes());
    out.extend_from_slice(&(array.len() as u64).to_le_bytes());
    match array {
        MetadataArray::U8(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        MetadataArray::I8(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        MetadataArray::U16(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        MetadataArray::I16(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        MetadataArray::U32(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        MetadataArray::I32(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        MetadataArray::F32(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        MetadataArray::Bool(v) => v.iter().for_each(|x| out.push(u8::from(*x))),
        MetadataArray::String(v) => v.iter().for_each(|x| string(out, x)),
        MetadataArray::U64(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        MetadataArray::I64(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        MetadataArray::F64(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
    }
}

fn value(out: &mut Vec<u8>, value: &MetadataValue) {
    out.extend_from_slice(&value.value_type().id().to_le_bytes());
    match value {
        MetadataValue::U8(x) => out.push(*x),
        MetadataValue::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetadataValue::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetadataValue::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetadataValue::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetadataValue::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetadataValue::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetadataValue::Bool(x) => out.push(u8::from(*x)),
        MetadataValue::String(x) => string(out, x),
        MetadataValue::Array(x) => array(out, x),
        MetadataValue::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetadataValue::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetadataValue::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
}

/// A version-3 GGUF file holding `metadata` and no tensors, validated by the strict reader.
pub fn gguf_with(metadata: &BTreeMap<String, MetadataValue>, name: &str) -> GgufFile {
    let mut out = b"GGUF".to_vec();
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes());
    out.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (key, v) in metadata {
        string(&mut out, key);
        value(&mut out, v);
    }
    GgufFile::from_bytes(out, name).unwrap_or_else(|e| panic!("{e}"))
}

/// `MetadataValue::String`.
pub fn text(value: &str) -> MetadataValue {
    MetadataValue::String(value.to_owned())
}

/// `MetadataValue::Array` of strings.
pub fn strings(values: &[&str]) -> MetadataValue {
    MetadataValue::Array(MetadataArray::String(values.iter().copied().collect()))
}

/// A tiny byte-level vocabulary: the 256 byte tokens, then `extra` (merged tokens and specials),
/// with their types (1 normal; 3 control for those starting with `<|`), merges as given.
pub fn tiny_metadata(extra: &[&str], merges: &[&str]) -> BTreeMap<String, MetadataValue> {
    let alphabet = byte_alphabet();
    let mut tokens: Vec<String> = alphabet.iter().map(|c| c.to_string()).collect();
    tokens.extend(extra.iter().map(|t| (*t).to_owned()));
    let types: Vec<i32> = tokens
        .iter()
        .map(|t| if t.starts_with("<|") { 3 } else { 1 })
        .collect();
    let token_refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
    let mut metadata = BTreeMap::new();
    metadata.insert("general.architecture".into(), text("llama"));
    metadata.insert("tokenizer.ggml.model".into(), text("gpt2"));
    metadata.insert("tokenizer.ggml.pre".into(), text("smollm"));
    metadata.insert("tokenizer.ggml.tokens".into(), strings(&token_refs));
    metadata.insert(
        "tokenizer.ggml.token_type".into(),
        MetadataValue::Array(MetadataArray::I32(types)),
    );
    metadata.insert("tokenizer.ggml.merges".into(), strings(merges));
    metadata
}

/// GPT-2's `bytes_to_unicode`, written out again here so the test does not trust the code under
/// test.
pub fn byte_alphabet() -> Vec<char> {
    let mut printable: Vec<u32> = (0x21..=0x7E)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut chars: Vec<u32> = printable.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !printable.contains(&b) {
            printable.push(b);
            chars.push(256 + n);
            n += 1;
        }
    }
    let mut pairs: Vec<(u32, u32)> = printable.into_iter().zip(chars).collect();
    pairs.sort();
    pairs
        .into_iter()
        .map(|(_, c)| char::from_u32(c).unwrap())
        .collect()
}
