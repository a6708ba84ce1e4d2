//! `safeformers run text-generation`, `safeformers chat` and `forward` on a decoder, driven as a
//! user drives them, against the goldens of `scripts/make_decoder_fixtures.py`
//! (`tests/fixtures/decoders/`: Transformers' pipeline outputs and logits of a tiny GPT-2).

// Test code: a failed expectation is a panic with a message.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{assert_one_line_error, fixture, fixtures, safeformers_offline as safeformers};

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::{Value, json};

fn decoders() -> PathBuf {
    fixtures().join("decoders")
}

fn gpt2() -> String {
    fixture("decoders/gpt2")
}

fn stdout(output: &Output) -> String {
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// Each stdout line parsed as JSON.
fn json_lines(output: &Output) -> Vec<Value> {
    stdout(output)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

/// The `pipelines.json` golden of gpt2 with these inputs and kwargs.
fn golden(inputs: Value, kwargs: Value) -> Value {
    let text = std::fs::read_to_string(decoders().join("pipelines.json")).unwrap();
    let all: Value = serde_json::from_str(&text).unwrap();
    all["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["model"] == "gpt2" && e["inputs"] == inputs && e["kwargs"] == kwargs)
        .unwrap_or_else(|| panic!("no golden for {inputs} {kwargs}"))["output"]
        .clone()
}

fn greedy10() -> Value {
    json!({"do_sample": false, "max_new_tokens": 10})
}

#[test]
fn greedy_text_generation_matches_the_transformers_pipeline() {
    let model = gpt2();
    let out = safeformers(
        &[
            "run",
            "text-generation",
            "--model",
            &model,
            "--greedy",
            "--max-new-tokens",
            "10",
            "Once upon a time",
        ],
        None,
    );
    assert_eq!(
        json_lines(&out),
        vec![golden(json!("Once upon a time"), greedy10())]
    );
    let out = safeformers(
        &[
            "run",
            "text-generation",
            "--model",
            &model,
            "--greedy",
            "--max-new-tokens",
            "10",
            "--new-text-only",
            "Once upon a time",
        ],
        None,
    );
    let kwargs = json!({"do_sample": false, "max_new_tokens": 10, "return_full_text": false});
    assert_eq!(
        json_lines(&out),
        vec![golden(json!("Once upon a time"), kwargs)]
    );
}

#[test]
fn stdin_inputs_give_one_line_each_whatever_the_batch_size() {
    let model = gpt2();
    let prompts = ["The weather is nice", "Rust is a safe language and"];
    let expected = golden(json!(prompts), greedy10());
    for batch_size in ["1", "2"] {
        let out = safeformers(
            &[
                "run",
                "text-generation",
                "--model",
                &model,
                "--greedy",
                "--max-new-tokens",
                "10",
                "--batch-size",
                batch_size,
                "-",
            ],
            Some(prompts.join("\n").as_bytes()),
        );
        assert_eq!(
            Value::Array(json_lines(&out)),
            expected,
            "batch {batch_size}"
        );
    }
}

#[test]
fn stop_strings_and_repetition_penalty_match_the_goldens() {
    let model = gpt2();
    let run = |extra: &[&str]| {
        let mut args = vec![
            "run",
            "text-generation",
            "--model",
            &model,
            "--greedy",
            "--max-new-tokens",
            "10",
        ];
        args.extend_from_slice(extra);
        args.push("Once upon a time");
        json_lines(&safeformers(&args, None))
    };
    assert_eq!(
        run(&["--stop", "01B"]),
        vec![golden(
            json!("Once upon a time"),
            json!({"do_sample": false, "max_new_tokens": 10, "stop_strings": ["01B"]})
        )]
    );
    assert_eq!(
        run(&["--repetition-penalty", "1.3"]),
        vec![golden(
            json!("Once upon a time"),
            json!({"do_sample": false, "max_new_tokens": 10, "repetition_penalty": 1.3})
        )]
    );
}

#[test]
fn streamed_output_is_the_generated_text() {
    let model = gpt2();
    let base = [
        "run",
        "text-generation",
        "--model",
        &model,
        "--max-new-tokens",
        "20",
        "--seed",
        "5",
        "--top-k",
        "40",
    ];
    let prompts = "Once upon a time\nThe weather is nice";
    let mut args = base.to_vec();
    args.push("-");
    let plain = json_lines(&safeformers(&args, Some(prompts.as_bytes())));
    args.insert(args.len() - 1, "--stream");
    let streamed = stdout(&safeformers(&args, Some(prompts.as_bytes())));
    let expected: String = plain
        .iter()
        .map(|line| format!("{}\n", line[0]["generated_text"].as_str().unwrap()))
        .collect();
    assert_eq!(streamed, expected);
    assert!(streamed.len() > prompts.len() + 10, "text was generated");
}

#[test]
fn chat_input_matches_the_transformers_pipeline() {
    let messages = json!([
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is the capital of France?"}
    ]);
    let model = gpt2();
    let input = messages.to_string();
    let out = safeformers(
        &[
            "run",
            "text-generation",
            "--model",
            &model,
            "--chat",
            "--greedy",
            "--max-new-tokens",
            "10",
            &input,
        ],
        None,
    );
    assert_eq!(json_lines(&out), vec![golden(messages, greedy10())]);
    let out = safeformers(
        &[
            "run",
            "text-generation",
            "--model",
            &model,
            "--chat",
            "not json",
        ],
        None,
    );
    assert_one_line_error(&out, 2, &["JSON list of messages"]);
}

#[test]
fn chat_keeps_the_history_and_streams_each_reply() {
    let model = gpt2();
    let flags = ["--greedy", "--max-new-tokens", "5"];
    let mut args = vec!["chat", "--model", &model, "--system", "Hi"];
    args.extend_from_slice(&flags);
    let out = stdout(&safeformers(&args, Some(b"Paris?\n\nRome?\n")));
    let replies: Vec<&str> = out.lines().collect();
    assert_eq!(replies.len(), 2, "{out:?}");
    // The second reply is what the pipeline gives for the whole conversation so far.
    let conversation = json!([
        {"role": "system", "content": "Hi"},
        {"role": "user", "content": "Paris?"},
        {"role": "assistant", "content": replies[0]},
        {"role": "user", "content": "Rome?"},
    ])
    .to_string();
    let mut run = vec![
        "run",
        "text-generation",
        "--model",
        &model,
        "--chat",
        "--new-text-only",
    ];
    run.extend_from_slice(&flags);
    run.push(&conversation);
    let expected = json_lines(&safeformers(&run, None));
    assert_eq!(json!(replies[1]), expected[0][0]["generated_text"]);
    // Without the history the second turn would be answered differently.
    let alone = json!([
        {"role": "system", "content": "Hi"},
        {"role": "user", "content": "Rome?"},
    ])
    .to_string();
    run.pop();
    run.push(&alone);
    let without_history = json_lines(&safeformers(&run, None));
    assert_ne!(json!(replies[1]), without_history[0][0]["generated_text"]);
}

#[test]
fn forward_gives_the_logits_of_a_decoder() {
    let text = std::fs::read_to_string(decoders().join("gpt2/outputs.json")).unwrap();
    let golden: Value = serde_json::from_str(&text).unwrap();
    let model = gpt2();
    for case in ["single", "padded"] {
        let mut args = vec![
            "forward".to_string(),
            "--model".into(),
            model.clone(),
            "--json".into(),
        ];
        let rows = golden[case]["input_ids"].as_array().unwrap();
        for (index, row) in rows.iter().enumerate() {
            let ids: Vec<String> = row
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.to_string())
                .collect();
            args.extend(["--input-ids".to_string(), ids.join(",")]);
            if let Some(mask) = golden[case]["attention_mask"].get(index) {
                let mask: Vec<String> = mask
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.to_string())
                    .collect();
                args.extend(["--attention-mask".to_string(), mask.join(",")]);
            }
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out: Value = serde_json::from_str(&stdout(&safeformers(&args, None))).unwrap();
        assert_eq!(out["output"], "logits");
        assert_eq!(out["shape"], golden[case]["shape"]);
        let got: Vec<f64> = out["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let expected = flat(&golden[case]["logits"]);
        let shape: Vec<usize> = serde_json::from_value(golden[case]["shape"].clone()).unwrap();
        let (seq, vocab) = (shape[1], shape[2]);
        // Padded rows: compare the real-token positions only (padding logits are unspecified).
        let mut worst = 0.0f64;
        for (position, (g, e)) in got.chunks(vocab).zip(expected.chunks(vocab)).enumerate() {
            let (row, token) = (position / seq, position % seq);
            let masked = golden[case]["attention_mask"]
                .get(row)
                .and_then(|mask| mask.get(token))
                .is_some_and(|m| m == 0);
            if masked {
                continue;
            }
            for (a, b) in g.iter().zip(e) {
                worst = worst.max((a - b).abs());
            }
        }
        assert!(worst <= 1e-4, "{case}: max abs diff {worst}");
    }
}

fn flat(value: &Value) -> Vec<f64> {
    match value {
        Value::Array(items) => items.iter().flat_map(flat).collect(),
        other => vec![other.as_f64().unwrap()],
    }
}

#[test]
fn a_prompt_longer_than_the_context_window_is_a_clear_error_or_truncated() {
    let model = gpt2();
    let long = "the weather is nice ".repeat(20);
    let args = [
        "run",
        "text-generation",
        "--model",
        &model,
        "--greedy",
        "--max-new-tokens",
        "10",
        &long,
    ];
    let out = safeformers(&args, None);
    assert_one_line_error(&out, 1, &["context window of 64 tokens"]);
    let mut truncated = args.to_vec();
    truncated.insert(2, "--truncate");
    let lines = json_lines(&safeformers(&truncated, None));
    let text = lines[0][0]["generated_text"].as_str().unwrap();
    assert!(
        text.starts_with(&long) && text.len() > long.len(),
        "{text:?}"
    );
    // The same in chat mode: an error line, not a panic.
    let out = safeformers(
        &[
            "chat",
            "--model",
            &model,
            "--greedy",
            "--max-new-tokens",
            "10",
        ],
        Some(format!("{long}\n").as_bytes()),
    );
    assert_one_line_error(&out, 1, &["context window"]);
}

#[test]
fn contradictory_or_misplaced_flags_are_usage_errors() {
    let model = gpt2();
    let out = safeformers(
        &[
            "run",
            "text-generation",
            "--model",
            &model,
            "--greedy",
            "--temperature",
            "0.5",
            "x",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    let out = safeformers(
        &["run", "fill-mask", "--model", &model, "--stream", "x"],
        None,
    );
    assert_one_line_error(&out, 2, &["text-generation"]);
    let out = safeformers(
        &[
            "run",
            "text-generation",
            "--model",
            &model,
            "--temperature",
            "0",
            "x",
        ],
        None,
    );
    assert_one_line_error(&out, 2, &["--temperature"]);
}

/// A copy of the tiny GPT-2 (in a fresh folder named by `tag`) whose chat template is `template`.
fn gpt2_with_chat_template(tag: &str, template: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sf-gen-cli-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(decoders().join("gpt2")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    let config_path = dir.join("tokenizer_config.json");
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    config["chat_template"] = json!(template);
    std::fs::write(&config_path, serde_json::to_string(&config).unwrap()).unwrap();
    dir
}

#[test]
fn hostile_chat_templates_fail_fast_without_hurting_the_process() {
    let chat = r#"[{"role": "user", "content": "hi"}]"#;
    // (template, what the one-line error says)
    let cases = [
        // Fuel stops these inside the renderer.
        (
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
            "ran out of fuel",
        ),
        (
            "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
            "ran out of fuel",
        ),
        // minijinja materializes 33 nested list concatenations without charging fuel (2^33
        // items here); only the isolated renderer's OS limits stop it. Without the isolation
        // this test exhausts the machine's memory.
        (
            "{% set ns = namespace(l=[1]) %}{% for i in range(40) %}{% set ns.l = ns.l + ns.l %}{% endfor %}{{ ns.l | length }}",
            "isolated renderer",
        ),
    ];
    for (index, (template, needle)) in cases.into_iter().enumerate() {
        let model = gpt2_with_chat_template(&format!("hostile-{index}"), template);
        let model = model.to_str().unwrap();
        let started = std::time::Instant::now();
        let output = safeformers(
            &[
                "run",
                "text-generation",
                "--model",
                model,
                "--chat",
                "--max-new-tokens",
                "2",
                chat,
            ],
            None,
        );
        let elapsed = started.elapsed();
        assert_one_line_error(&output, 1, &[needle]);
        // Model load included; the render itself is cut at well under a second.
        assert!(elapsed.as_secs_f64() < 5.0, "{template}: took {elapsed:?}");
        std::fs::remove_dir_all(model).unwrap();
    }
    // The same model with a well-behaved template still works through the renderer process.
    let model = gpt2_with_chat_template(
        "benign",
        "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}",
    );
    let output = safeformers(
        &[
            "run",
            "text-generation",
            "--model",
            model.to_str().unwrap(),
            "--chat",
            "--max-new-tokens",
            "2",
            chat,
        ],
        None,
    );
    let lines = json_lines(&output);
    assert_eq!(lines.len(), 1);
    let reply = &lines[0][0]["generated_text"][1];
    assert_eq!(reply["role"], "assistant");
    std::fs::remove_dir_all(model).unwrap();
}

#[test]
fn weight_storage_flags_apply_to_every_task() {
    let model = gpt2();
    for storage in [
        &["--dtype", "f16"][..],
        &["--dtype", "bf16"],
        &["--quantize", "q8"],
    ] {
        let mut args = vec![
            "run",
            "text-generation",
            "--model",
            &model,
            "--greedy",
            "--max-new-tokens",
            "10",
        ];
        args.extend_from_slice(storage);
        args.push("Once upon a time");
        let lines = json_lines(&safeformers(&args, None));
        assert_eq!(lines.len(), 1, "{storage:?}: {lines:?}");
        let text = lines[0][0]["generated_text"]
            .as_str()
            .unwrap_or_else(|| panic!("{storage:?}: {lines:?}"));
        assert!(text.starts_with("Once upon a time"), "{storage:?}: {text}");
    }
    // Encoder tasks store their weights as asked too: the scores move a little, not much.
    let bert = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/models/bert-seqcls")
        .to_str()
        .unwrap()
        .to_string();
    let classify = |storage: &[&str]| -> f64 {
        let mut args = vec!["run", "text-classification", "--model", &bert];
        args.extend_from_slice(storage);
        args.push("hello world");
        json_lines(&safeformers(&args, None))[0][0]["score"]
            .as_f64()
            .unwrap()
    };
    let full = classify(&[]);
    for storage in [&["--dtype", "f16"][..], &["--quantize", "q8"]] {
        let stored = classify(storage);
        assert!(
            stored != full && (stored - full).abs() < 1e-2,
            "{storage:?}: {stored} vs {full}"
        );
    }
    // q8 with a 16-bit dtype is a usage error.
    let out = safeformers(
        &[
            "chat",
            "--model",
            &model,
            "--dtype",
            "bf16",
            "--quantize",
            "q8",
        ],
        Some(b"{\"role\":\"user\",\"content\":\"hi\"}\n"),
    );
    assert_one_line_error(&out, 2, &["--quantize"]);
}

/// The `--stats` lines of a run's stderr, each checked to hold exactly the five timing keys
/// with non-negative times.
fn stats_lines(output: &Output) -> Vec<Value> {
    let stderr = String::from_utf8_lossy(&output.stderr);
    stderr
        .lines()
        .map(|line| {
            let stats: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            let keys: Vec<&str> = stats
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            assert_eq!(
                keys,
                [
                    "load_s",
                    "prompt_tokens",
                    "prompt_s",
                    "generated_tokens",
                    "generation_s"
                ],
                "{line}"
            );
            for time in ["load_s", "prompt_s", "generation_s"] {
                assert!(stats[time].as_f64().unwrap() >= 0.0, "{line}");
            }
            stats
        })
        .collect()
}

#[test]
fn stats_report_each_input_and_each_turn_on_stderr() {
    let model = gpt2();
    let greedy = ["--greedy", "--max-new-tokens", "6", "--min-new-tokens", "6"];
    // One line per input, stdout unchanged; the prompt's tokens and the new ones counted.
    let mut args = vec!["run", "text-generation", "--model", &model, "--stats"];
    args.extend_from_slice(&greedy);
    args.extend_from_slice(&["Hello world", "The capital of France is a city"]);
    let with_stats = safeformers(&args, None);
    args.retain(|arg| *arg != "--stats");
    let without = safeformers(&args, None);
    assert_eq!(stdout(&with_stats), stdout(&without));
    assert!(without.stderr.is_empty());
    let lines = stats_lines(&with_stats);
    assert_eq!(lines.len(), 2, "{lines:?}");
    for line in &lines {
        assert_eq!(line["generated_tokens"], 6, "{line}");
        assert_eq!(line["load_s"], lines[0]["load_s"]);
    }
    let prompt_lengths: Vec<u64> = lines
        .iter()
        .map(|line| line["prompt_tokens"].as_u64().unwrap())
        .collect();
    assert!(prompt_lengths[1] > prompt_lengths[0], "{prompt_lengths:?}");

    // Streaming gives the same lines.
    let mut stream_args = vec![
        "run",
        "text-generation",
        "--model",
        &model,
        "--stats",
        "--stream",
    ];
    stream_args.extend_from_slice(&greedy);
    stream_args.extend_from_slice(&["Hello world", "The capital of France is a city"]);
    let streamed = stats_lines(&safeformers(&stream_args, None));
    let counts = |lines: &[Value]| -> Vec<(Value, Value)> {
        lines
            .iter()
            .map(|line| {
                (
                    line["prompt_tokens"].clone(),
                    line["generated_tokens"].clone(),
                )
            })
            .collect()
    };
    assert_eq!(counts(&streamed), counts(&lines));

    // chat: one line per turn; the second turn's prompt holds the whole conversation.
    let mut chat = vec!["chat", "--model", &model, "--stats"];
    chat.extend_from_slice(&greedy);
    let turns = stats_lines(&safeformers(&chat, Some(b"Paris?\nRome?\n")));
    assert_eq!(turns.len(), 2, "{turns:?}");
    assert!(turns[1]["prompt_tokens"].as_u64() > turns[0]["prompt_tokens"].as_u64());
}
