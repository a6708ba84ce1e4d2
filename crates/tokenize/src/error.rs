//! The crate's error type. Loading errors name the file; encoding errors say which option or
//! input was the problem.

use std::path::PathBuf;

/// Result with this crate's [`TokenizeError`].
pub type Result<T, E = TokenizeError> = std::result::Result<T, E>;

/// Why a tokenizer could not be loaded, or a text not encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenizeError {
    /// The model folder has no `tokenizer.json`. Only "fast" tokenizers (the `tokenizers`
    /// library's format) are supported; slow-only folders (`vocab.txt`, `spiece.model` alone)
    /// need converting with Transformers first (`AutoTokenizer.from_pretrained(..).save_pretrained(..)`).
    #[error("{}: not found; safeformers needs the tokenizer.json of a fast tokenizer", path.display())]
    MissingTokenizerJson {
        /// Where the file was looked for.
        path: PathBuf,
    },

    /// A file that is not a regular file (a FIFO, a device, a directory), is over the cap for its
    /// kind, or could not be read: the one opener of `safeformers-files` says which.
    #[error(transparent)]
    File(#[from] safeformers_files::FileError),

    /// A file is larger than the limit set in [`crate::TokenizerOptions`].
    #[error("{}: {size} bytes is more than the limit of {limit} bytes for this file", path.display())]
    FileTooLarge {
        /// The file.
        path: PathBuf,
        /// Its size (or the number of bytes read before giving up).
        size: u64,
        /// The limit.
        limit: u64,
    },

    /// A file is not valid JSON, or a field does not have the expected type.
    #[error("{}: invalid JSON: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// Where and what serde_json found wrong.
        source: serde_json::Error,
    },

    /// `tokenizer.json` is JSON but not a tokenizer the `tokenizers` library accepts.
    #[error("{}: not a valid tokenizer: {message}", path.display())]
    InvalidTokenizer {
        /// The file.
        path: PathBuf,
        /// What the `tokenizers` library said.
        message: String,
    },

    /// `tokenizer.json` breaks a bound checked before the `tokenizers` library sees it: a size
    /// that does not fit the data present, a text pipeline that can blow up its input, a
    /// per-word limit that makes the work superlinear, too many entries (see
    /// [`crate::check_tokenizer_json`]).
    #[error("{}: refused: {violation}", path.display())]
    TokenizerBounds {
        /// The file.
        path: PathBuf,
        /// The field and what is wrong with it.
        violation: crate::tokenizer_bounds::BoundsViolation,
    },

    /// An input is longer than this tokenizer accepts in one call, refused before any
    /// tokenization (see [`crate::TokenizerOptions::max_input_bytes`]).
    #[error(
        "input {index}: {length} {unit} is more than the {limit} this tokenizer accepts {why}; \
         shorten the input or split it"
    )]
    InputTooLong {
        /// Position of the input in the batch.
        index: usize,
        /// Its length.
        length: usize,
        /// The limit it exceeds.
        limit: usize,
        /// What `length` and `limit` count (`bytes`, `characters`).
        unit: &'static str,
        /// Why the limit applies.
        why: String,
    },

    /// An input has more tokens than [`crate::EncodeOptions::token_budget`] allows. When the
    /// text was long, only a part of it was tokenized to find this out.
    #[error("input {index}: more than the {budget} tokens this call allows (at least {found})")]
    TooManyTokens {
        /// Position of the input in the batch.
        index: usize,
        /// The budget.
        budget: usize,
        /// How many tokens were found (a lower bound when only a part was tokenized).
        found: usize,
    },

    /// A field of `tokenizer_config.json` or `special_tokens_map.json` has a value we cannot use.
    #[error("{}: field `{field}`: {message}", path.display())]
    InvalidConfig {
        /// The file.
        path: PathBuf,
        /// The field.
        field: String,
        /// What is wrong with its value.
        message: String,
    },

    /// An [`crate::EncodeOptions`] value cannot be honoured.
    #[error("invalid encode options: {0}")]
    InvalidOptions(String),

    /// Padding was asked for but the tokenizer has no pad token (Transformers raises the same;
    /// decoders usually have none: set one, e.g. to the eos token, with
    /// [`crate::Tokenizer::set_pad_token`]).
    #[error("padding was requested but the tokenizer has no pad token")]
    NoPadToken,

    /// Padding to the maximum length was asked for without a length: neither
    /// `EncodeOptions::truncation` nor the model's `model_max_length` is set.
    #[error(
        "padding to max length needs `truncation: Some(n)` or a model_max_length in tokenizer_config.json"
    )]
    NoMaxLength,

    /// A pair could not be truncated to the maximum length with the chosen strategy (for
    /// `only_second`: the first sequence, e.g. a question, leaves no room for the second).
    #[error("input {index}: cannot truncate to {max_length} tokens with {strategy}: {message}")]
    Truncation {
        /// Position of the input in the batch.
        index: usize,
        /// The requested maximum length, special tokens included.
        max_length: usize,
        /// The strategy, as Transformers names it (`only_second`, ...).
        strategy: &'static str,
        /// What was in the way.
        message: String,
    },

    /// The `tokenizers` library failed on an input (for example a regex of a `Split`
    /// pre-tokenizer ran into its backtrack limit).
    #[error("input {index}: tokenization failed: {message}")]
    Encode {
        /// Position of the input in the batch.
        index: usize,
        /// What the `tokenizers` library said.
        message: String,
    },

    /// A chat template could not be chosen or rendered.
    #[error("chat template {template:?}: {problem}")]
    ChatTemplate {
        /// Which template (`default`, `tool_use`, or the name given by the caller).
        template: String,
        /// What went wrong.
        problem: crate::chat_template::ChatTemplateProblem,
    },

    /// A `.gguf` file could not be opened or breaks a rule of the format (the strict reader of
    /// `safeformers-weights` says which; its message names the file). Boxed: the reader's
    /// error is large, and this one travels inside the errors of every crate above.
    #[error(transparent)]
    Gguf(Box<safeformers_weights::Error>),

    /// A GGUF file describes a tokenizer we do not build: its `tokenizer.ggml.model` or
    /// `tokenizer.ggml.pre` names one we have no rules for.
    #[error("{}: `{key}` is {value:?}, which safeformers cannot build a tokenizer for (supported: {supported})", path.display())]
    UnsupportedGguf {
        /// The file.
        path: PathBuf,
        /// The metadata key.
        key: &'static str,
        /// Its value.
        value: String,
        /// The values we support.
        supported: String,
    },

    /// A `tokenizer.*` metadata value of a GGUF file is missing, of the wrong type, or
    /// nonsense (an id out of range, a merge of unknown tokens, a token listed twice, a count
    /// or length over its limit).
    #[error("{}: metadata `{key}`: {message}", path.display())]
    InvalidGguf {
        /// The file.
        path: PathBuf,
        /// The metadata key.
        key: String,
        /// What is wrong with it.
        message: String,
    },

    /// Decoding ids back to text failed.
    #[error("decoding failed: {0}")]
    Decode(String),

    /// The worker threads for batch encoding could not be started.
    #[error("cannot start {threads} tokenizer threads: {message}")]
    ThreadPool {
        /// How many were asked for.
        threads: usize,
        /// What rayon said.
        message: String,
    },
}
