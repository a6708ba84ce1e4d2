//! `safeformers.pipeline`: the `safeformers` crate's task pipelines, for Python.
//!
//! Python hands over the model, the keyword arguments given to `pipeline(...)` and, per call,
//! the inputs and the call's keyword arguments, all as JSON; the Python layer
//! (`safeformers/_pipeline.py`) shapes inputs and outputs as Transformers' pipelines do. Here:
//!
//! - the keyword arguments are checked against the task's ([`LoadSettings`], and the task's
//!   call settings in [`CallSettings`]): an unknown name or a value of the wrong type is a
//!   `TypeError`, an out-of-range value a `ValueError`, both before anything is read;
//! - keywords given to `pipeline(...)` that are not about loading become each call's defaults,
//!   as in Transformers (`pipeline("fill-mask", m, top_k=2)`);
//! - loading and running happen with the GIL released, in the pipeline's own thread pool;
//! - embeddings come back as float32 numpy arrays, every other output as the JSON text
//!   `safeformers run TASK` prints for it;
//! - chat templates are rendered in a child process of this Python interpreter that loads only
//!   this extension (`python -I -S -c ...`), under the limits of `safeformers::chat_sandbox`.

// The library's own error (about 128 bytes) is returned as it is between these helpers, and
// becomes a Python exception once, at the boundary.
#![allow(clippy::result_large_err)]

use std::ffi::OsString;
use std::path::PathBuf;

use numpy::{PyArray1, PyArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyList;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use safeformers::pipelines::generation::GenerationConfig;
use safeformers::{
    Aggregation, ChatTemplateIsolation, Embeddings, FeatureExtraction, FeatureExtractionSettings,
    Input, Options, Output, Pipeline, PoolingMode, QuestionAnswering, QuestionAnsweringOptions,
    Task, TextGenerationOptions, WeightOptions,
};

use crate::errors::{guard, library_error};
use crate::release::without_gil;

/// Keywords of `pipeline(...)` that say how the model is found and loaded (every task).
const LOAD_KEYWORDS: [&str; 11] = [
    "revision",
    "offline",
    "endpoint",
    "allow_pickle",
    "locked",
    "lockfile",
    "threads",
    "batch_size",
    "dtype",
    "quantize",
    "gguf_file",
];

/// Keywords of `pipeline(...)` that shape what feature extraction (and sentence similarity,
/// `pooling` only) computes: fixed at load.
const EMBEDDING_LOAD_KEYWORDS: [&str; 3] = ["pooling", "normalize", "truncate_dim"];

/// How a pipeline is loaded: `safeformers::Options`, and the embedding settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoadSettings {
    revision: Option<String>,
    /// `None`: as `HF_HUB_OFFLINE` says (which `False` cannot override either).
    offline: Option<bool>,
    endpoint: Option<String>,
    #[serde(default)]
    allow_pickle: bool,
    #[serde(default)]
    locked: bool,
    lockfile: Option<PathBuf>,
    threads: Option<usize>,
    batch_size: Option<usize>,
    dtype: Option<String>,
    quantize: Option<String>,
    gguf_file: Option<String>,
    pooling: Option<OneOrMany<String>>,
    #[serde(default)]
    normalize: bool,
    truncate_dim: Option<usize>,
}

/// One value or a list of them, as Transformers accepts for `stop_strings` and the like.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    fn into_vec(self) -> Vec<T> {
        match self {
            OneOrMany::One(value) => vec![value],
            OneOrMany::Many(values) => values,
        }
    }
}

/// The settings of one call, by task. Each task's fields are Transformers' keyword names.
#[derive(Debug)]
enum CallSettings {
    FeatureExtraction(FeatureExtractionCall),
    TextClassification(TopKCall),
    TokenClassification(TokenClassificationCall),
    FillMask(TopKCall),
    QuestionAnswering(QuestionAnsweringCall),
    TextGeneration(Box<TextGenerationCall>),
    None,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FeatureExtractionCall {
    prompt_name: Option<String>,
    prompt: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopKCall {
    top_k: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenClassificationCall {
    aggregation_strategy: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct QuestionAnsweringCall {
    top_k: Option<usize>,
    max_answer_len: Option<usize>,
    doc_stride: Option<usize>,
    max_seq_len: Option<usize>,
    max_question_len: Option<usize>,
    handle_impossible_answer: Option<bool>,
    align_to_words: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TextGenerationCall {
    max_new_tokens: Option<usize>,
    max_length: Option<usize>,
    min_new_tokens: Option<usize>,
    min_length: Option<usize>,
    do_sample: Option<bool>,
    temperature: Option<f64>,
    top_k: Option<usize>,
    top_p: Option<f64>,
    min_p: Option<f64>,
    repetition_penalty: Option<f64>,
    stop_strings: Option<OneOrMany<String>>,
    return_full_text: Option<bool>,
    seed: Option<u64>,
    truncate: Option<bool>,
}

/// The keywords each call of the task takes (and `pipeline(...)` takes as their defaults).
fn call_keywords(task: Task) -> &'static [&'static str] {
    match task {
        Task::FeatureExtraction => &["prompt_name", "prompt"],
        Task::SentenceSimilarity => &[],
        Task::TextClassification | Task::FillMask => &["top_k"],
        Task::TokenClassification => &["aggregation_strategy"],
        Task::QuestionAnswering => &[
            "top_k",
            "max_answer_len",
            "doc_stride",
            "max_seq_len",
            "max_question_len",
            "handle_impossible_answer",
            "align_to_words",
        ],
        Task::TextGeneration => &[
            "max_new_tokens",
            "max_length",
            "min_new_tokens",
            "min_length",
            "do_sample",
            "temperature",
            "top_k",
            "top_p",
            "min_p",
            "repetition_penalty",
            "stop_strings",
            "return_full_text",
            "seed",
            "truncate",
        ],
    }
}

/// A `TypeError` for the first keyword in `keywords` that is not in `known`, listing them.
fn check_keyword_names<'a>(
    task: Task,
    keywords: impl IntoIterator<Item = &'a String>,
    known: &[&str],
) -> PyResult<()> {
    match keywords
        .into_iter()
        .find(|name| !known.contains(&name.as_str()))
    {
        None => Ok(()),
        Some(name) => Err(PyTypeError::new_err(format!(
            "{} pipeline: unexpected keyword argument '{name}'; it takes {}",
            task.name(),
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        ))),
    }
}

/// `settings` as `T`; a name `T` lacks or a value of the wrong type is a `TypeError` naming
/// the task.
fn parse_keywords<T: DeserializeOwned>(task: Task, settings: &Map<String, Value>) -> PyResult<T> {
    serde_json::from_value(Value::Object(settings.clone())).map_err(|error| {
        // serde names no field for a wrong type: find the keyword that fails on its own.
        let culprit = settings.iter().find_map(|(name, value)| {
            let alone = Map::from_iter([(name.clone(), value.clone())]);
            serde_json::from_value::<T>(Value::Object(alone))
                .err()
                .map(|error| format!("keyword argument '{name}': {error}"))
        });
        PyTypeError::new_err(format!(
            "{} pipeline: {}",
            task.name(),
            culprit.unwrap_or_else(|| error.to_string())
        ))
    })
}

impl CallSettings {
    fn parse(task: Task, settings: &Map<String, Value>) -> PyResult<CallSettings> {
        Ok(match task {
            Task::FeatureExtraction => {
                CallSettings::FeatureExtraction(parse_keywords(task, settings)?)
            }
            Task::TextClassification => {
                CallSettings::TextClassification(parse_keywords(task, settings)?)
            }
            Task::TokenClassification => {
                CallSettings::TokenClassification(parse_keywords(task, settings)?)
            }
            Task::FillMask => CallSettings::FillMask(parse_keywords(task, settings)?),
            Task::QuestionAnswering => {
                CallSettings::QuestionAnswering(parse_keywords(task, settings)?)
            }
            Task::TextGeneration => {
                CallSettings::TextGeneration(Box::new(parse_keywords(task, settings)?))
            }
            Task::SentenceSimilarity => CallSettings::None,
        })
    }
}

/// A loaded pipeline (`safeformers.Pipeline` wraps it).
#[pyclass(module = "safeformers._native", name = "NativePipeline", frozen)]
pub(crate) struct NativePipeline {
    task: Task,
    loaded: Pipeline,
    /// The keywords given to `pipeline(...)` that are call settings: each call's defaults.
    call_defaults: Map<String, Value>,
}

/// What a call returns before it becomes a Python object.
enum Computed {
    Embeddings(Embeddings),
    Json(String),
}

/// Loads the pipeline of `task` for `model` (a repo id `org/name[@rev]`, a folder, or a `.gguf`
/// file for text generation). `keywords_json`: the keyword arguments of `pipeline(...)` as a
/// JSON object.
#[pyfunction]
pub(crate) fn load_pipeline(
    py: Python<'_>,
    task: &str,
    model: PathBuf,
    keywords_json: &str,
) -> PyResult<NativePipeline> {
    guard(|| {
        let task =
            Task::from_name(task).map_err(|error| PyValueError::new_err(error.to_string()))?;
        let keywords: Map<String, Value> = serde_json::from_str(keywords_json)
            .map_err(|error| PyTypeError::new_err(format!("keyword arguments: {error}")))?;
        let mut known: Vec<&str> = LOAD_KEYWORDS.to_vec();
        if matches!(task, Task::FeatureExtraction | Task::SentenceSimilarity) {
            known.extend(EMBEDDING_LOAD_KEYWORDS);
        }
        known.extend(call_keywords(task));
        check_keyword_names(task, keywords.keys(), &known)?;
        let (load_keywords, call_defaults) = split_keywords(task, keywords);
        let settings: LoadSettings = parse_keywords(task, &load_keywords)?;
        // A typo in a call default is an error now, not at the first call.
        CallSettings::parse(task, &call_defaults)?;
        let options = options(&settings, chat_template_renderer(py)?)?;
        let embedding = embedding_settings(&settings)?;
        let loaded = without_gil(py, move || {
            safeformers::pipeline_with(task, &model, &options, &embedding)
        })?
        .map_err(|error| safeformers_error(&error))?;
        Ok(NativePipeline {
            task,
            loaded,
            call_defaults,
        })
    })
}

/// The keywords about loading, and the rest (the call defaults). The embedding keywords are
/// load keywords of the two embedding tasks only.
fn split_keywords(
    task: Task,
    keywords: Map<String, Value>,
) -> (Map<String, Value>, Map<String, Value>) {
    let embeds = matches!(task, Task::FeatureExtraction | Task::SentenceSimilarity);
    keywords.into_iter().partition(|(name, _)| {
        LOAD_KEYWORDS.contains(&name.as_str())
            || (embeds && EMBEDDING_LOAD_KEYWORDS.contains(&name.as_str()))
    })
}

/// The library options of `settings`.
fn options(settings: &LoadSettings, renderer: ChatTemplateIsolation) -> PyResult<Options> {
    let weights =
        WeightOptions::from_names(settings.dtype.as_deref(), settings.quantize.as_deref(), "")
            .map_err(PyValueError::new_err)?;
    let mut options = Options::new()
        .allow_pickle(settings.allow_pickle)
        .locked(settings.locked)
        .weights(weights)
        .chat_templates(renderer);
    if let Some(revision) = &settings.revision {
        options = options.revision(revision);
    }
    if let Some(offline) = settings.offline {
        options = options.offline(offline);
    }
    if let Some(endpoint) = &settings.endpoint {
        options = options.endpoint(endpoint);
    }
    if let Some(lockfile) = &settings.lockfile {
        options = options.lockfile(lockfile);
    }
    if let Some(threads) = settings.threads {
        let threads = safeformers::check_thread_count(threads)
            .map_err(|reason| PyValueError::new_err(format!("threads: {reason}")))?;
        options = options.threads(threads);
    }
    if let Some(batch_size) = settings.batch_size {
        options = options.batch_size(batch_size);
    }
    if let Some(name) = &settings.gguf_file {
        options = options.gguf_file(name);
    }
    Ok(options)
}

/// Chat templates render in a child of this interpreter that loads only this extension and
/// serves one render (`_serve_chat_template_renderer`), with `-I` (no `PYTHON*` variables, no
/// user site, no script folder on the path) and `-S` (no `site`).
fn chat_template_renderer(py: Python<'_>) -> PyResult<ChatTemplateIsolation> {
    const SERVE: &str = "import sys\n\
        from importlib.machinery import ExtensionFileLoader\n\
        from importlib.util import module_from_spec, spec_from_loader\n\
        loader = ExtensionFileLoader('safeformers._native', sys.argv[1])\n\
        native = module_from_spec(spec_from_loader('safeformers._native', loader))\n\
        loader.exec_module(native)\n\
        native._serve_chat_template_renderer()\n";
    let executable: PathBuf = py.import("sys")?.getattr("executable")?.extract()?;
    let extension: PathBuf = py
        .import("safeformers._native")?
        .getattr("__file__")?
        .extract()?;
    Ok(ChatTemplateIsolation::ProgramWithArguments(
        executable,
        vec![
            OsString::from("-I"),
            OsString::from("-S"),
            OsString::from("-c"),
            OsString::from(SERVE),
            extension.into_os_string(),
        ],
    ))
}

/// In a process started as the chat-template renderer: renders the request on stdin and exits.
/// Anywhere else an error: nothing to serve.
#[pyfunction]
pub(crate) fn _serve_chat_template_renderer() -> PyResult<()> {
    safeformers::chat_sandbox::serve_if_requested();
    Err(crate::errors::Error::new_err(
        "this process was not started as safeformers' chat-template renderer",
    ))
}

/// The embedding keywords (`pooling`, `normalize`, `truncate_dim`), checked.
fn embedding_settings(settings: &LoadSettings) -> PyResult<FeatureExtractionSettings> {
    if settings.truncate_dim == Some(0) {
        return Err(PyValueError::new_err("truncate_dim must be at least 1"));
    }
    let pooling = match settings.pooling.clone().map(OneOrMany::into_vec) {
        None => None,
        Some(names) => Some(pooling_modes(&names)?),
    };
    Ok(FeatureExtractionSettings {
        pooling,
        normalize: settings.normalize,
        truncate_dim: settings.truncate_dim,
        ..FeatureExtractionSettings::default()
    })
}

/// `pooling` names (`mean`, `cls`, `max`, `mean_sqrt_len_tokens`, `lasttoken`; `none` alone
/// for token embeddings).
fn pooling_modes(names: &[String]) -> PyResult<Vec<PoolingMode>> {
    if names.len() == 1 && names.first().is_some_and(|name| name == "none") {
        return Ok(Vec::new());
    }
    names
        .iter()
        .map(|name| {
            PoolingMode::parse(name).ok_or_else(|| {
                PyValueError::new_err(format!(
                    "pooling {name:?}: expected mean, cls, max, mean_sqrt_len_tokens, lasttoken \
                     or none"
                ))
            })
        })
        .collect()
}

/// A library error as Python sees it: bad arguments are `ValueError`, the rest the package's
/// `PolicyError` or `FormatError` with the CLI's message.
fn safeformers_error(error: &safeformers::Error) -> PyErr {
    if error.is_usage_error() {
        PyValueError::new_err(crate::errors::one_line(&error.to_string()))
    } else {
        library_error(error, error.is_policy_refusal())
    }
}

#[pymethods]
impl NativePipeline {
    /// The task's name (`feature-extraction`, ...).
    #[getter]
    fn task(&self) -> &'static str {
        self.task.name()
    }

    /// The keywords given to `pipeline(...)` that are each call's defaults, as JSON.
    #[getter]
    fn call_defaults_json(&self) -> PyResult<String> {
        serde_json::to_string(&self.call_defaults)
            .map_err(|error| PyValueError::new_err(error.to_string()))
    }

    /// Runs the pipeline on `inputs_json` (a JSON list: texts; `{"question", "context"}`
    /// objects; chats as lists of messages) with `keywords_json` over the call defaults.
    /// Returns float32 numpy arrays for embeddings (one 2-D array of sentence embeddings, or a
    /// list of `[1, tokens, hidden]` arrays), else the JSON text of the output.
    fn run<'py>(
        &self,
        py: Python<'py>,
        inputs_json: &str,
        keywords_json: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        guard(|| {
            let (inputs, settings) = self.call(inputs_json, keywords_json)?;
            let computed = without_gil(py, || self.compute(&inputs, settings))?
                .map_err(|error| safeformers_error(&error))?;
            match computed {
                Computed::Embeddings(embeddings) => embeddings_to_numpy(py, embeddings),
                Computed::Json(text) => Ok(text.into_pyobject(py)?.into_any()),
            }
        })
    }

    /// Text generation with each piece of new text handed to `on_text(text)` as it is
    /// generated (with the GIL taken for the call). An exception from `on_text` stops the
    /// generation and is raised here. Returns the JSON text of the whole output, as `run`.
    fn run_streaming(
        &self,
        py: Python<'_>,
        inputs_json: &str,
        keywords_json: &str,
        on_text: Py<PyAny>,
    ) -> PyResult<String> {
        guard(|| {
            let (inputs, settings) = self.call(inputs_json, keywords_json)?;
            let (Pipeline::TextGeneration(pipeline, defaults), CallSettings::TextGeneration(call)) =
                (&self.loaded, settings)
            else {
                return Err(PyTypeError::new_err(format!(
                    "{} pipeline: only text-generation streams",
                    self.task.name()
                )));
            };
            let settings = generation_settings(*call, defaults);
            let inputs =
                Input::generation_inputs(&inputs).map_err(|error| safeformers_error(&error))?;
            let mut raised: Option<PyErr> = None;
            let result = without_gil(py, || {
                pipeline.run_streaming(&inputs, &settings, &mut |_, text| {
                    Python::attach(|py| on_text.call1(py, (text,)).map(drop)).map_err(|error| {
                        raised = Some(error);
                        stopped_by_callback()
                    })
                })
            })?;
            if let Some(error) = raised {
                return Err(error);
            }
            let output = Output::TextGeneration(result.map_err(|error| safeformers_error(&error))?);
            serde_json::to_string(&output).map_err(|error| PyValueError::new_err(error.to_string()))
        })
    }
}

impl NativePipeline {
    /// The call's inputs and keywords (over the call defaults), checked.
    fn call(&self, inputs_json: &str, keywords_json: &str) -> PyResult<(Vec<Input>, CallSettings)> {
        let inputs = parse_inputs(self.task, inputs_json)?;
        let mut keywords = self.call_defaults.clone();
        let given: Map<String, Value> = serde_json::from_str(keywords_json)
            .map_err(|error| PyTypeError::new_err(format!("keyword arguments: {error}")))?;
        check_keyword_names(self.task, given.keys(), call_keywords(self.task))?;
        keywords.extend(given);
        Ok((inputs, CallSettings::parse(self.task, &keywords)?))
    }

    /// The task's output for `inputs` (no GIL held).
    fn compute(
        &self,
        inputs: &[Input],
        settings: CallSettings,
    ) -> Result<Computed, safeformers::Error> {
        let output = match (&self.loaded, settings) {
            (Pipeline::FeatureExtraction(pipeline), CallSettings::FeatureExtraction(call)) => {
                return feature_extraction(pipeline, &Input::texts(inputs)?, &call);
            }
            (Pipeline::TextGeneration(pipeline, defaults), CallSettings::TextGeneration(call)) => {
                let settings = generation_settings(*call, defaults);
                Output::TextGeneration(pipeline.run(&Input::generation_inputs(inputs)?, &settings)?)
            }
            (Pipeline::QuestionAnswering(pipeline), CallSettings::QuestionAnswering(call)) => {
                question_answering(pipeline, inputs, &call)?
            }
            (Pipeline::SentenceSimilarity(pipeline), _) => {
                Output::SentenceSimilarity(pipeline.run(&Input::texts(inputs)?)?)
            }
            (Pipeline::TextClassification(pipeline), CallSettings::TextClassification(call)) => {
                Output::TextClassification(pipeline.run(&Input::texts(inputs)?, call.top_k)?)
            }
            (Pipeline::TokenClassification(pipeline), CallSettings::TokenClassification(call)) => {
                let aggregation = aggregation(call.aggregation_strategy.as_deref())?;
                Output::TokenClassification(pipeline.run(&Input::texts(inputs)?, aggregation)?)
            }
            (Pipeline::FillMask(pipeline), CallSettings::FillMask(call)) => {
                let top_k = call.top_k.unwrap_or(safeformers::FILL_MASK_TOP_K);
                Output::FillMask(pipeline.run(&Input::texts(inputs)?, top_k)?)
            }
            _ => return Err(usage("settings", "do not belong to this task")),
        };
        serde_json::to_string(&output)
            .map(Computed::Json)
            .map_err(safeformers::Error::Json)
    }
}

/// The error that stops a generation whose Python callback raised (the callback's own
/// exception is what Python sees).
fn stopped_by_callback() -> safeformers::pipelines::PipelineError {
    safeformers::pipelines::PipelineError::InvalidInput(
        "generation stopped: the on_text callback raised an exception".into(),
    )
}

fn usage(option: &str, reason: &str) -> safeformers::Error {
    safeformers::Error::InvalidOption {
        option: option.to_string(),
        reason: reason.to_string(),
    }
}

/// Feature extraction with the call's prompt (by text or by name), if any.
fn feature_extraction(
    pipeline: &FeatureExtraction,
    texts: &[&str],
    call: &FeatureExtractionCall,
) -> Result<Computed, safeformers::Error> {
    let named = match (&call.prompt, &call.prompt_name) {
        (Some(_), Some(_)) => return Err(usage("prompt", "give prompt or prompt_name, not both")),
        (None, Some(name)) => Some(pipeline.pipeline().named_prompt(name)?),
        _ => None,
    };
    let prompt = call.prompt.as_deref().or(named.as_deref());
    Ok(Computed::Embeddings(
        pipeline.run_with_prompt(texts, prompt)?,
    ))
}

fn aggregation(name: Option<&str>) -> Result<Aggregation, safeformers::Error> {
    match name {
        None => Ok(Aggregation::None),
        Some(name) => Aggregation::parse(name).ok_or_else(|| {
            usage(
                "aggregation_strategy",
                "expected none, simple, first, max or average",
            )
        }),
    }
}

fn question_answering(
    pipeline: &QuestionAnswering,
    inputs: &[Input],
    call: &QuestionAnsweringCall,
) -> Result<Output, safeformers::Error> {
    let pairs = Input::question_context_pairs(inputs)?;
    let defaults = QuestionAnsweringOptions::default();
    let settings = QuestionAnsweringOptions {
        max_answer_len: call.max_answer_len.unwrap_or(defaults.max_answer_len),
        doc_stride: call.doc_stride.or(defaults.doc_stride),
        max_seq_len: call.max_seq_len.or(defaults.max_seq_len),
        max_question_len: call.max_question_len.unwrap_or(defaults.max_question_len),
        handle_impossible_answer: call
            .handle_impossible_answer
            .unwrap_or(defaults.handle_impossible_answer),
        align_to_words: call.align_to_words.unwrap_or(defaults.align_to_words),
        ..defaults
    };
    Ok(Output::QuestionAnswering(pipeline.run(
        &pairs,
        call.top_k.unwrap_or(1),
        &settings,
    )?))
}

/// The pipeline's settings of a call's keywords, over the pipeline's `defaults` (its batch
/// size, from `pipeline(..., batch_size=N)`).
fn generation_settings(
    call: TextGenerationCall,
    defaults: &TextGenerationOptions,
) -> TextGenerationOptions {
    let generation = GenerationConfig {
        max_new_tokens: call.max_new_tokens,
        max_length: call.max_length,
        min_new_tokens: call.min_new_tokens,
        min_length: call.min_length,
        do_sample: call.do_sample,
        temperature: call.temperature,
        top_k: call.top_k,
        top_p: call.top_p,
        min_p: call.min_p,
        repetition_penalty: call.repetition_penalty,
        stop_strings: call.stop_strings.map(OneOrMany::into_vec),
        ..GenerationConfig::default()
    };
    TextGenerationOptions {
        generation,
        return_full_text: call.return_full_text.unwrap_or(defaults.return_full_text),
        seed: call.seed.or(defaults.seed),
        truncate: call.truncate.unwrap_or(defaults.truncate),
        ..defaults.clone()
    }
}

/// The inputs of one call, as the task takes them: a JSON list of texts; for
/// question-answering of `{"question", "context"}` objects; for text generation of texts or
/// chats (lists of `{"role", "content", ...}` messages).
fn parse_inputs(task: Task, inputs_json: &str) -> PyResult<Vec<Input>> {
    let values: Vec<Value> = serde_json::from_str(inputs_json)
        .map_err(|error| PyTypeError::new_err(format!("inputs: {error}")))?;
    values
        .into_iter()
        .enumerate()
        .map(|(index, value)| {
            let wrong = |what: &str| {
                PyTypeError::new_err(format!("input {}: {} takes {what}", index + 1, task.name()))
            };
            match (task, value) {
                (Task::QuestionAnswering, Value::Object(mut pair)) => {
                    let mut text = |key: &str| match pair.remove(key) {
                        Some(Value::String(text)) => Ok(text),
                        _ => Err(wrong("{\"question\": str, \"context\": str}")),
                    };
                    let (question, context) = (text("question")?, text("context")?);
                    Ok(Input::QuestionContext { question, context })
                }
                (Task::QuestionAnswering, _) => Err(wrong("{\"question\": str, \"context\": str}")),
                (_, Value::String(text)) => Ok(Input::Text(text)),
                (Task::TextGeneration, Value::Array(messages)) => Ok(Input::Chat(messages)),
                (Task::TextGeneration, _) => Err(wrong("str prompts or chats (lists of messages)")),
                (_, _) => Err(wrong("str inputs")),
            }
        })
        .collect()
}

/// Sentence embeddings as one `[inputs, dimensions]` float32 array; token embeddings as a list
/// of `[1, tokens, hidden]` arrays (Transformers' shape per input).
fn embeddings_to_numpy(py: Python<'_>, embeddings: Embeddings) -> PyResult<Bound<'_, PyAny>> {
    match embeddings {
        Embeddings::Sentences(vectors) => matrix(py, vectors).map(Bound::into_any),
        Embeddings::Tokens(per_input) => {
            let arrays = per_input
                .into_iter()
                .map(|[tokens]| {
                    let rows = tokens.len();
                    let columns = tokens.first().map_or(0, Vec::len);
                    PyArray1::from_vec(py, tokens.concat()).reshape([1, rows, columns])
                })
                .collect::<PyResult<Vec<_>>>()?;
            Ok(PyList::new(py, arrays)?.into_any())
        }
    }
}

/// Rows of equal length as one 2-D array.
fn matrix(py: Python<'_>, rows: Vec<Vec<f32>>) -> PyResult<Bound<'_, numpy::PyArray2<f32>>> {
    let count = rows.len();
    let columns = rows.first().map_or(0, Vec::len);
    if rows.iter().any(|row| row.len() != columns) {
        return Err(crate::errors::Error::new_err(
            "internal error in safeformers (a bug; please report it): embeddings of unequal \
             lengths",
        ));
    }
    PyArray1::from_vec(py, rows.concat()).reshape([count, columns])
}
