//! Attention of one new query per sequence over its cached keys and values (a decoding step),
//! fused: scores, padding mask, softmax and the weighted sum of values in one pass per head,
//! reading the cache in place (no transposes, no mask tensor).
//!
//! Equal to `softmax(q kᵀ · scale + bias) v` with `bias` 0 for visible keys and the most negative
//! f32 for hidden ones (see `attention::causal_attention_bias`): hidden keys get weight 0, and a
//! query that sees no key at all gets uniform weights over every key, as the additive mask gives.

use crate::error::{Error, Result};

/// One sequence's cached keys or values for one layer: `[kv_heads, capacity, head_dim]`, of which
/// the first `len` positions of every head are filled.
#[derive(Debug, Clone, Copy)]
pub struct CacheSlab<'a> {
    /// The values, head-major.
    pub data: &'a [f32],
    /// Key/value heads.
    pub kv_heads: usize,
    /// Positions reserved per head.
    pub capacity: usize,
    /// Positions filled per head.
    pub len: usize,
    /// Width of one head.
    pub head_dim: usize,
}

impl<'a> CacheSlab<'a> {
    /// Positions `0..len` of head `head`, `[len, head_dim]`.
    pub(crate) fn head(&self, head: usize) -> Option<&'a [f32]> {
        let start = head
            .checked_mul(self.capacity)?
            .checked_mul(self.head_dim)?;
        let end = start.checked_add(self.len.checked_mul(self.head_dim)?)?;
        self.data.get(start..end)
    }
}

/// Attention for one query row: `query` `[heads, head_dim]` → `out` `[heads, head_dim]`, over
/// `keys`/`values` of one sequence (`heads` a multiple of `kv_heads`, grouped-query heads
/// sharing a key/value head as in `repeat_kv`). `visible[j]` says whether key `j` may be seen
/// (`None`: all). Scores are `q · k · scale`.
pub fn attend_one_query(
    query: &[f32],
    keys: CacheSlab<'_>,
    values: CacheSlab<'_>,
    visible: Option<&[bool]>,
    scale: f32,
    out: &mut [f32],
) -> Result<()> {
    let head_dim = keys.head_dim;
    let heads = query.len().checked_div(head_dim).unwrap_or(0);
    let fits = head_dim > 0
        && keys.len > 0
        && query.len() == heads * head_dim
        && out.len() == query.len()
        && keys.kv_heads > 0
        && heads.is_multiple_of(keys.kv_heads)
        && (values.kv_heads, values.len, values.head_dim) == (keys.kv_heads, keys.len, head_dim)
        && visible.is_none_or(|mask| mask.len() == keys.len);
    if !fits {
        return Err(Error::Candle(candle_core::Error::Msg(format!(
            "decode attention: query {} values, head_dim {head_dim}, {} key heads × {} positions",
            query.len(),
            keys.kv_heads,
            keys.len
        ))));
    }
    let groups = heads / keys.kv_heads;
    let any_visible = visible.is_none_or(|mask| mask.iter().any(|&seen| seen));
    let mut weights = vec![0.0f32; keys.len];
    for (head, (q, out)) in query
        .chunks_exact(head_dim)
        .zip(out.chunks_exact_mut(head_dim))
        .enumerate()
    {
        let kv_head = head / groups;
        let (Some(head_keys), Some(head_values)) = (keys.head(kv_head), values.head(kv_head))
        else {
            return Err(Error::Candle(candle_core::Error::Msg(
                "decode attention: cache slab shorter than its shape".to_string(),
            )));
        };
        let mut max = f32::NEG_INFINITY;
        for (position, (weight, key)) in weights
            .iter_mut()
            .zip(head_keys.chunks_exact(head_dim))
            .enumerate()
        {
            let seen = !any_visible
                || visible.is_none_or(|mask| mask.get(position).copied().unwrap_or(false));
            *weight = if seen {
                let score = dot(q, key) * scale;
                max = max.max(score);
                score
            } else {
                f32::NEG_INFINITY
            };
        }
        if !any_visible {
            // Every key hidden: the additive mask makes all scores equal.
            weights.fill(0.0);
            max = 0.0;
        }
        let mut sum = 0.0f32;
        for weight in weights.iter_mut() {
            *weight = (*weight - max).exp();
            sum += *weight;
        }
        let inverse = if sum > 0.0 { 1.0 / sum } else { 0.0 };
        out.fill(0.0);
        for (weight, value) in weights.iter().zip(head_values.chunks_exact(head_dim)) {
            let weight = weight * inverse;
            if weight != 0.0 {
                for (slot, v) in out.iter_mut().zip(value) {
                    *slot += weight * v;
                }
            }
        }
    }
    Ok(())
}

/// A dot product with eight independent partial sums (which the compiler vectorizes).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut partial = [0.0f32; 8];
    let (a_chunks, b_chunks) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(a, b)| a * b)
        .sum();
    for (a, b) in a_chunks.zip(b_chunks) {
        for ((slot, a), b) in partial.iter_mut().zip(a).zip(b) {
            *slot += a * b;
        }
    }
    partial.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use candle_core::{Device, Tensor};

    use super::*;
    use crate::attention::{causal_attention_bias, scaled_dot_product_attention};
    use crate::causal_lm::KvCache;

    fn ramp(n: usize, step: f32) -> Vec<f32> {
        (0..n).map(|i| ((i as f32) * step).sin() * 2.0).collect()
    }

    /// The fused step equals the tensor attention (`scaled_dot_product_attention` with
    /// `causal_attention_bias`) over the same cache: grouped-query heads, left padding, a row
    /// whose only visible key is the new one, and a cache that grew past its first capacity.
    #[test]
    fn fused_step_matches_tensor_attention() {
        let device = Device::Cpu;
        let (batch, heads, kv_heads, dim) = (3, 4, 2, 8);
        for past in [0usize, 5, 300] {
            let total = past + 1;
            let mut cache = KvCache::new(1);
            let keys = ramp(batch * kv_heads * past * dim, 0.37);
            let values = ramp(batch * kv_heads * past * dim, 0.53);
            if past > 0 {
                let shape = (batch, kv_heads, past, dim);
                cache
                    .append(
                        0,
                        &Tensor::from_vec(keys, shape, &device).unwrap(),
                        &Tensor::from_vec(values, shape, &device).unwrap(),
                    )
                    .unwrap();
            }
            let step_keys = ramp(batch * kv_heads * dim, 0.71);
            let step_values = ramp(batch * kv_heads * dim, 0.29);
            cache
                .append_step(0, batch, kv_heads, dim, &step_keys, &step_values)
                .unwrap();
            assert_eq!(cache.seq_len(), total);
            let query = ramp(batch * heads * dim, 0.11);
            let mask: Vec<Vec<bool>> = vec![
                vec![true; total],
                (0..total).map(|j| j >= past.min(2)).collect(),
                (0..total).map(|j| j == past).collect(),
            ];

            // The tensor path over the cache's own tensors.
            let (all_keys, all_values) = {
                let mut copy = cache.clone();
                let empty =
                    Tensor::zeros((batch, kv_heads, 0, dim), candle_core::DType::F32, &device)
                        .unwrap();
                copy.append(0, &empty, &empty).unwrap()
            };
            let bias = causal_attention_bias(&mask, 1, None, &device).unwrap();
            let q = Tensor::from_vec(query.clone(), (batch, heads, 1, dim), &device).unwrap();
            let expected =
                scaled_dot_product_attention(&q, &all_keys, &all_values, Some(&bias), 0.3)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap();

            let mut got = vec![0.0f32; batch * heads * dim];
            for b in 0..batch {
                let (k, v) = cache.slabs(0, b).unwrap();
                let visible = Some(mask[b].as_slice()).filter(|m| !m.iter().all(|&s| s));
                attend_one_query(
                    &query[b * heads * dim..(b + 1) * heads * dim],
                    k,
                    v,
                    visible,
                    0.3,
                    &mut got[b * heads * dim..(b + 1) * heads * dim],
                )
                .unwrap();
            }
            let worst = got
                .iter()
                .zip(&expected)
                .map(|(g, e)| (g - e).abs() / e.abs().max(1.0))
                .fold(0.0f32, f32::max);
            assert!(worst < 1e-5, "past {past}: relative error {worst:e}");
        }
    }

    #[test]
    fn mismatched_shapes_are_errors() {
        let data = vec![0.0f32; 16];
        let slab = CacheSlab {
            data: &data,
            kv_heads: 1,
            capacity: 4,
            len: 2,
            head_dim: 4,
        };
        let mut out = vec![0.0f32; 4];
        assert!(attend_one_query(&[0.0; 4], slab, slab, Some(&[true]), 1.0, &mut out).is_err());
        assert!(attend_one_query(&[0.0; 3], slab, slab, None, 1.0, &mut out).is_err());
        assert!(attend_one_query(&[0.0; 4], slab, slab, None, 1.0, &mut out).is_ok());
    }
}
