//! Hostile tokenizers through the CLI: a panic inside the `tokenizers` library is caught and
//! reported as a one-line error saying what failed, and its message never reaches stderr
//! ("thread ... panicked at"); a tokenizer bomb is refused naming the file and field.

// Test code: a failed expectation is a panic with a message.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

/// A copy of the BERT fill-mask fixture whose `tokenizer.json` is changed by `edit`.
fn bert_with(name: &str, edit: impl FnOnce(&mut Value)) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models/bert-mlm");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("tokenizer-cli-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(&source).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
    }
    let path = dir.join("tokenizer.json");
    let mut tokenizer: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut tokenizer);
    std::fs::write(&path, tokenizer.to_string()).unwrap();
    dir
}

fn fill_mask(dir: &Path) -> std::process::Output {
    common::safeformers_offline(
        &[
            "run",
            "fill-mask",
            "--model",
            dir.to_str().unwrap(),
            "the capital of france is [MASK] .",
        ],
        None,
    )
}

#[test]
fn a_panic_inside_the_tokenizers_library_is_an_error_without_a_panic_message() {
    // Every token becomes "z..." and a `Strip` decoder then walks past its start: the library
    // panics ("attempt to subtract with overflow") while decoding the predicted tokens.
    let dir = bert_with("decoder-panic", |tokenizer| {
        tokenizer["decoder"] = json!({"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"Regex": "(?s)."}, "content": "z"},
            {"type": "Strip", "content": "z", "start": 0, "stop": 1000}
        ]});
    });
    let out = fill_mask(&dir);
    let stderr = common::stderr(&out);
    common::assert_code(&out, 1, "a caught panic is an error");
    assert!(!stderr.contains("panicked at"), "{stderr}");
    assert!(!stderr.contains("thread '"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("failed while decoding"), "{stderr}");
}

#[test]
fn a_tokenizer_bomb_is_refused_naming_the_file_and_field() {
    let dir = bert_with("replace-bomb", |tokenizer| {
        let chain: Vec<Value> = (0..20)
            .map(|_| json!({"type": "Replace", "pattern": {"String": "a"}, "content": "aa"}))
            .collect();
        tokenizer["normalizer"] = json!({"type": "Sequence", "normalizers": chain});
    });
    let out = fill_mask(&dir);
    let stderr = common::stderr(&out);
    common::assert_code(&out, 1, "a tokenizer bomb is refused");
    assert!(stderr.contains("tokenizer.json"), "{stderr}");
    assert!(stderr.contains("`normalizer`"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}
