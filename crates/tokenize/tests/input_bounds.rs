//! Every encode call is bounded before tokenizing: a long text is cut to what truncation (or a
//! token budget) keeps, giving the tokens the whole text gives; without truncation a text over
//! the byte cap is refused before any tokenization. Without these bounds a 10 MB text is
//! tokenized in full (about 20 s and 2.2 GB) before anything else happens.
#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use safeformers_tokenize::{
    DEFAULT_MAX_INPUT_BYTES, EncodeOptions, Side, TokenBudget, TokenizeError, Tokenizer,
    TokenizerOptions, TruncationStrategy,
};
use tokenizers::utils::truncation::{TruncationDirection, TruncationParams};

/// About 10 MB of varied English text, words separated by spaces.
fn ten_megabytes() -> String {
    let sentence = "The quick brown fox jumps over the lazy dog, and 42 hens said: \"hello!\" ";
    sentence.repeat(10_000_000 / sentence.len() + 1)
}

fn bytelevel_dir() -> std::path::PathBuf {
    common::data_dir().join("bytelevel")
}

/// The `tokenizers` library on its own, tokenizing the whole text (the reference).
fn reference(
    dir: &Path,
    max_length: Option<usize>,
    direction: TruncationDirection,
) -> tokenizers::Tokenizer {
    let mut tokenizer = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(max_length.map(|max_length| TruncationParams {
            max_length,
            direction,
            ..TruncationParams::default()
        }))
        .unwrap();
    tokenizer
}

/// A hang guard, not a timing assertion: without the bounds these take tens of seconds.
fn quick<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "{what} took {:?}",
        start.elapsed()
    );
    out
}

#[test]
fn a_10_mb_input_without_truncation_is_refused_before_tokenizing() {
    let tokenizer = Tokenizer::from_dir(&bytelevel_dir(), &TokenizerOptions::default()).unwrap();
    let text = ten_megabytes();
    let err = quick("refusing", || {
        tokenizer
            .encode(&text, &EncodeOptions::default())
            .unwrap_err()
    });
    match err {
        TokenizeError::InputTooLong {
            index: 0,
            length,
            limit,
            unit: "bytes",
            ..
        } => {
            assert_eq!(length, text.len());
            assert_eq!(limit, DEFAULT_MAX_INPUT_BYTES);
        }
        other => panic!("{other}"),
    }
    // Overflowing rows need the whole text: the same refusal.
    let overflow = EncodeOptions {
        truncation: Some(64),
        return_overflowing_tokens: true,
        ..EncodeOptions::default()
    };
    let err = tokenizer.encode(&text, &overflow).unwrap_err();
    assert!(matches!(err, TokenizeError::InputTooLong { .. }), "{err}");
}

#[test]
fn truncating_a_10_mb_input_cuts_it_first_and_gives_the_tokens_of_the_whole_text() {
    let dir = bytelevel_dir();
    let mut tokenizer = Tokenizer::from_dir(&dir, &TokenizerOptions::default()).unwrap();
    let text = ten_megabytes();
    let options = EncodeOptions {
        truncation: Some(128),
        ..EncodeOptions::default()
    };
    for side in [Side::Right, Side::Left] {
        tokenizer.set_truncation_side(side);
        let ours = quick("truncating", || tokenizer.encode(&text, &options).unwrap());
        let row = &ours.rows[0];
        assert_eq!(row.len(), 128);
        // The reference tokenizes a 200 kB end of the text (in full), which has the same first
        // (or last) 128 tokens as the whole text.
        let (part, skipped) = match side {
            Side::Right => (&text[..200_000], 0),
            Side::Left => (&text[text.len() - 200_000..], text.len() - 200_000),
        };
        let direction = match side {
            Side::Right => TruncationDirection::Right,
            Side::Left => TruncationDirection::Left,
        };
        let expected = reference(&dir, Some(128), direction)
            .encode_char_offsets(part, true)
            .unwrap();
        assert_eq!(row.input_ids, expected.get_ids(), "{side:?}");
        let shifted: Vec<(usize, usize)> = expected
            .get_offsets()
            .iter()
            .zip(expected.get_special_tokens_mask())
            .map(|(&(s, e), &special)| {
                if special == 1 {
                    (s, e)
                } else {
                    (s + skipped, e + skipped)
                }
            })
            .collect();
        assert_eq!(row.offsets, shifted, "{side:?}");
        // The offsets point into the whole text.
        let (start, end) = row.offsets[row.len() / 2];
        let piece: String = text.chars().skip(start).take(end - start).collect();
        assert!(
            row.tokens[row.len() / 2].ends_with(piece.trim_start()),
            "{side:?}"
        );
    }
}

#[test]
fn a_pair_is_cut_only_where_that_cannot_change_the_result() {
    let dir = bytelevel_dir();
    let tokenizer = Tokenizer::from_dir(&dir, &TokenizerOptions::default()).unwrap();
    let long = ten_megabytes();
    let long = &long[..100_000];
    let short = "How are you today, my friend?";
    let reference = reference(&dir, Some(64), TruncationDirection::Right);
    for strategy in [
        TruncationStrategy::LongestFirst,
        TruncationStrategy::OnlySecond,
    ] {
        let options = EncodeOptions {
            truncation: Some(64),
            truncation_strategy: strategy,
            ..EncodeOptions::default()
        };
        let ours = tokenizer
            .encode_pair_batch(&[(short, long)], &options)
            .unwrap();
        let expected = reference.encode_char_offsets((short, long), true).unwrap();
        assert_eq!(ours.rows[0].input_ids, expected.get_ids(), "{strategy:?}");
    }
    // Two long sequences: which one is longer decides the split, so both are tokenized whole
    // (within the byte cap).
    let options = EncodeOptions {
        truncation: Some(63),
        ..EncodeOptions::default()
    };
    let (one, other) = (&long[..8_000], &long[1_000..9_100]);
    let ours = tokenizer
        .encode_pair_batch(&[(one, other)], &options)
        .unwrap();
    let expected = self::reference(&dir, Some(63), TruncationDirection::Right)
        .encode_char_offsets((one, other), true)
        .unwrap();
    assert_eq!(ours.rows[0].input_ids, expected.get_ids());
}

#[test]
fn a_token_budget_reads_only_what_it_needs() {
    let dir = bytelevel_dir();
    let tokenizer = Tokenizer::from_dir(&dir, &TokenizerOptions::default()).unwrap();
    let text = ten_megabytes();
    let at_most = EncodeOptions {
        token_budget: Some(TokenBudget::AtMost(100)),
        ..EncodeOptions::default()
    };
    let err = quick("refusing", || {
        tokenizer.encode(&text, &at_most).unwrap_err()
    });
    match err {
        TokenizeError::TooManyTokens {
            budget: 100, found, ..
        } => assert!(found > 100),
        other => panic!("{other}"),
    }
    // A short text comes back whole, for the caller to check.
    let short = tokenizer.encode("Hello world", &at_most).unwrap();
    assert!(short.rows[0].len() <= 100);

    let keep_last = EncodeOptions {
        token_budget: Some(TokenBudget::KeepLast(100)),
        ..EncodeOptions::default()
    };
    let ours = quick("keeping the last tokens", || {
        tokenizer.encode(&text, &keep_last).unwrap()
    });
    let part = &text[text.len() - 100_000..];
    let expected = reference(&dir, None, TruncationDirection::Right)
        .encode_char_offsets(part, true)
        .unwrap();
    let ids = expected.get_ids();
    assert_eq!(ours.rows[0].input_ids, ids[ids.len() - 100..]);
}

#[test]
fn a_normalizer_that_drops_characters_makes_the_cut_fall_back_to_the_whole_text() {
    // BERT's normalizer drops control characters: a window of them holds no token at all, so
    // truncation cannot be applied before tokenizing. Within the byte cap the whole text is
    // tokenized (and the tokens are right); over it the input is refused, saying why.
    let dir = common::minilm_dir();
    let tokenizer = Tokenizer::from_dir(&dir, &TokenizerOptions::default()).unwrap();
    let options = EncodeOptions {
        truncation: Some(16),
        ..EncodeOptions::default()
    };
    let text = format!("{}hello world, this is the text", "\u{1}".repeat(200_000));
    let ours = tokenizer.encode(&text, &options).unwrap();
    let expected = reference(&dir, Some(16), TruncationDirection::Right)
        .encode_char_offsets(text.as_str(), true)
        .unwrap();
    assert_eq!(ours.rows[0].input_ids, expected.get_ids());
    assert!(ours.rows[0].tokens.contains(&"hello".to_owned()));

    let huge = format!("{}hello", "\u{1}".repeat(2_000_000));
    let err = tokenizer.encode(&huge, &options).unwrap_err();
    assert!(
        matches!(&err, TokenizeError::InputTooLong { why, .. } if why.contains("drops characters")),
        "{err}"
    );
}

#[test]
fn overflowing_rows_are_bounded() {
    // Both sequences of a pair overflow: every window of one pairs with every window of the
    // other, quadratic in the text.
    let tokenizer = Tokenizer::from_dir(&bytelevel_dir(), &TokenizerOptions::default()).unwrap();
    let long = ten_megabytes();
    let long = &long[..500_000];
    let options = EncodeOptions {
        truncation: Some(16),
        return_overflowing_tokens: true,
        ..EncodeOptions::default()
    };
    let err = quick("refusing", || {
        tokenizer
            .encode_pair_batch(&[(long, long)], &options)
            .unwrap_err()
    });
    assert!(err.to_string().contains("overflowing rows"), "{err}");
    // Without overflowing rows, a pair of long texts is fine.
    let options = EncodeOptions {
        truncation: Some(16),
        ..EncodeOptions::default()
    };
    let rows = quick("truncating", || {
        tokenizer
            .encode_pair_batch(&[(long, long)], &options)
            .unwrap()
    });
    assert_eq!(rows.rows[0].len(), 16);
}

#[test]
fn the_byte_cap_is_an_option() {
    let options = TokenizerOptions {
        max_input_bytes: 10,
        ..TokenizerOptions::default()
    };
    let tokenizer = Tokenizer::from_dir(&bytelevel_dir(), &options).unwrap();
    tokenizer
        .encode("short", &EncodeOptions::default())
        .unwrap();
    let err = tokenizer
        .encode("longer than ten bytes", &EncodeOptions::default())
        .unwrap_err();
    assert!(
        err.to_string().contains("21 bytes is more than the 10"),
        "{err}"
    );
}
