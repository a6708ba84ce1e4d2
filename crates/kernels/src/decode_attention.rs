//! Attention of one new query per sequence over its cached keys and values (a decoding step),
//! fused: scores, padding mask, softmax and the weighted sum of values in one pass per head,
//! reading the cache in place (no transposes, no mask tensor).
//!
//! Equal to `softmax(q kᵀ · scale + bias) v` with `bias` 0 for visible keys and the most negative
//! f32 for hidden ones (see `attention::causal_attention_bias`): hidden keys get weight 0, and a
//! query that sees no key at all gets uniform weights over every key, as the additive mask gives.

use crate::{KernelError, Result};

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
    fn head(&self, head: usize) -> Option<&'a [f32]> {
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
        return Err(KernelError {
            kernel: "decode attention",
            reason: format!(
                "query {} values, head_dim {head_dim}, {} key heads × {} positions",
                query.len(),
                keys.kv_heads,
                keys.len
            ),
        });
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
            return Err(KernelError {
                kernel: "decode attention",
                reason: "cache slab shorter than its shape".to_string(),
            });
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

    use super::*;
    use crate::reference::attend;

    fn ramp(n: usize, step: f32) -> Vec<f32> {
        (0..n).map(|i| ((i as f32) * step).sin() * 2.0).collect()
    }

    /// The fused step equals plain attention over the same slab: grouped-query heads, left
    /// padding, a row whose only visible key is the new one, a fully hidden row, and slabs with
    /// spare capacity beyond the filled positions.
    #[test]
    fn fused_step_matches_plain_attention() {
        let (heads, kv_heads, dim, scale) = (4, 2, 8, 0.3);
        for len in [1usize, 6, 301] {
            let capacity = len + 7;
            let keys = ramp(kv_heads * capacity * dim, 0.37);
            let values = ramp(kv_heads * capacity * dim, 0.53);
            let slab = |data| CacheSlab {
                data,
                kv_heads,
                capacity,
                len,
                head_dim: dim,
            };
            let query = ramp(heads * dim, 0.11);
            let masks: Vec<Option<Vec<bool>>> = vec![
                None,
                Some((0..len).map(|j| j >= 2.min(len - 1)).collect()),
                Some((0..len).map(|j| j == len - 1).collect()),
                Some(vec![false; len]),
            ];
            for mask in masks {
                let mut got = vec![0.0f32; heads * dim];
                attend_one_query(
                    &query,
                    slab(&keys),
                    slab(&values),
                    mask.as_deref(),
                    scale,
                    &mut got,
                )
                .unwrap();
                let visible = mask.clone().unwrap_or_else(|| vec![true; len]);
                let position = |data: &'_ [f32], head: usize, j: usize| {
                    let start = (head * capacity + j) * dim;
                    data[start..start + dim].to_vec()
                };
                for head in 0..heads {
                    let kv_head = head / (heads / kv_heads);
                    let head_keys: Vec<Vec<f32>> =
                        (0..len).map(|j| position(&keys, kv_head, j)).collect();
                    let head_values: Vec<Vec<f32>> =
                        (0..len).map(|j| position(&values, kv_head, j)).collect();
                    let key_refs: Vec<&[f32]> = head_keys.iter().map(Vec::as_slice).collect();
                    let value_refs: Vec<&[f32]> = head_values.iter().map(Vec::as_slice).collect();
                    let want = attend(
                        &query[head * dim..(head + 1) * dim],
                        &key_refs,
                        &value_refs,
                        &visible,
                        scale,
                    );
                    let worst = crate::max_abs_diff(&got[head * dim..(head + 1) * dim], &want);
                    assert!(
                        worst < 1e-5,
                        "len {len} head {head} mask {mask:?}: error {worst:e}"
                    );
                }
            }
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
