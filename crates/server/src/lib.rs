//! `safeformers serve`: the OpenAI API (chat completions, completions, embeddings, models) and
//! TEI's `/embed` over the models of the front door, built to be exposed.
//!
//! This crate grows in layers, each tested alone before the next uses it:
//! - [`exposure`]: where the server may listen and who may call it. Loopback by default; any
//!   other address only with an API key, which is compared in constant time.
//! - [`limits`]: every bound a request meets (body, headers, tokens, `n`, messages, tools, JSON
//!   depth, timeouts), each with a safe default and a flag.
//! - [`json_shape`]: a bounded pre-check of a request body (nesting depth, element count)
//!   before serde builds anything from it.
//! - [`api_error`]: OpenAI's error body (`{"error": {"message", "type", "param", "code"}}`) and
//!   its status codes; requests are refused with it, never with a panic or a 500.
//!
//! - [`chat_request`] (on [`request_fields`]): chat completion requests read field by field,
//!   every parameter checked against OpenAI's ranges and the limits, unknown ones refused;
//!   the parameters shared with [`completion_request`] in [`sampling`]; [`embeddings_request`] for
//!   OpenAI's `/v1/embeddings` and TEI's `/embed`.
//!
//! - [`responses`]: the response bodies in OpenAI's shapes, base64 vectors, and the
//!   server-sent events framing.
//!
//! - [`metrics`]: `GET /metrics` in Prometheus' text format, over fixed label sets.
//!
//! - [`generation_engine`]: continuous batching over the front door's steppable generator (a
//!   thread per generative model; requests join at the next step, leave when finished or
//!   cancelled; a bounded queue), with [`stop_text`] for OpenAI's `stop` strings;
//!   [`embedding_engine`]: token-budgeted batches for embeddings.
//! - [`app`]: routing, the API key, CORS, body bounds; [`generate`] and [`embed`] the
//!   endpoints; [`server`] loading, binding (on [`safeformers_http::accept_loop`]) and the
//!   graceful stop.

pub mod api_error;
pub mod app;
pub mod chat_request;
pub mod completion_request;
pub mod embed;
pub mod embedding_engine;
pub mod embeddings_request;
pub mod exposure;
pub mod generate;
pub mod generation_engine;
pub mod json_shape;
pub mod limits;
pub mod metrics;
pub mod request_fields;
pub mod responses;
pub mod sampling;
pub mod server;
pub mod stop_text;

pub use server::{ModelSpec, ServeConfig, ServeError, ServerHandle, serve_until_signal, start};
