//! Our own cache of compiled components, in a user-only directory. Entry `<key>.cwasm` holds
//! the serialized code, `<key>.sha256` the sha256 of exactly the bytes we wrote; an entry is
//! deserialized only when its bytes hash to that value.

use std::fmt::Write as _;
use std::fs::{self, DirBuilder, OpenOptions, Permissions};
use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::SandboxError;

/// Where a compiled tool's code came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Loaded from a cache entry whose hash matched.
    Hit,
    /// Compiled now; there was no entry.
    Miss,
    /// Compiled now; the entry was there but did not match its recorded hash (or did not load),
    /// so it was deleted and rewritten.
    Discarded,
}

/// The compiled-code cache of one engine.
pub(crate) struct CompiledCache {
    dir: PathBuf,
    /// Hex sha256 of what makes compiled code valid for this engine.
    fingerprint: String,
}

/// The bytes of a cache entry whose sha256 matched the value recorded when we wrote it. Only
/// [`CompiledCache::read_verified`] makes one.
struct VerifiedEntry(Vec<u8>);

impl CompiledCache {
    /// Opens (creating it if needed) the cache directory for `engine`, and makes it user-only.
    pub(crate) fn open(dir: PathBuf, engine: &Engine) -> Result<CompiledCache, SandboxError> {
        let failed = |reason: String| SandboxError::Cache {
            path: dir.clone(),
            reason,
        };
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|error| failed(format!("cannot create: {error}")))?;
        // Also for a directory that already existed: chmod succeeds only for its owner, so this
        // fails for a directory someone else controls.
        fs::set_permissions(&dir, Permissions::from_mode(0o700))
            .map_err(|error| failed(format!("cannot make it user-only (0700): {error}")))?;
        Ok(CompiledCache {
            dir,
            fingerprint: engine_fingerprint(engine),
        })
    }

    /// The component for `wasm` (whose sha256 is `wasm_sha256`): from a verified cache entry,
    /// or compiled now and stored.
    pub(crate) fn load_or_compile(
        &self,
        engine: &Engine,
        wasm: &[u8],
        wasm_sha256: &str,
    ) -> Result<(Component, CacheStatus), SandboxError> {
        let key = format!(
            "{wasm_sha256}-{}",
            self.fingerprint.get(..16).unwrap_or("0")
        );
        let code_path = self.dir.join(format!("{key}.cwasm"));
        let hash_path = self.dir.join(format!("{key}.sha256"));
        let status = match read_verified(&code_path, &hash_path) {
            Lookup::Verified(entry) => match deserialize_verified(engine, &entry) {
                Ok(component) => return Ok((component, CacheStatus::Hit)),
                Err(_) => CacheStatus::Discarded,
            },
            Lookup::Missing => CacheStatus::Miss,
            Lookup::Mismatch => CacheStatus::Discarded,
        };
        if status == CacheStatus::Discarded {
            let _ = fs::remove_file(&code_path);
            let _ = fs::remove_file(&hash_path);
        }
        let component = Component::from_binary(engine, wasm)
            .map_err(|error| SandboxError::Compile(format!("{error:#}")))?;
        let code = component.serialize().map_err(|error| SandboxError::Cache {
            path: code_path.clone(),
            reason: format!("cannot serialize the compiled component: {error:#}"),
        })?;
        write_atomically(&code_path, &code)?;
        write_atomically(&hash_path, sha256_hex(&code).as_bytes())?;
        Ok((component, status))
    }
}

enum Lookup {
    Verified(VerifiedEntry),
    Missing,
    Mismatch,
}

/// Reads an entry and checks its bytes against the recorded hash.
fn read_verified(code_path: &Path, hash_path: &Path) -> Lookup {
    let (Ok(recorded), Ok(code)) = (fs::read_to_string(hash_path), fs::read(code_path)) else {
        return if code_path.exists() || hash_path.exists() {
            Lookup::Mismatch
        } else {
            Lookup::Missing
        };
    };
    if recorded.trim_end() == sha256_hex(&code) {
        Lookup::Verified(VerifiedEntry(code))
    } else {
        Lookup::Mismatch
    }
}

/// Loads compiled code from a verified cache entry.
#[allow(unsafe_code)]
fn deserialize_verified(engine: &Engine, entry: &VerifiedEntry) -> wasmtime::Result<Component> {
    // SAFETY: `Component::deserialize` trusts its input to be code that wasmtime itself
    // produced: crafted bytes could run arbitrary native code. These bytes are: they come from a
    // `VerifiedEntry`, whose sha256 equals the hash we recorded when this crate wrote the entry
    // from `Component::serialize` of a component it compiled from a `.wasm`. The entry lives in
    // a directory we made user-only (0700) and chmod-checked, so only this user (who could run
    // native code anyway) can have written both files; accidental corruption or a partial write
    // fails the hash check. wasmtime additionally checks the engine version and configuration
    // recorded in the artifact and refuses an incompatible one.
    unsafe { Component::deserialize(engine, &entry.0) }
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename, so a
/// reader never sees half an entry. The file is 0600.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), SandboxError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let failed = |reason: String| SandboxError::Cache {
        path: path.to_owned(),
        reason,
    };
    let unique = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(format!(".tmp-{}-{unique}", std::process::id()));
    let temporary = PathBuf::from(temporary);
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        })
        .and_then(|()| fs::rename(&temporary, path));
    written.map_err(|error| {
        let _ = fs::remove_file(&temporary);
        failed(format!("cannot write: {error}"))
    })
}

/// The hex sha256 of `bytes`.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, byte| {
            let _ = write!(out, "{byte:02x}");
            out
        })
}

/// What compiled code depends on besides the component: wasmtime's own compatibility hash (the
/// target triple and CPU features Cranelift compiles for, every compilation setting such as fuel
/// and epochs, the enabled wasm features, and wasmtime's version), plus the host's arch and OS.
/// wasmtime checks the same when deserializing; the fingerprint keeps entries of different
/// engines apart (a home directory shared by machines with different CPUs, say).
fn engine_fingerprint(engine: &Engine) -> String {
    let mut hasher = Sha256Hasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    let mut digest = hasher.0;
    digest.update(std::env::consts::ARCH.as_bytes());
    digest.update(b"-");
    digest.update(std::env::consts::OS.as_bytes());
    hex(&digest.finalize())
}

/// Feeds what a `Hash` implementation writes into sha256 (stable, unlike `DefaultHasher`).
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        // Only the digest is used; `finish` is required by the trait.
        0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}
