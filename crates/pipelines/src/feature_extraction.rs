//! `feature-extraction`: token embeddings as Transformers' `FeatureExtractionPipeline` gives
//! them, or sentence embeddings as sentence-transformers' `SentenceTransformer.encode` gives
//! them when the folder is a sentence-transformers one.
//!
//! A sentence-transformers folder has a `modules.json` listing its modules by Python class name.
//! Those names are identifiers only: we implement `sentence_transformers.models.Transformer`
//! (the encoder, with `sentence_bert_config.json`'s `max_seq_length` and `do_lower_case`; a
//! BERT-family encoder or a Qwen3 decoder), `.Pooling` (`1_Pooling/config.json`: cls, max, mean,
//! mean-sqrt-len and last-token modes, concatenated in sentence-transformers' order), `.Dense`
//! (a linear layer and a named activation, read as data: [`crate::sentence_modules::Dense`]) and
//! `.Normalize` (L2), and refuse any other name, because sentence-transformers would import and
//! run it. `config_sentence_transformers.json`'s `prompts` and `default_prompt_name` choose a
//! text prepended to every input ([`crate::sentence_modules::Prompts`]), and `truncate_dim`
//! (Matryoshka) keeps the first dimensions of the sentence embedding after the modules, as
//! `SentenceTransformer(truncate_dim=...)` does.

use std::path::{Component, Path, PathBuf};

use rayon::prelude::*;
use safeformers_models::Head;
use safeformers_tokenize::{EncodeOptions, Encoding, Encodings, Padding};
use serde::{Deserialize, Serialize};

use crate::encoder::{Encoder, LoadOptions, length_sorted_batches, read_json};
use crate::error::{PipelineError, Result};
use crate::sentence_modules::{Dense, Prompts};

/// The default number of inputs per forward pass (sentence-transformers' and our CLI's).
pub const DEFAULT_BATCH_SIZE: usize = 32;

/// Batch sizes up to this run several batches at once (see [`FeatureExtraction::run`]).
pub const CONCURRENT_BATCH_SIZE: usize = 4;

/// One way of pooling token embeddings into one vector. When several are configured their
/// results are concatenated in the order of this enum (sentence-transformers' order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PoolingMode {
    /// The first token's embedding (`[CLS]`).
    Cls,
    /// The element-wise maximum over real tokens.
    Max,
    /// The mean over real tokens.
    Mean,
    /// The sum over real tokens divided by the square root of their number.
    MeanSqrtLen,
    /// The last real token's embedding (decoder embedders such as Qwen3-Embedding; whichever
    /// side the padding is on).
    LastToken,
}

impl PoolingMode {
    /// Parses the CLI / sentence-transformers name (`cls`, `max`, `mean`, `mean_sqrt_len`,
    /// `lasttoken`).
    pub fn parse(name: &str) -> Option<PoolingMode> {
        Some(match name {
            "cls" => PoolingMode::Cls,
            "max" => PoolingMode::Max,
            "mean" => PoolingMode::Mean,
            "mean_sqrt_len" | "mean_sqrt_len_tokens" => PoolingMode::MeanSqrtLen,
            "lasttoken" | "last_token" => PoolingMode::LastToken,
            _ => return None,
        })
    }
}

/// How a [`FeatureExtraction`] pipeline is loaded and what it returns.
#[derive(Debug, Clone)]
pub struct FeatureExtractionOptions {
    /// Policy and device.
    pub load: LoadOptions,
    /// Pooling to apply instead of the folder's: `None` keeps the folder's (sentence embeddings
    /// for a sentence-transformers folder, token embeddings otherwise); `Some(empty)` gives token
    /// embeddings; otherwise these modes (sorted into sentence-transformers' order).
    pub pooling: Option<Vec<PoolingMode>>,
    /// L2-normalize every output vector, whatever the folder says (after `truncate_dim`, as
    /// `encode(normalize_embeddings=True)`).
    pub normalize: bool,
    /// Inputs per forward pass (at least 1).
    pub batch_size: usize,
    /// The prompt named in the folder's `config_sentence_transformers.json` to prepend
    /// (`encode(prompt_name=...)`); `None`: its `default_prompt_name`, if any.
    pub prompt_name: Option<String>,
    /// A prompt text to prepend instead of any named one (`encode(prompt=...)`).
    pub prompt: Option<String>,
    /// Keep only the first `truncate_dim` dimensions of each sentence embedding (Matryoshka
    /// models), after the folder's modules.
    pub truncate_dim: Option<usize>,
}

impl Default for FeatureExtractionOptions {
    fn default() -> Self {
        FeatureExtractionOptions {
            load: LoadOptions::default(),
            pooling: None,
            normalize: false,
            batch_size: DEFAULT_BATCH_SIZE,
            prompt_name: None,
            prompt: None,
            truncate_dim: None,
        }
    }
}

/// What a [`FeatureExtraction`] pipeline returns, in input order.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Features {
    /// One vector per input (pooled: sentence embeddings).
    Sentences(Vec<Vec<f32>>),
    /// Per input, one vector per token (`[seq, hidden]`, special tokens included, padding not).
    Tokens(Vec<Vec<Vec<f32>>>),
}

/// The sentence-transformers modules of a folder that has `modules.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct SentenceTransformerConfig {
    /// The folder of the `Transformer` module (the model folder itself for path `""`).
    pub transformer_dir: PathBuf,
    /// `max_seq_length` from `sentence_bert_config.json`, if set.
    pub max_seq_length: Option<usize>,
    /// `do_lower_case` from `sentence_bert_config.json`: inputs are lowercased first.
    pub do_lower_case: bool,
    /// The `Pooling` module's modes, in sentence-transformers' order.
    pub pooling: Vec<PoolingMode>,
    /// The `Pooling` module's `include_prompt` (default true): whether prompt tokens are pooled.
    pub include_prompt: bool,
    /// The folders of the `Dense` modules after the pooling, in order.
    pub dense_dirs: Vec<PathBuf>,
    /// Whether a `Normalize` module follows.
    pub normalize: bool,
    /// `config_sentence_transformers.json`'s prompts.
    pub prompts: Prompts,
}

#[derive(Debug, Deserialize)]
struct ModuleEntry {
    #[serde(default)]
    path: String,
    #[serde(rename = "type")]
    module_type: String,
}

#[derive(Debug, Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
    #[serde(default)]
    pooling_mode_weightedmean_tokens: bool,
    #[serde(default)]
    pooling_mode_lasttoken: bool,
    #[serde(default = "default_true")]
    include_prompt: bool,
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Default, Deserialize)]
struct SentenceBertConfig {
    #[serde(default)]
    max_seq_length: Option<usize>,
    #[serde(default)]
    do_lower_case: bool,
}

/// The prefix of the module types sentence-transformers itself defines.
const SENTENCE_TRANSFORMERS_PACKAGE: &str = "sentence_transformers.";
const TRANSFORMER: &str = "sentence_transformers.models.Transformer";
const POOLING: &str = "sentence_transformers.models.Pooling";
const NORMALIZE: &str = "sentence_transformers.models.Normalize";
const DENSE: &str = "sentence_transformers.models.Dense";

impl SentenceTransformerConfig {
    /// Reads `dir/modules.json` and the files of its modules; `Ok(None)` when there is no
    /// `modules.json` (a plain Transformers folder).
    ///
    /// The modules must be a `Transformer`, then a `Pooling`, then any number of `Dense`, then
    /// optionally a `Normalize`; module paths must stay inside `dir`.
    pub fn from_dir(dir: &Path) -> Result<Option<SentenceTransformerConfig>> {
        let modules_path = dir.join("modules.json");
        if !modules_path.exists() {
            return Ok(None);
        }
        let modules: Vec<ModuleEntry> = read_json(&modules_path)?;
        let invalid = |reason: String| PipelineError::InvalidModules {
            path: modules_path.clone(),
            reason,
        };
        for module in &modules {
            let module_type = module.module_type.as_str();
            if [TRANSFORMER, POOLING, DENSE, NORMALIZE].contains(&module_type) {
                continue;
            }
            let path = modules_path.clone();
            let module_type = module_type.to_string();
            // sentence-transformers imports any other dotted name as Python code: its own
            // modules from the installed package, anything else from wherever it is found.
            return Err(if module_type.starts_with(SENTENCE_TRANSFORMERS_PACKAGE) {
                PipelineError::UnsupportedModule { path, module_type }
            } else {
                PipelineError::CustomModule { path, module_type }
            });
        }
        let types: Vec<&str> = modules.iter().map(|m| m.module_type.as_str()).collect();
        let normalize = types.last() == Some(&NORMALIZE);
        let dense_end = types.len() - usize::from(normalize);
        let (transformer, pooling, dense) = match (modules.as_slice(), types.as_slice()) {
            ([t, p, ..], [TRANSFORMER, POOLING, ..])
                if types
                    .get(2..dense_end)
                    .is_some_and(|middle| middle.iter().all(|kind| *kind == DENSE)) =>
            {
                (t, p, modules.get(2..dense_end).unwrap_or_default())
            }
            _ => {
                return Err(invalid(format!(
                    "modules {types:?}: expected Transformer, Pooling, any Dense and an optional \
                     Normalize, in that order"
                )));
            }
        };
        let inside = |module: &ModuleEntry| {
            module_dir(dir, &module.path).ok_or_else(|| {
                invalid(format!(
                    "module path `{}` leaves the model folder",
                    module.path
                ))
            })
        };
        let transformer_dir = inside(transformer)?;
        let pooling_dir = inside(pooling)?;
        let dense_dirs = dense.iter().map(inside).collect::<Result<Vec<_>>>()?;

        let bert_config_path = transformer_dir.join("sentence_bert_config.json");
        let bert_config: SentenceBertConfig = if bert_config_path.exists() {
            read_json(&bert_config_path)?
        } else {
            SentenceBertConfig::default()
        };

        let pooling_path = pooling_dir.join("config.json");
        let pooling_config: PoolingConfig = read_json(&pooling_path)?;
        if pooling_config.pooling_mode_weightedmean_tokens {
            return Err(PipelineError::InvalidModules {
                path: pooling_path,
                reason: "`pooling_mode_weightedmean_tokens` is not implemented (cls, max, mean, \
                         mean_sqrt_len and lasttoken are)"
                    .into(),
            });
        }
        let pooling: Vec<PoolingMode> = [
            (pooling_config.pooling_mode_cls_token, PoolingMode::Cls),
            (pooling_config.pooling_mode_max_tokens, PoolingMode::Max),
            (pooling_config.pooling_mode_mean_tokens, PoolingMode::Mean),
            (
                pooling_config.pooling_mode_mean_sqrt_len_tokens,
                PoolingMode::MeanSqrtLen,
            ),
            (
                pooling_config.pooling_mode_lasttoken,
                PoolingMode::LastToken,
            ),
        ]
        .into_iter()
        .filter_map(|(on, mode)| on.then_some(mode))
        .collect();
        if pooling.is_empty() {
            return Err(PipelineError::InvalidModules {
                path: pooling_path,
                reason: "no pooling mode is enabled".into(),
            });
        }
        Ok(Some(SentenceTransformerConfig {
            transformer_dir,
            max_seq_length: bert_config.max_seq_length,
            do_lower_case: bert_config.do_lower_case,
            pooling,
            include_prompt: pooling_config.include_prompt,
            dense_dirs,
            normalize,
            prompts: Prompts::from_dir(dir)?,
        }))
    }
}

/// `dir/relative` when `relative` is a plain relative path (no `..`, no root, no prefix).
fn module_dir(dir: &Path, relative: &str) -> Option<PathBuf> {
    let relative = Path::new(relative);
    relative
        .components()
        .all(|component| matches!(component, Component::Normal(_) | Component::CurDir))
        .then(|| dir.join(relative))
}

/// The feature-extraction pipeline.
///
/// ```no_run
/// use std::path::Path;
/// use safeformers_pipelines::{FeatureExtraction, FeatureExtractionOptions, cosine_similarity};
///
/// # fn main() -> Result<(), safeformers_pipelines::PipelineError> {
/// let pipeline = FeatureExtraction::from_dir(
///     Path::new("all-MiniLM-L6-v2"),
///     &FeatureExtractionOptions::default(),
/// )?;
/// let embeddings = pipeline.embed(&["A man is eating food.", "A man is eating bread."])?;
/// if let [a, b] = embeddings.as_slice() {
///     println!("{}", cosine_similarity(a, b));
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct FeatureExtraction {
    encoder: Encoder,
    sentence_transformer: Option<SentenceTransformerConfig>,
    pooling: Vec<PoolingMode>,
    /// The folder's `Dense` modules (applied to pooled vectors only).
    dense: Vec<Dense>,
    /// The folder's `Normalize` module (pooled vectors only, before `truncate_dim`).
    folder_normalize: bool,
    /// The caller's normalization of every output vector, last.
    normalize: bool,
    truncate_dim: Option<usize>,
    /// The prompt text prepended to every input.
    prompt: Option<String>,
    max_length: usize,
    batch_size: usize,
}

impl FeatureExtraction {
    /// Loads the pipeline from a model folder (a sentence-transformers one or a plain
    /// Transformers one).
    pub fn from_dir(dir: &Path, options: &FeatureExtractionOptions) -> Result<FeatureExtraction> {
        let sentence_transformer = SentenceTransformerConfig::from_dir(dir)?;
        let model_dir = sentence_transformer
            .as_ref()
            .map_or(dir, |config| config.transformer_dir.as_path());
        let encoder = Encoder::load(model_dir, Head::Base, &options.load)?;
        let mut pooling = match (&options.pooling, &sentence_transformer) {
            (Some(modes), _) => modes.clone(),
            (None, Some(config)) => config.pooling.clone(),
            (None, None) => Vec::new(),
        };
        pooling.sort();
        pooling.dedup();
        // The folder's `Dense` and `Normalize` modules act on the sentence embedding only:
        // token embeddings (`encode(output_value="token_embeddings")`) come out as the model
        // gives them. `options.normalize` normalises whatever is returned.
        let folder = sentence_transformer
            .as_ref()
            .filter(|_| !pooling.is_empty());
        let folder_normalize = folder.is_some_and(|config| config.normalize);
        let dense = match folder {
            Some(config) => config
                .dense_dirs
                .iter()
                .map(|dir| Dense::load(dir, &options.load.policy, &options.load.device))
                .collect::<Result<Vec<_>>>()?,
            None => Vec::new(),
        };
        let prompt = resolve_prompt(dir, sentence_transformer.as_ref(), options)?;
        if options.truncate_dim == Some(0) {
            return Err(PipelineError::InvalidInput(
                "truncate_dim must be at least 1".into(),
            ));
        }
        if options.truncate_dim.is_some() && pooling.is_empty() {
            return Err(PipelineError::InvalidInput(
                "truncate_dim applies to sentence embeddings: choose a pooling".into(),
            ));
        }
        let max_length = sentence_transformer
            .as_ref()
            .and_then(|config| config.max_seq_length)
            .map_or(encoder.max_length(), |n| n.min(encoder.max_length()))
            .max(2);
        Ok(FeatureExtraction {
            encoder,
            sentence_transformer,
            pooling,
            dense,
            folder_normalize,
            normalize: options.normalize,
            truncate_dim: options.truncate_dim,
            prompt,
            max_length,
            batch_size: options.batch_size.max(1),
        })
    }

    /// The tokenizer and model.
    pub fn encoder(&self) -> &Encoder {
        &self.encoder
    }

    /// The sentence-transformers configuration, when the folder is a sentence-transformers one.
    pub fn sentence_transformer(&self) -> Option<&SentenceTransformerConfig> {
        self.sentence_transformer.as_ref()
    }

    /// The pooling applied (empty: token embeddings are returned).
    pub fn pooling(&self) -> &[PoolingMode] {
        &self.pooling
    }

    /// Whether output vectors are L2-normalized (last: by the caller's option; a folder's
    /// `Normalize` module is followed by `truncate_dim`).
    pub fn normalizes(&self) -> bool {
        self.normalize || (self.folder_normalize && self.truncate_dim.is_none())
    }

    /// The prompt text prepended to every input, if any.
    pub fn prompt(&self) -> Option<&str> {
        self.prompt.as_deref()
    }

    /// The folder's `Dense` modules applied to sentence embeddings.
    pub fn dense(&self) -> &[Dense] {
        &self.dense
    }

    /// Tokens per input at most (special tokens included); longer inputs are truncated.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// How inputs are tokenized: padded to the longest of the batch, truncated to
    /// [`FeatureExtraction::max_length`].
    pub fn encode_options(&self) -> EncodeOptions {
        EncodeOptions {
            padding: Padding::Longest,
            truncation: Some(self.max_length),
            ..EncodeOptions::default()
        }
    }

    /// Tokenizes one batch as the pipeline does (sentence-transformers strips each input, and
    /// lowercases it under `do_lower_case`).
    pub fn tokenize<S: AsRef<str>>(&self, inputs: &[S]) -> Result<Encodings> {
        self.tokenize_with_prompt(inputs, None)
    }

    /// [`FeatureExtraction::tokenize`] with `prompt` instead of the pipeline's own, when given.
    fn tokenize_with_prompt<S: AsRef<str>>(
        &self,
        inputs: &[S],
        prompt: Option<&str>,
    ) -> Result<Encodings> {
        let texts: Vec<String> = inputs
            .iter()
            .map(|s| self.prepared_text(s.as_ref(), prompt))
            .collect();
        Ok(self
            .encoder
            .tokenizer()
            .encode_batch(&texts, &self.encode_options())?)
    }

    /// The text of the folder's prompt named `name` (`config_sentence_transformers.json`'s
    /// `prompts`); an error naming the known ones otherwise.
    pub fn named_prompt(&self, name: &str) -> Result<String> {
        let prompts = self
            .sentence_transformer
            .as_ref()
            .map(|config| &config.prompts);
        match prompts {
            Some(prompts) => Ok(prompts
                .resolve(None, Some(name), self.encoder.dir())?
                .unwrap_or_default()),
            None => Err(PipelineError::InvalidInput(format!(
                "{}: no prompt named `{name}`: the folder has no \
                 config_sentence_transformers.json prompts",
                self.encoder.dir().display()
            ))),
        }
    }

    /// The text the tokenizer sees for `text`: `prompt` (else the pipeline's prompt)
    /// prepended, then (sentence-transformers) stripped and lowercased under `do_lower_case`.
    pub fn prepared_text(&self, text: &str, prompt: Option<&str>) -> String {
        let text = match prompt.or(self.prompt.as_deref()) {
            Some(prompt) => format!("{prompt}{text}"),
            None => text.to_string(),
        };
        match &self.sentence_transformer {
            Some(config) if config.do_lower_case => text.trim().to_lowercase(),
            Some(_) => text.trim().to_string(),
            None => text,
        }
    }

    /// Runs the pipeline on `inputs`, in batches of inputs of similar length; results are in
    /// input order.
    ///
    /// Models with an unpadded path ([`safeformers_models::TaskModel::token_states`]: the
    /// BERT family) compute each input's tokens only, never padding rows; others run padded
    /// batches.
    ///
    /// Batches of at most [`CONCURRENT_BATCH_SIZE`] inputs run concurrently on the calling
    /// rayon pool, one per thread (grouping them into one pass to share the weights was
    /// measured slower: the threads then synchronise at every layer; the kernels still hand
    /// halves of a product to a thread that runs out of batches); larger batches
    /// run one after the other, each using every thread.
    pub fn run<S: AsRef<str> + Sync>(&self, inputs: &[S]) -> Result<Features> {
        self.run_with_prompt(inputs, None)
    }

    /// [`FeatureExtraction::run`] with `prompt` prepended instead of the pipeline's own prompt
    /// when given (TEI's per-request `prompt_name`; `Some("")`: no prompt).
    pub fn run_with_prompt<S: AsRef<str> + Sync>(
        &self,
        inputs: &[S],
        prompt: Option<&str>,
    ) -> Result<Features> {
        let lengths: Vec<usize> = inputs.iter().map(|s| s.as_ref().chars().count()).collect();
        self.run_batches(&lengths, |batch| {
            let texts: Vec<&str> = batch
                .iter()
                .filter_map(|&i| inputs.get(i).map(AsRef::as_ref))
                .collect();
            Ok(self.tokenize_with_prompt(&texts, prompt)?.rows)
        })
    }

    /// As [`FeatureExtraction::run`], on inputs that are already token ids (each row used as
    /// given: no special tokens added, nothing stripped). A row that is empty, longer than
    /// [`FeatureExtraction::max_length`] or holds an id outside the vocabulary is refused,
    /// naming the row.
    pub fn run_token_ids(&self, rows: &[Vec<u32>]) -> Result<Features> {
        let vocab = self.encoder.tokenizer().vocab_size();
        for (index, row) in rows.iter().enumerate() {
            if row.is_empty() || row.len() > self.max_length {
                return Err(PipelineError::InvalidInput(format!(
                    "token row {index} holds {} tokens: between 1 and {} are allowed",
                    row.len(),
                    self.max_length
                )));
            }
            if let Some(id) = row.iter().find(|&&id| id as usize >= vocab) {
                return Err(PipelineError::InvalidInput(format!(
                    "token row {index} holds id {id}, outside the vocabulary of {vocab}"
                )));
            }
        }
        let pad = self.encoder.tokenizer().pad_token_id().unwrap_or(0);
        let lengths: Vec<usize> = rows.iter().map(Vec::len).collect();
        self.run_batches(&lengths, |batch| {
            let longest = batch
                .iter()
                .filter_map(|&i| lengths.get(i))
                .copied()
                .max()
                .unwrap_or(0);
            Ok(batch
                .iter()
                .filter_map(|&i| rows.get(i))
                .map(|ids| right_padded_row(ids, longest, pad))
                .collect())
        })
    }

    /// Runs the inputs in batches of similar `lengths`, each batch's rows made by `encode`
    /// (input indices to rows of one length, right-padded); outputs in input order.
    fn run_batches(
        &self,
        lengths: &[usize],
        encode: impl Fn(&[usize]) -> Result<Vec<Encoding>> + Sync,
    ) -> Result<Features> {
        let batches = length_sorted_batches(lengths, self.batch_size);
        let run = |batch: &Vec<usize>| self.run_batch(batch, encode(batch)?);
        let results: Vec<Vec<(usize, Vec<Vec<f32>>)>> = if self.batch_size > CONCURRENT_BATCH_SIZE {
            batches.iter().map(run).collect::<Result<_>>()?
        } else {
            batches.par_iter().map(run).collect::<Result<_>>()?
        };
        let mut outputs: Vec<Vec<Vec<f32>>> = vec![Vec::new(); lengths.len()];
        for (index, output) in results.into_iter().flatten() {
            if let Some(slot) = outputs.get_mut(index) {
                *slot = output;
            }
        }
        Ok(if self.pooling.is_empty() {
            Features::Tokens(outputs)
        } else {
            Features::Sentences(
                outputs
                    .into_iter()
                    .map(|mut vector| vector.pop().unwrap_or_default())
                    .collect(),
            )
        })
    }

    /// One batch: `(input index, output)` per input, the output being the real tokens' states,
    /// or (with pooling) a single pooled vector.
    fn run_batch(
        &self,
        batch: &[usize],
        encodings: Vec<Encoding>,
    ) -> Result<Vec<(usize, Vec<Vec<f32>>)>> {
        let rows: Vec<_> = encodings.iter().collect();
        let real_states = match self.encoder.token_states(&rows)? {
            Some(states) => states,
            None => self.padded_token_states(&rows)?,
        };
        let mut results = Vec::with_capacity(batch.len());
        for (&index, real) in batch.iter().zip(real_states) {
            let output = if self.pooling.is_empty() {
                if self.normalize {
                    real.into_iter().map(normalized).collect()
                } else {
                    real
                }
            } else {
                vec![self.sentence_embedding(&real)?]
            };
            results.push((index, output));
        }
        Ok(results)
    }

    /// The folder's modules after the encoder on one input's real tokens, as
    /// sentence-transformers runs them: pooling, `Dense` layers, `Normalize`, then
    /// `truncate_dim`, then the caller's normalization.
    fn sentence_embedding(&self, tokens: &[Vec<f32>]) -> Result<Vec<f32>> {
        let mut vector = pool(tokens, &self.pooling);
        for dense in &self.dense {
            vector = dense.forward(&vector)?;
        }
        if self.folder_normalize {
            vector = normalized(vector);
        }
        if let Some(dim) = self.truncate_dim {
            vector.truncate(dim);
        }
        if self.normalize {
            vector = normalized(vector);
        }
        Ok(vector)
    }

    /// The real tokens' states of each row from one padded forward pass.
    fn padded_token_states(&self, rows: &[&Encoding]) -> Result<Vec<Vec<Vec<f32>>>> {
        let output = self.encoder.forward(rows)?;
        let hidden = output
            .last_hidden_state()
            .ok_or_else(|| self.encoder.wrong_output("last_hidden_state"))?
            .to_vec3::<f32>()?;
        Ok(hidden
            .into_iter()
            .zip(rows)
            .map(|(states, row)| {
                states
                    .into_iter()
                    .zip(&row.attention_mask)
                    .filter(|(_, mask)| **mask != 0)
                    .map(|(state, _)| state)
                    .collect()
            })
            .collect())
    }

    /// Sentence embeddings of `inputs`, in input order; an error when the pipeline has no
    /// pooling (a plain Transformers folder without a pooling option).
    pub fn embed<S: AsRef<str> + Sync>(&self, inputs: &[S]) -> Result<Vec<Vec<f32>>> {
        match self.run(inputs)? {
            Features::Sentences(vectors) => Ok(vectors),
            Features::Tokens(_) => Err(PipelineError::InvalidInput(format!(
                "{}: no pooling configured (not a sentence-transformers folder): choose one \
                 (mean, cls, ...) to get one vector per input",
                self.encoder.dir().display()
            ))),
        }
    }
}

/// The prompt of `options` for the folder (`options.prompt`, else the folder's prompt named
/// `options.prompt_name`, else its default prompt). An empty prompt is none. Prompt tokens are
/// pooled unless the folder's `Pooling` says `include_prompt: false`, which is refused with a
/// prompt (not implemented).
fn resolve_prompt(
    dir: &Path,
    config: Option<&SentenceTransformerConfig>,
    options: &FeatureExtractionOptions,
) -> Result<Option<String>> {
    let prompts = config.map(|config| &config.prompts);
    let prompt = match prompts {
        Some(prompts) => prompts.resolve(
            options.prompt.as_deref(),
            options.prompt_name.as_deref(),
            dir,
        )?,
        None => match (&options.prompt, &options.prompt_name) {
            (Some(prompt), _) => Some(prompt.clone()),
            (None, Some(name)) => {
                return Err(PipelineError::InvalidInput(format!(
                    "{}: no prompt named `{name}`: the folder has no \
                     config_sentence_transformers.json prompts",
                    dir.display()
                )));
            }
            (None, None) => None,
        },
    };
    let prompt = prompt.filter(|text| !text.is_empty());
    if prompt.is_some() && config.is_some_and(|config| !config.include_prompt) {
        return Err(PipelineError::InvalidModules {
            path: dir.join("modules.json"),
            reason: "the Pooling module's `include_prompt: false` (pooling without the prompt's \
                     tokens) is not implemented"
                .into(),
        });
    }
    Ok(prompt)
}

/// A row of `ids` right-padded with `pad` to `len` tokens (segment 0 throughout).
fn right_padded_row(ids: &[u32], len: usize, pad: u32) -> Encoding {
    let padding = len.saturating_sub(ids.len());
    let mut input_ids = ids.to_vec();
    input_ids.extend(std::iter::repeat_n(pad, padding));
    let mut attention_mask = vec![1; ids.len()];
    attention_mask.extend(std::iter::repeat_n(0, padding));
    Encoding {
        token_type_ids: vec![0; input_ids.len()],
        special_tokens_mask: vec![0; input_ids.len()],
        input_ids,
        attention_mask,
        ..Encoding::default()
    }
}

/// Pools the real tokens' embeddings (`[tokens, hidden]`, padding already removed) with each
/// mode, concatenated, as sentence-transformers' `Pooling` does.
pub fn pool(tokens: &[Vec<f32>], modes: &[PoolingMode]) -> Vec<f32> {
    let hidden = tokens.first().map_or(0, Vec::len);
    // sentence-transformers clamps the token count at 1e-9 so an empty input divides safely.
    let count = (tokens.len() as f32).max(1e-9);
    let sum = || {
        let mut sum = vec![0f32; hidden];
        for token in tokens {
            for (s, v) in sum.iter_mut().zip(token) {
                *s += v;
            }
        }
        sum
    };
    let mut out = Vec::with_capacity(hidden * modes.len());
    for mode in modes {
        match mode {
            PoolingMode::Cls => out.extend(tokens.first().cloned().unwrap_or_default()),
            PoolingMode::Max => {
                // Padding is set to -1e9 before the maximum in sentence-transformers.
                let mut max = vec![-1e9f32; hidden];
                for token in tokens {
                    for (m, v) in max.iter_mut().zip(token) {
                        *m = m.max(*v);
                    }
                }
                out.extend(max);
            }
            PoolingMode::Mean => out.extend(sum().into_iter().map(|s| s / count)),
            PoolingMode::MeanSqrtLen => {
                let root = count.sqrt();
                out.extend(sum().into_iter().map(|s| s / root));
            }
            PoolingMode::LastToken => out.extend(tokens.last().cloned().unwrap_or_default()),
        }
    }
    out
}

/// `vector / max(‖vector‖₂, 1e-12)` (PyTorch's `F.normalize`, which sentence-transformers'
/// `Normalize` calls).
pub fn normalized(vector: Vec<f32>) -> Vec<f32> {
    let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
    vector.into_iter().map(|v| v / norm).collect()
}

/// Cosine similarity of two vectors (0 when either is zero; over the shorter length if they
/// differ).
pub fn cosine_similarity(a: &[f32], b: &[f32]) -> f32 {
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (f64::from(*x), f64::from(*y));
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    let denominator = (na.sqrt() * nb.sqrt()).max(1e-12);
    (dot / denominator) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooling_modes_concatenate_in_sentence_transformers_order() {
        let tokens = vec![vec![1.0, -2.0], vec![3.0, 4.0]];
        assert_eq!(pool(&tokens, &[PoolingMode::Cls]), vec![1.0, -2.0]);
        assert_eq!(pool(&tokens, &[PoolingMode::Max]), vec![3.0, 4.0]);
        assert_eq!(pool(&tokens, &[PoolingMode::Mean]), vec![2.0, 1.0]);
        let root = 2f32.sqrt();
        assert_eq!(
            pool(&tokens, &[PoolingMode::MeanSqrtLen]),
            vec![4.0 / root, 2.0 / root]
        );
        assert_eq!(
            pool(&tokens, &[PoolingMode::Cls, PoolingMode::Mean]),
            vec![1.0, -2.0, 2.0, 1.0]
        );
        assert_eq!(pool(&tokens, &[PoolingMode::LastToken]), vec![3.0, 4.0]);
        assert_eq!(
            pool(&tokens, &[PoolingMode::Mean, PoolingMode::LastToken]),
            vec![2.0, 1.0, 3.0, 4.0]
        );
        assert!(pool(&[], &[PoolingMode::Mean]).is_empty());
    }

    #[test]
    fn normalize_and_cosine() {
        assert_eq!(normalized(vec![3.0, 4.0]), vec![0.6, 0.8]);
        assert_eq!(normalized(vec![0.0, 0.0]), vec![0.0, 0.0]);
        assert!((cosine_similarity(&[1.0, 0.0], &[1.0, 1.0]) - 0.70710677).abs() < 1e-6);
        assert_eq!(cosine_similarity(&[0.0], &[1.0]), 0.0);
    }

    #[test]
    fn module_paths_stay_inside() {
        let dir = Path::new("/m");
        assert_eq!(module_dir(dir, ""), Some(PathBuf::from("/m/")));
        assert_eq!(
            module_dir(dir, "1_Pooling"),
            Some(PathBuf::from("/m/1_Pooling"))
        );
        assert_eq!(module_dir(dir, "../x"), None);
        assert_eq!(module_dir(dir, "/etc"), None);
        assert_eq!(module_dir(dir, "a/../../x"), None);
    }

    fn write_modules(dir: &Path, modules: &str, pooling: &str) {
        std::fs::create_dir_all(dir.join("1_Pooling")).unwrap_or_default();
        std::fs::write(dir.join("modules.json"), modules).unwrap_or_default();
        std::fs::write(dir.join("1_Pooling/config.json"), pooling).unwrap_or_default();
    }

    #[test]
    fn modules_json_is_read_and_unknown_types_refused() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("sf-modules-{}", std::process::id()));
        let transformer =
            r#"{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"}"#;
        let pooling = r#"{"idx":1,"name":"1","path":"1_Pooling","type":"sentence_transformers.models.Pooling"}"#;
        write_modules(
            &dir,
            &format!("[{transformer},{pooling}]"),
            r#"{"pooling_mode_max_tokens":true,"pooling_mode_cls_token":true}"#,
        );
        let config = SentenceTransformerConfig::from_dir(&dir)?;
        assert_eq!(
            config.map(|c| (c.pooling, c.normalize)),
            Some((vec![PoolingMode::Cls, PoolingMode::Max], false))
        );

        // Dense modules sit between Pooling and Normalize, any number of them.
        let dense =
            r#"{"idx":2,"name":"2","path":"2_Dense","type":"sentence_transformers.models.Dense"}"#;
        let normalize = r#"{"idx":3,"name":"3","path":"3_Normalize","type":"sentence_transformers.models.Normalize"}"#;
        write_modules(
            &dir,
            &format!("[{transformer},{pooling},{dense},{dense},{normalize}]"),
            r#"{"pooling_mode_lasttoken":true}"#,
        );
        let config = SentenceTransformerConfig::from_dir(&dir)?;
        assert_eq!(
            config.map(|c| (c.pooling, c.dense_dirs.len(), c.normalize)),
            Some((vec![PoolingMode::LastToken], 2, true))
        );
        write_modules(
            &dir,
            &format!("[{transformer},{dense},{pooling}]"),
            r#"{"pooling_mode_mean_tokens":true}"#,
        );
        assert!(matches!(
            SentenceTransformerConfig::from_dir(&dir),
            Err(PipelineError::InvalidModules { .. })
        ));

        // A sentence-transformers module we do not implement: unsupported, not a refusal.
        let other =
            r#"{"idx":2,"name":"2","path":"2_X","type":"sentence_transformers.models.LayerNorm"}"#;
        write_modules(
            &dir,
            &format!("[{transformer},{pooling},{other}]"),
            r#"{"pooling_mode_mean_tokens":true}"#,
        );
        let error = SentenceTransformerConfig::from_dir(&dir).err();
        assert!(
            matches!(error, Some(PipelineError::UnsupportedModule { .. })),
            "{error:?}"
        );
        assert!(!error.as_ref().is_some_and(PipelineError::is_policy_refusal));
        let message = error.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            message.contains("sentence_transformers.models.LayerNorm"),
            "{message}"
        );
        assert!(message.contains("not implemented"), "{message}");

        // A class from outside sentence-transformers would be Python code it imports and runs:
        // refused by policy, whatever its place in the list.
        for custom in [
            "evil_pkg.Backdoor",
            "sentence_transformers_evil.X",
            "Backdoor",
        ] {
            let module = format!(r#"{{"idx":0,"name":"0","path":"","type":"{custom}"}}"#);
            write_modules(
                &dir,
                &format!("[{module},{pooling}]"),
                r#"{"pooling_mode_mean_tokens":true}"#,
            );
            let error = SentenceTransformerConfig::from_dir(&dir).err();
            assert!(
                matches!(error, Some(PipelineError::CustomModule { .. })),
                "{custom}: {error:?}"
            );
            assert!(error.as_ref().is_some_and(PipelineError::is_policy_refusal));
            let message = error.map(|e| e.to_string()).unwrap_or_default();
            assert!(message.contains(custom), "{message}");
            assert!(message.contains("never runs code"), "{message}");
        }

        let escaping =
            r#"{"idx":1,"name":"1","path":"../x","type":"sentence_transformers.models.Pooling"}"#;
        write_modules(
            &dir,
            &format!("[{transformer},{escaping}]"),
            r#"{"pooling_mode_mean_tokens":true}"#,
        );
        assert!(matches!(
            SentenceTransformerConfig::from_dir(&dir),
            Err(PipelineError::InvalidModules { .. })
        ));

        write_modules(&dir, &format!("[{transformer},{pooling}]"), "{}");
        assert!(matches!(
            SentenceTransformerConfig::from_dir(&dir),
            Err(PipelineError::InvalidModules { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap_or_default();
        Ok(())
    }
}
