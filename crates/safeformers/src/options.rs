//! [`Options`]: everything a caller decides about where a model comes from and how it is
//! loaded and run, with the `HF_*` environment underneath.

use std::ffi::OsString;
use std::path::PathBuf;

use safeformers_hub::lockfile::lockfile_path;
use safeformers_hub::settings::is_truthy;
use safeformers_hub::{HubSettings, Revision};
use safeformers_models::WeightOptions;
use safeformers_weights::LoadPolicy;

use crate::error::{Error, Result};

/// How chat templates (programs shipped in the model repo) are rendered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ChatTemplateIsolation {
    /// In a child process under operating-system memory and CPU limits, killed after a
    /// wall-clock limit (the default; see [`crate::chat_sandbox`]). The child is the current
    /// executable, whose `main` must start with [`crate::chat_sandbox::serve_if_requested`].
    #[default]
    CurrentExe,
    /// In a child process started from this program, which must be a binary that calls
    /// [`crate::chat_sandbox::serve_if_requested`] first (the `safeformers` CLI does).
    Program(PathBuf),
    /// In a child process started as `program arguments... render-chat-template`: a program
    /// that needs arguments to reach [`crate::chat_sandbox::serve_if_requested`] (the Python
    /// package starts the interpreter with `-I -S -c` and the code that loads its extension).
    ProgramWithArguments(PathBuf, Vec<OsString>),
    /// In this process, bounded by fuel, recursion and output limits only. minijinja 3.1 has
    /// a gap these do not cover (a list doubled by nested `+` is materialized without charging
    /// fuel), so a hostile template can exhaust memory: use only for templates you trust.
    InProcessTrusted,
}

/// What a load may fetch and read, where from, and how the model runs.
///
/// The defaults are the safe choices: safetensors only, the Hub named by `HF_ENDPOINT`, the
/// cache of `HF_HUB_CACHE` / `HF_HOME`, `HF_HUB_OFFLINE` and `HF_TOKEN` as `huggingface_hub`
/// reads them, f32 weights, chat templates rendered in an isolated process.
///
/// ```
/// let options = safeformers::Options::new().revision("main").offline(true).threads(2);
/// assert!(options.is_offline());
/// ```
#[derive(Debug, Clone)]
pub struct Options {
    revision: Option<String>,
    offline: bool,
    endpoint: Option<String>,
    allow_pickle: bool,
    locked: bool,
    lockfile: Option<PathBuf>,
    threads: Option<usize>,
    weights: WeightOptions,
    gguf_file: Option<String>,
    batch_size: usize,
    progress: bool,
    chat_templates: ChatTemplateIsolation,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            revision: None,
            offline: false,
            endpoint: None,
            allow_pickle: false,
            locked: false,
            lockfile: None,
            threads: None,
            weights: WeightOptions::default(),
            gguf_file: None,
            batch_size: safeformers_pipelines::DEFAULT_BATCH_SIZE,
            progress: false,
            chat_templates: ChatTemplateIsolation::default(),
        }
    }
}

/// Threads per available core that [`Options::threads`] may ask for. More only costs stacks
/// and switching (each thread reserves its stack up front).
pub const THREADS_PER_CORE: usize = 4;

impl Options {
    /// The defaults (see [`Options`]).
    pub fn new() -> Options {
        Options::default()
    }

    /// The branch, tag or 40-hex commit to load (default `main`, or the `@REV` of
    /// `org/name@REV`, which must then agree).
    pub fn revision(mut self, revision: impl Into<String>) -> Options {
        self.revision = Some(revision.into());
        self
    }

    /// Use only the cache, never open a socket (also `HF_HUB_OFFLINE=1`).
    pub fn offline(mut self, offline: bool) -> Options {
        self.offline = offline;
        self
    }

    /// The Hub endpoint (else `HF_ENDPOINT`, else `https://huggingface.co`), e.g. a
    /// `safeformers mirror`.
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Options {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// Fetch and read pickle-based checkpoints too, with the restricted (non-executing)
    /// unpickler. Off by default.
    pub fn allow_pickle(mut self, allow_pickle: bool) -> Options {
        self.allow_pickle = allow_pickle;
        self
    }

    /// Resolve repos only through the lockfile: its pinned commits, exactly its files (also
    /// `SAFEFORMERS_LOCKED=1`). Anything that differs is refused.
    pub fn locked(mut self, locked: bool) -> Options {
        self.locked = locked;
        self
    }

    /// The lockfile (default `./safeformers.lock`).
    pub fn lockfile(mut self, path: impl Into<PathBuf>) -> Options {
        self.lockfile = Some(path.into());
        self
    }

    /// Threads for the model's tensor operations, 1 to [`THREADS_PER_CORE`] per core
    /// (default: `RAYON_NUM_THREADS` when set, else one per core).
    pub fn threads(mut self, threads: usize) -> Options {
        self.threads = Some(threads);
        self
    }

    /// How decoders store their linear layers' weights (f32 by default; f16, bf16, q8).
    /// Encoder pipelines refuse anything but f32.
    pub fn weights(mut self, weights: WeightOptions) -> Options {
        self.weights = weights;
        self
    }

    /// The GGUF file to load from a folder or repo holding several (Transformers'
    /// `gguf_file`): a plain file name ending in `.gguf`, checked
    /// ([`crate::gguf_file::check_gguf_file_name`]) before it touches the file system. A repo
    /// load then fetches that file only.
    pub fn gguf_file(mut self, name: impl Into<String>) -> Options {
        self.gguf_file = Some(name.into());
        self
    }

    /// Inputs per forward pass (default 32; sorted by length so that batches pad little).
    pub fn batch_size(mut self, batch_size: usize) -> Options {
        self.batch_size = batch_size;
        self
    }

    /// Progress bars on downloads (only ever drawn on a terminal; off by default).
    pub fn progress(mut self, progress: bool) -> Options {
        self.progress = progress;
        self
    }

    /// How chat templates are rendered (default: isolated, see [`ChatTemplateIsolation`]).
    pub fn chat_templates(mut self, isolation: ChatTemplateIsolation) -> Options {
        self.chat_templates = isolation;
        self
    }

    /// Whether loads never touch the network (the option or `HF_HUB_OFFLINE`).
    pub fn is_offline(&self) -> bool {
        self.hub_settings().offline
    }

    /// Whether loads go through the lockfile (the option or `SAFEFORMERS_LOCKED`).
    pub fn is_locked(&self) -> bool {
        self.locked || std::env::var("SAFEFORMERS_LOCKED").is_ok_and(|value| is_truthy(&value))
    }

    /// The lockfile path (the option, else `./safeformers.lock`).
    pub fn lockfile_path(&self) -> PathBuf {
        lockfile_path(self.lockfile.as_deref())
    }

    /// Whether pickle-based checkpoints may be read.
    pub fn allows_pickle(&self) -> bool {
        self.allow_pickle
    }

    /// The Hub settings: the `HF_*` environment, overridden by these options.
    pub fn hub_settings(&self) -> HubSettings {
        let mut settings = HubSettings::from_env();
        if self.offline {
            settings.offline = true;
        }
        if let Some(endpoint) = &self.endpoint {
            settings.endpoint = endpoint.trim().trim_end_matches('/').to_string();
        }
        settings.progress = self.progress;
        settings
    }

    /// The revision option, parsed.
    pub fn parsed_revision(&self) -> Result<Option<Revision>> {
        self.revision
            .as_deref()
            .map(|revision| {
                Revision::parse(revision)
                    .map_err(|error| Error::option("revision", error.to_string()))
            })
            .transpose()
    }

    /// The load policy these options give (which weight formats may be read).
    pub fn load_policy(&self) -> LoadPolicy {
        if self.allow_pickle {
            LoadPolicy::allowing_pickle()
        } else {
            LoadPolicy::default()
        }
    }

    /// The weight storage option.
    pub fn weight_options(&self) -> WeightOptions {
        self.weights
    }

    /// The GGUF file name of [`Options::gguf_file`], checked: a name with a path separator,
    /// `..`, or not ending in `.gguf` is an [`Error::InvalidOption`].
    pub fn checked_gguf_file(&self) -> Result<Option<&str>> {
        let Some(name) = self.gguf_file.as_deref() else {
            return Ok(None);
        };
        crate::gguf_file::check_gguf_file_name(name)
            .map_err(|reason| Error::option("gguf_file", reason))?;
        Ok(Some(name))
    }

    /// The batch size, checked (at least 1).
    pub fn checked_batch_size(&self) -> Result<usize> {
        if self.batch_size == 0 {
            return Err(Error::option("batch size", "must be at least 1"));
        }
        Ok(self.batch_size)
    }

    /// The chat template isolation.
    pub fn chat_template_isolation(&self) -> &ChatTemplateIsolation {
        &self.chat_templates
    }

    /// The pipelines' load options.
    pub(crate) fn pipeline_load_options(&self) -> safeformers_pipelines::LoadOptions {
        safeformers_pipelines::LoadOptions {
            policy: self.load_policy(),
            weights: self.weights,
            ..safeformers_pipelines::LoadOptions::default()
        }
    }

    /// The thread pool of [`Options::threads`] (else `RAYON_NUM_THREADS`, bounded alike, else
    /// one thread per core): our kernels, candle's and gemm's matrix products split their work
    /// over the pool they are called from, so this caps them all without touching the
    /// environment.
    pub fn thread_pool(&self) -> Result<rayon::ThreadPool> {
        let mut builder = rayon::ThreadPoolBuilder::new();
        if let Some(threads) = self.threads {
            let threads =
                check_thread_count(threads).map_err(|reason| Error::option("threads", reason))?;
            builder = builder.num_threads(threads);
        } else if let Some(threads) = std::env::var("RAYON_NUM_THREADS")
            .ok()
            .and_then(|value| value.trim().parse::<usize>().ok())
            .filter(|&threads| threads > 0)
        {
            // rayon reads the variable itself (0 or a non-number: one per core); bound it.
            let threads = check_thread_count(threads)
                .map_err(|reason| Error::option(format!("RAYON_NUM_THREADS={threads}"), reason))?;
            builder = builder.num_threads(threads);
        }
        Ok(builder.build()?)
    }
}

/// The most threads a pool may have here, and the cores it is computed from.
fn max_threads() -> (usize, usize) {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    (cores.saturating_mul(THREADS_PER_CORE), cores)
}

/// Checks a thread count: 1 to [`THREADS_PER_CORE`] per core; the error says the bound.
pub fn check_thread_count(count: usize) -> std::result::Result<usize, String> {
    let (max, cores) = max_threads();
    if count == 0 {
        return Err("the thread pool needs at least 1 thread".into());
    }
    if count > max {
        return Err(format!(
            "{count} threads is more than the limit of {max} ({THREADS_PER_CORE} per core, \
             {cores} available)"
        ));
    }
    Ok(count)
}
