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

use std::path::PathBuf;

use common::{Sandbox, assert_code, safeformers_offline, stderr};
use safeformers_testkit::repo_fixture;

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
    for entry in std::fs::read_dir(repo_fixture("models/bert")).unwrap() {
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

/// A safetensors file whose data section starts one byte past a multiple of 8: `w` (F32) and
/// `d` (F64) are misaligned there, `u` (U8) is not (a byte is always aligned).
fn misaligned_safetensors() -> Vec<u8> {
    let mut header = r#"{"__metadata__":{"format":"pt"},"d":{"dtype":"F64","shape":[1],"data_offsets":[0,8]},"u":{"dtype":"U8","shape":[2],"data_offsets":[8,10]},"w":{"dtype":"F32","shape":[2],"data_offsets":[10,18]}}"#.to_string();
    while header.len() % 8 != 1 {
        header.push(' ');
    }
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(header.as_bytes());
    file.extend_from_slice(&0.125f64.to_le_bytes());
    file.extend_from_slice(&[1, 2]);
    for value in [1.5f32, -2.0] {
        file.extend_from_slice(&value.to_le_bytes());
    }
    file
}

#[test]
fn inspect_reads_misaligned_safetensors_and_says_which_tensors_were_copied() {
    let sandbox = Sandbox::new("misaligned");
    let dir = sandbox.dir("model");
    std::fs::write(dir.join("model.safetensors"), misaligned_safetensors()).unwrap();
    let dir = dir.to_str().unwrap();

    let output = safeformers_offline(&["inspect", "--json", dir], None);
    assert_code(
        &output,
        0,
        "inspect --json of a misaligned safetensors file",
    );
    let report = common::stdout_json(&output);
    assert_eq!(report["format"], "safetensors");
    assert_eq!(report["metadata"]["format"], "pt");
    let copied: Vec<(&str, bool)> = report["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|tensor| {
            (
                tensor["name"].as_str().unwrap(),
                tensor["copied_for_alignment"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(copied, [("d", true), ("u", false), ("w", true)]);

    let output = safeformers_offline(&["inspect", dir], None);
    assert_code(&output, 0, "inspect of a misaligned safetensors file");
    let text = common::stdout(&output);
    assert!(text.contains("note: 2 tensor(s) are not aligned"), "{text}");
    let marked: Vec<&str> = text
        .lines()
        .filter(|line| line.ends_with("(copied for alignment)"))
        .map(|line| line.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(marked, ["d", "w"], "{text}");

    // An aligned file: nothing copied, nothing said.
    let aligned = sandbox.dir("aligned");
    common::tiny_model(&aligned, 0);
    let output = safeformers_offline(&["inspect", "--json", aligned.to_str().unwrap()], None);
    assert_code(&output, 0, "inspect --json of an aligned file");
    let report = common::stdout_json(&output);
    for tensor in report["tensors"].as_array().unwrap() {
        assert_eq!(tensor["copied_for_alignment"], false, "{tensor}");
    }
}
