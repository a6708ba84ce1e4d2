//! Golden cases made by `scripts/make_tokenize_fixtures.py` with Python Transformers: each case
//! is a `tokenizer(texts, **kwargs)` call and every row of its `BatchEncoding`.
#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    dead_code,
    unused_macros
)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use safeformers_tokenize::{EncodeOptions, Encodings, Padding, Tokenizer, TruncationStrategy};
use serde_json::Value;

pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// The all-MiniLM-L6-v2 folder: `SAFEFORMERS_MINILM_DIR`, set by `scripts/test.sh`.
pub fn minilm_dir() -> PathBuf {
    let dir = std::env::var_os("SAFEFORMERS_MINILM_DIR").unwrap_or_else(|| {
        panic!(
            "SAFEFORMERS_MINILM_DIR is not set: run the tests with scripts/test.sh, which fetches \
             all-MiniLM-L6-v2 (scripts/fetch-minilm.sh) and sets it"
        )
    });
    let dir = PathBuf::from(dir);
    assert!(
        dir.join("tokenizer.json").is_file(),
        "{}/tokenizer.json is missing: run scripts/fetch-minilm.sh (or scripts/test.sh)",
        dir.display()
    );
    dir
}

pub fn load_expected(name: &str) -> Value {
    let path = data_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// Transformers' keyword arguments as our options.
pub fn options_from_kwargs(kwargs: &Value) -> EncodeOptions {
    let mut options = EncodeOptions::default();
    let max_length = kwargs
        .get("max_length")
        .and_then(Value::as_u64)
        .map(|n| n as usize);
    match kwargs.get("padding") {
        None | Some(Value::Bool(false)) => {}
        Some(Value::Bool(true)) => options.padding = Padding::Longest,
        Some(Value::String(s)) if s == "longest" => options.padding = Padding::Longest,
        Some(Value::String(s)) if s == "max_length" => options.padding = Padding::MaxLength,
        Some(other) => panic!("padding={other} not mapped"),
    }
    match kwargs.get("truncation") {
        None | Some(Value::Bool(false)) => {}
        Some(Value::Bool(true)) => options.truncation = max_length,
        Some(Value::String(s)) => {
            options.truncation = max_length;
            options.truncation_strategy = match s.as_str() {
                "longest_first" => TruncationStrategy::LongestFirst,
                "only_first" => TruncationStrategy::OnlyFirst,
                "only_second" => TruncationStrategy::OnlySecond,
                other => panic!("truncation={other} not mapped"),
            };
        }
        Some(other) => panic!("truncation={other} not mapped"),
    }
    if let Some(b) = kwargs.get("add_special_tokens").and_then(Value::as_bool) {
        options.add_special_tokens = b;
    }
    if let Some(n) = kwargs.get("stride").and_then(Value::as_u64) {
        options.stride = n as usize;
    }
    if let Some(b) = kwargs
        .get("return_overflowing_tokens")
        .and_then(Value::as_bool)
    {
        options.return_overflowing_tokens = b;
    }
    if let Some(n) = kwargs.get("pad_to_multiple_of").and_then(Value::as_u64) {
        options.pad_to_multiple_of = Some(n as usize);
    }
    options
}

fn u32s(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn opt_u64s(v: &Value) -> Vec<Option<u64>> {
    v.as_array().unwrap().iter().map(Value::as_u64).collect()
}

fn offsets(v: &Value) -> Vec<(usize, usize)> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p[0].as_u64().unwrap() as usize,
                p[1].as_u64().unwrap() as usize,
            )
        })
        .collect()
}

pub fn run_case(tokenizer: &Tokenizer, case: &Value) -> Encodings {
    let name = case["name"].as_str().unwrap();
    let options = options_from_kwargs(&case["kwargs"]);
    let inputs = case["inputs"].as_array().unwrap();
    if case["pairs"].as_bool().unwrap() {
        let pairs: Vec<(&str, &str)> = inputs
            .iter()
            .map(|p| (p[0].as_str().unwrap(), p[1].as_str().unwrap()))
            .collect();
        tokenizer.encode_pair_batch(&pairs, &options)
    } else {
        let texts: Vec<&str> = inputs.iter().map(|t| t.as_str().unwrap()).collect();
        tokenizer.encode_batch(&texts, &options)
    }
    .unwrap_or_else(|e| panic!("case {name}: {e}"))
}

/// Every field of every row equals what Transformers gave.
pub fn check_case(tokenizer: &Tokenizer, case: &Value) {
    let name = case["name"].as_str().unwrap();
    let got = run_case(tokenizer, case);
    let rows = case["rows"].as_array().unwrap();
    assert_eq!(got.len(), rows.len(), "case {name}: number of rows");
    for (i, (row, want)) in got.iter().zip(rows).enumerate() {
        let at = format!("case {name}, row {i}");
        assert_eq!(row.input_ids, u32s(&want["input_ids"]), "{at}: input_ids");
        assert_eq!(
            row.attention_mask,
            u32s(&want["attention_mask"]),
            "{at}: attention_mask"
        );
        assert_eq!(
            row.token_type_ids,
            u32s(&want["token_type_ids"]),
            "{at}: token_type_ids"
        );
        assert_eq!(
            row.special_tokens_mask,
            u32s(&want["special_tokens_mask"]),
            "{at}: special_tokens_mask"
        );
        assert_eq!(
            row.offsets,
            offsets(&want["offset_mapping"]),
            "{at}: offsets"
        );
        let word_ids: Vec<Option<u64>> = row.word_ids.iter().map(|w| w.map(u64::from)).collect();
        assert_eq!(word_ids, opt_u64s(&want["word_ids"]), "{at}: word_ids");
        let sequence_ids: Vec<Option<u64>> = row
            .sequence_ids
            .iter()
            .map(|s| s.map(|s| s as u64))
            .collect();
        assert_eq!(
            sequence_ids,
            opt_u64s(&want["sequence_ids"]),
            "{at}: sequence_ids"
        );
        assert_eq!(row.tokens.len(), row.input_ids.len(), "{at}: tokens");
    }
    match case.get("overflow_to_sample_mapping") {
        Some(mapping) => {
            let want: Vec<usize> = u32s(mapping).into_iter().map(|n| n as usize).collect();
            assert_eq!(
                got.overflow_to_sample_mapping(),
                want,
                "case {name}: overflow_to_sample_mapping"
            );
        }
        None => assert_eq!(
            got.overflow_to_sample_mapping(),
            (0..got.len()).collect::<Vec<_>>()
        ),
    }
}

/// Runs one named case of an expected-values file.
pub fn check_named(tokenizer: &Tokenizer, expected: &Value, name: &str) {
    let case = expected["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| {
            panic!("no case {name}: regenerate with scripts/make_tokenize_fixtures.py")
        });
    check_case(tokenizer, case);
}

pub fn check_decodes(tokenizer: &Tokenizer, expected: &Value) {
    for d in expected["decode"].as_array().unwrap() {
        let ids = u32s(&d["ids"]);
        let skip = d["skip_special_tokens"].as_bool().unwrap();
        let text = tokenizer.decode(&ids, skip).unwrap();
        assert_eq!(
            text,
            d["text"].as_str().unwrap(),
            "decode {ids:?} skip={skip}"
        );
    }
}

pub fn open(dir: &Path) -> Tokenizer {
    Tokenizer::from_dir(dir, &Default::default()).unwrap_or_else(|e| panic!("{e}"))
}

/// all-MiniLM-L6-v2's tokenizer, loaded once per test binary.
pub fn minilm() -> &'static Tokenizer {
    static TOKENIZER: OnceLock<Tokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| open(&minilm_dir()))
}

/// The byte-level BPE tokenizer of `tests/data/bytelevel`, loaded once per test binary.
pub fn bytelevel() -> &'static Tokenizer {
    static TOKENIZER: OnceLock<Tokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| open(&data_dir().join("bytelevel")))
}

/// A fresh, empty folder `name` for the test suite `suite`, under the target dir's tmp (no
/// tempfile dependency).
pub fn scratch_dir(suite: &str, name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(suite)
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Defines `expected()`, the golden file `$file` of `tests/data` read once, one `#[test]` per
/// `name => "case"` that checks that case on `$tokenizer()`, and `decodes_like_transformers`,
/// which checks the file's decode cases.
macro_rules! golden_cases {
    ($tokenizer:path, $file:literal, { $($test:ident => $case:literal,)* }) => {
        fn expected() -> &'static serde_json::Value {
            static EXPECTED: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
            EXPECTED.get_or_init(|| common::load_expected($file))
        }

        $(
            #[test]
            fn $test() {
                common::check_named($tokenizer(), expected(), $case);
            }
        )*

        #[test]
        fn decodes_like_transformers() {
            common::check_decodes($tokenizer(), expected());
        }
    };
}
