//! Approved tools run in the WebAssembly sandbox: a call's arguments are checked against the
//! tool's schema, its verified bytes compiled (or taken from the compiled cache), and the call
//! made under exactly the recorded grants and the limits in force; the result is parsed as
//! untrusted JSON and checked against the tool's output schema.

use std::time::Duration;

use safeformers_sandbox::{FsGrant, Grants, Limits, Sandbox, SandboxError};
use serde_json::Value;

use crate::agent::{ToolDefinition, Toolbox};
use crate::approval::ApprovedTool;
use crate::grants::Grant;
use crate::manifest::FsAccess;
use crate::schema::CompiledSchema;
use crate::visible::make_visible;

/// Why a sandboxed call gave no result.
#[derive(Debug, thiserror::Error)]
pub enum ToolRunError {
    /// The arguments fail the tool's `parameters` schema.
    #[error("the arguments do not match the tool's schema: {}", .0.join("; "))]
    Arguments(Vec<String>),
    /// The sandbox stopped or refused the call (fuel, deadline, memory, a trap, an oversized
    /// result, a component that does not fit the world).
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// The tool returned its `err` result.
    #[error("the tool returned an error: {0}")]
    Tool(String),
    /// The tool's result is not JSON.
    #[error("the tool's result is not valid JSON: {0}")]
    InvalidResult(String),
    /// The result fails the tool's `output_schema`.
    #[error("the tool's result does not match its output schema: {}", .0.join("; "))]
    ResultSchema(Vec<String>),
    /// The tool's output schema does not compile.
    #[error("the tool's output schema: {0}")]
    OutputSchema(String),
}

/// Runs approved tools, each call in a fresh sandbox store.
#[derive(Debug)]
pub struct ToolRunner {
    sandbox: Sandbox,
}

impl ToolRunner {
    /// A runner whose compiled code is cached in the default folder
    /// (`$XDG_CACHE_HOME/safeformers/wasm`).
    pub fn new() -> Result<ToolRunner, ToolRunError> {
        Ok(ToolRunner {
            sandbox: Sandbox::new(None)?,
        })
    }

    /// Calls `tool` with `arguments` and returns its result.
    pub fn call(&self, tool: &ApprovedTool, arguments: &Value) -> Result<Value, ToolRunError> {
        tool.validate_arguments(arguments)
            .map_err(ToolRunError::Arguments)?;
        // The bytes whose sha256 was checked against the lockfile, never the file re-read.
        let compiled = self.sandbox.compile(&tool.package.wasm)?;
        let output = self.sandbox.call(
            &compiled,
            &sandbox_grants(&tool.grants),
            &sandbox_limits(tool),
            &arguments.to_string(),
        )?;
        let text = output
            .result
            .map_err(|message| ToolRunError::Tool(make_visible(&shortened(&message))))?;
        // Untrusted data: serde_json bounds its own recursion; the size was bounded by the
        // sandbox's output limit.
        let result: Value = serde_json::from_str(&text)
            .map_err(|error| ToolRunError::InvalidResult(error.to_string()))?;
        if let Some(schema) = &tool.manifest().output_schema {
            let schema = CompiledSchema::compile(schema)
                .map_err(|error| ToolRunError::OutputSchema(error.to_string()))?;
            schema
                .validate(&result)
                .map_err(ToolRunError::ResultSchema)?;
        }
        Ok(result)
    }
}

/// The WASI grants of a tool: its folders at their guest paths, its environment variables with
/// the values this process has (a granted variable that is unset is simply absent), and its
/// network targets (reached over wasi:http only, at public addresses).
fn sandbox_grants(grants: &[Grant]) -> Grants {
    let mut sandbox = Grants::default();
    for grant in grants {
        match grant {
            Grant::Fs {
                guest,
                host,
                access,
            } => sandbox.fs.push(FsGrant {
                guest: guest.clone(),
                host: host.clone(),
                writable: *access == FsAccess::ReadWrite,
            }),
            Grant::Env(name) => {
                if let Ok(value) = std::env::var(name) {
                    sandbox.env.push((name.clone(), value));
                }
            }
            Grant::Net(target) => sandbox.net.push((target.host.clone(), target.port)),
        }
    }
    sandbox
}

/// The sandbox limits of the limits in force.
fn sandbox_limits(tool: &ApprovedTool) -> Limits {
    let limits = &tool.limits;
    let bytes = |value: u64| usize::try_from(value).unwrap_or(usize::MAX);
    Limits {
        fuel: limits.fuel,
        wall: Duration::from_millis(limits.wall_ms),
        memory_bytes: bytes(limits.memory_bytes),
        output_bytes: bytes(limits.output_bytes),
        stdio_bytes: Limits::DEFAULT.stdio_bytes,
        http_bytes: Limits::DEFAULT.http_bytes,
    }
}

/// At most 1000 characters of a tool's error text.
fn shortened(text: &str) -> String {
    let mut short: String = text.chars().take(1000).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    short
}

/// The tools of an agent run: approved packages, called in the sandbox.
#[derive(Debug)]
pub struct SandboxToolbox {
    tools: Vec<ApprovedTool>,
    runner: ToolRunner,
}

impl SandboxToolbox {
    /// A toolbox of `tools` (two tools of one name are refused by the agent).
    pub fn new(tools: Vec<ApprovedTool>, runner: ToolRunner) -> SandboxToolbox {
        SandboxToolbox { tools, runner }
    }

    fn tool(&self, name: &str) -> Option<&ApprovedTool> {
        self.tools.iter().find(|tool| tool.manifest().name == name)
    }
}

impl Toolbox for SandboxToolbox {
    fn definitions(&self) -> Vec<ToolDefinition> {
        self.tools
            .iter()
            .map(|tool| ToolDefinition {
                name: tool.manifest().name.clone(),
                description: tool.manifest().description.clone(),
                parameters: tool.manifest().parameters.clone(),
            })
            .collect()
    }

    fn validate(&self, name: &str, arguments: &Value) -> Result<(), String> {
        let tool = self.tool(name).ok_or_else(|| format!("no tool `{name}`"))?;
        tool.validate_arguments(arguments)
            .map_err(|problems| problems.join("; "))
    }

    /// Tools approved with `--ask` (`ask = true` in the lockfile) ask on every call; an unknown
    /// name asks too (the agent refuses it before that).
    fn needs_approval(&self, name: &str) -> bool {
        self.tool(name).is_none_or(|tool| tool.entry.ask)
    }

    fn call(&self, name: &str, arguments: &Value) -> Result<String, String> {
        let tool = self.tool(name).ok_or_else(|| format!("no tool `{name}`"))?;
        self.runner
            .call(tool, arguments)
            .map(|result| result.to_string())
            .map_err(|error| error.to_string())
    }
}
