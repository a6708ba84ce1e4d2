//! Task heads that are the same layer in every BERT-like model: token classification
//! (`classifier`) and extractive question answering (`qa_outputs`). The heads that differ per
//! architecture (masked LM, sequence classification) live in the architecture's file.

use candle_core::{D, Tensor};

use crate::config::ModelConfig;
use crate::error::Result;
use crate::layers::Linear;
use crate::weights::Weights;

/// `classifier`: one linear layer over every position → `[batch, seq, num_labels]`.
#[derive(Debug)]
pub struct TokenClassificationHead {
    classifier: Linear,
}

impl TokenClassificationHead {
    /// Loads `classifier.{weight,bias}` from the checkpoint root.
    pub fn load(root: &Weights<'_>, hidden_size: usize, num_labels: usize) -> Result<Self> {
        Ok(TokenClassificationHead {
            classifier: Linear::load(&root.pp("classifier"), hidden_size, num_labels)?,
        })
    }

    /// Logits for every position.
    pub fn forward(&self, hidden: &Tensor) -> Result<Tensor> {
        self.classifier.forward(hidden)
    }
}

/// `qa_outputs`: a linear layer to two values per position, split into start and end logits
/// (`logits.split(1, dim=-1)` in Transformers).
#[derive(Debug)]
pub struct QuestionAnsweringHead {
    qa_outputs: Linear,
}

impl QuestionAnsweringHead {
    /// Loads `qa_outputs.{weight,bias}`; the config must have two labels (start, end), as
    /// Transformers' QA models assume.
    pub fn load(root: &Weights<'_>, hidden_size: usize, config: &ModelConfig) -> Result<Self> {
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
            qa_outputs: Linear::load(&root.pp("qa_outputs"), hidden_size, 2)?,
        })
    }

    /// `(start_logits, end_logits)`, each `[batch, seq]`.
    pub fn forward(&self, hidden: &Tensor) -> Result<(Tensor, Tensor)> {
        let logits = self.qa_outputs.forward(hidden)?;
        let start = logits.narrow(D::Minus1, 0, 1)?.squeeze(D::Minus1)?;
        let end = logits.narrow(D::Minus1, 1, 1)?.squeeze(D::Minus1)?;
        Ok((start.contiguous()?, end.contiguous()?))
    }
}
