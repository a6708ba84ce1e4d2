//! The `safeformers` command line. Thin over the `safeformers` library: parse flags, call,
//! print.
//!
//! Exit codes (shared/CLI.md): 0 success, 1 error (for `scan`: something unsafe or invalid was
//! found), 2 usage error, 3 refused by security policy.

#![forbid(unsafe_code)]

mod agent;
mod cache;
mod download;
mod forward;
mod generate;
mod inspect;
mod lock;
mod mcp;
mod mirror;
mod model;
mod output;
mod run;
mod scan;
mod serve;
mod tool;

use std::fmt;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code for "refused by security policy".
const EXIT_POLICY_REFUSAL: u8 = 3;

/// Exit code for a usage error (clap uses it for bad flags; we for contradictory arguments).
const EXIT_USAGE: u8 = 2;

/// Arguments that parse one by one but contradict each other (exit code 2).
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Load, inspect and scan models without ever running code from them.
#[derive(Debug, Parser)]
#[command(name = "safeformers", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Report what each file is and what loading it would do; never executes anything.
    Scan(scan::ScanArgs),
    /// Show the format, metadata and tensors of a weights file, model folder or repo.
    Inspect(inspect::InspectArgs),
    /// Download a repo (or the files matching --include) into the cache, every file verified;
    /// prints the snapshot folder last.
    Download(download::DownloadArgs),
    /// Pin repos to commits and every file to its sha256 in safeformers.lock.
    Lock(lock::LockCommandArgs),
    /// List, verify, remove, or import into the Hub cache (HF_HUB_CACHE).
    Cache(cache::CacheArgs),
    /// Serve a cache as a Hub endpoint (`HF_ENDPOINT=http://ADDR`) for air-gapped machines.
    Mirror(mirror::MirrorArgs),
    /// Run a model's forward pass on token ids given by hand; prints its output tensor.
    Forward(forward::ForwardArgs),
    /// Run a task pipeline (feature-extraction, sentence-similarity, ...) on inputs or stdin.
    Run(run::RunArgs),
    /// Serve models over the OpenAI API (chat, completions, embeddings) and TEI's /embed;
    /// loopback unless an API key is configured.
    Serve(serve::ServeArgs),
    /// Inspect a tool package (tool.json + tool.wasm) and approve it, capability by capability,
    /// into safeformers.lock.
    Tool(tool::ToolArgs),
    /// Review an MCP server's tools (they run outside the sandbox) and pin the approved ones,
    /// by definition hash, in safeformers.lock.
    Mcp(mcp::McpArgs),
    /// Talk with a chat model: each stdin line is a user turn, the reply is streamed back; the
    /// conversation is kept until stdin ends.
    Chat(generate::ChatArgs),
    /// Run a tool-calling agent on a task with a local model or an OpenAI-compatible endpoint;
    /// prints its final answer (exit 1 when --max-steps runs out).
    Agent(Box<agent::AgentArgs>),
    /// Internal: renders one chat template request from stdin under OS limits (the isolated
    /// renderer `run text-generation --chat` and `chat` start).
    #[command(name = "render-chat-template", hide = true)]
    RenderChatTemplate,
}

fn main() -> ExitCode {
    // Started as the isolated chat-template renderer: render the request on stdin and exit.
    safeformers::chat_sandbox::serve_if_requested();
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve(_)) {
        print_warnings_on_stderr();
    }
    let result = match cli.command {
        Command::Scan(args) => scan::run(&args),
        Command::Inspect(args) => inspect::run(&args),
        Command::Download(args) => download::run(&args),
        Command::Lock(args) => lock::run(&args),
        Command::Cache(args) => cache::run(&args),
        Command::Mirror(args) => mirror::run(&args),
        Command::Forward(args) => forward::run(&args),
        Command::Run(args) => run::run(&args),
        Command::Chat(args) => generate::chat(&args),
        Command::Agent(args) => agent::run(&args),
        Command::Serve(args) => serve::run(&args),
        Command::Tool(args) => tool::run(&args),
        Command::Mcp(args) => mcp::run(&args),
        Command::RenderChatTemplate => safeformers::chat_sandbox::serve_child()
            .map(|()| ExitCode::SUCCESS)
            .map_err(anyhow::Error::msg),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            if output::is_broken_pipe(&error) {
                return ExitCode::SUCCESS;
            }
            // One line: what, where, and what to do (the library errors carry all three).
            eprintln!("error: {}", one_line(&error));
            if is_policy_refusal(&error) {
                ExitCode::from(EXIT_POLICY_REFUSAL)
            } else if error.chain().any(|cause| {
                cause.is::<UsageError>()
                    || cause
                        .downcast_ref::<safeformers::Error>()
                        .is_some_and(safeformers::Error::is_usage_error)
                    || cause
                        .downcast_ref::<safeformers_agents::ToolError>()
                        .is_some_and(safeformers_agents::ToolError::is_usage_error)
                    || is_mcp_usage_error(cause)
            }) {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// The error chain as one line. A library error's message already includes its causes (they
/// name the file, the member and the offset in turn), so the chain stops there instead of
/// repeating them.
fn one_line(error: &anyhow::Error) -> String {
    let mut parts = Vec::new();
    for cause in error.chain() {
        parts.push(cause.to_string());
        if cause.is::<safeformers::Error>()
            || cause.is::<safeformers_weights::Error>()
            || cause.is::<safeformers_hub::HubError>()
            || cause.is::<safeformers_models::Error>()
            || cause.is::<safeformers_pipelines::PipelineError>()
            || cause.is::<safeformers_agents::ToolError>()
        {
            break;
        }
    }
    parts.join(": ").replace('\n', " ")
}

/// Whether any error in the chain is a refusal by security policy.
/// Warnings from the libraries (such as "this repo's code is not run; the built-in class is
/// used") as plain `note:` lines on stderr. `serve` sets up its own request log instead.
fn print_warnings_on_stderr() {
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing_subscriber::filter::LevelFilter::WARN)
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .with_level(false)
        .with_ansi(false)
        .try_init();
}

#[cfg(feature = "mcp")]
fn is_mcp_refusal(cause: &(dyn std::error::Error + 'static)) -> bool {
    cause
        .downcast_ref::<safeformers_agents::mcp::McpError>()
        .is_some_and(safeformers_agents::mcp::McpError::is_policy_refusal)
}

#[cfg(not(feature = "mcp"))]
fn is_mcp_refusal(_: &(dyn std::error::Error + 'static)) -> bool {
    false
}

#[cfg(feature = "mcp")]
fn is_mcp_usage_error(cause: &(dyn std::error::Error + 'static)) -> bool {
    cause
        .downcast_ref::<safeformers_agents::mcp::McpError>()
        .is_some_and(safeformers_agents::mcp::McpError::is_usage_error)
}

#[cfg(not(feature = "mcp"))]
fn is_mcp_usage_error(_: &(dyn std::error::Error + 'static)) -> bool {
    false
}

fn is_policy_refusal(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<safeformers::Error>()
            .is_some_and(safeformers::Error::is_policy_refusal)
            || cause
                .downcast_ref::<safeformers_weights::Error>()
                .is_some_and(safeformers_weights::Error::is_policy_refusal)
            || cause
                .downcast_ref::<safeformers_hub::HubError>()
                .is_some_and(safeformers_hub::HubError::is_policy_refusal)
            || cause
                .downcast_ref::<safeformers_models::Error>()
                .is_some_and(safeformers_models::Error::is_policy_refusal)
            || cause
                .downcast_ref::<safeformers_pipelines::PipelineError>()
                .is_some_and(safeformers_pipelines::PipelineError::is_policy_refusal)
            || cause
                .downcast_ref::<safeformers_agents::ToolError>()
                .is_some_and(safeformers_agents::ToolError::is_policy_refusal)
            || is_mcp_refusal(cause)
    })
}
