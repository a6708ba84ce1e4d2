//! BERT: a bidirectional Transformer encoder (Devlin et al., 2018, "BERT: Pre-training of Deep
//! Bidirectional Transformers for Language Understanding"), with its task heads.
//!
//! Follows Transformers' `models/bert/modeling_bert.py` piece by piece: `BertEmbeddings`,
//! `BertSelfAttention`, `BertSelfOutput`, `BertAttention`, `BertIntermediate`, `BertOutput`,
//! `BertLayer`, `BertEncoder`, `BertPooler`, `BertModel`, then the heads. Tensor names are the
//! checkpoint's. MiniLM (sentence-transformers `all-MiniLM-L6-v2`) is a BERT with fewer, smaller
//! layers. RoBERTa reuses this encoder with other position ids (see [`crate::roberta`]).

use candle_core::Tensor;
use serde::Deserialize;

use crate::config::{ModelConfig, defaults};
use crate::error::{Error, Result};
use crate::heads::{QuestionAnsweringHead, TokenClassificationHead};
use crate::layers::{Activation, ActivationForward, Embedding, Inputs, LayerNorm, Linear};
use crate::output::{ModelOutput, TaskModel, TokenSequence};
use crate::weights::Weights;
use safeformers_kernels::encoder_attention::{
    AttentionShape, encoder_attention, encoder_attention_packed,
};
use safeformers_kernels::matmul::DenseWeights;

/// `BertConfig`: the `config.json` fields of BERT (and RoBERTa / XLM-RoBERTa, whose configs
/// are BERT's), with Transformers' defaults.
///
/// The fields that fix tensor shapes have no default here: a config without them is an error
/// naming the field rather than a silent 768-wide model that fails on its first tensor.
#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    /// Number of token ids.
    pub vocab_size: usize,
    /// Width of every hidden state.
    pub hidden_size: usize,
    /// Number of encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer.
    pub num_attention_heads: usize,
    /// Width of the feed-forward layer.
    pub intermediate_size: usize,
    /// Activation of the feed-forward layer (and of the MLM transform): `gelu` (erf),
    /// `gelu_new`, `relu`, ...
    #[serde(default = "defaults::hidden_act")]
    pub hidden_act: String,
    /// Dropout probability (unused at inference; read for completeness).
    #[serde(default = "defaults::dropout")]
    pub hidden_dropout_prob: f64,
    /// Attention dropout probability (unused at inference).
    #[serde(default = "defaults::dropout")]
    pub attention_probs_dropout_prob: f64,
    /// Number of learned positions.
    #[serde(default = "defaults::max_position_embeddings")]
    pub max_position_embeddings: usize,
    /// Number of token types (segments).
    #[serde(default = "defaults::type_vocab_size")]
    pub type_vocab_size: usize,
    /// Epsilon of every layer norm.
    #[serde(default = "defaults::layer_norm_eps")]
    pub layer_norm_eps: f64,
    /// `absolute` (the only kind Transformers 5 keeps; 4's `relative_key*` are refused).
    #[serde(default)]
    pub position_embedding_type: Option<String>,
    /// Dropout of classification heads (unused at inference).
    #[serde(default)]
    pub classifier_dropout: Option<f64>,
    /// A causal decoder configuration (`BertLMHeadModel`); not supported.
    #[serde(default)]
    pub is_decoder: bool,
    /// Cross-attention layers (encoder-decoder use); not supported.
    #[serde(default)]
    pub add_cross_attention: bool,
}

/// The fields [`BertConfig`] requires.
pub(crate) const REQUIRED_FIELDS: &[&str] = &[
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
];

impl BertConfig {
    /// Reads and checks the BERT fields of `config`.
    pub fn from_model_config(config: &ModelConfig) -> Result<BertConfig> {
        let bert: BertConfig = config.architecture_config(REQUIRED_FIELDS)?;
        bert.validate(config)?;
        Ok(bert)
    }

    fn validate(&self, config: &ModelConfig) -> Result<()> {
        for (field, value) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("type_vocab_size", self.type_vocab_size),
        ] {
            if value == 0 {
                return Err(config.invalid_field(field, "must be positive"));
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(config.invalid_field(
                "num_attention_heads",
                &format!(
                    "hidden_size {} is not a multiple of {} heads",
                    self.hidden_size, self.num_attention_heads
                ),
            ));
        }
        self.activation(config)?;
        if let Some(kind) = self.position_embedding_type.as_deref()
            && kind != "absolute"
        {
            return Err(Error::UnsupportedFeature {
                path: config.path().to_path_buf(),
                what: format!("position_embedding_type `{kind}` (only `absolute`)"),
            });
        }
        if self.is_decoder || self.add_cross_attention {
            return Err(Error::UnsupportedFeature {
                path: config.path().to_path_buf(),
                what: "a BERT decoder (is_decoder / add_cross_attention)".to_string(),
            });
        }
        Ok(())
    }

    /// The parsed `hidden_act`.
    pub(crate) fn activation(&self, config: &ModelConfig) -> Result<Activation> {
        Activation::from_name(&self.hidden_act).ok_or_else(|| {
            config.invalid_field(
                "hidden_act",
                &format!(
                    "`{}` is not one of {}",
                    self.hidden_act,
                    Activation::NAMES.join(", ")
                ),
            )
        })
    }
}

/// How position ids are made from the input ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PositionIds {
    /// BERT: `0, 1, 2, ...` for every sequence.
    Absolute,
    /// RoBERTa (`create_position_ids_from_input_ids`): non-padding tokens count up from
    /// `padding_idx + 1`; padding tokens get `padding_idx`.
    AfterPadding {
        /// The padding token id, which is also the padding position.
        padding_idx: u32,
    },
}

/// What differs between BERT and its RoBERTa re-use: the checkpoint prefix of the base model
/// and the position ids.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Flavour {
    /// `bert` or `roberta` (the base model's attribute name in the head classes).
    pub prefix: &'static str,
    /// How positions are numbered.
    pub positions: PositionIds,
}

impl Flavour {
    /// BERT's.
    pub const BERT: Flavour = Flavour {
        prefix: "bert",
        positions: PositionIds::Absolute,
    };
}

/// Whether the base model gets a pooler (`add_pooling_layer` in Transformers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pooling {
    /// No pooler (MLM, token classification, QA heads).
    None,
    /// A pooler when the checkpoint has one (`BertModel`: a checkpoint saved from a head model
    /// without pooler still loads).
    IfPresent,
    /// A pooler, required (sequence classification).
    Required,
}

/// The base model's weights: under the flavour's prefix (`bert.`) when the checkpoint was
/// saved from a head model, at the root when it was saved from the base model (and by
/// sentence-transformers).
pub(crate) fn base_weights<'a>(root: &Weights<'a>, prefix: &str) -> Weights<'a> {
    let prefixed = root.pp(prefix);
    let probe = "embeddings.word_embeddings.weight";
    if !prefixed.contains(probe) && root.contains(probe) {
        root.clone()
    } else {
        prefixed
    }
}

/// `BertEmbeddings`: word + token type + position embeddings, then layer norm.
#[derive(Debug)]
pub struct BertEmbeddings {
    word_embeddings: Embedding,
    position_embeddings: Embedding,
    token_type_embeddings: Embedding,
    layer_norm: NormWeights,
    positions: PositionIds,
    max_positions: usize,
}

impl BertEmbeddings {
    fn load(weights: &Weights<'_>, config: &BertConfig, positions: PositionIds) -> Result<Self> {
        let hidden = config.hidden_size;
        Ok(BertEmbeddings {
            word_embeddings: Embedding::load(
                &weights.pp("word_embeddings"),
                config.vocab_size,
                hidden,
            )?,
            position_embeddings: Embedding::load(
                &weights.pp("position_embeddings"),
                config.max_position_embeddings,
                hidden,
            )?,
            token_type_embeddings: Embedding::load(
                &weights.pp("token_type_embeddings"),
                config.type_vocab_size,
                hidden,
            )?,
            layer_norm: NormWeights::load(&weights.pp("LayerNorm"), hidden, config.layer_norm_eps)?,
            positions,
            max_positions: config.max_position_embeddings,
        })
    }

    /// The word embedding table (the tied MLM decoder weight).
    pub fn word_embeddings(&self) -> &Tensor {
        self.word_embeddings.table()
    }

    /// Position ids of each row of ids, concatenated.
    fn position_ids<'r>(&self, id_rows: impl Iterator<Item = &'r [u32]>) -> Result<Vec<u32>> {
        let rows: Vec<Vec<u32>> = match self.positions {
            PositionIds::Absolute => id_rows.map(|row| (0..row.len() as u32).collect()).collect(),
            PositionIds::AfterPadding { padding_idx } => id_rows
                .map(|row| {
                    let mut count = 0u32;
                    row.iter()
                        .map(|&id| {
                            if id == padding_idx {
                                padding_idx
                            } else {
                                count += 1;
                                padding_idx + count
                            }
                        })
                        .collect()
                })
                .collect(),
        };
        let highest = rows.iter().flatten().copied().max().unwrap_or(0);
        if highest as usize >= self.max_positions {
            return Err(Error::Input {
                input: "input_ids",
                reason: format!(
                    "the sequence needs position {highest} but the model has {} positions",
                    self.max_positions
                ),
            });
        }
        Ok(rows.concat())
    }

    /// The embedded inputs as `[batch·seq, hidden]` rows: word + token type + position rows
    /// summed straight from the tables, then layer norm in place.
    fn forward(&self, inputs: &Inputs) -> Result<Vec<f32>> {
        let words: Vec<u32> = inputs.id_values.concat();
        let types: Vec<u32> = match &inputs.token_types {
            Some(types) => types.flatten_all()?.to_vec1::<u32>()?,
            None => vec![0; words.len()],
        };
        let positions = self.position_ids(inputs.id_values.iter().map(Vec::as_slice))?;
        self.embed(&words, &types, &positions)
    }

    /// Embedded rows for ids, token types and positions (equally long, already in range).
    fn embed(&self, words: &[u32], types: &[u32], positions: &[u32]) -> Result<Vec<f32>> {
        let hidden = self.layer_norm.weight.len();
        let mut rows = vec![0.0f32; words.len() * hidden];
        with_values(self.word_embeddings.table(), |word_table| {
            with_values(self.token_type_embeddings.table(), |type_table| {
                with_values(self.position_embeddings.table(), |position_table| {
                    let ids = words.iter().zip(types).zip(positions);
                    for (row, ((&word, &kind), &position)) in rows.chunks_exact_mut(hidden).zip(ids)
                    {
                        // Ids were range-checked by `Inputs::check` and `position_ids`.
                        let sources = table_row(word_table, word, hidden)
                            .iter()
                            .zip(table_row(type_table, kind, hidden))
                            .zip(table_row(position_table, position, hidden));
                        for (value, ((w, t), p)) in row.iter_mut().zip(sources) {
                            *value = w + t + p;
                        }
                    }
                })
            })
        })???;
        self.layer_norm.apply(&mut rows)?;
        Ok(rows)
    }
}

/// Runs `f` on a contiguous f32 CPU tensor's values in place (no copy); other tensors are
/// copied out first.
fn with_values<R>(tensor: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    {
        let (storage, layout) = tensor.storage_and_layout();
        if let (candle_core::Storage::Cpu(cpu), Some((start, end))) =
            (&*storage, layout.contiguous_offsets())
            && let Some(slice) = cpu.as_slice::<f32>()?.get(start..end)
        {
            return Ok(f(slice));
        }
    }
    Ok(f(&values(tensor)?))
}

/// Row `index` of a `[rows, width]` table (empty when out of range, which the input checks
/// rule out).
fn table_row(table: &[f32], index: u32, width: usize) -> &[f32] {
    let start = index as usize * width;
    table.get(start..start + width).unwrap_or(&[])
}

/// `BertLayer`: self-attention (`BertSelfAttention` + `BertSelfOutput`), then the feed-forward
/// block (`BertIntermediate` + `BertOutput`), run on plain `f32` rows by the CPU kernels.
///
/// Laid out at load for the kernels: query, key and value stacked into one projection (one GEMM
/// writes `[rows, 3·hidden]`, which attention reads in place).
/// Each residual is written into the output buffer before its projection accumulates onto it,
/// so "dense + residual + layer norm" is one GEMM and one pass.
#[derive(Debug)]
struct BertLayer {
    /// `attention.self.{query,key,value}`, stacked.
    query_key_value: DenseWeights,
    /// `attention.output.dense`.
    attention_output: DenseWeights,
    /// `attention.output.LayerNorm`.
    attention_norm: NormWeights,
    /// `intermediate.dense`.
    intermediate: DenseWeights,
    activation: Activation,
    /// `output.dense`.
    output: DenseWeights,
    /// `output.LayerNorm`.
    output_norm: NormWeights,
    num_heads: usize,
}

/// A layer norm's weight and bias as plain values.
#[derive(Debug)]
struct NormWeights {
    weight: Vec<f32>,
    bias: Vec<f32>,
    eps: f32,
}

impl NormWeights {
    fn load(weights: &Weights<'_>, size: usize, eps: f64) -> Result<Self> {
        Ok(NormWeights {
            weight: values(&weights.get_any(&[size], &["weight", "gamma"])?)?,
            bias: values(&weights.get_any(&[size], &["bias", "beta"])?)?,
            eps: eps as f32,
        })
    }

    fn apply(&self, rows: &mut [f32]) -> Result<()> {
        Ok(safeformers_kernels::layer_norm::layer_norm_in_place(
            rows,
            self.weight.len(),
            &self.weight,
            &self.bias,
            self.eps,
        )?)
    }
}

/// A tensor's values, flattened (the tensor, a copy of the checkpoint's bytes, is dropped
/// after this, so the weights are not held twice).
fn values(tensor: &Tensor) -> Result<Vec<f32>> {
    Ok(tensor.flatten_all()?.to_vec1::<f32>()?)
}

/// `nn.Linear` weights `[out, in]` and bias `[out]` laid out for the kernels.
fn load_dense(
    weights: &Weights<'_>,
    in_features: usize,
    out_features: usize,
) -> Result<DenseWeights> {
    let weight = values(&weights.get(&[out_features, in_features], "weight")?)?;
    let bias = values(&weights.get(&[out_features], "bias")?)?;
    Ok(DenseWeights::from_torch_layout(
        weight,
        bias,
        in_features,
        out_features,
    )?)
}

/// Buffers one forward pass reuses across layers.
struct LayerScratch {
    query_key_value: Vec<f32>,
    context: Vec<f32>,
    intermediate: Vec<f32>,
}

impl BertLayer {
    fn load(weights: &Weights<'_>, config: &BertConfig, activation: Activation) -> Result<Self> {
        let hidden = config.hidden_size;
        let attention = weights.pp("attention");
        let projections = attention.pp("self");
        let mut stacked_weight = Vec::with_capacity(3 * hidden * hidden);
        let mut stacked_bias = Vec::with_capacity(3 * hidden);
        for name in ["query", "key", "value"] {
            let projection = projections.pp(name);
            stacked_weight.extend(values(&projection.get(&[hidden, hidden], "weight")?)?);
            stacked_bias.extend(values(&projection.get(&[hidden], "bias")?)?);
        }
        Ok(BertLayer {
            query_key_value: DenseWeights::from_torch_layout(
                stacked_weight,
                stacked_bias,
                hidden,
                3 * hidden,
            )?,
            attention_output: load_dense(&attention.pp("output.dense"), hidden, hidden)?,
            attention_norm: NormWeights::load(
                &attention.pp("output.LayerNorm"),
                hidden,
                config.layer_norm_eps,
            )?,
            intermediate: load_dense(
                &weights.pp("intermediate.dense"),
                hidden,
                config.intermediate_size,
            )?,
            activation,
            output: load_dense(
                &weights.pp("output.dense"),
                config.intermediate_size,
                hidden,
            )?,
            output_norm: NormWeights::load(
                &weights.pp("output.LayerNorm"),
                hidden,
                config.layer_norm_eps,
            )?,
            num_heads: config.num_attention_heads,
        })
    }

    /// Runs the layer on `hidden` (the rows of `layout`, `[rows, hidden]`) in place.
    fn forward(
        &self,
        hidden: &mut [f32],
        scratch: &mut LayerScratch,
        layout: &RowLayout<'_>,
    ) -> Result<()> {
        let rows = layout.rows();
        let width = self.attention_output.out_features();
        let head_dim = width / self.num_heads.max(1);
        // BertSelfAttention: one projection for q, k, v, then attention per head.
        self.query_key_value
            .forward(hidden, rows, &mut scratch.query_key_value)?;
        match *layout {
            RowLayout::Padded {
                batch,
                seq,
                key_mask,
            } => {
                let shape = AttentionShape {
                    batch,
                    seq,
                    heads: self.num_heads,
                    head_dim,
                };
                encoder_attention(
                    &scratch.query_key_value,
                    key_mask,
                    shape,
                    &mut scratch.context,
                )?;
            }
            RowLayout::Packed { lengths } => encoder_attention_packed(
                &scratch.query_key_value,
                lengths,
                self.num_heads,
                head_dim,
                &mut scratch.context,
            )?,
        }
        // BertSelfOutput: dense onto the residual, layer norm.
        self.attention_output
            .forward_onto_residual(&scratch.context, rows, hidden)?;
        self.attention_norm.apply(hidden)?;
        // BertIntermediate, BertOutput.
        self.intermediate.forward_activated(
            hidden,
            rows,
            &mut scratch.intermediate,
            self.activation,
        )?;
        self.output
            .forward_onto_residual(&scratch.intermediate, rows, hidden)?;
        self.output_norm.apply(hidden)
    }
}

/// `BertEncoder`: the stack of layers.
#[derive(Debug)]
struct BertEncoder {
    layers: Vec<BertLayer>,
}

impl BertEncoder {
    fn load(weights: &Weights<'_>, config: &BertConfig, activation: Activation) -> Result<Self> {
        let layers = (0..config.num_hidden_layers)
            .map(|index| {
                BertLayer::load(&weights.pp(&format!("layer.{index}")), config, activation)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(BertEncoder { layers })
    }

    /// Runs every layer over `hidden` (`[batch·seq, width]` rows, in place); `mask`
    /// `[batch, seq]` (u8, non-zero = attend) hides padding keys.
    fn forward(
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
        let layout = RowLayout::Padded {
            batch,
            seq,
            key_mask: key_mask.as_deref(),
        };
        self.forward_rows(hidden, &layout)
    }

    /// Runs every layer over the rows of `layout` (in place).
    fn forward_rows(&self, hidden: &mut [f32], layout: &RowLayout<'_>) -> Result<()> {
        let rows = layout.rows();
        let (width, intermediate) = self.layers.first().map_or((0, 0), |layer| {
            (
                layer.attention_output.out_features(),
                layer.intermediate.out_features(),
            )
        });
        let mut scratch = LayerScratch {
            query_key_value: vec![0.0; rows * 3 * width],
            context: vec![0.0; rows * width],
            intermediate: vec![0.0; rows * intermediate],
        };
        for layer in &self.layers {
            layer.forward(hidden, &mut scratch, layout)?;
        }
        Ok(())
    }
}

/// How the encoder's rows are laid out.
#[derive(Debug, Clone, Copy)]
enum RowLayout<'a> {
    /// `batch` sequences padded to `seq` rows each; `key_mask` `[batch, seq]` (non-zero =
    /// attend) hides the padding keys, whose rows are computed like Transformers does.
    Padded {
        batch: usize,
        seq: usize,
        key_mask: Option<&'a [u8]>,
    },
    /// Sequences of `lengths` rows one after another, no padding.
    Packed { lengths: &'a [usize] },
}

impl RowLayout<'_> {
    fn rows(&self) -> usize {
        match self {
            RowLayout::Padded { batch, seq, .. } => batch * seq,
            RowLayout::Packed { lengths } => lengths.iter().sum(),
        }
    }
}

/// `BertPooler`: dense + tanh over the first token (`[CLS]`).
#[derive(Debug)]
struct BertPooler {
    dense: Linear,
}

impl BertPooler {
    fn load(weights: &Weights<'_>, config: &BertConfig) -> Result<Self> {
        Ok(BertPooler {
            dense: Linear::load(&weights.pp("dense"), config.hidden_size, config.hidden_size)?,
        })
    }

    fn forward(&self, hidden: &Tensor) -> Result<Tensor> {
        let first = hidden.narrow(1, 0, 1)?.squeeze(1)?;
        Ok(self.dense.forward(&first)?.tanh()?)
    }
}

/// `BertModel`: embeddings, encoder and (optionally) pooler. Outputs the last hidden state
/// `[batch, seq, hidden]` and the pooled `[CLS]` state `[batch, hidden]`.
#[derive(Debug)]
pub struct BertModel {
    embeddings: BertEmbeddings,
    encoder: BertEncoder,
    pooler: Option<BertPooler>,
    vocab_size: usize,
    type_vocab_size: usize,
    max_len: usize,
}

impl BertModel {
    /// Loads the base model, with its pooler when the checkpoint has one.
    pub fn load(root: &Weights<'_>, config: &ModelConfig) -> Result<Self> {
        let bert = BertConfig::from_model_config(config)?;
        BertModel::load_with(root, config, &bert, Flavour::BERT, Pooling::IfPresent)
    }

    pub(crate) fn load_with(
        root: &Weights<'_>,
        config: &ModelConfig,
        bert: &BertConfig,
        flavour: Flavour,
        pooling: Pooling,
    ) -> Result<Self> {
        let activation = bert.activation(config)?;
        let weights = base_weights(root, flavour.prefix);
        let pooler = match pooling {
            Pooling::None => None,
            Pooling::IfPresent if !weights.contains("pooler.dense.weight") => None,
            Pooling::IfPresent | Pooling::Required => {
                Some(BertPooler::load(&weights.pp("pooler"), bert)?)
            }
        };
        // The longest input the positions allow (RoBERTa's start after the padding index).
        let max_len = match flavour.positions {
            PositionIds::Absolute => bert.max_position_embeddings,
            PositionIds::AfterPadding { padding_idx } => bert
                .max_position_embeddings
                .saturating_sub(padding_idx as usize + 1),
        };
        Ok(BertModel {
            embeddings: BertEmbeddings::load(&weights.pp("embeddings"), bert, flavour.positions)?,
            encoder: BertEncoder::load(&weights.pp("encoder"), bert, activation)?,
            pooler,
            vocab_size: bert.vocab_size,
            type_vocab_size: bert.type_vocab_size,
            max_len,
        })
    }

    /// The word embedding table (tied LM decoders reuse it).
    pub fn word_embeddings(&self) -> &Tensor {
        self.embeddings.word_embeddings()
    }

    /// The last hidden state of each sequence's tokens, `[len, hidden]` row-major per
    /// sequence, with the sequences packed one after another (no padding rows: see
    /// [`TaskModel::token_states`]). Ids, types and lengths are checked as
    /// [`BertModel::forward`] checks them.
    pub fn token_states(&self, sequences: &[TokenSequence<'_>]) -> Result<Vec<Vec<f32>>> {
        if sequences.is_empty() {
            return Ok(Vec::new());
        }
        let mut lengths = Vec::with_capacity(sequences.len());
        let mut words = Vec::new();
        let mut types = Vec::new();
        for sequence in sequences {
            let ids = sequence.input_ids;
            if ids.is_empty() || ids.len() > self.max_len {
                return Err(Error::Input {
                    input: "input_ids",
                    reason: format!(
                        "a sequence of {} tokens (the model takes 1 to {})",
                        ids.len(),
                        self.max_len
                    ),
                });
            }
            if let Some(&id) = ids.iter().find(|&&id| id as usize >= self.vocab_size) {
                return Err(Error::Input {
                    input: "input_ids",
                    reason: format!("id {id} is outside the vocabulary of {}", self.vocab_size),
                });
            }
            match sequence.token_type_ids {
                None => types.extend(std::iter::repeat_n(0, ids.len())),
                Some(kinds) if kinds.len() != ids.len() => {
                    return Err(Error::Input {
                        input: "token_type_ids",
                        reason: format!("{} types for {} tokens", kinds.len(), ids.len()),
                    });
                }
                Some(kinds) => {
                    if let Some(&kind) = kinds
                        .iter()
                        .find(|&&kind| kind as usize >= self.type_vocab_size)
                    {
                        return Err(Error::Input {
                            input: "token_type_ids",
                            reason: format!(
                                "type {kind} is outside the model's {} types",
                                self.type_vocab_size
                            ),
                        });
                    }
                    types.extend_from_slice(kinds);
                }
            }
            words.extend_from_slice(ids);
            lengths.push(ids.len());
        }
        let positions = self
            .embeddings
            .position_ids(sequences.iter().map(|sequence| sequence.input_ids))?;
        let mut rows = self.embeddings.embed(&words, &types, &positions)?;
        self.encoder
            .forward_rows(&mut rows, &RowLayout::Packed { lengths: &lengths })?;
        let width = rows.len() / words.len().max(1);
        let mut states = Vec::with_capacity(lengths.len());
        let mut rest = rows.as_slice();
        for length in lengths {
            let (sequence, after) = rest.split_at_checked(length * width).unwrap_or((rest, &[]));
            states.push(sequence.to_vec());
            rest = after;
        }
        Ok(states)
    }

    /// Runs the encoder: `(last_hidden_state, pooler_output)`.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        token_type_ids: Option<&Tensor>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let inputs = Inputs::check(
            input_ids,
            attention_mask,
            token_type_ids,
            self.vocab_size,
            self.max_len,
            self.type_vocab_size,
        )?;
        let (batch, seq) = inputs.ids.dims2()?;
        let mut rows = self.embeddings.forward(&inputs)?;
        self.encoder
            .forward(&mut rows, batch, seq, inputs.mask.as_ref())?;
        let width = rows.len() / (batch * seq).max(1);
        let hidden = Tensor::from_vec(rows, (batch, seq, width), inputs.ids.device())?;
        let pooled = self
            .pooler
            .as_ref()
            .map(|pooler| pooler.forward(&hidden))
            .transpose()?;
        Ok((hidden, pooled))
    }
}

impl TaskModel for BertModel {
    fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        token_type_ids: Option<&Tensor>,
    ) -> Result<ModelOutput> {
        let (last_hidden_state, pooler_output) =
            BertModel::forward(self, input_ids, attention_mask, token_type_ids)?;
        Ok(ModelOutput::BaseModel {
            last_hidden_state,
            pooler_output,
        })
    }

    fn token_states(&self, sequences: &[TokenSequence<'_>]) -> Option<Result<Vec<Vec<f32>>>> {
        Some(BertModel::token_states(self, sequences))
    }
}

/// `BertPredictionHeadTransform` + `BertLMPredictionHead`: dense, activation, layer norm, then
/// the decoder (tied to the word embeddings unless `tie_word_embeddings` is false) plus a bias.
#[derive(Debug)]
struct BertLmPredictionHead {
    dense: Linear,
    activation: Activation,
    layer_norm: LayerNorm,
    decoder: Linear,
}

impl BertLmPredictionHead {
    fn load(
        weights: &Weights<'_>,
        config: &ModelConfig,
        bert: &BertConfig,
        word_embeddings: &Tensor,
    ) -> Result<Self> {
        let hidden = bert.hidden_size;
        let transform = weights.pp("transform");
        // `cls.predictions.bias` is tied to `cls.predictions.decoder.bias`; either may be saved.
        let bias = weights.get_any(&[bert.vocab_size], &["bias", "decoder.bias"])?;
        let decoder_weight = if config.tie_word_embeddings {
            word_embeddings.clone()
        } else {
            weights.get(&[bert.vocab_size, hidden], "decoder.weight")?
        };
        Ok(BertLmPredictionHead {
            dense: Linear::load(&transform.pp("dense"), hidden, hidden)?,
            activation: bert.activation(config)?,
            layer_norm: LayerNorm::load(&transform.pp("LayerNorm"), hidden, bert.layer_norm_eps)?,
            decoder: Linear::from_tensors(decoder_weight, Some(bias))?,
        })
    }

    fn forward(&self, hidden: &Tensor) -> Result<Tensor> {
        let transformed = self
            .layer_norm
            .forward(&self.activation.forward(&self.dense.forward(hidden)?)?)?;
        self.decoder.forward(&transformed)
    }
}

/// `BertForMaskedLM`: vocabulary logits `[batch, seq, vocab]` for every position.
#[derive(Debug)]
pub struct BertForMaskedLM {
    bert: BertModel,
    predictions: BertLmPredictionHead,
}

impl BertForMaskedLM {
    /// Loads the model (`bert.*`) and the head (`cls.predictions.*`).
    pub fn load(root: &Weights<'_>, config: &ModelConfig) -> Result<Self> {
        let bert_config = BertConfig::from_model_config(config)?;
        let bert = BertModel::load_with(root, config, &bert_config, Flavour::BERT, Pooling::None)?;
        let predictions = BertLmPredictionHead::load(
            &root.pp("cls.predictions"),
            config,
            &bert_config,
            bert.word_embeddings(),
        )?;
        Ok(BertForMaskedLM { bert, predictions })
    }
}

impl TaskModel for BertForMaskedLM {
    fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        token_type_ids: Option<&Tensor>,
    ) -> Result<ModelOutput> {
        let (hidden, _) = self
            .bert
            .forward(input_ids, attention_mask, token_type_ids)?;
        Ok(ModelOutput::MaskedLm {
            logits: self.predictions.forward(&hidden)?,
        })
    }
}

/// `BertForSequenceClassification`: the pooled `[CLS]` state through `classifier`, logits
/// `[batch, num_labels]`.
#[derive(Debug)]
pub struct BertForSequenceClassification {
    bert: BertModel,
    classifier: Linear,
}

impl BertForSequenceClassification {
    /// Loads the model with its pooler and `classifier`.
    pub fn load(root: &Weights<'_>, config: &ModelConfig) -> Result<Self> {
        let bert_config = BertConfig::from_model_config(config)?;
        let bert =
            BertModel::load_with(root, config, &bert_config, Flavour::BERT, Pooling::Required)?;
        let classifier = Linear::load(
            &root.pp("classifier"),
            bert_config.hidden_size,
            config.num_labels,
        )?;
        Ok(BertForSequenceClassification { bert, classifier })
    }
}

impl TaskModel for BertForSequenceClassification {
    fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        token_type_ids: Option<&Tensor>,
    ) -> Result<ModelOutput> {
        let (_, pooled) = self
            .bert
            .forward(input_ids, attention_mask, token_type_ids)?;
        let pooled = pooled.ok_or_else(|| Error::MissingTensor {
            tensor: "bert.pooler.dense.weight".to_string(),
            files: "(the loaded model)".to_string(),
        })?;
        Ok(ModelOutput::SequenceClassification {
            logits: self.classifier.forward(&pooled)?,
        })
    }
}

/// `BertForTokenClassification` (and RoBERTa's, which is the same with another prefix):
/// `classifier` over every position, logits `[batch, seq, num_labels]`.
#[derive(Debug)]
pub struct BertForTokenClassification {
    bert: BertModel,
    head: TokenClassificationHead,
}

impl BertForTokenClassification {
    /// Loads the model (no pooler) and `classifier`.
    pub fn load(root: &Weights<'_>, config: &ModelConfig) -> Result<Self> {
        BertForTokenClassification::load_with(root, config, Flavour::BERT)
    }

    pub(crate) fn load_with(
        root: &Weights<'_>,
        config: &ModelConfig,
        flavour: Flavour,
    ) -> Result<Self> {
        let bert_config = BertConfig::from_model_config(config)?;
        let bert = BertModel::load_with(root, config, &bert_config, flavour, Pooling::None)?;
        let head = TokenClassificationHead::load(root, bert_config.hidden_size, config.num_labels)?;
        Ok(BertForTokenClassification { bert, head })
    }
}

impl TaskModel for BertForTokenClassification {
    fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        token_type_ids: Option<&Tensor>,
    ) -> Result<ModelOutput> {
        let (hidden, _) = self
            .bert
            .forward(input_ids, attention_mask, token_type_ids)?;
        Ok(ModelOutput::TokenClassification {
            logits: self.head.forward(&hidden)?,
        })
    }
}

/// `BertForQuestionAnswering` (and RoBERTa's): `qa_outputs` over every position, split into
/// start and end logits `[batch, seq]`.
#[derive(Debug)]
pub struct BertForQuestionAnswering {
    bert: BertModel,
    head: QuestionAnsweringHead,
}

impl BertForQuestionAnswering {
    /// Loads the model (no pooler) and `qa_outputs`.
    pub fn load(root: &Weights<'_>, config: &ModelConfig) -> Result<Self> {
        BertForQuestionAnswering::load_with(root, config, Flavour::BERT)
    }

    pub(crate) fn load_with(
        root: &Weights<'_>,
        config: &ModelConfig,
        flavour: Flavour,
    ) -> Result<Self> {
        let bert_config = BertConfig::from_model_config(config)?;
        let bert = BertModel::load_with(root, config, &bert_config, flavour, Pooling::None)?;
        let head = QuestionAnsweringHead::load(root, bert_config.hidden_size, config)?;
        Ok(BertForQuestionAnswering { bert, head })
    }
}

impl TaskModel for BertForQuestionAnswering {
    fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        token_type_ids: Option<&Tensor>,
    ) -> Result<ModelOutput> {
        let (hidden, _) = self
            .bert
            .forward(input_ids, attention_mask, token_type_ids)?;
        let (start_logits, end_logits) = self.head.forward(&hidden)?;
        Ok(ModelOutput::QuestionAnswering {
            start_logits,
            end_logits,
        })
    }
}
