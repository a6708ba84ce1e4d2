//! Parity of the native NomicBert and GTE "new" ports with the models' own remote code, on the
//! tiny random models in `tests/fixtures/encoders/{nomic-bert*,gte-new*}` (made by
//! `scripts/make_remote_code_fixtures.py`, which ran `modeling_hf_nomic_bert.py` and
//! new-impl's `modeling.py`): the last hidden state of the single sequence and of the padded
//! batch within 1e-4 (max abs diff) at every position, padded ones included; and the unpadded
//! path (`token_states`) at the real positions of every case.
//!
//! The folders keep the Hub's cross-repo `auto_map`, so loading them also goes through the
//! native-port dispatch: no flag, and the remote code is named, never fetched nor run.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use common::{flatten, int_tensor};
use safeformers_models::{Architecture, AutoModel, Head, LoadedModel, TokenSequence};
use safeformers_testkit::repo_fixture;
use safeformers_weights::LoadPolicy;
use serde_json::Value;

const TOLERANCE: f64 = 1e-4;

/// The fixture folders of these two architectures.
fn fixture_dirs() -> Vec<PathBuf> {
    let root = repo_fixture("encoders");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|error| {
            panic!(
                "{}: {error} (the fixtures are committed; regenerate them with \
                 scripts/make_remote_code_fixtures.py)",
                root.display()
            )
        })
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            let name = path.file_name().unwrap().to_string_lossy();
            (name.starts_with("nomic-bert") || name.starts_with("gte-new"))
                && path.join("outputs.json").is_file()
        })
        .collect();
    dirs.sort();
    assert!(
        dirs.len() >= 7,
        "expected the fixture folders, found {dirs:?}"
    );
    dirs
}

fn load(dir: &Path) -> (LoadedModel, Value) {
    let name = dir.file_name().unwrap().to_string_lossy().to_string();
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("outputs.json")).unwrap()).unwrap();
    let model = AutoModel::load(dir, &LoadPolicy::default(), &Device::Cpu)
        .unwrap_or_else(|error| panic!("{name}: {error}"));
    assert_eq!(
        model.class_name(),
        expected["class"].as_str().unwrap(),
        "{name}"
    );
    let architecture = if name.starts_with("nomic") {
        Architecture::NomicBert
    } else {
        Architecture::Gte
    };
    assert_eq!(model.architecture(), architecture, "{name}");
    assert_eq!(model.head(), Head::Base, "{name}");
    (model, expected)
}

/// The case's inputs: ids, mask, token types.
fn inputs(case: &Value) -> (Tensor, Option<Tensor>, Option<Tensor>) {
    let inputs = &case["inputs"];
    (
        int_tensor(&inputs["input_ids"]),
        inputs.get("attention_mask").map(int_tensor),
        inputs.get("token_type_ids").map(int_tensor),
    )
}

#[test]
fn every_fixture_matches_the_remote_code() {
    for dir in fixture_dirs() {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let (model, expected) = load(&dir);
        for (case_name, case) in expected["cases"].as_object().unwrap() {
            let (ids, mask, types) = inputs(case);
            let output = model
                .forward(&ids, mask.as_ref(), types.as_ref())
                .unwrap_or_else(|error| panic!("{name}/{case_name}: {error}"));
            let hidden = output.last_hidden_state().unwrap();
            let reference = &case["outputs"]["last_hidden_state"];
            let shape: Vec<usize> = reference["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|dim| dim.as_u64().unwrap() as usize)
                .collect();
            assert_eq!(hidden.dims(), shape.as_slice(), "{name}/{case_name}");
            let ours: Vec<f32> = hidden
                .to_dtype(DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let mut theirs = Vec::new();
            flatten(&reference["data"], &mut theirs);
            let diff = ours
                .iter()
                .zip(&theirs)
                .map(|(a, b)| (f64::from(*a) - b).abs())
                .fold(0f64, f64::max);
            println!("{name:<24} {case_name:<6} last_hidden_state max abs diff {diff:.2e}");
            assert!(
                diff <= TOLERANCE,
                "{name}/{case_name}: max abs diff {diff} > {TOLERANCE}"
            );
        }
    }
}

/// The unpadded path against the remote code's `last_hidden_state` at the real positions
/// (each sequence of the batch stripped to its real tokens, packed together: the longest of
/// them is the padded length, so Nomic's dynamic NTK sees the same length as in the padded
/// batch).
#[test]
fn unpadded_token_states_match_the_remote_code() {
    for dir in fixture_dirs() {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let (model, expected) = load(&dir);
        for (case_name, case) in expected["cases"].as_object().unwrap() {
            let (ids, mask, types) = inputs(case);
            let (batch, seq) = ids.dims2().unwrap();
            let rows_of = |tensor: &Tensor| -> Vec<Vec<u32>> {
                tensor.to_dtype(DType::U32).unwrap().to_vec2().unwrap()
            };
            let id_rows = rows_of(&ids);
            let mask_rows = mask.as_ref().map(rows_of).unwrap();
            let type_rows = types.as_ref().map(rows_of);
            let lengths: Vec<usize> = mask_rows
                .iter()
                .map(|row| row.iter().take_while(|&&flag| flag != 0).count())
                .collect();
            let sequences: Vec<TokenSequence<'_>> = (0..batch)
                .map(|b| TokenSequence {
                    input_ids: &id_rows[b][..lengths[b]],
                    token_type_ids: type_rows.as_ref().map(|rows| &rows[b][..lengths[b]]),
                })
                .collect();
            let states = model
                .token_states(&sequences)
                .expect("an unpadded path")
                .unwrap_or_else(|error| panic!("{name}/{case_name}: {error}"));
            let mut reference = Vec::new();
            flatten(
                &case["outputs"]["last_hidden_state"]["data"],
                &mut reference,
            );
            let width = reference.len() / (batch * seq);
            let mut worst = 0f64;
            for b in 0..batch {
                assert_eq!(states[b].len(), lengths[b] * width, "{name}/{case_name}");
                for t in 0..lengths[b] {
                    for c in 0..width {
                        let ours = f64::from(states[b][t * width + c]);
                        worst = worst.max((ours - reference[(b * seq + t) * width + c]).abs());
                    }
                }
            }
            println!("{name:<24} {case_name:<6} unpadded max abs diff {worst:.2e}");
            assert!(worst <= TOLERANCE, "{name}/{case_name}: {worst}");
        }
    }
}

/// Nomic's dynamic NTK depends on the batch's padded length: the short rows of the batch
/// (rescaled, since the batch pads past `max_trained_positions`) differ from the same
/// sequences run alone (not rescaled).
#[test]
fn nomic_dynamic_ntk_follows_the_padded_length() {
    let (model, expected) = load(&repo_fixture("encoders").join("nomic-bert-ntk"));
    let batch = &expected["cases"]["batch"];
    let (ids, mask, _) = inputs(batch);
    let id_rows: Vec<Vec<u32>> = ids.to_dtype(DType::U32).unwrap().to_vec2().unwrap();
    let mask_rows: Vec<Vec<u32>> = mask
        .unwrap()
        .to_dtype(DType::U32)
        .unwrap()
        .to_vec2()
        .unwrap();
    let first = mask_rows[0].iter().filter(|&&flag| flag != 0).count();
    let alone = model
        .token_states(&[TokenSequence {
            input_ids: &id_rows[0][..first],
            token_type_ids: None,
        }])
        .unwrap()
        .unwrap();
    let mut reference = Vec::new();
    flatten(
        &batch["outputs"]["last_hidden_state"]["data"],
        &mut reference,
    );
    let diff = alone[0]
        .iter()
        .zip(&reference)
        .map(|(a, b)| (f64::from(*a) - b).abs())
        .fold(0f64, f64::max);
    assert!(
        diff > 1e-3,
        "the first row alone should not be rescaled ({diff})"
    );
}
