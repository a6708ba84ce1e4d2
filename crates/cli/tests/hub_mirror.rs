//! `download`, `inspect` by repo id and `lock` through a `safeformers` mirror on loopback,
//! serving a source cache that `cache import` filled.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::Path;

use common::{
    ConnectionCounter, Sandbox, assert_code, files_under, import_tiny, last_line, run, stderr,
    stdout_json, tiny_model,
};
use safeformers_hub::HubCache;
use safeformers_hub::mirror::MirrorServer;

/// `download` through the mirror gives every file, byte for byte, at the source's commit, and
/// `--include` only what matches.
fn downloads_from_the_mirror_are_the_source_files(
    sandbox: &Sandbox,
    endpoint: &str,
    model: &Path,
    commit: &str,
) {
    let endpoint = endpoint.to_string();
    let cache_b = sandbox.root.join("cache-b");
    let downloaded = run(
        sandbox.safeformers(&cache_b, &endpoint),
        &["download", "org/tiny"],
    );
    assert_code(&downloaded, 0, "download from the mirror");
    let snapshot = last_line(&downloaded);
    assert_eq!(snapshot.file_name().unwrap().to_str().unwrap(), commit);
    assert_eq!(files_under(&snapshot), files_under(model));
    assert_code(
        &run(
            sandbox.safeformers(&cache_b, &endpoint),
            &["cache", "verify"],
        ),
        0,
        "cache verify of the downloaded repo",
    );
    // --include: only what matches.
    let cache_i = sandbox.root.join("cache-i");
    let partial = run(
        sandbox.safeformers(&cache_i, &endpoint),
        &["download", "org/tiny", "--include", "*.json"],
    );
    assert_code(&partial, 0, "download --include");
    let names: Vec<String> = files_under(&last_line(&partial)).into_keys().collect();
    assert_eq!(
        names,
        ["1_Pooling/config.json", "config.json", "tokenizer.json"]
    );
}

#[test]
fn download_inspect_and_pinned_loads_through_a_mirror() {
    let sandbox = Sandbox::new("mirror");
    let model = sandbox.dir("tiny");
    tiny_model(&model, 1);
    let source = sandbox.root.join("source-cache");
    let counter = ConnectionCounter::start();
    let source_snapshot = import_tiny(&sandbox, &source, &counter.url(), &model);
    let commit = source_snapshot
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let mirror = MirrorServer::start(HubCache::new(&source), "127.0.0.1:0".parse().unwrap())
        .expect("the mirror starts on loopback");
    let endpoint = mirror.url();

    downloads_from_the_mirror_are_the_source_files(&sandbox, &endpoint, &model, &commit);

    // inspect by repo id (endpoint given by flag): only what the policy may read is fetched.
    let cache_c = sandbox.root.join("cache-c");
    let inspected = run(
        sandbox.safeformers(&cache_c, &counter.url()),
        &["inspect", "--json", "--endpoint", &endpoint, "org/tiny"],
    );
    assert_code(&inspected, 0, "inspect org/tiny through the mirror");
    assert_eq!(
        stdout_json(&inspected)["tensors"].as_array().unwrap().len(),
        2
    );
    let fetched = files_under(&cache_c.join("models--org--tiny/snapshots").join(&commit));
    let names: Vec<&str> = fetched.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "1_Pooling/config.json",
            "config.json",
            "model.safetensors",
            "tokenizer.json",
            "vocab.txt"
        ],
        "the default policy fetched a pickle or code file"
    );
    // With --allow-pickle the pickle weights come too (safetensors is still what is read).
    let cache_p = sandbox.root.join("cache-p");
    let with_pickle = run(
        sandbox.safeformers(&cache_p, &endpoint),
        &["inspect", "--json", "--allow-pickle", "org/tiny"],
    );
    assert_code(&with_pickle, 0, "inspect --allow-pickle through the mirror");
    let snapshot_p = cache_p.join("models--org--tiny/snapshots").join(&commit);
    assert!(snapshot_p.join("pytorch_model.bin").is_file());
    assert!(!snapshot_p.join("modeling_tiny.py").exists());

    // lock through the mirror, then --locked loads with the mirror unreachable.
    let locked = run(
        sandbox.safeformers(&cache_c, &endpoint),
        &["lock", "org/tiny"],
    );
    assert_code(&locked, 0, "lock through the mirror");

    // A pinned commit that is cached needs no request: the mirror stops, the endpoint becomes a
    // listener that counts connections, and loads by commit still work.
    mirror.shutdown().unwrap();
    let pinned_flag = run(
        sandbox.safeformers(&cache_c, &counter.url()),
        &["inspect", "--json", "--revision", &commit, "org/tiny"],
    );
    assert_code(
        &pinned_flag,
        0,
        "inspect --revision <commit> with the mirror stopped",
    );
    let pinned_at = run(
        sandbox.safeformers(&cache_c, &counter.url()),
        &["inspect", "--json", &format!("org/tiny@{commit}")],
    );
    assert_code(
        &pinned_at,
        0,
        "inspect org/tiny@<commit> with the mirror stopped",
    );
    let locked_load = run(
        sandbox.safeformers(&cache_c, &counter.url()),
        &["inspect", "--json", "--locked", "org/tiny"],
    );
    assert_code(&locked_load, 0, "--locked load with the mirror stopped");
    assert_eq!(
        counter.connections(),
        0,
        "a cached pinned load opened a socket"
    );

    // A moving ref needs the server: with the mirror gone that is an error (1), not a refusal.
    let by_ref = run(
        sandbox.safeformers(&cache_c, &format!("http://{}", reserved_closed_port())),
        &["inspect", "org/tiny"],
    );
    assert_code(&by_ref, 1, "inspect by ref with no server");
    assert_eq!(stderr(&by_ref).lines().count(), 1, "{}", stderr(&by_ref));
}

/// A loopback address where nothing listens (bound, then released).
fn reserved_closed_port() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}
