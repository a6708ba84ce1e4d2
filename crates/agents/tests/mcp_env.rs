//! A stdio MCP server runs in a scrubbed environment: `PATH` and the granted variables, never
//! `HF_TOKEN` or API keys that the user's shell holds (threat T12).
//!
//! Alone in its test binary: it sets variables in its own environment, which is sound only
//! while no other thread reads the environment.
#![cfg(feature = "mcp")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
#![allow(unsafe_code)]

use std::collections::BTreeSet;
use std::time::Duration;

use safeformers_agents::mcp::{Consent, McpClient, McpLimits, McpLock, McpServerSpec};
use serde_json::{Value, json};

struct Yes;

impl Consent for Yes {
    fn allow_start(&self, _: &str) -> bool {
        true
    }
}

#[test]
fn the_server_sees_path_and_the_granted_variables_only() {
    const SECRET: &str = "hf_canary_never_to_be_seen";
    // SAFETY: the only test of this binary, run before any runtime or child exists: no other
    // thread reads the environment while it is written.
    unsafe {
        std::env::set_var("HF_TOKEN", SECRET);
        std::env::set_var("OPENAI_API_KEY", SECRET);
    }
    let spec = McpServerSpec::Stdio {
        command: vec![env!("CARGO_BIN_EXE_fake-mcp-server").to_owned()],
        env: vec![("GRANTED_VAR".to_owned(), "granted".to_owned())],
    };
    let limits = McpLimits {
        connect_timeout: Duration::from_secs(30),
        call_timeout: Duration::from_secs(30),
        ..McpLimits::default()
    };
    let mut client = McpClient::connect(&spec, &Yes, McpLock::default(), limits).unwrap();
    let hash = client
        .tools()
        .iter()
        .find(|t| t.definition.name == "env")
        .unwrap();
    let hash = hash.definition_hash.clone();
    client.approve("env", &hash, false).unwrap();
    let reported = client.call("env", &json!({})).unwrap();
    assert!(!reported.contains(SECRET), "{reported}");
    let env: serde_json::Map<String, Value> = serde_json::from_str(&reported).unwrap();
    let names: BTreeSet<&str> = env.keys().map(String::as_str).collect();
    assert_eq!(names, BTreeSet::from(["GRANTED_VAR", "PATH"]), "{reported}");
    assert_eq!(env["GRANTED_VAR"], "granted");
    assert_eq!(env["PATH"].as_str(), std::env::var("PATH").ok().as_deref());
}
