//! `tokenizer_config.json`, `special_tokens_map.json` and `chat_template.jinja`: the settings
//! Transformers keeps beside `tokenizer.json`.
//!
//! Only plain values are read. Nothing here can make us load another file or run code: keys that
//! name files (`vocab_file`, `tokenizer_file`, `merges_file`, ...) and remote code (`auto_map`)
//! are ignored, and `tokenizer_class` is informational only.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safeformers_files::FileError;
use serde_json::{Map, Value};

use crate::error::{Result, TokenizeError};

/// Size limit for the small JSON and template files (the biggest real ones, with long chat
/// templates, are tens of kilobytes).
pub const MAX_CONFIG_BYTES: u64 = 8 * 1024 * 1024;

/// Transformers' `LARGE_INTEGER` (`int(1e20)`): a `model_max_length` at or above it is the
/// "no limit" sentinel that `save_pretrained` writes (`VERY_LARGE_INTEGER`, `int(1e30)`).
const MODEL_MAX_LENGTH_SENTINEL: f64 = 1e20;

/// Which end of a sequence padding is added to, or truncation removes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Side {
    /// The start (decoder-only models pad on the left for generation).
    Left,
    /// The end; Transformers' default.
    #[default]
    Right,
}

/// A token that can be declared in `tokenizer_config.json`'s `added_tokens_decoder`, with the
/// flags Transformers keeps for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddedTokenConfig {
    /// The token's text.
    pub content: String,
    /// Whether it is special (skipped by `decode(.., skip_special_tokens = true)`).
    pub special: bool,
    /// Match only as a whole word.
    pub single_word: bool,
    /// Eat the whitespace on its left.
    pub lstrip: bool,
    /// Eat the whitespace on its right.
    pub rstrip: bool,
    /// Match against the normalized text rather than the raw text.
    pub normalized: bool,
}

/// The special tokens by role, as strings (Transformers' `tokenizer.pad_token` etc.). Values
/// from `special_tokens_map.json` override those of `tokenizer_config.json`, as in
/// Transformers' `from_pretrained`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SpecialTokens {
    /// Beginning of sequence (`bos_token`).
    pub bos: Option<String>,
    /// End of sequence (`eos_token`).
    pub eos: Option<String>,
    /// Unknown token (`unk_token`).
    pub unk: Option<String>,
    /// Separator (`sep_token`).
    pub sep: Option<String>,
    /// Padding (`pad_token`).
    pub pad: Option<String>,
    /// Classifier token (`cls_token`).
    pub cls: Option<String>,
    /// Mask token for masked language modelling (`mask_token`).
    pub mask: Option<String>,
    /// `additional_special_tokens` (and Transformers 5's `extra_special_tokens`).
    pub additional: Vec<String>,
}

impl SpecialTokens {
    /// All the special tokens set, by role then the additional ones, without duplicates.
    pub fn all(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        let roles = [
            &self.bos, &self.eos, &self.unk, &self.sep, &self.pad, &self.cls, &self.mask,
        ];
        for token in roles
            .into_iter()
            .flatten()
            .map(String::as_str)
            .chain(self.additional.iter().map(String::as_str))
        {
            if !out.contains(&token) {
                out.push(token);
            }
        }
        out
    }
}

/// What `tokenizer_config.json` (with `special_tokens_map.json` and `chat_template.jinja`)
/// says about a tokenizer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TokenizerConfig {
    /// The longest input the model takes, special tokens included; `None` when unset or the
    /// "no limit" sentinel (`1e30`).
    pub model_max_length: Option<usize>,
    /// `padding_side` (default right).
    pub padding_side: Side,
    /// `truncation_side` (default right).
    pub truncation_side: Side,
    /// Special tokens by role.
    pub special_tokens: SpecialTokens,
    /// `added_tokens_decoder`: id -> token, as saved by Transformers.
    pub added_tokens_decoder: BTreeMap<u32, AddedTokenConfig>,
    /// The default chat template (Jinja source), kept as text: `chat_template` from the config
    /// (the entry named `default` when it is a list of named templates), unless the folder has
    /// template files (`chat_template.jinja`, `additional_chat_templates/*.jinja`): those then
    /// replace all of the config's templates, as in Transformers 5.
    pub chat_template: Option<String>,
    /// Named chat templates other than the default (`tool_use`, `rag`, ...).
    pub named_chat_templates: BTreeMap<String, String>,
    /// `clean_up_tokenization_spaces`: whether `decode` removes spaces before punctuation
    /// (`" ."` -> `"."`). Default false, as in current Transformers.
    pub clean_up_tokenization_spaces: bool,
    /// `tokenizer_class`, for information only: it never selects code.
    pub tokenizer_class: Option<String>,
}

/// Reads a whole file of at most `limit` bytes; `Ok(None)` if it does not exist.
pub(crate) fn read_capped(path: &Path, limit: u64) -> Result<Option<Vec<u8>>> {
    let cap = safeformers_files::ReadCap::new("a tokenizer file", limit);
    match safeformers_files::read_capped_if_exists(path, cap) {
        Ok(bytes) => Ok(bytes),
        Err(safeformers_files::FileError::TooLarge { size, .. }) => {
            Err(TokenizeError::FileTooLarge {
                path: path.to_path_buf(),
                size: size.unwrap_or(limit.saturating_add(1)),
                limit,
            })
        }
        Err(error) => Err(error.into()),
    }
}

fn read_json_object(path: &Path) -> Result<Option<Map<String, Value>>> {
    let Some(bytes) = read_capped(path, MAX_CONFIG_BYTES)? else {
        return Ok(None);
    };
    let value: Value = serde_json::from_slice(&bytes).map_err(|source| TokenizeError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    match value {
        Value::Object(map) => Ok(Some(map)),
        _ => Err(TokenizeError::InvalidConfig {
            path: path.to_path_buf(),
            field: "(top level)".into(),
            message: "expected a JSON object".into(),
        }),
    }
}

struct Fields<'a> {
    path: &'a Path,
    map: &'a Map<String, Value>,
}

impl Fields<'_> {
    fn invalid(&self, field: &str, message: impl Into<String>) -> TokenizeError {
        TokenizeError::InvalidConfig {
            path: self.path.to_path_buf(),
            field: field.into(),
            message: message.into(),
        }
    }

    fn get(&self, field: &str) -> Option<&Value> {
        self.map.get(field).filter(|v| !v.is_null())
    }

    fn bool(&self, field: &str) -> Result<Option<bool>> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => {
                Err(self.invalid(field, format!("expected true or false, found {other}")))
            }
        }
    }

    fn string(&self, field: &str) -> Result<Option<String>> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(self.invalid(field, format!("expected a string, found {other}"))),
        }
    }

    fn side(&self, field: &str) -> Result<Option<Side>> {
        match self.string(field)?.as_deref() {
            None => Ok(None),
            Some("left") => Ok(Some(Side::Left)),
            Some("right") => Ok(Some(Side::Right)),
            Some(other) => Err(self.invalid(
                field,
                format!("expected \"left\" or \"right\", found {other:?}"),
            )),
        }
    }

    /// A special token: a string, or an `AddedToken` object `{"content": ..}` as Transformers
    /// saves them.
    fn token(&self, field: &str, value: &Value) -> Result<Option<String>> {
        match value {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(s.clone())),
            Value::Object(obj) => match obj.get("content") {
                Some(Value::String(s)) => Ok(Some(s.clone())),
                _ => Err(self.invalid(field, "an AddedToken object needs a string \"content\"")),
            },
            other => Err(self.invalid(
                field,
                format!("expected a token string or object, found {other}"),
            )),
        }
    }

    fn token_list(&self, field: &str) -> Result<Vec<String>> {
        let values: Vec<&Value> = match self.get(field) {
            None => return Ok(Vec::new()),
            Some(Value::Array(items)) => items.iter().collect(),
            // Transformers 5's `extra_special_tokens` may be a {name: token} map.
            Some(Value::Object(map)) => map.values().collect(),
            Some(other) => {
                return Err(
                    self.invalid(field, format!("expected a list of tokens, found {other}"))
                );
            }
        };
        let mut out = Vec::new();
        for value in values {
            if let Some(token) = self.token(field, value)? {
                out.push(token);
            }
        }
        Ok(out)
    }

    fn model_max_length(&self) -> Result<Option<usize>> {
        const FIELD: &str = "model_max_length";
        let Some(value) = self.get(FIELD) else {
            return Ok(None);
        };
        let Value::Number(n) = value else {
            return Err(self.invalid(FIELD, format!("expected a number, found {value}")));
        };
        if let Some(n) = n.as_u64() {
            return Ok(usize::try_from(n)
                .ok()
                .filter(|&n| (n as f64) < MODEL_MAX_LENGTH_SENTINEL));
        }
        match n.as_f64() {
            Some(f) if f >= MODEL_MAX_LENGTH_SENTINEL => Ok(None),
            _ => Err(self.invalid(FIELD, format!("expected a positive integer, found {n}"))),
        }
    }

    fn added_tokens_decoder(&self) -> Result<BTreeMap<u32, AddedTokenConfig>> {
        const FIELD: &str = "added_tokens_decoder";
        let mut out = BTreeMap::new();
        let entries = match self.get(FIELD) {
            None => return Ok(out),
            Some(Value::Object(entries)) => entries,
            Some(other) => {
                return Err(self.invalid(FIELD, format!("expected an object, found {other}")));
            }
        };
        for (key, value) in entries {
            let id: u32 = key
                .parse()
                .map_err(|_| self.invalid(FIELD, format!("key {key:?} is not a token id")))?;
            let Value::Object(obj) = value else {
                return Err(self.invalid(FIELD, format!("entry {key}: expected an object")));
            };
            let Some(Value::String(content)) = obj.get("content") else {
                return Err(self.invalid(FIELD, format!("entry {key}: needs a string \"content\"")));
            };
            let flag = |name: &str, default: bool| match obj.get(name) {
                None | Some(Value::Null) => Ok(default),
                Some(Value::Bool(b)) => Ok(*b),
                Some(other) => Err(self.invalid(
                    FIELD,
                    format!("entry {key}: `{name}` is {other}, not a bool"),
                )),
            };
            let special = flag("special", false)?;
            out.insert(
                id,
                AddedTokenConfig {
                    content: content.clone(),
                    special,
                    single_word: flag("single_word", false)?,
                    lstrip: flag("lstrip", false)?,
                    rstrip: flag("rstrip", false)?,
                    // Transformers' AddedToken default: normalized unless special.
                    normalized: flag("normalized", !special)?,
                },
            );
        }
        Ok(out)
    }

    fn chat_templates(&self) -> Result<(Option<String>, BTreeMap<String, String>)> {
        const FIELD: &str = "chat_template";
        let mut named = BTreeMap::new();
        match self.get(FIELD) {
            None => Ok((None, named)),
            Some(Value::String(s)) => Ok((Some(s.clone()), named)),
            Some(Value::Array(items)) => {
                for item in items {
                    let (Some(Value::String(name)), Some(Value::String(template))) =
                        (item.get("name"), item.get("template"))
                    else {
                        return Err(self
                            .invalid(FIELD, "list entries need string \"name\" and \"template\""));
                    };
                    named.insert(name.clone(), template.clone());
                }
                let default = named.remove("default");
                Ok((default, named))
            }
            Some(other) => {
                Err(self.invalid(FIELD, format!("expected a string or a list, found {other}")))
            }
        }
    }
}

const ROLES: [&str; 7] = [
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
];

fn apply_special_tokens(fields: &Fields<'_>, tokens: &mut SpecialTokens) -> Result<()> {
    for role in ROLES {
        let Some(value) = fields.map.get(role) else {
            continue;
        };
        let token = fields.token(role, value)?;
        let slot = match role {
            "bos_token" => &mut tokens.bos,
            "eos_token" => &mut tokens.eos,
            "unk_token" => &mut tokens.unk,
            "sep_token" => &mut tokens.sep,
            "pad_token" => &mut tokens.pad,
            "cls_token" => &mut tokens.cls,
            _ => &mut tokens.mask,
        };
        *slot = token;
    }
    for field in ["additional_special_tokens", "extra_special_tokens"] {
        if fields.map.contains_key(field) {
            for token in fields.token_list(field)? {
                if !tokens.additional.contains(&token) {
                    tokens.additional.push(token);
                }
            }
        }
    }
    Ok(())
}

/// Most files read from `additional_chat_templates/`.
const MAX_TEMPLATE_FILES: usize = 64;

fn read_template(path: &Path) -> Result<Option<String>> {
    let Some(bytes) = read_capped(path, MAX_CONFIG_BYTES)? else {
        return Ok(None);
    };
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| TokenizeError::InvalidConfig {
            path: path.to_path_buf(),
            field: "(contents)".into(),
            message: "not UTF-8 text".into(),
        })
}

/// The `*.jinja` files of a folder by name (without the extension).
fn read_template_dir(dir: &Path) -> Result<BTreeMap<String, String>> {
    let mut templates = BTreeMap::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(templates),
        Err(source) => {
            return Err(FileError::io(dir, source).into());
        }
    };
    for entry in entries {
        let entry = entry.map_err(|source| FileError::io(dir, source))?;
        let path: PathBuf = entry.path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".jinja"))
            .filter(|n| !n.is_empty())
        else {
            continue;
        };
        if templates.len() >= MAX_TEMPLATE_FILES {
            return Err(TokenizeError::InvalidConfig {
                path: dir.to_path_buf(),
                field: "(folder)".into(),
                message: format!("more than {MAX_TEMPLATE_FILES} chat templates"),
            });
        }
        if let Some(text) = read_template(&path)? {
            templates.insert(name.to_owned(), text);
        }
    }
    Ok(templates)
}

impl TokenizerConfig {
    /// Reads `tokenizer_config.json`, `special_tokens_map.json`, `chat_template.jinja` and
    /// `additional_chat_templates/*.jinja` from `dir`. Each is optional; a missing one leaves Transformers' defaults.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let mut config = TokenizerConfig::default();

        let config_path = dir.join("tokenizer_config.json");
        if let Some(map) = read_json_object(&config_path)? {
            let fields = Fields {
                path: &config_path,
                map: &map,
            };
            config.model_max_length = fields.model_max_length()?;
            config.padding_side = fields.side("padding_side")?.unwrap_or_default();
            config.truncation_side = fields.side("truncation_side")?.unwrap_or_default();
            config.clean_up_tokenization_spaces = fields
                .bool("clean_up_tokenization_spaces")?
                .unwrap_or(false);
            config.tokenizer_class = fields.string("tokenizer_class")?;
            config.added_tokens_decoder = fields.added_tokens_decoder()?;
            (config.chat_template, config.named_chat_templates) = fields.chat_templates()?;
            apply_special_tokens(&fields, &mut config.special_tokens)?;
        }

        let map_path = dir.join("special_tokens_map.json");
        if let Some(map) = read_json_object(&map_path)? {
            apply_special_tokens(
                &Fields {
                    path: &map_path,
                    map: &map,
                },
                &mut config.special_tokens,
            )?;
        }

        // Transformers 5: template files, when there are any, replace every template of the
        // config (`chat_template.jinja` is the default, `additional_chat_templates/NAME.jinja`
        // the named ones).
        let mut default = read_template(&dir.join("chat_template.jinja"))?;
        let named = read_template_dir(&dir.join("additional_chat_templates"))?;
        if default.is_some() || !named.is_empty() {
            config.chat_template = default.take();
            config.named_chat_templates = named;
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields_of(json: &str) -> Map<String, Value> {
        match serde_json::from_str(json) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        }
    }

    #[test]
    fn model_max_length_sentinel_is_none() {
        let path = Path::new("tokenizer_config.json");
        for (json, expected) in [
            (r#"{"model_max_length": 512}"#, Some(Some(512))),
            (
                r#"{"model_max_length": 1000000000000000019884624838656}"#,
                Some(None),
            ),
            (r#"{"model_max_length": 1e30}"#, Some(None)),
            (r#"{"model_max_length": 100000000000000000000}"#, Some(None)),
            (r#"{"model_max_length": null}"#, Some(None)),
            (r#"{"model_max_length": -3}"#, None),
            (r#"{"model_max_length": 12.5}"#, None),
            (r#"{"model_max_length": "512"}"#, None),
        ] {
            let map = fields_of(json);
            let got = Fields { path, map: &map }.model_max_length().ok();
            assert_eq!(got, expected, "{json}");
        }
    }

    #[test]
    fn tokens_as_strings_or_added_token_objects() {
        let path = Path::new("tokenizer_config.json");
        let map = fields_of(
            r#"{"bos_token": {"__type": "AddedToken", "content": "<s>", "lstrip": false},
                "eos_token": "</s>", "pad_token": null, "mask_token": 3,
                "additional_special_tokens": ["<a>", {"content": "<b>"}]}"#,
        );
        let fields = Fields { path, map: &map };
        let mut tokens = SpecialTokens::default();
        let err = apply_special_tokens(&fields, &mut tokens)
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("mask_token")));
        let mut map = map.clone();
        map.remove("mask_token");
        let fields = Fields { path, map: &map };
        let mut tokens = SpecialTokens::default();
        assert!(apply_special_tokens(&fields, &mut tokens).is_ok());
        assert_eq!(tokens.bos.as_deref(), Some("<s>"));
        assert_eq!(tokens.eos.as_deref(), Some("</s>"));
        assert_eq!(tokens.pad, None);
        assert_eq!(tokens.additional, ["<a>", "<b>"]);
        assert_eq!(tokens.all(), ["<s>", "</s>", "<a>", "<b>"]);
    }
}
