//! GGUF from a repo, through a `safeformers mirror` on loopback serving a cache that
//! `cache import` filled: a repo holding two quantizations. With `--gguf-file`, only that file
//! is fetched; without it, one error line naming both, and nothing fetched.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use common::{
    ConnectionCounter, Sandbox, assert_code, assert_one_line_error, last_line, run, stdout,
    stdout_json,
};
use safeformers_hub::HubCache;
use safeformers_hub::mirror::MirrorServer;

const REPO: &str = "org/smollm2-gguf";
const Q4_1: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// The other quantization: any valid GGUF will do, it must never be fetched.
const Q8_0: &str = "SmolLM2-135M-Instruct.Q8_0.gguf";

/// A GGUF v3 file with one F32 tensor of 4 values and no metadata.
fn small_gguf() -> Vec<u8> {
    let mut out = b"GGUF".to_vec();
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&1u64.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes());
    let name = "norm.weight";
    out.extend_from_slice(&(name.len() as u64).to_le_bytes());
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&4u64.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes());
    out.resize(out.len().next_multiple_of(32), 0);
    out.extend_from_slice(&[0u8; 32]);
    out
}

/// The repo's folder: the real Q4_1 file (hard-linked where possible), the other quantization
/// and a README.
fn repo_folder(sandbox: &Sandbox) -> PathBuf {
    let dir = sandbox.dir("repo");
    let source = safeformers_testkit::smollm2_gguf();
    if std::fs::hard_link(&source, dir.join(Q4_1)).is_err() {
        std::fs::copy(&source, dir.join(Q4_1)).unwrap();
    }
    std::fs::write(dir.join(Q8_0), small_gguf()).unwrap();
    std::fs::write(dir.join("README.md"), "# SmolLM2 GGUF\n").unwrap();
    dir
}

/// The file names in the repo's snapshots in `cache` (every commit), and its blobs' count.
fn cached(cache: &Path) -> (Vec<String>, usize) {
    let repo = cache.join("models--org--smollm2-gguf");
    let mut names = Vec::new();
    if let Ok(snapshots) = std::fs::read_dir(repo.join("snapshots")) {
        for snapshot in snapshots {
            for file in std::fs::read_dir(snapshot.unwrap().path()).unwrap() {
                names.push(file.unwrap().file_name().to_string_lossy().into_owned());
            }
        }
    }
    names.sort();
    let blobs = std::fs::read_dir(repo.join("blobs")).map_or(0, |blobs| blobs.count());
    (names, blobs)
}

/// `chat` of `REPO` through `endpoint` into `cache`, asking the quickstart question.
fn chat(sandbox: &Sandbox, cache: &Path, endpoint: &str, extra: &[&str]) -> Output {
    let mut command = sandbox.safeformers(cache, endpoint);
    command
        .args([
            "chat",
            "--model",
            REPO,
            "--greedy",
            "--max-new-tokens",
            "24",
        ])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    common::write_ignoring_closed(
        &mut child.stdin.take().unwrap(),
        b"What is the capital of France?\n",
    );
    child.wait_with_output().unwrap()
}

#[test]
fn a_repo_load_fetches_only_the_chosen_gguf() {
    let sandbox = Sandbox::new("gguf-repo");
    let folder = repo_folder(&sandbox);
    let source = sandbox.root.join("source-cache");
    let counter = ConnectionCounter::start();
    let import = run(
        sandbox.safeformers(&source, &counter.url()),
        &["cache", "import", folder.to_str().unwrap(), "--repo", REPO],
    );
    assert_code(&import, 0, "cache import");
    assert!(last_line(&import).join(Q8_0).is_file());
    let mirror = MirrorServer::start(HubCache::new(&source), "127.0.0.1:0".parse().unwrap())
        .expect("the mirror starts on loopback");
    let endpoint = mirror.url();
    let cache = sandbox.root.join("cache");

    // Without --gguf-file: one line naming both, and no GGUF fetched.
    let both = [Q4_1, Q8_0, "--gguf-file", REPO];
    assert_one_line_error(&chat(&sandbox, &cache, &endpoint, &[]), 1, &both);
    let generation = run(
        sandbox.safeformers(&cache, &endpoint),
        &["run", "text-generation", "--model", REPO, "x"],
    );
    assert_one_line_error(&generation, 1, &both);
    let (names, blobs) = cached(&cache);
    assert!(names.is_empty() && blobs == 0, "{names:?}, {blobs} blobs");

    // With it: that file alone is fetched, and answers.
    let answer = chat(&sandbox, &cache, &endpoint, &["--gguf-file", Q4_1]);
    assert_code(&answer, 0, "chat --gguf-file through the mirror");
    assert_eq!(stdout(&answer), "The capital of France is Paris.\n");
    assert_eq!(cached(&cache), (vec![Q4_1.to_string()], 1));

    // The other commands, then offline from the cache alone (no socket: the endpoint is the
    // connection counter).
    let forward = run(
        sandbox.safeformers(&cache, &endpoint),
        &[
            "forward",
            "--json",
            "--model",
            REPO,
            "--gguf-file",
            Q4_1,
            "--input-ids",
            "1,2",
        ],
    );
    assert_code(&forward, 0, "forward --gguf-file through the mirror");
    assert_eq!(
        stdout_json(&forward)["shape"],
        serde_json::json!([1, 2, 49152])
    );
    let offline = chat(
        &sandbox,
        &cache,
        &counter.url(),
        &["--gguf-file", Q4_1, "--offline"],
    );
    assert_code(&offline, 0, "chat --offline --gguf-file from the cache");
    assert_eq!(stdout(&offline), "The capital of France is Paris.\n");
    let inspected = run(
        sandbox.safeformers(&cache, &counter.url()),
        &["inspect", "--json", "--offline", "--gguf-file", Q4_1, REPO],
    );
    assert_code(&inspected, 0, "inspect --offline --gguf-file");
    assert_eq!(cached(&cache), (vec![Q4_1.to_string()], 1));

    // lock --gguf-file pins that file alone; --locked loads then go through the lockfile.
    let lock = run(
        sandbox.safeformers(&cache, &endpoint),
        &["lock", REPO, "--gguf-file", Q4_1],
    );
    assert_code(&lock, 0, "lock --gguf-file");
    let lockfile = std::fs::read_to_string(sandbox.root.join("safeformers.lock")).unwrap();
    assert!(
        lockfile.contains(Q4_1) && !lockfile.contains(Q8_0),
        "{lockfile}"
    );
    let locked = chat(&sandbox, &cache, &counter.url(), &["--locked", "--offline"]);
    assert_code(&locked, 0, "chat --locked --offline");
    assert_eq!(stdout(&locked), "The capital of France is Paris.\n");

    // A name the repo does not hold: the error lists what it holds; nothing fetched.
    let missing = chat(&sandbox, &cache, &endpoint, &["--gguf-file", "other.gguf"]);
    assert_one_line_error(&missing, 1, &["other.gguf", Q8_0]);
    assert_eq!(cached(&cache).1, 1);
    assert_eq!(counter.connections(), 0, "offline loads opened a socket");
}
