//! A review of Python source (`.py` files in a model repo, the "remote code" that Transformers
//! would run under `trust_remote_code=True`), done by parsing, never by running it.
//!
//! The file is parsed with ruff's parser (the current CPython grammar), then walked: every
//! import is listed, and imports, calls, URL literals and `trust_remote_code=True` that reach
//! outside the model's own computation are reported at their line. This is a review aid, not
//! proof of safety: a denylist is bypassed by code written to bypass it.
//!
//! Bounded on every input: file size, nesting (checked on tokens before the parser, which
//! recurses, sees the file), a walk depth, a wall-clock limit and a cap on the findings listed.

mod modules;
mod nesting;
mod review;

use std::sync::mpsc;
use std::time::Duration;

use ruff_python_ast::visitor::Visitor;
use serde::Serialize;
use sha2::{Digest, Sha256};

pub use nesting::NestingError;

use crate::scan::{Finding, Severity};
use review::{LineIndex, Reviewer, note_import_time_code};

/// What every Python review says about itself, in text and JSON alike.
pub const REVIEW_NOTICE: &str = "a review aid, not proof of safety: the code was parsed, never \
    run, and checked against a list of risky imports and calls that determined code can evade; \
    read it before trusting it";

/// The bounds of one review.
#[derive(Debug, Clone)]
pub struct ReviewLimits {
    /// Largest file reviewed; larger is `invalid`.
    pub max_file_bytes: usize,
    /// Most brackets open at once (CPython's own limit is 200).
    pub max_bracket_depth: usize,
    /// Most indentation levels (CPython's own limit is 100).
    pub max_indent_depth: usize,
    /// Most operators and keywords chained in one expression between commas.
    pub max_expression_depth: usize,
    /// Most findings listed per file; the rest are counted.
    pub max_findings: usize,
    /// Wall-clock limit of one review.
    pub time_limit: Duration,
}

impl Default for ReviewLimits {
    fn default() -> ReviewLimits {
        ReviewLimits {
            max_file_bytes: 4 * 1024 * 1024,
            max_bracket_depth: 200,
            max_indent_depth: 100,
            max_expression_depth: 1000,
            max_findings: 500,
            time_limit: Duration::from_secs(20),
        }
    }
}

/// The stack of the thread that parses and walks: the parser recurses about once per nesting
/// level, a few kilobytes each; the nesting check keeps levels to a few thousand at most.
const REVIEW_STACK_BYTES: usize = 256 * 1024 * 1024;

/// One imported module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PythonImport {
    /// The module as written (`os.path`, `.configuration_foo` for relative imports).
    pub module: String,
    /// 1-based line of the import.
    pub line: u32,
    /// What it gives access to, when it is a module the review flags (`"network"`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<&'static str>,
}

/// The review of one Python file.
#[derive(Debug, Clone)]
pub struct PythonReview {
    /// sha256 of the file's bytes, lowercase hex.
    pub sha256: String,
    /// What the review reports, in source order (capped at [`ReviewLimits::max_findings`],
    /// most severe kept, with one finding counting the rest).
    pub findings: Vec<Finding>,
    /// Every module the file imports, in source order.
    pub imports: Vec<PythonImport>,
    /// Whether the file could not be reviewed (too large, not UTF-8, a syntax error, too deep,
    /// too slow); such a file is never `safe`.
    pub invalid: bool,
}

/// Reviews the bytes of one Python file.
pub fn review_python(bytes: &[u8], limits: &ReviewLimits) -> PythonReview {
    let sha256 = hex(&Sha256::digest(bytes));
    let outcome = review_bounded(bytes, limits);
    let (mut findings, imports, invalid) = match outcome {
        Ok(reviewed) => (
            reviewed.findings,
            reviewed.imports,
            reviewed.too_deep.is_some(),
        ),
        Err(finding) => (vec![finding], Vec::new(), true),
    };
    cap_findings(&mut findings, limits.max_findings);
    PythonReview {
        sha256,
        findings,
        imports,
        invalid,
    }
}

struct Reviewed {
    findings: Vec<Finding>,
    imports: Vec<PythonImport>,
    /// Set when the walk stopped at its depth limit.
    too_deep: Option<usize>,
}

/// The checks before parsing, then the parse and walk on a thread of its own (for its stack and
/// the time limit). An `Err` is the one finding that says why the file is invalid.
fn review_bounded(bytes: &[u8], limits: &ReviewLimits) -> Result<Reviewed, Finding> {
    if bytes.len() > limits.max_file_bytes {
        return Err(invalid(
            "python_too_large",
            format!(
                "{} bytes, more than the {} a review reads",
                bytes.len(),
                limits.max_file_bytes
            ),
        ));
    }
    // Python accepts a UTF-8 byte-order mark and nothing else but UTF-8 without a coding line.
    let text = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    let source = match std::str::from_utf8(text) {
        Ok(source) => source.to_owned(),
        Err(error) => {
            let line = text.get(..error.valid_up_to()).map_or(0, |valid| {
                valid.iter().filter(|byte| **byte == b'\n').count()
            });
            return Err(invalid(
                "python_not_utf8",
                format!("not UTF-8 at byte {}", error.valid_up_to()),
            )
            .at(u32::try_from(line + 1).unwrap_or(u32::MAX), 0));
        }
    };
    let (sender, receiver) = mpsc::channel();
    let thread_limits = limits.clone();
    let spawned = std::thread::Builder::new()
        .name("python-review".to_owned())
        .stack_size(REVIEW_STACK_BYTES)
        .spawn(move || {
            // The receiver may have given up (time limit): nothing to do about a failed send.
            let _ = sender.send(review_source(&source, &thread_limits));
        });
    if let Err(error) = spawned {
        return Err(invalid(
            "python_review_failed",
            format!("could not start the review: {error}"),
        ));
    }
    match receiver.recv_timeout(limits.time_limit) {
        Ok(result) => result,
        Err(mpsc::RecvTimeoutError::Timeout) => Err(invalid(
            "python_review_timeout",
            format!("the review took longer than {:?}", limits.time_limit),
        )),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(invalid(
            "python_review_failed",
            "the review stopped without a result".to_owned(),
        )),
    }
}

fn review_source(source: &str, limits: &ReviewLimits) -> Result<Reviewed, Finding> {
    nesting::check_nesting(source, limits)
        .map_err(|error| invalid("python_too_deep", error.to_string()))?;
    let lines = LineIndex::new(source);
    let parsed = ruff_python_parser::parse_module(source).map_err(|error| {
        let (line, column) = lines.position(error.location.start().to_usize());
        invalid(
            "python_syntax_error",
            format!("syntax error: {}", error.error),
        )
        .at(line, column)
    })?;
    let module = parsed.syntax();
    // Every level of the tree the token check allowed, and a margin.
    let max_depth = limits.max_expression_depth
        + limits.max_bracket_depth * 2
        + limits.max_indent_depth * 2
        + 64;
    let mut reviewer = Reviewer::new(&lines, max_depth);
    for stmt in &module.body {
        reviewer.visit_stmt(stmt);
    }
    let mut findings = reviewer.findings;
    note_import_time_code(&module.body, &lines, &mut findings);
    findings.sort_by_key(|finding| (finding.line, finding.column));
    let too_deep = reviewer.too_deep.then_some(max_depth);
    if let Some(depth) = too_deep {
        findings.push(invalid(
            "python_too_deep",
            format!("the syntax tree nests deeper than {depth}; not reviewed past that"),
        ));
    }
    Ok(Reviewed {
        findings,
        imports: reviewer.imports,
        too_deep,
    })
}

fn invalid(kind: &str, detail: String) -> Finding {
    Finding::new(Severity::Info, kind, detail)
}

/// Keeps the `max` most severe findings (in source order within a severity) and counts the rest.
fn cap_findings(findings: &mut Vec<Finding>, max: usize) {
    if findings.len() <= max {
        return;
    }
    findings.sort_by_key(|finding| std::cmp::Reverse(finding.severity));
    let rest = findings.split_off(max);
    let count = |severity| rest.iter().filter(|f| f.severity == severity).count();
    let (dangerous, suspicious) = (count(Severity::Dangerous), count(Severity::Suspicious));
    findings.push(Finding::new(
        Severity::Info,
        "findings_not_listed",
        format!(
            "{} more findings not listed ({dangerous} dangerous, {suspicious} suspicious)",
            rest.len()
        ),
    ));
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut text, byte| {
        let _ = write!(text, "{byte:02x}");
        text
    })
}

/// Whether a file of this name (or starting with this shebang) is Python source. Python has no
/// magic number: `.py` (and `.pyw`, `.pyi`) names it, and so does a `#!` line naming python.
pub fn looks_like_python(path: Option<&std::path::Path>, bytes: &[u8]) -> bool {
    let named = path
        .and_then(|path| path.extension())
        .and_then(|extension| extension.to_str())
        .is_some_and(|extension| {
            matches!(
                extension.to_ascii_lowercase().as_str(),
                "py" | "pyw" | "pyi"
            )
        });
    let first_line = bytes.split(|byte| *byte == b'\n').next().unwrap_or(&[]);
    let shebang =
        first_line.starts_with(b"#!") && first_line.windows(6).any(|window| window == b"python");
    named || shebang
}
