#![no_main]
//! The strict zip reader, the lenient inspector and the PyTorch checkpoint loader on arbitrary
//! bytes: none may panic, and an archive `parse` accepts must be one `inspect` finds clean.

use safeformers_weights::zip::{self, InspectLimits};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let limits = InspectLimits {
        max_member_bytes: 1 << 20,
        max_total_inflated: 1 << 22,
        ..InspectLimits::default()
    };
    let parsed = zip::parse(data);
    let inspection = zip::inspect(data, limits);
    if let Ok(archive) = &parsed {
        assert!(inspection.is_clean(), "{:?}", inspection.problems);
        assert_eq!(archive.len(), inspection.members.len());
    }
    let _ = safeformers_weights::torch::load_from_bytes(data);
});
