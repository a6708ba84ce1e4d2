//! The commit's file list that huggingface_hub 2.x caches next to the snapshots
//! (`<repo folder>/trees/<commit>.json`): `{"format_version": 1, "files": {path: {"size",
//! "blob_id", "lfs_sha256"?, ...}}}`. When it is there, `cache verify` can tell that a snapshot
//! lacks a file, which is what Python raises `IncompleteSnapshotError` for.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use safeformers_files::{caps, read_capped_if_exists};

use crate::cache::{MissingFile, SnapshotListing};
use crate::error::{HubError, Result};
use crate::names::CommitHash;

/// The only format version huggingface_hub writes (it ignores others, and so do we).
const FORMAT_VERSION: u64 = 1;

/// A commit's cached file list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeListing {
    files: BTreeMap<String, TreeEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
struct TreeEntry {
    blob_id: String,
    #[serde(default)]
    lfs_sha256: Option<String>,
}

#[derive(Debug, Deserialize)]
struct TreeFile {
    format_version: u64,
    #[serde(default)]
    files: BTreeMap<String, TreeEntry>,
}

/// Reads `repo_dir/trees/<commit>.json`: `None` when it is absent or of another format version.
pub fn read(repo_dir: &Path, commit: &CommitHash) -> Result<Option<TreeListing>> {
    let path = repo_dir
        .join("trees")
        .join(format!("{}.json", commit.as_str()));
    let Some(bytes) = read_capped_if_exists(&path, caps::TREE_LISTING)? else {
        return Ok(None);
    };
    let file: TreeFile =
        serde_json::from_slice(&bytes).map_err(|error| HubError::InvalidTreeListing {
            path: path.clone(),
            reason: error.to_string(),
        })?;
    if file.format_version != FORMAT_VERSION {
        return Ok(None);
    }
    Ok(Some(TreeListing { files: file.files }))
}

impl TreeListing {
    /// The paths the commit holds, sorted.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.files.keys().map(String::as_str)
    }

    /// The listed files that `listing` lacks, or holds as another blob than the list says. An
    /// entry that breaks the cache rule is reported as such already, and not again here.
    pub fn missing_from(&self, listing: &SnapshotListing) -> Vec<MissingFile> {
        let mut missing = Vec::new();
        for (path, entry) in &self.files {
            if listing
                .refused
                .iter()
                .any(|refused| refused.path.as_str() == path)
            {
                continue;
            }
            let expected = entry.lfs_sha256.as_deref().unwrap_or(&entry.blob_id);
            match listing.files.iter().find(|file| file.path.as_str() == path) {
                None => missing.push(MissingFile {
                    path: printable(path),
                    reason: "listed for this commit, absent from the snapshot".to_string(),
                }),
                Some(file) if file.blob.etag.as_str() != expected => missing.push(MissingFile {
                    path: printable(path),
                    reason: format!(
                        "the snapshot holds blob {}, the commit's file list says {}",
                        file.blob.etag,
                        printable(expected)
                    ),
                }),
                Some(_) => {}
            }
        }
        missing
    }
}

/// A name from the file, shortened and without control characters, for messages.
fn printable(text: &str) -> String {
    text.chars()
        .take(200)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}
