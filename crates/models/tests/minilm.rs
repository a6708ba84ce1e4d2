//! The real all-MiniLM-L6-v2 (sentence-transformers; a 6-layer BERT) loads and runs.
//!
//! `SAFEFORMERS_MINILM_DIR` is set by `scripts/test.sh` (which fetches the model); without it
//! these tests fail, they never skip. The mean-pooled, normalized embeddings are compared with
//! sentence-transformers' in `tests/fixtures/models/minilm-golden.json` (cosine ≥ 0.99999);
//! the pipelines layer checks the whole feature-extraction path.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::PathBuf;

use candle_core::{D, Device, Tensor};
use safeformers_models::{AutoModel, Error, Head};
use safeformers_weights::LoadPolicy;

use safeformers_testkit::minilm_dir;

#[test]
fn minilm_forward_is_finite_with_the_right_shape() -> Result<(), Error> {
    let model = AutoModel::load(&minilm_dir(), &LoadPolicy::default(), &Device::Cpu)?;
    assert_eq!(model.class_name(), "BertModel");
    assert_eq!(model.head(), Head::Base);
    // "[CLS] hello world [SEP]" in the uncased BERT vocabulary.
    let ids = Tensor::new(&[[101u32, 7592, 2088, 102]], &Device::Cpu)?;
    let output = model.forward(&ids, None, None)?;
    let hidden = output.last_hidden_state().ok_or_else(|| Error::Input {
        input: "output",
        reason: "no hidden state".into(),
    })?;
    assert_eq!(hidden.dims(), &[1, 4, 384]);
    let values = hidden.flatten_all()?.to_vec1::<f32>()?;
    assert!(values.iter().all(|v| v.is_finite()));
    assert!(output.pooler_output().is_some(), "MiniLM ships its pooler");
    Ok(())
}

/// Compares with `tests/fixtures/models/minilm-golden.json` (made by
/// `scripts/make_model_fixtures.py` with sentence-transformers): each sentence's tokens (cut to
/// its non-padding length) through the model, mean-pooled over the mask and L2-normalized, must
/// have cosine ≥ 0.99999 with the stored embedding.
#[test]
fn minilm_matches_sentence_transformers_golden_embeddings() -> Result<(), Error> {
    let golden_path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/models/minilm-golden.json");
    let text = std::fs::read_to_string(&golden_path).unwrap_or_else(|error| {
        panic!(
            "{}: {error} (committed; regenerate with scripts/make_model_fixtures.py)",
            golden_path.display()
        )
    });
    let golden: serde_json::Value =
        serde_json::from_str(&text).map_err(|source| Error::ConfigJson {
            path: golden_path.clone(),
            source,
        })?;
    let model = AutoModel::load(&minilm_dir(), &LoadPolicy::default(), &Device::Cpu)?;
    let rows = |value: &serde_json::Value| {
        common::json_rows(&value["data"], |v| v.as_f64().expect("a number"))
    };
    let ids = rows(&golden["tokens"]["input_ids"]);
    let types = rows(&golden["tokens"]["token_type_ids"]);
    let embeddings = rows(&golden["embeddings"]);
    let lengths: Vec<usize> = golden["lengths"]
        .as_array()
        .expect("lengths")
        .iter()
        .map(|v| v.as_u64().expect("a length") as usize)
        .collect();
    assert_eq!(lengths.len(), embeddings.len());
    for (index, length) in lengths.iter().copied().enumerate() {
        let to_tensor = |row: &[f64]| {
            let values: Vec<u32> = row.iter().take(length).map(|v| *v as u32).collect();
            Tensor::from_vec(values, (1, length), &Device::Cpu)
        };
        let input_ids = to_tensor(&ids[index])?;
        let token_types = to_tensor(&types[index])?;
        let output = model.forward(&input_ids, None, Some(&token_types))?;
        let hidden = output.last_hidden_state().ok_or_else(|| Error::Input {
            input: "output",
            reason: "no hidden state".into(),
        })?;
        let pooled = hidden.mean(1)?;
        let norm = pooled.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
        let ours = pooled
            .broadcast_div(&norm)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let theirs = &embeddings[index];
        assert_eq!(ours.len(), theirs.len());
        let dot: f64 = ours
            .iter()
            .zip(theirs)
            .map(|(a, b)| f64::from(*a) * b)
            .sum();
        let norm_theirs: f64 = theirs.iter().map(|v| v * v).sum::<f64>().sqrt();
        let cosine = dot / norm_theirs;
        println!("sentence {index} ({length} tokens): cosine {cosine:.7}");
        assert!(cosine >= 0.99999, "sentence {index}: cosine {cosine}");
    }
    Ok(())
}
