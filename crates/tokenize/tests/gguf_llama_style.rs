//! A SentencePiece-style GGUF tokenizer (`tokenizer.ggml.model = llama`, merges derived from
//! the scores) equals Transformers' own: `tests/fixtures/gguf-tokenizer/llama-style.gguf` and its
//! goldens were made by `scripts/make_gguf_tokenizer_fixtures.py`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod gguf_parity;

use gguf_parity::{assert_cases, assert_special_ids, fixture, golden};
use safeformers_tokenize::{Tokenizer, TokenizerOptions};

#[test]
fn llama_style_gguf_tokenizes_like_transformers() {
    let tokenizer =
        Tokenizer::from_gguf_file(&fixture("llama-style.gguf"), &TokenizerOptions::default())
            .unwrap_or_else(|e| panic!("{e}"));
    let expected = golden("llama-style-expected.json");
    assert_special_ids(&tokenizer, &expected);
    assert_cases(&tokenizer, &expected);
}
