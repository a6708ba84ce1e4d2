//! T11: untrusted compiled code. `compile` takes only components: compiled native code (our own
//! cache entry, as a `.cwasm` shipped in a repo would be), core modules and text are refused
//! with typed errors. A cache entry whose bytes changed on disk is discarded and recompiled
//! from the component, never loaded.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use safeformers_sandbox::{CacheStatus, Grants, Sandbox, SandboxError};

use crate::{call, quick_limits, tool_bytes};

/// A sandbox with a cache directory of its own, and that directory.
fn own_sandbox() -> (std::sync::Arc<Sandbox>, PathBuf) {
    let dir = safeformers_testkit::scratch_dir("sandbox-t11").join("wasm");
    (
        std::sync::Arc::new(Sandbox::new(Some(dir.clone())).unwrap()),
        dir,
    )
}

/// The one file with `extension` in the cache directory.
fn entry(dir: &Path, extension: &str) -> PathBuf {
    let found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == extension))
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    found.into_iter().next().unwrap()
}

fn assert_echo_works(sandbox: &std::sync::Arc<Sandbox>, tool: &safeformers_sandbox::CompiledTool) {
    let output = call(
        sandbox,
        tool,
        &Grants::default(),
        &quick_limits(),
        "still here",
    )
    .unwrap();
    assert_eq!(output.result, Ok("still here".to_owned()));
}

#[test]
fn a_tampered_cache_entry_is_discarded_and_recompiled() {
    let (sandbox, dir) = own_sandbox();
    let wasm = tool_bytes("echo");
    let first = sandbox.compile(&wasm).unwrap();
    assert_eq!(first.cache_status(), CacheStatus::Miss);
    assert_eq!(
        sandbox.compile(&wasm).unwrap().cache_status(),
        CacheStatus::Hit
    );

    let code_path = entry(&dir, "cwasm");
    let genuine = std::fs::read(&code_path).unwrap();
    let mut tampered = genuine.clone();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0x01;
    std::fs::write(&code_path, &tampered).unwrap();

    let recompiled = sandbox.compile(&wasm).unwrap();
    assert_eq!(recompiled.cache_status(), CacheStatus::Discarded);
    assert_eq!(
        std::fs::read(&code_path).unwrap(),
        genuine,
        "the entry was not rewritten"
    );
    assert_echo_works(&sandbox, &recompiled);
    assert_eq!(
        sandbox.compile(&wasm).unwrap().cache_status(),
        CacheStatus::Hit
    );
}

#[test]
fn a_cache_entry_with_a_changed_record_is_discarded() {
    let (sandbox, dir) = own_sandbox();
    let wasm = tool_bytes("echo");
    sandbox.compile(&wasm).unwrap();
    std::fs::write(entry(&dir, "sha256"), "0".repeat(64)).unwrap();
    let recompiled = sandbox.compile(&wasm).unwrap();
    assert_eq!(recompiled.cache_status(), CacheStatus::Discarded);
    assert_echo_works(&sandbox, &recompiled);
}

#[test]
fn the_cache_is_user_only() {
    let (sandbox, dir) = own_sandbox();
    sandbox.compile(&tool_bytes("echo")).unwrap();
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&entry(&dir, "cwasm")), 0o600);
    assert_eq!(mode(&entry(&dir, "sha256")), 0o600);

    // An existing directory open to others is made user-only.
    let open = safeformers_testkit::scratch_dir("sandbox-t11-open");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    Sandbox::new(Some(open.clone())).unwrap();
    assert_eq!(mode(&open), 0o700);
}

#[test]
fn precompiled_code_is_refused() {
    let (sandbox, dir) = own_sandbox();
    sandbox.compile(&tool_bytes("echo")).unwrap();
    // Genuine compiled code for this very engine: what a `.cwasm` in a tool repo would be.
    let cwasm = std::fs::read(entry(&dir, "cwasm")).unwrap();
    let outcome = sandbox.compile(&cwasm);
    assert!(
        matches!(outcome, Err(SandboxError::Precompiled { .. })),
        "{outcome:?}"
    );
    let mut elf = b"\x7fELF".to_vec();
    elf.extend_from_slice(&[2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert!(matches!(
        sandbox.compile(&elf),
        Err(SandboxError::Precompiled { .. })
    ));
}

#[test]
fn only_components_are_accepted() {
    let (sandbox, _dir) = own_sandbox();
    let refused: [(&[u8], &str); 5] = [
        (b"\0asm\x01\0\0\0", "a core WebAssembly module"),
        (b"\0asm\x0e\0\x01\0", "an unknown WebAssembly version"),
        (b"(component)", "WebAssembly text"),
        (b"#!/bin/sh\nrm -rf /\n", "not WebAssembly"),
        (b"", "not WebAssembly"),
    ];
    for (bytes, expected) in refused {
        match sandbox.compile(bytes) {
            Err(SandboxError::NotAComponent { found }) => assert_eq!(found, expected),
            other => panic!("{bytes:?}: {other:?}"),
        }
    }
    // A component header with garbage after it is a compile error, not a crash.
    let outcome = sandbox.compile(b"\0asm\x0d\0\x01\0\xff\xff\xff");
    assert!(
        matches!(outcome, Err(SandboxError::Compile(_))),
        "{outcome:?}"
    );
}
