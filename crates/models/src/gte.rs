//! GTE "new": the encoder of Alibaba's gte-base-en-v1.5, gte-large-en-v1.5 and
//! gte-multilingual-base (Zhang et al., 2024, "mGTE: Generalized Long-Context Text
//! Representation and Reranking Models for Multilingual Text Retrieval"): a post-norm BERT with
//! rotary positions (NTK-scaled), a gated feed-forward block and optionally RMSNorm.
//!
//! The models' `config.json` (`"model_type": "new"`) points `auto_map` at
//! `Alibaba-NLP/new-impl--modeling.NewModel`, remote code that Transformers would download and
//! run. safeformers never runs it: this file is a port of what that code's inference path
//! computes, in its order: `NewConfig`, `NewEmbeddings` (with the rotary embedding,
//! `RotaryEmbedding` or `NTKScalingRotaryEmbedding`), `NewLayer` (`NewAttention`,
//! `NewGatedMLP`, `attn_ln`/`mlp_ln`), and `NewModel` (no pooler, its default), on the shared
//! encoder stack of [`crate::encoder`]. Tensor names are the checkpoint's.
//!
//! Details that decide parity, read from the reference code:
//! - post-norm layers: `attn_ln(x + o_proj(attn(x)))`, then `mlp_ln(h + down_proj(mlp(h)))`;
//!   no final norm;
//! - `qkv_proj` rows are all queries, then all keys, then all values (with biases);
//! - rotary over the whole head, pairing halves (`rotate_half`);
//! - NTK scaling (`rope_scaling: {"type": "ntk", ...}`) applies at **every** length (the
//!   reference builds its tables past `max_position_embeddings` at load), see
//!   [`GteConfig::inverse_frequencies`];
//! - `up_gate_proj` (no bias) gives `[up | gate]` and the activation goes on the **second**
//!   half: `down_proj(act(gate) · up)`;
//! - `layer_norm_type: "rms_norm"` makes `attn_ln`/`mlp_ln` RMSNorms; the embedding norm stays
//!   a LayerNorm.

use candle_core::Tensor;
use serde::Deserialize;

use crate::attention::Attention;
use crate::bert::{
    EncoderEmbeddings, EncoderModel, base_weights, check_encoder_sizes, parse_activation,
};
use crate::config::ModelConfig;
use crate::decoder::Mlp;
use crate::encoder::{
    Encoder, EncoderLayer, EncoderRotary, NormPlacement, RotaryFrequencies, inverse_frequencies,
};
use crate::error::{Error, Result};
use crate::layers::{Activation, Embedding, Linear, Norm};
use crate::weights::Weights;
use safeformers_kernels::rotary::RotaryPairs;

/// `rope_scaling` of a GTE config: `{"type": "ntk", "factor": f}`, optionally with `mixed_b`.
#[derive(Debug, Clone, Deserialize)]
pub struct GteRopeScaling {
    /// The scaling type; only `ntk` exists in the reference code.
    #[serde(rename = "type")]
    pub kind: String,
    /// The scaling factor (≥ 1).
    pub factor: f64,
    /// Mixed NTK: the base stays, and each frequency is divided by its own factor.
    #[serde(default)]
    pub mixed_b: Option<f64>,
}

/// `NewConfig`: the `config.json` fields of GTE "new", with the reference's defaults.
///
/// The fields that fix tensor shapes have no default here, as in [`crate::bert::BertConfig`]: a
/// config without them is an error naming the field. Dropouts, `initializer_range` and
/// `classifier_dropout` are read for completeness only; `use_memory_efficient_attention`
/// (xformers) computes the same attention.
#[doc(alias = "NewConfig")]
#[derive(Debug, Clone, Deserialize)]
pub struct GteConfig {
    /// Number of token ids.
    pub vocab_size: usize,
    /// Width of every hidden state.
    pub hidden_size: usize,
    /// Number of layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer.
    pub num_attention_heads: usize,
    /// Width of the gated feed-forward block (each half of `up_gate_proj`).
    pub intermediate_size: usize,
    /// Activation of the gate (`gelu`: erf).
    #[serde(default = "default_hidden_act")]
    pub hidden_act: String,
    /// Dropout after attention and the MLP (unused at inference).
    #[serde(default = "default_hidden_dropout_prob")]
    pub hidden_dropout_prob: f64,
    /// Attention dropout (unused at inference).
    #[serde(default)]
    pub attention_probs_dropout_prob: f64,
    /// Initialisation scale (unused: weights come from the checkpoint).
    #[serde(default = "default_initializer_range")]
    pub initializer_range: f64,
    /// Dropout of the classification heads (unused by the base model).
    #[serde(default)]
    pub classifier_dropout: Option<f64>,
    /// Longest input accepted (positions are rotary, so this limits only the input).
    #[serde(default = "default_max_position_embeddings")]
    pub max_position_embeddings: usize,
    /// Number of token types (0: no token type embeddings).
    #[serde(default = "default_type_vocab_size")]
    pub type_vocab_size: usize,
    /// `layer_norm` or `rms_norm`, for `attn_ln` and `mlp_ln`.
    #[serde(default = "default_layer_norm_type")]
    pub layer_norm_type: String,
    /// Epsilon of every norm.
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    /// `rope` (`absolute`, learned positions, is not supported).
    #[serde(default = "default_position_embedding_type")]
    pub position_embedding_type: String,
    /// Rotary base.
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    /// NTK scaling of the rotary frequencies.
    #[serde(default)]
    pub rope_scaling: Option<GteRopeScaling>,
    /// Query, key and value in one `qkv_proj` (separate ones are not supported).
    #[serde(default = "default_true")]
    pub pack_qkv: bool,
    /// Unpadded inputs through xformers (not supported: padding rows come out zero).
    #[serde(default)]
    pub unpad_inputs: bool,
    /// Attention through xformers: the same result as without.
    #[serde(default)]
    pub use_memory_efficient_attention: bool,
    /// Queries scaled by `log(length) / log(max_position_embeddings)`; not supported.
    #[serde(default)]
    pub logn_attention_scale: bool,
    /// Whether `logn_attention_scale` is clipped to ≥ 1 (only with it).
    #[serde(default)]
    pub logn_attention_clip1: bool,
}

fn default_hidden_act() -> String {
    "gelu".to_string()
}
fn default_hidden_dropout_prob() -> f64 {
    0.1
}
fn default_initializer_range() -> f64 {
    0.02
}
fn default_max_position_embeddings() -> usize {
    2048
}
fn default_type_vocab_size() -> usize {
    1
}
fn default_layer_norm_type() -> String {
    "layer_norm".to_string()
}
fn default_layer_norm_eps() -> f64 {
    1e-12
}
fn default_position_embedding_type() -> String {
    "rope".to_string()
}
fn default_rope_theta() -> f64 {
    10_000.0
}
fn default_true() -> bool {
    true
}

/// The fields [`GteConfig`] requires.
const REQUIRED_FIELDS: &[&str] = &[
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
];

impl GteConfig {
    /// Reads and checks the GTE fields of `config`.
    pub fn from_model_config(config: &ModelConfig) -> Result<GteConfig> {
        let gte: GteConfig = config.architecture_config(REQUIRED_FIELDS)?;
        gte.validate(config)?;
        Ok(gte)
    }

    fn validate(&self, config: &ModelConfig) -> Result<()> {
        check_encoder_sizes(
            config,
            &[
                ("vocab_size", self.vocab_size),
                ("num_hidden_layers", self.num_hidden_layers),
                ("intermediate_size", self.intermediate_size),
                ("max_position_embeddings", self.max_position_embeddings),
            ],
            ("hidden_size", self.hidden_size),
            ("num_attention_heads", self.num_attention_heads),
        )?;
        if !self.head_dim().is_multiple_of(2) {
            return Err(config.invalid_field(
                "num_attention_heads",
                &format!(
                    "heads of {} values cannot be rotated in halves",
                    self.head_dim()
                ),
            ));
        }
        self.activation(config)?;
        self.rms_norm(config)?;
        if !self.layer_norm_eps.is_finite() || self.layer_norm_eps < 0.0 {
            return Err(config.invalid_field("layer_norm_eps", "must be a finite number ≥ 0"));
        }
        if !self.rope_theta.is_finite() || self.rope_theta <= 0.0 {
            return Err(config.invalid_field("rope_theta", "must be a positive number"));
        }
        if let Some(scaling) = &self.rope_scaling {
            check_rope_scaling(config, scaling)?;
        }
        let unsupported = |what: &str| Error::UnsupportedFeature {
            path: config.path().to_path_buf(),
            what: format!("GTE with {what}"),
        };
        match self.position_embedding_type.as_str() {
            "rope" => {}
            "absolute" => return Err(unsupported("position_embedding_type `absolute`")),
            other => {
                return Err(config.invalid_field(
                    "position_embedding_type",
                    &format!("`{other}` is neither `rope` nor `absolute`"),
                ));
            }
        }
        if !self.pack_qkv {
            return Err(unsupported("separate q/k/v projections (pack_qkv false)"));
        }
        if self.unpad_inputs {
            return Err(unsupported("unpad_inputs (xformers only)"));
        }
        if self.logn_attention_scale {
            return Err(unsupported(
                "logn_attention_scale (queries scaled by log(length) / \
                 log(max_position_embeddings)); the published models leave it off",
            ));
        }
        Ok(())
    }

    /// Width of each attention head (and of the rotary embedding).
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads.max(1)
    }

    /// The parsed `hidden_act`.
    fn activation(&self, config: &ModelConfig) -> Result<Activation> {
        parse_activation(config, "hidden_act", &self.hidden_act)
    }

    /// Whether `attn_ln`/`mlp_ln` are RMSNorms (`layer_norm_type`).
    fn rms_norm(&self, config: &ModelConfig) -> Result<bool> {
        match self.layer_norm_type.as_str() {
            "layer_norm" => Ok(false),
            "rms_norm" => Ok(true),
            other => Err(config.invalid_field(
                "layer_norm_type",
                &format!("`{other}` is neither `layer_norm` nor `rms_norm`"),
            )),
        }
    }

    /// The rotary inverse frequencies, in f32 as the reference computes them (`d` the head
    /// width, `θ` `rope_theta`, `f` the NTK factor):
    /// - no scaling: `θ^(−2i/d)`;
    /// - NTK: `(θ·f)^(−2i/d) / f^(2/d)`;
    /// - mixed NTK (`mixed_b` = b): `θ^(−2i/d) / exp(ln f / (d/2)^b · (i+1)^b)`.
    pub fn inverse_frequencies(&self) -> Vec<f64> {
        let dim = self.head_dim();
        let Some(scaling) = &self.rope_scaling else {
            return inverse_frequencies(self.rope_theta, dim);
        };
        let factor = scaling.factor;
        match scaling.mixed_b {
            None => {
                let divisor = factor.powf(2.0 / dim as f64) as f32;
                inverse_frequencies(self.rope_theta * factor, dim)
                    .into_iter()
                    .map(|frequency| f64::from(frequency as f32 / divisor))
                    .collect()
            }
            Some(b) => {
                let a = (factor as f32).ln() / ((dim / 2) as f64).powf(b) as f32;
                inverse_frequencies(self.rope_theta, dim)
                    .into_iter()
                    .enumerate()
                    .map(|(i, frequency)| {
                        let lambda = (a * ((i + 1) as f32).powf(b as f32)).exp();
                        f64::from(frequency as f32 / lambda)
                    })
                    .collect()
            }
        }
    }
}

/// Checks `rope_scaling`: type `ntk`, a finite factor ≥ 1 (below 1 the reference scales only
/// some lengths, statefully), a finite `mixed_b`.
fn check_rope_scaling(config: &ModelConfig, scaling: &GteRopeScaling) -> Result<()> {
    if scaling.kind != "ntk" {
        return Err(config.invalid_field(
            "rope_scaling",
            &format!("type `{}` is not `ntk`, the only one GTE has", scaling.kind),
        ));
    }
    if !scaling.factor.is_finite() || scaling.factor < 1.0 {
        return Err(config.invalid_field("rope_scaling", "factor must be a number ≥ 1"));
    }
    if scaling.mixed_b.is_some_and(|b| !b.is_finite()) {
        return Err(config.invalid_field("rope_scaling", "mixed_b must be finite"));
    }
    Ok(())
}

/// `NewEmbeddings` (for `rope`): word (+ token type) embeddings, then `LayerNorm` (always a
/// LayerNorm, whatever `layer_norm_type` says).
fn load_embeddings(weights: &Weights<'_>, gte: &GteConfig) -> Result<EncoderEmbeddings> {
    let hidden = gte.hidden_size;
    let token_types = (gte.type_vocab_size > 0)
        .then(|| {
            Embedding::load(
                &weights.pp("token_type_embeddings"),
                gte.type_vocab_size,
                hidden,
            )
        })
        .transpose()?;
    Ok(EncoderEmbeddings::new(
        Embedding::load(&weights.pp("word_embeddings"), gte.vocab_size, hidden)?,
        token_types,
        None,
        Norm::load_layer_norm(&weights.pp("LayerNorm"), hidden, gte.layer_norm_eps)?,
    ))
}

/// `NewGatedMLP`: `up_gate_proj` holds `[up | gate]`; [`Mlp::gated`] wants the activated half
/// first, so the rows are swapped at load.
fn load_mlp(weights: &Weights<'_>, gte: &GteConfig, activation: Activation) -> Result<Mlp> {
    let (hidden, inner) = (gte.hidden_size, gte.intermediate_size);
    let up_gate = weights
        .pp("up_gate_proj")
        .get(&[2 * inner, hidden], "weight")?;
    let gate_up = Tensor::cat(
        &[
            up_gate.narrow(0, inner, inner)?,
            up_gate.narrow(0, 0, inner)?,
        ],
        0,
    )?;
    Mlp::gated(
        Linear::from_tensors(gate_up, None)?.stored_as(weights.options())?,
        Linear::load(&weights.pp("down_proj"), inner, hidden)?,
        activation,
    )
}

/// One `NewLayer` (post-norm): `attention` (`qkv_proj`, `o_proj`) + `attn_ln`, then `mlp` +
/// `mlp_ln`, rotary embedding 0 of the encoder.
fn load_layer(
    weights: &Weights<'_>,
    gte: &GteConfig,
    activation: Activation,
    rms_norm: bool,
) -> Result<EncoderLayer> {
    let hidden = gte.hidden_size;
    let attention = weights.pp("attention");
    let norm = |name: &str| {
        let weights = weights.pp(name);
        if rms_norm {
            Norm::load_rms_norm(&weights, hidden, gte.layer_norm_eps, 0.0)
        } else {
            Norm::load_layer_norm(&weights, hidden, gte.layer_norm_eps)
        }
    };
    Ok(EncoderLayer {
        attention: Attention::bidirectional(
            Linear::load(&attention.pp("qkv_proj"), hidden, 3 * hidden)?,
            Linear::load(&attention.pp("o_proj"), hidden, hidden)?,
            gte.num_attention_heads,
            1.0 / (gte.head_dim() as f64).sqrt(),
        )?,
        attention_norm: Some(norm("attn_ln")?),
        mlp: load_mlp(&weights.pp("mlp"), gte, activation)?,
        mlp_norm: norm("mlp_ln")?,
        placement: NormPlacement::Post,
        rotary: Some(0),
    })
}

/// Loads `NewModel` (no pooler) from `root`: at the root as the published checkpoints are
/// saved, or under `new.` (a checkpoint of one of the `NewFor*` heads).
pub fn load(root: &Weights<'_>, config: &ModelConfig) -> Result<EncoderModel> {
    let gte = GteConfig::from_model_config(config)?;
    let (activation, rms_norm) = (gte.activation(config)?, gte.rms_norm(config)?);
    let weights = base_weights(root, "new");
    let layers = (0..gte.num_hidden_layers)
        .map(|index| {
            load_layer(
                &weights.pp(&format!("encoder.layer.{index}")),
                &gte,
                activation,
                rms_norm,
            )
        })
        .collect::<Result<Vec<_>>>()?;
    let rotary = EncoderRotary {
        frequencies: RotaryFrequencies::Fixed(gte.inverse_frequencies()),
        pairs: RotaryPairs::Halves,
    };
    let encoder = Encoder::new(layers, vec![rotary], None, None)?;
    // Token types are read only when the model has them, so any type id is accepted (and
    // ignored) without them, as the reference ignores `token_type_ids`.
    let type_ids = if gte.type_vocab_size > 0 {
        gte.type_vocab_size
    } else {
        usize::MAX
    };
    Ok(EncoderModel::from_parts(
        load_embeddings(&weights.pp("embeddings"), &gte)?,
        encoder,
        gte.vocab_size,
        type_ids,
        gte.max_position_embeddings,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn gte(extra: &str) -> Result<GteConfig> {
        let text = format!(
            r#"{{"model_type":"new","vocab_size":204,"hidden_size":32,"num_hidden_layers":2,
                "num_attention_heads":4,"intermediate_size":48{extra}}}"#
        );
        let config = ModelConfig::from_json_str(&text, Path::new("config.json"))?;
        GteConfig::from_model_config(&config)
    }

    #[test]
    fn ntk_scales_the_base_and_divides_by_the_factor() -> Result<()> {
        let plain = gte(r#","rope_theta":10000.0"#)?.inverse_frequencies();
        let ntk = gte(r#","rope_theta":10000.0,"rope_scaling":{"type":"ntk","factor":2.0}"#)?
            .inverse_frequencies();
        // d = 8: (2θ)^(−2i/8) / 2^(1/4).
        for (i, (plain, ntk)) in plain.iter().zip(&ntk).enumerate() {
            let expected = 20_000f64.powf(-(2.0 * i as f64) / 8.0) / 2f64.powf(0.25);
            assert!(
                (ntk - expected).abs() < 1e-6 * expected,
                "{i}: {ntk} vs {expected}"
            );
            assert!(ntk < plain);
        }
        let mixed = gte(r#","rope_scaling":{"type":"ntk","factor":4.0,"mixed_b":0.75}"#)?
            .inverse_frequencies();
        let a = 4f64.ln() / 4f64.powf(0.75);
        let expected = plain[3] / (a * 4f64.powf(0.75)).exp();
        assert!((mixed[3] - expected).abs() < 1e-6 * expected);
        Ok(())
    }

    #[test]
    fn what_the_port_does_not_cover_is_refused_by_name() {
        for (extra, expected) in [
            (r#","logn_attention_scale":true"#, "logn_attention_scale"),
            (r#","position_embedding_type":"absolute""#, "absolute"),
            (r#","pack_qkv":false"#, "pack_qkv"),
            (r#","unpad_inputs":true"#, "unpad_inputs"),
            (r#","layer_norm_type":"batch_norm""#, "layer_norm_type"),
            (
                r#","rope_scaling":{"type":"linear","factor":2.0}"#,
                "rope_scaling",
            ),
            (
                r#","rope_scaling":{"type":"ntk","factor":0.5}"#,
                "rope_scaling",
            ),
            (r#","hidden_act":"nope""#, "hidden_act"),
        ] {
            let message = match gte(extra) {
                Ok(_) => panic!("{extra} was accepted"),
                Err(error) => error.to_string(),
            };
            assert!(message.contains(expected), "{extra}: {message}");
        }
    }

    #[test]
    fn logn_attention_scale_is_an_unsupported_feature() {
        assert!(matches!(
            gte(r#","logn_attention_scale":true"#),
            Err(Error::UnsupportedFeature { .. })
        ));
    }
}
