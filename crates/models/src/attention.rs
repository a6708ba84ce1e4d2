//! Causal self-attention for decoders, shared by every [`crate::CausalLm`] architecture.
//!
//! - [`DecoderInputs::check`]: validates the `input_ids`, `position_ids` and `attention_mask`
//!   one [`crate::CausalLm::forward`] call receives (shapes, dtypes, ranges, agreement with the
//!   cache), so model code works on values it can trust.
//! - [`causal_attention_bias`]: the additive mask `[batch, 1, new, past + new]` from the
//!   `[batch, past + new]` padding mask, with causality and an optional sliding window — what
//!   Transformers' `create_causal_mask` / `create_sliding_window_causal_mask` give the eager
//!   attention (0 to attend, `torch.finfo(float32).min` not to).
//! - [`scaled_dot_product_attention`]: `softmax(q kᵀ · scale + bias) v` with grouped-query
//!   attention (`kv_heads` divides `heads`; query head `h` reads key/value head
//!   `h / (heads / kv_heads)`, as Transformers' `repeat_kv` arranges them).
//!
//! Causality is by index in the cache (Transformers' `cache_position`), not by position id: a
//! query at cache index `i` sees keys `j ≤ i` whose mask is 1, and with a sliding window `w`
//! only those with `i - j < w`.

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};
use crate::layers::{input_error, integer_matrix, softmax_last_dim, to_u32_checked};

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

    /// The additive attention bias for these inputs (see [`causal_attention_bias`]).
    pub fn attention_bias(&self, sliding_window: Option<usize>, device: &Device) -> Result<Tensor> {
        causal_attention_bias(&self.mask, self.new, sliding_window, device)
    }
}

/// The additive attention bias `[batch, 1, new, past + new]` (f32) for the last `new` queries of
/// a `[batch][past + new]` padding mask: 0 where a query may attend to a key, the most negative
/// f32 where it may not (the key is padding, in its future, or — with `sliding_window` `w` — `w`
/// or more tokens back).
///
/// A query that may attend to nothing (a left-padding position) gets a row of equal values, so
/// its softmax is uniform and finite, as in Transformers' eager attention; such rows only feed
/// other padding positions.
pub fn causal_attention_bias(
    mask: &[Vec<bool>],
    new: usize,
    sliding_window: Option<usize>,
    device: &Device,
) -> Result<Tensor> {
    let batch = mask.len();
    let total = mask.first().map_or(0, Vec::len);
    if new > total || mask.iter().any(|row| row.len() != total) {
        return Err(input_error(
            "attention_mask",
            format!("rows must all have the same length, at least {new} (the new tokens)"),
        ));
    }
    let past = total - new;
    let mut bias = Vec::with_capacity(batch * new * total);
    for row in mask {
        for query in past..total {
            for (key, &real) in row.iter().enumerate() {
                let visible = real
                    && key <= query
                    && sliding_window.is_none_or(|window| query - key < window);
                bias.push(if visible { 0.0 } else { f32::MIN });
            }
        }
    }
    Ok(Tensor::from_vec(bias, (batch, 1, new, total), device)?)
}

/// Scaled dot-product attention with grouped-query heads.
///
/// `query` `[batch, heads, new, head_dim]`; `key`, `value` `[batch, kv_heads, past + new,
/// head_dim]` with `kv_heads` dividing `heads`; `bias` broadcastable to
/// `[batch, heads, new, past + new]` (usually [`causal_attention_bias`]); scores are
/// `q · kᵀ · scale` (`scale` is `1/√head_dim` for most models). Returns the context with heads
/// merged, `[batch, new, heads * head_dim]`.
pub fn scaled_dot_product_attention(
    query: &Tensor,
    key: &Tensor,
    value: &Tensor,
    bias: Option<&Tensor>,
    scale: f64,
) -> Result<Tensor> {
    let (batch, heads, new, head_dim) = query.dims4()?;
    let (key_batch, kv_heads, total, key_dim) = key.dims4()?;
    if key_batch != batch
        || key_dim != head_dim
        || value.dims() != key.dims()
        || kv_heads == 0
        || heads % kv_heads != 0
    {
        return Err(Error::Candle(candle_core::Error::Msg(format!(
            "attention shapes do not fit: query {:?}, key {:?}, value {:?}",
            query.dims(),
            key.dims(),
            value.dims()
        ))));
    }
    let groups = heads / kv_heads;
    // The `groups` query heads that share a key/value head are stacked along the query axis, so
    // one matmul per key/value head serves them all without copying keys and values.
    let grouped_query = query
        .contiguous()?
        .reshape((batch, kv_heads, groups * new, head_dim))?;
    let key_t = key.transpose(2, 3)?.contiguous()?;
    let scores = (grouped_query.matmul(&key_t)? * scale)?.reshape((batch, heads, new, total))?;
    let scores = match bias {
        Some(bias) => scores.broadcast_add(bias)?,
        None => scores,
    };
    let probs = softmax_last_dim(&scores)?.reshape((batch, kv_heads, groups * new, total))?;
    let context = probs
        .matmul(&value.contiguous()?)?
        .reshape((batch, heads, new, head_dim))?;
    Ok(context
        .transpose(1, 2)?
        .contiguous()?
        .reshape((batch, new, heads * head_dim))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn visible(bias: &Tensor) -> Result<Vec<Vec<Vec<bool>>>> {
        let (batch, _, new, total) = bias.dims4()?;
        let values = bias.flatten_all()?.to_vec1::<f32>()?;
        Ok((0..batch)
            .map(|b| {
                (0..new)
                    .map(|q| {
                        (0..total)
                            .map(|k| values.get((b * new + q) * total + k) == Some(&0.0))
                            .collect()
                    })
                    .collect()
            })
            .collect())
    }

    fn row(bits: &str) -> Vec<bool> {
        bits.chars().map(|c| c == '1').collect()
    }

    #[test]
    fn mask_is_causal_and_hides_padding() -> Result<()> {
        // Row 0 left-padded by one, row 1 right-padded by one; prefill of 4 tokens.
        let mask = vec![row("0111"), row("1110")];
        let bias = causal_attention_bias(&mask, 4, None, &Device::Cpu)?;
        assert_eq!(bias.dims(), &[2, 1, 4, 4]);
        let seen = visible(&bias)?;
        let expected = [
            ["0000", "0100", "0110", "0111"],
            ["1000", "1100", "1110", "1110"],
        ];
        for (b, rows) in expected.iter().enumerate() {
            for (q, bits) in rows.iter().enumerate() {
                assert_eq!(seen[b][q], row(bits), "batch {b} query {q}");
            }
        }
        Ok(())
    }

    #[test]
    fn decode_step_sees_the_cache_and_window_limits_it() -> Result<()> {
        // One new token after 5 cached ones; window 3 keeps keys 3, 4, 5.
        let mask = vec![row("111111")];
        let full = visible(&causal_attention_bias(&mask, 1, None, &Device::Cpu)?)?;
        assert_eq!(full[0][0], row("111111"));
        let windowed = visible(&causal_attention_bias(&mask, 1, Some(3), &Device::Cpu)?)?;
        assert_eq!(windowed[0][0], row("000111"));
        // Prefill with window 2: each query sees itself and the one before.
        let prefill = visible(&causal_attention_bias(
            &[row("1111")],
            4,
            Some(2),
            &Device::Cpu,
        )?)?;
        assert_eq!(
            prefill[0],
            vec![row("1000"), row("1100"), row("0110"), row("0011")]
        );
        Ok(())
    }

    #[test]
    fn ragged_mask_is_an_error() {
        let mask = vec![row("11"), row("1")];
        assert!(causal_attention_bias(&mask, 1, None, &Device::Cpu).is_err());
        assert!(causal_attention_bias(&[row("1")], 2, None, &Device::Cpu).is_err());
    }

    /// Grouped-query attention equals plain attention with each key/value head repeated
    /// `heads / kv_heads` times (Transformers' `repeat_kv`), computed here by hand.
    #[test]
    fn grouped_query_matches_repeated_heads() -> Result<()> {
        let device = Device::Cpu;
        let (batch, heads, kv_heads, new, total, dim) = (2, 4, 2, 3, 5, 4);
        let ramp = |n: usize, step: f32| -> Vec<f32> {
            (0..n).map(|i| ((i as f32) * step).sin()).collect()
        };
        let query = Tensor::from_vec(
            ramp(batch * heads * new * dim, 0.37),
            (batch, heads, new, dim),
            &device,
        )?;
        let key = Tensor::from_vec(
            ramp(batch * kv_heads * total * dim, 0.53),
            (batch, kv_heads, total, dim),
            &device,
        )?;
        let value = Tensor::from_vec(
            ramp(batch * kv_heads * total * dim, 0.71),
            (batch, kv_heads, total, dim),
            &device,
        )?;
        let mask = vec![row("11111"), row("00111")];
        let bias = causal_attention_bias(&mask, new, None, &device)?;
        let scale = 0.5;
        let got = scaled_dot_product_attention(&query, &key, &value, Some(&bias), scale)?;
        assert_eq!(got.dims(), &[batch, new, heads * dim]);
        let got = got.to_vec3::<f32>()?;

        let qv = query.flatten_all()?.to_vec1::<f32>()?;
        let kv = key.flatten_all()?.to_vec1::<f32>()?;
        let vv = value.flatten_all()?.to_vec1::<f32>()?;
        let groups = heads / kv_heads;
        for b in 0..batch {
            for h in 0..heads {
                let g = h / groups;
                for i in 0..new {
                    let query_index = total - new + i;
                    let scores: Vec<f32> = (0..total)
                        .map(|j| {
                            if !mask[b][j] || j > query_index {
                                return f32::NEG_INFINITY;
                            }
                            let dot: f32 = (0..dim)
                                .map(|d| {
                                    qv[((b * heads + h) * new + i) * dim + d]
                                        * kv[((b * kv_heads + g) * total + j) * dim + d]
                                })
                                .sum();
                            dot * scale as f32
                        })
                        .collect();
                    let max = scores.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                    let exps: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
                    let sum: f32 = exps.iter().sum();
                    for d in 0..dim {
                        let expected: f32 = (0..total)
                            .map(|j| exps[j] / sum * vv[((b * kv_heads + g) * total + j) * dim + d])
                            .sum();
                        let actual = got[b][i][h * dim + d];
                        assert!(
                            (expected - actual).abs() < 1e-5,
                            "b{b} h{h} i{i} d{d}: {expected} vs {actual}"
                        );
                    }
                }
            }
        }
        Ok(())
    }

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
