//! `safeformers forward --model M --input-ids 1,2,3 [--attention-mask 1,1,0] [--json]`: one
//! forward pass on ids given by hand (shared/CLI.md).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use candle_core::{Device, Tensor};
use clap::Args;
use serde::Serialize;

use safeformers::Options;
use safeformers_models::gguf::find_gguf;
use safeformers_models::{
    AutoModel, AutoModelForCausalLM, CAUSAL_LM_MODEL_TYPES, ModelConfig, ModelOutput,
};

use crate::UsageError;
use crate::model::resolve_model;
use crate::output;
use crate::run::{ModelLoadArgs, policy};

/// Arguments of `forward`.
#[derive(Debug, Args)]
pub struct ForwardArgs {
    /// A model folder, a `.gguf` file, or a repo id `org/name[@REV]` resolved through the cache
    /// and the Hub.
    #[arg(long, value_name = "M")]
    model: PathBuf,
    /// Token ids of one row, comma-separated; repeat for a batch (rows right-padded by you).
    #[arg(long = "input-ids", value_name = "IDS", required = true)]
    input_ids: Vec<String>,
    /// The attention mask of each row (1 attend, 0 padding), in the same order; default all 1.
    #[arg(long = "attention-mask", value_name = "MASK")]
    attention_mask: Vec<String>,
    /// Segment ids of each row (models that read them); default all 0.
    #[arg(long = "token-type-ids", value_name = "IDS")]
    token_type_ids: Vec<String>,
    /// Print JSON: {"output", "shape", "data"} (data flat, row-major).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    load: ModelLoadArgs,
}

#[derive(Debug, Serialize)]
struct ForwardOutput {
    output: &'static str,
    shape: Vec<usize>,
    data: Vec<f32>,
}

/// Parses the rows of one repeatable flag; all rows must have `widths` (when given) lengths.
fn parse_rows(flag: &str, rows: &[String]) -> anyhow::Result<Vec<Vec<u32>>> {
    rows.iter()
        .enumerate()
        .map(|(row, text)| {
            text.split(',')
                .map(|item| {
                    item.trim().parse::<u32>().map_err(|_| {
                        UsageError(format!(
                            "{flag} row {row}: `{}` is not a non-negative integer",
                            item.trim()
                        ))
                        .into()
                    })
                })
                .collect()
        })
        .collect()
}

/// An attention mask holds 1 (attend) and 0 (padding) only. Models read any non-zero value as
/// 1, as Transformers' `mask.bool()` does; on the command line another value is a mistake.
fn check_mask_values(mask: &[Vec<u32>]) -> anyhow::Result<()> {
    for (row, values) in mask.iter().enumerate() {
        if let Some(value) = values.iter().find(|&&value| value > 1) {
            return Err(UsageError(format!(
                "--attention-mask row {row}: `{value}` is not 0 or 1 (1 for a token to attend \
                 to, 0 for padding)"
            ))
            .into());
        }
    }
    Ok(())
}

fn tensor(rows: &[Vec<u32>], seq: usize) -> anyhow::Result<Tensor> {
    let flat: Vec<u32> = rows.iter().flatten().copied().collect();
    Ok(Tensor::from_vec(flat, (rows.len(), seq), &Device::Cpu)?)
}

/// Runs `forward`.
pub fn run(args: &ForwardArgs) -> anyhow::Result<ExitCode> {
    args.load.threads.install(|| forward(args))
}

/// The rows of `--input-ids`, `--attention-mask` and `--token-type-ids`, checked.
struct Rows {
    ids: Vec<Vec<u32>>,
    mask: Vec<Vec<u32>>,
    types: Vec<Vec<u32>>,
    seq: usize,
}

/// Parses and checks the rows: every row of one length, one mask and type row per id row.
fn rows(args: &ForwardArgs) -> anyhow::Result<Rows> {
    let ids = parse_rows("--input-ids", &args.input_ids)?;
    let seq = ids.first().map_or(0, Vec::len);
    if ids.iter().any(|row| row.len() != seq) {
        return Err(UsageError(
            "every --input-ids row must have the same length (right-pad the shorter ones and \
             mask them with --attention-mask)"
                .into(),
        )
        .into());
    }
    let check = |flag: &str, rows: &[Vec<u32>]| -> anyhow::Result<()> {
        if !rows.is_empty() && (rows.len() != ids.len() || rows.iter().any(|r| r.len() != seq)) {
            return Err(UsageError(format!(
                "{flag}: give one row per --input-ids row, each of {seq} values"
            ))
            .into());
        }
        Ok(())
    };
    let mask = parse_rows("--attention-mask", &args.attention_mask)?;
    check("--attention-mask", &mask)?;
    check_mask_values(&mask)?;
    let types = parse_rows("--token-type-ids", &args.token_type_ids)?;
    check("--token-type-ids", &types)?;
    Ok(Rows {
        ids,
        mask,
        types,
        seq,
    })
}

fn forward(args: &ForwardArgs) -> anyhow::Result<ExitCode> {
    let rows = rows(args)?;
    let options = args.load.options()?;
    // A folder, or the GGUF file a load reads (given, or picked in a folder or repo).
    let path = resolve_model(&args.model, &options)?;
    if find_gguf(&path)?.is_some() {
        return forward_causal_lm(args, &path, &options, rows);
    }
    let config = ModelConfig::from_file(&path.join("config.json"))?;
    if CAUSAL_LM_MODEL_TYPES.contains(&config.model_type.as_str()) {
        return forward_causal_lm(args, &path, &options, rows);
    }
    let weights = options.weight_options();
    let model = AutoModel::load_with_options(
        &path,
        &policy(args.load.allow_pickle),
        &Device::Cpu,
        weights,
    )?;
    let Rows {
        ids,
        mask,
        types,
        seq,
    } = rows;
    let input_ids = tensor(&ids, seq)?;
    let mask = (!mask.is_empty()).then(|| tensor(&mask, seq)).transpose()?;
    let types = (!types.is_empty())
        .then(|| tensor(&types, seq))
        .transpose()?;
    let result = model.forward(&input_ids, mask.as_ref(), types.as_ref())?;
    let (name, tensor) = match result {
        ModelOutput::BaseModel {
            last_hidden_state, ..
        } => ("last_hidden_state", last_hidden_state),
        ModelOutput::MaskedLm { logits }
        | ModelOutput::SequenceClassification { logits }
        | ModelOutput::TokenClassification { logits } => ("logits", logits),
        // The QA head's own output before it is split: [batch, seq, 2] (start, end).
        ModelOutput::QuestionAnswering {
            start_logits,
            end_logits,
        } => ("logits", Tensor::stack(&[start_logits, end_logits], 2)?),
    };
    print_output(args, name, tensor, &model.class_name())
}

/// The forward pass of a causal LM (a decoder folder, or a GGUF file): its logits.
fn forward_causal_lm(
    args: &ForwardArgs,
    path: &Path,
    options: &Options,
    rows: Rows,
) -> anyhow::Result<ExitCode> {
    let Rows {
        ids,
        mask,
        types,
        seq,
    } = rows;
    let model = AutoModelForCausalLM::load_with_options(
        path,
        &policy(args.load.allow_pickle),
        &Device::Cpu,
        options.weight_options(),
    )?;
    let config = model.config();
    if !types.is_empty() {
        return Err(UsageError(format!(
            "--token-type-ids: a {} model reads no segment ids",
            config.model_type
        ))
        .into());
    }
    // Positions past the context window are not ones the model was built for (GPT-2 has
    // no embedding for them; rotary models would attend over any length, quadratically).
    if let Some(context) = model.context_length().filter(|&context| seq > context) {
        anyhow::bail!(
            "--input-ids: rows of {seq} tokens are longer than the model's context window of \
             {context} tokens"
        );
    }
    let mask = if mask.is_empty() {
        vec![vec![1u32; seq]; ids.len()]
    } else {
        mask
    };
    // Positions 0..seq for every row, as Transformers' forward without position_ids (rows
    // are right-padded, so the real tokens of each row start at 0).
    let positions: Vec<i64> = (0..ids.len())
        .flat_map(|_| (0..seq).map(|p| i64::try_from(p).unwrap_or(i64::MAX)))
        .collect();
    let positions = Tensor::from_vec(positions, (ids.len(), seq), &Device::Cpu)?;
    let mut cache = model.new_cache();
    let logits = model.forward(
        &tensor(&ids, seq)?,
        &positions,
        &tensor(&mask, seq)?,
        &mut cache,
    )?;
    let class = config
        .architectures
        .first()
        .cloned()
        .unwrap_or_else(|| format!("{} causal LM", config.model_type));
    print_output(args, "logits", logits, &class)
}

/// Prints the output tensor as JSON or as a short table.
fn print_output(
    args: &ForwardArgs,
    name: &'static str,
    tensor: Tensor,
    class_name: &str,
) -> anyhow::Result<ExitCode> {
    let shape = tensor.dims().to_vec();
    let data = tensor
        .flatten_all()?
        .to_vec1::<f32>()
        .context("reading the model output")?;
    if args.json {
        output::print_json(&ForwardOutput {
            output: name,
            shape,
            data,
        })?;
    } else {
        let mut text = format!("{name} {shape:?} ({class_name})\n");
        let width = shape.last().copied().unwrap_or(1).max(1);
        for (index, vector) in data.chunks(width).enumerate() {
            let shown: Vec<String> = vector.iter().take(8).map(|v| format!("{v:.6}")).collect();
            let more = if vector.len() > 8 { " ..." } else { "" };
            let _ = writeln!(text, "[{index}] {}{more}", shown.join(" "));
        }
        output::print(&text)?;
    }
    Ok(ExitCode::SUCCESS)
}
