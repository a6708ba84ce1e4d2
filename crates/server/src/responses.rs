//! The response bodies of the OpenAI endpoints, in OpenAI's shapes (the official clients parse
//! them into their typed objects), and server-sent events framing for `stream: true`.

use serde::Serialize;

/// Token counts of a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Prompt tokens (all prompts, after the chat template).
    pub prompt_tokens: u64,
    /// Generated tokens (every choice).
    pub completion_tokens: u64,
    /// Their sum.
    pub total_tokens: u64,
}

impl Usage {
    /// Usage of `prompt` and `completion` tokens.
    pub fn new(prompt: u64, completion: u64) -> Usage {
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt.saturating_add(completion),
        }
    }
}

/// Why a choice ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// An end-of-sequence token or a stop string.
    Stop,
    /// `max_tokens` (or the context window).
    Length,
    /// The model called tools.
    ToolCalls,
}

/// A tool call in an assistant message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ToolCall {
    /// The call's position among the message's calls (streamed deltas only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<u64>,
    /// The call's id (`call_…`), which the tool's answer quotes.
    pub id: String,
    /// Always `function`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The function and its arguments (a JSON object, as text).
    pub function: FunctionCall,
}

/// A function call: its name and arguments (JSON text, as OpenAI sends them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FunctionCall {
    /// The function's name.
    pub name: String,
    /// The arguments as JSON text.
    pub arguments: String,
}

/// The assistant message of a chat choice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AssistantMessage {
    /// Always `assistant`.
    pub role: &'static str,
    /// The text (`null` when the reply is tool calls only).
    pub content: Option<String>,
    /// Tool calls, left out when there are none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
}

/// One choice of a chat completion.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatChoice {
    /// Its index among the request's `n`.
    pub index: u64,
    /// The reply.
    pub message: AssistantMessage,
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// Log-probabilities, when asked (`null` otherwise).
    pub logprobs: Option<serde_json::Value>,
}

/// `POST /v1/chat/completions`, not streamed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatCompletion {
    /// `chatcmpl-…`.
    pub id: String,
    /// Always `chat.completion`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: u64,
    /// The served model's name.
    pub model: String,
    /// One per `n`.
    pub choices: Vec<ChatChoice>,
    /// Token counts.
    pub usage: Usage,
}

/// What a streamed chunk adds to a choice.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ChatDelta {
    /// `assistant` in a choice's first chunk only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    /// New text, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Tool calls completed in this chunk, if any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
}

/// One choice's part of a streamed chunk.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChunkChoice {
    /// The choice's index.
    pub index: u64,
    /// What this chunk adds.
    pub delta: ChatDelta,
    /// Set in the choice's last chunk.
    pub finish_reason: Option<FinishReason>,
    /// The log-probabilities of this chunk's tokens, when asked for.
    pub logprobs: Option<serde_json::Value>,
}

/// One server-sent event of a streamed chat completion.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatCompletionChunk {
    /// The same id in every chunk of a response.
    pub id: String,
    /// Always `chat.completion.chunk`.
    pub object: &'static str,
    /// Unix seconds (the same in every chunk).
    pub created: u64,
    /// The served model's name.
    pub model: String,
    /// The choices this chunk touches (none in the usage chunk).
    pub choices: Vec<ChunkChoice>,
    /// Only in the final chunk, with `stream_options.include_usage` (`null` before it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// One choice of a (legacy) completion.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompletionChoice {
    /// Its index (prompt-major: prompt `p`, sample `s` is `p · n + s`).
    pub index: u64,
    /// The text (after the prompt, when `echo`).
    pub text: String,
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// Log-probabilities, when asked.
    pub logprobs: Option<serde_json::Value>,
}

/// `POST /v1/completions` (or one streamed event of it, with `object` `text_completion` too).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Completion {
    /// `cmpl-…`.
    pub id: String,
    /// Always `text_completion`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: u64,
    /// The served model's name.
    pub model: String,
    /// The choices.
    pub choices: Vec<CompletionChoice>,
    /// Token counts (left out of streamed events but the last with `include_usage`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// One vector as the request asked for it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum EmbeddingVector {
    /// JSON numbers.
    Float(Vec<f32>),
    /// Little-endian f32 bytes in standard base64.
    Base64(String),
}

impl EmbeddingVector {
    /// `values` as base64 of their little-endian bytes (what the OpenAI client decodes).
    pub fn base64(values: &[f32]) -> EmbeddingVector {
        let bytes: Vec<u8> = values
            .iter()
            .flat_map(|value| value.to_le_bytes())
            .collect();
        EmbeddingVector::Base64(base64_standard(&bytes))
    }
}

/// One embedding of `/v1/embeddings`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Embedding {
    /// Always `embedding`.
    pub object: &'static str,
    /// The input's index.
    pub index: u64,
    /// The vector.
    pub embedding: EmbeddingVector,
}

/// `POST /v1/embeddings`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EmbeddingsResponse {
    /// Always `list`.
    pub object: &'static str,
    /// One per input, in order.
    pub data: Vec<Embedding>,
    /// The served model's name.
    pub model: String,
    /// Prompt tokens (`completion_tokens` absent, as OpenAI's).
    pub usage: EmbeddingsUsage,
}

/// Token counts of an embeddings request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct EmbeddingsUsage {
    /// Tokens of all inputs.
    pub prompt_tokens: u64,
    /// The same.
    pub total_tokens: u64,
}

/// One event of a server-sent stream: `data: JSON` and a blank line.
pub fn sse_event(value: &impl Serialize) -> Result<String, serde_json::Error> {
    Ok(format!("data: {}\n\n", serde_json::to_string(value)?))
}

/// The event that ends every OpenAI stream.
pub const SSE_DONE: &str = "data: [DONE]\n\n";

/// Standard base64 with padding (RFC 4648 §4).
fn base64_standard(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let symbol =
        |index: u32| char::from(ALPHABET.get(index as usize & 63).copied().unwrap_or(b'='));
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let [a, b, c] = [0, 1, 2].map(|i| u32::from(chunk.get(i).copied().unwrap_or(0)));
        let triple = (a << 16) | (b << 8) | c;
        out.push(symbol(triple >> 18));
        out.push(symbol(triple >> 12));
        out.push(if chunk.len() > 1 {
            symbol(triple >> 6)
        } else {
            '='
        });
        out.push(if chunk.len() > 2 { symbol(triple) } else { '=' });
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    #[test]
    fn chat_bodies_have_openai_shapes() {
        let completion = ChatCompletion {
            id: "chatcmpl-1".into(),
            object: "chat.completion",
            created: 7,
            model: "smollm2".into(),
            choices: vec![ChatChoice {
                index: 0,
                message: AssistantMessage {
                    role: "assistant",
                    content: Some("Paris.".into()),
                    tool_calls: Vec::new(),
                },
                finish_reason: FinishReason::Stop,
                logprobs: None,
            }],
            usage: Usage::new(20, 3),
        };
        assert_eq!(
            serde_json::to_value(&completion).unwrap(),
            json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 7,
                   "model": "smollm2",
                   "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris."},
                                "finish_reason": "stop", "logprobs": null}],
                   "usage": {"prompt_tokens": 20, "completion_tokens": 3, "total_tokens": 23}})
        );
        let chunk = ChatCompletionChunk {
            id: "chatcmpl-1".into(),
            object: "chat.completion.chunk",
            created: 7,
            model: "smollm2".into(),
            choices: vec![ChunkChoice {
                index: 0,
                delta: ChatDelta {
                    role: Some("assistant"),
                    content: Some("Pa".into()),
                    tool_calls: Vec::new(),
                },
                finish_reason: None,
                logprobs: None,
            }],
            usage: None,
        };
        let event = sse_event(&chunk).unwrap();
        assert!(
            event.starts_with("data: {") && event.ends_with("}\n\n"),
            "{event}"
        );
        assert!(
            event.contains(r#""delta":{"role":"assistant","content":"Pa"}"#),
            "{event}"
        );
        assert!(event.contains(r#""finish_reason":null"#), "{event}");
        assert_eq!(SSE_DONE, "data: [DONE]\n\n");
    }

    #[test]
    fn base64_embeddings_are_little_endian_f32() {
        for (bytes, encoded) in [
            (&b""[..], ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foobar", "Zm9vYmFy"),
            (&[0xFF, 0xFE, 0xFD][..], "//79"),
        ] {
            assert_eq!(base64_standard(bytes), encoded);
        }
        // 1.0f32 is 00 00 80 3F little-endian.
        assert_eq!(
            EmbeddingVector::base64(&[1.0]),
            EmbeddingVector::Base64("AACAPw==".into())
        );
        let response = EmbeddingsResponse {
            object: "list",
            data: vec![Embedding {
                object: "embedding",
                index: 0,
                embedding: EmbeddingVector::Float(vec![0.5, -1.0]),
            }],
            model: "minilm".into(),
            usage: EmbeddingsUsage {
                prompt_tokens: 4,
                total_tokens: 4,
            },
        };
        assert_eq!(
            serde_json::to_value(&response).unwrap(),
            json!({"object": "list", "model": "minilm",
                   "data": [{"object": "embedding", "index": 0, "embedding": [0.5, -1.0]}],
                   "usage": {"prompt_tokens": 4, "total_tokens": 4}})
        );
    }
}
