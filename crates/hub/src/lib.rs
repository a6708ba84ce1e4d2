//! The Hub, trusted for nothing.
//!
//! - [`repo`]: validated repo ids (`org/name`) and revisions (branch, tag, `refs/pr/N`, commit).
//! - [`names`]: checks on every name a server sends before it touches the filesystem (file paths
//!   in a repo, commit hashes, etags).
//! - [`cache`]: the cache, byte-compatible with Python's `huggingface_hub`
//!   (`models--org--name/{blobs,snapshots,refs,.no_exist}`), so both tools share one.
//! - [`settings`]: `HF_HOME`, `HF_HUB_CACHE`, `HF_ENDPOINT`, `HF_TOKEN`, `HF_HUB_OFFLINE`, read as
//!   `huggingface_hub` reads them.
//! - [`client`]: the Hub protocol over HTTP: resolve a revision to a commit, list and download
//!   files into the cache, every LFS file's sha256 verified while it streams.
//! - [`lockfile`]: `safeformers.lock`, Cargo.lock for models.
//! - [`mirror`] (feature `mirror`): serves a cache as a Hub endpoint for air-gapped clusters.

#![forbid(unsafe_code)]

pub mod cache;
pub mod client;
pub mod error;
pub mod glob;
mod http;
pub mod lfs;
pub mod load_files;
pub mod lockfile;
#[cfg(feature = "mirror")]
pub mod mirror;
pub mod names;
pub mod repo;
pub mod settings;
pub mod tree_listing;

pub use cache::{HubCache, RepoCache, Snapshot};
pub use client::{HubClient, RepoFile, RetryPolicy};
pub use error::{HubError, Result};
pub use names::{CommitHash, Etag, RepoFilePath};
pub use repo::{RepoId, RepoType, Revision};
pub use settings::HubSettings;
