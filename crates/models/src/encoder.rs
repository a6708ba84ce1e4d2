//! The one bidirectional encoder stack that BERT, RoBERTa, XLM-RoBERTa and DistilBERT run: a
//! post-norm Transformer layer (self-attention + residual + LayerNorm, feed-forward + residual
//! + LayerNorm) on plain `f32` row buffers, driven by the kernels.
//!
//! Laid out at load for the kernels: query, key and value stacked into one [`Linear`] of the
//! one [`Attention`] (bidirectional here; one GEMM writes `[rows, 3·hidden]`, which attention
//! reads in place), every linear layer packed for the
//! many-row GEMM when its weights are f32 (other storages, chosen by `--dtype`/`--quantize`, run
//! through the same [`Linear`]). Each residual is written into the output buffer before its
//! projection accumulates onto it, so "dense + residual + layer norm" is one GEMM and one pass.
//! Only the checkpoint's tensor names differ between the families ([`LayerNames`]).

use candle_core::Tensor;

use crate::attention::{Attention, PackedSequences};
use crate::error::Result;
use crate::layers::{Activation, Destination, Linear, Norm};
use crate::weights::Weights;

/// The sizes of an encoder stack, from the family's config.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EncoderShape {
    /// Width of every hidden state.
    pub hidden: usize,
    /// Width of the feed-forward layer.
    pub intermediate: usize,
    /// Attention heads per layer.
    pub heads: usize,
    /// Number of layers.
    pub layers: usize,
    /// Epsilon of every layer norm.
    pub layer_norm_eps: f64,
    /// Activation of the feed-forward layer.
    pub activation: Activation,
}

/// The checkpoint names of one layer's parts, relative to the layer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LayerNames {
    /// Where the layers are (`encoder.layer`), each under `{layers}.{index}`.
    pub layers: &'static str,
    /// The query, key and value projections.
    pub query_key_value: [&'static str; 3],
    /// The attention output projection.
    pub attention_output: &'static str,
    /// The norm after attention.
    pub attention_norm: &'static str,
    /// The first feed-forward projection.
    pub intermediate: &'static str,
    /// The second feed-forward projection.
    pub output: &'static str,
    /// The norm after the feed-forward block.
    pub output_norm: &'static str,
}

impl LayerNames {
    /// `BertLayer` (and RoBERTa's).
    pub const BERT: LayerNames = LayerNames {
        layers: "encoder.layer",
        query_key_value: [
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
        ],
        attention_output: "attention.output.dense",
        attention_norm: "attention.output.LayerNorm",
        intermediate: "intermediate.dense",
        output: "output.dense",
        output_norm: "output.LayerNorm",
    };

    /// DistilBERT's `TransformerBlock`.
    pub const DISTILBERT: LayerNames = LayerNames {
        layers: "transformer.layer",
        query_key_value: ["attention.q_lin", "attention.k_lin", "attention.v_lin"],
        attention_output: "attention.out_lin",
        attention_norm: "sa_layer_norm",
        intermediate: "ffn.lin1",
        output: "ffn.lin2",
        output_norm: "output_layer_norm",
    };
}

/// One encoder layer: attention, then feed-forward, each followed by residual + LayerNorm.
#[derive(Debug)]
struct EncoderLayer {
    /// Bidirectional self-attention, query, key and value projections stacked.
    attention: Attention,
    attention_norm: Norm,
    intermediate: Linear,
    activation: Activation,
    output: Linear,
    output_norm: Norm,
}

/// Buffers one forward pass reuses across layers.
struct LayerScratch {
    query_key_value: Vec<f32>,
    context: Vec<f32>,
    intermediate: Vec<f32>,
}

impl EncoderLayer {
    fn load(weights: &Weights<'_>, shape: &EncoderShape, names: &LayerNames) -> Result<Self> {
        let hidden = shape.hidden;
        let mut stacked_weight = Vec::with_capacity(3);
        let mut stacked_bias = Vec::with_capacity(3);
        for name in names.query_key_value {
            let projection = weights.pp(name);
            stacked_weight.push(projection.get(&[hidden, hidden], "weight")?);
            stacked_bias.push(projection.get(&[hidden], "bias")?);
        }
        let query_key_value = Linear::from_tensors(
            Tensor::cat(&stacked_weight, 0)?,
            Some(Tensor::cat(&stacked_bias, 0)?),
        )?;
        let options = weights.options();
        let linear = |name: &str, inputs: usize, outputs: usize| -> Result<Linear> {
            Linear::load(&weights.pp(name), inputs, outputs)?.packed_for_many_rows()
        };
        let norm =
            |name: &str| Norm::load_layer_norm(&weights.pp(name), hidden, shape.layer_norm_eps);
        let head_dim = hidden / shape.heads.max(1);
        Ok(EncoderLayer {
            attention: Attention::bidirectional(
                query_key_value.stored_as(options)?,
                Linear::load(&weights.pp(names.attention_output), hidden, hidden)?,
                shape.heads,
                1.0 / (head_dim as f64).sqrt(),
            )?,
            attention_norm: norm(names.attention_norm)?,
            intermediate: linear(names.intermediate, hidden, shape.intermediate)?,
            activation: shape.activation,
            output: linear(names.output, shape.intermediate, hidden)?,
            output_norm: norm(names.output_norm)?,
        })
    }

    /// Runs the layer on `hidden` (the rows of `sequences`, `[rows, hidden]`) in place.
    fn forward(
        &self,
        hidden: &mut [f32],
        scratch: &mut LayerScratch,
        sequences: PackedSequences<'_>,
    ) -> Result<()> {
        let rows = sequences.rows();
        // Self-attention onto the residual, then layer norm.
        self.attention.forward_onto(
            hidden,
            sequences,
            &mut scratch.query_key_value,
            &mut scratch.context,
        )?;
        self.attention_norm.forward_rows(hidden)?;
        // Feed-forward block.
        self.intermediate.forward_rows_to(
            hidden,
            rows,
            &mut scratch.intermediate,
            Destination::Activated(self.activation),
        )?;
        self.output.forward_rows_to(
            &scratch.intermediate,
            rows,
            hidden,
            Destination::OntoResidual,
        )?;
        self.output_norm.forward_rows(hidden)
    }
}

/// The stack of layers (`BertEncoder`, DistilBERT's `Transformer`).
#[derive(Debug)]
pub(crate) struct Encoder {
    layers: Vec<EncoderLayer>,
    hidden: usize,
    intermediate: usize,
}

impl Encoder {
    /// Loads the layers under `weights` (the base model), named as `names` say.
    pub fn load(weights: &Weights<'_>, shape: &EncoderShape, names: &LayerNames) -> Result<Self> {
        let layers = (0..shape.layers)
            .map(|index| {
                EncoderLayer::load(
                    &weights.pp(&format!("{}.{index}", names.layers)),
                    shape,
                    names,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Encoder {
            layers,
            hidden: shape.hidden,
            intermediate: shape.intermediate,
        })
    }

    /// Runs every layer over `hidden` (`[batch·seq, width]` rows, in place); `mask`
    /// `[batch, seq]` (u8, non-zero = attend) hides padding keys.
    pub fn forward(
        &self,
        hidden: &mut [f32],
        batch: usize,
        seq: usize,
        mask: Option<&Tensor>,
    ) -> Result<()> {
        let key_mask = match mask {
            Some(mask) => {
                let flags = mask.flatten_all()?.to_vec1::<u8>()?;
                // An all-ones mask is no mask: skip the bookkeeping.
                flags.contains(&0).then_some(flags)
            }
            None => None,
        };
        let padding: Option<Vec<bool>> =
            key_mask.map(|flags| flags.iter().map(|&flag| flag != 0).collect());
        let lengths = vec![seq; batch];
        let sequences = PackedSequences {
            lengths: &lengths,
            padding: padding.as_deref(),
        };
        self.forward_rows(hidden, sequences)
    }

    /// Runs every layer over the rows of `sequences` (in place).
    pub fn forward_rows(&self, hidden: &mut [f32], sequences: PackedSequences<'_>) -> Result<()> {
        let rows = sequences.rows();
        let mut scratch = LayerScratch {
            query_key_value: vec![0.0; rows * 3 * self.hidden],
            context: vec![0.0; rows * self.hidden],
            intermediate: vec![0.0; rows * self.intermediate],
        };
        for layer in &self.layers {
            layer.forward(hidden, &mut scratch, sequences)?;
        }
        Ok(())
    }
}
