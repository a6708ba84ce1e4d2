//! The decoder execution layer every decoder-only architecture is built from: [`Norm`],
//! [`Mlp`], [`Attention`] (grouped-query, causal, optional sliding window, rotary or learned
//! positions), [`DecoderLayer`] and [`DecoderStack`].
//!
//! A forward call runs a set of sequences that may differ in length, each with its own
//! [`SequenceCache`]: the new tokens of all sequences are packed into one `[rows, hidden]`
//! matrix for every projection (no padding work), and attention runs per sequence over its
//! cache slabs in place (the one [`crate::attention::Attention`], causal here) — the prefill
//! (many new tokens) and the decoding step (one) are the same code. The LM head runs only on the positions asked
//! for ([`LogitsAt`]).
//!
//! Values are plain row-major `f32`; the linear layers' weights are stored as the load options
//! say ([`Linear`]).

use candle_core::{Device, Tensor};

use crate::attention::DecoderInputs;
use crate::error::{Error, Result};
use crate::kv_cache::{KvCache, SequenceCache};
use crate::layers::{Activation, Destination, Embedding, Linear, TokenEmbedding};
use crate::rotary::RotaryEmbedding;
use safeformers_kernels::activation::activation_in_place;

/// Which positions of a call's new tokens get logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitsAt {
    /// Only the last new token (what generation needs).
    Last,
    /// Every new token.
    All,
}

impl LogitsAt {
    /// The asked-for positions of `logits` `[batch, new, vocab]` computed at every position.
    pub fn select(self, logits: Tensor) -> Result<Tensor> {
        match self {
            LogitsAt::All => Ok(logits),
            LogitsAt::Last => {
                let last = logits.dim(1)?.saturating_sub(1);
                Ok(logits.narrow(1, last, 1)?)
            }
        }
    }
}

/// The one attention block, here causal ([`Attention::new`]).
pub use crate::attention::{Attention, HeadShape};

/// The normalization layer the decoders use: the one [`crate::layers::Norm`] (LayerNorm, or
/// RMSNorm with Gemma's `(1 + w)` folded into the scale at load).
pub use crate::layers::Norm;

/// The feed-forward block: `down(act(up(x)))` (GPT-2) or the gated
/// `down(act(gate(x)) · up(x))` (SwiGLU, GeGLU: the Llama families), gate and up fused in one
/// projection.
#[derive(Debug, Clone)]
pub enum Mlp {
    /// `down(act(up(x)))`.
    Plain {
        /// `[inner, hidden]`.
        up: Linear,
        /// `[hidden, inner]`.
        down: Linear,
        /// The activation.
        activation: Activation,
    },
    /// `down(act(gate(x)) · up(x))`.
    Gated {
        /// Gate rows then up rows, `[2 · inner, hidden]`.
        gate_up: Linear,
        /// `[hidden, inner]`.
        down: Linear,
        /// The activation of the gate.
        activation: Activation,
    },
}

impl Mlp {
    /// A plain MLP, its f32 weights packed for the many-row kernel where the CPU has it.
    pub fn plain(up: Linear, down: Linear, activation: Activation) -> Result<Mlp> {
        Ok(Mlp::Plain {
            up: up.packed_for_many_rows()?,
            down: down.packed_for_many_rows()?,
            activation,
        })
    }

    /// A gated MLP (gate rows then up rows in `gate_up`), its f32 weights packed for the
    /// many-row kernel where the CPU has it.
    pub fn gated(gate_up: Linear, down: Linear, activation: Activation) -> Result<Mlp> {
        Ok(Mlp::Gated {
            gate_up: gate_up.packed_for_many_rows()?,
            down: down.packed_for_many_rows()?,
            activation,
        })
    }

    /// `[rows, hidden]` → `[rows, hidden]`.
    pub fn forward(&self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        let mut inner = Vec::new();
        self.inner_rows(x, rows, &mut inner)?;
        let down = self.down();
        let mut out = vec![0.0f32; rows * down.out_features()];
        down.forward_rows_to(&inner, rows, &mut out, Destination::Overwrite)?;
        Ok(out)
    }

    /// The activated inner rows of `x` (`[rows, hidden]`) into `inner` (resized to
    /// `[rows, inner]`): `act(up(x))`, the activation fused into the projection, or
    /// `act(gate(x)) · up(x)`.
    pub fn inner_rows(&self, x: &[f32], rows: usize, inner: &mut Vec<f32>) -> Result<()> {
        match self {
            Mlp::Plain { up, activation, .. } => {
                inner.resize(rows * up.out_features(), 0.0);
                up.forward_rows_to(x, rows, inner, Destination::Activated(*activation))
            }
            Mlp::Gated {
                gate_up,
                activation,
                ..
            } => {
                let fused = gate_up.forward_rows(x, rows)?;
                let width = gate_up.out_features() / 2;
                inner.clear();
                for row in fused.chunks_exact((2 * width).max(1)) {
                    inner.extend_from_slice(row.get(..width).unwrap_or_default());
                }
                activation_in_place(*activation, inner);
                for (gate, row) in inner
                    .chunks_exact_mut(width.max(1))
                    .zip(fused.chunks_exact((2 * width).max(1)))
                {
                    for (g, u) in gate.iter_mut().zip(row.get(width..).unwrap_or_default()) {
                        *g *= u;
                    }
                }
                Ok(())
            }
        }
    }

    /// The output projection.
    pub fn down(&self) -> &Linear {
        match self {
            Mlp::Plain { down, .. } | Mlp::Gated { down, .. } => down,
        }
    }
}

/// One pre-norm decoder block: `x + attention(norm(x))`, then `x + mlp(norm(x))`.
#[derive(Debug, Clone)]
pub struct DecoderLayer {
    /// Before attention (`ln_1`, `input_layernorm`).
    pub attention_norm: Norm,
    /// Self-attention.
    pub attention: Attention,
    /// Before the MLP (`ln_2`, `post_attention_layernorm`).
    pub mlp_norm: Norm,
    /// Feed-forward.
    pub mlp: Mlp,
}

/// How token positions enter the model.
#[derive(Debug, Clone)]
pub enum PositionEncoding {
    /// A learned table added to the token embeddings (GPT-2's `wpe`).
    Learned(Embedding),
    /// Rotary embeddings applied to queries and keys.
    Rotary(RotaryEmbedding),
}

/// A decoder-only model: embeddings, blocks, final norm and LM head.
#[derive(Debug, Clone)]
pub struct DecoderStack {
    /// Token embeddings `[vocab, hidden]`.
    pub embed_tokens: TokenEmbedding,
    /// Multiplier of the embeddings (Gemma's `√hidden`).
    pub embed_scale: Option<f64>,
    /// Learned positions or rotary embeddings.
    pub positions: PositionEncoding,
    /// The blocks.
    pub layers: Vec<DecoderLayer>,
    /// The final norm.
    pub norm: Norm,
    /// `[vocab, hidden]`.
    pub lm_head: Linear,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Where values are computed.
    pub device: Device,
}

/// One sequence's part of a forward call.
pub struct SequenceRun<'a> {
    /// The new token ids (checked to be in the vocabulary).
    pub tokens: &'a [u32],
    /// Their positions.
    pub positions: &'a [u32],
    /// The sequence's cache (its length is the cache index of the first new token).
    pub cache: &'a mut SequenceCache,
    /// Per key of the cache after this call, whether it is a real token; `None`: all are.
    pub padding: Option<Vec<bool>>,
    /// The length rotary frequencies are chosen for (`max(position) + 1` over the call).
    pub rope_length: usize,
    /// Which logits to return.
    pub logits: LogitsAt,
    pub(crate) rope: Option<RopeRows>,
}

impl<'a> SequenceRun<'a> {
    /// A run of `tokens` at `positions` over `cache`, returning the logits `logits` asks for.
    pub fn new(
        tokens: &'a [u32],
        positions: &'a [u32],
        cache: &'a mut SequenceCache,
        logits: LogitsAt,
    ) -> SequenceRun<'a> {
        let rope_length = positions.iter().max().map_or(0, |&p| p as usize + 1);
        SequenceRun {
            tokens,
            positions,
            cache,
            padding: None,
            rope_length,
            logits,
            rope: None,
        }
    }
}

impl std::fmt::Debug for SequenceRun<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SequenceRun")
            .field("tokens", &self.tokens)
            .field("positions", &self.positions)
            .field("cached", &self.cache.len())
            .field("logits", &self.logits)
            .finish()
    }
}

/// `cos` and `sin` of each new row, `rotary_dim / 2` values each, the attention scaling
/// multiplied in.
#[derive(Debug, Clone)]
pub(crate) struct RopeRows {
    half: usize,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl RopeRows {
    fn new(rotary: &RotaryEmbedding, positions: &[u32], rope_length: usize) -> RopeRows {
        let (inv_freq, scaling) = rotary.inv_freq_for(rope_length);
        let half = inv_freq.len();
        let mut cos = Vec::with_capacity(positions.len() * half);
        let mut sin = Vec::with_capacity(positions.len() * half);
        for &position in positions {
            for &freq in &inv_freq {
                let angle = position as f32 * freq;
                cos.push(angle.cos() * scaling);
                sin.push(angle.sin() * scaling);
            }
        }
        RopeRows { half, cos, sin }
    }

    pub(crate) fn row(&self, index: usize) -> (&[f32], &[f32]) {
        let range = index * self.half..(index + 1) * self.half;
        (
            self.cos.get(range.clone()).unwrap_or_default(),
            self.sin.get(range).unwrap_or_default(),
        )
    }
}

pub(crate) fn run_error(what: &str) -> Error {
    Error::Cache {
        reason: format!("{what} do not match the sequences of the call"),
    }
}

fn add_in_place(a: &mut [f32], b: &[f32]) {
    for (a, b) in a.iter_mut().zip(b) {
        *a += b;
    }
}

impl DecoderStack {
    /// Vocabulary size (rows of the LM head).
    pub fn vocab_size(&self) -> usize {
        self.lm_head.out_features()
    }

    /// Runs every sequence's new tokens, appends them to its cache, and returns the logits each
    /// run asked for, packed in order (`[Σ rows asked, vocab]`).
    pub fn forward(&self, runs: &mut [SequenceRun<'_>]) -> Result<Vec<f32>> {
        // One hop onto the thread pool per call: the kernels' parallel loops then start from a
        // pool thread (work-stealing) instead of each handing its work over from outside.
        rayon::scope(|_| self.forward_in_pool(runs))
    }

    /// The final-normed hidden state of every new token of every run, packed in order
    /// (`[Σ new tokens, hidden]`): what a base model (`Qwen3Model`, `LlamaModel`) returns as
    /// `last_hidden_state`. The runs' caches grow as in [`DecoderStack::forward`]; the LM head
    /// is not run.
    pub fn last_hidden_states(&self, runs: &mut [SequenceRun<'_>]) -> Result<Vec<f32>> {
        rayon::scope(|_| {
            let rows: usize = runs.iter().map(|run| run.tokens.len()).sum();
            if rows == 0 {
                return Ok(Vec::new());
            }
            let hidden = self.run_blocks(runs, rows)?;
            self.norm.apply(&hidden)
        })
    }

    /// The residual stream after the last block (before the final norm), `[rows, hidden]`.
    fn run_blocks(&self, runs: &mut [SequenceRun<'_>], rows: usize) -> Result<Vec<f32>> {
        let mut hidden = self.embed(runs, rows)?;
        if let PositionEncoding::Rotary(rotary) = &self.positions {
            for run in runs.iter_mut() {
                run.rope = Some(RopeRows::new(rotary, run.positions, run.rope_length));
            }
        }
        for layer in &self.layers {
            let normed = layer.attention_norm.apply(&hidden)?;
            let attended = layer.attention.forward_cached(&normed, runs, rows)?;
            add_in_place(&mut hidden, &attended);
            let normed = layer.mlp_norm.apply(&hidden)?;
            let fed_forward = layer.mlp.forward(&normed, rows)?;
            add_in_place(&mut hidden, &fed_forward);
        }
        Ok(hidden)
    }

    fn forward_in_pool(&self, runs: &mut [SequenceRun<'_>]) -> Result<Vec<f32>> {
        let rows: usize = runs.iter().map(|run| run.tokens.len()).sum();
        if rows == 0 {
            return Ok(Vec::new());
        }
        let hidden = self.run_blocks(runs, rows)?;
        let width = self.hidden_size;
        let mut picked = Vec::new();
        let mut start = 0;
        for run in runs.iter() {
            let count = run.tokens.len();
            let first = match run.logits {
                LogitsAt::Last => start + count.saturating_sub(1),
                LogitsAt::All => start,
            };
            picked.extend_from_slice(
                hidden
                    .get(first * width..(start + count) * width)
                    .ok_or_else(|| run_error("hidden rows"))?,
            );
            start += count;
        }
        let picked_rows = picked.len() / width.max(1);
        let normed = self.norm.apply(&picked)?;
        self.lm_head.forward_rows(&normed, picked_rows)
    }

    /// Token embeddings (scaled) plus learned positions, `[rows, hidden]`.
    fn embed(&self, runs: &[SequenceRun<'_>], rows: usize) -> Result<Vec<f32>> {
        let ids: Vec<u32> = runs
            .iter()
            .flat_map(|run| run.tokens.iter().copied())
            .collect();
        let ids = Tensor::from_vec(ids, (1, rows), &self.device)?;
        let mut hidden = self.embed_tokens.forward(&ids)?;
        if let Some(scale) = self.embed_scale {
            hidden = (hidden * scale)?;
        }
        if let PositionEncoding::Learned(table) = &self.positions {
            let positions: Vec<u32> = runs
                .iter()
                .flat_map(|run| run.positions.iter().copied())
                .collect();
            let positions = Tensor::from_vec(positions, (1, rows), &self.device)?;
            hidden = (hidden + table.forward(&positions)?)?;
        }
        Ok(hidden.flatten_all()?.to_vec1::<f32>()?)
    }
}

impl DecoderStack {
    /// The tensor interface ([`crate::CausalLm::forward`]): checked `[batch, new]` inputs with
    /// a padding mask over `[batch, past + new]`, row `b` over `cache`'s sequence `b`. Returns
    /// logits `[batch, new or 1, vocab]`.
    pub fn forward_padded(
        &self,
        inputs: &DecoderInputs,
        cache: &mut KvCache,
        logits: LogitsAt,
    ) -> Result<Tensor> {
        let values = self.run_padded(inputs, cache, logits, |runs| self.forward(runs))?;
        let per_row = match logits {
            LogitsAt::Last => 1,
            LogitsAt::All => inputs.new,
        };
        Ok(Tensor::from_vec(
            values,
            (inputs.batch, per_row, self.vocab_size()),
            &self.device,
        )?)
    }

    /// As [`DecoderStack::forward_padded`], returning the final-normed hidden states
    /// `[batch, new, hidden]` instead of logits (a base model's `last_hidden_state`).
    pub fn hidden_padded(&self, inputs: &DecoderInputs, cache: &mut KvCache) -> Result<Tensor> {
        let values = self.run_padded(inputs, cache, LogitsAt::All, |runs| {
            self.last_hidden_states(runs)
        })?;
        Ok(Tensor::from_vec(
            values,
            (inputs.batch, inputs.new, self.hidden_size),
            &self.device,
        )?)
    }

    /// Runs `run` on one [`SequenceRun`] per row of `inputs`, row `b` over `cache`'s sequence
    /// `b`, with its padding mask.
    fn run_padded(
        &self,
        inputs: &DecoderInputs,
        cache: &mut KvCache,
        logits: LogitsAt,
        run: impl FnOnce(&mut [SequenceRun<'_>]) -> Result<Vec<f32>>,
    ) -> Result<Vec<f32>> {
        let ids: Vec<Vec<u32>> = inputs.ids.to_vec2::<u32>()?;
        // Rotary frequencies are chosen once for the whole call, from its furthest position,
        // as Transformers does for a batch.
        let rope_length = inputs
            .positions
            .iter()
            .flatten()
            .max()
            .map_or(0, |&p| p as usize + 1);
        let rows = cache.rows_mut(inputs.batch)?;
        let mut runs: Vec<SequenceRun<'_>> = rows
            .iter_mut()
            .zip(&ids)
            .zip(&inputs.positions)
            .zip(&inputs.mask)
            .map(|(((cache, tokens), positions), mask)| {
                let mut run = SequenceRun::new(tokens, positions, cache, logits);
                run.rope_length = rope_length;
                run.padding = (!mask.iter().all(|&real| real)).then(|| mask.clone());
                run
            })
            .collect();
        run(&mut runs)
    }
}

impl DecoderStack {
    /// The sequence interface ([`crate::CausalLm::forward_sequences`]): each input's tokens at
    /// positions `cache.len()..`, checked against the vocabulary and (for learned positions)
    /// `max_positions`.
    pub fn forward_sequences(
        &self,
        inputs: &mut [crate::causal_lm::SequenceInput<'_>],
        max_positions: Option<usize>,
    ) -> Result<Vec<Vec<f32>>> {
        let vocab = self.vocab_size();
        let mut positions = Vec::with_capacity(inputs.len());
        for input in inputs.iter() {
            check_tokens(input.tokens, vocab)?;
            let start = input.cache.len();
            let end = start + input.tokens.len();
            if let Some(limit) = max_positions
                && end > limit
            {
                return Err(Error::ContextTooLong { length: end, limit });
            }
            let range = u32::try_from(start)
                .ok()
                .zip(u32::try_from(end).ok())
                .ok_or(Error::ContextTooLong {
                    length: end,
                    limit: u32::MAX as usize,
                })?;
            positions.push((range.0..range.1).collect::<Vec<u32>>());
        }
        let mut runs: Vec<SequenceRun<'_>> = inputs
            .iter_mut()
            .zip(&positions)
            .map(|(input, positions)| {
                SequenceRun::new(input.tokens, positions, input.cache, input.logits)
            })
            .collect();
        let values = self.forward(&mut runs)?;
        let mut out = Vec::with_capacity(runs.len());
        let mut start = 0;
        for run in &runs {
            let rows = match run.logits {
                LogitsAt::Last => 1,
                LogitsAt::All => run.tokens.len(),
            };
            out.push(
                values
                    .get(start * vocab..(start + rows) * vocab)
                    .ok_or_else(|| run_error("logit rows"))?
                    .to_vec(),
            );
            start += rows;
        }
        Ok(out)
    }
}

impl DecoderStack {
    /// The final-normed hidden states of each token sequence run on its own from position 0,
    /// `[len · hidden]` per sequence (no padding anywhere): equal to the real rows of
    /// [`DecoderStack::hidden_padded`] on a right-padded batch. Ids are checked against the
    /// vocabulary and, for learned positions, the lengths against `max_positions`.
    pub fn sequence_hidden_states(
        &self,
        sequences: &[&[u32]],
        max_positions: Option<usize>,
    ) -> Result<Vec<Vec<f32>>> {
        let vocab = self.vocab_size();
        let mut positions = Vec::with_capacity(sequences.len());
        for tokens in sequences {
            check_tokens(tokens, vocab)?;
            let length = tokens.len();
            if let Some(limit) = max_positions
                && length > limit
            {
                return Err(Error::ContextTooLong { length, limit });
            }
            let end = u32::try_from(length).map_err(|_| Error::ContextTooLong {
                length,
                limit: u32::MAX as usize,
            })?;
            positions.push((0..end).collect::<Vec<u32>>());
        }
        let mut caches: Vec<SequenceCache> = sequences
            .iter()
            .map(|_| SequenceCache::new(self.layers.len()))
            .collect();
        let mut runs: Vec<SequenceRun<'_>> = sequences
            .iter()
            .zip(&positions)
            .zip(caches.iter_mut())
            .map(|((tokens, positions), cache)| {
                SequenceRun::new(tokens, positions, cache, LogitsAt::All)
            })
            .collect();
        let values = self.last_hidden_states(&mut runs)?;
        let width = self.hidden_size;
        let mut out = Vec::with_capacity(sequences.len());
        let mut start = 0;
        for tokens in sequences {
            let end = start + tokens.len() * width;
            out.push(
                values
                    .get(start..end)
                    .ok_or_else(|| run_error("hidden rows"))?
                    .to_vec(),
            );
            start = end;
        }
        Ok(out)
    }
}

/// A sequence's new tokens: at least one, each below the vocabulary size.
fn check_tokens(tokens: &[u32], vocab: usize) -> Result<()> {
    if tokens.is_empty() {
        return Err(crate::layers::input_error(
            "input_ids",
            "a sequence with no new tokens".to_string(),
        ));
    }
    if let Some(&bad) = tokens.iter().find(|&&id| id as usize >= vocab) {
        return Err(crate::layers::input_error(
            "input_ids",
            format!("token id {bad} is not below the vocabulary size {vocab}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_norms_match_transformers() -> Result<()> {
        let x = [1f32, -2.0, 3.0, 0.5];
        let weight = [0.5f32, 1.5, -1.0, 2.0];
        // LlamaRMSNorm / GemmaRMSNorm(4, eps=1e-6) with this weight, from Transformers 5.23.
        for (offset, expected) in [
            (0.0, [0.264_906_44, -1.589_438_7, -1.589_438_7, 0.529_812_9]),
            (1.0, [0.794_719_34, -2.649_064_3, 0.0, 0.794_719_34]),
        ] {
            let norm = Norm::rms(&weight, offset, 1e-6);
            let got = norm.apply(&x)?;
            for (got, want) in got.iter().zip(expected) {
                assert!((got - want).abs() < 1e-6, "{got} vs {want}");
            }
        }
        Ok(())
    }
}
