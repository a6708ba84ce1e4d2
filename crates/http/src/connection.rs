//! The accept loop: it holds at most [`ConnectionLimits::max_connections`] connections at once,
//! and a watchdog per connection closes it when its client is too slow to send a request's
//! headers, stays idle between requests, or (when [`ConnectionLimits::stall_timeout`] is set)
//! moves no byte in the middle of one.
//!
//! Connections beyond the cap are not accepted: they wait in the kernel's listen backlog until a
//! slot frees (an idle or slow connection frees one within its timeout), so the server never
//! holds more than the cap however many clients connect.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::response::Response;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// How long the accept loop pauses after the operating system refuses a connection (out of file
/// descriptors, for one), instead of spinning on the same error.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The smallest header-size bound applied: a request line and the usual fields fit well inside.
pub const MIN_HEADER_BYTES: usize = 8 * 1024;

/// The bounds on a server's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// From the first byte of a request (from the connection's opening, for its first request)
    /// until its headers are complete; a client slower than this is disconnected.
    pub header_timeout: Duration,
    /// How long a connection may stay open with no request on it.
    pub idle_timeout: Duration,
    /// How long a request in progress may move no byte in either direction (a client that
    /// stopped reading its download) before the connection is closed; `None` leaves requests in
    /// progress to the handler's own deadline (a generation that thinks for a minute before its
    /// first byte is not stalled).
    pub stall_timeout: Option<Duration>,
    /// The most connections held at once (at least 1); more wait in the listen backlog.
    pub max_connections: usize,
    /// The most header fields a request may carry; more get 431.
    pub max_headers: usize,
    /// The most bytes a request line and headers may take (at least [`MIN_HEADER_BYTES`]);
    /// more get 431.
    pub max_header_bytes: usize,
}

/// Accepts connections while fewer than `limits.max_connections` are open, and serves each on its
/// own task with `handle`. `open` counts the connections held. `name` prefixes the log lines
/// (`mirror`, `serve`). Returns only if the listener fails for good.
pub async fn accept_loop<H, F>(
    listener: TcpListener,
    limits: ConnectionLimits,
    handle: H,
    open: Arc<AtomicUsize>,
    name: &'static str,
) -> io::Result<()>
where
    H: Fn(Request) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    loop {
        // A free slot first, then `accept`: beyond the cap, clients wait in the backlog.
        let slot = slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| io::Error::other("the connection slots were closed"))?;
        let stream = match listener.accept().await {
            Ok((stream, _peer)) => stream,
            Err(error) => {
                eprintln!("{name}: cannot accept a connection: {error}");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        let held = OpenConnection::new(slot, open.clone());
        tokio::spawn(serve_connection(stream, limits, handle.clone(), held, name));
    }
}

/// One accepted connection: holds its slot and counts itself open until dropped.
struct OpenConnection {
    _slot: OwnedSemaphorePermit,
    open: Arc<AtomicUsize>,
}

impl OpenConnection {
    fn new(slot: OwnedSemaphorePermit, open: Arc<AtomicUsize>) -> OpenConnection {
        open.fetch_add(1, Ordering::SeqCst);
        OpenConnection { _slot: slot, open }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Serves HTTP/1.1 on `stream` until the client closes it or the watchdog fires.
async fn serve_connection<H, F>(
    stream: TcpStream,
    limits: ConnectionLimits,
    handle: H,
    held: OpenConnection,
    name: &'static str,
) where
    H: Fn(Request) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response> + Send + 'static,
{
    let peer = stream.peer_addr().ok();
    let clock = Arc::new(ConnectionClock::new(limits));
    let io = TokioIo::new(ClockedStream {
        stream,
        clock: clock.clone(),
    });
    let service_clock = clock.clone();
    let service = service_fn(move |request: hyper::Request<Incoming>| {
        let handle = handle.clone();
        let in_flight = RequestInFlight::start(service_clock.clone());
        async move {
            let response = handle(request.map(Body::new)).await;
            Ok::<_, Infallible>(response.map(|body| {
                Body::new(InFlightBody {
                    body,
                    _in_flight: in_flight,
                })
            }))
        }
    });
    let connection = http1::Builder::new()
        .keep_alive(true)
        .max_headers(limits.max_headers.max(1))
        .max_header_size(limits.max_header_bytes.max(MIN_HEADER_BYTES))
        .serve_connection(io, service);
    tokio::select! {
        _ = connection => {}
        expiry = clock.expired() => {
            // Idle connections are closed silently: that is their normal end.
            if expiry != Expiry::Idle {
                let peer = peer.map(|peer| peer.to_string()).unwrap_or_default();
                eprintln!("{name}: closed the connection from {peer}: {}", expiry.describe(&clock.limits));
            }
        }
    }
    drop(held);
}

/// Why a connection's watchdog closed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expiry {
    /// A request's headers took longer than the header timeout.
    SlowHeaders,
    /// No request for the idle timeout.
    Idle,
    /// A request moved no byte for the idle timeout.
    Stalled,
}

impl Expiry {
    fn describe(self, limits: &ConnectionLimits) -> String {
        match self {
            Expiry::SlowHeaders => format!(
                "its request headers were not complete within {:?}",
                limits.header_timeout
            ),
            Expiry::Idle => format!("idle for {:?}", limits.idle_timeout),
            Expiry::Stalled => format!(
                "its request moved no data for {:?}",
                limits.stall_timeout.unwrap_or(limits.idle_timeout)
            ),
        }
    }
}

/// What a connection is doing, as far as its deadlines care.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ClockState {
    /// Requests whose headers were read and whose response body is not finished.
    in_flight: usize,
    /// When the connection last had no request (accepted, or its last response finished).
    idle_since: Instant,
    /// When the next request's head started (its first byte arrived, or the connection was
    /// accepted), until its headers are complete.
    head_started: Option<Instant>,
    /// When bytes last moved, either way.
    last_progress: Instant,
}

impl ClockState {
    /// A connection just accepted: its first request is due within the header timeout, as if
    /// its first byte had come (a client that connects and says nothing is no better than one
    /// that trickles; the idle timeout is for connections that have been used).
    fn new(now: Instant) -> ClockState {
        ClockState {
            in_flight: 0,
            idle_since: now,
            head_started: Some(now),
            last_progress: now,
        }
    }

    /// Bytes arrived; returns whether they start the head of a new request.
    fn bytes_read(&mut self, now: Instant) -> bool {
        self.last_progress = now;
        let starts_head = self.in_flight == 0 && self.head_started.is_none();
        if starts_head {
            self.head_started = Some(now);
        }
        starts_head
    }

    fn bytes_written(&mut self, now: Instant) {
        self.last_progress = now;
    }

    fn request_started(&mut self, now: Instant) {
        self.in_flight += 1;
        self.head_started = None;
        self.last_progress = now;
    }

    fn request_finished(&mut self, now: Instant) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if self.in_flight == 0 {
            self.idle_since = now;
        }
        self.last_progress = now;
    }

    /// The next deadline and what passing it means.
    /// `None` while a request is in progress and stalls are not bounded.
    fn deadline(&self, limits: &ConnectionLimits) -> Option<(Instant, Expiry)> {
        match self.head_started {
            Some(started) => Some((started + limits.header_timeout, Expiry::SlowHeaders)),
            None if self.in_flight == 0 => {
                Some((self.idle_since + limits.idle_timeout, Expiry::Idle))
            }
            None => limits
                .stall_timeout
                .map(|stall| (self.last_progress + stall, Expiry::Stalled)),
        }
    }
}

/// The deadlines of one connection, fed by its socket ([`ClockedStream`]) and its requests
/// ([`RequestInFlight`]).
#[derive(Debug)]
struct ConnectionClock {
    limits: ConnectionLimits,
    state: Mutex<ClockState>,
    /// Woken when the deadline may have moved earlier: a request's head started, or a request
    /// started or finished (which switches between the header, idle and stall deadlines).
    /// Bytes moving only ever push the deadline later.
    changed: Notify,
}

impl ConnectionClock {
    fn new(limits: ConnectionLimits) -> ConnectionClock {
        ConnectionClock {
            limits,
            state: Mutex::new(ClockState::new(Instant::now())),
            changed: Notify::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, ClockState> {
        // Every update is a few assignments that cannot panic half-way: a poisoned state is
        // still consistent.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn bytes_read(&self) {
        let starts_head = self.state().bytes_read(Instant::now());
        if starts_head {
            self.changed.notify_one();
        }
    }

    fn bytes_written(&self) {
        self.state().bytes_written(Instant::now());
    }

    fn request_started(&self) {
        self.state().request_started(Instant::now());
        self.changed.notify_one();
    }

    fn request_finished(&self) {
        self.state().request_finished(Instant::now());
        self.changed.notify_one();
    }

    /// Completes when the connection has passed a deadline.
    async fn expired(&self) -> Expiry {
        loop {
            let next = self.state().deadline(&self.limits);
            let Some((deadline, expiry)) = next else {
                self.changed.notified().await;
                continue;
            };
            if Instant::now() >= deadline {
                return expiry;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {}
                _ = self.changed.notified() => {}
            }
        }
    }
}

/// Marks a request in progress on its connection from its complete headers until its response
/// body is finished or dropped.
struct RequestInFlight {
    clock: Arc<ConnectionClock>,
}

impl RequestInFlight {
    fn start(clock: Arc<ConnectionClock>) -> RequestInFlight {
        clock.request_started();
        RequestInFlight { clock }
    }
}

impl Drop for RequestInFlight {
    fn drop(&mut self) {
        self.clock.request_finished();
    }
}

/// A response body that keeps its request marked in flight while it is sent.
struct InFlightBody {
    body: Body,
    _in_flight: RequestInFlight,
}

impl http_body::Body for InFlightBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The connection's socket, telling its clock whenever bytes move.
struct ClockedStream {
    stream: TcpStream,
    clock: Arc<ConnectionClock>,
}

impl AsyncRead for ClockedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.clock.bytes_read();
        }
        polled
    }
}

impl AsyncWrite for ClockedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(written)) if written > 0) {
            this.clock.bytes_written();
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(written)) if written > 0) {
            this.clock.bytes_written();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: Duration = Duration::from_secs(10);
    const IDLE: Duration = Duration::from_secs(60);

    fn limits() -> ConnectionLimits {
        ConnectionLimits {
            header_timeout: HEADER,
            idle_timeout: IDLE,
            stall_timeout: Some(IDLE),
            max_connections: 8,
            max_headers: 64,
            max_header_bytes: MIN_HEADER_BYTES,
        }
    }

    #[test]
    fn deadlines_follow_the_connection_state() {
        let limits = limits();
        let opened = Instant::now();
        let at = |seconds: u64| opened + Duration::from_secs(seconds);
        let mut state = ClockState::new(opened);
        // The first request is due within the header timeout of the connection's opening.
        assert_eq!(
            state.deadline(&limits),
            Some((opened + HEADER, Expiry::SlowHeaders))
        );
        // Its bytes (a slowloris trickle) do not extend it.
        assert!(!state.bytes_read(at(5)));
        assert_eq!(
            state.deadline(&limits),
            Some((opened + HEADER, Expiry::SlowHeaders))
        );
        // Complete headers: the request is bounded by its progress.
        state.request_started(at(6));
        state.bytes_written(at(7));
        assert_eq!(
            state.deadline(&limits),
            Some((at(7) + IDLE, Expiry::Stalled))
        );
        // Bytes read while a request is in flight (its body) are not the next request's head.
        assert!(!state.bytes_read(at(8)));
        assert_eq!(
            state.deadline(&limits),
            Some((at(8) + IDLE, Expiry::Stalled))
        );
        // The response is finished: idle, until the next request's first byte starts the
        // header clock, which is shorter.
        state.request_finished(at(20));
        assert_eq!(state.deadline(&limits), Some((at(20) + IDLE, Expiry::Idle)));
        assert!(state.bytes_read(at(30)));
        assert_eq!(
            state.deadline(&limits),
            Some((at(30) + HEADER, Expiry::SlowHeaders))
        );
        assert!(!state.bytes_read(at(35)));
        assert_eq!(
            state.deadline(&limits),
            Some((at(30) + HEADER, Expiry::SlowHeaders))
        );
    }

    #[test]
    fn without_a_stall_bound_a_request_in_progress_has_no_deadline() {
        let limits = ConnectionLimits {
            stall_timeout: None,
            ..limits()
        };
        let opened = Instant::now();
        let mut state = ClockState::new(opened);
        state.request_started(opened);
        assert_eq!(state.deadline(&limits), None);
        state.request_finished(opened + Duration::from_secs(600));
        assert_eq!(
            state.deadline(&limits),
            Some((opened + Duration::from_secs(600) + IDLE, Expiry::Idle))
        );
    }

    #[tokio::test]
    async fn the_watchdog_wakes_for_an_earlier_deadline() {
        // After a first request, an idle deadline an hour away; then the next request's head
        // starts: the watchdog, asleep until the idle deadline, must wake for the 500 ms header
        // deadline.
        let clock = Arc::new(ConnectionClock::new(ConnectionLimits {
            header_timeout: Duration::from_millis(500),
            idle_timeout: Duration::from_secs(3600),
            ..limits()
        }));
        drop(RequestInFlight::start(clock.clone()));
        let watchdog = tokio::spawn({
            let clock = clock.clone();
            async move { clock.expired().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        clock.bytes_read();
        let expiry = tokio::time::timeout(Duration::from_secs(60), watchdog)
            .await
            .expect("the watchdog fired well before the idle deadline")
            .unwrap();
        assert_eq!(expiry, Expiry::SlowHeaders);
    }

    #[tokio::test]
    async fn the_watchdog_wakes_when_a_request_ends() {
        // A head started (header deadline an hour away), then the request ran and finished:
        // the watchdog must move to the 50 ms idle deadline.
        let clock = Arc::new(ConnectionClock::new(ConnectionLimits {
            header_timeout: Duration::from_secs(3600),
            idle_timeout: Duration::from_millis(50),
            ..limits()
        }));
        clock.bytes_read();
        let watchdog = tokio::spawn({
            let clock = clock.clone();
            async move { clock.expired().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(RequestInFlight::start(clock.clone()));
        let expiry = tokio::time::timeout(Duration::from_secs(60), watchdog)
            .await
            .expect("the watchdog fired well before the header deadline")
            .unwrap();
        assert_eq!(expiry, Expiry::Idle);
    }
}
