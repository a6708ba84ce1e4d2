//! T2: a tool exfiltrates over the network. Plain sockets are refused whatever the grants (every
//! connection attempt fails inside the guest, name lookup is denied); the only way out is
//! wasi:http, whose requests the host sends only to a granted `host:port`, after resolving the
//! name itself and dropping loopback, private and link-local addresses. A loopback listener
//! started by the test sees zero connections, with or without grants.
//!
//! A server a test can reach is necessarily on this machine, so the tests that show a granted
//! request going through use a sandbox that allows the private network (a host-side setting,
//! never a grant), and show that everything else is still refused there.

use std::io::{ErrorKind, Read};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use safeformers_sandbox::{CompiledTool, Grants, Limits, Sandbox, SandboxError};
use safeformers_testkit::scripted_http::{CannedResponse, ScriptedServer};

use crate::{
    assert_healthy, call, json, private_network_sandbox, quick_limits, sandbox, tool, tool_bytes,
};

/// Connections waiting on `listener` (which is non-blocking). A connect that succeeded in the
/// guest has completed its handshake before the guest's call returned, so it is queued here.
fn accepted(listener: &TcpListener) -> usize {
    let mut count = 0;
    loop {
        match listener.accept() {
            Ok(_) => count += 1,
            Err(error) if error.kind() == ErrorKind::WouldBlock => return count,
            Err(error) => panic!("accept: {error}"),
        }
    }
}

fn net(grants: &[(&str, u16)]) -> Grants {
    Grants {
        net: grants
            .iter()
            .map(|(host, port)| ((*host).to_owned(), *port))
            .collect(),
        ..Grants::default()
    }
}

/// The http_get tool compiled by `sandbox`.
fn http_get(sandbox: &Arc<Sandbox>) -> CompiledTool {
    sandbox
        .compile(&tool_bytes("http_get"))
        .unwrap_or_else(|error| panic!("http_get.wasm compiles: {error}"))
}

/// http_get's answer for `arguments`: its result text, `Ok` for a response.
fn fetch(
    sandbox: &Arc<Sandbox>,
    grants: &Grants,
    limits: &Limits,
    arguments: &str,
) -> Result<String, String> {
    call(sandbox, &http_get(sandbox), grants, limits, arguments)
        .unwrap_or_else(|error| panic!("{arguments}: {error}"))
        .result
}

fn follow(url: &str) -> String {
    format!("{{\"url\": \"{url}\", \"follow_redirects\": true}}")
}

#[test]
fn no_connection_reaches_a_loopback_listener() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let connect = tool("connect");
    let granted = net(&[("127.0.0.1", port), ("localhost", port), ("::1", port)]);
    for grants in [Grants::default(), granted] {
        for addr in [
            format!("127.0.0.1:{port}"),
            format!("localhost:{port}"),
            format!("[::1]:{port}"),
        ] {
            let outcome = call(
                &sandbox(),
                &connect,
                &grants,
                &quick_limits(),
                &json("addr", &addr),
            );
            let output = outcome.unwrap_or_else(|error| panic!("{addr}: {error}"));
            assert!(output.result.is_err(), "{addr}: {:?}", output.result);
            let url = format!("http://{addr}/");
            let fetched = fetch(&sandbox(), &grants, &quick_limits(), &json("url", &url));
            assert!(fetched.is_err(), "{url}: {fetched:?}");
        }
    }
    assert_eq!(accepted(&listener), 0, "the listener saw a connection");
}

#[test]
fn name_lookup_is_denied() {
    // `localhost` resolves on every host; the guest must not even learn that.
    let outcome = call(
        &sandbox(),
        &tool("connect"),
        &Grants::default(),
        &quick_limits(),
        &json("addr", "localhost:9"),
    );
    let result = outcome.unwrap().result;
    let error = result.expect_err("the connection was made");
    assert!(
        error.starts_with("lookup localhost:9"),
        "the name was resolved: {error}"
    );
}

#[test]
fn a_literal_address_is_refused_at_connect() {
    // No lookup needed: the refusal comes from the socket policy itself.
    let outcome = call(
        &sandbox(),
        &tool("connect"),
        &Grants::default(),
        &quick_limits(),
        &json("addr", "127.0.0.1:9"),
    );
    let error = outcome
        .unwrap()
        .result
        .expect_err("the connection was made");
    assert!(error.starts_with("connect 127.0.0.1:9"), "{error}");
    // Refused by the sandbox (WASI access-denied), not by the host's closed port.
    assert!(error.contains("Permission denied"), "{error}");
}

#[test]
fn sockets_stay_refused_when_the_network_is_granted_and_private_allowed() {
    let server = ScriptedServer::start(vec![CannedResponse::json("{}")]);
    let addr = format!("127.0.0.1:{}", server.port());
    let outcome = call(
        &private_network_sandbox(),
        &private_network_sandbox()
            .compile(&tool_bytes("connect"))
            .unwrap(),
        &net(&[("127.0.0.1", server.port())]),
        &quick_limits(),
        &json("addr", &addr),
    );
    let error = outcome.unwrap().result.expect_err("the socket connected");
    assert!(error.contains("Permission denied"), "{error}");
    assert_eq!(server.connections(), 0);
}

#[test]
fn without_a_grant_an_http_request_is_refused_in_the_guest() {
    let result = fetch(
        &sandbox(),
        &Grants::default(),
        &quick_limits(),
        &json("url", "http://example.invalid/"),
    );
    let error = result.expect_err("the request went out");
    assert!(error.contains("HttpRequestDenied"), "{error}");
    assert_healthy();
}

#[test]
fn a_granted_loopback_host_is_refused_after_name_resolution() {
    // The default sandbox: loopback is no destination, granted or not, by name or by address.
    let server = ScriptedServer::start(vec![CannedResponse::json("{}")]);
    let port = server.port();
    let grants = net(&[("localhost", port), ("127.0.0.1", port), ("::1", port)]);
    for url in [
        format!("http://localhost:{port}/"),
        format!("http://127.0.0.1:{port}/"),
        format!("http://[::1]:{port}/"),
    ] {
        let result = fetch(&sandbox(), &grants, &quick_limits(), &json("url", &url));
        let error = result.expect_err("loopback was reached");
        assert!(error.contains("DestinationIpProhibited"), "{url}: {error}");
    }
    assert_eq!(server.connections(), 0, "the server saw a connection");
}

#[test]
fn a_granted_host_and_port_is_reached_and_its_body_returned() {
    let server = ScriptedServer::start(vec![CannedResponse::json(r#"{"answer": 42}"#)]);
    let port = server.port();
    let url = format!("http://127.0.0.1:{port}/data?x=1");
    let result = fetch(
        &private_network_sandbox(),
        &net(&[("127.0.0.1", port)]),
        &quick_limits(),
        &json("url", &url),
    );
    let answer = result.expect("the granted request went through");
    assert!(answer.starts_with("{\"status\": 200,"), "{answer}");
    assert!(answer.contains(r#"{\"answer\": 42}"#), "{answer}");
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].path, "/data?x=1");
    assert_eq!(
        requests[0].header("host"),
        Some(format!("127.0.0.1:{port}").as_str())
    );
}

#[test]
fn the_same_host_on_another_port_and_another_host_are_refused() {
    let granted = ScriptedServer::start(vec![CannedResponse::json("{}")]);
    let other = ScriptedServer::start(vec![CannedResponse::json("{}")]);
    let grants = net(&[("127.0.0.1", granted.port())]);
    for url in [
        format!("http://127.0.0.1:{}/", other.port()),
        format!("http://localhost:{}/", granted.port()),
    ] {
        let result = fetch(
            &private_network_sandbox(),
            &grants,
            &quick_limits(),
            &json("url", &url),
        );
        let error = result.expect_err("a request not granted went out");
        assert!(error.contains("HttpRequestDenied"), "{url}: {error}");
    }
    assert_eq!(other.connections(), 0, "the other port saw a connection");
    assert_eq!(
        granted.connections(),
        0,
        "the granted port saw a connection"
    );
}

#[test]
fn a_redirect_to_a_port_or_host_not_granted_is_refused_when_followed() {
    let other = ScriptedServer::start(vec![CannedResponse::json("{}")]);
    let elsewhere = format!("http://127.0.0.1:{}/stolen", other.port());
    let server = ScriptedServer::start(vec![
        CannedResponse::redirect(302, "/next"),
        CannedResponse::json(r#""followed""#),
        CannedResponse::redirect(302, &elsewhere),
        CannedResponse::redirect(307, "http://localhost/stolen"),
    ]);
    let port = server.port();
    let grants = net(&[("127.0.0.1", port)]);
    let sandbox = private_network_sandbox();
    let start = format!("http://127.0.0.1:{port}/start");
    // Within the grant, the guest follows redirects: the refusals below are the allowlist's.
    let answer = fetch(&sandbox, &grants, &quick_limits(), &follow(&start)).unwrap();
    assert!(answer.contains("followed"), "{answer}");
    let error = fetch(&sandbox, &grants, &quick_limits(), &follow(&start)).unwrap_err();
    assert!(
        error.starts_with(&format!("request 2: GET {elsewhere}: "))
            && error.contains("HttpRequestDenied"),
        "{error}"
    );
    let error = fetch(&sandbox, &grants, &quick_limits(), &follow(&start)).unwrap_err();
    assert!(
        error.starts_with("request 2: GET http://localhost/stolen: ")
            && error.contains("HttpRequestDenied"),
        "{error}"
    );
    assert_eq!(server.requests().len(), 4);
    assert_eq!(
        other.connections(),
        0,
        "the redirect target saw a connection"
    );
}

#[test]
fn a_response_body_past_the_http_byte_limit_is_cut() {
    let body = "x".repeat(4096);
    let server = ScriptedServer::start(vec![
        CannedResponse::raw(200, &[], body.clone()),
        CannedResponse::raw(200, &[], body),
    ]);
    let port = server.port();
    let url = json("url", &format!("http://127.0.0.1:{port}/"));
    let grants = net(&[("127.0.0.1", port)]);
    let enough = Limits {
        http_bytes: 4096,
        ..quick_limits()
    };
    let answer = fetch(&private_network_sandbox(), &grants, &enough, &url).unwrap();
    assert!(answer.contains(&"x".repeat(4096)), "{answer}");
    let too_little = Limits {
        http_bytes: 1024,
        ..quick_limits()
    };
    let error = fetch(&private_network_sandbox(), &grants, &too_little, &url).unwrap_err();
    // The body stream's error, as wasi:io reports it to the guest.
    assert!(
        error.contains("response body size exceeds limit: 1024 bytes"),
        "{error}"
    );
}

#[test]
fn a_request_body_past_the_http_byte_limit_is_refused() {
    // The server never answers: the request can only end by the body limit (or the deadline).
    let server = ScriptedServer::start(vec![CannedResponse::stall()]);
    let port = server.port();
    let arguments = format!(
        "{{\"url\": \"http://127.0.0.1:{port}/upload\", \"body\": \"{}\"}}",
        "y".repeat(8192)
    );
    let limits = Limits {
        http_bytes: 1024,
        ..quick_limits()
    };
    let error = fetch(
        &private_network_sandbox(),
        &net(&[("127.0.0.1", port)]),
        &limits,
        &arguments,
    )
    .unwrap_err();
    assert!(error.contains("HttpRequestBodySize"), "{error}");
}

#[test]
fn a_call_makes_at_most_32_requests() {
    let server = ScriptedServer::start(Vec::new());
    let port = server.port();
    let arguments = format!("{{\"url\": \"http://127.0.0.1:{port}/\", \"repeat\": \"40\"}}");
    let error = fetch(
        &private_network_sandbox(),
        &net(&[("127.0.0.1", port)]),
        &quick_limits(),
        &arguments,
    )
    .unwrap_err();
    assert!(
        error.starts_with("request 33: ") && error.contains("ConnectionLimitReached"),
        "{error}"
    );
    assert_eq!(server.connections(), 32);
}

#[test]
fn https_is_tls_with_the_granted_host_name() {
    // A plain TCP server that records what the client sends first: a TLS ClientHello naming
    // the granted host (SNI), never a cleartext request.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let first_bytes = std::thread::spawn(move || {
        let started = Instant::now();
        let mut stream = loop {
            match listener.accept() {
                Ok((stream, _)) => break stream,
                Err(_) if started.elapsed() < Duration::from_secs(10) => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(error) => panic!("no connection: {error}"),
            }
        };
        stream.set_nonblocking(false).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut hello = vec![0; 4096];
        let read = stream.read(&mut hello).unwrap();
        hello.truncate(read);
        hello
    });
    let url = format!("https://localhost:{port}/secret");
    let result = fetch(
        &private_network_sandbox(),
        &net(&[("localhost", port)]),
        &quick_limits(),
        &json("url", &url),
    );
    assert!(result.is_err(), "{result:?}");
    let hello = first_bytes.join().unwrap();
    assert_eq!(hello.first(), Some(&0x16), "not a TLS handshake: {hello:?}");
    let sni = hello
        .windows(b"localhost".len())
        .any(|window| window == b"localhost");
    assert!(sni, "the ClientHello does not name the host");
    assert!(!hello.windows(6).any(|window| window == b"secret"));
}

#[test]
fn a_tool_waiting_for_a_response_is_stopped_at_the_deadline() {
    // The request's own timeouts end at the call's deadline, which also cuts the call: either
    // way the call ends then, with the guest told `ConnectionReadTimeout` or the call stopped.
    let server = ScriptedServer::start(vec![CannedResponse::stall()]);
    let port = server.port();
    let wall = Duration::from_millis(300);
    let limits = Limits {
        wall,
        ..Limits::DEFAULT
    };
    let sandbox = private_network_sandbox();
    let tool = http_get(&sandbox);
    let url = json("url", &format!("http://127.0.0.1:{port}/"));
    let started = Instant::now();
    let outcome = call(&sandbox, &tool, &net(&[("127.0.0.1", port)]), &limits, &url);
    let elapsed = started.elapsed();
    let stopped = match &outcome {
        Err(SandboxError::Deadline { .. }) => true,
        Ok(output) => output
            .result
            .as_ref()
            .is_err_and(|error| error.contains("ConnectionReadTimeout")),
        Err(_) => false,
    };
    assert!(stopped, "{outcome:?}");
    // Deadline + scheduling slack, under the caller's last-resort watchdog (wall + 2 s).
    assert!(
        elapsed >= wall && elapsed < Duration::from_secs(2),
        "{elapsed:?}"
    );
    assert_eq!(server.requests().len(), 1, "the request was sent");
}
