//! Parity with Transformers on the tiny random models in `tests/fixtures/models/` (made by
//! `scripts/make_model_fixtures.py` with Transformers 5): for every model folder, the single
//! sequence and the padded batch in its `outputs.json`, every output tensor within 1e-4 (max
//! abs diff) at every position, padded ones included — Transformers computes padded positions
//! too, with the same additive mask over keys, so they match.
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
use safeformers_models::{AutoModel, ModelOutput, TokenSequence};
use safeformers_testkit::repo_fixture;
use safeformers_weights::LoadPolicy;
use serde_json::Value;

const TOLERANCE: f32 = 1e-4;

fn shape_of(tensor: &Value) -> Vec<usize> {
    tensor["shape"]
        .as_array()
        .expect("a shape")
        .iter()
        .map(|dim| dim.as_u64().expect("a dimension") as usize)
        .collect()
}

fn named_outputs(output: &ModelOutput) -> Vec<(&'static str, Tensor)> {
    match output {
        ModelOutput::BaseModel {
            last_hidden_state,
            pooler_output,
        } => {
            let mut out = vec![("last_hidden_state", last_hidden_state.clone())];
            if let Some(pooled) = pooler_output {
                out.push(("pooler_output", pooled.clone()));
            }
            out
        }
        ModelOutput::MaskedLm { logits }
        | ModelOutput::SequenceClassification { logits }
        | ModelOutput::TokenClassification { logits } => vec![("logits", logits.clone())],
        ModelOutput::QuestionAnswering {
            start_logits,
            end_logits,
        } => vec![
            ("start_logits", start_logits.clone()),
            ("end_logits", end_logits.clone()),
        ],
    }
}

/// Runs every case of one model folder; returns the largest difference seen.
fn check_model(dir: &Path) -> f32 {
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
    let mut worst = 0f32;
    for (case_name, case) in expected["cases"].as_object().unwrap() {
        let inputs = &case["inputs"];
        let ids = int_tensor(&inputs["input_ids"]);
        let mask = inputs.get("attention_mask").map(int_tensor);
        let types = inputs.get("token_type_ids").map(int_tensor);
        let output = model
            .forward(&ids, mask.as_ref(), types.as_ref())
            .unwrap_or_else(|error| panic!("{name}/{case_name}: {error}"));
        let ours = named_outputs(&output);
        let theirs = case["outputs"].as_object().unwrap();
        assert_eq!(
            ours.len(),
            theirs.len(),
            "{name}/{case_name}: outputs {:?} vs {:?}",
            ours.iter().map(|(key, _)| *key).collect::<Vec<_>>(),
            theirs.keys().collect::<Vec<_>>()
        );
        for (key, tensor) in ours {
            let reference = &theirs[key];
            assert_eq!(
                tensor.dims(),
                shape_of(reference).as_slice(),
                "{name}/{case_name}/{key}: shape"
            );
            // Large logits are stored for the first `columns` vocabulary entries only.
            let tensor = match reference.get("columns").and_then(Value::as_u64) {
                Some(columns) => tensor
                    .narrow(candle_core::D::Minus1, 0, columns as usize)
                    .unwrap(),
                None => tensor,
            };
            let ours: Vec<f32> = tensor
                .to_dtype(DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let mut reference_values = Vec::new();
            flatten(&reference["data"], &mut reference_values);
            assert_eq!(
                ours.len(),
                reference_values.len(),
                "{name}/{case_name}/{key}"
            );
            let diff = ours
                .iter()
                .zip(&reference_values)
                .map(|(a, b)| (f64::from(*a) - b).abs() as f32)
                .fold(0f32, f32::max);
            println!("{name:<24} {case_name:<6} {key:<18} max abs diff {diff:.2e}");
            assert!(
                diff <= TOLERANCE,
                "{name}/{case_name}/{key}: max abs diff {diff} > {TOLERANCE}"
            );
            worst = worst.max(diff);
        }
    }
    worst
}

#[test]
fn every_fixture_model_matches_transformers() {
    let root = repo_fixture("models");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|error| {
            panic!(
                "{}: {error} (the fixtures are committed; regenerate them with \
                 scripts/make_model_fixtures.py)",
                root.display()
            )
        })
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.join("outputs.json").is_file())
        .collect();
    dirs.sort();
    assert!(
        dirs.len() >= 20,
        "expected the fixture models, found {dirs:?}"
    );
    for dir in &dirs {
        let worst = check_model(dir);
        println!(
            "{:<24} worst {worst:.2e}",
            dir.file_name().unwrap().to_string_lossy()
        );
    }
}

/// The unpadded path (`token_states`, used by the feature-extraction pipeline) against
/// Transformers' `last_hidden_state` at the real positions of every case, padded batches
/// included (each sequence stripped to its real tokens), and against our own padded forward.
#[test]
fn unpadded_token_states_match_the_padded_forward() {
    let mut checked = Vec::new();
    for name in ["bert", "bert-tf4", "roberta", "xlm-roberta", "distilbert"] {
        let dir = repo_fixture("models").join(name);
        let expected: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("outputs.json")).unwrap())
                .unwrap();
        let model = AutoModel::load(&dir, &LoadPolicy::default(), &Device::Cpu).unwrap();
        if model.token_states(&[]).is_none() {
            // DistilBERT has no unpadded path: the pipeline pads for it.
            assert_eq!(name, "distilbert");
            continue;
        }
        for (case_name, case) in expected["cases"].as_object().unwrap() {
            let inputs = &case["inputs"];
            let ids = int_tensor(&inputs["input_ids"]);
            let mask = inputs.get("attention_mask").map(int_tensor);
            let types = inputs.get("token_type_ids").map(int_tensor);
            let (batch, seq) = ids.dims2().unwrap();
            let rows_of = |tensor: &Tensor| -> Vec<Vec<u32>> {
                tensor.to_dtype(DType::U32).unwrap().to_vec2().unwrap()
            };
            let id_rows = rows_of(&ids);
            let mask_rows = match &mask {
                Some(mask) => rows_of(mask),
                None => vec![vec![1; seq]; batch],
            };
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
            let states = model.token_states(&sequences).unwrap().unwrap();
            let padded = model.forward(&ids, mask.as_ref(), types.as_ref()).unwrap();
            let padded: Vec<Vec<Vec<f32>>> = padded.last_hidden_state().unwrap().to_vec3().unwrap();
            let mut reference = Vec::new();
            flatten(
                &case["outputs"]["last_hidden_state"]["data"],
                &mut reference,
            );
            let width = reference.len() / (batch * seq);
            let (mut worst_reference, mut worst_padded) = (0f64, 0f32);
            for b in 0..batch {
                assert_eq!(states[b].len(), lengths[b] * width, "{name}/{case_name}");
                for t in 0..lengths[b] {
                    for c in 0..width {
                        let ours = states[b][t * width + c];
                        let theirs = reference[(b * seq + t) * width + c];
                        worst_reference = worst_reference.max((f64::from(ours) - theirs).abs());
                        worst_padded = worst_padded.max((ours - padded[b][t][c]).abs());
                    }
                }
            }
            println!(
                "{name:<12} {case_name:<6} unpadded vs Transformers {worst_reference:.2e}, vs padded forward {worst_padded:.2e}"
            );
            assert!(
                worst_reference <= f64::from(TOLERANCE),
                "{name}/{case_name}"
            );
            // Same kernels on the same rows: only the attention's key loop differs (masked
            // keys skipped either way), so the two agree to rounding.
            assert!(worst_padded <= 1e-6, "{name}/{case_name}: {worst_padded}");
            checked.push(format!("{name}/{case_name}"));
        }
    }
    assert!(checked.len() >= 8, "{checked:?}");
    // Out-of-range inputs are errors, as in `forward`.
    let model = AutoModel::load(
        &repo_fixture("models").join("bert"),
        &LoadPolicy::default(),
        &Device::Cpu,
    )
    .unwrap();
    for bad in [
        TokenSequence {
            input_ids: &[],
            token_type_ids: None,
        },
        TokenSequence {
            input_ids: &[u32::MAX],
            token_type_ids: None,
        },
        TokenSequence {
            input_ids: &[1, 2],
            token_type_ids: Some(&[0]),
        },
        TokenSequence {
            input_ids: &[1, 2],
            token_type_ids: Some(&[0, 99]),
        },
    ] {
        assert!(model.token_states(&[bad]).unwrap().is_err(), "{bad:?}");
    }
    let too_long = vec![1u32; 100_000];
    let sequence = TokenSequence {
        input_ids: &too_long,
        token_type_ids: None,
    };
    assert!(model.token_states(&[sequence]).unwrap().is_err());
}
