//! NomicBert: the long-context BERT of nomic-embed-text-v1 and v1.5 (Nussbaum et al., 2024,
//! "Nomic Embed: Training a Reproducible Long Context Text Embedder"): rotary positions instead
//! of learned ones, a SwiGLU feed-forward block and no biases in its linear layers.
//!
//! The models' `config.json` (`"model_type": "nomic_bert"`) points `auto_map` at
//! `nomic-ai/nomic-bert-2048--modeling_hf_nomic_bert.NomicBertModel`, remote code that
//! Transformers would download and run. safeformers never runs it: this file is a port of what
//! that code computes for text, in its order: `NomicBertConfig` (a `GPT2Config` with
//! NomicBert's fields), `NomicBertEmbeddings` + `emb_ln`, `NomicBertBlock` (`NomicBertAttention`
//! with its rotary embedding, `NomciBertGatedMLP` or `NomicBertMLP`, `norm1`/`norm2`), and
//! `NomicBertModel` (no pooler, as the code's `from_pretrained` builds it), all on the shared
//! encoder stack of [`crate::encoder`]. Tensor names are the checkpoint's.
//!
//! Details that decide parity, read from the reference code:
//! - post-norm blocks: `norm1(x + attn(x))`, then `norm2(h + mlp(h))`; no final norm;
//! - `Wqkv` rows are all queries, then all keys, then all values;
//! - rotary over the first `head_dim · rotary_emb_fraction` values of each head, pairing halves
//!   or, with `rotary_emb_interleaved`, adjacent values (GPT-J);
//! - with `rotary_scaling_factor`, dynamic NTK: past `max_trained_positions` (`T`), the base
//!   grows with the batch's padded length `L`: `base · (factor · L / T − (factor − 1))^(d/(d−2))`;
//! - the gated feed-forward width is `n_inner` (or `8·n_embd/3`) rounded **up** to a multiple
//!   of 256, and the activation goes on `fc12`: `fc2(fc11(x) · act(fc12(x)))`;
//! - every `gelu*` value of `activation_function` runs the exact erf GELU (the code passes
//!   `F.gelu` for all of them), `geglu` too;
//! - `vocab_size` is rounded up to a multiple of `pad_vocab_size_multiple`.

use candle_core::Tensor;
use serde::Deserialize;

use crate::attention::Attention;
use crate::bert::{EncoderEmbeddings, EncoderModel, base_weights, check_encoder_sizes};
use crate::config::ModelConfig;
use crate::decoder::Mlp;
use crate::encoder::{
    Encoder, EncoderLayer, EncoderRotary, NormPlacement, RotaryFrequencies, inverse_frequencies,
};
use crate::error::{Error, Result};
use crate::layers::{Activation, Embedding, Linear, Norm};
use crate::weights::Weights;
use safeformers_kernels::rotary::RotaryPairs;

/// `NomicBertConfig`: its fields and the `GPT2Config` fields the text model reads, with the
/// reference's defaults (NomicBert's own, and `GPT2Config`'s for the fields it inherits).
///
/// The fields that fix tensor shapes have no default here, as in [`crate::bert::BertConfig`]: a
/// config without them is an error naming the field. Several fields are read for completeness
/// only: they do not change what the reference computes at inference (dropouts other than
/// `attn_pdrop`, the fused-kernel and training switches), or the reference never reads them
/// for text (`parallel_block`, `parallel_block_tied_norm`, `use_rms_norm`, `causal`: attention
/// is always bidirectional and every norm a LayerNorm), so neither does the port.
#[derive(Debug, Clone, Deserialize)]
pub struct NomicBertConfig {
    /// Number of token ids, before rounding up to `pad_vocab_size_multiple`.
    pub vocab_size: usize,
    /// Width of every hidden state.
    pub n_embd: usize,
    /// Number of blocks.
    pub n_layer: usize,
    /// Attention heads per block.
    pub n_head: usize,
    /// Width of the feed-forward block (`None`: `4·n_embd`, or `8·n_embd/3` when gated).
    #[serde(default)]
    pub n_inner: Option<usize>,
    /// Longest input accepted (`GPT2Config`'s default, 1024; positions are rotary, so this
    /// limits only the input).
    #[serde(default = "default_n_positions")]
    pub n_positions: usize,
    /// `swiglu`, `geglu` (gated), or `gelu`, `gelu_new`, `gelu_fast`, `gelu_pytorch_tanh` (all
    /// the exact GELU); `glu` (sigmoid-gated) is not supported.
    #[serde(default = "default_activation_function")]
    pub activation_function: String,
    /// Attention dropout, which the reference applies even in eval mode: must be 0.
    #[serde(default = "default_pdrop")]
    pub attn_pdrop: f64,
    /// Residual dropout (unused at inference).
    #[serde(default = "default_pdrop")]
    pub resid_pdrop: f64,
    /// Embedding dropout (unused at inference).
    #[serde(default = "default_pdrop")]
    pub embd_pdrop: f64,
    /// Initialisation scale (unused: weights come from the checkpoint).
    #[serde(default = "default_initializer_range")]
    pub initializer_range: f64,
    /// Epsilon of every LayerNorm.
    #[serde(default = "default_layer_norm_epsilon")]
    pub layer_norm_epsilon: f64,
    /// Pre-norm blocks; not supported (the published models are post-norm).
    #[serde(default)]
    pub prenorm: bool,
    /// Never read by the reference's text model.
    #[serde(default)]
    pub parallel_block: bool,
    /// Never read by the reference's text model.
    #[serde(default)]
    pub parallel_block_tied_norm: bool,
    /// Never read by the reference's text model (every norm is a LayerNorm).
    #[serde(default)]
    pub use_rms_norm: bool,
    /// Never read by the reference's text model (attention is bidirectional).
    #[serde(default)]
    pub causal: bool,
    /// A fused CUDA kernel switch (no effect on the result).
    #[serde(default)]
    pub fused_dropout_add_ln: bool,
    /// A fused CUDA kernel switch (no effect on the result).
    #[serde(default)]
    pub fused_bias_fc: bool,
    /// A fused CUDA kernel switch (no effect on the result).
    #[serde(default)]
    pub use_flash_attn: bool,
    /// A training loss switch (unused).
    #[serde(default)]
    pub use_xentropy: bool,
    /// A pre-training head switch (unused by the base model).
    #[serde(default = "default_true")]
    pub dense_seq_output: bool,
    /// Ties the pre-training head to the word embeddings (unused by the base model).
    #[serde(default = "default_true")]
    pub tie_word_embeddings: bool,
    /// Fraction of each head's values that rotary rotates (0: learned absolute positions,
    /// not supported).
    #[serde(default)]
    pub rotary_emb_fraction: f64,
    /// Rotary base.
    #[serde(default = "default_rotary_emb_base")]
    pub rotary_emb_base: f64,
    /// xPos-style scaling of the rotary tables; used by the reference only together with
    /// `rotary_scaling_factor`, where it is not supported.
    #[serde(default)]
    pub rotary_emb_scale_base: Option<f64>,
    /// GPT-J pairs (adjacent values) instead of halves.
    #[serde(default)]
    pub rotary_emb_interleaved: bool,
    /// Dynamic NTK scaling factor (`None` or 0: none).
    #[serde(default)]
    pub rotary_scaling_factor: Option<f64>,
    /// Length past which dynamic NTK rescales the rotary base.
    #[serde(default = "default_max_trained_positions")]
    pub max_trained_positions: usize,
    /// Biases in `Wqkv` and `out_proj`.
    #[serde(default = "default_true")]
    pub qkv_proj_bias: bool,
    /// Biases in `fc1` (or `fc11` and `fc12`).
    #[serde(default = "default_true")]
    pub mlp_fc1_bias: bool,
    /// Bias in `fc2`.
    #[serde(default = "default_true")]
    pub mlp_fc2_bias: bool,
    /// Number of token types (0: no token type embeddings).
    #[serde(default = "default_type_vocab_size")]
    pub type_vocab_size: usize,
    /// `vocab_size` is rounded up to a multiple of this when the model is built.
    #[serde(default = "default_one")]
    pub pad_vocab_size_multiple: usize,
    /// Key/value heads (grouped-query attention); only `n_head` is supported.
    #[serde(default)]
    pub num_heads_kv: Option<usize>,
    /// Rotary over the head axis (an xformers workaround); not supported.
    #[serde(default)]
    pub rotary_head_dim: bool,
    /// A LayerNorm inside the gated feed-forward block; not supported.
    #[serde(default)]
    pub norm_mlp: bool,
    /// Mixture-of-experts blocks (nomic-embed-text-v2); not supported.
    #[serde(default)]
    pub moe_every_n_layers: usize,
}

fn default_n_positions() -> usize {
    1024
}
fn default_activation_function() -> String {
    "gelu_new".to_string()
}
fn default_pdrop() -> f64 {
    0.1
}
fn default_initializer_range() -> f64 {
    0.02
}
fn default_layer_norm_epsilon() -> f64 {
    1e-5
}
fn default_rotary_emb_base() -> f64 {
    10_000.0
}
fn default_max_trained_positions() -> usize {
    2048
}
fn default_true() -> bool {
    true
}
fn default_type_vocab_size() -> usize {
    2
}
fn default_one() -> usize {
    1
}

/// The fields [`NomicBertConfig`] requires.
const REQUIRED_FIELDS: &[&str] = &["vocab_size", "n_embd", "n_layer", "n_head"];

/// Which feed-forward block the blocks have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FeedForward {
    /// `NomciBertGatedMLP`: `fc2(fc11(x) · act(fc12(x)))`.
    Gated(Activation),
    /// `NomicBertMLP`: `fc2(gelu(fc1(x)))`.
    Plain,
}

impl NomicBertConfig {
    /// Reads and checks the NomicBert fields of `config`.
    pub fn from_model_config(config: &ModelConfig) -> Result<NomicBertConfig> {
        let nomic: NomicBertConfig = config.architecture_config(REQUIRED_FIELDS)?;
        nomic.validate(config)?;
        Ok(nomic)
    }

    fn validate(&self, config: &ModelConfig) -> Result<()> {
        check_encoder_sizes(
            config,
            &[
                ("vocab_size", self.vocab_size),
                ("n_layer", self.n_layer),
                ("n_positions", self.n_positions),
                ("pad_vocab_size_multiple", self.pad_vocab_size_multiple),
            ],
            ("n_embd", self.n_embd),
            ("n_head", self.n_head),
        )?;
        if self.n_inner == Some(0) {
            return Err(config.invalid_field("n_inner", "must be positive"));
        }
        self.feed_forward(config)?;
        self.rotary_dim(config)?;
        if !self.layer_norm_epsilon.is_finite() || self.layer_norm_epsilon < 0.0 {
            return Err(config.invalid_field("layer_norm_epsilon", "must be a finite number ≥ 0"));
        }
        if let Some(factor) = self.rotary_scaling_factor
            && !factor.is_finite()
        {
            return Err(config.invalid_field("rotary_scaling_factor", "must be finite"));
        }
        let unsupported = |what: &str| Error::UnsupportedFeature {
            path: config.path().to_path_buf(),
            what: format!("NomicBert with {what}"),
        };
        if self.attn_pdrop != 0.0 {
            return Err(unsupported(
                "attn_pdrop ≠ 0 (the reference applies attention dropout even at inference)",
            ));
        }
        if self.prenorm {
            return Err(unsupported("prenorm"));
        }
        if self.num_heads_kv.is_some_and(|heads| heads != self.n_head) {
            return Err(unsupported("num_heads_kv ≠ n_head"));
        }
        if self.rotary_head_dim {
            return Err(unsupported("rotary_head_dim"));
        }
        if self.norm_mlp {
            return Err(unsupported("norm_mlp"));
        }
        if self.moe_every_n_layers > 0 {
            return Err(unsupported(
                "mixture-of-experts blocks (moe_every_n_layers)",
            ));
        }
        if self.dynamic_ntk().is_some() && self.rotary_emb_scale_base.is_some() {
            return Err(unsupported(
                "rotary_emb_scale_base together with rotary_scaling_factor",
            ));
        }
        Ok(())
    }

    /// Width of each attention head.
    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head.max(1)
    }

    /// `vocab_size` rounded up to a multiple of `pad_vocab_size_multiple`: the rows of the
    /// word embedding table.
    pub fn padded_vocab_size(&self) -> usize {
        self.vocab_size
            .div_ceil(self.pad_vocab_size_multiple.max(1))
            .saturating_mul(self.pad_vocab_size_multiple.max(1))
    }

    /// The values of each head rotary rotates: `head_dim · rotary_emb_fraction`, which must be
    /// an even whole number in `2..=head_dim`.
    fn rotary_dim(&self, config: &ModelConfig) -> Result<usize> {
        let head_dim = self.head_dim();
        let width = head_dim as f64 * self.rotary_emb_fraction;
        if self.rotary_emb_fraction <= 0.0 {
            return Err(Error::UnsupportedFeature {
                path: config.path().to_path_buf(),
                what: "NomicBert without rotary positions (rotary_emb_fraction 0: learned \
                       absolute positions)"
                    .to_string(),
            });
        }
        if width.fract() != 0.0 || width < 2.0 || width > head_dim as f64 || width % 2.0 != 0.0 {
            return Err(config.invalid_field(
                "rotary_emb_fraction",
                &format!(
                    "{} of a {head_dim}-wide head is {width} values; it must be an even whole \
                     number between 2 and {head_dim}",
                    self.rotary_emb_fraction
                ),
            ));
        }
        Ok(width as usize)
    }

    /// The dynamic NTK factor, when set (the reference tests it for truth: 0 is none).
    fn dynamic_ntk(&self) -> Option<f64> {
        self.rotary_scaling_factor.filter(|&factor| factor != 0.0)
    }

    /// The feed-forward block `activation_function` names.
    fn feed_forward(&self, config: &ModelConfig) -> Result<FeedForward> {
        Ok(match self.activation_function.as_str() {
            "swiglu" => FeedForward::Gated(Activation::Silu),
            "geglu" => FeedForward::Gated(Activation::GeluErf),
            "gelu" | "gelu_new" | "gelu_fast" | "gelu_pytorch_tanh" => FeedForward::Plain,
            "glu" => {
                return Err(Error::UnsupportedFeature {
                    path: config.path().to_path_buf(),
                    what: "NomicBert with activation_function `glu` (sigmoid-gated)".to_string(),
                });
            }
            other => {
                return Err(config.invalid_field(
                    "activation_function",
                    &format!(
                        "`{other}` is not one of swiglu, geglu, glu, gelu, gelu_new, \
                         gelu_fast, gelu_pytorch_tanh"
                    ),
                ));
            }
        })
    }

    /// Width of the feed-forward block: `n_inner` (default `4·n_embd`), or for the gated block
    /// `n_inner` (default `8·n_embd/3`) rounded up to a multiple of 256.
    fn inner_width(&self, feed_forward: FeedForward) -> usize {
        match feed_forward {
            FeedForward::Plain => self.n_inner.unwrap_or(4 * self.n_embd),
            FeedForward::Gated(_) => {
                const MULTIPLE_OF: usize = 256;
                let width = self.n_inner.unwrap_or(8 * self.n_embd / 3);
                width.div_ceil(MULTIPLE_OF) * MULTIPLE_OF
            }
        }
    }

    /// The rotary embedding every block applies.
    fn rotary(&self, config: &ModelConfig) -> Result<EncoderRotary> {
        let rotary_dim = self.rotary_dim(config)?;
        let frequencies = match self.dynamic_ntk() {
            Some(factor) => RotaryFrequencies::DynamicNtk {
                base: self.rotary_emb_base,
                rotary_dim,
                factor,
                trained: self.max_trained_positions,
            },
            None => RotaryFrequencies::Fixed(inverse_frequencies(self.rotary_emb_base, rotary_dim)),
        };
        Ok(EncoderRotary {
            frequencies,
            pairs: if self.rotary_emb_interleaved {
                RotaryPairs::Adjacent
            } else {
                RotaryPairs::Halves
            },
        })
    }
}

/// `NomicBertEmbeddings` + `emb_ln`: word (+ token type) embeddings, then a LayerNorm; no
/// position embeddings (positions are rotary).
fn load_embeddings(weights: &Weights<'_>, nomic: &NomicBertConfig) -> Result<EncoderEmbeddings> {
    let hidden = nomic.n_embd;
    let embeddings = weights.pp("embeddings");
    let token_types = (nomic.type_vocab_size > 0)
        .then(|| {
            Embedding::load(
                &embeddings.pp("token_type_embeddings"),
                nomic.type_vocab_size,
                hidden,
            )
        })
        .transpose()?;
    Ok(EncoderEmbeddings::new(
        Embedding::load(
            &embeddings.pp("word_embeddings"),
            nomic.padded_vocab_size(),
            hidden,
        )?,
        token_types,
        None,
        Norm::load_layer_norm(&weights.pp("emb_ln"), hidden, nomic.layer_norm_epsilon)?,
    ))
}

/// The feed-forward block of `NomicBertBlock` (`mlp`): `NomciBertGatedMLP` stacked as
/// [`Mlp::gated`] wants it (`fc12`, which the activation goes on, then `fc11`), or
/// `NomicBertMLP`.
fn load_mlp(
    weights: &Weights<'_>,
    nomic: &NomicBertConfig,
    feed_forward: FeedForward,
) -> Result<Mlp> {
    let (hidden, inner) = (nomic.n_embd, nomic.inner_width(feed_forward));
    let fc2 = Linear::load_optional_bias(&weights.pp("fc2"), inner, hidden, nomic.mlp_fc2_bias)?;
    match feed_forward {
        FeedForward::Plain => Mlp::plain(
            Linear::load_optional_bias(&weights.pp("fc1"), hidden, inner, nomic.mlp_fc1_bias)?,
            fc2,
            Activation::GeluErf,
        ),
        FeedForward::Gated(activation) => {
            let part = |name: &str| -> Result<(Tensor, Option<Tensor>)> {
                let projection = weights.pp(name);
                let weight = projection.get(&[inner, hidden], "weight")?;
                let bias = nomic
                    .mlp_fc1_bias
                    .then(|| projection.get(&[inner], "bias"))
                    .transpose()?;
                Ok((weight, bias))
            };
            let (gate, gate_bias) = part("fc12")?;
            let (up, up_bias) = part("fc11")?;
            let bias = match (gate_bias, up_bias) {
                (Some(gate), Some(up)) => Some(Tensor::cat(&[gate, up], 0)?),
                _ => None,
            };
            let gate_up = Linear::from_tensors(Tensor::cat(&[gate, up], 0)?, bias)?
                .stored_as(weights.options())?;
            Mlp::gated(gate_up, fc2, activation)
        }
    }
}

/// One `NomicBertBlock` (post-norm): attention (`attn.Wqkv`, `attn.out_proj`) + `norm1`, then
/// the feed-forward block + `norm2`, rotary embedding 0 of the encoder.
fn load_block(
    weights: &Weights<'_>,
    nomic: &NomicBertConfig,
    feed_forward: FeedForward,
) -> Result<EncoderLayer> {
    let hidden = nomic.n_embd;
    let attention = weights.pp("attn");
    let qkv = Linear::load_optional_bias(
        &attention.pp("Wqkv"),
        hidden,
        3 * hidden,
        nomic.qkv_proj_bias,
    )?;
    let out_proj = Linear::load_optional_bias(
        &attention.pp("out_proj"),
        hidden,
        hidden,
        nomic.qkv_proj_bias,
    )?;
    let norm =
        |name: &str| Norm::load_layer_norm(&weights.pp(name), hidden, nomic.layer_norm_epsilon);
    Ok(EncoderLayer {
        attention: Attention::bidirectional(
            qkv,
            out_proj,
            nomic.n_head,
            1.0 / (nomic.head_dim() as f64).sqrt(),
        )?,
        attention_norm: Some(norm("norm1")?),
        mlp: load_mlp(&weights.pp("mlp"), nomic, feed_forward)?,
        mlp_norm: norm("norm2")?,
        placement: NormPlacement::Post,
        rotary: Some(0),
    })
}

/// Loads `NomicBertModel` (no pooler) from `root`: at the root as the published checkpoints
/// are saved, or under `bert.` (a checkpoint of `NomicBertForPreTraining`).
pub fn load(root: &Weights<'_>, config: &ModelConfig) -> Result<EncoderModel> {
    let nomic = NomicBertConfig::from_model_config(config)?;
    let feed_forward = nomic.feed_forward(config)?;
    let weights = base_weights(root, "bert");
    let blocks = (0..nomic.n_layer)
        .map(|index| {
            load_block(
                &weights.pp(&format!("encoder.layers.{index}")),
                &nomic,
                feed_forward,
            )
        })
        .collect::<Result<Vec<_>>>()?;
    let encoder = Encoder::new(blocks, vec![nomic.rotary(config)?], None, None)?;
    // Token types are read only when the model has them, so any type id is accepted (and
    // ignored) without them, as the reference ignores `token_type_ids`.
    let type_ids = if nomic.type_vocab_size > 0 {
        nomic.type_vocab_size
    } else {
        usize::MAX
    };
    Ok(EncoderModel::from_parts(
        load_embeddings(&weights, &nomic)?,
        encoder,
        nomic.padded_vocab_size(),
        type_ids,
        nomic.n_positions,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn nomic(extra: &str) -> Result<(ModelConfig, NomicBertConfig)> {
        let text = format!(
            r#"{{"model_type":"nomic_bert","vocab_size":204,"n_embd":32,"n_layer":2,"n_head":4,
                "rotary_emb_fraction":1.0,"attn_pdrop":0.0{extra}}}"#
        );
        let config = ModelConfig::from_json_str(&text, Path::new("config.json"))?;
        let nomic = NomicBertConfig::from_model_config(&config)?;
        Ok((config, nomic))
    }

    #[test]
    fn sizes_follow_the_reference_rounding() -> Result<()> {
        let (_, plain) = nomic(r#","activation_function":"gelu""#)?;
        assert_eq!(plain.inner_width(FeedForward::Plain), 128);
        let (config, gated) =
            nomic(r#","activation_function":"swiglu","n_inner":40,"pad_vocab_size_multiple":64"#)?;
        let feed_forward = gated.feed_forward(&config)?;
        assert_eq!(feed_forward, FeedForward::Gated(Activation::Silu));
        assert_eq!(gated.inner_width(feed_forward), 256);
        assert_eq!(gated.padded_vocab_size(), 256);
        // 8·768/3 = 2048 is already a multiple of 256; 8·100/3 = 266 rounds up to 512.
        let (config, wide) = nomic(r#","activation_function":"geglu","n_embd":100,"n_head":2"#)?;
        assert_eq!(wide.inner_width(wide.feed_forward(&config)?), 512);
        Ok(())
    }

    #[test]
    fn what_the_port_does_not_cover_is_refused_by_name() {
        for (extra, expected) in [
            (r#","prenorm":true"#, "prenorm"),
            (r#","activation_function":"glu""#, "glu"),
            (r#","rotary_emb_fraction":0.0"#, "rotary_emb_fraction 0"),
            (r#","attn_pdrop":0.1"#, "attn_pdrop"),
            (r#","num_heads_kv":2"#, "num_heads_kv"),
            (r#","moe_every_n_layers":2"#, "moe_every_n_layers"),
            (
                r#","rotary_scaling_factor":2.0,"rotary_emb_scale_base":512"#,
                "rotary_emb_scale_base",
            ),
            (r#","rotary_emb_fraction":0.3"#, "rotary_emb_fraction"),
            (r#","activation_function":"relu""#, "activation_function"),
        ] {
            let message = match nomic(extra) {
                Ok(_) => panic!("{extra} was accepted"),
                Err(error) => error.to_string(),
            };
            assert!(message.contains(expected), "{extra}: {message}");
        }
    }
}
