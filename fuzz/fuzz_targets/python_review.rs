#![no_main]
//! Feeds arbitrary bytes to the Python review (`safeformers scan` on `.py` files): the token
//! nesting check, ruff's parser and the walk. None may panic or overflow the stack, whatever
//! the bytes.

use safeformers_weights::python::{ReviewLimits, review_python};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let review = review_python(data, &ReviewLimits::default());
    assert_eq!(review.sha256.len(), 64);
    assert!(review.findings.len() <= ReviewLimits::default().max_findings + 1);
});
