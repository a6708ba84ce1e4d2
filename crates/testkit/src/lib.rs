//! Helpers shared by the tests of several safeformers crates: scratch folders, FIFOs, the paths
//! of the repository's fixtures and of the prerequisites `scripts/test.sh` prepares, float
//! comparison, and a scripted HTTP server ([`scripted_http`]). A dev-dependency only; nothing
//! here is part of any library.
//!
//! Every helper panics with a message when the machine cannot do what a test needs (an
//! unwritable temp dir, a missing prerequisite): for a test that is a failure, never a skip.

#![forbid(unsafe_code)]
#![allow(
    clippy::expect_used,
    clippy::panic,
    reason = "test support: a broken temp dir or a missing prerequisite fails the test"
)]

pub mod scripted_http;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh, empty folder under the system temp dir, unique to this process and call:
/// `safeformers-<label>-<pid>-<n>`. Nothing deletes it; callers that care remove it.
pub fn scratch_dir(label: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let unique = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!(
        "safeformers-{label}-{}-{unique}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|error| panic!("{}: {error}", dir.display()));
    dir
}

/// Makes a named pipe (FIFO) at `path` with `mkfifo`: opening it for reading blocks until a
/// writer comes.
pub fn make_fifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo runs");
    assert!(status.success(), "mkfifo {}", path.display());
}

/// The root of the repository (the workspace).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The repository's `tests/fixtures/<path>`.
pub fn repo_fixture(path: &str) -> PathBuf {
    repo_root().join("tests/fixtures").join(path)
}

/// A path a test needs from the environment variable `variable` (which `scripts/test.sh` sets
/// by running `fetch`): the test fails, never skips, when it is unset or names nothing.
pub fn required_path(variable: &str, fetch: &str) -> PathBuf {
    let path = std::env::var_os(variable)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!(
                "{variable} is not set: run the tests with scripts/test.sh, which runs {fetch} and \
             sets it (or set it to the path {fetch} prints)"
            )
        });
    assert!(
        path.exists(),
        "{variable} is {}, which does not exist: run {fetch} and set it to the path it prints",
        path.display()
    );
    path
}

/// The all-MiniLM-L6-v2 folder, from `SAFEFORMERS_MINILM_DIR`.
pub fn minilm_dir() -> PathBuf {
    required_path("SAFEFORMERS_MINILM_DIR", "scripts/fetch-minilm.sh")
}

/// The SmolLM2-135M-Instruct Q4_1 GGUF file, from `SAFEFORMERS_SMOLLM2_GGUF`.
pub fn smollm2_gguf() -> PathBuf {
    let path = required_path("SAFEFORMERS_SMOLLM2_GGUF", "scripts/fetch-smollm2.sh");
    assert!(path.is_file(), "{} is not a file", path.display());
    path
}

/// The venv's Python with `huggingface_hub` and `openai`, from `scripts/test.sh`.
pub fn hub_python() -> PathBuf {
    let python = std::env::var_os("SAFEFORMERS_HUB_PYTHON")
        .map(PathBuf::from)
        .expect(
            "SAFEFORMERS_HUB_PYTHON is not set: run the tests with scripts/test.sh, which creates \
             a venv with huggingface_hub and openai \
             (${SAFEFORMERS_VENV_HUB:-~/.cache/safeformers/venv-hub}) and exports \
             SAFEFORMERS_HUB_PYTHON=<venv>/bin/python",
        );
    assert!(
        python.exists(),
        "SAFEFORMERS_HUB_PYTHON={} does not exist: rerun scripts/test.sh",
        python.display()
    );
    python
}

/// The variables of huggingface_hub, Transformers and safeformers that point a process at a
/// cache, a token, an endpoint, offline mode or a lockfile: a test's child process must not
/// inherit them from the developer's shell.
pub const HUB_VARIABLES: &[&str] = &[
    "HF_HOME",
    "HF_HUB_CACHE",
    "HUGGINGFACE_HUB_CACHE",
    "HF_ENDPOINT",
    "HF_TOKEN",
    "HF_TOKEN_PATH",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "XDG_CACHE_HOME",
    "SAFEFORMERS_LOCKED",
];

/// `command` without any of [`HUB_VARIABLES`] from this process's environment.
pub fn without_hub_environment(command: &mut Command) -> &mut Command {
    for variable in HUB_VARIABLES {
        command.env_remove(variable);
    }
    command
}

/// The hub venv's Python ([`hub_python`]) set up to run a huggingface_hub snippet with
/// `HF_HOME` = `home` against `endpoint`, offline or not, with telemetry and progress bars off,
/// no stdin, and nothing inherited from the developer's Hub environment.
pub fn hub_python_command(home: &Path, endpoint: &str, offline: bool) -> Command {
    let mut command = Command::new(hub_python());
    without_hub_environment(&mut command)
        .env("HF_HOME", home)
        .env("HF_ENDPOINT", endpoint)
        .env("HF_HUB_DISABLE_TELEMETRY", "1")
        .env("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        .env("HF_HUB_OFFLINE", if offline { "1" } else { "0" })
        .stdin(Stdio::null());
    command
}

/// The largest absolute difference between `a` and `b`, which must be of one length.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "compared slices differ in length");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
