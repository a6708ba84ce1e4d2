//! The sandbox against the threats of `shared/research/agents-sandbox.md` §8 (T1–T4, T11, T13),
//! through the public API, with the guest tools of `test-tools/` (committed in `tests/tools/`,
//! rebuilt by `test-tools/build.sh`). One test binary: each links wasmtime, so one link, not six.
//!
//! Every call goes through [`call`], which fails the test if the sandbox has not answered
//! within the call's wall limit plus a generous margin: no test can hang.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

mod t01_files;
mod t02_network;
mod t03_cpu;
mod t04_memory;
mod t11_compiled_code;
mod t13_results;

use std::path::PathBuf;
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use safeformers_sandbox::{CallOutput, CompiledTool, Grants, Limits, Sandbox, SandboxError};

/// The sandbox most tests share (one engine, one ticker, a scratch cache dir).
pub fn sandbox() -> Arc<Sandbox> {
    static SANDBOX: OnceLock<Arc<Sandbox>> = OnceLock::new();
    SANDBOX
        .get_or_init(|| {
            let cache = safeformers_testkit::scratch_dir("sandbox-cache");
            Arc::new(Sandbox::new(Some(cache)).expect("the sandbox starts"))
        })
        .clone()
}

/// A sandbox that lets granted hosts resolve to loopback (its own engine and cache dir): for the
/// network tests that need a server to reach, which can only be on this machine.
pub fn private_network_sandbox() -> Arc<Sandbox> {
    static SANDBOX: OnceLock<Arc<Sandbox>> = OnceLock::new();
    SANDBOX
        .get_or_init(|| {
            let cache = safeformers_testkit::scratch_dir("sandbox-private-network-cache");
            let sandbox = Sandbox::new(Some(cache)).expect("the sandbox starts");
            Arc::new(sandbox.with_private_network_allowed())
        })
        .clone()
}

/// The committed bytes of test tool `name`.
pub fn tool_bytes(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/tools/{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|error| {
        panic!(
            "{}: {error}; build the test tools with crates/sandbox/test-tools/build.sh",
            path.display()
        )
    })
}

/// Test tool `name`, compiled by the shared sandbox.
pub fn tool(name: &str) -> CompiledTool {
    sandbox()
        .compile(&tool_bytes(name))
        .unwrap_or_else(|error| panic!("{name}.wasm compiles: {error}"))
}

/// Limits with a short wall clock, so a test that goes wrong fails fast.
pub fn quick_limits() -> Limits {
    Limits {
        wall: Duration::from_secs(5),
        ..Limits::DEFAULT
    }
}

/// Calls `tool` on another thread and waits at most its wall limit plus 10 s: a sandbox that
/// does not stop a call fails the test instead of hanging it.
pub fn call(
    sandbox: &Arc<Sandbox>,
    tool: &CompiledTool,
    grants: &Grants,
    limits: &Limits,
    arguments: &str,
) -> Result<CallOutput, SandboxError> {
    let (sender, receiver) = std::sync::mpsc::channel();
    let (sandbox, tool, grants, limits, arguments) = (
        sandbox.clone(),
        tool.clone(),
        grants.clone(),
        *limits,
        arguments.to_owned(),
    );
    std::thread::spawn(move || {
        let _ = sender.send(sandbox.call(&tool, &grants, &limits, &arguments));
    });
    match receiver.recv_timeout(limits.wall + Duration::from_secs(10)) {
        Ok(result) => result,
        Err(RecvTimeoutError::Timeout) => panic!("the sandbox did not stop the call"),
        Err(RecvTimeoutError::Disconnected) => panic!("the calling thread panicked"),
    }
}

/// A JSON object of one string field (the test tools' argument format).
pub fn json(key: &str, value: &str) -> String {
    let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
    format!("{{\"{key}\": \"{escaped}\"}}")
}

/// Every byte the call produced (result text, stdout, stderr, error message), for checks
/// that a secret never comes out.
pub fn everything(outcome: &Result<CallOutput, SandboxError>) -> Vec<u8> {
    match outcome {
        Ok(output) => {
            let mut all = match &output.result {
                Ok(text) | Err(text) => text.clone().into_bytes(),
            };
            all.extend_from_slice(&output.stdout);
            all.extend_from_slice(&output.stderr);
            all
        }
        Err(error) => error.to_string().into_bytes(),
    }
}

/// The sandbox still works: an echo call round-trips.
pub fn assert_healthy() {
    let output = call(
        &sandbox(),
        &tool("echo"),
        &Grants::default(),
        &quick_limits(),
        "ping",
    )
    .expect("echo runs");
    assert_eq!(output.result, Ok("ping".to_owned()));
}

#[test]
fn echo_returns_its_arguments_and_its_errors() {
    let echo = tool("echo");
    let output = call(
        &sandbox(),
        &echo,
        &Grants::default(),
        &quick_limits(),
        "{\"a\": 1}",
    )
    .unwrap();
    assert_eq!(output.result, Ok("{\"a\": 1}".to_owned()));
    assert!(output.stdout.is_empty() && output.stderr.is_empty());
    let output = call(
        &sandbox(),
        &echo,
        &Grants::default(),
        &quick_limits(),
        &json("err", "boom"),
    );
    assert_eq!(output.unwrap().result, Err("boom".to_owned()));
}

#[test]
fn limits_above_the_hard_maximum_are_refused_before_anything_runs() {
    let too_much = Limits {
        memory_bytes: Limits::HARD_MAX.memory_bytes + 1,
        ..Limits::DEFAULT
    };
    let outcome = call(
        &sandbox(),
        &tool("echo"),
        &Grants::default(),
        &too_much,
        "x",
    );
    assert!(
        matches!(
            outcome,
            Err(SandboxError::LimitAboveMaximum {
                limit: "memory_bytes",
                ..
            })
        ),
        "{outcome:?}"
    );
    let too_long = Limits {
        wall: Duration::from_secs(61),
        ..Limits::DEFAULT
    };
    assert!(too_long.check().is_err());
    assert!(Limits::DEFAULT.check().is_ok() && Limits::HARD_MAX.check().is_ok());
}
