//! `safeformers mirror --cache DIR [--addr 127.0.0.1:8080] [--header-timeout 10s]
//! [--idle-timeout 60s] [--max-connections 256]`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use safeformers_hub::mirror::{DEFAULT_REQUEST_TIMEOUT, MirrorLimits, MirrorServer};
use safeformers_hub::{HubCache, HubSettings};

/// Largest timeout accepted by the timeout flags: beyond a day a timeout protects nothing.
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// Largest `--max-connections`: more sockets than a process may usually open.
const MAX_CONNECTIONS: usize = 65_536;

/// Arguments of `mirror`.
#[derive(Debug, Args)]
pub struct MirrorArgs {
    /// The cache to serve (default: the hub cache of HF_HUB_CACHE / HF_HOME).
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,
    /// Address to listen on. Loopback by default; anything else serves the cache to the network.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Drop a client that has not sent a request's complete headers this long after their first
    /// byte, or after connecting (slowloris). A duration: `10s`, `500ms`, `2m`.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_timeout)]
    header_timeout: Duration,
    /// Close a connection that has no request for this long, or whose request moves no byte for
    /// this long.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_timeout)]
    idle_timeout: Duration,
    /// Hold at most this many connections; more wait in the listen backlog until one closes.
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = parse_max_connections)]
    max_connections: usize,
}

/// A duration flag: digits and a unit (`ms`, `s`, `m`; seconds when none), more than zero and at
/// most a day.
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    let amount: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a duration such as 10s, 500ms or 2m"))?;
    let duration = match unit {
        "ms" => Duration::from_millis(amount),
        "" | "s" => Duration::from_secs(amount),
        "m" => Duration::from_secs(amount.saturating_mul(60)),
        _ => return Err(format!("`{text}` has an unknown unit (use ms, s or m)")),
    };
    if duration.is_zero() || duration > MAX_TIMEOUT {
        return Err(format!(
            "`{text}` is out of range (more than 0, at most 24h)"
        ));
    }
    Ok(duration)
}

fn parse_max_connections(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(count) if (1..=MAX_CONNECTIONS).contains(&count) => Ok(count),
        _ => Err(format!(
            "`{text}` is not a connection count from 1 to {MAX_CONNECTIONS}"
        )),
    }
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
    let limits = MirrorLimits {
        header_timeout: args.header_timeout,
        idle_timeout: args.idle_timeout,
        max_connections: args.max_connections,
        request_timeout: DEFAULT_REQUEST_TIMEOUT,
    };
    // The hub error already names the address and the OS error: keep it one line, no chain.
    let mirror = MirrorServer::start_with_limits(HubCache::new(&root), args.addr, limits)
        .map_err(|error| anyhow::anyhow!("cannot start the mirror: {error}"))?;
    println!("serving {} at {}", root.display(), mirror.url());
    mirror
        .wait()
        .map_err(|error| anyhow::anyhow!("the mirror stopped: {error}"))?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_take_a_unit_and_stay_in_range() {
        assert_eq!(parse_timeout("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_timeout("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_timeout("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_timeout("2m"), Ok(Duration::from_secs(120)));
        for bad in [
            "",
            "0s",
            "0ms",
            "-1s",
            "1h",
            "1.5s",
            "s",
            "25h",
            "1441m",
            "99999999999999999999s",
        ] {
            assert!(parse_timeout(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_max_connections("1"), Ok(1));
        assert_eq!(parse_max_connections("65536"), Ok(65_536));
        for bad in ["0", "-1", "65537", "x"] {
            assert!(parse_max_connections(bad).is_err(), "{bad}");
        }
    }

    #[derive(Debug, clap::Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: MirrorArgs,
    }

    #[test]
    fn flag_defaults_are_the_library_defaults() {
        use clap::Parser;
        let parsed = Wrapper::parse_from(["mirror"]).args;
        let defaults = MirrorLimits::default();
        assert_eq!(parsed.header_timeout, defaults.header_timeout);
        assert_eq!(parsed.idle_timeout, defaults.idle_timeout);
        assert_eq!(parsed.max_connections, defaults.max_connections);
    }
}
