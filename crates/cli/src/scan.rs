//! `safeformers scan PATH... [--json]`.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use safeformers_weights::scan::{FileReport, ScanReport, Verdict, scan_paths};

/// Arguments of `scan`.
#[derive(Debug, Args)]
pub struct ScanArgs {
    /// Files or folders (scanned recursively).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Print JSON: {"files": [{"path", "format", "verdict", "findings": [...]}]}; Python files
    /// (`.py`, reviewed by parsing, never run) add "sha256", "imports" and "notice", and their
    /// findings a "line" and "column".
    #[arg(long)]
    json: bool,
}

/// Runs `scan`: exit 0 when every file is safe, 1 when any is unsafe or invalid.
pub fn run(args: &ScanArgs) -> anyhow::Result<ExitCode> {
    let report = scan_paths(&args.paths);
    if args.json {
        crate::output::print_json(&report)?;
    } else {
        crate::output::print(&render_text(&report))?;
    }
    let all_safe = report
        .files
        .iter()
        .all(|file| file.verdict == Verdict::Safe);
    Ok(if all_safe {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The lines only a source review has: the hash, every import, and what the verdict is not.
fn render_review(file: &FileReport, text: &mut String) {
    if let Some(sha256) = &file.sha256 {
        let _ = writeln!(text, "         sha256 {sha256}");
    }
    if let Some(imports) = &file.imports {
        let listed: Vec<String> = imports
            .iter()
            .map(|import| match import.category {
                Some(category) => format!("{} (line {}, {category})", import.module, import.line),
                None => format!("{} (line {})", import.module, import.line),
            })
            .collect();
        let shown = if listed.is_empty() {
            "none".to_owned()
        } else {
            listed.join(", ")
        };
        let _ = writeln!(text, "         imports: {shown}");
    }
    if let Some(notice) = file.notice {
        let _ = writeln!(text, "         note: {notice}");
    }
}

fn render_text(report: &ScanReport) -> String {
    let mut text = String::new();
    for file in &report.files {
        let _ = writeln!(
            text,
            "{:<7}  {:<11}  {}",
            file.verdict.as_str(),
            file.format.json_name(),
            file.path
        );
        render_review(file, &mut text);
        // A safe file's findings are all informational; show them only in JSON (a Python
        // review's are shown: they are what a reviewer reads).
        if file.verdict == Verdict::Safe && file.imports.is_none() {
            continue;
        }
        for finding in &file.findings {
            let at = finding
                .line
                .map(|line| format!("line {line}: "))
                .unwrap_or_default();
            let _ = writeln!(
                text,
                "         {:<10} {:<24} {at}{}",
                format!("{:?}", finding.severity).to_lowercase(),
                finding.kind,
                finding.detail
            );
        }
    }
    let unsafe_count = report
        .files
        .iter()
        .filter(|file| file.verdict == Verdict::Unsafe)
        .count();
    let invalid_count = report
        .files
        .iter()
        .filter(|file| file.verdict == Verdict::Invalid)
        .count();
    let _ = writeln!(
        text,
        "{} files scanned: {} unsafe, {} invalid",
        report.files.len(),
        unsafe_count,
        invalid_count
    );
    text
}
