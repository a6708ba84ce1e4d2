//! `POST /v1/embeddings` (OpenAI) and `POST /embed` (TEI): inputs counted and checked against
//! the model's window, queued on the model's batching engine, answered as floats or base64.

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::Response;
use safeformers_pipelines::normalized;
use safeformers_tokenize::EncodeOptions;
use tokio::sync::oneshot;

use crate::api_error::ApiError;
use crate::app::{AppState, EmbeddingModel, ServedModel, json_response, refusal_error};
use crate::embedding_engine::EmbeddingJob;
use crate::embeddings_request::{
    EmbeddingInput, EmbeddingsRequest, EncodingFormat, parse_embeddings_request,
    parse_tei_embed_request,
};
use crate::responses::{Embedding, EmbeddingVector, EmbeddingsResponse, EmbeddingsUsage};

/// `POST /v1/embeddings`: the vectors `safeformers run feature-extraction` gives.
pub async fn embeddings(state: Arc<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let request = parse_embeddings_request(&body, &state.limits)?;
    let (served, model) = state.embedding_model(request.model.as_deref())?;
    let (vectors, tokens) = embed(&state, served, model, &request, "input").await?;
    let dimensions = request.dimensions.map(|d| d as usize);
    let size = vectors.first().map_or(0, Vec::len);
    if let Some(asked) = dimensions.filter(|&asked| asked > size) {
        return Err(ApiError::invalid_param(
            "dimensions",
            format!("`dimensions` {asked}: the model's vectors have {size}"),
        ));
    }
    let data = vectors
        .into_iter()
        .enumerate()
        .map(|(index, vector)| {
            let vector = shortened(vector, dimensions);
            Embedding {
                object: "embedding",
                index: index as u64,
                embedding: match request.encoding_format {
                    EncodingFormat::Float => EmbeddingVector::Float(vector),
                    EncodingFormat::Base64 => EmbeddingVector::base64(&vector),
                },
            }
        })
        .collect();
    let tokens = tokens as u64;
    state.metrics.count_tokens(tokens, 0);
    Ok(json_response(
        StatusCode::OK,
        &EmbeddingsResponse {
            object: "list",
            data,
            model: served.name.clone(),
            usage: EmbeddingsUsage {
                prompt_tokens: tokens,
                total_tokens: tokens,
            },
        },
    ))
}

/// TEI's `POST /embed`: a JSON array of vectors, L2-normalized unless `normalize: false`
/// (which gives the model's own vectors, normalized if its folder normalizes).
pub async fn tei_embed(state: Arc<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let request = parse_tei_embed_request(&body, &state.limits)?;
    let (served, model) = state.embedding_model(None)?;
    let (vectors, tokens) = embed(&state, served, model, &request, "inputs").await?;
    state.metrics.count_tokens(tokens as u64, 0);
    let vectors: Vec<Vec<f32>> = if request.normalize {
        vectors.into_iter().map(normalized).collect()
    } else {
        vectors
    };
    Ok(json_response(StatusCode::OK, &vectors))
}

/// Counts and checks the inputs' tokens, queues them, and waits for their vectors.
async fn embed(
    state: &AppState,
    served: &ServedModel,
    model: &EmbeddingModel,
    request: &EmbeddingsRequest,
    param: &'static str,
) -> Result<(Vec<Vec<f32>>, usize), ApiError> {
    let prompt = match &request.prompt_name {
        Some(name) => Some(model.model.pipeline().named_prompt(name).map_err(|error| {
            ApiError::invalid_param("prompt_name", served.redacted(&error.to_string()))
        })?),
        None => None,
    };
    let counted = model.model.clone();
    let inputs = request.inputs.clone();
    let counted_prompt = prompt.clone();
    let tokens = tokio::task::spawn_blocking(move || {
        count_tokens(&counted, &inputs, counted_prompt.as_deref())
    })
    .await
    .map_err(|_| ApiError::bad_request("the inputs could not be tokenized"))?
    .map_err(|message| ApiError::invalid_param(param, served.redacted(&message)))?;
    let (reply, answer) = oneshot::channel();
    model
        .engine
        .submit(EmbeddingJob {
            inputs: request.inputs.clone(),
            prompt,
            tokens,
            reply,
        })
        .map_err(refusal_error)?;
    let deadline = tokio::time::Instant::now() + state.limits.request_timeout;
    let vectors = match tokio::time::timeout_at(deadline, answer).await {
        Err(_) => {
            return Err(ApiError::timed_out(state.limits.request_timeout.as_secs()));
        }
        Ok(Err(_)) => return Err(ApiError::unavailable("the embedding engine stopped")),
        Ok(Ok(Err(message))) => {
            return Err(ApiError::internal(served.redacted(&message)));
        }
        Ok(Ok(Ok(vectors))) => vectors,
    };
    Ok((vectors, tokens))
}

/// The tokens of every input (special tokens included, texts with `prompt` or the model's own
/// prompt prepended); an input longer than the model's window is refused, naming its index.
fn count_tokens(
    model: &safeformers::FeatureExtraction,
    inputs: &[EmbeddingInput],
    prompt: Option<&str>,
) -> Result<usize, String> {
    let pipeline = model.pipeline();
    let window = pipeline.max_length();
    let mut total = 0usize;
    for (index, input) in inputs.iter().enumerate() {
        let count = match input {
            EmbeddingInput::Tokens(ids) => {
                let vocab = pipeline.encoder().tokenizer().vocab_size();
                if let Some(id) = ids.iter().find(|&&id| id as usize >= vocab) {
                    return Err(format!(
                        "input {index}: token id {id} is outside the vocabulary of {vocab}"
                    ));
                }
                ids.len()
            }
            EmbeddingInput::Text(text) => pipeline
                .encoder()
                .tokenizer()
                .encode(
                    &pipeline.prepared_text(text, prompt),
                    &EncodeOptions::default(),
                )
                .map_err(|error| format!("input {index}: {error}"))?
                .iter()
                .next()
                .map_or(0, |encoding| encoding.len()),
        };
        if count > window {
            return Err(format!(
                "input {index} is {count} tokens: the model reads at most {window}"
            ));
        }
        total += count;
    }
    Ok(total)
}

/// The first `dimensions` values, renormalized when the vector was unit length (a
/// Matryoshka-trained model's shortened embedding); the vector itself without `dimensions`.
fn shortened(vector: Vec<f32>, dimensions: Option<usize>) -> Vec<f32> {
    let Some(dimensions) = dimensions.filter(|&d| d < vector.len()) else {
        return vector;
    };
    let norm: f32 = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
    let mut short = vector;
    short.truncate(dimensions);
    if (norm - 1.0).abs() < 1e-3 {
        normalized(short)
    } else {
        short
    }
}
