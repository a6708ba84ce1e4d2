//! Property tests: whatever the bytes, `zip::parse` and `zip::inspect` return instead of
//! panicking, and they agree (an archive `parse` accepts is one `inspect` finds clean).
#![allow(clippy::indexing_slicing, clippy::unwrap_used)]

mod zip_writer;

use proptest::prelude::*;
use safeformers_weights::zip::{self, InspectLimits};
use zip_writer::{Archive, Member};

fn valid_archive() -> Vec<u8> {
    Archive::torch(
        "archive",
        &[
            ("data.pkl", b"\x80\x02}q\x00."),
            ("byteorder", b"little"),
            ("data/0", &[7u8; 40]),
            ("version", b"3\n"),
        ],
    )
    .build()
}

fn archive_with_deflate() -> Vec<u8> {
    let mut archive = Archive::torch(
        "archive",
        &[
            ("data.pkl", b"\x80\x02}q\x00."),
            ("byteorder", b"little"),
            ("data/0", &[7u8; 40]),
            ("version", b"3\n"),
        ],
    );
    archive
        .members
        .push(Member::deflated("archive/extra", &[0u8; 300]));
    archive.build()
}

fn small_limits() -> InspectLimits {
    InspectLimits {
        max_member_bytes: 1 << 16,
        max_total_inflated: 1 << 18,
        ..InspectLimits::default()
    }
}

fn check(bytes: &[u8]) {
    let parsed = zip::parse(bytes);
    let inspection = zip::inspect(bytes, small_limits());
    if let Ok(archive) = parsed {
        assert!(inspection.is_clean(), "{:?}", inspection.problems);
        for entry in archive.entries() {
            let seen = inspection
                .members
                .iter()
                .find(|member| member.name == entry.name)
                .unwrap();
            assert_eq!(seen.data.as_deref(), Some(entry.data));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]

    #[test]
    fn random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        check(&bytes);
    }

    #[test]
    fn random_bytes_with_zip_magic(tail in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let mut bytes = b"PK\x03\x04".to_vec();
        bytes.extend_from_slice(&tail);
        check(&bytes);
    }

    #[test]
    fn mutated_archives(
        deflate in any::<bool>(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)
    ) {
        let mut bytes = if deflate { archive_with_deflate() } else { valid_archive() };
        for (index, value) in edits {
            let at = index.index(bytes.len());
            bytes[at] = value;
        }
        check(&bytes);
    }

    #[test]
    fn truncated_and_extended_archives(
        cut in any::<prop::sample::Index>(),
        extra in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut bytes = valid_archive();
        let at = cut.index(bytes.len());
        bytes.truncate(at);
        check(&bytes);
        bytes.extend_from_slice(&extra);
        check(&bytes);
    }

    #[test]
    fn spliced_archives(from in any::<prop::sample::Index>(), len in 0usize..64, to in any::<prop::sample::Index>()) {
        let original = valid_archive();
        let start = from.index(original.len());
        let end = (start + len).min(original.len());
        let mut bytes = original.clone();
        let at = to.index(bytes.len());
        let chunk = original[start..end].to_vec();
        bytes.splice(at..at, chunk);
        check(&bytes);
    }
}

#[test]
fn the_valid_archive_is_accepted_except_for_its_deflate_member() {
    assert!(zip::parse(&valid_archive()).is_ok());
    let bytes = archive_with_deflate();
    let error = zip::parse(&bytes).unwrap_err();
    assert!(matches!(error, zip::ZipError::Compressed { .. }), "{error}");
    let inspection = zip::inspect(&bytes, small_limits());
    assert_eq!(inspection.problems.len(), 1, "{:?}", inspection.problems);
    let extra = inspection
        .members
        .iter()
        .find(|m| m.name == "archive/extra")
        .unwrap();
    assert_eq!(extra.data.as_deref(), Some(&[0u8; 300][..]));
}
