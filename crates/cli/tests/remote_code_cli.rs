//! Remote code from the command line: a repo whose `auto_map` names code is never run. When the
//! code's class is the built-in one (code upstreamed into Transformers) the built-in class is
//! used and stderr says which files were not run, with their sha256; a class of another name
//! under a known `model_type` (JinaBert says `bert`), or any class of an unknown `model_type`,
//! is refused with exit 3, naming the code files and how to review them.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::Path;

use common::{Sandbox, assert_code, run, stdout};
use serde_json::{Value, json};

/// The tiny BERT fixture copied into `sandbox/model`, with `auto_map` set to `auto_map` and a
/// `modeling_bert.py` that would create `canary` if it were ever imported.
fn model_with_code(sandbox: &Sandbox, auto_map: Value, canary: &Path) -> std::path::PathBuf {
    let source = safeformers_testkit::repo_fixture("models/bert");
    let model = sandbox.dir("model");
    for entry in std::fs::read_dir(&source).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), model.join(entry.file_name())).unwrap();
    }
    let config_path = model.join("config.json");
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    config["auto_map"] = auto_map;
    std::fs::write(&config_path, config.to_string()).unwrap();
    let code = format!(
        "import pathlib\npathlib.Path({:?}).write_text('ran')\n",
        canary.display()
    );
    std::fs::write(model.join("modeling_bert.py"), code).unwrap();
    model
}

fn sha256_hex(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(std::fs::read(path).unwrap());
    digest.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn embed(sandbox: &Sandbox, model: &Path) -> std::process::Output {
    let cache = sandbox.root.join("cache");
    let command = sandbox.safeformers(&cache, "http://127.0.0.1:9");
    run(
        command,
        &[
            "run",
            "feature-extraction",
            "--model",
            model.to_str().unwrap(),
            "hello",
        ],
    )
}

#[test]
fn code_of_the_built_in_class_is_not_run_and_the_built_in_class_is_used() {
    let sandbox = Sandbox::new("remote-code-builtin");
    let canary = sandbox.root.join("CANARY");
    let model = model_with_code(
        &sandbox,
        json!({"AutoConfig": "configuration_bert.BertConfig",
               "AutoModel": "modeling_bert.BertModel"}),
        &canary,
    );
    let output = embed(&sandbox, &model);
    assert_code(&output, 0, "run feature-extraction");
    assert!(stdout(&output).starts_with("[[["), "{}", stdout(&output));
    let stderr = common::stderr(&output);
    let hash = sha256_hex(&model.join("modeling_bert.py"));
    assert!(
        stderr.contains(&format!("`modeling_bert.py` (sha256 {hash})")),
        "{stderr}"
    );
    assert!(
        stderr.contains("not run; safeformers' BertModel is used"),
        "{stderr}"
    );
    let report = inspect(&sandbox, &model);
    assert_eq!(report["model"]["class"], "BertModel", "{report}");
    assert_eq!(report["model"]["refused"], false, "{report}");
    let note = report["model"]["remote_code"].as_str().unwrap();
    assert!(
        note.contains(&format!("`modeling_bert.py` (sha256 {hash})"))
            && note.contains("not run; safeformers' BertModel is used"),
        "{note}"
    );
    assert!(!canary.exists(), "the repo's code ran");
}

#[test]
fn code_of_another_class_is_refused_naming_the_files() {
    let sandbox = Sandbox::new("remote-code-refused");
    let canary = sandbox.root.join("CANARY");
    for (auto_map, class, expected) in [
        (
            json!({"AutoModel": "modeling_bert.CustomBertModel"}),
            "CustomBertModel",
            "`modeling_bert.py` (sha256 ",
        ),
        // A class safeformers ports, but from a code repo other than the one the published
        // models use: the same name may compute something else.
        (
            json!({"AutoModel": "someone/bert-variants--modeling_bert.JinaBertModel"}),
            "JinaBertModel",
            "`modeling_bert.py` in repo someone/bert-variants (not fetched)",
        ),
    ] {
        let model = model_with_code(&sandbox, auto_map, &canary);
        let output = embed(&sandbox, &model);
        assert_code(&output, 3, "a class we do not implement");
        let stderr = common::stderr(&output);
        assert!(stderr.contains(expected), "{stderr}");
        assert!(stderr.contains(class), "{stderr}");
        assert!(
            stderr.contains(&format!("safeformers scan {}", model.display())),
            "{stderr}"
        );
        assert!(stdout(&output).is_empty());
        let report = inspect(&sandbox, &model);
        assert_eq!(report["model"]["refused"], true, "{report}");
        let reason = report["model"]["remote_code"].as_str().unwrap();
        assert!(
            reason.contains(expected) && reason.contains(class),
            "{reason}"
        );
    }
    assert!(!canary.exists(), "the repo's code ran");
}

/// `inspect --json` of `model`.
fn inspect(sandbox: &Sandbox, model: &Path) -> Value {
    let cache = sandbox.root.join("cache");
    let command = sandbox.safeformers(&cache, "http://127.0.0.1:9");
    let output = run(command, &["inspect", model.to_str().unwrap(), "--json"]);
    assert_code(&output, 0, "inspect");
    serde_json::from_str(&stdout(&output)).unwrap()
}

/// `inspect` of each ported encoder fixture (a config in the Hub's form, the code in another
/// repo) names the native class it loads, and for the remote-code ones the files not run.
#[test]
fn inspect_names_the_native_class_of_every_ported_fixture() {
    let sandbox = Sandbox::new("remote-code-inspect");
    for (folder, class, code) in [
        (
            "encoders/nomic-bert",
            "NomicBertModel",
            Some("modeling_hf_nomic_bert.py"),
        ),
        ("encoders/gte-new", "NewModel", Some("modeling.py")),
        (
            "encoders/jina-bert-geglu",
            "JinaBertModel",
            Some("modeling_bert.py"),
        ),
        ("encoders/mpnet", "MPNetModel", None),
        ("encoders/modernbert", "ModernBertModel", None),
        (
            "sentence-transformers/jina-embed",
            "JinaBertModel",
            Some("modeling_bert.py"),
        ),
        ("sentence-transformers/qwen3-embedding", "Qwen3Model", None),
    ] {
        let model = safeformers_testkit::repo_fixture(folder);
        let report = inspect(&sandbox, &model);
        assert_eq!(report["model"]["class"], class, "{folder}: {report}");
        assert_eq!(report["model"]["refused"], false, "{folder}");
        let note = report["model"]["remote_code"].as_str();
        match code {
            Some(file) => {
                let note = note.unwrap_or_default();
                assert!(
                    note.contains(&format!("`{file}` in repo "))
                        && note.contains(&format!("not run; safeformers' {class} is used")),
                    "{folder}: {note}"
                );
            }
            None => assert_eq!(note, None, "{folder}"),
        }
    }
}
