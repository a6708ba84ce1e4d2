//! From a model argument (`org/name[@rev]` or a folder) to a local folder a load may read:
//! the cache, the Hub, the lockfile and the load policy's fetch patterns.
//!
//! A model argument is a local file or folder when one exists at that path; otherwise, when it
//! reads as a repo id, it is resolved through the cache and the Hub into a verified snapshot
//! folder, fetching only the files the load policy may read
//! ([`safeformers_hub::load_files`]).

use std::path::{Path, PathBuf};

use safeformers_hub::glob::matches_any;
use safeformers_hub::load_files::{is_loadable_weights, load_patterns};
use safeformers_hub::lockfile::Lockfile;
use safeformers_hub::{
    CommitHash, HubCache, HubClient, HubError, RepoCache, RepoFilePath, RepoId, Revision, Snapshot,
};

use crate::error::{Error, Result};
use crate::gguf_file;
use crate::options::Options;

/// A repo id with the revision asked for, from `org/name[@rev]` and [`Options::revision`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoRequest {
    /// The repo.
    pub repo: RepoId,
    /// The revision asked for, if any (`@rev` or the option).
    pub revision: Option<Revision>,
}

impl RepoRequest {
    /// Parses `org/name[@rev]`; `option` (the revision option) applies when there is no `@rev`,
    /// and must agree with it when there is.
    pub fn parse(spec: &str, option: Option<&Revision>) -> Result<RepoRequest> {
        let (id, at) = match spec.split_once('@') {
            Some((id, revision)) => (id, Some(Revision::parse(revision)?)),
            None => (spec, None),
        };
        let repo = RepoId::parse(id)?;
        let revision = match (at, option) {
            (Some(at), Some(option)) if &at != option => {
                return Err(Error::option(
                    "revision",
                    format!(
                        "`{spec}` names revision `{at}` but the revision option says `{option}`; give one"
                    ),
                ));
            }
            (Some(at), _) => Some(at),
            (None, option) => option.cloned(),
        };
        Ok(RepoRequest { repo, revision })
    }

    /// The revision to resolve: the one asked for, else `main`.
    pub fn revision_or_main(&self) -> Revision {
        self.revision.clone().unwrap_or_default()
    }
}

/// What a caller wants from a repo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Want {
    /// The files a load reads under the policy ([`load_patterns`]), or the one GGUF file it
    /// reads ([`crate::gguf_file::load_include`]).
    Load {
        /// Pickle-based weights too.
        allow_pickle: bool,
        /// The GGUF file chosen ([`Options::gguf_file`], checked), if any.
        gguf_file: Option<String>,
    },
    /// The files matching these patterns (every file when empty).
    Files(Vec<String>),
}

impl Want {
    /// What a model load under `options` wants.
    pub fn load(options: &Options) -> Result<Want> {
        Ok(Want::Load {
            allow_pickle: options.allows_pickle(),
            gguf_file: options.checked_gguf_file()?.map(str::to_string),
        })
    }

    /// The include patterns to fetch, before the repo's files are known: the chosen GGUF file
    /// alone, else the policy's load patterns.
    pub fn patterns(&self) -> Vec<String> {
        match self {
            Want::Load {
                gguf_file: Some(name),
                ..
            } => vec![name.clone()],
            Want::Load { allow_pickle, .. } => load_patterns(*allow_pickle),
            Want::Files(patterns) => patterns.clone(),
        }
    }

    /// The include patterns to fetch from a repo whose files are `paths`: for a load, the
    /// GGUF file it reads when it reads one ([`gguf_file::load_include`]; several GGUF files
    /// and no choice is an error naming them).
    fn patterns_for<'a>(
        &self,
        paths: impl Iterator<Item = &'a str> + Clone,
        repo: &RepoId,
    ) -> Result<Vec<String>> {
        match self {
            Want::Load {
                allow_pickle,
                gguf_file,
            } => gguf_file::load_include(paths, *allow_pickle, gguf_file.as_deref(), repo.as_str()),
            Want::Files(patterns) => Ok(patterns.clone()),
        }
    }

    /// For a load, whether the cached snapshot of `commit` is one a load can use as it is: it
    /// holds weights the policy may read. Such a snapshot needs no request when the commit is
    /// pinned (or offline), whatever else the repo has that was not fetched (a tokenizer's
    /// `*.model`, a shard index) — the Hub client's own check wants a file for every pattern.
    fn cached_snapshot(&self, repo_cache: &RepoCache, commit: &CommitHash) -> Option<Snapshot> {
        let Want::Load {
            allow_pickle,
            gguf_file,
        } = self
        else {
            return None;
        };
        let files = repo_cache.snapshot_files(commit).ok()?;
        let has_weights = files.iter().any(|file| {
            let path = file.path.as_str();
            match gguf_file {
                Some(name) => path == name,
                None => {
                    is_loadable_weights(path, *allow_pickle)
                        || (!path.contains('/') && gguf_file::is_gguf_name(path))
                }
            }
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
/// repo, fetched with the policy's include patterns and checked against the cache rule.
///
/// A local folder is checked first: links out of it are refused before anything is read.
///
/// A GGUF load resolves to the `.gguf` file itself: the path given, the file
/// [`Options::gguf_file`] names in the folder or repo, or the one GGUF file of a folder or
/// repo without Transformers weights (several and no choice is an [`Error::GgufChoice`]). A
/// repo load then fetches only that file.
pub fn resolve_model(model: &Path, options: &Options) -> Result<PathBuf> {
    let gguf_file = options.checked_gguf_file()?;
    if gguf_file.is_some() {
        refuse_quantizing_gguf(model, options)?;
    }
    if model.exists() {
        if !model.is_dir() {
            if gguf_file.is_some() {
                return Err(Error::option(
                    "gguf_file",
                    format!(
                        "{} is a file; a GGUF file name picks one in a folder or repo",
                        model.display()
                    ),
                ));
            }
            if gguf_file::is_gguf_name(&model.to_string_lossy()) {
                refuse_quantizing_gguf(model, options)?;
            }
            return Ok(model.to_path_buf());
        }
        // A folder the user named is the root its files may come from: links out of it (a
        // cloned repo's `config.json -> ~/.ssh/id_rsa`) are refused before anything is read.
        safeformers_hub::cache::check_local_folder(model)?;
        return gguf_or_folder(model, gguf_file, options);
    }
    let Some(text) = model.to_str().filter(|text| looks_like_repo_id(text)) else {
        return Ok(model.to_path_buf());
    };
    let request = RepoRequest::parse(text, options.parsed_revision()?.as_ref())?;
    let snapshot = fetch(&request, options, &Want::load(options)?)?;
    // The cache rule, before anything is read from the snapshot: every entry must link to a
    // regular file in the repo's own blobs/ (a policy refusal naming the entry otherwise).
    HubCache::new(options.hub_settings().cache_dir)
        .repo(&request.repo)
        .snapshot_files(&snapshot.commit)?;
    gguf_or_folder(&snapshot.dir, gguf_file, options)
}

/// The GGUF file a load of folder `dir` reads ([`gguf_file::gguf_in_folder`]), else `dir`.
fn gguf_or_folder(dir: &Path, gguf_file: Option<&str>, options: &Options) -> Result<PathBuf> {
    match gguf_file::gguf_in_folder(dir, gguf_file)? {
        Some(file) => {
            refuse_quantizing_gguf(&file, options)?;
            Ok(file)
        }
        None => Ok(dir.to_path_buf()),
    }
}

/// Quantizing at load applies to f32/f16/bf16 checkpoints: a GGUF file's weights are quantized
/// already, and requantizing its blocks would only lose precision. An
/// [`Error::InvalidOption`] naming `model`.
fn refuse_quantizing_gguf(model: &Path, options: &Options) -> Result<()> {
    match options.weight_options().quantize() {
        Some(scheme) => Err(Error::option(
            "quantize",
            format!(
                "{}: a GGUF model is quantized already; load it without quantizing ({:?} would \
                 requantize its blocks), or with dtype f32 to dequantize them",
                model.display(),
                scheme
            ),
        )),
        None => Ok(()),
    }
}

/// `org/name` or `org/name@rev` with a valid repo id: exactly one `/` before any `@`, and not a
/// path-like start (`.`, `/`, `~`).
pub fn looks_like_repo_id(text: &str) -> bool {
    let id = text.split_once('@').map_or(text, |(id, _)| id);
    id.matches('/').count() == 1 && RepoId::parse(id).is_ok()
}

/// Fetches (or finds in the cache) what `want` asks of `request`. When locked, only through
/// the lockfile: the locked commit, no ref lookup, and the snapshot must match the lock exactly.
pub fn fetch(request: &RepoRequest, options: &Options, want: &Want) -> Result<Snapshot> {
    let client = HubClient::new(options.hub_settings())?;
    if options.is_locked() {
        return fetch_locked(&client, request, options, want);
    }
    let repo_cache = client.cache().repo(&request.repo);
    let revision = request.revision_or_main();
    let offline = client.settings().offline;
    // A pinned commit is immutable, and offline the cached ref is all there is: a usable
    // cached snapshot answers without a request.
    let cached_commit = match &revision {
        Revision::Commit(commit) => Some(commit.clone()),
        Revision::Ref(name) if offline => repo_cache.read_ref(name)?,
        Revision::Ref(_) => None,
    };
    if let Some(commit) = &cached_commit
        && let Some(snapshot) = want.cached_snapshot(&repo_cache, commit)
    {
        return Ok(snapshot);
    }
    // Offline, a load that the cache cannot serve whole (no weights the policy may read, or
    // files the commit's cached file list names are missing: a download killed half-way) is
    // "not cached", a refusal, whatever else the snapshot holds.
    if offline
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
    if let Want::Files(patterns) = want {
        return Ok(client.snapshot(&request.repo, &revision, patterns)?);
    }
    // A load chooses from the repo's listing (which GGUF file, if any), then fetches that.
    let commit = client.resolve(&request.repo, &revision)?;
    let listing = client.list_files(&request.repo, &commit)?;
    let include =
        want.patterns_for(listing.iter().map(|file| file.path.as_str()), &request.repo)?;
    Ok(client.snapshot_listed(&request.repo, &commit, &listing, &include)?)
}

/// [`fetch`] through the lockfile.
fn fetch_locked(
    client: &HubClient,
    request: &RepoRequest,
    options: &Options,
    want: &Want,
) -> Result<Snapshot> {
    let repo_cache = client.cache().repo(&request.repo);
    let lockfile_path = options.lockfile_path();
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
    let patterns = want.patterns_for(
        entry.files.iter().map(|file| file.path.as_str()),
        &request.repo,
    )?;
    // A load checks every file it may read; a plain download checks exactly the locked files.
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
    fn repo_ids_and_paths() -> Result<()> {
        assert!(looks_like_repo_id("org/name"));
        assert!(looks_like_repo_id("org/name@v1.0"));
        assert!(!looks_like_repo_id("gpt2"));
        assert!(!looks_like_repo_id("/nonexistent/model.safetensors"));
        assert!(!looks_like_repo_id("./model"));
        assert!(!looks_like_repo_id("a/b/c"));
        let main = Revision::main();
        let request = RepoRequest::parse("org/name@v1", None)?;
        assert_eq!(request.revision_or_main().as_str(), "v1");
        let conflict = RepoRequest::parse("org/name@v1", Some(&main));
        assert!(conflict.is_err_and(|error| error.is_usage_error()));
        let request = RepoRequest::parse("org/name", Some(&main))?;
        assert_eq!(request.revision, Some(main));
        Ok(())
    }
}
