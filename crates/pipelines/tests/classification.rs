//! text-classification and fill-mask against Transformers' pipelines (`pipelines.json`, made by
//! `scripts/make_model_fixtures.py`): identical labels and tokens, scores within 1e-4.

mod common;

use safeformers_pipelines::{FillMask, LoadOptions, PipelineError, TextClassification};

#[test]
fn text_classification_matches_transformers() -> Result<(), PipelineError> {
    let (entries, mut diffs) = common::golden("text-classification");
    for entry in &entries {
        let name = entry["model"].as_str().expect("model");
        let input = entry["inputs"].as_str().expect("input");
        assert!(entry["kwargs"]["top_k"].is_null());
        let pipeline =
            TextClassification::from_dir(&common::model(name), &LoadOptions::default(), 32)?;
        // With another input in the batch (padding must not change anything).
        let results = pipeline.run(
            &[input, "a much longer sentence than most of the others here"],
            None,
        )?;
        let expected = entry["output"].as_array().expect("labels");
        assert_eq!(results[0].len(), expected.len(), "{name}");
        for (actual, expected) in results[0].iter().zip(expected) {
            assert_eq!(
                actual.label,
                expected["label"].as_str().expect("label"),
                "{name}: {input}"
            );
            diffs.check(
                f64::from((actual.score - expected["score"].as_f64().expect("score") as f32).abs()),
                format_args!("{name}"),
            );
        }
        let top = pipeline.run(&[input], Some(1))?;
        assert_eq!(top[0].len(), 1);
        assert_eq!(top[0][0].label, results[0][0].label);
    }
    diffs.report(entries.len());
    Ok(())
}

#[test]
fn fill_mask_matches_transformers() -> Result<(), PipelineError> {
    let (entries, mut diffs) = common::golden("fill-mask");
    for entry in &entries {
        let name = entry["model"].as_str().expect("model");
        let input = entry["inputs"].as_str().expect("input");
        let top_k = entry["kwargs"]["top_k"].as_u64().expect("top_k") as usize;
        let pipeline = FillMask::from_dir(&common::model(name), &LoadOptions::default(), 32)?;
        let filler = format!(
            "{} and more words so that the first input is padded",
            pipeline.mask_token()
        );
        let results = pipeline.run(&[input, filler.as_str()], top_k)?;
        assert_eq!(results[0].len(), 1, "one mask");
        let expected = entry["output"].as_array().expect("fills");
        assert_eq!(results[0][0].len(), expected.len());
        for (actual, expected) in results[0][0].iter().zip(expected) {
            assert_eq!(
                actual.token,
                expected["token"].as_u64().expect("token") as u32,
                "{name}"
            );
            assert_eq!(
                actual.token_str,
                expected["token_str"].as_str().expect("str"),
                "{name}"
            );
            assert_eq!(
                actual.sequence,
                expected["sequence"].as_str().expect("seq"),
                "{name}"
            );
            diffs.check(
                f64::from((actual.score - expected["score"].as_f64().expect("score") as f32).abs()),
                format_args!("{name}"),
            );
        }
    }
    diffs.report(entries.len());

    let pipeline = FillMask::from_dir(&common::model("bert-mlm"), &LoadOptions::default(), 32)?;
    assert!(matches!(
        pipeline.run(&["no mask here"], 5),
        Err(PipelineError::InvalidInput(_))
    ));
    let two = pipeline.run(&["[MASK] and [MASK]"], 2)?;
    assert_eq!(two[0].len(), 2);
    Ok(())
}

/// `LoadOptions.weights` reaches the encoders: with f16 weights every text-classification
/// fixture gives scores that differ from f32 (the option is not ignored) by little.
#[test]
fn text_classification_honours_the_weight_storage() -> Result<(), PipelineError> {
    let sixteen_bit = LoadOptions {
        weights: safeformers_models::WeightOptions::new(safeformers_models::WeightDtype::F16, None)
            .expect("f16 alone is valid"),
        ..LoadOptions::default()
    };
    let mut changed = 0;
    for entry in &common::entries("text-classification") {
        let dir = common::model(entry["model"].as_str().expect("model"));
        let input = entry["inputs"].as_str().expect("input");
        let full =
            TextClassification::from_dir(&dir, &LoadOptions::default(), 32)?.run(&[input], None)?;
        let half = TextClassification::from_dir(&dir, &sixteen_bit, 32)?.run(&[input], None)?;
        for (a, b) in full[0].iter().zip(&half[0]) {
            let diff = (a.score - b.score).abs();
            assert!(diff <= 1e-2, "{dir:?}: f16 score differs by {diff}");
            changed += usize::from(diff > 0.0);
        }
    }
    assert!(changed > 0, "f16 weights left every score unchanged");
    Ok(())
}
