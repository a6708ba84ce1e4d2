//! `word_count`: the lines, words and characters of `text`, or of the file `path` inside the
//! folder the user granted at `/data` (read-only). Words are runs of non-whitespace, as `wc -w`
//! counts them. The tool can reach nothing else: no other files, no network, no environment.

use serde_json::{Value, json};

wit_bindgen::generate!({ path: "../../../crates/sandbox/wit/tool.wit", world: "tool" });

/// Where the granted folder appears inside the sandbox.
const DATA: &str = "/data";

struct Tool;
export!(Tool);

impl Guest for Tool {
    fn call(arguments: String) -> Result<String, String> {
        let arguments: Value =
            serde_json::from_str(&arguments).map_err(|error| format!("arguments: {error}"))?;
        let text = match (arguments.get("text"), arguments.get("path")) {
            (Some(Value::String(text)), None) => text.clone(),
            (None, Some(Value::String(path))) => read_granted(path)?,
            _ => return Err("give either `text` or `path` (a file under /data)".into()),
        };
        let counts = json!({
            "lines": text.lines().count(),
            "words": text.split_whitespace().count(),
            "characters": text.chars().count(),
        });
        Ok(counts.to_string())
    }
}

/// The text of `path`, relative to `/data` or absolute under it. The sandbox, not this check,
/// is what keeps the tool inside the grant; this only gives a clear error.
fn read_granted(path: &str) -> Result<String, String> {
    let full = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{DATA}/{path}")
    };
    if !full.starts_with(&format!("{DATA}/")) {
        return Err(format!("{path}: only files under {DATA} can be read"));
    }
    std::fs::read_to_string(&full).map_err(|error| format!("{path}: {error}"))
}
