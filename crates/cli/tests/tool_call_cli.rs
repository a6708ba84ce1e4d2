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
use safeformers_testkit::scripted_http::{CannedResponse, RecordedRequest, ScriptedServer};

/// The example tool filed into `cache` as `demo/word-count`; returns its commit.
fn import_example(sandbox: &Sandbox, cache: &std::path::Path) -> String {
    let example = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/tools/word_count");
    import_package(sandbox, cache, &example, "demo/word-count")
}

/// The package in `folder` (its `tool.json` and `tool.wasm` only: a source beside them is not
/// part of it) filed into `cache` as `repo`; returns its commit.
fn import_package(
    sandbox: &Sandbox,
    cache: &std::path::Path,
    folder: &std::path::Path,
    repo: &str,
) -> String {
    let package = sandbox.dir("package");
    for file in ["tool.json", "tool.wasm"] {
        std::fs::copy(folder.join(file), package.join(file)).unwrap();
    }
    let imported = run(
        sandbox.safeformers(cache, "http://127.0.0.1:9"),
        &["cache", "import", package.to_str().unwrap(), "--repo", repo],
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

/// A chat completion from the scripted endpoint carrying one tool call.
fn tool_call_reply(name: &str, arguments: serde_json::Value) -> CannedResponse {
    let message = serde_json::json!({"role": "assistant", "tool_calls": [
        {"id": "call_1", "type": "function",
         "function": {"name": name, "arguments": arguments.to_string()}}]});
    CannedResponse::json(
        serde_json::json!({"id": "c", "object": "chat.completion", "created": 0,
            "model": "scripted",
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}]})
        .to_string(),
    )
}

/// What the model was told about the tool's call: the `tool` message of the request after it.
fn tool_observation(request: &RecordedRequest) -> String {
    let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
    let messages = body["messages"].as_array().unwrap();
    let observation = messages
        .iter()
        .rev()
        .find(|message| message["role"] == "tool")
        .unwrap_or_else(|| panic!("no tool message in {body}"));
    observation["content"].as_str().unwrap().to_owned()
}

/// `agent --tool` end to end: a scripted endpoint asks for `word_count` on a file of the granted
/// folder, the sandboxed tool counts it, the model sees the count and answers. Approved with
/// `--ask`, the same call is refused off a terminal unless `--yes-to word_count` says yes.
#[test]
fn the_agent_calls_the_example_tool_in_the_sandbox() {
    let sandbox = Sandbox::new("agent-tool");
    let cache = sandbox.root.join("cache");
    let commit = import_example(&sandbox, &cache);
    let docs = sandbox.dir("docs");
    std::fs::write(docs.join("note.txt"), "one two three\nfour five\n").unwrap();
    let lockfile = sandbox.root.join("safeformers.lock");
    let lock = lockfile.to_str().unwrap();
    let pinned = format!("demo/word-count@{commit}");
    let sf = || {
        let mut command = sandbox.safeformers(&cache, "http://127.0.0.1:9");
        command.env("XDG_CACHE_HOME", sandbox.root.join("xdg"));
        command
    };
    let approve = |extra: &[&str]| {
        let grant = format!("fs:/data={}:ro", docs.display());
        let mut args = vec![
            "tool",
            "approve",
            pinned.as_str(),
            "--grant",
            grant.as_str(),
            "--lockfile",
            lock,
            "--offline",
        ];
        args.extend_from_slice(extra);
        assert_code(&run(sf(), &args), 0, "tool approve");
    };
    let agent_run = |extra: &[&str]| {
        let server = ScriptedServer::start(vec![
            tool_call_reply("word_count", serde_json::json!({"path": "note.txt"})),
            tool_call_reply("final_answer", serde_json::json!({"answer": "done"})),
        ]);
        let endpoint = format!("{}/v1", server.url());
        let mut args = vec![
            "agent",
            "--endpoint",
            endpoint.as_str(),
            "--api-model",
            "scripted",
            "--tool",
            pinned.as_str(),
            "--lockfile",
            lock,
            "--offline",
        ];
        args.extend_from_slice(extra);
        args.push("How many words are in note.txt?");
        let output = run(sf(), &args);
        assert_code(&output, 0, "agent");
        assert_eq!(stdout(&output), "done\n");
        let requests = server.requests();
        assert_eq!(requests.len(), 2);
        let body: serde_json::Value = serde_json::from_slice(&requests[0].body).unwrap();
        let offered: Vec<&str> = body["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|tool| tool["function"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(offered, ["word_count", "final_answer"]);
        (tool_observation(&requests[1]), common::stderr(&output))
    };

    approve(&[]);
    let (observation, _) = agent_run(&[]);
    // Handed back as data, under a line saying so.
    let (framing, result) = observation
        .split_once('\n')
        .unwrap_or_else(|| panic!("{observation}"));
    assert!(framing.contains("untrusted data"), "{observation}");
    let counted: serde_json::Value = serde_json::from_str(result)
        .unwrap_or_else(|_| panic!("not the tool's JSON: {observation}"));
    assert_eq!(
        counted,
        serde_json::json!({"lines": 2, "words": 5, "characters": 24})
    );

    approve(&["--ask"]);
    let (observation, stderr) = agent_run(&[]);
    assert!(
        observation.contains("did not approve") && !observation.contains("words"),
        "{observation}"
    );
    assert!(stderr.contains("--yes-to word_count"), "{stderr}");
    let (observation, stderr) = agent_run(&["--yes-to", "word_count"]);
    assert!(observation.contains("\"words\":5"), "{observation}");
    assert!(
        stderr.contains("approved by --yes-to: word_count"),
        "{stderr}"
    );
}

/// The smolagents-style Python example (`examples/tools/py_word_count`: `tool.py` with a `Tool`
/// subclass and its `forward`), built into a component holding CPython by componentize-py
/// (`SAFEFORMERS_PY_TOOL_DIR`, built by `scripts/test.sh`), runs under the same sandbox and
/// grants as any tool: it counts a file of its grant, cannot open anything beyond it, and its
/// Python exceptions come back as the tool's error.
#[test]
fn a_python_tool_runs_in_the_same_sandbox() {
    let built = safeformers_testkit::required_path(
        "SAFEFORMERS_PY_TOOL_DIR",
        "examples/tools/python/build.sh examples/tools/py_word_count OUT",
    );
    let sandbox = Sandbox::new("py-tool");
    let cache = sandbox.root.join("cache");
    let commit = import_package(&sandbox, &cache, &built, "demo/py-word-count");
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
    let grant = format!("fs:/data={}:ro", docs.display());
    let pinned = format!("demo/py-word-count@{commit}");
    let approved = run(
        sf(),
        &[
            "tool",
            "approve",
            &pinned,
            "--grant",
            &grant,
            "--lockfile",
            lock,
            "--offline",
        ],
    );
    assert_code(&approved, 0, "tool approve");
    let call = |arguments: serde_json::Value| {
        let arguments = arguments.to_string();
        run(
            sf(),
            &[
                "tool",
                "call",
                &pinned,
                "--args",
                &arguments,
                "--lockfile",
                lock,
                "--offline",
            ],
        )
    };

    let counted = call(serde_json::json!({"path": "note.txt"}));
    assert_code(&counted, 0, "tool call");
    let result: serde_json::Value = serde_json::from_str(stdout(&counted).trim()).unwrap();
    assert_eq!(
        result,
        serde_json::json!({"lines": 2, "words": 5, "characters": 24})
    );

    for path in ["../canary.txt", canary.to_str().unwrap(), "/etc/passwd"] {
        let escaped = call(serde_json::json!({"path": path}));
        assert_code(&escaped, 1, path);
        let output = format!("{}{}", stdout(&escaped), common::stderr(&escaped));
        assert!(!output.contains("CANARY-SECRET-BYTES"), "{output}");
        assert!(
            output.contains("Error"),
            "a Python exception, as the tool's err: {output}"
        );
    }

    let missing = call(serde_json::json!({}));
    assert_code(&missing, 1, "no arguments");
    assert!(
        common::stderr(&missing).contains("ValueError: give text or path"),
        "{}",
        common::stderr(&missing)
    );
}
