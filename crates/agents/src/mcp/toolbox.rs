//! The approved tools of an MCP server, offered to an agent.
//!
//! [`Toolbox`] and [`ToolDefinition`] mirror the agent loop's own (`crate::agent`, written
//! alongside); at merge, [`McpToolbox`] implements that trait instead and these two go.

use std::sync::{Mutex, MutexGuard};

use serde_json::Value;

use super::McpClient;

/// Put before every MCP tool's description: the model, and whoever reads the transcript, are
/// told the tool is not sandboxed.
pub const OUTSIDE_SANDBOX: &str = "[MCP: runs outside the sandbox] ";

/// A tool as the model is offered it (mirrors the agent loop's `ToolDefinition`).
#[derive(Debug, Clone, PartialEq)]
pub struct ToolDefinition {
    /// Its name: 1 to 64 ASCII letters, digits, `_` or `-`.
    pub name: String,
    /// What it does, for the model.
    pub description: String,
    /// The JSON Schema of its arguments object.
    pub parameters: Value,
}

/// Tools an agent may call (mirrors the agent loop's `Toolbox`).
pub trait Toolbox {
    /// The tools offered.
    fn definitions(&self) -> Vec<ToolDefinition>;
    /// Checks `arguments` before a call; the error is shown to the model.
    fn validate(&self, name: &str, arguments: &Value) -> Result<(), String>;
    /// Whether each call of the tool needs the user's approval.
    fn needs_approval(&self, name: &str) -> bool;
    /// Runs the tool; its result, or the error shown to the model.
    fn call(&self, name: &str, arguments: &Value) -> Result<String, String>;
}

/// The approved tools of one MCP server.
///
/// Only tools whose definition is the approved one are offered, and only those whose name the
/// loop accepts (MCP also allows `.` and up to 128 characters). A tool that changes during the
/// session is refused from then on, with the reason as the model's observation.
#[derive(Debug)]
pub struct McpToolbox {
    client: Mutex<McpClient>,
    ask_every_call: bool,
}

impl McpToolbox {
    /// Offers the approved tools of `client`. Each call needs the user's approval
    /// ([`Toolbox::needs_approval`]) unless [`McpToolbox::without_asking`] says otherwise.
    pub fn new(client: McpClient) -> Self {
        Self {
            client: Mutex::new(client),
            ask_every_call: true,
        }
    }

    /// Calls run without asking the user each time (the tools were approved once).
    pub fn without_asking(mut self) -> Self {
        self.ask_every_call = false;
        self
    }

    /// The client back, e.g. to persist [`McpClient::lock`].
    pub fn into_client(self) -> McpClient {
        self.client
            .into_inner()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn client(&self) -> MutexGuard<'_, McpClient> {
        // A panic while holding the lock leaves the client as consistent as before the call:
        // every check is redone on the next one.
        self.client
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The agent loop's rule for tool names (OpenAI's).
fn offerable(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl Toolbox for McpToolbox {
    fn definitions(&self) -> Vec<ToolDefinition> {
        let client = self.client();
        client
            .tools()
            .iter()
            .filter(|tool| tool.is_approved() && offerable(&tool.definition.name))
            .map(|tool| ToolDefinition {
                name: tool.definition.name.clone(),
                description: format!("{OUTSIDE_SANDBOX}{}", tool.definition.description),
                parameters: tool.definition.input_schema.clone(),
            })
            .collect()
    }

    fn validate(&self, name: &str, arguments: &Value) -> Result<(), String> {
        if !offerable(name) {
            return Err(format!("there is no tool {name:?}"));
        }
        let client = self.client();
        match client.tools().iter().find(|t| t.definition.name == name) {
            None => Err(format!("there is no tool {name:?}")),
            Some(tool) if !tool.is_approved() => Err(format!(
                "the tool {name:?} is not approved in its current definition"
            )),
            Some(_) if !arguments.is_object() => {
                Err(format!("the arguments of {name:?} must be a JSON object"))
            }
            Some(_) => Ok(()),
        }
    }

    fn needs_approval(&self, _name: &str) -> bool {
        self.ask_every_call
    }

    fn call(&self, name: &str, arguments: &Value) -> Result<String, String> {
        if !offerable(name) {
            return Err(format!("there is no tool {name:?}"));
        }
        self.client()
            .call(name, arguments)
            .map_err(|error| error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_loop_rule() {
        assert!(offerable("read_file"));
        assert!(offerable("a-b"));
        assert!(!offerable("fs.read"));
        assert!(!offerable(""));
        assert!(!offerable(&"a".repeat(65)));
    }
}
