//! RoBERTa (Liu et al., 2019, "RoBERTa: A Robustly Optimized BERT Pretraining Approach") and
//! XLM-RoBERTa (Conneau et al., 2019, "Unsupervised Cross-lingual Representation Learning at
//! Scale"), with their task heads.
//!
//! Follows Transformers' `models/roberta/modeling_roberta.py`. The encoder is BERT's (see
//! [`crate::bert`]): RoBERTa differs only in its position ids, which count non-padding tokens
//! from `padding_idx + 1` and give padding tokens `padding_idx`
//! (`create_position_ids_from_input_ids`), in its masked-LM head (`lm_head`: dense, erf GELU,
//! layer norm, decoder), and in its sequence classification head (dense + tanh + `out_proj` over
//! `<s>`, no pooler). XLM-RoBERTa is the same code with another config.

use candle_core::Tensor;

use crate::bert::{
    BertConfig, BertForQuestionAnswering, BertForTokenClassification, BertModel, Flavour, Pooling,
    PositionIds,
};
use crate::config::ModelConfig;
use crate::error::Result;
use crate::layers::{Activation, ActivationForward, LayerNorm, Linear};
use crate::output::{ModelOutput, TaskModel, TokenSequence};
use crate::weights::Weights;

/// `RobertaConfig` is `BertConfig` with `pad_token_id` 1 by default.
pub type RobertaConfig = BertConfig;

/// Transformers' default `pad_token_id` for RoBERTa and XLM-RoBERTa.
const DEFAULT_PAD_TOKEN_ID: i64 = 1;

/// The RoBERTa flavour of the BERT encoder for this config.
fn flavour(config: &ModelConfig) -> Result<Flavour> {
    let pad = config.pad_token_id.unwrap_or(DEFAULT_PAD_TOKEN_ID);
    let padding_idx = u32::try_from(pad).map_err(|_| {
        config.invalid_field(
            "pad_token_id",
            &format!("{pad} cannot be RoBERTa's padding index"),
        )
    })?;
    Ok(Flavour {
        prefix: "roberta",
        positions: PositionIds::AfterPadding { padding_idx },
    })
}

/// `RobertaModel`: the BERT encoder with RoBERTa positions (and a pooler when saved).
#[derive(Debug)]
pub struct RobertaModel {
    roberta: BertModel,
}

impl RobertaModel {
    /// Loads the base model from `roberta.*` or from the checkpoint root.
    pub fn load(root: &Weights<'_>, config: &ModelConfig) -> Result<Self> {
        let roberta_config = RobertaConfig::from_model_config(config)?;
        Ok(RobertaModel {
            roberta: BertModel::load_with(
                root,
                config,
                &roberta_config,
                flavour(config)?,
                Pooling::IfPresent,
            )?,
        })
    }
}

impl TaskModel for RobertaModel {
    fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        token_type_ids: Option<&Tensor>,
    ) -> Result<ModelOutput> {
        TaskModel::forward(&self.roberta, input_ids, attention_mask, token_type_ids)
    }

    fn token_states(&self, sequences: &[TokenSequence<'_>]) -> Option<Result<Vec<Vec<f32>>>> {
        Some(self.roberta.token_states(sequences))
    }
}

/// `RobertaLMHead`: dense, erf GELU, layer norm, decoder (tied to the word embeddings) + bias.
#[derive(Debug)]
struct RobertaLmHead {
    dense: Linear,
    layer_norm: LayerNorm,
    decoder: Linear,
}

impl RobertaLmHead {
    fn load(
        weights: &Weights<'_>,
        config: &ModelConfig,
        roberta: &RobertaConfig,
        word_embeddings: &Tensor,
    ) -> Result<Self> {
        let hidden = roberta.hidden_size;
        let bias = weights.get_any(&[roberta.vocab_size], &["bias", "decoder.bias"])?;
        let decoder_weight = if config.tie_word_embeddings {
            word_embeddings.clone()
        } else {
            weights.get(&[roberta.vocab_size, hidden], "decoder.weight")?
        };
        Ok(RobertaLmHead {
            dense: Linear::load(&weights.pp("dense"), hidden, hidden)?,
            layer_norm: LayerNorm::load(&weights.pp("layer_norm"), hidden, roberta.layer_norm_eps)?,
            decoder: Linear::from_tensors(decoder_weight, Some(bias))?,
        })
    }

    fn forward(&self, features: &Tensor) -> Result<Tensor> {
        // Always the erf GELU, whatever `hidden_act` says (Transformers calls `gelu` directly).
        let x = Activation::GeluErf.forward(&self.dense.forward(features)?)?;
        self.decoder.forward(&self.layer_norm.forward(&x)?)
    }
}

/// `RobertaForMaskedLM`: vocabulary logits `[batch, seq, vocab]`.
#[derive(Debug)]
pub struct RobertaForMaskedLM {
    roberta: BertModel,
    lm_head: RobertaLmHead,
}

impl RobertaForMaskedLM {
    /// Loads `roberta.*` and `lm_head.*`.
    pub fn load(root: &Weights<'_>, config: &ModelConfig) -> Result<Self> {
        let roberta_config = RobertaConfig::from_model_config(config)?;
        let roberta = BertModel::load_with(
            root,
            config,
            &roberta_config,
            flavour(config)?,
            Pooling::None,
        )?;
        let lm_head = RobertaLmHead::load(
            &root.pp("lm_head"),
            config,
            &roberta_config,
            roberta.word_embeddings(),
        )?;
        Ok(RobertaForMaskedLM { roberta, lm_head })
    }
}

impl TaskModel for RobertaForMaskedLM {
    fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        token_type_ids: Option<&Tensor>,
    ) -> Result<ModelOutput> {
        let (hidden, _) = self
            .roberta
            .forward(input_ids, attention_mask, token_type_ids)?;
        Ok(ModelOutput::MaskedLm {
            logits: self.lm_head.forward(&hidden)?,
        })
    }
}

/// `RobertaClassificationHead`: `out_proj(tanh(dense(hidden[:, 0])))` over the `<s>` token.
#[derive(Debug)]
struct RobertaClassificationHead {
    dense: Linear,
    out_proj: Linear,
}

impl RobertaClassificationHead {
    fn load(weights: &Weights<'_>, hidden: usize, num_labels: usize) -> Result<Self> {
        Ok(RobertaClassificationHead {
            dense: Linear::load(&weights.pp("dense"), hidden, hidden)?,
            out_proj: Linear::load(&weights.pp("out_proj"), hidden, num_labels)?,
        })
    }

    fn forward(&self, features: &Tensor) -> Result<Tensor> {
        let first = features.narrow(1, 0, 1)?.squeeze(1)?;
        let x = self.dense.forward(&first)?.tanh()?;
        self.out_proj.forward(&x)
    }
}

/// `RobertaForSequenceClassification`: logits `[batch, num_labels]` (no pooler).
#[derive(Debug)]
pub struct RobertaForSequenceClassification {
    roberta: BertModel,
    classifier: RobertaClassificationHead,
}

impl RobertaForSequenceClassification {
    /// Loads `roberta.*` and `classifier.{dense,out_proj}`.
    pub fn load(root: &Weights<'_>, config: &ModelConfig) -> Result<Self> {
        let roberta_config = RobertaConfig::from_model_config(config)?;
        let roberta = BertModel::load_with(
            root,
            config,
            &roberta_config,
            flavour(config)?,
            Pooling::None,
        )?;
        let classifier = RobertaClassificationHead::load(
            &root.pp("classifier"),
            roberta_config.hidden_size,
            config.num_labels,
        )?;
        Ok(RobertaForSequenceClassification {
            roberta,
            classifier,
        })
    }
}

impl TaskModel for RobertaForSequenceClassification {
    fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        token_type_ids: Option<&Tensor>,
    ) -> Result<ModelOutput> {
        let (hidden, _) = self
            .roberta
            .forward(input_ids, attention_mask, token_type_ids)?;
        Ok(ModelOutput::SequenceClassification {
            logits: self.classifier.forward(&hidden)?,
        })
    }
}

/// `RobertaForTokenClassification`: BERT's head over the RoBERTa encoder.
pub type RobertaForTokenClassification = BertForTokenClassification;

/// Loads a [`RobertaForTokenClassification`] (`roberta.*`, `classifier`).
pub fn load_token_classification(
    root: &Weights<'_>,
    config: &ModelConfig,
) -> Result<RobertaForTokenClassification> {
    BertForTokenClassification::load_with(root, config, flavour(config)?)
}

/// `RobertaForQuestionAnswering`: BERT's head over the RoBERTa encoder.
pub type RobertaForQuestionAnswering = BertForQuestionAnswering;

/// Loads a [`RobertaForQuestionAnswering`] (`roberta.*`, `qa_outputs`).
pub fn load_question_answering(
    root: &Weights<'_>,
    config: &ModelConfig,
) -> Result<RobertaForQuestionAnswering> {
    BertForQuestionAnswering::load_with(root, config, flavour(config)?)
}
