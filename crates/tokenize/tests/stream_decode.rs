//! `StreamDecoder`: the chunks of a stream add up to `decode(all)`, for byte-level BPE,
//! byte-fallback BPE with Metaspace (SentencePiece style), Unigram with Metaspace and WordPiece,
//! over random id sequences and over encoded text; chunks of real text never hold a broken
//! character.
#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use safeformers_testkit::repo_root as repo;
use safeformers_tokenize::{EncodeOptions, Tokenizer, TokenizerOptions};

/// Tokenizer folders of every decoder family we have fixtures for.
fn tokenizers() -> Vec<(&'static str, Tokenizer)> {
    [
        (
            "byte-level BPE (RoBERTa style)",
            "crates/tokenize/tests/data/bytelevel",
        ),
        (
            "byte-level BPE (GPT-2 style)",
            "tests/fixtures/chat-templates/gpt2-style/from-tokenizer-json",
        ),
        (
            "byte-fallback BPE + Metaspace (Llama style)",
            "tests/fixtures/chat-templates/llama-style/from-tokenizer-json",
        ),
        (
            "Unigram + Metaspace (XLM-R)",
            "tests/fixtures/models/xlm-roberta",
        ),
        ("WordPiece (BERT)", "tests/fixtures/models/bert"),
    ]
    .into_iter()
    .map(|(name, dir)| {
        let tokenizer = Tokenizer::from_dir(&repo().join(dir), &TokenizerOptions::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        (name, tokenizer)
    })
    .collect()
}

/// Streams `ids` and returns the chunks.
fn stream(tokenizer: &Tokenizer, ids: &[u32], skip_special_tokens: bool) -> Vec<String> {
    let mut decoder = tokenizer.stream_decoder(skip_special_tokens);
    let mut chunks = Vec::new();
    for &id in ids {
        if let Some(chunk) = decoder.push(id).unwrap() {
            chunks.push(chunk);
        }
    }
    if let Some(chunk) = decoder.finish().unwrap() {
        chunks.push(chunk);
    }
    chunks
}

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn random_sequences_stream_to_the_full_decode() {
    let mut rng = Rng(0x5EED_CAFE_F00D_1234);
    for (name, tokenizer) in tokenizers() {
        let vocab = tokenizer.vocab_size();
        let mut checked = 0;
        for round in 0..300 {
            let len = rng.below(40);
            let ids: Vec<u32> = (0..len).map(|_| rng.below(vocab) as u32).collect();
            for skip in [true, false] {
                let full = tokenizer.decode(&ids, skip).unwrap();
                let chunks = stream(&tokenizer, &ids, skip);
                assert_eq!(
                    chunks.concat(),
                    full,
                    "{name}, round {round}, skip_special_tokens={skip}, ids {ids:?}, chunks {chunks:?}"
                );
                assert!(chunks.iter().all(|c| !c.is_empty()), "{name}: empty chunk");
                checked += 1;
            }
        }
        assert_eq!(checked, 600);
    }
}

#[test]
fn encoded_text_streams_whole_characters() {
    let texts = [
        "Hello world! The quick brown fox jumps over the lazy dog.",
        "Grüße aus Köln, 你好, and emoji 🙂 too.",
        "Chat templates turn messages into prompts. 🙂🙂 naïve café — ok?",
        "  leading spaces, trailing spaces  ",
    ];
    for (name, tokenizer) in tokenizers() {
        for text in texts {
            let ids = tokenizer
                .encode(text, &EncodeOptions::default())
                .unwrap()
                .rows[0]
                .input_ids
                .clone();
            for skip in [true, false] {
                let full = tokenizer.decode(&ids, skip).unwrap();
                let chunks = stream(&tokenizer, &ids, skip);
                assert_eq!(chunks.concat(), full, "{name}: {text:?} skip={skip}");
                if !full.contains('\u{FFFD}') {
                    assert!(
                        chunks.iter().all(|c| !c.contains('\u{FFFD}')),
                        "{name}: a chunk split a character: {chunks:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn multibyte_characters_are_held_back_until_complete() {
    // Byte-fallback: "🙂" as its four <0x..> pieces (how a SentencePiece vocabulary spells a
    // character it lacks); nothing is emitted until the character is complete.
    let dir = repo().join("tests/fixtures/chat-templates/llama-style/from-tokenizer-json");
    let tokenizer = Tokenizer::from_dir(&dir, &TokenizerOptions::default()).unwrap();
    let bytes: Vec<u32> = "🙂"
        .bytes()
        .map(|b| tokenizer.token_to_id(&format!("<0x{b:02X}>")).unwrap())
        .collect();
    let mut decoder = tokenizer.stream_decoder(true);
    let h = tokenizer.token_to_id("H").unwrap();
    assert_eq!(decoder.push(h).unwrap().as_deref(), Some("H"));
    for &id in &bytes {
        assert_eq!(decoder.push(id).unwrap(), None);
    }
    let after = tokenizer.token_to_id("a").unwrap();
    assert_eq!(decoder.push(after).unwrap().as_deref(), Some("🙂a"));
    assert_eq!(decoder.finish().unwrap(), None);

    // Byte-level BPE: a character split over two pieces of the byte alphabet.
    let dir = repo().join("tests/fixtures/chat-templates/gpt2-style/from-tokenizer-json");
    let tokenizer = Tokenizer::from_dir(&dir, &TokenizerOptions::default()).unwrap();
    // "ö" is 0xC3 0xB6: in the byte-level alphabet, 'Ã' (U+00C3) and '¶' (U+00B6).
    let first = tokenizer.token_to_id("Ã").unwrap();
    let second = tokenizer.token_to_id("¶").unwrap();
    let mut decoder = tokenizer.stream_decoder(true);
    assert_eq!(decoder.push(first).unwrap(), None);
    assert_eq!(decoder.push(second).unwrap().as_deref(), Some("ö"));
    // An incomplete character at the end is flushed as Transformers decodes it.
    assert_eq!(decoder.push(first).unwrap(), None);
    assert_eq!(decoder.finish().unwrap().as_deref(), Some("\u{FFFD}"));
}
