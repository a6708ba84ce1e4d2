//! GGUF's block-quantized weight formats (ggml's `Q4_0` … `Q6_K`): their layouts and the
//! dequantizers to f32.
//!
//! A tensor row is a run of blocks; each block holds `block_values` weights in `block_bytes`
//! bytes: f16 scales (and minimums) followed by packed integers. The layouts follow the GGUF
//! format description and match the PyPI `gguf` package's `gguf.quants.dequantize` exactly
//! (`tests/fixtures/gguf-blocks`, written by `scripts/make_gguf_block_fixtures.py`).
//!
//! - `Q4_0` / `Q4_1`: 32 values, 4-bit `q`; `d·(q - 8)` / `d·q + m`.
//! - `Q5_0` / `Q5_1`: 32 values, 5-bit `q` (fifth bits in a little-endian `u32`); `d·(q - 16)` /
//!   `d·q + m`.
//! - `Q8_0`: 32 values, `d·q` with `q` an `i8`.
//! - `Q2_K` … `Q6_K`: super-blocks of 256 values in sub-blocks of 16 or 32, each with its own
//!   6- or 8-bit scale (and minimum) relative to the super-block's f16 `d` (and `dmin`).

use half::f16;

use crate::{KernelError, Result};

/// A block-quantized format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlockFormat {
    /// 32 × 4 bits, one scale.
    Q4_0,
    /// 32 × 4 bits, scale and minimum.
    Q4_1,
    /// 32 × 5 bits, one scale.
    Q5_0,
    /// 32 × 5 bits, scale and minimum.
    Q5_1,
    /// 32 × 8 bits, one scale.
    Q8_0,
    /// 256 × 2 bits, 4-bit scales and minimums per 16.
    Q2K,
    /// 256 × 3 bits, 6-bit scales per 16.
    Q3K,
    /// 256 × 4 bits, 6-bit scales and minimums per 32.
    Q4K,
    /// 256 × 5 bits, 6-bit scales and minimums per 32.
    Q5K,
    /// 256 × 6 bits, 8-bit scales per 16.
    Q6K,
}

/// Values per K-quant super-block.
const SUPER: usize = 256;

impl BlockFormat {
    /// Every format, in ggml's type order.
    pub const ALL: [BlockFormat; 10] = [
        BlockFormat::Q4_0,
        BlockFormat::Q4_1,
        BlockFormat::Q5_0,
        BlockFormat::Q5_1,
        BlockFormat::Q8_0,
        BlockFormat::Q2K,
        BlockFormat::Q3K,
        BlockFormat::Q4K,
        BlockFormat::Q5K,
        BlockFormat::Q6K,
    ];

    /// ggml's name of the format (`Q4_K`, ...).
    pub fn name(self) -> &'static str {
        match self {
            BlockFormat::Q4_0 => "Q4_0",
            BlockFormat::Q4_1 => "Q4_1",
            BlockFormat::Q5_0 => "Q5_0",
            BlockFormat::Q5_1 => "Q5_1",
            BlockFormat::Q8_0 => "Q8_0",
            BlockFormat::Q2K => "Q2_K",
            BlockFormat::Q3K => "Q3_K",
            BlockFormat::Q4K => "Q4_K",
            BlockFormat::Q5K => "Q5_K",
            BlockFormat::Q6K => "Q6_K",
        }
    }

    /// Values per block.
    pub fn block_values(self) -> usize {
        match self {
            BlockFormat::Q4_0
            | BlockFormat::Q4_1
            | BlockFormat::Q5_0
            | BlockFormat::Q5_1
            | BlockFormat::Q8_0 => 32,
            _ => SUPER,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            BlockFormat::Q4_0 => 18,
            BlockFormat::Q4_1 => 20,
            BlockFormat::Q5_0 => 22,
            BlockFormat::Q5_1 => 24,
            BlockFormat::Q8_0 => 34,
            BlockFormat::Q2K => 84,
            BlockFormat::Q3K => 110,
            BlockFormat::Q4K => 144,
            BlockFormat::Q5K => 176,
            BlockFormat::Q6K => 210,
        }
    }

    /// Bytes of `values` values (a multiple of the block size), or `None` when it is not one.
    pub fn bytes_for(self, values: usize) -> Option<usize> {
        values
            .is_multiple_of(self.block_values())
            .then(|| values / self.block_values())
            .and_then(|blocks| blocks.checked_mul(self.block_bytes()))
    }
}

/// Dequantizes `bytes` (whole blocks of `format`) into `out`, which holds exactly their values.
pub fn dequantize(format: BlockFormat, bytes: &[u8], out: &mut [f32]) -> Result<()> {
    if format.bytes_for(out.len()) != Some(bytes.len()) {
        return Err(KernelError {
            kernel: "quantized::dequantize",
            reason: format!(
                "{} bytes of {} blocks for {} values",
                bytes.len(),
                format.name(),
                out.len()
            ),
        });
    }
    if crate::quantized_dot::dequantize_in_registers(format, bytes, out) {
        return Ok(());
    }
    for (block, values) in bytes
        .chunks_exact(format.block_bytes())
        .zip(out.chunks_exact_mut(format.block_values()))
    {
        dequantize_block(format, block, values);
    }
    Ok(())
}

/// The f16 at `at` (0 when outside the block, which the callers' lengths rule out).
pub(crate) fn half_at(block: &[u8], at: usize) -> f32 {
    match block.get(at..at + 2) {
        Some(&[low, high]) => f16::from_le_bytes([low, high]).to_f32(),
        _ => 0.0,
    }
}

/// Byte `at` of a block (0 outside it, which the callers' lengths rule out).
pub(crate) fn byte(bytes: &[u8], at: usize) -> u8 {
    bytes.get(at).copied().unwrap_or(0)
}

/// One block (`block` holds `block_bytes`, `out` `block_values`).
fn dequantize_block(format: BlockFormat, block: &[u8], out: &mut [f32]) {
    match format {
        BlockFormat::Q4_0 | BlockFormat::Q4_1 | BlockFormat::Q5_0 | BlockFormat::Q5_1 => {
            dequantize_small(format, block, out);
        }
        BlockFormat::Q8_0 => {
            let d = half_at(block, 0);
            for (i, value) in out.iter_mut().enumerate() {
                *value = d * f32::from(byte(block, 2 + i) as i8);
            }
        }
        BlockFormat::Q2K => dequantize_q2k(block, out),
        BlockFormat::Q3K => dequantize_q3k(block, out),
        BlockFormat::Q4K | BlockFormat::Q5K => dequantize_q45k(format, block, out),
        BlockFormat::Q6K => dequantize_q6k(block, out),
    }
}

/// `Q4_0`, `Q4_1`, `Q5_0`, `Q5_1`: value `i < 16` in the low nibble of byte `i`, value
/// `i + 16` in its high nibble; the fifth bit of value `i` is bit `i` of `qh`.
fn dequantize_small(format: BlockFormat, block: &[u8], out: &mut [f32]) {
    let d = half_at(block, 0);
    let (minimum, qh, qs_start, offset) = match format {
        BlockFormat::Q4_0 => (0.0, None, 2, 8.0),
        BlockFormat::Q4_1 => (half_at(block, 2), None, 4, 0.0),
        BlockFormat::Q5_0 => (0.0, Some(2), 6, 16.0),
        _ => (half_at(block, 2), Some(4), 8, 0.0),
    };
    let high_bits = qh.map_or(0, |at| {
        u32::from_le_bytes([
            byte(block, at),
            byte(block, at + 1),
            byte(block, at + 2),
            byte(block, at + 3),
        ])
    });
    for (i, value) in out.iter_mut().enumerate() {
        let packed = byte(block, qs_start + i % 16);
        let nibble = if i < 16 { packed & 0x0F } else { packed >> 4 };
        let fifth = ((high_bits >> i) & 1) as u8;
        let q = f32::from(nibble | (fifth << 4));
        *value = d * (q - offset) + minimum;
    }
}

/// `Q2_K`: `scales[16]` (low nibble scale, high nibble minimum), `qs[64]`, `d`, `dmin`. Value
/// `e` = `128h + 32j + l` is bits `2j..2j+2` of `qs[32h + l]`, in sub-block `e / 16`.
fn dequantize_q2k(block: &[u8], out: &mut [f32]) {
    let (d, dmin) = (half_at(block, 80), half_at(block, 82));
    for (e, value) in out.iter_mut().enumerate() {
        let (half, j, l) = (e / 128, (e % 128) / 32, e % 32);
        let q = (byte(block, 16 + 32 * half + l) >> (2 * j)) & 3;
        let scale = byte(block, e / 16);
        *value = d * f32::from(scale & 0x0F) * f32::from(q) - dmin * f32::from(scale >> 4);
    }
}

/// `Q3_K`: `hmask[32]`, `qs[64]`, `scales[12]` (sixteen 6-bit scales, offset by 32), `d`. Value
/// `e` = `128h + 32j + l` has low bits `2j..2j+2` of `qs[32h + l]`, and 4 is subtracted unless
/// bit `e / 32` of `hmask[l]` is set.
fn dequantize_q3k(block: &[u8], out: &mut [f32]) {
    let d = half_at(block, 108);
    let scales: [f32; 16] = std::array::from_fn(|s| {
        let low = (byte(block, 96 + s % 8) >> (4 * (s / 8))) & 0x0F;
        let high = (byte(block, 104 + s % 4) >> (2 * (s / 4))) & 0x03;
        f32::from(i16::from(low | (high << 4)) - 32)
    });
    for (e, value) in out.iter_mut().enumerate() {
        let (half, j, l) = (e / 128, (e % 128) / 32, e % 32);
        let low = i16::from((byte(block, 32 + 32 * half + l) >> (2 * j)) & 3);
        let high_set = (byte(block, l) >> (e / 32)) & 1 == 1;
        let q = if high_set { low } else { low - 4 };
        *value = d * scales.get(e / 16).copied().unwrap_or(0.0) * f32::from(q);
    }
}

/// The 6-bit scale and minimum of sub-block `j` (of 8) in the 12 packed bytes of `Q4_K` and
/// `Q5_K`.
pub(crate) fn scale_min_k4(scales: &[u8], j: usize) -> (u8, u8) {
    let at = |i: usize| byte(scales, i);
    if j < 4 {
        (at(j) & 63, at(j + 4) & 63)
    } else {
        (
            (at(j + 4) & 0x0F) | ((at(j - 4) >> 6) << 4),
            (at(j + 4) >> 4) | ((at(j) >> 6) << 4),
        )
    }
}

/// `Q4_K`: `d`, `dmin`, `scales[12]`, `qs[128]`; `Q5_K` adds `qh[32]` before `qs`. Value `e` =
/// `64c + 32n + l` (sub-block `2c + n`) is nibble `n` of `qs[32c + l]`, with fifth bit
/// `e / 32` of `qh[l]` in `Q5_K`.
fn dequantize_q45k(format: BlockFormat, block: &[u8], out: &mut [f32]) {
    let (d, dmin) = (half_at(block, 0), half_at(block, 2));
    let scales = block.get(4..16).unwrap_or_default();
    let (qh, qs) = if format == BlockFormat::Q5K {
        (block.get(16..48), 48)
    } else {
        (None, 16)
    };
    for (e, value) in out.iter_mut().enumerate() {
        let (sub, l) = (e / 32, e % 32);
        let (c, n) = (sub / 2, sub % 2);
        let nibble = (byte(block, qs + 32 * c + l) >> (4 * n)) & 0x0F;
        let fifth = qh.map_or(0, |qh| (byte(qh, l) >> sub) & 1);
        let (scale, minimum) = scale_min_k4(scales, sub);
        *value =
            d * f32::from(scale) * f32::from(nibble | (fifth << 4)) - dmin * f32::from(minimum);
    }
}

/// `Q6_K`: `ql[128]`, `qh[64]`, `scales[16]` (`i8`), `d`. Value `e` = `128h + r`: low nibble
/// `r / 64` of `ql[64h + r % 64]`, high bits `2(r / 32)..` of `qh[32h + r % 32]`, minus 32, in
/// sub-block `e / 16`.
fn dequantize_q6k(block: &[u8], out: &mut [f32]) {
    let d = half_at(block, 208);
    for (e, value) in out.iter_mut().enumerate() {
        let (half, r) = (e / 128, e % 128);
        let low = (byte(block, 64 * half + r % 64) >> (4 * (r / 64))) & 0x0F;
        let high = (byte(block, 128 + 32 * half + r % 32) >> (2 * (r / 32))) & 0x03;
        let q = i16::from(low | (high << 4)) - 32;
        let scale = f32::from(byte(block, 192 + e / 16) as i8);
        *value = d * scale * f32::from(q);
    }
}

/// Quantizes `values` (whole blocks) into `out` (their bytes) in `format`: `Q4_0`, `Q4_1` and
/// `Q8_0` exactly as ggml's reference quantizers do (round to nearest from the f32 scale, the
/// scale then stored as f16), `Q4_K` with each sub-block's range mapped onto 0..15 and the
/// sub-block scales and minimums rounded to 6 bits of the super-block's. Other formats are an
/// error naming the format.
pub fn quantize(format: BlockFormat, values: &[f32], out: &mut [u8]) -> Result<()> {
    const KERNEL: &str = "quantized::quantize";
    if format.bytes_for(values.len()) != Some(out.len()) {
        return Err(KernelError {
            kernel: KERNEL,
            reason: format!(
                "{} values into {} bytes of {} blocks",
                values.len(),
                out.len(),
                format.name()
            ),
        });
    }
    let quantize_block: fn(&[f32], &mut [u8]) = match format {
        BlockFormat::Q4_0 => quantize_q4_0,
        BlockFormat::Q4_1 => quantize_q4_1,
        BlockFormat::Q8_0 => quantize_q8_0,
        BlockFormat::Q4K => quantize_q4k,
        other => {
            return Err(KernelError {
                kernel: KERNEL,
                reason: format!("quantizing to {} is not supported", other.name()),
            });
        }
    };
    for (block, bytes) in values
        .chunks_exact(format.block_values())
        .zip(out.chunks_exact_mut(format.block_bytes()))
    {
        quantize_block(block, bytes);
    }
    Ok(())
}

/// Writes `value` as an f16 at `at`.
fn put_half(bytes: &mut [u8], at: usize, value: f32) {
    if let Some(slot) = bytes.get_mut(at..at + 2) {
        slot.copy_from_slice(&f16::from_f32(value).to_le_bytes());
    }
}

/// Packs 32 values of 0..15: value `i < 16` in the low nibble of byte `i`, `i + 16` in its high
/// nibble.
fn put_nibbles(bytes: &mut [u8], at: usize, nibbles: &[u8; 32]) {
    let (low, high) = nibbles.split_at(16);
    for ((slot, low), high) in bytes.iter_mut().skip(at).take(16).zip(low).zip(high) {
        *slot = (low & 0x0F) | (high << 4);
    }
}

/// The inverse of a scale, 0 for a zero scale.
fn inverse(scale: f32) -> f32 {
    if scale == 0.0 { 0.0 } else { 1.0 / scale }
}

fn quantize_q4_0(block: &[f32], bytes: &mut [u8]) {
    // The value of largest magnitude, with its sign, maps to -8.
    let max = block
        .iter()
        .copied()
        .fold(0.0f32, |max, x| if x.abs() > max.abs() { x } else { max });
    let d = max / -8.0;
    let id = inverse(d);
    let nibbles: [u8; 32] = std::array::from_fn(|i| {
        let x = block.get(i).copied().unwrap_or(0.0);
        (x * id + 8.5).trunc().clamp(0.0, 15.0) as u8
    });
    put_half(bytes, 0, d);
    put_nibbles(bytes, 2, &nibbles);
}

fn quantize_q4_1(block: &[f32], bytes: &mut [u8]) {
    let max = block.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let min = block.iter().copied().fold(f32::INFINITY, f32::min);
    let d = (max - min) / 15.0;
    let id = inverse(d);
    let nibbles: [u8; 32] = std::array::from_fn(|i| {
        let x = block.get(i).copied().unwrap_or(0.0);
        ((x - min) * id + 0.5).trunc().clamp(0.0, 15.0) as u8
    });
    put_half(bytes, 0, d);
    put_half(bytes, 2, min);
    put_nibbles(bytes, 4, &nibbles);
}

fn quantize_q8_0(block: &[f32], bytes: &mut [u8]) {
    let d = block.iter().fold(0.0f32, |max, x| max.max(x.abs())) / 127.0;
    let id = inverse(d);
    put_half(bytes, 0, d);
    for (i, x) in block.iter().enumerate() {
        if let Some(slot) = bytes.get_mut(2 + i) {
            // `round` rounds halves away from zero, as ggml's `roundf`.
            *slot = (x * id).round() as i8 as u8;
        }
    }
}

fn quantize_q4k(block: &[f32], bytes: &mut [u8]) {
    // Per sub-block of 32: value ≈ scale·q − minimum, q in 0..15, minimum ≥ 0.
    let mut scales = [0.0f32; 8];
    let mut minimums = [0.0f32; 8];
    for ((sub, scale), minimum) in block.chunks_exact(32).zip(&mut scales).zip(&mut minimums) {
        let low = sub.iter().copied().fold(0.0f32, f32::min);
        let high = sub.iter().copied().fold(low, f32::max);
        *scale = (high - low) / 15.0;
        *minimum = -low;
    }
    let d = scales.iter().copied().fold(0.0f32, f32::max) / 63.0;
    let dmin = minimums.iter().copied().fold(0.0f32, f32::max) / 63.0;
    // The 6-bit sub-block scales and minimums, as stored.
    let six_bits = |value: f32, unit: f32| (value * inverse(unit)).round().clamp(0.0, 63.0) as u8;
    let stored_scales = scales.map(|scale| six_bits(scale, d));
    let stored_minimums = minimums.map(|minimum| six_bits(minimum, dmin));
    put_half(bytes, 0, d);
    put_half(bytes, 2, dmin);
    // The f16 units, as the dequantizer will read them.
    let (d, dmin) = (half_at(bytes, 0), half_at(bytes, 2));
    let stored = |values: &[u8; 8], j: usize| values.get(j).copied().unwrap_or(0);
    for j in 0..4 {
        let (sc, m) = (stored(&stored_scales, j), stored(&stored_minimums, j));
        let (sc_high, m_high) = (
            stored(&stored_scales, j + 4),
            stored(&stored_minimums, j + 4),
        );
        if let Some(slot) = bytes.get_mut(4 + j) {
            *slot = sc | ((sc_high >> 4) << 6);
        }
        if let Some(slot) = bytes.get_mut(8 + j) {
            *slot = m | ((m_high >> 4) << 6);
        }
        if let Some(slot) = bytes.get_mut(12 + j) {
            *slot = (sc_high & 0x0F) | ((m_high & 0x0F) << 4);
        }
    }
    // Value 64c + 32n + l is nibble n of qs[32c + l].
    for (sub, values) in block.chunks_exact(32).enumerate() {
        let scale = d * f32::from(stored(&stored_scales, sub));
        let minimum = dmin * f32::from(stored(&stored_minimums, sub));
        let id = inverse(scale);
        for (l, x) in values.iter().enumerate() {
            let q = ((x + minimum) * id).round().clamp(0.0, 15.0) as u8;
            if let Some(slot) = bytes.get_mut(16 + 32 * (sub / 2) + l) {
                *slot |= q << (4 * (sub % 2));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    fn fixture() -> serde_json::Value {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/gguf-blocks/blocks.json"
        );
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    /// A JSON list of f32 bit patterns.
    fn f32_bits(list: &serde_json::Value) -> Vec<f32> {
        let bits = list.as_array().unwrap().iter();
        bits.map(|bits| f32::from_bits(bits.as_u64().unwrap() as u32))
            .collect()
    }

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn every_format_dequantizes_as_the_gguf_package_does() {
        let fixture = fixture();
        for format in BlockFormat::ALL {
            let case = &fixture["formats"][format.name()];
            assert_eq!(case["block_values"], format.block_values(), "{format:?}");
            assert_eq!(case["block_bytes"], format.block_bytes(), "{format:?}");
            let bytes = hex(case["bytes"].as_str().unwrap());
            let want = f32_bits(&case["f32_bits"]);
            let mut got = vec![0.0f32; want.len()];
            dequantize(format, &bytes, &mut got).unwrap();
            for (index, (got, want)) in got.iter().zip(&want).enumerate() {
                // The package computes in f32 too, but may round `d·q - m` in another order.
                let tolerance = 1e-6 * want.abs().max(1e-3);
                assert!(
                    (got - want).abs() <= tolerance,
                    "{format:?} value {index}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn quantizers_match_the_gguf_package_bit_for_bit() {
        let fixture = fixture();
        for format in [BlockFormat::Q4_0, BlockFormat::Q4_1, BlockFormat::Q8_0] {
            let case = &fixture["quantize"][format.name()];
            let values = f32_bits(&case["f32_bits"]);
            let want = hex(case["bytes"].as_str().unwrap());
            let mut got = vec![0u8; want.len()];
            quantize(format, &values, &mut got).unwrap();
            assert_eq!(got, want, "{format:?}");
        }
    }

    #[test]
    fn q4k_round_trips_within_its_steps() {
        let values = crate::random_values(11, 3 * 256);
        let mut bytes = vec![0u8; 3 * 144];
        quantize(BlockFormat::Q4K, &values, &mut bytes).unwrap();
        let mut back = vec![0.0f32; values.len()];
        dequantize(BlockFormat::Q4K, &bytes, &mut back).unwrap();
        // Sub-block ranges are at most 2 wide: 15 steps of ≤ 2/15, and 6-bit scales.
        let worst = values
            .iter()
            .zip(&back)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 0.12, "worst error {worst}");
        assert!(quantize(BlockFormat::Q6K, &values, &mut vec![0u8; 630]).is_err());
        assert!(quantize(BlockFormat::Q4K, &values[..100], &mut bytes).is_err());
    }

    #[test]
    fn lengths_that_are_not_whole_blocks_are_errors() {
        let mut out = vec![0.0f32; 32];
        assert!(dequantize(BlockFormat::Q4_0, &[0; 18], &mut out).is_ok());
        assert!(dequantize(BlockFormat::Q4_0, &[0; 17], &mut out).is_err());
        assert!(dequantize(BlockFormat::Q4K, &[0; 144], &mut out).is_err());
        assert!(dequantize(BlockFormat::Q8_0, &[0; 34], &mut out[..31]).is_err());
        assert_eq!(BlockFormat::Q6K.bytes_for(512), Some(420));
        assert_eq!(BlockFormat::Q6K.bytes_for(100), None);
    }
}
