//! ModernBERT against Transformers 5.25's `ModernBertModel` on the tiny random checkpoints of
//! `tests/fixtures/encoders/modernbert*/` (written by `scripts/make_modernbert_fixtures.py`;
//! see `tests/fixtures/encoders/README.md`): mixed global and sliding-window layers, windows
//! of 8 to 16 keys on sequences of up to 44 tokens, biases on and off, 3, 4 and 6 heads,
//! different rotary bases per layer type, legacy and Transformers-5 configs.
//!
//! - the last hidden state of every case within 1e-4 at every position, padded ones included
//!   (Transformers computes them with the same additive mask over keys; a padding query whose
//!   window holds no real key averages every value in both);
//! - the unpadded path (`token_states`, what the feature-extraction pipeline runs) at the real
//!   positions, against Transformers and against our padded forward;
//! - each detail that decides parity is load-bearing: with the window, the rotary bases or the
//!   layer types changed in `config.json`, the outputs leave the tolerance;
//! - a checkpoint saved from a `ModernBertFor*` head model (tensors under `model.`, as
//!   answerdotai/ModernBERT-base) loads as its base model when asked for, and is refused (not
//!   run as something else) when its head is asked for.
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
use safeformers_models::{AutoModel, Error, Head, LoadedModel, TokenSequence};
use safeformers_testkit::repo_fixture;
use safeformers_weights::LoadPolicy;
use serde_json::Value;

const TOLERANCE: f32 = 1e-4;

/// The ModernBERT fixture folders.
fn fixture_dirs() -> Vec<PathBuf> {
    let root = repo_fixture("encoders");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|error| {
            panic!(
                "{}: {error} (the fixtures are committed; regenerate them with \
                 scripts/make_modernbert_fixtures.py)",
                root.display()
            )
        })
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with("modernbert"))
                && path.join("outputs.json").is_file()
        })
        .collect();
    dirs.sort();
    assert!(
        dirs.len() >= 3,
        "expected the ModernBERT fixtures, found {dirs:?}"
    );
    dirs
}

fn outputs(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("outputs.json")).unwrap()).unwrap()
}

fn load(dir: &Path) -> LoadedModel {
    AutoModel::load(dir, &LoadPolicy::default(), &Device::Cpu)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
}

/// The largest difference between `model`'s padded forward and the reference of every case of
/// `expected`, over every position.
fn worst_case_diff(model: &LoadedModel, expected: &Value, label: &str) -> f32 {
    let mut worst = 0f32;
    for (case_name, case) in expected["cases"].as_object().unwrap() {
        let inputs = &case["inputs"];
        assert!(
            inputs.get("token_type_ids").is_none(),
            "{label}: no token types"
        );
        let ids = int_tensor(&inputs["input_ids"]);
        let mask = int_tensor(&inputs["attention_mask"]);
        let output = model
            .forward(&ids, Some(&mask), None)
            .unwrap_or_else(|error| panic!("{label}/{case_name}: {error}"));
        let hidden = output.last_hidden_state().unwrap();
        let reference = &case["outputs"]["last_hidden_state"];
        let shape: Vec<usize> = serde_json::from_value(reference["shape"].clone()).unwrap();
        assert_eq!(hidden.dims(), shape.as_slice(), "{label}/{case_name}");
        let ours: Vec<f32> = hidden.flatten_all().unwrap().to_vec1().unwrap();
        let mut theirs = Vec::new();
        flatten(&reference["data"], &mut theirs);
        let diff = ours
            .iter()
            .zip(&theirs)
            .map(|(a, b)| (f64::from(*a) - b).abs() as f32)
            .fold(0f32, f32::max);
        println!("{label:<28} {case_name:<6} max abs diff {diff:.2e}");
        worst = worst.max(diff);
    }
    worst
}

#[test]
fn every_modernbert_fixture_matches_transformers() {
    for dir in fixture_dirs() {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let expected = outputs(&dir);
        let model = load(&dir);
        assert_eq!(model.class_name(), expected["class"].as_str().unwrap());
        assert_eq!(model.class_name(), "ModernBertModel");
        assert!(!model.uses_token_type_ids());
        let worst = worst_case_diff(&model, &expected, &name);
        assert!(
            worst <= TOLERANCE,
            "{name}: max abs diff {worst} > {TOLERANCE}"
        );
    }
}

/// The unpadded path against Transformers at the real positions of every case (each batch row
/// stripped to its real tokens) and against our own padded forward.
#[test]
fn unpadded_token_states_match_transformers() {
    let mut checked = 0;
    for dir in fixture_dirs() {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let expected = outputs(&dir);
        let model = load(&dir);
        for (case_name, case) in expected["cases"].as_object().unwrap() {
            let ids = int_tensor(&case["inputs"]["input_ids"]);
            let mask = int_tensor(&case["inputs"]["attention_mask"]);
            let (batch, seq) = ids.dims2().unwrap();
            let id_rows: Vec<Vec<u32>> = ids.to_dtype(DType::U32).unwrap().to_vec2().unwrap();
            let mask_rows: Vec<Vec<u32>> = mask.to_dtype(DType::U32).unwrap().to_vec2().unwrap();
            let lengths: Vec<usize> = mask_rows
                .iter()
                .map(|row| row.iter().take_while(|&&flag| flag != 0).count())
                .collect();
            let sequences: Vec<TokenSequence<'_>> = (0..batch)
                .map(|b| TokenSequence {
                    input_ids: &id_rows[b][..lengths[b]],
                    token_type_ids: None,
                })
                .collect();
            let states = model.token_states(&sequences).unwrap().unwrap();
            let padded = model.forward(&ids, Some(&mask), None).unwrap();
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
                "{name:<20} {case_name:<6} unpadded vs Transformers {worst_reference:.2e}, \
                 vs padded forward {worst_padded:.2e}"
            );
            assert!(
                worst_reference <= f64::from(TOLERANCE),
                "{name}/{case_name}"
            );
            // The same kernels on the same real rows; padding rows never reach them.
            assert!(worst_padded <= 1e-5, "{name}/{case_name}: {worst_padded}");
            checked += 1;
        }
    }
    assert!(checked >= 6, "{checked}");
}

/// A change to a `config.json`.
type ConfigEdit = Box<dyn FnOnce(&mut serde_json::Map<String, Value>)>;

/// A copy of fixture `name` with its `config.json` edited by `edit`.
fn edited_copy(
    name: &str,
    tag: &str,
    edit: impl FnOnce(&mut serde_json::Map<String, Value>),
) -> PathBuf {
    let source = repo_fixture("encoders").join(name);
    let dir = common::temp_dir(&format!("modernbert-{tag}"));
    for entry in std::fs::read_dir(&source).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    let path = dir.join("config.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(config.as_object_mut().unwrap());
    std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
    dir
}

/// Each detail is load-bearing: an implementation that ignored the window, swapped the rotary
/// bases, or read `global_attn_every_n_layers` over `layer_types` would leave the tolerance by
/// far on these fixtures.
#[test]
fn window_bases_and_layer_types_each_change_the_result() {
    let cases: Vec<(&str, &str, ConfigEdit)> = vec![
        (
            "modernbert",
            "no-window",
            Box::new(|config| {
                config.insert("local_attention".into(), 4096.into());
            }),
        ),
        (
            "modernbert-biases",
            "window-off-by-one",
            // 10 → 12: radius 6 instead of 5.
            Box::new(|config| {
                config.insert("local_attention".into(), 12.into());
            }),
        ),
        (
            "modernbert",
            "bases-swapped",
            Box::new(|config| {
                config.insert("global_rope_theta".into(), 10000.0.into());
                config.insert("local_rope_theta".into(), 160000.0.into());
            }),
        ),
        (
            "modernbert-v5",
            "legacy-layer-types",
            // Without `layer_types`, layer 0 becomes global (every 3rd layer from 0).
            Box::new(|config| {
                config.remove("layer_types");
            }),
        ),
        (
            "modernbert-v5",
            "legacy-bases",
            // Without `rope_parameters`, the legacy defaults 160000 / 10000 apply.
            Box::new(|config| {
                config.remove("rope_parameters");
            }),
        ),
    ];
    for (name, tag, edit) in cases {
        let expected = outputs(&repo_fixture("encoders").join(name));
        let dir = edited_copy(name, tag, edit);
        let worst = worst_case_diff(&load(&dir), &expected, &format!("{name} {tag}"));
        assert!(worst > 1e-2, "{name} {tag}: still within {worst}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// Reads an F32 safetensors file written by `save_pretrained` (the fixtures').
fn read_f32_safetensors(path: &Path) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, Value> =
        serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let data = &bytes[8 + header_len..];
    header
        .into_iter()
        .filter(|(name, _)| name != "__metadata__")
        .map(|(name, info)| {
            assert_eq!(info["dtype"], "F32", "{name}");
            let shape: Vec<usize> = serde_json::from_value(info["shape"].clone()).unwrap();
            let [start, end]: [usize; 2] =
                serde_json::from_value(info["data_offsets"].clone()).unwrap();
            let values = data[start..end]
                .chunks_exact(4)
                .map(|chunk| f32::from_le_bytes(chunk.try_into().unwrap()))
                .collect();
            (name, shape, values)
        })
        .collect()
}

/// answerdotai/ModernBERT-base's layout: saved from `ModernBertForMaskedLM`, the base model
/// under `model.` beside the head's tensors. Its base model loads when asked for, with the same
/// outputs; the masked-LM head it names is not implemented and is refused before any weight
/// is read, naming what is.
#[test]
fn a_head_model_checkpoint_loads_as_its_base_model() {
    let dir = edited_copy("modernbert", "mlm-layout", |config| {
        config.insert(
            "architectures".into(),
            serde_json::json!(["ModernBertForMaskedLM"]),
        );
    });
    let weights = dir.join("model.safetensors");
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = read_f32_safetensors(&weights)
        .into_iter()
        .map(|(name, shape, values)| (format!("model.{name}"), shape, values))
        .collect();
    tensors.push(("head.dense.weight".into(), vec![48, 48], vec![0.5; 48 * 48]));
    tensors.push(("head.norm.weight".into(), vec![48], vec![1.0; 48]));
    tensors.push(("decoder.bias".into(), vec![561], vec![0.0; 561]));
    common::write_safetensors(&weights, &tensors);

    let error = AutoModel::load(&dir, &LoadPolicy::default(), &Device::Cpu).unwrap_err();
    assert!(
        matches!(error, Error::UnsupportedArchitecture { .. }),
        "{error}"
    );
    let message = error.to_string();
    assert!(
        message.contains("ModernBertForMaskedLM") && message.contains("ModernBertModel"),
        "{message}"
    );
    let model =
        AutoModel::load_with_head(&dir, Head::Base, &LoadPolicy::default(), &Device::Cpu).unwrap();
    assert_eq!(model.class_name(), "ModernBertModel");
    let expected = outputs(&repo_fixture("encoders").join("modernbert"));
    let worst = worst_case_diff(&model, &expected, "modernbert as ModernBertForMaskedLM");
    assert!(worst <= TOLERANCE, "{worst}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Inputs the model cannot take are errors: ids outside the vocabulary, sequences past
/// `max_position_embeddings`, and (there are no token types) a token type other than 0.
#[test]
fn out_of_range_inputs_are_errors() {
    let model = load(&repo_fixture("encoders").join("modernbert-biases"));
    let ids = |values: Vec<u32>| {
        Tensor::new(values.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap()
    };
    assert!(model.forward(&ids(vec![0, 561, 2]), None, None).is_err());
    assert!(model.forward(&ids(vec![5; 65]), None, None).is_err());
    model.forward(&ids(vec![5; 64]), None, None).unwrap();
    let types = ids(vec![0, 1, 0]);
    assert!(
        model
            .forward(&ids(vec![0, 5, 2]), None, Some(&types))
            .is_err()
    );
    let too_long = vec![5u32; 65];
    let sequence = [TokenSequence {
        input_ids: &too_long,
        token_type_ids: None,
    }];
    assert!(model.token_states(&sequence).unwrap().is_err());
}
