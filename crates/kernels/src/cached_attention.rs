//! Causal attention of a sequence's new queries over its KV cache slabs, read in place: the
//! prefill (many queries) and the decoding step (one query) are the same loop.
//!
//! Query `i` sits at cache index `first + i` and sees key `j` when `j ≤ first + i`, the key is
//! not padding (`padding[j]`, when a padding mask is given) and, with a sliding window `w`,
//! `first + i - j < w` — what `attention::causal_attention_bias` gives the tensor attention.
//! A query that sees no key at all (a left-padding position) gets uniform weights over every
//! key in the cache, as the additive mask's equal scores give. Scores, softmax and the weighted
//! sum of values are one pass per query and head; keys outside the window cost nothing.

use rayon::prelude::*;

use crate::decode_attention::CacheSlab;
use crate::{KernelError, Result};

/// Which keys the queries of one call may see.
#[derive(Debug, Clone, Copy)]
pub struct CausalView<'a> {
    /// Cache index of the first query.
    pub first: usize,
    /// Sliding window: a query sees at most this many keys ending at itself.
    pub window: Option<usize>,
    /// Per key (the whole cache), whether it is a real token; `None`: all are.
    pub padding: Option<&'a [bool]>,
}

/// Query and value work (queries × keys × head_dim) below which the call stays on one thread.
const MIN_WORK_TO_SPLIT: usize = 1 << 16;

/// Attention for `queries` `[n, heads · head_dim]` (row-major) over one sequence's `keys` and
/// `values` (`heads` a multiple of their `kv_heads`; grouped-query heads share a key/value head
/// as in `repeat_kv`), written to `out` `[n, heads · head_dim]`. Scores are `q · k · scale`.
pub fn attend_cached(
    queries: &[f32],
    keys: CacheSlab<'_>,
    values: CacheSlab<'_>,
    view: CausalView<'_>,
    scale: f32,
    out: &mut [f32],
) -> Result<()> {
    let head_dim = keys.head_dim;
    let width = queries.len();
    let fits = head_dim > 0
        && keys.kv_heads > 0
        && (values.kv_heads, values.len, values.head_dim) == (keys.kv_heads, keys.len, head_dim)
        && out.len() == width
        && view.padding.is_none_or(|mask| mask.len() == keys.len);
    // `queries` holds one row of `heads · head_dim` per new position (the cache's last ones).
    let rows = keys.len.saturating_sub(view.first);
    let row_len = width.checked_div(rows).unwrap_or(0);
    let kv_width = keys.kv_heads * head_dim;
    if !fits
        || rows == 0
        || row_len == 0
        || row_len * rows != width
        || kv_width == 0
        || !row_len.is_multiple_of(kv_width)
    {
        return Err(KernelError {
            kernel: "attend_cached",
            reason: format!(
                "{width} query values for {rows} new positions, {} key heads × {} positions × \
                 {head_dim}, output {}",
                keys.kv_heads,
                keys.len,
                out.len()
            ),
        });
    }
    let work = width.saturating_mul(keys.len);
    let one_row = |(index, (query, out)): (usize, (&[f32], &mut [f32]))| {
        attend_row(query, keys, values, view, view.first + index, scale, out);
    };
    if work >= MIN_WORK_TO_SPLIT && rows > 1 {
        queries
            .par_chunks_exact(row_len)
            .zip(out.par_chunks_exact_mut(row_len))
            .enumerate()
            .for_each(one_row);
    } else {
        queries
            .chunks_exact(row_len)
            .zip(out.chunks_exact_mut(row_len))
            .enumerate()
            .for_each(one_row);
    }
    Ok(())
}

/// One query row (every head) at cache index `at`.
fn attend_row(
    query: &[f32],
    keys: CacheSlab<'_>,
    values: CacheSlab<'_>,
    view: CausalView<'_>,
    at: usize,
    scale: f32,
    out: &mut [f32],
) {
    let head_dim = keys.head_dim;
    let heads = query.len() / head_dim;
    let groups = (heads / keys.kv_heads).max(1);
    let start = view
        .window
        .map_or(0, |window| (at + 1).saturating_sub(window));
    let end = (at + 1).min(keys.len);
    let seen = |key: usize| view.padding.is_none_or(|mask| mask.get(key) == Some(&true));
    let any_visible = (start..end).any(seen);
    // Without a visible key, every key of the cache gets the same weight.
    let (start, end) = if any_visible {
        (start, end)
    } else {
        (0, keys.len)
    };
    let mut weights = vec![0.0f32; end - start];
    for (head, (q, out)) in query
        .chunks_exact(head_dim)
        .zip(out.chunks_exact_mut(head_dim))
        .enumerate()
    {
        let kv_head = head / groups;
        let (Some(head_keys), Some(head_values)) = (keys.head(kv_head), values.head(kv_head))
        else {
            out.fill(0.0);
            continue;
        };
        let mut max = f32::NEG_INFINITY;
        for (offset, weight) in weights.iter_mut().enumerate() {
            let key = start + offset;
            *weight = if !any_visible {
                0.0
            } else if seen(key) {
                let k = head_keys
                    .get(key * head_dim..(key + 1) * head_dim)
                    .unwrap_or_default();
                dot(q, k) * scale
            } else {
                f32::NEG_INFINITY
            };
            max = max.max(*weight);
        }
        let mut sum = 0.0f32;
        for weight in weights.iter_mut() {
            *weight = (*weight - max).exp();
            sum += *weight;
        }
        let inverse = if sum > 0.0 { 1.0 / sum } else { 0.0 };
        out.fill(0.0);
        let rows = head_values
            .get(start * head_dim..end * head_dim)
            .unwrap_or_default();
        for (weight, value) in weights.iter().zip(rows.chunks_exact(head_dim)) {
            let weight = weight * inverse;
            if weight != 0.0 {
                for (slot, v) in out.iter_mut().zip(value) {
                    *slot += weight * v;
                }
            }
        }
    }
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
    use crate::{max_abs_diff, random_values};

    /// The plain definition: `softmax(q kᵀ · scale + bias) v` with the additive mask (0 or the
    /// most negative f32), keys laid out `[kv_heads, len, head_dim]`.
    #[allow(clippy::too_many_arguments)]
    fn plain(
        queries: &[f32],
        keys: &[f32],
        values: &[f32],
        (heads, kv_heads, len, dim): (usize, usize, usize, usize),
        first: usize,
        window: Option<usize>,
        padding: Option<&[bool]>,
        scale: f32,
    ) -> Vec<f32> {
        let rows = len - first;
        let mut out = vec![0.0f32; rows * heads * dim];
        for i in 0..rows {
            let at = first + i;
            for h in 0..heads {
                let g = h / (heads / kv_heads);
                let scores: Vec<f32> = (0..len)
                    .map(|j| {
                        let visible = j <= at
                            && window.is_none_or(|w| at - j < w)
                            && padding.is_none_or(|p| p[j]);
                        let dot: f32 = (0..dim)
                            .map(|d| {
                                queries[(i * heads + h) * dim + d] * keys[(g * len + j) * dim + d]
                            })
                            .sum();
                        dot * scale + if visible { 0.0 } else { f32::MIN }
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                let exps: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
                let sum: f32 = exps.iter().sum();
                for d in 0..dim {
                    out[(i * heads + h) * dim + d] = (0..len)
                        .map(|j| exps[j] / sum * values[(g * len + j) * dim + d])
                        .sum();
                }
            }
        }
        out
    }

    #[test]
    fn matches_the_additive_mask_definition() {
        let (heads, kv_heads, dim, capacity) = (4, 2, 8, 40);
        for (len, first, window, padded) in [
            (7, 0, None, false),
            (7, 6, None, false),
            (9, 0, Some(3), false),
            (30, 25, Some(4), false),
            (6, 0, None, true),
            (6, 5, Some(2), true),
            (300usize.min(capacity), 0, None, false),
        ] {
            // Slabs with spare capacity: only the first `len` positions are filled.
            let key_slab = random_values(1, kv_heads * capacity * dim);
            let value_slab = random_values(2, kv_heads * capacity * dim);
            let filled = |slab: &[f32]| -> Vec<f32> {
                (0..kv_heads)
                    .flat_map(|h| slab[h * capacity * dim..(h * capacity + len) * dim].to_vec())
                    .collect()
            };
            let padding: Vec<bool> = (0..len).map(|j| j >= 2).collect();
            let padding = padded.then_some(padding.as_slice());
            let queries = random_values(3, (len - first) * heads * dim);
            let slab = |data| CacheSlab {
                data,
                kv_heads,
                capacity,
                len,
                head_dim: dim,
            };
            let mut got = vec![0.0f32; queries.len()];
            let view = CausalView {
                first,
                window,
                padding,
            };
            attend_cached(
                &queries,
                slab(&key_slab),
                slab(&value_slab),
                view,
                0.35,
                &mut got,
            )
            .unwrap();
            let want = plain(
                &queries,
                &filled(&key_slab),
                &filled(&value_slab),
                (heads, kv_heads, len, dim),
                first,
                window,
                padding,
                0.35,
            );
            let diff = max_abs_diff(&got, &want);
            assert!(
                diff < 1e-5,
                "len {len} first {first} window {window:?}: {diff}"
            );
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
        let view = CausalView {
            first: 1,
            window: None,
            padding: None,
        };
        let mut out = vec![0.0f32; 4];
        assert!(attend_cached(&[0.0; 3], slab, slab, view, 1.0, &mut out[..3]).is_err());
        assert!(attend_cached(&[0.0; 4], slab, slab, view, 1.0, &mut out).is_ok());
        let short_mask = CausalView {
            padding: Some(&[true]),
            ..view
        };
        assert!(attend_cached(&[0.0; 4], slab, slab, short_mask, 1.0, &mut out).is_err());
    }
}
