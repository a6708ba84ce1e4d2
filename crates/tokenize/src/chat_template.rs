//! Chat templates: the Jinja programs in `tokenizer_config.json` (or `chat_template.jinja`) that
//! turn a list of messages into the prompt text a chat model was trained on.
//!
//! Rendered with `minijinja` set up as Transformers sets up Jinja2 in
//! `utils/chat_template_utils.py` (`trim_blocks`, `lstrip_blocks`, loop controls, no HTML
//! escaping, its own `tojson`, `raise_exception`, `strftime_now`), with the Python string, list
//! and dict methods real templates call (`strip`, `split`, `startswith`, `items`, `get`, ...).
//!
//! A template comes from the model repository, so it is untrusted input. A render is bounded by
//! [`ChatTemplateLimits`]: fuel (minijinja charges one unit per instruction and per 64 bytes of
//! data a template creates, so both endless loops and string doubling run out), recursion depth,
//! and the size of the output (written into a buffer that refuses to grow past the limit).
//! Every failure is a [`TokenizeError::ChatTemplate`] naming the template and the
//! [`ChatTemplateProblem`]; a template's own `raise_exception("...")` is passed through as
//! [`ChatTemplateProblem::Raised`].
//!
//! Known gap (minijinja 3.1.0): list concatenation with `+` is lazy and not charged to fuel, and
//! once 33 concatenations are nested minijinja materializes the list without a size check, so a
//! template that doubles a list 33 times (`{% set ns.l = ns.l + ns.l %}` in a loop) allocates
//! 2^33 items. Strings, repetition with `*`, loops, macros and output are bounded. For that gap
//! (and any other the engine may have), a [`ChatTemplateRequest`] can be rendered in an isolated
//! process under operating-system limits; the `safeformers` library and CLI do so by default.

use std::io::Write;

use minijinja::value::{Kwargs, Rest, Value as JinjaValue, ValueKind};
use minijinja::{AutoEscape, Environment, Error as JinjaError, ErrorKind, State};
use serde_json::{Map, Value};

use crate::config::SpecialTokens;
use crate::error::{Result, TokenizeError};

/// Default fuel for one render. Every golden of real templates (Llama 3.1 and Qwen2.5 with
/// tools included) renders with a tenth of it; this bound keeps a hostile template well
/// under a second even in an unoptimised build.
pub const DEFAULT_CHAT_TEMPLATE_FUEL: u64 = 1_000_000;

/// Default limit on the rendered prompt, in bytes.
pub const DEFAULT_MAX_CHAT_TEMPLATE_OUTPUT_BYTES: usize = 4 * 1024 * 1024;

/// Default limit on nesting (minijinja's recursion counter: loops and conditions count 1,
/// macro calls more). Real templates nest a handful of levels.
pub const DEFAULT_CHAT_TEMPLATE_RECURSION_LIMIT: usize = 100;

/// Deepest value `tojson` serializes (Python's `json.dumps` stops near 1000 with a
/// `RecursionError`; templates serialize tool schemas a few levels deep).
const MAX_TOJSON_DEPTH: usize = 128;

/// Widest `indent` accepted by `tojson` (templates use 2 or 4).
const MAX_TOJSON_INDENT: usize = 64;

/// The bounds on one render of a chat template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChatTemplateLimits {
    /// minijinja fuel: one unit per instruction, plus one per 64 bytes of data created.
    pub fuel: u64,
    /// The longest output, in bytes.
    pub max_output_bytes: usize,
    /// The deepest nesting of blocks and macro calls (at most minijinja's own cap of 500).
    pub max_recursion: usize,
}

impl Default for ChatTemplateLimits {
    fn default() -> Self {
        Self {
            fuel: DEFAULT_CHAT_TEMPLATE_FUEL,
            max_output_bytes: DEFAULT_MAX_CHAT_TEMPLATE_OUTPUT_BYTES,
            max_recursion: DEFAULT_CHAT_TEMPLATE_RECURSION_LIMIT,
        }
    }
}

/// The arguments of Transformers' `apply_chat_template(messages, tokenize=False, ...)`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ChatTemplateOptions {
    /// Append the header that starts the assistant's turn.
    pub add_generation_prompt: bool,
    /// Tool definitions (JSON schemas), passed to the template as `tools`.
    pub tools: Option<Vec<Value>>,
    /// Documents for retrieval-augmented templates, passed as `documents`.
    pub documents: Option<Vec<Value>>,
    /// Further template variables (`date_string`, `enable_thinking`, ...); they override the
    /// special tokens of the same name, as Transformers' `**kwargs` do.
    pub extra: Map<String, Value>,
    /// Leave the last message open so the model continues it (a prefilled assistant answer),
    /// as Transformers' `continue_final_message=True`: the render is cut right after that
    /// message's `content`. Cannot be combined with `add_generation_prompt`.
    pub continue_final_message: bool,
    /// Which of several named templates to use (`tool_use`, `rag`, ...). Without a name:
    /// `tool_use` when tools are given and the tokenizer has it, else the default template.
    pub template_name: Option<String>,
    /// Bounds on the render.
    pub limits: ChatTemplateLimits,
}

/// What went wrong with a chat template (the payload of [`TokenizeError::ChatTemplate`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum ChatTemplateProblem {
    /// The tokenizer has no chat template at all.
    #[error(
        "the tokenizer has no chat template (tokenizer_config.json `chat_template`, chat_template.jinja or additional_chat_templates/)"
    )]
    Missing,
    /// A template name was asked for that the tokenizer does not have.
    #[error("no chat template of that name; available: {available:?}")]
    UnknownName {
        /// The names the tokenizer has.
        available: Vec<String>,
    },
    /// The tokenizer has several named templates, none called `default`, and no name was given.
    #[error("several chat templates and none is named \"default\"; pick one of {available:?}")]
    NoDefault {
        /// The names the tokenizer has.
        available: Vec<String>,
    },
    /// The messages or options cannot be given to a template.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The template is not valid Jinja (or uses syntax minijinja does not support).
    #[error("syntax error: {0}")]
    Syntax(String),
    /// The template called `raise_exception(message)`: its own error, passed through.
    #[error("the template raised an error: {0}")]
    Raised(String),
    /// The render used up its fuel (too many instructions or too much data).
    #[error(
        "the template ran out of fuel ({fuel} units): it loops or builds data without end, or needs a larger limit"
    )]
    OutOfFuel {
        /// The fuel it had.
        fuel: u64,
    },
    /// The render produced more text than allowed.
    #[error("the rendered prompt is longer than the limit of {limit} bytes")]
    OutputTooLarge {
        /// The limit.
        limit: usize,
    },
    /// The render nested deeper than allowed (recursive macros, deep loops).
    #[error("the template nests deeper than the limit of {limit}")]
    TooDeep {
        /// The limit.
        limit: usize,
    },
    /// The render was stopped by the operating-system limits of an isolated renderer (a child
    /// process with capped memory and time), or that process failed.
    #[error("the template exceeded the isolated renderer's limits: {0}")]
    Isolation(String),
    /// Any other failure while rendering (a filter used on the wrong type, an undefined
    /// attribute, ...), with minijinja's message and line.
    #[error("render failed: {0}")]
    Render(String),
}

/// Marks the error of a template's `raise_exception(message)`, so it can be told apart from
/// the engine's own errors.
#[derive(Debug)]
struct RaisedByTemplate(String);

impl std::fmt::Display for RaisedByTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RaisedByTemplate {}

/// A buffer that refuses writes past a limit.
struct CappedOutput {
    bytes: Vec<u8>,
    limit: usize,
    exceeded: bool,
}

impl Write for CappedOutput {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len().saturating_add(data.len()) > self.limit {
            self.exceeded = true;
            return Err(std::io::Error::other("chat template output limit reached"));
        }
        self.bytes.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Renders the chat template `source` (called `name` in errors) over `messages`, as
/// Transformers' `apply_chat_template(messages, tokenize=False, ...)` does: messages lose their
/// `null` fields, reasoning is copied under `thinking` and `reasoning_content`, and the
/// template sees `messages`, `tools`, `documents`, `add_generation_prompt`, the special tokens
/// by role (`bos_token`, `eos_token`, ...) and `options.extra`.
///
/// ```
/// use safeformers_tokenize::{ChatTemplateOptions, SpecialTokens, render_chat_template};
/// let template = "{% for m in messages %}<|{{ m.role }}|>{{ m.content | trim }}{{ eos_token }}\n{% endfor %}\
///                 {% if add_generation_prompt %}<|assistant|>{% endif %}";
/// let messages = [serde_json::json!({"role": "user", "content": " Hi! "})];
/// let options = ChatTemplateOptions { add_generation_prompt: true, ..Default::default() };
/// let special = SpecialTokens { eos: Some("</s>".into()), ..Default::default() };
/// let prompt = render_chat_template("example", template, &messages, &options, &special)?;
/// assert_eq!(prompt, "<|user|>Hi!</s>\n<|assistant|>");
/// # Ok::<(), safeformers_tokenize::TokenizeError>(())
/// ```
pub fn render_chat_template(
    name: &str,
    source: &str,
    messages: &[Value],
    options: &ChatTemplateOptions,
    special_tokens: &SpecialTokens,
) -> Result<String> {
    let fail = |problem| TokenizeError::ChatTemplate {
        template: name.to_owned(),
        problem,
    };
    if options.continue_final_message && !source.contains("content") {
        return Err(fail(ChatTemplateProblem::InvalidInput(
            "continue_final_message: the template never reads `content`".into(),
        )));
    }
    let (context, final_text) =
        template_context(messages, options, special_tokens).map_err(&fail)?;
    let source = rewrite_generation_tags(source);
    let limits = options.limits;
    let rendered = crate::panic_guard::catch_quietly(|| render(&source, context, limits))
        .unwrap_or_else(|payload| {
            Err(ChatTemplateProblem::Render(format!(
                "the template engine failed (internal error: {})",
                crate::panic_guard::panic_text(payload.as_ref())
            )))
        });
    let rendered = rendered.map_err(&fail)?;
    match final_text {
        Some(final_text) => cut_at_final_message(&rendered, &final_text).map_err(fail),
        None => Ok(rendered),
    }
}

/// One render of a chat template, with everything it needs and nothing else: the template's
/// name and source, the messages, the options and the special tokens. It can be rendered here
/// ([`ChatTemplateRequest::render`]) or, serialized as JSON, by an isolated renderer — a child
/// process under operating-system memory and time limits, which is what the `safeformers` library
/// does, as defence in depth against template-engine gaps that fuel does not cover.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ChatTemplateRequest {
    /// The template's name (for errors).
    pub template_name: String,
    /// The Jinja source.
    pub source: String,
    /// The conversation.
    pub messages: Vec<Value>,
    /// The options of the render.
    pub options: ChatTemplateOptions,
    /// The tokenizer's special tokens, passed to the template by role.
    pub special_tokens: SpecialTokens,
}

impl ChatTemplateRequest {
    /// Renders in this process (see [`render_chat_template`]).
    pub fn render(&self) -> Result<String> {
        render_chat_template(
            &self.template_name,
            &self.source,
            &self.messages,
            &self.options,
            &self.special_tokens,
        )
    }
}

/// The variables a template sees, as Transformers builds them, and for
/// `continue_final_message` the final message's text.
fn template_context(
    messages: &[Value],
    options: &ChatTemplateOptions,
    special_tokens: &SpecialTokens,
) -> std::result::Result<(JinjaValue, Option<String>), ChatTemplateProblem> {
    if messages.is_empty() {
        return Err(ChatTemplateProblem::InvalidInput(
            "the conversation is empty; give at least one message".into(),
        ));
    }
    // As Transformers: tools are JSON schemas (dicts), documents dicts.
    for (what, list) in [("tool", &options.tools), ("document", &options.documents)] {
        if let Some(index) = list.iter().flatten().position(|item| !item.is_object()) {
            return Err(ChatTemplateProblem::InvalidInput(format!(
                "{what} {index} is not a JSON object"
            )));
        }
    }
    let mut final_text = None;
    let mut chat = Vec::with_capacity(messages.len());
    for (index, message) in messages.iter().enumerate() {
        let Value::Object(fields) = message else {
            return Err(ChatTemplateProblem::InvalidInput(format!(
                "message {index} is not a JSON object"
            )));
        };
        // Transformers drops `None` fields (APIs send `"content": null` with tool calls).
        let fields: Map<String, Value> = fields
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        chat.push(Value::Object(alias_reasoning(fields)));
    }

    if options.continue_final_message {
        if options.add_generation_prompt {
            return Err(ChatTemplateProblem::InvalidInput(
                "continue_final_message and add_generation_prompt cannot be combined".into(),
            ));
        }
        final_text = Some(tag_final_message(&mut chat)?);
    }

    let mut context = Map::new();
    let roles = [
        ("bos_token", &special_tokens.bos),
        ("eos_token", &special_tokens.eos),
        ("unk_token", &special_tokens.unk),
        ("sep_token", &special_tokens.sep),
        ("pad_token", &special_tokens.pad),
        ("cls_token", &special_tokens.cls),
        ("mask_token", &special_tokens.mask),
    ];
    for (role, token) in roles {
        if let Some(token) = token {
            context.insert(role.into(), Value::String(token.clone()));
        }
    }
    for (key, value) in &options.extra {
        if matches!(
            key.as_str(),
            "messages" | "tools" | "documents" | "add_generation_prompt"
        ) {
            return Err(ChatTemplateProblem::InvalidInput(format!(
                "`{key}` is set by the options themselves and cannot be an extra variable"
            )));
        }
        context.insert(key.clone(), value.clone());
    }
    context.insert("messages".into(), Value::Array(chat));
    context.insert(
        "tools".into(),
        options.tools.clone().map_or(Value::Null, Value::Array),
    );
    context.insert(
        "documents".into(),
        options.documents.clone().map_or(Value::Null, Value::Array),
    );
    context.insert(
        "add_generation_prompt".into(),
        Value::Bool(options.add_generation_prompt),
    );
    Ok((to_template_value(&Value::Object(context), 0)?, final_text))
}

/// Deepest JSON input handed to a template (serde_json's own parser stops at 128).
const MAX_INPUT_DEPTH: usize = 128;

/// A JSON value as a template value, keeping the order of object keys.
fn to_template_value(
    value: &Value,
    depth: usize,
) -> std::result::Result<JinjaValue, ChatTemplateProblem> {
    if depth > MAX_INPUT_DEPTH {
        return Err(ChatTemplateProblem::InvalidInput(format!(
            "the messages or options nest deeper than {MAX_INPUT_DEPTH} levels"
        )));
    }
    Ok(match value {
        Value::Null => JinjaValue::from(()),
        Value::Bool(b) => JinjaValue::from(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => JinjaValue::from(i),
            (None, Some(u), _) => JinjaValue::from(u),
            (None, None, Some(f)) => JinjaValue::from(f),
            (None, None, None) => JinjaValue::from(()),
        },
        Value::String(s) => JinjaValue::from(s.as_str()),
        Value::Array(items) => JinjaValue::from(
            items
                .iter()
                .map(|item| to_template_value(item, depth + 1))
                .collect::<std::result::Result<Vec<_>, _>>()?,
        ),
        Value::Object(fields) => JinjaValue::from_pairs(
            fields
                .iter()
                .map(|(k, v)| {
                    Ok((
                        JinjaValue::from(k.as_str()),
                        to_template_value(v, depth + 1)?,
                    ))
                })
                .collect::<std::result::Result<Vec<_>, ChatTemplateProblem>>()?,
        ),
    })
}

/// Marks the end of the last message's text for `continue_final_message` (Transformers'
/// marker, with its trailing space).
const CONTINUE_FINAL_MESSAGE_TAG: &str = "CONTINUE_FINAL_MESSAGE_TAG ";

/// Appends [`CONTINUE_FINAL_MESSAGE_TAG`] to the last message's `content` (a string, or the
/// last block with a `text` in a list of blocks); returns that text without the tag.
fn tag_final_message(chat: &mut [Value]) -> std::result::Result<String, ChatTemplateProblem> {
    let invalid = |message: &str| ChatTemplateProblem::InvalidInput(message.to_owned());
    let content = chat
        .last_mut()
        .and_then(|message| message.get_mut("content"))
        .ok_or_else(|| invalid("continue_final_message: the final message has no content"))?;
    let text = match content {
        Value::String(text) => text,
        Value::Array(blocks) => blocks
            .iter_mut()
            .rev()
            .find_map(|block| match block.get_mut("text") {
                Some(Value::String(text)) => Some(text),
                _ => None,
            })
            .ok_or_else(|| invalid("continue_final_message: no text in the final message"))?,
        _ => {
            return Err(invalid(
                "continue_final_message: the final content is not text",
            ));
        }
    };
    let original = text.clone();
    text.push_str(CONTINUE_FINAL_MESSAGE_TAG);
    Ok(original)
}

/// Cuts a render at the final message's tag, as Transformers does: right before it when the
/// template kept the tag whole, else also dropping the whitespace before it.
fn cut_at_final_message(
    rendered: &str,
    final_text: &str,
) -> std::result::Result<String, ChatTemplateProblem> {
    let tag = CONTINUE_FINAL_MESSAGE_TAG.trim();
    let missing = || {
        ChatTemplateProblem::InvalidInput(
            "continue_final_message: the final message does not appear in the rendered chat (the template changes it)"
                .into(),
        )
    };
    if !rendered.contains(final_text.trim()) {
        return Err(missing());
    }
    let at = rendered.rfind(tag).ok_or_else(missing)?;
    let (before, after) = rendered.split_at(at);
    Ok(if after.starts_with(CONTINUE_FINAL_MESSAGE_TAG) {
        before.to_owned()
    } else {
        before.trim_end().to_owned()
    })
}

/// Transformers' `_alias_reasoning_fields`: a message's reasoning (the first non-null of
/// `reasoning_content`, `thinking`, `reasoning`) becomes `{"thinking": r, **message,
/// "reasoning_content": r}`, so templates reading either name find it.
fn alias_reasoning(message: Map<String, Value>) -> Map<String, Value> {
    let reasoning = ["reasoning_content", "thinking", "reasoning"]
        .iter()
        .find_map(|key| message.get(*key).filter(|v| !v.is_null()).cloned());
    let Some(reasoning) = reasoning else {
        return message;
    };
    let mut aliased = Map::new();
    aliased.insert("thinking".into(), reasoning.clone());
    for (key, value) in message {
        aliased.insert(key, value);
    }
    aliased.insert("reasoning_content".into(), reasoning);
    aliased
}

/// Transformers' `{% generation %}...{% endgeneration %}` extension only marks the assistant's
/// text for `return_assistant_tokens_mask`; for rendering it is a plain block, so it becomes
/// `{% if true %}...{% endif %}` with the same whitespace control.
fn rewrite_generation_tags(source: &str) -> std::borrow::Cow<'_, str> {
    if !source.contains("generation") {
        return std::borrow::Cow::Borrowed(source);
    }
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        let (before, tag_and_after) = rest.split_at(start);
        out.push_str(before);
        let Some(end) = tag_and_after.find("%}") else {
            out.push_str(tag_and_after);
            return std::borrow::Cow::Owned(out);
        };
        let (tag, after) = tag_and_after.split_at(end + 2);
        let inner = tag
            .strip_prefix("{%")
            .and_then(|t| t.strip_suffix("%}"))
            .unwrap_or_default();
        let (left, inner) = split_marker(inner, str::strip_prefix);
        let (right, inner) = split_marker(inner, str::strip_suffix);
        let body = inner.trim();
        match body {
            "generation" => out.push_str(&format!("{{%{left} if true {right}%}}")),
            "endgeneration" => out.push_str(&format!("{{%{left} endif {right}%}}")),
            _ => out.push_str(tag),
        }
        rest = after;
    }
    out.push_str(rest);
    std::borrow::Cow::Owned(out)
}

/// Splits a whitespace-control marker (`-` or `+`) off one end of a tag's inside.
fn split_marker<'a>(
    inner: &'a str,
    strip: fn(&'a str, char) -> Option<&'a str>,
) -> (&'static str, &'a str) {
    match (strip(inner, '-'), strip(inner, '+')) {
        (Some(rest), _) => ("-", rest),
        (None, Some(rest)) => ("+", rest),
        (None, None) => ("", inner),
    }
}

fn environment(limits: ChatTemplateLimits) -> std::result::Result<Environment<'static>, String> {
    let mut env = Environment::new();
    let syntax = minijinja::syntax::SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .build()
        .map_err(|e| e.to_string())?;
    env.set_syntax(syntax);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_fuel(Some(limits.fuel));
    env.set_recursion_limit(limits.max_recursion);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    let max_json = limits.max_output_bytes;
    env.add_filter(
        "tojson",
        move |state: &State, value: JinjaValue, args: Rest<JinjaValue>, kwargs: Kwargs| {
            tojson(state, &value, &args, &kwargs, max_json)
        },
    );
    env.add_function(
        "raise_exception",
        |message: String| -> std::result::Result<JinjaValue, JinjaError> {
            Err(
                JinjaError::new(ErrorKind::InvalidOperation, message.clone())
                    .with_source(RaisedByTemplate(message)),
            )
        },
    );
    env.add_function("strftime_now", |format: String| {
        let seconds = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        strftime(&format, seconds)
    });
    Ok(env)
}

fn render(
    source: &str,
    context: JinjaValue,
    limits: ChatTemplateLimits,
) -> std::result::Result<String, ChatTemplateProblem> {
    let env = environment(limits).map_err(ChatTemplateProblem::Render)?;
    let template = env
        .template_from_str(source)
        .map_err(|e| ChatTemplateProblem::Syntax(describe(&e)))?;
    let mut output = CappedOutput {
        bytes: Vec::new(),
        limit: limits.max_output_bytes,
        exceeded: false,
    };
    if let Err(error) = template.render_captured_to(context, &mut output) {
        return Err(classify(&error, &output, limits));
    }
    String::from_utf8(output.bytes)
        .map_err(|_| ChatTemplateProblem::Render("the output is not valid UTF-8".into()))
}

fn classify(
    error: &JinjaError,
    output: &CappedOutput,
    limits: ChatTemplateLimits,
) -> ChatTemplateProblem {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = source {
        if let Some(raised) = cause.downcast_ref::<RaisedByTemplate>() {
            return ChatTemplateProblem::Raised(raised.0.clone());
        }
        if let Some(inner) = cause.downcast_ref::<JinjaError>() {
            if inner.kind() == ErrorKind::OutOfFuel {
                return ChatTemplateProblem::OutOfFuel { fuel: limits.fuel };
            }
            if inner.detail() == Some("recursion limit exceeded") {
                return ChatTemplateProblem::TooDeep {
                    limit: limits.max_recursion,
                };
            }
        }
        source = cause.source();
    }
    if output.exceeded {
        return ChatTemplateProblem::OutputTooLarge {
            limit: limits.max_output_bytes,
        };
    }
    ChatTemplateProblem::Render(describe(error))
}

/// minijinja's message with the line it points at.
fn describe(error: &JinjaError) -> String {
    let detail = error.detail().map_or(String::new(), |d| format!(": {d}"));
    match error.line() {
        Some(line) => format!("{}{detail} (line {line})", error.kind()),
        None => format!("{}{detail}", error.kind()),
    }
}

/// Transformers' `tojson` filter: Python's `json.dumps(x, ensure_ascii=False, indent=None,
/// separators=None, sort_keys=False)`, not HTML-escaped. Arguments may be positional in that
/// order or named.
fn tojson(
    state: &State,
    value: &JinjaValue,
    args: &[JinjaValue],
    kwargs: &Kwargs,
    max_bytes: usize,
) -> std::result::Result<String, JinjaError> {
    let invalid = |message: String| JinjaError::new(ErrorKind::InvalidOperation, message);
    let names = ["ensure_ascii", "indent", "separators", "sort_keys"];
    if args.len() > names.len() {
        return Err(JinjaError::from(ErrorKind::TooManyArguments));
    }
    let mut settings: [JinjaValue; 4] = Default::default();
    for (slot, (name, positional)) in settings.iter_mut().zip(
        names
            .iter()
            .zip(args.iter().map(Some).chain(std::iter::repeat(None))),
    ) {
        let named: Option<JinjaValue> = kwargs.get(name)?;
        *slot = match (positional, named) {
            (Some(_), Some(_)) => {
                return Err(invalid(format!("tojson got two values for `{name}`")));
            }
            (Some(v), None) => v.clone(),
            (None, Some(v)) => v,
            (None, None) => JinjaValue::UNDEFINED,
        };
    }
    kwargs.assert_all_used()?;
    let [ensure_ascii, indent, separators, sort_keys] = settings;
    let indent = match indent.kind() {
        ValueKind::Undefined | ValueKind::None => None,
        ValueKind::Number => {
            let width = indent
                .as_i64()
                .ok_or_else(|| invalid("tojson: indent must be an integer".into()))?;
            // Python: a negative indent is "" (newlines, no indentation).
            let width = usize::try_from(width.max(0)).unwrap_or(0);
            if width > MAX_TOJSON_INDENT {
                return Err(invalid(format!(
                    "tojson: indent {width} is wider than {MAX_TOJSON_INDENT}"
                )));
            }
            Some(" ".repeat(width))
        }
        ValueKind::String => {
            let text = indent.as_str().unwrap_or_default();
            if text.len() > MAX_TOJSON_INDENT {
                return Err(invalid("tojson: indent string is too long".into()));
            }
            Some(text.to_owned())
        }
        _ => {
            return Err(invalid(
                "tojson: indent must be an integer or a string".into(),
            ));
        }
    };
    let (item_separator, key_separator) = match separators.kind() {
        ValueKind::Undefined | ValueKind::None => (
            if indent.is_some() { "," } else { ", " }.to_owned(),
            ": ".to_owned(),
        ),
        _ => {
            let parts: Vec<JinjaValue> = separators.try_iter()?.collect();
            match parts.as_slice() {
                [item, key] => match (item.as_str(), key.as_str()) {
                    (Some(item), Some(key)) => (item.to_owned(), key.to_owned()),
                    _ => return Err(invalid("tojson: separators must be two strings".into())),
                },
                _ => return Err(invalid("tojson: separators must be two strings".into())),
            }
        }
    };
    let mut writer = JsonWriter {
        out: String::new(),
        ensure_ascii: ensure_ascii.is_true(),
        sort_keys: sort_keys.is_true(),
        indent,
        item_separator,
        key_separator,
        max_bytes,
    };
    writer.value(value, 0)?;
    state.consume_fuel(writer.out.len() as u64 / 4)?;
    Ok(writer.out)
}

/// Python's `json.dumps` over a template value.
struct JsonWriter {
    out: String,
    ensure_ascii: bool,
    sort_keys: bool,
    indent: Option<String>,
    item_separator: String,
    key_separator: String,
    max_bytes: usize,
}

impl JsonWriter {
    fn check_size(&self) -> std::result::Result<(), JinjaError> {
        if self.out.len() > self.max_bytes {
            return Err(JinjaError::new(
                ErrorKind::InvalidOperation,
                format!("tojson: output longer than {} bytes", self.max_bytes),
            ));
        }
        Ok(())
    }

    fn newline(&mut self, depth: usize) {
        if let Some(indent) = &self.indent {
            self.out.push('\n');
            for _ in 0..depth {
                self.out.push_str(indent);
            }
        }
    }

    fn value(&mut self, value: &JinjaValue, depth: usize) -> std::result::Result<(), JinjaError> {
        if depth > MAX_TOJSON_DEPTH {
            return Err(JinjaError::new(
                ErrorKind::InvalidOperation,
                format!("tojson: value nested deeper than {MAX_TOJSON_DEPTH} levels"),
            ));
        }
        self.check_size()?;
        match value.kind() {
            ValueKind::None => self.out.push_str("null"),
            ValueKind::Bool => self
                .out
                .push_str(if value.is_true() { "true" } else { "false" }),
            ValueKind::Number if value.is_integer() => self.out.push_str(&value.to_string()),
            ValueKind::Number => {
                let number = f64::try_from(value.clone())?;
                self.out.push_str(&python_float(number));
            }
            ValueKind::String => {
                let text = value.as_str().unwrap_or_default();
                self.string(text);
            }
            ValueKind::Seq | ValueKind::Iterable => {
                let items: Vec<JinjaValue> = value.try_iter()?.collect();
                self.out.push('[');
                if !items.is_empty() {
                    for (i, item) in items.iter().enumerate() {
                        if i > 0 {
                            let separator = self.item_separator.clone();
                            self.out.push_str(&separator);
                        }
                        self.newline(depth + 1);
                        self.value(item, depth + 1)?;
                    }
                    self.newline(depth);
                }
                self.out.push(']');
            }
            ValueKind::Map => {
                let mut entries = Vec::new();
                for key in value.try_iter()? {
                    let item = value.get_item(&key)?;
                    let key = match key.kind() {
                        ValueKind::String => key.as_str().unwrap_or_default().to_owned(),
                        ValueKind::None => "null".to_owned(),
                        ValueKind::Bool if key.is_true() => "true".to_owned(),
                        ValueKind::Bool => "false".to_owned(),
                        ValueKind::Number => key.to_string(),
                        _ => {
                            return Err(JinjaError::new(
                                ErrorKind::InvalidOperation,
                                "tojson: keys must be strings, numbers, booleans or none",
                            ));
                        }
                    };
                    entries.push((key, item));
                }
                if self.sort_keys {
                    entries.sort_by(|a, b| a.0.cmp(&b.0));
                }
                self.out.push('{');
                if !entries.is_empty() {
                    for (i, (key, item)) in entries.iter().enumerate() {
                        if i > 0 {
                            let separator = self.item_separator.clone();
                            self.out.push_str(&separator);
                        }
                        self.newline(depth + 1);
                        self.string(key);
                        let separator = self.key_separator.clone();
                        self.out.push_str(&separator);
                        self.value(item, depth + 1)?;
                    }
                    self.newline(depth);
                }
                self.out.push('}');
            }
            kind => {
                return Err(JinjaError::new(
                    ErrorKind::InvalidOperation,
                    format!("tojson: a value of type {kind} is not JSON serializable"),
                ));
            }
        }
        Ok(())
    }

    fn string(&mut self, text: &str) {
        self.out.push('"');
        for c in text.chars() {
            match c {
                '"' => self.out.push_str("\\\""),
                '\\' => self.out.push_str("\\\\"),
                '\n' => self.out.push_str("\\n"),
                '\r' => self.out.push_str("\\r"),
                '\t' => self.out.push_str("\\t"),
                '\u{8}' => self.out.push_str("\\b"),
                '\u{c}' => self.out.push_str("\\f"),
                c if (c as u32) < 0x20 || (self.ensure_ascii && !(' '..='~').contains(&c)) => {
                    let mut units = [0u16; 2];
                    for unit in c.encode_utf16(&mut units) {
                        self.out.push_str(&format!("\\u{unit:04x}"));
                    }
                }
                c => self.out.push(c),
            }
        }
        self.out.push('"');
    }
}

/// Python's `repr(float)` as `json.dumps` writes it (`1.0`, `0.5`, `1e+20`, `NaN`).
fn python_float(number: f64) -> String {
    if number.is_nan() {
        return "NaN".into();
    }
    if number.is_infinite() {
        return if number > 0.0 {
            "Infinity"
        } else {
            "-Infinity"
        }
        .into();
    }
    // Rust's `{:?}` is the shortest round-trip form too; only the exponent is spelled
    // differently (`1e20` / `1e-7` where Python writes `1e+20` / `1e-07`).
    let text = format!("{number:?}");
    match text.split_once('e') {
        Some((mantissa, exponent)) => {
            let (sign, digits) = match exponent.strip_prefix('-') {
                Some(digits) => ('-', digits),
                None => ('+', exponent),
            };
            format!("{mantissa}e{sign}{digits:0>2}")
        }
        None => text,
    }
}

/// Python's `datetime.now().strftime(format)` for the directives chat templates use, in UTC
/// (`%d %b %Y` in Llama 3.x templates). Unknown directives are an error rather than a guess.
fn strftime(format: &str, unix_seconds: u64) -> std::result::Result<String, JinjaError> {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const WEEKDAYS: [&str; 7] = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    let days = unix_seconds / 86_400;
    let seconds_of_day = unix_seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    // 1970-01-01 was a Thursday (index 3 from Monday).
    let weekday = usize::try_from((days + 3) % 7).unwrap_or(0);
    let month_name = MONTHS
        .get(usize::try_from(month).unwrap_or(1).saturating_sub(1))
        .copied()
        .unwrap_or_default();
    let weekday_name = WEEKDAYS.get(weekday).copied().unwrap_or_default();
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&format!("{:02}", year % 100)),
            Some('b') => out.push_str(month_name.get(..3).unwrap_or_default()),
            Some('B') => out.push_str(month_name),
            Some('a') => out.push_str(weekday_name.get(..3).unwrap_or_default()),
            Some('A') => out.push_str(weekday_name),
            Some('H') => out.push_str(&format!("{:02}", seconds_of_day / 3600)),
            Some('M') => out.push_str(&format!("{:02}", seconds_of_day % 3600 / 60)),
            Some('S') => out.push_str(&format!("{:02}", seconds_of_day % 60)),
            Some('%') => out.push('%'),
            other => {
                return Err(JinjaError::new(
                    ErrorKind::InvalidOperation,
                    format!(
                        "strftime_now: unsupported directive %{}",
                        other.map(String::from).unwrap_or_default()
                    ),
                ));
            }
        }
    }
    Ok(out)
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_930), (2024, 7, 26));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn strftime_directives() {
        // 2024-07-26 13:05:09 UTC, a Friday.
        let t = 19_930 * 86_400 + 13 * 3600 + 5 * 60 + 9;
        let got = strftime("%d %b %Y|%A %a %B %m %y %H:%M:%S %%", t).ok();
        assert_eq!(
            got.as_deref(),
            Some("26 Jul 2024|Friday Fri July 07 24 13:05:09 %")
        );
        assert!(strftime("%Q", t).is_err());
    }

    #[test]
    fn python_floats() {
        assert_eq!(python_float(1.0), "1.0");
        assert_eq!(python_float(0.5), "0.5");
        assert_eq!(python_float(1e20), "1e+20");
        assert_eq!(python_float(1e-7), "1e-07");
        assert_eq!(python_float(f64::NAN), "NaN");
    }

    #[test]
    fn generation_tags_become_plain_blocks() {
        assert_eq!(
            rewrite_generation_tags("a{%- generation %}b{% endgeneration -%}c{% if x %}"),
            "a{%- if true %}b{% endif -%}c{% if x %}"
        );
        assert_eq!(rewrite_generation_tags("no tags"), "no tags");
    }
}
