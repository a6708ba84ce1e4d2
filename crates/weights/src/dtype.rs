//! Element types, named as the safetensors format names them.

use serde::Serialize;

/// The element type of a tensor, with the names the safetensors format uses in its header.
///
/// Every dtype the safetensors format defines is here, so any valid file can be read and
/// inspected; converting to a compute type is [`crate::convert`]'s job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Dtype {
    /// Boolean, one byte per element (0 or 1).
    #[serde(rename = "BOOL")]
    Bool,
    /// 4-bit float (e2m1, "MXFP4" element), two elements per byte, low nibble first.
    #[serde(rename = "F4")]
    F4,
    /// 6-bit float e2m3, packed: four elements in three bytes.
    #[serde(rename = "F6_E2M3")]
    F6E2M3,
    /// 6-bit float e3m2, packed: four elements in three bytes.
    #[serde(rename = "F6_E3M2")]
    F6E3M2,
    /// Unsigned 8-bit integer.
    #[serde(rename = "U8")]
    U8,
    /// Signed 8-bit integer.
    #[serde(rename = "I8")]
    I8,
    /// 8-bit float e5m2 (OCP FP8).
    #[serde(rename = "F8_E5M2")]
    F8E5M2,
    /// 8-bit float e4m3fn (OCP FP8, no infinities).
    #[serde(rename = "F8_E4M3")]
    F8E4M3,
    /// 8-bit exponent-only scale e8m0 (MX scale factor).
    #[serde(rename = "F8_E8M0")]
    F8E8M0,
    /// 8-bit float e4m3 "fnuz" (bias 8, single NaN at 0x80).
    #[serde(rename = "F8_E4M3FNUZ")]
    F8E4M3Fnuz,
    /// 8-bit float e5m2 "fnuz" (bias 16, single NaN at 0x80).
    #[serde(rename = "F8_E5M2FNUZ")]
    F8E5M2Fnuz,
    /// Signed 16-bit integer.
    #[serde(rename = "I16")]
    I16,
    /// Unsigned 16-bit integer.
    #[serde(rename = "U16")]
    U16,
    /// IEEE half precision.
    #[serde(rename = "F16")]
    F16,
    /// bfloat16.
    #[serde(rename = "BF16")]
    BF16,
    /// Signed 32-bit integer.
    #[serde(rename = "I32")]
    I32,
    /// Unsigned 32-bit integer.
    #[serde(rename = "U32")]
    U32,
    /// IEEE single precision.
    #[serde(rename = "F32")]
    F32,
    /// Complex number of two f32 (real, imaginary).
    #[serde(rename = "C64")]
    C64,
    /// IEEE double precision.
    #[serde(rename = "F64")]
    F64,
    /// Signed 64-bit integer.
    #[serde(rename = "I64")]
    I64,
    /// Unsigned 64-bit integer.
    #[serde(rename = "U64")]
    U64,
}

impl Dtype {
    /// Every dtype, in the order of the safetensors specification.
    pub const ALL: [Dtype; 22] = [
        Dtype::Bool,
        Dtype::F4,
        Dtype::F6E2M3,
        Dtype::F6E3M2,
        Dtype::U8,
        Dtype::I8,
        Dtype::F8E5M2,
        Dtype::F8E4M3,
        Dtype::F8E8M0,
        Dtype::F8E4M3Fnuz,
        Dtype::F8E5M2Fnuz,
        Dtype::I16,
        Dtype::U16,
        Dtype::F16,
        Dtype::BF16,
        Dtype::I32,
        Dtype::U32,
        Dtype::F32,
        Dtype::C64,
        Dtype::F64,
        Dtype::I64,
        Dtype::U64,
    ];

    /// The name used in safetensors headers (`"F32"`, `"BF16"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Dtype::Bool => "BOOL",
            Dtype::F4 => "F4",
            Dtype::F6E2M3 => "F6_E2M3",
            Dtype::F6E3M2 => "F6_E3M2",
            Dtype::U8 => "U8",
            Dtype::I8 => "I8",
            Dtype::F8E5M2 => "F8_E5M2",
            Dtype::F8E4M3 => "F8_E4M3",
            Dtype::F8E8M0 => "F8_E8M0",
            Dtype::F8E4M3Fnuz => "F8_E4M3FNUZ",
            Dtype::F8E5M2Fnuz => "F8_E5M2FNUZ",
            Dtype::I16 => "I16",
            Dtype::U16 => "U16",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
            Dtype::I32 => "I32",
            Dtype::U32 => "U32",
            Dtype::F32 => "F32",
            Dtype::C64 => "C64",
            Dtype::F64 => "F64",
            Dtype::I64 => "I64",
            Dtype::U64 => "U64",
        }
    }

    /// Parses a safetensors dtype name; exact and case-sensitive, as the format specifies.
    pub fn from_name(name: &str) -> Option<Dtype> {
        Dtype::ALL.into_iter().find(|dtype| dtype.name() == name)
    }

    /// Size of one element in bits (4 for `F4`, 6 for the `F6_*` types).
    pub fn bits(self) -> u64 {
        match self {
            Dtype::F4 => 4,
            Dtype::F6E2M3 | Dtype::F6E3M2 => 6,
            Dtype::Bool
            | Dtype::U8
            | Dtype::I8
            | Dtype::F8E5M2
            | Dtype::F8E4M3
            | Dtype::F8E8M0
            | Dtype::F8E4M3Fnuz
            | Dtype::F8E5M2Fnuz => 8,
            Dtype::I16 | Dtype::U16 | Dtype::F16 | Dtype::BF16 => 16,
            Dtype::I32 | Dtype::U32 | Dtype::F32 => 32,
            Dtype::C64 | Dtype::F64 | Dtype::I64 | Dtype::U64 => 64,
        }
    }

    /// Number of bytes `element_count` elements occupy, or `None` when the count overflows or
    /// does not fill whole bytes (an odd number of `F4` elements, say).
    pub fn byte_len(self, element_count: u64) -> Option<u64> {
        let bits = element_count.checked_mul(self.bits())?;
        if bits % 8 != 0 {
            return None;
        }
        Some(bits / 8)
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
