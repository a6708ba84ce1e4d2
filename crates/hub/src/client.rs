//! The Hub protocol over HTTP, and downloads into the cache.
//!
//! The wire protocol is `huggingface_hub`'s (`HEAD`/`GET {endpoint}/{repo}/resolve/{rev}/{path}`,
//! `GET /api/{type}s/{repo}/revision/{rev}`, `GET /api/{type}s/{repo}/tree/{commit}`), with the
//! server trusted for nothing:
//!
//! - every commit, etag and file name it sends is parsed into a checked type
//!   ([`CommitHash`], [`Etag`], [`RepoFilePath`]) before it touches a path;
//! - every file is hashed while it streams — SHA-256 for LFS files, the git blob SHA-1 for the
//!   others — and its size checked; a mismatch leaves nothing in the cache;
//! - a pinned commit is never replaced, and answers from the cache without a request;
//! - offline, no socket is opened;
//! - the token goes to the endpoint's own scheme, host and port, never to a redirect target
//!   elsewhere (a CDN), and never into an error message.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use ureq::Body;
use ureq::http::Response;

use crate::cache::{HubCache, RepoCache, Snapshot, hex};
use crate::error::{HubError, Result};
use crate::glob::{glob_match, matches_any};
use crate::http::{Follow, Http, Method, header, redact_url, resolve_location};
use crate::names::{CommitHash, Etag, RepoFilePath, printable};
use crate::repo::{RepoId, Revision};
use crate::settings::HubSettings;

/// Largest JSON answer of the API read (a revision, a page of a tree listing).
const MAX_API_BODY: u64 = 16 * 1024 * 1024;
/// Most pages of a tree listing followed.
const MAX_TREE_PAGES: usize = 1000;

/// Characters percent-encoded in a revision (everything but unreserved: `/` too, so that
/// `refs/pr/1` is one URL segment, as `huggingface_hub` quotes it with `safe=""`).
const REVISION_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

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

/// How often, and how patiently, a download is retried after a connection error, a truncated
/// body or a 5xx. Each retry resumes from the bytes already received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all (at least 1).
    pub attempts: u32,
    /// Wait before the first retry; it doubles for each further one (capped at 30 s).
    pub initial_backoff: Duration,
}

impl Default for RetryPolicy {
    /// 4 attempts, waiting 1 s, 2 s, 4 s between them.
    fn default() -> RetryPolicy {
        RetryPolicy {
            attempts: 4,
            initial_backoff: Duration::from_secs(1),
        }
    }
}

/// A client of one Hub endpoint, writing into one cache.
#[derive(Debug)]
pub struct HubClient {
    settings: HubSettings,
    cache: HubCache,
    http: Http,
    retry: RetryPolicy,
}

/// What a `HEAD` on a resolve URL told about a file.
struct FileMetadata {
    commit: CommitHash,
    etag: Etag,
    size: u64,
    /// Where to `GET` it: the resolve URL, or the absolute redirect (CDN) the HEAD answered.
    download_url: String,
}

/// Which request an error answers, to name it in the error.
/// Where a download stands, for [`HubClient::copy_body`].
struct Progress<'a> {
    /// Bytes already in the partial file.
    have: u64,
    /// The file's full size.
    size: u64,
    bar: &'a Option<indicatif::ProgressBar>,
    /// The URL that answered (for errors).
    answered: &'a str,
}

struct Context<'a> {
    repo: &'a RepoId,
    revision: &'a str,
    path: Option<&'a RepoFilePath>,
}

/// One file being downloaded into the cache: where it comes from, the partial file it is written
/// to, and the hash and size it must have.
#[derive(Clone, Copy)]
struct BlobDownload<'a> {
    repo_cache: &'a RepoCache,
    partial: &'a Path,
    url: &'a str,
    path: &'a RepoFilePath,
    etag: &'a Etag,
    size: u64,
}

/// One attempt of a download failed: worth another attempt, or not.
enum AttemptError {
    Retry(HubError),
    Fatal(HubError),
}

impl HubClient {
    /// A client with these settings. No request is made here.
    pub fn new(settings: HubSettings) -> Result<HubClient> {
        let cache = HubCache::new(settings.cache_dir.clone());
        let http = Http::new(&settings.endpoint, settings.token.clone(), settings.offline);
        Ok(HubClient {
            settings,
            cache,
            http,
            retry: RetryPolicy::default(),
        })
    }

    /// The same client with another retry policy (tests use no backoff).
    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> HubClient {
        self.retry = retry;
        self
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
    ///
    /// A pinned commit is returned as is, without a request. Offline, a ref name resolves
    /// through `refs/<name>` in the cache (else [`HubError::NotCachedOffline`]). Online, the
    /// server's answer must be a full commit hash; `refs/<name>` is updated to it.
    pub fn resolve(&self, repo: &RepoId, revision: &Revision) -> Result<CommitHash> {
        let name = match revision {
            Revision::Commit(commit) => return Ok(commit.clone()),
            Revision::Ref(name) => name,
        };
        let repo_cache = self.cache.repo(repo);
        if self.settings.offline {
            return repo_cache
                .read_ref(name)?
                .ok_or_else(|| self.not_cached(format!("revision `{name}` of `{repo}`")));
        }
        let url = format!(
            "{}/api/{}/{}/revision/{}",
            self.settings.endpoint,
            repo.repo_type().plural(),
            repo.as_str(),
            utf8_percent_encode(name, REVISION_SET)
        );
        let context = Context {
            repo,
            revision: name,
            path: None,
        };
        let (answered, mut response) =
            self.http
                .send(Method::Get, &url, &[], Follow::RelativeOnly)?;
        if response.status().as_u16() != 200 {
            return Err(self.status_error(&context, &answered, &response));
        }
        #[derive(Deserialize)]
        struct RevisionInfo {
            sha: String,
        }
        let body = self.read_api_body(&answered, &mut response)?;
        let info: RevisionInfo =
            serde_json::from_slice(&body).map_err(|error| HubError::InvalidServerValue {
                what: "revision info",
                value: printable(&error.to_string()),
                expected: "a JSON object with a `sha` string",
            })?;
        let commit = CommitHash::parse(&info.sha)?;
        repo_cache.write_ref(name, &commit)?;
        Ok(commit)
    }

    /// Lists a repo's files at a commit (the tree API, recursive, every page).
    ///
    /// Every path must be a safe [`RepoFilePath`] and every blob id a hex [`Etag`]: one bad
    /// entry refuses the whole listing. Pagination links are followed on the endpoint only.
    pub fn list_files(&self, repo: &RepoId, commit: &CommitHash) -> Result<Vec<RepoFile>> {
        if self.settings.offline {
            return Err(self.not_cached(format!("the file list of `{repo}` at {commit}")));
        }
        #[derive(Deserialize)]
        struct Lfs {
            oid: String,
            size: u64,
        }
        #[derive(Deserialize)]
        struct TreeEntry {
            #[serde(rename = "type")]
            kind: String,
            path: String,
            #[serde(default)]
            size: u64,
            #[serde(default)]
            oid: Option<String>,
            #[serde(default)]
            lfs: Option<Lfs>,
        }
        let context = Context {
            repo,
            revision: commit.as_str(),
            path: None,
        };
        let mut url = format!(
            "{}/api/{}/{}/tree/{}?recursive=true",
            self.settings.endpoint,
            repo.repo_type().plural(),
            repo.as_str(),
            commit
        );
        let mut files = Vec::new();
        let mut seen = HashSet::new();
        for _ in 0..MAX_TREE_PAGES {
            let (answered, mut response) =
                self.http
                    .send(Method::Get, &url, &[], Follow::RelativeOnly)?;
            if response.status().as_u16() != 200 {
                return Err(self.status_error(&context, &answered, &response));
            }
            let next = next_page_link(response.headers());
            let body = self.read_api_body(&answered, &mut response)?;
            let entries: Vec<TreeEntry> =
                serde_json::from_slice(&body).map_err(|error| HubError::InvalidServerValue {
                    what: "tree listing",
                    value: printable(&error.to_string()),
                    expected: "a JSON array of {type, path, size, oid, lfs} entries",
                })?;
            for entry in entries {
                if entry.kind != "file" {
                    continue;
                }
                let path = RepoFilePath::parse(&entry.path)?;
                let (etag, size) = match entry.lfs {
                    Some(lfs) => (Etag::parse(&lfs.oid)?, lfs.size),
                    None => {
                        let oid = entry.oid.unwrap_or_default();
                        (Etag::parse(&oid)?, entry.size)
                    }
                };
                if !seen.insert(path.clone()) {
                    return Err(HubError::InvalidServerValue {
                        what: "tree listing",
                        value: printable(path.as_str()),
                        expected: "each file listed once",
                    });
                }
                files.push(RepoFile { path, size, etag });
            }
            let Some(next) = next else {
                return Ok(files);
            };
            let next = resolve_location(&answered, &next)
                .map(|(next, _)| next)
                .filter(|next| self.http.is_endpoint(next))
                .ok_or_else(|| HubError::InvalidServerValue {
                    what: "tree pagination link",
                    value: printable(&redact_url(&next)),
                    expected: "a URL on the endpoint",
                })?;
            url = next;
        }
        Err(HubError::InvalidServerValue {
            what: "tree listing",
            value: format!("more than {MAX_TREE_PAGES} pages"),
            expected: "a bounded listing",
        })
    }

    /// Downloads (or finds in the cache) one file, verified; returns its snapshot path.
    ///
    /// A pinned commit whose file is cached (or known missing) answers without a request;
    /// offline, only the cache answers. Online, a `HEAD` tells the commit, the blob id and the
    /// size; the content is then streamed into `blobs/<etag>.incomplete` (resuming a partial
    /// one), hashed and size-checked, and only then moved into `blobs/`.
    pub fn download_file(
        &self,
        repo: &RepoId,
        revision: &Revision,
        path: &RepoFilePath,
    ) -> Result<PathBuf> {
        let repo_cache = self.cache.repo(repo);
        if let Revision::Commit(commit) = revision
            && let Some(found) = cached_or_known_missing(&repo_cache, commit, revision, path)?
        {
            return Ok(found);
        }
        if self.settings.offline {
            let commit = match revision {
                Revision::Commit(commit) => Some(commit.clone()),
                Revision::Ref(name) => repo_cache.read_ref(name)?,
            };
            if let Some(commit) = commit
                && let Some(found) = cached_or_known_missing(&repo_cache, &commit, revision, path)?
            {
                return Ok(found);
            }
            return Err(self.not_cached(format!(
                "file `{path}` of `{repo}` at revision `{revision}`"
            )));
        }
        let metadata = self.file_metadata(&repo_cache, revision, path)?;
        match revision {
            Revision::Commit(pinned) => {
                if metadata.commit != *pinned {
                    return Err(HubError::PinnedCommitMismatch {
                        repo: repo.to_string(),
                        path: path.to_string(),
                        pinned: pinned.to_string(),
                        served: metadata.commit.to_string(),
                    });
                }
            }
            Revision::Ref(name) => repo_cache.write_ref(name, &metadata.commit)?,
        }
        if let Some(cached) = repo_cache.cached_file(&metadata.commit, path) {
            return Ok(cached);
        }
        self.fetch_blob(
            &repo_cache,
            &metadata.commit,
            path,
            &metadata.etag,
            metadata.size,
            &metadata.download_url,
        )
    }

    /// Downloads (or finds in the cache) every file matching `include` (all files when empty).
    ///
    /// `include` holds `fnmatch` patterns as `huggingface_hub`'s `allow_patterns`: `*` matches
    /// any run of characters (`/` included), `?` one character, `[abc]`/`[!abc]` a set. A pinned
    /// commit whose snapshot already holds a file for every pattern answers without a request.
    pub fn snapshot(
        &self,
        repo: &RepoId,
        revision: &Revision,
        include: &[String],
    ) -> Result<Snapshot> {
        let repo_cache = self.cache.repo(repo);
        if let Revision::Commit(commit) = revision
            && covers(&repo_cache, commit, include)?
        {
            return Ok(repo_cache.snapshot(commit));
        }
        if self.settings.offline {
            let commit = match revision {
                Revision::Commit(commit) => Some(commit.clone()),
                Revision::Ref(name) => repo_cache.read_ref(name)?,
            };
            // Offline there is no listing to compare with: as `huggingface_hub` does, a cached
            // snapshot holding any file the patterns match is what there is.
            if let Some(commit) = commit
                && has_any_match(&repo_cache, &commit, include)?
            {
                return Ok(repo_cache.snapshot(&commit));
            }
            let what = if include.is_empty() {
                format!("a snapshot of `{repo}` at revision `{revision}`")
            } else {
                format!(
                    "files matching {} of `{repo}` at revision `{revision}`",
                    include.join(", ")
                )
            };
            return Err(self.not_cached(what));
        }
        let commit = self.resolve(repo, revision)?;
        let files = self.list_files(repo, &commit)?;
        self.snapshot_listed(repo, &commit, &files, include)
    }

    /// Downloads (or finds in the cache) the files of `listing` (the repo's files at `commit`,
    /// from [`HubClient::list_files`]) that match `include`: [`HubClient::snapshot`] for a
    /// caller that chose its patterns from the listing (which GGUF file of several to fetch).
    pub fn snapshot_listed(
        &self,
        repo: &RepoId,
        commit: &CommitHash,
        listing: &[RepoFile],
        include: &[String],
    ) -> Result<Snapshot> {
        let repo_cache = self.cache.repo(repo);
        for file in listing
            .iter()
            .filter(|file| matches_any(include, file.path.as_str()))
        {
            self.download_listed(&repo_cache, commit, file)?;
        }
        let dir = repo_cache.snapshot_dir(commit);
        fs::create_dir_all(&dir).map_err(HubError::io(&dir))?;
        Ok(repo_cache.snapshot(commit))
    }

    /// A file the tree listing described: its etag and size are known, so no `HEAD`.
    fn download_listed(
        &self,
        repo_cache: &RepoCache,
        commit: &CommitHash,
        file: &RepoFile,
    ) -> Result<PathBuf> {
        if let Some(cached) = repo_cache.cached_file(commit, &file.path) {
            return Ok(cached);
        }
        let url = self.resolve_url(repo_cache.repo(), commit.as_str(), &file.path);
        self.fetch_blob(repo_cache, commit, &file.path, &file.etag, file.size, &url)
    }

    /// `{endpoint}/{prefix}{repo}/resolve/{revision}/{path}`.
    fn resolve_url(&self, repo: &RepoId, revision: &str, path: &RepoFilePath) -> String {
        let path: Vec<String> = path
            .as_str()
            .split('/')
            .map(|segment| utf8_percent_encode(segment, REVISION_SET).to_string())
            .collect();
        format!(
            "{}/{}{}/resolve/{}/{}",
            self.settings.endpoint,
            repo.repo_type().url_prefix(),
            repo.as_str(),
            utf8_percent_encode(revision, REVISION_SET),
            path.join("/")
        )
    }

    /// `HEAD` on the resolve URL: commit, etag, size, and where to `GET`.
    fn file_metadata(
        &self,
        repo_cache: &RepoCache,
        revision: &Revision,
        path: &RepoFilePath,
    ) -> Result<FileMetadata> {
        let repo = repo_cache.repo();
        let url = self.resolve_url(repo, revision.as_str(), path);
        let context = Context {
            repo,
            revision: revision.as_str(),
            path: Some(path),
        };
        let (answered, response) = self
            .http
            .send(Method::Head, &url, &[], Follow::RelativeOnly)?;
        let status = response.status();
        let headers = response.headers();
        if status.as_u16() == 404
            && header(headers, "x-error-code").as_deref() == Some("EntryNotFound")
        {
            if let Some(value) = header(headers, "x-repo-commit") {
                let commit = CommitHash::parse(&value)?;
                if let Revision::Commit(pinned) = revision
                    && *pinned != commit
                {
                    return Err(HubError::PinnedCommitMismatch {
                        repo: repo.to_string(),
                        path: path.to_string(),
                        pinned: pinned.to_string(),
                        served: commit.to_string(),
                    });
                }
                repo_cache.mark_missing(&commit, path)?;
            }
            return Err(self.status_error(&context, &answered, &response));
        }
        let download_url = if status.is_success() {
            answered.clone()
        } else if status.is_redirection() {
            // An absolute redirect (a CDN) that `send` did not follow: its target is the GET URL.
            header(headers, "location")
                .and_then(|location| resolve_location(&answered, &location))
                .map(|(target, _)| target)
                .ok_or_else(|| self.status_error(&context, &answered, &response))?
        } else {
            return Err(self.status_error(&context, &answered, &response));
        };
        let commit_header =
            header(headers, "x-repo-commit").ok_or_else(|| missing("X-Repo-Commit"))?;
        let commit = CommitHash::parse(&commit_header)?;
        let etag_header = header(headers, "x-linked-etag")
            .or_else(|| header(headers, "etag"))
            .ok_or_else(|| missing("ETag"))?;
        let etag = Etag::from_header(&etag_header)?;
        // The size of a redirect response is the size of the redirect's body, not the file's.
        let size_header = header(headers, "x-linked-size").or_else(|| {
            if status.is_success() {
                header(headers, "content-length")
            } else {
                None
            }
        });
        let size_header = size_header.ok_or_else(|| missing("X-Linked-Size"))?;
        let size = size_header
            .parse::<u64>()
            .map_err(|_| HubError::InvalidServerValue {
                what: "file size",
                value: printable(&size_header),
                expected: "a decimal number of bytes",
            })?;
        Ok(FileMetadata {
            commit,
            etag,
            size,
            download_url,
        })
    }

    /// Takes the blob's lock, downloads it unless it is (or meanwhile became) cached, and links
    /// `snapshots/<commit>/<path>` to it.
    fn fetch_blob(
        &self,
        repo_cache: &RepoCache,
        commit: &CommitHash,
        path: &RepoFilePath,
        etag: &Etag,
        size: u64,
        url: &str,
    ) -> Result<PathBuf> {
        // The lock also covers the link: two threads replacing one symlink would collide.
        let _lock = repo_cache.lock_blob(etag)?;
        // Linked meanwhile: re-linking would make the file vanish for a moment under a reader.
        if let Some(cached) = repo_cache.cached_file(commit, path) {
            return Ok(cached);
        }
        // Another thread or process may have finished it while we waited for the lock.
        if !repo_cache.blob_path(etag).is_file() {
            let partial = repo_cache.incomplete_path(etag);
            self.download_verified(BlobDownload {
                repo_cache,
                partial: &partial,
                url,
                path,
                etag,
                size,
            })?;
            repo_cache.commit_blob(&partial, etag)?;
        }
        repo_cache.link_snapshot(commit, path, etag)
    }

    /// Streams `url` into `partial` with bounded retries, each resuming where the file ends, and
    /// checks the whole file's hash and size. On a mismatch the partial file is deleted.
    fn download_verified(&self, download: BlobDownload<'_>) -> Result<()> {
        let BlobDownload {
            partial,
            path,
            size,
            ..
        } = download;
        if let Some(parent) = partial.parent() {
            fs::create_dir_all(parent).map_err(HubError::io(parent))?;
        }
        let bar = self.progress_bar(path, size);
        let attempts = self.retry.attempts.max(1);
        let mut backoff = self.retry.initial_backoff;
        let mut attempt = 1;
        let outcome = loop {
            match self.download_attempt(download, &bar) {
                Ok(()) => break Ok(()),
                Err(AttemptError::Retry(error)) if attempt < attempts => {
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    attempt += 1;
                    let _ = error;
                }
                Err(AttemptError::Retry(error) | AttemptError::Fatal(error)) => break Err(error),
            }
        };
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        outcome
    }

    /// One request for what is still missing of the file.
    fn download_attempt(
        &self,
        download: BlobDownload<'_>,
        bar: &Option<indicatif::ProgressBar>,
    ) -> std::result::Result<(), AttemptError> {
        let BlobDownload {
            repo_cache,
            partial,
            url,
            path,
            etag,
            size,
        } = download;
        let fatal_io = |error| AttemptError::Fatal(HubError::io(partial)(error));
        let mut file = File::options()
            .create(true)
            .read(true)
            .append(true)
            .open(partial)
            .map_err(fatal_io)?;
        let mut have = file.metadata().map_err(fatal_io)?.len();
        if have > size {
            file.set_len(0).map_err(fatal_io)?;
            have = 0;
        }
        let mut hasher = ContentHasher::new(etag, size);
        if have > 0 {
            hash_prefix(partial, have, &mut hasher).map_err(AttemptError::Fatal)?;
        }
        if let Some(bar) = bar {
            bar.set_position(have);
        }
        let mismatch = |actual: u64| {
            let _ = fs::remove_file(partial);
            AttemptError::Fatal(HubError::SizeMismatch {
                repo: repo_cache.repo().to_string(),
                path: path.to_string(),
                expected: size,
                actual,
            })
        };
        if have < size {
            let range = [("Range", format!("bytes={have}-"))];
            let headers: &[(&str, String)] = if have > 0 { &range } else { &[] };
            let (answered, mut response) = self
                .http
                .send(Method::Get, url, headers, Follow::All)
                .map_err(AttemptError::Retry)?;
            if self.check_resume_status(
                repo_cache, path, have, &answered, &response, &mut file, partial,
            )? {
                // The server ignored the Range: start over.
                have = 0;
                hasher = ContentHasher::new(etag, size);
                if let Some(bar) = bar {
                    bar.set_position(0);
                }
            }
            let remaining = size - have;
            if let Some(length) = header(response.headers(), "content-length")
                .and_then(|length| length.parse::<u64>().ok())
                && length != remaining
            {
                return Err(mismatch(have + length));
            }
            let received = self.copy_body(
                &mut response,
                &mut file,
                &mut hasher,
                Progress {
                    have,
                    size,
                    bar,
                    answered: &answered,
                },
                partial,
                &mismatch,
            )?;
            file.flush().map_err(fatal_io)?;
            if received < remaining {
                return Err(AttemptError::Retry(HubError::Network {
                    url: redact_url(&answered),
                    reason: format!(
                        "the connection ended after {} of {size} bytes",
                        have + received
                    ),
                }));
            }
        }
        file.sync_all().map_err(fatal_io)?;
        drop(file);
        let actual = hasher.finish();
        if actual != etag.as_str() {
            let _ = fs::remove_file(partial);
            return Err(AttemptError::Fatal(HubError::HashMismatch {
                repo: repo_cache.repo().to_string(),
                path: path.to_string(),
                expected: etag.to_string(),
                actual,
            }));
        }
        Ok(())
    }

    /// Checks the status of a (ranged) download response. `Ok(true)`: the server answered a
    /// ranged request with the whole file, so the partial file was emptied and the download
    /// starts over.
    #[allow(clippy::too_many_arguments)]
    fn check_resume_status(
        &self,
        repo_cache: &RepoCache,
        path: &RepoFilePath,
        have: u64,
        answered: &str,
        response: &Response<Body>,
        file: &mut File,
        partial: &Path,
    ) -> std::result::Result<bool, AttemptError> {
        let fatal_io = |error| AttemptError::Fatal(HubError::io(partial)(error));
        let status = response.status().as_u16();
        match status {
            206 if have > 0 => {
                let content_range = header(response.headers(), "content-range");
                let expected_start = format!("bytes {have}-");
                if !content_range.is_some_and(|range| range.starts_with(&expected_start)) {
                    file.set_len(0).map_err(fatal_io)?;
                    return Err(AttemptError::Retry(HubError::Network {
                        url: redact_url(answered),
                        reason: "the server resumed at another offset".to_string(),
                    }));
                }
            }
            200 => {
                if have > 0 {
                    file.set_len(0).map_err(fatal_io)?;
                    return Ok(true);
                }
            }
            416 => {
                file.set_len(0).map_err(fatal_io)?;
                return Err(AttemptError::Retry(HubError::Http {
                    url: redact_url(answered),
                    status,
                    message: "range not satisfiable; starting over".to_string(),
                }));
            }
            _ => {
                let context = Context {
                    repo: repo_cache.repo(),
                    revision: "",
                    path: Some(path),
                };
                let error = self.status_error(&context, answered, response);
                // Rate limits and server errors may pass; anything else will not.
                return Err(if status == 429 || (500..=599).contains(&status) {
                    AttemptError::Retry(error)
                } else {
                    AttemptError::Fatal(error)
                });
            }
        }
        Ok(false)
    }

    /// Streams the response body into `file` and `hasher`, never past the announced size;
    /// returns how many bytes were received.
    #[allow(clippy::too_many_arguments)]
    fn copy_body(
        &self,
        response: &mut Response<Body>,
        file: &mut File,
        hasher: &mut ContentHasher,
        progress: Progress<'_>,
        partial: &Path,
        mismatch: &dyn Fn(u64) -> AttemptError,
    ) -> std::result::Result<u64, AttemptError> {
        let Progress {
            have,
            size,
            bar,
            answered,
        } = progress;
        let fatal_io = |error| AttemptError::Fatal(HubError::io(partial)(error));
        let remaining = size - have;
        let mut reader = response.body_mut().as_reader();
        let mut buffer = vec![0u8; 256 * 1024];
        let mut received = 0u64;
        loop {
            let read = match reader.read(&mut buffer) {
                Ok(read) => read,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    file.flush().map_err(fatal_io)?;
                    return Err(AttemptError::Retry(HubError::Network {
                        url: redact_url(answered),
                        reason: format!(
                            "{} after {} of {size} bytes",
                            self.http.scrub(&error.to_string()),
                            have + received
                        ),
                    }));
                }
            };
            if read == 0 {
                break;
            }
            let room = usize::try_from(remaining - received).unwrap_or(usize::MAX);
            if read > room {
                // Never a byte beyond the announced size: a server streaming on is cut off.
                return Err(mismatch(have + received + read as u64));
            }
            let chunk = buffer.get(..read).unwrap_or_default();
            file.write_all(chunk).map_err(fatal_io)?;
            hasher.update(chunk);
            received += read as u64;
            if let Some(bar) = bar {
                bar.inc(read as u64);
            }
        }
        Ok(received)
    }

    /// A progress bar on stderr when asked for and stderr is a terminal.
    fn progress_bar(&self, path: &RepoFilePath, size: u64) -> Option<indicatif::ProgressBar> {
        if !self.settings.progress || !std::io::stderr().is_terminal() {
            return None;
        }
        let bar = indicatif::ProgressBar::new(size);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(path.to_string());
        Some(bar)
    }

    /// An API body, at most [`MAX_API_BODY`] bytes.
    fn read_api_body(&self, url: &str, response: &mut Response<Body>) -> Result<Vec<u8>> {
        response
            .body_mut()
            .with_config()
            .limit(MAX_API_BODY)
            .read_to_vec()
            .map_err(|error| HubError::Network {
                url: redact_url(url),
                reason: self.http.scrub(&error.to_string()),
            })
    }

    /// The error an unexpected status means, from `X-Error-Code` / `X-Error-Message`.
    fn status_error(
        &self,
        context: &Context<'_>,
        url: &str,
        response: &Response<Body>,
    ) -> HubError {
        let headers = response.headers();
        let status = response.status().as_u16();
        let message = header(headers, "x-error-message")
            .map(|message| printable(&self.http.scrub(&message)))
            .unwrap_or_default();
        let repo = context.repo.to_string();
        match header(headers, "x-error-code").as_deref() {
            Some("RepoNotFound") => HubError::RepoNotFound {
                repo,
                endpoint: redact_url(&self.settings.endpoint),
            },
            Some("RevisionNotFound") => HubError::RevisionNotFound {
                repo,
                revision: context.revision.to_string(),
            },
            Some("EntryNotFound") => HubError::EntryNotFound {
                repo,
                revision: context.revision.to_string(),
                path: context.path.map(ToString::to_string).unwrap_or_default(),
            },
            Some("GatedRepo") => HubError::GatedRepo { repo, message },
            // The Hub answers a private repo without a (good) token like a missing one.
            _ if status == 401 || status == 403 => HubError::RepoNotFound {
                repo,
                endpoint: redact_url(&self.settings.endpoint),
            },
            _ => HubError::Http {
                url: redact_url(url),
                status,
                message,
            },
        }
    }

    fn not_cached(&self, what: String) -> HubError {
        HubError::NotCachedOffline {
            what,
            cache: self.cache.root().to_path_buf(),
        }
    }
}

/// The cached file at `commit`, or [`HubError::EntryNotFound`] when `.no_exist` records it as
/// missing, or `None`.
fn cached_or_known_missing(
    repo_cache: &RepoCache,
    commit: &CommitHash,
    revision: &Revision,
    path: &RepoFilePath,
) -> Result<Option<PathBuf>> {
    if let Some(found) = repo_cache.cached_file(commit, path) {
        return Ok(Some(found));
    }
    if repo_cache.is_known_missing(commit, path) {
        return Err(HubError::EntryNotFound {
            repo: repo_cache.repo().to_string(),
            revision: revision.to_string(),
            path: path.to_string(),
        });
    }
    Ok(None)
}

fn missing(header: &str) -> HubError {
    HubError::InvalidServerValue {
        what: "response to HEAD",
        value: format!("no {header} header"),
        expected: "the headers of a Hub resolve endpoint",
    }
}

/// The hash an etag promises, computed while the content streams: SHA-256 for a 64-hex etag
/// (LFS), the git blob SHA-1 (`sha1("blob <size>\0" + content)`) for a 40-hex one.
enum ContentHasher {
    Sha256(Sha256),
    GitBlobSha1(Sha1),
}

impl ContentHasher {
    fn new(etag: &Etag, size: u64) -> ContentHasher {
        if etag.is_sha256() {
            ContentHasher::Sha256(Sha256::new())
        } else {
            let mut hasher = Sha1::new();
            hasher.update(format!("blob {size}\0").as_bytes());
            ContentHasher::GitBlobSha1(hasher)
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        match self {
            ContentHasher::Sha256(hasher) => hasher.update(bytes),
            ContentHasher::GitBlobSha1(hasher) => hasher.update(bytes),
        }
    }

    fn finish(self) -> String {
        match self {
            ContentHasher::Sha256(hasher) => hex(&hasher.finalize()),
            ContentHasher::GitBlobSha1(hasher) => hex(&hasher.finalize()),
        }
    }
}

/// Feeds the first `len` bytes of `path` (a partial download being resumed) to `hasher`.
fn hash_prefix(path: &Path, len: u64, hasher: &mut ContentHasher) -> Result<()> {
    let file = safeformers_files::open_regular(path)?;
    let mut reader = file.take(len);
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = reader.read(&mut buffer).map_err(HubError::io(path))?;
        if read == 0 {
            return Ok(());
        }
        hasher.update(buffer.get(..read).unwrap_or_default());
    }
}

/// The `rel="next"` target of the `Link` headers, if any.
fn next_page_link(headers: &ureq::http::HeaderMap) -> Option<String> {
    headers
        .get_all("link")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .find_map(|link| {
            let mut parts = link.split(';');
            let target = parts.next()?.trim();
            let is_next = parts.any(|param| {
                let param = param.trim().replace(' ', "");
                param == "rel=\"next\"" || param == "rel=next"
            });
            let target = target.strip_prefix('<')?.strip_suffix('>')?;
            is_next.then(|| target.to_string())
        })
}

/// Whether the cached snapshot of `commit` holds any file the patterns match.
fn has_any_match(repo_cache: &RepoCache, commit: &CommitHash, include: &[String]) -> Result<bool> {
    Ok(repo_cache
        .snapshot_files(commit)?
        .iter()
        .any(|file| matches_any(include, file.path.as_str())))
}

/// Whether the cached snapshot of `commit` holds a file for every pattern (any file when there
/// are none): then a pinned request needs no listing.
fn covers(repo_cache: &RepoCache, commit: &CommitHash, include: &[String]) -> Result<bool> {
    let files = repo_cache.snapshot_files(commit)?;
    if include.is_empty() {
        return Ok(!files.is_empty());
    }
    Ok(include.iter().all(|pattern| {
        files
            .iter()
            .any(|file| glob_match(pattern, file.path.as_str()))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revisions_are_one_url_segment() {
        assert_eq!(
            utf8_percent_encode("refs/pr/1", REVISION_SET).to_string(),
            "refs%2Fpr%2F1"
        );
        assert_eq!(
            utf8_percent_encode("v1.0-rc_2", REVISION_SET).to_string(),
            "v1.0-rc_2"
        );
    }

    #[test]
    fn link_headers_give_the_next_page() {
        let mut headers = ureq::http::HeaderMap::new();
        headers.insert(
            "link",
            ureq::http::HeaderValue::from_static(
                "<https://hub/api/models/a/b/tree/c?cursor=x>; rel=\"next\", <https://hub/p>; rel=\"prev\"",
            ),
        );
        assert_eq!(
            next_page_link(&headers).as_deref(),
            Some("https://hub/api/models/a/b/tree/c?cursor=x")
        );
        assert_eq!(next_page_link(&ureq::http::HeaderMap::new()), None);
    }
}
