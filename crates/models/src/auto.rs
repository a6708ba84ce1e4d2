//! The Auto dispatch: from `config.json`'s `model_type` and `architectures` to a model class.
//!
//! `model_type` picks the architecture (as Transformers' `AutoConfig` does); the head comes
//! from the caller ([`Head`], like choosing `AutoModelForMaskedLM`) or else from the first
//! entry of `architectures` (`BertForSequenceClassification` → [`Head::SequenceClassification`]),
//! and a config without `architectures` loads the base model.
//!
//! A config whose `auto_map` names code for the class being loaded is handled by
//! [`crate::remote_code`]: the code is never run (nor fetched, nor read beyond hashing). A known
//! `model_type` whose `auto_map` names the built-in class loads the built-in implementation, as
//! Transformers does without `trust_remote_code`; any other class is refused as a security
//! policy matter, naming the code files.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use safeformers_weights::{Checkpoint, LoadPolicy, open_checkpoint};

use crate::bert::{BertModel, Flavour, Pooling};
use crate::causal_lm::CausalLm;
use crate::config::{ModelConfig, ProblemType};
use crate::distilbert;
use crate::error::{Error, Result};
use crate::gpt2::Gpt2LmHeadModel;
use crate::heads::{
    EncoderForTask, MaskedLmHead, QuestionAnsweringHead, SequenceClassificationHead,
    TokenClassificationHead,
};
use crate::llama::LlamaForCausalLM;
use crate::modernbert;
use crate::output::{ModelOutput, TaskModel, TokenSequence};
use crate::roberta;
use crate::weights::{WeightOptions, Weights};

/// The `model_type` values implemented here: the encoders ([`AutoModel`]) and the decoders
/// ([`AutoModelForCausalLM`], listed again in [`CAUSAL_LM_MODEL_TYPES`]).
pub const SUPPORTED_MODEL_TYPES: &[&str] = &[
    "bert",
    "roberta",
    "xlm-roberta",
    "distilbert",
    "gpt2",
    "llama",
    "mistral",
    "qwen2",
    "gemma",
    "phi3",
    "qwen3",
    "nomic_bert",
    "new",
    "modernbert",
    "mpnet",
];

/// The `model_type` values [`AutoModelForCausalLM`] loads.
pub const CAUSAL_LM_MODEL_TYPES: &[&str] = &[
    "gpt2", "llama", "mistral", "qwen2", "gemma", "phi3", "qwen3",
];

/// An implemented architecture (one `model_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Architecture {
    /// `bert` (also MiniLM and other BERT-shaped models).
    Bert,
    /// `roberta`.
    Roberta,
    /// `xlm-roberta` (RoBERTa code, multilingual vocabulary).
    XlmRoberta,
    /// `distilbert`.
    DistilBert,
    /// `modernbert` as a base model (`ModernBertModel`: hidden states, for the embedding models
    /// built on it).
    ModernBert,
    /// `qwen3` as a base model (`Qwen3Model`: hidden states, as Qwen3-Embedding uses it); its
    /// causal LM loads with [`AutoModelForCausalLM`].
    Qwen3,
    /// `nomic_bert`: NomicBert (nomic-embed-text-v1/v1.5), ported from its remote code
    /// ([`crate::nomic_bert`]).
    NomicBert,
    /// `new`: GTE "new" (gte-base/large-en-v1.5, gte-multilingual-base), ported from its
    /// remote code ([`crate::gte`]); its classes are named `New*`.
    Gte,
    /// JinaBert v2 (jina-embeddings-v2), base model only. Its `model_type` is `bert`: it is
    /// recognised by the `auto_map` classes it names ([`crate::remote_code::NATIVE_PORTS`]).
    JinaBert,
    /// `mpnet` (all-mpnet-base-v2), base model only.
    MPNet,
}

impl Architecture {
    /// The architecture for a `model_type`, if implemented.
    pub fn from_model_type(model_type: &str) -> Option<Architecture> {
        Some(match model_type {
            "bert" => Architecture::Bert,
            "roberta" => Architecture::Roberta,
            "xlm-roberta" => Architecture::XlmRoberta,
            "distilbert" => Architecture::DistilBert,
            "modernbert" => Architecture::ModernBert,
            "qwen3" => Architecture::Qwen3,
            "nomic_bert" => Architecture::NomicBert,
            "new" => Architecture::Gte,
            "mpnet" => Architecture::MPNet,
            _ => return None,
        })
    }

    /// The `model_type` spelling.
    pub fn model_type(self) -> &'static str {
        match self {
            Architecture::Bert => "bert",
            Architecture::Roberta => "roberta",
            Architecture::XlmRoberta => "xlm-roberta",
            Architecture::DistilBert => "distilbert",
            Architecture::ModernBert => "modernbert",
            Architecture::Qwen3 => "qwen3",
            Architecture::NomicBert => "nomic_bert",
            Architecture::Gte => "new",
            Architecture::JinaBert => "bert",
            Architecture::MPNet => "mpnet",
        }
    }

    /// The prefix of Transformers' class names (`Bert`, `Roberta`, `XLMRoberta`, `DistilBert`,
    /// `ModernBert`, `Qwen3`, `MPNet`), or of the remote code's for a port (`NomicBert`, `New`,
    /// `JinaBert`).
    pub fn class_prefix(self) -> &'static str {
        match self {
            Architecture::Bert => "Bert",
            Architecture::Roberta => "Roberta",
            Architecture::XlmRoberta => "XLMRoberta",
            Architecture::DistilBert => "DistilBert",
            Architecture::ModernBert => "ModernBert",
            Architecture::Qwen3 => "Qwen3",
            Architecture::NomicBert => "NomicBert",
            Architecture::Gte => "New",
            Architecture::JinaBert => "JinaBert",
            Architecture::MPNet => "MPNet",
        }
    }

    /// Whether the model reads `token_type_ids` (DistilBERT, ModernBERT, MPNet and the decoders
    /// have none).
    pub fn uses_token_type_ids(self) -> bool {
        !matches!(
            self,
            Architecture::DistilBert
                | Architecture::ModernBert
                | Architecture::MPNet
                | Architecture::Qwen3
        )
    }

    /// Whether only the base model is implemented (no task heads).
    pub fn is_base_model_only(self) -> bool {
        matches!(
            self,
            Architecture::NomicBert
                | Architecture::Gte
                | Architecture::ModernBert
                | Architecture::JinaBert
                | Architecture::MPNet
        )
    }

    /// Whether this is a decoder loaded as its base model (only [`Head::Base`]).
    pub fn is_decoder(self) -> bool {
        matches!(self, Architecture::Qwen3)
    }
}

/// What sits on top of the encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Head {
    /// None: the base model (`AutoModel`), hidden states and pooler output.
    Base,
    /// Masked language modelling (`AutoModelForMaskedLM`).
    MaskedLm,
    /// Sequence classification or regression (`AutoModelForSequenceClassification`).
    SequenceClassification,
    /// Token classification (`AutoModelForTokenClassification`).
    TokenClassification,
    /// Extractive question answering (`AutoModelForQuestionAnswering`).
    QuestionAnswering,
}

impl Head {
    /// Every head.
    pub const ALL: [Head; 5] = [
        Head::Base,
        Head::MaskedLm,
        Head::SequenceClassification,
        Head::TokenClassification,
        Head::QuestionAnswering,
    ];

    /// The Transformers Auto class that loads this head (the `auto_map` key it would use).
    pub fn auto_class(self) -> &'static str {
        match self {
            Head::Base => "AutoModel",
            Head::MaskedLm => "AutoModelForMaskedLM",
            Head::SequenceClassification => "AutoModelForSequenceClassification",
            Head::TokenClassification => "AutoModelForTokenClassification",
            Head::QuestionAnswering => "AutoModelForQuestionAnswering",
        }
    }

    /// The class-name suffix (`Model`, `ForMaskedLM`, ...).
    pub fn class_suffix(self) -> &'static str {
        match self {
            Head::Base => "Model",
            Head::MaskedLm => "ForMaskedLM",
            Head::SequenceClassification => "ForSequenceClassification",
            Head::TokenClassification => "ForTokenClassification",
            Head::QuestionAnswering => "ForQuestionAnswering",
        }
    }
}

/// A model with its head, loaded and ready to run, with the config it came from.
#[derive(Debug)]
pub struct LoadedModel {
    config: ModelConfig,
    architecture: Architecture,
    head: Head,
    model: Box<dyn TaskModel>,
}

impl LoadedModel {
    /// Runs the model on `[batch, seq]` integer inputs (see [`TaskModel::forward`]).
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        token_type_ids: Option<&Tensor>,
    ) -> Result<ModelOutput> {
        self.model
            .forward(input_ids, attention_mask, token_type_ids)
    }

    /// Each sequence's last hidden state without padding, when the model has that path (see
    /// [`TaskModel::token_states`]).
    pub fn token_states(&self, sequences: &[TokenSequence<'_>]) -> Option<Result<Vec<Vec<f32>>>> {
        self.model.token_states(sequences)
    }

    /// The parsed `config.json`.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Which architecture was loaded.
    pub fn architecture(&self) -> Architecture {
        self.architecture
    }

    /// Which head was loaded.
    pub fn head(&self) -> Head {
        self.head
    }

    /// The Transformers class this corresponds to (`BertForSequenceClassification`).
    pub fn class_name(&self) -> String {
        format!(
            "{}{}",
            self.architecture.class_prefix(),
            self.head.class_suffix()
        )
    }

    /// `id2label` (empty when the config has none).
    pub fn id2label(&self) -> &BTreeMap<usize, String> {
        &self.config.id2label
    }

    /// `problem_type`, if the config sets it.
    pub fn problem_type(&self) -> Option<ProblemType> {
        self.config.problem_type
    }

    /// Whether the model reads `token_type_ids`.
    pub fn uses_token_type_ids(&self) -> bool {
        self.architecture.uses_token_type_ids()
    }
}

/// Loads models by their config, like Transformers' `AutoModel*` classes.
#[derive(Debug, Clone, Copy)]
pub struct AutoModel;

impl AutoModel {
    /// Loads the model in folder `dir` (`config.json` + weights), with the head named by
    /// `architectures`, onto `device`.
    ///
    /// The architecture is decided (and remote code refused) before any weight file is opened;
    /// weights are opened under `policy`.
    pub fn load(dir: &Path, policy: &LoadPolicy, device: &Device) -> Result<LoadedModel> {
        AutoModel::load_dir(dir, None, policy, device, WeightOptions::default())
    }

    /// Loads the model in folder `dir` with the given head, whatever `architectures` says
    /// (like `AutoModelForTokenClassification.from_pretrained`).
    pub fn load_with_head(
        dir: &Path,
        head: Head,
        policy: &LoadPolicy,
        device: &Device,
    ) -> Result<LoadedModel> {
        AutoModel::load_dir(dir, Some(head), policy, device, WeightOptions::default())
    }

    /// As [`AutoModel::load`], with the linear layers' weights stored as `options` say.
    pub fn load_with_options(
        dir: &Path,
        policy: &LoadPolicy,
        device: &Device,
        options: WeightOptions,
    ) -> Result<LoadedModel> {
        AutoModel::load_dir(dir, None, policy, device, options)
    }

    /// As [`AutoModel::load_with_head`], with the linear layers' weights stored as `options`
    /// say (`head` `None`: the one `architectures` names).
    pub fn load_with_head_and_options(
        dir: &Path,
        head: Option<Head>,
        policy: &LoadPolicy,
        device: &Device,
        options: WeightOptions,
    ) -> Result<LoadedModel> {
        AutoModel::load_dir(dir, head, policy, device, options)
    }

    fn load_dir(
        dir: &Path,
        head: Option<Head>,
        policy: &LoadPolicy,
        device: &Device,
        options: WeightOptions,
    ) -> Result<LoadedModel> {
        let config = ModelConfig::from_file(&dir.join("config.json"))?;
        AutoModel::resolve(&config, head)?;
        let checkpoint = open_checkpoint(dir, policy)?;
        AutoModel::from_checkpoint_with_options(config, &checkpoint, head, device, options)
    }

    /// Builds the model from a parsed config and an opened checkpoint; `head` as in
    /// [`AutoModel::load_with_head`], or `None` to take it from `architectures`.
    pub fn from_checkpoint(
        config: ModelConfig,
        checkpoint: &Checkpoint,
        head: Option<Head>,
        device: &Device,
    ) -> Result<LoadedModel> {
        AutoModel::from_checkpoint_with_options(
            config,
            checkpoint,
            head,
            device,
            WeightOptions::default(),
        )
    }

    /// As [`AutoModel::from_checkpoint`], with weight storage `options`.
    pub fn from_checkpoint_with_options(
        config: ModelConfig,
        checkpoint: &Checkpoint,
        head: Option<Head>,
        device: &Device,
        options: WeightOptions,
    ) -> Result<LoadedModel> {
        let (architecture, head) = AutoModel::resolve(&config, head)?;
        let class = format!("{}{}", architecture.class_prefix(), head.class_suffix());
        crate::remote_code::announce(&config, &class);
        let root = Weights::new(checkpoint, device).with_options(options);
        let model: Box<dyn TaskModel> = if architecture.is_decoder() {
            // `resolve` allows only the base model for a decoder.
            Box::new(LlamaForCausalLM::load(&root, config.clone())?)
        } else {
            encoder_model(&root, &config, architecture, head)?
        };
        Ok(LoadedModel {
            config,
            architecture,
            head,
            model,
        })
    }

    /// The dispatch alone: which architecture and head `config` would load, without touching
    /// weights. Refuses remote code ([`Error::RemoteCodeRefused`]) and reports unsupported
    /// model types and classes.
    pub fn resolve(config: &ModelConfig, head: Option<Head>) -> Result<(Architecture, Head)> {
        if let Some(port) = crate::remote_code::native_port(config) {
            let architecture = port.architecture;
            let head = match head {
                Some(head) => head,
                None => head_from_architectures(config, architecture)?,
            };
            crate::remote_code::check_native_port(
                config,
                port,
                head.auto_class(),
                &format!("{}{}", port.class_prefix, head.class_suffix()),
            )?;
            if architecture.is_base_model_only() && head != Head::Base {
                return Err(base_model_only(config, architecture, head));
            }
            return Ok((architecture, head));
        }
        let Some(architecture) = Architecture::from_model_type(&config.model_type) else {
            if CAUSAL_LM_MODEL_TYPES.contains(&config.model_type.as_str()) {
                return Err(Error::UnsupportedArchitecture {
                    path: config.path().to_path_buf(),
                    architecture: config.architectures.first().cloned().unwrap_or_default(),
                    model_type: config.model_type.clone(),
                    supported: "a decoder: load it with AutoModelForCausalLM".to_string(),
                });
            }
            let candidates = match head {
                Some(head) => vec![head.auto_class(), "AutoConfig"],
                None => auto_model_classes(config),
            };
            return Err(unknown_model_type(config, &candidates));
        };
        if architecture.is_decoder() {
            return decoder_base_head(config, architecture, head);
        }
        let head = match head {
            Some(head) => head,
            None => head_from_architectures(config, architecture)?,
        };
        if architecture.is_base_model_only() && head != Head::Base {
            return Err(base_model_only(config, architecture, head));
        }
        crate::remote_code::check_known_model_type(
            config,
            head.auto_class(),
            &format!("{}{}", architecture.class_prefix(), head.class_suffix()),
            &format!("{}Config", architecture.class_prefix()),
        )?;
        Ok((architecture, head))
    }
}

/// An encoder architecture with `head`.
fn encoder_model(
    root: &Weights<'_>,
    config: &ModelConfig,
    architecture: Architecture,
    head: Head,
) -> Result<Box<dyn TaskModel>> {
    let flavour = match architecture {
        Architecture::NomicBert
        | Architecture::Gte
        | Architecture::ModernBert
        | Architecture::JinaBert
        | Architecture::MPNet => {
            return native_encoder(root, config, architecture, head);
        }
        Architecture::Bert => Flavour::BERT,
        Architecture::Roberta | Architecture::XlmRoberta => roberta::flavour(config)?,
        Architecture::DistilBert => distilbert::flavour(config)?,
        Architecture::Qwen3 => {
            return Err(Error::UnsupportedArchitecture {
                path: config.path().to_path_buf(),
                architecture: config.architectures.first().cloned().unwrap_or_default(),
                model_type: config.model_type.clone(),
                supported: "a decoder: its base model or AutoModelForCausalLM".to_string(),
            });
        }
    };
    Ok(match head {
        Head::Base => {
            let encoder = flavour.encoder_config(config)?;
            Box::new(BertModel::load_with(
                root,
                config,
                &encoder,
                flavour,
                Pooling::IfPresent,
            )?)
        }
        Head::MaskedLm => Box::new(EncoderForTask::<MaskedLmHead>::load(root, config, flavour)?),
        Head::SequenceClassification => Box::new(
            EncoderForTask::<SequenceClassificationHead>::load(root, config, flavour)?,
        ),
        Head::TokenClassification => Box::new(EncoderForTask::<TokenClassificationHead>::load(
            root, config, flavour,
        )?),
        Head::QuestionAnswering => Box::new(EncoderForTask::<QuestionAnsweringHead>::load(
            root, config, flavour,
        )?),
    })
}

/// A natively ported encoder (a remote-code one, or ModernBERT): the base model only.
fn native_encoder(
    root: &Weights<'_>,
    config: &ModelConfig,
    architecture: Architecture,
    head: Head,
) -> Result<Box<dyn TaskModel>> {
    if head != Head::Base {
        return Err(base_model_only(config, architecture, head));
    }
    Ok(match architecture {
        Architecture::NomicBert => Box::new(crate::nomic_bert::load(root, config)?),
        Architecture::ModernBert => Box::new(modernbert::load(root, config)?),
        Architecture::JinaBert => Box::new(crate::jina_bert::load(root, config)?),
        Architecture::MPNet => Box::new(crate::mpnet::load(root, config)?),
        _ => Box::new(crate::gte::load(root, config)?),
    })
}

/// Loads decoder-only language models by their config, like Transformers'
/// `AutoModelForCausalLM`: `model_type` picks the architecture (one of
/// [`CAUSAL_LM_MODEL_TYPES`]), whatever `architectures` says.
///
/// ```no_run
/// use std::path::Path;
/// use candle_core::{Device, Tensor};
/// use safeformers_models::AutoModelForCausalLM;
/// use safeformers_weights::LoadPolicy;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let model = AutoModelForCausalLM::load(Path::new("gpt2"), &LoadPolicy::default(), &Device::Cpu)?;
/// let mut cache = model.new_cache();
/// let ids = Tensor::new(&[[464u32, 2068, 7586]], &Device::Cpu)?;
/// let positions = Tensor::new(&[[0i64, 1, 2]], &Device::Cpu)?;
/// let mask = Tensor::new(&[[1u32, 1, 1]], &Device::Cpu)?;
/// let logits = model.forward(&ids, &positions, &mask, &mut cache)?; // [1, 3, vocab]
/// # let _ = logits;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct AutoModelForCausalLM;

impl AutoModelForCausalLM {
    /// Loads the model in folder `dir` (`config.json` + weights) onto `device`; or the GGUF file
    /// `dir` names, or the one GGUF file of a folder without `config.json` (see
    /// [`crate::gguf::find_gguf`]), configured from its metadata.
    ///
    /// The architecture is decided (and remote code refused) before any weight file is opened;
    /// weights are opened under `policy` (GGUF is never pickle: the strict reader opens it
    /// under any policy).
    pub fn load(dir: &Path, policy: &LoadPolicy, device: &Device) -> Result<Box<dyn CausalLm>> {
        AutoModelForCausalLM::load_with_options(dir, policy, device, WeightOptions::default())
    }

    /// As [`AutoModelForCausalLM::load`], with the linear layers' weights stored as `options`
    /// say (f16, bf16, or 8-bit quantized at load; compute stays f32).
    pub fn load_with_options(
        dir: &Path,
        policy: &LoadPolicy,
        device: &Device,
        options: WeightOptions,
    ) -> Result<Box<dyn CausalLm>> {
        if let Some(gguf) = crate::gguf::find_gguf(dir)? {
            return Ok(Box::new(crate::gguf::load_causal_lm(
                &gguf, device, options,
            )?));
        }
        let config = ModelConfig::from_file(&dir.join("config.json"))?;
        AutoModelForCausalLM::resolve(&config)?;
        let checkpoint = open_checkpoint(dir, policy)?;
        AutoModelForCausalLM::from_checkpoint_with_options(config, &checkpoint, device, options)
    }

    /// Builds the model from a parsed config and an opened checkpoint.
    pub fn from_checkpoint(
        config: ModelConfig,
        checkpoint: &Checkpoint,
        device: &Device,
    ) -> Result<Box<dyn CausalLm>> {
        AutoModelForCausalLM::from_checkpoint_with_options(
            config,
            checkpoint,
            device,
            WeightOptions::default(),
        )
    }

    /// As [`AutoModelForCausalLM::from_checkpoint`], with weight storage `options`.
    pub fn from_checkpoint_with_options(
        config: ModelConfig,
        checkpoint: &Checkpoint,
        device: &Device,
        options: WeightOptions,
    ) -> Result<Box<dyn CausalLm>> {
        let class = AutoModelForCausalLM::resolve_class(&config)?;
        crate::remote_code::announce(&config, &class);
        let root = Weights::new(checkpoint, device).with_options(options);
        match config.model_type.as_str() {
            "gpt2" => Ok(Box::new(Gpt2LmHeadModel::load(&root, config)?)),
            "llama" | "mistral" | "qwen2" | "gemma" | "phi3" | "qwen3" => {
                Ok(Box::new(LlamaForCausalLM::load(&root, config)?))
            }
            _ => Err(unknown_causal_lm(&config)),
        }
    }

    /// The dispatch alone: whether `config` names a decoder implemented here, without touching
    /// weights. Refuses remote code ([`Error::RemoteCodeRefused`]) and reports unsupported
    /// model types (an encoder's included).
    pub fn resolve(config: &ModelConfig) -> Result<()> {
        AutoModelForCausalLM::resolve_class(config).map(|_| ())
    }

    /// [`AutoModelForCausalLM::resolve`], returning the class that is used.
    fn resolve_class(config: &ModelConfig) -> Result<String> {
        let (class, config_class) = match config.model_type.as_str() {
            "gpt2" => ("GPT2LMHeadModel".to_string(), "GPT2Config".to_string()),
            model_type => match crate::llama::Family::from_model_type(model_type) {
                Some(family) => {
                    let class = family.class_name();
                    let prefix = class.strip_suffix("ForCausalLM").unwrap_or(class);
                    (class.to_string(), format!("{prefix}Config"))
                }
                None => return Err(unknown_causal_lm(config)),
            },
        };
        crate::remote_code::check_known_model_type(
            config,
            "AutoModelForCausalLM",
            &class,
            &config_class,
        )?;
        Ok(class)
    }
}

/// The Transformers class a load of `config` uses (`NomicBertModel`, `LlamaForCausalLM`),
/// without touching weights: the head `architectures` names; the base model for a
/// sentence-transformers folder (`modules.json` beside the config) or when that head is not
/// implemented but the base model is (what the embedding pipelines load); a decoder as
/// [`AutoModelForCausalLM`] unless `architectures` names its base model. The errors of
/// [`AutoModel::resolve`] (a remote-code refusal among them) otherwise.
pub fn class_to_load(config: &ModelConfig) -> Result<String> {
    let sentence_transformers = crate::remote_code::folder_of(config.path())
        .join("modules.json")
        .is_file();
    let decoder = CAUSAL_LM_MODEL_TYPES.contains(&config.model_type.as_str())
        && crate::remote_code::native_port(config).is_none()
        && !config
            .architectures
            .iter()
            .any(|class| class.ends_with("Model") && !class.ends_with("LMHeadModel"));
    if decoder && !sentence_transformers {
        return AutoModelForCausalLM::resolve_class(config);
    }
    let resolved = match AutoModel::resolve(config, None) {
        Ok((architecture, _)) if sentence_transformers => Ok((architecture, Head::Base)),
        Err(error @ Error::UnsupportedArchitecture { .. }) => {
            AutoModel::resolve(config, Some(Head::Base)).map_err(|_| error)
        }
        other => other,
    };
    let (architecture, head) = resolved?;
    Ok(format!(
        "{}{}",
        architecture.class_prefix(),
        head.class_suffix()
    ))
}

/// The error for a config [`AutoModelForCausalLM`] cannot load.
fn unknown_causal_lm(config: &ModelConfig) -> Error {
    if Architecture::from_model_type(&config.model_type).is_some() {
        return Error::UnsupportedArchitecture {
            path: config.path().to_path_buf(),
            architecture: config.architectures.first().cloned().unwrap_or_default(),
            model_type: config.model_type.clone(),
            supported: format!(
                "an encoder has no causal LM here; decoders: {}",
                CAUSAL_LM_MODEL_TYPES.join(", ")
            ),
        };
    }
    unknown_model_type(config, &["AutoModelForCausalLM", "AutoConfig"])
}

/// The Auto classes a caller loading "whatever head `architectures` names" would use: any
/// `AutoModel*` class in `auto_map`, then `AutoConfig`.
fn auto_model_classes(config: &ModelConfig) -> Vec<&str> {
    let mut classes: Vec<&str> = vec!["AutoModel"];
    classes.extend(
        config
            .auto_map
            .keys()
            .map(String::as_str)
            .filter(|class| class.starts_with("AutoModel")),
    );
    classes.push("AutoConfig");
    classes
}

/// The error for a `model_type` we do not implement: a policy refusal when `auto_map` names
/// code for one of `candidates` (the class being loaded, then `AutoConfig`, which Transformers
/// needs first).
fn unknown_model_type(config: &ModelConfig, candidates: &[&str]) -> Error {
    crate::remote_code::refusal_for(config, candidates).unwrap_or_else(|| {
        Error::UnsupportedModelType {
            path: config.path().to_path_buf(),
            model_type: config.model_type.clone(),
        }
    })
}

/// A decoder loads as its base model only (Transformers' `AutoModel` on a `Qwen3ForCausalLM`
/// config gives `Qwen3Model`), whatever class `architectures` names; other heads are
/// unsupported.
fn decoder_base_head(
    config: &ModelConfig,
    architecture: Architecture,
    head: Option<Head>,
) -> Result<(Architecture, Head)> {
    let prefix = architecture.class_prefix();
    let base = match head {
        Some(head) => head == Head::Base,
        None => config.architectures.first().is_none_or(|class| {
            matches!(class.strip_prefix(prefix), Some("Model" | "ForCausalLM"))
        }),
    };
    if base {
        return Ok((architecture, Head::Base));
    }
    Err(Error::UnsupportedArchitecture {
        path: config.path().to_path_buf(),
        architecture: match head {
            Some(head) => format!("{prefix}{}", head.class_suffix()),
            None => config.architectures.first().cloned().unwrap_or_default(),
        },
        model_type: config.model_type.clone(),
        supported: format!(
            "{prefix}Model (hidden states, e.g. for embeddings); its causal LM loads with \
                 AutoModelForCausalLM"
        ),
    })
}

/// The error for a head an architecture implemented only as its base model does not have.
fn base_model_only(config: &ModelConfig, architecture: Architecture, head: Head) -> Error {
    let prefix = architecture.class_prefix();
    Error::UnsupportedArchitecture {
        path: config.path().to_path_buf(),
        architecture: format!("{prefix}{}", head.class_suffix()),
        model_type: config.model_type.clone(),
        supported: format!(
            "{prefix}Model (the base model: hidden states, e.g. for embeddings; load it with \
             AutoModel::load_with_head and Head::Base)"
        ),
    }
}

/// The head named by the first entry of `architectures` (the base model when there is none).
fn head_from_architectures(config: &ModelConfig, architecture: Architecture) -> Result<Head> {
    let Some(class) = config.architectures.first() else {
        return Ok(Head::Base);
    };
    // The architecture's own prefix (`NomicBertModel`, `NewModel`, `JinaBertForMaskedLM`,
    // `MPNetForMaskedLM`), or any BERT-family prefix (an `xlm-roberta` config may name
    // `RobertaForMaskedLM`); the model_type (or the native port) decides the code, the class
    // name only the head.
    let prefixes = [
        architecture.class_prefix(),
        "XLMRoberta",
        "Roberta",
        "DistilBert",
        "Bert",
    ];
    let suffix = prefixes
        .iter()
        .find_map(|prefix| class.strip_prefix(prefix));
    if let Some(head) = suffix.and_then(|suffix| {
        Head::ALL
            .into_iter()
            .find(|head| head.class_suffix() == suffix)
    }) {
        return Ok(head);
    }
    let supported: Vec<String> = Head::ALL
        .iter()
        .map(|head| format!("{}{}", architecture.class_prefix(), head.class_suffix()))
        .collect();
    Err(Error::UnsupportedArchitecture {
        path: config.path().to_path_buf(),
        architecture: class.clone(),
        model_type: config.model_type.clone(),
        supported: format!(
            "{} (or choose a head with AutoModel::load_with_head)",
            supported.join(", ")
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Result<ModelConfig> {
        ModelConfig::from_json_str(text, Path::new("config.json"))
    }

    #[test]
    fn heads_come_from_architectures() -> Result<()> {
        for (text, expected) in [
            (
                r#"{"model_type":"bert","architectures":["BertModel"]}"#,
                (Architecture::Bert, Head::Base),
            ),
            (r#"{"model_type":"bert"}"#, (Architecture::Bert, Head::Base)),
            (
                r#"{"model_type":"xlm-roberta","architectures":["XLMRobertaForTokenClassification"]}"#,
                (Architecture::XlmRoberta, Head::TokenClassification),
            ),
            (
                r#"{"model_type":"distilbert","architectures":["DistilBertForQuestionAnswering"]}"#,
                (Architecture::DistilBert, Head::QuestionAnswering),
            ),
            (
                r#"{"model_type":"roberta","architectures":["RobertaForMaskedLM"]}"#,
                (Architecture::Roberta, Head::MaskedLm),
            ),
        ] {
            assert_eq!(
                AutoModel::resolve(&config(text)?, None)?,
                expected,
                "{text}"
            );
        }
        Ok(())
    }

    #[test]
    fn remote_code_is_a_policy_refusal() -> Result<()> {
        let cfg = config(
            r#"{"model_type":"my-model","architectures":["MyModel"],
                "auto_map":{"AutoConfig":"configuration_x.MyConfig","AutoModel":"modeling_x.MyModel"}}"#,
        )?;
        let error = AutoModel::resolve(&cfg, None)
            .err()
            .ok_or_else(|| cfg.invalid_field("test", "expected a refusal"))?;
        assert!(error.is_policy_refusal());
        let message = error.to_string();
        assert!(
            message.contains("auto_map → modeling_x.MyModel"),
            "{message}"
        );
        assert!(
            message.contains("does not run code from model repos"),
            "{message}"
        );
        Ok(())
    }

    #[test]
    fn known_model_type_with_auto_map_of_the_built_in_class_uses_built_in_code() -> Result<()> {
        let cfg = config(
            r#"{"model_type":"bert","auto_map":{"AutoConfig":"configuration_bert.BertConfig",
                "AutoModel":"modeling_bert.BertModel"}}"#,
        )?;
        assert_eq!(
            AutoModel::resolve(&cfg, None)?,
            (Architecture::Bert, Head::Base)
        );
        let phi3 = config(
            r#"{"model_type":"phi3","auto_map":{"AutoConfig":"configuration_phi3.Phi3Config",
                "AutoModelForCausalLM":"modeling_phi3.Phi3ForCausalLM"}}"#,
        )?;
        AutoModelForCausalLM::resolve(&phi3)?;
        Ok(())
    }

    /// JinaBert's repos say `"model_type": "bert"` but their code is not BERT's: a class of
    /// another name, or any class from another repo, is refused rather than run as BERT (the
    /// JinaBert of jinaai/jina-bert-implementation is a native port: see
    /// `jina_bert_is_found_by_its_auto_map`).
    #[test]
    fn known_model_type_with_auto_map_of_another_class_is_refused() -> Result<()> {
        for auto_map in [
            r#"{"AutoModel":"jinaai/jina-bert-v2-qk-post-norm--modeling_bert.JinaBertModel"}"#,
            r#"{"AutoModel":"modeling_x.MyModel"}"#,
            r#"{"AutoModel":"other/repo--modeling_bert.BertModel"}"#,
            r#"{"AutoConfig":"configuration_x.MyConfig"}"#,
        ] {
            let cfg = config(&format!(r#"{{"model_type":"bert","auto_map":{auto_map}}}"#))?;
            let error = AutoModel::resolve(&cfg, Some(Head::Base)).err();
            assert!(
                matches!(error, Some(Error::RemoteCodeRefused { .. })),
                "{auto_map}: {error:?}"
            );
            assert!(error.is_some_and(|error| error.is_policy_refusal()));
        }
        let llama = config(
            r#"{"model_type":"llama","auto_map":{"AutoModelForCausalLM":"modeling_x.Custom"}}"#,
        )?;
        assert!(matches!(
            AutoModelForCausalLM::resolve(&llama),
            Err(Error::RemoteCodeRefused { .. })
        ));
        Ok(())
    }

    /// jina-embeddings-v2's config (`model_type` `bert`, code in jinaai/jina-bert-implementation)
    /// loads the native JinaBert port with no flag; the same classes from another code repo
    /// (jina-bert-v2-qk-post-norm computes something else under those names) are refused.
    #[test]
    fn jina_bert_is_found_by_its_auto_map() -> Result<()> {
        let fixture = safeformers_testkit::repo_fixture("encoders/jina-bert-geglu/config.json");
        let cfg = ModelConfig::from_file(&fixture)?;
        assert_eq!(cfg.model_type, "bert");
        assert_eq!(
            AutoModel::resolve(&cfg, Some(Head::Base))?,
            (Architecture::JinaBert, Head::Base)
        );
        // Without a head, `architectures` names the masked-LM class, whose head is not
        // implemented: refused before any weight is opened.
        assert!(matches!(
            AutoModel::resolve(&cfg, None),
            Err(Error::UnsupportedArchitecture { architecture, .. }) if architecture == "JinaBertForMaskedLM"
        ));
        let notice = crate::remote_code::notice(&cfg, "JinaBertModel").unwrap_or_default();
        assert_eq!(
            notice,
            "`configuration_bert.py` in repo jinaai/jina-bert-implementation (not fetched), \
             `modeling_bert.py` in repo jinaai/jina-bert-implementation (not fetched) are not \
             run; safeformers' JinaBertModel is used"
        );
        let other_repo = r#"{"model_type":"bert","position_embedding_type":"alibi",
            "auto_map":{"AutoConfig":"jinaai/jina-bert-v2-qk-post-norm--configuration_bert.JinaBertConfig",
                        "AutoModel":"jinaai/jina-bert-v2-qk-post-norm--modeling_bert.JinaBertModel"}}"#;
        // The AutoModel entry of the port's repo, but AutoConfig from another: refused too.
        let mixed = r#"{"model_type":"bert",
            "auto_map":{"AutoConfig":"other/repo--configuration_bert.JinaBertConfig",
                        "AutoModel":"jinaai/jina-bert-implementation--modeling_bert.JinaBertModel"}}"#;
        for text in [other_repo, mixed] {
            let error = AutoModel::resolve(&config(text)?, Some(Head::Base)).err();
            assert!(
                matches!(&error, Some(Error::RemoteCodeRefused { .. })),
                "{text}: {error:?}"
            );
        }
        Ok(())
    }

    #[test]
    fn mpnet_is_a_model_type() -> Result<()> {
        for text in [
            r#"{"model_type":"mpnet","architectures":["MPNetModel"]}"#,
            r#"{"model_type":"mpnet"}"#,
        ] {
            assert_eq!(
                AutoModel::resolve(&config(text)?, None)?,
                (Architecture::MPNet, Head::Base),
                "{text}"
            );
        }
        // all-mpnet-base-v2 names the masked-LM class: its base model loads with Head::Base.
        let masked = config(r#"{"model_type":"mpnet","architectures":["MPNetForMaskedLM"]}"#)?;
        assert!(matches!(
            AutoModel::resolve(&masked, None),
            Err(Error::UnsupportedArchitecture { .. })
        ));
        assert_eq!(
            AutoModel::resolve(&masked, Some(Head::Base))?,
            (Architecture::MPNet, Head::Base)
        );
        assert!(!Architecture::MPNet.uses_token_type_ids());
        assert!(Architecture::JinaBert.uses_token_type_ids());
        Ok(())
    }

    #[test]
    fn unknown_model_type_lists_supported() -> Result<()> {
        let cfg = config(r#"{"model_type":"mamba"}"#)?;
        let error = AutoModel::resolve(&cfg, None).err();
        assert!(matches!(error, Some(Error::UnsupportedModelType { .. })));
        let message = error.map(|error| error.to_string()).unwrap_or_default();
        assert!(
            message.contains("bert, roberta, xlm-roberta, distilbert, gpt2"),
            "{message}"
        );
        Ok(())
    }

    #[test]
    fn causal_lm_dispatch_refuses_remote_code_and_encoders() -> Result<()> {
        AutoModelForCausalLM::resolve(&config(
            r#"{"model_type":"gpt2","architectures":["GPT2LMHeadModel"]}"#,
        )?)?;
        // A decoder type we do not implement, with code for AutoModelForCausalLM: refused as
        // policy, naming the code reference.
        let cfg = config(
            r#"{"model_type":"my-decoder","architectures":["MyDecoderForCausalLM"],
                "auto_map":{"AutoConfig":"configuration_x.MyConfig",
                            "AutoModelForCausalLM":"modeling_x.MyDecoderForCausalLM"}}"#,
        )?;
        let error = AutoModelForCausalLM::resolve(&cfg)
            .err()
            .ok_or_else(|| cfg.invalid_field("test", "expected a refusal"))?;
        assert!(error.is_policy_refusal(), "{error}");
        assert!(
            error
                .to_string()
                .contains("auto_map → modeling_x.MyDecoderForCausalLM for AutoModelForCausalLM"),
            "{error}"
        );
        // Only AutoConfig in auto_map is still code that would run.
        let cfg = config(r#"{"model_type":"my-decoder","auto_map":{"AutoConfig":"c.MyConfig"}}"#)?;
        assert!(matches!(
            AutoModelForCausalLM::resolve(&cfg),
            Err(Error::RemoteCodeRefused { .. })
        ));
        // Without auto_map: unsupported, not a refusal.
        let cfg = config(r#"{"model_type":"my-decoder"}"#)?;
        assert!(matches!(
            AutoModelForCausalLM::resolve(&cfg),
            Err(Error::UnsupportedModelType { .. })
        ));
        // An encoder is no causal LM, and a decoder is no encoder.
        let cfg = config(r#"{"model_type":"bert"}"#)?;
        assert!(matches!(
            AutoModelForCausalLM::resolve(&cfg),
            Err(Error::UnsupportedArchitecture { .. })
        ));
        let cfg = config(r#"{"model_type":"gpt2"}"#)?;
        assert!(matches!(
            AutoModel::resolve(&cfg, None),
            Err(Error::UnsupportedArchitecture { .. })
        ));
        Ok(())
    }

    #[test]
    fn qwen3_loads_as_its_base_model() -> Result<()> {
        for text in [
            r#"{"model_type":"qwen3","architectures":["Qwen3ForCausalLM"]}"#,
            r#"{"model_type":"qwen3","architectures":["Qwen3Model"]}"#,
            r#"{"model_type":"qwen3"}"#,
        ] {
            assert_eq!(
                AutoModel::resolve(&config(text)?, None)?,
                (Architecture::Qwen3, Head::Base),
                "{text}"
            );
        }
        let cfg = config(r#"{"model_type":"qwen3","architectures":["Qwen3ForCausalLM"]}"#)?;
        assert!(matches!(
            AutoModel::resolve(&cfg, Some(Head::MaskedLm)),
            Err(Error::UnsupportedArchitecture { .. })
        ));
        AutoModelForCausalLM::resolve(&cfg)?;
        let cfg =
            config(r#"{"model_type":"qwen3","architectures":["Qwen3ForSequenceClassification"]}"#)?;
        assert!(matches!(
            AutoModel::resolve(&cfg, None),
            Err(Error::UnsupportedArchitecture { .. })
        ));
        Ok(())
    }

    /// ModernBERT is in Transformers itself: its `model_type` loads the base model, from a
    /// base-model or a head-model config when the base model is asked for; its heads are not
    /// implemented and are refused before any weight is read.
    #[test]
    fn modernbert_loads_as_its_base_model_only() -> Result<()> {
        for text in [
            r#"{"model_type":"modernbert","architectures":["ModernBertModel"]}"#,
            r#"{"model_type":"modernbert"}"#,
            r#"{"model_type":"modernbert","auto_map":{"AutoModel":"modeling_modernbert.ModernBertModel"}}"#,
        ] {
            assert_eq!(
                AutoModel::resolve(&config(text)?, None)?,
                (Architecture::ModernBert, Head::Base),
                "{text}"
            );
        }
        let mlm =
            config(r#"{"model_type":"modernbert","architectures":["ModernBertForMaskedLM"]}"#)?;
        assert_eq!(
            AutoModel::resolve(&mlm, Some(Head::Base))?,
            (Architecture::ModernBert, Head::Base)
        );
        for head in [None, Some(Head::SequenceClassification)] {
            let error = AutoModel::resolve(&mlm, head).err();
            assert!(
                matches!(&error, Some(Error::UnsupportedArchitecture { supported, .. })
                    if supported.contains("ModernBertModel")),
                "{head:?}: {error:?}"
            );
        }
        assert!(!Architecture::ModernBert.uses_token_type_ids());
        Ok(())
    }

    #[test]
    fn unknown_head_is_unsupported_architecture() -> Result<()> {
        let cfg = config(r#"{"model_type":"bert","architectures":["BertLMHeadModel"]}"#)?;
        assert!(matches!(
            AutoModel::resolve(&cfg, None),
            Err(Error::UnsupportedArchitecture { .. })
        ));
        assert_eq!(
            AutoModel::resolve(&cfg, Some(Head::MaskedLm))?,
            (Architecture::Bert, Head::MaskedLm)
        );
        Ok(())
    }

    fn fixture_config(folder: &str) -> Result<ModelConfig> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/encoders")
            .join(folder)
            .join("config.json");
        ModelConfig::from_file(&path)
    }

    /// The published NomicBert and GTE configs name their code in another repo
    /// (`nomic-ai/nomic-bert-2048--…`, `Alibaba-NLP/new-impl--…`): the native ports load them
    /// with no flag, and the load names the code that is not run.
    #[test]
    fn nomic_bert_and_gte_resolve_to_their_native_ports() -> Result<()> {
        for (folder, architecture, class, file) in [
            (
                "nomic-bert",
                Architecture::NomicBert,
                "NomicBertModel",
                "`modeling_hf_nomic_bert.py` in repo nomic-ai/nomic-bert-2048 (not fetched)",
            ),
            (
                "gte-new",
                Architecture::Gte,
                "NewModel",
                "`modeling.py` in repo Alibaba-NLP/new-impl (not fetched)",
            ),
        ] {
            let cfg = fixture_config(folder)?;
            assert_eq!(
                AutoModel::resolve(&cfg, None)?,
                (architecture, Head::Base),
                "{folder}"
            );
            let notice = crate::remote_code::notice(&cfg, class).unwrap_or_default();
            assert!(notice.contains(file), "{notice}");
            assert!(
                notice.ends_with(&format!("not run; safeformers' {class} is used")),
                "{notice}"
            );
        }
        // Without auto_map, the model_type alone picks the port.
        let cfg = config(r#"{"model_type":"nomic_bert","architectures":["NomicBertModel"]}"#)?;
        assert_eq!(
            AutoModel::resolve(&cfg, None)?,
            (Architecture::NomicBert, Head::Base)
        );
        let cfg = config(r#"{"model_type":"new","architectures":["NewModel"]}"#)?;
        assert_eq!(
            AutoModel::resolve(&cfg, None)?,
            (Architecture::Gte, Head::Base)
        );
        Ok(())
    }

    /// The same class names from another code repo may compute something else: refused.
    #[test]
    fn nomic_bert_and_gte_classes_from_another_repo_are_refused() -> Result<()> {
        for (model_type, auto_map) in [
            (
                "nomic_bert",
                r#"{"AutoModel":"someone/nomic-fork--modeling_hf_nomic_bert.NomicBertModel"}"#,
            ),
            (
                "nomic_bert",
                r#"{"AutoConfig":"someone/nomic-fork--configuration_hf_nomic_bert.NomicBertConfig",
                    "AutoModel":"nomic-ai/nomic-bert-2048--modeling_hf_nomic_bert.NomicBertModel"}"#,
            ),
            (
                "new",
                r#"{"AutoModel":"someone/new-impl-fork--modeling.NewModel"}"#,
            ),
            (
                "new",
                r#"{"AutoModel":"Alibaba-NLP/new-impl--modeling.NewModelWithLognScale"}"#,
            ),
            // The port's own classes under a `model_type` its configs never say.
            (
                "bert",
                r#"{"AutoModel":"nomic-ai/nomic-bert-2048--modeling_hf_nomic_bert.NomicBertModel"}"#,
            ),
            ("roberta", r#"{"AutoModel":"modeling.NewModel"}"#),
        ] {
            let cfg = config(&format!(
                r#"{{"model_type":"{model_type}","auto_map":{auto_map}}}"#
            ))?;
            let error = AutoModel::resolve(&cfg, Some(Head::Base)).err();
            assert!(
                matches!(error, Some(Error::RemoteCodeRefused { .. })),
                "{auto_map}: {error:?}"
            );
        }
        Ok(())
    }
}
