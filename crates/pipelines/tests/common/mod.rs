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
    safeformers_testkit::minilm_dir()
}

/// Flattens nested JSON number lists.
pub fn flat_f32(value: &Value) -> Vec<f32> {
    match value {
        Value::Array(items) => items.iter().flat_map(flat_f32).collect(),
        Value::Number(n) => vec![n.as_f64().expect("number") as f32],
        other => panic!("not a number list: {other}"),
    }
}

/// The golden entries of `task` and the tracker of their score differences.
pub fn golden(task: &'static str) -> (Vec<Value>, ScoreDiffs) {
    (entries(task), ScoreDiffs::new(task))
}

/// The score differences of one task's golden comparison: each must be within the goldens'
/// 1e-4; the largest is reported at the end.
pub struct ScoreDiffs {
    task: &'static str,
    worst: f64,
}

impl ScoreDiffs {
    /// No differences yet for `task`.
    pub fn new(task: &'static str) -> ScoreDiffs {
        ScoreDiffs { task, worst: 0.0 }
    }

    /// Checks one score difference (`context` names the case) and keeps the largest.
    pub fn check(&mut self, diff: f64, context: std::fmt::Arguments<'_>) {
        assert!(diff <= 1e-4, "{context}: {diff}");
        self.worst = self.worst.max(diff);
    }

    /// Prints the largest difference over `entries` golden entries.
    pub fn report(&self, entries: usize) {
        eprintln!(
            "{}: {entries} entries, worst score diff {:e}",
            self.task, self.worst
        );
    }
}
