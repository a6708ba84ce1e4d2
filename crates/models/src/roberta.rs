//! RoBERTa (Liu et al., 2019, "RoBERTa: A Robustly Optimized BERT Pretraining Approach") and
//! XLM-RoBERTa (Conneau et al., 2019, "Unsupervised Cross-lingual Representation Learning at
//! Scale"), with their task heads.
//!
//! Follows Transformers' `models/roberta/modeling_roberta.py`. The encoder is BERT's (see
//! [`crate::bert`]; the heads are [`crate::heads`]' generic ones): RoBERTa differs only in its
//! position ids, which count non-padding tokens from `padding_idx + 1` and give padding tokens
//! `padding_idx` (`create_position_ids_from_input_ids`), in its masked-LM head (`lm_head`:
//! dense, erf GELU, layer norm, decoder), and in its sequence classification head (dense, tanh,
//! `out_proj` over `<s>`, no pooler). XLM-RoBERTa is the same code with another config.

use crate::bert::{BertConfig, BertModel, Family, Flavour, PositionIds};
use crate::config::ModelConfig;
use crate::error::Result;
use crate::heads::{
    EncoderForTask, MaskedLmHead, QuestionAnsweringHead, SequenceClassificationHead,
    TokenClassificationHead,
};

/// `RobertaConfig` is `BertConfig` with `pad_token_id` 1 by default.
pub type RobertaConfig = BertConfig;

/// Transformers' default `pad_token_id` for RoBERTa and XLM-RoBERTa.
const DEFAULT_PAD_TOKEN_ID: i64 = 1;

/// The RoBERTa flavour of the shared encoder for this config.
pub fn flavour(config: &ModelConfig) -> Result<Flavour> {
    let pad = config.pad_token_id.unwrap_or(DEFAULT_PAD_TOKEN_ID);
    let padding_idx = u32::try_from(pad).map_err(|_| {
        config.invalid_field(
            "pad_token_id",
            &format!("{pad} cannot be RoBERTa's padding index"),
        )
    })?;
    Ok(Flavour {
        family: Family::Roberta,
        positions: PositionIds::AfterPadding { padding_idx },
        sinusoidal_positions: false,
    })
}

/// `RobertaModel`: the BERT base model with RoBERTa positions (and a pooler when saved).
pub type RobertaModel = BertModel;

/// `RobertaForMaskedLM`: `lm_head` (dense, erf GELU, layer norm, decoder).
pub type RobertaForMaskedLM = EncoderForTask<MaskedLmHead>;

/// `RobertaForSequenceClassification`: `classifier.out_proj(tanh(classifier.dense(<s>)))`.
pub type RobertaForSequenceClassification = EncoderForTask<SequenceClassificationHead>;

/// `RobertaForTokenClassification`: `classifier` over every position.
pub type RobertaForTokenClassification = EncoderForTask<TokenClassificationHead>;

/// `RobertaForQuestionAnswering`: `qa_outputs`, start and end logits.
pub type RobertaForQuestionAnswering = EncoderForTask<QuestionAnsweringHead>;
