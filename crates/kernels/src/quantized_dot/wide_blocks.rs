//! The AVX-512 VNNI product of the formats that are not interleaved (the K-quants `Q2_K` …
//! `Q6_K`, and `Q5_0`/`Q5_1`) with activations quantized to 16 bits ([`Q16Rows`]): one weight
//! row at a time, as GGUF stores it.
//!
//! Per 32 values of a block, `u` is unpacked into 32 bytes (in registers for `Q4_K` and `Q6_K`,
//! value by value for the others), widened to 16 bits, and meets each activation row's 32
//! values through `vpdpwssd`: lanes 0–7 hold the pair sums of values 0–15, lanes 8–15 those of
//! values 16–31, so a sub-block of 16 (`Q2_K`, `Q3_K`, `Q6_K`) or 32 values takes its scale by
//! lane. The minimum term uses the activations' half-block sums. 16-bit activations need no
//! residual row (the 8-bit path's [`super::Q8Rows::quantize_with_residual`]).

use std::arch::x86_64::*;

use super::{BLOCK, Q16Rows, block_scales, chunk_u, has_register_unpacking, unpack};
use crate::quantized::BlockFormat;

/// Activation rows one pass over a weight row keeps accumulators for.
const ROWS_PER_PASS: usize = 4;

/// Whether this kernel multiplies `format` here: AVX-512 F/BW/VNNI present, and a format the
/// 32-value kernels (`small_blocks`, `interleaved`) do not take.
pub(super) fn is_available(format: BlockFormat) -> bool {
    !matches!(
        format,
        BlockFormat::Q4_0 | BlockFormat::Q4_1 | BlockFormat::Q8_0
    ) && super::interleaved::has_avx512_vnni()
}

/// `sums[c · rows + r]` = weight row `c` of `weights` (whole rows of `format` blocks) ·
/// activation row `r`. Writes nothing unless [`is_available`] says so.
pub(super) fn dot_columns(format: BlockFormat, weights: &[u8], input: &Q16Rows, sums: &mut [f32]) {
    let rows = input.rows();
    let Some(row_bytes) = format.bytes_for(input.cols()) else {
        return;
    };
    if !is_available(format) || rows == 0 || row_bytes == 0 {
        return;
    }
    for (row, sums) in weights.chunks_exact(row_bytes).zip(sums.chunks_mut(rows)) {
        for (pass, sums) in sums.chunks_mut(ROWS_PER_PASS).enumerate() {
            let first = pass * ROWS_PER_PASS;
            // SAFETY: AVX-512 F/BW/VNNI present (`is_available`); `row` is one whole row of
            // `format` blocks for `input.cols()` values; each arm's `R` is `sums.len()`.
            unsafe {
                match sums.len() {
                    1 => pass_rows::<1>(format, row, input, first, sums),
                    2 => pass_rows::<2>(format, row, input, first, sums),
                    3 => pass_rows::<3>(format, row, input, first, sums),
                    _ => pass_rows::<ROWS_PER_PASS>(format, row, input, first, sums),
                }
            }
        }
    }
}

/// Activation rows `first..first + R` against one weight row: `sums[r]`.
///
/// # Safety
/// AVX-512 F/BW/VNNI present; `row` holds `input.cols()` values of `format` blocks.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
unsafe fn pass_rows<const R: usize>(
    format: BlockFormat,
    row: &[u8],
    input: &Q16Rows,
    first: usize,
    sums: &mut [f32],
) {
    let values = format.block_values();
    let mut rows: [(&[i16], &[f32], &[f32]); R] = [(&[], &[], &[]); R];
    for (r, slot) in rows.iter_mut().enumerate() {
        match (input.row(first + r), input.half_sums(first + r)) {
            (Some((q, scales, _)), Some(halves)) => *slot = (q, scales, halves),
            _ => return,
        }
    }
    let mut totals = [_mm512_setzero_ps(); R];
    let mut minimums = [_mm_setzero_ps(); R];
    let fast = has_register_unpacking(format);
    for (b, block) in row.chunks_exact(format.block_bytes()).enumerate() {
        let slow = (!fast).then(|| unpack(format, block));
        let scales = match &slow {
            Some(unpacked) => unpacked.scales,
            None => block_scales(format, block),
        };
        for c in 0..values / BLOCK {
            // SAFETY: AVX2 is enabled here; `block` is one whole block of `format`.
            let u = _mm512_cvtepu8_epi16(unsafe { chunk_u(format, block, slow.as_ref(), c) });
            let (first_sub, second_sub) = scales.chunk_subs(c);
            let weight_scales = _mm512_castpd_ps(_mm512_insertf64x4::<1>(
                _mm512_castps_pd(_mm512_set1_ps(scales.scale(first_sub))),
                _mm256_castps_pd(_mm256_set1_ps(scales.scale(second_sub))),
            ));
            let weight_minimums = _mm_setr_ps(
                scales.minimum(first_sub),
                scales.minimum(second_sub),
                0.0,
                0.0,
            );
            let activation_block = b * values / BLOCK + c;
            for ((total, minimum), (q, activation_scales, half_sums)) in
                totals.iter_mut().zip(minimums.iter_mut()).zip(rows.iter())
            {
                // SAFETY: every row holds `cols` values, one scale per 32 and one sum per 16
                // (`Q16Rows`), and block `activation_block` lies inside the row (the weight
                // row holds exactly `cols` values).
                unsafe {
                    let q = _mm512_loadu_si512(q.as_ptr().add(activation_block * BLOCK).cast());
                    let dots = _mm512_dpwssd_epi32(_mm512_setzero_si512(), u, q);
                    let scale = _mm512_mul_ps(
                        weight_scales,
                        _mm512_set1_ps(*activation_scales.get_unchecked(activation_block)),
                    );
                    *total = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dots), scale, *total);
                    let pair = _mm_castpd_ps(_mm_load_sd(
                        half_sums.as_ptr().add(2 * activation_block).cast(),
                    ));
                    *minimum = _mm_fmadd_ps(weight_minimums, pair, *minimum);
                }
            }
        }
    }
    for ((sum, total), minimum) in sums.iter_mut().zip(totals).zip(minimums) {
        let pair = _mm_add_ss(minimum, _mm_movehdup_ps(minimum));
        *sum = _mm512_reduce_add_ps(total) - _mm_cvtss_f32(pair);
    }
}
