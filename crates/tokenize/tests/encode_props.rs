//! Random text and options through encode never panic, and every row is consistent: all
//! fields of one length, truncation and padding lengths respected, offsets inside the text.
#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

mod common;

use proptest::prelude::*;
use safeformers_tokenize::{EncodeOptions, Encodings, Padding, Tokenizer, TruncationStrategy};

use common::{bytelevel, minilm};

fn options() -> impl Strategy<Value = EncodeOptions> {
    (
        any::<bool>(),
        prop_oneof![
            Just(Padding::None),
            Just(Padding::Longest),
            Just(Padding::MaxLength)
        ],
        proptest::option::of(0usize..40),
        prop_oneof![
            Just(TruncationStrategy::LongestFirst),
            Just(TruncationStrategy::OnlyFirst),
            Just(TruncationStrategy::OnlySecond)
        ],
        0usize..6,
        any::<bool>(),
        proptest::option::of(0usize..9),
    )
        .prop_map(
            |(add, padding, truncation, strategy, stride, overflow, multiple)| EncodeOptions {
                add_special_tokens: add,
                padding,
                truncation,
                truncation_strategy: strategy,
                stride,
                return_overflowing_tokens: overflow,
                pad_to_multiple_of: multiple,
                token_budget: None,
            },
        )
}

/// Text with the characters tokenizers find hard: accents, CJK, emoji, controls, combining
/// marks, whitespace runs, special-token lookalikes.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "\\PC{0,60}",
        proptest::collection::vec(
            prop_oneof![
                Just("[CLS]".to_string()),
                Just("<s>".to_string()),
                Just("<mask>".to_string()),
                Just(" ".to_string()),
                Just("\u{0301}".to_string()),
                Just("\u{0}".to_string()),
                Just("\u{200b}".to_string()),
                "[a-zé日😀 ]{1,5}",
            ],
            0..20
        )
        .prop_map(|parts| parts.concat()),
    ]
}

fn check(texts: &[(String, String)], pairs: bool, batch: &Encodings, options: &EncodeOptions) {
    let mut padded_len = None;
    for row in batch {
        let n = row.len();
        assert_eq!(row.attention_mask.len(), n);
        assert_eq!(row.token_type_ids.len(), n);
        assert_eq!(row.special_tokens_mask.len(), n);
        assert_eq!(row.offsets.len(), n);
        assert_eq!(row.word_ids.len(), n);
        assert_eq!(row.sequence_ids.len(), n);
        assert_eq!(row.tokens.len(), n);
        let real = row.attention_mask.iter().filter(|&&m| m == 1).count();
        if let Some(max) = options.truncation {
            assert!(real <= max, "{real} real tokens > {max}");
        }
        if options.padding != Padding::None {
            assert_eq!(
                *padded_len.get_or_insert(n),
                n,
                "rows of different lengths after padding"
            );
            if let Some(m) = options.pad_to_multiple_of {
                assert_eq!(n % m, 0);
            }
        }
        let (first, second) = &texts[row.sample_index];
        for ((start, end), seq) in row.offsets.iter().zip(&row.sequence_ids) {
            let source = if pairs && *seq == Some(1) {
                second
            } else {
                first
            };
            assert!(
                start <= end && *end <= source.chars().count(),
                "offset ({start}, {end}) in {source:?}"
            );
        }
    }
}

fn run(tokenizer: &Tokenizer, texts: &[(String, String)], pairs: bool, options: &EncodeOptions) {
    let result = if pairs {
        tokenizer.encode_pair_batch(texts, options)
    } else {
        let firsts: Vec<&str> = texts.iter().map(|(a, _)| a.as_str()).collect();
        tokenizer.encode_batch(&firsts, options)
    };
    // Errors are fine (options that cannot be honoured); panics and bad rows are not.
    if let Ok(batch) = result {
        if !options.return_overflowing_tokens {
            assert_eq!(batch.len(), texts.len());
        }
        check(texts, pairs, &batch, options);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn minilm_never_panics(texts in proptest::collection::vec((text(), text()), 0..4), pairs: bool, options in options()) {
        run(minilm(), &texts, pairs, &options);
    }

    #[test]
    fn bytelevel_never_panics(texts in proptest::collection::vec((text(), text()), 0..4), pairs: bool, options in options()) {
        run(bytelevel(), &texts, pairs, &options);
    }

    #[test]
    fn decode_never_panics(ids in proptest::collection::vec(any::<u32>(), 0..50), skip: bool) {
        let _ = minilm().decode(&ids, skip);
        let _ = bytelevel().decode(&ids, skip);
    }
}

/// The case the proptest found: a pair whose overflowing windows came out one token longer than
/// `max_length` (the special tokens of both sequences leave less room than one token of each).
/// Now refused with a typed error, never a row longer than asked.
#[test]
fn pair_overflow_rows_never_exceed_max_length() {
    let texts = [("A".to_string(), "𐤿".to_string())];
    let options = EncodeOptions {
        truncation: Some(5),
        truncation_strategy: TruncationStrategy::LongestFirst,
        return_overflowing_tokens: true,
        ..EncodeOptions::default()
    };
    run(bytelevel(), &texts, true, &options);
}
