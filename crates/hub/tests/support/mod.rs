//! A small programmable HTTP/1.1 server on loopback for the client tests: a route table of
//! handlers, a log of every request (method, path, headers), a count of connections, and replies
//! that can lie: cut bodies, endless bodies, wrong hashes, redirects, error codes.
//!
//! Every reply closes its connection, so connections == requests.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use safeformers_hub::client::RetryPolicy;
use safeformers_hub::{HubClient, HubSettings, RepoFilePath, RepoId};
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// A request as the server saw it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Path and query, as sent.
    pub path: String,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// How a reply's body is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyMode {
    /// `Content-Length` and the whole body.
    Full,
    /// `Content-Length` of the whole body, but only the first n bytes, then the connection closes.
    CutAfter(usize),
    /// No `Content-Length`: the body repeated forever until the client hangs up.
    Endless,
}

#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub mode: BodyMode,
}

impl Reply {
    pub fn new(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            mode: BodyMode::Full,
        }
    }
    pub fn header(mut self, name: &str, value: impl ToString) -> Reply {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Reply {
        self.body = body.into();
        self
    }
    pub fn json(self, value: serde_json::Value) -> Reply {
        self.header("Content-Type", "application/json")
            .body(value.to_string())
    }
    pub fn cut_after(mut self, bytes: usize) -> Reply {
        self.mode = BodyMode::CutAfter(bytes);
        self
    }
    pub fn endless(mut self) -> Reply {
        self.mode = BodyMode::Endless;
        self
    }
    /// A Hub-style error: status, `X-Error-Code`, `X-Error-Message`.
    pub fn hub_error(status: u16, code: &str, message: &str) -> Reply {
        Reply::new(status)
            .header("X-Error-Code", code)
            .header("X-Error-Message", message)
    }
}

/// A handler gets the request and how many times its route was hit before (0 for the first).
type Handler = Arc<dyn Fn(&Request, usize) -> Reply + Send + Sync>;

struct Route {
    method: String,
    path: String,
    handler: Handler,
    hits: usize,
}

#[derive(Default)]
struct State {
    routes: Vec<Route>,
    log: Vec<Request>,
}

pub struct TestServer {
    /// `http://<ip>:<port>`, no trailing slash.
    pub base: String,
    state: Arc<Mutex<State>>,
    connections: Arc<AtomicUsize>,
}

impl TestServer {
    pub fn start() -> TestServer {
        TestServer::start_on("127.0.0.1")
    }

    /// A server on another loopback address (`127.0.0.2`: another host for the client).
    pub fn start_on(ip: &str) -> TestServer {
        let listener = TcpListener::bind((ip, 0)).expect("bind a loopback port");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let connections = Arc::new(AtomicUsize::new(0));
        let (thread_state, thread_connections) = (state.clone(), connections.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                thread_connections.fetch_add(1, Ordering::SeqCst);
                let state = thread_state.clone();
                std::thread::spawn(move || serve(stream, &state));
            }
        });
        TestServer {
            base: format!("http://{addr}"),
            state,
            connections,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Adds a route (exact method and path with query); a later route for the same key wins.
    pub fn route(
        &self,
        method: &str,
        path: &str,
        handler: impl Fn(&Request, usize) -> Reply + Send + Sync + 'static,
    ) {
        self.state.lock().unwrap().routes.push(Route {
            method: method.to_string(),
            path: path.to_string(),
            handler: Arc::new(handler),
            hits: 0,
        });
    }

    pub fn log(&self) -> Vec<Request> {
        self.state.lock().unwrap().log.clone()
    }

    pub fn requests(&self, method: &str, path: &str) -> Vec<Request> {
        self.log()
            .into_iter()
            .filter(|request| request.method == method && request.path == path)
            .collect()
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

fn serve(stream: TcpStream, state: &Mutex<State>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 {
            break;
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    let request = Request {
        method,
        path,
        headers,
    };
    let found = {
        let mut state = state.lock().unwrap();
        state.log.push(request.clone());
        state
            .routes
            .iter_mut()
            .rev()
            .find(|route| route.method == request.method && route.path == request.path)
            .map(|route| {
                route.hits += 1;
                (route.handler.clone(), route.hits - 1)
            })
    };
    let reply = match found {
        Some((handler, hits)) => handler(&request, hits),
        None => Reply::new(404),
    };
    write_reply(stream, &request, &reply);
}

fn write_reply(mut stream: TcpStream, request: &Request, reply: &Reply) {
    let mut head = format!("HTTP/1.1 {} X\r\nConnection: close\r\n", reply.status);
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    let has_length = reply
        .headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("content-length"));
    if reply.mode != BodyMode::Endless && !has_length {
        head.push_str(&format!("Content-Length: {}\r\n", reply.body.len()));
    }
    head.push_str("\r\n");
    if stream.write_all(head.as_bytes()).is_err() || request.method == "HEAD" {
        let _ = stream.shutdown(Shutdown::Both);
        return;
    }
    match reply.mode {
        BodyMode::Full => {
            let _ = stream.write_all(&reply.body);
        }
        BodyMode::CutAfter(bytes) => {
            let _ = stream.write_all(&reply.body[..bytes.min(reply.body.len())]);
        }
        BodyMode::Endless => {
            let chunk = if reply.body.is_empty() {
                vec![b'x'; 4096]
            } else {
                reply.body.clone()
            };
            while stream.write_all(&chunk).is_ok() {}
        }
    }
    let _ = stream.flush();
    let _ = stream.shutdown(Shutdown::Both);
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

pub fn git_sha1_hex(bytes: &[u8]) -> String {
    let mut hasher = Sha1::new();
    hasher.update(format!("blob {}\0", bytes.len()).as_bytes());
    hasher.update(bytes);
    hex(&hasher.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// A file of a fake repo.
#[derive(Debug, Clone)]
pub struct FakeFile {
    pub path: String,
    pub content: Vec<u8>,
    /// Stored with LFS (etag = sha256) or not (etag = git blob sha1).
    pub lfs: bool,
}

impl FakeFile {
    pub fn new(path: &str, content: impl Into<Vec<u8>>, lfs: bool) -> FakeFile {
        FakeFile {
            path: path.to_string(),
            content: content.into(),
            lfs,
        }
    }
    pub fn etag(&self) -> String {
        if self.lfs {
            sha256_hex(&self.content)
        } else {
            git_sha1_hex(&self.content)
        }
    }
}

/// A 40-hex commit made of one repeated byte pattern.
pub fn commit(seed: &str) -> String {
    seed.repeat(40 / seed.len())
}

/// The HEAD headers a Hub sends for a file.
pub fn head_reply(file: &FakeFile, commit: &str) -> Reply {
    let reply = Reply::new(200)
        .header("X-Repo-Commit", commit)
        .header("Content-Length", file.content.len());
    if file.lfs {
        reply
            .header("ETag", format!("\"{}\"", git_sha1_hex(b"pointer")))
            .header("X-Linked-Etag", format!("\"{}\"", file.etag()))
            .header("X-Linked-Size", file.content.len())
    } else {
        reply.header("ETag", format!("\"{}\"", file.etag()))
    }
}

/// A GET of `content`, honouring `Range: bytes=N-`.
pub fn content_reply(request: &Request, content: &[u8]) -> Reply {
    if let Some(start) = request
        .header("range")
        .and_then(|range| range.strip_prefix("bytes="))
        .and_then(|range| range.strip_suffix('-'))
        .and_then(|start| start.parse::<usize>().ok())
        && start < content.len()
    {
        return Reply::new(206)
            .header(
                "Content-Range",
                format!("bytes {start}-{}/{}", content.len() - 1, content.len()),
            )
            .body(content[start..].to_vec());
    }
    Reply::new(200).body(content.to_vec())
}

/// Serves a model repo: the revision API for each of `refs` and for the commit, the tree API
/// at the commit, and HEAD/GET of each file at each ref and at the commit.
pub fn serve_repo(
    server: &TestServer,
    repo: &str,
    refs: &[&str],
    commit: &str,
    files: &[FakeFile],
) {
    let mut revisions: Vec<String> = refs.iter().map(|name| name.to_string()).collect();
    revisions.push(commit.to_string());
    for revision in &revisions {
        let sha = commit.to_string();
        server.route(
            "GET",
            &format!(
                "/api/models/{repo}/revision/{}",
                revision.replace('/', "%2F")
            ),
            move |_, _| Reply::new(200).json(serde_json::json!({ "sha": sha, "id": "x" })),
        );
        for file in files {
            let (head_file, head_commit) = (file.clone(), commit.to_string());
            let path = format!(
                "/{repo}/resolve/{}/{}",
                revision.replace('/', "%2F"),
                file.path
            );
            server.route("HEAD", &path, move |_, _| {
                head_reply(&head_file, &head_commit)
            });
            let content = file.content.clone();
            server.route("GET", &path, move |request, _| {
                content_reply(request, &content)
            });
        }
    }
    let tree: Vec<serde_json::Value> = files
        .iter()
        .map(|file| {
            let mut entry = serde_json::json!({
                "type": "file",
                "path": file.path,
                "size": file.content.len(),
                "oid": if file.lfs { git_sha1_hex(b"pointer") } else { file.etag() },
            });
            if file.lfs {
                entry["lfs"] = serde_json::json!({
                    "oid": file.etag(),
                    "size": file.content.len(),
                    "pointerSize": 134,
                });
            }
            entry
        })
        .collect();
    let tree = serde_json::Value::Array(tree);
    server.route(
        "GET",
        &format!("/api/models/{repo}/tree/{commit}?recursive=true"),
        move |_, _| Reply::new(200).json(tree.clone()),
    );
}

/// A fresh, empty cache folder.
pub fn temp_cache(label: &str) -> PathBuf {
    safeformers_testkit::scratch_dir(&format!("client-{label}"))
}

pub const TOKEN: &str = "hf_test_secret_token";

pub fn settings(server: &TestServer, cache: &std::path::Path) -> HubSettings {
    HubSettings {
        endpoint: server.base.clone(),
        token: Some(TOKEN.to_string()),
        offline: false,
        cache_dir: cache.to_path_buf(),
        progress: false,
    }
}

/// A client of `server` with no backoff between retries.
pub fn client(server: &TestServer, cache: &std::path::Path) -> HubClient {
    client_with(settings(server, cache))
}

pub fn client_with(settings: HubSettings) -> HubClient {
    HubClient::new(settings)
        .unwrap()
        .with_retry_policy(RetryPolicy {
            attempts: 4,
            initial_backoff: Duration::ZERO,
        })
}

/// Every file under `dir` (recursively), as paths relative to it.
pub fn files_under(dir: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                pending.push(path);
            } else {
                found.push(
                    path.strip_prefix(dir)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    found.sort();
    found
}

/// The repository every client test downloads from.
pub fn repo() -> RepoId {
    RepoId::parse("org/model").unwrap()
}

/// A repository file path from a literal.
pub fn path(name: &str) -> RepoFilePath {
    RepoFilePath::parse(name).unwrap()
}
