//! Generation that can be stepped: per-sequence state ([`Sequence`]: ids, KV cache, sampler
//! stream, stopping state) and a [`Batch`] whose [`Batch::step`] advances every running member by
//! one token. Members join ([`Batch::join`]) and leave ([`Batch::leave`]) between steps; a step
//! runs the prompts of new members and the last tokens of the others in one model call
//! ([`CausalLm::forward_sequences`]), with no padding. What a sequence generates does not depend
//! on the other members: its scores come from its own cache, its draws from its own stream.

use std::collections::HashMap;
use std::sync::Arc;

use safeformers_models::{CausalLm, LogitsAt, SequenceCache, SequenceInput};

use super::DecodeFn;
use super::config::GenerationParams;
use super::logits::process_logits;
use super::sampling::TokenChooser;
use super::stopping::{StopReason, StopStringState};
use crate::error::{PipelineError, Result};

/// New tokens a member's cache reserves room for when it joins, at most.
const MAX_RESERVED_NEW_TOKENS: usize = 2048;

/// Identifies a member of a [`Batch`] (given by [`Batch::join`], never reused).
pub type SequenceId = u64;

/// Per-sequence settings for [`Batch::join`]: each member has its own generation parameters.
#[derive(Debug, Clone)]
pub struct SequenceOptions {
    /// Processors, EOS ids, length limits, stop strings.
    pub params: Arc<GenerationParams>,
    /// Greedy or a seeded sampling stream.
    pub chooser: TokenChooser,
    /// New tokens at most.
    pub max_new_tokens: usize,
    /// The prompt length `min_length` counts (a static batch counts its padded length, as
    /// Transformers does); usually the prompt's own length.
    pub counted_prompt_len: usize,
    /// Pad tokens the logits processors see before the prompt (a static batch's left padding,
    /// as Transformers' processors see it); usually 0.
    pub processor_padding: usize,
    /// The pad token id (for `processor_padding`).
    pub pad_token_id: u32,
    /// OpenAI's presence and frequency penalties over the tokens generated so far.
    pub output_penalties: OutputPenalties,
    /// Record each chosen token's log-probability and those of this many most likely tokens
    /// ([`Sequence::logprobs`]); `None` records nothing.
    pub logprobs: Option<usize>,
}

/// OpenAI's `presence_penalty` and `frequency_penalty`, as vLLM applies them: before the
/// logits processors, each token generated so far has its score lowered by `presence` once
/// and by `frequency` per time it was generated (the prompt does not count). Zero for both
/// (the default) changes nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct OutputPenalties {
    /// Subtracted once from every token that was generated.
    pub presence: f32,
    /// Subtracted per occurrence among the generated tokens.
    pub frequency: f32,
}

impl OutputPenalties {
    fn is_neutral(&self) -> bool {
        self.presence == 0.0 && self.frequency == 0.0
    }
}

/// A chosen token's log-probability under the model (the log-softmax of its raw scores, before
/// penalties, processors and sampling), and the most likely tokens' with theirs.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprobs {
    /// The chosen token.
    pub token: u32,
    /// Its log-probability.
    pub logprob: f32,
    /// The most likely tokens, most likely first, as many as [`SequenceOptions::logprobs`].
    pub top: Vec<(u32, f32)>,
}

impl SequenceOptions {
    /// The settings of a sequence on its own: greedy or sampling from stream `stream` of
    /// `seed` as `params` say, `params`' length limit for a prompt of `prompt_len` tokens, no
    /// padding.
    pub fn new(
        params: Arc<GenerationParams>,
        prompt_len: usize,
        seed: u64,
        stream: u64,
    ) -> SequenceOptions {
        SequenceOptions {
            chooser: if params.do_sample {
                TokenChooser::seeded_stream(seed, stream)
            } else {
                TokenChooser::Greedy
            },
            max_new_tokens: params.length.new_tokens(prompt_len),
            counted_prompt_len: prompt_len,
            processor_padding: 0,
            pad_token_id: params.pad_token_id.unwrap_or(0),
            output_penalties: OutputPenalties::default(),
            logprobs: None,
            params,
        }
    }
}

/// One member's state.
#[derive(Debug)]
pub struct Sequence {
    prompt: Vec<u32>,
    /// What the logits processors see: processor padding, the prompt, the tokens so far.
    history: Vec<u32>,
    tokens: Vec<u32>,
    cache: SequenceCache,
    /// Tokens the next step runs (the uncached end of the prompt, then the last token).
    pending: Vec<u32>,
    chooser: TokenChooser,
    options: SequenceOptions,
    stop_reason: Option<StopReason>,
    stop_strings: Option<StopStringState>,
    /// How often each token was generated (kept only with output penalties).
    generated_counts: HashMap<u32, u32>,
    logprobs: Vec<TokenLogprobs>,
}

impl Sequence {
    /// The prompt.
    pub fn prompt(&self) -> &[u32] {
        &self.prompt
    }

    /// The tokens generated so far (an EOS token included).
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// The log-probabilities of the tokens generated so far, one per token, when
    /// [`SequenceOptions::logprobs`] asked for them (empty otherwise).
    pub fn logprobs(&self) -> &[TokenLogprobs] {
        &self.logprobs
    }

    /// Why the sequence stopped, once it has.
    pub fn stop_reason(&self) -> Option<StopReason> {
        self.stop_reason
    }

    /// The KV cache: the prompt and every generated token but the last (which was chosen,
    /// not yet run).
    pub fn cache(&self) -> &SequenceCache {
        &self.cache
    }

    /// The KV cache, to continue from (a chat's next turn).
    pub fn into_cache(self) -> SequenceCache {
        self.cache
    }

    fn limits_reached(&self) -> bool {
        self.tokens.len() >= self.options.max_new_tokens
    }
}

/// A token chosen by a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepToken {
    /// The member.
    pub id: SequenceId,
    /// The token.
    pub token: u32,
    /// Set when the member stopped with this token.
    pub stopped: Option<StopReason>,
}

/// A set of sequences generated together, one token per member per [`Batch::step`].
pub struct Batch<'m> {
    model: &'m dyn CausalLm,
    members: Vec<(SequenceId, Sequence)>,
    next_id: SequenceId,
}

impl std::fmt::Debug for Batch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("members", &self.members)
            .field("next_id", &self.next_id)
            .finish()
    }
}

impl<'m> Batch<'m> {
    /// An empty batch generating with `model`.
    pub fn new(model: &'m dyn CausalLm) -> Batch<'m> {
        Batch {
            model,
            members: Vec::new(),
            next_id: 0,
        }
    }

    /// Adds a sequence for `prompt` (not empty) with a fresh cache; it runs from the next step.
    /// `decode` turns ids into text, for the params' stop strings.
    pub fn join(
        &mut self,
        prompt: Vec<u32>,
        options: SequenceOptions,
        decode: Option<DecodeFn<'_>>,
    ) -> Result<SequenceId> {
        let cache = self.model.new_sequence_cache();
        self.join_with_cache(prompt, cache, options, decode)
    }

    /// As [`Batch::join`], continuing `cache`: the part of it that is a prefix of `prompt`
    /// is kept (not recomputed), the rest dropped.
    pub fn join_with_cache(
        &mut self,
        prompt: Vec<u32>,
        mut cache: SequenceCache,
        options: SequenceOptions,
        decode: Option<DecodeFn<'_>>,
    ) -> Result<SequenceId> {
        if prompt.is_empty() {
            return Err(PipelineError::InvalidInput(
                "a sequence needs at least one prompt token".into(),
            ));
        }
        // At least the last prompt token runs: its logits choose the first new token.
        let reused = cache.len().min(prompt.len() - 1);
        cache.truncate(reused);
        // Room for the whole sequence up front, so that no step moves the cache; a limit of
        // more than `MAX_RESERVED_NEW_TOKENS` new tokens grows by doubling past that instead of
        // reserving memory it may never use.
        let reserve = prompt
            .len()
            .saturating_add(options.max_new_tokens.min(MAX_RESERVED_NEW_TOKENS));
        let reserve = self
            .model
            .context_length()
            .map_or(reserve, |c| reserve.min(c));
        cache.reserve(reserve)?;
        let stop_strings =
            match decode {
                Some(decode) if !options.params.stop_strings.is_empty() => Some(
                    StopStringState::new(&prompt, &options.params.stop_strings, decode)?,
                ),
                _ => None,
            };
        let mut history = vec![options.pad_token_id; options.processor_padding];
        history.extend_from_slice(&prompt);
        let id = self.next_id;
        self.next_id += 1;
        let sequence = Sequence {
            pending: prompt.get(reused..).unwrap_or_default().to_vec(),
            prompt,
            history,
            tokens: Vec::new(),
            cache,
            chooser: options.chooser.clone(),
            options,
            stop_reason: None,
            stop_strings,
            generated_counts: HashMap::new(),
            logprobs: Vec::new(),
        };
        self.members.push((id, sequence));
        Ok(id)
    }

    /// Removes a member (running or stopped) and hands back its state.
    pub fn leave(&mut self, id: SequenceId) -> Option<Sequence> {
        let index = self.members.iter().position(|(member, _)| *member == id)?;
        Some(self.members.remove(index).1)
    }

    /// A member's state.
    pub fn get(&self, id: SequenceId) -> Option<&Sequence> {
        self.members
            .iter()
            .find(|(member, _)| *member == id)
            .map(|(_, sequence)| sequence)
    }

    /// The members, in the order they joined.
    pub fn ids(&self) -> Vec<SequenceId> {
        self.members.iter().map(|(id, _)| *id).collect()
    }

    /// Whether any member still runs.
    pub fn is_running(&self) -> bool {
        self.members
            .iter()
            .any(|(_, sequence)| sequence.stop_reason.is_none())
    }

    /// Removes and returns every member that has stopped.
    pub fn take_finished(&mut self) -> Vec<(SequenceId, Sequence)> {
        let (done, running) = std::mem::take(&mut self.members)
            .into_iter()
            .partition(|(_, sequence)| sequence.stop_reason.is_some());
        self.members = running;
        done
    }

    /// Runs one step: every running member's pending tokens through the model in one call,
    /// then one new token each (processors, chooser, stopping). Returns the chosen tokens in
    /// member order; stopped members stay until [`Batch::leave`] or [`Batch::take_finished`].
    pub fn step(&mut self, decode: Option<DecodeFn<'_>>) -> Result<Vec<StepToken>> {
        let vocab = self.model.vocab_size();
        let mut running: Vec<&mut (SequenceId, Sequence)> = self
            .members
            .iter_mut()
            .filter(|(_, sequence)| sequence.stop_reason.is_none())
            .collect();
        let mut inputs: Vec<SequenceInput<'_>> = running
            .iter_mut()
            .map(|(_, sequence)| SequenceInput {
                tokens: &sequence.pending,
                cache: &mut sequence.cache,
                logits: LogitsAt::Last,
            })
            .collect();
        let logits = self.model.forward_sequences(&mut inputs)?;
        drop(inputs);
        if logits.len() != running.len() || logits.iter().any(|row| row.len() != vocab) {
            return Err(PipelineError::InvalidInput(format!(
                "the model returned {} rows of last-token logits for {} sequences and a \
                 vocabulary of {vocab}",
                logits.len(),
                running.len()
            )));
        }
        let mut chosen = Vec::with_capacity(running.len());
        for ((id, sequence), mut scores) in running.into_iter().zip(logits) {
            let token = choose(*id, sequence, &mut scores)?;
            let stopped = advance(sequence, token, decode)?;
            chosen.push(StepToken {
                id: *id,
                token,
                stopped,
            });
        }
        Ok(chosen)
    }
}

/// The member's next token from its scores (and its log-probabilities, when asked for).
fn choose(id: SequenceId, sequence: &mut Sequence, scores: &mut [f32]) -> Result<u32> {
    let raw_logprobs = sequence.options.logprobs.map(|_| log_softmax(scores));
    let params = Arc::clone(&sequence.options.params);
    let penalties = sequence.options.output_penalties;
    if !penalties.is_neutral() {
        for (&token, &count) in &sequence.generated_counts {
            if let Some(score) = scores.get_mut(token as usize) {
                *score -= penalties.presence + penalties.frequency * count as f32;
            }
        }
    }
    let step = sequence.tokens.len();
    let suppress_eos = step < params.min_new_tokens
        || sequence.options.counted_prompt_len.saturating_add(step) < params.min_length;
    let suppressed: &[u32] = if suppress_eos {
        &params.eos_token_ids
    } else {
        &[]
    };
    process_logits(&params.processors, &sequence.history, suppressed, scores);
    let token = sequence.chooser.choose(scores).ok_or_else(|| {
        PipelineError::InvalidInput(format!(
            "row {id}, new token {step}: every token was ruled out (the model's scores are all \
             -inf or NaN after the logits processors)"
        ))
    })?;
    if let (Some(top), Some(logprobs)) = (sequence.options.logprobs, raw_logprobs) {
        sequence
            .logprobs
            .push(token_logprobs(token, &logprobs, top));
    }
    Ok(token)
}

/// `log(softmax(scores))`, computed stably; NaN scores count as `-inf`.
fn log_softmax(scores: &[f32]) -> Vec<f32> {
    let finite = |score: f32| {
        if score.is_nan() {
            f32::NEG_INFINITY
        } else {
            score
        }
    };
    let max = scores
        .iter()
        .copied()
        .map(finite)
        .fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return vec![f32::NEG_INFINITY; scores.len()];
    }
    let sum: f64 = scores
        .iter()
        .map(|&score| f64::from(finite(score) - max).exp())
        .sum();
    let log_sum = sum.ln() as f32;
    scores
        .iter()
        .map(|&score| finite(score) - max - log_sum)
        .collect()
}

/// The chosen token's log-probability and the `top` most likely tokens' (ties by lower id).
fn token_logprobs(token: u32, logprobs: &[f32], top: usize) -> TokenLogprobs {
    let mut ranked: Vec<(u32, f32)> = Vec::with_capacity(top + 1);
    if top > 0 {
        for (index, &logprob) in logprobs.iter().enumerate() {
            let better = |&(held, other): &(u32, f32)| {
                logprob > other || (logprob == other && (index as u32) < held)
            };
            if ranked.len() < top || ranked.last().is_some_and(better) {
                let at = ranked.iter().position(better).unwrap_or(ranked.len());
                ranked.insert(at, (index as u32, logprob));
                ranked.truncate(top);
            }
        }
    }
    TokenLogprobs {
        token,
        logprob: logprobs
            .get(token as usize)
            .copied()
            .unwrap_or(f32::NEG_INFINITY),
        top: ranked,
    }
}

/// Appends `token` to the member and decides whether it stops.
fn advance(
    sequence: &mut Sequence,
    token: u32,
    decode: Option<DecodeFn<'_>>,
) -> Result<Option<StopReason>> {
    let params = Arc::clone(&sequence.options.params);
    sequence.history.push(token);
    sequence.tokens.push(token);
    if !sequence.options.output_penalties.is_neutral() {
        *sequence.generated_counts.entry(token).or_insert(0) += 1;
    }
    sequence.pending.clear();
    sequence.pending.push(token);
    let mut stopped = None;
    if params.eos_token_ids.contains(&token) {
        stopped = Some(StopReason::Eos);
    } else if let (Some(state), Some(decode)) = (&mut sequence.stop_strings, decode)
        && state.push(&sequence.prompt, &sequence.tokens, decode)?
    {
        stopped = Some(StopReason::StopString);
    } else if sequence.limits_reached() {
        stopped = Some(StopReason::Length);
    }
    sequence.stop_reason = stopped;
    Ok(stopped)
}
