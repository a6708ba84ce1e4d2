//! `safeformers.scan`: the report of `safeformers scan --json`, for Python to wrap in objects.

use std::path::PathBuf;

use pyo3::prelude::*;
use safeformers_weights::scan::scan_paths;

use crate::errors::{Error, guard};
use crate::release::without_gil;

/// Scans files and folders (recursively) as `safeformers scan --json PATH...` does, with the GIL
/// released, and returns the same JSON text: `{"files": [{"path", "format", "verdict",
/// "findings", ...}]}`. Nothing is executed.
#[pyfunction]
pub(crate) fn scan_json(py: Python<'_>, paths: Vec<PathBuf>) -> PyResult<String> {
    guard(|| {
        let report = without_gil(py, move || scan_paths(&paths))?;
        serde_json::to_string(&report)
            .map_err(|error| Error::new_err(format!("scan report as JSON: {error}")))
    })
}
