//! OpenAI's error responses: a status code and `{"error": {"message", "type", "param",
//! "code"}}`, which the official clients turn into their exception classes (by status:
//! `BadRequestError` for 400, `AuthenticationError` 401, `NotFoundError` 404,
//! `RateLimitError` 429, ...). Every refusal of this server is one of these; messages name the
//! parameter and the allowed range, never a host path.

use serde_json::{Value, json};

/// One error response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: u16,
    /// What is wrong, for a person.
    pub message: String,
    /// OpenAI's `type` (`invalid_request_error`, `requests`, `server_error`).
    pub kind: &'static str,
    /// The request parameter at fault, if one is.
    pub param: Option<String>,
    /// A machine-readable code (`invalid_api_key`, `model_not_found`, ...), if any.
    pub code: Option<&'static str>,
    /// Seconds after which a retry may succeed (`Retry-After`, with 429 and 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// 400: a parameter is missing, of the wrong type or out of its range.
    pub fn invalid_param(param: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            param: Some(param.to_string()),
            ..ApiError::bad_request(message)
        }
    }

    /// 400: the request as a whole is malformed (not JSON, too deep, ...).
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, message, "invalid_request_error", None)
    }

    /// 401: no API key, or a wrong one (the key is never echoed).
    pub fn unauthorized() -> ApiError {
        ApiError::new(
            401,
            "missing or incorrect API key: send it as `Authorization: Bearer KEY`",
            "invalid_request_error",
            Some("invalid_api_key"),
        )
    }

    /// 404: the model is not served here (the models served are listed at `/v1/models`).
    pub fn model_not_found(model: &str) -> ApiError {
        ApiError {
            param: Some("model".to_string()),
            ..ApiError::new(
                404,
                format!("the model `{model}` is not served here; GET /v1/models lists them"),
                "invalid_request_error",
                Some("model_not_found"),
            )
        }
    }

    /// 404: no such endpoint.
    pub fn no_route(method: &str, path: &str) -> ApiError {
        ApiError::new(
            404,
            format!("no route for {method} {path}"),
            "invalid_request_error",
            Some("unknown_url"),
        )
    }

    /// 413: the body is over `--max-body-bytes`.
    pub fn body_too_large(limit: usize) -> ApiError {
        ApiError::new(
            413,
            format!("the request body is larger than {limit} bytes (--max-body-bytes)"),
            "invalid_request_error",
            Some("request_too_large"),
        )
    }

    /// 429: the queue is full; retry after `seconds`.
    pub fn queue_full(seconds: u64) -> ApiError {
        ApiError {
            retry_after: Some(seconds),
            ..ApiError::new(
                429,
                "the server is at capacity (--max-queued requests waiting); retry later",
                "requests",
                Some("rate_limit_exceeded"),
            )
        }
    }

    /// 503: not ready yet (models loading) or shutting down.
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError {
            retry_after: Some(1),
            ..ApiError::new(503, message, "server_error", Some("unavailable"))
        }
    }

    /// 500: the server (or the model it serves) failed; the message says what, never a host
    /// path.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(500, message, "server_error", None)
    }

    /// 504: the request outlived `--request-timeout`.
    pub fn timed_out(seconds: u64) -> ApiError {
        ApiError::new(
            504,
            format!("the request took longer than {seconds} s (--request-timeout)"),
            "server_error",
            Some("timeout"),
        )
    }

    fn new(
        status: u16,
        message: impl Into<String>,
        kind: &'static str,
        code: Option<&'static str>,
    ) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            kind,
            param: None,
            code,
            retry_after: None,
        }
    }

    /// The response body.
    pub fn body(&self) -> Value {
        json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_have_openai_shape() {
        let error = ApiError::invalid_param("top_p", "top_p 1.5: must be from 0 to 1");
        assert_eq!(error.status, 400);
        assert_eq!(
            error.body(),
            json!({"error": {
                "message": "top_p 1.5: must be from 0 to 1",
                "type": "invalid_request_error",
                "param": "top_p",
                "code": null,
            }})
        );
        let full = ApiError::queue_full(2);
        assert_eq!((full.status, full.retry_after), (429, Some(2)));
        assert_eq!(full.body()["error"]["code"], "rate_limit_exceeded");
        assert_eq!(ApiError::unauthorized().status, 401);
        assert_eq!(
            ApiError::model_not_found("x").body()["error"]["param"],
            "model"
        );
    }
}
