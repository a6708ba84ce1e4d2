//! The exceptions Python sees, and the boundary every call crosses.
//!
//! Library errors become [`PolicyError`] (what the CLI exits 3 for) or [`FormatError`] (exit 1)
//! with the message the CLI prints after `error: `, on one line. A Rust panic never reaches
//! Python as pyo3's `PanicException` (a `BaseException` that `except Exception` misses): every
//! entry point runs under [`guard`], which turns it into [`Error`].

use std::any::Any;
use std::panic::AssertUnwindSafe;

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

create_exception!(
    safeformers,
    Error,
    PyException,
    "Base class of every error safeformers raises."
);
create_exception!(
    safeformers,
    PolicyError,
    Error,
    "Refused by security policy (what the safeformers CLI exits 3 for): pickle-based weights \
     without allow_pickle, a global outside the allowlist, a forbidden opcode, TorchScript code."
);
create_exception!(
    safeformers,
    FormatError,
    Error,
    "Input that could not be read (what the safeformers CLI exits 1 for): a missing or \
     unreadable file, a malformed safetensors header, zip or pickle, a tensor outside its file."
);

/// The Python exception for a weights error, with the CLI's one-line message.
pub(crate) fn weights_error(error: &safeformers_weights::Error) -> PyErr {
    library_error(error, error.is_policy_refusal())
}

/// The Python exception for an error of any safeformers library, told apart as the CLI tells
/// them apart (`crates/cli/src/main.rs`: the library's `is_policy_refusal` means exit 3).
pub(crate) fn library_error(error: &dyn std::fmt::Display, policy_refusal: bool) -> PyErr {
    let message = one_line(&error.to_string());
    if policy_refusal {
        PolicyError::new_err(message)
    } else {
        FormatError::new_err(message)
    }
}

/// A message on one line, as the CLI prints it (`crates/cli/src/main.rs`, `one_line`), with
/// the options it suggests spelled as Python keyword arguments (`allow_pickle=True`, not
/// `--allow-pickle`).
pub(crate) fn one_line(message: &str) -> String {
    PYTHON_SPELLINGS
        .iter()
        .fold(message.replace('\n', " "), |text, (flag, keyword)| {
            text.replace(flag, keyword)
        })
}

/// The CLI flags library messages suggest, and their keyword arguments in the Python API.
const PYTHON_SPELLINGS: [(&str, &str); 7] = [
    ("--allow-pickle", "allow_pickle=True"),
    ("--truncate", "truncate=True"),
    ("--locked", "locked=True"),
    ("--offline", "offline=True"),
    ("--gguf-file NAME", "gguf_file=NAME"),
    ("--dtype", "dtype"),
    ("--quantize", "quantize"),
];

/// Runs `body`, turning a panic into [`Error`]: the boundary of every function Python calls.
pub(crate) fn guard<T>(body: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    std::panic::catch_unwind(AssertUnwindSafe(body))
        .unwrap_or_else(|payload| Err(panicked(payload)))
}

/// The [`Error`] a caught panic becomes.
pub(crate) fn panicked(payload: Box<dyn Any + Send>) -> PyErr {
    let what = payload
        .downcast_ref::<&str>()
        .map(|message| (*message).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string());
    Error::new_err(format!(
        "internal error in safeformers (a bug; please report it): {}",
        one_line(&what)
    ))
}
