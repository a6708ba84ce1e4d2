//! Tokenization as Hugging Face Transformers does it, on top of the `tokenizers` library.
//!
//! [`Tokenizer::from_dir`] reads a model folder's `tokenizer.json` (size-capped), with
//! `tokenizer_config.json`, `special_tokens_map.json`, `chat_template.jinja` and
//! `additional_chat_templates/*.jinja` for the settings Transformers keeps beside it ([`TokenizerConfig`]). Nothing in these files can make
//! us fetch, load or execute anything else: file-naming keys and `auto_map` are ignored.
//!
//! [`Tokenizer::from_gguf_file`] builds the tokenizer a GGUF file's metadata describes (see
//! [`gguf`]), through the same checks.
//!
//! Encoding follows Transformers' `tokenizer(texts, padding=.., truncation=.., max_length=..)`,
//! not the `padding`/`truncation` sections a `tokenizer.json` may carry (all-MiniLM-L6-v2's pads
//! every input to 128 tokens; Transformers, and we, do not unless asked):
//!
//! - [`Padding::None`] by default, [`Padding::Longest`] for `padding=True`,
//!   [`Padding::MaxLength`] for `padding="max_length"`; on the config's `padding_side`.
//! - [`EncodeOptions::truncation`] is `max_length` with special tokens included; pairs follow
//!   [`TruncationStrategy`] (`only_second` for question answering), with `stride` and
//!   overflowing windows as `return_overflowing_tokens=True` gives them.
//! - Each row has `input_ids`, `attention_mask`, `token_type_ids`, `special_tokens_mask`,
//!   character `offsets` (as `return_offsets_mapping`), `word_ids` and `sequence_ids`.
//!
//! Chat models: [`Tokenizer::apply_chat_template`] renders the tokenizer's chat template (a
//! sandboxed, fuel-bounded Jinja render, see [`render_chat_template`]); [`StreamDecoder`] turns
//! generated ids into text piece by piece, never splitting a character.
//!
//! Regexes of `Split` pre-tokenizers and `Replace` normalizers run on `fancy-regex` (pure Rust,
//! no C): the parts it hands to the `regex` crate run in linear time, and its backtracking VM
//! (needed for look-around and backreferences) gives up after 1,000,000 steps per search. A
//! hostile `tokenizer.json` with a catastrophic pattern therefore cannot hang encoding; when the
//! limit is hit, the `tokenizers` library stops matching and leaves the rest of that piece of
//! text unsplit (no error is reported), so such a tokenizer gives odd tokens, bounded in time.
//!
//! Everything else a `tokenizer.json` could make the `tokenizers` library allocate or loop
//! over is checked before the library sees the file ([`tokenizer_bounds`]): charsmap sizes
//! against the bytes present, the worst-case growth of normalizer, pre-tokenizer and decoder
//! chains, per-word limits, counts. Every encode call is bounded too ([`input_bounds`]): with
//! truncation or a [`TokenBudget`], a long text is cut to what can matter before it is
//! tokenized; otherwise a text over [`TokenizerOptions::max_input_bytes`] is refused. A panic
//! inside the library is caught and becomes an error saying what failed, with nothing printed.

#![forbid(unsafe_code)]

mod chat_template;
mod config;
mod encoding;
mod error;
pub mod gguf;
pub mod input_bounds;
mod panic_guard;
mod stream;
mod tokenizer;
pub mod tokenizer_bounds;

pub use chat_template::{
    ChatTemplateLimits, ChatTemplateOptions, ChatTemplateProblem, ChatTemplateRequest,
    DEFAULT_CHAT_TEMPLATE_FUEL, DEFAULT_CHAT_TEMPLATE_RECURSION_LIMIT,
    DEFAULT_MAX_CHAT_TEMPLATE_OUTPUT_BYTES, render_chat_template,
};
pub use config::{AddedTokenConfig, MAX_CONFIG_BYTES, Side, SpecialTokens, TokenizerConfig};
pub use encoding::{EncodeOptions, Encoding, Encodings, Padding, TokenBudget, TruncationStrategy};
pub use error::{Result, TokenizeError};
pub use input_bounds::{DEFAULT_MAX_INPUT_BYTES, MAX_NORMALIZED_CHARS};
pub use stream::StreamDecoder;
pub use tokenizer::{
    DEFAULT_MAX_TOKENIZER_JSON_BYTES, MAX_OVERFLOW_TOKENS, Tokenizer, TokenizerOptions,
};
pub use tokenizer_bounds::{BoundsViolation, check_tokenizer_json};
