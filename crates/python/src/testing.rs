//! `safeformers._native._testing`: hooks for the package's own tests, not an API.
//!
//! - `hold_released_sections()` / `release_held_sections()` / `released_sections_in_flight()`:
//!   a test makes GIL-released work wait at its start, sees from another Python thread that it
//!   is in flight, then lets it go, which shows the GIL is released without timing anything.
//! - `panic(message, without_gil)`: a Rust panic at the boundary, to show it arrives as
//!   `safeformers.Error`.

use pyo3::prelude::*;

use crate::errors::guard;
use crate::release;

/// Makes GIL-released sections started from now on wait at their start (for at most 60 s)
/// until `release_held_sections()`.
#[pyfunction]
fn hold_released_sections() {
    release::hold();
}

/// Lets held sections go on.
#[pyfunction]
fn release_held_sections() {
    release::release_held();
}

/// How many GIL-released sections are running (or held) now.
#[pyfunction]
fn released_sections_in_flight() -> usize {
    release::in_flight()
}

/// Panics with `message`, with the GIL held or released.
#[pyfunction]
#[pyo3(signature = (message, *, without_gil = false))]
#[allow(clippy::panic, reason = "a panic is what this test hook is for")]
fn panic(py: Python<'_>, message: String, without_gil: bool) -> PyResult<()> {
    guard(|| {
        if without_gil {
            release::without_gil(py, move || panic!("{message}"))
        } else {
            panic!("{message}")
        }
    })
}

/// The `_testing` submodule.
pub(crate) fn module(py: Python<'_>) -> PyResult<Bound<'_, PyModule>> {
    let module = PyModule::new(py, "_testing")?;
    module.add_function(wrap_pyfunction!(hold_released_sections, &module)?)?;
    module.add_function(wrap_pyfunction!(release_held_sections, &module)?)?;
    module.add_function(wrap_pyfunction!(released_sections_in_flight, &module)?)?;
    module.add_function(wrap_pyfunction!(panic, &module)?)?;
    Ok(module)
}
