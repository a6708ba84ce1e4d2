//! Named tensors for model code: a [`Checkpoint`] seen through a name prefix.
//!
//! Every tensor is converted to f32 by [`safeformers_weights::convert`] (whatever its stored
//! dtype) and its shape is checked against what the config implies before it becomes a candle
//! [`Tensor`]. A missing tensor and a wrong shape are errors naming the tensor.
//!
//! The tensors may also come from a GGUF file ([`GgufTensors`]), seen under Transformers' names:
//! dequantized to f32 by [`Weights::get`], or handed over as blocks by [`Weights::blocks`] for
//! layers that multiply them as stored.

use candle_core::{Device, Tensor};
use safeformers_kernels::quantized::BlockFormat;
use safeformers_weights::{Checkpoint, convert};

use crate::error::{Error, Result};
use crate::gguf::GgufTensors;

/// A view of a checkpoint under a name prefix (`bert.encoder.layer.0.`), like candle-nn's
/// `VarBuilder` but read-only and validating.
#[derive(Debug, Clone)]
pub struct Weights<'a> {
    source: Source<'a>,
    prefix: String,
    device: Device,
    options: WeightOptions,
}

/// Where the tensors of a [`Weights`] come from.
#[derive(Debug, Clone, Copy)]
enum Source<'a> {
    /// A safetensors (or pickle) checkpoint.
    Checkpoint(&'a Checkpoint),
    /// A GGUF file, under Transformers' names.
    Gguf(&'a GgufTensors),
}

/// How the weights of linear layers are stored in memory (compute stays f32).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WeightDtype {
    /// 32-bit floats, as computed (the default).
    #[default]
    F32,
    /// IEEE half precision, widened to f32 (F16C) as it is read.
    F16,
    /// bfloat16, widened to f32 as it is read.
    Bf16,
}

impl WeightDtype {
    /// Parses `f32`, `f16` or `bf16`.
    pub fn from_name(name: &str) -> Option<WeightDtype> {
        match name {
            "f32" => Some(WeightDtype::F32),
            "f16" => Some(WeightDtype::F16),
            "bf16" => Some(WeightDtype::Bf16),
            _ => None,
        }
    }
}

/// Weight quantization applied at load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantization {
    /// 8-bit weights, one f32 scale per block of 32 inputs of an output row (see
    /// [`safeformers_kernels::few_rows`]), quantized from the f32 (or f16/bf16) checkpoint values.
    Q8,
    /// GGUF's `Q8_0`: 8-bit weights, one f16 scale per 32.
    Q8_0,
    /// GGUF's `Q4_0`: 4-bit weights, one f16 scale per 32.
    Q4_0,
    /// GGUF's `Q4_K`: 4-bit weights in super-blocks of 256 with 6-bit sub-block scales and
    /// minimums. A layer whose input width is not a multiple of 256 is stored as `Q4_0`
    /// instead (as llama.cpp's quantizer falls back).
    Q4K,
}

impl Quantization {
    /// Every scheme, by name.
    pub const NAMES: [(&'static str, Quantization); 4] = [
        ("q8", Quantization::Q8),
        ("q8_0", Quantization::Q8_0),
        ("q4_0", Quantization::Q4_0),
        ("q4_k", Quantization::Q4K),
    ];

    /// Parses `q8`, `q8_0`, `q4_0` or `q4_k`.
    pub fn from_name(name: &str) -> Option<Quantization> {
        Quantization::NAMES
            .iter()
            .find(|(known, _)| *known == name)
            .map(|(_, scheme)| *scheme)
    }
}

/// Options for loading a model's weights: the storage of linear-layer weights (embeddings, norms
/// and biases stay f32). The default is plain f32, bit-for-bit the checkpoint's values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WeightOptions {
    dtype: WeightDtype,
    quantize: Option<Quantization>,
    dequantize_blocks: bool,
}

impl WeightOptions {
    /// Checked options: quantized weights have their own storage, so `quantize` needs `dtype`
    /// [`WeightDtype::F32`] (the default); anything else is an [`Error::Input`] naming `--dtype`.
    pub fn new(dtype: WeightDtype, quantize: Option<Quantization>) -> Result<WeightOptions> {
        if quantize.is_some() && dtype != WeightDtype::F32 {
            return Err(Error::Input {
                input: "dtype",
                reason: "--quantize q8 stores 8-bit weights; leave --dtype at f32 with it"
                    .to_string(),
            });
        }
        Ok(WeightOptions {
            dtype,
            quantize,
            dequantize_blocks: false,
        })
    }

    /// The options of the names a user gives (`--dtype`/`--quantize` on the command line,
    /// `dtype=`/`quantize=` in Python): an explicit `dtype` (even `f32`) also dequantizes a
    /// GGUF file's blocks at load. The error is one line naming the options as `prefix`
    /// spells them (`"--"` on the command line, `""` in Python).
    pub fn from_names(
        dtype: Option<&str>,
        quantize: Option<&str>,
        prefix: &str,
    ) -> std::result::Result<WeightOptions, String> {
        let storage = match dtype {
            None => WeightDtype::F32,
            Some(name) => WeightDtype::from_name(name)
                .ok_or_else(|| format!("{prefix}dtype {name}: expected f32, f16 or bf16"))?,
        };
        let scheme = match quantize {
            None => None,
            Some(name) => Some(Quantization::from_name(name).ok_or_else(|| {
                format!("{prefix}quantize {name}: the schemes are q8, q8_0, q4_0 and q4_k")
            })?),
        };
        let options = WeightOptions::new(storage, scheme).map_err(|_| {
            format!(
                "{prefix}quantize {} stores 8-bit weights; it cannot be combined with \
                 {prefix}dtype {}",
                quantize.unwrap_or_default(),
                dtype.unwrap_or_default()
            )
        })?;
        Ok(if dtype.is_some() {
            options.dequantizing_blocks()
        } else {
            options
        })
    }

    /// The same options, with a GGUF file's block-quantized tensors dequantized to f32 at load
    /// (`--dtype f32` on a GGUF) instead of multiplied as stored.
    pub fn dequantizing_blocks(mut self) -> WeightOptions {
        self.dequantize_blocks = true;
        self
    }

    /// Whether a GGUF file's quantized tensors are dequantized at load.
    pub fn dequantizes_blocks(&self) -> bool {
        self.dequantize_blocks
    }

    /// Whether a GGUF file's quantized linear weights are kept as blocks: neither dequantizing
    /// nor another storage was asked for.
    fn keeps_blocks(&self) -> bool {
        !self.dequantize_blocks && self.quantize.is_none() && self.dtype == WeightDtype::F32
    }

    /// The storage dtype of linear-layer weights.
    pub fn dtype(&self) -> WeightDtype {
        self.dtype
    }

    /// The quantization, if any.
    pub fn quantize(&self) -> Option<Quantization> {
        self.quantize
    }
}

impl<'a> Weights<'a> {
    /// The checkpoint's tensors, loaded onto `device`, with no prefix.
    pub fn new(checkpoint: &'a Checkpoint, device: &Device) -> Weights<'a> {
        Weights {
            source: Source::Checkpoint(checkpoint),
            prefix: String::new(),
            device: device.clone(),
            options: WeightOptions::default(),
        }
    }

    /// The tensors of a GGUF file under Transformers' names, loaded onto `device`.
    pub fn from_gguf(tensors: &'a GgufTensors, device: &Device) -> Weights<'a> {
        Weights {
            source: Source::Gguf(tensors),
            prefix: String::new(),
            device: device.clone(),
            options: WeightOptions::default(),
        }
    }

    /// The same view, with linear-layer weights stored as `options` say.
    pub fn with_options(mut self, options: WeightOptions) -> Weights<'a> {
        self.options = options;
        self
    }

    /// How linear-layer weights are to be stored.
    pub fn options(&self) -> WeightOptions {
        self.options
    }

    /// The same checkpoint under `prefix` + `.` (an empty `name` leaves the prefix as is).
    pub fn pp(&self, name: &str) -> Weights<'a> {
        let prefix = if name.is_empty() {
            self.prefix.clone()
        } else {
            format!("{}{name}.", self.prefix)
        };
        Weights {
            source: self.source,
            prefix,
            device: self.device.clone(),
            options: self.options,
        }
    }

    /// The device tensors are loaded onto.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The full name of `name` under this prefix.
    pub fn full_name(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Whether the checkpoint has `name` under this prefix.
    pub fn contains(&self, name: &str) -> bool {
        let full_name = self.full_name(name);
        match self.source {
            Source::Checkpoint(checkpoint) => checkpoint.tensor(&full_name).is_some(),
            Source::Gguf(tensors) => tensors.contains(&full_name),
        }
    }

    /// The GGUF blocks of `name` (`[rows, cols]` = `shape`), Q/K rows already in Transformers'
    /// order, when the tensor is block-quantized and the options keep blocks; `None` otherwise
    /// (a checkpoint, an f32 tensor, `--dtype f32`), and the caller reads f32 with
    /// [`Weights::get`].
    pub fn blocks(
        &self,
        shape: &[usize],
        name: &str,
    ) -> Result<Option<(BlockFormat, std::sync::Arc<[u8]>)>> {
        match self.source {
            Source::Gguf(tensors) if self.options.keeps_blocks() => {
                tensors.blocks(&self.full_name(name), shape)
            }
            _ => Ok(None),
        }
    }

    /// The tensor `name` as f32, which must have exactly `shape`.
    pub fn get(&self, shape: &[usize], name: &str) -> Result<Tensor> {
        let full_name = self.full_name(name);
        let checkpoint = match self.source {
            Source::Checkpoint(checkpoint) => checkpoint,
            Source::Gguf(tensors) => {
                let values = tensors.f32_values(&full_name, shape)?;
                return Ok(Tensor::from_vec(values, shape, &self.device)?);
            }
        };
        let view = checkpoint
            .tensor(&full_name)
            .ok_or_else(|| Error::MissingTensor {
                tensor: full_name.clone(),
                files: self.files(),
            })?;
        if view.shape != shape {
            return Err(Error::TensorShape {
                tensor: full_name,
                expected: shape.to_vec(),
                actual: view.shape.to_vec(),
            });
        }
        let values = convert::to_f32(&view)?;
        Ok(Tensor::from_vec(values, shape, &self.device)?)
    }

    /// The first of `names` that exists (for legacy spellings such as `LayerNorm.gamma`); when
    /// none does, the error names the first.
    pub fn get_any(&self, shape: &[usize], names: &[&str]) -> Result<Tensor> {
        let found = names.iter().find(|name| self.contains(name));
        match (found, names.first()) {
            (Some(name), _) | (None, Some(name)) => self.get(shape, name),
            (None, None) => Err(Error::MissingTensor {
                tensor: self.prefix.clone(),
                files: self.files(),
            }),
        }
    }

    fn files(&self) -> String {
        let checkpoint = match self.source {
            Source::Checkpoint(checkpoint) => checkpoint,
            Source::Gguf(tensors) => return tensors.path().display().to_string(),
        };
        let files: Vec<String> = checkpoint
            .files()
            .map(|path| path.display().to_string())
            .collect();
        if files.is_empty() {
            "(in memory)".to_string()
        } else {
            files.join(", ")
        }
    }
}
