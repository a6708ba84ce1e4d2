//! Time to open a safetensors file: map it, validate the whole header, index every tensor.
//!
//! `cargo bench -p safeformers-weights --bench open_safetensors -- PATH [RUNS]` prints one JSON
//! line. `bench/safetensors-open.sh` makes the 500 MB file and runs this next to the Python
//! reference, alternating, and writes the table to `bench/results/`.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Instant;

use safeformers_weights::{LoadPolicy, open_checkpoint};

fn main() {
    // cargo passes `--bench` to harness-less benches; skip flags.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let positional: Vec<&String> = args.iter().filter(|arg| !arg.starts_with("--")).collect();
    let Some(path) = positional.first().map(PathBuf::from) else {
        // `cargo test --all-targets` runs benches without arguments (and without `--bench`):
        // there is nothing to time then, and that is not a failure.
        if !args.iter().any(|arg| arg == "--bench") {
            return;
        }
        eprintln!("usage: open_safetensors PATH [RUNS]");
        std::process::exit(2);
    };
    let runs: usize = positional
        .get(1)
        .and_then(|runs| runs.parse().ok())
        .unwrap_or(20);
    let policy = LoadPolicy::default();
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        let checkpoint = match open_checkpoint(&path, &policy) {
            Ok(checkpoint) => checkpoint,
            Err(error) => {
                eprintln!("error: {error}");
                std::process::exit(1);
            }
        };
        black_box(
            checkpoint
                .tensors()
                .map(|tensor| tensor.data.len())
                .sum::<usize>(),
        );
        samples.push(start.elapsed().as_secs_f64());
        drop(checkpoint);
    }
    samples.sort_by(f64::total_cmp);
    let median = samples.get(samples.len() / 2).copied().unwrap_or(f64::NAN);
    let min = samples.first().copied().unwrap_or(f64::NAN);
    println!(
        "{{\"impl\": \"safeformers open_checkpoint\", \"runs\": {runs}, \"median_ms\": {}, \"min_ms\": {}}}",
        median * 1e3,
        min * 1e3
    );
}
