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

use std::fmt::Debug;

use candle_core::Tensor;

use crate::config::ModelConfig;
use crate::error::Result;

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

    /// Runs the new tokens, appends them to `cache`, and returns their logits (see the module
    /// documentation for shapes).
    fn forward(
        &self,
        input_ids: &Tensor,
        position_ids: &Tensor,
        attention_mask: &Tensor,
        cache: &mut KvCache,
    ) -> Result<Tensor>;
}

/// Keys and values of every layer for the tokens seen so far, `[batch, kv_heads, seq, head_dim]`
/// per layer.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
}

impl KvCache {
    /// An empty cache for `num_layers` layers.
    pub fn new(num_layers: usize) -> KvCache {
        KvCache {
            layers: vec![None; num_layers],
        }
    }

    /// Tokens cached so far (0 when empty).
    pub fn seq_len(&self) -> usize {
        self.layers
            .first()
            .and_then(|layer| layer.as_ref())
            .and_then(|(keys, _)| keys.dims().get(2).copied())
            .unwrap_or(0)
    }

    /// Forgets every cached token.
    pub fn clear(&mut self) {
        for layer in &mut self.layers {
            *layer = None;
        }
    }

    /// Appends this step's keys and values to layer `layer` and returns all of that layer's keys
    /// and values so far.
    pub fn append(
        &mut self,
        layer: usize,
        keys: &Tensor,
        values: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let slot = self
            .layers
            .get_mut(layer)
            .ok_or(crate::error::Error::CacheLayer { layer })?;
        let (all_keys, all_values) = match slot.take() {
            None => (keys.clone(), values.clone()),
            Some((past_keys, past_values)) => (
                Tensor::cat(&[&past_keys, keys], 2)?,
                Tensor::cat(&[&past_values, values], 2)?,
            ),
        };
        *slot = Some((all_keys.clone(), all_values.clone()));
        Ok((all_keys, all_values))
    }
}
