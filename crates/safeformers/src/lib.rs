//! safeformers: load models that strangers uploaded and run them, without any uploaded artefact
//! ever running code on your machine. The Rust counterpart of Hugging Face Transformers'
//! `pipeline(...)` and `from_pretrained`.
//!
//! ```no_run
//! use safeformers::{Options, pipeline};
//!
//! fn main() -> Result<(), safeformers::Error> {
//!     safeformers::chat_sandbox::serve_if_requested(); // chat templates render in a child of this program
//!     let options = Options::new().offline(true); // the HF_* environment applies underneath
//!     let embed = pipeline("feature-extraction", "sentence-transformers/all-MiniLM-L6-v2", &options)?;
//!     let output = embed.run(&["A man is eating food.".into()])?;
//!     print!("{}", output.to_json()?); // the bytes `safeformers run feature-extraction` prints
//!     Ok(())
//! }
//! ```
//!
//! A model is a repo id `org/name[@rev]` resolved through the Hugging Face cache (`HF_HUB_CACHE`,
//! else `$HF_HOME/hub`) and the Hub (`HF_ENDPOINT`, `HF_TOKEN`; never with `HF_HUB_OFFLINE=1`),
//! or a local folder. What a load may fetch is security policy ([`safeformers_hub::load_files`]):
//! configuration, tokenizer and safetensors files, never code, pickle-based checkpoints only with
//! [`Options::allow_pickle`] (then read by a restricted, non-executing unpickler). Every file is
//! verified against the Hub's hashes, and with [`Options::locked`] against the lockfile.
//!
//! Each task has its own type with `from_pretrained` ([`FeatureExtraction`],
//! [`TextClassification`], [`TokenClassification`], [`FillMask`], [`QuestionAnswering`],
//! [`TextGeneration`], [`SentenceSimilarity`]); [`pipeline`] picks one by name. Outputs are serde
//! types shaped like Transformers' pipeline outputs.
//!
//! Chat templates are programs from the model repo: by default they are rendered in a child
//! process under memory and CPU limits ([`chat_sandbox`]), so a program that renders them must
//! call [`chat_sandbox::serve_if_requested`] first thing in `main`.

#![forbid(unsafe_code)]

mod auto;
pub mod chat_sandbox;
mod error;
pub mod gguf_file;
mod options;
pub mod resolve;
mod tasks;

use std::path::Path;

use serde::Serialize;

pub use auto::{AutoModel, AutoModelForCausalLM, FromPretrained, Tokenizer};
pub use error::{Error, Result};
pub use options::{ChatTemplateIsolation, Options, THREADS_PER_CORE, check_thread_count};
pub use tasks::{
    Classification, Embeddings, FILL_MASK_TOP_K, FeatureExtraction, FeatureExtractionSettings,
    FillMask, OneOrMany, QuestionAnswering, SentenceSimilarity, TextClassification, TextGeneration,
    TokenClassification,
};

pub use safeformers_hub as hub;
pub use safeformers_models as models;
pub use safeformers_models::{CausalLm, LoadedModel, Quantization, WeightDtype, WeightOptions};
pub use safeformers_pipelines as pipelines;
pub use safeformers_pipelines::generation::GenerationConfig;
pub use safeformers_pipelines::{
    Aggregation, Answer, Entities, EntityGroup, GeneratedContent, GeneratedText, GenerationInput,
    GenerationStats, LabelScore, MaskFill, PoolingMode, QuestionAnsweringOptions,
    TextGenerationOptions, TokenEntity,
};
pub use safeformers_tokenize as tokenize;
pub use safeformers_weights as weights;

/// The tasks [`pipeline`] knows, by Transformers' names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// `feature-extraction`: token or sentence embeddings.
    FeatureExtraction,
    /// `sentence-similarity`: cosine similarity of the first input to each other one.
    SentenceSimilarity,
    /// `text-classification` (also `sentiment-analysis`).
    TextClassification,
    /// `token-classification` (also `ner`).
    TokenClassification,
    /// `fill-mask`.
    FillMask,
    /// `question-answering`.
    QuestionAnswering,
    /// `text-generation`.
    TextGeneration,
}

impl Task {
    /// Every task, in the order of their names.
    pub const ALL: [Task; 7] = [
        Task::FeatureExtraction,
        Task::SentenceSimilarity,
        Task::TextClassification,
        Task::TokenClassification,
        Task::FillMask,
        Task::QuestionAnswering,
        Task::TextGeneration,
    ];

    /// The task's name (`feature-extraction`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Task::FeatureExtraction => "feature-extraction",
            Task::SentenceSimilarity => "sentence-similarity",
            Task::TextClassification => "text-classification",
            Task::TokenClassification => "token-classification",
            Task::FillMask => "fill-mask",
            Task::QuestionAnswering => "question-answering",
            Task::TextGeneration => "text-generation",
        }
    }

    /// The task of a name, with Transformers' aliases (`sentiment-analysis`, `ner`).
    pub fn from_name(name: &str) -> Result<Task> {
        let alias = match name {
            "sentiment-analysis" => "text-classification",
            "ner" => "token-classification",
            other => other,
        };
        Task::ALL
            .into_iter()
            .find(|task| task.name() == alias)
            .ok_or_else(|| Error::UnknownTask {
                task: name.to_string(),
                known: Task::ALL.map(Task::name).join(", "),
            })
    }
}

/// A loaded pipeline of any task, run with each task's defaults (as `safeformers run TASK`
/// without task flags). For the task's own settings, use its type ([`FillMask::run`]'s
/// `top_k`, ...).
#[derive(Debug)]
pub enum Pipeline {
    /// See [`FeatureExtraction`].
    FeatureExtraction(FeatureExtraction),
    /// See [`SentenceSimilarity`].
    SentenceSimilarity(SentenceSimilarity),
    /// See [`TextClassification`].
    TextClassification(TextClassification),
    /// See [`TokenClassification`].
    TokenClassification(TokenClassification),
    /// See [`FillMask`].
    FillMask(FillMask),
    /// See [`QuestionAnswering`].
    QuestionAnswering(QuestionAnswering),
    /// See [`TextGeneration`].
    TextGeneration(TextGeneration, TextGenerationOptions),
}

/// The output of [`Pipeline::run`]: the task's typed output.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Output {
    /// Embeddings.
    FeatureExtraction(Embeddings),
    /// Similarities.
    SentenceSimilarity(Vec<f32>),
    /// Labels.
    TextClassification(Classification),
    /// Entities per input.
    TokenClassification(Vec<Entities>),
    /// Fills per input.
    FillMask(Vec<OneOrMany<Vec<MaskFill>>>),
    /// Answers per (question, context).
    QuestionAnswering(Vec<OneOrMany<Answer>>),
    /// One generated text per input.
    TextGeneration(Vec<GeneratedText>),
}

impl Output {
    /// Exactly what `safeformers run TASK` prints: one line of compact JSON, or for
    /// question-answering and text-generation one line per input (`[{"generated_text"}]` each).
    pub fn to_json(&self) -> Result<String> {
        let mut text = String::new();
        match self {
            Output::QuestionAnswering(answers) => {
                for answer in answers {
                    text += &compact_line(answer)?;
                }
            }
            Output::TextGeneration(results) => {
                for result in results {
                    text += &compact_line(&[result])?;
                }
            }
            other => text = compact_line(other)?,
        }
        Ok(text)
    }
}

/// `value` as one line of compact JSON (vectors are long; pretty-printing them helps nobody).
fn compact_line<T: Serialize + ?Sized>(value: &T) -> Result<String> {
    let mut line = serde_json::to_string(value).map_err(Error::Json)?;
    line.push('\n');
    Ok(line)
}

/// An input of [`Pipeline::run`].
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// A text (or for text-generation a prompt).
    Text(String),
    /// A question and the context to find its answer in.
    QuestionContext {
        /// The question.
        question: String,
        /// The context.
        context: String,
    },
    /// Chat messages for text-generation (`[{"role", "content"}]`).
    Chat(Vec<serde_json::Value>),
}

impl From<&str> for Input {
    fn from(text: &str) -> Input {
        Input::Text(text.to_string())
    }
}

impl From<String> for Input {
    fn from(text: String) -> Input {
        Input::Text(text)
    }
}

/// Loads the pipeline of `task` (a Transformers task name, see [`Task::from_name`]) for
/// `model`, a repo id `org/name[@rev]` or a folder, as Transformers'
/// `pipeline(task, model=...)`.
pub fn pipeline(task: &str, model: impl AsRef<Path>, options: &Options) -> Result<Pipeline> {
    pipeline_with(
        Task::from_name(task)?,
        model,
        options,
        &FeatureExtractionSettings::default(),
    )
}

/// [`pipeline`] of a [`Task`], with `embedding`'s pooling, normalization, prompt and
/// truncation for feature extraction (sentence similarity takes its pooling; the other tasks
/// ignore it).
pub fn pipeline_with(
    task: Task,
    model: impl AsRef<Path>,
    options: &Options,
    embedding: &FeatureExtractionSettings,
) -> Result<Pipeline> {
    let model = model.as_ref();
    Ok(match task {
        Task::FeatureExtraction => Pipeline::FeatureExtraction(
            FeatureExtraction::from_pretrained_with(model, options, embedding)?,
        ),
        Task::SentenceSimilarity => Pipeline::SentenceSimilarity(
            SentenceSimilarity::from_pretrained(model, options, embedding.pooling.clone())?,
        ),
        Task::TextClassification => {
            Pipeline::TextClassification(TextClassification::from_pretrained(model, options)?)
        }
        Task::TokenClassification => {
            Pipeline::TokenClassification(TokenClassification::from_pretrained(model, options)?)
        }
        Task::FillMask => Pipeline::FillMask(FillMask::from_pretrained(model, options)?),
        Task::QuestionAnswering => {
            Pipeline::QuestionAnswering(QuestionAnswering::from_pretrained(model, options)?)
        }
        Task::TextGeneration => Pipeline::TextGeneration(
            TextGeneration::from_pretrained(model, options)?,
            TextGenerationOptions {
                batch_size: options.checked_batch_size()?,
                ..TextGenerationOptions::default()
            },
        ),
    })
}

impl Pipeline {
    /// The task of this pipeline.
    pub fn task(&self) -> Task {
        match self {
            Pipeline::FeatureExtraction(_) => Task::FeatureExtraction,
            Pipeline::SentenceSimilarity(_) => Task::SentenceSimilarity,
            Pipeline::TextClassification(_) => Task::TextClassification,
            Pipeline::TokenClassification(_) => Task::TokenClassification,
            Pipeline::FillMask(_) => Task::FillMask,
            Pipeline::QuestionAnswering(_) => Task::QuestionAnswering,
            Pipeline::TextGeneration(..) => Task::TextGeneration,
        }
    }

    /// Sets the generation settings of a text-generation pipeline (ignored by other tasks).
    pub fn with_generation(mut self, settings: TextGenerationOptions) -> Pipeline {
        if let Pipeline::TextGeneration(_, current) = &mut self {
            *current = settings;
        }
        self
    }

    /// Runs the task on `inputs` with its defaults. Question-answering takes
    /// [`Input::QuestionContext`]; text-generation texts or chats; the other tasks texts.
    pub fn run(&self, inputs: &[Input]) -> Result<Output> {
        Ok(match self {
            Pipeline::FeatureExtraction(pipeline) => {
                Output::FeatureExtraction(pipeline.run(&Input::texts(inputs)?)?)
            }
            Pipeline::SentenceSimilarity(pipeline) => {
                Output::SentenceSimilarity(pipeline.run(&Input::texts(inputs)?)?)
            }
            Pipeline::TextClassification(pipeline) => {
                Output::TextClassification(pipeline.run(&Input::texts(inputs)?, None)?)
            }
            Pipeline::TokenClassification(pipeline) => Output::TokenClassification(
                pipeline.run(&Input::texts(inputs)?, Aggregation::None)?,
            ),
            Pipeline::FillMask(pipeline) => {
                Output::FillMask(pipeline.run(&Input::texts(inputs)?, FILL_MASK_TOP_K)?)
            }
            Pipeline::QuestionAnswering(pipeline) => {
                let pairs = Input::question_context_pairs(inputs)?;
                let settings = QuestionAnsweringOptions::default();
                Output::QuestionAnswering(pipeline.run(&pairs, 1, &settings)?)
            }
            Pipeline::TextGeneration(pipeline, settings) => {
                let inputs = Input::generation_inputs(inputs)?;
                Output::TextGeneration(pipeline.run(&inputs, settings)?)
            }
        })
    }
}

impl Input {
    /// The texts of `inputs`; anything else is an error naming the input.
    pub fn texts(inputs: &[Input]) -> Result<Vec<&str>> {
        inputs
            .iter()
            .enumerate()
            .map(|(index, input)| match input {
                Input::Text(text) => Ok(text.as_str()),
                _ => Err(Error::InvalidInput {
                    index: index + 1,
                    reason: "this task takes text inputs".into(),
                }),
            })
            .collect()
    }

    /// The (question, context) pairs of `inputs`; anything else is an error naming the input.
    pub fn question_context_pairs(inputs: &[Input]) -> Result<Vec<(&str, &str)>> {
        inputs
            .iter()
            .enumerate()
            .map(|(index, input)| match input {
                Input::QuestionContext { question, context } => {
                    Ok((question.as_str(), context.as_str()))
                }
                _ => Err(Error::InvalidInput {
                    index: index + 1,
                    reason: "question-answering takes a question and a context".into(),
                }),
            })
            .collect()
    }

    /// The prompts or chats of text-generation; a question is an error naming the input.
    pub fn generation_inputs(inputs: &[Input]) -> Result<Vec<GenerationInput>> {
        inputs
            .iter()
            .enumerate()
            .map(|(index, input)| match input {
                Input::Text(text) => Ok(GenerationInput::Text(text.clone())),
                Input::Chat(messages) => Ok(GenerationInput::Chat(messages.clone())),
                Input::QuestionContext { .. } => Err(Error::InvalidInput {
                    index: index + 1,
                    reason: "text-generation takes a prompt or chat messages".into(),
                }),
            })
            .collect()
    }
}
