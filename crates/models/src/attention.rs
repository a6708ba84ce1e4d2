//! The checked inputs of a decoder's tensor interface, shared by every [`crate::CausalLm`]
//! architecture.
//!
//! - [`DecoderInputs::check`]: validates the `input_ids`, `position_ids` and `attention_mask`
//!   one [`crate::CausalLm::forward`] call receives (shapes, dtypes, ranges, agreement with the
//!   cache), so model code works on values it can trust.
//!
//! The attention itself is [`crate::decoder::Attention`], over each sequence's cache slabs
//! ([`safeformers_kernels::cached_attention`]): causality is by index in the cache (Transformers'
//! `cache_position`), not by position id.

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::layers::{input_error, integer_matrix, to_u32_checked};

/// The inputs of one decoder forward call, checked.
#[derive(Debug)]
pub struct DecoderInputs {
    /// Token ids, u32 `[batch, new]`, each below the vocabulary size.
    pub ids: Tensor,
    /// Position ids as values, `[batch][new]`, each below `max_positions` when the model has a
    /// position table.
    pub positions: Vec<Vec<u32>>,
    /// Position ids as a u32 tensor `[batch, new]` (for embedding lookups and rotary tables).
    pub position_ids: Tensor,
    /// The padding mask `[batch][past + new]` as booleans (`true` = a real token).
    pub mask: Vec<Vec<bool>>,
    /// Rows in the batch.
    pub batch: usize,
    /// New tokens per row.
    pub new: usize,
    /// Tokens already in the cache.
    pub past: usize,
}

impl DecoderInputs {
    /// Checks one forward call: `input_ids` and `position_ids` integer `[batch, new]` (`new` ≥ 1),
    /// ids in `0..vocab_size`, positions non-negative, and `attention_mask` integer
    /// `[batch, past + new]` where `past` is what the cache holds. A position at or beyond
    /// `max_positions` (a learned position table's size) is [`Error::ContextTooLong`].
    pub fn check(
        input_ids: &Tensor,
        position_ids: &Tensor,
        attention_mask: &Tensor,
        past: usize,
        vocab_size: usize,
        max_positions: Option<usize>,
    ) -> Result<DecoderInputs> {
        let ids = integer_matrix("input_ids", input_ids)?;
        let (batch, new) = input_ids.dims2()?;
        if batch == 0 || new == 0 {
            return Err(input_error(
                "input_ids",
                format!("empty input (shape [{batch}, {new}]); at least one token is needed"),
            ));
        }
        if position_ids.dims() != input_ids.dims() {
            return Err(input_error(
                "position_ids",
                format!(
                    "shape {:?} differs from input_ids {:?}",
                    position_ids.dims(),
                    input_ids.dims()
                ),
            ));
        }
        let total = past + new;
        if attention_mask.dims() != [batch, total] {
            return Err(input_error(
                "attention_mask",
                format!(
                    "shape {:?}, expected [{batch}, {total}] ({past} cached + {new} new tokens)",
                    attention_mask.dims()
                ),
            ));
        }
        let id_values = to_u32_checked("input_ids", &ids, vocab_size)?;
        let positions = to_u32_checked(
            "position_ids",
            &integer_matrix("position_ids", position_ids)?,
            u32::MAX as usize,
        )?;
        // A learned position table ends somewhere; rotary models pass `None` (Transformers lets
        // them run past `max_position_embeddings`).
        if let Some(limit) = max_positions {
            let furthest = positions.iter().flatten().max().copied().unwrap_or(0) as usize;
            if furthest >= limit {
                return Err(Error::ContextTooLong {
                    length: furthest + 1,
                    limit,
                });
            }
        }
        let mask = integer_matrix("attention_mask", attention_mask)?
            .into_iter()
            .map(|row| row.into_iter().map(|value| value != 0).collect())
            .collect();
        let device = input_ids.device();
        Ok(DecoderInputs {
            ids: Tensor::from_vec(id_values.concat(), (batch, new), device)?,
            position_ids: Tensor::from_vec(positions.concat(), (batch, new), device)?,
            positions,
            mask,
            batch,
            new,
            past,
        })
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    #[test]
    fn inputs_are_checked_against_the_cache_and_limits() -> Result<()> {
        let device = Device::Cpu;
        let ids = Tensor::new(&[[3u32, 4]], &device)?;
        let positions = Tensor::new(&[[5i64, 6]], &device)?;
        let mask = Tensor::new(&[[1u32, 1, 1, 1, 1, 1, 1]], &device)?;
        let checked = DecoderInputs::check(&ids, &positions, &mask, 5, 10, Some(16))?;
        assert_eq!((checked.batch, checked.new, checked.past), (1, 2, 5));
        assert_eq!(checked.positions, vec![vec![5, 6]]);
        // The mask must cover cached + new tokens.
        assert!(matches!(
            DecoderInputs::check(&ids, &positions, &mask, 4, 10, Some(16)),
            Err(Error::Input {
                input: "attention_mask",
                ..
            })
        ));
        // Ids beyond the vocabulary; positions beyond the table.
        assert!(matches!(
            DecoderInputs::check(&ids, &positions, &mask, 5, 4, Some(16)),
            Err(Error::Input {
                input: "input_ids",
                ..
            })
        ));
        assert!(matches!(
            DecoderInputs::check(&ids, &positions, &mask, 5, 10, Some(6)),
            Err(Error::ContextTooLong {
                length: 7,
                limit: 6
            })
        ));
        let negative = Tensor::new(&[[-1i64, 6]], &device)?;
        assert!(DecoderInputs::check(&ids, &negative, &mask, 5, 10, None).is_err());
        Ok(())
    }
}
