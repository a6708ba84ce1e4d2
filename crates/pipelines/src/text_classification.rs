//! `text-classification`, as Transformers' `TextClassificationPipeline`: labels from
//! `id2label`, a softmax for single-label models, a sigmoid for `multi_label_classification`
//! and for a single output (`num_labels == 1`), the raw value for `regression`.

use std::path::Path;

use safeformers_models::{Head, ProblemType};
use serde::Serialize;

use crate::encoder::{Encoder, LoadOptions, sigmoid, softmax};
use crate::error::Result;

/// A label and its score.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelScore {
    /// The label (`id2label`).
    pub label: String,
    /// Its probability (or the regression value).
    pub score: f32,
}

/// How logits become scores (Transformers' `function_to_apply`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScoreFunction {
    /// Probabilities over the labels.
    Softmax,
    /// An independent probability per label.
    Sigmoid,
    /// The logits as they are.
    None,
}

/// The text-classification pipeline.
#[derive(Debug)]
pub struct TextClassification {
    encoder: Encoder,
    function: ScoreFunction,
    batch_size: usize,
}

impl TextClassification {
    /// Loads a sequence-classification model and its tokenizer from `dir`.
    pub fn from_dir(
        dir: &Path,
        options: &LoadOptions,
        batch_size: usize,
    ) -> Result<TextClassification> {
        let encoder = Encoder::load(dir, Head::SequenceClassification, options)?;
        let model = encoder.model();
        let function = match model.problem_type() {
            Some(ProblemType::MultiLabelClassification) => ScoreFunction::Sigmoid,
            Some(ProblemType::Regression) => ScoreFunction::None,
            _ if model.config().num_labels == 1 => ScoreFunction::Sigmoid,
            _ => ScoreFunction::Softmax,
        };
        Ok(TextClassification {
            encoder,
            function,
            batch_size: batch_size.max(1),
        })
    }

    /// The tokenizer and model.
    pub fn encoder(&self) -> &Encoder {
        &self.encoder
    }

    /// How logits become scores for this model.
    pub fn score_function(&self) -> ScoreFunction {
        self.function
    }

    /// Per input (in input order), the `top_k` labels by descending score (all with `None`).
    pub fn run<S: AsRef<str>>(
        &self,
        inputs: &[S],
        top_k: Option<usize>,
    ) -> Result<Vec<Vec<LabelScore>>> {
        let mut results: Vec<Vec<LabelScore>> = vec![Vec::new(); inputs.len()];
        let options = self.encoder.encode_options();
        self.encoder
            .for_each_batch(inputs, self.batch_size, &options, |batch, _, output| {
                let logits = self.encoder.logits(output)?.to_vec2::<f32>()?;
                for (&index, row) in batch.iter().zip(logits) {
                    let scores = match self.function {
                        ScoreFunction::Softmax => softmax(&row),
                        ScoreFunction::Sigmoid => row.iter().map(|v| sigmoid(*v)).collect(),
                        ScoreFunction::None => row,
                    };
                    let mut labels: Vec<LabelScore> = scores
                        .into_iter()
                        .enumerate()
                        .map(|(i, score)| LabelScore {
                            label: self.encoder.label(i),
                            score,
                        })
                        .collect();
                    labels.sort_by(|a, b| b.score.total_cmp(&a.score));
                    labels.truncate(top_k.unwrap_or(usize::MAX));
                    if let Some(slot) = results.get_mut(index) {
                        *slot = labels;
                    }
                }
                Ok(())
            })?;
        Ok(results)
    }
}
