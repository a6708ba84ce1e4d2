//! Rotary position embeddings (RoPE; Su et al., 2021, "RoFormer: Enhanced Transformer with
//! Rotary Position Embedding") with every frequency scaling Transformers 5 offers the Llama
//! family: `default`, `linear`, `dynamic` (NTK), `llama3`, `yarn` and Phi-3's `longrope`.
//!
//! Follows Transformers' `modeling_rope_utils.py`: [`RopeParameters::from_config`] reads the
//! Transformers-4 spelling (`rope_scaling` with `type` or `rope_type`, top-level `rope_theta` and
//! `partial_rotary_factor`) and the 5 one (`rope_parameters`) into one value, with the same
//! precedence and defaults; [`RotaryEmbedding`] computes the inverse frequencies the same way
//! (in f32, like the PyTorch code) and turns `position_ids` into `cos`/`sin`.
//!
//! `dynamic` and `longrope` depend on the sequence length, which Transformers reads as
//! `max(position_ids) + 1` on every forward. Transformers keeps the grown `dynamic` frequencies
//! in module state; here they are recomputed from each call's positions, which gives the same
//! numbers whenever positions only grow (prefill, then one token at a time) or fall back within
//! the original length — the ways generation calls a model.

use candle_core::{DType, Device, Tensor};
use serde_json::{Map, Value};

use crate::config::ModelConfig;
use crate::error::{Error, Result};

/// The frequency scaling of a rotary embedding (`rope_type`), with its parameters.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// `default`: `θ^(-2i/d)`.
    Default,
    /// `linear`: every frequency divided by `factor` (position interpolation).
    Linear {
        /// The divisor.
        factor: f64,
    },
    /// `dynamic`: NTK-aware scaling of the base once the sequence passes
    /// `max_position_embeddings`.
    Dynamic {
        /// The scaling factor.
        factor: f64,
    },
    /// `llama3`: low frequencies divided by `factor`, high ones kept, a smooth ramp between.
    Llama3 {
        /// The divisor of low frequencies.
        factor: f64,
        /// Wavelengths above `original / low_freq_factor` are scaled.
        low_freq_factor: f64,
        /// Wavelengths below `original / high_freq_factor` are kept.
        high_freq_factor: f64,
        /// The pretraining context length.
        original_max_position_embeddings: f64,
    },
    /// `yarn` (Peng et al., 2023): interpolation and extrapolation blended by a ramp between
    /// the `beta_fast` and `beta_slow` correction dimensions, and an attention factor on
    /// `cos`/`sin`.
    Yarn {
        /// The context extension factor.
        factor: f64,
        /// Multiplier of `cos`/`sin`; derived from `factor` (and `mscale`) when `None`.
        attention_factor: Option<f64>,
        /// `mscale` (DeepSeek-style attention factor), if set.
        mscale: Option<f64>,
        /// `mscale_all_dim`, if set.
        mscale_all_dim: Option<f64>,
        /// Rotations at the fast end of the ramp (default 32).
        beta_fast: f64,
        /// Rotations at the slow end of the ramp (default 1).
        beta_slow: f64,
        /// Whether the correction range is rounded outwards to whole dimensions (default true).
        truncate: bool,
        /// The pretraining context length.
        original_max_position_embeddings: f64,
    },
    /// `longrope` (Phi-3): per-frequency divisors, `short_factor` within the original context
    /// and `long_factor` beyond it.
    LongRope {
        /// Divisors used while the sequence fits the original context.
        short_factor: Vec<f64>,
        /// Divisors used once it does not.
        long_factor: Vec<f64>,
        /// Multiplier of `cos`/`sin`; derived from the context ratio when `None`.
        attention_factor: Option<f64>,
        /// The context extension factor (`max_position_embeddings / original` when `None`).
        factor: Option<f64>,
        /// The pretraining context length.
        original_max_position_embeddings: usize,
    },
}

impl RopeScaling {
    /// The `rope_type` spelling.
    pub fn rope_type(&self) -> &'static str {
        match self {
            RopeScaling::Default => "default",
            RopeScaling::Linear { .. } => "linear",
            RopeScaling::Dynamic { .. } => "dynamic",
            RopeScaling::Llama3 { .. } => "llama3",
            RopeScaling::Yarn { .. } => "yarn",
            RopeScaling::LongRope { .. } => "longrope",
        }
    }
}

/// The `rope_type` values [`RopeParameters::from_config`] accepts.
pub const ROPE_TYPES: &[&str] = &["default", "linear", "dynamic", "llama3", "yarn", "longrope"];

/// How a model's config asks for rotary embeddings.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeParameters {
    /// The base `θ` (`rope_theta`, default 10000).
    pub theta: f64,
    /// The fraction of each head that is rotated (`partial_rotary_factor`, default 1).
    pub partial_rotary_factor: f64,
    /// The frequency scaling.
    pub scaling: RopeScaling,
}

/// Model-specific rules for reading rotary parameters.
#[derive(Debug, Clone, Copy, Default)]
pub struct RopeConfigRules {
    /// Phi-3: a top-level `original_max_position_embeddings` (a declared field, default 4096)
    /// overrides the one in the rope dict, and the old `su` / `yarn` types mean `longrope`.
    pub phi3: bool,
}

impl RopeParameters {
    /// Reads `rope_parameters` / `rope_scaling`, `rope_theta` and `partial_rotary_factor` from
    /// `config` as Transformers 5 standardises them; `max_position_embeddings` is the model's.
    ///
    /// Unknown `rope_type`s, missing or non-positive factors and factor lists of the wrong
    /// length are [`Error::InvalidConfigField`] / [`Error::MissingConfigField`] naming the field.
    pub fn from_config(
        config: &ModelConfig,
        max_position_embeddings: usize,
        head_dim: usize,
        rules: RopeConfigRules,
    ) -> Result<RopeParameters> {
        let (field, dict) = rope_dict(config)?;
        let reader = RopeDict {
            config,
            field,
            dict: &dict,
        };
        if ["full_attention", "sliding_attention"]
            .iter()
            .any(|key| dict.get(*key).is_some_and(Value::is_object))
        {
            return Err(Error::UnsupportedFeature {
                path: config.path().to_path_buf(),
                what: format!("per-layer-type `{field}`"),
            });
        }

        // The dict's value wins over the top-level one; errors name where the value came from.
        let dict_or_top = |key: &str, default: f64| -> Result<(f64, String)> {
            if let Some(value) = reader.number(key)? {
                return Ok((value, format!("{field}.{key}")));
            }
            Ok((
                top_level_number(config, key)?.unwrap_or(default),
                key.to_string(),
            ))
        };
        let (theta, theta_field) = dict_or_top("rope_theta", 10_000.0)?;
        if !(theta.is_finite() && theta > 1.0) {
            return Err(
                config.invalid_field(&theta_field, &format!("{theta} is not a base above 1"))
            );
        }
        let (partial_rotary_factor, partial_field) = dict_or_top("partial_rotary_factor", 1.0)?;
        if !(partial_rotary_factor > 0.0 && partial_rotary_factor <= 1.0) {
            return Err(config.invalid_field(
                &partial_field,
                &format!("{partial_rotary_factor} is not in (0, 1]"),
            ));
        }
        let rotary_dim = rotary_dim(head_dim, partial_rotary_factor);
        if rotary_dim < 2 || !rotary_dim.is_multiple_of(2) {
            return Err(config.invalid_field(
                &partial_field,
                &format!(
                    "rotates {rotary_dim} of {head_dim} dimensions; an even number of at least 2 \
                     is needed"
                ),
            ));
        }

        let rope_type = rope_type_name(&reader, rules)?;
        // Transformers moves the pretraining length into the dict for these types; Phi-3's
        // declared top-level field wins over the dict.
        let original_max = || -> Result<f64> {
            if rules.phi3 {
                let top = top_level_number(config, "original_max_position_embeddings")?;
                return Ok(top.unwrap_or(4096.0));
            }
            Ok(reader
                .number("original_max_position_embeddings")?
                .unwrap_or(max_position_embeddings as f64))
        };

        let scaling = rope_scaling(
            &reader,
            &rope_type,
            rotary_dim,
            original_max,
            max_position_embeddings,
        )?;
        Ok(RopeParameters {
            theta,
            partial_rotary_factor,
            scaling,
        })
    }
}

/// Transformers' `rope_scaling or rope_parameters` (a null or empty dict counts as absent):
/// the field it came from and the dict.
fn rope_dict(config: &ModelConfig) -> Result<(&'static str, Map<String, Value>)> {
    let raw = config.raw();
    Ok(
        match (raw.get("rope_scaling"), raw.get("rope_parameters")) {
            (Some(Value::Object(dict)), _) if !dict.is_empty() => ("rope_scaling", dict.clone()),
            (Some(Value::Object(_)) | None | Some(Value::Null), Some(Value::Object(dict))) => {
                ("rope_parameters", dict.clone())
            }
            (Some(Value::Object(_)) | None | Some(Value::Null), None | Some(Value::Null)) => {
                ("rope_parameters", Map::new())
            }
            (Some(Value::Object(_)) | None | Some(Value::Null), Some(_)) => {
                return Err(config.invalid_field("rope_parameters", "must be an object"));
            }
            (Some(_), _) => {
                return Err(config.invalid_field("rope_scaling", "must be an object"));
            }
        },
    )
}

/// The `rope_type` (or legacy `type`) named in the dict, `default` when none; Phi-3's
/// aliases mapped and its limits applied.
fn rope_type_name(reader: &RopeDict<'_>, rules: RopeConfigRules) -> Result<String> {
    let dict = reader.dict;
    let mut rope_type = match (dict.get("rope_type"), dict.get("type")) {
        (Some(Value::String(name)), _) | (None | Some(Value::Null), Some(Value::String(name))) => {
            name.clone()
        }
        (None | Some(Value::Null), None | Some(Value::Null)) => "default".to_string(),
        _ => return Err(reader.invalid("rope_type", "must be a string")),
    };
    if rules.phi3 {
        if rope_type == "su" || rope_type == "yarn" {
            rope_type = "longrope".to_string();
        }
        // Phi3Config.validate_rope accepts nothing else.
        if rope_type != "default" && rope_type != "longrope" {
            return Err(reader.invalid(
                "rope_type",
                &format!("`{rope_type}` is not default or longrope (the Phi-3 rope types)"),
            ));
        }
    }
    Ok(rope_type)
}

/// The scaling of `rope_type` with its parameters from the dict, each checked.
fn rope_scaling(
    reader: &RopeDict<'_>,
    rope_type: &str,
    rotary_dim: usize,
    original_max: impl Fn() -> Result<f64>,
    max_position_embeddings: usize,
) -> Result<RopeScaling> {
    let dict = reader.dict;
    Ok(match rope_type {
        "default" => RopeScaling::Default,
        "linear" => RopeScaling::Linear {
            factor: reader.factor("factor")?,
        },
        "dynamic" => {
            // The NTK exponent is `dim / (dim - 2)`.
            if rotary_dim <= 2 {
                return Err(reader.invalid(
                    "rope_type",
                    &format!("`dynamic` needs more than 2 rotated dimensions, not {rotary_dim}"),
                ));
            }
            RopeScaling::Dynamic {
                factor: reader.factor("factor")?,
            }
        }
        "llama3" => {
            let low_freq_factor = reader.factor("low_freq_factor")?;
            let high_freq_factor = reader.factor("high_freq_factor")?;
            if high_freq_factor <= low_freq_factor {
                return Err(reader.invalid(
                    "high_freq_factor",
                    &format!(
                        "{high_freq_factor} must be larger than low_freq_factor \
                         {low_freq_factor}"
                    ),
                ));
            }
            RopeScaling::Llama3 {
                factor: reader.factor("factor")?,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: positive(
                    reader,
                    "original_max_position_embeddings",
                    original_max()?,
                )?,
            }
        }
        "yarn" => {
            let original = positive(reader, "original_max_position_embeddings", original_max()?)?;
            let factor = match reader.number("factor")? {
                Some(factor) => positive(reader, "factor", factor)?,
                None => max_position_embeddings as f64 / original,
            };
            let beta_fast = optional_positive(reader, "beta_fast")?.unwrap_or(32.0);
            let beta_slow = optional_positive(reader, "beta_slow")?.unwrap_or(1.0);
            let truncate = match dict.get("truncate") {
                None | Some(Value::Null) => true,
                Some(Value::Bool(truncate)) => *truncate,
                Some(_) => return Err(reader.invalid("truncate", "must be a boolean")),
            };
            RopeScaling::Yarn {
                factor,
                attention_factor: optional_positive(reader, "attention_factor")?,
                mscale: reader.number("mscale")?,
                mscale_all_dim: reader.number("mscale_all_dim")?,
                beta_fast,
                beta_slow,
                truncate,
                original_max_position_embeddings: original,
            }
        }
        "longrope" => {
            let original = positive(reader, "original_max_position_embeddings", original_max()?)?;
            let frequencies = rotary_dim / 2;
            RopeScaling::LongRope {
                short_factor: reader.factor_list("short_factor", frequencies)?,
                long_factor: reader.factor_list("long_factor", frequencies)?,
                attention_factor: optional_positive(reader, "attention_factor")?,
                factor: optional_positive(reader, "factor")?,
                // A whole number of positions: the switch compares it with an integer.
                original_max_position_embeddings: original as usize,
            }
        }
        other => {
            return Err(reader.invalid(
                "rope_type",
                &format!("`{other}` is not one of {}", ROPE_TYPES.join(", ")),
            ));
        }
    })
}

/// `int(head_dim * partial_rotary_factor)`, as Transformers computes the rotated width.
fn rotary_dim(head_dim: usize, partial_rotary_factor: f64) -> usize {
    let dim = (head_dim as f64 * partial_rotary_factor).floor();
    if dim <= 0.0 { 0 } else { dim as usize }
}

fn top_level_number(config: &ModelConfig, field: &str) -> Result<Option<f64>> {
    match config.raw().get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value
            .as_f64()
            .map(Some)
            .ok_or_else(|| config.invalid_field(field, "must be a number")),
    }
}

fn positive(reader: &RopeDict<'_>, key: &str, value: f64) -> Result<f64> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(reader.invalid(key, &format!("{value} is not a positive number")))
    }
}

fn optional_positive(reader: &RopeDict<'_>, key: &str) -> Result<Option<f64>> {
    reader
        .number(key)?
        .map(|value| positive(reader, key, value))
        .transpose()
}

/// The rope dict being read, for errors that name `rope_scaling.factor` and the like.
struct RopeDict<'a> {
    config: &'a ModelConfig,
    field: &'static str,
    dict: &'a Map<String, Value>,
}

impl RopeDict<'_> {
    fn invalid(&self, key: &str, reason: &str) -> Error {
        self.config
            .invalid_field(&format!("{}.{key}", self.field), reason)
    }

    fn number(&self, key: &str) -> Result<Option<f64>> {
        match self.dict.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => value
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.invalid(key, "must be a number")),
        }
    }

    /// A required positive number.
    fn factor(&self, key: &str) -> Result<f64> {
        match self.number(key)? {
            Some(value) => positive(self, key, value),
            None => Err(self.invalid(
                key,
                &format!(
                    "is required for rope_type `{}`",
                    self.dict
                        .get("rope_type")
                        .or_else(|| self.dict.get("type"))
                        .and_then(Value::as_str)
                        .unwrap_or("?")
                ),
            )),
        }
    }

    fn factor_list(&self, key: &str, len: usize) -> Result<Vec<f64>> {
        let items = match self.dict.get(key) {
            Some(Value::Array(items)) => items,
            None | Some(Value::Null) => {
                return Err(self.invalid(key, "is required for rope_type `longrope`"));
            }
            Some(_) => return Err(self.invalid(key, "must be a list of numbers")),
        };
        if items.len() != len {
            return Err(self.invalid(
                key,
                &format!(
                    "has {} entries; the rotary dimension needs {len}",
                    items.len()
                ),
            ));
        }
        items
            .iter()
            .map(|item| {
                item.as_f64()
                    .filter(|value| value.is_finite() && *value > 0.0)
                    .ok_or_else(|| self.invalid(key, "must be a list of positive numbers"))
            })
            .collect()
    }
}

/// A rotary embedding for heads of `head_dim`, its first `rotary_dim` dimensions rotated.
#[derive(Debug, Clone)]
pub struct RotaryEmbedding {
    parameters: RopeParameters,
    rotary_dim: usize,
    max_position_embeddings: usize,
    /// The frequencies used up to the original context (`original_inv_freq`).
    inv_freq: Vec<f32>,
    attention_scaling: f32,
    device: Device,
}

impl RotaryEmbedding {
    /// Precomputes the frequencies for `parameters` (from [`RopeParameters::from_config`]).
    pub fn new(
        parameters: RopeParameters,
        head_dim: usize,
        max_position_embeddings: usize,
        device: &Device,
    ) -> Result<RotaryEmbedding> {
        let rotary_dim = rotary_dim(head_dim, parameters.partial_rotary_factor);
        let mut embedding = RotaryEmbedding {
            parameters,
            rotary_dim,
            max_position_embeddings,
            inv_freq: Vec::new(),
            attention_scaling: 1.0,
            device: device.clone(),
        };
        let (inv_freq, attention_scaling) = embedding.frequencies(None);
        embedding.inv_freq = inv_freq;
        embedding.attention_scaling = attention_scaling;
        Ok(embedding)
    }

    /// The number of rotated dimensions of each head (even).
    pub fn rotary_dim(&self) -> usize {
        self.rotary_dim
    }

    /// The parameters this embedding was built from.
    pub fn parameters(&self) -> &RopeParameters {
        &self.parameters
    }

    /// The inverse frequencies and the `cos`/`sin` multiplier used for a sequence of `seq_len`
    /// positions (`max(position_ids) + 1`).
    pub fn inv_freq_for(&self, seq_len: usize) -> (Vec<f32>, f32) {
        match &self.parameters.scaling {
            RopeScaling::Dynamic { .. } if seq_len > self.max_position_embeddings => {
                self.frequencies(Some(seq_len))
            }
            RopeScaling::LongRope {
                original_max_position_embeddings,
                ..
            } if seq_len > *original_max_position_embeddings => self.frequencies(Some(seq_len)),
            _ => (self.inv_freq.clone(), self.attention_scaling),
        }
    }

    /// Transformers' `rope_init_fn(config, seq_len)` for this embedding's type.
    fn frequencies(&self, seq_len: Option<usize>) -> (Vec<f32>, f32) {
        let dim = self.rotary_dim;
        let theta = self.parameters.theta;
        let default = inverse_frequencies(theta, dim);
        // `base ** (arange(0, dim, 2) / dim)` in float32 (YaRN and LongRoPE divide by it).
        let powers = |base: f64| -> Vec<f32> {
            (0..dim / 2)
                .map(|i| (base as f32).powf((2 * i) as f32 / dim as f32))
                .collect()
        };
        match &self.parameters.scaling {
            RopeScaling::Default => (default, 1.0),
            RopeScaling::Linear { factor } => (
                default.iter().map(|freq| freq / *factor as f32).collect(),
                1.0,
            ),
            RopeScaling::Dynamic { factor } => {
                let max = self.max_position_embeddings;
                let seq = seq_len.map_or(max, |seq| seq.max(max));
                let base = dynamic_ntk_base(theta, *factor, seq, max, dim);
                (inverse_frequencies(base, dim), 1.0)
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => (
                llama3_frequencies(
                    &default,
                    *factor as f32,
                    *low_freq_factor as f32,
                    *high_freq_factor as f32,
                    *original_max_position_embeddings as f32,
                ),
                1.0,
            ),
            RopeScaling::Yarn { .. } => self.yarn_frequencies(&powers(theta)),
            RopeScaling::LongRope {
                short_factor,
                long_factor,
                attention_factor,
                factor,
                original_max_position_embeddings,
            } => {
                let original = *original_max_position_embeddings as f64;
                let factor = factor.unwrap_or(self.max_position_embeddings as f64 / original);
                let attention = attention_factor.unwrap_or_else(|| {
                    if factor <= 1.0 {
                        1.0
                    } else {
                        (1.0 + factor.ln() / original.ln()).sqrt()
                    }
                });
                let long = seq_len.is_some_and(|seq| seq > *original_max_position_embeddings);
                let ext = if long { long_factor } else { short_factor };
                let inv_freq = powers(theta)
                    .iter()
                    .zip(ext)
                    .map(|(power, ext)| 1.0 / (*ext as f32 * power))
                    .collect();
                (inv_freq, attention as f32)
            }
        }
    }

    fn yarn_frequencies(&self, pos_freqs: &[f32]) -> (Vec<f32>, f32) {
        let RopeScaling::Yarn {
            factor,
            attention_factor,
            mscale,
            mscale_all_dim,
            beta_fast,
            beta_slow,
            truncate,
            original_max_position_embeddings,
        } = &self.parameters.scaling
        else {
            return (Vec::new(), 1.0);
        };
        let get_mscale = |scale: f64, mscale: f64| {
            if scale <= 1.0 {
                1.0
            } else {
                0.1 * mscale * scale.ln() + 1.0
            }
        };
        let attention = match (attention_factor, mscale, mscale_all_dim) {
            (Some(attention), _, _) => *attention,
            // Python truthiness: a zero `mscale` or `mscale_all_dim` falls back.
            (None, Some(mscale), Some(all)) if *mscale != 0.0 && *all != 0.0 => {
                get_mscale(*factor, *mscale) / get_mscale(*factor, *all)
            }
            (None, _, _) => get_mscale(*factor, 1.0),
        };
        let dim = self.rotary_dim as f64;
        let base = self.parameters.theta;
        let correction_dim = |rotations: f64| {
            (dim * (original_max_position_embeddings / (rotations * 2.0 * std::f64::consts::PI))
                .ln())
                / (2.0 * base.ln())
        };
        let (mut low, mut high) = (correction_dim(*beta_fast), correction_dim(*beta_slow));
        if *truncate {
            low = low.floor();
            high = high.ceil();
        }
        let low = low.max(0.0);
        let mut high = high.min(dim - 1.0);
        if low == high {
            high += 0.001; // Transformers' guard against a zero-width ramp.
        }
        let inv_freq = pos_freqs
            .iter()
            .enumerate()
            .map(|(i, pos_freq)| {
                let ramp = ((i as f32 - low as f32) / (high as f32 - low as f32)).clamp(0.0, 1.0);
                let extrapolation_factor = 1.0 - ramp;
                let extrapolation = 1.0 / pos_freq;
                let interpolation = 1.0 / (*factor as f32 * pos_freq);
                interpolation * (1.0 - extrapolation_factor) + extrapolation * extrapolation_factor
            })
            .collect();
        (inv_freq, attention as f32)
    }

    /// `cos` and `sin` for `position_ids` (`[batch, seq]`, integers ≥ 0), each
    /// `[batch, seq, rotary_dim]` f32, already multiplied by the attention scaling.
    pub fn cos_sin(&self, position_ids: &Tensor) -> Result<(Tensor, Tensor)> {
        let (batch, seq) = position_ids.dims2()?;
        let positions = position_ids
            .to_dtype(DType::I64)?
            .flatten_all()?
            .to_vec1::<i64>()?;
        let mut max_position = 0usize;
        let mut as_f32 = Vec::with_capacity(positions.len());
        for position in positions {
            let position = usize::try_from(position).map_err(|_| Error::Input {
                input: "position_ids",
                reason: format!("{position} is negative"),
            })?;
            max_position = max_position.max(position);
            as_f32.push(position as f32);
        }
        let (inv_freq, scaling) = self.inv_freq_for(max_position.saturating_add(1));
        let half = inv_freq.len();
        let inv_freq = Tensor::from_vec(inv_freq, (1, 1, half), &self.device)?;
        let positions = Tensor::from_vec(as_f32, (batch, seq, 1), &self.device)?;
        let freqs = positions.broadcast_mul(&inv_freq)?;
        let emb = Tensor::cat(&[&freqs, &freqs], 2)?;
        let (cos, sin) = (emb.cos()?, emb.sin()?);
        if scaling == 1.0 {
            Ok((cos, sin))
        } else {
            Ok(((cos * f64::from(scaling))?, (sin * f64::from(scaling))?))
        }
    }

    /// Rotates the first [`RotaryEmbedding::rotary_dim`] dimensions of `x`
    /// (`[batch, heads, seq, head_dim]`) by `cos`/`sin` from [`RotaryEmbedding::cos_sin`]; the
    /// rest passes through (partial rotary).
    pub fn apply(&self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        let head_dim = x.dim(3)?;
        let cos = cos.unsqueeze(1)?;
        let sin = sin.unsqueeze(1)?;
        let rotate = |part: &Tensor| -> Result<Tensor> {
            let half = self.rotary_dim / 2;
            let first = part.narrow(3, 0, half)?;
            let second = part.narrow(3, half, half)?;
            let rotated_half = Tensor::cat(&[&second.neg()?, &first], 3)?;
            Ok((part.broadcast_mul(&cos)? + rotated_half.broadcast_mul(&sin)?)?)
        };
        if self.rotary_dim == head_dim {
            rotate(x)
        } else {
            let rotated = rotate(&x.narrow(3, 0, self.rotary_dim)?)?;
            let passed = x.narrow(3, self.rotary_dim, head_dim - self.rotary_dim)?;
            Ok(Tensor::cat(&[&rotated, &passed], 3)?)
        }
    }
}

/// Llama 3.1's scaling: wavelengths longer than `original / low_freq_factor` divided by
/// `factor`, shorter than `original / high_freq_factor` kept, a linear blend between.
/// `1 / base ** (arange(0, dim, 2) / dim)`, in float32 as Transformers computes `inv_freq`.
pub(crate) fn inverse_frequencies(base: f64, dim: usize) -> Vec<f32> {
    (0..dim / 2)
        .map(|i| 1.0 / (base as f32).powf((2 * i) as f32 / dim as f32))
        .collect()
}

/// The base dynamic NTK scaling uses for `length` positions of a model trained on `trained`:
/// `base · (factor · length / trained − (factor − 1))^(dim / (dim − 2))` (Transformers'
/// `dynamic` rope type, NomicBert's `rotary_scaling_factor`).
pub(crate) fn dynamic_ntk_base(
    base: f64,
    factor: f64,
    length: usize,
    trained: usize,
    dim: usize,
) -> f64 {
    let (length, trained, dim) = (length as f64, trained as f64, dim as f64);
    base * (factor * length / trained - (factor - 1.0)).powf(dim / (dim - 2.0))
}

fn llama3_frequencies(
    inv_freq: &[f32],
    factor: f32,
    low_freq_factor: f32,
    high_freq_factor: f32,
    original: f32,
) -> Vec<f32> {
    let low_freq_wavelen = original / low_freq_factor;
    let high_freq_wavelen = original / high_freq_factor;
    inv_freq
        .iter()
        .map(|&freq| {
            let wavelen = 2.0 * std::f32::consts::PI / freq;
            if wavelen < high_freq_wavelen {
                freq
            } else if wavelen > low_freq_wavelen {
                freq / factor
            } else {
                let smooth =
                    (original / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                (1.0 - smooth) * freq / factor + smooth * freq
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(text: &str) -> ModelConfig {
        ModelConfig::from_json_str(text, Path::new("config.json")).unwrap_or_else(|error| {
            panic!("{text}: {error}");
        })
    }

    fn parse(text: &str) -> Result<RopeParameters> {
        RopeParameters::from_config(&config(text), 32, 16, RopeConfigRules::default())
    }

    #[test]
    fn v4_and_v5_spellings_read_the_same() -> Result<()> {
        let v4 = parse(r#"{"rope_theta":500.0,"rope_scaling":{"type":"linear","factor":2.0}}"#)?;
        let v5 =
            parse(r#"{"rope_parameters":{"rope_type":"linear","factor":2.0,"rope_theta":500.0}}"#)?;
        assert_eq!(v4, v5);
        assert_eq!(v4.scaling, RopeScaling::Linear { factor: 2.0 });
        let plain = parse(r#"{"rope_scaling":null}"#)?;
        assert_eq!(plain.scaling, RopeScaling::Default);
        assert_eq!(plain.theta, 10_000.0);
        Ok(())
    }

    #[test]
    fn bad_rope_values_name_the_field() {
        for (text, field) in [
            (
                r#"{"rope_scaling":{"type":"wavy"}}"#,
                "rope_scaling.rope_type",
            ),
            (
                r#"{"rope_scaling":{"type":"linear"}}"#,
                "rope_scaling.factor",
            ),
            (
                r#"{"rope_parameters":{"rope_type":"dynamic","factor":-2}}"#,
                "rope_parameters.factor",
            ),
            (
                r#"{"rope_parameters":{"rope_type":"llama3","factor":8,"low_freq_factor":4,"high_freq_factor":1}}"#,
                "rope_parameters.high_freq_factor",
            ),
            (
                r#"{"rope_parameters":{"rope_type":"longrope","short_factor":[1,2],"long_factor":[1,2]}}"#,
                "rope_parameters.short_factor",
            ),
            (
                r#"{"rope_parameters":{"rope_type":"yarn","factor":2,"truncate":"no"}}"#,
                "rope_parameters.truncate",
            ),
            (r#"{"rope_theta":0}"#, "rope_theta"),
            (
                r#"{"rope_parameters":{"rope_theta":-1}}"#,
                "rope_parameters.rope_theta",
            ),
            (r#"{"rope_theta":"big"}"#, "rope_theta"),
            (r#"{"partial_rotary_factor":1.5}"#, "partial_rotary_factor"),
            (r#"{"rope_scaling":3}"#, "rope_scaling"),
        ] {
            match parse(text) {
                Err(Error::InvalidConfigField { field: got, .. }) => {
                    assert_eq!(got, field, "{text}");
                }
                other => panic!("{text}: expected an error about {field}, got {other:?}"),
            }
        }
    }

    #[test]
    fn phi3_reads_su_as_longrope_and_prefers_the_top_level_original_length() -> Result<()> {
        let text = r#"{"original_max_position_embeddings":16,"rope_scaling":{"type":"su",
            "short_factor":[1,1,1,1,1,1,1,1],"long_factor":[2,2,2,2,2,2,2,2],
            "original_max_position_embeddings":99}}"#;
        let phi3 =
            RopeParameters::from_config(&config(text), 64, 16, RopeConfigRules { phi3: true })?;
        match phi3.scaling {
            RopeScaling::LongRope {
                original_max_position_embeddings,
                ..
            } => assert_eq!(original_max_position_embeddings, 16),
            other => panic!("expected longrope, got {other:?}"),
        }
        assert!(parse(text).is_err(), "`su` is only a Phi-3 spelling");
        let linear = config(r#"{"rope_scaling":{"type":"linear","factor":2}}"#);
        assert!(matches!(
            RopeParameters::from_config(&linear, 64, 16, RopeConfigRules { phi3: true }),
            Err(Error::InvalidConfigField { field, .. }) if field == "rope_scaling.rope_type"
        ));
        Ok(())
    }

    #[test]
    fn rotation_preserves_norm_and_passes_the_unrotated_part() -> Result<()> {
        let parameters = RopeParameters {
            theta: 10_000.0,
            partial_rotary_factor: 0.5,
            scaling: RopeScaling::Default,
        };
        let rotary = RotaryEmbedding::new(parameters, 8, 32, &Device::Cpu)?;
        let x = Tensor::arange(0f32, 16.0, &Device::Cpu)?.reshape((1, 2, 1, 8))?;
        let positions = Tensor::new(&[[5i64]], &Device::Cpu)?;
        let (cos, sin) = rotary.cos_sin(&positions)?;
        let y = rotary.apply(&x, &cos, &sin)?;
        let x_rows = x.flatten_all()?.to_vec1::<f32>()?;
        let y_rows = y.flatten_all()?.to_vec1::<f32>()?;
        for head in 0..2 {
            let range = head * 8..head * 8 + 8;
            let x_head = &x_rows[range.clone()];
            let y_head = &y_rows[range];
            let norm = |v: &[f32]| v.iter().map(|a| a * a).sum::<f32>();
            assert!((norm(&x_head[..4]) - norm(&y_head[..4])).abs() < 1e-3);
            assert_eq!(&x_head[4..], &y_head[4..]);
            assert_ne!(&x_head[..4], &y_head[..4]);
        }
        let negative = Tensor::new(&[[-1i64]], &Device::Cpu)?;
        assert!(matches!(
            rotary.cos_sin(&negative),
            Err(Error::Input {
                input: "position_ids",
                ..
            })
        ));
        Ok(())
    }
}
