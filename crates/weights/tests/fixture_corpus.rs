//! The committed fixture corpus (`tests/fixtures/weights/`, made by
//! `scripts/make_weight_fixtures.py`), checked entry by entry against its `MANIFEST.json`:
//! every hostile sample is refused by the loader and flagged by the scanner; every benign
//! checkpoint loads bit-identical to its safetensors twin.

// Test code: a failed expectation is a panic with a message.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;

use safeformers_testkit::repo_fixture;
use safeformers_weights::scan::{Verdict, scan_paths};
use safeformers_weights::{Checkpoint, LoadPolicy, open_checkpoint};
use serde_json::Value;

fn manifest() -> Vec<Value> {
    let path = repo_fixture("weights").join("MANIFEST.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    let manifest: Value = serde_json::from_str(&text).unwrap();
    let entries = match &manifest {
        Value::Array(entries) => entries.clone(),
        Value::Object(object) => object
            .get("entries")
            .and_then(Value::as_array)
            .cloned()
            .expect("MANIFEST.json has an `entries` list"),
        _ => panic!("MANIFEST.json is neither a list nor an object"),
    };
    assert!(entries.len() > 50, "only {} entries", entries.len());
    entries
}

fn expectation<'a>(entry: &'a Value, key: &str) -> &'a str {
    entry["expect"][key]
        .as_str()
        .unwrap_or_else(|| panic!("entry without expect.{key}: {entry}"))
}

/// Same names, dtypes, shapes and bytes.
fn compare_with_twin(loaded: &Checkpoint, twin: &Checkpoint, label: &str) -> Result<(), String> {
    let loaded_names: Vec<&str> = loaded.names().collect();
    let twin_names: Vec<&str> = twin.names().collect();
    if loaded_names != twin_names {
        return Err(format!(
            "{label}: names differ: {loaded_names:?} vs {twin_names:?}"
        ));
    }
    for tensor in loaded.tensors() {
        let Some(other) = twin.tensor(tensor.name) else {
            return Err(format!("{label}: {} missing from the twin", tensor.name));
        };
        if (tensor.dtype, tensor.shape) != (other.dtype, other.shape) {
            return Err(format!(
                "{label}: {}: {} {:?} vs twin {} {:?}",
                tensor.name, tensor.dtype, tensor.shape, other.dtype, other.shape
            ));
        }
        if tensor.data != other.data {
            return Err(format!(
                "{label}: {}: bytes differ from the twin",
                tensor.name
            ));
        }
    }
    Ok(())
}

/// The scanner's verdict on the entry's file is one the manifest accepts, and its findings name
/// what the manifest says they must.
fn check_scan(entry: &Value, relative: &str, path: &Path, failures: &mut Vec<String>) {
    let report = scan_paths(&[path.to_path_buf()]);
    let verdicts: Vec<Verdict> = report.files.iter().map(|file| file.verdict).collect();
    let worst = if verdicts.contains(&Verdict::Unsafe) {
        Verdict::Unsafe
    } else if verdicts.contains(&Verdict::Invalid) {
        Verdict::Invalid
    } else {
        Verdict::Safe
    };
    // `scan` is one verdict or a list of acceptable ones. "invalid" is met by "unsafe" too (a
    // malformed file in which something dangerous was also seen).
    let acceptable: Vec<&str> = match &entry["expect"]["scan"] {
        Value::String(verdict) => vec![verdict.as_str()],
        Value::Array(verdicts) => verdicts.iter().filter_map(Value::as_str).collect(),
        other => panic!("{relative}: bad scan expectation {other}"),
    };
    let scan_ok = acceptable.iter().any(|expected| match *expected {
        "safe" => worst == Verdict::Safe,
        "unsafe" => worst == Verdict::Unsafe,
        "invalid" => worst != Verdict::Safe,
        other => panic!("{relative}: unknown scan expectation {other}"),
    });
    if !scan_ok {
        failures.push(format!(
            "{relative}: scan expected {acceptable:?}, got {:?}: {:?}",
            verdicts,
            report
                .files
                .iter()
                .flat_map(|file| &file.findings)
                .collect::<Vec<_>>()
        ));
    }
    for name in entry["expect"]["scan_must_name"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let name = name.as_str().expect("names are strings");
        let named = report
            .files
            .iter()
            .flat_map(|file| &file.findings)
            .any(|finding| finding.detail.contains(name));
        if !named {
            failures.push(format!("{relative}: no scan finding names {name}"));
        }
    }
}

#[test]
fn every_manifest_entry_loads_and_scans_as_expected() {
    let root = repo_fixture("weights");
    let mut failures = Vec::new();
    let mut twins_compared = 0;
    for entry in manifest() {
        let relative = entry["path"].as_str().expect("entry has a path");
        let path = root.join(relative);
        if !path.exists() {
            failures.push(format!("{relative}: listed in MANIFEST.json but missing"));
            continue;
        }
        let strict_kind = entry["strict_kind"].as_bool().unwrap_or(false);

        // The loader, with pickle allowed (the restricted unpickler is what is under test),
        // unless the entry is about the default policy.
        let policy = match entry["policy"].as_str() {
            Some("default") => LoadPolicy::default(),
            _ => LoadPolicy::allowing_pickle(),
        };
        let loaded = open_checkpoint(&path, &policy);
        match (expectation(&entry, "load"), &loaded) {
            ("ok", Ok(checkpoint)) => {
                if let Some(twin) = entry["twin"].as_str() {
                    match open_checkpoint(&root.join(twin), &LoadPolicy::default()) {
                        Ok(twin) => {
                            twins_compared += 1;
                            if let Err(difference) = compare_with_twin(checkpoint, &twin, relative)
                            {
                                failures.push(difference);
                            }
                        }
                        Err(error) => failures.push(format!("{relative}: twin {twin}: {error}")),
                    }
                }
            }
            ("ok", Err(error)) => failures.push(format!("{relative}: should load: {error}")),
            (expected, Ok(_)) => {
                failures.push(format!("{relative}: loaded, but should be {expected}"));
            }
            ("refused", Err(error)) if strict_kind && !error.is_policy_refusal() => {
                failures.push(format!("{relative}: should be a policy refusal: {error}"));
            }
            ("invalid", Err(error)) if strict_kind && error.is_policy_refusal() => {
                failures.push(format!(
                    "{relative}: should be invalid, not refused: {error}"
                ));
            }
            _ => {}
        }

        // Under the default policy nothing pickle-based loads at all.
        if let Ok(checkpoint) = &loaded
            && checkpoint.format().is_pickle_based()
        {
            match open_checkpoint(&path, &LoadPolicy::default()) {
                Err(error) if error.is_policy_refusal() => {}
                other => failures.push(format!(
                    "{relative}: pickle-based, but the default policy gave {:?}",
                    other.map(|checkpoint| checkpoint.len())
                )),
            }
        }

        check_scan(&entry, relative, &path, &mut failures);
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(twins_compared >= 5, "only {twins_compared} twins compared");
}
