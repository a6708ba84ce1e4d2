//! The approved tools of an MCP server, offered to an agent.

use std::sync::{Mutex, MutexGuard};

use serde_json::Value;

use super::McpClient;
use crate::agent::{ToolDefinition, Toolbox};

/// Put before every MCP tool's description: the model, and whoever reads the transcript, are
/// told the tool is not sandboxed.
pub const OUTSIDE_SANDBOX: &str = "[MCP: runs outside the sandbox] ";

/// The approved tools of one MCP server.
///
/// Only tools whose definition is the approved one are offered, and only those whose name the
/// loop accepts (MCP also allows `.` and up to 128 characters). A tool that changes during the
/// session is refused from then on, with the reason as the model's observation. Each call of
/// a tool approved with `ask` (the default for MCP tools) needs the user's yes.
#[derive(Debug)]
pub struct McpToolbox {
    client: Mutex<McpClient>,
}

impl McpToolbox {
    /// Offers the approved tools of `client`.
    pub fn new(client: McpClient) -> Self {
        Self {
            client: Mutex::new(client),
        }
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

    /// As recorded with the approval; a tool without one (refused before this) asks.
    fn needs_approval(&self, name: &str) -> bool {
        let client = self.client();
        client
            .lock()
            .entry(client.server(), name)
            .is_none_or(|entry| entry.ask)
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
