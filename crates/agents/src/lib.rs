//! Agents whose tools cannot touch the machine.
//!
//! A tool is a package (a Hub repo or a folder) holding `tool.json` (name, description, JSON
//! Schemas, requested capabilities and limits) and `tool.wasm` (a WebAssembly component of the
//! world `safeformers:tool/tool@0.1.0`). It is pinned to a commit, its files hashed, its
//! definition hashed (RFC 8785 canonical JSON), and approved capability by capability into
//! `safeformers.lock`; a call runs in the sandbox with exactly the approved grants.
//!
//! The agent loop (smolagents' `ToolCallingAgent` semantics, no code execution on the host)
//! drives a chat model, local or behind an OpenAI-compatible endpoint, through tool calls until
//! `final_answer` or `max_steps`.
//!
//! - [`manifest`]: `tool.json`, parsed strictly; [`manifest::ToolLimits`].
//! - [`canonical_json`]: RFC 8785 canonical JSON and the definition hash.
//! - [`schema`]: bounded, self-contained JSON Schemas; argument validation.
//! - [`grants`]: `--grant` values, checked against what a manifest requests.
//! - [`package`]: a tool package from the Hub (only `tool.json` and `tool.wasm`) or a folder.
//! - [`approval`]: approvals in `safeformers.lock`, and loading a tool only as approved.
//! - [`visible`]: text from a package with its hidden characters made visible.
//!
//! With the `mcp` feature, the `mcp` module is a Model Context Protocol client (stdio and
//! streamable HTTP) whose servers start only with consent, in a scrubbed environment, and whose
//! tools are pinned by definition hash (RFC 8785, as a package's) in `safeformers.lock`'s
//! `[[mcp_tool]]` entries: a tool that changes after approval is blocked until it is re-approved.

#![forbid(unsafe_code)]

pub mod agent;
pub mod approval;
pub mod canonical_json;
pub mod chat_model;
pub mod endpoint;
pub mod error;
pub mod grants;
pub mod manifest;
pub mod package;
#[cfg(feature = "wasm")]
pub mod sandboxed;
pub mod schema;
pub mod toolboxes;
pub mod visible;

pub use agent::{
    Agent, AgentError, AgentRun, AgentSettings, ApprovalRequest, Approver, NoTools, RefuseAll,
    RunState, Step, StepToolCall, TerminalApprover, ToolDefinition, Toolbox,
};
pub use approval::{ApprovedTool, load_approved};
pub use chat_model::{ChatModel, LocalModel, LocalModelSettings, ModelTurn, ToolCallRequest};
pub use endpoint::{EndpointError, EndpointModel, EndpointSettings};
pub use error::ToolError;
pub use manifest::{ToolLimits, ToolManifest};
pub use package::ToolPackage;
pub use toolboxes::CombinedToolbox;

#[cfg(feature = "mcp")]
pub mod mcp;
