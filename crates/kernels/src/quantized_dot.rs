//! `x·Wᵀ` with `W` in a GGUF block format ([`BlockFormat`]), read as it is stored: no widening
//! of the weights to f32. Each block of weights meets quantized activations as integers, and
//! only the per-block sums are scaled in f32. [`matmul_blocks`] (the row-major layout GGUF
//! stores) and [`matmul_interleaved`] (the layout the models keep `Q4_0`, `Q4_1` and `Q8_0`
//! in) are what the layers call:
//! - `interleaved`: `Q4_0`/`Q4_1`/`Q8_0` with 16 rows interleaved, so a register's lanes are
//!   16 output columns; 16-bit activations ([`Q16Rows`]) through `vpdpwssd` (AVX-512 VNNI) or
//!   `madd` (AVX2), or value by value.
//! - every other format (the K-quants, `Q5_0`, `Q5_1`; and the 32-value ones row by row, as
//!   GGUF stores them): the activations quantized to 8-bit blocks twice over (the row, then what that left out:
//!   [`Q8Rows::quantize_with_residual`]), for about 15 bits, through `maddubs` (AVX2). An
//!   AVX-512 VNNI row kernel with 16-bit activations for them was tried and was slower (Q4_K
//!   576×1536, one row: 3.8 against 6.6 GFLOP/s), so there is none.
//!
//! Every format is read as `value = scale · u - minimum` per sub-block of 16 or 32 values, with
//! `u` a small unsigned integer (`Q8_0`: a signed one). So with activations `a = d_a · q_a`,
//! one sub-block contributes `scale · d_a · Σ u·q_a - minimum · d_a · Σ q_a`: an integer dot
//! product and the activation block's precomputed sum. The 8-bit AVX2 path unpacks `u` for 32
//! values into one register and multiplies with `maddubs` (unsigned × signed bytes); the
//! portable path does the same arithmetic value by value. All are tested against
//! dequantize-then-f32.

use rayon::prelude::*;

mod interleaved;
mod small_blocks;

pub use interleaved::{
    GROUP, InterleavedMatrix, dequantize_all as dequantize_interleaved,
    dequantize_row as dequantize_interleaved_row, interleave, interleave_in_place,
    interleaved_bytes, is_interleavable, matmul_interleaved,
};
pub use small_blocks::Q16Rows;

/// [`crate::quantized::dequantize`] of a 32-value format in registers, when this CPU can;
/// `false` otherwise (the caller then dequantizes value by value).
pub(crate) fn dequantize_in_registers(format: BlockFormat, bytes: &[u8], out: &mut [f32]) -> bool {
    small_blocks::dequantize(format, bytes, out)
}

use crate::quantized::{BlockFormat, byte, half_at, scale_min_k4};
use crate::{KernelError, Result};

/// Activation values per 8-bit block.
const BLOCK: usize = 32;

/// Rows of activations quantized to 8-bit blocks of 32: `a ≈ scale · q`.
#[derive(Debug, Clone, Default)]
pub struct Q8Rows {
    values: Vec<i8>,
    scales: Vec<f32>,
    /// `scale · Σ q` of each half block (16 values).
    half_sums: Vec<f32>,
    cols: usize,
}

impl Q8Rows {
    /// Quantizes `rows` rows of `cols` values (`cols` a multiple of 32): per block of 32, the
    /// scale is `max |a| / 127` and `q = round(a / scale)`.
    pub fn quantize(input: &[f32], rows: usize, cols: usize) -> Result<Q8Rows> {
        if !cols.is_multiple_of(BLOCK) || input.len() != rows * cols {
            return Err(KernelError {
                kernel: "Q8Rows::quantize",
                reason: format!("{} values for {rows} rows of {cols}", input.len()),
            });
        }
        let blocks = input.len() / BLOCK;
        let mut quantized = Q8Rows {
            values: Vec::with_capacity(input.len()),
            scales: Vec::with_capacity(blocks),
            half_sums: Vec::with_capacity(2 * blocks),
            cols,
        };
        for block in input.chunks_exact(BLOCK) {
            let max = block.iter().fold(0.0f32, |max, value| max.max(value.abs()));
            let scale = max / 127.0;
            let inverse = if scale > 0.0 { 1.0 / scale } else { 0.0 };
            for half in block.chunks_exact(BLOCK / 2) {
                let mut sum = 0i32;
                for value in half {
                    let q = (value * inverse).round().clamp(-127.0, 127.0) as i8;
                    sum += i32::from(q);
                    quantized.values.push(q);
                }
                quantized.half_sums.push(scale * sum as f32);
            }
            quantized.scales.push(scale);
        }
        Ok(quantized)
    }

    /// Quantizes each of `rows` rows twice over, as two rows of the result: the row itself
    /// ([`Q8Rows::quantize`]), then what that quantization left out (`a - scale · q`, at most
    /// half a step per value) quantized the same way. The two rows' products add up to the
    /// product with `a` to about 15 bits instead of 8, for one extra activation row per pass
    /// over the weights (see [`matmul_blocks`]).
    pub fn quantize_with_residual(input: &[f32], rows: usize, cols: usize) -> Result<Q8Rows> {
        let coarse = Q8Rows::quantize(input, rows, cols)?;
        let mut stacked = Vec::with_capacity(2 * input.len());
        for (row, coarse_row) in input
            .chunks_exact(cols.max(1))
            .zip(coarse.dequantized().chunks_exact(cols.max(1)))
        {
            stacked.extend_from_slice(row);
            stacked.extend(row.iter().zip(coarse_row).map(|(a, q)| a - q));
        }
        // Each coarse row quantizes exactly as it did alone (blocks are independent).
        Q8Rows::quantize(&stacked, 2 * rows, cols)
    }

    /// Rows held.
    pub fn rows(&self) -> usize {
        self.values.len().checked_div(self.cols).unwrap_or(0)
    }

    /// The dequantized values (what the kernels multiply), for tests and references.
    pub fn dequantized(&self) -> Vec<f32> {
        self.values
            .chunks_exact(BLOCK)
            .zip(&self.scales)
            .flat_map(|(block, scale)| block.iter().map(move |&q| f32::from(q) * scale))
            .collect()
    }
}

/// A `[rows, cols]` weight matrix stored row by row in blocks of `format`.
#[derive(Debug, Clone, Copy)]
pub struct QuantizedMatrix<'a> {
    /// The block format.
    pub format: BlockFormat,
    /// The blocks, `rows · cols / block_values` of them.
    pub bytes: &'a [u8],
    /// Output features.
    pub rows: usize,
    /// Input features (a multiple of the block size).
    pub cols: usize,
}

impl QuantizedMatrix<'_> {
    /// Bytes per row, or an error when the shape does not match the bytes.
    fn row_bytes(&self) -> Result<usize> {
        let row_bytes = self.format.bytes_for(self.cols);
        match row_bytes.and_then(|bytes| bytes.checked_mul(self.rows)) {
            Some(total) if total == self.bytes.len() => Ok(row_bytes.unwrap_or(0)),
            _ => Err(KernelError {
                kernel: "QuantizedMatrix",
                reason: format!(
                    "{} bytes for {} × {} values of {}",
                    self.bytes.len(),
                    self.rows,
                    self.cols,
                    self.format.name()
                ),
            }),
        }
    }
}

/// Output columns below which a product stays on the calling thread.
const MIN_COLUMNS_TO_SPLIT: usize = 64;

/// Output columns per parallel task at least.
const MIN_COLUMNS_PER_TASK: usize = 16;

/// Parallel tasks per thread a product is cut into: enough to even out the threads, few
/// enough that a wide matrix (an LM head of 49152 columns) is not thousands of tasks.
const TASKS_PER_THREAD: usize = 16;

/// `out[r, o] = Σ_k x[r, k] · W[o, k]` for the quantized activations `x` (`[rows, cols]`) and
/// `weights` (`[out, cols]`), `out` `[rows, out]`. Split over the calling rayon pool by output
/// columns.
pub fn matmul_quantized(
    weights: QuantizedMatrix<'_>,
    input: &Q8Rows,
    out: &mut [f32],
) -> Result<()> {
    let row_bytes = weights.row_bytes()?;
    let rows = input.rows();
    if input.cols != weights.cols || out.len() != rows * weights.rows {
        return Err(KernelError {
            kernel: "matmul_quantized",
            reason: format!(
                "{rows} rows of {} inputs for {} × {} weights into {} outputs",
                input.cols,
                weights.rows,
                weights.cols,
                out.len()
            ),
        });
    }
    if rows == 0 || weights.rows == 0 {
        return Ok(());
    }
    by_output_columns(weights, row_bytes, rows, out, |bytes, sums| {
        for (row, sums) in bytes
            .chunks_exact(row_bytes.max(1))
            .zip(sums.chunks_mut(rows))
        {
            dot_rows(weights.format, row, input, sums);
        }
    })
}

/// Runs `dot(weight rows' bytes, sums)` over runs of output columns (whole multiples of
/// [`MIN_COLUMNS_PER_TASK`], about [`TASKS_PER_THREAD`] runs per thread),
/// split over the calling rayon pool from [`MIN_COLUMNS_TO_SPLIT`] columns, `sums` holding
/// `[columns, rows]` (output-major); then writes them into `out` (`[rows, out]`).
fn by_output_columns(
    weights: QuantizedMatrix<'_>,
    row_bytes: usize,
    rows: usize,
    out: &mut [f32],
    dot: impl Fn(&[u8], &mut [f32]) + Sync,
) -> Result<()> {
    if rows == 0 || weights.rows == 0 {
        return Ok(());
    }
    let threads = rayon::current_num_threads().max(1);
    let columns_per_task = weights
        .rows
        .div_ceil(threads * TASKS_PER_THREAD)
        .next_multiple_of(MIN_COLUMNS_PER_TASK);
    let task = |(t, sums): (usize, &mut [f32])| {
        let first = t * columns_per_task;
        let count = sums.len() / rows;
        let bytes = weights
            .bytes
            .get(first * row_bytes..(first + count) * row_bytes)
            .unwrap_or_default();
        dot(bytes, sums);
    };
    // One row: output-major is the output itself.
    let mut by_column = if rows == 1 {
        Vec::new()
    } else {
        vec![0.0f32; out.len()]
    };
    let target = if rows == 1 {
        &mut *out
    } else {
        &mut by_column[..]
    };
    if weights.rows >= MIN_COLUMNS_TO_SPLIT && threads > 1 {
        target
            .par_chunks_mut(rows * columns_per_task)
            .enumerate()
            .for_each(task);
    } else {
        target
            .chunks_mut(rows * columns_per_task)
            .enumerate()
            .for_each(task);
    }
    if rows > 1 {
        for (o, sums) in by_column.chunks_exact(rows).enumerate() {
            for (r, sum) in sums.iter().enumerate() {
                if let Some(slot) = out.get_mut(r * weights.rows + o) {
                    *slot = *sum;
                }
            }
        }
    }
    Ok(())
}

/// `out = x · Wᵀ` for f32 activations `x` (`[rows, cols]`) and row-major blocks: the product
/// the layers take for the formats they do not interleave ([`matmul_interleaved`] serves
/// `Q4_0`, `Q4_1` and `Q8_0`).
///
/// Activations are quantized finer than llama.cpp's 8 bits: on SmolLM2-135M Q4_1, 8-bit
/// activations move the logits by up to 1.5 from the same weights in f32, and greedy decoding
/// leaves the f32 run's tokens within a few steps on 4 of 5 prompts. Here each row is
/// quantized to 8-bit blocks plus their residual ([`Q8Rows::quantize_with_residual`]), about
/// 15 bits, and the two products are added.
pub fn matmul_blocks(
    weights: QuantizedMatrix<'_>,
    input: &[f32],
    rows: usize,
    out: &mut [f32],
) -> Result<()> {
    weights.row_bytes()?;
    let quantized = Q8Rows::quantize_with_residual(input, rows, weights.cols)?;
    let mut both = vec![0.0f32; 2 * out.len()];
    matmul_quantized(weights, &quantized, &mut both)?;
    let width = weights.rows.max(1);
    for (row, pair) in out
        .chunks_exact_mut(width)
        .zip(both.chunks_exact(2 * width))
    {
        let (coarse, residual) = pair.split_at(width);
        for ((y, c), r) in row.iter_mut().zip(coarse).zip(residual) {
            *y = c + r;
        }
    }
    Ok(())
}

/// One weight row (its blocks) against every activation row: `sums[r]`.
fn dot_rows(format: BlockFormat, row: &[u8], input: &Q8Rows, sums: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::has_avx2_fma() && std::is_x86_feature_detected!("f16c") {
        // SAFETY: the CPU has AVX2, FMA and F16C (checked just above).
        unsafe { dot_rows_avx2(format, row, input, sums) };
        return;
    }
    dot_rows_portable(format, row, input, sums);
}

/// Per sub-block of one weight block, its scale and minimum.
#[derive(Clone, Copy)]
struct BlockScales {
    /// `(scale, minimum)` of each sub-block.
    subs: [(f32, f32); 16],
    /// Values per sub-block.
    sub_len: usize,
}

impl BlockScales {
    fn scale(&self, sub: usize) -> f32 {
        self.subs.get(sub).map_or(0.0, |sub| sub.0)
    }

    fn minimum(&self, sub: usize) -> f32 {
        self.subs.get(sub).map_or(0.0, |sub| sub.1)
    }

    /// The sub-blocks that values `32c..32c + 16` and `32c + 16..32c + 32` fall in.
    fn chunk_subs(&self, c: usize) -> (usize, usize) {
        if self.sub_len == 16 {
            (2 * c, 2 * c + 1)
        } else {
            (c, c)
        }
    }
}

/// One weight block read as `scale · u - minimum`: `u` per value and the sub-blocks' scales.
struct Unpacked {
    /// `u` of every value (signed for `Q8_0`).
    u: [i16; 256],
    scales: BlockScales,
}

/// Reads one block as `scale · u - minimum` per sub-block (the same values as
/// [`crate::quantized::dequantize`]).
fn unpack(format: BlockFormat, block: &[u8]) -> Unpacked {
    let mut unpacked = Unpacked {
        u: [0; 256],
        scales: block_scales(format, block),
    };
    let values = format.block_values();
    let mut integer_values = [0.0f32; 256];
    let integer_values = integer_values.get_mut(..values).unwrap_or_default();
    integers(format, block, integer_values);
    for (u, value) in unpacked.u.iter_mut().zip(integer_values.iter()) {
        *u = *value as i16;
    }
    unpacked
}

/// The sub-blocks' scales and minimums of one block.
fn block_scales(format: BlockFormat, block: &[u8]) -> BlockScales {
    let mut unpacked = BlockScales {
        subs: [(0.0, 0.0); 16],
        sub_len: 32,
    };
    let d = |at: usize| half_at(block, at);
    match format {
        BlockFormat::Q4_0 | BlockFormat::Q5_0 | BlockFormat::Q8_0 => {
            let offset = match format {
                BlockFormat::Q4_0 => 8.0,
                BlockFormat::Q5_0 => 16.0,
                _ => 0.0,
            };
            unpacked.subs[0] = (d(0), d(0) * offset);
        }
        BlockFormat::Q4_1 | BlockFormat::Q5_1 => unpacked.subs[0] = (d(0), -d(2)),
        BlockFormat::Q2K => {
            unpacked.sub_len = 16;
            for (s, sub) in unpacked.subs.iter_mut().enumerate() {
                let scale = byte(block, s);
                *sub = (
                    d(80) * f32::from(scale & 0x0F),
                    d(82) * f32::from(scale >> 4),
                );
            }
        }
        BlockFormat::Q3K => {
            unpacked.sub_len = 16;
            for (s, sub) in unpacked.subs.iter_mut().enumerate() {
                let low = (byte(block, 96 + s % 8) >> (4 * (s / 8))) & 0x0F;
                let high = (byte(block, 104 + s % 4) >> (2 * (s / 4))) & 0x03;
                let scale = d(108) * f32::from(i16::from(low | (high << 4)) - 32);
                // u = q + 4, from 0 to 7.
                *sub = (scale, 4.0 * scale);
            }
        }
        BlockFormat::Q4K | BlockFormat::Q5K => {
            let scales = block.get(4..16).unwrap_or_default();
            for (s, sub) in unpacked.subs.iter_mut().take(8).enumerate() {
                let (scale, minimum) = scale_min_k4(scales, s);
                *sub = (d(0) * f32::from(scale), d(2) * f32::from(minimum));
            }
        }
        BlockFormat::Q6K => {
            unpacked.sub_len = 16;
            for (s, sub) in unpacked.subs.iter_mut().enumerate() {
                let scale = d(208) * f32::from(byte(block, 192 + s) as i8);
                *sub = (scale, 32.0 * scale);
            }
        }
    }
    unpacked
}

/// The integers `u` of one block, as f32 (exact: they are below 256 in magnitude).
fn integers(format: BlockFormat, block: &[u8], out: &mut [f32]) {
    for (e, value) in out.iter_mut().enumerate() {
        let u: i16 = match format {
            BlockFormat::Q4_0 | BlockFormat::Q4_1 | BlockFormat::Q5_0 | BlockFormat::Q5_1 => {
                let (qh, qs) = match format {
                    BlockFormat::Q4_0 => (None, 2),
                    BlockFormat::Q4_1 => (None, 4),
                    BlockFormat::Q5_0 => (Some(2), 6),
                    _ => (Some(4), 8),
                };
                let packed = byte(block, qs + e % 16);
                let nibble = if e < 16 { packed & 0x0F } else { packed >> 4 };
                let fifth = qh.map_or(0, |at| (byte(block, at + e / 8) >> (e % 8)) & 1);
                i16::from(nibble | (fifth << 4))
            }
            BlockFormat::Q8_0 => i16::from(byte(block, 2 + e) as i8),
            BlockFormat::Q2K => {
                let (half, j, l) = (e / 128, (e % 128) / 32, e % 32);
                i16::from((byte(block, 16 + 32 * half + l) >> (2 * j)) & 3)
            }
            BlockFormat::Q3K => {
                let (half, j, l) = (e / 128, (e % 128) / 32, e % 32);
                let low = i16::from((byte(block, 32 + 32 * half + l) >> (2 * j)) & 3);
                let high = i16::from((byte(block, l) >> (e / 32)) & 1);
                low + 4 * high
            }
            BlockFormat::Q4K | BlockFormat::Q5K => {
                let (sub, l) = (e / 32, e % 32);
                let qs = if format == BlockFormat::Q5K { 48 } else { 16 };
                let nibble = (byte(block, qs + 32 * (sub / 2) + l) >> (4 * (sub % 2))) & 0x0F;
                let fifth = if format == BlockFormat::Q5K {
                    (byte(block, 16 + l) >> sub) & 1
                } else {
                    0
                };
                i16::from(nibble | (fifth << 4))
            }
            BlockFormat::Q6K => {
                let (half, r) = (e / 128, e % 128);
                let low = (byte(block, 64 * half + r % 64) >> (4 * (r / 64))) & 0x0F;
                let high = (byte(block, 128 + 32 * half + r % 32) >> (2 * (r / 32))) & 0x03;
                i16::from(low | (high << 4))
            }
        };
        *value = f32::from(u);
    }
}

/// The plain path: per block, per activation row, per sub-block: `scale · d_a · Σ u·q -
/// minimum · d_a · Σ q`.
fn dot_rows_portable(format: BlockFormat, row: &[u8], input: &Q8Rows, sums: &mut [f32]) {
    let values = format.block_values();
    sums.fill(0.0);
    for (b, block) in row.chunks_exact(format.block_bytes()).enumerate() {
        let unpacked = unpack(format, block);
        for (r, sum) in sums.iter_mut().enumerate() {
            let first = r * input.cols + b * values;
            let scales = &unpacked.scales;
            for (s, &(scale, minimum)) in
                scales.subs.iter().enumerate().take(values / scales.sub_len)
            {
                let start = s * scales.sub_len;
                let at = first + start;
                let activation_scale = input.scales.get(at / BLOCK).copied().unwrap_or(0.0);
                let q = input
                    .values
                    .get(at..at + scales.sub_len)
                    .unwrap_or_default();
                let dot: i32 = q
                    .iter()
                    .zip(unpacked.u.get(start..).unwrap_or_default())
                    .map(|(&q, &u)| i32::from(q) * i32::from(u))
                    .sum();
                let q_sum: i32 = q.iter().map(|&q| i32::from(q)).sum();
                *sum += activation_scale * (scale * dot as f32 - minimum * q_sum as f32);
            }
        }
    }
}

/// Activation rows one pass of [`dot_rows_avx2`] keeps accumulators for.
const ROWS_PER_PASS: usize = 4;

/// The AVX2 path: the same arithmetic, 32 values at a time: `u` unpacked into 32 bytes, the
/// products summed in pairs by `maddubs` (unsigned × signed) and in fours by `madd`, scaled per
/// sub-block into eight f32 lanes; up to [`ROWS_PER_PASS`] activation rows per pass over the
/// weights.
///
/// # Safety
/// AVX2, FMA and F16C present.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_rows_avx2(format: BlockFormat, row: &[u8], input: &Q8Rows, sums: &mut [f32]) {
    for (pass, sums) in sums.chunks_mut(ROWS_PER_PASS).enumerate() {
        let first = pass * ROWS_PER_PASS;
        // SAFETY: AVX2, FMA and F16C are enabled here.
        unsafe {
            match sums.len() {
                1 => dot_pass_avx2::<1>(format, row, input, first, sums),
                2 => dot_pass_avx2::<2>(format, row, input, first, sums),
                3 => dot_pass_avx2::<3>(format, row, input, first, sums),
                _ => dot_pass_avx2::<ROWS_PER_PASS>(format, row, input, first, sums),
            }
        }
    }
}

/// Activation rows `first..first + R`: each row's values, block scales and scaled half sums,
/// or `None` when `input` does not hold them whole.
#[allow(clippy::type_complexity)]
pub(crate) fn activation_rows<const R: usize>(
    input: &Q8Rows,
    first: usize,
) -> Option<[(&[i8], &[f32], &[f32]); R]> {
    let blocks = input.cols / BLOCK;
    let rows: [(&[i8], &[f32], &[f32]); R] = std::array::from_fn(|r| {
        let block = (first + r) * blocks;
        (
            input
                .values
                .get(block * BLOCK..(block + blocks) * BLOCK)
                .unwrap_or_default(),
            input.scales.get(block..block + blocks).unwrap_or_default(),
            input
                .half_sums
                .get(2 * block..2 * (block + blocks))
                .unwrap_or_default(),
        )
    });
    rows.iter()
        .all(|(values, _, _)| values.len() == input.cols)
        .then_some(rows)
}

/// The sum of the eight lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(crate) fn horizontal_sum(vector: std::arch::x86_64::__m256) -> f32 {
    use std::arch::x86_64::*;
    let high = _mm256_extractf128_ps::<1>(vector);
    let quad = _mm_add_ps(_mm256_castps256_ps128(vector), high);
    let pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
    _mm_cvtss_f32(_mm_add_ss(pair, _mm_shuffle_ps::<1>(pair, pair)))
}

/// Rows `first..first + R` of [`dot_rows_avx2`] (`sums` holds `R`).
///
/// # Safety
/// AVX2, FMA and F16C present.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_pass_avx2<const R: usize>(
    format: BlockFormat,
    row: &[u8],
    input: &Q8Rows,
    first: usize,
    sums: &mut [f32],
) {
    use std::arch::x86_64::*;
    let values = format.block_values();
    let Some(rows) = activation_rows::<R>(input, first) else {
        return;
    };
    if row.len() * values != input.cols * format.block_bytes() {
        return;
    }
    let ones = _mm256_set1_epi16(1);
    let mut accumulators = [_mm256_setzero_ps(); R];
    let mut minimums = [_mm256_setzero_ps(); R];
    let fast = has_register_unpacking(format);
    for (b, block) in row.chunks_exact(format.block_bytes()).enumerate() {
        let slow = (!fast).then(|| unpack(format, block));
        let scales = match &slow {
            Some(unpacked) => unpacked.scales,
            None => block_scales(format, block),
        };
        for c in 0..values / BLOCK {
            // SAFETY: AVX2 is enabled here; `block` is one whole block of `format`.
            let u_vector = unsafe { chunk_u(format, block, slow.as_ref(), c) };
            // Lanes 0-3 of a product hold values 0-15 of the chunk, lanes 4-7 values 16-31.
            let (first_sub, second_sub) = scales.chunk_subs(c);
            let weight_scales = _mm256_setr_m128(
                _mm_set1_ps(scales.scale(first_sub)),
                _mm_set1_ps(scales.scale(second_sub)),
            );
            let weight_minimums = _mm_setr_ps(
                scales.minimum(first_sub),
                scales.minimum(second_sub),
                0.0,
                0.0,
            );
            let u_signs = _mm256_sign_epi8(u_vector, u_vector);
            let activation_block = b * values / BLOCK + c;
            for (((values, activation_scales, half_sums), accumulator), minimum) in rows
                .iter()
                .zip(accumulators.iter_mut())
                .zip(minimums.iter_mut())
            {
                let at = activation_block * BLOCK;
                // SAFETY: every row holds `cols` values, and `at + 32 ≤ cols`: the weight row
                // has exactly `cols` values (checked above).
                let q_vector = unsafe { _mm256_loadu_si256(values.as_ptr().add(at).cast()) };
                let products = if format == BlockFormat::Q8_0 {
                    // Signed weights: |u| × (q with u's sign).
                    _mm256_maddubs_epi16(u_signs, _mm256_sign_epi8(q_vector, u_vector))
                } else {
                    _mm256_maddubs_epi16(u_vector, q_vector)
                };
                let dots = _mm256_cvtepi32_ps(_mm256_madd_epi16(products, ones));
                // SAFETY: block `activation_block` of the row exists (as above), and its two
                // half sums.
                let (activation_scale, sums_pair) = unsafe {
                    (
                        *activation_scales.get_unchecked(activation_block),
                        _mm_castpd_ps(_mm_load_sd(
                            half_sums.as_ptr().add(2 * activation_block).cast(),
                        )),
                    )
                };
                *accumulator = _mm256_fmadd_ps(
                    dots,
                    _mm256_mul_ps(weight_scales, _mm256_set1_ps(activation_scale)),
                    *accumulator,
                );
                // Zero-extended: the upper lanes must stay 0.
                *minimum = _mm256_fmadd_ps(
                    _mm256_zextps128_ps256(weight_minimums),
                    _mm256_zextps128_ps256(sums_pair),
                    *minimum,
                );
            }
        }
    }
    for ((sum, acc), minimum) in sums.iter_mut().zip(&accumulators).zip(&minimums) {
        *sum = horizontal_sum(_mm256_sub_ps(*acc, *minimum));
    }
}

/// `u` of values `32c..32c + 32` of `block` in one register: unpacked in registers
/// ([`register_unpack`]) when `slow` (the block unpacked value by value) is `None`.
///
/// # Safety
/// AVX2 present; `block` is one whole block of `format`, and `slow` is `None` only for a
/// [`has_register_unpacking`] format.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn chunk_u(
    format: BlockFormat,
    block: &[u8],
    slow: Option<&Unpacked>,
    c: usize,
) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    match slow {
        // SAFETY: as the caller promises.
        None => unsafe { register_unpack(format, block, c) },
        Some(unpacked) => {
            let mut chunk = [0u8; BLOCK];
            let u = unpacked.u.get(c * BLOCK..).unwrap_or_default();
            for (slot, &u) in chunk.iter_mut().zip(u) {
                *slot = u as u8;
            }
            // SAFETY: `chunk` holds 32 bytes.
            unsafe { _mm256_loadu_si256(chunk.as_ptr().cast()) }
        }
    }
}

/// Whether [`register_unpack`] reads `format`.
fn has_register_unpacking(format: BlockFormat) -> bool {
    // The 32-value formats are multiplied interleaved; row by row they take the slow unpacking.
    matches!(format, BlockFormat::Q4K | BlockFormat::Q6K)
}

/// `u` of values `32c..32c + 32` of one block, in one register (the layouts of
/// [`integers`]): nibbles, bytes, or `Q6_K`'s nibble plus two high bits.
///
/// # Safety
/// AVX2 present; `block` is one whole block of `format` (a [`has_register_unpacking`] one)
/// and `c` a chunk inside it.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn register_unpack(
    format: BlockFormat,
    block: &[u8],
    c: usize,
) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    let nibbles = _mm256_set1_epi8(0x0F);
    let load = |at: usize| -> __m256i {
        match block.get(at..at + 32) {
            // SAFETY: 32 bytes from `at`.
            Some(bytes) => unsafe { _mm256_loadu_si256(bytes.as_ptr().cast()) },
            None => _mm256_setzero_si256(),
        }
    };
    let shift_right = |v: __m256i, bits: usize| _mm256_srl_epi16(v, _mm_cvtsi32_si128(bits as i32));
    match format {
        BlockFormat::Q4K => {
            let packed = load(16 + 32 * (c / 2));
            _mm256_and_si256(shift_right(packed, 4 * (c % 2)), nibbles)
        }
        _ => {
            // Q6_K: low nibble from ql, two high bits from qh.
            let (half, quarter) = (c / 4, c % 4);
            let low = _mm256_and_si256(
                shift_right(load(64 * half + 32 * (quarter % 2)), 4 * (quarter / 2)),
                nibbles,
            );
            let high = _mm256_and_si256(
                shift_right(load(128 + 32 * half), 2 * quarter),
                _mm256_set1_epi8(0x03),
            );
            _mm256_or_si256(low, _mm256_slli_epi16::<4>(high))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;
    use crate::quantized::dequantize;
    use crate::random_values;

    /// Random blocks of `format` with ordinary f16 scales.
    fn random_blocks(format: BlockFormat, blocks: usize, seed: u64) -> Vec<u8> {
        let noise = random_values(seed, blocks * format.block_bytes());
        let mut bytes: Vec<u8> = noise.iter().map(|v| ((v + 1.0) * 127.9) as u8).collect();
        let halves: &[usize] = match format {
            BlockFormat::Q4_0 | BlockFormat::Q5_0 | BlockFormat::Q8_0 => &[0],
            BlockFormat::Q4_1 | BlockFormat::Q5_1 | BlockFormat::Q4K | BlockFormat::Q5K => &[0, 2],
            BlockFormat::Q2K => &[80, 82],
            BlockFormat::Q3K => &[108],
            BlockFormat::Q6K => &[208],
        };
        let scales = random_values(seed + 1, blocks * halves.len());
        for (b, block) in bytes.chunks_exact_mut(format.block_bytes()).enumerate() {
            for (h, &at) in halves.iter().enumerate() {
                let value = half::f16::from_f32(scales[b * halves.len() + h] * 0.05);
                block[at..at + 2].copy_from_slice(&value.to_le_bytes());
            }
        }
        bytes
    }

    #[test]
    fn every_format_matches_dequantize_then_f32() {
        for format in BlockFormat::ALL {
            for (rows, out_features, cols) in [(1, 3, 256), (3, 70, 512), (5, 2, 768)] {
                let blocks = out_features * cols / format.block_values();
                let bytes = random_blocks(format, blocks, out_features as u64 + 7);
                let mut weights = vec![0.0f32; out_features * cols];
                dequantize(format, &bytes, &mut weights).unwrap();
                let input = random_values(rows as u64, rows * cols);
                let quantized = Q8Rows::quantize(&input, rows, cols).unwrap();
                let activations = quantized.dequantized();
                let matrix = QuantizedMatrix {
                    format,
                    bytes: &bytes,
                    rows: out_features,
                    cols,
                };
                let mut got = vec![0.0f32; rows * out_features];
                matmul_quantized(matrix, &quantized, &mut got).unwrap();
                let row_bytes = bytes.len() / out_features;
                for r in 0..rows {
                    let single =
                        Q8Rows::quantize(&input[r * cols..(r + 1) * cols], 1, cols).unwrap();
                    for o in 0..out_features {
                        let (mut want, mut magnitude) = (0.0f64, 0.0f64);
                        for k in 0..cols {
                            let term = f64::from(activations[r * cols + k])
                                * f64::from(weights[o * cols + k]);
                            want += term;
                            magnitude += term.abs();
                        }
                        let mut portable = [0.0f32];
                        dot_rows_portable(
                            format,
                            &bytes[o * row_bytes..(o + 1) * row_bytes],
                            &single,
                            &mut portable,
                        );
                        let tolerance = 1e-5 * magnitude.max(1e-6);
                        for (path, value) in [
                            ("vector", got[r * out_features + o]),
                            ("portable", portable[0]),
                        ] {
                            assert!(
                                (f64::from(value) - want).abs() <= tolerance,
                                "{format:?} {rows}x{out_features}x{cols} [{r},{o}] {path}: \
                                 {value} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// `matmul_blocks` (8-bit activations plus their residual) against f32 activations times the dequantized weights, in f64; every row
    /// and column count of the kernels' passes and groups (and their remainders).
    #[test]
    fn block_products_match_f32_activations() {
        for format in BlockFormat::ALL {
            let cols = 2 * 256;
            for (rows, out_features) in [(1, 1), (1, 9), (2, 4), (3, 7), (5, 70), (16, 5)] {
                let bytes = random_blocks(format, out_features * cols / format.block_values(), 3);
                let mut weights = vec![0.0f32; out_features * cols];
                dequantize(format, &bytes, &mut weights).unwrap();
                let input = random_values(rows as u64 + 40, rows * cols);
                let matrix = QuantizedMatrix {
                    format,
                    bytes: &bytes,
                    rows: out_features,
                    cols,
                };
                let mut got = vec![f32::NAN; rows * out_features];
                matmul_blocks(matrix, &input, rows, &mut got).unwrap();
                for r in 0..rows {
                    for o in 0..out_features {
                        let (mut want, mut magnitude) = (0.0f64, 0.0f64);
                        for k in 0..cols {
                            let term =
                                f64::from(input[r * cols + k]) * f64::from(weights[o * cols + k]);
                            want += term;
                            magnitude += term.abs();
                        }
                        let value = f64::from(got[r * out_features + o]);
                        assert!(
                            (value - want).abs() <= 1e-4 * magnitude.max(1e-6),
                            "{format:?} {rows}x{out_features} [{r},{o}]: {value} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn residual_activations_are_about_fifteen_bits() {
        // One large value per block, as a decoder's final hidden state has: 8-bit blocks lose
        // the small values around it, the residual row brings them back.
        let (rows, out_features, cols) = (2, 40, 576);
        let mut input = random_values(11, rows * cols);
        for block in input.chunks_exact_mut(BLOCK) {
            block[3] = 30.0;
        }
        for format in [BlockFormat::Q8_0, BlockFormat::Q4_1, BlockFormat::Q6K] {
            let cols = cols / format.block_values() * format.block_values();
            let input: Vec<f32> = input
                .chunks_exact(576)
                .flat_map(|r| &r[..cols])
                .copied()
                .collect();
            let bytes = random_blocks(format, out_features * cols / format.block_values(), 5);
            let mut weights = vec![0.0f32; out_features * cols];
            dequantize(format, &bytes, &mut weights).unwrap();
            let matrix = QuantizedMatrix {
                format,
                bytes: &bytes,
                rows: out_features,
                cols,
            };
            let worst = |fine: bool| {
                let mut got = vec![0.0f32; rows * out_features];
                if fine {
                    matmul_blocks(matrix, &input, rows, &mut got).unwrap();
                } else {
                    let coarse = Q8Rows::quantize(&input, rows, cols).unwrap();
                    matmul_quantized(matrix, &coarse, &mut got).unwrap();
                }
                let mut worst = 0.0f64;
                for r in 0..rows {
                    for o in 0..out_features {
                        let exact: f64 = (0..cols)
                            .map(|k| {
                                f64::from(input[r * cols + k]) * f64::from(weights[o * cols + k])
                            })
                            .sum();
                        worst = worst.max((f64::from(got[r * out_features + o]) - exact).abs());
                    }
                }
                worst
            };
            let coarse = worst(false);
            let fine = worst(true);
            assert!(
                fine * 100.0 < coarse,
                "{format:?}: 8-bit error {coarse}, with the residual {fine}"
            );
        }
    }

    #[test]
    fn quantized_activations_are_close_and_shapes_are_checked() {
        let input = random_values(3, 64);
        let rows = Q8Rows::quantize(&input, 2, 32).unwrap();
        for (a, b) in input.iter().zip(rows.dequantized()) {
            assert!((a - b).abs() <= 1.0 / 254.0 + 1e-6);
        }
        assert!(Q8Rows::quantize(&input, 2, 30).is_err());
        let matrix = QuantizedMatrix {
            format: BlockFormat::Q4_0,
            bytes: &[0; 18],
            rows: 1,
            cols: 32,
        };
        let mut out = [0.0f32; 2];
        assert!(matmul_quantized(matrix, &rows, &mut out).is_ok());
        assert!(matmul_quantized(matrix, &rows, &mut out[..1]).is_err());
        let short = QuantizedMatrix {
            bytes: &[0; 17],
            ..matrix
        };
        assert!(matmul_quantized(short, &rows, &mut out).is_err());
    }
}
