//! The one [`CausalLm`] of this crate's decoders: a [`DecoderStack`] with its config.
//!
//! GPT-2 and the Llama families differ in how they are loaded (tensor names, config fields,
//! learned or rotary positions), not in how they run: both are a stack of pre-norm blocks with an
//! LM head. Each architecture file reads its config and builds the stack; [`DecoderLm`] is what
//! generation then calls, once for all of them.
//!
//! A [`DecoderLm`] is also a base model ([`TaskModel`]: `Qwen3Model`, as Qwen3-Embedding runs
//! it): its `last_hidden_state` is the final norm's output, the LM head unused. As in
//! Transformers without `position_ids`, every row's positions are `0..seq` whatever its padding
//! (a left-padded row's first real token is at the position of its padding count), and padding
//! keys are masked.

use candle_core::{DType, Tensor};

use crate::attention::DecoderInputs;
use crate::causal_lm::{CausalLm, KvCache, SequenceInput};
use crate::config::ModelConfig;
use crate::decoder::{DecoderStack, LogitsAt};
use crate::error::Result;
use crate::output::{ModelOutput, TaskModel, TokenSequence};

/// What generation checks inputs against, read from the architecture's own config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecoderSizes {
    /// Number of token ids: the width of the logits.
    pub vocab_size: usize,
    /// The longest sequence the model was built for (`n_positions`,
    /// `max_position_embeddings`).
    pub context_length: usize,
    /// The position past which the model has nothing to look up (GPT-2's learned positions):
    /// inputs reaching it are errors. `None` for rotary positions, which extend past the
    /// context length as Transformers lets them.
    pub position_limit: Option<usize>,
}

/// A decoder-only language model: the parsed `config.json`, the architecture's own config `A`
/// with the sizes read from it, and the [`DecoderStack`] that runs it.
#[derive(Debug, Clone)]
pub struct DecoderLm<A> {
    config: ModelConfig,
    architecture: A,
    sizes: DecoderSizes,
    stack: DecoderStack,
}

impl<A> DecoderLm<A> {
    /// A model whose `stack` was built from `config` read as `architecture`, which has `sizes`.
    pub(crate) fn new(
        config: ModelConfig,
        architecture: A,
        sizes: DecoderSizes,
        stack: DecoderStack,
    ) -> Self {
        DecoderLm {
            config,
            architecture,
            sizes,
            stack,
        }
    }

    /// The architecture's fields of the config.
    pub fn architecture(&self) -> &A {
        &self.architecture
    }
}

impl<A: std::fmt::Debug + Send + Sync> CausalLm for DecoderLm<A> {
    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn vocab_size(&self) -> usize {
        self.sizes.vocab_size
    }

    fn context_length(&self) -> Option<usize> {
        Some(self.sizes.context_length)
    }

    fn new_cache(&self) -> KvCache {
        KvCache::new(self.stack.layers.len())
    }

    fn forward_at(
        &self,
        input_ids: &Tensor,
        position_ids: &Tensor,
        attention_mask: &Tensor,
        cache: &mut KvCache,
        logits: LogitsAt,
    ) -> Result<Tensor> {
        let inputs = DecoderInputs::check(
            input_ids,
            position_ids,
            attention_mask,
            cache.seq_len(),
            self.sizes.vocab_size,
            self.sizes.position_limit,
        )?;
        self.stack.forward_padded(&inputs, cache, logits)
    }

    fn forward_sequences(&self, inputs: &mut [SequenceInput<'_>]) -> Result<Vec<Vec<f32>>> {
        self.stack
            .forward_sequences(inputs, self.sizes.position_limit)
    }
}

impl<A: std::fmt::Debug + Send + Sync> TaskModel for DecoderLm<A> {
    /// `last_hidden_state` `[batch, seq, hidden]` (no pooler); `token_type_ids` are ignored (a
    /// decoder has none).
    fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        _token_type_ids: Option<&Tensor>,
    ) -> Result<ModelOutput> {
        let (batch, seq) = input_ids.dims2()?;
        let device = input_ids.device();
        let width = u32::try_from(seq).map_err(|_| crate::error::Error::ContextTooLong {
            length: seq,
            limit: u32::MAX as usize,
        })?;
        let positions = Tensor::arange(0u32, width, device)?
            .unsqueeze(0)?
            .repeat((batch, 1))?;
        let mask = match attention_mask {
            Some(mask) => mask.clone(),
            None => Tensor::ones((batch, seq), DType::U32, device)?,
        };
        let inputs = DecoderInputs::check(
            input_ids,
            &positions,
            &mask,
            0,
            self.sizes.vocab_size,
            self.sizes.position_limit,
        )?;
        let mut cache = KvCache::new(self.stack.layers.len());
        Ok(ModelOutput::BaseModel {
            last_hidden_state: self.stack.hidden_padded(&inputs, &mut cache)?,
            pooler_output: None,
        })
    }

    fn token_states(&self, sequences: &[TokenSequence<'_>]) -> Option<Result<Vec<Vec<f32>>>> {
        let ids: Vec<&[u32]> = sequences.iter().map(|s| s.input_ids).collect();
        Some(
            self.stack
                .sequence_hidden_states(&ids, self.sizes.position_limit),
        )
    }
}
