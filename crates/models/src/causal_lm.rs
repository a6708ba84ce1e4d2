//! The interface between decoder-only language models and generation.
//!
//! A decoder (`gpt2.rs`, `llama.rs`, ...) implements [`CausalLm`]; the generation loop in
//! `safeformers-pipelines` only sees this trait. One call runs the model on the *new* tokens of
//! every row, appends their keys and values to a [`KvCache`], and returns the logits of those
//! tokens. Prefill is a call with the whole prompt; each decode step is a call with one token.
//!
//! Shapes and conventions (the same as Transformers' `generate`):
//! - `input_ids`: `u32` `[batch, new]`.
//! - `position_ids`: `i64` `[batch, new]`. With left padding, generation passes
//!   `cumsum(attention_mask) - 1` (pad positions set to 1), exactly as Transformers'
//!   `prepare_inputs_for_generation`; a plain forward without padding passes `0..new`.
//! - `attention_mask`: `u32` `[batch, past + new]`, 1 for real tokens and 0 for padding, covering
//!   the cached tokens and the new ones. The model adds causality (and a sliding window where the
//!   config has one) itself.
//! - Returns logits `f32` `[batch, new, vocab_size]`.
//!
//! Generation runs on the other interface, [`CausalLm::forward_sequences`]: a set of
//! sequences of any lengths, each with its own [`SequenceCache`], no padding. The decoders of
//! this crate run it natively (packed rows, attention over each cache in place); for a model
//! that only implements the tensor interface, the default method groups the sequences into
//! left-padded tensor calls, as Transformers' batched `generate` would.

use std::fmt::Debug;

use candle_core::{Device, Tensor};

use crate::config::ModelConfig;
use crate::decoder::LogitsAt;
use crate::error::{Error, Result};
pub use crate::kv_cache::{KvCache, SequenceCache};

/// A decoder-only language model with an LM head (`AutoModelForCausalLM`).
pub trait CausalLm: Debug + Send + Sync {
    /// The parsed `config.json`.
    fn config(&self) -> &ModelConfig;

    /// Rows of the logits.
    fn vocab_size(&self) -> usize;

    /// The longest sequence (prompt plus generated tokens) the model was built for
    /// (`max_position_embeddings`, `n_positions`), if the config states one.
    fn context_length(&self) -> Option<usize>;

    /// An empty cache for this model.
    fn new_cache(&self) -> KvCache;

    /// Runs the new tokens, appends them to `cache`, and returns the logits of the positions
    /// `logits` asks for (see the module documentation for shapes; `Last` gives
    /// `[batch, 1, vocab_size]`). Models skip the LM head on the other positions; one that
    /// computes them all can return `logits.select(all)`.
    fn forward_at(
        &self,
        input_ids: &Tensor,
        position_ids: &Tensor,
        attention_mask: &Tensor,
        cache: &mut KvCache,
        logits: LogitsAt,
    ) -> Result<Tensor>;

    /// [`CausalLm::forward_at`] with the logits of every new token.
    fn forward(
        &self,
        input_ids: &Tensor,
        position_ids: &Tensor,
        attention_mask: &Tensor,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        self.forward_at(
            input_ids,
            position_ids,
            attention_mask,
            cache,
            LogitsAt::All,
        )
    }

    /// [`CausalLm::forward_at`] with only the last new token's logits of every row, all
    /// generation needs.
    fn forward_last(
        &self,
        input_ids: &Tensor,
        position_ids: &Tensor,
        attention_mask: &Tensor,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        self.forward_at(
            input_ids,
            position_ids,
            attention_mask,
            cache,
            LogitsAt::Last,
        )
    }

    /// An empty cache for one sequence.
    fn new_sequence_cache(&self) -> SequenceCache {
        SequenceCache::new(self.new_cache().num_layers())
    }

    /// Runs each sequence's new tokens (at positions `cache.len()..`), appends them to its
    /// cache, and returns per sequence the logits it asked for (`[rows, vocab]` row-major).
    ///
    /// The default runs the tensor interface: sequences with empty caches together, left-padded
    /// to the longest (positions `cumsum(mask) - 1`, padding at 1, as Transformers' batched
    /// `generate`), and the others grouped by cache and input length.
    fn forward_sequences(&self, inputs: &mut [SequenceInput<'_>]) -> Result<Vec<Vec<f32>>> {
        let mut groups: Vec<((usize, usize), Vec<usize>)> = Vec::new();
        for (index, input) in inputs.iter().enumerate() {
            let key = if input.cache.is_empty() {
                (0, 0)
            } else {
                (input.cache.len(), input.tokens.len())
            };
            match groups.iter_mut().find(|(group, _)| *group == key) {
                Some((_, members)) => members.push(index),
                None => groups.push((key, vec![index])),
            }
        }
        let mut logits = vec![Vec::new(); inputs.len()];
        for (_, members) in groups {
            let group_logits = padded_call(self, inputs, &members)?;
            for (index, values) in members.into_iter().zip(group_logits) {
                if let Some(slot) = logits.get_mut(index) {
                    *slot = values;
                }
            }
        }
        Ok(logits)
    }
}

/// One sequence's part of a [`CausalLm::forward_sequences`] call.
#[derive(Debug)]
pub struct SequenceInput<'a> {
    /// The new token ids.
    pub tokens: &'a [u32],
    /// The sequence's cache: the new tokens continue it.
    pub cache: &'a mut SequenceCache,
    /// Which of the new tokens get logits.
    pub logits: LogitsAt,
}

/// The default [`CausalLm::forward_sequences`] for the `members` of one group (equal cache
/// lengths, or all empty): one left-padded tensor call.
fn padded_call<M: CausalLm + ?Sized>(
    model: &M,
    inputs: &mut [SequenceInput<'_>],
    members: &[usize],
) -> Result<Vec<Vec<f32>>> {
    let picked: Vec<&mut SequenceInput<'_>> = inputs
        .iter_mut()
        .enumerate()
        .filter(|(index, _)| members.contains(index))
        .map(|(_, input)| input)
        .collect();
    let longest = picked
        .iter()
        .map(|input| input.tokens.len())
        .max()
        .unwrap_or(0);
    let batch = picked.len();
    let (mut ids, mut positions, mut mask) = (Vec::new(), Vec::new(), Vec::new());
    let mut all_logits = false;
    for input in &picked {
        let cache = &input.cache;
        let (cached, padding) = (cache.len(), cache.left_padding.min(cache.len()));
        let pad = longest - input.tokens.len();
        ids.extend(std::iter::repeat_n(0u32, pad).chain(input.tokens.iter().copied()));
        let real_so_far = (cached - padding) as i64;
        positions.extend(std::iter::repeat_n(1i64, pad));
        positions.extend((0..input.tokens.len() as i64).map(|i| real_so_far + i));
        mask.extend(std::iter::repeat_n(0u32, padding));
        mask.extend(std::iter::repeat_n(1u32, cached - padding));
        mask.extend(std::iter::repeat_n(0u32, pad));
        mask.extend(std::iter::repeat_n(1u32, input.tokens.len()));
        all_logits |= input.logits == LogitsAt::All;
    }
    let past = picked.first().map_or(0, |input| input.cache.len());
    let device = Device::Cpu;
    let ids = Tensor::from_vec(ids, (batch, longest), &device)?;
    let positions = Tensor::from_vec(positions, (batch, longest), &device)?;
    let mask = Tensor::from_vec(mask, (batch, past + longest), &device)?;
    let num_layers = model.new_cache().num_layers();
    let mut rows = Vec::with_capacity(batch);
    let mut pads = Vec::with_capacity(batch);
    let mut picked = picked;
    for input in picked.iter_mut() {
        pads.push(longest - input.tokens.len());
        rows.push(std::mem::take(input.cache));
    }
    let mut cache = KvCache::from_sequences(num_layers, rows);
    let result = if all_logits {
        model.forward(&ids, &positions, &mask, &mut cache)
    } else {
        model.forward_last(&ids, &positions, &mask, &mut cache)
    };
    for ((input, mut row), pad) in picked.iter_mut().zip(cache.into_sequences()).zip(pads) {
        if past == 0 {
            row.left_padding = pad;
        }
        *input.cache = row;
    }
    let logits = result?;
    let (out_batch, out_rows, vocab) = logits.dims3()?;
    if out_batch != batch || vocab != model.vocab_size() {
        return Err(Error::Cache {
            reason: format!(
                "the model returned logits {:?} for {batch} sequences",
                logits.dims()
            ),
        });
    }
    let values: Vec<Vec<Vec<f32>>> = logits.to_vec3::<f32>()?;
    Ok(values
        .into_iter()
        .zip(&picked)
        .map(|(rows, input)| {
            let keep = match input.logits {
                LogitsAt::Last => 1,
                LogitsAt::All => input.tokens.len(),
            };
            rows.into_iter()
                .skip(out_rows.saturating_sub(keep))
                .flatten()
                .collect()
        })
        .collect())
}
