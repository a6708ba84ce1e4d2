//! JinaBert v2: BERT with ALiBi in place of position embeddings and a GLU feed-forward block
//! (Günther et al., 2023, "Jina Embeddings 2: 8192-Token General-Purpose Text Embeddings for
//! Long Documents"; ALiBi: Press et al., 2021, "Train Short, Test Long"). The architecture of
//! jinaai/jina-embeddings-v2-base-en and -small-en.
//!
//! Those repos say `"model_type": "bert"` and name their code in `auto_map`
//! (`jinaai/jina-bert-implementation--modeling_bert.JinaBertModel`), so the architecture is
//! recognised by `auto_map` ([`crate::remote_code::NATIVE_PORTS`]), never by `model_type`; that
//! code is never fetched or run. It was not available to this port either: the maths follow
//! what the independent ports and the published description agree on, as recorded with the
//! fixtures (`scripts/jina_bert_reference.py`, our NumPy reference, and
//! `tests/fixtures/encoders/README.md`), in the module order of a BERT port:
//!
//! - embeddings: `word_embeddings` + `token_type_embeddings`, then `LayerNorm`; no position
//!   embeddings (`position_embedding_type: "alibi"`);
//! - each layer post-norm, as BERT: `attention.self.{query,key,value}`, scores plus the
//!   symmetric ALiBi bias `−slope_h · |i − j|`, `attention.output.{dense,LayerNorm}`; then the
//!   GLU `mlp.gated_layers` (no bias, `2 · intermediate_size` rows, the FIRST half activated and
//!   multiplied by the second), `mlp.wo`, residual, `mlp.layernorm`;
//! - the GLU's activation from `feed_forward_type` (`geglu`: exact GELU, `reglu`: ReLU), not from
//!   `hidden_act` (TEI's port reads `hidden_act`, candle's hard-codes GELU: both wrong for
//!   `reglu`);
//! - no final norm; the checkpoints' `pooler.dense` is not loaded (embeddings mean-pool the
//!   last hidden state).
//!
//! Only the ALiBi + GLU model is ported: other `position_embedding_type` or `feed_forward_type`
//! values are refused rather than guessed.

use serde::Deserialize;

use crate::bert::{EncoderEmbeddings, EncoderModel, base_weights, check_encoder_sizes};
use crate::config::{ModelConfig, defaults};
use crate::decoder::Mlp;
use crate::encoder::{DistanceBiasTable, Encoder, EncoderLayer, NormPlacement, stacked_attention};
use crate::error::{Error, Result};
use crate::layers::{Activation, Embedding, Linear, Norm};
use crate::weights::Weights;

/// The most positions an ALiBi table is built for (jina-embeddings-v2 has 8192): the table holds
/// `heads · (2 · positions − 1)` values, so a config asking for more is refused rather than
/// allocated.
pub const MAX_ALIBI_POSITIONS: usize = 1 << 17;

/// `JinaBertConfig`: the `config.json` fields of jina-embeddings-v2, with the names and
/// defaults of BERT's config, which Jina's extends.
///
/// As in [`crate::bert::BertConfig`], the fields that fix tensor shapes have no default: a
/// config without them is an error naming the field.
#[derive(Debug, Clone, Deserialize)]
pub struct JinaBertConfig {
    /// Number of token ids.
    pub vocab_size: usize,
    /// Width of every hidden state.
    pub hidden_size: usize,
    /// Number of encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer.
    pub num_attention_heads: usize,
    /// Width of each half of the GLU (`mlp.gated_layers` has twice as many rows).
    pub intermediate_size: usize,
    /// Read but not used: the GLU's activation comes from `feed_forward_type`.
    #[serde(default = "defaults::hidden_act")]
    pub hidden_act: String,
    /// Dropout probability (unused at inference).
    #[serde(default = "defaults::dropout")]
    pub hidden_dropout_prob: f64,
    /// Attention dropout probability (unused at inference).
    #[serde(default = "defaults::dropout")]
    pub attention_probs_dropout_prob: f64,
    /// The longest sequence (8192 in jina-embeddings-v2): the ALiBi table's size. No position
    /// table depends on it.
    #[serde(default = "defaults::max_position_embeddings")]
    pub max_position_embeddings: usize,
    /// Number of token types (segments).
    #[serde(default = "defaults::type_vocab_size")]
    pub type_vocab_size: usize,
    /// Epsilon of every layer norm.
    #[serde(default = "defaults::layer_norm_eps")]
    pub layer_norm_eps: f64,
    /// `alibi` (the only kind ported; BERT's default is `absolute`).
    #[serde(default = "absolute")]
    pub position_embedding_type: String,
    /// The feed-forward block: `geglu` or `reglu` (ported), `original` (BERT's, the default).
    #[serde(default = "original")]
    pub feed_forward_type: String,
    /// The pooling Jina's own `encode` applies (`mean`); informational.
    #[serde(default)]
    pub emb_pooler: Option<String>,
    /// Dropout of classification heads (unused at inference).
    #[serde(default)]
    pub classifier_dropout: Option<f64>,
}

fn absolute() -> String {
    "absolute".to_string()
}

fn original() -> String {
    "original".to_string()
}

/// The fields [`JinaBertConfig`] requires.
const REQUIRED_FIELDS: &[&str] = &[
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
];

impl JinaBertConfig {
    /// Reads and checks the JinaBert fields of `config`.
    pub fn from_model_config(config: &ModelConfig) -> Result<JinaBertConfig> {
        let jina: JinaBertConfig = config.architecture_config(REQUIRED_FIELDS)?;
        jina.validate(config)?;
        Ok(jina)
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
        if self.max_position_embeddings > MAX_ALIBI_POSITIONS {
            return Err(config.invalid_field(
                "max_position_embeddings",
                &format!(
                    "{} positions: the ALiBi table is built for at most {MAX_ALIBI_POSITIONS}",
                    self.max_position_embeddings
                ),
            ));
        }
        if self.position_embedding_type != "alibi" {
            return Err(Error::UnsupportedFeature {
                path: config.path().to_path_buf(),
                what: format!(
                    "JinaBert with position_embedding_type `{}` (only `alibi`, as \
                     jina-embeddings-v2)",
                    self.position_embedding_type
                ),
            });
        }
        self.glu_activation(config).map(|_| ())
    }

    /// The GLU's activation, from `feed_forward_type`.
    pub fn glu_activation(&self, config: &ModelConfig) -> Result<Activation> {
        match self.feed_forward_type.as_str() {
            "geglu" => Ok(Activation::GeluErf),
            "reglu" => Ok(Activation::Relu),
            other => Err(Error::UnsupportedFeature {
                path: config.path().to_path_buf(),
                what: format!(
                    "JinaBert with feed_forward_type `{other}` (only the GLU blocks `geglu` and \
                     `reglu`)"
                ),
            }),
        }
    }
}

/// ALiBi's per-head slopes (Press et al.'s `get_slopes`): for `n` a power of two,
/// `2^(−8(h+1)/n)`; otherwise those of the closest lower power of two `p`, followed by every
/// other slope of `2p` (`[0::2]`) up to `n`. 12 heads: 2^-1 … 2^-8, 2^-0.5, 2^-1.5, 2^-2.5,
/// 2^-3.5.
pub fn alibi_slopes(heads: usize) -> Vec<f64> {
    fn power_of_two(n: usize) -> Vec<f64> {
        let start = 2f64.powf(-8.0 / n as f64);
        (1..=n).map(|h| start.powi(h as i32)).collect()
    }
    if heads == 0 {
        return Vec::new();
    }
    if heads.is_power_of_two() {
        return power_of_two(heads);
    }
    let closest = 1usize << heads.ilog2();
    let mut slopes = power_of_two(closest);
    slopes.extend(
        alibi_slopes(2 * closest)
            .into_iter()
            .step_by(2)
            .take(heads - closest),
    );
    slopes
}

/// The symmetric ALiBi bias `−slope_h · |d|` for distances up to `span − 1`, in f32 as the
/// reference computes it (f32 slopes times the distance).
fn alibi_table(heads: usize, span: usize) -> DistanceBiasTable {
    let reach = span.saturating_sub(1) as i64;
    let values = alibi_slopes(heads)
        .into_iter()
        .flat_map(|slope| {
            (-reach..=reach).map(move |distance| -(slope as f32) * distance.unsigned_abs() as f32)
        })
        .collect();
    DistanceBiasTable { values, span }
}

/// `JinaBertEmbeddings`: word + token type embeddings, then `LayerNorm`.
fn load_embeddings(weights: &Weights<'_>, jina: &JinaBertConfig) -> Result<EncoderEmbeddings> {
    let hidden = jina.hidden_size;
    Ok(EncoderEmbeddings::new(
        Embedding::load(&weights.pp("word_embeddings"), jina.vocab_size, hidden)?,
        Some(Embedding::load(
            &weights.pp("token_type_embeddings"),
            jina.type_vocab_size,
            hidden,
        )?),
        None,
        Norm::load_layer_norm(&weights.pp("LayerNorm"), hidden, jina.layer_norm_eps)?,
    ))
}

/// `JinaBertLayer`: BERT's attention block, then the GLU MLP (`JinaBertGLUMLP`), each
/// followed by residual + LayerNorm.
fn load_layer(
    weights: &Weights<'_>,
    jina: &JinaBertConfig,
    activation: Activation,
) -> Result<EncoderLayer> {
    let (hidden, inner, eps) = (
        jina.hidden_size,
        jina.intermediate_size,
        jina.layer_norm_eps,
    );
    let attention = stacked_attention(
        weights,
        hidden,
        jina.num_attention_heads,
        [
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
        ],
        "attention.output.dense",
    )?;
    // `gated_layers` rows are [activated half | multiplied half]: already the order `Mlp`
    // wants.
    let mlp = Mlp::gated(
        Linear::load_optional_bias(&weights.pp("mlp.gated_layers"), hidden, 2 * inner, false)?,
        Linear::load(&weights.pp("mlp.wo"), inner, hidden)?,
        activation,
    )?;
    Ok(EncoderLayer {
        attention,
        attention_norm: Some(Norm::load_layer_norm(
            &weights.pp("attention.output.LayerNorm"),
            hidden,
            eps,
        )?),
        mlp,
        mlp_norm: Norm::load_layer_norm(&weights.pp("mlp.layernorm"), hidden, eps)?,
        placement: NormPlacement::Post,
        rotary: None,
    })
}

/// `JinaBertEncoder`: the layers, with one ALiBi table shared by all.
fn load_encoder(
    weights: &Weights<'_>,
    config: &ModelConfig,
    jina: &JinaBertConfig,
) -> Result<Encoder> {
    let activation = jina.glu_activation(config)?;
    let layers = (0..jina.num_hidden_layers)
        .map(|index| load_layer(&weights.pp(&format!("layer.{index}")), jina, activation))
        .collect::<Result<Vec<_>>>()?;
    let alibi = alibi_table(jina.num_attention_heads, jina.max_position_embeddings);
    Encoder::new(layers, Vec::new(), Some(alibi), None)
}

/// `JinaBertModel`: the base model (last hidden state), from the checkpoint's root or under
/// `bert.` (a checkpoint saved from a head class). Sequences are taken up to
/// `max_position_embeddings` tokens.
pub fn load(root: &Weights<'_>, config: &ModelConfig) -> Result<EncoderModel> {
    let jina = JinaBertConfig::from_model_config(config)?;
    let weights = base_weights(root, "bert");
    Ok(EncoderModel::from_parts(
        load_embeddings(&weights.pp("embeddings"), &jina)?,
        load_encoder(&weights.pp("encoder"), config, &jina)?,
        jina.vocab_size,
        jina.type_vocab_size,
        jina.max_position_embeddings,
    ))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn close(got: &[f64], want: &[f64]) -> bool {
        got.len() == want.len() && got.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-12)
    }

    fn powers(exponents: &[f64]) -> Vec<f64> {
        exponents.iter().map(|e| 2f64.powf(-e)).collect()
    }

    #[test]
    fn slopes_follow_the_alibi_paper() {
        let twelve = powers(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 0.5, 1.5, 2.5, 3.5]);
        assert!(close(&alibi_slopes(12), &twelve), "{:?}", alibi_slopes(12));
        let six = powers(&[2.0, 4.0, 6.0, 8.0, 1.0, 3.0]);
        assert!(close(&alibi_slopes(6), &six), "{:?}", alibi_slopes(6));
        assert!(close(&alibi_slopes(4), &powers(&[2.0, 4.0, 6.0, 8.0])));
        assert!(close(&alibi_slopes(3), &powers(&[4.0, 8.0, 2.0])));
        assert!(close(&alibi_slopes(1), &powers(&[8.0])));
        assert!(alibi_slopes(0).is_empty());
    }

    #[test]
    fn the_bias_is_symmetric_and_linear_in_distance() {
        let table = alibi_table(2, 4);
        // Head 0 (slope 2^-4), distances −3..=3; then head 1 (2^-8).
        let head0: Vec<f32> = [3.0, 2.0, 1.0, 0.0, 1.0, 2.0, 3.0]
            .iter()
            .map(|d: &f32| -d / 16.0)
            .collect();
        assert_eq!(table.values.get(..7), Some(head0.as_slice()));
        assert_eq!(table.values.len(), 14);
        assert_eq!(table.values.get(7 + 6), Some(&(-3.0 / 256.0)));
    }

    fn config(extra: &str) -> Result<ModelConfig> {
        let text = format!(
            r#"{{"model_type":"bert","vocab_size":10,"hidden_size":8,"num_hidden_layers":1,
                "num_attention_heads":2,"intermediate_size":4,"position_embedding_type":"alibi",
                "feed_forward_type":"geglu"{extra}}}"#
        );
        ModelConfig::from_json_str(&text, Path::new("config.json"))
    }

    #[test]
    fn the_activation_comes_from_feed_forward_type_not_hidden_act() -> Result<()> {
        let geglu = JinaBertConfig::from_model_config(&config(r#","hidden_act":"relu""#)?)?;
        assert_eq!(geglu.glu_activation(&config("")?)?, Activation::GeluErf);
        let reglu = config(r#","hidden_act":"gelu","feed_forward_type":"reglu""#);
        let reglu = JinaBertConfig::from_model_config(&reglu?)?;
        assert_eq!(reglu.glu_activation(&config("")?)?, Activation::Relu);
        Ok(())
    }

    #[test]
    fn other_variants_are_refused() -> Result<()> {
        for (extra, what) in [
            (
                r#","feed_forward_type":"original""#,
                "feed_forward_type `original`",
            ),
            (r#","feed_forward_type":"glu""#, "feed_forward_type `glu`"),
            (
                r#","position_embedding_type":"absolute""#,
                "position_embedding_type `absolute`",
            ),
        ] {
            let error = JinaBertConfig::from_model_config(&config(extra)?).err();
            assert!(
                matches!(&error, Some(Error::UnsupportedFeature { what: got, .. }) if got.contains(what)),
                "{extra}: {error:?}"
            );
        }
        let error = JinaBertConfig::from_model_config(&config(r#","num_attention_heads":3"#)?);
        assert!(matches!(error, Err(Error::InvalidConfigField { .. })));
        let error =
            JinaBertConfig::from_model_config(&config(r#","max_position_embeddings":1000000"#)?);
        assert!(matches!(error, Err(Error::InvalidConfigField { .. })));
        let missing = ModelConfig::from_json_str(
            r#"{"model_type":"bert","position_embedding_type":"alibi"}"#,
            Path::new("config.json"),
        )?;
        assert!(matches!(
            JinaBertConfig::from_model_config(&missing),
            Err(Error::MissingConfigField { .. })
        ));
        Ok(())
    }
}
