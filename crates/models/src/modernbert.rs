//! ModernBERT (Warner et al., 2024, "Smarter, Better, Faster, Longer: A Modern Bidirectional
//! Encoder for Fast, Memory Efficient, and Long Context Finetuning and Inference"): a pre-norm
//! encoder with rotary positions, alternating global and sliding-window attention and a GeGLU
//! feed-forward block. The base model of answerdotai/ModernBERT-base and of the embedding
//! models built on it (nomic-ai/modernbert-embed-base, Alibaba-NLP/gte-modernbert-base).
//!
//! Follows Transformers' `models/modernbert/modeling_modernbert.py` (5.25), in its order, on the
//! shared encoder stack of [`crate::encoder`]:
//!
//! - `ModernBertEmbeddings`: `tok_embeddings`, then `norm` (a LayerNorm, with a bias only when
//!   `norm_bias`); no position or token-type embeddings.
//! - `ModernBertEncoderLayer`: pre-norm, `x + attn(attn_norm(x))` then `x + mlp(mlp_norm(x))`;
//!   layer 0's `attn_norm` is the identity (its checkpoint has none).
//! - `ModernBertAttention`: one fused `Wqkv` (rows q, k, v), rotate-half rotary on positions
//!   `0..len` with the base of the layer's type (`full_attention` or `sliding_attention`), and
//!   on sliding layers keys at most `local_attention / 2` away on either side (Transformers'
//!   `sliding_window`, `|i − j| ≤ local_attention // 2`), then `Wo`.
//! - `ModernBertMLP`: `Wi` gives `[input | gate]`; `Wo(act(input) · gate)` (the activated half
//!   is the first).
//! - `ModernBertModel`: the layers, then `final_norm`.
//!
//! Transformers 5 reads two spellings of the config, both written on the Hub: the legacy keys
//! (`global_attn_every_n_layers`, `global_rope_theta`, `local_rope_theta`, `rope_scaling`)
//! and its own (`layer_types`, `rope_parameters` per layer type); the second wins where both
//! are present, as in `ModernBertConfig.__post_init__` and `convert_rope_params_to_dict`.
//! Inputs run padded (the mask hides padding keys) or unpadded ([`EncoderModel::token_states`]);
//! Transformers' flash-attention path unpads the same way.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::attention::Attention;
use crate::bert::{EncoderEmbeddings, EncoderModel, check_encoder_sizes, parse_activation};
use crate::config::ModelConfig;
use crate::decoder::Mlp;
use crate::encoder::{
    Encoder, EncoderLayer, EncoderRotary, NormPlacement, RotaryFrequencies, inverse_frequencies,
};
use crate::error::{Error, Result};
use crate::layers::{Activation, Embedding, Linear, Norm};
use crate::weights::Weights;
use safeformers_kernels::rotary::RotaryPairs;

/// The kind of attention a layer runs (`layer_types` entries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerType {
    /// `full_attention`: every token sees every other (ModernBERT's global layers).
    FullAttention,
    /// `sliding_attention`: keys at most `local_attention / 2` away (the local layers).
    SlidingAttention,
}

impl LayerType {
    /// Both kinds.
    const ALL: [LayerType; 2] = [LayerType::FullAttention, LayerType::SlidingAttention];

    /// The `layer_types` / `rope_parameters` spelling.
    pub fn name(self) -> &'static str {
        match self {
            LayerType::FullAttention => "full_attention",
            LayerType::SlidingAttention => "sliding_attention",
        }
    }

    fn from_name(name: &str) -> Option<LayerType> {
        LayerType::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

mod defaults {
    pub(super) fn hidden_activation() -> String {
        "gelu".to_string()
    }
    pub(super) fn max_position_embeddings() -> usize {
        8192
    }
    pub(super) fn initializer_range() -> f64 {
        0.02
    }
    pub(super) fn initializer_cutoff_factor() -> f64 {
        2.0
    }
    pub(super) fn norm_eps() -> f64 {
        1e-5
    }
    pub(super) fn pad_token_id() -> Option<i64> {
        Some(50283)
    }
    pub(super) fn bos_token_id() -> Option<i64> {
        Some(50281)
    }
    pub(super) fn sep_token_id() -> Option<i64> {
        Some(50282)
    }
    pub(super) fn local_attention() -> usize {
        128
    }
    pub(super) fn yes() -> bool {
        true
    }
    pub(super) fn classifier_pooling() -> String {
        "cls".to_string()
    }
    pub(super) fn classifier_activation() -> String {
        "gelu".to_string()
    }
    pub(super) fn sparse_pred_ignore_index() -> i64 {
        -100
    }
    pub(super) fn global_attn_every_n_layers() -> usize {
        3
    }
    pub(super) fn global_rope_theta() -> f64 {
        160_000.0
    }
    pub(super) fn local_rope_theta() -> f64 {
        10_000.0
    }
}

/// `ModernBertConfig`: the `config.json` fields of ModernBERT, with Transformers' names and
/// defaults, plus the legacy keys Transformers 5 still reads (`global_attn_every_n_layers`,
/// `global_rope_theta`, `local_rope_theta`, `rope_scaling`).
///
/// As for BERT, the fields that fix tensor shapes have no default here: a config without them
/// is an error naming the field rather than a silent 768-wide model.
#[derive(Debug, Clone, Deserialize)]
pub struct ModernBertConfig {
    /// Number of token ids.
    pub vocab_size: usize,
    /// Width of every hidden state.
    pub hidden_size: usize,
    /// Width of the feed-forward block (`Wi` has twice as many outputs: input and gate).
    pub intermediate_size: usize,
    /// Number of layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer.
    pub num_attention_heads: usize,
    /// Activation of the feed-forward block's input half.
    #[serde(default = "defaults::hidden_activation")]
    pub hidden_activation: String,
    /// The longest sequence the model was made for (rotary positions have no table; longer
    /// inputs are refused as Transformers' tokenizer would truncate them).
    #[serde(default = "defaults::max_position_embeddings")]
    pub max_position_embeddings: usize,
    /// Initialisation (unused at inference).
    #[serde(default = "defaults::initializer_range")]
    pub initializer_range: f64,
    /// Initialisation (unused at inference).
    #[serde(default = "defaults::initializer_cutoff_factor")]
    pub initializer_cutoff_factor: f64,
    /// Epsilon of every LayerNorm (the legacy `layer_norm_eps` key is ignored, as in
    /// Transformers).
    #[serde(default = "defaults::norm_eps")]
    pub norm_eps: f64,
    /// Whether the LayerNorms have a bias.
    #[serde(default)]
    pub norm_bias: bool,
    /// The padding token (unused by the model's arithmetic).
    #[serde(default = "defaults::pad_token_id")]
    pub pad_token_id: Option<i64>,
    /// The beginning-of-sequence token (`[CLS]`).
    #[serde(default = "defaults::bos_token_id")]
    pub bos_token_id: Option<i64>,
    /// The classifier token.
    #[serde(default = "defaults::bos_token_id")]
    pub cls_token_id: Option<i64>,
    /// The separator token.
    #[serde(default = "defaults::sep_token_id")]
    pub sep_token_id: Option<i64>,
    /// Whether `Wqkv` and `Wo` have biases.
    #[serde(default)]
    pub attention_bias: bool,
    /// Attention dropout (unused at inference).
    #[serde(default)]
    pub attention_dropout: f64,
    /// `full_attention` or `sliding_attention` per layer (Transformers 5); when absent, from
    /// `global_attn_every_n_layers`.
    #[serde(default)]
    pub layer_types: Option<Vec<String>>,
    /// Rotary parameters per layer type (Transformers 5): `{"full_attention": {"rope_type",
    /// "rope_theta"}, "sliding_attention": {...}}`.
    #[serde(default)]
    pub rope_parameters: Option<Map<String, Value>>,
    /// The width of the sliding window, both sides together: a local layer's keys are at most
    /// `local_attention / 2` away.
    #[serde(default = "defaults::local_attention")]
    pub local_attention: usize,
    /// Embedding dropout (unused at inference).
    #[serde(default)]
    pub embedding_dropout: f64,
    /// Whether `Wi` and `Wo` of the feed-forward block have biases.
    #[serde(default)]
    pub mlp_bias: bool,
    /// Feed-forward dropout (unused at inference).
    #[serde(default)]
    pub mlp_dropout: f64,
    /// Whether the masked-LM decoder has a bias (head only).
    #[serde(default = "defaults::yes")]
    pub decoder_bias: bool,
    /// `cls` or `mean` (classification heads only).
    #[serde(default = "defaults::classifier_pooling")]
    pub classifier_pooling: String,
    /// Classifier dropout (unused at inference).
    #[serde(default)]
    pub classifier_dropout: f64,
    /// Whether the head's dense layer has a bias (heads only).
    #[serde(default)]
    pub classifier_bias: bool,
    /// The head's activation (heads only).
    #[serde(default = "defaults::classifier_activation")]
    pub classifier_activation: String,
    /// A flash-attention switch (no effect here).
    #[serde(default)]
    pub deterministic_flash_attn: bool,
    /// Masked-LM training option (no effect at inference).
    #[serde(default)]
    pub sparse_prediction: bool,
    /// Masked-LM training option (no effect at inference).
    #[serde(default = "defaults::sparse_pred_ignore_index")]
    pub sparse_pred_ignore_index: i64,
    /// Legacy: layer `i` is global when `i % global_attn_every_n_layers == 0` (used when
    /// `layer_types` is absent).
    #[serde(default = "defaults::global_attn_every_n_layers")]
    pub global_attn_every_n_layers: usize,
    /// Legacy: the rotary base of global layers (when `rope_parameters` does not give one).
    #[serde(default = "defaults::global_rope_theta")]
    pub global_rope_theta: f64,
    /// Legacy: the rotary base of local layers (when `rope_parameters` does not give one).
    #[serde(default = "defaults::local_rope_theta")]
    pub local_rope_theta: f64,
    /// Legacy: a rotary scaling merged into both layer types' parameters.
    #[serde(default)]
    pub rope_scaling: Option<Map<String, Value>>,
}

/// The fields [`ModernBertConfig`] requires.
const REQUIRED_FIELDS: &[&str] = &[
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
];

impl ModernBertConfig {
    /// Reads and checks the ModernBERT fields of `config`.
    pub fn from_model_config(config: &ModelConfig) -> Result<ModernBertConfig> {
        let modern: ModernBertConfig = config.architecture_config(REQUIRED_FIELDS)?;
        modern.validate(config)?;
        Ok(modern)
    }

    fn validate(&self, config: &ModelConfig) -> Result<()> {
        check_encoder_sizes(
            config,
            &[
                ("vocab_size", self.vocab_size),
                ("intermediate_size", self.intermediate_size),
                ("num_hidden_layers", self.num_hidden_layers),
                ("max_position_embeddings", self.max_position_embeddings),
            ],
            ("hidden_size", self.hidden_size),
            ("num_attention_heads", self.num_attention_heads),
        )?;
        if !self.head_dim().is_multiple_of(2) {
            return Err(config.invalid_field(
                "num_attention_heads",
                &format!(
                    "heads of {} values cannot be rotated in halves (hidden_size {} / {} heads)",
                    self.head_dim(),
                    self.hidden_size,
                    self.num_attention_heads
                ),
            ));
        }
        if !(self.norm_eps.is_finite() && self.norm_eps > 0.0) {
            return Err(config.invalid_field("norm_eps", "must be a positive number"));
        }
        self.activation(config)?;
        if let Some(key) = self
            .rope_parameters
            .iter()
            .flat_map(Map::keys)
            .find(|key| LayerType::from_name(key).is_none())
        {
            return Err(config.invalid_field(
                "rope_parameters",
                &format!("`{key}` is not a layer type (full_attention, sliding_attention)"),
            ));
        }
        for kind in self.layer_types(config)? {
            self.rope_theta(config, kind)?;
        }
        Ok(())
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads.max(1)
    }

    /// How far a sliding layer's keys reach on each side (Transformers' `sliding_window`).
    pub fn window_radius(&self) -> usize {
        self.local_attention / 2
    }

    /// The parsed `hidden_activation`.
    pub(crate) fn activation(&self, config: &ModelConfig) -> Result<Activation> {
        parse_activation(config, "hidden_activation", &self.hidden_activation)
    }

    /// Each layer's type: `layer_types` when given (one per layer), else every
    /// `global_attn_every_n_layers`-th layer global from layer 0, the others sliding.
    pub fn layer_types(&self, config: &ModelConfig) -> Result<Vec<LayerType>> {
        let Some(names) = &self.layer_types else {
            let every = self.global_attn_every_n_layers;
            if every == 0 {
                return Err(config.invalid_field("global_attn_every_n_layers", "must be positive"));
            }
            return Ok((0..self.num_hidden_layers)
                .map(|layer| match layer % every {
                    0 => LayerType::FullAttention,
                    _ => LayerType::SlidingAttention,
                })
                .collect());
        };
        if names.len() != self.num_hidden_layers {
            return Err(config.invalid_field(
                "layer_types",
                &format!(
                    "{} entries for num_hidden_layers {}",
                    names.len(),
                    self.num_hidden_layers
                ),
            ));
        }
        names
            .iter()
            .map(|name| {
                LayerType::from_name(name).ok_or_else(|| {
                    config.invalid_field(
                        "layer_types",
                        &format!("`{name}` is not full_attention or sliding_attention"),
                    )
                })
            })
            .collect()
    }

    /// The rotary base of layers of type `kind`: `rope_parameters[kind].rope_theta`, else the
    /// legacy `global_rope_theta` / `local_rope_theta` (or their defaults). Only the `default`
    /// rotary type (no scaling) is implemented.
    pub fn rope_theta(&self, config: &ModelConfig, kind: LayerType) -> Result<f64> {
        let field = "rope_parameters";
        let parameters = match self
            .rope_parameters
            .as_ref()
            .and_then(|p| p.get(kind.name()))
        {
            None | Some(Value::Null) => None,
            Some(Value::Object(parameters)) => Some(parameters),
            Some(_) => {
                return Err(
                    config.invalid_field(field, &format!("`{}` must be an object", kind.name()))
                );
            }
        };
        // `rope_scaling` is merged over the per-type parameters, as Transformers does; `type` is
        // the older spelling of `rope_type`.
        let entry = |keys: &[&str]| {
            [self.rope_scaling.as_ref(), parameters]
                .into_iter()
                .flatten()
                .flat_map(|source| keys.iter().filter_map(|key| source.get(*key)))
                .find(|value| !value.is_null())
        };
        let rope_type = match entry(&["rope_type", "type"]) {
            None => "default",
            Some(Value::String(name)) => name.as_str(),
            Some(_) => return Err(config.invalid_field(field, "`rope_type` must be a string")),
        };
        if rope_type != "default" {
            return Err(Error::UnsupportedFeature {
                path: config.path().to_path_buf(),
                what: format!(
                    "rotary type `{rope_type}` on {} layers (only `default`)",
                    kind.name()
                ),
            });
        }
        let (theta, field) = match entry(&["rope_theta"]) {
            None => match kind {
                LayerType::FullAttention => (self.global_rope_theta, "global_rope_theta"),
                LayerType::SlidingAttention => (self.local_rope_theta, "local_rope_theta"),
            },
            Some(value) => (
                value.as_f64().ok_or_else(|| {
                    config.invalid_field(
                        field,
                        &format!("`{}.rope_theta` must be a number", kind.name()),
                    )
                })?,
                field,
            ),
        };
        if !(theta.is_finite() && theta > 0.0) {
            return Err(config.invalid_field(
                field,
                &format!("the rotary base of {} layers is {theta}", kind.name()),
            ));
        }
        Ok(theta)
    }
}

/// `ModernBertModel`: the shared encoder base model, built from ModernBERT's parts (no pooler).
pub type ModernBertModel = EncoderModel;

/// The tensors that tell where the base model is in a checkpoint.
const PROBE: &str = "embeddings.tok_embeddings.weight";

/// Loads `ModernBertModel` from `root`: at the root (saved from `ModernBertModel`, as the
/// embedding models are) or under `model.` (saved from a `ModernBertFor*` head model, as
/// answerdotai/ModernBERT-base is).
pub fn load(root: &Weights<'_>, config: &ModelConfig) -> Result<ModernBertModel> {
    let modern = ModernBertConfig::from_model_config(config)?;
    let weights = if root.contains(PROBE) {
        root.clone()
    } else {
        root.pp("model")
    };
    let embeddings = load_embeddings(&weights.pp("embeddings"), &modern)?;
    let encoder = load_encoder(&weights, config, &modern)?;
    Ok(EncoderModel::from_parts(
        embeddings,
        encoder,
        modern.vocab_size,
        1,
        modern.max_position_embeddings,
    ))
}

/// A LayerNorm as ModernBERT has them: with a bias only when `norm_bias`.
fn layer_norm(weights: &Weights<'_>, modern: &ModernBertConfig) -> Result<Norm> {
    Norm::load_layer_norm_optional_bias(
        weights,
        modern.hidden_size,
        modern.norm_eps,
        modern.norm_bias,
    )
}

/// `ModernBertEmbeddings`: `tok_embeddings`, then `norm`.
fn load_embeddings(weights: &Weights<'_>, modern: &ModernBertConfig) -> Result<EncoderEmbeddings> {
    let words = Embedding::load(
        &weights.pp("tok_embeddings"),
        modern.vocab_size,
        modern.hidden_size,
    )?;
    Ok(EncoderEmbeddings::new(
        words,
        None,
        None,
        layer_norm(&weights.pp("norm"), modern)?,
    ))
}

/// The layers (`layers.{i}`), one rotary embedding per layer type in use (as
/// `ModernBertRotaryEmbedding` keeps one per type), and `final_norm`.
fn load_encoder(
    weights: &Weights<'_>,
    config: &ModelConfig,
    modern: &ModernBertConfig,
) -> Result<Encoder> {
    let layer_types = modern.layer_types(config)?;
    let used: Vec<LayerType> = LayerType::ALL
        .into_iter()
        .filter(|kind| layer_types.contains(kind))
        .collect();
    let rotaries = used
        .iter()
        .map(|&kind| {
            Ok(EncoderRotary {
                frequencies: RotaryFrequencies::Fixed(inverse_frequencies(
                    modern.rope_theta(config, kind)?,
                    modern.head_dim(),
                )),
                pairs: RotaryPairs::Halves,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let activation = modern.activation(config)?;
    let layers = layer_types
        .into_iter()
        .enumerate()
        .map(|(index, kind)| {
            let mut layer = load_layer(
                &weights.pp(&format!("layers.{index}")),
                modern,
                index,
                kind,
                activation,
            )?;
            layer.rotary = used.iter().position(|&used| used == kind);
            Ok(layer)
        })
        .collect::<Result<Vec<_>>>()?;
    let final_norm = layer_norm(&weights.pp("final_norm"), modern)?;
    Encoder::new(layers, rotaries, None, Some(final_norm))
}

/// `ModernBertEncoderLayer` `index` of type `kind`: `attn_norm` (none on layer 0), `attn`,
/// `mlp_norm`, `mlp`.
fn load_layer(
    weights: &Weights<'_>,
    modern: &ModernBertConfig,
    index: usize,
    kind: LayerType,
    activation: Activation,
) -> Result<EncoderLayer> {
    let hidden = modern.hidden_size;
    let inner = modern.intermediate_size;
    let linear = |name: &str, inputs: usize, outputs: usize, bias: bool| {
        Linear::load_optional_bias(&weights.pp(name), inputs, outputs, bias)
    };
    let attention = Attention::bidirectional(
        linear("attn.Wqkv", hidden, 3 * hidden, modern.attention_bias)?,
        linear("attn.Wo", hidden, hidden, modern.attention_bias)?,
        modern.num_attention_heads,
        1.0 / (modern.head_dim() as f64).sqrt(),
    )?;
    let attention = match kind {
        LayerType::FullAttention => attention,
        LayerType::SlidingAttention => attention.with_window_radius(modern.window_radius()),
    };
    let attention_norm = match index {
        0 => None,
        _ => Some(layer_norm(&weights.pp("attn_norm"), modern)?),
    };
    // `Wi`'s rows are [input | gate] and the input half is activated: the order `Mlp::gated`
    // takes.
    let mlp = Mlp::gated(
        linear("mlp.Wi", hidden, 2 * inner, modern.mlp_bias)?,
        linear("mlp.Wo", inner, hidden, modern.mlp_bias)?,
        activation,
    )?;
    Ok(EncoderLayer {
        attention,
        attention_norm,
        mlp,
        mlp_norm: layer_norm(&weights.pp("mlp_norm"), modern)?,
        placement: NormPlacement::Pre,
        // Set by the encoder, which knows which rotary embeddings it keeps.
        rotary: None,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn parse(extra: &str) -> Result<(ModelConfig, ModernBertConfig)> {
        let text = format!(
            r#"{{"model_type":"modernbert","vocab_size":10,"hidden_size":12,
                "intermediate_size":8,"num_hidden_layers":4,"num_attention_heads":3{extra}}}"#
        );
        let config = ModelConfig::from_json_str(&text, Path::new("config.json"))?;
        let modern = ModernBertConfig::from_model_config(&config)?;
        Ok((config, modern))
    }

    fn invalid_field(result: Result<(ModelConfig, ModernBertConfig)>) -> String {
        match result {
            Err(Error::InvalidConfigField { field, .. }) => field,
            other => panic!("expected an invalid field, got {other:?}"),
        }
    }

    #[test]
    fn legacy_keys_give_layer_types_and_bases() -> Result<()> {
        let (config, modern) = parse("")?;
        use LayerType::{FullAttention as Full, SlidingAttention as Sliding};
        assert_eq!(modern.layer_types(&config)?, [Full, Sliding, Sliding, Full]);
        assert_eq!(modern.rope_theta(&config, Full)?, 160_000.0);
        assert_eq!(modern.rope_theta(&config, Sliding)?, 10_000.0);
        assert_eq!(modern.window_radius(), 64);
        let (config, modern) = parse(
            r#","global_attn_every_n_layers":2,"global_rope_theta":500,"local_rope_theta":50.0,
               "local_attention":9"#,
        )?;
        assert_eq!(modern.layer_types(&config)?, [Full, Sliding, Full, Sliding]);
        assert_eq!(modern.rope_theta(&config, Full)?, 500.0);
        assert_eq!(modern.rope_theta(&config, Sliding)?, 50.0);
        assert_eq!(modern.window_radius(), 4);
        Ok(())
    }

    #[test]
    fn transformers_5_keys_win_over_legacy_ones() -> Result<()> {
        use LayerType::{FullAttention as Full, SlidingAttention as Sliding};
        let (config, modern) = parse(
            r#","global_attn_every_n_layers":2,"global_rope_theta":500,"local_rope_theta":50,
               "layer_types":["sliding_attention","full_attention","full_attention","sliding_attention"],
               "rope_parameters":{"full_attention":{"rope_type":"default","rope_theta":7.0},
                                  "sliding_attention":null}"#,
        )?;
        assert_eq!(modern.layer_types(&config)?, [Sliding, Full, Full, Sliding]);
        assert_eq!(modern.rope_theta(&config, Full)?, 7.0);
        // A type the parameters leave out takes the legacy base.
        assert_eq!(modern.rope_theta(&config, Sliding)?, 50.0);
        Ok(())
    }

    #[test]
    fn bad_configs_are_refused_naming_the_field() {
        for (extra, field) in [
            (r#","layer_types":["full_attention"]"#, "layer_types"),
            (
                r#","layer_types":["full_attention","x","full_attention","full_attention"]"#,
                "layer_types",
            ),
            (
                r#","global_attn_every_n_layers":0"#,
                "global_attn_every_n_layers",
            ),
            (
                r#","rope_parameters":{"rope_type":"default","rope_theta":5.0}"#,
                "rope_parameters",
            ),
            (
                r#","rope_parameters":{"full_attention":{"rope_theta":"big"}}"#,
                "rope_parameters",
            ),
            (r#","global_rope_theta":0"#, "global_rope_theta"),
            (r#","hidden_activation":"gelu_fancy""#, "hidden_activation"),
            (r#","num_attention_heads":5"#, "num_attention_heads"),
            // 12 / 4 heads = 3 values a head: no rotate-half.
            (r#","num_attention_heads":4"#, "num_attention_heads"),
            (r#","norm_eps":0"#, "norm_eps"),
        ] {
            assert_eq!(invalid_field(parse(extra)), field, "{extra}");
        }
        for missing in REQUIRED_FIELDS {
            let mut raw: Map<String, Value> = serde_json::from_str(
                r#"{"model_type":"modernbert","vocab_size":10,"hidden_size":12,
                    "intermediate_size":8,"num_hidden_layers":4,"num_attention_heads":3}"#,
            )
            .unwrap_or_default();
            raw.remove(*missing);
            let text = Value::Object(raw).to_string();
            let result = ModelConfig::from_json_str(&text, Path::new("config.json"))
                .and_then(|config| ModernBertConfig::from_model_config(&config));
            assert!(
                matches!(result, Err(Error::MissingConfigField { field, .. }) if field == *missing),
                "{missing}"
            );
        }
    }

    #[test]
    fn rotary_scaling_is_unsupported_not_ignored() {
        for extra in [
            r#","rope_scaling":{"rope_type":"yarn","factor":4.0}"#,
            r#","rope_parameters":{"sliding_attention":{"rope_type":"linear","factor":2.0}}"#,
            r#","rope_parameters":{"full_attention":{"rope_type":"default"}},
               "rope_scaling":{"type":"dynamic","factor":2.0}"#,
        ] {
            assert!(
                matches!(parse(extra), Err(Error::UnsupportedFeature { .. })),
                "{extra}"
            );
        }
    }
}
