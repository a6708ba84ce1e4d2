//! `POST /v1/embeddings` (OpenAI) and `POST /embed` (TEI) requests, checked before anything
//! runs: inputs as strings or token ids, at most `--max-embedding-inputs` of them, none empty.

use serde_json::Value;

use crate::api_error::ApiError;
use crate::limits::Limits;
use crate::request_fields::{Fields, parse_body};

/// One input to embed (or one prompt to complete).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmbeddingInput {
    /// Text, tokenized by the model's tokenizer.
    Text(String),
    /// Token ids as given (checked against the vocabulary by the model).
    Tokens(Vec<u32>),
}

/// How vectors are returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodingFormat {
    /// JSON numbers.
    Float,
    /// The little-endian f32 bytes, base64 (what the OpenAI client asks for by default).
    Base64,
}

/// A checked embeddings request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddingsRequest {
    /// The served model's name (TEI's `/embed` has none: the one embedding model).
    pub model: Option<String>,
    /// The inputs, in order.
    pub inputs: Vec<EmbeddingInput>,
    /// The response's number format.
    pub encoding_format: EncodingFormat,
    /// Truncate each vector to this many dimensions (then renormalize), if asked.
    pub dimensions: Option<u64>,
    /// L2-normalize the vectors (TEI's `normalize`, true by default; OpenAI's are normalized).
    pub normalize: bool,
    /// TEI's `prompt_name`: the folder's prompt (`config_sentence_transformers.json`) to
    /// prepend to every text input instead of its default prompt.
    pub prompt_name: Option<String>,
}

/// Reads and checks an OpenAI embeddings body.
pub fn parse_embeddings_request(
    body: &[u8],
    limits: &Limits,
) -> Result<EmbeddingsRequest, ApiError> {
    let value = parse_body(body, limits)?;
    let fields = Fields::of(&value)?;
    fields.refuse_unknown(&["model", "input", "encoding_format", "dimensions", "user"])?;
    let encoding_format = match fields.optional_string("encoding_format")? {
        None | Some("float") => EncodingFormat::Float,
        Some("base64") => EncodingFormat::Base64,
        Some(_) => {
            return Err(ApiError::invalid_param(
                "encoding_format",
                "`encoding_format` must be float or base64",
            ));
        }
    };
    Ok(EmbeddingsRequest {
        model: Some(fields.string("model")?.to_string()),
        inputs: checked_inputs(fields.value("input"), "input", limits.max_embedding_inputs)?,
        encoding_format,
        dimensions: fields.integer("dimensions", 1, 1 << 16)?,
        normalize: true,
        prompt_name: None,
    })
}

/// Reads and checks a TEI `/embed` body: `{"inputs": ..., "normalize": bool, "truncate":
/// bool, "prompt_name": string}`.
pub fn parse_tei_embed_request(
    body: &[u8],
    limits: &Limits,
) -> Result<EmbeddingsRequest, ApiError> {
    let value = parse_body(body, limits)?;
    let fields = Fields::of(&value)?;
    fields.refuse_unknown(&["inputs", "normalize", "truncate", "prompt_name"])?;
    if fields.bool("truncate")? == Some(true) {
        return Err(ApiError::invalid_param(
            "truncate",
            "`truncate: true` is not supported: inputs longer than the model's window are refused",
        ));
    }
    Ok(EmbeddingsRequest {
        model: None,
        inputs: checked_inputs(
            fields.value("inputs"),
            "inputs",
            limits.max_embedding_inputs,
        )?,
        encoding_format: EncodingFormat::Float,
        dimensions: None,
        normalize: fields.bool("normalize")?.unwrap_or(true),
        prompt_name: fields.optional_string("prompt_name")?.map(str::to_string),
    })
}

/// `input`: a string, a list of strings, a list of token ids, or a list of lists of token ids;
/// 1 to `--max-embedding-inputs` inputs, none empty.
pub(crate) fn checked_inputs(
    input: Option<&Value>,
    param: &str,
    max_inputs: usize,
) -> Result<Vec<EmbeddingInput>, ApiError> {
    let refused = |reason: &str| {
        Err(ApiError::invalid_param(
            param,
            format!("`{param}` {reason}"),
        ))
    };
    let items: Vec<&Value> = match input {
        None => return refused("is required"),
        Some(single @ Value::String(_)) => vec![single],
        Some(Value::Array(items)) if items.first().is_some_and(Value::is_number) => {
            return Ok(vec![EmbeddingInput::Tokens(token_ids(items, param)?)]);
        }
        Some(Value::Array(items)) => items.iter().collect(),
        Some(_) => return refused("must be a string or a list"),
    };
    if items.is_empty() || items.len() > max_inputs {
        return refused(&format!(
            "holds {} inputs: 1 to {max_inputs} are allowed",
            items.len(),
        ));
    }
    items
        .into_iter()
        .map(|item| match item {
            Value::String(text) if !text.is_empty() => Ok(EmbeddingInput::Text(text.clone())),
            Value::Array(ids) if !ids.is_empty() => {
                Ok(EmbeddingInput::Tokens(token_ids(ids, param)?))
            }
            _ => Err(ApiError::invalid_param(
                param,
                format!("each `{param}` must be a non-empty string or list of token ids"),
            )),
        })
        .collect()
}

/// A list of token ids (integers from 0 to 2^32 - 1).
fn token_ids(ids: &[Value], param: &str) -> Result<Vec<u32>, ApiError> {
    ids.iter()
        .map(|id| {
            id.as_u64()
                .and_then(|id| u32::try_from(id).ok())
                .ok_or_else(|| {
                    ApiError::invalid_param(
                        param,
                        format!("`{param}` token ids must be integers from 0 to 4294967295"),
                    )
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    fn openai(body: Value) -> Result<EmbeddingsRequest, ApiError> {
        parse_embeddings_request(body.to_string().as_bytes(), &Limits::default())
    }

    #[test]
    fn every_input_shape_reads() {
        let one = openai(json!({"model": "m", "input": "hi"})).unwrap();
        assert_eq!(one.inputs, [EmbeddingInput::Text("hi".into())]);
        assert_eq!(one.encoding_format, EncodingFormat::Float);
        let ids =
            openai(json!({"model": "m", "input": [1, 2], "encoding_format": "base64"})).unwrap();
        assert_eq!(ids.inputs, [EmbeddingInput::Tokens(vec![1, 2])]);
        assert_eq!(ids.encoding_format, EncodingFormat::Base64);
        let mixed = openai(json!({"model": "m", "input": ["a", [3]], "dimensions": 64})).unwrap();
        assert_eq!(mixed.inputs.len(), 2);
        assert_eq!(mixed.dimensions, Some(64));
        let tei = parse_tei_embed_request(
            br#"{"inputs": ["a", "b"], "normalize": false}"#,
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(
            (tei.inputs.len(), tei.normalize, tei.model),
            (2, false, None)
        );
    }

    #[test]
    fn bad_inputs_are_refused_by_name() {
        let too_many = vec!["x"; 2049];
        for (body, param) in [
            (json!({"model": "m"}), "input"),
            (json!({"model": "m", "input": ""}), "input"),
            (json!({"model": "m", "input": []}), "input"),
            (json!({"model": "m", "input": too_many}), "input"),
            (json!({"model": "m", "input": [1, -2]}), "input"),
            (json!({"model": "m", "input": [[1], []]}), "input"),
            (json!({"model": "m", "input": [4294967296u64]}), "input"),
            (json!({"model": "m", "input": {"a": 1}}), "input"),
            (
                json!({"model": "m", "input": "x", "encoding_format": "int8"}),
                "encoding_format",
            ),
            (
                json!({"model": "m", "input": "x", "dimensions": 0}),
                "dimensions",
            ),
            (json!({"model": "m", "input": "x", "extra": 1}), "extra"),
            (json!({"input": "x"}), "model"),
        ] {
            let error = openai(body.clone()).unwrap_err();
            assert_eq!(
                (error.status, error.param.as_deref()),
                (400, Some(param)),
                "{body}"
            );
        }
        let tei =
            parse_tei_embed_request(br#"{"inputs": "a", "truncate": true}"#, &Limits::default());
        assert_eq!(tei.unwrap_err().param.as_deref(), Some("truncate"));
    }
}
