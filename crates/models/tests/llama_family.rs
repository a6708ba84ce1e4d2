//! The Llama-family configs (`llama.rs`, `rotary.rs`): Transformers' per-family defaults, and
//! bad values as typed errors naming the field. Parity of the models themselves with
//! Transformers (logits, greedy tokens, KV cache) is checked for every fixture by
//! `decoder_parity.rs`; here one fixture (`tests/fixtures/decoders/llama`, from
//! `scripts/make_decoder_fixtures.py`) is loaded directly and run on bad inputs.
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
use safeformers_models::{AutoModelForCausalLM, CausalLm, Error, ModelConfig, Weights};
use safeformers_weights::{LoadPolicy, open_checkpoint};
use serde_json::Value;

fn fixture_dir(name: &str) -> PathBuf {
    safeformers_testkit::repo_fixture(&format!("decoders/{name}"))
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let dir = fixture_dir("llama");
    let config = ModelConfig::from_file(&dir.join("config.json")).unwrap();
    let checkpoint = open_checkpoint(&dir, &LoadPolicy::default()).unwrap();
    let model = LlamaForCausalLM::load(&Weights::new(&checkpoint, &Device::Cpu), config).unwrap();
    let cpu = &Device::Cpu;
    let ids = Tensor::new(&[[5u32, 6, 7]], cpu).unwrap();
    let positions = Tensor::new(&[[0i64, 1, 2]], cpu).unwrap();
    let mask = Tensor::new(&[[1u32, 1, 1]], cpu).unwrap();
    let run = |ids: &Tensor, positions: &Tensor, mask: &Tensor| {
        model.forward(ids, positions, mask, &mut model.new_cache())
    };
    assert_eq!(run(&ids, &positions, &mask).unwrap().dims(), [1, 3, 384]);
    let out_of_vocab = Tensor::new(&[[5u32, 6, 384]], cpu).unwrap();
    let negative_position = Tensor::new(&[[0i64, -1, 2]], cpu).unwrap();
    let short_mask = Tensor::new(&[[1u32, 1]], cpu).unwrap();
    let short_positions = Tensor::new(&[[0i64, 1]], cpu).unwrap();
    for (what, result) in [
        ("input_ids", run(&out_of_vocab, &positions, &mask)),
        ("position_ids", run(&ids, &negative_position, &mask)),
        ("position_ids", run(&ids, &short_positions, &mask)),
        ("attention_mask", run(&ids, &positions, &short_mask)),
    ] {
        match result {
            Err(Error::Input { input, .. }) => assert_eq!(input, what),
            other => panic!("expected an error about {what}, got {other:?}"),
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
    assert_eq!(
        (qwen2.layer_window(0), qwen2.layer_window(1)),
        (None, Some(5))
    );
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

    // `Qwen3Config`'s defaults: 32 kv heads, head_dim 128, untied, no bias, 32768 positions,
    // a 4096 window from layer 28 only with `use_sliding_window`.
    let qwen3 = |extra: &str| {
        let text = format!(
            r#"{{"model_type":"qwen3","vocab_size":8,"hidden_size":16,"intermediate_size":8,
                "num_hidden_layers":30,"num_attention_heads":32{extra}}}"#
        );
        let parsed = ModelConfig::from_json_str(&text, Path::new("config.json")).unwrap();
        LlamaConfig::from_model_config(&parsed).unwrap()
    };
    let plain = qwen3("");
    assert_eq!((plain.head_dim, plain.num_key_value_heads), (128, 32));
    assert_eq!(plain.max_position_embeddings, 32768);
    assert!(!plain.tie_word_embeddings && !plain.qkv_bias && !plain.o_bias && !plain.mlp_bias);
    assert_eq!(plain.layer_window(29), None);
    assert!(plain.family.defaults().qk_norm);
    let sliding = qwen3(r#","use_sliding_window":true,"attention_bias":true"#);
    assert_eq!(
        (sliding.layer_window(27), sliding.layer_window(28)),
        (None, Some(4096))
    );
    assert!(sliding.qkv_bias && sliding.o_bias && !sliding.mlp_bias);
}

/// Every field set to hostile values, for every family, against a real checkpoint: loading (and,
/// when it loads, one forward) returns a value or an error — it never panics or aborts (a
/// `num_hidden_layers` of 10¹² must not allocate per layer before the checkpoint runs out).
#[test]
fn hostile_config_values_never_panic() {
    let dir = fixture_dir("llama");
    let base: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let checkpoint = open_checkpoint(&dir, &LoadPolicy::default()).unwrap();
    let cpu = &Device::Cpu;
    let ids = Tensor::new(&[[5u32, 6, 7]], cpu).unwrap();
    let positions = Tensor::new(&[[0i64, 1, 2]], cpu).unwrap();
    let mask = Tensor::new(&[[1u32, 1, 1]], cpu).unwrap();
    let values: Vec<Value> = serde_json::from_str(
        r#"[0, -1, 1, 3, 1.5, 1000000000000, 9223372036854775807, 18446744073709551615,
            "x", null, [], {}, true]"#,
    )
    .unwrap();
    let fields = [
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "max_position_embeddings",
        "rms_norm_eps",
        "sliding_window",
        "use_sliding_window",
        "max_window_layers",
        "layer_types",
        "rope_parameters",
        "rope_scaling",
        "rope_theta",
        "partial_rotary_factor",
        "original_max_position_embeddings",
        "hidden_act",
        "tie_word_embeddings",
        "attention_bias",
        "mlp_bias",
    ];
    let mut loaded = 0;
    for model_type in ["llama", "mistral", "qwen2", "gemma", "phi3", "qwen3"] {
        for field in fields {
            for value in &values {
                let mut config = base.clone();
                config["model_type"] = Value::from(model_type);
                config[field] = value.clone();
                let Ok(config) =
                    ModelConfig::from_json_str(&config.to_string(), Path::new("config.json"))
                else {
                    continue;
                };
                let Ok(model) =
                    AutoModelForCausalLM::from_checkpoint(config, &checkpoint, &Device::Cpu)
                else {
                    continue;
                };
                loaded += 1;
                let _ = model.forward(&ids, &positions, &mask, &mut model.new_cache());
            }
        }
    }
    // Some variations are harmless (a larger max_position_embeddings, another eps, ...).
    assert!(loaded > 0);
}

/// The rope-scaled fixtures with their `config.json` rewritten the Transformers-4 way
/// (`rope_scaling` with `type`, top-level `rope_theta` and `partial_rotary_factor`) give the
/// same logits as Transformers 5 gave for the `rope_parameters` spelling.
#[test]
fn transformers4_rope_scaling_spelling_gives_the_same_logits() {
    for name in [
        "llama-rope-linear",
        "llama-rope-dynamic",
        "llama-rope-llama3",
        "llama-rope-yarn",
        "phi3-longrope",
        "phi3-partial-window",
    ] {
        let dir = fixture_dir(name);
        let mut config: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap())
                .unwrap();
        let object = config.as_object_mut().unwrap();
        let mut rope = object.remove("rope_parameters").unwrap();
        let rope_object = rope.as_object_mut().unwrap();
        for key in ["rope_theta", "partial_rotary_factor"] {
            if let Some(value) = rope_object.remove(key) {
                object.insert(key.to_string(), value);
            }
        }
        let rope_type = rope_object.remove("rope_type").unwrap();
        rope_object.insert("type".to_string(), rope_type);
        object.insert("rope_scaling".to_string(), rope);
        let config =
            ModelConfig::from_json_str(&config.to_string(), Path::new("config.json")).unwrap();
        let checkpoint = open_checkpoint(&dir, &LoadPolicy::default()).unwrap();
        let model =
            LlamaForCausalLM::load(&Weights::new(&checkpoint, &Device::Cpu), config).unwrap();

        let outputs: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("outputs.json")).unwrap())
                .unwrap();
        let ids: Vec<Vec<u32>> =
            serde_json::from_value(outputs["single"]["input_ids"].clone()).unwrap();
        let len = ids[0].len();
        let positions =
            Tensor::new(vec![(0..len as i64).collect::<Vec<_>>()], &Device::Cpu).unwrap();
        let mask = Tensor::new(vec![vec![1u32; len]], &Device::Cpu).unwrap();
        let ids = Tensor::new(ids, &Device::Cpu).unwrap();
        let logits = model
            .forward(&ids, &positions, &mask, &mut model.new_cache())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let want: Vec<f32> = outputs["single"]["logits"][0]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|row| {
                row.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap() as f32)
            })
            .collect();
        assert_eq!(logits.len(), want.len(), "{name}");
        let worst = safeformers_testkit::max_abs_diff(&logits, &want);
        assert!(worst <= 1e-4, "{name} (v4 spelling): max abs diff {worst}");
    }
}
