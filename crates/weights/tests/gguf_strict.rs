//! The strict GGUF reader through the public API: valid v2 and v3 files, then one test per
//! refusal rule, then property tests that mutations of a valid file never panic.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod gguf_builder;

use gguf_builder::{Gguf, ggml, string, valid, value_type};
use proptest::prelude::*;
use safeformers_weights::gguf::{
    self, GgmlType, GgufError, GgufFile, MAX_ARRAY_LEN, MAX_ARRAY_STRING_LEN, MAX_METADATA_KEYS,
    MAX_STRING_LEN, MAX_TENSORS, MetadataArray, MetadataValue, parse_header,
};
use safeformers_weights::scan::{Severity, scan_bytes};
use safeformers_weights::{Error, FileFormat, detect_format};

fn err(file: &[u8]) -> GgufError {
    match parse_header(file) {
        Ok(header) => panic!("accepted: {header:?}"),
        Err(error) => error,
    }
}

// --- valid files ------------------------------------------------------------------------------

#[test]
fn valid_v3_file_parses_with_every_value_type() {
    let bytes = valid(3).build();
    assert_eq!(detect_format(&bytes), FileFormat::Gguf);
    let header = parse_header(&bytes).unwrap();
    assert_eq!(header.version(), 3);
    assert_eq!(header.alignment(), 32);
    assert_eq!(header.data_start() % 32, 0);
    assert_eq!(header.architecture().unwrap(), Some("llama"));
    assert_eq!(header.get_u32("llama.embedding_length").unwrap(), Some(64));
    assert_eq!(header.get_u64("llama.embedding_length").unwrap(), Some(64));
    assert_eq!(
        header
            .get_f32("llama.attention.layer_norm_rms_epsilon")
            .unwrap(),
        Some(1e-5)
    );
    assert_eq!(
        header.get_bool("tokenizer.ggml.add_bos_token").unwrap(),
        Some(true)
    );
    assert_eq!(header.get("test.u8"), Some(&MetadataValue::U8(7)));
    assert_eq!(header.get("test.i8"), Some(&MetadataValue::I8(-1)));
    assert_eq!(header.get("test.u16"), Some(&MetadataValue::U16(513)));
    assert_eq!(header.get("test.i16"), Some(&MetadataValue::I16(-2)));
    assert_eq!(header.get("test.i32"), Some(&MetadataValue::I32(-3)));
    assert_eq!(header.get("test.u64"), Some(&MetadataValue::U64(1 << 40)));
    assert_eq!(header.get("test.i64"), Some(&MetadataValue::I64(-4)));
    assert_eq!(header.get("test.f64"), Some(&MetadataValue::F64(0.5)));
    let tokens = header
        .get_string_array("tokenizer.ggml.tokens")
        .unwrap()
        .unwrap();
    assert_eq!(
        tokens.iter().collect::<Vec<_>>(),
        ["<s>", "</s>", "Ġthe", "héllo"]
    );
    assert_eq!(
        header.get_array("tokenizer.ggml.scores").unwrap(),
        Some(&MetadataArray::F32(vec![1.0, 2.0]))
    );
    assert_eq!(header.chat_template().unwrap(), Some("{{ messages }}"));
    assert_eq!(header.get_string("missing").unwrap(), None);
}

#[test]
fn valid_v2_file_parses() {
    let header = parse_header(&valid(2).build()).unwrap();
    assert_eq!(header.version(), 2);
    assert_eq!(header.tensors().len(), 5);
}

#[test]
fn tensor_infos_and_views() {
    let bytes = valid(3).build();
    let file = GgufFile::from_bytes(bytes.clone(), "valid.gguf").unwrap();
    let header = file.header();
    let names: Vec<&str> = header.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "token_embd.weight",
            "blk.0.attn_norm.weight",
            "blk.0.ffn_up.weight",
            "output.weight",
            "blk.0.small"
        ]
    );
    let embd = header.tensor("token_embd.weight").unwrap();
    assert_eq!(embd.ggml_type, GgmlType::Q4_1);
    assert_eq!(embd.dims, [64, 4]);
    assert_eq!(embd.shape, [4, 64]);
    assert_eq!(embd.element_count(), 256);
    assert_eq!(embd.byte_len(), 160);
    assert_eq!(embd.offset, 0);
    let up = header.tensor("blk.0.ffn_up.weight").unwrap();
    assert_eq!(up.ggml_type, GgmlType::Q6_K);
    assert_eq!(up.offset, 160 + 256);
    assert_eq!(up.range.start as u64, header.data_start() + up.offset);
    // Every view is the bytes of its range, and starts on the alignment.
    for tensor in file.tensors() {
        assert_eq!(tensor.data, &bytes[tensor.info.range.clone()]);
        assert_eq!(tensor.info.range.start % 32, 0);
    }
    let small = file.tensor("blk.0.small").unwrap();
    assert_eq!(small.data.len(), 6);
    assert!(file.tensor("absent").is_none());
    let counts = header.type_counts();
    assert_eq!(counts.get(&GgmlType::F32), Some(&1));
    assert_eq!(counts.get(&GgmlType::Q6_K), Some(&1));
}

#[test]
fn file_without_tensors_or_padding_parses() {
    let bytes = Gguf::new(3).kv_string("general.name", "x").build();
    let header = parse_header(&bytes).unwrap();
    assert!(header.tensors().is_empty());
}

#[test]
fn last_tensor_without_padding_parses() {
    let mut file = valid(3);
    file.pad_last = false;
    assert!(parse_header(&file.build()).is_ok());
}

#[test]
fn custom_alignment_is_used() {
    let mut file = Gguf::new(3)
        .kv_u32("general.alignment", 64)
        .tensor("a", &[3], ggml::F32, 12)
        .tensor("b", &[32], ggml::Q8_0, 34);
    file.alignment = 64;
    let header = parse_header(&file.build()).unwrap();
    assert_eq!(header.alignment(), 64);
    assert_eq!(header.data_start() % 64, 0);
    assert_eq!(header.tensor("b").unwrap().offset, 64);
}

#[test]
fn open_maps_a_file_and_names_it_in_errors() {
    let dir = safeformers_testkit::scratch_dir("gguf-open");
    let good = dir.join("good.gguf");
    std::fs::write(&good, valid(3).build()).unwrap();
    let file = GgufFile::open(&good).unwrap();
    assert_eq!(file.tensors().len(), 5);
    let bad = dir.join("bad.gguf");
    std::fs::write(&bad, b"GGUF\x01\0\0\0").unwrap();
    let error = GgufFile::open(&bad).unwrap_err();
    assert!(matches!(
        &error,
        Error::Gguf {
            source: GgufError::VersionOne,
            ..
        }
    ));
    let message = error.to_string();
    assert!(message.contains("bad.gguf"), "{message}");
    assert!(message.contains("version 1"), "{message}");
    std::fs::remove_dir_all(&dir).unwrap();
}

// --- preamble ---------------------------------------------------------------------------------

#[test]
fn bad_magic() {
    assert!(matches!(err(b"GGUG\x03\0\0\0"), GgufError::BadMagic { .. }));
    assert!(matches!(err(b"GGU"), GgufError::Truncated { .. }));
    assert!(matches!(err(b""), GgufError::Truncated { .. }));
}

#[test]
fn versions() {
    assert_eq!(err(&Gguf::new(1).build()), GgufError::VersionOne);
    assert_eq!(
        err(&Gguf::new(4).build()),
        GgufError::UnsupportedVersion { version: 4 }
    );
    assert_eq!(
        err(&Gguf::new(0).build()),
        GgufError::UnsupportedVersion { version: 0 }
    );
    // A big-endian writer byte-swaps the version.
    assert_eq!(
        err(&Gguf::new(3u32.swap_bytes()).build()),
        GgufError::BigEndian {
            version: 0x0300_0000
        }
    );
    assert!(matches!(
        err(&Gguf::new(2u32.swap_bytes()).build()),
        GgufError::BigEndian { .. }
    ));
}

#[test]
fn truncated_anywhere_is_an_error_never_a_panic() {
    let bytes = valid(3).build();
    let header = parse_header(&bytes).unwrap();
    let data_start = header.data_start() as usize;
    let data_end = header.tensors().iter().map(|t| t.range.end).max().unwrap();
    // Cutting inside the header is a truncation; cutting inside the data is a tensor past the
    // end (the header is complete, the data is not). Cutting the last tensor's padding is fine.
    assert!(parse_header(&bytes[..data_end]).is_ok());
    for len in 0..data_end {
        let error = err(&bytes[..len]);
        if len < data_start.min(bytes.len()) - 32 {
            assert!(
                matches!(
                    error,
                    GgufError::Truncated { .. } | GgufError::CountPastEnd { .. }
                ),
                "cut at {len}: {error:?}"
            );
        } else {
            assert!(
                matches!(
                    error,
                    GgufError::Truncated { .. } | GgufError::TensorPastEnd { .. }
                ),
                "cut at {len}: {error:?}"
            );
        }
    }
}

// --- counts and lengths -----------------------------------------------------------------------

#[test]
fn huge_counts() {
    let mut file = valid(3);
    file.tensor_count = Some(MAX_TENSORS + 1);
    assert_eq!(
        err(&file.build()),
        GgufError::TooManyTensors {
            count: MAX_TENSORS + 1
        }
    );
    file.tensor_count = Some(u64::MAX);
    assert!(matches!(
        err(&file.build()),
        GgufError::TooManyTensors { .. }
    ));

    let mut file = valid(3);
    file.key_count = Some(MAX_METADATA_KEYS + 1);
    assert!(matches!(
        err(&file.build()),
        GgufError::TooManyMetadataKeys { .. }
    ));
    file.key_count = Some(u64::MAX);
    assert!(matches!(
        err(&file.build()),
        GgufError::TooManyMetadataKeys { .. }
    ));
}

#[test]
fn counts_the_file_cannot_hold() {
    // Within the limits, but more than the remaining bytes could describe.
    let mut file = Gguf::new(3);
    file.key_count = Some(MAX_METADATA_KEYS);
    assert!(matches!(
        err(&file.build()),
        GgufError::CountPastEnd {
            what: "metadata keys",
            ..
        }
    ));
    let mut file = Gguf::new(3).kv_u32("a", 1);
    file.tensor_count = Some(MAX_TENSORS);
    assert!(matches!(
        err(&file.build()),
        GgufError::CountPastEnd {
            what: "tensors",
            ..
        }
    ));
}

#[test]
fn huge_string_lengths() {
    let mut value = (MAX_STRING_LEN + 1).to_le_bytes().to_vec();
    value.extend_from_slice(b"abc");
    let file = Gguf::new(3).raw_kv(b"general.name", value_type::STRING, &value);
    assert!(matches!(
        err(&file.build()),
        GgufError::StringTooLong { .. }
    ));
    // Under the limit but past the end of the file.
    let mut value = (MAX_STRING_LEN - 1).to_le_bytes().to_vec();
    value.extend_from_slice(b"abc");
    let file = Gguf::new(3).raw_kv(b"general.name", value_type::STRING, &value);
    assert!(matches!(err(&file.build()), GgufError::Truncated { .. }));
    // A key of u64::MAX bytes.
    let mut bytes = Gguf::new(3).preamble();
    bytes[16..24].copy_from_slice(&1u64.to_le_bytes());
    bytes.extend_from_slice(&u64::MAX.to_le_bytes());
    bytes.extend_from_slice(&[0; 64]);
    assert!(matches!(err(&bytes), GgufError::KeyTooLong { .. }));
    // An array element longer than its limit.
    let mut elements = (MAX_ARRAY_STRING_LEN + 1).to_le_bytes().to_vec();
    elements.extend_from_slice(b"x");
    let file = Gguf::new(3).kv_array("tokenizer.ggml.tokens", value_type::STRING, 1, &elements);
    assert!(matches!(
        err(&file.build()),
        GgufError::StringTooLong { .. }
    ));
}

#[test]
fn huge_array_lengths() {
    let file = Gguf::new(3).kv_array("a", value_type::U8, MAX_ARRAY_LEN + 1, b"");
    assert!(matches!(err(&file.build()), GgufError::ArrayTooLong { .. }));
    let file = Gguf::new(3).kv_array("a", value_type::STRING, u64::MAX, b"");
    assert!(matches!(err(&file.build()), GgufError::ArrayTooLong { .. }));
    // Within the limit, but the file cannot hold them: refused before allocating.
    let file = Gguf::new(3).kv_array("a", value_type::STRING, MAX_ARRAY_LEN, &[0; 64]);
    assert!(matches!(err(&file.build()), GgufError::Truncated { .. }));
    let file = Gguf::new(3).kv_array("a", value_type::U64, 9, &[0; 64]);
    assert!(matches!(err(&file.build()), GgufError::Truncated { .. }));
}

// --- metadata values --------------------------------------------------------------------------

#[test]
fn unknown_value_types() {
    let file = Gguf::new(3).raw_kv(b"a", 13, &[0; 8]);
    assert_eq!(
        err(&file.build()),
        GgufError::UnknownValueType {
            key: "a".to_string(),
            type_id: 13
        }
    );
    let file = Gguf::new(3).kv_array("a", 99, 0, b"");
    assert!(matches!(
        err(&file.build()),
        GgufError::UnknownValueType { type_id: 99, .. }
    ));
}

#[test]
fn nested_arrays_are_refused() {
    let mut inner = value_type::U8.to_le_bytes().to_vec();
    inner.extend_from_slice(&1u64.to_le_bytes());
    inner.push(5);
    let file = Gguf::new(3).kv_array("a", value_type::ARRAY, 1, &inner);
    assert!(matches!(err(&file.build()), GgufError::NestedArray { .. }));
}

#[test]
fn bools_must_be_zero_or_one() {
    let file = Gguf::new(3).raw_kv(b"a", value_type::BOOL, &[2]);
    assert!(matches!(
        err(&file.build()),
        GgufError::InvalidBool { byte: 2, .. }
    ));
    let file = Gguf::new(3).kv_array("a", value_type::BOOL, 3, &[0, 1, 7]);
    assert!(matches!(
        err(&file.build()),
        GgufError::InvalidBool { byte: 7, .. }
    ));
}

#[test]
fn strings_must_be_utf8() {
    let file = Gguf::new(3).raw_kv(b"a", value_type::STRING, &string(b"ok\xff"));
    assert!(matches!(err(&file.build()), GgufError::InvalidUtf8 { .. }));
    let file = Gguf::new(3).kv_array("a", value_type::STRING, 1, &string(b"\xc0"));
    assert!(matches!(err(&file.build()), GgufError::InvalidUtf8 { .. }));
}

#[test]
fn keys_are_nonempty_printable_ascii() {
    let file = Gguf::new(3).raw_kv(b"", value_type::U8, &[1]);
    assert_eq!(err(&file.build()), GgufError::EmptyKey { index: 0 });
    for key in [&b"has space"[..], b"tab\t", "é".as_bytes(), b"nul\0"] {
        let file = Gguf::new(3).raw_kv(key, value_type::U8, &[1]);
        assert!(
            matches!(err(&file.build()), GgufError::InvalidKey { .. }),
            "{key:?}"
        );
    }
}

#[test]
fn duplicate_keys_are_refused() {
    let file = Gguf::new(3).kv_u32("a.b", 1).kv_string("a.b", "two");
    assert_eq!(
        err(&file.build()),
        GgufError::DuplicateKey {
            key: "a.b".to_string()
        }
    );
}

#[test]
fn alignment_rules() {
    for bad in [0u32, 3, 48] {
        let file = Gguf::new(3)
            .kv_u32("general.alignment", bad)
            .tensor("a", &[1], ggml::F32, 4);
        assert_eq!(
            err(&file.build()),
            GgufError::AlignmentNotPowerOfTwo { alignment: bad }
        );
    }
    let file = Gguf::new(3).raw_kv(b"general.alignment", value_type::U64, &32u64.to_le_bytes());
    assert!(matches!(
        err(&file.build()),
        GgufError::AlignmentNotU32 { .. }
    ));
}

#[test]
fn accessors_refuse_other_types() {
    let header = parse_header(&valid(3).build()).unwrap();
    assert!(matches!(
        header.get_string("llama.embedding_length"),
        Err(GgufError::MetadataType { .. })
    ));
    assert!(header.get_u32("test.i32").is_err());
    assert!(header.get_u32("test.u64").is_err());
    assert_eq!(header.get_u64("test.u64").unwrap(), Some(1 << 40));
    assert!(header.get_f32("test.f64").is_err());
    assert!(header.get_bool("test.u8").is_err());
    assert!(header.get_array("general.architecture").is_err());
    assert!(header.get_string_array("tokenizer.ggml.scores").is_err());
    let message = header
        .get_u32("general.architecture")
        .unwrap_err()
        .to_string();
    assert!(message.contains("general.architecture"), "{message}");
}

// --- tensor infos -----------------------------------------------------------------------------

#[test]
fn unknown_and_iq_tensor_types_are_named() {
    let file = Gguf::new(3).tensor("w", &[256], ggml::IQ2_XXS, 66);
    let error = err(&file.build());
    assert!(matches!(
        &error,
        GgufError::RefusedTensorType {
            type_name: "IQ2_XXS",
            type_id: 16,
            ..
        }
    ));
    assert!(error.to_string().contains("IQ2_XXS"));
    let file = Gguf::new(3).tensor("w", &[32], 4, 18);
    assert!(matches!(
        err(&file.build()),
        GgufError::RefusedTensorType { type_id: 4, .. }
    ));
    let file = Gguf::new(3).tensor("w", &[32], 1000, 18);
    assert_eq!(
        err(&file.build()),
        GgufError::UnknownTensorType {
            tensor: "w".to_string(),
            type_id: 1000
        }
    );
}

#[test]
fn dimensions() {
    let file = Gguf::new(3).tensor("w", &[1, 1, 1, 1, 1], ggml::F32, 4);
    assert!(matches!(
        err(&file.build()),
        GgufError::TooManyDimensions { n_dims: 5, .. }
    ));
    let file = Gguf::new(3).tensor("w", &[4, 0], ggml::F32, 0);
    assert!(matches!(
        err(&file.build()),
        GgufError::ZeroDimension { .. }
    ));
    let file = Gguf::new(3).tensor("w", &[1 << 32, 1 << 32], ggml::F32, 4);
    assert!(matches!(
        err(&file.build()),
        GgufError::ShapeOverflow { .. }
    ));
    let file = Gguf::new(3).tensor("w", &[1 << 62], ggml::F32, 4);
    assert!(matches!(
        err(&file.build()),
        GgufError::ShapeOverflow { .. }
    ));
    let file = Gguf::new(3).tensor("w", &[u64::MAX], ggml::Q4_0, 4);
    assert!(matches!(
        err(&file.build()),
        GgufError::ShapeOverflow { .. } | GgufError::NotBlockMultiple { .. }
    ));
    // A count of u32::MAX dimensions is refused before any is read.
    let mut bytes = Gguf::new(3).preamble();
    bytes[8..16].copy_from_slice(&1u64.to_le_bytes());
    bytes.extend_from_slice(&string(b"w"));
    bytes.extend_from_slice(&u32::MAX.to_le_bytes());
    bytes.extend_from_slice(&[0; 64]);
    assert!(matches!(err(&bytes), GgufError::TooManyDimensions { .. }));
}

#[test]
fn first_dimension_must_be_whole_blocks() {
    let file = Gguf::new(3).tensor("w", &[48, 2], ggml::Q4_0, 2 * 18);
    assert_eq!(
        err(&file.build()),
        GgufError::NotBlockMultiple {
            tensor: "w".to_string(),
            ggml_type: GgmlType::Q4_0,
            first_dim: 48,
            block_len: 32
        }
    );
    let file = Gguf::new(3).tensor("w", &[128], ggml::Q4_K, 144);
    assert!(matches!(
        err(&file.build()),
        GgufError::NotBlockMultiple { block_len: 256, .. }
    ));
}

#[test]
fn tensor_names() {
    let file = Gguf::new(3).tensor("", &[1], ggml::F32, 4);
    assert_eq!(err(&file.build()), GgufError::EmptyTensorName { index: 0 });
    for name in ["a\0b", "tab\there"] {
        let file = Gguf::new(3).tensor(name, &[1], ggml::F32, 4);
        assert!(matches!(
            err(&file.build()),
            GgufError::TensorNameControlCharacter { .. }
        ));
    }
    for name in ["/abs", "a/../b", "..\\x"] {
        let file = Gguf::new(3).tensor(name, &[1], ggml::F32, 4);
        assert!(matches!(
            err(&file.build()),
            GgufError::TensorNamePathTraversal { .. }
        ));
    }
    let long = "x".repeat(2000);
    let file = Gguf::new(3).tensor(&long, &[1], ggml::F32, 4);
    assert!(matches!(
        err(&file.build()),
        GgufError::StringTooLong { .. }
    ));
}

#[test]
fn duplicate_tensor_names_are_refused() {
    let file = Gguf::new(3)
        .tensor("w", &[1], ggml::F32, 4)
        .tensor("v", &[1], ggml::F32, 4)
        .tensor("w", &[1], ggml::F32, 4);
    assert_eq!(
        err(&file.build()),
        GgufError::DuplicateTensor {
            tensor: "w".to_string()
        }
    );
}

// --- layout -----------------------------------------------------------------------------------

#[test]
fn misaligned_tensor() {
    let file = Gguf::new(3)
        .tensor("a", &[1], ggml::F32, 4)
        .tensor_at("b", &[1], ggml::F32, 4, 4);
    assert_eq!(
        err(&file.build()),
        GgufError::MisalignedTensor {
            tensor: "b".to_string(),
            offset: 4,
            alignment: 32
        }
    );
}

#[test]
fn overlapping_tensors() {
    let file =
        Gguf::new(3)
            .tensor("a", &[16], ggml::F32, 64)
            .tensor_at("b", &[1], ggml::F32, 32, 4);
    assert!(matches!(
        err(&file.build()),
        GgufError::OverlappingTensors { .. }
    ));
    // Many tensors over the same bytes.
    let mut file = Gguf::new(3);
    for index in 0..100 {
        file = file.tensor_at(&format!("t{index}"), &[8], ggml::F32, 0, 32);
    }
    assert!(matches!(
        err(&file.build()),
        GgufError::OverlappingTensors { .. }
    ));
}

#[test]
fn gaps_and_trailing_bytes() {
    let file = Gguf::new(3)
        .tensor("a", &[1], ggml::F32, 4)
        .tensor_at("b", &[1], ggml::F32, 64, 4);
    assert_eq!(
        err(&file.build()),
        GgufError::GapBetweenTensors {
            tensor: "b".to_string(),
            gap_begin: 32,
            gap_end: 64
        }
    );
    let file = Gguf::new(3).tensor_at("a", &[1], ggml::F32, 32, 4);
    assert!(matches!(
        err(&file.build()),
        GgufError::GapBetweenTensors { gap_begin: 0, .. }
    ));
    let mut file = valid(3);
    file.trailing = vec![0; 32];
    assert!(matches!(err(&file.build()), GgufError::TrailingData { .. }));
    // Without tensors, anything past the header's padding is trailing too.
    let mut file = Gguf::new(3).kv_u32("a", 1);
    file.trailing = vec![b'x'; 64];
    assert!(matches!(err(&file.build()), GgufError::TrailingData { .. }));
}

#[test]
fn tensors_out_of_bounds() {
    let file = Gguf::new(3).tensor_at("a", &[1024], ggml::F32, 0, 16);
    assert!(matches!(
        err(&file.build()),
        GgufError::TensorPastEnd { .. }
    ));
    let mut file = Gguf::new(3).tensor_at("a", &[1], ggml::F32, u64::MAX - 31, 4);
    file.data_len = Some(32);
    assert!(matches!(
        err(&file.build()),
        GgufError::TensorPastEnd { .. } | GgufError::GapBetweenTensors { .. }
    ));
    // A huge alignment puts the data section past the end of the file.
    let file = Gguf::new(3)
        .kv_u32("general.alignment", 1 << 31)
        .tensor("a", &[1], ggml::F32, 4);
    assert!(matches!(
        err(&file.build()),
        GgufError::TensorPastEnd { .. }
    ));
}

#[test]
fn errors_name_what_is_wrong() {
    let mut elements = string(b"a");
    elements.extend_from_slice(&100u64.to_le_bytes());
    let file = Gguf::new(3).kv_array("tokenizer.ggml.tokens", value_type::STRING, 2, &elements);
    let message = err(&file.build()).to_string();
    assert!(
        message.contains("element 1 of array `tokenizer.ggml.tokens`"),
        "{message}"
    );
}

#[test]
fn scan_validates_gguf() {
    let (format, findings, invalid) = scan_bytes(&valid(3).build(), None);
    assert_eq!(format, FileFormat::Gguf);
    assert!(!invalid, "{findings:?}");
    let kinds: Vec<&str> = findings
        .iter()
        .map(|finding| finding.kind.as_str())
        .collect();
    assert_eq!(kinds, ["gguf", "chat_template"]);
    assert!(
        findings[0].detail.contains("Q4_1 x1"),
        "{}",
        findings[0].detail
    );
    assert!(
        findings
            .iter()
            .all(|finding| finding.severity == Severity::Info)
    );

    let mut hostile = valid(3);
    hostile.tensor_count = Some(u64::MAX);
    let (format, findings, invalid) = scan_bytes(&hostile.build(), None);
    assert_eq!(format, FileFormat::Gguf);
    assert!(invalid);
    assert_eq!(findings[0].kind, "invalid_gguf");
}

// --- properties -------------------------------------------------------------------------------

/// Parses `bytes`; when accepted, every tensor lies inside the input and its size matches its
/// type and dimensions.
fn check(bytes: &[u8]) {
    if let Ok(header) = parse_header(bytes) {
        for tensor in header.tensors() {
            assert!(tensor.range.end <= bytes.len());
            let blocks = tensor.dims.first().copied().unwrap_or(1) / tensor.ggml_type.block_len();
            let rows: u64 = tensor.dims.iter().skip(1).product();
            assert_eq!(
                tensor.byte_len() as u64,
                blocks * rows * tensor.ggml_type.block_bytes()
            );
        }
        let _ = gguf::MAX_DIMS;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
        check(&bytes);
    }

    #[test]
    fn random_bytes_after_the_magic_never_panic(
        version in 1u32..4,
        tail in proptest::collection::vec(any::<u8>(), 0..1024),
    ) {
        let mut bytes = b"GGUF".to_vec();
        bytes.extend_from_slice(&version.to_le_bytes());
        bytes.extend_from_slice(&tail);
        check(&bytes);
    }

    #[test]
    fn mutated_valid_files_never_panic(
        mutations in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        do_cut in any::<bool>(),
    ) {
        let mut bytes = valid(3).build();
        for (index, byte) in mutations {
            let at = index.index(bytes.len());
            bytes[at] = byte;
        }
        if do_cut {
            bytes.truncate(cut.index(bytes.len()));
        }
        check(&bytes);
    }

    #[test]
    fn mutated_header_words_never_panic(
        word_index in any::<prop::sample::Index>(),
        value in prop_oneof![
            Just(0u64), Just(1), Just(u64::MAX), Just(u64::MAX / 2), Just(1 << 32),
            Just(MAX_TENSORS), any::<u64>()
        ],
    ) {
        // Overwrite one 8-byte word of the header (counts, lengths, dims, offsets live there).
        let mut bytes = valid(3).build();
        let header_len = parse_header(&bytes).unwrap().data_start() as usize;
        let at = word_index.index(header_len - 8);
        bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
        check(&bytes);
    }
}
