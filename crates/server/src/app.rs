//! Every request lands in [`handle`]: routing, the API key, CORS, the body bound, and the
//! response and log line of each request. The endpoints themselves are in [`crate::generate`]
//! and [`crate::embed`].

use std::convert::Infallible;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use http_body::Frame;
use safeformers::{FeatureExtraction, TextGeneration};
use safeformers_pipelines::ToolCallFormat;
use serde_json::json;
use tokio::sync::mpsc;

use crate::api_error::ApiError;
use crate::embedding_engine::EmbeddingEngine;
use crate::exposure::ApiKey;
use crate::generation_engine::{GenerationEngine, Refusal};
use crate::limits::Limits;
use crate::metrics::{Endpoint, Metrics};

/// A generative model and its engine.
#[derive(Debug)]
pub struct GenerationModel {
    /// The loaded pipeline.
    pub model: Arc<TextGeneration>,
    /// Its continuous-batching thread.
    pub engine: GenerationEngine,
    /// How its replies carry tool calls, from its chat template.
    pub tool_format: Option<ToolCallFormat>,
}

/// An embedding model and its engine.
#[derive(Debug)]
pub struct EmbeddingModel {
    /// The loaded pipeline.
    pub model: Arc<FeatureExtraction>,
    /// Its batching thread.
    pub engine: EmbeddingEngine,
}

/// What a served model does.
#[derive(Debug)]
pub enum ServedKind {
    /// Chat and completions.
    Generation(GenerationModel),
    /// Embeddings.
    Embedding(EmbeddingModel),
}

/// A model the server answers for.
#[derive(Debug)]
pub struct ServedModel {
    /// The name requests give as `model`.
    pub name: String,
    /// Its folder on this host: never shown to clients (errors naming it are rewritten to
    /// name the model instead).
    pub dir: PathBuf,
    /// Unix seconds of its loading.
    pub created: u64,
    /// What it does.
    pub kind: ServedKind,
}

impl ServedModel {
    /// `message` with this model's folder replaced by its served name: clients never see the
    /// host's paths.
    pub fn redacted(&self, message: &str) -> String {
        let dir = self.dir.display().to_string();
        if dir.is_empty() {
            return message.to_string();
        }
        message.replace(&dir, &self.name)
    }
}

/// Who may call, from where, and how requests are logged.
#[derive(Debug, Default)]
pub struct AccessPolicy {
    /// Required as `Authorization: Bearer KEY` on every endpoint but `/health`.
    pub api_key: Option<ApiKey>,
    /// Origins answered with CORS headers (none by default: no CORS at all).
    pub cors_origins: Vec<String>,
    /// Log prompts and completions (never by default).
    pub log_content: bool,
}

/// The state every request shares.
#[derive(Debug)]
pub struct AppState {
    /// The models, in the order given.
    pub models: Vec<ServedModel>,
    /// Request bounds.
    pub limits: Limits,
    /// Keys, CORS, logging.
    pub access: AccessPolicy,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Set once every model is loaded; `/health` answers 503 before.
    pub ready: AtomicBool,
}

impl AppState {
    /// The model a request names, or 404 in OpenAI's shape.
    pub fn model(&self, name: &str) -> Result<&ServedModel, ApiError> {
        self.models
            .iter()
            .find(|model| model.name == name)
            .ok_or_else(|| ApiError::model_not_found(name))
    }

    /// The generative model a request names.
    pub fn generation_model(
        &self,
        name: &str,
    ) -> Result<(&ServedModel, &GenerationModel), ApiError> {
        let model = self.model(name)?;
        match &model.kind {
            ServedKind::Generation(generation) => Ok((model, generation)),
            ServedKind::Embedding(_) => Err(ApiError::invalid_param(
                "model",
                format!("`{name}` is an embedding model: it serves /v1/embeddings only"),
            )),
        }
    }

    /// The embedding model a request names, or the only one when it names none (TEI).
    pub fn embedding_model(
        &self,
        name: Option<&str>,
    ) -> Result<(&ServedModel, &EmbeddingModel), ApiError> {
        let embedding = |model: &ServedModel| match &model.kind {
            ServedKind::Embedding(_) => true,
            ServedKind::Generation(_) => false,
        };
        let model = match name {
            Some(name) => self.model(name)?,
            None => {
                let mut found = self.models.iter().filter(|model| embedding(model));
                match (found.next(), found.next()) {
                    (Some(only), None) => only,
                    (None, _) => {
                        return Err(ApiError::bad_request("this server has no embedding model"));
                    }
                    (Some(_), Some(_)) => {
                        return Err(ApiError::bad_request(
                            "this server has several embedding models: use /v1/embeddings with \
                             a `model`",
                        ));
                    }
                }
            }
        };
        match &model.kind {
            ServedKind::Embedding(engine) => Ok((model, engine)),
            ServedKind::Generation(_) => Err(ApiError::invalid_param(
                "model",
                format!(
                    "`{}` is a generative model: it serves chat and completions, not embeddings",
                    model.name
                ),
            )),
        }
    }
}

/// The routes: endpoint, method, handler kind.
fn endpoint_of(path: &str) -> Endpoint {
    match path {
        "/v1/chat/completions" => Endpoint::ChatCompletions,
        "/v1/completions" => Endpoint::Completions,
        "/v1/embeddings" => Endpoint::Embeddings,
        "/embed" => Endpoint::TeiEmbed,
        "/v1/models" => Endpoint::Models,
        _ if path.starts_with("/v1/models/") => Endpoint::Models,
        "/health" => Endpoint::Health,
        "/metrics" => Endpoint::Metrics,
        _ => Endpoint::Other,
    }
}

/// Answers one request (never panics on its content; every refusal is an OpenAI error body).
pub async fn handle(state: Arc<AppState>, request: Request) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let endpoint = endpoint_of(request.uri().path());
    let origin = request.headers().get(header::ORIGIN).cloned();
    let mut response = match route(&state, endpoint, request).await {
        Ok(response) => response,
        Err(error) => error_response(&error),
    };
    add_cors_headers(&state.access, origin.as_ref(), &mut response);
    let status = response.status().as_u16();
    state.metrics.count_request(endpoint, status);
    // One line per request: never its body or headers (they may hold prompts or the key).
    tracing::info!(
        method = %method,
        endpoint = endpoint.label(),
        status,
        millis = started.elapsed().as_millis() as u64,
        "request"
    );
    response
}

async fn route(
    state: &Arc<AppState>,
    endpoint: Endpoint,
    request: Request,
) -> Result<Response, ApiError> {
    let method = request.method().clone();
    if method == Method::OPTIONS && !state.access.cors_origins.is_empty() {
        return Ok(preflight());
    }
    let allowed = match endpoint {
        Endpoint::ChatCompletions
        | Endpoint::Completions
        | Endpoint::Embeddings
        | Endpoint::TeiEmbed => Method::POST,
        Endpoint::Models | Endpoint::Health | Endpoint::Metrics => Method::GET,
        Endpoint::Other => {
            return Err(ApiError::no_route(
                method.as_str(),
                &printable_path(request.uri().path()),
            ));
        }
    };
    if method != allowed {
        return Err(ApiError {
            status: 405,
            ..ApiError::no_route(method.as_str(), &printable_path(request.uri().path()))
        });
    }
    if endpoint == Endpoint::Health {
        return Ok(health(state));
    }
    if let Some(key) = &state.access.api_key {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes);
        if !key.authorizes(given) {
            return Err(ApiError::unauthorized());
        }
    }
    match endpoint {
        Endpoint::Models => match request.uri().path().strip_prefix("/v1/models/") {
            // Model ids may hold a `/` (`org/name`): the rest of the path is the id.
            Some(id) => model(state, id),
            None => Ok(models(state)),
        },
        Endpoint::Metrics => Ok(text_response(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            state.metrics.render(),
        )),
        Endpoint::ChatCompletions => {
            let body = read_body(
                request,
                state.limits.max_body_bytes,
                state.limits.header_timeout,
            )
            .await?;
            crate::generate::chat_completions(state.clone(), body).await
        }
        Endpoint::Completions => {
            let body = read_body(
                request,
                state.limits.max_body_bytes,
                state.limits.header_timeout,
            )
            .await?;
            crate::generate::completions(state.clone(), body).await
        }
        Endpoint::Embeddings => {
            let body = read_body(
                request,
                state.limits.max_body_bytes,
                state.limits.header_timeout,
            )
            .await?;
            crate::embed::embeddings(state.clone(), body).await
        }
        Endpoint::TeiEmbed => {
            let body = read_body(
                request,
                state.limits.max_body_bytes,
                state.limits.header_timeout,
            )
            .await?;
            crate::embed::tei_embed(state.clone(), body).await
        }
        Endpoint::Health | Endpoint::Other => Err(ApiError::no_route(method.as_str(), "")),
    }
}

/// At most 100 printable characters of a request path, for error messages.
fn printable_path(path: &str) -> String {
    path.chars().filter(|c| !c.is_control()).take(100).collect()
}

/// The request body, at most `limit` bytes (413 beyond, whether it says its length or not),
/// complete within `deadline` (408 after: a client trickling its body holds no connection for
/// longer than one trickling its headers).
async fn read_body(request: Request, limit: usize, deadline: Duration) -> Result<Bytes, ApiError> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(ApiError::body_too_large(limit));
    }
    match tokio::time::timeout(deadline, axum::body::to_bytes(request.into_body(), limit)).await {
        Ok(Ok(body)) => Ok(body),
        Ok(Err(_)) => Err(ApiError::body_too_large(limit)),
        Err(_) => Err(ApiError {
            status: 408,
            ..ApiError::bad_request(format!(
                "the request body did not arrive within {} s (--header-timeout)",
                deadline.as_secs()
            ))
        }),
    }
}

fn health(state: &AppState) -> Response {
    if state.ready.load(Ordering::SeqCst) {
        json_response(StatusCode::OK, &json!({"status": "ok"}))
    } else {
        error_response(&ApiError::unavailable("the models are still loading"))
    }
}

fn model_object(model: &ServedModel) -> serde_json::Value {
    json!({
        "id": model.name,
        "object": "model",
        "created": model.created,
        "owned_by": "safeformers",
    })
}

/// `GET /v1/models`.
fn models(state: &AppState) -> Response {
    let data: Vec<_> = state.models.iter().map(model_object).collect();
    json_response(StatusCode::OK, &json!({"object": "list", "data": data}))
}

/// `GET /v1/models/{id}` (the id percent-decoded as clients encode a `/` in it).
fn model(state: &AppState, id: &str) -> Result<Response, ApiError> {
    let id = id.replace("%2F", "/").replace("%2f", "/");
    let served = state.model(&id)?;
    Ok(json_response(StatusCode::OK, &model_object(served)))
}

/// A JSON response.
pub fn json_response(status: StatusCode, value: &impl serde::Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(bytes) => bytes_response(status, "application/json", Bytes::from(bytes)),
        Err(error) => {
            tracing::error!(%error, "a response could not be serialized");
            bytes_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "application/json",
                Bytes::from_static(br#"{"error":{"message":"internal error","type":"server_error","param":null,"code":null}}"#),
            )
        }
    }
}

fn text_response(status: StatusCode, content_type: &'static str, text: String) -> Response {
    bytes_response(status, content_type, Bytes::from(text))
}

fn bytes_response(status: StatusCode, content_type: &'static str, bytes: Bytes) -> Response {
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// An OpenAI error body with its status (and `Retry-After` when it has one).
pub fn error_response(error: &ApiError) -> Response {
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = json_response(status, &error.body());
    if let Some(seconds) = error.retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// The answer to a request the engine would not queue.
pub fn refusal_error(refusal: Refusal) -> ApiError {
    match refusal {
        Refusal::QueueFull => ApiError::queue_full(1),
        Refusal::ShuttingDown => ApiError::unavailable("the server is shutting down"),
    }
}

/// A CORS preflight (only when origins are configured; the origin is checked when the
/// headers are added).
fn preflight() -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("authorization, content-type"),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    response
}

/// `Access-Control-Allow-Origin` for an origin named by `--cors-origin`, and nothing else.
fn add_cors_headers(access: &AccessPolicy, origin: Option<&HeaderValue>, response: &mut Response) {
    let Some(origin) = origin else {
        return;
    };
    let allowed = origin.to_str().ok().is_some_and(|origin| {
        access
            .cors_origins
            .iter()
            .any(|allowed| allowed == origin || allowed == "*")
    });
    let headers: &mut HeaderMap = response.headers_mut();
    if allowed {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
}

/// A streamed response body fed through a channel: the producer task ends when the client
/// goes away (its sends fail), which drops what it was reading from.
pub struct ChannelBody {
    chunks: mpsc::Receiver<Bytes>,
}

impl ChannelBody {
    /// A body and the sender that feeds it (`capacity` chunks buffered).
    pub fn new(capacity: usize) -> (mpsc::Sender<Bytes>, ChannelBody) {
        let (sender, chunks) = mpsc::channel(capacity.max(1));
        (sender, ChannelBody { chunks })
    }
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.get_mut()
            .chunks
            .poll_recv(cx)
            .map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes))))
    }
}

/// A `text/event-stream` response reading `body`.
pub fn event_stream_response(body: ChannelBody) -> Response {
    let mut response = Response::new(Body::new(body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
