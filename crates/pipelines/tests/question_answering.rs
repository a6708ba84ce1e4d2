//! question-answering against Transformers 4.57.6's pipeline (`pipelines.json`, made by
//! `scripts/make_model_fixtures.py`): identical answers and character offsets, scores within
//! 1e-4; long contexts in several windows; bad inputs are errors, not panics.
#![allow(clippy::indexing_slicing, clippy::expect_used, clippy::panic)]

mod common;

use safeformers_pipelines::{
    Answer, LoadOptions, PipelineError, QuestionAnswering, QuestionAnsweringOptions,
};

fn pipeline(name: &str) -> QuestionAnswering {
    QuestionAnswering::from_dir(&common::model(name), &LoadOptions::default(), 4)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn question_answering_matches_transformers() -> Result<(), PipelineError> {
    let (entries, mut diffs) = common::golden("question-answering");
    assert_eq!(entries.len(), 16);
    for entry in &entries {
        let name = entry["model"].as_str().expect("model");
        let question = entry["inputs"]["question"].as_str().expect("question");
        let context = entry["inputs"]["context"].as_str().expect("context");
        let top_k = entry["kwargs"]["top_k"].as_u64().map_or(1, |k| k as usize);
        let results = pipeline(name).run(
            &[(question, context)],
            top_k,
            &QuestionAnsweringOptions::default(),
        )?;
        let expected: Vec<serde_json::Value> = match &entry["output"] {
            serde_json::Value::Array(list) => list.clone(),
            one => vec![one.clone()],
        };
        let actual = &results[0];
        assert_eq!(
            actual.len(),
            expected.len(),
            "{name} top_k {top_k}: {actual:?}\nvs {expected:?}"
        );
        for (a, e) in actual.iter().zip(&expected) {
            assert_eq!(
                a.answer,
                e["answer"].as_str().expect("answer"),
                "{name} {top_k}: {a:?} vs {e}"
            );
            assert_eq!(
                a.start as u64,
                e["start"].as_u64().expect("start"),
                "{name}: {a:?} vs {e}"
            );
            assert_eq!(
                a.end as u64,
                e["end"].as_u64().expect("end"),
                "{name}: {a:?} vs {e}"
            );
            diffs.check(
                (a.score - e["score"].as_f64().expect("score")).abs(),
                format_args!("{name} {top_k}"),
            );
        }
    }
    diffs.report(entries.len());
    Ok(())
}

/// A context far longer than one window (62-64 tokens here): several overlapping windows.
#[test]
fn long_context_is_read_in_windows() -> Result<(), PipelineError> {
    let sentence = "My name is Sarah and I live in London. The capital of France is Paris. ";
    let context = sentence.repeat(12);
    for name in ["bert-qa", "distilbert-qa", "roberta-qa", "xlm-roberta-qa"] {
        let qa = pipeline(name);
        let pairs = [("Where does Sarah live?", context.as_str())];
        let windows = qa
            .encoder()
            .tokenizer()
            .encode_pair_batch(
                &pairs,
                &safeformers_tokenize::EncodeOptions {
                    truncation: Some(qa.encoder().max_length()),
                    truncation_strategy: safeformers_tokenize::TruncationStrategy::OnlySecond,
                    stride: qa.encoder().max_length() / 2,
                    return_overflowing_tokens: true,
                    ..Default::default()
                },
            )
            .expect("encodes");
        assert!(windows.len() >= 4, "{name}: {} windows", windows.len());
        let options = QuestionAnsweringOptions::default();
        let first = qa.run(&pairs, 5, &options)?;
        let again = qa.run(&pairs, 5, &options)?;
        assert_eq!(first, again, "{name}: not deterministic");
        let answers: &[Answer] = &first[0];
        assert_eq!(answers.len(), 5, "{name}");
        let chars: Vec<char> = context.chars().collect();
        for answer in answers {
            assert!(
                answer.start < answer.end && answer.end <= chars.len(),
                "{name}: {answer:?}"
            );
            let text: String = chars[answer.start..answer.end].iter().collect();
            assert_eq!(text, answer.answer, "{name}");
            assert!(
                answer.score > 0.0 && answer.score <= 1.0,
                "{name}: {answer:?}"
            );
        }
        assert!(
            answers.windows(2).all(|w| w[0].score >= w[1].score),
            "{name}"
        );
        // Batched with other inputs and smaller batches: the same answers.
        let mixed = qa.run(
            &[
                ("Where?", "In London."),
                ("Where does Sarah live?", context.as_str()),
            ],
            5,
            &options,
        )?;
        assert_eq!(mixed[1], first[0], "{name}: batching changed the answers");
        // The impossible answer joins the ranking (a short context: few spans to outrank).
        let with_null = qa.run(
            &[("Where?", "In London.")],
            50,
            &QuestionAnsweringOptions {
                handle_impossible_answer: true,
                ..QuestionAnsweringOptions::default()
            },
        )?;
        assert!(
            with_null[0]
                .iter()
                .any(|a| a.answer.is_empty() && a.start == 0 && a.end == 0),
            "{name}: {:?}",
            with_null[0]
        );
    }
    Ok(())
}

#[test]
fn bad_inputs_are_errors() {
    let qa = pipeline("bert-qa");
    let options = QuestionAnsweringOptions::default();
    let expect_error =
        |pairs: &[(&str, &str)], top_k: usize, options: &QuestionAnsweringOptions, needle: &str| {
            match qa.run(pairs, top_k, options) {
                Err(PipelineError::InvalidInput(message)) => {
                    assert!(message.contains(needle), "{message}")
                }
                other => panic!("expected an error with `{needle}`, got {other:?}"),
            }
        };
    expect_error(&[("", "Paris.")], 1, &options, "question is empty");
    expect_error(&[("Where?", "")], 1, &options, "context is empty");
    let huge = "word ".repeat(250_000);
    expect_error(&[("Where?", &huge)], 1, &options, "more than the limit");
    expect_error(&[("Where?", "Paris.")], 0, &options, "top_k");
    let zero = QuestionAnsweringOptions {
        max_answer_len: 0,
        ..options.clone()
    };
    expect_error(&[("Where?", "Paris.")], 1, &zero, "max_answer_len");
    let long = QuestionAnsweringOptions {
        max_seq_len: Some(10_000),
        ..options.clone()
    };
    expect_error(&[("Where?", "Paris.")], 1, &long, "max_seq_len");
    let stride = QuestionAnsweringOptions {
        max_seq_len: Some(32),
        doc_stride: Some(40),
        ..options.clone()
    };
    expect_error(&[("Where?", "Paris.")], 1, &stride, "doc_stride");
    // A question that leaves no room for the context: an error from the tokenizer, no panic.
    let question = "where ".repeat(200);
    assert!(
        qa.run(&[(question.as_str(), "Paris.")], 1, &options)
            .is_err()
    );
    // Nothing in, nothing out; a one-word context still answers.
    let none: &[(&str, &str)] = &[];
    assert!(qa.run(none, 1, &options).expect("runs").is_empty());
    let one = qa.run(&[("Where?", "Paris")], 3, &options).expect("runs");
    assert_eq!(one[0][0].answer, "Paris");
}
