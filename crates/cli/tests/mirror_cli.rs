//! `safeformers mirror`: the binary serves a cache and says where.

// Test code: a failed expectation is a panic with a message.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use safeformers_hub::cache::import_folder;
use safeformers_hub::{HubCache, RepoId};

/// Kills the server when the test ends, whatever happens.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn mirror_serves_a_cache_and_prints_its_address() {
    let cache = small_cache("serve");
    // start_mirror checks the `serving <cache> at http://…` line it prints.
    let (_child, addr) = start_mirror(&cache, &[]);

    let response = get_config(&addr);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.ends_with("{\"model_type\": \"bert\"}"),
        "{response}"
    );
}

#[test]
fn mirror_refuses_a_missing_cache() {
    let output = Command::new(env!("CARGO_BIN_EXE_safeformers"))
        .args(["mirror", "--cache", "/nonexistent/safeformers-cache"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no such cache folder"), "{stderr}");
}

/// The whole answer of the mirror at `addr` to `GET /org/name/resolve/main/config.json`.
fn get_config(addr: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET /org/name/resolve/main/config.json HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

/// A cache holding `org/name` with one `config.json`, in a fresh folder named after `label`.
fn small_cache(label: &str) -> HubCache {
    let root = std::env::temp_dir().join(format!(
        "safeformers-cli-mirror-{label}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&root);
    let source = root.join("source");
    std::fs::create_dir_all(&source).unwrap();
    std::fs::write(source.join("config.json"), b"{\"model_type\": \"bert\"}").unwrap();
    let cache = HubCache::new(root.join("cache"));
    import_folder(&cache, &source, &RepoId::parse("org/name").unwrap(), "main").unwrap();
    cache
}

/// Starts `safeformers mirror` on a free port with `flags`; checks the line it prints first
/// (`serving <cache> at http://<addr>`) and returns the child and that address.
fn start_mirror(cache: &HubCache, flags: &[&str]) -> (Child, String) {
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_safeformers"))
            .args(["mirror", "--cache"])
            .arg(cache.root())
            .args(["--addr", "127.0.0.1:0"])
            .args(flags)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the safeformers binary runs"),
    );
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let expected = format!("serving {} at http://127.0.0.1:", cache.root().display());
    assert!(line.starts_with(&expected), "{line}");
    let addr = line.trim().rsplit("http://").next().unwrap().to_string();
    (child, addr)
}

/// Waits (up to a minute, against hangs) until the server closes `stream`.
fn assert_closed_by_server(stream: &mut TcpStream, what: &str) {
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let started = Instant::now();
    let mut buffer = [0u8; 1024];
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{what}: the mirror kept the connection open"
        );
        match stream.read(&mut buffer) {
            Ok(0) => return,
            Ok(_) => panic!("{what}: the mirror answered instead of closing"),
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(error) if error.kind() == ErrorKind::ConnectionReset => return,
            Err(error) => panic!("{what}: {error}"),
        }
    }
}

#[test]
fn mirror_timeouts_and_cap_are_flags() {
    let cache = small_cache("limits");
    let (_child, addr) = start_mirror(
        &cache,
        &[
            "--header-timeout",
            "1s",
            "--idle-timeout",
            "1500ms",
            "--max-connections",
            "2",
        ],
    );
    // Half a header line: dropped after the header timeout.
    let mut slow = TcpStream::connect(&addr).unwrap();
    slow.write_all(b"GET /api/models/org/name HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .unwrap();
    // Silent connections beyond the cap of 2 wait, and are closed once idle.
    let mut silent: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    assert_closed_by_server(&mut slow, "half a header");
    for stream in &mut silent {
        assert_closed_by_server(stream, "an idle connection");
    }
    // A well-behaved request is served.
    let response = get_config(&addr);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}

#[test]
fn mirror_refuses_limits_out_of_range() {
    for flags in [
        ["--max-connections", "0"],
        ["--max-connections", "1000000"],
        ["--header-timeout", "0s"],
        ["--header-timeout", "forever"],
        ["--idle-timeout", "0"],
        ["--idle-timeout", "100d"],
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_safeformers"))
            .args(["mirror", "--cache", "/nonexistent/safeformers-cache"])
            .args(flags)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{flags:?}");
    }
}
