//! `safeformers inspect MODEL [--json] [--allow-pickle]` (also `--model MODEL`), with the Hub
//! options of every command that takes a model.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde::Serialize;

use safeformers_weights::{LoadPolicy, open_checkpoint};

use crate::UsageError;
use crate::model::{HubArgs, LockArgs, resolve_model};

/// Arguments of `inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A weights file (format detected by content) or a model folder; else, when no such path
    /// exists, a repo id `org/name[@REV]` resolved through the cache and the Hub.
    #[arg(
        value_name = "MODEL",
        required_unless_present = "model",
        conflicts_with = "model"
    )]
    path: Option<PathBuf>,
    /// The same as the positional MODEL.
    #[arg(long, value_name = "M")]
    model: Option<PathBuf>,
    /// Print JSON: {"format", "metadata", "tensors": [{"name", "dtype", "shape",
    /// "copied_for_alignment"}]}; `copied_for_alignment` is true for a tensor whose data in
    /// the file is not aligned for its dtype, read through an aligned copy.
    #[arg(long)]
    json: bool,
    /// Read pickle-based checkpoints with the restricted (non-executing) unpickler.
    #[arg(long)]
    allow_pickle: bool,
    #[command(flatten)]
    hub: HubArgs,
    #[command(flatten)]
    lock: LockArgs,
}

#[derive(Debug, Serialize)]
struct InspectOutput<'a> {
    format: &'static str,
    metadata: &'a BTreeMap<String, String>,
    tensors: Vec<TensorLine<'a>>,
}

#[derive(Debug, Serialize)]
struct TensorLine<'a> {
    name: &'a str,
    dtype: &'static str,
    shape: &'a [usize],
    /// The tensor's data is not aligned for its dtype in the file; it was copied into aligned
    /// memory to be read.
    copied_for_alignment: bool,
}

/// Runs `inspect`.
pub fn run(args: &InspectArgs) -> anyhow::Result<ExitCode> {
    let policy = if args.allow_pickle {
        LoadPolicy::allowing_pickle()
    } else {
        LoadPolicy::default()
    };
    let Some(spec) = args.path.as_ref().or(args.model.as_ref()) else {
        return Err(UsageError("give a model: a path or a repo id".to_string()).into());
    };
    let path = resolve_model(spec, &args.hub, &args.lock, args.allow_pickle)?;
    // The library's errors name the file (and the tensor or member) themselves.
    let checkpoint = open_checkpoint(&path, &policy)?;
    let output = InspectOutput {
        format: checkpoint.format().json_name(),
        metadata: checkpoint.metadata(),
        tensors: checkpoint
            .tensors()
            .map(|tensor| TensorLine {
                name: tensor.name,
                dtype: tensor.dtype.name(),
                shape: tensor.shape,
                copied_for_alignment: checkpoint.is_copied_for_alignment(tensor.name),
            })
            .collect(),
    };
    if args.json {
        crate::output::print_json(&output)?;
    } else {
        crate::output::print(&render_table(&output))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn render_table(output: &InspectOutput<'_>) -> String {
    let mut text = String::new();
    let parameter_count: u128 = output
        .tensors
        .iter()
        .map(|tensor| {
            tensor
                .shape
                .iter()
                .map(|&dim| dim as u128)
                .product::<u128>()
        })
        .sum();
    let _ = writeln!(
        text,
        "format: {}  tensors: {}  parameters: {}",
        output.format,
        output.tensors.len(),
        parameter_count
    );
    for (key, value) in output.metadata {
        let _ = writeln!(text, "metadata: {key} = {value}");
    }
    let copied = output
        .tensors
        .iter()
        .filter(|tensor| tensor.copied_for_alignment)
        .count();
    if copied > 0 {
        let _ = writeln!(
            text,
            "note: {copied} tensor(s) are not aligned for their dtype in the file and were copied \
             into aligned memory (marked below); re-saving with a current safetensors aligns them"
        );
    }
    let name_width = output
        .tensors
        .iter()
        .map(|tensor| tensor.name.len())
        .max()
        .unwrap_or(4)
        .min(80);
    for tensor in &output.tensors {
        let marker = if tensor.copied_for_alignment {
            "  (copied for alignment)"
        } else {
            ""
        };
        let _ = writeln!(
            text,
            "{:<name_width$}  {:<11}  {:?}{marker}",
            tensor.name, tensor.dtype, tensor.shape
        );
    }
    text
}
