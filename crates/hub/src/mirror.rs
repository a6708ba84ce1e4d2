//! `safeformers mirror`: a cache served as a Hub endpoint, so that one machine's cache feeds an
//! air-gapped cluster through `HF_ENDPOINT`.
//!
//! It serves the part of the Hub API that downloads use, as `huggingface_hub` 2.x calls it:
//!
//! | request | answer |
//! |---|---|
//! | `GET /api/{models,datasets,spaces}/{repo}[/revision/{rev}]` | repo info: `id`, `sha`, `siblings` |
//! | `GET /api/{type}s/{repo}/tree/{rev}[/{path}][?recursive=true]` | files and folders |
//! | `HEAD`/`GET /[{datasets,spaces}/]{repo}/resolve/{rev}/{path}` | the file, `Range` supported |
//! | `GET /api/{type}s/{repo}/refs`, `.../commits/{rev}`, `.../auth-check` | see [`api`] |
//! | `POST /api/{type}s/{repo}/paths-info/{rev}` (read-only) | see [`api`] |
//! | `GET /api/{type}s?search=&author=&limit=` | the cached repos, see [`api`] |
//!
//! A repo id is `name` or `org/name`; a revision is a 40-hex commit that has a snapshot folder, or
//! a ref (`main`, `v1`, `refs%2Fpr%2F1`) cached under `refs/`. Errors are answered as the Hub
//! answers them: 404 with `X-Error-Code: RepoNotFound | RevisionNotFound | EntryNotFound` and
//! `X-Error-Message` (an `EntryNotFound` also carries `X-Repo-Commit`), 400 for a malformed id,
//! revision or path.
//!
//! # What is served, and what never is
//!
//! The mirror is read-only and ignores `Authorization`. Every name in a request is percent-decoded
//! first and then checked as [`RepoId`], [`Revision`] and [`RepoFilePath`] are (no `..`, no
//! absolute or backslash paths, no control characters). A file is served only when its snapshot
//! entry, canonicalized (symlinks followed), is a regular file directly inside the repo's own
//! `blobs/` folder with a blob name (40 or 64 hex digits): a tampered cache whose snapshot symlink
//! points at `/etc/passwd` gets a 404, and the entry is left out of listings. (A cache written with
//! copies instead of symlinks, as on Windows without developer mode, is therefore not served.)
//!
//! # Bounds
//!
//! Each client gets bounded resources ([`MirrorLimits`], flags of `safeformers mirror`):
//! - a request's headers must be complete within `header_timeout` (10 s) of their first byte, or
//!   of the connection's opening for its first request;
//! - a connection with no request, or whose request moves no byte, is closed after
//!   `idle_timeout` (60 s);
//! - at most `max_connections` (256) are held; more wait in the listen backlog;
//! - a request is answered within `request_timeout` (60 s) of its headers, or gets 503;
//! - request paths and queries are at most [`MAX_PATH_LEN`] bytes (414), bodies at most
//!   [`MAX_REQUEST_BODY`] (413), `paths-info` at most [`api::MAX_PATHS_PER_REQUEST`] paths.
//!
//! # Blob ids
//!
//! For a file stored as `blobs/<sha256>` (an LFS file), `ETag` and `X-Linked-Etag` are that
//! SHA-256, `X-Linked-Size` its size, and the tree's `oid` (`blobId` in repo info) is the git
//! SHA-1 of its LFS pointer text, as the Hub reports it. For a file stored as `blobs/<sha1>` (a
//! small file, named by its git blob SHA-1), `ETag` and `oid` are that name. Folder `oid`s are git
//! tree ids computed from those blob ids.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, Seek, SeekFrom};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::header::{self, HeaderName, HeaderValue};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use http_body::{Frame, SizeHint};
use percent_encoding::percent_decode_str;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::oneshot;

pub mod api;

use safeformers_http::{ConnectionLimits, MIN_HEADER_BYTES};

/// Default of [`MirrorLimits::header_timeout`]: a client sends its request line and headers in
/// one packet; ten seconds leave room for a slow, high-latency link and still drop a slowloris
/// client (one that trickles a header byte at a time to hold the connection) quickly.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Default of [`MirrorLimits::idle_timeout`]: long enough for a client to reuse its connection
/// between the requests of one download (`huggingface_hub`'s pool keeps connections 5 s), short
/// enough that abandoned connections do not pile up.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Default of [`MirrorLimits::max_connections`]: a connection costs a task, a socket, an open
/// blob and up to ~700 KiB of buffers (hyper's read buffer and one file chunk), so 256 of them
/// stay under ~200 MiB and well inside the usual 1024 open files.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;

/// Default of [`MirrorLimits::request_timeout`].
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Header fields a mirror request may carry (`huggingface_hub` sends about ten).
const MAX_HEADERS: usize = 64;

/// The bounds on the mirror's connections and requests. [`MirrorLimits::default`] gives the
/// defaults of `safeformers mirror`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MirrorLimits {
    /// From the first byte of a request (from the connection's opening, for its first request)
    /// until its headers are complete; a client slower than this is disconnected.
    pub header_timeout: Duration,
    /// How long a connection may stay open with no request on it, and how long a request in
    /// progress may move no byte in either direction (a client that stopped reading its
    /// download) before the connection is closed.
    pub idle_timeout: Duration,
    /// The most connections held at once (at least 1); more wait in the listen backlog.
    pub max_connections: usize,
    /// The longest a request may take from its complete headers to the start of its answer
    /// (reading its body, looking up the cache); a slower one gets 503. Streaming a file's
    /// body is bounded by `idle_timeout` instead, so a multi-gigabyte download is not cut.
    pub request_timeout: Duration,
}

impl Default for MirrorLimits {
    fn default() -> MirrorLimits {
        MirrorLimits {
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

impl MirrorLimits {
    /// The accept loop's share of these limits: a stalled download is bounded by the idle
    /// timeout; headers by [`MAX_PATH_LEN`] plus room for the usual fields.
    fn connection_limits(&self) -> ConnectionLimits {
        ConnectionLimits {
            header_timeout: self.header_timeout,
            idle_timeout: self.idle_timeout,
            stall_timeout: Some(self.idle_timeout),
            max_connections: self.max_connections,
            max_headers: MAX_HEADERS,
            max_header_bytes: (2 * MAX_PATH_LEN + 8 * 1024).max(MIN_HEADER_BYTES),
        }
    }
}

use crate::cache::{CachedBlob, HubCache, RepoCache, hex};
use crate::error::{HubError, Result};
use crate::names::{CommitHash, Etag, RepoFilePath, printable};
use crate::repo::{RepoId, RepoType, Revision};

/// Longest request path served, in bytes; longer ones get 414.
pub const MAX_PATH_LEN: usize = 8 * 1024;

/// Largest request body read, in bytes (only `paths-info` takes a body: a list of paths).
pub const MAX_REQUEST_BODY: usize = 1024 * 1024;

/// Bytes read from a file per body chunk.
const CHUNK_LEN: usize = 256 * 1024;

/// How long a shutdown waits for requests still being answered.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// The mirror server. Start it with [`MirrorServer::start`] (tests, embedding) or run it with
/// [`serve_forever`] (the CLI).
#[derive(Debug)]
pub struct MirrorServer;

impl MirrorServer {
    /// Binds `addr` (port 0 picks a free port) and serves `cache` from a background thread running
    /// its own tokio runtime, until the returned handle is shut down or dropped. Uses the default
    /// [`MirrorLimits`].
    ///
    /// ```no_run
    /// use safeformers_hub::HubCache;
    /// use safeformers_hub::mirror::MirrorServer;
    ///
    /// let mirror = MirrorServer::start(HubCache::new("/data/hf-cache"), "127.0.0.1:0".parse()?)?;
    /// println!("HF_ENDPOINT={}", mirror.url());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn start(cache: HubCache, addr: SocketAddr) -> Result<MirrorHandle> {
        MirrorServer::start_with_limits(cache, addr, MirrorLimits::default())
    }

    /// [`MirrorServer::start`] with the given timeouts and connection cap.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use safeformers_hub::HubCache;
    /// use safeformers_hub::mirror::{MirrorLimits, MirrorServer};
    ///
    /// let limits = MirrorLimits { max_connections: 64, ..MirrorLimits::default() };
    /// let mirror = MirrorServer::start_with_limits(
    ///     HubCache::new("/data/hf-cache"),
    ///     "127.0.0.1:0".parse()?,
    ///     limits,
    /// )?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn start_with_limits(
        cache: HubCache,
        addr: SocketAddr,
        limits: MirrorLimits,
    ) -> Result<MirrorHandle> {
        let error = |source| HubError::Io {
            path: PathBuf::from(format!("mirror at {addr}")),
            source,
        };
        let listener = std::net::TcpListener::bind(addr).map_err(error)?;
        let local_addr = listener.local_addr().map_err(error)?;
        listener.set_nonblocking(true).map_err(error)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("safeformers-mirror")
            .enable_all()
            .build()
            .map_err(error)?;
        let (stop, stopped) = oneshot::channel::<()>();
        let state = Arc::new(MirrorState { cache, limits });
        let open_connections = Arc::new(AtomicUsize::new(0));
        let open = open_connections.clone();
        let thread = std::thread::Builder::new()
            .name("safeformers-mirror".to_string())
            .spawn(move || {
                let served = runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)?;
                    tokio::select! {
                        served = safeformers_http::accept_loop(
                            listener,
                            state.limits.connection_limits(),
                            move |request| handle(state.clone(), request),
                            open,
                            "mirror",
                        ) => served,
                        _ = stopped => Ok(()),
                    }
                });
                runtime.shutdown_timeout(SHUTDOWN_GRACE);
                served
            })
            .map_err(error)?;
        Ok(MirrorHandle {
            local_addr,
            open_connections,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

/// Serves `cache` at `addr` with the default [`MirrorLimits`] until the process is killed (or the
/// server fails).
pub fn serve_forever(cache: HubCache, addr: SocketAddr) -> Result<()> {
    MirrorServer::start(cache, addr)?.wait()
}

/// A running mirror. Dropping it stops the server (as [`MirrorHandle::shutdown`] does).
#[derive(Debug)]
pub struct MirrorHandle {
    local_addr: SocketAddr,
    open_connections: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl MirrorHandle {
    /// The address the server is bound to (with the real port when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// How many connections the server holds open right now (never more than
    /// [`MirrorLimits::max_connections`]).
    pub fn open_connections(&self) -> usize {
        self.open_connections.load(Ordering::SeqCst)
    }

    /// `http://<local_addr>`: the value for `HF_ENDPOINT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.local_addr)
    }

    /// Stops accepting connections, gives requests in flight a moment, and waits for the server
    /// thread to end.
    pub fn shutdown(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.join()
    }

    /// Blocks until the server stops, which it does only on an error.
    pub fn wait(mut self) -> Result<()> {
        self.join()
    }

    fn join(&mut self) -> Result<()> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        let path = PathBuf::from(format!("mirror at {}", self.local_addr));
        match thread.join() {
            Ok(result) => result.map_err(HubError::io(path)),
            Err(_) => Err(HubError::Io {
                path,
                source: io::Error::other("the server thread panicked"),
            }),
        }
    }
}

impl Drop for MirrorHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = self.join();
    }
}

#[derive(Debug)]
struct MirrorState {
    cache: HubCache,
    limits: MirrorLimits,
}

/// Every request lands here (from [`safeformers_http::accept_loop`]): the routes (repo ids of one or two segments,
/// revisions that may hold `/`) are parsed by hand, on the raw path, so that percent-decoding
/// happens exactly once and before every check.
async fn handle(state: Arc<MirrorState>, request: Request<Body>) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let limit = state.limits.request_timeout;
    let reply = match tokio::time::timeout(limit, reply_to(state, request)).await {
        Ok(reply) => reply,
        Err(_) => Reply::error(
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            &format!("the request took longer than {limit:?}"),
        ),
    };
    // One line per request; never headers (they may hold a token).
    eprintln!(
        "mirror: {} {} {}",
        method,
        printable(&path),
        reply.status.as_u16()
    );
    reply.into_response(method == Method::HEAD)
}

/// The answer to one request, its body read only for the one route that takes one.
async fn reply_to(state: Arc<MirrorState>, request: Request<Body>) -> Reply {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().map(str::to_string);
    if path.len() > MAX_PATH_LEN || query.as_ref().is_some_and(|q| q.len() > MAX_PATH_LEN) {
        return Reply::error(
            StatusCode::URI_TOO_LONG,
            None,
            "the request path is too long",
        );
    }
    if parts.method != Method::GET && parts.method != Method::HEAD && parts.method != Method::POST {
        return Reply::method_not_allowed("GET, HEAD");
    }
    let cache = state.cache.clone();
    if let Some(repo_type) = listing_type(&path) {
        if parts.method == Method::POST {
            return Reply::method_not_allowed("GET, HEAD");
        }
        return run_blocking(move || {
            api::list_repos(&cache, repo_type, query.as_deref()).unwrap_or_else(|reply| reply)
        })
        .await;
    }
    let routes = match parse_route(&path, query.as_deref()) {
        Ok(routes) => routes,
        Err(reply) => return reply,
    };
    let (allowed, refused): (Vec<Route>, Vec<Route>) = routes
        .into_iter()
        .partition(|route| route.allows(&parts.method));
    if allowed.is_empty() {
        let allow = refused.first().map_or("GET, HEAD", Route::allow_header);
        return Reply::method_not_allowed(allow);
    }
    let paths = if parts.method == Method::POST {
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .map(str::to_string);
        let parsed = read_body(&parts.headers, body)
            .await
            .and_then(|bytes| api::PathsRequest::parse(content_type.as_deref(), &bytes));
        match parsed {
            Ok(paths) => paths,
            Err(reply) => return reply,
        }
    } else {
        api::PathsRequest::default()
    };
    let range = parts
        .headers
        .get(header::RANGE)
        .and_then(|value| value.to_str().ok())
        .map(str::to_string);
    run_blocking(move || answer(&cache, allowed, range.as_deref(), &paths)).await
}

/// Runs blocking filesystem work off the async workers.
async fn run_blocking(work: impl FnOnce() -> Reply + Send + 'static) -> Reply {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|_| Reply::error(StatusCode::INTERNAL_SERVER_ERROR, None, "internal error"))
}

/// A request body of at most [`MAX_REQUEST_BODY`] bytes; a longer one is refused with 413 as soon
/// as its `Content-Length`, or the bytes received, say so.
async fn read_body(headers: &HeaderMap, mut body: Body) -> Parsed<Vec<u8>> {
    let too_large = || {
        Reply::error(
            StatusCode::PAYLOAD_TOO_LARGE,
            None,
            &format!("the request body is over {MAX_REQUEST_BODY} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_REQUEST_BODY as u64) {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    while let Some(frame) =
        std::future::poll_fn(|cx| http_body::Body::poll_frame(Pin::new(&mut body), cx)).await
    {
        let frame = frame.map_err(|_| {
            Reply::error(
                StatusCode::BAD_REQUEST,
                None,
                "the request body could not be read",
            )
        })?;
        if let Ok(data) = frame.into_data() {
            if bytes.len() + data.len() > MAX_REQUEST_BODY {
                return Err(too_large());
            }
            bytes.extend_from_slice(&data);
        }
    }
    Ok(bytes)
}

/// An answer, built without touching the network so that it can be tested with plain values.
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: Vec<(HeaderName, String)>,
    body: ReplyBody,
}

#[derive(Debug)]
enum ReplyBody {
    Json(Vec<u8>),
    /// `len` bytes of `file`, from its current position.
    File {
        file: File,
        len: u64,
    },
}

impl Reply {
    fn json(value: &serde_json::Value) -> Reply {
        let body = serde_json::to_vec(value).unwrap_or_default();
        let mut reply = Reply {
            status: StatusCode::OK,
            headers: Vec::new(),
            body: ReplyBody::Json(body),
        };
        reply.header(header::CONTENT_TYPE, "application/json");
        reply
    }

    /// An error as the Hub sends it: `X-Error-Code` (when there is one), `X-Error-Message`, and
    /// `{"error": message}`.
    fn error(status: StatusCode, code: Option<&str>, message: &str) -> Reply {
        let mut reply = Reply::json(&serde_json::json!({ "error": message }));
        reply.status = status;
        if let Some(code) = code {
            reply.header(HeaderName::from_static("x-error-code"), code);
        }
        reply.header(HeaderName::from_static("x-error-message"), message);
        reply
    }

    fn method_not_allowed(allow: &str) -> Reply {
        let mut reply = Reply::error(
            StatusCode::METHOD_NOT_ALLOWED,
            None,
            "the mirror is read-only",
        );
        reply.header(header::ALLOW, allow);
        reply
    }

    fn bad_request(error: &HubError) -> Reply {
        Reply::error(StatusCode::BAD_REQUEST, None, &error.to_string())
    }

    fn repo_not_found(repo: &RepoId) -> Reply {
        Reply::error(
            StatusCode::NOT_FOUND,
            Some("RepoNotFound"),
            &format!("Repository not found: {} is not in this mirror", repo),
        )
    }

    fn revision_not_found(repo: &RepoId, revision: &str) -> Reply {
        Reply::error(
            StatusCode::NOT_FOUND,
            Some("RevisionNotFound"),
            &format!(
                "Invalid rev id: {} is not cached for {}",
                printable(revision),
                repo
            ),
        )
    }

    fn entry_not_found(commit: &CommitHash, path: &str) -> Reply {
        let mut reply = Reply::error(
            StatusCode::NOT_FOUND,
            Some("EntryNotFound"),
            &format!("Entry not found: {} at {}", printable(path), commit),
        );
        reply.header(HeaderName::from_static("x-repo-commit"), commit.as_str());
        reply
    }

    fn not_found() -> Reply {
        Reply::error(
            StatusCode::NOT_FOUND,
            None,
            "not found: the mirror serves /api/{models,datasets,spaces}/{repo}[/revision|/tree/...] \
             and /{repo}/resolve/{revision}/{path}",
        )
    }

    fn header(&mut self, name: HeaderName, value: &str) {
        self.headers.push((name, value.to_string()));
    }

    fn into_response(self, head: bool) -> Response {
        let mut builder = Response::builder().status(self.status);
        for (name, value) in self.headers {
            // Header values hold only ASCII: messages may quote a request's (decoded) path.
            let ascii: String = value
                .chars()
                .map(|c| {
                    if c.is_ascii() && !c.is_ascii_control() {
                        c
                    } else {
                        '?'
                    }
                })
                .collect();
            if let Ok(value) = HeaderValue::from_str(&ascii) {
                builder = builder.header(name, value);
            }
        }
        let (len, body) = match self.body {
            ReplyBody::Json(bytes) => (bytes.len() as u64, Body::from(bytes)),
            ReplyBody::File { file, len } => (
                len,
                Body::new(FileBody {
                    file: tokio::fs::File::from_std(file),
                    remaining: len,
                    buffer: vec![0; CHUNK_LEN],
                }),
            ),
        };
        builder = builder.header(header::CONTENT_LENGTH, len);
        let body = if head { Body::empty() } else { body };
        builder.body(body).unwrap_or_else(|_| {
            let mut response = Response::new(Body::empty());
            *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            response
        })
    }
}

/// A file streamed in chunks: a multi-gigabyte blob never sits in memory.
struct FileBody {
    file: tokio::fs::File,
    remaining: u64,
    buffer: Vec<u8>,
}

impl http_body::Body for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        let want = usize::try_from(this.remaining)
            .unwrap_or(usize::MAX)
            .min(this.buffer.len());
        let Some(window) = this.buffer.get_mut(..want) else {
            return Poll::Ready(Some(Err(io::Error::other("chunk outside the buffer"))));
        };
        let mut read = ReadBuf::new(window);
        match Pin::new(&mut this.file).poll_read(cx, &mut read) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(error)) => Poll::Ready(Some(Err(error))),
            Poll::Ready(Ok(())) => {
                let filled = read.filled();
                if filled.is_empty() {
                    // The blob shrank after its size was announced: end the response early
                    // (the client sees a short body) rather than pad it.
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the blob is shorter than announced",
                    ))));
                }
                this.remaining = this.remaining.saturating_sub(filled.len() as u64);
                Poll::Ready(Some(Ok(Frame::data(Bytes::copy_from_slice(filled)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// What a request asks for, its names decoded but not yet looked up.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    /// `/api/{type}s/{repo}[/revision/{rev}]`.
    Info { repo: RepoId, revision: String },
    /// `/api/{type}s/{repo}/tree/{rev}[/{path}]`; `path` empty for the root.
    Tree {
        repo: RepoId,
        revision: String,
        path: String,
        recursive: bool,
    },
    /// `/[{type}s/]{repo}/resolve/{rev}/{path}`.
    Resolve {
        repo: RepoId,
        revision: String,
        path: String,
    },
    /// `/api/{type}s/{repo}/refs[?include_prs=1]`.
    Refs { repo: RepoId, include_prs: bool },
    /// `/api/{type}s/{repo}/commits/{rev}`.
    Commits { repo: RepoId, revision: String },
    /// `POST /api/{type}s/{repo}/paths-info/{rev}`, the paths in the body.
    PathsInfo { repo: RepoId, revision: String },
    /// `/api/{type}s/{repo}/auth-check[/write]`.
    AuthCheck { repo: RepoId, write: bool },
}

impl Route {
    fn repo(&self) -> &RepoId {
        match self {
            Route::Info { repo, .. }
            | Route::Tree { repo, .. }
            | Route::Resolve { repo, .. }
            | Route::Refs { repo, .. }
            | Route::Commits { repo, .. }
            | Route::PathsInfo { repo, .. }
            | Route::AuthCheck { repo, .. } => repo,
        }
    }

    /// The methods the route answers, as an `Allow` header.
    fn allow_header(&self) -> &'static str {
        match self {
            // A read-only POST: the paths to look up are in the body.
            Route::PathsInfo { .. } => "POST",
            _ => "GET, HEAD",
        }
    }

    fn allows(&self, method: &Method) -> bool {
        match self {
            Route::PathsInfo { .. } => method == Method::POST,
            _ => method == Method::GET || method == Method::HEAD,
        }
    }
}

type Parsed<T> = std::result::Result<T, Reply>;

/// Percent-decodes one piece of a path; the result must be UTF-8.
fn decode(raw: &str) -> Parsed<String> {
    percent_decode_str(raw)
        .decode_utf8()
        .map(|text| text.into_owned())
        .map_err(|_| {
            Reply::error(
                StatusCode::BAD_REQUEST,
                None,
                "the request path is not valid UTF-8 once percent-decoded",
            )
        })
}

/// Percent-decodes segments and joins them with `/`.
fn decode_joined(raw: &[&str]) -> Parsed<String> {
    decode(&raw.join("/"))
}

/// Splits `{rev}/{path...}`: the revision is one (percent-encoded) segment, except that an
/// unencoded `refs/pr/N` (or `refs/convert/x`) is taken whole.
fn split_revision<'a>(tail: &'a [&'a str]) -> Parsed<(String, &'a [&'a str])> {
    let Some(first) = tail.first() else {
        return Err(Reply::error(
            StatusCode::BAD_REQUEST,
            None,
            "the revision is missing",
        ));
    };
    let first = decode(first)?;
    if first == "refs"
        && let (Some(kind), Some(name)) = (tail.get(1), tail.get(2))
    {
        let revision = format!("refs/{}/{}", decode(kind)?, decode(name)?);
        return Ok((revision, tail.get(3..).unwrap_or_default()));
    }
    Ok((first, tail.get(1..).unwrap_or_default()))
}

/// Whether the query asks for a recursive listing (`recursive=true`, `True` or `1`).
fn wants_recursive(query: Option<&str>) -> bool {
    query.unwrap_or_default().split('&').any(|pair| {
        matches!(
            pair.split_once('='),
            Some(("recursive", "true" | "True" | "1"))
        )
    })
}

fn repo_type_of(plural: &str) -> Option<RepoType> {
    match plural {
        "models" => Some(RepoType::Model),
        "datasets" => Some(RepoType::Dataset),
        "spaces" => Some(RepoType::Space),
        _ => None,
    }
}

/// The words that may follow a repo id under `/api/{type}s/`; `""` is the id alone.
const API_KEYWORDS: &[&str] = &[
    "revision",
    "tree",
    "refs",
    "commits",
    "paths-info",
    "auth-check",
    "",
];

/// The repo type of a listing, `/api/{models,datasets,spaces}` (with or without a final `/`).
fn listing_type(path: &str) -> Option<RepoType> {
    let rest = path.strip_prefix("/api/")?;
    repo_type_of(rest.strip_suffix('/').unwrap_or(rest))
}

/// Runs the mirror's parsers of untrusted request text on one request, as the server would before
/// answering: the path and query into routes, and a `paths-info` body. Returns how many routes
/// the path can mean. For fuzzing (`fuzz/fuzz_targets/hub_parsers.rs`): nothing is looked up.
pub fn parse_request_for_fuzzing(
    path: &str,
    query: Option<&str>,
    content_type: Option<&str>,
    body: &[u8],
) -> usize {
    let _ = api::PathsRequest::parse(content_type, body);
    parse_route(path, query).map_or(0, |routes| routes.len())
}

/// Parses a request path (still percent-encoded) into the routes it can mean, best first. A
/// repo id has one or two segments, so `org/resolve/resolve/main/x` reads both as repo
/// `org/resolve` and as repo `org`; the two-segment reading comes first, and the first whose repo
/// is cached is answered.
fn parse_route(path: &str, query: Option<&str>) -> Parsed<Vec<Route>> {
    let segments: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
    let api_type = match (segments.first(), segments.get(1)) {
        (Some(&"api"), Some(plural)) => repo_type_of(plural),
        _ => None,
    };
    let (repo_type, rest, keywords): (RepoType, &[&str], &[&str]) = match api_type {
        Some(repo_type) => (
            repo_type,
            segments.get(2..).unwrap_or_default(),
            API_KEYWORDS,
        ),
        None => match segments.first().and_then(|first| repo_type_of(first)) {
            Some(repo_type @ (RepoType::Dataset | RepoType::Space)) => (
                repo_type,
                segments.get(1..).unwrap_or_default(),
                &["resolve"],
            ),
            _ => (RepoType::Model, segments.as_slice(), &["resolve"]),
        },
    };
    let mut routes = Vec::new();
    let mut first_error = None;
    for parts in [2usize, 1] {
        let Some(id_parts) = rest.get(..parts) else {
            continue;
        };
        // `""` stands for "nothing after the id": `/api/models/{repo}`.
        let keyword = rest.get(parts).copied().unwrap_or_default();
        if !keywords.contains(&keyword) || (keyword.is_empty() && rest.len() > parts) {
            continue;
        }
        let tail = rest.get(parts + 1..).unwrap_or_default();
        let route = decode_joined(id_parts).and_then(|id| {
            let repo = RepoId::parse_typed(&id, repo_type).map_err(|e| Reply::bad_request(&e))?;
            route_for(repo, keyword, tail, query)
        });
        match route {
            Ok(route) => routes.push(route),
            Err(reply) => {
                first_error.get_or_insert(reply);
            }
        }
    }
    match (routes.is_empty(), first_error) {
        (false, _) => Ok(routes),
        (true, Some(reply)) => Err(reply),
        (true, None) => Err(Reply::not_found()),
    }
}

/// The route for `{repo}/{keyword}/{tail...}`.
fn route_for(repo: RepoId, keyword: &str, tail: &[&str], query: Option<&str>) -> Parsed<Route> {
    match keyword {
        "" => Ok(Route::Info {
            repo,
            revision: "main".to_string(),
        }),
        "revision" => Ok(Route::Info {
            repo,
            revision: decode_joined(tail)?,
        }),
        "tree" => {
            let (revision, path) = split_revision(tail)?;
            let path = decode_joined(path)?;
            Ok(Route::Tree {
                repo,
                revision,
                path: path.strip_suffix('/').unwrap_or(&path).to_string(),
                recursive: wants_recursive(query),
            })
        }
        "refs" if tail.is_empty() => Ok(Route::Refs {
            repo,
            include_prs: query_flag(query, "include_prs"),
        }),
        "commits" => Ok(Route::Commits {
            repo,
            revision: revision_alone(tail)?,
        }),
        "paths-info" => Ok(Route::PathsInfo {
            repo,
            revision: revision_alone(tail)?,
        }),
        "auth-check" => match tail {
            [] => Ok(Route::AuthCheck { repo, write: false }),
            ["write"] => Ok(Route::AuthCheck { repo, write: true }),
            _ => Err(Reply::not_found()),
        },
        "refs" => Err(Reply::not_found()),
        _ => {
            let (revision, path) = split_revision(tail)?;
            Ok(Route::Resolve {
                repo,
                revision,
                path: decode_joined(path)?,
            })
        }
    }
}

/// A tail that is a revision and nothing more (`main`, `refs%2Fpr%2F1` or `refs/pr/1`).
fn revision_alone(tail: &[&str]) -> Parsed<String> {
    let (revision, rest) = split_revision(tail)?;
    if rest.iter().all(|segment| segment.is_empty()) {
        Ok(revision)
    } else {
        Err(Reply::not_found())
    }
}

/// Whether the query sets `name` to a true value (`1`, `true`, `True`).
fn query_flag(query: Option<&str>, name: &str) -> bool {
    query.unwrap_or_default().split('&').any(|pair| {
        pair.split_once('=')
            .is_some_and(|(key, value)| key == name && matches!(value, "1" | "true" | "True"))
    })
}

/// The first route whose repo has a folder in the cache, with that folder.
fn pick_route(cache: &HubCache, routes: Vec<Route>) -> Parsed<(Route, RepoCache)> {
    let mut first_repo = None;
    for route in routes {
        let repo_cache = cache.repo(route.repo());
        if repo_cache.dir().is_dir() {
            return Ok((route, repo_cache));
        }
        first_repo.get_or_insert_with(|| route.repo().clone());
    }
    match first_repo {
        Some(repo) => Err(Reply::repo_not_found(&repo)),
        None => Err(Reply::not_found()),
    }
}
/// A 40-hex commit with a snapshot folder, or a cached ref pointing at one.
fn resolve_commit(repo: &RepoCache, revision: &str) -> std::result::Result<CommitHash, Reply> {
    let commit = match Revision::parse(revision).map_err(|error| Reply::bad_request(&error))? {
        Revision::Commit(commit) => commit,
        Revision::Ref(name) => match repo.read_ref(&name) {
            Ok(Some(commit)) => commit,
            Ok(None) => return Err(Reply::revision_not_found(repo.repo(), revision)),
            Err(error) => {
                eprintln!("mirror: ignoring ref {name} of {}: {error}", repo.repo());
                return Err(Reply::revision_not_found(repo.repo(), revision));
            }
        },
    };
    if repo.snapshot_dir(&commit).is_dir() {
        Ok(commit)
    } else {
        Err(Reply::revision_not_found(repo.repo(), revision))
    }
}

/// A blob that may be served: a regular file directly in the repo's `blobs/`, named by its etag.
#[derive(Debug, Clone)]
struct Blob {
    /// Canonical path.
    path: PathBuf,
    etag: Etag,
    size: u64,
}

impl Blob {
    /// A blob the cache rule resolved, with its size.
    fn from_cached(blob: CachedBlob, size: u64) -> Blob {
        Blob {
            path: blob.path,
            etag: blob.etag,
            size,
        }
    }

    /// The git blob id: the name of a SHA-1 blob, or the git SHA-1 of an LFS blob's pointer.
    fn git_oid(&self) -> String {
        if self.etag.is_sha256() {
            let pointer = self.lfs_pointer();
            let mut hasher = Sha1::new();
            hasher.update(format!("blob {}\0", pointer.len()).as_bytes());
            hasher.update(pointer.as_bytes());
            hex(&hasher.finalize())
        } else {
            self.etag.as_str().to_string()
        }
    }

    /// The git-lfs pointer file that stands for this blob in the git repo.
    fn lfs_pointer(&self) -> String {
        format!(
            "version https://git-lfs.github.com/spec/v1\noid sha256:{}\nsize {}\n",
            self.etag, self.size
        )
    }
}

/// The blob a snapshot entry resolves to, if it keeps the cache rule (the same rule loads use:
/// a regular file directly inside the repo's own `blobs/`, see `RepoCache::resolve_entry`).
fn blob_of(repo: &RepoCache, entry: &Path) -> Option<Blob> {
    let (blob, size) = repo.resolve_entry(entry).ok()?;
    Some(Blob::from_cached(blob, size))
}

fn refused_entry(repo: &RepoCache, commit: &CommitHash, path: &RepoFilePath) {
    eprintln!(
        "mirror: not serving {}/snapshots/{commit}/{path}: it does not resolve to a blob in {}/blobs",
        repo.dir().display(),
        repo.dir().display(),
    );
}

/// The files of a snapshot that may be served, sorted by path.
fn served_files(
    repo: &RepoCache,
    commit: &CommitHash,
) -> std::result::Result<Vec<(RepoFilePath, Blob)>, Reply> {
    let listing = repo.snapshot_listing(commit).map_err(|error| {
        eprintln!("mirror: cannot list {}: {error}", repo.dir().display());
        Reply::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            None,
            "the cached snapshot cannot be listed",
        )
    })?;
    for refused in &listing.refused {
        refused_entry(repo, commit, &refused.path);
    }
    let served = listing
        .files
        .into_iter()
        .map(|file| (file.path, Blob::from_cached(file.blob, file.size)))
        .collect();
    Ok(served)
}

/// Answers one request for a repo (blocking filesystem work; run off the async workers).
fn answer(
    cache: &HubCache,
    routes: Vec<Route>,
    range: Option<&str>,
    paths: &api::PathsRequest,
) -> Reply {
    let outcome = pick_route(cache, routes).and_then(|(route, repo)| match route {
        Route::Info { revision, .. } => repo_info(&repo, &revision),
        Route::Tree {
            revision,
            path,
            recursive,
            ..
        } => tree(&repo, &revision, &path, recursive),
        Route::Resolve { revision, path, .. } => resolve(&repo, &revision, &path, range),
        Route::Refs { include_prs, .. } => api::refs(&repo, include_prs),
        Route::Commits { revision, .. } => api::commits(&repo, &revision),
        Route::PathsInfo { revision, .. } => api::paths_info(&repo, &revision, paths),
        Route::AuthCheck { write, .. } => Ok(api::auth_check(&repo, write)),
    });
    outcome.unwrap_or_else(|reply| reply)
}

fn repo_info(repo: &RepoCache, revision: &str) -> Parsed<Reply> {
    let commit = resolve_commit(repo, revision)?;
    let siblings: Vec<serde_json::Value> = served_files(repo, &commit)?
        .iter()
        .map(|(path, blob)| {
            let mut sibling = serde_json::json!({
                "rfilename": path.as_str(),
                "size": blob.size,
                "blobId": blob.git_oid(),
            });
            if blob.etag.is_sha256() {
                set_field(
                    &mut sibling,
                    "lfs",
                    serde_json::json!({
                        "sha256": blob.etag.as_str(),
                        "size": blob.size,
                        "pointerSize": blob.lfs_pointer().len(),
                    }),
                );
            }
            sibling
        })
        .collect();
    let id = repo.repo().as_str();
    let mut info = serde_json::json!({
        "_id": id,
        "id": id,
        "author": id.split_once('/').map(|(org, _)| org),
        "sha": commit.as_str(),
        "private": false,
        "disabled": false,
        "gated": false,
        "tags": [],
        "siblings": siblings,
    });
    if repo.repo().repo_type() == RepoType::Model {
        set_field(&mut info, "modelId", serde_json::Value::from(id));
    }
    Ok(Reply::json(&info))
}

/// Adds a field to a JSON object (built here, so always an object).
fn set_field(object: &mut serde_json::Value, name: &str, value: serde_json::Value) {
    if let Some(fields) = object.as_object_mut() {
        fields.insert(name.to_string(), value);
    }
}

/// One file entry of a tree listing.
fn file_entry(path: &str, blob: &Blob) -> serde_json::Value {
    let mut entry = serde_json::json!({
        "type": "file",
        "oid": blob.git_oid(),
        "size": blob.size,
        "path": path,
    });
    if blob.etag.is_sha256() {
        set_field(
            &mut entry,
            "lfs",
            serde_json::json!({
                "oid": blob.etag.as_str(),
                "size": blob.size,
                "pointerSize": blob.lfs_pointer().len(),
            }),
        );
    }
    entry
}

/// One folder entry of a tree listing; `children` are the files under it, relative to it.
fn folder_entry(path: &str, children: &[(&str, &Blob)]) -> serde_json::Value {
    serde_json::json!({
        "type": "directory",
        "oid": git_tree_id(children),
        "size": 0,
        "path": path,
    })
}

/// The git tree id of the files `files` (paths relative to the folder), all mode 100644.
fn git_tree_id(files: &[(&str, &Blob)]) -> String {
    enum Node<'a> {
        File(&'a Blob),
        Dir(Vec<(&'a str, &'a Blob)>),
    }
    let mut nodes: BTreeMap<&str, Node<'_>> = BTreeMap::new();
    for &(path, blob) in files {
        match path.split_once('/') {
            None => {
                nodes.insert(path, Node::File(blob));
            }
            Some((dir, rest)) => {
                let node = nodes.entry(dir).or_insert_with(|| Node::Dir(Vec::new()));
                if let Node::Dir(children) = node {
                    children.push((rest, blob));
                }
            }
        }
    }
    // Git orders tree entries by name, a folder's name compared as if it ended in `/`.
    let mut entries: Vec<(String, &str, String)> = nodes
        .iter()
        .map(|(name, node)| match node {
            Node::File(blob) => (name.to_string(), "100644", blob.git_oid()),
            Node::Dir(children) => (format!("{name}/"), "40000", git_tree_id(children)),
        })
        .collect();
    entries.sort();
    let mut content = Vec::new();
    for (key, mode, oid) in &entries {
        let name = key.strip_suffix('/').unwrap_or(key);
        content.extend_from_slice(format!("{mode} {name}\0").as_bytes());
        content.extend(unhex(oid));
    }
    let mut hasher = Sha1::new();
    hasher.update(format!("tree {}\0", content.len()).as_bytes());
    hasher.update(&content);
    hex(&hasher.finalize())
}

/// Bytes of a lowercase hex string (checked hex by construction: blob ids and tree ids).
fn unhex(text: &str) -> Vec<u8> {
    text.as_bytes()
        .chunks(2)
        .filter_map(|pair| std::str::from_utf8(pair).ok())
        .filter_map(|pair| u8::from_str_radix(pair, 16).ok())
        .collect()
}

fn tree(repo: &RepoCache, revision: &str, path: &str, recursive: bool) -> Parsed<Reply> {
    let commit = resolve_commit(repo, revision)?;
    let prefix = if path.is_empty() {
        String::new()
    } else {
        let folder = RepoFilePath::parse(path).map_err(|error| Reply::bad_request(&error))?;
        format!("{folder}/")
    };
    let files = served_files(repo, &commit)?;
    let under: Vec<(&str, &Blob)> = files
        .iter()
        .filter_map(|(file, blob)| file.as_str().strip_prefix(&prefix).map(|rel| (rel, blob)))
        .collect();
    if !prefix.is_empty() && under.is_empty() {
        return Err(Reply::entry_not_found(&commit, path));
    }
    let mut folders = BTreeSet::new();
    let mut entries = Vec::new();
    for &(rel, blob) in &under {
        let mut parts: Vec<&str> = rel.split('/').collect();
        parts.pop();
        let depth = if recursive {
            parts.len()
        } else {
            parts.len().min(1)
        };
        for level in 1..=depth {
            folders.insert(parts.get(..level).unwrap_or_default().join("/"));
        }
        if parts.is_empty() || recursive {
            entries.push((
                format!("{prefix}{rel}"),
                file_entry(&format!("{prefix}{rel}"), blob),
            ));
        }
    }
    for folder in folders {
        let inside = format!("{folder}/");
        let children: Vec<(&str, &Blob)> = under
            .iter()
            .filter_map(|&(rel, blob)| rel.strip_prefix(&inside).map(|rest| (rest, blob)))
            .collect();
        let full = format!("{prefix}{folder}");
        let entry = folder_entry(&full, &children);
        entries.push((full, entry));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let listing: Vec<serde_json::Value> = entries.into_iter().map(|(_, entry)| entry).collect();
    Ok(Reply::json(&serde_json::Value::Array(listing)))
}

/// What a `Range` header asks of a file of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
enum ByteRange {
    /// No range (or one we ignore, as RFC 9110 allows: malformed, or several ranges).
    Whole,
    /// Bytes `start..=end`.
    Part { start: u64, end: u64 },
    /// A range that starts past the end.
    Unsatisfiable,
}

fn parse_number(text: &str) -> Option<u64> {
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn parse_range(header: Option<&str>, size: u64) -> ByteRange {
    let Some(spec) = header.and_then(|value| value.trim().strip_prefix("bytes=")) else {
        return ByteRange::Whole;
    };
    if spec.contains(',') {
        return ByteRange::Whole;
    }
    let Some((first, last)) = spec.split_once('-') else {
        return ByteRange::Whole;
    };
    match (first.trim(), last.trim()) {
        ("", suffix) => match parse_number(suffix) {
            None => ByteRange::Whole,
            Some(0) => ByteRange::Unsatisfiable,
            Some(_) if size == 0 => ByteRange::Unsatisfiable,
            Some(len) => ByteRange::Part {
                start: size - len.min(size),
                end: size - 1,
            },
        },
        (start, "") => match parse_number(start) {
            None => ByteRange::Whole,
            Some(start) if start >= size => ByteRange::Unsatisfiable,
            Some(start) => ByteRange::Part {
                start,
                end: size - 1,
            },
        },
        (start, end) => match (parse_number(start), parse_number(end)) {
            (Some(start), Some(end)) if start <= end => {
                if start >= size {
                    ByteRange::Unsatisfiable
                } else {
                    ByteRange::Part {
                        start,
                        end: end.min(size - 1),
                    }
                }
            }
            _ => ByteRange::Whole,
        },
    }
}

fn resolve(repo: &RepoCache, revision: &str, path: &str, range: Option<&str>) -> Parsed<Reply> {
    let commit = resolve_commit(repo, revision)?;
    let file_path = RepoFilePath::parse(path).map_err(|error| Reply::bad_request(&error))?;
    let entry = repo.snapshot_file(&commit, &file_path);
    let blob = blob_of(repo, &entry);
    let Some(blob) = blob else {
        if fs::symlink_metadata(&entry).is_ok() {
            refused_entry(repo, &commit, &file_path);
        }
        return Err(Reply::entry_not_found(&commit, path));
    };
    // The one opener: a blob swapped for a FIFO after the check is refused, never waited on.
    let mut file = safeformers_files::open_regular(&blob.path)
        .map_err(|_| Reply::entry_not_found(&commit, path))?;
    // The size of what was opened, not of what was looked at before.
    let size = match file.metadata() {
        Ok(meta) if meta.is_file() => meta.len(),
        _ => return Err(Reply::entry_not_found(&commit, path)),
    };
    let mut reply = Reply {
        status: StatusCode::OK,
        headers: Vec::new(),
        body: ReplyBody::Json(Vec::new()),
    };
    reply.header(HeaderName::from_static("x-repo-commit"), commit.as_str());
    let quoted = format!("\"{}\"", blob.etag);
    reply.header(header::ETAG, &quoted);
    if blob.etag.is_sha256() {
        reply.header(HeaderName::from_static("x-linked-etag"), &quoted);
        reply.header(HeaderName::from_static("x-linked-size"), &size.to_string());
    }
    reply.header(header::ACCEPT_RANGES, "bytes");
    reply.header(header::CONTENT_TYPE, "application/octet-stream");
    let (start, len) = match parse_range(range, size) {
        ByteRange::Whole => (0, size),
        ByteRange::Part { start, end } => {
            reply.status = StatusCode::PARTIAL_CONTENT;
            reply.header(
                header::CONTENT_RANGE,
                &format!("bytes {start}-{end}/{size}"),
            );
            (start, end - start + 1)
        }
        ByteRange::Unsatisfiable => {
            reply.status = StatusCode::RANGE_NOT_SATISFIABLE;
            reply.header(header::CONTENT_RANGE, &format!("bytes */{size}"));
            return Ok(reply);
        }
    };
    file.seek(SeekFrom::Start(start)).map_err(|_| {
        Reply::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            None,
            "the blob cannot be read",
        )
    })?;
    reply.body = ReplyBody::File { file, len };
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_rfc_9110() {
        assert_eq!(parse_range(None, 10), ByteRange::Whole);
        assert_eq!(
            parse_range(Some("bytes=2-4"), 10),
            ByteRange::Part { start: 2, end: 4 }
        );
        assert_eq!(
            parse_range(Some("bytes=2-"), 10),
            ByteRange::Part { start: 2, end: 9 }
        );
        assert_eq!(
            parse_range(Some("bytes=-3"), 10),
            ByteRange::Part { start: 7, end: 9 }
        );
        assert_eq!(
            parse_range(Some("bytes=-30"), 10),
            ByteRange::Part { start: 0, end: 9 }
        );
        assert_eq!(
            parse_range(Some("bytes=5-100"), 10),
            ByteRange::Part { start: 5, end: 9 }
        );
        assert_eq!(parse_range(Some("bytes=10-"), 10), ByteRange::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 10), ByteRange::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-"), 0), ByteRange::Unsatisfiable);
        for ignored in [
            "bytes=4-2",
            "bytes=0-1,3-4",
            "items=0-1",
            "bytes=+1-2",
            "bytes=x",
            "bytes=-",
            "bytes=99999999999999999999999-",
        ] {
            assert_eq!(
                parse_range(Some(ignored), 10),
                ByteRange::Whole,
                "{ignored}"
            );
        }
    }

    fn id(id: &str) -> RepoId {
        RepoId::parse(id).unwrap()
    }

    #[test]
    fn routes_are_parsed_after_decoding() {
        assert_eq!(
            parse_route("/api/models/org/name", None).unwrap(),
            [Route::Info {
                repo: id("org/name"),
                revision: "main".into()
            }]
        );
        assert_eq!(
            parse_route("/api/models/gpt2/revision/refs%2Fpr%2F1", None).unwrap(),
            [Route::Info {
                repo: id("gpt2"),
                revision: "refs/pr/1".into()
            }]
        );
        assert_eq!(
            parse_route(
                "/api/models/org/name/tree/main/a%20b/",
                Some("recursive=true")
            )
            .unwrap(),
            [Route::Tree {
                repo: id("org/name"),
                revision: "main".into(),
                path: "a b".into(),
                recursive: true
            }]
        );
        assert_eq!(
            parse_route("/org/name/resolve/refs/pr/1/x/config.json", None).unwrap(),
            [Route::Resolve {
                repo: id("org/name"),
                revision: "refs/pr/1".into(),
                path: "x/config.json".into()
            }]
        );
        // Read both ways; the two-segment id comes first.
        assert_eq!(
            parse_route("/org/resolve/resolve/main/x", None).unwrap(),
            [
                Route::Resolve {
                    repo: id("org/resolve"),
                    revision: "main".into(),
                    path: "x".into()
                },
                Route::Resolve {
                    repo: id("org"),
                    revision: "resolve".into(),
                    path: "main/x".into()
                }
            ]
        );
        assert_eq!(
            parse_route("/api/models/org/name/refs", Some("include_prs=1")).unwrap(),
            [Route::Refs {
                repo: id("org/name"),
                include_prs: true
            }]
        );
        assert_eq!(
            parse_route("/api/models/gpt2/commits/refs%2Fpr%2F1", None).unwrap(),
            [Route::Commits {
                repo: id("gpt2"),
                revision: "refs/pr/1".into()
            }]
        );
        assert_eq!(
            parse_route("/api/models/org/name/paths-info/refs/pr/2", None).unwrap(),
            [Route::PathsInfo {
                repo: id("org/name"),
                revision: "refs/pr/2".into()
            }]
        );
        assert_eq!(
            parse_route("/api/models/org/name/auth-check/write", None).unwrap(),
            [Route::AuthCheck {
                repo: id("org/name"),
                write: true
            }]
        );
        // `org/refs` the repo, or `org` and its refs.
        assert_eq!(parse_route("/api/models/org/refs", None).unwrap().len(), 2);
        assert_eq!(listing_type("/api/models"), Some(RepoType::Model));
        assert_eq!(listing_type("/api/datasets/"), Some(RepoType::Dataset));
        assert_eq!(listing_type("/api/models/x"), None);
        let dataset = parse_route("/datasets/org/data/resolve/main/x.csv", None).unwrap();
        assert_eq!(dataset[0].repo().repo_type(), RepoType::Dataset);
        for bad in [
            "/%2e%2e/x/resolve/main/a",
            "/org/%FF/resolve/main/a",
            "/api/models/a--b/c",
            "/api/models/%2e%2e",
        ] {
            let reply = parse_route(bad, None).unwrap_err();
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}");
        }
        for unknown in [
            "/",
            "/api/whoami-v2",
            "/api/models",
            "/api/models/a/b/c",
            "/org/name/blob/main/x",
        ] {
            let reply = parse_route(unknown, None).unwrap_err();
            assert_eq!(reply.status, StatusCode::NOT_FOUND, "{unknown}");
        }
    }

    #[test]
    fn lfs_pointer_oids_match_git() {
        // `printf 'version https://git-lfs.github.com/spec/v1\noid sha256:<64 a>\nsize 3\n'
        //   | git hash-object --stdin`
        let blob = Blob {
            path: PathBuf::new(),
            etag: Etag::parse(&"a".repeat(64)).unwrap(),
            size: 3,
        };
        assert_eq!(blob.lfs_pointer().len(), 126);
        assert_eq!(blob.git_oid(), GIT_POINTER_OID);
        // `git write-tree` of one file `x` holding `hello\n`.
        let hello = Blob {
            path: PathBuf::new(),
            etag: Etag::parse("ce013625030ba8dba906f756967f9e9ca394464a").unwrap(),
            size: 6,
        };
        assert_eq!(
            git_tree_id(&[("x", &hello)]),
            "e31a96220fbfbe7601ecc086a36b96dc27a8867e"
        );
        // `git write-tree` of `x` and `d/y`, both holding `hello\n`.
        assert_eq!(
            git_tree_id(&[("d/y", &hello), ("x", &hello)]),
            "b9511b5baf40e0fc1435b105da645a65ecbfb7b9"
        );
    }

    const GIT_POINTER_OID: &str = "90ddd6059cf82cb31bb6ca1c0b07ce1323c02527";
}
