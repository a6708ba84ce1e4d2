//! Greedy decoding speed of a causal LM: a fixed prompt of `--prompt-tokens` ids, then
//! `--new-tokens` greedy tokens through the KV cache, timed over `--runs` runs (after one
//! warm-up). Prints one JSON line per run and a summary; `bench/gpt2-generate.sh` runs it next
//! to PyTorch's `generate` on the same model folder.
//!
//! ```text
//! RAYON_NUM_THREADS=1 cargo run --release -p safeformers-models --example greedy_speed -- \
//!     ~/.cache/safeformers/gpt2-124m-random --prompt-tokens 32 --new-tokens 128 --runs 3
//! ```
//!
//! The prompt ids are the first `--prompt-tokens` ids of `--prompt-ids FILE` (whitespace-separated
//! token ids, written by `bench/make_prompt_ids.py`), or without it `(i * 7919 + 13) % vocab` for
//! `i` in `0..prompt_tokens`; the Python side (`bench/greedy_generate.py`) uses the same, so both
//! decode the same sequence; the generated ids are printed for a check. A run's `seconds` covers
//! the cache, the prefill and every step; with `--new-tokens 1` it is the time to the first token
//! (prefill up to the first new token's logits, plus the argmax).
//!
//! `--dtype f32|f16|bf16` stores the linear layers' weights in that type (compute stays f32);
//! `--quantize q8` stores them as 8-bit blocks. Both are load options of
//! [`AutoModelForCausalLM::load_with_options`]. `MODEL_DIR` may be a `.gguf` file: its quantized
//! weights are multiplied as stored, or dequantized to f32 at load with `--dequantize`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use candle_core::{Device, Tensor};
use safeformers_models::{
    AutoModelForCausalLM, CausalLm, Quantization, Result, WeightDtype, WeightOptions,
};
use safeformers_weights::LoadPolicy;

struct Options {
    model: PathBuf,
    prompt_tokens: usize,
    new_tokens: usize,
    runs: usize,
    prompt_ids: Option<PathBuf>,
    load: WeightOptions,
}

fn parse_args() -> std::result::Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let mut options = Options {
        model: PathBuf::new(),
        prompt_tokens: 32,
        new_tokens: 128,
        runs: 3,
        prompt_ids: None,
        load: WeightOptions::default(),
    };
    let mut model = None;
    let (mut dtype, mut quantize, mut dequantize) = (WeightDtype::F32, None, false);
    while let Some(arg) = args.next() {
        let mut number = |name: &str| -> std::result::Result<usize, String> {
            args.next()
                .and_then(|value| value.parse().ok())
                .ok_or_else(|| format!("{name} needs a number"))
        };
        match arg.as_str() {
            "--prompt-tokens" => options.prompt_tokens = number("--prompt-tokens")?,
            "--new-tokens" => options.new_tokens = number("--new-tokens")?,
            "--runs" => options.runs = number("--runs")?,
            "--dequantize" => dequantize = true,
            "--prompt-ids" => {
                options.prompt_ids = Some(PathBuf::from(
                    args.next().ok_or("--prompt-ids needs a file")?,
                ));
            }
            "--dtype" => {
                dtype = args
                    .next()
                    .as_deref()
                    .and_then(WeightDtype::from_name)
                    .ok_or("--dtype needs f32, f16 or bf16")?;
            }
            "--quantize" => {
                quantize = Some(
                    args.next()
                        .as_deref()
                        .and_then(Quantization::from_name)
                        .ok_or("--quantize needs q8")?,
                );
            }
            other if !other.starts_with("--") && model.is_none() => {
                model = Some(PathBuf::from(other));
            }
            other => return Err(format!("unexpected argument {other}")),
        }
    }
    options.model = model.ok_or(
        "usage: greedy_speed MODEL_DIR [--prompt-tokens N] [--prompt-ids FILE] [--new-tokens N] \
         [--runs N] [--dtype f32|f16|bf16] [--quantize q8] [--dequantize]",
    )?;
    options.load = WeightOptions::new(dtype, quantize).map_err(|error| error.to_string())?;
    if dequantize {
        options.load = options.load.dequantizing_blocks();
    }
    Ok(options)
}

/// Greedy decoding of one row; returns the new ids.
fn generate(model: &dyn CausalLm, prompt: &[u32], new_tokens: usize) -> Result<Vec<u32>> {
    let device = Device::Cpu;
    let mut cache = model.new_cache();
    let len = prompt.len();
    let positions: Vec<i64> = (0..len as i64).collect();
    let mut logits = model.forward_last(
        &Tensor::from_slice(prompt, (1, len), &device)?,
        &Tensor::from_vec(positions, (1, len), &device)?,
        &Tensor::ones((1, len), candle_core::DType::U32, &device)?,
        &mut cache,
    )?;
    let mut generated = Vec::with_capacity(new_tokens);
    for step in 0..new_tokens {
        let last = logits.dim(1)? - 1;
        let next = logits
            .narrow(1, last, 1)?
            .flatten_all()?
            .argmax(0)?
            .to_scalar::<u32>()?;
        generated.push(next);
        if step + 1 == new_tokens {
            break;
        }
        let seen = len + generated.len();
        logits = model.forward_last(
            &Tensor::new(&[[next]], &device)?,
            &Tensor::new(&[[(seen - 1) as i64]], &device)?,
            &Tensor::ones((1, seen), candle_core::DType::U32, &device)?,
            &mut cache,
        )?;
    }
    Ok(generated)
}

/// The prompt: the first `count` ids of the file, or the synthetic ids when there is no file.
fn prompt_ids(
    file: Option<&Path>,
    count: usize,
    vocab: u64,
) -> std::result::Result<Vec<u32>, String> {
    let Some(file) = file else {
        return Ok((0..count as u64)
            .map(|i| ((i * 7919 + 13) % vocab) as u32)
            .collect());
    };
    let text = std::fs::read_to_string(file)
        .map_err(|error| format!("{}: cannot read: {error}", file.display()))?;
    let ids = text
        .split_whitespace()
        .take(count)
        .map(|word| {
            word.parse::<u32>()
                .map_err(|_| format!("{}: {word:?} is not a token id", file.display()))
        })
        .collect::<std::result::Result<Vec<u32>, String>>()?;
    if ids.len() < count {
        return Err(format!(
            "{}: {} ids, fewer than --prompt-tokens {count}",
            file.display(),
            ids.len()
        ));
    }
    if let Some(id) = ids.iter().find(|&&id| u64::from(id) >= vocab) {
        return Err(format!(
            "{}: id {id} is not below the vocabulary size {vocab}",
            file.display()
        ));
    }
    Ok(ids)
}

fn main() -> ExitCode {
    let options = match parse_args() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::FAILURE;
        }
    };
    match run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Loads, warms up and times the runs.
fn run(options: &Options) -> std::result::Result<(), Box<dyn std::error::Error>> {
    let load_start = Instant::now();
    let model = AutoModelForCausalLM::load_with_options(
        &options.model,
        &LoadPolicy::default(),
        &Device::Cpu,
        options.load,
    )?;
    let load_seconds = load_start.elapsed().as_secs_f64();
    let vocab = model.vocab_size() as u64;
    let prompt = prompt_ids(options.prompt_ids.as_deref(), options.prompt_tokens, vocab)?;
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "default".to_string());
    // Warm-up (page faults of the weights, allocator).
    generate(model.as_ref(), &prompt, options.new_tokens.min(8))?;
    let mut rates = Vec::new();
    let mut times = Vec::new();
    let mut ids = Vec::new();
    for run in 0..options.runs {
        let start = Instant::now();
        ids = generate(model.as_ref(), &prompt, options.new_tokens)?;
        let seconds = start.elapsed().as_secs_f64();
        let rate = options.new_tokens as f64 / seconds;
        rates.push(rate);
        times.push(seconds);
        println!(
            "{{\"side\":\"safeformers\",\"run\":{run},\"threads\":\"{threads}\",\"prompt_tokens\":{},\"new_tokens\":{},\"seconds\":{seconds:.4},\"tokens_per_second\":{rate:.2}}}",
            options.prompt_tokens, options.new_tokens
        );
    }
    rates.sort_by(f64::total_cmp);
    let median = rates.get(rates.len() / 2).copied().unwrap_or(0.0);
    times.sort_by(f64::total_cmp);
    let median_seconds = times.get(times.len() / 2).copied().unwrap_or(0.0);
    println!(
        "{{\"side\":\"safeformers\",\"summary\":true,\"threads\":\"{threads}\",\"dtype\":\"{:?}\",\"quantize\":\"{:?}\",\"load_seconds\":{load_seconds:.3},\"median_tokens_per_second\":{median:.2},\"median_seconds\":{median_seconds:.4},\"generated\":{ids:?}}}",
        options.load.dtype(),
        options.load.quantize()
    );
    Ok(())
}
