//! Sentence-embedding speed of the feature-extraction pipeline (the code `safeformers run
//! feature-extraction` runs) over a corpus file, one sentence per line. `bench/run.sh` runs it
//! next to sentence-transformers' `encode` on the same folder and corpus.
//!
//! ```text
//! cargo run --release -p safeformers-pipelines --example embed_speed -- \
//!     ~/.cache/safeformers/fixtures/all-MiniLM-L6-v2 corpus.txt --batch-size 32 --threads 2
//! ```
//!
//! The process loads the pipeline, warms up on the first batch, then times one pass over the
//! whole corpus; the time excludes process start and model load (both are printed apart).
//! Prints one JSON line. `--dump FILE --dump-count N` also writes the first N embeddings of the
//! corpus (in corpus order) as JSON, for the numerics check against Python.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use safeformers_pipelines::{FeatureExtraction, FeatureExtractionOptions};

struct Options {
    model: PathBuf,
    corpus: PathBuf,
    batch_size: usize,
    threads: usize,
    dump: Option<PathBuf>,
    dump_count: usize,
}

const USAGE: &str = "usage: embed_speed MODEL_DIR CORPUS [--batch-size N] [--threads N] \
                     [--dump FILE] [--dump-count N]";

fn parse_args() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let mut positional = Vec::new();
    let mut options = Options {
        model: PathBuf::new(),
        corpus: PathBuf::new(),
        batch_size: 32,
        threads: 1,
        dump: None,
        dump_count: 4,
    };
    while let Some(arg) = args.next() {
        let mut number = |name: &str| -> Result<usize, String> {
            args.next()
                .and_then(|value| value.parse().ok())
                .ok_or_else(|| format!("{name} needs a number"))
        };
        match arg.as_str() {
            "--batch-size" => options.batch_size = number("--batch-size")?,
            "--threads" => options.threads = number("--threads")?,
            "--dump-count" => options.dump_count = number("--dump-count")?,
            "--dump" => {
                options.dump = Some(PathBuf::from(args.next().ok_or("--dump needs a file")?));
            }
            other if !other.starts_with("--") => positional.push(PathBuf::from(other)),
            other => return Err(format!("unexpected argument {other}\n{USAGE}")),
        }
    }
    let [model, corpus]: [PathBuf; 2] = positional.try_into().map_err(|_| USAGE.to_string())?;
    if options.batch_size == 0 || options.threads == 0 {
        return Err("--batch-size and --threads must be at least 1".into());
    }
    options.model = model;
    options.corpus = corpus;
    Ok(options)
}

fn main() -> ExitCode {
    let result = parse_args().and_then(|options| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(options.threads)
            .build()
            .map_err(|error| format!("starting the thread pool: {error}"))?;
        pool.install(|| run(&options))
    });
    match result {
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
    if sentences.is_empty() {
        return Err(format!("{}: no sentences", options.corpus.display()));
    }
    let load_start = Instant::now();
    let pipeline = FeatureExtraction::from_dir(
        &options.model,
        &FeatureExtractionOptions {
            batch_size: options.batch_size,
            ..FeatureExtractionOptions::default()
        },
    )
    .map_err(|error| error.to_string())?;
    let load_seconds = load_start.elapsed().as_secs_f64();

    // Warm-up: one batch (page faults of the weights, allocator), as the Python side does.
    let warm = sentences
        .get(..options.batch_size.min(sentences.len()))
        .unwrap_or(&[]);
    pipeline.embed(warm).map_err(|error| error.to_string())?;

    let start = Instant::now();
    let embeddings = pipeline
        .embed(&sentences)
        .map_err(|error| error.to_string())?;
    let seconds = start.elapsed().as_secs_f64();
    if embeddings.len() != sentences.len() {
        return Err(format!(
            "{} embeddings for {} sentences",
            embeddings.len(),
            sentences.len()
        ));
    }
    if let Some(dump) = &options.dump {
        let first = embeddings
            .get(..options.dump_count.min(embeddings.len()))
            .unwrap_or(&[]);
        let json = serde_json::to_string(first).map_err(|error| error.to_string())?;
        std::fs::write(dump, json).map_err(|error| format!("{}: {error}", dump.display()))?;
    }
    let dimension = embeddings.first().map_or(0, Vec::len);
    println!(
        "{{\"side\":\"safeformers\",\"sentences\":{},\"batch_size\":{},\"threads\":{},\"dimension\":{dimension},\"load_seconds\":{load_seconds:.4},\"seconds\":{seconds:.4},\"sentences_per_second\":{:.2}}}",
        sentences.len(),
        options.batch_size,
        options.threads,
        sentences.len() as f64 / seconds
    );
    Ok(())
}
