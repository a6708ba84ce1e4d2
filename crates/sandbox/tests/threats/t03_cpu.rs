//! T3: a tool burns CPU or hangs. An infinite loop is stopped by fuel and, with fuel to spare,
//! by the epoch deadline; a tool blocked in a host call (a 60 s sleep, opening a FIFO nobody
//! writes) is stopped at the deadline too. Each bound is below the caller's last-resort
//! watchdog (wall + 2 s), so removing the defence under test fails its test.

use std::time::{Duration, Instant};

use safeformers_sandbox::{FsGrant, Grants, Limits, SandboxError};

use crate::{assert_healthy, call, json, sandbox, tool};

const WALL: Duration = Duration::from_millis(300);
/// Deadline + scheduling slack on a busy 2-core machine, but under wall + 2 s (the watchdog).
const STOPPED_WITHIN: Duration = Duration::from_secs(2);

fn short_wall(fuel: u64) -> Limits {
    Limits {
        fuel,
        wall: WALL,
        ..Limits::DEFAULT
    }
}

#[test]
fn fuel_stops_an_infinite_loop() {
    let limits = Limits {
        fuel: 1_000_000,
        ..Limits::DEFAULT
    };
    let started = Instant::now();
    let outcome = call(&sandbox(), &tool("spin"), &Grants::default(), &limits, "{}");
    assert!(
        matches!(outcome, Err(SandboxError::OutOfFuel { fuel: 1_000_000 })),
        "{outcome:?}"
    );
    assert!(
        started.elapsed() < STOPPED_WITHIN,
        "{:?}",
        started.elapsed()
    );
    assert_healthy();
}

#[test]
fn the_epoch_deadline_stops_an_infinite_loop() {
    let started = Instant::now();
    let limits = short_wall(Limits::HARD_MAX.fuel);
    let outcome = call(&sandbox(), &tool("spin"), &Grants::default(), &limits, "{}");
    let elapsed = started.elapsed();
    assert!(
        matches!(outcome, Err(SandboxError::Deadline { .. })),
        "{outcome:?}"
    );
    assert!(elapsed >= WALL && elapsed < STOPPED_WITHIN, "{elapsed:?}");
    assert_healthy();
}

#[test]
fn the_deadline_stops_a_tool_sleeping_in_a_host_call() {
    let started = Instant::now();
    let limits = short_wall(Limits::DEFAULT.fuel);
    let outcome = call(
        &sandbox(),
        &tool("sleep"),
        &Grants::default(),
        &limits,
        "{}",
    );
    let elapsed = started.elapsed();
    assert!(
        matches!(outcome, Err(SandboxError::Deadline { .. })),
        "{outcome:?}"
    );
    assert!(elapsed >= WALL && elapsed < STOPPED_WITHIN, "{elapsed:?}");
    assert_healthy();
}

#[test]
fn the_deadline_stops_a_tool_blocked_opening_a_fifo() {
    let dir = safeformers_testkit::scratch_dir("sandbox-t3-fifo");
    safeformers_testkit::make_fifo(&dir.join("pipe"));
    let grants = Grants {
        fs: vec![FsGrant {
            guest: "/data".to_owned(),
            host: dir,
            writable: false,
        }],
        ..Grants::default()
    };
    let started = Instant::now();
    let limits = short_wall(Limits::DEFAULT.fuel);
    let outcome = call(
        &sandbox(),
        &tool("read_file"),
        &grants,
        &limits,
        &json("path", "/data/pipe"),
    );
    let elapsed = started.elapsed();
    assert!(
        matches!(outcome, Err(SandboxError::Deadline { .. })),
        "{outcome:?}"
    );
    assert!(elapsed < STOPPED_WITHIN, "{elapsed:?}");
    assert_healthy();
}
