//! A library user rendering a hostile chat template is bounded in memory and time, as the CLI
//! user is: by default the template is rendered in a child process of the current executable
//! under OS limits.
//!
//! This test binary has its own `main` (`harness = false`) because it is also the renderer it
//! spawns: `main` starts with `serve_if_requested`, as any program using the library must.
//! Without the isolation, `the_list_doubling_template_is_stopped` allocates 2^33 list items and
//! exhausts the machine's memory (run it with `ulimit -v` to see it abort instead).

// Test code: a failed expectation is an error with a message.
#![allow(clippy::indexing_slicing)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

/// Metadata-only GGUF files, shared with the tokenize crate's tests.
#[allow(clippy::unwrap_used, clippy::panic)]
#[path = "../../tokenize/tests/gguf_writer/mod.rs"]
mod gguf_writer;

use safeformers::tokenize::{
    ChatTemplateOptions, ChatTemplateProblem, TokenizeError, TokenizerOptions,
};
use safeformers::{ChatTemplateIsolation, Error, Options, TextGeneration};
use serde_json::{Value, json};

/// minijinja 3.1 materializes 33 nested list concatenations without charging fuel.
const LIST_DOUBLING: &str = "{% set ns = namespace(l=[1]) %}{% for i in range(40) %}{% set ns.l = ns.l + ns.l %}{% endfor %}{{ ns.l | length }}";

const BENIGN: &str = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}";

/// A test: its name and body.
type Test = (&'static str, fn() -> Result<(), String>);

fn main() -> ExitCode {
    safeformers::chat_sandbox::serve_if_requested();
    let tests: [Test; 5] = [
        (
            "a_hostile_gguf_template_is_stopped_in_the_child",
            a_hostile_gguf_template_is_stopped_in_the_child,
        ),
        (
            "the_list_doubling_template_is_stopped",
            the_list_doubling_template_is_stopped,
        ),
        (
            "fuel_still_stops_loops_in_the_child",
            fuel_still_stops_loops_in_the_child,
        ),
        (
            "a_benign_template_renders_as_in_process",
            a_benign_template_renders_as_in_process,
        ),
        (
            "a_renderer_that_does_not_serve_fails_closed",
            a_renderer_that_does_not_serve_fails_closed,
        ),
    ];
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with('-'))
        .collect();
    let mut failed = 0;
    for (name, test) in tests {
        if !filter.is_empty() && !filter.iter().any(|wanted| name.contains(wanted.as_str())) {
            continue;
        }
        match test() {
            Ok(()) => println!("test {name} ... ok"),
            Err(message) => {
                println!("test {name} ... FAILED: {message}");
                failed += 1;
            }
        }
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn gpt2() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/decoders/gpt2")
}

/// A copy of the tiny GPT-2 whose chat template is `template`.
fn gpt2_with_chat_template(tag: &str, template: &str) -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(format!("sf-lib-chat-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    for entry in std::fs::read_dir(gpt2()).map_err(|e| e.to_string())? {
        let entry = entry.map_err(|e| e.to_string())?;
        std::fs::copy(entry.path(), dir.join(entry.file_name())).map_err(|e| e.to_string())?;
    }
    let path = dir.join("tokenizer_config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
    let mut config: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    config["chat_template"] = json!(template);
    std::fs::write(&path, config.to_string()).map_err(|e| e.to_string())?;
    Ok(dir)
}

/// Renders `template` with `options`, removing the folder afterwards.
fn render(tag: &str, template: &str, options: &Options) -> Result<Result<String, Error>, String> {
    let dir = gpt2_with_chat_template(tag, template)?;
    let pipeline = TextGeneration::from_pretrained(&dir, options).map_err(|e| e.to_string())?;
    let messages = [json!({"role": "user", "content": "hi"})];
    let rendered = pipeline
        .pipeline()
        .render_chat(&messages)
        .map_err(Error::from);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(rendered)
}

fn expect_problem(
    result: Result<String, Error>,
    check: fn(&ChatTemplateProblem) -> bool,
) -> Result<(), String> {
    let error = match result {
        Err(Error::Pipeline(safeformers::pipelines::PipelineError::ChatTemplate {
            source,
            ..
        })) => *source,
        Err(Error::Tokenize(error)) => error,
        other => return Err(format!("unexpected result: {other:?}")),
    };
    match error {
        TokenizeError::ChatTemplate { problem, .. } if check(&problem) => Ok(()),
        other => Err(format!("unexpected error: {other:?}")),
    }
}

fn the_list_doubling_template_is_stopped() -> Result<(), String> {
    let started = Instant::now();
    let result = render("doubling", LIST_DOUBLING, &Options::new())?;
    let elapsed = started.elapsed();
    expect_problem(result, |problem| {
        matches!(problem, ChatTemplateProblem::Isolation(_))
    })?;
    // The child is killed after its wall-clock limit; a bound far above it catches a hang.
    if elapsed.as_secs_f64() > 30.0 {
        return Err(format!("took {elapsed:?}"));
    }
    Ok(())
}

/// The same template from a GGUF file's `tokenizer.chat_template` goes the same way: the
/// tokenizer built from the metadata hands it to the isolated renderer, which stops it.
fn a_hostile_gguf_template_is_stopped_in_the_child() -> Result<(), String> {
    let mut metadata = gguf_writer::tiny_metadata(&["<|im_end|>"], &[]);
    metadata.insert(
        "tokenizer.chat_template".into(),
        gguf_writer::text(LIST_DOUBLING),
    );
    let file = gguf_writer::gguf_with(&metadata, "hostile-template.gguf");
    let tokenizer =
        safeformers::Tokenizer::from_gguf(file.header(), file.path(), &TokenizerOptions::default())
            .map_err(|e| e.to_string())?;
    let messages = [json!({"role": "user", "content": "hi"})];
    let request = tokenizer
        .chat_template_request(&messages, &ChatTemplateOptions::default())
        .map_err(|e| e.to_string())?;
    let program = std::env::current_exe().map_err(|e| e.to_string())?;
    let started = Instant::now();
    let result = safeformers::chat_sandbox::render_isolated(&program, &request);
    let elapsed = started.elapsed();
    expect_problem(result.map_err(Error::from), |problem| {
        matches!(problem, ChatTemplateProblem::Isolation(_))
    })?;
    if elapsed.as_secs_f64() > 30.0 {
        return Err(format!("took {elapsed:?}"));
    }
    Ok(())
}

fn fuel_still_stops_loops_in_the_child() -> Result<(), String> {
    let looping =
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}";
    let result = render("loop", looping, &Options::new())?;
    expect_problem(result, |problem| {
        matches!(problem, ChatTemplateProblem::OutOfFuel { .. })
    })
}

fn a_benign_template_renders_as_in_process() -> Result<(), String> {
    let isolated = render("benign", BENIGN, &Options::new())?.map_err(|e| e.to_string())?;
    let trusted = Options::new().chat_templates(ChatTemplateIsolation::InProcessTrusted);
    let in_process = render("benign-in", BENIGN, &trusted)?.map_err(|e| e.to_string())?;
    if isolated != in_process || isolated != "<|user|>hi\n<|assistant|>" {
        return Err(format!("{isolated:?} vs {in_process:?}"));
    }
    Ok(())
}

fn a_renderer_that_does_not_serve_fails_closed() -> Result<(), String> {
    // A program that ignores the request: an error, never a render elsewhere.
    let options = Options::new().chat_templates(ChatTemplateIsolation::Program("true".into()));
    let result = render("not-serving", BENIGN, &options)?;
    expect_problem(result, |problem| {
        matches!(problem, ChatTemplateProblem::Isolation(_))
    })
}
