//! `safeformers lock REPO[@REV]... [--lockfile PATH] [--include GLOB]... [--allow-pickle]`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use safeformers_hub::lockfile::{Lockfile, lock_snapshot_matching, lockfile_path};

use safeformers_hub::glob::matches_any;

use safeformers::resolve::{RepoRequest, Want, fetch};

use safeformers::Options;
use safeformers::gguf_file::is_gguf_name;

use crate::model::{GgufFileArg, HubArgs, LockArgs};

/// Arguments of `lock`.
#[derive(Debug, Args)]
pub struct LockCommandArgs {
    /// Repos to pin (`org/name` or `org/name@REV`; REV defaults to --revision, else `main`).
    #[arg(required = true, value_name = "REPO[@REV]")]
    repos: Vec<String>,
    /// The lockfile to write (default ./safeformers.lock). Entries of other repos already in it
    /// are kept.
    #[arg(long, value_name = "PATH")]
    lockfile: Option<PathBuf>,
    /// Lock only files matching this pattern (repeatable; default: the files a load reads).
    #[arg(long, value_name = "GLOB")]
    include: Vec<String>,
    /// Also lock pickle-based weights (`*.bin`, `*.pt`, `*.pth`, `*.ckpt`), as a load with
    /// --allow-pickle would read them.
    #[arg(long)]
    allow_pickle: bool,
    /// Lock this GGUF file of a repo holding several (as a load with --gguf-file reads it);
    /// a repo holding one `.gguf` file and no safetensors weights locks that one.
    #[arg(long, value_name = "NAME", conflicts_with = "include")]
    gguf_file: Option<String>,
    #[command(flatten)]
    hub: HubArgs,
}

/// Runs `lock`: resolves and fetches each repo, hashes every file, writes the lockfile.
pub fn run(args: &LockCommandArgs) -> anyhow::Result<ExitCode> {
    let path = lockfile_path(args.lockfile.as_deref());
    let mut lockfile = Lockfile::read_if_exists(&path)?.unwrap_or_default();
    let want = if args.include.is_empty() {
        let options = GgufFileArg {
            gguf_file: args.gguf_file.clone(),
        }
        .apply(Options::new().allow_pickle(args.allow_pickle))?;
        Want::load(&options)?
    } else {
        Want::Files(args.include.clone())
    };
    let patterns = want.patterns();
    // A load without a chosen GGUF file reads the repo's one `.gguf` file when it has no
    // safetensors weights: `fetch` fetched it only then.
    let locks_fetched_gguf = matches!(
        want,
        Want::Load {
            gguf_file: None,
            ..
        }
    );
    let flag = args.hub.revision()?;
    // Locking resolves moving refs on purpose; it never goes through an old lock.
    let unlocked = args.hub.options(&LockArgs::unlocked());
    let client = args.hub.client()?;
    let mut report = String::new();
    for spec in &args.repos {
        let request = RepoRequest::parse(spec, flag.as_ref())?;
        let revision = request.revision_or_main();
        let snapshot = fetch(&request, &unlocked, &want)
            .with_context(|| format!("locking {}@{revision}", request.repo))?;
        let repo_cache = client.cache().repo(&request.repo);
        let is_included = |path: &safeformers_hub::RepoFilePath| {
            let path = path.as_str();
            matches_any(&patterns, path)
                || (locks_fetched_gguf && !path.contains('/') && is_gguf_name(path))
        };
        let locked = lock_snapshot_matching(&repo_cache, &snapshot, &revision, &is_included)?;
        if locked.files.is_empty() {
            anyhow::bail!(
                "{}@{revision} (commit {}): no file matches {patterns:?}; nothing to lock",
                request.repo,
                locked.commit
            );
        }
        report.push_str(&format!(
            "locked {}@{revision} -> commit {} ({} files)\n",
            request.repo,
            locked.commit,
            locked.files.len()
        ));
        lockfile.insert(locked);
    }
    lockfile.write(&path)?;
    report.push_str(&format!("{}\n", path.display()));
    crate::output::print(&report)?;
    Ok(ExitCode::SUCCESS)
}
