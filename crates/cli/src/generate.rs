//! Text generation on the command line: the flags `run text-generation` and `chat` share, and
//! `safeformers chat --model M`, a conversation read from stdin line by line.

use std::cell::RefCell;
use std::io::{BufRead as _, IsTerminal as _, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;
use clap::Args;
use safeformers_files::FileError;
use serde_json::{Value, json};

use safeformers::pipelines::generation::PromptCache;
use safeformers::{
    GeneratedContent, GenerationConfig, GenerationInput, Output, TextGeneration,
    TextGenerationOptions,
};

use crate::UsageError;
use crate::output;
use crate::run::ModelLoadArgs;

/// Sampling and stopping flags (all but `--top-k`, which `run` shares with other tasks).
#[derive(Debug, Clone, Args)]
pub struct GenerationArgs {
    /// Tokens to generate at most (default: the model's generation config, else 256).
    #[arg(long, value_name = "N")]
    pub max_new_tokens: Option<usize>,
    /// Tokens to generate at least before an end-of-sequence token may end the text.
    #[arg(long, value_name = "N")]
    pub min_new_tokens: Option<usize>,
    /// Always take the most likely token (no sampling).
    #[arg(long, conflicts_with_all = ["temperature", "top_p", "min_p", "seed"])]
    pub greedy: bool,
    /// Sample at this temperature (default: the model's, else 0.7).
    #[arg(long, value_name = "T")]
    pub temperature: Option<f64>,
    /// Sample from the most likely tokens whose probabilities add up to P.
    #[arg(long, value_name = "P")]
    pub top_p: Option<f64>,
    /// Sample only tokens at least P times as likely as the most likely one.
    #[arg(long, value_name = "P")]
    pub min_p: Option<f64>,
    /// Penalise tokens already in the text (1.0: none; Transformers' repetition_penalty).
    #[arg(long, value_name = "R")]
    pub repetition_penalty: Option<f64>,
    /// Seed of the sampler: the same seed, model and flags give the same text.
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Stop once the text contains STR (kept in the output); repeat for several.
    #[arg(long = "stop", value_name = "STR")]
    pub stop: Vec<String>,
    /// Cut the prompt from the left when it leaves no room for the new tokens in the model's
    /// context window (default: an error).
    #[arg(long)]
    pub truncate: bool,
}

impl GenerationArgs {
    /// The caller's generation settings. Any sampling flag turns sampling on; `--greedy` off.
    /// Every value is checked by the library's own check of generation settings
    /// ([`GenerationConfig::validate`], the one a model's `generation_config.json` gets): an
    /// out-of-range value, NaN or infinity is a usage error naming the flag.
    pub fn config(&self, top_k: Option<usize>) -> anyhow::Result<GenerationConfig> {
        if self.greedy && top_k.is_some() {
            return Err(UsageError("--greedy and --top-k contradict each other".into()).into());
        }
        if top_k == Some(0) {
            return Err(UsageError("--top-k must be at least 1".into()).into());
        }
        let samples = self.temperature.is_some()
            || top_k.is_some()
            || self.top_p.is_some()
            || self.min_p.is_some()
            || self.seed.is_some();
        let do_sample = if self.greedy {
            Some(false)
        } else if samples {
            Some(true)
        } else {
            None
        };
        let config = GenerationConfig {
            max_new_tokens: self.max_new_tokens,
            min_new_tokens: self.min_new_tokens,
            do_sample,
            temperature: self.temperature,
            top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repetition_penalty: self.repetition_penalty,
            stop_strings: (!self.stop.is_empty()).then(|| self.stop.clone()),
            ..GenerationConfig::default()
        };
        config.validate().map_err(|invalid| {
            UsageError(format!(
                "--{}: {}",
                invalid.field.replace('_', "-"),
                invalid.reason
            ))
        })?;
        Ok(config)
    }

    /// The pipeline options of one call.
    pub fn options(
        &self,
        top_k: Option<usize>,
        batch_size: usize,
        return_full_text: bool,
    ) -> anyhow::Result<TextGenerationOptions> {
        Ok(TextGenerationOptions {
            generation: self.config(top_k)?,
            return_full_text,
            seed: self.seed,
            truncate: self.truncate,
            batch_size,
            first_index: 0,
        })
    }
}

/// `run text-generation`'s own switches.
#[derive(Debug, Clone, Args)]
pub struct TextGenerationArgs {
    /// text-generation: print the text as it is generated (plain text, one line per input:
    /// the prompt, unless --new-text-only, then the new text) instead of JSON.
    #[arg(long)]
    pub stream: bool,
    /// text-generation: each input is a JSON list of chat messages
    /// ([{"role": "user", "content": "..."}]), rendered with the model's chat template.
    #[arg(long)]
    pub chat: bool,
    /// text-generation: only the new text in `generated_text` (Transformers'
    /// return_full_text=False).
    #[arg(long)]
    pub new_text_only: bool,
    /// text-generation: after each input, one JSON line of timings on stderr:
    /// {"load_s", "prompt_tokens", "prompt_s", "generated_tokens", "generation_s"}.
    #[arg(long)]
    pub stats: bool,
}

impl TextGenerationArgs {
    /// Whether any of these flags was given (they apply to text-generation only).
    pub fn any(&self) -> bool {
        self.stream || self.chat || self.new_text_only || self.stats
    }
}

/// Prints `--stats` lines: the load time, then each generation call's timings.
#[derive(Debug, Clone, Copy)]
pub struct StatsPrinter {
    /// Seconds from the start of loading to the loaded pipeline (resolution included).
    pub load_s: f64,
}

impl StatsPrinter {
    /// One JSON line on stderr per input `pipeline` generated since the last print.
    pub fn print(self, pipeline: &TextGeneration) -> anyhow::Result<()> {
        for stats in pipeline.take_stats() {
            let line = json!({
                "load_s": self.load_s,
                "prompt_tokens": stats.prompt_tokens,
                "prompt_s": stats.prompt_s,
                "generated_tokens": stats.generated_tokens,
                "generation_s": stats.generation_s,
            });
            let mut stderr = std::io::stderr().lock();
            writeln!(stderr, "{line}")?;
            stderr.flush()?;
        }
        Ok(())
    }
}

/// Whether any sampling/stopping flag was given.
pub fn any_generation_flag(args: &GenerationArgs) -> bool {
    args.max_new_tokens.is_some()
        || args.min_new_tokens.is_some()
        || args.greedy
        || args.temperature.is_some()
        || args.top_p.is_some()
        || args.min_p.is_some()
        || args.repetition_penalty.is_some()
        || args.seed.is_some()
        || !args.stop.is_empty()
        || args.truncate
}

/// The inputs of `run text-generation`: text prompts, or with `--chat` JSON lists of messages.
pub fn generation_inputs(inputs: Vec<String>, chat: bool) -> anyhow::Result<Vec<GenerationInput>> {
    if !chat {
        return Ok(inputs.into_iter().map(GenerationInput::Text).collect());
    }
    inputs
        .into_iter()
        .enumerate()
        .filter(|(_, input)| !input.trim().is_empty())
        .map(|(index, input)| {
            let messages: Vec<Value> = serde_json::from_str(&input).map_err(|error| {
                UsageError(format!(
                    "--chat input {}: expected a JSON list of messages \
                     [{{\"role\": \"user\", \"content\": \"...\"}}]: {error}",
                    index + 1
                ))
            })?;
            Ok(GenerationInput::Chat(messages))
        })
        .collect()
}

/// `run text-generation` once the model folder is known: one JSON line per input
/// (`[{"generated_text": ...}]`, Transformers' output for that input), or with `--stream` the
/// text as it comes; with `stats`, the timings of each input on stderr after its batch.
pub fn run_text_generation(
    pipeline: &TextGeneration,
    inputs: &[GenerationInput],
    options: &TextGenerationOptions,
    switches: &TextGenerationArgs,
    stats: Option<StatsPrinter>,
) -> anyhow::Result<()> {
    let print_stats = || stats.map_or(Ok(()), |printer| printer.print(pipeline));
    if !switches.stream {
        // Inputs go through in batches; each line is printed when its batch is done.
        let batch_size = options.batch_size.max(1);
        for (index, chunk) in inputs.chunks(batch_size).enumerate() {
            let chunk_options = TextGenerationOptions {
                first_index: options.first_index + index * batch_size,
                ..options.clone()
            };
            let results = pipeline.run(chunk, &chunk_options)?;
            output::print(&Output::TextGeneration(results).to_json()?)?;
            print_stats()?;
        }
        return Ok(());
    }
    // Streaming: one input at a time, each printed as it is generated: its prompt (when the
    // full text is asked for) before its first piece, a newline after its last.
    for (index, input) in inputs.iter().enumerate() {
        if index > 0 {
            print_piece("\n")?;
        }
        if let (GenerationInput::Text(prompt), true) = (input, options.return_full_text) {
            print_piece(prompt)?;
        }
        let one = TextGenerationOptions {
            batch_size: 1,
            first_index: options.first_index + index,
            ..options.clone()
        };
        pipeline.run_streaming(std::slice::from_ref(input), &one, &mut |_, text| {
            print_piece(text)
        })?;
        print_stats()?;
    }
    if !inputs.is_empty() {
        output::print("\n")?;
    }
    Ok(())
}

/// Prints a piece of streamed text; a closed stdout comes back as an I/O error (which `main`
/// treats as a normal end).
fn print_piece(text: &str) -> safeformers_pipelines::Result<()> {
    output::print(text).map_err(|source| FileError::io(Path::new("<stdout>"), source).into())
}

/// Arguments of `chat`.
#[derive(Debug, Args)]
pub struct ChatArgs {
    /// A model folder, a `.gguf` file, or a repo id `org/name[@REV]` resolved through the cache
    /// and the Hub.
    #[arg(long, value_name = "M")]
    model: PathBuf,
    /// A system message that opens the conversation.
    #[arg(long, value_name = "TEXT")]
    system: Option<String>,
    /// Sample only from the N most likely tokens.
    #[arg(long, value_name = "N")]
    top_k: Option<usize>,
    #[command(flatten)]
    generation: GenerationArgs,
    #[command(flatten)]
    load: ModelLoadArgs,
    /// After each reply, one JSON line of timings on stderr: {"load_s", "prompt_tokens",
    /// "prompt_s", "generated_tokens", "generation_s"} (the prompt tokens of the whole
    /// conversation; only the new turn is computed).
    #[arg(long)]
    stats: bool,
}

/// Runs `chat`: each stdin line is a user turn; the reply is streamed to stdout and ends with
/// a newline; the conversation (system message, turns and replies) is kept for the next turn.
/// Ends at the end of stdin. Works the same when stdin is not a terminal (then no prompt is
/// shown).
pub fn chat(args: &ChatArgs) -> anyhow::Result<ExitCode> {
    let settings = args.generation.options(args.top_k, 1, true)?;
    let options = args.load.options()?;
    let loading = Instant::now();
    let pipeline = TextGeneration::from_pretrained(&args.model, &options)?;
    let stats = args.stats.then(|| StatsPrinter {
        load_s: loading.elapsed().as_secs_f64(),
    });
    // The conversation's KV cache, continued turn by turn (it travels into the pipeline's
    // thread pool and back with each turn).
    let mut prompt_cache = RefCell::new(PromptCache::default());
    let mut messages: Vec<Value> = Vec::new();
    if let Some(system) = &args.system {
        messages.push(json!({"role": "system", "content": system}));
    }
    let interactive = std::io::stdin().is_terminal();
    let stdin = std::io::stdin();
    let mut stdin = stdin.lock();
    loop {
        if interactive {
            eprint!("> ");
            std::io::stderr().flush().ok();
        }
        let Some(line) = read_turn(&mut stdin)? else {
            break;
        };
        if line.trim().is_empty() {
            continue;
        }
        messages.push(json!({"role": "user", "content": line}));
        let input = GenerationInput::Chat(messages.clone());
        let (result, cache) = pipeline.install(|pipeline| {
            // Only the new turn is computed.
            let result = pipeline.run_streaming_continuing(
                &input,
                &settings,
                &prompt_cache,
                &mut print_piece,
            );
            (result, prompt_cache)
        });
        prompt_cache = cache;
        let result = result?;
        output::print("\n")?;
        if let Some(printer) = stats {
            printer.print(&pipeline)?;
        }
        let reply = match result.generated_text {
            GeneratedContent::Chat(mut chat) => chat.pop(),
            GeneratedContent::Text(text) => Some(json!({"role": "assistant", "content": text})),
        }
        .context("the pipeline returned no reply")?;
        messages.push(reply);
    }
    Ok(ExitCode::SUCCESS)
}

/// The most bytes of one user turn (one stdin line of `chat`): stdin may be endless.
const MAX_TURN_BYTES: u64 = 16 * 1024 * 1024;

/// One line of stdin, without its newline, or `None` at the end; a line over [`MAX_TURN_BYTES`]
/// or not UTF-8 is an error.
fn read_turn(stdin: &mut impl std::io::BufRead) -> anyhow::Result<Option<String>> {
    let mut bytes = Vec::new();
    let read = stdin
        .take(MAX_TURN_BYTES + 1)
        .read_until(b'\n', &mut bytes)
        .context("reading a user turn from stdin")?;
    if read == 0 {
        return Ok(None);
    }
    if bytes.len() as u64 > MAX_TURN_BYTES {
        anyhow::bail!("a user turn on stdin is longer than {MAX_TURN_BYTES} bytes");
    }
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
    }
    String::from_utf8(bytes)
        .map(Some)
        .context("a user turn on stdin is not valid UTF-8")
}
