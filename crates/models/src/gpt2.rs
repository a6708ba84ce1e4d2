//! GPT-2: a decoder-only Transformer language model (Radford et al., 2019, "Language Models are
//! Unsupervised Multitask Learners").
//!
//! Follows Transformers' `models/gpt2/modeling_gpt2.py` piece by piece: `Conv1D` (a linear layer
//! whose weight is stored `[in, out]`), `GPT2Attention`, `GPT2MLP`, `GPT2Block`, `GPT2Model`,
//! `GPT2LMHeadModel`. Tensor names are the checkpoint's, under `transformer.` (what
//! `GPT2LMHeadModel.save_pretrained` writes) or with no prefix (the original OpenAI checkpoints,
//! saved from `GPT2Model`). Learned absolute positions, pre-norm blocks, `gelu_new`, and an LM
//! head tied to the token embeddings unless `tie_word_embeddings` is false.

use serde::Deserialize;

use crate::config::ModelConfig;
use crate::decoder::{
    Attention, DecoderLayer, DecoderStack, HeadShape, Mlp, Norm, PositionEncoding,
};
use crate::decoder_lm::{DecoderLm, DecoderSizes};
use crate::error::{Error, Result};
use crate::layers::{Activation, Embedding, Linear};
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

/// `GPT2Block` `i`: `ln_1`, `attn` (`GPT2Attention`: the fused `c_attn` query/key/value
/// `Conv1D` and `c_proj`), `ln_2`, `mlp` (`GPT2MLP`: `c_proj(act(c_fc(x)))`). `Conv1D` weights
/// are stored `[in, out]` and transposed at load.
fn load_block(
    weights: &Weights<'_>,
    config: &Gpt2Config,
    activation: Activation,
    layer: usize,
) -> Result<DecoderLayer> {
    let (hidden, inner, eps) = (
        config.n_embd,
        config.inner_size(),
        config.layer_norm_epsilon,
    );
    let head_dim = hidden / config.n_head;
    let mut scaling = 1.0;
    if config.scale_attn_weights {
        scaling /= (head_dim as f64).sqrt();
    }
    if config.scale_attn_by_inverse_layer_idx {
        scaling /= (layer + 1) as f64;
    }
    let attn = weights.pp("attn");
    let mlp = weights.pp("mlp");
    let shape = HeadShape {
        heads: config.n_head,
        kv_heads: config.n_head,
        head_dim,
    };
    Ok(DecoderLayer {
        attention_norm: Norm::load_layer_norm(&weights.pp("ln_1"), hidden, eps)?,
        attention: Attention::new(
            Linear::load_transposed(&attn.pp("c_attn"), hidden, 3 * hidden)?,
            Linear::load_transposed(&attn.pp("c_proj"), hidden, hidden)?,
            shape,
            scaling,
            None,
            layer,
        )?,
        mlp_norm: Norm::load_layer_norm(&weights.pp("ln_2"), hidden, eps)?,
        mlp: Mlp::plain(
            Linear::load_transposed(&mlp.pp("c_fc"), hidden, inner)?,
            Linear::load_transposed(&mlp.pp("c_proj"), inner, hidden)?,
            activation,
        )?,
    })
}

/// `GPT2LMHeadModel`: `GPT2Model` (token and learned position embeddings `wte`/`wpe`, the
/// blocks `h.{i}`, the final `ln_f`) and a bias-free LM head, by default the token embedding
/// matrix itself; run by the shared [`DecoderStack`].
///
/// With 8-bit or 16-bit load options the LM head is stored that way too, tied or not: at
/// 50257 × 768 it is a third of GPT-2 small's weights, read in full for every generated token.
/// The token embeddings used for lookups stay f32.
pub type Gpt2LmHeadModel = DecoderLm<Gpt2Config>;

impl DecoderLm<Gpt2Config> {
    /// Loads the model from `weights` (the checkpoint root): the body under `transformer.` or,
    /// when the checkpoint has no such names, under no prefix.
    pub fn load(weights: &Weights<'_>, config: ModelConfig) -> Result<Self> {
        let gpt2 = Gpt2Config::from_model_config(&config)?;
        let activation = gpt2.activation(&config)?;
        let body = if weights.contains("transformer.wte.weight") || !weights.contains("wte.weight")
        {
            weights.pp("transformer")
        } else {
            weights.pp("")
        };
        let layers = (0..gpt2.n_layer)
            .map(|layer| load_block(&body.pp(&format!("h.{layer}")), &gpt2, activation, layer))
            .collect::<Result<Vec<_>>>()?;
        let wte = Embedding::load(&body.pp("wte"), gpt2.vocab_size, gpt2.n_embd)?;
        // Transformers ties `lm_head.weight` to `wte` whenever `tie_word_embeddings` is true
        // (the default), whether or not the file also stores it.
        let lm_head = if config.tie_word_embeddings {
            wte.table().clone()
        } else {
            weights.get(&[gpt2.vocab_size, gpt2.n_embd], "lm_head.weight")?
        };
        let stack = DecoderStack {
            positions: PositionEncoding::Learned(Embedding::load(
                &body.pp("wpe"),
                gpt2.n_positions,
                gpt2.n_embd,
            )?),
            embed_tokens: wte.into(),
            embed_scale: None,
            layers,
            norm: Norm::load_layer_norm(&body.pp("ln_f"), gpt2.n_embd, gpt2.layer_norm_epsilon)?,
            lm_head: Linear::from_tensors(lm_head, None)?.stored_as(weights.options())?,
            hidden_size: gpt2.n_embd,
            device: weights.device().clone(),
        };
        let sizes = DecoderSizes {
            vocab_size: gpt2.vocab_size,
            context_length: gpt2.n_positions,
            position_limit: Some(gpt2.n_positions),
        };
        Ok(DecoderLm::new(config, gpt2, sizes, stack))
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
