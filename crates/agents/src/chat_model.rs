//! The chat models an agent drives: one small trait, [`ChatModel`], and the local engine
//! ([`LocalModel`], any chat model safeformers loads). The other implementation, an
//! OpenAI-compatible endpoint, is [`crate::endpoint::EndpointModel`].
//!
//! Messages are OpenAI-shaped chat messages (`{"role", "content"}`, an assistant's
//! `tool_calls: [{"id", "type": "function", "function": {"name", "arguments"}}]` with the
//! arguments as a JSON value, and `{"role": "tool", "tool_call_id", "content"}` results), which
//! is also what Transformers' chat templates take. Tools are OpenAI function definitions,
//! `{"type": "function", "function": {"name", "description", "parameters"}}`.

use serde::Serialize;
use serde_json::{Map, Value};

use safeformers::{GenerationConfig, TextGeneration, TextGenerationOptions};
use safeformers_pipelines::{ToolCallFormat, ToolCallLimits, parse_tool_calls};

use crate::agent::AgentError;

/// One tool call the model asked for.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolCallRequest {
    /// The call's id, as the model (or the endpoint) gave it; empty when it gave none (the
    /// agent then assigns one).
    pub id: String,
    /// The tool's name, as the model wrote it (unchecked: it may name no tool at all).
    pub name: String,
    /// The arguments: the JSON the model wrote, or, when that was not JSON, its raw text as a
    /// [`Value::String`]. Anything but an object is refused by the agent with an error the
    /// model sees, never an abort.
    pub arguments: Value,
}

/// What the model answered in one turn: text, tool calls, or both.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct ModelTurn {
    /// The text of the reply outside the calls; `None` when there was none.
    pub content: Option<String>,
    /// The calls, in the order the model made them.
    pub tool_calls: Vec<ToolCallRequest>,
}

/// A chat model that can be offered tools.
pub trait ChatModel {
    /// The model's next turn after `messages`, offered `tools` (OpenAI function definitions;
    /// empty: none offered).
    ///
    /// Errors: [`AgentError::UnreadableReply`] when the model's own output cannot be read as
    /// calls (the agent shows the model its mistake and goes on); anything else (the endpoint
    /// failing, generation failing) ends the run.
    fn complete(&self, messages: &[Value], tools: &[Value]) -> Result<ModelTurn, AgentError>;
}

/// How [`LocalModel`] generates.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalModelSettings {
    /// Generation settings over the model's own; [`LocalModelSettings::default`] is greedy
    /// decoding of at most 1024 new tokens (fewer when the context window has less room left).
    pub generation: GenerationConfig,
    /// The tool-call format to read replies with, instead of the one detected from the chat
    /// template ([`ToolCallFormat::detect`]).
    pub format: Option<ToolCallFormat>,
}

/// New tokens per turn by default: a tool call with its arguments, or a final answer.
const DEFAULT_MAX_NEW_TOKENS: usize = 1024;

impl Default for LocalModelSettings {
    fn default() -> Self {
        LocalModelSettings {
            generation: GenerationConfig {
                do_sample: Some(false),
                max_new_tokens: Some(DEFAULT_MAX_NEW_TOKENS),
                ..GenerationConfig::default()
            },
            format: None,
        }
    }
}

/// A chat model run by safeformers' own engine: the messages and tools are rendered through
/// the model's chat template (in the template sandbox the [`TextGeneration`] was loaded with),
/// the reply is generated, and its tool calls are read in the format the template teaches
/// (Hermes/Qwen `<tool_call>`, Llama 3 JSON, Mistral `[TOOL_CALLS]`).
#[derive(Debug)]
pub struct LocalModel {
    model: TextGeneration,
    format: ToolCallFormat,
    settings: LocalModelSettings,
}

impl LocalModel {
    /// Wraps a loaded text-generation model. Errors with [`AgentError::NoToolCallFormat`]
    /// when `settings.format` is unset and the chat template (or its absence) names no format
    /// we read: the model would have no way to call a tool.
    pub fn new(
        model: TextGeneration,
        settings: LocalModelSettings,
    ) -> Result<LocalModel, AgentError> {
        let template = model.pipeline().tokenizer().chat_template();
        let format = settings
            .format
            .or_else(|| template.and_then(ToolCallFormat::detect))
            .ok_or_else(|| AgentError::NoToolCallFormat {
                model: model.pipeline().dir().display().to_string(),
                has_template: template.is_some(),
            })?;
        Ok(LocalModel {
            model,
            format,
            settings,
        })
    }

    /// The format replies are read in.
    pub fn format(&self) -> ToolCallFormat {
        self.format
    }

    /// The reply's text: the new tokens with special tokens kept (`[TOOL_CALLS]` and
    /// `<|python_tag|>` are special tokens in some vocabularies) but without the final EOS.
    fn generate(&self, messages: &[Value], tools: &[Value]) -> Result<String, AgentError> {
        let tools = (!tools.is_empty()).then(|| tools.to_vec());
        let mut options = TextGenerationOptions {
            generation: self.settings.generation.clone(),
            return_full_text: false,
            ..TextGenerationOptions::default()
        };
        let generated = self
            .model
            .install(|pipeline| -> safeformers_pipelines::Result<String> {
                let prompt = pipeline.chat_prompt_ids(messages, tools, false)?;
                // The new tokens are what the context window leaves (the conversation grows
                // each step); a prompt that fills it is still refused by generation.
                if let (Some(context), Some(max_new)) = (
                    pipeline.model().context_length(),
                    options.generation.max_new_tokens,
                ) && prompt.len() < context
                {
                    options.generation.max_new_tokens = Some(max_new.min(context - prompt.len()));
                }
                let params = pipeline.generation_params(&options.generation)?;
                let rows =
                    pipeline.generate_ids(&[prompt], &params, &options, 0, &mut |_, _| Ok(()))?;
                let Some(row) = rows.first() else {
                    return Ok(String::new());
                };
                let mut tokens = row.new_tokens();
                if let Some((last, before)) = tokens.split_last()
                    && params.eos_token_ids.contains(last)
                {
                    tokens = before;
                }
                Ok(pipeline.tokenizer().decode(tokens, false)?)
            });
        generated.map_err(AgentError::Generation)
    }
}

impl ChatModel for LocalModel {
    fn complete(&self, messages: &[Value], tools: &[Value]) -> Result<ModelTurn, AgentError> {
        let text = self.generate(messages, tools)?;
        if tools.is_empty() {
            return Ok(ModelTurn {
                content: Some(text),
                tool_calls: Vec::new(),
            });
        }
        let reply =
            parse_tool_calls(self.format, &text, &ToolCallLimits::default()).map_err(|error| {
                AgentError::UnreadableReply {
                    text: text.clone(),
                    reason: error.to_string(),
                }
            })?;
        Ok(ModelTurn {
            content: reply.content,
            tool_calls: reply
                .tool_calls
                .into_iter()
                .map(|call| ToolCallRequest {
                    id: String::new(),
                    name: call.name,
                    arguments: Value::Object(call.arguments),
                })
                .collect(),
        })
    }
}

/// `text` parsed as a JSON value when it is one, else kept as a string: what
/// [`ToolCallRequest::arguments`] holds for arguments that arrived as text.
pub fn arguments_from_text(text: &str) -> Value {
    if text.trim().is_empty() {
        // OpenAI sends "" for a function without parameters.
        return Value::Object(Map::new());
    }
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}
