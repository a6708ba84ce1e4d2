//! DistilBERT (Sanh et al., 2019, "DistilBERT, a distilled version of BERT: smaller, faster,
//! cheaper and lighter"), with its task heads.
//!
//! Follows Transformers' `models/distilbert/modeling_distilbert.py`: `Embeddings` (word +
//! position, no token types), `MultiHeadSelfAttention` (`q_lin`, `k_lin`, `v_lin`, `out_lin`),
//! `FFN` (`lin1`, `lin2`), `TransformerBlock` (`sa_layer_norm`, `output_layer_norm`),
//! `Transformer`, `DistilBertModel`, then the heads. Every layer norm uses eps 1e-12, fixed in
//! the Transformers code rather than read from the config.

use candle_core::{Device, Tensor};
use serde::Deserialize;

use crate::config::{ModelConfig, defaults};
use crate::error::Result;
use crate::heads::{QuestionAnsweringHead, TokenClassificationHead};
use crate::layers::{
    Activation, ActivationForward, Embedding, Inputs, LayerNorm, Linear, attention, attention_bias,
    split_heads,
};
use crate::output::{ModelOutput, TaskModel};
use crate::weights::Weights;

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
        for (field, value) in [
            ("vocab_size", distil.vocab_size),
            ("dim", distil.dim),
            ("n_heads", distil.n_heads),
            ("hidden_dim", distil.hidden_dim),
            ("max_position_embeddings", distil.max_position_embeddings),
        ] {
            if value == 0 {
                return Err(config.invalid_field(field, "must be positive"));
            }
        }
        if !distil.dim.is_multiple_of(distil.n_heads) {
            return Err(config.invalid_field(
                "n_heads",
                &format!(
                    "dim {} is not a multiple of {} heads",
                    distil.dim, distil.n_heads
                ),
            ));
        }
        distil.activation(config)?;
        Ok(distil)
    }

    fn activation(&self, config: &ModelConfig) -> Result<Activation> {
        Activation::from_name(&self.activation).ok_or_else(|| {
            config.invalid_field(
                "activation",
                &format!(
                    "`{}` is not one of {}",
                    self.activation,
                    Activation::NAMES.join(", ")
                ),
            )
        })
    }
}

/// `create_sinusoidal_embeddings`: `sin` on even columns, `cos` on odd ones, of
/// `pos / 10000^(2·(j/2)/dim)`.
fn sinusoidal_table(positions: usize, dim: usize, device: &Device) -> Result<Tensor> {
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

/// `Embeddings`: word + position embeddings, then layer norm.
#[derive(Debug)]
struct Embeddings {
    word_embeddings: Embedding,
    position_embeddings: Embedding,
    layer_norm: LayerNorm,
}

impl Embeddings {
    fn load(weights: &Weights<'_>, config: &DistilBertConfig) -> Result<Self> {
        let positions = weights.pp("position_embeddings");
        let position_embeddings = if config.sinusoidal_pos_embds && !positions.contains("weight") {
            Embedding::from_table(sinusoidal_table(
                config.max_position_embeddings,
                config.dim,
                weights.device(),
            )?)?
        } else {
            Embedding::load(&positions, config.max_position_embeddings, config.dim)?
        };
        Ok(Embeddings {
            word_embeddings: Embedding::load(
                &weights.pp("word_embeddings"),
                config.vocab_size,
                config.dim,
            )?,
            position_embeddings,
            layer_norm: LayerNorm::load(&weights.pp("LayerNorm"), config.dim, LAYER_NORM_EPS)?,
        })
    }

    fn forward(&self, inputs: &Inputs) -> Result<Tensor> {
        let (batch, seq) = inputs.ids.dims2()?;
        let words = self.word_embeddings.forward(&inputs.ids)?;
        let position_ids = Tensor::arange(0u32, seq as u32, inputs.ids.device())?
            .unsqueeze(0)?
            .broadcast_as((batch, seq))?
            .contiguous()?;
        let positions = self.position_embeddings.forward(&position_ids)?;
        self.layer_norm.forward(&(words + positions)?)
    }
}

/// `MultiHeadSelfAttention`.
#[derive(Debug)]
struct MultiHeadSelfAttention {
    q_lin: Linear,
    k_lin: Linear,
    v_lin: Linear,
    out_lin: Linear,
    n_heads: usize,
}

impl MultiHeadSelfAttention {
    fn load(weights: &Weights<'_>, config: &DistilBertConfig) -> Result<Self> {
        let dim = config.dim;
        Ok(MultiHeadSelfAttention {
            q_lin: Linear::load(&weights.pp("q_lin"), dim, dim)?,
            k_lin: Linear::load(&weights.pp("k_lin"), dim, dim)?,
            v_lin: Linear::load(&weights.pp("v_lin"), dim, dim)?,
            out_lin: Linear::load(&weights.pp("out_lin"), dim, dim)?,
            n_heads: config.n_heads,
        })
    }

    fn forward(&self, hidden: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        let q = split_heads(&self.q_lin.forward(hidden)?, self.n_heads)?;
        let k = split_heads(&self.k_lin.forward(hidden)?, self.n_heads)?;
        let v = split_heads(&self.v_lin.forward(hidden)?, self.n_heads)?;
        self.out_lin.forward(&attention(&q, &k, &v, bias)?)
    }
}

/// `FFN`: `lin2(activation(lin1(x)))`.
#[derive(Debug)]
struct Ffn {
    lin1: Linear,
    lin2: Linear,
    activation: Activation,
}

impl Ffn {
    fn load(
        weights: &Weights<'_>,
        config: &DistilBertConfig,
        activation: Activation,
    ) -> Result<Self> {
        Ok(Ffn {
            lin1: Linear::load(&weights.pp("lin1"), config.dim, config.hidden_dim)?,
            lin2: Linear::load(&weights.pp("lin2"), config.hidden_dim, config.dim)?,
            activation,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.lin2
            .forward(&self.activation.forward(&self.lin1.forward(x)?)?)
    }
}

/// `TransformerBlock`: attention + residual + `sa_layer_norm`, FFN + residual +
/// `output_layer_norm`.
#[derive(Debug)]
struct TransformerBlock {
    attention: MultiHeadSelfAttention,
    sa_layer_norm: LayerNorm,
    ffn: Ffn,
    output_layer_norm: LayerNorm,
}

impl TransformerBlock {
    fn load(
        weights: &Weights<'_>,
        config: &DistilBertConfig,
        activation: Activation,
    ) -> Result<Self> {
        Ok(TransformerBlock {
            attention: MultiHeadSelfAttention::load(&weights.pp("attention"), config)?,
            sa_layer_norm: LayerNorm::load(
                &weights.pp("sa_layer_norm"),
                config.dim,
                LAYER_NORM_EPS,
            )?,
            ffn: Ffn::load(&weights.pp("ffn"), config, activation)?,
            output_layer_norm: LayerNorm::load(
                &weights.pp("output_layer_norm"),
                config.dim,
                LAYER_NORM_EPS,
            )?,
        })
    }

    fn forward(&self, hidden: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        let attended = self
            .sa_layer_norm
            .forward(&(self.attention.forward(hidden, bias)? + hidden)?)?;
        self.output_layer_norm
            .forward(&(self.ffn.forward(&attended)? + &attended)?)
    }
}

/// `DistilBertModel`: embeddings and the `transformer.layer.*` stack. Outputs the last hidden
/// state `[batch, seq, dim]` (no pooler).
#[derive(Debug)]
pub struct DistilBertModel {
    embeddings: Embeddings,
    layers: Vec<TransformerBlock>,
    vocab_size: usize,
    max_len: usize,
}

impl DistilBertModel {
    /// Loads the base model from `distilbert.*` or from the checkpoint root.
    pub fn load(root: &Weights<'_>, config: &ModelConfig) -> Result<Self> {
        let distil = DistilBertConfig::from_model_config(config)?;
        DistilBertModel::load_with(root, config, &distil)
    }

    fn load_with(
        root: &Weights<'_>,
        config: &ModelConfig,
        distil: &DistilBertConfig,
    ) -> Result<Self> {
        let activation = distil.activation(config)?;
        let weights = crate::bert::base_weights(root, "distilbert");
        let layers = (0..distil.n_layers)
            .map(|index| {
                TransformerBlock::load(
                    &weights.pp(&format!("transformer.layer.{index}")),
                    distil,
                    activation,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(DistilBertModel {
            embeddings: Embeddings::load(&weights.pp("embeddings"), distil)?,
            layers,
            vocab_size: distil.vocab_size,
            max_len: distil.max_position_embeddings,
        })
    }

    /// The word embedding table (the tied `vocab_projector` reuses it).
    fn word_embeddings(&self) -> &Tensor {
        self.embeddings.word_embeddings.table()
    }

    /// Runs the model: the last hidden state. DistilBERT has no token types; `token_type_ids`
    /// are checked for shape like every input, and must be all zero.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        token_type_ids: Option<&Tensor>,
    ) -> Result<Tensor> {
        let inputs = Inputs::check(
            input_ids,
            attention_mask,
            token_type_ids,
            self.vocab_size,
            self.max_len,
            1,
        )?;
        let mut hidden = self.embeddings.forward(&inputs)?;
        let bias = inputs.mask.as_ref().map(attention_bias).transpose()?;
        for layer in &self.layers {
            hidden = layer.forward(&hidden, bias.as_ref())?;
        }
        Ok(hidden)
    }
}

impl TaskModel for DistilBertModel {
    fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        token_type_ids: Option<&Tensor>,
    ) -> Result<ModelOutput> {
        Ok(ModelOutput::BaseModel {
            last_hidden_state: DistilBertModel::forward(
                self,
                input_ids,
                attention_mask,
                token_type_ids,
            )?,
            pooler_output: None,
        })
    }
}

/// `DistilBertForMaskedLM`: `vocab_transform`, activation, `vocab_layer_norm`,
/// `vocab_projector` (tied to the word embeddings), logits `[batch, seq, vocab]`.
#[derive(Debug)]
pub struct DistilBertForMaskedLM {
    distilbert: DistilBertModel,
    vocab_transform: Linear,
    activation: Activation,
    vocab_layer_norm: LayerNorm,
    vocab_projector: Linear,
}

impl DistilBertForMaskedLM {
    /// Loads `distilbert.*` and the `vocab_*` head.
    pub fn load(root: &Weights<'_>, config: &ModelConfig) -> Result<Self> {
        let distil = DistilBertConfig::from_model_config(config)?;
        let distilbert = DistilBertModel::load_with(root, config, &distil)?;
        let projector = root.pp("vocab_projector");
        let projector_weight = if config.tie_word_embeddings {
            distilbert.word_embeddings().clone()
        } else {
            projector.get(&[distil.vocab_size, distil.dim], "weight")?
        };
        let projector_bias = projector.get(&[distil.vocab_size], "bias")?;
        Ok(DistilBertForMaskedLM {
            vocab_transform: Linear::load(&root.pp("vocab_transform"), distil.dim, distil.dim)?,
            activation: distil.activation(config)?,
            vocab_layer_norm: LayerNorm::load(
                &root.pp("vocab_layer_norm"),
                distil.dim,
                LAYER_NORM_EPS,
            )?,
            vocab_projector: Linear::from_tensors(projector_weight, Some(projector_bias))?,
            distilbert,
        })
    }
}

impl TaskModel for DistilBertForMaskedLM {
    fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        token_type_ids: Option<&Tensor>,
    ) -> Result<ModelOutput> {
        let hidden = self
            .distilbert
            .forward(input_ids, attention_mask, token_type_ids)?;
        let x = self
            .activation
            .forward(&self.vocab_transform.forward(&hidden)?)?;
        let x = self.vocab_layer_norm.forward(&x)?;
        Ok(ModelOutput::MaskedLm {
            logits: self.vocab_projector.forward(&x)?,
        })
    }
}

/// `DistilBertForSequenceClassification`: `classifier(relu(pre_classifier(hidden[:, 0])))`,
/// logits `[batch, num_labels]`.
#[derive(Debug)]
pub struct DistilBertForSequenceClassification {
    distilbert: DistilBertModel,
    pre_classifier: Linear,
    classifier: Linear,
}

impl DistilBertForSequenceClassification {
    /// Loads `distilbert.*`, `pre_classifier` and `classifier`.
    pub fn load(root: &Weights<'_>, config: &ModelConfig) -> Result<Self> {
        let distil = DistilBertConfig::from_model_config(config)?;
        Ok(DistilBertForSequenceClassification {
            distilbert: DistilBertModel::load_with(root, config, &distil)?,
            pre_classifier: Linear::load(&root.pp("pre_classifier"), distil.dim, distil.dim)?,
            classifier: Linear::load(&root.pp("classifier"), distil.dim, config.num_labels)?,
        })
    }
}

impl TaskModel for DistilBertForSequenceClassification {
    fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        token_type_ids: Option<&Tensor>,
    ) -> Result<ModelOutput> {
        let hidden = self
            .distilbert
            .forward(input_ids, attention_mask, token_type_ids)?;
        let first = hidden.narrow(1, 0, 1)?.squeeze(1)?;
        let pooled = self.pre_classifier.forward(&first)?.relu()?;
        Ok(ModelOutput::SequenceClassification {
            logits: self.classifier.forward(&pooled)?,
        })
    }
}

/// `DistilBertForTokenClassification`: `classifier` over every position.
#[derive(Debug)]
pub struct DistilBertForTokenClassification {
    distilbert: DistilBertModel,
    head: TokenClassificationHead,
}

impl DistilBertForTokenClassification {
    /// Loads `distilbert.*` and `classifier`.
    pub fn load(root: &Weights<'_>, config: &ModelConfig) -> Result<Self> {
        let distil = DistilBertConfig::from_model_config(config)?;
        Ok(DistilBertForTokenClassification {
            distilbert: DistilBertModel::load_with(root, config, &distil)?,
            head: TokenClassificationHead::load(root, distil.dim, config.num_labels)?,
        })
    }
}

impl TaskModel for DistilBertForTokenClassification {
    fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        token_type_ids: Option<&Tensor>,
    ) -> Result<ModelOutput> {
        let hidden = self
            .distilbert
            .forward(input_ids, attention_mask, token_type_ids)?;
        Ok(ModelOutput::TokenClassification {
            logits: self.head.forward(&hidden)?,
        })
    }
}

/// `DistilBertForQuestionAnswering`: `qa_outputs` split into start and end logits.
#[derive(Debug)]
pub struct DistilBertForQuestionAnswering {
    distilbert: DistilBertModel,
    head: QuestionAnsweringHead,
}

impl DistilBertForQuestionAnswering {
    /// Loads `distilbert.*` and `qa_outputs`.
    pub fn load(root: &Weights<'_>, config: &ModelConfig) -> Result<Self> {
        let distil = DistilBertConfig::from_model_config(config)?;
        Ok(DistilBertForQuestionAnswering {
            distilbert: DistilBertModel::load_with(root, config, &distil)?,
            head: QuestionAnsweringHead::load(root, distil.dim, config)?,
        })
    }
}

impl TaskModel for DistilBertForQuestionAnswering {
    fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        token_type_ids: Option<&Tensor>,
    ) -> Result<ModelOutput> {
        let hidden = self
            .distilbert
            .forward(input_ids, attention_mask, token_type_ids)?;
        let (start_logits, end_logits) = self.head.forward(&hidden)?;
        Ok(ModelOutput::QuestionAnswering {
            start_logits,
            end_logits,
        })
    }
}

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
