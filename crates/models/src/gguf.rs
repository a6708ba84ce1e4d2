//! A Llama-family decoder from a GGUF file alone: the config from its metadata, the weights from
//! its tensors, as Transformers' GGUF loader (`from_pretrained(dir, gguf_file=...)`) reads them.
//!
//! - The config: `general.architecture` picks the family (`llama`, `qwen2`, `qwen3`; others are refused
//!   by name) and `{arch}.block_count`, `.embedding_length`, `.feed_forward_length`,
//!   `.attention.head_count(_kv)`, `.attention.layer_norm_rms_epsilon`, `.rope.freq_base`,
//!   `.context_length`, `.rope.dimension_count` and `.vocab_size` (else the length of
//!   `tokenizer.ggml.tokens`) become the `config.json` fields Transformers maps them to, each
//!   bounded and checked against the others first ([`Error::GgufMetadata`] names the key). The
//!   LM head is tied to the token embeddings when the file has no `output.weight`.
//! - The tensors: GGUF names (`token_embd`, `blk.N.attn_q`, ..., `output_norm`, `output`) are
//!   served under Transformers' names ([`gguf_name`]); GGUF lists dimensions innermost first,
//!   so a `[ne0, ne1]` tensor is the `[ne1, ne0]` PyTorch matrix, rows of `ne0` inputs.
//! - llama.cpp's converter reorders the rows of Llama's `q_proj` and `k_proj` inside each head
//!   for its interleaved rotary embedding (row `2i + j` of a head holds Transformers' row
//!   `j·half + i`); Transformers' `LlamaTensorProcessor` undoes it (`reverse_permute_weights`:
//!   by the query heads for Q, by the key/value heads for K), and so do we, on f32 rows or on
//!   rows of blocks alike (a block never crosses a row). Qwen2 and Qwen3 files are not permuted
//!   (llama.cpp's `Qwen3Model` converter is its `Qwen2Model` one, plus `attn_q_norm` /
//!   `attn_k_norm`).
//! - Quantized tensors are dequantized to f32 ([`GgufTensors::f32_values`]) or kept as blocks
//!   ([`GgufTensors::blocks`]) for [`crate::weight_storage::WeightStorage::Blocks`], as the
//!   [`WeightOptions`] say.

use std::path::{Path, PathBuf};

use candle_core::Device;
use half::{bf16, f16};
use std::sync::Arc;

use serde_json::{Map, Value, json};

use safeformers_kernels::quantized::{self, BlockFormat};
use safeformers_weights::gguf::{GgmlType, GgufError, GgufFile, GgufHeader, GgufTensor};

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::llama::{Family, LlamaConfig, LlamaForCausalLM};
use crate::weights::{WeightOptions, Weights};

/// The GGUF architectures (`general.architecture`) loaded here.
pub const GGUF_ARCHITECTURES: [&str; 3] = ["llama", "qwen2", "qwen3"];

/// Most decoder layers a GGUF config may declare.
const MAX_LAYERS: u64 = 1 << 10;
/// Largest hidden, head and MLP width.
const MAX_WIDTH: u64 = 1 << 20;
/// Most attention heads.
const MAX_HEADS: u64 = 1 << 12;
/// Largest vocabulary and context length.
const MAX_TOKENS: u64 = 1 << 24;

/// The ggml types of tensors served as f32, and the block formats of the quantized ones.
fn block_format(ggml_type: GgmlType) -> Option<BlockFormat> {
    Some(match ggml_type {
        GgmlType::Q4_0 => BlockFormat::Q4_0,
        GgmlType::Q4_1 => BlockFormat::Q4_1,
        GgmlType::Q5_0 => BlockFormat::Q5_0,
        GgmlType::Q5_1 => BlockFormat::Q5_1,
        GgmlType::Q8_0 => BlockFormat::Q8_0,
        GgmlType::Q2_K => BlockFormat::Q2K,
        GgmlType::Q3_K => BlockFormat::Q3K,
        GgmlType::Q4_K => BlockFormat::Q4K,
        GgmlType::Q5_K => BlockFormat::Q5K,
        GgmlType::Q6_K => BlockFormat::Q6K,
        _ => return None,
    })
}

/// The GGUF name of the tensor Transformers calls `hf_name` (`model.layers.3.self_attn.q_proj.weight`
/// → `blk.3.attn_q.weight`), or `None` for a name GGUF files do not carry.
pub fn gguf_name(hf_name: &str) -> Option<String> {
    let (stem, suffix) = hf_name.rsplit_once('.')?;
    if suffix != "weight" && suffix != "bias" {
        return None;
    }
    let gguf_stem = match stem {
        "model.embed_tokens" => "token_embd".to_string(),
        "model.norm" => "output_norm".to_string(),
        "lm_head" => "output".to_string(),
        _ => {
            let rest = stem.strip_prefix("model.layers.")?;
            let (layer, part) = rest.split_once('.')?;
            let layer: usize = layer.parse().ok()?;
            let part = match part {
                "input_layernorm" => "attn_norm",
                "self_attn.q_proj" => "attn_q",
                "self_attn.k_proj" => "attn_k",
                "self_attn.v_proj" => "attn_v",
                "self_attn.o_proj" => "attn_output",
                "self_attn.q_norm" => "attn_q_norm",
                "self_attn.k_norm" => "attn_k_norm",
                "post_attention_layernorm" => "ffn_norm",
                "mlp.gate_proj" => "ffn_gate",
                "mlp.up_proj" => "ffn_up",
                "mlp.down_proj" => "ffn_down",
                _ => return None,
            };
            format!("blk.{layer}.{part}")
        }
    };
    Some(format!("{gguf_stem}.{suffix}"))
}

/// A GGUF file's tensors under Transformers' names, with what it takes to put llama.cpp's Q/K
/// rows back in Transformers' order.
#[derive(Debug)]
pub struct GgufTensors {
    file: GgufFile,
    /// Query and key/value heads, when Q and K rows are permuted (Llama).
    permuted_heads: Option<(usize, usize)>,
}

impl GgufTensors {
    /// The tensors of `file`, for a model configured as `config`.
    pub fn new(file: GgufFile, config: &LlamaConfig) -> GgufTensors {
        let permuted_heads = (config.family == Family::Llama)
            .then_some((config.num_attention_heads, config.num_key_value_heads));
        GgufTensors {
            file,
            permuted_heads,
        }
    }

    /// The file.
    pub fn file(&self) -> &GgufFile {
        &self.file
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Whether the file has the tensor Transformers calls `hf_name`.
    pub fn contains(&self, hf_name: &str) -> bool {
        gguf_name(hf_name).is_some_and(|name| self.file.tensor(&name).is_some())
    }

    /// The values of `hf_name`, which must have `shape` (PyTorch order), dequantized to f32, Q/K
    /// rows in Transformers' order.
    pub fn f32_values(&self, hf_name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let tensor = self.tensor(hf_name, shape)?;
        let values = self.dequantized(&tensor)?;
        match self.row_heads(hf_name) {
            Some(heads) => self.rows_in_transformers_order(&tensor, &values, heads),
            None => Ok(values),
        }
    }

    /// The blocks of `hf_name` (`shape` `[rows, cols]`), Q/K rows in Transformers' order, if it
    /// is block-quantized; `None` for f32, f16 and bf16 tensors.
    pub fn blocks(
        &self,
        hf_name: &str,
        shape: &[usize],
    ) -> Result<Option<(BlockFormat, Arc<[u8]>)>> {
        let tensor = self.tensor(hf_name, shape)?;
        let Some(format) = block_format(tensor.info.ggml_type) else {
            return Ok(None);
        };
        let bytes = self.file.copy_tensor(&tensor)?;
        let bytes = match self.row_heads(hf_name) {
            Some(heads) => self
                .rows_in_transformers_order(&tensor, &bytes, heads)?
                .into(),
            None => bytes,
        };
        Ok(Some((format, bytes)))
    }

    /// The tensor `hf_name`, checked to have `shape`.
    fn tensor(&self, hf_name: &str, shape: &[usize]) -> Result<GgufTensor<'_>> {
        let missing = || Error::MissingTensor {
            tensor: format!("{hf_name} ({})", gguf_name(hf_name).unwrap_or_default()),
            files: self.path().display().to_string(),
        };
        let name = gguf_name(hf_name).ok_or_else(missing)?;
        let tensor = self.file.tensor(&name).ok_or_else(missing)?;
        if tensor.info.shape != shape {
            return Err(Error::TensorShape {
                tensor: format!("{hf_name} ({name})"),
                expected: shape.to_vec(),
                actual: tensor.info.shape.clone(),
            });
        }
        Ok(tensor)
    }

    /// The heads whose rows llama.cpp permuted in `hf_name`, if any.
    fn row_heads(&self, hf_name: &str) -> Option<usize> {
        let (heads, kv_heads) = self.permuted_heads?;
        if hf_name.contains(".self_attn.q_proj.") {
            Some(heads)
        } else if hf_name.contains(".self_attn.k_proj.") {
            Some(kv_heads)
        } else {
            None
        }
    }

    /// `tensor`'s values as f32.
    fn dequantized(&self, tensor: &GgufTensor<'_>) -> Result<Vec<f32>> {
        let data = tensor.data;
        let values = match tensor.info.ggml_type {
            GgmlType::F32 => data
                .chunks_exact(4)
                .map(|bytes| f32::from_le_bytes(bytes.try_into().unwrap_or_default()))
                .collect(),
            GgmlType::F16 => data
                .chunks_exact(2)
                .map(|bytes| f16::from_le_bytes(bytes.try_into().unwrap_or_default()).to_f32())
                .collect(),
            GgmlType::BF16 => data
                .chunks_exact(2)
                .map(|bytes| bf16::from_le_bytes(bytes.try_into().unwrap_or_default()).to_f32())
                .collect(),
            other => {
                let format = block_format(other).ok_or_else(|| {
                    self.tensor_error(tensor, &format!("type {other} cannot be model weights"))
                })?;
                let count = usize::try_from(tensor.info.element_count())
                    .map_err(|_| self.tensor_error(tensor, "too many elements"))?;
                let mut values = vec![0.0f32; count];
                quantized::dequantize(format, data, &mut values)?;
                values
            }
        };
        Ok(values)
    }

    /// `data` (one element or block run per row, `tensor`'s rows) with the rows of each of
    /// `heads` heads put back from llama.cpp's interleaved order: Transformers' row `j·half + i`
    /// of a head is the file's row `2i + j`.
    fn rows_in_transformers_order<T: Copy>(
        &self,
        tensor: &GgufTensor<'_>,
        data: &[T],
        heads: usize,
    ) -> Result<Vec<T>> {
        let rows = tensor.info.shape.first().copied().unwrap_or(0);
        permuted_rows(data, rows, heads).ok_or_else(|| {
            self.tensor_error(
                tensor,
                &format!("{rows} rows are not whole pairs of rows for {heads} heads"),
            )
        })
    }

    fn tensor_error(&self, tensor: &GgufTensor<'_>, reason: &str) -> Error {
        Error::GgufTensor {
            path: self.path().to_path_buf(),
            tensor: tensor.info.name.clone(),
            reason: reason.to_string(),
        }
    }
}

/// Transformers' `reverse_permute_weights` on `rows` equal rows of `data`: within each of `heads`
/// heads of `2·half` rows, output row `j·half + i` is input row `2i + j`. `None` when the rows
/// are not `heads` whole heads of row pairs.
pub fn permuted_rows<T: Copy>(data: &[T], rows: usize, heads: usize) -> Option<Vec<T>> {
    if rows == 0
        || heads == 0
        || !rows.is_multiple_of(2 * heads)
        || !data.len().is_multiple_of(rows)
    {
        return None;
    }
    let row_len = data.len() / rows;
    let head_rows = rows / heads;
    let half = head_rows / 2;
    let mut out = Vec::with_capacity(data.len());
    for row in 0..rows {
        let (head, within) = (row / head_rows, row % head_rows);
        let (j, i) = (within / half, within % half);
        let source = head * head_rows + 2 * i + j;
        out.extend_from_slice(data.get(source * row_len..(source + 1) * row_len)?);
    }
    Some(out)
}

/// Reads a metadata value of a GGUF file, errors naming the file and key.
struct MetadataReader<'a> {
    file: &'a GgufFile,
    architecture: &'a str,
}

impl MetadataReader<'_> {
    fn error(&self, key: &str, reason: impl Into<String>) -> Error {
        Error::GgufMetadata {
            path: self.file.path().to_path_buf(),
            key: key.to_string(),
            reason: reason.into(),
        }
    }

    fn key(&self, name: &str) -> String {
        format!("{}.{name}", self.architecture)
    }

    /// `{arch}.{name}` (its key, and its value through `get` when present).
    fn read<T>(
        &self,
        name: &str,
        get: impl Fn(&GgufHeader, &str) -> std::result::Result<Option<T>, GgufError>,
    ) -> Result<(String, Option<T>)> {
        let key = self.key(name);
        let value =
            get(self.file.header(), &key).map_err(|error| self.error(&key, error.to_string()))?;
        Ok((key, value))
    }

    /// `{arch}.{name}` as an integer in `1..=max`, if present.
    fn count(&self, name: &str, max: u64) -> Result<Option<usize>> {
        let (key, value) = self.read(name, GgufHeader::get_u64)?;
        match value {
            None => Ok(None),
            Some(0) => Err(self.error(&key, "must be positive")),
            Some(value) if value > max => {
                Err(self.error(&key, format!("{value} is more than the limit {max}")))
            }
            Some(value) => usize::try_from(value)
                .map(Some)
                .map_err(|_| self.error(&key, "is too large")),
        }
    }

    /// `{arch}.{name}` as an integer in `1..=max`, which must be present.
    fn required_count(&self, name: &str, max: u64) -> Result<usize> {
        self.count(name, max)?
            .ok_or_else(|| self.error(&self.key(name), "is required but missing"))
    }

    /// `{arch}.{name}` as a positive finite f32, if present.
    fn positive(&self, name: &str) -> Result<Option<f32>> {
        let (key, value) = self.read(name, GgufHeader::get_f32)?;
        match value {
            Some(value) if !(value.is_finite() && value > 0.0) => {
                Err(self.error(&key, format!("{value} is not a positive number")))
            }
            value => Ok(value),
        }
    }
}

/// The `config.json` Transformers derives from `file`'s metadata, every value checked first.
pub fn model_config(file: &GgufFile) -> Result<ModelConfig> {
    let header = file.header();
    let path = file.path();
    let metadata_error = |key: &str, reason: String| Error::GgufMetadata {
        path: path.to_path_buf(),
        key: key.to_string(),
        reason,
    };
    let architecture = header
        .architecture()
        .map_err(|error| metadata_error("general.architecture", error.to_string()))?
        .ok_or_else(|| metadata_error("general.architecture", "is missing".to_string()))?;
    let family = match architecture {
        "llama" => Family::Llama,
        "qwen2" => Family::Qwen2,
        "qwen3" => Family::Qwen3,
        other => {
            return Err(Error::GgufArchitecture {
                path: path.to_path_buf(),
                architecture: other.to_string(),
            });
        }
    };
    let reader = MetadataReader { file, architecture };
    let mut raw = sizes(&reader)?;
    let vocab_size = vocabulary_size(&reader)?;
    raw.insert("vocab_size".into(), json!(vocab_size));
    let context = reader.required_count("context_length", MAX_TOKENS)?;
    raw.insert("max_position_embeddings".into(), json!(context));
    let eps_key = reader.key("attention.layer_norm_rms_epsilon");
    let eps = reader
        .positive("attention.layer_norm_rms_epsilon")?
        .ok_or_else(|| metadata_error(&eps_key, "is required but missing".to_string()))?;
    raw.insert("rms_norm_eps".into(), json!(f64::from(eps)));
    let theta = reader.positive("rope.freq_base")?.unwrap_or(10_000.0);
    raw.insert("rope_theta".into(), json!(f64::from(theta)));
    refuse_rope_scaling(&reader)?;
    let tied = file.tensor("output.weight").is_none();
    raw.insert("tie_word_embeddings".into(), json!(tied));
    raw.insert("hidden_act".into(), json!("silu"));
    raw.insert("model_type".into(), json!(family.model_type()));
    raw.insert("architectures".into(), json!([family.class_name()]));
    special_token_ids(&reader, vocab_size, &mut raw)?;
    let text = Value::Object(raw).to_string();
    ModelConfig::from_json_str(&text, path)
}

/// `bos_token_id`, `pad_token_id` and `eos_token_id` from `tokenizer.ggml.*`, each below
/// `vocab_size`. The end of generation is every end token the file names, as llama.cpp stops
/// on any of them: `eos`, and `eot` and `eom` when present (a chat model's end of turn).
fn special_token_ids(
    reader: &MetadataReader<'_>,
    vocab_size: usize,
    raw: &mut Map<String, Value>,
) -> Result<()> {
    let token_id = |name: &str| -> Result<Option<u32>> {
        let key = format!("tokenizer.ggml.{name}");
        let id = reader
            .file
            .header()
            .get_u32(&key)
            .map_err(|error| reader.error(&key, error.to_string()))?;
        match id {
            Some(id) if usize::try_from(id).map_or(true, |id| id >= vocab_size) => Err(reader
                .error(
                    &key,
                    format!("{id} is outside the vocabulary of {vocab_size}"),
                )),
            id => Ok(id),
        }
    };
    for (name, field) in [
        ("bos_token_id", "bos_token_id"),
        ("padding_token_id", "pad_token_id"),
    ] {
        if let Some(id) = token_id(name)? {
            raw.insert(field.into(), json!(id));
        }
    }
    let mut end_ids = Vec::new();
    for name in ["eos_token_id", "eot_token_id", "eom_token_id"] {
        if let Some(id) = token_id(name)?
            && !end_ids.contains(&id)
        {
            end_ids.push(id);
        }
    }
    match end_ids.as_slice() {
        [] => {}
        [one] => {
            raw.insert("eos_token_id".into(), json!(one));
        }
        many => {
            raw.insert("eos_token_id".into(), json!(many));
        }
    }
    Ok(())
}

/// The widths, layer and head counts, checked against each other.
fn sizes(reader: &MetadataReader<'_>) -> Result<Map<String, Value>> {
    let layers = reader.required_count("block_count", MAX_LAYERS)?;
    let hidden = reader.required_count("embedding_length", MAX_WIDTH)?;
    let inner = reader.required_count("feed_forward_length", MAX_WIDTH)?;
    let heads = reader.required_count("attention.head_count", MAX_HEADS)?;
    let kv_heads = reader
        .count("attention.head_count_kv", MAX_HEADS)?
        .unwrap_or(heads);
    if !heads.is_multiple_of(kv_heads) {
        return Err(reader.error(
            &reader.key("attention.head_count_kv"),
            format!("{kv_heads} does not divide the {heads} attention heads"),
        ));
    }
    let key_length = reader.count("attention.key_length", MAX_WIDTH)?;
    let head_dim = match key_length {
        Some(width) => width,
        None if hidden.is_multiple_of(heads) => hidden / heads,
        None => {
            return Err(reader.error(
                &reader.key("attention.head_count"),
                format!("{heads} heads do not divide embedding_length {hidden}"),
            ));
        }
    };
    for name in ["attention.value_length", "rope.dimension_count"] {
        if let Some(width) = reader.count(name, MAX_WIDTH)?
            && width != head_dim
        {
            return Err(reader.error(
                &reader.key(name),
                format!("{width} differs from the head width {head_dim} (partial rotary and unequal value heads are not supported)"),
            ));
        }
    }
    let mut raw = Map::new();
    raw.insert("num_hidden_layers".into(), json!(layers));
    raw.insert("hidden_size".into(), json!(hidden));
    raw.insert("intermediate_size".into(), json!(inner));
    raw.insert("num_attention_heads".into(), json!(heads));
    raw.insert("num_key_value_heads".into(), json!(kv_heads));
    raw.insert("head_dim".into(), json!(head_dim));
    Ok(raw)
}

/// `{arch}.vocab_size`, else the length of `tokenizer.ggml.tokens`.
fn vocabulary_size(reader: &MetadataReader<'_>) -> Result<usize> {
    if let Some(size) = reader.count("vocab_size", MAX_TOKENS)? {
        return Ok(size);
    }
    let key = "tokenizer.ggml.tokens";
    let tokens = reader
        .file
        .header()
        .get_string_array(key)
        .map_err(|error| reader.error(key, error.to_string()))?;
    match tokens.map(|tokens| tokens.len()) {
        Some(0) => Err(reader.error(key, "is empty")),
        Some(len) => Ok(len),
        None => Err(reader.error(
            key,
            format!(
                "is missing, and so is {}: the vocabulary size is unknown",
                reader.key("vocab_size")
            ),
        )),
    }
}

/// Rope scaling (`{arch}.rope.scaling.type` other than `none`) and Llama 3's `rope_freqs`
/// tensor are not read yet: refused rather than ignored.
fn refuse_rope_scaling(reader: &MetadataReader<'_>) -> Result<()> {
    let key = reader.key("rope.scaling.type");
    let scaling = reader
        .file
        .header()
        .get_string(&key)
        .map_err(|error| reader.error(&key, error.to_string()))?;
    if let Some(kind) = scaling
        && kind != "none"
    {
        return Err(reader.error(&key, format!("rope scaling `{kind}` is not supported")));
    }
    if reader.file.tensor("rope_freqs.weight").is_some() {
        return Err(reader.error(
            "rope_freqs.weight",
            "per-frequency rope factors (Llama 3) are not supported",
        ));
    }
    Ok(())
}

/// Loads the Llama-family model of the GGUF file at `path` onto `device`: quantized linear
/// weights kept as blocks, unless `options` dequantize them
/// ([`WeightOptions::dequantizing_blocks`]) or choose another storage.
pub fn load_causal_lm(
    path: &Path,
    device: &Device,
    options: WeightOptions,
) -> Result<LlamaForCausalLM> {
    let file = GgufFile::open(path)?;
    let config = model_config(&file)?;
    let llama = LlamaConfig::from_model_config(&config)?;
    let tensors = GgufTensors::new(file, &llama);
    let weights = Weights::from_gguf(&tensors, device).with_options(options);
    LlamaForCausalLM::load(&weights, config)
}

/// The GGUF file `path` names: itself when it is a `.gguf` file, else the one `.gguf` file in
/// the folder `path` (none or several is an [`Error::GgufChoice`]). `None` when `path` is a
/// folder with a `config.json` (a Transformers folder) or not GGUF at all.
pub fn find_gguf(path: &Path) -> Result<Option<PathBuf>> {
    let is_gguf = |path: &Path| {
        path.extension()
            .is_some_and(|extension| extension.eq_ignore_ascii_case("gguf"))
    };
    if !path.is_dir() {
        return Ok(is_gguf(path).then(|| path.to_path_buf()));
    }
    if path.join("config.json").exists() {
        return Ok(None);
    }
    let io_error = |source| Error::from(safeformers_files::FileError::io(path, source));
    let mut found = Vec::new();
    for entry in std::fs::read_dir(path).map_err(io_error)? {
        let entry = entry.map_err(io_error)?;
        if entry.file_type().map_err(io_error)?.is_file() && is_gguf(&entry.path()) {
            found.push(entry.path());
        }
    }
    found.sort();
    match found.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one.clone())),
        several => Err(Error::GgufChoice {
            path: path.to_path_buf(),
            reason: format!(
                "holds {} GGUF files ({}); name the one to load",
                several.len(),
                several
                    .iter()
                    .filter_map(|file| file.file_name()?.to_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}
