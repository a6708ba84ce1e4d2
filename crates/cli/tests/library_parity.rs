//! The library front door prints what the CLI prints: the `pipeline` example of the
//! `safeformers` crate (compiled into this test binary from its source) and
//! `safeformers run TASK --model MODEL INPUT...` give the same bytes on stdout, with the same
//! `HF_HUB_OFFLINE` / `HF_HUB_CACHE` environment: MiniLM by repo id from an offline cache filled
//! by `safeformers cache import`, and the tiny fill-mask and text-generation fixtures.
//!
//! `harness = false`: this binary is also the example. Started with `LIBRARY_PARITY_AS_EXAMPLE`
//! set, `main` is the example's `main`.

// Test code: a failed expectation is a panic with a message.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    dead_code
)]

#[path = "../../safeformers/examples/pipeline.rs"]
mod example;

mod common;

use std::path::Path;
use std::process::{Command, ExitCode, Output, Stdio};

use common::{Sandbox, minilm_dir};

/// Set in the child that runs the example's `main`.
const AS_EXAMPLE: &str = "LIBRARY_PARITY_AS_EXAMPLE";

const MINILM: &str = "sentence-transformers/all-MiniLM-L6-v2";

fn main() -> ExitCode {
    if std::env::var_os(AS_EXAMPLE).is_some() {
        return example::main();
    }
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with('-'))
        .collect();
    let tests: [(&str, fn()); 3] = [
        (
            "minilm_feature_extraction_offline_by_repo_id",
            minilm_feature_extraction_offline_by_repo_id,
        ),
        ("fill_mask_on_the_fixtures", fill_mask_on_the_fixtures),
        (
            "text_generation_on_the_fixtures",
            text_generation_on_the_fixtures,
        ),
    ];
    for (name, test) in tests {
        if filter.is_empty() || filter.iter().any(|wanted| name.contains(wanted.as_str())) {
            test();
            println!("test {name} ... ok");
        }
    }
    ExitCode::SUCCESS
}

/// Runs `command` with the Hub environment of `cache` (offline), and returns its output.
fn run_offline(mut command: Command, cache: &Path, home: &Path) -> Output {
    for variable in [
        "HF_ENDPOINT",
        "HF_TOKEN",
        "HF_TOKEN_PATH",
        "HUGGINGFACE_HUB_CACHE",
        "TRANSFORMERS_OFFLINE",
        "SAFEFORMERS_LOCKED",
    ] {
        command.env_remove(variable);
    }
    command
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HUB_CACHE", cache)
        .env("HF_HOME", home)
        .stdin(Stdio::null())
        .output()
        .expect("the command runs")
}

/// `safeformers run TASK --model MODEL ARGS...` and the example `TASK MODEL ARGS...`: the same
/// stdout, byte for byte, and both succeed. Returns that stdout.
fn assert_same_bytes(task: &str, model: &str, args: &[&str], cache: &Path, home: &Path) -> String {
    let mut cli = Command::new(env!("CARGO_BIN_EXE_safeformers"));
    cli.args(["run", task, "--model", model]).args(args);
    let cli = run_offline(cli, cache, home);
    let mut library = Command::new(std::env::current_exe().unwrap());
    library.env(AS_EXAMPLE, "1").args([task, model]).args(args);
    let library = run_offline(library, cache, home);
    let what = format!("{task} {model} {args:?}");
    assert!(
        cli.status.success(),
        "CLI {what}: {}",
        String::from_utf8_lossy(&cli.stderr)
    );
    assert!(
        library.status.success(),
        "library {what}: {}",
        String::from_utf8_lossy(&library.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&cli.stdout),
        String::from_utf8_lossy(&library.stdout),
        "{what}"
    );
    assert_eq!(cli.stdout, library.stdout, "{what}");
    assert!(
        cli.stdout.ends_with(b"\n") && !cli.stdout.is_empty(),
        "{what}"
    );
    String::from_utf8(cli.stdout).unwrap()
}

fn fixtures() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn minilm_feature_extraction_offline_by_repo_id() {
    let sandbox = Sandbox::new("parity-minilm");
    let cache = sandbox.dir("cache");
    let home = sandbox.dir("home");
    let minilm = minilm_dir();
    let import = run_offline(
        {
            let mut command = Command::new(env!("CARGO_BIN_EXE_safeformers"));
            command
                .args(["cache", "import"])
                .arg(&minilm)
                .args(["--repo", MINILM]);
            command
        },
        &cache,
        &home,
    );
    assert!(
        import.status.success(),
        "{}",
        String::from_utf8_lossy(&import.stderr)
    );
    let printed = assert_same_bytes(
        "feature-extraction",
        MINILM,
        &["A man is eating food.", "A man is riding a horse."],
        &cache,
        &home,
    );
    // Sentence embeddings: one vector of 384 per input.
    let vectors: Vec<Vec<f32>> = serde_json::from_str(&printed).unwrap();
    assert_eq!(vectors.len(), 2);
    assert!(vectors.iter().all(|vector| vector.len() == 384));
    // Offline and not cached: both refuse (the example honours HF_HUB_OFFLINE and HF_HUB_CACHE).
    let empty = sandbox.dir("empty-cache");
    let mut library = Command::new(std::env::current_exe().unwrap());
    library
        .env(AS_EXAMPLE, "1")
        .args(["feature-extraction", MINILM, "x"]);
    let library = run_offline(library, &empty, &home);
    assert!(!library.status.success());
    assert!(
        String::from_utf8_lossy(&library.stderr).contains("offline"),
        "{}",
        String::from_utf8_lossy(&library.stderr)
    );
}

fn fill_mask_on_the_fixtures() {
    let sandbox = Sandbox::new("parity-fill-mask");
    let (cache, home) = (sandbox.dir("cache"), sandbox.dir("home"));
    for model in ["bert-mlm", "roberta-mlm", "distilbert-mlm"] {
        let dir = fixtures().join("models").join(model);
        let mask = if model == "roberta-mlm" {
            "<mask>"
        } else {
            "[MASK]"
        };
        let one = format!("Paris is the {mask} of France.");
        let two = format!("The {mask} sat on the {mask}.");
        assert_same_bytes(
            "fill-mask",
            dir.to_str().unwrap(),
            &[&one, &two],
            &cache,
            &home,
        );
    }
}

fn text_generation_on_the_fixtures() {
    let sandbox = Sandbox::new("parity-text-generation");
    let (cache, home) = (sandbox.dir("cache"), sandbox.dir("home"));
    for model in ["gpt2", "llama", "qwen2"] {
        let dir = fixtures().join("decoders").join(model);
        let dir = dir.to_str().unwrap();
        for flags in [
            ["--greedy", "--max-new-tokens", "6"],
            ["--seed", "7", "--max-new-tokens"],
        ] {
            let mut args: Vec<&str> = flags.to_vec();
            if flags[0] == "--seed" {
                args.push("6");
            }
            args.extend(["Hello world", "The quick brown fox"]);
            assert_same_bytes("text-generation", dir, &args, &cache, &home);
        }
    }
}
