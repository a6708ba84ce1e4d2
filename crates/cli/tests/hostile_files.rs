//! Hostile files where safeformers expects small regular files: FIFOs and devices in model
//! folders, caches and on the command line (nothing may block on them), huge or endless small
//! files (every read is capped), and cache entries that lead outside the cache (never read as
//! cache content). Each test fails on a build without the one opener
//! (`safeformers_files::open_regular`) or the cache rule (`RepoCache::resolve_entry`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::{Path, PathBuf};

use common::{
    Sandbox, assert_code, assert_error, import_tiny, import_tiny_args, minilm_dir, run_within,
    stderr, stdout, stdout_json, tiny_model,
};
use safeformers_testkit::make_fifo;

/// How long a command may take before it counts as blocked.
const DEADLINE_SECONDS: u64 = 60;

#[cfg(unix)]
fn symlink(target: impl AsRef<Path>, link: impl AsRef<Path>) {
    std::os::unix::fs::symlink(target, link).unwrap();
}

/// A copy of MiniLM (hard links to the real files where the filesystem allows, else copies: a
/// symbolic link out of a model folder is refused), except `replaced`, which the caller then
/// puts in place.
fn minilm_links(sandbox: &Sandbox, label: &str, replaced: &str) -> PathBuf {
    let source = minilm_dir();
    let dir = sandbox.dir(label);
    for name in [
        "config.json",
        "config_sentence_transformers.json",
        "model.safetensors",
        "modules.json",
        "sentence_bert_config.json",
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.txt",
        "1_Pooling/config.json",
    ] {
        if name == replaced {
            continue;
        }
        let copy = dir.join(name);
        std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
        if std::fs::hard_link(source.join(name), &copy).is_err() {
            std::fs::copy(source.join(name), &copy).unwrap();
        }
    }
    std::fs::create_dir_all(dir.join(replaced).parent().unwrap()).unwrap();
    dir
}

/// `safeformers ARGS` with the sandbox's environment and `cache`, no reachable endpoint, within
/// the deadline.
fn safeformers_within(sandbox: &Sandbox, cache: &Path, args: &[&str]) -> std::process::Output {
    run_within(
        sandbox.safeformers(cache, "http://127.0.0.1:9"),
        args,
        DEADLINE_SECONDS,
    )
}

/// `run feature-extraction --model DIR hello`, within the deadline.
fn embed_with(sandbox: &Sandbox, cache: &Path, dir: &Path) -> std::process::Output {
    safeformers_within(
        sandbox,
        cache,
        &[
            "run",
            "feature-extraction",
            "--model",
            dir.to_str().unwrap(),
            "hello",
        ],
    )
}

#[test]
fn a_fifo_in_a_model_folder_is_an_error_not_a_hang() {
    let sandbox = Sandbox::new("fifo-folder");
    let cache = sandbox.root.join("cache");
    for name in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "modules.json",
        "1_Pooling/config.json",
    ] {
        let label = name.replace('/', "-");
        let dir = minilm_links(&sandbox, &label, name);
        make_fifo(&dir.join(name));
        let output = embed_with(&sandbox, &cache, &dir);
        assert_code(&output, 1, name);
        let message = stderr(&output);
        assert!(message.contains("named pipe (FIFO)"), "{name}: {message}");
        assert!(message.contains(name), "{name}: {message}");
    }
    // `inspect` reads the weights and the config.
    for name in ["model.safetensors", "config.json"] {
        let dir = minilm_links(&sandbox, &format!("inspect-{name}"), name);
        make_fifo(&dir.join(name));
        let output = safeformers_within(
            &sandbox,
            &cache,
            &["inspect", dir.join(name).to_str().unwrap()],
        );
        assert_ne!(output.status.code(), Some(0), "inspect {name}");
        assert!(
            stderr(&output).contains("named pipe (FIFO)"),
            "{}",
            stderr(&output)
        );
    }
}

#[test]
fn a_device_is_refused_before_it_is_read() {
    let sandbox = Sandbox::new("device");
    let cache = sandbox.root.join("cache");
    // Named directly on the command line: the opener refuses the device.
    let zero = sandbox.root.join("model.safetensors");
    symlink("/dev/zero", &zero);
    let output = safeformers_within(&sandbox, &cache, &["inspect", zero.to_str().unwrap()]);
    assert_error(&output, 1, "inspect /dev/zero", "a character device");
    // Inside a model folder, a link to it leaves the folder: refused before anything is read.
    for name in ["config.json", "tokenizer.json", "model.safetensors"] {
        let dir = minilm_links(&sandbox, &format!("zero-{name}"), name);
        symlink("/dev/zero", dir.join(name));
        let output = embed_with(&sandbox, &cache, &dir);
        assert_code(&output, 3, name);
        assert!(
            stderr(&output).contains("/dev/zero"),
            "{name}: {}",
            stderr(&output)
        );
    }
}

#[test]
fn a_link_out_of_a_model_folder_is_refused() {
    let sandbox = Sandbox::new("folder-escape");
    let cache = sandbox.root.join("cache");
    let secret = sandbox.root.join("id_rsa");
    std::fs::write(&secret, "-----BEGIN OPENSSH PRIVATE KEY-----").unwrap();
    for name in ["config.json", "tokenizer.json", "1_Pooling/config.json"] {
        let dir = minilm_links(
            &sandbox,
            &format!("escape-{}", name.replace('/', "-")),
            name,
        );
        symlink(&secret, dir.join(name));
        let output = embed_with(&sandbox, &cache, &dir);
        assert_code(&output, 3, name);
        let message = stderr(&output);
        assert!(
            message.contains(name) && message.contains("id_rsa"),
            "{message}"
        );
    }
    // A link that stays inside the folder is fine.
    let dir = minilm_links(&sandbox, "inside", "vocab.txt");
    std::fs::copy(minilm_dir().join("vocab.txt"), dir.join("vocab-real.txt")).unwrap();
    symlink("vocab-real.txt", dir.join("vocab.txt"));
    let output = embed_with(&sandbox, &cache, &dir);
    assert_code(&output, 0, "a link inside the folder");
    // A cache snapshot folder named by its path links into its repo's blobs/: fine.
    let snapshot = imported_tiny(&sandbox, &cache);
    let output = safeformers_within(
        &sandbox,
        &cache,
        &["inspect", "--json", snapshot.to_str().unwrap()],
    );
    assert_code(&output, 0, "inspect SNAPSHOT_DIR");
}

#[test]
fn scan_reports_a_special_file_as_invalid_and_goes_on() {
    let sandbox = Sandbox::new("scan-fifo");
    let dir = sandbox.dir("folder");
    tiny_model(&dir, 1);
    make_fifo(&dir.join("a-fifo.safetensors"));
    symlink("/dev/zero", dir.join("b-zero.bin"));
    let output = run_within(
        sandbox.safeformers(&sandbox.root.join("cache"), "http://127.0.0.1:9"),
        &["scan", "--json", dir.to_str().unwrap()],
        DEADLINE_SECONDS,
    );
    assert_code(&output, 1, "scan");
    let report = stdout_json(&output);
    let files = report["files"].as_array().unwrap();
    let find = |suffix: &str| {
        files
            .iter()
            .find(|file| file["path"].as_str().unwrap().ends_with(suffix))
            .unwrap_or_else(|| panic!("{suffix} not in {report}"))
    };
    for special in ["a-fifo.safetensors", "b-zero.bin"] {
        let file = find(special);
        assert_eq!(file["verdict"], "invalid", "{file}");
        assert_eq!(file["findings"][0]["kind"], "not_a_regular_file", "{file}");
    }
    // Files after the special ones were still scanned.
    assert_eq!(find("model.safetensors")["verdict"], "safe");
}

/// Imports the tiny model as `org/tiny` into `cache`; returns the snapshot folder.
fn imported_tiny(sandbox: &Sandbox, cache: &Path) -> PathBuf {
    let model = sandbox.dir("tiny");
    tiny_model(&model, 1);
    import_tiny(sandbox, cache, "http://127.0.0.1:9", &model)
}

fn repo_dir(cache: &Path) -> PathBuf {
    cache.join("models--org--tiny")
}

fn inspect_offline(sandbox: &Sandbox, cache: &Path) -> std::process::Output {
    safeformers_within(
        sandbox,
        cache,
        &["inspect", "--json", "--offline", "org/tiny"],
    )
}

fn verify(sandbox: &Sandbox, cache: &Path) -> std::process::Output {
    safeformers_within(sandbox, cache, &["cache", "verify"])
}

#[test]
fn refs_that_are_special_or_huge_are_refused_with_their_cap() {
    let sandbox = Sandbox::new("refs");
    let cache = sandbox.root.join("cache");
    imported_tiny(&sandbox, &cache);
    let main = repo_dir(&cache).join("refs/main");
    assert_code(&inspect_offline(&sandbox, &cache), 0, "clean cache");

    std::fs::remove_file(&main).unwrap();
    make_fifo(&main);
    let output = inspect_offline(&sandbox, &cache);
    assert_error(&output, 1, "refs/main is a FIFO", "named pipe");

    std::fs::remove_file(&main).unwrap();
    symlink("/dev/zero", &main);
    let output = inspect_offline(&sandbox, &cache);
    assert_error(&output, 1, "refs/main is /dev/zero", "a character device");

    std::fs::remove_file(&main).unwrap();
    std::fs::write(&main, "a".repeat(4096)).unwrap();
    let output = inspect_offline(&sandbox, &cache);
    assert_error(
        &output,
        1,
        "refs/main is 4 KiB",
        "256-byte cap for a ref file",
    );

    // `cache ls` names a malformed ref as a cache problem, with no server in the story.
    std::fs::write(&main, "not a commit\n").unwrap();
    let output = safeformers_within(&sandbox, &cache, &["cache", "ls", "--json"]);
    assert_code(&output, 0, "cache ls");
    let listing = stdout_json(&output);
    let reason = listing["repos"][0]["invalid_refs"]["main"]
        .as_str()
        .unwrap();
    assert!(reason.contains("cached ref must hold"), "{reason}");
    assert!(!reason.contains("server"), "{reason}");
}

#[test]
fn lockfiles_that_are_special_or_huge_are_refused_with_their_cap() {
    let sandbox = Sandbox::new("lockfile");
    let cache = sandbox.root.join("cache");
    imported_tiny(&sandbox, &cache);
    let fifo = sandbox.root.join("fifo.lock");
    make_fifo(&fifo);
    let zero = sandbox.root.join("zero.lock");
    symlink("/dev/zero", &zero);
    let huge = sandbox.root.join("huge.lock");
    std::fs::write(&huge, vec![b'#'; 9 << 20]).unwrap();
    for (lockfile, expected) in [
        (&fifo, "named pipe"),
        (&zero, "a character device"),
        (&huge, "cap for a lockfile"),
    ] {
        let output = safeformers_within(
            &sandbox,
            &cache,
            &[
                "inspect",
                "--offline",
                "--locked",
                "--lockfile",
                lockfile.to_str().unwrap(),
                "org/tiny",
            ],
        );
        assert_code(&output, 1, expected);
        assert!(stderr(&output).contains(expected), "{}", stderr(&output));
    }
}

/// The blob a snapshot entry links to.
fn blob_of(snapshot: &Path, name: &str) -> PathBuf {
    std::fs::canonicalize(snapshot.join(name)).unwrap()
}

#[test]
fn snapshot_entries_leading_outside_the_cache_are_refused_everywhere() {
    let sandbox = Sandbox::new("escape");
    let cache = sandbox.root.join("cache");
    let snapshot = imported_tiny(&sandbox, &cache);
    let secret = sandbox.root.join("secret.json");
    std::fs::write(&secret, "{\"model_type\": \"bert\", \"secret\": true}").unwrap();

    // An entry that links straight outside.
    let config = snapshot.join("config.json");
    std::fs::remove_file(&config).unwrap();
    symlink(&secret, &config);
    let output = inspect_offline(&sandbox, &cache);
    assert_code(&output, 3, "entry -> outside file");
    let message = stderr(&output);
    assert!(message.contains("config.json"), "{message}");
    assert!(message.contains("secret.json"), "{message}");
    let output = verify(&sandbox, &cache);
    assert_code(&output, 3, "verify: entry -> outside file");
    assert!(
        stdout(&output).contains("config.json: refused entry"),
        "{}",
        stdout(&output)
    );

    // A blob that is itself a link outside.
    let sandbox = Sandbox::new("escape-blob");
    let cache = sandbox.root.join("cache");
    let snapshot = imported_tiny(&sandbox, &cache);
    let secret = sandbox.root.join("secret.json");
    std::fs::write(&secret, "{\"model_type\": \"bert\"}").unwrap();
    let blob = blob_of(&snapshot, "config.json");
    std::fs::remove_file(&blob).unwrap();
    symlink(&secret, &blob);
    assert_code(
        &inspect_offline(&sandbox, &cache),
        3,
        "blob -> outside file",
    );
    assert_code(&verify(&sandbox, &cache), 3, "verify: blob -> outside file");
}

#[test]
fn cache_verify_reports_every_tampered_entry() {
    let sandbox = Sandbox::new("verify");
    let cache = sandbox.root.join("cache");
    let snapshot = imported_tiny(&sandbox, &cache);
    assert_code(&verify(&sandbox, &cache), 0, "clean cache");

    // An extra entry to a file outside, a dangling entry, and blobs that are a FIFO, /dev/zero
    // and a folder.
    symlink("/etc/passwd", snapshot.join("extra.json"));
    symlink(
        "../../blobs/0000000000000000000000000000000000000000",
        snapshot.join("gone.txt"),
    );
    let fifo_blob = blob_of(&snapshot, "config.json");
    std::fs::remove_file(&fifo_blob).unwrap();
    make_fifo(&fifo_blob);
    let zero_blob = blob_of(&snapshot, "vocab.txt");
    std::fs::remove_file(&zero_blob).unwrap();
    symlink("/dev/zero", &zero_blob);
    let dir_blob = blob_of(&snapshot, "tokenizer.json");
    std::fs::remove_file(&dir_blob).unwrap();
    std::fs::create_dir(&dir_blob).unwrap();

    let output = verify(&sandbox, &cache);
    assert_code(&output, 3, "tampered cache");
    let report = stdout(&output);
    for expected in [
        "extra.json: refused entry, points to /etc/passwd",
        "gone.txt: refused entry",
        "config.json: refused entry",
        "named pipe",
        "vocab.txt: refused entry",
        "tokenizer.json: refused entry",
        "a directory",
    ] {
        assert!(report.contains(expected), "{expected} not in:\n{report}");
    }
    // Loads refuse the same snapshot, and no command blocks on it.
    assert_code(
        &inspect_offline(&sandbox, &cache),
        3,
        "load of a tampered snapshot",
    );
    let listing = safeformers_within(&sandbox, &cache, &["cache", "ls", "--json"]);
    assert_code(&listing, 0, "cache ls");
    let listing = stdout_json(&listing);
    let refused = listing["repos"][0]["snapshots"][0]["refused"]
        .as_array()
        .unwrap();
    assert_eq!(refused.len(), 5, "{listing}");
}

#[test]
fn cache_verify_and_offline_loads_use_the_commits_file_list() {
    let sandbox = Sandbox::new("trees");
    let cache = sandbox.root.join("cache");
    let snapshot = imported_tiny(&sandbox, &cache);
    let commit = snapshot.file_name().unwrap().to_str().unwrap().to_string();
    let trees = repo_dir(&cache).join("trees");
    std::fs::create_dir_all(&trees).unwrap();
    let config_blob = blob_of(&snapshot, "config.json");
    let config_id = config_blob.file_name().unwrap().to_str().unwrap();
    // huggingface_hub 2.x's listing of the commit: it names a file the snapshot lacks.
    let listing = serde_json::json!({
        "format_version": 1,
        "files": {
            "config.json": {"size": 1, "blob_id": config_id},
            "tokenizer_config.json": {"size": 10, "blob_id": "ab".repeat(20)},
        }
    });
    std::fs::write(trees.join(format!("{commit}.json")), listing.to_string()).unwrap();
    let output = verify(&sandbox, &cache);
    assert_code(&output, 3, "verify with a file list");
    assert!(
        stdout(&output).contains("tokenizer_config.json: missing"),
        "{}",
        stdout(&output)
    );
    // Offline, a load of that snapshot is "not cached", a refusal.
    let output = inspect_offline(&sandbox, &cache);
    assert_code(&output, 3, "offline load of an incomplete snapshot");
}

#[test]
fn offline_after_an_interrupted_download_is_not_cached() {
    let sandbox = Sandbox::new("interrupted");
    let cache = sandbox.root.join("cache");
    let snapshot = imported_tiny(&sandbox, &cache);
    // A download killed before the weights were linked: their blob is still `.incomplete`.
    let blob = blob_of(&snapshot, "model.safetensors");
    std::fs::rename(&blob, blob.with_extension("incomplete")).unwrap();
    std::fs::remove_file(snapshot.join("model.safetensors")).unwrap();
    let output = inspect_offline(&sandbox, &cache);
    assert_code(&output, 3, "offline, weights missing");
    assert!(stderr(&output).contains("not"), "{}", stderr(&output));
}

#[test]
fn cache_import_never_follows_a_link_out_of_the_folder() {
    let sandbox = Sandbox::new("import-escape");
    let cache = sandbox.root.join("cache");
    let model = sandbox.dir("model");
    tiny_model(&model, 1);
    let secret = sandbox.root.join("secret.txt");
    std::fs::write(&secret, "the secret").unwrap();
    symlink(&secret, model.join("notes.txt"));
    let output = safeformers_within(&sandbox, &cache, &import_tiny_args(&model));
    assert_code(&output, 3, "import with a link outside");
    let message = stderr(&output);
    assert!(message.contains("notes.txt"), "{message}");
    assert!(message.contains("secret.txt"), "{message}");
    // Nothing was written: the secret is nowhere in the cache.
    assert!(
        !cache.exists()
            || common::files_under(&cache)
                .values()
                .all(|c| c != b"the secret")
    );
    // A link inside the folder is fine, and a FIFO is refused without blocking.
    std::fs::remove_file(model.join("notes.txt")).unwrap();
    symlink("vocab.txt", model.join("notes.txt"));
    let output = safeformers_within(&sandbox, &cache, &import_tiny_args(&model));
    assert_code(&output, 0, "import with a link inside");
    make_fifo(&model.join("pipe.json"));
    let output = safeformers_within(&sandbox, &cache, &import_tiny_args(&model));
    assert_error(&output, 1, "import with a FIFO", "named pipe");
}

#[test]
fn endless_stdin_is_read_up_to_a_cap() {
    let sandbox = Sandbox::new("stdin");
    let mut command = sandbox.safeformers(&sandbox.root.join("cache"), "http://127.0.0.1:9");
    command.stdin(std::fs::File::open("/dev/zero").unwrap());
    let model = minilm_dir();
    let output = run_within(
        command,
        &[
            "run",
            "feature-extraction",
            "--model",
            model.to_str().unwrap(),
            "-",
        ],
        DEADLINE_SECONDS,
    );
    assert_error(&output, 1, "run - < /dev/zero", "more than 268435456 bytes");
}
