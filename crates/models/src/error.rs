//! The crate's error type. Every variant names the file, field or tensor it concerns.

use std::path::PathBuf;

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a model could not be configured, loaded or run.
///
/// Refusals by security policy are told apart by [`Error::is_policy_refusal`], which the CLI
/// maps to exit code 3.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file that is not a regular file (a FIFO, a device, a directory), is over the cap for its
    /// kind, or could not be read: the one opener of `safeformers-files` says which.
    #[error(transparent)]
    File(#[from] safeformers_files::FileError),

    /// `config.json` is larger than any real configuration.
    #[error("{}: {size} bytes is more than the {limit}-byte limit for a config file", path.display())]
    ConfigTooLarge {
        /// The file.
        path: PathBuf,
        /// Its size (at least; reading stops past the limit).
        size: u64,
        /// The limit.
        limit: u64,
    },

    /// `config.json` is not valid JSON, or a field has the wrong type.
    #[error("{}: invalid config: {source}", path.display())]
    ConfigJson {
        /// The file.
        path: PathBuf,
        /// What the JSON parser said (with line and column).
        source: serde_json::Error,
    },

    /// A field the model cannot be built without is absent.
    #[error("{}: config field `{field}` is required for model_type `{model_type}` but missing", path.display())]
    MissingConfigField {
        /// The file.
        path: PathBuf,
        /// The model type being configured.
        model_type: String,
        /// The missing field.
        field: &'static str,
    },

    /// A field is present but its value cannot be used.
    #[error("{}: config field `{field}`: {reason}", path.display())]
    InvalidConfigField {
        /// The file.
        path: PathBuf,
        /// The field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The model needs Python code shipped in its repo (or another repo), safeformers never
    /// runs such code, and it has no native implementation of that class.
    #[error(
        "{}: this model needs custom code (auto_map → {} for {}, model_type `{}`); safeformers \
         does not run code from model repos and has no native implementation of that class. \
         Code files: {}. Review them without running them: `safeformers scan {}`. Supported \
         model types: {}",
        path.display(),
        code.reference,
        code.auto_class,
        code.model_type,
        code.files,
        crate::remote_code::folder_of(path).display(),
        crate::auto::SUPPORTED_MODEL_TYPES.join(", ")
    )]
    RemoteCodeRefused {
        /// The config file.
        path: PathBuf,
        /// What the config asks to run.
        code: Box<RemoteCodeRequest>,
    },

    /// The `model_type` is not one safeformers implements.
    #[error(
        "{}: unsupported model_type `{model_type}`; supported: {}",
        path.display(),
        crate::auto::SUPPORTED_MODEL_TYPES.join(", ")
    )]
    UnsupportedModelType {
        /// The config file.
        path: PathBuf,
        /// The model type found (empty when the field is absent).
        model_type: String,
    },

    /// The architecture (model class) named in `architectures` has no implementation here.
    #[error(
        "{}: unsupported architecture `{architecture}` for model_type `{model_type}`; \
         supported: {supported}",
        path.display()
    )]
    UnsupportedArchitecture {
        /// The config file.
        path: PathBuf,
        /// The class name.
        architecture: String,
        /// The model type.
        model_type: String,
        /// The classes that are implemented for this model type.
        supported: String,
    },

    /// A configuration the architecture supports in Transformers but safeformers does not (yet).
    #[error("{}: {what} is not supported", path.display())]
    UnsupportedFeature {
        /// The config file.
        path: PathBuf,
        /// What is not supported.
        what: String,
    },

    /// The weights could not be opened or were refused by policy.
    #[error(transparent)]
    Weights(#[from] safeformers_weights::Error),

    /// A tensor the model needs is not in the checkpoint.
    #[error("checkpoint {files}: missing tensor `{tensor}`")]
    MissingTensor {
        /// The tensor (full name, with prefix).
        tensor: String,
        /// The checkpoint's files, for the message.
        files: String,
    },

    /// A tensor's shape is not what the config says it should be.
    #[error("tensor `{tensor}` has shape {actual:?}, but the config needs {expected:?}")]
    TensorShape {
        /// The tensor.
        tensor: String,
        /// The shape the config implies.
        expected: Vec<usize>,
        /// The shape in the checkpoint.
        actual: Vec<usize>,
    },

    /// A GGUF file's metadata cannot configure a model: a key is missing, of the wrong type, out
    /// of bounds, or inconsistent with another.
    #[error("{}: GGUF metadata `{key}`: {reason}", path.display())]
    GgufMetadata {
        /// The GGUF file.
        path: PathBuf,
        /// The metadata key (`llama.block_count`, ...).
        key: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A GGUF file's architecture (`general.architecture`) has no model here.
    #[error(
        "{}: GGUF architecture `{architecture}` is not supported; supported: {}",
        path.display(),
        crate::gguf::GGUF_ARCHITECTURES.join(", ")
    )]
    GgufArchitecture {
        /// The GGUF file.
        path: PathBuf,
        /// The architecture it names.
        architecture: String,
    },

    /// A GGUF tensor cannot become model weights (its type, or its layout).
    #[error("{}: GGUF tensor `{tensor}`: {reason}", path.display())]
    GgufTensor {
        /// The GGUF file.
        path: PathBuf,
        /// The tensor's GGUF name.
        tensor: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A folder holds no `.gguf` file, or several (name the one to load).
    #[error("{}: {reason}", path.display())]
    GgufChoice {
        /// The folder.
        path: PathBuf,
        /// What was found.
        reason: String,
    },

    /// A tensor's dtype could not be converted to the compute dtype.
    #[error(transparent)]
    Convert(#[from] safeformers_weights::convert::ConvertError),

    /// The model inputs are malformed (shape, dtype, range).
    #[error("invalid input `{input}`: {reason}")]
    Input {
        /// Which input (`input_ids`, `attention_mask`, `token_type_ids`).
        input: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// A KV cache was asked for a layer it does not have (a bug in the model code).
    #[error("KV cache has no layer {layer}")]
    CacheLayer {
        /// The layer asked for.
        layer: usize,
    },

    /// The sequence (prompt plus generated tokens) is longer than the model's context window.
    #[error(
        "sequence of {length} tokens is longer than the model's context window of {limit} tokens"
    )]
    ContextTooLong {
        /// Tokens in the sequence.
        length: usize,
        /// The model's limit.
        limit: usize,
    },

    /// A KV cache was written or read with a shape it does not hold.
    #[error("KV cache: {reason}")]
    Cache {
        /// What was wrong.
        reason: String,
    },

    /// A CPU kernel was handed buffers whose sizes disagree with the shape it was told (a bug
    /// in the caller, never bad input: inputs are checked before any kernel runs).
    #[error(transparent)]
    Kernel(#[from] safeformers_kernels::KernelError),

    /// A tensor operation failed (a bug or an exhausted resource, not bad input).
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

/// What a refused config's `auto_map` asks to run ([`Error::RemoteCodeRefused`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteCodeRequest {
    /// The `model_type` of the config.
    pub model_type: String,
    /// The Auto class whose `auto_map` entry would have been used (`AutoModel`, ...).
    pub auto_class: String,
    /// The code reference (`modeling_x.MyModel`, possibly `org/repo--module.Class`).
    pub reference: String,
    /// Every code file `auto_map` names, with its sha256 when it is in the folder.
    pub files: String,
}

impl Error {
    /// Whether this is a refusal by security policy (exit code 3 in the CLI) rather than
    /// malformed or unsupported input (exit code 1).
    pub fn is_policy_refusal(&self) -> bool {
        match self {
            Error::RemoteCodeRefused { .. } => true,
            Error::Weights(source) => source.is_policy_refusal(),
            _ => false,
        }
    }
}
