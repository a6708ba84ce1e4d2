//! The Llama family against Transformers: `tests/fixtures/decoders/<name>/` (written by
//! `scripts/make_decoder_fixtures.py`) for llama (and its linear / dynamic / llama3 / yarn rope
//! variants, and attention/MLP bias with a wide `head_dim` and a tied head absent from the file),
//! mistral, qwen2 (and with sliding windows on its upper layer), gemma, phi3, phi3-longrope and
//! phi3 with partial rotary and a sliding window, loaded through
//! [`LlamaForCausalLM::load`].
//!
//! Measured: logits of one sequence and of a right-padded batch (real positions only) within
//! 1e-4 max abs diff; the 10 greedy tokens of a left-padded batch identical, decoding with the
//! KV cache one token at a time; and the logits of that cached decoding within 1e-4 of a full
//! recompute of the whole sequence. Config errors are typed and name the field.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test: a broken fixture or a mismatch should fail loudly"
)]

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use safeformers_models::llama::{LlamaConfig, LlamaForCausalLM};
use safeformers_models::{CausalLm, Error, ModelConfig};
use safeformers_weights::{LoadPolicy, open_checkpoint};
use serde_json::Value;

const MODELS: &[&str] = &[
    "llama",
    "llama-rope-linear",
    "llama-rope-dynamic",
    "llama-rope-llama3",
    "llama-rope-yarn",
    "mistral",
    "qwen2",
    "gemma",
    "phi3",
    "phi3-longrope",
    "llama-bias-headdim",
    "qwen2-sliding",
    "phi3-partial-window",
];

fn fixture_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/decoders")
        .join(name)
}

fn load(name: &str) -> (LlamaForCausalLM, Value) {
    let dir = fixture_dir(name);
    let outputs = std::fs::read_to_string(dir.join("outputs.json")).unwrap_or_else(|error| {
        panic!(
            "{}: {error}; run scripts/make_decoder_fixtures.py",
            dir.display()
        )
    });
    let config = ModelConfig::from_file(&dir.join("config.json")).unwrap();
    let checkpoint = open_checkpoint(&dir, &LoadPolicy::default()).unwrap();
    let model = LlamaForCausalLM::load(config, &checkpoint, &Device::Cpu)
        .unwrap_or_else(|error| panic!("{name}: {error}"));
    (model, serde_json::from_str(&outputs).unwrap())
}

fn ints(value: &Value) -> Vec<Vec<i64>> {
    serde_json::from_value(value.clone()).unwrap()
}

fn floats(value: &Value) -> Vec<f32> {
    match value {
        Value::Array(items) => items.iter().flat_map(floats).collect(),
        Value::Number(number) => vec![number.as_f64().unwrap() as f32],
        other => panic!("not a number: {other}"),
    }
}

fn tensor(rows: &[Vec<i64>]) -> Tensor {
    Tensor::new(rows.to_vec(), &Device::Cpu).unwrap()
}

/// Transformers' `generate` positions: `cumsum(mask) - 1`, padding set to 1.
fn generation_positions(mask: &[Vec<i64>]) -> Vec<Vec<i64>> {
    mask.iter()
        .map(|row| {
            let mut seen = 0;
            row.iter()
                .map(|&m| {
                    seen += m;
                    if m == 0 { 1 } else { seen - 1 }
                })
                .collect()
        })
        .collect()
}

fn forward(
    model: &LlamaForCausalLM,
    ids: &[Vec<i64>],
    positions: &[Vec<i64>],
    mask: &[Vec<i64>],
) -> Tensor {
    let mut cache = model.new_cache();
    model
        .forward(&tensor(ids), &tensor(positions), &tensor(mask), &mut cache)
        .unwrap()
}

#[test]
fn logits_match_transformers() {
    for name in MODELS {
        let (model, outputs) = load(name);
        for case in ["single", "padded"] {
            let golden = &outputs[case];
            let ids = ints(&golden["input_ids"]);
            let mask = match golden.get("attention_mask") {
                Some(mask) => ints(mask),
                None => ids.iter().map(|row| vec![1; row.len()]).collect(),
            };
            let positions: Vec<Vec<i64>> = ids
                .iter()
                .map(|row| (0..row.len() as i64).collect())
                .collect();
            let logits = forward(&model, &ids, &positions, &mask);
            let shape: Vec<usize> = serde_json::from_value(golden["shape"].clone()).unwrap();
            assert_eq!(logits.dims(), shape.as_slice(), "{name} {case}");
            let got = logits.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let want = floats(&golden["logits"]);
            let vocab = shape[2];
            let mut worst = 0f32;
            for (row, mask_row) in mask.iter().enumerate() {
                for (position, &real) in mask_row.iter().enumerate() {
                    if real == 0 {
                        continue;
                    }
                    let start = (row * shape[1] + position) * vocab;
                    for i in start..start + vocab {
                        worst = worst.max((got[i] - want[i]).abs());
                    }
                }
            }
            assert!(worst <= 1e-4, "{name} {case}: max abs diff {worst}");
        }
    }
}

/// Greedy decoding with the KV cache, then a full recompute of the generated sequence.
#[test]
fn greedy_tokens_match_and_cache_equals_recompute() {
    for name in MODELS {
        let (model, outputs) = load(name);
        let golden = &outputs["greedy"];
        let mut ids = ints(&golden["input_ids"]);
        let mut mask = ints(&golden["attention_mask"]);
        let expected = ints(&golden["new_tokens"]);
        let steps = expected[0].len();
        let mut cache = model.new_cache();
        let positions = generation_positions(&mask);
        let mut logits = model
            .forward(
                &tensor(&ids),
                &tensor(&positions),
                &tensor(&mask),
                &mut cache,
            )
            .unwrap();
        let mut generated = vec![Vec::new(); ids.len()];
        let mut step_logits = Vec::new();
        for step in 0..steps {
            let last = logits.dim(1).unwrap() - 1;
            let rows = logits.narrow(1, last, 1).unwrap().squeeze(1).unwrap();
            step_logits.push(rows.clone());
            let next = rows.argmax(1).unwrap().to_vec1::<u32>().unwrap();
            for (row, token) in next.iter().enumerate() {
                generated[row].push(i64::from(*token));
                ids[row].push(i64::from(*token));
                mask[row].push(1);
            }
            if step + 1 == steps {
                break;
            }
            let positions: Vec<Vec<i64>> = generation_positions(&mask)
                .iter()
                .map(|row| vec![*row.last().unwrap()])
                .collect();
            let new_ids: Vec<Vec<i64>> = next.iter().map(|t| vec![i64::from(*t)]).collect();
            logits = model
                .forward(
                    &tensor(&new_ids),
                    &tensor(&positions),
                    &tensor(&mask),
                    &mut cache,
                )
                .unwrap();
        }
        assert_eq!(generated, expected, "{name}: greedy tokens");

        // The whole sequence at once (without its last token, whose logits were never needed).
        let full_ids: Vec<Vec<i64>> = ids
            .iter()
            .map(|row| row[..row.len() - 1].to_vec())
            .collect();
        let full_mask: Vec<Vec<i64>> = mask
            .iter()
            .map(|row| row[..row.len() - 1].to_vec())
            .collect();
        let full = forward(
            &model,
            &full_ids,
            &generation_positions(&full_mask),
            &full_mask,
        );
        let prompt_len = ints(&golden["input_ids"])[0].len();
        for (step, cached) in step_logits.iter().enumerate() {
            let recomputed = full
                .narrow(1, prompt_len - 1 + step, 1)
                .unwrap()
                .squeeze(1)
                .unwrap();
            let worst = (cached - &recomputed)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            // Dynamic NTK rescales the frequencies with the sequence length, so keys cached at
            // shorter lengths differ from a recompute, in Transformers too.
            if *name != "llama-rope-dynamic" {
                assert!(
                    worst <= 1e-4,
                    "{name}: step {step} cached vs recomputed {worst}"
                );
            }
        }
    }
}

fn config_error(patch: &str) -> Error {
    let dir = fixture_dir("llama");
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let patch: Value = serde_json::from_str(patch).unwrap();
    for (key, value) in patch.as_object().unwrap() {
        config[key] = value.clone();
    }
    let config = ModelConfig::from_json_str(&config.to_string(), Path::new("config.json"));
    match config.and_then(|config| LlamaConfig::from_model_config(&config)) {
        Ok(_) => panic!("{patch} was accepted"),
        Err(error) => error,
    }
}

#[test]
fn bad_configs_are_errors_naming_the_field() {
    for (patch, field) in [
        (r#"{"num_attention_heads":0}"#, "num_attention_heads"),
        (r#"{"num_key_value_heads":3}"#, "num_key_value_heads"),
        (r#"{"num_key_value_heads":0}"#, "num_key_value_heads"),
        (
            r#"{"model_type":"mistral","sliding_window":-4}"#,
            "sliding_window",
        ),
        (
            r#"{"model_type":"mistral","sliding_window":0}"#,
            "sliding_window",
        ),
        (r#"{"head_dim":7}"#, "head_dim"),
        (r#"{"hidden_act":"sparkle"}"#, "hidden_act"),
        (
            r#"{"rope_parameters":{"rope_type":"spiral"}}"#,
            "rope_parameters.rope_type",
        ),
        (
            r#"{"rope_parameters":null,"rope_scaling":{"type":"linear"}}"#,
            "rope_scaling.factor",
        ),
        (
            r#"{"model_type":"qwen2","use_sliding_window":true,"layer_types":["full_attention"]}"#,
            "layer_types",
        ),
        (r#"{"tie_word_embeddings":"yes"}"#, "tie_word_embeddings"),
        (r#"{"head_dim":9223372036854775806}"#, "head_dim"),
        (
            r#"{"intermediate_size":18446744073709551615}"#,
            "intermediate_size",
        ),
        (
            r#"{"head_dim":2,"rope_parameters":{"rope_type":"dynamic","factor":2}}"#,
            "rope_parameters.rope_type",
        ),
    ] {
        match config_error(patch) {
            Error::InvalidConfigField { field: got, .. } => assert_eq!(got, field, "{patch}"),
            other => panic!("{patch}: expected an error about {field}, got {other}"),
        }
    }
    assert!(matches!(
        config_error(r#"{"vocab_size":null}"#),
        Error::MissingConfigField {
            field: "vocab_size",
            ..
        }
    ));
    assert!(matches!(
        config_error(r#"{"hidden_size":"wide"}"#),
        Error::ConfigJson { .. }
    ));
}

#[test]
fn family_defaults_follow_transformers() {
    let dir = fixture_dir("qwen2");
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    config["use_sliding_window"] = Value::Bool(true);
    config["sliding_window"] = Value::from(5);
    config["max_window_layers"] = Value::from(1);
    // Transformers 5 saves the computed `layer_types`; without them they follow
    // `max_window_layers`.
    config.as_object_mut().unwrap().remove("layer_types");
    let parsed = ModelConfig::from_json_str(&config.to_string(), Path::new("config.json")).unwrap();
    let qwen2 = LlamaConfig::from_model_config(&parsed).unwrap();
    assert_eq!(qwen2.layer_windows, vec![None, Some(5)]);
    assert!(qwen2.qkv_bias && !qwen2.o_bias);
    assert!(qwen2.tie_word_embeddings);

    let gemma = ModelConfig::from_json_str(
        r#"{"model_type":"gemma","vocab_size":8,"hidden_size":16,"intermediate_size":8,
            "num_hidden_layers":1,"num_attention_heads":16,"hidden_act":"gelu"}"#,
        Path::new("config.json"),
    )
    .unwrap();
    let gemma = LlamaConfig::from_model_config(&gemma).unwrap();
    assert_eq!(gemma.head_dim, 256, "GemmaConfig's head_dim default");
    assert_eq!(gemma.num_key_value_heads, 16, "GemmaConfig's default");
    assert!(gemma.tie_word_embeddings);
    assert_eq!(
        gemma.activation,
        safeformers_models::layers::Activation::GeluTanh
    );
}
