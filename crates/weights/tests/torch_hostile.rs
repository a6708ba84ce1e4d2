//! Hostile PyTorch checkpoints built from real `torch.save` output: storages that do not match
//! their persistent ids, hidden records, trailing bytes, and legacy-format header attacks.
#![allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]

mod zip_writer;

use std::path::PathBuf;

use safeformers_weights::pickle::{self, PersistentIds, UnpickleOptions};
use safeformers_weights::torch::{self, LoadedBytes, TorchError};
use safeformers_weights::zip;
use zip_writer::{Archive, Member};

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/torch-dev")
        .join(name);
    std::fs::read(&path).expect("run tests/fixtures/torch-dev/make_dev_fixtures.py")
}

/// The members of the real `zip_f32_and_empty.pt` ({"a": 3×4 f32, "b": empty}), re-rooted
/// under `archive/` so that each test can change one thing.
fn real_members() -> Vec<(String, Vec<u8>)> {
    let bytes = fixture("zip_f32_and_empty.pt");
    let archive = zip::parse(&bytes).unwrap();
    archive
        .entries()
        .iter()
        .map(|entry| {
            let (_, relative) = entry.name.split_once('/').unwrap();
            (relative.to_string(), entry.data.to_vec())
        })
        .collect()
}

fn build(members: &[(String, Vec<u8>)]) -> Vec<u8> {
    Archive::new(
        members
            .iter()
            .map(|(name, data)| Member::new(&format!("archive/{name}"), data))
            .collect(),
    )
    .build()
}

fn with(
    change: impl FnOnce(&mut Vec<(String, Vec<u8>)>),
) -> Result<torch::LoadedCheckpoint, TorchError> {
    let mut members = real_members();
    change(&mut members);
    torch::load_from_bytes(&build(&members))
}

fn member<'m>(members: &'m mut [(String, Vec<u8>)], name: &str) -> &'m mut Vec<u8> {
    &mut members.iter_mut().find(|(n, _)| n == name).unwrap().1
}

#[test]
fn the_rewrapped_checkpoint_loads() {
    let loaded = with(|_| {}).unwrap();
    let names: Vec<&str> = loaded.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
}

#[test]
fn refuses_a_storage_shorter_or_longer_than_its_persistent_id() {
    for len in [44usize, 52] {
        let error = with(|m| member(m, "data/0").resize(len, 0)).unwrap_err();
        assert!(
            matches!(
                error,
                TorchError::StorageSizeMismatch {
                    expected: Some(48),
                    ..
                }
            ),
            "{error}"
        );
    }
}

#[test]
fn refuses_a_missing_storage_record() {
    let error = with(|m| m.retain(|(name, _)| name != "data/0")).unwrap_err();
    assert!(
        matches!(&error, TorchError::MissingStorage { key, .. } if key == "0"),
        "{error}"
    );
}

#[test]
fn refuses_an_unreferenced_storage_record() {
    let error = with(|m| m.push(("data/5".into(), b"hidden".to_vec()))).unwrap_err();
    assert!(
        matches!(&error, TorchError::UnreferencedStorage { name } if name == "archive/data/5"),
        "{error}"
    );
}

#[test]
fn refuses_bytes_after_the_pickle_stop() {
    let error =
        with(|m| member(m, "data.pkl").extend_from_slice(b"cposix\nsystem\n.")).unwrap_err();
    assert!(
        matches!(error, TorchError::TrailingPickleBytes { .. }),
        "{error}"
    );
}

#[test]
fn refuses_a_malicious_data_pkl_by_policy() {
    let error = with(|m| {
        *member(m, "data.pkl") = b"\x80\x02cposix\nsystem\nX\x02\x00\x00\x00id\x85R.".to_vec();
    })
    .unwrap_err();
    assert!(error.is_policy_refusal(), "{error}");
    assert!(error.to_string().contains("archive/data.pkl"), "{error}");
}

#[test]
fn big_endian_storages_are_byte_swapped() {
    let little = with(|_| {}).unwrap();
    let big = with(|m| *member(m, "byteorder") = b"big".to_vec()).unwrap();
    let members = real_members();
    let raw = &members.iter().find(|(n, _)| n == "data/0").unwrap().1;
    let LoadedBytes::Owned(swapped) = &big.tensors[0].data else {
        panic!("big-endian tensors are owned copies");
    };
    assert!(matches!(little.tensors[0].data, LoadedBytes::Range(_)));
    let expected: Vec<u8> = raw
        .chunks(4)
        .flat_map(|c| c.iter().rev().copied())
        .collect();
    assert_eq!(swapped, &expected);
}

// ---- legacy format ----------------------------------------------------------------------

/// Offsets where each of the five legacy pickles ends.
fn legacy_offsets(bytes: &[u8]) -> Vec<usize> {
    let mut offsets = Vec::new();
    let mut at = 0;
    for ids in [
        PersistentIds::Forbidden,
        PersistentIds::Forbidden,
        PersistentIds::Forbidden,
        PersistentIds::LegacyStorage,
        PersistentIds::Forbidden,
    ] {
        let options = UnpickleOptions {
            persistent_ids: ids,
            limits: pickle::Limits::default(),
        };
        at += pickle::unpickle(&bytes[at..], &options).unwrap().consumed;
        offsets.push(at);
    }
    offsets
}

fn legacy_error(bytes: &[u8]) -> TorchError {
    torch::load_from_bytes(bytes).expect_err("hostile legacy checkpoint must be refused")
}

#[test]
fn the_legacy_fixture_loads() {
    assert!(torch::load_from_bytes(&fixture("legacy_default.pt")).is_ok());
}

#[test]
fn refuses_a_wrong_legacy_protocol_version() {
    let mut bytes = fixture("legacy_default.pt");
    let offsets = legacy_offsets(&bytes);
    assert_eq!(&bytes[offsets[0]..offsets[1]], b"\x80\x02M\xe9\x03.");
    bytes[offsets[0] + 3] = 0xe8; // 1000
    assert!(matches!(
        legacy_error(&bytes),
        TorchError::LegacyHeader { .. }
    ));
}

#[test]
fn refuses_a_malicious_sys_info_pickle_by_policy() {
    let original = fixture("legacy_default.pt");
    let offsets = legacy_offsets(&original);
    let mut bytes = original[..offsets[1]].to_vec();
    bytes.extend_from_slice(b"\x80\x02cposix\nsystem\nX\x02\x00\x00\x00id\x85R.");
    bytes.extend_from_slice(&original[offsets[2]..]);
    let error = legacy_error(&bytes);
    assert!(error.is_policy_refusal(), "{error}");
    assert!(error.to_string().contains("sys_info"), "{error}");
}

#[test]
fn refuses_a_magic_number_computed_by_eval() {
    let original = fixture("legacy_default.pt");
    let offsets = legacy_offsets(&original);
    let mut bytes =
        b"\x80\x02cbuiltins\neval\nX\x16\x00\x00\x000x1950a86a20f9469cfc6c\x85R.".to_vec();
    bytes.extend_from_slice(&original[offsets[0]..]);
    let error = legacy_error(&bytes);
    assert!(error.is_policy_refusal(), "{error}");
}

#[test]
fn refuses_a_big_endian_legacy_file() {
    let mut bytes = fixture("legacy_default.pt");
    let offsets = legacy_offsets(&bytes);
    let sys_info = &bytes[offsets[1]..offsets[2]];
    let at = offsets[1] + sys_info.iter().position(|&b| b == 0x88).unwrap();
    bytes[at] = 0x89; // NEWTRUE -> NEWFALSE
    assert!(matches!(
        legacy_error(&bytes),
        TorchError::LegacyHeader { .. }
    ));
}

#[test]
fn refuses_legacy_storage_counts_and_trailing_bytes() {
    let original = fixture("legacy_default.pt");
    let offsets = legacy_offsets(&original);
    let raw = offsets[4];
    // A count larger than the rest of the file.
    let mut bytes = original.clone();
    bytes[raw..raw + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    assert!(matches!(
        legacy_error(&bytes),
        TorchError::LegacyStorage { .. }
    ));
    // Truncated.
    assert!(matches!(
        legacy_error(&original[..original.len() - 1]),
        TorchError::LegacyStorage { .. }
    ));
    // Appended.
    let mut bytes = original.clone();
    bytes.extend_from_slice(b"\x80\x02cposix\nsystem\n.");
    assert!(matches!(
        legacy_error(&bytes),
        TorchError::LegacyTrailingBytes { .. }
    ));
}

#[test]
fn refuses_a_tar_checkpoint() {
    // Old tar-format checkpoints (and tar/gzip wrappers) are not read.
    let mut tar = vec![0u8; 1024];
    tar[..8].copy_from_slice(b"sys_info");
    tar[257..262].copy_from_slice(b"ustar");
    assert!(matches!(
        torch::load_from_bytes(&tar),
        Err(TorchError::NotPytorch { .. })
    ));
    assert!(matches!(
        torch::load_from_bytes(b"\x1f\x8b\x08\x00\x00\x00\x00\x00"),
        Err(TorchError::NotPytorch { .. })
    ));
}
