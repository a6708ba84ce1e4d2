//! A tool package, from a Hub repo at a revision or from a local folder.
//!
//! Exactly two files are ever fetched or read: `tool.json` and `tool.wasm`, each by name. Nothing
//! else in the repo is listed, downloaded or opened: not `tool.py`, not a precompiled
//! `tool.cwasm` (compiled code is only ever our own, compiled from the verified `tool.wasm`),
//! not a README. A repo is fetched through the Hub client and its cache, so every byte is
//! verified against the hash the Hub announced, a pinned commit answers from the cache without a
//! request, and `--offline` opens no socket.
//!
//! Both files are read once into memory, and the hashes, the manifest and the bytes handed on
//! all come from that one read: what is approved, or checked against an approval, is exactly
//! what runs.

use std::fmt;
use std::path::{Path, PathBuf};

use safeformers_files::ReadCap;
use safeformers_hub::{
    CommitHash, HubClient, HubError, HubSettings, RepoFilePath, RepoId, Revision,
};

use crate::canonical_json::sha256_hex;
use crate::error::{Result, ToolError};
use crate::manifest::{TOOL_JSON, TOOL_WASM, ToolManifest, manifest_cap};

/// Largest `tool.wasm` read (componentize-py components are tens of MiB).
pub const MAX_TOOL_WASM_BYTES: u64 = 256 << 20;

/// A tool repo and the revision asked for: `org/name[@REV]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolRequest {
    /// The repo.
    pub repo: RepoId,
    /// The revision after `@`, if any (`main` when none).
    pub revision: Option<Revision>,
}

impl ToolRequest {
    /// Parses `org/name` or `org/name@REV` (a branch, tag or 40-hex commit).
    pub fn parse(spec: &str) -> Result<ToolRequest> {
        let invalid = |error: HubError| ToolError::InvalidSpec {
            spec: spec
                .chars()
                .take(200)
                .flat_map(char::escape_debug)
                .collect(),
            reason: error.to_string(),
        };
        let (id, revision) = match spec.split_once('@') {
            Some((id, revision)) => (id, Some(Revision::parse(revision).map_err(invalid)?)),
            None => (spec, None),
        };
        Ok(ToolRequest {
            repo: RepoId::parse(id).map_err(invalid)?,
            revision,
        })
    }

    /// The revision to resolve: the one asked for, else `main`.
    pub fn revision_or_main(&self) -> Revision {
        self.revision.clone().unwrap_or_default()
    }
}

/// Where a package came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolSource {
    /// A Hub repo at a commit.
    Hub {
        /// The repo.
        repo: RepoId,
        /// The revision asked for (a branch, tag or the commit itself).
        revision: Revision,
        /// The commit it resolved to.
        commit: CommitHash,
    },
    /// A local folder (never approvable: it has no commit).
    Folder {
        /// The folder as given.
        dir: PathBuf,
    },
}

impl ToolSource {
    /// The repo, for a Hub package.
    pub fn repo(&self) -> Option<&RepoId> {
        match self {
            ToolSource::Hub { repo, .. } => Some(repo),
            ToolSource::Folder { .. } => None,
        }
    }

    /// The commit, for a Hub package.
    pub fn commit(&self) -> Option<&CommitHash> {
        match self {
            ToolSource::Hub { commit, .. } => Some(commit),
            ToolSource::Folder { .. } => None,
        }
    }
}

impl fmt::Display for ToolSource {
    /// `org/name@commit`, or the folder.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ToolSource::Hub { repo, commit, .. } => write!(f, "{repo}@{commit}"),
            ToolSource::Folder { dir } => write!(f, "{}", dir.display()),
        }
    }
}

/// One file of a package, for display.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PackageFile {
    /// `tool.json` or `tool.wasm`.
    pub path: &'static str,
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-256, 64 lowercase hex digits.
    pub sha256: String,
}

/// A tool package, read and checked: its manifest parsed strictly, its schemas compiled, its
/// files and definition hashed. Not approved by being read: see [`crate::approval`].
#[derive(Debug, Clone)]
pub struct ToolPackage {
    /// Where it came from.
    pub source: ToolSource,
    /// `tool.json`, parsed.
    pub manifest: ToolManifest,
    /// SHA-256 of `tool.json`.
    pub tool_json_sha256: String,
    /// SHA-256 of `tool.wasm`.
    pub tool_wasm_sha256: String,
    /// SHA-256 of the RFC 8785 canonical JSON of the definition (name, description,
    /// parameters, output_schema).
    pub definition_sha256: String,
    /// `tool.json` and `tool.wasm`, with size and SHA-256.
    pub files: Vec<PackageFile>,
    /// Where `tool.wasm` is on disk, for messages: what runs is [`ToolPackage::wasm`], the
    /// bytes that were hashed.
    pub wasm_path: PathBuf,
    /// The bytes of `tool.wasm` that were hashed.
    pub wasm: Vec<u8>,
}

/// The two files of a package as read, hashed, before the manifest is parsed.
#[derive(Debug, Clone)]
pub(crate) struct PackageBytes {
    pub(crate) tool_json: Vec<u8>,
    pub(crate) tool_json_sha256: String,
    pub(crate) wasm: Vec<u8>,
    pub(crate) tool_wasm_sha256: String,
    pub(crate) wasm_path: PathBuf,
    /// How errors name `tool.json` (`org/name@commit/tool.json`, or its path in the folder).
    pub(crate) manifest_name: PathBuf,
}

impl PackageBytes {
    /// Reads both files: `tool.json` (at most 1 MiB) and `tool.wasm` (at most
    /// [`MAX_TOOL_WASM_BYTES`]), regular files only (a FIFO is refused, never waited on).
    pub(crate) fn read(json: &Path, wasm: &Path, source_name: &str) -> Result<PackageBytes> {
        let read = |path: &Path, file: &'static str, cap: ReadCap| {
            safeformers_files::read_capped(path, cap).map_err(|error| {
                if error.is_not_found() {
                    ToolError::MissingFile {
                        source_name: source_name.to_string(),
                        file,
                    }
                } else {
                    error.into()
                }
            })
        };
        let tool_json = read(json, TOOL_JSON, manifest_cap())?;
        let wasm_bytes = read(
            wasm,
            TOOL_WASM,
            ReadCap::new("a tool component (tool.wasm)", MAX_TOOL_WASM_BYTES),
        )?;
        Ok(PackageBytes {
            tool_json_sha256: sha256_hex(&tool_json),
            tool_json,
            tool_wasm_sha256: sha256_hex(&wasm_bytes),
            wasm: wasm_bytes,
            wasm_path: wasm.to_path_buf(),
            manifest_name: PathBuf::from(format!("{source_name}/{TOOL_JSON}")),
        })
    }

    /// Parses the manifest and hashes the definition: the package.
    pub(crate) fn into_package(self, source: ToolSource) -> Result<ToolPackage> {
        let manifest = ToolManifest::parse(&self.tool_json, &self.manifest_name)?;
        let definition_sha256 = manifest.definition_sha256(&self.manifest_name)?;
        let files = vec![
            PackageFile {
                path: TOOL_JSON,
                size: self.tool_json.len() as u64,
                sha256: self.tool_json_sha256.clone(),
            },
            PackageFile {
                path: TOOL_WASM,
                size: self.wasm.len() as u64,
                sha256: self.tool_wasm_sha256.clone(),
            },
        ];
        Ok(ToolPackage {
            source,
            manifest,
            tool_json_sha256: self.tool_json_sha256,
            tool_wasm_sha256: self.tool_wasm_sha256,
            definition_sha256,
            files,
            wasm_path: self.wasm_path,
            wasm: self.wasm,
        })
    }
}

/// Fetches `tool.json` and `tool.wasm` of `repo` at `commit` into the cache (each verified
/// against the Hub's hash; cached files at a commit need no request) and reads them.
pub(crate) fn fetch_bytes(
    client: &HubClient,
    repo: &RepoId,
    commit: &CommitHash,
) -> Result<PackageBytes> {
    let pinned = Revision::Commit(commit.clone());
    let repo_cache = client.cache().repo(repo);
    let mut paths = Vec::with_capacity(2);
    for name in [TOOL_JSON, TOOL_WASM] {
        let path = RepoFilePath::parse(name)?;
        let entry = client.download_file(repo, &pinned, &path)?;
        // The cache rule, before reading: the entry must be a blob of this repo's own cache.
        repo_cache
            .resolve_entry(&entry)
            .map_err(|(problem, points_to)| HubError::CacheEntryRefused {
                entry: entry.clone(),
                points_to,
                problem: problem.to_string(),
            })?;
        paths.push(entry);
    }
    let source_name = format!("{repo}@{commit}");
    match paths.as_slice() {
        [json, wasm] => PackageBytes::read(json, wasm, &source_name),
        _ => Err(ToolError::MissingFile {
            source_name,
            file: TOOL_WASM,
        }),
    }
}

/// Fetches a package from the Hub: resolves the revision (a ref through the Hub, or the cache
/// offline; a commit as it is), then only `tool.json` and `tool.wasm`.
pub fn fetch_package(request: &ToolRequest, client: &HubClient) -> Result<ToolPackage> {
    let revision = request.revision_or_main();
    let commit = client.resolve(&request.repo, &revision)?;
    let bytes = fetch_bytes(client, &request.repo, &commit)?;
    bytes.into_package(ToolSource::Hub {
        repo: request.repo.clone(),
        revision,
        commit,
    })
}

/// Reads a package from a local folder: `tool.json` and `tool.wasm` directly in it. Links that
/// leave the folder are refused first (a policy refusal), as for a model folder.
pub fn read_folder(dir: &Path) -> Result<ToolPackage> {
    safeformers_hub::cache::check_local_folder(dir)?;
    let source_name = dir.display().to_string();
    let bytes = PackageBytes::read(&dir.join(TOOL_JSON), &dir.join(TOOL_WASM), &source_name)?;
    bytes.into_package(ToolSource::Folder {
        dir: dir.to_path_buf(),
    })
}

/// A package named on the command line: a folder when one exists at `spec`, else a repo
/// `org/name[@REV]` fetched with `settings` (endpoint, cache, offline).
pub fn open_package(spec: &str, settings: &HubSettings) -> Result<ToolPackage> {
    let path = Path::new(spec);
    if path.is_dir() {
        return read_folder(path);
    }
    let request = ToolRequest::parse(spec)?;
    let client = HubClient::new(settings.clone())?;
    fetch_package(&request, &client)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn requests() {
        let request = ToolRequest::parse("org/tool").unwrap();
        assert_eq!(request.revision_or_main(), Revision::main());
        let request = ToolRequest::parse("org/tool@v1").unwrap();
        assert_eq!(request.revision_or_main().as_str(), "v1");
        let commit = "ab".repeat(20);
        let request = ToolRequest::parse(&format!("org/tool@{commit}")).unwrap();
        assert!(request.revision.unwrap().as_commit().is_some());
        for bad in ["org/tool@", "a/b/c", "org/to ol", "org/tool@../x"] {
            assert!(ToolRequest::parse(bad).is_err(), "{bad}");
        }
    }

    /// The README demo's tool reads as a package: its manifest is valid under the strict
    /// parser, and only its two files are read (the folder also holds its Rust source).
    #[test]
    fn the_example_tool_reads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/tools/word_count");
        let package = read_folder(&dir).unwrap();
        assert_eq!(package.manifest.name, "word_count");
        assert_eq!(package.manifest.capabilities.fs[0].guest, "/data");
        assert_eq!(package.files.len(), 2);
        assert!(package.wasm.starts_with(b"\0asm"));
        assert_eq!(package.definition_sha256.len(), 64);
    }
}
