//! A tokenizer from a GGUF file's metadata (`tokenizer.ggml.*`), as Transformers'
//! `AutoTokenizer.from_pretrained(folder, gguf_file=NAME)` builds it.
//!
//! A GGUF file has no `tokenizer.json`: it stores the vocabulary, the merges, a type per token
//! and the special token ids under llama.cpp's key names. We turn them into the `tokenizer.json`
//! Transformers' GGUF conversion produces (its `integrations/gguf/gguf_tokenizer_mapping.py`) and
//! load that through the very checks [`Tokenizer::from_dir`] applies, so nothing from the file
//! reaches the `tokenizers` library unchecked:
//!
//! - `tokenizer.ggml.model = gpt2`: byte-level BPE. Tokens are respelled in the byte alphabet
//!   when they are not already; the text is split by the regex `tokenizer.ggml.pre` names
//!   ([`SUPPORTED_PRE`]); every other `pre` value is refused by name.
//! - `tokenizer.ggml.model = llama`: SentencePiece-style BPE as Transformers' `LlamaTokenizer`
//!   builds it (`▁` for spaces, one prepended; byte fallback), with the file's merges or, when
//!   it has none, merges derived from `tokenizer.ggml.scores` (`generate_merges`); bos added
//!   unless `add_bos_token` says otherwise. Architectures Transformers rebuilds differently
//!   (Gemma, Phi-3) are refused by name, as is every other model (`t5`, `rwkv`, ...).
//! - Tokens of type control (3) become special added tokens, those of type user-defined (4)
//!   plain added tokens; the ids of `bos`/`eos`/`unknown`/`padding` give the special tokens by
//!   role; `add_bos_token`/`add_eos_token` decide what encoding adds.
//! - `tokenizer.chat_template` becomes the default chat template, rendered only by the sandbox
//!   of [`crate::render_chat_template`], like one from `tokenizer_config.json`.
//!
//! Everything is untrusted and checked with an error naming the file and key: counts, lengths,
//! ids in range, merges made of known tokens, no token spelled twice.

use std::collections::HashMap;
use std::path::Path;

use safeformers_weights::gguf::{GgufFile, GgufHeader, MetadataArray, StringArray};
use serde_json::{Value, json};

use crate::config::{MAX_CONFIG_BYTES, TokenizerConfig};
use crate::error::{Result, TokenizeError};
use crate::tokenizer::{Tokenizer, TokenizerOptions, parse_tokenizer_json};
use crate::tokenizer_bounds::{MAX_MERGES, MAX_VOCAB_ENTRIES};

/// Longest token (in bytes) accepted in `tokenizer.ggml.tokens`; real vocabularies stay far
/// below (their longest tokens are runs of spaces or dashes of a few hundred bytes).
pub const MAX_GGUF_TOKEN_BYTES: usize = 4096;

/// The `tokenizer.ggml.pre` values we build for `gpt2` vocabularies, with the split regex each
/// stands for (Transformers' `GGUF_PRE_TOKENIZER_SPLITS`). `None` is the GPT-2 regex of the
/// byte-level pre-tokenizer itself, which Transformers uses for every value it has no regex for,
/// `smollm` included; we use it only for these three and refuse the other values.
pub const SUPPORTED_PRE: [(&str, Option<&str>); 7] = [
    ("default", None),
    ("gpt-2", None),
    ("smollm", None),
    ("llama-bpe", Some(LLAMA3_SPLIT)),
    ("llama3", Some(LLAMA3_SPLIT)),
    ("llama-v3", Some(LLAMA3_SPLIT)),
    ("qwen2", Some(QWEN2_SPLIT)),
];

/// Llama 3's split (Transformers' `_LLAMA3_SPLIT`).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen2's split (Transformers' `qwen2.tokenization_qwen2.PRETOKENIZE_REGEX`): digits one by one.
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// llama.cpp's token types (`llama_token_type`).
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// Architectures whose `llama` vocabulary Transformers rebuilds differently (Gemma respells
/// tokens and orders merges by position; Phi-3 prepends its space in a normalizer): refused.
const SENTENCEPIECE_REBUILT: [&str; 4] = ["gemma", "gemma2", "gemma3", "phi3"];

/// Most work (sum over tokens of characters times bytes) spent deriving merges from scores:
/// real vocabularies need a few million; a file of huge tokens could ask for far more.
pub const MAX_MERGE_DERIVATION_WORK: u64 = 1 << 28;

const SCORES_KEY: &str = "tokenizer.ggml.scores";
const MODEL_KEY: &str = "tokenizer.ggml.model";
const PRE_KEY: &str = "tokenizer.ggml.pre";
const TOKENS_KEY: &str = "tokenizer.ggml.tokens";
const TOKEN_TYPE_KEY: &str = "tokenizer.ggml.token_type";
const MERGES_KEY: &str = "tokenizer.ggml.merges";
const ADD_BOS_KEY: &str = "tokenizer.ggml.add_bos_token";
const ADD_EOS_KEY: &str = "tokenizer.ggml.add_eos_token";

impl Tokenizer {
    /// Opens a `.gguf` file (validated by the strict reader of `safeformers-weights`) and builds
    /// its tokenizer, as [`Tokenizer::from_gguf`] does.
    pub fn from_gguf_file(path: &Path, options: &TokenizerOptions) -> Result<Self> {
        let file = GgufFile::open(path).map_err(|e| TokenizeError::Gguf(Box::new(e)))?;
        Self::from_gguf(file.header(), path, options)
    }

    /// The tokenizer a GGUF file's metadata describes (see the module documentation); `path`
    /// names the file in errors.
    ///
    /// ```no_run
    /// # use std::path::Path;
    /// use safeformers_tokenize::{EncodeOptions, Tokenizer, TokenizerOptions};
    /// let path = Path::new("SmolLM2-135M-Instruct.Q4_1.gguf");
    /// let tokenizer = Tokenizer::from_gguf_file(path, &TokenizerOptions::default())?;
    /// let ids = &tokenizer.encode("Hello world!", &EncodeOptions::default())?.rows[0].input_ids;
    /// assert_eq!(tokenizer.decode(ids, false)?, "Hello world!");
    /// # Ok::<(), safeformers_tokenize::TokenizeError>(())
    /// ```
    pub fn from_gguf(header: &GgufHeader, path: &Path, options: &TokenizerOptions) -> Result<Self> {
        let meta = Metadata { header, path };
        let Pipeline {
            vocab,
            pre_tokenizer,
            decoder,
            add_bos_default,
        } = Pipeline::of(&meta)?;
        let merges = vocab.merges(&meta)?;
        let config = gguf_config(&meta, &vocab.tokens)?;
        let added = vocab.added_tokens(&meta)?;
        let post_processor = post_processor(&meta, &config, &vocab, add_bos_default)?;
        let tokenizer_json = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": pre_tokenizer,
            "post_processor": post_processor,
            "decoder": decoder,
            "model": vocab.bpe_json(merges),
        });
        drop(vocab);
        let bytes = serde_json::to_vec(&tokenizer_json)
            .map_err(|e| meta.invalid(TOKENS_KEY, e.to_string()))?;
        drop(tokenizer_json);
        let (inner, growth) = parse_tokenizer_json(path, &bytes)?;
        Self::from_parts(path.to_path_buf(), inner, growth, config, options)
    }
}

/// What `tokenizer.ggml.model` (and `pre`) decide: the vocabulary's spelling, the text's
/// splitting and decoding, and whether bos is added when the file does not say.
struct Pipeline {
    vocab: Vocab,
    pre_tokenizer: Value,
    decoder: Value,
    add_bos_default: bool,
}

impl Pipeline {
    fn of(meta: &Metadata<'_>) -> Result<Self> {
        let model = meta
            .string(MODEL_KEY)?
            .ok_or_else(|| meta.missing(MODEL_KEY))?;
        let pre = meta.string(PRE_KEY)?.unwrap_or("default");
        let unsupported =
            |key: &'static str, value: &str, supported: String| TokenizeError::UnsupportedGguf {
                path: meta.path.to_path_buf(),
                key,
                value: value.to_owned(),
                supported,
            };
        Ok(match model {
            "gpt2" => {
                let split = SUPPORTED_PRE
                    .iter()
                    .find(|(name, _)| *name == pre)
                    .map(|(_, split)| *split)
                    .ok_or_else(|| {
                        unsupported(PRE_KEY, pre, SUPPORTED_PRE.map(|(name, _)| name).join(", "))
                    })?;
                let decoder = json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true});
                Pipeline {
                    vocab: Vocab::read(meta, true)?,
                    pre_tokenizer: byte_level_pre_tokenizer(split),
                    decoder,
                    add_bos_default: false,
                }
            }
            "llama" => {
                let architecture = meta.string(safeformers_weights::gguf::ARCHITECTURE_KEY)?;
                if let Some(architecture) =
                    architecture.filter(|a| SENTENCEPIECE_REBUILT.contains(a))
                {
                    return Err(unsupported(
                        safeformers_weights::gguf::ARCHITECTURE_KEY,
                        architecture,
                        "any but gemma, gemma2, gemma3 and phi3 for `tokenizer.ggml.model = llama`"
                            .into(),
                    ));
                }
                if pre != "default" {
                    return Err(unsupported(
                        PRE_KEY,
                        pre,
                        "default (for `tokenizer.ggml.model = llama`)".into(),
                    ));
                }
                Pipeline {
                    vocab: Vocab::read(meta, false)?,
                    pre_tokenizer: metaspace_pre_tokenizer(),
                    decoder: sentencepiece_decoder(),
                    add_bos_default: true,
                }
            }
            other => return Err(unsupported(MODEL_KEY, other, "gpt2, llama".into())),
        })
    }
}

/// The header with the file's path, for errors.
struct Metadata<'a> {
    header: &'a GgufHeader,
    path: &'a Path,
}

impl Metadata<'_> {
    fn invalid(&self, key: &str, message: String) -> TokenizeError {
        TokenizeError::InvalidGguf {
            path: self.path.to_path_buf(),
            key: key.to_owned(),
            message,
        }
    }

    fn missing(&self, key: &str) -> TokenizeError {
        self.invalid(
            key,
            "missing; a GGUF file without it has no tokenizer we can build".into(),
        )
    }

    fn typed<T>(
        &self,
        key: &str,
        value: std::result::Result<T, safeformers_weights::gguf::GgufError>,
    ) -> Result<T> {
        value.map_err(|e| self.invalid(key, e.to_string()))
    }

    fn string(&self, key: &str) -> Result<Option<&str>> {
        self.typed(key, self.header.get_string(key))
    }

    fn bool(&self, key: &str) -> Result<Option<bool>> {
        self.typed(key, self.header.get_bool(key))
    }

    fn strings(&self, key: &str) -> Result<Option<&StringArray>> {
        self.typed(key, self.header.get_string_array(key))
    }

    /// A token id (`tokenizer.ggml.bos_token_id`), checked against the number of tokens.
    fn token_id(&self, key: &str, token_count: usize) -> Result<Option<u32>> {
        let Some(id) = self.typed(key, self.header.get_u32(key))? else {
            return Ok(None);
        };
        if usize::try_from(id).map_or(true, |id| id >= token_count) {
            return Err(self.invalid(
                key,
                format!("token id {id} is out of range: the vocabulary has {token_count} tokens"),
            ));
        }
        Ok(Some(id))
    }
}

/// GPT-2's byte alphabet (`bytes_to_unicode`): printable Latin-1 bytes stand for themselves,
/// the others for the characters from U+0100 on, in byte order.
fn byte_alphabet() -> [char; 256] {
    let mut alphabet = ['\0'; 256];
    let mut next = 256u32;
    for (byte, slot) in (0u32..).zip(alphabet.iter_mut()) {
        let printable = (0x21..=0x7E).contains(&byte)
            || (0xA1..=0xAC).contains(&byte)
            || (0xAE..=0xFF).contains(&byte);
        let code = if printable {
            byte
        } else {
            next += 1;
            next - 1
        };
        *slot = char::from_u32(code).unwrap_or('\0');
    }
    alphabet
}

/// The vocabulary of the file: for a byte-level one, every token in the byte alphabet.
struct Vocab {
    /// The tokens as the file spells them (what the special-token ids refer to).
    tokens: Vec<String>,
    /// The tokens as the BPE model knows them, by id.
    spelled: Vec<String>,
    /// Spelled token -> id.
    ids: HashMap<String, u32>,
    /// Whether this is a byte-level vocabulary (`gpt2`) or a SentencePiece one (`llama`).
    byte_level: bool,
}

impl Vocab {
    fn read(meta: &Metadata<'_>, byte_level: bool) -> Result<Self> {
        let tokens = meta
            .strings(TOKENS_KEY)?
            .ok_or_else(|| meta.missing(TOKENS_KEY))?;
        if tokens.is_empty() || tokens.len() > MAX_VOCAB_ENTRIES {
            return Err(meta.invalid(
                TOKENS_KEY,
                format!(
                    "{} tokens (between 1 and {MAX_VOCAB_ENTRIES})",
                    tokens.len()
                ),
            ));
        }
        let alphabet = byte_alphabet();
        let mut in_alphabet = [false; 0x200];
        for c in alphabet {
            if let Some(slot) = in_alphabet.get_mut(c as usize) {
                *slot = true;
            }
        }
        let is_spelled = |token: &str| {
            token
                .chars()
                .all(|c| in_alphabet.get(c as usize).copied().unwrap_or(false))
        };
        let mut spelled = Vec::with_capacity(tokens.len());
        let mut ids = HashMap::with_capacity(tokens.len());
        for (id, token) in (0u32..).zip(tokens.iter()) {
            if token.len() > MAX_GGUF_TOKEN_BYTES {
                return Err(meta.invalid(
                    TOKENS_KEY,
                    format!(
                        "token {id} is {} bytes long (at most {MAX_GGUF_TOKEN_BYTES})",
                        token.len()
                    ),
                ));
            }
            let spelling: String = if !byte_level || is_spelled(token) {
                token.to_owned()
            } else {
                token
                    .bytes()
                    .filter_map(|b| alphabet.get(usize::from(b)).copied())
                    .collect()
            };
            if let Some(first) = ids.insert(spelling.clone(), id) {
                return Err(meta.invalid(TOKENS_KEY, format!("tokens {first} and {id} are both {token:?} (as the model spells them); a vocabulary lists each token once")));
            }
            spelled.push(spelling);
        }
        Ok(Self {
            tokens: tokens.iter().map(str::to_owned).collect(),
            spelled,
            ids,
            byte_level,
        })
    }

    /// The `model` section: Transformers' `GPT2Tokenizer` BPE, or its `LlamaTokenizer` one
    /// (byte fallback, unknowns fused).
    fn bpe_json(&self, merges: Vec<[String; 2]>) -> Value {
        let vocab: serde_json::Map<String, Value> = self
            .spelled
            .iter()
            .zip(0u32..)
            .map(|(token, id)| (token.clone(), Value::from(id)))
            .collect();
        let affix = if self.byte_level {
            json!("")
        } else {
            Value::Null
        };
        json!({
            "type": "BPE",
            "dropout": null,
            "unk_token": null,
            "continuing_subword_prefix": affix,
            "end_of_word_suffix": affix,
            "fuse_unk": !self.byte_level,
            "byte_fallback": !self.byte_level,
            "ignore_merges": false,
            "vocab": vocab,
            "merges": merges,
        })
    }

    /// `tokenizer.ggml.merges` as `[left, right]` pairs, each side and their concatenation a
    /// known token (what the `tokenizers` BPE model requires).
    fn merges(&self, meta: &Metadata<'_>) -> Result<Vec<[String; 2]>> {
        let Some(merges) = meta.strings(MERGES_KEY)? else {
            if self.byte_level {
                return Err(meta.missing(MERGES_KEY));
            }
            return self.merges_from_scores(meta);
        };
        if merges.len() > MAX_MERGES {
            return Err(meta.invalid(
                MERGES_KEY,
                format!("{} merges (at most {MAX_MERGES})", merges.len()),
            ));
        }
        let mut pairs = Vec::with_capacity(merges.len());
        for (index, merge) in merges.iter().enumerate() {
            let bad =
                |why: &str| meta.invalid(MERGES_KEY, format!("merge {index} {merge:?}: {why}"));
            let mut parts = merge.split(' ');
            let (Some(left), Some(right), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(bad("is not two tokens separated by one space"));
            };
            for part in [left, right] {
                if !self.ids.contains_key(part) {
                    return Err(bad(&format!("{part:?} is not a token of the vocabulary")));
                }
            }
            if !self.ids.contains_key(&format!("{left}{right}")) {
                return Err(bad("the merged token is not in the vocabulary"));
            }
            pairs.push([left.to_owned(), right.to_owned()]);
        }
        Ok(pairs)
    }

    /// Control tokens as special added tokens, user-defined ones as plain added tokens, as
    /// Transformers' `add_gguf_special_tokens` adds them: a control token outside the byte
    /// alphabet is a mislabel it skips, and so do we.
    fn added_tokens(&self, meta: &Metadata<'_>) -> Result<Vec<Value>> {
        let Some(types) = meta.typed(TOKEN_TYPE_KEY, meta.header.get_array(TOKEN_TYPE_KEY))? else {
            return Ok(Vec::new());
        };
        let types: Vec<i64> = match types {
            MetadataArray::I32(values) => values.iter().map(|&v| i64::from(v)).collect(),
            MetadataArray::U32(values) => values.iter().map(|&v| i64::from(v)).collect(),
            other => {
                return Err(meta.invalid(
                    TOKEN_TYPE_KEY,
                    format!("an array of {} (expected i32)", other.element_type()),
                ));
            }
        };
        if types.len() != self.tokens.len() {
            return Err(meta.invalid(
                TOKEN_TYPE_KEY,
                format!(
                    "{} token types for {} tokens",
                    types.len(),
                    self.tokens.len()
                ),
            ));
        }
        let mut added = Vec::new();
        for ((token, spelling), (id, &kind)) in self
            .tokens
            .iter()
            .zip(&self.spelled)
            .zip((0u32..).zip(&types))
        {
            let special = match kind {
                TOKEN_TYPE_CONTROL if token == spelling => true,
                TOKEN_TYPE_USER_DEFINED if self.ids.contains_key(token) => false,
                _ => continue,
            };
            let id = self.ids.get(token).copied().unwrap_or(id);
            added.push(json!({
                "id": id, "content": token, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": special,
            }));
        }
        Ok(added)
    }
}

/// The pre-tokenizer Transformers sets: byte-level with GPT-2's regex, or the named split
/// (isolated) followed by byte-level without regex.
fn byte_level_pre_tokenizer(split: Option<&str>) -> Value {
    match split {
        None => {
            json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true})
        }
        Some(regex) => json!({
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false},
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false},
            ],
        }),
    }
}

/// Special tokens by role and the chat template, as Transformers' `get_gguf_tokenizer` reads
/// them: a role's token is the file's token at that id.
fn gguf_config(meta: &Metadata<'_>, tokens: &[String]) -> Result<TokenizerConfig> {
    let role = |key: &str| -> Result<Option<String>> {
        let id = meta.token_id(key, tokens.len())?;
        Ok(id.and_then(|id| tokens.get(usize::try_from(id).ok()?).cloned()))
    };
    let mut config = TokenizerConfig::default();
    config.special_tokens.bos = role("tokenizer.ggml.bos_token_id")?;
    config.special_tokens.eos = role("tokenizer.ggml.eos_token_id")?;
    config.special_tokens.unk = role("tokenizer.ggml.unknown_token_id")?;
    config.special_tokens.pad = role("tokenizer.ggml.padding_token_id")?;
    let template_key = safeformers_weights::gguf::CHAT_TEMPLATE_KEY;
    if let Some(template) = meta.string(template_key)? {
        if template.len() as u64 > MAX_CONFIG_BYTES {
            return Err(meta.invalid(
                template_key,
                format!(
                    "{} bytes (at most {MAX_CONFIG_BYTES}, as for chat_template.jinja)",
                    template.len()
                ),
            ));
        }
        config.chat_template = Some(template.to_owned());
    }
    Ok(config)
}

/// Transformers' `update_post_processor`: `bos $A eos` as `add_bos_token`/`add_eos_token` say
/// (when absent: no eos, and bos only for `llama`, as llama.cpp adds it to a SentencePiece
/// vocabulary that does not say otherwise), a flag for a role without a token ignored.
fn post_processor(
    meta: &Metadata<'_>,
    config: &TokenizerConfig,
    vocab: &Vocab,
    add_bos_default: bool,
) -> Result<Value> {
    let mut flagged = Vec::new();
    for (key, token, default) in [
        (ADD_BOS_KEY, &config.special_tokens.bos, add_bos_default),
        (ADD_EOS_KEY, &config.special_tokens.eos, false),
    ] {
        match (meta.bool(key)?.unwrap_or(default), token) {
            (true, Some(token)) => {
                let id = vocab.ids.get(token).ok_or_else(|| {
                    meta.invalid(
                        key,
                        format!(
                            "the token {token:?} is not in the vocabulary as it is spelled there"
                        ),
                    )
                })?;
                flagged.push(Some((token.clone(), *id)));
            }
            _ => flagged.push(None),
        }
    }
    let (bos, eos) = (
        flagged.first().cloned().flatten(),
        flagged.get(1).cloned().flatten(),
    );
    let special = |token: &(String, u32), type_id: u32| json!({"SpecialToken": {"id": token.0, "type_id": type_id}});
    let sequence = |id: &str, type_id: u32| json!({"Sequence": {"id": id, "type_id": type_id}});
    let mut single = Vec::new();
    single.extend(bos.iter().map(|t| special(t, 0)));
    single.push(sequence("A", 0));
    single.extend(eos.iter().map(|t| special(t, 0)));
    let mut pair = single.clone();
    pair.extend(bos.iter().map(|t| special(t, 1)));
    pair.push(sequence("B", 1));
    pair.extend(eos.iter().map(|t| special(t, 1)));
    let special_tokens: serde_json::Map<String, Value> = bos
        .iter()
        .chain(eos.iter())
        .map(|(token, id)| {
            (
                token.clone(),
                json!({"id": token, "ids": [id], "tokens": [token]}),
            )
        })
        .collect();
    Ok(
        json!({"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": special_tokens}),
    )
}

/// SentencePiece's pre-tokenizer as Transformers' `LlamaTokenizer` sets it: spaces become `▁`,
/// one prepended to the first word.
fn metaspace_pre_tokenizer() -> Value {
    json!({"type": "Metaspace", "replacement": "\u{2581}", "prepend_scheme": "first", "split": false})
}

/// `LlamaTokenizer`'s decoder: `▁` back to spaces, byte tokens (`<0x0A>`) back to bytes, the
/// prepended space removed.
fn sentencepiece_decoder() -> Value {
    json!({
        "type": "Sequence",
        "decoders": [
            {"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "},
            {"type": "ByteFallback"},
            {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0},
        ],
    })
}

impl Vocab {
    /// Merges derived from the vocabulary and `tokenizer.ggml.scores`, as Transformers'
    /// `generate_merges` derives them: every split of a token into two known tokens, ordered by
    /// the token's score, then the lengths of the two sides (all descending, ties in vocabulary
    /// order, each token's own splits by the ids of their sides).
    fn merges_from_scores(&self, meta: &Metadata<'_>) -> Result<Vec<[String; 2]>> {
        let scores = match meta.typed(SCORES_KEY, meta.header.get_array(SCORES_KEY))? {
            Some(MetadataArray::F32(scores)) => scores,
            Some(other) => {
                let found = format!("an array of {} (expected f32)", other.element_type());
                return Err(meta.invalid(SCORES_KEY, found));
            }
            None => return Err(meta.missing(MERGES_KEY)),
        };
        if scores.len() != self.tokens.len() {
            let found = format!("{} scores for {} tokens", scores.len(), self.tokens.len());
            return Err(meta.invalid(SCORES_KEY, found));
        }
        if let Some(index) = scores.iter().position(|score| !score.is_finite()) {
            return Err(meta.invalid(SCORES_KEY, format!("score {index} is not a finite number")));
        }
        let work = self.tokens.iter().fold(0u64, |sum, token| {
            sum.saturating_add((token.chars().count() as u64).saturating_mul(token.len() as u64))
        });
        if work > MAX_MERGE_DERIVATION_WORK {
            let message = format!(
                "deriving merges from these tokens would take {work} steps (at most \
                 {MAX_MERGE_DERIVATION_WORK}); list the merges in `{MERGES_KEY}`"
            );
            return Err(meta.invalid(TOKENS_KEY, message));
        }
        // (the token's score, left side, right side)
        let mut merges: Vec<(f32, &str, &str)> = Vec::new();
        for (token, &score) in self.tokens.iter().zip(scores) {
            let mut local: Vec<(u32, u32, &str, &str)> = token
                .char_indices()
                .skip(1)
                .filter_map(|(at, _)| {
                    let (left, right) = token.split_at_checked(at)?;
                    Some((*self.ids.get(left)?, *self.ids.get(right)?, left, right))
                })
                .collect();
            local.sort_by_key(|&(left, right, _, _)| (left, right));
            merges.extend(
                local
                    .into_iter()
                    .map(|(_, _, left, right)| (score, left, right)),
            );
            if merges.len() > MAX_MERGES {
                let message = format!("more than {MAX_MERGES} merges derived from the scores");
                return Err(meta.invalid(SCORES_KEY, message));
            }
        }
        // Stable, descending: what Python's `sorted(.., reverse=True)` does.
        merges.sort_by(|a, b| {
            let key = |m: &(f32, &str, &str)| (m.0, m.1.chars().count(), m.2.chars().count());
            let (a, b) = (key(a), key(b));
            b.0.total_cmp(&a.0).then(b.1.cmp(&a.1)).then(b.2.cmp(&a.2))
        });
        Ok(merges
            .into_iter()
            .map(|(_, left, right)| [left.to_owned(), right.to_owned()])
            .collect())
    }
}
