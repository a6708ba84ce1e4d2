//! Token-budgeted dynamic batching for embeddings: one thread per embedding model takes the
//! first waiting request, then more while their tokens fit in `max_batch_tokens`, and embeds
//! them in one pipeline call (which sorts inputs by length into the model's batches). Requests
//! wait in a bounded queue.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError};
use std::thread::JoinHandle;

use safeformers::FeatureExtraction;
use safeformers_pipelines::Features;
use tokio::sync::oneshot;

use crate::embeddings_request::EmbeddingInput;
use crate::generation_engine::Refusal;

/// One request: its inputs, their token count (the batching budget) and where the vectors go.
#[derive(Debug)]
pub struct EmbeddingJob {
    /// The inputs (texts and token rows may be mixed).
    pub inputs: Vec<EmbeddingInput>,
    /// The prompt prepended to its texts instead of the model's default, if one was asked for
    /// (`Some("")`: none).
    pub prompt: Option<String>,
    /// Their tokens, special tokens included.
    pub tokens: usize,
    /// One vector per input, in order, or what went wrong (for the client).
    pub reply: oneshot::Sender<Result<Vec<Vec<f32>>, String>>,
}

/// A model's embedding thread and its queue.
#[derive(Debug)]
pub struct EmbeddingEngine {
    inbox: SyncSender<EmbeddingJob>,
    queued: Arc<AtomicUsize>,
    draining: AtomicBool,
    /// The embedding thread (it ends when the engine is dropped and its queue is empty).
    _thread: JoinHandle<()>,
}

impl EmbeddingEngine {
    /// Starts the embedding thread of `model`.
    pub fn start(
        model: Arc<FeatureExtraction>,
        max_queued: usize,
        max_batch_tokens: usize,
    ) -> std::io::Result<EmbeddingEngine> {
        let (inbox, jobs) = std::sync::mpsc::sync_channel(max_queued.max(1));
        let queued = Arc::new(AtomicUsize::new(0));
        let engine_queued = queued.clone();
        let thread = std::thread::Builder::new()
            .name("safeformers-embed".into())
            .spawn(move || run(&model, &jobs, &engine_queued, max_batch_tokens))?;
        Ok(EmbeddingEngine {
            inbox,
            queued,
            draining: AtomicBool::new(false),
            _thread: thread,
        })
    }

    /// Queues a request.
    pub fn submit(&self, job: EmbeddingJob) -> Result<(), Refusal> {
        if self.draining.load(Ordering::SeqCst) {
            return Err(Refusal::ShuttingDown);
        }
        self.queued.fetch_add(1, Ordering::SeqCst);
        self.inbox.try_send(job).map_err(|refused| {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            match refused {
                TrySendError::Full(_) => Refusal::QueueFull,
                TrySendError::Disconnected(_) => Refusal::ShuttingDown,
            }
        })
    }

    /// Requests waiting.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }

    /// Admits nothing more; queued requests are still answered.
    pub fn shutdown(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }
}

fn run(
    model: &FeatureExtraction,
    jobs: &Receiver<EmbeddingJob>,
    queued: &AtomicUsize,
    max_batch_tokens: usize,
) {
    // A job taken from the queue that did not fit in the last batch: it starts the next.
    let mut carried: Option<EmbeddingJob> = None;
    loop {
        let first = match carried.take() {
            Some(job) => job,
            None => match jobs.recv() {
                Ok(job) => {
                    queued.fetch_sub(1, Ordering::SeqCst);
                    job
                }
                Err(_) => return,
            },
        };
        let mut tokens = first.tokens;
        let mut batch = vec![first];
        while tokens < max_batch_tokens {
            match jobs.try_recv() {
                Ok(job) => {
                    queued.fetch_sub(1, Ordering::SeqCst);
                    if tokens + job.tokens > max_batch_tokens {
                        carried = Some(job);
                        break;
                    }
                    tokens += job.tokens;
                    batch.push(job);
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        embed_batch(model, batch);
    }
}

/// Embeds the jobs' texts in one call per prompt (almost always one) and their token rows in
/// another, and answers each job with its vectors in input order.
fn embed_batch(model: &FeatureExtraction, batch: Vec<EmbeddingJob>) {
    let jobs: Vec<EmbeddingJob> = batch
        .into_iter()
        .filter(|job| !job.reply.is_closed())
        .collect();
    // One call per prompt among the jobs' texts (almost always one), one for the token rows.
    let mut prompts: Vec<Option<String>> = Vec::new();
    for job in &jobs {
        if !prompts.contains(&job.prompt) {
            prompts.push(job.prompt.clone());
        }
    }
    let mut from_texts = Vec::with_capacity(prompts.len());
    for prompt in prompts.iter().map(Option::as_deref) {
        let texts: Vec<&str> = jobs
            .iter()
            .filter(|job| job.prompt.as_deref() == prompt)
            .flat_map(|job| &job.inputs)
            .filter_map(|input| match input {
                EmbeddingInput::Text(text) => Some(text.as_str()),
                EmbeddingInput::Tokens(_) => None,
            })
            .collect();
        let vectors = match texts.is_empty() {
            true => Ok(Vec::new()),
            false => {
                sentence_vectors(model.install(|pipeline| pipeline.run_with_prompt(&texts, prompt)))
            }
        };
        from_texts.push(vectors.map(Vec::into_iter));
    }
    let rows: Vec<Vec<u32>> = jobs
        .iter()
        .flat_map(|job| &job.inputs)
        .filter_map(|input| match input {
            EmbeddingInput::Tokens(ids) => Some(ids.clone()),
            EmbeddingInput::Text(_) => None,
        })
        .collect();
    let from_rows = match rows.is_empty() {
        true => Ok(Vec::new()),
        false => sentence_vectors(model.install(|pipeline| pipeline.run_token_ids(&rows))),
    };
    let failure = from_texts
        .iter()
        .find_map(|vectors| vectors.as_ref().err())
        .or(from_rows.as_ref().err())
        .cloned();
    if let Some(message) = failure {
        for job in jobs {
            let _ = job.reply.send(Err(message.clone()));
        }
        return;
    }
    let mut from_texts: Vec<_> = from_texts.into_iter().flatten().collect();
    let mut from_rows = from_rows.unwrap_or_default().into_iter();
    for job in jobs {
        let mut texts_of_prompt = prompts
            .iter()
            .position(|prompt| *prompt == job.prompt)
            .and_then(|index| from_texts.get_mut(index));
        let vectors: Option<Vec<Vec<f32>>> = job
            .inputs
            .iter()
            .map(|input| match input {
                EmbeddingInput::Text(_) => texts_of_prompt.as_mut().and_then(|texts| texts.next()),
                EmbeddingInput::Tokens(_) => from_rows.next(),
            })
            .collect();
        let answer = vectors.ok_or_else(|| "the model returned too few vectors".to_string());
        let _ = job.reply.send(answer);
    }
}

/// One vector per input, or the message for the client.
fn sentence_vectors(
    features: safeformers_pipelines::Result<Features>,
) -> Result<Vec<Vec<f32>>, String> {
    match features {
        Ok(Features::Sentences(vectors)) => Ok(vectors),
        Ok(Features::Tokens(_)) => Err("the model has no pooling: it gives token embeddings, \
                                        not one vector per input"
            .to_string()),
        Err(error) => {
            tracing::error!(%error, "an embedding batch failed");
            Err("the model failed to embed the inputs".to_string())
        }
    }
}
