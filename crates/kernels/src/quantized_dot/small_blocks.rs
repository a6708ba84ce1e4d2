//! The AVX2 product of the 32-value block formats `Q4_0`, `Q4_1` and `Q8_0` (every weight of
//! SmolLM2's Q4_1 file), several output columns at a time: a decoding step's whole cost.
//!
//! Per block of 32 inputs, the activation rows' bytes and scales are loaded once and meet
//! [`COLUMNS`] weight rows, each unpacked into one register; every (weight row, activation row)
//! pair keeps its own accumulator, so the FMAs do not wait on one another. Each format is its
//! own monomorphised loop ([`SmallFormat`]): no format test inside it. The formats' methods
//! and helpers are `#[inline(always)]` without a `target_feature` of their own, so they are
//! compiled into the AVX2 loop that calls them (a call to a function of another feature set
//! is never inlined).

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::{BLOCK, Q8Rows, activation_rows};

/// Weight rows (output columns) one pass of the kernel reads together.
pub(super) const COLUMNS: usize = 4;

/// A 32-value block format as the kernel reads it.
#[cfg(target_arch = "x86_64")]
trait SmallFormat {
    /// Bytes per block.
    const BYTES: usize;
    /// Whether `u` is signed (`Q8_0`): multiplied as `|u| × (q with u's sign)`.
    const SIGNED: bool;

    /// `(scale, minimum)`: values are `scale · u - minimum`.
    ///
    /// # Safety
    /// F16C present; `block` points at one whole block.
    unsafe fn scale_and_minimum(block: *const u8) -> (f32, f32);

    /// `u` of the block's 32 values in one register, value `i` in byte `i`.
    ///
    /// # Safety
    /// AVX2 present; `block` points at one whole block.
    unsafe fn unpack(block: *const u8) -> __m256i;
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

/// 16 bytes of nibbles from `at`: values 0–15 from the low nibbles, 16–31 from the high.
///
/// # Safety
/// AVX2 present; 16 readable bytes at `at`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn nibbles(at: *const u8) -> __m256i {
    // SAFETY: 16 bytes at `at`, and AVX2 (the caller's promise).
    unsafe {
        let packed = _mm_loadu_si128(at.cast());
        let mask = _mm_set1_epi8(0x0F);
        let low = _mm_and_si128(packed, mask);
        let high = _mm_and_si128(_mm_srli_epi16::<4>(packed), mask);
        _mm256_set_m128i(high, low)
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
    const SIGNED: bool = false;

    #[inline(always)]
    unsafe fn scale_and_minimum(block: *const u8) -> (f32, f32) {
        // SAFETY: as the caller promises; bytes 2–3 are values, not a field, and are ignored.
        let (d, _) = unsafe { two_halves(block) };
        (d, 8.0 * d)
    }

    #[inline(always)]
    unsafe fn unpack(block: *const u8) -> __m256i {
        // SAFETY: the 16 value bytes from byte 2 of an 18-byte block.
        unsafe { nibbles(block.add(2)) }
    }
}

#[cfg(target_arch = "x86_64")]
impl SmallFormat for Q4_1 {
    const BYTES: usize = 20;
    const SIGNED: bool = false;

    #[inline(always)]
    unsafe fn scale_and_minimum(block: *const u8) -> (f32, f32) {
        // SAFETY: as the caller promises.
        let (d, m) = unsafe { two_halves(block) };
        (d, -m)
    }

    #[inline(always)]
    unsafe fn unpack(block: *const u8) -> __m256i {
        // SAFETY: the 16 value bytes from byte 4 of a 20-byte block.
        unsafe { nibbles(block.add(4)) }
    }
}

#[cfg(target_arch = "x86_64")]
impl SmallFormat for Q8_0 {
    const BYTES: usize = 34;
    const SIGNED: bool = true;

    #[inline(always)]
    unsafe fn scale_and_minimum(block: *const u8) -> (f32, f32) {
        // SAFETY: as the caller promises; bytes 2–3 are values, ignored.
        let (d, _) = unsafe { two_halves(block) };
        (d, 0.0)
    }

    #[inline(always)]
    unsafe fn unpack(block: *const u8) -> __m256i {
        // SAFETY: the 32 value bytes from byte 2 of a 34-byte block.
        unsafe { _mm256_loadu_si256(block.add(2).cast()) }
    }
}

/// `sums[c · rows + r]` = weight row `c` of `weights` (whole rows of blocks of `format`, one
/// after the other) · activation row `r` of `input`, for every row and column; `false` (and
/// nothing written) when `format` is not one of the 32-value formats this kernel reads, or the
/// CPU lacks AVX2, FMA or F16C.
pub(super) fn dot_columns(
    format: crate::quantized::BlockFormat,
    weights: &[u8],
    input: &Q8Rows,
    sums: &mut [f32],
) -> bool {
    #[cfg(target_arch = "x86_64")]
    if crate::has_avx2_fma() && std::is_x86_feature_detected!("f16c") {
        use crate::quantized::BlockFormat;
        // SAFETY: the CPU has AVX2, FMA and F16C (checked just above).
        unsafe {
            match format {
                BlockFormat::Q4_0 => columns::<Q4_0>(weights, input, sums),
                BlockFormat::Q4_1 => columns::<Q4_1>(weights, input, sums),
                BlockFormat::Q8_0 => columns::<Q8_0>(weights, input, sums),
                _ => return false,
            }
        }
        return true;
    }
    let _ = (format, weights, input, sums);
    false
}

/// [`dot_columns`] for format `F`: activation rows in passes of up to 2, weight rows in groups
/// of [`COLUMNS`] (then one by one).
///
/// # Safety
/// AVX2, FMA and F16C present.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn columns<F: SmallFormat>(weights: &[u8], input: &Q8Rows, sums: &mut [f32]) {
    let rows = input.rows();
    let row_bytes = input.cols / BLOCK * F::BYTES;
    if rows == 0 || row_bytes == 0 || !weights.len().is_multiple_of(row_bytes) {
        return;
    }
    let column_count = weights.len() / row_bytes;
    if sums.len() != column_count * rows {
        return;
    }
    let mut first_row = 0;
    while first_row < rows {
        let pass = (rows - first_row).min(2);
        let mut column = 0;
        while column < column_count {
            let group = (column_count - column).min(COLUMNS);
            let bytes = weights
                .get(column * row_bytes..(column + group) * row_bytes)
                .unwrap_or_default();
            // SAFETY: AVX2, FMA and F16C are enabled here; `bytes` holds `group` whole rows.
            let results = unsafe {
                match (pass, group) {
                    (2, COLUMNS) => group_dots::<F, 2, COLUMNS>(bytes, input, first_row),
                    (1, COLUMNS) => group_dots::<F, 1, COLUMNS>(bytes, input, first_row),
                    (2, _) => group_dots::<F, 2, 1>(
                        bytes.get(..row_bytes).unwrap_or_default(),
                        input,
                        first_row,
                    ),
                    _ => group_dots::<F, 1, 1>(
                        bytes.get(..row_bytes).unwrap_or_default(),
                        input,
                        first_row,
                    ),
                }
            };
            let done = if group == COLUMNS { COLUMNS } else { 1 };
            for (c, per_row) in results.iter().take(done).enumerate() {
                for (r, value) in per_row.iter().take(pass).enumerate() {
                    if let Some(slot) = sums.get_mut((column + c) * rows + first_row + r) {
                        *slot = *value;
                    }
                }
            }
            column += done;
        }
        first_row += pass;
    }
}

/// Weight rows `0..W` of `bytes` against activation rows `first_row..first_row + R`: entry
/// `[c][r]` (entries beyond `W` and `R` are 0). Nothing is read when the shapes disagree.
///
/// # Safety
/// AVX2, FMA and F16C present.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn group_dots<F: SmallFormat, const R: usize, const W: usize>(
    bytes: &[u8],
    input: &Q8Rows,
    first_row: usize,
) -> [[f32; 2]; COLUMNS] {
    let mut results = [[0.0f32; 2]; COLUMNS];
    let blocks = input.cols / BLOCK;
    let Some(rows) = activation_rows::<R>(input, first_row) else {
        return results;
    };
    if bytes.len() != W * blocks * F::BYTES {
        return results;
    }
    let row_bytes = blocks * F::BYTES;
    let ones = _mm256_set1_epi16(1);
    let mut accumulators = [[_mm256_setzero_ps(); R]; W];
    let mut minimums = [[0.0f32; R]; W];
    let base = bytes.as_ptr();
    for b in 0..blocks {
        let mut q = [_mm256_setzero_si256(); R];
        let mut activation_scale = [_mm256_setzero_ps(); R];
        let mut activation_sum = [0.0f32; R];
        for (((q, scale), sum), (values, scales, half_sums)) in q
            .iter_mut()
            .zip(activation_scale.iter_mut())
            .zip(activation_sum.iter_mut())
            .zip(rows.iter())
        {
            // SAFETY: every activation row holds `blocks` blocks of 32 values, a scale and
            // two half sums each (`activation_rows` checked), and `b < blocks`.
            unsafe {
                *q = _mm256_loadu_si256(values.as_ptr().add(b * BLOCK).cast());
                *scale = _mm256_set1_ps(*scales.get_unchecked(b));
                *sum = *half_sums.get_unchecked(2 * b) + *half_sums.get_unchecked(2 * b + 1);
            }
        }
        for (c, (accumulators, minimums)) in
            accumulators.iter_mut().zip(minimums.iter_mut()).enumerate()
        {
            // SAFETY: block `b` of weight row `c` lies inside `bytes` (its length was checked:
            // `W` rows of `blocks` blocks).
            let (u, (d, minimum)) = unsafe {
                let block = base.add(c * row_bytes + b * F::BYTES);
                (F::unpack(block), F::scale_and_minimum(block))
            };
            let d = _mm256_set1_ps(d);
            let u_magnitude = if F::SIGNED { _mm256_sign_epi8(u, u) } else { u };
            for (((accumulator, minimum_sum), q), (scale, sum)) in accumulators
                .iter_mut()
                .zip(minimums.iter_mut())
                .zip(q.iter())
                .zip(activation_scale.iter().zip(activation_sum.iter()))
            {
                let products = if F::SIGNED {
                    _mm256_maddubs_epi16(u_magnitude, _mm256_sign_epi8(*q, u))
                } else {
                    _mm256_maddubs_epi16(u, *q)
                };
                let dots = _mm256_cvtepi32_ps(_mm256_madd_epi16(products, ones));
                *accumulator = _mm256_fmadd_ps(dots, _mm256_mul_ps(d, *scale), *accumulator);
                *minimum_sum += minimum * sum;
            }
        }
    }
    for ((result, accumulators), minimums) in results
        .iter_mut()
        .zip(accumulators.iter())
        .zip(minimums.iter())
    {
        for ((value, accumulator), minimum_sum) in result.iter_mut().zip(accumulators).zip(minimums)
        {
            *value = super::horizontal_sum(*accumulator) - minimum_sum;
        }
    }
    results
}
