//! Elementwise activations in place on `f32` slices, split over the rayon pool.
//!
//! The exact GELU, `x·Φ(x) = ½·x·(1 + erf(x/√2))`, is the hot one (BERT's feed-forward applies
//! it to `rows × intermediate` values per layer, and a scalar `erf` costs more than the GEMM
//! beside it). `erf` uses Abramowitz & Stegun 7.1.26 (|error| ≤ 1.5e-7, the formula PyTorch's
//! own vectorised CPU `erf` uses), with an AVX2/FMA path over 8 lanes and a portable path with
//! the same formula.

use rayon::prelude::*;

use super::rows_per_task;

/// Activation functions, by their Transformers names (`ACT2FN`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `gelu` / `gelu_python`: the exact erf GELU.
    GeluErf,
    /// `gelu_new` / `gelu_pytorch_tanh` / `gelu_fast`: the tanh approximation.
    GeluTanh,
    /// `quick_gelu`: `x · σ(1.702 x)`.
    QuickGelu,
    /// `relu`.
    Relu,
    /// `silu` / `swish`.
    Silu,
    /// `tanh`.
    Tanh,
}

impl Activation {
    /// Parses a `hidden_act` / `activation` value; unknown names give `None`.
    pub fn from_name(name: &str) -> Option<Activation> {
        Some(match name {
            "gelu" | "gelu_python" => Activation::GeluErf,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
            "quick_gelu" => Activation::QuickGelu,
            "relu" => Activation::Relu,
            "silu" | "swish" => Activation::Silu,
            "tanh" => Activation::Tanh,
            _ => return None,
        })
    }

    /// The names [`Activation::from_name`] accepts.
    pub const NAMES: &'static [&'static str] = &[
        "gelu",
        "gelu_python",
        "gelu_new",
        "gelu_pytorch_tanh",
        "gelu_fast",
        "quick_gelu",
        "relu",
        "silu",
        "swish",
        "tanh",
    ];
}

// Abramowitz & Stegun 7.1.26.
const ERF_P: f32 = 0.327_591_1;
const ERF_A1: f32 = 0.254_829_6;
const ERF_A2: f32 = -0.284_496_74;
const ERF_A3: f32 = 1.421_413_8;
const ERF_A4: f32 = -1.453_152_1;
const ERF_A5: f32 = 1.061_405_4;

/// Values per parallel task (below this, threading costs more than it saves).
const MIN_VALUES_PER_TASK: usize = super::MIN_ROWS_TO_SPLIT * 1536;

/// Applies `activation` to every value of `values`.
pub fn activation_in_place(activation: Activation, values: &mut [f32]) {
    let chunk = rows_per_task(values.len(), 1, MIN_VALUES_PER_TASK);
    values
        .par_chunks_mut(chunk)
        .for_each(|part| activation_chunk(activation, part));
}

fn activation_chunk(activation: Activation, values: &mut [f32]) {
    match activation {
        Activation::GeluErf => gelu_erf_chunk(values),
        Activation::GeluTanh => {
            const SQRT_2_OVER_PI: f32 = 0.797_884_6;
            for x in values {
                let inner = SQRT_2_OVER_PI * (*x + 0.044_715 * *x * *x * *x);
                *x = 0.5 * *x * (1.0 + inner.tanh());
            }
        }
        Activation::QuickGelu => {
            for x in values {
                *x /= 1.0 + (-1.702 * *x).exp();
            }
        }
        Activation::Relu => {
            for x in values {
                *x = x.max(0.0);
            }
        }
        Activation::Silu => {
            for x in values {
                *x /= 1.0 + (-*x).exp();
            }
        }
        Activation::Tanh => {
            for x in values {
                *x = x.tanh();
            }
        }
    }
}

fn gelu_erf_chunk(values: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if super::packed_gemm::has_avx512() {
        // SAFETY: the CPU supports AVX-512F (checked just above).
        unsafe { gelu_erf_avx512_in_place(values) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if super::has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above), the only requirement of
        // this `target_feature` function.
        unsafe { gelu_erf_avx2(values) };
        return;
    }
    gelu_erf_portable(values);
}

/// The portable GELU: same formula as the AVX2 path, one value at a time.
pub(crate) fn gelu_erf_portable(values: &mut [f32]) {
    for x in values {
        *x = gelu_erf_scalar(*x);
    }
}

fn gelu_erf_scalar(x: f32) -> f32 {
    let z = x * std::f32::consts::FRAC_1_SQRT_2;
    let a = z.abs();
    let t = 1.0 / (1.0 + ERF_P * a);
    let poly = t * (ERF_A1 + t * (ERF_A2 + t * (ERF_A3 + t * (ERF_A4 + t * ERF_A5))));
    let erf_abs = 1.0 - poly * (-a * a).exp();
    let erf = if z < 0.0 { -erf_abs } else { erf_abs };
    0.5 * x * (1.0 + erf)
}

/// GELU over 8 lanes at a time (the tail through the scalar formula).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn gelu_erf_avx2(values: &mut [f32]) {
    use std::arch::x86_64::*;
    let mut chunks = values.chunks_exact_mut(8);
    for chunk in &mut chunks {
        // SAFETY: `chunk` is exactly 8 f32s, the width of the unaligned load and store.
        let x = unsafe { _mm256_loadu_ps(chunk.as_ptr()) };
        let z = _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::FRAC_1_SQRT_2));
        let sign_bit = _mm256_set1_ps(-0.0);
        let a = _mm256_andnot_ps(sign_bit, z);
        let one = _mm256_set1_ps(1.0);
        let t = _mm256_div_ps(one, _mm256_fmadd_ps(_mm256_set1_ps(ERF_P), a, one));
        let mut poly = _mm256_set1_ps(ERF_A5);
        poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(ERF_A4));
        poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(ERF_A3));
        poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(ERF_A2));
        poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(ERF_A1));
        poly = _mm256_mul_ps(poly, t);
        let neg_square = _mm256_mul_ps(_mm256_xor_ps(a, sign_bit), a);
        let erf_abs = _mm256_fnmadd_ps(poly, exp_avx2(neg_square), one);
        // erf is odd: give |erf| the sign of z.
        let erf = _mm256_or_ps(erf_abs, _mm256_and_ps(z, sign_bit));
        let half_x = _mm256_mul_ps(x, _mm256_set1_ps(0.5));
        let y = _mm256_fmadd_ps(half_x, erf, half_x);
        // SAFETY: as for the load, 8 f32s.
        unsafe { _mm256_storeu_ps(chunk.as_mut_ptr(), y) };
    }
    gelu_erf_portable(chunks.into_remainder());
}

/// GELU over 16 lanes at a time (the tail through the scalar formula).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn gelu_erf_avx512_in_place(values: &mut [f32]) {
    use std::arch::x86_64::*;
    let mut chunks = values.chunks_exact_mut(16);
    for chunk in &mut chunks {
        // SAFETY: `chunk` is exactly 16 f32s, the width of the unaligned load and store.
        unsafe {
            let y = gelu_erf_avx512(_mm512_loadu_ps(chunk.as_ptr()));
            _mm512_storeu_ps(chunk.as_mut_ptr(), y);
        }
    }
    gelu_erf_portable(chunks.into_remainder());
}

/// The AVX2 path's GELU on 16 lanes: the same operations in the same order, so the same
/// results lane for lane (the packed GEMM applies it to its accumulators before storing them).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(crate) fn gelu_erf_avx512(x: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    let z = _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::FRAC_1_SQRT_2));
    let sign_bit = _mm512_set1_epi32(i32::MIN);
    let a = _mm512_castsi512_ps(_mm512_andnot_si512(sign_bit, _mm512_castps_si512(z)));
    let one = _mm512_set1_ps(1.0);
    let t = _mm512_div_ps(one, _mm512_fmadd_ps(_mm512_set1_ps(ERF_P), a, one));
    let mut poly = _mm512_set1_ps(ERF_A5);
    poly = _mm512_fmadd_ps(poly, t, _mm512_set1_ps(ERF_A4));
    poly = _mm512_fmadd_ps(poly, t, _mm512_set1_ps(ERF_A3));
    poly = _mm512_fmadd_ps(poly, t, _mm512_set1_ps(ERF_A2));
    poly = _mm512_fmadd_ps(poly, t, _mm512_set1_ps(ERF_A1));
    poly = _mm512_mul_ps(poly, t);
    let negative_a = _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(a), sign_bit));
    let neg_square = _mm512_mul_ps(negative_a, a);
    let erf_abs = _mm512_fnmadd_ps(poly, exp_avx512(neg_square), one);
    // erf is odd: give |erf| the sign of z.
    let erf = _mm512_castsi512_ps(_mm512_or_si512(
        _mm512_castps_si512(erf_abs),
        _mm512_and_si512(_mm512_castps_si512(z), sign_bit),
    ));
    let half_x = _mm512_mul_ps(x, _mm512_set1_ps(0.5));
    _mm512_fmadd_ps(half_x, erf, half_x)
}

/// `exp(x)` in place for values `x ≤ 0` (softmax weights after subtracting the maximum), with
/// the AVX2 path of the GELU's `exp` when the CPU has it.
pub(crate) fn exp_non_positive_in_place(values: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if super::has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above), the only requirement of
        // this `target_feature` function.
        unsafe { exp_non_positive_avx2(values) };
        return;
    }
    for x in values {
        *x = x.exp();
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn exp_non_positive_avx2(values: &mut [f32]) {
    use std::arch::x86_64::*;
    let mut chunks = values.chunks_exact_mut(8);
    for chunk in &mut chunks {
        // SAFETY: `chunk` is exactly 8 f32s, the width of the unaligned load and store.
        let x = unsafe { _mm256_loadu_ps(chunk.as_ptr()) };
        let y = exp_avx2(x);
        // SAFETY: as for the load.
        unsafe { _mm256_storeu_ps(chunk.as_mut_ptr(), y) };
    }
    for x in chunks.into_remainder() {
        *x = x.exp();
    }
}

/// `exp(x)` for 8 lanes with `x ≤ 0` (the GELU's `exp(-z²)`): range reduction `x = n·ln2 + r`,
/// a degree-6 polynomial for `exp(r)` (Cephes' `expf` coefficients, ~1 ulp), `2ⁿ` through the
/// exponent bits. Inputs below -87.3 are clamped (the result, ~1e-38, is then multiplied by a
/// polynomial below 1 and subtracted from 1, where it no longer counts).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn exp_avx2(x: std::arch::x86_64::__m256) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    let x = _mm256_max_ps(x, _mm256_set1_ps(-87.3));
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        x,
        _mm256_set1_ps(std::f32::consts::LOG2_E),
    ));
    // ln 2 split in a high part exact in f32 and the remainder.
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
    let mut p = _mm256_set1_ps(1.987_569_1e-4);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.398_2e-3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.333_452e-3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.166_579_6e-2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.666_666_5e-1));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5));
    let r_squared = _mm256_mul_ps(r, r);
    let exp_r = _mm256_add_ps(_mm256_fmadd_ps(p, r_squared, r), _mm256_set1_ps(1.0));
    // 2ⁿ: n + 127 in the exponent field (n ≥ -126 after the clamp).
    let biased = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
    let two_to_n = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(biased));
    _mm256_mul_ps(exp_r, two_to_n)
}

/// [`exp_avx2`] on 16 lanes (same reduction, polynomial and clamp).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(crate) fn exp_avx512(x: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    let x = _mm512_max_ps(x, _mm512_set1_ps(-87.3));
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
        _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
    );
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_359_4), x);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.121_944_4e-4), r);
    let mut p = _mm512_set1_ps(1.987_569_1e-4);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.398_2e-3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.333_452e-3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.166_579_6e-2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.666_666_5e-1));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5));
    let r_squared = _mm512_mul_ps(r, r);
    let exp_r = _mm512_add_ps(_mm512_fmadd_ps(p, r_squared, r), _mm512_set1_ps(1.0));
    let biased = _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127));
    let two_to_n = _mm512_castsi512_ps(_mm512_slli_epi32::<23>(biased));
    _mm512_mul_ps(exp_r, two_to_n)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::indexing_slicing, clippy::unwrap_used)]
    use super::*;
    use crate::random_values;
    use candle_core::{Device, Tensor};

    fn inputs() -> Vec<f32> {
        // [-12, 12) plus the values where formulas break: 0, ±tiny, huge.
        let mut values: Vec<f32> = random_values(7, 100_003).iter().map(|v| v * 12.0).collect();
        values.extend([
            0.0, -0.0, 1e-30, -1e-30, 1e-7, -1e-7, 50.0, -50.0, 1e4, -1e4,
        ]);
        values
    }

    #[test]
    fn gelu_erf_matches_candle_exact_gelu() {
        let x = inputs();
        let want = Tensor::new(x.as_slice(), &Device::Cpu)
            .unwrap()
            .gelu_erf()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let mut fast = x.clone();
        activation_in_place(Activation::GeluErf, &mut fast);
        let mut portable = x.clone();
        gelu_erf_portable(&mut portable);
        for got in [&fast, &portable] {
            let worst = got
                .iter()
                .zip(&want)
                .zip(&x)
                .map(|((g, w), x)| (g - w).abs() / x.abs().max(1.0))
                .fold(0.0f32, f32::max);
            // erf within 1.5e-7 ⇒ GELU within ~1e-7·max(|x|, 1): measured 2.3e-7.
            eprintln!("measured error: {}", worst);
            assert!(worst < 5e-7, "worst error {worst}");
        }
        // Exact at the ends of the range.
        assert_eq!(fast[fast.len() - 1], 0.0);
        assert_eq!(fast[fast.len() - 2], 1e4);
    }

    #[test]
    fn gelu_erf_matches_torch_values() {
        // torch.nn.functional.gelu on these inputs (torch 2.15).
        let mut x = vec![-3.0f32, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0, 1.5, -2.25];
        let want = [
            -0.004_050_225,
            -0.158_655_26,
            -0.154_268_77,
            0.0,
            0.345_731_23,
            0.841_344_7,
            2.995_949_7,
            1.399_789_1,
            -0.027_505_048,
        ];
        activation_in_place(Activation::GeluErf, &mut x);
        for (got, want) in x.iter().zip(want) {
            assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn gelu_paths_agree_bit_for_bit() {
        if !(crate::packed_gemm::has_avx512() && crate::has_avx2_fma()) {
            eprintln!("no AVX-512F here: only one vector path to compare");
            return;
        }
        // Special values first, and a multiple of 16 values: no scalar tail on either path
        // (the scalar formula's std `exp` differs from the vector polynomial in the last bit).
        let mut x = inputs();
        x.rotate_right(10);
        x.truncate(x.len() / 16 * 16);
        let (mut wide, mut narrow) = (x.clone(), x.clone());
        // SAFETY: both instruction sets checked above.
        unsafe {
            gelu_erf_avx512_in_place(&mut wide);
            gelu_erf_avx2(&mut narrow);
        }
        // The same operations in the same order (tails through the same scalar formula).
        assert!(
            wide.iter()
                .zip(&narrow)
                .all(|(a, b)| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()))
        );
    }

    #[test]
    fn exp_of_non_positive_values_matches_std() {
        let mut x: Vec<f32> = random_values(8, 10_001)
            .iter()
            .map(|v| -(v.abs() * 100.0))
            .collect();
        x.extend([0.0, -0.0, -87.0, -88.0, -1e6, f32::NEG_INFINITY]);
        let want: Vec<f32> = x.iter().map(|v| v.exp()).collect();
        exp_non_positive_in_place(&mut x);
        // Cephes' polynomial: about 1 ulp where the result is a normal number (measured
        // 1.2e-7 relative); below -87.3 the result is clamped near 1e-38 instead of 0 or a
        // subnormal.
        let worst = x
            .iter()
            .zip(&want)
            .filter(|(_, w)| **w > 1e-37)
            .map(|(g, w)| (g - w).abs() / w)
            .fold(0.0f32, f32::max);
        eprintln!("measured relative error: {worst}");
        assert!(worst < 4e-7, "{worst}");
        assert!(x.iter().all(|v| (0.0..=1.0).contains(v)));
    }

    /// The textbook formula of each activation, in f64.
    fn plain_activation(activation: Activation, x: f32) -> f32 {
        let x = f64::from(x);
        let sigmoid = |v: f64| 1.0 / (1.0 + (-v).exp());
        let y = match activation {
            Activation::GeluErf => unreachable!("compared with candle's erf GELU above"),
            Activation::GeluTanh => {
                let inner = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044_715 * x.powi(3));
                0.5 * x * (1.0 + inner.tanh())
            }
            Activation::QuickGelu => x * sigmoid(1.702 * x),
            Activation::Relu => x.max(0.0),
            Activation::Silu => x * sigmoid(x),
            Activation::Tanh => x.tanh(),
        };
        y as f32
    }

    #[test]
    fn other_activations_match_their_formulas() {
        let x: Vec<f32> = random_values(9, 5000).iter().map(|v| v * 8.0).collect();
        for activation in [
            Activation::GeluTanh,
            Activation::QuickGelu,
            Activation::Relu,
            Activation::Silu,
            Activation::Tanh,
        ] {
            let want: Vec<f32> = x.iter().map(|&v| plain_activation(activation, v)).collect();
            let mut got = x.clone();
            activation_in_place(activation, &mut got);
            let worst = crate::max_abs_diff(&got, &want);
            // f32 formulas against f64 ones: a few ulp of values up to 8.
            eprintln!("measured error: {}", worst);
            assert!(worst < 2e-6, "{activation:?}: {worst}");
        }
    }

    #[test]
    fn names_are_transformers_names() {
        for name in Activation::NAMES {
            assert!(Activation::from_name(name).is_some(), "{name}");
        }
        assert_eq!(
            Activation::from_name("gelu_new"),
            Some(Activation::GeluTanh)
        );
        assert_eq!(Activation::from_name("GELU"), None);
    }
}
