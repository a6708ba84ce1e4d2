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
use serde::Deserialize;

use crate::attention::{DecoderInputs, scaled_dot_product_attention};
use crate::causal_lm::{CausalLm, KvCache};
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::layers::{Activation, Embedding, LayerNorm, split_heads};
use crate::weights::Weights;

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

/// `Conv1D`: despite the name, a linear layer `y = x W + b` whose weight is stored `[in, out]`
/// (the transpose of `nn.Linear`'s).
#[derive(Debug, Clone)]
struct Conv1D {
    weight: Tensor,
    bias: Tensor,
}

impl Conv1D {
    fn load(weights: &Weights<'_>, in_features: usize, out_features: usize) -> Result<Self> {
        Ok(Conv1D {
            weight: weights.get(&[in_features, out_features], "weight")?,
            bias: weights.get(&[out_features], "bias")?,
        })
    }

    /// Applies the layer to `[batch, seq, in]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (batch, seq, in_features) = x.dims3()?;
        let out_features = self.weight.dim(1)?;
        let y = x
            .reshape((batch * seq, in_features))?
            .matmul(&self.weight)?
            .broadcast_add(&self.bias)?;
        Ok(y.reshape((batch, seq, out_features))?)
    }
}

/// `GPT2Attention`: causal self-attention with a fused query/key/value projection (`c_attn`) and
/// an output projection (`c_proj`).
#[derive(Debug, Clone)]
struct Gpt2Attention {
    c_attn: Conv1D,
    c_proj: Conv1D,
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
            c_attn: Conv1D::load(&weights.pp("c_attn"), hidden, 3 * hidden)?,
            c_proj: Conv1D::load(&weights.pp("c_proj"), hidden, hidden)?,
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
}

/// `GPT2MLP`: `c_proj(act(c_fc(x)))`.
#[derive(Debug, Clone)]
struct Gpt2Mlp {
    c_fc: Conv1D,
    c_proj: Conv1D,
    act: Activation,
}

impl Gpt2Mlp {
    fn load(weights: &Weights<'_>, config: &Gpt2Config, act: Activation) -> Result<Self> {
        let inner = config.inner_size();
        Ok(Gpt2Mlp {
            c_fc: Conv1D::load(&weights.pp("c_fc"), config.n_embd, inner)?,
            c_proj: Conv1D::load(&weights.pp("c_proj"), inner, config.n_embd)?,
            act,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.c_proj
            .forward(&self.act.forward(&self.c_fc.forward(x)?)?)
    }
}

/// `GPT2Block`: pre-norm attention and MLP, each added back to the residual stream.
#[derive(Debug, Clone)]
struct Gpt2Block {
    ln_1: LayerNorm,
    attn: Gpt2Attention,
    ln_2: LayerNorm,
    mlp: Gpt2Mlp,
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
}

/// `GPT2Model`: token and position embeddings, the blocks, and a final layer norm.
#[derive(Debug, Clone)]
pub struct Gpt2Model {
    wte: Embedding,
    wpe: Embedding,
    h: Vec<Gpt2Block>,
    ln_f: LayerNorm,
}

impl Gpt2Model {
    /// Loads `wte`, `wpe`, `h.{i}.*` and `ln_f` under `weights`' prefix.
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
        Ok(Gpt2Model {
            wte: Embedding::load(&weights.pp("wte"), config.vocab_size, config.n_embd)?,
            wpe: Embedding::load(&weights.pp("wpe"), config.n_positions, config.n_embd)?,
            h,
            ln_f: LayerNorm::load(
                &weights.pp("ln_f"),
                config.n_embd,
                config.layer_norm_epsilon,
            )?,
        })
    }

    /// The last hidden states `[batch, new, n_embd]` of checked inputs, appending to `cache`.
    pub fn forward(
        &self,
        inputs: &DecoderInputs,
        device: &Device,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        let bias = inputs.attention_bias(None, device)?;
        let mut hidden_states =
            (self.wte.forward(&inputs.ids)? + self.wpe.forward(&inputs.position_ids)?)?;
        for block in &self.h {
            hidden_states = block.forward(&hidden_states, &bias, cache)?;
        }
        self.ln_f.forward(&hidden_states)
    }
}

/// `GPT2LMHeadModel`: [`Gpt2Model`] and a bias-free LM head, by default the token embedding
/// matrix itself.
#[derive(Debug, Clone)]
pub struct Gpt2LmHeadModel {
    config: ModelConfig,
    gpt2: Gpt2Config,
    transformer: Gpt2Model,
    /// `[vocab, n_embd]`, transposed once at load to `[n_embd, vocab]` for the matmul.
    lm_head_t: Tensor,
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
            lm_head_t: lm_head.t()?.contiguous()?,
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
        let inputs = DecoderInputs::check(
            input_ids,
            position_ids,
            attention_mask,
            cache.seq_len(),
            self.gpt2.vocab_size,
            Some(self.gpt2.n_positions),
        )?;
        let hidden_states = self.transformer.forward(&inputs, &self.device, cache)?;
        let (batch, new, hidden) = hidden_states.dims3()?;
        let logits = hidden_states
            .reshape((batch * new, hidden))?
            .matmul(&self.lm_head_t)?;
        Ok(logits.reshape((batch, new, self.gpt2.vocab_size))?)
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
