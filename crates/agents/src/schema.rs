//! JSON Schemas of a tool's arguments and result, checked and compiled so that a schema can
//! never make us fetch anything or run away.
//!
//! A schema comes from the tool's author. Before [`jsonschema`] sees it, [`precheck`] bounds it
//! without recursion (at most [`MAX_SCHEMA_DEPTH`] levels, [`MAX_SCHEMA_NODES`] values,
//! [`MAX_SCHEMA_BYTES`] bytes) and refuses every reference that leaves the schema: a `$ref`,
//! `$dynamicRef` or `$recursiveRef` that is not a local fragment (`#...`), and a `$schema` that
//! is not one of the drafts built into the validator. Compiling then uses `jsonschema` built
//! without its default features (no HTTP or file retrieval compiled in at all), told to
//! retrieve nothing (`offline`), with the linear-time `regex` engine for `pattern`s (no
//! catastrophic backtracking).

use jsonschema::{Draft, PatternOptions, Validator};
use serde_json::Value;

/// Deepest nesting of a schema.
pub const MAX_SCHEMA_DEPTH: usize = 64;
/// Most JSON values (objects, arrays and scalars) in a schema.
pub const MAX_SCHEMA_NODES: usize = 100_000;
/// Largest schema, as compact JSON.
pub const MAX_SCHEMA_BYTES: usize = 1 << 20;
/// Most messages a failed validation returns.
pub const MAX_MESSAGES: usize = 16;
/// Longest message (in characters) a failed validation returns.
pub const MAX_MESSAGE_CHARS: usize = 300;
/// Largest compiled `pattern` regex.
const MAX_REGEX_BYTES: usize = 1 << 20;

/// Why a schema is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// Nested deeper than [`MAX_SCHEMA_DEPTH`].
    #[error("nested deeper than {MAX_SCHEMA_DEPTH} levels (at {at})")]
    TooDeep {
        /// JSON pointer of the first value too deep.
        at: String,
    },
    /// More than [`MAX_SCHEMA_NODES`] values.
    #[error("more than {MAX_SCHEMA_NODES} values")]
    TooManyNodes,
    /// Larger than [`MAX_SCHEMA_BYTES`].
    #[error("{bytes} bytes as JSON, over the {MAX_SCHEMA_BYTES}-byte cap")]
    TooLarge {
        /// Its size.
        bytes: usize,
    },
    /// A reference to something outside the schema.
    #[error(
        "refused: `{keyword}` at {at} is {value}, not a local `#...` reference (a tool's schemas \
         must be self-contained: nothing is ever fetched for them)"
    )]
    ExternalReference {
        /// `$ref`, `$dynamicRef`, `$recursiveRef` or `$schema`.
        keyword: String,
        /// JSON pointer of the object holding it.
        at: String,
        /// Its value, escaped and shortened.
        value: String,
    },
    /// The argument schema is not an object schema (`{"type": "object", ...}`).
    #[error(
        "must be a JSON Schema object with \"type\": \"object\" (a tool's arguments are a JSON object)"
    )]
    NotAnObjectSchema,
    /// `jsonschema` refused it (not a valid schema, an unresolvable local reference, a `pattern`
    /// the linear-time engine does not support).
    #[error("not a valid JSON Schema: {0}")]
    Invalid(String),
}

impl SchemaError {
    /// Whether this is a refusal by security policy (a reference out of the schema).
    pub fn is_policy_refusal(&self) -> bool {
        matches!(self, SchemaError::ExternalReference { .. })
    }
}

/// Keywords whose value names another schema document.
const REFERENCE_KEYWORDS: [&str; 3] = ["$ref", "$dynamicRef", "$recursiveRef"];

/// Bounds `schema` and refuses references out of it (see the module doc), without recursion:
/// a schema nested 10^5 levels deep is refused after [`MAX_SCHEMA_DEPTH`] + 1 steps.
pub fn precheck(schema: &Value) -> Result<(), SchemaError> {
    let mut stack: Vec<(&Value, usize, String)> = vec![(schema, 0, String::new())];
    let mut nodes = 0_usize;
    while let Some((value, depth, pointer)) = stack.pop() {
        nodes += 1;
        if nodes > MAX_SCHEMA_NODES {
            return Err(SchemaError::TooManyNodes);
        }
        if depth > MAX_SCHEMA_DEPTH {
            return Err(SchemaError::TooDeep {
                at: shown_pointer(&pointer),
            });
        }
        match value {
            Value::Array(items) => {
                for (index, item) in items.iter().enumerate() {
                    stack.push((item, depth + 1, format!("{pointer}/{index}")));
                }
            }
            Value::Object(members) => {
                for (key, member) in members {
                    check_reference(key, member, &pointer)?;
                    let escaped = key.replace('~', "~0").replace('/', "~1");
                    stack.push((member, depth + 1, format!("{pointer}/{escaped}")));
                }
            }
            _ => {}
        }
    }
    // Bounded in depth now, so serialising recurses at most MAX_SCHEMA_DEPTH levels.
    let bytes = serde_json::to_vec(schema).map_or(usize::MAX, |json| json.len());
    if bytes > MAX_SCHEMA_BYTES {
        return Err(SchemaError::TooLarge { bytes });
    }
    Ok(())
}

/// Refuses `key: value` when it is a reference keyword pointing outside the schema, or a
/// `$schema` that is not a built-in draft (an unknown meta-schema would be retrieved).
fn check_reference(key: &str, value: &Value, pointer: &str) -> Result<(), SchemaError> {
    let refused = || SchemaError::ExternalReference {
        keyword: key.to_string(),
        at: shown_pointer(pointer),
        value: shorten(&value.to_string()),
    };
    if REFERENCE_KEYWORDS.contains(&key) {
        match value {
            Value::String(target) if target.starts_with('#') => Ok(()),
            _ => Err(refused()),
        }
    } else if key == "$schema" {
        match value {
            Value::String(uri) if Draft::from_schema_uri(uri) != Draft::Unknown => Ok(()),
            _ => Err(refused()),
        }
    } else {
        Ok(())
    }
}

fn shown_pointer(pointer: &str) -> String {
    if pointer.is_empty() {
        "the root".to_string()
    } else {
        shorten(pointer)
    }
}

/// `text` cut to [`MAX_MESSAGE_CHARS`] characters (with `...`), its controls escaped.
fn shorten(text: &str) -> String {
    let mut shown: String = text
        .chars()
        .take(MAX_MESSAGE_CHARS)
        .flat_map(char::escape_debug)
        .collect();
    if text.chars().nth(MAX_MESSAGE_CHARS).is_some() {
        shown.push_str("...");
    }
    shown
}

/// A schema that passed [`precheck`] and compiled: validates values.
pub struct CompiledSchema {
    validator: Validator,
}

impl std::fmt::Debug for CompiledSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledSchema").finish_non_exhaustive()
    }
}

impl CompiledSchema {
    /// Pre-checks and compiles `schema` (any schema: an output schema may be of any type).
    pub fn compile(schema: &Value) -> Result<CompiledSchema, SchemaError> {
        precheck(schema)?;
        let validator = jsonschema::options()
            .offline()
            .with_pattern_options(
                PatternOptions::regex()
                    .size_limit(MAX_REGEX_BYTES)
                    .dfa_size_limit(MAX_REGEX_BYTES),
            )
            .build(schema)
            .map_err(|error| SchemaError::Invalid(shorten(&error.to_string())))?;
        Ok(CompiledSchema { validator })
    }

    /// Pre-checks and compiles the schema of a tool's arguments: it must also be an object
    /// schema (`"type": "object"`).
    pub fn compile_arguments(schema: &Value) -> Result<CompiledSchema, SchemaError> {
        let is_object_schema = schema
            .as_object()
            .and_then(|members| members.get("type"))
            .is_some_and(|kind| kind == "object");
        if !is_object_schema {
            return Err(SchemaError::NotAnObjectSchema);
        }
        CompiledSchema::compile(schema)
    }

    /// Checks `value`: `Ok`, or at most [`MAX_MESSAGES`] messages of at most
    /// [`MAX_MESSAGE_CHARS`] characters each, each naming where in `value` it failed. The
    /// messages do not repeat the value itself (it may be large).
    pub fn validate(&self, value: &Value) -> Result<(), Vec<String>> {
        let mut messages = Vec::new();
        let mut more = 0_usize;
        for error in self.validator.iter_errors(value) {
            if messages.len() == MAX_MESSAGES {
                more += 1;
                continue;
            }
            let at = error.instance_path().to_string();
            let at = if at.is_empty() { "/".to_string() } else { at };
            messages.push(shorten(&format!("{at}: {}", error.masked())));
        }
        if more > 0 {
            messages.push(format!("... and {more} more"));
        }
        if messages.is_empty() {
            Ok(())
        } else {
            Err(messages)
        }
    }
}

/// Validates a tool call's `arguments` against the tool's argument `schema` (pre-checked and
/// compiled first; a schema that does not compile is one message). Compile once with
/// [`CompiledSchema::compile_arguments`] to validate many calls.
///
/// ```
/// use safeformers_agents::schema::validate_arguments;
/// use serde_json::json;
/// let schema = json!({"type": "object", "properties": {"text": {"type": "string"}},
///                     "required": ["text"], "additionalProperties": false});
/// assert!(validate_arguments(&schema, &json!({"text": "hi"})).is_ok());
/// let errors = validate_arguments(&schema, &json!({"text": 3, "x": 1})).unwrap_err();
/// assert_eq!(errors.len(), 2);
/// ```
pub fn validate_arguments(schema: &Value, arguments: &Value) -> Result<(), Vec<String>> {
    CompiledSchema::compile_arguments(schema)
        .map_err(|error| vec![format!("the tool's schema is refused: {error}")])?
        .validate(arguments)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use serde_json::json;
    use std::io::ErrorKind;
    use std::net::TcpListener;

    /// Builds `{"allOf": [{"allOf": [... {} ...]}]}` `levels` deep without recursion.
    fn nested_all_of(levels: usize) -> Value {
        // Not `json!({"allOf": [value]})`: the macro serializes `value`, recursing through it.
        let mut value = json!({});
        for _ in 0..levels {
            let mut members = serde_json::Map::new();
            members.insert("allOf".into(), Value::Array(vec![value]));
            value = Value::Object(members);
        }
        value
    }

    /// Takes a deep value apart one level at a time: dropping it whole would recurse once per
    /// level.
    fn drop_iteratively(mut value: Value) {
        loop {
            let inner = match &mut value {
                Value::Object(members) => members.values_mut().next().map(Value::take),
                Value::Array(items) => items.pop(),
                _ => None,
            };
            match inner {
                Some(inner) => value = inner,
                None => break,
            }
        }
    }

    /// T9: `$ref`s to a loopback listener and to a file are refused, and the listener sees no
    /// connection at all (checked after the compile returns: a connection made would be waiting
    /// in its backlog).
    #[test]
    fn t9_remote_and_file_refs_are_refused_without_a_request() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let targets = [
            format!("http://127.0.0.1:{port}/x"),
            format!("http://127.0.0.1:{port}/x#/definitions/a"),
            "file:///etc/passwd".to_string(),
            "/etc/passwd".to_string(),
            "other.json#/a".to_string(),
        ];
        for target in &targets {
            for keyword in REFERENCE_KEYWORDS {
                let schema = json!({
                    "type": "object",
                    "properties": {"a": {keyword: target}}
                });
                let error = CompiledSchema::compile_arguments(&schema).unwrap_err();
                assert!(error.is_policy_refusal(), "{keyword} {target}: {error}");
                assert!(error.to_string().contains("/properties/a"), "{error}");
                assert!(validate_arguments(&schema, &json!({"a": 1})).is_err());
            }
        }
        let meta = json!({"$schema": format!("http://127.0.0.1:{port}/meta"), "type": "object"});
        assert!(
            CompiledSchema::compile(&meta)
                .unwrap_err()
                .is_policy_refusal()
        );
        match listener.accept() {
            Err(error) if error.kind() == ErrorKind::WouldBlock => {}
            other => panic!("the listener was connected to: {other:?}"),
        }
    }

    /// Without the pre-check, `jsonschema` itself (no default features, offline) still fetches
    /// nothing: the second line of defence holds on its own.
    #[test]
    fn the_validator_alone_fetches_nothing() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        for target in [
            format!("http://127.0.0.1:{port}/x"),
            "file:///etc/passwd".into(),
        ] {
            let schema = json!({"$ref": target});
            assert!(jsonschema::options().offline().build(&schema).is_err());
            assert!(
                jsonschema::options().build(&schema).is_err(),
                "default retriever"
            );
        }
        assert!(matches!(listener.accept(), Err(e) if e.kind() == ErrorKind::WouldBlock));
    }

    #[test]
    fn local_refs_and_known_drafts_compile() {
        let schema = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "$defs": {"word": {"type": "string", "pattern": "^[a-z]+$"}},
            "properties": {"word": {"$ref": "#/$defs/word"}},
            "required": ["word"]
        });
        let compiled = CompiledSchema::compile_arguments(&schema).unwrap();
        assert!(compiled.validate(&json!({"word": "abc"})).is_ok());
        let errors = compiled.validate(&json!({"word": "ABC"})).unwrap_err();
        assert!(errors[0].starts_with("/word: "), "{errors:?}");
        assert!(
            !errors[0].contains("ABC"),
            "the value is not echoed: {errors:?}"
        );
    }

    /// T9: a schema 10^5 levels deep is refused by the pre-check, without recursing.
    #[test]
    fn t9_deep_nesting_is_refused_by_the_precheck() {
        let deep = nested_all_of(100_000);
        let error = precheck(&deep).unwrap_err();
        assert!(matches!(error, SchemaError::TooDeep { .. }), "{error}");
        let error = CompiledSchema::compile(&deep).unwrap_err();
        assert!(matches!(error, SchemaError::TooDeep { .. }), "{error}");
        drop_iteratively(deep);
        // 64 levels of values (32 of `allOf: [..]`) are fine.
        assert!(precheck(&nested_all_of(32)).is_ok());
        assert!(matches!(
            precheck(&nested_all_of(33)),
            Err(SchemaError::TooDeep { .. })
        ));
    }

    #[test]
    fn wide_and_large_schemas_are_refused() {
        let wide = Value::Array(vec![json!(0); MAX_SCHEMA_NODES]);
        assert_eq!(precheck(&wide), Err(SchemaError::TooManyNodes));
        let large = json!({"description": "x".repeat(MAX_SCHEMA_BYTES)});
        assert!(matches!(
            precheck(&large),
            Err(SchemaError::TooLarge { .. })
        ));
    }

    #[test]
    fn argument_schemas_are_object_schemas() {
        for schema in [json!(true), json!({}), json!({"type": "string"}), json!([])] {
            assert_eq!(
                CompiledSchema::compile_arguments(&schema).unwrap_err(),
                SchemaError::NotAnObjectSchema
            );
        }
        let invalid = json!({"type": "object", "minProperties": "two"});
        assert!(matches!(
            CompiledSchema::compile_arguments(&invalid),
            Err(SchemaError::Invalid(_))
        ));
        // Backtracking-only regex syntax is refused by the linear-time engine.
        let lookahead = json!({"type": "object", "properties": {"a": {"pattern": "(?=a)"}}});
        assert!(matches!(
            CompiledSchema::compile_arguments(&lookahead),
            Err(SchemaError::Invalid(_))
        ));
    }

    #[test]
    fn messages_are_bounded() {
        let schema = json!({
            "type": "object",
            "additionalProperties": {"type": "string", "maxLength": 1}
        });
        let arguments: serde_json::Map<String, Value> = (0..100)
            .map(|index| (format!("k{index}"), json!("x".repeat(10_000))))
            .collect();
        let errors = validate_arguments(&schema, &Value::Object(arguments)).unwrap_err();
        assert_eq!(errors.len(), MAX_MESSAGES + 1);
        assert_eq!(errors[MAX_MESSAGES], "... and 84 more");
        assert!(
            errors
                .iter()
                .all(|message| message.chars().count() <= MAX_MESSAGE_CHARS + 3)
        );
    }
}
