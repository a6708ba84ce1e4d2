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

mod gguf_writer;

use std::path::PathBuf;
use std::sync::OnceLock;

use safeformers_tokenize::{ChatTemplateOptions, EncodeOptions, Tokenizer, TokenizerOptions};
use safeformers_weights::gguf::GgufFile;
use serde_json::Value;

use safeformers_testkit::smollm2_gguf;

fn expected() -> &'static Value {
    static EXPECTED: OnceLock<Value> = OnceLock::new();
    EXPECTED.get_or_init(|| {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/gguf-tokenizer/smollm2-expected.json");
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).unwrap()
    })
}

fn smollm2() -> &'static Tokenizer {
    static TOKENIZER: OnceLock<Tokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| {
        Tokenizer::from_gguf_file(&smollm2_gguf(), &TokenizerOptions::default())
            .unwrap_or_else(|e| panic!("{e}"))
    })
}

fn ids(value: &Value) -> Vec<u32> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_u64().unwrap() as u32)
        .collect()
}

fn encode(tokenizer: &Tokenizer, text: &str, add_special_tokens: bool) -> Vec<u32> {
    let options = EncodeOptions {
        add_special_tokens,
        ..Default::default()
    };
    let encoded = tokenizer
        .encode(text, &options)
        .unwrap_or_else(|e| panic!("{text:?}: {e}"));
    encoded.rows[0].input_ids.clone()
}

#[test]
fn smollm2_gguf_tokenizes_like_transformers() {
    let tokenizer = smollm2();
    for case in expected()["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let got = encode(tokenizer, text, true);
        assert_eq!(got, ids(&case["input_ids"]), "{text:?}");
        let plain = encode(tokenizer, text, false);
        assert_eq!(
            plain,
            ids(&case["input_ids_without_special_tokens"]),
            "{text:?}"
        );
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

#[test]
fn smollm2_gguf_has_transformers_special_tokens() {
    let tokenizer = smollm2();
    let want = &expected()["special_tokens"];
    let special = tokenizer.special_tokens();
    assert_eq!(special.bos.as_deref(), want["bos"].as_str());
    assert_eq!(special.eos.as_deref(), want["eos"].as_str());
    assert_eq!(special.unk.as_deref(), want["unk"].as_str());
    assert_eq!(special.pad.as_deref(), want["pad"].as_str());
    assert_eq!(
        tokenizer.bos_token_id().map(u64::from),
        want["bos_id"].as_u64()
    );
    assert_eq!(
        tokenizer.eos_token_id().map(u64::from),
        want["eos_id"].as_u64()
    );
    assert_eq!(
        tokenizer.unk_token_id().map(u64::from),
        want["unk_id"].as_u64()
    );
    assert_eq!(
        tokenizer.pad_token_id().map(u64::from),
        want["pad_id"].as_u64()
    );
    assert_eq!(
        tokenizer.vocab_size() as u64,
        expected()["vocab_size"].as_u64().unwrap()
    );
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
