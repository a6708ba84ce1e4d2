//! Fuzzes the strict GGUF reader: any input must either be rejected with an error or yield
//! tensors whose byte ranges lie inside the input, with sizes that match their types and
//! dimensions, and metadata whose accessors answer without panicking.
#![no_main]

use safeformers_weights::gguf::parse_header;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(header) = parse_header(data) {
        let mut checksum = 0u8;
        for tensor in header.tensors() {
            let bytes = data
                .get(tensor.range.clone())
                .unwrap_or_else(|| panic!("range {:?} outside the input", tensor.range));
            // Touch every byte so that a bad range would be caught by the sanitizer too.
            checksum = bytes.iter().fold(checksum, |acc, &byte| acc ^ byte);
            let first = tensor.dims.first().copied().unwrap_or(1);
            let rows: u64 = tensor.dims.iter().skip(1).product();
            let expected =
                first / tensor.ggml_type.block_len() * rows * tensor.ggml_type.block_bytes();
            assert_eq!(bytes.len() as u64, expected, "{}", tensor.name);
            assert!(tensor.range.start as u64 >= header.data_start());
            assert_eq!(
                header.tensor(&tensor.name).map(|t| &t.name),
                Some(&tensor.name)
            );
        }
        for (key, value) in header.metadata() {
            std::hint::black_box(value.summary(80));
            let _ = header.get_string(key);
            let _ = header.get_u32(key);
            let _ = header.get_string_array(key);
        }
        std::hint::black_box(checksum);
    }
});
