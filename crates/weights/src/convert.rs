//! Conversion of any stored dtype to a compute dtype, in one place.
//!
//! Every decoder reads little-endian bytes with `from_le_bytes` on chunks, so the input may sit
//! at any address (a tensor in a memory map need not be aligned for its type). Each element is
//! decoded exactly to `f64` (every stored float format, and every integer up to 2^53, is exact
//! there), then rounded once to the compute type.
//!
//! Packed formats, as PyTorch and ml_dtypes store them:
//! - `F4` (e2m1, PyTorch `float4_e2m1fn_x2`): two elements per byte, element `2i` in the **low
//!   nibble** and element `2i + 1` in the high nibble.
//! - `F6_E2M3` / `F6_E3M2`: four elements in three bytes, read as a little-endian 24-bit word
//!   `b0 | b1 << 8 | b2 << 16`; element `j` of the group is bits `6j .. 6j + 6` (the same
//!   least-significant-bits-first order as `F4`).
//!
//! `C64` cannot be converted: a complex number has no real compute type.

use crate::checkpoint::TensorView;
use crate::dtype::Dtype;

/// The float types models compute in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ComputeDtype {
    /// IEEE single precision.
    F32,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    BF16,
}

impl ComputeDtype {
    /// The matching stored dtype.
    pub fn dtype(self) -> Dtype {
        match self {
            ComputeDtype::F32 => Dtype::F32,
            ComputeDtype::F16 => Dtype::F16,
            ComputeDtype::BF16 => Dtype::BF16,
        }
    }
}

/// Why a tensor could not be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConvertError {
    /// Complex tensors have no real compute type.
    #[error("tensor `{tensor}` is complex ({dtype}); it has no real compute dtype")]
    Complex {
        /// The tensor.
        tensor: String,
        /// Its dtype.
        dtype: Dtype,
    },

    /// The view's bytes do not match its shape and dtype.
    #[error(
        "tensor `{tensor}` ({dtype}, shape {shape:?}) holds {actual} bytes, which does not \
         match its shape"
    )]
    LengthMismatch {
        /// The tensor.
        tensor: String,
        /// Its dtype.
        dtype: Dtype,
        /// Its shape.
        shape: Vec<usize>,
        /// Bytes present.
        actual: usize,
    },
}

/// Converts a tensor of any real dtype to `f32` values.
pub fn to_f32(view: &TensorView<'_>) -> Result<Vec<f32>, ConvertError> {
    let mut out = Vec::with_capacity(checked_len(view)?);
    decode(view, |value| out.push(value as f32))?;
    Ok(out)
}

/// Converts a tensor of any real dtype to IEEE half values.
pub fn to_f16(view: &TensorView<'_>) -> Result<Vec<half::f16>, ConvertError> {
    let mut out = Vec::with_capacity(checked_len(view)?);
    decode(view, |value| out.push(half::f16::from_f64(value)))?;
    Ok(out)
}

/// Converts a tensor of any real dtype to bfloat16 values.
pub fn to_bf16(view: &TensorView<'_>) -> Result<Vec<half::bf16>, ConvertError> {
    let mut out = Vec::with_capacity(checked_len(view)?);
    decode(view, |value| out.push(half::bf16::from_f64(value)))?;
    Ok(out)
}

/// Converts a tensor of any real dtype to `target`, as little-endian bytes.
pub fn convert(view: &TensorView<'_>, target: ComputeDtype) -> Result<Vec<u8>, ConvertError> {
    let count = checked_len(view)?;
    Ok(match target {
        ComputeDtype::F32 => {
            let mut out = Vec::with_capacity(count * 4);
            decode(view, |value| {
                out.extend_from_slice(&(value as f32).to_le_bytes());
            })?;
            out
        }
        ComputeDtype::F16 => {
            let mut out = Vec::with_capacity(count * 2);
            decode(view, |value| {
                out.extend_from_slice(&half::f16::from_f64(value).to_le_bytes());
            })?;
            out
        }
        ComputeDtype::BF16 => {
            let mut out = Vec::with_capacity(count * 2);
            decode(view, |value| {
                out.extend_from_slice(&half::bf16::from_f64(value).to_le_bytes());
            })?;
            out
        }
    })
}

/// The element count, after checking that the bytes match shape × dtype.
fn checked_len(view: &TensorView<'_>) -> Result<usize, ConvertError> {
    let count = view
        .shape
        .iter()
        .try_fold(1u64, |acc, &dim| acc.checked_mul(dim as u64));
    let expected = count.and_then(|count| view.dtype.byte_len(count));
    match (count, expected) {
        (Some(count), Some(bytes)) if bytes == view.data.len() as u64 => {
            usize::try_from(count).map_err(|_| mismatch(view))
        }
        _ => Err(mismatch(view)),
    }
}

fn mismatch(view: &TensorView<'_>) -> ConvertError {
    ConvertError::LengthMismatch {
        tensor: view.name.to_string(),
        dtype: view.dtype,
        shape: view.shape.to_vec(),
        actual: view.data.len(),
    }
}

/// How a small float format spends its top exponent and its sign bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Specials {
    /// IEEE-like: top exponent is infinity (mantissa 0) or NaN (`F8_E5M2`).
    Ieee,
    /// "fn": no infinities; only all-ones exponent and mantissa is NaN (`F8_E4M3`).
    FiniteNanAllOnes,
    /// "fnuz": no infinities, no negative zero; the sign-only pattern `0x80` is the one NaN.
    FiniteNanNegativeZero,
    /// Every pattern is a finite number (`F4`, `F6_*`).
    AllFinite,
}

/// A small float format: exponent bits, mantissa bits, bias, specials.
#[derive(Debug, Clone, Copy)]
struct MiniFloat {
    exponent_bits: u32,
    mantissa_bits: u32,
    bias: i32,
    specials: Specials,
}

const E4M3FN: MiniFloat = MiniFloat {
    exponent_bits: 4,
    mantissa_bits: 3,
    bias: 7,
    specials: Specials::FiniteNanAllOnes,
};
const E5M2: MiniFloat = MiniFloat {
    exponent_bits: 5,
    mantissa_bits: 2,
    bias: 15,
    specials: Specials::Ieee,
};
const E4M3FNUZ: MiniFloat = MiniFloat {
    exponent_bits: 4,
    mantissa_bits: 3,
    bias: 8,
    specials: Specials::FiniteNanNegativeZero,
};
const E5M2FNUZ: MiniFloat = MiniFloat {
    exponent_bits: 5,
    mantissa_bits: 2,
    bias: 16,
    specials: Specials::FiniteNanNegativeZero,
};
const E2M1: MiniFloat = MiniFloat {
    exponent_bits: 2,
    mantissa_bits: 1,
    bias: 1,
    specials: Specials::AllFinite,
};
const E2M3: MiniFloat = MiniFloat {
    exponent_bits: 2,
    mantissa_bits: 3,
    bias: 1,
    specials: Specials::AllFinite,
};
const E3M2: MiniFloat = MiniFloat {
    exponent_bits: 3,
    mantissa_bits: 2,
    bias: 3,
    specials: Specials::AllFinite,
};

impl MiniFloat {
    /// The exact value of bit pattern `code` (only the format's low bits are read).
    fn decode(self, code: u32) -> f64 {
        let width = 1 + self.exponent_bits + self.mantissa_bits;
        let code = code & ((1 << width) - 1);
        let sign_bit = 1 << (width - 1);
        let exponent_mask = (1 << self.exponent_bits) - 1;
        let mantissa_mask = (1 << self.mantissa_bits) - 1;
        let negative = code & sign_bit != 0;
        let exponent = (code >> self.mantissa_bits) & exponent_mask;
        let mantissa = code & mantissa_mask;
        match self.specials {
            Specials::Ieee if exponent == exponent_mask => {
                return if mantissa != 0 {
                    f64::NAN
                } else if negative {
                    f64::NEG_INFINITY
                } else {
                    f64::INFINITY
                };
            }
            Specials::FiniteNanAllOnes
                if exponent == exponent_mask && mantissa == mantissa_mask =>
            {
                return f64::NAN;
            }
            Specials::FiniteNanNegativeZero if code == sign_bit => return f64::NAN,
            _ => {}
        }
        let mantissa_scale = f64::from(1u32 << self.mantissa_bits);
        let magnitude = if exponent == 0 {
            // Subnormal: 0.m × 2^(1 - bias).
            f64::from(mantissa) / mantissa_scale * pow2(1 - self.bias)
        } else {
            (1.0 + f64::from(mantissa) / mantissa_scale) * pow2(exponent as i32 - self.bias)
        };
        if negative { -magnitude } else { magnitude }
    }
}

/// 2^exponent, exactly (the exponents here are small).
fn pow2(exponent: i32) -> f64 {
    2f64.powi(exponent)
}

/// `F8_E8M0`: 2^(e − 127), with 0xFF the NaN (no sign, no zero).
fn decode_e8m0(code: u8) -> f64 {
    if code == 0xFF {
        f64::NAN
    } else {
        pow2(i32::from(code) - 127)
    }
}

/// Calls `push` with every element of `view`, decoded exactly, in order.
fn decode(view: &TensorView<'_>, mut push: impl FnMut(f64)) -> Result<(), ConvertError> {
    checked_len(view)?;
    let data = view.data;
    macro_rules! each_le {
        ($ty:ty, $n:literal, $to_f64:expr) => {
            for chunk in data.chunks_exact($n) {
                let mut bytes = [0u8; $n];
                bytes.copy_from_slice(chunk);
                push($to_f64(<$ty>::from_le_bytes(bytes)));
            }
        };
    }
    match view.dtype {
        Dtype::Bool => data.iter().for_each(|&b| push(f64::from(u8::from(b != 0)))),
        Dtype::U8 => data.iter().for_each(|&b| push(f64::from(b))),
        Dtype::I8 => data.iter().for_each(|&b| push(f64::from(b as i8))),
        Dtype::I16 => each_le!(i16, 2, f64::from),
        Dtype::U16 => each_le!(u16, 2, f64::from),
        Dtype::I32 => each_le!(i32, 4, f64::from),
        Dtype::U32 => each_le!(u32, 4, f64::from),
        Dtype::I64 => each_le!(i64, 8, |v: i64| v as f64),
        Dtype::U64 => each_le!(u64, 8, |v: u64| v as f64),
        Dtype::F16 => each_le!(u16, 2, |bits| half::f16::from_bits(bits).to_f64()),
        Dtype::BF16 => each_le!(u16, 2, |bits| half::bf16::from_bits(bits).to_f64()),
        Dtype::F32 => each_le!(f32, 4, f64::from),
        Dtype::F64 => each_le!(f64, 8, |v: f64| v),
        Dtype::F8E4M3 => data.iter().for_each(|&b| push(E4M3FN.decode(b.into()))),
        Dtype::F8E5M2 => data.iter().for_each(|&b| push(E5M2.decode(b.into()))),
        Dtype::F8E4M3Fnuz => data.iter().for_each(|&b| push(E4M3FNUZ.decode(b.into()))),
        Dtype::F8E5M2Fnuz => data.iter().for_each(|&b| push(E5M2FNUZ.decode(b.into()))),
        Dtype::F8E8M0 => data.iter().for_each(|&b| push(decode_e8m0(b))),
        Dtype::F4 => data.iter().for_each(|&b| {
            push(E2M1.decode(u32::from(b & 0x0F)));
            push(E2M1.decode(u32::from(b >> 4)));
        }),
        Dtype::F6E2M3 | Dtype::F6E3M2 => {
            let format = if view.dtype == Dtype::F6E2M3 {
                E2M3
            } else {
                E3M2
            };
            for chunk in data.chunks_exact(3) {
                let word = chunk
                    .iter()
                    .rev()
                    .fold(0u32, |acc, &byte| (acc << 8) | u32::from(byte));
                for j in 0..4 {
                    push(format.decode(word >> (6 * j)));
                }
            }
        }
        Dtype::C64 => {
            return Err(ConvertError::Complex {
                tensor: view.name.to_string(),
                dtype: view.dtype,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view<'a>(dtype: Dtype, shape: &'a [usize], data: &'a [u8]) -> TensorView<'a> {
        TensorView {
            name: "t",
            dtype,
            shape,
            data,
        }
    }

    fn f32s(dtype: Dtype, data: &[u8], count: usize) -> Vec<f32> {
        to_f32(&view(dtype, &[count], data)).unwrap()
    }

    /// Compares bit patterns, so that NaN == NaN and -0 != +0.
    fn assert_same(actual: &[f32], expected: &[f32]) {
        assert_eq!(actual.len(), expected.len());
        for (index, (a, e)) in actual.iter().zip(expected).enumerate() {
            assert!(
                a.to_bits() == e.to_bits() || (a.is_nan() && e.is_nan()),
                "element {index}: {a} != {e}"
            );
        }
    }

    // The 8-bit float tables below were hand-computed and cross-checked against torch 2.x
    // (`torch.tensor(codes, dtype=torch.uint8).view(torch.float8_*).float()`). torch cannot
    // decode `float4_e2m1fn_x2`, so the F4/F6 tables are hand-computed from the OCP MX spec.
    #[test]
    fn e4m3fn() {
        let codes = [0x7E, 0x01, 0x7F, 0xFF, 0x80, 0x38, 0x08, 0x07, 0xFE, 0x40];
        let expected = [
            448.0,
            2f32.powi(-9),
            f32::NAN,
            f32::NAN,
            -0.0,
            1.0,
            2f32.powi(-6),
            7.0 * 2f32.powi(-9),
            -448.0,
            2.0,
        ];
        assert_same(&f32s(Dtype::F8E4M3, &codes, codes.len()), &expected);
    }

    #[test]
    fn e5m2() {
        let codes = [0x7B, 0x7C, 0xFC, 0x7D, 0x7F, 0x01, 0x3C, 0x80, 0x04];
        let expected = [
            57344.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            f32::NAN,
            2f32.powi(-16),
            1.0,
            -0.0,
            2f32.powi(-14),
        ];
        assert_same(&f32s(Dtype::F8E5M2, &codes, codes.len()), &expected);
    }

    #[test]
    fn e4m3fnuz() {
        let codes = [0x80, 0x00, 0x7F, 0xFF, 0x01, 0x40, 0x7E];
        let expected = [f32::NAN, 0.0, 240.0, -240.0, 2f32.powi(-10), 1.0, 224.0];
        assert_same(&f32s(Dtype::F8E4M3Fnuz, &codes, codes.len()), &expected);
    }

    #[test]
    fn e5m2fnuz() {
        let codes = [0x80, 0x00, 0x7F, 0xFF, 0x01, 0x40, 0x7C];
        let expected = [
            f32::NAN,
            0.0,
            57344.0,
            -57344.0,
            2f32.powi(-17),
            1.0,
            32768.0,
        ];
        assert_same(&f32s(Dtype::F8E5M2Fnuz, &codes, codes.len()), &expected);
    }

    #[test]
    fn e8m0() {
        let codes = [0x7F, 0x80, 0x00, 0xFE, 0xFF, 0x7E];
        let expected = [1.0, 2.0, 2f32.powi(-127), 2f32.powi(127), f32::NAN, 0.5];
        assert_same(&f32s(Dtype::F8E8M0, &codes, codes.len()), &expected);
    }

    #[test]
    fn f4_e2m1_low_nibble_first() {
        // Nibbles 0..=15 in order, packed low nibble first.
        let data = [0x10, 0x32, 0x54, 0x76, 0x98, 0xBA, 0xDC, 0xFE];
        let positives = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0];
        let mut expected = positives.to_vec();
        expected.extend(positives.iter().map(|v| -v));
        assert_same(&f32s(Dtype::F4, &data, 16), &expected);
    }

    /// Packs four 6-bit codes into three bytes, least significant bits first.
    fn pack6(codes: [u32; 4]) -> [u8; 3] {
        let word = codes
            .iter()
            .enumerate()
            .fold(0u32, |acc, (j, &code)| acc | (code << (6 * j)));
        let bytes = word.to_le_bytes();
        [bytes[0], bytes[1], bytes[2]]
    }

    #[test]
    fn f6_e2m3() {
        // 0b0_11_111 = 7.5 (max), 0b0_00_001 = 0.125 (min subnormal), 0b0_01_000 = 1,
        // 0b1_10_100 = -(1 + 4/8) * 2 = -3.
        let data = pack6([0b011111, 0b000001, 0b001000, 0b110100]);
        assert_same(&f32s(Dtype::F6E2M3, &data, 4), &[7.5, 0.125, 1.0, -3.0]);
    }

    #[test]
    fn f6_e3m2() {
        // 0b0_111_11 = 28 (max), 0b0_000_01 = 0.0625, 0b0_011_00 = 1, 0b1_100_10 = -3.
        let data = pack6([0b011111, 0b000001, 0b001100, 0b110010]);
        assert_same(&f32s(Dtype::F6E3M2, &data, 4), &[28.0, 0.0625, 1.0, -3.0]);
    }

    #[test]
    fn integers_and_bool() {
        assert_same(&f32s(Dtype::Bool, &[0, 1, 7], 3), &[0.0, 1.0, 1.0]);
        assert_same(&f32s(Dtype::I8, &[0xFF, 0x80], 2), &[-1.0, -128.0]);
        assert_same(&f32s(Dtype::U8, &[0xFF], 1), &[255.0]);
        assert_same(&f32s(Dtype::I16, &(-300i16).to_le_bytes(), 1), &[-300.0]);
        assert_same(&f32s(Dtype::U16, &65535u16.to_le_bytes(), 1), &[65535.0]);
        assert_same(&f32s(Dtype::I32, &(-7i32).to_le_bytes(), 1), &[-7.0]);
        assert_same(&f32s(Dtype::U32, &7u32.to_le_bytes(), 1), &[7.0]);
        assert_same(&f32s(Dtype::I64, &(-1i64).to_le_bytes(), 1), &[-1.0]);
        assert_same(
            &f32s(Dtype::U64, &u64::MAX.to_le_bytes(), 1),
            &[18446744073709551615.0],
        );
    }

    #[test]
    fn ieee_floats_unaligned() {
        // Offset the data by one byte so it is not aligned for any wide type.
        let mut buffer = vec![0u8];
        buffer.extend_from_slice(&1.5f64.to_le_bytes());
        buffer.extend_from_slice(&(-2.25f64).to_le_bytes());
        assert_same(&f32s(Dtype::F64, &buffer[1..], 2), &[1.5, -2.25]);
        let mut buffer = vec![0u8];
        buffer.extend_from_slice(&3.5f32.to_le_bytes());
        assert_same(&f32s(Dtype::F32, &buffer[1..], 1), &[3.5]);
        assert_same(
            &f32s(Dtype::F16, &[0x00, 0x3C, 0x00, 0xC0], 2),
            &[1.0, -2.0],
        );
        assert_same(
            &f32s(Dtype::BF16, &[0x80, 0x3F, 0x49, 0x40], 2),
            &[1.0, 3.140625],
        );
    }

    #[test]
    fn compute_targets() {
        let data = 1.0f32.to_le_bytes();
        let v = view(Dtype::F32, &[1], &data);
        assert_eq!(
            convert(&v, ComputeDtype::F32).unwrap(),
            1.0f32.to_le_bytes()
        );
        assert_eq!(convert(&v, ComputeDtype::F16).unwrap(), [0x00, 0x3C]);
        assert_eq!(convert(&v, ComputeDtype::BF16).unwrap(), [0x80, 0x3F]);
        let e4m3 = [0x7Eu8];
        let v = view(Dtype::F8E4M3, &[1], &e4m3);
        assert_eq!(to_f16(&v).unwrap(), [half::f16::from_f32(448.0)]);
        assert_eq!(to_bf16(&v).unwrap(), [half::bf16::from_f32(448.0)]);
        // Rounding happens once: 1 + 2^-11 + 2^-30 rounds up in f16 (not to even via f32).
        let x = 1.0 + 2f64.powi(-11) + 2f64.powi(-30);
        let data = x.to_le_bytes();
        let v = view(Dtype::F64, &[1], &data);
        assert_eq!(to_f16(&v).unwrap(), [half::f16::from_f64(x)]);
        assert_eq!(
            convert(&view(Dtype::F32, &[0], &[]), ComputeDtype::F16).unwrap(),
            Vec::<u8>::new()
        );
    }

    #[test]
    fn refusals() {
        let data = [0u8; 8];
        assert!(matches!(
            to_f32(&view(Dtype::C64, &[1], &data)),
            Err(ConvertError::Complex { .. })
        ));
        assert!(matches!(
            to_f32(&view(Dtype::F32, &[3], &data)),
            Err(ConvertError::LengthMismatch { .. })
        ));
        assert!(matches!(
            to_f32(&view(Dtype::F4, &[3], &data[..1])),
            Err(ConvertError::LengthMismatch { .. })
        ));
        assert!(matches!(
            to_f32(&view(Dtype::U8, &[usize::MAX, 2], &data)),
            Err(ConvertError::LengthMismatch { .. })
        ));
    }
}
