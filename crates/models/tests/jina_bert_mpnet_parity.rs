//! JinaBert v2 and MPNet against their goldens in `tests/fixtures/encoders/` (`jina-bert-*`:
//! our NumPy reference, `scripts/make_jina_bert_fixtures.py`; `mpnet*`: Transformers 5.25's
//! `MPNetModel`, `scripts/make_mpnet_fixtures.py`): every folder, the single sequence and the
//! right-padded batch, `last_hidden_state` within 1e-4 at every position (padded ones included:
//! both references compute them with the same additive mask over keys), and the unpadded
//! `token_states` path at every real position.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use common::{flatten, int_tensor};
use safeformers_models::{AutoModel, Error, Head, LoadedModel, TokenSequence};
use safeformers_testkit::repo_fixture;
use safeformers_weights::LoadPolicy;
use serde_json::Value;

const TOLERANCE: f64 = 1e-4;

fn rows_of(tensor: &Tensor) -> Vec<Vec<u32>> {
    tensor.to_dtype(DType::U32).unwrap().to_vec2().unwrap()
}

/// The fixture folders of one architecture (`prefix`), sorted; at least `expected`.
fn folders(prefix: &str, expected: usize) -> Vec<PathBuf> {
    let root = repo_fixture("encoders");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|error| panic!("{}: {error} (the fixtures are committed)", root.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with(prefix))
                && path.join("outputs.json").is_file()
        })
        .collect();
    dirs.sort();
    assert!(dirs.len() >= expected, "{prefix}: found {dirs:?}");
    dirs
}

fn load(dir: &Path) -> (LoadedModel, Value) {
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("outputs.json")).unwrap()).unwrap();
    let model = AutoModel::load_with_head(dir, Head::Base, &LoadPolicy::default(), &Device::Cpu)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()));
    assert_eq!(model.class_name(), expected["class"].as_str().unwrap());
    (model, expected)
}

/// The padded forward of every case against the golden; the largest difference.
fn check_padded(dir: &Path) -> f64 {
    let name = dir.file_name().unwrap().to_string_lossy().to_string();
    let (model, expected) = load(dir);
    let mut worst = 0f64;
    for (case_name, case) in expected["cases"].as_object().unwrap() {
        let inputs = &case["inputs"];
        let ids = int_tensor(&inputs["input_ids"]);
        let mask = int_tensor(&inputs["attention_mask"]);
        let types = inputs.get("token_type_ids").map(int_tensor);
        assert_eq!(types.is_some(), model.uses_token_type_ids(), "{name}");
        let output = model
            .forward(&ids, Some(&mask), types.as_ref())
            .unwrap_or_else(|error| panic!("{name}/{case_name}: {error}"));
        let hidden = output.last_hidden_state().unwrap();
        let mut reference = Vec::new();
        flatten(
            &case["outputs"]["last_hidden_state"]["data"],
            &mut reference,
        );
        let ours: Vec<f32> = hidden.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(ours.len(), reference.len(), "{name}/{case_name}");
        let diff = ours
            .iter()
            .zip(&reference)
            .map(|(a, b)| (f64::from(*a) - b).abs())
            .fold(0f64, f64::max);
        println!("{name:<18} {case_name:<6} padded forward max abs diff {diff:.2e}");
        assert!(diff <= TOLERANCE, "{name}/{case_name}: {diff}");
        worst = worst.max(diff);
    }
    worst
}

/// `token_states` on each sequence stripped of its padding, against the golden's real
/// positions; the largest difference.
fn check_unpadded(dir: &Path) -> f64 {
    let name = dir.file_name().unwrap().to_string_lossy().to_string();
    let (model, expected) = load(dir);
    let mut worst = 0f64;
    for (case_name, case) in expected["cases"].as_object().unwrap() {
        let mut case_worst = 0f64;
        let inputs = &case["inputs"];
        let ids = rows_of(&int_tensor(&inputs["input_ids"]));
        let mask = rows_of(&int_tensor(&inputs["attention_mask"]));
        let types = inputs
            .get("token_type_ids")
            .map(|types| rows_of(&int_tensor(types)));
        let lengths: Vec<usize> = mask
            .iter()
            .map(|row| row.iter().take_while(|&&flag| flag != 0).count())
            .collect();
        let sequences: Vec<TokenSequence<'_>> = (0..ids.len())
            .map(|b| TokenSequence {
                input_ids: &ids[b][..lengths[b]],
                token_type_ids: types.as_ref().map(|rows| &rows[b][..lengths[b]]),
            })
            .collect();
        let states = model
            .token_states(&sequences)
            .expect("an unpadded path")
            .unwrap_or_else(|error| panic!("{name}/{case_name}: {error}"));
        let mut reference = Vec::new();
        flatten(
            &case["outputs"]["last_hidden_state"]["data"],
            &mut reference,
        );
        let seq = ids[0].len();
        let width = reference.len() / (ids.len() * seq);
        for (b, state) in states.iter().enumerate() {
            assert_eq!(state.len(), lengths[b] * width, "{name}/{case_name}");
            for (t, row) in state.chunks_exact(width).enumerate() {
                let start = (b * seq + t) * width;
                for (ours, theirs) in row.iter().zip(&reference[start..start + width]) {
                    case_worst = case_worst.max((f64::from(*ours) - theirs).abs());
                }
            }
        }
        println!("{name:<18} {case_name:<6} unpadded token_states max abs diff {case_worst:.2e}");
        assert!(case_worst <= TOLERANCE, "{name}/{case_name}: {case_worst}");
        worst = worst.max(case_worst);
    }
    worst
}

#[test]
fn jina_bert_matches_the_reference() {
    for dir in folders("jina-bert-", 3) {
        let worst = check_padded(&dir).max(check_unpadded(&dir));
        println!("{} worst {worst:.2e}", dir.display());
    }
}

#[test]
fn mpnet_matches_transformers() {
    for dir in folders("mpnet", 2) {
        let worst = check_padded(&dir).max(check_unpadded(&dir));
        println!("{} worst {worst:.2e}", dir.display());
    }
}

/// Loaded by `architectures` alone, the checkpoints name a masked-LM class whose head they do
/// not hold: an unsupported head naming the base model, never BERT's code or a guess.
#[test]
fn only_the_base_models_are_implemented() {
    for (folder, class) in [
        ("jina-bert-geglu", "JinaBertForMaskedLM"),
        ("mpnet", "MPNetForMaskedLM"),
    ] {
        let dir = repo_fixture("encoders").join(folder);
        let error =
            AutoModel::load_with_head(&dir, Head::MaskedLm, &LoadPolicy::default(), &Device::Cpu)
                .unwrap_err();
        match &error {
            Error::UnsupportedArchitecture {
                architecture,
                supported,
                ..
            } => {
                assert_eq!(architecture, class);
                assert!(supported.contains("Model (the base model"), "{supported}");
            }
            other => panic!("{folder}: {other}"),
        }
    }
    let jina = repo_fixture("encoders").join("jina-bert-12heads");
    let error = AutoModel::load(&jina, &LoadPolicy::default(), &Device::Cpu).unwrap_err();
    assert!(error.to_string().contains("JinaBertForMaskedLM"), "{error}");
}

/// A sequence longer than the positions allow is an input error, not a clamped bias or an
/// out-of-range position.
#[test]
fn sequences_beyond_the_positions_are_refused() {
    for (folder, longest) in [("mpnet", 78usize), ("jina-bert-reglu", 512)] {
        let (model, _) = load(&repo_fixture("encoders").join(folder));
        let ids = vec![5u32; longest];
        let fits = TokenSequence {
            input_ids: &ids,
            token_type_ids: None,
        };
        model.token_states(&[fits]).unwrap().unwrap();
        let ids = vec![5u32; longest + 1];
        let too_long = TokenSequence {
            input_ids: &ids,
            token_type_ids: None,
        };
        assert!(
            model.token_states(&[too_long]).unwrap().is_err(),
            "{folder}"
        );
    }
}

/// A JinaBert repo whose `auto_map` names code in the model folder itself (here a
/// `modeling_bert.py` whose import would create a canary file) loads the native port with no
/// flag: the file is hashed and named in the notice, never imported or run.
#[test]
fn code_in_the_folder_is_hashed_never_run() {
    use sha2::{Digest, Sha256};

    let source = repo_fixture("encoders").join("jina-bert-geglu");
    let dir = safeformers_testkit::scratch_dir("jina-local-code");
    std::fs::copy(
        source.join("model.safetensors"),
        dir.join("model.safetensors"),
    )
    .unwrap();
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(source.join("config.json")).unwrap())
            .unwrap();
    config["auto_map"] = serde_json::json!({
        "AutoConfig": "configuration_bert.JinaBertConfig",
        "AutoModel": "modeling_bert.JinaBertModel",
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let canary = dir.join("canary");
    let code = format!(
        "open({:?}, 'w').write('ran')\nclass JinaBertModel: pass\n",
        canary.display().to_string()
    );
    std::fs::write(dir.join("modeling_bert.py"), &code).unwrap();

    let model =
        AutoModel::load_with_head(&dir, Head::Base, &LoadPolicy::default(), &Device::Cpu).unwrap();
    assert_eq!(model.class_name(), "JinaBertModel");
    let ids = Tensor::new(&[[2u32, 20, 30, 3]], &Device::Cpu).unwrap();
    model.forward(&ids, None, None).unwrap();
    let sha256: String = Sha256::digest(code.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let notice = safeformers_models::remote_code::notice(model.config(), "JinaBertModel").unwrap();
    assert!(
        notice.contains(&format!("`modeling_bert.py` (sha256 {sha256})"))
            && notice.contains("`configuration_bert.py` (not in the folder)")
            && notice.ends_with("not run; safeformers' JinaBertModel is used"),
        "{notice}"
    );
    assert!(!canary.exists(), "the folder's Python ran");
    std::fs::remove_dir_all(&dir).unwrap();
}
