//! Checks shared by the GGUF tokenizer parity tests: ids, decodes and special-token ids
//! against the goldens `scripts/make_gguf_tokenizer_fixtures.py` wrote from Transformers.
#![allow(dead_code, reason = "each test binary uses part of the checks")]

use std::path::PathBuf;

use safeformers_tokenize::{EncodeOptions, Tokenizer};
use serde_json::Value;

/// `tests/fixtures/gguf-tokenizer/<name>`.
pub fn fixture(name: &str) -> PathBuf {
    safeformers_testkit::repo_fixture("gguf-tokenizer").join(name)
}

/// A JSON golden file of `tests/fixtures/gguf-tokenizer`.
pub fn golden(name: &str) -> Value {
    let path = fixture(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A JSON list of ids.
pub fn ids(value: &Value) -> Vec<u32> {
    let list = value
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {value}"));
    list.iter()
        .map(|id| id.as_u64().unwrap_or(u64::MAX) as u32)
        .collect()
}

/// The ids of `text`, with or without the special tokens the tokenizer adds.
pub fn encode(tokenizer: &Tokenizer, text: &str, add_special_tokens: bool) -> Vec<u32> {
    let options = EncodeOptions {
        add_special_tokens,
        ..Default::default()
    };
    let encoded = tokenizer
        .encode(text, &options)
        .unwrap_or_else(|e| panic!("{text:?}: {e}"));
    encoded
        .rows
        .first()
        .map(|row| row.input_ids.clone())
        .unwrap_or_default()
}

/// Every case of `expected["cases"]`: ids with and without special tokens, and both decodes.
pub fn assert_cases(tokenizer: &Tokenizer, expected: &Value) {
    let cases = expected["cases"]
        .as_array()
        .unwrap_or_else(|| panic!("no cases"));
    for case in cases {
        let text = case["text"].as_str().unwrap_or_default();
        let got = encode(tokenizer, text, true);
        assert_eq!(got, ids(&case["input_ids"]), "{text:?}");
        let plain = encode(tokenizer, text, false);
        let want_plain = ids(&case["input_ids_without_special_tokens"]);
        assert_eq!(plain, want_plain, "{text:?} without special tokens");
        for (skip, key) in [(false, "decoded"), (true, "decoded_skip_special_tokens")] {
            let decoded = tokenizer
                .decode(&got, skip)
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(decoded, case[key], "{key} of {text:?}");
        }
    }
}

/// The special-token ids (`bos_id`, `eos_id`, `unk_id`, `pad_id`) the golden lists, and the
/// vocabulary size.
pub fn assert_special_ids(tokenizer: &Tokenizer, expected: &Value) {
    let want = &expected["special_tokens"];
    for (key, id) in [
        ("bos_id", tokenizer.bos_token_id()),
        ("eos_id", tokenizer.eos_token_id()),
        ("unk_id", tokenizer.unk_token_id()),
        ("pad_id", tokenizer.pad_token_id()),
    ] {
        if let Some(want) = want.get(key) {
            assert_eq!(id.map(u64::from), want.as_u64(), "{key}");
        }
    }
    assert_eq!(
        Some(tokenizer.vocab_size() as u64),
        expected["vocab_size"].as_u64()
    );
}
