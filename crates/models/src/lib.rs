//! Transformer models on candle-core, loaded from weights that strangers uploaded.
//!
//! The hot loops run on [`safeformers_kernels`], the only crate with `unsafe` code; this one
//! forbids it.
//!
//! - [`config`]: `config.json` (Transformers 4 and 5), read strictly, size-capped; per-model
//!   config structs mirror Transformers' with the same defaults.
//! - [`auto`]: the Auto dispatch from `model_type` and `architectures`; refuses models that need
//!   code from their repo ([`Error::RemoteCodeRefused`], a policy refusal).
//! - [`weights`]: tensors from a [`safeformers_weights::Checkpoint`], converted to f32 and
//!   shape-checked, under name prefixes.
//! - One file per architecture, readable next to its Transformers twin: [`bert`] (BERT, MiniLM),
//!   [`roberta`] (RoBERTa, XLM-RoBERTa), [`distilbert`], all four on one fused encoder stack
//!   ([`encoder`]) with the generic task heads of [`heads`], as are the embedding encoders
//!   beyond BERT: [`jina_bert`] (JinaBert v2, a native port of remote code: ALiBi, GLU) and
//!   [`mpnet`] (relative-position buckets); the shared block layers
//!   ([`layers::Linear`] over the storage enum of [`weight_storage`], [`layers::Norm`]) in
//!   [`layers`]. ModernBERT's base model ([`modernbert`]) builds its layers onto the same stack.
//! - Native ports of remote-code encoders on the same stack, loaded with no flag and without
//!   running their Python ([`remote_code`] names the files not run): [`nomic_bert`]
//!   (nomic-embed-text), [`gte`] (GTE "new", `model_type: "new"`).
//! - Decoders behind [`CausalLm`], loaded by [`AutoModelForCausalLM`]: [`gpt2`], and [`llama`]
//!   (Llama, Mistral, Qwen2, Gemma, Phi-3, Qwen3: one row of family defaults each), all built from the
//!   block layers of [`decoder`] (`Norm`, `Mlp`, `Attention` with sliding windows and
//!   grouped-query heads, `DecoderStack`) over per-sequence KV cache slabs ([`kv_cache`]);
//!   rotary embeddings with every scaling in [`rotary`], the tensor interface's input checks in
//!   [`attention`].
//!
//! ```no_run
//! use std::path::Path;
//! use candle_core::{Device, Tensor};
//! use safeformers_models::AutoModel;
//! use safeformers_weights::LoadPolicy;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let model = AutoModel::load(Path::new("all-MiniLM-L6-v2"), &LoadPolicy::default(), &Device::Cpu)?;
//! let ids = Tensor::new(&[[101u32, 7592, 2088, 102]], &Device::Cpu)?;
//! let output = model.forward(&ids, None, None)?;
//! let hidden = output.last_hidden_state(); // [1, 4, 384]
//! # let _ = hidden;
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

pub mod attention;
pub mod auto;
pub mod bert;
pub mod causal_lm;
pub mod config;
pub mod decoder;
pub mod decoder_lm;
pub mod distilbert;
pub mod encoder;
pub mod error;
pub mod gguf;
pub mod gpt2;
pub mod gte;
pub mod heads;
pub mod jina_bert;
pub mod kv_cache;
pub mod layers;
pub mod llama;
pub mod modernbert;
pub mod mpnet;
pub mod nomic_bert;
pub mod output;
pub mod remote_code;
pub mod roberta;
pub mod rotary;
pub mod weight_storage;
pub mod weights;

pub use auto::{
    Architecture, AutoModel, AutoModelForCausalLM, CAUSAL_LM_MODEL_TYPES, Head, LoadedModel,
    SUPPORTED_MODEL_TYPES,
};
pub use causal_lm::{CausalLm, KvCache, SequenceCache, SequenceInput};
pub use config::{ModelConfig, ProblemType};
pub use decoder::LogitsAt;
pub use error::{Error, RemoteCodeRequest, Result};
pub use output::{ModelOutput, TaskModel, TokenSequence};
pub use weights::{Quantization, WeightDtype, WeightOptions, Weights};
