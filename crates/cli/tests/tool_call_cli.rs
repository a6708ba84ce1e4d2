//! `safeformers tool call` end to end with the README's example tool
//! (`examples/tools/word_count`): filed into a cache as a repo, approved with a read-only folder,
//! called in the WebAssembly sandbox; its grant is all it can read, a call that fails its schema
//! or an unapproved tool never runs, and a tool whose bytes changed after approval is refused.
//! Needs the `wasm` feature (`scripts/test.sh` tests every feature).

#![cfg(feature = "wasm")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::PathBuf;

use common::{Sandbox, assert_code, last_line, run, stdout};

/// The example tool filed into `cache` as `demo/word-count`; returns its commit.
fn import_example(sandbox: &Sandbox, cache: &std::path::Path) -> String {
    let example = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/tools/word_count");
    // Only the package's two files: the source beside them is not part of it.
    let package = sandbox.dir("package");
    for file in ["tool.json", "tool.wasm"] {
        std::fs::copy(example.join(file), package.join(file)).unwrap();
    }
    let imported = run(
        sandbox.safeformers(cache, "http://127.0.0.1:9"),
        &[
            "cache",
            "import",
            package.to_str().unwrap(),
            "--repo",
            "demo/word-count",
        ],
    );
    assert_code(&imported, 0, "cache import");
    last_line(&imported)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string()
}

#[test]
fn the_example_tool_counts_words_in_its_grant_and_nothing_else() {
    let sandbox = Sandbox::new("tool-call");
    let cache = sandbox.root.join("cache");
    let commit = import_example(&sandbox, &cache);
    let docs = sandbox.dir("docs");
    std::fs::write(docs.join("note.txt"), "one two three\nfour five\n").unwrap();
    let canary = sandbox.root.join("canary.txt");
    std::fs::write(&canary, "CANARY-SECRET-BYTES\n").unwrap();
    let lockfile = sandbox.root.join("safeformers.lock");
    let lock = lockfile.to_str().unwrap();
    let sf = || {
        let mut command = sandbox.safeformers(&cache, "http://127.0.0.1:9");
        command.env("XDG_CACHE_HOME", sandbox.root.join("xdg"));
        command
    };

    // Not approved yet: refused by policy, nothing runs.
    let refused = run(
        sf(),
        &[
            "tool",
            "call",
            "demo/word-count",
            "--args",
            "{\"text\": \"a b\"}",
            "--lockfile",
            lock,
            "--offline",
        ],
    );
    assert_code(&refused, 3, "call before approval");

    let grant = format!("fs:/data={}:ro", docs.display());
    let approved = run(
        sf(),
        &[
            "tool",
            "approve",
            &format!("demo/word-count@{commit}"),
            "--grant",
            &grant,
            "--lockfile",
            lock,
            "--offline",
        ],
    );
    assert_code(&approved, 0, "tool approve");

    let counted = run(
        sf(),
        &[
            "tool",
            "call",
            "demo/word-count",
            "--args",
            "{\"path\": \"note.txt\"}",
            "--lockfile",
            lock,
            "--offline",
        ],
    );
    assert_code(&counted, 0, "tool call");
    let result: serde_json::Value = serde_json::from_str(stdout(&counted).trim()).unwrap();
    assert_eq!(
        result,
        serde_json::json!({"lines": 2, "words": 5, "characters": 24})
    );

    // Outside the grant: `..` and the absolute path of the canary fail inside the sandbox.
    for path in ["../canary.txt", canary.to_str().unwrap(), "/etc/passwd"] {
        let args = serde_json::json!({"path": path}).to_string();
        let escaped = run(
            sf(),
            &[
                "tool",
                "call",
                "demo/word-count",
                "--args",
                &args,
                "--lockfile",
                lock,
                "--offline",
            ],
        );
        assert_code(&escaped, 1, path);
        let output = format!("{}{}", stdout(&escaped), common::stderr(&escaped));
        assert!(!output.contains("CANARY-SECRET-BYTES"), "{output}");
    }

    // Arguments that fail the schema never reach the tool.
    let bad = run(
        sf(),
        &[
            "tool",
            "call",
            "demo/word-count",
            "--args",
            "{\"text\": 5}",
            "--lockfile",
            lock,
            "--offline",
        ],
    );
    assert_code(&bad, 1, "schema");
    assert!(
        common::stderr(&bad).contains("schema"),
        "{}",
        common::stderr(&bad)
    );

    // A byte of tool.wasm changed in the cache after approval: refused by policy.
    let snapshot = cache
        .join("models--demo--word-count/snapshots")
        .join(&commit);
    let blob = std::fs::canonicalize(snapshot.join("tool.wasm")).unwrap();
    let mut bytes = std::fs::read(&blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let mut permissions = std::fs::metadata(&blob).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    permissions.set_readonly(false);
    std::fs::set_permissions(&blob, permissions).unwrap();
    std::fs::write(&blob, bytes).unwrap();
    let swapped = run(
        sf(),
        &[
            "tool",
            "call",
            "demo/word-count",
            "--args",
            "{\"text\": \"a\"}",
            "--lockfile",
            lock,
            "--offline",
        ],
    );
    assert_code(&swapped, 3, "swapped byte");
    assert!(
        common::stderr(&swapped).contains("tool.wasm"),
        "{}",
        common::stderr(&swapped)
    );
}
