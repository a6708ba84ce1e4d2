//! Parity with Transformers on the tiny random decoders in `tests/fixtures/decoders/` (made by
//! `scripts/make_decoder_fixtures.py` with Transformers 5.23; see that folder's README).
//!
//! For every fixture folder whose `model_type` [`AutoModelForCausalLM`] supports, loaded through
//! it:
//! - `single`: logits of one sequence within 1e-4 (max abs diff) at every position;
//! - `padded`: logits of a right-padded batch within 1e-4 at the real-token positions;
//! - `greedy`: 10 greedy tokens per row of a left-padded batch identical to `generate`'s, with
//!   positions `cumsum(mask) - 1` (pads at 1) as Transformers computes them, prefill then one
//!   token per step through the KV cache;
//! - the logits of every cached decoding step within 1e-4 of one forward over the whole
//!   sequence without a cache.
//!
//! Folders of other model types are skipped with a note (their architectures come with their own
//! branches), but `gpt2` and `gpt2-scaled` must run.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use safeformers_models::{
    Architecture, AutoModel, AutoModelForCausalLM, CAUSAL_LM_MODEL_TYPES, CausalLm, Error, KvCache,
    TokenSequence,
};
use safeformers_testkit::{max_abs_diff, repo_fixture};
use safeformers_weights::{LoadPolicy, convert, open_checkpoint};
use serde_json::Value;

const TOLERANCE: f32 = 1e-4;

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn int_rows(value: &Value) -> Vec<Vec<u32>> {
    common::json_rows(value, |x| x.as_u64().expect("an id") as u32)
}

/// `[batch][seq][vocab]` floats.
fn logits_of(value: &Value) -> Vec<Vec<Vec<f32>>> {
    value
        .as_array()
        .expect("batch")
        .iter()
        .map(|row| common::json_rows(row, |x| x.as_f64().expect("a float") as f32))
        .collect()
}

fn matrix_u32(rows: &[Vec<u32>]) -> Tensor {
    let (batch, seq) = (rows.len(), rows[0].len());
    Tensor::from_vec(rows.concat(), (batch, seq), &Device::Cpu).unwrap()
}

fn matrix_i64(rows: &[Vec<i64>]) -> Tensor {
    let (batch, seq) = (rows.len(), rows[0].len());
    Tensor::from_vec(rows.concat(), (batch, seq), &Device::Cpu).unwrap()
}

/// Position ids as Transformers' `generate` makes them: `cumsum(mask) - 1`, 1 at padding.
fn positions_from_mask(mask: &[Vec<u32>]) -> Vec<Vec<i64>> {
    mask.iter()
        .map(|row| {
            let mut seen = 0i64;
            row.iter()
                .map(|&m| {
                    seen += i64::from(m);
                    if m == 0 { 1 } else { seen - 1 }
                })
                .collect()
        })
        .collect()
}

/// Runs the model without a cache over whole sequences; logits `[batch][seq][vocab]`.
fn forward_all(model: &dyn CausalLm, ids: &[Vec<u32>], mask: &[Vec<u32>]) -> Vec<Vec<Vec<f32>>> {
    let positions = positions_from_mask(mask);
    let mut cache = model.new_cache();
    model
        .forward(
            &matrix_u32(ids),
            &matrix_i64(&positions),
            &matrix_u32(mask),
            &mut cache,
        )
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .to_vec3::<f32>()
        .unwrap()
}

/// Compares logits at the positions where `mask` is 1 (every position when `None`).
fn assert_logits_close(
    name: &str,
    case: &str,
    got: &[Vec<Vec<f32>>],
    expected: &[Vec<Vec<f32>>],
    mask: Option<&[Vec<u32>]>,
) {
    assert_eq!(got.len(), expected.len(), "{name} {case}: batch size");
    let mut worst = 0.0f32;
    for (b, (got_row, expected_row)) in got.iter().zip(expected).enumerate() {
        assert_eq!(got_row.len(), expected_row.len(), "{name} {case}: length");
        for (t, (g, e)) in got_row.iter().zip(expected_row).enumerate() {
            if mask.is_some_and(|mask| mask[b][t] == 0) {
                continue;
            }
            let diff = max_abs_diff(g, e);
            assert!(
                diff <= TOLERANCE,
                "{name} {case}: row {b} position {t}: max abs diff {diff} > {TOLERANCE}"
            );
            worst = worst.max(diff);
        }
    }
    println!("{name} {case}: max abs diff {worst:e}");
}

/// Greedy decoding with the cache; returns the new tokens per row and the logits of every
/// decoding step (the last prompt position, then each generated token), `[step][batch][vocab]`.
fn greedy(
    model: &dyn CausalLm,
    prompt: &[Vec<u32>],
    prompt_mask: &[Vec<u32>],
    steps: usize,
) -> (Vec<Vec<u32>>, Vec<Vec<Vec<f32>>>) {
    let batch = prompt.len();
    let mut cache = model.new_cache();
    let mut mask: Vec<Vec<u32>> = prompt_mask.to_vec();
    let mut positions = positions_from_mask(&mask);
    let mut logits = model
        .forward(
            &matrix_u32(prompt),
            &matrix_i64(&positions),
            &matrix_u32(&mask),
            &mut cache,
        )
        .unwrap();
    let mut new_tokens = vec![Vec::new(); batch];
    let mut step_logits = Vec::new();
    for _ in 0..steps {
        let last = logits.dim(1).unwrap() - 1;
        let rows = logits.narrow(1, last, 1).unwrap().squeeze(1).unwrap();
        let rows = rows.to_vec2::<f32>().unwrap();
        let next: Vec<u32> = rows.iter().map(|row| common::argmax(row)).collect();
        step_logits.push(rows);
        for (b, &token) in next.iter().enumerate() {
            new_tokens[b].push(token);
            mask[b].push(1);
        }
        positions = positions
            .iter()
            .map(|row| vec![row.last().copied().unwrap() + 1])
            .collect();
        // Each row's next position follows its last real one (pads were at 1, never last).
        let step_ids: Vec<Vec<u32>> = next.iter().map(|&t| vec![t]).collect();
        logits = model
            .forward(
                &matrix_u32(&step_ids),
                &matrix_i64(&positions),
                &matrix_u32(&mask),
                &mut cache,
            )
            .unwrap();
    }
    (new_tokens, step_logits)
}

fn check_fixture(dir: &Path, outputs: &Value) {
    let name = dir.file_name().unwrap().to_string_lossy().to_string();
    let model = AutoModelForCausalLM::load(dir, &LoadPolicy::default(), &Device::Cpu)
        .unwrap_or_else(|e| panic!("{name}: {e}"));

    // single: one sequence, every position.
    let single = &outputs["single"];
    let ids = int_rows(&single["input_ids"]);
    let ones: Vec<Vec<u32>> = ids.iter().map(|row| vec![1; row.len()]).collect();
    let got = forward_all(model.as_ref(), &ids, &ones);
    assert_logits_close(&name, "single", &got, &logits_of(&single["logits"]), None);

    // padded: right padding, real tokens only. Positions 0..len for the real tokens either way.
    let padded = &outputs["padded"];
    let ids = int_rows(&padded["input_ids"]);
    let mask = int_rows(&padded["attention_mask"]);
    let got = forward_all(model.as_ref(), &ids, &mask);
    assert_logits_close(
        &name,
        "padded",
        &got,
        &logits_of(&padded["logits"]),
        Some(&mask),
    );

    // greedy: left padding, prefill + cached steps, tokens identical.
    let case = &outputs["greedy"];
    let prompt = int_rows(&case["input_ids"]);
    let prompt_mask = int_rows(&case["attention_mask"]);
    let expected = int_rows(&case["new_tokens"]);
    let steps = expected[0].len();
    let (new_tokens, step_logits) = greedy(model.as_ref(), &prompt, &prompt_mask, steps);
    assert_eq!(new_tokens, expected, "{name}: greedy tokens");
    println!("{name} greedy: {steps} tokens per row identical");

    // KV cache vs. a full recompute of prompt + generated tokens (the last token's logits were
    // never needed by greedy and are not compared). Dynamic NTK rope differs by design: cached
    // keys keep the frequencies of the length at which they were computed (as in Transformers).
    let rope_type = model
        .config()
        .raw()
        .get("rope_parameters")
        .or_else(|| model.config().raw().get("rope_scaling"))
        .and_then(|rope| rope.get("rope_type").or_else(|| rope.get("type")))
        .and_then(Value::as_str)
        .unwrap_or("default")
        .to_string();
    if rope_type == "dynamic" {
        println!("{name}: KV cache vs recompute skipped (dynamic rope rescales with length)");
        return;
    }
    let full_ids: Vec<Vec<u32>> = prompt
        .iter()
        .zip(&new_tokens)
        .map(|(p, n)| p.iter().chain(n).copied().collect())
        .collect();
    let full_mask: Vec<Vec<u32>> = prompt_mask
        .iter()
        .map(|m| {
            m.iter()
                .copied()
                .chain(std::iter::repeat_n(1, steps))
                .collect()
        })
        .collect();
    let full = forward_all(model.as_ref(), &full_ids, &full_mask);
    let prompt_len = prompt[0].len();
    let mut worst = 0.0f32;
    for (step, rows) in step_logits.iter().enumerate() {
        for (b, row) in rows.iter().enumerate() {
            let diff = max_abs_diff(row, &full[b][prompt_len - 1 + step]);
            assert!(
                diff <= TOLERANCE,
                "{name}: cached step {step} row {b}: max abs diff {diff} to a full recompute"
            );
            worst = worst.max(diff);
        }
    }
    println!("{name} kv-cache: max abs diff to recompute {worst:e}");
}

#[test]
fn every_supported_fixture_matches_transformers() {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(repo_fixture("decoders"))
        .expect("tests/fixtures/decoders (run scripts/make_decoder_fixtures.py)")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.join("outputs.json").is_file())
        .collect();
    dirs.sort();
    let mut checked = Vec::new();
    for dir in &dirs {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let outputs = read_json(&dir.join("outputs.json"));
        let model_type = outputs["model_type"].as_str().expect("model_type");
        if !CAUSAL_LM_MODEL_TYPES.contains(&model_type) {
            println!("{name}: skipped, model_type `{model_type}` not implemented on this branch");
            continue;
        }
        check_fixture(dir, &outputs);
        checked.push(name);
    }
    for required in [
        "gpt2",
        "gpt2-scaled",
        "llama",
        "llama-rope-linear",
        "llama-rope-dynamic",
        "llama-rope-llama3",
        "llama-rope-yarn",
        "llama-bias-headdim",
        "mistral",
        "qwen2",
        "qwen2-sliding",
        "gemma",
        "phi3",
        "phi3-longrope",
        "phi3-partial-window",
        "qwen3",
        "qwen3-tied-sliding",
    ] {
        assert!(
            checked.iter().any(|name| name == required),
            "fixture {required} was not checked (found {dirs:?})"
        );
    }
}

/// The tensors of the `gpt2` fixture as (name, shape, values).
fn gpt2_tensors() -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let checkpoint = open_checkpoint(
        &repo_fixture("decoders").join("gpt2"),
        &LoadPolicy::default(),
    )
    .unwrap();
    checkpoint
        .tensors()
        .map(|view| {
            (
                view.name.to_string(),
                view.shape.to_vec(),
                convert::to_f32(&view).unwrap(),
            )
        })
        .collect()
}

/// A copy of the `gpt2` fixture with its tensors renamed by `rename` and its config edited.
fn gpt2_variant(
    label: &str,
    rename: impl Fn(&str) -> Option<String>,
    extra: &[(String, Vec<usize>, Vec<f32>)],
    config_edit: impl Fn(&mut serde_json::Map<String, Value>),
) -> PathBuf {
    let dir = common::temp_dir(label);
    let mut tensors: Vec<_> = gpt2_tensors()
        .into_iter()
        .filter_map(|(name, shape, values)| rename(&name).map(|name| (name, shape, values)))
        .collect();
    tensors.extend(extra.iter().cloned());
    common::write_safetensors(&dir.join("model.safetensors"), &tensors);
    let mut config = read_json(&repo_fixture("decoders").join("gpt2/config.json"));
    config_edit(config.as_object_mut().unwrap());
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    dir
}

/// The worst max abs diff over the `single` case of the `gpt2` fixture for the model in `dir`.
fn single_case_diff(dir: &Path) -> Result<f32, Error> {
    let outputs = read_json(&repo_fixture("decoders").join("gpt2/outputs.json"));
    let model = AutoModelForCausalLM::load(dir, &LoadPolicy::default(), &Device::Cpu)?;
    let ids = int_rows(&outputs["single"]["input_ids"]);
    let ones: Vec<Vec<u32>> = ids.iter().map(|row| vec![1; row.len()]).collect();
    let got = forward_all(model.as_ref(), &ids, &ones);
    let expected = logits_of(&outputs["single"]["logits"]);
    Ok(got[0]
        .iter()
        .zip(&expected[0])
        .map(|(g, e)| max_abs_diff(g, e))
        .fold(0.0, f32::max))
}

/// The original OpenAI checkpoints were saved from `GPT2Model`: no `transformer.` prefix.
#[test]
fn gpt2_without_transformer_prefix_loads() {
    let dir = gpt2_variant(
        "gpt2-noprefix",
        |name| Some(name.trim_start_matches("transformer.").to_string()),
        &[],
        |_| {},
    );
    let diff = single_case_diff(&dir).unwrap();
    assert!(diff <= TOLERANCE, "unprefixed gpt2: max abs diff {diff}");
    let _ = std::fs::remove_dir_all(dir);
}

/// `tie_word_embeddings: false` reads `lm_head.weight`, and its absence is an error naming it.
#[test]
fn untied_gpt2_reads_lm_head_or_names_it_missing() {
    let wte = gpt2_tensors()
        .into_iter()
        .find(|(name, _, _)| name == "transformer.wte.weight")
        .unwrap();
    let untie = |config: &mut serde_json::Map<String, Value>| {
        config.insert("tie_word_embeddings".into(), Value::Bool(false));
    };
    let lm_head = ("lm_head.weight".to_string(), wte.1.clone(), wte.2.clone());
    let dir = gpt2_variant("gpt2-untied", |n| Some(n.to_string()), &[lm_head], untie);
    let diff = single_case_diff(&dir).unwrap();
    assert!(diff <= TOLERANCE, "untied gpt2: max abs diff {diff}");
    let _ = std::fs::remove_dir_all(dir);

    // A different lm_head changes the logits: the head really is read.
    let scaled: Vec<f32> = wte.2.iter().map(|x| x * 2.0).collect();
    let lm_head = ("lm_head.weight".to_string(), wte.1.clone(), scaled);
    let dir = gpt2_variant("gpt2-untied2", |n| Some(n.to_string()), &[lm_head], untie);
    let diff = single_case_diff(&dir).unwrap();
    assert!(
        diff > 1.0,
        "a doubled lm_head changed the logits by only {diff}"
    );
    let _ = std::fs::remove_dir_all(dir);

    let dir = gpt2_variant("gpt2-nohead", |n| Some(n.to_string()), &[], untie);
    match single_case_diff(&dir) {
        Err(Error::MissingTensor { tensor, .. }) => assert_eq!(tensor, "lm_head.weight"),
        other => panic!("expected a missing lm_head.weight, got {other:?}"),
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Hostile inputs: out-of-vocabulary ids, positions past the table, a mask that does not cover
/// the cache: errors, not panics.
#[test]
fn bad_inputs_are_errors() {
    let model = AutoModelForCausalLM::load(
        &repo_fixture("decoders").join("gpt2"),
        &LoadPolicy::default(),
        &Device::Cpu,
    )
    .unwrap();
    let vocab = model.vocab_size() as u32;
    let context = model.context_length().unwrap() as i64;
    let mut cache = model.new_cache();
    let run = |ids: &[u32], positions: &[i64], mask: &[u32], cache: &mut KvCache| {
        model.forward(
            &matrix_u32(&[ids.to_vec()]),
            &matrix_i64(&[positions.to_vec()]),
            &matrix_u32(&[mask.to_vec()]),
            cache,
        )
    };
    assert!(matches!(
        run(&[vocab], &[0], &[1], &mut cache),
        Err(Error::Input {
            input: "input_ids",
            ..
        })
    ));
    assert!(matches!(
        run(&[1], &[context], &[1], &mut cache),
        Err(Error::ContextTooLong { .. })
    ));
    run(&[1, 2], &[0, 1], &[1, 1], &mut cache).unwrap();
    assert_eq!(cache.seq_len(), 2);
    assert!(matches!(
        run(&[3], &[2], &[1], &mut cache),
        Err(Error::Input {
            input: "attention_mask",
            ..
        })
    ));
    run(&[3], &[2], &[1, 1, 1], &mut cache).unwrap();
    assert_eq!(cache.seq_len(), 3);
}

/// A decoder config of a type we do not implement, whose `auto_map` names code for
/// `AutoModelForCausalLM`, is refused as policy before any weight file is looked at (the folder
/// has none).
#[test]
fn remote_code_decoder_is_refused_before_weights() {
    let dir = common::temp_dir("remote-decoder");
    let config = serde_json::json!({
        "model_type": "my-decoder",
        "architectures": ["MyDecoderForCausalLM"],
        "auto_map": {
            "AutoConfig": "configuration_my.MyDecoderConfig",
            "AutoModelForCausalLM": "modeling_my.MyDecoderForCausalLM"
        }
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    match AutoModelForCausalLM::load(&dir, &LoadPolicy::default(), &Device::Cpu) {
        Err(error @ Error::RemoteCodeRefused { .. }) => {
            assert!(error.is_policy_refusal());
            assert!(
                error
                    .to_string()
                    .contains("modeling_my.MyDecoderForCausalLM"),
                "{error}"
            );
        }
        other => panic!("expected a remote-code refusal, got {other:?}"),
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Qwen3 as a base model (`AutoModel`: `Qwen3Model`, as Qwen3-Embedding runs it): the last
/// hidden state of one sequence and of a left-padded batch (positions 0..L on every row, as
/// sentence-transformers runs it) within 1e-4 of Transformers' (the fixtures' `hidden` goldens),
/// the unpadded path (`token_states`, each row's real tokens alone from position 0) as well, and
/// each row's last state L2-normalized (last-token pooling) within 1e-4 of the pooled golden.
#[test]
fn qwen3_base_model_hidden_states_match_transformers() {
    for name in ["qwen3", "qwen3-tied-sliding"] {
        let dir = repo_fixture("decoders").join(name);
        let hidden = read_json(&dir.join("outputs.json"))["hidden"].clone();
        let model = AutoModel::load(&dir, &LoadPolicy::default(), &Device::Cpu).unwrap();
        assert_eq!(model.architecture(), Architecture::Qwen3);
        let states = |ids: &[Vec<u32>], mask: Option<&[Vec<u32>]>| {
            let mask = mask.map(matrix_u32);
            let output = model
                .forward(&matrix_u32(ids), mask.as_ref(), None)
                .unwrap();
            output
                .last_hidden_state()
                .unwrap()
                .to_vec3::<f32>()
                .unwrap()
        };

        let single = &hidden["single"];
        let ids = int_rows(&single["input_ids"]);
        let want = logits_of(&single["last_hidden_state"]);
        assert_logits_close(name, "hidden single", &states(&ids, None), &want, None);

        let padded = &hidden["left_padded"];
        let ids = int_rows(&padded["input_ids"]);
        let mask = int_rows(&padded["attention_mask"]);
        let want = logits_of(&padded["last_hidden_state"]);
        let got = states(&ids, Some(&mask));
        assert_logits_close(name, "hidden left-padded", &got, &want, Some(&mask));

        // Unpadded: each row's real tokens alone (a suffix, left padding).
        let real: Vec<Vec<u32>> = ids
            .iter()
            .zip(&mask)
            .map(|(row, flags)| {
                row.iter()
                    .zip(flags)
                    .filter(|(_, flag)| **flag != 0)
                    .map(|(id, _)| *id)
                    .collect()
            })
            .collect();
        let sequences: Vec<TokenSequence<'_>> = real
            .iter()
            .map(|ids| TokenSequence {
                input_ids: ids,
                token_type_ids: None,
            })
            .collect();
        let unpadded = model.token_states(&sequences).unwrap().unwrap();
        let width = want[0][0].len();
        let mut worst = 0.0f32;
        for ((states, want_row), flags) in unpadded.iter().zip(&want).zip(&mask) {
            let want_real: Vec<&Vec<f32>> = want_row
                .iter()
                .zip(flags)
                .filter(|(_, flag)| **flag != 0)
                .map(|(state, _)| state)
                .collect();
            assert_eq!(states.len(), want_real.len() * width);
            for (got, want) in states.chunks_exact(width).zip(want_real) {
                worst = worst.max(max_abs_diff(got, want));
            }
        }
        assert!(worst <= TOLERANCE, "{name} unpadded: {worst}");
        println!("{name} hidden unpadded: max abs diff {worst:e}");

        let pooled = logits_of(&Value::Array(vec![padded["last_token_normalized"].clone()]));
        let mut worst = 0.0f32;
        for (row, want) in got.iter().zip(&pooled[0]) {
            let last = row.last().unwrap();
            let norm = last.iter().map(|v| v * v).sum::<f32>().sqrt();
            let normalized: Vec<f32> = last.iter().map(|v| v / norm).collect();
            worst = worst.max(max_abs_diff(&normalized, want));
        }
        assert!(worst <= TOLERANCE, "{name} pooled: {worst}");
        println!("{name} last-token pooled: max abs diff {worst:e}");
    }
}
