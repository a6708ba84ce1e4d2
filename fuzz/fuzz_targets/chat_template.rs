//! Fuzzes chat template rendering: any template source must render or fail with a typed error,
//! never panic or hang, and never produce more than the output limit.
#![no_main]

use safeformers_tokenize::{
    ChatTemplateLimits, ChatTemplateOptions, SpecialTokens, render_chat_template,
};

const MAX_OUTPUT: usize = 64 * 1024;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let source = String::from_utf8_lossy(data);
    let messages = [
        serde_json::json!({"role": "system", "content": "Be brief."}),
        serde_json::json!({"role": "user", "content": "Hi!", "tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}}]}),
    ];
    let options = ChatTemplateOptions {
        add_generation_prompt: data.first().is_some_and(|b| b & 1 == 1),
        tools: Some(vec![serde_json::json!({"type": "function", "function": {"name": "f"}})]),
        limits: ChatTemplateLimits {
            fuel: 100_000,
            max_output_bytes: MAX_OUTPUT,
            ..Default::default()
        },
        ..Default::default()
    };
    let special = SpecialTokens {
        bos: Some("<s>".into()),
        eos: Some("</s>".into()),
        ..Default::default()
    };
    if let Ok(text) = render_chat_template("fuzz", &source, &messages, &options, &special) {
        assert!(text.len() <= MAX_OUTPUT);
    }
});
