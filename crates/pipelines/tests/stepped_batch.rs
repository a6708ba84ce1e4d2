//! Stepped generation ([`Batch::step`]) on the tiny decoder fixtures of
//! `tests/fixtures/decoders` (made by `scripts/make_decoder_fixtures.py`): a batch whose members
//! join and leave between steps gives every sequence exactly the tokens it gets alone, greedy
//! and with seeded sampling, for GPT-2 and the Llama families (sliding windows, grouped-query
//! heads, partial rotary included).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use safeformers_models::CausalLm;
use safeformers_pipelines::generation::{
    Batch, GenerationConfig, GenerationParams, OutputPenalties, PromptCache, SequenceId,
    SequenceOptions, StopReason, TokenChooser,
};
use safeformers_pipelines::{
    GeneratedContent, GenerationInput, LoadOptions, TextGeneration, TextGenerationOptions,
};

const MODELS: &[&str] = &[
    "gpt2",
    "llama",
    "mistral",
    "qwen2-sliding",
    "gemma",
    "phi3-partial-window",
];

const SEED: u64 = 1234;

fn pipeline(model: &str) -> TextGeneration {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/decoders");
    TextGeneration::from_dir(&dir.join(model), &LoadOptions::default())
        .unwrap_or_else(|e| panic!("{model}: {e}"))
}

fn params(do_sample: bool) -> GenerationParams {
    GenerationConfig {
        max_new_tokens: Some(7),
        do_sample: Some(do_sample),
        eos_token_id: Some(Vec::new()),
        ..GenerationConfig::default()
    }
    .resolve()
    .unwrap()
}

fn prompts() -> Vec<Vec<u32>> {
    vec![
        vec![5, 17, 42, 8, 99, 23, 61],
        vec![70, 3],
        vec![11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21],
    ]
}

fn options(params: &GenerationParams, index: usize) -> SequenceOptions {
    let options = SequenceOptions::new(
        Arc::new(params.clone()),
        prompts()[index].len(),
        SEED,
        index as u64,
    );
    assert_eq!(options.max_new_tokens, 7);
    options
}

/// Each prompt generated in a batch of its own.
fn alone(model: &dyn CausalLm, params: &GenerationParams) -> Vec<Vec<u32>> {
    prompts()
        .into_iter()
        .enumerate()
        .map(|(index, prompt)| {
            let mut batch = Batch::new(model);
            let id = batch.join(prompt, options(params, index), None).unwrap();
            while batch.is_running() {
                batch.step(None).unwrap();
            }
            let sequence = batch.leave(id).unwrap();
            assert_eq!(sequence.stop_reason(), Some(StopReason::Length));
            sequence.tokens().to_vec()
        })
        .collect()
}

/// Prompt 0 starts alone; prompt 1 joins after two steps, prompt 2 after three; prompt 1
/// leaves after two tokens of its own and comes back (as a new member continuing from its
/// cache) one step later; everyone else runs to the end.
fn staggered(model: &dyn CausalLm, params: &GenerationParams) -> Vec<Vec<u32>> {
    let prompts = prompts();
    let mut batch = Batch::new(model);
    let mut index_of: BTreeMap<SequenceId, usize> = BTreeMap::new();
    let mut tokens: Vec<Vec<u32>> = vec![Vec::new(); prompts.len()];
    let mut record = |chosen: Vec<safeformers_pipelines::generation::StepToken>,
                      index_of: &BTreeMap<SequenceId, usize>| {
        for step in chosen {
            tokens[index_of[&step.id]].push(step.token);
        }
    };
    let first = batch
        .join(prompts[0].clone(), options(params, 0), None)
        .unwrap();
    index_of.insert(first, 0);
    for _ in 0..2 {
        record(batch.step(None).unwrap(), &index_of);
    }
    let second = batch
        .join(prompts[1].clone(), options(params, 1), None)
        .unwrap();
    index_of.insert(second, 1);
    record(batch.step(None).unwrap(), &index_of);
    let third = batch
        .join(prompts[2].clone(), options(params, 2), None)
        .unwrap();
    index_of.insert(third, 2);
    record(batch.step(None).unwrap(), &index_of);
    // Prompt 1 leaves with two tokens; one step runs without it.
    let left = batch.leave(second).unwrap();
    let so_far = left.tokens().to_vec();
    assert_eq!(so_far.len(), 2);
    record(batch.step(None).unwrap(), &index_of);
    // It rejoins from its cache, as a chat turn would: prompt + its tokens, 5 more to come.
    let mut resumed_prompt = prompts[1].clone();
    resumed_prompt.extend_from_slice(&so_far);
    let mut resumed_options = options(params, 1);
    resumed_options.max_new_tokens = 5;
    resumed_options.chooser = match left.stop_reason() {
        None => resumed_options.chooser,
        Some(reason) => panic!("left while running, got {reason:?}"),
    };
    // The sampler stream continues where it was: draw the two tokens it already took.
    if params.do_sample {
        resumed_options.chooser = resume_stream(1, 2, model.vocab_size());
    }
    let cache = left.into_cache();
    assert_eq!(
        cache.len(),
        prompts[1].len() + 1,
        "the last token is not run yet"
    );
    let back = batch
        .join_with_cache(resumed_prompt, cache, resumed_options, None)
        .unwrap();
    index_of.insert(back, 1);
    while batch.is_running() {
        record(batch.step(None).unwrap(), &index_of);
    }
    tokens
}

/// Stream `index` of the seeded generator after `draws` draws.
fn resume_stream(index: u64, draws: usize, vocab: usize) -> TokenChooser {
    let mut chooser = TokenChooser::seeded_stream(SEED, index);
    let flat = vec![0.0f32; vocab];
    for _ in 0..draws {
        chooser.choose(&flat);
    }
    chooser
}

#[test]
fn members_joining_and_leaving_get_the_tokens_they_get_alone() {
    for model_name in MODELS {
        let pipeline = pipeline(model_name);
        let model = pipeline.model();
        for do_sample in [false, true] {
            let params = params(do_sample);
            let want = alone(model, &params);
            let got = staggered(model, &params);
            assert_eq!(got, want, "{model_name}, sampling {do_sample}");
            assert!(want.iter().all(|tokens| tokens.len() == 7));
        }
    }
}

/// A chat's turns continue one KV cache: the second prompt shares the first one's beginning
/// (and the tokens generated after it), and what it generates is what a fresh run generates.
#[test]
fn a_continued_prompt_cache_gives_what_a_fresh_run_gives() {
    for model_name in ["gpt2", "llama", "mistral"] {
        let pipeline = pipeline(model_name);
        let options = TextGenerationOptions {
            generation: GenerationConfig {
                max_new_tokens: Some(5),
                do_sample: Some(false),
                ..GenerationConfig::default()
            },
            ..TextGenerationOptions::default()
        };
        let held = RefCell::new(PromptCache::default());
        let first = GenerationInput::Text("the quick brown fox".into());
        let reply = pipeline
            .run_streaming_continuing(&first, &options, &held, &mut |_| Ok(()))
            .unwrap();
        assert_eq!(reply, pipeline.run(&[first], &options).unwrap()[0]);
        let prompt_tokens = pipeline
            .prompt_ids(&GenerationInput::Text("the quick brown fox".into()))
            .unwrap()
            .len();
        assert!(held.borrow().len() >= prompt_tokens, "{model_name}");
        let GeneratedContent::Text(text) = &reply.generated_text else {
            panic!("text in, text out");
        };
        let second = GenerationInput::Text(format!("{text} jumps over"));
        let continued = pipeline
            .run_streaming_continuing(&second, &options, &held, &mut |_| Ok(()))
            .unwrap();
        let fresh = pipeline.run(&[second], &options).unwrap();
        assert_eq!(continued, fresh[0], "{model_name}");
    }
}

/// Runs one member alone to its end and returns it.
fn run_alone(
    model: &dyn CausalLm,
    options: SequenceOptions,
) -> safeformers_pipelines::generation::Sequence {
    let mut batch = Batch::new(model);
    let id = batch.join(prompts()[0].clone(), options, None).unwrap();
    while batch.is_running() {
        batch.step(None).unwrap();
    }
    batch.leave(id).unwrap()
}

#[test]
fn logprobs_rank_the_model_distribution_and_greedy_takes_the_top() {
    let pipeline = pipeline("llama");
    let params = params(false);
    let mut with_logprobs = options(&params, 0);
    with_logprobs.logprobs = Some(5);
    let sequence = run_alone(pipeline.model(), with_logprobs);
    // Asking for log-probabilities changes no token.
    assert_eq!(
        sequence.tokens(),
        run_alone(pipeline.model(), options(&params, 0)).tokens()
    );
    assert_eq!(sequence.logprobs().len(), sequence.tokens().len());
    for (entry, &token) in sequence.logprobs().iter().zip(sequence.tokens()) {
        assert_eq!(entry.token, token);
        assert_eq!(entry.top.len(), 5);
        assert!(entry.top.windows(2).all(|pair| pair[0].1 >= pair[1].1));
        // Greedy: the chosen token is the most likely one.
        assert_eq!(entry.top[0], (token, entry.logprob));
        assert!(entry.logprob <= 0.0);
        let mass: f32 = entry.top.iter().map(|(_, logprob)| logprob.exp()).sum();
        assert!(mass <= 1.0 + 1e-5, "{mass}");
    }
}

#[test]
fn a_presence_penalty_steers_away_from_generated_tokens() {
    let pipeline = pipeline("llama");
    let params = GenerationConfig {
        max_new_tokens: Some(24),
        do_sample: Some(false),
        eos_token_id: Some(Vec::new()),
        ..GenerationConfig::default()
    }
    .resolve()
    .unwrap();
    let options_for = |presence: f32| {
        let mut options =
            SequenceOptions::new(Arc::new(params.clone()), prompts()[0].len(), SEED, 0);
        options.output_penalties = OutputPenalties {
            presence,
            frequency: 0.0,
        };
        options
    };
    let plain = run_alone(pipeline.model(), options_for(0.0));
    let distinct = |tokens: &[u32]| {
        tokens
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    };
    // The random tiny model repeats itself when greedy; a presence penalty far larger than
    // any score gap forbids every repeat.
    assert!(distinct(plain.tokens()) < plain.tokens().len());
    let penalised = run_alone(pipeline.model(), options_for(1.0e4));
    assert_eq!(distinct(penalised.tokens()), penalised.tokens().len());
}
