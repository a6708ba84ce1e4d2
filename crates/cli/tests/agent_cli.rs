//! `safeformers agent`: the answer on stdout (or the run as JSON), its exit codes, the API key
//! sent to the endpoint alone and `HF_TOKEN` never, and the loop end to end with the local
//! engine (chat templates in the isolated renderer) and with our own `safeformers serve`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod serve_support;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use safeformers_testkit::scripted_http::{CannedResponse, ScriptedServer};

const HF_TOKEN_VALUE: &str = "hf_agentclisecretTOKEN0123456789";
const API_KEY: &str = "sk-agent-cli-test-key-0123456789";

/// Runs `safeformers agent ARGS` with no Hub environment but `HF_TOKEN` set, the API key in
/// `AGENT_TEST_KEY`, stdin empty (not a terminal), at most two minutes.
fn agent(args: &[&str]) -> Output {
    let sandbox = safeformers_testkit::scratch_dir("agent-cli");
    let mut command = Command::new(env!("CARGO_BIN_EXE_safeformers"));
    safeformers_testkit::without_hub_environment(&mut command)
        .arg("agent")
        .args(args)
        .env("HF_HOME", sandbox.join("hf-home"))
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_TOKEN", HF_TOKEN_VALUE)
        .env("AGENT_TEST_KEY", API_KEY)
        .current_dir(&sandbox)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("safeformers runs");
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("safeformers agent {args:?} did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    let _ = std::fs::remove_dir_all(&sandbox);
    output
}

fn completion(message: Value) -> CannedResponse {
    CannedResponse::json(
        json!({"id": "c", "object": "chat.completion", "created": 0, "model": "scripted",
               "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]})
        .to_string(),
    )
}

fn final_answer(answer: &str) -> CannedResponse {
    let arguments = json!({"answer": answer}).to_string();
    completion(json!({"role": "assistant", "tool_calls": [
        {"id": "f", "type": "function",
         "function": {"name": "final_answer", "arguments": arguments}}]}))
}

fn text(content: &str) -> CannedResponse {
    completion(json!({"role": "assistant", "content": content}))
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `final_answer` from the endpoint: the answer on stdout, exit 0; the key went to the
/// endpoint as a Bearer token, `HF_TOKEN` nowhere.
#[test]
fn the_answer_is_printed_and_only_the_api_key_is_sent() {
    let server = ScriptedServer::start(vec![final_answer("Paris is sunny.")]);
    let endpoint = format!("{}/v1", server.url());
    let output = agent(&[
        "--endpoint",
        &endpoint,
        "--api-model",
        "scripted",
        "--api-key-env",
        "AGENT_TEST_KEY",
        "What is the weather in Paris?",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stdout(&output), "Paris is sunny.\n");
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.path, "/v1/chat/completions");
    assert_eq!(
        request.header("authorization"),
        Some(format!("Bearer {API_KEY}").as_str())
    );
    let raw = request.raw_text();
    assert!(!raw.contains("hf_agentcli"), "HF_TOKEN was sent: {raw}");
    let body: Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(body["tools"][0]["function"]["name"], "final_answer");
    assert!(
        body["messages"][1]["content"]
            .as_str()
            .unwrap()
            .contains("What is the weather in Paris?")
    );
}

/// `--max-steps 1` without an answer: two model calls, the run as JSON on stdout (state
/// `max_steps`, the last call's text as the answer), exit 1.
#[test]
fn max_steps_prints_the_json_and_exits_1() {
    let server = ScriptedServer::start(vec![text("Let me think."), text("Probably sunny.")]);
    let endpoint = format!("{}/v1", server.url());
    let output = agent(&[
        "--endpoint",
        &endpoint,
        "--api-model",
        "scripted",
        "--max-steps",
        "1",
        "--json",
        "What is the weather in Paris?",
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let run: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(run["state"], "max_steps");
    assert_eq!(run["final_answer"], "Probably sunny.");
    assert_eq!(run["steps"].as_array().unwrap().len(), 2);
    assert!(
        run["steps"][0]["error"]
            .as_str()
            .unwrap()
            .contains("called no tool")
    );
    let mut keys: Vec<&String> = run.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["final_answer", "state", "steps"]);
    assert!(
        stderr(&output).contains("--max-steps 1"),
        "{}",
        stderr(&output)
    );
    assert_eq!(server.requests().len(), 2);
    assert!(
        server.requests()[0].header("authorization").is_none(),
        "no key was given"
    );
}

/// Bad input: a `--tool` that cannot run (no sandbox in this build, or not approved) is refused
/// before any model call; the Hub token as the API key, or both a model and an endpoint, exit 2.
#[test]
fn refusals_before_any_request() {
    let server = ScriptedServer::start(vec![final_answer("x")]);
    let endpoint = format!("{}/v1", server.url());
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let tool = format!("org/tool@{commit}");
    let output = agent(&["--endpoint", &endpoint, "--tool", &tool, "task"]);
    // Without the wasm feature: exit 1 saying how to build it; with it: the tool is not
    // approved in any lockfile, a policy refusal (exit 3). Either way, before any model call.
    let text = stderr(&output);
    match output.status.code() {
        Some(1) => assert!(text.contains("without the WebAssembly sandbox"), "{text}"),
        Some(3) => assert!(text.contains("org/tool"), "{text}"),
        other => panic!("exit {other:?}: {text}"),
    }

    let output = agent(&["--endpoint", &endpoint, "--api-key-env", "HF_TOKEN", "task"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("never sent"),
        "{}",
        stderr(&output)
    );

    let output = agent(&["--endpoint", &endpoint, "--model", "m", "task"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let output = agent(&["task"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));

    assert_eq!(server.connections(), 0, "no request was made");
}

/// The local engine on the rigged fixture (which answers anything with a `get_weather` call):
/// the call is made, refused (the agent has no such tool), and the error shown; the last call
/// without tools is the answer. Chat templates render in the isolated renderer.
#[test]
fn a_local_model_runs_the_loop() {
    let model = safeformers_testkit::repo_fixture("decoders/llama-tool-call");
    let output = agent(&[
        "--model",
        model.to_str().unwrap(),
        "--threads",
        "1",
        "--max-steps",
        "1",
        "--json",
        "What is the weather in Paris?",
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let run: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(run["state"], "max_steps");
    assert_eq!(
        run["steps"][0]["tool_calls"],
        json!([{"name": "get_weather", "arguments": {"city": "Paris"}}])
    );
    let error = run["steps"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("there is no tool \"get_weather\""),
        "{error}"
    );
    assert!(
        run["final_answer"]
            .as_str()
            .unwrap()
            .contains("<tool_call>")
    );
}

/// Our own `safeformers serve` as the endpoint (its only model found through `/v1/models`):
/// the agent's requests, tool messages included, are accepted, and the served model's Hermes
/// call comes back as an OpenAI tool call.
#[test]
fn safeformers_serve_is_an_endpoint() {
    let model = safeformers_testkit::repo_fixture("decoders/llama-tool-call");
    let server = serve_support::Server::start(&[
        "--model",
        model.to_str().unwrap(),
        "--served-name",
        "tool-model",
        "--threads",
        "1",
    ]);
    let endpoint = format!("{}/v1", server.url());
    let output = agent(&[
        "--endpoint",
        &endpoint,
        "--max-steps",
        "2",
        "--json",
        "What is the weather in Paris?",
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let run: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(run["state"], "max_steps", "{run}");
    for step in 0..2 {
        assert_eq!(
            run["steps"][step]["tool_calls"],
            json!([{"name": "get_weather", "arguments": {"city": "Paris"}}]),
            "{run}"
        );
    }
    assert_eq!(run["steps"].as_array().unwrap().len(), 3);
    assert!(
        run["steps"][2]["error"]
            .as_str()
            .unwrap()
            .contains("max_steps (2)")
    );
}
