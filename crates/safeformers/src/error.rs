//! The front door's errors: each library layer's error as it is, plus the options and inputs
//! this crate checks itself.

use safeformers_hub::HubError;
use safeformers_pipelines::PipelineError;
use safeformers_tokenize::TokenizeError;

/// A result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong between a model name and a pipeline's output.
///
/// [`Error::is_policy_refusal`] says whether the security policy refused something (the CLI's
/// exit code 3); [`Error::is_usage_error`] whether the caller's options or inputs contradict
/// each other or are out of range (exit code 2).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Resolving, fetching or verifying files through the cache and the Hub.
    #[error(transparent)]
    Hub(#[from] HubError),
    /// Opening weights (format, policy, structure).
    #[error(transparent)]
    Weights(#[from] safeformers_weights::Error),
    /// Building a model from its config and weights.
    #[error(transparent)]
    Models(#[from] safeformers_models::Error),
    /// Loading a tokenizer or rendering a chat template.
    #[error(transparent)]
    Tokenize(#[from] TokenizeError),
    /// Running a task pipeline.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// An option out of range or contradicting another (`what` names the option).
    #[error("{option}: {reason}")]
    InvalidOption {
        /// The option (or environment variable) at fault, as the caller spelled it.
        option: String,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// A folder or repo holds several GGUF files and none was chosen, or not the one chosen
    /// ([`crate::Options::gguf_file`]).
    #[error("{location}: {reason}")]
    GgufChoice {
        /// The folder or repo id.
        location: String,
        /// What it holds, and what to do.
        reason: String,
    },
    /// A GGUF model (a `.gguf` file, or a folder holding one and no `config.json`) given to a
    /// task other than text generation: GGUF files hold decoders.
    #[error(
        "{location}: a GGUF file holds a decoder, for text-generation (and chat, forward, \
         inspect); {task} needs a model folder or repo with config.json"
    )]
    GgufTask {
        /// The file or folder.
        location: String,
        /// The task asked for.
        task: &'static str,
    },
    /// A task name this crate does not know.
    #[error("unknown task `{task}`: expected one of {known}")]
    UnknownTask {
        /// The name as given.
        task: String,
        /// The task names there are.
        known: String,
    },
    /// An input that does not have the shape the task needs.
    #[error("input {index}: {reason}")]
    InvalidInput {
        /// The input's position (1-based, as a user counts).
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// An output could not be written as JSON.
    #[error("writing the output as JSON: {0}")]
    Json(serde_json::Error),
    /// The thread pool of [`crate::Options::threads`] could not start.
    #[error("starting the thread pool: {0}")]
    ThreadPool(#[from] rayon::ThreadPoolBuildError),
}

impl Error {
    /// Whether this is a refusal by the security policy (pickle not allowed, remote code, a
    /// file whose hash differs, a link out of the cache, offline and not cached, a hostile chat
    /// template stopped by its limits...).
    pub fn is_policy_refusal(&self) -> bool {
        match self {
            Error::Hub(error) => error.is_policy_refusal(),
            Error::Weights(error) => error.is_policy_refusal(),
            Error::Models(error) => error.is_policy_refusal(),
            Error::Pipeline(error) => error.is_policy_refusal(),
            Error::Tokenize(_)
            | Error::InvalidOption { .. }
            | Error::GgufChoice { .. }
            | Error::GgufTask { .. }
            | Error::UnknownTask { .. }
            | Error::InvalidInput { .. }
            | Error::Json(_)
            | Error::ThreadPool(_) => false,
        }
    }

    /// Whether the caller's options or inputs are at fault (rather than a file or the model).
    pub fn is_usage_error(&self) -> bool {
        matches!(
            self,
            Error::InvalidOption { .. } | Error::UnknownTask { .. } | Error::InvalidInput { .. }
        )
    }

    /// An [`Error::InvalidOption`].
    pub(crate) fn option(option: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::InvalidOption {
            option: option.into(),
            reason: reason.into(),
        }
    }
}
