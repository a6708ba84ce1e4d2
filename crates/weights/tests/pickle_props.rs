//! Property tests: random bytes and mutated valid streams never make the unpickler or the
//! scanner panic, and stay within their limits.

#![allow(
    clippy::panic,
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing
)]

use proptest::prelude::*;
use safeformers_weights::pickle::scanner::MAX_FINDINGS;
use safeformers_weights::pickle::{
    Limits, PersistentIds, ScanOptions, UnpickleOptions, looks_like_pickle, scan_pickles, unpickle,
};

const SEEDS: [&[u8]; 5] = [
    include_bytes!("pickle_fixtures/state_dict_p2.pkl"),
    include_bytes!("pickle_fixtures/state_dict_p4.pkl"),
    include_bytes!("pickle_fixtures/state_dict_p5.pkl"),
    include_bytes!("pickle_fixtures/list_p0.pkl"),
    include_bytes!("pickle_fixtures/list_p1.pkl"),
];

fn small_limits() -> Limits {
    Limits {
        max_ops: 100_000,
        max_memo: 10_000,
        max_stack: 10_000,
        max_mark_depth: 100,
        max_values: 100_000,
        max_depth: 50,
        max_string_bytes: 1 << 20,
    }
}

fn exercise(bytes: &[u8]) {
    for persistent_ids in [
        PersistentIds::Forbidden,
        PersistentIds::ZipStorage,
        PersistentIds::LegacyStorage,
    ] {
        let options = UnpickleOptions {
            persistent_ids,
            limits: small_limits(),
        };
        match unpickle(bytes, &options) {
            Ok(out) => assert!(out.consumed <= bytes.len()),
            Err(err) => {
                assert!(err.offset() <= bytes.len());
                let _ = err.to_string();
            }
        }
    }
    let scan = scan_pickles(
        bytes,
        &ScanOptions {
            max_streams: None,
            limits: small_limits(),
            nested_depth: 2,
        },
    );
    assert!(scan.end <= bytes.len());
    assert!(scan.findings.len() <= MAX_FINDINGS + 1);
    let _ = looks_like_pickle(bytes);
}

/// Mutations: overwrite, insert, delete, truncate.
fn mutate(seed: &[u8], edits: &[(u16, u8, u8)]) -> Vec<u8> {
    let mut out = seed.to_vec();
    for &(pos, byte, how) in edits {
        if out.is_empty() {
            out.push(byte);
            continue;
        }
        let pos = usize::from(pos) % out.len();
        match how % 4 {
            0 => out[pos] = byte,
            1 => out.insert(pos, byte),
            2 => {
                out.remove(pos);
            }
            _ => out.truncate(pos),
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 800, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        exercise(&bytes);
    }

    #[test]
    fn opcode_soup_never_panics(
        ops in proptest::collection::vec(
            prop_oneof![
                Just(b'('), Just(b'.'), Just(b'0'), Just(b'1'), Just(b'2'), Just(b'N'),
                Just(b']'), Just(b'}'), Just(b')'), Just(b'a'), Just(b'e'), Just(b's'),
                Just(b'u'), Just(b't'), Just(b'l'), Just(b'd'), Just(b'R'), Just(b'b'),
                Just(b'Q'), Just(0x85u8), Just(0x86), Just(0x87), Just(0x93), Just(0x94),
                Just(0x88), Just(0x89), Just(b'o'), Just(0x81), Just(0x8f), Just(0x90),
            ],
            0..300,
        ),
        prefix in proptest::collection::vec(any::<u8>(), 0..4),
    ) {
        let mut bytes = vec![0x80, 4];
        bytes.extend_from_slice(&prefix);
        bytes.extend_from_slice(&ops);
        exercise(&bytes);
    }

    /// Caps so small that nearly every stream hits one never hide a `GLOBAL` import: each one
    /// the default limits name is named under tiny limits too (the linear pass after a cap),
    /// and the pass stays within the findings bound.
    #[test]
    fn caps_never_hide_a_global_import(
        chunks in proptest::collection::vec(
            prop_oneof![
                Just(&b"("[..]), Just(&b"N"[..]), Just(&b"0"[..]), Just(&b"]"[..]),
                Just(&b"a"[..]), Just(&b"t"[..]), Just(&b"R"[..]), Just(&b"q\x00"[..]),
                Just(&b"h\x00"[..]), Just(&b"\x85"[..]), Just(&b"\x94"[..]),
                Just(&b"\x8c\x02os"[..]), Just(&b"\x8c\x06system"[..]), Just(&b"\x93"[..]),
                Just(&b"cos\nsystem\n"[..]), Just(&b"cbuiltins\neval\n"[..]),
                Just(&b"ctorch\nFloatStorage\n"[..]), Just(&b"S'x'\n"[..]),
            ],
            0..200,
        ),
    ) {
        let mut bytes = vec![0x80, 4];
        bytes.extend(chunks.concat());
        bytes.push(b'.');
        let tiny = Limits {
            max_ops: 6,
            max_memo: 1,
            max_stack: 3,
            max_mark_depth: 1,
            max_values: 4,
            max_depth: 2,
            max_string_bytes: 4,
        };
        let options = |limits| ScanOptions { max_streams: None, limits, nested_depth: 0 };
        let globals = |limits| -> std::collections::BTreeSet<String> {
            scan_pickles(&bytes, &options(limits))
                .findings
                .into_iter()
                .filter(|f| f.kind == "import" && f.detail.contains("imported by GLOBAL"))
                .map(|f| f.detail)
                .collect()
        };
        let capped = scan_pickles(&bytes, &options(tiny));
        prop_assert!(capped.findings.len() <= MAX_FINDINGS + 1);
        let missing: Vec<String> =
            globals(Limits::default()).difference(&globals(tiny)).cloned().collect();
        prop_assert!(missing.is_empty(), "hidden by a cap: {:?}", missing);
    }

    #[test]
    fn mutated_torch_output_never_panics(
        seed in 0usize..SEEDS.len(),
        edits in proptest::collection::vec((any::<u16>(), any::<u8>(), any::<u8>()), 1..6),
    ) {
        exercise(&mutate(SEEDS[seed], &edits));
    }
}
