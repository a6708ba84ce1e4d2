//! The strict safetensors reader, sharded indexes and the writer, through the public API.
//! One test per rejection rule (research notes §6.3, samples 37–44), plus positive controls.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use safeformers_weights::safetensors::{
    self, MAX_HEADER_LEN, MAX_NAME_LEN, MAX_RANK, SafetensorsError, parse_header,
};
use safeformers_weights::sharded::{IndexError, open_sharded, read_index};
use safeformers_weights::{Dtype, Error, FileFormat, LoadPolicy, TensorView, open_checkpoint};

// --- helpers ----------------------------------------------------------------------------------

/// A file from raw header text (not padded) and data.
fn raw(header: &str, data: &[u8]) -> Vec<u8> {
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(header.as_bytes());
    file.extend_from_slice(data);
    file
}

/// A file from header text padded with spaces to a multiple of 8, and data.
fn padded(header: &str, data: &[u8]) -> Vec<u8> {
    let mut header = header.to_string();
    while !header.len().is_multiple_of(8) {
        header.push(' ');
    }
    raw(&header, data)
}

fn err(file: &[u8]) -> SafetensorsError {
    match parse_header(file) {
        Ok(header) => panic!("accepted: {header:?}"),
        Err(error) => error,
    }
}

fn one(dtype: &str, shape: &str, offsets: &str) -> String {
    format!(r#"{{"t":{{"dtype":"{dtype}","shape":{shape},"data_offsets":{offsets}}}}}"#)
}

/// A unique scratch directory under the system temp dir.
fn scratch(label: &str) -> PathBuf {
    safeformers_testkit::scratch_dir(&format!("st-{label}"))
}

fn view<'a>(name: &'a str, dtype: Dtype, shape: &'a [usize], data: &'a [u8]) -> TensorView<'a> {
    TensorView {
        name,
        dtype,
        shape,
        data,
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

// --- positive controls ------------------------------------------------------------------------

#[test]
fn empty_header_is_valid() {
    let header = parse_header(&raw("{}", b"")).unwrap();
    assert!(header.tensors().is_empty());
    assert_eq!(header.data_start(), 10);
}

#[test]
fn every_dtype_is_readable() {
    for dtype in Dtype::ALL {
        // 8 elements fill whole bytes for every dtype (F4: 4 bytes, F6: 6 bytes).
        let bytes = usize::try_from(dtype.byte_len(8).unwrap()).unwrap();
        let data: Vec<u8> = (0..bytes).map(|i| i as u8).collect();
        let file = padded(&one(dtype.name(), "[2,4]", &format!("[0,{bytes}]")), &data);
        let header = parse_header(&file).unwrap_or_else(|e| panic!("{dtype}: {e}"));
        assert_eq!(header.tensors()[0].dtype, dtype);
        assert_eq!(header.tensors()[0].shape, vec![2, 4]);
        assert_eq!(&file[header.tensors()[0].range.clone()], &data[..]);
    }
}

#[test]
fn scalars_and_empty_tensors() {
    let header = r#"{"e":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]},"f":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},"s":{"dtype":"F32","shape":[],"data_offsets":[0,4]}}"#;
    let file = padded(header, &1.0f32.to_le_bytes());
    let parsed = parse_header(&file).unwrap();
    assert_eq!(parsed.tensors().len(), 3);
}

#[test]
fn trailing_space_padding_is_allowed() {
    let file = raw("{}      ", b"");
    assert!(parse_header(&file).is_ok());
}

#[test]
fn zlib_looking_header_length_routes_as_safetensors() {
    // Header length 0x9c78 and 0x2078: the file starts with bytes a zlib sniffer would accept.
    for len in [0x9c78usize, 0x2078] {
        let mut header = String::from("{}");
        header.push_str(&" ".repeat(len - 2));
        let file = raw(&header, b"");
        assert_eq!(&file[..2], &[0x78, (len >> 8) as u8]);
        assert!(parse_header(&file).is_ok());
        assert_eq!(
            safeformers_weights::detect_format(&file),
            FileFormat::Safetensors
        );
    }
}

#[test]
fn round_trip_through_serialize_and_open() {
    let f64s: Vec<u8> = [1.0f64, -2.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let f32s: Vec<u8> = [0.5f32; 6].iter().flat_map(|v| v.to_le_bytes()).collect();
    let u8s = [1u8, 2, 3];
    let f16s = [0u8, 0x3C];
    let f4 = [0x21u8];
    let views = [
        view(
            "bert.embeddings.word_embeddings.weight",
            Dtype::F32,
            &[2, 3],
            &f32s,
        ),
        view("a.bytes", Dtype::U8, &[3], &u8s),
        view("b.half", Dtype::F16, &[], &f16s),
        view("c.double", Dtype::F64, &[2], &f64s),
        view("d.fp4", Dtype::F4, &[2], &f4),
        view("e.empty", Dtype::I64, &[0, 5], &[]),
    ];
    let metadata = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    let bytes = safetensors::serialize(&views, &metadata).unwrap();
    assert_eq!(u64::from_le_bytes(bytes[..8].try_into().unwrap()) % 8, 0);

    let dir = scratch("roundtrip");
    let path = write(&dir, "model.safetensors", &bytes);
    let checkpoint = safetensors::open(&path).unwrap();
    assert_eq!(checkpoint.format(), FileFormat::Safetensors);
    assert_eq!(checkpoint.metadata(), &metadata);
    assert_eq!(checkpoint.len(), views.len());
    for original in &views {
        let loaded = checkpoint.tensor(original.name).unwrap();
        assert_eq!(loaded.dtype, original.dtype);
        assert_eq!(loaded.shape, original.shape);
        assert_eq!(loaded.data, original.data);
    }
    // The same through the streaming writer and the folder loader.
    let dir2 = scratch("roundtrip-writer");
    safetensors::write_file(&dir2.join("model.safetensors"), &views, &metadata).unwrap();
    assert_eq!(
        std::fs::read(dir2.join("model.safetensors")).unwrap(),
        bytes
    );
    let checkpoint = open_checkpoint(&dir2, &LoadPolicy::default()).unwrap();
    assert_eq!(checkpoint.len(), views.len());
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(dir2);
}

#[test]
fn serialize_refuses_invalid_input() {
    let data = [0u8; 4];
    let bad_size = [view("x", Dtype::F32, &[2], &data)];
    assert!(matches!(
        safetensors::serialize(&bad_size, &BTreeMap::new()),
        Err(SafetensorsError::SizeMismatch { .. })
    ));
    let dup = [
        view("x", Dtype::U8, &[4], &data),
        view("x", Dtype::U8, &[4], &data),
    ];
    assert!(matches!(
        safetensors::serialize(&dup, &BTreeMap::new()),
        Err(SafetensorsError::DuplicateTensor { .. })
    ));
    let bad_name = [view("", Dtype::U8, &[4], &data)];
    assert!(matches!(
        safetensors::serialize(&bad_name, &BTreeMap::new()),
        Err(SafetensorsError::EmptyName)
    ));
}

// --- 37: header length ------------------------------------------------------------------------

#[test]
fn file_shorter_than_8_bytes() {
    for len in 0..8 {
        assert_eq!(
            err(&vec![0u8; len]),
            SafetensorsError::FileTooShort { len: len as u64 }
        );
    }
}

#[test]
fn header_length_past_the_file() {
    let mut file = 1000u64.to_le_bytes().to_vec();
    file.extend_from_slice(b"{}");
    assert_eq!(
        err(&file),
        SafetensorsError::HeaderPastEnd {
            claimed: 1000,
            available: 2
        }
    );
}

#[test]
fn header_length_over_the_cap() {
    for claimed in [MAX_HEADER_LEN + 1, u64::MAX, u64::MAX - 7] {
        let mut file = claimed.to_le_bytes().to_vec();
        file.extend_from_slice(b"{}");
        assert_eq!(err(&file), SafetensorsError::HeaderTooLarge { claimed });
    }
}

// --- 41: JSON strictness ----------------------------------------------------------------------

#[test]
fn invalid_utf8() {
    let mut file = raw(r#"{"a":1}"#, b"");
    file[10] = 0xFF;
    assert!(matches!(
        err(&file),
        SafetensorsError::InvalidUtf8 { valid_up_to: 2 }
    ));
}

#[test]
fn byte_order_mark() {
    assert_eq!(
        err(&raw("\u{FEFF}{}", b"")),
        SafetensorsError::ByteOrderMark
    );
}

#[test]
fn not_an_object_or_leading_whitespace() {
    for header in ["[]", " {}", "\n{}", "\"x\"", "", "1"] {
        assert!(
            matches!(err(&raw(header, b"")), SafetensorsError::NotAnObject { .. }),
            "{header:?}"
        );
    }
}

#[test]
fn trailing_characters_after_the_object() {
    for (header, offset) in [
        ("{}\0\0", 2),
        ("{}x", 2),
        ("{} \n", 3),
        ("{}{}", 2),
        ("{}  \t", 4),
    ] {
        assert_eq!(
            err(&raw(header, b"")),
            SafetensorsError::TrailingCharacters { offset },
            "{header:?}"
        );
    }
}

#[test]
fn malformed_json_and_lone_surrogates() {
    for header in [r#"{"a":"#, r#"{"\ud800":{}}"#, "{,}", r#"{"a" 1}"#] {
        assert!(
            matches!(err(&raw(header, b"")), SafetensorsError::InvalidJson { .. }),
            "{header:?}"
        );
    }
}

#[test]
fn deep_nesting_is_rejected_without_recursion() {
    let deep = format!(
        r#"{{"t":{{"x":{}1{}}}}}"#,
        "[".repeat(5000),
        "]".repeat(5000)
    );
    assert!(matches!(
        err(&raw(&deep, b"")),
        SafetensorsError::UnknownField { .. }
    ));
    let deep_meta = format!(
        r#"{{"__metadata__":{{"k":{}1{}}}}}"#,
        "[".repeat(5000),
        "]".repeat(5000)
    );
    assert!(matches!(
        err(&raw(&deep_meta, b"")),
        SafetensorsError::MetadataValueNotString { .. }
    ));
}

// --- 38: duplicates ---------------------------------------------------------------------------

#[test]
fn duplicate_tensor_names() {
    // Byte-identical duplicates, and F32 then I32 over the same range (reference: last wins).
    let entry = r#""t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}"#;
    let other = r#""t":{"dtype":"I32","shape":[1],"data_offsets":[0,4]}"#;
    for header in [
        format!("{{{entry},{entry}}}"),
        format!("{{{entry},{other}}}"),
    ] {
        assert_eq!(
            err(&padded(&header, &[0; 4])),
            SafetensorsError::DuplicateTensor {
                tensor: "t".to_string()
            }
        );
    }
}

#[test]
fn duplicate_metadata() {
    let header = r#"{"__metadata__":{},"__metadata__":{}}"#;
    assert_eq!(err(&raw(header, b"")), SafetensorsError::DuplicateMetadata);
    let header = r#"{"__metadata__":{"a":"1","a":"2"}}"#;
    assert!(matches!(
        err(&raw(header, b"")),
        SafetensorsError::DuplicateMetadataKey { .. }
    ));
}

#[test]
fn duplicate_field_in_entry() {
    let header = r#"{"t":{"dtype":"F32","dtype":"I32","shape":[1],"data_offsets":[0,4]}}"#;
    assert!(matches!(
        err(&padded(header, &[0; 4])),
        SafetensorsError::DuplicateField { field: "dtype", .. }
    ));
}

// --- entries ----------------------------------------------------------------------------------

#[test]
fn unknown_field_in_entry() {
    let header = r#"{"t":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"extra":0}}"#;
    assert!(matches!(
        err(&padded(header, &[0])),
        SafetensorsError::UnknownField { .. }
    ));
}

#[test]
fn unknown_dtypes() {
    for dtype in ["f32", "F128", "", "float32", "F8_E4M3FN"] {
        assert!(
            matches!(
                err(&padded(&one(dtype, "[1]", "[0,4]"), &[0; 4])),
                SafetensorsError::UnknownDtype { .. }
            ),
            "{dtype}"
        );
    }
}

#[test]
fn missing_fields() {
    for (header, field) in [
        (r#"{"t":{"shape":[1],"data_offsets":[0,1]}}"#, "dtype"),
        (r#"{"t":{"dtype":"U8","data_offsets":[0,1]}}"#, "shape"),
        (r#"{"t":{"dtype":"U8","shape":[1]}}"#, "data_offsets"),
    ] {
        assert_eq!(
            err(&padded(header, &[0])),
            SafetensorsError::MissingField {
                tensor: "t".to_string(),
                field
            }
        );
    }
}

#[test]
fn wrong_entry_and_field_types() {
    assert!(matches!(
        err(&raw(r#"{"t":[1]}"#, b"")),
        SafetensorsError::EntryNotObject { .. }
    ));
    assert!(matches!(
        err(&padded(&one("U8", "1", "[0,1]"), &[0])),
        SafetensorsError::WrongFieldType { field: "shape", .. }
    ));
    assert!(matches!(
        err(&padded(
            r#"{"t":{"dtype":8,"shape":[1],"data_offsets":[0,1]}}"#,
            &[0]
        )),
        SafetensorsError::WrongFieldType { field: "dtype", .. }
    ));
}

#[test]
fn data_offsets_must_be_two_unsigned_integers() {
    for offsets in ["[0,1,2]", "[0]", "[]"] {
        assert!(
            matches!(
                err(&padded(&one("U8", "[1]", offsets), &[0])),
                SafetensorsError::OffsetsNotPair { .. }
            ),
            "{offsets}"
        );
    }
    for offsets in [
        "[0,4.0]",
        "[-1,1]",
        "[0,\"1\"]",
        "[0,18446744073709551616]",
        "[0,1e0]",
    ] {
        assert!(
            matches!(
                err(&padded(&one("U8", "[1]", offsets), &[0])),
                SafetensorsError::NotUnsignedInteger { .. }
            ),
            "{offsets}"
        );
    }
    assert!(matches!(
        err(&padded(&one("U8", "[-1]", "[0,1]"), &[0])),
        SafetensorsError::NotUnsignedInteger { field: "shape", .. }
    ));
}

#[test]
fn reversed_offsets() {
    assert!(matches!(
        err(&padded(&one("U8", "[0]", "[4,0]"), &[0; 4])),
        SafetensorsError::ReversedOffsets {
            begin: 4,
            end: 0,
            ..
        }
    ));
}

// --- 39: coverage -----------------------------------------------------------------------------

fn two(a: &str, b: &str) -> String {
    format!(
        r#"{{"a":{{"dtype":"U8","shape":[4],"data_offsets":{a}}},"b":{{"dtype":"U8","shape":[4],"data_offsets":{b}}}}}"#
    )
}

#[test]
fn overlapping_ranges() {
    assert!(matches!(
        err(&padded(&two("[0,4]", "[2,6]"), &[0; 6])),
        SafetensorsError::OverlappingTensors { .. }
    ));
    // An empty tensor inside another tensor's bytes overlaps it too.
    let header = r#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"e":{"dtype":"U8","shape":[0],"data_offsets":[2,2]}}"#;
    assert!(matches!(
        err(&padded(header, &[0; 4])),
        SafetensorsError::OverlappingTensors { .. }
    ));
}

#[test]
fn gap_between_tensors() {
    assert_eq!(
        err(&padded(&two("[0,4]", "[6,10]"), &[0; 10])),
        SafetensorsError::GapBetweenTensors {
            tensor: "b".to_string(),
            gap_begin: 4,
            gap_end: 6
        }
    );
}

#[test]
fn data_not_starting_at_zero() {
    assert!(matches!(
        err(&padded(&one("U8", "[4]", "[4,8]"), &[0; 8])),
        SafetensorsError::DataNotStartingAtZero { begin: 4, .. }
    ));
}

#[test]
fn range_past_end_of_file() {
    assert!(matches!(
        err(&padded(&one("U8", "[4]", "[0,4]"), &[0; 3])),
        SafetensorsError::TensorPastEnd {
            end: 4,
            data_len: 3,
            ..
        }
    ));
}

#[test]
fn trailing_bytes_after_last_tensor_polyglot() {
    let mut data = vec![0u8; 4];
    data.extend_from_slice(b"PK\x03\x04 appended zip");
    assert!(matches!(
        err(&padded(&one("U8", "[4]", "[0,4]"), &data)),
        SafetensorsError::TrailingData { covered: 4, .. }
    ));
    // Data with no tensor at all.
    assert!(matches!(
        err(&raw("{}", b"\x80\x02.")),
        SafetensorsError::TrailingData { covered: 0, .. }
    ));
}

#[test]
fn ten_million_tensors_over_the_same_bytes_rejected_fast() {
    // The repo's abuse shape: many entries all pointing at [0, n]. Our tensor cap stops 10 M
    // entries long before the header is parsed; 100 k entries are stopped by contiguity.
    let mut header = String::from("{");
    for i in 0..100_000 {
        if i > 0 {
            header.push(',');
        }
        header.push_str(&format!(
            r#""t{i}":{{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}"#
        ));
    }
    header.push('}');
    let start = std::time::Instant::now();
    assert!(matches!(
        err(&padded(&header, &[0; 4])),
        SafetensorsError::OverlappingTensors { .. }
    ));
    // Generous bound; this is a complexity guard (quadratic would take minutes), not a benchmark.
    assert!(start.elapsed().as_secs() < 30);
}

#[test]
fn too_many_tensors() {
    let mut header = String::from("{");
    for i in 0..=safetensors::MAX_TENSORS {
        if i > 0 {
            header.push(',');
        }
        header.push_str(&format!(
            r#""{i}":{{"dtype":"U8","shape":[0],"data_offsets":[0,0]}}"#
        ));
    }
    header.push('}');
    assert_eq!(err(&raw(&header, b"")), SafetensorsError::TooManyTensors);
}

// --- 40: shape arithmetic ---------------------------------------------------------------------

#[test]
fn size_mismatch() {
    assert!(matches!(
        err(&padded(&one("F32", "[2]", "[0,4]"), &[0; 4])),
        SafetensorsError::SizeMismatch {
            expected: 8,
            actual: 4,
            ..
        }
    ));
    // C64 with half an element.
    assert!(matches!(
        err(&padded(&one("C64", "[1]", "[0,4]"), &[0; 4])),
        SafetensorsError::SizeMismatch { .. }
    ));
}

#[test]
fn shape_overflow() {
    for shape in [
        "[2,18446744073709551614]",
        "[2,9223372036854775807]",
        "[18446744073709551615]",
        "[4294967296,4294967296]",
        // Zero elements, but the strides overflow: rejected (the reference accepts it).
        "[0,4294967296,4294967296]",
        "[4294967296,4294967296,0]",
    ] {
        assert!(
            matches!(
                err(&padded(&one("I32", shape, "[0,0]"), b"")),
                SafetensorsError::ShapeOverflow { .. }
            ),
            "{shape}"
        );
    }
    // Zero elements with strides that fit are fine.
    assert!(parse_header(&padded(&one("I32", "[0,4294967296]", "[0,0]"), b"")).is_ok());
}

#[test]
fn sub_byte_dtypes_must_fill_whole_bytes() {
    assert!(matches!(
        err(&padded(&one("F4", "[3]", "[0,2]"), &[0; 2])),
        SafetensorsError::PartialByte { elements: 3, .. }
    ));
    assert!(matches!(
        err(&padded(&one("F6_E2M3", "[3]", "[0,3]"), &[0; 3])),
        SafetensorsError::PartialByte { .. }
    ));
    assert!(parse_header(&padded(&one("F4", "[4]", "[0,2]"), &[0; 2])).is_ok());
    assert!(parse_header(&padded(&one("F6_E3M2", "[4]", "[0,3]"), &[0; 3])).is_ok());
}

#[test]
fn absurd_rank() {
    let ok = format!("[{}]", vec!["1"; MAX_RANK].join(","));
    assert!(parse_header(&padded(&one("U8", &ok, "[0,1]"), &[0])).is_ok());
    for rank in [MAX_RANK + 1, 100_000] {
        let shape = format!("[{}]", vec!["1"; rank].join(","));
        assert!(matches!(
            err(&padded(&one("U8", &shape, "[0,1]"), &[0])),
            SafetensorsError::RankTooLarge { .. }
        ));
    }
}

// --- 42: names --------------------------------------------------------------------------------

fn named(name: &str) -> Vec<u8> {
    let name = serde_json::Value::from(name).to_string();
    padded(
        &format!(r#"{{{name}:{{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}}}"#),
        &[0],
    )
}

#[test]
fn names() {
    for ok in [
        "bert.encoder.layer.0.weight",
        "a..b",
        "model/layer_0/kernel:0",
        "ü",
    ] {
        assert!(parse_header(&named(ok)).is_ok(), "{ok}");
    }
    assert_eq!(err(&named("")), SafetensorsError::EmptyName);
    for bad in ["a\0b", "a\nb", "\u{7f}", "a\u{85}b"] {
        assert!(
            matches!(
                err(&named(bad)),
                SafetensorsError::NameControlCharacter { .. }
            ),
            "{bad:?}"
        );
    }
    for bad in ["/etc/passwd", "a/../b", "..", "../x", "a\\..\\b", "\\x"] {
        assert!(
            matches!(err(&named(bad)), SafetensorsError::NamePathTraversal { .. }),
            "{bad:?}"
        );
    }
    assert!(matches!(
        err(&named(&"x".repeat(64 * 1024))),
        SafetensorsError::NameTooLong { len: 65536, .. }
    ));
    assert!(parse_header(&named(&"x".repeat(MAX_NAME_LEN))).is_ok());
}

// --- metadata ---------------------------------------------------------------------------------

#[test]
fn metadata_values_must_be_strings() {
    for value in ["1", "{}", "[]", "null", "true", "1.5"] {
        let header = format!(r#"{{"__metadata__":{{"k":{value}}}}}"#);
        assert!(
            matches!(
                err(&raw(&header, b"")),
                SafetensorsError::MetadataValueNotString { .. }
            ),
            "{value}"
        );
    }
    let header = parse_header(&raw(r#"{"__metadata__":{"format":"pt","k":""}}"#, b"")).unwrap();
    assert_eq!(
        header.metadata().get("format").map(String::as_str),
        Some("pt")
    );
}

#[test]
fn metadata_must_be_a_map() {
    let header = r#"{"__metadata__":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#;
    assert!(matches!(
        err(&padded(header, &[0])),
        SafetensorsError::MetadataValueNotString { .. }
    ));
    assert!(matches!(
        err(&raw(r#"{"__metadata__":"x"}"#, b"")),
        SafetensorsError::MetadataNotMap { .. }
    ));
}

// --- alignment --------------------------------------------------------------------------------

/// A file from header text padded with spaces so that the data section starts one byte past a
/// multiple of 8 (misaligned for every dtype wider than a byte), and data.
fn off_by_one(header: &str, data: &[u8]) -> Vec<u8> {
    let mut header = header.to_string();
    while header.len() % 8 != 1 {
        header.push(' ');
    }
    raw(&header, data)
}

/// Opens `file` (written as `model.safetensors` in a fresh directory) through the public loader.
fn open_bytes(label: &str, file: &[u8]) -> safeformers_weights::Checkpoint {
    let dir = scratch(label);
    let path = write(&dir, "model.safetensors", file);
    open_checkpoint(&path, &LoadPolicy::default()).unwrap_or_else(|e| panic!("{label}: {e}"))
}

/// Same names, dtypes, shapes and bytes; every tensor of `loaded` aligned for its dtype.
fn assert_same_tensors(loaded: &safeformers_weights::Checkpoint, twin: &[TensorView<'_>]) {
    assert_eq!(loaded.len(), twin.len());
    for expected in twin {
        let tensor = loaded.tensor(expected.name).unwrap();
        assert_eq!(
            (tensor.dtype, tensor.shape, tensor.data),
            (expected.dtype, expected.shape, expected.data),
            "{}",
            expected.name
        );
        let alignment = usize::try_from(tensor.dtype.bits() / 8)
            .unwrap()
            .clamp(1, 8);
        assert_eq!(
            tensor.data.as_ptr().addr() % alignment,
            0,
            "{} is not aligned",
            tensor.name
        );
    }
}

#[test]
fn misaligned_tensor_data_is_read_by_copying_just_those_tensors() {
    // Header of odd length: the F32 data starts at an odd file offset.
    let values: Vec<u8> = [1.0f32, -2.5, 3.25]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let file = off_by_one(&one("F32", "[3]", "[0,12]"), &values);
    let header = parse_header(&file).unwrap();
    assert_eq!(header.data_start() % 8, 1);
    let twin = [view("t", Dtype::F32, &[3], &values)];
    let loaded = open_bytes("misaligned-f32", &file);
    assert_same_tensors(&loaded, &twin);
    assert!(loaded.is_copied_for_alignment("t"));
    // The aligned twin written by our serializer is served from the map.
    let aligned = open_bytes(
        "aligned-f32",
        &safetensors::serialize(&twin, &BTreeMap::new()).unwrap(),
    );
    assert_same_tensors(&aligned, &twin);
    assert!(!aligned.is_copied_for_alignment("t"));

    // A U8 tensor first, then an F64 at data offset 1 (misaligned) and a BF16 at data offset 9
    // (misaligned for 2), then a U8 (any offset is aligned for it) and an F32 at 12 (aligned).
    let (a, b, c, d, e) = (
        [7u8],
        6.5f64.to_le_bytes(),
        [0x80u8, 0x3f],
        [9u8],
        4.0f32.to_le_bytes(),
    );
    let header = r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"b":{"dtype":"F64","shape":[1],"data_offsets":[1,9]},"c":{"dtype":"BF16","shape":[1],"data_offsets":[9,11]},"d":{"dtype":"U8","shape":[1],"data_offsets":[11,12]},"e":{"dtype":"F32","shape":[1],"data_offsets":[12,16]}}"#;
    let data = [&a[..], &b, &c, &d, &e].concat();
    let file = padded(header, &data);
    let twin = [
        view("a", Dtype::U8, &[1], &a),
        view("b", Dtype::F64, &[1], &b),
        view("c", Dtype::BF16, &[1], &c),
        view("d", Dtype::U8, &[1], &d),
        view("e", Dtype::F32, &[1], &e),
    ];
    let loaded = open_bytes("misaligned-mixed", &file);
    assert_same_tensors(&loaded, &twin);
    let copied: Vec<&str> = loaded
        .names()
        .filter(|name| loaded.is_copied_for_alignment(name))
        .collect();
    assert_eq!(copied, ["b", "c"]);
    // The header says the same, and `scan` tells.
    let header = parse_header(&file).unwrap();
    let misaligned: Vec<&str> = header
        .tensors()
        .iter()
        .filter(|tensor| !tensor.is_aligned_in_file())
        .map(|tensor| tensor.name.as_str())
        .collect();
    assert_eq!(misaligned, ["b", "c"]);
    let (_, findings, invalid) = safeformers_weights::scan::scan_bytes(&file, None);
    assert!(!invalid);
    assert!(
        findings
            .iter()
            .any(|finding| finding.kind == "misaligned_tensors" && finding.detail.starts_with('2')),
        "{findings:?}"
    );
}

#[test]
fn misaligned_files_keep_every_other_rule() {
    // The data section starts at an odd offset in each; each breaks one other rule.
    let cases = [
        (
            r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[2,6]}}"#,
            8,
        ),
        (
            r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[5,9]}}"#,
            9,
        ),
        (
            r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}} "#,
            5,
        ),
        (
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}} "#,
            4,
        ),
    ];
    let errors: Vec<SafetensorsError> = cases
        .iter()
        .map(|(header, data_len)| err(&off_by_one(header, &vec![0; *data_len])))
        .collect();
    assert!(
        matches!(
            errors.as_slice(),
            [
                SafetensorsError::OverlappingTensors { .. },
                SafetensorsError::GapBetweenTensors { .. },
                SafetensorsError::TrailingData { .. },
                SafetensorsError::SizeMismatch { .. },
            ]
        ),
        "{errors:?}"
    );
}

// --- errors through `open` name the file ------------------------------------------------------

#[test]
fn open_errors_name_the_file() {
    let dir = scratch("open-error");
    let path = write(&dir, "model.safetensors", &raw("{} x", b""));
    let error = safetensors::open(&path).unwrap_err();
    assert!(matches!(error, Error::Safetensors { .. }));
    assert!(error.to_string().contains("model.safetensors"), "{error}");
    assert!(!error.is_policy_refusal());
    let _ = std::fs::remove_dir_all(dir);
}

// --- 43: sharded ------------------------------------------------------------------------------

fn shard(names: &[&str]) -> Vec<u8> {
    let data = [7u8; 4];
    let views: Vec<TensorView<'_>> = names
        .iter()
        .map(|name| view(name, Dtype::U8, &[4], &data))
        .collect();
    safetensors::serialize(&views, &BTreeMap::new()).unwrap()
}

fn index(entries: &[(&str, &str)]) -> String {
    let map: serde_json::Map<String, serde_json::Value> = entries
        .iter()
        .map(|(tensor, shard)| (tensor.to_string(), serde_json::Value::from(*shard)))
        .collect();
    serde_json::json!({"metadata": {"total_size": 8}, "weight_map": map}).to_string()
}

fn sharded_dir(label: &str, index_json: &str, shards: &[(&str, Vec<u8>)]) -> (PathBuf, PathBuf) {
    let dir = scratch(label);
    for (name, bytes) in shards {
        write(&dir, name, bytes);
    }
    let index_path = write(&dir, "model.safetensors.index.json", index_json.as_bytes());
    (dir, index_path)
}

#[test]
fn sharded_positive() {
    let (dir, index_path) = sharded_dir(
        "sharded-ok",
        &index(&[
            ("a", "s1.safetensors"),
            ("b", "s2.safetensors"),
            ("c", "s2.safetensors"),
        ]),
        &[
            ("s1.safetensors", shard(&["a"])),
            ("s2.safetensors", shard(&["b", "c"])),
        ],
    );
    let checkpoint = open_sharded(&index_path, &LoadPolicy::default()).unwrap();
    assert_eq!(checkpoint.names().collect::<Vec<_>>(), ["a", "b", "c"]);
    assert_eq!(checkpoint.files().count(), 2);
    let via_folder = open_checkpoint(&dir, &LoadPolicy::default()).unwrap();
    assert_eq!(via_folder.len(), 3);
    let index = read_index(&index_path).unwrap();
    assert_eq!(index.shards().len(), 2);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn sharded_subdirectory_is_allowed() {
    let dir = scratch("sharded-subdir");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    write(&dir, "sub/s.safetensors", &shard(&["a"]));
    let index_path = write(
        &dir,
        "i.index.json",
        index(&[("a", "sub/s.safetensors")]).as_bytes(),
    );
    assert_eq!(
        open_sharded(&index_path, &LoadPolicy::default())
            .unwrap()
            .len(),
        1
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn sharded_unsafe_paths() {
    for target in [
        "../../etc/passwd",
        "/etc/passwd",
        "https://evil.example/model.safetensors",
        "sub\\..\\..\\x",
        "C:\\Windows\\x",
        "\\\\server\\share\\x",
        "",
        "a\0b",
    ] {
        let (dir, index_path) = sharded_dir("sharded-unsafe", &index(&[("a", target)]), &[]);
        let error = open_sharded(&index_path, &LoadPolicy::default()).unwrap_err();
        assert!(
            matches!(
                error,
                Error::ShardIndex {
                    source: IndexError::UnsafeShardPath { .. },
                    ..
                }
            ),
            "{target:?}: {error}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[test]
fn sharded_tensor_missing_from_shard() {
    let (dir, index_path) = sharded_dir(
        "sharded-missing",
        &index(&[("a", "s1.safetensors"), ("b", "s1.safetensors")]),
        &[("s1.safetensors", shard(&["a"]))],
    );
    let error = open_sharded(&index_path, &LoadPolicy::default()).unwrap_err();
    assert!(matches!(
        error,
        Error::ShardIndex {
            source: IndexError::TensorMissingFromShard { .. },
            ..
        }
    ));
    assert!(error.to_string().contains("`b`"), "{error}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn sharded_same_tensor_in_two_shards() {
    let (dir, index_path) = sharded_dir(
        "sharded-twice",
        &index(&[("a", "s1.safetensors"), ("b", "s2.safetensors")]),
        &[
            ("s1.safetensors", shard(&["a"])),
            ("s2.safetensors", shard(&["a", "b"])),
        ],
    );
    let error = open_sharded(&index_path, &LoadPolicy::default()).unwrap_err();
    assert!(matches!(error, Error::DuplicateTensor { .. }), "{error}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn sharded_extra_unlisted_tensor() {
    let (dir, index_path) = sharded_dir(
        "sharded-extra",
        &index(&[("a", "s1.safetensors")]),
        &[("s1.safetensors", shard(&["a", "hidden"]))],
    );
    let error = open_sharded(&index_path, &LoadPolicy::default()).unwrap_err();
    assert!(matches!(
        error,
        Error::ShardIndex {
            source: IndexError::UnlistedTensor { .. },
            ..
        }
    ));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn sharded_tensor_in_wrong_shard() {
    let (dir, index_path) = sharded_dir(
        "sharded-wrong",
        &index(&[("a", "s2.safetensors"), ("b", "s1.safetensors")]),
        &[
            ("s1.safetensors", shard(&["a", "b"])),
            ("s2.safetensors", shard(&[])),
        ],
    );
    let error = open_sharded(&index_path, &LoadPolicy::default()).unwrap_err();
    assert!(matches!(
        error,
        Error::ShardIndex {
            source: IndexError::TensorInWrongShard { .. },
            ..
        }
    ));
    let _ = std::fs::remove_dir_all(dir);
}

/// A minimal protocol-2 pickle of an empty dict: enough for `detect_format` to say pickle.
const PICKLE: &[u8] = b"\x80\x02}q\x00.";

#[test]
fn sharded_mixed_formats_refused() {
    let (dir, index_path) = sharded_dir(
        "sharded-mixed",
        &index(&[("a", "s1.safetensors"), ("b", "s2.bin")]),
        &[
            ("s1.safetensors", shard(&["a"])),
            ("s2.bin", PICKLE.to_vec()),
        ],
    );
    let error = open_sharded(&index_path, &LoadPolicy::allowing_pickle()).unwrap_err();
    assert!(matches!(error, Error::ShardFormatRefused { .. }), "{error}");
    assert!(error.is_policy_refusal());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn sharded_pickle_refused_by_default() {
    let (dir, index_path) = sharded_dir(
        "sharded-pickle",
        &index(&[("a", "s1.bin"), ("b", "s2.bin")]),
        &[("s1.bin", PICKLE.to_vec()), ("s2.bin", PICKLE.to_vec())],
    );
    let error = open_sharded(&index_path, &LoadPolicy::default()).unwrap_err();
    assert!(matches!(error, Error::ShardFormatRefused { .. }), "{error}");
    assert!(error.is_policy_refusal());
    assert!(error.to_string().contains("--allow-pickle"), "{error}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn sharded_index_strict_json() {
    let (dir, index_path) = sharded_dir(
        "sharded-dup",
        r#"{"weight_map":{"a":"s1.safetensors","a":"s2.safetensors"}}"#,
        &[],
    );
    assert!(matches!(
        read_index(&index_path).unwrap_err(),
        Error::ShardIndex {
            source: IndexError::DuplicateKey { .. },
            ..
        }
    ));
    let _ = std::fs::remove_dir_all(dir);
}

// --- properties -------------------------------------------------------------------------------

fn valid_file(
    entries: &[(String, Dtype, Vec<usize>)],
    metadata: &BTreeMap<String, String>,
) -> Vec<u8> {
    let datas: Vec<Vec<u8>> = entries
        .iter()
        .map(|(_, dtype, shape)| {
            let count: usize = shape.iter().product();
            let len = dtype.byte_len(count as u64).unwrap() as usize;
            (0..len).map(|i| (i * 31) as u8).collect()
        })
        .collect();
    let views: Vec<TensorView<'_>> = entries
        .iter()
        .zip(&datas)
        .map(|((name, dtype, shape), data)| view(name, *dtype, shape, data))
        .collect();
    safetensors::serialize(&views, metadata).unwrap()
}

fn entries_strategy() -> impl Strategy<Value = Vec<(String, Dtype, Vec<usize>)>> {
    let dtype = proptest::sample::select(Dtype::ALL.to_vec());
    // Dims that are multiples of 4 keep every sub-byte dtype in whole bytes.
    let shape =
        proptest::collection::vec(prop_oneof![Just(0usize), Just(1), Just(4), Just(8)], 0..4)
            .prop_map(|mut shape| {
                if !shape.is_empty() && !shape.iter().any(|&d| d % 4 == 0) {
                    shape[0] = 4;
                }
                if shape.is_empty() {
                    shape.push(4);
                }
                shape
            });
    proptest::collection::btree_map("[a-z][a-z0-9._]{0,12}", (dtype, shape), 0..8).prop_map(|map| {
        map.into_iter()
            .map(|(name, (dtype, shape))| (name, dtype, shape))
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_header(&bytes);
    }

    #[test]
    fn random_bytes_behind_valid_length_never_panic(body in "\\PC{0,200}") {
        let _ = parse_header(&raw(&body, b""));
    }

    #[test]
    fn valid_headers_round_trip(
        entries in entries_strategy(),
        metadata in proptest::collection::btree_map("[a-z]{1,6}", "\\PC{0,10}", 0..3),
    ) {
        let file = valid_file(&entries, &metadata);
        let header = parse_header(&file).unwrap();
        prop_assert_eq!(header.metadata(), &metadata);
        prop_assert_eq!(header.tensors().len(), entries.len());
        for (name, dtype, shape) in &entries {
            let tensor = header.tensors().iter().find(|t| &t.name == name).unwrap();
            prop_assert_eq!(tensor.dtype, *dtype);
            prop_assert_eq!(&tensor.shape, shape);
            prop_assert_eq!(tensor.range.start % (dtype.bits() / 8).clamp(1, 8) as usize, 0);
        }
    }

    #[test]
    fn mutated_valid_files_never_panic(
        entries in entries_strategy(),
        mutations in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in any::<usize>(),
    ) {
        let mut file = valid_file(&entries, &BTreeMap::new());
        for (position, byte) in mutations {
            let len = file.len();
            file[position % len] = byte;
        }
        if cut % 4 == 0 {
            file.truncate(cut % (file.len() + 1));
        }
        if let Ok(header) = parse_header(&file) {
            for tensor in header.tensors() {
                prop_assert!(tensor.range.end <= file.len());
            }
        }
    }
}

// --- interop ----------------------------------------------------------------------------------

/// Written by the reference Python safetensors (torch venv, `safetensors.torch.save`):
/// ```python
/// save({"a.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3),
///       "b.bias": torch.tensor([1, 2], dtype=torch.int64),
///       "c": torch.tensor([1.5], dtype=torch.bfloat16),
///       "d": torch.tensor([True, False]),
///       "e": torch.zeros((0, 3), dtype=torch.float16),
///       "f": torch.tensor([1.0], dtype=torch.float8_e4m3fn)}, metadata={"format": "pt"})
/// ```
const TORCH_MULTI: &[u8] = include_bytes!("data/torch_multi.safetensors");

#[test]
fn reference_writer_output_is_accepted() {
    let header = parse_header(TORCH_MULTI).unwrap();
    assert_eq!(
        header.metadata().get("format").map(String::as_str),
        Some("pt")
    );
    let find = |name: &str| header.tensors().iter().find(|t| t.name == name).unwrap();
    let a = find("a.weight");
    assert_eq!((a.dtype, a.shape.as_slice()), (Dtype::F32, &[2, 3][..]));
    let values: Vec<f32> = TORCH_MULTI[a.range.clone()]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(values, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    let view = TensorView {
        name: "f",
        dtype: find("f").dtype,
        shape: &find("f").shape,
        data: &TORCH_MULTI[find("f").range.clone()],
    };
    assert_eq!(safeformers_weights::convert::to_f32(&view).unwrap(), [1.0]);
    assert_eq!(find("e").range.len(), 0);
    assert_eq!(find("d").dtype, Dtype::Bool);
}

#[test]
fn sharded_index_size_cap() {
    let dir = scratch("sharded-huge");
    let path = dir.join("model.safetensors.index.json");
    // A sparse file: no 64 MB written, and none read either (the size is checked first).
    let file = std::fs::File::create(&path).unwrap();
    file.set_len(safeformers_weights::sharded::MAX_INDEX_LEN + 1)
        .unwrap();
    assert!(matches!(
        read_index(&path).unwrap_err(),
        Error::ShardIndex {
            source: IndexError::TooLarge { .. },
            ..
        }
    ));
    let _ = std::fs::remove_dir_all(dir);
}
