//! Chat templates rendered in a child process under operating-system limits.
//!
//! A chat template is a program from the model repository. The tokenize crate renders it with
//! fuel, a recursion limit and an output cap, which stop loops, string doubling and runaway
//! output; but a template engine has corners fuel does not reach (minijinja 3.1.0, the newest
//! release, materializes a list built by 33 nested `+` concatenations without charging fuel, so
//! doubling a list allocates 2^33 items). Every chat template is therefore rendered in a child
//! process by default: a program that calls [`serve_if_requested`] first thing in `main` (the
//! current executable unless [`crate::ChatTemplateIsolation`] names another), started with the
//! environment variable [`RENDERER_ENV`] set. The child caps its own address space and CPU time
//! with `setrlimit` before it reads the request, and is killed by the parent after a wall-clock
//! limit. Whatever the template does, the parent gets a typed error within about a second and
//! its own memory is untouched.
//!
//! A program that does not call [`serve_if_requested`] fails closed: its child runs `main` as
//! a normal start (with one unexpected argument, [`SUBCOMMAND`]), and a chat render attempted
//! inside a child is refused instead of starting another child, so the parent gets an error,
//! never an unbounded render.
//!
//! ```no_run
//! fn main() {
//!     // First: when this process was started as the isolated renderer, render and exit.
//!     safeformers::chat_sandbox::serve_if_requested();
//!     // ... the program itself: its chat templates are rendered by a child of itself.
//! }
//! ```
//!
//! The protocol: the parent writes a [`ChatTemplateRequest`] as JSON to the child's stdin; the
//! child writes one JSON object to stdout, `{"Ok": "<prompt>"}` or `{"Err": <problem>}`.

// The example is about what `main` must do first.
#![allow(clippy::needless_doctest_main)]

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use safeformers_pipelines::ChatRenderer;
use safeformers_tokenize::{ChatTemplateProblem, ChatTemplateRequest, TokenizeError};

use crate::options::ChatTemplateIsolation;

/// The argument the child is started with (the `safeformers` CLI's hidden subcommand).
pub const SUBCOMMAND: &str = "render-chat-template";

/// The environment variable that marks a process as the isolated renderer (value `1`).
pub const RENDERER_ENV: &str = "SAFEFORMERS_CHAT_TEMPLATE_RENDERER";

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

/// The renderer `isolation` asks for: a child process (of the current executable or of the
/// program named), or `None` for the in-process render of the pipelines crate.
pub fn renderer(isolation: &ChatTemplateIsolation) -> Option<ChatRenderer> {
    match isolation {
        ChatTemplateIsolation::CurrentExe => Some(ChatRenderer::new(|request| {
            let program = current_executable().map_err(|error| {
                isolation_error(
                    request,
                    format!("cannot find the current executable: {error}"),
                )
            })?;
            render_isolated(&program, request)
        })),
        ChatTemplateIsolation::Program(program) => {
            let program = program.clone();
            Some(ChatRenderer::new(move |request| {
                render_isolated(&program, request)
            }))
        }
        ChatTemplateIsolation::ProgramWithArguments(program, arguments) => {
            let (program, arguments) = (program.clone(), arguments.clone());
            Some(ChatRenderer::new(move |request| {
                render_isolated_with_arguments(&program, &arguments, request)
            }))
        }
        ChatTemplateIsolation::InProcessTrusted => None,
    }
}

/// The program this process runs. On Linux, `/proc/self/exe`: it opens the very file this
/// process was started from even after that path was replaced or deleted (a rebuilt binary, an
/// upgrade under a long-running server), so the renderer is always this program, never whatever
/// now sits at the old path.
fn current_executable() -> std::io::Result<std::path::PathBuf> {
    let own = Path::new("/proc/self/exe");
    if own.exists() {
        return Ok(own.to_path_buf());
    }
    std::env::current_exe()
}

/// Whether this process was started as the isolated renderer.
pub fn is_renderer_process() -> bool {
    std::env::var_os(RENDERER_ENV).is_some_and(|value| value == "1")
}

fn isolation_error(request: &ChatTemplateRequest, message: String) -> TokenizeError {
    TokenizeError::ChatTemplate {
        template: request.template_name.clone(),
        problem: ChatTemplateProblem::Isolation(message),
    }
}

/// Renders `request` in a child process started from `program` (see the module
/// documentation).
pub fn render_isolated(
    program: &Path,
    request: &ChatTemplateRequest,
) -> Result<String, TokenizeError> {
    render_isolated_with_arguments(program, &[], request)
}

/// [`render_isolated`] with `arguments` before [`SUBCOMMAND`] on the child's command line.
pub fn render_isolated_with_arguments(
    program: &Path,
    arguments: &[OsString],
    request: &ChatTemplateRequest,
) -> Result<String, TokenizeError> {
    let fail = |message: String| isolation_error(request, message);
    if is_renderer_process() {
        // A renderer child whose `main` did not serve: never start a child of a child.
        return Err(fail(format!(
            "this process was started as the isolated chat-template renderer, but its `main` \
             does not call safeformers::chat_sandbox::serve_if_requested() first; nothing was \
             rendered ({RENDERER_ENV} is set)"
        )));
    }
    let body = serde_json::to_vec(request)
        .map_err(|error| fail(format!("could not encode the request: {error}")))?;
    let mut child = Command::new(program)
        .args(arguments)
        .arg(SUBCOMMAND)
        .env(RENDERER_ENV, "1")
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
            "the renderer process {} ended with {status} (memory limit {} MiB, CPU limit \
             {CHILD_CPU_SECONDS} s; its `main` must call \
             safeformers::chat_sandbox::serve_if_requested() first)",
            program.display(),
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

/// When this process was started as the isolated renderer ([`RENDERER_ENV`] is `1`): limits
/// itself, reads the request from stdin, renders it, answers on stdout and exits. Otherwise
/// returns at once. Call it first thing in `main` of any program that renders chat templates
/// with the default [`crate::ChatTemplateIsolation::CurrentExe`].
pub fn serve_if_requested() {
    if is_renderer_process() {
        let code = match serve_child() {
            Ok(()) => 0,
            Err(message) => {
                eprintln!("error: {message}");
                1
            }
        };
        std::process::exit(code);
    }
}

/// The child's side: limit this process, read the request from stdin, render, answer on
/// stdout. The error says which step failed.
pub fn serve_child() -> Result<(), String> {
    limit_this_process()?;
    let mut body = Vec::new();
    std::io::stdin()
        .take(MAX_REQUEST_BYTES + 1)
        .read_to_end(&mut body)
        .map_err(|error| format!("reading the chat template request: {error}"))?;
    if body.len() as u64 > MAX_REQUEST_BYTES {
        return Err(format!(
            "chat template request larger than {MAX_REQUEST_BYTES} bytes"
        ));
    }
    let request: ChatTemplateRequest = serde_json::from_slice(&body)
        .map_err(|error| format!("parsing the chat template request: {error}"))?;
    let answer: Result<String, ChatTemplateProblem> = match request.render() {
        Ok(text) => Ok(text),
        Err(TokenizeError::ChatTemplate { problem, .. }) => Err(problem),
        Err(other) => Err(ChatTemplateProblem::Render(other.to_string())),
    };
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer(&mut stdout, &answer)
        .map_err(|error| format!("writing the rendered prompt: {error}"))?;
    stdout
        .flush()
        .map_err(|error| format!("writing the rendered prompt: {error}"))
}

/// Caps this process's address space and CPU time and turns off core dumps.
#[cfg(unix)]
fn limit_this_process() -> Result<(), String> {
    use rustix::process::{Resource, Rlimit, setrlimit};
    let cap = |resource, value, what: &str| {
        setrlimit(
            resource,
            Rlimit {
                current: Some(value),
                maximum: Some(value),
            },
        )
        .map_err(|error| format!("setting the renderer's {what} limit: {error}"))
    };
    cap(Resource::Core, 0, "core-dump")?;
    cap(Resource::Cpu, CHILD_CPU_SECONDS, "CPU")?;
    cap(Resource::As, CHILD_ADDRESS_SPACE_BYTES, "memory")?;
    Ok(())
}

/// Without `setrlimit` the parent's wall-clock limit is the only bound.
#[cfg(not(unix))]
fn limit_this_process() -> Result<(), String> {
    Ok(())
}
