//! The real SmolLM2-135M-Instruct Q4_1 GGUF as a model, against what Transformers' own GGUF
//! loader makes of it (`tests/fixtures/gguf-model/smollm2-q4_1.json`, written by
//! `scripts/make_smollm2_gguf_fixtures.py`):
//! - dequantized and un-permuted tensors equal Transformers' rows bit for bit;
//! - with every tensor dequantized to f32, the logits of five prompts (plain and chat) are
//!   within 1e-3 of Transformers' at their last positions (on a strided subset of the
//!   vocabulary), with the same argmax at every position, and greedy decoding gives
//!   Transformers' 32 tokens (fewer when it ends at `<|im_end|>`);
//! - with the Q4_1 blocks multiplied as stored (activations quantized to about 15 bits: 8-bit
//!   blocks and their residual), greedy decoding gives the f32 run's tokens on at least 4 of
//!   the 5 prompts, and where it parts, at a near-tie that the logit noise explains.
//!
//! `SAFEFORMERS_SMOLLM2_GGUF` is set by `scripts/test.sh` (which fetches the file with
//! `scripts/fetch-smollm2.sh`); without it these tests fail, they never skip.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::path::PathBuf;

use candle_core::Device;
use safeformers_models::gguf::{self, GgufTensors};
use safeformers_models::llama::LlamaConfig;
use safeformers_models::{CausalLm, WeightOptions, Weights};
use safeformers_weights::gguf::GgufFile;
use serde_json::Value;

fn smollm2_gguf() -> PathBuf {
    safeformers_testkit::smollm2_gguf()
}

fn fixture() -> Value {
    let path = safeformers_testkit::repo_fixture("gguf-model/smollm2-q4_1.json");
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

/// A JSON number as the f32 it was written from (the shortest decimal of that f32).
fn f32_of(value: &Value) -> f32 {
    value.to_string().parse().unwrap()
}

fn f32s(value: &Value) -> Vec<f32> {
    value.as_array().unwrap().iter().map(f32_of).collect()
}

fn u32s(value: &Value) -> Vec<u32> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| u32::try_from(v.as_u64().unwrap()).unwrap())
        .collect()
}

#[test]
fn smollm2_tensors_equal_transformers_dequantized_rows() {
    let file = GgufFile::open(&smollm2_gguf()).unwrap();
    let config = gguf::model_config(&file).unwrap();
    let llama = LlamaConfig::from_model_config(&config).unwrap();
    let tensors = GgufTensors::new(file, &llama);
    let weights = Weights::from_gguf(&tensors, &Device::Cpu);
    let fixture = fixture();
    let mut checked = 0;
    for (name, expected) in fixture["tensors"].as_object().unwrap() {
        let shape: Vec<usize> = tensors
            .file()
            .tensor(&gguf::gguf_name(name).unwrap())
            .unwrap()
            .info
            .shape
            .clone();
        let values = weights.get(&shape, name).unwrap();
        let values = values.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let width = *shape.last().unwrap();
        let rows: Vec<usize> = match expected["rows"].as_array() {
            Some(rows) => rows.iter().map(|r| r.as_u64().unwrap() as usize).collect(),
            None => vec![0],
        };
        for (row, want) in rows.iter().zip(expected["values"].as_array().unwrap()) {
            let got = &values[row * width..(row + 1) * width];
            let want = f32s(want);
            assert_eq!(got.len(), want.len(), "{name} row {row}");
            for (column, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(
                    g.to_bits(),
                    w.to_bits(),
                    "{name}[{row}, {column}]: {g} vs {w}"
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 30, "only {checked} rows checked");
}

/// Greedy decoding through the generation interface (the prompt, then one token per step on
/// the sequence cache): the new tokens and the largest logit difference seen is the caller's.
fn greedy(model: &dyn CausalLm, prompt: &[u32], steps: usize) -> (Vec<u32>, Vec<Vec<f32>>) {
    let mut cache = model.new_sequence_cache();
    let mut tokens = prompt.to_vec();
    let mut new = Vec::new();
    let mut step_logits = Vec::new();
    for _ in 0..steps {
        let input = if new.is_empty() {
            tokens.clone()
        } else {
            vec![*tokens.last().unwrap()]
        };
        let mut inputs = [safeformers_models::SequenceInput {
            tokens: &input,
            cache: &mut cache,
            logits: safeformers_models::LogitsAt::Last,
        }];
        let logits = model.forward_sequences(&mut inputs).unwrap().remove(0);
        let next = common::argmax(&logits);
        step_logits.push(logits);
        new.push(next);
        tokens.push(next);
    }
    (new, step_logits)
}

#[test]
fn smollm2_f32_matches_transformers_and_native_blocks_decode_the_same_tokens() {
    let path = smollm2_gguf();
    let fixture = fixture();
    let stride = fixture["vocab_stride"].as_u64().unwrap() as usize;
    let options = WeightOptions::default();
    let f32_model =
        gguf::load_causal_lm(&path, &Device::Cpu, options.dequantizing_blocks()).unwrap();
    let native = gguf::load_causal_lm(&path, &Device::Cpu, options).unwrap();
    assert_eq!(f32_model.vocab_size(), 49152);
    let prompts = fixture["prompts"].as_array().unwrap();
    assert_eq!(prompts.len(), 5);
    let mut native_agrees = 0;
    for prompt in prompts {
        let ids = u32s(&prompt["ids"]);
        let text = prompt["text"].as_str().unwrap();
        let got = prompt_logits_rows(&f32_model, &ids);
        let logits_from = prompt["logits_from"].as_u64().unwrap() as usize;
        let mut worst = 0.0f32;
        for (offset, want) in prompt["logits"].as_array().unwrap().iter().enumerate() {
            let want = f32s(want);
            let row = &got[logits_from + offset];
            let strided: Vec<f32> = row.iter().step_by(stride).copied().collect();
            worst = worst.max(safeformers_testkit::max_abs_diff(&strided, &want));
        }
        let argmaxes: Vec<u32> = got.iter().map(|row| common::argmax(row)).collect();
        assert_eq!(
            argmaxes,
            u32s(&prompt["argmax"]),
            "{text}: argmax per position"
        );
        assert!(
            worst <= 1e-3,
            "{text}: f32 logits differ from Transformers' by {worst}"
        );

        let want_tokens = u32s(&prompt["greedy"]);
        let (f32_tokens, f32_logits) = greedy(&f32_model, &ids, want_tokens.len());
        assert_eq!(f32_tokens, want_tokens, "{text}: f32 greedy tokens");
        let (native_tokens, native_logits) = greedy(&native, &ids, want_tokens.len());
        // Logit differences while both runs have fed the same tokens (after a divergence the
        // inputs differ and so would everything).
        let agreeing = f32_tokens
            .iter()
            .zip(&native_tokens)
            .take_while(|(a, b)| a == b)
            .count();
        let native_diffs: Vec<f32> = f32_logits
            .iter()
            .zip(&native_logits)
            .take((agreeing + 1).min(want_tokens.len()))
            .map(|(a, b)| safeformers_testkit::max_abs_diff(a, b))
            .collect();
        let largest = native_diffs.iter().fold(0.0f32, |a, &b| a.max(b));
        eprintln!(
            "{text:?}: f32 vs Transformers max |Δlogit| {worst:.2e}; native Q4_1 vs f32: \
             {agreeing} of {} tokens agree, max |Δlogit| {largest:.3}",
            want_tokens.len()
        );
        if agreeing == want_tokens.len() {
            native_agrees += 1;
        } else {
            // Where they part, native's token must be within that step's logit difference of
            // the f32 run's best (the flip is quantization noise on a near-tie, not a wrong
            // model).
            let at = &f32_logits[agreeing];
            let margin = at[f32_tokens[agreeing] as usize] - at[native_tokens[agreeing] as usize];
            eprintln!("{text:?}: parted at step {agreeing}, f32 margin {margin:.3}");
            assert!(
                margin <= native_diffs[agreeing],
                "{text}: native picked {} at step {agreeing}, {margin} below the best",
                native_tokens[agreeing]
            );
        }
    }
    assert!(
        native_agrees >= 4,
        "native Q4_1 greedy tokens equal the f32 run's on only {native_agrees} of 5 prompts"
    );
}

/// Logits of every new token of `ids` (a fresh cache), `[len × vocab]`.
fn prompt_logits_rows(model: &dyn CausalLm, ids: &[u32]) -> Vec<Vec<f32>> {
    let logits = common::prompt_logits(model, ids);
    logits.squeeze(0).unwrap().to_vec2::<f32>().unwrap()
}
