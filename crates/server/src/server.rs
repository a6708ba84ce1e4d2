//! Starting and stopping a server: models loaded (generative ones on a continuous-batching
//! engine, embedding ones on a batching engine), the exposure policy checked, the socket bound,
//! the accept loop run; and a graceful stop that refuses new work, lets running work finish
//! within a grace period and cancels the rest.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use safeformers::{FeatureExtraction, Options, TextGeneration};
use safeformers_http::ConnectionLimits;
use safeformers_pipelines::ToolCallFormat;
use tokio::sync::oneshot;

use crate::app::{
    AccessPolicy, AppState, EmbeddingModel, GenerationModel, ServedKind, ServedModel,
};
use crate::embedding_engine::EmbeddingEngine;
use crate::exposure::{ExposureError, check_listen_address};
use crate::generation_engine::{EngineLimits, GenerationEngine};
use crate::limits::{LimitError, Limits};
use crate::metrics::Metrics;

/// A model to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    /// A repo id (`org/name[@rev]`), a folder or a GGUF file, as `run --model` takes it.
    pub model: String,
    /// The name requests use; by default the repo id, or a local model's file or folder name.
    pub served_name: Option<String>,
}

impl ModelSpec {
    /// The name requests use.
    pub fn name(&self) -> String {
        if let Some(name) = &self.served_name {
            return name.clone();
        }
        let path = Path::new(&self.model);
        if path.exists() {
            // A local model is named by its last component: the host's paths stay private.
            return path
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_else(|| "model".to_string());
        }
        self.model.clone()
    }
}

/// Everything `safeformers serve` is started with.
#[derive(Debug)]
pub struct ServeConfig {
    /// Where to listen (loopback unless an API key is set).
    pub addr: SocketAddr,
    /// The models, loaded at start; never loaded or changed through the API.
    pub models: Vec<ModelSpec>,
    /// Load options (revision, offline, locked, dtype, quantize, pickle, threads).
    pub options: Options,
    /// Request bounds.
    pub limits: Limits,
    /// Key, CORS, content logging.
    pub access: AccessPolicy,
    /// Sequences generated together per generative model (`--max-running`).
    pub max_running: usize,
    /// Tokens per embedding batch (`--max-batch-tokens`).
    pub max_batch_tokens: usize,
    /// How long a stop waits for running work before cancelling it (`--shutdown-timeout`).
    pub shutdown_timeout: Duration,
}

/// Why a server did not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A non-loopback address without a key, or a bad key.
    #[error(transparent)]
    Exposure(#[from] ExposureError),
    /// A limit flag out of range.
    #[error(transparent)]
    Limit(#[from] LimitError),
    /// A setting that cannot work.
    #[error("{0}")]
    Setting(String),
    /// A model did not load.
    #[error("{model}: {source}")]
    Load {
        /// The model as given.
        model: String,
        /// Why.
        source: Box<safeformers::Error>,
    },
    /// Binding or running the socket failed.
    #[error("{addr}: {source}")]
    Io {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A running server. Dropping it stops it.
#[derive(Debug)]
pub struct ServerHandle {
    local_addr: SocketAddr,
    state: Arc<AppState>,
    open_connections: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    finish: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<std::io::Result<()>>>,
    shutdown_timeout: Duration,
}

/// Loads the models, checks the policy, binds and serves from a background thread.
pub fn start(mut config: ServeConfig) -> Result<ServerHandle, ServeError> {
    check_listen_address(config.addr, config.access.api_key.as_ref())?;
    config.limits.check()?;
    if config.models.is_empty() {
        return Err(ServeError::Setting(
            "serve needs at least one --model".into(),
        ));
    }
    if config.max_running < config.limits.max_n || config.max_running > 1024 {
        return Err(ServeError::Setting(format!(
            "--max-running {}: must be from --max-n ({}) to 1024",
            config.max_running, config.limits.max_n
        )));
    }
    let names: Vec<String> = config.models.iter().map(ModelSpec::name).collect();
    if let Some(duplicate) = names
        .iter()
        .enumerate()
        .find(|(index, name)| names.iter().skip(index + 1).any(|other| other == *name))
    {
        return Err(ServeError::Setting(format!(
            "two models are served as `{}`: give one a --served-name",
            duplicate.1
        )));
    }
    let io_error = |source| ServeError::Io {
        addr: config.addr,
        source,
    };
    let listener = std::net::TcpListener::bind(config.addr).map_err(io_error)?;
    let local_addr = listener.local_addr().map_err(io_error)?;
    listener.set_nonblocking(true).map_err(io_error)?;
    let metrics = Arc::new(Metrics::default());
    let mut models = Vec::with_capacity(config.models.len());
    for (spec, name) in config.models.iter().zip(names) {
        models.push(load(spec, name, &config, &metrics)?);
    }
    let state = Arc::new(AppState {
        models,
        limits: config.limits.clone(),
        access: std::mem::take(&mut config.access),
        metrics,
        ready: AtomicBool::new(true),
    });
    let connection_limits = ConnectionLimits {
        header_timeout: config.limits.header_timeout,
        idle_timeout: config.limits.idle_timeout,
        stall_timeout: None,
        max_connections: config.limits.max_connections,
        max_headers: config.limits.max_headers,
        max_header_bytes: config.limits.max_header_bytes,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("safeformers-serve")
        .enable_all()
        .build()
        .map_err(io_error)?;
    let (stop, stopped) = oneshot::channel::<()>();
    let (finish, finished) = oneshot::channel::<()>();
    let open_connections = Arc::new(AtomicUsize::new(0));
    let open = open_connections.clone();
    let served = state.clone();
    let thread = std::thread::Builder::new()
        .name("safeformers-serve".into())
        .spawn(move || {
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                let handle = move |request| crate::app::handle(served.clone(), request);
                tokio::select! {
                    served = safeformers_http::accept_loop(
                        listener, connection_limits, handle, open, "serve",
                    ) => served?,
                    _ = stopped => {}
                }
                // The listener is closed: connections already open are served until the
                // handle says everything is done (then the runtime drops them).
                let _ = finished.await;
                Ok(())
            })
        })
        .map_err(io_error)?;
    tracing::info!(addr = %local_addr, "serving");
    Ok(ServerHandle {
        local_addr,
        state,
        open_connections,
        stop: Some(stop),
        finish: Some(finish),
        thread: Some(thread),
        shutdown_timeout: config.shutdown_timeout,
    })
}

/// Loads one model on the engine its kind needs.
fn load(
    spec: &ModelSpec,
    name: String,
    config: &ServeConfig,
    metrics: &Arc<Metrics>,
) -> Result<ServedModel, ServeError> {
    let load_error = |source| ServeError::Load {
        model: spec.model.clone(),
        source: Box::new(source),
    };
    let dir = safeformers::resolve::resolve_model(Path::new(&spec.model), &config.options)
        .map_err(load_error)?;
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    let started = Instant::now();
    let kind = if is_generative(&dir) {
        let model =
            Arc::new(TextGeneration::from_pretrained(&dir, &config.options).map_err(load_error)?);
        let tool_format = model
            .pipeline()
            .tokenizer()
            .chat_template()
            .and_then(ToolCallFormat::detect);
        let engine = GenerationEngine::start(
            model.clone(),
            EngineLimits {
                max_queued: config.limits.max_queued,
                max_running: config.max_running,
            },
            metrics.clone(),
        )
        .map_err(|source| ServeError::Io {
            addr: config.addr,
            source,
        })?;
        ServedKind::Generation(GenerationModel {
            model,
            engine,
            tool_format,
        })
    } else {
        // A plain Transformers folder (no sentence-transformers pooling) is mean-pooled, as
        // `run sentence-similarity` and TEI's default do.
        let settings = safeformers::FeatureExtractionSettings {
            pooling: match safeformers_pipelines::SentenceTransformerConfig::from_dir(&dir) {
                Ok(Some(_)) => None,
                _ => Some(vec![safeformers_pipelines::PoolingMode::Mean]),
            },
            normalize: false,
            ..Default::default()
        };
        let model = Arc::new(
            FeatureExtraction::from_pretrained_with(&dir, &config.options, &settings)
                .map_err(load_error)?,
        );
        let engine = EmbeddingEngine::start(
            model.clone(),
            config.limits.max_queued,
            config.max_batch_tokens,
        )
        .map_err(|source| ServeError::Io {
            addr: config.addr,
            source,
        })?;
        ServedKind::Embedding(EmbeddingModel { model, engine })
    };
    tracing::info!(
        model = %name,
        seconds = started.elapsed().as_secs_f64(),
        "loaded"
    );
    Ok(ServedModel {
        name,
        dir: redaction_root(&dir),
        created,
        kind,
    })
}

/// A GGUF model, or a folder whose `config.json` names a causal LM head, is served for
/// generation; any other folder for embeddings, as is a sentence-transformers folder
/// (`modules.json`) whatever its config names (Qwen3-Embedding's says `Qwen3ForCausalLM`).
fn is_generative(dir: &Path) -> bool {
    if safeformers::gguf_file::is_local_gguf_model(dir) {
        return true;
    }
    if dir.join("modules.json").is_file() {
        return false;
    }
    let Ok(text) = std::fs::read_to_string(dir.join("config.json")) else {
        return false;
    };
    let Ok(config) = serde_json::from_str::<serde_json::Value>(&text) else {
        return false;
    };
    config
        .get("architectures")
        .and_then(serde_json::Value::as_array)
        .is_some_and(|architectures| {
            architectures
                .iter()
                .filter_map(serde_json::Value::as_str)
                .any(|name| name.ends_with("ForCausalLM") || name.ends_with("LMHeadModel"))
        })
}

/// The path whose mentions in error messages become the model's name: the folder (for a GGUF
/// file, the folder holding it).
fn redaction_root(dir: &Path) -> PathBuf {
    if dir.is_file() {
        return dir.parent().map(Path::to_path_buf).unwrap_or_default();
    }
    dir.to_path_buf()
}

impl ServerHandle {
    /// The bound address (with the real port when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.open_connections.load(Ordering::SeqCst)
    }

    /// The shared state (models, metrics).
    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// Stops gracefully: new connections are no longer accepted, new requests get 503, running
    /// generations finish within the shutdown timeout and are cancelled after it; returns once
    /// every generative engine has stopped and responses in flight have had a moment to be
    /// written.
    pub fn shutdown(mut self) -> std::io::Result<()> {
        self.state.ready.store(false, Ordering::SeqCst);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        for model in &self.state.models {
            match &model.kind {
                ServedKind::Generation(generation) => {
                    generation.engine.shutdown(self.shutdown_timeout);
                }
                ServedKind::Embedding(embedding) => embedding.engine.shutdown(),
            }
        }
        for model in &self.state.models {
            if let ServedKind::Generation(generation) = &model.kind {
                generation.engine.join();
            }
        }
        // Responses already produced are in their streams' buffers: let them reach clients.
        let flush_deadline = Instant::now() + Duration::from_secs(2);
        while self.open_connections() > 0 && Instant::now() < flush_deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop_now()
    }

    /// Blocks until the server thread ends (only when it fails: a stop comes from
    /// [`ServerHandle::shutdown`]).
    pub fn wait(mut self) -> std::io::Result<()> {
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("the server thread panicked"))),
            None => Ok(()),
        }
    }

    fn stop_now(&mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(finish) = self.finish.take() {
            let _ = finish.send(());
        }
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("the server thread panicked"))),
            None => Ok(()),
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        let _ = self.stop_now();
    }
}

/// Starts a server with `config` and serves until SIGTERM or SIGINT (Ctrl-C), then stops it
/// gracefully ([`ServerHandle::shutdown`]). `on_start` gets the bound address once the models
/// are loaded. The signal handlers are installed before anything loads, so a signal that comes
/// early still stops the server gracefully (once its models are loaded), never kills it.
pub fn serve_until_signal(
    config: ServeConfig,
    on_start: impl FnOnce(SocketAddr),
) -> Result<(), ServeError> {
    let addr = config.addr;
    let io_error = |source| ServeError::Io { addr, source };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io_error)?;
    let (mut terminate, mut interrupt) = runtime
        .block_on(async {
            use tokio::signal::unix::{SignalKind, signal};
            Ok::<_, std::io::Error>((
                signal(SignalKind::terminate())?,
                signal(SignalKind::interrupt())?,
            ))
        })
        .map_err(io_error)?;
    let server = start(config)?;
    on_start(server.local_addr());
    runtime.block_on(async {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    });
    tracing::info!("stopping: no new requests; running ones get the shutdown timeout");
    server.shutdown().map_err(io_error)
}
