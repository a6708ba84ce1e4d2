//! `safeformers tool inspect REPO[@REV] [--json]`, `safeformers tool approve REPO@COMMIT
//! [--grant ...]... [--lockfile PATH]` and `safeformers tool call REPO[@COMMIT] --args JSON`: look
//! at a tool package before trusting it, approve it, capability by capability, into
//! `safeformers.lock`, then call it in the WebAssembly sandbox (with the `wasm` feature).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use safeformers_agents::approval::{approval_entry, parse_pinned, record_approval};
use safeformers_agents::grants::Grant;
use safeformers_agents::manifest::{RequestedLimits, ToolLimits};
use safeformers_agents::package::{
    ToolPackage, ToolRequest, ToolSource, fetch_package, open_package,
};
use safeformers_agents::visible::make_visible;
use safeformers_hub::lockfile::lockfile_path;
use safeformers_hub::{HubClient, HubSettings, Revision};
use serde_json::{Value, json};

#[cfg(feature = "wasm")]
use crate::UsageError;

use crate::model::{HubArgs, LockArgs};

/// Arguments of `tool`.
#[derive(Debug, Args)]
pub struct ToolArgs {
    #[command(subcommand)]
    command: ToolCommand,
}

#[derive(Debug, Subcommand)]
enum ToolCommand {
    /// Show a tool package: name, description and schemas (hidden characters made visible),
    /// requested capabilities and limits, commit, each file's sha256 and size, the definition
    /// hash. Fetches only tool.json and tool.wasm; runs nothing.
    Inspect(InspectArgs),
    /// Approve a tool at a commit into safeformers.lock, with the capabilities granted (each one
    /// the tool requested); a branch or tag is refused (exit 3).
    Approve(ApproveArgs),
    /// Call an approved tool once in the WebAssembly sandbox, under its recorded grants, and
    /// print its result JSON. Not approved, or a file or definition that changed: exit 3.
    Call(CallArgs),
}

/// Arguments of `tool call`.
#[derive(Debug, Args)]
struct CallArgs {
    /// The approved tool: `org/name` (at its approved commit) or `org/name@COMMIT`.
    #[arg(value_name = "REPO[@COMMIT]")]
    tool: String,
    /// The arguments, a JSON object (checked against the tool's schema).
    #[arg(long, value_name = "JSON")]
    args: String,
    /// The lockfile holding the approval (default ./safeformers.lock).
    #[arg(long, value_name = "PATH")]
    lockfile: Option<PathBuf>,
    #[command(flatten)]
    hub: ToolHubArgs,
}

/// `--offline` and `--endpoint`, as the other commands that talk to the Hub have them.
#[derive(Debug, Clone, Args)]
struct ToolHubArgs {
    /// Use only the cache, never open a socket (same as HF_HUB_OFFLINE=1).
    #[arg(long)]
    offline: bool,
    /// The Hub endpoint (same as HF_ENDPOINT), e.g. a `safeformers mirror`.
    #[arg(long, value_name = "URL")]
    endpoint: Option<String>,
}

impl ToolHubArgs {
    fn settings(&self) -> HubSettings {
        HubArgs {
            revision: None,
            offline: self.offline,
            endpoint: self.endpoint.clone(),
        }
        .options(&LockArgs::unlocked())
        .hub_settings()
    }
}

/// Arguments of `tool inspect`.
#[derive(Debug, Args)]
struct InspectArgs {
    /// The tool: `org/name`, `org/name@REV` (branch, tag or commit; default `main`), or a local
    /// folder holding tool.json and tool.wasm.
    #[arg(value_name = "REPO[@REV]")]
    tool: String,
    /// Print one JSON object (every non-ASCII character written as a \uXXXX escape).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    hub: ToolHubArgs,
}

/// Arguments of `tool approve`.
#[derive(Debug, Args)]
struct ApproveArgs {
    /// The tool at a 40-hex commit: `org/name@COMMIT` (see `tool inspect` for the commit).
    #[arg(value_name = "REPO@COMMIT")]
    tool: String,
    /// A capability to give, one the tool requested: `fs:GUEST=HOSTDIR[:ro|rw]` (read-only
    /// unless `rw`), `net:HOST:PORT`, `env:NAME`. Repeatable; what is not granted, the tool
    /// does not get.
    #[arg(long = "grant", value_name = "GRANT")]
    grants: Vec<String>,
    /// The lockfile to write (default ./safeformers.lock); its other entries are kept.
    #[arg(long, value_name = "PATH")]
    lockfile: Option<PathBuf>,
    /// Lower the tool's fuel per call (never above what it asks for).
    #[arg(long, value_name = "N")]
    fuel: Option<u64>,
    /// Lower the tool's wall-clock time per call, in milliseconds.
    #[arg(long, value_name = "MS")]
    wall_ms: Option<u64>,
    /// Lower the tool's memory, in bytes.
    #[arg(long, value_name = "BYTES")]
    memory_bytes: Option<u64>,
    /// Lower the largest result the tool may return, in bytes.
    #[arg(long, value_name = "BYTES")]
    output_bytes: Option<u64>,
    /// Every call also needs a yes from the user (on the terminal, or `agent --yes-to NAME`),
    /// bound to the call's arguments and the agent's session.
    #[arg(long)]
    ask: bool,
    #[command(flatten)]
    hub: ToolHubArgs,
}

/// Runs `tool`.
pub fn run(args: &ToolArgs) -> anyhow::Result<ExitCode> {
    match &args.command {
        ToolCommand::Inspect(args) => inspect(args),
        ToolCommand::Approve(args) => approve(args),
        ToolCommand::Call(args) => call(args),
    }
}

#[cfg(feature = "wasm")]
/// The approved tools named by `specs` (`org/name[@COMMIT]`), verified against `lockfile`.
pub fn approved_tools(
    specs: &[String],
    lockfile: Option<&std::path::Path>,
    settings: &HubSettings,
) -> anyhow::Result<Vec<safeformers_agents::ApprovedTool>> {
    let path = lockfile_path(lockfile);
    specs
        .iter()
        .map(|spec| {
            let (repo, commit) = match spec.split_once('@') {
                Some(_) => {
                    let (repo, commit) = parse_pinned(spec)?;
                    (repo, Some(commit))
                }
                None => (ToolRequest::parse(spec)?.repo, None),
            };
            safeformers_agents::load_approved(&repo, commit.as_ref(), &path, settings)
                .with_context(|| format!("tool `{spec}`"))
        })
        .collect()
}

#[cfg(feature = "wasm")]
fn call(args: &CallArgs) -> anyhow::Result<ExitCode> {
    let arguments: Value = serde_json::from_str(&args.args)
        .map_err(|error| UsageError(format!("--args: not JSON: {error}")))?;
    let tools = approved_tools(
        std::slice::from_ref(&args.tool),
        args.lockfile.as_deref(),
        &args.hub.settings(),
    )?;
    let runner = safeformers_agents::sandboxed::ToolRunner::new()?;
    let mut results = Vec::new();
    for tool in &tools {
        let result = runner
            .call(tool, &arguments)
            .with_context(|| format!("calling tool `{}`", tool.manifest().name))?;
        results.push(serde_json::to_string(&result)?);
    }
    crate::output::print(&format!("{}\n", results.join("\n")))?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(not(feature = "wasm"))]
fn call(args: &CallArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!(
        "tool call {}: this safeformers was built without the WebAssembly sandbox; build it with \
         `cargo build --release -p safeformers-cli --features wasm`",
        args.tool
    )
}

fn inspect(args: &InspectArgs) -> anyhow::Result<ExitCode> {
    let package = open_package(&args.tool, &args.hub.settings())
        .with_context(|| format!("inspecting tool `{}`", args.tool))?;
    if args.json {
        crate::output::print(&ascii_json(&inspect_json(&package))?)?;
    } else {
        crate::output::print(&inspect_text(&package))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn approve(args: &ApproveArgs) -> anyhow::Result<ExitCode> {
    // A branch or tag is refused before anything is fetched.
    let (repo, commit) = parse_pinned(&args.tool)?;
    let grants: Vec<Grant> = args
        .grants
        .iter()
        .map(|flag| Grant::parse(flag))
        .collect::<Result<_, _>>()?;
    let limits = RequestedLimits {
        fuel: args.fuel,
        wall_ms: args.wall_ms,
        memory_bytes: args.memory_bytes,
        output_bytes: args.output_bytes,
    };
    let client = HubClient::new(args.hub.settings())?;
    let request = ToolRequest {
        repo,
        revision: Some(Revision::Commit(commit)),
    };
    let package = fetch_package(&request, &client)
        .with_context(|| format!("approving tool `{}`", args.tool))?;
    let mut entry = approval_entry(&package, &grants, &limits)?;
    entry.ask = args.ask;
    let path = lockfile_path(args.lockfile.as_deref());
    let replaced = record_approval(&path, entry.clone())?;
    let mut report = format!(
        "approved tool `{}` ({}) at commit {}\n",
        package.manifest.name, entry.repo, entry.commit
    );
    if let Some(previous) = replaced {
        let _ = writeln!(
            report,
            "  replaces the approval at commit {}",
            previous.commit
        );
    }
    let _ = writeln!(report, "  tool.json sha256   {}", entry.tool_json_sha256);
    let _ = writeln!(report, "  tool.wasm sha256   {}", entry.tool_wasm_sha256);
    let _ = writeln!(report, "  definition sha256  {}", entry.definition_sha256);
    if entry.grants.is_empty() {
        report.push_str("  grants             none\n");
    }
    for grant in &entry.grants {
        let _ = writeln!(report, "  grant              {}", make_visible(grant));
    }
    if entry.ask {
        report.push_str("  every call asks    yes (--ask)\n");
    }
    let effective = ToolLimits::resolve(&package.manifest.limits, Some(&limits));
    for (field, value) in effective.fields() {
        let _ = writeln!(report, "  limit {field:<13}{value}");
    }
    let _ = writeln!(report, "{}", path.display());
    crate::output::print(&report)?;
    Ok(ExitCode::SUCCESS)
}

/// `tool inspect`'s JSON.
fn inspect_json(package: &ToolPackage) -> Value {
    let manifest = &package.manifest;
    let (repo, revision, commit, folder) = match &package.source {
        ToolSource::Hub {
            repo,
            revision,
            commit,
        } => (
            json!(repo.as_str()),
            json!(revision.as_str()),
            json!(commit.as_str()),
            Value::Null,
        ),
        ToolSource::Folder { dir } => (
            Value::Null,
            Value::Null,
            Value::Null,
            json!(dir.display().to_string()),
        ),
    };
    let fs: Vec<Value> = manifest
        .capabilities
        .fs
        .iter()
        .map(|request| {
            json!({"guest": request.guest, "access": request.access, "purpose": request.purpose})
        })
        .collect();
    let net: Vec<String> = manifest
        .capabilities
        .net
        .iter()
        .map(ToString::to_string)
        .collect();
    json!({
        "repo": repo,
        "revision": revision,
        "commit": commit,
        "folder": folder,
        "name": manifest.name,
        "description": manifest.description,
        "parameters": manifest.parameters,
        "output_schema": manifest.output_schema,
        "capabilities": {"fs": fs, "net": net, "env": manifest.capabilities.env},
        "limits": {"requested": manifest.limits, "effective": manifest.requested_limits()},
        "files": package.files,
        "tool_json_sha256": package.tool_json_sha256,
        "tool_wasm_sha256": package.tool_wasm_sha256,
        "definition_sha256": package.definition_sha256,
    })
}

/// Pretty JSON with every non-ASCII character as a `\uXXXX` escape (a surrogate pair above
/// U+FFFF): still the same JSON, but a zero-width or bidirectional character in a description
/// shows as an escape instead of hiding in the terminal. (serde_json escapes the controls.)
fn ascii_json(value: &Value) -> anyhow::Result<String> {
    let text = serde_json::to_string_pretty(value)?;
    let mut out = String::with_capacity(text.len() + 1);
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0_u16; 2];
            for unit in c.encode_utf16(&mut units) {
                let _ = write!(out, "\\u{unit:04x}");
            }
        }
    }
    out.push('\n');
    Ok(out)
}

/// `tool inspect`'s text: every string from the package through [`make_visible`], multi-line
/// text indented so that no line of it can pass for one of ours.
fn inspect_text(package: &ToolPackage) -> String {
    let manifest = &package.manifest;
    let mut out = String::new();
    let _ = writeln!(out, "tool {}", manifest.name);
    match &package.source {
        ToolSource::Hub {
            repo,
            revision,
            commit,
        } => {
            let _ = writeln!(out, "repo        {repo}@{revision}");
            let _ = writeln!(out, "commit      {commit}");
        }
        ToolSource::Folder { dir } => {
            let _ = writeln!(
                out,
                "folder      {}",
                make_visible(&dir.display().to_string())
            );
            out.push_str("commit      none (a local folder cannot be approved)\n");
        }
    }
    let _ = writeln!(out, "definition  sha256 {}", package.definition_sha256);
    out.push_str("files\n");
    for file in &package.files {
        let _ = writeln!(
            out,
            "  {}  {} bytes  sha256 {}",
            file.path, file.size, file.sha256
        );
    }
    out.push_str("description\n");
    push_indented(&mut out, &make_visible(&manifest.description));
    out.push_str("parameters\n");
    push_indented(&mut out, &make_visible(&pretty(&manifest.parameters)));
    out.push_str("output_schema\n");
    match &manifest.output_schema {
        Some(schema) => push_indented(&mut out, &make_visible(&pretty(schema))),
        None => out.push_str("  none\n"),
    }
    push_capabilities(&mut out, package);
    out.push_str("limits (requested; an approval may lower them)\n");
    for ((field, value), (_, asked)) in manifest
        .requested_limits()
        .fields()
        .into_iter()
        .zip(manifest.limits.fields())
    {
        let note = if asked.is_some() { "" } else { " (default)" };
        let _ = writeln!(out, "  {field:<13}{value}{note}");
    }
    out
}

fn push_capabilities(out: &mut String, package: &ToolPackage) {
    let capabilities = &package.manifest.capabilities;
    out.push_str("capabilities requested (none is given until approved with --grant)\n");
    if capabilities.fs.is_empty() && capabilities.net.is_empty() && capabilities.env.is_empty() {
        out.push_str("  none\n");
    }
    for request in &capabilities.fs {
        let _ = writeln!(
            out,
            "  fs   {} ({}): {}",
            request.guest,
            request.access,
            make_visible(&request.purpose).replace('\n', "\n       ")
        );
    }
    for target in &capabilities.net {
        let _ = writeln!(out, "  net  {target}");
    }
    for name in &capabilities.env {
        let _ = writeln!(out, "  env  {name}");
    }
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

/// Each line of `text` indented by two spaces.
fn push_indented(out: &mut String, text: &str) {
    for line in text.split('\n') {
        let _ = writeln!(out, "  {line}");
    }
}
