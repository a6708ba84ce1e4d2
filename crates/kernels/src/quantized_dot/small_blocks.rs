//! The 32-value block formats `Q4_0`, `Q4_1` and `Q8_0` in registers: their activations
//! quantized to 16 bits ([`Q16Rows`], what the interleaved kernel multiplies) and their blocks
//! dequantized 32 values at a time (AVX2, F16C).
//!
//! 16-bit activations (one scale per block of 32) keep a product within about 1e-5 of f32
//! activations, where llama.cpp's 8-bit ones move SmolLM2's logits by up to 1.5 and change its
//! greedy text. Each format is its own monomorphised loop ([`SmallFormat`]): no format test
//! inside it. The formats' methods and helpers are `#[inline(always)]` without a
//! `target_feature` of their own, so they are compiled into the AVX2 loop that calls them.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::BLOCK;
use crate::{KernelError, Result};

/// Rows of activations quantized to 16-bit blocks of 32: `a ≈ scale · q`, `|q| ≤ 32767`.
#[derive(Debug, Clone, Default)]
pub struct Q16Rows {
    values: Vec<i16>,
    scales: Vec<f32>,
    /// `scale · Σ q` of each block.
    sums: Vec<f32>,
    cols: usize,
}

impl Q16Rows {
    /// Quantizes `rows` rows of `cols` values (`cols` a multiple of 32): per block of 32, the
    /// scale is `max |a| / 32767` and `q = round(a / scale)`.
    pub fn quantize(input: &[f32], rows: usize, cols: usize) -> Result<Q16Rows> {
        if !cols.is_multiple_of(BLOCK) || input.len() != rows * cols {
            return Err(KernelError {
                kernel: "Q16Rows::quantize",
                reason: format!("{} values for {rows} rows of {cols}", input.len()),
            });
        }
        let blocks = input.len() / BLOCK;
        let mut quantized = Q16Rows {
            values: Vec::with_capacity(input.len()),
            scales: Vec::with_capacity(blocks),
            sums: Vec::with_capacity(blocks),
            cols,
        };
        quantized.values.resize(input.len(), 0);
        let mut block_sums = vec![0i32; blocks];
        for ((block, q), sum) in input
            .chunks_exact(BLOCK)
            .zip(quantized.values.chunks_exact_mut(BLOCK))
            .zip(block_sums.iter_mut())
        {
            let scale = block_scale(block);
            *sum = quantize_block(block, scale, q);
            quantized.scales.push(scale);
        }
        for (sum, scale) in block_sums.iter().zip(&quantized.scales) {
            quantized.sums.push(scale * *sum as f32);
        }
        Ok(quantized)
    }

    /// Rows held.
    pub fn rows(&self) -> usize {
        self.values.len().checked_div(self.cols).unwrap_or(0)
    }

    /// The dequantized values (what the kernel multiplies), for tests and references.
    pub fn dequantized(&self) -> Vec<f32> {
        self.values
            .chunks_exact(BLOCK)
            .zip(&self.scales)
            .flat_map(|(block, scale)| block.iter().map(move |&q| f32::from(q) * scale))
            .collect()
    }

    /// Values per row.
    pub(super) fn cols(&self) -> usize {
        self.cols
    }

    /// Row `row`'s values, block scales and block sums, or `None` past the end.
    pub(super) fn row(&self, row: usize) -> Option<(&[i16], &[f32], &[f32])> {
        let blocks = self.cols / BLOCK;
        Some((
            self.values.get(row * self.cols..(row + 1) * self.cols)?,
            self.scales.get(row * blocks..(row + 1) * blocks)?,
            self.sums.get(row * blocks..(row + 1) * blocks)?,
        ))
    }
}

/// `max |a| / 32767` of one block (NaN values ignored).
fn block_scale(block: &[f32]) -> f32 {
    block.iter().fold(0.0f32, |max, value| max.max(value.abs())) / 32767.0
}

/// `q = round(a / scale)` (ties to even) for one block of 32 into `q`; returns `Σ q`.
fn quantize_block(block: &[f32], scale: f32, q: &mut [i16]) -> i32 {
    let inverse = if scale > 0.0 { 1.0 / scale } else { 0.0 };
    #[cfg(target_arch = "x86_64")]
    if crate::has_avx2_fma() && block.len() == BLOCK && q.len() == BLOCK {
        // SAFETY: AVX2 and FMA are present (checked); both slices hold 32 values.
        return unsafe { quantize_block_avx2(block, inverse, q) };
    }
    let mut sum = 0;
    for (q, value) in q.iter_mut().zip(block) {
        // `as` saturates (a NaN becomes 0); the `max` keeps -32768 out.
        *q = ((value * inverse).round_ties_even() as i16).max(-32767);
        sum += i32::from(*q);
    }
    sum
}

/// [`quantize_block`] in registers: `cvtps` rounds to nearest even, `packs` saturates.
///
/// # Safety
/// AVX2 and FMA present; `block` and `q` hold 32 values each.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn quantize_block_avx2(block: &[f32], inverse: f32, q: &mut [i16]) -> i32 {
    let inverse = _mm256_set1_ps(inverse);
    let at = block.as_ptr();
    // SAFETY: 32 f32 at `at` and 32 i16 in `q` (the caller's promise).
    unsafe {
        let scaled = |offset: usize| {
            _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(at.add(offset)), inverse))
        };
        // `packs` interleaves the 128-bit lanes: put values back in order.
        let in_order = |a: __m256i, b: __m256i| {
            let packed = _mm256_max_epi16(_mm256_packs_epi32(a, b), _mm256_set1_epi16(-32767));
            _mm256_permute4x64_epi64::<0b11_01_10_00>(packed)
        };
        let first = in_order(scaled(0), scaled(8));
        let second = in_order(scaled(16), scaled(24));
        _mm256_storeu_si256(q.as_mut_ptr().cast(), first);
        _mm256_storeu_si256(q.as_mut_ptr().add(16).cast(), second);
        let ones = _mm256_set1_epi16(1);
        let sums = _mm256_add_epi32(
            _mm256_madd_epi16(first, ones),
            _mm256_madd_epi16(second, ones),
        );
        let quad = _mm_add_epi32(
            _mm256_castsi256_si128(sums),
            _mm256_extracti128_si256::<1>(sums),
        );
        let pair = _mm_add_epi32(quad, _mm_shuffle_epi32::<0b01_00_11_10>(quad));
        _mm_cvtsi128_si32(_mm_add_epi32(
            pair,
            _mm_shuffle_epi32::<0b10_11_00_01>(pair),
        ))
    }
}

/// A 32-value block format as the kernel reads it.
#[cfg(target_arch = "x86_64")]
trait SmallFormat {
    /// Bytes per block.
    const BYTES: usize;

    /// The block's scale `d`.
    ///
    /// # Safety
    /// F16C present; `block` points at one whole block.
    unsafe fn scale(block: *const u8) -> f32;

    /// What [`crate::quantized::dequantize`] subtracts from `u` before scaling (`Q4_0`: 8).
    const OFFSET: i16;

    /// What [`crate::quantized::dequantize`] adds after scaling (`Q4_1`'s minimum field).
    ///
    /// # Safety
    /// F16C present; `block` points at one whole block.
    unsafe fn added(_block: *const u8) -> f32 {
        0.0
    }

    /// `u` of the block's 32 values widened to 16 bits: values 0–15, then 16–31.
    ///
    /// # Safety
    /// AVX2 present; `block` points at one whole block.
    unsafe fn unpack(block: *const u8) -> (__m256i, __m256i);
}

/// The block's first two f16 fields as f32.
///
/// # Safety
/// F16C present; `block` points at 4 readable bytes.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn two_halves(block: *const u8) -> (f32, f32) {
    // SAFETY: 4 bytes at `block`, and F16C (the caller's promise).
    unsafe {
        let bits = block.cast::<i32>().read_unaligned();
        let pair = _mm_cvtph_ps(_mm_cvtsi32_si128(bits));
        (_mm_cvtss_f32(pair), _mm_cvtss_f32(_mm_movehdup_ps(pair)))
    }
}

/// 16 bytes of nibbles from `at`, widened to 16 bits: values 0–15 from the low nibbles, 16–31
/// from the high.
///
/// # Safety
/// AVX2 present; 16 readable bytes at `at`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn nibbles(at: *const u8) -> (__m256i, __m256i) {
    // SAFETY: 16 bytes at `at`, and AVX2 (the caller's promise).
    unsafe {
        let packed = _mm_loadu_si128(at.cast());
        let mask = _mm_set1_epi8(0x0F);
        let low = _mm_and_si128(packed, mask);
        let high = _mm_and_si128(_mm_srli_epi16::<4>(packed), mask);
        (_mm256_cvtepu8_epi16(low), _mm256_cvtepu8_epi16(high))
    }
}

#[cfg(target_arch = "x86_64")]
struct Q4_0;
#[cfg(target_arch = "x86_64")]
struct Q4_1;
#[cfg(target_arch = "x86_64")]
struct Q8_0;

#[cfg(target_arch = "x86_64")]
impl SmallFormat for Q4_0 {
    const BYTES: usize = 18;
    const OFFSET: i16 = 8;

    #[inline(always)]
    unsafe fn scale(block: *const u8) -> f32 {
        // SAFETY: as the caller promises; bytes 2–3 are values, not a field, and are ignored.
        unsafe { two_halves(block).0 }
    }

    #[inline(always)]
    unsafe fn unpack(block: *const u8) -> (__m256i, __m256i) {
        // SAFETY: the 16 value bytes from byte 2 of an 18-byte block.
        unsafe { nibbles(block.add(2)) }
    }
}

#[cfg(target_arch = "x86_64")]
impl SmallFormat for Q4_1 {
    const BYTES: usize = 20;
    const OFFSET: i16 = 0;

    #[inline(always)]
    unsafe fn added(block: *const u8) -> f32 {
        // SAFETY: as the caller promises.
        unsafe { two_halves(block).1 }
    }

    #[inline(always)]
    unsafe fn scale(block: *const u8) -> f32 {
        // SAFETY: as the caller promises.
        unsafe { two_halves(block).0 }
    }

    #[inline(always)]
    unsafe fn unpack(block: *const u8) -> (__m256i, __m256i) {
        // SAFETY: the 16 value bytes from byte 4 of a 20-byte block.
        unsafe { nibbles(block.add(4)) }
    }
}

#[cfg(target_arch = "x86_64")]
impl SmallFormat for Q8_0 {
    const BYTES: usize = 34;
    const OFFSET: i16 = 0;

    #[inline(always)]
    unsafe fn scale(block: *const u8) -> f32 {
        // SAFETY: as the caller promises; bytes 2–3 are values, ignored.
        unsafe { two_halves(block).0 }
    }

    #[inline(always)]
    unsafe fn unpack(block: *const u8) -> (__m256i, __m256i) {
        // SAFETY: the 32 value bytes from byte 2 of a 34-byte block.
        unsafe {
            (
                _mm256_cvtepi8_epi16(_mm_loadu_si128(block.add(2).cast())),
                _mm256_cvtepi8_epi16(_mm_loadu_si128(block.add(18).cast())),
            )
        }
    }
}

/// [`crate::quantized::dequantize`] of whole blocks of a 32-value format, 32 values per step
/// and bit for bit the same (`d · (u - offset) + added`, rounded after each operation as there);
/// `false` (nothing written) when [`is_available`] says no.
pub(crate) fn dequantize(
    format: crate::quantized::BlockFormat,
    bytes: &[u8],
    out: &mut [f32],
) -> bool {
    #[cfg(target_arch = "x86_64")]
    if is_available(format) && bytes.len() / block_bytes(format) * BLOCK == out.len() {
        use crate::quantized::BlockFormat;
        // SAFETY: the CPU has AVX2, FMA and F16C (`is_available`); `out` holds 32 values per
        // whole block of `bytes` (checked).
        unsafe {
            match format {
                BlockFormat::Q4_0 => dequantize_blocks::<Q4_0>(bytes, out),
                BlockFormat::Q4_1 => dequantize_blocks::<Q4_1>(bytes, out),
                _ => dequantize_blocks::<Q8_0>(bytes, out),
            }
        }
        return true;
    }
    let _ = (format, bytes, out);
    false
}

/// Bytes per block of a 32-value format (1 for the others, never used with them).
fn block_bytes(format: crate::quantized::BlockFormat) -> usize {
    format.block_bytes().max(1)
}

/// [`dequantize`] for format `F`.
///
/// # Safety
/// AVX2, FMA and F16C present; `out` holds 32 values per whole block of `bytes`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dequantize_blocks<F: SmallFormat>(bytes: &[u8], out: &mut [f32]) {
    let offset = _mm256_set1_epi16(F::OFFSET);
    for (block, values) in bytes
        .chunks_exact(F::BYTES)
        .zip(out.chunks_exact_mut(BLOCK))
    {
        // SAFETY: `block` is one whole block and `values` holds 32 f32 (chunks of those sizes).
        unsafe {
            let at = block.as_ptr();
            let d = F::scale(at);
            let (d, added) = (_mm256_set1_ps(d), _mm256_set1_ps(F::added(at)));
            let (low, high) = F::unpack(at);
            for (half, u) in [low, high].into_iter().enumerate() {
                let u = _mm256_sub_epi16(u, offset);
                for (quarter, lanes) in
                    [_mm256_castsi256_si128(u), _mm256_extracti128_si256::<1>(u)]
                        .into_iter()
                        .enumerate()
                {
                    let q = _mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(lanes));
                    let value = _mm256_add_ps(_mm256_mul_ps(d, q), added);
                    _mm256_storeu_ps(values.as_mut_ptr().add(16 * half + 8 * quarter), value);
                }
            }
        }
    }
}

/// Whether [`dequantize`] reads `format` on this CPU: a 32-value format, and AVX2, FMA and
/// F16C present.
fn is_available(format: crate::quantized::BlockFormat) -> bool {
    use crate::quantized::BlockFormat;
    #[cfg(target_arch = "x86_64")]
    if crate::has_avx2_fma() && std::is_x86_feature_detected!("f16c") {
        return matches!(
            format,
            BlockFormat::Q4_0 | BlockFormat::Q4_1 | BlockFormat::Q8_0
        );
    }
    let _ = format;
    false
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;
    use crate::random_values;

    /// The vector quantization equals the scalar one, value for value, and stays within half
    /// a step of the input.
    #[test]
    fn sixteen_bit_activations_round_to_nearest_even() {
        let mut input = random_values(9, 32 * 40);
        input[5] = 300.0;
        input[40] = -1e-30;
        input[64..96].fill(0.0);
        let quantized = Q16Rows::quantize(&input, 2, 32 * 20).unwrap();
        for (b, block) in input.chunks_exact(BLOCK).enumerate() {
            let scale = block_scale(block);
            let inverse = if scale > 0.0 { 1.0 / scale } else { 0.0 };
            let mut sum = 0;
            for (k, value) in block.iter().enumerate() {
                let want = ((value * inverse).round_ties_even() as i16).max(-32767);
                assert_eq!(quantized.values[b * BLOCK + k], want, "block {b} value {k}");
                sum += i32::from(want);
            }
            assert_eq!(quantized.sums[b], scale * sum as f32, "block {b}");
        }
        for (a, q) in input.iter().zip(quantized.dequantized()) {
            assert!((a - q).abs() <= 300.0 / 32767.0, "{a} vs {q}");
        }
        assert!(Q16Rows::quantize(&input, 3, 32 * 20).is_err());
    }
}
