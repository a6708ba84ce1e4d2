//! [`Tokenizer`]: a `tokenizer.json` with its Transformers settings, encoding batches the way
//! Transformers' `tokenizer(texts, ...)` does.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use tokenizers::utils::truncation::{
    TruncationDirection, TruncationParams, TruncationStrategy as TkStrategy, truncate_encodings,
};
use tokenizers::{AddedToken, PostProcessor, PostProcessorWrapper};

use crate::chat_template::{ChatTemplateOptions, ChatTemplateProblem, ChatTemplateRequest};
use crate::config::{Side, SpecialTokens, TokenizerConfig, read_capped};
use crate::encoding::{
    EncodeOptions, Encoding, Encodings, Padding, TokenBudget, TruncationStrategy,
};
use crate::error::{Result, TokenizeError};
use crate::input_bounds::{
    CUT_MARGIN_TOKENS, Cut, DEFAULT_MAX_INPUT_BYTES, cut_text, max_input_chars, window_chars,
};
use crate::panic_guard::{catch_quietly, panic_message};
use crate::stream::StreamDecoder;
use crate::tokenizer_bounds::{TextGrowth, check_tokenizer_json};

/// Default size limit for `tokenizer.json` (the largest common ones, with 250k-token
/// vocabularies, are around 20 MB).
pub const DEFAULT_MAX_TOKENIZER_JSON_BYTES: u64 = 64 * 1024 * 1024;

/// Most tokens in all the overflowing rows of one input (`return_overflowing_tokens`): a long
/// text with a stride close to the window, or a pair whose two sequences both overflow (every
/// window of one is paired with every window of the other), would otherwise make a number of
/// rows quadratic in the text.
pub const MAX_OVERFLOW_TOKENS: usize = 1 << 22;

/// How a [`Tokenizer`] is loaded and run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizerOptions {
    /// Threads for batch encoding. 1 (the default) encodes on the calling thread; more start a
    /// pool owned by this tokenizer (never rayon's global pool). 0 means one per core.
    pub threads: usize,
    /// Refuse a `tokenizer.json` larger than this.
    pub max_tokenizer_json_bytes: u64,
    /// Refuse to tokenize a text (or the part of it that truncation keeps) longer than this
    /// many bytes; see [`crate::EncodeOptions::token_budget`] for how a long text is cut first.
    /// A tokenizer whose normalizer can grow text a lot accepts less (see
    /// [`crate::MAX_NORMALIZED_CHARS`]).
    pub max_input_bytes: usize,
}

impl Default for TokenizerOptions {
    fn default() -> Self {
        Self {
            threads: 1,
            max_tokenizer_json_bytes: DEFAULT_MAX_TOKENIZER_JSON_BYTES,
            max_input_bytes: DEFAULT_MAX_INPUT_BYTES,
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
    /// Worst-case growth of text through the normalizer and pre-tokenizer.
    growth: TextGrowth,
    /// Characters of the longest token, added ones included (at least 1).
    max_token_chars: usize,
    max_input_bytes: usize,
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
        let (inner, growth) = parse_tokenizer_json(&path, &bytes)?;
        let config = TokenizerConfig::from_dir(dir)?;
        Self::from_parts(path, inner, growth, config, options)
    }

    /// A tokenizer from the bytes of a `tokenizer.json` alone, with default Transformers
    /// settings (no `tokenizer_config.json`): for tests and fuzzing. `path` only names the
    /// file in errors. The bytes go through the same checks as in [`Tokenizer::from_dir`].
    pub fn from_tokenizer_json(
        path: &Path,
        bytes: &[u8],
        options: &TokenizerOptions,
    ) -> Result<Self> {
        let (inner, growth) = parse_tokenizer_json(path, bytes)?;
        Self::from_parts(
            path.to_path_buf(),
            inner,
            growth,
            TokenizerConfig::default(),
            options,
        )
    }

    pub(crate) fn from_parts(
        path: PathBuf,
        mut inner: tokenizers::Tokenizer,
        growth: TextGrowth,
        config: TokenizerConfig,
        options: &TokenizerOptions,
    ) -> Result<Self> {
        let invalid = |message: String| TokenizeError::InvalidTokenizer {
            path: path.clone(),
            message,
        };
        let to_add = tokens_to_register(&inner, &config);
        let added_chars = to_add.iter().map(|t| t.content.chars().count()).sum();
        crate::tokenizer_bounds::check_added_text(added_chars, growth.input).map_err(
            |problem| TokenizeError::InvalidConfig {
                path: path.with_file_name("tokenizer_config.json"),
                field: "added_tokens_decoder".into(),
                message: problem,
            },
        )?;
        if !to_add.is_empty() {
            catch_quietly(|| inner.add_tokens(to_add))
                .map_err(|payload| invalid(panic_message("adding tokens", payload.as_ref())))?
                .map_err(|e| invalid(format!("cannot add tokens: {e}")))?;
        }

        let post_processor = inner.get_post_processor().cloned();
        inner.with_post_processor(None::<PostProcessorWrapper>);
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| invalid(format!("cannot disable truncation: {e}")))?;
        let max_token_chars = inner
            .get_vocab(true)
            .keys()
            .map(|token| token.chars().count())
            .max()
            .unwrap_or(1)
            .max(1);

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
            growth,
            max_token_chars,
            max_input_bytes: options.max_input_bytes,
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
        // The catch zone is entered inside the closure, on the thread that runs it (a worker
        // of the pool for batches), so that the panic hook stays quiet there.
        let encode = |i: usize| {
            let (first, second) = input(i);
            catch_quietly(|| self.encode_one(i, first, second, options)).unwrap_or_else(|payload| {
                Err(TokenizeError::Encode {
                    index: i,
                    message: panic_message("encoding this input", payload.as_ref()),
                })
            })
        };
        let encoded: Vec<(tokenizers::Encoding, [usize; 2])> = match &self.pool {
            Some(pool) if n > 1 => {
                pool.install(|| (0..n).into_par_iter().map(encode).collect::<Result<_>>())?
            }
            _ => (0..n).map(encode).collect::<Result<_>>()?,
        };

        let mut rows = Vec::with_capacity(n);
        for (sample, (encoding, skipped)) in encoded.iter().enumerate() {
            let mut row = Encoding::from_tokenizers(encoding, sample);
            for (sequence, &chars) in skipped.iter().enumerate() {
                row.shift_offsets(sequence, chars);
            }
            if let Some(TokenBudget::KeepLast(keep)) = options.token_budget {
                row.keep_last(keep);
            }
            rows.push(row);
            if options.return_overflowing_tokens {
                rows.extend(
                    encoding
                        .get_overflowing()
                        .iter()
                        .map(|o| Encoding::from_tokenizers(o, sample)),
                );
            }
        }
        // No row may be longer than asked: the `tokenizers` library's overflowing windows of a
        // pair can be (a budget smaller than the special tokens of both sequences).
        if let Some(max_length) = options.truncation
            && let Some(row) = rows.iter().find(|row| row.len() > max_length)
        {
            return Err(TokenizeError::Truncation {
                index: row.sample_index,
                max_length,
                strategy: options.truncation_strategy.as_str(),
                message: format!("a row of {} tokens came out", row.len()),
            });
        }

        // Padding target: over the rows (overflow rows are never longer than the row they
        // continue), as the `tokenizers` library computes it.
        if let Some((length, multiple)) = pad {
            let longest = rows.iter().map(Encoding::len).max().unwrap_or(0);
            let length = length.unwrap_or(longest);
            let target = match multiple {
                Some(m) if length % m != 0 => length + (m - length % m),
                _ => length,
            };
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
        if options.return_overflowing_tokens
            && matches!(options.token_budget, Some(TokenBudget::KeepLast(_)))
        {
            return Err(TokenizeError::InvalidOptions(
                "overflowing rows cannot be returned when only the last tokens are kept".into(),
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

    /// Refuses a text longer than this tokenizer takes in one piece (see
    /// [`TokenizerOptions::max_input_bytes`] and [`crate::MAX_NORMALIZED_CHARS`]).
    fn check_input_size(&self, index: usize, text: &str, context: &str) -> Result<()> {
        let too_long = |length, limit, unit, why: String| TokenizeError::InputTooLong {
            index,
            length,
            limit,
            unit,
            why,
        };
        if text.len() > self.max_input_bytes {
            return Err(too_long(
                text.len(),
                self.max_input_bytes,
                "bytes",
                context.to_owned(),
            ));
        }
        let growth = self.growth.input.total();
        let limit = max_input_chars(growth);
        let chars = text.chars().count();
        if chars > limit {
            return Err(too_long(
                chars,
                limit,
                "characters",
                format!(
                    "{context} (its normalizer and pre-tokenizer can grow a text {growth:.0} times)"
                ),
            ));
        }
        Ok(())
    }

    /// Tokenizes one sequence, or only the part of it that can give the `plan.keep` tokens
    /// kept on `plan.side` (see [`crate::input_bounds`]). Returns the encoding and the
    /// characters skipped before the part tokenized.
    fn tokenize_bounded(
        &self,
        index: usize,
        text: &str,
        plan: Option<CutPlan>,
    ) -> Result<(tokenizers::Encoding, Option<usize>)> {
        if let Some(plan) = plan {
            let window = window_chars(plan.keep, self.max_token_chars);
            if let Some(Cut {
                text: part,
                skipped_chars,
            }) = cut_text(text, window, plan.side)
            {
                self.check_input_size(index, part, "after cutting it to what truncation keeps")?;
                let encoding = self.tokenize(index, part)?;
                if encoding.len() >= plan.keep.saturating_add(CUT_MARGIN_TOKENS) {
                    return Ok((encoding, Some(skipped_chars)));
                }
                // The normalizer removed characters: the window holds too few tokens to know
                // which ones are kept. Tokenize the whole text, if it is within bounds.
                self.check_input_size(
                    index,
                    text,
                    "(it could not be cut before tokenizing: this tokenizer's normalizer drops characters)",
                )?;
                return Ok((self.tokenize(index, text)?, None));
            }
        }
        let context = match plan {
            None => "without truncation",
            Some(_) => "(what truncation keeps of it is too long)",
        };
        self.check_input_size(index, text, context)?;
        Ok((self.tokenize(index, text)?, None))
    }

    /// Which sequences may be cut before tokenizing, keeping how many tokens on which side.
    fn cut_plans(&self, options: &EncodeOptions, pair: bool) -> [Option<CutPlan>; 2] {
        if options.return_overflowing_tokens {
            return [None, None];
        }
        if let Some(keep) = options.truncation {
            let plan = Some(CutPlan {
                keep,
                side: self.config.truncation_side,
            });
            return match (options.truncation_strategy, pair) {
                (_, false) => [plan, None],
                (TruncationStrategy::OnlyFirst, true) => [plan, None],
                (TruncationStrategy::OnlySecond, true) => [None, plan],
                (TruncationStrategy::LongestFirst, true) => [plan, plan],
            };
        }
        let plan = match options.token_budget {
            // One more than the budget, to know that a text is over it.
            Some(TokenBudget::AtMost(budget)) => Some(CutPlan {
                keep: budget.saturating_add(1),
                side: Side::Right,
            }),
            Some(TokenBudget::KeepLast(keep)) => Some(CutPlan {
                keep,
                side: Side::Left,
            }),
            None => None,
        };
        [plan, plan]
    }

    /// The `tokenizers` library's `encode` + `post_process`, with our per-call truncation.
    /// Also returns, per sequence, the characters skipped before the part that was tokenized.
    fn encode_one(
        &self,
        index: usize,
        first: &str,
        second: Option<&str>,
        options: &EncodeOptions,
    ) -> Result<(tokenizers::Encoding, [usize; 2])> {
        let [plan_first, plan_second] = self.cut_plans(options, second.is_some());
        let (mut first_encoding, mut first_cut) =
            self.tokenize_bounded(index, first, plan_first)?;
        let mut second_encoding = match second {
            Some(text) => Some(self.tokenize_bounded(index, text, plan_second)?),
            None => None,
        };
        if let Some(TokenBudget::AtMost(budget)) = options.token_budget
            && options.truncation.is_none()
        {
            // A cut sequence has more tokens than the budget (that is when a cut is kept).
            let cut_len = [
                first_cut.map(|_| first_encoding.len()),
                second_encoding
                    .as_ref()
                    .and_then(|(e, cut)| cut.map(|_| e.len())),
            ];
            if let Some(found) = cut_len.into_iter().flatten().max() {
                return Err(TokenizeError::TooManyTokens {
                    index,
                    budget,
                    found,
                });
            }
        }
        if let (Some(text), Some((encoding, second_cut))) = (second, second_encoding.as_mut())
            && options.truncation.is_some()
            && options.truncation_strategy == TruncationStrategy::LongestFirst
            && !cut_keeps_the_longer(first_cut, first_encoding.len(), *second_cut, encoding.len())
        {
            // Which sequence is longer decides who loses tokens: tokenize both whole.
            self.check_input_size(
                index,
                first,
                "(a pair is cut only when that cannot change which sequence is longer)",
            )?;
            self.check_input_size(
                index,
                text,
                "(a pair is cut only when that cannot change which sequence is longer)",
            )?;
            first_encoding = self.tokenize(index, first)?;
            first_cut = None;
            *encoding = self.tokenize(index, text)?;
            *second_cut = None;
        }
        let skipped = [
            first_cut.unwrap_or(0),
            second_encoding
                .as_ref()
                .and_then(|(_, cut)| *cut)
                .unwrap_or(0),
        ];
        let second = second_encoding.map(|(mut encoding, _)| {
            // As `encode_single_sequence(pair, type_id = 1)` leaves it.
            encoding.set_type_ids(vec![1; encoding.len()]);
            encoding
        });
        let first = first_encoding;

        let (mut first, mut second) = match options.truncation {
            None => (first, second),
            Some(max_length) => self.truncate(index, first, second, max_length, options)?,
        };
        if !options.return_overflowing_tokens {
            // Unused, and the post-processor would pair every window of one sequence with
            // every window of the other.
            first.set_overflowing(Vec::new());
            if let Some(second) = second.as_mut() {
                second.set_overflowing(Vec::new());
            }
        }

        let add_special = options.add_special_tokens;
        let encoding =
            match &self.post_processor {
                Some(processor) => processor.process(first, second, add_special).map_err(|e| {
                    TokenizeError::Encode {
                        index,
                        message: e.to_string(),
                    }
                })?,
                None => {
                    let encodings = std::iter::once(first).chain(second).collect();
                    let merged = <dyn PostProcessor>::default_process(encodings, add_special)
                        .map_err(|e| TokenizeError::Encode {
                            index,
                            message: e.to_string(),
                        })?;
                    tokenizers::Encoding::merge(merged, false)
                }
            };
        Ok((encoding, skipped))
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
        if options.return_overflowing_tokens {
            // Each truncated sequence becomes windows of `after` tokens moving by `after -
            // stride`; a pair gives every window of one with every window of the other.
            let windows = |before: usize, after: usize| {
                if after >= before || after == 0 {
                    1
                } else {
                    (before - options.stride).div_ceil(after - options.stride)
                }
            };
            let rows = windows(first.len(), lengths.0)
                .saturating_mul(windows(second.as_ref().map_or(0, |s| s.len()), lengths.1));
            if rows.saturating_mul(max_length) > MAX_OVERFLOW_TOKENS {
                return Err(error(format!(
                    "{rows} overflowing rows of up to {max_length} tokens would be more than \
                     {MAX_OVERFLOW_TOKENS} tokens"
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
        let text = catch_quietly(|| self.inner.decode(ids, skip_special_tokens))
            .map_err(|payload| TokenizeError::Decode(panic_message("decoding", payload.as_ref())))?
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
        catch_quietly(|| decoder.decode(tokens))
            .map_err(|payload| TokenizeError::Decode(panic_message("decoding", payload.as_ref())))?
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

/// How much of one sequence can matter: the `keep` tokens on `side` (the side truncation
/// removes from, so the other end is kept).
#[derive(Debug, Clone, Copy)]
struct CutPlan {
    keep: usize,
    side: Side,
}

/// Whether cutting one sequence of a pair left `longest_first` truncation as it would be on
/// the whole texts: it splits the budget by which sequence is longer, and a cut sequence is at
/// least as long as its part; so at most one may be cut, and its part must already be longer.
fn cut_keeps_the_longer(
    first_cut: Option<usize>,
    first_len: usize,
    second_cut: Option<usize>,
    second_len: usize,
) -> bool {
    match (first_cut, second_cut) {
        (None, None) => true,
        (Some(_), None) => first_len > second_len,
        (None, Some(_)) => second_len > first_len,
        (Some(_), Some(_)) => false,
    }
}

/// Checks `tokenizer.json` against [`crate::tokenizer_bounds`], then parses it with the
/// `tokenizers` library.
pub(crate) fn parse_tokenizer_json(
    path: &Path,
    bytes: &[u8],
) -> Result<(tokenizers::Tokenizer, TextGrowth)> {
    let json_error = |source| TokenizeError::Json {
        path: path.to_path_buf(),
        source,
    };
    let invalid = |message: String| TokenizeError::InvalidTokenizer {
        path: path.to_path_buf(),
        message,
    };
    // Plain JSON first (the file size is capped), so that nothing the `tokenizers` library
    // would allocate or loop over is taken on trust.
    let json: serde_json::Value = serde_json::from_slice(bytes).map_err(json_error)?;
    let growth =
        check_tokenizer_json(&json).map_err(|violation| TokenizeError::TokenizerBounds {
            path: path.to_path_buf(),
            violation,
        })?;
    drop(json);
    // `tokenizers::Tokenizer::from_bytes` is this same serde_json call; made here, its error
    // keeps the line and column, and tells broken JSON from JSON that is not a tokenizer.
    let parsed = catch_quietly(|| serde_json::from_slice::<tokenizers::Tokenizer>(bytes))
        .map_err(|payload| invalid(panic_message("reading tokenizer.json", payload.as_ref())))?;
    match parsed {
        Ok(tokenizer) => Ok((tokenizer, growth)),
        Err(source) if source.is_data() => Err(invalid(source.to_string())),
        Err(source) => Err(json_error(source)),
    }
}

/// Transformers' PreTrainedTokenizerFast.__init__ registers the tokens of
/// `added_tokens_decoder` and the special tokens with the backend tokenizer when it does not
/// know them as added tokens yet, so that they are never split.
fn tokens_to_register(inner: &tokenizers::Tokenizer, config: &TokenizerConfig) -> Vec<AddedToken> {
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
    to_add
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
