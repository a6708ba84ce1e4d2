//! `dst += x·Wᵀ` for many rows through the `gemm` crate called directly (candle's dispatch of
//! the same kernel loses half its speed to threading and layout copies on BERT shapes): what
//! the linear layers run on CPUs without the packed AVX-512 kernel ([`super::packed_gemm`]),
//! and on weights widened from 16-bit or block storage. The caller writes the bias (and the
//! residual) into `dst` first, so neither costs a separate pass after the product.

use gemm::Parallelism;

use super::check_len;
use crate::{KernelError, Result};

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

    /// The `gemm` crate, called directly, against the f64 definition; odd sizes exercise its
    /// edge tiles.
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
    fn wrong_sizes_are_errors_not_panics() {
        let mut dst = vec![0.0; 4];
        assert!(matmul_transposed_accumulate(&mut dst, &[1.0; 3], &[1.0; 4], 2, 2, 2).is_err());
    }
}
