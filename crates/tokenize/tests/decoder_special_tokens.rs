//! BOS/EOS for decoder tokenizers as Transformers 5 adds them: when `tokenizer.json` exists,
//! `add_bos_token`/`add_eos_token` in tokenizer_config.json are dropped (Transformers 5's
//! `from_pretrained` pops them) and the `post_processor` of tokenizer.json alone decides; a
//! tokenizer.json without one adds nothing. Goldens from `scripts/make_chat_template_fixtures.py`
//! (`AutoTokenizer.from_pretrained` on folders whose config carries each flag setting).
#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::path::PathBuf;

use safeformers_tokenize::{ChatTemplateOptions, EncodeOptions, Tokenizer, TokenizerOptions};
use serde_json::Value;

fn check(family: &str) -> usize {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/chat-templates")
        .join(family);
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("expected.json")).unwrap())
            .unwrap();
    let mut checked = 0;
    for setting in expected["settings"].as_array().unwrap() {
        let folder = setting["folder"].as_str().unwrap();
        let dir = root.join(folder);
        let tokenizer = Tokenizer::from_dir(&dir, &TokenizerOptions::default()).unwrap();
        let config: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("tokenizer_config.json")).unwrap(),
        )
        .unwrap();
        for (flag, value) in setting["flags"].as_object().unwrap() {
            assert_eq!(
                &config[flag], value,
                "{family}/{folder}: the fixture carries {flag}"
            );
        }
        let no_special = EncodeOptions {
            add_special_tokens: false,
            ..Default::default()
        };
        for case in setting["cases"].as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            let ids = |v: &Value| -> Vec<u32> {
                v.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_u64().unwrap() as u32)
                    .collect()
            };
            let got = tokenizer.encode(text, &EncodeOptions::default()).unwrap();
            assert_eq!(
                got.rows[0].input_ids,
                ids(&case["ids"]),
                "{family}/{folder}: {text:?}"
            );
            let got = tokenizer.encode(text, &no_special).unwrap();
            assert_eq!(
                got.rows[0].input_ids,
                ids(&case["ids_no_special"]),
                "{family}/{folder}: {text:?} without special tokens"
            );
            let got = tokenizer
                .encode_pair_batch(&[(text, "Second part.")], &EncodeOptions::default())
                .unwrap();
            assert_eq!(
                got.rows[0].input_ids,
                ids(&case["pair_ids"]),
                "{family}/{folder}: pair {text:?}"
            );
            checked += 1;
        }
        // The chat template comes from chat_template.jinja; its output is tokenized without
        // adding special tokens, as apply_chat_template(tokenize=True) does.
        let chat = &setting["chat"];
        let options = ChatTemplateOptions {
            add_generation_prompt: true,
            ..Default::default()
        };
        let text = tokenizer
            .apply_chat_template(chat["messages"].as_array().unwrap(), &options)
            .unwrap();
        assert_eq!(
            text,
            chat["text"].as_str().unwrap(),
            "{family}/{folder}: chat text"
        );
        let ids: Vec<u32> = tokenizer.encode(&text, &no_special).unwrap().rows[0]
            .input_ids
            .clone();
        let expected_ids: Vec<u32> = chat["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(ids, expected_ids, "{family}/{folder}: chat ids");
    }
    checked
}

#[test]
fn llama_style_bos_follows_tokenizer_json_whatever_the_config_flags() {
    assert_eq!(check("llama-style"), 5 * 4);
}

#[test]
fn gpt2_style_without_post_processor_adds_nothing() {
    assert_eq!(check("gpt2-style"), 2 * 4);
}
