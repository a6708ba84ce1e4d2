//! Rotary embeddings against Transformers: `tests/fixtures/rope/rope.json`, written by
//! `scripts/make_rope_fixtures.py` from `LlamaRotaryEmbedding` / `Phi3RotaryEmbedding`.
//!
//! For every case (each scaling type, v4 and v5 config spellings, positions below and above the
//! original context) the config is parsed by [`RopeParameters::from_config`] and the inverse
//! frequencies, attention scaling and `cos`/`sin` are compared: frequencies within 1e-6
//! relative, `cos`/`sin` within 2e-5 absolute (positions reach 100, where one f32 ulp of the
//! angle is ~8e-6).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test: a broken fixture or a mismatch should fail loudly"
)]

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use safeformers_models::ModelConfig;
use safeformers_models::rotary::{RopeConfigRules, RopeParameters, RotaryEmbedding};
use serde_json::Value;

fn fixture() -> Value {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/rope/rope.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| {
        panic!(
            "{}: {error}; run scripts/make_rope_fixtures.py",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap()
}

fn floats(value: &Value) -> Vec<f32> {
    match value {
        Value::Array(items) => items.iter().flat_map(floats).collect(),
        Value::Number(number) => vec![number.as_f64().unwrap() as f32],
        other => panic!("not a number: {other}"),
    }
}

#[test]
fn every_scaling_matches_transformers() {
    let document = fixture();
    let cases = document["cases"].as_array().unwrap();
    assert!(cases.len() >= 15, "fixture has {} cases", cases.len());
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let config_json = &case["config"];
        let config =
            ModelConfig::from_json_str(&config_json.to_string(), Path::new("config.json")).unwrap();
        let hidden = config_json["hidden_size"].as_u64().unwrap() as usize;
        let heads = config_json["num_attention_heads"].as_u64().unwrap() as usize;
        let head_dim = hidden / heads;
        let max_positions = config_json["max_position_embeddings"].as_u64().unwrap() as usize;
        let rules = RopeConfigRules {
            phi3: config_json["model_type"] == "phi3",
        };
        let parameters = RopeParameters::from_config(&config, max_positions, head_dim, rules)
            .unwrap_or_else(|error| panic!("{name}: {error}"));
        let rotary =
            RotaryEmbedding::new(parameters, head_dim, max_positions, &Device::Cpu).unwrap();

        let positions: Vec<Vec<i64>> =
            serde_json::from_value(case["position_ids"].clone()).unwrap();
        let seq_len = positions.iter().flatten().max().copied().unwrap() as usize + 1;
        let (inv_freq, scaling) = rotary.inv_freq_for(seq_len);
        let expected = floats(&case["inv_freq"]);
        assert_eq!(inv_freq.len(), expected.len(), "{name}: inv_freq length");
        for (i, (got, want)) in inv_freq.iter().zip(&expected).enumerate() {
            assert!(
                (got - want).abs() <= 1e-6 * want.abs().max(1e-3),
                "{name}: inv_freq[{i}] {got} vs {want}"
            );
        }
        let want_scaling = case["attention_scaling"].as_f64().unwrap() as f32;
        assert!(
            (scaling - want_scaling).abs() < 1e-6,
            "{name}: attention scaling {scaling} vs {want_scaling}"
        );

        let position_ids = Tensor::new(positions, &Device::Cpu).unwrap();
        let (cos, sin) = rotary.cos_sin(&position_ids).unwrap();
        for (what, got, want) in [("cos", cos, &case["cos"]), ("sin", sin, &case["sin"])] {
            let got = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let want = floats(want);
            assert_eq!(got.len(), want.len(), "{name}: {what} size");
            let worst = safeformers_testkit::max_abs_diff(&got, &want);
            assert!(worst <= 2e-5, "{name}: {what} max abs diff {worst}");
        }
    }
}
