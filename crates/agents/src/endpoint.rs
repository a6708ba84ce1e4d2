//! [`EndpointModel`]: a chat model behind an OpenAI-compatible endpoint (`POST
//! {endpoint}/chat/completions`), our own `safeformers serve` included.
//!
//! What the endpoint sends back is untrusted: the response is read up to a size limit and
//! within a deadline, parsed as plain JSON (`serde_json`'s own depth limit applies), and only
//! `choices[0].message.content` and `.tool_calls[].{id, function.{name, arguments}}` are read
//! from it. The API key goes only to the endpoint, as `Authorization: Bearer`; no redirect is
//! followed (a 3xx is an error naming where it pointed), so neither the key nor the
//! conversation can be sent on to another host. Nothing here reads the environment: `HF_TOKEN`
//! is never sent.

use std::time::Duration;

use serde_json::{Map, Value, json};
use ureq::http::{Response, Uri};
use ureq::{Agent, Body};

use crate::agent::AgentError;
use crate::chat_model::{ChatModel, ModelTurn, ToolCallRequest, arguments_from_text};

/// Default bound on a response body.
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 16 * 1024 * 1024;
/// Default deadline of one request, connection to last byte (a local model on a small machine
/// may take minutes to answer).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// An error response's body is read up to this size, for its message.
const MAX_ERROR_BODY_BYTES: u64 = 64 * 1024;
/// At most this many characters of anything the endpoint sent are quoted in an error.
const EXCERPT_CHARS: usize = 200;

/// How [`EndpointModel`] talks to its endpoint.
#[derive(Clone, PartialEq)]
pub struct EndpointSettings {
    /// The `model` of each request; `None`: the endpoint's only model (`GET {endpoint}/models`
    /// must list exactly one).
    pub api_model: Option<String>,
    /// Sent as `Authorization: Bearer KEY` to the endpoint, and nowhere else.
    pub api_key: Option<String>,
    /// Sampling temperature (default 0: the most likely reply, as smolagents' default models
    /// are usually run for tool calling).
    pub temperature: f64,
    /// `max_tokens` of each request (default: not sent, the endpoint's default).
    pub max_tokens: Option<u64>,
    /// Deadline of one request, from connecting to the last byte of the response.
    pub timeout: Duration,
    /// The largest response body read.
    pub max_response_bytes: u64,
}

impl Default for EndpointSettings {
    fn default() -> Self {
        EndpointSettings {
            api_model: None,
            api_key: None,
            temperature: 0.0,
            max_tokens: None,
            timeout: DEFAULT_TIMEOUT,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        }
    }
}

impl std::fmt::Debug for EndpointSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointSettings")
            .field("api_model", &self.api_model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("temperature", &self.temperature)
            .field("max_tokens", &self.max_tokens)
            .field("timeout", &self.timeout)
            .field("max_response_bytes", &self.max_response_bytes)
            .finish()
    }
}

/// Why the endpoint gave no usable answer. `url` is the URL requested.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// The endpoint is not a usable base URL.
    #[error("endpoint {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given (credentials never quoted: they are a reason for refusal).
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// No connection, or it broke.
    #[error("{url}: {reason}")]
    Network {
        /// The URL requested.
        url: String,
        /// What failed (the API key never appears).
        reason: String,
    },
    /// No complete answer before the deadline.
    #[error("{url}: no complete answer within {seconds} s")]
    Timeout {
        /// The URL requested.
        url: String,
        /// The deadline.
        seconds: u64,
    },
    /// A redirect, which is never followed.
    #[error(
        "{url} answered HTTP {status}, redirecting to {location:?}; redirects are not followed \
         (the API key and the conversation go to the endpoint given, nowhere else): give the \
         final URL as the endpoint"
    )]
    Redirect {
        /// The URL requested.
        url: String,
        /// The 3xx status.
        status: u16,
        /// Where it pointed (at most 200 characters, control characters escaped).
        location: String,
    },
    /// Any other status than 2xx.
    #[error("{url} answered HTTP {status}: {message}")]
    Status {
        /// The URL requested.
        url: String,
        /// The status.
        status: u16,
        /// The error's message from the body (at most 200 characters), if any.
        message: String,
    },
    /// The response body is larger than the limit.
    #[error("{url}: the response is larger than {limit} bytes")]
    TooLarge {
        /// The URL requested.
        url: String,
        /// The limit.
        limit: u64,
    },
    /// The response is not the JSON of an OpenAI chat completion (or model list).
    #[error("{url}: not an OpenAI-compatible answer: {reason}")]
    InvalidResponse {
        /// The URL requested.
        url: String,
        /// What is missing or wrong.
        reason: String,
    },
    /// No `api_model` was given and the endpoint does not serve exactly one model.
    #[error("{url} serves {models:?}: name the model to use (--api-model)")]
    ModelNeeded {
        /// The URL listing the models.
        url: String,
        /// The models it lists (at most 20).
        models: Vec<String>,
    },
}

/// A chat model behind an OpenAI-compatible endpoint.
pub struct EndpointModel {
    agent: Agent,
    base: String,
    model: String,
    settings: EndpointSettings,
}

impl std::fmt::Debug for EndpointModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointModel")
            .field("base", &self.base)
            .field("model", &self.model)
            .field("settings", &self.settings)
            .finish()
    }
}

impl EndpointModel {
    /// A model at `endpoint` (the base URL, e.g. `http://127.0.0.1:8080/v1`; requests go to
    /// `{endpoint}/chat/completions`). Without `settings.api_model`, asks the endpoint for its
    /// models and takes the only one.
    pub fn new(endpoint: &str, settings: EndpointSettings) -> Result<EndpointModel, EndpointError> {
        let base = checked_base(endpoint)?;
        let agent = Agent::config_builder()
            .max_redirects(0)
            .http_status_as_error(false)
            .timeout_global(Some(settings.timeout))
            .user_agent(format!("safeformers/{}", env!("CARGO_PKG_VERSION")))
            .accept_encoding("identity")
            .build()
            .new_agent();
        let mut model = EndpointModel {
            agent,
            base,
            model: String::new(),
            settings,
        };
        model.model = match &model.settings.api_model {
            Some(name) => name.clone(),
            None => model.only_served_model()?,
        };
        Ok(model)
    }

    /// The model named in requests.
    pub fn api_model(&self) -> &str {
        &self.model
    }

    /// The assistant's turn after `messages`, offered `tools`.
    pub fn chat(&self, messages: &[Value], tools: &[Value]) -> Result<ModelTurn, EndpointError> {
        let url = format!("{}/chat/completions", self.base);
        let mut body = json!({
            "model": self.model,
            "messages": messages.iter().map(openai_message).collect::<Vec<_>>(),
            "temperature": self.settings.temperature,
        });
        if let Some(object) = body.as_object_mut() {
            if !tools.is_empty() {
                object.insert("tools".into(), Value::Array(tools.to_vec()));
            }
            if let Some(max_tokens) = self.settings.max_tokens {
                object.insert("max_tokens".into(), max_tokens.into());
            }
        }
        let request = self
            .agent
            .post(&url)
            .header("Content-Type", "application/json")
            .header("Accept", "application/json");
        let request = match &self.settings.api_key {
            Some(key) => request.header("Authorization", format!("Bearer {key}")),
            None => request,
        };
        let response = request
            .send(body.to_string().as_bytes())
            .map_err(|error| self.transport_error(&url, error))?;
        let answer = self.json_answer(&url, response)?;
        completion_turn(&answer).map_err(|reason| EndpointError::InvalidResponse { url, reason })
    }

    /// `GET {endpoint}/models`: the one model's id, or [`EndpointError::ModelNeeded`].
    fn only_served_model(&self) -> Result<String, EndpointError> {
        let url = format!("{}/models", self.base);
        let request = self.agent.get(&url).header("Accept", "application/json");
        let request = match &self.settings.api_key {
            Some(key) => request.header("Authorization", format!("Bearer {key}")),
            None => request,
        };
        let response = request
            .call()
            .map_err(|error| self.transport_error(&url, error))?;
        let answer = self.json_answer(&url, response)?;
        let ids: Vec<String> = answer
            .get("data")
            .and_then(Value::as_array)
            .ok_or_else(|| EndpointError::InvalidResponse {
                url: url.clone(),
                reason: "no `data` list of models".into(),
            })?
            .iter()
            .filter_map(|model| model.get("id").and_then(Value::as_str))
            .map(str::to_string)
            .collect();
        match ids.as_slice() {
            [only] => Ok(only.clone()),
            _ => Err(EndpointError::ModelNeeded {
                url,
                models: ids.iter().take(20).map(|id| excerpt(id)).collect(),
            }),
        }
    }

    /// The JSON body of a 2xx response; a typed error for anything else.
    fn json_answer(&self, url: &str, mut response: Response<Body>) -> Result<Value, EndpointError> {
        let status = response.status();
        if status.is_redirection() {
            let location = response
                .headers()
                .get("location")
                .map(|value| excerpt(&String::from_utf8_lossy(value.as_bytes())))
                .unwrap_or_default();
            return Err(EndpointError::Redirect {
                url: url.to_string(),
                status: status.as_u16(),
                location,
            });
        }
        if !status.is_success() {
            let body = response
                .body_mut()
                .with_config()
                .limit(MAX_ERROR_BODY_BYTES)
                .read_to_vec()
                .unwrap_or_default();
            return Err(EndpointError::Status {
                url: url.to_string(),
                status: status.as_u16(),
                message: self.scrub(&error_message(&body)),
            });
        }
        let body = response
            .body_mut()
            .with_config()
            .limit(self.settings.max_response_bytes)
            .read_to_vec()
            .map_err(|error| self.transport_error(url, error))?;
        serde_json::from_slice(&body).map_err(|error| EndpointError::InvalidResponse {
            url: url.to_string(),
            reason: format!("not JSON ({error})"),
        })
    }

    /// A ureq failure as a typed error.
    fn transport_error(&self, url: &str, error: ureq::Error) -> EndpointError {
        let url = url.to_string();
        match error {
            ureq::Error::Timeout(_) => EndpointError::Timeout {
                url,
                seconds: self.settings.timeout.as_secs(),
            },
            ureq::Error::BodyExceedsLimit(limit) => EndpointError::TooLarge { url, limit },
            other => EndpointError::Network {
                url,
                reason: self.scrub(&other.to_string()),
            },
        }
    }

    /// `text` with the API key (should anything ever echo it) replaced.
    fn scrub(&self, text: &str) -> String {
        match &self.settings.api_key {
            Some(key) if !key.is_empty() => text.replace(key.as_str(), "<redacted>"),
            _ => text.to_string(),
        }
    }
}

impl ChatModel for EndpointModel {
    fn complete(&self, messages: &[Value], tools: &[Value]) -> Result<ModelTurn, AgentError> {
        Ok(self.chat(messages, tools)?)
    }
}

/// The endpoint without a trailing `/`: an `http` or `https` URL with a host, and no
/// credentials, query or fragment.
fn checked_base(endpoint: &str) -> Result<String, EndpointError> {
    // Credentials and queries (which may hold a key) are never quoted.
    let shown = if endpoint.contains('@') {
        "<a URL with credentials>".to_string()
    } else {
        excerpt(endpoint.split(['?', '#']).next().unwrap_or_default())
    };
    let invalid = |reason| EndpointError::InvalidUrl {
        url: shown.clone(),
        reason,
    };
    let uri: Uri = endpoint.parse().map_err(|_| invalid("not a URL"))?;
    match uri.scheme_str().map(str::to_ascii_lowercase).as_deref() {
        Some("http" | "https") => {}
        _ => return Err(invalid("not an http:// or https:// URL")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(invalid("no host"));
    }
    if uri
        .authority()
        .is_some_and(|authority| authority.as_str().contains('@'))
    {
        return Err(invalid(
            "credentials in the URL are refused: give the API key separately",
        ));
    }
    if uri.query().is_some() || endpoint.contains('#') {
        return Err(invalid("a base URL takes no query or fragment"));
    }
    Ok(endpoint.trim_end_matches('/').to_string())
}

/// A message as OpenAI takes it: an assistant's tool-call arguments as JSON text.
fn openai_message(message: &Value) -> Value {
    let mut message = message.clone();
    let calls = message
        .get_mut("tool_calls")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten();
    for call in calls {
        if let Some(function) = call.get_mut("function").and_then(Value::as_object_mut)
            && let Some(arguments) = function.get_mut("arguments")
            && !arguments.is_string()
        {
            *arguments = Value::String(arguments.to_string());
        }
    }
    message
}

/// `choices[0].message` of a chat completion, read as a turn.
fn completion_turn(answer: &Value) -> Result<ModelTurn, String> {
    let message = answer
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|choices| choices.first())
        .and_then(|choice| choice.get("message"))
        .and_then(Value::as_object)
        .ok_or("no `choices[0].message` object")?;
    let content = match message.get("content") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(text.clone()),
        Some(Value::Array(parts)) => Some(text_of_parts(parts)?),
        Some(_) => return Err("`message.content` is neither text nor a list of parts".into()),
    };
    let tool_calls = match message.get("tool_calls") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(calls)) => calls
            .iter()
            .enumerate()
            .map(|(index, call)| tool_call(index, call))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("`message.tool_calls` is not a list".into()),
    };
    Ok(ModelTurn {
        content,
        tool_calls,
    })
}

/// The text of a list of `{"type": "text", "text"}` parts, joined.
fn text_of_parts(parts: &[Value]) -> Result<String, String> {
    parts
        .iter()
        .map(|part| {
            part.get("text")
                .and_then(Value::as_str)
                .ok_or_else(|| "a `message.content` part has no text".to_string())
        })
        .collect()
}

/// One `tool_calls[]` entry. Arguments that are not JSON are kept as their text (the agent
/// answers the model with an error); a call without a function name is a broken response.
fn tool_call(index: usize, call: &Value) -> Result<ToolCallRequest, String> {
    let function = call
        .get("function")
        .and_then(Value::as_object)
        .ok_or_else(|| format!("`tool_calls[{index}]` has no `function` object"))?;
    let name = function
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("`tool_calls[{index}].function` has no `name`"))?;
    let arguments = match function.get("arguments") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(Value::String(text)) => arguments_from_text(text),
        Some(other) => other.clone(),
    };
    Ok(ToolCallRequest {
        id: call
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        name: name.to_string(),
        arguments,
    })
}

/// The message of an OpenAI error body (`{"error": {"message"}}`), else the body's start.
fn error_message(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let message = serde_json::from_str::<Value>(&text).ok().and_then(|value| {
        value
            .pointer("/error/message")
            .or_else(|| value.get("error"))
            .or_else(|| value.get("message"))
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    excerpt(message.as_deref().unwrap_or(&text))
}

/// At most [`EXCERPT_CHARS`] characters of untrusted `text`, control characters escaped.
fn excerpt(text: &str) -> String {
    let mut shown = String::new();
    for c in text.chars().take(EXCERPT_CHARS) {
        if c.is_control() {
            shown.extend(c.escape_default());
        } else {
            shown.push(c);
        }
    }
    if text.chars().nth(EXCERPT_CHARS).is_some() {
        shown.push('…');
    }
    shown
}
