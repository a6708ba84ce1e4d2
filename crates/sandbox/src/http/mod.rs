//! Host-side HTTP for tools: the `wasi:http/outgoing-handler` of a call sends a request only to
//! a granted `host:port`, over a connection this module opens itself to an address it checked.
//!
//! For each request the guest hands to the handler:
//!
//! 1. at most [`MAX_REQUESTS_PER_CALL`] requests per call, refused or not;
//! 2. the scheme is `http` or `https`, the authority has no userinfo, and its host (ASCII
//!    case-insensitive) and port (80 or 443 by default) are one of [`crate::Grants::net`];
//!    anything else is `HttpRequestDenied`;
//! 3. the host is resolved here, once, and every address that is not public
//!    ([`address::classify`]) is dropped: loopback, private and link-local addresses only when
//!    the sandbox allows the private network ([`crate::Sandbox::with_private_network_allowed`]),
//!    unusable ones never. None left: `DestinationIpProhibited`;
//! 4. the connection goes to one of the checked addresses (no second lookup, so a name that
//!    resolves differently the next time cannot redirect it), with TLS for `https` (rustls,
//!    webpki roots, the granted host name as SNI and for the certificate);
//! 5. connect, first-byte and between-bytes timeouts, each ending by the call's deadline; the
//!    response head is bounded by hyper, the bodies both ways by the call's
//!    [`crate::Limits::http_bytes`].
//!
//! Redirects are never followed here: a guest that follows a `3xx` sends a new request, checked
//! like the first. Plain `wasi:sockets` stay refused (see `wasi.rs`); this is the only way out.

mod address;
mod body;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::{Request, Response, Uri};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::p2::bindings::http::types::ErrorCode;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use crate::{Grants, Limits};
use address::{AddressClass, classify};
use body::{ByteBudget, RequestBody, ResponseBody};

/// The most outgoing requests one call may make (refused ones included).
pub(crate) const MAX_REQUESTS_PER_CALL: usize = 32;
/// The most bytes of header fields a guest may build (wasi-http's own estimate of their size).
pub(crate) const MAX_FIELDS_BYTES: usize = 64 << 10;
/// The most bytes of a response head (status line and headers).
const MAX_RESPONSE_HEAD_BYTES: usize = 64 << 10;
/// The most response headers.
const MAX_RESPONSE_HEADERS: usize = 100;
/// The most resolved addresses tried for one request.
const MAX_ADDRESSES_TRIED: usize = 8;
/// Longest wait for name resolution, the TCP connection and the TLS and HTTP handshakes, for
/// the response head, and between two frames of the body; the guest may ask for less (its
/// request options), and the call's deadline ends each wait sooner.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The host-side network setting of a sandbox: never part of a grant, never set by a manifest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct NetworkPolicy {
    /// Whether granted hosts may resolve to loopback, private and link-local addresses.
    pub(crate) private_network_allowed: bool,
}

impl NetworkPolicy {
    fn permits(self, ip: IpAddr) -> bool {
        match classify(ip) {
            AddressClass::Public => true,
            AddressClass::Private => self.private_network_allowed,
            AddressClass::Unusable => false,
        }
    }
}

/// The outgoing HTTP of one call: the hooks wasi-http calls to send each request.
pub(crate) struct OutgoingHttp {
    /// The granted `(host, port)` pairs, hosts lowercased and without IPv6 brackets.
    allowlist: Vec<(String, u16)>,
    policy: NetworkPolicy,
    requests_left: usize,
    budget: Arc<ByteBudget>,
    deadline: Instant,
}

impl OutgoingHttp {
    /// The HTTP of a call under `grants` and `limits` that ends at `deadline`.
    pub(crate) fn new(
        grants: &Grants,
        limits: &Limits,
        policy: NetworkPolicy,
        deadline: Instant,
    ) -> OutgoingHttp {
        let allowlist = grants
            .net
            .iter()
            .map(|(host, port)| (unbracketed(host).to_ascii_lowercase(), *port))
            .collect();
        OutgoingHttp {
            allowlist,
            policy,
            requests_left: MAX_REQUESTS_PER_CALL,
            budget: ByteBudget::new(limits.http_bytes),
            deadline,
        }
    }

    /// Where `request` may go, or why it may not.
    fn destination(&mut self, request: &Request<WasiBody>) -> Result<Destination, Error> {
        if self.requests_left == 0 {
            return Err(Error::ConnectionLimitReached);
        }
        self.requests_left -= 1;
        let uri = request.uri();
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(Error::HttpRequestDenied),
        };
        let authority = uri.authority().ok_or(Error::HttpRequestUriInvalid)?;
        if authority.as_str().contains('@') {
            return Err(Error::HttpRequestDenied);
        }
        let host = unbracketed(authority.host());
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let granted = self.allowlist.iter().any(|(granted, granted_port)| {
            *granted_port == port && granted.eq_ignore_ascii_case(host)
        });
        if !granted {
            return Err(Error::HttpRequestDenied);
        }
        Ok(Destination {
            host: host.to_ascii_lowercase(),
            port,
            tls,
        })
    }
}

/// `::1` for `[::1]`; any other host as it is.
fn unbracketed(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
        .unwrap_or(host)
}

/// A granted destination.
struct Destination {
    host: String,
    port: u16,
    tls: bool,
}

/// What `send_request` returns: the response and the future that drives its connection.
type Sent = (
    Response<WasiBody>,
    Box<dyn Future<Output = Result<(), Error>> + Send>,
);

impl WasiHttpHooks for OutgoingHttp {
    fn send_request(
        &mut self,
        request: Request<WasiBody>,
        options: Option<RequestOptions>,
        _request_outcome: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<dyn Future<Output = Result<Sent, Error>> + Send> {
        let destination = self.destination(&request);
        let (policy, budget) = (self.policy, self.budget.clone());
        let timeouts = Timeouts::new(options, self.deadline);
        Box::new(async move { send(destination?, request, policy, budget, timeouts).await })
    }

    fn p2_error_from_connect(&mut self, _error: &std::io::Error) -> ErrorCode {
        ErrorCode::ConnectionRefused
    }

    fn p2_error_from_tls(&mut self, error: &std::io::Error) -> ErrorCode {
        let certificate = error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .is_some_and(|tls| matches!(tls, rustls::Error::InvalidCertificate(_)));
        if certificate {
            ErrorCode::TlsCertificateError
        } else {
            ErrorCode::TlsProtocolError
        }
    }

    fn p2_error_from_hyper(&mut self, error: &hyper::Error) -> ErrorCode {
        // A request body past the budget fails hyper's send with our error as the cause.
        let cause =
            std::error::Error::source(error).and_then(|cause| cause.downcast_ref::<Error>());
        match cause {
            Some(Error::HttpRequestBodySize(limit)) => ErrorCode::HttpRequestBodySize(*limit),
            _ => ErrorCode::HttpProtocolError,
        }
    }
}

/// When each stage of one request must be done.
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    connected_by: Instant,
    first_byte_by: Instant,
    between_bytes: Duration,
    deadline: Instant,
}

impl Timeouts {
    fn new(options: Option<RequestOptions>, deadline: Instant) -> Timeouts {
        let now = Instant::now();
        let at_most = |asked: Option<Duration>| {
            asked.map_or(DEFAULT_TIMEOUT, |asked| asked.min(DEFAULT_TIMEOUT))
        };
        let by = |asked: Option<Duration>| (now + at_most(asked)).min(deadline);
        let options = options.unwrap_or_default();
        Timeouts {
            connected_by: by(options.connect_timeout),
            first_byte_by: by(options.first_byte_timeout),
            between_bytes: at_most(options.between_bytes_timeout),
            deadline,
        }
    }
}

/// A byte stream to the server: TCP, or TLS over TCP.
trait ServerStream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> ServerStream for T {}

/// Connects to a checked address of `destination` and sends `request` over HTTP/1.1.
async fn send(
    destination: Destination,
    request: Request<WasiBody>,
    policy: NetworkPolicy,
    budget: Arc<ByteBudget>,
    timeouts: Timeouts,
) -> Result<Sent, Error> {
    let addresses = resolve_checked(&destination, policy, timeouts.connected_by).await?;
    let tcp = connect_first(&addresses, timeouts.connected_by).await?;
    let stream: Box<dyn ServerStream> = if destination.tls {
        Box::new(tls_handshake(tcp, &destination.host, timeouts.connected_by).await?)
    } else {
        Box::new(tcp)
    };
    let handshake = hyper::client::conn::http1::Builder::new()
        .max_buf_size(MAX_RESPONSE_HEAD_BYTES)
        .max_headers(MAX_RESPONSE_HEADERS)
        .handshake(TokioIo::new(stream));
    let (mut sender, connection) = timeout_at(timeouts.connected_by, handshake)
        .await
        .map_err(|_| Error::ConnectionTimeout)??;
    // The connection is driven by its own task; dropping the handle (the guest dropped the
    // response, or the call ended) aborts it.
    let connection = wasmtime_wasi::runtime::spawn(connection);
    let (mut parts, body) = request.into_parts();
    parts.uri = origin_form(&parts.uri)?;
    let request = Request::from_parts(parts, RequestBody::new(body, budget.clone()));
    let response = timeout_at(timeouts.first_byte_by, sender.send_request(request))
        .await
        .map_err(|_| Error::ConnectionReadTimeout)??;
    let response = response.map(|incoming| {
        ResponseBody::new(incoming, budget, timeouts.between_bytes, timeouts.deadline)
            .boxed_unsync()
    });
    let driven = async move { connection.await.map_err(Error::from) };
    Ok((response, Box::new(driven)))
}

/// The request target sent to the server: the path and query only (the absolute form is for
/// proxies).
fn origin_form(uri: &Uri) -> Result<Uri, Error> {
    let path = uri.path_and_query().map_or("/", |path| path.as_str());
    Uri::builder()
        .path_and_query(path)
        .build()
        .map_err(|_| Error::HttpRequestUriInvalid)
}

/// The addresses of `destination` the policy permits (an IP literal is its own address), or
/// `DestinationIpProhibited` when none is.
async fn resolve_checked(
    destination: &Destination,
    policy: NetworkPolicy,
    by: Instant,
) -> Result<Vec<SocketAddr>, Error> {
    let resolved: Vec<SocketAddr> = match destination.host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, destination.port)],
        Err(_) => {
            let lookup = tokio::net::lookup_host((destination.host.as_str(), destination.port));
            timeout_at(by, lookup)
                .await
                .map_err(|_| Error::DnsTimeout)?
                .map_err(|error| Error::DnsError {
                    rcode: Some(error.to_string()),
                    info_code: None,
                })?
                .collect()
        }
    };
    let permitted: Vec<SocketAddr> = resolved
        .into_iter()
        .filter(|address| policy.permits(address.ip()))
        .take(MAX_ADDRESSES_TRIED)
        .collect();
    if permitted.is_empty() {
        return Err(Error::DestinationIpProhibited);
    }
    Ok(permitted)
}

/// A TCP connection to the first of `addresses` that accepts one.
async fn connect_first(addresses: &[SocketAddr], by: Instant) -> Result<TcpStream, Error> {
    let mut last_error = Error::ConnectionRefused;
    for address in addresses {
        match timeout_at(by, TcpStream::connect(address)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(error)) => last_error = Error::Connect(error),
            Err(_) => return Err(Error::ConnectionTimeout),
        }
    }
    Err(last_error)
}

/// TLS over `tcp`, the server's certificate verified against the webpki roots for `host`
/// (which is also the SNI).
async fn tls_handshake(
    tcp: TcpStream,
    host: &str,
    by: Instant,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, Error> {
    let config = tls_config().ok_or(Error::ConfigurationError)?;
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|_| Error::TlsProtocolError)?;
    let connector = tokio_rustls::TlsConnector::from(config);
    timeout_at(by, connector.connect(name, tcp))
        .await
        .map_err(|_| Error::ConnectionTimeout)?
        .map_err(Error::Tls)
}

/// The TLS client configuration, built once: ring, the safe default protocol versions, the
/// webpki roots, no client certificate.
fn tls_config() -> Option<Arc<rustls::ClientConfig>> {
    static CONFIG: OnceLock<Option<Arc<rustls::ClientConfig>>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .ok()?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Some(Arc::new(config))
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outgoing(net: &[(&str, u16)]) -> OutgoingHttp {
        let grants = Grants {
            net: net
                .iter()
                .map(|(host, port)| ((*host).to_owned(), *port))
                .collect(),
            ..Grants::default()
        };
        OutgoingHttp::new(
            &grants,
            &Limits::DEFAULT,
            NetworkPolicy::default(),
            Instant::now(),
        )
    }

    fn request(uri: &str) -> Request<WasiBody> {
        let body = http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed_unsync();
        Request::get(uri).body(body).unwrap()
    }

    fn allowed(outgoing: &mut OutgoingHttp, uri: &str) -> bool {
        outgoing.destination(&request(uri)).is_ok()
    }

    #[test]
    fn only_granted_host_and_port_pass() {
        let mut http = outgoing(&[
            ("api.example.com", 443),
            ("Data.Example.org", 8080),
            ("::1", 80),
        ]);
        assert!(allowed(&mut http, "https://api.example.com/v1"));
        assert!(allowed(&mut http, "https://API.example.COM:443/"));
        assert!(allowed(&mut http, "http://data.example.org:8080/x?y"));
        assert!(allowed(&mut http, "http://[::1]/"));
        assert!(
            !allowed(&mut http, "http://api.example.com/"),
            "port 80 not granted"
        );
        assert!(!allowed(&mut http, "https://api.example.com:8443/"));
        assert!(!allowed(&mut http, "https://example.com/"));
        assert!(!allowed(&mut http, "https://api.example.com.evil.net/"));
        assert!(
            !allowed(&mut http, "https://evil.net@api.example.com/"),
            "userinfo"
        );
        assert!(!allowed(&mut http, "ftp://api.example.com:443/"));
    }

    #[test]
    fn requests_are_counted_refused_or_not() {
        let mut http = outgoing(&[("example.com", 80)]);
        for _ in 0..MAX_REQUESTS_PER_CALL / 2 {
            assert!(!allowed(&mut http, "http://other.com/"));
            assert!(allowed(&mut http, "http://example.com/"));
        }
        assert!(matches!(
            http.destination(&request("http://example.com/")),
            Err(Error::ConnectionLimitReached)
        ));
    }

    #[test]
    fn the_policy_permits_private_addresses_only_when_allowed() {
        let loopback: IpAddr = "127.0.0.1".parse().unwrap();
        let public: IpAddr = "1.1.1.1".parse().unwrap();
        let unspecified: IpAddr = "0.0.0.0".parse().unwrap();
        let closed = NetworkPolicy::default();
        let open = NetworkPolicy {
            private_network_allowed: true,
        };
        assert!(closed.permits(public) && open.permits(public));
        assert!(!closed.permits(loopback) && open.permits(loopback));
        assert!(!closed.permits(unspecified) && !open.permits(unspecified));
    }

    #[test]
    fn the_tls_configuration_builds() {
        assert!(tls_config().is_some());
    }
}
