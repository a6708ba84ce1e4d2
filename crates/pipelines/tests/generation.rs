//! The generation loop and the logits processors through the public API.
//!
//! Processors: goldens of `scripts/make_generation_fixtures.py` (Transformers' own processor
//! classes applied to fixed scores), matched within 1e-6. The loop runs on a small fake
//! [`CausalLm`] whose next-token scores depend on the real (unmasked) tokens it has cached and
//! on the position it is given, so wrong padding, positions or masks change its output.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::needless_range_loop
)]

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use candle_core::{Device, Tensor};
use safeformers_models::{CausalLm, KvCache, LogitsAt, ModelConfig};
use safeformers_pipelines::PipelineError;
use safeformers_pipelines::generation::{
    GenerateOptions, GenerationConfig, GenerationParams, LogitsProcessor, StopReason, generate,
    process_logits,
};
use serde_json::Value;

const VOCAB: usize = 16;

/// What the fake model was given on each call.
#[derive(Debug, Clone)]
struct Call {
    input_ids: Vec<Vec<u32>>,
    positions: Vec<Vec<i64>>,
    mask: Vec<Vec<u32>>,
    last_logits: Vec<Vec<f32>>,
}

#[derive(Debug)]
struct FakeLm {
    config: ModelConfig,
    context: Option<usize>,
    calls: Mutex<Vec<Call>>,
}

impl FakeLm {
    fn new(context: Option<usize>) -> FakeLm {
        FakeLm {
            config: ModelConfig::from_json_str(
                r#"{"model_type": "fake"}"#,
                Path::new("fake/config.json"),
            )
            .unwrap(),
            context,
            calls: Mutex::new(Vec::new()),
        }
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// Scores peaked at a token that depends on the visible tokens and the position, falling
    /// off with the distance from it (so that sampling has several candidates).
    fn scores(visible: &[u32], position: i64) -> Vec<f32> {
        let sum: u64 = visible.iter().map(|&t| u64::from(t)).sum();
        let last = visible.last().map_or(0, |&t| u64::from(t));
        let position = position as u64;
        let preferred = (sum * 7 + position * position * 3 + last * 11 + 5) % VOCAB as u64;
        (0..VOCAB as u64)
            .map(|v| {
                let distance = (v + VOCAB as u64 - preferred) % VOCAB as u64;
                -0.4 * distance as f32
            })
            .collect()
    }
}

impl CausalLm for FakeLm {
    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn vocab_size(&self) -> usize {
        VOCAB
    }

    fn context_length(&self) -> Option<usize> {
        self.context
    }

    fn new_cache(&self) -> KvCache {
        KvCache::new(1)
    }

    fn forward_at(
        &self,
        input_ids: &Tensor,
        position_ids: &Tensor,
        attention_mask: &Tensor,
        cache: &mut KvCache,
        at: LogitsAt,
    ) -> safeformers_models::Result<Tensor> {
        let (batch, new) = input_ids.dims2()?;
        // The cache holds the token ids themselves, [batch, 1, seq, 1].
        let keys = input_ids
            .to_dtype(candle_core::DType::F32)?
            .reshape((batch, 1, new, 1))?;
        let (all, _) = cache.append(0, &keys, &keys)?;
        let all: Vec<Vec<f32>> = all.reshape((batch, all.dim(2)?))?.to_vec2()?;
        let mask: Vec<Vec<u32>> = attention_mask.to_vec2()?;
        let positions: Vec<Vec<i64>> = position_ids.to_vec2()?;
        assert_eq!(
            mask[0].len(),
            all[0].len(),
            "mask covers cached + new tokens"
        );
        let past = all[0].len() - new;
        let mut logits = Vec::new();
        let mut last = Vec::new();
        for row in 0..batch {
            for j in 0..new {
                let visible: Vec<u32> = (0..=past + j)
                    .filter(|&k| mask[row][k] == 1)
                    .map(|k| all[row][k] as u32)
                    .collect();
                let scores = FakeLm::scores(&visible, positions[row][j]);
                if j + 1 == new {
                    last.push(scores.clone());
                }
                logits.extend(scores);
            }
        }
        self.calls.lock().unwrap().push(Call {
            input_ids: input_ids.to_vec2()?,
            positions,
            mask,
            last_logits: last,
        });
        at.select(Tensor::from_vec(logits, (batch, new, VOCAB), &Device::Cpu)?)
    }
}

fn greedy(max_new_tokens: usize) -> GenerationParams {
    GenerationConfig {
        max_new_tokens: Some(max_new_tokens),
        do_sample: Some(false),
        ..GenerationConfig::default()
    }
    .resolve()
    .unwrap()
}

fn run(
    model: &FakeLm,
    prompts: &[Vec<u32>],
    params: &GenerationParams,
) -> Vec<safeformers_pipelines::generation::GeneratedRow> {
    generate(
        model,
        prompts,
        params,
        &GenerateOptions::default(),
        &mut |_, _| Ok(()),
    )
    .unwrap()
}

#[test]
fn a_left_padded_batch_generates_what_each_prompt_generates_alone() {
    let prompts = vec![vec![5, 1, 9, 2, 7], vec![4], vec![8, 8, 3]];
    let params = greedy(6);
    let batched = run(&FakeLm::new(None), &prompts, &params);
    for (prompt, row) in prompts.iter().zip(&batched) {
        let alone = run(&FakeLm::new(None), std::slice::from_ref(prompt), &params);
        assert_eq!(row.tokens, alone[0].tokens, "prompt {prompt:?}");
        assert_eq!(row.tokens.len(), 6);
        assert_eq!(row.stop_reason, StopReason::Length);
    }
}

#[test]
fn prefill_and_decode_get_transformers_positions_and_masks() {
    let model = FakeLm::new(None);
    run(&model, &[vec![5, 1, 9], vec![4]], &greedy(3));
    let calls = model.calls();
    assert_eq!(
        calls.len(),
        3,
        "one prefill and two decode steps for 3 tokens"
    );
    let prefill = &calls[0];
    assert_eq!(
        prefill.input_ids[1][..2],
        [0, 0],
        "left padding (pad 0 without a pad id)"
    );
    assert_eq!(prefill.positions, vec![vec![0, 1, 2], vec![1, 1, 0]]);
    assert_eq!(prefill.mask, vec![vec![1, 1, 1], vec![0, 0, 1]]);
    assert_eq!(calls[1].positions, vec![vec![3], vec![1]]);
    assert_eq!(calls[1].mask[1], vec![0, 0, 1, 1]);
    assert_eq!(calls[2].positions, vec![vec![4], vec![2]]);
}

#[test]
fn eos_finishes_a_row_whose_later_tokens_are_padding() {
    let model = FakeLm::new(None);
    let probe = run(&model, &[vec![5, 1, 9], vec![4]], &greedy(5));
    // Make the second token of row 0 an EOS id; row 1 must go on.
    let eos = probe[0].tokens[1];
    assert!(
        !probe[1].tokens[..4].contains(&eos),
        "choose another fixture"
    );
    let params = GenerationConfig {
        max_new_tokens: Some(5),
        eos_token_id: Some(vec![eos, 99]),
        pad_token_id: Some(15),
        ..GenerationConfig::default()
    }
    .resolve()
    .unwrap();
    let mut streamed: Vec<(usize, u32)> = Vec::new();
    let rows = generate(
        &model,
        &[vec![5, 1, 9], vec![4]],
        &params,
        &GenerateOptions::default(),
        &mut |row, token| {
            streamed.push((row, token));
            Ok(())
        },
    )
    .unwrap();
    assert_eq!(rows[0].stop_reason, StopReason::Eos);
    assert_eq!(rows[0].generated, 2);
    assert_eq!(rows[0].new_tokens(), &probe[0].tokens[..2]);
    assert_eq!(rows[0].tokens[2..], [15, 15, 15], "pad fill after EOS");
    assert_eq!(rows[1].stop_reason, StopReason::Length);
    assert_eq!(rows[1].generated, 5);
    // The callback saw exactly each row's own tokens, in order.
    let of = |row| -> Vec<u32> {
        streamed
            .iter()
            .filter(|(r, _)| *r == row)
            .map(|(_, t)| *t)
            .collect()
    };
    assert_eq!(of(0), rows[0].new_tokens());
    assert_eq!(of(1), rows[1].new_tokens());
}

#[test]
fn min_new_tokens_keeps_eos_away() {
    let model = FakeLm::new(None);
    let probe = run(&model, &[vec![5, 1, 9]], &greedy(1));
    let eos = probe[0].tokens[0];
    let params = GenerationConfig {
        max_new_tokens: Some(4),
        min_new_tokens: Some(3),
        eos_token_id: Some(vec![eos]),
        ..GenerationConfig::default()
    }
    .resolve()
    .unwrap();
    let rows = run(&model, &[vec![5, 1, 9]], &params);
    assert!(!rows[0].tokens[..3].contains(&eos), "{:?}", rows[0].tokens);
    assert!(rows[0].generated >= 3);
}

#[test]
fn max_length_counts_the_padded_prompt() {
    let params = GenerationConfig {
        max_length: Some(7),
        ..GenerationConfig::default()
    }
    .resolve()
    .unwrap();
    let rows = run(&FakeLm::new(None), &[vec![1, 2, 3, 4, 5], vec![6]], &params);
    assert!(rows.iter().all(|row| row.tokens.len() == 2));
    let too_short = GenerationConfig {
        max_length: Some(3),
        ..GenerationConfig::default()
    }
    .resolve()
    .unwrap();
    let error = generate(
        &FakeLm::new(None),
        &[vec![1, 2, 3, 4]],
        &too_short,
        &GenerateOptions::default(),
        &mut |_, _| Ok(()),
    )
    .unwrap_err();
    assert!(error.to_string().contains("max_length"), "{error}");
}

#[test]
fn stop_strings_stop_once_the_text_contains_them_and_keep_them() {
    // Token t decodes to the letter 'a' + t.
    let decode = |ids: &[u32]| -> safeformers_pipelines::Result<String> {
        Ok(ids.iter().map(|&t| char::from(b'a' + t as u8)).collect())
    };
    let model = FakeLm::new(None);
    let prompt = vec![5u32, 1, 9];
    let probe = run(&model, std::slice::from_ref(&prompt), &greedy(8));
    let text = decode(&probe[0].tokens).unwrap();
    // The stop string spans the 3rd and 4th new tokens.
    let stop = text[2..4].to_string();
    assert!(!text[..3].contains(&stop), "choose another fixture: {text}");
    let params = GenerationConfig {
        max_new_tokens: Some(8),
        stop_strings: Some(vec![stop.clone(), "zzzz".into()]),
        ..GenerationConfig::default()
    }
    .resolve()
    .unwrap();
    let options = GenerateOptions {
        decode: Some(&decode),
        ..GenerateOptions::default()
    };
    let rows = generate(&model, &[prompt], &params, &options, &mut |_, _| Ok(())).unwrap();
    assert_eq!(rows[0].stop_reason, StopReason::StopString);
    assert_eq!(
        rows[0].tokens,
        probe[0].tokens[..4],
        "stops right after, string kept"
    );
    // A stop string already in the prompt does not stop anything.
    let in_prompt = GenerationConfig {
        max_new_tokens: Some(3),
        stop_strings: Some(vec!["fbj".into()]),
        ..GenerationConfig::default()
    }
    .resolve()
    .unwrap();
    let rows = generate(
        &model,
        &[vec![5, 1, 9]],
        &in_prompt,
        &options,
        &mut |_, _| Ok(()),
    )
    .unwrap();
    assert_eq!(rows[0].stop_reason, StopReason::Length);
}

#[test]
fn a_prompt_longer_than_the_context_is_an_error_or_truncated_on_request() {
    let model = FakeLm::new(Some(8));
    let prompt: Vec<u32> = (1..=7).collect();
    let error = generate(
        &model,
        std::slice::from_ref(&prompt),
        &greedy(3),
        &GenerateOptions::default(),
        &mut |_, _| Ok(()),
    )
    .unwrap_err();
    match &error {
        PipelineError::PromptTooLong {
            prompt_tokens: 7,
            max_new_tokens: 3,
            context_length: 8,
        } => {}
        other => panic!("{other:?}"),
    }
    assert!(error.to_string().contains("--truncate"), "{error}");
    assert!(model.calls().is_empty(), "nothing ran");

    let options = GenerateOptions {
        truncate: true,
        ..GenerateOptions::default()
    };
    let rows = generate(&model, &[prompt], &greedy(3), &options, &mut |_, _| Ok(())).unwrap();
    assert_eq!(
        rows[0].prompt,
        vec![3, 4, 5, 6, 7],
        "the last 8 - 3 tokens kept"
    );
    assert_eq!(model.calls()[0].input_ids[0], vec![3, 4, 5, 6, 7]);
    // No room at all for a prompt: still an error, even with truncation.
    let error = generate(
        &FakeLm::new(Some(3)),
        &[vec![1]],
        &greedy(3),
        &options,
        &mut |_, _| Ok(()),
    )
    .unwrap_err();
    assert!(matches!(error, PipelineError::PromptTooLong { .. }));
}

#[test]
fn a_length_limit_of_usize_max_is_bounded_by_the_context_and_preallocates_nothing() {
    // From a flag or a model file, as max_new_tokens or as max_length: an error naming the
    // context window, with or without truncation, before the model runs.
    for config in [
        GenerationConfig {
            max_new_tokens: Some(usize::MAX),
            ..GenerationConfig::default()
        },
        GenerationConfig {
            max_length: Some(usize::MAX),
            ..GenerationConfig::default()
        },
    ] {
        let params = config.resolve().unwrap();
        for truncate in [false, true] {
            let model = FakeLm::new(Some(64));
            let options = GenerateOptions {
                truncate,
                ..GenerateOptions::default()
            };
            let error =
                generate(&model, &[vec![1, 2]], &params, &options, &mut |_, _| Ok(())).unwrap_err();
            assert!(
                matches!(
                    error,
                    PipelineError::PromptTooLong {
                        context_length: 64,
                        ..
                    }
                ),
                "{config:?}: {error:?}"
            );
            assert!(model.calls().is_empty(), "nothing ran");
        }
    }
    // A model that states no context window: the loop runs until a stop (here EOS on the
    // third token) without reserving room for usize::MAX tokens first.
    let model = FakeLm::new(None);
    let probe = run(&model, &[vec![5, 1, 9]], &greedy(3));
    let eos = probe[0].tokens[2];
    assert!(
        !probe[0].tokens[..2].contains(&eos),
        "choose another fixture"
    );
    let params = GenerationConfig {
        max_new_tokens: Some(usize::MAX),
        min_new_tokens: Some(2),
        eos_token_id: Some(vec![eos]),
        ..GenerationConfig::default()
    }
    .resolve()
    .unwrap();
    let rows = run(&FakeLm::new(None), &[vec![5, 1, 9]], &params);
    assert_eq!(rows[0].stop_reason, StopReason::Eos);
    assert_eq!(rows[0].tokens, probe[0].tokens);
}

#[test]
fn an_empty_prompt_starts_from_bos_or_is_an_error() {
    let error = generate(
        &FakeLm::new(None),
        &[vec![]],
        &greedy(2),
        &GenerateOptions::default(),
        &mut |_, _| Ok(()),
    )
    .unwrap_err();
    assert!(error.to_string().contains("bos_token_id"), "{error}");
    let params = GenerationConfig {
        max_new_tokens: Some(2),
        bos_token_id: Some(1),
        ..GenerationConfig::default()
    }
    .resolve()
    .unwrap();
    let rows = run(&FakeLm::new(None), &[vec![]], &params);
    assert_eq!(rows[0].prompt, vec![1]);
}

fn sampling(seed: u64, top_k: usize) -> (Vec<Vec<u32>>, Vec<Call>) {
    let model = FakeLm::new(None);
    let params = GenerationConfig {
        max_new_tokens: Some(12),
        do_sample: Some(true),
        temperature: Some(1.5),
        top_k: Some(top_k),
        ..GenerationConfig::default()
    }
    .resolve()
    .unwrap();
    let options = GenerateOptions {
        seed: Some(seed),
        ..GenerateOptions::default()
    };
    let rows = generate(
        &model,
        &[vec![5, 1, 9], vec![2, 2]],
        &params,
        &options,
        &mut |_, _| Ok(()),
    )
    .unwrap();
    (rows.into_iter().map(|r| r.tokens).collect(), model.calls())
}

#[test]
fn sampling_is_deterministic_per_seed_and_stays_in_the_kept_set() {
    let (first, calls) = sampling(42, 3);
    assert_eq!(first, sampling(42, 3).0);
    assert_ne!(first, sampling(43, 3).0, "another seed, other draws");
    let mut off_greedy = 0;
    for (step, call) in calls.iter().enumerate() {
        for (row, scores) in call.last_logits.iter().enumerate() {
            let mut order: Vec<usize> = (0..VOCAB).collect();
            order.sort_by(|&a, &b| scores[b].partial_cmp(&scores[a]).unwrap());
            let chosen = first[row][step] as usize;
            assert!(order[..3].contains(&chosen), "step {step} row {row}");
            off_greedy += usize::from(chosen != order[0]);
        }
    }
    assert!(off_greedy > 0, "sampling never left the greedy token");
}

/// The goldens of `scripts/make_generation_fixtures.py`.
fn processors_fixture() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/generation/processors.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn row_of(value: &Value) -> Vec<f32> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().map_or(f32::NEG_INFINITY, |f| f as f32))
        .collect()
}

#[test]
fn processors_match_transformers_within_1e6() {
    let fixture = processors_fixture();
    let input_ids: Vec<Vec<u32>> = fixture["input_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect()
        })
        .collect();
    let scores: Vec<Vec<f32>> = fixture["scores"]
        .as_array()
        .unwrap()
        .iter()
        .map(row_of)
        .collect();
    let cases = fixture["cases"].as_array().unwrap();
    assert!(cases.len() >= 15);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let mut processors = Vec::new();
        let mut min_new_tokens = 0;
        for processor in case["processors"].as_array().unwrap() {
            let value = processor["value"].as_f64().unwrap();
            processors.push(match processor["kind"].as_str().unwrap() {
                "repetition_penalty" => LogitsProcessor::RepetitionPenalty(value as f32),
                "temperature" => LogitsProcessor::Temperature(value as f32),
                "top_k" => LogitsProcessor::TopK(value as usize),
                "top_p" => LogitsProcessor::TopP(value as f32),
                "min_p" => LogitsProcessor::MinP(value as f32),
                "min_new_tokens" => {
                    min_new_tokens = value as usize;
                    continue;
                }
                other => panic!("{name}: unknown processor {other}"),
            });
        }
        let eos: Vec<u32> = case["eos_token_id"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let prompt_length = case["prompt_length"].as_u64().unwrap() as usize;
        for (row, expected) in case["output"].as_array().unwrap().iter().enumerate() {
            let ids = &input_ids[row];
            let new_tokens = ids.len() - prompt_length;
            let suppressed: &[u32] = if new_tokens < min_new_tokens {
                &eos
            } else {
                &[]
            };
            let mut got = scores[row].clone();
            process_logits(&processors, ids, suppressed, &mut got);
            let expected = row_of(expected);
            for (index, (g, e)) in got.iter().zip(&expected).enumerate() {
                let same = (g.is_infinite() && e.is_infinite() && g.signum() == e.signum())
                    || (g - e).abs() <= 1e-6;
                assert!(
                    same,
                    "{name} row {row} token {index}: got {g}, expected {e}"
                );
            }
        }
    }
}

#[test]
fn processors_in_the_fixture_remove_something() {
    // Guards the goldens themselves: most cases must differ from the raw scores, or the
    // comparison above would pass for processors that do nothing.
    let fixture = processors_fixture();
    let scores: Vec<Vec<f32>> = fixture["scores"]
        .as_array()
        .unwrap()
        .iter()
        .map(row_of)
        .collect();
    let changed = fixture["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|case| {
            case["output"]
                .as_array()
                .unwrap()
                .iter()
                .zip(&scores)
                .any(|(out, raw)| row_of(out) != *raw)
        })
        .count();
    // All but `min_new_tokens_done` (EOS no longer suppressed) and `top_k_50` (k above the
    // vocabulary), which check that a processor leaves scores alone when it should.
    assert_eq!(changed, 15, "cases that change the scores");
}

/// A fresh empty folder under the system's temporary directory.
fn scratch_dir(name: &str) -> PathBuf {
    safeformers_testkit::scratch_dir(&format!("generation-{name}"))
}

#[test]
fn generation_config_json_wins_and_config_json_is_the_fallback() {
    let dir = scratch_dir("fallback");
    let config_path = dir.join("config.json");
    let config: serde_json::Map<String, Value> = serde_json::from_str(
        r#"{"model_type": "gpt2", "eos_token_id": [5, 6], "bos_token_id": 1,
            "pad_token_id": null, "n_positions": 64}"#,
    )
    .unwrap();
    let from_config = GenerationConfig::for_model(&dir, &config, &config_path).unwrap();
    assert_eq!(from_config.eos_token_id, Some(vec![5, 6]));
    assert_eq!(from_config.bos_token_id, Some(1));
    assert_eq!(from_config.pad_token_id, None);

    std::fs::write(
        dir.join("generation_config.json"),
        r#"{"eos_token_id": 9, "do_sample": true, "top_p": 0.5, "unknown_key": {"x": 1}}"#,
    )
    .unwrap();
    let from_file = GenerationConfig::for_model(&dir, &config, &config_path).unwrap();
    assert_eq!(from_file.eos_token_id, Some(vec![9]));
    assert_eq!(
        from_file.bos_token_id, None,
        "config.json is not read when the file exists"
    );
    assert_eq!(from_file.top_p, Some(0.5));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_bad_or_oversized_generation_config_is_a_typed_error_naming_the_file() {
    let dir = scratch_dir("hostile");
    let path = dir.join("generation_config.json");
    std::fs::write(&path, r#"{"temperature": "hot"}"#).unwrap();
    match GenerationConfig::from_file(&path) {
        Err(PipelineError::Json { path: named, .. }) => assert_eq!(named, path),
        other => panic!("{other:?}"),
    }
    std::fs::write(&path, r#"{"eos_token_id": [1, "two"]}"#).unwrap();
    assert!(matches!(
        GenerationConfig::from_file(&path),
        Err(PipelineError::Json { .. })
    ));
    let huge = format!(r#"{{"pad": "{}"}}"#, "x".repeat(2 * 1024 * 1024));
    std::fs::write(&path, huge).unwrap();
    assert!(matches!(
        GenerationConfig::from_file(&path),
        Err(PipelineError::FileTooLarge { .. })
    ));
    let config: serde_json::Map<String, Value> =
        serde_json::from_str(r#"{"eos_token_id": "end"}"#).unwrap();
    let config_path = dir.join("config.json");
    std::fs::remove_file(&path).unwrap();
    match GenerationConfig::for_model(&dir, &config, &config_path) {
        Err(PipelineError::Json { path: named, .. }) => assert_eq!(named, config_path),
        other => panic!("{other:?}"),
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
