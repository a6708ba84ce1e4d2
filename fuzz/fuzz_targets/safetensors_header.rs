//! Fuzzes the strict safetensors header validator: any input must either be rejected with an
//! error or yield tensors whose byte ranges all lie inside the input.
#![no_main]

use safeformers_weights::safetensors::parse_header;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(header) = parse_header(data) {
        let mut checksum = 0u8;
        for tensor in header.tensors() {
            let bytes = data
                .get(tensor.range.clone())
                .unwrap_or_else(|| panic!("range {:?} outside the input", tensor.range));
            // Touch every byte so that a bad range would be caught by the sanitizer too.
            checksum = bytes.iter().fold(checksum, |acc, &byte| acc ^ byte);
            let elements = tensor
                .shape
                .iter()
                .try_fold(1usize, |acc, &dim| acc.checked_mul(dim));
            assert!(elements.is_some() || tensor.shape.contains(&0));
        }
        std::hint::black_box(checksum);
    }
});
