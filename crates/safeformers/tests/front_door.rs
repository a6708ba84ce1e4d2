//! The library's own surface: task names, `from_pretrained` on folders, options that must do
//! what they say, and outputs shaped as the CLI prints them.

use safeformers::{
    AutoModel, AutoModelForCausalLM, FeatureExtractionSettings, FillMask, FromPretrained, Input,
    Options, Output, Quantization, Task, TextClassification, Tokenizer, WeightDtype, WeightOptions,
    pipeline,
};
use safeformers_testkit::repo_fixture as fixture;

#[test]
fn task_names_and_aliases() {
    assert_eq!(Task::from_name("ner").unwrap(), Task::TokenClassification);
    assert_eq!(
        Task::from_name("sentiment-analysis").unwrap(),
        Task::TextClassification
    );
    for task in Task::ALL {
        assert_eq!(Task::from_name(task.name()).unwrap(), task);
    }
    let error = pipeline("summarization", fixture("models/bert"), &Options::new()).unwrap_err();
    assert!(error.is_usage_error(), "{error}");
    assert!(error.to_string().contains("fill-mask"), "{error}");
}

#[test]
fn encoders_and_decoders_honour_weight_storage() {
    let f16 = WeightOptions::new(WeightDtype::F16, None).unwrap();
    let q8 = WeightOptions::new(WeightDtype::F32, Some(Quantization::Q8)).unwrap();
    for weights in [f16, q8] {
        let options = Options::new().weights(weights);
        FillMask::from_pretrained(fixture("models/bert-mlm"), &options).unwrap();
    }
    let options = Options::new().weights(q8);
    AutoModelForCausalLM::from_pretrained(fixture("decoders/gpt2"), &options).unwrap();
}

#[test]
fn from_pretrained_on_folders() {
    let options = Options::new();
    let tokenizer = Tokenizer::from_pretrained(fixture("models/bert"), &options).unwrap();
    let encoded = tokenizer
        .encode("hello world", &Default::default())
        .unwrap();
    assert!(!encoded.rows[0].input_ids.is_empty());
    AutoModel::from_pretrained(fixture("models/bert-seqcls"), &options).unwrap();
    let classify =
        TextClassification::from_pretrained(fixture("models/bert-seqcls"), &options).unwrap();
    let best = classify.run(&["good", "bad"], None).unwrap();
    let top2 = classify.run(&["good"], Some(2)).unwrap();
    let best = serde_json::to_value(best).unwrap();
    let top2 = serde_json::to_value(top2).unwrap();
    assert_eq!(best.as_array().unwrap().len(), 2);
    assert!(best[0]["label"].is_string());
    assert_eq!(top2[0].as_array().unwrap().len(), 2);
}

#[test]
fn generic_pipeline_outputs_are_the_cli_lines() {
    let options = Options::new().batch_size(1);
    let qa = pipeline("question-answering", fixture("models/bert-qa"), &options).unwrap();
    let inputs = [
        Input::QuestionContext {
            question: "Who?".into(),
            context: "Alice met Bob.".into(),
        },
        Input::QuestionContext {
            question: "Where?".into(),
            context: "In Paris.".into(),
        },
    ];
    let output = qa.run(&inputs).unwrap();
    let json = output.to_json().unwrap();
    // One object per line, as `safeformers run question-answering -` prints them.
    assert_eq!(json.lines().count(), 2, "{json}");
    for line in json.lines() {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(value["answer"].is_string(), "{line}");
    }
    // A text input where a question is needed names the input.
    let error = qa.run(&[Input::from("hello")]).unwrap_err();
    assert!(
        error.is_usage_error() && error.to_string().contains("input 1"),
        "{error}"
    );
    assert!(matches!(output, Output::QuestionAnswering(_)));
}

#[test]
fn a_folder_with_a_link_out_of_it_is_refused() {
    let dir = std::env::temp_dir().join(format!("sf-front-door-link-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(fixture("models/bert")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    std::fs::remove_file(dir.join("config.json")).unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink("/etc/hostname", dir.join("config.json")).unwrap();
    let error = AutoModel::from_pretrained(&dir, &Options::new()).unwrap_err();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(error.is_policy_refusal(), "{error}");
}

#[test]
fn offline_and_not_cached_is_a_policy_refusal() {
    // HF_HUB_CACHE is not touched here (no env changes in tests): an offline load of a repo
    // id that no cache can hold (a fresh random name) is refused whatever the cache is.
    let name = format!("safeformers-test/not-cached-{}", std::process::id());
    let error = AutoModel::from_pretrained(&name, &Options::new().offline(true)).unwrap_err();
    assert!(error.is_policy_refusal(), "{error}");
}

#[test]
fn sentence_similarity_refuses_token_embeddings_before_loading() {
    let no_pooling = FeatureExtractionSettings {
        pooling: Some(Vec::new()),
        ..FeatureExtractionSettings::default()
    };
    let error = safeformers::pipeline_with(
        Task::SentenceSimilarity,
        fixture("models/bert"),
        &Options::new(),
        &no_pooling,
    )
    .unwrap_err();
    assert!(
        error.is_usage_error() && error.to_string().starts_with("pooling:"),
        "{error}"
    );
    // Feature extraction takes the same settings: token embeddings.
    let tokens = safeformers::pipeline_with(
        Task::FeatureExtraction,
        fixture("models/bert"),
        &Options::new(),
        &no_pooling,
    )
    .unwrap();
    let output = tokens.run(&[Input::from("hello")]).unwrap();
    assert!(matches!(
        output,
        Output::FeatureExtraction(safeformers::Embeddings::Tokens(_))
    ));
}
