//! What every pipeline holds: a tokenizer and a model from one folder, and the step from
//! tokenized rows to a forward pass.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use safeformers_models::{
    Architecture, AutoModel, Head, LoadedModel, ModelOutput, TokenSequence, WeightOptions,
};
use safeformers_tokenize::{EncodeOptions, Encoding, Padding, Tokenizer, TokenizerOptions};
use safeformers_weights::LoadPolicy;

use crate::error::{PipelineError, Result};

/// How a pipeline loads its model: the security policy and the device.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Which weight formats may be read and whether remote code is trusted (never, today).
    pub policy: LoadPolicy,
    /// Where the model runs.
    pub device: Device,
    /// How linear-layer weights are stored (f32 by default; f16, bf16 or 8-bit blocks), for the
    /// encoders and the text-generation pipeline's decoder alike.
    pub weights: WeightOptions,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            policy: LoadPolicy::default(),
            device: Device::Cpu,
            weights: WeightOptions::default(),
        }
    }
}

/// A tokenizer and a model with its head, from one model folder.
#[derive(Debug)]
pub struct Encoder {
    dir: PathBuf,
    tokenizer: Tokenizer,
    model: LoadedModel,
    device: Device,
    max_length: usize,
}

impl Encoder {
    /// Loads the tokenizer and the model (with `head`, whatever `architectures` says) in `dir`.
    /// The linear layers' weights are stored as `options.weights` say.
    pub fn load(dir: &Path, head: Head, options: &LoadOptions) -> Result<Encoder> {
        let model = AutoModel::load_with_head_and_options(
            dir,
            Some(head),
            &options.policy,
            &options.device,
            options.weights,
        )?;
        let tokenizer = Tokenizer::from_dir(dir, &TokenizerOptions::default())?;
        let max_length = max_length(&tokenizer, &model);
        Ok(Encoder {
            dir: dir.to_path_buf(),
            tokenizer,
            model,
            device: options.device.clone(),
            max_length,
        })
    }

    /// The model folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The model.
    pub fn model(&self) -> &LoadedModel {
        &self.model
    }

    /// The most tokens (special tokens included) one row may have: the tokenizer's
    /// `model_max_length`, capped by what the model's position embeddings can address.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Runs the model on rows of equal length (one padded batch).
    pub fn forward(&self, rows: &[&Encoding]) -> Result<ModelOutput> {
        let Some(first) = rows.first() else {
            return Err(PipelineError::InvalidInput(
                "a forward pass needs at least one row".into(),
            ));
        };
        let seq = first.len();
        if seq == 0 || rows.iter().any(|row| row.len() != seq) {
            return Err(PipelineError::InvalidInput(format!(
                "{}: a batch needs rows of one non-zero length (padding), got lengths {:?}",
                self.dir.display(),
                rows.iter().map(|row| row.len()).collect::<Vec<_>>()
            )));
        }
        let flat = |field: fn(&Encoding) -> &Vec<u32>| -> Vec<u32> {
            rows.iter()
                .flat_map(|row| field(row).iter().copied())
                .collect()
        };
        let shape = (rows.len(), seq);
        let input_ids = Tensor::from_vec(flat(|row| &row.input_ids), shape, &self.device)?;
        let attention_mask =
            Tensor::from_vec(flat(|row| &row.attention_mask), shape, &self.device)?;
        let token_type_ids = if self.model.uses_token_type_ids() {
            Some(Tensor::from_vec(
                flat(|row| &row.token_type_ids),
                shape,
                &self.device,
            )?)
        } else {
            None
        };
        Ok(self
            .model
            .forward(&input_ids, Some(&attention_mask), token_type_ids.as_ref())?)
    }

    /// The real tokens' last hidden states of right-padded `rows` (one vector per token),
    /// computed without padding by [`LoadedModel::token_states`]; `None` when the model has no
    /// such path or a row is not right-padded (its real tokens are not a prefix), in which
    /// case the caller runs [`Encoder::forward`].
    pub fn token_states(&self, rows: &[&Encoding]) -> Result<Option<Vec<Vec<Vec<f32>>>>> {
        let mut sequences = Vec::with_capacity(rows.len());
        for row in rows {
            let real = row
                .attention_mask
                .iter()
                .take_while(|&&flag| flag != 0)
                .count();
            if row.attention_mask.iter().skip(real).any(|&flag| flag != 0) {
                return Ok(None);
            }
            let input_ids = row.input_ids.get(..real).unwrap_or_default();
            let token_type_ids = if self.model.uses_token_type_ids() {
                row.token_type_ids.get(..real)
            } else {
                None
            };
            sequences.push(TokenSequence {
                input_ids,
                token_type_ids,
            });
        }
        let Some(states) = self.model.token_states(&sequences).transpose()? else {
            return Ok(None);
        };
        Ok(Some(
            states
                .iter()
                .zip(&sequences)
                .map(|(states, sequence)| {
                    let width = states.len() / sequence.input_ids.len().max(1);
                    states
                        .chunks_exact(width.max(1))
                        .map(<[f32]>::to_vec)
                        .collect()
                })
                .collect(),
        ))
    }

    /// Tokenizes `inputs` in length-sorted batches of `batch_size` (padded to each batch's
    /// longest), runs each batch, and hands `each` the input indices, the rows and the output.
    pub(crate) fn for_each_batch<S: AsRef<str>>(
        &self,
        inputs: &[S],
        batch_size: usize,
        options: &EncodeOptions,
        mut each: impl FnMut(&[usize], &[&Encoding], &ModelOutput) -> Result<()>,
    ) -> Result<()> {
        let lengths: Vec<usize> = inputs.iter().map(|s| s.as_ref().chars().count()).collect();
        for batch in length_sorted_batches(&lengths, batch_size) {
            let texts: Vec<&str> = batch
                .iter()
                .filter_map(|&i| inputs.get(i).map(AsRef::as_ref))
                .collect();
            let encodings = self.tokenizer.encode_batch(&texts, options)?;
            let rows: Vec<&Encoding> = encodings.iter().collect();
            let output = self.forward(&rows)?;
            each(&batch, &rows, &output)?;
        }
        Ok(())
    }

    /// Encode options of the classification tasks: padded to the batch's longest, truncated to
    /// [`Encoder::max_length`] (Transformers would fail on a longer input instead).
    pub fn encode_options(&self) -> EncodeOptions {
        EncodeOptions {
            padding: Padding::Longest,
            truncation: Some(self.max_length),
            ..EncodeOptions::default()
        }
    }

    /// The label of class `index`: `id2label`, else Transformers' default `LABEL_{index}`.
    pub fn label(&self, index: usize) -> String {
        self.model
            .id2label()
            .get(&index)
            .cloned()
            .unwrap_or_else(|| format!("LABEL_{index}"))
    }

    /// The `logits` of `output`, or an error saying the model (loaded without the task's head)
    /// has none.
    pub(crate) fn logits<'a>(&self, output: &'a ModelOutput) -> Result<&'a Tensor> {
        output.logits().ok_or_else(|| self.wrong_output("logits"))
    }

    /// An error saying the model gave an output the task cannot use.
    pub(crate) fn wrong_output(&self, expected: &str) -> PipelineError {
        PipelineError::IncompatibleModel {
            path: self.dir.clone(),
            reason: format!(
                "{} did not return {expected} (load it with the task's head)",
                self.model.class_name()
            ),
        }
    }
}

/// `model_max_length`, capped by `max_position_embeddings` (less RoBERTa's offset: its
/// positions start after the padding index), as sentence-transformers caps it.
fn max_length(tokenizer: &Tokenizer, model: &LoadedModel) -> usize {
    let config = model.config();
    let positions = config
        .raw()
        .get("max_position_embeddings")
        .and_then(serde_json::Value::as_u64)
        .and_then(|n| usize::try_from(n).ok());
    let positions = positions.map(|n| match model.architecture() {
        Architecture::Roberta | Architecture::XlmRoberta => {
            let offset = config
                .pad_token_id
                .and_then(|id| usize::try_from(id).ok())
                .unwrap_or(1);
            n.saturating_sub(offset + 1)
        }
        // MPNet's positions start after its fixed padding index 1, whatever pad_token_id says.
        Architecture::MPNet => n.saturating_sub(2),
        Architecture::Bert
        | Architecture::DistilBert
        | Architecture::ModernBert
        | Architecture::Qwen3
        | Architecture::NomicBert
        | Architecture::Gte
        | Architecture::JinaBert => n,
    });
    match (tokenizer.model_max_length(), positions) {
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) => a,
        (None, Some(b)) => b,
        // Neither says: BERT's 512.
        (None, None) => 512,
    }
    .max(2)
}

/// Indices of the inputs grouped into batches of at most `batch_size`, longest first, so that
/// each batch pads as little as possible (sentence-transformers' order). Results go back to
/// input order by these indices.
pub fn length_sorted_batches(lengths: &[usize], batch_size: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(lengths.get(i).copied().unwrap_or(0)));
    order
        .chunks(batch_size.max(1))
        .map(<[usize]>::to_vec)
        .collect()
}

/// Reads a small JSON configuration file, refusing files over 1 MiB.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    read_json_capped(path, 1024 * 1024)
}

/// Reads a JSON file of at most `limit` bytes.
pub(crate) fn read_json_capped<T: serde::de::DeserializeOwned>(
    path: &Path,
    limit: u64,
) -> Result<T> {
    let cap = safeformers_files::ReadCap::new("a configuration file", limit);
    let bytes = match safeformers_files::read_capped(path, cap) {
        Ok(bytes) => bytes,
        Err(safeformers_files::FileError::TooLarge { .. }) => {
            return Err(PipelineError::FileTooLarge {
                path: path.to_path_buf(),
                limit,
            });
        }
        Err(error) => return Err(error.into()),
    };
    serde_json::from_slice(&bytes).map_err(|source| PipelineError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// Softmax of one row (numerically stable, as Transformers' pipelines compute it).
pub(crate) fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|v| (v - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|v| v / sum).collect()
}

/// The logistic function.
pub(crate) fn sigmoid(value: f32) -> f32 {
    1.0 / (1.0 + (-value).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_longest_first_and_cover_every_input() {
        let batches = length_sorted_batches(&[3, 9, 1, 9, 5], 2);
        assert_eq!(batches, vec![vec![1, 3], vec![4, 0], vec![2]]);
        assert!(length_sorted_batches(&[], 32).is_empty());
        assert_eq!(length_sorted_batches(&[1, 2], 0), vec![vec![1], vec![0]]);
    }
}
