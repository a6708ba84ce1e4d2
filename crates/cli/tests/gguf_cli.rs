//! `inspect` and `scan` on GGUF files: a small valid one, hostile ones (refused with exit 1 and
//! one line), and the real SmolLM2-135M-Instruct Q4_1 (`SAFEFORMERS_SMOLLM2_GGUF`, set by
//! `scripts/test.sh`; without it that test fails, it never skips).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::{Path, PathBuf};

use common::{assert_code, assert_one_line_error, safeformers_offline, stdout, stdout_json};

fn safeformers(args: &[&str]) -> std::process::Output {
    safeformers_offline(args, None)
}

fn string(text: &str) -> Vec<u8> {
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    out
}

/// A GGUF v3 file with a name, a chat template, a token array and two tensors (F32 [4] and
/// Q8_0 [2, 32]) at `offsets`, with `tensor_count` declared.
fn tiny_gguf(offsets: [u64; 2], tensor_count: u64) -> Vec<u8> {
    let mut out = b"GGUF".to_vec();
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&tensor_count.to_le_bytes());
    out.extend_from_slice(&3u64.to_le_bytes());
    out.extend_from_slice(&string("general.architecture"));
    out.extend_from_slice(&8u32.to_le_bytes());
    out.extend_from_slice(&string("llama"));
    out.extend_from_slice(&string("tokenizer.chat_template"));
    out.extend_from_slice(&8u32.to_le_bytes());
    out.extend_from_slice(&string("{{ 'x' * 100 }}"));
    out.extend_from_slice(&string("tokenizer.ggml.tokens"));
    out.extend_from_slice(&9u32.to_le_bytes());
    out.extend_from_slice(&8u32.to_le_bytes());
    out.extend_from_slice(&2u64.to_le_bytes());
    out.extend_from_slice(&string("a"));
    out.extend_from_slice(&string("b"));
    for (name, dims, type_id, offset) in [
        ("norm.weight", vec![4u64], 0u32, offsets[0]),
        ("proj.weight", vec![32, 2], 8, offsets[1]),
    ] {
        out.extend_from_slice(&string(name));
        out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
        for dim in dims {
            out.extend_from_slice(&dim.to_le_bytes());
        }
        out.extend_from_slice(&type_id.to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
    }
    out.resize(out.len().next_multiple_of(32), 0);
    // norm: 16 bytes padded to 32; proj: 2 blocks of 34 bytes, padded to 96.
    out.extend_from_slice(&[0u8; 32 + 96]);
    out
}

fn scratch(name: &str, bytes: &[u8]) -> PathBuf {
    let path = safeformers_testkit::scratch_dir("gguf-cli").join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn inspect_and_scan_a_small_gguf() {
    let path = scratch("tiny.gguf", &tiny_gguf([0, 32], 2));
    let output = safeformers(&["inspect", "--json", path.to_str().unwrap()]);
    assert_code(&output, 0, "inspect --json tiny.gguf");
    let json = stdout_json(&output);
    assert_eq!(json["format"], "gguf");
    assert_eq!(json["gguf_version"], 3);
    assert_eq!(json["chat_template"], true);
    assert_eq!(json["metadata"]["general.architecture"], "\"llama\"");
    assert_eq!(
        json["metadata"]["tokenizer.ggml.tokens"],
        "array of 2 string"
    );
    let tensors = json["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), 2);
    assert_eq!(tensors[1]["name"], "proj.weight");
    assert_eq!(tensors[1]["dtype"], "Q8_0");
    assert_eq!(tensors[1]["shape"], serde_json::json!([2, 32]));

    let table = safeformers(&["inspect", path.to_str().unwrap()]);
    assert_code(&table, 0, "inspect tiny.gguf");
    let text = stdout(&table);
    assert!(text.contains("chat template: present"), "{text}");
    assert!(text.contains("Q8_0"), "{text}");

    let scan = safeformers(&["scan", "--json", path.to_str().unwrap()]);
    assert_code(&scan, 0, "scan tiny.gguf");
    let report = stdout_json(&scan);
    assert_eq!(report["files"][0]["format"], "gguf");
    assert_eq!(report["files"][0]["verdict"], "safe");
    let kinds: Vec<&str> = report["files"][0]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|finding| finding["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"chat_template"), "{kinds:?}");
}

fn assert_refused(path: &Path, expected: &str) {
    let output = safeformers(&["inspect", path.to_str().unwrap()]);
    assert_one_line_error(&output, 1, &[expected, path.to_str().unwrap()]);
    let scan = safeformers(&["scan", "--json", path.to_str().unwrap()]);
    assert_code(&scan, 1, "scan of a hostile GGUF");
    assert_eq!(stdout_json(&scan)["files"][0]["verdict"], "invalid");
}

#[test]
fn hostile_gguf_files_are_refused_in_one_line() {
    assert_refused(
        &scratch("overlap.gguf", &tiny_gguf([0, 0], 2)),
        "overlaps tensor",
    );
    assert_refused(
        &scratch("counts.gguf", &tiny_gguf([0, 32], u64::MAX)),
        "more than the limit",
    );
    assert_refused(&scratch("v1.gguf", b"GGUF\x01\0\0\0"), "version 1");
}

#[test]
fn inspect_of_the_real_smollm2_gguf() {
    let path = match std::env::var_os("SAFEFORMERS_SMOLLM2_GGUF") {
        Some(path) => PathBuf::from(path),
        None => panic!(
            "SAFEFORMERS_SMOLLM2_GGUF is not set: run the tests with scripts/test.sh, or export \
             SAFEFORMERS_SMOLLM2_GGUF=$(scripts/fetch-smollm2.sh | tail -n 1)"
        ),
    };
    let output = safeformers(&["inspect", "--json", path.to_str().unwrap()]);
    assert_code(&output, 0, "inspect --json SmolLM2 GGUF");
    let json = stdout_json(&output);
    assert_eq!(json["chat_template"], true);
    assert_eq!(json["metadata"]["llama.embedding_length"], "576");
    assert_eq!(json["metadata"]["llama.block_count"], "30");
    assert_eq!(
        json["metadata"]["tokenizer.ggml.tokens"],
        "array of 49152 string"
    );
    let tensors = json["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), 272);
    assert!(tensors.iter().any(|tensor| tensor["dtype"] == "Q4_1"));
}
