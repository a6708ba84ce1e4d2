//! DistilBERT (Sanh et al., 2019, "DistilBERT, a distilled version of BERT: smaller, faster,
//! cheaper and lighter"), with its task heads.
//!
//! Follows Transformers' `models/distilbert/modeling_distilbert.py`. A DistilBERT layer is a
//! BERT layer under other names: `Embeddings` (word + position, no token types),
//! `MultiHeadSelfAttention` (`q_lin`, `k_lin`, `v_lin`, `out_lin`), `FFN` (`lin1`, `lin2`),
//! `TransformerBlock` (`sa_layer_norm`, `output_layer_norm`), so it runs on the shared encoder
//! ([`crate::encoder`], [`BertModel`] with DistilBERT's [`Flavour`]) and the generic heads.
//! Every layer norm uses eps 1e-12, fixed in the Transformers code rather than read from the
//! config.

use candle_core::{Device, Tensor};
use serde::Deserialize;

use crate::bert::{
    BertConfig, BertModel, Family, Flavour, PositionIds, check_encoder_sizes, parse_activation,
};
use crate::config::{ModelConfig, defaults};
use crate::error::Result;
use crate::heads::{
    EncoderForTask, MaskedLmHead, QuestionAnsweringHead, SequenceClassificationHead,
    TokenClassificationHead,
};
use crate::layers::Activation;

/// DistilBERT's layer norm epsilon (hard-coded in Transformers).
const LAYER_NORM_EPS: f64 = 1e-12;

/// `DistilBertConfig`: the `config.json` fields of DistilBERT, with Transformers' defaults.
#[derive(Debug, Clone, Deserialize)]
pub struct DistilBertConfig {
    /// Number of token ids.
    pub vocab_size: usize,
    /// Width of every hidden state (`hidden_size`).
    pub dim: usize,
    /// Number of layers (`num_hidden_layers`).
    pub n_layers: usize,
    /// Attention heads per layer (`num_attention_heads`).
    pub n_heads: usize,
    /// Width of the feed-forward layer.
    pub hidden_dim: usize,
    /// Activation of the feed-forward layer and the MLM transform.
    #[serde(default = "defaults::hidden_act")]
    pub activation: String,
    /// Number of positions.
    #[serde(default = "defaults::max_position_embeddings")]
    pub max_position_embeddings: usize,
    /// Fixed sinusoidal position embeddings instead of learned ones (the table is still saved
    /// in checkpoints; it is computed here only when absent).
    #[serde(default)]
    pub sinusoidal_pos_embds: bool,
    /// Dropout (unused at inference).
    #[serde(default = "defaults::dropout")]
    pub dropout: f64,
    /// Attention dropout (unused at inference).
    #[serde(default = "defaults::dropout")]
    pub attention_dropout: f64,
}

/// The fields [`DistilBertConfig`] requires.
const REQUIRED_FIELDS: &[&str] = &["vocab_size", "dim", "n_layers", "n_heads", "hidden_dim"];

impl DistilBertConfig {
    /// Reads and checks the DistilBERT fields of `config`.
    pub fn from_model_config(config: &ModelConfig) -> Result<DistilBertConfig> {
        let distil: DistilBertConfig = config.architecture_config(REQUIRED_FIELDS)?;
        check_encoder_sizes(
            config,
            &[
                ("vocab_size", distil.vocab_size),
                ("hidden_dim", distil.hidden_dim),
                ("max_position_embeddings", distil.max_position_embeddings),
            ],
            ("dim", distil.dim),
            ("n_heads", distil.n_heads),
        )?;
        distil.activation(config)?;
        Ok(distil)
    }

    /// The same model as the shared encoder's config: `dim` is `hidden_size`, `n_layers`
    /// `num_hidden_layers`, `hidden_dim` `intermediate_size`, one (all-zero) token type, and
    /// every layer norm's epsilon DistilBERT's fixed 1e-12.
    pub fn to_bert(&self) -> BertConfig {
        BertConfig {
            vocab_size: self.vocab_size,
            hidden_size: self.dim,
            num_hidden_layers: self.n_layers,
            num_attention_heads: self.n_heads,
            intermediate_size: self.hidden_dim,
            hidden_act: self.activation.clone(),
            hidden_dropout_prob: self.dropout,
            attention_probs_dropout_prob: self.attention_dropout,
            max_position_embeddings: self.max_position_embeddings,
            type_vocab_size: 1,
            layer_norm_eps: LAYER_NORM_EPS,
            position_embedding_type: None,
            classifier_dropout: None,
            is_decoder: false,
            add_cross_attention: false,
        }
    }

    fn activation(&self, config: &ModelConfig) -> Result<Activation> {
        parse_activation(config, "activation", &self.activation)
    }
}

/// `create_sinusoidal_embeddings`: `sin` on even columns, `cos` on odd ones, of
/// `pos / 10000^(2·(j/2)/dim)`.
pub(crate) fn sinusoidal_table(positions: usize, dim: usize, device: &Device) -> Result<Tensor> {
    let mut table = Vec::with_capacity(positions * dim);
    for pos in 0..positions {
        for j in 0..dim {
            let angle = pos as f64 / 10000f64.powf((2 * (j / 2)) as f64 / dim as f64);
            let value = if j % 2 == 0 { angle.sin() } else { angle.cos() };
            table.push(value as f32);
        }
    }
    Ok(Tensor::from_vec(table, (positions, dim), device)?)
}

/// DistilBERT's flavour of the shared encoder: absolute positions (sinusoidal when the config
/// says so and the checkpoint has no table), no token types.
pub fn flavour(config: &ModelConfig) -> Result<Flavour> {
    let distil = DistilBertConfig::from_model_config(config)?;
    Ok(Flavour {
        family: Family::DistilBert,
        positions: PositionIds::Absolute,
        sinusoidal_positions: distil.sinusoidal_pos_embds,
    })
}

/// `DistilBertModel`: the shared encoder base model (no pooler) with DistilBERT's names.
pub type DistilBertModel = BertModel;

/// `DistilBertForMaskedLM`: `vocab_transform`, activation, `vocab_layer_norm`,
/// `vocab_projector` (tied to the word embeddings).
pub type DistilBertForMaskedLM = EncoderForTask<MaskedLmHead>;

/// `DistilBertForSequenceClassification`: `classifier(relu(pre_classifier(hidden[:, 0])))`.
pub type DistilBertForSequenceClassification = EncoderForTask<SequenceClassificationHead>;

/// `DistilBertForTokenClassification`: `classifier` over every position.
pub type DistilBertForTokenClassification = EncoderForTask<TokenClassificationHead>;

/// `DistilBertForQuestionAnswering`: `qa_outputs` split into start and end logits.
pub type DistilBertForQuestionAnswering = EncoderForTask<QuestionAnsweringHead>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sinusoidal_table_starts_with_sin_cos_of_zero() -> Result<()> {
        let table = sinusoidal_table(3, 4, &Device::Cpu)?.to_vec2::<f32>()?;
        assert_eq!(table.first(), Some(&vec![0.0, 1.0, 0.0, 1.0]));
        let row1 = table.get(1).cloned().unwrap_or_default();
        assert!((row1.first().copied().unwrap_or(0.0) - 1f32.sin()).abs() < 1e-6);
        assert!((row1.get(1).copied().unwrap_or(0.0) - 1f32.cos()).abs() < 1e-6);
        Ok(())
    }
}
