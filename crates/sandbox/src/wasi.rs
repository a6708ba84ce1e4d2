//! The per-call store state: a WASI context built only from the grants, the resource table, and
//! the limiter that turns a memory grow past the limit into a typed trap.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::http::{MAX_FIELDS_BYTES, NetworkPolicy, OutgoingHttp};
use crate::{Grants, Limits, SandboxError};

/// Instances a component may create (a component made of several core modules instantiates
/// each; Rust tools use a handful).
const MAX_INSTANCES: usize = 64;
/// Tables across those instances.
const MAX_TABLES: usize = 64;
/// Linear memories across those instances.
const MAX_MEMORIES: usize = 16;
/// Elements per table (function tables of real tools hold thousands at most).
const MAX_TABLE_ELEMENTS: usize = 1 << 20;
/// Host-side resources (streams, pollables, descriptors) a guest may hold at once: each costs
/// host memory that the memory limit does not see.
const MAX_RESOURCES: usize = 16_384;
/// The write permit the captured stdout/stderr grant per check.
const WRITE_PERMIT: usize = 64 << 10;

/// The data of one call's store.
pub(crate) struct CallState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    outgoing_http: OutgoingHttp,
    table: ResourceTable,
    pub(crate) limiter: CallLimiter,
}

impl CallState {
    /// The state of a call under `grants`, `limits` and the sandbox's network policy, writing
    /// the guest's stdout and stderr into the given captures. The call's HTTP requests end by
    /// its wall limit from now.
    pub(crate) fn new(
        grants: &Grants,
        limits: &Limits,
        network: NetworkPolicy,
        stdout: &CapturedOutput,
        stderr: &CapturedOutput,
    ) -> Result<CallState, SandboxError> {
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_RESOURCES);
        let mut http = WasiHttpCtx::new();
        http.set_field_size_limit(MAX_FIELDS_BYTES);
        let now = tokio::time::Instant::now();
        let deadline = now.checked_add(limits.wall).unwrap_or(now);
        Ok(CallState {
            wasi: wasi_context(grants, stdout, stderr)?,
            http,
            outgoing_http: OutgoingHttp::new(grants, limits, network, deadline),
            table,
            limiter: CallLimiter::new(limits.memory_bytes),
        })
    }
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for CallState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outgoing_http,
        }
    }
}

/// Builds the WASI context from the grants alone. Everything not granted stays as
/// `WasiCtxBuilder` leaves it (no stdin, env, args or preopens) or is explicitly refused
/// (sockets).
fn wasi_context(
    grants: &Grants,
    stdout: &CapturedOutput,
    stderr: &CapturedOutput,
) -> Result<WasiCtx, SandboxError> {
    let mut builder = WasiCtxBuilder::new();
    builder.stdout(stdout.clone()).stderr(stderr.clone());
    for (name, value) in &grants.env {
        if name.is_empty() || name.contains(['=', '\0']) || value.contains('\0') {
            return Err(SandboxError::Grant {
                grant: format!("env:{name}"),
                reason: "a variable name must be non-empty, without '=' or NUL".to_owned(),
            });
        }
        builder.env(name, value);
    }
    for (index, fs) in grants.fs.iter().enumerate() {
        let grant = format!("fs:{}={}", fs.guest, fs.host.display());
        check_guest_path(&fs.guest).map_err(|reason| SandboxError::Grant {
            grant: grant.clone(),
            reason: reason.to_owned(),
        })?;
        let taken = grants
            .fs
            .iter()
            .take(index)
            .any(|other| other.guest == fs.guest);
        if taken {
            return Err(SandboxError::Grant {
                grant,
                reason: "this guest path is granted twice".to_owned(),
            });
        }
        let perms = if fs.writable {
            FsPerms::ReadWrite
        } else {
            FsPerms::ReadOnly
        };
        builder
            .preopened_dir(&fs.host, &fs.guest, perms)
            .map_err(|error| SandboxError::Grant {
                grant,
                reason: format!("{error:#}"),
            })?;
    }
    // Sockets are refused whatever `grants.net` says: a tool granted the network reaches it
    // only through wasi:http, whose requests the host checks and sends (`http.rs`).
    builder
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .socket_addr_check(|_, _| Box::pin(async { false }));
    Ok(builder.build())
}

/// A guest path must be `/` or absolute with plain segments (no `.`, `..` or empty ones): the
/// preopen's name is how the guest finds the directory, and an odd name only invites confusion.
fn check_guest_path(guest: &str) -> Result<(), &'static str> {
    let Some(relative) = guest.strip_prefix('/') else {
        return Err("the guest path must be absolute (such as /data)");
    };
    let plain = relative
        .split('/')
        .all(|segment| !matches!(segment, "" | "." | "..") && !segment.contains('\0'));
    if guest != "/" && !plain {
        return Err("the guest path must be made of plain names (no '.', '..', '//' or NUL)");
    }
    Ok(())
}

/// Wraps wasmtime's `StoreLimits` so that a refused memory grow becomes a
/// [`MemoryLimitExceeded`] trap the caller can recognise.
pub(crate) struct CallLimiter {
    limits: StoreLimits,
}

impl CallLimiter {
    fn new(memory_bytes: usize) -> CallLimiter {
        let limits = StoreLimitsBuilder::new()
            .memory_size(memory_bytes)
            .table_elements(MAX_TABLE_ELEMENTS)
            .instances(MAX_INSTANCES)
            .tables(MAX_TABLES)
            .memories(MAX_MEMORIES)
            .trap_on_grow_failure(true)
            .build();
        CallLimiter { limits }
    }
}

/// The error a memory grow past the limit traps with.
#[derive(Debug, thiserror::Error)]
#[error("memory grow to {desired} bytes refused")]
pub(crate) struct MemoryLimitExceeded {
    desired: usize,
}

impl ResourceLimiter for CallLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        match self.limits.memory_growing(current, desired, maximum) {
            Ok(true) => Ok(true),
            Ok(false) | Err(_) => Err(MemoryLimitExceeded { desired }.into()),
        }
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        // The host could not provide memory under the limit: the same outcome for the guest.
        Err(MemoryLimitExceeded { desired: 0 }.into())
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

/// A guest's stdout or stderr, kept in memory up to a cap. Writes past the cap succeed and are
/// discarded, so a chatty tool still finishes its call.
#[derive(Clone)]
pub(crate) struct CapturedOutput {
    buffer: Arc<Mutex<Vec<u8>>>,
    cap: usize,
}

impl CapturedOutput {
    pub(crate) fn new(cap: usize) -> CapturedOutput {
        CapturedOutput {
            buffer: Arc::default(),
            cap,
        }
    }

    fn append(&self, bytes: &[u8]) {
        let mut buffer = self.buffer.lock().unwrap_or_else(PoisonError::into_inner);
        let room = self.cap.saturating_sub(buffer.len());
        buffer.extend_from_slice(bytes.get(..room.min(bytes.len())).unwrap_or_default());
    }

    /// What has been captured so far.
    pub(crate) fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.buffer.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl IsTerminal for CapturedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CapturedOutput {
    async fn ready(&mut self) {}
}

#[wasmtime_wasi::async_trait]
impl OutputStream for CapturedOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_PERMIT)
    }
}

impl tokio::io::AsyncWrite for CapturedOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
