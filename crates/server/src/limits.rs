//! Every bound a request meets, each with a safe default and a range a flag may set it in:
//! nothing a client sends can make the server hold unbounded memory or time (vLLM's
//! header-count DoS, llama-server's unbounded `n_cmpl`).

use std::time::Duration;

/// The bounds of one server. [`Limits::default`] is what `safeformers serve` uses unless a
/// flag says otherwise; [`Limits::check`] refuses values outside each one's range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Request body bytes (`--max-body-bytes`); more is a 413.
    pub max_body_bytes: usize,
    /// Request headers (`--max-headers`); more closes the connection.
    pub max_headers: usize,
    /// Bytes of all request headers together (`--max-header-bytes`).
    pub max_header_bytes: usize,
    /// The largest `max_tokens` / `max_completion_tokens` a request may ask for
    /// (`--max-tokens-ceiling`); more is a 400, never silently clamped.
    pub max_tokens_ceiling: usize,
    /// The largest `n` (completions per request) (`--max-n`).
    pub max_n: usize,
    /// The largest `top_logprobs` (`--max-top-logprobs`; OpenAI's own cap is 20).
    pub max_top_logprobs: usize,
    /// Messages per chat request (`--max-messages`).
    pub max_messages: usize,
    /// Tools per chat request (`--max-tools`).
    pub max_tools: usize,
    /// `stop` strings per request (OpenAI allows 4).
    pub max_stop_sequences: usize,
    /// Inputs per embeddings request (`--max-embedding-inputs`; OpenAI allows 2048).
    pub max_embedding_inputs: usize,
    /// Prompts per completions request (`--max-prompts`).
    pub max_prompts: usize,
    /// Nesting depth of a request's JSON (`--max-json-depth`).
    pub max_json_depth: usize,
    /// Values (objects, arrays, scalars) in a request's JSON (`--max-json-values`).
    pub max_json_values: usize,
    /// Requests waiting for a slot (`--max-queued`); more is a 429 with `Retry-After`.
    pub max_queued: usize,
    /// Open connections (`--max-connections`); more wait in the listen backlog.
    pub max_connections: usize,
    /// A connection silent this long is closed (`--idle-timeout`; slowloris).
    pub idle_timeout: Duration,
    /// A request's headers and body must arrive within this (`--header-timeout`).
    pub header_timeout: Duration,
    /// A request must be answered, to its last byte, within this (`--request-timeout`).
    pub request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_body_bytes: 4 << 20,
            max_headers: 64,
            max_header_bytes: 16 << 10,
            max_tokens_ceiling: 4096,
            max_n: 8,
            max_top_logprobs: 20,
            max_messages: 1024,
            max_tools: 128,
            max_stop_sequences: 4,
            max_embedding_inputs: 2048,
            max_prompts: 32,
            max_json_depth: 64,
            max_json_values: 1 << 20,
            max_queued: 256,
            max_connections: 512,
            idle_timeout: Duration::from_secs(30),
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(600),
        }
    }
}

/// A limit set outside its range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{flag} {value}: must be from {low} to {high}")]
pub struct LimitError {
    /// The flag that sets it.
    pub flag: &'static str,
    /// The value given.
    pub value: u64,
    /// The smallest value allowed.
    pub low: u64,
    /// The largest value allowed.
    pub high: u64,
}

impl Limits {
    /// Checks every limit against its range (a flag cannot turn a bound off or make it absurd:
    /// a gigabyte body, a million-deep JSON, a zero timeout).
    pub fn check(&self) -> Result<(), LimitError> {
        let ranges: [(&'static str, u64, u64, u64); 18] = [
            (
                "--max-body-bytes",
                as_u64(self.max_body_bytes),
                1 << 10,
                256 << 20,
            ),
            ("--max-headers", as_u64(self.max_headers), 8, 1024),
            (
                "--max-header-bytes",
                as_u64(self.max_header_bytes),
                1 << 10,
                1 << 20,
            ),
            (
                "--max-tokens-ceiling",
                as_u64(self.max_tokens_ceiling),
                1,
                1 << 20,
            ),
            ("--max-n", as_u64(self.max_n), 1, 128),
            ("--max-top-logprobs", as_u64(self.max_top_logprobs), 0, 20),
            ("--max-messages", as_u64(self.max_messages), 1, 1 << 16),
            ("--max-tools", as_u64(self.max_tools), 0, 4096),
            (
                "--max-stop-sequences",
                as_u64(self.max_stop_sequences),
                0,
                64,
            ),
            (
                "--max-embedding-inputs",
                as_u64(self.max_embedding_inputs),
                1,
                1 << 16,
            ),
            ("--max-prompts", as_u64(self.max_prompts), 1, 4096),
            ("--max-json-depth", as_u64(self.max_json_depth), 4, 512),
            (
                "--max-json-values",
                as_u64(self.max_json_values),
                16,
                1 << 26,
            ),
            ("--max-queued", as_u64(self.max_queued), 0, 1 << 16),
            (
                "--max-connections",
                as_u64(self.max_connections),
                1,
                1 << 16,
            ),
            ("--idle-timeout", self.idle_timeout.as_secs(), 1, 3600),
            ("--header-timeout", self.header_timeout.as_secs(), 1, 600),
            (
                "--request-timeout",
                self.request_timeout.as_secs(),
                1,
                86_400,
            ),
        ];
        for (flag, value, low, high) in ranges {
            if !(low..=high).contains(&value) {
                return Err(LimitError {
                    flag,
                    value,
                    low,
                    high,
                });
            }
        }
        Ok(())
    }
}

fn as_u64(value: usize) -> u64 {
    u64::try_from(value).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn defaults_hold_and_absurd_values_are_refused_by_flag() {
        assert_eq!(Limits::default().check(), Ok(()));
        let huge_body = Limits {
            max_body_bytes: 1 << 40,
            ..Limits::default()
        };
        assert_eq!(huge_body.check().unwrap_err().flag, "--max-body-bytes");
        let no_timeout = Limits {
            idle_timeout: Duration::ZERO,
            ..Limits::default()
        };
        let error = no_timeout.check().unwrap_err();
        assert_eq!(error.flag, "--idle-timeout");
        assert!(error.to_string().contains("from 1 to 3600"), "{error}");
        let zero_n = Limits {
            max_n: 0,
            ..Limits::default()
        };
        assert_eq!(zero_n.check().unwrap_err().flag, "--max-n");
    }
}
