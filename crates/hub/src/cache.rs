//! The cache, laid out exactly as Python's `huggingface_hub` lays it out, so that a cache filled
//! by one tool is used by the other:
//!
//! ```text
//! <cache>/models--org--name/
//!     blobs/<etag>                      file content, named by git blob SHA-1 or LFS SHA-256
//!     snapshots/<commit>/<path>         relative symlinks to ../../blobs/<etag>
//!     refs/<branch or tag>              the commit a ref pointed to when last resolved
//!     .no_exist/<commit>/<path>         empty markers: the file does not exist at that commit
//! <cache>/.locks/models--org--name/<etag>.lock
//! ```
//!
//! Every name joined into a path here is one of the checked types of [`crate::names`], so no
//! value from a server can steer a write outside the repo's folder.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha1::Sha1;
use sha2::{Digest, Sha256};

use safeformers_files::{caps, open_regular, read_capped_string_if_exists};

use crate::error::{HubError, Result};
use crate::names::{CommitHash, Etag, RepoFilePath};
use crate::repo::{RepoId, Revision};
use safeformers_files::FileKind;

/// The root of a hub cache (`HF_HUB_CACHE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubCache {
    root: PathBuf,
}

impl HubCache {
    /// A cache rooted at `root` (created when first written to).
    pub fn new(root: impl Into<PathBuf>) -> HubCache {
        HubCache { root: root.into() }
    }

    /// The root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The part of the cache that belongs to `repo`.
    pub fn repo(&self, repo: &RepoId) -> RepoCache {
        let folder = repo.cache_folder_name();
        RepoCache {
            repo: repo.clone(),
            dir: self.root.join(&folder),
            locks_dir: self.root.join(".locks").join(folder),
        }
    }

    /// Every repo with a folder in the cache, sorted.
    pub fn repos(&self) -> Result<Vec<RepoCache>> {
        let entries = match fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(HubError::io(&self.root)(error)),
        };
        let mut repos = Vec::new();
        for entry in entries {
            let entry = entry.map_err(HubError::io(&self.root))?;
            if let Some(repo) = entry
                .file_name()
                .to_str()
                .and_then(RepoId::from_cache_folder_name)
            {
                repos.push(self.repo(&repo));
            }
        }
        repos.sort_by(|a, b| a.repo.cmp(&b.repo));
        Ok(repos)
    }
}

/// One repo's folder in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoCache {
    repo: RepoId,
    dir: PathBuf,
    locks_dir: PathBuf,
}

/// A snapshot: a local folder holding a repo's files at one commit. Loaders read from `dir`
/// and never look at the network again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The repo.
    pub repo: RepoId,
    /// The commit the folder is pinned to.
    pub commit: CommitHash,
    /// `<cache>/models--org--name/snapshots/<commit>`.
    pub dir: PathBuf,
}

/// A file of a cached snapshot: an entry that keeps the cache rule (see [`RepoCache::resolve_entry`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedFile {
    /// Its path in the repo.
    pub path: RepoFilePath,
    /// The entry in the snapshot folder (a symlink into `blobs/`).
    pub local_path: PathBuf,
    /// The blob it resolves to, and that blob's name.
    pub blob: CachedBlob,
    /// Its size in bytes.
    pub size: u64,
}

/// A blob of the repo's own `blobs/` folder that a snapshot entry resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedBlob {
    /// Its resolved path (no symbolic links left).
    pub path: PathBuf,
    /// Its name: the hash its content must have.
    pub etag: Etag,
}

/// Why a snapshot entry is not cache content. The rule, for loads, the mirror, `cache ls` and
/// `cache verify` alike: an entry of `snapshots/<commit>/` resolves to a regular file directly
/// inside the repo's own `blobs/` folder, named by its hash. Anything else could make a cache that
/// Python, another tool or another user wrote hand us any file on the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryProblem {
    /// A link to nothing.
    Dangling,
    /// It resolves somewhere that is not directly inside the repo's `blobs/` folder.
    OutsideBlobs,
    /// It resolves into `blobs/`, to something that is not a regular file.
    NotRegular(FileKind),
    /// It resolves into `blobs/`, under a name that is not a blob hash.
    NotABlobName,
    /// The repo has no `blobs/` folder, or that folder is itself a link.
    NoBlobsFolder,
}

impl std::fmt::Display for EntryProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EntryProblem::Dangling => f.write_str("a link to nothing"),
            EntryProblem::OutsideBlobs => f.write_str("not a blob of this repo's blobs/ folder"),
            EntryProblem::NotRegular(kind) => write!(f, "{kind} in blobs/, not a regular file"),
            EntryProblem::NotABlobName => f.write_str("a file in blobs/ not named by a hash"),
            EntryProblem::NoBlobsFolder => {
                f.write_str("the repo has no real blobs/ folder (missing, or a link)")
            }
        }
    }
}

/// A snapshot entry that breaks the cache rule, with where it points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedEntry {
    /// Its path in the repo.
    pub path: RepoFilePath,
    /// The entry in the snapshot folder.
    pub local_path: PathBuf,
    /// Where it points: resolved when it resolves, else the link as written.
    pub points_to: PathBuf,
    /// What is wrong.
    pub problem: EntryProblem,
}

impl std::fmt::Display for RefusedEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} points to {}: {}",
            self.local_path.display(),
            self.points_to.display(),
            self.problem
        )
    }
}

impl From<RefusedEntry> for HubError {
    fn from(entry: RefusedEntry) -> HubError {
        HubError::CacheEntryRefused {
            entry: entry.local_path,
            points_to: entry.points_to,
            problem: entry.problem.to_string(),
        }
    }
}

/// The entries of a cached snapshot: those that keep the cache rule, and those that do not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotListing {
    /// Entries that resolve to a blob, sorted by path.
    pub files: Vec<CachedFile>,
    /// Entries that break the rule, sorted by path.
    pub refused: Vec<RefusedEntry>,
}

/// The refs of a cached repo ([`RepoCache::ref_listing`]).
#[derive(Debug, Default)]
pub struct RefListing {
    /// Refs that point to a commit, sorted by name.
    pub refs: Vec<(String, CommitHash)>,
    /// Refs whose file cannot be read as a commit, with why, sorted by name.
    pub invalid: Vec<(String, HubError)>,
}

/// What `cache verify` finds in one snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Entries that resolve to a blob.
    pub files: usize,
    /// Blobs whose content does not match their name.
    pub corrupt: Vec<VerifyFailure>,
    /// Entries that break the cache rule.
    pub refused: Vec<RefusedEntry>,
    /// Files that the commit's cached file list (`trees/<commit>.json`, written by
    /// huggingface_hub 2.x) names and the snapshot lacks or holds with other content.
    pub missing: Vec<MissingFile>,
}

impl VerifyReport {
    /// Whether nothing is wrong.
    pub fn is_ok(&self) -> bool {
        self.corrupt.is_empty() && self.refused.is_empty() && self.missing.is_empty()
    }
}

/// A file the commit's cached file list names that the snapshot lacks or holds with other content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingFile {
    /// Its path in the repo.
    pub path: String,
    /// What is wrong: absent, or a different blob.
    pub reason: String,
}

/// A cached file whose content does not match its blob name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyFailure {
    /// The file in the snapshot.
    pub path: RepoFilePath,
    /// The blob.
    pub blob: PathBuf,
    /// The hash its name promises.
    pub expected: String,
    /// The hash of its content.
    pub actual: String,
}

/// Holds an exclusive lock on one blob of one repo while it is downloaded or imported; released
/// on drop. Two processes fetching the same file take turns and produce one good blob.
#[derive(Debug)]
pub struct BlobLock {
    _file: File,
}

impl RepoCache {
    /// The repo.
    pub fn repo(&self) -> &RepoId {
        &self.repo
    }

    /// `<cache>/models--org--name`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `blobs/<etag>`.
    pub fn blob_path(&self, etag: &Etag) -> PathBuf {
        self.dir.join("blobs").join(etag.as_str())
    }

    /// Where a blob is written while it downloads (`blobs/<etag>.incomplete`); a later download
    /// resumes from its length with an HTTP `Range` request.
    pub fn incomplete_path(&self, etag: &Etag) -> PathBuf {
        self.dir
            .join("blobs")
            .join(format!("{}.incomplete", etag.as_str()))
    }

    /// `snapshots/<commit>`.
    pub fn snapshot_dir(&self, commit: &CommitHash) -> PathBuf {
        self.dir.join("snapshots").join(commit.as_str())
    }

    /// The snapshot of `commit` (whether or not its folder exists yet).
    pub fn snapshot(&self, commit: &CommitHash) -> Snapshot {
        Snapshot {
            repo: self.repo.clone(),
            commit: commit.clone(),
            dir: self.snapshot_dir(commit),
        }
    }

    /// `snapshots/<commit>/<path>`, whether or not it exists.
    pub fn snapshot_file(&self, commit: &CommitHash, path: &RepoFilePath) -> PathBuf {
        self.snapshot_dir(commit).join(path.to_relative_path())
    }

    /// The cached file at `commit`, if its entry is there and keeps the cache rule
    /// ([`RepoCache::resolve_entry`]); an entry that breaks it counts as not cached, so a download
    /// replaces it.
    pub fn cached_file(&self, commit: &CommitHash, path: &RepoFilePath) -> Option<PathBuf> {
        let file = self.snapshot_file(commit, path);
        self.resolve_entry(&file).is_ok().then_some(file)
    }

    /// The repo's `blobs/` folder, resolved, if it is a real folder (not a link to one).
    fn blobs_root(&self) -> Option<PathBuf> {
        let dir = self.dir.join("blobs");
        let meta = fs::symlink_metadata(&dir).ok()?;
        if !meta.is_dir() {
            return None;
        }
        fs::canonicalize(&dir).ok()
    }

    /// Applies the cache rule to one snapshot entry: it must resolve (through any links) to a
    /// regular file directly inside this repo's own `blobs/` folder, named by a hash. Returns that
    /// blob, or what is wrong and where the entry points.
    pub fn resolve_entry(
        &self,
        entry: &Path,
    ) -> std::result::Result<(CachedBlob, u64), (EntryProblem, PathBuf)> {
        let written = || safeformers_files::link_target_for_message(entry);
        let Ok(target) = fs::canonicalize(entry) else {
            return Err((EntryProblem::Dangling, written()));
        };
        let Some(blobs) = self.blobs_root() else {
            return Err((EntryProblem::NoBlobsFolder, target));
        };
        if target.parent() != Some(blobs.as_path()) {
            return Err((EntryProblem::OutsideBlobs, target));
        }
        let Some(etag) = target
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| Etag::parse(name).ok())
        else {
            return Err((EntryProblem::NotABlobName, target));
        };
        let meta = match fs::metadata(&target) {
            Ok(meta) => meta,
            Err(_) => return Err((EntryProblem::Dangling, target)),
        };
        let kind = FileKind::of(meta.file_type());
        if kind != FileKind::Regular {
            return Err((EntryProblem::NotRegular(kind), target));
        }
        Ok((CachedBlob { path: target, etag }, meta.len()))
    }

    fn ref_path(&self, name: &str) -> Result<PathBuf> {
        // Ref names are checked (no `..`, no empty segment) by `Revision::parse`.
        match Revision::parse(name)? {
            Revision::Ref(name) => Ok(self.dir.join("refs").join(name)),
            Revision::Commit(_) => Err(HubError::InvalidRevision {
                revision: name.to_string(),
                reason: "a commit hash is not a ref name",
            }),
        }
    }

    /// The commit `refs/<name>` points to, if the ref is cached. A ref file whose content is not a
    /// commit hash is an error, not a path.
    pub fn read_ref(&self, name: &str) -> Result<Option<CommitHash>> {
        let path = self.ref_path(name)?;
        match read_capped_string_if_exists(&path, caps::REF)? {
            Some(content) => CommitHash::parse(content.trim()).map(Some).map_err(|_| {
                HubError::InvalidCachedRef {
                    path,
                    content: content.chars().take(64).collect(),
                }
            }),
            None => Ok(None),
        }
    }

    /// Points `refs/<name>` at `commit`, atomically (a temporary file, then a rename).
    pub fn write_ref(&self, name: &str, commit: &CommitHash) -> Result<()> {
        let path = self.ref_path(name)?;
        write_atomically(&path, commit.as_str().as_bytes())
    }

    /// The names of every cached ref (`main`, `refs/pr/1`, ...), sorted; nothing is read.
    pub fn ref_names(&self) -> Result<Vec<String>> {
        let root = self.dir.join("refs");
        Ok(walk_entries(&root)?
            .into_iter()
            .map(|(relative, _)| relative.as_str().to_string())
            .collect())
    }

    /// Every cached ref, sorted by name: those that point to a commit, and those whose file
    /// cannot be read as one (not a regular file, over 256 bytes, not a commit hash), with why.
    pub fn ref_listing(&self) -> Result<RefListing> {
        let mut listing = RefListing::default();
        for name in self.ref_names()? {
            match self.read_ref(&name) {
                Ok(Some(commit)) => listing.refs.push((name, commit)),
                Ok(None) => {}
                Err(error) => listing.invalid.push((name, error)),
            }
        }
        Ok(listing)
    }

    /// Every cached ref and the commit it points to, sorted by name; the first ref that cannot
    /// be read is an error.
    pub fn refs(&self) -> Result<Vec<(String, CommitHash)>> {
        let listing = self.ref_listing()?;
        match listing.invalid.into_iter().next() {
            Some((_, error)) => Err(error),
            None => Ok(listing.refs),
        }
    }

    /// Whether `.no_exist/<commit>/<path>` records that the file is absent at that commit.
    pub fn is_known_missing(&self, commit: &CommitHash, path: &RepoFilePath) -> bool {
        self.no_exist_path(commit, path).exists()
    }

    /// Records that `path` does not exist at `commit`, as `huggingface_hub` does.
    pub fn mark_missing(&self, commit: &CommitHash, path: &RepoFilePath) -> Result<()> {
        let marker = self.no_exist_path(commit, path);
        create_parent(&marker)?;
        File::create(&marker).map_err(HubError::io(&marker))?;
        Ok(())
    }

    fn no_exist_path(&self, commit: &CommitHash, path: &RepoFilePath) -> PathBuf {
        self.dir
            .join(".no_exist")
            .join(commit.as_str())
            .join(path.to_relative_path())
    }

    /// Takes the lock of one blob (`<cache>/.locks/models--org--name/<etag>.lock`), waiting for
    /// another process that holds it.
    pub fn lock_blob(&self, etag: &Etag) -> Result<BlobLock> {
        let path = self.locks_dir.join(format!("{}.lock", etag.as_str()));
        create_parent(&path)?;
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(HubError::io(&path))?;
        file.lock().map_err(HubError::io(&path))?;
        Ok(BlobLock { _file: file })
    }

    /// Moves a verified download (or import) into `blobs/<etag>`.
    pub fn commit_blob(&self, finished: &Path, etag: &Etag) -> Result<PathBuf> {
        let blob = self.blob_path(etag);
        create_parent(&blob)?;
        fs::rename(finished, &blob).map_err(HubError::io(&blob))?;
        Ok(blob)
    }

    /// Makes `snapshots/<commit>/<path>` a relative symlink to `../../blobs/<etag>` (replacing
    /// whatever was there), and returns it.
    pub fn link_snapshot(
        &self,
        commit: &CommitHash,
        path: &RepoFilePath,
        etag: &Etag,
    ) -> Result<PathBuf> {
        let link = self.snapshot_file(commit, path);
        create_parent(&link)?;
        // snapshots/<commit>/<a>/<b> -> ../../../blobs/<etag>: one `..` per directory level.
        let mut target = PathBuf::new();
        for _ in 0..(2 + path.depth()) {
            target.push("..");
        }
        target.push("blobs");
        target.push(etag.as_str());
        // Made under a unique temporary name, then renamed over the old entry: another process
        // (or Python) looking at the snapshot sees the old link or the new one, never none.
        let temporary = unique_temporary(&link);
        make_link(&target, &self.blob_path(etag), &temporary)?;
        fs::rename(&temporary, &link).map_err(|error| {
            let _ = fs::remove_file(&temporary);
            HubError::io(&link)(error)
        })?;
        Ok(link)
    }

    /// Every commit that has a snapshot folder.
    pub fn snapshots(&self) -> Result<Vec<CommitHash>> {
        let root = self.dir.join("snapshots");
        let entries = match fs::read_dir(&root) {
            Ok(entries) => entries,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(HubError::io(&root)(error)),
        };
        let mut commits = Vec::new();
        for entry in entries {
            let entry = entry.map_err(HubError::io(&root))?;
            if let Some(commit) = entry
                .file_name()
                .to_str()
                .and_then(|name| CommitHash::parse(name).ok())
            {
                commits.push(commit);
            }
        }
        commits.sort();
        Ok(commits)
    }

    /// Every entry of a cached snapshot, split by the cache rule ([`RepoCache::resolve_entry`]).
    pub fn snapshot_listing(&self, commit: &CommitHash) -> Result<SnapshotListing> {
        let root = self.snapshot_dir(commit);
        let mut listing = SnapshotListing::default();
        for (path, local_path) in walk_entries(&root)? {
            match self.resolve_entry(&local_path) {
                Ok((blob, size)) => listing.files.push(CachedFile {
                    path,
                    local_path,
                    blob,
                    size,
                }),
                Err((problem, points_to)) => listing.refused.push(RefusedEntry {
                    path,
                    local_path,
                    points_to,
                    problem,
                }),
            }
        }
        Ok(listing)
    }

    /// The files of a cached snapshot, sorted by path, for a load or a lock: every entry must
    /// keep the cache rule, and the first that does not is refused
    /// ([`HubError::CacheEntryRefused`], a policy refusal).
    pub fn snapshot_files(&self, commit: &CommitHash) -> Result<Vec<CachedFile>> {
        let listing = self.snapshot_listing(commit)?;
        match listing.refused.into_iter().next() {
            Some(refused) => Err(refused.into()),
            None => Ok(listing.files),
        }
    }

    /// Checks a snapshot: re-hashes every blob its entries resolve to (SHA-256 for LFS blobs, the
    /// git blob SHA-1 for the others), reports every entry that breaks the cache rule, and, when
    /// huggingface_hub's file list for the commit (`trees/<commit>.json`) is cached, every file it
    /// names that the snapshot lacks or holds with other content.
    pub fn verify(&self, commit: &CommitHash) -> Result<VerifyReport> {
        let listing = self.snapshot_listing(commit)?;
        let mut report = VerifyReport {
            files: listing.files.len(),
            ..VerifyReport::default()
        };
        for file in &listing.files {
            let etag = &file.blob.etag;
            let actual = if etag.is_sha256() {
                sha256_file(&file.blob.path)?
            } else {
                git_blob_sha1_file(&file.blob.path)?
            };
            if actual != etag.as_str() {
                report.corrupt.push(VerifyFailure {
                    path: file.path.clone(),
                    blob: file.blob.path.clone(),
                    expected: etag.as_str().to_string(),
                    actual,
                });
            }
        }
        if let Some(tree) = crate::tree_listing::read(&self.dir, commit)? {
            report.missing = tree.missing_from(&listing);
        }
        report.refused = listing.refused;
        Ok(report)
    }

    /// Deletes the repo's folder and its locks.
    pub fn remove(&self) -> Result<()> {
        for dir in [&self.dir, &self.locks_dir] {
            match fs::remove_dir_all(dir) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => return Err(HubError::io(dir)(error)),
            }
        }
        Ok(())
    }
}

/// Imports a local folder as a cached snapshot of `repo`, so that it can then be used by repo id
/// (offline too). Each file is stored as the Hub would store it: an LFS file (one the folder's
/// `.gitattributes`, else the Hub's default one, sends to LFS, or any file of 10 MiB or more) as
/// `blobs/<sha256>`, any other as `blobs/<git blob sha1>`, so that a cache filled from the mirror
/// looks like one filled from the Hub and `verify` checks both. The commit id is derived from
/// the content (the SHA-1 of the sorted list of paths, sizes and hashes), so importing the same
/// folder twice gives the same commit; `refs/<revision_name>` points at it.
///
/// Hidden folders (`.git`, `.cache`) are skipped; file names must be safe repo paths; a link is
/// followed only to a regular file inside the folder ([`HubError::ImportLinkOutside`] otherwise:
/// an import never copies `/etc/passwd` into the cache, where the mirror would serve it).
pub fn import_folder(
    cache: &HubCache,
    dir: &Path,
    repo: &RepoId,
    revision_name: &str,
) -> Result<Snapshot> {
    let repo_cache = cache.repo(repo);
    let lfs_patterns = crate::lfs::LfsPatterns::for_folder(dir)?;
    let mut entries = Vec::new();
    for (path, local) in walk_entries(dir)? {
        if path
            .as_str()
            .split('/')
            .any(|segment| segment.starts_with('.') && segment != ".gitattributes")
        {
            continue;
        }
        safeformers_files::resolve_within(&local, dir).map_err(|error| match error {
            safeformers_files::FileError::OutsideRoot { path, target, root } => {
                HubError::ImportLinkOutside {
                    entry: path,
                    target,
                    root,
                }
            }
            other => other.into(),
        })?;
        let size = open_regular(&local)?
            .metadata()
            .map_err(HubError::io(&local))?
            .len();
        let is_lfs = lfs_patterns.is_lfs(path.as_str(), size);
        let etag = Etag::parse(&content_hash(&local, is_lfs)?)?;
        entries.push((path, local, etag, size));
    }
    let mut manifest = Sha1::new();
    manifest.update(b"safeformers cache import v1\n");
    for (path, _, etag, size) in &entries {
        manifest.update(format!("{etag} {size} {path}\n").as_bytes());
    }
    let commit = CommitHash::parse(&hex(&manifest.finalize()))?;
    for (path, local, etag, _) in &entries {
        let _lock = repo_cache.lock_blob(etag)?;
        if !repo_cache.blob_path(etag).is_file() {
            let incomplete = repo_cache.incomplete_path(etag);
            create_parent(&incomplete)?;
            copy_regular(local, &incomplete)?;
            // The copy is what gets stored: hash it again so a file that changed during the
            // import cannot land under another file's hash.
            let copied = content_hash(&incomplete, etag.is_sha256())?;
            if copied != etag.as_str() {
                let _ = fs::remove_file(&incomplete);
                return Err(HubError::HashMismatch {
                    repo: repo.to_string(),
                    path: path.to_string(),
                    expected: etag.to_string(),
                    actual: copied,
                });
            }
            repo_cache.commit_blob(&incomplete, etag)?;
        }
        repo_cache.link_snapshot(&commit, path, etag)?;
    }
    repo_cache.write_ref(revision_name, &commit)?;
    Ok(repo_cache.snapshot(&commit))
}

/// The hash a blob is named by: SHA-256 for an LFS file, the git blob SHA-1 for any other.
fn content_hash(path: &Path, is_lfs: bool) -> Result<String> {
    if is_lfs {
        sha256_file(path)
    } else {
        git_blob_sha1_file(path)
    }
}

/// Copies a regular file (opened by the one opener, so never a FIFO or a device) to `to`.
fn copy_regular(from: &Path, to: &Path) -> Result<()> {
    let mut source = open_regular(from)?;
    let mut target = File::create(to).map_err(HubError::io(to))?;
    io::copy(&mut source, &mut target).map_err(HubError::io(to))?;
    target.sync_all().map_err(HubError::io(to))
}

/// Checks a model folder that the user named before anything is read from it: every link in it
/// must resolve inside the folder, or, for a cache snapshot folder named directly
/// (`models--org--name/snapshots/<commit>`), inside that repo's `blobs/`. A folder cloned from a
/// hostile git repo can hold `config.json -> ~/.ssh/id_rsa`; such a link is refused
/// ([`HubError::FolderLinkOutside`], a policy refusal) instead of read.
pub fn check_local_folder(dir: &Path) -> Result<()> {
    let mut roots = vec![dir.to_path_buf()];
    let resolved = fs::canonicalize(dir).map_err(HubError::io(dir))?;
    let is_snapshot = resolved
        .parent()
        .filter(|parent| parent.file_name().is_some_and(|name| name == "snapshots"))
        .and_then(Path::parent)
        .filter(|repo| {
            repo.file_name()
                .and_then(|name| name.to_str())
                .and_then(RepoId::from_cache_folder_name)
                .is_some()
        });
    if let Some(repo) = is_snapshot {
        roots.push(repo.join("blobs"));
    }
    safeformers_files::links_leaving(dir, &roots).map_err(|error| match error {
        safeformers_files::FileError::OutsideRoot { path, target, root } => {
            HubError::FolderLinkOutside {
                entry: path,
                target,
                root,
            }
        }
        other => other.into(),
    })
}

/// Lowercase hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(text, "{byte:02x}");
    }
    text
}

/// SHA-256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut hasher = Sha256::new();
    stream_file(path, |chunk| hasher.update(chunk))?;
    Ok(hex(&hasher.finalize()))
}

/// The git blob SHA-1 of a file (`sha1("blob <len>\0" + content)`): the etag of a non-LFS file.
pub fn git_blob_sha1_file(path: &Path) -> Result<String> {
    let mut file = open_regular(path)?;
    let len = file.metadata().map_err(HubError::io(path))?.len();
    let mut hasher = Sha1::new();
    hasher.update(format!("blob {len}\0").as_bytes());
    // Exactly the length that went into the header: a file that grows meanwhile cannot make the
    // hash cover other bytes than it claims.
    stream_reader(path, (&mut file).take(len), |chunk| hasher.update(chunk))?;
    Ok(hex(&hasher.finalize()))
}

fn stream_file(path: &Path, consume: impl FnMut(&[u8])) -> Result<()> {
    stream_reader(path, open_regular(path)?, consume)
}

fn stream_reader(path: &Path, mut file: impl Read, mut consume: impl FnMut(&[u8])) -> Result<()> {
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = file.read(&mut buffer).map_err(HubError::io(path))?;
        if read == 0 {
            return Ok(());
        }
        consume(buffer.get(..read).unwrap_or_default());
    }
}

/// Writes `content` to `path` through a temporary file in the same folder and a rename, so that
/// readers see the old content or the new, never a mix.
pub fn write_atomically(path: &Path, content: &[u8]) -> Result<()> {
    create_parent(path)?;
    let temporary = unique_temporary(path);
    let mut file = File::create(&temporary).map_err(HubError::io(&temporary))?;
    file.write_all(content)
        .and_then(|()| file.sync_all())
        .map_err(HubError::io(&temporary))?;
    fs::rename(&temporary, path).map_err(HubError::io(path))
}

/// A temporary name next to `path`, unique per process and per call (two threads writing one
/// ref, or linking one file, must not share it).
fn unique_temporary(path: &Path) -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let unique = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let file_name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{file_name}.{}.{unique}.tmp", std::process::id()))
}

fn create_parent(path: &Path) -> Result<()> {
    match path.parent() {
        Some(parent) => fs::create_dir_all(parent).map_err(HubError::io(parent)),
        None => Ok(()),
    }
}

#[cfg(unix)]
fn make_link(target: &Path, _blob: &Path, link: &Path) -> Result<()> {
    std::os::unix::fs::symlink(target, link).map_err(HubError::io(link))
}

/// Where symlinks are not available, `huggingface_hub` copies the blob; so do we.
#[cfg(not(unix))]
fn make_link(_target: &Path, blob: &Path, link: &Path) -> Result<()> {
    fs::copy(blob, link).map(|_| ()).map_err(HubError::io(link))
}

/// Deepest folder nesting walked in a snapshot, a refs folder or an imported folder.
const MAX_WALK_DEPTH: usize = 32;

/// Every entry under `root` that is not a real folder (regular files, links of any kind, FIFOs,
/// devices), as safe repo paths, sorted; links to folders are entries too, never descended. A
/// missing `root` has none. Callers decide what each entry may be: this walk opens nothing.
fn walk_entries(root: &Path) -> Result<Vec<(RepoFilePath, PathBuf)>> {
    let mut entries_found = Vec::new();
    let mut pending = vec![(root.to_path_buf(), String::new(), 0usize)];
    while let Some((dir, prefix, depth)) = pending.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == io::ErrorKind::NotFound && depth == 0 => {
                return Ok(entries_found);
            }
            Err(error) => return Err(HubError::io(&dir)(error)),
        };
        for entry in entries {
            let entry = entry.map_err(HubError::io(&dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                return Err(HubError::UnsafeFileName {
                    name: name.to_string_lossy().into_owned(),
                    reason: "it is not valid UTF-8",
                });
            };
            let relative = if prefix.is_empty() {
                name.to_string()
            } else {
                format!("{prefix}/{name}")
            };
            let path = entry.path();
            // `DirEntry::file_type` does not follow links: only a real folder is descended.
            let kind = entry.file_type().map_err(HubError::io(&path))?;
            if kind.is_dir() {
                if depth + 1 >= MAX_WALK_DEPTH {
                    return Err(HubError::UnsafeFileName {
                        name: relative,
                        reason: "folders are nested too deep",
                    });
                }
                pending.push((path, relative, depth + 1));
            } else {
                entries_found.push((RepoFilePath::parse(&relative)?, path));
            }
        }
    }
    entries_found.sort();
    Ok(entries_found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(label: &str) -> PathBuf {
        safeformers_testkit::scratch_dir(&format!("cache-{label}"))
    }

    #[test]
    fn import_lays_out_a_huggingface_hub_cache() {
        let source = temp_dir("source");
        fs::write(source.join("config.json"), b"{}").unwrap();
        fs::create_dir_all(source.join("1_Pooling")).unwrap();
        fs::write(source.join("1_Pooling/config.json"), b"{\"pooling\": 1}").unwrap();
        fs::create_dir_all(source.join(".git")).unwrap();
        fs::write(source.join(".git/HEAD"), b"ref").unwrap();
        let cache = HubCache::new(temp_dir("cache"));
        let repo = RepoId::parse("org/model").unwrap();

        let snapshot = import_folder(&cache, &source, &repo, "main").unwrap();
        let again = import_folder(&cache, &source, &repo, "main").unwrap();
        assert_eq!(snapshot, again, "the commit is derived from the content");

        let repo_cache = cache.repo(&repo);
        assert_eq!(repo_cache.dir(), cache.root().join("models--org--model"));
        assert_eq!(
            repo_cache.read_ref("main").unwrap(),
            Some(snapshot.commit.clone())
        );
        let files = repo_cache.snapshot_files(&snapshot.commit).unwrap();
        let paths: Vec<&str> = files.iter().map(|file| file.path.as_str()).collect();
        assert_eq!(paths, ["1_Pooling/config.json", "config.json"]);
        let nested = snapshot.dir.join("1_Pooling/config.json");
        assert_eq!(
            fs::read_link(&nested).unwrap(),
            PathBuf::from("../../../blobs").join(files[0].blob.etag.as_str())
        );
        assert_eq!(fs::read(&nested).unwrap(), b"{\"pooling\": 1}");
        // A config is a plain git file on the Hub: named by its git blob SHA-1, as the Hub does.
        assert_eq!(
            files[1].blob.etag.as_str(),
            git_blob_sha1_file(&source.join("config.json")).unwrap()
        );
        assert!(repo_cache.verify(&snapshot.commit).unwrap().is_ok());
        assert_eq!(cache.repos().unwrap(), vec![repo_cache.clone()]);

        // Tamper with a blob: verify names it.
        let blob = repo_cache.blob_path(&files[1].blob.etag);
        fs::write(&blob, b"{\"tampered\": true}").unwrap();
        let failures = repo_cache.verify(&snapshot.commit).unwrap().corrupt;
        assert_eq!(failures.len(), 1);
        assert_eq!(failures[0].path.as_str(), "config.json");

        repo_cache.remove().unwrap();
        assert!(cache.repos().unwrap().is_empty());
    }

    #[test]
    fn refs_hold_only_commit_hashes() {
        let cache = HubCache::new(temp_dir("refs"));
        let repo_cache = cache.repo(&RepoId::parse("org/model").unwrap());
        let commit = CommitHash::parse(&"ab".repeat(20)).unwrap();
        repo_cache.write_ref("refs/pr/1", &commit).unwrap();
        assert_eq!(
            repo_cache.read_ref("refs/pr/1").unwrap(),
            Some(commit.clone())
        );
        assert!(repo_cache.dir().join("refs/refs/pr/1").is_file());
        assert_eq!(repo_cache.read_ref("main").unwrap(), None);
        assert!(repo_cache.read_ref("../../x").is_err());
        assert_eq!(repo_cache.refs().unwrap().len(), 1);
        fs::write(repo_cache.dir().join("refs/main"), "../../../etc").unwrap();
        assert!(
            repo_cache.read_ref("main").is_err(),
            "a tampered ref is not a path"
        );
        assert!(repo_cache.refs().is_err());
    }

    #[test]
    fn missing_markers_and_git_blob_hashes() {
        let cache = HubCache::new(temp_dir("missing"));
        let repo_cache = cache.repo(&RepoId::parse("gpt2").unwrap());
        let commit = CommitHash::parse(&"cd".repeat(20)).unwrap();
        let path = RepoFilePath::parse("model.safetensors").unwrap();
        assert!(!repo_cache.is_known_missing(&commit, &path));
        repo_cache.mark_missing(&commit, &path).unwrap();
        assert!(repo_cache.is_known_missing(&commit, &path));

        // `printf 'hello\n' | git hash-object --stdin`
        let file = cache.root().join("hello");
        fs::write(&file, b"hello\n").unwrap();
        assert_eq!(
            git_blob_sha1_file(&file).unwrap(),
            "ce013625030ba8dba906f756967f9e9ca394464a"
        );
    }

    #[test]
    fn unsafe_names_in_an_imported_folder_are_refused() {
        let source = temp_dir("unsafe");
        fs::write(source.join("a:b"), b"x").unwrap();
        let cache = HubCache::new(temp_dir("unsafe-cache"));
        let error =
            import_folder(&cache, &source, &RepoId::parse("org/m").unwrap(), "main").unwrap_err();
        assert!(matches!(error, HubError::UnsafeFileName { .. }), "{error}");
    }
}
