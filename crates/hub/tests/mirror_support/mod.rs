//! Shared by the mirror tests: caches built in temporary folders, and a tiny HTTP/1.1 client
//! that sends request targets byte for byte (no normalisation of `..` or `%2e`), so traversal
//! attempts reach the server exactly as an attacker would write them.

// Test helpers: a broken temporary folder or a malformed reply fails the test with a panic.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use safeformers_hub::cache::import_folder;
use safeformers_hub::mirror::{MirrorHandle, MirrorServer};
use safeformers_hub::{HubCache, RepoId, Snapshot};

/// A fresh, empty temporary folder.
pub fn temp_dir(label: &str) -> PathBuf {
    safeformers_testkit::scratch_dir(&format!("mirror-{label}"))
}

/// The bytes of `model.safetensors` in [`model_cache`]: big enough to span several body chunks.
pub fn weights() -> Vec<u8> {
    (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(31) % 251) as u8)
        .collect()
}

/// A cache holding `org/name` (config.json, model.safetensors, 1_Pooling/config.json) at `main`,
/// imported from a folder; returns the cache and the snapshot.
pub fn model_cache(label: &str) -> (HubCache, Snapshot) {
    let source = temp_dir(&format!("{label}-source"));
    std::fs::write(source.join("config.json"), b"{\"model_type\": \"bert\"}").unwrap();
    std::fs::write(source.join("model.safetensors"), weights()).unwrap();
    std::fs::create_dir_all(source.join("1_Pooling")).unwrap();
    std::fs::write(source.join("1_Pooling/config.json"), b"{\"pooling\": 1}").unwrap();
    let cache = HubCache::new(temp_dir(&format!("{label}-cache")));
    let repo = RepoId::parse("org/name").unwrap();
    let snapshot = import_folder(&cache, &source, &repo, "main").unwrap();
    (cache, snapshot)
}

/// Starts a mirror of `cache` on a free loopback port.
pub fn start(cache: &HubCache) -> MirrorHandle {
    MirrorServer::start(cache.clone(), "127.0.0.1:0".parse().unwrap()).unwrap()
}

/// A response, as read off the wire.
#[derive(Debug)]
pub struct HttpReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpReply {
    /// A header's value (names compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|error| panic!("{error}: {}", String::from_utf8_lossy(&self.body)))
    }
}

/// Sends one request with `Connection: close` and reads the whole response.
pub fn request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> HttpReply {
    request_with_body(addr, method, target, headers, &[])
}

/// `POST` of `body` with its `Content-Type` (and `Content-Length`).
pub fn post(addr: SocketAddr, target: &str, content_type: &str, body: &[u8]) -> HttpReply {
    let length = body.len().to_string();
    request_with_body(
        addr,
        "POST",
        target,
        &[("Content-Type", content_type), ("Content-Length", &length)],
        body,
    )
}

/// [`request`] followed by `body` (the headers must announce it).
pub fn request_with_body(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpReply {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    // A server may answer from the headers alone (413 for a body over its limit) and close
    // before reading the body: the write then fails (broken pipe), and reading ends in a reset
    // after the answer arrived. Either is fine as long as an answer came.
    let written = stream.write_all(body);
    let mut raw = Vec::new();
    let read = stream.read_to_end(&mut raw);
    if raw.is_empty() {
        panic!("no answer: writing the body {written:?}, reading {read:?}");
    }
    let split = raw
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .map(|line| {
            let (name, value) = line.split_once(':').unwrap();
            (name.trim().to_string(), value.trim().to_string())
        })
        .collect();
    HttpReply {
        status,
        headers,
        body,
    }
}

/// `GET`.
pub fn get(addr: SocketAddr, target: &str) -> HttpReply {
    request(addr, "GET", target, &[])
}

/// The path of `path` inside a snapshot folder.
pub fn in_snapshot(snapshot: &Snapshot, path: &str) -> PathBuf {
    snapshot.dir.join(path)
}

/// Replaces whatever is at `link` with a symlink to `target`.
pub fn relink(link: &Path, target: &Path) {
    let _ = std::fs::remove_file(link);
    let _ = std::fs::remove_dir_all(link);
    std::os::unix::fs::symlink(target, link).unwrap();
}
