//! A Llama-family model from a hand-built GGUF file: the config from its metadata (and every
//! refusal naming the file and key), llama.cpp's Q/K row permutation undone on f32 rows and on
//! block rows, and the whole model giving the logits of the same weights saved by Transformers'
//! convention (safetensors, rows in Transformers' order).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::path::{Path, PathBuf};

use candle_core::Device;
use safeformers_kernels::quantized::{self, BlockFormat};
use safeformers_models::gguf::{self, GgufTensors};
use safeformers_models::llama::{Family, LlamaConfig};
use safeformers_models::{AutoModelForCausalLM, CausalLm, Error, WeightOptions, Weights};
use safeformers_weights::LoadPolicy;
use safeformers_weights::gguf::GgufFile;

/// ggml type ids.
const F32: u32 = 0;
const Q8_0: u32 = 8;

/// A metadata value to write.
#[derive(Clone)]
enum Meta {
    U32(u32),
    F32(f32),
    Str(&'static str),
    Strings(Vec<String>),
}

/// A GGUF file written from its parts: metadata, then tensors with their bytes.
#[derive(Clone, Default)]
struct GgufWriter {
    metadata: Vec<(String, Meta)>,
    /// Name, GGUF dims (`ne[0]` first), ggml type, bytes.
    tensors: Vec<(String, Vec<u64>, u32, Vec<u8>)>,
}

fn gguf_string(text: &str) -> Vec<u8> {
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    out
}

impl GgufWriter {
    fn set(mut self, key: &str, value: Meta) -> Self {
        self.metadata.retain(|(known, _)| known != key);
        self.metadata.push((key.to_string(), value));
        self
    }

    fn without(mut self, key: &str) -> Self {
        self.metadata.retain(|(known, _)| known != key);
        self.tensors.retain(|(known, ..)| known != key);
        self
    }

    fn tensor(mut self, name: &str, dims: &[u64], ggml_type: u32, bytes: Vec<u8>) -> Self {
        self.tensors.retain(|(known, ..)| known != name);
        self.tensors
            .push((name.to_string(), dims.to_vec(), ggml_type, bytes));
        self
    }

    fn build(&self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            out.extend(gguf_string(key));
            match value {
                Meta::U32(v) => {
                    out.extend_from_slice(&4u32.to_le_bytes());
                    out.extend_from_slice(&v.to_le_bytes());
                }
                Meta::F32(v) => {
                    out.extend_from_slice(&6u32.to_le_bytes());
                    out.extend_from_slice(&v.to_le_bytes());
                }
                Meta::Str(text) => {
                    out.extend_from_slice(&8u32.to_le_bytes());
                    out.extend(gguf_string(text));
                }
                Meta::Strings(items) => {
                    out.extend_from_slice(&9u32.to_le_bytes());
                    out.extend_from_slice(&8u32.to_le_bytes());
                    out.extend_from_slice(&(items.len() as u64).to_le_bytes());
                    for item in items {
                        out.extend(gguf_string(item));
                    }
                }
            }
        }
        let mut offset = 0u64;
        for (name, dims, ggml_type, bytes) in &self.tensors {
            out.extend(gguf_string(name));
            out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            for dim in dims {
                out.extend_from_slice(&dim.to_le_bytes());
            }
            out.extend_from_slice(&ggml_type.to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            offset = (offset + bytes.len() as u64).div_ceil(32) * 32;
        }
        out.resize(out.len().div_ceil(32) * 32, 0);
        for (index, (_, _, _, bytes)) in self.tensors.iter().enumerate() {
            out.extend_from_slice(bytes);
            if index + 1 < self.tensors.len() {
                out.resize(out.len().div_ceil(32) * 32, 0);
            }
        }
        out
    }

    fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, self.build()).unwrap();
        path
    }
}

const HIDDEN: usize = 64;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const HEAD_DIM: usize = HIDDEN / HEADS;
const INNER: usize = 96;
const VOCAB: usize = 40;
const LAYERS: usize = 2;

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// llama.cpp's converter permutation (`convert_hf_to_gguf.py`'s `permute`): within each head,
/// file row `2i + j` holds Transformers' row `j·half + i`. Written here independently of the
/// library's inverse.
fn llama_cpp_permute(values: &[f32], rows: usize, heads: usize) -> Vec<f32> {
    let cols = values.len() / rows;
    let head_rows = rows / heads;
    let half = head_rows / 2;
    let mut out = vec![0.0; values.len()];
    for head in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let file_row = head * head_rows + 2 * i + j;
                let hf_row = head * head_rows + j * half + i;
                out[file_row * cols..(file_row + 1) * cols]
                    .copy_from_slice(&values[hf_row * cols..(hf_row + 1) * cols]);
            }
        }
    }
    out
}

/// The tiny model's tensors in Transformers' names and order, `[out, in]`.
fn hf_tensors() -> Vec<(String, Vec<usize>, Vec<f32>)> {
    hf_tensors_with_bias(false)
}

/// [`hf_tensors`], with Qwen2's q/k/v biases when `qkv_bias`.
fn hf_tensors_with_bias(qkv_bias: bool) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut out = Vec::new();
    let mut seed = 1;
    let mut add = |name: String, shape: Vec<usize>, norm: bool| {
        seed += 1;
        let count = shape.iter().product();
        let values = if norm {
            common::values(count, seed)
                .iter()
                .map(|v| 1.0 + v)
                .collect()
        } else {
            common::values(count, seed)
                .iter()
                .map(|v| v * 4.0)
                .collect()
        };
        out.push((name, shape, values));
    };
    add(
        "model.embed_tokens.weight".into(),
        vec![VOCAB, HIDDEN],
        false,
    );
    for layer in 0..LAYERS {
        let p = format!("model.layers.{layer}.");
        add(format!("{p}input_layernorm.weight"), vec![HIDDEN], true);
        add(
            format!("{p}self_attn.q_proj.weight"),
            vec![HIDDEN, HIDDEN],
            false,
        );
        add(
            format!("{p}self_attn.k_proj.weight"),
            vec![KV_HEADS * HEAD_DIM, HIDDEN],
            false,
        );
        add(
            format!("{p}self_attn.v_proj.weight"),
            vec![KV_HEADS * HEAD_DIM, HIDDEN],
            false,
        );
        if qkv_bias {
            add(format!("{p}self_attn.q_proj.bias"), vec![HIDDEN], false);
            add(
                format!("{p}self_attn.k_proj.bias"),
                vec![KV_HEADS * HEAD_DIM],
                false,
            );
            add(
                format!("{p}self_attn.v_proj.bias"),
                vec![KV_HEADS * HEAD_DIM],
                false,
            );
        }
        add(
            format!("{p}self_attn.o_proj.weight"),
            vec![HIDDEN, HIDDEN],
            false,
        );
        add(
            format!("{p}post_attention_layernorm.weight"),
            vec![HIDDEN],
            true,
        );
        add(
            format!("{p}mlp.gate_proj.weight"),
            vec![INNER, HIDDEN],
            false,
        );
        add(format!("{p}mlp.up_proj.weight"), vec![INNER, HIDDEN], false);
        add(
            format!("{p}mlp.down_proj.weight"),
            vec![HIDDEN, INNER],
            false,
        );
    }
    add("model.norm.weight".into(), vec![HIDDEN], true);
    out
}

/// The same tensors as llama.cpp writes them: GGUF names, reversed dims, Q/K rows permuted;
/// matrices as `matrix_type` (F32 or Q8_0), norms F32.
fn tiny_llama(matrix_type: u32) -> GgufWriter {
    tiny_gguf("llama", matrix_type)
}

/// [`hf_tensors`] with what `arch` adds: Qwen2's q/k/v biases, Qwen3's per-head `q_norm` and
/// `k_norm` (appended, so the other tensors keep their values).
fn hf_tensors_of(arch: &str) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut out = hf_tensors_with_bias(arch == "qwen2");
    if arch == "qwen3" {
        for layer in 0..LAYERS {
            for (seed, norm) in [(1000, "q_norm"), (2000, "k_norm")] {
                let values = common::values(HEAD_DIM, seed + layer as u64)
                    .iter()
                    .map(|v| 1.0 + v)
                    .collect();
                let name = format!("model.layers.{layer}.self_attn.{norm}.weight");
                out.push((name, vec![HEAD_DIM], values));
            }
        }
    }
    out
}

/// A tiny `llama` (Q/K permuted), `qwen2` (q/k/v biases, nothing permuted) or `qwen3` (q/k
/// norms, nothing permuted) GGUF.
fn tiny_gguf(arch: &'static str, matrix_type: u32) -> GgufWriter {
    let key = |name: &str| format!("{arch}.{name}");
    let mut writer = GgufWriter::default()
        .set("general.architecture", Meta::Str(arch))
        .set("general.name", Meta::Str("tiny"))
        .set(&key("block_count"), Meta::U32(LAYERS as u32))
        .set(&key("embedding_length"), Meta::U32(HIDDEN as u32))
        .set(&key("feed_forward_length"), Meta::U32(INNER as u32))
        .set(&key("attention.head_count"), Meta::U32(HEADS as u32))
        .set(&key("attention.head_count_kv"), Meta::U32(KV_HEADS as u32))
        .set(&key("attention.layer_norm_rms_epsilon"), Meta::F32(1e-5))
        .set(&key("rope.freq_base"), Meta::F32(10_000.0))
        .set(&key("rope.dimension_count"), Meta::U32(HEAD_DIM as u32))
        .set(&key("context_length"), Meta::U32(256))
        .set(
            "tokenizer.ggml.tokens",
            Meta::Strings((0..VOCAB).map(|t| format!("t{t}")).collect()),
        );
    let permuted = arch == "llama";
    for (name, shape, values) in hf_tensors_of(arch) {
        let name = gguf::gguf_name(&name).unwrap();
        let values = if !permuted {
            values
        } else if name.contains("attn_q") {
            llama_cpp_permute(&values, shape[0], HEADS)
        } else if name.contains("attn_k") {
            llama_cpp_permute(&values, shape[0], KV_HEADS)
        } else {
            values
        };
        let dims: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
        writer = if shape.len() == 2 && matrix_type == Q8_0 {
            let mut bytes = vec![0u8; BlockFormat::Q8_0.bytes_for(values.len()).unwrap()];
            quantized::quantize(BlockFormat::Q8_0, &values, &mut bytes).unwrap();
            writer.tensor(&name, &dims, Q8_0, bytes)
        } else {
            writer.tensor(&name, &dims, F32, f32_bytes(&values))
        };
    }
    writer
}

fn open_tensors(path: &Path) -> GgufTensors {
    let file = GgufFile::open(path).unwrap();
    let config = gguf::model_config(&file).unwrap();
    GgufTensors::new(file, &LlamaConfig::from_model_config(&config).unwrap())
}

#[test]
fn config_comes_from_the_metadata() {
    let dir = common::temp_dir("gguf-config");
    let path = tiny_llama(F32).write(&dir, "tiny.gguf");
    let file = GgufFile::open(&path).unwrap();
    let config = gguf::model_config(&file).unwrap();
    assert_eq!(config.model_type, "llama");
    assert!(config.tie_word_embeddings, "no output.weight: tied");
    let llama = LlamaConfig::from_model_config(&config).unwrap();
    assert_eq!(llama.family, Family::Llama);
    assert_eq!(
        (llama.vocab_size, llama.hidden_size, llama.intermediate_size),
        (VOCAB, HIDDEN, INNER)
    );
    assert_eq!(
        (
            llama.num_hidden_layers,
            llama.num_attention_heads,
            llama.num_key_value_heads
        ),
        (LAYERS, HEADS, KV_HEADS)
    );
    assert_eq!(
        (llama.head_dim, llama.max_position_embeddings),
        (HEAD_DIM, 256)
    );
    assert_eq!(llama.rms_norm_eps, f64::from(1e-5f32));
    assert!(llama.tie_word_embeddings);
    // `llama.vocab_size` wins over the token list when present.
    let sized = tiny_llama(F32).set("llama.vocab_size", Meta::U32(VOCAB as u32));
    let file = GgufFile::open(&sized.write(&dir, "sized.gguf")).unwrap();
    assert!(gguf::model_config(&file).is_ok());
    assert_eq!(config.raw().get("eos_token_id"), None, "none in the file");

    // Special tokens: generation ends at every end token the file names (`eos`, and a chat
    // model's end of turn `eot`), as llama.cpp stops.
    let special = tiny_llama(F32)
        .set("tokenizer.ggml.bos_token_id", Meta::U32(1))
        .set("tokenizer.ggml.eos_token_id", Meta::U32(2))
        .set("tokenizer.ggml.eot_token_id", Meta::U32(3))
        .set("tokenizer.ggml.padding_token_id", Meta::U32(2));
    let file = GgufFile::open(&special.write(&dir, "special.gguf")).unwrap();
    let raw = gguf::model_config(&file).unwrap().raw().clone();
    assert_eq!(raw["bos_token_id"], 1);
    assert_eq!(raw["pad_token_id"], 2);
    assert_eq!(raw["eos_token_id"], serde_json::json!([2, 3]));
    let same = tiny_llama(F32)
        .set("tokenizer.ggml.eos_token_id", Meta::U32(2))
        .set("tokenizer.ggml.eot_token_id", Meta::U32(2));
    let file = GgufFile::open(&same.write(&dir, "same.gguf")).unwrap();
    assert_eq!(gguf::model_config(&file).unwrap().raw()["eos_token_id"], 2);
}

#[test]
fn bad_metadata_is_refused_naming_file_and_key() {
    let dir = common::temp_dir("gguf-config-errors");
    let base = tiny_llama(F32);
    let cases: Vec<(&str, GgufWriter, &str, &str)> = vec![
        (
            "missing",
            base.clone().without("llama.block_count"),
            "llama.block_count",
            "missing",
        ),
        (
            "zero",
            base.clone().set("llama.block_count", Meta::U32(0)),
            "llama.block_count",
            "positive",
        ),
        (
            "huge",
            base.clone().set("llama.block_count", Meta::U32(1 << 20)),
            "llama.block_count",
            "limit",
        ),
        (
            "kv",
            base.clone()
                .set("llama.attention.head_count_kv", Meta::U32(3)),
            "llama.attention.head_count_kv",
            "does not divide",
        ),
        (
            "heads",
            base.clone()
                .set("llama.attention.head_count", Meta::U32(5))
                .set("llama.attention.head_count_kv", Meta::U32(5)),
            "llama.attention.head_count",
            "do not divide",
        ),
        (
            "rope",
            base.clone().set("llama.rope.dimension_count", Meta::U32(8)),
            "llama.rope.dimension_count",
            "differs",
        ),
        (
            "eps",
            base.clone()
                .set("llama.attention.layer_norm_rms_epsilon", Meta::F32(-1.0)),
            "llama.attention.layer_norm_rms_epsilon",
            "positive",
        ),
        (
            "eps-type",
            base.clone()
                .set("llama.attention.layer_norm_rms_epsilon", Meta::U32(1)),
            "llama.attention.layer_norm_rms_epsilon",
            "f32",
        ),
        (
            "width-type",
            base.clone().set("llama.embedding_length", Meta::Str("64")),
            "llama.embedding_length",
            "integer",
        ),
        (
            "vocab",
            base.clone().without("tokenizer.ggml.tokens"),
            "tokenizer.ggml.tokens",
            "missing",
        ),
        (
            "scaling",
            base.clone()
                .set("llama.rope.scaling.type", Meta::Str("linear")),
            "llama.rope.scaling.type",
            "not supported",
        ),
        (
            "eos",
            base.clone()
                .set("tokenizer.ggml.eos_token_id", Meta::U32(VOCAB as u32)),
            "tokenizer.ggml.eos_token_id",
            "outside the vocabulary",
        ),
        (
            "no-arch",
            base.clone().without("general.architecture"),
            "general.architecture",
            "missing",
        ),
    ];
    for (name, writer, key, reason) in cases {
        let path = writer.write(&dir, &format!("{name}.gguf"));
        let file = GgufFile::open(&path).unwrap();
        let error = gguf::model_config(&file).unwrap_err();
        let message = error.to_string();
        assert!(
            matches!(error, Error::GgufMetadata { .. }),
            "{name}: {message}"
        );
        assert!(
            message.contains(&path.display().to_string()),
            "{name}: {message}"
        );
        assert!(message.contains(key), "{name}: {message}");
        assert!(message.contains(reason), "{name}: {message}");
    }
    let path = base
        .set("general.architecture", Meta::Str("falcon"))
        .write(&dir, "falcon.gguf");
    let error = gguf::model_config(&GgufFile::open(&path).unwrap()).unwrap_err();
    assert!(matches!(error, Error::GgufArchitecture { .. }), "{error}");
    assert!(error.to_string().contains("`falcon`"), "{error}");
}

/// f32 rows and rows of blocks alike come back in Transformers' order: equal to the tensors the
/// file was made from (f32), and to their own quantization in that order (Q8_0).
#[test]
fn q_and_k_rows_are_put_back_in_transformers_order() {
    let dir = common::temp_dir("gguf-permute");
    let hf = hf_tensors();
    let find = |name: &str| hf.iter().find(|(n, ..)| n == name).unwrap().clone();
    for matrix_type in [F32, Q8_0] {
        let path = tiny_llama(matrix_type).write(&dir, &format!("t{matrix_type}.gguf"));
        let tensors = open_tensors(&path);
        let device = Device::Cpu;
        let dequantizing = Weights::from_gguf(&tensors, &device)
            .with_options(WeightOptions::default().dequantizing_blocks());
        let native = Weights::from_gguf(&tensors, &device);
        for name in [
            "model.layers.1.self_attn.q_proj.weight",
            "model.layers.1.self_attn.k_proj.weight",
            "model.layers.0.self_attn.v_proj.weight",
        ] {
            let (_, shape, values) = find(name);
            let want = if matrix_type == Q8_0 {
                let mut bytes = vec![0u8; BlockFormat::Q8_0.bytes_for(values.len()).unwrap()];
                quantized::quantize(BlockFormat::Q8_0, &values, &mut bytes).unwrap();
                let mut back = vec![0.0; values.len()];
                quantized::dequantize(BlockFormat::Q8_0, &bytes, &mut back).unwrap();
                let (format, stored) = native.blocks(&shape, name).unwrap().expect("blocks");
                assert_eq!(format, BlockFormat::Q8_0);
                assert_eq!(&stored[..], &bytes[..], "{name}: block rows");
                back
            } else {
                assert!(native.blocks(&shape, name).unwrap().is_none());
                values
            };
            let got = dequantizing.get(&shape, name).unwrap();
            let got = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(got, want, "{name} ({matrix_type})");
            // With dequantizing options, blocks are never handed out.
            assert!(dequantizing.blocks(&shape, name).unwrap().is_none());
        }
    }
}

/// The whole model from the GGUF (f32 weights, Q/K permuted by llama.cpp's rule) gives the
/// logits of the same weights saved as Transformers does (safetensors, `config.json`); with
/// Q8_0 blocks, native and dequantized runs agree closely. Loaded through
/// `AutoModelForCausalLM` from a `.gguf` path and from a folder holding one.
#[test]
fn gguf_model_matches_the_same_weights_in_transformers_layout() {
    let dir = common::temp_dir("gguf-model-parity");
    let config = hf_config("llama", "LlamaForCausalLM");
    let reference_dir = common::write_model("gguf-model-reference", &config, &hf_tensors());
    let policy = LoadPolicy::default();
    let reference = AutoModelForCausalLM::load(&reference_dir, &policy, &Device::Cpu).unwrap();
    let ids = [3u32, 17, 5, 39, 0, 22];
    let want = logits(reference.as_ref(), &ids);

    let gguf_dir = dir.join("one");
    std::fs::create_dir_all(&gguf_dir).unwrap();
    let path = tiny_llama(F32).write(&gguf_dir, "tiny-f32.gguf");
    for source in [&path, &gguf_dir] {
        let model = AutoModelForCausalLM::load(source, &policy, &Device::Cpu).unwrap();
        let got = logits(model.as_ref(), &ids);
        let diff = safeformers_testkit::max_abs_diff(&got, &want);
        assert!(diff <= 1e-5, "{}: {diff}", source.display());
    }

    let q8 = tiny_llama(Q8_0).write(&dir, "tiny-q8_0.gguf");
    let options = WeightOptions::default();
    let native = gguf::load_causal_lm(&q8, &Device::Cpu, options).unwrap();
    let dequantized =
        gguf::load_causal_lm(&q8, &Device::Cpu, options.dequantizing_blocks()).unwrap();
    let (native, dequantized) = (logits(&native, &ids), logits(&dequantized, &ids));
    let diff = safeformers_testkit::max_abs_diff(&native, &dequantized);
    let scale = dequantized.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    // Native blocks also quantize the activations to 8 bits: an error of the order of the
    // weights' own quantization error, far below what a misplaced row would cause.
    let quantization_error = safeformers_testkit::max_abs_diff(&dequantized, &want);
    assert!(
        diff <= 0.06 * scale && diff <= 2.0 * quantization_error,
        "native vs dequantized Q8_0: {diff} (weights' own error {quantization_error}, logits up to {scale})"
    );
    assert!(
        quantization_error > 0.0,
        "Q8_0 must differ from f32 somewhere"
    );
}

#[test]
fn folders_with_several_gguf_files_need_a_name() {
    let dir = common::temp_dir("gguf-choice");
    tiny_llama(F32).write(&dir, "a.gguf");
    tiny_llama(F32).write(&dir, "b.gguf");
    let error = gguf::find_gguf(&dir).unwrap_err();
    assert!(matches!(error, Error::GgufChoice { .. }), "{error}");
    assert!(error.to_string().contains("a.gguf, b.gguf"), "{error}");
    let error = AutoModelForCausalLM::load(&dir, &LoadPolicy::default(), &Device::Cpu).unwrap_err();
    assert!(matches!(error, Error::GgufChoice { .. }), "{error}");
    // A Transformers folder (config.json) is not a GGUF folder, whatever else it holds.
    std::fs::write(dir.join("config.json"), "{}").unwrap();
    assert_eq!(gguf::find_gguf(&dir).unwrap(), None);
}

/// A `qwen2` GGUF: Qwen2's config (q/k/v biases), rows not permuted (llama.cpp's Qwen2 converter
/// does not), the same logits as the Transformers-layout checkpoint.
#[test]
fn qwen2_gguf_matches_the_same_weights_in_transformers_layout() {
    let dir = common::temp_dir("gguf-qwen2");
    let config = hf_config("qwen2", "Qwen2ForCausalLM");
    let reference_dir =
        common::write_model("gguf-qwen2-reference", &config, &hf_tensors_with_bias(true));
    let policy = LoadPolicy::default();
    let reference = AutoModelForCausalLM::load(&reference_dir, &policy, &Device::Cpu).unwrap();
    let ids = [3u32, 17, 5, 39, 0, 22];
    let want = logits(reference.as_ref(), &ids);
    let path = tiny_gguf("qwen2", F32).write(&dir, "tiny-qwen2.gguf");
    let file = GgufFile::open(&path).unwrap();
    let llama = LlamaConfig::from_model_config(&gguf::model_config(&file).unwrap()).unwrap();
    assert_eq!(llama.family, Family::Qwen2);
    let model = AutoModelForCausalLM::load(&path, &policy, &Device::Cpu).unwrap();
    let diff = safeformers_testkit::max_abs_diff(&logits(model.as_ref(), &ids), &want);
    assert!(diff <= 1e-5, "{diff}");
}

/// A `qwen3` GGUF: `attn_q_norm` / `attn_k_norm` read as Qwen3's per-head norms, rows not
/// permuted (llama.cpp's Qwen3 converter is its Qwen2 one), the same logits as the
/// Transformers-layout checkpoint.
#[test]
fn qwen3_gguf_matches_the_same_weights_in_transformers_layout() {
    let dir = common::temp_dir("gguf-qwen3");
    let mut config = hf_config("qwen3", "Qwen3ForCausalLM");
    config["head_dim"] = serde_json::json!(HEAD_DIM);
    let reference_dir =
        common::write_model("gguf-qwen3-reference", &config, &hf_tensors_of("qwen3"));
    let policy = LoadPolicy::default();
    let reference = AutoModelForCausalLM::load(&reference_dir, &policy, &Device::Cpu).unwrap();
    let ids = [3u32, 17, 5, 39, 0, 22];
    let want = logits(reference.as_ref(), &ids);
    let path = tiny_gguf("qwen3", F32).write(&dir, "tiny-qwen3.gguf");
    let file = GgufFile::open(&path).unwrap();
    let llama = LlamaConfig::from_model_config(&gguf::model_config(&file).unwrap()).unwrap();
    assert_eq!(llama.family, Family::Qwen3);
    let model = AutoModelForCausalLM::load(&path, &policy, &Device::Cpu).unwrap();
    let diff = safeformers_testkit::max_abs_diff(&logits(model.as_ref(), &ids), &want);
    assert!(diff <= 1e-5, "{diff}");
    // Without its q/k norms the file is refused, naming the tensor.
    let broken = tiny_gguf("qwen3", F32).without("blk.1.attn_k_norm.weight");
    let path = broken.write(&dir, "tiny-qwen3-broken.gguf");
    let error = AutoModelForCausalLM::load(&path, &policy, &Device::Cpu).unwrap_err();
    assert!(error.to_string().contains("k_norm"), "{error}");
}

/// The logits of every position of `ids`, flattened.
fn logits(model: &dyn CausalLm, ids: &[u32]) -> Vec<f32> {
    let logits = common::prompt_logits(model, ids);
    logits.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// The `config.json` of the tiny model in Transformers' layout.
fn hf_config(model_type: &str, architecture: &str) -> serde_json::Value {
    serde_json::json!({
        "model_type": model_type, "architectures": [architecture],
        "vocab_size": VOCAB, "hidden_size": HIDDEN, "intermediate_size": INNER,
        "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS, "max_position_embeddings": 256,
        "rms_norm_eps": f64::from(1e-5f32), "rope_theta": 10000.0, "tie_word_embeddings": true
    })
}
