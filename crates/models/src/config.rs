//! `config.json`: the fields every architecture shares, read strictly.
//!
//! Files written by Transformers 4 and 5 are both accepted: 5 writes `dtype` where 4 wrote
//! `torch_dtype`, and may nest `rope_parameters`; unknown keys are ignored, as Transformers
//! ignores them. Each architecture reads its own fields from the same file with
//! [`ModelConfig::architecture_config`] into a serde struct that mirrors Transformers' config
//! class (same names, same defaults).
//!
//! Nothing here acts on a field: `auto_map` is recorded so that [`crate::auto`] can refuse
//! models that need custom code, and no field (`trust_remote_code`, file names, ...) can widen
//! what a load may do.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Largest `config.json` read (16 MiB; real ones are a few kB, large label maps a few MB).
pub const MAX_CONFIG_BYTES: u64 = 16 * 1024 * 1024;

/// What `problem_type` says the classification head was trained for (Transformers' three
/// values). It decides how pipelines turn logits into scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemType {
    /// `"regression"`: logits are the prediction.
    Regression,
    /// `"single_label_classification"`: softmax over labels.
    SingleLabelClassification,
    /// `"multi_label_classification"`: a sigmoid per label.
    MultiLabelClassification,
}

impl ProblemType {
    /// The `config.json` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemType::Regression => "regression",
            ProblemType::SingleLabelClassification => "single_label_classification",
            ProblemType::MultiLabelClassification => "multi_label_classification",
        }
    }
}

/// The fields of `config.json` that all architectures share, plus the whole file for the
/// architecture-specific ones.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    path: PathBuf,
    raw: Map<String, Value>,
    /// `model_type` (empty when the file has none).
    pub model_type: String,
    /// `architectures`: the model classes the checkpoint was saved from.
    pub architectures: Vec<String>,
    /// `id2label`, with the JSON string keys parsed to indices.
    pub id2label: BTreeMap<usize, String>,
    /// `label2id`.
    pub label2id: BTreeMap<String, usize>,
    /// Number of labels of a classification head: `id2label`'s size, else `num_labels`, else 2
    /// (Transformers' default).
    pub num_labels: usize,
    /// `problem_type`, if set.
    pub problem_type: Option<ProblemType>,
    /// `pad_token_id` (`None` when absent or `null`).
    pub pad_token_id: Option<i64>,
    /// `tie_word_embeddings` (default `true`): the LM decoder shares the word embeddings.
    pub tie_word_embeddings: bool,
    /// `dtype` (Transformers 5) or `torch_dtype` (4): the dtype the weights were saved in.
    /// Informational; safeformers computes in f32.
    pub dtype: Option<String>,
    /// `auto_map`: Auto class → code reference(s). Recorded, never followed.
    pub auto_map: BTreeMap<String, Vec<String>>,
}

impl ModelConfig {
    /// Reads `path` (a `config.json`), refusing files over [`MAX_CONFIG_BYTES`].
    pub fn from_file(path: &Path) -> Result<ModelConfig> {
        let cap = safeformers_files::ReadCap::new("a model config", MAX_CONFIG_BYTES);
        let text = match safeformers_files::read_capped_string(path, cap) {
            Ok(text) => text,
            Err(safeformers_files::FileError::TooLarge { size, .. }) => {
                return Err(Error::ConfigTooLarge {
                    path: path.to_path_buf(),
                    size: size.unwrap_or(MAX_CONFIG_BYTES + 1),
                    limit: MAX_CONFIG_BYTES,
                });
            }
            Err(error) => return Err(error.into()),
        };
        ModelConfig::from_json_str(&text, path)
    }

    /// Parses config JSON text; `origin` names it in errors.
    pub fn from_json_str(text: &str, origin: &Path) -> Result<ModelConfig> {
        let path = origin.to_path_buf();
        if text.len() as u64 > MAX_CONFIG_BYTES {
            return Err(Error::ConfigTooLarge {
                path,
                size: text.len() as u64,
                limit: MAX_CONFIG_BYTES,
            });
        }
        let value: Value = serde_json::from_str(text).map_err(|source| Error::ConfigJson {
            path: path.clone(),
            source,
        })?;
        let Value::Object(raw) = value else {
            return Err(invalid(
                &path,
                "(root)",
                "config.json must be a JSON object",
            ));
        };

        let model_type = match raw.get("model_type") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(name)) => name.clone(),
            Some(_) => return Err(invalid(&path, "model_type", "must be a string")),
        };
        let architectures = match raw.get("architectures") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| item.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| invalid(&path, "architectures", "must be a list of strings"))?,
            Some(_) => {
                return Err(invalid(&path, "architectures", "must be a list of strings"));
            }
        };
        let id2label = parse_id2label(&path, raw.get("id2label"))?;
        let label2id = parse_label2id(&path, raw.get("label2id"))?;
        let num_labels = if id2label.is_empty() {
            match raw.get("num_labels") {
                None | Some(Value::Null) => 2,
                Some(value) => value
                    .as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| {
                        invalid(&path, "num_labels", "must be a non-negative integer")
                    })?,
            }
        } else {
            id2label.len()
        };
        let problem_type = match raw.get("problem_type") {
            None | Some(Value::Null) => None,
            Some(Value::String(name)) => Some(match name.as_str() {
                "regression" => ProblemType::Regression,
                "single_label_classification" => ProblemType::SingleLabelClassification,
                "multi_label_classification" => ProblemType::MultiLabelClassification,
                other => {
                    return Err(invalid(
                        &path,
                        "problem_type",
                        &format!(
                            "`{other}` is not one of regression, single_label_classification, \
                             multi_label_classification"
                        ),
                    ));
                }
            }),
            Some(_) => return Err(invalid(&path, "problem_type", "must be a string")),
        };
        let pad_token_id = match raw.get("pad_token_id") {
            None | Some(Value::Null) => None,
            Some(value) => Some(
                value
                    .as_i64()
                    .ok_or_else(|| invalid(&path, "pad_token_id", "must be an integer"))?,
            ),
        };
        let tie_word_embeddings = match raw.get("tie_word_embeddings") {
            None | Some(Value::Null) => true,
            Some(Value::Bool(tie)) => *tie,
            Some(_) => return Err(invalid(&path, "tie_word_embeddings", "must be a boolean")),
        };
        // Transformers 5 writes `dtype`; 4 wrote `torch_dtype`. Either may be absent or null.
        let dtype = ["dtype", "torch_dtype"]
            .iter()
            .find_map(|key| raw.get(*key).and_then(Value::as_str))
            .map(str::to_string);
        let auto_map = parse_auto_map(&path, raw.get("auto_map"))?;

        Ok(ModelConfig {
            path,
            raw,
            model_type,
            architectures,
            id2label,
            label2id,
            num_labels,
            problem_type,
            pad_token_id,
            tie_word_embeddings,
            dtype,
            auto_map,
        })
    }

    /// The file this config was read from (used in error messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The whole JSON object, for fields this struct does not model.
    pub fn raw(&self) -> &Map<String, Value> {
        &self.raw
    }

    /// The `auto_map` reference for `auto_class` (`"AutoModel"`, `"AutoConfig"`, ...), if any.
    pub fn auto_map_entry(&self, auto_class: &str) -> Option<&str> {
        self.auto_map
            .get(auto_class)
            .and_then(|refs| refs.iter().find(|reference| !reference.is_empty()))
            .map(String::as_str)
    }

    /// Reads the architecture-specific config `T` from the same file, after checking that every
    /// field in `required` is present and not `null` (an error names the first one missing).
    ///
    /// `T` mirrors Transformers' config class; serde ignores the keys `T` does not name.
    pub fn architecture_config<T: DeserializeOwned>(&self, required: &[&'static str]) -> Result<T> {
        for field in required {
            if self.raw.get(*field).is_none_or(Value::is_null) {
                return Err(Error::MissingConfigField {
                    path: self.path.clone(),
                    model_type: self.model_type.clone(),
                    field,
                });
            }
        }
        serde_json::from_value(Value::Object(self.raw.clone())).map_err(|source| {
            Error::ConfigJson {
                path: self.path.clone(),
                source,
            }
        })
    }

    /// An [`Error::InvalidConfigField`] about `field` of this file.
    pub(crate) fn invalid_field(&self, field: &str, reason: &str) -> Error {
        invalid(&self.path, field, reason)
    }
}

fn invalid(path: &Path, field: &str, reason: &str) -> Error {
    Error::InvalidConfigField {
        path: path.to_path_buf(),
        field: field.to_string(),
        reason: reason.to_string(),
    }
}

/// `id2label` has string keys in JSON (`{"0": "NEGATIVE"}`); they must be distinct indices.
fn parse_id2label(path: &Path, value: Option<&Value>) -> Result<BTreeMap<usize, String>> {
    let mut out = BTreeMap::new();
    let object = match value {
        None | Some(Value::Null) => return Ok(out),
        Some(Value::Object(object)) => object,
        Some(_) => return Err(invalid(path, "id2label", "must be an object")),
    };
    for (key, label) in object {
        let index: usize = key.trim().parse().map_err(|_| {
            invalid(
                path,
                "id2label",
                &format!("key `{key}` is not a label index"),
            )
        })?;
        let label = label.as_str().ok_or_else(|| {
            invalid(
                path,
                "id2label",
                &format!("the label of `{key}` is not a string"),
            )
        })?;
        if out.insert(index, label.to_string()).is_some() {
            return Err(invalid(
                path,
                "id2label",
                &format!("index {index} appears twice"),
            ));
        }
    }
    // Transformers builds `num_labels` from the map's size; indices must be 0..n for a head.
    if out
        .keys()
        .enumerate()
        .any(|(position, index)| position != *index)
    {
        return Err(invalid(
            path,
            "id2label",
            "indices must be 0, 1, ... without gaps",
        ));
    }
    Ok(out)
}

fn parse_label2id(path: &Path, value: Option<&Value>) -> Result<BTreeMap<String, usize>> {
    let mut out = BTreeMap::new();
    let object = match value {
        None | Some(Value::Null) => return Ok(out),
        Some(Value::Object(object)) => object,
        Some(_) => return Err(invalid(path, "label2id", "must be an object")),
    };
    for (label, index) in object {
        let index = index
            .as_u64()
            .and_then(|index| usize::try_from(index).ok())
            .ok_or_else(|| {
                invalid(
                    path,
                    "label2id",
                    &format!("the index of `{label}` is not a non-negative integer"),
                )
            })?;
        out.insert(label.clone(), index);
    }
    Ok(out)
}

/// `auto_map` values are `"module.Class"`, `"org/repo--module.Class"`, or for tokenizers a
/// `[slow, fast]` list whose items may be `null` (kept as empty strings).
fn parse_auto_map(path: &Path, value: Option<&Value>) -> Result<BTreeMap<String, Vec<String>>> {
    let mut out = BTreeMap::new();
    let object = match value {
        None | Some(Value::Null) => return Ok(out),
        Some(Value::Object(object)) => object,
        Some(_) => return Err(invalid(path, "auto_map", "must be an object")),
    };
    for (class, reference) in object {
        let references = match reference {
            Value::String(reference) => vec![reference.clone()],
            Value::Array(items) => items
                .iter()
                .map(|item| match item {
                    Value::String(reference) => Some(reference.clone()),
                    Value::Null => Some(String::new()),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    invalid(
                        path,
                        "auto_map",
                        &format!("entry `{class}` must be a string or a list of strings"),
                    )
                })?,
            _ => {
                return Err(invalid(
                    path,
                    "auto_map",
                    &format!("entry `{class}` must be a string or a list of strings"),
                ));
            }
        };
        out.insert(class.clone(), references);
    }
    Ok(out)
}

/// serde defaults shared by the architecture configs (Transformers' defaults).
pub(crate) mod defaults {
    pub(crate) fn hidden_act() -> String {
        "gelu".to_string()
    }
    pub(crate) fn dropout() -> f64 {
        0.1
    }
    pub(crate) fn max_position_embeddings() -> usize {
        512
    }
    pub(crate) fn type_vocab_size() -> usize {
        2
    }
    pub(crate) fn layer_norm_eps() -> f64 {
        1e-12
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ModelConfig> {
        ModelConfig::from_json_str(text, Path::new("config.json"))
    }

    #[test]
    fn reads_v4_and_v5_dtype_and_ignores_unknown_keys() -> Result<()> {
        let v4 = parse(r#"{"model_type":"bert","torch_dtype":"float32","whatever":[1,2]}"#)?;
        assert_eq!(v4.dtype.as_deref(), Some("float32"));
        let v5 = parse(
            r#"{"model_type":"bert","dtype":"bfloat16","rope_parameters":{"rope_type":"default"}}"#,
        )?;
        assert_eq!(v5.dtype.as_deref(), Some("bfloat16"));
        assert_eq!(v5.num_labels, 2);
        assert!(v5.tie_word_embeddings);
        Ok(())
    }

    #[test]
    fn labels_have_string_keys() -> Result<()> {
        let config = parse(
            r#"{"model_type":"bert","id2label":{"1":"POS","0":"NEG"},"label2id":{"NEG":0,"POS":1},
                "problem_type":"single_label_classification","pad_token_id":0}"#,
        )?;
        assert_eq!(config.id2label.get(&1).map(String::as_str), Some("POS"));
        assert_eq!(config.label2id.get("NEG"), Some(&0));
        assert_eq!(config.num_labels, 2);
        assert_eq!(
            config.problem_type,
            Some(ProblemType::SingleLabelClassification)
        );
        assert_eq!(config.pad_token_id, Some(0));
        Ok(())
    }

    #[test]
    fn bad_fields_are_named() {
        for (text, field) in [
            (r#"{"id2label":{"x":"A"}}"#, "id2label"),
            (r#"{"id2label":{"0":"A","2":"B"}}"#, "id2label"),
            (r#"{"problem_type":"ranking"}"#, "problem_type"),
            (r#"{"model_type":3}"#, "model_type"),
            (r#"{"auto_map":{"AutoModel":5}}"#, "auto_map"),
            (r#"{"pad_token_id":"zero"}"#, "pad_token_id"),
            ("[1]", "(root)"),
        ] {
            match parse(text) {
                Err(Error::InvalidConfigField { field: got, .. }) => assert_eq!(got, field),
                other => panic!("{text}: expected an error about {field}, got {other:?}"),
            }
        }
        assert!(matches!(parse("{"), Err(Error::ConfigJson { .. })));
    }

    #[test]
    fn auto_map_lists_keep_their_entries() -> Result<()> {
        let config = parse(
            r#"{"auto_map":{"AutoModel":"modeling_x.MyModel",
                "AutoTokenizer":[null,"tok.MyTokenizerFast"]}}"#,
        )?;
        assert_eq!(
            config.auto_map_entry("AutoModel"),
            Some("modeling_x.MyModel")
        );
        assert_eq!(
            config.auto_map_entry("AutoTokenizer"),
            Some("tok.MyTokenizerFast")
        );
        assert_eq!(config.auto_map_entry("AutoConfig"), None);
        Ok(())
    }

    #[test]
    fn oversized_config_is_refused() {
        let text = format!(
            "{{\"x\":\"{}\"}}",
            "a".repeat(MAX_CONFIG_BYTES as usize + 1)
        );
        assert!(matches!(parse(&text), Err(Error::ConfigTooLarge { .. })));
    }
}
