//! Reading a request's JSON object field by field, each checked against its type and range,
//! with OpenAI's error (400, `param` set) naming the field and what is allowed. Nothing is
//! clamped: a value out of range is refused.

use serde_json::{Map, Value};

use crate::api_error::ApiError;
use crate::json_shape::check_json_shape;
use crate::limits::Limits;

/// A request body as JSON: its shape checked against the limits first ([`check_json_shape`]),
/// then parsed. Either failure is a 400 without a `param`.
pub fn parse_body(body: &[u8], limits: &Limits) -> Result<Value, ApiError> {
    check_json_shape(body, limits.max_json_depth, limits.max_json_values)
        .map_err(|error| ApiError::bad_request(error.to_string()))?;
    serde_json::from_slice(body)
        .map_err(|error| ApiError::bad_request(format!("the body is not valid JSON: {error}")))
}

/// A request body's top-level object and the fields read from it so far.
pub struct Fields<'a> {
    object: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    /// The body's object, or a 400 when it is not one.
    pub fn of(body: &'a Value) -> Result<Fields<'a>, ApiError> {
        match body {
            Value::Object(object) => Ok(Fields { object }),
            _ => Err(ApiError::bad_request(
                "the request body must be a JSON object",
            )),
        }
    }

    /// Refuses any field not in `known` (OpenAI answers "Unrecognized request argument").
    pub fn refuse_unknown(&self, known: &[&str]) -> Result<(), ApiError> {
        match self
            .object
            .keys()
            .find(|key| !known.contains(&key.as_str()))
        {
            Some(key) => Err(ApiError::invalid_param(
                key,
                format!("unrecognized request argument: {}", shown(key)),
            )),
            None => Ok(()),
        }
    }

    /// The raw value of `name`, absent or `null` being `None`.
    pub fn value(&self, name: &str) -> Option<&'a Value> {
        self.object.get(name).filter(|value| !value.is_null())
    }

    /// A required string.
    pub fn string(&self, name: &str) -> Result<&'a str, ApiError> {
        self.optional_string(name)?
            .ok_or_else(|| ApiError::invalid_param(name, format!("`{name}` is required")))
    }

    /// An optional string.
    pub fn optional_string(&self, name: &str) -> Result<Option<&'a str>, ApiError> {
        match self.value(name) {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(text)),
            Some(_) => Err(ApiError::invalid_param(
                name,
                format!("`{name}` must be a string"),
            )),
        }
    }

    /// An optional boolean.
    pub fn bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.value(name) {
            None => Ok(None),
            Some(Value::Bool(flag)) => Ok(Some(*flag)),
            Some(_) => Err(ApiError::invalid_param(
                name,
                format!("`{name}` must be a boolean"),
            )),
        }
    }

    /// An optional integer from `low` to `high`.
    pub fn integer(&self, name: &str, low: u64, high: u64) -> Result<Option<u64>, ApiError> {
        let Some(value) = self.value(name) else {
            return Ok(None);
        };
        match value.as_u64() {
            Some(number) if (low..=high).contains(&number) => Ok(Some(number)),
            _ => Err(ApiError::invalid_param(
                name,
                format!(
                    "`{name}` {}: must be an integer from {low} to {high}",
                    brief(value)
                ),
            )),
        }
    }

    /// An optional signed integer (a seed).
    pub fn signed(&self, name: &str) -> Result<Option<i64>, ApiError> {
        let Some(value) = self.value(name) else {
            return Ok(None);
        };
        match (value.as_i64(), value.as_u64()) {
            (Some(number), _) => Ok(Some(number)),
            (None, Some(number)) => Ok(Some(number as i64)),
            _ => Err(ApiError::invalid_param(
                name,
                format!("`{name}` {}: must be an integer", brief(value)),
            )),
        }
    }

    /// An optional finite number from `low` to `high`.
    pub fn number(&self, name: &str, low: f64, high: f64) -> Result<Option<f64>, ApiError> {
        let Some(value) = self.value(name) else {
            return Ok(None);
        };
        match value.as_f64() {
            Some(number) if number.is_finite() && (low..=high).contains(&number) => {
                Ok(Some(number))
            }
            _ => Err(ApiError::invalid_param(
                name,
                format!(
                    "`{name}` {}: must be a number from {low} to {high}",
                    brief(value)
                ),
            )),
        }
    }

    /// An optional array of at most `max` items.
    pub fn array(&self, name: &str, max: usize) -> Result<Option<&'a Vec<Value>>, ApiError> {
        match self.value(name) {
            None => Ok(None),
            Some(Value::Array(items)) if items.len() <= max => Ok(Some(items)),
            Some(Value::Array(items)) => Err(ApiError::invalid_param(
                name,
                format!("`{name}` holds {} items: at most {max}", items.len()),
            )),
            Some(_) => Err(ApiError::invalid_param(
                name,
                format!("`{name}` must be an array"),
            )),
        }
    }
}

/// A value as shown in an error: numbers as they are, anything else by its type (a request's
/// text is not echoed into errors or logs).
pub fn brief(value: &Value) -> String {
    match value {
        Value::Number(number) => number.to_string(),
        Value::Bool(flag) => flag.to_string(),
        Value::String(_) => "(a string)".to_string(),
        Value::Array(_) => "(an array)".to_string(),
        Value::Object(_) => "(an object)".to_string(),
        Value::Null => "null".to_string(),
    }
}

/// A client-chosen name in an error: at most 64 characters, escaped.
pub fn shown(name: &str) -> String {
    let cut: String = name.chars().take(64).collect();
    format!("`{}`", cut.escape_debug())
}
