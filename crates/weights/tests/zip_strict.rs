//! The strict zip reader against hostile archives: each defect is refused with its own error,
//! and a torch-style archive is read.
#![allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]

mod zip_writer;

use safeformers_weights::zip::{self, InspectLimits, ZipError};
use zip_writer::{Archive, LocalOffset, Member};

const PICKLE: &[u8] = b"\x80\x02}q\x00.";

fn benign() -> Archive {
    Archive::torch(
        "archive",
        &[
            ("data.pkl", PICKLE),
            ("byteorder", b"little"),
            ("data/0", &[1, 2, 3, 4, 5, 6, 7, 8]),
            ("version", b"3\n"),
        ],
    )
}

fn refuse(archive: &Archive) -> ZipError {
    let bytes = archive.build();
    let error = zip::parse(&bytes).expect_err("the strict reader must refuse this archive");
    // Whatever the strict reader refuses, the lenient one reports.
    let inspection = zip::inspect(&bytes, InspectLimits::default());
    assert!(
        !inspection.is_clean(),
        "inspect saw nothing wrong with an archive parse refused ({error})"
    );
    error
}

#[test]
fn reads_a_torch_style_archive() {
    let bytes = benign().build();
    let archive = zip::parse(&bytes).unwrap();
    assert_eq!(archive.len(), 4);
    let pickle = archive.by_name("archive/data.pkl").unwrap();
    assert_eq!(pickle.data, PICKLE);
    assert_eq!(pickle.data_offset % 64, 0);
    assert_eq!(
        archive.by_name("archive/data/0").unwrap().data,
        &[1, 2, 3, 4, 5, 6, 7, 8]
    );
    assert!(archive.by_name("archive/DATA.PKL").is_none());
    let inspection = zip::inspect(&bytes, InspectLimits::default());
    assert!(inspection.is_clean(), "{:?}", inspection.problems);
    assert_eq!(inspection.members.len(), 4);
}

#[test]
fn reads_variants_without_zip64_alignment_or_descriptors() {
    let mut archive = benign();
    archive.zip64 = false;
    archive.align = false;
    for member in &mut archive.members {
        member.descriptor = false;
    }
    archive.comment = b"a comment".to_vec();
    let bytes = archive.build();
    assert_eq!(zip::parse(&bytes).unwrap().len(), 4);
}

#[test]
fn reads_a_real_torch_save_file() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/torch-dev/zip_f32_and_empty.pt"
    );
    let bytes = std::fs::read(path).expect("fixture made by torch.save (see torch-dev/README.md)");
    let archive = zip::parse(&bytes).unwrap();
    let names: Vec<&str> = archive.entries().iter().map(|e| e.name).collect();
    assert_eq!(
        names,
        [
            "zip_f32_and_empty/data.pkl",
            "zip_f32_and_empty/.format_version",
            "zip_f32_and_empty/.storage_alignment",
            "zip_f32_and_empty/byteorder",
            "zip_f32_and_empty/data/0",
            "zip_f32_and_empty/data/1",
            "zip_f32_and_empty/version",
            "zip_f32_and_empty/.data/serialization_id",
        ]
    );
    assert_eq!(
        archive
            .by_name("zip_f32_and_empty/data/0")
            .unwrap()
            .data
            .len(),
        48
    );
    assert!(zip::inspect(&bytes, InspectLimits::default()).is_clean());
}

#[test]
fn refuses_a_file_not_starting_with_a_local_header() {
    assert_eq!(zip::parse(b"").unwrap_err(), ZipError::NotAtStart);
    assert_eq!(
        zip::parse(b"PK\x03\x04").unwrap_err(),
        ZipError::NoEndOfCentralDirectory
    );
}

#[test]
fn refuses_a_pickle_with_a_zip_appended() {
    let mut archive = benign();
    archive.prefix =
        b"\x80\x02cposix\nsystem\nq\x00X\x02\x00\x00\x00idq\x01\x85q\x02Rq\x03.".to_vec();
    let bytes = archive.build();
    assert_eq!(zip::parse(&bytes).unwrap_err(), ZipError::NotAtStart);
    // The scanner still reads the zip the way Python's zipfile does, and sees the prefix.
    let inspection = zip::inspect(&bytes, InspectLimits::default());
    assert!(inspection.fatal.is_none());
    assert!(inspection.problems.contains(&ZipError::NotAtStart));
    assert!(inspection.problems.iter().any(
        |p| matches!(p, ZipError::PrependedData { shift } if *shift == archive.prefix.len() as u64)
    ));
    let pickle = inspection
        .members
        .iter()
        .find(|m| m.name == "archive/data.pkl")
        .unwrap();
    assert_eq!(pickle.data.as_deref(), Some(PICKLE));
}

#[test]
fn refuses_bytes_inserted_before_the_first_header() {
    // Offsets adjusted so that the central directory is consistent: still refused.
    let mut archive = benign();
    archive.members[0].gap_after = Vec::new();
    let mut bytes = vec![0u8; 10];
    bytes.extend_from_slice(&archive.build());
    assert_eq!(zip::parse(&bytes).unwrap_err(), ZipError::NotAtStart);
}

#[test]
fn refuses_data_after_the_end_record() {
    let mut archive = benign();
    archive.suffix = PICKLE.to_vec();
    assert!(matches!(
        refuse(&archive),
        ZipError::TrailingData { trailing, .. } if trailing == PICKLE.len() as u64
    ));
    // More trailing data than the end-record search window: no end record at all.
    archive.suffix = vec![0; 70_000];
    assert_eq!(refuse(&archive), ZipError::NoEndOfCentralDirectory);
}

#[test]
fn refuses_a_comment_hiding_another_end_record() {
    let mut archive = benign();
    archive.comment = b"PK\x05\x06 fake".to_vec();
    assert!(matches!(refuse(&archive), ZipError::AmbiguousEnd { .. }));
}

#[test]
fn refuses_duplicate_names() {
    let mut archive = benign();
    archive.members.insert(
        0,
        Member::new("archive/data.pkl", b"\x80\x02cposix\nsystem\n."),
    );
    assert!(matches!(
        refuse(&archive),
        ZipError::DuplicateName { name, .. } if name == "archive/data.pkl"
    ));
    // The scanner sees both copies.
    let bytes = archive.build();
    let inspection = zip::inspect(&bytes, InspectLimits::default());
    let copies: Vec<_> = inspection
        .members
        .iter()
        .filter(|m| m.name == "archive/data.pkl")
        .map(|m| m.data.clone().unwrap().into_owned())
        .collect();
    assert_eq!(copies.len(), 2);
    assert_ne!(copies[0], copies[1]);
}

#[test]
fn refuses_names_differing_only_in_case() {
    let mut archive = benign();
    archive
        .members
        .push(Member::new("archive/DATA.PKL", PICKLE));
    assert!(matches!(
        refuse(&archive),
        ZipError::CaseCollision { first, second, .. }
            if first == "archive/data.pkl" && second == "archive/DATA.PKL"
    ));
}

#[test]
fn refuses_encryption_and_patch_flags() {
    for flag in [0x1u16, 0x20, 0x40, 0x2000, 0x4] {
        let mut archive = benign();
        archive.member("archive/data.pkl").flags |= flag;
        let error = refuse(&archive);
        assert!(
            matches!(error, ZipError::ForbiddenFlags { ref name, flags, .. }
                if name == "archive/data.pkl" && flags & flag != 0),
            "flag {flag:#x}: {error}"
        );
    }
}

#[test]
fn refuses_a_local_name_differing_from_the_central_name() {
    let mut archive = benign();
    archive.member("archive/data.pkl").local_name = Some(b"archive/datap.kl".to_vec());
    assert!(matches!(
        refuse(&archive),
        ZipError::LocalHeaderMismatch { name, field: "the name", .. } if name == "archive/data.pkl"
    ));
}

#[test]
fn refuses_local_method_flags_or_sizes_differing_from_central() {
    let mut archive = benign();
    archive.member("archive/data.pkl").local_method = Some(8);
    assert!(matches!(
        refuse(&archive),
        ZipError::LocalHeaderMismatch {
            field: "the compression method",
            ..
        }
    ));
    let mut archive = benign();
    archive.member("archive/data.pkl").local_flags = Some(0x800);
    assert!(matches!(
        refuse(&archive),
        ZipError::LocalHeaderMismatch {
            field: "the general-purpose flags",
            ..
        }
    ));
    let mut archive = benign();
    let member = archive.member("archive/data.pkl");
    member.descriptor = false;
    member.flags = 0x800;
    member.local_size = Some(3);
    assert!(matches!(
        refuse(&archive),
        ZipError::LocalHeaderMismatch {
            field: "the sizes",
            ..
        }
    ));
}

#[test]
fn refuses_a_crc_mismatch() {
    let mut archive = benign();
    archive.member("archive/data/0").crc = Some(0xDEAD_BEEF);
    assert!(matches!(
        refuse(&archive),
        ZipError::CrcMismatch { name, expected: 0xDEAD_BEEF, .. } if name == "archive/data/0"
    ));
}

#[test]
fn refuses_a_descriptor_disagreeing_with_the_central_directory() {
    let mut archive = benign();
    // Descriptor flag set, but no descriptor written after the data.
    let member = archive.member("archive/data/0");
    member.descriptor = false;
    member.flags |= 0x8;
    member.local_flags = Some(0x808);
    assert!(matches!(
        refuse(&archive),
        ZipError::BadDataDescriptor { .. }
    ));
}

#[test]
fn refuses_deflate_members_and_inspect_inflates_them_capped() {
    let zeros = vec![0u8; 1 << 20];
    let mut archive = benign();
    archive.members[2] = Member::deflated("archive/data/0", &zeros);
    assert!(matches!(
        refuse(&archive),
        ZipError::Compressed { name, method: 8, .. } if name == "archive/data/0"
    ));
    let bytes = archive.build();
    let inspection = zip::inspect(&bytes, InspectLimits::default());
    let member = inspection
        .members
        .iter()
        .find(|m| m.name == "archive/data/0")
        .unwrap();
    assert_eq!(member.data.as_deref(), Some(zeros.as_slice()));
    // With a smaller cap, nothing is inflated and the reason is reported.
    let limits = InspectLimits {
        max_member_bytes: 1000,
        ..InspectLimits::default()
    };
    let inspection = zip::inspect(&bytes, limits);
    let member = inspection
        .members
        .iter()
        .find(|m| m.name == "archive/data/0")
        .unwrap();
    assert!(member.data.is_none());
    assert!(
        inspection
            .problems
            .iter()
            .any(|p| matches!(p, ZipError::NotExtracted { .. }))
    );
}

#[test]
fn inspect_never_inflates_beyond_the_declared_size() {
    // A bomb that declares 100 bytes but inflates to a megabyte.
    let mut member = Member::deflated("archive/data/0", &vec![0u8; 1 << 20]);
    member.uncompressed_size = Some(100);
    let mut archive = benign();
    archive.members[2] = member;
    let bytes = archive.build();
    let inspection = zip::inspect(&bytes, InspectLimits::default());
    let member = inspection
        .members
        .iter()
        .find(|m| m.name == "archive/data/0")
        .unwrap();
    assert_eq!(member.data.as_deref().map(<[u8]>::len), Some(100));
    assert!(
        inspection
            .problems
            .iter()
            .any(|p| matches!(p, ZipError::InflateFailed { .. }))
    );
}

#[test]
fn refuses_stored_members_with_unequal_sizes() {
    let mut archive = benign();
    archive.member("archive/data/0").uncompressed_size = Some(4);
    assert!(matches!(
        refuse(&archive),
        ZipError::StoredSizeMismatch { .. }
    ));
}

#[test]
fn refuses_unsafe_names() {
    let cases: [(&[u8], &str); 10] = [
        (b"../x", "`..` component"),
        (b"archive/../../x", "`..` component"),
        (b"/etc/x", "absolute path"),
        (b"archive\\data.pkl", "backslash"),
        (b"C:/x", "colon (drive letter or stream name)"),
        (b"archive/da\0ta.pkl", "control character or NUL"),
        (b"archive//data.pkl", "empty or `.` component"),
        (b"archive/./data.pkl", "empty or `.` component"),
        (
            b"archive/\xff.pkl",
            "non-ASCII name without the UTF-8 flag (readers decode it differently)",
        ),
        (b"", "empty name"),
    ];
    for (name, expected) in cases {
        let mut archive = benign();
        let mut member = Member::raw_name(name, b"x");
        member.flags = 0;
        archive.members.push(member);
        let error = refuse(&archive);
        assert!(
            matches!(error, ZipError::BadName { reason, .. } if reason == expected),
            "{:?}: {error}",
            String::from_utf8_lossy(name)
        );
    }
    // Invalid UTF-8 even with the UTF-8 flag.
    let mut archive = benign();
    let mut member = Member::raw_name(b"archive/\xff.pkl", b"x");
    member.flags = 0x800;
    archive.members.push(member);
    assert!(matches!(
        refuse(&archive),
        ZipError::BadName {
            reason: "not valid UTF-8",
            ..
        }
    ));
    // Non-ASCII UTF-8 with the flag is fine.
    let mut archive = benign();
    archive.members.push(Member::new("archive/é", b"x"));
    assert!(zip::parse(&archive.build()).is_ok());
}

#[test]
fn refuses_directories_and_symlinks() {
    let mut archive = benign();
    archive.members.push(Member::new("archive/data/", b""));
    assert!(matches!(refuse(&archive), ZipError::Directory { .. }));

    let mut archive = benign();
    let mut member = Member::new("archive/dir", b"");
    member.external_attributes = 0o040_755 << 16;
    archive.members.push(member);
    assert!(matches!(refuse(&archive), ZipError::Directory { .. }));

    let mut archive = benign();
    let mut member = Member::new("archive/data/1", b"/etc/passwd");
    member.external_attributes = 0o120_777 << 16;
    member.made_by = 3 << 8;
    archive.members.push(member);
    assert!(matches!(
        refuse(&archive),
        ZipError::NotARegularFile {
            mode: 0o120_777,
            ..
        }
    ));

    // A regular file mode is fine.
    let mut archive = benign();
    archive.member("archive/data/0").external_attributes = 0o100_644 << 16;
    assert!(zip::parse(&archive.build()).is_ok());
}

#[test]
fn refuses_overlapping_members() {
    // Member `data/0` holds a complete local header + data for `data/1`, and the central
    // directory points `data/1` into it: the two share bytes.
    let inner = Archive {
        align: false,
        ..Archive::new(vec![{
            let mut m = Member::new("archive/data/1", b"abcd");
            m.descriptor = false;
            m
        }])
    }
    .build();
    let local_len = 30 + "archive/data/1".len() + 4;
    let mut archive = benign();
    archive.member("archive/data/0").data = inner[..local_len + 4].to_vec();
    let mut hidden = Member::new("archive/data/1", b"abcd");
    hidden.descriptor = false;
    hidden.write_local = false;
    hidden.local_offset = LocalOffset::DataOf(2);
    archive.members.push(hidden);
    let error = refuse(&archive);
    assert!(
        matches!(&error, ZipError::Overlap { name, other, .. }
            if name == "archive/data/0" && other == "member `archive/data/1`"),
        "{error}"
    );
}

#[test]
fn refuses_hidden_bytes_between_members_and_inspect_finds_hidden_members() {
    let mut archive = benign();
    let mut hidden = Member::new("archive/data.pkl", b"\x80\x02cposix\nsystem\n.");
    hidden.write_central = false;
    hidden.descriptor = false;
    archive.members.insert(1, hidden);
    assert!(matches!(
        refuse(&archive),
        ZipError::UnaccountedBytes { .. }
    ));
    let bytes = archive.build();
    let inspection = zip::inspect(&bytes, InspectLimits::default());
    let found = inspection
        .members
        .iter()
        .find(|m| !m.in_central_directory)
        .expect("the hidden local header is reported");
    assert_eq!(found.name, "archive/data.pkl");
    assert_eq!(
        found.data.as_deref(),
        Some(&b"\x80\x02cposix\nsystem\n."[..])
    );
    assert!(
        inspection
            .problems
            .iter()
            .any(|p| matches!(p, ZipError::HiddenMember { .. }))
    );

    let mut archive = benign();
    archive.members[1].gap_after = b"junk".to_vec();
    assert!(matches!(
        refuse(&archive),
        ZipError::BadDataDescriptor { .. } | ZipError::UnaccountedBytes { .. }
    ));
    let mut archive = benign();
    archive.members[3].gap_after = b"junk".to_vec();
    archive.members[3].descriptor = false;
    assert!(matches!(
        refuse(&archive),
        ZipError::UnaccountedBytes { len: 4, .. }
    ));
}

#[test]
fn refuses_inconsistent_entry_counts() {
    let mut archive = benign();
    archive.entry_count = Some(3);
    assert!(matches!(
        refuse(&archive),
        ZipError::EntryCountMismatch { .. }
    ));
    let mut archive = benign();
    archive.entry_count = Some(60_000);
    assert!(matches!(refuse(&archive), ZipError::TooManyEntries { .. }));
}

#[test]
fn refuses_a_central_entry_without_a_local_header() {
    let mut archive = benign();
    archive.members[3].write_local = false;
    assert!(matches!(
        refuse(&archive),
        ZipError::MissingLocalHeader { .. }
    ));
    // The scanner still reads every other member.
    let bytes = archive.build();
    let inspection = zip::inspect(&bytes, InspectLimits::default());
    assert!(inspection.fatal.is_none());
    let pickle = inspection
        .members
        .iter()
        .find(|m| m.name == "archive/data.pkl")
        .unwrap();
    assert_eq!(pickle.data.as_deref(), Some(PICKLE));
    let missing = inspection
        .members
        .iter()
        .find(|m| m.name == "archive/version")
        .unwrap();
    assert!(missing.data.is_none());
}

#[test]
fn inspect_reports_local_headers_when_there_is_no_central_directory() {
    let bytes = benign().build();
    let cut = &bytes[..bytes.len() - 200];
    let inspection = zip::inspect(cut, InspectLimits::default());
    assert!(inspection.fatal.is_some());
    assert!(
        inspection
            .members
            .iter()
            .any(|m| m.name == "archive/data.pkl" && m.data.is_none() && !m.in_central_directory)
    );
}
