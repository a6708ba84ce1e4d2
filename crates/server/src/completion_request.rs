//! `POST /v1/completions` requests (a prompt string or list, or token ids), checked before
//! anything runs; the sampling parameters are those of chat ([`crate::sampling`]).

use crate::api_error::ApiError;
use crate::embeddings_request::{EmbeddingInput, checked_inputs};
use crate::limits::Limits;
use crate::request_fields::{Fields, parse_body};
use crate::sampling::{Sampling, ceiling, read_sampling};

/// The parameters of a completions request this server reads.
const KNOWN: &[&str] = &[
    "model",
    "prompt",
    "max_tokens",
    "temperature",
    "top_p",
    "seed",
    "stop",
    "n",
    "presence_penalty",
    "frequency_penalty",
    "logprobs",
    "echo",
    "best_of",
    "suffix",
    "stream",
    "stream_options",
    "ignore_eos",
    "truncate_prompt_tokens",
    "user",
];

/// OpenAI's default `max_tokens` for completions.
const DEFAULT_MAX_TOKENS: u64 = 16;

/// The most alternatives legacy completions return per token (OpenAI's cap).
const MAX_LOGPROBS: u64 = 5;

/// A checked completions request.
#[derive(Debug, Clone, PartialEq)]
pub struct CompletionRequest {
    /// The served model's name.
    pub model: String,
    /// The prompts (each completed `n` times).
    pub prompts: Vec<EmbeddingInput>,
    /// Length, sampling, stop strings, `n` and streaming (`max_tokens` 16 unless given).
    pub sampling: Sampling,
    /// Log-probabilities of this many alternatives per token (0 to 5), if asked.
    pub logprobs: Option<u64>,
    /// Return the prompt before the completion.
    pub echo: bool,
}

/// Reads and checks a completions body.
pub fn parse_completion_request(
    body: &[u8],
    limits: &Limits,
) -> Result<CompletionRequest, ApiError> {
    let value = parse_body(body, limits)?;
    let fields = Fields::of(&value)?;
    fields.refuse_unknown(KNOWN)?;
    if fields.value("suffix").is_some() {
        return Err(ApiError::invalid_param(
            "suffix",
            "`suffix` (insertion) is not supported",
        ));
    }
    let max_tokens = fields
        .integer("max_tokens", 1, ceiling(limits))?
        .unwrap_or(DEFAULT_MAX_TOKENS.min(ceiling(limits)));
    let sampling = read_sampling(&fields, limits, Some(max_tokens))?;
    if let Some(best_of) = fields.integer("best_of", 1, u64::MAX)?
        && best_of != sampling.n
    {
        return Err(ApiError::invalid_param(
            "best_of",
            "`best_of` other than `n` is not supported (no server-side ranking)",
        ));
    }
    Ok(CompletionRequest {
        model: fields.string("model")?.to_string(),
        prompts: checked_inputs(fields.value("prompt"), "prompt", limits.max_prompts)?,
        sampling,
        logprobs: fields.integer("logprobs", 0, MAX_LOGPROBS)?,
        echo: fields.bool("echo")?.unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::{Value, json};

    use super::*;

    fn parse(body: Value) -> Result<CompletionRequest, ApiError> {
        parse_completion_request(body.to_string().as_bytes(), &Limits::default())
    }

    #[test]
    fn prompts_and_defaults() {
        let one = parse(json!({"model": "m", "prompt": "Once"})).unwrap();
        assert_eq!(one.prompts, [EmbeddingInput::Text("Once".into())]);
        assert_eq!(one.sampling.max_tokens, Some(16));
        let many = parse(json!({"model": "m", "prompt": ["a", "b"], "max_tokens": 5,
                                "logprobs": 2, "echo": true, "best_of": 1}))
        .unwrap();
        assert_eq!(
            (many.prompts.len(), many.logprobs, many.echo),
            (2, Some(2), true)
        );
        let ids = parse(json!({"model": "m", "prompt": [1, 2, 3]})).unwrap();
        assert_eq!(ids.prompts, [EmbeddingInput::Tokens(vec![1, 2, 3])]);
    }

    #[test]
    fn bad_parameters_are_refused_by_name() {
        for (body, param) in [
            (json!({"model": "m"}), "prompt"),
            (json!({"model": "m", "prompt": vec!["x"; 33]}), "prompt"),
            (
                json!({"model": "m", "prompt": "x", "suffix": "y"}),
                "suffix",
            ),
            (
                json!({"model": "m", "prompt": "x", "best_of": 3}),
                "best_of",
            ),
            (
                json!({"model": "m", "prompt": "x", "logprobs": 6}),
                "logprobs",
            ),
            (
                json!({"model": "m", "prompt": "x", "max_tokens": 0}),
                "max_tokens",
            ),
            (json!({"model": "m", "prompt": "x", "top_p": 2}), "top_p"),
            (json!({"model": "m", "prompt": "x", "n": 0}), "n"),
            (
                json!({"model": "m", "prompt": "x", "logit_bias": {}}),
                "logit_bias",
            ),
        ] {
            let error = parse(body.clone()).unwrap_err();
            assert_eq!(
                (error.status, error.param.as_deref()),
                (400, Some(param)),
                "{body}"
            );
        }
    }
}
