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

use crate::quantized::{BlockFormat, dequantize};
use crate::quantized_dot::{
    InterleavedMatrix, QuantizedMatrix, dequantize_interleaved, interleaved_bytes, matmul_blocks,
    matmul_interleaved,
};
use crate::{KernelError, Result};

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
    /// A GGUF block format, row by row (see [`crate::quantized`]): multiplied as stored by
    /// [`crate::quantized_dot`].
    Blocks {
        /// The format.
        format: BlockFormat,
        /// The blocks.
        bytes: &'a [u8],
    },
    /// A 32-value GGUF block format with rows interleaved by groups of 16
    /// ([`crate::quantized_dot::interleave`]).
    Interleaved {
        /// The format (`Q4_0`, `Q4_1` or `Q8_0`).
        format: BlockFormat,
        /// The segments.
        bytes: &'a [u8],
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
            MatrixData::Blocks { format, bytes } => {
                format
                    .bytes_for(self.cols)
                    .and_then(|row| row.checked_mul(self.rows))
                    == Some(bytes.len())
            }
            MatrixData::Interleaved { format, bytes } => {
                interleaved_bytes(format, self.rows, self.cols) == Some(bytes.len())
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
            // Block formats are read whole (see `matmul_transposed`, `decode_matrix`).
            MatrixData::Blocks { .. } | MatrixData::Interleaved { .. } => return None,
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
            // Round half away from zero (as `f32::round`) by adding ±0.5 and truncating, which
            // compiles to vector code instead of a `roundf` call per value; `as` saturates and
            // maps NaN to 0, and the value is within ±127 by construction.
            values.extend(block.iter().map(|w| {
                let scaled = (w * inverse).clamp(-127.0, 127.0);
                (scaled + 0.5f32.copysign(scaled)) as i8
            }));
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
    if let MatrixData::Blocks { format, bytes } = weights.data {
        let matrix = QuantizedMatrix {
            format,
            bytes,
            rows: outs,
            cols,
        };
        return matmul_blocks(matrix, x, rows, out);
    }
    if let MatrixData::Interleaved { format, bytes } = weights.data {
        let matrix = InterleavedMatrix {
            format,
            bytes,
            rows: outs,
            cols,
        };
        return matmul_interleaved(matrix, x, rows, out);
    }
    let simd = Simd::detect();
    let tasks = rayon::current_num_threads().max(1) * 4;
    let chunk = outs.div_ceil(tasks).max(8);
    if rows == 1 {
        // 8-bit weights meet 8-bit activations (quantized once here, per block of 32) in an
        // integer dot product; everything else reads `x` as f32.
        let quantized_x = match (simd, weights.data) {
            (Simd::Avx2, MatrixData::Q8 { .. }) if cols.is_multiple_of(Q8_BLOCK) => {
                Some(quantize_q8(x, 1, cols)?)
            }
            _ => None,
        };
        out.par_chunks_mut(chunk)
            .enumerate()
            .for_each(|(task, dst)| {
                for (offset, y) in dst.iter_mut().enumerate() {
                    let Some(row) = weights.row(task * chunk + offset) else {
                        continue;
                    };
                    *y = match (&quantized_x, row) {
                        #[cfg(target_arch = "x86_64")]
                        (Some((x_values, x_scales)), RowRef::Q8 { values, scales }) => {
                            avx2::dot_q8_q8(values, scales, x_values, x_scales)
                        }
                        _ => dot(simd, row, x),
                    };
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

/// Expands the whole matrix to f32 in `out` (`[rows, cols]`), split over the thread pool: for
/// products with many rows, which then run as one f32 GEMM.
pub fn decode_matrix(weights: MatrixRef<'_>, out: &mut [f32]) -> Result<()> {
    if !weights.is_consistent() || weights.rows.checked_mul(weights.cols) != Some(out.len()) {
        return Err(shape_error(format!(
            "cannot expand a [{}, {}] matrix into {} values",
            weights.rows,
            weights.cols,
            out.len()
        )));
    }
    if weights.cols == 0 {
        return Ok(());
    }
    if let MatrixData::Blocks { format, bytes } = weights.data {
        let row_bytes = format.bytes_for(weights.cols).unwrap_or(0);
        return out
            .par_chunks_mut(weights.cols)
            .zip(bytes.par_chunks(row_bytes.max(1)))
            .try_for_each(|(dst, row)| dequantize(format, row, dst));
    }
    if let MatrixData::Interleaved { format, bytes } = weights.data {
        let matrix = InterleavedMatrix {
            format,
            bytes,
            rows: weights.rows,
            cols: weights.cols,
        };
        return dequantize_interleaved(matrix, out);
    }
    let simd = Simd::detect();
    out.par_chunks_mut(weights.cols)
        .enumerate()
        .for_each(|(index, dst)| {
            if let Some(row) = weights.row(index) {
                decode_row(simd, row, dst);
            }
        });
    Ok(())
}

fn shape_error(reason: String) -> KernelError {
    KernelError {
        kernel: "few-row matmul",
        reason,
    }
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
                    scale * q.iter().zip(x).map(|(&q, x)| f32::from(q) * x).sum::<f32>()
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

    /// 8-bit weights against 8-bit activations, both in blocks of [`Q8_BLOCK`] with their
    /// scales (every block full). Only called when AVX2 and FMA were detected.
    pub(super) fn dot_q8_q8(
        w_values: &[i8],
        w_scales: &[f32],
        x_values: &[i8],
        x_scales: &[f32],
    ) -> f32 {
        // SAFETY: the caller (`super::matmul_transposed`) checked AVX2 and FMA at run time.
        unsafe { dot_q8_q8_impl(w_values, w_scales, x_values, x_scales) }
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
        // (Used only for rows whose width is not a multiple of the block; the full-block case
        // takes the integer product.)
        let mut total = _mm256_setzero_ps();
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
        for ((q, x), &scale) in q_chunks.zip(x_chunks).zip(scales) {
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
            total = _mm256_fmadd_ps(sum, _mm256_set1_ps(scale), total);
        }
        horizontal_sum(total) + tail
    }

    /// The eight partial sums (as f32) of one block's 32 products `w[i] · x[i]`.
    ///
    /// # Safety
    /// `w` and `x` must each point at 32 readable bytes; AVX2 must be available.
    #[target_feature(enable = "avx2")]
    unsafe fn block_dot(w: *const i8, x: *const i8) -> __m256 {
        // SAFETY: the caller guarantees 32 readable bytes behind each pointer (unaligned loads).
        let (wv, xv) = unsafe {
            (
                _mm256_loadu_si256(w.cast::<__m256i>()),
                _mm256_loadu_si256(x.cast::<__m256i>()),
            )
        };
        // |w| (unsigned) times x with w's sign: the same products, in the operand types
        // `maddubs` takes. |q| ≤ 127, so a pair sum (≤ 32258) never saturates an i16.
        let pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(xv, wv));
        _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
    }

    /// # Safety
    /// AVX2 and FMA must be available.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn dot_q8_q8_impl(
        w_values: &[i8],
        w_scales: &[f32],
        x_values: &[i8],
        x_scales: &[f32],
    ) -> f32 {
        // Four blocks per iteration into four totals (named, so they stay in registers), so
        // consecutive blocks do not wait on each other's multiply-add.
        const GROUP: usize = 4 * Q8_BLOCK;
        let mut totals = [_mm256_setzero_ps(); 4];
        let (w_groups, x_groups) = (w_values.chunks_exact(GROUP), x_values.chunks_exact(GROUP));
        let (w_rest, x_rest) = (w_groups.remainder(), x_groups.remainder());
        let (ws_groups, xs_groups) = (w_scales.chunks_exact(4), x_scales.chunks_exact(4));
        let (ws_rest, xs_rest) = (ws_groups.remainder(), xs_groups.remainder());
        for (((w, x), ws), xs) in w_groups.zip(x_groups).zip(ws_groups).zip(xs_groups) {
            for (block, total) in totals.iter_mut().enumerate() {
                let at = block * Q8_BLOCK;
                // SAFETY: `w` and `x` hold 4 · Q8_BLOCK bytes, so `at + 32 <= GROUP`.
                let sums = unsafe { block_dot(w.as_ptr().add(at), x.as_ptr().add(at)) };
                let scale =
                    ws.get(block).copied().unwrap_or(0.0) * xs.get(block).copied().unwrap_or(0.0);
                *total = _mm256_fmadd_ps(sums, _mm256_set1_ps(scale), *total);
            }
        }
        let rest = w_rest
            .chunks_exact(Q8_BLOCK)
            .zip(x_rest.chunks_exact(Q8_BLOCK))
            .zip(ws_rest.iter().zip(xs_rest));
        for ((w, x), (w_scale, x_scale)) in rest {
            // SAFETY: both chunks hold Q8_BLOCK bytes.
            let sums = unsafe { block_dot(w.as_ptr(), x.as_ptr()) };
            let [total, ..] = &mut totals;
            *total = _mm256_fmadd_ps(sums, _mm256_set1_ps(w_scale * x_scale), *total);
        }
        let [a, b, c, d] = totals;
        horizontal_sum(_mm256_add_ps(_mm256_add_ps(a, b), _mm256_add_ps(c, d)))
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
        for (out, x_row) in dst_groups
            .into_remainder()
            .iter_mut()
            .zip(rest.chunks_exact(cols))
        {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    /// Deterministic values in [-1, 1) (a 64-bit LCG), with a few larger outliers.
    fn random(count: usize, seed: u64) -> Vec<f32> {
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..count)
            .map(|i| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let unit = ((state >> 40) as f32) / ((1u64 << 24) as f32) * 2.0 - 1.0;
                if i % 97 == 0 { unit * 8.0 } else { unit }
            })
            .collect()
    }

    /// The plain product in f64 with `weight(o, i)` as the weights, and `Σ |w x|` per output
    /// (the scale relative errors are measured against).
    fn reference(
        weight: impl Fn(usize, usize) -> f32,
        x: &[f32],
        rows: usize,
        outs: usize,
        cols: usize,
    ) -> (Vec<f64>, Vec<f64>) {
        let mut exact = Vec::new();
        let mut magnitude = Vec::new();
        for r in 0..rows {
            for o in 0..outs {
                let (mut sum, mut abs) = (0.0f64, 0.0f64);
                for i in 0..cols {
                    let product = f64::from(weight(o, i)) * f64::from(x[r * cols + i]);
                    sum += product;
                    abs += product.abs();
                }
                exact.push(sum);
                magnitude.push(abs);
            }
        }
        (exact, magnitude)
    }

    /// The largest `|got - exact| / Σ|w x|`.
    fn worst_relative_error(got: &[f32], exact: &[f64], magnitude: &[f64]) -> f64 {
        assert_eq!(got.len(), exact.len());
        got.iter()
            .zip(exact)
            .zip(magnitude)
            .map(|((&g, &e), &m)| (f64::from(g) - e).abs() / m.max(1e-30))
            .fold(0.0, f64::max)
    }

    /// The value a storage holds at `(out, in)`.
    type StoredWeight<'a> = Box<dyn Fn(usize, usize) -> f32 + 'a>;

    fn storage_name(data: MatrixData<'_>) -> &'static str {
        match data {
            MatrixData::F32(_) => "f32",
            MatrixData::F16(_) => "f16",
            MatrixData::Bf16(_) => "bf16",
            MatrixData::Q8 { .. } => "q8",
            MatrixData::Blocks { format, .. } | MatrixData::Interleaved { format, .. } => {
                format.name()
            }
        }
    }

    const SHAPES: &[(usize, usize)] = &[(50, 768), (129, 96), (17, 37), (8, 3), (33, 64)];
    const ROWS: &[usize] = &[1, 2, 3, 4, 5, 7, 9, 17];

    fn run(weights: MatrixRef<'_>, x: &[f32], rows: usize) -> Vec<f32> {
        let mut out = vec![0.0f32; rows * weights.rows];
        matmul_transposed(weights, x, rows, &mut out).unwrap();
        out
    }

    /// Every storage, every row count, SIMD (when present) and portable paths: within 1e-5 of
    /// the f64 product of the *stored* weights, relative to `Σ|w x|` (f32 rounding only).
    #[test]
    fn few_row_products_match_the_plain_product() {
        for &(outs, cols) in SHAPES {
            let w = random(outs * cols, outs as u64 * 31 + cols as u64);
            let w16: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
            let wb16: Vec<bf16> = w.iter().map(|&v| bf16::from_f32(v)).collect();
            let (q, scales) = quantize_q8(&w, outs, cols).unwrap();
            let blocks = cols.div_ceil(Q8_BLOCK);
            for &rows in ROWS {
                let x = random(rows * cols, rows as u64 + 7);
                let cases: [(MatrixData<'_>, StoredWeight<'_>); 4] = [
                    (MatrixData::F32(&w), Box::new(|o, i| w[o * cols + i])),
                    (
                        MatrixData::F16(&w16),
                        Box::new(|o, i| w16[o * cols + i].to_f32()),
                    ),
                    (
                        MatrixData::Bf16(&wb16),
                        Box::new(|o, i| wb16[o * cols + i].to_f32()),
                    ),
                    (
                        MatrixData::Q8 {
                            values: &q,
                            scales: &scales,
                        },
                        Box::new(|o, i| {
                            scales[o * blocks + i / Q8_BLOCK] * f32::from(q[o * cols + i])
                        }),
                    ),
                ];
                for (data, weight) in cases {
                    let matrix = MatrixRef {
                        data,
                        rows: outs,
                        cols,
                    };
                    let (exact, magnitude) = reference(weight, &x, rows, outs, cols);
                    let got = run(matrix, &x, rows);
                    let error = worst_relative_error(&got, &exact, &magnitude);
                    // One row of 8-bit weights (full blocks, AVX2) also quantizes the
                    // activations per block: |Δx| ≤ scale/2 = max|x|/254 per element, a
                    // relative error below 1/254 ≈ 0.4 % of Σ|w x| times max|x|/|x|; measured
                    // well under 1 %.
                    let integer_path = rows == 1
                        && matches!(data, MatrixData::Q8 { .. })
                        && cols % Q8_BLOCK == 0
                        && Simd::detect() == Simd::Avx2;
                    let limit = if integer_path { 1e-2 } else { 1e-5 };
                    assert!(
                        error < limit,
                        "{} [{outs}x{cols}] rows {rows}: relative error {error:e}",
                        storage_name(data)
                    );
                    // The portable loops, whatever this CPU has.
                    for r in 0..rows {
                        for o in 0..outs {
                            let row = matrix.row(o).unwrap();
                            let portable = portable::dot(row, &x[r * cols..(r + 1) * cols]);
                            let index = r * outs + o;
                            let e = (f64::from(portable) - exact[index]).abs() / magnitude[index];
                            assert!(e < 1e-5, "portable [{outs}x{cols}] {o}: {e:e}");
                        }
                    }
                }
            }
        }
    }

    /// Measured relative errors against the f32 weights themselves, by storage (printed with
    /// `--nocapture`); bounded by the formats' rounding: f16 2⁻¹¹, bf16 2⁻⁸, q8 1/254 of the
    /// block maximum.
    #[test]
    fn storage_rounding_stays_within_the_formats_precision() {
        let (outs, cols) = (64, 768);
        let w = random(outs * cols, 3);
        let x = random(cols, 4);
        let (exact, magnitude) = reference(|o, i| w[o * cols + i], &x, 1, outs, cols);
        let w16: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
        let wb16: Vec<bf16> = w.iter().map(|&v| bf16::from_f32(v)).collect();
        let (q, scales) = quantize_q8(&w, outs, cols).unwrap();
        for (name, data, limit) in [
            ("f16", MatrixData::F16(&w16), 1.0 / 2048.0),
            ("bf16", MatrixData::Bf16(&wb16), 1.0 / 256.0),
            (
                "q8",
                MatrixData::Q8 {
                    values: &q,
                    scales: &scales,
                },
                2.0 / 254.0,
            ),
        ] {
            let got = run(
                MatrixRef {
                    data,
                    rows: outs,
                    cols,
                },
                &x,
                1,
            );
            let error = worst_relative_error(&got, &exact, &magnitude);
            println!("{name}: worst |Δy| / Σ|w x| = {error:.2e}");
            assert!(error < limit, "{name}: {error:e} ≥ {limit:e}");
        }
    }

    #[test]
    fn quantized_weights_are_within_half_a_step() {
        let (rows, cols) = (5, 70); // a partial last block
        let w = random(rows * cols, 9);
        let (q, scales) = quantize_q8(&w, rows, cols).unwrap();
        let blocks = cols.div_ceil(Q8_BLOCK);
        assert_eq!(scales.len(), rows * blocks);
        for o in 0..rows {
            for i in 0..cols {
                let scale = scales[o * blocks + i / Q8_BLOCK];
                let back = scale * f32::from(q[o * cols + i]);
                assert!((back - w[o * cols + i]).abs() <= scale * 0.5 + 1e-7);
            }
        }
        // A block of zeros has scale 0 and values 0.
        let (q, scales) = quantize_q8(&[0.0; 32], 1, 32).unwrap();
        assert_eq!(scales, vec![0.0]);
        assert!(q.iter().all(|&v| v == 0));
    }

    #[test]
    fn shape_mismatches_are_errors() {
        let w = vec![0.0f32; 6];
        let matrix = MatrixRef {
            data: MatrixData::F32(&w),
            rows: 2,
            cols: 3,
        };
        let mut out = vec![0.0f32; 2];
        assert!(matmul_transposed(matrix, &[0.0; 4], 1, &mut out).is_err());
        assert!(matmul_transposed(matrix, &[0.0; 3], 1, &mut [0.0; 3]).is_err());
        let bad = MatrixRef {
            data: MatrixData::F32(&w),
            rows: 4,
            cols: 3,
        };
        assert!(matmul_transposed(bad, &[0.0; 3], 1, &mut [0.0; 4]).is_err());
        assert!(quantize_q8(&w, 4, 3).is_err());
    }
}
