//! Speed of the encoder's dense-layer kernels alone on MiniLM's shapes: the packed AVX-512
//! kernel ([`PackedWeights`]) and the `gemm` crate, on 1 and 2 threads, for a batch of 16
//! sentences (450 rows) and one sentence (28 rows). Prints the best of `--reps` calls as
//! GFLOP/s.
//!
//! ```text
//! cargo run --release -p safeformers-kernels --example gemm_speed -- --reps 30
//! ```

use std::time::Instant;

use safeformers_kernels::Result;
use safeformers_kernels::matmul::matmul_transposed_accumulate;
use safeformers_kernels::packed_gemm::{self, PackedWeights};

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
        for rows in [28usize, 450, 900] {
            for (k, n) in [(384usize, 1152usize), (384, 384), (384, 1536), (1536, 384)] {
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
                    Ok(flops / best / 1e9)
                };
                let crate_rate = pool.install(|| {
                    best(&mut || {
                        matmul_transposed_accumulate(&mut out, &input, &weight, rows, k, n)
                    })
                })?;
                let packed_rate = if packed_gemm::is_available() {
                    let packed = PackedWeights::pack(&weight, k, n)?;
                    pool.install(|| best(&mut || packed.accumulate(&input, rows, &mut out)))?
                } else {
                    0.0
                };
                println!(
                    "threads {threads} {rows:>4}x{k:>4}x{n:>4}: gemm crate {crate_rate:6.1} GFLOP/s, packed {packed_rate:6.1} GFLOP/s"
                );
            }
        }
    }
    Ok(())
}
