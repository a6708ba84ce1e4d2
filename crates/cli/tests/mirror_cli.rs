//! `safeformers mirror`: the binary serves a cache and says where.

// Test code: a failed expectation is a panic with a message.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

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
    let root = std::env::temp_dir().join(format!("safeformers-cli-mirror-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let source = root.join("source");
    std::fs::create_dir_all(&source).unwrap();
    std::fs::write(source.join("config.json"), b"{\"model_type\": \"bert\"}").unwrap();
    let cache = HubCache::new(root.join("cache"));
    import_folder(&cache, &source, &RepoId::parse("org/name").unwrap(), "main").unwrap();

    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_safeformers"))
            .args(["mirror", "--cache"])
            .arg(cache.root())
            .args(["--addr", "127.0.0.1:0"])
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
    let addr = line.trim().rsplit("http://").next().unwrap();

    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET /org/name/resolve/main/config.json HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
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
