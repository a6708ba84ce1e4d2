//! `safeformers scan PATH... [--json]`.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use safeformers_weights::scan::{ScanReport, Verdict, scan_paths};

/// Arguments of `scan`.
#[derive(Debug, Args)]
pub struct ScanArgs {
    /// Files or folders (scanned recursively).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Print JSON: {"files": [{"path", "format", "verdict", "findings": [...]}]}.
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
        // A safe file's findings are all informational; show them only in JSON.
        if file.verdict == Verdict::Safe {
            continue;
        }
        for finding in &file.findings {
            let _ = writeln!(
                text,
                "         {:<10} {:<24} {}",
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
