//! How much of a text an encode call tokenizes.
//!
//! Tokenizing costs time and memory in proportion to the text (about 200 bytes per input byte
//! for a real tokenizer, times the normalizer's growth for a hostile one), and Transformers'
//! truncation only happens after the whole text is tokenized. So every encode call is bounded
//! before the `tokenizers` library sees the text:
//!
//! - when only the first (or last) `L` tokens can matter (truncation without overflowing rows,
//!   or a [`crate::TokenBudget`]), the text is cut to a window of characters that holds more
//!   than `L` tokens: the window allows [`CUT_MARGIN_TOKENS`] more than `L`, each as long
//!   as the longest token of the vocabulary, and doubles that so the cut can move back to a
//!   whitespace;
//! - whatever is tokenized, cut or not, must fit [`crate::TokenizerOptions::max_input_bytes`]
//!   and [`MAX_NORMALIZED_CHARS`] once grown by the tokenizer's worst-case normalizer growth.
//!
//! Why a cut does not change the tokens kept: a token covers at most as many characters of the
//! text as its own string has (normalizers that grow text only make that fewer; byte-level
//! tokens have one character per byte; WordPiece's `##` and byte-fallback `<0x41>` only make a
//! token's string longer than what it covers). A normalizer can *remove* characters (control
//! characters, accents, runs of spaces), and then a window holds fewer tokens than that: the
//! tokenizer therefore counts the tokens of the cut text and only uses it when they are at least
//! `L` + [`CUT_MARGIN_TOKENS`]; otherwise the whole text is tokenized, within the bounds above.
//! The kept tokens are then at least [`CUT_MARGIN_TOKENS`] tokens away from the cut, which sits
//! on a whitespace when the window has one, so the words they come from are whole. Pre-tokenizers
//! split at whitespace, and models tokenize each piece alone, so those tokens are the ones the
//! whole text gives. (A text with no whitespace in the window relies on the margin alone: BPE
//! merges and Unigram's best path are local in practice, not provably.)

use crate::config::Side;

/// Default for [`crate::TokenizerOptions::max_input_bytes`]: 1 MiB, about 250,000 tokens of
/// English text, more than the context window of most models.
pub const DEFAULT_MAX_INPUT_BYTES: usize = 1 << 20;

/// Most characters a text may grow to through the normalizer and pre-tokenizer, at their
/// worst-case growth (see [`crate::tokenizer_bounds::MAX_TEXT_GROWTH`]): a longer input is
/// refused before it is tokenized. 16 Mi characters take about 1 GiB in the `tokenizers`
/// library's normalized strings (alignments of 16 bytes per byte).
pub const MAX_NORMALIZED_CHARS: f64 = 16.0 * 1024.0 * 1024.0;

/// Tokens a cut text must have beyond those kept (see the module documentation).
pub const CUT_MARGIN_TOKENS: usize = 64;

/// Characters of text that hold at least `keep_tokens` + [`CUT_MARGIN_TOKENS`] tokens when no
/// character is removed, twice over (the cut may move back by half the window to a whitespace).
pub(crate) fn window_chars(keep_tokens: usize, max_token_chars: usize) -> usize {
    keep_tokens
        .saturating_add(CUT_MARGIN_TOKENS)
        .saturating_mul(max_token_chars.max(1))
        .saturating_mul(2)
}

/// The part of a text that is tokenized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cut<'t> {
    /// The kept text.
    pub text: &'t str,
    /// Characters dropped before it (for offsets into the whole text).
    pub skipped_chars: usize,
}

/// Keeps about `window` characters of `text` on `side` (its start for [`Side::Right`]
/// truncation, which drops the end; its end for [`Side::Left`]), moved to a whitespace within
/// the half of the window nearest the cut when there is one, so that no word is split; at least
/// half the window is kept. `None` when the text is not longer than the window.
pub(crate) fn cut_text(text: &str, window: usize, side: Side) -> Option<Cut<'_>> {
    match side {
        Side::Right => {
            let (end, _) = text.char_indices().nth(window)?;
            let (half, _) = text.char_indices().nth(window / 2)?;
            let end = text
                .get(half..end)
                .and_then(|tail| tail.rfind(char::is_whitespace))
                .map_or(end, |at| half + at);
            Some(Cut {
                text: text.get(..end)?,
                skipped_chars: 0,
            })
        }
        Side::Left => {
            let total = text.chars().count();
            let skip = total.checked_sub(window).filter(|&n| n > 0)?;
            let (start, _) = text.char_indices().nth(skip)?;
            let (half, _) = text.char_indices().nth(skip + window / 2)?;
            let start = text
                .get(start..half)
                .and_then(|head| head.find(char::is_whitespace))
                .map_or(start, |at| start + at);
            let kept = text.get(start..)?;
            Some(Cut {
                text: kept,
                skipped_chars: total - kept.chars().count(),
            })
        }
    }
}

/// The longest input, in characters, that stays under [`MAX_NORMALIZED_CHARS`] when grown
/// `growth` times.
pub(crate) fn max_input_chars(growth: f64) -> usize {
    (MAX_NORMALIZED_CHARS / growth.max(1.0)) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_within_the_window_is_not_cut() {
        assert_eq!(cut_text("abc def", 7, Side::Right), None);
        assert_eq!(cut_text("abc def", 7, Side::Left), None);
    }

    #[test]
    fn the_cut_moves_to_a_whitespace_near_it() {
        let text = "aaaa bbbb cccc dddd";
        let right = cut_text(text, 12, Side::Right).unwrap();
        assert_eq!(right.text, "aaaa bbbb");
        let left = cut_text(text, 12, Side::Left).unwrap();
        assert_eq!(left.text, " cccc dddd");
        assert_eq!(left.skipped_chars, 9);
    }

    #[test]
    fn without_whitespace_the_cut_is_at_the_window() {
        let text = "é".repeat(30);
        let right = cut_text(&text, 10, Side::Right).unwrap();
        assert_eq!(right.text.chars().count(), 10);
        let left = cut_text(&text, 10, Side::Left).unwrap();
        assert_eq!(left.text.chars().count(), 10);
        assert_eq!(left.skipped_chars, 20);
    }
}
