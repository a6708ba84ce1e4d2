//! `inspect` and `scan` on GGUF files: a small valid one, hostile ones (refused with exit 1 and
//! one line), and the real SmolLM2-135M-Instruct Q4_1 (`SAFEFORMERS_SMOLLM2_GGUF`, set by
//! `scripts/test.sh`; without it that test fails, it never skips).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::{Path, PathBuf};

use common::{assert_code, assert_one_line_error, safeformers_offline, stdout, stdout_json};

fn safeformers(args: &[&str]) -> std::process::Output {
    safeformers_offline(args, None)
}

fn string(text: &str) -> Vec<u8> {
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    out
}

/// A GGUF v3 file with a name, a chat template, a token array and two tensors (F32 [4] and
/// Q8_0 [2, 32]) at `offsets`, with `tensor_count` declared.
fn tiny_gguf(offsets: [u64; 2], tensor_count: u64) -> Vec<u8> {
    let mut out = b"GGUF".to_vec();
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&tensor_count.to_le_bytes());
    out.extend_from_slice(&3u64.to_le_bytes());
    out.extend_from_slice(&string("general.architecture"));
    out.extend_from_slice(&8u32.to_le_bytes());
    out.extend_from_slice(&string("llama"));
    out.extend_from_slice(&string("tokenizer.chat_template"));
    out.extend_from_slice(&8u32.to_le_bytes());
    out.extend_from_slice(&string("{{ 'x' * 100 }}"));
    out.extend_from_slice(&string("tokenizer.ggml.tokens"));
    out.extend_from_slice(&9u32.to_le_bytes());
    out.extend_from_slice(&8u32.to_le_bytes());
    out.extend_from_slice(&2u64.to_le_bytes());
    out.extend_from_slice(&string("a"));
    out.extend_from_slice(&string("b"));
    for (name, dims, type_id, offset) in [
        ("norm.weight", vec![4u64], 0u32, offsets[0]),
        ("proj.weight", vec![32, 2], 8, offsets[1]),
    ] {
        out.extend_from_slice(&string(name));
        out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
        for dim in dims {
            out.extend_from_slice(&dim.to_le_bytes());
        }
        out.extend_from_slice(&type_id.to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
    }
    out.resize(out.len().next_multiple_of(32), 0);
    // norm: 16 bytes padded to 32; proj: 2 blocks of 34 bytes, padded to 96.
    out.extend_from_slice(&[0u8; 32 + 96]);
    out
}

fn scratch(name: &str, bytes: &[u8]) -> PathBuf {
    let path = safeformers_testkit::scratch_dir("gguf-cli").join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn inspect_and_scan_a_small_gguf() {
    let path = scratch("tiny.gguf", &tiny_gguf([0, 32], 2));
    let output = safeformers(&["inspect", "--json", path.to_str().unwrap()]);
    assert_code(&output, 0, "inspect --json tiny.gguf");
    let json = stdout_json(&output);
    assert_eq!(json["format"], "gguf");
    assert_eq!(json["gguf_version"], 3);
    assert_eq!(json["chat_template"], true);
    assert_eq!(json["metadata"]["general.architecture"], "\"llama\"");
    assert_eq!(
        json["metadata"]["tokenizer.ggml.tokens"],
        "array of 2 string"
    );
    let tensors = json["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), 2);
    assert_eq!(tensors[1]["name"], "proj.weight");
    assert_eq!(tensors[1]["dtype"], "Q8_0");
    assert_eq!(tensors[1]["shape"], serde_json::json!([2, 32]));

    let table = safeformers(&["inspect", path.to_str().unwrap()]);
    assert_code(&table, 0, "inspect tiny.gguf");
    let text = stdout(&table);
    assert!(text.contains("chat template: present"), "{text}");
    assert!(text.contains("Q8_0"), "{text}");

    let scan = safeformers(&["scan", "--json", path.to_str().unwrap()]);
    assert_code(&scan, 0, "scan tiny.gguf");
    let report = stdout_json(&scan);
    assert_eq!(report["files"][0]["format"], "gguf");
    assert_eq!(report["files"][0]["verdict"], "safe");
    let kinds: Vec<&str> = report["files"][0]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|finding| finding["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"chat_template"), "{kinds:?}");
}

fn assert_refused(path: &Path, expected: &str) {
    let output = safeformers(&["inspect", path.to_str().unwrap()]);
    assert_one_line_error(&output, 1, &[expected, path.to_str().unwrap()]);
    let scan = safeformers(&["scan", "--json", path.to_str().unwrap()]);
    assert_code(&scan, 1, "scan of a hostile GGUF");
    assert_eq!(stdout_json(&scan)["files"][0]["verdict"], "invalid");
}

#[test]
fn hostile_gguf_files_are_refused_in_one_line() {
    assert_refused(
        &scratch("overlap.gguf", &tiny_gguf([0, 0], 2)),
        "overlaps tensor",
    );
    assert_refused(
        &scratch("counts.gguf", &tiny_gguf([0, 32], u64::MAX)),
        "more than the limit",
    );
    assert_refused(&scratch("v1.gguf", b"GGUF\x01\0\0\0"), "version 1");
}

#[test]
fn inspect_of_the_real_smollm2_gguf() {
    let path = match std::env::var_os("SAFEFORMERS_SMOLLM2_GGUF") {
        Some(path) => PathBuf::from(path),
        None => panic!(
            "SAFEFORMERS_SMOLLM2_GGUF is not set: run the tests with scripts/test.sh, or export \
             SAFEFORMERS_SMOLLM2_GGUF=$(scripts/fetch-smollm2.sh | tail -n 1)"
        ),
    };
    let output = safeformers(&["inspect", "--json", path.to_str().unwrap()]);
    assert_code(&output, 0, "inspect --json SmolLM2 GGUF");
    let json = stdout_json(&output);
    assert_eq!(json["chat_template"], true);
    assert_eq!(json["metadata"]["llama.embedding_length"], "576");
    assert_eq!(json["metadata"]["llama.block_count"], "30");
    assert_eq!(
        json["metadata"]["tokenizer.ggml.tokens"],
        "array of 49152 string"
    );
    let tensors = json["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), 272);
    assert!(tensors.iter().any(|tensor| tensor["dtype"] == "Q4_1"));
}

// ---- The model commands on a GGUF: a file, a folder holding one or several, a repo. ----

/// `question` asked through `chat` (greedy, bounded) of `model` with `extra` flags.
fn chat(model: &Path, extra: &[&str], question: &str) -> std::process::Output {
    let mut args = vec![
        "chat",
        "--model",
        model.to_str().unwrap(),
        "--greedy",
        "--max-new-tokens",
        "24",
    ];
    args.extend_from_slice(extra);
    safeformers_offline(&args, Some(format!("{question}\n").as_bytes()))
}

/// SmolLM2's greedy answer to the quickstart question.
const PARIS: &str = "The capital of France is Paris.";

/// Puts `source` into `dir` as `name`: a hard link where the file system allows it (the model
/// is 98 MB), else a copy. Never a symbolic link: a link out of a model folder is refused.
/// Tasks other than text generation say that a GGUF file holds a decoder, naming the file or
/// folder (not a confusing "config.json: Not a directory").
#[test]
fn encoder_tasks_on_a_gguf_say_it_holds_a_decoder() {
    let file = scratch("decoder-only.gguf", &tiny_gguf([0, 32], 2));
    let folder = safeformers_testkit::scratch_dir("gguf-folder-for-encoder-task");
    place(&file, &folder, "model.gguf");
    for task in ["feature-extraction", "fill-mask", "text-classification"] {
        for model in [&file, &folder] {
            let output = safeformers(&["run", task, "--model", model.to_str().unwrap(), "hi"]);
            assert_one_line_error(
                &output,
                1,
                &[model.to_str().unwrap(), "holds a decoder", task],
            );
        }
    }
}

fn place(source: &Path, dir: &Path, name: &str) -> PathBuf {
    let target = dir.join(name);
    if std::fs::hard_link(source, &target).is_err() {
        std::fs::copy(source, &target).unwrap();
    }
    target
}

/// A scratch folder holding the real SmolLM2 GGUF under each of `names`.
fn folder_of_smollm2(label: &str, names: &[&str]) -> PathBuf {
    let dir = safeformers_testkit::scratch_dir(label);
    for name in names {
        place(&safeformers_testkit::smollm2_gguf(), &dir, name);
    }
    dir
}

/// `forward --json` logits of ids 1, 2, 3 (flat) for `model` with `extra` flags.
fn forward_logits(model: &Path, extra: &[&str]) -> Vec<f32> {
    let mut args = vec![
        "forward",
        "--json",
        "--model",
        model.to_str().unwrap(),
        "--input-ids",
        "1,2,3",
    ];
    args.extend_from_slice(extra);
    let output = safeformers(&args);
    assert_code(&output, 0, "forward --json on a GGUF");
    let json = stdout_json(&output);
    assert_eq!(json["output"], "logits");
    assert_eq!(json["shape"], serde_json::json!([1, 3, 49152]));
    json["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|value| value.as_f64().unwrap() as f32)
        .collect()
}

/// `run text-generation --greedy` on `model`: the one generated text.
fn greedy_text(model: &Path, extra: &[&str]) -> String {
    let mut args = vec![
        "run",
        "text-generation",
        "--model",
        model.to_str().unwrap(),
        "--greedy",
        "--max-new-tokens",
        "12",
    ];
    args.extend_from_slice(extra);
    args.push("The capital of France is");
    let output = safeformers(&args);
    assert_code(&output, 0, "run text-generation on a GGUF");
    let json = stdout_json(&output);
    json[0]["generated_text"].as_str().unwrap().to_string()
}

#[test]
fn every_model_command_runs_on_the_real_gguf_file_and_on_a_folder_holding_it() {
    let file = safeformers_testkit::smollm2_gguf();
    let folder = folder_of_smollm2("gguf-cli-folder", &["SmolLM2-135M-Instruct.Q4_1.gguf"]);
    let mut logits = Vec::new();
    for model in [file.as_path(), folder.as_path()] {
        let text = greedy_text(model, &[]);
        assert!(text.starts_with("The capital of France is Paris"), "{text}");

        let answer = chat(model, &[], "What is the capital of France?");
        assert_code(&answer, 0, "chat on a GGUF");
        assert_eq!(stdout(&answer), format!("{PARIS}\n"));

        logits.push(forward_logits(model, &[]));

        let inspected = safeformers(&["inspect", "--json", model.to_str().unwrap()]);
        assert_code(&inspected, 0, "inspect on a GGUF");
        let json = stdout_json(&inspected);
        assert_eq!(json["format"], "gguf");
        assert_eq!(json["tensors"].as_array().unwrap().len(), 272);
    }
    assert_eq!(logits[0], logits[1], "the folder loads the file it holds");
    let _ = std::fs::remove_dir_all(&folder);
}

#[test]
fn dtype_f32_dequantizes_the_blocks_and_decodes_the_same_greedy_text() {
    let file = safeformers_testkit::smollm2_gguf();
    assert_eq!(
        greedy_text(&file, &["--dtype", "f32"]),
        greedy_text(&file, &[])
    );
    // The flag reaches the loader: f32 products differ from the native block products in the
    // last digits (a few thousandths here), never by more than the parity bound allows.
    let native = forward_logits(&file, &[]);
    let dequantized = forward_logits(&file, &["--dtype", "f32"]);
    let difference = safeformers_testkit::max_abs_diff(&native, &dequantized);
    assert!(
        difference > 0.0,
        "--dtype f32 gave the native logits exactly"
    );
    assert!(difference < 0.1, "max |Δlogit| {difference}");
    // A GGUF model is quantized already: --quantize is a usage error, before anything loads.
    for flags in [
        &["--quantize", "q8_0"][..],
        &["--quantize", "q8", "--dtype", "f32"],
    ] {
        let mut args = vec!["run", "text-generation", "--model", file.to_str().unwrap()];
        args.extend_from_slice(flags);
        args.push("x");
        let output = safeformers(&args);
        assert_one_line_error(&output, 2, &["quantized already", file.to_str().unwrap()]);
    }
}

#[test]
fn gguf_file_picks_one_of_several_and_is_checked_as_a_plain_name() {
    let folder = folder_of_smollm2("gguf-cli-several", &["a.Q4_1.gguf", "b.Q4_1.gguf"]);
    let model = folder.to_str().unwrap();
    // Without --gguf-file: one line naming both files, from every command.
    let several = ["a.Q4_1.gguf, b.Q4_1.gguf", "--gguf-file"];
    assert_one_line_error(&chat(&folder, &[], "hi"), 1, &several);
    for args in [
        &["run", "text-generation", "--model", model, "x"][..],
        &["forward", "--model", model, "--input-ids", "1"],
        &["inspect", model],
    ] {
        assert_one_line_error(&safeformers(args), 1, &several);
    }
    // With it: that file.
    let answer = chat(
        &folder,
        &["--gguf-file", "b.Q4_1.gguf"],
        "What is the capital of France?",
    );
    assert_code(&answer, 0, "chat --gguf-file");
    assert_eq!(stdout(&answer), format!("{PARIS}\n"));
    let inspected = safeformers(&["inspect", "--json", "--gguf-file", "a.Q4_1.gguf", model]);
    assert_code(&inspected, 0, "inspect --gguf-file");
    let picked = forward_logits(&folder, &["--gguf-file", "a.Q4_1.gguf"]);
    assert_eq!(picked.len(), 3 * 49152);
    // A name not there: the error lists what is.
    assert_one_line_error(
        &chat(&folder, &["--gguf-file", "c.gguf"], "hi"),
        1,
        &["c.gguf", "a.Q4_1.gguf, b.Q4_1.gguf"],
    );
    // Names from outside are checked before they touch the file system (usage errors).
    for bad in [
        "../a.Q4_1.gguf",
        "sub/a.gguf",
        "a\\b.gguf",
        "..",
        "a.safetensors",
        "*.gguf",
    ] {
        let output = chat(&folder, &["--gguf-file", bad], "hi");
        assert_one_line_error(&output, 2, &["--gguf-file"]);
    }
    // --gguf-file picks in a folder or repo: with a file, or a task that is not generation,
    // it is a usage error.
    let file = folder.join("a.Q4_1.gguf");
    assert_one_line_error(
        &chat(&file, &["--gguf-file", "a.Q4_1.gguf"], "hi"),
        2,
        &["is a file"],
    );
    let features = safeformers(&[
        "run",
        "feature-extraction",
        "--model",
        model,
        "--gguf-file",
        "a.Q4_1.gguf",
        "x",
    ]);
    assert_one_line_error(
        &features,
        2,
        &["--gguf-file applies to text-generation only"],
    );
    let _ = std::fs::remove_dir_all(&folder);
}

/// The real SmolLM2 GGUF with its chat template replaced by `template` (padded with spaces to
/// the original's length, so no offset moves): a real model carrying a hostile template.
fn smollm2_with_template(template: &str) -> Vec<u8> {
    let mut bytes = std::fs::read(safeformers_testkit::smollm2_gguf()).unwrap();
    let key = string("tokenizer.chat_template");
    let at = bytes
        .windows(key.len())
        .position(|window| window == key.as_slice())
        .expect("SmolLM2's GGUF carries a chat template")
        + key.len();
    assert_eq!(bytes[at..at + 4], 8u32.to_le_bytes(), "a string value");
    let length = u64::from_le_bytes(bytes[at + 4..at + 12].try_into().unwrap()) as usize;
    assert!(
        template.len() <= length,
        "{template}: longer than the original"
    );
    let start = at + 12;
    bytes[start..start + length].fill(b' ');
    bytes[start..start + template.len()].copy_from_slice(template.as_bytes());
    bytes
}

/// Runs `safeformers args` offline with `stdin`, failing the test if it has not finished after
/// 30 s (a safety net against a hang, not a timing test).
fn run_bounded(args: &[&str], stdin: &[u8]) -> std::process::Output {
    let input = safeformers_testkit::scratch_dir("gguf-cli-stdin").join("stdin");
    std::fs::write(&input, stdin).unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_safeformers"));
    safeformers_testkit::without_hub_environment(&mut command)
        .env("HF_HUB_OFFLINE", "1")
        .stdin(std::fs::File::open(&input).unwrap());
    let output = common::run_within(command, args, 30);
    let _ = std::fs::remove_dir_all(input.parent().unwrap());
    output
}

/// `chat` and `run text-generation --chat` on `folder` (holding the hostile `file`): exit 1,
/// nothing on stdout, one line on stderr naming the file.
fn assert_folder_refused(folder: &Path, file: &Path) {
    let model = folder.to_str().unwrap();
    let chat = run_bounded(
        &["chat", "--model", model, "--max-new-tokens", "4"],
        b"hi\n",
    );
    assert_one_line_error(&chat, 1, &[file.to_str().unwrap()]);
    let messages = r#"[{"role": "user", "content": "hi"}]"#;
    let run = run_bounded(
        &[
            "run",
            "text-generation",
            "--chat",
            "--model",
            model,
            "--max-new-tokens",
            "4",
            messages,
        ],
        b"",
    );
    assert_one_line_error(&run, 1, &[file.to_str().unwrap()]);
}

#[test]
fn a_folder_holding_a_hostile_gguf_is_refused_in_one_line_naming_the_file() {
    let templates = [
        // Loops (a billion iterations; nested loops of 10^10).
        "{% for i in range(10**9) %}x{% endfor %}",
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        // Renders gigabytes (a string doubled 64 times; one repeated a billion times).
        "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
        "{{ 'a' * 10**9 }}",
        // Reaches for Python objects (Jinja sandbox escapes of CVE-2024-34359).
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
        // Recurses without end.
        "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    ];
    for template in templates {
        let folder = safeformers_testkit::scratch_dir("gguf-cli-hostile");
        let file = folder.join("model.gguf");
        std::fs::write(&file, smollm2_with_template(template)).unwrap();
        assert_folder_refused(&folder, &file);
        let _ = std::fs::remove_dir_all(&folder);
    }
    // Broken files: absurd counts, overlapping tensors.
    for (name, bytes) in [
        ("counts.gguf", tiny_gguf([0, 32], u64::MAX)),
        ("overlap.gguf", tiny_gguf([0, 0], 2)),
    ] {
        let folder = safeformers_testkit::scratch_dir("gguf-cli-broken");
        let file = folder.join(name);
        std::fs::write(&file, bytes).unwrap();
        assert_folder_refused(&folder, &file);
        let _ = std::fs::remove_dir_all(&folder);
    }
}
