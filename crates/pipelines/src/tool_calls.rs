//! Tool calls in a chat model's reply: the text a model writes when it calls functions, turned
//! into OpenAI-style calls (a function name and an object of arguments) plus the rest of the
//! text.
//!
//! Three conventions cover most open chat models ([`ToolCallFormat`]):
//!
//! - Hermes: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` blocks among the text
//!   (NousResearch Hermes 2 Pro and 3, Qwen 2 to 3, SmolLM3 and many fine-tunes).
//! - Llama 3 JSON: the whole reply is `{"name": ..., "parameters": {...}}`, or several such
//!   objects joined by `;`, optionally after `<|python_tag|>` (Llama 3.1 to 3.3 with custom
//!   tools).
//! - Mistral: text, then `[TOOL_CALLS]` and a JSON array of `{"name", "arguments"}` objects
//!   (tokenizers before v11: Mistral 7B v0.3, Mixtral 8x22B, Nemo), or `name[ARGS]{...}` after
//!   each `[TOOL_CALLS]` (tokenizer v11 and later, e.g. Mistral Small 3.2).
//!
//! The reply comes from a model that a hostile prompt may have steered, so parsing is bounded by
//! [`ToolCallLimits`]: the number of calls, the bytes of JSON and the nesting depth, the depth
//! checked by a scan of the brackets before `serde_json` sees the text. Each byte of the reply is
//! looked at a bounded number of times (no rescans), nothing panics, and errors quote at most
//! 100 characters of the reply.

use serde_json::{Map, Value};

/// Hermes: opens a call.
const HERMES_OPEN: &str = "<tool_call>";
/// Hermes: closes a call.
const HERMES_CLOSE: &str = "</tool_call>";
/// Llama 3.1+: the special token starting a tool call (custom JSON tools or built-in ones).
const LLAMA_PYTHON_TAG: &str = "<|python_tag|>";
/// Llama 3.x: separates calls when the model makes several.
const LLAMA_SEPARATOR: &str = ";";
/// Mistral: starts the calls (a JSON array before v11, one call each from v11).
const MISTRAL_CALLS: &str = "[TOOL_CALLS]";
/// Mistral v11+: between a call's name and its JSON arguments.
const MISTRAL_ARGS: &str = "[ARGS]";
/// Mistral (some v11+ tokenizers): before the model's own id of a call.
const MISTRAL_CALL_ID: &str = "[CALL_ID]";

/// At most this many characters of the model's output are quoted in an error.
const EXCERPT_CHARS: usize = 100;
/// The longest function name OpenAI accepts.
const MAX_FUNCTION_NAME_BYTES: usize = 64;

/// How a chat model writes tool calls in its reply: a closed set, one parser each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ToolCallFormat {
    /// `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` blocks, with text around them
    /// (Hermes 2 Pro and 3, Qwen 2, 2.5 and 3, SmolLM3, many fine-tunes).
    Hermes,
    /// The reply is one JSON call `{"name": ..., "parameters": {...}}`, or several joined by
    /// `;`, after an optional `<|python_tag|>` (Llama 3.1, 3.2 and 3.3).
    Llama3Json,
    /// Text, then `[TOOL_CALLS]` and the calls: a JSON array of `{"name", "arguments"}`
    /// (tokenizers before v11), or `name[ARGS]{...}` after each `[TOOL_CALLS]` (v11 and later).
    Mistral,
}

impl ToolCallFormat {
    /// The format a chat template teaches its model, guessed from the template's source text:
    /// `<tool_call>` means [`Hermes`](Self::Hermes), `[TOOL_CALLS]`
    /// [`Mistral`](Self::Mistral), and `<|python_tag|>`, or `"parameters"` in a template
    /// with `<|eot_id|>`, [`Llama3Json`](Self::Llama3Json). `None` for any other template,
    /// and for templates that put XML-like calls inside `<tool_call>` (Qwen3-Coder's
    /// `<function=...>`, GLM-4.5's `<arg_key>`), which the Hermes parser cannot read.
    ///
    /// ```
    /// use safeformers_pipelines::ToolCallFormat;
    ///
    /// let qwen = r#"{{- "<tool_call>\n{\"name\": \"" }}{{- tool_call.name }}"#;
    /// assert_eq!(ToolCallFormat::detect(qwen), Some(ToolCallFormat::Hermes));
    /// assert_eq!(ToolCallFormat::detect("{{ bos_token }}{{ message.content }}"), None);
    /// ```
    pub fn detect(chat_template: &str) -> Option<ToolCallFormat> {
        let mentions = |needle: &str| chat_template.contains(needle);
        if mentions(HERMES_OPEN) {
            if mentions("<function=") || mentions("<arg_key>") {
                return None;
            }
            Some(Self::Hermes)
        } else if mentions(MISTRAL_CALLS) {
            Some(Self::Mistral)
        } else if mentions(LLAMA_PYTHON_TAG)
            || (mentions("<|eot_id|>") && mentions("\"parameters\""))
        {
            Some(Self::Llama3Json)
        } else {
            None
        }
    }
}

/// Bounds on what [`parse_tool_calls`] accepts from one reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ToolCallLimits {
    /// The most calls in one reply (default 64).
    pub max_calls: usize,
    /// The most bytes of JSON in one reply, all calls together (default 1 MiB).
    pub max_json_bytes: usize,
    /// The deepest nesting of arrays and objects in a call, its own object counting as one
    /// level (default 64). Arguments given as a JSON string are held to the same depth.
    pub max_depth: usize,
}

impl Default for ToolCallLimits {
    fn default() -> Self {
        Self {
            max_calls: 64,
            max_json_bytes: 1 << 20,
            max_depth: 64,
        }
    }
}

/// One tool call, as OpenAI's `tool_calls[].function` holds it (before the arguments are
/// serialized to text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedToolCall {
    /// The function's name: 1 to 64 ASCII letters, digits, `_`, `.` or `-`.
    pub name: String,
    /// The arguments: always a JSON object, empty when the model gave none.
    pub arguments: Map<String, Value>,
}

/// A reply split into its text and its tool calls.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ParsedReply {
    /// The text outside the calls, trimmed; `None` when nothing but whitespace is left.
    pub content: Option<String>,
    /// The calls, in the order the model made them.
    pub tool_calls: Vec<ParsedToolCall>,
}

/// Why a reply's tool calls could not be read. `index` is the call's position in the reply,
/// from 0.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ToolCallError {
    /// A call's JSON does not parse.
    #[error("tool call {index}: invalid JSON ({message}) in {excerpt:?}")]
    InvalidJson {
        /// The call.
        index: usize,
        /// What `serde_json` said, with line and column (it never quotes the input).
        message: String,
        /// The start of the call's JSON text, at most 100 characters.
        excerpt: String,
    },

    /// A call is JSON, but not an object.
    #[error("tool call {index}: a call must be a JSON object with a \"name\", not {found}")]
    CallNotObject {
        /// The call.
        index: usize,
        /// What it is instead (`an array`, `a string`, ...).
        found: &'static str,
    },

    /// A call has no `"name"`, or a name that is not a string.
    #[error("tool call {index}: no \"name\" string")]
    MissingName {
        /// The call.
        index: usize,
    },

    /// A call's function name is not 1 to 64 ASCII letters, digits, `_`, `.` or `-`.
    #[error(
        "tool call {index}: the function name {name:?} is not 1 to 64 ASCII letters, digits, \
         `_`, `.` or `-`"
    )]
    InvalidName {
        /// The call.
        index: usize,
        /// The name, cut at 100 characters.
        name: String,
    },

    /// A call's arguments are neither an object nor a JSON string holding one.
    #[error("tool call {index} ({name}): the arguments are {found}, not a JSON object")]
    ArgumentsNotObject {
        /// The call.
        index: usize,
        /// The function it calls.
        name: String,
        /// What the arguments are instead.
        found: &'static str,
    },

    /// The reply makes more calls than [`ToolCallLimits::max_calls`].
    #[error("more than {limit} tool calls in one reply")]
    TooManyCalls {
        /// The limit.
        limit: usize,
    },

    /// A call nests arrays and objects deeper than [`ToolCallLimits::max_depth`].
    #[error("tool call {index}: JSON nested deeper than {limit} levels")]
    TooDeep {
        /// The call.
        index: usize,
        /// The limit.
        limit: usize,
    },

    /// The reply's calls hold more JSON than [`ToolCallLimits::max_json_bytes`].
    #[error("tool call {index}: the calls of the reply hold more than {limit} bytes of JSON")]
    TooLarge {
        /// The call that went over.
        index: usize,
        /// The limit.
        limit: usize,
    },

    /// The reply ends inside a call: its JSON never closes, or nothing follows its opening.
    #[error(
        "tool call {index} is cut off: the reply ends inside it (the generation probably \
         stopped at max_tokens; allow more tokens)"
    )]
    Unterminated {
        /// The call.
        index: usize,
    },
}

/// Splits a model's `text` into content and tool calls written in `format`.
///
/// A reply without calls is all content. The JSON of each call must parse, name a function
/// (1 to 64 ASCII letters, digits, `_`, `.` or `-`) and give its arguments as an object or as a
/// JSON string holding one; missing or `null` arguments read as an empty object. Anything else
/// is an error rather than content, so a malformed call is never shown to the user as text.
///
/// ```
/// use safeformers_pipelines::{ToolCallFormat, ToolCallLimits, parse_tool_calls};
///
/// let reply = "Let me look.\n<tool_call>\n{\"name\": \"get_weather\", \
///              \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";
/// let parsed = parse_tool_calls(ToolCallFormat::Hermes, reply, &ToolCallLimits::default())?;
/// assert_eq!(parsed.content.as_deref(), Some("Let me look."));
/// assert_eq!(parsed.tool_calls[0].name, "get_weather");
/// assert_eq!(parsed.tool_calls[0].arguments["city"], "Paris");
/// # Ok::<(), safeformers_pipelines::ToolCallError>(())
/// ```
pub fn parse_tool_calls(
    format: ToolCallFormat,
    text: &str,
    limits: &ToolCallLimits,
) -> Result<ParsedReply, ToolCallError> {
    let mut calls = CallCollector::new(limits);
    let content = match format {
        ToolCallFormat::Hermes => parse_hermes(text, &mut calls)?,
        ToolCallFormat::Llama3Json => parse_llama3_json(text, &mut calls)?.to_owned(),
        ToolCallFormat::Mistral => parse_mistral(text, &mut calls)?.to_owned(),
    };
    let content = content.trim();
    Ok(ParsedReply {
        content: (!content.is_empty()).then(|| content.to_owned()),
        tool_calls: calls.calls,
    })
}

/// Hermes: the text outside the `<tool_call>` blocks, the calls read into `calls`.
///
/// A block whose JSON is complete but is not followed by `</tool_call>` before the end of the
/// reply is accepted (the model stopped right after the call); one whose JSON never closes is
/// [`ToolCallError::Unterminated`].
fn parse_hermes(text: &str, calls: &mut CallCollector<'_>) -> Result<String, ToolCallError> {
    let mut content = String::new();
    let mut rest = text;
    while let Some((before, block)) = rest.split_once(HERMES_OPEN) {
        content.push_str(before);
        let index = calls.next_index()?;
        let span = value_span(block, HERMES_CLOSE, index, calls.limits.max_depth)?;
        let call = calls.json(index, span.json)?;
        calls.push_call_object(index, call)?;
        rest = span.after.unwrap_or_default();
    }
    content.push_str(rest);
    Ok(content)
}

/// Llama 3.x: the reply itself when it does not start with `{` (after `<|python_tag|>`), else
/// nothing, the `;`-separated calls read into `calls`.
fn parse_llama3_json<'text>(
    text: &'text str,
    calls: &mut CallCollector<'_>,
) -> Result<&'text str, ToolCallError> {
    let trimmed = text.trim_start();
    let body = trimmed
        .strip_prefix(LLAMA_PYTHON_TAG)
        .unwrap_or(trimmed)
        .trim_start();
    if !body.starts_with('{') {
        // Prose, or Python for a built-in tool after `<|python_tag|>`: not a JSON call.
        return Ok(text);
    }
    let mut rest = body;
    loop {
        let index = calls.next_index()?;
        let span = value_span(rest, LLAMA_SEPARATOR, index, calls.limits.max_depth)?;
        let call = calls.json(index, span.json)?;
        calls.push_call_object(index, call)?;
        match span.after {
            // A `;` after the last call is tolerated.
            Some(after) if !after.trim().is_empty() => rest = after,
            _ => return Ok(""),
        }
    }
}

/// Mistral: the text before the first `[TOOL_CALLS]`, the calls after it read into `calls`.
fn parse_mistral<'text>(
    text: &'text str,
    calls: &mut CallCollector<'_>,
) -> Result<&'text str, ToolCallError> {
    let Some((content, mut rest)) = text.split_once(MISTRAL_CALLS) else {
        return Ok(text);
    };
    loop {
        let segment = rest.trim_start();
        // A function name never starts with a bracket: these are the older JSON calls.
        let after = if segment.starts_with(['[', '{']) {
            mistral_json_calls(segment, calls)?
        } else {
            mistral_named_call(segment, calls)?
        };
        match after {
            Some(after) => rest = after,
            None => return Ok(content),
        }
    }
}

/// Mistral before v11: `[{"name": ..., "arguments": {...}}, ...]` (a lone object is taken as
/// one call). Returns the text after the next `[TOOL_CALLS]`, if any.
fn mistral_json_calls<'text>(
    segment: &'text str,
    calls: &mut CallCollector<'_>,
) -> Result<Option<&'text str>, ToolCallError> {
    let first_index = calls.next_index()?;
    let span = value_span(segment, MISTRAL_CALLS, first_index, calls.limits.max_depth)?;
    match calls.json(first_index, span.json)? {
        Value::Array(items) => {
            for item in items {
                let index = calls.next_index()?;
                calls.push_call_object(index, item)?;
            }
        }
        call => calls.push_call_object(first_index, call)?,
    }
    Ok(span.after)
}

/// Mistral v11 and later: `name[ARGS]{...}`, optionally `name[CALL_ID]id[ARGS]{...}` (the id
/// is dropped: call ids are the server's to give), and `name{...}` from a decoder that left
/// `[ARGS]` out. Returns the text after the next `[TOOL_CALLS]`, if any.
fn mistral_named_call<'text>(
    segment: &'text str,
    calls: &mut CallCollector<'_>,
) -> Result<Option<&'text str>, ToolCallError> {
    let index = calls.next_index()?;
    if segment.is_empty() {
        return Err(ToolCallError::Unterminated { index });
    }
    let name_end = segment.find(['[', '{']).unwrap_or(segment.len());
    let (name, mut arguments) = segment.split_at_checked(name_end).unwrap_or((segment, ""));
    let name = name.trim();
    if !is_function_name(name) {
        return Err(ToolCallError::InvalidName {
            index,
            name: excerpt(name),
        });
    }
    if let Some(after_id) = arguments.strip_prefix(MISTRAL_CALL_ID) {
        let id_end = after_id.find(['[', '{']).unwrap_or(after_id.len());
        arguments = after_id.get(id_end..).unwrap_or_default();
    }
    let arguments = arguments.strip_prefix(MISTRAL_ARGS).unwrap_or(arguments);
    if arguments.trim().is_empty() {
        return Err(ToolCallError::Unterminated { index });
    }
    let span = value_span(arguments, MISTRAL_CALLS, index, calls.limits.max_depth)?;
    let arguments = calls.json(index, span.json)?;
    calls.push_call(index, name.to_owned(), Some(arguments))?;
    Ok(span.after)
}

/// The calls read so far, with the reply's share of the limits used.
struct CallCollector<'limits> {
    limits: &'limits ToolCallLimits,
    calls: Vec<ParsedToolCall>,
    json_bytes: usize,
}

impl<'limits> CallCollector<'limits> {
    fn new(limits: &'limits ToolCallLimits) -> Self {
        Self {
            limits,
            calls: Vec::new(),
            json_bytes: 0,
        }
    }

    /// The index of the next call, or [`ToolCallError::TooManyCalls`] when the reply already
    /// holds as many as allowed.
    fn next_index(&self) -> Result<usize, ToolCallError> {
        let index = self.calls.len();
        if index >= self.limits.max_calls {
            return Err(ToolCallError::TooManyCalls {
                limit: self.limits.max_calls,
            });
        }
        Ok(index)
    }

    /// Parses the JSON text of call `index`, within the reply's byte budget and the depth limit.
    fn json(&mut self, index: usize, text: &str) -> Result<Value, ToolCallError> {
        let json_bytes = self.json_bytes.saturating_add(text.len());
        if json_bytes > self.limits.max_json_bytes {
            return Err(ToolCallError::TooLarge {
                index,
                limit: self.limits.max_json_bytes,
            });
        }
        self.json_bytes = json_bytes;
        parse_bounded_json(index, text, self.limits.max_depth)
    }

    /// Adds a call given as `{"name": ..., "arguments" or "parameters": ...}`.
    fn push_call_object(&mut self, index: usize, call: Value) -> Result<(), ToolCallError> {
        let Value::Object(mut call) = call else {
            return Err(ToolCallError::CallNotObject {
                index,
                found: json_kind(&call),
            });
        };
        let Some(Value::String(name)) = call.remove("name") else {
            return Err(ToolCallError::MissingName { index });
        };
        // OpenAI and Hermes say "arguments", Llama 3's template "parameters".
        let arguments = match call.remove("arguments") {
            Some(arguments) => Some(arguments),
            None => call.remove("parameters"),
        };
        self.push_call(index, name, arguments)
    }

    /// Adds a call once its name and arguments are checked.
    fn push_call(
        &mut self,
        index: usize,
        name: String,
        arguments: Option<Value>,
    ) -> Result<(), ToolCallError> {
        if !is_function_name(&name) {
            return Err(ToolCallError::InvalidName {
                index,
                name: excerpt(&name),
            });
        }
        let arguments = arguments_object(index, &name, arguments, self.limits.max_depth)?;
        self.calls.push(ParsedToolCall { name, arguments });
        Ok(())
    }
}

/// A call's arguments as an object: given as one, as a JSON string holding one (some models
/// write them the way OpenAI's API sends them), or absent / `null` / an empty string (a call
/// without arguments).
fn arguments_object(
    index: usize,
    name: &str,
    arguments: Option<Value>,
    max_depth: usize,
) -> Result<Map<String, Value>, ToolCallError> {
    let not_object = |found| ToolCallError::ArgumentsNotObject {
        index,
        name: name.to_owned(),
        found,
    };
    match arguments {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(arguments)) => Ok(arguments),
        Some(Value::String(text)) if text.trim().is_empty() => Ok(Map::new()),
        // No larger than the call's JSON it was unescaped from, so the byte budget holds.
        Some(Value::String(text)) => match parse_bounded_json(index, &text, max_depth)? {
            Value::Object(arguments) => Ok(arguments),
            _ => Err(not_object(
                "a JSON string holding something else than an object",
            )),
        },
        Some(other) => Err(not_object(json_kind(&other))),
    }
}

/// Parses `text` as JSON once its nesting is known to be within `max_depth`.
fn parse_bounded_json(index: usize, text: &str, max_depth: usize) -> Result<Value, ToolCallError> {
    if nesting_exceeds(text, max_depth) {
        return Err(ToolCallError::TooDeep {
            index,
            limit: max_depth,
        });
    }
    serde_json::from_str(text).map_err(|error| ToolCallError::InvalidJson {
        index,
        message: error.to_string(),
        excerpt: excerpt(text),
    })
}

/// The text of one call's JSON value, and where the reply goes on after it.
struct ValueSpan<'text> {
    /// The JSON text for `serde_json` (trimmed).
    json: &'text str,
    /// The text after the delimiter that ends the call; `None` when the reply ends instead.
    after: Option<&'text str>,
}

/// Finds the JSON value at the start of `text` and the `delimiter` that ends its call.
///
/// The value ends where its brackets balance (brackets inside strings do not count), and the
/// delimiter, or the end of the reply, must follow after whitespace. Anything else there (or a
/// value that is not an array or object) goes to `serde_json` with the value, up to the next
/// delimiter, for it to reject. A value whose brackets are still open at the end of the reply,
/// or no value at all, is a cut-off call.
fn value_span<'text>(
    text: &'text str,
    delimiter: &str,
    index: usize,
    max_depth: usize,
) -> Result<ValueSpan<'text>, ToolCallError> {
    let text = text.trim_start();
    if text.is_empty() {
        return Err(ToolCallError::Unterminated { index });
    }
    let extent = bracketed_value_extent(text, max_depth).ok_or(ToolCallError::TooDeep {
        index,
        limit: max_depth,
    })?;
    let search_from = match extent {
        ValueExtent::Complete(end) => {
            if let Some((json, after)) = text.split_at_checked(end) {
                let after = after.trim_start();
                if after.is_empty() {
                    return Ok(ValueSpan { json, after: None });
                }
                if let Some(after) = after.strip_prefix(delimiter) {
                    return Ok(ValueSpan {
                        json,
                        after: Some(after),
                    });
                }
            }
            end
        }
        ValueExtent::Unclosed | ValueExtent::NotBracketed => 0,
    };
    let delimiter_at = text
        .get(search_from..)
        .and_then(|tail| tail.find(delimiter))
        .map(|position| search_from + position);
    match delimiter_at {
        Some(position) => Ok(ValueSpan {
            json: text.get(..position).unwrap_or(text).trim_end(),
            after: text.get(position + delimiter.len()..),
        }),
        None if matches!(extent, ValueExtent::Unclosed) => {
            Err(ToolCallError::Unterminated { index })
        }
        None => Ok(ValueSpan {
            json: text.trim_end(),
            after: None,
        }),
    }
}

/// Where a JSON value at the start of a text ends, as far as its brackets tell.
enum ValueExtent {
    /// An array or object whose brackets balance before this byte offset.
    Complete(usize),
    /// An array or object still open at the end of the text.
    Unclosed,
    /// Not an array or object.
    NotBracketed,
}

/// The extent of the array or object at the start of `text`; `None` when it nests deeper than
/// `max_depth` (the scan stops there).
fn bracketed_value_extent(text: &str, max_depth: usize) -> Option<ValueExtent> {
    if !text.starts_with(['[', '{']) {
        return Some(ValueExtent::NotBracketed);
    }
    let mut lexer = JsonLexer::default();
    let mut depth = 0usize;
    for (offset, byte) in text.bytes().enumerate() {
        match lexer.bracket(byte) {
            Some(Bracket::Open) => {
                depth += 1;
                if depth > max_depth {
                    return None;
                }
            }
            Some(Bracket::Close) => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    // The byte is ASCII, so the offset after it is a character boundary.
                    return Some(ValueExtent::Complete(offset + 1));
                }
            }
            None => {}
        }
    }
    Some(ValueExtent::Unclosed)
}

/// Whether arrays and objects in `text` nest deeper than `max_depth`, counting only brackets
/// outside strings: what `serde_json` would recurse into, checked before it does.
fn nesting_exceeds(text: &str, max_depth: usize) -> bool {
    let mut lexer = JsonLexer::default();
    let mut depth = 0usize;
    for byte in text.bytes() {
        match lexer.bracket(byte) {
            Some(Bracket::Open) => {
                depth += 1;
                if depth > max_depth {
                    return true;
                }
            }
            Some(Bracket::Close) => depth = depth.saturating_sub(1),
            None => {}
        }
    }
    false
}

/// A bracket outside strings.
enum Bracket {
    /// `[` or `{`.
    Open,
    /// `]` or `}`.
    Close,
}

/// Whether a byte-by-byte scan of JSON text is inside a string. Byte-wise is safe on UTF-8:
/// quotes, backslashes and brackets are ASCII, and no byte of a multi-byte character is.
#[derive(Default)]
struct JsonLexer {
    in_string: bool,
    escaped: bool,
}

impl JsonLexer {
    /// Reads the next byte; the bracket it is, if outside a string.
    fn bracket(&mut self, byte: u8) -> Option<Bracket> {
        if self.in_string {
            match (self.escaped, byte) {
                (true, _) => self.escaped = false,
                (false, b'\\') => self.escaped = true,
                (false, b'"') => self.in_string = false,
                _ => {}
            }
            return None;
        }
        match byte {
            b'"' => {
                self.in_string = true;
                None
            }
            b'[' | b'{' => Some(Bracket::Open),
            b']' | b'}' => Some(Bracket::Close),
            _ => None,
        }
    }
}

/// OpenAI's rule for function names, with `.` allowed: 1 to 64 ASCII letters, digits, `_`,
/// `.` or `-`.
fn is_function_name(name: &str) -> bool {
    (1..=MAX_FUNCTION_NAME_BYTES).contains(&name.len())
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b'-'))
}

/// What kind of JSON value this is, for error messages.
fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The start of `text`, at most [`EXCERPT_CHARS`] characters, `…` marking a cut.
fn excerpt(text: &str) -> String {
    match text.char_indices().nth(EXCERPT_CHARS) {
        Some((cut, _)) => format!("{}…", text.get(..cut).unwrap_or_default()),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn parse(format: ToolCallFormat, text: &str) -> Result<ParsedReply, ToolCallError> {
        parse_tool_calls(format, text, &ToolCallLimits::default())
    }

    fn call(name: &str, arguments: Value) -> ParsedToolCall {
        let Value::Object(arguments) = arguments else {
            panic!("test arguments must be an object")
        };
        ParsedToolCall {
            name: name.to_owned(),
            arguments,
        }
    }

    fn reply(content: Option<&str>, tool_calls: Vec<ParsedToolCall>) -> ParsedReply {
        ParsedReply {
            content: content.map(str::to_owned),
            tool_calls,
        }
    }

    use ToolCallFormat::{Hermes, Llama3Json, Mistral};

    #[test]
    fn hermes_calls_and_content() {
        let one = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";
        assert_eq!(
            parse(Hermes, one).unwrap(),
            reply(None, vec![call("get_weather", json!({"city": "Paris"}))])
        );
        let several = "I'll check both.\n<tool_call>\n{\"name\": \"a\", \"arguments\": {\"x\": 1}}\n</tool_call>\n\
                       <tool_call>\n{\"arguments\": {}, \"name\": \"b.c-d_e\"}\n</tool_call>\nDone.";
        assert_eq!(
            parse(Hermes, several).unwrap(),
            reply(
                Some("I'll check both.\n\n\nDone."),
                vec![call("a", json!({"x": 1})), call("b.c-d_e", json!({}))]
            )
        );
        // Arguments as a JSON string, and no arguments at all.
        let as_string = r#"<tool_call>{"name": "f", "arguments": "{\"q\": [1, {\"r\": null}]}"}</tool_call><tool_call>{"name": "now"}</tool_call>"#;
        assert_eq!(
            parse(Hermes, as_string).unwrap(),
            reply(
                None,
                vec![
                    call("f", json!({"q": [1, {"r": null}]})),
                    call("now", json!({}))
                ]
            )
        );
        // Tags and brackets inside strings are text.
        let tricky = r#"<tool_call>{"name": "say", "arguments": {"text": "</tool_call> ]]} <tool_call> \" {"}}</tool_call>"#;
        assert_eq!(
            parse(Hermes, tricky).unwrap().tool_calls,
            vec![call(
                "say",
                json!({"text": "</tool_call> ]]} <tool_call> \" {"})
            )]
        );
    }

    #[test]
    fn hermes_plain_text_and_unclosed_blocks() {
        assert_eq!(
            parse(Hermes, "  Hello there.\n").unwrap(),
            reply(Some("Hello there."), vec![])
        );
        assert_eq!(parse(Hermes, " \n ").unwrap(), reply(None, vec![]));
        // Complete JSON, then the end of the reply: the model stopped right after the call.
        assert_eq!(
            parse(
                Hermes,
                "<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n"
            )
            .unwrap()
            .tool_calls,
            vec![call("f", json!({}))]
        );
        // Cut off by max_tokens: an error, not content.
        for cut in [
            "Sure.<tool_call>\n{\"name\": \"f\", \"arguments\": {\"city\": \"Par",
            "Sure.<tool_call>",
            "<tool_call>{\"name\": \"f\", \"arguments\": {}}</tool_call><tool_call>\n",
        ] {
            assert!(
                matches!(parse(Hermes, cut), Err(ToolCallError::Unterminated { .. })),
                "{cut:?}"
            );
        }
        // A malformed block that is closed is invalid JSON, not a cut-off.
        assert!(matches!(
            parse(
                Hermes,
                "<tool_call>{\"name\": \"f\", \"arguments\": {</tool_call>"
            ),
            Err(ToolCallError::InvalidJson { index: 0, .. })
        ));
    }

    #[test]
    fn llama3_calls_and_content() {
        let one = r#"{"name": "get_weather", "parameters": {"city": "Paris"}}"#;
        let expected = reply(None, vec![call("get_weather", json!({"city": "Paris"}))]);
        assert_eq!(parse(Llama3Json, one).unwrap(), expected);
        let tagged = format!("<|python_tag|>{one}");
        assert_eq!(parse(Llama3Json, &tagged).unwrap(), expected);
        let several = r#" {"name": "a", "arguments": {"s": "x; {y}"}}; {"name": "b", "parameters": "{\"n\": 2}"}; "#;
        assert_eq!(
            parse(Llama3Json, several).unwrap(),
            reply(
                None,
                vec![
                    call("a", json!({"s": "x; {y}"})),
                    call("b", json!({"n": 2}))
                ]
            )
        );
        assert_eq!(
            parse(Llama3Json, "The weather is {sunny}.").unwrap(),
            reply(Some("The weather is {sunny}."), vec![])
        );
        assert_eq!(
            parse(Llama3Json, "<|python_tag|>import math\nprint(math.pi)").unwrap(),
            reply(Some("<|python_tag|>import math\nprint(math.pi)"), vec![])
        );
        assert_eq!(parse(Llama3Json, "").unwrap(), reply(None, vec![]));
    }

    #[test]
    fn llama3_malformed_calls() {
        let trailing = r#"{"name": "a", "parameters": {}} and then some text"#;
        assert!(matches!(
            parse(Llama3Json, trailing),
            Err(ToolCallError::InvalidJson { index: 0, .. })
        ));
        let second_bad = r#"{"name": "a", "parameters": {}}; {"name": "b", "parameters": {x}}"#;
        assert!(matches!(
            parse(Llama3Json, second_bad),
            Err(ToolCallError::InvalidJson { index: 1, .. })
        ));
        assert_eq!(
            parse(Llama3Json, r#"{"name": "a", "parameters": {"q": "abc"#),
            Err(ToolCallError::Unterminated { index: 0 })
        );
    }

    #[test]
    fn mistral_json_array_calls() {
        let one = r#"[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "abc123def"}]"#;
        assert_eq!(
            parse(Mistral, one).unwrap(),
            reply(None, vec![call("get_weather", json!({"city": "Paris"}))])
        );
        let several = r#"Checking.[TOOL_CALLS] [{"name": "a", "arguments": {"x": "[TOOL_CALLS]"}}, {"name": "b", "arguments": "{\"y\": true}"}]"#;
        assert_eq!(
            parse(Mistral, several).unwrap(),
            reply(
                Some("Checking."),
                vec![
                    call("a", json!({"x": "[TOOL_CALLS]"})),
                    call("b", json!({"y": true}))
                ]
            )
        );
        assert_eq!(
            parse(Mistral, "Bonjour ! [TOOL] [ARGS]").unwrap(),
            reply(Some("Bonjour ! [TOOL] [ARGS]"), vec![])
        );
    }

    #[test]
    fn mistral_named_calls() {
        let one = r#"[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}"#;
        assert_eq!(
            parse(Mistral, one).unwrap(),
            reply(None, vec![call("get_weather", json!({"city": "Paris"}))])
        );
        let several = r#"Let me see. [TOOL_CALLS]a[ARGS]{"s": "[TOOL_CALLS]b[ARGS]{}"}[TOOL_CALLS]b[CALL_ID]a1b2c3d4e[ARGS]{}[TOOL_CALLS]c{"n": 1}[TOOL_CALLS]d[ARGS]"{\"m\": []}""#;
        assert_eq!(
            parse(Mistral, several).unwrap(),
            reply(
                Some("Let me see."),
                vec![
                    call("a", json!({"s": "[TOOL_CALLS]b[ARGS]{}"})),
                    call("b", json!({})),
                    call("c", json!({"n": 1})),
                    call("d", json!({"m": []})),
                ]
            )
        );
        for cut in [
            "[TOOL_CALLS]",
            "[TOOL_CALLS]get_weather",
            "[TOOL_CALLS]get_weather[ARGS]",
            "[TOOL_CALLS]get_weather[ARGS]{\"city\": ",
        ] {
            assert!(
                matches!(
                    parse(Mistral, cut),
                    Err(ToolCallError::Unterminated { index: 0 })
                ),
                "{cut:?}"
            );
        }
        assert!(matches!(
            parse(Mistral, r#"[TOOL_CALLS]a[ARGS]{} trailing"#),
            Err(ToolCallError::InvalidJson { index: 0, .. })
        ));
    }

    #[test]
    fn invalid_json_names_the_call_and_quotes_little() {
        let long_junk = "x".repeat(10_000);
        let text = format!(
            "<tool_call>{{\"name\": \"a\"}}</tool_call><tool_call>{{\"name\": {long_junk}}}</tool_call>"
        );
        let Err(ToolCallError::InvalidJson {
            index,
            message,
            excerpt,
        }) = parse(Hermes, &text)
        else {
            panic!("expected invalid JSON")
        };
        assert_eq!(index, 1);
        assert!(message.contains("line 1 column"), "{message}");
        assert_eq!(excerpt.chars().count(), EXCERPT_CHARS + 1);
        assert!(excerpt.starts_with("{\"name\": xxx") && excerpt.ends_with('…'));
        let shown = parse(Hermes, &text).unwrap_err().to_string();
        assert!(shown.len() < 300, "{shown}");
    }

    #[test]
    fn call_shape_errors() {
        let hermes = |body: &str| parse(Hermes, &format!("<tool_call>{body}</tool_call>"));
        assert_eq!(
            hermes(r#"["a", {}]"#),
            Err(ToolCallError::CallNotObject {
                index: 0,
                found: "an array"
            })
        );
        assert_eq!(
            hermes(r#""get_weather""#),
            Err(ToolCallError::CallNotObject {
                index: 0,
                found: "a string"
            })
        );
        assert_eq!(
            hermes(r#"{"arguments": {}}"#),
            Err(ToolCallError::MissingName { index: 0 })
        );
        assert_eq!(
            hermes(r#"{"name": 7, "arguments": {}}"#),
            Err(ToolCallError::MissingName { index: 0 })
        );
        assert_eq!(
            hermes(r#"{"name": "f", "arguments": [1, 2]}"#),
            Err(ToolCallError::ArgumentsNotObject {
                index: 0,
                name: "f".into(),
                found: "an array"
            })
        );
        assert!(matches!(
            hermes(r#"{"name": "f", "arguments": "[1, 2]"}"#),
            Err(ToolCallError::ArgumentsNotObject { index: 0, .. })
        ));
        assert!(matches!(
            hermes(r#"{"name": "f", "arguments": "{not json"}"#),
            Err(ToolCallError::InvalidJson { index: 0, .. })
        ));
        assert!(matches!(
            parse(Mistral, r#"[TOOL_CALLS]f[ARGS]42"#),
            Err(ToolCallError::ArgumentsNotObject {
                found: "a number",
                ..
            })
        ));
    }

    #[test]
    fn bad_names_are_refused_escaped_and_cut() {
        for name in ["", "get weather", "f()", "ü", "a\nb", &"a".repeat(65)] {
            let text = json!({"name": name, "parameters": {}}).to_string();
            assert!(
                matches!(
                    parse(Llama3Json, &text),
                    Err(ToolCallError::InvalidName { index: 0, .. })
                ),
                "{name:?}"
            );
        }
        assert!(parse(Llama3Json, &json!({"name": "a".repeat(64)}).to_string()).is_ok());
        let hostile = format!("evil\u{1b}[2J\n{}", "z".repeat(500));
        let text = json!({"name": hostile, "parameters": {}}).to_string();
        let error = parse(Llama3Json, &text).unwrap_err();
        let shown = error.to_string();
        assert!(shown.contains(r"evil\u{1b}[2J\nzzz"), "{shown}");
        assert!(!shown.contains('\u{1b}') && !shown.contains('\n'));
        assert!(shown.len() < 250, "{shown}");
        assert!(matches!(
            parse(Mistral, "[TOOL_CALLS]get weather[ARGS]{}"),
            Err(ToolCallError::InvalidName { index: 0, .. })
        ));
    }

    #[test]
    fn too_many_calls() {
        let limits = ToolCallLimits {
            max_calls: 2,
            ..ToolCallLimits::default()
        };
        let call = r#"{"name": "f", "parameters": {}}"#;
        let two = [call; 2].join(";");
        assert_eq!(
            parse_tool_calls(Llama3Json, &two, &limits)
                .unwrap()
                .tool_calls
                .len(),
            2
        );
        let three = [call; 3].join(";");
        assert_eq!(
            parse_tool_calls(Llama3Json, &three, &limits),
            Err(ToolCallError::TooManyCalls { limit: 2 })
        );
        let array = r#"[TOOL_CALLS][{"name": "a"}, {"name": "b"}, {"name": "c"}]"#;
        assert_eq!(
            parse_tool_calls(Mistral, array, &limits),
            Err(ToolCallError::TooManyCalls { limit: 2 })
        );
        let blocks = "<tool_call>{\"name\": \"f\"}</tool_call>".repeat(3);
        assert_eq!(
            parse_tool_calls(Hermes, &blocks, &limits),
            Err(ToolCallError::TooManyCalls { limit: 2 })
        );
    }

    #[test]
    fn json_bytes_are_bounded_over_the_whole_reply() {
        let limits = ToolCallLimits {
            max_json_bytes: 100,
            ..ToolCallLimits::default()
        };
        let call = format!(
            r#"{{"name": "f", "parameters": {{"s": "{}"}}}}"#,
            "a".repeat(50)
        );
        assert!(parse_tool_calls(Llama3Json, &call, &limits).is_ok());
        assert_eq!(
            parse_tool_calls(Llama3Json, &format!("{call};{call}"), &limits),
            Err(ToolCallError::TooLarge {
                index: 1,
                limit: 100
            })
        );
    }

    /// Ten thousand nested brackets: the depth error, before serde_json recurses (and well
    /// before a stack overflow), in every place JSON is read.
    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        let deep = "[".repeat(10_000);
        let too_deep = |index| Err(ToolCallError::TooDeep { index, limit: 64 });
        let texts = [
            (Hermes, format!("<tool_call>{deep}</tool_call>")),
            (
                Hermes,
                format!("<tool_call>{{\"name\": \"f\", \"arguments\": {{\"a\": {deep}"),
            ),
            (Llama3Json, "{".repeat(10_000)),
            (Mistral, format!("[TOOL_CALLS]{deep}")),
            (Mistral, format!("[TOOL_CALLS]f[ARGS]{{\"a\": {deep}}}")),
        ];
        for (format, text) in &texts {
            assert_eq!(parse(*format, text), too_deep(0), "{format:?}");
        }
        // Arguments in a string are checked too, and unescaped brackets inside strings are not
        // nesting.
        let in_string = json!({"name": "f", "arguments": deep}).to_string();
        assert_eq!(parse(Llama3Json, &in_string), too_deep(0));
        let text = json!({"name": "f", "parameters": {"s": deep}}).to_string();
        assert!(parse(Llama3Json, &text).is_ok());
        // Exactly at the limit: accepted.
        let limits = ToolCallLimits {
            max_depth: 3,
            ..ToolCallLimits::default()
        };
        let at_limit = r#"{"name": "f", "parameters": {"a": [1]}}"#;
        assert!(parse_tool_calls(Llama3Json, at_limit, &limits).is_ok());
        let over = r#"{"name": "f", "parameters": {"a": [[1]]}}"#;
        assert_eq!(
            parse_tool_calls(Llama3Json, over, &limits),
            Err(ToolCallError::TooDeep { index: 0, limit: 3 })
        );
    }

    #[test]
    fn detect_from_templates() {
        let qwen = "{%- for tool in tools %}...<tools></tools>...<tool_call>\\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\\n</tool_call><|im_end|>";
        assert_eq!(ToolCallFormat::detect(qwen), Some(Hermes));
        let qwen3_coder = "<tool_call>\n<function={{ tool_call.name }}>\n<parameter=";
        assert_eq!(ToolCallFormat::detect(qwen3_coder), None);
        let mistral = "{%- elif message.tool_calls is defined %}{{- \"[TOOL_CALLS] [\" }}";
        assert_eq!(ToolCallFormat::detect(mistral), Some(Mistral));
        let llama31 = "{{- '{\"name\": \"' + tool_call.name + '\", ' }}{{- '\"parameters\": ' }}{{- \"<|eot_id|>\" }}";
        assert_eq!(ToolCallFormat::detect(llama31), Some(Llama3Json));
        let llama_builtin = "{{- \"<|python_tag|>\" + tool_call.name + \".call(\" }}";
        assert_eq!(ToolCallFormat::detect(llama_builtin), Some(Llama3Json));
        let chatml = "{% for message in messages %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>{% endfor %}";
        assert_eq!(ToolCallFormat::detect(chatml), None);
        assert_eq!(ToolCallFormat::detect(""), None);
    }

    /// Fragments that steer random replies into the parsers' corners.
    fn reply_fragments() -> impl Strategy<Value = String> {
        let fragment = prop_oneof![
            Just("<tool_call>".to_owned()),
            Just("</tool_call>".to_owned()),
            Just("<|python_tag|>".to_owned()),
            Just("[TOOL_CALLS]".to_owned()),
            Just("[ARGS]".to_owned()),
            Just("[CALL_ID]".to_owned()),
            Just(r#"{"name": "f", "arguments": "#.to_owned()),
            Just(r#""parameters": {}"#.to_owned()),
            Just(";".to_owned()),
            Just("\"".to_owned()),
            Just("\\".to_owned()),
            Just("{".to_owned()),
            Just("}".to_owned()),
            Just("[".to_owned()),
            Just("]".to_owned()),
            "[a-z ,:é0-9]{0,6}",
        ];
        proptest::collection::vec(fragment, 0..40).prop_map(|parts| parts.concat())
    }

    /// JSON values without floats (whose text serde_json reads back exactly only with its
    /// `float_roundtrip` feature).
    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<String>().prop_map(Value::String),
            "(\\[TOOL_CALLS\\]|</tool_call>|<tool_call>|; |\\[ARGS\\]|[{}\\[\\]\"\\\\])*"
                .prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map("[a-z_\"\\\\]{0,8}", inner, 0..4)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    fn generated_call() -> impl Strategy<Value = ParsedToolCall> {
        let arguments = proptest::collection::btree_map(any::<String>(), json_value(), 0..4);
        ("[A-Za-z0-9_.-]{1,64}", arguments).prop_map(|(name, arguments)| ParsedToolCall {
            name,
            arguments: arguments.into_iter().collect(),
        })
    }

    /// `calls` written the way a model in `format` writes them (`variant` picks among a
    /// format's spellings), after `content` where the format has room for it.
    fn written(
        format: ToolCallFormat,
        variant: u8,
        content: &str,
        calls: &[ParsedToolCall],
    ) -> String {
        let object = |call: &ParsedToolCall, key: &str| {
            let mut object = Map::new();
            object.insert("name".into(), Value::String(call.name.clone()));
            let arguments = Value::Object(call.arguments.clone());
            let arguments = match variant % 2 {
                0 => arguments,
                _ => Value::String(arguments.to_string()),
            };
            object.insert(key.into(), arguments);
            Value::Object(object).to_string()
        };
        match format {
            Hermes => {
                let blocks = calls.iter().map(|call| {
                    format!("<tool_call>\n{}\n</tool_call>", object(call, "arguments"))
                });
                format!("{content}\n{}", blocks.collect::<Vec<_>>().join("\n"))
            }
            Llama3Json => {
                let key = if variant < 2 {
                    "parameters"
                } else {
                    "arguments"
                };
                let objects: Vec<_> = calls.iter().map(|call| object(call, key)).collect();
                let tag = if variant.is_multiple_of(3) {
                    "<|python_tag|>"
                } else {
                    ""
                };
                format!("{tag}{}", objects.join("; "))
            }
            Mistral if variant < 2 => {
                let objects: Vec<_> = calls.iter().map(|call| object(call, "arguments")).collect();
                format!("{content}[TOOL_CALLS] [{}]", objects.join(", "))
            }
            Mistral => {
                let named = calls.iter().map(|call| {
                    format!(
                        "[TOOL_CALLS]{}[ARGS]{}",
                        call.name,
                        Value::Object(call.arguments.clone())
                    )
                });
                format!("{content}{}", named.collect::<String>())
            }
        }
    }

    fn any_format() -> impl Strategy<Value = ToolCallFormat> {
        prop_oneof![Just(Hermes), Just(Llama3Json), Just(Mistral)]
    }

    proptest! {
        /// Any text, in any format: an answer, never a panic.
        #[test]
        fn arbitrary_text_never_panics(format in any_format(), text in any::<String>()) {
            let _ = parse(format, &text);
        }

        /// Text made of the formats' own markers and JSON punctuation: never a panic, and with
        /// tiny limits the limits hold.
        #[test]
        fn marker_soup_never_panics(format in any_format(), text in reply_fragments()) {
            let _ = parse(format, &text);
            let limits = ToolCallLimits { max_calls: 2, max_json_bytes: 64, max_depth: 2 };
            if let Ok(parsed) = parse_tool_calls(format, &text, &limits) {
                prop_assert!(parsed.tool_calls.len() <= 2);
            }
        }

        /// Calls written in a format read back as the same calls and content.
        #[test]
        fn generated_calls_round_trip(
            format in any_format(),
            variant in 0u8..4,
            content in "[A-Za-z][A-Za-z ,.!?]{0,30}",
            calls in proptest::collection::vec(generated_call(), 1..4),
        ) {
            let text = written(format, variant, &content, &calls);
            let parsed = parse(format, &text).unwrap();
            prop_assert_eq!(&parsed.tool_calls, &calls);
            let expected_content = match format {
                Llama3Json => None,
                Hermes | Mistral => Some(content.trim().to_owned()),
            };
            prop_assert_eq!(parsed.content, expected_content);
        }
    }
}
