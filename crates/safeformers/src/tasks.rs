//! One type per task, each loaded with `from_pretrained(model, &options)` and returning outputs
//! that serialize to exactly the JSON `safeformers run TASK` prints.

use std::path::Path;

use rayon::ThreadPool;
use serde::Serialize;

use safeformers_pipelines as pipelines;
use safeformers_pipelines::{
    Aggregation, Answer, Entities, FeatureExtractionOptions, Features, GeneratedText,
    GenerationInput, LabelScore, MaskFill, PoolingMode, QuestionAnsweringOptions,
    SentenceTransformerConfig, TextGenerationOptions, cosine_similarity,
};

use crate::Task;
use crate::error::{Error, Result};
use crate::options::Options;
use crate::resolve::resolve_model;

/// One value, or a list of them: Transformers' shape for one mask (or answer) versus several.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    /// Exactly one.
    One(T),
    /// None, or more than one.
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    /// `One` for a list of one, `Many` otherwise.
    pub fn from_list(mut list: Vec<T>) -> OneOrMany<T> {
        match (list.pop(), list.is_empty()) {
            (Some(only), true) => OneOrMany::One(only),
            (Some(last), false) => {
                list.push(last);
                OneOrMany::Many(list)
            }
            (None, _) => OneOrMany::Many(list),
        }
    }
}

/// A loaded model folder and the pool its work runs in: what every task type starts from.
#[derive(Debug)]
struct Loaded<P> {
    pipeline: P,
    pool: ThreadPool,
}

impl<P: Send> Loaded<P> {
    /// Resolves `model` under `options` and loads the pipeline of `task` with `load`, inside
    /// the pool. A GGUF model (which holds a decoder) is refused for any other task than text
    /// generation, by name, before anything is read.
    fn load(
        task: Task,
        model: &Path,
        options: &Options,
        load: impl FnOnce(&Path) -> Result<P> + Send,
    ) -> Result<Loaded<P>> {
        let pool = options.thread_pool()?;
        let dir = resolve_model(model, options)?;
        if task != Task::TextGeneration && crate::gguf_file::is_local_gguf_model(&dir) {
            return Err(Error::GgufTask {
                location: model.display().to_string(),
                task: task.name(),
            });
        }
        let pipeline = pool.install(|| load(&dir))?;
        Ok(Loaded { pipeline, pool })
    }

    /// [`Loaded::load`] of a pipeline whose `from_dir` takes the load options and the batch
    /// size.
    fn load_batched(
        task: Task,
        model: &Path,
        options: &Options,
        from_dir: impl FnOnce(&Path, &pipelines::LoadOptions, usize) -> pipelines::Result<P> + Send,
    ) -> Result<Loaded<P>> {
        let load = options.pipeline_load_options();
        let batch_size = options.checked_batch_size()?;
        Loaded::load(task, model, options, |dir| {
            Ok(from_dir(dir, &load, batch_size)?)
        })
    }
}

impl<P: Sync> Loaded<P> {
    /// Runs `work` on the pipeline inside the pool.
    fn run<T: Send>(&self, work: impl FnOnce(&P) -> Result<T> + Send) -> Result<T> {
        self.pool.install(|| work(&self.pipeline))
    }
}

/// How feature extraction pools and normalizes (default: as the folder says).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FeatureExtractionSettings {
    /// Pooling instead of the folder's: `None` keeps the folder's (sentence embeddings for a
    /// sentence-transformers folder, token embeddings otherwise); `Some(empty)` gives token
    /// embeddings; otherwise these modes.
    pub pooling: Option<Vec<PoolingMode>>,
    /// L2-normalize every output vector (after `truncate_dim`).
    pub normalize: bool,
    /// The folder's prompt (`config_sentence_transformers.json` `prompts`) to prepend to every
    /// input; `None`: its `default_prompt_name`, if any.
    pub prompt_name: Option<String>,
    /// A prompt text to prepend instead of any named one.
    pub prompt: Option<String>,
    /// Keep the first N dimensions of each sentence embedding (Matryoshka models).
    pub truncate_dim: Option<usize>,
}

/// Feature extraction's output: one vector per input (sentence embeddings), or per input a
/// `[1, seq, hidden]` array of token embeddings, as Transformers' pipeline gives them.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Embeddings {
    /// One sentence embedding per input.
    Sentences(Vec<Vec<f32>>),
    /// Token embeddings, `[1, seq, hidden]` per input.
    Tokens(Vec<[Vec<Vec<f32>>; 1]>),
}

/// `feature-extraction`: token or sentence embeddings.
#[derive(Debug)]
pub struct FeatureExtraction(Loaded<pipelines::FeatureExtraction>);

impl FeatureExtraction {
    /// Loads `model` (`org/name[@rev]` or a folder) with the folder's own pooling.
    pub fn from_pretrained(model: impl AsRef<Path>, options: &Options) -> Result<Self> {
        Self::from_pretrained_with(model, options, &FeatureExtractionSettings::default())
    }

    /// Loads `model` with the given pooling and normalization.
    pub fn from_pretrained_with(
        model: impl AsRef<Path>,
        options: &Options,
        settings: &FeatureExtractionSettings,
    ) -> Result<Self> {
        let pipeline_options = FeatureExtractionOptions {
            load: options.pipeline_load_options(),
            pooling: settings.pooling.clone(),
            normalize: settings.normalize,
            batch_size: options.checked_batch_size()?,
            prompt_name: settings.prompt_name.clone(),
            prompt: settings.prompt.clone(),
            truncate_dim: settings.truncate_dim,
        };
        Ok(FeatureExtraction(Loaded::load(
            Task::FeatureExtraction,
            model.as_ref(),
            options,
            |dir| {
                Ok(pipelines::FeatureExtraction::from_dir(
                    dir,
                    &pipeline_options,
                )?)
            },
        )?))
    }

    /// The embeddings of `inputs`.
    pub fn run<S: AsRef<str> + Sync>(&self, inputs: &[S]) -> Result<Embeddings> {
        self.run_with_prompt(inputs, None)
    }

    /// The embeddings of `inputs` with `prompt` prepended instead of the folder's own prompt
    /// (`Some("")`: no prompt); see [`pipelines::FeatureExtraction::named_prompt`] for a
    /// prompt by name.
    pub fn run_with_prompt<S: AsRef<str> + Sync>(
        &self,
        inputs: &[S],
        prompt: Option<&str>,
    ) -> Result<Embeddings> {
        let features = self
            .0
            .run(|pipeline| Ok(pipeline.run_with_prompt(inputs, prompt)?))?;
        Ok(match features {
            Features::Sentences(vectors) => Embeddings::Sentences(vectors),
            Features::Tokens(tokens) => {
                Embeddings::Tokens(tokens.into_iter().map(|tokens| [tokens]).collect())
            }
        })
    }

    /// Runs `work` on the pipeline underneath inside this pipeline's thread pool, for calls
    /// this type does not wrap ([`pipelines::FeatureExtraction::run_token_ids`]).
    pub fn install<T: Send>(
        &self,
        work: impl FnOnce(&pipelines::FeatureExtraction) -> T + Send,
    ) -> T {
        self.0.pool.install(|| work(&self.0.pipeline))
    }

    /// The pipeline underneath.
    pub fn pipeline(&self) -> &pipelines::FeatureExtraction {
        &self.0.pipeline
    }
}

/// `sentence-similarity`: the cosine similarity of one sentence's embedding to others'.
#[derive(Debug)]
pub struct SentenceSimilarity(Loaded<pipelines::FeatureExtraction>);

impl SentenceSimilarity {
    /// Loads `model` with the folder's pooling, else mean pooling (as sentence-transformers
    /// does for a plain Transformers folder), or the `pooling` given (at least one mode:
    /// similarity compares one vector per input).
    pub fn from_pretrained(
        model: impl AsRef<Path>,
        options: &Options,
        pooling: Option<Vec<PoolingMode>>,
    ) -> Result<Self> {
        if pooling.as_ref().is_some_and(Vec::is_empty) {
            return Err(Error::option(
                "pooling",
                "sentence-similarity compares one vector per input; `none` (token                  embeddings) does not apply",
            ));
        }
        let load = options.pipeline_load_options();
        let batch_size = options.checked_batch_size()?;
        Ok(SentenceSimilarity(Loaded::load(
            Task::SentenceSimilarity,
            model.as_ref(),
            options,
            |dir| {
                let mut pooling = pooling;
                if pooling.is_none() && SentenceTransformerConfig::from_dir(dir)?.is_none() {
                    pooling = Some(vec![PoolingMode::Mean]);
                }
                let pipeline_options = FeatureExtractionOptions {
                    load,
                    pooling,
                    normalize: false,
                    batch_size,
                    ..FeatureExtractionOptions::default()
                };
                Ok(pipelines::FeatureExtraction::from_dir(
                    dir,
                    &pipeline_options,
                )?)
            },
        )?))
    }

    /// The similarity of `inputs[0]` to each of the others (at least one other).
    pub fn run<S: AsRef<str> + Sync>(&self, inputs: &[S]) -> Result<Vec<f32>> {
        if inputs.len() < 2 {
            return Err(Error::InvalidInput {
                index: inputs.len() + 1,
                reason: "sentence-similarity needs a source sentence and at least one other".into(),
            });
        }
        let vectors = self.0.run(|pipeline| Ok(pipeline.embed(inputs)?))?;
        let Some((source, others)) = vectors.split_first() else {
            return Ok(Vec::new());
        };
        Ok(others
            .iter()
            .map(|other| cosine_similarity(source, other))
            .collect())
    }
}

/// Text classification's output: the best label per input, or the N best per input.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Classification {
    /// The best `{"label", "score"}` of each input (Transformers' default, `top_k=1` legacy).
    Best(Vec<LabelScore>),
    /// The N best of each input.
    TopK(Vec<Vec<LabelScore>>),
}

/// `text-classification`: `{"label", "score"}` per input.
#[derive(Debug)]
pub struct TextClassification(Loaded<pipelines::TextClassification>);

impl TextClassification {
    /// Loads `model`.
    pub fn from_pretrained(model: impl AsRef<Path>, options: &Options) -> Result<Self> {
        Ok(TextClassification(Loaded::load_batched(
            Task::TextClassification,
            model.as_ref(),
            options,
            pipelines::TextClassification::from_dir,
        )?))
    }

    /// The best label of each input (`top_k` `None`), or the `top_k` best of each.
    pub fn run<S: AsRef<str> + Sync>(
        &self,
        inputs: &[S],
        top_k: Option<usize>,
    ) -> Result<Classification> {
        check_top_k(top_k)?;
        let results = self
            .0
            .run(|pipeline| Ok(pipeline.run(inputs, Some(top_k.unwrap_or(1)))?))?;
        Ok(match top_k {
            Some(_) => Classification::TopK(results),
            None => Classification::Best(
                results
                    .into_iter()
                    .filter_map(|labels| labels.into_iter().next())
                    .collect(),
            ),
        })
    }
}

/// The default `top_k` of fill-mask.
pub const FILL_MASK_TOP_K: usize = 5;

/// `fill-mask`: the best fills of each mask token.
#[derive(Debug)]
pub struct FillMask(Loaded<pipelines::FillMask>);

impl FillMask {
    /// Loads `model`.
    pub fn from_pretrained(model: impl AsRef<Path>, options: &Options) -> Result<Self> {
        Ok(FillMask(Loaded::load_batched(
            Task::FillMask,
            model.as_ref(),
            options,
            pipelines::FillMask::from_dir,
        )?))
    }

    /// Per input, the `top_k` best fills of its mask (a list per mask when it has several).
    pub fn run<S: AsRef<str> + Sync>(
        &self,
        inputs: &[S],
        top_k: usize,
    ) -> Result<Vec<OneOrMany<Vec<MaskFill>>>> {
        check_top_k(Some(top_k))?;
        let results = self.0.run(|pipeline| Ok(pipeline.run(inputs, top_k)?))?;
        Ok(results.into_iter().map(OneOrMany::from_list).collect())
    }
}

/// `token-classification`: entities per input, tokens or aggregated groups.
#[derive(Debug)]
pub struct TokenClassification(Loaded<pipelines::TokenClassification>);

impl TokenClassification {
    /// Loads `model`.
    pub fn from_pretrained(model: impl AsRef<Path>, options: &Options) -> Result<Self> {
        Ok(TokenClassification(Loaded::load_batched(
            Task::TokenClassification,
            model.as_ref(),
            options,
            pipelines::TokenClassification::from_dir,
        )?))
    }

    /// The entities of each input, merged as `aggregation` says.
    pub fn run<S: AsRef<str> + Sync>(
        &self,
        inputs: &[S],
        aggregation: Aggregation,
    ) -> Result<Vec<Entities>> {
        self.0
            .run(|pipeline| Ok(pipeline.run(inputs, aggregation)?))
    }
}

/// `question-answering`: answer spans found in contexts.
#[derive(Debug)]
pub struct QuestionAnswering(Loaded<pipelines::QuestionAnswering>);

impl QuestionAnswering {
    /// Loads `model`.
    pub fn from_pretrained(model: impl AsRef<Path>, options: &Options) -> Result<Self> {
        Ok(QuestionAnswering(Loaded::load_batched(
            Task::QuestionAnswering,
            model.as_ref(),
            options,
            pipelines::QuestionAnswering::from_dir,
        )?))
    }

    /// Per (question, context) pair, the best answer (an object) or the `top_k` best (a list).
    pub fn run<Q: AsRef<str> + Sync, C: AsRef<str> + Sync>(
        &self,
        pairs: &[(Q, C)],
        top_k: usize,
        settings: &QuestionAnsweringOptions,
    ) -> Result<Vec<OneOrMany<Answer>>> {
        check_top_k(Some(top_k))?;
        let results = self
            .0
            .run(|pipeline| Ok(pipeline.run(pairs, top_k, settings)?))?;
        Ok(results.into_iter().map(OneOrMany::from_list).collect())
    }
}

/// `text-generation`: a decoder-only model continues prompts or chats.
///
/// Chat templates are rendered as [`Options::chat_templates`] says: by default in an isolated
/// child process of the current executable (see [`crate::chat_sandbox`]).
#[derive(Debug)]
pub struct TextGeneration(Loaded<pipelines::TextGeneration>);

impl TextGeneration {
    /// Loads `model` with the weight storage of [`Options::weights`].
    pub fn from_pretrained(model: impl AsRef<Path>, options: &Options) -> Result<Self> {
        let load = options.pipeline_load_options();
        let renderer = crate::chat_sandbox::renderer(options.chat_template_isolation());
        Ok(TextGeneration(Loaded::load(
            Task::TextGeneration,
            model.as_ref(),
            options,
            |dir| {
                let pipeline = pipelines::TextGeneration::from_dir(dir, &load)?;
                Ok(match renderer {
                    Some(renderer) => pipeline.with_chat_renderer(renderer),
                    None => pipeline,
                })
            },
        )?))
    }

    /// One result per input (`[{"generated_text": ...}]` each, as Transformers).
    pub fn run(
        &self,
        inputs: &[GenerationInput],
        settings: &TextGenerationOptions,
    ) -> Result<Vec<GeneratedText>> {
        self.0.run(|pipeline| Ok(pipeline.run(inputs, settings)?))
    }

    /// As [`TextGeneration::run`], handing each piece of new text to `on_text` (input index,
    /// text) as it is generated.
    pub fn run_streaming(
        &self,
        inputs: &[GenerationInput],
        settings: &TextGenerationOptions,
        on_text: &mut (dyn FnMut(usize, &str) -> pipelines::Result<()> + Send),
    ) -> Result<Vec<GeneratedText>> {
        self.0
            .run(|pipeline| Ok(pipeline.run_streaming(inputs, settings, on_text)?))
    }

    /// Runs `work` on the pipeline underneath inside this pipeline's thread pool: for calls
    /// this type does not wrap, such as a conversation whose KV cache is continued turn by turn
    /// ([`pipelines::TextGeneration::run_streaming_continuing`]).
    pub fn install<T: Send>(&self, work: impl FnOnce(&pipelines::TextGeneration) -> T + Send) -> T {
        self.0.pool.install(|| work(&self.0.pipeline))
    }

    /// The timings of each input generated since the last call of this method, in input order
    /// (what `--stats` prints).
    pub fn take_stats(&self) -> Vec<pipelines::GenerationStats> {
        self.0.pipeline.take_stats()
    }

    /// The pipeline underneath.
    pub fn pipeline(&self) -> &pipelines::TextGeneration {
        &self.0.pipeline
    }
}

/// A `top_k` of 0 selects nothing: a usage error.
fn check_top_k(top_k: Option<usize>) -> Result<()> {
    if top_k == Some(0) {
        return Err(Error::option("top_k", "must be at least 1"));
    }
    Ok(())
}
