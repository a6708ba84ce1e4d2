//! Dense layers for many rows: `y = x·Wᵀ + b`, optionally added onto a residual already in the
//! output buffer: on CPUs with AVX-512F through our packed kernel ([`super::packed_gemm`]),
//! elsewhere through the `gemm` crate called directly (candle's dispatch of the same kernel
//! loses half its speed to threading and layout copies on BERT shapes).
//!
//! The bias (and the residual) are written into the output first and the product is
//! accumulated onto them (`dst := dst + x·W`), so neither costs a separate pass over
//! the output after the product.

use gemm::Parallelism;

use super::activation::activation_in_place;
use super::check_len;
use super::packed_gemm::{self, Epilogue, PackedWeights, Start};
use crate::Activation;
use crate::{KernelError, Result};

/// A linear layer's weights for [`DenseWeights::forward`], with the bias.
#[derive(Debug, Clone)]
pub struct DenseWeights {
    weight: DenseLayout,
    /// `[out_features]`.
    bias: Vec<f32>,
    in_features: usize,
    out_features: usize,
}

/// How [`DenseWeights`] keeps `W` (one copy, chosen at load for the running CPU).
#[derive(Debug, Clone)]
enum DenseLayout {
    /// Packed for the AVX-512 kernel ([`PackedWeights`]): 1.45× the `gemm` crate on one
    /// sentence's 28 rows, within 3% of it on hundreds of rows (`gemm_speed` example).
    Packed(PackedWeights),
    /// `[out_features, in_features]` row-major as PyTorch stores it, for the `gemm` crate
    /// (which reads it as the transposed right-hand side through its strides).
    TorchLayout(Vec<f32>),
}

impl DenseWeights {
    /// Takes a PyTorch `nn.Linear` weight `[out, in]` (row-major) and its bias `[out]`.
    pub fn from_torch_layout(
        weight_out_in: Vec<f32>,
        bias: Vec<f32>,
        in_features: usize,
        out_features: usize,
    ) -> Result<Self> {
        const KERNEL: &str = "DenseWeights::from_torch_layout";
        check_len(
            KERNEL,
            "weight",
            weight_out_in.len(),
            in_features * out_features,
        )?;
        check_len(KERNEL, "bias", bias.len(), out_features)?;
        let weight = if packed_gemm::is_available() {
            DenseLayout::Packed(PackedWeights::pack(
                &weight_out_in,
                in_features,
                out_features,
            )?)
        } else {
            DenseLayout::TorchLayout(weight_out_in)
        };
        Ok(DenseWeights {
            weight,
            bias,
            in_features,
            out_features,
        })
    }

    /// Width of the input rows.
    pub fn in_features(&self) -> usize {
        self.in_features
    }

    /// Width of the output rows.
    pub fn out_features(&self) -> usize {
        self.out_features
    }

    /// `output = input·Wᵀ + b` for `rows` rows: `input` `[rows, in]`, `output` `[rows, out]`
    /// (overwritten).
    pub fn forward(&self, input: &[f32], rows: usize, output: &mut [f32]) -> Result<()> {
        check_len(
            "DenseWeights::forward",
            "output",
            output.len(),
            rows * self.out_features,
        )?;
        if let DenseLayout::Packed(packed) = &self.weight {
            return packed.multiply(input, rows, output, Start::Bias(&self.bias), Epilogue::None);
        }
        for row in output.chunks_exact_mut(self.out_features.max(1)) {
            row.copy_from_slice(&self.bias);
        }
        self.accumulate(input, rows, output)
    }

    /// `output = activation(input·Wᵀ + b)`: on the packed kernel the exact GELU is applied to
    /// the sums before they are stored; otherwise (and for other activations) in a pass after.
    pub fn forward_activated(
        &self,
        input: &[f32],
        rows: usize,
        output: &mut [f32],
        activation: Activation,
    ) -> Result<()> {
        if let (DenseLayout::Packed(packed), Activation::GeluErf) = (&self.weight, activation) {
            check_len(
                "DenseWeights::forward_activated",
                "output",
                output.len(),
                rows * self.out_features,
            )?;
            return packed.multiply(
                input,
                rows,
                output,
                Start::Bias(&self.bias),
                Epilogue::GeluErf,
            );
        }
        self.forward(input, rows, output)?;
        activation_in_place(activation, output);
        Ok(())
    }

    /// `output += input·Wᵀ + b`: `output` holds the residual on entry (a transformer block's
    /// skip connection), the block's output on return.
    pub fn forward_onto_residual(
        &self,
        input: &[f32],
        rows: usize,
        output: &mut [f32],
    ) -> Result<()> {
        check_len(
            "DenseWeights::forward_onto_residual",
            "output",
            output.len(),
            rows * self.out_features,
        )?;
        if let DenseLayout::Packed(packed) = &self.weight {
            return packed.multiply(
                input,
                rows,
                output,
                Start::OutputAndBias(&self.bias),
                Epilogue::None,
            );
        }
        for row in output.chunks_exact_mut(self.out_features.max(1)) {
            for (value, bias) in row.iter_mut().zip(&self.bias) {
                *value += bias;
            }
        }
        self.accumulate(input, rows, output)
    }

    /// `output += input·Wᵀ`.
    fn accumulate(&self, input: &[f32], rows: usize, output: &mut [f32]) -> Result<()> {
        match &self.weight {
            DenseLayout::Packed(packed) => {
                packed.multiply(input, rows, output, Start::Output, Epilogue::None)
            }
            DenseLayout::TorchLayout(weight_out_in) => matmul_transposed_accumulate(
                output,
                input,
                weight_out_in,
                rows,
                self.in_features,
                self.out_features,
            ),
        }
    }
}

/// `dst += lhs·rhs_tᵀ` for row-major `lhs` `[m, k]`, `rhs_t` `[n, k]` (a PyTorch weight),
/// `dst` `[m, n]`, on the
/// calling rayon pool's threads (on the calling thread alone below
/// [`super::MIN_ROWS_TO_SPLIT`] rows).
pub fn matmul_transposed_accumulate(
    dst: &mut [f32],
    lhs: &[f32],
    rhs_t: &[f32],
    m: usize,
    k: usize,
    n: usize,
) -> Result<()> {
    const KERNEL: &str = "matmul_transposed_accumulate";
    check_len(KERNEL, "lhs", lhs.len(), m * k)?;
    check_len(KERNEL, "rhs_t", rhs_t.len(), n * k)?;
    check_len(KERNEL, "dst", dst.len(), m * n)?;
    if m == 0 || n == 0 || k == 0 {
        return Ok(());
    }
    let (Ok(k_stride), Ok(n_stride)) = (isize::try_from(k), isize::try_from(n)) else {
        return Err(KernelError {
            kernel: KERNEL,
            reason: format!("strides {k} and {n} do not fit in isize"),
        });
    };
    let threads = rayon::current_num_threads();
    let parallelism = if threads > 1 && m >= super::MIN_ROWS_TO_SPLIT {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    // SAFETY: the three lengths were checked above against m·k, n·k and m·n, and the strides
    // describe exactly those row-major layouts (`lhs`, `dst`: column stride 1, row stride =
    // row width; the right-hand side element (i, j) is `rhs_t[j·k + i]`: column stride k, row
    // stride 1), so every element gemm reads or writes lies inside its slice. `dst` is
    // borrowed mutably and does not alias `lhs` or `rhs_t` (Rust's borrow rules). gemm dispatches on `T = f32`, which
    // it supports (it panics only for other types).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n_stride,
            true,
            lhs.as_ptr(),
            1,
            k_stride,
            rhs_t.as_ptr(),
            k_stride,
            1,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            parallelism,
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::indexing_slicing, clippy::unwrap_used)]
    use super::*;
    use crate::random_values;

    fn plain_linear(
        input: &[f32],
        weight: &[f32],
        bias: &[f32],
        rows: usize,
        k: usize,
    ) -> Vec<f32> {
        let n = bias.len();
        let mut out = vec![0.0f32; rows * n];
        for r in 0..rows {
            for o in 0..n {
                let mut sum = 0.0f64;
                for i in 0..k {
                    sum += f64::from(input[r * k + i]) * f64::from(weight[o * k + i]);
                }
                out[r * n + o] = (sum + f64::from(bias[o])) as f32;
            }
        }
        out
    }

    #[test]
    fn dense_matches_plain_linear_on_bert_like_shapes() {
        // Odd sizes exercise gemm's edge tiles; 384→1536 is MiniLM's feed-forward.
        for (rows, k, n) in [(1, 5, 3), (7, 33, 17), (61, 384, 1536), (130, 96, 40)] {
            let input = random_values(1, rows * k);
            let weight = random_values(2, n * k);
            let bias = random_values(3, n);
            let dense =
                DenseWeights::from_torch_layout(weight.clone(), bias.clone(), k, n).unwrap();
            let mut got = vec![f32::NAN; rows * n];
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(2)
                .build()
                .unwrap();
            pool.install(|| dense.forward(&input, rows, &mut got))
                .unwrap();
            let want = plain_linear(&input, &weight, &bias, rows, k);
            let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let worst = got
                .iter()
                .zip(&want)
                .fold(0.0f32, |m, (g, w)| m.max((g - w).abs()));
            // f32 accumulation over k terms of size ≤ 1 against an f64 reference: relative
            // error (to the largest output) below 1e-6 measured; 2e-6 allowed.
            eprintln!("measured error: {}", worst);
            assert!(worst / scale < 2e-6, "{rows}x{k}x{n}: {worst} of {scale}");

            // The residual form adds onto what the buffer held.
            let residual = random_values(4, rows * n);
            let mut onto = residual.clone();
            dense
                .forward_onto_residual(&input, rows, &mut onto)
                .unwrap();
            for ((o, r), w) in onto.iter().zip(&residual).zip(&want) {
                assert!((o - r - w).abs() < 2e-6 * scale.max(1.0));
            }
        }
    }

    /// The `gemm` crate path (what CPUs without AVX-512F run), called directly: on this
    /// project's machines `DenseWeights` takes the packed kernel instead.
    #[test]
    fn gemm_crate_path_matches_plain_linear() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        for (rows, k, n) in [(1, 5, 3), (7, 33, 17), (130, 384, 384)] {
            let input = random_values(21, rows * k);
            let weight = random_values(22, n * k);
            let zeros = vec![0.0; n];
            let mut got = vec![0.0; rows * n];
            pool.install(|| matmul_transposed_accumulate(&mut got, &input, &weight, rows, k, n))
                .unwrap();
            let want = plain_linear(&input, &weight, &zeros, rows, k);
            let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let worst = crate::max_abs_diff(&got, &want);
            eprintln!("gemm crate: measured error {worst} of {scale}");
            assert!(worst / scale < 2e-6, "{rows}x{k}x{n}: {worst} of {scale}");
        }
    }

    #[test]
    fn fused_activation_equals_forward_then_activation() {
        let (rows, k, n) = (30, 384, 1536);
        let input = random_values(11, rows * k);
        let weight = random_values(12, n * k);
        let bias = random_values(13, n);
        let dense = DenseWeights::from_torch_layout(weight, bias, k, n).unwrap();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        for activation in [Activation::GeluErf, Activation::Relu] {
            let mut fused = vec![f32::NAN; rows * n];
            pool.install(|| dense.forward_activated(&input, rows, &mut fused, activation))
                .unwrap();
            let mut apart = vec![0.0; rows * n];
            pool.install(|| dense.forward(&input, rows, &mut apart))
                .unwrap();
            activation_in_place(activation, &mut apart);
            assert_eq!(fused, apart, "{activation:?}");
        }
    }

    #[test]
    fn wrong_sizes_are_errors_not_panics() {
        let dense = DenseWeights::from_torch_layout(vec![1.0; 6], vec![0.0; 3], 2, 3).unwrap();
        let mut out = vec![0.0; 5];
        assert!(matches!(
            dense.forward(&[1.0; 4], 2, &mut out),
            Err(KernelError { .. })
        ));
        assert!(DenseWeights::from_torch_layout(vec![1.0; 5], vec![0.0; 3], 2, 3).is_err());
        let mut dst = vec![0.0; 4];
        assert!(matmul_transposed_accumulate(&mut dst, &[1.0; 3], &[1.0; 4], 2, 2, 2).is_err());
    }
}
