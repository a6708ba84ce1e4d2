//! `safeformers run question-answering`, driven as a user drives it: the answers of
//! Transformers 4.57.6's pipeline (`pipelines.json`, made by `scripts/make_model_fixtures.py`),
//! JSON lines on stdin, one-line errors for bad input.

// Test code: a failed expectation is a panic with a message.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{assert_one_line_error, fixture, fixtures, safeformers_offline as safeformers};

use std::process::Output;

fn model(name: &str) -> String {
    fixture(&format!("models/{name}"))
}

fn stdout_lines(output: &Output) -> Vec<serde_json::Value> {
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    String::from_utf8(output.stdout.clone())
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

/// Same answers and offsets, scores within 1e-4 (objects or lists alike).
fn assert_matches(actual: &serde_json::Value, expected: &serde_json::Value) {
    match (actual, expected) {
        (serde_json::Value::Array(a), serde_json::Value::Array(e)) => {
            assert_eq!(a.len(), e.len(), "{actual} vs {expected}");
            for (a, e) in a.iter().zip(e) {
                assert_matches(a, e);
            }
        }
        (serde_json::Value::Object(_), serde_json::Value::Object(_)) => {
            for key in ["answer", "start", "end"] {
                assert_eq!(actual[key], expected[key], "{actual} vs {expected}");
            }
            let diff =
                (actual["score"].as_f64().unwrap() - expected["score"].as_f64().unwrap()).abs();
            assert!(diff <= 1e-4, "{actual} vs {expected}");
        }
        _ => panic!("shapes differ: {actual} vs {expected}"),
    }
}

#[test]
fn answers_match_transformers_from_flags_and_stdin() {
    let text = std::fs::read_to_string(fixtures().join("models/pipelines.json")).unwrap();
    let all: serde_json::Value = serde_json::from_str(&text).unwrap();
    let entries: Vec<&serde_json::Value> = all["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["task"] == "question-answering")
        .collect();
    assert_eq!(entries.len(), 16);
    for entry in &entries {
        let name = entry["model"].as_str().unwrap();
        let question = entry["inputs"]["question"].as_str().unwrap();
        let context = entry["inputs"]["context"].as_str().unwrap();
        let mut args = vec![
            "run",
            "question-answering",
            "--model",
            &model(name),
            "--question",
            question,
            "--context",
            context,
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
        if let Some(k) = entry["kwargs"]["top_k"].as_u64() {
            args.extend(["--top-k".to_string(), k.to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let lines = stdout_lines(&safeformers(&args, None));
        assert_eq!(lines.len(), 1);
        assert_matches(&lines[0], &entry["output"]);
    }
    // JSON lines in, one result line per input out.
    let defaults: Vec<&&serde_json::Value> = entries
        .iter()
        .filter(|e| e["model"] == "bert-qa" && e["kwargs"].get("top_k").is_none())
        .collect();
    let stdin: String = defaults
        .iter()
        .map(|e| format!("{}\n", e["inputs"]))
        .collect();
    let lines = stdout_lines(&safeformers(
        &[
            "run",
            "question-answering",
            "--model",
            &model("bert-qa"),
            "-",
        ],
        Some(stdin.as_bytes()),
    ));
    assert_eq!(lines.len(), defaults.len());
    for (line, entry) in lines.iter().zip(&defaults) {
        assert_matches(line, &entry["output"]);
    }
}

#[test]
fn bad_input_is_a_one_line_error() {
    let bert = model("bert-qa");
    let run = |extra: &[&str], stdin: Option<&[u8]>| {
        let mut args = vec!["run", "question-answering", "--model", bert.as_str()];
        args.extend_from_slice(extra);
        safeformers(&args, stdin)
    };
    assert_one_line_error(
        &run(&["--question", "", "--context", "Paris."], None),
        1,
        &["question is empty"],
    );
    assert_one_line_error(
        &run(&["--question", "Where?", "--context", ""], None),
        1,
        &["context is empty"],
    );
    let huge = format!(
        "{{\"question\": \"Where?\", \"context\": \"{}\"}}\n",
        "word ".repeat(250_000)
    );
    assert_one_line_error(
        &run(&["-"], Some(huge.as_bytes())),
        1,
        &["more than the limit"],
    );
    assert_one_line_error(&run(&["-"], Some(b"not json\n")), 2, &["stdin line 1"]);
    assert_one_line_error(&run(&["--question", "Where?"], None), 2, &["--context C"]);
    assert_one_line_error(
        &run(
            &[
                "--question",
                "Where?",
                "--context",
                "Paris.",
                "--top-k",
                "0",
            ],
            None,
        ),
        2,
        &["--top-k"],
    );
    let output = safeformers(
        &[
            "run",
            "fill-mask",
            "--model",
            &model("bert-mlm"),
            "--question",
            "Q",
            "x",
        ],
        None,
    );
    assert_one_line_error(&output, 2, &["question-answering only"]);
}
