//! The WebAssembly tool sandbox: a tool is a WebAssembly component of the world
//! `safeformers:tool/tool@0.1.0` (`wit/tool.wit`), and it can do nothing the user did not grant.
//!
//! ```wit
//! package safeformers:tool@0.1.0;
//! world tool {
//!   export call: func(arguments: string) -> result<string, string>;
//! }
//! ```
//!
//! A [`Sandbox`] owns one wasmtime engine (Cranelift, fuel metering, epoch interruption, a
//! 1 MiB wasm stack) and a cache of compiled code. [`Sandbox::compile`] takes the bytes of a
//! component (never precompiled code from elsewhere) and [`Sandbox::call`] runs one call in a
//! fresh store whose WASI context is built only from [`Grants`]:
//!
//! - no inherited stdio: stdin is empty, stdout and stderr are captured in memory, each capped
//!   at [`Limits::stdio_bytes`] (the rest is discarded, the guest's writes still succeed);
//! - no environment except the granted variables, no arguments;
//! - no files except the granted directories, each preopened at its guest path, read-only
//!   unless granted writable, and never left through `..` or symlinks (cap-std's rules);
//! - no sockets: TCP, UDP and name lookup are refused for every address, granted or not;
//! - HTTP only to what is granted: a tool that imports `wasi:http/outgoing-handler` (0.2) has
//!   its requests sent by the host, and only to a `host:port` of [`Grants::net`] (scheme `http`
//!   or `https`, host compared ASCII-case-insensitively, no userinfo). The host resolves the
//!   name itself and refuses loopback, private (RFC 1918, unique-local), link-local, CGNAT and
//!   other special-purpose addresses, then connects to an address it checked (so a rebinding
//!   name cannot move the connection); `https` is verified against the webpki roots for the
//!   granted name. Redirects are not followed by the host: a guest that follows one makes a new
//!   request, checked the same way. Everything else is an error code returned to the guest
//!   (`http-request-denied`, `destination-ip-prohibited`), never a connection. A call makes at
//!   most 32 requests, its bodies are bounded by [`Limits::http_bytes`], and every wait ends by
//!   its deadline. [`Sandbox::with_private_network_allowed`] lets granted hosts be on this
//!   machine or its network (for tests and self-hosted tools; never set by a grant).
//!
//! ```
//! use safeformers_sandbox::{Grants, Limits, Sandbox};
//! # fn main() -> Result<(), safeformers_sandbox::SandboxError> {
//! # let cache = std::env::temp_dir().join(format!("safeformers-doc-{}", std::process::id()));
//! let sandbox = Sandbox::new(Some(cache))?; // None: ~/.cache/safeformers/wasm
//! // The echo tool of this crate's tests: returns its arguments.
//! let tool = sandbox.compile(include_bytes!("../tests/tools/echo.wasm"))?;
//! let output = sandbox.call(&tool, &Grants::default(), &Limits::DEFAULT, r#"{"text": "hi"}"#)?;
//! assert_eq!(output.result, Ok(r#"{"text": "hi"}"#.to_owned()));
//! # Ok(())
//! # }
//! ```
//!
//! Each call is bounded by [`Limits`]: fuel (deterministic compute), a wall-clock deadline,
//! linear memory (a failed `memory.grow` traps), instance/table/memory counts, the size of the
//! result and of the captured output.
//!
//! # How the deadline is enforced
//!
//! Three layers, because epochs only interrupt running wasm:
//!
//! 1. One ticker thread per [`Sandbox`] increments the engine's epoch every 10 ms; each store's
//!    epoch deadline is the wall limit in ticks, and wasm that passes it traps.
//! 2. A guest blocked inside a host call (a `wasi:io/poll` sleep, a read from a FIFO) is not
//!    running wasm, so the epoch cannot reach it. The guest therefore runs on wasmtime's async
//!    support (a fiber) under a Tokio timeout of the wall limit: when the timeout fires, the
//!    call's future is dropped, which unwinds the guest's fiber and frees the store. The public
//!    API stays synchronous: each call runs on its own worker thread with its own
//!    current-thread Tokio runtime (so `call` also works from a thread that is inside another
//!    runtime).
//! 3. The caller waits for that worker with a timeout of the wall limit plus a margin; if the
//!    worker has not answered (a host operation that blocks the thread itself), `call` returns
//!    [`SandboxError::Deadline`] anyway and leaves the worker behind, to finish when its host
//!    operation does. A blocking file operation (opening a FIFO) can keep one such thread
//!    (Tokio's blocking pool) alive until the operation ends; the call has returned long before.
//!
//! # Compiled-code cache
//!
//! Compiling takes milliseconds to seconds, so compiled code is kept in a user-only (0700)
//! directory: `$XDG_CACHE_HOME/safeformers/wasm`, by default `~/.cache/safeformers/wasm`. An
//! entry is keyed by the sha256 of the component and a fingerprint of the engine (wasmtime's
//! compatibility hash: its version, configuration, target triple and CPU features), and its own
//! sha256 is recorded when we write it; an entry whose bytes no longer match is discarded and the
//! component recompiled. Loading compiled code is the one `unsafe` operation of this crate.

mod cache;
mod call;
mod http;
mod sandbox;
mod wasi;

use std::path::PathBuf;
use std::time::Duration;

pub use cache::CacheStatus;
pub use sandbox::{CompiledTool, Sandbox};

/// What one call may consume. [`Limits::DEFAULT`] suits most tools; a tool may ask for more, up
/// to [`Limits::HARD_MAX`], and the user's approval may lower that; nothing raises it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Fuel: roughly one unit per wasm instruction (about 5×10⁹ per second of compute on our
    /// machines). Deterministic: the same tool and arguments stop at the same place.
    pub fuel: u64,
    /// Wall-clock deadline of the call, including instantiation and time spent in host calls.
    pub wall: Duration,
    /// Maximum size of each linear memory, in bytes.
    pub memory_bytes: usize,
    /// Maximum size of the result text (the `ok` or `err` string), in bytes. Checked as soon as
    /// the component model has copied the text out of the guest (wasmtime offers no way to see
    /// its length before; the copy is bounded by the memory limit), and a larger one dropped.
    pub output_bytes: usize,
    /// Maximum bytes kept of stdout, and separately of stderr; the rest is discarded.
    pub stdio_bytes: usize,
    /// Maximum bytes of HTTP bodies, sent and received together, over all the requests of the
    /// call (only a tool granted the network makes any). A body that would go past it fails
    /// in the guest (`http-request-body-size` or `http-response-body-size`), and so do the
    /// call's later bodies.
    pub http_bytes: usize,
}

impl Limits {
    /// The limits of a tool that asks for nothing: 10 s, about 4 s of compute (2×10¹⁰ fuel),
    /// 256 MiB of memory, a 1 MiB result, 64 KiB each of stdout and stderr, 16 MiB of HTTP
    /// bodies.
    pub const DEFAULT: Limits = Limits {
        fuel: 20_000_000_000,
        wall: Duration::from_secs(10),
        memory_bytes: 256 << 20,
        output_bytes: 1 << 20,
        stdio_bytes: 64 << 10,
        http_bytes: 16 << 20,
    };

    /// The most any tool may be given: 60 s, about 60 s of compute (3×10¹¹ fuel), 1 GiB of
    /// memory, a 16 MiB result, 1 MiB each of stdout and stderr, 256 MiB of HTTP bodies.
    pub const HARD_MAX: Limits = Limits {
        fuel: 300_000_000_000,
        wall: Duration::from_secs(60),
        memory_bytes: 1 << 30,
        output_bytes: 16 << 20,
        stdio_bytes: 1 << 20,
        http_bytes: 256 << 20,
    };

    /// Checks every limit against [`Limits::HARD_MAX`].
    ///
    /// # Errors
    /// [`SandboxError::LimitAboveMaximum`] naming the first limit above its maximum.
    pub fn check(&self) -> Result<(), SandboxError> {
        let max = Limits::HARD_MAX;
        let pairs: [(&'static str, u128, u128); 6] = [
            ("fuel", self.fuel.into(), max.fuel.into()),
            ("wall (ms)", self.wall.as_millis(), max.wall.as_millis()),
            (
                "memory_bytes",
                to_u128(self.memory_bytes),
                to_u128(max.memory_bytes),
            ),
            (
                "output_bytes",
                to_u128(self.output_bytes),
                to_u128(max.output_bytes),
            ),
            (
                "stdio_bytes",
                to_u128(self.stdio_bytes),
                to_u128(max.stdio_bytes),
            ),
            (
                "http_bytes",
                to_u128(self.http_bytes),
                to_u128(max.http_bytes),
            ),
        ];
        for (limit, requested, maximum) in pairs {
            if requested > maximum {
                return Err(SandboxError::LimitAboveMaximum {
                    limit,
                    requested,
                    maximum,
                });
            }
        }
        Ok(())
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

fn to_u128(value: usize) -> u128 {
    u128::try_from(value).unwrap_or(u128::MAX)
}

/// A host directory made visible to the tool at a guest path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsGrant {
    /// Where the tool sees the directory: an absolute path such as `/data`, without `..`.
    pub guest: String,
    /// The host directory. It must exist; nothing outside it is reachable.
    pub host: PathBuf,
    /// Whether the tool may create, write, rename and remove files in it. Read-only otherwise.
    pub writable: bool,
}

/// Everything a call may touch beyond its own memory. The default grants nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// Directories preopened for the tool.
    pub fs: Vec<FsGrant>,
    /// Environment variables the tool sees (name, value); it sees no others.
    pub env: Vec<(String, String)>,
    /// HTTP destinations (host, port) the user approved: a DNS name or an IP address (IPv6
    /// with or without brackets) and a port. The tool reaches them through `wasi:http` only,
    /// and only at public addresses unless the sandbox allows the private network (see the
    /// crate documentation); plain sockets stay refused.
    pub net: Vec<(String, u16)>,
}

/// What a call produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallOutput {
    /// The tool's own answer: its `ok` text or its `err` text (each at most
    /// [`Limits::output_bytes`]). Untrusted data: parse it with bounds.
    pub result: Result<String, String>,
    /// What the tool wrote to stdout, at most [`Limits::stdio_bytes`].
    pub stdout: Vec<u8>,
    /// What the tool wrote to stderr, at most [`Limits::stdio_bytes`].
    pub stderr: Vec<u8>,
}

/// Why a tool could not be compiled or called.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SandboxError {
    /// The bytes are compiled native code (a `.cwasm` or other ELF file). Only WebAssembly
    /// components are accepted; they are compiled here.
    #[error(
        "refusing precompiled code ({found}): only WebAssembly components (.wasm) are accepted, and \
         they are compiled locally"
    )]
    Precompiled {
        /// What the bytes look like.
        found: &'static str,
    },
    /// The bytes are not a WebAssembly component (a core module, text, something else).
    #[error(
        "not a WebAssembly component ({found}): a tool must be a component of the world safeformers:tool/tool@0.1.0"
    )]
    NotAComponent {
        /// What the bytes look like.
        found: &'static str,
    },
    /// The component is malformed or uses features the engine does not support.
    #[error("the component does not compile: {0}")]
    Compile(String),
    /// The component does not fit the tool world: it lacks the `call` export, or imports
    /// something the sandbox does not provide.
    #[error("the component does not fit the world safeformers:tool/tool@0.1.0: {0}")]
    WorldMismatch(String),
    /// Instantiating the component failed (for a reason other than a limit).
    #[error("the tool could not be instantiated: {0}")]
    Instantiate(String),
    /// The call used up its fuel.
    #[error("the tool ran out of fuel ({fuel} units)")]
    OutOfFuel {
        /// The fuel the call was given.
        fuel: u64,
    },
    /// The call passed its wall-clock deadline (in wasm or blocked in a host call).
    #[error("the tool passed its deadline of {} ms", wall.as_millis())]
    Deadline {
        /// The wall-clock limit.
        wall: Duration,
    },
    /// The tool tried to grow a linear memory beyond the limit.
    #[error("the tool went over its memory limit of {limit} bytes")]
    MemoryLimit {
        /// The limit per linear memory, in bytes.
        limit: usize,
    },
    /// The tool trapped (unreachable, a panic, a bad access, stack overflow, exit...).
    #[error("the tool trapped: {0}")]
    Trap(String),
    /// The result text is larger than [`Limits::output_bytes`]; it was dropped.
    #[error("the tool's result is larger than the limit of {limit} bytes")]
    ResultTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The tool returned a string that is not valid Unicode.
    #[error("the tool returned text that is not valid UTF-8")]
    InvalidUtf8,
    /// A requested limit is above [`Limits::HARD_MAX`].
    #[error("{limit} = {requested} is above the hard maximum of {maximum}")]
    LimitAboveMaximum {
        /// Which limit.
        limit: &'static str,
        /// The value asked for.
        requested: u128,
        /// The hard maximum.
        maximum: u128,
    },
    /// A grant cannot be honoured (a missing directory, a relative guest path, a bad name).
    #[error("grant {grant}: {reason}")]
    Grant {
        /// The grant, as the user would write it.
        grant: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The compiled-code cache directory or one of its entries could not be used.
    #[error("compiled-code cache {}: {reason}", path.display())]
    Cache {
        /// The directory or file concerned.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The host could not set up the engine or a call (a thread, a runtime).
    #[error("sandbox host: {0}")]
    Host(String),
}
