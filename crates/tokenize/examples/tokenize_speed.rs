//! Batch tokenization speed over a corpus file (one sentence per line): the whole corpus in one
//! `encode_batch` call (padding to the longest, truncation at the model's maximum length, special
//! tokens added), as Transformers' fast tokenizer `tokenizer(sentences, padding=True,
//! truncation=True)` does. `bench/run.sh` runs it next to Python's `tokenizers`.
//!
//! ```text
//! cargo run --release -p safeformers-tokenize --example tokenize_speed -- \
//!     ~/.cache/safeformers/fixtures/all-MiniLM-L6-v2 corpus.txt --threads 2 --passes 20
//! ```
//!
//! After one warm-up pass, times `--passes` passes and prints one JSON line with the median pass
//! (sentences/s and tokens/s, tokens counted without padding). Load time is excluded.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use safeformers_tokenize::{EncodeOptions, Padding, Tokenizer, TokenizerOptions};

struct Options {
    model: PathBuf,
    corpus: PathBuf,
    threads: usize,
    passes: usize,
}

const USAGE: &str = "usage: tokenize_speed MODEL_DIR CORPUS [--threads N] [--passes N]";

fn parse_args() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let mut positional = Vec::new();
    let mut threads = 1;
    let mut passes = 20;
    while let Some(arg) = args.next() {
        let mut number = |name: &str| -> Result<usize, String> {
            args.next()
                .and_then(|value| value.parse().ok())
                .ok_or_else(|| format!("{name} needs a number"))
        };
        match arg.as_str() {
            "--threads" => threads = number("--threads")?,
            "--passes" => passes = number("--passes")?,
            other if !other.starts_with("--") => positional.push(PathBuf::from(other)),
            other => return Err(format!("unexpected argument {other}\n{USAGE}")),
        }
    }
    let [model, corpus]: [PathBuf; 2] = positional.try_into().map_err(|_| USAGE.to_string())?;
    if threads == 0 || passes == 0 {
        return Err("--threads and --passes must be at least 1".into());
    }
    Ok(Options {
        model,
        corpus,
        threads,
        passes,
    })
}

fn main() -> ExitCode {
    match parse_args().and_then(|options| run(&options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(options: &Options) -> Result<(), String> {
    let text = std::fs::read_to_string(&options.corpus)
        .map_err(|error| format!("{}: {error}", options.corpus.display()))?;
    let sentences: Vec<&str> = text.lines().filter(|line| !line.is_empty()).collect();
    let tokenizer = Tokenizer::from_dir(
        &options.model,
        &TokenizerOptions {
            threads: options.threads,
            ..TokenizerOptions::default()
        },
    )
    .map_err(|error| error.to_string())?;
    let encode = EncodeOptions {
        padding: Padding::Longest,
        truncation: tokenizer.model_max_length(),
        ..EncodeOptions::default()
    };
    let encode_all = || {
        tokenizer
            .encode_batch(&sentences, &encode)
            .map_err(|error| error.to_string())
    };
    // Warm-up; tokens counted without padding, outside the timed calls.
    let tokens: usize = encode_all()?
        .rows
        .iter()
        .map(|row| row.attention_mask.iter().filter(|&&m| m != 0).count())
        .sum();
    let mut seconds = Vec::with_capacity(options.passes);
    for _ in 0..options.passes {
        let start = Instant::now();
        // Dropped inside the timed span, as the Python side's result is.
        drop(encode_all()?);
        seconds.push(start.elapsed().as_secs_f64());
    }
    seconds.sort_by(f64::total_cmp);
    let median = seconds.get(seconds.len() / 2).copied().unwrap_or(f64::NAN);
    println!(
        "{{\"side\":\"safeformers\",\"sentences\":{},\"tokens\":{tokens},\"threads\":{},\"passes\":{},\"median_seconds\":{median:.6},\"sentences_per_second\":{:.1},\"tokens_per_second\":{:.1}}}",
        sentences.len(),
        options.threads,
        options.passes,
        sentences.len() as f64 / median,
        tokens as f64 / median
    );
    Ok(())
}
