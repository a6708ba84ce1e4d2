//! One cache, two tools: Python's `huggingface_hub` and `safeformers` read what the other wrote.
//!
//! (a) Python `snapshot_download` from our mirror into cache A; then `safeformers inspect
//!     --offline` and `cache verify` on cache A.
//! (b) `safeformers download` from our mirror into cache B; then Python `hf_hub_download` and
//!     `snapshot_download` with `local_files_only=True` (and `HF_HUB_OFFLINE=1`) on cache B, with
//!     identical bytes.
//!
//! Needs the pure-Python `huggingface_hub` in a venv: `scripts/test.sh` creates it and exports
//! `SAFEFORMERS_HUB_PYTHON`. Runs on a generated tiny model, plus the real all-MiniLM-L6-v2
//! folder when `SAFEFORMERS_MINILM_DIR` is set (scripts/test.sh sets it).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{
    ConnectionCounter, Sandbox, assert_code, files_under, last_line, run, stdout_json, tiny_model,
};
use safeformers_hub::HubCache;
use safeformers_hub::mirror::{MirrorHandle, MirrorServer};
use safeformers_testkit::hub_python_command;

/// Runs a Python snippet with a Hub environment of the sandbox's own (never the user's cache,
/// token or endpoint).
fn python(sandbox: &Sandbox, endpoint: &str, offline: bool, script: &str, args: &[&str]) -> Output {
    let output = hub_python_command(&sandbox.root.join("py-home"), endpoint, offline)
        .arg("-c")
        .arg(script)
        .args(args)
        .current_dir(&sandbox.root)
        .output()
        .expect("the venv's python runs");
    assert_eq!(
        output.status.code(),
        Some(0),
        "python failed\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

const PY_SNAPSHOT_DOWNLOAD: &str = r#"
import sys
from huggingface_hub import snapshot_download
print(snapshot_download(repo_id=sys.argv[1], cache_dir=sys.argv[2]))
"#;

const PY_LOCAL_FILES_ONLY: &str = r#"
import hashlib, json, sys
from huggingface_hub import hf_hub_download, snapshot_download
repo, cache, files = sys.argv[1], sys.argv[2], sys.argv[3:]
hashes = {}
for name in files:
    path = hf_hub_download(repo_id=repo, filename=name, cache_dir=cache, local_files_only=True)
    with open(path, "rb") as f:
        hashes[name] = hashlib.sha256(f.read()).hexdigest()
snapshot = snapshot_download(repo_id=repo, cache_dir=cache, local_files_only=True)
print(json.dumps({"files": hashes, "snapshot": snapshot}))
"#;

/// The model folders to exchange: the tiny generated one, and MiniLM when available.
fn models(sandbox: &Sandbox) -> Vec<(&'static str, PathBuf)> {
    let tiny = sandbox.dir("tiny");
    tiny_model(&tiny, 1);
    let mut models = vec![("org/tiny", tiny)];
    if let Some(dir) = std::env::var_os("SAFEFORMERS_MINILM_DIR").map(PathBuf::from) {
        assert!(
            dir.join("model.safetensors").is_file(),
            "{} has no model.safetensors: rerun scripts/fetch-minilm.sh",
            dir.display()
        );
        models.push(("sentence-transformers/all-MiniLM-L6-v2", dir));
    }
    models
}

fn source_cache(sandbox: &Sandbox, models: &[(&str, PathBuf)]) -> PathBuf {
    let source = sandbox.root.join("source-cache");
    for (repo, dir) in models {
        let imported = run(
            sandbox.safeformers(&source, "http://127.0.0.1:9"),
            &["cache", "import", dir.to_str().unwrap(), "--repo", repo],
        );
        assert_code(&imported, 0, "cache import into the source cache");
    }
    source
}

/// The [`models`] of the sandbox, and a mirror on loopback serving their [`source_cache`].
fn mirrored_models(sandbox: &Sandbox) -> (Vec<(&'static str, PathBuf)>, MirrorHandle) {
    let models = models(sandbox);
    let source = source_cache(sandbox, &models);
    let mirror = MirrorServer::start(HubCache::new(&source), "127.0.0.1:0".parse().unwrap())
        .expect("the mirror starts on loopback");
    (models, mirror)
}

#[test]
fn python_downloads_from_our_mirror_and_we_read_its_cache_offline() {
    let sandbox = Sandbox::new("interop-a");
    let (models, mirror) = mirrored_models(&sandbox);
    let cache_a = sandbox.root.join("cache-a");
    let counter = ConnectionCounter::start();
    for (repo, dir) in &models {
        let output = python(
            &sandbox,
            &mirror.url(),
            false,
            PY_SNAPSHOT_DOWNLOAD,
            &[repo, cache_a.to_str().unwrap()],
        );
        let python_snapshot = PathBuf::from(
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .last()
                .unwrap_or_default(),
        );
        assert!(python_snapshot.starts_with(&cache_a), "{python_snapshot:?}");
        assert_eq!(files_under(&python_snapshot), files_under(dir), "{repo}");

        // Our CLI reads Python's cache offline: same snapshot, the model loads, blobs verify.
        let sf = || sandbox.safeformers(&cache_a, &counter.url());
        let found = run(sf(), &["download", "--offline", repo]);
        assert_code(&found, 0, "download --offline from Python's cache");
        assert_eq!(last_line(&found), python_snapshot);
        let inspected = run(sf(), &["inspect", "--json", "--offline", repo]);
        assert_code(&inspected, 0, "inspect --offline on Python's cache");
        assert_eq!(stdout_json(&inspected)["format"], "safetensors");
        assert_code(
            &run(sf(), &["cache", "verify", repo]),
            0,
            "cache verify on Python's cache",
        );
    }
    mirror.shutdown().unwrap();
    assert_eq!(counter.connections(), 0, "offline commands opened a socket");
}

#[test]
fn we_download_from_our_mirror_and_python_reads_our_cache_offline() {
    let sandbox = Sandbox::new("interop-b");
    let (models, mirror) = mirrored_models(&sandbox);
    let cache_b = sandbox.root.join("cache-b");
    let counter = ConnectionCounter::start();
    for (repo, dir) in &models {
        let downloaded = run(
            sandbox.safeformers(&cache_b, &mirror.url()),
            &["download", repo],
        );
        assert_code(&downloaded, 0, "download from the mirror");
        let snapshot = last_line(&downloaded);
        let ours = files_under(&snapshot);
        assert_eq!(ours, files_under(dir), "{repo}");

        let names: Vec<&str> = ours.keys().map(String::as_str).collect();
        let mut args = vec![*repo, cache_b.to_str().unwrap()];
        args.extend(names.iter().copied());
        let output = python(&sandbox, &counter.url(), true, PY_LOCAL_FILES_ONLY, &args);
        let answer: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(
            Path::new(answer["snapshot"].as_str().unwrap()),
            snapshot,
            "Python's snapshot_download(local_files_only=True) found another folder"
        );
        for name in names {
            let expected = safeformers_hub::cache::sha256_file(&dir.join(name)).unwrap();
            assert_eq!(answer["files"][name], expected.as_str(), "{repo}: {name}");
        }
    }
    mirror.shutdown().unwrap();
    assert_eq!(
        counter.connections(),
        0,
        "Python opened a socket while offline"
    );
}
