#![no_main]
//! Feeds arbitrary bytes to the restricted unpickler (in every persistent-id mode) and to the
//! scanner. Neither may panic, overflow the stack, or exceed its limits.

use safeformers_weights::pickle::{
    Limits, PersistentIds, ScanOptions, UnpickleOptions, looks_like_pickle, scan_pickles,
    scanner::MAX_FINDINGS, unpickle,
};

fn limits() -> Limits {
    // Smaller than the defaults so that bombs are found fast, same shape.
    Limits {
        max_ops: 1_000_000,
        max_memo: 100_000,
        max_stack: 100_000,
        max_mark_depth: 1_000,
        max_values: 200_000,
        max_depth: 100,
        max_string_bytes: 16 << 20,
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    for persistent_ids in [
        PersistentIds::Forbidden,
        PersistentIds::ZipStorage,
        PersistentIds::LegacyStorage,
    ] {
        let options = UnpickleOptions {
            persistent_ids,
            limits: limits(),
        };
        match unpickle(data, &options) {
            Ok(out) => assert!(out.consumed <= data.len()),
            Err(err) => {
                assert!(err.offset() <= data.len());
                let _ = err.to_string();
            }
        }
    }
    let scan = scan_pickles(
        data,
        &ScanOptions {
            max_streams: None,
            limits: limits(),
            nested_depth: 3,
        },
    );
    assert!(scan.end <= data.len());
    assert!(scan.findings.len() <= MAX_FINDINGS + 1);
    // Tiny caps: most inputs hit one, so the linear pass that keeps naming imports after a cap
    // is fuzzed as much as the simulation.
    let scan = scan_pickles(
        data,
        &ScanOptions {
            max_streams: None,
            limits: Limits {
                max_ops: 64,
                max_memo: 8,
                max_stack: 16,
                max_mark_depth: 4,
                max_values: 64,
                max_depth: 4,
                max_string_bytes: 256,
            },
            nested_depth: 2,
        },
    );
    assert!(scan.end <= data.len());
    assert!(scan.findings.len() <= MAX_FINDINGS + 1);
    let _ = looks_like_pickle(data);
});
