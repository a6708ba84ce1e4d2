//! Real-world chat templates rendered as Transformers renders them: the goldens in
//! `tests/fixtures/chat-templates/goldens.json`, made by `scripts/make_chat_template_fixtures.py`
//! with `apply_chat_template(tokenize=False)`. Each case must match exactly, or raise the same
//! error message as the template raised in Python.

use std::path::PathBuf;

use safeformers_tokenize::{
    ChatTemplateLimits, ChatTemplateOptions, ChatTemplateProblem, DEFAULT_CHAT_TEMPLATE_FUEL,
    SpecialTokens, TokenizeError, render_chat_template,
};
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/chat-templates")
}

fn special_tokens(map: &Value) -> SpecialTokens {
    let get = |key: &str| map.get(key).and_then(Value::as_str).map(str::to_owned);
    SpecialTokens {
        bos: get("bos_token"),
        eos: get("eos_token"),
        unk: get("unk_token"),
        sep: get("sep_token"),
        pad: get("pad_token"),
        cls: get("cls_token"),
        mask: get("mask_token"),
        additional: Vec::new(),
    }
}

#[test]
fn every_golden_matches_transformers() {
    let text = std::fs::read_to_string(fixtures().join("goldens.json")).unwrap();
    let goldens: Value = serde_json::from_str(&text).unwrap();
    let templates = &goldens["templates"];
    let cases = goldens["cases"].as_array().unwrap();
    assert!(cases.len() > 100, "{} cases", cases.len());
    let mut failures = Vec::new();
    let mut seen_templates = std::collections::BTreeSet::new();
    for case in cases {
        let name = case["template"].as_str().unwrap();
        seen_templates.insert(name);
        let template = &templates[name];
        // A tenth of the default fuel: real templates are far from the limit.
        let options = ChatTemplateOptions {
            add_generation_prompt: case["add_generation_prompt"].as_bool().unwrap(),
            tools: case["tools"].as_array().cloned(),
            extra: case["kwargs"].as_object().cloned().unwrap_or_default(),
            continue_final_message: case["continue_final_message"].as_bool().unwrap(),
            limits: ChatTemplateLimits {
                fuel: DEFAULT_CHAT_TEMPLATE_FUEL / 10,
                ..Default::default()
            },
            ..Default::default()
        };
        let messages = case["messages"].as_array().unwrap();
        let got = render_chat_template(
            name,
            template["source"].as_str().unwrap(),
            messages,
            &options,
            &special_tokens(&template["special_tokens"]),
        );
        let label = format!(
            "{name} / {} / add_generation_prompt={}",
            case["conversation"], case["add_generation_prompt"]
        );
        match (
            case.get("expected").and_then(Value::as_str),
            &case.get("error"),
            got,
        ) {
            (Some(expected), _, Ok(got)) if got == expected => {}
            (Some(expected), _, got) => {
                failures.push(format!(
                    "{label}:\n expected {expected:?}\n got      {got:?}"
                ));
            }
            (None, Some(error), got) => {
                let message = error["message"].as_str().unwrap();
                match (error["type"].as_str().unwrap(), got) {
                    // The template's own raise_exception: the same message, passed through.
                    (
                        "TemplateError",
                        Err(TokenizeError::ChatTemplate {
                            problem: ChatTemplateProblem::Raised(m),
                            ..
                        }),
                    ) if m == message => {}
                    // Jinja's UndefinedError (an attribute of a missing key): a render error.
                    (
                        "UndefinedError",
                        Err(TokenizeError::ChatTemplate {
                            problem: ChatTemplateProblem::Render(_),
                            ..
                        }),
                    ) => {}
                    (kind, got) => failures.push(format!(
                        "{label}: expected {kind}({message:?}), got {got:?}"
                    )),
                }
            }
            (None, _, got) => failures.push(format!("{label}: malformed case, got {got:?}")),
        }
    }
    assert_eq!(
        seen_templates.len(),
        templates.as_object().unwrap().len(),
        "every template has cases"
    );
    assert!(
        failures.is_empty(),
        "{} of {} goldens differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
