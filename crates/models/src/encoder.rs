//! The one bidirectional encoder stack every encoder architecture runs: BERT, RoBERTa,
//! XLM-RoBERTa and DistilBERT, and the remote-code favourites ported natively (NomicBert,
//! JinaBert, GTE, MPNet, ModernBERT), on plain `f32` row buffers driven by the kernels.
//!
//! What differs between them is data, set at load: where the norms sit ([`NormPlacement`]:
//! BERT's post-norm, ModernBERT's pre-norm with a final norm), the feed-forward block (the
//! decoders' [`Mlp`]: plain, or gated with the activated half first, which the architectures
//! arrange at load by stacking their projections), and how positions enter attention: absolute
//! embeddings (before the stack), rotary per layer ([`EncoderRotary`], one or more per model,
//! each layer naming its own), a score bias by distance shared by every layer
//! ([`DistanceBiasTable`]: ALiBi, MPNet's relative buckets), and a sliding window per layer
//! (on the [`Attention`]).
//!
//! Laid out at load for the kernels: query, key and value stacked into one [`Linear`] of the
//! one [`Attention`] (one GEMM writes `[rows, 3·hidden]`, which attention reads in place), every
//! linear layer packed for the many-row GEMM when its weights are f32 (other storages, chosen by
//! `--dtype`/`--quantize`, run through the same [`Linear`]). Each residual is written into the
//! output buffer before its projection accumulates onto it, so "dense + residual + layer norm"
//! is one GEMM and one pass. BERT-style checkpoints differ only in tensor names
//! ([`LayerNames`]).

use candle_core::Tensor;

use crate::attention::{Attention, EncoderPositions, PackedSequences, RotaryAngles};
use crate::decoder::Mlp;
use crate::error::{Error, Result};
use crate::layers::{Activation, Linear, Norm};
use crate::weights::Weights;
use safeformers_kernels::attention::DistanceBias;
use safeformers_kernels::rotary::RotaryPairs;

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

/// Where a layer's norms sit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NormPlacement {
    /// `norm(x + attention(x))`, then `norm(h + mlp(h))` (BERT and its descendants).
    Post,
    /// `x + attention(norm(x))`, then `x + mlp(norm(x))` (ModernBERT; its first layer has no
    /// attention norm).
    Pre,
}

/// One encoder layer: attention and feed-forward, each with its residual and norm.
#[derive(Debug)]
pub(crate) struct EncoderLayer {
    /// Bidirectional self-attention (with a window on local layers), query, key and value
    /// projections stacked.
    pub attention: Attention,
    /// After attention (post-norm) or before it (pre-norm; `None`: the identity).
    pub attention_norm: Option<Norm>,
    /// The feed-forward block.
    pub mlp: Mlp,
    /// After the feed-forward block (post-norm) or before it (pre-norm).
    pub mlp_norm: Norm,
    /// Where the norms sit.
    pub placement: NormPlacement,
    /// Which of the encoder's rotary embeddings this layer applies, if any.
    pub rotary: Option<usize>,
}

/// Buffers one forward pass reuses across layers.
struct LayerScratch {
    query_key_value: Vec<f32>,
    context: Vec<f32>,
    inner: Vec<f32>,
    normed: Vec<f32>,
}

/// BERT's self-attention (`BertSelfAttention` and `BertSelfOutput.dense`, and the same block in
/// its descendants): the query, key and value projections named `query_key_value` (each
/// `[hidden, hidden]` with a bias) stacked into one, the output projection `output`, scores
/// scaled by `1/√head_dim`.
pub(crate) fn stacked_attention(
    weights: &Weights<'_>,
    hidden: usize,
    heads: usize,
    query_key_value: [&str; 3],
    output: &str,
) -> Result<Attention> {
    let mut stacked_weight = Vec::with_capacity(3);
    let mut stacked_bias = Vec::with_capacity(3);
    for name in query_key_value {
        let projection = weights.pp(name);
        stacked_weight.push(projection.get(&[hidden, hidden], "weight")?);
        stacked_bias.push(projection.get(&[hidden], "bias")?);
    }
    let query_key_value = Linear::from_tensors(
        Tensor::cat(&stacked_weight, 0)?,
        Some(Tensor::cat(&stacked_bias, 0)?),
    )?;
    let head_dim = hidden / heads.max(1);
    Attention::bidirectional(
        query_key_value.stored_as(weights.options())?,
        Linear::load(&weights.pp(output), hidden, hidden)?,
        heads,
        1.0 / (head_dim as f64).sqrt(),
    )
}

impl EncoderLayer {
    /// A BERT-style post-norm layer named as `names` say (biases everywhere, LayerNorms).
    pub(crate) fn load_named(
        weights: &Weights<'_>,
        shape: &EncoderShape,
        names: &LayerNames,
    ) -> Result<Self> {
        let hidden = shape.hidden;
        let linear = |name: &str, inputs: usize, outputs: usize| {
            Linear::load(&weights.pp(name), inputs, outputs)
        };
        let norm =
            |name: &str| Norm::load_layer_norm(&weights.pp(name), hidden, shape.layer_norm_eps);
        Ok(EncoderLayer {
            attention: stacked_attention(
                weights,
                hidden,
                shape.heads,
                names.query_key_value,
                names.attention_output,
            )?,
            attention_norm: Some(norm(names.attention_norm)?),
            mlp: Mlp::plain(
                linear(names.intermediate, hidden, shape.intermediate)?,
                linear(names.output, shape.intermediate, hidden)?,
                shape.activation,
            )?,
            mlp_norm: norm(names.output_norm)?,
            placement: NormPlacement::Post,
            rotary: None,
        })
    }

    /// Runs the layer on `hidden` (the rows of `sequences`, `[rows, hidden]`) in place.
    fn forward(
        &self,
        hidden: &mut [f32],
        scratch: &mut LayerScratch,
        sequences: PackedSequences<'_>,
        positions: EncoderPositions<'_>,
    ) -> Result<()> {
        let rows = sequences.rows();
        let attention_scratch = (
            scratch.query_key_value.as_mut_slice(),
            scratch.context.as_mut_slice(),
        );
        match self.placement {
            NormPlacement::Post => {
                self.attention.forward_onto(
                    hidden,
                    None,
                    sequences,
                    attention_scratch,
                    positions,
                )?;
                if let Some(norm) = &self.attention_norm {
                    norm.forward_rows(hidden)?;
                }
                self.mlp.inner_rows(hidden, rows, &mut scratch.inner)?;
                self.mlp.down().forward_rows_to(
                    &scratch.inner,
                    rows,
                    hidden,
                    crate::layers::Destination::OntoResidual,
                )?;
                self.mlp_norm.forward_rows(hidden)
            }
            NormPlacement::Pre => {
                let normed = match &self.attention_norm {
                    Some(norm) => {
                        scratch.normed.clear();
                        scratch.normed.extend_from_slice(hidden);
                        norm.forward_rows(&mut scratch.normed)?;
                        Some(scratch.normed.as_slice())
                    }
                    None => None,
                };
                self.attention.forward_onto(
                    hidden,
                    normed,
                    sequences,
                    attention_scratch,
                    positions,
                )?;
                scratch.normed.clear();
                scratch.normed.extend_from_slice(hidden);
                self.mlp_norm.forward_rows(&mut scratch.normed)?;
                self.mlp
                    .inner_rows(&scratch.normed, rows, &mut scratch.inner)?;
                self.mlp.down().forward_rows_to(
                    &scratch.inner,
                    rows,
                    hidden,
                    crate::layers::Destination::OntoResidual,
                )
            }
        }
    }
}

/// Rotary position embeddings of an encoder: the inverse frequencies of its rotated pairs
/// (fixed at load, or by Nomic's dynamic NTK from the batch's padded length) and how values
/// pair.
#[derive(Debug, Clone)]
pub(crate) struct EncoderRotary {
    /// The inverse frequencies.
    pub frequencies: RotaryFrequencies,
    /// Which values rotate together.
    pub pairs: RotaryPairs,
}

/// Where an encoder's rotary inverse frequencies come from.
#[derive(Debug, Clone)]
pub(crate) enum RotaryFrequencies {
    /// The same at every length (`rotary_dim / 2` values).
    Fixed(Vec<f64>),
    /// NomicBert's dynamic NTK: `base^(−2i/d)` up to `trained` positions; past them, with `L`
    /// the longest sequence of the batch (its padded length),
    /// `base' = base · (factor · L / trained − (factor − 1))^(d / (d − 2))`.
    DynamicNtk {
        /// `rotary_emb_base`.
        base: f64,
        /// The rotated width `d`.
        rotary_dim: usize,
        /// `rotary_scaling_factor`.
        factor: f64,
        /// `max_trained_positions`.
        trained: usize,
    },
}

/// `base^(−2i/d)` for `i < d/2`, in f32 as Transformers computes `inv_freq` (the decoders'
/// [`crate::rotary::inverse_frequencies`]).
pub(crate) fn inverse_frequencies(base: f64, rotary_dim: usize) -> Vec<f64> {
    crate::rotary::inverse_frequencies(base, rotary_dim)
        .into_iter()
        .map(f64::from)
        .collect()
}

impl RotaryFrequencies {
    /// The inverse frequencies for a batch whose longest sequence is `longest` tokens.
    fn for_longest(&self, longest: usize) -> Vec<f64> {
        match self {
            RotaryFrequencies::Fixed(frequencies) => frequencies.clone(),
            RotaryFrequencies::DynamicNtk {
                base,
                rotary_dim,
                factor,
                trained,
            } => {
                let base = if longest > *trained && *rotary_dim > 2 {
                    crate::rotary::dynamic_ntk_base(*base, *factor, longest, *trained, *rotary_dim)
                } else {
                    *base
                };
                inverse_frequencies(base, *rotary_dim)
            }
        }
    }
}

/// A score bias by head and distance for every layer: `[heads, 2·span − 1]`, see
/// [`DistanceBias`].
#[derive(Debug, Clone)]
pub(crate) struct DistanceBiasTable {
    /// The values, distance `−(span − 1)` first for each head.
    pub values: Vec<f32>,
    /// One more than the farthest distance held.
    pub span: usize,
}

/// The stack of layers (`BertEncoder`, DistilBERT's `Transformer`, and the ports'), with what
/// positions need and an optional final norm.
#[derive(Debug)]
pub(crate) struct Encoder {
    layers: Vec<EncoderLayer>,
    rotaries: Vec<EncoderRotary>,
    distance_bias: Option<DistanceBiasTable>,
    final_norm: Option<Norm>,
    hidden: usize,
}

impl Encoder {
    /// Loads BERT-style post-norm layers under `weights` (the base model), named as `names`
    /// say.
    pub fn load(weights: &Weights<'_>, shape: &EncoderShape, names: &LayerNames) -> Result<Self> {
        let layers = (0..shape.layers)
            .map(|index| {
                EncoderLayer::load_named(
                    &weights.pp(&format!("{}.{index}", names.layers)),
                    shape,
                    names,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Encoder::new(layers, Vec::new(), None, None)
    }

    /// A stack of `layers` already loaded, each naming one of `rotaries` or none, with a
    /// distance bias for every layer and a final norm if the architecture has them.
    pub fn new(
        layers: Vec<EncoderLayer>,
        rotaries: Vec<EncoderRotary>,
        distance_bias: Option<DistanceBiasTable>,
        final_norm: Option<Norm>,
    ) -> Result<Self> {
        let hidden = layers
            .first()
            .map_or(0, |layer| layer.mlp.down().out_features());
        if let Some(index) = layers
            .iter()
            .position(|layer| layer.rotary.is_some_and(|rotary| rotary >= rotaries.len()))
        {
            return Err(Error::Cache {
                reason: format!("encoder layer {index} names a rotary embedding it lacks"),
            });
        }
        Ok(Encoder {
            layers,
            rotaries,
            distance_bias,
            final_norm,
            hidden,
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
        let longest = sequences.lengths.iter().copied().max().unwrap_or(0);
        let mut scratch = LayerScratch {
            query_key_value: vec![0.0; rows * 3 * self.hidden],
            context: vec![0.0; rows * self.hidden],
            inner: Vec::new(),
            normed: Vec::new(),
        };
        let angles: Vec<RotaryAngles> = self
            .rotaries
            .iter()
            .map(|rotary| {
                RotaryAngles::new(
                    &rotary.frequencies.for_longest(longest),
                    longest,
                    rotary.pairs,
                )
            })
            .collect();
        let bias = self.distance_bias.as_ref().map(|table| DistanceBias {
            values: &table.values,
            span: table.span,
        });
        for layer in &self.layers {
            let positions = EncoderPositions {
                rotary: layer.rotary.and_then(|index| angles.get(index)),
                bias,
            };
            layer.forward(hidden, &mut scratch, sequences, positions)?;
        }
        if let Some(norm) = &self.final_norm {
            norm.forward_rows(hidden)?;
        }
        Ok(())
    }
}
