//! The engine, its epoch ticker, compilation, and the synchronous `call` with its watchdog.

use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine};

use crate::cache::{CacheStatus, CompiledCache, sha256_hex};
use crate::call::{CallJob, bindings::ToolPre};
use crate::http::NetworkPolicy;
use crate::wasi::{CallState, CapturedOutput};
use crate::{CallOutput, Grants, Limits, SandboxError};

/// How often the ticker advances the engine's epoch: the granularity of wall-clock deadlines.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);
/// The wasm stack of a call (the guest's own call depth; host frames are separate).
const MAX_WASM_STACK: usize = 1 << 20;
/// How long past the wall limit the caller waits for a call's worker before giving up on it.
const WATCHDOG_MARGIN: Duration = Duration::from_secs(2);

/// A WebAssembly tool runtime: one wasmtime engine (Cranelift, fuel, epoch interruption, 1 MiB
/// wasm stack), its epoch ticker thread, and a compiled-code cache. Share one per process;
/// it is `Send + Sync` and calls may run concurrently.
pub struct Sandbox {
    engine: Engine,
    linker: Linker<CallState>,
    cache: CompiledCache,
    ticker: Option<Ticker>,
    network: NetworkPolicy,
}

/// A component compiled for a [`Sandbox`], its imports checked against what the sandbox
/// provides and its `call` export against the tool world. Cheap to clone.
#[derive(Clone)]
pub struct CompiledTool {
    pre: ToolPre<CallState>,
    wasm_sha256: String,
    cache_status: CacheStatus,
}

impl CompiledTool {
    /// The hex sha256 of the component's bytes.
    pub fn wasm_sha256(&self) -> &str {
        &self.wasm_sha256
    }

    /// Whether the code came from the cache, was compiled fresh, or replaced a bad entry.
    pub fn cache_status(&self) -> CacheStatus {
        self.cache_status
    }
}

impl std::fmt::Debug for CompiledTool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledTool")
            .field("wasm_sha256", &self.wasm_sha256)
            .field("cache_status", &self.cache_status)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox").finish_non_exhaustive()
    }
}

impl Sandbox {
    /// A sandbox whose compiled code is cached in `cache_dir`, or with `None` in
    /// `$XDG_CACHE_HOME/safeformers/wasm` (default `~/.cache/safeformers/wasm`). The directory
    /// is created if needed and made user-only (0700).
    ///
    /// # Errors
    /// [`SandboxError::Cache`] when the directory cannot be created or made user-only (it
    /// belongs to someone else), [`SandboxError::Host`] when the engine or the ticker thread
    /// cannot start.
    pub fn new(cache_dir: Option<PathBuf>) -> Result<Sandbox, SandboxError> {
        let cache_dir = match cache_dir {
            Some(dir) => dir,
            None => default_cache_dir()?,
        };
        let mut config = Config::new();
        config
            .consume_fuel(true)
            .epoch_interruption(true)
            .max_wasm_stack(MAX_WASM_STACK);
        let engine = Engine::new(&config)
            .map_err(|error| SandboxError::Host(format!("cannot create the engine: {error:#}")))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|error| SandboxError::Host(format!("cannot link WASI: {error:#}")))?;
        // Always linked, so a tool that imports wasi:http compiles; without a grant every
        // request it makes is refused (`http.rs`).
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(|error| SandboxError::Host(format!("cannot link wasi:http: {error:#}")))?;
        let cache = CompiledCache::open(cache_dir, &engine)?;
        let ticker = Ticker::start(engine.clone())?;
        Ok(Sandbox {
            engine,
            linker,
            cache,
            ticker: Some(ticker),
            network: NetworkPolicy::default(),
        })
    }

    /// This sandbox, letting granted hosts resolve to loopback, private (RFC 1918, unique-local)
    /// and link-local addresses, which are otherwise refused after name resolution even when
    /// granted. A host-side setting, never part of a grant (no manifest or approval can turn it
    /// on): for tests, and for users who deliberately serve tools on their own network. A grant
    /// still names each `host:port`, and addresses that are never destinations (unspecified,
    /// multicast, broadcast, documentation ranges) stay refused.
    #[must_use]
    pub fn with_private_network_allowed(mut self) -> Sandbox {
        self.network.private_network_allowed = true;
        self
    }

    /// Compiles a WebAssembly component (or loads its verified compiled code from the cache) and
    /// checks it against the tool world.
    ///
    /// # Errors
    /// [`SandboxError::Precompiled`] for compiled native code (such as a `.cwasm`), never
    /// loaded from outside; [`SandboxError::NotAComponent`] for a core module or anything
    /// else; [`SandboxError::Compile`] for an invalid component;
    /// [`SandboxError::WorldMismatch`] when it lacks the `call` export or imports what the
    /// sandbox does not provide (such as `wasi:http` 0.3); [`SandboxError::Cache`] when the
    /// compiled code cannot be stored.
    pub fn compile(&self, wasm: &[u8]) -> Result<CompiledTool, SandboxError> {
        check_component_bytes(wasm)?;
        let wasm_sha256 = sha256_hex(wasm);
        let (component, cache_status) =
            self.cache
                .load_or_compile(&self.engine, wasm, &wasm_sha256)?;
        let pre = self.instantiate_pre(&component)?;
        Ok(CompiledTool {
            pre,
            wasm_sha256,
            cache_status,
        })
    }

    fn instantiate_pre(&self, component: &Component) -> Result<ToolPre<CallState>, SandboxError> {
        let mismatch = |error: wasmtime::Error| {
            let mut reason = format!("{error:#}");
            if reason.contains("wasi:http") {
                reason.push_str(
                    " (the sandbox provides wasi:http 0.2: a tool reaches the hosts it is granted \
                     through its outgoing-handler, and no other network)",
                );
            }
            SandboxError::WorldMismatch(reason)
        };
        let pre = self.linker.instantiate_pre(component).map_err(mismatch)?;
        ToolPre::new(pre).map_err(mismatch)
    }

    /// Runs one call of `tool` with `arguments` (JSON text), in a fresh store holding only what
    /// `grants` allow, bounded by `limits`. Blocks the calling thread for at most about
    /// `limits.wall` plus two seconds.
    ///
    /// # Errors
    /// [`SandboxError::LimitAboveMaximum`] and [`SandboxError::Grant`] before anything runs;
    /// then [`SandboxError::OutOfFuel`], [`SandboxError::Deadline`],
    /// [`SandboxError::MemoryLimit`], [`SandboxError::Trap`],
    /// [`SandboxError::ResultTooLarge`], [`SandboxError::InvalidUtf8`] or
    /// [`SandboxError::Instantiate`] for what the tool did. A tool's own `err` result is not
    /// an error here: it is [`CallOutput::result`].
    pub fn call(
        &self,
        tool: &CompiledTool,
        grants: &Grants,
        limits: &Limits,
        arguments: &str,
    ) -> Result<CallOutput, SandboxError> {
        limits.check()?;
        let stdout = CapturedOutput::new(limits.stdio_bytes);
        let stderr = CapturedOutput::new(limits.stdio_bytes);
        let state = CallState::new(grants, limits, self.network, &stdout, &stderr)?;
        let job = CallJob {
            engine: self.engine.clone(),
            pre: tool.pre.clone(),
            state,
            limits: *limits,
            arguments: arguments.to_owned(),
        };
        let (sender, receiver) = mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("safeformers-tool-call".to_owned())
            .spawn(move || {
                // The caller may have given up waiting (the watchdog): nobody to tell then.
                let _ = sender.send(job.run());
            })
            .map_err(|error| SandboxError::Host(format!("cannot start a call thread: {error}")))?;
        let result = match receiver.recv_timeout(limits.wall.saturating_add(WATCHDOG_MARGIN)) {
            Ok(result) => result?,
            Err(RecvTimeoutError::Timeout) => {
                return Err(SandboxError::Deadline { wall: limits.wall });
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err(SandboxError::Host(
                    "the call's thread ended without an answer (a panic in the host)".to_owned(),
                ));
            }
        };
        Ok(CallOutput {
            result,
            stdout: stdout.take(),
            stderr: stderr.take(),
        })
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(ticker) = self.ticker.take() {
            ticker.stop();
        }
    }
}

/// `$XDG_CACHE_HOME/safeformers/wasm`, else `$HOME/.cache/safeformers/wasm`.
fn default_cache_dir() -> Result<PathBuf, SandboxError> {
    cache_dir_from(|name| std::env::var_os(name))
}

/// [`default_cache_dir`] with the environment given: relative values are ignored, as the XDG
/// spec says.
fn cache_dir_from(
    var: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Result<PathBuf, SandboxError> {
    let absolute = |name: &str| {
        var(name)
            .map(PathBuf::from)
            .filter(|path| path.is_absolute())
    };
    let base = match absolute("XDG_CACHE_HOME") {
        Some(cache) => cache,
        None => absolute("HOME")
            .map(|home| home.join(".cache"))
            .ok_or_else(|| SandboxError::Cache {
                path: PathBuf::from("~/.cache/safeformers/wasm"),
                reason: "neither XDG_CACHE_HOME nor HOME is set to an absolute path; pass a \
                         cache directory"
                    .to_owned(),
            })?,
    };
    Ok(base.join("safeformers").join("wasm"))
}

/// Refuses anything but the binary format of a component: compiled native code first (an ELF
/// file, which is what a `.cwasm` is), then core modules, text and unknown bytes.
fn check_component_bytes(wasm: &[u8]) -> Result<(), SandboxError> {
    const MAGIC: &[u8] = b"\0asm";
    const COMPONENT_VERSION: &[u8] = &[0x0d, 0x00, 0x01, 0x00];
    const CORE_VERSION: &[u8] = &[0x01, 0x00, 0x00, 0x00];
    if wasm.starts_with(b"\x7fELF") || Engine::detect_precompiled(wasm).is_some() {
        return Err(SandboxError::Precompiled {
            found: "an ELF file such as a wasmtime .cwasm",
        });
    }
    let found = match (wasm.get(..4), wasm.get(4..8)) {
        (Some(MAGIC), Some(COMPONENT_VERSION)) => return Ok(()),
        (Some(MAGIC), Some(CORE_VERSION)) => "a core WebAssembly module",
        (Some(MAGIC), _) => "an unknown WebAssembly version",
        _ if wasm.trim_ascii_start().starts_with(b"(") => "WebAssembly text",
        _ => "not WebAssembly",
    };
    Err(SandboxError::NotAComponent { found })
}

/// The thread that advances the engine's epoch every [`EPOCH_TICK`] until stopped.
struct Ticker {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

impl Ticker {
    fn start(engine: Engine) -> Result<Ticker, SandboxError> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("safeformers-epoch".to_owned())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(EPOCH_TICK) {
                    engine.increment_epoch();
                }
            })
            .map_err(|error| {
                SandboxError::Host(format!("cannot start the epoch ticker: {error}"))
            })?;
        Ok(Ticker { stop, thread })
    }

    fn stop(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(vars: &[(&str, &str)]) -> Option<PathBuf> {
        let lookup = |name: &str| {
            vars.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.into())
        };
        cache_dir_from(lookup).ok()
    }

    #[test]
    fn the_cache_follows_xdg_then_home() {
        let xdg = [("XDG_CACHE_HOME", "/x/cache"), ("HOME", "/home/u")];
        assert_eq!(
            dir_with(&xdg),
            Some(PathBuf::from("/x/cache/safeformers/wasm"))
        );
        let home = [("HOME", "/home/u")];
        assert_eq!(
            dir_with(&home),
            Some(PathBuf::from("/home/u/.cache/safeformers/wasm"))
        );
        let relative = [("XDG_CACHE_HOME", "cache"), ("HOME", "/home/u")];
        assert_eq!(
            dir_with(&relative),
            Some(PathBuf::from("/home/u/.cache/safeformers/wasm"))
        );
        assert_eq!(dir_with(&[("HOME", "relative")]), None);
        assert_eq!(dir_with(&[]), None);
    }

    #[test]
    fn only_component_bytes_pass_the_header_check() {
        assert!(check_component_bytes(b"\0asm\x0d\0\x01\0").is_ok());
        assert!(check_component_bytes(b"\0asm\x01\0\0\0").is_err());
        assert!(check_component_bytes(b"\x7fELF\x02\x01\x01").is_err());
        assert!(check_component_bytes(b"\0as").is_err());
    }
}
