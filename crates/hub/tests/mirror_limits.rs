//! The mirror bounds what each client may hold: a connection whose request headers come too
//! slowly is dropped, an idle keep-alive connection is closed, at most `max_connections` are held
//! at once, request bodies and request handling are bounded.
//!
//! The timeouts here are short (one second) and every wait is for an event (the server closing
//! the connection: a read that returns 0), with a one-minute guard against hangs; nothing asserts
//! how fast the server was.

#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

mod mirror_support;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mirror_support::{get, model_cache, request};
use safeformers_hub::mirror::{MirrorHandle, MirrorLimits, MirrorServer};
use safeformers_hub::{HubCache, RepoId};

/// How long any test waits for an event before calling it a hang.
const HANG_GUARD: Duration = Duration::from_secs(60);

/// A timeout the tests make the server use.
const SHORT: Duration = Duration::from_secs(1);

/// A timeout the tests make the server use when it must not be the one that fires.
const NEVER: Duration = Duration::from_secs(3600);

fn start_with(cache: &HubCache, limits: MirrorLimits) -> MirrorHandle {
    MirrorServer::start_with_limits(cache.clone(), "127.0.0.1:0".parse().unwrap(), limits).unwrap()
}

/// How a wait for the server to close a connection ended.
#[derive(Debug, PartialEq, Eq)]
enum Ending {
    /// The server closed the connection (read returned 0, or a reset).
    Closed,
    /// The server sent bytes instead.
    Answered(Vec<u8>),
}

/// Reads until the server closes the connection, calling `between` (which may write) every
/// 100 ms; panics after [`HANG_GUARD`].
fn wait_for_close(stream: &mut TcpStream, mut between: impl FnMut(&mut TcpStream)) -> Ending {
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let started = Instant::now();
    let mut buffer = [0u8; 4096];
    loop {
        assert!(
            started.elapsed() < HANG_GUARD,
            "the server kept the connection open for {HANG_GUARD:?}"
        );
        match stream.read(&mut buffer) {
            Ok(0) => return Ending::Closed,
            Ok(read) => return Ending::Answered(buffer[..read].to_vec()),
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                between(stream);
            }
            Err(error)
                if matches!(
                    error.kind(),
                    ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                ) =>
            {
                return Ending::Closed;
            }
            Err(error) => panic!("reading from the mirror: {error}"),
        }
    }
}

/// Reads one response with a `Content-Length` off a kept-alive connection.
fn read_one_response(stream: &mut TcpStream) -> (u16, Vec<u8>) {
    stream.set_read_timeout(Some(HANG_GUARD)).unwrap();
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).unwrap(),
            1,
            "the response ended early"
        );
        raw.push(byte[0]);
    }
    let head = String::from_utf8(raw).unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().unwrap())
        })
        .expect("a content-length");
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).unwrap();
    (status, body)
}

#[test]
fn a_client_that_sends_its_headers_slowly_is_disconnected() {
    let (cache, _) = model_cache("slowloris");
    // Only the header timeout can close the connection within the guard.
    let mirror = start_with(
        &cache,
        MirrorLimits {
            header_timeout: SHORT,
            idle_timeout: NEVER,
            ..MirrorLimits::default()
        },
    );
    let addr = mirror.local_addr();

    // Half a header line, then one more byte every 100 ms: always busy, never done.
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .write_all(b"GET /api/models/org/name HTTP/1.1\r\nHost: mirror\r\nX-Slow: ")
        .unwrap();
    let ending = wait_for_close(&mut stream, |stream| {
        let _ = stream.write_all(b"a");
    });
    assert_eq!(ending, Ending::Closed);

    // Nothing at all after connecting: the first request is as late as a slow one.
    let mut silent = TcpStream::connect(addr).unwrap();
    assert_eq!(wait_for_close(&mut silent, |_| {}), Ending::Closed);
    assert_eq!(get(addr, "/api/models/org/name").status, 200);
}

#[test]
fn idle_keep_alive_connections_are_closed() {
    let (cache, _) = model_cache("idle");
    // Only the idle timeout can close these connections within the guard.
    let mirror = start_with(
        &cache,
        MirrorLimits {
            header_timeout: NEVER,
            idle_timeout: SHORT,
            ..MirrorLimits::default()
        },
    );
    let addr = mirror.local_addr();

    // A kept-alive connection after a complete request and response.
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET /org/name/resolve/main/config.json HTTP/1.1\r\nHost: {addr}\r\n\r\n"
    )
    .unwrap();
    let (status, body) = read_one_response(&mut stream);
    assert_eq!(status, 200);
    assert_eq!(body, b"{\"model_type\": \"bert\"}");
    // It is kept for the next request...
    write!(
        stream,
        "GET /api/models/org/name HTTP/1.1\r\nHost: {addr}\r\n\r\n"
    )
    .unwrap();
    assert_eq!(read_one_response(&mut stream).0, 200);
    // ...and closed once idle.
    assert_eq!(wait_for_close(&mut stream, |_| {}), Ending::Closed);
    assert_eq!(get(addr, "/api/models/org/name").status, 200);
}

#[test]
fn a_download_that_is_still_moving_is_not_cut() {
    let (cache, _) = model_cache("moving");
    let mirror = start_with(
        &cache,
        MirrorLimits {
            header_timeout: SHORT,
            idle_timeout: SHORT,
            ..MirrorLimits::default()
        },
    );
    let addr = mirror.local_addr();
    // Read the 3 MB body slowly, in pieces, for longer than both timeouts together: bytes keep
    // moving, so the connection is neither idle nor stalled.
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET /org/name/resolve/main/model.safetensors HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    stream.set_read_timeout(Some(HANG_GUARD)).unwrap();
    let started = Instant::now();
    let mut received = Vec::new();
    let mut piece = [0u8; 64 * 1024];
    loop {
        let read = stream.read(&mut piece).unwrap();
        if read == 0 {
            break;
        }
        received.extend_from_slice(&piece[..read]);
        if started.elapsed() < 3 * SHORT {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    assert!(started.elapsed() >= 2 * SHORT, "the download was not slow");
    let split = received
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .unwrap();
    assert_eq!(received[split + 4..], mirror_support::weights()[..]);
}

#[test]
fn connections_beyond_the_cap_wait_and_a_good_client_is_still_served() {
    let (cache, _) = model_cache("cap");
    const CAP: usize = 2;
    let mirror = Arc::new(start_with(
        &cache,
        MirrorLimits {
            header_timeout: SHORT,
            idle_timeout: SHORT,
            max_connections: CAP,
            ..MirrorLimits::default()
        },
    ));
    let addr = mirror.local_addr();

    // Watch how many connections the server holds, all along.
    let most_held = Arc::new(AtomicUsize::new(0));
    let watching = Arc::new(AtomicBool::new(true));
    let watcher = std::thread::spawn({
        let (mirror, most_held, watching) = (mirror.clone(), most_held.clone(), watching.clone());
        move || {
            while watching.load(Ordering::SeqCst) {
                most_held.fetch_max(mirror.open_connections(), Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    });

    // Three times the cap of clients that connect and say nothing (dropped by the header
    // timeout, which runs from the moment a connection is accepted).
    let mut idle: Vec<TcpStream> = (0..3 * CAP)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    // A well-behaved client behind them is served once they time out.
    let served = get(addr, "/api/models/org/name");
    assert_eq!(served.status, 200);
    assert_eq!(served.json()["id"], "org/name");
    for stream in &mut idle {
        assert_eq!(wait_for_close(stream, |_| {}), Ending::Closed);
    }

    watching.store(false, Ordering::SeqCst);
    watcher.join().unwrap();
    let most = most_held.load(Ordering::SeqCst);
    assert!(
        most <= CAP,
        "the server held {most} connections, over its cap of {CAP}"
    );
    assert_eq!(most, CAP, "the idle clients never filled the cap");
}

fn wait_until_closed_count_is(mirror: &MirrorHandle, count: usize) {
    let started = Instant::now();
    while mirror.open_connections() != count {
        assert!(
            started.elapsed() < HANG_GUARD,
            "connections were not released"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn closed_connections_give_their_slot_back() {
    let (cache, _) = model_cache("slots");
    let mirror = start_with(
        &cache,
        MirrorLimits {
            max_connections: 1,
            ..MirrorLimits::default()
        },
    );
    let addr = mirror.local_addr();
    // One slot, many clients one after the other, each closing its connection.
    for _ in 0..20 {
        assert_eq!(get(addr, "/api/models/org/name").status, 200);
    }
    wait_until_closed_count_is(&mirror, 0);
}

#[test]
fn request_bodies_are_bounded() {
    let (cache, _) = model_cache("bodies");
    let mirror = start_with(&cache, MirrorLimits::default());
    let addr = mirror.local_addr();
    let url = "/api/models/org/name/paths-info/main";
    let limit = safeformers_hub::mirror::MAX_REQUEST_BODY;

    // Refused on its Content-Length alone: the body is never sent.
    let declared = request(
        addr,
        "POST",
        url,
        &[
            ("Content-Length", &(limit + 1).to_string()),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
    );
    assert_eq!(declared.status, 413);

    // Chunked, with no length announced: refused once the bytes pass the limit. The body ends
    // with the one byte over the limit (no chunk end), so that the server has read everything
    // sent when it answers and closes.
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "POST {url} HTTP/1.1\r\nHost: {addr}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let chunk = vec![b'a'; 64 * 1024];
    assert_eq!(limit % chunk.len(), 0);
    for _ in 0..limit / chunk.len() {
        write!(stream, "{:x}\r\n", chunk.len()).unwrap();
        stream.write_all(&chunk).unwrap();
        stream.write_all(b"\r\n").unwrap();
    }
    stream.write_all(b"1\r\na").unwrap();
    let (status, _) = read_one_response(&mut stream);
    assert_eq!(status, 413);

    // Within the limit, the body is read.
    let small = request(
        addr,
        "POST",
        url,
        &[
            ("Content-Length", "0"),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
    );
    assert_eq!(small.status, 200);
}

#[test]
fn a_request_that_cannot_finish_is_answered_when_its_time_is_up() {
    let (cache, snapshot) = model_cache("stuck");
    // `refs/stuck` is a FIFO that nobody writes: reading it blocks (unless the cache reader
    // refuses special files, in which case the ref is simply not found).
    let repo = cache.repo(&RepoId::parse("org/name").unwrap());
    let fifo = repo.dir().join("refs/stuck");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    let mirror = start_with(
        &cache,
        MirrorLimits {
            request_timeout: SHORT,
            ..MirrorLimits::default()
        },
    );
    let addr = mirror.local_addr();
    let stuck = get(addr, "/api/models/org/name/revision/stuck");
    assert!(
        stuck.status == 503 || stuck.status == 404,
        "status {}",
        stuck.status
    );
    // The server still answers.
    let info = get(addr, "/api/models/org/name").json();
    assert_eq!(info["sha"], snapshot.commit.as_str());
    // Release a reader still blocked on the FIFO, if there is one.
    std::thread::spawn(move || drop(std::fs::OpenOptions::new().write(true).open(fifo)));
}
