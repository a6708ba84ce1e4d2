//! Approved MCP tool definitions: what the caller persists (in `safeformers.lock`).

use serde::{Deserialize, Serialize};

use super::definition::McpDefinition;

/// The MCP tools the user approved, each pinned to its server and definition hash.
///
/// Trust on first use, made explicit: a tool is usable only while the server sends exactly the
/// definition that was approved. The caller loads and stores it; [`super::McpClient`] reads it
/// and adds to it through [`super::McpClient::approve`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpLock {
    /// One entry per (server, tool).
    #[serde(default)]
    pub tools: Vec<McpLockEntry>,
}

/// One approved MCP tool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpLockEntry {
    /// The server's identity: [`super::McpServerSpec::identity`].
    pub server: String,
    /// The tool's name on that server.
    pub tool: String,
    /// [`super::definition_hash`] of the approved definition: the only thing approval checks.
    pub definition_hash: String,
    /// The approved definition as canonical JSON, kept to show what changed when the server
    /// later sends another one. Not trusted for approval: only `definition_hash` is.
    pub definition: String,
}

impl McpLock {
    /// The approval recorded for `tool` of `server`, if any.
    pub fn entry(&self, server: &str, tool: &str) -> Option<&McpLockEntry> {
        self.tools
            .iter()
            .find(|entry| entry.server == server && entry.tool == tool)
    }

    /// Records `entry`, replacing any earlier approval of the same (server, tool).
    pub fn record(&mut self, entry: McpLockEntry) {
        self.tools
            .retain(|old| !(old.server == entry.server && old.tool == entry.tool));
        self.tools.push(entry);
    }

    /// Removes the approval of `tool` of `server`; whether there was one.
    pub fn revoke(&mut self, server: &str, tool: &str) -> bool {
        let before = self.tools.len();
        self.tools
            .retain(|old| !(old.server == server && old.tool == tool));
        self.tools.len() != before
    }
}

impl McpLockEntry {
    /// The entry approving `definition` on `server`.
    pub fn approving(server: &str, definition: &McpDefinition) -> Self {
        Self {
            server: server.to_owned(),
            tool: definition.name.clone(),
            definition_hash: definition.hash(),
            definition: definition.canonical_json(),
        }
    }

    /// The recorded definition, when it parses and matches the recorded hash (a lockfile edited
    /// by hand may hold a definition that does not).
    pub fn approved_definition(&self) -> Option<McpDefinition> {
        let definition: McpDefinition = serde_json::from_str(&self.definition).ok()?;
        (definition.hash() == self.definition_hash).then_some(definition)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn echo(description: &str) -> McpDefinition {
        McpDefinition {
            name: "echo".into(),
            description: description.into(),
            input_schema: json!({"type": "object"}),
        }
    }

    #[test]
    fn record_replaces_and_revoke_removes() {
        let mut lock = McpLock::default();
        lock.record(McpLockEntry::approving("stdio:a", &echo("one")));
        lock.record(McpLockEntry::approving("stdio:b", &echo("one")));
        lock.record(McpLockEntry::approving("stdio:a", &echo("two")));
        assert_eq!(lock.tools.len(), 2);
        let entry = lock.entry("stdio:a", "echo").cloned();
        assert_eq!(entry.map(|e| e.definition_hash), Some(echo("two").hash()));
        assert!(lock.revoke("stdio:a", "echo"));
        assert!(!lock.revoke("stdio:a", "echo"));
        assert!(lock.entry("stdio:a", "echo").is_none());
    }

    #[test]
    fn unknown_fields_are_refused() {
        let text = r#"{"tools": [{"server": "s", "tool": "t", "definition_hash": "h",
            "definition": "{}", "granted": true}]}"#;
        assert!(serde_json::from_str::<McpLock>(text).is_err());
        assert!(serde_json::from_str::<McpLock>(r#"{"tools": [], "x": 1}"#).is_err());
    }

    #[test]
    fn a_recorded_definition_not_matching_its_hash_is_not_shown() {
        let mut entry = McpLockEntry::approving("s", &echo("one"));
        assert_eq!(entry.approved_definition(), Some(echo("one")));
        entry.definition = echo("edited").canonical_json();
        assert_eq!(entry.approved_definition(), None);
    }
}
