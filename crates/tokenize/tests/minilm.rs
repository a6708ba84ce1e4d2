//! all-MiniLM-L6-v2 (BERT WordPiece, lowercasing, accent stripping) against Python
//! Transformers. Expected values: tests/data/minilm_expected.json, made by
//! scripts/make_tokenize_fixtures.py. Needs SAFEFORMERS_MINILM_DIR (scripts/test.sh sets it).

#[macro_use]
mod common;

use common::{minilm, minilm_dir, open};
use safeformers_tokenize::{EncodeOptions, Padding, Side, Tokenizer, TokenizerOptions};

golden_cases!(minilm, "minilm_expected.json", {
    pads_to_longest_in_batch_not_to_the_files_fixed_128 => "padding_longest",
    no_padding_by_default => "no_padding",
    truncates_at_8 => "truncation_8",
    truncates_at_256 => "truncation_256",
    pads_to_multiple_of_8 => "pad_to_multiple_of_8",
    pads_to_max_length => "padding_max_length",
    without_special_tokens => "no_special_tokens",
    empty_string => "empty",
    unicode_lowercasing_and_accent_stripping => "unicode",
    pairs_longest_first => "pairs_longest_first",
    pairs_only_second => "pairs_only_second",
    pairs_only_second_with_stride_and_overflow => "pairs_only_second_overflow",
});

#[test]
fn every_golden_case_is_tested() {
    let names: Vec<&str> = expected()["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names.len(),
        12,
        "a new case in minilm_expected.json needs its test here: {names:?}"
    );
}

#[test]
fn config_and_special_tokens() {
    let t = minilm();
    assert_eq!(t.model_max_length(), Some(512));
    assert_eq!(t.padding_side(), Side::Right);
    assert_eq!(t.pad_token_id(), Some(0));
    assert_eq!(t.unk_token_id(), Some(100));
    assert_eq!(t.cls_token_id(), Some(101));
    assert_eq!(t.sep_token_id(), Some(102));
    assert_eq!(t.mask_token_id(), Some(103));
    assert_eq!(t.bos_token_id(), None);
    assert_eq!(t.eos_token_id(), None);
    assert_eq!(t.vocab_size(), 30522);
    assert_eq!(t.token_to_id("hello"), Some(7592));
    assert_eq!(t.id_to_token(7592).as_deref(), Some("hello"));
    assert_eq!(t.id_to_token(u32::MAX), None);
    assert_eq!(t.num_special_tokens_to_add(false), 2);
    assert_eq!(t.num_special_tokens_to_add(true), 3);
    assert_eq!(t.chat_template(), None);
}

#[test]
fn the_files_own_padding_and_truncation_are_ignored() {
    // tokenizer.json says: pad to a fixed 128, truncate to 128. Transformers does neither.
    let batch = minilm()
        .encode("Hello world!", &EncodeOptions::default())
        .unwrap();
    assert_eq!(batch.rows[0].len(), 5);
    let long = "word ".repeat(300);
    let batch = minilm().encode(&long, &EncodeOptions::default()).unwrap();
    assert_eq!(batch.rows[0].len(), 302);
}

#[test]
fn hundred_thousand_characters() {
    let text = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. ".repeat(1800);
    assert!(text.len() > 100_000);
    let options = EncodeOptions {
        truncation: Some(512),
        ..Default::default()
    };
    let batch = minilm().encode(&text, &options).unwrap();
    assert_eq!(batch.rows[0].len(), 512);
    assert_eq!(batch.rows[0].input_ids.last(), Some(&102));
    // Without truncation, the caller gets every token (and no panic).
    let batch = minilm().encode(&text, &EncodeOptions::default()).unwrap();
    assert!(batch.rows[0].len() > 20_000);
    // Overflow windows cover the whole text.
    let options = EncodeOptions {
        truncation: Some(512),
        stride: 32,
        return_overflowing_tokens: true,
        padding: Padding::Longest,
        ..Default::default()
    };
    let batch = minilm().encode(&text, &options).unwrap();
    assert!(batch.len() > 40);
    assert_eq!(batch.uniform_len(), Some(512));
}

#[test]
fn left_padding_and_left_truncation() {
    let mut t = open(&minilm_dir());
    t.set_padding_side(Side::Left);
    t.set_truncation_side(Side::Left);
    let options = EncodeOptions {
        padding: Padding::Longest,
        truncation: Some(4),
        ..Default::default()
    };
    let batch = t
        .encode_batch(&["a", "one two three four"], &options)
        .unwrap();
    assert_eq!(batch.rows[0].input_ids, [0, 101, 1037, 102]);
    assert_eq!(batch.rows[0].attention_mask, [0, 1, 1, 1]);
    // Left truncation keeps the end: "three four".
    assert_eq!(batch.rows[1].tokens, ["[CLS]", "three", "four", "[SEP]"]);
}

#[test]
fn a_thread_pool_gives_the_same_rows() {
    let pooled = Tokenizer::from_dir(
        &minilm_dir(),
        &TokenizerOptions {
            threads: 2,
            ..Default::default()
        },
    )
    .unwrap();
    let texts: Vec<String> = (0..50)
        .map(|i| format!("sentence number {i} with some words"))
        .collect();
    let options = EncodeOptions {
        padding: Padding::Longest,
        ..Default::default()
    };
    assert_eq!(
        pooled.encode_batch(&texts, &options).unwrap(),
        minilm().encode_batch(&texts, &options).unwrap()
    );
}

#[test]
fn option_errors() {
    let t = minilm();
    let err = |o: EncodeOptions| {
        t.encode_pair_batch(&[("a question", "a context")], &o)
            .unwrap_err()
            .to_string()
    };
    // 3 special tokens leave no room in 3.
    assert!(
        err(EncodeOptions {
            truncation: Some(3),
            ..Default::default()
        })
        .contains("special tokens")
    );
    // The question alone does not fit with only_second.
    let o = EncodeOptions {
        truncation: Some(5),
        truncation_strategy: safeformers_tokenize::TruncationStrategy::OnlySecond,
        ..Default::default()
    };
    assert!(err(o).contains("only_second"));
    // A stride as long as the window would make the tokenizers library panic: refused.
    let o = EncodeOptions {
        truncation: Some(6),
        stride: 3,
        ..Default::default()
    };
    assert!(err(o).contains("stride"));
    let o = EncodeOptions {
        pad_to_multiple_of: Some(0),
        padding: Padding::Longest,
        ..Default::default()
    };
    assert!(err(o).contains("pad_to_multiple_of"));
    // only_second on a single sequence that needs truncating.
    let o = EncodeOptions {
        truncation: Some(3),
        truncation_strategy: safeformers_tokenize::TruncationStrategy::OnlySecond,
        ..Default::default()
    };
    assert!(t.encode("one two three four", &o).is_err());
    // An empty batch is fine.
    assert!(
        t.encode_batch::<&str>(&[], &EncodeOptions::default())
            .unwrap()
            .is_empty()
    );
}

#[test]
fn tokens_to_string_and_subword_prefix() {
    // Transformers: tokenizer.convert_tokens_to_string(["hello", "world", "##s"]) == "hello worlds"
    let tokenizer = minilm();
    assert_eq!(tokenizer.continuing_subword_prefix(), Some("##"));
    let text = tokenizer
        .convert_tokens_to_string(vec!["hello".into(), "world".into(), "##s".into()])
        .unwrap();
    assert_eq!(text, "hello worlds");
}
