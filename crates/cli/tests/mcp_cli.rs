//! `safeformers mcp list|approve` and `agent --mcp-stdio` against the scripted stdio server of the
//! agents crate (`fake-mcp-server`): consent before a server starts (T12), approvals pinned by
//! definition hash in `safeformers.lock`, a rug-pulled definition blocked with its diff (T6),
//! calls that ask unless `--yes-to`, and a scrubbed server environment. Needs the `mcp` feature
//! (`scripts/test.sh` tests every feature).

#![cfg(feature = "mcp")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{Sandbox, assert_code, run, stdout};
use safeformers_testkit::scripted_http::{CannedResponse, RecordedRequest, ScriptedServer};
use serde_json::{Value, json};

const HF_TOKEN_VALUE: &str = "hf_mcpclisecretTOKEN0123456789";

/// The scripted MCP server, built beside `safeformers` (the workspace's tests build every
/// binary; a lone `cargo test -p safeformers-cli` builds it here).
fn fake_server() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_safeformers")).with_file_name("fake-mcp-server");
    if !path.exists() {
        let target = path.parent().and_then(Path::parent).unwrap();
        let built = Command::new(env!("CARGO"))
            .args([
                "build",
                "-q",
                "-p",
                "safeformers-agents",
                "--features",
                "mcp",
            ])
            .args(["--bin", "fake-mcp-server"])
            .env("CARGO_TARGET_DIR", target)
            .status()
            .unwrap();
        assert!(built.success(), "building fake-mcp-server");
    }
    path
}

struct Setup {
    sandbox: Sandbox,
    lockfile: PathBuf,
    stdio: String,
}

impl Setup {
    fn new(label: &str) -> Setup {
        let sandbox = Sandbox::new(label);
        let lockfile = sandbox.root.join("safeformers.lock");
        let stdio = format!("'{}'", fake_server().display());
        Setup {
            sandbox,
            lockfile,
            stdio,
        }
    }

    /// `safeformers ARGS` with the server in `mode`, `HF_TOKEN` set, stdin not a terminal.
    fn run(&self, mode: &str, args: &[&str]) -> Output {
        let cache = self.sandbox.root.join("cache");
        let mut command = self.sandbox.safeformers(&cache, "http://127.0.0.1:9");
        command
            .env("FAKE_MCP_MODE", mode)
            .env("HF_TOKEN", HF_TOKEN_VALUE);
        run(command, args)
    }

    /// `mcp SUBCOMMAND --stdio FAKE --env FAKE_MCP_MODE --lockfile L ARGS`.
    fn mcp(&self, mode: &str, subcommand: &str, args: &[&str]) -> Output {
        let mut all = vec![
            "mcp",
            subcommand,
            "--stdio",
            &self.stdio,
            "--env",
            "FAKE_MCP_MODE",
            "--lockfile",
            self.lockfile.to_str().unwrap(),
        ];
        all.extend_from_slice(args);
        self.run(mode, &all)
    }

    /// The tools `mcp list --json` shows: name to (status, definition hash).
    fn listed(&self, mode: &str) -> Vec<(String, String, String)> {
        let output = self.mcp(mode, "list", &["--json"]);
        assert_code(&output, 0, "mcp list --json");
        let listed: Value = serde_json::from_str(&stdout(&output)).unwrap();
        listed["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|tool| {
                let field = |name: &str| tool[name].as_str().unwrap().to_owned();
                (field("name"), field("status"), field("definition_sha256"))
            })
            .collect()
    }
}

#[test]
fn an_unconsented_server_is_never_started() {
    let setup = Setup::new("mcp-consent");
    let marker = setup.sandbox.root.join("started");
    let stdio = format!("{} --marker '{}'", setup.stdio, marker.display());
    let lockfile = setup.lockfile.to_str().unwrap();
    let refused = setup.run(
        "base",
        &["mcp", "list", "--stdio", &stdio, "--lockfile", lockfile],
    );
    assert_code(&refused, 3, "mcp list without consent");
    let stderr = common::stderr(&refused);
    assert!(
        stderr.contains("--marker"),
        "the command line is shown: {stderr}"
    );
    assert!(stderr.contains("--yes-start"), "{stderr}");
    assert!(!marker.exists(), "a server was started without consent");
    // A bad command line is a usage error before anything starts.
    let unclosed = setup.run("base", &["mcp", "list", "--stdio", "'fake"]);
    assert_code(&unclosed, 2, "unclosed quote");
    assert!(!marker.exists());
    let started = setup.run(
        "base",
        &[
            "mcp",
            "list",
            "--stdio",
            &stdio,
            "--lockfile",
            lockfile,
            "--yes-start",
        ],
    );
    assert_code(&started, 0, "mcp list --yes-start");
    assert!(marker.exists());
}

#[test]
fn approvals_are_pinned_and_a_rug_pull_is_blocked_with_its_diff() {
    let setup = Setup::new("mcp-pin");
    let first = setup.mcp("base", "list", &["--yes-start"]);
    assert_code(&first, 0, "mcp list");
    let shown = stdout(&first);
    assert!(
        shown.contains("[new] echo") && shown.contains("Echoes its text."),
        "{shown}"
    );
    let echo = setup.hash_of_started("base", "echo");

    let stale = setup.mcp(
        "base",
        "approve",
        &["--yes-start", "--tool", &format!("echo@{}", "0".repeat(64))],
    );
    assert_code(&stale, 3, "approve a hash that was never shown");
    let approved = setup.mcp(
        "base",
        "approve",
        &["--yes-start", "--tool", &format!("echo@{echo}")],
    );
    assert_code(&approved, 0, "mcp approve");
    let lock = std::fs::read_to_string(&setup.lockfile).unwrap();
    assert!(
        lock.contains("[[mcp_tool]]") && lock.contains(&echo),
        "{lock}"
    );
    assert!(lock.contains("ask = true"), "{lock}");

    // Approved on record for this exact command line: it starts without --yes-start.
    let statuses = setup.listed("base");
    assert!(statuses.contains(&("echo".into(), "approved".into(), echo.clone())));
    assert!(
        statuses
            .iter()
            .any(|(name, status, _)| name == "env" && status == "new")
    );

    // The server now sends another description: blocked, the diff shown with the hidden
    // character made visible.
    let pulled = setup.mcp("changed-description", "list", &[]);
    assert_code(&pulled, 0, "mcp list after the change");
    let shown = stdout(&pulled);
    assert!(shown.contains("[changed] echo"), "{shown}");
    assert!(
        shown.contains("+   Echoes its text. <IMPORTANT>"),
        "{shown}"
    );
    assert!(shown.contains("\\u{200b}"), "{shown}");
    assert!(!shown.contains('\u{200b}'), "{shown}");
    let (_, status, _) = setup
        .listed("changed-description")
        .into_iter()
        .find(|(name, ..)| name == "echo")
        .unwrap();
    assert_eq!(status, "changed");
}

impl Setup {
    /// The definition hash `mcp list --json --yes-start` shows for `tool`.
    fn hash_of_started(&self, mode: &str, tool: &str) -> String {
        let output = self.mcp(mode, "list", &["--json", "--yes-start"]);
        assert_code(&output, 0, "mcp list --json --yes-start");
        let listed: Value = serde_json::from_str(&stdout(&output)).unwrap();
        let found = listed["tools"]
            .as_array()
            .unwrap()
            .iter()
            .find(|entry| entry["name"] == tool)
            .unwrap();
        found["definition_sha256"].as_str().unwrap().to_owned()
    }

    /// `agent --endpoint SCRIPTED --mcp-stdio FAKE ... TASK`, the endpoint replaying `replies`;
    /// the output and what the endpoint received.
    fn agent(&self, mode: &str, replies: Vec<CannedResponse>, extra: &[&str]) -> AgentRun {
        let server = ScriptedServer::start(replies);
        let endpoint = format!("{}/v1", server.url());
        let mut args = vec![
            "agent",
            "--endpoint",
            &endpoint,
            "--api-model",
            "scripted",
            "--mcp-stdio",
            &self.stdio,
            "--mcp-env",
            "FAKE_MCP_MODE",
            "--lockfile",
            self.lockfile.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        args.push("Echo hi.");
        let output = self.run(mode, &args);
        AgentRun {
            output,
            requests: server.requests(),
        }
    }
}

struct AgentRun {
    output: Output,
    requests: Vec<RecordedRequest>,
}

impl AgentRun {
    fn offered(&self) -> Vec<String> {
        let body: Value = serde_json::from_slice(&self.requests[0].body).unwrap();
        body["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|tool| tool["function"]["name"].as_str().unwrap().to_owned())
            .collect()
    }

    /// The last `tool` message the model was sent.
    fn observation(&self) -> String {
        let last = self.requests.last().unwrap();
        let body: Value = serde_json::from_slice(&last.body).unwrap();
        let messages = body["messages"].as_array().unwrap();
        let found = messages.iter().rev().find(|m| m["role"] == "tool").unwrap();
        found["content"].as_str().unwrap().to_owned()
    }
}

fn reply(name: &str, arguments: Value) -> CannedResponse {
    let message = json!({"role": "assistant", "tool_calls": [
        {"id": "call_1", "type": "function",
         "function": {"name": name, "arguments": arguments.to_string()}}]});
    CannedResponse::json(
        json!({"id": "c", "object": "chat.completion", "created": 0, "model": "scripted",
               "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}]})
        .to_string(),
    )
}

fn call_then_answer(tool: &str, arguments: Value) -> Vec<CannedResponse> {
    vec![
        reply(tool, arguments),
        reply("final_answer", json!({"answer": "done"})),
    ]
}

#[test]
fn the_agent_offers_approved_mcp_tools_and_asks_before_each_call() {
    let setup = Setup::new("mcp-agent");
    let echo = setup.hash_of_started("base", "echo");
    let env = setup.hash_of_started("base", "env");
    let approved = setup.mcp(
        "base",
        "approve",
        &[
            "--yes-start",
            "--tool",
            &format!("echo@{echo}"),
            "--tool",
            &format!("env@{env}"),
        ],
    );
    assert_code(&approved, 0, "mcp approve");

    // Every call asks by default; off a terminal it is refused unless --yes-to names the tool.
    let refused = setup.agent("base", call_then_answer("echo", json!({"text": "hi"})), &[]);
    assert_code(&refused.output, 0, "agent");
    assert_eq!(refused.offered(), ["echo", "env", "final_answer"]);
    assert!(
        refused.observation().contains("did not approve"),
        "{}",
        refused.observation()
    );
    let echoed = setup.agent(
        "base",
        call_then_answer("echo", json!({"text": "hi"})),
        &["--yes-to", "echo"],
    );
    assert_code(&echoed.output, 0, "agent --yes-to echo");
    assert!(
        echoed.observation().ends_with("hi"),
        "{}",
        echoed.observation()
    );
    let descriptions: Value = serde_json::from_slice(&echoed.requests[0].body).unwrap();
    let description = descriptions["tools"][0]["function"]["description"]
        .as_str()
        .unwrap();
    assert!(
        description.starts_with("[MCP: runs outside the sandbox]"),
        "{description}"
    );

    // The server's environment holds no Hub token.
    let environment = setup.agent(
        "base",
        call_then_answer("env", json!({})),
        &["--yes-to", "env"],
    );
    assert_code(&environment.output, 0, "agent env");
    let observed = environment.observation();
    assert!(observed.contains("FAKE_MCP_MODE"), "{observed}");
    assert!(
        !observed.contains(HF_TOKEN_VALUE) && !observed.contains("HF_TOKEN"),
        "{observed}"
    );

    // Rug pull: echo changed after approval. It is not offered, the diff is on stderr, and the
    // model's call of it is refused.
    let pulled = setup.agent(
        "changed-description",
        call_then_answer("echo", json!({"text": "hi"})),
        &["--yes-to", "echo"],
    );
    assert_code(&pulled.output, 0, "agent after the change");
    assert_eq!(pulled.offered(), ["env", "final_answer"]);
    let stderr = common::stderr(&pulled.output);
    assert!(stderr.contains("changed since it was approved"), "{stderr}");
    assert!(stderr.contains("<IMPORTANT>"), "{stderr}");
    assert!(
        pulled.observation().contains("there is no tool"),
        "{}",
        pulled.observation()
    );
}
