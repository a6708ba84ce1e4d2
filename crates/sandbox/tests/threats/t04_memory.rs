//! T4: a tool exhausts memory or floods its output. A memory bomb traps at the memory limit and
//! the host carries on; 100 MB written to stdout is kept only up to the cap and the call still
//! succeeds.

use safeformers_sandbox::{Grants, Limits, SandboxError};

use crate::{assert_healthy, call, quick_limits, sandbox, tool};

#[test]
fn a_memory_bomb_stops_at_the_memory_limit() {
    let limits = Limits {
        memory_bytes: 16 << 20,
        ..quick_limits()
    };
    let outcome = call(
        &sandbox(),
        &tool("memory_bomb"),
        &Grants::default(),
        &limits,
        "{}",
    );
    assert!(
        matches!(outcome, Err(SandboxError::MemoryLimit { limit }) if limit == 16 << 20),
        "{outcome:?}"
    );
    assert_healthy();
}

#[test]
fn a_stdout_flood_is_capped_and_the_call_succeeds() {
    let limits = quick_limits();
    let output = call(
        &sandbox(),
        &tool("stdout_flood"),
        &Grants::default(),
        &limits,
        "{}",
    )
    .expect("the flood finishes");
    assert_eq!(output.result, Ok("flooded".to_owned()));
    assert_eq!(output.stdout.len(), limits.stdio_bytes);
    assert!(output.stdout.iter().all(|&byte| byte == b'o'));
    assert_eq!(output.stderr.len(), limits.stdio_bytes);
    assert!(output.stderr.iter().all(|&byte| byte == b'e'));
}
