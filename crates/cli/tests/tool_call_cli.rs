//! `safeformers tool call` and `agent --tool` end to end with the README's example tool
//! (`examples/tools/word_count`): filed into a cache as a repo, approved with a read-only folder,
//! called in the WebAssembly sandbox; its grant is all it can read, a call that fails its schema
//! or an unapproved tool never runs, and a tool whose bytes changed after approval is refused.
//! The agent calls it from a scripted endpoint (and asks first when it was approved `--ask`). The
//! Python example, built by componentize-py, runs under the same sandbox. Needs the `wasm`
//! feature (`scripts/test.sh` tests every feature).

#![cfg(feature = "wasm")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{Sandbox, assert_code, run, stdout};
use safeformers_testkit::scripted_http::{CannedResponse, RecordedRequest, ScriptedServer};

/// A tool package filed into a fresh cache as a repo, a folder to grant holding `note.txt`, a
/// canary file outside it, and a lockfile.
struct ToolSetup {
    sandbox: Sandbox,
    cache: PathBuf,
    commit: String,
    repo: &'static str,
    docs: PathBuf,
    canary: PathBuf,
    lockfile: PathBuf,
}

impl ToolSetup {
    /// The package in `folder` (its `tool.json` and `tool.wasm` only: a source beside them is
    /// not part of it) filed as `repo`.
    fn new(label: &str, folder: &Path, repo: &'static str) -> ToolSetup {
        let sandbox = Sandbox::new(label);
        let cache = sandbox.root.join("cache");
        let package = sandbox.dir("package");
        for file in ["tool.json", "tool.wasm"] {
            std::fs::copy(folder.join(file), package.join(file)).unwrap();
        }
        let docs = sandbox.dir("docs");
        std::fs::write(docs.join("note.txt"), "one two three\nfour five\n").unwrap();
        let canary = sandbox.root.join("canary.txt");
        std::fs::write(&canary, "CANARY-SECRET-BYTES\n").unwrap();
        let lockfile = sandbox.root.join("safeformers.lock");
        let mut setup = ToolSetup {
            sandbox,
            cache,
            commit: String::new(),
            repo,
            docs,
            canary,
            lockfile,
        };
        let imported = setup.run(&["cache", "import", package.to_str().unwrap(), "--repo", repo]);
        assert_code(&imported, 0, "cache import");
        setup.commit = common::last_snapshot_commit(&imported);
        setup
    }

    /// The README's example tool, `examples/tools/word_count`, as `demo/word-count`.
    fn word_count(label: &str) -> ToolSetup {
        let example =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/tools/word_count");
        ToolSetup::new(label, &example, "demo/word-count")
    }

    fn pinned(&self) -> String {
        format!("{}@{}", self.repo, self.commit)
    }

    /// `safeformers ARGS`, offline in effect (the Hub endpoint is a closed port), with its own
    /// compiled-code cache.
    fn run(&self, args: &[&str]) -> Output {
        let mut command = self.sandbox.safeformers(&self.cache, "http://127.0.0.1:9");
        command.env("XDG_CACHE_HOME", self.sandbox.root.join("xdg"));
        run(command, args)
    }

    /// `tool approve REPO@COMMIT --grant fs:/data=DOCS:ro EXTRA...`; must succeed.
    fn approve(&self, extra: &[&str]) {
        let grant = format!("fs:/data={}:ro", self.docs.display());
        let pinned = self.pinned();
        let mut args = vec!["tool", "approve", &pinned, "--grant", &grant];
        args.extend_from_slice(&["--lockfile", self.lockfile.to_str().unwrap(), "--offline"]);
        args.extend_from_slice(extra);
        assert_code(&self.run(&args), 0, "tool approve");
    }

    /// `tool call REPO --args ARGUMENTS`.
    fn call(&self, arguments: &serde_json::Value) -> Output {
        let arguments = arguments.to_string();
        let lockfile = self.lockfile.to_str().unwrap();
        self.run(&[
            "tool",
            "call",
            self.repo,
            "--args",
            &arguments,
            "--lockfile",
            lockfile,
            "--offline",
        ])
    }

    /// Calls that try to read beyond the grant fail, and the canary's bytes appear nowhere.
    fn assert_escapes_fail(&self) -> Vec<String> {
        let mut outputs = Vec::new();
        for path in [
            "../canary.txt",
            self.canary.to_str().unwrap(),
            "/etc/passwd",
        ] {
            let escaped = self.call(&serde_json::json!({"path": path}));
            assert_code(&escaped, 1, path);
            let output = format!("{}{}", stdout(&escaped), common::stderr(&escaped));
            assert!(!output.contains("CANARY-SECRET-BYTES"), "{output}");
            outputs.push(output);
        }
        outputs
    }
}

fn counts(output: &Output) -> serde_json::Value {
    serde_json::from_str(stdout(output).trim()).unwrap()
}

fn note_counts() -> serde_json::Value {
    serde_json::json!({"lines": 2, "words": 5, "characters": 24})
}

#[test]
fn the_example_tool_counts_words_in_its_grant_and_nothing_else() {
    let setup = ToolSetup::word_count("tool-call");

    // Not approved yet: refused by policy, nothing runs.
    let refused = setup.call(&serde_json::json!({"text": "a b"}));
    assert_code(&refused, 3, "call before approval");

    setup.approve(&[]);
    let counted = setup.call(&serde_json::json!({"path": "note.txt"}));
    assert_code(&counted, 0, "tool call");
    assert_eq!(counts(&counted), note_counts());

    // Outside the grant: `..` and the absolute path of the canary fail inside the sandbox.
    setup.assert_escapes_fail();

    // Arguments that fail the schema never reach the tool.
    let bad = setup.call(&serde_json::json!({"text": 5}));
    assert_code(&bad, 1, "schema");
    assert!(
        common::stderr(&bad).contains("schema"),
        "{}",
        common::stderr(&bad)
    );

    // A byte of tool.wasm changed in the cache after approval: refused by policy.
    let snapshot = setup
        .cache
        .join("models--demo--word-count/snapshots")
        .join(&setup.commit);
    let blob = std::fs::canonicalize(snapshot.join("tool.wasm")).unwrap();
    let mut bytes = std::fs::read(&blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let mut permissions = std::fs::metadata(&blob).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    permissions.set_readonly(false);
    std::fs::set_permissions(&blob, permissions).unwrap();
    std::fs::write(&blob, bytes).unwrap();
    let swapped = setup.call(&serde_json::json!({"text": "a"}));
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
    let setup = ToolSetup::word_count("agent-tool");
    let pinned = setup.pinned();
    let agent_run = |extra: &[&str]| {
        let server = ScriptedServer::start(vec![
            tool_call_reply("word_count", serde_json::json!({"path": "note.txt"})),
            tool_call_reply("final_answer", serde_json::json!({"answer": "done"})),
        ]);
        let endpoint = format!("{}/v1", server.url());
        let mut args = vec!["agent", "--endpoint", &endpoint, "--api-model", "scripted"];
        args.extend_from_slice(&["--tool", &pinned, "--offline"]);
        args.extend_from_slice(&["--lockfile", setup.lockfile.to_str().unwrap()]);
        args.extend_from_slice(extra);
        args.push("How many words are in note.txt?");
        let output = setup.run(&args);
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

    setup.approve(&[]);
    let (observation, _) = agent_run(&[]);
    // Handed back as data, under a line saying so.
    let (framing, result) = observation
        .split_once('\n')
        .unwrap_or_else(|| panic!("{observation}"));
    assert!(framing.contains("untrusted data"), "{observation}");
    let counted: serde_json::Value = serde_json::from_str(result)
        .unwrap_or_else(|_| panic!("not the tool's JSON: {observation}"));
    assert_eq!(counted, note_counts());

    setup.approve(&["--ask"]);
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
    let setup = ToolSetup::new("py-tool", &built, "demo/py-word-count");
    setup.approve(&[]);
    let counted = setup.call(&serde_json::json!({"path": "note.txt"}));
    assert_code(&counted, 0, "tool call");
    assert_eq!(counts(&counted), note_counts());
    for output in setup.assert_escapes_fail() {
        assert!(
            output.contains("Error"),
            "a Python exception, as the tool's err: {output}"
        );
    }
    let missing = setup.call(&serde_json::json!({}));
    assert_code(&missing, 1, "no arguments");
    assert!(
        common::stderr(&missing).contains("ValueError: give text or path"),
        "{}",
        common::stderr(&missing)
    );
}
