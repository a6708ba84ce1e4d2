//! Layer norm of rows in place (`nn.LayerNorm` over the last dimension), split over the rayon
//! pool. In the encoder the residual has already been added by the GEMM that wrote the rows
//! (the packed kernel's `Start::OutputAndBias`), so "residual + layer norm" is this one pass
//! over data still in cache.
//!
//! Mean and variance are two passes over the row (as PyTorch computes them, no
//! `E[x²] - E[x]²` cancellation), each summed over 8 independent lanes; the row loop is
//! compiled a second time with AVX2/FMA enabled and chosen at run time.

use rayon::prelude::*;

use super::{check_len, rows_per_task};
use crate::Result;

/// Values per parallel task.
const MIN_VALUES_PER_TASK: usize = super::MIN_ROWS_TO_SPLIT * 384;

/// Normalizes each `width`-wide row of `values`: `(x - mean) / √(var + eps) · weight + bias`.
pub fn layer_norm_in_place(
    values: &mut [f32],
    width: usize,
    weight: &[f32],
    bias: &[f32],
    eps: f32,
) -> Result<()> {
    const KERNEL: &str = "layer_norm_in_place";
    check_len(KERNEL, "weight", weight.len(), width)?;
    check_len(KERNEL, "bias", bias.len(), width)?;
    if width == 0 {
        return Ok(());
    }
    check_len(KERNEL, "values", values.len(), values.len() / width * width)?;
    let rows = values.len() / width;
    let chunk_rows = rows_per_task(rows, width, MIN_VALUES_PER_TASK);
    values
        .par_chunks_mut(chunk_rows * width)
        .for_each(|part| normalize_rows(part, width, weight, bias, eps));
    Ok(())
}

fn normalize_rows(values: &mut [f32], width: usize, weight: &[f32], bias: &[f32], eps: f32) {
    #[cfg(target_arch = "x86_64")]
    if super::has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above), the only requirement of
        // this `target_feature` function.
        unsafe { normalize_rows_avx2(values, width, weight, bias, eps) };
        return;
    }
    normalize_rows_portable(values, width, weight, bias, eps);
}

/// The same loop compiled with AVX2/FMA available to the vectorizer.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn normalize_rows_avx2(values: &mut [f32], width: usize, weight: &[f32], bias: &[f32], eps: f32) {
    normalize_rows_portable(values, width, weight, bias, eps);
}

#[inline(always)]
fn normalize_rows_portable(
    values: &mut [f32],
    width: usize,
    weight: &[f32],
    bias: &[f32],
    eps: f32,
) {
    let scale = 1.0 / width as f32;
    for row in values.chunks_exact_mut(width) {
        let mean = lane_sum(row, |x| x) * scale;
        let variance = lane_sum(row, |x| (x - mean) * (x - mean)) * scale;
        let inverse = 1.0 / (variance + eps).sqrt();
        for ((x, w), b) in row.iter_mut().zip(weight).zip(bias) {
            *x = (*x - mean) * inverse * w + b;
        }
    }
}

/// `Σ f(x)` over `row`, accumulated in 8 independent lanes (vectorizable, and more accurate
/// than one running sum).
#[inline(always)]
fn lane_sum(row: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut lanes = [0.0f32; 8];
    let mut chunks = row.chunks_exact(8);
    for chunk in &mut chunks {
        for (lane, &x) in lanes.iter_mut().zip(chunk) {
            *lane += f(x);
        }
    }
    let tail: f32 = chunks.remainder().iter().map(|&x| f(x)).sum();
    lanes.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    #![allow(clippy::indexing_slicing, clippy::unwrap_used)]
    use super::*;
    use crate::random_values;

    fn plain_layer_norm(x: &[f32], width: usize, w: &[f32], b: &[f32], eps: f64) -> Vec<f32> {
        let mut out = Vec::with_capacity(x.len());
        for row in x.chunks(width) {
            let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / width as f64;
            let var = row
                .iter()
                .map(|&v| (f64::from(v) - mean).powi(2))
                .sum::<f64>()
                / width as f64;
            for (i, &v) in row.iter().enumerate() {
                let n = (f64::from(v) - mean) / (var + eps).sqrt();
                out.push((n * f64::from(w[i]) + f64::from(b[i])) as f32);
            }
        }
        out
    }

    #[test]
    fn layer_norm_matches_plain_implementation() {
        for (rows, width) in [(1, 1), (3, 7), (97, 384), (5, 768)] {
            // Offset rows (mean 3) as residual streams are.
            let x: Vec<f32> = random_values(11, rows * width)
                .iter()
                .map(|v| v * 4.0 + 3.0)
                .collect();
            let w = random_values(12, width);
            let b = random_values(13, width);
            let mut got = x.clone();
            layer_norm_in_place(&mut got, width, &w, &b, 1e-12).unwrap();
            let want = plain_layer_norm(&x, width, &w, &b, 1e-12);
            let worst = crate::max_abs_diff(&got, &want);
            // Outputs are O(1); f32 against an f64 reference: measured below 1e-6.
            eprintln!("measured error: {}", worst);
            assert!(worst < 2e-6, "{rows}x{width}: {worst}");
        }
    }

    #[test]
    fn ragged_buffers_are_errors() {
        let mut x = vec![0.0; 10];
        assert!(layer_norm_in_place(&mut x, 4, &[1.0; 4], &[0.0; 4], 1e-5).is_err());
        assert!(layer_norm_in_place(&mut x, 5, &[1.0; 4], &[0.0; 5], 1e-5).is_err());
    }
}
