//! `safeformers inspect MODEL [--json] [--allow-pickle]` (also `--model MODEL`), with the Hub
//! options of every command that takes a model.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde::Serialize;

use safeformers_models::auto::class_to_load;
use safeformers_models::{ModelConfig, remote_code};
use safeformers_weights::gguf::GgufFile;
use safeformers_weights::mapped::MappedFile;
use safeformers_weights::{FileFormat, LoadPolicy, detect_format, open_checkpoint};

use crate::UsageError;
use crate::model::{GgufFileArg, HubArgs, LockArgs, resolve_model};

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
    /// "copied_for_alignment"}], and for a model folder "model": {"model_type", "class",
    /// "remote_code", "refused"}}; `copied_for_alignment` is true for a tensor whose data in
    /// the file is not aligned for its dtype, read through an aligned copy. A GGUF file adds
    /// "gguf_version" and "chat_template" (whether it carries one); its metadata values are
    /// summarised (arrays as their type and length, long strings cut) and its dtypes are ggml
    /// types (`Q4_1`, `Q6_K`, ...).
    #[arg(long)]
    json: bool,
    /// Read pickle-based checkpoints with the restricted (non-executing) unpickler.
    #[arg(long)]
    allow_pickle: bool,
    #[command(flatten)]
    gguf: GgufFileArg,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<ModelSummary>,
}

/// What a model folder's `config.json` would load, and what happens to the code its
/// `auto_map` names.
#[derive(Debug, Serialize)]
struct ModelSummary {
    model_type: String,
    /// The class safeformers runs (`None` when the load would be refused).
    class: Option<String>,
    /// Why the load is refused, or which code files are not run and what runs instead.
    remote_code: Option<String>,
    /// Whether the load is refused.
    refused: bool,
}

impl ModelSummary {
    /// The summary of `folder/config.json`, when the folder has one that parses.
    fn of_folder(folder: &std::path::Path) -> Option<ModelSummary> {
        let config_path = folder.join("config.json");
        if !folder.is_dir() || !config_path.is_file() {
            return None;
        }
        let config = match ModelConfig::from_file(&config_path) {
            Ok(config) => config,
            Err(error) => {
                return Some(ModelSummary {
                    model_type: String::new(),
                    class: None,
                    remote_code: Some(error.to_string()),
                    refused: true,
                });
            }
        };
        let model_type = config.model_type.clone();
        Some(match class_to_load(&config) {
            Ok(class) => ModelSummary {
                remote_code: remote_code::notice(&config, &class),
                model_type,
                class: Some(class),
                refused: false,
            },
            Err(error) => ModelSummary {
                model_type,
                class: None,
                remote_code: Some(error.to_string()),
                refused: true,
            },
        })
    }
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
    let options = args
        .gguf
        .apply(args.hub.options(&args.lock).allow_pickle(args.allow_pickle))?;
    let path = resolve_model(spec, &options)?;
    // The library's errors name the file (and the tensor or member) themselves.
    if let Some(gguf) = open_if_gguf(&path, &policy)? {
        return inspect_gguf(&gguf, args.json);
    }
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
        model: ModelSummary::of_folder(&path),
    };
    if args.json {
        crate::output::print_json(&output)?;
    } else {
        crate::output::print(&render_table(&output))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The file at `path` as a validated GGUF file, when its content is GGUF (the policy judges it
/// first, as for every other weights file).
fn open_if_gguf(path: &std::path::Path, policy: &LoadPolicy) -> anyhow::Result<Option<GgufFile>> {
    if path.is_dir() {
        return Ok(None);
    }
    let file = MappedFile::open(path)?;
    if detect_format(file.bytes()) != FileFormat::Gguf {
        return Ok(None);
    }
    policy.check_weights_file(path, FileFormat::Gguf)?;
    Ok(Some(GgufFile::from_mapped(file)?))
}

/// How many characters of a metadata string `inspect` shows.
const METADATA_STRING_CHARS: usize = 120;

#[derive(Debug, Serialize)]
struct GgufInspectOutput<'a> {
    format: &'static str,
    gguf_version: u32,
    chat_template: bool,
    metadata: BTreeMap<String, String>,
    tensors: Vec<TensorLine<'a>>,
}

fn inspect_gguf(file: &GgufFile, json: bool) -> anyhow::Result<ExitCode> {
    let header = file.header();
    let output = GgufInspectOutput {
        format: FileFormat::Gguf.json_name(),
        gguf_version: header.version(),
        chat_template: header.chat_template()?.is_some(),
        metadata: header
            .metadata()
            .iter()
            .map(|(key, value)| (key.clone(), value.summary(METADATA_STRING_CHARS)))
            .collect(),
        tensors: header
            .tensors()
            .iter()
            .map(|tensor| TensorLine {
                name: &tensor.name,
                dtype: tensor.ggml_type.name(),
                shape: &tensor.shape,
                copied_for_alignment: false,
            })
            .collect(),
    };
    if json {
        crate::output::print_json(&output)?;
    } else {
        let mut text = format!(
            "GGUF v{}, chat template: {}\n",
            output.gguf_version,
            if output.chat_template {
                "present"
            } else {
                "absent"
            }
        );
        text.push_str(&render_table(&InspectOutput {
            format: output.format,
            metadata: &output.metadata,
            tensors: output.tensors,
            model: None,
        }));
        crate::output::print(&text)?;
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
    if let Some(model) = &output.model {
        match &model.class {
            Some(class) => {
                let _ = writeln!(text, "model: {} ({class})", model.model_type);
            }
            None => {
                let _ = writeln!(text, "model: {} (refused)", model.model_type);
            }
        }
        if let Some(remote_code) = &model.remote_code {
            let _ = writeln!(text, "remote code: {remote_code}");
        }
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
