//! `safeformers serve` through the official `openai` Python client: models, chat and completions
//! (streamed and not), embeddings (float and base64), a tool call round trip, and the client's
//! exception for each kind of refused request. The checks are in
//! `scripts/openai_client_check.py`; this test starts one server with three fixture models side
//! by side, computes the expected embeddings with `safeformers run feature-extraction`, and runs
//! the script against the server.
//!
//! Needs a venv with `openai` (`scripts/test.sh` creates it with scripts/setup-hub-venv.sh and
//! exports `SAFEFORMERS_HUB_PYTHON`) and the all-MiniLM-L6-v2 folder (`SAFEFORMERS_MINILM_DIR`,
//! from scripts/fetch-minilm.sh). Everything runs offline on loopback.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;
mod serve_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Sandbox, assert_code, run_within, stdout_json};
use serve_support::{Server, fixture_dir};

/// The texts whose MiniLM embeddings the script compares with `safeformers run`.
const EMBEDDING_INPUTS: [&str; 2] = ["The cat sits outside", "A man is playing guitar"];

/// How long the whole Python check may take: a few dozen requests to tiny models, each well
/// under a second even in a debug build on a loaded machine.
const CHECK_TIMEOUT: Duration = Duration::from_secs(300);

/// Variables of the `openai` client that would point it elsewhere or add credentials; the
/// script passes everything it needs explicitly.
const OPENAI_VARIABLES: &[&str] = &[
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "OPENAI_ORG_ID",
    "OPENAI_PROJECT_ID",
    "OPENAI_WEBHOOK_SECRET",
    "OPENAI_LOG",
];

/// What `safeformers run feature-extraction` prints for [`EMBEDDING_INPUTS`]: one vector each.
fn expected_embeddings(minilm: &Path) -> serde_json::Value {
    let mut command = Command::new(env!("CARGO_BIN_EXE_safeformers"));
    command.env("HF_HUB_OFFLINE", "1").stdin(Stdio::null());
    let mut args = vec![
        "run",
        "feature-extraction",
        "--model",
        minilm.to_str().unwrap(),
    ];
    args.extend(EMBEDDING_INPUTS);
    let output = run_within(command, &args, 300);
    assert_code(&output, 0, "safeformers run feature-extraction");
    let vectors = stdout_json(&output);
    let rows = vectors.as_array().expect("a JSON array of vectors");
    assert_eq!(rows.len(), EMBEDDING_INPUTS.len(), "{vectors}");
    for row in rows {
        assert_eq!(row.as_array().map(Vec::len), Some(384), "a MiniLM vector");
    }
    vectors
}

/// The venv's Python, which must have `openai`: a venv made before setup-hub-venv.sh installed
/// it is a failure that says how to update it.
fn openai_python() -> PathBuf {
    let python = safeformers_testkit::hub_python();
    let mut command = Command::new(&python);
    command.args(["-c", "import openai"]).stdin(Stdio::null());
    let output = run_within::<&str>(command, &[], 60);
    assert!(
        output.status.success(),
        "{} cannot import openai: rerun scripts/setup-hub-venv.sh (scripts/test.sh runs it), \
         which installs it into the venv\n{}",
        python.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    python
}

#[test]
fn the_openai_python_client_works_with_serve() {
    let python = openai_python();
    let minilm = safeformers_testkit::minilm_dir();
    let script = safeformers_testkit::repo_root().join("scripts/openai_client_check.py");
    let sandbox = Sandbox::new("serve-openai");

    let expectations = serde_json::json!({
        "models": {"tool": "tool-model", "chat": "chat-model", "embed": "embed-model"},
        "embedding_inputs": EMBEDDING_INPUTS,
        "embeddings": expected_embeddings(&minilm),
    });
    let expectations_file = sandbox.root.join("expectations.json");
    std::fs::write(&expectations_file, expectations.to_string()).unwrap();

    let tool_model = fixture_dir("decoders/llama-tool-call");
    let chat_model = fixture_dir("decoders/llama");
    let server = Server::start(&[
        "--model",
        &tool_model,
        "--served-name",
        "tool-model",
        "--model",
        &chat_model,
        "--served-name",
        "chat-model",
        "--model",
        minilm.to_str().unwrap(),
        "--served-name",
        "embed-model",
        "--threads",
        "2",
    ]);

    let mut command = Command::new(&python);
    safeformers_testkit::without_hub_environment(&mut command);
    for variable in OPENAI_VARIABLES {
        command.env_remove(variable);
    }
    command
        .arg(&script)
        .arg(server.url())
        .arg(&expectations_file)
        // No __pycache__ next to the script in the repository.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .current_dir(&sandbox.root)
        .stdin(Stdio::null());
    let output = run_within::<&str>(command, &[], CHECK_TIMEOUT.as_secs());
    assert_eq!(
        output.status.code(),
        Some(0),
        "the openai client checks failed\nstdout:\n{}\nstderr:\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        server.log()
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("checks passed"), "{stdout}");
}
