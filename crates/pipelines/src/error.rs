//! The crate's error type. Every variant names the file, input or output it concerns.

use std::path::PathBuf;

/// Result with this crate's [`PipelineError`].
pub type Result<T, E = PipelineError> = std::result::Result<T, E>;

/// Why a pipeline could not be loaded or run.
///
/// Refusals by security policy (pickle weights without permission, remote code, custom
/// sentence-transformers modules) are told apart
/// by [`PipelineError::is_policy_refusal`], which the CLI maps to exit code 3.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// A file that is not a regular file (a FIFO, a device, a directory), is over the cap for its
    /// kind, or could not be read: the one opener of `safeformers-files` says which.
    #[error(transparent)]
    File(#[from] safeformers_files::FileError),

    /// A configuration file is larger than any real one.
    #[error("{}: more than the {limit}-byte limit for a configuration file", path.display())]
    FileTooLarge {
        /// The file.
        path: PathBuf,
        /// The limit.
        limit: u64,
    },

    /// A configuration file is not valid JSON or has a field of the wrong type.
    #[error("{}: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// What the JSON parser said (with line and column).
        source: serde_json::Error,
    },

    /// `modules.json` names a module of sentence-transformers itself that we do not implement
    /// (`sentence_transformers.models.LayerNorm`): unsupported, not unsafe.
    #[error(
        "{}: module type `{module_type}` is not implemented (safeformers implements \
         sentence_transformers.models.Transformer, .Pooling, .Dense and .Normalize)",
        path.display()
    )]
    UnsupportedModule {
        /// `modules.json`.
        path: PathBuf,
        /// The module's `type` string.
        module_type: String,
    },

    /// `modules.json` names a module class from outside sentence-transformers
    /// (`evil_pkg.Backdoor`): sentence-transformers would import and run that Python code (from
    /// the folder with `trust_remote_code`, or from any installed package). A refusal by
    /// policy: the name is an identifier only, and safeformers never runs a model's code.
    #[error(
        "{}: module type `{module_type}` is custom Python code, which sentence-transformers \
         would import and run; safeformers never runs code named by a model folder (it \
         implements sentence_transformers.models.Transformer, .Pooling, .Dense and .Normalize)",
        path.display()
    )]
    CustomModule {
        /// `modules.json`.
        path: PathBuf,
        /// The module's `type` string.
        module_type: String,
    },

    /// A sentence-transformers configuration is present but unusable.
    #[error("{}: {reason}", path.display())]
    InvalidModules {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// The pipeline's own options or inputs cannot be used.
    #[error("{0}")]
    InvalidInput(String),

    /// The model does not fit the task (no mask token for fill-mask, a head that gives the wrong
    /// output, labels missing from `id2label`).
    #[error("{}: {reason}", path.display())]
    IncompatibleModel {
        /// The model folder.
        path: PathBuf,
        /// What does not fit.
        reason: String,
    },

    /// A generation setting of the caller, or of the merged settings, has a value generation
    /// cannot use (a model's file is named instead, by [`PipelineError::InvalidGenerationFile`],
    /// when the value came from it).
    #[error("generation setting `{field}` {reason}")]
    InvalidGenerationConfig {
        /// The setting's name, as in `generation_config.json`.
        field: &'static str,
        /// What is wrong with its value.
        reason: String,
    },

    /// A generation setting in a model's file (`generation_config.json`, or the generation
    /// fields of `config.json`) has a value generation cannot use.
    #[error("{}: generation setting `{field}` {reason}", path.display())]
    InvalidGenerationFile {
        /// The file.
        path: PathBuf,
        /// The setting's name, as in the file.
        field: &'static str,
        /// What is wrong with its value.
        reason: String,
    },

    /// The prompt and the tokens asked for do not fit the model's context window.
    #[error(
        "the prompt has {prompt_tokens} tokens and {max_new_tokens} new tokens were asked for, \
         more than the model's context window of {context_length} tokens: shorten the prompt, \
         ask for fewer new tokens, or let the prompt be truncated from the left (--truncate)"
    )]
    PromptTooLong {
        /// Tokens in the (longest) prompt.
        prompt_tokens: usize,
        /// New tokens asked for.
        max_new_tokens: usize,
        /// The model's context length (`max_position_embeddings`, `n_positions`).
        context_length: usize,
    },

    /// The model's chat template could not be chosen or rendered (a hostile template stopped
    /// by its limits, a template error); `path` is the file the template came from
    /// (`tokenizer.json`'s folder files, or a `.gguf` file's metadata).
    #[error("{}: {source}", path.display())]
    ChatTemplate {
        /// The tokenizer file the template came with.
        path: PathBuf,
        /// What went wrong (boxed: it is large, and this error travels in every crate above).
        source: Box<safeformers_tokenize::TokenizeError>,
    },

    /// Tokenization failed, or the tokenizer files are invalid.
    #[error(transparent)]
    Tokenize(#[from] safeformers_tokenize::TokenizeError),

    /// The model could not be configured, loaded or run.
    #[error(transparent)]
    Model(#[from] safeformers_models::Error),

    /// A tensor operation failed (a bug or an exhausted resource, not bad input).
    #[error("tensor operation failed: {0}")]
    Tensor(#[from] candle_core::Error),
}

impl PipelineError {
    /// Whether this is a refusal by security policy (exit code 3 in the CLI) rather than
    /// malformed or unsupported input (exit code 1).
    pub fn is_policy_refusal(&self) -> bool {
        match self {
            PipelineError::Model(source) => source.is_policy_refusal(),
            PipelineError::CustomModule { .. } => true,
            _ => false,
        }
    }
}
