//! Shared by the tests of `safeformers serve`: a server process on a loopback port (killed on
//! drop), and a small HTTP/1.1 client over a plain socket, so that tests control every byte
//! they send and every header they get.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    dead_code
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a test waits for the server to load its models and print its address.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// A `safeformers serve` process.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    stderr_log: PathBuf,
}

impl Server {
    /// Starts `safeformers serve ARGS --addr 127.0.0.1:0` (offline, in-repo fixtures) and waits
    /// for its "listening on" line.
    pub fn start(args: &[&str]) -> Server {
        Server::start_with_env(args, &[])
    }

    /// [`Server::start`] with these environment variables set for the server.
    pub fn start_with_env(args: &[&str], envs: &[(&str, &str)]) -> Server {
        Server::start_program(env!("CARGO_BIN_EXE_safeformers").as_ref(), args, envs)
    }

    /// [`Server::start_with_env`] running `program` (a copy of the binary).
    pub fn start_program(
        program: &std::path::Path,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> Server {
        let stderr_log = safeformers_testkit::scratch_dir("serve-log").join("stderr.log");
        let mut child = Command::new(program)
            .arg("serve")
            .args(args)
            .args(["--addr", "127.0.0.1:0"])
            .env("HF_HUB_OFFLINE", "1")
            .env("RUST_LOG", "info")
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_log).unwrap())
            .spawn()
            .expect("safeformers serve starts");
        let stdout = child.stdout.take().unwrap();
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = sender.send(line);
            }
            // Keep draining so the server never blocks on a full pipe.
            for _ in lines {}
        });
        let line = match receiver.recv_timeout(START_TIMEOUT) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "the server did not start: {}",
                    std::fs::read_to_string(&stderr_log).unwrap_or_default()
                );
            }
        };
        let addr = line
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line: {line}"))
            .parse()
            .unwrap();
        Server {
            child,
            addr,
            stderr_log,
        }
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits (at most `limit`) for the process to exit.
    pub fn terminate(&mut self, limit: Duration) -> ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The value of a metric line `NAME VALUE` (labels included in `name`).
    pub fn metric(&self, name: &str) -> f64 {
        let (_, body) = request(self.addr, "GET", "/metrics", &[], b"");
        let body = String::from_utf8(body).unwrap();
        body.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response's status line's code and headers (lowercased names).
pub struct Head {
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// One request on a fresh connection (`Connection: close`); the whole response.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (Head, Vec<u8>) {
    let mut stream = open(addr, method, path, headers, body);
    let mut reader = BufReader::new(&mut stream);
    let head = read_head(&mut reader);
    let mut raw = Vec::new();
    reader.read_to_end(&mut raw).unwrap();
    let chunked = head
        .header("transfer-encoding")
        .is_some_and(|value| value.contains("chunked"));
    let body = if chunked { dechunk(&raw) } else { raw };
    (head, body)
}

/// POSTs JSON; returns the status and the parsed body.
pub fn post_json(
    addr: SocketAddr,
    path: &str,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let (head, body) = request(
        addr,
        "POST",
        path,
        &[("content-type", "application/json")],
        body.to_string().as_bytes(),
    );
    let value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&body).into()));
    (head.status, value)
}

/// Opens a connection and sends one request.
pub fn open(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    // The server may refuse and close before reading everything: ignore write errors.
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
    stream
}

/// Reads a status line and headers.
pub fn read_head(reader: &mut impl BufRead) -> Head {
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {line:?}"));
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_lowercase(), value.trim().to_string()));
        }
    }
    Head { status, headers }
}

/// The payload of a chunked body.
pub fn dechunk(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = raw;
    loop {
        let Some(end) = rest.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = usize::from_str_radix(std::str::from_utf8(&rest[..end]).unwrap().trim(), 16)
            .unwrap_or(0);
        if size == 0 {
            return out;
        }
        let start = end + 2;
        out.extend_from_slice(&rest[start..start + size]);
        rest = &rest[start + size + 2..];
    }
}

/// The `data:` payloads of a server-sent event stream, `[DONE]` included.
pub fn sse_data(body: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(body)
        .split("\n\n")
        .filter_map(|event| event.trim().strip_prefix("data: ").map(str::to_string))
        .collect()
}

/// The text a streamed chat completion adds up to, per choice.
pub fn streamed_chat_text(body: &[u8]) -> Vec<String> {
    let mut texts: Vec<String> = Vec::new();
    for data in sse_data(body) {
        if data == "[DONE]" {
            break;
        }
        let chunk: serde_json::Value = serde_json::from_str(&data).unwrap();
        for choice in chunk["choices"].as_array().into_iter().flatten() {
            let index = choice["index"].as_u64().unwrap() as usize;
            if texts.len() <= index {
                texts.resize(index + 1, String::new());
            }
            if let Some(text) = choice["delta"]["content"].as_str() {
                texts[index].push_str(text);
            }
        }
    }
    texts
}

/// The in-repo fixture folder `tests/fixtures/PATH`.
pub fn fixture_dir(path: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(path)
        .display()
        .to_string()
}
