//! `safeformers cache ls | verify [REPO] | rm REPO | import DIR --repo ID [--revision NAME]`.
//!
//! The cache is the one `huggingface_hub` uses (`HF_HUB_CACHE`, else `$HF_HOME/hub`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde::Serialize;

use safeformers_hub::cache::{RepoCache, import_folder};
use safeformers_hub::{HubCache, HubError, HubSettings, RepoId};

/// Arguments of `cache`.
#[derive(Debug, Args)]
pub struct CacheArgs {
    #[command(subcommand)]
    command: CacheCommand,
}

#[derive(Debug, Subcommand)]
enum CacheCommand {
    /// List the cached repos: refs, snapshots, sizes.
    Ls {
        /// Print JSON: {"cache", "repos": [{"repo", "size", "refs": {name: commit},
        /// "invalid_refs": {name: reason}, "snapshots": [{"commit", "files", "size",
        /// "refused": [{"path", "points_to", "problem"}]}]}]}.
        #[arg(long)]
        json: bool,
    },
    /// Check every snapshot (exit 3 on any problem): re-hash each blob against its name; report
    /// entries that do not link to a regular file in the repo's blobs/ folder, and files that
    /// huggingface_hub's cached file list for the commit names but the snapshot lacks.
    Verify {
        /// Only this repo (default: every cached repo).
        repo: Option<String>,
    },
    /// Delete a repo from the cache.
    Rm {
        /// The repo (`org/name`).
        repo: String,
    },
    /// Import a local folder as a cached snapshot of a repo; prints the snapshot folder.
    Import {
        /// The folder to import.
        dir: PathBuf,
        /// The repo id to file it under (`org/name`).
        #[arg(long, value_name = "ID")]
        repo: String,
        /// The ref to point at the imported snapshot.
        #[arg(long, value_name = "NAME", default_value = "main")]
        revision: String,
    },
}

#[derive(Debug, Serialize)]
struct CacheListing {
    cache: PathBuf,
    repos: Vec<RepoListing>,
}

#[derive(Debug, Serialize)]
struct RepoListing {
    repo: String,
    /// Bytes of the repo's blobs (each stored once, however many snapshots use it).
    size: u64,
    refs: BTreeMap<String, String>,
    /// Refs whose file cannot be read as a commit hash, with the reason.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    invalid_refs: BTreeMap<String, String>,
    snapshots: Vec<SnapshotListing>,
}

#[derive(Debug, Serialize)]
struct SnapshotListing {
    commit: String,
    files: usize,
    /// Sum of the sizes of the snapshot's files.
    size: u64,
    /// Entries that break the cache rule: never loaded, served or counted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    refused: Vec<RefusedListing>,
}

#[derive(Debug, Serialize)]
struct RefusedListing {
    path: String,
    points_to: PathBuf,
    problem: String,
}

/// Runs `cache`.
pub fn run(args: &CacheArgs) -> anyhow::Result<ExitCode> {
    let settings = HubSettings::from_env();
    let cache = HubCache::new(settings.cache_dir.clone());
    match &args.command {
        CacheCommand::Ls { json } => list(&cache, *json),
        CacheCommand::Verify { repo } => verify(&cache, repo.as_deref()),
        CacheCommand::Rm { repo } => remove(&cache, repo),
        CacheCommand::Import {
            dir,
            repo,
            revision,
        } => import(&cache, dir, repo, revision),
    }
}

fn list(cache: &HubCache, json: bool) -> anyhow::Result<ExitCode> {
    let mut repos = Vec::new();
    for repo_cache in cache.repos()? {
        let mut snapshots = Vec::new();
        for commit in repo_cache.snapshots()? {
            let listing = repo_cache.snapshot_listing(&commit)?;
            snapshots.push(SnapshotListing {
                commit: commit.to_string(),
                files: listing.files.len(),
                size: listing.files.iter().map(|file| file.size).sum(),
                refused: listing
                    .refused
                    .into_iter()
                    .map(|entry| RefusedListing {
                        path: entry.path.to_string(),
                        points_to: entry.points_to,
                        problem: entry.problem.to_string(),
                    })
                    .collect(),
            });
        }
        let ref_listing = repo_cache.ref_listing()?;
        let refs = ref_listing
            .refs
            .into_iter()
            .map(|(name, commit)| (name, commit.to_string()))
            .collect();
        let invalid_refs = ref_listing
            .invalid
            .into_iter()
            .map(|(name, error)| (name, error.to_string()))
            .collect();
        repos.push(RepoListing {
            repo: repo_cache.repo().to_string(),
            size: blobs_size(&repo_cache)?,
            refs,
            invalid_refs,
            snapshots,
        });
    }
    let listing = CacheListing {
        cache: cache.root().to_path_buf(),
        repos,
    };
    if json {
        crate::output::print_json(&listing)?;
    } else {
        crate::output::print(&render_listing(&listing))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn render_listing(listing: &CacheListing) -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "cache: {}  repos: {}",
        listing.cache.display(),
        listing.repos.len()
    );
    for repo in &listing.repos {
        let refs: Vec<String> = repo
            .refs
            .iter()
            .map(|(name, commit)| format!("{name} -> {}", short(commit)))
            .collect();
        let _ = writeln!(
            text,
            "{}  {}  refs: {}",
            repo.repo,
            human_size(repo.size),
            if refs.is_empty() {
                "-".to_string()
            } else {
                refs.join(", ")
            }
        );
        for (name, reason) in &repo.invalid_refs {
            let _ = writeln!(text, "  invalid ref {name}: {reason}");
        }
        for snapshot in &repo.snapshots {
            let _ = writeln!(
                text,
                "  snapshot {}  {} files  {}",
                snapshot.commit,
                snapshot.files,
                human_size(snapshot.size)
            );
            for refused in &snapshot.refused {
                let _ = writeln!(
                    text,
                    "    refused {} -> {} ({})",
                    refused.path,
                    refused.points_to.display(),
                    refused.problem
                );
            }
        }
    }
    text
}

fn verify(cache: &HubCache, repo: Option<&str>) -> anyhow::Result<ExitCode> {
    let repos = match repo {
        Some(id) => vec![cached_repo(cache, id)?],
        None => cache.repos()?,
    };
    let mut report = String::new();
    let mut problems = Vec::new();
    let mut corrupt_blob = None;
    for repo_cache in &repos {
        for commit in repo_cache.snapshots()? {
            let checked = repo_cache.verify(&commit)?;
            let verdict = if checked.is_ok() { "ok" } else { "CORRUPT" };
            let _ = writeln!(
                report,
                "{verdict:<7}  {}@{}  {} files",
                repo_cache.repo(),
                short(commit.as_str()),
                checked.files
            );
            let mut lines = Vec::new();
            for failure in &checked.corrupt {
                lines.push(format!(
                    "{}: content has sha256/sha1 {}, blob name promises {}",
                    failure.path, failure.actual, failure.expected
                ));
                corrupt_blob.get_or_insert_with(|| failure.clone());
            }
            for refused in &checked.refused {
                lines.push(format!(
                    "{}: refused entry, points to {} ({})",
                    refused.path,
                    refused.points_to.display(),
                    refused.problem
                ));
            }
            for missing in &checked.missing {
                lines.push(format!("{}: missing, {}", missing.path, missing.reason));
            }
            for line in lines {
                let _ = writeln!(report, "         {line}");
                problems.push(format!("{}: {line}", repo_cache.repo()));
            }
        }
    }
    crate::output::print(&report)?;
    if problems.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    let summary = format!(
        "{} problem(s) in the cache ({}); delete the repo with `safeformers cache rm` and fetch \
         it again",
        problems.len(),
        problems.join("; ")
    );
    let cause = match corrupt_blob {
        Some(first) => HubError::CorruptCache {
            path: first.blob,
            expected: first.expected,
            actual: first.actual,
        },
        None => HubError::CacheVerifyFailed {
            problems: problems.len(),
        },
    };
    Err(anyhow::Error::new(cause).context(summary))
}

fn remove(cache: &HubCache, id: &str) -> anyhow::Result<ExitCode> {
    let repo_cache = cached_repo(cache, id)?;
    let size = blobs_size(&repo_cache)?;
    repo_cache.remove()?;
    crate::output::print(&format!(
        "removed {} ({}) from {}\n",
        repo_cache.repo(),
        human_size(size),
        cache.root().display()
    ))?;
    Ok(ExitCode::SUCCESS)
}

fn import(cache: &HubCache, dir: &Path, id: &str, revision: &str) -> anyhow::Result<ExitCode> {
    let repo = RepoId::parse(id)?;
    if !dir.is_dir() {
        anyhow::bail!(
            "{}: not a folder (cache import takes a model folder)",
            dir.display()
        );
    }
    let snapshot = import_folder(cache, dir, &repo, revision)
        .with_context(|| format!("importing {} as {repo}", dir.display()))?;
    crate::output::print(&format!(
        "imported {} as {repo}@{revision} (commit {})\n{}\n",
        dir.display(),
        snapshot.commit,
        snapshot.dir.display()
    ))?;
    Ok(ExitCode::SUCCESS)
}

/// The cache of `id`, which must have a folder in the cache.
fn cached_repo(cache: &HubCache, id: &str) -> anyhow::Result<RepoCache> {
    let repo = RepoId::parse(id)?;
    let repo_cache = cache.repo(&repo);
    if !repo_cache.dir().is_dir() {
        anyhow::bail!(
            "repo `{repo}` is not in the cache at {}",
            cache.root().display()
        );
    }
    Ok(repo_cache)
}

/// Bytes of `blobs/` (the repo's stored content).
fn blobs_size(repo_cache: &RepoCache) -> anyhow::Result<u64> {
    let dir = repo_cache.dir().join("blobs");
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(error) => return Err(HubError::io(&dir)(error).into()),
    };
    let mut total = 0u64;
    for entry in entries {
        let entry = entry.map_err(HubError::io(&dir))?;
        let meta = entry.metadata().map_err(HubError::io(entry.path()))?;
        if meta.is_file() {
            total = total.saturating_add(meta.len());
        }
    }
    Ok(total)
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KB", "MB", "GB", "TB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64;
    let mut unit = "B";
    for next in UNITS {
        if value < 1000.0 {
            break;
        }
        value /= 1000.0;
        unit = next;
    }
    format!("{value:.1} {unit}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_people_write_them() {
        assert_eq!(human_size(12), "12 B");
        assert_eq!(human_size(90_868_376), "90.9 MB");
        assert_eq!(human_size(1_500), "1.5 KB");
    }
}
