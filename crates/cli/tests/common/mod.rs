//! Shared by the tests of the `safeformers` binary: a sandbox per test (its own cache and
//! `HF_HOME`, never the user's), a generated tiny model folder, a loopback listener that
//! counts connections (to prove that a command opened no socket), and an offline runner with
//! optional stdin for the pipeline tests.

// Test code: a failed expectation is a panic with a message. Not every test file uses every
// helper.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    dead_code
)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use safeformers_weights::Dtype;
use safeformers_weights::checkpoint::TensorView;

/// A temporary folder for one test, deleted on drop: caches, model folders and the working
/// directory of the commands it runs.
pub struct Sandbox {
    pub root: PathBuf,
}

impl Sandbox {
    pub fn new(label: &str) -> Sandbox {
        Sandbox {
            root: safeformers_testkit::scratch_dir(&format!("cli-{label}")),
        }
    }

    /// `<root>/<name>`, created.
    pub fn dir(&self, name: &str) -> PathBuf {
        let dir = self.root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// The `safeformers` binary with a clean Hub environment: `HF_HOME` in the sandbox,
    /// `HF_HUB_CACHE` = `cache`, `HF_ENDPOINT` = `endpoint`, run in the sandbox folder.
    pub fn safeformers(&self, cache: &Path, endpoint: &str) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_safeformers"));
        safeformers_testkit::without_hub_environment(&mut command)
            .env("HF_HOME", self.root.join("hf-home"))
            .env("HF_HUB_CACHE", cache)
            .env("HF_ENDPOINT", endpoint)
            .current_dir(&self.root)
            .stdin(Stdio::null());
        command
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Runs the binary offline (`HF_HUB_OFFLINE=1`) with `args`, feeding `stdin` when given
/// (otherwise stdin is empty), and collects its output.
pub fn safeformers_offline(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_safeformers"))
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the safeformers binary runs");
    if let Some(bytes) = stdin {
        // A child that fails before reading stdin (a usage error) may have exited already.
        write_ignoring_closed(&mut child.stdin.take().unwrap(), bytes);
    }
    child.wait_with_output().unwrap()
}

/// Writes `bytes` to a child's stdin; the child closing it first (exiting on an error before
/// reading its input) is not a failure of the test: its exit code and stderr tell.
pub fn write_ignoring_closed(stdin: &mut impl std::io::Write, bytes: &[u8]) {
    if let Err(error) = stdin.write_all(bytes) {
        assert_eq!(error.kind(), std::io::ErrorKind::BrokenPipe, "{error}");
    }
}

/// Runs `command` with `args`.
pub fn run<S: AsRef<OsStr>>(mut command: Command, args: &[S]) -> Output {
    command
        .args(args)
        .output()
        .expect("the safeformers binary runs")
}

/// Asserts the exit code, showing both streams when it differs.
pub fn assert_code(output: &Output, code: i32, what: &str) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "{what}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Exit code `code`, nothing on stdout, one `error:` line on stderr containing every one of
/// `needles`.
pub fn assert_one_line_error(output: &Output, code: i32, needles: &[&str]) {
    let stderr = stderr(output);
    assert_eq!(output.status.code(), Some(code), "{stderr}");
    assert!(output.stdout.is_empty(), "{output:?}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "expected `{needle}` in: {stderr}");
    }
}

/// Asserts exit code `code` (see [`assert_code`]) and that stderr contains `needle`.
pub fn assert_error(output: &Output, code: i32, what: &str, needle: &str) {
    assert_code(output, code, what);
    let stderr = stderr(output);
    assert!(
        stderr.contains(needle),
        "{what}: expected `{needle}` in: {stderr}"
    );
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The last line of stdout (where `download` and `cache import` print the snapshot folder).
pub fn last_line(output: &Output) -> PathBuf {
    PathBuf::from(stdout(output).lines().last().unwrap_or_default())
}

/// The commit of the snapshot folder `cache import` (or `download`) printed last.
pub fn last_snapshot_commit(output: &Output) -> String {
    let snapshot = last_line(output);
    let name = snapshot.file_name().and_then(|name| name.to_str());
    name.unwrap_or_else(|| panic!("no snapshot folder printed: {}", snapshot.display()))
        .to_string()
}

pub fn stdout_json(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "stdout is not JSON ({error}): {}\nstderr: {}",
            stdout(output),
            stderr(output)
        )
    })
}

/// Writes a tiny sentence-transformers-shaped model into `dir`: `model.safetensors` (two F32
/// tensors, written with our own serializer), `config.json`, `tokenizer.json`, `vocab.txt`,
/// the nested `1_Pooling/config.json`, and two files a load must never fetch under the default
/// policy: `pytorch_model.bin` and `modeling_tiny.py`. `variant` changes the config's content.
pub fn tiny_model(dir: &Path, variant: u32) {
    std::fs::create_dir_all(dir.join("1_Pooling")).unwrap();
    let weight: Vec<u8> = (0..8u32)
        .flat_map(|value| (value as f32 * 0.5).to_le_bytes())
        .collect();
    let bias: Vec<u8> = [0.25f32, -1.0]
        .iter()
        .flat_map(|value| value.to_le_bytes())
        .collect();
    let views = [
        TensorView {
            name: "encoder.dense.weight",
            dtype: Dtype::F32,
            shape: &[2, 4],
            data: &weight,
        },
        TensorView {
            name: "encoder.dense.bias",
            dtype: Dtype::F32,
            shape: &[2],
            data: &bias,
        },
    ];
    let metadata = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    let bytes = safeformers_weights::safetensors::serialize(&views, &metadata).unwrap();
    std::fs::write(dir.join("model.safetensors"), bytes).unwrap();
    std::fs::write(
        dir.join("config.json"),
        format!("{{\"model_type\": \"bert\", \"hidden_size\": 4, \"variant\": {variant}}}\n"),
    )
    .unwrap();
    std::fs::write(
        dir.join("tokenizer.json"),
        "{\"version\": \"1.0\", \"model\": {\"type\": \"WordPiece\"}}\n",
    )
    .unwrap();
    std::fs::write(dir.join("vocab.txt"), "[PAD]\n[UNK]\nhello\n").unwrap();
    std::fs::write(
        dir.join("1_Pooling/config.json"),
        "{\"word_embedding_dimension\": 4, \"pooling_mode_mean_tokens\": true}\n",
    )
    .unwrap();
    // Not a real pickle: it must never be fetched for a load without --allow-pickle.
    std::fs::write(dir.join("pytorch_model.bin"), b"PK\x03\x04 not fetched").unwrap();
    std::fs::write(
        dir.join("modeling_tiny.py"),
        "import os\nos.system('echo pwned')\n",
    )
    .unwrap();
}

/// The arguments of `cache import <model> --repo org/tiny`.
pub fn import_tiny_args(model: &Path) -> [&str; 5] {
    [
        "cache",
        "import",
        model.to_str().unwrap(),
        "--repo",
        "org/tiny",
    ]
}

/// `cache import`s `model` as `org/tiny` into `cache` (with `HF_ENDPOINT` = `endpoint`), and
/// returns the snapshot folder it printed.
pub fn import_tiny(sandbox: &Sandbox, cache: &Path, endpoint: &str, model: &Path) -> PathBuf {
    let output = run(
        sandbox.safeformers(cache, endpoint),
        &import_tiny_args(model),
    );
    assert_code(&output, 0, "cache import");
    last_line(&output)
}

/// Every regular file under `dir` (symlinks followed), as `relative path -> content`.
pub fn files_under(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, found: &mut BTreeMap<String, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, found);
            } else {
                let relative = path.strip_prefix(root).unwrap();
                let name = relative
                    .components()
                    .map(|part| part.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                found.insert(name, std::fs::read(&path).unwrap());
            }
        }
    }
    let mut found = BTreeMap::new();
    walk(dir, dir, &mut found);
    found
}

/// A loopback listener that accepts and counts connections (and closes them at once). An
/// endpoint pointed at it shows whether a command opened any socket.
pub struct ConnectionCounter {
    pub addr: SocketAddr,
    count: Arc<AtomicUsize>,
}

impl ConnectionCounter {
    pub fn start() -> ConnectionCounter {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let count = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&count);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                counted.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
        });
        ConnectionCounter { addr, count }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn connections(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

/// Runs `command` with `args`, failing the test (and killing the child) if it has not finished
/// after `seconds`: what these tests prove is that nothing waits forever on a hostile file, so a
/// hang must be a failure, not a stuck suite. The deadline is generous: a debug build on a loaded
/// machine finishes these commands in well under a second.
pub fn run_within<S: AsRef<OsStr>>(mut command: Command, args: &[S], seconds: u64) -> Output {
    use std::io::Read as _;
    let mut child = command
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the safeformers binary runs");
    // Drain both pipes on threads so a chatty child cannot block on a full pipe.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_thread = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = out.read_to_end(&mut bytes);
        bytes
    });
    let err_thread = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = err.read_to_end(&mut bytes);
        bytes
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`safeformers {}` did not finish within {seconds} s (it blocked)",
                args.iter()
                    .map(|arg| arg.as_ref().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out_thread.join().unwrap(),
        stderr: err_thread.join().unwrap(),
    }
}

/// The repository's `tests/fixtures`.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// `tests/fixtures/<path>`, as a command-line argument.
pub fn fixture(path: &str) -> String {
    fixtures().join(path).to_str().unwrap().to_string()
}

/// The real all-MiniLM-L6-v2 folder, fetched by `scripts/test.sh`.
pub fn minilm_dir() -> PathBuf {
    let dir = std::env::var_os("SAFEFORMERS_MINILM_DIR")
        .map(PathBuf::from)
        .expect(
            "SAFEFORMERS_MINILM_DIR is not set: run the tests with scripts/test.sh, or export \
             SAFEFORMERS_MINILM_DIR=$(scripts/fetch-minilm.sh | tail -n 1)",
        );
    assert!(
        dir.join("model.safetensors").is_file(),
        "{} has no model.safetensors: rerun scripts/fetch-minilm.sh",
        dir.display()
    );
    dir
}
