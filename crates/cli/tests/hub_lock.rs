//! `safeformers lock` and `--locked`, against temporary caches only.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::Path;
use std::process::Command;

use common::{
    ConnectionCounter, Sandbox, assert_code, assert_error, import_tiny, last_line, run, stderr,
    tiny_model,
};
use safeformers_hub::RepoId;
use safeformers_hub::lockfile::Lockfile;

/// At the locked commit `first`: changed content, and a file the lockfile does not list, are
/// refused.
fn locked_loads_refuse_changed_or_unlisted_files(sf: &dyn Fn() -> Command, first: &Path) {
    let inspect_locked = ["inspect", "--offline", "--locked", "org/tiny"];
    // Content changed in the cache at the locked commit: refused, naming the file.
    let blob = std::fs::canonicalize(first.join("tokenizer.json")).unwrap();
    let original = std::fs::read(&blob).unwrap();
    let mut tampered = original.clone();
    tampered[0] = b' ';
    std::fs::write(&blob, &tampered).unwrap();
    let refused = run(sf(), &inspect_locked);
    assert_code(&refused, 3, "--locked load of changed content");
    let message = stderr(&refused);
    assert_eq!(message.lines().count(), 1, "one line: {message}");
    assert!(
        message.contains("tokenizer.json") && message.contains("safeformers.lock"),
        "{message}"
    );
    std::fs::write(&blob, &original).unwrap();
    assert_code(&run(sf(), &inspect_locked), 0, "restored");

    // A file the load would read that the lockfile does not list (a well-formed cache entry,
    // linked to a blob as huggingface_hub would link it): refused.
    let weights_blob = std::fs::canonicalize(first.join("model.safetensors")).unwrap();
    std::os::unix::fs::symlink(&weights_blob, first.join("extra.safetensors")).unwrap();
    let refused = run(sf(), &inspect_locked);
    assert_error(
        &refused,
        3,
        "--locked load with an unlisted file",
        "`extra.safetensors` is not in the lockfile",
    );
    std::fs::remove_file(first.join("extra.safetensors")).unwrap();
}

/// Another revision than the locked one, a repo not in the lockfile, no lockfile at all: refused.
fn locked_loads_refuse_other_revisions_and_repos(sf: &dyn Fn() -> Command, sandbox: &Sandbox) {
    // Another revision than the locked one, a repo not in the lockfile, no lockfile at all.
    assert_code(
        &run(sf(), &["inspect", "--offline", "--locked", "org/tiny@v2"]),
        3,
        "--locked with another revision",
    );
    let missing = run(sf(), &["inspect", "--offline", "--locked", "org/other"]);
    assert_code(&missing, 3, "--locked with a repo not in the lockfile");
    assert!(stderr(&missing).contains("not in the lockfile"));
    let elsewhere = sandbox.root.join("none.lock");
    assert_code(
        &run(
            sf(),
            &[
                "inspect",
                "--offline",
                "--locked",
                "--lockfile",
                elsewhere.to_str().unwrap(),
                "org/tiny",
            ],
        ),
        3,
        "--locked without a lockfile",
    );
}

#[test]
fn locked_loads_use_the_pinned_commit_and_refuse_any_difference() {
    let sandbox = Sandbox::new("locked");
    let model = sandbox.dir("tiny");
    tiny_model(&model, 1);
    let cache = sandbox.root.join("cache");
    let counter = ConnectionCounter::start();
    let sf = || sandbox.safeformers(&cache, &counter.url());
    let first = import_tiny(&sandbox, &cache, &counter.url(), &model);

    let locked = run(sf(), &["lock", "--offline", "org/tiny"]);
    assert_code(&locked, 0, "lock");
    let lockfile_path = sandbox.root.join("safeformers.lock");
    let lockfile = Lockfile::read(&lockfile_path).unwrap();
    let entry = lockfile.get(&RepoId::parse("org/tiny").unwrap()).unwrap();
    assert_eq!(entry.revision.as_str(), "main");
    assert_eq!(
        entry.commit.as_str(),
        first.file_name().unwrap().to_str().unwrap()
    );
    let paths: Vec<&str> = entry.files.iter().map(|file| file.path.as_str()).collect();
    // What a load reads under the default policy; never the pickle or the code.
    assert_eq!(
        paths,
        [
            "1_Pooling/config.json",
            "config.json",
            "model.safetensors",
            "tokenizer.json",
            "vocab.txt"
        ]
    );
    // Locking again gives the same bytes.
    let text = std::fs::read_to_string(&lockfile_path).unwrap();
    assert_code(&run(sf(), &["lock", "--offline", "org/tiny"]), 0, "relock");
    assert_eq!(std::fs::read_to_string(&lockfile_path).unwrap(), text);

    let inspect_locked = ["inspect", "--offline", "--locked", "org/tiny"];
    assert_code(&run(sf(), &inspect_locked), 0, "unchanged --locked load");
    let mut by_env = sf();
    by_env.env("SAFEFORMERS_LOCKED", "1");
    assert_code(
        &run(by_env, &["inspect", "--offline", "org/tiny"]),
        0,
        "SAFEFORMERS_LOCKED=1",
    );

    // New content under the same ref: an unlocked load follows the ref, a locked one keeps the
    // pinned commit (whose snapshot is still cached).
    tiny_model(&model, 2);
    let second = import_tiny(&sandbox, &cache, &counter.url(), &model);
    assert_ne!(first, second);
    let unlocked = run(sf(), &["download", "--offline", "org/tiny"]);
    assert_code(&unlocked, 0, "unlocked download --offline");
    assert_eq!(last_line(&unlocked), second);
    let pinned = run(sf(), &["download", "--offline", "--locked", "org/tiny"]);
    assert_code(&pinned, 0, "locked download --offline");
    assert_eq!(last_line(&pinned), first);

    locked_loads_refuse_changed_or_unlisted_files(&sf, &first);
    locked_loads_refuse_other_revisions_and_repos(&sf, &sandbox);

    // The locked commit gone from the cache (removed, then other content imported under the
    // same ref): refused, not silently replaced by the new commit.
    assert_code(&run(sf(), &["cache", "rm", "org/tiny"]), 0, "cache rm");
    import_tiny(&sandbox, &cache, &counter.url(), &model);
    assert_code(
        &run(sf(), &inspect_locked),
        3,
        "locked commit no longer cached",
    );
    assert_code(
        &run(sf(), &["inspect", "--offline", "org/tiny"]),
        0,
        "unlocked load",
    );

    // A lockfile that is not strictly valid is an error, not a pass.
    std::fs::write(&lockfile_path, format!("{text}\nsurprise = 1\n")).unwrap();
    let invalid = run(sf(), &inspect_locked);
    assert_error(&invalid, 1, "invalid lockfile", "invalid lockfile");
    assert_eq!(counter.connections(), 0, "offline commands opened a socket");
}
