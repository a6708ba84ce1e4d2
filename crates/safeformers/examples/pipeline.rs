//! `cargo run --release -p safeformers --example pipeline -- TASK MODEL [FLAGS] INPUT...`
//!
//! Prints exactly what `safeformers run TASK --model MODEL [FLAGS] INPUT...` prints, through the
//! library: `safeformers::pipeline(TASK, MODEL, &Options)`, then `Output::to_json`. MODEL is a
//! folder or a repo id resolved through the Hugging Face cache and the Hub, with the `HF_*`
//! environment (`HF_HUB_OFFLINE=1`, `HF_HUB_CACHE`, `HF_ENDPOINT`, `HF_TOKEN`) as the CLI reads
//! it. FLAGS, for the tasks whose defaults are not deterministic or not enough:
//! `--greedy`, `--seed N`, `--max-new-tokens N` (text-generation); `--question Q --context C`
//! (question-answering).

use std::process::ExitCode;

use safeformers::{GenerationConfig, Input, Options, Task, TextGenerationOptions};

/// Runs the pipeline and prints its JSON (public: the CLI's parity test runs this `main`).
pub fn main() -> ExitCode {
    // Chat templates render in an isolated child of this program.
    safeformers::chat_sandbox::serve_if_requested();
    match run() {
        Ok(json) => {
            print!("{json}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The parsed command line: task, model, flags, inputs.
struct Arguments {
    task: String,
    model: String,
    generation: GenerationConfig,
    seed: Option<u64>,
    question: Option<String>,
    context: Option<String>,
    inputs: Vec<Input>,
}

fn run() -> Result<String, String> {
    let arguments = parse(std::env::args().skip(1))?;
    let task = Task::from_name(&arguments.task).map_err(|error| error.to_string())?;
    let mut inputs = arguments.inputs;
    if let (Some(question), Some(context)) = (arguments.question, arguments.context) {
        inputs.push(Input::QuestionContext { question, context });
    }
    let options = Options::new();
    let pipeline = safeformers::pipeline(&arguments.task, &arguments.model, &options)
        .map_err(|error| error.to_string())?;
    let pipeline = if task == Task::TextGeneration {
        pipeline.with_generation(TextGenerationOptions {
            generation: arguments.generation,
            seed: arguments.seed,
            batch_size: safeformers::pipelines::DEFAULT_BATCH_SIZE,
            ..TextGenerationOptions::default()
        })
    } else {
        pipeline
    };
    let output = pipeline.run(&inputs).map_err(|error| error.to_string())?;
    output.to_json().map_err(|error| error.to_string())
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Arguments, String> {
    let usage = "usage: pipeline TASK MODEL [--greedy] [--seed N] [--max-new-tokens N] \
                 [--question Q --context C] INPUT...";
    let task = args.next().ok_or(usage)?;
    let model = args.next().ok_or(usage)?;
    let mut arguments = Arguments {
        task,
        model,
        generation: GenerationConfig::default(),
        seed: None,
        question: None,
        context: None,
        inputs: Vec::new(),
    };
    let number = |value: Option<String>, flag: &str| -> Result<u64, String> {
        value
            .and_then(|value| value.parse().ok())
            .ok_or_else(|| format!("{flag} takes a whole number"))
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--greedy" => arguments.generation.do_sample = Some(false),
            "--seed" => {
                arguments.seed = Some(number(args.next(), "--seed")?);
                arguments.generation.do_sample = Some(true);
            }
            "--max-new-tokens" => {
                let tokens = number(args.next(), "--max-new-tokens")?;
                arguments.generation.max_new_tokens = usize::try_from(tokens).ok();
            }
            "--question" => arguments.question = Some(args.next().ok_or(usage)?),
            "--context" => arguments.context = Some(args.next().ok_or(usage)?),
            _ => arguments.inputs.push(Input::Text(arg)),
        }
    }
    Ok(arguments)
}
