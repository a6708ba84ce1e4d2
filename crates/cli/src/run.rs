//! `safeformers run TASK --model M [options] INPUT... | -`: the task pipelines, printing JSON
//! shaped like Transformers' pipeline outputs (shared/CLI.md).

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, ValueEnum};

use safeformers::weights::LoadPolicy;
use safeformers::{
    Aggregation, FeatureExtraction, FeatureExtractionSettings, FillMask, Options, Output,
    PoolingMode, QuestionAnsweringOptions, SentenceSimilarity, TextClassification,
    TokenClassification, WeightOptions,
};

use crate::UsageError;
use crate::generate::{
    GenerationArgs, StatsPrinter, TextGenerationArgs, any_generation_flag, generation_inputs,
    run_text_generation,
};
use crate::model::{GgufFileArg, HubArgs, LockArgs};
use crate::output;

/// `--threads N`: the size of the thread pool the model runs in.
#[derive(Debug, Clone, Args)]
pub struct ThreadArgs {
    /// Threads for the model's tensor operations, 1 to 4 per core (default:
    /// `RAYON_NUM_THREADS` when set, else one per core).
    #[arg(long, value_name = "N", value_parser = parse_thread_count)]
    threads: Option<usize>,
}

/// clap's parser of `--threads`: a count out of bounds is a usage error before anything runs.
fn parse_thread_count(text: &str) -> Result<usize, String> {
    let count = text
        .trim()
        .parse::<usize>()
        .map_err(|_| format!("`{text}` is not a whole number of threads"))?;
    safeformers::check_thread_count(count)
}

impl ThreadArgs {
    /// `options` with `--threads`.
    pub fn apply(&self, options: Options) -> Options {
        match self.threads {
            Some(threads) => options.threads(threads),
            None => options,
        }
    }

    /// Runs `work` inside the thread pool of `--threads` (see
    /// [`safeformers::Options::thread_pool`]).
    pub fn install<T: Send>(
        &self,
        work: impl FnOnce() -> anyhow::Result<T> + Send,
    ) -> anyhow::Result<T> {
        let pool = self.apply(Options::new()).thread_pool()?;
        pool.install(work)
    }
}

/// `--dtype f32|f16|bf16` and `--quantize q8|q8_0|q4_0|q4_k`: how the linear layers' weights
/// are stored (compute stays f32). Default: the checkpoint's values exactly (f32; a GGUF file's
/// quantized blocks as stored).
#[derive(Debug, Clone, Args)]
pub struct WeightArgs {
    /// Storage of linear-layer weights: f32, f16 or bf16 (halves the memory read per token;
    /// results differ from f32 in the last digits). Default: f32, and a GGUF file's quantized
    /// blocks multiplied as stored; an explicit `--dtype f32` dequantizes them to f32 at load.
    #[arg(long, value_name = "TYPE")]
    dtype: Option<String>,
    /// Quantize linear-layer weights at load: `q8` (8-bit blocks of 32 with an f32 scale), or
    /// GGUF's `q8_0`, `q4_0`, `q4_k` (`q4_k` falls back to `q4_0` on rows that are not whole
    /// blocks of 256). Needs --dtype f32; refused on a GGUF model (quantized already).
    #[arg(long, value_name = "SCHEME")]
    quantize: Option<String>,
}

impl WeightArgs {
    /// The checked load options; a bad value or combination is a usage error.
    pub fn load_options(&self) -> anyhow::Result<WeightOptions> {
        WeightOptions::from_names(self.dtype.as_deref(), self.quantize.as_deref(), "--")
            .map_err(|message| UsageError(message).into())
    }
}

/// How a model is found and loaded: `--allow-pickle`, `--threads`, `--dtype`/`--quantize`, the
/// Hub flags and `--locked`; shared by `run`, `chat` and `forward`.
#[derive(Debug, Clone, Args)]
pub struct ModelLoadArgs {
    /// Read pickle-based checkpoints with the restricted (non-executing) unpickler.
    #[arg(long)]
    pub allow_pickle: bool,
    #[command(flatten)]
    pub threads: ThreadArgs,
    #[command(flatten)]
    pub weights: WeightArgs,
    #[command(flatten)]
    pub gguf: GgufFileArg,
    #[command(flatten)]
    pub hub: HubArgs,
    #[command(flatten)]
    pub lock: LockArgs,
}

impl ModelLoadArgs {
    /// The library options of these flags; a bad `--dtype`/`--quantize`/`--gguf-file` is a
    /// usage error.
    pub fn options(&self) -> anyhow::Result<Options> {
        let options = self
            .threads
            .apply(self.hub.options(&self.lock))
            .allow_pickle(self.allow_pickle)
            .weights(self.weights.load_options()?);
        self.gguf.apply(options)
    }
}

/// The load policy of `--allow-pickle`.
pub fn policy(allow_pickle: bool) -> LoadPolicy {
    Options::new().allow_pickle(allow_pickle).load_policy()
}

/// The tasks of `run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Task {
    /// Token embeddings per input ([1, seq, hidden] each, as Transformers' pipeline), or one
    /// vector per input for a sentence-transformers folder or with --pooling.
    FeatureExtraction,
    /// Cosine similarity of the first input's sentence embedding to each of the others'
    /// (a list of floats; mean pooling for folders that configure none).
    SentenceSimilarity,
    /// The best label per input ({"label", "score"}), or with --top-k the N best per input.
    TextClassification,
    /// Per input, the --top-k (default 5) fills of its mask token ({"score", "token",
    /// "token_str", "sequence"}); a list per mask when an input has several.
    FillMask,
    /// Per input, the entities: tokens ({"entity", "score", "index", "word", "start", "end"})
    /// or, with --aggregation, groups ({"entity_group", "score", "word", "start", "end"}).
    TokenClassification,
    /// The answer to --question found in --context ({"score", "start", "end", "answer"}), or
    /// with --top-k the N best (a list); with `-`, JSON lines {"question", "context"} on
    /// stdin, one result line each.
    QuestionAnswering,
    /// Per input, one JSON line [{"generated_text": prompt + new text}] (with --chat: the
    /// messages plus the assistant's reply); with --stream, the text as it is generated.
    TextGeneration,
}

/// `--aggregation` (Transformers' `aggregation_strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AggregationArg {
    /// Every token on its own (the default).
    None,
    /// Adjacent tokens of one entity type grouped.
    Simple,
    /// Words labelled by their first token, then grouped.
    First,
    /// Words labelled by their most confident token, then grouped.
    Max,
    /// Words labelled by their tokens' mean scores, then grouped.
    Average,
}

/// `--pooling`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PoolingArg {
    /// Mean over the real tokens.
    Mean,
    /// The first token ([CLS]).
    Cls,
    /// Element-wise maximum over the real tokens.
    Max,
    /// The last real token (decoder embedders such as Qwen3-Embedding).
    LastToken,
    /// No pooling: token embeddings.
    None,
}

/// Arguments of `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The task.
    #[arg(value_enum)]
    task: Task,
    /// The inputs; `-` alone reads them from stdin, one per line (question-answering: one
    /// JSON object {"question", "context"} per line).
    #[arg(value_name = "INPUT", required_unless_present_any = ["question", "context"])]
    inputs: Vec<String>,
    /// question-answering: the question.
    #[arg(long, value_name = "Q")]
    question: Option<String>,
    /// question-answering: the text the answer is taken from.
    #[arg(long, value_name = "C")]
    context: Option<String>,
    /// question-answering: the longest answer, in tokens (default 15).
    #[arg(long, value_name = "N")]
    max_answer_len: Option<usize>,
    /// question-answering: also offer the empty answer (scored by the [CLS] token).
    #[arg(long)]
    handle_impossible_answer: bool,
    /// A model folder, a `.gguf` file (text-generation), or a repo id `org/name[@REV]` resolved
    /// through the cache and the Hub.
    #[arg(long, value_name = "M")]
    model: PathBuf,
    /// feature-extraction: pool token embeddings into one vector per input (default: the
    /// folder's sentence-transformers pooling, else none).
    #[arg(long, value_enum)]
    pooling: Option<PoolingArg>,
    /// feature-extraction: L2-normalize the output vectors (after --truncate-dim).
    #[arg(long)]
    normalize: bool,
    /// feature-extraction: prepend the folder's prompt NAME (config_sentence_transformers.json
    /// `prompts`, e.g. `query`) to every input (default: its `default_prompt_name`, if any).
    #[arg(long, value_name = "NAME", conflicts_with = "prompt")]
    prompt_name: Option<String>,
    /// feature-extraction: prepend TEXT to every input instead of any named prompt.
    #[arg(long, value_name = "TEXT")]
    prompt: Option<String>,
    /// feature-extraction: keep the first N dimensions of each sentence embedding (Matryoshka
    /// models), after the folder's Dense and Normalize modules.
    #[arg(long, value_name = "N")]
    truncate_dim: Option<usize>,
    /// text-classification: the N best labels per input (a list per input); fill-mask: the N
    /// best tokens per mask (default 5); question-answering: the N best answers (a list);
    /// text-generation: sample only from the N most likely tokens.
    #[arg(long, value_name = "N")]
    top_k: Option<usize>,
    /// token-classification: how tokens are merged into entities (default none).
    #[arg(long, value_enum)]
    aggregation: Option<AggregationArg>,
    /// Inputs per forward pass (sorted by length so that batches pad little).
    #[arg(long, value_name = "N", default_value_t = 32)]
    batch_size: usize,
    #[command(flatten)]
    load: ModelLoadArgs,
    #[command(flatten)]
    generation: GenerationArgs,
    #[command(flatten)]
    text_generation: TextGenerationArgs,
}

/// Runs `run`.
pub fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    check_flags(args)?;
    let options = args.load.options()?.batch_size(args.batch_size);
    if args.task == Task::QuestionAnswering {
        let pairs = question_context_pairs(args)?;
        let pipeline = safeformers::QuestionAnswering::from_pretrained(&args.model, &options)?;
        let defaults = QuestionAnsweringOptions::default();
        let settings = QuestionAnsweringOptions {
            max_answer_len: args.max_answer_len.unwrap_or(defaults.max_answer_len),
            handle_impossible_answer: args.handle_impossible_answer,
            ..defaults
        };
        let answers = pipeline.run(&pairs, args.top_k.unwrap_or(1), &settings)?;
        return print_output(&Output::QuestionAnswering(answers));
    }
    if args.task == Task::TextGeneration {
        let settings = args.generation.options(
            args.top_k,
            args.batch_size,
            !args.text_generation.new_text_only,
        )?;
        let inputs = generation_inputs(read_inputs(&args.inputs)?, args.text_generation.chat)?;
        let loading = std::time::Instant::now();
        let pipeline = safeformers::TextGeneration::from_pretrained(&args.model, &options)?;
        let stats = args.text_generation.stats.then(|| StatsPrinter {
            load_s: loading.elapsed().as_secs_f64(),
        });
        run_text_generation(&pipeline, &inputs, &settings, &args.text_generation, stats)?;
        return Ok(ExitCode::SUCCESS);
    }
    let inputs = read_inputs(&args.inputs)?;
    if args.task == Task::SentenceSimilarity && inputs.len() < 2 {
        return Err(UsageError(
            "sentence-similarity needs a source sentence and at least one other".into(),
        )
        .into());
    }
    print_output(&encoder_output(args, &options, &inputs)?)
}

/// Refuses flags that do not apply to the task, and out-of-range values (usage errors).
fn check_flags(args: &RunArgs) -> anyhow::Result<()> {
    if args.batch_size == 0 {
        return Err(UsageError("--batch-size must be at least 1".into()).into());
    }
    let only_for = |flag: &str, task: Task| -> anyhow::Result<()> {
        if args.task != task {
            return Err(UsageError(format!(
                "{flag} applies to {} only",
                task.to_possible_value()
                    .map(|v| v.get_name().to_string())
                    .unwrap_or_default()
            ))
            .into());
        }
        Ok(())
    };
    if args.pooling == Some(PoolingArg::None)
        || args.normalize
        || args.prompt_name.is_some()
        || args.prompt.is_some()
        || args.truncate_dim.is_some()
    {
        only_for(
            "--normalize, --pooling none, --prompt-name, --prompt and --truncate-dim",
            Task::FeatureExtraction,
        )?;
    }
    if args.truncate_dim == Some(0) {
        return Err(UsageError("--truncate-dim must be at least 1".into()).into());
    }
    if args.top_k.is_some()
        && !matches!(
            args.task,
            Task::TextClassification
                | Task::FillMask
                | Task::QuestionAnswering
                | Task::TextGeneration
        )
    {
        return Err(UsageError(
            "--top-k applies to text-classification, fill-mask, question-answering and \
             text-generation"
                .into(),
        )
        .into());
    }
    // Checked here so that q8 with a 16-bit dtype is a usage error before anything loads.
    args.load.weights.load_options()?;
    if any_generation_flag(&args.generation) || args.text_generation.any() {
        only_for(
            "--max-new-tokens, --greedy, --temperature, --top-p, --min-p, --seed, \
             --repetition-penalty, --stop, --truncate, --stream, --chat and --new-text-only",
            Task::TextGeneration,
        )?;
    }
    if args.top_k == Some(0) {
        return Err(UsageError("--top-k must be at least 1".into()).into());
    }
    if args.aggregation.is_some() {
        only_for("--aggregation", Task::TokenClassification)?;
    }
    if args.load.gguf.gguf_file.is_some() {
        only_for("--gguf-file", Task::TextGeneration)?;
    }
    if args.question.is_some()
        || args.context.is_some()
        || args.max_answer_len.is_some()
        || args.handle_impossible_answer
    {
        only_for(
            "--question, --context, --max-answer-len and --handle-impossible-answer",
            Task::QuestionAnswering,
        )?;
    }
    Ok(())
}

/// The output of the tasks that run an encoder on text inputs.
fn encoder_output(args: &RunArgs, options: &Options, inputs: &[String]) -> anyhow::Result<Output> {
    let model = &args.model;
    Ok(match args.task {
        Task::FeatureExtraction => {
            let settings = FeatureExtractionSettings {
                pooling: pooling_modes(args.pooling),
                normalize: args.normalize,
                prompt_name: args.prompt_name.clone(),
                prompt: args.prompt.clone(),
                truncate_dim: args.truncate_dim,
            };
            let pipeline = FeatureExtraction::from_pretrained_with(model, options, &settings)?;
            Output::FeatureExtraction(pipeline.run(inputs)?)
        }
        Task::SentenceSimilarity => {
            let pooling = pooling_modes(args.pooling);
            let pipeline = SentenceSimilarity::from_pretrained(model, options, pooling)?;
            Output::SentenceSimilarity(pipeline.run(inputs)?)
        }
        Task::TextClassification => {
            let pipeline = TextClassification::from_pretrained(model, options)?;
            Output::TextClassification(pipeline.run(inputs, args.top_k)?)
        }
        Task::FillMask => {
            let pipeline = FillMask::from_pretrained(model, options)?;
            let top_k = args.top_k.unwrap_or(safeformers::FILL_MASK_TOP_K);
            Output::FillMask(pipeline.run(inputs, top_k)?)
        }
        Task::TokenClassification => {
            let pipeline = TokenClassification::from_pretrained(model, options)?;
            Output::TokenClassification(pipeline.run(inputs, aggregation(args.aggregation))?)
        }
        Task::QuestionAnswering | Task::TextGeneration => {
            anyhow::bail!("{:?} does not run on plain text inputs", args.task)
        }
    })
}

/// Prints `output` as the library writes it (compact JSON lines).
fn print_output(output: &Output) -> anyhow::Result<ExitCode> {
    output::print(&output.to_json()?)?;
    Ok(ExitCode::SUCCESS)
}

/// The most bytes of inputs read from stdin (`run ... -`): stdin may be endless (`< /dev/zero`).
pub const MAX_STDIN_BYTES: u64 = 256 * 1024 * 1024;

/// The inputs: the arguments, or stdin's lines for a lone `-`.
fn read_inputs(inputs: &[String]) -> anyhow::Result<Vec<String>> {
    if inputs != ["-"] {
        if inputs.iter().any(|input| input == "-") {
            return Err(UsageError("`-` (stdin) must be the only input".into()).into());
        }
        return Ok(inputs.to_vec());
    }
    let mut bytes = Vec::new();
    std::io::stdin()
        .lock()
        .take(MAX_STDIN_BYTES + 1)
        .read_to_end(&mut bytes)
        .context("reading the inputs from stdin")?;
    if bytes.len() as u64 > MAX_STDIN_BYTES {
        anyhow::bail!(
            "stdin holds more than {MAX_STDIN_BYTES} bytes of inputs: split them over several runs"
        );
    }
    let text = String::from_utf8(bytes).map_err(|error| {
        let offset = error.utf8_error().valid_up_to();
        anyhow::anyhow!(
            "stdin is not valid UTF-8 (invalid byte at offset {offset}): give text, one input \
             per line"
        )
    })?;
    Ok(text.lines().map(str::to_string).collect())
}

fn pooling_modes(pooling: Option<PoolingArg>) -> Option<Vec<PoolingMode>> {
    pooling.map(|pooling| match pooling {
        PoolingArg::Mean => vec![PoolingMode::Mean],
        PoolingArg::Cls => vec![PoolingMode::Cls],
        PoolingArg::Max => vec![PoolingMode::Max],
        PoolingArg::LastToken => vec![PoolingMode::LastToken],
        PoolingArg::None => Vec::new(),
    })
}

fn aggregation(aggregation: Option<AggregationArg>) -> Aggregation {
    match aggregation.unwrap_or(AggregationArg::None) {
        AggregationArg::None => Aggregation::None,
        AggregationArg::Simple => Aggregation::Simple,
        AggregationArg::First => Aggregation::First,
        AggregationArg::Max => Aggregation::Max,
        AggregationArg::Average => Aggregation::Average,
    }
}

/// A question and its context, as Transformers' `{"question": .., "context": ..}` input.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct QuestionContext {
    question: String,
    context: String,
}

/// The pairs of question-answering: `--question` and `--context`, or JSON lines on stdin.
fn question_context_pairs(args: &RunArgs) -> anyhow::Result<Vec<(String, String)>> {
    match (&args.question, &args.context, args.inputs.as_slice()) {
        (Some(question), Some(context), []) => Ok(vec![(question.clone(), context.clone())]),
        (None, None, [dash]) if dash == "-" => {
            let lines = read_inputs(&args.inputs)?;
            let mut pairs = Vec::new();
            for (number, line) in lines.iter().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let pair: QuestionContext = serde_json::from_str(line).map_err(|error| {
                    UsageError(format!(
                        "stdin line {}: expected {{\"question\": .., \"context\": ..}}: {error}",
                        number + 1
                    ))
                })?;
                pairs.push((pair.question, pair.context));
            }
            Ok(pairs)
        }
        _ => Err(UsageError(
            "question-answering takes --question Q --context C, or `-` alone to read JSON lines \
             {\"question\", \"context\"} from stdin"
                .into(),
        )
        .into()),
    }
}
