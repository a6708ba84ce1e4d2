//! The sentence-transformers pieces around the `Transformer` and `Pooling` modules: the `Dense`
//! module (a linear layer and an activation, read as data) and the prompts of
//! `config_sentence_transformers.json`.
//!
//! sentence-transformers builds a `Dense` module's activation by importing the Python path its
//! `config.json` names (`torch.nn.modules.activation.Tanh`); here the path is an identifier
//! only, matched against the activations implemented, and anything else is refused. The
//! weights are read through the load policy like a model's: `model.safetensors`, or a pickle
//! `pytorch_model.bin` only when pickle is allowed (then with the restricted unpickler).

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::Device;
use safeformers_kernels::activation::activation_in_place;
use safeformers_models::Weights;
use safeformers_models::layers::{Activation, Linear};
use safeformers_weights::{LoadPolicy, open_checkpoint};
use serde::Deserialize;

use crate::encoder::read_json;
use crate::error::{PipelineError, Result};

/// `sentence_transformers.models.Dense`'s `config.json`, with its constructor's defaults.
#[derive(Debug, Deserialize)]
struct DenseConfig {
    in_features: usize,
    out_features: usize,
    #[serde(default = "default_true")]
    bias: bool,
    /// Absent: the constructor's default, `nn.Tanh()`.
    #[serde(default)]
    activation_function: Option<String>,
    #[serde(default)]
    module_input_name: Option<String>,
    #[serde(default)]
    module_output_name: Option<String>,
    #[serde(default)]
    use_residual: bool,
}

fn default_true() -> bool {
    true
}

/// The activations a `Dense` module may name (as sentence-transformers' `fullname` writes them,
/// or the shorter `torch.nn.X`): `None` is `Identity`.
fn dense_activation(name: &str) -> Option<Option<Activation>> {
    let class = name
        .strip_prefix("torch.nn.modules.activation.")
        .or_else(|| name.strip_prefix("torch.nn.modules.linear."))
        .or_else(|| name.strip_prefix("torch.nn."))?;
    Some(match class {
        "Identity" => None,
        "Tanh" => Some(Activation::Tanh),
        "ReLU" => Some(Activation::Relu),
        "GELU" => Some(Activation::GeluErf),
        "SiLU" => Some(Activation::Silu),
        _ => return None,
    })
}

/// The activations [`dense_activation`] accepts, for error messages.
const DENSE_ACTIVATIONS: &str = "Identity, Tanh, ReLU, GELU, SiLU (torch.nn)";

/// A `Dense` module: `activation(x Wᵀ + b)` on the sentence embedding.
#[derive(Debug, Clone)]
pub struct Dense {
    linear: Linear,
    activation: Option<Activation>,
}

impl Dense {
    /// Reads the module in `dir` (`config.json` and the weights `linear.weight`
    /// `[out_features, in_features]`, `linear.bias`), the weights under `policy`.
    pub fn load(dir: &Path, policy: &LoadPolicy, device: &Device) -> Result<Dense> {
        let config_path = dir.join("config.json");
        let config: DenseConfig = read_json(&config_path)?;
        let invalid = |reason: String| PipelineError::InvalidModules {
            path: config_path.clone(),
            reason,
        };
        let sentence = "sentence_embedding";
        for (field, value) in [
            ("module_input_name", &config.module_input_name),
            ("module_output_name", &config.module_output_name),
        ] {
            if value.as_deref().is_some_and(|name| name != sentence) {
                return Err(invalid(format!(
                    "`{field}` is not `{sentence}`: only Dense layers on the sentence embedding \
                     are implemented"
                )));
            }
        }
        if config.use_residual {
            return Err(invalid("`use_residual` is not implemented".into()));
        }
        if config.in_features == 0 || config.out_features == 0 {
            return Err(invalid(
                "in_features and out_features must be positive".into(),
            ));
        }
        let activation = match config.activation_function.as_deref() {
            None => Some(Activation::Tanh),
            Some(name) => dense_activation(name).ok_or_else(|| {
                invalid(format!(
                    "activation_function `{name}` is not one of {DENSE_ACTIVATIONS}; \
                     sentence-transformers would import it as Python code, which safeformers \
                     never runs"
                ))
            })?,
        };
        let checkpoint = open_checkpoint(dir, policy).map_err(safeformers_models::Error::from)?;
        let weights = Weights::new(&checkpoint, device).pp("linear");
        let weight = weights.get(&[config.out_features, config.in_features], "weight")?;
        let bias = if config.bias {
            Some(weights.get(&[config.out_features], "bias")?)
        } else {
            None
        };
        Ok(Dense {
            linear: Linear::from_tensors(weight, bias)?,
            activation,
        })
    }

    /// Width of the input vectors.
    pub fn in_features(&self) -> usize {
        self.linear.in_features()
    }

    /// Width of the output vectors.
    pub fn out_features(&self) -> usize {
        self.linear.out_features()
    }

    /// The module applied to one vector of [`Dense::in_features`] values.
    pub fn forward(&self, vector: &[f32]) -> Result<Vec<f32>> {
        if vector.len() != self.in_features() {
            return Err(PipelineError::InvalidInput(format!(
                "a Dense module of {} inputs was given a vector of {} (a pooling that does not \
                 match the folder's?)",
                self.in_features(),
                vector.len()
            )));
        }
        let mut out = self.linear.forward_rows(vector, 1)?;
        if let Some(activation) = self.activation {
            activation_in_place(activation, &mut out);
        }
        Ok(out)
    }
}

/// `config_sentence_transformers.json`'s prompts: texts prepended to every input.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Prompts {
    /// Name → text (`{"query": "Instruct: ...\nQuery:", "document": ""}`).
    #[serde(default)]
    pub prompts: BTreeMap<String, String>,
    /// The prompt used when the caller names none.
    #[serde(default)]
    pub default_prompt_name: Option<String>,
}

impl Prompts {
    /// Reads `dir/config_sentence_transformers.json` (no prompts when absent). A
    /// `default_prompt_name` that is not among the prompts is an error, as in
    /// sentence-transformers.
    pub fn from_dir(dir: &Path) -> Result<Prompts> {
        let path = dir.join("config_sentence_transformers.json");
        if !path.exists() {
            return Ok(Prompts::default());
        }
        let prompts: Prompts = read_json(&path)?;
        if let Some(name) = &prompts.default_prompt_name
            && !prompts.prompts.contains_key(name)
        {
            return Err(PipelineError::InvalidModules {
                path,
                reason: format!(
                    "default_prompt_name `{name}` is not among the prompts ({})",
                    prompts.names()
                ),
            });
        }
        Ok(prompts)
    }

    /// The prompt text to prepend, as sentence-transformers' `encode` chooses it: `prompt`
    /// itself, else the prompt named `prompt_name` (an error naming the known ones if there is
    /// none), else the default prompt; `None` when nothing applies.
    pub fn resolve(
        &self,
        prompt: Option<&str>,
        prompt_name: Option<&str>,
        source: &Path,
    ) -> Result<Option<String>> {
        if let Some(prompt) = prompt {
            return Ok(Some(prompt.to_string()));
        }
        match prompt_name {
            Some(name) => match self.prompts.get(name) {
                Some(text) => Ok(Some(text.clone())),
                None => Err(PipelineError::InvalidInput(format!(
                    "{}: no prompt named `{name}` (the folder's prompts: {})",
                    source.display(),
                    self.names()
                ))),
            },
            None => Ok(self
                .default_prompt_name
                .as_ref()
                .and_then(|name| self.prompts.get(name).cloned())),
        }
    }

    fn names(&self) -> String {
        if self.prompts.is_empty() {
            return "none".into();
        }
        self.prompts
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activations_are_names_not_code() {
        assert_eq!(
            dense_activation("torch.nn.modules.activation.Tanh"),
            Some(Some(Activation::Tanh))
        );
        assert_eq!(
            dense_activation("torch.nn.modules.linear.Identity"),
            Some(None)
        );
        assert_eq!(
            dense_activation("torch.nn.GELU"),
            Some(Some(Activation::GeluErf))
        );
        for refused in [
            "torch.nn.modules.activation.Softmax",
            "evil.Backdoor",
            "os.system",
            "Tanh",
        ] {
            assert_eq!(dense_activation(refused), None, "{refused}");
        }
    }

    #[test]
    fn prompts_resolve_as_sentence_transformers_does() -> Result<()> {
        let prompts = Prompts {
            prompts: [
                ("query".to_string(), "q: ".to_string()),
                ("doc".to_string(), String::new()),
            ]
            .into_iter()
            .collect(),
            default_prompt_name: Some("query".into()),
        };
        let dir = Path::new("m");
        assert_eq!(prompts.resolve(None, None, dir)?, Some("q: ".into()));
        assert_eq!(
            prompts.resolve(None, Some("doc"), dir)?,
            Some(String::new())
        );
        assert_eq!(
            prompts.resolve(Some("x: "), Some("doc"), dir)?,
            Some("x: ".into())
        );
        let error = prompts.resolve(None, Some("passage"), dir).err();
        let message = error.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            message.contains("`passage`") && message.contains("doc, query"),
            "{message}"
        );
        assert_eq!(Prompts::default().resolve(None, None, dir)?, None);
        Ok(())
    }
}
