//! The `safeformers` binary, driven as a user drives it: exit codes, JSON shapes, messages.

// Test code: a failed expectation is a panic with a message.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn safeformers(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_safeformers"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("the safeformers binary runs")
}

mod common;

use common::minilm_dir;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/weights")
}

fn stdout_json(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "stdout is not JSON ({error}): {}\nstderr: {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// `safeformers <command> --json <the real MiniLM folder>`, which must succeed, as JSON.
fn minilm_json(command: &str) -> serde_json::Value {
    let dir = minilm_dir();
    let output = safeformers(&[command, "--json", dir.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    stdout_json(&output)
}

#[test]
fn scan_of_the_real_minilm_folder_is_safe() {
    let report = minilm_json("scan");
    let files = report["files"].as_array().unwrap();
    let weights = files
        .iter()
        .find(|file| {
            file["path"]
                .as_str()
                .unwrap()
                .ends_with("model.safetensors")
        })
        .expect("model.safetensors is in the report");
    assert_eq!(weights["format"], "safetensors");
    assert_eq!(weights["verdict"], "safe");
    for file in files {
        assert_eq!(file["verdict"], "safe", "{file}");
    }
}

#[test]
fn inspect_of_the_real_minilm_weights_lists_every_tensor() {
    let report = minilm_json("inspect");
    assert_eq!(report["format"], "safetensors");
    assert_eq!(report["metadata"]["format"], "pt");
    let tensors = report["tensors"].as_array().unwrap();
    // 6 layers x 16 tensors + 5 embedding tensors + the pooler's 2 = 103 in this checkpoint.
    assert!(tensors.len() > 100, "{} tensors", tensors.len());
    let word_embeddings = tensors
        .iter()
        .find(|tensor| tensor["name"] == "embeddings.word_embeddings.weight")
        .expect("word embeddings present");
    assert_eq!(word_embeddings["dtype"], "F32");
    assert_eq!(word_embeddings["shape"], serde_json::json!([30522, 384]));
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(safeformers(&["scan"]).status.code(), Some(2));
    assert_eq!(safeformers(&["no-such-command"]).status.code(), Some(2));
    assert_eq!(
        safeformers(&["inspect", "--bogus", "x"]).status.code(),
        Some(2)
    );
}

#[test]
fn weight_storage_flags_are_checked_before_loading() {
    // Refused as usage errors before the (here nonexistent) model is looked at.
    for flags in [
        &["--dtype", "f16", "--quantize", "q8"][..],
        &["--dtype", "bf16", "--quantize", "q8"][..],
        &["--dtype", "f8"][..],
        &["--quantize", "q4"][..],
    ] {
        let mut args = vec!["forward", "--model", "/nonexistent", "--input-ids", "1,2"];
        args.extend_from_slice(flags);
        let output = safeformers(&args);
        assert_eq!(output.status.code(), Some(2), "{flags:?}: {output:?}");
    }
}

#[test]
fn missing_files_are_errors_with_the_path() {
    let output = safeformers(&["inspect", "/nonexistent/model.safetensors"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("/nonexistent/model.safetensors"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
}

#[test]
fn a_closed_stdout_is_not_a_panic() {
    let dir = minilm_dir();
    let mut child = Command::new(env!("CARGO_BIN_EXE_safeformers"))
        .args(["inspect", dir.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Close our end of stdout before the child writes its table.
    drop(child.stdout.take());
    let status = child.wait().unwrap();
    assert_ne!(status.code(), Some(101), "panicked on a closed pipe");
}

fn files_under(dir: &Path, found: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            files_under(&path, found);
        } else {
            found.push(path);
        }
    }
}

#[test]
fn no_fixture_makes_any_command_panic() {
    let mut files = Vec::new();
    files_under(&fixtures(), &mut files);
    assert!(files.len() > 50, "only {} fixture files", files.len());
    for file in &files {
        let path = file.to_str().unwrap();
        for args in [
            vec!["scan", "--json", path],
            vec!["inspect", "--json", "--allow-pickle", path],
            vec!["inspect", path],
        ] {
            let output = safeformers(&args);
            let code = output.status.code();
            assert!(
                matches!(code, Some(0 | 1 | 3)),
                "{args:?} exited with {code:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            if args[0] == "scan" {
                let report = stdout_json(&output);
                assert_eq!(report["files"].as_array().map(Vec::len), Some(1), "{path}");
            } else if code != Some(0) {
                let stderr = String::from_utf8_lossy(&output.stderr);
                assert_eq!(
                    stderr.lines().count(),
                    1,
                    "{args:?}: one-line error: {stderr}"
                );
            }
        }
    }
}

#[test]
fn scan_names_what_a_hostile_pickle_would_call_and_fails() {
    let dir = fixtures().join("hostile/pickle");
    let output = safeformers(&["scan", "--json", dir.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let report = stdout_json(&output);
    let files = report["files"].as_array().unwrap();
    assert!(
        files.iter().all(|file| file["verdict"] != "safe"),
        "{report}"
    );
    let text = report.to_string();
    for name in ["posix.system", "builtins.eval"] {
        assert!(text.contains(name), "no finding names {name}");
    }
}

#[test]
fn benign_pickle_needs_allow_pickle_and_then_loads() {
    let dir = fixtures().join("benign");
    let mut files = Vec::new();
    files_under(&dir, &mut files);
    let pickles: Vec<&PathBuf> = files
        .iter()
        .filter(|file| !file.to_string_lossy().ends_with(".safetensors"))
        .collect();
    assert!(pickles.len() >= 5, "{pickles:?}");
    for file in pickles {
        let path = file.to_str().unwrap();
        let refused = safeformers(&["inspect", path]);
        assert_eq!(refused.status.code(), Some(3), "{path}: {refused:?}");
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(stderr.contains("--allow-pickle"), "{stderr}");
        let allowed = safeformers(&["inspect", "--json", "--allow-pickle", path]);
        assert_eq!(allowed.status.code(), Some(0), "{path}: {allowed:?}");
        assert_ne!(stdout_json(&allowed)["format"], "safetensors");
    }
}

fn python_corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/python-review")
}

#[test]
fn scan_reviews_python_files_in_text_and_json() {
    let benign = python_corpus().join("benign_modeling.py");
    let hostile = python_corpus().join("obfuscated_imports.py");

    let output = safeformers(&["scan", benign.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.starts_with("safe     python"), "{text}");
    assert!(
        text.contains("imports: math (line 3), typing (line 4), torch (line 6)"),
        "{text}"
    );
    assert!(text.contains("not proof of safety"), "{text}");
    assert!(text.contains("sha256 "), "{text}");

    let output = safeformers(&["scan", hostile.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.starts_with("unsafe   python"), "{text}");
    assert!(text.contains("line 7: calls `os.system`"), "{text}");
    assert!(text.contains("subprocess (line 2, process)"), "{text}");

    // The whole corpus folder, as JSON: one report per file, each with its hash and imports.
    let output = safeformers(&["scan", "--json", python_corpus().to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let report = stdout_json(&output);
    let files = report["files"].as_array().unwrap();
    assert_eq!(files.len(), 4, "{report}");
    for file in files {
        assert_eq!(file["format"], "python", "{file}");
        assert_eq!(file["sha256"].as_str().unwrap().len(), 64, "{file}");
        assert!(file["imports"].is_array(), "{file}");
        assert!(
            file["notice"].as_str().unwrap().contains("review aid"),
            "{file}"
        );
    }
    let hostile_json = files
        .iter()
        .find(|file| {
            file["path"]
                .as_str()
                .unwrap()
                .ends_with("obfuscated_imports.py")
        })
        .unwrap();
    assert_eq!(hostile_json["verdict"], "unsafe");
    let exec = hostile_json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|finding| finding["kind"] == "code_execution")
        .unwrap();
    assert_eq!(exec["line"], 10, "{exec}");
    assert_eq!(exec["column"], 1, "{exec}");
    assert_eq!(exec["severity"], "dangerous", "{exec}");
}

#[test]
fn scan_calls_unparseable_python_invalid() {
    let dir = std::env::temp_dir().join(format!("safeformers-pyscan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let broken = dir.join("modeling_broken.py");
    std::fs::write(&broken, b"def broken(:\n    pass\n").unwrap();
    let output = safeformers(&["scan", "--json", broken.to_str().unwrap()]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let report = stdout_json(&output);
    let file = &report["files"][0];
    assert_eq!(file["verdict"], "invalid", "{file}");
    assert_eq!(file["findings"][0]["kind"], "python_syntax_error", "{file}");
    assert_eq!(file["findings"][0]["line"], 1, "{file}");
}
