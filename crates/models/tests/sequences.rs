//! The sequence interface ([`CausalLm::forward_sequences`]) against Transformers' goldens in
//! `tests/fixtures/decoders/*/outputs.json` (made by `scripts/make_decoder_fixtures.py`): the
//! rows of each fixture's right-padded batch, run as sequences of their own lengths in one call
//! (no padding), and again in two calls (a prefill, then the rest continuing each cache), give
//! Transformers' logits at every real position within 1e-4 (the parity tests' tolerance).
//!
//! Dynamic and LongRoPE scaling choose their frequencies from the longest position of the call,
//! so in Transformers a padded row's logits depend on the batch; a sequence here is computed as
//! on its own, so for those fixtures the golden is the single-sequence case (in one call).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};

use candle_core::Device;
use safeformers_models::{
    AutoModelForCausalLM, CAUSAL_LM_MODEL_TYPES, CausalLm, LogitsAt, ModelConfig, SequenceCache,
    SequenceInput,
};
use safeformers_weights::LoadPolicy;
use serde_json::Value;

const TOLERANCE: f32 = 1e-4;

fn fixtures() -> Vec<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/decoders");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|dir| dir.join("outputs.json").is_file())
        .filter(|dir| {
            let config = ModelConfig::from_file(&dir.join("config.json")).unwrap();
            CAUSAL_LM_MODEL_TYPES.contains(&config.model_type.as_str())
        })
        .collect();
    dirs.sort();
    dirs
}

/// Whether the rotary frequencies depend on the call's longest position.
fn length_dependent(dir: &Path) -> bool {
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
    config.contains("\"dynamic\"") || config.contains("\"longrope\"")
}

/// Each real row of the fixture's `padded` case (or, for length-dependent rotary scaling, its
/// `single` case) and its golden logits `[len][vocab]`.
fn golden_rows(dir: &Path) -> Vec<(Vec<u32>, Vec<Vec<f32>>)> {
    let outputs: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("outputs.json")).unwrap()).unwrap();
    let length_dependent = length_dependent(dir);
    let padded = if length_dependent {
        &outputs["single"]
    } else {
        &outputs["padded"]
    };
    let rows = padded["input_ids"].as_array().unwrap();
    let no_masks = vec![Value::Null; rows.len()];
    let masks = padded["attention_mask"].as_array().unwrap_or(&no_masks);
    let logits = padded["logits"].as_array().unwrap();
    rows.iter()
        .zip(masks)
        .zip(logits)
        .map(|((ids, mask), logits)| {
            let len = match mask.as_array() {
                Some(mask) => mask.iter().filter(|m| m.as_u64() == Some(1)).count(),
                None => ids.as_array().unwrap().len(),
            };
            let ids: Vec<u32> = ids.as_array().unwrap()[..len]
                .iter()
                .map(|id| id.as_u64().unwrap() as u32)
                .collect();
            let logits: Vec<Vec<f32>> = logits.as_array().unwrap()[..len]
                .iter()
                .map(|row| {
                    row.as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x.as_f64().unwrap() as f32)
                        .collect()
                })
                .collect();
            (ids, logits)
        })
        .collect()
}

/// Runs `parts[i]` of every row in call `i`, each row over its own cache; returns each row's
/// logits of every position, in order.
fn run(model: &dyn CausalLm, rows: &[Vec<&[u32]>]) -> Vec<Vec<f32>> {
    let mut caches: Vec<SequenceCache> = rows.iter().map(|_| model.new_sequence_cache()).collect();
    let mut got = vec![Vec::new(); rows.len()];
    let calls = rows.iter().map(Vec::len).max().unwrap_or(0);
    for call in 0..calls {
        let mut inputs: Vec<SequenceInput<'_>> = rows
            .iter()
            .zip(caches.iter_mut())
            .map(|(parts, cache)| SequenceInput {
                tokens: parts[call],
                cache,
                logits: LogitsAt::All,
            })
            .collect();
        for (row, logits) in model
            .forward_sequences(&mut inputs)
            .unwrap()
            .into_iter()
            .enumerate()
        {
            got[row].extend(logits);
        }
    }
    got
}

#[test]
fn ragged_sequences_match_transformers() {
    let dirs = fixtures();
    assert!(dirs.len() >= 10, "fixtures missing: {dirs:?}");
    for dir in dirs {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let model = AutoModelForCausalLM::load(&dir, &LoadPolicy::default(), &Device::Cpu)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let rows = golden_rows(&dir);
        let whole: Vec<Vec<&[u32]>> = rows.iter().map(|(ids, _)| vec![ids.as_slice()]).collect();
        let split: Vec<Vec<&[u32]>> = rows
            .iter()
            .map(|(ids, _)| {
                let (head, tail) = ids.split_at(ids.len() / 2 + 1);
                vec![head, tail]
            })
            .collect();
        // With length-dependent frequencies, keys cached by an earlier call were rotated for a
        // shorter length (as in Transformers with a cache): only one call is comparable.
        let mut ways = vec![("one call", whole)];
        if !length_dependent(&dir) {
            ways.push(("prefill then the rest", split));
        }
        for (how, parts) in ways {
            let got = run(model.as_ref(), &parts);
            for (row, ((_, want), got)) in rows.iter().zip(&got).enumerate() {
                let want: Vec<f32> = want.concat();
                assert_eq!(got.len(), want.len(), "{name} {how} row {row}");
                let worst = safeformers_testkit::max_abs_diff(got, &want);
                assert!(worst < TOLERANCE, "{name} {how} row {row}: {worst}");
            }
        }
    }
}
