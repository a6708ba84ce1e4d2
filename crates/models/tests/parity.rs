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

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use safeformers_models::{AutoModel, ModelOutput};
use safeformers_weights::LoadPolicy;
use serde_json::Value;

const TOLERANCE: f32 = 1e-4;

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models")
}

/// Flattens nested JSON lists of numbers.
fn flatten(value: &Value, out: &mut Vec<f64>) {
    match value {
        Value::Array(items) => items.iter().for_each(|item| flatten(item, out)),
        Value::Number(number) => out.push(number.as_f64().expect("a number")),
        other => panic!("unexpected value in a tensor: {other}"),
    }
}

fn shape_of(tensor: &Value) -> Vec<usize> {
    tensor["shape"]
        .as_array()
        .expect("a shape")
        .iter()
        .map(|dim| dim.as_u64().expect("a dimension") as usize)
        .collect()
}

fn int_tensor(tensor: &Value) -> Tensor {
    let mut values = Vec::new();
    flatten(&tensor["data"], &mut values);
    let values: Vec<i64> = values.into_iter().map(|value| value as i64).collect();
    Tensor::from_vec(values, shape_of(tensor), &Device::Cpu).expect("input tensor")
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
    let root = fixtures_dir();
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
