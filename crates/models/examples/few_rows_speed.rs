//! Speed of the few-row kernels alone: `x Wᵀ` for one row of `x` against GPT-2-small-shaped
//! weights (`[3072, 768]`, an MLP projection, and `[50257, 768]`, the LM head) in every storage,
//! on 1 and 2 threads. Prints the best of `--reps` calls (the least disturbed on a shared
//! machine) as milliseconds and weight bytes read per second.
//!
//! ```text
//! cargo run --release -p safeformers-models --example few_rows_speed -- --reps 50
//! ```

use std::time::Instant;

use candle_core::{Device, Tensor};
use safeformers_models::weight_storage::StoredMatrix;
use safeformers_models::{Quantization, Result, WeightDtype, WeightOptions};

fn main() -> Result<()> {
    let reps: usize = std::env::args()
        .skip_while(|arg| arg != "--reps")
        .nth(1)
        .and_then(|value| value.parse().ok())
        .unwrap_or(50);
    for (rows, cols) in [(3072usize, 768usize), (50257, 768)] {
        let values: Vec<f32> = (0..rows * cols)
            .map(|i| ((i as f32) * 0.618_034).sin() * 0.02)
            .collect();
        let weight = Tensor::from_vec(values, (rows, cols), &Device::Cpu)?;
        let x: Vec<f32> = (0..cols).map(|i| (i as f32 * 0.1).cos()).collect();
        for (name, options, bytes_per_weight) in [
            ("f32", WeightOptions::default(), 4.0),
            ("f16", WeightOptions::new(WeightDtype::F16, None)?, 2.0),
            ("bf16", WeightOptions::new(WeightDtype::Bf16, None)?, 2.0),
            (
                "q8",
                WeightOptions::new(WeightDtype::F32, Some(Quantization::Q8))?,
                1.0 + 4.0 / 32.0,
            ),
        ] {
            let matrix = StoredMatrix::new(&weight, options)?;
            for threads in [1usize, 2] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
                let best = pool.install(|| -> Result<f64> {
                    let mut best = f64::INFINITY;
                    for _ in 0..reps {
                        let start = Instant::now();
                        let out = matrix.matmul_values(&x, 1, None)?;
                        best = best.min(start.elapsed().as_secs_f64());
                        std::hint::black_box(out);
                    }
                    Ok(best)
                })?;
                let gigabytes = (rows * cols) as f64 * bytes_per_weight / 1e9;
                println!(
                    "[{rows}x{cols}] {name:<5} {threads} thread(s): {:.3} ms, {:.1} GB/s",
                    best * 1e3,
                    gigabytes / best
                );
            }
        }
    }
    Ok(())
}
