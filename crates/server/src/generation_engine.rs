//! Continuous batching: one thread per generative model owns a [`Batch`] and steps it while
//! any sequence runs. Requests wait in a bounded queue; between two steps, waiting requests
//! join the batch as far as `max_running` sequences allow, and finished or cancelled sequences
//! leave it. No request waits for another to finish.
//!
//! A request's sequences (its `n` choices, or a completion's prompts) share one event channel;
//! a client that goes away drops its receiver, and its sequences leave at the next step.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use safeformers::TextGeneration;
use safeformers_pipelines as pipelines;
use safeformers_pipelines::generation::{
    Batch, SequenceId, SequenceOptions, StepToken, StopReason, TokenLogprobs,
};
use safeformers_tokenize::StreamDecoder;
use tokio::sync::mpsc::UnboundedSender;

use crate::metrics::Metrics;
use crate::stop_text::StopText;

/// One sequence of a request.
#[derive(Debug, Clone)]
pub struct ChoiceJob {
    /// The prompt's token ids (not empty).
    pub prompt: Vec<u32>,
    /// Length, sampling, penalties, log-probabilities.
    pub options: SequenceOptions,
    /// OpenAI's `stop` strings (never part of the text sent).
    pub stop: Vec<String>,
    /// Decode special tokens into the text too (tool-call markers such as Mistral's
    /// `[TOOL_CALLS]` are special tokens); an EOS token is never decoded.
    pub keep_special_tokens: bool,
}

/// A request: its sequences and where their events go.
#[derive(Debug)]
pub struct GenerationJob {
    /// The sequences, numbered by their index here in the events.
    pub choices: Vec<ChoiceJob>,
    /// Events of every sequence; dropping the receiver cancels them.
    pub events: UnboundedSender<ChoiceEvent>,
}

/// Something that happened to one sequence of a request.
#[derive(Debug, Clone, PartialEq)]
pub struct ChoiceEvent {
    /// The sequence's index in [`GenerationJob::choices`].
    pub choice: usize,
    /// What happened.
    pub kind: EventKind,
}

/// What happened to a sequence.
#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    /// New tokens and the text they complete (possibly empty: an unfinished character, or text
    /// that may be the start of a stop string).
    Piece {
        /// Text safe to send.
        text: String,
        /// The log-probabilities of the new tokens, when asked for.
        logprobs: Vec<TokenLogprobs>,
    },
    /// The sequence ended; `text` is what was still held back.
    Finished {
        /// The rest of the text.
        text: String,
        /// `stop` (EOS or a stop string) or `length`.
        reason: Finish,
        /// Tokens generated.
        completion_tokens: usize,
    },
    /// The sequence could not run (the model failed, or the server is shutting down).
    Failed {
        /// What went wrong, for the client (no host paths).
        message: String,
    },
}

/// Why a sequence ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// An EOS token or a stop string.
    Stop,
    /// `max_tokens` or the context window.
    Length,
}

/// Why a request was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The queue holds `max_queued` requests already.
    QueueFull,
    /// The server is shutting down (or its engine stopped).
    ShuttingDown,
}

/// How many requests may wait and how many sequences may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineLimits {
    /// Requests waiting to join, at most (more get 429).
    pub max_queued: usize,
    /// Sequences generated together, at most.
    pub max_running: usize,
}

/// The counters the engine and its callers share.
#[derive(Debug, Default)]
struct Shared {
    queued: AtomicUsize,
    running: AtomicUsize,
    /// Set by [`GenerationEngine::shutdown`]: admit nothing more.
    draining: AtomicBool,
    /// When running sequences are cancelled, once draining.
    drain_deadline: Mutex<Option<Instant>>,
}

/// A model's generation thread and its queue.
#[derive(Debug)]
pub struct GenerationEngine {
    inbox: SyncSender<GenerationJob>,
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl GenerationEngine {
    /// Starts the generation thread of `model`.
    pub fn start(
        model: Arc<TextGeneration>,
        limits: EngineLimits,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<GenerationEngine> {
        let (inbox, jobs) = std::sync::mpsc::sync_channel(limits.max_queued.max(1));
        let shared = Arc::new(Shared::default());
        let engine_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("safeformers-generate".into())
            .spawn(move || {
                model.install(move |pipeline| {
                    Engine::new(pipeline, limits, &engine_shared, &metrics).run(&jobs);
                });
            })?;
        Ok(GenerationEngine {
            inbox,
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues a request; it joins the batch at the next step there is room for it.
    pub fn submit(&self, job: GenerationJob) -> Result<(), Refusal> {
        if self.shared.draining.load(Ordering::SeqCst) {
            return Err(Refusal::ShuttingDown);
        }
        self.shared.queued.fetch_add(1, Ordering::SeqCst);
        match self.inbox.try_send(job) {
            Ok(()) => Ok(()),
            Err(refused) => {
                self.shared.queued.fetch_sub(1, Ordering::SeqCst);
                Err(match refused {
                    TrySendError::Full(_) => Refusal::QueueFull,
                    TrySendError::Disconnected(_) => Refusal::ShuttingDown,
                })
            }
        }
    }

    /// Requests waiting to join.
    pub fn queued(&self) -> usize {
        self.shared.queued.load(Ordering::SeqCst)
    }

    /// Sequences in the batch.
    pub fn running(&self) -> usize {
        self.shared.running.load(Ordering::SeqCst)
    }

    /// Admits nothing more: queued requests fail, running sequences finish until `grace` has
    /// passed and are cancelled then. Returns at once; [`GenerationEngine::join`] waits.
    pub fn shutdown(&self, grace: Duration) {
        if let Ok(mut deadline) = self.shared.drain_deadline.lock() {
            *deadline = Some(Instant::now() + grace);
        }
        self.shared.draining.store(true, Ordering::SeqCst);
        // Wake an idle engine (a full queue already wakes it).
        let _ = self.inbox.try_send(GenerationJob {
            choices: Vec::new(),
            events: tokio::sync::mpsc::unbounded_channel().0,
        });
    }

    /// Waits for the generation thread to end (after [`GenerationEngine::shutdown`]).
    pub fn join(&self) {
        let thread = self.thread.lock().ok().and_then(|mut held| held.take());
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

/// A running sequence's request-side state.
struct Member<'t> {
    events: UnboundedSender<ChoiceEvent>,
    choice: usize,
    decoder: StreamDecoder<'t>,
    text: StopText,
}

/// The generation loop's state, inside the model's thread pool.
struct Engine<'p> {
    pipeline: &'p pipelines::TextGeneration,
    batch: Batch<'p>,
    members: HashMap<SequenceId, Member<'p>>,
    /// A request taken from the queue that did not fit yet.
    waiting: Option<GenerationJob>,
    limits: EngineLimits,
    shared: &'p Shared,
    metrics: &'p Metrics,
}

impl<'p> Engine<'p> {
    fn new(
        pipeline: &'p pipelines::TextGeneration,
        limits: EngineLimits,
        shared: &'p Shared,
        metrics: &'p Metrics,
    ) -> Engine<'p> {
        Engine {
            pipeline,
            batch: Batch::new(pipeline.model()),
            members: HashMap::new(),
            waiting: None,
            limits,
            shared,
            metrics,
        }
    }

    fn run(mut self, jobs: &Receiver<GenerationJob>) {
        loop {
            if !self.admit(jobs) {
                break;
            }
            self.drop_cancelled();
            if self.shared.draining.load(Ordering::SeqCst) && self.past_drain_deadline() {
                self.fail_all("the server is shutting down");
            }
            self.publish_load();
            if self.members.is_empty() {
                if self.shared.draining.load(Ordering::SeqCst) {
                    break;
                }
                continue;
            }
            self.step();
            self.publish_load();
        }
        self.fail_all("the server is shutting down");
        self.publish_load();
    }

    /// Takes queued requests while they fit; blocks for one when nothing runs. Returns false
    /// when the queue is closed and nothing runs.
    fn admit(&mut self, jobs: &Receiver<GenerationJob>) -> bool {
        loop {
            let job = match self.waiting.take() {
                Some(job) => job,
                None if self.members.is_empty() && !self.draining() => match jobs.recv() {
                    Ok(job) => job,
                    Err(_) => return false,
                },
                None => match jobs.try_recv() {
                    Ok(job) => job,
                    Err(TryRecvError::Empty) => return true,
                    Err(TryRecvError::Disconnected) => return !self.members.is_empty(),
                },
            };
            if job.choices.is_empty() {
                // The shutdown wake-up.
                continue;
            }
            if self.draining() {
                self.shared.queued.fetch_sub(1, Ordering::SeqCst);
                fail_job(&job, "the server is shutting down");
                continue;
            }
            let room = self
                .limits
                .max_running
                .max(1)
                .saturating_sub(self.members.len());
            if job.choices.len() > room && !self.members.is_empty() {
                self.waiting = Some(job);
                return true;
            }
            self.shared.queued.fetch_sub(1, Ordering::SeqCst);
            self.join(job);
            self.publish_load();
        }
    }

    fn draining(&self) -> bool {
        self.shared.draining.load(Ordering::SeqCst)
    }

    fn past_drain_deadline(&self) -> bool {
        self.shared
            .drain_deadline
            .lock()
            .ok()
            .and_then(|deadline| *deadline)
            .is_some_and(|deadline| Instant::now() >= deadline)
    }

    fn join(&mut self, job: GenerationJob) {
        if job.events.is_closed() {
            return;
        }
        for (choice, request) in job.choices.into_iter().enumerate() {
            match self.batch.join(request.prompt, request.options, None) {
                Ok(id) => {
                    self.members.insert(
                        id,
                        Member {
                            events: job.events.clone(),
                            choice,
                            decoder: self
                                .pipeline
                                .tokenizer()
                                .stream_decoder(!request.keep_special_tokens),
                            text: StopText::new(&request.stop),
                        },
                    );
                }
                Err(error) => {
                    let _ = job.events.send(ChoiceEvent {
                        choice,
                        kind: EventKind::Failed {
                            message: error.to_string(),
                        },
                    });
                }
            }
        }
    }

    /// Sequences whose client went away leave the batch.
    fn drop_cancelled(&mut self) {
        let gone: Vec<SequenceId> = self
            .members
            .iter()
            .filter(|(_, member)| member.events.is_closed())
            .map(|(id, _)| *id)
            .collect();
        self.metrics.count_cancelled(gone.len() as u64);
        for id in gone {
            self.members.remove(&id);
            self.batch.leave(id);
        }
    }

    fn step(&mut self) {
        match self.batch.step(None) {
            Ok(tokens) => {
                self.metrics.count_tokens(0, tokens.len() as u64);
                for token in tokens {
                    self.deliver(token);
                }
            }
            Err(error) => {
                // A failed step leaves the batch in an unknown state: every member fails, the
                // server goes on with the next requests.
                tracing::error!(%error, "a generation step failed");
                self.fail_all("the model failed to generate; see the server log");
            }
        }
    }

    /// Sends a chosen token's text, and ends its sequence when it stopped.
    fn deliver(&mut self, step: StepToken) {
        let Some(member) = self.members.get_mut(&step.id) else {
            return;
        };
        let logprobs: Vec<TokenLogprobs> = self
            .batch
            .get(step.id)
            .and_then(|sequence| sequence.logprobs().last().cloned())
            .into_iter()
            .collect();
        let decoded = match step.stopped {
            Some(StopReason::Eos) => Ok(None),
            _ => member.decoder.push(step.token),
        };
        let piece = match decoded {
            Ok(piece) => piece.unwrap_or_default(),
            Err(error) => {
                tracing::warn!(%error, "a generated token could not be decoded");
                String::new()
            }
        };
        let text = member.text.push(&piece);
        let stopped_by_text = member.text.stopped();
        let _ = member.events.send(ChoiceEvent {
            choice: member.choice,
            kind: EventKind::Piece { text, logprobs },
        });
        let reason = match (stopped_by_text, step.stopped) {
            (true, _) | (false, Some(StopReason::Eos | StopReason::StopString)) => Finish::Stop,
            (false, Some(_)) => Finish::Length,
            (false, None) => return,
        };
        self.finish(step.id, reason);
    }

    fn finish(&mut self, id: SequenceId, reason: Finish) {
        let sequence = self.batch.leave(id);
        let Some(mut member) = self.members.remove(&id) else {
            return;
        };
        let mut rest = String::new();
        if !member.text.stopped() {
            if let Ok(Some(piece)) = member.decoder.finish() {
                rest = member.text.push(&piece);
            }
            rest.push_str(&member.text.finish());
        }
        let completion_tokens = sequence.map_or(0, |sequence| sequence.tokens().len());
        let _ = member.events.send(ChoiceEvent {
            choice: member.choice,
            kind: EventKind::Finished {
                text: rest,
                reason,
                completion_tokens,
            },
        });
    }

    fn fail_all(&mut self, message: &str) {
        for (id, member) in self.members.drain() {
            self.batch.leave(id);
            let _ = member.events.send(ChoiceEvent {
                choice: member.choice,
                kind: EventKind::Failed {
                    message: message.to_string(),
                },
            });
        }
        if let Some(job) = self.waiting.take() {
            self.shared.queued.fetch_sub(1, Ordering::SeqCst);
            fail_job(&job, message);
        }
    }

    fn publish_load(&self) {
        let running = self.members.len();
        self.shared.running.store(running, Ordering::SeqCst);
        let queued = self.shared.queued.load(Ordering::SeqCst);
        self.metrics.set_load(queued as u64, running as u64);
    }
}

fn fail_job(job: &GenerationJob, message: &str) {
    for choice in 0..job.choices.len() {
        let _ = job.events.send(ChoiceEvent {
            choice,
            kind: EventKind::Failed {
                message: message.to_string(),
            },
        });
    }
}
