//! The parameters chat completions and completions share: length, sampling, stop strings, `n`
//! and streaming, each checked against OpenAI's ranges and the [`Limits`].

use serde_json::Value;

use crate::api_error::ApiError;
use crate::limits::Limits;
use crate::request_fields::Fields;

/// The longest `stop` string, in bytes.
const MAX_STOP_BYTES: usize = 256;

/// Length, sampling and streaming of a generation request.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampling {
    /// New tokens at most, if given (1 to `--max-tokens-ceiling`).
    pub max_tokens: Option<u64>,
    /// Sampling temperature (0 to 2; 0 is greedy).
    pub temperature: Option<f64>,
    /// Nucleus mass (0 to 1).
    pub top_p: Option<f64>,
    /// Seed of the sampler.
    pub seed: Option<i64>,
    /// Stop strings.
    pub stop: Vec<String>,
    /// Completions to generate (1 to `--max-n`).
    pub n: u64,
    /// OpenAI's presence penalty (-2 to 2).
    pub presence_penalty: f64,
    /// OpenAI's frequency penalty (-2 to 2).
    pub frequency_penalty: f64,
    /// Server-sent events.
    pub stream: bool,
    /// A final event with the usage counts (`stream_options.include_usage`).
    pub include_usage: bool,
    /// Generate `max_tokens` tokens whatever the model says (vLLM's and llama.cpp's
    /// `ignore_eos`, for benchmarks).
    pub ignore_eos: bool,
    /// Keep only the prompt's last this many tokens (vLLM's `truncate_prompt_tokens`); a
    /// prompt too long for the context window is refused without it.
    pub truncate_prompt_tokens: Option<u64>,
}

/// The largest `max_tokens` as the field readers take it.
pub fn ceiling(limits: &Limits) -> u64 {
    u64::try_from(limits.max_tokens_ceiling).unwrap_or(u64::MAX)
}

/// Reads the shared parameters (`max_tokens` already read, as each endpoint names it).
pub fn read_sampling(
    fields: &Fields<'_>,
    limits: &Limits,
    max_tokens: Option<u64>,
) -> Result<Sampling, ApiError> {
    let stream = fields.bool("stream")?.unwrap_or(false);
    let max_n = u64::try_from(limits.max_n).unwrap_or(u64::MAX);
    Ok(Sampling {
        max_tokens,
        temperature: fields.number("temperature", 0.0, 2.0)?,
        top_p: fields.number("top_p", 0.0, 1.0)?,
        seed: fields.signed("seed")?,
        stop: checked_stop(fields, limits)?,
        n: fields.integer("n", 1, max_n)?.unwrap_or(1),
        presence_penalty: fields.number("presence_penalty", -2.0, 2.0)?.unwrap_or(0.0),
        frequency_penalty: fields
            .number("frequency_penalty", -2.0, 2.0)?
            .unwrap_or(0.0),
        stream,
        include_usage: checked_stream_options(fields, stream)?,
        ignore_eos: fields.bool("ignore_eos")?.unwrap_or(false),
        truncate_prompt_tokens: fields.integer("truncate_prompt_tokens", 1, 1 << 20)?,
    })
}

/// `stop`: a string or a list of at most `--max-stop-sequences` non-empty strings of at most
/// 256 bytes.
fn checked_stop(fields: &Fields<'_>, limits: &Limits) -> Result<Vec<String>, ApiError> {
    let stops: Vec<&Value> = match fields.value("stop") {
        None => return Ok(Vec::new()),
        Some(Value::Array(items)) => items.iter().collect(),
        Some(single) => vec![single],
    };
    if stops.len() > limits.max_stop_sequences {
        return Err(ApiError::invalid_param(
            "stop",
            format!(
                "`stop` holds {} strings: at most {}",
                stops.len(),
                limits.max_stop_sequences
            ),
        ));
    }
    stops
        .into_iter()
        .map(|stop| match stop.as_str() {
            Some(text) if !text.is_empty() && text.len() <= MAX_STOP_BYTES => Ok(text.to_string()),
            _ => Err(ApiError::invalid_param(
                "stop",
                "each `stop` must be a non-empty string of at most 256 bytes",
            )),
        })
        .collect()
}

/// `stream_options` (only with `stream: true`): `include_usage`.
fn checked_stream_options(fields: &Fields<'_>, stream: bool) -> Result<bool, ApiError> {
    let Some(options) = fields.value("stream_options") else {
        return Ok(false);
    };
    if !stream {
        return Err(ApiError::invalid_param(
            "stream_options",
            "`stream_options` needs `stream: true`",
        ));
    }
    let options = Fields::of(options).map_err(|_| {
        ApiError::invalid_param("stream_options", "`stream_options` must be an object")
    })?;
    options.refuse_unknown(&["include_usage"])?;
    Ok(options.bool("include_usage")?.unwrap_or(false))
}
