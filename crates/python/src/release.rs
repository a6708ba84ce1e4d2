//! Work done with the GIL released: reading files, copying tensors, scanning.
//!
//! Every such section goes through [`without_gil`], which also counts the sections in flight
//! and, for the thread tests only, can hold them at their start ([`testing`](crate::testing)):
//! that is how a test shows, without timing, another Python thread running while a read is in
//! progress.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use pyo3::prelude::*;

use crate::errors::panicked;

/// Sections running now, with the GIL released.
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// Whether sections wait at their start (set only by the thread tests).
static HELD: AtomicBool = AtomicBool::new(false);
static HOLD_LOCK: Mutex<()> = Mutex::new(());
static HOLD_RELEASED: Condvar = Condvar::new();

/// Longest a held section waits: a test whose other thread cannot run (the GIL was not
/// released after all) fails after this instead of hanging.
const LONGEST_HOLD: Duration = Duration::from_secs(60);

/// Runs `work` with the GIL released. A panic inside becomes `safeformers.Error`.
pub(crate) fn without_gil<T, F>(py: Python<'_>, work: F) -> PyResult<T>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    py.detach(|| {
        let _section = InFlight::enter();
        wait_while_held();
        std::panic::catch_unwind(AssertUnwindSafe(work))
    })
    .map_err(panicked)
}

/// Counts one section in flight for as long as it lives.
struct InFlight;

impl InFlight {
    fn enter() -> InFlight {
        IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    }
}

fn wait_while_held() {
    if !HELD.load(Ordering::SeqCst) {
        return;
    }
    let deadline = Instant::now() + LONGEST_HOLD;
    let mut lock = HOLD_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    while HELD.load(Ordering::SeqCst) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        lock = HOLD_RELEASED
            .wait_timeout(lock, left)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
}

/// Makes sections started from now on wait at their start, until [`release_held`].
pub(crate) fn hold() {
    let _lock = HOLD_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    HELD.store(true, Ordering::SeqCst);
}

/// Lets held sections go on.
pub(crate) fn release_held() {
    let _lock = HOLD_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    HELD.store(false, Ordering::SeqCst);
    HOLD_RELEASED.notify_all();
}

/// Sections running now with the GIL released.
pub(crate) fn in_flight() -> usize {
    IN_FLIGHT.load(Ordering::SeqCst)
}
