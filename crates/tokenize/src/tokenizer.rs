//! [`Tokenizer`]: a `tokenizer.json` with its Transformers settings, encoding batches the way
//! Transformers' `tokenizer(texts, ...)` does.

use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use tokenizers::utils::truncation::{
    TruncationDirection, TruncationParams, TruncationStrategy as TkStrategy, truncate_encodings,
};
use tokenizers::{AddedToken, PostProcessor, PostProcessorWrapper};

use crate::chat_template::{ChatTemplateOptions, ChatTemplateProblem, ChatTemplateRequest};
use crate::config::{Side, SpecialTokens, TokenizerConfig, read_capped};
use crate::encoding::{EncodeOptions, Encoding, Encodings, Padding, TruncationStrategy};
use crate::error::{Result, TokenizeError};
use crate::stream::StreamDecoder;

/// Default size limit for `tokenizer.json` (the largest common ones, with 250k-token
/// vocabularies, are around 20 MB).
pub const DEFAULT_MAX_TOKENIZER_JSON_BYTES: u64 = 64 * 1024 * 1024;

/// How a [`Tokenizer`] is loaded and run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizerOptions {
    /// Threads for batch encoding. 1 (the default) encodes on the calling thread; more start a
    /// pool owned by this tokenizer (never rayon's global pool). 0 means one per core.
    pub threads: usize,
    /// Refuse a `tokenizer.json` larger than this.
    pub max_tokenizer_json_bytes: u64,
}

impl Default for TokenizerOptions {
    fn default() -> Self {
        Self {
            threads: 1,
            max_tokenizer_json_bytes: DEFAULT_MAX_TOKENIZER_JSON_BYTES,
        }
    }
}

/// A fast tokenizer loaded from a model folder, with Transformers' special tokens and
/// padding/truncation semantics.
///
/// `tokenizer.json` is the `tokenizers` library's format; its own `padding` and `truncation`
/// sections are ignored, as Transformers ignores them: padding and truncation come from each
/// call's [`EncodeOptions`] only.
pub struct Tokenizer {
    /// Without truncation, padding or post-processor: those are applied per call.
    inner: tokenizers::Tokenizer,
    /// Adds the special tokens (`[CLS] A [SEP] B [SEP]`) and sets type and sequence ids.
    post_processor: Option<PostProcessorWrapper>,
    config: TokenizerConfig,
    pool: Option<rayon::ThreadPool>,
    path: PathBuf,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("path", &self.path)
            .field("vocab_size", &self.vocab_size())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Message of a panic payload, for errors that replace a panic inside the `tokenizers` library.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    format!("the tokenizers library panicked: {text}")
}

impl Tokenizer {
    /// Loads `tokenizer.json`, `tokenizer_config.json`, `special_tokens_map.json`,
    /// `chat_template.jinja` and `additional_chat_templates/*.jinja` from a model folder (a verified snapshot). Only these fixed file
    /// names are read: no key in any of them can name another file, fetch or run anything.
    ///
    /// ```
    /// # use std::path::Path;
    /// use safeformers_tokenize::{EncodeOptions, Padding, Tokenizer, TokenizerOptions};
    /// # let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/bytelevel"));
    /// let tokenizer = Tokenizer::from_dir(dir, &TokenizerOptions::default())?;
    /// let options = EncodeOptions {
    ///     padding: Padding::Longest,
    ///     truncation: Some(256),
    ///     ..Default::default()
    /// };
    /// let batch = tokenizer.encode_batch(&["Hello world!", "Hello"], &options)?;
    /// assert_eq!(batch.rows[0].input_ids, [0, 387, 83, 369, 5, 2]); // <s> Hello world ! </s>
    /// assert_eq!(batch.uniform_len(), Some(6)); // "Hello" padded (on the left, as configured)
    /// assert_eq!(tokenizer.decode(&batch.rows[0].input_ids, true)?, "Hello world!");
    /// # Ok::<(), safeformers_tokenize::TokenizeError>(())
    /// ```
    pub fn from_dir(dir: &Path, options: &TokenizerOptions) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        let Some(bytes) = read_capped(&path, options.max_tokenizer_json_bytes)? else {
            return Err(TokenizeError::MissingTokenizerJson { path });
        };
        let invalid = |message: String| TokenizeError::InvalidTokenizer {
            path: path.clone(),
            message,
        };
        // `tokenizers::Tokenizer::from_bytes` is this same serde_json call; made here, its error
        // keeps the line and column, and tells broken JSON from JSON that is not a tokenizer.
        let parsed = catch_unwind(|| serde_json::from_slice::<tokenizers::Tokenizer>(&bytes))
            .map_err(|payload| invalid(panic_message(payload.as_ref())))?;
        let mut inner = match parsed {
            Ok(tokenizer) => tokenizer,
            Err(source) if source.is_data() => return Err(invalid(source.to_string())),
            Err(source) => return Err(TokenizeError::Json { path, source }),
        };
        let config = TokenizerConfig::from_dir(dir)?;

        // Transformers' PreTrainedTokenizerFast.__init__ registers the tokens of
        // `added_tokens_decoder` and the special tokens with the backend tokenizer when it does
        // not know them as added tokens yet, so that they are never split.
        let known: HashSet<String> = inner
            .get_added_tokens_decoder()
            .into_values()
            .map(|t| t.content)
            .collect();
        let mut to_add: Vec<AddedToken> = Vec::new();
        for token in config.added_tokens_decoder.values() {
            if !known.contains(&token.content) {
                to_add.push(
                    AddedToken::from(token.content.clone(), token.special)
                        .single_word(token.single_word)
                        .lstrip(token.lstrip)
                        .rstrip(token.rstrip)
                        .normalized(token.normalized),
                );
            }
        }
        for token in config.special_tokens.all() {
            if !known.contains(token) && !to_add.iter().any(|t| t.content == token) {
                to_add.push(AddedToken::from(token, true));
            }
        }
        if !to_add.is_empty() {
            inner
                .add_tokens(to_add)
                .map_err(|e| invalid(format!("cannot add tokens: {e}")))?;
        }

        let post_processor = inner.get_post_processor().cloned();
        inner.with_post_processor(None::<PostProcessorWrapper>);
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| invalid(format!("cannot disable truncation: {e}")))?;

        let pool = match options.threads {
            1 => None,
            threads => Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .thread_name(|i| format!("safeformers-tokenize-{i}"))
                    .build()
                    .map_err(|e| TokenizeError::ThreadPool {
                        threads,
                        message: e.to_string(),
                    })?,
            ),
        };
        Ok(Self {
            inner,
            post_processor,
            config,
            pool,
            path,
        })
    }

    /// The settings read from `tokenizer_config.json` and `special_tokens_map.json`.
    pub fn config(&self) -> &TokenizerConfig {
        &self.config
    }

    /// The special tokens by role, as strings.
    pub fn special_tokens(&self) -> &SpecialTokens {
        &self.config.special_tokens
    }

    /// The `tokenizer.json` this was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The longest input the model takes (`model_max_length`), if the config gives one.
    pub fn model_max_length(&self) -> Option<usize> {
        self.config.model_max_length
    }

    /// The default chat template (Jinja source), if any; see also
    /// [`Tokenizer::select_chat_template`].
    pub fn chat_template(&self) -> Option<&str> {
        self.config.chat_template.as_deref()
    }

    /// The Jinja source of the chat template `apply_chat_template` would use with these options
    /// (Transformers' `get_chat_template`): the one named by `options.template_name`; without a
    /// name, `tool_use` when tools are given and the tokenizer has one, else the default.
    /// Returns the template's name with its source.
    pub fn select_chat_template(&self, options: &ChatTemplateOptions) -> Result<(String, &str)> {
        let named = &self.config.named_chat_templates;
        let available = || {
            let mut names: Vec<String> = named.keys().cloned().collect();
            if self.config.chat_template.is_some() {
                names.insert(0, "default".into());
            }
            names
        };
        let fail = |template: &str, problem| TokenizeError::ChatTemplate {
            template: template.to_owned(),
            problem,
        };
        if let Some(name) = &options.template_name {
            let source = match (name.as_str(), &self.config.chat_template) {
                ("default", Some(default)) => Some(default.as_str()),
                _ => named.get(name).map(String::as_str),
            };
            return match source {
                Some(source) => Ok((name.clone(), source)),
                None => Err(fail(
                    name,
                    ChatTemplateProblem::UnknownName {
                        available: available(),
                    },
                )),
            };
        }
        if options.tools.is_some()
            && let Some(source) = named.get("tool_use")
        {
            return Ok(("tool_use".into(), source.as_str()));
        }
        match &self.config.chat_template {
            Some(source) => Ok(("default".into(), source.as_str())),
            None if named.is_empty() => Err(fail("default", ChatTemplateProblem::Missing)),
            None => Err(fail(
                "default",
                ChatTemplateProblem::NoDefault {
                    available: available(),
                },
            )),
        }
    }

    /// Renders the chat template over `messages` (JSON objects with `role`, `content` and
    /// whatever else the template reads: `tool_calls`, `reasoning_content`, ...), as
    /// Transformers' `apply_chat_template(messages, tokenize=False, ...)` does. Encode the result
    /// with `add_special_tokens: false`: the template already wrote them.
    ///
    /// The render is sandboxed and bounded (see [`crate::render_chat_template`] and
    /// [`ChatTemplateOptions::limits`]); any failure is a [`TokenizeError::ChatTemplate`].
    pub fn apply_chat_template(
        &self,
        messages: &[serde_json::Value],
        options: &ChatTemplateOptions,
    ) -> Result<String> {
        self.chat_template_request(messages, options)?.render()
    }

    /// What [`Tokenizer::apply_chat_template`] would render, as a self-contained request (the
    /// selected template, the messages, the options and the special tokens), for a caller that
    /// renders it elsewhere, e.g. in an isolated child process.
    pub fn chat_template_request(
        &self,
        messages: &[serde_json::Value],
        options: &ChatTemplateOptions,
    ) -> Result<ChatTemplateRequest> {
        let (template_name, source) = self.select_chat_template(options)?;
        Ok(ChatTemplateRequest {
            template_name,
            source: source.to_owned(),
            messages: messages.to_vec(),
            options: options.clone(),
            special_tokens: self.config.special_tokens.clone(),
        })
    }

    /// Which side padding goes to (`padding_side`).
    pub fn padding_side(&self) -> Side {
        self.config.padding_side
    }

    /// Sets the padding side, like `tokenizer.padding_side = "left"` in Transformers.
    pub fn set_padding_side(&mut self, side: Side) {
        self.config.padding_side = side;
    }

    /// Which side truncation removes from (`truncation_side`).
    pub fn truncation_side(&self) -> Side {
        self.config.truncation_side
    }

    /// Sets the truncation side, like `tokenizer.truncation_side = "left"` in Transformers.
    pub fn set_truncation_side(&mut self, side: Side) {
        self.config.truncation_side = side;
    }

    /// Sets (or clears) the pad token, like `tokenizer.pad_token = tokenizer.eos_token` for
    /// decoders that have none. The token must already be in the vocabulary to be used.
    pub fn set_pad_token(&mut self, token: Option<String>) {
        self.config.special_tokens.pad = token;
    }

    /// Vocabulary size, added tokens included (`len(tokenizer)`).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id of a token, if it is in the vocabulary.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The token of an id, if the id is in the vocabulary.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    fn role_id(&self, token: &Option<String>) -> Option<u32> {
        token.as_deref().and_then(|t| self.inner.token_to_id(t))
    }

    /// `pad_token_id`.
    pub fn pad_token_id(&self) -> Option<u32> {
        self.role_id(&self.config.special_tokens.pad)
    }

    /// `mask_token_id`.
    pub fn mask_token_id(&self) -> Option<u32> {
        self.role_id(&self.config.special_tokens.mask)
    }

    /// `cls_token_id`.
    pub fn cls_token_id(&self) -> Option<u32> {
        self.role_id(&self.config.special_tokens.cls)
    }

    /// `sep_token_id`.
    pub fn sep_token_id(&self) -> Option<u32> {
        self.role_id(&self.config.special_tokens.sep)
    }

    /// `bos_token_id`.
    pub fn bos_token_id(&self) -> Option<u32> {
        self.role_id(&self.config.special_tokens.bos)
    }

    /// `eos_token_id`.
    pub fn eos_token_id(&self) -> Option<u32> {
        self.role_id(&self.config.special_tokens.eos)
    }

    /// `unk_token_id`.
    pub fn unk_token_id(&self) -> Option<u32> {
        self.role_id(&self.config.special_tokens.unk)
    }

    /// `all_special_ids`: the ids of all special tokens declared by role or as additional.
    pub fn all_special_ids(&self) -> Vec<u32> {
        let all = self.config.special_tokens.all();
        all.into_iter()
            .filter_map(|t| self.inner.token_to_id(t))
            .collect()
    }

    /// Number of special tokens the post-processor adds to a single sequence or a pair
    /// (`num_special_tokens_to_add(pair)`).
    pub fn num_special_tokens_to_add(&self, pair: bool) -> usize {
        self.post_processor
            .as_ref()
            .map_or(0, |p| p.added_tokens(pair))
    }

    /// Encodes one text; [`Tokenizer::encode_batch`] with a batch of one.
    pub fn encode(&self, text: &str, options: &EncodeOptions) -> Result<Encodings> {
        self.encode_batch(&[text], options)
    }

    /// Encodes a batch of texts as Transformers' `tokenizer(texts, ...)` does.
    pub fn encode_batch<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        options: &EncodeOptions,
    ) -> Result<Encodings> {
        self.run_batch(texts.len(), options, |i| {
            let text = texts.get(i).map_or("", AsRef::as_ref);
            (text, None)
        })
    }

    /// Encodes a batch of pairs (question and context, or two sentences) as Transformers'
    /// `tokenizer(firsts, seconds, ...)` does. Offsets of each token are into its own text.
    pub fn encode_pair_batch<A, B>(
        &self,
        pairs: &[(A, B)],
        options: &EncodeOptions,
    ) -> Result<Encodings>
    where
        A: AsRef<str> + Sync,
        B: AsRef<str> + Sync,
    {
        self.run_batch(pairs.len(), options, |i| match pairs.get(i) {
            Some((a, b)) => (a.as_ref(), Some(b.as_ref())),
            None => ("", None),
        })
    }

    fn run_batch<'t, F>(&self, n: usize, options: &EncodeOptions, input: F) -> Result<Encodings>
    where
        F: Fn(usize) -> (&'t str, Option<&'t str>) + Sync,
    {
        let pad = self.padding_plan(options)?;
        let encode = |i: usize| {
            let (first, second) = input(i);
            catch_unwind(AssertUnwindSafe(|| {
                self.encode_one(i, first, second, options)
            }))
            .unwrap_or_else(|payload| {
                Err(TokenizeError::Encode {
                    index: i,
                    message: panic_message(payload.as_ref()),
                })
            })
        };
        let encoded: Vec<tokenizers::Encoding> = match &self.pool {
            Some(pool) if n > 1 => {
                pool.install(|| (0..n).into_par_iter().map(encode).collect::<Result<_>>())?
            }
            _ => (0..n).map(encode).collect::<Result<_>>()?,
        };

        // Padding target: over the rows of the inputs, as the `tokenizers` library computes it
        // (overflow rows are never longer than the row they continue).
        let target = match pad {
            None => None,
            Some((length, multiple)) => {
                let longest = encoded
                    .iter()
                    .map(tokenizers::Encoding::len)
                    .max()
                    .unwrap_or(0);
                let length = length.unwrap_or(longest);
                Some(match multiple {
                    Some(m) if length % m != 0 => length + (m - length % m),
                    _ => length,
                })
            }
        };

        let mut rows = Vec::with_capacity(n);
        for (sample, encoding) in encoded.iter().enumerate() {
            rows.push(Encoding::from_tokenizers(encoding, sample));
            if options.return_overflowing_tokens {
                rows.extend(
                    encoding
                        .get_overflowing()
                        .iter()
                        .map(|o| Encoding::from_tokenizers(o, sample)),
                );
            }
        }
        if let Some(target) = target {
            let pad_id = self.pad_token_id().ok_or(TokenizeError::NoPadToken)?;
            let pad_token = self
                .config
                .special_tokens
                .pad
                .as_deref()
                .unwrap_or_default();
            // Transformers' `pad_token_type_id` is 0 for every model it ships.
            for row in &mut rows {
                row.pad(target, pad_id, 0, pad_token, self.config.padding_side);
            }
        }
        Ok(Encodings { rows })
    }

    /// `Some((fixed length or None for longest, multiple))` when padding; checked before any
    /// work, as Transformers does.
    fn padding_plan(
        &self,
        options: &EncodeOptions,
    ) -> Result<Option<(Option<usize>, Option<usize>)>> {
        if options.pad_to_multiple_of == Some(0) {
            return Err(TokenizeError::InvalidOptions(
                "pad_to_multiple_of must be at least 1".into(),
            ));
        }
        if options.truncation == Some(0) {
            return Err(TokenizeError::InvalidOptions(
                "truncation to 0 tokens".into(),
            ));
        }
        let length = match options.padding {
            Padding::None => return Ok(None),
            Padding::Longest => None,
            Padding::MaxLength => Some(
                options
                    .truncation
                    .or(self.config.model_max_length)
                    .ok_or(TokenizeError::NoMaxLength)?,
            ),
        };
        if self.pad_token_id().is_none() {
            return Err(TokenizeError::NoPadToken);
        }
        Ok(Some((length, options.pad_to_multiple_of)))
    }

    /// Tokenizes one sequence without special tokens, truncation or padding, with character
    /// offsets (what Transformers asks of the `tokenizers` library).
    fn tokenize(&self, index: usize, text: &str) -> Result<tokenizers::Encoding> {
        self.inner
            .encode_char_offsets(text, false)
            .map_err(|e| TokenizeError::Encode {
                index,
                message: e.to_string(),
            })
    }

    /// The `tokenizers` library's `encode` + `post_process`, with our per-call truncation.
    fn encode_one(
        &self,
        index: usize,
        first: &str,
        second: Option<&str>,
        options: &EncodeOptions,
    ) -> Result<tokenizers::Encoding> {
        let first = self.tokenize(index, first)?;
        let second = match second {
            Some(text) => {
                let mut encoding = self.tokenize(index, text)?;
                // As `encode_single_sequence(pair, type_id = 1)` leaves it.
                encoding.set_type_ids(vec![1; encoding.len()]);
                Some(encoding)
            }
            None => None,
        };

        let (first, second) = match options.truncation {
            None => (first, second),
            Some(max_length) => self.truncate(index, first, second, max_length, options)?,
        };

        let add_special = options.add_special_tokens;
        match &self.post_processor {
            Some(processor) => {
                processor
                    .process(first, second, add_special)
                    .map_err(|e| TokenizeError::Encode {
                        index,
                        message: e.to_string(),
                    })
            }
            None => {
                let encodings = std::iter::once(first).chain(second).collect();
                let merged =
                    <dyn PostProcessor>::default_process(encodings, add_special).map_err(|e| {
                        TokenizeError::Encode {
                            index,
                            message: e.to_string(),
                        }
                    })?;
                Ok(tokenizers::Encoding::merge(merged, false))
            }
        }
    }

    fn truncate(
        &self,
        index: usize,
        first: tokenizers::Encoding,
        second: Option<tokenizers::Encoding>,
        max_length: usize,
        options: &EncodeOptions,
    ) -> Result<(tokenizers::Encoding, Option<tokenizers::Encoding>)> {
        let strategy = options.truncation_strategy;
        let error = |message: String| TokenizeError::Truncation {
            index,
            max_length,
            strategy: strategy.as_str(),
            message,
        };
        let added = if options.add_special_tokens {
            self.num_special_tokens_to_add(second.is_some())
        } else {
            0
        };
        // The `tokenizers` library subtracts without checking (and would truncate nothing).
        let budget = max_length
            .checked_sub(added)
            .filter(|&b| b > 0)
            .ok_or_else(|| error(format!("no room left after the {added} special tokens")))?;
        let lengths = planned_lengths(
            first.len(),
            second.as_ref().map(tokenizers::Encoding::len),
            budget,
            strategy,
        )
        .map_err(error)?;
        // `Encoding::truncate` asserts that the stride is shorter than what remains.
        for (before, after) in [
            (first.len(), lengths.0),
            (second.as_ref().map_or(0, |s| s.len()), lengths.1),
        ] {
            if after < before && after > 0 && options.stride >= after {
                return Err(error(format!(
                    "stride {} is not smaller than the {after} tokens left for a sequence",
                    options.stride
                )));
            }
        }
        let params = TruncationParams {
            direction: match self.config.truncation_side {
                Side::Left => TruncationDirection::Left,
                Side::Right => TruncationDirection::Right,
            },
            max_length: budget,
            strategy: match strategy {
                TruncationStrategy::LongestFirst => TkStrategy::LongestFirst,
                TruncationStrategy::OnlyFirst => TkStrategy::OnlyFirst,
                TruncationStrategy::OnlySecond => TkStrategy::OnlySecond,
            },
            stride: options.stride,
        };
        truncate_encodings(first, second, &params).map_err(|e| error(e.to_string()))
    }

    /// Decodes ids to text (`tokenizer.decode(ids, skip_special_tokens=..)`). Ids outside the
    /// vocabulary are skipped.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        let text = catch_unwind(AssertUnwindSafe(|| {
            self.inner.decode(ids, skip_special_tokens)
        }))
        .map_err(|payload| TokenizeError::Decode(panic_message(payload.as_ref())))?
        .map_err(|e| TokenizeError::Decode(e.to_string()))?;
        Ok(if self.config.clean_up_tokenization_spaces {
            clean_up_tokenization(&text)
        } else {
            text
        })
    }

    /// A [`StreamDecoder`] for generated ids: `push` each id as it comes, then `finish`; the
    /// chunks add up to `decode(all_ids, skip_special_tokens)`.
    pub fn stream_decoder(&self, skip_special_tokens: bool) -> StreamDecoder<'_> {
        StreamDecoder::new(self, skip_special_tokens)
    }

    /// Transformers' `convert_tokens_to_string`: the tokenizer's decoder applied to token
    /// strings, without cleanup; tokens joined with spaces when there is no decoder.
    pub fn convert_tokens_to_string(&self, tokens: Vec<String>) -> Result<String> {
        use tokenizers::Decoder as _;
        let Some(decoder) = self.inner.get_decoder() else {
            return Ok(tokens.join(" "));
        };
        catch_unwind(AssertUnwindSafe(|| decoder.decode(tokens)))
            .map_err(|payload| TokenizeError::Decode(panic_message(payload.as_ref())))?
            .map_err(|e| TokenizeError::Decode(e.to_string()))
    }

    /// The model's continuing-subword prefix (WordPiece's `##`), if it has a non-empty one: a
    /// token that starts with it continues the previous word.
    pub fn continuing_subword_prefix(&self) -> Option<&str> {
        use tokenizers::models::ModelWrapper;
        let prefix = match self.inner.get_model() {
            ModelWrapper::WordPiece(model) => Some(model.continuing_subword_prefix.as_str()),
            ModelWrapper::BPE(model) => model.continuing_subword_prefix.as_deref(),
            _ => None,
        };
        prefix.filter(|prefix| !prefix.is_empty())
    }
}

/// The lengths the `tokenizers` library's `truncate_encodings` will cut the sequences to
/// (the same arithmetic), so that options it would panic on are refused first.
fn planned_lengths(
    n1: usize,
    n2: Option<usize>,
    max: usize,
    strategy: TruncationStrategy,
) -> std::result::Result<(usize, usize), String> {
    let total = n1 + n2.unwrap_or(0);
    if total <= max {
        return Ok((n1, n2.unwrap_or(0)));
    }
    let to_remove = total - max;
    let too_short = |n: usize| {
        Err(format!(
            "the sequence to truncate has {n} tokens and {to_remove} must go"
        ))
    };
    match (strategy, n2) {
        (TruncationStrategy::LongestFirst, None) => Ok((max, 0)),
        (TruncationStrategy::LongestFirst, Some(n2)) => {
            let swap = n1 > n2;
            let mut short = n1.min(n2);
            let mut long = if short > max {
                short
            } else {
                short.max(max - short)
            };
            if short + long > max {
                short = max / 2;
                long = short + max % 2;
            }
            Ok(if swap { (long, short) } else { (short, long) })
        }
        (TruncationStrategy::OnlyFirst, _) if n1 > to_remove => {
            Ok((n1 - to_remove, n2.unwrap_or(0)))
        }
        (TruncationStrategy::OnlyFirst, _) => too_short(n1),
        (TruncationStrategy::OnlySecond, Some(n2)) if n2 > to_remove => Ok((n1, n2 - to_remove)),
        (TruncationStrategy::OnlySecond, Some(n2)) => too_short(n2),
        (TruncationStrategy::OnlySecond, None) => {
            Err("only_second needs a pair of sequences".into())
        }
    }
}

/// Transformers' `clean_up_tokenization`: removes the spaces a word-level decode leaves before
/// punctuation and English contractions.
fn clean_up_tokenization(text: &str) -> String {
    [
        (" .", "."),
        (" ?", "?"),
        (" !", "!"),
        (" ,", ","),
        (" ' ", "'"),
        (" n't", "n't"),
        (" 'm", "'m"),
        (" 's", "'s"),
        (" 've", "'ve"),
        (" 're", "'re"),
    ]
    .iter()
    .fold(text.to_owned(), |acc, (from, to)| acc.replace(from, to))
}
