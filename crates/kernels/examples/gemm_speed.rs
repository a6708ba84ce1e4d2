//! Speed of the matrix-product kernels alone, on 1 and 2 threads; prints the best of `--reps`
//! calls.
//!
//! - f32 on MiniLM's shapes: the packed AVX-512 kernel ([`PackedWeights`]) and the `gemm`
//!   crate, for a batch of 16 sentences (450 rows), 32 (900) and one sentence (28 rows), as
//!   GFLOP/s.
//! - GGUF block formats on SmolLM2-135M's shapes ([`matmul_blocks`], activations quantized
//!   per call) next to f32's few-row kernel, for one row (a decoding step) and 64, as weight
//!   bytes read per second and GFLOP/s; the 32-value formats also interleaved
//!   ([`matmul_interleaved`]), as the models store them.
//!
//! ```text
//! cargo run --release -p safeformers-kernels --example gemm_speed -- --reps 30
//! ```

use std::time::Instant;

use rayon::ThreadPool;
use safeformers_kernels::Result;
use safeformers_kernels::few_rows::{self, MatrixData, MatrixRef};
use safeformers_kernels::matmul::matmul_transposed_accumulate;
use safeformers_kernels::packed_gemm::{self, PackedWeights};
use safeformers_kernels::quantized::BlockFormat;
use safeformers_kernels::quantized_dot::{
    InterleavedMatrix, QuantizedMatrix, interleave, is_interleavable, matmul_blocks,
    matmul_interleaved,
};

fn main() -> Result<()> {
    let reps: usize = std::env::args()
        .skip_while(|arg| arg != "--reps")
        .nth(1)
        .and_then(|value| value.parse().ok())
        .unwrap_or(30);
    for threads in [1usize, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|error| safeformers_kernels::KernelError {
                kernel: "gemm_speed",
                reason: error.to_string(),
            })?;
        f32_table(&pool, threads, reps)?;
        quantized_table(&pool, threads, reps)?;
    }
    Ok(())
}

/// The fastest of `reps` runs of `f` on `pool`, in seconds.
fn best(pool: &ThreadPool, reps: usize, f: &mut (dyn FnMut() -> Result<()> + Send)) -> Result<f64> {
    pool.install(|| {
        let mut best = f64::INFINITY;
        for _ in 0..reps {
            let start = Instant::now();
            f()?;
            best = best.min(start.elapsed().as_secs_f64());
        }
        Ok(best)
    })
}

/// Smooth inputs `[rows, k]` and weights `[n, k]`.
fn operands(rows: usize, k: usize, n: usize) -> (Vec<f32>, Vec<f32>) {
    let input: Vec<f32> = (0..rows * k).map(|i| (i as f32 * 0.37).sin()).collect();
    let weight: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.61).cos()).collect();
    (input, weight)
}

fn f32_table(pool: &ThreadPool, threads: usize, reps: usize) -> Result<()> {
    for rows in [28usize, 450, 900] {
        for (k, n) in [(384usize, 1152usize), (384, 384), (384, 1536), (1536, 384)] {
            let (input, weight) = operands(rows, k, n);
            let mut out = vec![0.0f32; rows * n];
            let gflops = |seconds: f64| 2.0 * (rows * k * n) as f64 / seconds / 1e9;
            let crate_rate = gflops(best(pool, reps, &mut || {
                matmul_transposed_accumulate(&mut out, &input, &weight, rows, k, n)
            })?);
            let packed_rate = if packed_gemm::is_available() {
                let packed = PackedWeights::pack(&weight, k, n)?;
                gflops(best(pool, reps, &mut || {
                    packed.accumulate(&input, rows, &mut out)
                })?)
            } else {
                0.0
            };
            println!(
                "threads {threads} {rows:>4}x{k:>4}x{n:>4}: gemm crate {crate_rate:6.1} GFLOP/s, packed {packed_rate:6.1} GFLOP/s"
            );
        }
    }
    Ok(())
}

fn quantized_table(pool: &ThreadPool, threads: usize, reps: usize) -> Result<()> {
    for rows in [1usize, 64] {
        for (k, n) in [(576usize, 1536usize), (1536, 576), (576, 49152)] {
            let (input, weight) = operands(rows, k, n);
            let mut out = vec![0.0f32; rows * n];
            let gflops = |seconds: f64| 2.0 * (rows * k * n) as f64 / seconds / 1e9;
            let f32_matrix = MatrixRef {
                data: MatrixData::F32(&weight),
                rows: n,
                cols: k,
            };
            let seconds = best(pool, reps, &mut || {
                few_rows::matmul_transposed(f32_matrix, &input, rows, &mut out)
            })?;
            let mut line = format!(
                "threads {threads} {rows:>3}x{k:>5}x{n:>5}: f32 {:6.1} GB/s {:6.1} GFLOP/s",
                (n * k * 4) as f64 / seconds / 1e9,
                gflops(seconds)
            );
            for format in [
                BlockFormat::Q4_0,
                BlockFormat::Q4_1,
                BlockFormat::Q4K,
                BlockFormat::Q6K,
                BlockFormat::Q8_0,
            ] {
                if !k.is_multiple_of(format.block_values()) {
                    continue;
                }
                // Any bytes do: the speed does not depend on the values.
                let bytes: Vec<u8> = (0..format.bytes_for(n * k).unwrap_or(0))
                    .map(|i| (i * 37 % 251) as u8)
                    .collect();
                let matrix = QuantizedMatrix {
                    format,
                    bytes: &bytes,
                    rows: n,
                    cols: k,
                };
                let seconds = best(pool, reps, &mut || {
                    matmul_blocks(matrix, &input, rows, &mut out)
                })?;
                line.push_str(&format!(
                    " | {} {:5.1} GB/s {:6.1} GFLOP/s",
                    format.name(),
                    bytes.len() as f64 / seconds / 1e9,
                    gflops(seconds)
                ));
                if is_interleavable(format) {
                    let interleaved = interleave(format, &bytes, n, k)?;
                    let matrix = InterleavedMatrix {
                        format,
                        bytes: &interleaved,
                        rows: n,
                        cols: k,
                    };
                    let seconds = best(pool, reps, &mut || {
                        matmul_interleaved(matrix, &input, rows, &mut out)
                    })?;
                    line.push_str(&format!(
                        " | {} interleaved {:5.1} GB/s {:6.1} GFLOP/s",
                        format.name(),
                        bytes.len() as f64 / seconds / 1e9,
                        gflops(seconds)
                    ));
                }
            }
            println!("{line}");
        }
    }
    Ok(())
}
