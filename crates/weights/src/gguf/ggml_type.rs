//! The tensor element types of GGUF (ggml's `ggml_type`), with their block layouts.
//!
//! Ids and block sizes follow ggml's `ggml_type` enum and gguf-py's `GGML_QUANT_SIZES` table
//! (elements per block, bytes per block). Types with a known layout are read; the
//! importance-matrix (`IQ*`), ternary (`TQ*`), MXFP4 and removed types are refused by name.

use serde::Serialize;

/// A GGUF tensor type whose layout this crate knows.
///
/// A quantized type stores its elements in blocks along the first GGUF dimension (`ne[0]`, the
/// last dimension in row-major order): [`GgmlType::block_len`] elements in
/// [`GgmlType::block_bytes`] bytes.
#[allow(
    non_camel_case_types,
    reason = "the names ggml and GGUF give these types"
)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum GgmlType {
    /// IEEE single precision (id 0).
    F32,
    /// IEEE half precision (id 1).
    F16,
    /// 4-bit, 32 per block with an f16 scale (id 2).
    Q4_0,
    /// 4-bit, 32 per block with an f16 scale and an f16 minimum (id 3).
    Q4_1,
    /// 5-bit, 32 per block with an f16 scale (id 6).
    Q5_0,
    /// 5-bit, 32 per block with an f16 scale and an f16 minimum (id 7).
    Q5_1,
    /// 8-bit, 32 per block with an f16 scale (id 8).
    Q8_0,
    /// 8-bit, 32 per block with an f16 scale and an f16 sum (id 9).
    Q8_1,
    /// 2-bit k-quant, 256 per super-block (id 10).
    Q2_K,
    /// 3-bit k-quant, 256 per super-block (id 11).
    Q3_K,
    /// 4-bit k-quant, 256 per super-block (id 12).
    Q4_K,
    /// 5-bit k-quant, 256 per super-block (id 13).
    Q5_K,
    /// 6-bit k-quant, 256 per super-block (id 14).
    Q6_K,
    /// 8-bit k-quant, 256 per super-block, with an f32 scale and block sums (id 15).
    Q8_K,
    /// Signed 8-bit integer (id 24).
    I8,
    /// Signed 16-bit integer (id 25).
    I16,
    /// Signed 32-bit integer (id 26).
    I32,
    /// Signed 64-bit integer (id 27).
    I64,
    /// IEEE double precision (id 28).
    F64,
    /// bfloat16 (id 30).
    BF16,
}

/// Every type [`GgmlType`] knows, for tests and tables.
pub const ALL_GGML_TYPES: [GgmlType; 20] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q8_1,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::Q8_K,
    GgmlType::I8,
    GgmlType::I16,
    GgmlType::I32,
    GgmlType::I64,
    GgmlType::F64,
    GgmlType::BF16,
];

/// Elements in a k-quant super-block (ggml's `QK_K`).
const QK_K: u64 = 256;

impl GgmlType {
    /// The type with ggml id `id`, or the name of a type we refuse (`Err(Some("IQ2_XXS"))`),
    /// or `Err(None)` for an id ggml does not define.
    pub fn from_id(id: u32) -> Result<GgmlType, Option<&'static str>> {
        Ok(match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            6 => GgmlType::Q5_0,
            7 => GgmlType::Q5_1,
            8 => GgmlType::Q8_0,
            9 => GgmlType::Q8_1,
            10 => GgmlType::Q2_K,
            11 => GgmlType::Q3_K,
            12 => GgmlType::Q4_K,
            13 => GgmlType::Q5_K,
            14 => GgmlType::Q6_K,
            15 => GgmlType::Q8_K,
            24 => GgmlType::I8,
            25 => GgmlType::I16,
            26 => GgmlType::I32,
            27 => GgmlType::I64,
            28 => GgmlType::F64,
            30 => GgmlType::BF16,
            other => return Err(refused_type_name(other)),
        })
    }

    /// ggml's id of this type.
    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q5_0 => 6,
            GgmlType::Q5_1 => 7,
            GgmlType::Q8_0 => 8,
            GgmlType::Q8_1 => 9,
            GgmlType::Q2_K => 10,
            GgmlType::Q3_K => 11,
            GgmlType::Q4_K => 12,
            GgmlType::Q5_K => 13,
            GgmlType::Q6_K => 14,
            GgmlType::Q8_K => 15,
            GgmlType::I8 => 24,
            GgmlType::I16 => 25,
            GgmlType::I32 => 26,
            GgmlType::I64 => 27,
            GgmlType::F64 => 28,
            GgmlType::BF16 => 30,
        }
    }

    /// The name ggml and GGUF tools use (`"Q4_K"`, `"BF16"`).
    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "F32",
            GgmlType::F16 => "F16",
            GgmlType::Q4_0 => "Q4_0",
            GgmlType::Q4_1 => "Q4_1",
            GgmlType::Q5_0 => "Q5_0",
            GgmlType::Q5_1 => "Q5_1",
            GgmlType::Q8_0 => "Q8_0",
            GgmlType::Q8_1 => "Q8_1",
            GgmlType::Q2_K => "Q2_K",
            GgmlType::Q3_K => "Q3_K",
            GgmlType::Q4_K => "Q4_K",
            GgmlType::Q5_K => "Q5_K",
            GgmlType::Q6_K => "Q6_K",
            GgmlType::Q8_K => "Q8_K",
            GgmlType::I8 => "I8",
            GgmlType::I16 => "I16",
            GgmlType::I32 => "I32",
            GgmlType::I64 => "I64",
            GgmlType::F64 => "F64",
            GgmlType::BF16 => "BF16",
        }
    }

    /// Elements per block (1 for the plain types).
    pub fn block_len(self) -> u64 {
        match self {
            GgmlType::Q4_0
            | GgmlType::Q4_1
            | GgmlType::Q5_0
            | GgmlType::Q5_1
            | GgmlType::Q8_0
            | GgmlType::Q8_1 => 32,
            GgmlType::Q2_K
            | GgmlType::Q3_K
            | GgmlType::Q4_K
            | GgmlType::Q5_K
            | GgmlType::Q6_K
            | GgmlType::Q8_K => QK_K,
            GgmlType::F32
            | GgmlType::F16
            | GgmlType::I8
            | GgmlType::I16
            | GgmlType::I32
            | GgmlType::I64
            | GgmlType::F64
            | GgmlType::BF16 => 1,
        }
    }

    /// Bytes per block (for the plain types, the element size).
    pub fn block_bytes(self) -> u64 {
        match self {
            GgmlType::I8 => 1,
            GgmlType::F16 | GgmlType::BF16 | GgmlType::I16 => 2,
            GgmlType::F32 | GgmlType::I32 => 4,
            GgmlType::F64 | GgmlType::I64 => 8,
            // f16 scale + 32 nibbles.
            GgmlType::Q4_0 => 2 + 16,
            // f16 scale, f16 minimum + 32 nibbles.
            GgmlType::Q4_1 => 2 + 2 + 16,
            // f16 scale, 32 high bits + 32 nibbles.
            GgmlType::Q5_0 => 2 + 4 + 16,
            // f16 scale, f16 minimum, 32 high bits + 32 nibbles.
            GgmlType::Q5_1 => 2 + 2 + 4 + 16,
            // f16 scale + 32 bytes.
            GgmlType::Q8_0 => 2 + 32,
            // f16 scale, f16 sum + 32 bytes.
            GgmlType::Q8_1 => 2 + 2 + 32,
            // f16 scale, f16 minimum, 16 packed scales + 256 two-bit quants.
            GgmlType::Q2_K => 2 + 2 + QK_K / 16 + QK_K / 4,
            // f16 scale, 256 high bits, 256 two-bit quants + 12 bytes of 6-bit scales.
            GgmlType::Q3_K => 2 + QK_K / 8 + QK_K / 4 + 12,
            // f16 scale, f16 minimum, 12 bytes of 6-bit scales and minimums + 256 nibbles.
            GgmlType::Q4_K => 2 + 2 + 12 + QK_K / 2,
            // As Q4_K, plus 256 high bits.
            GgmlType::Q5_K => 2 + 2 + 12 + QK_K / 8 + QK_K / 2,
            // 256 low nibbles, 256 two-bit highs, 16 int8 scales + f16 scale.
            GgmlType::Q6_K => QK_K / 2 + QK_K / 4 + QK_K / 16 + 2,
            // f32 scale, 256 int8 quants + 16 int16 block sums.
            GgmlType::Q8_K => 4 + QK_K + QK_K / 8,
        }
    }

    /// Whether the type stores blocks of quantized values (not one plain number per element).
    pub fn is_quantized(self) -> bool {
        self.block_len() > 1
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The name of a ggml type id we do not read, when ggml defines (or once defined) it.
fn refused_type_name(id: u32) -> Option<&'static str> {
    Some(match id {
        4 => "Q4_2 (removed from ggml)",
        5 => "Q4_3 (removed from ggml)",
        16 => "IQ2_XXS",
        17 => "IQ2_XS",
        18 => "IQ3_XXS",
        19 => "IQ1_S",
        20 => "IQ4_NL",
        21 => "IQ3_S",
        22 => "IQ2_S",
        23 => "IQ4_XS",
        29 => "IQ1_M",
        31 => "Q4_0_4_4 (removed from ggml)",
        32 => "Q4_0_4_8 (removed from ggml)",
        33 => "Q4_0_8_8 (removed from ggml)",
        34 => "TQ1_0",
        35 => "TQ2_0",
        36 => "IQ4_NL_4_4 (removed from ggml)",
        37 => "IQ4_NL_4_8 (removed from ggml)",
        38 => "IQ4_NL_8_8 (removed from ggml)",
        39 => "MXFP4",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        for ggml_type in ALL_GGML_TYPES {
            assert_eq!(GgmlType::from_id(ggml_type.id()), Ok(ggml_type));
        }
    }

    #[test]
    fn block_layouts_match_the_format_table() {
        let table: [(GgmlType, u64, u64); 15] = [
            (GgmlType::F32, 1, 4),
            (GgmlType::F16, 1, 2),
            (GgmlType::Q4_0, 32, 18),
            (GgmlType::Q4_1, 32, 20),
            (GgmlType::Q5_0, 32, 22),
            (GgmlType::Q5_1, 32, 24),
            (GgmlType::Q8_0, 32, 34),
            (GgmlType::Q8_1, 32, 36),
            (GgmlType::Q2_K, 256, 84),
            (GgmlType::Q3_K, 256, 110),
            (GgmlType::Q4_K, 256, 144),
            (GgmlType::Q5_K, 256, 176),
            (GgmlType::Q6_K, 256, 210),
            (GgmlType::Q8_K, 256, 292),
            (GgmlType::BF16, 1, 2),
        ];
        for (ggml_type, block_len, block_bytes) in table {
            assert_eq!(ggml_type.block_len(), block_len, "{ggml_type}");
            assert_eq!(ggml_type.block_bytes(), block_bytes, "{ggml_type}");
        }
    }

    #[test]
    fn refused_types_are_named() {
        assert_eq!(GgmlType::from_id(16), Err(Some("IQ2_XXS")));
        assert_eq!(GgmlType::from_id(29), Err(Some("IQ1_M")));
        assert_eq!(GgmlType::from_id(4), Err(Some("Q4_2 (removed from ggml)")));
        assert_eq!(GgmlType::from_id(1000), Err(None));
    }
}
