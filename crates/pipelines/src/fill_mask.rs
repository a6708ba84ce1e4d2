//! `fill-mask`, as Transformers' `FillMaskPipeline`: for each mask token, the `top_k` tokens by
//! softmax probability, with `token_str` (the token decoded alone) and `sequence` (the input
//! with the mask replaced, padding removed, decoded; special tokens skipped when there is one
//! mask).

use std::path::Path;

use safeformers_models::Head;
use serde::Serialize;

use crate::encoder::{Encoder, LoadOptions, softmax};
use crate::error::{PipelineError, Result};

/// One candidate for a mask.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MaskFill {
    /// Its probability.
    pub score: f32,
    /// The token id.
    pub token: u32,
    /// The token decoded alone.
    pub token_str: String,
    /// The whole input with this token in place of the mask.
    pub sequence: String,
}

/// The fill-mask pipeline.
#[derive(Debug)]
pub struct FillMask {
    encoder: Encoder,
    mask_id: u32,
    batch_size: usize,
}

impl FillMask {
    /// Loads a masked-LM model and its tokenizer from `dir`; the tokenizer must have a mask
    /// token.
    pub fn from_dir(dir: &Path, options: &LoadOptions, batch_size: usize) -> Result<FillMask> {
        let encoder = Encoder::load(dir, Head::MaskedLm, options)?;
        let mask_id = encoder.tokenizer().mask_token_id().ok_or_else(|| {
            PipelineError::IncompatibleModel {
                path: dir.to_path_buf(),
                reason: "the tokenizer has no mask token".into(),
            }
        })?;
        Ok(FillMask {
            encoder,
            mask_id,
            batch_size: batch_size.max(1),
        })
    }

    /// The mask token, as text (`[MASK]`, `<mask>`).
    pub fn mask_token(&self) -> String {
        self.encoder
            .tokenizer()
            .id_to_token(self.mask_id)
            .unwrap_or_default()
    }

    /// Per input (in input order), per mask token in it (left to right), the `top_k` fills.
    /// An input without a mask token is an error.
    pub fn run<S: AsRef<str>>(
        &self,
        inputs: &[S],
        top_k: usize,
    ) -> Result<Vec<Vec<Vec<MaskFill>>>> {
        let mut results: Vec<Vec<Vec<MaskFill>>> = vec![Vec::new(); inputs.len()];
        let options = self.encoder.encode_options();
        let tokenizer = self.encoder.tokenizer();
        let pad = tokenizer.pad_token_id();
        self.encoder
            .for_each_batch(inputs, self.batch_size, &options, |batch, rows, output| {
                let logits = self.encoder.logits(output)?.to_vec3::<f32>()?;
                for ((&index, row), row_logits) in batch.iter().zip(rows).zip(logits) {
                    // Padding of this batch is not part of the input.
                    let ids: Vec<u32> = row
                        .input_ids
                        .iter()
                        .zip(&row.attention_mask)
                        .filter(|(_, mask)| **mask != 0)
                        .map(|(id, _)| *id)
                        .collect();
                    let positions: Vec<usize> = row
                        .input_ids
                        .iter()
                        .enumerate()
                        .filter(|(i, id)| {
                            **id == self.mask_id && row.attention_mask.get(*i) == Some(&1)
                        })
                        .map(|(i, _)| i)
                        .collect();
                    if positions.is_empty() {
                        return Err(PipelineError::InvalidInput(format!(
                            "input {index} has no mask token `{}` (after truncation to {} tokens)",
                            self.mask_token(),
                            self.encoder.max_length()
                        )));
                    }
                    let single = positions.len() == 1;
                    let mut per_mask = Vec::with_capacity(positions.len());
                    for &position in &positions {
                        let Some(scores) = row_logits.get(position).map(|l| softmax(l)) else {
                            continue;
                        };
                        // Where the mask sits among the real tokens (left padding shifts it).
                        let real_position = row
                            .attention_mask
                            .iter()
                            .take(position)
                            .filter(|mask| **mask != 0)
                            .count();
                        let mut order: Vec<usize> = (0..scores.len()).collect();
                        order.sort_by(|&a, &b| {
                            let (sa, sb) = (scores.get(a), scores.get(b));
                            sb.partial_cmp(&sa).unwrap_or(std::cmp::Ordering::Equal)
                        });
                        let mut fills = Vec::new();
                        for &candidate in order.iter().take(top_k) {
                            let token = u32::try_from(candidate).unwrap_or(u32::MAX);
                            let mut filled = ids.clone();
                            if let Some(slot) = filled.get_mut(real_position) {
                                *slot = token;
                            }
                            filled.retain(|id| Some(*id) != pad);
                            fills.push(MaskFill {
                                score: scores.get(candidate).copied().unwrap_or(0.0),
                                token,
                                token_str: tokenizer.decode(&[token], false)?,
                                sequence: tokenizer.decode(&filled, single)?,
                            });
                        }
                        per_mask.push(fills);
                    }
                    if let Some(slot) = results.get_mut(index) {
                        *slot = per_mask;
                    }
                }
                Ok(())
            })?;
        Ok(results)
    }
}
