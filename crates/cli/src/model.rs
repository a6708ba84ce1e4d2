//! Model arguments and the Hub options shared by every command that loads or fetches a model.
//!
//! A model argument is a local file or folder when one exists at that path; otherwise, when it
//! reads as a repo id (`org/name`, optionally `org/name@rev`), it is resolved through the cache
//! and the Hub into a snapshot folder, fetching only the files the load policy may read.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;

use safeformers_hub::client::HubClient;
use safeformers_hub::glob::{glob_match, matches_any};
use safeformers_hub::lockfile::{Lockfile, lockfile_path};
use safeformers_hub::settings::is_truthy;
use safeformers_hub::{
    CommitHash, HubCache, HubError, HubSettings, RepoCache, RepoFilePath, RepoId, Revision,
    Snapshot,
};

use crate::UsageError;

/// Files a load reads under the default policy: configuration and tokenizer files (JSON, text,
/// sentencepiece models, chat templates as `chat_template.jinja` and
/// `additional_chat_templates/*.jinja`) and safetensors weights with their shard index. Code (`*.py`) and
/// pickle-based weights are never fetched for a load.
pub const MODEL_FILE_PATTERNS: &[&str] = &[
    "*.json",
    "*.txt",
    "*.model",
    "*.jinja",
    "*.safetensors",
    "*.safetensors.index.json",
];

/// Pickle-based weights and their shard index, fetched only with `--allow-pickle` (and then read
/// by the restricted unpickler).
pub const PICKLE_FILE_PATTERNS: &[&str] = &["*.bin", "*.pt", "*.pth", "*.ckpt", "*.bin.index.json"];

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

impl LockArgs {
    /// Whether loads go through the lockfile (`--locked` or `SAFEFORMERS_LOCKED`).
    pub fn is_locked(&self) -> bool {
        self.locked || std::env::var("SAFEFORMERS_LOCKED").is_ok_and(|value| is_truthy(&value))
    }

    /// The lockfile path.
    pub fn path(&self) -> PathBuf {
        lockfile_path(self.lockfile.as_deref())
    }
}

impl HubArgs {
    /// Settings from the environment, overridden by the flags.
    pub fn settings(&self) -> HubSettings {
        let mut settings = HubSettings::from_env();
        if self.offline {
            settings.offline = true;
        }
        if let Some(endpoint) = &self.endpoint {
            settings.endpoint = endpoint.trim().trim_end_matches('/').to_string();
        }
        settings.progress = std::io::stderr().is_terminal();
        settings
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

/// A repo id with the revision asked for, from `org/name[@rev]` and `--revision`.
#[derive(Debug, Clone)]
pub struct RepoRequest {
    /// The repo.
    pub repo: RepoId,
    /// The revision asked for, if any (`@rev` or `--revision`).
    pub revision: Option<Revision>,
}

impl RepoRequest {
    /// Parses `org/name[@rev]`; `--revision` applies when there is no `@rev`, and must agree with
    /// it when there is.
    pub fn parse(spec: &str, flag: Option<&Revision>) -> anyhow::Result<RepoRequest> {
        let (id, at) = match spec.split_once('@') {
            Some((id, revision)) => (id, Some(Revision::parse(revision)?)),
            None => (spec, None),
        };
        let repo = RepoId::parse(id)?;
        let revision = match (at, flag) {
            (Some(at), Some(flag)) if &at != flag => {
                return Err(UsageError(format!(
                    "`{spec}` names revision `{at}` but --revision says `{flag}`; give one"
                ))
                .into());
            }
            (Some(at), _) => Some(at),
            (None, flag) => flag.cloned(),
        };
        Ok(RepoRequest { repo, revision })
    }

    /// The revision to resolve: the one asked for, else `main`.
    pub fn revision_or_main(&self) -> Revision {
        self.revision.clone().unwrap_or_default()
    }
}

/// The include patterns for a load under the policy: [`MODEL_FILE_PATTERNS`], plus
/// [`PICKLE_FILE_PATTERNS`] with `--allow-pickle`.
pub fn load_patterns(allow_pickle: bool) -> Vec<String> {
    let mut patterns: Vec<String> = MODEL_FILE_PATTERNS
        .iter()
        .map(|pattern| pattern.to_string())
        .collect();
    if allow_pickle {
        patterns.extend(
            PICKLE_FILE_PATTERNS
                .iter()
                .map(|pattern| pattern.to_string()),
        );
    }
    patterns
}

/// What a command wants from a repo.
#[derive(Debug, Clone)]
pub enum Want {
    /// The files a model load reads under the policy ([`load_patterns`]).
    Load {
        /// `--allow-pickle`: pickle-based weights too.
        allow_pickle: bool,
    },
    /// The files matching these patterns (every file when empty).
    Files(Vec<String>),
}

impl Want {
    /// The include patterns to fetch.
    pub fn patterns(&self) -> Vec<String> {
        match self {
            Want::Load { allow_pickle } => load_patterns(*allow_pickle),
            Want::Files(patterns) => patterns.clone(),
        }
    }

    /// For a load, whether the cached snapshot of `commit` is one a load can use as it is: it
    /// holds weights the policy may read. Such a snapshot needs no request when the commit is
    /// pinned (or offline), whatever else the repo has that was not fetched (a tokenizer's
    /// `*.model`, a shard index) — the Hub client's own check wants a file for every pattern.
    fn cached_snapshot(&self, repo_cache: &RepoCache, commit: &CommitHash) -> Option<Snapshot> {
        let Want::Load { allow_pickle } = self else {
            return None;
        };
        let mut weights = vec!["*.safetensors".to_string()];
        if *allow_pickle {
            weights.extend(
                PICKLE_FILE_PATTERNS
                    .iter()
                    .map(|pattern| pattern.to_string()),
            );
        }
        let files = repo_cache.snapshot_files(commit).ok()?;
        let has_weights = files.iter().any(|file| {
            weights
                .iter()
                .any(|pattern| glob_match(pattern, file.path.as_str()))
        });
        // When huggingface_hub's file list for the commit is cached, every file of it a load
        // would read must be there too (Python's `IncompleteSnapshotError`): a download killed
        // half-way leaves a snapshot that is not enough.
        let patterns = self.patterns();
        let listed = safeformers_hub::tree_listing::read(repo_cache.dir(), commit).ok()?;
        let is_complete = listed.is_none_or(|listed| {
            listed
                .paths()
                .filter(|path| matches_any(&patterns, path))
                .all(|path| files.iter().any(|file| file.path.as_str() == path))
        });
        (has_weights && is_complete).then(|| repo_cache.snapshot(commit))
    }
}

/// Resolves a model argument to a local path: the path itself when it exists (or when it cannot
/// be a repo id, so that the loader reports the missing file), else the snapshot folder of the
/// repo, fetched with the policy's include patterns.
pub fn resolve_model(
    spec: &Path,
    hub: &HubArgs,
    lock: &LockArgs,
    allow_pickle: bool,
) -> anyhow::Result<PathBuf> {
    if spec.exists() {
        // A folder the user named is the root its files may come from: links out of it (a
        // cloned repo's `config.json -> ~/.ssh/id_rsa`) are refused before anything is read.
        if spec.is_dir() {
            safeformers_hub::cache::check_local_folder(spec)?;
        }
        return Ok(spec.to_path_buf());
    }
    let Some(text) = spec.to_str().filter(|text| looks_like_repo_id(text)) else {
        return Ok(spec.to_path_buf());
    };
    let request = RepoRequest::parse(text, hub.revision()?.as_ref())?;
    let snapshot = fetch(&request, hub, lock, &Want::Load { allow_pickle })?;
    // The cache rule, before anything is read from the snapshot: every entry must link to a
    // regular file in the repo's own blobs/ (a policy refusal naming the entry otherwise).
    HubCache::new(hub.settings().cache_dir)
        .repo(&request.repo)
        .snapshot_files(&snapshot.commit)?;
    Ok(snapshot.dir)
}

/// `org/name` or `org/name@rev` with a valid repo id: exactly one `/` before any `@`, and not a
/// path-like start (`.`, `/`, `~`).
fn looks_like_repo_id(text: &str) -> bool {
    let id = text.split_once('@').map_or(text, |(id, _)| id);
    id.matches('/').count() == 1 && RepoId::parse(id).is_ok()
}

/// Fetches (or finds in the cache) what `want` asks of `request`. With `--locked`, only through
/// the lockfile: the locked commit, no ref lookup, and the snapshot must match the lock exactly.
pub fn fetch(
    request: &RepoRequest,
    hub: &HubArgs,
    lock: &LockArgs,
    want: &Want,
) -> anyhow::Result<Snapshot> {
    let client = hub.client()?;
    let repo_cache = client.cache().repo(&request.repo);
    let patterns = want.patterns();
    if !lock.is_locked() {
        let revision = request.revision_or_main();
        // A pinned commit is immutable, and offline the cached ref is all there is: a usable
        // cached snapshot answers without a request.
        let cached_commit = match &revision {
            Revision::Commit(commit) => Some(commit.clone()),
            Revision::Ref(name) if client.settings().offline => repo_cache.read_ref(name)?,
            Revision::Ref(_) => None,
        };
        if let Some(commit) = &cached_commit
            && let Some(snapshot) = want.cached_snapshot(&repo_cache, commit)
        {
            return Ok(snapshot);
        }
        // Offline, a load that the cache cannot serve whole (no weights the policy may read,
        // or files the commit's cached file list names are missing: a download killed half-way)
        // is "not cached", a refusal, whatever else the snapshot holds.
        if client.settings().offline
            && matches!(want, Want::Load { .. })
            && let Some(commit) = cached_commit
        {
            repo_cache.snapshot_files(&commit)?;
            return Err(HubError::NotCachedOffline {
                what: format!(
                    "a complete snapshot of `{}` at commit {commit} (weights the policy allows, \
                     and every file a load reads; a download may have been interrupted)",
                    request.repo
                ),
                cache: client.cache().root().to_path_buf(),
            }
            .into());
        }
        return Ok(client.snapshot(&request.repo, &revision, &patterns)?);
    }
    let lockfile_path = lock.path();
    let Some(lockfile) = Lockfile::read_if_exists(&lockfile_path)? else {
        return Err(HubError::LockMismatch {
            lockfile: lockfile_path,
            reason: format!(
                "--locked, but there is no lockfile (create it with `safeformers lock {}`)",
                request.repo
            ),
        }
        .into());
    };
    let entry = lockfile.entry_for(&request.repo, request.revision.as_ref(), &lockfile_path)?;
    // A load checks every file it may read; a plain `download --locked` fetches and checks
    // exactly the locked files.
    let is_used = |path: &RepoFilePath| {
        if patterns.is_empty() {
            entry.files.iter().any(|file| &file.path == path)
        } else {
            matches_any(&patterns, path.as_str())
        }
    };
    let pinned = Revision::Commit(entry.commit.clone());
    for file in entry.used_files(&is_used) {
        // A cached file at a pinned commit needs no request at all.
        if repo_cache.cached_file(&entry.commit, &file.path).is_none() {
            client.download_file(&request.repo, &pinned, &file.path)?;
        }
    }
    let snapshot = repo_cache.snapshot(&entry.commit);
    entry.check_snapshot(&repo_cache, &snapshot, &is_used, &lockfile_path)?;
    Ok(snapshot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_policy_never_fetches_pickle_or_code() {
        let default = load_patterns(false);
        for never in [
            "pytorch_model.bin",
            "model.pt",
            "x.ckpt",
            "modeling_x.py",
            "w.pth",
        ] {
            assert!(!matches_any(&default, never), "{never}");
        }
        for wanted in [
            "config.json",
            "tokenizer.json",
            "vocab.txt",
            "model.safetensors",
            "model.safetensors.index.json",
            "1_Pooling/config.json",
            "generation_config.json",
            "chat_template.jinja",
            "additional_chat_templates/tool_use.jinja",
        ] {
            assert!(matches_any(&default, wanted), "{wanted}");
        }
        let pickle = load_patterns(true);
        assert!(matches_any(&pickle, "pytorch_model.bin"));
        assert!(!matches_any(&pickle, "modeling_x.py"));
    }

    #[test]
    fn repo_ids_and_paths() {
        assert!(looks_like_repo_id("org/name"));
        assert!(looks_like_repo_id("org/name@v1.0"));
        assert!(!looks_like_repo_id("gpt2"));
        assert!(!looks_like_repo_id("/nonexistent/model.safetensors"));
        assert!(!looks_like_repo_id("./model"));
        assert!(!looks_like_repo_id("a/b/c"));
        let main = Revision::main();
        let request = RepoRequest::parse("org/name@v1", None).unwrap();
        assert_eq!(request.revision_or_main().as_str(), "v1");
        assert!(RepoRequest::parse("org/name@v1", Some(&main)).is_err());
        let request = RepoRequest::parse("org/name", Some(&main)).unwrap();
        assert_eq!(request.revision, Some(main));
    }
}
