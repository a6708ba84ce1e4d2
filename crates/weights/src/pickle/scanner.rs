//! Observe-mode pickle analysis: what Python would import and call.

use super::Limits;
use crate::scan::Finding;

/// Options of [`scan_pickles`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanOptions {
    /// How many stacked pickle streams to read; `None` reads every stream until the bytes end
    /// or stop looking like a pickle.
    pub max_streams: Option<usize>,
    /// Work bounds, per stream.
    pub limits: Limits,
    /// How deep to recurse into pickles nested in byte-string arguments of calls.
    pub nested_depth: usize,
}

/// What [`scan_pickles`] found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PickleScan {
    /// Every finding, in stream order.
    pub findings: Vec<Finding>,
    /// Streams read (including one that ended in an error).
    pub streams: usize,
    /// Offset after the last successfully decoded `STOP`.
    pub end: usize,
}

/// Scans the stacked pickle streams at the start of `bytes`.
pub fn scan_pickles(bytes: &[u8], options: &ScanOptions) -> PickleScan {
    let _ = (bytes, options);
    PickleScan::default()
}
