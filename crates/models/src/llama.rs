//! Llama (Touvron et al., 2023, "LLaMA: Open and Efficient Foundation Language Models") and the
//! decoders that are Llama with a different config: Mistral (sliding-window attention), Qwen2
//! (q/k/v bias, sliding window on the upper layers), Gemma (embeddings × √hidden, `(1 + w)`
//! RMSNorm, GELU-tanh MLP, wide heads), Phi-3 (fused `qkv_proj` / `gate_up_proj`, LongRoPE,
//! partial rotary) and Qwen3 (an RMSNorm over each query and key head before rotary, Transformers'
//! `Qwen3Attention.q_norm` / `k_norm`).
//!
//! Follows Transformers' `models/llama/modeling_llama.py`: `LlamaRMSNorm`,
//! `LlamaRotaryEmbedding` ([`crate::rotary`]), `LlamaMLP`, `LlamaAttention` (grouped-query,
//! eager), `LlamaDecoderLayer` (pre-norm, two residuals), `LlamaModel`, `LlamaForCausalLM`.
//! Tensor names are the checkpoint's (`model.layers.0.self_attn.q_proj.weight`, ...). Where the
//! other families differ, [`Family`] says how, in one place:
//!
//! | | Llama | Mistral | Qwen2 | Gemma | Phi-3 | Qwen3 |
//! |---|---|---|---|---|---|---|
//! | q/k/v bias | `attention_bias` | no | yes | `attention_bias` | no | `attention_bias` |
//! | o bias | `attention_bias` | no | no | `attention_bias` | no | `attention_bias` |
//! | MLP bias | `mlp_bias` | no | no | no | no | no |
//! | sliding window | no | every layer | layers ≥ `max_window_layers` if `use_sliding_window` | no | every layer | as Qwen2 |
//! | norm | `w·x̂` | `w·x̂` | `w·x̂` | `(1+w)·x̂` | `w·x̂` | `w·x̂` |
//! | q/k norm | | | | | | RMSNorm per head (`q_norm`, `k_norm`) |
//! | embeddings | | | | × √hidden | | |
//! | weights | | | | | `qkv_proj`, `gate_up_proj` (split at load) | |
//!
//! Everything is computed in f32; the attention mask adds causality and the sliding window to the
//! caller's padding mask, over cache indices, as Transformers' `create_causal_mask` /
//! `create_sliding_window_causal_mask` do.

use candle_core::Tensor;
use serde::Deserialize;
use serde_json::Value;

use crate::attention::HeadNorms;
use crate::config::ModelConfig;
use crate::decoder::{
    Attention, DecoderLayer, DecoderStack, HeadShape, Mlp, Norm, PositionEncoding,
};
use crate::decoder_lm::{DecoderLm, DecoderSizes};
use crate::error::{Error, Result};
use crate::layers::{Activation, Embedding, Linear, TokenEmbedding};
use crate::rotary::{RopeConfigRules, RopeParameters, RotaryEmbedding};
use crate::weight_storage::StoredMatrix;
use crate::weights::Weights;

/// The decoder families implemented by [`LlamaForCausalLM`], one per `model_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// `llama`.
    Llama,
    /// `mistral`.
    Mistral,
    /// `qwen2`.
    Qwen2,
    /// `gemma`.
    Gemma,
    /// `phi3`.
    Phi3,
    /// `qwen3`.
    Qwen3,
}

impl Family {
    /// Every family.
    pub const ALL: [Family; 6] = [
        Family::Llama,
        Family::Mistral,
        Family::Qwen2,
        Family::Gemma,
        Family::Phi3,
        Family::Qwen3,
    ];

    /// The family of a `model_type`, if implemented.
    pub fn from_model_type(model_type: &str) -> Option<Family> {
        Family::ALL
            .into_iter()
            .find(|family| family.model_type() == model_type)
    }

    /// The `model_type` spelling.
    pub fn model_type(self) -> &'static str {
        match self {
            Family::Llama => "llama",
            Family::Mistral => "mistral",
            Family::Qwen2 => "qwen2",
            Family::Gemma => "gemma",
            Family::Phi3 => "phi3",
            Family::Qwen3 => "qwen3",
        }
    }

    /// The Transformers class (`LlamaForCausalLM`, ...).
    pub fn class_name(self) -> &'static str {
        match self {
            Family::Llama => "LlamaForCausalLM",
            Family::Mistral => "MistralForCausalLM",
            Family::Qwen2 => "Qwen2ForCausalLM",
            Family::Gemma => "GemmaForCausalLM",
            Family::Phi3 => "Phi3ForCausalLM",
            Family::Qwen3 => "Qwen3ForCausalLM",
        }
    }
}

/// The `config.json` fields of the six config classes (`LlamaConfig`, `MistralConfig`,
/// `Qwen2Config`, `GemmaConfig`, `Phi3Config`, `Qwen3Config`), as written; defaults differ per family and are
/// applied by [`LlamaConfig::from_model_config`].
#[derive(Debug, Clone, Deserialize)]
struct RawConfig {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    #[serde(default)]
    num_key_value_heads: Option<usize>,
    #[serde(default)]
    head_dim: Option<usize>,
    #[serde(default)]
    hidden_act: Option<String>,
    #[serde(default)]
    max_position_embeddings: Option<usize>,
    #[serde(default)]
    rms_norm_eps: Option<f64>,
    #[serde(default)]
    attention_bias: Option<bool>,
    #[serde(default)]
    mlp_bias: Option<bool>,
    #[serde(default)]
    use_sliding_window: Option<bool>,
    #[serde(default)]
    max_window_layers: Option<usize>,
    #[serde(default)]
    layer_types: Option<Vec<String>>,
}

/// The fields a config must have (no silent 4096-wide default).
const REQUIRED_FIELDS: &[&str] = &[
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
];

/// A resolved Llama-family configuration: the family's defaults applied, every value checked.
#[derive(Debug, Clone)]
pub struct LlamaConfig {
    /// Which family's rules apply.
    pub family: Family,
    /// Number of token ids.
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the MLP.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (divides `num_attention_heads`; grouped-query attention when fewer).
    pub num_key_value_heads: usize,
    /// Width of one head (`head_dim`, else `hidden_size / num_attention_heads`).
    pub head_dim: usize,
    /// The MLP activation (`hidden_act`).
    pub activation: Activation,
    /// `max_position_embeddings`.
    pub max_position_embeddings: usize,
    /// `rms_norm_eps`.
    pub rms_norm_eps: f64,
    /// Whether `lm_head` shares the token embeddings (also when `lm_head.weight` is absent).
    pub tie_word_embeddings: bool,
    /// Bias on `q_proj`, `k_proj`, `v_proj`.
    pub qkv_bias: bool,
    /// Bias on `o_proj`.
    pub o_bias: bool,
    /// Bias on the MLP projections.
    pub mlp_bias: bool,
    /// Which layers use a sliding window (see [`LlamaConfig::layer_window`]).
    sliding_layers: SlidingLayers,
    /// Rotary embedding parameters.
    pub rope: RopeParameters,
}

/// How a family's layers choose a sliding window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlidingRule {
    /// Never (full causal attention).
    Never,
    /// Every layer, when the config has a `sliding_window`.
    AllLayers,
    /// Qwen2 and Qwen3: only with `use_sliding_window`, on the layers `layer_types` marks or
    /// from `max_window_layers` on.
    Qwen2,
}

/// Which projections carry a bias.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BiasRule {
    /// None.
    Never,
    /// `attention_bias` on q/k/v and o, `mlp_bias` on the MLP (Llama).
    Configured,
    /// `attention_bias` on q/k/v and o, never on the MLP (Gemma).
    AttentionConfigured,
    /// Always on q/k/v, never elsewhere (Qwen2).
    QkvAlways,
}

/// What a family does differently from Llama: its config class's defaults and the flags of its
/// checkpoint layout, one row per family (see [`Family::defaults`] and the table in the module
/// documentation).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FamilyDefaults {
    /// `num_key_value_heads` when the key is absent (`None`: as many as the heads).
    pub kv_heads: Option<usize>,
    /// `head_dim` when the key is absent (`None`: `hidden_size / num_attention_heads`).
    pub head_dim: Option<usize>,
    /// `hidden_act` when absent.
    pub activation: &'static str,
    /// The legacy `hidden_act: "gelu"` means the tanh approximation (Gemma).
    pub gelu_means_tanh: bool,
    /// `max_position_embeddings` when absent.
    pub max_position_embeddings: usize,
    /// `rms_norm_eps` when absent.
    pub rms_norm_eps: f64,
    /// `tie_word_embeddings` when absent or null.
    pub tie_word_embeddings: bool,
    /// `sliding_window` when the key is absent.
    pub sliding_window: Option<usize>,
    /// Which layers slide.
    pub sliding: SlidingRule,
    /// Which projections have a bias.
    pub bias: BiasRule,
    /// RMSNorm multiplies by `(1 + w)` (Gemma).
    pub norm_plus_one: bool,
    /// Embeddings are multiplied by `√hidden` (Gemma).
    pub scale_embeddings: bool,
    /// Fused `qkv_proj` and `gate_up_proj` tensors (Phi-3).
    pub fused_projections: bool,
    /// Phi-3's rope config rules (LongRoPE checks).
    pub phi3_rope: bool,
    /// An RMSNorm (`q_norm`, `k_norm`, `[head_dim]`) on every query and key head before rotary
    /// (Qwen3).
    pub qk_norm: bool,
}

/// Llama's row; the others are Llama with a few fields changed.
const LLAMA: FamilyDefaults = FamilyDefaults {
    kv_heads: None,
    head_dim: None,
    activation: "silu",
    gelu_means_tanh: false,
    max_position_embeddings: 2048,
    rms_norm_eps: 1e-6,
    tie_word_embeddings: false,
    sliding_window: None,
    sliding: SlidingRule::Never,
    bias: BiasRule::Configured,
    norm_plus_one: false,
    scale_embeddings: false,
    fused_projections: false,
    phi3_rope: false,
    qk_norm: false,
};

impl Family {
    /// The family's row of defaults and flags.
    pub fn defaults(self) -> FamilyDefaults {
        match self {
            Family::Llama => LLAMA,
            Family::Mistral => FamilyDefaults {
                kv_heads: Some(8),
                max_position_embeddings: 4096 * 32,
                sliding_window: Some(4096),
                sliding: SlidingRule::AllLayers,
                bias: BiasRule::Never,
                ..LLAMA
            },
            Family::Qwen2 => FamilyDefaults {
                kv_heads: Some(32),
                max_position_embeddings: 32768,
                sliding_window: Some(4096),
                sliding: SlidingRule::Qwen2,
                bias: BiasRule::QkvAlways,
                ..LLAMA
            },
            Family::Gemma => FamilyDefaults {
                kv_heads: Some(16),
                head_dim: Some(256),
                activation: "gelu_pytorch_tanh",
                gelu_means_tanh: true,
                max_position_embeddings: 8192,
                tie_word_embeddings: true,
                bias: BiasRule::AttentionConfigured,
                norm_plus_one: true,
                scale_embeddings: true,
                ..LLAMA
            },
            Family::Phi3 => FamilyDefaults {
                max_position_embeddings: 4096,
                rms_norm_eps: 1e-5,
                sliding: SlidingRule::AllLayers,
                bias: BiasRule::Never,
                fused_projections: true,
                phi3_rope: true,
                ..LLAMA
            },
            // `Qwen3Config`: 32 kv heads, `head_dim` 128, 32768 positions, window 4096 from
            // layer 28 when `use_sliding_window`; `attention_bias` on q/k/v and o.
            Family::Qwen3 => FamilyDefaults {
                kv_heads: Some(32),
                head_dim: Some(128),
                max_position_embeddings: 32768,
                sliding_window: Some(4096),
                sliding: SlidingRule::Qwen2,
                bias: BiasRule::AttentionConfigured,
                qk_norm: true,
                ..LLAMA
            },
        }
    }
}

impl LlamaConfig {
    /// Reads and checks the config of any [`Family`] (picked by `model_type`).
    ///
    /// Zero sizes, key/value heads that do not divide the heads, non-positive sliding windows,
    /// unknown activations and rope types are [`Error::InvalidConfigField`] naming the field.
    pub fn from_model_config(config: &ModelConfig) -> Result<LlamaConfig> {
        let family = Family::from_model_type(&config.model_type).ok_or_else(|| {
            Error::UnsupportedModelType {
                path: config.path().to_path_buf(),
                model_type: config.model_type.clone(),
            }
        })?;
        let defaults = family.defaults();
        let raw: RawConfig = config.architecture_config(REQUIRED_FIELDS)?;
        for (field, value) in [
            ("vocab_size", raw.vocab_size),
            ("hidden_size", raw.hidden_size),
            ("intermediate_size", raw.intermediate_size),
            ("num_hidden_layers", raw.num_hidden_layers),
            ("num_attention_heads", raw.num_attention_heads),
        ] {
            if value == 0 {
                return Err(config.invalid_field(field, "must be positive"));
            }
        }
        let (kv_heads, head_dim) = heads(config, &raw, &defaults)?;
        let max_position_embeddings = raw
            .max_position_embeddings
            .unwrap_or(defaults.max_position_embeddings);
        if max_position_embeddings == 0 {
            return Err(config.invalid_field("max_position_embeddings", "must be positive"));
        }
        let rms_norm_eps = raw.rms_norm_eps.unwrap_or(defaults.rms_norm_eps);
        if !(rms_norm_eps.is_finite() && rms_norm_eps >= 0.0) {
            return Err(config.invalid_field("rms_norm_eps", "must be a non-negative number"));
        }
        let tie_word_embeddings = match config.raw().get("tie_word_embeddings") {
            None | Some(Value::Null) => defaults.tie_word_embeddings,
            Some(Value::Bool(tie)) => *tie,
            Some(_) => {
                return Err(config.invalid_field("tie_word_embeddings", "must be a boolean"));
            }
        };
        let attention_bias = raw.attention_bias.unwrap_or(false);
        let (qkv_bias, o_bias, mlp_bias) = match defaults.bias {
            BiasRule::Configured => (
                attention_bias,
                attention_bias,
                raw.mlp_bias.unwrap_or(false),
            ),
            BiasRule::AttentionConfigured => (attention_bias, attention_bias, false),
            BiasRule::QkvAlways => (true, false, false),
            BiasRule::Never => (false, false, false),
        };
        let rope = RopeParameters::from_config(
            config,
            max_position_embeddings,
            head_dim,
            RopeConfigRules {
                phi3: defaults.phi3_rope,
            },
        )?;
        Ok(LlamaConfig {
            family,
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: raw.num_attention_heads,
            num_key_value_heads: kv_heads,
            head_dim,
            activation: activation(config, &raw, &defaults)?,
            max_position_embeddings,
            rms_norm_eps,
            tie_word_embeddings,
            qkv_bias,
            o_bias,
            mlp_bias,
            sliding_layers: sliding_layers(config, &raw, &defaults)?,
            rope,
        })
    }
}

/// `num_key_value_heads` and `head_dim`, checked: the key/value heads divide the heads, the
/// head width is even, and the projection widths are representable.
fn heads(
    config: &ModelConfig,
    raw: &RawConfig,
    defaults: &FamilyDefaults,
) -> Result<(usize, usize)> {
    let heads = raw.num_attention_heads;
    // An absent key takes the family's default; a `null` always means "as many as the heads".
    let kv_heads = match (config.raw().get("num_key_value_heads"), defaults.kv_heads) {
        (None, Some(default)) => default,
        _ => raw.num_key_value_heads.unwrap_or(heads),
    };
    if kv_heads == 0 {
        return Err(config.invalid_field("num_key_value_heads", "must be positive"));
    }
    if !heads.is_multiple_of(kv_heads) {
        return Err(config.invalid_field(
            "num_key_value_heads",
            &format!("{kv_heads} does not divide num_attention_heads {heads}"),
        ));
    }
    let head_dim = match (raw.head_dim, defaults.head_dim) {
        (Some(head_dim), _) if head_dim > 0 => head_dim,
        (Some(_), _) => return Err(config.invalid_field("head_dim", "must be positive")),
        (None, Some(default)) if config.raw().get("head_dim").is_none() => default,
        (None, _) => {
            if !raw.hidden_size.is_multiple_of(heads) {
                return Err(config.invalid_field(
                    "num_attention_heads",
                    &format!(
                        "hidden_size {} is not a multiple of {heads} heads (and no head_dim)",
                        raw.hidden_size
                    ),
                ));
            }
            raw.hidden_size / heads
        }
    };
    if !head_dim.is_multiple_of(2) {
        return Err(config.invalid_field(
            "head_dim",
            &format!("{head_dim} is odd; rotary embeddings rotate pairs"),
        ));
    }
    // Projection widths: heads·head_dim + 2·kv_heads·head_dim and 2·intermediate must be
    // representable (a hostile config could overflow them).
    let projection_width = kv_heads
        .checked_mul(2)
        .and_then(|kv_rows| kv_rows.checked_add(heads))
        .and_then(|rows| rows.checked_mul(head_dim));
    if projection_width.is_none() {
        return Err(config.invalid_field(
            "head_dim",
            &format!("{head_dim} × {heads} heads is too large"),
        ));
    }
    if raw.intermediate_size.checked_mul(2).is_none() {
        return Err(config.invalid_field("intermediate_size", "is too large"));
    }
    Ok((kv_heads, head_dim))
}

/// `hidden_act`, or the family's default.
fn activation(
    config: &ModelConfig,
    raw: &RawConfig,
    defaults: &FamilyDefaults,
) -> Result<Activation> {
    let name = match raw.hidden_act.as_deref() {
        None => defaults.activation,
        // Gemma's legacy `gelu` means the tanh approximation (GemmaConfig.__post_init__).
        Some("gelu") if defaults.gelu_means_tanh => "gelu_pytorch_tanh",
        Some(name) => name,
    };
    Activation::from_name(name).ok_or_else(|| {
        config.invalid_field(
            "hidden_act",
            &format!("`{name}` is not one of {}", Activation::NAMES.join(", ")),
        )
    })
}

/// Which layers slide: a rule, not a per-layer list, so a config claiming 10¹² layers costs
/// nothing before the checkpoint proves otherwise.
fn sliding_layers(
    config: &ModelConfig,
    raw: &RawConfig,
    defaults: &FamilyDefaults,
) -> Result<SlidingLayers> {
    let window = sliding_window(config, defaults)?;
    let layers = raw.num_hidden_layers;
    match defaults.sliding {
        SlidingRule::Never => Ok(SlidingLayers::None),
        SlidingRule::AllLayers => Ok(match window {
            Some(window) => SlidingLayers::From { first: 0, window },
            None => SlidingLayers::None,
        }),
        SlidingRule::Qwen2 => {
            let listed = match &raw.layer_types {
                Some(types) => Some(listed_layers(config, types, layers)?),
                None => None,
            };
            let window = window.filter(|_| raw.use_sliding_window.unwrap_or(false));
            Ok(match (listed, window) {
                (_, None) => SlidingLayers::None,
                (Some(sliding), Some(window)) => SlidingLayers::Listed { sliding, window },
                (None, Some(window)) => SlidingLayers::From {
                    first: raw.max_window_layers.unwrap_or(28),
                    window,
                },
            })
        }
    }
}

/// Qwen2's `layer_types`: one `full_attention` or `sliding_attention` per layer.
fn listed_layers(config: &ModelConfig, types: &[String], layers: usize) -> Result<Vec<bool>> {
    if types.len() != layers {
        return Err(config.invalid_field(
            "layer_types",
            &format!("has {} entries for {layers} layers", types.len()),
        ));
    }
    types
        .iter()
        .map(|kind| match kind.as_str() {
            "full_attention" => Ok(false),
            "sliding_attention" => Ok(true),
            other => Err(config.invalid_field(
                "layer_types",
                &format!("`{other}` is not full_attention or sliding_attention"),
            )),
        })
        .collect()
}

/// The layers that attend through a sliding window.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SlidingLayers {
    /// None: full causal attention everywhere.
    None,
    /// Layers `first..` (Mistral and Phi-3: all; Qwen2: from `max_window_layers`).
    From { first: usize, window: usize },
    /// Qwen2's `layer_types`: `true` for `sliding_attention`.
    Listed { sliding: Vec<bool>, window: usize },
}

impl LlamaConfig {
    /// The sliding window of layer `layer` (`None`: full causal attention), as Transformers'
    /// `layer_types` / `sliding_window` / `use_sliding_window` / `max_window_layers` decide.
    pub fn layer_window(&self, layer: usize) -> Option<usize> {
        match &self.sliding_layers {
            SlidingLayers::None => None,
            SlidingLayers::From { first, window } => (layer >= *first).then_some(*window),
            SlidingLayers::Listed { sliding, window } => sliding
                .get(layer)
                .copied()
                .unwrap_or(false)
                .then_some(*window),
        }
    }
}

/// `sliding_window`: the family's default when absent (Mistral and Qwen2: 4096); `null` means
/// none; it must be a positive integer.
fn sliding_window(config: &ModelConfig, defaults: &FamilyDefaults) -> Result<Option<usize>> {
    match config.raw().get("sliding_window") {
        None => Ok(defaults.sliding_window),
        Some(Value::Null) => Ok(None),
        Some(value) => match value.as_i64() {
            Some(window) if window > 0 => usize::try_from(window)
                .map(Some)
                .map_err(|_| config.invalid_field("sliding_window", "is too large")),
            Some(window) => Err(config.invalid_field(
                "sliding_window",
                &format!("{window} is not a positive number of tokens"),
            )),
            None => Err(config.invalid_field("sliding_window", "must be an integer or null")),
        },
    }
}

/// A linear layer whose weight is the row-wise concatenation of `names`' `weight`s (each
/// `[rows, in]`), with their `bias`es when `bias` is set: Llama's `q_proj`/`k_proj`/`v_proj`
/// and `gate_proj`/`up_proj` become one projection each (one pass over the input).
fn load_stacked(
    weights: &Weights<'_>,
    names: &[(&str, usize)],
    in_features: usize,
    bias: bool,
) -> Result<Linear> {
    if let Some(linear) = load_stacked_blocks(weights, names, in_features, bias)? {
        return Ok(linear);
    }
    let mut parts = Vec::with_capacity(names.len());
    let mut biases = Vec::with_capacity(names.len());
    for &(name, rows) in names {
        let layer = weights.pp(name);
        parts.push(layer.get(&[rows, in_features], "weight")?);
        if bias {
            biases.push(layer.get(&[rows], "bias")?);
        }
    }
    let weight = Tensor::cat(&parts, 0)?;
    let bias = if bias {
        Some(Tensor::cat(&biases, 0)?)
    } else {
        None
    };
    Linear::from_tensors(weight, bias)?.stored_as(weights.options())
}

/// [`load_stacked`] on GGUF blocks: `Some` when every part is block-quantized in one format
/// and the options keep blocks (the rows of blocks are concatenated as they are); `None` to
/// read them as f32 instead.
fn load_stacked_blocks(
    weights: &Weights<'_>,
    names: &[(&str, usize)],
    in_features: usize,
    bias: bool,
) -> Result<Option<Linear>> {
    let mut parts = Vec::with_capacity(names.len());
    let mut biases = Vec::with_capacity(names.len());
    for &(name, rows) in names {
        let layer = weights.pp(name);
        let Some((format, bytes)) = layer.blocks(&[rows, in_features], "weight")? else {
            return Ok(None);
        };
        if parts.first().is_some_and(|(first, _)| *first != format) {
            return Ok(None);
        }
        parts.push((format, bytes));
        if bias {
            biases.push(layer.get(&[rows], "bias")?);
        }
    }
    let Some(&(format, _)) = parts.first() else {
        return Ok(None);
    };
    // One part is kept as read (and owned alone: it is interleaved in place); several are
    // concatenated row after row.
    let bytes: std::sync::Arc<[u8]> = if parts.len() == 1 {
        parts
            .pop()
            .map(|(_, only)| only)
            .unwrap_or_else(|| Vec::new().into())
    } else {
        parts
            .iter()
            .flat_map(|(_, bytes)| bytes.iter().copied())
            .collect()
    };
    let rows = names.iter().map(|&(_, rows)| rows).sum();
    let bias = if bias {
        Some(Tensor::cat(&biases, 0)?)
    } else {
        None
    };
    Ok(Some(Linear::from_blocks(
        format,
        bytes,
        rows,
        in_features,
        bias,
    )?))
}

/// `LlamaDecoderLayer` `layer`: `input_layernorm`, `self_attn` (`LlamaAttention`: grouped-query,
/// Qwen3's per-head `q_norm` / `k_norm`, rotary, `o_proj`), `post_attention_layernorm`, `mlp` (`LlamaMLP`: `down(act(gate(x)) ·
/// up(x))`). Phi-3's fused `qkv_proj` and `gate_up_proj` are read as they are.
fn load_layer(weights: &Weights<'_>, config: &LlamaConfig, layer: usize) -> Result<DecoderLayer> {
    let (hidden, inner) = (config.hidden_size, config.intermediate_size);
    let shape = HeadShape {
        heads: config.num_attention_heads,
        kv_heads: config.num_key_value_heads,
        head_dim: config.head_dim,
    };
    let (q_width, kv_width) = (
        shape.heads * shape.head_dim,
        shape.kv_heads * shape.head_dim,
    );
    let attn = weights.pp("self_attn");
    let mlp = weights.pp("mlp");
    let fused = config.family.defaults().fused_projections;
    let qkv = if fused {
        load_stacked(
            &attn,
            &[("qkv_proj", q_width + 2 * kv_width)],
            hidden,
            false,
        )?
    } else {
        let names = [
            ("q_proj", q_width),
            ("k_proj", kv_width),
            ("v_proj", kv_width),
        ];
        load_stacked(&attn, &names, hidden, config.qkv_bias)?
    };
    let gate_up = if fused {
        load_stacked(&mlp, &[("gate_up_proj", 2 * inner)], hidden, false)?
    } else {
        let names = [("gate_proj", inner), ("up_proj", inner)];
        load_stacked(&mlp, &names, hidden, config.mlp_bias)?
    };
    let o_proj = load_stacked(&attn, &[("o_proj", hidden)], q_width, config.o_bias)?;
    let scale = 1.0 / (config.head_dim as f64).sqrt();
    let mut attention =
        Attention::new(qkv, o_proj, shape, scale, config.layer_window(layer), layer)?;
    if config.family.defaults().qk_norm {
        let (head_dim, eps) = (config.head_dim, config.rms_norm_eps);
        attention = attention.with_head_norms(HeadNorms {
            query: Norm::load_rms_norm(&attn.pp("q_norm"), head_dim, eps, 0.0)?,
            key: Norm::load_rms_norm(&attn.pp("k_norm"), head_dim, eps, 0.0)?,
        })?;
    }
    Ok(DecoderLayer {
        attention_norm: load_norm(&weights.pp("input_layernorm"), config)?,
        attention,
        mlp_norm: load_norm(&weights.pp("post_attention_layernorm"), config)?,
        mlp: Mlp::gated(
            gate_up,
            load_stacked(&mlp, &[("down_proj", hidden)], inner, config.mlp_bias)?,
            config.activation,
        )?,
    })
}

/// `LlamaRMSNorm` (Gemma: `(1 + w)`).
fn load_norm(weights: &Weights<'_>, config: &LlamaConfig) -> Result<Norm> {
    let offset = if config.family.defaults().norm_plus_one {
        1.0
    } else {
        0.0
    };
    Norm::load_rms_norm(weights, config.hidden_size, config.rms_norm_eps, offset)
}

/// `embed_tokens` and the LM head (`lm_head`, or the embeddings when tied). A GGUF file's
/// quantized embeddings stay blocks, rows dequantized as they are looked up, and a tied head
/// multiplies the same bytes.
fn load_embeddings_and_head(
    weights: &Weights<'_>,
    model: &Weights<'_>,
    llama: &LlamaConfig,
) -> Result<(TokenEmbedding, Linear)> {
    let (vocab, hidden) = (llama.vocab_size, llama.hidden_size);
    let tied = llama.tie_word_embeddings || !weights.contains("lm_head.weight");
    let untied_head = || load_stacked(weights, &[("lm_head", vocab)], hidden, false);
    let embed = model.pp("embed_tokens");
    if let Some((format, bytes)) = embed.blocks(&[vocab, hidden], "weight")? {
        let table = StoredMatrix::from_blocks(format, bytes, vocab, hidden)?;
        let lm_head = if tied {
            Linear::from_stored(table.clone(), None)?
        } else {
            untied_head()?
        };
        return Ok((TokenEmbedding::Blocks(table), lm_head));
    }
    let table = Embedding::load(&embed, vocab, hidden)?;
    let lm_head = if tied {
        Linear::from_tensors(table.table().clone(), None)?.stored_as(weights.options())?
    } else {
        untied_head()?
    };
    Ok((table.into(), lm_head))
}

/// A Llama-family decoder with its LM head (`LlamaForCausalLM`, `MistralForCausalLM`,
/// `Qwen2ForCausalLM`, `GemmaForCausalLM`, `Phi3ForCausalLM`, `Qwen3ForCausalLM`), run by the shared
/// [`DecoderStack`].
pub type LlamaForCausalLM = DecoderLm<LlamaConfig>;

impl DecoderLm<LlamaConfig> {
    /// Builds the model of `config`'s family from `weights` (tensor names as Transformers saves
    /// them: `model.…` and `lm_head.weight`; a checkpoint of the bare model without the `model.`
    /// prefix loads too, with the head tied).
    pub fn load(weights: &Weights<'_>, config: ModelConfig) -> Result<LlamaForCausalLM> {
        let llama = LlamaConfig::from_model_config(&config)?;
        let device = weights.device().clone();
        let model = if weights.contains("model.embed_tokens.weight")
            || !weights.contains("embed_tokens.weight")
        {
            weights.pp("model")
        } else {
            weights.pp("")
        };
        let (embed_tokens, lm_head) = load_embeddings_and_head(weights, &model, &llama)?;
        let layers = (0..llama.num_hidden_layers)
            .map(|layer| load_layer(&model.pp(&format!("layers.{layer}")), &llama, layer))
            .collect::<Result<Vec<_>>>()?;
        let rotary = RotaryEmbedding::new(
            llama.rope.clone(),
            llama.head_dim,
            llama.max_position_embeddings,
            &device,
        )?;
        // Gemma's `√hidden`, rounded to f32 (the buffer's dtype).
        let embed_scale = llama
            .family
            .defaults()
            .scale_embeddings
            .then(|| f64::from((llama.hidden_size as f32).sqrt()));
        let stack = DecoderStack {
            embed_tokens,
            embed_scale,
            positions: PositionEncoding::Rotary(rotary),
            layers,
            norm: load_norm(&model.pp("norm"), &llama)?,
            lm_head,
            hidden_size: llama.hidden_size,
            device,
        };
        let sizes = DecoderSizes {
            vocab_size: llama.vocab_size,
            context_length: llama.max_position_embeddings,
            position_limit: None,
        };
        Ok(DecoderLm::new(config, llama, sizes, stack))
    }
}
