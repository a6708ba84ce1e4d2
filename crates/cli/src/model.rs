//! The flags every command that loads or fetches a model shares, turned into
//! [`safeformers::Options`]: the resolution itself (cache, Hub, lockfile, the load policy's
//! fetch patterns) lives in the library ([`safeformers::resolve`]).

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;

use safeformers::Options;

use crate::UsageError;
use safeformers::hub::{HubClient, HubSettings, Revision};

/// Where to find models: `--revision`, `--offline`, `--endpoint` (with the `HF_*` environment
/// underneath).
#[derive(Debug, Clone, Args)]
pub struct HubArgs {
    /// Branch, tag or 40-hex commit to use (default `main`, or the `@REV` of `org/name@REV`).
    #[arg(long, value_name = "R")]
    pub revision: Option<String>,
    /// Use only the cache, never open a socket (same as HF_HUB_OFFLINE=1).
    #[arg(long)]
    pub offline: bool,
    /// The Hub endpoint (same as HF_ENDPOINT), e.g. a `safeformers mirror`.
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
}

/// `--locked` and where the lockfile is.
#[derive(Debug, Clone, Args)]
pub struct LockArgs {
    /// Resolve repos only through the lockfile: its pinned commits, exactly its files (also
    /// SAFEFORMERS_LOCKED=1). Anything that differs is refused (exit 3).
    #[arg(long)]
    pub locked: bool,
    /// The lockfile (default ./safeformers.lock).
    #[arg(long, value_name = "PATH")]
    pub lockfile: Option<PathBuf>,
}

impl HubArgs {
    /// The library options of these flags and `lock` (progress bars on a terminal).
    pub fn options(&self, lock: &LockArgs) -> Options {
        let mut options = Options::new()
            .offline(self.offline)
            .locked(lock.locked)
            .progress(std::io::stderr().is_terminal());
        if let Some(revision) = &self.revision {
            options = options.revision(revision);
        }
        if let Some(endpoint) = &self.endpoint {
            options = options.endpoint(endpoint);
        }
        if let Some(lockfile) = &lock.lockfile {
            options = options.lockfile(lockfile);
        }
        options
    }

    /// Settings from the environment, overridden by the flags.
    pub fn settings(&self) -> HubSettings {
        self.options(&LockArgs::unlocked()).hub_settings()
    }

    /// A client with these settings.
    pub fn client(&self) -> anyhow::Result<HubClient> {
        Ok(HubClient::new(self.settings())?)
    }

    /// `--revision`, parsed.
    pub fn revision(&self) -> anyhow::Result<Option<Revision>> {
        self.revision
            .as_deref()
            .map(|revision| Revision::parse(revision).context("--revision"))
            .transpose()
    }
}

impl LockArgs {
    /// No `--locked`, no `--lockfile`.
    pub fn unlocked() -> LockArgs {
        LockArgs {
            locked: false,
            lockfile: None,
        }
    }
}

/// `--gguf-file NAME`: which GGUF file of a folder or repo to load.
#[derive(Debug, Clone, Args)]
pub struct GgufFileArg {
    /// The GGUF file to load from a folder or repo holding several (Transformers'
    /// `gguf_file`): a file name ending in .gguf. A repo load fetches only that file.
    #[arg(long, value_name = "NAME")]
    pub gguf_file: Option<String>,
}

impl GgufFileArg {
    /// `options` with `--gguf-file`, checked first: a name with a path separator, `..`, or
    /// not ending in `.gguf` is a usage error before anything touches the file system.
    pub fn apply(&self, options: Options) -> anyhow::Result<Options> {
        let Some(name) = &self.gguf_file else {
            return Ok(options);
        };
        safeformers::gguf_file::check_gguf_file_name(name)
            .map_err(|reason| UsageError(format!("--gguf-file: {reason}")))?;
        Ok(options.gguf_file(name))
    }
}

/// Resolves a model argument to a local path under `options` (see
/// [`safeformers::resolve::resolve_model`]): a folder, or the GGUF file a load reads.
pub fn resolve_model(spec: &Path, options: &Options) -> anyhow::Result<PathBuf> {
    Ok(safeformers::resolve::resolve_model(spec, options)?)
}
