//! GPT-2: a decoder-only Transformer language model (Radford et al., 2019, "Language Models are
//! Unsupervised Multitask Learners").
//!
//! Follows Transformers' `models/gpt2/modeling_gpt2.py` piece by piece: `Conv1D` (a linear layer
//! whose weight is stored `[in, out]`), `GPT2Attention`, `GPT2MLP`, `GPT2Block`, `GPT2Model`,
//! `GPT2LMHeadModel`. Tensor names are the checkpoint's, under `transformer.` (what
//! `GPT2LMHeadModel.save_pretrained` writes) or with no prefix (the original OpenAI checkpoints,
//! saved from `GPT2Model`). Learned absolute positions, pre-norm blocks, `gelu_new`, and an LM
//! head tied to the token embeddings unless `tie_word_embeddings` is false.

use candle_core::{Device, Tensor};
use rayon::prelude::*;
use serde::Deserialize;

use crate::attention::{DecoderInputs, scaled_dot_product_attention};
use crate::causal_lm::{CausalLm, KvCache};
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::layers::{Activation, ActivationForward, Embedding, LayerNorm, Linear, split_heads};
use crate::weights::Weights;
use safeformers_kernels::decode_attention::attend_one_query;

/// `GPT2Config`: the `config.json` fields of GPT-2, with Transformers' defaults (those of
/// `GPT2Config()`, the 124M model).
#[derive(Debug, Clone, Deserialize)]
pub struct Gpt2Config {
    /// Number of token ids.
    #[serde(default = "defaults::vocab_size")]
    pub vocab_size: usize,
    /// Number of learned positions: the longest sequence the model can read.
    #[serde(default = "defaults::n_positions")]
    pub n_positions: usize,
    /// Width of every hidden state.
    #[serde(default = "defaults::n_embd")]
    pub n_embd: usize,
    /// Number of blocks.
    #[serde(default = "defaults::n_layer")]
    pub n_layer: usize,
    /// Attention heads per block.
    #[serde(default = "defaults::n_head")]
    pub n_head: usize,
    /// Width of the feed-forward layer; `None` means `4 * n_embd`.
    #[serde(default)]
    pub n_inner: Option<usize>,
    /// Activation of the feed-forward layer (`gelu_new`, `relu`, `gelu`, ...).
    #[serde(default = "defaults::activation_function")]
    pub activation_function: String,
    /// Epsilon of every layer norm.
    #[serde(default = "defaults::layer_norm_epsilon")]
    pub layer_norm_epsilon: f64,
    /// Divide attention scores by `√head_dim`.
    #[serde(default = "defaults::enabled")]
    pub scale_attn_weights: bool,
    /// Also divide the scores of block `i` (from 0) by `i + 1`.
    #[serde(default)]
    pub scale_attn_by_inverse_layer_idx: bool,
    /// Compute the scores in f32 with the scale folded into the matmul: a mixed-precision option
    /// that changes nothing when computing in f32, as safeformers does.
    #[serde(default)]
    pub reorder_and_upcast_attn: bool,
    /// Cross-attention blocks (encoder-decoder use); not supported.
    #[serde(default)]
    pub add_cross_attention: bool,
}

mod defaults {
    pub(super) fn vocab_size() -> usize {
        50257
    }
    pub(super) fn n_positions() -> usize {
        1024
    }
    pub(super) fn n_embd() -> usize {
        768
    }
    pub(super) fn n_layer() -> usize {
        12
    }
    pub(super) fn n_head() -> usize {
        12
    }
    pub(super) fn activation_function() -> String {
        "gelu_new".to_string()
    }
    pub(super) fn layer_norm_epsilon() -> f64 {
        1e-5
    }
    pub(super) fn enabled() -> bool {
        true
    }
}

impl Gpt2Config {
    /// Reads and checks the GPT-2 fields of `config`.
    pub fn from_model_config(config: &ModelConfig) -> Result<Gpt2Config> {
        let gpt2: Gpt2Config = config.architecture_config(&[])?;
        for (field, value) in [
            ("vocab_size", gpt2.vocab_size),
            ("n_positions", gpt2.n_positions),
            ("n_embd", gpt2.n_embd),
            ("n_layer", gpt2.n_layer),
            ("n_head", gpt2.n_head),
            ("n_inner", gpt2.inner_size()),
        ] {
            if value == 0 {
                return Err(config.invalid_field(field, "must be positive"));
            }
        }
        // The fused query/key/value width is 3 · n_embd and the default MLP width 4 · n_embd;
        // a config claiming a width whose multiples overflow is refused here, not mid-load.
        if gpt2.n_embd.checked_mul(4).is_none() {
            return Err(config.invalid_field("n_embd", "is impossibly large"));
        }
        if !gpt2.n_embd.is_multiple_of(gpt2.n_head) {
            return Err(config.invalid_field(
                "n_head",
                &format!(
                    "n_embd {} is not a multiple of {} heads",
                    gpt2.n_embd, gpt2.n_head
                ),
            ));
        }
        gpt2.activation(config)?;
        if gpt2.add_cross_attention {
            return Err(Error::UnsupportedFeature {
                path: config.path().to_path_buf(),
                what: "GPT-2 with cross-attention (add_cross_attention)".to_string(),
            });
        }
        Ok(gpt2)
    }

    /// The feed-forward width (`n_inner`, or `4 * n_embd`).
    pub fn inner_size(&self) -> usize {
        self.n_inner
            .unwrap_or_else(|| self.n_embd.saturating_mul(4))
    }

    fn activation(&self, config: &ModelConfig) -> Result<Activation> {
        Activation::from_name(&self.activation_function).ok_or_else(|| {
            config.invalid_field(
                "activation_function",
                &format!(
                    "`{}` is not one of {}",
                    self.activation_function,
                    Activation::NAMES.join(", ")
                ),
            )
        })
    }
}

/// A layer norm's parameters as plain values, for the decoding step (which works on rows of
/// values instead of tensors).
#[derive(Debug, Clone)]
struct NormValues {
    weight: Vec<f32>,
    bias: Vec<f32>,
    eps: f32,
}

impl NormValues {
    fn load(weights: &Weights<'_>, size: usize, eps: f64) -> Result<Self> {
        Ok(NormValues {
            weight: weights.get(&[size], "weight")?.to_vec1::<f32>()?,
            bias: weights.get(&[size], "bias")?.to_vec1::<f32>()?,
            eps: eps as f32,
        })
    }

    /// `nn.LayerNorm` over each row of `x` (rows of the parameters' length).
    fn apply(&self, x: &[f32]) -> Vec<f32> {
        let size = self.weight.len().max(1);
        let mut out = Vec::with_capacity(x.len());
        for row in x.chunks_exact(size) {
            let mean = row.iter().sum::<f32>() / size as f32;
            let variance = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / size as f32;
            let inverse = 1.0 / (variance + self.eps).sqrt();
            out.extend(
                row.iter()
                    .zip(&self.weight)
                    .zip(&self.bias)
                    .map(|((v, w), b)| (v - mean) * inverse * w + b),
            );
        }
        out
    }
}

/// `a += b`, elementwise.
fn add_in_place(a: &mut [f32], b: &[f32]) {
    for (a, b) in a.iter_mut().zip(b) {
        *a += b;
    }
}

/// The activation on plain values: `gelu_new` (GPT-2's) directly, split over the thread pool;
/// any other through candle.
fn activate_values(act: Activation, mut values: Vec<f32>, device: &Device) -> Result<Vec<f32>> {
    if act != Activation::GeluTanh {
        let len = values.len();
        let tensor = act.forward(&Tensor::from_vec(values, len, device)?)?;
        return Ok(tensor.to_vec1::<f32>()?);
    }
    // The tanh approximation, as `NewGELUActivation` (and candle's `gelu`) compute it.
    const SQRT_TWO_OVER_PI: f32 = 0.797_884_6;
    values.par_chunks_mut(1024).for_each(|chunk| {
        for v in chunk {
            let x = *v;
            *v = 0.5 * x * (1.0 + (SQRT_TWO_OVER_PI * x * (1.0 + 0.044_715 * x * x)).tanh());
        }
    });
    Ok(values)
}

/// `GPT2Attention`: causal self-attention with a fused query/key/value projection (`c_attn`) and
/// an output projection (`c_proj`), both `Conv1D` (weights stored `[in, out]`, transposed at
/// load).
#[derive(Debug, Clone)]
struct Gpt2Attention {
    c_attn: Linear,
    c_proj: Linear,
    num_heads: usize,
    hidden: usize,
    scaling: f64,
    layer_idx: usize,
}

impl Gpt2Attention {
    fn load(weights: &Weights<'_>, config: &Gpt2Config, layer_idx: usize) -> Result<Self> {
        let hidden = config.n_embd;
        let head_dim = hidden / config.n_head;
        let mut scaling = 1.0;
        if config.scale_attn_weights {
            scaling /= (head_dim as f64).sqrt();
        }
        if config.scale_attn_by_inverse_layer_idx {
            scaling /= (layer_idx + 1) as f64;
        }
        Ok(Gpt2Attention {
            c_attn: Linear::load_transposed(&weights.pp("c_attn"), hidden, 3 * hidden)?,
            c_proj: Linear::load_transposed(&weights.pp("c_proj"), hidden, hidden)?,
            num_heads: config.n_head,
            hidden,
            scaling,
            layer_idx,
        })
    }

    /// `[batch, new, hidden]` → `[batch, new, hidden]`, appending this step's keys and values to
    /// the cache.
    fn forward(
        &self,
        hidden_states: &Tensor,
        bias: &Tensor,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        let qkv = self.c_attn.forward(hidden_states)?;
        let query = split_heads(&qkv.narrow(2, 0, self.hidden)?, self.num_heads)?;
        let key = split_heads(&qkv.narrow(2, self.hidden, self.hidden)?, self.num_heads)?;
        let value = split_heads(
            &qkv.narrow(2, 2 * self.hidden, self.hidden)?,
            self.num_heads,
        )?;
        let (key, value) = cache.append(self.layer_idx, &key, &value)?;
        let context = scaled_dot_product_attention(&query, &key, &value, Some(bias), self.scaling)?;
        self.c_proj.forward(&context)
    }

    /// One new token per row: `x` `[batch, hidden]` values → `[batch, hidden]`, with the fused
    /// one-query attention reading the cache in place. `mask` is the `[batch][past + 1]`
    /// padding mask.
    fn forward_step(
        &self,
        x: &[f32],
        batch: usize,
        mask: &[Vec<bool>],
        cache: &mut KvCache,
    ) -> Result<Vec<f32>> {
        let hidden = self.hidden;
        let head_dim = hidden / self.num_heads;
        let qkv = self.c_attn.forward_values(x, batch)?;
        let mut keys = Vec::with_capacity(batch * hidden);
        let mut values = Vec::with_capacity(batch * hidden);
        for row in qkv.chunks_exact(3 * hidden) {
            keys.extend_from_slice(row.get(hidden..2 * hidden).unwrap_or_default());
            values.extend_from_slice(row.get(2 * hidden..).unwrap_or_default());
        }
        cache.append_step(
            self.layer_idx,
            batch,
            self.num_heads,
            head_dim,
            &keys,
            &values,
        )?;
        let mut context = vec![0.0f32; batch * hidden];
        for (row_index, (row, out)) in qkv
            .chunks_exact(3 * hidden)
            .zip(context.chunks_exact_mut(hidden))
            .enumerate()
        {
            let (key_slab, value_slab) = cache.slabs(self.layer_idx, row_index)?;
            // Without padding, no mask at all (the new token is last, so causality hides
            // nothing).
            let visible = mask
                .get(row_index)
                .filter(|row| !row.iter().all(|&seen| seen))
                .map(Vec::as_slice);
            attend_one_query(
                row.get(..hidden).unwrap_or_default(),
                key_slab,
                value_slab,
                visible,
                self.scaling as f32,
                out,
            )?;
        }
        self.c_proj.forward_values(&context, batch)
    }
}

/// `GPT2MLP`: `c_proj(act(c_fc(x)))`.
#[derive(Debug, Clone)]
struct Gpt2Mlp {
    c_fc: Linear,
    c_proj: Linear,
    act: Activation,
}

impl Gpt2Mlp {
    fn load(weights: &Weights<'_>, config: &Gpt2Config, act: Activation) -> Result<Self> {
        let inner = config.inner_size();
        Ok(Gpt2Mlp {
            c_fc: Linear::load_transposed(&weights.pp("c_fc"), config.n_embd, inner)?,
            c_proj: Linear::load_transposed(&weights.pp("c_proj"), inner, config.n_embd)?,
            act,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.c_proj
            .forward(&self.act.forward(&self.c_fc.forward(x)?)?)
    }

    fn forward_values(&self, x: &[f32], rows: usize, device: &Device) -> Result<Vec<f32>> {
        let inner = activate_values(self.act, self.c_fc.forward_values(x, rows)?, device)?;
        self.c_proj.forward_values(&inner, rows)
    }
}

/// `GPT2Block`: pre-norm attention and MLP, each added back to the residual stream.
#[derive(Debug, Clone)]
struct Gpt2Block {
    ln_1: LayerNorm,
    attn: Gpt2Attention,
    ln_2: LayerNorm,
    mlp: Gpt2Mlp,
    ln_1_values: NormValues,
    ln_2_values: NormValues,
}

impl Gpt2Block {
    fn load(
        weights: &Weights<'_>,
        config: &Gpt2Config,
        act: Activation,
        layer_idx: usize,
    ) -> Result<Self> {
        let eps = config.layer_norm_epsilon;
        Ok(Gpt2Block {
            ln_1: LayerNorm::load(&weights.pp("ln_1"), config.n_embd, eps)?,
            attn: Gpt2Attention::load(&weights.pp("attn"), config, layer_idx)?,
            ln_2: LayerNorm::load(&weights.pp("ln_2"), config.n_embd, eps)?,
            mlp: Gpt2Mlp::load(&weights.pp("mlp"), config, act)?,
            ln_1_values: NormValues::load(&weights.pp("ln_1"), config.n_embd, eps)?,
            ln_2_values: NormValues::load(&weights.pp("ln_2"), config.n_embd, eps)?,
        })
    }

    fn forward(
        &self,
        hidden_states: &Tensor,
        bias: &Tensor,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        let attended = self
            .attn
            .forward(&self.ln_1.forward(hidden_states)?, bias, cache)?;
        let hidden_states = (hidden_states + attended)?;
        let fed_forward = self.mlp.forward(&self.ln_2.forward(&hidden_states)?)?;
        Ok((hidden_states + fed_forward)?)
    }

    /// One new token per row, on `[batch, n_embd]` values updated in place.
    fn forward_step(
        &self,
        hidden_states: &mut [f32],
        batch: usize,
        mask: &[Vec<bool>],
        cache: &mut KvCache,
        device: &Device,
    ) -> Result<()> {
        let attended =
            self.attn
                .forward_step(&self.ln_1_values.apply(hidden_states), batch, mask, cache)?;
        add_in_place(hidden_states, &attended);
        let fed_forward =
            self.mlp
                .forward_values(&self.ln_2_values.apply(hidden_states), batch, device)?;
        add_in_place(hidden_states, &fed_forward);
        Ok(())
    }
}

/// `GPT2Model`: token and position embeddings, the blocks, and a final layer norm.
#[derive(Debug, Clone)]
pub struct Gpt2Model {
    wte: Embedding,
    wpe: Embedding,
    h: Vec<Gpt2Block>,
    ln_f: LayerNorm,
    ln_f_values: NormValues,
    n_embd: usize,
}

impl Gpt2Model {
    /// Loads `wte`, `wpe`, `h.{i}.*` and `ln_f` under `weights`' prefix; the blocks' linear
    /// layers are stored as `weights.options()` say (embeddings and norms stay f32).
    pub fn load(weights: &Weights<'_>, config: &Gpt2Config, model: &ModelConfig) -> Result<Self> {
        let act = config.activation(model)?;
        let h = (0..config.n_layer)
            .map(|layer_idx| {
                Gpt2Block::load(
                    &weights.pp(&format!("h.{layer_idx}")),
                    config,
                    act,
                    layer_idx,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let ln_f = weights.pp("ln_f");
        Ok(Gpt2Model {
            wte: Embedding::load(&weights.pp("wte"), config.vocab_size, config.n_embd)?,
            wpe: Embedding::load(&weights.pp("wpe"), config.n_positions, config.n_embd)?,
            h,
            ln_f: LayerNorm::load(&ln_f, config.n_embd, config.layer_norm_epsilon)?,
            ln_f_values: NormValues::load(&ln_f, config.n_embd, config.layer_norm_epsilon)?,
            n_embd: config.n_embd,
        })
    }

    /// The last hidden states `[batch, new, n_embd]` of checked inputs, appending to `cache`.
    ///
    /// A step of one new token per row takes the decoding path: plain values, the fused
    /// one-query attention over the cache in place, and no mask tensor.
    pub fn forward(
        &self,
        inputs: &DecoderInputs,
        device: &Device,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        let embedded =
            (self.wte.forward(&inputs.ids)? + self.wpe.forward(&inputs.position_ids)?)?;
        if inputs.new == 1 && inputs.past > 0 {
            let mut hidden_states = embedded.flatten_all()?.to_vec1::<f32>()?;
            for block in &self.h {
                block.forward_step(
                    &mut hidden_states,
                    inputs.batch,
                    &inputs.mask,
                    cache,
                    device,
                )?;
            }
            let normed = self.ln_f_values.apply(&hidden_states);
            return Ok(Tensor::from_vec(
                normed,
                (inputs.batch, 1, self.n_embd),
                device,
            )?);
        }
        let bias = inputs.attention_bias(None, device)?;
        let mut hidden_states = embedded;
        for block in &self.h {
            hidden_states = block.forward(&hidden_states, &bias, cache)?;
        }
        self.ln_f.forward(&hidden_states)
    }
}

/// `GPT2LMHeadModel`: [`Gpt2Model`] and a bias-free LM head, by default the token embedding
/// matrix itself.
///
/// With 8-bit or 16-bit load options the LM head is stored that way too, tied or not: at
/// 50257 × 768 it is a third of GPT-2 small's weights, read in full for every generated token.
/// The token embeddings used for lookups stay f32.
#[derive(Debug, Clone)]
pub struct Gpt2LmHeadModel {
    config: ModelConfig,
    gpt2: Gpt2Config,
    transformer: Gpt2Model,
    /// `[vocab, n_embd]`.
    lm_head: Linear,
    device: Device,
}

impl Gpt2LmHeadModel {
    /// Loads the model from `weights` (the checkpoint root): the body under `transformer.` or,
    /// when the checkpoint has no such names, under no prefix.
    pub fn load(weights: &Weights<'_>, config: ModelConfig) -> Result<Self> {
        let gpt2 = Gpt2Config::from_model_config(&config)?;
        let body = if weights.contains("transformer.wte.weight") || !weights.contains("wte.weight")
        {
            weights.pp("transformer")
        } else {
            weights.pp("")
        };
        let transformer = Gpt2Model::load(&body, &gpt2, &config)?;
        // Transformers ties `lm_head.weight` to `wte` whenever `tie_word_embeddings` is true
        // (the default), whether or not the file also stores it.
        let lm_head = if config.tie_word_embeddings {
            transformer.wte.table().clone()
        } else {
            weights.get(&[gpt2.vocab_size, gpt2.n_embd], "lm_head.weight")?
        };
        Ok(Gpt2LmHeadModel {
            lm_head: Linear::from_tensors(lm_head, None)?.stored_as(weights.options())?,
            device: weights.device().clone(),
            config,
            gpt2,
            transformer,
        })
    }

    /// The GPT-2 fields of the config.
    pub fn gpt2_config(&self) -> &Gpt2Config {
        &self.gpt2
    }

    fn hidden_states(
        &self,
        input_ids: &Tensor,
        position_ids: &Tensor,
        attention_mask: &Tensor,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        let inputs = DecoderInputs::check(
            input_ids,
            position_ids,
            attention_mask,
            cache.seq_len(),
            self.gpt2.vocab_size,
            Some(self.gpt2.n_positions),
        )?;
        self.transformer.forward(&inputs, &self.device, cache)
    }
}

impl CausalLm for Gpt2LmHeadModel {
    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn vocab_size(&self) -> usize {
        self.gpt2.vocab_size
    }

    fn context_length(&self) -> Option<usize> {
        Some(self.gpt2.n_positions)
    }

    fn new_cache(&self) -> KvCache {
        KvCache::new(self.gpt2.n_layer)
    }

    fn forward(
        &self,
        input_ids: &Tensor,
        position_ids: &Tensor,
        attention_mask: &Tensor,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        let hidden_states = self.hidden_states(input_ids, position_ids, attention_mask, cache)?;
        self.lm_head.forward(&hidden_states)
    }

    fn forward_last(
        &self,
        input_ids: &Tensor,
        position_ids: &Tensor,
        attention_mask: &Tensor,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        let hidden_states = self.hidden_states(input_ids, position_ids, attention_mask, cache)?;
        let last = hidden_states.dim(1)?.saturating_sub(1);
        self.lm_head
            .forward(&hidden_states.narrow(1, last, 1)?.contiguous()?)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn parse(text: &str) -> Result<Gpt2Config> {
        Gpt2Config::from_model_config(&ModelConfig::from_json_str(text, Path::new("config.json"))?)
    }

    #[test]
    fn defaults_are_gpt2_small() -> Result<()> {
        let config = parse(r#"{"model_type":"gpt2"}"#)?;
        assert_eq!(
            (config.vocab_size, config.n_positions, config.n_embd),
            (50257, 1024, 768)
        );
        assert_eq!(
            (config.n_layer, config.n_head, config.inner_size()),
            (12, 12, 3072)
        );
        assert_eq!(config.activation_function, "gelu_new");
        assert!(config.scale_attn_weights && !config.scale_attn_by_inverse_layer_idx);
        assert!((config.layer_norm_epsilon - 1e-5).abs() < 1e-12);
        Ok(())
    }

    #[test]
    fn hostile_sizes_are_errors_not_panics() {
        for (text, field) in [
            (r#"{"model_type":"gpt2","n_head":0}"#, "n_head"),
            (
                r#"{"model_type":"gpt2","n_embd":100,"n_head":12}"#,
                "n_head",
            ),
            (r#"{"model_type":"gpt2","n_inner":0}"#, "n_inner"),
            (
                r#"{"model_type":"gpt2","n_embd":9223372036854775807,"n_head":1}"#,
                "n_embd",
            ),
            (
                r#"{"model_type":"gpt2","activation_function":"swiglu"}"#,
                "activation_function",
            ),
        ] {
            match parse(text) {
                Err(Error::InvalidConfigField { field: got, .. }) => {
                    assert_eq!(got, field, "{text}")
                }
                other => panic!("{text}: expected an error about {field}, got {other:?}"),
            }
        }
        assert!(matches!(
            parse(r#"{"model_type":"gpt2","add_cross_attention":true}"#),
            Err(Error::UnsupportedFeature { .. })
        ));
    }
}
