//! `text-generation`, as Transformers 5's `TextGenerationPipeline`: a text prompt gives
//! `{"generated_text": prompt + new text}` (only the new text with `return_full_text: false`);
//! a chat (a list of `{"role", "content"}` messages) is rendered with the tokenizer's chat
//! template and gives the messages plus the new `{"role": "assistant", "content": ...}`.
//!
//! Generation settings come, lowest first, from `generate()`'s defaults, the pipeline's defaults
//! (`max_new_tokens` 256, sampling at temperature 0.7, the tokenizer's pad token) for what the
//! model does not set, the model's `generation_config.json` (else `config.json`), and the
//! caller's [`TextGenerationOptions::generation`].

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use candle_core::Device;
use safeformers_models::{AutoModelForCausalLM, CausalLm};
use safeformers_tokenize::{
    ChatTemplateOptions, ChatTemplateRequest, EncodeOptions, TokenBudget, Tokenizer,
    TokenizerOptions,
};
use serde::Serialize;
use serde_json::Value;

use crate::encoder::LoadOptions;
use crate::error::{PipelineError, Result};
use crate::generation::{
    GenerateOptions, GeneratedRow, GenerationConfig, GenerationParams, PromptCache, StopReason,
    generate,
};

/// One input of the pipeline.
#[derive(Debug, Clone, PartialEq)]
pub enum GenerationInput {
    /// A text prompt, tokenized with the tokenizer's special tokens.
    Text(String),
    /// Chat messages (`{"role", "content", ...}` objects), rendered by the chat template.
    Chat(Vec<Value>),
}

/// The pipeline's output for one input.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GeneratedText {
    /// Prompt and new text, the new text alone, or the chat with the assistant's reply.
    pub generated_text: GeneratedContent,
    /// Why generation stopped (not part of Transformers' output; the CLI leaves it out).
    #[serde(skip)]
    pub stop_reason: StopReason,
    /// Tokens generated (not part of Transformers' output).
    #[serde(skip)]
    pub new_tokens: usize,
}

/// `generated_text`: text, or the messages of a chat.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum GeneratedContent {
    /// For a text prompt.
    Text(String),
    /// For a chat: the input messages and the new (or continued) assistant message.
    Chat(Vec<Value>),
}

/// Options of one call.
#[derive(Debug, Clone)]
pub struct TextGenerationOptions {
    /// The caller's generation settings, over the model's and the pipeline's defaults.
    pub generation: GenerationConfig,
    /// Prompt plus new text (default), or only the new text.
    pub return_full_text: bool,
    /// Seed for sampling (`None`: from the clock).
    pub seed: Option<u64>,
    /// Left-truncate prompts that leave no room for the new tokens in the context window,
    /// instead of failing.
    pub truncate: bool,
    /// Inputs generated together (left-padded to the longest).
    pub batch_size: usize,
    /// The index of this call's first input among all the caller's inputs, when they are
    /// passed in several calls: input `i` samples from its own stream of the seeded generator
    /// (`first_index + i`), so that its text does not depend on how inputs were grouped.
    pub first_index: usize,
}

impl Default for TextGenerationOptions {
    fn default() -> Self {
        TextGenerationOptions {
            generation: GenerationConfig::default(),
            return_full_text: true,
            seed: None,
            truncate: false,
            batch_size: 1,
            first_index: 0,
        }
    }
}

/// The text-generation pipeline: a decoder-only model, its tokenizer and its generation
/// settings.
#[derive(Debug)]
pub struct TextGeneration {
    dir: PathBuf,
    tokenizer: Tokenizer,
    model: Box<dyn CausalLm>,
    model_generation: GenerationConfig,
    /// The file `model_generation` was read from (named in errors about its values).
    model_generation_path: PathBuf,
    device: Device,
    chat_renderer: Option<ChatRenderer>,
    /// The timings of the inputs generated since [`TextGeneration::take_stats`] last ran.
    stats: Mutex<Vec<GenerationStats>>,
}

/// What generating for one input cost, as llama.cpp's timings and Ollama's `--verbose` report
/// it. The CLI's `--stats` prints it as one JSON line. Inputs generated in one batch share
/// their prefill: `prompt_s` is the batch's.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct GenerationStats {
    /// Prompt tokens of the input (special tokens included, after any truncation).
    pub prompt_tokens: usize,
    /// Seconds from the start of the call to the first new token chosen: the prefill, up to
    /// the first new token's logits (and its choice).
    pub prompt_s: f64,
    /// New tokens generated for the input (EOS included, the batch's padding not).
    pub generated_tokens: usize,
    /// Seconds from the batch's first new token to the input's last one.
    pub generation_s: f64,
}

/// Renders a chat template somewhere other than this process (see
/// [`TextGeneration::with_chat_renderer`]).
pub struct ChatRenderer(RenderFn);

type RenderFn =
    Box<dyn Fn(&ChatTemplateRequest) -> safeformers_tokenize::Result<String> + Send + Sync>;

impl ChatRenderer {
    /// A renderer calling `render` for each chat template render.
    pub fn new(
        render: impl Fn(&ChatTemplateRequest) -> safeformers_tokenize::Result<String>
        + Send
        + Sync
        + 'static,
    ) -> ChatRenderer {
        ChatRenderer(Box::new(render))
    }
}

impl std::fmt::Debug for ChatRenderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChatRenderer")
    }
}

impl TextGeneration {
    /// Loads the causal LM, the tokenizer and the generation settings in `dir`.
    pub fn from_dir(dir: &Path, options: &LoadOptions) -> Result<TextGeneration> {
        // A GGUF file (or a folder holding one) carries its tokenizer in its metadata. The
        // tokenizer is built first: its construction's scratch (the vocabulary as JSON, tens of
        // MB for a GGUF) is freed before the weights arrive, so it never adds to their peak.
        let tokenizer = match safeformers_models::gguf::find_gguf(dir)? {
            Some(file) => Tokenizer::from_gguf_file(&file, &TokenizerOptions::default())?,
            None => Tokenizer::from_dir(dir, &TokenizerOptions::default())?,
        };
        safeformers_kernels::memory::release_free_heap();
        let model = AutoModelForCausalLM::load_with_options(
            dir,
            &options.policy,
            &options.device,
            options.weights,
        )?;
        // The load's own scratch (tensors read before they were reordered or stacked).
        safeformers_kernels::memory::release_free_heap();
        TextGeneration::from_parts(dir, model, tokenizer, options.device.clone())
    }

    /// A pipeline over a model and tokenizer loaded elsewhere; the generation settings are read
    /// from `dir` (`generation_config.json`, else the model's `config.json`).
    pub fn from_parts(
        dir: &Path,
        model: Box<dyn CausalLm>,
        tokenizer: Tokenizer,
        device: Device,
    ) -> Result<TextGeneration> {
        let config = model.config();
        let model_generation = GenerationConfig::for_model(dir, config.raw(), config.path())?;
        let model_generation_path = GenerationConfig::model_source(dir, config.path());
        Ok(TextGeneration {
            dir: dir.to_path_buf(),
            tokenizer,
            model,
            model_generation,
            model_generation_path,
            device,
            chat_renderer: None,
            stats: Mutex::new(Vec::new()),
        })
    }

    /// The timings of each input generated since the last call of this method, in the order
    /// the inputs were given.
    pub fn take_stats(&self) -> Vec<GenerationStats> {
        match self.stats.lock() {
            Ok(mut stats) => std::mem::take(&mut *stats),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        }
    }

    /// Renders chat templates with `renderer` instead of in this process. The `safeformers`
    /// CLI passes one that renders in a child process under memory and time limits, so a
    /// hostile template that slips past the render's fuel still cannot exhaust this process.
    pub fn with_chat_renderer(mut self, renderer: ChatRenderer) -> TextGeneration {
        self.chat_renderer = Some(renderer);
        self
    }

    /// The model folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The model.
    pub fn model(&self) -> &dyn CausalLm {
        self.model.as_ref()
    }

    /// The settings a call with `caller` runs with, before defaults are applied.
    pub fn generation_config(&self, caller: &GenerationConfig) -> GenerationConfig {
        let mut defaults = GenerationConfig::text_generation_pipeline_defaults();
        defaults.pad_token_id = self.tokenizer.pad_token_id();
        GenerationConfig::for_pipeline(&self.model_generation, &defaults, caller)
    }

    /// The checked settings of a call with `caller` ([`GenerationConfig::resolve`]). A value
    /// that only turns out unusable once merged (a zero temperature from the model's file when
    /// the call samples) is reported against the model's file when the caller did not set it.
    pub fn generation_params(&self, caller: &GenerationConfig) -> Result<GenerationParams> {
        self.generation_config(caller)
            .resolve()
            .map_err(|error| match error {
                PipelineError::InvalidGenerationConfig { field, reason }
                    if !caller.sets(field) && self.model_generation.sets(field) =>
                {
                    PipelineError::InvalidGenerationFile {
                        path: self.model_generation_path.clone(),
                        field,
                        reason,
                    }
                }
                other => other,
            })
    }

    /// The prompt's token ids: text with the tokenizer's special tokens, a chat rendered by the
    /// template (with the assistant's header, or continuing a final assistant message) and
    /// tokenized without adding special tokens, as Transformers does.
    pub fn prompt_ids(&self, input: &GenerationInput) -> Result<Vec<u32>> {
        self.prompt_ids_for(input, false)
    }

    /// [`TextGeneration::prompt_ids`]; with `keep_end`, only the prompt's last context
    /// window's worth of tokens, for prompts that are left-truncated anyway.
    fn prompt_ids_for(&self, input: &GenerationInput, keep_end: bool) -> Result<Vec<u32>> {
        let (text, add_special_tokens) = match input {
            GenerationInput::Text(text) => (text.clone(), true),
            GenerationInput::Chat(messages) => (self.render_chat(messages)?, false),
        };
        self.text_ids(&text, add_special_tokens, keep_end)
    }

    /// The token ids of a chat offered `tools` (function definitions, as the template receives
    /// them), rendered as [`TextGeneration::prompt_ids`] renders a chat. With `keep_end`, a
    /// prompt longer than the context window keeps its end instead of being refused.
    pub fn chat_prompt_ids(
        &self,
        messages: &[Value],
        tools: Option<Vec<Value>>,
        keep_end: bool,
    ) -> Result<Vec<u32>> {
        let text = self.render_chat_with_tools(messages, tools)?;
        self.text_ids(&text, false, keep_end)
    }

    /// The token ids of a text prompt (the tokenizer's special tokens added), as
    /// [`TextGeneration::chat_prompt_ids`] treats length.
    pub fn text_prompt_ids(&self, text: &str, keep_end: bool) -> Result<Vec<u32>> {
        self.text_ids(text, true, keep_end)
    }

    fn text_ids(&self, text: &str, add_special_tokens: bool, keep_end: bool) -> Result<Vec<u32>> {
        // Only the context window's worth of tokens can be used: the tokenizer stops reading a
        // longer prompt (refusing it, or keeping its end when prompts are left-truncated).
        let token_budget = self.model.context_length().map(|context| {
            if keep_end {
                TokenBudget::KeepLast(context)
            } else {
                TokenBudget::AtMost(context)
            }
        });
        let options = EncodeOptions {
            add_special_tokens,
            token_budget,
            ..EncodeOptions::default()
        };
        let encodings = self.tokenizer.encode(text, &options)?;
        Ok(encodings
            .iter()
            .next()
            .map(|encoding| encoding.input_ids.clone())
            .unwrap_or_default())
    }

    /// The chat template's text for `messages`.
    pub fn render_chat(&self, messages: &[Value]) -> Result<String> {
        self.render_chat_with_tools(messages, None)
    }

    /// The chat template's text for `messages`, offered `tools`.
    pub fn render_chat_with_tools(
        &self,
        messages: &[Value],
        tools: Option<Vec<Value>>,
    ) -> Result<String> {
        check_messages(messages)?;
        // A chat ending with the assistant's message is continued (Transformers'
        // `continue_final_message`, its default for such chats), otherwise the template writes
        // the header of a new assistant turn.
        let continue_final = ends_with_assistant(messages);
        let options = ChatTemplateOptions {
            add_generation_prompt: !continue_final,
            continue_final_message: continue_final,
            tools,
            ..ChatTemplateOptions::default()
        };
        // Errors name the file the template came from (a folder's tokenizer files, or the GGUF
        // file whose metadata carried it).
        let in_file = |source| PipelineError::ChatTemplate {
            path: self.tokenizer.path().to_path_buf(),
            source: Box::new(source),
        };
        let request = self
            .tokenizer
            .chat_template_request(messages, &options)
            .map_err(in_file)?;
        match &self.chat_renderer {
            Some(ChatRenderer(render)) => render(&request),
            None => request.render(),
        }
        .map_err(in_file)
    }

    /// Generates for every input, `options.batch_size` at a time, in input order.
    pub fn run(
        &self,
        inputs: &[GenerationInput],
        options: &TextGenerationOptions,
    ) -> Result<Vec<GeneratedText>> {
        self.run_streaming(inputs, options, &mut |_, _| Ok(()))
    }

    /// As [`TextGeneration::run`], handing `on_text(input index, text)` each piece of new text
    /// as soon as its tokens are decoded (special tokens skipped). The pieces of an input add
    /// up to its new text; a batch is finished before the next one starts, so with a batch
    /// size of 1 the inputs come one after the other.
    pub fn run_streaming(
        &self,
        inputs: &[GenerationInput],
        options: &TextGenerationOptions,
        on_text: &mut dyn FnMut(usize, &str) -> Result<()>,
    ) -> Result<Vec<GeneratedText>> {
        let params = self.generation_params(&options.generation)?;
        let mut results = Vec::with_capacity(inputs.len());
        let batch_size = options.batch_size.max(1);
        for (chunk_index, chunk) in inputs.chunks(batch_size).enumerate() {
            let first = options.first_index + chunk_index * batch_size;
            let prompts = chunk
                .iter()
                .map(|input| self.prompt_ids_for(input, options.truncate))
                .collect::<Result<Vec<_>>>()?;
            let in_call = chunk_index * batch_size;
            let rows = self.generate_ids(&prompts, &params, options, first, &mut |row, text| {
                on_text(in_call + row, text)
            })?;
            for (input, row) in chunk.iter().zip(rows) {
                results.push(self.output(input, &row, options.return_full_text)?);
            }
        }
        Ok(results)
    }

    /// Generates from token ids with resolved `params`, streaming decoded text per row;
    /// `first_index` is the first prompt's index among the caller's inputs (it picks the
    /// sampler's streams).
    pub fn generate_ids(
        &self,
        prompts: &[Vec<u32>],
        params: &GenerationParams,
        options: &TextGenerationOptions,
        first_index: usize,
        on_text: &mut dyn FnMut(usize, &str) -> Result<()>,
    ) -> Result<Vec<GeneratedRow>> {
        self.generate_ids_continuing(prompts, params, options, first_index, None, on_text)
    }

    /// As [`TextGeneration::run_streaming`] for one input, continuing the KV cache of an
    /// earlier call: the tokens `prompt_cache` holds that begin this input's prompt are not
    /// computed again, and it is left holding this call's sequence (a chat's turns).
    pub fn run_streaming_continuing(
        &self,
        input: &GenerationInput,
        options: &TextGenerationOptions,
        prompt_cache: &RefCell<PromptCache>,
        on_text: &mut dyn FnMut(&str) -> Result<()>,
    ) -> Result<GeneratedText> {
        let params = self.generation_params(&options.generation)?;
        let prompt = self.prompt_ids_for(input, options.truncate)?;
        let rows = self.generate_ids_continuing(
            &[prompt],
            &params,
            options,
            options.first_index,
            Some(prompt_cache),
            &mut |_, text| on_text(text),
        )?;
        let row = rows.first().ok_or_else(|| {
            PipelineError::InvalidInput("generation returned no row for the input".into())
        })?;
        self.output(input, row, options.return_full_text)
    }

    fn generate_ids_continuing(
        &self,
        prompts: &[Vec<u32>],
        params: &GenerationParams,
        options: &TextGenerationOptions,
        first_index: usize,
        prompt_cache: Option<&RefCell<PromptCache>>,
        on_text: &mut dyn FnMut(usize, &str) -> Result<()>,
    ) -> Result<Vec<GeneratedRow>> {
        let decode = |ids: &[u32]| -> Result<String> { Ok(self.tokenizer.decode(ids, false)?) };
        let generate_options = GenerateOptions {
            truncate: options.truncate,
            seed: options.seed,
            first_index: first_index as u64,
            decode: Some(&decode),
            device: self.device.clone(),
            prompt_cache,
        };
        let mut streams: Vec<_> = prompts
            .iter()
            .map(|_| self.tokenizer.stream_decoder(true))
            .collect();
        let started = Instant::now();
        let mut first_token: Option<Instant> = None;
        let mut last_tokens: Vec<Option<Instant>> = vec![None; prompts.len()];
        let rows = generate(
            self.model.as_ref(),
            prompts,
            params,
            &generate_options,
            &mut |row, token| {
                let now = Instant::now();
                first_token.get_or_insert(now);
                if let Some(last) = last_tokens.get_mut(row) {
                    *last = Some(now);
                }
                let Some(stream) = streams.get_mut(row) else {
                    return Ok(());
                };
                if let Some(text) = stream.push(token)? {
                    on_text(row, &text)?;
                }
                Ok(())
            },
        )?;
        let finished = Instant::now();
        for (row, stream) in streams.iter_mut().enumerate() {
            if let Some(text) = stream.finish()? {
                on_text(row, &text)?;
            }
        }
        let first_token = first_token.unwrap_or(finished);
        let stats = rows
            .iter()
            .zip(&last_tokens)
            .map(|(row, last)| GenerationStats {
                prompt_tokens: row.prompt.len(),
                prompt_s: first_token.duration_since(started).as_secs_f64(),
                generated_tokens: row.new_tokens().len(),
                generation_s: last
                    .unwrap_or(first_token)
                    .duration_since(first_token)
                    .as_secs_f64(),
            });
        match self.stats.lock() {
            Ok(mut kept) => kept.extend(stats),
            Err(poisoned) => poisoned.into_inner().extend(stats),
        }
        Ok(rows)
    }

    /// The pipeline output of one generated row.
    fn output(
        &self,
        input: &GenerationInput,
        row: &GeneratedRow,
        return_full_text: bool,
    ) -> Result<GeneratedText> {
        let new_text = self.tokenizer.decode(row.new_tokens(), true)?;
        let generated_text = match (input, return_full_text) {
            (GenerationInput::Text(prompt), true) => {
                GeneratedContent::Text(format!("{prompt}{new_text}"))
            }
            (_, false) => GeneratedContent::Text(new_text),
            (GenerationInput::Chat(messages), true) => {
                let mut messages = messages.clone();
                if ends_with_assistant(&messages) {
                    if let Some(Value::Object(last)) = messages.last_mut() {
                        let content = last
                            .get("content")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string();
                        last.insert("content".into(), Value::String(content + &new_text));
                    }
                } else {
                    messages.push(serde_json::json!({"role": "assistant", "content": new_text}));
                }
                GeneratedContent::Chat(messages)
            }
        };
        Ok(GeneratedText {
            generated_text,
            stop_reason: row.stop_reason,
            new_tokens: row.generated,
        })
    }
}

/// Whether the chat's last message is the assistant's (Transformers then continues it rather
/// than starting a new one).
fn ends_with_assistant(messages: &[Value]) -> bool {
    messages
        .last()
        .and_then(|message| message.get("role"))
        .and_then(Value::as_str)
        == Some("assistant")
}

/// A chat must be a non-empty list of objects with a string `role`.
fn check_messages(messages: &[Value]) -> Result<()> {
    if messages.is_empty() {
        return Err(PipelineError::InvalidInput(
            "a chat needs at least one message".into(),
        ));
    }
    for (index, message) in messages.iter().enumerate() {
        let role = message.get("role").and_then(Value::as_str);
        if !message.is_object() || role.is_none() {
            return Err(PipelineError::InvalidInput(format!(
                "chat message {index} must be an object with a string \"role\" (and usually \
                 \"content\")"
            )));
        }
    }
    Ok(())
}
