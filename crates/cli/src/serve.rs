//! `safeformers serve --model M [--model M2]... [--addr 127.0.0.1:8080] [--api-key-env VAR]`:
//! the OpenAI API and TEI's `/embed` over models loaded at start.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use safeformers_server::app::AccessPolicy;
use safeformers_server::exposure::ApiKey;
use safeformers_server::limits::Limits;
use safeformers_server::{ModelSpec, ServeConfig};

use crate::UsageError;
use crate::mirror::parse_timeout;
use crate::run::ModelLoadArgs;

/// Arguments of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A model to serve: a repo id (`org/name[@rev]`), a folder or a GGUF file; repeat for
    /// several (a chat model and an embedding model side by side). Generative models
    /// (a causal LM head, or GGUF) serve chat and completions; others, and every
    /// sentence-transformers folder (`modules.json`), serve embeddings.
    #[arg(long = "model", value_name = "MODEL", required = true)]
    models: Vec<String>,
    /// The name clients use for the model given at the same position (default: the repo id,
    /// or a local model's file or folder name).
    #[arg(long = "served-name", value_name = "NAME")]
    served_names: Vec<String>,
    /// Address to listen on. Loopback by default; any other address needs --api-key-env.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// The environment variable holding the API key clients must send as `Authorization:
    /// Bearer KEY` (16 to 4096 visible ASCII characters).
    #[arg(long, value_name = "VAR")]
    api_key_env: Option<String>,
    /// An origin allowed to call from a browser (CORS); repeat for several. None by default.
    #[arg(long = "cors-origin", value_name = "ORIGIN")]
    cors_origins: Vec<String>,
    /// Log prompts and completions (never logged otherwise).
    #[arg(long)]
    log_content: bool,
    /// Sequences generated together per generative model (continuous batching).
    #[arg(long, value_name = "N", default_value_t = 32)]
    max_running: usize,
    /// Tokens per embedding batch.
    #[arg(long, value_name = "N", default_value_t = 16_384)]
    max_batch_tokens: usize,
    /// On SIGTERM, how long running requests may finish before they are cancelled.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_timeout)]
    shutdown_timeout: Duration,
    #[command(flatten)]
    limits: LimitArgs,
    #[command(flatten)]
    load: ModelLoadArgs,
}

/// The request bounds, each a flag with the safe default of [`Limits::default`].
#[derive(Debug, Args)]
struct LimitArgs {
    /// Largest request body, in bytes (413 beyond).
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_body_bytes)]
    max_body_bytes: usize,
    /// Most header fields per request (431 beyond).
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_headers)]
    max_headers: usize,
    /// Most bytes of request line and headers (431 beyond).
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_header_bytes)]
    max_header_bytes: usize,
    /// Largest `max_tokens` a request may ask for (400 beyond, never clamped).
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_tokens_ceiling)]
    max_tokens_ceiling: usize,
    /// Largest `n`.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_n)]
    max_n: usize,
    /// Largest `top_logprobs`.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_top_logprobs)]
    max_top_logprobs: usize,
    /// Most messages per chat request.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_messages)]
    max_messages: usize,
    /// Most tools per chat request.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_tools)]
    max_tools: usize,
    /// Most inputs per embeddings request.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_embedding_inputs)]
    max_embedding_inputs: usize,
    /// Most prompts per completions request.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_prompts)]
    max_prompts: usize,
    /// Deepest JSON nesting of a request.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_json_depth)]
    max_json_depth: usize,
    /// Most JSON values in a request.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_json_values)]
    max_json_values: usize,
    /// Requests waiting per model; more get 429 with Retry-After.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_queued)]
    max_queued: usize,
    /// Connections held at once; more wait in the listen backlog.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_connections)]
    max_connections: usize,
    /// Close a connection with no request for this long.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_timeout)]
    idle_timeout: Duration,
    /// Drop a client whose request headers or body are not complete this long after they start
    /// (slowloris).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_timeout)]
    header_timeout: Duration,
    /// Answer every request, to its last byte, within this.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_timeout)]
    request_timeout: Duration,
}

impl LimitArgs {
    fn limits(&self) -> Limits {
        Limits {
            max_body_bytes: self.max_body_bytes,
            max_headers: self.max_headers,
            max_header_bytes: self.max_header_bytes,
            max_tokens_ceiling: self.max_tokens_ceiling,
            max_n: self.max_n,
            max_top_logprobs: self.max_top_logprobs,
            max_messages: self.max_messages,
            max_tools: self.max_tools,
            max_embedding_inputs: self.max_embedding_inputs,
            max_prompts: self.max_prompts,
            max_json_depth: self.max_json_depth,
            max_json_values: self.max_json_values,
            max_queued: self.max_queued,
            max_connections: self.max_connections,
            idle_timeout: self.idle_timeout,
            header_timeout: self.header_timeout,
            request_timeout: self.request_timeout,
            ..Limits::default()
        }
    }
}

/// Runs `serve` until SIGTERM or Ctrl-C; exits 0 after a graceful stop.
pub fn run(args: &ServeArgs) -> anyhow::Result<ExitCode> {
    init_logging();
    if args.served_names.len() > args.models.len() {
        return Err(UsageError(format!(
            "{} --served-name for {} --model: each name goes with the model at its position",
            args.served_names.len(),
            args.models.len()
        ))
        .into());
    }
    let api_key = match &args.api_key_env {
        Some(variable) => Some(ApiKey::from_env(variable).map_err(|e| UsageError(e.to_string()))?),
        None => None,
    };
    let models = args
        .models
        .iter()
        .enumerate()
        .map(|(index, model)| ModelSpec {
            model: model.clone(),
            served_name: args.served_names.get(index).cloned(),
        })
        .collect();
    let config = ServeConfig {
        addr: args.addr,
        models,
        options: args.load.options()?,
        limits: args.limits.limits(),
        access: AccessPolicy {
            api_key,
            cors_origins: args.cors_origins.clone(),
            log_content: args.log_content,
        },
        max_running: args.max_running,
        max_batch_tokens: args.max_batch_tokens,
        shutdown_timeout: args.shutdown_timeout,
    };
    safeformers_server::serve_until_signal(config, |addr| {
        // The address on stdout, for scripts that started the server on port 0.
        println!("listening on http://{addr}");
    })
    .map_err(|error| match error {
        safeformers_server::ServeError::Load { model, source } => {
            anyhow::Error::new(*source).context(model)
        }
        safeformers_server::ServeError::Io { .. } => anyhow::Error::new(error),
        other => UsageError(other.to_string()).into(),
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Request lines to stderr (`RUST_LOG` changes the level; info by default).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
