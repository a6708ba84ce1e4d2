//! Issue 11's smaller misses in the weights layer, through the `safeformers` binary: the policy
//! refuses a pickle-named checkpoint before any parser reads it, `scan` keeps naming imports
//! after a resource cap, and `inspect` reads (and reports) safetensors data that is not aligned.

// Test code: a failed expectation is a panic with a message.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::{Path, PathBuf};

use common::{Sandbox, assert_code, safeformers_offline, stderr};

fn fixture_model(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/models")
        .join(name)
}

/// A tar archive: a 512-byte header (name, mode, size, `ustar` magic at 257), then one block.
fn tar_bytes() -> Vec<u8> {
    let mut tar = vec![0u8; 1024];
    tar[..8].copy_from_slice(b"data.pkl");
    tar[100..108].copy_from_slice(b"0000644\0");
    tar[124..136].copy_from_slice(b"00000000010\0");
    tar[257..263].copy_from_slice(b"ustar\0");
    tar
}

/// What a hostile or broken `pytorch_model.bin` may hold that no reader accepts.
fn unreadable_checkpoints() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "malformed zip",
            b"PK\x03\x04\x14\x00\x00\x00\x08\x00 no central directory".to_vec(),
        ),
        (
            "gzip",
            b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\x4b\x4c\x4a\x06\x00".to_vec(),
        ),
        ("tar", tar_bytes()),
    ]
}

/// The tiny BERT fixture with its safetensors weights replaced by `pytorch_model.bin`.
fn bert_with_pickle_named_weights(sandbox: &Sandbox, what: &str, bytes: &[u8]) -> PathBuf {
    let dir = sandbox.dir(&what.replace(' ', "-"));
    for entry in std::fs::read_dir(fixture_model("bert")).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != "model.safetensors" {
            std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
        }
    }
    std::fs::write(dir.join("pytorch_model.bin"), bytes).unwrap();
    dir
}

#[test]
fn a_pickle_named_checkpoint_is_a_policy_refusal_whatever_its_bytes() {
    let sandbox = Sandbox::new("pickle-named");
    for (what, bytes) in unreadable_checkpoints() {
        let dir = bert_with_pickle_named_weights(&sandbox, what, &bytes);
        let dir = dir.to_str().unwrap();
        let file = format!("{dir}/pytorch_model.bin");
        for args in [
            vec!["inspect", dir],
            vec!["inspect", "--json", &file],
            vec!["run", "feature-extraction", "--model", dir, "hello"],
        ] {
            let output = safeformers_offline(&args, None);
            assert_code(&output, 3, &format!("{what}: {args:?}"));
            let message = stderr(&output);
            assert!(message.contains("--allow-pickle"), "{what}: {message}");
            assert!(message.contains("pytorch_model.bin"), "{what}: {message}");
        }
        // Allowed, the bytes are judged: none of these is a checkpoint (exit 1, not 3).
        let output = safeformers_offline(&["inspect", "--allow-pickle", dir], None);
        assert_code(&output, 1, &format!("{what}: inspect --allow-pickle"));
    }
}

#[test]
fn scan_names_the_import_after_a_mark_bomb() {
    let sandbox = Sandbox::new("mark-bomb");
    // PROTO 2, 200,000 MARKs, then os.system('id') and STOP.
    let mut pickle = vec![0x80, 0x02];
    pickle.extend(std::iter::repeat_n(b'(', 200_000));
    pickle.extend_from_slice(b"cos\nsystem\nS'id'\n\x85R.");
    let path = sandbox.dir("scan").join("model.pkl");
    std::fs::write(&path, &pickle).unwrap();
    let output = safeformers_offline(&["scan", "--json", path.to_str().unwrap()], None);
    assert_code(&output, 1, "scan of a MARK bomb hiding os.system");
    let report = common::stdout_json(&output);
    let file = &report["files"][0];
    assert_eq!(file["verdict"], "unsafe", "{report}");
    let findings = file["findings"].as_array().unwrap();
    let has = |severity: &str, kind: &str, needle: &str| {
        findings.iter().any(|finding| {
            finding["severity"] == severity
                && finding["kind"] == kind
                && finding["detail"].as_str().unwrap().contains(needle)
        })
    };
    assert!(has("suspicious", "resource_limit", "MARK"), "{report}");
    assert!(has("dangerous", "import", "os.system"), "{report}");
}
