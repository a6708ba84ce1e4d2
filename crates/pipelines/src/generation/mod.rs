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
//! The loop ([`generate`]) left-pads the prompts, passes positions `cumsum(mask) - 1` (1 on
//! padding), runs the prompt once and then one token per step through the KV cache, and fills
//! the rows that finished early with the pad token, as Transformers' `_sample` does. Each new
//! token is handed to a callback as it is chosen, which is how text is streamed.

pub mod config;
pub mod logits;
pub mod sampling;
pub mod stopping;

use candle_core::{DType, Device, IndexOp, Tensor};
use safeformers_models::CausalLm;

use crate::error::{PipelineError, Result};

pub use config::{GenerationConfig, GenerationParams, LengthLimit};
pub use logits::{LogitsProcessor, process_logits};
pub use sampling::TokenChooser;
pub use stopping::StopReason;

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
}

impl Default for GenerateOptions<'_> {
    fn default() -> Self {
        GenerateOptions {
            truncate: false,
            seed: None,
            first_index: 0,
            decode: None,
            device: Device::Cpu,
        }
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

/// Per-row state of the loop.
struct Row {
    /// Padded prompt and every token appended so far: what the repetition penalty sees.
    ids: Vec<u32>,
    /// The attention mask of `ids`.
    mask: Vec<u32>,
    /// Real (unpadded) tokens so far: the next position is this minus one.
    real_tokens: usize,
    prompt: Vec<u32>,
    tokens: Vec<u32>,
    /// Tokens the row produced before it stopped.
    generated: usize,
    stop_reason: Option<StopReason>,
    /// The row's text so far, kept only for stop strings.
    text: String,
}

/// Generates for every prompt (token ids, special tokens included) with `params`, calling
/// `on_token(row, token)` for each token a row produces, as soon as it is chosen.
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
    // Padding is masked out; 0 stands in when the model defines no pad token.
    let pad = params.pad_token_id.unwrap_or(0);
    let mut rows: Vec<Row> = prompts
        .into_iter()
        .map(|prompt| {
            let padding = longest - prompt.len();
            let mut ids = vec![pad; padding];
            ids.extend_from_slice(&prompt);
            let mut mask = vec![0; padding];
            mask.resize(longest, 1);
            Row {
                ids,
                mask,
                real_tokens: prompt.len(),
                prompt,
                // Grown as tokens come: `max_new_tokens` may be any number the caller or the
                // model's files give, when the model states no context window to bound it.
                tokens: Vec::new(),
                generated: 0,
                stop_reason: None,
                text: String::new(),
            }
        })
        .collect();
    let decode = options.decode.filter(|_| !params.stop_strings.is_empty());
    if let Some(decode) = decode {
        for row in &mut rows {
            row.text = decode(&row.prompt)?;
        }
    }
    let seed = options.seed.unwrap_or_else(clock_seed);
    let mut choosers: Vec<TokenChooser> = (0..rows.len() as u64)
        .map(|row| {
            if params.do_sample {
                TokenChooser::seeded_stream(seed, options.first_index + row)
            } else {
                TokenChooser::Greedy
            }
        })
        .collect();
    let device = &options.device;
    let batch = rows.len();
    let mut cache = model.new_cache();

    // Prefill: the whole padded prompt, positions cumsum(mask) - 1 with padding at 1.
    let ids: Vec<u32> = rows
        .iter()
        .flat_map(|row| row.ids.iter().copied())
        .collect();
    let positions: Vec<i64> = rows
        .iter()
        .flat_map(|row| prefill_positions(&row.mask))
        .collect();
    let mut logits = last_logits(
        model,
        &Tensor::from_vec(ids, (batch, longest), device)?,
        &Tensor::from_vec(positions, (batch, longest), device)?,
        &rows,
        &mut cache,
        device,
    )?;

    for step in 0..max_new_tokens {
        let suppress_eos =
            step < params.min_new_tokens || longest.saturating_add(step) < params.min_length;
        let suppressed: &[u32] = if suppress_eos {
            &params.eos_token_ids
        } else {
            &[]
        };
        let mut next_tokens = Vec::with_capacity(batch);
        for (index, ((row, scores), chooser)) in rows
            .iter_mut()
            .zip(logits.iter_mut())
            .zip(choosers.iter_mut())
            .enumerate()
        {
            if row.stop_reason.is_some() {
                next_tokens.push(pad);
                continue;
            }
            process_logits(&params.processors, &row.ids, suppressed, scores);
            let token = chooser.choose(scores).ok_or_else(|| {
                PipelineError::InvalidInput(format!(
                    "row {index}, new token {step}: every token was ruled out (the model's \
                     scores are all -inf or NaN after the logits processors)"
                ))
            })?;
            next_tokens.push(token);
        }
        for (index, (row, &token)) in rows.iter_mut().zip(&next_tokens).enumerate() {
            row.ids.push(token);
            row.mask.push(1);
            row.real_tokens += 1;
            row.tokens.push(token);
            if row.stop_reason.is_some() {
                continue;
            }
            row.generated += 1;
            on_token(index, token)?;
            if params.eos_token_ids.contains(&token) {
                row.stop_reason = Some(StopReason::Eos);
            } else if let Some(decode) = decode {
                let mut sequence = row.prompt.clone();
                sequence.extend_from_slice(&row.tokens);
                let text = decode(&sequence)?;
                let boundary = stopping::common_prefix_len(&row.text, &text);
                if stopping::ends_in_stop_string(&text, boundary, &params.stop_strings) {
                    row.stop_reason = Some(StopReason::StopString);
                }
                row.text = text;
            }
        }
        let last_step = step + 1 == max_new_tokens;
        if last_step || rows.iter().all(|row| row.stop_reason.is_some()) {
            break;
        }
        let positions: Vec<i64> = rows
            .iter()
            .map(|row| i64::try_from(row.real_tokens).unwrap_or(i64::MAX) - 1)
            .collect();
        logits = last_logits(
            model,
            &Tensor::from_vec(next_tokens, (batch, 1), device)?,
            &Tensor::from_vec(positions, (batch, 1), device)?,
            &rows,
            &mut cache,
            device,
        )?;
    }
    Ok(rows
        .into_iter()
        .map(|row| GeneratedRow {
            prompt: row.prompt,
            generated: row.generated,
            tokens: row.tokens,
            stop_reason: row.stop_reason.unwrap_or(StopReason::Length),
        })
        .collect())
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

/// Transformers' prefill positions: `cumsum(mask) - 1`, with padding set to 1.
fn prefill_positions(mask: &[u32]) -> Vec<i64> {
    let mut seen = 0i64;
    mask.iter()
        .map(|&m| {
            if m == 0 {
                1
            } else {
                seen += 1;
                seen - 1
            }
        })
        .collect()
}

/// Runs the model on the new tokens and returns each row's scores for the last one.
fn last_logits(
    model: &dyn CausalLm,
    input_ids: &Tensor,
    position_ids: &Tensor,
    rows: &[Row],
    cache: &mut safeformers_models::KvCache,
    device: &Device,
) -> Result<Vec<Vec<f32>>> {
    let batch = rows.len();
    let total = rows.first().map_or(0, |row| row.mask.len());
    let mask: Vec<u32> = rows
        .iter()
        .flat_map(|row| row.mask.iter().copied())
        .collect();
    let mask = Tensor::from_vec(mask, (batch, total), device)?;
    // Only the last position's logits: the model skips the LM head on the rest of a prefill.
    let logits = model.forward_last(input_ids, position_ids, &mask, cache)?;
    let (out_batch, new, vocab) = logits.dims3()?;
    if out_batch != batch || new != 1 || vocab != model.vocab_size() {
        return Err(PipelineError::InvalidInput(format!(
            "the model returned last-token logits of shape {:?} for {batch} rows of {} new \
             tokens and a vocabulary of {}",
            logits.dims(),
            input_ids.dim(1)?,
            model.vocab_size()
        )));
    }
    Ok(logits.i((.., 0, ..))?.to_dtype(DType::F32)?.to_vec2()?)
}

/// A seed for sampling without one: the clock's nanoseconds (not secret, only varied).
fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefill_positions_count_real_tokens_and_put_padding_at_one() {
        assert_eq!(prefill_positions(&[0, 0, 1, 1, 1]), vec![1, 1, 0, 1, 2]);
        assert_eq!(prefill_positions(&[1, 1]), vec![0, 1]);
    }
}
