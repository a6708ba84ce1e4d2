//! Bidirectional (encoder) multi-head attention in one pass per query row and head:
//! `softmax(q·kᵀ/√d + mask)·v`, read straight from the packed `[rows, 3·hidden]` buffer the
//! fused QKV projection wrote (query, key, value side by side in each row, heads side by side
//! in each), written straight into `[rows, hidden]` (heads merged): no split-heads or merge
//! copies, no `[batch, heads, seq, seq]` score tensor.
//!
//! Masked keys (padding) are skipped rather than given a large negative score: Transformers
//! adds `finfo(f32).min`, whose `exp` underflows to exactly 0, so skipping is the same
//! arithmetic and a batch pays only for real keys. A row whose keys are all masked gets the
//! uniform weights Transformers' arithmetic gives it (every score becomes `finfo.min`).
//!
//! Work is split over batch rows and blocks of query rows, so one long sequence (batch 1) uses
//! every thread too.

use rayon::prelude::*;

use super::check_len;
use crate::{KernelError, Result};

/// The sizes of one attention call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionShape {
    /// Sequences in the batch.
    pub batch: usize,
    /// Tokens per sequence (padded length).
    pub seq: usize,
    /// Attention heads.
    pub heads: usize,
    /// Width of one head.
    pub head_dim: usize,
}

impl AttentionShape {
    /// `heads · head_dim`.
    pub fn hidden(&self) -> usize {
        self.heads * self.head_dim
    }
}

/// Attention over `qkv` `[batch·seq, 3·hidden]` into `output` `[batch·seq, hidden]`.
/// `key_mask` `[batch·seq]` marks the keys to attend (non-zero); `None` attends to all.
pub fn encoder_attention(
    qkv: &[f32],
    key_mask: Option<&[u8]>,
    shape: AttentionShape,
    output: &mut [f32],
) -> Result<()> {
    const KERNEL: &str = "encoder_attention";
    let AttentionShape { batch, seq, .. } = shape;
    let hidden = shape.hidden();
    check_len(KERNEL, "qkv", qkv.len(), batch * seq * 3 * hidden)?;
    check_len(KERNEL, "output", output.len(), batch * seq * hidden)?;
    if let Some(mask) = key_mask {
        check_len(KERNEL, "key mask", mask.len(), batch * seq)?;
    }
    if batch == 0 || seq == 0 || hidden == 0 {
        return Ok(());
    }
    // The attended key positions of each sequence; an empty list means "all, uniformly".
    let keys: Vec<Vec<usize>> = (0..batch)
        .map(|b| match key_mask {
            None => (0..seq).collect(),
            Some(mask) => mask
                .iter()
                .skip(b * seq)
                .take(seq)
                .enumerate()
                .filter(|(_, flag)| **flag != 0)
                .map(|(j, _)| j)
                .collect(),
        })
        .collect();
    if batch * seq < super::MIN_ROWS_TO_SPLIT {
        for ((sequence_out, sequence_qkv), keys) in output
            .chunks_mut(seq * hidden)
            .zip(qkv.chunks(seq * 3 * hidden))
            .zip(&keys)
        {
            attend_block(sequence_qkv, keys, shape, 0, sequence_out);
        }
        return Ok(());
    }
    let threads = rayon::current_num_threads().max(1);
    let blocks_per_sequence = (threads * 4).div_ceil(batch).max(1);
    let block_rows = seq.div_ceil(blocks_per_sequence).max(1);
    output
        .par_chunks_mut(seq * hidden)
        .zip(qkv.par_chunks(seq * 3 * hidden))
        .zip(keys.par_iter())
        .for_each(|((sequence_out, sequence_qkv), keys)| {
            sequence_out
                .par_chunks_mut(block_rows * hidden)
                .enumerate()
                .for_each(|(block, block_out)| {
                    attend_block(sequence_qkv, keys, shape, block * block_rows, block_out);
                });
        });
    Ok(())
}

/// Attention for sequences packed one after another without padding: `qkv` holds
/// `Σ lengths` rows of `3·hidden`, `output` the same rows of `hidden`; sequence `i` is the
/// `lengths[i]` rows after those of the sequences before it, and attends only to itself.
/// Sequences run side by side on the calling rayon pool.
pub fn encoder_attention_packed(
    qkv: &[f32],
    lengths: &[usize],
    heads: usize,
    head_dim: usize,
    output: &mut [f32],
) -> Result<()> {
    const KERNEL: &str = "encoder_attention_packed";
    let hidden = heads * head_dim;
    let rows: usize = lengths.iter().sum();
    check_len(KERNEL, "qkv", qkv.len(), rows * 3 * hidden)?;
    check_len(KERNEL, "output", output.len(), rows * hidden)?;
    let mut jobs = Vec::with_capacity(lengths.len());
    let (mut qkv_rest, mut output_rest) = (qkv, output);
    for &seq in lengths {
        let (Some((sequence_qkv, qkv_after)), Some((sequence_out, output_after))) = (
            qkv_rest.split_at_checked(seq * 3 * hidden),
            output_rest.split_at_mut_checked(seq * hidden),
        ) else {
            return Err(KernelError {
                kernel: KERNEL,
                reason: format!("lengths {lengths:?} do not add up to the buffers"),
            });
        };
        (qkv_rest, output_rest) = (qkv_after, output_after);
        if seq > 0 {
            jobs.push((seq, sequence_qkv, sequence_out));
        }
    }
    jobs.into_par_iter()
        .try_for_each(|(seq, sequence_qkv, sequence_out)| {
            let shape = AttentionShape {
                batch: 1,
                seq,
                heads,
                head_dim,
            };
            encoder_attention(sequence_qkv, None, shape, sequence_out)
        })
}

fn attend_block(
    sequence_qkv: &[f32],
    keys: &[usize],
    shape: AttentionShape,
    first_row: usize,
    block_out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if super::packed_gemm::is_available()
        && shape.head_dim.is_multiple_of(16)
        && shape.head_dim <= 64
        && !keys.is_empty()
    {
        // SAFETY: the CPU supports AVX-512F (checked just above), the only requirement of
        // these `target_feature` functions.
        unsafe {
            match shape.head_dim / 16 {
                1 => attend_block_avx512::<1>(sequence_qkv, keys, shape, first_row, block_out),
                2 => attend_block_avx512::<2>(sequence_qkv, keys, shape, first_row, block_out),
                3 => attend_block_avx512::<3>(sequence_qkv, keys, shape, first_row, block_out),
                _ => attend_block_avx512::<4>(sequence_qkv, keys, shape, first_row, block_out),
            }
        }
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if super::has_avx2_fma() && shape.head_dim.is_multiple_of(8) && !keys.is_empty() {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above), the only requirement of
        // this `target_feature` function.
        unsafe { attend_block_avx2(sequence_qkv, keys, shape, first_row, block_out) };
        return;
    }
    attend_block_portable(sequence_qkv, keys, shape, first_row, block_out);
}

/// Query rows handled together by the AVX-512 path: four independent chains of FMAs, and
/// each key vector loaded once for four rows.
const QUERY_GROUP: usize = 4;

/// The AVX-512 path (`head_dim` = 16·`DV` ≤ 64, at least one attended key). Per head, the
/// attended keys are packed into panels of 16 (`[head_dim, 16]` each, zero-padded), so one
/// query's scores against 16 keys are `head_dim` FMAs into one register; four query rows go
/// together (each panel row loaded once for four independent chains). Softmax runs on whole
/// vectors (masked on the last panel); the weighted sum keeps the four rows' outputs
/// (`4·DV` registers) across all keys, each value row loaded once.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn attend_block_avx512<const DV: usize>(
    sequence_qkv: &[f32],
    keys: &[usize],
    shape: AttentionShape,
    first_row: usize,
    block_out: &mut [f32],
) {
    use std::arch::x86_64::*;
    let hidden = shape.hidden();
    let head_dim = 16 * DV;
    let row_width = 3 * hidden;
    let scale = _mm512_set1_ps(1.0 / (head_dim as f32).sqrt());
    let key_count = keys.len();
    let panel_count = key_count.div_ceil(16);
    let tail = key_count - (panel_count - 1) * 16;
    let tail_mask: __mmask16 = if tail == 16 {
        0xFFFF
    } else {
        ((1u32 << tail) - 1) as u16
    };
    let padded_keys = panel_count * 16;
    // Panel p: for each dimension d, keys 16p..16p+16 side by side.
    let mut key_panels = vec![0.0f32; padded_keys * head_dim];
    // Scores, then softmax weights, of the group's rows: [QUERY_GROUP, padded_keys].
    let mut weights = vec![0.0f32; QUERY_GROUP * padded_keys];
    let query_rows = block_out.len() / hidden.max(1);
    if query_rows == 0 || sequence_qkv.len() < (first_row + query_rows) * row_width {
        return;
    }
    for head in 0..shape.heads {
        let head_start = head * head_dim;
        pack_key_panels(sequence_qkv, keys, shape, head, 16, &mut key_panels);
        for group_start in (0..query_rows).step_by(QUERY_GROUP) {
            let group_rows = QUERY_GROUP.min(query_rows - group_start);
            // Rows past the block repeat its last row (computed, not stored).
            let queries: [&[f32]; QUERY_GROUP] = std::array::from_fn(|g| {
                let row = first_row + group_start + g.min(group_rows - 1);
                slice_at(sequence_qkv, row * row_width + head_start, head_dim)
            });
            if queries.iter().any(|query| query.len() != head_dim) {
                return;
            }
            // Scores: q·k for 16 keys per register, four rows at once.
            for (panel, scores) in key_panels
                .chunks_exact(16 * head_dim)
                .zip(0..panel_count)
                .map(|(panel, p)| (panel, p * 16))
            {
                let mut sums = [_mm512_setzero_ps(); QUERY_GROUP];
                for (dim, keys16) in panel.chunks_exact(16).enumerate() {
                    // SAFETY: `keys16` is exactly 16 f32s; `dim < head_dim`, the length of
                    // every query slice (checked above).
                    unsafe {
                        let k = _mm512_loadu_ps(keys16.as_ptr());
                        for (sum, query) in sums.iter_mut().zip(&queries) {
                            let q = _mm512_set1_ps(*query.get_unchecked(dim));
                            *sum = _mm512_fmadd_ps(q, k, *sum);
                        }
                    }
                }
                for (g, sum) in sums.iter().enumerate() {
                    if let Some(out) = weights.get_mut(g * padded_keys + scores..)
                        && out.len() >= 16
                    {
                        // SAFETY: at least 16 values from `out` on (checked).
                        unsafe { _mm512_storeu_ps(out.as_mut_ptr(), _mm512_mul_ps(*sum, scale)) };
                    }
                }
            }
            // Softmax per row over the real keys.
            let inverses = softmax_rows_avx512(&mut weights, padded_keys, tail_mask);
            // Weighted sum of the values, four rows at once.
            let mut sums = [[_mm512_setzero_ps(); DV]; QUERY_GROUP];
            for (j, &key) in keys.iter().enumerate() {
                let value = slice_at(
                    sequence_qkv,
                    key * row_width + 2 * hidden + head_start,
                    head_dim,
                );
                if value.len() != head_dim {
                    continue;
                }
                for (g, row_sums) in sums.iter_mut().enumerate() {
                    // SAFETY: j < key_count ≤ padded_keys, inside row g of `weights`; `value`
                    // holds head_dim = 16·DV values.
                    unsafe {
                        let w = _mm512_set1_ps(*weights.get_unchecked(g * padded_keys + j));
                        for (v, sum) in row_sums.iter_mut().enumerate() {
                            let x = _mm512_loadu_ps(value.as_ptr().add(16 * v));
                            *sum = _mm512_fmadd_ps(w, x, *sum);
                        }
                    }
                }
            }
            for (g, (row_sums, inverse)) in sums.iter().zip(inverses).enumerate().take(group_rows) {
                let out_start = (group_start + g) * hidden + head_start;
                let Some(out) = block_out.get_mut(out_start..out_start + head_dim) else {
                    continue;
                };
                for (v, sum) in row_sums.iter().enumerate() {
                    // SAFETY: `out` holds 16·DV values.
                    unsafe {
                        _mm512_storeu_ps(
                            out.as_mut_ptr().add(16 * v),
                            _mm512_mul_ps(*sum, _mm512_set1_ps(inverse)),
                        );
                    }
                }
            }
        }
    }
}

/// Softmax in place of each row of `weights` (`QUERY_GROUP` rows of `padded_keys` scores, the
/// last panel of 16 holding only the keys `tail_mask` selects); returns each row's
/// `1 / Σ exp`, by which the weighted sum is scaled (the rows are left unnormalised).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn softmax_rows_avx512(
    weights: &mut [f32],
    padded_keys: usize,
    tail_mask: std::arch::x86_64::__mmask16,
) -> [f32; QUERY_GROUP] {
    use std::arch::x86_64::*;
    let panel_count = padded_keys / 16;
    let mut inverses = [0.0f32; QUERY_GROUP];
    if panel_count == 0 {
        return inverses;
    }
    for (row_weights, inverse) in weights.chunks_exact_mut(padded_keys).zip(&mut inverses) {
        let ptr = row_weights.as_mut_ptr();
        let last = (panel_count - 1) * 16;
        let mut max = _mm512_set1_ps(f32::NEG_INFINITY);
        // SAFETY: `row_weights` holds `padded_keys` = 16·panel_count values.
        unsafe {
            for start in (0..last).step_by(16) {
                max = _mm512_max_ps(max, _mm512_loadu_ps(ptr.add(start)));
            }
            max = _mm512_max_ps(max, _mm512_mask_loadu_ps(max, tail_mask, ptr.add(last)));
        }
        let max = _mm512_set1_ps(_mm512_reduce_max_ps(max));
        let mut total = _mm512_setzero_ps();
        for start in (0..padded_keys).step_by(16) {
            // SAFETY: as above; masked-off lanes of the last panel become 0.
            unsafe {
                let x = _mm512_sub_ps(_mm512_loadu_ps(ptr.add(start)), max);
                let mut e = super::activation::exp_avx512(x);
                if start == last {
                    e = _mm512_maskz_mov_ps(tail_mask, e);
                }
                total = _mm512_add_ps(total, e);
                _mm512_storeu_ps(ptr.add(start), e);
            }
        }
        *inverse = 1.0 / _mm512_reduce_add_ps(total);
    }
    inverses
}

/// The AVX2/FMA path (`head_dim` a multiple of 8, at least one attended key), with the
/// accumulators in registers: keys are packed per head into panels of 8 (`[head_dim, 8]` each,
/// zero-padded), so the scores of 8 keys are `head_dim` FMAs into one register; the weighted
/// sum keeps 8 output dimensions in a register across all keys.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn attend_block_avx2(
    sequence_qkv: &[f32],
    keys: &[usize],
    shape: AttentionShape,
    first_row: usize,
    block_out: &mut [f32],
) {
    use std::arch::x86_64::*;
    let hidden = shape.hidden();
    let head_dim = shape.head_dim;
    let row_width = 3 * hidden;
    let scale = 1.0 / (head_dim as f32).sqrt();
    let key_count = keys.len();
    let padded_keys = key_count.div_ceil(8) * 8;
    // Panel p holds keys 8p..8p+8: for each dimension d, their 8 values side by side.
    let mut key_panels = vec![0.0f32; padded_keys * head_dim];
    let mut weights = vec![0.0f32; padded_keys];
    let query_rows = block_out.len() / hidden.max(1);
    for head in 0..shape.heads {
        let head_start = head * head_dim;
        pack_key_panels(sequence_qkv, keys, shape, head, 8, &mut key_panels);
        for offset in 0..query_rows {
            let query_start = (first_row + offset) * row_width + head_start;
            let query = slice_at(sequence_qkv, query_start, head_dim);
            for (panel, scores) in key_panels
                .chunks_exact(8 * head_dim)
                .zip(weights.chunks_exact_mut(8))
            {
                // Four independent chains (dimensions d mod 4) hide the FMA latency.
                let mut sums = [_mm256_setzero_ps(); 4];
                for (keys32, q4) in panel.chunks_exact(32).zip(query.chunks_exact(4)) {
                    for ((sum, keys8), &q) in sums.iter_mut().zip(keys32.chunks_exact(8)).zip(q4) {
                        // SAFETY: `keys8` is exactly 8 f32s, the width of the unaligned load.
                        let k = unsafe { _mm256_loadu_ps(keys8.as_ptr()) };
                        *sum = _mm256_fmadd_ps(_mm256_set1_ps(q * scale), k, *sum);
                    }
                }
                let [s0, s1, s2, s3] = sums;
                let sum = _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3));
                // SAFETY: `scores` is exactly 8 f32s, the width of the unaligned store.
                unsafe { _mm256_storeu_ps(scores.as_mut_ptr(), sum) };
            }
            let real = weights.get_mut(..key_count).unwrap_or(&mut []);
            let max = real.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            for weight in real.iter_mut() {
                *weight -= max;
            }
            super::activation::exp_non_positive_in_place(real);
            let inverse = 1.0 / real.iter().sum::<f32>();
            let out_start = offset * hidden + head_start;
            let Some(out_head) = block_out.get_mut(out_start..out_start + head_dim) else {
                continue;
            };
            // Up to 4 blocks of 8 output dimensions at once: independent chains, one
            // broadcast of each weight.
            for (group, out32) in out_head.chunks_mut(32).enumerate() {
                let blocks = out32.len() / 8;
                let mut sums = [_mm256_setzero_ps(); 4];
                for (&weight, &key) in real.iter().zip(keys) {
                    let value = slice_at(
                        sequence_qkv,
                        key * row_width + 2 * hidden + head_start + group * 32,
                        blocks * 8,
                    );
                    let weight = _mm256_set1_ps(weight);
                    for (sum, value8) in sums.iter_mut().zip(value.chunks_exact(8)) {
                        // SAFETY: `value8` is exactly 8 f32s, the width of the load.
                        let v = unsafe { _mm256_loadu_ps(value8.as_ptr()) };
                        *sum = _mm256_fmadd_ps(weight, v, *sum);
                    }
                }
                for (sum, out8) in sums.iter().zip(out32.chunks_exact_mut(8)) {
                    let scaled = _mm256_mul_ps(*sum, _mm256_set1_ps(inverse));
                    // SAFETY: `out8` is exactly 8 f32s, the width of the unaligned store.
                    unsafe { _mm256_storeu_ps(out8.as_mut_ptr(), scaled) };
                }
            }
        }
    }
}

/// Query rows `first_row..` of one sequence (as many as `block_out` holds), every head.
///
/// Per head, the attended keys are first copied transposed into `[head_dim, keys]`, so the
/// scores of one query are `head_dim` multiply-adds over contiguous rows of all keys at once
/// (vectorizable, no horizontal sums); values are read in place.
#[inline(always)]
fn attend_block_portable(
    sequence_qkv: &[f32],
    keys: &[usize],
    shape: AttentionShape,
    first_row: usize,
    block_out: &mut [f32],
) {
    let hidden = shape.hidden();
    let head_dim = shape.head_dim;
    let row_width = 3 * hidden;
    let scale = 1.0 / (head_dim as f32).sqrt();
    // Every key masked: Transformers' scores all become finfo.min, so the weights are uniform.
    let all_keys: Vec<usize>;
    let (keys, uniform) = if keys.is_empty() {
        all_keys = (0..shape.seq).collect();
        (all_keys.as_slice(), true)
    } else {
        (keys, false)
    };
    let key_count = keys.len();
    let mut keys_transposed = vec![0.0f32; head_dim * key_count];
    let mut weights = vec![0.0f32; key_count];
    let query_rows = block_out.len() / hidden.max(1);
    for head in 0..shape.heads {
        let head_start = head * head_dim;
        if !uniform {
            // One panel as wide as all the keys: `[head_dim, keys]`.
            pack_key_panels(
                sequence_qkv,
                keys,
                shape,
                head,
                key_count,
                &mut keys_transposed,
            );
        }
        for offset in 0..query_rows {
            let query_start = (first_row + offset) * row_width + head_start;
            if uniform {
                weights.fill(1.0);
            } else {
                let query = slice_at(sequence_qkv, query_start, head_dim);
                weights.fill(0.0);
                for (&q, key_row) in query.iter().zip(keys_transposed.chunks_exact(key_count)) {
                    let q = q * scale;
                    for (weight, &k) in weights.iter_mut().zip(key_row) {
                        *weight += q * k;
                    }
                }
                let max = weights.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                for weight in weights.iter_mut() {
                    *weight -= max;
                }
                super::activation::exp_non_positive_in_place(&mut weights);
            }
            let inverse = 1.0 / weights.iter().sum::<f32>();
            let out_start = offset * hidden + head_start;
            let Some(out_head) = block_out.get_mut(out_start..out_start + head_dim) else {
                continue;
            };
            out_head.fill(0.0);
            for (weight, &key) in weights.iter().zip(keys) {
                let value = slice_at(
                    sequence_qkv,
                    key * row_width + 2 * hidden + head_start,
                    head_dim,
                );
                let factor = weight * inverse;
                for (out, v) in out_head.iter_mut().zip(value) {
                    *out += factor * v;
                }
            }
        }
    }
}

/// `values[start..start + len]` (empty when out of range, which the shape checks in
/// [`encoder_attention`] rule out).
#[inline(always)]
/// Copies one head's attended keys into panels of `width` keys: panel `p` holds, for each
/// dimension `d` in order, keys `width·p .. width·p + width` side by side (zeros past the
/// last key), so the scores of one query against a panel are `head_dim` vector FMAs.
fn pack_key_panels(
    sequence_qkv: &[f32],
    keys: &[usize],
    shape: AttentionShape,
    head: usize,
    width: usize,
    panels: &mut [f32],
) {
    let (hidden, head_dim) = (shape.hidden(), shape.head_dim);
    let width = width.max(1);
    for (index, &key) in keys.iter().enumerate() {
        let key_values = slice_at(
            sequence_qkv,
            key * 3 * hidden + hidden + head * head_dim,
            head_dim,
        );
        let panel_start = (index / width) * width * head_dim + index % width;
        for (dim, &value) in key_values.iter().enumerate() {
            if let Some(slot) = panels.get_mut(panel_start + dim * width) {
                *slot = value;
            }
        }
    }
}

fn slice_at(values: &[f32], start: usize, len: usize) -> &[f32] {
    values.get(start..start + len).unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::indexing_slicing, clippy::unwrap_used)]
    use super::*;
    use crate::random_values;
    use crate::reference::attend;

    /// Attention of every query row and head through the plain reference: the packed
    /// `[batch, seq, 3·hidden]` buffer split into q, k and v, keys hidden by the mask.
    fn plain_attention(qkv: &[f32], mask: Option<&[u8]>, shape: AttentionShape) -> Vec<f32> {
        let AttentionShape {
            batch,
            seq,
            heads,
            head_dim,
        } = shape;
        let hidden = shape.hidden();
        let scale = 1.0 / (head_dim as f32).sqrt();
        let part = |row: usize, which: usize, head: usize| {
            let start = row * 3 * hidden + which * hidden + head * head_dim;
            &qkv[start..start + head_dim]
        };
        let mut out = Vec::with_capacity(batch * seq * hidden);
        for b in 0..batch {
            let visible: Vec<bool> = (0..seq)
                .map(|j| mask.is_none_or(|m| m[b * seq + j] != 0))
                .collect();
            for i in 0..seq {
                for head in 0..heads {
                    let keys: Vec<&[f32]> = (0..seq).map(|j| part(b * seq + j, 1, head)).collect();
                    let values: Vec<&[f32]> =
                        (0..seq).map(|j| part(b * seq + j, 2, head)).collect();
                    out.extend(attend(
                        part(b * seq + i, 0, head),
                        &keys,
                        &values,
                        &visible,
                        scale,
                    ));
                }
            }
        }
        out
    }

    #[test]
    fn fused_attention_matches_plain_attention() {
        let shapes = [
            AttentionShape {
                batch: 1,
                seq: 1,
                heads: 1,
                head_dim: 4,
            },
            AttentionShape {
                batch: 3,
                seq: 17,
                heads: 12,
                head_dim: 32,
            },
            AttentionShape {
                batch: 2,
                seq: 40,
                heads: 4,
                head_dim: 20,
            },
            AttentionShape {
                batch: 1,
                seq: 64,
                heads: 12,
                head_dim: 32,
            },
            // Two groups of output dimensions (32 + 16) on the AVX2 path, three vectors on
            // the AVX-512 one.
            AttentionShape {
                batch: 2,
                seq: 9,
                heads: 2,
                head_dim: 48,
            },
            // AVX-512: one and four vectors per head, 33 keys (a one-key last panel) and
            // query rows not a multiple of four; 40 dimensions take the AVX2 path.
            AttentionShape {
                batch: 2,
                seq: 33,
                heads: 3,
                head_dim: 16,
            },
            AttentionShape {
                batch: 1,
                seq: 18,
                heads: 2,
                head_dim: 64,
            },
            AttentionShape {
                batch: 2,
                seq: 7,
                heads: 2,
                head_dim: 40,
            },
        ];
        for shape in shapes {
            let rows = shape.batch * shape.seq;
            // Scores of a few units, as in trained models.
            let qkv: Vec<f32> = random_values(21, rows * 3 * shape.hidden())
                .iter()
                .map(|v| v * 2.0)
                .collect();
            // Right padding of varying length, one sequence with a hole, and (for batch 3)
            // one sequence fully masked.
            let mut mask = vec![1u8; rows];
            for b in 0..shape.batch {
                for j in 0..shape.seq {
                    let padded = j >= shape.seq - (b * 3).min(shape.seq - 1) || (b == 1 && j == 2);
                    if padded {
                        mask[b * shape.seq + j] = 0;
                    }
                }
            }
            if shape.batch == 3 {
                mask[2 * shape.seq..].fill(0);
            }
            for mask in [None, Some(mask.as_slice())] {
                let want = plain_attention(&qkv, mask, shape);
                let mut got = vec![f32::NAN; rows * shape.hidden()];
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(2)
                    .build()
                    .unwrap();
                pool.install(|| encoder_attention(&qkv, mask, shape, &mut got))
                    .unwrap();
                let worst = crate::max_abs_diff(&got, &want);
                // Outputs are averages of values in [-2, 2): measured up to 1.1e-6.
                eprintln!("measured error: {}", worst);
                assert!(worst < 2e-6, "{shape:?} mask {}: {worst}", mask.is_some());
            }
        }
    }

    #[test]
    fn wrong_sizes_are_errors() {
        let shape = AttentionShape {
            batch: 2,
            seq: 3,
            heads: 2,
            head_dim: 2,
        };
        let mut out = vec![0.0; 24];
        assert!(encoder_attention(&[0.0; 71], None, shape, &mut out).is_err());
        assert!(encoder_attention(&[0.0; 72], Some(&[1; 5]), shape, &mut out).is_err());
        assert!(encoder_attention(&[0.0; 72], None, shape, &mut out[..23]).is_err());
    }
}
