//! Embedding models in sentence-transformers layouts, against the embeddings
//! `SentenceTransformer.encode` gave for them (`tests/fixtures/sentence-transformers/`, with
//! sentence-transformers 6.3.0 and transformers 5.25.0). Qwen3 (written by
//! `scripts/make_sentence_transformers_fixtures.py`): last-token pooling of a left-padded batch,
//! the folder's prompts (named, default, empty), `Dense` modules before `Normalize`, and
//! `truncate_dim` with and without normalization after it. NomicBert and GTE "new" (written by
//! `scripts/make_remote_code_fixtures.py`, which ran their remote code): mean pooling with
//! nomic-embed's four task prompts, CLS pooling, and `truncate_dim` of unnormalized embeddings.
//! ModernBERT (written by `scripts/make_modernbert_fixtures.py`): nomic-ai/modernbert-embed-base's
//! mean pooling over windows shorter than the texts, its `search_query: ` / `search_document: `
//! prompts, and `truncate_dim`. JinaBert v2 and MPNet (written by
//! `scripts/make_jina_bert_fixtures.py` and `scripts/make_mpnet_fixtures.py`): the mean
//! pooling of jina-embeddings-v2 (no Normalize) and all-mpnet-base-v2 (with Normalize), neither
//! with prompts, and `truncate_dim`.
//! Every embedding must have cosine ≥ 0.99999 and max abs diff ≤ 1e-4 to its reference, in
//! padded batches and one input at a time.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::path::{Path, PathBuf};

use safeformers_pipelines::{
    FeatureExtraction, FeatureExtractionOptions, LoadOptions, PipelineError, PoolingMode,
    cosine_similarity,
};
use safeformers_weights::LoadPolicy;
use serde_json::Value;

const TOLERANCE: f32 = 1e-4;
const MIN_COSINE: f32 = 0.99999;

fn layout(name: &str) -> PathBuf {
    common::fixtures()
        .join("../sentence-transformers")
        .join(name)
}

fn outputs(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("outputs.json"))
        .expect("outputs.json (run scripts/make_sentence_transformers_fixtures.py)");
    serde_json::from_str(&text).unwrap()
}

/// The pipeline options of one golden case.
fn case_options(case: &Value, batch_size: usize) -> FeatureExtractionOptions {
    FeatureExtractionOptions {
        batch_size,
        prompt_name: case["prompt_name"].as_str().map(str::to_string),
        truncate_dim: case["truncate_dim"].as_u64().map(|n| n as usize),
        normalize: case["normalize_embeddings"].as_bool().unwrap_or(false),
        ..FeatureExtractionOptions::default()
    }
}

fn check_layout(name: &str, pooling: PoolingMode) -> usize {
    let dir = layout(name);
    let golden = outputs(&dir);
    let texts: Vec<String> = serde_json::from_value(golden["texts"].clone()).unwrap();
    let mut checked = 0;
    for case in golden["cases"].as_array().unwrap() {
        let expected: Vec<Vec<f32>> = serde_json::from_value(case["embeddings"].clone()).unwrap();
        for batch_size in [1, 4] {
            let label = format!("{name} {} batch {batch_size}", case["name"]);
            let pipeline = FeatureExtraction::from_dir(&dir, &case_options(case, batch_size))
                .unwrap_or_else(|e| panic!("{label}: {e}"));
            assert_eq!(pipeline.pooling(), [pooling]);
            let got = pipeline.embed(&texts).unwrap();
            let mut worst = (0.0f32, 1.0f32);
            for (got, want) in got.iter().zip(&expected) {
                assert_eq!(got.len(), want.len(), "{label}: width");
                let diff = safeformers_testkit::max_abs_diff(got, want);
                let cosine = cosine_similarity(got, want);
                assert!(
                    diff <= TOLERANCE && cosine >= MIN_COSINE,
                    "{label}: max abs diff {diff}, cosine {cosine}"
                );
                worst = (worst.0.max(diff), worst.1.min(cosine));
            }
            println!(
                "{label}: max abs diff {:e}, min cosine {}",
                worst.0, worst.1
            );
            checked += 1;
        }
    }
    checked
}

#[test]
fn qwen3_embedding_layout_matches_sentence_transformers() {
    assert_eq!(check_layout("qwen3-embedding", PoolingMode::LastToken), 6);
}

#[test]
fn qwen3_dense_layout_matches_sentence_transformers() {
    assert_eq!(
        check_layout("qwen3-embedding-dense", PoolingMode::LastToken),
        10
    );
}

/// nomic-embed-text-v1.5's layout (a NomicBert port, no Normalize module): mean pooling, the
/// four task prompts, and `truncate_dim` with and without normalization.
#[test]
fn nomic_embed_layout_matches_sentence_transformers() {
    assert_eq!(check_layout("nomic-embed", PoolingMode::Mean), 14);
}

/// gte-base-en-v1.5's layout (a GTE "new" port with NTK-scaled rotary, no Normalize module):
/// CLS pooling, and `truncate_dim` with and without normalization.
#[test]
fn gte_embed_layout_matches_sentence_transformers() {
    assert_eq!(check_layout("gte-embed", PoolingMode::Cls), 6);
}

/// nomic-ai/modernbert-embed-base's layout: mean pooling (prompt tokens included) over a
/// ModernBERT whose local layers' windows are shorter than the texts, prompts, `truncate_dim`.
#[test]
fn modernbert_embed_layout_matches_sentence_transformers() {
    assert_eq!(check_layout("modernbert-embed", PoolingMode::Mean), 12);
}

/// JinaBert v2 (native port of remote code) in jina-embeddings-v2's layout: mean pooling, no
/// Normalize, no prompts (`scripts/make_jina_bert_fixtures.py`, embeddings from
/// sentence-transformers on our torch re-implementation, checked against our NumPy reference).
#[test]
fn jina_embed_layout_matches_sentence_transformers() {
    assert_eq!(check_layout("jina-embed", PoolingMode::Mean), 6);
}

/// MPNet in all-mpnet-base-v2's layout: mean pooling, Normalize, no prompts
/// (`scripts/make_mpnet_fixtures.py`).
#[test]
fn mpnet_embed_layout_matches_sentence_transformers() {
    assert_eq!(check_layout("mpnet-embed", PoolingMode::Mean), 6);
}

/// The jina and mpnet layouts, like their real models, have no prompts: a prompt name is an
/// error, while an explicit prompt text is prepended (and changes the embedding).
#[test]
fn layouts_without_prompts_refuse_prompt_names() {
    for name in ["jina-embed", "mpnet-embed"] {
        let dir = layout(name);
        let named = FeatureExtractionOptions {
            prompt_name: Some("query".to_string()),
            ..FeatureExtractionOptions::default()
        };
        let error = FeatureExtraction::from_dir(&dir, &named).unwrap_err();
        assert!(
            matches!(error, PipelineError::InvalidInput(_)),
            "{name}: {error}"
        );
        let plain =
            FeatureExtraction::from_dir(&dir, &FeatureExtractionOptions::default()).unwrap();
        assert_eq!(plain.prompt(), None, "{name}");
        let explicit = FeatureExtractionOptions {
            prompt: Some("query: ".to_string()),
            ..FeatureExtractionOptions::default()
        };
        let prompted = FeatureExtraction::from_dir(&dir, &explicit).unwrap();
        assert_ne!(
            prompted.embed(&["Hello world!"]).unwrap(),
            plain.embed(&["Hello world!"]).unwrap(),
            "{name}"
        );
    }
}

/// The prompts change the embeddings (so the goldens above test them), an unknown prompt name is
/// an error naming the folder's prompts, and an explicit prompt text replaces any named one.
#[test]
fn prompts_are_chosen_as_sentence_transformers_does() {
    let dir = layout("qwen3-embedding");
    let golden = outputs(&dir);
    let query = golden["prompts"]["query"].as_str().unwrap().to_string();
    let options = |prompt_name: Option<&str>, prompt: Option<&str>| FeatureExtractionOptions {
        prompt_name: prompt_name.map(str::to_string),
        prompt: prompt.map(str::to_string),
        ..FeatureExtractionOptions::default()
    };
    let named = FeatureExtraction::from_dir(&dir, &options(Some("query"), None)).unwrap();
    assert_eq!(named.prompt(), Some(query.as_str()));
    let plain = FeatureExtraction::from_dir(&dir, &options(None, None)).unwrap();
    assert_eq!(plain.prompt(), None, "no default_prompt_name");
    let explicit =
        FeatureExtraction::from_dir(&dir, &options(Some("document"), Some(&query))).unwrap();
    let (a, b) = (
        named.embed(&["Hello world!"]).unwrap(),
        explicit.embed(&["Hello world!"]).unwrap(),
    );
    assert_eq!(a, b);
    assert_ne!(a, plain.embed(&["Hello world!"]).unwrap());

    let error = FeatureExtraction::from_dir(&dir, &options(Some("passage"), None)).unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("`passage`") && message.contains("document, query"),
        "{message}"
    );
    // A folder without prompts has no named prompt.
    let error = FeatureExtraction::from_dir(&common::model("bert"), &options(Some("query"), None))
        .unwrap_err();
    assert!(matches!(error, PipelineError::InvalidInput(_)), "{error}");
}

/// Copies the Dense layout to a scratch folder, for variations.
fn dense_copy(tag: &str) -> PathBuf {
    let source = layout("qwen3-embedding-dense");
    let dir = std::env::temp_dir().join(format!("sf-st-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    copy_dir(&source, &dir);
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A Dense module's weights follow the load policy (a pickle `pytorch_model.bin` is refused
/// without --allow-pickle, as a policy refusal), and its activation is a name matched against
/// the implemented ones, never imported.
#[test]
fn dense_modules_are_data_under_the_load_policy() {
    let dir = dense_copy("pickle");
    std::fs::remove_file(dir.join("3_Dense/model.safetensors")).unwrap();
    std::fs::write(
        dir.join("3_Dense/pytorch_model.bin"),
        b"PK\x03\x04 not a real pickle",
    )
    .unwrap();
    let error =
        FeatureExtraction::from_dir(&dir, &FeatureExtractionOptions::default()).unwrap_err();
    assert!(error.is_policy_refusal(), "{error}");
    assert!(error.to_string().contains("pytorch_model.bin"), "{error}");
    let allowed = FeatureExtractionOptions {
        load: LoadOptions {
            policy: LoadPolicy::allowing_pickle(),
            ..LoadOptions::default()
        },
        ..FeatureExtractionOptions::default()
    };
    // Allowed, the file is read by the restricted unpickler, which finds no checkpoint here.
    let error = FeatureExtraction::from_dir(&dir, &allowed).unwrap_err();
    assert!(!error.is_policy_refusal(), "{error}");
    std::fs::remove_dir_all(&dir).unwrap();

    let dir = dense_copy("activation");
    let config_path = dir.join("2_Dense/config.json");
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    config["activation_function"] = Value::from("evil_pkg.Backdoor");
    std::fs::write(&config_path, config.to_string()).unwrap();
    let error =
        FeatureExtraction::from_dir(&dir, &FeatureExtractionOptions::default()).unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("evil_pkg.Backdoor") && message.contains("never runs"),
        "{message}"
    );
    // A Dense whose shape does not match its weights names the tensor.
    config["activation_function"] = Value::from("torch.nn.modules.activation.Tanh");
    config["out_features"] = Value::from(25);
    std::fs::write(&config_path, config.to_string()).unwrap();
    let error =
        FeatureExtraction::from_dir(&dir, &FeatureExtractionOptions::default()).unwrap_err();
    assert!(error.to_string().contains("linear.weight"), "{error}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `truncate_dim` applies to sentence embeddings only, and must keep something.
#[test]
fn truncate_dim_needs_a_sentence_embedding() {
    let dir = layout("qwen3-embedding-dense");
    for (pooling, truncate_dim) in [(Some(Vec::new()), Some(8)), (None, Some(0))] {
        let options = FeatureExtractionOptions {
            pooling,
            truncate_dim,
            ..FeatureExtractionOptions::default()
        };
        let error = FeatureExtraction::from_dir(&dir, &options).unwrap_err();
        assert!(error.to_string().contains("truncate_dim"), "{error}");
    }
}
