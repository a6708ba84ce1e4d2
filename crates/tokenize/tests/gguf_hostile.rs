//! GGUF tokenizer metadata is untrusted: nonsense is refused with a typed error naming the file
//! and the key, never a panic, and a hostile chat template in the metadata is stopped exactly as
//! the same template in `tokenizer_config.json` is.
#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

mod common;
mod gguf_writer;

use std::collections::BTreeMap;
use std::path::PathBuf;

use gguf_writer::{gguf_with, strings, text, tiny_metadata};
use safeformers_tokenize::{
    ChatTemplateOptions, ChatTemplateProblem, EncodeOptions, TokenizeError, Tokenizer,
    TokenizerOptions,
};
use safeformers_weights::gguf::{MetadataArray, MetadataValue};
use serde_json::json;

type Metadata = BTreeMap<String, MetadataValue>;

fn load(metadata: &Metadata) -> Result<Tokenizer, TokenizeError> {
    let file = gguf_with(metadata, "tiny.gguf");
    Tokenizer::from_gguf(file.header(), file.path(), &TokenizerOptions::default())
}

/// A working tiny vocabulary: the 256 bytes, `he` `ll` `hell` `hello` (256..=259) with their
/// merges, and two control tokens (260, 261) for bos and eos.
fn tiny() -> Metadata {
    let mut metadata = tiny_metadata(
        &["he", "ll", "hell", "hello", "<|bos|>", "<|eos|>"],
        &["h e", "l l", "he ll", "hell o"],
    );
    metadata.insert(
        "tokenizer.ggml.bos_token_id".into(),
        MetadataValue::U32(260),
    );
    metadata.insert(
        "tokenizer.ggml.eos_token_id".into(),
        MetadataValue::U32(261),
    );
    metadata
}

/// The error of loading `metadata`, which must be an `InvalidGguf` on `key`.
fn refused_on(metadata: &Metadata, key: &str) -> String {
    match load(metadata) {
        Err(TokenizeError::InvalidGguf {
            path,
            key: found,
            message,
        }) => {
            assert_eq!(path, PathBuf::from("tiny.gguf"));
            assert_eq!(found, key, "{message}");
            let error = load(metadata).err().unwrap().to_string();
            assert!(error.starts_with("tiny.gguf: metadata `"), "{error}");
            message
        }
        Err(other) => panic!("{key}: expected InvalidGguf, got {other}"),
        Ok(_) => panic!("{key}: loaded"),
    }
}

fn ids(tokenizer: &Tokenizer, text: &str) -> Vec<u32> {
    tokenizer
        .encode(text, &EncodeOptions::default())
        .unwrap()
        .rows[0]
        .input_ids
        .clone()
}

#[test]
fn a_tiny_vocabulary_builds_with_its_control_tokens_and_flags() {
    let tokenizer = load(&tiny()).unwrap();
    assert_eq!(ids(&tokenizer, "hello"), [259]);
    // Control tokens are matched whole and skipped by decode(skip_special_tokens).
    assert_eq!(ids(&tokenizer, "<|eos|>hello"), [261, 259]);
    assert_eq!(tokenizer.decode(&[261, 259], true).unwrap(), "hello");
    assert_eq!(tokenizer.bos_token_id(), Some(260));
    // add_bos_token / add_eos_token as the metadata says.
    let mut flagged = tiny();
    flagged.insert(
        "tokenizer.ggml.add_bos_token".into(),
        MetadataValue::Bool(true),
    );
    flagged.insert(
        "tokenizer.ggml.add_eos_token".into(),
        MetadataValue::Bool(true),
    );
    let tokenizer = load(&flagged).unwrap();
    assert_eq!(ids(&tokenizer, "hello"), [260, 259, 261]);
}

#[test]
fn unsupported_models_and_pre_values_are_refused_by_name() {
    for (key, value) in [
        ("tokenizer.ggml.model", "t5"),
        ("tokenizer.ggml.model", "rwkv"),
        ("tokenizer.ggml.pre", "deepseek-llm"),
        ("tokenizer.ggml.pre", "tekken"),
    ] {
        let mut metadata = tiny();
        metadata.insert(key.into(), text(value));
        match load(&metadata) {
            Err(error @ TokenizeError::UnsupportedGguf { .. }) => {
                let message = error.to_string();
                assert!(
                    message.contains(key) && message.contains(value),
                    "{message}"
                );
            }
            Err(other) => panic!("{key}={value}: {other}"),
            Ok(_) => panic!("{key}={value}: loaded"),
        }
    }
}

/// The tiny vocabulary as a SentencePiece (`llama`) one: no merges, scores instead.
fn tiny_llama() -> Metadata {
    let mut metadata = tiny();
    metadata.insert("tokenizer.ggml.model".into(), text("llama"));
    metadata.remove("tokenizer.ggml.merges");
    metadata.remove("tokenizer.ggml.pre");
    let scores = (0..262).map(|id| -(id as f32)).collect();
    let scores = MetadataValue::Array(MetadataArray::F32(scores));
    metadata.insert("tokenizer.ggml.scores".into(), scores);
    metadata
}

#[test]
fn sentencepiece_vocabularies_build_and_their_nonsense_is_refused() {
    let tokenizer = load(&tiny_llama()).unwrap();
    // bos added by default (`add_bos_token` absent), merges derived from the scores.
    assert_eq!(ids(&tokenizer, "hello"), [260, 259]);
    for architecture in ["gemma", "gemma2", "gemma3", "phi3"] {
        let mut metadata = tiny_llama();
        metadata.insert("general.architecture".into(), text(architecture));
        match load(&metadata) {
            Err(error @ TokenizeError::UnsupportedGguf { .. }) => {
                assert!(error.to_string().contains(architecture), "{error}");
            }
            other => panic!("{architecture}: {other:?}"),
        }
    }
    let mut metadata = tiny_llama();
    metadata.insert("tokenizer.ggml.pre".into(), text("qwen2"));
    assert!(matches!(
        load(&metadata),
        Err(TokenizeError::UnsupportedGguf { .. })
    ));
    for scores in [vec![0.0; 10], vec![f32::NAN; 262], vec![f32::INFINITY; 262]] {
        let mut metadata = tiny_llama();
        let scores = MetadataValue::Array(MetadataArray::F32(scores));
        metadata.insert("tokenizer.ggml.scores".into(), scores);
        refused_on(&metadata, "tokenizer.ggml.scores");
    }
    let mut metadata = tiny_llama();
    metadata.insert("tokenizer.ggml.scores".into(), strings(&["1"]));
    refused_on(&metadata, "tokenizer.ggml.scores");
    let mut metadata = tiny_llama();
    metadata.remove("tokenizer.ggml.scores");
    refused_on(&metadata, "tokenizer.ggml.merges");
}

#[test]
fn deriving_merges_from_huge_tokens_is_refused() {
    // 64 tokens of 4096 bytes: 2^30 steps of splitting, over the limit.
    let long: Vec<String> = (0..64)
        .map(|i| format!("{i:02}{}", "a".repeat(4094)))
        .collect();
    let long: Vec<&str> = long.iter().map(String::as_str).collect();
    let mut metadata = tiny_metadata(&long, &[]);
    metadata.insert("tokenizer.ggml.model".into(), text("llama"));
    metadata.remove("tokenizer.ggml.pre");
    metadata.remove("tokenizer.ggml.merges");
    let scores = MetadataValue::Array(MetadataArray::F32(vec![0.0; 320]));
    metadata.insert("tokenizer.ggml.scores".into(), scores);
    let message = refused_on(&metadata, "tokenizer.ggml.tokens");
    assert!(message.contains("deriving merges"), "{message}");
}

#[test]
fn missing_or_mistyped_keys_are_refused() {
    for key in [
        "tokenizer.ggml.model",
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.merges",
    ] {
        let mut metadata = tiny();
        metadata.remove(key);
        refused_on(&metadata, key);
    }
    let mut metadata = tiny();
    metadata.insert("tokenizer.ggml.tokens".into(), MetadataValue::U32(7));
    refused_on(&metadata, "tokenizer.ggml.tokens");
    let mut metadata = tiny();
    metadata.insert("tokenizer.ggml.bos_token_id".into(), text("1"));
    refused_on(&metadata, "tokenizer.ggml.bos_token_id");
    let mut metadata = tiny();
    metadata.insert("tokenizer.ggml.add_bos_token".into(), MetadataValue::U8(1));
    refused_on(&metadata, "tokenizer.ggml.add_bos_token");
    let mut metadata = tiny();
    let floats = MetadataArray::F32(vec![0.0; 262]);
    metadata.insert(
        "tokenizer.ggml.token_type".into(),
        MetadataValue::Array(floats),
    );
    refused_on(&metadata, "tokenizer.ggml.token_type");
}

#[test]
fn ids_out_of_range_are_refused() {
    for key in [
        "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.unknown_token_id",
        "tokenizer.ggml.padding_token_id",
    ] {
        for id in [262, u32::MAX] {
            let mut metadata = tiny();
            metadata.insert(key.into(), MetadataValue::U32(id));
            let message = refused_on(&metadata, key);
            assert!(message.contains("out of range"), "{message}");
        }
    }
}

#[test]
fn merges_of_unknown_tokens_are_refused() {
    for merge in ["h x1", "he zz", "h", "h e l", "", "o o"] {
        let mut metadata = tiny();
        metadata.insert("tokenizer.ggml.merges".into(), strings(&["h e", merge]));
        let message = refused_on(&metadata, "tokenizer.ggml.merges");
        assert!(message.starts_with("merge 1 "), "{message}");
    }
}

#[test]
fn duplicate_tokens_and_bad_type_counts_are_refused() {
    let metadata = tiny_metadata(&["he", "he"], &["h e"]);
    let message = refused_on(&metadata, "tokenizer.ggml.tokens");
    assert!(message.contains("tokens 256 and 257"), "{message}");
    // A token outside the byte alphabet is respelled: " " becomes "Ġ", already byte 32's token.
    let metadata = tiny_metadata(&[" "], &[]);
    refused_on(&metadata, "tokenizer.ggml.tokens");
    let mut metadata = tiny();
    let short = MetadataArray::I32(vec![1; 10]);
    metadata.insert(
        "tokenizer.ggml.token_type".into(),
        MetadataValue::Array(short),
    );
    refused_on(&metadata, "tokenizer.ggml.token_type");
    let mut metadata = tiny();
    metadata.insert("tokenizer.ggml.tokens".into(), strings(&[]));
    refused_on(&metadata, "tokenizer.ggml.tokens");
}

#[test]
fn over_long_tokens_are_refused() {
    let long = "a".repeat(safeformers_tokenize::gguf::MAX_GGUF_TOKEN_BYTES + 1);
    let metadata = tiny_metadata(&[long.as_str()], &[]);
    let message = refused_on(&metadata, "tokenizer.ggml.tokens");
    assert!(message.contains("token 256"), "{message}");
}

/// The same hostile template, from GGUF metadata and from `tokenizer_config.json`: the same
/// typed error from the same sandbox.
#[test]
fn hostile_gguf_chat_template_is_stopped_like_tokenizer_config_one() {
    let messages = vec![json!({"role": "user", "content": "hi"})];
    for template in [
        "{% for i in range(10**9) %}x{% endfor %}",
        "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}",
        "{% macro f(n) %}{{ f(n) }}{{ f(n) }}{% endmacro %}{{ f(1) }}",
        "{{ ''.__class__.__mro__ }}{{ cycler.__init__.__globals__.os.popen('id').read() }}",
        "{{ 'x' * 10**12 }}",
    ] {
        let mut metadata = tiny();
        metadata.insert("tokenizer.chat_template".into(), text(template));
        let from_gguf = load(&metadata).unwrap();
        assert_eq!(from_gguf.chat_template(), Some(template));
        let gguf_error = from_gguf.apply_chat_template(&messages, &ChatTemplateOptions::default());

        let dir = common::scratch_dir("gguf-hostile", "template");
        std::fs::copy(
            common::data_dir().join("bytelevel/tokenizer.json"),
            dir.join("tokenizer.json"),
        )
        .unwrap();
        let config = json!({"chat_template": template});
        std::fs::write(dir.join("tokenizer_config.json"), config.to_string()).unwrap();
        let from_dir = Tokenizer::from_dir(&dir, &TokenizerOptions::default()).unwrap();
        let dir_error = from_dir.apply_chat_template(&messages, &ChatTemplateOptions::default());

        match (gguf_error, dir_error) {
            (
                Err(TokenizeError::ChatTemplate { problem: gguf, .. }),
                Err(TokenizeError::ChatTemplate { problem: dir, .. }),
            ) => {
                assert_eq!(
                    std::mem::discriminant(&gguf),
                    std::mem::discriminant(&dir),
                    "{template}: {gguf} vs {dir}"
                );
                assert!(!matches!(gguf, ChatTemplateProblem::Missing), "{template}");
            }
            (gguf, dir) => panic!("{template}: expected refusals, got {gguf:?} and {dir:?}"),
        }
    }
}

#[test]
fn an_over_long_chat_template_is_refused() {
    let mut metadata = tiny();
    let huge = "x".repeat(usize::try_from(safeformers_tokenize::MAX_CONFIG_BYTES).unwrap() + 1);
    metadata.insert("tokenizer.chat_template".into(), text(&huge));
    refused_on(&metadata, "tokenizer.chat_template");
}

mod random_metadata {
    use super::*;
    use proptest::prelude::*;

    /// Random extra tokens, merges or scores, token types, role ids and flags, as `gpt2` or
    /// `llama` vocabularies: loading never panics; what loads encodes and decodes random text
    /// without panicking.
    fn metadata() -> impl Strategy<Value = (Metadata, String)> {
        (
            proptest::collection::vec(
                "[a-c]{2,3}|<\\|[a-z]{0,3}\\|>|[a-z \u{e9}\u{4e2d}]{0,6}",
                0..12,
            ),
            proptest::collection::vec("[a-c]{1,2} [a-c]{1,2}|[a-z<|> ]{0,3}", 0..12),
            (proptest::collection::vec(-2i32..6, 300), any::<bool>()),
            proptest::collection::vec(proptest::option::of(0u32..270), 4),
            proptest::option::of(any::<bool>()),
            ".{0,40}",
            proptest::option::of(proptest::collection::vec(-4.0f32..4.0, 300)),
        )
            .prop_map(
                |(mut extra, merges, (mut types, cut), roles, add_bos, input, scores)| {
                    // Mostly distinct tokens, so that many vocabularies load.
                    extra.sort();
                    extra.dedup();
                    extra.retain(|token| token.chars().count() != 1);
                    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
                    let merges: Vec<&str> = merges.iter().map(String::as_str).collect();
                    let mut metadata = tiny_metadata(&extra, &merges);
                    let token_count = 256 + extra.len();
                    types.truncate(if cut { token_count - 1 } else { token_count });
                    let types = MetadataValue::Array(MetadataArray::I32(types));
                    metadata.insert("tokenizer.ggml.token_type".into(), types);
                    let keys = [
                        "bos_token_id",
                        "eos_token_id",
                        "unknown_token_id",
                        "padding_token_id",
                    ];
                    for (key, id) in keys.iter().zip(roles) {
                        if let Some(id) = id {
                            let key = format!("tokenizer.ggml.{key}");
                            metadata.insert(key, MetadataValue::U32(id));
                        }
                    }
                    if let Some(flag) = add_bos {
                        let key = "tokenizer.ggml.add_bos_token".to_owned();
                        metadata.insert(key, MetadataValue::Bool(flag));
                    }
                    if let Some(mut scores) = scores {
                        // A SentencePiece vocabulary: merges derived from the scores.
                        scores.truncate(token_count);
                        metadata.insert("tokenizer.ggml.model".into(), text("llama"));
                        metadata.remove("tokenizer.ggml.pre");
                        metadata.remove("tokenizer.ggml.merges");
                        let scores = MetadataValue::Array(MetadataArray::F32(scores));
                        metadata.insert("tokenizer.ggml.scores".into(), scores);
                    }
                    (metadata, input)
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]
        #[test]
        fn random_metadata_never_panics((metadata, input) in metadata()) {
            if let Ok(tokenizer) = load(&metadata) {
                let encoded = tokenizer.encode(&input, &EncodeOptions::default()).unwrap();
                let ids = &encoded.rows[0].input_ids;
                let _ = tokenizer.decode(ids, false).unwrap();
            }
        }
    }
}
