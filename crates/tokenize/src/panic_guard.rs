//! Panics of the libraries we call (`tokenizers`, `minijinja`) on hostile input, caught and
//! turned into errors without a word on stderr.
//!
//! `catch_unwind` stops a panic, but the process's panic hook has already printed
//! "thread ... panicked at ..." by then. [`catch_quietly`] marks the current thread as inside a
//! catch zone; the hook installed (once) by this module stays silent for a thread so marked
//! and hands every other panic to the hook that was installed before it. The mark is per
//! thread: each zone is entered on the thread that runs the closure (a rayon worker, for
//! batch encoding), never inherited from the caller.

use std::any::Any;
use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Once;

thread_local! {
    /// How many catch zones the current thread is inside (zones nest).
    static CATCH_ZONE_DEPTH: Cell<usize> = const { Cell::new(0) };
}

static INSTALL_HOOK: Once = Once::new();

/// Leaves the zone when dropped, on the normal path and after a caught panic alike.
struct ZoneGuard;

impl ZoneGuard {
    fn enter() -> Self {
        CATCH_ZONE_DEPTH.with(|depth| depth.set(depth.get().saturating_add(1)));
        ZoneGuard
    }
}

impl Drop for ZoneGuard {
    fn drop(&mut self) {
        CATCH_ZONE_DEPTH.with(|depth| depth.set(depth.get().saturating_sub(1)));
    }
}

fn install_hook() {
    INSTALL_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if CATCH_ZONE_DEPTH.with(Cell::get) == 0 {
                previous(info);
            }
        }));
    });
}

/// Runs `f`, catching a panic silently: it is returned as its payload, for the caller to turn
/// into an error that says what failed (see [`panic_message`]).
pub(crate) fn catch_quietly<R>(f: impl FnOnce() -> R) -> Result<R, Box<dyn Any + Send>> {
    install_hook();
    let _zone = ZoneGuard::enter();
    catch_unwind(AssertUnwindSafe(f))
}

/// The message of a panic payload (`panic!` gives a `&str` or a `String`).
pub(crate) fn panic_text(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// An error message for a panic of the `tokenizers` library while doing `what`.
pub(crate) fn panic_message(what: &str, payload: &(dyn Any + Send)) -> String {
    format!(
        "the tokenizers library failed while {what} (internal error: {})",
        panic_text(payload)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHILD: &str = "SAFEFORMERS_PANIC_GUARD_CHILD";

    /// Run in a child process (the hook is process-wide): panics caught in zones on rayon
    /// workers print nothing; a panic outside any zone still reaches the previous hook.
    #[test]
    fn panics_caught_on_rayon_workers_print_nothing_and_others_still_do() {
        use rayon::prelude::*;
        if std::env::var_os(CHILD).is_some() {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(2)
                .build()
                .unwrap();
            let caught = pool.install(|| {
                (0..16)
                    .into_par_iter()
                    .map(|i| catch_quietly(|| -> usize { panic!("quiet panic {i}") }).is_err())
                    .filter(|&caught| caught)
                    .count()
            });
            assert_eq!(caught, 16);
            let outside = std::thread::spawn(|| panic!("loud panic outside a zone")).join();
            assert!(outside.is_err());
            return;
        }
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new(exe)
            .args([
                "--exact",
                "panic_guard::tests::panics_caught_on_rayon_workers_print_nothing_and_others_still_do",
                "--nocapture",
            ])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(!stderr.contains("quiet panic"), "{stderr}");
        assert!(stderr.contains("loud panic outside a zone"), "{stderr}");
    }

    #[test]
    fn a_caught_panic_comes_back_as_its_message_and_the_zone_is_left() {
        let caught = catch_quietly(|| -> u32 { panic!("boom") });
        let payload = caught.err().map(|p| panic_text(p.as_ref()).to_owned());
        assert_eq!(payload.as_deref(), Some("boom"));
        assert_eq!(CATCH_ZONE_DEPTH.with(Cell::get), 0);
        assert_eq!(catch_quietly(|| 7).ok(), Some(7));
    }
}
