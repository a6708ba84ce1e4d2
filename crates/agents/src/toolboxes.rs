//! Several toolboxes offered to one agent as one: sandboxed packages beside MCP servers.

use serde_json::Value;

use crate::agent::{ToolDefinition, Toolbox};

/// The tools of several toolboxes, each call routed to the toolbox that offered the tool.
///
/// Which toolbox owns which name is fixed when it is made, from each toolbox's definitions
/// (read once, as the agent reads them): a toolbox cannot later take over another's name. A
/// name offered by two toolboxes is kept twice in [`Toolbox::definitions`], so that the agent
/// refuses the run ([`crate::AgentError::InvalidToolbox`]) rather than pick one.
pub struct CombinedToolbox {
    parts: Vec<Box<dyn Toolbox>>,
    definitions: Vec<ToolDefinition>,
    owners: Vec<(String, usize)>,
}

impl std::fmt::Debug for CombinedToolbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CombinedToolbox")
            .field("definitions", &self.definitions)
            .finish_non_exhaustive()
    }
}

impl CombinedToolbox {
    /// One toolbox of `parts`, in order.
    pub fn new(parts: Vec<Box<dyn Toolbox>>) -> Self {
        let mut definitions = Vec::new();
        let mut owners = Vec::new();
        for (index, part) in parts.iter().enumerate() {
            for definition in part.definitions() {
                owners.push((definition.name.clone(), index));
                definitions.push(definition);
            }
        }
        Self {
            parts,
            definitions,
            owners,
        }
    }

    /// The toolbox that offered `name`, if exactly one did.
    fn owner(&self, name: &str) -> Option<&dyn Toolbox> {
        let mut found = self.owners.iter().filter(|(owned, _)| owned == name);
        match (found.next(), found.next()) {
            (Some((_, index)), None) => self.parts.get(*index).map(Box::as_ref),
            _ => None,
        }
    }
}

impl Toolbox for CombinedToolbox {
    fn definitions(&self) -> Vec<ToolDefinition> {
        self.definitions.clone()
    }

    fn validate(&self, name: &str, arguments: &Value) -> Result<(), String> {
        match self.owner(name) {
            Some(part) => part.validate(name, arguments),
            None => Err(format!("there is no tool {name:?}")),
        }
    }

    fn needs_approval(&self, name: &str) -> bool {
        self.owner(name)
            .is_none_or(|part| part.needs_approval(name))
    }

    fn call(&self, name: &str, arguments: &Value) -> Result<String, String> {
        match self.owner(name) {
            Some(part) => part.call(name, arguments),
            None => Err(format!("there is no tool {name:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Tools named `names`; each call answers with its toolbox's label.
    struct Labelled {
        label: &'static str,
        names: Vec<&'static str>,
        ask: bool,
    }

    impl Toolbox for Labelled {
        fn definitions(&self) -> Vec<ToolDefinition> {
            self.names
                .iter()
                .map(|name| ToolDefinition {
                    name: (*name).into(),
                    description: String::new(),
                    parameters: json!({"type": "object"}),
                })
                .collect()
        }
        fn validate(&self, _: &str, _: &Value) -> Result<(), String> {
            Ok(())
        }
        fn needs_approval(&self, _: &str) -> bool {
            self.ask
        }
        fn call(&self, name: &str, _: &Value) -> Result<String, String> {
            Ok(format!("{}:{name}", self.label))
        }
    }

    fn labelled(label: &'static str, names: &[&'static str], ask: bool) -> Box<dyn Toolbox> {
        Box::new(Labelled {
            label,
            names: names.to_vec(),
            ask,
        })
    }

    #[test]
    fn calls_go_to_the_toolbox_that_offered_the_tool() {
        let combined = CombinedToolbox::new(vec![
            labelled("wasm", &["count"], false),
            labelled("mcp", &["search"], true),
        ]);
        let names: Vec<String> = combined.definitions().into_iter().map(|d| d.name).collect();
        assert_eq!(names, ["count", "search"]);
        assert_eq!(combined.call("count", &json!({})).unwrap(), "wasm:count");
        assert_eq!(combined.call("search", &json!({})).unwrap(), "mcp:search");
        assert!(!combined.needs_approval("count"));
        assert!(combined.needs_approval("search"));
        assert!(combined.call("other", &json!({})).is_err());
        assert!(combined.needs_approval("other"));
    }

    #[test]
    fn a_name_offered_twice_is_offered_twice_and_never_called() {
        let combined = CombinedToolbox::new(vec![
            labelled("wasm", &["search"], false),
            labelled("mcp", &["search"], true),
        ]);
        assert_eq!(combined.definitions().len(), 2);
        assert!(combined.call("search", &json!({})).is_err());
        assert!(combined.validate("search", &json!({})).is_err());
    }
}
