//! feature-extraction against the goldens of `scripts/make_model_fixtures.py`: the real
//! all-MiniLM-L6-v2 against sentence-transformers (`minilm-golden.json`), and the tiny base
//! models against Transformers' `feature-extraction` pipeline (`pipelines.json`).

mod common;

use safeformers_pipelines::{
    FeatureExtraction, FeatureExtractionOptions, Features, PipelineError, PoolingMode,
    cosine_similarity,
};

#[test]
fn minilm_matches_sentence_transformers() -> Result<(), PipelineError> {
    let golden = common::json("minilm-golden.json");
    let pipeline =
        FeatureExtraction::from_dir(&common::minilm_dir(), &FeatureExtractionOptions::default())?;
    let st = pipeline
        .sentence_transformer()
        .expect("a sentence-transformers folder");
    assert_eq!(st.pooling, vec![PoolingMode::Mean]);
    assert!(st.normalize);
    assert_eq!(pipeline.max_length(), 256);

    let sentences: Vec<String> = golden["sentences"]
        .as_array()
        .expect("sentences")
        .iter()
        .map(|s| s.as_str().expect("string").to_string())
        .collect();
    assert_eq!(sentences.len(), 8);

    // Token ids: the whole list as one batch, as sentence-transformers' preprocess saw it.
    let encodings = pipeline.tokenize(&sentences)?;
    for (field, get) in [
        (
            "input_ids",
            (|r| &r.input_ids) as fn(&safeformers_tokenize::Encoding) -> &Vec<u32>,
        ),
        ("attention_mask", |r| &r.attention_mask),
        ("token_type_ids", |r| &r.token_type_ids),
    ] {
        let expected: Vec<Vec<u32>> =
            serde_json::from_value(golden["tokens"][field]["data"].clone()).expect("ids");
        let actual: Vec<Vec<u32>> = encodings.iter().map(|r| get(r).clone()).collect();
        assert_eq!(actual, expected, "{field}");
    }

    // Embeddings, at batch sizes that change the padding (1 and 2 run several batches at once
    // on rayon's pool; 8 runs one padded batch with every thread).
    let expected: Vec<Vec<f32>> =
        serde_json::from_value(golden["embeddings"]["data"].clone()).expect("embeddings");
    for batch_size in [1, 2, 8] {
        let pipeline = FeatureExtraction::from_dir(
            &common::minilm_dir(),
            &FeatureExtractionOptions {
                batch_size,
                ..Default::default()
            },
        )?;
        let actual = pipeline.embed(&sentences)?;
        let mut worst = 1.0f32;
        for (a, e) in actual.iter().zip(&expected) {
            assert_eq!(a.len(), 384);
            worst = worst.min(cosine_similarity(a, e));
        }
        eprintln!("MiniLM batch {batch_size}: worst cosine to sentence-transformers {worst:.8}");
        assert!(worst >= 0.99999, "batch {batch_size}: worst cosine {worst}");
    }

    let pair: Vec<String> =
        serde_json::from_value(golden["similarity"]["sentences"].clone()).expect("pair");
    let stored = golden["similarity"]["cosine"].as_f64().expect("cosine") as f32;
    let vectors = pipeline.embed(&pair)?;
    let cosine = cosine_similarity(&vectors[0], &vectors[1]);
    eprintln!("MiniLM pair cosine {cosine} (stored {stored})");
    assert!((cosine - stored).abs() < 1e-5, "{cosine} vs {stored}");
    Ok(())
}

#[test]
fn tiny_models_match_the_transformers_pipeline() -> Result<(), PipelineError> {
    let mut worst = 0f32;
    for entry in common::entries("feature-extraction") {
        let name = entry["model"].as_str().expect("model");
        let input = entry["inputs"].as_str().expect("input");
        let pipeline = FeatureExtraction::from_dir(
            &common::model(name),
            &FeatureExtractionOptions::default(),
        )?;
        assert!(pipeline.sentence_transformer().is_none());
        let Features::Tokens(tokens) = pipeline.run(&[input])? else {
            panic!("{name}: token embeddings expected");
        };
        // The pipeline's output is [1, L, 32].
        let expected = &entry["output"][0];
        let expected_len = expected.as_array().expect("rows").len();
        assert_eq!(tokens[0].len(), expected_len, "{name}");
        let actual: Vec<f32> = tokens[0].iter().flatten().copied().collect();
        let diff = safeformers_testkit::max_abs_diff(&actual, &common::flat_f32(expected));
        assert!(diff <= 1e-4, "{name}: max abs diff {diff}");
        worst = worst.max(diff);
    }
    eprintln!("feature-extraction tiny models: worst max abs diff {worst:e}");
    Ok(())
}

#[test]
fn pooling_options_on_a_plain_folder() -> Result<(), PipelineError> {
    let options = FeatureExtractionOptions {
        pooling: Some(vec![PoolingMode::Mean]),
        normalize: true,
        batch_size: 2,
        ..Default::default()
    };
    let pipeline = FeatureExtraction::from_dir(&common::model("bert"), &options)?;
    let long = "word ".repeat(20_000);
    let inputs = ["", "hello world", long.as_str(), "a"];
    let vectors = pipeline.embed(&inputs)?;
    assert_eq!(vectors.len(), 4);
    for vector in &vectors {
        assert_eq!(vector.len(), 32);
        let norm: f32 = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
    }
    // Same vectors one at a time (batching and padding do not change results).
    for (input, batched) in inputs.iter().zip(&vectors) {
        let alone = pipeline.embed(&[input])?;
        assert!(cosine_similarity(&alone[0], batched) > 0.99999);
    }
    assert!(pipeline.embed::<&str>(&[])?.is_empty());

    let plain = FeatureExtraction::from_dir(&common::model("roberta"), &Default::default())?;
    let Features::Tokens(tokens) = plain.run(&[long.as_str()])? else {
        panic!("tokens expected");
    };
    assert_eq!(tokens[0].len(), 62, "truncated to model_max_length");
    assert!(
        plain.embed(&["x"]).is_err(),
        "no pooling: embed is an error"
    );
    Ok(())
}

#[test]
fn token_id_rows_embed_as_their_text_does() -> Result<(), PipelineError> {
    for model in ["bert", "roberta"] {
        let options = FeatureExtractionOptions {
            pooling: Some(vec![PoolingMode::Mean]),
            batch_size: 2,
            ..Default::default()
        };
        let pipeline = FeatureExtraction::from_dir(&common::model(model), &options)?;
        let texts = ["hello world", "a", "the quick brown fox jumps over it"];
        let rows: Vec<Vec<u32>> = pipeline
            .tokenize(&texts)?
            .iter()
            .map(|row| {
                row.input_ids
                    .iter()
                    .zip(&row.attention_mask)
                    .filter(|(_, mask)| **mask == 1)
                    .map(|(id, _)| *id)
                    .collect()
            })
            .collect();
        let (Features::Sentences(from_ids), Features::Sentences(from_text)) =
            (pipeline.run_token_ids(&rows)?, pipeline.run(&texts)?)
        else {
            panic!("{model}: sentence vectors expected");
        };
        for (a, b) in from_ids.iter().zip(&from_text) {
            let worst = a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f32::max);
            assert!(worst <= 1e-6, "{model}: {worst}");
        }
        // Empty rows, ids outside the vocabulary and rows past the model's length are refused.
        let vocab = pipeline.encoder().tokenizer().vocab_size() as u32;
        let too_long = vec![rows[0][0]; pipeline.max_length() + 1];
        for bad in [vec![], vec![vocab], too_long] {
            let error = pipeline.run_token_ids(&[rows[0].clone(), bad]).unwrap_err();
            assert!(error.to_string().contains("token row 1"), "{error}");
        }
    }
    Ok(())
}
