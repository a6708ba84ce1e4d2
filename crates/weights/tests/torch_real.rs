//! Real `torch.save` checkpoints (zip, legacy, pickle protocols 2/4/5) load bit-identical to
//! their safetensors twins. Fixtures: tests/fixtures/torch-dev/make_dev_fixtures.py.
#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use safeformers_weights::torch::{self, LoadedBytes};
use safeformers_weights::{Dtype, FileFormat};

fn fixture(name: &str) -> PathBuf {
    safeformers_testkit::repo_fixture(&format!("torch-dev/{name}"))
}

/// The twin, read with a minimal safetensors parser (the crate's own reader is tested
/// elsewhere): name -> (dtype, shape, bytes).
fn twin(name: &str) -> BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(fixture(name)).expect("run make_dev_fixtures.py");
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let data = &bytes[8 + header_len..];
    header
        .as_object()
        .unwrap()
        .iter()
        .filter(|(key, _)| *key != "__metadata__")
        .map(|(key, info)| {
            let dtype = Dtype::from_name(info["dtype"].as_str().unwrap()).unwrap();
            let shape = info["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            let start = info["data_offsets"][0].as_u64().unwrap() as usize;
            let end = info["data_offsets"][1].as_u64().unwrap() as usize;
            (key.clone(), (dtype, shape, data[start..end].to_vec()))
        })
        .collect()
}

fn check(name: &str, format: FileFormat) {
    let checkpoint = torch::open(&fixture(&format!("{name}.pt")))
        .unwrap_or_else(|error| panic!("{name}.pt: {error}"));
    assert_eq!(checkpoint.format(), format);
    let expected = twin(&format!("{name}.safetensors"));
    let names: Vec<&str> = checkpoint.names().collect();
    let expected_names: Vec<&str> = expected.keys().map(String::as_str).collect();
    assert_eq!(names, expected_names, "{name}");
    for tensor in checkpoint.tensors() {
        let (dtype, shape, data) = &expected[tensor.name];
        assert_eq!(tensor.dtype, *dtype, "{name}: {}", tensor.name);
        assert_eq!(tensor.shape, shape.as_slice(), "{name}: {}", tensor.name);
        assert_eq!(tensor.data, data.as_slice(), "{name}: {}", tensor.name);
    }
}

#[test]
fn zip_checkpoints_match_their_safetensors_twins() {
    check("zip_f32_and_empty", FileFormat::PytorchZip);
    check("zip_default", FileFormat::PytorchZip);
    check("zip_protocol4", FileFormat::PytorchZip);
    check("zip_protocol5", FileFormat::PytorchZip);
    check("zip_nested", FileFormat::PytorchZip);
    check("zip_parameters", FileFormat::PytorchZip);
}

#[test]
fn legacy_checkpoints_match_their_safetensors_twins() {
    check("legacy_default", FileFormat::PytorchLegacy);
}

#[test]
fn contiguous_tensors_are_zero_copy_and_views_are_gathered() {
    let bytes = std::fs::read(fixture("zip_default.pt")).unwrap();
    let loaded = torch::load_from_bytes(&bytes).unwrap();
    let by_name = |name: &str| loaded.tensors.iter().find(|t| t.name == name).unwrap();
    assert!(matches!(by_name("f32").data, LoadedBytes::Range(_)));
    // Two views of one storage: both borrowed, at different offsets of the same record.
    let (LoadedBytes::Range(head), LoadedBytes::Range(tail)) =
        (&by_name("shared_head").data, &by_name("shared_tail").data)
    else {
        panic!("shared views should be zero-copy");
    };
    assert_eq!(head.end, tail.start);
    assert!(matches!(by_name("transposed").data, LoadedBytes::Owned(_)));
}

#[test]
fn any_single_byte_change_is_refused_or_harmless() {
    // Flipping any byte of a real checkpoint yields an error or a checkpoint; never a panic.
    let original = std::fs::read(fixture("zip_f32_and_empty.pt")).unwrap();
    for at in 0..original.len() {
        let mut bytes = original.clone();
        bytes[at] ^= 0x55;
        let _ = torch::load_from_bytes(&bytes);
    }
    let original = std::fs::read(fixture("legacy_default.pt")).unwrap();
    for at in 0..original.len() {
        let mut bytes = original.clone();
        bytes[at] ^= 0x55;
        let _ = torch::load_from_bytes(&bytes);
        let _ = torch::load_from_bytes(&bytes[..at]);
    }
}
