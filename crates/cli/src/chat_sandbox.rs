//! Chat templates rendered in a child process under operating-system limits.
//!
//! A chat template is a program from the model repository. The tokenize crate renders it with
//! fuel, a recursion limit and an output cap, which stop loops, string doubling and runaway
//! output; but a template engine has corners fuel does not reach (minijinja 3.1.0 materializes a
//! list built by 33 nested `+` concatenations without charging fuel, so doubling a list allocates
//! 2^33 items). The CLI therefore renders every chat template in a child: this same binary,
//! started with the hidden `render-chat-template` subcommand, which caps its own address space
//! and CPU time with `setrlimit` before it reads the request, and is killed by the parent after a
//! wall-clock limit. Whatever the template does, the parent gets a typed error within about a
//! second and its own memory is untouched.
//!
//! The protocol: the parent writes a [`ChatTemplateRequest`] as JSON to the child's stdin; the
//! child writes one JSON object to stdout, `{"Ok": "<prompt>"}` or `{"Err": <problem>}`.

use std::io::{Read, Write};
use std::process::{Child, Command, ExitCode, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;
use safeformers_pipelines::ChatRenderer;
use safeformers_tokenize::{ChatTemplateProblem, ChatTemplateRequest, TokenizeError};

/// The hidden subcommand the child runs.
pub const SUBCOMMAND: &str = "render-chat-template";

/// The child's address-space limit. The render itself needs a few megabytes; the binary and
/// its libraries take some tens.
const CHILD_ADDRESS_SPACE_BYTES: u64 = 256 << 20;

/// The child's CPU-time limit, in seconds (the kernel kills it past this).
const CHILD_CPU_SECONDS: u64 = 1;

/// How long the parent waits for the child before killing it.
const WALL_CLOCK_LIMIT: Duration = Duration::from_millis(750);

/// The largest request the child reads (messages and tools included).
const MAX_REQUEST_BYTES: u64 = 64 * 1024 * 1024;

/// The largest answer the parent reads: the rendered prompt (capped by the request's
/// `max_output_bytes`) as a JSON string, where escaping can grow it up to six times.
fn max_answer_bytes(request: &ChatTemplateRequest) -> u64 {
    (request.options.limits.max_output_bytes as u64)
        .saturating_mul(6)
        .saturating_add(64 * 1024)
}

/// A renderer for [`safeformers_pipelines::TextGeneration::with_chat_renderer`] that renders
/// in an isolated child process.
pub fn isolated_renderer() -> ChatRenderer {
    ChatRenderer::new(render_isolated)
}

/// Renders `request` in a child process (see the module documentation).
pub fn render_isolated(request: &ChatTemplateRequest) -> Result<String, TokenizeError> {
    let fail = |message: String| TokenizeError::ChatTemplate {
        template: request.template_name.clone(),
        problem: ChatTemplateProblem::Isolation(message),
    };
    let body = serde_json::to_vec(request)
        .map_err(|error| fail(format!("could not encode the request: {error}")))?;
    let program = std::env::current_exe()
        .map_err(|error| fail(format!("cannot find the safeformers binary: {error}")))?;
    let mut child = Command::new(program)
        .arg(SUBCOMMAND)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|error| fail(format!("cannot start the renderer process: {error}")))?;

    // Write and read on their own threads so neither side can block the other on a full pipe.
    let stdin = child.stdin.take();
    let writer = thread::spawn(move || {
        if let Some(mut stdin) = stdin {
            // A child that dies early closes its end; its exit status says why.
            let _ = stdin.write_all(&body);
        }
    });
    let stdout = child.stdout.take();
    let limit = max_answer_bytes(request);
    let reader = thread::spawn(move || {
        let mut answer = Vec::new();
        if let Some(stdout) = stdout {
            let _ = stdout
                .take(limit.saturating_add(1))
                .read_to_end(&mut answer);
        }
        answer
    });

    let status = wait_with_deadline(&mut child, WALL_CLOCK_LIMIT).map_err(&fail)?;
    let _ = writer.join();
    let answer = reader
        .join()
        .map_err(|_| fail("the reader thread failed".into()))?;
    let Some(status) = status else {
        return Err(fail(format!(
            "it did not finish within {} ms and was stopped",
            WALL_CLOCK_LIMIT.as_millis()
        )));
    };
    if !status.success() {
        return Err(fail(format!(
            "the renderer process ended with {status} (memory limit {} MiB, CPU limit {CHILD_CPU_SECONDS} s)",
            CHILD_ADDRESS_SPACE_BYTES >> 20
        )));
    }
    if answer.len() as u64 > limit {
        return Err(fail("the renderer's answer is larger than allowed".into()));
    }
    let answer: Result<String, ChatTemplateProblem> = serde_json::from_slice(&answer)
        .map_err(|error| fail(format!("unreadable answer from the renderer: {error}")))?;
    answer.map_err(|problem| TokenizeError::ChatTemplate {
        template: request.template_name.clone(),
        problem,
    })
}

/// Waits for `child` up to `limit`; kills it and returns `None` past that.
fn wait_with_deadline(
    child: &mut Child,
    limit: Duration,
) -> Result<Option<std::process::ExitStatus>, String> {
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(Some(status)),
            Ok(None) if start.elapsed() >= limit => {
                let _ = child.kill();
                let _ = child.wait();
                return Ok(None);
            }
            Ok(None) => thread::sleep(Duration::from_millis(2)),
            Err(error) => return Err(format!("cannot wait for the renderer process: {error}")),
        }
    }
}

/// The child's side: limit this process, read the request from stdin, render, answer on stdout.
pub fn serve_child() -> anyhow::Result<ExitCode> {
    limit_this_process()?;
    let mut body = Vec::new();
    std::io::stdin()
        .take(MAX_REQUEST_BYTES + 1)
        .read_to_end(&mut body)
        .context("reading the chat template request")?;
    anyhow::ensure!(
        body.len() as u64 <= MAX_REQUEST_BYTES,
        "chat template request larger than {MAX_REQUEST_BYTES} bytes"
    );
    let request: ChatTemplateRequest =
        serde_json::from_slice(&body).context("parsing the chat template request")?;
    let answer: Result<String, ChatTemplateProblem> = match request.render() {
        Ok(text) => Ok(text),
        Err(TokenizeError::ChatTemplate { problem, .. }) => Err(problem),
        Err(other) => Err(ChatTemplateProblem::Render(other.to_string())),
    };
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer(&mut stdout, &answer).context("writing the rendered prompt")?;
    stdout.flush().context("writing the rendered prompt")?;
    Ok(ExitCode::SUCCESS)
}

/// Caps this process's address space and CPU time and turns off core dumps.
#[cfg(unix)]
fn limit_this_process() -> anyhow::Result<()> {
    use rustix::process::{Resource, Rlimit, setrlimit};
    let cap = |resource, value| {
        setrlimit(
            resource,
            Rlimit {
                current: Some(value),
                maximum: Some(value),
            },
        )
    };
    cap(Resource::Core, 0).context("setting the renderer's core-dump limit")?;
    cap(Resource::Cpu, CHILD_CPU_SECONDS).context("setting the renderer's CPU limit")?;
    cap(Resource::As, CHILD_ADDRESS_SPACE_BYTES).context("setting the renderer's memory limit")?;
    Ok(())
}

/// Without `setrlimit` the parent's wall-clock limit is the only bound.
#[cfg(not(unix))]
fn limit_this_process() -> anyhow::Result<()> {
    Ok(())
}
