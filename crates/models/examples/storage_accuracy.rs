//! Accuracy of 16-bit and 8-bit weight storage against f32 on a causal LM: for each of f16,
//! bf16 and q8, the largest absolute logit difference from the f32 model along the f32 greedy
//! path (teacher-forced: both models see the same tokens), and how many of the greedy tokens the
//! variant generates on its own agree with f32's (position by position).
//!
//! ```text
//! cargo run --release -p safeformers-models --example storage_accuracy -- \
//!     ~/.cache/safeformers/gpt2-124m-random --prompt-tokens 32 --new-tokens 128
//! ```
//!
//! The prompt is the one `greedy_speed` uses: `(i * 7919 + 13) % vocab`.

use std::path::PathBuf;
use std::process::ExitCode;

use candle_core::{DType, Device, Tensor};
use safeformers_models::{
    AutoModelForCausalLM, CausalLm, Quantization, Result, WeightDtype, WeightOptions,
};
use safeformers_weights::LoadPolicy;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut model = None;
    let (mut prompt_tokens, mut new_tokens) = (32usize, 128usize);
    while let Some(arg) = args.next() {
        let value =
            |args: &mut dyn Iterator<Item = String>| args.next().and_then(|v| v.parse().ok());
        match arg.as_str() {
            "--prompt-tokens" => prompt_tokens = value(&mut args).unwrap_or(prompt_tokens),
            "--new-tokens" => new_tokens = value(&mut args).unwrap_or(new_tokens),
            other => model = Some(PathBuf::from(other)),
        }
    }
    let Some(model) = model else {
        eprintln!("usage: storage_accuracy MODEL_DIR [--prompt-tokens N] [--new-tokens N]");
        return ExitCode::FAILURE;
    };
    match run(&model, prompt_tokens, new_tokens) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Logits `[vocab]` of the last token after feeding `tokens` (prefill then one per step) and
/// the greedy continuation when `generate` is set; returns per-step logits and the tokens.
fn decode(
    model: &dyn CausalLm,
    prompt: &[u32],
    forced: Option<&[u32]>,
    new_tokens: usize,
) -> Result<(Vec<Vec<f32>>, Vec<u32>)> {
    let device = Device::Cpu;
    let mut cache = model.new_cache();
    let len = prompt.len();
    let positions: Vec<i64> = (0..len as i64).collect();
    let mut logits = model.forward_last(
        &Tensor::from_slice(prompt, (1, len), &device)?,
        &Tensor::from_vec(positions, (1, len), &device)?,
        &Tensor::ones((1, len), DType::U32, &device)?,
        &mut cache,
    )?;
    let mut all_logits = Vec::new();
    let mut tokens = Vec::new();
    for step in 0..new_tokens {
        let row = logits.flatten_all()?;
        let greedy = row.argmax(0)?.to_scalar::<u32>()?;
        all_logits.push(row.to_vec1::<f32>()?);
        let next = forced
            .and_then(|forced| forced.get(step).copied())
            .unwrap_or(greedy);
        tokens.push(greedy);
        if step + 1 == new_tokens {
            break;
        }
        let seen = len + step + 1;
        logits = model.forward_last(
            &Tensor::new(&[[next]], &device)?,
            &Tensor::new(&[[(seen - 1) as i64]], &device)?,
            &Tensor::ones((1, seen), DType::U32, &device)?,
            &mut cache,
        )?;
    }
    Ok((all_logits, tokens))
}

fn run(dir: &std::path::Path, prompt_tokens: usize, new_tokens: usize) -> Result<()> {
    let policy = LoadPolicy::default();
    let load = |options: WeightOptions| {
        AutoModelForCausalLM::load_with_options(dir, &policy, &Device::Cpu, options)
    };
    let reference = load(WeightOptions::default())?;
    let vocab = reference.vocab_size() as u64;
    let prompt: Vec<u32> = (0..prompt_tokens as u64)
        .map(|i| ((i * 7919 + 13) % vocab) as u32)
        .collect();
    let (reference_logits, reference_tokens) =
        decode(reference.as_ref(), &prompt, None, new_tokens)?;
    drop(reference);
    for (name, options) in [
        ("f16", WeightOptions::new(WeightDtype::F16, None)?),
        ("bf16", WeightOptions::new(WeightDtype::Bf16, None)?),
        (
            "q8",
            WeightOptions::new(WeightDtype::F32, Some(Quantization::Q8))?,
        ),
    ] {
        let model = load(options)?;
        let (forced_logits, _) =
            decode(model.as_ref(), &prompt, Some(&reference_tokens), new_tokens)?;
        let max_abs = forced_logits
            .iter()
            .zip(&reference_logits)
            .flat_map(|(a, b)| a.iter().zip(b).map(|(a, b)| (a - b).abs()))
            .fold(0.0f32, f32::max);
        let logit_range = reference_logits
            .iter()
            .flatten()
            .fold(0.0f32, |acc, v| acc.max(v.abs()));
        let (_, free_tokens) = decode(model.as_ref(), &prompt, None, new_tokens)?;
        let agree = free_tokens
            .iter()
            .zip(&reference_tokens)
            .filter(|(a, b)| a == b)
            .count();
        let first_divergence = free_tokens
            .iter()
            .zip(&reference_tokens)
            .position(|(a, b)| a != b);
        println!(
            "{{\"storage\":\"{name}\",\"max_abs_logit_diff\":{max_abs:.3e},\"max_abs_logit\":{logit_range:.3},\"greedy_agreement\":\"{agree}/{new_tokens}\",\"first_divergence\":{}}}",
            first_divergence.map_or("null".to_string(), |p| p.to_string())
        );
    }
    Ok(())
}
