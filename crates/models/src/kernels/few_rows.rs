//! Few-row matrix products `y = x Wᵀ` for decoding: `x` is one to a few dozen rows, `W` is
//! `[out, in]` stored as f32, f16, bf16 or 8-bit blocks ([`MatrixData`]). Each weight is read
//! from memory once per call; the output rows are split over the current rayon pool, so
//! `--threads N` / `RAYON_NUM_THREADS` decide the parallelism.
//!
//! Accumulation is always f32. On x86-64 with AVX2, FMA and F16C (checked at run time) the
//! inner loops use `std::arch`; elsewhere a portable loop computes the same sums (in a different
//! order, so results differ in the last bits).
//!
//! 8-bit weights ([`quantize_q8`]) are symmetric per block of [`Q8_BLOCK`] consecutive inputs of
//! one output row: `w ≈ scale · q` with `q ∈ [-127, 127]` and `scale = max|w| / 127` of the block
//! (a block of zeros has scale 0). The worst rounding error of a weight is `scale / 2`, i.e. at
//! most 0.4 % of the largest magnitude in its block.

use half::{bf16, f16};
use rayon::prelude::*;

use crate::error::{Error, Result};

/// Inputs per 8-bit block (one f32 scale per block).
pub const Q8_BLOCK: usize = 32;

/// Rows of `x` processed together against one weight row.
const ROW_GROUP: usize = 4;

/// The weight values of a `[out, in]` matrix, row-major, in one of the storage formats.
#[derive(Debug, Clone, Copy)]
pub enum MatrixData<'a> {
    /// Plain f32.
    F32(&'a [f32]),
    /// IEEE half precision.
    F16(&'a [f16]),
    /// bfloat16.
    Bf16(&'a [bf16]),
    /// 8-bit blocks: `values` `[out, in]`, `scales` `[out, ⌈in / Q8_BLOCK⌉]`.
    Q8 {
        /// The quantized weights.
        values: &'a [i8],
        /// One scale per block of [`Q8_BLOCK`] inputs of a row.
        scales: &'a [f32],
    },
}

/// A borrowed `[rows, cols]` (`[out, in]`) weight matrix.
#[derive(Debug, Clone, Copy)]
pub struct MatrixRef<'a> {
    /// The values.
    pub data: MatrixData<'a>,
    /// Output features.
    pub rows: usize,
    /// Input features.
    pub cols: usize,
}

/// One weight row.
#[derive(Clone, Copy)]
enum RowRef<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    Bf16(&'a [bf16]),
    Q8 { values: &'a [i8], scales: &'a [f32] },
}

impl<'a> MatrixRef<'a> {
    /// Whether the stored lengths fit `rows × cols`.
    pub fn is_consistent(&self) -> bool {
        let count = self.rows.checked_mul(self.cols);
        match self.data {
            MatrixData::F32(values) => count == Some(values.len()),
            MatrixData::F16(values) => count == Some(values.len()),
            MatrixData::Bf16(values) => count == Some(values.len()),
            MatrixData::Q8 { values, scales } => {
                count == Some(values.len())
                    && self.rows.checked_mul(self.cols.div_ceil(Q8_BLOCK)) == Some(scales.len())
            }
        }
    }

    fn row(&self, index: usize) -> Option<RowRef<'a>> {
        let start = index.checked_mul(self.cols)?;
        let range = start..start.checked_add(self.cols)?;
        Some(match self.data {
            MatrixData::F32(values) => RowRef::F32(values.get(range)?),
            MatrixData::F16(values) => RowRef::F16(values.get(range)?),
            MatrixData::Bf16(values) => RowRef::Bf16(values.get(range)?),
            MatrixData::Q8 { values, scales } => {
                let blocks = self.cols.div_ceil(Q8_BLOCK);
                let first = index.checked_mul(blocks)?;
                RowRef::Q8 {
                    values: values.get(range)?,
                    scales: scales.get(first..first.checked_add(blocks)?)?,
                }
            }
        })
    }
}

/// Quantizes a row-major `[rows, cols]` f32 matrix to 8-bit blocks: returns `(values, scales)`
/// in the layout of [`MatrixData::Q8`].
pub fn quantize_q8(weights: &[f32], rows: usize, cols: usize) -> Result<(Vec<i8>, Vec<f32>)> {
    if rows.checked_mul(cols) != Some(weights.len()) || cols == 0 {
        return Err(shape_error(format!(
            "cannot quantize {} values as a [{rows}, {cols}] matrix",
            weights.len()
        )));
    }
    let mut values = Vec::with_capacity(weights.len());
    let mut scales = Vec::with_capacity(rows * cols.div_ceil(Q8_BLOCK));
    for row in weights.chunks_exact(cols) {
        for block in row.chunks(Q8_BLOCK) {
            let largest = block.iter().fold(0.0f32, |acc, w| acc.max(w.abs()));
            let scale = largest / 127.0;
            let inverse = if scale > 0.0 { 1.0 / scale } else { 0.0 };
            scales.push(scale);
            // `as` saturates, and the value is within ±127 by construction (NaN becomes 0).
            values.extend(block.iter().map(|w| (w * inverse).round().clamp(-127.0, 127.0) as i8));
        }
    }
    Ok((values, scales))
}

/// `out[r][o] = Σᵢ x[r][i] · W[o][i]` for the `rows` rows of `x` (`[rows, weights.cols]`,
/// row-major); `out` is `[rows, weights.rows]`. Shapes that do not fit are errors.
pub fn matmul_transposed(
    weights: MatrixRef<'_>,
    x: &[f32],
    rows: usize,
    out: &mut [f32],
) -> Result<()> {
    let (outs, cols) = (weights.rows, weights.cols);
    if !weights.is_consistent()
        || rows.checked_mul(cols) != Some(x.len())
        || rows.checked_mul(outs) != Some(out.len())
    {
        return Err(shape_error(format!(
            "few-row matmul: x has {} values for {rows} rows, weights [{outs}, {cols}], out {}",
            x.len(),
            out.len()
        )));
    }
    if rows == 0 || outs == 0 {
        return Ok(());
    }
    let simd = Simd::detect();
    let tasks = rayon::current_num_threads().max(1) * 4;
    let chunk = outs.div_ceil(tasks).max(8);
    if rows == 1 {
        out.par_chunks_mut(chunk)
            .enumerate()
            .for_each(|(task, dst)| {
                for (offset, y) in dst.iter_mut().enumerate() {
                    if let Some(row) = weights.row(task * chunk + offset) {
                        *y = dot(simd, row, x);
                    }
                }
            });
        return Ok(());
    }
    // Output-major scratch `[outs, rows]`: one weight row (in L1) meets every row of `x` (in
    // L2) before the next weight row is read.
    let mut transposed = vec![0.0f32; outs * rows];
    transposed
        .par_chunks_mut(chunk * rows)
        .enumerate()
        .for_each(|(task, block)| {
            let mut decoded = vec![0.0f32; cols];
            for (offset, dst) in block.chunks_exact_mut(rows).enumerate() {
                let Some(row) = weights.row(task * chunk + offset) else {
                    continue;
                };
                let row_f32: &[f32] = match row {
                    RowRef::F32(values) => values,
                    other => {
                        decode_row(simd, other, &mut decoded);
                        &decoded
                    }
                };
                dot_rows(simd, row_f32, x, dst);
            }
        });
    for (o, column) in transposed.chunks_exact(rows).enumerate() {
        for (r, &value) in column.iter().enumerate() {
            if let Some(slot) = out.get_mut(r * outs + o) {
                *slot = value;
            }
        }
    }
    Ok(())
}

fn shape_error(message: String) -> Error {
    Error::Candle(candle_core::Error::Msg(message))
}

/// Which inner loops this CPU can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Simd {
    /// AVX2 + FMA + F16C.
    Avx2,
    /// Plain Rust.
    Portable,
}

impl Simd {
    fn detect() -> Simd {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
                && std::arch::is_x86_feature_detected!("f16c")
            {
                return Simd::Avx2;
            }
        }
        Simd::Portable
    }
}

/// One weight row against one input row.
fn dot(simd: Simd, row: RowRef<'_>, x: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if simd == Simd::Avx2 {
        return avx2::dot(row, x);
    }
    let _ = simd;
    portable::dot(row, x)
}

/// One f32 weight row against every row of `x`; `dst[r]` gets row `r`'s sum.
fn dot_rows(simd: Simd, row: &[f32], x: &[f32], dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if simd == Simd::Avx2 {
        avx2::dot_rows(row, x, dst);
        return;
    }
    let _ = simd;
    for (slot, x_row) in dst.iter_mut().zip(x.chunks_exact(row.len().max(1))) {
        *slot = portable::dot_f32(row, x_row);
    }
}

/// Expands a 16-bit or 8-bit row to f32 in `out` (same length as the row).
fn decode_row(simd: Simd, row: RowRef<'_>, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if simd == Simd::Avx2 {
        avx2::decode_row(row, out);
        return;
    }
    let _ = simd;
    portable::decode_row(row, out);
}

/// The reference loops, also used where AVX2/FMA/F16C are missing.
mod portable {
    use super::{Q8_BLOCK, RowRef};

    pub(super) fn dot_f32(w: &[f32], x: &[f32]) -> f32 {
        w.iter().zip(x).map(|(w, x)| w * x).sum()
    }

    pub(super) fn dot(row: RowRef<'_>, x: &[f32]) -> f32 {
        match row {
            RowRef::F32(w) => dot_f32(w, x),
            RowRef::F16(w) => w.iter().zip(x).map(|(w, x)| w.to_f32() * x).sum(),
            RowRef::Bf16(w) => w.iter().zip(x).map(|(w, x)| w.to_f32() * x).sum(),
            RowRef::Q8 { values, scales } => values
                .chunks(Q8_BLOCK)
                .zip(x.chunks(Q8_BLOCK))
                .zip(scales)
                .map(|((q, x), scale)| {
                    scale
                        * q.iter()
                            .zip(x)
                            .map(|(&q, x)| f32::from(q) * x)
                            .sum::<f32>()
                })
                .sum(),
        }
    }

    pub(super) fn decode_row(row: RowRef<'_>, out: &mut [f32]) {
        match row {
            RowRef::F32(w) => {
                for (slot, w) in out.iter_mut().zip(w) {
                    *slot = *w;
                }
            }
            RowRef::F16(w) => {
                for (slot, w) in out.iter_mut().zip(w) {
                    *slot = w.to_f32();
                }
            }
            RowRef::Bf16(w) => {
                for (slot, w) in out.iter_mut().zip(w) {
                    *slot = w.to_f32();
                }
            }
            RowRef::Q8 { values, scales } => {
                for ((slots, q), scale) in out
                    .chunks_mut(Q8_BLOCK)
                    .zip(values.chunks(Q8_BLOCK))
                    .zip(scales)
                {
                    for (slot, &q) in slots.iter_mut().zip(q) {
                        *slot = scale * f32::from(q);
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx2 {
    //! AVX2/FMA/F16C loops. Every function here is only called after `Simd::detect` found those
    //! features; the loads read whole chunks from `chunks_exact`, so every pointer offset stays
    //! inside the chunk it came from.

    use std::arch::x86_64::*;

    use half::{bf16, f16};

    use super::{Q8_BLOCK, ROW_GROUP, RowRef, portable};

    pub(super) fn dot(row: RowRef<'_>, x: &[f32]) -> f32 {
        // SAFETY: the caller (`super::dot`) checked AVX2, FMA and F16C at run time.
        unsafe {
            match row {
                RowRef::F32(w) => dot_f32(w, x),
                RowRef::F16(w) => dot_f16(w, x),
                RowRef::Bf16(w) => dot_bf16(w, x),
                RowRef::Q8 { values, scales } => dot_q8(values, scales, x),
            }
        }
    }

    pub(super) fn dot_rows(row: &[f32], x: &[f32], dst: &mut [f32]) {
        // SAFETY: the caller (`super::dot_rows`) checked AVX2 and FMA at run time.
        unsafe { dot_rows_f32(row, x, dst) }
    }

    pub(super) fn decode_row(row: RowRef<'_>, out: &mut [f32]) {
        // SAFETY: the caller (`super::decode_row`) checked AVX2 and F16C at run time.
        unsafe {
            match row {
                RowRef::F16(w) => decode_f16(w, out),
                RowRef::Bf16(w) => decode_bf16(w, out),
                other => portable::decode_row(other, out),
            }
        }
    }

    /// The sum of the eight lanes.
    #[target_feature(enable = "avx2")]
    fn horizontal_sum(v: __m256) -> f32 {
        let pair = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let quad = _mm_add_ps(pair, _mm_movehl_ps(pair, pair));
        let single = _mm_add_ss(quad, _mm_shuffle_ps(quad, quad, 1));
        _mm_cvtss_f32(single)
    }

    /// Eight f16 at `ptr` as f32.
    ///
    /// # Safety
    /// `ptr` must point at eight readable f16 values; F16C must be available.
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn load_f16(ptr: *const f16) -> __m256 {
        // SAFETY: the caller guarantees eight readable values (16 bytes); unaligned load.
        _mm256_cvtph_ps(unsafe { _mm_loadu_si128(ptr.cast::<__m128i>()) })
    }

    /// Eight bf16 at `ptr` as f32 (a bf16 is the high half of an f32).
    ///
    /// # Safety
    /// `ptr` must point at eight readable bf16 values; AVX2 must be available.
    #[target_feature(enable = "avx2")]
    unsafe fn load_bf16(ptr: *const bf16) -> __m256 {
        // SAFETY: the caller guarantees eight readable values (16 bytes); unaligned load.
        let halves = unsafe { _mm_loadu_si128(ptr.cast::<__m128i>()) };
        _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(halves), 16))
    }

    /// Eight i8 at `ptr` as f32.
    ///
    /// # Safety
    /// `ptr` must point at eight readable bytes; AVX2 must be available.
    #[target_feature(enable = "avx2")]
    unsafe fn load_i8(ptr: *const i8) -> __m256 {
        // SAFETY: the caller guarantees eight readable bytes; `_mm_loadl_epi64` reads exactly 8.
        let bytes = unsafe { _mm_loadl_epi64(ptr.cast::<__m128i>()) };
        _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes))
    }

    /// # Safety
    /// AVX2 and FMA must be available.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn dot_f32(w: &[f32], x: &[f32]) -> f32 {
        let mut acc = [_mm256_setzero_ps(); 4];
        let (w_chunks, x_chunks) = (w.chunks_exact(32), x.chunks_exact(32));
        let tail = portable::dot_f32(w_chunks.remainder(), x_chunks.remainder());
        for (w, x) in w_chunks.zip(x_chunks) {
            for (lane, acc) in acc.iter_mut().enumerate() {
                // SAFETY: both chunks hold 32 f32, so offsets 0, 8, 16, 24 (+8) are in bounds.
                let (wv, xv) = unsafe {
                    (
                        _mm256_loadu_ps(w.as_ptr().add(lane * 8)),
                        _mm256_loadu_ps(x.as_ptr().add(lane * 8)),
                    )
                };
                *acc = _mm256_fmadd_ps(wv, xv, *acc);
            }
        }
        let [a, b, c, d] = acc;
        horizontal_sum(_mm256_add_ps(_mm256_add_ps(a, b), _mm256_add_ps(c, d))) + tail
    }

    /// # Safety
    /// AVX2, FMA and F16C must be available.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot_f16(w: &[f16], x: &[f32]) -> f32 {
        let mut acc = [_mm256_setzero_ps(); 4];
        let (w_chunks, x_chunks) = (w.chunks_exact(32), x.chunks_exact(32));
        let tail = portable::dot(RowRef::F16(w_chunks.remainder()), x_chunks.remainder());
        for (w, x) in w_chunks.zip(x_chunks) {
            for (lane, acc) in acc.iter_mut().enumerate() {
                // SAFETY: both chunks hold 32 values, so offsets 0, 8, 16, 24 (+8) are in bounds.
                let (wv, xv) = unsafe {
                    (
                        load_f16(w.as_ptr().add(lane * 8)),
                        _mm256_loadu_ps(x.as_ptr().add(lane * 8)),
                    )
                };
                *acc = _mm256_fmadd_ps(wv, xv, *acc);
            }
        }
        let [a, b, c, d] = acc;
        horizontal_sum(_mm256_add_ps(_mm256_add_ps(a, b), _mm256_add_ps(c, d))) + tail
    }

    /// # Safety
    /// AVX2 and FMA must be available.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn dot_bf16(w: &[bf16], x: &[f32]) -> f32 {
        let mut acc = [_mm256_setzero_ps(); 4];
        let (w_chunks, x_chunks) = (w.chunks_exact(32), x.chunks_exact(32));
        let tail = portable::dot(RowRef::Bf16(w_chunks.remainder()), x_chunks.remainder());
        for (w, x) in w_chunks.zip(x_chunks) {
            for (lane, acc) in acc.iter_mut().enumerate() {
                // SAFETY: both chunks hold 32 values, so offsets 0, 8, 16, 24 (+8) are in bounds.
                let (wv, xv) = unsafe {
                    (
                        load_bf16(w.as_ptr().add(lane * 8)),
                        _mm256_loadu_ps(x.as_ptr().add(lane * 8)),
                    )
                };
                *acc = _mm256_fmadd_ps(wv, xv, *acc);
            }
        }
        let [a, b, c, d] = acc;
        horizontal_sum(_mm256_add_ps(_mm256_add_ps(a, b), _mm256_add_ps(c, d))) + tail
    }

    /// # Safety
    /// AVX2 and FMA must be available.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn dot_q8(values: &[i8], scales: &[f32], x: &[f32]) -> f32 {
        // Two running totals, alternating by block, so consecutive blocks do not wait on each
        // other's scale multiply.
        let mut totals = [_mm256_setzero_ps(); 2];
        let (q_chunks, x_chunks) = (values.chunks_exact(Q8_BLOCK), x.chunks_exact(Q8_BLOCK));
        let full_blocks = q_chunks.len();
        let tail = match scales.get(full_blocks) {
            Some(&scale) => {
                scale
                    * q_chunks
                        .remainder()
                        .iter()
                        .zip(x_chunks.remainder())
                        .map(|(&q, x)| f32::from(q) * x)
                        .sum::<f32>()
            }
            None => 0.0,
        };
        for (block, ((q, x), &scale)) in q_chunks.zip(x_chunks).zip(scales).enumerate() {
            let mut partial = [_mm256_setzero_ps(); 4];
            for (lane, partial) in partial.iter_mut().enumerate() {
                // SAFETY: both chunks hold Q8_BLOCK = 32 values, so offsets 0, 8, 16, 24 (+8)
                // are in bounds.
                let (qv, xv) = unsafe {
                    (
                        load_i8(q.as_ptr().add(lane * 8)),
                        _mm256_loadu_ps(x.as_ptr().add(lane * 8)),
                    )
                };
                *partial = _mm256_mul_ps(qv, xv);
            }
            let [a, b, c, d] = partial;
            let sum = _mm256_add_ps(_mm256_add_ps(a, b), _mm256_add_ps(c, d));
            if let Some(total) = totals.get_mut(block & 1) {
                *total = _mm256_fmadd_ps(sum, _mm256_set1_ps(scale), *total);
            }
        }
        let [a, b] = totals;
        horizontal_sum(_mm256_add_ps(a, b)) + tail
    }

    /// `dst[r] = row · x[r]` for every row `r` of `x` (`dst.len()` rows of `row.len()` values),
    /// four rows at a time so each weight load serves four products.
    ///
    /// # Safety
    /// AVX2 and FMA must be available.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn dot_rows_f32(row: &[f32], x: &[f32], dst: &mut [f32]) {
        let cols = row.len();
        if cols == 0 {
            dst.fill(0.0);
            return;
        }
        let group_len = cols * ROW_GROUP;
        let mut groups = x.chunks_exact(group_len);
        let mut dst_groups = dst.chunks_exact_mut(ROW_GROUP);
        for (group, dst) in (&mut groups).zip(&mut dst_groups) {
            let mut rows = group.chunks_exact(cols);
            let (Some(x0), Some(x1), Some(x2), Some(x3)) =
                (rows.next(), rows.next(), rows.next(), rows.next())
            else {
                continue;
            };
            let mut acc = [_mm256_setzero_ps(); 8];
            let w_chunks = row.chunks_exact(16);
            let tail_w = w_chunks.remainder();
            let done = cols - tail_w.len();
            for (index, w) in w_chunks.enumerate() {
                let at = index * 16;
                for half in 0..2 {
                    // SAFETY: `w` holds 16 values; every x row holds `cols` values and
                    // `at + half * 8 + 8 <= done <= cols`.
                    unsafe {
                        let wv = _mm256_loadu_ps(w.as_ptr().add(half * 8));
                        let offset = at + half * 8;
                        for (slot, x_row) in [x0, x1, x2, x3].iter().enumerate() {
                            let xv = _mm256_loadu_ps(x_row.as_ptr().add(offset));
                            if let Some(acc) = acc.get_mut(slot * 2 + half) {
                                *acc = _mm256_fmadd_ps(wv, xv, *acc);
                            }
                        }
                    }
                }
            }
            let sums = acc.chunks_exact(2).map(|pair| match pair {
                [a, b] => horizontal_sum(_mm256_add_ps(*a, *b)),
                _ => 0.0,
            });
            for ((out, x_row), sum) in dst.iter_mut().zip([x0, x1, x2, x3]).zip(sums) {
                *out = sum + portable::dot_f32(tail_w, x_row.get(done..).unwrap_or_default());
            }
        }
        let rest = groups.remainder();
        for (out, x_row) in dst_groups.into_remainder().iter_mut().zip(rest.chunks_exact(cols)) {
            // SAFETY: same features as this function.
            *out = unsafe { dot_f32(row, x_row) };
        }
    }

    /// # Safety
    /// AVX2 and F16C must be available.
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn decode_f16(w: &[f16], out: &mut [f32]) {
        let mut w_chunks = w.chunks_exact(8);
        let mut out_chunks = out.chunks_exact_mut(8);
        for (w, out) in (&mut w_chunks).zip(&mut out_chunks) {
            // SAFETY: both chunks hold 8 values.
            unsafe { _mm256_storeu_ps(out.as_mut_ptr(), load_f16(w.as_ptr())) };
        }
        portable::decode_row(
            RowRef::F16(w_chunks.remainder()),
            out_chunks.into_remainder(),
        );
    }

    /// # Safety
    /// AVX2 must be available.
    #[target_feature(enable = "avx2")]
    unsafe fn decode_bf16(w: &[bf16], out: &mut [f32]) {
        let mut w_chunks = w.chunks_exact(8);
        let mut out_chunks = out.chunks_exact_mut(8);
        for (w, out) in (&mut w_chunks).zip(&mut out_chunks) {
            // SAFETY: both chunks hold 8 values.
            unsafe { _mm256_storeu_ps(out.as_mut_ptr(), load_bf16(w.as_ptr())) };
        }
        portable::decode_row(
            RowRef::Bf16(w_chunks.remainder()),
            out_chunks.into_remainder(),
        );
    }
}
