//! `safeformers cache ...` and offline loads by repo id, against temporary caches only.

mod common;

use common::{
    ConnectionCounter, Sandbox, assert_code, assert_error, import_tiny, run, stderr, stdout,
    stdout_json, tiny_model,
};

#[test]
fn import_list_inspect_offline_verify_tamper_and_remove() {
    let sandbox = Sandbox::new("cache-cycle");
    let model = sandbox.dir("tiny");
    tiny_model(&model, 1);
    let cache = sandbox.root.join("cache");
    let counter = ConnectionCounter::start();
    let sf = || sandbox.safeformers(&cache, &counter.url());

    let snapshot = import_tiny(&sandbox, &cache, &counter.url(), &model);
    assert!(snapshot.starts_with(&cache), "{}", snapshot.display());
    assert!(snapshot.join("1_Pooling/config.json").is_file());

    let listing = run(sf(), &["cache", "ls", "--json"]);
    assert_code(&listing, 0, "cache ls --json");
    let listing = stdout_json(&listing);
    let repos = listing["repos"].as_array().unwrap();
    assert_eq!(repos.len(), 1, "{listing}");
    assert_eq!(repos[0]["repo"], "org/tiny");
    let commit = snapshot.file_name().unwrap().to_str().unwrap();
    assert_eq!(repos[0]["refs"]["main"], commit);
    assert_eq!(repos[0]["snapshots"][0]["commit"], commit);
    assert_eq!(repos[0]["snapshots"][0]["files"], 7);
    assert!(repos[0]["size"].as_u64().unwrap() > 100);
    let table = run(sf(), &["cache", "ls"]);
    assert_code(&table, 0, "cache ls");
    assert!(stdout(&table).contains("org/tiny"), "{}", stdout(&table));

    let inspected = run(sf(), &["inspect", "--json", "--offline", "org/tiny"]);
    assert_code(&inspected, 0, "inspect --offline org/tiny");
    let report = stdout_json(&inspected);
    assert_eq!(report["format"], "safetensors");
    assert_eq!(report["tensors"].as_array().unwrap().len(), 2);
    // `--model` is the same argument; HF_HUB_OFFLINE=1 the same as --offline.
    let mut offline_env = sf();
    offline_env.env("HF_HUB_OFFLINE", "1");
    let by_flag = run(offline_env, &["inspect", "--json", "--model", "org/tiny"]);
    assert_code(&by_flag, 0, "HF_HUB_OFFLINE=1 inspect --model org/tiny");
    assert_eq!(stdout_json(&by_flag), report);

    assert_code(&run(sf(), &["cache", "verify"]), 0, "cache verify");
    assert_code(
        &run(sf(), &["cache", "verify", "org/tiny"]),
        0,
        "cache verify org/tiny",
    );

    // Tamper with the blob behind config.json (same size, other content).
    let blob = std::fs::canonicalize(snapshot.join("config.json")).unwrap();
    let original = std::fs::read(&blob).unwrap();
    let mut tampered = original.clone();
    tampered[1] = b' ';
    std::fs::write(&blob, &tampered).unwrap();
    let verified = run(sf(), &["cache", "verify"]);
    assert_code(&verified, 3, "cache verify after tampering");
    let message = stderr(&verified);
    assert_eq!(message.lines().count(), 1, "one line: {message}");
    assert!(message.contains("org/tiny: config.json"), "{message}");
    assert!(
        stdout(&verified).contains("CORRUPT"),
        "{}",
        stdout(&verified)
    );
    assert_code(
        &run(sf(), &["cache", "verify", "org/tiny"]),
        3,
        "cache verify org/tiny after tampering",
    );

    let removed = run(sf(), &["cache", "rm", "org/tiny"]);
    assert_code(&removed, 0, "cache rm");
    assert!(!cache.join("models--org--tiny").exists());
    let listing = stdout_json(&run(sf(), &["cache", "ls", "--json"]));
    assert!(listing["repos"].as_array().unwrap().is_empty(), "{listing}");
    assert_code(
        &run(sf(), &["inspect", "--offline", "org/tiny"]),
        3,
        "inspect --offline after cache rm",
    );
    assert_code(
        &run(sf(), &["cache", "rm", "org/tiny"]),
        1,
        "cache rm of a repo not cached",
    );
    assert_eq!(counter.connections(), 0, "offline commands opened a socket");
}

#[test]
fn offline_and_not_cached_is_refused_without_opening_a_socket() {
    let sandbox = Sandbox::new("offline");
    let cache = sandbox.root.join("cache");
    let counter = ConnectionCounter::start();
    let sf = || sandbox.safeformers(&cache, &counter.url());
    for args in [
        vec!["inspect", "--offline", "org/missing"],
        vec!["inspect", "--offline", "org/missing@v1"],
        vec!["download", "--offline", "org/missing"],
        vec!["lock", "--offline", "org/missing"],
        vec![
            "inspect",
            "--offline",
            "--revision",
            "0123456789abcdef0123456789abcdef01234567",
            "org/missing",
        ],
    ] {
        let output = run(sf(), &args);
        assert_code(&output, 3, &format!("{args:?}"));
        let message = stderr(&output);
        assert_eq!(message.lines().count(), 1, "one line: {message}");
        assert!(
            message.contains("offline") && message.contains("org/missing"),
            "{args:?}: {message}"
        );
    }
    let mut by_env = sf();
    by_env.env("HF_HUB_OFFLINE", "1");
    let output = run(by_env, &["inspect", "org/missing"]);
    assert_error(&output, 3, "HF_HUB_OFFLINE=1 inspect", "not in the cache");
    assert!(!sandbox.root.join("safeformers.lock").exists());
    assert_eq!(counter.connections(), 0, "offline commands opened a socket");
}

#[test]
fn local_paths_keep_working_and_bad_arguments_are_usage_errors() {
    let sandbox = Sandbox::new("local");
    let model = sandbox.dir("org/tiny");
    tiny_model(&model, 1);
    let cache = sandbox.root.join("cache");
    let counter = ConnectionCounter::start();
    let sf = || sandbox.safeformers(&cache, &counter.url());
    // A folder that exists wins over the repo id it also spells (run in the sandbox folder).
    let output = run(sf(), &["inspect", "--json", "org/tiny"]);
    assert_code(&output, 0, "inspect of the local folder org/tiny");
    assert_eq!(stdout_json(&output)["tensors"].as_array().unwrap().len(), 2);
    assert!(!cache.exists(), "a local load touched the cache");
    let conflicting = run(
        sf(),
        &["inspect", "--offline", "--revision", "v1", "org/other@v2"],
    );
    assert_code(&conflicting, 2, "conflicting revisions");
    assert_code(
        &run(sf(), &["inspect", "a", "--model", "b"]),
        2,
        "two models",
    );
    let bad_repo = run(sf(), &["cache", "import", ".", "--repo", "a--b/c"]);
    assert_error(&bad_repo, 1, "invalid repo id", "a--b/c");
    assert_eq!(counter.connections(), 0);
}
