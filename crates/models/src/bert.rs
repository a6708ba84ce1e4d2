//! BERT: a bidirectional Transformer encoder (Devlin et al., 2018, "BERT: Pre-training of Deep
//! Bidirectional Transformers for Language Understanding"), with its task heads.
//!
//! Follows Transformers' `models/bert/modeling_bert.py`: `EncoderEmbeddings`, the layers
//! (`BertSelfAttention` … `BertOutput`, in [`crate::encoder`], shared with the other encoder
//! families), `BertPooler`, `BertModel`; the heads are [`crate::heads`]' generic
//! [`EncoderForTask`]. Tensor names are the checkpoint's. MiniLM (sentence-transformers
//! `all-MiniLM-L6-v2`) is a BERT with fewer, smaller layers. RoBERTa and DistilBERT run this
//! same base model with their own [`Flavour`] (see [`crate::roberta`], [`crate::distilbert`]).

use candle_core::Tensor;
use serde::Deserialize;

use crate::attention::PackedSequences;
use crate::config::{ModelConfig, defaults};
use crate::distilbert::{DistilBertConfig, sinusoidal_table};
use crate::encoder::{Encoder, EncoderShape, LayerNames};
use crate::error::{Error, Result};
use crate::heads::{
    EncoderForTask, MaskedLmHead, QuestionAnsweringHead, SequenceClassificationHead,
    TokenClassificationHead,
};
use crate::layers::{Activation, Embedding, Inputs, Linear, Norm, tensor_values};
use crate::output::{ModelOutput, TaskModel, TokenSequence};
use crate::weights::Weights;

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
        check_encoder_sizes(
            config,
            &[
                ("vocab_size", self.vocab_size),
                ("intermediate_size", self.intermediate_size),
                ("max_position_embeddings", self.max_position_embeddings),
                ("type_vocab_size", self.type_vocab_size),
            ],
            ("hidden_size", self.hidden_size),
            ("num_attention_heads", self.num_attention_heads),
        )?;
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
        parse_activation(config, "hidden_act", &self.hidden_act)
    }
}

/// Checks an encoder config's sizes: every field of `positive` above zero, and the hidden
/// width (`width`, with its field name) a positive multiple of the head count (`heads`).
pub(crate) fn check_encoder_sizes(
    config: &ModelConfig,
    positive: &[(&str, usize)],
    width: (&str, usize),
    heads: (&str, usize),
) -> Result<()> {
    for &(field, value) in positive.iter().chain([&width, &heads]) {
        if value == 0 {
            return Err(config.invalid_field(field, "must be positive"));
        }
    }
    if !width.1.is_multiple_of(heads.1) {
        return Err(config.invalid_field(
            heads.0,
            &format!(
                "{} {} is not a multiple of {} heads",
                width.0, width.1, heads.1
            ),
        ));
    }
    Ok(())
}

/// The activation `name` that the config's `field` names, or an error listing the known ones.
pub(crate) fn parse_activation(
    config: &ModelConfig,
    field: &str,
    name: &str,
) -> Result<Activation> {
    Activation::from_name(name).ok_or_else(|| {
        config.invalid_field(
            field,
            &format!("`{name}` is not one of {}", Activation::NAMES.join(", ")),
        )
    })
}

/// How position ids are made from the input ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PositionIds {
    /// BERT, DistilBERT: `0, 1, 2, ...` for every sequence.
    Absolute,
    /// RoBERTa (`create_position_ids_from_input_ids`): non-padding tokens count up from
    /// `padding_idx + 1`; padding tokens get `padding_idx`.
    AfterPadding {
        /// The padding token id, which is also the padding position.
        padding_idx: u32,
    },
}

/// The encoder families that share this base model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// BERT (and MiniLM).
    Bert,
    /// RoBERTa and XLM-RoBERTa.
    Roberta,
    /// DistilBERT.
    DistilBert,
}

/// What differs between the families on the shared encoder: checkpoint names, position ids,
/// token types.
#[derive(Debug, Clone, Copy)]
pub struct Flavour {
    /// Which family.
    pub family: Family,
    /// How positions are numbered.
    pub positions: PositionIds,
    /// Compute DistilBERT's sinusoidal position table when the checkpoint lacks it.
    pub sinusoidal_positions: bool,
}

impl Flavour {
    /// BERT's.
    pub const BERT: Flavour = Flavour {
        family: Family::Bert,
        positions: PositionIds::Absolute,
        sinusoidal_positions: false,
    };

    /// The base model's attribute name in the head classes (`bert`, `roberta`, `distilbert`).
    pub fn prefix(self) -> &'static str {
        match self.family {
            Family::Bert => "bert",
            Family::Roberta => "roberta",
            Family::DistilBert => "distilbert",
        }
    }

    /// The layers' checkpoint names.
    pub(crate) fn layer_names(self) -> &'static LayerNames {
        match self.family {
            Family::Bert | Family::Roberta => &LayerNames::BERT,
            Family::DistilBert => &LayerNames::DISTILBERT,
        }
    }

    /// The family's config read as the shared encoder's [`BertConfig`].
    pub fn encoder_config(self, config: &ModelConfig) -> Result<BertConfig> {
        match self.family {
            Family::Bert | Family::Roberta => BertConfig::from_model_config(config),
            Family::DistilBert => Ok(DistilBertConfig::from_model_config(config)?.to_bert()),
        }
    }
}

/// Whether the base model gets a pooler (`add_pooling_layer` in Transformers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// No pooler (every head: BERT's sequence classifier loads the pooler as its own part).
    None,
    /// A pooler when the checkpoint has one (`BertModel`: a checkpoint saved from a head model
    /// without pooler still loads).
    IfPresent,
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

/// An encoder's embeddings: word + token type (none in DistilBERT, ModernBERT, MPNet) +
/// position embeddings (none where positions enter attention instead: rotary, ALiBi), then a
/// norm. `BertEmbeddings`, DistilBERT's `Embeddings`, and the ports' embedding modules.
#[derive(Debug)]
pub struct EncoderEmbeddings {
    word_embeddings: Embedding,
    position_embeddings: Option<Embedding>,
    token_type_embeddings: Option<Embedding>,
    layer_norm: Norm,
    positions: PositionIds,
    max_positions: usize,
}

impl EncoderEmbeddings {
    fn load(weights: &Weights<'_>, config: &BertConfig, flavour: Flavour) -> Result<Self> {
        let hidden = config.hidden_size;
        let positions = weights.pp("position_embeddings");
        let position_embeddings = if flavour.sinusoidal_positions && !positions.contains("weight") {
            Embedding::from_table(sinusoidal_table(
                config.max_position_embeddings,
                hidden,
                weights.device(),
            )?)?
        } else {
            Embedding::load(&positions, config.max_position_embeddings, hidden)?
        };
        let token_type_embeddings = match flavour.family {
            Family::DistilBert => None,
            Family::Bert | Family::Roberta => Some(Embedding::load(
                &weights.pp("token_type_embeddings"),
                config.type_vocab_size,
                hidden,
            )?),
        };
        Ok(EncoderEmbeddings {
            word_embeddings: Embedding::load(
                &weights.pp("word_embeddings"),
                config.vocab_size,
                hidden,
            )?,
            position_embeddings: Some(position_embeddings),
            token_type_embeddings,
            layer_norm: Norm::load_layer_norm(
                &weights.pp("LayerNorm"),
                hidden,
                config.layer_norm_eps,
            )?,
            positions: flavour.positions,
            max_positions: config.max_position_embeddings,
        })
    }

    /// Embeddings from their parts: word, token type and position tables (`[_, hidden]`), how
    /// positions are numbered, and the norm after their sum.
    pub(crate) fn new(
        word_embeddings: Embedding,
        token_type_embeddings: Option<Embedding>,
        positions: Option<(Embedding, PositionIds)>,
        norm: Norm,
    ) -> EncoderEmbeddings {
        let (position_embeddings, positions, max_positions) = match positions {
            Some((table, numbering)) => {
                let rows = table.table().dims().first().copied().unwrap_or(0);
                (Some(table), numbering, rows)
            }
            None => (None, PositionIds::Absolute, usize::MAX),
        };
        EncoderEmbeddings {
            word_embeddings,
            position_embeddings,
            token_type_embeddings,
            layer_norm: norm,
            positions,
            max_positions,
        }
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

    /// Embedded rows for ids, token types and positions (equally long, already in range),
    /// summed in Transformers' order: `(word + type) + position`.
    fn embed(&self, words: &[u32], types: &[u32], positions: &[u32]) -> Result<Vec<f32>> {
        let hidden = self.layer_norm.width();
        let mut rows = vec![0.0f32; words.len() * hidden];
        add_table_rows(&mut rows, hidden, self.word_embeddings.table(), words)?;
        if let Some(type_embeddings) = &self.token_type_embeddings {
            add_table_rows(&mut rows, hidden, type_embeddings.table(), types)?;
        }
        if let Some(position_embeddings) = &self.position_embeddings {
            add_table_rows(&mut rows, hidden, position_embeddings.table(), positions)?;
        }
        self.layer_norm.forward_rows(&mut rows)?;
        Ok(rows)
    }
}

/// Adds row `ids[i]` of `table` (`[_, width]`) onto row `i` of `rows`, straight from the
/// table's values (ids were range-checked by `Inputs::check` and `position_ids`).
fn add_table_rows(rows: &mut [f32], width: usize, table: &Tensor, ids: &[u32]) -> Result<()> {
    with_values(table, |table| {
        for (row, &id) in rows.chunks_exact_mut(width).zip(ids) {
            for (value, t) in row.iter_mut().zip(table_row(table, id, width)) {
                *value += t;
            }
        }
    })
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
    Ok(f(&tensor_values(tensor)?))
}

/// Row `index` of a `[rows, width]` table (empty when out of range, which the input checks
/// rule out).
fn table_row(table: &[f32], index: u32, width: usize) -> &[f32] {
    let start = index as usize * width;
    table.get(start..start + width).unwrap_or(&[])
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

/// An encoder base model: embeddings, encoder and (optionally) pooler. Outputs the last hidden
/// state `[batch, seq, hidden]` and the pooled `[CLS]` state `[batch, hidden]`. `BertModel`
/// (and RoBERTa's, DistilBERT's) loaded by [`EncoderModel::load_with`], the native ports of
/// remote-code encoders built by [`EncoderModel::from_parts`].
#[derive(Debug)]
pub struct EncoderModel {
    embeddings: EncoderEmbeddings,
    encoder: Encoder,
    pooler: Option<BertPooler>,
    vocab_size: usize,
    type_vocab_size: usize,
    max_len: usize,
}

/// `BertModel`: the encoder base model with BERT's parts.
pub type BertModel = EncoderModel;

impl EncoderModel {
    /// A base model without pooler from its parts; inputs are checked against `vocab_size`
    /// ids, `type_vocab_size` token types and `max_len` tokens per sequence.
    pub(crate) fn from_parts(
        embeddings: EncoderEmbeddings,
        encoder: Encoder,
        vocab_size: usize,
        type_vocab_size: usize,
        max_len: usize,
    ) -> EncoderModel {
        EncoderModel {
            embeddings,
            encoder,
            pooler: None,
            vocab_size,
            type_vocab_size,
            max_len,
        }
    }

    /// Loads the base model, with its pooler when the checkpoint has one.
    pub fn load(root: &Weights<'_>, config: &ModelConfig) -> Result<Self> {
        let bert = BertConfig::from_model_config(config)?;
        EncoderModel::load_with(root, config, &bert, Flavour::BERT, Pooling::IfPresent)
    }

    /// Loads the base model of any encoder family (`flavour`) from `root` (under the family's
    /// prefix or at the root), its config already read as `bert`.
    pub fn load_with(
        root: &Weights<'_>,
        config: &ModelConfig,
        bert: &BertConfig,
        flavour: Flavour,
        pooling: Pooling,
    ) -> Result<Self> {
        let shape = EncoderShape {
            hidden: bert.hidden_size,
            intermediate: bert.intermediate_size,
            heads: bert.num_attention_heads,
            layers: bert.num_hidden_layers,
            layer_norm_eps: bert.layer_norm_eps,
            activation: bert.activation(config)?,
        };
        let weights = base_weights(root, flavour.prefix());
        let pooler = match pooling {
            Pooling::IfPresent if weights.contains("pooler.dense.weight") => {
                Some(BertPooler::load(&weights.pp("pooler"), bert)?)
            }
            Pooling::None | Pooling::IfPresent => None,
        };
        // The longest input the positions allow (RoBERTa's start after the padding index).
        let max_len = match flavour.positions {
            PositionIds::Absolute => bert.max_position_embeddings,
            PositionIds::AfterPadding { padding_idx } => bert
                .max_position_embeddings
                .saturating_sub(padding_idx as usize + 1),
        };
        Ok(EncoderModel {
            embeddings: EncoderEmbeddings::load(&weights.pp("embeddings"), bert, flavour)?,
            encoder: Encoder::load(&weights, &shape, flavour.layer_names())?,
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
        self.encoder.forward_rows(
            &mut rows,
            PackedSequences {
                lengths: &lengths,
                padding: None,
            },
        )?;
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

impl TaskModel for EncoderModel {
    fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        token_type_ids: Option<&Tensor>,
    ) -> Result<ModelOutput> {
        let (last_hidden_state, pooler_output) =
            EncoderModel::forward(self, input_ids, attention_mask, token_type_ids)?;
        Ok(ModelOutput::BaseModel {
            last_hidden_state,
            pooler_output,
        })
    }

    fn token_states(&self, sequences: &[TokenSequence<'_>]) -> Option<Result<Vec<Vec<f32>>>> {
        Some(EncoderModel::token_states(self, sequences))
    }
}

/// `BertForMaskedLM` (and RoBERTa's, DistilBERT's): the shared encoder with the masked-LM head.
pub type BertForMaskedLM = EncoderForTask<MaskedLmHead>;

/// `BertForSequenceClassification` (and the twins): pooled first token, then `classifier`.
pub type BertForSequenceClassification = EncoderForTask<SequenceClassificationHead>;

/// `BertForTokenClassification` (and the twins): `classifier` over every position.
pub type BertForTokenClassification = EncoderForTask<TokenClassificationHead>;

/// `BertForQuestionAnswering` (and the twins): `qa_outputs`, start and end logits.
pub type BertForQuestionAnswering = EncoderForTask<QuestionAnsweringHead>;
