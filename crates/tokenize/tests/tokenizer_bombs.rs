//! Tokenizer bombs: a `tokenizer.json` whose content makes the `tokenizers` library allocate or
//! loop without bound is refused before the library sees it, with an error naming the file and
//! the field; real tokenizers still load. Without the pre-validation each of these loads (and
//! the charsmap one aborts the whole process: "memory allocation of 8589934584 bytes failed").
#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use safeformers_tokenize::tokenizer_bounds::{
    MAX_CHAIN_DEPTH, MAX_TEXT_GROWTH, MAX_WORDPIECE_CHARS_PER_WORD,
};
use safeformers_tokenize::{
    BoundsViolation, EncodeOptions, TokenizeError, Tokenizer, TokenizerOptions,
};
use serde_json::{Value, json};

fn folder(name: &str) -> PathBuf {
    common::scratch_dir("tokenizer-bombs", name)
}

fn load(name: &str, tokenizer_json: &Value) -> Result<Tokenizer, TokenizeError> {
    let dir = folder(name);
    std::fs::write(dir.join("tokenizer.json"), tokenizer_json.to_string()).unwrap();
    Tokenizer::from_dir(&dir, &TokenizerOptions::default())
}

/// The violation of a refused tokenizer; anything else fails the test.
fn refused(name: &str, tokenizer_json: &Value) -> BoundsViolation {
    match load(name, tokenizer_json) {
        Err(TokenizeError::TokenizerBounds { path, violation }) => {
            assert!(path.ends_with("tokenizer.json"), "{}", path.display());
            violation
        }
        Err(other) => panic!("{name}: expected a bounds refusal, got: {other}"),
        Ok(_) => panic!("{name}: the hostile tokenizer was loaded"),
    }
}

/// A small valid WordPiece tokenizer, to be made hostile.
fn word_piece() -> Value {
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [{"id": 0, "content": "[UNK]", "single_word": false, "lstrip": false,
                          "rstrip": false, "normalized": false, "special": true}],
        "normalizer": null,
        "pre_tokenizer": {"type": "WhitespaceSplit"},
        "post_processor": null,
        "decoder": null,
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100,
                  "vocab": {"[UNK]": 0, "a": 1, "b": 2, "##a": 3, "##b": 4, "ab": 5}}
    })
}

fn with(mut base: Value, key: &str, value: Value) -> Value {
    base[key] = value;
    base
}

fn replace(pattern: &str, content: &str) -> Value {
    json!({"type": "Replace", "pattern": {"String": pattern}, "content": content})
}

/// A precompiled charsmap with one-byte keys, laid out as sentencepiece (darts-clone) writes
/// it: the root's children at `256 ^ byte`, each leaf value at `(256 + byte) ^ 512`.
fn charsmap(entries: &[(u8, &str)]) -> Vec<u8> {
    let mut trie = vec![0u32; 1024];
    trie[0] = 256 << 10;
    let mut strings = Vec::new();
    for &(byte, replacement) in entries {
        let byte = usize::from(byte);
        trie[256 + byte] = (512 << 10) | (1 << 8) | byte as u32;
        trie[768 + byte] = (1 << 31) | strings.len() as u32;
        strings.extend_from_slice(replacement.as_bytes());
        strings.push(0);
    }
    let mut blob = ((trie.len() * 4) as u32).to_le_bytes().to_vec();
    blob.extend(trie.iter().flat_map(|unit| unit.to_le_bytes()));
    blob.extend(strings);
    blob
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let word = chunk
            .iter()
            .enumerate()
            .fold(0u32, |w, (i, &b)| w | (u32::from(b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(word >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn precompiled(blob: &[u8]) -> Value {
    json!({"type": "Precompiled", "precompiled_charsmap": base64(blob)})
}

#[test]
fn a_charsmap_whose_header_claims_8_gb_is_refused() {
    // Without the check: "memory allocation of 8589934584 bytes failed", and the process aborts.
    let mut blob = u32::MAX.to_le_bytes().to_vec();
    blob.extend_from_slice(&[0; 16]);
    let violation = refused(
        "charsmap-8gb",
        &with(word_piece(), "normalizer", precompiled(&blob)),
    );
    assert_eq!(violation.field, "normalizer.precompiled_charsmap");
    assert!(
        violation.problem.contains("4294967295 bytes"),
        "{violation}"
    );
}

#[test]
fn a_charsmap_pointing_outside_itself_is_refused() {
    let mut outside = charsmap(&[(b'A', "a")]);
    // The root's children 100,000 units away, in a trie of 1,024.
    outside[4..8].copy_from_slice(&(100_000u32 << 10).to_le_bytes());
    let violation = refused(
        "charsmap-outside",
        &with(word_piece(), "normalizer", precompiled(&outside)),
    );
    assert!(
        violation.problem.contains("past its 1024 units"),
        "{violation}"
    );

    let mut past_strings = charsmap(&[(b'A', "a")]);
    let leaf = 4 + (768 + usize::from(b'A')) * 4;
    past_strings[leaf..leaf + 4].copy_from_slice(&((1u32 << 31) | 9999).to_le_bytes());
    let violation = refused(
        "charsmap-past-strings",
        &with(word_piece(), "normalizer", precompiled(&past_strings)),
    );
    assert!(
        violation.problem.contains("outside its 2 bytes"),
        "{violation}"
    );

    // An entry starting inside the two bytes of "é".
    let mut mid_char = charsmap(&[(b'A', "é")]);
    mid_char[leaf..leaf + 4].copy_from_slice(&((1u32 << 31) | 1).to_le_bytes());
    refused(
        "charsmap-mid-char",
        &with(word_piece(), "normalizer", precompiled(&mid_char)),
    );
}

#[test]
fn a_charsmap_that_grows_text_too_much_is_refused_and_a_sane_one_works() {
    let long = "a".repeat(2000);
    let violation = refused(
        "charsmap-growth",
        &with(
            word_piece(),
            "normalizer",
            precompiled(&charsmap(&[(b'A', &long)])),
        ),
    );
    assert_eq!(violation.field, "normalizer");
    assert!(violation.problem.contains("2000 times"), "{violation}");

    let sane = with(
        word_piece(),
        "normalizer",
        precompiled(&charsmap(&[(b'A', "a"), (b'B', "b")])),
    );
    let tokenizer = load("charsmap-sane", &sane).unwrap();
    let row = &tokenizer
        .encode("AB b", &EncodeOptions::default())
        .unwrap()
        .rows[0];
    assert_eq!(row.tokens, ["ab", "b"]);
}

#[test]
fn twenty_chained_replace_normalizers_are_refused() {
    // Without the check: 2,000 characters become 2 billion, and memory runs out.
    let chain: Vec<Value> = (0..20).map(|_| replace("a", "aa")).collect();
    let bomb = with(
        word_piece(),
        "normalizer",
        json!({"type": "Sequence", "normalizers": chain}),
    );
    let violation = refused("replace-chain", &bomb);
    assert_eq!(violation.field, "normalizer");
    assert!(violation.problem.contains("1048576 times"), "{violation}");
    // The same through a regex, and through the pre-tokenizer and the decoder.
    let regex: Vec<Value> = (0..12)
        .map(|_| json!({"type": "Replace", "pattern": {"Regex": "a"}, "content": "aa"}))
        .collect();
    refused(
        "replace-regex-chain",
        &with(
            word_piece(),
            "normalizer",
            json!({"type": "Sequence", "normalizers": regex}),
        ),
    );
    let byte_levels: Vec<Value> = (0..6)
        .map(|_| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}))
        .collect();
    let violation = refused(
        "byte-level-chain",
        &with(
            word_piece(),
            "pre_tokenizer",
            json!({"type": "Sequence", "pretokenizers": byte_levels}),
        ),
    );
    assert!(
        violation.problem.contains(&format!("{MAX_TEXT_GROWTH}")),
        "{violation}"
    );
    let decoders: Vec<Value> = (0..7).map(|_| replace("a", "aa")).collect();
    let violation = refused(
        "decoder-chain",
        &with(
            word_piece(),
            "decoder",
            json!({"type": "Sequence", "decoders": decoders}),
        ),
    );
    assert_eq!(violation.field, "decoder");
}

#[test]
fn a_few_replacements_that_do_not_compound_still_load() {
    // Llama's sentencepiece-style normalizer, and an ALBERT-style chain.
    let llama = json!({"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": "▁"}, replace(" ", "▁")]});
    load("llama-normalizer", &with(word_piece(), "normalizer", llama)).unwrap();
    let albert = json!({"type": "Sequence", "normalizers": [
        replace("``", "\""), replace("''", "\""), {"type": "NFKD"}, {"type": "StripAccents"},
        {"type": "Lowercase"}, precompiled(&charsmap(&[(b'A', "a")])),
        {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}]});
    let albert = with(
        with(word_piece(), "normalizer", albert),
        "pre_tokenizer",
        json!({"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true}),
    );
    load("albert-normalizer", &albert).unwrap();
}

#[test]
fn a_huge_wordpiece_word_limit_is_refused() {
    // Without the check, one word of 10,000 characters takes about 36 s (cubic).
    let mut bomb = word_piece();
    bomb["model"]["max_input_chars_per_word"] = json!(1_000_000_000u64);
    let violation = refused("wordpiece-limit", &bomb);
    assert_eq!(violation.field, "model.max_input_chars_per_word");

    // At the cap, a long word is quick (it becomes [UNK] without being searched).
    let mut capped = word_piece();
    capped["model"]["max_input_chars_per_word"] = json!(MAX_WORDPIECE_CHARS_PER_WORD);
    let tokenizer = load("wordpiece-capped", &capped).unwrap();
    let start = Instant::now();
    let word = "ab".repeat(5_000);
    let row = &tokenizer
        .encode(&word, &EncodeOptions::default())
        .unwrap()
        .rows[0];
    assert_eq!(row.tokens, ["[UNK]"]);
    assert!(start.elapsed() < Duration::from_secs(20), "hang guard");
}

#[test]
fn other_superlinear_knobs_are_refused() {
    let mut prefix = word_piece();
    prefix["model"]["continuing_subword_prefix"] = json!("#".repeat(10_000));
    assert_eq!(
        refused("long-prefix", &prefix).field,
        "model.continuing_subword_prefix"
    );

    let unigram = with(
        word_piece(),
        "model",
        json!({"type": "Unigram", "unk_id": 0, "vocab": [["<unk>", 0.0], ["a".repeat(300), -1.0]]}),
    );
    assert_eq!(
        refused("unigram-long-piece", &unigram).field,
        "model.vocab[1]"
    );

    let fixed = with(
        word_piece(),
        "pre_tokenizer",
        json!({"type": "FixedLength", "length": 0}),
    );
    assert_eq!(
        refused("fixed-length-0", &fixed).field,
        "pre_tokenizer.length"
    );

    let strip = with(
        word_piece(),
        "decoder",
        json!({"type": "Strip", "content": " ", "start": 0, "stop": 1u64 << 40}),
    );
    assert_eq!(refused("strip-huge", &strip).field, "decoder.stop");
}

#[test]
fn counts_ids_and_post_processor_tokens_are_bounded() {
    let mut id = word_piece();
    id["model"]["vocab"]["b"] = json!(1u64 << 40);
    refused("huge-id", &id);
    let mut added = word_piece();
    added["added_tokens"][0]["id"] = json!(1u64 << 33);
    assert_eq!(refused("huge-added-id", &added).field, "added_tokens[0].id");

    // A template adding 5,000 tokens to every input.
    let ids: Vec<u32> = vec![1; 5_000];
    let tokens: Vec<&str> = vec!["a"; 5_000];
    let template = json!({
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "X", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"X": {"id": "X", "ids": ids, "tokens": tokens}}
    });
    let violation = refused(
        "template-bomb",
        &with(word_piece(), "post_processor", template),
    );
    assert!(
        violation.problem.contains("5000 special tokens"),
        "{violation}"
    );
}

#[test]
fn added_tokens_that_normalization_would_blow_up_at_load_are_refused() {
    // Each added token is normalized when the tokenizer is loaded: 100,000 characters grown 500
    // times would be 50 million characters before a single input is seen.
    let mut bomb = with(word_piece(), "normalizer", replace("a", &"a".repeat(500)));
    bomb["added_tokens"][0]["content"] = json!("a".repeat(100_000));
    bomb["added_tokens"][0]["normalized"] = json!(true);
    let violation = refused("added-token-growth", &bomb);
    assert_eq!(violation.field, "added_tokens");
}

#[test]
fn deep_and_long_chains_are_refused() {
    let mut nested = json!({"type": "Lowercase"});
    for _ in 0..=MAX_CHAIN_DEPTH {
        nested = json!({"type": "Sequence", "normalizers": [nested]});
    }
    let violation = refused("deep-chain", &with(word_piece(), "normalizer", nested));
    assert!(violation.problem.contains("nests more than"), "{violation}");
    let long: Vec<Value> = (0..40).map(|_| json!({"type": "Lowercase"})).collect();
    let violation = refused(
        "long-chain",
        &with(
            word_piece(),
            "normalizer",
            json!({"type": "Sequence", "normalizers": long}),
        ),
    );
    assert!(
        violation.problem.contains("more than 32 steps"),
        "{violation}"
    );
    // A normalizer the walk cannot classify is refused rather than trusted.
    let untyped = with(word_piece(), "normalizer", json!({"normalizers": []}));
    assert!(refused("untyped", &untyped).problem.contains("`type`"));
}

#[test]
fn every_fixture_tokenizer_passes_the_checks() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
    let mut seen = 0;
    let mut stack = vec![root];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n == "tokenizer.json") {
                let json: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
                if let Err(violation) = safeformers_tokenize::check_tokenizer_json(&json) {
                    panic!("{}: {violation}", path.display());
                }
                seen += 1;
            }
        }
    }
    assert!(seen >= 10, "only {seen} fixture tokenizers found");
}
