//! What a model returns, and the one trait every loaded model implements.

use std::fmt::Debug;

use candle_core::Tensor;

use crate::error::Result;

/// The outputs of a forward pass, named as in Transformers' `ModelOutput` classes. All tensors
/// are f32.
#[derive(Debug, Clone)]
pub enum ModelOutput {
    /// A base model (`BertModel`, ...): `last_hidden_state` `[batch, seq, hidden]` and, when
    /// the model has a pooler, `pooler_output` `[batch, hidden]`.
    BaseModel {
        /// The encoder's final hidden states.
        last_hidden_state: Tensor,
        /// `tanh(dense(hidden[:, 0]))`, for models with a pooler.
        pooler_output: Option<Tensor>,
    },
    /// A masked-LM head: `logits` `[batch, seq, vocab_size]`.
    MaskedLm {
        /// Vocabulary scores for every position.
        logits: Tensor,
    },
    /// A sequence classification head: `logits` `[batch, num_labels]`.
    SequenceClassification {
        /// Scores per label (see `problem_type` for how to read them).
        logits: Tensor,
    },
    /// A token classification head: `logits` `[batch, seq, num_labels]`.
    TokenClassification {
        /// Scores per label for every position.
        logits: Tensor,
    },
    /// An extractive question-answering head: `[batch, seq]` each.
    QuestionAnswering {
        /// Scores for the answer starting at each position.
        start_logits: Tensor,
        /// Scores for the answer ending at each position.
        end_logits: Tensor,
    },
}

impl ModelOutput {
    /// `last_hidden_state`, for a base model.
    pub fn last_hidden_state(&self) -> Option<&Tensor> {
        match self {
            ModelOutput::BaseModel {
                last_hidden_state, ..
            } => Some(last_hidden_state),
            _ => None,
        }
    }

    /// `pooler_output`, for a base model with a pooler.
    pub fn pooler_output(&self) -> Option<&Tensor> {
        match self {
            ModelOutput::BaseModel { pooler_output, .. } => pooler_output.as_ref(),
            _ => None,
        }
    }

    /// `logits`, for masked-LM and classification heads.
    pub fn logits(&self) -> Option<&Tensor> {
        match self {
            ModelOutput::MaskedLm { logits }
            | ModelOutput::SequenceClassification { logits }
            | ModelOutput::TokenClassification { logits } => Some(logits),
            _ => None,
        }
    }
}

/// A model with its head, ready to run.
///
/// `input_ids` and the optional `attention_mask` (non-zero = attend) and `token_type_ids` are
/// `[batch, seq]` integer tensors. Bad inputs (ids outside the vocabulary, mismatched shapes,
/// an empty batch, too many tokens) are errors, never panics.
pub trait TaskModel: Debug + Send + Sync {
    /// Runs the model.
    fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        token_type_ids: Option<&Tensor>,
    ) -> Result<ModelOutput>;

    /// The last hidden state of every token of each sequence (`[len, hidden]` row-major per
    /// sequence), computed without padding: each sequence is exactly as long as it is, and no
    /// work is spent on padding rows. Equal to the real tokens' rows of [`TaskModel::forward`]
    /// on a right-padded batch. `None` when the model has no such path (the caller pads and
    /// calls `forward`).
    fn token_states(&self, _sequences: &[TokenSequence<'_>]) -> Option<Result<Vec<Vec<f32>>>> {
        None
    }
}

/// One sequence for [`TaskModel::token_states`]: its tokens only.
#[derive(Debug, Clone, Copy)]
pub struct TokenSequence<'a> {
    /// Token ids.
    pub input_ids: &'a [u32],
    /// Token type ids (segment ids), as many as `input_ids`; all zeros when `None`.
    pub token_type_ids: Option<&'a [u32]>,
}
