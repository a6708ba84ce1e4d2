//! Task pipelines, with the outputs of Transformers' `pipeline(...)`.
//!
//! Each pipeline loads a tokenizer and a model from one folder (a verified snapshot or a local
//! directory) under a [`safeformers_weights::LoadPolicy`], batches its inputs, runs the model
//! and post-processes the result into serde types shaped like Transformers' outputs:
//!
//! - [`FeatureExtraction`]: token embeddings (`feature-extraction`), or sentence embeddings
//!   when the folder is a sentence-transformers one (`modules.json`; its module names are read
//!   as identifiers, never imported; prompts, `Dense` modules, last-token pooling and
//!   `truncate_dim`).
//! - [`TextClassification`]: `[{"label", "score"}]` per input.
//! - [`TokenClassification`]: `[{"entity", "score", "index", "word", "start", "end"}]` or,
//!   aggregated, `[{"entity_group", "score", "word", "start", "end"}]` per input.
//! - [`FillMask`]: `[{"score", "token", "token_str", "sequence"}]` per mask.
//! - [`QuestionAnswering`]: `[{"score", "start", "end", "answer"}]` per question and context,
//!   long contexts read in overlapping windows (Transformers 4.57's pipeline).
//! - [`TextGeneration`]: `[{"generated_text"}]` per prompt or chat, from a decoder-only model
//!   through [`generation`] (greedy or seeded sampling, Transformers' logits processors, EOS /
//!   length / stop strings, left-padded batches, streaming).
//!
//! [`parse_tool_calls`] splits a chat model's reply into text and OpenAI-style tool calls, for
//! the tool-call formats of Hermes / Qwen, Llama 3 and Mistral models ([`ToolCallFormat`]).
//!
//! Nothing here reads the network: resolving a repo id to a folder is the Hub layer's job.

#![forbid(unsafe_code)]

mod encoder;
mod error;
mod feature_extraction;
mod fill_mask;
pub mod generation;
mod question_answering;
mod sentence_modules;
mod text_classification;
mod text_generation;
mod token_classification;
mod tool_calls;

pub use encoder::{Encoder, LoadOptions, length_sorted_batches};
pub use error::{PipelineError, Result};
pub use feature_extraction::{
    DEFAULT_BATCH_SIZE, FeatureExtraction, FeatureExtractionOptions, Features, PoolingMode,
    SentenceTransformerConfig, cosine_similarity, normalized, pool,
};
pub use fill_mask::{FillMask, MaskFill};
pub use question_answering::{Answer, QuestionAnswering, QuestionAnsweringOptions};
pub use sentence_modules::{Dense, Prompts};
pub use text_classification::{LabelScore, ScoreFunction, TextClassification};
pub use text_generation::{
    ChatRenderer, GeneratedContent, GeneratedText, GenerationInput, GenerationStats,
    TextGeneration, TextGenerationOptions,
};
pub use token_classification::{
    Aggregation, Entities, EntityGroup, TokenClassification, TokenEntity,
};
pub use tool_calls::{
    ParsedReply, ParsedToolCall, ToolCallError, ToolCallFormat, ToolCallLimits, parse_tool_calls,
};
