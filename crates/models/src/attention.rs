//! The one attention block every architecture is built from, and the checked inputs of a
//! decoder's tensor interface.
//!
//! - [`Attention`]: a fused query/key/value projection (queries, then keys, then values),
//!   grouped-query heads, a causal mask with an optional sliding window (decoders) or a
//!   bidirectional one (encoders), and an output projection, all on plain row buffers. Both
//!   masks run the one kernel, [`safeformers_kernels::attention::attend`], which reads the keys
//!   and values where they are: a decoder's cache slabs ([`Attention::forward_cached`], prefill
//!   and decoding step alike; causality is by index in the cache, Transformers'
//!   `cache_position`, not by position id), or an encoder's packed QKV rows
//!   ([`Attention::forward_onto`], sequences packed without padding work).
//! - [`DecoderInputs::check`]: validates the `input_ids`, `position_ids` and `attention_mask`
//!   one [`crate::CausalLm::forward`] call receives (shapes, dtypes, ranges, agreement with the
//!   cache), so model code works on values it can trust.

use candle_core::Tensor;
use rayon::prelude::*;

use crate::decoder::{SequenceRun, run_error};
use crate::error::{Error, Result};
use crate::layers::{Destination, Linear, Norm, input_error, integer_matrix, to_u32_checked};
use safeformers_kernels::attention::{DistanceBias, HeadRows, KeyMask, Visibility, attend};
use safeformers_kernels::rotary::{RotaryPairs, rotate_heads_in_place, rotate_pairs_in_place};

/// Head counts and width of an attention block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadShape {
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (dividing `heads`).
    pub kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
}

impl HeadShape {
    fn query_width(self) -> usize {
        self.heads * self.head_dim
    }

    fn kv_width(self) -> usize {
        self.kv_heads * self.head_dim
    }
}

/// Self-attention: a fused query/key/value projection, grouped-query heads, a causal (with an
/// optional sliding window) or bidirectional mask, and an output projection. Its f32 weights
/// are packed for the many-row kernel where the CPU has it.
#[derive(Debug, Clone)]
pub struct Attention {
    qkv: Linear,
    o_proj: Linear,
    shape: HeadShape,
    scale: f32,
    /// Causal (`Some(window)`) or bidirectional (`None`).
    causal: Option<Option<usize>>,
    /// Bidirectional only: the farthest key seen on each side (ModernBERT's local layers).
    radius: Option<usize>,
    layer: usize,
    /// Qwen3's RMSNorms over each query and key head, before rotary.
    head_norms: Option<HeadNorms>,
}

/// An RMSNorm applied to every query head and one to every key head (each `[head_dim]` wide),
/// after the projection and before rotary: Qwen3's `q_norm` and `k_norm`.
#[derive(Debug, Clone)]
pub struct HeadNorms {
    /// Over each query head.
    pub query: Norm,
    /// Over each key head.
    pub key: Norm,
}

/// The positional inputs of one encoder attention call, beyond the rows themselves.
#[derive(Debug, Clone, Copy, Default)]
pub struct EncoderPositions<'a> {
    /// Rotary angles by position within a sequence, applied to queries and keys.
    pub rotary: Option<&'a RotaryAngles>,
    /// A score bias by head and distance (ALiBi, relative-position buckets).
    pub bias: Option<DistanceBias<'a>>,
}

/// Rotary `cos`/`sin` for positions `0..positions`, `half` values each, and how values pair.
#[derive(Debug, Clone)]
pub struct RotaryAngles {
    /// `[positions, half]`.
    pub cos: Vec<f32>,
    /// `[positions, half]`.
    pub sin: Vec<f32>,
    /// Pairs rotated per head (`rotary_dim / 2`).
    pub half: usize,
    /// Which values are rotated together.
    pub pairs: RotaryPairs,
}

impl RotaryAngles {
    /// The angles `position · inverse_frequency` for positions `0..positions`, in f64 before
    /// rounding (Transformers computes them in f32; the difference is below f32 rounding of
    /// the results).
    pub fn new(inverse_frequencies: &[f64], positions: usize, pairs: RotaryPairs) -> RotaryAngles {
        let half = inverse_frequencies.len();
        let mut cos = Vec::with_capacity(positions * half);
        let mut sin = Vec::with_capacity(positions * half);
        for position in 0..positions {
            for frequency in inverse_frequencies {
                // Transformers: `outer(t, inv_freq)` in f32, then cos/sin in f32.
                let angle = position as f32 * (*frequency as f32);
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        RotaryAngles {
            cos,
            sin,
            half,
            pairs,
        }
    }

    /// Rotates the query and key heads (`queries_keys`, `head_dim`-wide heads) of a row at
    /// `position`.
    fn rotate(&self, queries_keys: &mut [f32], head_dim: usize, position: usize) -> Result<()> {
        let span = position * self.half..(position + 1) * self.half;
        let (Some(cos), Some(sin)) = (self.cos.get(span.clone()), self.sin.get(span)) else {
            return Err(run_error("rotary angles for the position"));
        };
        rotate_pairs_in_place(queries_keys, head_dim, cos, sin, self.pairs)?;
        Ok(())
    }
}

/// Sequences packed one after another in a row buffer, each attending only to itself.
#[derive(Debug, Clone, Copy)]
pub struct PackedSequences<'a> {
    /// Rows of each sequence, in order.
    pub lengths: &'a [usize],
    /// Per row of all sequences, whether it is a real token (padding is never attended to);
    /// `None`: all are.
    pub padding: Option<&'a [bool]>,
}

impl PackedSequences<'_> {
    /// Rows of all sequences.
    pub fn rows(&self) -> usize {
        self.lengths.iter().sum()
    }
}

impl Attention {
    /// A causal attention block of layer `layer` (its index in the cache), seeing at most
    /// `window` keys ending at each query when there is a sliding window.
    pub fn new(
        qkv: Linear,
        o_proj: Linear,
        shape: HeadShape,
        scale: f64,
        window: Option<usize>,
        layer: usize,
    ) -> Result<Attention> {
        let width = shape.query_width() + 2 * shape.kv_width();
        if qkv.out_features() != width
            || shape.kv_heads == 0
            || !shape.heads.is_multiple_of(shape.kv_heads)
        {
            return Err(Error::Cache {
                reason: format!(
                    "layer {layer}: a qkv projection of {} outputs for {shape:?}",
                    qkv.out_features()
                ),
            });
        }
        Ok(Attention {
            qkv: qkv.packed_for_many_rows()?,
            o_proj: o_proj.packed_for_many_rows()?,
            shape,
            scale: scale as f32,
            causal: Some(window),
            radius: None,
            layer,
            head_norms: None,
        })
    }

    /// The block with `norms` applied to each query and key head before rotary (Qwen3); both
    /// must be `head_dim` wide.
    pub fn with_head_norms(self, norms: HeadNorms) -> Result<Attention> {
        let head_dim = self.shape.head_dim;
        if norms.query.width() != head_dim || norms.key.width() != head_dim {
            return Err(Error::Cache {
                reason: format!(
                    "layer {}: q/k norms of widths {} and {} for heads of {head_dim}",
                    self.layer,
                    norms.query.width(),
                    norms.key.width()
                ),
            });
        }
        Ok(Attention {
            head_norms: Some(norms),
            ..self
        })
    }

    /// A bidirectional attention block (encoders), every head its own key/value head.
    pub fn bidirectional(
        qkv: Linear,
        o_proj: Linear,
        heads: usize,
        scale: f64,
    ) -> Result<Attention> {
        let head_dim = o_proj.out_features() / heads.max(1);
        let shape = HeadShape {
            heads,
            kv_heads: heads,
            head_dim,
        };
        Ok(Attention {
            causal: None,
            ..Attention::new(qkv, o_proj, shape, scale, None, 0)?
        })
    }

    /// The bidirectional block seeing only keys at most `radius` rows away on either side.
    pub fn with_window_radius(self, radius: usize) -> Attention {
        Attention {
            radius: Some(radius),
            ..self
        }
    }

    /// Width of the fused projection's rows.
    fn qkv_width(&self) -> usize {
        self.shape.query_width() + 2 * self.shape.kv_width()
    }

    /// Encoders: `hidden` (`[rows, hidden]`, the rows of `sequences`) plus the attention of
    /// each sequence over itself, in place; the projections read `normed` instead of `hidden`
    /// when given (pre-norm layers). `qkv` and `context` are scratch buffers of
    /// `rows · qkv width` and `rows · query width` values. Sequences run side by side.
    pub fn forward_onto(
        &self,
        hidden: &mut [f32],
        normed: Option<&[f32]>,
        sequences: PackedSequences<'_>,
        scratch: (&mut [f32], &mut [f32]),
        positions: EncoderPositions<'_>,
    ) -> Result<()> {
        let (qkv, context) = scratch;
        let rows = sequences.rows();
        let (shape, width) = (self.shape, self.qkv_width());
        let q_width = shape.query_width();
        self.qkv
            .forward_rows_to(normed.unwrap_or(hidden), rows, qkv, Destination::Overwrite)?;
        if let Some(angles) = positions.rotary {
            let keys_end = q_width + shape.kv_width();
            let mut row_chunks = qkv.chunks_exact_mut(width);
            for &length in sequences.lengths {
                for position in 0..length {
                    let row = row_chunks.next().ok_or_else(|| run_error("qkv rows"))?;
                    let queries_keys = row
                        .get_mut(..keys_end)
                        .ok_or_else(|| run_error("qkv row"))?;
                    angles.rotate(queries_keys, shape.head_dim, position)?;
                }
            }
        }
        let visibility = match self.radius {
            Some(radius) => Visibility::Window { radius },
            None => Visibility::Bidirectional,
        };
        let mut jobs = Vec::with_capacity(sequences.lengths.len());
        let (mut start, mut rest) = (0, &mut *context);
        for &length in sequences.lengths {
            let (out, after) = rest
                .split_at_mut_checked(length * q_width)
                .ok_or_else(|| run_error("context rows"))?;
            rest = after;
            let padding = match sequences.padding {
                Some(mask) => Some(
                    mask.get(start..start + length)
                        .ok_or_else(|| run_error("padding flags"))?,
                ),
                None => None,
            };
            jobs.push((start, length, padding, out));
            start += length;
        }
        let qkv: &[f32] = qkv;
        jobs.into_par_iter()
            .try_for_each(|(start, length, padding, out)| {
                let view = |offset| {
                    HeadRows::interleaved(
                        qkv,
                        start * width + offset,
                        length,
                        (shape.heads, shape.head_dim),
                        width,
                    )
                };
                let mask = KeyMask {
                    visibility,
                    padding,
                    bias: positions.bias,
                };
                attend(
                    view(0),
                    view(q_width),
                    view(2 * q_width),
                    mask,
                    self.scale,
                    out,
                )
            })?;
        self.o_proj
            .forward_rows_to(context, rows, hidden, Destination::OntoResidual)
    }

    /// Decoders: `x` `[rows, hidden]` (the new tokens of every run, in order) →
    /// `[rows, hidden]`, appending each run's keys and values to its cache and attending over
    /// the cache in place.
    pub(crate) fn forward_cached(
        &self,
        x: &[f32],
        runs: &mut [SequenceRun<'_>],
        rows: usize,
    ) -> Result<Vec<f32>> {
        let shape = self.shape;
        let (q_width, kv_width) = (shape.query_width(), shape.kv_width());
        let width = self.qkv_width();
        let mut qkv = self.qkv.forward_rows(x, rows)?;
        let mut context = vec![0.0f32; rows * q_width];
        let mut start = 0;
        for run in runs.iter_mut() {
            let count = run.tokens.len();
            let part = qkv
                .get_mut(start * width..(start + count) * width)
                .ok_or_else(|| run_error("qkv rows"))?;
            let first = run.cache.layer_len(self.layer)?;
            for (index, row) in part.chunks_exact_mut(width).enumerate() {
                // `width` is exactly queries + keys + values.
                let (queries_keys, row_values) = row.split_at_mut(q_width + kv_width);
                if let Some(norms) = &self.head_norms {
                    let (queries, keys) = queries_keys.split_at_mut(q_width);
                    norms.query.forward_rows(queries)?;
                    norms.key.forward_rows(keys)?;
                }
                if let Some(rope) = &run.rope {
                    let (cos, sin) = rope.row(index);
                    rotate_heads_in_place(queries_keys, shape.head_dim, cos, sin)?;
                }
                let row_keys = queries_keys.get(q_width..).unwrap_or_default();
                run.cache.append_rows(
                    self.layer,
                    (shape.kv_heads, shape.head_dim),
                    row_keys,
                    row_values,
                )?;
            }
            let (keys, values) = run.cache.slabs(self.layer)?;
            let queries =
                HeadRows::interleaved(part, 0, count, (shape.heads, shape.head_dim), width);
            let mask = KeyMask {
                visibility: Visibility::Causal {
                    first,
                    window: self.causal.flatten(),
                },
                padding: run.padding.as_deref(),
                bias: None,
            };
            let out = context
                .get_mut(start * q_width..(start + count) * q_width)
                .ok_or_else(|| run_error("context rows"))?;
            attend(queries, keys, values, mask, self.scale, out)?;
            start += count;
        }
        self.o_proj.forward_rows(&context, rows)
    }
}

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
