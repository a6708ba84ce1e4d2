//! Speed of the quantized product ([`matmul_quantized`]) on SmolLM2-135M's shapes, next to the
//! f32 and 8-bit few-row kernels, for one row (a decoding step) and 64 rows (a short prefill).
//! Prints the best of `--reps` calls as weight bytes read per second and GFLOP/s, on 1 and 2
//! threads.
//!
//! ```text
//! cargo run --release -p safeformers-kernels --example quantized_speed -- --reps 50
//! ```

use std::time::Instant;

use safeformers_kernels::Result;
use safeformers_kernels::few_rows::{self, MatrixData, MatrixRef};
use safeformers_kernels::quantized::BlockFormat;
use safeformers_kernels::quantized_dot::{Q8Rows, QuantizedMatrix, matmul_quantized};

fn main() -> Result<()> {
    let reps: usize = std::env::args()
        .skip_while(|arg| arg != "--reps")
        .nth(1)
        .and_then(|value| value.parse().ok())
        .unwrap_or(50);
    for threads in [1usize, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|error| safeformers_kernels::KernelError {
                kernel: "quantized_speed",
                reason: error.to_string(),
            })?;
        for rows in [1usize, 64] {
            for (k, n) in [(576usize, 1536usize), (1536, 576), (576, 49152)] {
                let input: Vec<f32> = (0..rows * k).map(|i| (i as f32 * 0.37).sin()).collect();
                let weight: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.61).cos()).collect();
                let mut out = vec![0.0f32; rows * n];
                let flops = 2.0 * (rows * k * n) as f64;
                let best = |f: &mut dyn FnMut() -> Result<()>| -> Result<f64> {
                    let mut best = f64::INFINITY;
                    for _ in 0..reps {
                        let start = Instant::now();
                        f()?;
                        best = best.min(start.elapsed().as_secs_f64());
                    }
                    Ok(best)
                };
                let f32_matrix = MatrixRef {
                    data: MatrixData::F32(&weight),
                    rows: n,
                    cols: k,
                };
                let f32_seconds = pool.install(|| {
                    best(&mut || few_rows::matmul_transposed(f32_matrix, &input, rows, &mut out))
                })?;
                let mut line = format!(
                    "threads {threads} {rows:>3}x{k:>5}x{n:>5}: f32 {:6.1} GB/s {:6.1} GFLOP/s",
                    (n * k * 4) as f64 / f32_seconds / 1e9,
                    flops / f32_seconds / 1e9
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
                    let seconds = pool.install(|| {
                        best(&mut || {
                            let quantized = Q8Rows::quantize(&input, rows, k)?;
                            matmul_quantized(matrix, &quantized, &mut out)
                        })
                    })?;
                    line.push_str(&format!(
                        " | {} {:5.1} GB/s {:6.1} GFLOP/s",
                        format.name(),
                        bytes.len() as f64 / seconds / 1e9,
                        flops / seconds / 1e9
                    ));
                }
                println!("{line}");
            }
        }
    }
    Ok(())
}
