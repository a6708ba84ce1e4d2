//! `scan` on Python source: the corpus in `tests/fixtures/python-review/` (hand-written hostile
//! and benign files), each expected finding at its line; and the review's bounds (size, nesting,
//! encoding, syntax) on inputs built here.

// Test code: a failed expectation is a panic with a message.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::PathBuf;
use std::time::Instant;

use proptest::prelude::*;
use safeformers_testkit::repo_fixture;
use safeformers_weights::FileFormat;
use safeformers_weights::python::{ReviewLimits, review_python};
use safeformers_weights::scan::{FileReport, Severity, Verdict, scan_bytes, scan_file};

fn corpus(name: &str) -> PathBuf {
    repo_fixture("python-review").join(name)
}

fn scan(name: &str) -> FileReport {
    let report = scan_file(&corpus(name));
    assert_eq!(report.format, FileFormat::Python, "{name}");
    report
}

/// Asserts that `report` has a finding of `kind` and `severity` at each listed line.
fn assert_findings(report: &FileReport, expected: &[(u32, &str, Severity)]) {
    for (line, kind, severity) in expected {
        let found = report.findings.iter().any(|finding| {
            finding.line == Some(*line) && finding.kind == *kind && finding.severity == *severity
        });
        assert!(
            found,
            "{}: no {severity:?} `{kind}` finding at line {line}; findings: {:#?}",
            report.path, report.findings
        );
    }
}

fn imported(report: &FileReport) -> Vec<(String, u32)> {
    report
        .imports
        .as_ref()
        .expect("a Python review lists imports")
        .iter()
        .map(|import| (import.module.clone(), import.line))
        .collect()
}

#[test]
fn benign_modeling_file_is_safe_and_lists_every_import() {
    let report = scan("benign_modeling.py");
    assert_eq!(report.verdict, Verdict::Safe, "{:#?}", report.findings);
    assert!(
        report.findings.iter().all(|f| f.severity == Severity::Info),
        "{:#?}",
        report.findings
    );
    let expected: Vec<(String, u32)> = [("math", 3), ("typing", 4), ("torch", 6), ("torch", 7)]
        .iter()
        .map(|(module, line)| ((*module).to_owned(), *line))
        .collect();
    assert_eq!(imported(&report), expected);
    let sha256 = report.sha256.as_deref().unwrap();
    assert_eq!(sha256.len(), 64);
    assert!(report.notice.unwrap().contains("not proof of safety"));
}

#[test]
fn obfuscated_imports_and_aliases_are_resolved() {
    let report = scan("obfuscated_imports.py");
    assert_eq!(report.verdict, Verdict::Unsafe);
    use Severity::{Dangerous, Suspicious};
    assert_findings(
        &report,
        &[
            (2, "import", Suspicious),
            (3, "import", Suspicious),
            (4, "import", Suspicious),
            // `sp.run`: `import subprocess as sp`.
            (6, "process", Dangerous),
            // `system(...)`: `from os import system`.
            (7, "process", Dangerous),
            // `__import__("socket").create_connection(...)`.
            (8, "dynamic_import", Dangerous),
            (8, "network", Dangerous),
            (8, "import", Suspicious),
            // `getattr(os, "sys" + "tem")`.
            (9, "computed_attribute", Dangerous),
            // `exec(base64.b64decode(...))`.
            (10, "code_execution", Dangerous),
            // `run = sp.Popen; run(...)`.
            (12, "process", Dangerous),
        ],
    );
    let modules: Vec<String> = imported(&report).into_iter().map(|(m, _)| m).collect();
    assert_eq!(modules, ["base64", "subprocess", "os", "os", "socket"]);
}

#[test]
fn downloads_torch_load_urls_writes_and_trust_remote_code() {
    let report = scan("fetch_and_load.py");
    assert_eq!(report.verdict, Verdict::Unsafe);
    use Severity::{Dangerous, Suspicious};
    assert_findings(
        &report,
        &[
            (4, "url", Suspicious),
            (5, "import_time_download", Dangerous),
            (9, "torch_load", Dangerous),
            (10, "torch_load", Suspicious),
            (11, "write_open", Suspicious),
            (19, "download", Suspicious),
            (19, "trust_remote_code", Dangerous),
        ],
    );
    // `torch.load(path, weights_only=True)` is not called unrestricted.
    assert!(
        !report
            .findings
            .iter()
            .any(|f| f.line == Some(10) && f.severity == Dangerous)
    );
    let trust = report
        .findings
        .iter()
        .find(|f| f.kind == "trust_remote_code")
        .unwrap();
    assert_eq!(trust.column, Some(51), "{trust:?}");
}

#[test]
fn pickle_eval_setattr_and_fstring_urls() {
    let report = scan("pickle_and_eval.py");
    use Severity::{Dangerous, Suspicious};
    assert_findings(
        &report,
        &[
            (1, "import", Suspicious),
            (2, "import", Suspicious),
            (4, "deserialisation", Dangerous),
            (5, "deserialisation", Dangerous),
            (6, "code_execution", Dangerous),
            (7, "computed_attribute", Dangerous),
            (8, "url", Suspicious),
        ],
    );
    // Reading a file is not writing one.
    assert!(!report.findings.iter().any(|f| f.kind == "write_open"));
}

#[test]
fn module_level_code_is_noted_and_declarations_are_not() {
    let source = b"\"\"\"doc\"\"\"\nimport math\nX = (1, -2, 'a')\nprint(X)\n\
        try:\n    import numpy\nexcept ImportError:\n    numpy = None\n";
    let review = review_python(source, &ReviewLimits::default());
    let noted: Vec<u32> = review
        .findings
        .iter()
        .filter(|f| f.kind == "import_time_code")
        .filter_map(|f| f.line)
        .collect();
    assert_eq!(noted, [4], "{:#?}", review.findings);
    assert!(!review.invalid);
}

fn assert_invalid(bytes: &[u8], kind: &str) {
    let started = Instant::now();
    let (format, findings, invalid) = scan_bytes(bytes, Some(&PathBuf::from("modeling_x.py")));
    assert_eq!(format, FileFormat::Python);
    assert!(invalid, "{findings:#?}");
    assert!(findings.iter().any(|f| f.kind == kind), "{findings:#?}");
    // Generous: the point is "bounded", not a benchmark.
    assert!(started.elapsed().as_secs() < 30);
}

#[test]
fn deeply_nested_expressions_are_invalid_not_a_stack_overflow() {
    let depth = 100_000;
    let parens = format!("x = {}1{}\n", "(".repeat(depth), ")".repeat(depth));
    assert_invalid(parens.as_bytes(), "python_too_deep");
    let lists = format!("x = {}{}\n", "[".repeat(depth), "]".repeat(depth));
    assert_invalid(lists.as_bytes(), "python_too_deep");
    for chain in [
        "-",
        "not ",
        "a + ",
        "a ** ",
        "lambda: ",
        "a if b else ",
        "a.",
        "~",
    ] {
        let source = format!("x = {}a\n", chain.repeat(depth));
        assert_invalid(source.as_bytes(), "python_too_deep");
    }
    let calls = format!("x = f{}\n", "()".repeat(depth));
    assert_invalid(calls.as_bytes(), "python_too_deep");
    let lambdas = format!("x = {}0\n", "lambda a, b: ".repeat(depth));
    assert_invalid(lambdas.as_bytes(), "python_too_deep");
}

#[test]
fn deep_indentation_is_invalid() {
    let mut source = String::new();
    for level in 0..150 {
        source.push_str(&" ".repeat(level));
        source.push_str("if x:\n");
    }
    source.push_str(&" ".repeat(150));
    source.push_str("pass\n");
    assert_invalid(source.as_bytes(), "python_too_deep");
}

#[test]
fn nesting_within_the_limits_is_reviewed() {
    let source = format!("x = {}eval('1'){}\n", "(".repeat(150), ")".repeat(150));
    let review = review_python(source.as_bytes(), &ReviewLimits::default());
    assert!(!review.invalid, "{:#?}", review.findings);
    assert!(review.findings.iter().any(|f| f.kind == "code_execution"));
    // A long flat list is wide, not deep.
    let list = format!("x = [{}]\n", "-1, ".repeat(200_000));
    let review = review_python(list.as_bytes(), &ReviewLimits::default());
    assert!(!review.invalid, "{:#?}", review.findings);
}

#[test]
fn huge_files_are_invalid() {
    let huge = "x = 1\n".repeat(1_000_000);
    assert_invalid(huge.as_bytes(), "python_too_large");
}

#[test]
fn invalid_utf8_and_syntax_errors_are_invalid() {
    assert_invalid(b"import os\nx = '\xff\xfe'\n", "python_not_utf8");
    assert_invalid(b"def broken(:\n    pass\n", "python_syntax_error");
    let (_, findings, _) = scan_bytes(b"x = 1\ny = (\n", Some(&PathBuf::from("m.py")));
    assert!(findings.iter().all(|f| f.kind == "python_syntax_error"));
    let error = &findings[0];
    assert!(error.line.is_some(), "{error:?}");
    // Invalid is never safe, even with nothing flagged.
    let report_verdict = if findings.iter().any(|f| f.severity >= Severity::Suspicious) {
        Verdict::Unsafe
    } else {
        Verdict::Invalid
    };
    assert_eq!(report_verdict, Verdict::Invalid);
}

#[test]
fn findings_are_capped_and_the_rest_counted() {
    let source = "eval('1')\n".repeat(2_000);
    let limits = ReviewLimits {
        max_findings: 100,
        ..ReviewLimits::default()
    };
    let review = review_python(source.as_bytes(), &limits);
    assert_eq!(review.findings.len(), 101);
    let rest = review.findings.last().unwrap();
    assert_eq!(rest.kind, "findings_not_listed");
    assert!(rest.detail.contains("dangerous"), "{rest:?}");
}

#[test]
fn python_is_recognised_by_name_or_shebang_only_when_no_binary_format() {
    let text = b"import os\n";
    let (format, _, _) = scan_bytes(text, Some(&PathBuf::from("notes.txt")));
    assert_eq!(format, FileFormat::Unknown);
    let (format, _, _) = scan_bytes(b"#!/usr/bin/env python3\nimport os\n", None);
    assert_eq!(format, FileFormat::Python);
    let (format, _, _) = scan_bytes(b"GGUF\x03\x00\x00\x00", Some(&PathBuf::from("x.py")));
    assert_eq!(format, FileFormat::Gguf);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let review = review_python(&bytes, &ReviewLimits::default());
        prop_assert_eq!(review.sha256.len(), 64);
    }

    #[test]
    fn random_python_like_text_never_panics(
        pieces in proptest::collection::vec(
            prop_oneof![
                Just("("), Just(")"), Just("["), Just("]"), Just("{"), Just("}"), Just(":"),
                Just(","), Just("\n"), Just("    "), Just("lambda"), Just("if"), Just("else"),
                Just("import os"), Just("from . import x"), Just("exec("), Just("\""),
                Just("f\"{"), Just("'''"), Just("-"), Just("**"), Just("not "), Just("def f():"),
                Just("class C:"), Just("x"), Just("1"), Just("getattr("), Just("#"), Just("\\"),
                Just("é"), Just(";"), Just("="), Just("@"), Just("async "), Just("await "),
            ],
            0..400,
        ),
    ) {
        let source: String = pieces.concat();
        let _ = review_python(source.as_bytes(), &ReviewLimits::default());
    }
}
