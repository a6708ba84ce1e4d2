//! A wasi:http 0.2 client (`wasi:http/outgoing-handler`), for the sandbox's network tests.
//!
//! Arguments: `{"url", "follow_redirects"?: bool, "body"?: string, "repeat"?: "N"}`. Sends a GET
//! (a POST of `body` when given) to `url`; with `follow_redirects`, follows up to 5 redirects
//! (absolute or `/`-relative `Location`s) by sending new requests; with `repeat`, sends the
//! whole thing N times. Answers `{"status": S, "body": "..."}` for the last response, or
//! `err("request I: METHOD URL: ERROR")` for the first request that failed, ERROR being the
//! wasi:http error code (such as `ErrorCode::HttpRequestDenied`).

use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, IncomingBody, IncomingResponse, Method, OutgoingBody, OutgoingRequest,
    Scheme,
};
use wasip2::io::streams::StreamError;

wit_bindgen::generate!({ path: "../../wit/tool.wit", world: "tool" });

struct Tool;
export!(Tool);

const MAX_REDIRECTS: usize = 5;

impl Guest for Tool {
    fn call(arguments: String) -> Result<String, String> {
        let url = tool_args::string_field(&arguments, "url").ok_or("no url")?;
        let follow = tool_args::bool_field(&arguments, "follow_redirects").unwrap_or(false);
        let body = tool_args::string_field(&arguments, "body");
        let repeat: usize = tool_args::string_field(&arguments, "repeat")
            .map_or(Ok(1), |n| n.parse())
            .map_err(|_| "repeat is not a number")?;
        let mut answer = String::new();
        let mut sent = 0;
        for _ in 0..repeat {
            let mut target = url.clone();
            for _ in 0..=MAX_REDIRECTS {
                sent += 1;
                let method = if body.is_some() { "POST" } else { "GET" };
                let (status, location, text) = fetch(&target, body.as_deref())
                    .map_err(|error| format!("request {sent}: {method} {target}: {error}"))?;
                answer = format!("{{\"status\": {status}, \"body\": \"{}\"}}", escaped(&text));
                match location.filter(|_| follow && (300..400).contains(&status)) {
                    Some(location) => target = resolved(&target, &location)?,
                    None => break,
                }
            }
        }
        Ok(answer)
    }
}

/// The parts of an `http(s)://authority/path?query` URL.
fn parts(url: &str) -> Result<(Scheme, &str, &str), String> {
    let (scheme, rest) = url.split_once("://").ok_or("not an absolute URL")?;
    let scheme = match scheme {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => Scheme::Other(other.to_owned()),
    };
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(split);
    Ok((scheme, authority, if path.is_empty() { "/" } else { path }))
}

/// A redirect's `Location`, absolute or relative to the origin of `base`.
fn resolved(base: &str, location: &str) -> Result<String, String> {
    if location.starts_with("http://") || location.starts_with("https://") {
        return Ok(location.to_owned());
    }
    if location.starts_with('/') {
        let (scheme, rest) = base.split_once("://").ok_or("not an absolute URL")?;
        let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
        return Ok(format!("{scheme}://{authority}{location}"));
    }
    Err(format!("unsupported Location {location:?}"))
}

/// One request: status, `Location` header, body as text.
fn fetch(url: &str, body: Option<&str>) -> Result<(u16, Option<String>, String), String> {
    let (scheme, authority, path) = parts(url)?;
    let request = OutgoingRequest::new(Fields::new());
    let method = if body.is_some() { Method::Post } else { Method::Get };
    request.set_method(&method).map_err(|()| "method")?;
    request.set_scheme(Some(&scheme)).map_err(|()| "scheme")?;
    request.set_authority(Some(authority)).map_err(|()| "authority")?;
    request.set_path_with_query(Some(path)).map_err(|()| "path")?;
    let outgoing_body = match body {
        Some(_) => Some(request.body().map_err(|()| "body")?),
        None => None,
    };
    let future = outgoing_handler::handle(request, None).map_err(code)?;
    // A failed write usually means the request failed: the response future says why.
    let written = match (outgoing_body, body) {
        (Some(outgoing_body), Some(text)) => write_body(outgoing_body, text.as_bytes()),
        _ => Ok(()),
    };
    future.subscribe().block();
    let response = match future.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(error))) => return Err(code(error)),
        Some(Err(())) | None => return Err("no response".to_owned()),
    };
    written?;
    read_response(response)
}

fn write_body(body: OutgoingBody, bytes: &[u8]) -> Result<(), String> {
    {
        let stream = body.write().map_err(|()| "body stream")?;
        for chunk in bytes.chunks(4096) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|error| stream_error(error))?;
        }
    }
    OutgoingBody::finish(body, None).map_err(code)
}

fn read_response(response: IncomingResponse) -> Result<(u16, Option<String>, String), String> {
    let status = response.status();
    let location = response
        .headers()
        .get("location")
        .first()
        .map(|value| String::from_utf8_lossy(value).into_owned());
    let body: IncomingBody = response.consume().map_err(|()| "consume")?;
    let mut bytes = Vec::new();
    {
        let stream = body.stream().map_err(|()| "body stream")?;
        loop {
            match stream.blocking_read(64 << 10) {
                Ok(chunk) => bytes.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(error) => return Err(stream_error(error)),
            }
        }
    }
    Ok((status, location, String::from_utf8_lossy(&bytes).into_owned()))
}

fn code(error: ErrorCode) -> String {
    format!("{error:?}")
}

fn stream_error(error: StreamError) -> String {
    match error {
        StreamError::Closed => "the stream closed".to_owned(),
        StreamError::LastOperationFailed(error) => {
            match wasip2::http::types::http_error_code(&error) {
                Some(error) => code(error),
                None => error.to_debug_string(),
            }
        }
    }
}

/// `text` as the inside of a JSON string.
fn escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}
