//! A SentencePiece-style GGUF tokenizer (`tokenizer.ggml.model = llama`, merges derived from
//! the scores) equals Transformers' own: `tests/fixtures/gguf-tokenizer/llama-style.gguf` and its
//! goldens were made by `scripts/make_gguf_tokenizer_fixtures.py`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::PathBuf;

use safeformers_tokenize::{EncodeOptions, Tokenizer, TokenizerOptions};
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/gguf-tokenizer")
}

fn ids(value: &Value) -> Vec<u32> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn llama_style_gguf_tokenizes_like_transformers() {
    let path = fixtures().join("llama-style.gguf");
    let tokenizer = Tokenizer::from_gguf_file(&path, &TokenizerOptions::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let text = std::fs::read_to_string(fixtures().join("llama-style-expected.json")).unwrap();
    let expected: Value = serde_json::from_str(&text).unwrap();
    let special = &expected["special_tokens"];
    assert_eq!(
        tokenizer.bos_token_id().map(u64::from),
        special["bos_id"].as_u64()
    );
    assert_eq!(
        tokenizer.eos_token_id().map(u64::from),
        special["eos_id"].as_u64()
    );
    assert_eq!(
        tokenizer.unk_token_id().map(u64::from),
        special["unk_id"].as_u64()
    );
    assert_eq!(
        tokenizer.vocab_size() as u64,
        expected["vocab_size"].as_u64().unwrap()
    );
    for case in expected["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        for (add_special_tokens, key) in [
            (true, "input_ids"),
            (false, "input_ids_without_special_tokens"),
        ] {
            let options = EncodeOptions {
                add_special_tokens,
                ..Default::default()
            };
            let got = tokenizer.encode(text, &options).unwrap().rows[0]
                .input_ids
                .clone();
            assert_eq!(got, ids(&case[key]), "{key} of {text:?}");
        }
        let got = ids(&case["input_ids"]);
        assert_eq!(
            tokenizer.decode(&got, false).unwrap(),
            case["decoded"],
            "decode {text:?}"
        );
        assert_eq!(
            tokenizer.decode(&got, true).unwrap(),
            case["decoded_skip_special_tokens"],
            "decode {text:?} skipping special tokens"
        );
    }
}
