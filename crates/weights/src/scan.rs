//! `safeformers scan`: what each file is, and what loading it would have done.

use serde::Serialize;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Context, not a problem (`"legacy PyTorch checkpoint"`).
    Info,
    /// Not known to be dangerous, but outside what a plain weights file contains, or a
    /// structural trick that parsers disagree on.
    Suspicious,
    /// Would import or call something outside the allowlist, or hides content from other tools.
    Dangerous,
}

/// One thing the scanner noticed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// How bad it is.
    pub severity: Severity,
    /// A stable, snake_case identifier of the kind of finding (`"import"`, `"call"`,
    /// `"trailing_data"`, `"frame_violation"`, `"zip_duplicate_name"`, ...).
    pub kind: String,
    /// What exactly, and where (`"posix.system"`, `"offset 1234: ..."`).
    pub detail: String,
}

impl Finding {
    /// A finding of the given severity and kind.
    pub fn new(severity: Severity, kind: impl Into<String>, detail: impl Into<String>) -> Finding {
        Finding {
            severity,
            kind: kind.into(),
            detail: detail.into(),
        }
    }
}
