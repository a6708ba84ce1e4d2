//! token-classification against Transformers' pipeline (`pipelines.json`, made by
//! `scripts/make_model_fixtures.py`): every aggregation strategy, identical labels, words and
//! offsets, scores within 1e-4.

mod common;

use safeformers_pipelines::{Aggregation, LoadOptions, PipelineError, TokenClassification};

#[test]
fn token_classification_matches_transformers() -> Result<(), PipelineError> {
    let (entries, mut diffs) = common::golden("token-classification");
    for entry in &entries {
        let name = entry["model"].as_str().expect("model");
        let input = entry["inputs"].as_str().expect("input");
        let strategy = entry["kwargs"]["aggregation_strategy"]
            .as_str()
            .expect("strategy");
        let aggregation = Aggregation::parse(strategy).expect("known strategy");
        let pipeline =
            TokenClassification::from_dir(&common::model(name), &LoadOptions::default(), 32)?;
        let results = pipeline.run(
            &[
                input,
                "padding makes this batch longer than the first input",
            ],
            aggregation,
        )?;
        let actual = serde_json::to_value(&results[0]).expect("json");
        let (actual, expected) = (
            actual.as_array().expect("list"),
            entry["output"].as_array().expect("list"),
        );
        assert_eq!(
            actual.len(),
            expected.len(),
            "{name} {strategy}: {actual:?}\nvs {expected:?}"
        );
        for (a, e) in actual.iter().zip(expected) {
            for key in ["entity", "entity_group", "index", "word", "start", "end"] {
                assert_eq!(
                    a.get(key),
                    e.get(key),
                    "{name} {strategy} {key}: {a} vs {e}"
                );
            }
            diffs.check(
                (a["score"].as_f64().expect("score") - e["score"].as_f64().expect("score")).abs(),
                format_args!("{name} {strategy}"),
            );
        }
    }
    diffs.report(entries.len());
    Ok(())
}
