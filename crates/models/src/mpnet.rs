//! MPNet (Song et al., 2020, "MPNet: Masked and Permuted Pre-training for Language
//! Understanding"), the encoder of sentence-transformers/all-mpnet-base-v2.
//!
//! Follows Transformers' `models/mpnet/modeling_mpnet.py`: a BERT-shaped post-norm encoder
//! (`MPNetEmbeddings`, `MPNetLayer` = `MPNetAttention` + `MPNetIntermediate` + `MPNetOutput`)
//! whose attention adds a learned bias per head and relative-position bucket
//! (`MPNetEncoder.relative_attention_bias`, computed once and shared by every layer). Tensor
//! names are the checkpoint's; the layers run on the shared encoder stack of
//! [`crate::encoder`] with MPNet's names and its buckets as a distance bias table.
//!
//! What decides parity:
//!
//! - the buckets are always 32 (`compute_position_bias` calls `relative_position_bucket` with
//!   its default `num_buckets=32`, whatever `relative_attention_num_buckets` says) over a
//!   maximum distance of 128: 16 per direction, exact below 8, logarithmic up to 128, the last
//!   bucket beyond ([`relative_position_bucket`]);
//! - positions are RoBERTa's, from the hard-coded `padding_idx` 1 (not `pad_token_id`):
//!   non-padding tokens count from 2, padding tokens take position 1;
//! - no token types.
//!
//! The pooler (`pooler.dense`) is not loaded: the base model's last hidden state is what
//! sentence-transformers pools.

use serde::Deserialize;

use crate::bert::{
    EncoderEmbeddings, EncoderModel, PositionIds, base_weights, check_encoder_sizes,
    parse_activation,
};
use crate::config::{ModelConfig, defaults};
use crate::encoder::{DistanceBiasTable, Encoder, EncoderLayer, EncoderShape, LayerNames};
use crate::error::{Error, Result};
use crate::layers::{Embedding, Norm, tensor_values};
use crate::weights::Weights;

/// The relative-position buckets MPNet computes (`num_buckets=32`, fixed in the code).
pub const RELATIVE_BUCKETS: usize = 32;

/// The distance from which every farther key shares the last bucket (`max_distance=128`).
pub const MAX_RELATIVE_DISTANCE: usize = 128;

/// MPNet's `padding_idx`, fixed in `MPNetEmbeddings` (not read from `pad_token_id`).
pub const PADDING_IDX: u32 = 1;

/// `MPNetConfig`: the `config.json` fields of MPNet, with Transformers' names and defaults.
///
/// As in [`crate::bert::BertConfig`], the fields that fix tensor shapes have no default: a
/// config without them is an error naming the field.
#[derive(Debug, Clone, Deserialize)]
pub struct MPNetConfig {
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
    /// Activation of the feed-forward layer.
    #[serde(default = "defaults::hidden_act")]
    pub hidden_act: String,
    /// Dropout probability (unused at inference).
    #[serde(default = "defaults::dropout")]
    pub hidden_dropout_prob: f64,
    /// Attention dropout probability (unused at inference).
    #[serde(default = "defaults::dropout")]
    pub attention_probs_dropout_prob: f64,
    /// Rows of the position table (positions start at 2, so sequences take two fewer tokens).
    #[serde(default = "defaults::max_position_embeddings")]
    pub max_position_embeddings: usize,
    /// Epsilon of every layer norm.
    #[serde(default = "defaults::layer_norm_eps")]
    pub layer_norm_eps: f64,
    /// Rows of `relative_attention_bias` (32); the buckets used are always the first 32.
    #[serde(default = "relative_attention_num_buckets")]
    pub relative_attention_num_buckets: usize,
}

fn relative_attention_num_buckets() -> usize {
    RELATIVE_BUCKETS
}

/// The fields [`MPNetConfig`] requires.
const REQUIRED_FIELDS: &[&str] = &[
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
];

impl MPNetConfig {
    /// Reads and checks the MPNet fields of `config`.
    pub fn from_model_config(config: &ModelConfig) -> Result<MPNetConfig> {
        let mpnet: MPNetConfig = config.architecture_config(REQUIRED_FIELDS)?;
        check_encoder_sizes(
            config,
            &[
                ("vocab_size", mpnet.vocab_size),
                ("intermediate_size", mpnet.intermediate_size),
            ],
            ("hidden_size", mpnet.hidden_size),
            ("num_attention_heads", mpnet.num_attention_heads),
        )?;
        parse_activation(config, "hidden_act", &mpnet.hidden_act)?;
        if mpnet.max_position_embeddings <= PADDING_IDX as usize + 1 {
            return Err(config.invalid_field(
                "max_position_embeddings",
                "positions start at 2: at least 3 are needed",
            ));
        }
        if mpnet.relative_attention_num_buckets < RELATIVE_BUCKETS {
            return Err(config.invalid_field(
                "relative_attention_num_buckets",
                &format!(
                    "{} rows cannot hold the {RELATIVE_BUCKETS} buckets MPNet always computes",
                    mpnet.relative_attention_num_buckets
                ),
            ));
        }
        Ok(mpnet)
    }

    fn shape(&self, config: &ModelConfig) -> Result<EncoderShape> {
        Ok(EncoderShape {
            hidden: self.hidden_size,
            intermediate: self.intermediate_size,
            heads: self.num_attention_heads,
            layers: self.num_hidden_layers,
            layer_norm_eps: self.layer_norm_eps,
            activation: parse_activation(config, "hidden_act", &self.hidden_act)?,
        })
    }
}

/// `MPNetLayer`'s checkpoint names.
const LAYER_NAMES: LayerNames = LayerNames {
    layers: "layer",
    query_key_value: ["attention.attn.q", "attention.attn.k", "attention.attn.v"],
    attention_output: "attention.attn.o",
    attention_norm: "attention.LayerNorm",
    intermediate: "intermediate.dense",
    output: "output.dense",
    output_norm: "output.LayerNorm",
};

/// `MPNetEncoder.relative_position_bucket` of `distance` = key position − query position:
/// keys before the query in buckets 0–15, after it in 16–31; exact below 8, then
/// `8 + ⌊ln(n/8) / ln(16) · 8⌋` (in f32, as torch computes it), the last bucket from 128 on.
pub fn relative_position_bucket(distance: i64) -> usize {
    let per_direction = RELATIVE_BUCKETS / 2;
    let max_exact = per_direction / 2;
    let side = if distance > 0 { per_direction } else { 0 };
    let n = distance.unsigned_abs();
    let within = if n < max_exact as u64 {
        n as usize
    } else {
        let range = (MAX_RELATIVE_DISTANCE as f64 / max_exact as f64).ln() as f32;
        let scaled =
            (n as f32 / max_exact as f32).ln() / range * (per_direction - max_exact) as f32;
        (max_exact + scaled as usize).min(per_direction - 1)
    };
    side + within
}

/// The bias of every head at every distance from `relative_attention_bias.weight`
/// (`[relative_attention_num_buckets, heads]`). Distances past 128 share the last bucket, so
/// the table stops there (the kernel clamps farther distances to its ends).
fn relative_bias_table(weights: &Weights<'_>, mpnet: &MPNetConfig) -> Result<DistanceBiasTable> {
    let heads = mpnet.num_attention_heads;
    let bucket_values =
        tensor_values(&weights.get(&[mpnet.relative_attention_num_buckets, heads], "weight")?)?;
    let span = mpnet.max_position_embeddings.min(MAX_RELATIVE_DISTANCE + 1);
    let reach = span as i64 - 1;
    let mut values = Vec::with_capacity(heads * (2 * span - 1));
    for head in 0..heads {
        for distance in -reach..=reach {
            let index = relative_position_bucket(distance) * heads + head;
            let value = bucket_values.get(index).ok_or_else(|| Error::TensorShape {
                tensor: weights.full_name("weight"),
                expected: vec![RELATIVE_BUCKETS, heads],
                actual: vec![bucket_values.len() / heads.max(1), heads],
            })?;
            values.push(*value);
        }
    }
    Ok(DistanceBiasTable { values, span })
}

/// `MPNetEmbeddings`: word + position embeddings (RoBERTa's numbering), then `LayerNorm`.
fn load_embeddings(weights: &Weights<'_>, mpnet: &MPNetConfig) -> Result<EncoderEmbeddings> {
    let hidden = mpnet.hidden_size;
    let positions = Embedding::load(
        &weights.pp("position_embeddings"),
        mpnet.max_position_embeddings,
        hidden,
    )?;
    Ok(EncoderEmbeddings::new(
        Embedding::load(&weights.pp("word_embeddings"), mpnet.vocab_size, hidden)?,
        None,
        Some((
            positions,
            PositionIds::AfterPadding {
                padding_idx: PADDING_IDX,
            },
        )),
        Norm::load_layer_norm(&weights.pp("LayerNorm"), hidden, mpnet.layer_norm_eps)?,
    ))
}

/// `MPNetEncoder`: BERT-shaped layers sharing one relative-position bias.
fn load_encoder(
    weights: &Weights<'_>,
    config: &ModelConfig,
    mpnet: &MPNetConfig,
) -> Result<Encoder> {
    let shape = mpnet.shape(config)?;
    let layers = (0..mpnet.num_hidden_layers)
        .map(|index| {
            EncoderLayer::load_named(
                &weights.pp(&format!("{}.{index}", LAYER_NAMES.layers)),
                &shape,
                &LAYER_NAMES,
            )
        })
        .collect::<Result<Vec<_>>>()?;
    let bias = relative_bias_table(&weights.pp("relative_attention_bias"), mpnet)?;
    Encoder::new(layers, Vec::new(), Some(bias), None)
}

/// `MPNetModel`: the base model (last hidden state), from the checkpoint's root or under
/// `mpnet.` (a checkpoint saved from a head class). Sequences are taken up to
/// `max_position_embeddings − 2` tokens.
pub fn load(root: &Weights<'_>, config: &ModelConfig) -> Result<EncoderModel> {
    let mpnet = MPNetConfig::from_model_config(config)?;
    let weights = base_weights(root, "mpnet");
    Ok(EncoderModel::from_parts(
        load_embeddings(&weights.pp("embeddings"), &mpnet)?,
        load_encoder(&weights.pp("encoder"), config, &mpnet)?,
        mpnet.vocab_size,
        1,
        mpnet.max_position_embeddings - (PADDING_IDX as usize + 1),
    ))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// Transformers 5.25's `MPNetEncoder.relative_position_bucket` at these distances
    /// (key − query), printed by torch.
    #[test]
    fn buckets_match_transformers() {
        for (n, before, after) in [
            (0, 0, 0),
            (7, 7, 23),
            (8, 8, 24),
            (11, 8, 24),
            (12, 9, 25),
            (16, 10, 26),
            (22, 10, 26),
            (23, 11, 27),
            (32, 12, 28),
            (45, 12, 28),
            (46, 13, 29),
            (64, 14, 30),
            (90, 14, 30),
            (91, 15, 31),
            (127, 15, 31),
            (128, 15, 31),
            (140, 15, 31),
            (100_000, 15, 31),
        ] {
            assert_eq!(relative_position_bucket(-n), before, "key {n} before");
            assert_eq!(relative_position_bucket(n), after, "key {n} after");
        }
    }

    fn config(extra: &str) -> Result<ModelConfig> {
        let text = format!(
            r#"{{"model_type":"mpnet","vocab_size":10,"hidden_size":8,"num_hidden_layers":1,
                "num_attention_heads":2,"intermediate_size":4{extra}}}"#
        );
        ModelConfig::from_json_str(&text, Path::new("config.json"))
    }

    #[test]
    fn configs_are_checked() -> Result<()> {
        let mpnet = MPNetConfig::from_model_config(&config("")?)?;
        assert_eq!(mpnet.relative_attention_num_buckets, 32);
        assert_eq!(mpnet.max_position_embeddings, 512);
        for extra in [
            r#","relative_attention_num_buckets":16"#,
            r#","max_position_embeddings":2"#,
            r#","hidden_act":"wobbly""#,
            r#","num_attention_heads":3"#,
        ] {
            let error = MPNetConfig::from_model_config(&config(extra)?);
            assert!(
                matches!(error, Err(Error::InvalidConfigField { .. })),
                "{extra}: {error:?}"
            );
        }
        // More rows than buckets: the extra rows are never read, as in Transformers.
        MPNetConfig::from_model_config(&config(r#","relative_attention_num_buckets":64"#)?)?;
        Ok(())
    }
}
