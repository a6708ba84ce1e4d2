//! `AutoModel`, `AutoModelForCausalLM` and `Tokenizer` with `from_pretrained`, as in
//! Transformers: a repo id or a folder, resolved under [`Options`].

use std::path::Path;

use candle_core::Device;
use safeformers_models::{CausalLm, LoadedModel, WeightOptions};
use safeformers_tokenize::TokenizerOptions;
use safeformers_weights::LoadPolicy;

use crate::error::Result;
use crate::gguf_file::is_gguf_name;
use crate::options::Options;
use crate::resolve::resolve_model;

/// Resolves `model` under `options` and loads it with `load` on the CPU, under the options' load
/// policy and weight storage.
fn load_on_cpu<T>(
    model: &Path,
    options: &Options,
    load: fn(&Path, &LoadPolicy, &Device, WeightOptions) -> safeformers_models::Result<T>,
) -> Result<T> {
    let dir = resolve_model(model, options)?;
    Ok(load(
        &dir,
        &options.load_policy(),
        &Device::Cpu,
        options.weight_options(),
    )?)
}

/// Loads a model with the head its `config.json` names (`architectures`), like Transformers'
/// `AutoModel` / `AutoModelFor…` classes.
#[derive(Debug, Clone, Copy)]
pub struct AutoModel;

impl AutoModel {
    /// Resolves `model` (`org/name[@rev]` or a folder) and loads it on the CPU, with the
    /// weight storage of [`Options::weights`].
    pub fn from_pretrained(model: impl AsRef<Path>, options: &Options) -> Result<LoadedModel> {
        load_on_cpu(
            model.as_ref(),
            options,
            safeformers_models::AutoModel::load_with_options,
        )
    }
}

/// Loads a decoder-only language model (GPT-2, Llama, Mistral, Qwen2, Gemma, Phi-3).
#[derive(Debug, Clone, Copy)]
pub struct AutoModelForCausalLM;

impl AutoModelForCausalLM {
    /// Resolves `model` and loads it on the CPU, with the weight storage of
    /// [`Options::weights`].
    pub fn from_pretrained(
        model: impl AsRef<Path>,
        options: &Options,
    ) -> Result<Box<dyn CausalLm>> {
        load_on_cpu(
            model.as_ref(),
            options,
            safeformers_models::AutoModelForCausalLM::load_with_options,
        )
    }
}

/// A tokenizer (`tokenizer.json` with `tokenizer_config.json`).
pub use safeformers_tokenize::Tokenizer;

/// `Tokenizer::from_pretrained`, as in Transformers' `AutoTokenizer`.
pub trait FromPretrained: Sized {
    /// Resolves `model` (`org/name[@rev]` or a folder) and loads from it.
    fn from_pretrained(model: impl AsRef<Path>, options: &Options) -> Result<Self>;
}

impl FromPretrained for Tokenizer {
    /// A `.gguf` file (a path, or the one [`resolve_model`] picks in a folder or repo) gives the
    /// tokenizer of its metadata ([`Tokenizer::from_gguf_file`]), as Transformers' `gguf_file=`
    /// does.
    fn from_pretrained(model: impl AsRef<Path>, options: &Options) -> Result<Self> {
        let path = resolve_model(model.as_ref(), options)?;
        if is_gguf_name(&path.to_string_lossy()) && path.is_file() {
            return Ok(Tokenizer::from_gguf_file(
                &path,
                &TokenizerOptions::default(),
            )?);
        }
        Ok(Tokenizer::from_dir(&path, &TokenizerOptions::default())?)
    }
}
