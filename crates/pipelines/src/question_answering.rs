//! `question-answering` (extractive), as Transformers 4.57's `QuestionAnsweringPipeline` (the
//! pipeline was removed in Transformers 5; `tests/fixtures/models/pipelines.json` holds 4.57.6's
//! answers).
//!
//! The steps, in Transformers' order:
//!
//! 1. The pair `(question, context)` is tokenized with `only_second` truncation to `max_seq_len`
//!    tokens, keeping the overflow as further windows that overlap by `doc_stride` tokens.
//! 2. In every window, positions outside the context (question, special tokens) except the
//!    `cls` token get the logit -10000, then start and end logits each go through a softmax over
//!    the whole window. The null score (`cls` start × `cls` end) is kept for
//!    `handle_impossible_answer`, then position 0 is zeroed.
//! 3. Spans `start ≤ end < start + max_answer_len` are scored `p_start × p_end`; the best
//!    `2·top_k + 10` of them (Transformers draws that many because aligning to words may merge
//!    some) whose ends are both in the context (or `cls`) are kept.
//! 4. Each span is widened to whole words (the words of its first and last tokens, as
//!    `token_to_word` / `word_to_chars` find them) and read from the context by character
//!    offsets. Spans with the same text (compared lowercased), in any window, add their scores.
//! 5. The answers of all windows are sorted by score (stable) and the first `top_k` kept.
//!
//! Where numpy's choice is unspecified — the order of spans with exactly equal scores, which
//! only matters when a window has fewer than `2·top_k + 10` spans with a non-zero score — spans
//! are taken by position, and only spans with `start ≤ end` are considered.

use std::collections::BTreeMap;
use std::path::Path;

use safeformers_models::{Architecture, Head, ModelOutput};
use safeformers_tokenize::{EncodeOptions, Encoding, Encodings, Side, TruncationStrategy};
use serde::Serialize;

use crate::encoder::{Encoder, LoadOptions, softmax};
use crate::error::{PipelineError, Result};

/// The logit Transformers gives positions that cannot be part of an answer.
const MASKED_LOGIT: f32 = -10000.0;

/// Transformers' cap on the window length when the caller gives none.
const DEFAULT_MAX_SEQ_LEN: usize = 384;

/// Transformers' cap on the window overlap when the caller gives none.
const DEFAULT_DOC_STRIDE: usize = 128;

/// One answer: a span of the context and its score.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Answer {
    /// `p_start × p_end`, summed over spans (and windows) that read as the same text.
    pub score: f64,
    /// First character of the answer in the context (Unicode scalar values).
    pub start: usize,
    /// One past its last character.
    pub end: usize,
    /// The answer: `context[start..end]`.
    pub answer: String,
}

/// Options of [`QuestionAnswering::run`], with Transformers' defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuestionAnsweringOptions {
    /// The longest answer, in tokens (default 15).
    pub max_answer_len: usize,
    /// Tokens shared by consecutive windows of a long context (default: half of
    /// `max_seq_len`, at most 128).
    pub doc_stride: Option<usize>,
    /// Tokens per window, special tokens and question included (default: the model's maximum
    /// length, at most 384).
    pub max_seq_len: Option<usize>,
    /// Accepted for parity with Transformers, whose fast-tokenizer path (the only one here)
    /// ignores it: a question too long to leave room for the context is an error instead.
    pub max_question_len: usize,
    /// Also offer the empty answer, scored by the `cls` token (default false).
    pub handle_impossible_answer: bool,
    /// Widen spans to whole words (default true, as Transformers' `align_to_words`).
    pub align_to_words: bool,
    /// The longest context accepted, in characters (not a Transformers option: a bound on the
    /// work one call can ask for). Default 1,000,000.
    pub max_context_chars: usize,
}

impl Default for QuestionAnsweringOptions {
    fn default() -> Self {
        QuestionAnsweringOptions {
            max_answer_len: 15,
            doc_stride: None,
            max_seq_len: None,
            max_question_len: 64,
            handle_impossible_answer: false,
            align_to_words: true,
            max_context_chars: 1_000_000,
        }
    }
}

/// The question-answering pipeline.
#[derive(Debug)]
pub struct QuestionAnswering {
    encoder: Encoder,
    batch_size: usize,
}

/// A span of one window: token positions and score.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: usize,
    end: usize,
    score: f32,
}

/// What one window contributes: its spans, best first, and its null score.
#[derive(Debug, Default)]
struct WindowSpans {
    spans: Vec<Span>,
    null_score: f32,
}

impl QuestionAnswering {
    /// Loads a question-answering model and its tokenizer from `dir`. `batch_size` is the
    /// number of windows per forward pass.
    pub fn from_dir(
        dir: &Path,
        options: &LoadOptions,
        batch_size: usize,
    ) -> Result<QuestionAnswering> {
        let encoder = Encoder::load(dir, Head::QuestionAnswering, options)?;
        Ok(QuestionAnswering {
            encoder,
            batch_size: batch_size.max(1),
        })
    }

    /// The tokenizer and model.
    pub fn encoder(&self) -> &Encoder {
        &self.encoder
    }

    /// The best `top_k` answers to each `(question, context)` pair, best first, in input order.
    /// Fewer come back when the context has fewer distinct spans.
    pub fn run<Q: AsRef<str> + Sync, C: AsRef<str> + Sync>(
        &self,
        inputs: &[(Q, C)],
        top_k: usize,
        options: &QuestionAnsweringOptions,
    ) -> Result<Vec<Vec<Answer>>> {
        let (max_seq_len, doc_stride) = self.check(inputs, top_k, options)?;
        if inputs.is_empty() {
            return Ok(Vec::new());
        }
        // Transformers puts the question first unless the tokenizer pads on the left.
        let question_first = self.encoder.tokenizer().padding_side() == Side::Right;
        let encodings = self.encode_windows(inputs, max_seq_len, doc_stride, question_first)?;
        let rows = &encodings.rows;
        let pre_top_k = if options.align_to_words {
            top_k.saturating_mul(2).saturating_add(10)
        } else {
            top_k
        };
        let windows = self.score_windows(rows, question_first, pre_top_k, options)?;
        let mut results = collect_answers(inputs, rows, &windows, question_first, options);
        for answers in &mut results {
            // Python's `sorted(..., reverse=True)` is stable.
            answers.sort_by(|a, b| b.score.total_cmp(&a.score));
            answers.truncate(top_k);
        }
        Ok(results)
    }

    /// Every `(question, context)` pair as windows of at most `max_seq_len` tokens, the context
    /// overlapping by `doc_stride`.
    fn encode_windows<Q: AsRef<str> + Sync, C: AsRef<str> + Sync>(
        &self,
        inputs: &[(Q, C)],
        max_seq_len: usize,
        doc_stride: usize,
        question_first: bool,
    ) -> Result<Encodings> {
        let encode_options = EncodeOptions {
            truncation: Some(max_seq_len),
            truncation_strategy: if question_first {
                TruncationStrategy::OnlySecond
            } else {
                TruncationStrategy::OnlyFirst
            },
            stride: doc_stride,
            return_overflowing_tokens: true,
            ..EncodeOptions::default()
        };
        let encodings = if question_first {
            self.encoder
                .tokenizer()
                .encode_pair_batch(inputs, &encode_options)?
        } else {
            let swapped: Vec<(&str, &str)> = inputs
                .iter()
                .map(|(q, c)| (c.as_ref(), q.as_ref()))
                .collect();
            self.encoder
                .tokenizer()
                .encode_pair_batch(&swapped, &encode_options)?
        };
        let mut encodings = encodings;
        if matches!(
            self.encoder.model().architecture(),
            Architecture::Roberta | Architecture::XlmRoberta
        ) {
            // Their tokenizers give the model no `token_type_ids` (Transformers'
            // `model_input_names`), so it sees zeros; the `tokenizers` library still marks
            // overflow windows of the context with 1, which their one-row type embedding lacks.
            for row in &mut encodings.rows {
                row.token_type_ids.iter_mut().for_each(|id| *id = 0);
            }
        }
        Ok(encodings)
    }

    /// The best spans of every window. Windows are not padded (Transformers runs them one by
    /// one): batches are made of windows of one length.
    fn score_windows(
        &self,
        rows: &[Encoding],
        question_first: bool,
        pre_top_k: usize,
        options: &QuestionAnsweringOptions,
    ) -> Result<Vec<WindowSpans>> {
        let mut by_length: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (index, row) in rows.iter().enumerate() {
            by_length.entry(row.len()).or_default().push(index);
        }
        let mut windows: Vec<WindowSpans> = rows.iter().map(|_| WindowSpans::default()).collect();
        for indices in by_length.values() {
            for chunk in indices.chunks(self.batch_size) {
                let batch: Vec<&Encoding> = chunk.iter().filter_map(|&i| rows.get(i)).collect();
                let output = self.encoder.forward(&batch)?;
                let ModelOutput::QuestionAnswering {
                    start_logits,
                    end_logits,
                } = output
                else {
                    return Err(self.encoder.wrong_output("start_logits and end_logits"));
                };
                let starts = start_logits.to_vec2::<f32>()?;
                let ends = end_logits.to_vec2::<f32>()?;
                for (((&index, row), start), end) in chunk.iter().zip(&batch).zip(starts).zip(ends)
                {
                    if let Some(slot) = windows.get_mut(index) {
                        *slot = self.window_spans(
                            row,
                            &start,
                            &end,
                            question_first,
                            pre_top_k,
                            options,
                        );
                    }
                }
            }
        }
        Ok(windows)
    }

    /// Validates the call; gives `(max_seq_len, doc_stride)`.
    fn check<Q: AsRef<str>, C: AsRef<str>>(
        &self,
        inputs: &[(Q, C)],
        top_k: usize,
        options: &QuestionAnsweringOptions,
    ) -> Result<(usize, usize)> {
        let invalid = |message: String| Err(PipelineError::InvalidInput(message));
        if top_k == 0 {
            return invalid("top_k must be at least 1".into());
        }
        if options.max_answer_len == 0 {
            return invalid("max_answer_len must be at least 1".into());
        }
        for (index, (question, context)) in inputs.iter().enumerate() {
            // As Transformers' argument handler: "`question` cannot be empty".
            if question.as_ref().is_empty() {
                return invalid(format!("input {index}: the question is empty"));
            }
            if context.as_ref().is_empty() {
                return invalid(format!("input {index}: the context is empty"));
            }
            let chars = context.as_ref().chars().count();
            if chars > options.max_context_chars {
                return invalid(format!(
                    "input {index}: the context has {chars} characters, more than the limit of {}",
                    options.max_context_chars
                ));
            }
        }
        let model_max = self.encoder.max_length();
        let max_seq_len = options
            .max_seq_len
            .unwrap_or(model_max.min(DEFAULT_MAX_SEQ_LEN));
        if max_seq_len == 0 || max_seq_len > model_max {
            return invalid(format!(
                "max_seq_len {max_seq_len} is outside 1..={model_max} (what {} can take)",
                self.encoder.dir().display()
            ));
        }
        let doc_stride = options
            .doc_stride
            .unwrap_or((max_seq_len / 2).min(DEFAULT_DOC_STRIDE));
        if doc_stride > max_seq_len {
            return invalid(format!(
                "doc_stride ({doc_stride}) is larger than max_seq_len ({max_seq_len})"
            ));
        }
        Ok((max_seq_len, doc_stride))
    }

    /// Transformers' `select_starts_ends` and `decode_spans` on one window.
    fn window_spans(
        &self,
        row: &Encoding,
        start_logits: &[f32],
        end_logits: &[f32],
        question_first: bool,
        pre_top_k: usize,
        options: &QuestionAnsweringOptions,
    ) -> WindowSpans {
        let cls = self.encoder.tokenizer().cls_token_id();
        // `p_mask` inverted: the context, and any `cls` token (some models answer "no answer"
        // there). With the context first Transformers masks nothing, and neither do we.
        let desired: Vec<bool> = (0..row.len())
            .map(|i| {
                let in_context = !question_first
                    || row.sequence_ids.get(i).copied().flatten() == Some(1)
                    || (cls.is_some() && row.input_ids.get(i).copied() == cls);
                in_context && row.attention_mask.get(i).is_some_and(|&m| m != 0)
            })
            .collect();
        let masked = |logits: &[f32]| -> Vec<f32> {
            logits
                .iter()
                .zip(&desired)
                .map(|(&logit, &keep)| if keep { logit } else { MASKED_LOGIT })
                .collect()
        };
        let mut start = softmax(&masked(start_logits));
        let mut end = softmax(&masked(end_logits));
        let null_score = match (start.first_mut(), end.first_mut()) {
            (Some(s), Some(e)) => {
                let null = *s * *e;
                *s = 0.0;
                *e = 0.0;
                null
            }
            _ => 0.0,
        };
        let mut spans = Vec::new();
        for (i, (&p_start, &start_ok)) in start.iter().zip(&desired).enumerate() {
            if !start_ok {
                continue;
            }
            let last = i.saturating_add(options.max_answer_len);
            for (j, (&p_end, &end_ok)) in end.iter().zip(&desired).enumerate().take(last).skip(i) {
                if end_ok {
                    spans.push(Span {
                        start: i,
                        end: j,
                        score: p_start * p_end,
                    });
                }
            }
        }
        // Best first; equal scores by position (stable sort over row-major order).
        spans.sort_by(|a, b| b.score.total_cmp(&a.score));
        spans.truncate(pre_top_k);
        WindowSpans { spans, null_score }
    }
}

/// Transformers' `get_indices`: the characters of the words holding the span's first and last
/// tokens, or the tokens' own offsets when a token has no word (`cls`) or alignment is off.
fn char_span(row: &Encoding, span: &Span, sequence: usize, align_to_words: bool) -> (usize, usize) {
    let offsets = |i: usize| row.offsets.get(i).copied().unwrap_or((0, 0));
    let by_tokens = (offsets(span.start).0, offsets(span.end).1);
    if !align_to_words {
        return by_tokens;
    }
    let word_chars = |token: usize| -> Option<(usize, usize)> {
        let word = row.word_ids.get(token).copied().flatten()?;
        let tokens: Vec<usize> = (0..row.len())
            .filter(|&i| {
                row.sequence_ids.get(i).copied().flatten() == Some(sequence)
                    && row.word_ids.get(i).copied().flatten() == Some(word)
            })
            .collect();
        Some((offsets(*tokens.first()?).0, offsets(*tokens.last()?).1))
    };
    match (word_chars(span.start), word_chars(span.end)) {
        (Some((start, _)), Some((_, end))) => (start, end),
        _ => by_tokens,
    }
}
/// The answers of each input from the spans of its windows: the same text (ignoring case) adds
/// up, as Transformers' `get_answer` does; with `handle_impossible_answer`, the empty answer
/// scored by the best null score. Unsorted.
fn collect_answers<Q: AsRef<str>, C: AsRef<str>>(
    inputs: &[(Q, C)],
    rows: &[Encoding],
    windows: &[WindowSpans],
    question_first: bool,
    options: &QuestionAnsweringOptions,
) -> Vec<Vec<Answer>> {
    let mut results: Vec<Vec<Answer>> = vec![Vec::new(); inputs.len()];
    let mut null_scores: Vec<f64> = vec![1_000_000.0; inputs.len()];
    let context_index = usize::from(question_first);
    for (row, window) in rows.iter().zip(windows) {
        let sample = row.sample_index;
        let Some((_, context)) = inputs.get(sample) else {
            continue;
        };
        let context: Vec<char> = context.as_ref().chars().collect();
        if let Some(null) = null_scores.get_mut(sample) {
            *null = null.min(f64::from(window.null_score));
        }
        let Some(answers) = results.get_mut(sample) else {
            continue;
        };
        for span in &window.spans {
            let (start, end) = char_span(row, span, context_index, options.align_to_words);
            let text: String = context
                .get(start.min(context.len())..end.min(context.len()))
                .map(|chars| chars.iter().collect())
                .unwrap_or_default();
            let lowered = text.to_lowercase();
            // Transformers' `get_answer`: the same text (ignoring case) adds up.
            match answers
                .iter_mut()
                .find(|answer| answer.answer.to_lowercase() == lowered)
            {
                Some(answer) => answer.score += f64::from(span.score),
                None => answers.push(Answer {
                    score: f64::from(span.score),
                    start,
                    end,
                    answer: text,
                }),
            }
        }
    }
    for (answers, null) in results.iter_mut().zip(null_scores) {
        if options.handle_impossible_answer {
            answers.push(Answer {
                score: null,
                start: 0,
                end: 0,
                answer: String::new(),
            });
        }
    }
    results
}
