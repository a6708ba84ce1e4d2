//! The encoders' task heads, and the one wrapper that puts a head on the shared base model
//! ([`EncoderForTask`]): Transformers' `BertFor*`, `RobertaFor*`, `XLMRobertaFor*` and
//! `DistilBertFor*` classes are each an [`EncoderForTask`] of one of these heads. The heads'
//! layers are the same in every family; only their checkpoint names (and an activation) differ,
//! picked by the family ([`Family`]).

use std::fmt::Debug;

use candle_core::{D, Tensor};

use crate::bert::{BertConfig, BertModel, Family, Flavour, Pooling, base_weights};
use crate::config::ModelConfig;
use crate::error::Result;
use crate::layers::{Activation, ActivationForward, Linear, Norm};
use crate::output::{ModelOutput, TaskModel};
use crate::weights::Weights;

/// What a head is loaded from.
#[derive(Debug, Clone, Copy)]
pub struct HeadSource<'a, 'w> {
    /// The checkpoint root.
    pub root: &'a Weights<'w>,
    /// The parsed `config.json`.
    pub config: &'a ModelConfig,
    /// The family's config as the shared encoder's.
    pub encoder: &'a BertConfig,
    /// The family.
    pub flavour: Flavour,
    /// The base model already loaded (the tied word embeddings).
    pub base: &'a BertModel,
}

/// A head over the encoder's last hidden state.
pub trait EncoderHead: Debug + Send + Sync + Sized {
    /// Loads the head.
    fn load(source: &HeadSource<'_, '_>) -> Result<Self>;

    /// The head's output for `hidden` `[batch, seq, hidden]`.
    fn forward(&self, hidden: &Tensor) -> Result<ModelOutput>;
}

/// An encoder base model (BERT, RoBERTa, XLM-RoBERTa or DistilBERT) with a task head.
#[derive(Debug)]
pub struct EncoderForTask<H> {
    base: BertModel,
    head: H,
}

impl<H: EncoderHead> EncoderForTask<H> {
    /// Loads the base model of `flavour` (no pooler) and the head.
    pub fn load(root: &Weights<'_>, config: &ModelConfig, flavour: Flavour) -> Result<Self> {
        let encoder = flavour.encoder_config(config)?;
        let base = BertModel::load_with(root, config, &encoder, flavour, Pooling::None)?;
        let head = H::load(&HeadSource {
            root,
            config,
            encoder: &encoder,
            flavour,
            base: &base,
        })?;
        Ok(EncoderForTask { base, head })
    }
}

impl<H: EncoderHead> TaskModel for EncoderForTask<H> {
    fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        token_type_ids: Option<&Tensor>,
    ) -> Result<ModelOutput> {
        let (hidden, _) = self
            .base
            .forward(input_ids, attention_mask, token_type_ids)?;
        self.head.forward(&hidden)
    }
}

/// The masked-LM head: dense, activation, layer norm, then the decoder (tied to the word
/// embeddings unless `tie_word_embeddings` is false) plus a bias. BERT's
/// `cls.predictions.{transform.dense, transform.LayerNorm, decoder}`, RoBERTa's
/// `lm_head.{dense, layer_norm, decoder}` (always the erf GELU), DistilBERT's
/// `vocab_transform`, `vocab_layer_norm`, `vocab_projector`.
#[derive(Debug)]
pub struct MaskedLmHead {
    dense: Linear,
    activation: Activation,
    layer_norm: Norm,
    decoder: Linear,
}

impl EncoderHead for MaskedLmHead {
    fn load(source: &HeadSource<'_, '_>) -> Result<Self> {
        let (root, config, encoder) = (source.root, source.config, source.encoder);
        let (flavour, base) = (source.flavour, source.base);
        let (hidden, vocab) = (encoder.hidden_size, encoder.vocab_size);
        let (weights, dense, norm, decoder, activation) = match flavour.family {
            Family::Bert => (
                root.pp("cls.predictions"),
                "transform.dense",
                "transform.LayerNorm",
                "decoder",
                encoder.activation(config)?,
            ),
            // Transformers calls `gelu` directly, whatever `hidden_act` says.
            Family::Roberta => (
                root.pp("lm_head"),
                "dense",
                "layer_norm",
                "decoder",
                Activation::GeluErf,
            ),
            Family::DistilBert => (
                root.clone(),
                "vocab_transform",
                "vocab_layer_norm",
                "vocab_projector",
                encoder.activation(config)?,
            ),
        };
        // BERT's and RoBERTa's head bias is tied to `decoder.bias`; either may be saved.
        let bias_names = match flavour.family {
            Family::DistilBert => vec![format!("{decoder}.bias")],
            Family::Bert | Family::Roberta => vec!["bias".to_string(), format!("{decoder}.bias")],
        };
        let bias_names: Vec<&str> = bias_names.iter().map(String::as_str).collect();
        let bias = weights.get_any(&[vocab], &bias_names)?;
        let decoder_weight = if config.tie_word_embeddings {
            base.word_embeddings().clone()
        } else {
            weights.get(&[vocab, hidden], &format!("{decoder}.weight"))?
        };
        Ok(MaskedLmHead {
            dense: Linear::load(&weights.pp(dense), hidden, hidden)?,
            activation,
            layer_norm: Norm::load_layer_norm(&weights.pp(norm), hidden, encoder.layer_norm_eps)?,
            decoder: Linear::from_tensors(decoder_weight, Some(bias))?,
        })
    }

    fn forward(&self, hidden: &Tensor) -> Result<ModelOutput> {
        let transformed = self
            .layer_norm
            .forward(&self.activation.forward(&self.dense.forward(hidden)?)?)?;
        Ok(ModelOutput::MaskedLm {
            logits: self.decoder.forward(&transformed)?,
        })
    }
}

/// Sequence classification over the first token: `out(activation(dense(hidden[:, 0])))`,
/// logits `[batch, num_labels]`. BERT: the base model's pooler (`bert.pooler.dense`, tanh)
/// and `classifier`; RoBERTa: `classifier.dense`, tanh, `classifier.out_proj`; DistilBERT:
/// `pre_classifier`, ReLU, `classifier`.
#[derive(Debug)]
pub struct SequenceClassificationHead {
    dense: Linear,
    activation: Activation,
    out: Linear,
}

impl EncoderHead for SequenceClassificationHead {
    fn load(source: &HeadSource<'_, '_>) -> Result<Self> {
        let (root, config, encoder) = (source.root, source.config, source.encoder);
        let flavour = source.flavour;
        let (dense, activation, out) = match flavour.family {
            Family::Bert => (
                base_weights(root, flavour.prefix()).pp("pooler.dense"),
                Activation::Tanh,
                root.pp("classifier"),
            ),
            Family::Roberta => (
                root.pp("classifier.dense"),
                Activation::Tanh,
                root.pp("classifier.out_proj"),
            ),
            Family::DistilBert => (
                root.pp("pre_classifier"),
                Activation::Relu,
                root.pp("classifier"),
            ),
        };
        let hidden = encoder.hidden_size;
        Ok(SequenceClassificationHead {
            dense: Linear::load(&dense, hidden, hidden)?,
            activation,
            out: Linear::load(&out, hidden, config.num_labels)?,
        })
    }

    fn forward(&self, hidden: &Tensor) -> Result<ModelOutput> {
        let first = hidden.narrow(1, 0, 1)?.squeeze(1)?;
        let pooled = self.activation.forward(&self.dense.forward(&first)?)?;
        Ok(ModelOutput::SequenceClassification {
            logits: self.out.forward(&pooled)?,
        })
    }
}

/// `classifier`: one linear layer over every position → `[batch, seq, num_labels]`.
#[derive(Debug)]
pub struct TokenClassificationHead {
    classifier: Linear,
}

impl EncoderHead for TokenClassificationHead {
    fn load(source: &HeadSource<'_, '_>) -> Result<Self> {
        Ok(TokenClassificationHead {
            classifier: Linear::load(
                &source.root.pp("classifier"),
                source.encoder.hidden_size,
                source.config.num_labels,
            )?,
        })
    }

    fn forward(&self, hidden: &Tensor) -> Result<ModelOutput> {
        Ok(ModelOutput::TokenClassification {
            logits: self.classifier.forward(hidden)?,
        })
    }
}

/// `qa_outputs`: a linear layer to two values per position, split into start and end logits
/// `[batch, seq]` (`logits.split(1, dim=-1)` in Transformers).
#[derive(Debug)]
pub struct QuestionAnsweringHead {
    qa_outputs: Linear,
}

impl EncoderHead for QuestionAnsweringHead {
    /// The config must have two labels (start, end), as Transformers' QA models assume.
    fn load(source: &HeadSource<'_, '_>) -> Result<Self> {
        let config = source.config;
        if config.num_labels != 2 {
            return Err(config.invalid_field(
                "num_labels",
                &format!(
                    "a question-answering head has 2 outputs (start, end), not {}",
                    config.num_labels
                ),
            ));
        }
        Ok(QuestionAnsweringHead {
            qa_outputs: Linear::load(&source.root.pp("qa_outputs"), source.encoder.hidden_size, 2)?,
        })
    }

    fn forward(&self, hidden: &Tensor) -> Result<ModelOutput> {
        let logits = self.qa_outputs.forward(hidden)?;
        let start = logits.narrow(D::Minus1, 0, 1)?.squeeze(D::Minus1)?;
        let end = logits.narrow(D::Minus1, 1, 1)?.squeeze(D::Minus1)?;
        Ok(ModelOutput::QuestionAnswering {
            start_logits: start.contiguous()?,
            end_logits: end.contiguous()?,
        })
    }
}
