//! The command line's bounds, driven as an attacker drives them (issue 11, "CLI bounds" and
//! two of its smaller misses): lengths of `usize::MAX`, thread counts that exhaust the memory,
//! NaN and out-of-range sampling settings from flags and from `generation_config.json`, a
//! `generation_config.json` that is not one JSON object, attention masks other than 0/1,
//! token embeddings of a sentence-transformers folder, and module types that name code.
//!
//! Exit codes: 1 error, 2 usage error, 3 refused by security policy; every error is one line
//! and no command panics.

// Test code: a failed expectation is a panic with a message.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{assert_one_line_error, fixture, fixtures};

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

const USIZE_MAX: &str = "18446744073709551615";

fn safeformers(args: &[&str]) -> Output {
    common::safeformers_offline(args, None)
}

/// The binary, offline, with extra environment variables.
fn safeformers_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_safeformers"));
    command
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .env_remove("RAYON_NUM_THREADS")
        .stdin(Stdio::null());
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("the safeformers binary runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A usage error from clap (several lines: the message, then where to find help) naming the
/// flag and containing `needle`.
fn assert_clap_usage_error(output: &Output, flag: &str, needle: &str) {
    let stderr = stderr(output);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(output.stdout.is_empty(), "{output:?}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains(flag), "expected `{flag}` in: {stderr}");
    assert!(stderr.contains(needle), "expected `{needle}` in: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

fn assert_success(output: &Output) {
    assert_eq!(output.status.code(), Some(0), "{}", stderr(output));
}

/// A copy of the fixture folder `name` in a fresh temporary folder named by `tag`.
fn copy_fixture(name: &str, tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sf-bounds-cli-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(fixtures().join(name)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    dir
}

/// The most threads `--threads` accepts on this machine: 4 per core.
fn thread_limit() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from) * 4
}

#[test]
fn a_length_of_usize_max_is_bounded_by_the_context_window_not_a_panic() {
    let gpt2 = fixture("decoders/gpt2");
    for extra in [&[][..], &["--truncate"], &["--greedy"]] {
        let mut args = vec![
            "run",
            "text-generation",
            "--model",
            &gpt2,
            "--max-new-tokens",
            USIZE_MAX,
        ];
        args.extend_from_slice(extra);
        args.push("hello");
        assert_one_line_error(&safeformers(&args), 1, &["context window of 64 tokens"]);
    }
    let out = common::safeformers_offline(
        &["chat", "--model", &gpt2, "--max-new-tokens", USIZE_MAX],
        Some(b"hello\n"),
    );
    assert_one_line_error(&out, 1, &["context window of 64 tokens"]);
    // The same numbers from the model's generation_config.json.
    for (index, key) in ["max_new_tokens", "max_length"].into_iter().enumerate() {
        let dir = copy_fixture("decoders/gpt2", &format!("length-{index}"));
        std::fs::write(
            dir.join("generation_config.json"),
            format!(r#"{{"eos_token_id": 2, "{key}": {USIZE_MAX}}}"#),
        )
        .unwrap();
        let out = safeformers(&[
            "run",
            "text-generation",
            "--model",
            dir.to_str().unwrap(),
            "hello",
        ]);
        assert_one_line_error(&out, 1, &["context window of 64 tokens"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn thread_counts_beyond_four_per_core_or_zero_are_usage_errors() {
    let gpt2 = fixture("decoders/gpt2");
    let bert = fixture("models/bert");
    let limit = thread_limit();
    let over = (limit + 1).to_string();
    for count in ["100000", over.as_str(), USIZE_MAX] {
        for args in [
            vec!["run", "feature-extraction", "--model", &bert, "hello"],
            vec!["forward", "--model", &bert, "--input-ids", "2,3"],
            vec!["chat", "--model", &gpt2],
        ] {
            let mut args = args.clone();
            args.extend(["--threads", count]);
            let out = safeformers(&args);
            assert_clap_usage_error(&out, "--threads", &format!("limit of {limit}"));
        }
    }
    let out = safeformers(&[
        "forward",
        "--model",
        &bert,
        "--input-ids",
        "2",
        "--threads",
        "0",
    ]);
    assert_clap_usage_error(&out, "--threads", "at least 1");
    // The environment variable rayon reads is held to the same bound.
    let out = safeformers_with_env(
        &["forward", "--model", &bert, "--input-ids", "2,3", "--json"],
        &[("RAYON_NUM_THREADS", &over)],
    );
    assert_one_line_error(
        &out,
        2,
        &["RAYON_NUM_THREADS", &format!("limit of {limit}")],
    );
    // The bound itself is accepted.
    let at_limit = limit.to_string();
    let out = safeformers(&[
        "forward",
        "--model",
        &bert,
        "--input-ids",
        "2,3",
        "--threads",
        &at_limit,
    ]);
    assert_success(&out);
}

#[test]
fn sampling_flags_out_of_range_nan_or_infinite_are_usage_errors_naming_the_flag() {
    let gpt2 = fixture("decoders/gpt2");
    let cases: &[(&str, &[&str])] = &[
        ("--top-p", &["NaN", "2", "-0.1", "inf", "1e39"]),
        ("--min-p", &["NaN", "1.5", "-1", "-inf"]),
        ("--temperature", &["NaN", "0", "-1", "inf", "1e39"]),
        ("--repetition-penalty", &["NaN", "0", "-2", "inf"]),
        ("--max-new-tokens", &["0"]),
    ];
    for (flag, values) in cases {
        for value in *values {
            let flag_value = format!("{flag}={value}");
            let run = safeformers(&[
                "run",
                "text-generation",
                "--model",
                &gpt2,
                &flag_value,
                "hello",
            ]);
            assert_one_line_error(&run, 2, &[flag]);
            // Refused before stdin is read (so none is given: writing it could meet a closed pipe).
            let chat = safeformers(&["chat", "--model", &gpt2, &flag_value]);
            assert_one_line_error(&chat, 2, &[flag]);
        }
    }
    let out = common::safeformers_offline(&["chat", "--model", &gpt2, "--top-k", "0"], None);
    assert_one_line_error(&out, 2, &["--top-k"]);
    // The ends of the ranges are values Transformers takes.
    let out = safeformers(&[
        "run",
        "text-generation",
        "--model",
        &gpt2,
        "--top-p",
        "1",
        "--min-p",
        "0",
        "--repetition-penalty",
        "1.5",
        "--seed",
        "3",
        "--max-new-tokens",
        "2",
        "hello",
    ]);
    assert_success(&out);
}

/// A copy of the tiny GPT-2 whose `generation_config.json` is `text`.
fn gpt2_with_generation_config(tag: &str, text: &str) -> PathBuf {
    let dir = copy_fixture("decoders/gpt2", tag);
    std::fs::write(dir.join("generation_config.json"), text).unwrap();
    dir
}

#[test]
fn a_generation_config_json_value_out_of_range_is_an_error_naming_the_file_and_setting() {
    let cases = [
        (r#"{"top_p": 2}"#, "top_p"),
        (r#"{"top_p": 1.5, "do_sample": false}"#, "top_p"),
        (r#"{"min_p": -0.5}"#, "min_p"),
        (r#"{"temperature": -1}"#, "temperature"),
        (r#"{"temperature": 1e39}"#, "temperature"),
        (r#"{"repetition_penalty": 0}"#, "repetition_penalty"),
        (r#"{"max_new_tokens": 0}"#, "max_new_tokens"),
        // The pipeline samples when the model does not say otherwise: a zero temperature
        // cannot be used then.
        (r#"{"temperature": 0}"#, "temperature"),
    ];
    for (index, (text, field)) in cases.into_iter().enumerate() {
        let dir = gpt2_with_generation_config(&format!("range-{index}"), text);
        let out = safeformers(&[
            "run",
            "text-generation",
            "--model",
            dir.to_str().unwrap(),
            "--max-new-tokens",
            "2",
            "hello",
        ]);
        assert_one_line_error(&out, 1, &["generation_config.json", field]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
    // A zero temperature is fine for greedy decoding, as in Transformers.
    let dir = gpt2_with_generation_config("greedy-zero", r#"{"temperature": 0}"#);
    let out = safeformers(&[
        "run",
        "text-generation",
        "--model",
        dir.to_str().unwrap(),
        "--greedy",
        "--max-new-tokens",
        "2",
        "hello",
    ]);
    assert_success(&out);
    // Without generation_config.json, config.json's generation fields are checked the same way.
    std::fs::remove_file(dir.join("generation_config.json")).unwrap();
    let config_path = dir.join("config.json");
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    config["top_p"] = Value::from(2.0);
    std::fs::write(&config_path, config.to_string()).unwrap();
    let out = safeformers(&[
        "run",
        "text-generation",
        "--model",
        dir.to_str().unwrap(),
        "--max-new-tokens",
        "2",
        "hello",
    ]);
    assert_one_line_error(&out, 1, &["config.json", "top_p"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_generation_config_json_that_is_not_one_object_is_an_error_naming_the_file() {
    let deep_array = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_object = format!(
        r#"{{"max_new_tokens": 2, "unknown": {}1{}}}"#,
        r#"{"a": "#.repeat(100_000),
        "}".repeat(100_000)
    );
    let cases = [
        "[]".to_string(),
        "[2]".to_string(),
        "\"hello\"".to_string(),
        deep_array,
        deep_object,
    ];
    for (index, text) in cases.iter().enumerate() {
        let dir = gpt2_with_generation_config(&format!("shape-{index}"), text);
        let out = safeformers(&[
            "run",
            "text-generation",
            "--model",
            dir.to_str().unwrap(),
            "--max-new-tokens",
            "2",
            "hello",
        ]);
        assert_one_line_error(&out, 1, &["generation_config.json"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn attention_masks_are_zero_or_one_and_rows_fit_the_model() {
    for model in ["models/bert", "models/distilbert", "decoders/gpt2"] {
        let model = fixture(model);
        for mask in ["2,2,2", "1,1,7", &u32::MAX.to_string()[..]] {
            let mask = if mask.contains(',') {
                mask.to_string()
            } else {
                format!("1,1,{mask}")
            };
            let out = safeformers(&[
                "forward",
                "--model",
                &model,
                "--input-ids",
                "2,3,4",
                "--attention-mask",
                &mask,
            ]);
            assert_one_line_error(&out, 2, &["--attention-mask", "0 or 1"]);
        }
        let out = safeformers(&[
            "forward",
            "--model",
            &model,
            "--input-ids",
            "2,3,4",
            "--attention-mask",
            "1,1,0",
        ]);
        assert_success(&out);
    }
    // Segment ids and token ids the model does not have stay errors of the input (exit 1).
    let bert = fixture("models/bert");
    let out = safeformers(&[
        "forward",
        "--model",
        &bert,
        "--input-ids",
        "2,3",
        "--token-type-ids",
        "0,2",
    ]);
    assert_one_line_error(&out, 1, &["token_type_ids"]);
    let out = safeformers(&["forward", "--model", &bert, "--input-ids", "2,4000000000"]);
    assert_one_line_error(&out, 1, &["4000000000"]);
    // A rotary decoder has no position table to run out of, but rows longer than its
    // context window are not inputs it was built for (and cost quadratic memory).
    let long = vec!["5"; 65].join(",");
    for decoder in ["decoders/llama", "decoders/gpt2"] {
        let out = safeformers(&[
            "forward",
            "--model",
            &fixture(decoder),
            "--input-ids",
            &long,
        ]);
        assert_one_line_error(&out, 1, &["context window of 64 tokens"]);
    }
}

/// A sentence-transformers folder over the tiny BERT: Transformer, mean Pooling, Normalize.
fn sentence_transformers_folder(tag: &str, last_module: &str) -> PathBuf {
    let dir = copy_fixture("models/bert", tag);
    std::fs::create_dir_all(dir.join("1_Pooling")).unwrap();
    std::fs::write(
        dir.join("1_Pooling/config.json"),
        r#"{"word_embedding_dimension": 32, "pooling_mode_mean_tokens": true}"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("modules.json"),
        format!(
            r#"[{{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}},
                {{"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}},
                {{"idx": 2, "name": "2", "path": "2_Normalize", "type": "{last_module}"}}]"#
        ),
    )
    .unwrap();
    dir
}

/// The vectors of `run feature-extraction` output: per input `[1, seq, hidden]` token
/// embeddings, flattened to token vectors, or the sentence vectors.
fn vectors(output: &Output) -> Vec<Vec<f64>> {
    assert_success(output);
    let value: Value = serde_json::from_slice(&output.stdout).unwrap();
    fn collect(value: &Value, into: &mut Vec<Vec<f64>>) {
        let items = value.as_array().unwrap();
        if items.iter().all(Value::is_number) {
            into.push(items.iter().map(|v| v.as_f64().unwrap()).collect());
        } else {
            for item in items {
                collect(item, into);
            }
        }
    }
    let mut found = Vec::new();
    collect(&value, &mut found);
    found
}

fn norm(vector: &[f64]) -> f64 {
    vector.iter().map(|v| v * v).sum::<f64>().sqrt()
}

#[test]
fn pooling_none_on_a_sentence_transformers_folder_gives_unnormalised_token_embeddings() {
    let dir =
        sentence_transformers_folder("st-normalize", "sentence_transformers.models.Normalize");
    let st = dir.to_str().unwrap();
    let run = |model: &str, extra: &[&str]| {
        let mut args = vec!["run", "feature-extraction", "--model", model];
        args.extend_from_slice(extra);
        args.extend(["hello world", "a"]);
        vectors(&safeformers(&args))
    };
    // SentenceTransformer.encode(output_value="token_embeddings"): the Transformer module's
    // output, which Normalize (a sentence-embedding module) does not touch.
    let tokens = run(st, &["--pooling", "none"]);
    let plain = run(&fixture("models/bert"), &[]);
    assert_eq!(tokens.len(), plain.len(), "one vector per token");
    assert_eq!(tokens, plain, "the encoder's token embeddings, as they are");
    assert!(
        tokens.iter().any(|token| (norm(token) - 1.0).abs() > 1e-3),
        "the fixture's token vectors are not unit vectors already"
    );
    // --normalize does what it says, whatever the pooling.
    for token in run(st, &["--pooling", "none", "--normalize"]) {
        assert!((norm(&token) - 1.0).abs() < 1e-5, "{}", norm(&token));
    }
    // The folder's own pipeline still normalises its sentence embeddings.
    let sentences = run(st, &[]);
    assert_eq!(sentences.len(), 2);
    for sentence in sentences {
        assert!((norm(&sentence) - 1.0).abs() < 1e-5, "{}", norm(&sentence));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_module_type_from_outside_sentence_transformers_is_a_policy_refusal() {
    for (index, module) in ["evil_pkg.Backdoor", "Backdoor", "sentence_transformers_x.Y"]
        .into_iter()
        .enumerate()
    {
        let dir = sentence_transformers_folder(&format!("custom-{index}"), module);
        let out = safeformers(&[
            "run",
            "feature-extraction",
            "--model",
            dir.to_str().unwrap(),
            "hello",
        ]);
        assert_one_line_error(&out, 3, &["modules.json", module]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
    // One of sentence-transformers' own modules that we do not implement is unsupported, not
    // unsafe: exit 1.
    let dir = sentence_transformers_folder("layer-norm", "sentence_transformers.models.LayerNorm");
    let out = safeformers(&[
        "run",
        "feature-extraction",
        "--model",
        dir.to_str().unwrap(),
        "hello",
    ]);
    assert_one_line_error(
        &out,
        1,
        &["sentence_transformers.models.LayerNorm", "not implemented"],
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
