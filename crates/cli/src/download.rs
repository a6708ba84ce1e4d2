//! `safeformers download REPO[@REV] [--revision R] [--include GLOB]...`.

use std::process::ExitCode;

use clap::Args;

use safeformers::resolve::{RepoRequest, Want, fetch};

use crate::model::{HubArgs, LockArgs};

/// Arguments of `download`.
#[derive(Debug, Args)]
pub struct DownloadArgs {
    /// The repo (`org/name`, or `org/name@REV`).
    repo: String,
    /// Only files matching this pattern (`*` matches across folders; repeatable; default: all).
    #[arg(long, value_name = "GLOB")]
    include: Vec<String>,
    #[command(flatten)]
    hub: HubArgs,
    #[command(flatten)]
    lock: LockArgs,
}

/// Runs `download`: fetches into the cache (every file verified), then prints the snapshot
/// folder as the last line of stdout.
pub fn run(args: &DownloadArgs) -> anyhow::Result<ExitCode> {
    let request = RepoRequest::parse(&args.repo, args.hub.revision()?.as_ref())?;
    let snapshot = fetch(
        &request,
        &args.hub.options(&args.lock),
        &Want::Files(args.include.clone()),
    )?;
    crate::output::print(&format!(
        "{}@{} -> commit {}\n{}\n",
        request.repo,
        request.revision_or_main(),
        snapshot.commit,
        snapshot.dir.display()
    ))?;
    Ok(ExitCode::SUCCESS)
}
