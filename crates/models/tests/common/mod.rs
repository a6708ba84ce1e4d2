//! Test helpers: tiny model folders written by hand (config.json + a safetensors file).
#![allow(
    dead_code,
    clippy::expect_used,
    clippy::panic,
    reason = "each test file uses a different subset; helpers panic on a broken temp dir or golden"
)]

use std::path::{Path, PathBuf};

/// A fresh, empty folder under the system temp dir.
pub fn temp_dir(name: &str) -> PathBuf {
    safeformers_testkit::scratch_dir(&format!("models-{name}"))
}

/// Writes an f32 safetensors file.
pub fn write_safetensors(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, shape, values) in tensors {
        assert_eq!(shape.iter().product::<usize>(), values.len(), "{name}");
        let start = data.len();
        for value in values {
            data.extend_from_slice(&value.to_le_bytes());
        }
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    let mut header = serde_json::to_vec(&serde_json::Value::Object(header)).expect("json");
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&header);
    bytes.extend_from_slice(&data);
    std::fs::write(path, bytes).expect("write safetensors");
}

/// A JSON list of lists as rows of `item(value)`.
pub fn json_rows<T>(
    value: &serde_json::Value,
    item: impl Fn(&serde_json::Value) -> T,
) -> Vec<Vec<T>> {
    value
        .as_array()
        .expect("a list of rows")
        .iter()
        .map(|row| row.as_array().expect("a row").iter().map(&item).collect())
        .collect()
}

/// Deterministic small values (a linear congruential sequence in [-0.1, 0.1)).
pub fn values(count: usize, seed: u64) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..count)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2
        })
        .collect()
}

pub const VOCAB: usize = 20;
pub const HIDDEN: usize = 8;
pub const INTERMEDIATE: usize = 16;

/// The config of a tiny BERT (2 layers, 2 heads).
pub fn tiny_bert_config(extra: serde_json::Value) -> serde_json::Value {
    let mut config = serde_json::json!({
        "model_type": "bert",
        "architectures": ["BertModel"],
        "vocab_size": VOCAB,
        "hidden_size": HIDDEN,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": INTERMEDIATE,
        "max_position_embeddings": 16,
        "type_vocab_size": 2,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-12,
    });
    if let (Some(config), serde_json::Value::Object(extra)) = (config.as_object_mut(), extra) {
        config.extend(extra);
    }
    config
}

/// The tensors of a tiny BertModel, names prefixed by `prefix` (`""` or `"bert."`).
pub fn tiny_bert_tensors(prefix: &str) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut out = Vec::new();
    let mut seed = 0;
    let mut add = |name: String, shape: Vec<usize>| {
        seed += 1;
        let count = shape.iter().product();
        out.push((format!("{prefix}{name}"), shape, values(count, seed)));
    };
    add(
        "embeddings.word_embeddings.weight".into(),
        vec![VOCAB, HIDDEN],
    );
    add(
        "embeddings.position_embeddings.weight".into(),
        vec![16, HIDDEN],
    );
    add(
        "embeddings.token_type_embeddings.weight".into(),
        vec![2, HIDDEN],
    );
    add("embeddings.LayerNorm.weight".into(), vec![HIDDEN]);
    add("embeddings.LayerNorm.bias".into(), vec![HIDDEN]);
    for layer in 0..2 {
        let p = format!("encoder.layer.{layer}.");
        for part in [
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
        ] {
            add(format!("{p}{part}.weight"), vec![HIDDEN, HIDDEN]);
            add(format!("{p}{part}.bias"), vec![HIDDEN]);
        }
        add(
            format!("{p}attention.output.LayerNorm.weight"),
            vec![HIDDEN],
        );
        add(format!("{p}attention.output.LayerNorm.bias"), vec![HIDDEN]);
        add(
            format!("{p}intermediate.dense.weight"),
            vec![INTERMEDIATE, HIDDEN],
        );
        add(format!("{p}intermediate.dense.bias"), vec![INTERMEDIATE]);
        add(
            format!("{p}output.dense.weight"),
            vec![HIDDEN, INTERMEDIATE],
        );
        add(format!("{p}output.dense.bias"), vec![HIDDEN]);
        add(format!("{p}output.LayerNorm.weight"), vec![HIDDEN]);
        add(format!("{p}output.LayerNorm.bias"), vec![HIDDEN]);
    }
    add("pooler.dense.weight".into(), vec![HIDDEN, HIDDEN]);
    add("pooler.dense.bias".into(), vec![HIDDEN]);
    out
}

/// Writes a model folder with `config` and `tensors`.
pub fn write_model(
    name: &str,
    config: &serde_json::Value,
    tensors: &[(String, Vec<usize>, Vec<f32>)],
) -> PathBuf {
    let dir = temp_dir(name);
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_vec_pretty(config).expect("json"),
    )
    .expect("write config");
    write_safetensors(&dir.join("model.safetensors"), tensors);
    dir
}

/// The logits `[1, len, vocab]` of a prompt `ids` at positions `0..len` over a fresh cache.
pub fn prompt_logits(model: &dyn safeformers_models::CausalLm, ids: &[u32]) -> candle_core::Tensor {
    use candle_core::{Device, Tensor};
    let (device, len) = (Device::Cpu, ids.len());
    let input = Tensor::from_vec(ids.to_vec(), (1, len), &device).expect("ids");
    let positions: Vec<i64> = (0..len as i64).collect();
    let positions = Tensor::from_vec(positions, (1, len), &device).expect("positions");
    let mask = Tensor::from_vec(vec![1u32; len], (1, len), &device).expect("mask");
    let mut cache = model.new_cache();
    model
        .forward(&input, &positions, &mask, &mut cache)
        .expect("forward")
}

/// The index of the largest value (the first of equals).
pub fn argmax(values: &[f32]) -> u32 {
    let mut best = (0, f32::NEG_INFINITY);
    for (index, &value) in values.iter().enumerate() {
        if value > best.1 {
            best = (index, value);
        }
    }
    best.0 as u32
}

/// Flattens nested JSON lists of numbers (a golden tensor's `data`).
pub fn flatten(value: &serde_json::Value, out: &mut Vec<f64>) {
    match value {
        serde_json::Value::Array(items) => items.iter().for_each(|item| flatten(item, out)),
        serde_json::Value::Number(number) => out.push(number.as_f64().expect("a number")),
        other => panic!("unexpected value in a tensor: {other}"),
    }
}

/// A golden integer tensor `{"shape", "data"}` as an i64 tensor.
pub fn int_tensor(tensor: &serde_json::Value) -> candle_core::Tensor {
    let mut values = Vec::new();
    flatten(&tensor["data"], &mut values);
    let shape: Vec<usize> = tensor["shape"]
        .as_array()
        .expect("a shape")
        .iter()
        .map(|dim| dim.as_u64().expect("a dimension") as usize)
        .collect();
    let values: Vec<i64> = values.into_iter().map(|value| value as i64).collect();
    candle_core::Tensor::from_vec(values, shape, &candle_core::Device::Cpu).expect("input tensor")
}
