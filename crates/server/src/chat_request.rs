//! `POST /v1/chat/completions` requests, read and checked against OpenAI's ranges and this
//! server's [`Limits`] before anything runs. Every refusal is a 400 naming the parameter.

use serde_json::Value;

use crate::api_error::ApiError;
use crate::limits::Limits;
use crate::request_fields::{Fields, brief, parse_body, shown};
use crate::sampling::{Sampling, ceiling, read_sampling};

/// The parameters of a chat request this server reads. Anything else is refused by name.
const KNOWN: &[&str] = &[
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "seed",
    "stop",
    "n",
    "presence_penalty",
    "frequency_penalty",
    "logprobs",
    "top_logprobs",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "stream",
    "stream_options",
    "ignore_eos",
    "truncate_prompt_tokens",
    "user",
    "metadata",
    "store",
];

/// The roles a message may have.
const ROLES: &[&str] = &["system", "developer", "user", "assistant", "tool"];

/// A checked chat request.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    /// The served model's name.
    pub model: String,
    /// The messages, each checked (role, content shape), as the template receives them.
    pub messages: Vec<Value>,
    /// Length, sampling, stop strings, `n` and streaming.
    pub sampling: Sampling,
    /// Log-probabilities of the chosen tokens, and of this many alternatives.
    pub logprobs: Option<u64>,
    /// Tool definitions (each a function with an object schema), as the template receives them.
    pub tools: Vec<Value>,
    /// `none`, `auto`, `required`, or one function's name.
    pub tool_choice: ToolChoice,
}

/// `tool_choice`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    /// No tool calls.
    None,
    /// The model decides (the default with tools).
    Auto,
    /// At least one tool call.
    Required,
    /// A call of this function.
    Function(String),
}

/// Reads and checks a chat request body.
pub fn parse_chat_request(body: &[u8], limits: &Limits) -> Result<ChatRequest, ApiError> {
    let value = parse_body(body, limits)?;
    let fields = Fields::of(&value)?;
    fields.refuse_unknown(KNOWN)?;
    let messages = checked_messages(&fields, limits)?;
    let tools = checked_tools(&fields, limits)?;
    let tool_choice = checked_tool_choice(&fields, &tools)?;
    let max_tokens = match fields.integer("max_completion_tokens", 1, ceiling(limits))? {
        Some(tokens) => Some(tokens),
        None => fields.integer("max_tokens", 1, ceiling(limits))?,
    };
    let top_logprobs = fields.integer("top_logprobs", 0, limits.max_top_logprobs as u64)?;
    let logprobs = match (fields.bool("logprobs")?.unwrap_or(false), top_logprobs) {
        (true, alternatives) => Some(alternatives.unwrap_or(0)),
        (false, None) => None,
        (false, Some(_)) => {
            return Err(ApiError::invalid_param(
                "top_logprobs",
                "`top_logprobs` needs `logprobs: true`",
            ));
        }
    };
    Ok(ChatRequest {
        model: fields.string("model")?.to_string(),
        messages,
        sampling: read_sampling(&fields, limits, max_tokens)?,
        logprobs,
        tools,
        tool_choice,
    })
}

/// `messages`: 1 to `--max-messages`, each an object with a known role and a string content, a
/// list of text parts, or (an assistant's with tool calls) none.
fn checked_messages(fields: &Fields<'_>, limits: &Limits) -> Result<Vec<Value>, ApiError> {
    let messages = fields
        .array("messages", limits.max_messages)?
        .filter(|messages| !messages.is_empty())
        .ok_or_else(|| ApiError::invalid_param("messages", "`messages` must hold a message"))?;
    for (index, message) in messages.iter().enumerate() {
        let param = format!("messages[{index}]");
        let message = Fields::of(message)
            .map_err(|_| ApiError::invalid_param(&param, format!("`{param}` must be an object")))?;
        let role = message.string("role").map_err(|_| {
            ApiError::invalid_param(&param, format!("`{param}.role` must be a string"))
        })?;
        if !ROLES.contains(&role) {
            return Err(ApiError::invalid_param(
                &param,
                format!(
                    "`{param}.role` {}: must be one of {}",
                    shown(role),
                    ROLES.join(", ")
                ),
            ));
        }
        let has_calls = message.value("tool_calls").is_some();
        match message.value("content") {
            Some(Value::String(_)) => {}
            Some(Value::Array(parts)) if parts.iter().all(is_text_part) => {}
            None if role == "assistant" && has_calls => {}
            _ => {
                return Err(ApiError::invalid_param(
                    &param,
                    format!(
                        "`{param}.content` must be a string or a list of text parts \
                         ({{\"type\": \"text\", \"text\": ...}})"
                    ),
                ));
            }
        }
    }
    Ok(messages.clone())
}

fn is_text_part(part: &Value) -> bool {
    part.get("type").and_then(Value::as_str) == Some("text")
        && part.get("text").is_some_and(Value::is_string)
}

/// `tools`: at most `--max-tools`, each `{"type": "function", "function": {"name", ...}}` with
/// a plain name and, if given, an object as its `parameters` schema.
fn checked_tools(fields: &Fields<'_>, limits: &Limits) -> Result<Vec<Value>, ApiError> {
    let Some(tools) = fields.array("tools", limits.max_tools)? else {
        return Ok(Vec::new());
    };
    for (index, tool) in tools.iter().enumerate() {
        let param = format!("tools[{index}]");
        let function = tool
            .get("function")
            .filter(|_| tool.get("type").and_then(Value::as_str) == Some("function"));
        let name = function
            .and_then(|function| function.get("name"))
            .and_then(Value::as_str);
        if !name.is_some_and(is_function_name) {
            return Err(ApiError::invalid_param(
                &param,
                format!(
                    "`{param}` must be {{\"type\": \"function\", \"function\": {{\"name\": ...}}}} \
                     with a name of 1 to 64 letters, digits, `_` or `-`"
                ),
            ));
        }
        match function.and_then(|function| function.get("parameters")) {
            None | Some(Value::Object(_)) => {}
            Some(other) => {
                return Err(ApiError::invalid_param(
                    &param,
                    format!(
                        "`{param}.function.parameters` {}: a JSON schema must be an object",
                        brief(other)
                    ),
                ));
            }
        }
    }
    Ok(tools.clone())
}

fn is_function_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-')
}

/// `tool_choice`: `none`, `auto`, `required`, or `{"type": "function", "function": {"name"}}`
/// naming one of the tools.
fn checked_tool_choice(fields: &Fields<'_>, tools: &[Value]) -> Result<ToolChoice, ApiError> {
    let refused = |reason: String| Err(ApiError::invalid_param("tool_choice", reason));
    let choice = match fields.value("tool_choice") {
        None if tools.is_empty() => return Ok(ToolChoice::None),
        None => return Ok(ToolChoice::Auto),
        Some(choice) => choice,
    };
    let named = choice
        .get("function")
        .and_then(|function| function.get("name"))
        .and_then(Value::as_str);
    let choice = match (choice.as_str(), named) {
        (Some("none"), _) => ToolChoice::None,
        (Some("auto"), _) => ToolChoice::Auto,
        (Some("required"), _) => ToolChoice::Required,
        (None, Some(name)) => ToolChoice::Function(name.to_string()),
        _ => {
            return refused(
                "`tool_choice` must be none, auto, required or a function by name".to_string(),
            );
        }
    };
    let declared = |name: &str| {
        tools.iter().any(|tool| {
            tool.get("function")
                .and_then(|function| function.get("name"))
                .and_then(Value::as_str)
                == Some(name)
        })
    };
    match &choice {
        ToolChoice::Auto | ToolChoice::Required if tools.is_empty() => {
            refused("`tool_choice` needs `tools`".to_string())
        }
        ToolChoice::Function(name) if !declared(name) => refused(format!(
            "`tool_choice` names {}, which is not in `tools`",
            shown(name)
        )),
        _ => Ok(choice),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    fn parse(body: &Value) -> Result<ChatRequest, ApiError> {
        parse_chat_request(body.to_string().as_bytes(), &Limits::default())
    }

    fn base() -> Value {
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    }

    fn with(field: &str, value: Value) -> Value {
        let mut body = base();
        body[field] = value;
        body
    }

    #[test]
    fn a_full_request_reads_every_field() {
        let body = json!({
            "model": "smollm2",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "hi"}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "1"}]},
                {"role": "tool", "content": "42", "tool_call_id": "1"},
            ],
            "max_tokens": 100, "max_completion_tokens": 50, "temperature": 0.7, "top_p": 0.9,
            "seed": -3, "stop": ["\n\n", "END"], "n": 2, "presence_penalty": -1.5,
            "frequency_penalty": 0.5, "logprobs": true, "top_logprobs": 5,
            "tools": [{"type": "function", "function": {"name": "get_weather",
                       "parameters": {"type": "object"}}}],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "stream": true, "stream_options": {"include_usage": true}, "user": "u1",
        });
        let request = parse(&body).unwrap();
        let sampling = &request.sampling;
        assert_eq!(sampling.max_tokens, Some(50));
        assert_eq!(
            (sampling.n, sampling.seed, request.logprobs),
            (2, Some(-3), Some(5))
        );
        assert_eq!(sampling.stop, ["\n\n", "END"]);
        assert_eq!(
            request.tool_choice,
            ToolChoice::Function("get_weather".to_string())
        );
        assert!(sampling.stream && sampling.include_usage);
        let plain = parse(&base()).unwrap();
        assert_eq!(plain.tool_choice, ToolChoice::None);
        assert_eq!((plain.sampling.n, plain.sampling.stream), (1, false));
    }

    /// Every out-of-range or malformed parameter is a 400 naming it (nothing is clamped).
    #[test]
    fn hostile_parameters_are_refused_by_name() {
        let many = |count: usize, item: Value| Value::Array(vec![item; count]);
        let tool = json!({"type": "function", "function": {"name": "f"}});
        let cases = [
            (with("top_p", json!(1.5)), "top_p"),
            (with("top_p", json!(-0.1)), "top_p"),
            (with("temperature", json!(2.5)), "temperature"),
            (with("temperature", json!("hot")), "temperature"),
            (with("n", json!(0)), "n"),
            (with("n", json!(9)), "n"),
            (with("n", json!(-1)), "n"),
            (with("max_tokens", json!(0)), "max_tokens"),
            (with("max_tokens", json!(4097)), "max_tokens"),
            (
                with("max_completion_tokens", json!(1e300)),
                "max_completion_tokens",
            ),
            (with("presence_penalty", json!(-2.5)), "presence_penalty"),
            (with("frequency_penalty", json!(3)), "frequency_penalty"),
            (with("top_logprobs", json!(21)), "top_logprobs"),
            (with("top_logprobs", json!(2)), "top_logprobs"),
            (with("stop", many(5, json!("x"))), "stop"),
            (with("stop", json!("")), "stop"),
            (with("stop", json!("x".repeat(257))), "stop"),
            (
                with("stream_options", json!({"include_usage": true})),
                "stream_options",
            ),
            (with("tools", many(129, tool.clone())), "tools"),
            (
                with(
                    "tools",
                    json!([{"type": "function", "function": {"name": "f",
                                   "parameters": "not a schema"}}]),
                ),
                "tools[0]",
            ),
            (
                with(
                    "tools",
                    json!([{"type": "function", "function": {"name": "../x"}}]),
                ),
                "tools[0]",
            ),
            (
                with(
                    "tools",
                    json!([{"type": "code", "function": {"name": "f"}}]),
                ),
                "tools[0]",
            ),
            (with("tool_choice", json!("required")), "tool_choice"),
            (
                with(
                    "tool_choice",
                    json!({"type": "function", "function": {"name": "g"}}),
                ),
                "tool_choice",
            ),
            (with("messages", json!([])), "messages"),
            (
                with(
                    "messages",
                    many(1025, json!({"role": "user", "content": "x"})),
                ),
                "messages",
            ),
            (
                with("messages", json!([{"role": "root", "content": "x"}])),
                "messages[0]",
            ),
            (
                with("messages", json!([{"role": "user", "content": 7}])),
                "messages[0]",
            ),
            (with("messages", json!([{"role": "user"}])), "messages[0]"),
            (with("messages", json!(["hi"])), "messages[0]"),
            (with("logit_bias", json!({"1": 100})), "logit_bias"),
            (with("model", json!(3)), "model"),
            (
                json!({"messages": [{"role": "user", "content": "x"}]}),
                "model",
            ),
        ];
        for (body, param) in cases {
            let error = parse(&body).unwrap_err();
            assert_eq!(error.status, 400, "{body}");
            assert_eq!(
                error.param.as_deref(),
                Some(param),
                "{body}: {}",
                error.message
            );
        }
    }

    #[test]
    fn malformed_bodies_are_400_without_a_param() {
        let limits = Limits::default();
        let deep = format!("{}{}", "[".repeat(65), "]".repeat(65));
        for body in [
            &b"not json"[..],
            b"[1, 2]",
            b"",
            deep.as_bytes(),
            b"{\"model\": \"m\"",
        ] {
            let error = parse_chat_request(body, &limits).unwrap_err();
            assert_eq!((error.status, error.param), (400, None));
        }
    }
}
