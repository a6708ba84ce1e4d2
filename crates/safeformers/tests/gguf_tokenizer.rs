//! `Tokenizer::from_pretrained` on a `.gguf` file builds the tokenizer of its metadata.
//!
//! `SAFEFORMERS_SMOLLM2_GGUF` is set by `scripts/test.sh` (which fetches the file with
//! `scripts/fetch-smollm2.sh`); without it this test fails, it never skips.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use safeformers::{FromPretrained, Options, Tokenizer};
use safeformers_tokenize::{ChatTemplateOptions, EncodeOptions};

fn smollm2_gguf() -> PathBuf {
    let path = std::env::var_os("SAFEFORMERS_SMOLLM2_GGUF").unwrap_or_else(|| {
        panic!(
            "SAFEFORMERS_SMOLLM2_GGUF is not set: run the tests with scripts/test.sh, which \
             fetches SmolLM2-135M-Instruct Q4_1 and sets it"
        )
    });
    let path = PathBuf::from(path);
    assert!(
        path.is_file(),
        "SAFEFORMERS_SMOLLM2_GGUF is {}, which is not a file: run scripts/fetch-smollm2.sh",
        path.display()
    );
    path
}

#[test]
fn from_pretrained_on_a_gguf_file_gives_its_tokenizer() {
    let options = Options::default();
    let tokenizer = Tokenizer::from_pretrained(smollm2_gguf(), &options).unwrap();
    let encoded = tokenizer
        .encode("Hello world!", &EncodeOptions::default())
        .unwrap();
    // Transformers' ids (tests/fixtures/gguf-tokenizer/smollm2-expected.json).
    assert_eq!(encoded.rows[0].input_ids, [19556, 905, 17]);
    assert_eq!(tokenizer.eos_token_id(), Some(2));
    let messages = [serde_json::json!({"role": "user", "content": "Hi"})];
    let text = tokenizer
        .apply_chat_template(&messages, &ChatTemplateOptions::default())
        .unwrap();
    assert!(text.starts_with("<|im_start|>system\n"), "{text}");
}
