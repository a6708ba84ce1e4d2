//! What to encode with ([`EncodeOptions`]) and what comes out ([`Encoding`], [`Encodings`]):
//! the fields of Transformers' `BatchEncoding`, one row per sequence.

use crate::config::Side;

/// How a batch is padded. Transformers' `padding=` argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Padding {
    /// No padding (`padding=False`, Transformers' default): rows keep their own lengths, even
    /// if `tokenizer.json` carries a `padding` section of its own.
    #[default]
    None,
    /// Pad every row to the longest in the batch (`padding=True` / `"longest"`).
    Longest,
    /// Pad every row to `truncation` if set, else to the model's `model_max_length`
    /// (`padding="max_length"`, where Transformers' `max_length` also serves both).
    MaxLength,
}

/// Which sequence of a pair loses tokens when it is too long. Transformers' `truncation=`
/// strategies. For a single sequence they all truncate that sequence, except
/// [`TruncationStrategy::OnlySecond`], which is an error when a single sequence is too long
/// (as with Transformers' fast tokenizers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TruncationStrategy {
    /// Remove from the longer of the two, token by token (`truncation=True` / `"longest_first"`).
    #[default]
    LongestFirst,
    /// Remove from the first only (`"only_first"`).
    OnlyFirst,
    /// Remove from the second only (`"only_second"`: the context of a question-answering pair).
    OnlySecond,
}

impl TruncationStrategy {
    /// The name Transformers uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LongestFirst => "longest_first",
            Self::OnlyFirst => "only_first",
            Self::OnlySecond => "only_second",
        }
    }
}

/// A bound on the tokens of each row that a caller has a use for, which lets the tokenizer
/// stop reading a long text early (see [`EncodeOptions::token_budget`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenBudget {
    /// Rows longer than this many tokens (special tokens included) are of no use: a text so
    /// long that it certainly has more is refused with
    /// [`crate::TokenizeError::TooManyTokens`] after tokenizing only a part of it. A text that
    /// is tokenized in full comes back as it is, even when longer: the caller checks it (with
    /// its own message).
    AtMost(usize),
    /// Only the last this-many tokens of each row are kept (special tokens included), the
    /// others dropped from the start, as a decoder's prompt is cut to fit its context window.
    /// Only the end of a long text is tokenized.
    KeepLast(usize),
}

/// Options of one encode call, with Transformers' defaults (`EncodeOptions::default()` is
/// `tokenizer(texts)` in Python: special tokens, no padding, no truncation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodeOptions {
    /// Add the model's special tokens (`[CLS] .. [SEP]`, `<s> .. </s>`). Default true.
    pub add_special_tokens: bool,
    /// How to pad the batch. Default none.
    pub padding: Padding,
    /// Truncate to this many tokens, special tokens included (Transformers'
    /// `truncation=True, max_length=n`). Use `tokenizer.model_max_length()` for
    /// `truncation=True` without a `max_length`. Default none.
    pub truncation: Option<usize>,
    /// Which sequence of a pair to truncate.
    pub truncation_strategy: TruncationStrategy,
    /// Tokens repeated between consecutive overflow windows (Transformers' `stride`); must be
    /// smaller than the room left for the truncated sequence.
    pub stride: usize,
    /// Keep what truncation cut off as extra rows (`return_overflowing_tokens=True`), each
    /// row's [`Encoding::sample_index`] pointing at its input. Otherwise it is dropped.
    pub return_overflowing_tokens: bool,
    /// Round the padded length up to a multiple of this (only when padding).
    pub pad_to_multiple_of: Option<usize>,
    /// Tokens per row the caller has a use for, besides truncation. Default none.
    ///
    /// Every encode call is bounded: with truncation (and no overflowing rows) or a budget, a
    /// long text is cut before it is tokenized to what can matter; otherwise a text longer than
    /// [`crate::TokenizerOptions::max_input_bytes`] is refused before any tokenization.
    pub token_budget: Option<TokenBudget>,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        Self {
            add_special_tokens: true,
            padding: Padding::None,
            truncation: None,
            truncation_strategy: TruncationStrategy::LongestFirst,
            stride: 0,
            return_overflowing_tokens: false,
            pad_to_multiple_of: None,
            token_budget: None,
        }
    }
}

/// One encoded sequence (or pair): one row of Transformers' `BatchEncoding`. All vectors have
/// the same length.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Encoding {
    /// Token ids (`input_ids`).
    pub input_ids: Vec<u32>,
    /// 1 for real tokens, 0 for padding (`attention_mask`).
    pub attention_mask: Vec<u32>,
    /// Segment ids: 0 for the first sequence, 1 for the second where the model uses them
    /// (`token_type_ids`).
    pub token_type_ids: Vec<u32>,
    /// 1 for special and padding tokens, 0 for tokens of the text (`special_tokens_mask`).
    pub special_tokens_mask: Vec<u32>,
    /// `(start, end)` character offsets (Unicode scalar values, not bytes) into the sequence's
    /// own original text; `(0, 0)` for special and padding tokens (`offset_mapping`).
    pub offsets: Vec<(usize, usize)>,
    /// The word each token belongs to, `None` for special and padding tokens (`word_ids()`).
    pub word_ids: Vec<Option<u32>>,
    /// 0 or 1 for the sequence of a pair each token comes from, `None` for special and padding
    /// tokens (`sequence_ids()`).
    pub sequence_ids: Vec<Option<usize>>,
    /// The tokens as strings (`convert_ids_to_tokens(input_ids)`).
    pub tokens: Vec<String>,
    /// Index of the input this row came from: the row's own index unless overflowing rows
    /// were asked for (`overflow_to_sample_mapping`).
    pub sample_index: usize,
}

impl Encoding {
    /// Number of tokens, padding included.
    pub fn len(&self) -> usize {
        self.input_ids.len()
    }

    /// Whether there are no tokens at all (an empty text without special tokens).
    pub fn is_empty(&self) -> bool {
        self.input_ids.is_empty()
    }

    pub(crate) fn from_tokenizers(encoding: &tokenizers::Encoding, sample_index: usize) -> Self {
        Self {
            input_ids: encoding.get_ids().to_vec(),
            attention_mask: encoding.get_attention_mask().to_vec(),
            token_type_ids: encoding.get_type_ids().to_vec(),
            special_tokens_mask: encoding.get_special_tokens_mask().to_vec(),
            offsets: encoding.get_offsets().to_vec(),
            word_ids: encoding.get_word_ids().to_vec(),
            sequence_ids: encoding.get_sequence_ids(),
            tokens: encoding.get_tokens().to_vec(),
            sample_index,
        }
    }

    /// Drops tokens from the start so that at most `keep` remain.
    pub(crate) fn keep_last(&mut self, keep: usize) {
        let Some(cut) = self.len().checked_sub(keep).filter(|&n| n > 0) else {
            return;
        };
        self.input_ids.drain(..cut);
        self.attention_mask.drain(..cut);
        self.token_type_ids.drain(..cut);
        self.special_tokens_mask.drain(..cut);
        self.offsets.drain(..cut);
        self.word_ids.drain(..cut);
        self.sequence_ids.drain(..cut);
        self.tokens.drain(..cut);
    }

    /// Moves the offsets of the tokens of sequence `sequence` right by `chars`: that sequence
    /// was tokenized without its first `chars` characters.
    pub(crate) fn shift_offsets(&mut self, sequence: usize, chars: usize) {
        if chars == 0 {
            return;
        }
        for (offsets, seq) in self.offsets.iter_mut().zip(&self.sequence_ids) {
            if *seq == Some(sequence) {
                offsets.0 = offsets.0.saturating_add(chars);
                offsets.1 = offsets.1.saturating_add(chars);
            }
        }
    }

    /// Pads to `target` tokens on `side`, as the `tokenizers` library does.
    pub(crate) fn pad(
        &mut self,
        target: usize,
        pad_id: u32,
        pad_type_id: u32,
        pad_token: &str,
        side: Side,
    ) {
        let Some(n) = target.checked_sub(self.len()).filter(|&n| n > 0) else {
            return;
        };
        fn extend<T: Clone>(v: &mut Vec<T>, value: T, n: usize, side: Side) {
            match side {
                Side::Right => v.extend(std::iter::repeat_n(value, n)),
                Side::Left => {
                    v.splice(0..0, std::iter::repeat_n(value, n));
                }
            }
        }
        extend(&mut self.input_ids, pad_id, n, side);
        extend(&mut self.attention_mask, 0, n, side);
        extend(&mut self.token_type_ids, pad_type_id, n, side);
        extend(&mut self.special_tokens_mask, 1, n, side);
        extend(&mut self.offsets, (0, 0), n, side);
        extend(&mut self.word_ids, None, n, side);
        extend(&mut self.sequence_ids, None, n, side);
        extend(&mut self.tokens, pad_token.to_owned(), n, side);
    }
}

/// The rows of a batch, in input order (overflow rows right after the row they continue).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Encodings {
    /// One row per input, plus overflow rows when asked for.
    pub rows: Vec<Encoding>,
}

impl Encodings {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the batch has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The rows.
    pub fn iter(&self) -> std::slice::Iter<'_, Encoding> {
        self.rows.iter()
    }

    /// The common length of all rows (after padding), or `None` if they differ or there are
    /// no rows: when it is `Some`, the batch can be stacked into one `[rows, len]` tensor.
    pub fn uniform_len(&self) -> Option<usize> {
        let first = self.rows.first()?.len();
        self.rows.iter().all(|r| r.len() == first).then_some(first)
    }

    /// Transformers' `overflow_to_sample_mapping`: for each row, the input it came from.
    pub fn overflow_to_sample_mapping(&self) -> Vec<usize> {
        self.rows.iter().map(|r| r.sample_index).collect()
    }
}

impl<'a> IntoIterator for &'a Encodings {
    type Item = &'a Encoding;
    type IntoIter = std::slice::Iter<'a, Encoding>;
    fn into_iter(self) -> Self::IntoIter {
        self.rows.iter()
    }
}

impl IntoIterator for Encodings {
    type Item = Encoding;
    type IntoIter = std::vec::IntoIter<Encoding>;
    fn into_iter(self) -> Self::IntoIter {
        self.rows.into_iter()
    }
}
