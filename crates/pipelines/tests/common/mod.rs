//! Fixture helpers: `tests/fixtures/models` (made by `scripts/make_model_fixtures.py`).
#![allow(
    dead_code,
    clippy::panic,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::path::PathBuf;

use serde_json::Value;

/// `tests/fixtures/models`.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models")
}

/// A tiny model folder.
pub fn model(name: &str) -> PathBuf {
    fixtures().join(name)
}

/// Parses a fixture JSON file.
pub fn json(name: &str) -> Value {
    let path = fixtures().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The `pipelines.json` entries of one task.
pub fn entries(task: &str) -> Vec<Value> {
    let all = json("pipelines.json");
    let entries = all["entries"].as_array().expect("entries").clone();
    let found: Vec<Value> = entries
        .into_iter()
        .filter(|entry| entry["task"] == task)
        .collect();
    assert!(!found.is_empty(), "no {task} entries in pipelines.json");
    found
}

/// The all-MiniLM-L6-v2 folder, from `SAFEFORMERS_MINILM_DIR` (set by scripts/test.sh).
pub fn minilm_dir() -> PathBuf {
    match std::env::var_os("SAFEFORMERS_MINILM_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => panic!(
            "SAFEFORMERS_MINILM_DIR is not set: run the tests with scripts/test.sh, which fetches \
             all-MiniLM-L6-v2 and sets it (or set it to the folder scripts/fetch-minilm.sh prints)"
        ),
    }
}

/// Flattens nested JSON number lists.
pub fn flat_f32(value: &Value) -> Vec<f32> {
    match value {
        Value::Array(items) => items.iter().flat_map(flat_f32).collect(),
        Value::Number(n) => vec![n.as_f64().expect("number") as f32],
        other => panic!("not a number list: {other}"),
    }
}
