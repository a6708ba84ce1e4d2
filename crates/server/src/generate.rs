//! `POST /v1/chat/completions` and `POST /v1/completions`: a checked request becomes one
//! sequence per choice (`n` per prompt), queued on the model's engine; the answer is collected
//! whole or streamed as server-sent events.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::Response;
use safeformers_pipelines::generation::{
    GenerationConfig, OutputPenalties, SequenceOptions, TokenChooser, TokenLogprobs,
};
use safeformers_pipelines::{ToolCallLimits, parse_tool_calls};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::api_error::ApiError;
use crate::app::{
    AppState, ChannelBody, GenerationModel, ServedModel, event_stream_response, json_response,
    refusal_error,
};
use crate::chat_request::{ToolChoice, parse_chat_request};
use crate::completion_request::parse_completion_request;
use crate::embeddings_request::EmbeddingInput;
use crate::generation_engine::{ChoiceEvent, ChoiceJob, EventKind, Finish, GenerationJob};
use crate::responses::{
    AssistantMessage, ChatChoice, ChatCompletion, ChatCompletionChunk, ChatDelta, ChunkChoice,
    Completion, CompletionChoice, FinishReason, FunctionCall, SSE_DONE, ToolCall, Usage, sse_event,
};
use crate::sampling::Sampling;

/// Server-sent events buffered per streamed response before the producer waits for the client.
const STREAM_BUFFER: usize = 64;

/// The log-probability sent for a token the model ruled out (JSON has no `-inf`; vLLM sends
/// the same).
const RULED_OUT_LOGPROB: f32 = -9999.0;

/// A request's sequences, ready to queue.
struct Plan {
    choices: Vec<ChoiceJob>,
    prompt_tokens: u64,
    /// For each choice, the prompt it continues (for `echo`).
    prompts: Vec<Arc<str>>,
}

/// `POST /v1/chat/completions`.
pub async fn chat_completions(state: Arc<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let started = Instant::now();
    let request = parse_chat_request(&body, &state.limits)?;
    let (served, generation) = state.generation_model(&request.model)?;
    let offer_tools = !request.tools.is_empty() && request.tool_choice != ToolChoice::None;
    let tools = offer_tools.then(|| request.tools.clone());
    let messages: Vec<Value> = request.messages.into_iter().map(template_message).collect();
    let model = generation.model.clone();
    let keep_last = request.sampling.truncate_prompt_tokens;
    let prompt = blocking_api(move || {
        model
            .pipeline()
            .chat_prompt_ids(&messages, tools, keep_last.is_some())
            .map(|ids| kept_end(ids, keep_last))
            .map_err(|error| chat_prompt_error(&error))
    })
    .await
    .map_err(|error| ApiError {
        message: served.redacted(&error.message),
        ..error
    })?;
    let prompt_len = prompt.len() as u64;
    let mut plan = plan_choices(
        &state,
        generation,
        vec![(prompt, Arc::from(""))],
        &request.sampling,
        request.logprobs,
        offer_tools,
    )?;
    plan.prompt_tokens = prompt_len;
    let tool_format = generation.tool_format.filter(|_| offer_tools);
    let reply = Reply::start(&state, served, generation, plan, &request.sampling, started)?;
    if request.sampling.stream {
        Ok(reply.stream_chat(tool_format))
    } else {
        reply.collect_chat(tool_format).await
    }
}

/// `POST /v1/completions`.
pub async fn completions(state: Arc<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let started = Instant::now();
    let request = parse_completion_request(&body, &state.limits)?;
    let (served, generation) = state.generation_model(&request.model)?;
    let model = generation.model.clone();
    let inputs = request.prompts.clone();
    let keep_last = request.sampling.truncate_prompt_tokens;
    let prompts = blocking(move || {
        let pipeline = model.pipeline();
        inputs
            .into_iter()
            .map(|input| match input {
                EmbeddingInput::Text(text) => {
                    let ids = pipeline
                        .text_prompt_ids(&text, keep_last.is_some())
                        .map_err(|error| error.to_string())?;
                    Ok((kept_end(ids, keep_last), Arc::from(text.as_str())))
                }
                EmbeddingInput::Tokens(ids) => {
                    let vocab = pipeline.model().vocab_size();
                    if let Some(id) = ids.iter().find(|&&id| id as usize >= vocab) {
                        return Err(format!(
                            "token id {id} is outside the model's vocabulary of {vocab}"
                        ));
                    }
                    let ids = kept_end(ids, keep_last);
                    let text = pipeline
                        .tokenizer()
                        .decode(&ids, false)
                        .map_err(|error| error.to_string())?;
                    Ok((ids, Arc::from(text.as_str())))
                }
            })
            .collect::<Result<Vec<_>, String>>()
    })
    .await
    .map_err(|message| ApiError::invalid_param("prompt", served.redacted(&message)))?;
    let prompt_tokens = prompts.iter().map(|(ids, _)| ids.len() as u64).sum();
    let mut plan = plan_choices(
        &state,
        generation,
        prompts,
        &request.sampling,
        request.logprobs,
        false,
    )?;
    plan.prompt_tokens = prompt_tokens;
    let reply = Reply::start(&state, served, generation, plan, &request.sampling, started)?;
    if request.sampling.stream {
        Ok(reply.stream_completion(request.echo))
    } else {
        reply.collect_completion(request.echo).await
    }
}

/// Runs `work` on the blocking pool (tokenizing, rendering a template in its sandbox).
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|_| "the request's preparation failed".to_string())?
}

/// Runs `work` on the blocking pool; its error is the answer.
async fn blocking_api<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|_| ApiError::internal("the request's preparation failed"))?
}

/// A chat that cannot become a prompt: the client's fault (400 on `messages`) when the
/// template refused the messages (`raise_exception`, messages it cannot take) or the prompt
/// is too long; the served model's fault (500) when its template itself fails (a syntax error,
/// a render stopped by its limits, the isolated renderer failing).
fn chat_prompt_error(error: &safeformers_pipelines::PipelineError) -> ApiError {
    use safeformers_pipelines::PipelineError;
    use safeformers_tokenize::{ChatTemplateProblem, TokenizeError};
    match error {
        PipelineError::ChatTemplate { source, .. } => match source.as_ref() {
            TokenizeError::ChatTemplate {
                problem:
                    problem @ (ChatTemplateProblem::Raised(_) | ChatTemplateProblem::InvalidInput(_)),
                ..
            } => ApiError::invalid_param("messages", format!("the chat template: {problem}")),
            other => {
                tracing::error!(error = %other, "the chat template failed");
                ApiError::internal(format!("the model's chat template failed: {other}"))
            }
        },
        other => ApiError::invalid_param("messages", other.to_string()),
    }
}

/// The last `keep` tokens of `ids` (all of them without `keep`).
fn kept_end(mut ids: Vec<u32>, keep: Option<u64>) -> Vec<u32> {
    if let Some(keep) = keep.and_then(|keep| usize::try_from(keep).ok()) {
        let cut = ids.len().saturating_sub(keep);
        ids.drain(..cut);
    }
    ids
}

/// A message as chat templates expect it: a `content` list of text parts joined into one string,
/// and tool calls' `arguments` (JSON text in OpenAI's API) given as the object they encode, as
/// vLLM and Transformers pass them (templates apply `tojson` to them; text would be encoded
/// twice). Arguments that are not a JSON object stay text.
fn template_message(mut message: Value) -> Value {
    if let Some(Value::Array(calls)) = message.get_mut("tool_calls") {
        for call in calls {
            let Some(arguments) = call.pointer_mut("/function/arguments") else {
                continue;
            };
            if let Value::String(text) = arguments
                && let Ok(object @ Value::Object(_)) = serde_json::from_str::<Value>(text)
            {
                *arguments = object;
            }
        }
    }
    if let Some(Value::Array(parts)) = message.get("content") {
        let text: String = parts
            .iter()
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .collect();
        if let Some(content) = message.get_mut("content") {
            *content = Value::String(text);
        }
    }
    message
}

/// One sequence per choice: `n` for each prompt, each checked against the context window.
fn plan_choices(
    state: &AppState,
    generation: &GenerationModel,
    prompts: Vec<(Vec<u32>, Arc<str>)>,
    sampling: &Sampling,
    logprobs: Option<u64>,
    keep_special_tokens: bool,
) -> Result<Plan, ApiError> {
    let pipeline = generation.model.pipeline();
    let context = pipeline.model().context_length();
    let ceiling = state.limits.max_tokens_ceiling;
    let seed = sampling.seed.map_or_else(clock_seed, |seed| seed as u64);
    let mut choices = Vec::new();
    let mut texts = Vec::new();
    for (prompt, text) in prompts {
        if prompt.is_empty() {
            return Err(ApiError::invalid_param(
                "prompt",
                "the prompt has no tokens",
            ));
        }
        let room = context.map_or(usize::MAX, |context| context.saturating_sub(prompt.len()));
        if room == 0 {
            return Err(ApiError::invalid_param(
                "messages",
                format!(
                    "the prompt is {} tokens: the model's context window holds {}",
                    prompt.len(),
                    context.unwrap_or(0)
                ),
            ));
        }
        let max_new = match sampling.max_tokens {
            Some(asked) => {
                let asked = usize::try_from(asked).unwrap_or(usize::MAX);
                if asked > room {
                    return Err(ApiError::invalid_param(
                        "max_tokens",
                        format!(
                            "the prompt is {} tokens and max_tokens {asked}: the model's \
                             context window holds {}",
                            prompt.len(),
                            context.unwrap_or(0)
                        ),
                    ));
                }
                asked
            }
            None => ceiling.min(room),
        };
        let params = pipeline
            .generation_params(&request_config(sampling, max_new))
            .map_err(|error| ApiError::bad_request(error.to_string()))?;
        let params = Arc::new(params);
        for _ in 0..sampling.n {
            let index = choices.len() as u64;
            let mut options = SequenceOptions::new(params.clone(), prompt.len(), seed, index);
            if !params.do_sample {
                options.chooser = TokenChooser::Greedy;
            }
            options.output_penalties = OutputPenalties {
                presence: sampling.presence_penalty as f32,
                frequency: sampling.frequency_penalty as f32,
            };
            options.logprobs = logprobs.map(|top| top as usize);
            choices.push(ChoiceJob {
                prompt: prompt.clone(),
                options,
                stop: sampling.stop.clone(),
                keep_special_tokens,
            });
            texts.push(text.clone());
        }
    }
    Ok(Plan {
        choices,
        prompt_tokens: 0,
        prompts: texts,
    })
}

/// The caller's layer of generation settings for one request: OpenAI's defaults (sampling at
/// temperature 1) over the model's `generation_config.json`.
fn request_config(sampling: &Sampling, max_new: usize) -> GenerationConfig {
    let temperature = sampling.temperature.unwrap_or(1.0);
    let greedy = temperature == 0.0;
    GenerationConfig {
        max_new_tokens: Some(max_new),
        min_new_tokens: sampling.ignore_eos.then_some(max_new),
        do_sample: Some(!greedy),
        temperature: (!greedy).then_some(temperature),
        top_p: sampling.top_p.filter(|_| !greedy),
        ..GenerationConfig::default()
    }
}

/// A seed for requests that give none.
fn clock_seed() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() as u64)
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// What one choice has produced so far.
#[derive(Debug, Default)]
struct ChoiceProgress {
    text: String,
    logprobs: Vec<TokenLogprobs>,
    finish: Option<Finish>,
    completion_tokens: usize,
    last_piece: Option<Instant>,
}

/// A queued request's answer in the making.
struct Reply {
    state: Arc<AppState>,
    model_name: String,
    generation_model: Arc<safeformers::TextGeneration>,
    events: mpsc::UnboundedReceiver<ChoiceEvent>,
    choices: Vec<ChoiceProgress>,
    prompts: Vec<Arc<str>>,
    prompt_tokens: u64,
    include_usage: bool,
    logprobs: bool,
    started: Instant,
    deadline: tokio::time::Instant,
    id: String,
    created: u64,
}

/// The next event of a reply, or why there is none.
enum Next {
    Event(ChoiceEvent),
    /// Every choice has finished.
    Done,
    /// A choice failed; the message is for the client.
    Failed(String),
    /// `--request-timeout` passed.
    TimedOut,
}

impl Reply {
    fn start(
        state: &Arc<AppState>,
        served: &ServedModel,
        generation: &GenerationModel,
        plan: Plan,
        sampling: &Sampling,
        started: Instant,
    ) -> Result<Reply, ApiError> {
        let (events, receiver) = mpsc::unbounded_channel();
        let count = plan.choices.len();
        let logprobs = plan
            .choices
            .iter()
            .any(|job| job.options.logprobs.is_some());
        generation
            .engine
            .submit(GenerationJob {
                choices: plan.choices,
                events,
            })
            .map_err(refusal_error)?;
        state.metrics.count_tokens(plan.prompt_tokens, 0);
        Ok(Reply {
            state: state.clone(),
            model_name: served.name.clone(),
            generation_model: generation.model.clone(),
            events: receiver,
            choices: (0..count).map(|_| ChoiceProgress::default()).collect(),
            prompts: plan.prompts,
            prompt_tokens: plan.prompt_tokens,
            include_usage: sampling.include_usage,
            logprobs,
            started,
            deadline: tokio::time::Instant::from_std(started + state.limits.request_timeout),
            id: format!("{:x}", clock_seed()),
            created: unix_seconds(),
        })
    }

    /// Waits for the next event and records it (text, timings, metrics).
    async fn next(&mut self) -> Next {
        if self.choices.iter().all(|choice| choice.finish.is_some()) {
            return Next::Done;
        }
        let event = match tokio::time::timeout_at(self.deadline, self.events.recv()).await {
            Err(_) => return Next::TimedOut,
            Ok(None) => return Next::Failed("the generation stopped unexpectedly".into()),
            Ok(Some(event)) => event,
        };
        let metrics = &self.state.metrics;
        let Some(choice) = self.choices.get_mut(event.choice) else {
            return Next::Failed("the generation sent an unknown choice".into());
        };
        match &event.kind {
            EventKind::Piece { text, logprobs } => {
                let now = Instant::now();
                match choice.last_piece {
                    None => metrics.time_to_first_token.observe(now - self.started),
                    Some(last) => metrics.inter_token_latency.observe(now - last),
                }
                choice.last_piece = Some(now);
                choice.text.push_str(text);
                choice.logprobs.extend(logprobs.iter().cloned());
            }
            EventKind::Finished {
                text,
                reason,
                completion_tokens,
            } => {
                choice.text.push_str(text);
                choice.finish = Some(*reason);
                choice.completion_tokens = *completion_tokens;
                // Content is logged only when the operator asked for it (--log-content).
                if self.state.access.log_content
                    && self.choices.iter().all(|choice| choice.finish.is_some())
                {
                    let texts: Vec<&str> = self
                        .choices
                        .iter()
                        .map(|choice| choice.text.as_str())
                        .collect();
                    tracing::info!(completions = ?texts, "generated");
                }
            }
            EventKind::Failed { message } => return Next::Failed(message.clone()),
        }
        Next::Event(event)
    }

    fn completion_tokens(&self) -> u64 {
        self.choices
            .iter()
            .map(|choice| choice.completion_tokens as u64)
            .sum()
    }

    fn usage(&self) -> Usage {
        Usage::new(self.prompt_tokens, self.completion_tokens())
    }

    /// Waits for every choice; `None` when all finished, else the error to answer.
    async fn wait_all(&mut self) -> Result<(), ApiError> {
        loop {
            match self.next().await {
                Next::Event(_) => {}
                Next::Done => return Ok(()),
                Next::Failed(message) => {
                    return Err(ApiError::internal(message));
                }
                Next::TimedOut => return Err(timed_out(&self.state)),
            }
        }
    }

    async fn collect_chat(
        mut self,
        tool_format: Option<safeformers_pipelines::ToolCallFormat>,
    ) -> Result<Response, ApiError> {
        self.wait_all().await?;
        let tokenizer_model = self.generation_model.clone();
        let tokenizer = tokenizer_model.pipeline().tokenizer();
        let choices = self
            .choices
            .iter()
            .enumerate()
            .map(|(index, choice)| {
                let (message, finish_reason) = assistant_message(&choice.text, choice, tool_format);
                ChatChoice {
                    index: index as u64,
                    message,
                    finish_reason,
                    logprobs: self
                        .logprobs
                        .then(|| chat_logprobs(tokenizer, &choice.logprobs)),
                }
            })
            .collect();
        let completion = ChatCompletion {
            id: format!("chatcmpl-{}", self.id),
            object: "chat.completion",
            created: self.created,
            model: self.model_name.clone(),
            choices,
            usage: self.usage(),
        };
        Ok(json_response(StatusCode::OK, &completion))
    }

    async fn collect_completion(mut self, echo: bool) -> Result<Response, ApiError> {
        self.wait_all().await?;
        let model = self.generation_model.clone();
        let tokenizer = model.pipeline().tokenizer();
        let choices = self
            .choices
            .iter()
            .enumerate()
            .map(|(index, choice)| {
                let prompt = self.prompts.get(index).filter(|_| echo);
                let text = match prompt {
                    Some(prompt) => format!("{prompt}{}", choice.text),
                    None => choice.text.clone(),
                };
                CompletionChoice {
                    index: index as u64,
                    text,
                    finish_reason: finish_reason(choice.finish),
                    logprobs: self
                        .logprobs
                        .then(|| completion_logprobs(tokenizer, &choice.logprobs)),
                }
            })
            .collect();
        let completion = Completion {
            id: format!("cmpl-{}", self.id),
            object: "text_completion",
            created: self.created,
            model: self.model_name.clone(),
            choices,
            usage: Some(self.usage()),
        };
        Ok(json_response(StatusCode::OK, &completion))
    }

    fn chat_chunk(&self, choices: Vec<ChunkChoice>, usage: Option<Usage>) -> ChatCompletionChunk {
        ChatCompletionChunk {
            id: format!("chatcmpl-{}", self.id),
            object: "chat.completion.chunk",
            created: self.created,
            model: self.model_name.clone(),
            choices,
            usage,
        }
    }

    /// Streams a chat completion. With tools offered, a choice's text is held until it ends
    /// and then sent as tool calls or as content.
    fn stream_chat(self, tool_format: Option<safeformers_pipelines::ToolCallFormat>) -> Response {
        let (sender, body) = ChannelBody::new(STREAM_BUFFER);
        tokio::spawn(self.drive_chat_stream(sender, tool_format));
        event_stream_response(body)
    }

    async fn drive_chat_stream(
        mut self,
        sender: mpsc::Sender<Bytes>,
        tool_format: Option<safeformers_pipelines::ToolCallFormat>,
    ) {
        let first: Vec<ChunkChoice> = (0..self.choices.len())
            .map(|index| ChunkChoice {
                index: index as u64,
                delta: ChatDelta {
                    role: Some("assistant"),
                    content: Some(String::new()),
                    tool_calls: Vec::new(),
                },
                finish_reason: None,
                logprobs: None,
            })
            .collect();
        if !send(&sender, &self.chat_chunk(first, None)).await {
            return;
        }
        let model = self.generation_model.clone();
        let tokenizer = model.pipeline().tokenizer();
        loop {
            let event = match self.next().await {
                Next::Event(event) => event,
                Next::Done => break,
                Next::Failed(message) => return send_error(&sender, &message).await,
                Next::TimedOut => {
                    return send_error(&sender, &timed_out(&self.state).message).await;
                }
            };
            let chunks = self.chat_event_chunks(&event, tool_format, tokenizer);
            for chunk in chunks {
                if !send(&sender, &chunk).await {
                    return;
                }
            }
        }
        if self.include_usage {
            let usage = self.chat_chunk(Vec::new(), Some(self.usage()));
            if !send(&sender, &usage).await {
                return;
            }
        }
        let _ = sender.send(Bytes::from_static(SSE_DONE.as_bytes())).await;
    }

    /// The chunks one event of a chat stream gives.
    fn chat_event_chunks(
        &self,
        event: &ChoiceEvent,
        tool_format: Option<safeformers_pipelines::ToolCallFormat>,
        tokenizer: &safeformers_tokenize::Tokenizer,
    ) -> Vec<ChatCompletionChunk> {
        let index = event.choice as u64;
        let holding = tool_format.is_some();
        let chunk = |delta: ChatDelta, finish_reason, logprobs| {
            self.chat_chunk(
                vec![ChunkChoice {
                    index,
                    delta,
                    finish_reason,
                    logprobs,
                }],
                None,
            )
        };
        let content = |text: &str| ChatDelta {
            content: Some(text.to_string()),
            ..ChatDelta::default()
        };
        match &event.kind {
            EventKind::Piece { text, logprobs } if !holding => {
                let logprobs = (self.logprobs && !logprobs.is_empty())
                    .then(|| chat_logprobs(tokenizer, logprobs));
                if text.is_empty() && logprobs.is_none() {
                    return Vec::new();
                }
                vec![chunk(content(text), None, logprobs)]
            }
            EventKind::Finished { text, .. } => {
                let Some(choice) = self.choices.get(event.choice) else {
                    return Vec::new();
                };
                let mut chunks = Vec::new();
                let (message, reason) = assistant_message(&choice.text, choice, tool_format);
                if holding {
                    let tool_calls: Vec<ToolCall> = message
                        .tool_calls
                        .into_iter()
                        .enumerate()
                        .map(|(position, call)| ToolCall {
                            index: Some(position as u64),
                            ..call
                        })
                        .collect();
                    chunks.push(chunk(
                        ChatDelta {
                            content: message.content,
                            tool_calls,
                            ..ChatDelta::default()
                        },
                        None,
                        None,
                    ));
                } else if !text.is_empty() {
                    chunks.push(chunk(content(text), None, None));
                }
                chunks.push(chunk(ChatDelta::default(), Some(reason), None));
                chunks
            }
            EventKind::Piece { .. } | EventKind::Failed { .. } => Vec::new(),
        }
    }

    fn stream_completion(self, echo: bool) -> Response {
        let (sender, body) = ChannelBody::new(STREAM_BUFFER);
        tokio::spawn(self.drive_completion_stream(sender, echo));
        event_stream_response(body)
    }

    async fn drive_completion_stream(mut self, sender: mpsc::Sender<Bytes>, echo: bool) {
        let model = self.generation_model.clone();
        let tokenizer = model.pipeline().tokenizer();
        if echo {
            for index in 0..self.choices.len() {
                let prompt = self
                    .prompts
                    .get(index)
                    .map(|p| p.to_string())
                    .unwrap_or_default();
                let chunk = self.completion_chunk(index, prompt, None, None, None);
                if !send(&sender, &chunk).await {
                    return;
                }
            }
        }
        loop {
            let event = match self.next().await {
                Next::Event(event) => event,
                Next::Done => break,
                Next::Failed(message) => return send_error(&sender, &message).await,
                Next::TimedOut => {
                    return send_error(&sender, &timed_out(&self.state).message).await;
                }
            };
            let chunk = match event.kind {
                EventKind::Piece { text, logprobs } => {
                    let logprobs = (self.logprobs && !logprobs.is_empty())
                        .then(|| completion_logprobs(tokenizer, &logprobs));
                    if text.is_empty() && logprobs.is_none() {
                        continue;
                    }
                    self.completion_chunk(event.choice, text, None, logprobs, None)
                }
                EventKind::Finished { text, reason, .. } => {
                    self.completion_chunk(event.choice, text, Some(reason), None, None)
                }
                EventKind::Failed { .. } => continue,
            };
            if !send(&sender, &chunk).await {
                return;
            }
        }
        if self.include_usage {
            let usage = Completion {
                id: format!("cmpl-{}", self.id),
                object: "text_completion",
                created: self.created,
                model: self.model_name.clone(),
                choices: Vec::new(),
                usage: Some(self.usage()),
            };
            if !send(&sender, &usage).await {
                return;
            }
        }
        let _ = sender.send(Bytes::from_static(SSE_DONE.as_bytes())).await;
    }

    fn completion_chunk(
        &self,
        choice: usize,
        text: String,
        finish: Option<Finish>,
        logprobs: Option<Value>,
        usage: Option<Usage>,
    ) -> Value {
        json!({
            "id": format!("cmpl-{}", self.id),
            "object": "text_completion",
            "created": self.created,
            "model": self.model_name,
            "choices": [{
                "index": choice,
                "text": text,
                "finish_reason": finish.map(|finish| finish_reason(Some(finish))),
                "logprobs": logprobs,
            }],
            "usage": usage,
        })
    }
}

/// A choice's assistant message: tool calls parsed out of its text when tools were offered
/// and the model's format is known (text that does not parse stays content).
fn assistant_message(
    text: &str,
    choice: &ChoiceProgress,
    tool_format: Option<safeformers_pipelines::ToolCallFormat>,
) -> (AssistantMessage, FinishReason) {
    let plain = || {
        (
            AssistantMessage {
                role: "assistant",
                content: Some(text.to_string()),
                tool_calls: Vec::new(),
            },
            finish_reason(choice.finish),
        )
    };
    let Some(format) = tool_format else {
        return plain();
    };
    match parse_tool_calls(format, text, &ToolCallLimits::default()) {
        Ok(reply) if !reply.tool_calls.is_empty() => {
            let tool_calls = reply
                .tool_calls
                .into_iter()
                .enumerate()
                .map(|(position, call)| ToolCall {
                    index: None,
                    id: format!("call_{:x}{position}", clock_seed() & 0xffff_ffff),
                    kind: "function",
                    function: FunctionCall {
                        arguments: Value::Object(call.arguments).to_string(),
                        name: call.name,
                    },
                })
                .collect();
            (
                AssistantMessage {
                    role: "assistant",
                    content: reply.content,
                    tool_calls,
                },
                FinishReason::ToolCalls,
            )
        }
        Ok(_) => plain(),
        Err(error) => {
            tracing::warn!(%error, "a reply's tool calls did not parse; sent as content");
            plain()
        }
    }
}

fn finish_reason(finish: Option<Finish>) -> FinishReason {
    match finish {
        Some(Finish::Length) => FinishReason::Length,
        Some(Finish::Stop) | None => FinishReason::Stop,
    }
}

fn timed_out(state: &AppState) -> ApiError {
    ApiError::timed_out(state.limits.request_timeout.as_secs())
}

/// Sends one event; false when the client has gone.
async fn send(sender: &mpsc::Sender<Bytes>, value: &impl serde::Serialize) -> bool {
    match sse_event(value) {
        Ok(event) => sender.send(Bytes::from(event)).await.is_ok(),
        Err(error) => {
            tracing::error!(%error, "an event could not be serialized");
            false
        }
    }
}

/// Ends a stream with an error event (as vLLM does: the status is already 200).
async fn send_error(sender: &mpsc::Sender<Bytes>, message: &str) {
    let error = ApiError::internal(message);
    let _ = send(sender, &error.body()).await;
    let _ = sender.send(Bytes::from_static(SSE_DONE.as_bytes())).await;
}

/// A token's text as OpenAI reports it (decoded alone, special tokens kept).
fn token_text(tokenizer: &safeformers_tokenize::Tokenizer, token: u32) -> String {
    tokenizer.decode(&[token], false).unwrap_or_default()
}

fn finite(logprob: f32) -> f32 {
    if logprob.is_finite() {
        logprob
    } else {
        RULED_OUT_LOGPROB
    }
}

/// Chat `logprobs`: `{"content": [{"token", "logprob", "bytes", "top_logprobs": [...]}]}`.
fn chat_logprobs(tokenizer: &safeformers_tokenize::Tokenizer, entries: &[TokenLogprobs]) -> Value {
    let entry = |token: u32, logprob: f32| {
        let text = token_text(tokenizer, token);
        json!({"token": text, "logprob": finite(logprob), "bytes": text.as_bytes()})
    };
    let content: Vec<Value> = entries
        .iter()
        .map(|item| {
            let mut value = entry(item.token, item.logprob);
            let top: Vec<Value> = item.top.iter().map(|&(t, lp)| entry(t, lp)).collect();
            if let Some(object) = value.as_object_mut() {
                object.insert("top_logprobs".into(), Value::Array(top));
            }
            value
        })
        .collect();
    json!({"content": content})
}

/// Legacy completions `logprobs`: parallel lists of tokens, their log-probabilities, the top
/// alternatives as `{token: logprob}`, and each token's character offset.
fn completion_logprobs(
    tokenizer: &safeformers_tokenize::Tokenizer,
    entries: &[TokenLogprobs],
) -> Value {
    let mut offset = 0;
    let mut tokens = Vec::new();
    let mut token_logprobs = Vec::new();
    let mut top_logprobs = Vec::new();
    let mut text_offset = Vec::new();
    for item in entries {
        let text = token_text(tokenizer, item.token);
        text_offset.push(offset);
        offset += text.chars().count();
        tokens.push(text);
        token_logprobs.push(finite(item.logprob));
        let top: serde_json::Map<String, Value> = item
            .top
            .iter()
            .map(|&(token, logprob)| (token_text(tokenizer, token), json!(finite(logprob))))
            .collect();
        top_logprobs.push(Value::Object(top));
    }
    json!({
        "tokens": tokens,
        "token_logprobs": token_logprobs,
        "top_logprobs": top_logprobs,
        "text_offset": text_offset,
    })
}
