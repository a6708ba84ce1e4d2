//! The storage of a linear layer's `[out, in]` weight matrix: f32 (a candle tensor, or packed for
//! the AVX-512 GEMM), f16, bf16, or 8-bit blocks, chosen by [`WeightOptions`] and converted once
//! at load. Products with one to a few rows (decoding) go through
//! [`safeformers_kernels::few_rows`], which reads every weight once; products with many rows (a
//! prefill, an encoder batch) run as one GEMM: the packed kernel on packed f32 weights, else the
//! `gemm` crate (or candle's) on f32 weights as they are or on 16-/8-bit weights widened to f32
//! for that call.
//!
//! A new storage format (the GGUF block formats) is a new [`WeightStorage`] arm with its
//! [`MatrixData`] view for the few-row kernel; the many-row path widens it like the others.

use std::sync::Arc;

use candle_core::Tensor;
use half::{bf16, f16};

use crate::error::{Error, Result};
use crate::weights::{Quantization, WeightDtype, WeightOptions};
use safeformers_kernels::Activation;
use safeformers_kernels::activation::activation_in_place;
use safeformers_kernels::few_rows::{self, MatrixData, MatrixRef};
use safeformers_kernels::matmul::matmul_transposed_accumulate;
use safeformers_kernels::packed_gemm::{self, Epilogue, PackedWeights, Start};
use safeformers_kernels::quantized::{self, BlockFormat};
use safeformers_kernels::quantized_dot;

/// Values of the largest widened matrix kept for reuse ([`WIDENED`], 64 MB): a layer's, not
/// an LM head's over a whole vocabulary.
const MAX_REUSED_WIDENING: usize = 16 << 20;

thread_local! {
    /// The f32 copy of a 16-bit or block-format matrix that a many-row product multiplies.
    static WIDENED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Up to this many rows, f32 products use the few-row kernel (one pass over the weights);
/// beyond it candle's GEMM is faster.
pub const FEW_ROWS: usize = 16;

/// The values of a weight matrix in one storage format.
#[derive(Debug, Clone)]
pub enum WeightStorage {
    /// f32, contiguous `[out, in]`.
    F32(Tensor),
    /// f32 packed for the AVX-512 many-row kernel ([`PackedWeights`]); it serves every row
    /// count (see [`StoredMatrix::packed_for_many_rows`]).
    F32Packed(Arc<PackedWeights>),
    /// IEEE half precision.
    F16(Arc<[f16]>),
    /// bfloat16.
    Bf16(Arc<[bf16]>),
    /// A GGUF block format ([`BlockFormat`]), rows of blocks as stored in a GGUF file or
    /// quantized at load; multiplied as stored.
    Blocks {
        /// The format.
        format: BlockFormat,
        /// The blocks, row after row.
        bytes: Arc<[u8]>,
    },
    /// `Q4_0`, `Q4_1` or `Q8_0` blocks with rows interleaved by groups of 16
    /// ([`quantized_dot::interleave`]): what [`StoredMatrix::from_blocks`] makes of them, for
    /// products whose registers hold 16 output columns. Multiplied as stored whatever the row
    /// count (the integer kernel outruns widening to f32 for a GEMM).
    Interleaved {
        /// The format.
        format: BlockFormat,
        /// The segments.
        bytes: Arc<[u8]>,
    },
    /// 8-bit blocks with their scales (see [`few_rows::quantize_q8`]).
    Q8 {
        /// Quantized weights, `[out, in]`.
        values: Arc<[i8]>,
        /// One scale per 32 inputs of a row.
        scales: Arc<[f32]>,
    },
}

/// A `[out, in]` weight matrix and its storage.
#[derive(Debug, Clone)]
pub struct StoredMatrix {
    storage: WeightStorage,
    rows: usize,
    cols: usize,
}

impl StoredMatrix {
    /// Stores `weight` (f32 `[out, in]`) as `options` say: kept as is for f32, converted once
    /// otherwise.
    pub fn new(weight: &Tensor, options: WeightOptions) -> Result<StoredMatrix> {
        let (rows, cols) = weight.dims2()?;
        let storage = match (options.quantize(), options.dtype()) {
            (None, WeightDtype::F32) => WeightStorage::F32(weight.contiguous()?),
            (None, WeightDtype::F16) => {
                WeightStorage::F16(values_of(weight)?.into_iter().map(f16::from_f32).collect())
            }
            (None, WeightDtype::Bf16) => {
                WeightStorage::Bf16(values_of(weight)?.into_iter().map(bf16::from_f32).collect())
            }
            (Some(Quantization::Q8), _) => {
                let (values, scales) = few_rows::quantize_q8(&values_of(weight)?, rows, cols)?;
                WeightStorage::Q8 {
                    values: values.into(),
                    scales: scales.into(),
                }
            }
            (Some(scheme), _) => match block_format(scheme, cols) {
                Some(format) => {
                    let values = values_of(weight)?;
                    let mut bytes = vec![0u8; format.bytes_for(values.len()).unwrap_or(0)];
                    quantized::quantize(format, &values, &mut bytes)?;
                    return StoredMatrix::from_blocks(format, bytes, rows, cols);
                }
                // Rows that are not whole blocks stay f32.
                None => WeightStorage::F32(weight.contiguous()?),
            },
        };
        Ok(StoredMatrix {
            storage,
            rows,
            cols,
        })
    }

    /// A `[rows, cols]` matrix of GGUF blocks, row after row, multiplied as stored: the
    /// 32-value formats interleaved by groups of rows ([`WeightStorage::Interleaved`]), the
    /// others as they are.
    pub fn from_blocks(
        format: BlockFormat,
        bytes: impl Into<Arc<[u8]>>,
        rows: usize,
        cols: usize,
    ) -> Result<StoredMatrix> {
        let bytes: Arc<[u8]> = bytes.into();
        let expected = rows
            .checked_mul(cols)
            .filter(|_| cols.is_multiple_of(format.block_values()))
            .and_then(|values| format.bytes_for(values));
        if expected != Some(bytes.len()) {
            return Err(storage_error(&format!(
                "{} bytes are not a [{rows}, {cols}] matrix of {} blocks",
                bytes.len(),
                format.name()
            )));
        }
        let storage = if quantized_dot::is_interleavable(format) {
            let mut bytes = bytes;
            // In place when the bytes are ours alone and the rows whole groups: a copy would
            // leave the freed original behind in the allocator (peak RSS).
            match Arc::get_mut(&mut bytes) {
                Some(unique) if rows.is_multiple_of(quantized_dot::GROUP) => {
                    quantized_dot::interleave_in_place(format, unique, rows, cols)?;
                }
                _ => bytes = quantized_dot::interleave(format, &bytes, rows, cols)?.into(),
            }
            WeightStorage::Interleaved { format, bytes }
        } else {
            WeightStorage::Blocks { format, bytes }
        };
        Ok(StoredMatrix {
            storage,
            rows,
            cols,
        })
    }

    /// Row `row` of the matrix as f32 into `out` (`cols` values): how a token embedding
    /// stored as blocks is looked up. `None` when `row` is past the last.
    pub fn row_values(&self, row: usize, out: &mut [f32]) -> Result<Option<()>> {
        if row >= self.rows || out.len() != self.cols {
            return Ok(None);
        }
        match &self.storage {
            WeightStorage::Interleaved { format, bytes } => {
                let matrix = quantized_dot::InterleavedMatrix {
                    format: *format,
                    bytes,
                    rows: self.rows,
                    cols: self.cols,
                };
                quantized_dot::dequantize_interleaved_row(matrix, row, out)?;
            }
            WeightStorage::Blocks { format, bytes } => {
                let row_bytes = format.bytes_for(self.cols).unwrap_or(0);
                let blocks = bytes
                    .get(row * row_bytes..(row + 1) * row_bytes)
                    .unwrap_or_default();
                quantized::dequantize(*format, blocks, out)?;
            }
            _ => return Err(storage_error("row lookups read block storage only")),
        }
        Ok(Some(()))
    }

    /// Output features.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input features.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The storage.
    pub fn storage(&self) -> &WeightStorage {
        &self.storage
    }

    /// `x Wᵀ (+ bias)` for `x` `[rows, in]` → `[rows, out]`.
    pub fn matmul(&self, x: &Tensor, bias: Option<&[f32]>) -> Result<Tensor> {
        let (rows, _) = x.dims2()?;
        if let WeightStorage::F32Packed(_) = &self.storage {
            let values = x.flatten_all()?.to_vec1::<f32>()?;
            let mut out = vec![0.0f32; rows * self.rows];
            self.multiply_into(&values, rows, &mut out, bias, Destination::Overwrite)?;
            return Ok(Tensor::from_vec(out, (rows, self.rows), x.device())?);
        }
        if let WeightStorage::F32(weight) = &self.storage
            && rows > FEW_ROWS
        {
            let y = x.matmul(&weight.t()?)?;
            return match bias {
                Some(bias) => {
                    Ok(y.broadcast_add(&Tensor::from_slice(bias, self.rows, x.device())?)?)
                }
                None => Ok(y),
            };
        }
        if rows > FEW_ROWS && !matches!(self.storage, WeightStorage::Interleaved { .. }) {
            // Many rows (a prefill): widen the weights to f32 once and run one GEMM, which
            // reuses each weight across rows far better than the few-row kernel.
            let mut widened = vec![0.0f32; self.rows * self.cols];
            self.with_matrix(|matrix| Ok(few_rows::decode_matrix(matrix, &mut widened)?))?;
            let weight = Tensor::from_vec(widened, (self.rows, self.cols), x.device())?;
            let y = x.matmul(&weight.t()?)?;
            return match bias {
                Some(bias) => {
                    Ok(y.broadcast_add(&Tensor::from_slice(bias, self.rows, x.device())?)?)
                }
                None => Ok(y),
            };
        }
        let values = x.flatten_all()?.to_vec1::<f32>()?;
        let out = self.matmul_values(&values, rows, bias)?;
        Ok(Tensor::from_vec(out, (rows, self.rows), x.device())?)
    }

    /// `x Wᵀ (+ bias)` on plain row-major values, `[rows, in]` → `[rows, out]`, through the
    /// few-row kernel whatever the storage.
    pub fn matmul_values(&self, x: &[f32], rows: usize, bias: Option<&[f32]>) -> Result<Vec<f32>> {
        let mut out = vec![0.0f32; rows * self.rows];
        if let WeightStorage::F32Packed(_) = &self.storage {
            self.multiply_into(x, rows, &mut out, bias, Destination::Overwrite)?;
            return Ok(out);
        }
        self.with_matrix(|matrix| Ok(few_rows::matmul_transposed(matrix, x, rows, &mut out)?))?;
        if let Some(bias) = bias {
            if bias.len() != self.rows {
                return Err(storage_error(
                    "bias length differs from the output features",
                ));
            }
            for row in out.chunks_exact_mut(self.rows.max(1)) {
                for (y, b) in row.iter_mut().zip(bias) {
                    *y += b;
                }
            }
        }
        Ok(out)
    }

    /// The same matrix packed for the many-row kernel when it is f32 and the CPU runs that
    /// kernel ([`packed_gemm::is_available`]); unchanged otherwise. The packed copy replaces
    /// the plain one (no second copy is kept).
    pub fn packed_for_many_rows(self) -> Result<StoredMatrix> {
        let WeightStorage::F32(weight) = &self.storage else {
            return Ok(self);
        };
        if !packed_gemm::is_available() {
            return Ok(self);
        }
        let packed = with_f32_slice(weight, |data| {
            Ok(PackedWeights::pack(data, self.cols, self.rows)?)
        })?;
        Ok(StoredMatrix {
            storage: WeightStorage::F32Packed(Arc::new(packed)),
            ..self
        })
    }

    /// `x Wᵀ (+ bias)` on plain row-major values, `input` `[rows, in]`, written as
    /// `destination` says into `output` `[rows, out]` and then passed through `activation`.
    /// The many-row GEMM (packed kernel, or the `gemm` crate on f32 or widened weights) runs
    /// beyond [`FEW_ROWS`] rows, the few-row kernel up to it; packed weights always take the
    /// packed kernel, which fuses the bias, the residual and the erf GELU.
    pub fn multiply_into(
        &self,
        input: &[f32],
        rows: usize,
        output: &mut [f32],
        bias: Option<&[f32]>,
        destination: Destination,
    ) -> Result<()> {
        if output.len() != rows * self.rows || input.len() != rows * self.cols {
            return Err(storage_error(
                "input or output length differs from rows × features",
            ));
        }
        if bias.is_some_and(|bias| bias.len() != self.rows) {
            return Err(storage_error(
                "bias length differs from the output features",
            ));
        }
        if let WeightStorage::F32Packed(packed) = &self.storage {
            return multiply_packed(packed, input, rows, output, bias, destination);
        }
        if destination != Destination::OntoResidual {
            output.fill(0.0);
        }
        if let Some(bias) = bias {
            for row in output.chunks_exact_mut(self.rows.max(1)) {
                for (y, b) in row.iter_mut().zip(bias) {
                    *y += b;
                }
            }
        }
        self.accumulate(input, rows, output)?;
        if let Destination::Activated(activation) = destination {
            activation_in_place(activation, output);
        }
        Ok(())
    }

    /// `output += input Wᵀ` for the storages other than packed f32.
    fn accumulate(&self, input: &[f32], rows: usize, output: &mut [f32]) -> Result<()> {
        let (outs, cols) = (self.rows, self.cols);
        if rows <= FEW_ROWS || matches!(self.storage, WeightStorage::Interleaved { .. }) {
            let mut product = vec![0.0f32; output.len()];
            self.with_matrix(|matrix| {
                Ok(few_rows::matmul_transposed(
                    matrix,
                    input,
                    rows,
                    &mut product,
                )?)
            })?;
            for (y, p) in output.iter_mut().zip(&product) {
                *y += p;
            }
            return Ok(());
        }
        let gemm = |weight: &[f32], output: &mut [f32]| -> Result<()> {
            Ok(matmul_transposed_accumulate(
                output, input, weight, rows, cols, outs,
            )?)
        };
        match &self.storage {
            WeightStorage::F32(weight) => with_f32_slice(weight, |data| gemm(data, output)),
            _ if outs * cols > MAX_REUSED_WIDENING => {
                let mut widened = vec![0.0f32; outs * cols];
                self.with_matrix(|matrix| Ok(few_rows::decode_matrix(matrix, &mut widened)?))?;
                gemm(&widened, output)
            }
            _ => WIDENED.with(|scratch| {
                // One buffer per thread, reused by every layer's prefill: a fresh one per call
                // would be zeroed and page-faulted in again for every layer (a 64-token prefill
                // of SmolLM2 widens 536 MB of weights).
                let mut scratch = scratch.borrow_mut();
                if scratch.len() < outs * cols {
                    scratch.resize(outs * cols, 0.0);
                }
                let widened = scratch.get_mut(..outs * cols).unwrap_or_default();
                self.with_matrix(|matrix| Ok(few_rows::decode_matrix(matrix, widened)?))?;
                gemm(widened, output)
            }),
        }
    }

    /// Runs `work` on a borrowed view of the values (for f32, the tensor's own storage).
    fn with_matrix<T>(&self, work: impl FnOnce(MatrixRef<'_>) -> Result<T>) -> Result<T> {
        let (rows, cols) = (self.rows, self.cols);
        let view = |data| MatrixRef { data, rows, cols };
        match &self.storage {
            WeightStorage::F32(weight) => with_f32_slice(weight, |data| {
                work(MatrixRef {
                    data: MatrixData::F32(data),
                    rows,
                    cols,
                })
            }),
            WeightStorage::F32Packed(_) => Err(storage_error(
                "packed weights are read by the packed kernel only",
            )),
            WeightStorage::F16(values) => work(view(MatrixData::F16(values))),
            WeightStorage::Bf16(values) => work(view(MatrixData::Bf16(values))),
            WeightStorage::Q8 { values, scales } => work(view(MatrixData::Q8 { values, scales })),
            WeightStorage::Blocks { format, bytes } => work(view(MatrixData::Blocks {
                format: *format,
                bytes,
            })),
            WeightStorage::Interleaved { format, bytes } => work(view(MatrixData::Interleaved {
                format: *format,
                bytes,
            })),
        }
    }
}

/// The block format `scheme` stores a layer of `cols` inputs in: `Q4_K` falls back to `Q4_0`
/// when `cols` is not a multiple of 256; `None` when not even 32 divides `cols`.
fn block_format(scheme: Quantization, cols: usize) -> Option<BlockFormat> {
    let format = match scheme {
        Quantization::Q8_0 => BlockFormat::Q8_0,
        Quantization::Q4K if cols.is_multiple_of(BlockFormat::Q4K.block_values()) => {
            BlockFormat::Q4K
        }
        Quantization::Q4_0 | Quantization::Q4K => BlockFormat::Q4_0,
        Quantization::Q8 => return None,
    };
    cols.is_multiple_of(format.block_values()).then_some(format)
}

/// Where [`StoredMatrix::multiply_into`] writes its product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// `output = x Wᵀ + b`.
    Overwrite,
    /// `output += x Wᵀ + b`: `output` holds a residual (a block's skip connection).
    OntoResidual,
    /// `output = activation(x Wᵀ + b)`.
    Activated(Activation),
}

/// The packed kernel's call for `destination`, the erf GELU fused into it.
fn multiply_packed(
    packed: &PackedWeights,
    input: &[f32],
    rows: usize,
    output: &mut [f32],
    bias: Option<&[f32]>,
    destination: Destination,
) -> Result<()> {
    let start = match (bias, destination) {
        (Some(bias), Destination::OntoResidual) => Start::OutputAndBias(bias),
        (Some(bias), _) => Start::Bias(bias),
        (None, Destination::OntoResidual) => Start::Output,
        (None, _) => {
            output.fill(0.0);
            Start::Output
        }
    };
    let epilogue = match destination {
        Destination::Activated(Activation::GeluErf) => Epilogue::GeluErf,
        _ => Epilogue::None,
    };
    packed.multiply(input, rows, output, start, epilogue)?;
    if let Destination::Activated(activation) = destination
        && activation != Activation::GeluErf
    {
        activation_in_place(activation, output);
    }
    Ok(())
}

/// Runs `work` on a contiguous f32 CPU tensor's own values (no copy).
fn with_f32_slice<T>(weight: &Tensor, work: impl FnOnce(&[f32]) -> Result<T>) -> Result<T> {
    let (storage, layout) = weight.storage_and_layout();
    let candle_core::Storage::Cpu(cpu) = &*storage else {
        return Err(storage_error("the CPU kernels run on CPU tensors only"));
    };
    let data = layout
        .contiguous_offsets()
        .and_then(|(start, end)| cpu.as_slice::<f32>().ok()?.get(start..end))
        .ok_or_else(|| storage_error("weight tensor is not contiguous f32"))?;
    work(data)
}

fn values_of(weight: &Tensor) -> Result<Vec<f32>> {
    Ok(weight.flatten_all()?.to_vec1::<f32>()?)
}

fn storage_error(message: &str) -> Error {
    Error::Candle(candle_core::Error::Msg(message.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use candle_core::Device;

    use super::*;

    /// A smooth `[outs, cols]` weight and `rows` rows of input.
    fn sample(outs: usize, cols: usize, rows: usize) -> (Tensor, Vec<f32>) {
        let w: Vec<f32> = (0..outs * cols)
            .map(|i| ((i as f32) * 0.37).sin())
            .collect();
        let x: Vec<f32> = (0..rows * cols)
            .map(|i| ((i as f32) * 0.11).cos())
            .collect();
        (Tensor::from_vec(w, (outs, cols), &Device::Cpu).unwrap(), x)
    }

    /// The GEMM path (more than [`FEW_ROWS`] rows, weights widened) and the few-row kernel give
    /// the same products, within f32 rounding (1e-5 of `Σ|w x|`), for every storage.
    #[test]
    fn many_row_and_few_row_paths_agree() {
        let (outs, cols, rows) = (40, 96, FEW_ROWS + 6); // an even count: pairs only
        let (weight, x) = sample(outs, cols, rows);
        let bias: Vec<f32> = (0..outs).map(|i| i as f32 * 0.01).collect();
        let x_tensor = Tensor::from_vec(x.clone(), (rows, cols), &Device::Cpu).unwrap();
        for options in [
            WeightOptions::default(),
            WeightOptions::new(WeightDtype::F16, None).unwrap(),
            WeightOptions::new(WeightDtype::Bf16, None).unwrap(),
            WeightOptions::new(WeightDtype::F32, Some(Quantization::Q8)).unwrap(),
        ] {
            let matrix = StoredMatrix::new(&weight, options).unwrap();
            let gemm = matrix
                .matmul(&x_tensor, Some(&bias))
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            // Row by row through the kernel (two rows at a time: the multi-row loop, which
            // reads f32 activations whatever the storage).
            let mut few = Vec::new();
            for pair in x.chunks(2 * cols) {
                few.extend(
                    matrix
                        .matmul_values(pair, pair.len() / cols, Some(&bias))
                        .unwrap(),
                );
            }
            let worst = gemm
                .iter()
                .zip(&few)
                .map(|(a, b)| (a - b).abs() / (a.abs() + 1.0))
                .fold(0.0f32, f32::max);
            assert!(worst < 1e-5, "{options:?}: {worst:e}");
        }
    }

    /// GGUF block storage multiplies as its own dequantized weights do (the only difference:
    /// the activations' 8-bit blocks), and `q4_k` falls back to `Q4_0` on rows that are not
    /// whole super-blocks.
    #[test]
    fn block_storage_multiplies_as_its_dequantized_weights() {
        for (scheme, cols, format) in [
            (Quantization::Q8_0, 96, BlockFormat::Q8_0),
            (Quantization::Q4_0, 96, BlockFormat::Q4_0),
            (Quantization::Q4K, 512, BlockFormat::Q4K),
            (Quantization::Q4K, 96, BlockFormat::Q4_0),
        ] {
            let (outs, rows) = (24, FEW_ROWS + 5);
            let (weight, x) = sample(outs, cols, rows);
            let options = WeightOptions::new(WeightDtype::F32, Some(scheme)).unwrap();
            let matrix = StoredMatrix::new(&weight, options).unwrap();
            let (WeightStorage::Blocks { format: stored, .. }
            | WeightStorage::Interleaved { format: stored, .. }) = matrix.storage()
            else {
                panic!("{scheme:?}: not stored as blocks");
            };
            assert_eq!(*stored, format);
            // The 32-value formats are interleaved, the others kept row after row.
            let interleaved = matches!(matrix.storage(), WeightStorage::Interleaved { .. });
            assert_eq!(interleaved, format != BlockFormat::Q4K, "{scheme:?}");
            // Rows looked up one by one (a token embedding) are the rows of the whole matrix.
            let mut row = vec![0.0f32; cols];
            matrix.row_values(outs - 1, &mut row).unwrap().unwrap();
            assert!(matrix.row_values(outs, &mut row).unwrap().is_none());
            let mut dequantized = vec![0.0f32; outs * cols];
            matrix
                .with_matrix(|view| Ok(few_rows::decode_matrix(view, &mut dequantized)?))
                .unwrap();
            assert_eq!(row, dequantized[(outs - 1) * cols..]);
            // The path the layers take (more than FEW_ROWS rows: the many-row product).
            let mut got = vec![0.0f32; rows * outs];
            matrix
                .multiply_into(&x, rows, &mut got, None, Destination::Overwrite)
                .unwrap();
            for r in 0..rows {
                for o in 0..outs {
                    let terms = (0..cols).map(|k| x[r * cols + k] * dequantized[o * cols + k]);
                    let want: f32 = terms.clone().sum();
                    let magnitude: f32 = terms.map(f32::abs).sum();
                    let diff = (got[r * outs + o] - want).abs();
                    assert!(diff <= 5e-3 * magnitude, "{scheme:?} [{r},{o}]: {diff}");
                }
            }
        }
    }
}
