//! Missing, malformed, oversized and hostile tokenizer folders give typed errors naming the
//! file, never a panic; hostile regexes cannot hang encoding.
#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

mod common;

use std::path::{Path, PathBuf};

use safeformers_tokenize::{EncodeOptions, Padding, TokenizeError, Tokenizer, TokenizerOptions};
use serde_json::{Value, json};

fn folder(name: &str) -> PathBuf {
    common::scratch_dir("tokenize-hostile", name)
}

fn write(dir: &Path, file: &str, contents: &[u8]) {
    std::fs::write(dir.join(file), contents).unwrap();
}

fn load(dir: &Path) -> Result<Tokenizer, TokenizeError> {
    Tokenizer::from_dir(dir, &TokenizerOptions::default())
}

/// A small valid WordLevel tokenizer, to be broken in the tests.
fn word_level(pre_tokenizer: Value) -> Value {
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [],
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": {"[UNK]": 0, "a": 1, "b": 2, "aaaa": 3}, "unk_token": "[UNK]"}
    })
}

#[test]
fn missing_folder_and_missing_file() {
    let err = load(Path::new("/nonexistent/safeformers/model")).unwrap_err();
    assert!(
        matches!(err, TokenizeError::MissingTokenizerJson { .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("/nonexistent/safeformers/model/tokenizer.json")
    );
    let dir = folder("missing");
    write(&dir, "vocab.txt", b"[PAD]\n");
    let err = load(&dir).unwrap_err();
    assert!(
        matches!(err, TokenizeError::MissingTokenizerJson { .. }),
        "{err}"
    );
}

#[test]
fn tokenizer_json_that_is_not_json() {
    for (i, bytes) in [&b""[..], b"{", b"\xff\xfe{}", b"{\"model\": }", b"null x"]
        .iter()
        .enumerate()
    {
        let dir = folder(&format!("notjson{i}"));
        write(&dir, "tokenizer.json", bytes);
        let err = load(&dir).unwrap_err();
        assert!(
            matches!(
                err,
                TokenizeError::Json { .. } | TokenizeError::InvalidTokenizer { .. }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("tokenizer.json"), "{err}");
    }
}

#[test]
fn json_that_is_not_a_tokenizer() {
    let mut bpe_unknown_merge = word_level(Value::Null);
    bpe_unknown_merge["model"] = json!({"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]});
    let mut unigram_bad_unk = word_level(Value::Null);
    unigram_bad_unk["model"] = json!({"type": "Unigram", "unk_id": 7, "vocab": [["a", -1.0]]});
    let mut unknown_model = word_level(Value::Null);
    unknown_model["model"] = json!({"type": "Transformer", "code": "import os"});
    let mut bad_regex = word_level(json!({
        "type": "Split", "pattern": {"Regex": "(unclosed"}, "behavior": "Isolated", "invert": false
    }));
    bad_regex["normalizer"] = Value::Null;
    let mut wrong_types = word_level(Value::Null);
    wrong_types["added_tokens"] = json!([{"id": -1, "content": 5}]);
    let samples = [
        json!({}),
        json!([]),
        json!(null),
        json!("tokenizer"),
        json!({"model": null}),
        bpe_unknown_merge,
        unigram_bad_unk,
        unknown_model,
        bad_regex,
        wrong_types,
    ];
    for (i, sample) in samples.iter().enumerate() {
        let dir = folder(&format!("nottok{i}"));
        write(&dir, "tokenizer.json", sample.to_string().as_bytes());
        match load(&dir) {
            Err(TokenizeError::InvalidTokenizer { path, message }) => {
                assert!(path.ends_with("tokenizer.json"), "{sample}");
                assert!(!message.is_empty());
            }
            // A sample the library accepts must still encode without a panic.
            Ok(t) => {
                let _ = t.encode("a b aaaa", &EncodeOptions::default());
            }
            Err(other) => panic!("sample {i} {sample}: unexpected {other}"),
        }
    }
}

#[test]
fn deeply_nested_json_is_an_error_not_a_stack_overflow() {
    let dir = folder("nested");
    let depth = 100_000;
    let text = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    write(&dir, "tokenizer.json", text.as_bytes());
    assert!(load(&dir).is_err());
    let mut nested = json!({"type": "Lowercase"});
    for _ in 0..200 {
        nested = json!({"type": "Sequence", "normalizers": [nested]});
    }
    let mut tok = word_level(Value::Null);
    tok["normalizer"] = nested;
    let dir = folder("nested2");
    write(&dir, "tokenizer.json", tok.to_string().as_bytes());
    assert!(load(&dir).is_err());
}

#[test]
fn oversized_tokenizer_json_is_refused_before_parsing() {
    let dir = folder("oversized");
    write(
        &dir,
        "tokenizer.json",
        word_level(Value::Null).to_string().as_bytes(),
    );
    let options = TokenizerOptions {
        max_tokenizer_json_bytes: 100,
        ..Default::default()
    };
    let err = Tokenizer::from_dir(&dir, &options).unwrap_err();
    assert!(
        matches!(err, TokenizeError::FileTooLarge { limit: 100, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("tokenizer.json"));
    assert!(Tokenizer::from_dir(&dir, &TokenizerOptions::default()).is_ok());
}

#[test]
fn malformed_configs_name_the_file_and_field() {
    let cases: [(&str, &[u8], &str); 8] = [
        (
            "tokenizer_config.json",
            b"{not json",
            "tokenizer_config.json",
        ),
        ("tokenizer_config.json", b"[1, 2]", "top level"),
        (
            "tokenizer_config.json",
            br#"{"padding_side": "middle"}"#,
            "padding_side",
        ),
        (
            "tokenizer_config.json",
            br#"{"model_max_length": -1}"#,
            "model_max_length",
        ),
        (
            "tokenizer_config.json",
            br#"{"pad_token": {"no_content": 1}}"#,
            "pad_token",
        ),
        (
            "tokenizer_config.json",
            br#"{"added_tokens_decoder": {"x": {"content": "a"}}}"#,
            "added_tokens_decoder",
        ),
        (
            "special_tokens_map.json",
            br#"{"mask_token": [1]}"#,
            "mask_token",
        ),
        ("chat_template.jinja", b"\xff\xfe", "chat_template.jinja"),
    ];
    for (i, (file, contents, needle)) in cases.iter().enumerate() {
        let dir = folder(&format!("config{i}"));
        write(
            &dir,
            "tokenizer.json",
            word_level(Value::Null).to_string().as_bytes(),
        );
        write(&dir, file, contents);
        let err = load(&dir).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(file) && text.contains(needle),
            "{file}: {text}"
        );
    }
}

#[test]
fn file_naming_keys_and_remote_code_are_ignored() {
    let dir = folder("filekeys");
    write(
        &dir,
        "tokenizer.json",
        word_level(Value::Null).to_string().as_bytes(),
    );
    write(
        &dir,
        "tokenizer_config.json",
        br#"{"tokenizer_file": "/etc/passwd", "vocab_file": "../../../etc/shadow",
             "auto_map": {"AutoTokenizer": ["evil.Tok", null]}, "tokenizer_class": "EvilTokenizer",
             "pad_token": "[UNK]"}"#,
    );
    let t = load(&dir).unwrap();
    assert_eq!(t.token_to_id("aaaa"), Some(3));
    assert_eq!(t.config().tokenizer_class.as_deref(), Some("EvilTokenizer"));
    assert_eq!(t.pad_token_id(), Some(0));
}

#[test]
fn no_pad_token_is_an_error_only_when_padding() {
    let dir = folder("nopad");
    let tok = word_level(json!({"type": "WhitespaceSplit"}));
    write(&dir, "tokenizer.json", tok.to_string().as_bytes());
    let mut t = load(&dir).unwrap();
    assert!(
        t.encode_batch(&["a", "a b"], &EncodeOptions::default())
            .is_ok()
    );
    let padded = EncodeOptions {
        padding: Padding::Longest,
        ..Default::default()
    };
    let err = t.encode_batch(&["a", "a b"], &padded).unwrap_err();
    assert!(matches!(err, TokenizeError::NoPadToken), "{err}");
    t.set_pad_token(Some("[UNK]".into()));
    let batch = t.encode_batch(&["a", "a b"], &padded).unwrap();
    assert_eq!(batch.rows[0].input_ids, [1, 0]);
}

#[test]
fn a_catastrophic_regex_does_not_hang() {
    // Nested quantifiers with a lookahead run in fancy-regex's backtracking VM; without its
    // backtrack limit this takes 2^40 steps on 40 'a's.
    let pattern = "(?:(?=a)a|a(?=a)|a)*(?=b)";
    let dir = folder("redos");
    let tok = word_level(json!({
        "type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false
    }));
    write(&dir, "tokenizer.json", tok.to_string().as_bytes());
    let t = load(&dir).unwrap();
    let text = "a".repeat(40) + "c";
    // The same regex, built as the tokenizers library builds it (default backtrack limit), gives
    // up on this input rather than running to the end.
    let regex = fancy_regex::Regex::new(pattern).unwrap();
    assert!(
        matches!(regex.find(&text), Err(fancy_regex::Error::RuntimeError(_))),
        "{:?}",
        regex.find(&text)
    );
    // Either matching stops at the limit (the rest of the text stays unsplit) or it is an
    // error; both are fine, hanging is not.
    let _ = t.encode(&text, &EncodeOptions::default());
}

#[test]
fn tokenizer_is_send_and_sync() {
    fn shared<T: Send + Sync>() {}
    shared::<Tokenizer>();
}

#[test]
fn sequential_encoding_never_touches_rayon() {
    // With the default `threads: 1`, nothing may go through the tokenizers library's
    // maybe-parallel iterators (which would start rayon's global pool, one thread per core).
    let dir = common_bytelevel();
    let t = load(&dir).unwrap();
    let options = EncodeOptions {
        padding: Padding::Longest,
        truncation: Some(8),
        stride: 2,
        return_overflowing_tokens: true,
        ..Default::default()
    };
    let batch = t
        .encode_batch(
            &["a long enough text to overflow a few times", "b"],
            &options,
        )
        .unwrap();
    assert!(batch.len() > 2);
    let _ = t.decode(&batch.rows[0].input_ids, true).unwrap();
    assert!(!tokenizers::parallelism::has_parallelism_been_used());
}

fn common_bytelevel() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/bytelevel")
}
