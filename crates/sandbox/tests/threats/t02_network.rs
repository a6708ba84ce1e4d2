//! T2: a tool exfiltrates over the network. Every connection attempt fails inside the guest and
//! a loopback listener started by the test sees zero connections, with or without a network
//! grant (network grants are recorded but not honoured in this version); name lookup is denied;
//! a tool importing `wasi:http` does not compile.

use std::io::ErrorKind;
use std::net::TcpListener;

use safeformers_sandbox::{Grants, SandboxError};

use crate::{call, json, quick_limits, sandbox, tool, tool_bytes};

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

#[test]
fn no_connection_reaches_a_loopback_listener() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let connect = tool("connect");
    let granted = Grants {
        net: vec![
            ("127.0.0.1".to_owned(), port),
            ("localhost".to_owned(), port),
        ],
        ..Grants::default()
    };
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
fn a_tool_importing_http_is_refused_at_compile_time() {
    match sandbox().compile(&tool_bytes("http_get")) {
        Err(SandboxError::WorldMismatch(reason)) => {
            assert!(reason.contains("wasi:http/outgoing-handler"), "{reason}");
            assert!(
                reason.contains("network access is not available"),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }
}
