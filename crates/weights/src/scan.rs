//! `safeformers scan`: what each file is, and what loading it would have done.
//!
//! The format of every file is decided by content ([`detect_format`]). Pickles are analysed by
//! the same opcode decoder the loader uses ([`crate::pickle::scanner`]), zips by the lenient side
//! of the same zip reader ([`crate::zip::inspect`]), and PyTorch checkpoints are then re-read by
//! the strict loader, so `scan` can never call safe what `inspect --allow-pickle` would refuse.
//! Python source, which has no magic number, is recognised by its `.py` name (or a python `#!`
//! line) when its content is no binary format, and reviewed by parsing ([`crate::python`]).
//! Nothing is ever executed.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::Error;
use crate::format::{FileFormat, detect_format};
use crate::mapped::MappedFile;
use crate::pickle::scanner::{ScanOptions, scan_pickles};

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
    /// 1-based line in a source file (Python reviews), when the finding has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    /// 1-based column (in characters) on that line, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<u32>,
}

impl Finding {
    /// A finding of the given severity and kind.
    pub fn new(severity: Severity, kind: impl Into<String>, detail: impl Into<String>) -> Finding {
        Finding {
            severity,
            kind: kind.into(),
            detail: detail.into(),
            line: None,
            column: None,
        }
    }

    /// The same finding at a 1-based line and column of a source file (column 0: unknown).
    pub fn at(mut self, line: u32, column: u32) -> Finding {
        self.line = Some(line);
        self.column = (column > 0).then_some(column);
        self
    }
}

/// The verdict on one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Nothing unsafe or invalid found: loading it runs no code and the reader accepts it.
    Safe,
    /// Something outside the allowlist, or a structural trick, was found.
    Unsafe,
    /// The file is malformed (our loaders would refuse it), with nothing dangerous seen.
    Invalid,
}

impl Verdict {
    /// `"safe"`, `"unsafe"` or `"invalid"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Safe => "safe",
            Verdict::Unsafe => "unsafe",
            Verdict::Invalid => "invalid",
        }
    }
}

/// The scan of one file.
#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    /// The file, as reached from the paths given.
    pub path: String,
    /// Its format, detected by content.
    #[serde(serialize_with = "serialize_format")]
    pub format: FileFormat,
    /// The verdict.
    pub verdict: Verdict,
    /// Everything noticed, most severe first.
    pub findings: Vec<Finding>,
    /// sha256 of the file (Python source: the hash to pin or compare the reviewed code by).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Every module a Python file imports, flagged or not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub imports: Option<Vec<crate::python::PythonImport>>,
    /// What the verdict on a Python file does not promise ([`crate::python::REVIEW_NOTICE`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notice: Option<&'static str>,
}

fn serialize_format<S: serde::Serializer>(
    format: &FileFormat,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(format.json_name())
}

/// The scan of every file reached from the paths given.
#[derive(Debug, Clone, Serialize)]
pub struct ScanReport {
    /// One report per file, in the order reached (folders sorted by name).
    pub files: Vec<FileReport>,
}

/// Deepest folder nesting `scan` descends into.
const MAX_SCAN_DEPTH: usize = 64;

/// Scans files and folders (recursively; symlinked folders are not followed, symlinked files are,
/// since a Hugging Face cache snapshot is made of them).
pub fn scan_paths(paths: &[PathBuf]) -> ScanReport {
    let mut files = Vec::new();
    for path in paths {
        walk(path, 0, &mut files);
    }
    ScanReport { files }
}

fn walk(path: &Path, depth: usize, files: &mut Vec<FileReport>) {
    let is_real_dir = std::fs::symlink_metadata(path).is_ok_and(|meta| meta.is_dir());
    if !is_real_dir {
        files.push(scan_file(path));
        return;
    }
    if depth >= MAX_SCAN_DEPTH {
        files.push(unreadable(
            path,
            format!("folder nesting deeper than {MAX_SCAN_DEPTH}"),
        ));
        return;
    }
    let entries = match std::fs::read_dir(path) {
        Ok(entries) => entries,
        Err(error) => {
            files.push(unreadable(path, error.to_string()));
            return;
        }
    };
    let mut children: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.path())
        .collect();
    children.sort();
    for child in children {
        let is_symlinked_dir = std::fs::symlink_metadata(&child)
            .is_ok_and(|meta| meta.file_type().is_symlink())
            && std::fs::metadata(&child).is_ok_and(|meta| meta.is_dir());
        if is_symlinked_dir {
            files.push(FileReport {
                path: child.display().to_string(),
                format: FileFormat::Unknown,
                verdict: Verdict::Safe,
                findings: vec![Finding::new(
                    Severity::Info,
                    "symlinked_folder_skipped",
                    "a symlink to a folder; not followed",
                )],
                sha256: None,
                imports: None,
                notice: None,
            });
            continue;
        }
        walk(&child, depth + 1, files);
    }
}

fn unreadable(path: &Path, reason: String) -> FileReport {
    invalid_report(path, "unreadable", reason)
}

/// An `invalid` report of a file that could not be scanned, with one finding of `kind`.
fn invalid_report(path: &Path, kind: &str, reason: String) -> FileReport {
    FileReport {
        path: path.display().to_string(),
        format: FileFormat::Unknown,
        verdict: Verdict::Invalid,
        findings: vec![Finding::new(Severity::Info, kind, reason)],
        sha256: None,
        imports: None,
        notice: None,
    }
}

/// Scans one file.
pub fn scan_file(path: &Path) -> FileReport {
    let file = match MappedFile::open(path) {
        Ok(file) => file,
        // A FIFO, a device, a socket: reported and never opened (or waited on).
        Err(Error::File(error @ safeformers_files::FileError::NotRegular { .. })) => {
            return invalid_report(path, "not_a_regular_file", error.to_string());
        }
        Err(error) => return unreadable(path, error.to_string()),
    };
    let bytes = file.bytes();
    if is_python_source(bytes, Some(path)) {
        return python_report(path, bytes);
    }
    let (format, mut findings, invalid) = scan_bytes(bytes, Some(path));
    findings.sort_by_key(|finding| std::cmp::Reverse(finding.severity));
    let verdict = verdict_of(&findings, invalid);
    FileReport {
        path: path.display().to_string(),
        format,
        verdict,
        findings,
        sha256: None,
        imports: None,
        notice: None,
    }
}

/// Python source: no binary format by content, and named `.py` (or with a python `#!` line).
fn is_python_source(bytes: &[u8], path: Option<&Path>) -> bool {
    detect_format(bytes) == FileFormat::Unknown && crate::python::looks_like_python(path, bytes)
}

fn python_report(path: &Path, bytes: &[u8]) -> FileReport {
    let mut review = crate::python::review_python(bytes, &crate::python::ReviewLimits::default());
    review
        .findings
        .sort_by_key(|finding| std::cmp::Reverse(finding.severity));
    FileReport {
        path: path.display().to_string(),
        format: FileFormat::Python,
        verdict: verdict_of(&review.findings, review.invalid),
        findings: review.findings,
        sha256: Some(review.sha256),
        imports: Some(review.imports),
        notice: Some(crate::python::REVIEW_NOTICE),
    }
}

fn verdict_of(findings: &[Finding], invalid: bool) -> Verdict {
    if findings
        .iter()
        .any(|finding| finding.severity >= Severity::Suspicious)
    {
        Verdict::Unsafe
    } else if invalid {
        Verdict::Invalid
    } else {
        Verdict::Safe
    }
}

/// Scans the bytes of one file: its format, the findings, and whether it is malformed.
/// `path` (when known) lets the strict loaders re-validate PyTorch checkpoints.
pub fn scan_bytes(bytes: &[u8], path: Option<&Path>) -> (FileFormat, Vec<Finding>, bool) {
    if is_python_source(bytes, path) {
        let review = crate::python::review_python(bytes, &crate::python::ReviewLimits::default());
        return (FileFormat::Python, review.findings, review.invalid);
    }
    let format = detect_format(bytes);
    let mut findings = Vec::new();
    let mut invalid = false;
    match format {
        FileFormat::Safetensors => match crate::safetensors::parse_header(bytes) {
            Ok(header) => {
                findings.push(Finding::new(
                    Severity::Info,
                    "safetensors",
                    format!(
                        "{} tensors; data-only format, nothing to execute",
                        header.tensors().len()
                    ),
                ));
                let misaligned = header
                    .tensors()
                    .iter()
                    .filter(|tensor| !tensor.is_aligned_in_file())
                    .count();
                if misaligned > 0 {
                    findings.push(Finding::new(
                        Severity::Info,
                        "misaligned_tensors",
                        format!(
                            "{misaligned} tensor(s) not aligned to their element size in the \
                             file; loads read them through an aligned copy"
                        ),
                    ));
                }
            }
            Err(error) => {
                invalid = true;
                findings.push(Finding::new(
                    Severity::Info,
                    "invalid_safetensors",
                    error.to_string(),
                ));
            }
        },
        FileFormat::Pickle => {
            let scan = scan_pickles(bytes, &ScanOptions::default());
            invalid |= scan.findings.iter().any(is_malformation);
            findings.extend(scan.findings);
        }
        FileFormat::PytorchLegacy => {
            findings.push(Finding::new(
                Severity::Info,
                "pytorch_legacy",
                "legacy PyTorch checkpoint: stacked pickles followed by raw storages",
            ));
            let options = ScanOptions {
                max_streams: Some(LEGACY_PICKLE_COUNT),
                ..ScanOptions::default()
            };
            // Five stacked pickles are what this format is; only other findings are news.
            findings.extend(
                scan_pickles(bytes, &options)
                    .findings
                    .into_iter()
                    .filter(|finding| finding.kind != "stacked_pickle"),
            );
            invalid |= check_with_loader(path, &mut findings);
        }
        FileFormat::PytorchZip | FileFormat::Zip => {
            invalid |= scan_zip(bytes, &mut findings);
            if format == FileFormat::PytorchZip {
                invalid |= check_with_loader(path, &mut findings);
            }
        }
        FileFormat::Gguf => invalid |= scan_gguf(bytes, &mut findings),
        // Decided above, by name: detect_format never returns it.
        FileFormat::Python => {}
        FileFormat::Unknown => match path.filter(|_| looks_like_shard_index(bytes)) {
            Some(index) => invalid |= check_shard_index(index, &mut findings),
            None => {
                let unknown = scan_unknown(bytes);
                let only_informational = unknown
                    .iter()
                    .all(|finding| finding.severity == Severity::Info);
                findings.extend(unknown);
                if only_informational && path.is_some_and(named_like_weights) {
                    // The content decides the format, but a file that calls itself weights and
                    // is not is broken (or disguised), never "safe to load".
                    invalid = true;
                    findings.push(Finding::new(
                        Severity::Info,
                        "not_a_weights_file",
                        "named like a weights file, but its content is no weights format",
                    ));
                }
            }
        },
    }
    (format, findings, invalid)
}

/// Records why a GGUF file is invalid; returns true (invalid).
fn invalid_gguf(findings: &mut Vec<Finding>, error: crate::gguf::GgufError) -> bool {
    findings.push(Finding::new(
        Severity::Info,
        "invalid_gguf",
        error.to_string(),
    ));
    true
}

/// Validates a GGUF file with the strict reader and reports its tensor types and whether it
/// carries a chat template. Returns whether it is invalid.
fn scan_gguf(bytes: &[u8], findings: &mut Vec<Finding>) -> bool {
    let header = match crate::gguf::parse_header(bytes) {
        Ok(header) => header,
        Err(error) => return invalid_gguf(findings, error),
    };
    let types: Vec<String> = header
        .type_counts()
        .iter()
        .map(|(ggml_type, count)| format!("{ggml_type} x{count}"))
        .collect();
    findings.push(Finding::new(
        Severity::Info,
        "gguf",
        format!(
            "GGUF v{}: {} tensors ({}), {} metadata keys; data-only format, nothing to execute",
            header.version(),
            header.tensors().len(),
            types.join(", "),
            header.metadata().len()
        ),
    ));
    match header.chat_template() {
        Ok(Some(template)) => findings.push(Finding::new(
            Severity::Info,
            "chat_template",
            format!(
                "`{}` holds a {}-byte Jinja chat template; safeformers renders it only in its \
                 template sandbox",
                crate::gguf::CHAT_TEMPLATE_KEY,
                template.len()
            ),
        )),
        Ok(None) => {}
        Err(error) => return invalid_gguf(findings, error),
    }
    false
}

/// File extensions of weights formats; used only to call a file that claims to be weights but
/// is not "invalid" rather than "safe" (the format itself is always decided by content).
const WEIGHTS_EXTENSIONS: [&str; 9] = [
    "safetensors",
    "bin",
    "pt",
    "pth",
    "ckpt",
    "pkl",
    "pickle",
    "gguf",
    "npz",
];

fn named_like_weights(path: &Path) -> bool {
    path.extension()
        .and_then(|extension| extension.to_str())
        .is_some_and(|extension| {
            WEIGHTS_EXTENSIONS.contains(&extension.to_ascii_lowercase().as_str())
        })
}

/// The legacy format has five pickles before its raw storages.
const LEGACY_PICKLE_COUNT: usize = 5;

/// Runs the strict PyTorch loader (with pickle allowed: the scan's question is what loading
/// would do, not whether the policy allows it) and records why it refuses, if it does.
/// Returns whether the file is malformed.
fn check_with_loader(path: Option<&Path>, findings: &mut Vec<Finding>) -> bool {
    let Some(path) = path else { return false };
    match crate::torch::open(path) {
        Ok(checkpoint) => {
            findings.push(Finding::new(
                Severity::Info,
                "checkpoint",
                format!(
                    "{} tensors; loads with the restricted unpickler",
                    checkpoint.len()
                ),
            ));
            false
        }
        Err(error) if error.is_policy_refusal() => {
            // The pickle scan above already names what was refused; keep the loader's words too.
            findings.push(Finding::new(
                Severity::Dangerous,
                "refused_by_loader",
                error.to_string(),
            ));
            false
        }
        Err(error) => {
            findings.push(Finding::new(
                Severity::Info,
                "invalid_checkpoint",
                error.to_string(),
            ));
            true
        }
    }
}

/// Magic numbers of containers `scan` does not unpack: a weights file wrapped in one of these is
/// reported, because its content was not looked at (nullifAI hid pickles in 7z).
const UNSCANNED_CONTAINERS: [(&[u8], &str); 6] = [
    (b"\x1f\x8b", "gzip"),
    (b"7z\xbc\xaf\x27\x1c", "7z"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"BZh", "bzip2"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"Rar!\x1a\x07", "rar"),
];

/// End-of-central-directory signature: where zip tools start reading an archive.
const ZIP_EOCD_MAGIC: &[u8; 4] = b"PK\x05\x06";
/// How far from the end an EOCD can be (22-byte record + 65,535-byte comment).
const ZIP_EOCD_SEARCH: usize = 22 + 65_535;

fn scan_unknown(bytes: &[u8]) -> Vec<Finding> {
    for (magic, name) in UNSCANNED_CONTAINERS {
        if bytes.starts_with(magic) {
            return vec![Finding::new(
                Severity::Suspicious,
                "unscanned_container",
                format!(
                    "{name}-compressed data: its contents were not scanned; unpack it and scan what is inside"
                ),
            )];
        }
    }
    if bytes.get(257..262) == Some(b"ustar".as_slice()) {
        return vec![Finding::new(
            Severity::Suspicious,
            "unscanned_container",
            "tar archive (or a PyTorch 0.1 checkpoint): its contents were not scanned; unpack it and scan what is inside",
        )];
    }
    let tail_start = bytes.len().saturating_sub(ZIP_EOCD_SEARCH);
    let tail = bytes.get(tail_start..).unwrap_or(&[]);
    if let Some(position) = tail
        .windows(ZIP_EOCD_MAGIC.len())
        .rposition(|window| window == ZIP_EOCD_MAGIC)
    {
        return vec![Finding::new(
            Severity::Dangerous,
            "zip_not_at_start",
            format!(
                "a zip end-of-central-directory record at offset {} but no zip header at offset 0: zip tools would read an archive here that PyTorch would not, a polyglot",
                tail_start + position
            ),
        )];
    }
    vec![Finding::new(
        Severity::Info,
        "not_weights",
        "not a weights format (config, tokenizer, text, ...); nothing to execute",
    )]
}

/// Pickle scanner finding kinds that mean the stream is malformed (rather than dangerous).
const MALFORMATION_KINDS: [&str; 6] = [
    "parse_error",
    "invalid_opcode",
    "invalid_memo",
    "frame_violation",
    "resource_limit",
    "unsupported_protocol",
];

fn is_malformation(finding: &Finding) -> bool {
    MALFORMATION_KINDS.contains(&finding.kind.as_str())
}

/// A JSON object with a `weight_map`: a shard index (`model.safetensors.index.json`), which
/// decides which files a load reads and so is checked like one.
fn looks_like_shard_index(bytes: &[u8]) -> bool {
    bytes.len() <= 64 * 1024 * 1024
        && bytes.trim_ascii_start().starts_with(b"{")
        && bytes.windows(12).any(|window| window == b"\"weight_map\"")
}

/// Opens the sharded checkpoint an index describes (pickle allowed, as in
/// [`check_with_loader`]) and records why it fails, if it does. Returns whether it is invalid.
fn check_shard_index(index: &Path, findings: &mut Vec<Finding>) -> bool {
    match crate::sharded::open_sharded(index, &crate::policy::LoadPolicy::allowing_pickle()) {
        Ok(checkpoint) => {
            findings.push(Finding::new(
                Severity::Info,
                "shard_index",
                format!(
                    "shard index of {} tensors in {} files, every shard inside the folder",
                    checkpoint.len(),
                    checkpoint.files().count()
                ),
            ));
            false
        }
        Err(error) => {
            let severity = match &error {
                // An index pointing outside its folder is an attack, not an accident.
                crate::Error::ShardIndex {
                    source: crate::sharded::IndexError::UnsafeShardPath { .. },
                    ..
                } => Severity::Dangerous,
                _ => Severity::Info,
            };
            findings.push(Finding::new(
                severity,
                "invalid_shard_index",
                error.to_string(),
            ));
            true
        }
    }
}

/// Zip members: every rule the strict reader would refuse, TorchScript code, and a pickle scan
/// of every member that holds a pickle (including duplicates and members hidden from the
/// central directory: whatever some reader might pick). Returns whether the zip is malformed.
fn scan_zip(bytes: &[u8], findings: &mut Vec<Finding>) -> bool {
    let inspection = crate::zip::inspect(bytes, crate::zip::InspectLimits::default());
    let mut invalid = false;
    if let Some(fatal) = &inspection.fatal {
        invalid = true;
        findings.push(Finding::new(
            Severity::Info,
            "invalid_zip",
            fatal.to_string(),
        ));
    }
    for problem in &inspection.problems {
        let (severity, kind) = zip_problem_rating(problem);
        invalid |= severity < Severity::Dangerous;
        findings.push(Finding::new(severity, kind, problem.to_string()));
        if let crate::zip::ZipError::TrailingData {
            eocd_offset,
            trailing,
        } = problem
        {
            // Whatever follows the archive may be read by another tool: scan it if it is a pickle.
            let start = usize::try_from(eocd_offset.saturating_add(22)).unwrap_or(usize::MAX);
            let tail_start = bytes
                .len()
                .saturating_sub(usize::try_from(*trailing).unwrap_or(0));
            let tail = bytes.get(tail_start.max(start)..).unwrap_or(&[]);
            if crate::pickle::looks_like_pickle(tail) {
                for mut finding in scan_pickles(tail, &ScanOptions::default()).findings {
                    finding.detail = format!(
                        "pickle appended after the archive at offset {}: {}",
                        tail_start.max(start),
                        finding.detail
                    );
                    findings.push(finding);
                }
            }
        }
    }
    for member in &inspection.members {
        if is_torchscript_member(&member.name) {
            findings.push(Finding::new(
                Severity::Dangerous,
                "torchscript",
                format!(
                    "member {}: TorchScript content (code that torch.jit.load would run); refused by the loader",
                    member.name
                ),
            ));
        }
        let Some(data) = &member.data else { continue };
        let named_like_pickle = member.name.ends_with(".pkl") || member.name.ends_with(".pickle");
        if named_like_pickle || crate::pickle::looks_like_pickle(data) {
            let scan = scan_pickles(data, &ScanOptions::default());
            invalid |= scan.findings.iter().any(is_malformation);
            for mut finding in scan.findings {
                finding.detail = format!("member {}: {}", member.name, finding.detail);
                findings.push(finding);
            }
        }
    }
    invalid
}

/// Whether a zip member is TorchScript (code), which PyTorch would hand to `torch.jit.load`.
fn is_torchscript_member(name: &str) -> bool {
    let within_root = name.split_once('/').map_or(name, |(_, rest)| rest);
    within_root.starts_with("code/")
        || matches!(
            within_root,
            "constants.pkl" | "model.json" | "attributes.pkl"
        )
}

/// How bad each zip rule violation is. Tricks that make two readers see different content
/// (duplicates, mismatched headers, hidden or prepended bytes, ignored CRCs, encryption flags)
/// are dangerous; compression is suspicious (the loader refuses it, and it is how zip bombs
/// work); the rest is plain malformation.
fn zip_problem_rating(problem: &crate::zip::ZipError) -> (Severity, &'static str) {
    use crate::zip::ZipError;
    match problem {
        ZipError::NotAtStart | ZipError::PrependedData { .. } => {
            (Severity::Dangerous, "zip_prepended_data")
        }
        ZipError::TrailingData { .. } | ZipError::AmbiguousEnd { .. } => {
            (Severity::Dangerous, "zip_trailing_data")
        }
        ZipError::LocalHeaderMismatch { .. } | ZipError::BadDataDescriptor { .. } => {
            (Severity::Dangerous, "zip_header_mismatch")
        }
        ZipError::ForbiddenFlags { .. } => (Severity::Dangerous, "zip_forbidden_flags"),
        ZipError::CrcMismatch { .. } => (Severity::Dangerous, "zip_crc_mismatch"),
        ZipError::DuplicateName { .. } | ZipError::CaseCollision { .. } => {
            (Severity::Dangerous, "zip_duplicate_name")
        }
        ZipError::Overlap { .. }
        | ZipError::UnaccountedBytes { .. }
        | ZipError::HiddenMember { .. } => (Severity::Dangerous, "zip_hidden_content"),
        ZipError::BadName { .. } | ZipError::NotARegularFile { .. } => {
            (Severity::Dangerous, "zip_unsafe_member_name")
        }
        ZipError::Compressed { .. }
        | ZipError::InflateFailed { .. }
        | ZipError::InflatedSizeMismatch { .. }
        | ZipError::NotExtracted { .. } => (Severity::Suspicious, "zip_compressed_member"),
        _ => (Severity::Info, "zip_malformed"),
    }
}
