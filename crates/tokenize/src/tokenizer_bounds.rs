//! Bounds a `tokenizer.json` must meet before the `tokenizers` library sees it.
//!
//! The `tokenizers` library allocates and loops as the file tells it to: a precompiled
//! charsmap whose header claims 8 GB is allocated (and aborts the process), twenty chained
//! `Replace a -> aa` normalizers turn a short text into gigabytes, a WordPiece model with a huge
//! `max_input_chars_per_word` is cubic in the length of a word. [`check_tokenizer_json`] walks
//! the file as plain JSON first and refuses, with the JSON path of the culprit:
//!
//! - sizes that do not fit the data present: a precompiled charsmap whose trie size exceeds its
//!   blob, or whose trie points outside itself or into the middle of a character of its
//!   replacement strings (the `tokenizers` library would index out of bounds on the first
//!   input that walks there);
//! - text pipelines that can blow up an input: the worst-case growth of a text through the
//!   normalizer and pre-tokenizer (and of a token through the decoder) is computed step by step
//!   (see [`Growth`]) and must stay under [`MAX_TEXT_GROWTH`] ([`MAX_DECODE_GROWTH`]); chains
//!   are at most [`MAX_CHAIN_STEPS`] steps and [`MAX_CHAIN_DEPTH`] nested `Sequence`s;
//! - per-word knobs that make the work superlinear: WordPiece's `max_input_chars_per_word`,
//!   Unigram piece lengths, subword prefixes and suffixes (copied into every candidate piece);
//! - counts: vocabulary entries, merges, added tokens, token ids, and tokens a post-processor
//!   adds to every sequence.
//!
//! The same walk yields [`TextGrowth`], which the tokenizer uses to bound its inputs.

use serde_json::{Map, Value};

/// Largest worst-case growth, in characters out per character in, of a text through the
/// normalizer and the pre-tokenizer (a per-piece constant, such as a prepended `▁`, counts as
/// one more character per input character, since a piece has at least one).
///
/// Real pipelines stay below: BERT's normalizer is 54 (Unicode normalization closure 18,
/// times 3 for the spaces around CJK characters), GPT-2's byte-level pre-tokenizer 5, Llama's
/// `Prepend` + `Replace` 2, T5's charsmap (sentencepiece's `nmt_nfkc`, whose longest entry is
/// the 18 characters of U+FDFA) with `Metaspace` 19; ALBERT's chain (two `Replace`, NFKD,
/// accents, lowercase, the same charsmap, a `Replace` regex, `Metaspace`) is the largest we
/// know, 325, because the charsmap is charged its own worst case after the Unicode steps.
/// Twenty chained `Replace a -> aa` are 1,048,576. How long an input may be is then scaled by
/// this growth (see [`crate::MAX_NORMALIZED_CHARS`]), so an allowed growth costs time and
/// memory in proportion, never more.
pub const MAX_TEXT_GROWTH: f64 = 1024.0;

/// Largest worst-case growth of a token's text through the decoder (characters out per
/// character in, plus what is added per token). Real decoders are at most 2 (WordPiece adds a
/// space per token).
pub const MAX_DECODE_GROWTH: f64 = 64.0;

/// Most steps in one normalizer, pre-tokenizer, decoder or post-processor chain (real ones
/// have at most 7).
pub const MAX_CHAIN_STEPS: usize = 32;

/// Most `Sequence`s nested in one another (real tokenizers nest at most 1).
pub const MAX_CHAIN_DEPTH: usize = 4;

/// Largest WordPiece `max_input_chars_per_word`: the model tries every substring of a word
/// (cubic work in its length); Transformers' default is 100.
pub const MAX_WORDPIECE_CHARS_PER_WORD: u64 = 200;

/// Longest Unigram piece, in characters: encoding walks the vocabulary trie this deep from
/// every position (sentencepiece's default `max_sentencepiece_length` is 16).
pub const MAX_UNIGRAM_PIECE_CHARS: usize = 256;

/// Longest continuing-subword prefix or end-of-word suffix, in bytes (real: `##`, `</w>`);
/// WordPiece copies it into every candidate substring.
pub const MAX_AFFIX_BYTES: usize = 64;

/// Most vocabulary entries (the largest real vocabularies have about 260,000).
pub const MAX_VOCAB_ENTRIES: usize = 1 << 22;

/// Most BPE merges.
pub const MAX_MERGES: usize = 1 << 22;

/// Most entries of `added_tokens`.
pub const MAX_ADDED_TOKENS: usize = 1 << 20;

/// Largest token id: ids size embedding tables and per-id arrays elsewhere.
pub const MAX_TOKEN_ID: u64 = (1 << 24) - 1;

/// Most special tokens a post-processor adds to one sequence or pair (real: 2 to 4).
pub const MAX_POST_PROCESSOR_TOKENS: usize = 1024;

/// Largest `start`/`stop` of a `Strip` decoder (real: 1).
pub const MAX_STRIP_CHARS: u64 = 1024;

/// How much a chain of Unicode normalizations and case mappings (NFC, NFD, NFKC, NFKD,
/// lowercase, accent stripping) can grow one character, in characters: U+FDFA decomposes into
/// 18 under NFKC/NFKD, and no sequence of these operations goes further (checked over every
/// code point with every sequence of up to four of them). A run of such steps with nothing
/// programmable in between is charged this once.
const UNICODE_CLOSURE_GROWTH: f64 = 18.0;

/// Chars out per char in of the byte-level mapping: one character per UTF-8 byte.
const BYTE_LEVEL_GROWTH: f64 = 4.0;

/// Key bytes the `tokenizers` library looks up in a precompiled charsmap: graphemes shorter than
/// 6 bytes, else single characters.
const CHARSMAP_MAX_KEY_BYTES: usize = 5;

/// Most units in a precompiled charsmap's trie (sentencepiece's `nmt_nfkc` map has 44,288):
/// checking the trie costs 255 look-ups per unit.
pub const MAX_CHARSMAP_TRIE_UNITS: usize = 1 << 18;

/// What is wrong with a `tokenizer.json`, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundsViolation {
    /// JSON path of the offending value (`normalizer.normalizers[3].content`).
    pub field: String,
    /// What is wrong with it.
    pub problem: String,
}

impl std::fmt::Display for BoundsViolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}`: {}", self.field, self.problem)
    }
}

type Checked<T> = std::result::Result<T, BoundsViolation>;

fn violation<T>(field: &str, problem: impl Into<String>) -> Checked<T> {
    Err(BoundsViolation {
        field: field.to_owned(),
        problem: problem.into(),
    })
}

/// Worst-case growth of a piece of text of `n` characters: at most `per_char * n + per_piece`
/// characters come out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Growth {
    /// Characters out per character in.
    pub per_char: f64,
    /// Characters added to every piece (a prepended `▁`, an inserted replacement).
    pub per_piece: f64,
}

impl Growth {
    /// Text comes out as it went in (or shorter).
    pub const IDENTITY: Growth = Growth {
        per_char: 1.0,
        per_piece: 0.0,
    };

    const fn scale(per_char: f64) -> Growth {
        Growth {
            per_char,
            per_piece: 0.0,
        }
    }

    /// This step followed by `next`.
    fn then(self, next: Growth) -> Growth {
        Growth {
            per_char: next.per_char * self.per_char,
            per_piece: next.per_char * self.per_piece + next.per_piece,
        }
    }

    /// Characters out per character in for a piece of at least one character.
    pub fn total(self) -> f64 {
        self.per_char + self.per_piece
    }
}

/// What [`check_tokenizer_json`] learned about a tokenizer that passed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TextGrowth {
    /// Worst-case growth of an input through the normalizer and the pre-tokenizer.
    pub input: Growth,
    /// Worst-case growth of a token's text through the decoder.
    pub decode: Growth,
}

/// Checks a `tokenizer.json` against the bounds of this module, before the `tokenizers` library
/// parses it. JSON that is not an object, or whose parts have unexpected shapes, is left to the
/// `tokenizers` library to refuse, except where a shape would hide a bound from this walk (a
/// normalizer without a known `type`, say), which is refused here.
pub fn check_tokenizer_json(json: &Value) -> Checked<TextGrowth> {
    let Some(root) = json.as_object() else {
        // Not a tokenizer at all: the `tokenizers` library says so.
        return Ok(TextGrowth {
            input: Growth::IDENTITY,
            decode: Growth::IDENTITY,
        });
    };
    let normalizer = match root.get("normalizer") {
        None | Some(Value::Null) => Growth::IDENTITY,
        Some(value) => Chain::new("normalizer").normalizer_growth(value, "normalizer", 0)?,
    };
    let pre_tokenizer = match root.get("pre_tokenizer") {
        None | Some(Value::Null) => Growth::IDENTITY,
        Some(value) => {
            Chain::new("pre_tokenizer").pre_tokenizer_growth(value, "pre_tokenizer", 0)?
        }
    };
    let input = normalizer.then(pre_tokenizer);
    if input.total() > MAX_TEXT_GROWTH {
        return violation(
            "normalizer",
            format!(
                "the normalizer and pre-tokenizer can grow a text {:.0} times (at most {MAX_TEXT_GROWTH} allowed)",
                input.total()
            ),
        );
    }
    let decode = match root.get("decoder") {
        None | Some(Value::Null) => Growth::IDENTITY,
        Some(value) => Chain::new("decoder").decoder_growth(value, "decoder", 0)?,
    };
    if decode.total() > MAX_DECODE_GROWTH {
        return violation(
            "decoder",
            format!(
                "the decoder can grow a token's text {:.0} times (at most {MAX_DECODE_GROWTH} allowed)",
                decode.total()
            ),
        );
    }
    if let Some(processor) = root.get("post_processor").filter(|v| !v.is_null()) {
        for pair in [false, true] {
            let added = Chain::new("post_processor").post_processor_tokens(
                processor,
                "post_processor",
                0,
                pair,
            )?;
            if added > MAX_POST_PROCESSOR_TOKENS {
                return violation(
                    "post_processor",
                    format!(
                        "adds {added} special tokens to every {} (at most {MAX_POST_PROCESSOR_TOKENS})",
                        if pair { "pair" } else { "sequence" }
                    ),
                );
            }
        }
    }
    if let Some(model) = root.get("model") {
        check_model(model)?;
    }
    if let Some(added) = root.get("added_tokens") {
        check_added_tokens(added, input)?;
    }
    Ok(TextGrowth { input, decode })
}

/// The `type` of a component, which must be a string for the walk to know what it is.
fn component_type<'v>(value: &'v Value, field: &str) -> Checked<(&'v Map<String, Value>, &'v str)> {
    let Some(object) = value.as_object() else {
        return violation(field, "not a JSON object");
    };
    match object.get("type").and_then(Value::as_str) {
        Some(kind) => Ok((object, kind)),
        None => violation(field, "has no `type` string"),
    }
}

fn str_field<'v>(object: &'v Map<String, Value>, key: &str) -> Option<&'v str> {
    object.get(key).and_then(Value::as_str)
}

fn chars_of(object: &Map<String, Value>, key: &str) -> f64 {
    str_field(object, key).map_or(0.0, |s| s.chars().count() as f64)
}

/// Counts the steps of one chain and tracks its nesting.
struct Chain {
    name: &'static str,
    steps: usize,
    /// Whether a programmable step came since the last Unicode normalization step (or the
    /// chain just started): the next Unicode step is then charged [`UNICODE_CLOSURE_GROWTH`].
    unicode_charged: bool,
}

impl Chain {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            steps: 0,
            unicode_charged: false,
        }
    }

    /// Counts one step at `depth`, refusing chains that are too long or too deep.
    fn step(&mut self, field: &str, depth: usize) -> Checked<()> {
        self.steps += 1;
        if self.steps > MAX_CHAIN_STEPS {
            return violation(
                field,
                format!("the {} has more than {MAX_CHAIN_STEPS} steps", self.name),
            );
        }
        if depth > MAX_CHAIN_DEPTH {
            return violation(
                field,
                format!(
                    "the {} nests more than {MAX_CHAIN_DEPTH} sequences",
                    self.name
                ),
            );
        }
        Ok(())
    }

    /// Growth of a list of steps (`normalizers`, `pretokenizers`, `decoders`), in order.
    fn sequence(
        &mut self,
        object: &Map<String, Value>,
        key: &str,
        field: &str,
        depth: usize,
        mut each: impl FnMut(&mut Self, &Value, &str, usize) -> Checked<Growth>,
    ) -> Checked<Growth> {
        let Some(items) = object.get(key).and_then(Value::as_array) else {
            return violation(field, format!("a Sequence needs a `{key}` list"));
        };
        let mut growth = Growth::IDENTITY;
        for (i, item) in items.iter().enumerate() {
            growth = growth.then(each(self, item, &format!("{field}.{key}[{i}]"), depth + 1)?);
        }
        Ok(growth)
    }

    /// A Unicode-defined step: charged [`UNICODE_CLOSURE_GROWTH`] when it is the first of a run.
    fn unicode_step(&mut self) -> Growth {
        if self.unicode_charged {
            Growth::IDENTITY
        } else {
            self.unicode_charged = true;
            Growth::scale(UNICODE_CLOSURE_GROWTH)
        }
    }

    /// A programmable step: what it writes can be grown again by later Unicode steps.
    fn programmable_step(&mut self, growth: Growth) -> Growth {
        self.unicode_charged = false;
        growth
    }

    fn normalizer_growth(&mut self, value: &Value, field: &str, depth: usize) -> Checked<Growth> {
        self.step(field, depth)?;
        let (object, kind) = component_type(value, field)?;
        Ok(match kind {
            "Sequence" => {
                return self.sequence(object, "normalizers", field, depth, |chain, item, f, d| {
                    chain.normalizer_growth(item, f, d)
                });
            }
            "NFC" | "NFD" | "NFKC" | "NFKD" | "Lowercase" | "StripAccents" | "Nmt" => {
                self.unicode_step()
            }
            // Removing characters never grows a text.
            "Strip" => Growth::IDENTITY,
            "BertNormalizer" | "Bert" => {
                let unicode = self.unicode_step();
                let chinese = object
                    .get("handle_chinese_chars")
                    .and_then(Value::as_bool)
                    .unwrap_or(true);
                if chinese {
                    // A space on each side of every CJK character.
                    unicode.then(self.programmable_step(Growth::scale(3.0)))
                } else {
                    unicode
                }
            }
            "Replace" => {
                let growth = replace_growth(object, field)?;
                self.programmable_step(growth)
            }
            "Prepend" => {
                let growth = Growth {
                    per_char: 1.0,
                    per_piece: chars_of(object, "prepend"),
                };
                self.programmable_step(growth)
            }
            "Precompiled" => {
                let growth = charsmap_growth(object, field)?;
                self.programmable_step(growth)
            }
            "ByteLevel" => self.programmable_step(Growth::scale(BYTE_LEVEL_GROWTH)),
            other => return violation(field, format!("unknown normalizer type {other:?}")),
        })
    }

    fn pre_tokenizer_growth(
        &mut self,
        value: &Value,
        field: &str,
        depth: usize,
    ) -> Checked<Growth> {
        self.step(field, depth)?;
        let (object, kind) = component_type(value, field)?;
        Ok(match kind {
            "Sequence" => {
                return self.sequence(
                    object,
                    "pretokenizers",
                    field,
                    depth,
                    |chain, item, f, d| chain.pre_tokenizer_growth(item, f, d),
                );
            }
            // They only split (or drop whitespace).
            "BertPreTokenizer" | "Whitespace" | "WhitespaceSplit" | "Punctuation" | "Digits"
            | "UnicodeScripts" | "Split" | "CharDelimiterSplit" | "Delimiter" => Growth::IDENTITY,
            "FixedLength" => {
                // A length of 0 makes the library panic (`chunks(0)`).
                if object.get("length").and_then(Value::as_u64) == Some(0) {
                    return violation(&format!("{field}.length"), "must be at least 1");
                }
                Growth::IDENTITY
            }
            // One character per byte, and a space before each piece.
            "ByteLevel" => Growth {
                per_char: BYTE_LEVEL_GROWTH,
                per_piece: 1.0,
            },
            // The replacement character for each space, and one before each piece.
            "Metaspace" => Growth {
                per_char: 1.0,
                per_piece: 1.0,
            },
            other => return violation(field, format!("unknown pre-tokenizer type {other:?}")),
        })
    }

    fn decoder_growth(&mut self, value: &Value, field: &str, depth: usize) -> Checked<Growth> {
        self.step(field, depth)?;
        let (object, kind) = component_type(value, field)?;
        Ok(match kind {
            "Sequence" => {
                return self.sequence(object, "decoders", field, depth, |chain, item, f, d| {
                    chain.decoder_growth(item, f, d)
                });
            }
            "ByteLevel" | "Fuse" | "ByteFallback" => Growth::IDENTITY,
            // A space per token at most (in place of a marker, or between words).
            "WordPiece" | "Metaspace" | "BPEDecoder" | "CTC" => {
                for key in ["prefix", "suffix"] {
                    check_affix(object, key, field)?;
                }
                Growth {
                    per_char: 1.0,
                    per_piece: 1.0,
                }
            }
            "Strip" => {
                for key in ["start", "stop"] {
                    if object
                        .get(key)
                        .and_then(Value::as_u64)
                        .is_some_and(|n| n > MAX_STRIP_CHARS)
                    {
                        return violation(
                            &format!("{field}.{key}"),
                            format!("more than {MAX_STRIP_CHARS}"),
                        );
                    }
                }
                Growth::IDENTITY
            }
            "Replace" => replace_growth(object, field)?,
            other => return violation(field, format!("unknown decoder type {other:?}")),
        })
    }

    /// Special tokens the post-processor adds to a sequence (or a pair).
    fn post_processor_tokens(
        &mut self,
        value: &Value,
        field: &str,
        depth: usize,
        pair: bool,
    ) -> Checked<usize> {
        self.step(field, depth)?;
        let (object, kind) = component_type(value, field)?;
        match kind {
            "Sequence" => {
                let Some(items) = object.get("processors").and_then(Value::as_array) else {
                    return violation(field, "a Sequence needs a `processors` list");
                };
                let mut total = 0usize;
                for (i, item) in items.iter().enumerate() {
                    let f = format!("{field}.processors[{i}]");
                    total = total.saturating_add(self.post_processor_tokens(
                        item,
                        &f,
                        depth + 1,
                        pair,
                    )?);
                }
                Ok(total)
            }
            "TemplateProcessing" => Ok(template_tokens(object, pair)),
            "BertProcessing" | "RobertaProcessing" => Ok(if pair { 4 } else { 2 }),
            "ByteLevel" => Ok(0),
            other => violation(field, format!("unknown post-processor type {other:?}")),
        }
    }
}

/// Special tokens a `TemplateProcessing` template adds: the ids of each special token it names.
fn template_tokens(object: &Map<String, Value>, pair: bool) -> usize {
    let template = object.get(if pair { "pair" } else { "single" });
    let special = object.get("special_tokens").and_then(Value::as_object);
    let ids_of = |name: &str| {
        special
            .and_then(|s| s.get(name))
            .and_then(|t| t.get("ids"))
            .and_then(Value::as_array)
            .map_or(0, Vec::len)
    };
    template.and_then(Value::as_array).map_or(0, |pieces| {
        pieces
            .iter()
            .filter_map(|piece| piece.get("SpecialToken"))
            .filter_map(|token| token.get("id").and_then(Value::as_str))
            .map(ids_of)
            .fold(0usize, usize::saturating_add)
    })
}

/// Growth of a `Replace` (normalizer or decoder): a literal pattern of `p` characters replaced
/// by `c` grows a text at most `max(1, c / p)` times; a regex (or an empty literal, which the
/// library also turns into a regex) that can match nothing may also insert `c` characters at
/// every position.
fn replace_growth(object: &Map<String, Value>, field: &str) -> Checked<Growth> {
    let content = chars_of(object, "content");
    let Some(pattern) = object.get("pattern").and_then(Value::as_object) else {
        return violation(
            &format!("{field}.pattern"),
            "must be {\"String\": ..} or {\"Regex\": ..}",
        );
    };
    let shortest_match = match (str_field(pattern, "String"), str_field(pattern, "Regex")) {
        (Some(literal), None) => literal.chars().count(),
        (None, Some(regex)) => regex_min_chars(regex),
        _ => {
            return violation(
                &format!("{field}.pattern"),
                "must be {\"String\": ..} or {\"Regex\": ..}",
            );
        }
    };
    Ok(if shortest_match == 0 {
        Growth {
            per_char: 1.0 + content,
            per_piece: content,
        }
    } else {
        Growth::scale((content / shortest_match as f64).max(1.0))
    })
}

/// The fewest characters a regex can match, or 0 when unknown (syntax `regex-syntax` does not
/// know, such as the look-arounds `fancy-regex` adds).
fn regex_min_chars(pattern: &str) -> usize {
    let mut parser = regex_syntax::ParserBuilder::new().nest_limit(64).build();
    parser.parse(pattern).ok().map_or(0, |hir| {
        // Bytes to characters: a character is at most 4 bytes.
        hir.properties().minimum_len().unwrap_or(0).div_ceil(4)
    })
}

fn check_affix(object: &Map<String, Value>, key: &str, field: &str) -> Checked<()> {
    if str_field(object, key).is_some_and(|s| s.len() > MAX_AFFIX_BYTES) {
        return violation(
            &format!("{field}.{key}"),
            format!("longer than {MAX_AFFIX_BYTES} bytes"),
        );
    }
    Ok(())
}

/// Growth of a `Precompiled` normalizer, after checking that its charsmap is consistent.
fn charsmap_growth(object: &Map<String, Value>, field: &str) -> Checked<Growth> {
    let field = format!("{field}.precompiled_charsmap");
    let Some(encoded) = str_field(object, "precompiled_charsmap") else {
        return violation(&field, "must be a base64 string");
    };
    let Some(blob) = decode_base64(encoded) else {
        return violation(&field, "is not valid base64");
    };
    let longest = check_charsmap(&blob).or_else(|problem| violation(&field, problem))?;
    Ok(Growth::scale((longest as f64).max(1.0)))
}

/// Checks a precompiled charsmap as the `tokenizers` library (its `spm_precompiled` crate) will
/// read it, and returns the most characters one of its entries can write.
///
/// Layout: a little-endian `u32` giving the trie's size in bytes, the trie (a double array of
/// little-endian `u32` units), then the replacement strings, each ending with a NUL byte.
/// A lookup starts at unit 0 and, for each key byte `c`, moves to `base ^ c`, reading that
/// unit before it checks the unit's label, so every `base` reachable with a key of up to
/// [`CHARSMAP_MAX_KEY_BYTES`] bytes must keep all 255 neighbours inside the array; a key that
/// ends on a leaf reads the unit at the next base, whose value is an offset into the strings
/// that must start a character.
fn check_charsmap(blob: &[u8]) -> std::result::Result<usize, String> {
    let (header, rest) = blob
        .split_first_chunk::<4>()
        .ok_or("shorter than its 4-byte header")?;
    let trie_bytes = u64::from(u32::from_le_bytes(*header));
    let units = usize::try_from(trie_bytes / 4).map_err(|_| "trie too large".to_owned())?;
    let Some(trie_len) = units.checked_mul(4).filter(|&n| n <= rest.len()) else {
        return Err(format!(
            "its header declares a trie of {trie_bytes} bytes but only {} bytes follow",
            rest.len()
        ));
    };
    let (trie_blob, strings) = rest.split_at(trie_len);
    let trie: Vec<u32> = trie_blob
        .chunks_exact(4)
        .filter_map(|unit| unit.first_chunk::<4>().map(|b| u32::from_le_bytes(*b)))
        .collect();
    let strings = std::str::from_utf8(strings)
        .map_err(|e| format!("its replacement strings are not UTF-8: {e}"))?;
    let unit_at = |pos: usize| {
        trie.get(pos).copied().ok_or_else(|| {
            format!(
                "its trie points at unit {pos}, past its {} units",
                trie.len()
            )
        })
    };
    // The unit layout of darts-clone, which sentencepiece uses.
    let offset = |unit: u32| ((unit >> 10) << ((unit & (1 << 9)) >> 6)) as usize;
    let has_leaf = |unit: u32| (unit >> 8) & 1 == 1;
    let label = |unit: u32| unit & ((1 << 31) | 0xFF);
    let value = |unit: u32| (unit & ((1 << 31) - 1)) as usize;

    if trie.len() > MAX_CHARSMAP_TRIE_UNITS {
        return Err(format!(
            "its trie has {} units (at most {MAX_CHARSMAP_TRIE_UNITS})",
            trie.len()
        ));
    }
    let mut longest = 0usize;
    // Bases already queued: each is walked once, at the smallest depth it is reached at.
    let mut queued = vec![false; trie.len()];
    let root = offset(unit_at(0)?);
    let mut frontier = vec![root];
    if let Some(slot) = queued.get_mut(root) {
        *slot = true;
    }
    for depth in 1..=CHARSMAP_MAX_KEY_BYTES {
        let mut next = Vec::new();
        for base in frontier {
            if (base | 0xFF) >= trie.len() {
                return Err(format!(
                    "its trie points at units {base}..={}, past its {} units",
                    base | 0xFF,
                    trie.len()
                ));
            }
            for byte in 1..=255u32 {
                let child = base ^ byte as usize;
                let unit = unit_at(child)?;
                if label(unit) != byte {
                    continue;
                }
                let child_base = child ^ offset(unit);
                if has_leaf(unit) {
                    let start = value(unit_at(child_base)?);
                    let Some(tail) = strings.get(start..) else {
                        return Err(format!(
                            "an entry starts at byte {start}, outside its {} bytes of replacement strings \
                             or inside a character",
                            strings.len()
                        ));
                    };
                    let entry = tail.split('\0').next().unwrap_or_default();
                    longest = longest.max(entry.chars().count());
                }
                if depth < CHARSMAP_MAX_KEY_BYTES {
                    match queued.get_mut(child_base) {
                        Some(true) => {}
                        Some(slot) => {
                            *slot = true;
                            next.push(child_base);
                        }
                        // Out of the array: reported when a longer key walks there.
                        None => next.push(child_base),
                    }
                }
            }
        }
        frontier = next;
    }
    Ok(longest)
}

/// Standard base64 with `=` padding, as the `tokenizers` library writes charsmaps.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    fn sextet(byte: u8) -> Option<u32> {
        Some(u32::from(match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        }))
    }
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    let quads = bytes.chunks_exact(4);
    let last = quads.len().checked_sub(1);
    for (i, quad) in quads.enumerate() {
        let padding = quad.iter().rev().take_while(|&&b| b == b'=').count();
        if padding > 2 || (padding > 0 && Some(i) != last) {
            return None;
        }
        let mut word = 0u32;
        for &byte in quad.iter().take(4 - padding) {
            word = (word << 6) | sextet(byte)?;
        }
        word <<= 6 * padding as u32;
        let [_, a, b, c] = word.to_be_bytes();
        out.extend([a, b, c].into_iter().take(3 - padding));
    }
    Some(out)
}

fn check_model(model: &Value) -> Checked<()> {
    let Some(object) = model.as_object() else {
        return Ok(()); // the `tokenizers` library refuses it
    };
    let kind = str_field(object, "type");
    if let Some(n) = object.get("max_input_chars_per_word")
        && n.as_u64().is_none_or(|n| n > MAX_WORDPIECE_CHARS_PER_WORD)
    {
        return violation(
            "model.max_input_chars_per_word",
            format!(
                "{n} is more than {MAX_WORDPIECE_CHARS_PER_WORD} (each word costs the cube of its length)"
            ),
        );
    }
    for key in ["continuing_subword_prefix", "end_of_word_suffix"] {
        check_affix(object, key, "model")?;
    }
    match object.get("vocab") {
        Some(Value::Object(vocab)) => {
            if vocab.len() > MAX_VOCAB_ENTRIES {
                return violation(
                    "model.vocab",
                    format!("{} entries (at most {MAX_VOCAB_ENTRIES})", vocab.len()),
                );
            }
            for (token, id) in vocab {
                check_id(id, &format!("model.vocab[{token:?}]"))?;
            }
        }
        Some(Value::Array(pieces)) => check_unigram_pieces(pieces, kind)?,
        _ => {}
    }
    if let Some(merges) = object.get("merges").and_then(Value::as_array)
        && merges.len() > MAX_MERGES
    {
        return violation(
            "model.merges",
            format!("{} merges (at most {MAX_MERGES})", merges.len()),
        );
    }
    Ok(())
}

fn check_unigram_pieces(pieces: &[Value], kind: Option<&str>) -> Checked<()> {
    if pieces.len() > MAX_VOCAB_ENTRIES {
        return violation(
            "model.vocab",
            format!("{} entries (at most {MAX_VOCAB_ENTRIES})", pieces.len()),
        );
    }
    if kind.is_some_and(|k| k != "Unigram") {
        return Ok(());
    }
    for (i, piece) in pieces.iter().enumerate() {
        let text = piece.get(0).and_then(Value::as_str).unwrap_or_default();
        if text.chars().count() > MAX_UNIGRAM_PIECE_CHARS {
            return violation(
                &format!("model.vocab[{i}]"),
                format!("a piece longer than {MAX_UNIGRAM_PIECE_CHARS} characters"),
            );
        }
    }
    Ok(())
}

fn check_id(id: &Value, field: &str) -> Checked<()> {
    match id.as_u64() {
        Some(id) if id > MAX_TOKEN_ID => {
            violation(field, format!("token id {id} is more than {MAX_TOKEN_ID}"))
        }
        _ => Ok(()),
    }
}

/// Checks `added_tokens`: their count, their ids, and the text their normalization at load
/// time produces (the `tokenizers` library normalizes every token's content when it is loaded).
fn check_added_tokens(added: &Value, growth: Growth) -> Checked<()> {
    let Some(tokens) = added.as_array() else {
        return Ok(());
    };
    let chars: usize = tokens
        .iter()
        .filter_map(|token| token.get("content").and_then(Value::as_str))
        .map(|content| content.chars().count())
        .sum();
    check_added_text(chars, growth).or_else(|problem| violation("added_tokens", problem))?;
    if tokens.len() > MAX_ADDED_TOKENS {
        return violation(
            "added_tokens",
            format!("{} entries (at most {MAX_ADDED_TOKENS})", tokens.len()),
        );
    }
    for (i, token) in tokens.iter().enumerate() {
        if let Some(id) = token.get("id") {
            check_id(id, &format!("added_tokens[{i}].id"))?;
        }
    }
    Ok(())
}

/// Refuses added tokens whose contents, `chars` characters in all, the normalizer could grow
/// past [`crate::MAX_NORMALIZED_CHARS`] when they are registered.
pub(crate) fn check_added_text(chars: usize, growth: Growth) -> std::result::Result<(), String> {
    let grown = chars as f64 * growth.total();
    if grown > crate::input_bounds::MAX_NORMALIZED_CHARS {
        return Err(format!(
            "{chars} characters of added tokens, normalized when loaded, could grow to {grown:.0} \
             (at most {} allowed)",
            crate::input_bounds::MAX_NORMALIZED_CHARS
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_what_python_writes() {
        assert_eq!(decode_base64("").as_deref(), Some(&b""[..]));
        assert_eq!(decode_base64("YQ==").as_deref(), Some(&b"a"[..]));
        assert_eq!(decode_base64("YWI=").as_deref(), Some(&b"ab"[..]));
        assert_eq!(decode_base64("YWJj").as_deref(), Some(&b"abc"[..]));
        assert_eq!(decode_base64("YQ==YWJj"), None);
        assert_eq!(decode_base64("YQ="), None);
        assert_eq!(decode_base64("Y==="), None);
        assert_eq!(decode_base64("YW J"), None);
    }

    #[test]
    fn regex_minimum_lengths() {
        assert_eq!(regex_min_chars(" {2,}"), 1);
        assert_eq!(regex_min_chars("a*"), 0);
        assert_eq!(regex_min_chars("(?=a)b"), 0); // look-around: unknown to regex-syntax
    }

    #[test]
    fn growth_composes_per_char_and_per_piece() {
        let prepend = Growth {
            per_char: 1.0,
            per_piece: 1.0,
        };
        let double = Growth::scale(2.0);
        assert_eq!(
            prepend.then(double),
            Growth {
                per_char: 2.0,
                per_piece: 2.0
            }
        );
        assert_eq!(double.then(prepend).total(), 3.0);
    }
}
