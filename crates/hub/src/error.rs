//! The hub crate's error type.

use std::path::PathBuf;

/// Result with [`HubError`].
pub type Result<T, E = HubError> = std::result::Result<T, E>;

/// What went wrong talking to a Hub or using the cache. Refusals by security policy (a hash
/// mismatch, offline and not cached, a lockfile mismatch) are told apart by
/// [`HubError::is_policy_refusal`], which the CLI maps to exit code 3.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HubError {
    /// A repo id that the Hub would not accept.
    #[error("invalid repo id `{id}`: {reason}")]
    InvalidRepoId {
        /// The id as given.
        id: String,
        /// Which rule it breaks.
        reason: &'static str,
    },

    /// A revision that is neither a commit hash nor a safe ref name.
    #[error("invalid revision `{revision}`: {reason}")]
    InvalidRevision {
        /// The revision as given.
        revision: String,
        /// Which rule it breaks.
        reason: &'static str,
    },

    /// A value from the server (a header, a JSON field) that is not of the form it must be.
    #[error(
        "the server sent an invalid {what} `{value}` (expected {expected}); refusing to use it"
    )]
    InvalidServerValue {
        /// Which value.
        what: &'static str,
        /// The value, escaped and shortened.
        value: String,
        /// What it must look like.
        expected: &'static str,
    },

    /// A file name (from a server, an index, or a folder being imported) that could escape the
    /// cache or the target folder.
    #[error("refusing file name `{name}`: {reason}")]
    UnsafeFileName {
        /// The name, escaped and shortened.
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },

    /// A file that is not a regular file (a FIFO, a device, a directory), is over the cap for its
    /// kind, or could not be read: the one opener of `safeformers-files` says which.
    #[error(transparent)]
    File(#[from] safeformers_files::FileError),

    /// A filesystem operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path concerned.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },

    /// The repo does not exist, or is private and the token does not grant access (the Hub
    /// answers both the same way).
    #[error(
        "repo `{repo}` not found at {endpoint} (if it is private or gated, set HF_TOKEN to a token \
         that can read it)"
    )]
    RepoNotFound {
        /// The repo.
        repo: String,
        /// The endpoint asked.
        endpoint: String,
    },

    /// The repo exists but the revision does not.
    #[error("revision `{revision}` not found in repo `{repo}`")]
    RevisionNotFound {
        /// The repo.
        repo: String,
        /// The revision.
        revision: String,
    },

    /// The revision exists but the file does not.
    #[error("file `{path}` not found in repo `{repo}` at revision `{revision}`")]
    EntryNotFound {
        /// The repo.
        repo: String,
        /// The revision.
        revision: String,
        /// The file.
        path: String,
    },

    /// The repo is gated and the token has not been granted access.
    #[error("repo `{repo}` is gated: {message} (accept its terms on the Hub, then set HF_TOKEN)")]
    GatedRepo {
        /// The repo.
        repo: String,
        /// What the server said.
        message: String,
    },

    /// An HTTP status the protocol does not expect.
    #[error("{url}: HTTP {status}{}", if message.is_empty() { String::new() } else { format!(": {message}") })]
    Http {
        /// The URL, without any credentials.
        url: String,
        /// The status code.
        status: u16,
        /// The server's `X-Error-Message`, or a short description.
        message: String,
    },

    /// The connection failed (after the bounded retries).
    #[error("{url}: {reason}")]
    Network {
        /// The URL, without any credentials.
        url: String,
        /// What failed.
        reason: String,
    },

    /// A downloaded file's content does not have the hash its etag promises. The partial file was
    /// deleted and nothing was written to the cache.
    #[error(
        "`{path}` from `{repo}`: content hashes to {actual}, but the server promised {expected}; \
         the download was discarded (the server or a proxy is corrupting or substituting files)"
    )]
    HashMismatch {
        /// The repo.
        repo: String,
        /// The file.
        path: String,
        /// The hash the etag promised.
        expected: String,
        /// The hash of what arrived.
        actual: String,
    },

    /// A downloaded file's size is not the size the server announced.
    #[error(
        "`{path}` from `{repo}`: received {actual} bytes, but the server announced {expected}; \
         the download was discarded"
    )]
    SizeMismatch {
        /// The repo.
        repo: String,
        /// The file.
        path: String,
        /// Announced size.
        expected: u64,
        /// Received size.
        actual: u64,
    },

    /// A revision pinned to a commit was answered for another commit: the pin is never replaced.
    #[error(
        "`{path}` from `{repo}`: pinned to commit {pinned}, but the server answered for commit \
         {served}; refusing (a pinned revision is never replaced by another commit)"
    )]
    PinnedCommitMismatch {
        /// The repo.
        repo: String,
        /// The file.
        path: String,
        /// The commit asked for.
        pinned: String,
        /// The commit the server answered for.
        served: String,
    },

    /// Offline (`HF_HUB_OFFLINE=1` or `--offline`) and what was asked for is not in the cache.
    #[error(
        "offline mode: {what} is not in the cache at {}; run once online (or `safeformers \
         download`) to fetch it, or import a local folder with `safeformers cache import`",
        cache.display()
    )]
    NotCachedOffline {
        /// What was missing (`file config.json of org/name at main`).
        what: String,
        /// The cache searched.
        cache: PathBuf,
    },

    /// A cached file no longer matches its blob name (its content was changed on disk).
    #[error("{}: cached content hashes to {actual} but its blob name promises {expected}", path.display())]
    CorruptCache {
        /// The blob.
        path: PathBuf,
        /// The hash the name promises.
        expected: String,
        /// The hash of the content.
        actual: String,
    },

    /// `--locked`: what would be loaded differs from `safeformers.lock`.
    #[error("{}: {reason} (update the lockfile with `safeformers lock` if the change is intended)", lockfile.display())]
    LockMismatch {
        /// The lockfile.
        lockfile: PathBuf,
        /// What differs.
        reason: String,
    },

    /// A cached `refs/<name>` file that does not hold a commit hash.
    #[error(
        "{}: a cached ref must hold a 40-hex commit hash, found `{content}` (remove the file, or \
         fetch the ref again)",
        path.display()
    )]
    InvalidCachedRef {
        /// The ref file.
        path: PathBuf,
        /// What it holds (shortened).
        content: String,
    },

    /// A cache snapshot entry that does not resolve to a blob of its repo's `blobs/` folder (a
    /// link out of the cache, a dangling link, a FIFO or a device): never read as cache content.
    #[error(
        "{}: refused, it points to {} ({problem}); a cache entry must link to a regular file in \
         its repo's blobs/ folder (check `safeformers cache verify`, then remove the repo with \
         `safeformers cache rm` and fetch it again)",
        entry.display(),
        points_to.display()
    )]
    CacheEntryRefused {
        /// The entry in the snapshot folder.
        entry: PathBuf,
        /// Where it points.
        points_to: PathBuf,
        /// What is wrong.
        problem: String,
    },

    /// `cache verify` found entries that break the cache rule, or files missing from a snapshot.
    #[error("{problems} problem(s) in cached snapshots")]
    CacheVerifyFailed {
        /// How many.
        problems: usize,
    },

    /// A model folder holds a link that leaves it.
    #[error(
        "{}: refused, it links to {}, outside the model folder {}; copy the file into the \
         folder if it belongs to the model",
        entry.display(),
        target.display(),
        root.display()
    )]
    FolderLinkOutside {
        /// The link.
        entry: PathBuf,
        /// Where it resolves to.
        target: PathBuf,
        /// The model folder.
        root: PathBuf,
    },

    /// A folder being imported into the cache holds a link that leaves it.
    #[error(
        "{}: refused, it links to {}, outside the folder being imported ({}); copy the file \
         into the folder if it belongs to the model",
        entry.display(),
        target.display(),
        root.display()
    )]
    ImportLinkOutside {
        /// The entry in the folder.
        entry: PathBuf,
        /// Where it resolves to.
        target: PathBuf,
        /// The folder being imported.
        root: PathBuf,
    },

    /// huggingface_hub's cached file list for a commit (`trees/<commit>.json`) is malformed.
    #[error("{}: invalid cached file list: {reason}", path.display())]
    InvalidTreeListing {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// The lockfile cannot be read.
    #[error("{}: invalid lockfile: {reason}", path.display())]
    InvalidLockfile {
        /// The lockfile.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl HubError {
    /// Whether this is a refusal by security policy (exit code 3 in the CLI): content that does
    /// not match its promised hash or size, offline and not cached, or a lockfile mismatch.
    pub fn is_policy_refusal(&self) -> bool {
        matches!(
            self,
            HubError::HashMismatch { .. }
                | HubError::SizeMismatch { .. }
                | HubError::PinnedCommitMismatch { .. }
                | HubError::NotCachedOffline { .. }
                | HubError::CorruptCache { .. }
                | HubError::LockMismatch { .. }
                | HubError::CacheEntryRefused { .. }
                | HubError::CacheVerifyFailed { .. }
                | HubError::ImportLinkOutside { .. }
                | HubError::FolderLinkOutside { .. }
        )
    }

    /// An [`HubError::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> HubError {
        let path = path.into();
        move |source| HubError::Io { path, source }
    }
}
