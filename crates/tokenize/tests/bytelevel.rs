//! A tiny byte-level BPE tokenizer (GPT-2 regex `Split` pre-tokenizer, RoBERTa post-processor
//! with `trim_offsets`, left padding, `model_max_length` sentinel, `AddedToken` objects, and
//! file-naming keys that must be ignored) against Python Transformers. Tokenizer and expected
//! values: tests/data/bytelevel/ and tests/data/bytelevel_expected.json, made by
//! scripts/make_tokenize_fixtures.py.

#[macro_use]
mod common;

use common::{bytelevel, data_dir};
use safeformers_tokenize::{EncodeOptions, Padding, Side};

golden_cases!(bytelevel, "bytelevel_expected.json", {
    pads_left_to_longest_not_to_the_files_fixed_64 => "padding_longest",
    no_padding_by_default => "no_padding",
    truncates_at_8 => "truncation_8",
    truncates_at_256_not_at_the_files_50 => "truncation_256",
    pads_to_multiple_of_8 => "pad_to_multiple_of_8",
    pads_to_max_length => "padding_max_length",
    without_special_tokens => "no_special_tokens",
    empty_string => "empty",
    unicode_bytes => "unicode",
    pairs_longest_first => "pairs_longest_first",
    pairs_only_second => "pairs_only_second",
    pairs_only_second_with_stride_and_overflow => "pairs_only_second_overflow",
    trims_offsets_of_leading_spaces => "leading_spaces",
});

#[test]
fn every_golden_case_is_tested() {
    let cases = expected()["cases"].as_array().unwrap();
    assert_eq!(
        cases.len(),
        13,
        "a new case in bytelevel_expected.json needs its test here"
    );
}

#[test]
fn config() {
    let t = bytelevel();
    // int(1e30) is Transformers' "no limit".
    assert_eq!(t.model_max_length(), None);
    assert_eq!(t.padding_side(), Side::Left);
    // bos_token is an AddedToken object in tokenizer_config.json.
    assert_eq!(t.special_tokens().bos.as_deref(), Some("<s>"));
    assert_eq!(
        (t.bos_token_id(), t.pad_token_id(), t.eos_token_id()),
        (Some(0), Some(1), Some(2))
    );
    assert_eq!((t.unk_token_id(), t.mask_token_id()), (Some(3), Some(4)));
    assert_eq!(t.all_special_ids(), [0, 2, 3, 1, 4]);
    assert_eq!(
        t.chat_template(),
        Some("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    );
    assert_eq!(
        t.config().tokenizer_class.as_deref(),
        Some("PreTrainedTokenizerFast")
    );
    assert_eq!(t.config().added_tokens_decoder.len(), 5);
    // `tokenizer_file: /etc/passwd` in the config is ignored: this is our own file.
    assert_eq!(t.path(), data_dir().join("bytelevel/tokenizer.json"));
}

#[test]
fn max_length_padding_needs_a_length_when_the_model_has_none() {
    let options = EncodeOptions {
        padding: Padding::MaxLength,
        ..Default::default()
    };
    let err = bytelevel().encode("hi", &options).unwrap_err();
    assert!(err.to_string().contains("max length"), "{err}");
}

#[test]
fn special_token_text_in_the_input_is_one_token() {
    let batch = bytelevel()
        .encode("a <mask> b", &EncodeOptions::default())
        .unwrap();
    assert!(
        batch.rows[0].input_ids.contains(&4),
        "{:?}",
        batch.rows[0].tokens
    );
}

#[test]
fn byte_level_tokens_to_string_and_no_subword_prefix() {
    // Byte-level BPE marks word starts (`Ġ`), not continuations: no prefix; the decoder maps
    // `Ġ` back to a space.
    let tokenizer = bytelevel();
    assert_eq!(tokenizer.continuing_subword_prefix(), None);
    let text = tokenizer
        .convert_tokens_to_string(vec!["a".into(), "Ġb".into()])
        .unwrap();
    assert_eq!(text, "a b");
}
