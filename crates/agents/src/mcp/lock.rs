//! Approved MCP tool definitions, as `[[mcp_tool]]` entries of `safeformers.lock`.

pub use safeformers_hub::lockfile::LockedMcpTool as McpLockEntry;
use safeformers_hub::lockfile::Lockfile;

use super::definition::McpDefinition;

/// The MCP tools the user approved, each pinned to its server and definition hash.
///
/// Trust on first use, made explicit: a tool is usable only while the server sends exactly the
/// definition that was approved. It is read from the lockfile ([`McpLock::from_lockfile`]);
/// [`super::McpClient::approve`] adds to it, and [`McpLock::write_into`] puts it back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct McpLock {
    /// One entry per (server, tool).
    pub tools: Vec<McpLockEntry>,
}

impl McpLock {
    /// The MCP approvals recorded in `lockfile`.
    pub fn from_lockfile(lockfile: &Lockfile) -> Self {
        Self {
            tools: lockfile.mcp_tools().to_vec(),
        }
    }

    /// Records every approval of this lock in `lockfile` (replacing older ones of the same
    /// tools), leaving its other entries as they are.
    pub fn write_into(&self, lockfile: &mut Lockfile) {
        for entry in &self.tools {
            lockfile.insert_mcp_tool(entry.clone());
        }
    }

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

/// The entry approving `definition` on `server`; `ask`: each call also needs the user's yes.
pub fn approving(server: &str, definition: &McpDefinition, ask: bool) -> McpLockEntry {
    McpLockEntry {
        server: server.to_owned(),
        tool: definition.name.clone(),
        definition_sha256: definition.hash(),
        definition: definition.canonical_json(),
        ask,
    }
}

/// The definition recorded in `entry`, when it parses and matches the recorded hash (a lockfile
/// edited by hand may hold a definition that does not).
pub fn approved_definition(entry: &McpLockEntry) -> Option<McpDefinition> {
    let definition: McpDefinition = serde_json::from_str(&entry.definition).ok()?;
    (definition.hash() == entry.definition_sha256).then_some(definition)
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
        lock.record(approving("stdio:a", &echo("one"), true));
        lock.record(approving("stdio:b", &echo("one"), true));
        lock.record(approving("stdio:a", &echo("two"), false));
        assert_eq!(lock.tools.len(), 2);
        let entry = lock.entry("stdio:a", "echo").cloned();
        assert_eq!(
            entry.map(|e| (e.definition_sha256, e.ask)),
            Some((echo("two").hash(), false))
        );
        assert!(lock.revoke("stdio:a", "echo"));
        assert!(!lock.revoke("stdio:a", "echo"));
        assert!(lock.entry("stdio:a", "echo").is_none());
    }

    #[test]
    fn approvals_round_trip_through_the_lockfile() {
        let mut lock = McpLock::default();
        lock.record(approving("stdio:a", &echo("one"), true));
        let mut lockfile = Lockfile::new();
        lock.write_into(&mut lockfile);
        let text = lockfile.to_toml();
        let reread = Lockfile::parse(&text, std::path::Path::new("safeformers.lock")).unwrap();
        assert_eq!(McpLock::from_lockfile(&reread), lock);
    }

    #[test]
    fn a_recorded_definition_not_matching_its_hash_is_not_shown() {
        let mut entry = approving("s", &echo("one"), true);
        assert_eq!(approved_definition(&entry), Some(echo("one")));
        entry.definition = echo("edited").canonical_json();
        assert_eq!(approved_definition(&entry), None);
    }
}
