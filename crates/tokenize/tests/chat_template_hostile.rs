//! Hostile chat templates: each is stopped by a limit with a typed error, within one second.
//! Also the Jinja features and Python methods real templates use, and template selection.
#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use safeformers_tokenize::{
    ChatTemplateLimits, ChatTemplateOptions, ChatTemplateProblem, DEFAULT_CHAT_TEMPLATE_FUEL,
    SpecialTokens, TokenizeError, Tokenizer, TokenizerOptions, render_chat_template,
};
use serde_json::{Value, json};

fn messages() -> Vec<Value> {
    vec![
        json!({"role": "system", "content": "  Be brief.  "}),
        json!({"role": "user", "content": "Hello, World"}),
    ]
}

fn render(template: &str) -> Result<String, TokenizeError> {
    render_with(template, &ChatTemplateOptions::default())
}

fn render_with(template: &str, options: &ChatTemplateOptions) -> Result<String, TokenizeError> {
    let special = SpecialTokens {
        bos: Some("<s>".into()),
        eos: Some("</s>".into()),
        ..Default::default()
    };
    render_chat_template("test", template, &messages(), options, &special)
}

/// Renders a hostile template, checks the time (the budget is met with margin in a debug build)
/// and returns the problem.
fn hostile(template: &str) -> ChatTemplateProblem {
    let start = Instant::now();
    let result = render(template);
    let elapsed = start.elapsed();
    eprintln!("{elapsed:?} for {template}");
    assert!(
        elapsed < Duration::from_secs(1),
        "{template}: took {elapsed:?}"
    );
    match result {
        Err(TokenizeError::ChatTemplate {
            template: name,
            problem,
        }) => {
            assert_eq!(name, "test");
            problem
        }
        other => panic!("{template}: expected a chat template error, got {other:?}"),
    }
}

#[test]
fn endless_and_huge_loops_run_out_of_fuel() {
    for template in [
        "{% for i in range(10**9) %}x{% endfor %}",
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "{% for a in range(1000) %}{% for b in range(1000) %}{% for c in range(1000) %}{{ c }}{% endfor %}{% endfor %}{% endfor %}",
        "{% for m in messages * 100000 %}{% for n in messages * 100000 %}{% endfor %}{% endfor %}",
    ] {
        let problem = hostile(template);
        assert!(
            matches!(
                problem,
                ChatTemplateProblem::OutOfFuel { .. } | ChatTemplateProblem::Render(_)
            ),
            "{template}: {problem:?}"
        );
    }
    // The nested loop is the one that must be stopped by fuel, not by a range cap.
    assert!(matches!(
        hostile("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"),
        ChatTemplateProblem::OutOfFuel {
            fuel: DEFAULT_CHAT_TEMPLATE_FUEL
        }
    ));
}

#[test]
fn string_doubling_runs_out_of_fuel() {
    // No output until the end: only fuel (charged per byte created) stops it.
    let doubling = "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}";
    let problem = hostile(doubling);
    assert!(
        matches!(problem, ChatTemplateProblem::OutOfFuel { .. }),
        "{problem:?}"
    );
}

#[test]
fn exponential_macro_recursion_runs_out_of_fuel() {
    // A macro calling itself ten times per level, eight levels deep: 10^8 calls.
    let macros = "{% macro f(n) %}{% if n > 0 %}{% for i in range(10) %}{{ f(n - 1) }}{% endfor %}{% else %}x{% endif %}{% endmacro %}{{ f(8) }}";
    let problem = hostile(macros);
    assert!(
        matches!(problem, ChatTemplateProblem::OutOfFuel { .. }),
        "{problem:?}"
    );
}

#[test]
fn huge_repeated_strings_are_refused() {
    for template in [
        "{{ 'a' * 10**9 }}",
        "{% set s = 'a' * 10**8 %}{{ s | length }}",
    ] {
        let problem = hostile(template);
        assert!(
            matches!(
                problem,
                ChatTemplateProblem::OutOfFuel { .. } | ChatTemplateProblem::Render(_)
            ),
            "{template}: {problem:?}"
        );
    }
}

#[test]
fn output_is_capped() {
    // Cheap to produce (few instructions, one large output write per iteration).
    let options = ChatTemplateOptions {
        limits: ChatTemplateLimits {
            max_output_bytes: 1000,
            ..Default::default()
        },
        ..Default::default()
    };
    let err = render_with(
        "{% for i in range(100) %}{{ 'y' * 50 }}{% endfor %}",
        &options,
    );
    assert!(
        matches!(
            err,
            Err(TokenizeError::ChatTemplate {
                problem: ChatTemplateProblem::OutputTooLarge { limit: 1000 },
                ..
            })
        ),
        "{err:?}"
    );
    // Under the limit it renders.
    assert_eq!(
        render_with(
            "{% for i in range(10) %}{{ 'y' * 50 }}{% endfor %}",
            &options
        )
        .unwrap()
        .len(),
        500
    );
    // The default limit, 4 MiB: 5 MiB of output fails with the default fuel too.
    let problem = hostile("{% for i in range(5) %}{{ 'z' * 1048576 }}{% endfor %}");
    assert!(
        matches!(
            problem,
            ChatTemplateProblem::OutputTooLarge { .. } | ChatTemplateProblem::OutOfFuel { .. }
        ),
        "{problem:?}"
    );
}

#[test]
fn deep_recursion_is_stopped() {
    let problem = hostile("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}");
    assert!(
        matches!(problem, ChatTemplateProblem::TooDeep { limit: 100 }),
        "{problem:?}"
    );
    // Deeply nested data given to tojson or printed.
    let nested = "{% set ns = namespace(x=[]) %}{% for i in range(5000) %}{% set ns.x = [ns.x] %}{% endfor %}{{ ns.x | tojson }}";
    let problem = hostile(nested);
    assert!(
        matches!(problem, ChatTemplateProblem::Render(_)),
        "{problem:?}"
    );
}

#[test]
fn raise_exception_is_the_templates_own_error() {
    let template = "{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% endfor %}";
    match render(template) {
        Err(TokenizeError::ChatTemplate {
            problem: ChatTemplateProblem::Raised(message),
            ..
        }) => assert_eq!(message, "System role not supported"),
        other => panic!("{other:?}"),
    }
    // Through a macro too.
    let template = "{% macro check() %}{{ raise_exception('nope') }}{% endmacro %}{{ check() }}";
    assert!(matches!(
        render(template),
        Err(TokenizeError::ChatTemplate { problem: ChatTemplateProblem::Raised(m), .. }) if m == "nope"
    ));
}

#[test]
fn syntax_and_runtime_errors_are_typed() {
    let err = render("{% for m in messages %}").unwrap_err();
    assert!(
        matches!(
            &err,
            TokenizeError::ChatTemplate {
                problem: ChatTemplateProblem::Syntax(_),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("chat template \"test\""), "{err}");
    let err = render("{{ messages.nope.deeper }}").unwrap_err();
    assert!(
        matches!(
            &err,
            TokenizeError::ChatTemplate {
                problem: ChatTemplateProblem::Render(_),
                ..
            }
        ),
        "{err:?}"
    );
    let err = render_chat_template(
        "t",
        "x",
        &[],
        &ChatTemplateOptions::default(),
        &SpecialTokens::default(),
    )
    .unwrap_err();
    assert!(matches!(
        err,
        TokenizeError::ChatTemplate {
            problem: ChatTemplateProblem::InvalidInput(_),
            ..
        }
    ));
    let bad_tools = ChatTemplateOptions {
        tools: Some(vec![json!("get_weather")]),
        ..Default::default()
    };
    let err = render_with("{{ tools }}", &bad_tools).unwrap_err();
    assert!(
        err.to_string().contains("tool 0 is not a JSON object"),
        "{err}"
    );
}

#[test]
fn continue_final_message_is_checked() {
    let template = "{% for m in messages %}[{{ m.content }}]{% endfor %}";
    let both = ChatTemplateOptions {
        continue_final_message: true,
        add_generation_prompt: true,
        ..Default::default()
    };
    assert!(matches!(
        render_with(template, &both),
        Err(TokenizeError::ChatTemplate {
            problem: ChatTemplateProblem::InvalidInput(_),
            ..
        })
    ));
    let continued = ChatTemplateOptions {
        continue_final_message: true,
        ..Default::default()
    };
    assert_eq!(
        render_with(template, &continued).unwrap(),
        "[  Be brief.  ][Hello, World"
    );
    // A template that drops the content cannot be continued.
    assert!(matches!(
        render_with(
            "{% for m in messages %}{{ m.role }}{% endfor %}",
            &continued
        ),
        Err(TokenizeError::ChatTemplate {
            problem: ChatTemplateProblem::InvalidInput(_),
            ..
        })
    ));
}

#[test]
fn python_methods_and_jinja_features() {
    let cases = [
        ("{{ messages[0].content.strip() }}", "Be brief."),
        ("{{ messages[0]['content'] | trim }}", "Be brief."),
        (
            "{{ messages[1].content.split(', ') | join('|') }}",
            "Hello|World",
        ),
        ("{{ messages[1].content.startswith('Hell') }}", "True"),
        (
            "{{ messages[1].content.upper() }}{{ 'ab cd'.title() }}",
            "HELLO, WORLDAb Cd",
        ),
        (
            "{% for k, v in messages[1].items() %}{{ k }}={{ v }};{% endfor %}",
            "role=user;content=Hello, World;",
        ),
        ("{{ messages[1].get('missing', 'dflt') }}", "dflt"),
        (
            "{% for m in messages %}{% if loop.first %}{% continue %}{% endif %}{{ m.role }}{% if loop.last %}!{% endif %}{% endfor %}",
            "user!",
        ),
        (
            "{% for m in messages %}{{ m.role }}{% break %}{% endfor %}",
            "system",
        ),
        (
            "{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.n }}",
            "2",
        ),
        (
            "{{ bos_token }}{{ eos_token }}{{ pad_token is defined }}",
            "<s></s>False",
        ),
        (
            "{{ {'b': 1, 'a': [1.5, true, none, 'é\"<>']} | tojson }}",
            r#"{"b": 1, "a": [1.5, true, null, "é\"<>"]}"#,
        ),
        (
            "{{ {'b': 1, 'a': 2} | tojson(indent=2) }}",
            "{\n  \"b\": 1,\n  \"a\": 2\n}",
        ),
        (
            "{{ {'b': 1, 'a': 2} | tojson(separators=(',', ':'), sort_keys=true) }}",
            r#"{"a":2,"b":1}"#,
        ),
        ("{{ 'é' | tojson(ensure_ascii=true) }}", r#""\u00e9""#),
        ("{{ dict(a=1).a }}", "1"),
        ("{%- if true %}\n  a\n{% endif %}\nb", "  a\nb"),
        ("{% generation %}x{% endgeneration %}", "x"),
    ];
    for (template, expected) in cases {
        let got = render(template).unwrap_or_else(|e| panic!("{template}: {e}"));
        assert_eq!(got, expected, "{template}");
    }
    let date = render("{{ strftime_now('%d %b %Y') }}").unwrap();
    assert_eq!(date.len(), 11, "{date}");
}

#[test]
fn messages_lose_null_fields_and_reasoning_is_aliased() {
    let messages = [json!({"role": "assistant", "content": null, "reasoning": "hmm"})];
    let template = "{% for m in messages %}{{ m.content is defined }} {{ m.thinking }} {{ m.reasoning_content }} {{ m | tojson }}{% endfor %}";
    let got = render_chat_template(
        "t",
        template,
        &messages,
        &ChatTemplateOptions::default(),
        &SpecialTokens::default(),
    )
    .unwrap();
    assert_eq!(
        got,
        r#"False hmm hmm {"thinking": "hmm", "role": "assistant", "reasoning": "hmm", "reasoning_content": "hmm"}"#
    );
}

fn folder(name: &str) -> PathBuf {
    let dir = common::scratch_dir("chat-template", name);
    std::fs::copy(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/bytelevel/tokenizer.json"),
        dir.join("tokenizer.json"),
    )
    .unwrap();
    dir
}

#[test]
fn template_selection_follows_transformers() {
    let dir = folder("named");
    let config = json!({
        "eos_token": "</s>",
        "chat_template": [
            {"name": "default", "template": "D{{ eos_token }}"},
            {"name": "tool_use", "template": "T{{ tools | length }}"},
        ]
    });
    std::fs::write(dir.join("tokenizer_config.json"), config.to_string()).unwrap();
    let tokenizer = Tokenizer::from_dir(&dir, &TokenizerOptions::default()).unwrap();
    let msgs = messages();
    let plain = ChatTemplateOptions::default();
    assert_eq!(
        tokenizer.apply_chat_template(&msgs, &plain).unwrap(),
        "D</s>"
    );
    let tools = ChatTemplateOptions {
        tools: Some(vec![json!({"type": "function"})]),
        ..Default::default()
    };
    assert_eq!(tokenizer.apply_chat_template(&msgs, &tools).unwrap(), "T1");
    let by_name = ChatTemplateOptions {
        template_name: Some("default".into()),
        ..tools.clone()
    };
    assert_eq!(
        tokenizer.apply_chat_template(&msgs, &by_name).unwrap(),
        "D</s>"
    );
    let unknown = ChatTemplateOptions {
        template_name: Some("rag".into()),
        ..Default::default()
    };
    match tokenizer.apply_chat_template(&msgs, &unknown) {
        Err(TokenizeError::ChatTemplate {
            template,
            problem: ChatTemplateProblem::UnknownName { available },
        }) => {
            assert_eq!(template, "rag");
            assert_eq!(available, ["default", "tool_use"]);
        }
        other => panic!("{other:?}"),
    }

    // Transformers 5 layout: the files replace every template of the config.
    std::fs::write(dir.join("chat_template.jinja"), "J").unwrap();
    std::fs::create_dir_all(dir.join("additional_chat_templates")).unwrap();
    std::fs::write(dir.join("additional_chat_templates/rag.jinja"), "R").unwrap();
    let tokenizer = Tokenizer::from_dir(&dir, &TokenizerOptions::default()).unwrap();
    assert_eq!(tokenizer.apply_chat_template(&msgs, &plain).unwrap(), "J");
    assert_eq!(tokenizer.apply_chat_template(&msgs, &tools).unwrap(), "J");
    assert_eq!(tokenizer.apply_chat_template(&msgs, &unknown).unwrap(), "R");

    // No template at all.
    let dir = folder("none");
    let tokenizer = Tokenizer::from_dir(&dir, &TokenizerOptions::default()).unwrap();
    assert!(matches!(
        tokenizer.apply_chat_template(&msgs, &plain),
        Err(TokenizeError::ChatTemplate {
            problem: ChatTemplateProblem::Missing,
            ..
        })
    ));
}
