//! `generation_config.json` and the settings a caller passes, with Transformers 5's precedence:
//! the caller's options over the model's `generation_config.json` (or, when the folder has
//! none, the generation fields of `config.json`), over `generate()`'s global defaults.
//!
//! Every field is optional: `None` means "not set here", so that layers can be merged the way
//! Transformers merges them (`GenerationConfig.update`, the pipeline's `_prepare_generate_kwargs`).
//! Unknown keys are ignored, as Transformers ignores them; a known key of the wrong type is an
//! error naming the file.
//!
//! ```
//! use safeformers_pipelines::generation::{GenerationConfig, LengthLimit, LogitsProcessor};
//!
//! // What a model's generation_config.json says, then what the caller asks for.
//! let model: GenerationConfig =
//!     serde_json::from_str(r#"{"eos_token_id": [2, 7], "top_p": 0.9, "temperature": 0.6}"#)?;
//! let caller = GenerationConfig {
//!     max_new_tokens: Some(32),
//!     do_sample: Some(true),
//!     ..GenerationConfig::default()
//! };
//! let params = model.updated_with(&caller).resolve()?;
//! assert_eq!(params.length, LengthLimit::NewTokens(32));
//! assert_eq!(params.eos_token_ids, vec![2, 7]);
//! assert_eq!(params.pad_token_id, Some(2)); // no pad token: the first EOS id
//! // Transformers' order, with its default top_k of 50 when sampling.
//! assert_eq!(
//!     params.processors,
//!     vec![
//!         LogitsProcessor::Temperature(0.6),
//!         LogitsProcessor::TopK(50),
//!         LogitsProcessor::TopP(0.9),
//!     ]
//! );
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::encoder::read_json_capped;
use crate::error::{PipelineError, Result};

use super::logits::LogitsProcessor;

/// Largest `generation_config.json` read (real ones are a few hundred bytes).
pub const MAX_GENERATION_CONFIG_BYTES: u64 = 1024 * 1024;

/// `generate()`'s global default for `max_length` (prompt included), used when nothing sets a
/// length.
pub const DEFAULT_MAX_LENGTH: usize = 20;

/// The generation settings of one layer (file, pipeline defaults, caller); `None` = unset.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct GenerationConfig {
    /// Tokens to generate at most, not counting the prompt.
    pub max_new_tokens: Option<usize>,
    /// Total length (prompt plus new tokens) at most; `max_new_tokens` wins when both are set.
    pub max_length: Option<usize>,
    /// Tokens to generate at least before an EOS token may be chosen.
    pub min_new_tokens: Option<usize>,
    /// Total length at least before an EOS token may be chosen.
    pub min_length: Option<usize>,
    /// Sample (with the warpers below) instead of choosing the most likely token.
    pub do_sample: Option<bool>,
    /// Divides the logits before sampling (strictly positive).
    pub temperature: Option<f64>,
    /// Keep only the `top_k` most likely tokens when sampling (0 disables).
    pub top_k: Option<usize>,
    /// Keep the smallest set of most likely tokens whose probabilities add up to `top_p`.
    pub top_p: Option<f64>,
    /// Drop tokens less likely than `min_p` times the most likely one.
    pub min_p: Option<f64>,
    /// Penalise tokens already in the sequence (1.0: none; above 1: less repetition).
    pub repetition_penalty: Option<f64>,
    /// Token(s) that end a sequence (`eos_token_id`: one id or a list).
    #[serde(deserialize_with = "one_or_many_ids")]
    pub eos_token_id: Option<Vec<u32>>,
    /// Token that starts a sequence (used for an empty prompt).
    pub bos_token_id: Option<u32>,
    /// Token that fills finished rows of a batch and left padding.
    pub pad_token_id: Option<u32>,
    /// Strings that end generation once the text contains them (one string or a list).
    #[serde(deserialize_with = "one_or_many_strings")]
    pub stop_strings: Option<Vec<String>>,
}

/// One value or a list of them, as Transformers accepts for `eos_token_id` and `stop_strings`.
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

fn one_or_many_ids<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<Option<Vec<u32>>, D::Error> {
    let value: Option<OneOrMany<u32>> = Option::deserialize(deserializer)?;
    Ok(value.map(|value| match value {
        OneOrMany::One(id) => vec![id],
        OneOrMany::Many(ids) => ids,
    }))
}

fn one_or_many_strings<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<Option<Vec<String>>, D::Error> {
    let value: Option<OneOrMany<String>> = Option::deserialize(deserializer)?;
    Ok(value.map(|value| match value {
        OneOrMany::One(text) => vec![text],
        OneOrMany::Many(texts) => texts,
    }))
}

/// The keys of `config.json` that Transformers' `GenerationConfig.from_model_config` takes
/// over (those we implement).
const MODEL_CONFIG_KEYS: &[&str] = &[
    "max_new_tokens",
    "max_length",
    "min_new_tokens",
    "min_length",
    "do_sample",
    "temperature",
    "top_k",
    "top_p",
    "min_p",
    "repetition_penalty",
    "eos_token_id",
    "bos_token_id",
    "pad_token_id",
];

impl GenerationConfig {
    /// Reads a `generation_config.json`, refusing files over [`MAX_GENERATION_CONFIG_BYTES`],
    /// anything but a JSON object at the top (an array, a string, nesting past serde_json's
    /// depth limit), a known key of the wrong type and a value out of its range
    /// ([`GenerationConfig::validate`]); every error names the file.
    pub fn from_file(path: &Path) -> Result<GenerationConfig> {
        // A map first: a struct would also accept a JSON array, its items taken as the fields
        // in declaration order; and parsing into values bounds the depth of unknown keys too.
        let raw: Map<String, Value> = read_json_capped(path, MAX_GENERATION_CONFIG_BYTES)?;
        GenerationConfig::from_json_object(raw, path)
    }

    /// The generation fields of a parsed `config.json` (its `eos_token_id`, one id or a list,
    /// `bos_token_id`, `pad_token_id`, and legacy sampling fields), as Transformers'
    /// `GenerationConfig.from_model_config` takes them, checked as
    /// [`GenerationConfig::from_file`] checks them; `path` names the file in errors. `null`
    /// values count as unset.
    pub fn from_model_config(raw: &Map<String, Value>, path: &Path) -> Result<GenerationConfig> {
        let picked: Map<String, Value> = MODEL_CONFIG_KEYS
            .iter()
            .filter_map(|key| {
                raw.get(*key)
                    .filter(|value| !value.is_null())
                    .map(|value| ((*key).to_string(), value.clone()))
            })
            .collect();
        GenerationConfig::from_json_object(picked, path)
    }

    /// The settings of a model file's JSON object, each value checked; `path` names the file.
    fn from_json_object(raw: Map<String, Value>, path: &Path) -> Result<GenerationConfig> {
        let config: GenerationConfig =
            serde_json::from_value(Value::Object(raw)).map_err(|source| PipelineError::Json {
                path: path.to_path_buf(),
                source,
            })?;
        // Whether the model samples is only known once the caller's settings are merged in
        // (`GenerationConfig::resolve` checks the temperature then): Transformers, too, only
        // refuses a zero temperature when it samples.
        GenerationConfig {
            do_sample: None,
            ..config.clone()
        }
        .validate()
        .map_err(|invalid| invalid.in_file(path))?;
        Ok(config)
    }

    /// The file a model's generation settings are read from: `dir/generation_config.json` when
    /// present, else `config_path` (its `config.json`).
    pub fn model_source(dir: &Path, config_path: &Path) -> PathBuf {
        let path = dir.join("generation_config.json");
        // Present at all (a FIFO or a directory too): the opener then refuses what is not a
        // regular file, rather than falling back silently.
        if path.exists() {
            path
        } else {
            config_path.to_path_buf()
        }
    }

    /// The model's own generation settings: `dir/generation_config.json` when present, else
    /// the generation fields of `config.json` (given parsed, `config_path` naming it).
    pub fn for_model(
        dir: &Path,
        config: &Map<String, Value>,
        config_path: &Path,
    ) -> Result<GenerationConfig> {
        let source = GenerationConfig::model_source(dir, config_path);
        if source == config_path {
            GenerationConfig::from_model_config(config, config_path)
        } else {
            GenerationConfig::from_file(&source)
        }
    }

    /// Checks every value this layer sets against the range generation accepts, the same
    /// check for the caller's settings (the CLI's flags), a model's files and the merged
    /// settings ([`GenerationConfig::resolve`]). The ranges are those of Transformers'
    /// `GenerationConfig.validate` and logits processors:
    ///
    /// - `max_new_tokens` at least 1;
    /// - `temperature` at least 0, and above 0 when this layer samples (`do_sample: true`);
    /// - `top_p` and `min_p` from 0 to 1;
    /// - `repetition_penalty` above 0.
    ///
    /// NaN and infinities are never valid, nor is a number too large for the `f32` the
    /// processors run in. Counts (`top_k`, lengths) take any value: the generation loop bounds
    /// the length by the model's context window and preallocates nothing from it.
    ///
    /// ```
    /// use safeformers_pipelines::generation::GenerationConfig;
    ///
    /// let config = GenerationConfig { top_p: Some(f64::NAN), ..GenerationConfig::default() };
    /// assert_eq!(config.validate().unwrap_err().field, "top_p");
    /// ```
    pub fn validate(&self) -> std::result::Result<(), InvalidSetting> {
        if self.max_new_tokens == Some(0) {
            return Err(InvalidSetting::new(
                "max_new_tokens",
                "must be at least 1, got 0",
            ));
        }
        let sampling = self.do_sample == Some(true);
        let float_settings = [
            (
                "temperature",
                self.temperature,
                FloatRange::Temperature { sampling },
            ),
            ("top_p", self.top_p, FloatRange::Probability),
            ("min_p", self.min_p, FloatRange::Probability),
            (
                "repetition_penalty",
                self.repetition_penalty,
                FloatRange::Positive,
            ),
        ];
        for (field, value, range) in float_settings {
            if let Some(value) = value {
                range
                    .check(value)
                    .map_err(|reason| InvalidSetting::new(field, reason))?;
            }
        }
        Ok(())
    }

    /// Whether this layer sets the setting named `field` (its name in
    /// `generation_config.json`).
    pub fn sets(&self, field: &str) -> bool {
        match field {
            "max_new_tokens" => self.max_new_tokens.is_some(),
            "max_length" => self.max_length.is_some(),
            "min_new_tokens" => self.min_new_tokens.is_some(),
            "min_length" => self.min_length.is_some(),
            "do_sample" => self.do_sample.is_some(),
            "temperature" => self.temperature.is_some(),
            "top_k" => self.top_k.is_some(),
            "top_p" => self.top_p.is_some(),
            "min_p" => self.min_p.is_some(),
            "repetition_penalty" => self.repetition_penalty.is_some(),
            "eos_token_id" => self.eos_token_id.is_some(),
            "bos_token_id" => self.bos_token_id.is_some(),
            "pad_token_id" => self.pad_token_id.is_some(),
            "stop_strings" => self.stop_strings.is_some(),
            _ => false,
        }
    }

    /// This layer with every field that `overrides` sets replaced (Transformers'
    /// `GenerationConfig.update(**overrides)`).
    pub fn updated_with(&self, overrides: &GenerationConfig) -> GenerationConfig {
        fn pick<T: Clone>(over: &Option<T>, base: &Option<T>) -> Option<T> {
            over.clone().or_else(|| base.clone())
        }
        GenerationConfig {
            max_new_tokens: pick(&overrides.max_new_tokens, &self.max_new_tokens),
            max_length: pick(&overrides.max_length, &self.max_length),
            min_new_tokens: pick(&overrides.min_new_tokens, &self.min_new_tokens),
            min_length: pick(&overrides.min_length, &self.min_length),
            do_sample: pick(&overrides.do_sample, &self.do_sample),
            temperature: pick(&overrides.temperature, &self.temperature),
            top_k: pick(&overrides.top_k, &self.top_k),
            top_p: pick(&overrides.top_p, &self.top_p),
            min_p: pick(&overrides.min_p, &self.min_p),
            repetition_penalty: pick(&overrides.repetition_penalty, &self.repetition_penalty),
            eos_token_id: pick(&overrides.eos_token_id, &self.eos_token_id),
            bos_token_id: pick(&overrides.bos_token_id, &self.bos_token_id),
            pad_token_id: pick(&overrides.pad_token_id, &self.pad_token_id),
            stop_strings: pick(&overrides.stop_strings, &self.stop_strings),
        }
    }

    /// The defaults of Transformers' text-generation pipeline (`max_new_tokens=256`,
    /// `do_sample=True`, `temperature=0.7`).
    pub fn text_generation_pipeline_defaults() -> GenerationConfig {
        GenerationConfig {
            max_new_tokens: Some(256),
            do_sample: Some(true),
            temperature: Some(0.7),
            ..GenerationConfig::default()
        }
    }

    /// What a pipeline passes to `generate()`: the `model` layer, then each of the pipeline's
    /// `defaults` that neither the model nor the `caller` set, then the caller's options
    /// (Transformers 5's `Pipeline._prepare_generate_kwargs`). A default `max_new_tokens` is not
    /// added when a `max_length` is set, and default sampling parameters only when sampling.
    pub fn for_pipeline(
        model: &GenerationConfig,
        defaults: &GenerationConfig,
        caller: &GenerationConfig,
    ) -> GenerationConfig {
        let set = model.updated_with(caller);
        let mut added = GenerationConfig::default();
        macro_rules! add_unset {
            ($($field:ident),*) => {
                $(if defaults.$field.is_some() && set.$field.is_none() {
                    added.$field = defaults.$field.clone();
                })*
            };
        }
        add_unset!(
            max_length,
            min_new_tokens,
            min_length,
            do_sample,
            temperature,
            top_k,
            top_p,
            min_p,
            repetition_penalty,
            eos_token_id,
            bos_token_id,
            pad_token_id,
            stop_strings
        );
        if defaults.max_new_tokens.is_some()
            && set.max_new_tokens.is_none()
            && set.max_length.is_none()
        {
            added.max_new_tokens = defaults.max_new_tokens;
        }
        if !set.updated_with(&added).do_sample.unwrap_or(false) {
            added.temperature = None;
            added.top_k = None;
            added.top_p = None;
            added.min_p = None;
        }
        model.updated_with(&added).updated_with(caller)
    }

    /// Applies `generate()`'s global defaults to the unset fields and checks every value
    /// ([`GenerationConfig::validate`], knowing by now whether generation samples).
    pub fn resolve(&self) -> Result<GenerationParams> {
        let do_sample = self.do_sample.unwrap_or(false);
        GenerationConfig {
            do_sample: Some(do_sample),
            ..self.clone()
        }
        .validate()?;
        let length = match (self.max_new_tokens, self.max_length) {
            (Some(new), _) => LengthLimit::NewTokens(new),
            (None, Some(total)) => LengthLimit::Total(total),
            (None, None) => LengthLimit::Total(DEFAULT_MAX_LENGTH),
        };
        let eos_token_ids = self.eos_token_id.clone().unwrap_or_default();
        let mut processors = Vec::new();
        // Transformers' `_get_logits_processor` order, for the processors implemented here.
        if let Some(penalty) = self.repetition_penalty.filter(|p| *p != 1.0) {
            processors.push(LogitsProcessor::RepetitionPenalty(penalty as f32));
        }
        if do_sample {
            if let Some(temperature) = self.temperature.filter(|t| *t != 1.0) {
                processors.push(LogitsProcessor::Temperature(temperature as f32));
            }
            // Transformers' default top_k of 50 applies when sampling and nothing sets it.
            if let Some(top_k) = Some(self.top_k.unwrap_or(50)).filter(|k| *k != 0) {
                processors.push(LogitsProcessor::TopK(top_k));
            }
            if let Some(top_p) = self.top_p.filter(|p| *p < 1.0) {
                processors.push(LogitsProcessor::TopP(top_p as f32));
            }
            if let Some(min_p) = self.min_p {
                processors.push(LogitsProcessor::MinP(min_p as f32));
            }
        }
        Ok(GenerationParams {
            length,
            min_new_tokens: self.min_new_tokens.unwrap_or(0),
            min_length: self.min_length.unwrap_or(0),
            do_sample,
            processors,
            eos_token_ids,
            // Transformers: with no pad token, finished rows are filled with the first EOS id.
            pad_token_id: self.pad_token_id.or_else(|| {
                self.eos_token_id
                    .as_ref()
                    .and_then(|ids| ids.first().copied())
            }),
            bos_token_id: self.bos_token_id,
            stop_strings: self.stop_strings.clone().unwrap_or_default(),
        })
    }
}

/// A generation setting with a value generation cannot use (from
/// [`GenerationConfig::validate`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidSetting {
    /// The setting's name, as in `generation_config.json` (`top_p`).
    pub field: &'static str,
    /// What is wrong with its value, the value included.
    pub reason: String,
}

impl InvalidSetting {
    fn new(field: &'static str, reason: impl Into<String>) -> InvalidSetting {
        InvalidSetting {
            field,
            reason: reason.into(),
        }
    }

    /// The error for this setting read from the model file `path`.
    pub fn in_file(self, path: &Path) -> PipelineError {
        PipelineError::InvalidGenerationFile {
            path: path.to_path_buf(),
            field: self.field,
            reason: self.reason,
        }
    }
}

impl std::fmt::Display for InvalidSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}` {}", self.field, self.reason)
    }
}

impl std::error::Error for InvalidSetting {}

impl From<InvalidSetting> for PipelineError {
    fn from(invalid: InvalidSetting) -> PipelineError {
        PipelineError::InvalidGenerationConfig {
            field: invalid.field,
            reason: invalid.reason,
        }
    }
}

/// The values a floating-point setting accepts (always finite, and finite as an `f32`).
#[derive(Debug, Clone, Copy)]
enum FloatRange {
    /// At least 0; above 0 when sampling (`TemperatureLogitsWarper`).
    Temperature { sampling: bool },
    /// From 0 to 1 (`TopPLogitsWarper`, `MinPLogitsWarper`).
    Probability,
    /// Above 0 (`RepetitionPenaltyLogitsProcessor`).
    Positive,
}

impl FloatRange {
    /// `Ok` when `value` is in range, else what is wrong with it.
    fn check(self, value: f64) -> std::result::Result<(), String> {
        let in_range = match self {
            FloatRange::Temperature { sampling: true } | FloatRange::Positive => value > 0.0,
            FloatRange::Temperature { sampling: false } => value >= 0.0,
            FloatRange::Probability => (0.0..=1.0).contains(&value),
        };
        if in_range && value.is_finite() && (value as f32).is_finite() {
            return Ok(());
        }
        Err(match self {
            FloatRange::Temperature { sampling: true } => format!(
                "must be a number above 0 when sampling, got {value} (use greedy decoding for \
                 deterministic output)"
            ),
            FloatRange::Temperature { sampling: false } => {
                format!("must be a number from 0 up, got {value}")
            }
            FloatRange::Probability => format!("must be a number from 0 to 1, got {value}"),
            FloatRange::Positive => format!("must be a number above 0, got {value}"),
        })
    }
}

/// How long a sequence may get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LengthLimit {
    /// At most this many new tokens (`max_new_tokens`).
    NewTokens(usize),
    /// At most this many tokens in all, the (padded) prompt included (`max_length`).
    Total(usize),
}

impl LengthLimit {
    /// New tokens allowed after a prompt of `prompt_len` tokens.
    pub fn new_tokens(self, prompt_len: usize) -> usize {
        match self {
            LengthLimit::NewTokens(new) => new,
            LengthLimit::Total(total) => total.saturating_sub(prompt_len),
        }
    }
}

/// Generation settings with defaults applied and checked: what the generation loop runs on.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationParams {
    /// The length limit.
    pub length: LengthLimit,
    /// EOS is suppressed until this many new tokens exist.
    pub min_new_tokens: usize,
    /// EOS is suppressed until the sequence (prompt included) is this long.
    pub min_length: usize,
    /// Sample instead of choosing the most likely token.
    pub do_sample: bool,
    /// The logits processors, in Transformers' order (EOS suppression for the minimum length
    /// is applied by the loop after the repetition penalty, where Transformers puts it).
    pub processors: Vec<LogitsProcessor>,
    /// Tokens that end a row.
    pub eos_token_ids: Vec<u32>,
    /// Token for left padding and for the rows that finished early.
    pub pad_token_id: Option<u32>,
    /// Token an empty prompt starts with.
    pub bos_token_id: Option<u32>,
    /// Strings that end a row.
    pub stop_strings: Vec<String>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    fn parse(text: &str) -> Result<GenerationConfig, serde_json::Error> {
        serde_json::from_str(text)
    }

    #[test]
    fn eos_is_one_id_or_a_list_and_unknown_keys_are_ignored() {
        let one = parse(r#"{"eos_token_id": 2, "transformers_version": "5.0", "x": [1]}"#).unwrap();
        assert_eq!(one.eos_token_id, Some(vec![2]));
        let many = parse(r#"{"eos_token_id": [2, 7], "pad_token_id": null}"#).unwrap();
        assert_eq!(many.eos_token_id, Some(vec![2, 7]));
        assert_eq!(many.pad_token_id, None);
        assert!(parse(r#"{"temperature": "hot"}"#).is_err());
        assert!(parse(r#"{"eos_token_id": -1}"#).is_err());
    }

    #[test]
    fn caller_overrides_model_which_overrides_defaults() {
        let model = parse(r#"{"eos_token_id": 2, "max_new_tokens": 5, "top_p": 0.9}"#).unwrap();
        let caller = GenerationConfig {
            max_new_tokens: Some(3),
            ..GenerationConfig::default()
        };
        let merged = model.updated_with(&caller);
        assert_eq!(merged.max_new_tokens, Some(3));
        assert_eq!(merged.top_p, Some(0.9));
        let params = merged.resolve().unwrap();
        assert_eq!(params.length, LengthLimit::NewTokens(3));
        assert_eq!(
            params.pad_token_id,
            Some(2),
            "pad falls back to the first EOS id"
        );
        assert!(!params.do_sample);
        assert!(
            params.processors.is_empty(),
            "warpers only apply when sampling"
        );
        let bare = GenerationConfig::default().resolve().unwrap();
        assert_eq!(bare.length, LengthLimit::Total(DEFAULT_MAX_LENGTH));
    }

    #[test]
    fn pipeline_defaults_fill_only_what_nobody_set() {
        let defaults = GenerationConfig::text_generation_pipeline_defaults();
        let greedy_model = parse(r#"{"do_sample": false}"#).unwrap();
        let merged =
            GenerationConfig::for_pipeline(&greedy_model, &defaults, &GenerationConfig::default());
        assert_eq!(merged.do_sample, Some(false));
        assert_eq!(merged.temperature, None, "no sampling default when greedy");
        assert_eq!(merged.max_new_tokens, Some(256));
        let plain = GenerationConfig::default();
        let merged = GenerationConfig::for_pipeline(&plain, &defaults, &plain);
        assert_eq!(merged.do_sample, Some(true));
        assert_eq!(merged.temperature, Some(0.7));
        let with_max_length = GenerationConfig {
            max_length: Some(40),
            ..GenerationConfig::default()
        };
        let merged = GenerationConfig::for_pipeline(&plain, &defaults, &with_max_length);
        assert_eq!(merged.max_new_tokens, None);
        assert_eq!(merged.resolve().unwrap().length, LengthLimit::Total(40));
    }

    #[test]
    fn bad_values_are_typed_errors() {
        let sampling = |config: GenerationConfig| GenerationConfig {
            do_sample: Some(true),
            ..config
        };
        for (config, field) in [
            (
                sampling(GenerationConfig {
                    temperature: Some(0.0),
                    ..GenerationConfig::default()
                }),
                "temperature",
            ),
            (
                sampling(GenerationConfig {
                    top_p: Some(-0.5),
                    ..GenerationConfig::default()
                }),
                "top_p",
            ),
            (
                sampling(GenerationConfig {
                    min_p: Some(1.5),
                    ..GenerationConfig::default()
                }),
                "min_p",
            ),
            (
                GenerationConfig {
                    repetition_penalty: Some(-1.0),
                    ..GenerationConfig::default()
                },
                "repetition_penalty",
            ),
            (
                GenerationConfig {
                    max_new_tokens: Some(0),
                    ..GenerationConfig::default()
                },
                "max_new_tokens",
            ),
        ] {
            match config.resolve() {
                Err(PipelineError::InvalidGenerationConfig { field: got, .. }) => {
                    assert_eq!(got, field)
                }
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    /// A config setting only `field` to `value` (and `do_sample` as given).
    fn with_float(field: &str, value: f64, do_sample: Option<bool>) -> GenerationConfig {
        let mut config = GenerationConfig {
            do_sample,
            ..GenerationConfig::default()
        };
        match field {
            "temperature" => config.temperature = Some(value),
            "top_p" => config.top_p = Some(value),
            "min_p" => config.min_p = Some(value),
            "repetition_penalty" => config.repetition_penalty = Some(value),
            other => panic!("no float setting {other}"),
        }
        config
    }

    #[test]
    fn validate_refuses_every_out_of_range_float_and_never_accepts_nan_or_infinity() {
        let not_finite = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e39, -1e39];
        for field in ["temperature", "top_p", "min_p", "repetition_penalty"] {
            for do_sample in [None, Some(false), Some(true)] {
                for value in not_finite {
                    let invalid = with_float(field, value, do_sample).validate().unwrap_err();
                    assert_eq!(invalid.field, field, "{value}");
                    assert!(invalid.reason.contains("must be"), "{invalid}");
                }
                let below_zero = with_float(field, -0.5, do_sample).validate();
                assert_eq!(below_zero.unwrap_err().field, field);
            }
        }
        for field in ["top_p", "min_p"] {
            for value in [1.0000001, 2.0, 100.0] {
                assert_eq!(
                    with_float(field, value, Some(true))
                        .validate()
                        .unwrap_err()
                        .field,
                    field
                );
            }
            // Transformers' TopPLogitsWarper / MinPLogitsWarper take both ends.
            for value in [0.0, 0.5, 1.0] {
                assert_eq!(with_float(field, value, Some(true)).validate(), Ok(()));
            }
        }
        assert!(
            with_float("repetition_penalty", 0.0, None)
                .validate()
                .is_err()
        );
        assert_eq!(
            with_float("repetition_penalty", 1.3, None).validate(),
            Ok(())
        );
    }

    #[test]
    fn a_zero_temperature_is_refused_only_when_sampling() {
        assert_eq!(with_float("temperature", 0.0, None).validate(), Ok(()));
        assert_eq!(
            with_float("temperature", 0.0, Some(false)).validate(),
            Ok(())
        );
        let invalid = with_float("temperature", 0.0, Some(true))
            .validate()
            .unwrap_err();
        assert_eq!(invalid.field, "temperature");
        assert!(invalid.reason.contains("when sampling"), "{invalid}");
        assert_eq!(
            with_float("temperature", 1e-6, Some(true)).validate(),
            Ok(())
        );
        // resolve() knows whether generation samples: do_sample unset means greedy.
        assert!(with_float("temperature", 0.0, None).resolve().is_ok());
        assert!(matches!(
            with_float("temperature", 0.0, Some(true)).resolve(),
            Err(PipelineError::InvalidGenerationConfig {
                field: "temperature",
                ..
            })
        ));
    }

    #[test]
    fn counts_are_checked_for_zero_only_and_huge_lengths_pass_to_the_loop() {
        let zero = GenerationConfig {
            max_new_tokens: Some(0),
            ..GenerationConfig::default()
        };
        assert_eq!(zero.validate().unwrap_err().field, "max_new_tokens");
        let huge = GenerationConfig {
            max_new_tokens: Some(usize::MAX),
            max_length: Some(usize::MAX),
            min_new_tokens: Some(usize::MAX),
            top_k: Some(usize::MAX),
            ..GenerationConfig::default()
        };
        assert_eq!(huge.validate(), Ok(()));
        assert_eq!(
            huge.resolve().unwrap().length,
            LengthLimit::NewTokens(usize::MAX)
        );
    }

    /// A scratch file holding `text`, removed by the caller.
    fn scratch_file(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "sf-generation-config-{name}-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("generation_config.json");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_file_out_of_range_names_the_file_and_the_setting() {
        for (text, field) in [
            (r#"{"top_p": 2}"#, "top_p"),
            (r#"{"top_p": 1.5, "do_sample": false}"#, "top_p"),
            (r#"{"temperature": -1}"#, "temperature"),
            (r#"{"min_p": 1e39}"#, "min_p"),
            (r#"{"repetition_penalty": 0}"#, "repetition_penalty"),
            (r#"{"max_new_tokens": 0}"#, "max_new_tokens"),
        ] {
            let path = scratch_file("range", text);
            match GenerationConfig::from_file(&path) {
                Err(PipelineError::InvalidGenerationFile {
                    path: named,
                    field: got,
                    ..
                }) => {
                    assert_eq!(named, path, "{text}");
                    assert_eq!(got, field, "{text}");
                }
                other => panic!("{text}: {other:?}"),
            }
            std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
        }
        // Whether the model samples is settled by the merge: a zero temperature loads.
        let path = scratch_file("temperature", r#"{"temperature": 0.0, "do_sample": true}"#);
        assert!(GenerationConfig::from_file(&path).is_ok());
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
        // The fallback to config.json is checked the same way, naming config.json.
        let raw: Map<String, Value> = serde_json::from_str(r#"{"top_p": 2.5}"#).unwrap();
        let config_path = Path::new("model/config.json");
        match GenerationConfig::from_model_config(&raw, config_path) {
            Err(PipelineError::InvalidGenerationFile { path, field, .. }) => {
                assert_eq!((path.as_path(), field), (config_path, "top_p"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_file_that_is_not_one_json_object_is_an_error_naming_it() {
        let deep_array = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let deep_unknown = format!(
            r#"{{"max_new_tokens": 3, "x": {}1{}}}"#,
            r#"{"a":"#.repeat(100_000),
            "}".repeat(100_000)
        );
        for text in [
            "[]".to_string(),
            "[3]".to_string(),
            "[3, 5, 2]".to_string(),
            "\"max_new_tokens\"".to_string(),
            "null".to_string(),
            deep_array,
            deep_unknown,
        ] {
            let path = scratch_file("shape", &text);
            match GenerationConfig::from_file(&path) {
                Err(PipelineError::Json { path: named, .. }) => assert_eq!(named, path),
                other => panic!("{}: {other:?}", text.get(..40).unwrap_or(&text)),
            }
            std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
        }
    }
}
