//! Fuzzes the `tokenizer.json` pre-validation, and what it lets through: any bytes must be
//! refused with a typed error or give a tokenizer that loads, encodes a short text within the
//! bounds and decodes, without a panic escaping, an abort or unbounded memory.
#![no_main]

use std::path::Path;

use safeformers_tokenize::{
    EncodeOptions, TokenBudget, Tokenizer, TokenizerOptions, check_tokenizer_json,
};

const TEXTS: [&str; 3] = [
    "Hello world! How are you?",
    "ﷺ Ǆ İ 日本語 ａｂｃ \u{0}\t\r\n  end",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
];

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // The check alone, on anything that is JSON.
    if let Ok(json) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = check_tokenizer_json(&json);
    }
    let path = Path::new("fuzz/tokenizer.json");
    let Ok(tokenizer) = Tokenizer::from_tokenizer_json(path, data, &TokenizerOptions::default())
    else {
        return;
    };
    let truncated = EncodeOptions {
        truncation: Some(16),
        ..EncodeOptions::default()
    };
    let budget = EncodeOptions {
        token_budget: Some(TokenBudget::KeepLast(8)),
        ..EncodeOptions::default()
    };
    for text in TEXTS {
        for options in [&truncated, &budget] {
            if let Ok(encodings) = tokenizer.encode(text, options) {
                for row in &encodings {
                    let _ = tokenizer.decode(&row.input_ids, false);
                }
            }
        }
    }
    let _ = tokenizer.encode_pair_batch(&[(TEXTS[0], TEXTS[1])], &truncated);
});
