//! PyTorch zip checkpoints refused at the container level, before any pickle is read: the
//! member set, root folder, TorchScript markers and metadata records.

mod zip_writer;

use safeformers_weights::format::TORCH_LEGACY_PREFIX;
use safeformers_weights::torch::{self, TorchError};
use safeformers_weights::zip::ZipError;
use safeformers_weights::{Error, FileFormat};
use zip_writer::{Archive, Member};

const PICKLE: &[u8] = b"\x80\x02}q\x00.";

fn checkpoint(root: &str, extra: &[(&str, &[u8])]) -> Archive {
    let mut members: Vec<(&str, &[u8])> = vec![
        ("data.pkl", PICKLE),
        ("byteorder", b"little"),
        ("data/0", &[0u8; 8]),
        ("version", b"3\n"),
    ];
    members.extend_from_slice(extra);
    Archive::torch(root, &members)
}

fn load(archive: &Archive) -> Result<torch::LoadedCheckpoint, TorchError> {
    torch::load_from_bytes(&archive.build())
}

/// The container passed: whatever comes next is the unpickler's business.
fn container_accepted(result: Result<torch::LoadedCheckpoint, TorchError>) -> bool {
    match result {
        Ok(_) => true,
        Err(TorchError::PickleIn { record, .. }) => record.ends_with("/data.pkl"),
        Err(TorchError::NotAStateDict { .. } | TorchError::UnreferencedStorage { .. }) => true,
        Err(_) => false,
    }
}

#[test]
fn accepts_the_checkpoint_member_set_under_any_root() {
    for root in ["archive", "weights", "pytorch_model"] {
        let archive = checkpoint(
            root,
            &[
                (".format_version", b"1"),
                (".storage_alignment", b"64"),
                (
                    ".data/serialization_id",
                    b"1234567890123456789012345678901234567890",
                ),
            ],
        );
        assert!(container_accepted(load(&archive)), "{root}");
    }
    let mut archive = checkpoint("archive", &[]);
    archive.members.retain(|m| m.name != b"archive/version");
    archive
        .members
        .push(Member::new("archive/.data/version", b"3\n"));
    assert!(container_accepted(load(&archive)));
}

#[test]
fn refuses_torchscript_members_by_policy() {
    for (name, data) in [
        ("constants.pkl", PICKLE),
        ("code/__torch__.py", b"def forward(self): pass" as &[u8]),
        ("model.json", b"{}"),
        ("attributes.pkl", PICKLE),
        ("extra.pkl", PICKLE),
        (".data/extra", b"x"),
    ] {
        let archive = checkpoint("archive", &[(name, data)]);
        let error = load(&archive).unwrap_err();
        assert!(
            matches!(&error, TorchError::TorchScript { name: n, .. } if n == &format!("archive/{name}")),
            "{name}: {error}"
        );
        assert!(error.is_policy_refusal());
    }
}

#[test]
fn refuses_an_uppercase_pickle_name() {
    // PyTorch's case-insensitive lookup would read `DATA.PKL` as `data.pkl`; we do not.
    let mut archive = checkpoint("archive", &[]);
    archive.members[0].name = b"archive/DATA.PKL".to_vec();
    assert!(matches!(
        load(&archive),
        Err(TorchError::TorchScript { .. })
    ));
    // Both names present: a case collision in the zip itself.
    let archive = checkpoint("archive", &[("DATA.PKL", PICKLE)]);
    assert!(matches!(
        load(&archive),
        Err(TorchError::Zip(ZipError::CaseCollision { .. }))
    ));
}

#[test]
fn refuses_unexpected_members() {
    for name in [
        "notes.txt",
        "data/00",
        "data/1a",
        "data/ 1",
        "data",
        "data/0/1",
    ] {
        let archive = checkpoint("archive", &[(name, b"x")]);
        let error = load(&archive).unwrap_err();
        assert!(
            matches!(&error, TorchError::UnexpectedRecord { .. }),
            "{name}: {error}"
        );
        assert!(!error.is_policy_refusal());
    }
    // Traversal names are refused by the zip reader already.
    let archive = checkpoint("archive", &[("data/../0", b"x")]);
    assert!(matches!(
        load(&archive),
        Err(TorchError::Zip(ZipError::BadName { .. }))
    ));
}

#[test]
fn refuses_members_outside_the_root_folder() {
    let mut archive = checkpoint("archive", &[]);
    archive.members.push(Member::new("other/data.pkl", PICKLE));
    assert!(matches!(
        load(&archive),
        Err(TorchError::MixedRoots { root, name }) if root == "archive" && name == "other/data.pkl"
    ));
    let mut archive = checkpoint("archive", &[]);
    archive.members.insert(0, Member::new("data.pkl", PICKLE));
    assert!(matches!(
        load(&archive),
        Err(TorchError::NoRootFolder { .. })
    ));
}

#[test]
fn refuses_bad_versions() {
    for version in [
        &b"0"[..],
        b"11",
        b"-1",
        b"3.0",
        b"",
        b"abc",
        b"99999999999999999999999",
    ] {
        let mut archive = checkpoint("archive", &[]);
        archive.member("archive/version").data = version.to_vec();
        let error = load(&archive).unwrap_err();
        assert!(
            matches!(&error, TorchError::BadRecord { .. }),
            "{:?}: {error}",
            String::from_utf8_lossy(version)
        );
    }
    let mut archive = checkpoint("archive", &[]);
    archive.members.retain(|m| m.name != b"archive/version");
    assert!(matches!(
        load(&archive),
        Err(TorchError::MissingRecord { .. })
    ));
    let archive = checkpoint("archive", &[(".data/version", b"4\n")]);
    assert!(matches!(load(&archive), Err(TorchError::BadRecord { .. })));
}

#[test]
fn refuses_bad_byteorder_and_metadata_records() {
    for value in [&b"middle"[..], b"Little", b"little\n", b""] {
        let mut archive = checkpoint("archive", &[]);
        archive.member("archive/byteorder").data = value.to_vec();
        assert!(matches!(load(&archive), Err(TorchError::BadRecord { .. })));
    }
    let archive = checkpoint("archive", &[(".storage_alignment", b"sixty-four")]);
    assert!(matches!(load(&archive), Err(TorchError::BadRecord { .. })));
    let archive = checkpoint("archive", &[(".data/serialization_id", &[b'1'; 4096])]);
    assert!(matches!(load(&archive), Err(TorchError::BadRecord { .. })));
}

#[test]
fn refuses_a_checkpoint_without_data_pkl() {
    let mut archive = checkpoint("archive", &[]);
    archive.members.remove(0);
    assert!(
        matches!(load(&archive), Err(TorchError::MissingRecord { name }) if name == "archive/data.pkl")
    );
}

#[test]
fn zip_defects_surface_as_zip_errors() {
    let mut archive = checkpoint("archive", &[]);
    archive.member("archive/data/0").crc = Some(1);
    assert!(matches!(
        load(&archive),
        Err(TorchError::Zip(ZipError::CrcMismatch { .. }))
    ));
    let mut archive = checkpoint("archive", &[]);
    archive.members[2] = Member::deflated("archive/data/0", &[0; 1000]);
    assert!(matches!(
        load(&archive),
        Err(TorchError::Zip(ZipError::Compressed { .. }))
    ));
    let mut archive = checkpoint("archive", &[]);
    archive.suffix = PICKLE.to_vec();
    assert!(matches!(
        load(&archive),
        Err(TorchError::Zip(ZipError::TrailingData { .. }))
    ));
}

#[test]
fn a_pickle_with_a_zip_appended_is_read_as_a_pickle() {
    let mut archive = checkpoint("archive", &[]);
    archive.prefix = PICKLE.to_vec();
    let error = load(&archive).unwrap_err();
    let read_as_pickle = match &error {
        TorchError::PickleIn { record, .. } => record == "raw pickle",
        TorchError::RawPickle { .. } => true,
        _ => false,
    };
    assert!(read_as_pickle, "{error}");
}

#[test]
fn other_formats_are_not_pytorch() {
    for bytes in [&b"\x89PNG\r\n\x1a\n"[..], b"GGUF\x03\0\0\0", b"", b"hello"] {
        assert!(matches!(
            torch::load_from_bytes(bytes),
            Err(TorchError::NotPytorch { .. })
        ));
    }
}

#[test]
fn legacy_files_must_start_with_the_literal_magic() {
    let mut bytes = TORCH_LEGACY_PREFIX.to_vec();
    bytes.push(b'.');
    // Whatever the unpickler says, a truncated legacy file is an error, never a panic.
    assert!(torch::load_from_bytes(&bytes).is_err());
}

#[test]
fn open_names_the_file_and_refuses_unsupported_content() {
    let dir = std::env::temp_dir().join(format!("safeformers-torch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let png = dir.join("model.pt");
    std::fs::write(&png, b"\x89PNG\r\n\x1a\n").unwrap();
    assert!(matches!(
        torch::open(&png),
        Err(Error::UnsupportedFormat {
            format: FileFormat::Unknown,
            ..
        })
    ));
    let script = dir.join("script.pt");
    std::fs::write(
        &script,
        checkpoint("archive", &[("constants.pkl", PICKLE)]).build(),
    )
    .unwrap();
    let error = torch::open(&script).unwrap_err();
    assert!(error.is_policy_refusal());
    assert!(error.to_string().contains("script.pt"), "{error}");
    std::fs::remove_dir_all(&dir).unwrap();
}
