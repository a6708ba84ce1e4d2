//! Building blocks shared by the architectures: the one linear layer ([`Linear`], over the
//! storage enum of [`crate::weight_storage`]), the one norm ([`Norm`]: LayerNorm and RMSNorm,
//! with Gemma's offset), embeddings, activations, softmax and the checked model inputs.
//!
//! Each matches the PyTorch module of the same name (`nn.Linear`, `nn.LayerNorm`, ...) in f32,
//! and has a tensor entry point (`forward`) and a slice entry point for the fused row buffers
//! the encoders and decode steps run on.

use candle_core::{D, DType, Tensor};

use crate::error::{Error, Result};
pub use crate::weight_storage::Destination;
use crate::weight_storage::{StoredMatrix, WeightStorage};
use crate::weights::{WeightOptions, Weights};

/// `nn.Linear`: `y = x Wᵀ + b`, with `W` stored `[out, in]` in the storage the load options
/// chose ([`StoredMatrix`]).
#[derive(Debug, Clone)]
pub struct Linear {
    weight: StoredMatrix,
    bias: Option<Vec<f32>>,
}

impl Linear {
    /// Loads `weight` `[out, in]` and `bias` `[out]`, the weight stored as `weights.options()`
    /// say.
    pub fn load(weights: &Weights<'_>, in_features: usize, out_features: usize) -> Result<Self> {
        let weight = weights.get(&[out_features, in_features], "weight")?;
        let bias = weights.get(&[out_features], "bias")?;
        Linear::from_tensors(weight, Some(bias))?.stored_as(weights.options())
    }

    /// Loads `weight` `[out, in]`, and `bias` `[out]` when `with_bias` (configs' `*_bias`
    /// flags: a checkpoint without a bias the config promises is an error, as is an extra one
    /// left unread by the caller's strictness checks).
    pub fn load_optional_bias(
        weights: &Weights<'_>,
        in_features: usize,
        out_features: usize,
        with_bias: bool,
    ) -> Result<Self> {
        if with_bias {
            return Linear::load(weights, in_features, out_features);
        }
        let weight = weights.get(&[out_features, in_features], "weight")?;
        Linear::from_tensors(weight, None)?.stored_as(weights.options())
    }

    /// Loads a `Conv1D`-style layer whose `weight` is stored `[in, out]` (GPT-2), transposed
    /// once here.
    pub fn load_transposed(
        weights: &Weights<'_>,
        in_features: usize,
        out_features: usize,
    ) -> Result<Self> {
        let weight = weights.get(&[in_features, out_features], "weight")?;
        let bias = weights.get(&[out_features], "bias")?;
        Linear::from_tensors(weight.t()?.contiguous()?, Some(bias))?.stored_as(weights.options())
    }

    /// A linear layer from f32 tensors already loaded (a decoder tied to the word embeddings),
    /// `weight` `[out, in]`, kept as f32.
    pub fn from_tensors(weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        let bias = match bias {
            Some(bias) => Some(bias.flatten_all()?.to_vec1::<f32>()?),
            None => None,
        };
        Ok(Linear {
            weight: StoredMatrix::new(&weight, WeightOptions::default())?,
            bias,
        })
    }

    /// A linear layer over a `[out, in]` matrix of GGUF blocks (multiplied as stored) and an
    /// optional f32 bias.
    pub fn from_blocks(
        format: safeformers_kernels::quantized::BlockFormat,
        bytes: impl Into<std::sync::Arc<[u8]>>,
        out_features: usize,
        in_features: usize,
        bias: Option<Tensor>,
    ) -> Result<Self> {
        let weight = StoredMatrix::from_blocks(format, bytes, out_features, in_features)?;
        Linear::from_stored(weight, bias)
    }

    /// A linear layer over an already stored matrix and an optional f32 bias.
    pub fn from_stored(weight: StoredMatrix, bias: Option<Tensor>) -> Result<Self> {
        let bias = match bias {
            Some(bias) => Some(bias.flatten_all()?.to_vec1::<f32>()?),
            None => None,
        };
        Ok(Linear { weight, bias })
    }

    /// The same layer with its weight converted to the storage `options` choose.
    pub fn stored_as(self, options: WeightOptions) -> Result<Self> {
        if options == WeightOptions::default() {
            return Ok(self);
        }
        let WeightStorage::F32(weight) = self.weight.storage() else {
            return Ok(self);
        };
        Ok(Linear {
            weight: StoredMatrix::new(weight, options)?,
            bias: self.bias,
        })
    }

    /// The same layer with f32 weights packed for the many-row kernel where the CPU has it
    /// (encoder layers, which always run many rows); other storages are unchanged.
    pub fn packed_for_many_rows(self) -> Result<Self> {
        Ok(Linear {
            weight: self.weight.packed_for_many_rows()?,
            bias: self.bias,
        })
    }

    /// Output features.
    pub fn out_features(&self) -> usize {
        self.weight.rows()
    }

    /// Input features.
    pub fn in_features(&self) -> usize {
        self.weight.cols()
    }

    /// `x Wᵀ + b` on row-major values written into the caller's `output` as `destination`
    /// says: overwriting it, onto the residual it holds, or through an activation (the erf GELU
    /// fused into the packed kernel). Packed weights take the packed kernel for every row count;
    /// the others the few-row kernel up to [`crate::weight_storage::FEW_ROWS`] rows, one GEMM
    /// beyond.
    pub fn forward_rows_to(
        &self,
        input: &[f32],
        rows: usize,
        output: &mut [f32],
        destination: Destination,
    ) -> Result<()> {
        self.weight
            .multiply_into(input, rows, output, self.bias.as_deref(), destination)
    }

    /// Applies the layer to `[..., in]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims();
        let (lead, last) = dims.split_at(dims.len().saturating_sub(1));
        let rows: usize = lead.iter().product();
        let in_features = last.first().copied().unwrap_or(1);
        let flat = x.reshape((rows, in_features))?;
        let y = self.weight.matmul(&flat, self.bias.as_deref())?;
        let mut out_shape = lead.to_vec();
        out_shape.push(self.weight.rows());
        Ok(y.reshape(out_shape)?)
    }

    /// Applies the layer to plain row-major values `[rows, in]` → `[rows, out]`: packed
    /// weights through the packed kernel, others through the few-row kernel for a few rows and
    /// one GEMM for many (a prefill).
    pub fn forward_rows(&self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        let mut output = vec![0.0f32; rows * self.out_features()];
        self.forward_rows_to(x, rows, &mut output, Destination::Overwrite)?;
        Ok(output)
    }

    /// Applies the layer to plain row-major values `[rows, in]` → `[rows, out]` (the decoding
    /// path, no tensors).
    pub fn forward_values(&self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        self.weight.matmul_values(x, rows, self.bias.as_deref())
    }
}

/// The normalization layers: `nn.LayerNorm` and RMSNorm (`LlamaRMSNorm`, `T5LayerNorm`, and
/// `GemmaRMSNorm`, which stores `w - 1` and multiplies by `(1 + w)`), over the last dimension
/// with the config's epsilon, run by the kernels on plain rows ([`Norm::forward_rows`]) or on a
/// tensor ([`Norm::forward`]).
#[derive(Debug, Clone)]
pub struct Norm {
    kind: NormKind,
    /// The multiplier per column (for Gemma, `1 + w` already added).
    scale: Vec<f32>,
    eps: f32,
}

/// Which normalization a [`Norm`] is.
#[derive(Debug, Clone)]
enum NormKind {
    /// `(x - mean) / √(var + ε) · w + b`.
    Layer {
        /// `b`, one per column.
        bias: Vec<f32>,
    },
    /// `x / √(mean(x²) + ε) · w`, without centring or bias.
    Rms,
}

impl Norm {
    /// A LayerNorm with `weight` and `bias` (equally long).
    pub fn layer_norm(weight: Vec<f32>, bias: Vec<f32>, eps: f64) -> Result<Norm> {
        if weight.len() != bias.len() {
            return Err(Error::Candle(candle_core::Error::Msg(format!(
                "layer norm weight has {} values but bias {}",
                weight.len(),
                bias.len()
            ))));
        }
        Ok(Norm {
            kind: NormKind::Layer { bias },
            scale: weight,
            eps: eps as f32,
        })
    }

    /// Loads a LayerNorm's `weight` and `bias` (or the legacy TF-era `gamma` and `beta`).
    pub fn load_layer_norm(weights: &Weights<'_>, size: usize, eps: f64) -> Result<Norm> {
        Norm::layer_norm(
            tensor_values(&weights.get_any(&[size], &["weight", "gamma"])?)?,
            tensor_values(&weights.get_any(&[size], &["bias", "beta"])?)?,
            eps,
        )
    }

    /// Loads a LayerNorm's `weight`, and its `bias` when `with_bias` (else a zero bias:
    /// `nn.LayerNorm(bias=False)`, ModernBERT's `norm_bias: false`).
    pub fn load_layer_norm_optional_bias(
        weights: &Weights<'_>,
        size: usize,
        eps: f64,
        with_bias: bool,
    ) -> Result<Norm> {
        if with_bias {
            return Norm::load_layer_norm(weights, size, eps);
        }
        Norm::layer_norm(
            tensor_values(&weights.get(&[size], "weight")?)?,
            vec![0.0; size],
            eps,
        )
    }

    /// An RMSNorm multiplying by `offset + weight`: offset 0 for Llama, Mistral, Qwen2 and
    /// Phi-3, 1 for Gemma.
    pub fn rms(weight: &[f32], offset: f32, eps: f64) -> Norm {
        Norm {
            kind: NormKind::Rms,
            scale: weight.iter().map(|w| w + offset).collect(),
            eps: eps as f32,
        }
    }

    /// Loads an RMSNorm's `weight` `[size]`, applied as `offset + weight` (`offset` 1 for
    /// Gemma's `(1 + w)`, else 0).
    pub fn load_rms_norm(
        weights: &Weights<'_>,
        size: usize,
        eps: f64,
        offset: f32,
    ) -> Result<Norm> {
        Ok(Norm::rms(
            &tensor_values(&weights.get(&[size], "weight")?)?,
            offset,
            eps,
        ))
    }

    /// Width of the rows it normalizes.
    pub fn width(&self) -> usize {
        self.scale.len()
    }

    /// Normalizes every `width`-wide row of `rows` in place.
    pub fn forward_rows(&self, rows: &mut [f32]) -> Result<()> {
        let width = self.scale.len();
        match &self.kind {
            NormKind::Layer { bias } => safeformers_kernels::layer_norm::layer_norm_in_place(
                rows,
                width,
                &self.scale,
                bias,
                self.eps,
            )?,
            NormKind::Rms => {
                safeformers_kernels::rms_norm::rms_norm_in_place(rows, &self.scale, self.eps)?
            }
        }
        Ok(())
    }

    /// The normalized copy of `x` (rows of the norm's width).
    pub fn apply(&self, x: &[f32]) -> Result<Vec<f32>> {
        let mut out = x.to_vec();
        self.forward_rows(&mut out)?;
        Ok(out)
    }

    /// Normalizes `[..., size]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut values = x.flatten_all()?.to_vec1::<f32>()?;
        self.forward_rows(&mut values)?;
        Ok(Tensor::from_vec(values, x.shape(), x.device())?)
    }
}

/// A tensor's values, flattened (the tensor, a copy of the checkpoint's bytes, is dropped after
/// this, so the weights are not held twice).
pub(crate) fn tensor_values(tensor: &Tensor) -> Result<Vec<f32>> {
    Ok(tensor.flatten_all()?.to_vec1::<f32>()?)
}

/// `nn.Embedding`: rows of a `[num, dim]` table picked by index.
#[derive(Debug, Clone)]
pub struct Embedding {
    table: Tensor,
    dim: usize,
}

impl Embedding {
    /// Loads `weight` `[num, dim]`.
    pub fn load(weights: &Weights<'_>, num: usize, dim: usize) -> Result<Self> {
        Ok(Embedding {
            table: weights.get(&[num, dim], "weight")?,
            dim,
        })
    }

    /// An embedding over a table already built (sinusoidal positions).
    pub fn from_table(table: Tensor) -> Result<Self> {
        let dim = table.dim(1)?;
        Ok(Embedding { table, dim })
    }

    /// The `[num, dim]` table (the tied LM decoder reuses the word embeddings).
    pub fn table(&self) -> &Tensor {
        &self.table
    }

    /// Looks up `[batch, seq]` u32 ids (already checked to be in range) → `[batch, seq, dim]`.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let (batch, seq) = ids.dims2()?;
        let rows = self.table.index_select(&ids.flatten_all()?, 0)?;
        Ok(rows.reshape((batch, seq, self.dim))?)
    }
}

/// A decoder's token embeddings: an f32 table ([`Embedding`]), or the `[vocab, dim]` rows of a
/// GGUF file's blocks, each dequantized when it is looked up (the table is never widened whole;
/// a tied LM head shares the same bytes).
#[derive(Debug, Clone)]
pub enum TokenEmbedding {
    /// An f32 table.
    Table(Embedding),
    /// Rows of GGUF blocks, stored as a tied LM head multiplies them.
    Blocks(crate::weight_storage::StoredMatrix),
}

impl From<Embedding> for TokenEmbedding {
    fn from(table: Embedding) -> Self {
        TokenEmbedding::Table(table)
    }
}

impl TokenEmbedding {
    /// Looks up `[batch, seq]` u32 ids → `[batch, seq, dim]`; an id past the rows is an
    /// [`Error::Input`].
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let matrix = match self {
            TokenEmbedding::Table(table) => return table.forward(ids),
            TokenEmbedding::Blocks(matrix) => matrix,
        };
        let (batch, seq) = ids.dims2()?;
        let dim = matrix.cols();
        let ids = ids.flatten_all()?.to_vec1::<u32>()?;
        let mut out = vec![0.0f32; ids.len() * dim];
        for (id, row) in ids.iter().zip(out.chunks_exact_mut(dim.max(1))) {
            matrix
                .row_values(*id as usize, row)?
                .ok_or_else(|| Error::Input {
                    input: "input_ids",
                    reason: format!("token id {id} is past the embedding rows"),
                })?;
        }
        Ok(Tensor::from_vec(
            out,
            (batch, seq, dim),
            &candle_core::Device::Cpu,
        )?)
    }
}

pub use safeformers_kernels::Activation;

/// An activation applied to a tensor (the kernels apply [`Activation`] to slices).
pub trait ActivationForward {
    /// Applies the function elementwise.
    fn forward(self, x: &Tensor) -> Result<Tensor>;
}

impl ActivationForward for Activation {
    fn forward(self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Activation::GeluErf => x.gelu_erf()?,
            Activation::GeluTanh => x.gelu()?,
            Activation::QuickGelu => {
                (x * candle_core::Tensor::exp(&(x * -1.702)?)?
                    .affine(1.0, 1.0)?
                    .recip()?)?
            }
            Activation::Relu => x.relu()?,
            Activation::Silu => x.silu()?,
            Activation::Tanh => x.tanh()?,
        })
    }
}

/// Softmax over the last dimension, shifted by the maximum for stability (as PyTorch does).
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?;
    let exp = x.broadcast_sub(&max)?.exp()?;
    let sum = exp.sum_keepdim(D::Minus1)?;
    Ok(exp.broadcast_div(&sum)?)
}

/// The checked model inputs: ids as u32 (in vocabulary range), and the optional mask and token
/// types, all `[batch, seq]`.
#[derive(Debug)]
pub struct Inputs {
    /// Token ids, u32.
    pub ids: Tensor,
    /// The ids as plain values (for position ids computed from them).
    pub id_values: Vec<Vec<u32>>,
    /// The padding mask (u8, 1 = attend), if given.
    pub mask: Option<Tensor>,
    /// Token type ids (u32, in range), if given.
    pub token_types: Option<Tensor>,
}

impl Inputs {
    /// Checks `input_ids` (`[batch, seq]`, integers in `0..vocab_size`, not empty, not longer
    /// than `max_len`), `attention_mask` and `token_type_ids` (same shape; types in
    /// `0..type_vocab_size`).
    pub fn check(
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        token_type_ids: Option<&Tensor>,
        vocab_size: usize,
        max_len: usize,
        type_vocab_size: usize,
    ) -> Result<Inputs> {
        let id_values = integer_matrix("input_ids", input_ids)?;
        let (batch, seq) = input_ids.dims2()?;
        if batch == 0 || seq == 0 {
            return Err(input_error(
                "input_ids",
                format!("empty input (shape [{batch}, {seq}]); at least one token is needed"),
            ));
        }
        if seq > max_len {
            return Err(input_error(
                "input_ids",
                format!("{seq} tokens is more than the model's {max_len} positions"),
            ));
        }
        let ids = to_u32_checked("input_ids", &id_values, vocab_size)?;
        let device = input_ids.device();
        let mask = match attention_mask {
            None => None,
            Some(mask) => {
                if mask.dims() != input_ids.dims() {
                    return Err(input_error(
                        "attention_mask",
                        format!(
                            "shape {:?} differs from input_ids {:?}",
                            mask.dims(),
                            input_ids.dims()
                        ),
                    ));
                }
                // Any non-zero value attends, as `mask.bool()` does in Transformers.
                Some(mask.ne(0.0)?.to_dtype(DType::U8)?)
            }
        };
        let token_types = match token_type_ids {
            None => None,
            Some(types) => {
                if types.dims() != input_ids.dims() {
                    return Err(input_error(
                        "token_type_ids",
                        format!(
                            "shape {:?} differs from input_ids {:?}",
                            types.dims(),
                            input_ids.dims()
                        ),
                    ));
                }
                let values = integer_matrix("token_type_ids", types)?;
                let checked = to_u32_checked("token_type_ids", &values, type_vocab_size)?;
                Some(Tensor::from_vec(checked.concat(), (batch, seq), device)?)
            }
        };
        Ok(Inputs {
            ids: Tensor::from_vec(ids.concat(), (batch, seq), device)?,
            id_values: ids,
            mask,
            token_types,
        })
    }
}

/// An [`Error::Input`] for `input`.
pub(crate) fn input_error(input: &'static str, reason: String) -> Error {
    Error::Input { input, reason }
}

/// A rank-2 integer tensor's values as i64.
pub(crate) fn integer_matrix(input: &'static str, tensor: &Tensor) -> Result<Vec<Vec<i64>>> {
    if tensor.rank() != 2 {
        return Err(input_error(
            input,
            format!("expected shape [batch, seq], got {:?}", tensor.dims()),
        ));
    }
    match tensor.dtype() {
        DType::U8 | DType::U32 | DType::I16 | DType::I32 | DType::I64 => {}
        other => {
            return Err(input_error(
                input,
                format!("expected an integer dtype, got {other:?}"),
            ));
        }
    }
    Ok(tensor.to_dtype(DType::I64)?.to_vec2::<i64>()?)
}

/// Every value as u32, each in `0..limit`, else an [`Error::Input`] naming its place.
pub(crate) fn to_u32_checked(
    input: &'static str,
    values: &[Vec<i64>],
    limit: usize,
) -> Result<Vec<Vec<u32>>> {
    values
        .iter()
        .enumerate()
        .map(|(row, items)| {
            items
                .iter()
                .enumerate()
                .map(|(column, &value)| {
                    usize::try_from(value)
                        .ok()
                        .filter(|&value| value < limit)
                        .and_then(|value| u32::try_from(value).ok())
                        .ok_or_else(|| {
                            input_error(
                                input,
                                format!("value {value} at [{row}, {column}] is outside 0..{limit}"),
                            )
                        })
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn softmax_rows_sum_to_one() -> Result<()> {
        let scores = Tensor::new(&[[[[1f32, 2.0, 3.0]]]], &Device::Cpu)?;
        let values = softmax_last_dim(&scores)?.flatten_all()?.to_vec1::<f32>()?;
        assert!((values.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        Ok(())
    }

    #[test]
    fn layer_norm_matches_plain_formula() -> Result<()> {
        let x = Tensor::new(&[[1f32, -2.0, 3.0, 0.5]], &Device::Cpu)?;
        let norm = Norm::layer_norm(vec![0.5, 1.5, -1.0, 2.0], vec![0.1, 0.0, 0.2, -0.1], 1e-5)?;
        // (x - mean) / sqrt(var + 1e-5) * w + b, computed in f64.
        let expected = [0.205_279_2, -2.210_863, -1.133_536_5, -0.240_372_26];
        let got = norm.forward(&x)?.flatten_all()?.to_vec1::<f32>()?;
        for (got, want) in got.iter().zip(expected) {
            assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        }
        Ok(())
    }

    #[test]
    fn gelu_variants_match_reference_values() -> Result<()> {
        let x = Tensor::new(&[1f32], &Device::Cpu)?;
        let erf = Activation::GeluErf.forward(&x)?.to_vec1::<f32>()?;
        let tanh = Activation::GeluTanh.forward(&x)?.to_vec1::<f32>()?;
        // torch.nn.functional.gelu(1.0) and gelu(1.0, approximate="tanh").
        assert!((erf.first().copied().unwrap_or(0.0) - 0.841_344_7).abs() < 1e-6);
        assert!((tanh.first().copied().unwrap_or(0.0) - 0.841_192).abs() < 1e-5);
        Ok(())
    }

    #[test]
    fn out_of_range_ids_are_errors() -> Result<()> {
        let ids = Tensor::new(&[[1i64, 7]], &Device::Cpu)?;
        assert!(matches!(
            Inputs::check(&ids, None, None, 5, 512, 2),
            Err(Error::Input {
                input: "input_ids",
                ..
            })
        ));
        let negative = Tensor::new(&[[-1i64]], &Device::Cpu)?;
        assert!(Inputs::check(&negative, None, None, 5, 512, 2).is_err());
        Ok(())
    }
}
