//! `safeformers mirror --cache DIR [--addr 127.0.0.1:8080]`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use safeformers_hub::mirror::MirrorServer;
use safeformers_hub::{HubCache, HubSettings};

/// Arguments of `mirror`.
#[derive(Debug, Args)]
pub struct MirrorArgs {
    /// The cache to serve (default: the hub cache of HF_HUB_CACHE / HF_HOME).
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,
    /// Address to listen on. Loopback by default; anything else serves the cache to the network.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
}

/// Runs `mirror` until the process is killed.
pub fn run(args: &MirrorArgs) -> anyhow::Result<ExitCode> {
    let root = match &args.cache {
        Some(dir) => dir.clone(),
        None => HubSettings::from_env().cache_dir,
    };
    anyhow::ensure!(
        root.is_dir(),
        "{}: no such cache folder (pass --cache DIR, or set HF_HUB_CACHE)",
        root.display()
    );
    if !args.addr.ip().is_loopback() {
        eprintln!(
            "warning: listening on {}, not a loopback address: every file in the cache is readable \
             by anyone who can reach this port (the mirror has no authentication)",
            args.addr
        );
    }
    // The hub error already names the address and the OS error: keep it one line, no chain.
    let mirror = MirrorServer::start(HubCache::new(&root), args.addr)
        .map_err(|error| anyhow::anyhow!("cannot start the mirror: {error}"))?;
    println!("serving {} at {}", root.display(), mirror.url());
    mirror
        .wait()
        .map_err(|error| anyhow::anyhow!("the mirror stopped: {error}"))?;
    Ok(ExitCode::SUCCESS)
}
