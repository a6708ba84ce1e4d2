//! Requests with too many or too large headers are refused with 431 before the handler runs.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use safeformers_http::{ConnectionLimits, MIN_HEADER_BYTES, accept_loop};

const MAX_HEADERS: usize = 16;

/// Serves on a loopback port from a background runtime; returns the port and the count of
/// requests that reached the handler.
fn start() -> (u16, Arc<AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let handled = Arc::new(AtomicUsize::new(0));
    let counter = handled.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let limits = ConnectionLimits {
                header_timeout: Duration::from_secs(10),
                idle_timeout: Duration::from_secs(10),
                stall_timeout: None,
                max_connections: 4,
                max_headers: MAX_HEADERS,
                max_header_bytes: MIN_HEADER_BYTES,
            };
            let handle = move |_request| {
                let counter = counter.clone();
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    Response::new(Body::from("ok"))
                }
            };
            let _ = accept_loop(listener, limits, handle, Arc::default(), "test").await;
        });
    });
    (port, handled)
}

/// Sends one request with `extra` header lines and returns the status line.
fn status_with_headers(port: u16, extra: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let request = format!("GET / HTTP/1.1\r\nHost: localhost\r\n{extra}Connection: close\r\n\r\n");
    // The server may answer and close before it has read everything: ignore write errors.
    let _ = stream.write_all(request.as_bytes());
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn header_count_and_size_are_bounded() {
    let (port, handled) = start();
    let few: String = (0..4).map(|i| format!("X-Field-{i}: {i}\r\n")).collect();
    assert!(status_with_headers(port, &few).contains(" 200 "));
    assert_eq!(handled.load(Ordering::SeqCst), 1);

    let many: String = (0..200).map(|i| format!("X-Field-{i}: {i}\r\n")).collect();
    assert!(status_with_headers(port, &many).contains(" 431 "));

    let huge = format!("X-Huge: {}\r\n", "a".repeat(4 * MIN_HEADER_BYTES));
    assert!(status_with_headers(port, &huge).contains(" 431 "));
    assert_eq!(
        handled.load(Ordering::SeqCst),
        1,
        "refused requests never reach the handler"
    );
}
