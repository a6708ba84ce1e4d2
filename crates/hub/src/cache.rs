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

use crate::error::{HubError, Result};
use crate::names::{CommitHash, Etag, RepoFilePath};
use crate::repo::{RepoId, Revision};

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

/// A file of a cached snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedFile {
    /// Its path in the repo.
    pub path: RepoFilePath,
    /// The file in the snapshot folder (usually a symlink into `blobs/`).
    pub local_path: PathBuf,
    /// The blob it links to, when it is a symlink to a well-named blob.
    pub etag: Option<Etag>,
    /// Its size in bytes.
    pub size: u64,
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

    /// The cached file at `commit`, if it is there (and, when it is a symlink, its blob too).
    pub fn cached_file(&self, commit: &CommitHash, path: &RepoFilePath) -> Option<PathBuf> {
        let file = self.snapshot_file(commit, path);
        fs::metadata(&file)
            .is_ok_and(|meta| meta.is_file())
            .then_some(file)
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
        match fs::read_to_string(&path) {
            Ok(content) => CommitHash::parse(content.trim()).map(Some),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(HubError::io(path)(error)),
        }
    }

    /// Points `refs/<name>` at `commit`, atomically (a temporary file, then a rename).
    pub fn write_ref(&self, name: &str, commit: &CommitHash) -> Result<()> {
        let path = self.ref_path(name)?;
        write_atomically(&path, commit.as_str().as_bytes())
    }

    /// Every cached ref and the commit it points to, sorted by name.
    pub fn refs(&self) -> Result<Vec<(String, CommitHash)>> {
        let root = self.dir.join("refs");
        let mut refs = Vec::new();
        for (relative, _) in walk_files(&root)? {
            let name = relative.as_str().to_string();
            if let Some(commit) = self.read_ref(&name)? {
                refs.push((name, commit));
            }
        }
        refs.sort();
        Ok(refs)
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
        match fs::symlink_metadata(&link) {
            Ok(_) => fs::remove_file(&link).map_err(HubError::io(&link))?,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(HubError::io(&link)(error)),
        }
        make_link(&target, &self.blob_path(etag), &link)?;
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

    /// The files of a cached snapshot, sorted by path.
    pub fn snapshot_files(&self, commit: &CommitHash) -> Result<Vec<CachedFile>> {
        let root = self.snapshot_dir(commit);
        let mut files = Vec::new();
        for (path, local_path) in walk_files(&root)? {
            let meta = fs::metadata(&local_path).map_err(HubError::io(&local_path))?;
            let etag = fs::read_link(&local_path)
                .ok()
                .and_then(|target| {
                    target
                        .file_name()
                        .and_then(|name| name.to_str())
                        .map(str::to_string)
                })
                .and_then(|name| Etag::parse(&name).ok());
            files.push(CachedFile {
                path,
                local_path,
                etag,
                size: meta.len(),
            });
        }
        Ok(files)
    }

    /// Re-hashes every blob a snapshot links to and reports each whose content does not match
    /// its name (SHA-256 for LFS blobs, the git blob SHA-1 for the others).
    pub fn verify(&self, commit: &CommitHash) -> Result<Vec<VerifyFailure>> {
        let mut failures = Vec::new();
        for file in self.snapshot_files(commit)? {
            let Some(etag) = &file.etag else { continue };
            let actual = if etag.is_sha256() {
                sha256_file(&file.local_path)?
            } else {
                git_blob_sha1_file(&file.local_path)?
            };
            if actual != etag.as_str() {
                failures.push(VerifyFailure {
                    path: file.path,
                    blob: self.blob_path(etag),
                    expected: etag.as_str().to_string(),
                    actual,
                });
            }
        }
        Ok(failures)
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
/// (offline too). Every file is hashed with SHA-256 and stored as `blobs/<sha256>` (the form of an
/// LFS blob, so `verify` checks it); the commit id is derived from the content (the SHA-1 of the
/// sorted list of paths, sizes and hashes), so importing the same folder twice gives the same
/// commit; `refs/<revision_name>` points at it.
///
/// Hidden folders (`.git`, `.cache`) are skipped; file names must be safe repo paths; symlinks
/// are followed only to regular files.
pub fn import_folder(
    cache: &HubCache,
    dir: &Path,
    repo: &RepoId,
    revision_name: &str,
) -> Result<Snapshot> {
    let repo_cache = cache.repo(repo);
    let mut entries = Vec::new();
    for (path, local) in walk_files(dir)? {
        if path
            .as_str()
            .split('/')
            .any(|segment| segment.starts_with('.') && segment != ".gitattributes")
        {
            continue;
        }
        let sha256 = sha256_file(&local)?;
        let size = fs::metadata(&local).map_err(HubError::io(&local))?.len();
        entries.push((path, local, Etag::parse(&sha256)?, size));
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
            fs::copy(local, &incomplete).map_err(HubError::io(&incomplete))?;
            // The copy is what gets stored: hash it again so a file that changed during the
            // import cannot land under another file's hash.
            let copied = sha256_file(&incomplete)?;
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
    let len = fs::metadata(path).map_err(HubError::io(path))?.len();
    let mut hasher = Sha1::new();
    hasher.update(format!("blob {len}\0").as_bytes());
    stream_file(path, |chunk| hasher.update(chunk))?;
    Ok(hex(&hasher.finalize()))
}

fn stream_file(path: &Path, mut consume: impl FnMut(&[u8])) -> Result<()> {
    let mut file = File::open(path).map_err(HubError::io(path))?;
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
    let file_name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Unique per process and per call: two threads writing one ref must not share a temp file.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let unique = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let temporary =
        path.with_file_name(format!(".{file_name}.{}.{unique}.tmp", std::process::id()));
    let mut file = File::create(&temporary).map_err(HubError::io(&temporary))?;
    file.write_all(content)
        .and_then(|()| file.sync_all())
        .map_err(HubError::io(&temporary))?;
    fs::rename(&temporary, path).map_err(HubError::io(path))
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

/// The regular files under `root` (following symlinks to files, not to folders), as safe repo
/// paths, sorted. A missing `root` has no files.
fn walk_files(root: &Path) -> Result<Vec<(RepoFilePath, PathBuf)>> {
    let mut files = Vec::new();
    let mut pending = vec![(root.to_path_buf(), String::new(), 0usize)];
    while let Some((dir, prefix, depth)) = pending.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == io::ErrorKind::NotFound && depth == 0 => {
                return Ok(files);
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
            let kind = entry.file_type().map_err(HubError::io(&path))?;
            if kind.is_dir() {
                if depth + 1 >= MAX_WALK_DEPTH {
                    return Err(HubError::UnsafeFileName {
                        name: relative,
                        reason: "folders are nested too deep",
                    });
                }
                pending.push((path, relative, depth + 1));
            } else if fs::metadata(&path).is_ok_and(|meta| meta.is_file()) {
                files.push((RepoFilePath::parse(&relative)?, path));
            }
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(label: &str) -> PathBuf {
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let unique = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "safeformers-cache-{label}-{}-{unique}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
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
            PathBuf::from("../../../blobs").join(files[0].etag.as_ref().unwrap().as_str())
        );
        assert_eq!(fs::read(&nested).unwrap(), b"{\"pooling\": 1}");
        assert!(repo_cache.verify(&snapshot.commit).unwrap().is_empty());
        assert_eq!(cache.repos().unwrap(), vec![repo_cache.clone()]);

        // Tamper with a blob: verify names it.
        let blob = repo_cache.blob_path(files[1].etag.as_ref().unwrap());
        fs::write(&blob, b"{\"tampered\": true}").unwrap();
        let failures = repo_cache.verify(&snapshot.commit).unwrap();
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
