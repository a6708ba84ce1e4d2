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
//! With the `mcp` feature, the `mcp` module is a Model Context Protocol client (stdio and
//! streamable HTTP) whose servers start only with consent, in a scrubbed environment, and whose
//! tools are pinned by definition hash: a tool that changes after approval is blocked until it
//! is re-approved.

pub mod agent;
pub mod chat_model;
pub mod endpoint;

pub use agent::{
    Agent, AgentError, AgentRun, AgentSettings, ApprovalRequest, Approver, NoTools, RefuseAll,
    RunState, Step, StepToolCall, TerminalApprover, ToolDefinition, Toolbox,
};
pub use chat_model::{ChatModel, LocalModel, LocalModelSettings, ModelTurn, ToolCallRequest};
pub use endpoint::{EndpointError, EndpointModel, EndpointSettings};

#[cfg(feature = "mcp")]
pub mod mcp;
