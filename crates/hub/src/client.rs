//! The Hub protocol over HTTP, and downloads into the cache.
//!
//! (Contract for the implementation; see the issue.)

use std::path::PathBuf;

use crate::cache::{HubCache, Snapshot};
use crate::error::{HubError, Result};
use crate::names::{CommitHash, Etag, RepoFilePath};
use crate::repo::{RepoId, Revision};
use crate::settings::HubSettings;

/// A file of a repo at a commit, as the tree API lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoFile {
    /// Its path in the repo.
    pub path: RepoFilePath,
    /// Its size in bytes.
    pub size: u64,
    /// Its blob id: the LFS SHA-256 for LFS files, else the git blob SHA-1.
    pub etag: Etag,
}

/// A client of one Hub endpoint, writing into one cache.
#[derive(Debug)]
pub struct HubClient {
    settings: HubSettings,
    cache: HubCache,
}

fn not_built() -> HubError {
    HubError::Network {
        url: String::new(),
        reason: "the Hub client is not built yet".to_string(),
    }
}

impl HubClient {
    /// A client with these settings.
    pub fn new(settings: HubSettings) -> Result<HubClient> {
        let cache = HubCache::new(settings.cache_dir.clone());
        Ok(HubClient { settings, cache })
    }

    /// The settings.
    pub fn settings(&self) -> &HubSettings {
        &self.settings
    }

    /// The cache.
    pub fn cache(&self) -> &HubCache {
        &self.cache
    }

    /// Resolves a revision to a commit.
    pub fn resolve(&self, repo: &RepoId, revision: &Revision) -> Result<CommitHash> {
        let _ = (repo, revision);
        Err(not_built())
    }

    /// Lists a repo's files at a commit.
    pub fn list_files(&self, repo: &RepoId, commit: &CommitHash) -> Result<Vec<RepoFile>> {
        let _ = (repo, commit);
        Err(not_built())
    }

    /// Downloads (or finds in the cache) one file, verified; returns its snapshot path.
    pub fn download_file(
        &self,
        repo: &RepoId,
        revision: &Revision,
        path: &RepoFilePath,
    ) -> Result<PathBuf> {
        let _ = (repo, revision, path);
        Err(not_built())
    }

    /// Downloads (or finds in the cache) every file matching `include` (all files when empty).
    pub fn snapshot(
        &self,
        repo: &RepoId,
        revision: &Revision,
        include: &[String],
    ) -> Result<Snapshot> {
        let _ = (repo, revision, include);
        Err(not_built())
    }
}
