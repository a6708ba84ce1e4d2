//! Llama (Touvron et al., 2023, "LLaMA: Open and Efficient Foundation Language Models") and the
//! decoders that are Llama with a different config: Mistral (sliding-window attention), Qwen2
//! (q/k/v bias, sliding window on the upper layers), Gemma (embeddings × √hidden, `(1 + w)`
//! RMSNorm, GELU-tanh MLP, wide heads) and Phi-3 (fused `qkv_proj` / `gate_up_proj`, LongRoPE,
//! partial rotary).
//!
//! Follows Transformers' `models/llama/modeling_llama.py`: `LlamaRMSNorm`,
//! `LlamaRotaryEmbedding` ([`crate::rotary`]), `LlamaMLP`, `LlamaAttention` (grouped-query,
//! eager), `LlamaDecoderLayer` (pre-norm, two residuals), `LlamaModel`, `LlamaForCausalLM`.
//! Tensor names are the checkpoint's (`model.layers.0.self_attn.q_proj.weight`, ...). Where the
//! other families differ, [`Family`] says how, in one place:
//!
//! | | Llama | Mistral | Qwen2 | Gemma | Phi-3 |
//! |---|---|---|---|---|---|
//! | q/k/v bias | `attention_bias` | no | yes | `attention_bias` | no |
//! | o bias | `attention_bias` | no | no | `attention_bias` | no |
//! | MLP bias | `mlp_bias` | no | no | no | no |
//! | sliding window | no | every layer | layers ≥ `max_window_layers` if `use_sliding_window` | no | every layer |
//! | norm | `w·x̂` | `w·x̂` | `w·x̂` | `(1+w)·x̂` | `w·x̂` |
//! | embeddings | | | | × √hidden | |
//! | weights | | | | | `qkv_proj`, `gate_up_proj` (split at load) |
//!
//! Everything is computed in f32; the attention mask adds causality and the sliding window to the
//! caller's padding mask, over cache indices, as Transformers' `create_causal_mask` /
//! `create_sliding_window_causal_mask` do.

use candle_core::{Device, Tensor};
use serde::Deserialize;
use serde_json::Value;

use crate::attention::{DecoderInputs, scaled_dot_product_attention};
use crate::causal_lm::{CausalLm, KvCache};
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::layers::{Activation, ActivationForward, Embedding, Linear, RmsNorm};
use crate::rotary::{RopeConfigRules, RopeParameters, RotaryEmbedding};
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
}

impl Family {
    /// Every family.
    pub const ALL: [Family; 5] = [
        Family::Llama,
        Family::Mistral,
        Family::Qwen2,
        Family::Gemma,
        Family::Phi3,
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
        }
    }
}

/// The `config.json` fields of the five config classes (`LlamaConfig`, `MistralConfig`,
/// `Qwen2Config`, `GemmaConfig`, `Phi3Config`), as written; defaults differ per family and are
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
        let heads = raw.num_attention_heads;
        // Mistral, Qwen2 and Gemma declare a number as the default; Llama and Phi-3 copy the
        // heads. A `null` always means "as many as the heads".
        let kv_heads = match (config.raw().get("num_key_value_heads"), family) {
            (None, Family::Mistral) => 8,
            (None, Family::Qwen2) => 32,
            (None, Family::Gemma) => 16,
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
        let head_dim = match (raw.head_dim, family) {
            (Some(head_dim), _) if head_dim > 0 => head_dim,
            (Some(_), _) => return Err(config.invalid_field("head_dim", "must be positive")),
            (None, Family::Gemma) if config.raw().get("head_dim").is_none() => 256,
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
        let activation_name = match (raw.hidden_act.as_deref(), family) {
            // Gemma's legacy `gelu` means the tanh approximation (GemmaConfig.__post_init__).
            (None | Some("gelu"), Family::Gemma) => "gelu_pytorch_tanh",
            (None, _) => "silu",
            (Some(name), _) => name,
        };
        let activation = Activation::from_name(activation_name).ok_or_else(|| {
            config.invalid_field(
                "hidden_act",
                &format!(
                    "`{activation_name}` is not one of {}",
                    Activation::NAMES.join(", ")
                ),
            )
        })?;
        let max_position_embeddings = raw.max_position_embeddings.unwrap_or(match family {
            Family::Llama => 2048,
            Family::Mistral => 4096 * 32,
            Family::Qwen2 => 32768,
            Family::Gemma => 8192,
            Family::Phi3 => 4096,
        });
        if max_position_embeddings == 0 {
            return Err(config.invalid_field("max_position_embeddings", "must be positive"));
        }
        let rms_norm_eps = raw.rms_norm_eps.unwrap_or(match family {
            Family::Phi3 => 1e-5,
            _ => 1e-6,
        });
        if !(rms_norm_eps.is_finite() && rms_norm_eps >= 0.0) {
            return Err(config.invalid_field("rms_norm_eps", "must be a non-negative number"));
        }
        let tie_word_embeddings = match config.raw().get("tie_word_embeddings") {
            None | Some(Value::Null) => family == Family::Gemma,
            Some(Value::Bool(tie)) => *tie,
            Some(_) => {
                return Err(config.invalid_field("tie_word_embeddings", "must be a boolean"));
            }
        };
        let attention_bias = raw.attention_bias.unwrap_or(false);
        let (qkv_bias, o_bias, mlp_bias) = match family {
            Family::Llama => (
                attention_bias,
                attention_bias,
                raw.mlp_bias.unwrap_or(false),
            ),
            Family::Gemma => (attention_bias, attention_bias, false),
            Family::Qwen2 => (true, false, false),
            Family::Mistral | Family::Phi3 => (false, false, false),
        };

        let sliding_window = sliding_window(config, family)?;
        let layers = raw.num_hidden_layers;
        // Which layers slide: a rule, not a per-layer list, so a config claiming 10¹² layers
        // costs nothing before the checkpoint proves otherwise.
        let sliding_layers = match family {
            Family::Llama | Family::Gemma => SlidingLayers::None,
            Family::Mistral | Family::Phi3 => match sliding_window {
                Some(window) => SlidingLayers::From { first: 0, window },
                None => SlidingLayers::None,
            },
            Family::Qwen2 => {
                let window = if raw.use_sliding_window.unwrap_or(false) {
                    sliding_window
                } else {
                    None
                };
                match (&raw.layer_types, window) {
                    (Some(types), _) => {
                        if types.len() != layers {
                            return Err(config.invalid_field(
                                "layer_types",
                                &format!("has {} entries for {layers} layers", types.len()),
                            ));
                        }
                        let sliding = types
                            .iter()
                            .map(|kind| match kind.as_str() {
                                "full_attention" => Ok(false),
                                "sliding_attention" => Ok(true),
                                other => Err(config.invalid_field(
                                    "layer_types",
                                    &format!(
                                        "`{other}` is not full_attention or sliding_attention"
                                    ),
                                )),
                            })
                            .collect::<Result<Vec<_>>>()?;
                        match window {
                            Some(window) => SlidingLayers::Listed { sliding, window },
                            None => SlidingLayers::None,
                        }
                    }
                    (None, Some(window)) => SlidingLayers::From {
                        first: raw.max_window_layers.unwrap_or(28),
                        window,
                    },
                    (None, None) => SlidingLayers::None,
                }
            }
        };

        let rope = RopeParameters::from_config(
            config,
            max_position_embeddings,
            head_dim,
            RopeConfigRules {
                phi3: family == Family::Phi3,
            },
        )?;
        Ok(LlamaConfig {
            family,
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            head_dim,
            activation,
            max_position_embeddings,
            rms_norm_eps,
            tie_word_embeddings,
            qkv_bias,
            o_bias,
            mlp_bias,
            sliding_layers,
            rope,
        })
    }
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

/// `sliding_window`: Mistral and Qwen2 default to 4096 when absent; `null` means none; it must
/// be a positive integer.
fn sliding_window(config: &ModelConfig, family: Family) -> Result<Option<usize>> {
    match config.raw().get("sliding_window") {
        None => Ok(match family {
            Family::Mistral | Family::Qwen2 => Some(4096),
            _ => None,
        }),
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

/// A linear layer `[out, in]`, with `bias` `[out]` when `bias` is set.
fn load_linear(
    weights: &Weights<'_>,
    in_features: usize,
    out_features: usize,
    bias: bool,
) -> Result<Linear> {
    if bias {
        Linear::load(weights, in_features, out_features)
    } else {
        Linear::from_tensors(weights.get(&[out_features, in_features], "weight")?, None)?
            .stored_as(weights.options())
    }
}

/// `LlamaMLP`: `down(act(gate(x)) · up(x))`.
#[derive(Debug, Clone)]
struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
    activation: Activation,
}

impl Mlp {
    fn load(weights: &Weights<'_>, config: &LlamaConfig) -> Result<Self> {
        let (hidden, inner, bias) = (
            config.hidden_size,
            config.intermediate_size,
            config.mlp_bias,
        );
        let (gate_proj, up_proj) = if config.family == Family::Phi3 {
            // `gate_up_proj` `[2·inner, hidden]`: the gate is the first half (`chunk(2)`).
            let fused = weights.get(&[2 * inner, hidden], "gate_up_proj.weight")?;
            (
                Linear::from_tensors(fused.narrow(0, 0, inner)?.contiguous()?, None)?
                    .stored_as(weights.options())?,
                Linear::from_tensors(fused.narrow(0, inner, inner)?.contiguous()?, None)?
                    .stored_as(weights.options())?,
            )
        } else {
            (
                load_linear(&weights.pp("gate_proj"), hidden, inner, bias)?,
                load_linear(&weights.pp("up_proj"), hidden, inner, bias)?,
            )
        };
        Ok(Mlp {
            gate_proj,
            up_proj,
            down_proj: load_linear(&weights.pp("down_proj"), inner, hidden, bias)?,
            activation: config.activation,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let gate = self.activation.forward(&self.gate_proj.forward(x)?)?;
        let up = self.up_proj.forward(x)?;
        self.down_proj.forward(&(gate * up)?)
    }
}

/// `LlamaAttention`: grouped-query self-attention with rotary positions and a KV cache.
#[derive(Debug, Clone)]
struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    layer: usize,
}

impl Attention {
    fn load(weights: &Weights<'_>, config: &LlamaConfig, layer: usize) -> Result<Self> {
        let hidden = config.hidden_size;
        let (heads, kv_heads, head_dim) = (
            config.num_attention_heads,
            config.num_key_value_heads,
            config.head_dim,
        );
        let (q_width, kv_width) = (heads * head_dim, kv_heads * head_dim);
        let (q_proj, k_proj, v_proj) = if config.family == Family::Phi3 {
            // `qkv_proj` `[q + 2·kv, hidden]`: queries, then keys, then values.
            let fused = weights.get(&[q_width + 2 * kv_width, hidden], "qkv_proj.weight")?;
            let part = |start: usize, width: usize| -> Result<Linear> {
                Linear::from_tensors(fused.narrow(0, start, width)?.contiguous()?, None)?
                    .stored_as(weights.options())
            };
            (
                part(0, q_width)?,
                part(q_width, kv_width)?,
                part(q_width + kv_width, kv_width)?,
            )
        } else {
            let bias = config.qkv_bias;
            (
                load_linear(&weights.pp("q_proj"), hidden, q_width, bias)?,
                load_linear(&weights.pp("k_proj"), hidden, kv_width, bias)?,
                load_linear(&weights.pp("v_proj"), hidden, kv_width, bias)?,
            )
        };
        Ok(Attention {
            q_proj,
            k_proj,
            v_proj,
            o_proj: load_linear(&weights.pp("o_proj"), q_width, hidden, config.o_bias)?,
            heads,
            kv_heads,
            head_dim,
            layer,
        })
    }

    /// `x` `[batch, new, hidden]`; `bias` `[batch, 1, new, past + new]` (additive).
    fn forward(
        &self,
        x: &Tensor,
        rotary: &RotaryEmbedding,
        cos_sin: &(Tensor, Tensor),
        bias: &Tensor,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        let (batch, new, _) = x.dims3()?;
        let split = |projected: Tensor, heads: usize| -> Result<Tensor> {
            Ok(projected
                .reshape((batch, new, heads, self.head_dim))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let q = split(self.q_proj.forward(x)?, self.heads)?;
        let k = split(self.k_proj.forward(x)?, self.kv_heads)?;
        let v = split(self.v_proj.forward(x)?, self.kv_heads)?;
        let (cos, sin) = cos_sin;
        let q = rotary.apply(&q, cos, sin)?;
        let k = rotary.apply(&k, cos, sin)?.contiguous()?;
        let (keys, values) = cache.append(self.layer, &k, &v)?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let context = scaled_dot_product_attention(&q, &keys, &values, Some(bias), scale)?;
        self.o_proj.forward(&context)
    }
}

/// `LlamaDecoderLayer`: `x + attn(norm(x))`, then `x + mlp(norm(x))`.
#[derive(Debug, Clone)]
struct DecoderLayer {
    input_layernorm: RmsNorm,
    self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    mlp: Mlp,
    window: Option<usize>,
}

fn load_norm(weights: &Weights<'_>, config: &LlamaConfig) -> Result<RmsNorm> {
    if config.family == Family::Gemma {
        RmsNorm::load_gemma(weights, config.hidden_size, config.rms_norm_eps)
    } else {
        RmsNorm::load(weights, config.hidden_size, config.rms_norm_eps)
    }
}

impl DecoderLayer {
    fn load(weights: &Weights<'_>, config: &LlamaConfig, layer: usize) -> Result<Self> {
        Ok(DecoderLayer {
            input_layernorm: load_norm(&weights.pp("input_layernorm"), config)?,
            self_attn: Attention::load(&weights.pp("self_attn"), config, layer)?,
            post_attention_layernorm: load_norm(&weights.pp("post_attention_layernorm"), config)?,
            mlp: Mlp::load(&weights.pp("mlp"), config)?,
            window: config.layer_window(layer),
        })
    }
}

/// A Llama-family decoder with its LM head (`LlamaForCausalLM`, `MistralForCausalLM`,
/// `Qwen2ForCausalLM`, `GemmaForCausalLM`, `Phi3ForCausalLM`).
#[derive(Debug)]
pub struct LlamaForCausalLM {
    config: ModelConfig,
    llama: LlamaConfig,
    embed_tokens: Embedding,
    /// Gemma's `√hidden` (rounded to f32, the buffer's dtype), else `None`.
    embed_scale: Option<f64>,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    lm_head: Linear,
    rotary: RotaryEmbedding,
    device: Device,
}

impl LlamaForCausalLM {
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
        let embed_tokens = Embedding::load(
            &model.pp("embed_tokens"),
            llama.vocab_size,
            llama.hidden_size,
        )?;
        let layers = (0..llama.num_hidden_layers)
            .map(|layer| DecoderLayer::load(&model.pp(&format!("layers.{layer}")), &llama, layer))
            .collect::<Result<Vec<_>>>()?;
        let norm = load_norm(&model.pp("norm"), &llama)?;
        let lm_head = if llama.tie_word_embeddings || !weights.contains("lm_head.weight") {
            Linear::from_tensors(embed_tokens.table().clone(), None)?
                .stored_as(weights.options())?
        } else {
            load_linear(
                &weights.pp("lm_head"),
                llama.hidden_size,
                llama.vocab_size,
                false,
            )?
        };
        let rotary = RotaryEmbedding::new(
            llama.rope.clone(),
            llama.head_dim,
            llama.max_position_embeddings,
            &device,
        )?;
        let embed_scale =
            (llama.family == Family::Gemma).then(|| f64::from((llama.hidden_size as f32).sqrt()));
        Ok(LlamaForCausalLM {
            config,
            llama,
            embed_tokens,
            embed_scale,
            layers,
            norm,
            lm_head,
            rotary,
            device,
        })
    }

    /// The resolved family configuration.
    pub fn llama_config(&self) -> &LlamaConfig {
        &self.llama
    }
}

impl CausalLm for LlamaForCausalLM {
    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn vocab_size(&self) -> usize {
        self.llama.vocab_size
    }

    fn context_length(&self) -> Option<usize> {
        Some(self.llama.max_position_embeddings)
    }

    fn new_cache(&self) -> KvCache {
        KvCache::new(self.layers.len())
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
            self.llama.vocab_size,
            None,
        )?;
        let mut hidden = self.embed_tokens.forward(&inputs.ids)?;
        if let Some(scale) = self.embed_scale {
            hidden = (hidden * scale)?;
        }
        let cos_sin = self.rotary.cos_sin(&inputs.position_ids)?;
        let full_bias = inputs.attention_bias(None, &self.device)?;
        // Every sliding layer has the config's one `sliding_window`.
        let sliding_bias = match self.layers.iter().find_map(|layer| layer.window) {
            Some(window) => Some(inputs.attention_bias(Some(window), &self.device)?),
            None => None,
        };
        for layer in &self.layers {
            let bias = match (layer.window, &sliding_bias) {
                (Some(_), Some(sliding_bias)) => sliding_bias,
                _ => &full_bias,
            };
            let residual = hidden.clone();
            let attended = layer.self_attn.forward(
                &layer.input_layernorm.forward(&hidden)?,
                &self.rotary,
                &cos_sin,
                bias,
                cache,
            )?;
            hidden = (residual + attended)?;
            let residual = hidden.clone();
            let transformed = layer
                .mlp
                .forward(&layer.post_attention_layernorm.forward(&hidden)?)?;
            hidden = (residual + transformed)?;
        }
        let hidden = self.norm.forward(&hidden)?;
        self.lm_head.forward(&hidden)
    }
}
