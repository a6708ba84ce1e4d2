//! A 10 MB input through the pipelines: the tokenizer reads only what the pipeline can use
//! (the context window of a decoder, the truncation length of an encoder), so a huge prompt is
//! refused or truncated at once instead of being tokenized in full first (about 20 s and
//! 2.2 GB before the context-window error).

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use safeformers_pipelines::generation::GenerationConfig;
use safeformers_pipelines::{
    FeatureExtraction, FeatureExtractionOptions, Features, GenerationInput, LoadOptions,
    PipelineError, TextGeneration, TextGenerationOptions,
};
use safeformers_tokenize::TokenizeError;

fn ten_megabytes() -> String {
    let sentence = "the weather is nice and the sky is blue, said 42 people. ";
    sentence.repeat(10_000_000 / sentence.len() + 1)
}

/// A hang guard, not a timing assertion: without the bounds these take tens of seconds.
fn quick<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    let took = start.elapsed();
    assert!(took < Duration::from_secs(60), "{what} took {took:?}");
    out
}

#[test]
fn a_10_mb_prompt_is_refused_or_truncated_without_tokenizing_it_all() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/decoders/gpt2");
    let pipeline = TextGeneration::from_dir(&dir, &LoadOptions::default()).unwrap();
    let prompt = [GenerationInput::Text(ten_megabytes())];
    let options = TextGenerationOptions {
        generation: GenerationConfig {
            do_sample: Some(false),
            max_new_tokens: Some(3),
            ..GenerationConfig::default()
        },
        ..TextGenerationOptions::default()
    };
    let err = quick("refusing", || pipeline.run(&prompt, &options).unwrap_err());
    assert!(
        matches!(
            err,
            PipelineError::Tokenize(TokenizeError::TooManyTokens { .. })
        ),
        "{err}"
    );
    let truncated = TextGenerationOptions {
        truncate: true,
        ..options
    };
    let out = quick("truncating", || pipeline.run(&prompt, &truncated).unwrap());
    assert_eq!(out[0].new_tokens, 3);
}

#[test]
fn a_10_mb_input_to_an_encoder_is_cut_to_its_truncation_length_first() {
    let pipeline =
        FeatureExtraction::from_dir(&common::minilm_dir(), &FeatureExtractionOptions::default())
            .unwrap();
    let text = ten_megabytes();
    let whole = quick("embedding", || pipeline.run(&[text.as_str()]).unwrap());
    // The first 256 tokens (MiniLM's max length) are all in the first 20 kB.
    let start = pipeline.run(&[&text[..20_000]]).unwrap();
    let (Features::Sentences(whole), Features::Sentences(start)) = (whole, start) else {
        panic!("sentence embeddings expected");
    };
    assert_eq!(whole, start);
}
