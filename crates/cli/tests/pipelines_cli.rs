//! `safeformers forward` and `safeformers run`, driven as a user drives them: JSON shapes against
//! the goldens of `scripts/make_model_fixtures.py`, exit codes, one-line errors for bad input
//! and broken model folders.

// Test code: a failed expectation is a panic with a message.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{
    assert_one_line_error, fixture, fixtures, safeformers_offline as safeformers_with_stdin,
};

use std::path::{Path, PathBuf};
use std::process::Output;

use safeformers_weights::TensorView;

fn safeformers(args: &[&str]) -> Output {
    safeformers_with_stdin(args, None)
}

fn models() -> PathBuf {
    fixtures().join("models")
}

fn model(name: &str) -> String {
    fixture(&format!("models/{name}"))
}

fn json(output: &Output) -> serde_json::Value {
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {output:?}"))
}

fn flat(value: &serde_json::Value) -> Vec<f64> {
    match value {
        serde_json::Value::Array(items) => items.iter().flat_map(flat).collect(),
        other => vec![other.as_f64().unwrap()],
    }
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

fn ids_arg(row: &serde_json::Value) -> String {
    row.as_array()
        .unwrap()
        .iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

#[test]
fn forward_matches_transformers_for_a_batch() {
    for (name, key) in [("bert", "last_hidden_state"), ("bert-seqcls", "logits")] {
        let text = std::fs::read_to_string(models().join(name).join("outputs.json")).unwrap();
        let golden: serde_json::Value = serde_json::from_str(&text).unwrap();
        let case = &golden["cases"]["batch"];
        let mut args = vec![
            "forward".to_string(),
            "--model".into(),
            model(name),
            "--json".into(),
        ];
        for field in ["input_ids", "attention_mask", "token_type_ids"] {
            for row in case["inputs"][field]["data"].as_array().unwrap() {
                args.push(format!("--{}", field.replace('_', "-")));
                args.push(ids_arg(row));
            }
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = json(&safeformers(&args));
        assert_eq!(out["output"], if key == "logits" { "logits" } else { key });
        assert_eq!(out["shape"], case["outputs"][key]["shape"]);
        let diff = max_abs_diff(&flat(&out["data"]), &flat(&case["outputs"][key]["data"]));
        assert!(diff <= 1e-4, "{name}: {diff}");
    }
}

#[test]
fn forward_usage_and_input_errors() {
    let bert = model("bert");
    let out = safeformers(&["forward", "--model", &bert, "--input-ids", "2,x"]);
    assert_one_line_error(&out, 2, &["not a non-negative integer"]);
    let out = safeformers(&[
        "forward",
        "--model",
        &bert,
        "--input-ids",
        "2,3",
        "--input-ids",
        "2",
    ]);
    assert_one_line_error(&out, 2, &["same length"]);
    let out = safeformers(&["forward", "--model", &bert, "--input-ids", "2,99999"]);
    assert_one_line_error(&out, 1, &["99999"]);
}

#[test]
fn run_feature_extraction_shapes() {
    let bert = model("bert");
    // Token embeddings: [1, seq, hidden] per input, as Transformers' pipeline.
    let out = json(&safeformers(&[
        "run",
        "feature-extraction",
        "--model",
        &bert,
        "hello world",
        "",
    ]));
    let items = out.as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0].as_array().unwrap().len(), 1);
    assert_eq!(items[1][0].as_array().unwrap().len(), 2, "[CLS] [SEP]");
    assert_eq!(items[1][0][0].as_array().unwrap().len(), 32);

    // Pooled, from stdin, with a 100k-character line (truncated, not an error).
    let long = "word ".repeat(20_000);
    let stdin = format!("hello\n\n{long}\n");
    let out = json(&safeformers_with_stdin(
        &[
            "run",
            "feature-extraction",
            "--model",
            &bert,
            "--pooling",
            "mean",
            "--normalize",
            "--batch-size",
            "2",
            "--threads",
            "2",
            "-",
        ],
        Some(stdin.as_bytes()),
    ));
    let vectors = out.as_array().unwrap();
    assert_eq!(vectors.len(), 3);
    for vector in vectors {
        let norm: f64 = flat(vector).iter().map(|v| v * v).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
    }
}

#[test]
fn run_rejects_invalid_utf8_on_stdin_and_bad_flags() {
    let bert = model("bert");
    let out = safeformers_with_stdin(
        &["run", "feature-extraction", "--model", &bert, "-"],
        Some(b"fine\n\xff\xfe broken\n"),
    );
    assert_one_line_error(&out, 1, &["stdin is not valid UTF-8"]);
    let out = safeformers(&[
        "run",
        "feature-extraction",
        "--model",
        &bert,
        "--batch-size",
        "0",
        "x",
    ]);
    assert_one_line_error(&out, 2, &["--batch-size"]);
    let out = safeformers(&["run", "sentence-similarity", "--model", &bert, "only one"]);
    assert_one_line_error(&out, 2, &["at least one other"]);
    let out = safeformers(&[
        "run",
        "sentence-similarity",
        "--model",
        &bert,
        "--normalize",
        "a",
        "b",
    ]);
    assert_one_line_error(&out, 2, &["--normalize"]);
}

#[test]
fn sentence_similarity_of_minilm_reproduces_sentence_transformers() {
    let dir = std::env::var_os("SAFEFORMERS_MINILM_DIR")
        .map(PathBuf::from)
        .expect(
            "SAFEFORMERS_MINILM_DIR is not set: run the tests with scripts/test.sh, or export \
         SAFEFORMERS_MINILM_DIR=$(scripts/fetch-minilm.sh | tail -n 1)",
        );
    let out = json(&safeformers(&[
        "run",
        "sentence-similarity",
        "--model",
        dir.to_str().unwrap(),
        "A man is eating food.",
        "A man is eating a piece of bread.",
    ]));
    let cosine = out[0].as_f64().unwrap();
    // minilm-golden.json's "similarity".
    assert!((cosine - 0.7553371).abs() < 1e-5, "{cosine}");
}

/// A copy of a fixture folder in a fresh temporary directory.
fn copy_model(name: &str, tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sf-pipe-cli-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(models().join(name)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    dir
}

/// Rewrites `dir/model.safetensors` through `edit` (name, shape) → Some(new shape) or None to drop.
fn rewrite_weights(dir: &Path, edit: impl Fn(&str, &[usize]) -> Option<Vec<usize>>) {
    let path = dir.join("model.safetensors");
    let checkpoint = safeformers_weights::safetensors::open(&path).unwrap();
    let owned: Vec<(String, safeformers_weights::Dtype, Vec<usize>, Vec<u8>)> = checkpoint
        .tensors()
        .filter_map(|t| {
            edit(t.name, t.shape).map(|shape| (t.name.to_string(), t.dtype, shape, t.data.to_vec()))
        })
        .collect();
    drop(checkpoint);
    let views: Vec<TensorView<'_>> = owned
        .iter()
        .map(|(name, dtype, shape, data)| TensorView {
            name,
            dtype: *dtype,
            shape,
            data,
        })
        .collect();
    std::fs::remove_file(&path).unwrap();
    safeformers_weights::safetensors::write_file(&path, &views, &Default::default()).unwrap();
}

#[test]
fn broken_model_folders_are_one_line_errors() {
    // A config without a required field.
    let dir = copy_model("bert", "config");
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let mut value: serde_json::Value = serde_json::from_str(&config).unwrap();
    value.as_object_mut().unwrap().remove("hidden_size");
    std::fs::write(dir.join("config.json"), value.to_string()).unwrap();
    let out = safeformers(&[
        "run",
        "feature-extraction",
        "--model",
        dir.to_str().unwrap(),
        "hi",
    ]);
    assert_one_line_error(&out, 1, &["hidden_size"]);
    let out = safeformers(&[
        "forward",
        "--model",
        dir.to_str().unwrap(),
        "--input-ids",
        "2,3",
    ]);
    assert_one_line_error(&out, 1, &["hidden_size"]);
    let _ = std::fs::remove_dir_all(&dir);

    // A checkpoint missing a tensor.
    let dir = copy_model("bert", "missing");
    let gone = "encoder.layer.1.output.dense.weight";
    rewrite_weights(&dir, |name, shape| {
        (!name.ends_with(gone)).then(|| shape.to_vec())
    });
    let out = safeformers(&[
        "run",
        "feature-extraction",
        "--model",
        dir.to_str().unwrap(),
        "hi",
    ]);
    assert_one_line_error(&out, 1, &[gone]);
    let _ = std::fs::remove_dir_all(&dir);

    // A tensor of the wrong shape (same byte size: the dimensions swapped).
    let dir = copy_model("bert", "shape");
    let swapped = "encoder.layer.0.intermediate.dense.weight";
    rewrite_weights(&dir, |name, shape| {
        Some(if name.ends_with(swapped) {
            shape.iter().rev().copied().collect()
        } else {
            shape.to_vec()
        })
    });
    let out = safeformers(&[
        "run",
        "feature-extraction",
        "--model",
        dir.to_str().unwrap(),
        "hi",
    ]);
    assert_one_line_error(&out, 1, &[swapped]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn run_text_classification_and_fill_mask_match_the_goldens() {
    let text = std::fs::read_to_string(models().join("pipelines.json")).unwrap();
    let golden: serde_json::Value = serde_json::from_str(&text).unwrap();
    let entries = golden["entries"].as_array().unwrap();
    let first = |task: &str| {
        entries
            .iter()
            .find(|e| e["task"] == task)
            .unwrap_or_else(|| panic!("no {task} entry"))
    };

    let entry = first("text-classification");
    let dir = model(entry["model"].as_str().unwrap());
    let input = entry["inputs"].as_str().unwrap();
    let out = json(&safeformers(&[
        "run",
        "text-classification",
        "--model",
        &dir,
        "--top-k",
        "3",
        input,
    ]));
    let expected = entry["output"].as_array().unwrap();
    for (actual, expected) in out[0].as_array().unwrap().iter().zip(expected) {
        assert_eq!(actual["label"], expected["label"]);
        assert!(
            (actual["score"].as_f64().unwrap() - expected["score"].as_f64().unwrap()).abs() <= 1e-4
        );
    }
    let best = json(&safeformers(&[
        "run",
        "text-classification",
        "--model",
        &dir,
        input,
        "",
    ]));
    assert_eq!(
        best.as_array().unwrap().len(),
        2,
        "the best label of each input"
    );
    assert_eq!(best[0]["label"], expected[0]["label"]);

    let entry = first("fill-mask");
    let dir = model(entry["model"].as_str().unwrap());
    let input = entry["inputs"].as_str().unwrap();
    let out = json(&safeformers(&["run", "fill-mask", "--model", &dir, input]));
    let expected = entry["output"].as_array().unwrap();
    let fills = out[0].as_array().unwrap();
    assert_eq!(fills.len(), 5);
    for (actual, expected) in fills.iter().zip(expected) {
        assert_eq!(actual["token"], expected["token"]);
        assert_eq!(actual["token_str"], expected["token_str"]);
        assert_eq!(actual["sequence"], expected["sequence"]);
    }
    let out = safeformers(&["run", "fill-mask", "--model", &dir, "no mask here"]);
    assert_one_line_error(&out, 1, &["no mask token"]);
    let out = safeformers(&[
        "run",
        "feature-extraction",
        "--model",
        &dir,
        "--top-k",
        "2",
        "x",
    ]);
    assert_one_line_error(&out, 2, &["--top-k"]);
}

#[test]
fn run_token_classification_aggregates() {
    let dir = model("roberta-ner");
    let out = json(&safeformers(&[
        "run",
        "token-classification",
        "--model",
        &dir,
        "--aggregation",
        "first",
        "My name is Sarah and I live in London.",
        "",
    ]));
    let inputs = out.as_array().unwrap();
    assert_eq!(inputs.len(), 2);
    assert_eq!(
        inputs[1],
        serde_json::json!([]),
        "the empty string has no entities"
    );
    for group in inputs[0].as_array().unwrap() {
        assert!(group.get("entity_group").is_some(), "{group}");
        assert!(group["start"].as_u64().unwrap() < group["end"].as_u64().unwrap());
    }
    let out = json(&safeformers(&[
        "run",
        "token-classification",
        "--model",
        &dir,
        "Sarah",
    ]));
    assert!(
        out[0]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t.get("index").is_some())
    );
    let out = safeformers(&[
        "run",
        "fill-mask",
        "--model",
        &dir,
        "--aggregation",
        "max",
        "x",
    ]);
    assert_one_line_error(&out, 2, &["--aggregation"]);
}

/// Runs `run feature-extraction` for every case of the sentence-transformers layout `layout`
/// (`tests/fixtures/sentence-transformers/<layout>/outputs.json`) and compares with its
/// embeddings: cosine ≥ 0.99999, max abs diff ≤ 1e-4; the runs' outputs.
fn check_sentence_transformers_layout(layout: &str) -> Vec<Output> {
    let dir = fixture(&format!("sentence-transformers/{layout}"));
    let golden: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(&dir).join("outputs.json")).unwrap(),
    )
    .unwrap();
    let texts: Vec<String> = serde_json::from_value(golden["texts"].clone()).unwrap();
    let mut outputs = Vec::new();
    for case in golden["cases"].as_array().unwrap() {
        let mut args = vec!["run", "feature-extraction", "--model", dir.as_str()];
        let truncate = case["truncate_dim"].as_u64().map(|n| n.to_string());
        if let Some(name) = case["prompt_name"].as_str() {
            args.extend(["--prompt-name", name]);
        }
        if let Some(n) = &truncate {
            args.extend(["--truncate-dim", n.as_str()]);
        }
        if case["normalize_embeddings"].as_bool() == Some(true) {
            args.push("--normalize");
        }
        args.extend(texts.iter().map(String::as_str));
        let output = safeformers(&args);
        let got: Vec<Vec<f32>> = serde_json::from_value(json(&output)).unwrap();
        let want: Vec<Vec<f32>> = serde_json::from_value(case["embeddings"].clone()).unwrap();
        assert_eq!(got.len(), want.len());
        for (got, want) in got.iter().zip(&want) {
            let cosine = safeformers_pipelines::cosine_similarity(got, want);
            let diff = safeformers_testkit::max_abs_diff(got, want);
            assert!(
                got.len() == want.len() && cosine >= 0.99999 && diff <= 1e-4,
                "{layout} {}: cosine {cosine}, max abs diff {diff}",
                case["name"]
            );
        }
        outputs.push(output);
    }
    outputs
}

/// `run feature-extraction` on the Qwen3 sentence-transformers layouts gives the embeddings
/// `SentenceTransformer.encode` gave (`scripts/make_sentence_transformers_fixtures.py`; cosine
/// ≥ 0.99999, max abs diff ≤ 1e-4): the default prompt, `--prompt-name` as
/// `encode(prompt_name=...)`, `--truncate-dim` as `truncate_dim=...`, with `--normalize` as
/// `normalize_embeddings=True`. An unknown prompt name is a one-line error naming the prompts.
#[test]
fn feature_extraction_of_qwen3_sentence_transformers_layouts() {
    for layout in ["qwen3-embedding", "qwen3-embedding-dense"] {
        check_sentence_transformers_layout(layout);
    }
    let dir = fixture("sentence-transformers/qwen3-embedding");
    let out = safeformers(&[
        "run",
        "feature-extraction",
        "--model",
        &dir,
        "--prompt-name",
        "passage",
        "a",
    ]);
    assert_one_line_error(&out, 1, &["`passage`", "document, query"]);
    let out = safeformers(&[
        "run",
        "text-classification",
        "--model",
        &dir,
        "--prompt-name",
        "query",
        "a",
    ]);
    assert_one_line_error(&out, 2, &["--prompt-name"]);
}

/// `run feature-extraction` on the nomic-ai/modernbert-embed-base-shaped layout
/// (`scripts/make_modernbert_fixtures.py`): a ModernBERT with sliding windows shorter than the
/// texts, mean pooling, the `search_query: ` / `search_document: ` prompts and `--truncate-dim`.
#[test]
fn feature_extraction_of_the_modernbert_sentence_transformers_layout() {
    check_sentence_transformers_layout("modernbert-embed");
}

/// The remote-code layouts (NomicBert, GTE "new") run their native ports with no flag: the
/// embeddings are the remote code's, and stderr says which files were not run.
#[test]
fn feature_extraction_of_the_remote_code_sentence_transformers_layouts() {
    for (layout, file, class) in [
        (
            "nomic-embed",
            "`modeling_hf_nomic_bert.py` in repo nomic-ai/nomic-bert-2048 (not fetched)",
            "NomicBertModel",
        ),
        (
            "gte-embed",
            "`modeling.py` in repo Alibaba-NLP/new-impl (not fetched)",
            "NewModel",
        ),
    ] {
        for output in check_sentence_transformers_layout(layout) {
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(
                stderr.contains(file)
                    && stderr.contains(&format!("not run; safeformers' {class} is used")),
                "{layout}: {stderr}"
            );
        }
    }
}

/// The JinaBert v2 and MPNet layouts (`scripts/make_jina_bert_fixtures.py`,
/// `scripts/make_mpnet_fixtures.py`) give the embeddings sentence-transformers gave. Jina's
/// `auto_map` names code in jinaai/jina-bert-implementation: no flag is needed, nothing is
/// fetched or run, and stderr says which files are not run and what runs instead.
#[test]
fn feature_extraction_of_jina_and_mpnet_layouts() {
    for output in check_sentence_transformers_layout("jina-embed") {
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(
                "`modeling_bert.py` in repo jinaai/jina-bert-implementation (not fetched)"
            ) && stderr.contains("are not run; safeformers' JinaBertModel is used"),
            "{stderr}"
        );
    }
    for output in check_sentence_transformers_layout("mpnet-embed") {
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.contains("not run"), "{stderr}");
    }
}
