//! Bad configs, checkpoints and inputs are errors that name what is wrong, never panics.

mod common;

use candle_core::{DType, Device, Tensor};
use common::{tiny_bert_config, tiny_bert_tensors, write_model};
use safeformers_models::{AutoModel, Error, Head, ModelOutput};
use safeformers_weights::LoadPolicy;
use serde_json::json;

fn load(dir: &std::path::Path) -> Result<safeformers_models::LoadedModel, Error> {
    AutoModel::load(dir, &LoadPolicy::default(), &Device::Cpu)
}

#[test]
fn tiny_bert_loads_with_and_without_prefix() -> Result<(), Error> {
    for prefix in ["", "bert."] {
        let dir = write_model(
            "prefix",
            &tiny_bert_config(json!({})),
            &tiny_bert_tensors(prefix),
        );
        let model = load(&dir)?;
        assert_eq!(model.class_name(), "BertModel");
        let ids = Tensor::new(&[[1u32, 5, 7, 2]], &Device::Cpu)?;
        let output = model.forward(&ids, None, None)?;
        let ModelOutput::BaseModel {
            last_hidden_state,
            pooler_output,
        } = output
        else {
            panic!("a base model returns hidden states");
        };
        assert_eq!(last_hidden_state.dims(), &[1, 4, common::HIDDEN]);
        assert_eq!(
            pooler_output.map(|p| p.dims().to_vec()),
            Some(vec![1, common::HIDDEN])
        );
    }
    Ok(())
}

#[test]
fn legacy_gamma_beta_names_load() -> Result<(), Error> {
    let tensors: Vec<_> = tiny_bert_tensors("")
        .into_iter()
        .map(|(name, shape, values)| {
            let name = name
                .replace("LayerNorm.weight", "LayerNorm.gamma")
                .replace("LayerNorm.bias", "LayerNorm.beta");
            (name, shape, values)
        })
        .collect();
    let dir = write_model("legacy", &tiny_bert_config(json!({})), &tensors);
    let plain = write_model(
        "plain",
        &tiny_bert_config(json!({})),
        &tiny_bert_tensors(""),
    );
    let ids = Tensor::new(&[[1u32, 5, 7]], &Device::Cpu)?;
    let a = load(&dir)?.forward(&ids, None, None)?;
    let b = load(&plain)?.forward(&ids, None, None)?;
    let diff = (a.last_hidden_state().cloned().ok_or_else(|| Error::Input {
        input: "x",
        reason: String::new(),
    })? - b.last_hidden_state().cloned().ok_or_else(|| Error::Input {
        input: "x",
        reason: String::new(),
    })?)?
    .abs()?
    .max_all()?
    .to_scalar::<f32>()?;
    assert_eq!(diff, 0.0);
    Ok(())
}

#[test]
fn missing_config_field_is_named() {
    let mut config = tiny_bert_config(json!({}));
    config.as_object_mut().map(|c| c.remove("hidden_size"));
    let dir = write_model("nofield", &config, &tiny_bert_tensors(""));
    match load(&dir) {
        Err(
            error @ Error::MissingConfigField {
                field: "hidden_size",
                ..
            },
        ) => {
            assert!(error.to_string().contains("hidden_size"), "{error}");
        }
        other => panic!("expected a missing-field error, got {other:?}"),
    }
}

#[test]
fn missing_tensor_is_named() {
    let tensors: Vec<_> = tiny_bert_tensors("")
        .into_iter()
        .filter(|(name, _, _)| name != "encoder.layer.1.intermediate.dense.weight")
        .collect();
    let dir = write_model("notensor", &tiny_bert_config(json!({})), &tensors);
    match load(&dir) {
        Err(error @ Error::MissingTensor { .. }) => {
            let message = error.to_string();
            assert!(
                message.contains("encoder.layer.1.intermediate.dense.weight"),
                "{message}"
            );
        }
        other => panic!("expected a missing-tensor error, got {other:?}"),
    }
}

#[test]
fn wrong_shape_names_tensor_and_shapes() {
    let tensors: Vec<_> = tiny_bert_tensors("")
        .into_iter()
        .map(|(name, shape, values)| {
            if name == "encoder.layer.0.attention.self.key.weight" {
                (name, vec![4, 16], values)
            } else {
                (name, shape, values)
            }
        })
        .collect();
    let dir = write_model("shape", &tiny_bert_config(json!({})), &tensors);
    match load(&dir) {
        Err(Error::TensorShape {
            tensor,
            expected,
            actual,
        }) => {
            assert_eq!(tensor, "encoder.layer.0.attention.self.key.weight");
            assert_eq!(expected, vec![8, 8]);
            assert_eq!(actual, vec![4, 16]);
        }
        other => panic!("expected a shape error, got {other:?}"),
    }
}

#[test]
fn remote_code_model_is_refused_before_weights_are_read() {
    let config = json!({
        "model_type": "my-model",
        "architectures": ["MyModel"],
        "auto_map": {"AutoConfig": "configuration_x.MyConfig", "AutoModel": "modeling_x.MyModel"},
    });
    // No weights at all: the refusal must come first.
    let dir = common::temp_dir("remote");
    std::fs::write(dir.join("config.json"), config.to_string()).expect("write");
    std::fs::write(dir.join("modeling_x.py"), "raise SystemExit('never run')").expect("write");
    match load(&dir) {
        Err(error) => {
            assert!(error.is_policy_refusal(), "{error}");
            let message = error.to_string();
            assert!(
                message.contains("needs custom code (auto_map → modeling_x.MyModel"),
                "{message}"
            );
            assert!(
                message.contains("does not run code from model repos"),
                "{message}"
            );
        }
        Ok(_) => panic!("a remote-code model must be refused"),
    }
}

#[test]
fn unknown_model_type_is_unsupported_not_refused() {
    let dir = write_model(
        "unknown",
        &json!({"model_type": "gpt9"}),
        &tiny_bert_tensors(""),
    );
    match load(&dir) {
        Err(error @ Error::UnsupportedModelType { .. }) => {
            assert!(!error.is_policy_refusal());
            assert!(
                error
                    .to_string()
                    .contains("supported: bert, roberta, xlm-roberta, distilbert")
            );
        }
        other => panic!("expected unsupported model type, got {other:?}"),
    }
}

#[test]
fn bad_inputs_are_errors() -> Result<(), Error> {
    let dir = write_model(
        "inputs",
        &tiny_bert_config(json!({})),
        &tiny_bert_tensors(""),
    );
    let model = load(&dir)?;
    let cpu = &Device::Cpu;
    let cases: Vec<(&str, Tensor, Option<Tensor>, Option<Tensor>)> = vec![
        (
            "id out of vocab",
            Tensor::new(&[[1u32, 20]], cpu)?,
            None,
            None,
        ),
        ("negative id", Tensor::new(&[[1i64, -3]], cpu)?, None, None),
        ("huge id", Tensor::new(&[[u32::MAX]], cpu)?, None, None),
        ("empty", Tensor::zeros((1, 0), DType::U32, cpu)?, None, None),
        (
            "empty batch",
            Tensor::zeros((0, 3), DType::U32, cpu)?,
            None,
            None,
        ),
        ("rank 1", Tensor::new(&[1u32, 2], cpu)?, None, None),
        ("float ids", Tensor::new(&[[1f32, 2.0]], cpu)?, None, None),
        (
            "too long",
            Tensor::ones((1, 17), DType::U32, cpu)?,
            None,
            None,
        ),
        (
            "mask shape",
            Tensor::new(&[[1u32, 2]], cpu)?,
            Some(Tensor::new(&[[1u32]], cpu)?),
            None,
        ),
        (
            "type out of range",
            Tensor::new(&[[1u32, 2]], cpu)?,
            None,
            Some(Tensor::new(&[[0u32, 2]], cpu)?),
        ),
    ];
    for (what, ids, mask, types) in cases {
        match model.forward(&ids, mask.as_ref(), types.as_ref()) {
            Err(Error::Input { .. }) => {}
            other => panic!("{what}: expected an input error, got {other:?}"),
        }
    }
    Ok(())
}

#[test]
fn classification_head_without_classifier_names_it() {
    let config = tiny_bert_config(json!({"architectures": ["BertForSequenceClassification"]}));
    let dir = write_model("nohead", &config, &tiny_bert_tensors("bert."));
    match load(&dir) {
        Err(error @ Error::MissingTensor { .. }) => {
            assert!(error.to_string().contains("`classifier.weight`"), "{error}");
        }
        other => panic!("expected a missing classifier, got {other:?}"),
    }
    // The same checkpoint still loads as a base model.
    assert!(
        AutoModel::load_with_head(&dir, Head::Base, &LoadPolicy::default(), &Device::Cpu).is_ok()
    );
}

#[test]
fn untied_mlm_decoder_must_be_in_the_checkpoint() {
    let mut tensors: Vec<_> = tiny_bert_tensors("bert.")
        .into_iter()
        .filter(|(name, _, _)| !name.contains("pooler"))
        .collect();
    let h = common::HIDDEN;
    for (name, shape) in [
        ("cls.predictions.transform.dense.weight", vec![h, h]),
        ("cls.predictions.transform.dense.bias", vec![h]),
        ("cls.predictions.transform.LayerNorm.weight", vec![h]),
        ("cls.predictions.transform.LayerNorm.bias", vec![h]),
        ("cls.predictions.bias", vec![common::VOCAB]),
    ] {
        let count = shape.iter().product();
        tensors.push((name.to_string(), shape, common::values(count, 99)));
    }
    let tied = tiny_bert_config(json!({"architectures": ["BertForMaskedLM"]}));
    let dir = write_model("tied", &tied, &tensors);
    let model = load(&dir).expect("a tied decoder comes from the word embeddings");
    let ids = Tensor::new(&[[1u32, 2, 3]], &Device::Cpu).expect("ids");
    let logits = model.forward(&ids, None, None).expect("forward");
    assert_eq!(
        logits.logits().map(|l| l.dims().to_vec()),
        Some(vec![1, 3, common::VOCAB])
    );

    let untied = tiny_bert_config(json!({
        "architectures": ["BertForMaskedLM"],
        "tie_word_embeddings": false,
    }));
    let dir = write_model("untied", &untied, &tensors);
    match load(&dir) {
        Err(error @ Error::MissingTensor { .. }) => {
            assert!(
                error.to_string().contains("cls.predictions.decoder.weight"),
                "{error}"
            );
        }
        other => panic!("expected the untied decoder to be required, got {other:?}"),
    }
}
