//! `safeformers agent (--model M | --endpoint URL) [--tool REPO@COMMIT]... TASK`: runs a
//! tool-calling agent on TASK and prints its final answer (or, with `--json`, the whole run).
//!
//! The model is a chat model safeformers loads (its chat template rendered in the isolated
//! renderer), or an OpenAI-compatible endpoint. The API key (`--api-key-env VAR`) is sent to
//! that endpoint alone, as a Bearer token; `HF_TOKEN` never is. Tools that need approval are
//! asked about on the terminal, and refused when stdin is not one, except those named by
//! `--yes-to`. Exit 0 with an answer; 1 when `--max-steps` ran out or the model failed (the
//! JSON is still printed).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use serde_json::Value;

use safeformers::{GenerationConfig, Options, TextGeneration};
use safeformers_agents::{
    Agent, AgentRun, AgentSettings, ChatModel, CombinedToolbox, EndpointModel, EndpointSettings,
    LocalModel, LocalModelSettings, NoTools, RunState, TerminalApprover, Toolbox,
};

use crate::UsageError;
use crate::model::GgufFileArg;
use crate::output;
use crate::run::{ThreadArgs, WeightArgs};

/// The environment variable holding the Hub token: never an endpoint's API key.
const HUB_TOKEN_VARIABLES: &[&str] = &["HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"];

/// `safeformers agent`.
#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    /// The task, in plain words.
    #[arg(value_name = "TASK")]
    pub task: String,
    /// A local chat model (a folder, a GGUF file, or a repo `org/name[@rev]`), run here.
    #[arg(
        long,
        value_name = "M",
        required_unless_present = "endpoint",
        conflicts_with = "endpoint"
    )]
    pub model: Option<PathBuf>,
    /// An OpenAI-compatible endpoint's base URL (e.g. http://127.0.0.1:8080/v1); requests go to
    /// URL/chat/completions.
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// The endpoint's model name (default: the only model it lists).
    #[arg(long, value_name = "NAME", requires = "endpoint")]
    pub api_model: Option<String>,
    /// The environment variable holding the endpoint's API key (sent to it alone, as a Bearer
    /// token; never HF_TOKEN).
    #[arg(long, value_name = "VAR", requires = "endpoint")]
    pub api_key_env: Option<String>,
    /// Seconds one endpoint request may take, connection to last byte.
    #[arg(long, value_name = "S", default_value_t = 300, requires = "endpoint")]
    pub timeout: u64,
    /// A tool package, approved in the lockfile (`safeformers tool approve`); repeat for
    /// several.
    #[arg(long = "tool", value_name = "REPO@COMMIT")]
    pub tools: Vec<String>,
    /// An MCP server on stdio, as one command line (split like a shell, nothing expanded); its
    /// tools approved with `safeformers mcp approve` are offered. Repeatable.
    #[arg(long = "mcp-stdio", value_name = "CMDLINE")]
    pub mcp_stdio: Vec<String>,
    /// A streamable-HTTP MCP server (`https://`, or `http://` on loopback); its approved tools
    /// are offered. Repeatable.
    #[arg(long = "mcp-http", value_name = "URL")]
    pub mcp_http: Vec<String>,
    /// An environment variable every `--mcp-stdio` server gets (they get `PATH` and these
    /// only). Repeatable.
    #[arg(long = "mcp-env", value_name = "NAME")]
    pub mcp_env: Vec<String>,
    /// Consent to start the `--mcp-stdio` servers without being asked.
    #[arg(long)]
    pub yes_start: bool,
    /// Steps before the agent is asked for its answer without tools (then exit 1).
    #[arg(
        long,
        value_name = "N",
        default_value_t = safeformers_agents::agent::DEFAULT_MAX_STEPS,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1000)
    )]
    pub max_steps: usize,
    /// The lockfile holding the approved tools (default ./safeformers.lock).
    #[arg(long, value_name = "PATH")]
    pub lockfile: Option<PathBuf>,
    /// Models and tool packages only from the cache (the endpoint, named explicitly, is still
    /// contacted).
    #[arg(long)]
    pub offline: bool,
    /// Print the whole run as one JSON object: {"state", "final_answer", "steps"}.
    #[arg(long)]
    pub json: bool,
    /// Approve every call of TOOL without asking (repeat for several tools).
    #[arg(long = "yes-to", value_name = "TOOL")]
    pub yes_to: Vec<String>,
    /// Sampling temperature (default 0: the most likely reply).
    #[arg(long, value_name = "T")]
    pub temperature: Option<f64>,
    /// Tokens the local model generates at most per step (default 1024).
    #[arg(long, value_name = "N", requires = "model")]
    pub max_new_tokens: Option<usize>,
    #[command(flatten)]
    pub threads: ThreadArgs,
    #[command(flatten)]
    pub weights: WeightArgs,
    #[command(flatten)]
    pub gguf: GgufFileArg,
}

/// Runs the agent; exit 0 with an answer, 1 otherwise.
pub fn run(args: &AgentArgs) -> anyhow::Result<ExitCode> {
    if let Some(temperature) = args.temperature
        && !(temperature.is_finite() && (0.0..=2.0).contains(&temperature))
    {
        return Err(UsageError("--temperature must be between 0 and 2".into()).into());
    }
    let toolbox = load_toolbox(args)?;
    let model = chat_model(args)?;
    let approver = TerminalApprover::new(args.yes_to.iter().cloned());
    let settings = AgentSettings {
        max_steps: args.max_steps,
        ..AgentSettings::default()
    };
    let agent = Agent::new(model.as_ref(), toolbox.as_ref(), &approver, settings)
        .context("starting the agent")?;
    let outcome = agent.run(&args.task);
    report(&outcome, args)
}

/// The tools of the run: the approved packages of `--tool` (run in the sandbox) and the
/// approved tools of the `--mcp-stdio`/`--mcp-http` servers.
pub fn load_toolbox(args: &AgentArgs) -> anyhow::Result<Box<dyn Toolbox>> {
    let mut parts: Vec<Box<dyn Toolbox>> = Vec::new();
    if !args.tools.is_empty() {
        parts.push(sandbox_toolbox(
            &args.tools,
            args.lockfile.as_deref(),
            args.offline,
        )?);
    }
    parts.extend(mcp_toolboxes(args)?);
    Ok(match parts.len() {
        0 => Box::new(NoTools),
        1 => parts.remove(0),
        _ => Box::new(CombinedToolbox::new(parts)),
    })
}

#[cfg(feature = "mcp")]
fn mcp_toolboxes(args: &AgentArgs) -> anyhow::Result<Vec<Box<dyn Toolbox>>> {
    let servers = crate::mcp::McpServers {
        stdio: args.mcp_stdio.clone(),
        http: args.mcp_http.clone(),
        env: args.mcp_env.clone(),
        yes_start: args.yes_start,
    };
    crate::mcp::agent_toolboxes(&servers, args.lockfile.as_deref())
}

#[cfg(not(feature = "mcp"))]
fn mcp_toolboxes(args: &AgentArgs) -> anyhow::Result<Vec<Box<dyn Toolbox>>> {
    if args.mcp_stdio.is_empty() && args.mcp_http.is_empty() {
        return Ok(Vec::new());
    }
    anyhow::bail!(
        "--mcp-stdio/--mcp-http: this safeformers was built without the MCP client; build it          with `cargo build --release -p safeformers-cli --features mcp`"
    )
}

/// The approved packages of `--tool`, called in the sandbox.
#[cfg(feature = "wasm")]
fn sandbox_toolbox(
    tools: &[String],
    lockfile: Option<&Path>,
    offline: bool,
) -> anyhow::Result<Box<dyn Toolbox>> {
    let settings = crate::model::HubArgs {
        revision: None,
        offline,
        endpoint: None,
    }
    .options(&crate::model::LockArgs::unlocked())
    .hub_settings();
    let approved = crate::tool::approved_tools(tools, lockfile, &settings)?;
    let runner = safeformers_agents::sandboxed::ToolRunner::new()?;
    Ok(Box::new(
        safeformers_agents::sandboxed::SandboxToolbox::new(approved, runner),
    ))
}

#[cfg(not(feature = "wasm"))]
fn sandbox_toolbox(
    tools: &[String],
    _lockfile: Option<&Path>,
    _offline: bool,
) -> anyhow::Result<Box<dyn Toolbox>> {
    anyhow::bail!(
        "--tool {}: this safeformers was built without the WebAssembly sandbox; build it with \
         `cargo build --release -p safeformers-cli --features wasm`",
        tools.first().map(String::as_str).unwrap_or_default()
    )
}

/// The model of `--model` or `--endpoint`.
fn chat_model(args: &AgentArgs) -> anyhow::Result<Box<dyn ChatModel>> {
    match (&args.model, &args.endpoint) {
        (Some(model), None) => {
            let mut options = Options::new()
                .offline(args.offline)
                .weights(args.weights.load_options()?);
            if let Some(lockfile) = &args.lockfile {
                options = options.lockfile(lockfile);
            }
            let options = args.gguf.apply(args.threads.apply(options))?;
            let generation = TextGeneration::from_pretrained(model, &options)?;
            let mut settings = LocalModelSettings::default();
            if let Some(max_new_tokens) = args.max_new_tokens {
                settings.generation.max_new_tokens = Some(max_new_tokens);
            }
            if let Some(temperature) = args.temperature.filter(|t| *t > 0.0) {
                settings.generation = GenerationConfig {
                    do_sample: Some(true),
                    temperature: Some(temperature),
                    ..settings.generation
                };
            }
            let local = LocalModel::new(generation, settings)
                .with_context(|| format!("--model {}", model.display()))?;
            Ok(Box::new(local))
        }
        (None, Some(endpoint)) => {
            let settings = EndpointSettings {
                api_model: args.api_model.clone(),
                api_key: api_key(args.api_key_env.as_deref())?,
                temperature: args.temperature.unwrap_or(0.0),
                timeout: Duration::from_secs(args.timeout.max(1)),
                ..EndpointSettings::default()
            };
            let model = EndpointModel::new(endpoint, settings)
                .with_context(|| format!("--endpoint {endpoint}"))?;
            Ok(Box::new(model))
        }
        _ => Err(UsageError("give either --model or --endpoint".into()).into()),
    }
}

/// The API key in the variable `--api-key-env` names; the Hub token's variables are refused.
fn api_key(variable: Option<&str>) -> anyhow::Result<Option<String>> {
    let Some(variable) = variable else {
        return Ok(None);
    };
    if HUB_TOKEN_VARIABLES.contains(&variable) {
        return Err(UsageError(format!(
            "--api-key-env {variable}: the Hub token is never sent to an endpoint; put the \
             endpoint's key in a variable of its own"
        ))
        .into());
    }
    match std::env::var(variable) {
        Ok(key) if !key.is_empty() => Ok(Some(key)),
        _ => Err(UsageError(format!(
            "--api-key-env {variable}: the variable is not set (or empty)"
        ))
        .into()),
    }
}

/// Prints the answer (or the run as JSON) and picks the exit code.
fn report(outcome: &AgentRun, args: &AgentArgs) -> anyhow::Result<ExitCode> {
    if args.json {
        output::print_json(outcome)?;
    } else if let Some(answer) = &outcome.final_answer {
        let mut text = match answer {
            Value::String(text) => text.clone(),
            other => serde_json::to_string_pretty(other)?,
        };
        text.push('\n');
        output::print(&text)?;
    }
    match outcome.state {
        RunState::Success => Ok(ExitCode::SUCCESS),
        RunState::MaxSteps => {
            eprintln!(
                "error: the agent reached --max-steps {} without calling final_answer{}",
                args.max_steps,
                if outcome.final_answer.is_some() {
                    " (the answer printed was asked for without tools)"
                } else {
                    ""
                }
            );
            Ok(ExitCode::FAILURE)
        }
        RunState::Error => {
            let reason = outcome
                .steps
                .last()
                .and_then(|step| step.error.as_deref())
                .unwrap_or("the model failed");
            eprintln!("error: {}", reason.replace('\n', " "));
            Ok(ExitCode::FAILURE)
        }
    }
}
