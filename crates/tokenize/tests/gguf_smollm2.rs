//! The tokenizer of the real SmolLM2-135M-Instruct Q4_1 GGUF equals Transformers' own GGUF
//! tokenizer (`AutoTokenizer.from_pretrained(folder, gguf_file=NAME)`): the goldens in
//! `tests/fixtures/gguf-tokenizer/smollm2-expected.json` were made by
//! `scripts/make_gguf_tokenizer_fixtures.py`.
//!
//! `SAFEFORMERS_SMOLLM2_GGUF` is set by `scripts/test.sh` (which fetches the file with
//! `scripts/fetch-smollm2.sh`); without it these tests fail, they never skip.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod gguf_parity;
mod gguf_writer;

use std::sync::OnceLock;

use gguf_parity::{assert_cases, assert_special_ids, encode, golden, ids};
use safeformers_tokenize::{ChatTemplateOptions, Tokenizer, TokenizerOptions};
use safeformers_weights::gguf::GgufFile;
use serde_json::Value;

use safeformers_testkit::smollm2_gguf;

fn expected() -> &'static Value {
    static EXPECTED: OnceLock<Value> = OnceLock::new();
    EXPECTED.get_or_init(|| golden("smollm2-expected.json"))
}

fn smollm2() -> &'static Tokenizer {
    static TOKENIZER: OnceLock<Tokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| {
        Tokenizer::from_gguf_file(&smollm2_gguf(), &TokenizerOptions::default())
            .unwrap_or_else(|e| panic!("{e}"))
    })
}

#[test]
fn smollm2_gguf_tokenizes_like_transformers() {
    assert_cases(smollm2(), expected());
}

#[test]
fn smollm2_gguf_has_transformers_special_tokens() {
    let tokenizer = smollm2();
    let want = &expected()["special_tokens"];
    let special = tokenizer.special_tokens();
    assert_eq!(special.bos.as_deref(), want["bos"].as_str());
    assert_eq!(special.eos.as_deref(), want["eos"].as_str());
    assert_eq!(special.unk.as_deref(), want["unk"].as_str());
    assert_eq!(special.pad.as_deref(), want["pad"].as_str());
    assert_special_ids(tokenizer, expected());
}

#[test]
fn smollm2_gguf_chat_template_renders_like_transformers() {
    let tokenizer = smollm2();
    let chat = &expected()["chat"];
    let messages = chat["messages"].as_array().unwrap();
    let options = ChatTemplateOptions {
        add_generation_prompt: true,
        ..Default::default()
    };
    let text = tokenizer.apply_chat_template(messages, &options).unwrap();
    assert_eq!(text, chat["text"].as_str().unwrap());
    let got = encode(tokenizer, &text, false);
    assert_eq!(got, ids(&chat["input_ids"]));
    assert_eq!(tokenizer.decode(&got, false).unwrap(), chat["decoded"]);
}

/// The same vocabulary with another `tokenizer.ggml.pre`: Transformers' ids for each variant
/// (from copies of the metadata the fixture script wrote with the `gguf` package).
#[test]
fn pre_variants_split_like_transformers() {
    let file = GgufFile::open(&smollm2_gguf()).unwrap();
    let texts: Vec<&str> = expected()["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|case| case["text"].as_str().unwrap())
        .collect();
    let variants = expected()["pre_variants"].as_object().unwrap();
    assert!(
        variants.len() >= 4,
        "regenerate the goldens: pre variants missing"
    );
    for (pre, want) in variants {
        let mut metadata = file.header().metadata().clone();
        metadata.insert("tokenizer.ggml.pre".into(), gguf_writer::text(pre));
        let name = format!("pre-{pre}.gguf");
        let variant = gguf_writer::gguf_with(&metadata, &name);
        let tokenizer = Tokenizer::from_gguf(
            variant.header(),
            variant.path(),
            &TokenizerOptions::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        for (text, want) in texts.iter().zip(want.as_array().unwrap()) {
            assert_eq!(
                encode(&tokenizer, text, false),
                ids(want),
                "pre {pre}: {text:?}"
            );
        }
    }
}
