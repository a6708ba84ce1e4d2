//! A scripted HTTP/1.1 server on a loopback port: it answers each request with the next of a
//! list of canned responses and records every request (method, path, headers, body), so that a
//! test can play an OpenAI-compatible endpoint (or any other) and then look at exactly what the
//! client sent. One connection per request (`Connection: close`); every read has a deadline and
//! the server stops when dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The longest a connection may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest request head read.
const MAX_HEAD_BYTES: usize = 1 << 20;
/// The longest request body read.
const MAX_BODY_BYTES: usize = 64 << 20;
/// How long a [`CannedResponse::stall`] holds its connection at most.
const STALL_LIMIT: Duration = Duration::from_secs(60);

/// One request as the server received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The request target, e.g. `/v1/chat/completions`.
    pub path: String,
    /// The headers, names lowercased, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl RecordedRequest {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.as_str())
    }

    /// Head and body as text: what a test searches for a secret that must not be there.
    pub fn raw_text(&self) -> String {
        let mut text = format!("{} {}\n", self.method, self.path);
        for (name, value) in &self.headers {
            text.push_str(&format!("{name}: {value}\n"));
        }
        text.push_str(&String::from_utf8_lossy(&self.body));
        text
    }
}

/// What the server answers to one request.
#[derive(Debug, Clone)]
pub struct CannedResponse {
    /// The status code.
    pub status: u16,
    /// Extra headers (`Content-Length` and `Connection: close` are added).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// Never answer: hold the connection open (until the server is dropped, at most a minute).
    pub stall: bool,
}

impl CannedResponse {
    /// `200` with a JSON body.
    pub fn json(body: impl Into<String>) -> CannedResponse {
        CannedResponse {
            status: 200,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.into().into_bytes(),
            stall: false,
        }
    }

    /// `status` with `body` (any bytes) and `headers`.
    pub fn raw(status: u16, headers: &[(&str, &str)], body: impl Into<Vec<u8>>) -> CannedResponse {
        CannedResponse {
            status,
            headers: headers
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_string()))
                .collect(),
            body: body.into(),
            stall: false,
        }
    }

    /// A redirect to `location`.
    pub fn redirect(status: u16, location: &str) -> CannedResponse {
        CannedResponse::raw(status, &[("Location", location)], Vec::new())
    }

    /// Reads the request, then never answers.
    pub fn stall() -> CannedResponse {
        CannedResponse {
            status: 0,
            headers: Vec::new(),
            body: Vec::new(),
            stall: true,
        }
    }
}

/// The server; stops when dropped.
pub struct ScriptedServer {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<RecordedRequest>>>,
    connections: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ScriptedServer {
    /// Listens on `127.0.0.1:0` and answers requests with `responses` in order; once they are
    /// used up, with `500 {"error": {"message": "the script is over"}}`.
    pub fn start(responses: Vec<CannedResponse>) -> ScriptedServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let addr = listener.local_addr().expect("the listener's address");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (requests, connections, stop) =
                (requests.clone(), connections.clone(), stop.clone());
            std::thread::spawn(move || {
                serve(&listener, responses, &requests, &connections, &stop);
            })
        };
        ScriptedServer {
            addr,
            requests,
            connections,
            stop,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The requests received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.requests
            .lock()
            .map(|list| list.clone())
            .unwrap_or_default()
    }

    /// Connections accepted so far (a request or not).
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for ScriptedServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(
    listener: &TcpListener,
    responses: Vec<CannedResponse>,
    requests: &Mutex<Vec<RecordedRequest>>,
    connections: &AtomicUsize,
    stop: &AtomicBool,
) {
    let mut script = responses.into_iter();
    while !stop.load(Ordering::SeqCst) {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
        };
        connections.fetch_add(1, Ordering::SeqCst);
        let Some(request) = read_request(&stream) else {
            continue;
        };
        if let Ok(mut list) = requests.lock() {
            list.push(request);
        }
        let response = script.next().unwrap_or_else(|| {
            CannedResponse::raw(
                500,
                &[("Content-Type", "application/json")],
                r#"{"error": {"message": "the script is over"}}"#,
            )
        });
        if response.stall {
            let started = Instant::now();
            while !stop.load(Ordering::SeqCst) && started.elapsed() < STALL_LIMIT {
                std::thread::sleep(Duration::from_millis(10));
            }
            continue;
        }
        write_response(stream, &response);
    }
}

fn read_request(stream: &TcpStream) -> Option<RecordedRequest> {
    stream.set_nonblocking(false).ok()?;
    stream.set_read_timeout(Some(READ_TIMEOUT)).ok()?;
    let mut reader = BufReader::new(stream.take((MAX_HEAD_BYTES + MAX_BODY_BYTES) as u64));
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = Vec::new();
    let mut head_bytes = line.len();
    loop {
        let mut line = String::new();
        let read = reader.read_line(&mut line).ok()?;
        head_bytes += read;
        if read == 0 || head_bytes > MAX_HEAD_BYTES {
            return None;
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let length = headers
        .iter()
        .find(|(name, _)| name == "content-length")
        .and_then(|(_, value)| value.parse::<usize>().ok())
        .unwrap_or(0)
        .min(MAX_BODY_BYTES);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(RecordedRequest {
        method,
        path,
        headers,
        body,
    })
}

fn write_response(mut stream: TcpStream, response: &CannedResponse) {
    let mut head = format!("HTTP/1.1 {} Scripted\r\n", response.status);
    for (name, value) in &response.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        response.body.len()
    ));
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&response.body);
    let _ = stream.flush();
}
