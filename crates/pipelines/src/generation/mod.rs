//! Text generation for decoder-only models, written against [`CausalLm`] only: Transformers'
//! `generate()` for greedy decoding and sampling, a batch at a time.
//!
//! - [`config`]: `generation_config.json`, the fallback to `config.json`, the caller's
//!   overrides and the global defaults ([`GenerationConfig`] → [`GenerationParams`]).
//! - [`logits`]: repetition penalty, temperature, top-k, top-p, min-p, EOS suppression for a
//!   minimum length, in Transformers' order.
//! - [`sampling`]: greedy or seeded sampling.
//! - [`stopping`]: EOS ids, the length limit, stop strings.
//!
//! - [`step`]: per-sequence state and a [`Batch`] that advances one token per
//!   [`Batch::step`], members joining and leaving between steps (continuous batching).
//!
//! [`generate`] is a loop of [`Batch::step`] over one batch; it fills the rows that finished
//! early with the pad token, as Transformers' `_sample` does. Each new token is handed to a
//! callback as it is chosen, which is how text is streamed.

pub mod config;
pub mod logits;
pub mod sampling;
pub mod step;
pub mod stopping;

use std::cell::RefCell;
use std::sync::Arc;

use candle_core::Device;
use safeformers_models::{CausalLm, SequenceCache};

use crate::error::{PipelineError, Result};

pub use config::{GenerationConfig, GenerationParams, LengthLimit};
pub use logits::{LogitsProcessor, process_logits};
pub use sampling::TokenChooser;
pub use step::{
    Batch, OutputPenalties, Sequence, SequenceId, SequenceOptions, StepToken, TokenLogprobs,
};
pub use stopping::{StopReason, StopStringState};

/// Turns token ids into text (special tokens kept), for stop strings.
pub type DecodeFn<'a> = &'a dyn Fn(&[u32]) -> Result<String>;

/// What [`generate`] needs besides the model, the prompts and the parameters.
pub struct GenerateOptions<'a> {
    /// Left-truncate prompts that do not leave room for the new tokens in the model's context
    /// window, instead of failing with [`PipelineError::PromptTooLong`].
    pub truncate: bool,
    /// Seed of the sampler (ignored when greedy); `None` seeds from the clock.
    pub seed: Option<u64>,
    /// The index of the first prompt among all the caller's inputs: prompt `i` samples from
    /// stream `first_index + i` of the seeded generator, so its tokens do not depend on how
    /// the inputs were split into batches.
    pub first_index: u64,
    /// Turns a row's token ids into text (special tokens kept); needed for stop strings.
    pub decode: Option<DecodeFn<'a>>,
    /// Where the model's inputs are placed.
    pub device: Device,
    /// The KV cache of an earlier call (a chat's previous turn), continued where its tokens are
    /// a prefix of the prompt and left holding this call's sequence; used when there is one
    /// prompt.
    pub prompt_cache: Option<&'a RefCell<PromptCache>>,
}

impl Default for GenerateOptions<'_> {
    fn default() -> Self {
        GenerateOptions {
            truncate: false,
            seed: None,
            first_index: 0,
            decode: None,
            device: Device::Cpu,
            prompt_cache: None,
        }
    }
}

/// Token ids and the KV cache that holds them, kept from one [`generate`] call for the next
/// (a chat keeps its conversation's cache across turns: only what changed is computed).
#[derive(Debug, Default)]
pub struct PromptCache {
    ids: Vec<u32>,
    cache: Option<SequenceCache>,
}

impl PromptCache {
    /// Tokens held.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The cache to continue for `prompt`: what it holds up to the first token that differs.
    fn take_for(&mut self, prompt: &[u32]) -> Option<SequenceCache> {
        let mut cache = self.cache.take()?;
        let common = self
            .ids
            .iter()
            .zip(prompt)
            .take_while(|(held, wanted)| held == wanted)
            .count();
        cache.truncate(common);
        self.ids.clear();
        Some(cache)
    }

    /// Keeps `sequence`'s cache and the ids it holds.
    fn keep(&mut self, sequence: Sequence) {
        let mut ids = sequence.prompt().to_vec();
        ids.extend_from_slice(sequence.tokens());
        let cache = sequence.into_cache();
        ids.truncate(cache.len());
        self.ids = ids;
        self.cache = Some(cache);
    }
}

impl std::fmt::Debug for GenerateOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GenerateOptions")
            .field("truncate", &self.truncate)
            .field("seed", &self.seed)
            .field("first_index", &self.first_index)
            .field("decode", &self.decode.is_some())
            .field("device", &self.device)
            .field("prompt_cache", &self.prompt_cache.is_some())
            .finish()
    }
}

/// One row of a generated batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedRow {
    /// The prompt as the model saw it (after any truncation), without padding.
    pub prompt: Vec<u32>,
    /// The new tokens as Transformers returns them: a row that finished before the others is
    /// filled up with the pad token to the batch's length.
    pub tokens: Vec<u32>,
    /// How many of `tokens` the row generated itself (its EOS token included); the rest is
    /// padding.
    pub generated: usize,
    /// Why the row stopped.
    pub stop_reason: StopReason,
}

impl GeneratedRow {
    /// The tokens the row generated, without the padding of early finishers.
    pub fn new_tokens(&self) -> &[u32] {
        self.tokens.get(..self.generated).unwrap_or(&self.tokens)
    }
}

/// Generates for every prompt (token ids, special tokens included) with `params`, calling
/// `on_token(row, token)` for each token a row produces, as soon as it is chosen.
///
/// A loop of [`Batch::step`] over one batch that nobody joins: each prompt is a member with
/// the settings Transformers gives a row of a left-padded static batch (the length limits count
/// the longest prompt, the processors see the row's left padding), so the outputs are those of
/// Transformers' batched `generate`; the model itself runs no padding.
///
/// Errors: an empty prompt without a `bos_token_id`; a prompt that, with the new tokens, does
/// not fit the model's context window (unless `options.truncate`); a model output of the wrong
/// shape.
pub fn generate(
    model: &dyn CausalLm,
    prompts: &[Vec<u32>],
    params: &GenerationParams,
    options: &GenerateOptions<'_>,
    on_token: &mut dyn FnMut(usize, u32) -> Result<()>,
) -> Result<Vec<GeneratedRow>> {
    if prompts.is_empty() {
        return Ok(Vec::new());
    }
    let mut prompts: Vec<Vec<u32>> = prompts
        .iter()
        .map(|prompt| match (prompt.is_empty(), params.bos_token_id) {
            (false, _) => Ok(prompt.clone()),
            (true, Some(bos)) => Ok(vec![bos]),
            (true, None) => Err(PipelineError::InvalidInput(
                "an empty prompt needs a bos_token_id in the generation config to start from"
                    .into(),
            )),
        })
        .collect::<Result<_>>()?;
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let max_new_tokens = params.length.new_tokens(longest);
    if max_new_tokens == 0 {
        return Err(PipelineError::InvalidInput(format!(
            "the prompt has {longest} tokens, which already reaches max_length ({:?}): nothing \
             is left to generate (set max_new_tokens instead)",
            params.length
        )));
    }
    let longest = fit_context(model, &mut prompts, max_new_tokens, options.truncate)?;
    // Padding is what the processors see of a static batch; 0 stands in without a pad token.
    let pad = params.pad_token_id.unwrap_or(0);
    let decode = options.decode.filter(|_| !params.stop_strings.is_empty());
    let seed = options.seed.unwrap_or_else(clock_seed);
    let mut batch = Batch::new(model);
    let shared = Arc::new(params.clone());
    let count = prompts.len();
    let mut rows = Vec::with_capacity(count);
    for (index, prompt) in prompts.into_iter().enumerate() {
        let chooser = if params.do_sample {
            TokenChooser::seeded_stream(seed, options.first_index + index as u64)
        } else {
            TokenChooser::Greedy
        };
        let sequence_options = SequenceOptions {
            params: Arc::clone(&shared),
            chooser,
            max_new_tokens,
            counted_prompt_len: longest,
            processor_padding: longest - prompt.len(),
            pad_token_id: pad,
            output_penalties: OutputPenalties::default(),
            logprobs: None,
        };
        let reused = match options.prompt_cache {
            Some(held) if count == 1 => held.borrow_mut().take_for(&prompt),
            _ => None,
        };
        rows.push(match reused {
            Some(cache) => batch.join_with_cache(prompt, cache, sequence_options, decode)?,
            None => batch.join(prompt, sequence_options, decode)?,
        });
    }
    while batch.is_running() {
        for chosen in batch.step(decode)? {
            let row = rows.iter().position(|&id| id == chosen.id).unwrap_or(0);
            on_token(row, chosen.token)?;
        }
    }
    let sequences: Vec<Sequence> = rows.iter().filter_map(|&id| batch.leave(id)).collect();
    Ok(finish_rows(sequences, pad, options.prompt_cache))
}

/// The rows of finished sequences; rows that finished early are filled up with the pad token,
/// as Transformers returns them. A single sequence's cache goes to `prompt_cache`.
fn finish_rows(
    sequences: Vec<Sequence>,
    pad: u32,
    prompt_cache: Option<&RefCell<PromptCache>>,
) -> Vec<GeneratedRow> {
    let steps = sequences
        .iter()
        .map(|sequence| sequence.tokens().len())
        .max()
        .unwrap_or(0);
    let single = sequences.len() == 1;
    let mut rows = Vec::with_capacity(sequences.len());
    for sequence in sequences {
        let mut tokens = sequence.tokens().to_vec();
        let generated = tokens.len();
        tokens.resize(steps, pad);
        rows.push(GeneratedRow {
            prompt: sequence.prompt().to_vec(),
            generated,
            tokens,
            stop_reason: sequence.stop_reason().unwrap_or(StopReason::Length),
        });
        if let (true, Some(held)) = (single, prompt_cache) {
            held.borrow_mut().keep(sequence);
        }
    }
    rows
}

/// Checks that the longest prompt plus `max_new_tokens` fits the model's context window;
/// left-truncates every prompt to fit when `truncate`. Returns the longest prompt's length.
fn fit_context(
    model: &dyn CausalLm,
    prompts: &mut [Vec<u32>],
    max_new_tokens: usize,
    truncate: bool,
) -> Result<usize> {
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let Some(context) = model.context_length() else {
        return Ok(longest);
    };
    // `max_new_tokens` may be as large as `usize::MAX` (from a flag or a model's file).
    if longest.saturating_add(max_new_tokens) <= context {
        return Ok(longest);
    }
    let keep = context.saturating_sub(max_new_tokens);
    if !truncate || keep == 0 {
        return Err(PipelineError::PromptTooLong {
            prompt_tokens: longest,
            max_new_tokens,
            context_length: context,
        });
    }
    for prompt in prompts.iter_mut() {
        let cut = prompt.len().saturating_sub(keep);
        prompt.drain(..cut);
    }
    Ok(prompts.iter().map(Vec::len).max().unwrap_or(0))
}

/// A seed for sampling without one: the clock's nanoseconds (not secret, only varied).
fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos() as u64)
        .unwrap_or(0)
}
