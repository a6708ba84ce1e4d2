//! `safeformers mcp list|approve (--stdio CMDLINE | --http URL)`: review an MCP server's tools and
//! pin the ones approved, by definition hash, in `safeformers.lock` (`[[mcp_tool]]`); and the MCP
//! servers of `agent --mcp-stdio/--mcp-http` (with the `mcp` feature).
//!
//! MCP servers run outside the sandbox. A stdio server is a program started with the user's
//! rights, so it starts only with consent to its exact command line: `--yes-start`, a yes on
//! the terminal, or an approval already recorded in the lockfile for that command line. Its
//! environment holds `PATH` and the variables named by `--env` only.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::UsageError;

/// Arguments of `mcp`.
#[derive(Debug, Args)]
pub struct McpArgs {
    #[command(subcommand)]
    command: McpCommand,
}

#[derive(Debug, Subcommand)]
enum McpCommand {
    /// Start (or reach) a server and show its tools: approved, new (with the whole definition)
    /// or changed since approval (with the diff); each with its definition hash.
    List(ListArgs),
    /// Approve tools of a server as reviewed: `--tool NAME@HASH`, the hash `mcp list` showed.
    /// A tool whose definition changed since is not approved.
    Approve(ApproveArgs),
}

/// Which server, and what it may be given.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// A local program speaking MCP on stdio, as one command line (split like a POSIX shell
    /// does, without expanding anything): e.g. `--stdio "mcp-notes --root /home/me/notes"`.
    #[arg(
        long,
        value_name = "CMDLINE",
        required_unless_present = "http",
        conflicts_with = "http"
    )]
    stdio: Option<String>,
    /// A streamable-HTTP server: `https://...`, or `http://` on a loopback address.
    #[arg(long, value_name = "URL")]
    http: Option<String>,
    /// An environment variable the stdio server gets (its value from this environment);
    /// repeatable. It gets `PATH` and these only.
    #[arg(long = "env", value_name = "NAME")]
    env: Vec<String>,
    /// Consent to start the stdio server without being asked.
    #[arg(long)]
    yes_start: bool,
    /// The lockfile holding the approvals (default ./safeformers.lock).
    #[arg(long, value_name = "PATH")]
    lockfile: Option<PathBuf>,
}

/// Arguments of `mcp list`.
#[derive(Debug, Args)]
struct ListArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Print one JSON object: {"server", "tools": [{"name", "status", "definition_sha256",
    /// "approved_sha256", "ask", "description", "input_schema", "diff"}]}.
    #[arg(long)]
    json: bool,
}

/// Arguments of `mcp approve`.
#[derive(Debug, Args)]
struct ApproveArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// A tool as reviewed: its name and the definition hash `mcp list` showed. Repeatable.
    #[arg(long = "tool", value_name = "NAME@SHA256", required = true)]
    tools: Vec<String>,
    /// Calls of these tools run without asking each time (by default every call of an MCP
    /// tool needs a yes, since it runs outside the sandbox).
    #[arg(long)]
    no_ask: bool,
}

/// Runs `mcp`. The arguments are checked (exit 2) before anything is started.
pub fn run(args: &McpArgs) -> anyhow::Result<ExitCode> {
    match &args.command {
        McpCommand::List(args) => {
            let command = stdio_command(&args.server)?;
            enabled::list(&args.server, command, args.json)
        }
        McpCommand::Approve(args) => {
            let command = stdio_command(&args.server)?;
            let reviewed = args
                .tools
                .iter()
                .map(|spec| parse_reviewed(spec))
                .collect::<Result<Vec<_>, _>>()?;
            enabled::approve(&args.server, command, &reviewed, args.no_ask)
        }
    }
}

/// The program and arguments of `--stdio`, if given.
fn stdio_command(server: &ServerArgs) -> Result<Option<Vec<String>>, UsageError> {
    server.stdio.as_deref().map(parse_stdio).transpose()
}

/// A `--stdio`/`--mcp-stdio` command line as program and arguments.
pub fn parse_stdio(line: &str) -> Result<Vec<String>, UsageError> {
    split_command_line(line).map_err(|reason| UsageError(format!("--stdio {line:?}: {reason}")))
}

/// Splits a command line as a POSIX shell would, without expanding anything: words are
/// separated by blanks; `'...'` is literal; in `"..."` a backslash escapes `"`, `\`, `$` and
/// `` ` ``; elsewhere a backslash escapes the next character.
pub fn split_command_line(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => words.extend(word.take()),
            '\'' => {
                let current = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => current.push(c),
                        None => return Err("a single quote is not closed".into()),
                    }
                }
            }
            '"' => {
                let current = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => current.push(c),
                            Some(c) => {
                                current.push('\\');
                                current.push(c);
                            }
                            None => return Err("a double quote is not closed".into()),
                        },
                        Some(c) => current.push(c),
                        None => return Err("a double quote is not closed".into()),
                    }
                }
            }
            '\\' => match chars.next() {
                Some(c) => word.get_or_insert_with(String::new).push(c),
                None => return Err("the line ends with a backslash".into()),
            },
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    if words.is_empty() {
        return Err("no program is named".into());
    }
    Ok(words)
}

/// `NAME@SHA256` of `mcp approve --tool`.
fn parse_reviewed(spec: &str) -> Result<(&str, &str), UsageError> {
    match spec.rsplit_once('@') {
        Some((name, hash))
            if !name.is_empty()
                && hash.len() == 64
                && hash
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            Ok((name, hash))
        }
        _ => Err(UsageError(format!(
            "--tool {spec:?}: give NAME@SHA256, with the definition hash `safeformers mcp list` \
             shows (64 lowercase hex digits)"
        ))),
    }
}

#[cfg(feature = "mcp")]
pub use enabled::{McpServers, agent_toolboxes};

#[cfg(feature = "mcp")]
mod enabled {
    use std::fmt::Write as _;
    use std::io::{IsTerminal as _, Write as _};
    use std::path::Path;
    use std::process::ExitCode;

    use anyhow::Context as _;
    use safeformers_agents::Toolbox;
    use safeformers_agents::mcp::{
        Consent, McpClient, McpLimits, McpLock, McpServerSpec, McpTool, McpToolbox, ToolStatus,
        visible,
    };
    use safeformers_hub::lockfile::{Lockfile, lockfile_path};
    use serde_json::{Value, json};

    use super::ServerArgs;
    use crate::UsageError;

    /// Consent to start a server: `--yes-start`, an approval on record for this exact server,
    /// or a yes on the terminal. What is started is always printed on stderr first.
    struct StartConsent {
        yes_start: bool,
        on_record: bool,
    }

    impl Consent for StartConsent {
        fn allow_start(&self, spec_display: &str) -> bool {
            let mut stderr = std::io::stderr().lock();
            let _ = writeln!(stderr, "MCP: {spec_display}");
            if self.yes_start {
                let _ = writeln!(stderr, "  started: --yes-start");
                return true;
            }
            if self.on_record {
                let _ = writeln!(
                    stderr,
                    "  started: tools of this exact server are approved in the lockfile"
                );
                return true;
            }
            if !std::io::stdin().is_terminal() {
                let _ = writeln!(
                    stderr,
                    "  not started: stdin is not a terminal to ask on (--yes-start consents)"
                );
                return false;
            }
            let _ = write!(stderr, "Start it? [y/N] ");
            let _ = stderr.flush();
            safeformers_agents::agent::read_yes_on_stdin()
        }
    }

    /// The server of `--stdio` (`command`) or `--http`, with the variables of `--env` taken
    /// from this process.
    fn server_spec(
        command: Option<Vec<String>>,
        http: Option<&str>,
        env: &[String],
    ) -> anyhow::Result<McpServerSpec> {
        if let Some(url) = http {
            return Ok(McpServerSpec::Http { url: url.into() });
        }
        let command =
            command.ok_or_else(|| UsageError("give --stdio CMDLINE or --http URL".into()))?;
        let env = env
            .iter()
            .map(|name| match std::env::var(name) {
                Ok(value) => Ok((name.clone(), value)),
                Err(_) => Err(UsageError(format!(
                    "--env {name}: the variable is not set in this environment"
                ))),
            })
            .collect::<Result<_, _>>()?;
        Ok(McpServerSpec::Stdio { command, env })
    }

    /// Connects to one server with the approvals of `lockfile`.
    fn connect(
        spec: &McpServerSpec,
        lockfile: &Lockfile,
        yes_start: bool,
    ) -> anyhow::Result<McpClient> {
        let lock = McpLock::from_lockfile(lockfile);
        let identity = spec.identity();
        let consent = StartConsent {
            yes_start,
            on_record: lock.tools.iter().any(|entry| entry.server == identity),
        };
        McpClient::connect(spec, &consent, lock, McpLimits::default())
            .with_context(|| format!("MCP server {}", visible(&identity)))
    }

    fn read_lockfile(path: &Path) -> anyhow::Result<Lockfile> {
        Ok(Lockfile::read_if_exists(path)?.unwrap_or_default())
    }

    fn status_word(tool: &McpTool) -> &'static str {
        match tool.status {
            ToolStatus::Approved => "approved",
            ToolStatus::Unapproved => "new",
            ToolStatus::Changed { .. } => "changed",
            ToolStatus::Rejected { .. } => "rejected",
        }
    }

    /// `mcp list`.
    pub fn list(
        server: &ServerArgs,
        command: Option<Vec<String>>,
        as_json: bool,
    ) -> anyhow::Result<ExitCode> {
        let spec = server_spec(command, server.http.as_deref(), &server.env)?;
        let path = lockfile_path(server.lockfile.as_deref());
        let lockfile = read_lockfile(&path)?;
        let client = connect(&spec, &lockfile, server.yes_start)?;
        let text = if as_json {
            let mut text = serde_json::to_string_pretty(&list_json(&client))?;
            text.push('\n');
            text
        } else {
            list_text(&client)
        };
        client.close();
        crate::output::print(&text)?;
        Ok(ExitCode::SUCCESS)
    }

    fn list_json(client: &McpClient) -> Value {
        let tools: Vec<Value> = client
            .tools()
            .iter()
            .map(|tool| {
                let entry = client.lock().entry(client.server(), &tool.definition.name);
                json!({
                    "name": tool.definition.name,
                    "status": status_word(tool),
                    "definition_sha256": tool.definition_hash,
                    "approved_sha256": entry.map(|entry| entry.definition_sha256.clone()),
                    "ask": entry.map(|entry| entry.ask),
                    "description": tool.definition.description,
                    "input_schema": tool.definition.input_schema,
                    "diff": tool.diff(),
                    "rejected": match &tool.status {
                        ToolStatus::Rejected { reason } => Some(reason.clone()),
                        _ => None,
                    },
                })
            })
            .collect();
        json!({"server": client.server(), "tools": tools})
    }

    fn list_text(client: &McpClient) -> String {
        let mut out = format!(
            "MCP server {} (runs outside the sandbox)\n",
            visible(client.server())
        );
        if client.tools().is_empty() {
            out.push_str("  no tools\n");
        }
        for tool in client.tools() {
            let _ = writeln!(
                out,
                "\n[{}] {}  {}",
                status_word(tool),
                visible(&tool.definition.name),
                tool.definition_hash
            );
            match &tool.status {
                ToolStatus::Approved => {}
                ToolStatus::Unapproved => push_indented(&mut out, &tool.review()),
                ToolStatus::Changed { .. } => {
                    out.push_str(
                        "  changed since it was approved; blocked until approved again:\n",
                    );
                    push_indented(&mut out, &tool.diff().unwrap_or_default());
                }
                ToolStatus::Rejected { reason } => {
                    let _ = writeln!(out, "  rejected: {reason}");
                }
            }
        }
        out
    }

    fn push_indented(out: &mut String, text: &str) {
        for line in text.lines() {
            let _ = writeln!(out, "    {line}");
        }
    }

    /// `mcp approve`.
    pub fn approve(
        server: &ServerArgs,
        command: Option<Vec<String>>,
        reviewed: &[(&str, &str)],
        no_ask: bool,
    ) -> anyhow::Result<ExitCode> {
        let spec = server_spec(command, server.http.as_deref(), &server.env)?;
        let path = lockfile_path(server.lockfile.as_deref());
        let mut lockfile = read_lockfile(&path)?;
        let mut client = connect(&spec, &lockfile, server.yes_start)?;
        for (name, hash) in reviewed {
            client
                .approve(name, hash, !no_ask)
                .with_context(|| format!("approving the MCP tool {:?}", visible(name)))?;
        }
        client.lock().write_into(&mut lockfile);
        let server_identity = client.server().to_owned();
        client.close();
        lockfile.write(&path)?;
        let mut report = String::new();
        for (name, hash) in reviewed {
            let _ = writeln!(
                report,
                "approved MCP tool {} of {}\n  definition sha256  {hash}\n  every call asks    {}",
                visible(name),
                visible(&server_identity),
                if no_ask { "no (--no-ask)" } else { "yes" }
            );
        }
        let _ = writeln!(report, "{}", path.display());
        crate::output::print(&report)?;
        Ok(ExitCode::SUCCESS)
    }

    /// The MCP servers of an agent run.
    #[derive(Debug, Clone, Default)]
    pub struct McpServers {
        /// `--mcp-stdio` command lines.
        pub stdio: Vec<String>,
        /// `--mcp-http` URLs.
        pub http: Vec<String>,
        /// `--mcp-env` variable names, given to every stdio server.
        pub env: Vec<String>,
        /// `--yes-start`.
        pub yes_start: bool,
    }

    /// One toolbox per server, offering its approved tools. Tools that are new or changed
    /// since approval are not offered; each is named on stderr (a changed one with its diff).
    pub fn agent_toolboxes(
        servers: &McpServers,
        lockfile: Option<&Path>,
    ) -> anyhow::Result<Vec<Box<dyn Toolbox>>> {
        let lockfile = read_lockfile(&lockfile_path(lockfile))?;
        let stdio = servers.stdio.iter().map(|line| {
            let command = super::parse_stdio(line)?;
            server_spec(Some(command), None, &servers.env)
        });
        let http = servers
            .http
            .iter()
            .map(|url| server_spec(None, Some(url), &[]));
        let mut toolboxes: Vec<Box<dyn Toolbox>> = Vec::new();
        for spec in stdio.chain(http) {
            let client = connect(&spec?, &lockfile, servers.yes_start)?;
            report_blocked(&client);
            toolboxes.push(Box::new(McpToolbox::new(client)));
        }
        Ok(toolboxes)
    }

    fn report_blocked(client: &McpClient) {
        let mut stderr = std::io::stderr().lock();
        for tool in client.tools() {
            let name = visible(&tool.definition.name);
            let _ = match &tool.status {
                ToolStatus::Approved => Ok(()),
                ToolStatus::Unapproved => writeln!(
                    stderr,
                    "MCP tool {name} is not approved and not offered (safeformers mcp list, \
                     then mcp approve --tool {name}@{})",
                    tool.definition_hash
                ),
                ToolStatus::Changed { .. } => writeln!(
                    stderr,
                    "MCP tool {name} changed since it was approved; blocked until approved \
                     again. What changed:\n{}",
                    tool.diff().unwrap_or_default()
                ),
                ToolStatus::Rejected { reason } => {
                    writeln!(stderr, "MCP tool {name} is rejected: {reason}")
                }
            };
        }
    }
}

#[cfg(not(feature = "mcp"))]
mod enabled {
    use std::process::ExitCode;

    use super::ServerArgs;

    fn not_built() -> anyhow::Error {
        anyhow::anyhow!(
            "mcp: this safeformers was built without the MCP client; build it with `cargo build \
             --release -p safeformers-cli --features mcp`"
        )
    }

    pub fn list(_: &ServerArgs, _: Option<Vec<String>>, _: bool) -> anyhow::Result<ExitCode> {
        Err(not_built())
    }

    pub fn approve(
        _: &ServerArgs,
        _: Option<Vec<String>>,
        _: &[(&str, &str)],
        _: bool,
    ) -> anyhow::Result<ExitCode> {
        Err(not_built())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_split_like_a_shell_without_expansion() {
        let split = |line: &str| split_command_line(line).unwrap();
        assert_eq!(split("a b  c"), ["a", "b", "c"]);
        assert_eq!(split("a 'b c' \"d e\""), ["a", "b c", "d e"]);
        assert_eq!(
            split(r#"a "x\"y" 'it''s' b\ c"#),
            ["a", "x\"y", "its", "b c"]
        );
        assert_eq!(split(r#"echo "$HOME" '~' *"#), ["echo", "$HOME", "~", "*"]);
        assert_eq!(split(r#"a "\n" ''"#), ["a", "\\n", ""]);
        for bad in ["", "   ", "a 'b", "a \"b", "a \\"] {
            assert!(split_command_line(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn reviewed_tools_need_a_full_hash() {
        let hash = "a".repeat(64);
        assert_eq!(
            parse_reviewed(&format!("echo@{hash}")).unwrap(),
            ("echo", hash.as_str())
        );
        for bad in [
            "echo".to_owned(),
            format!("@{hash}"),
            format!("echo@{}", &hash[..63]),
            format!("echo@{}", hash.to_uppercase()),
        ] {
            assert!(parse_reviewed(&bad).is_err(), "{bad}");
        }
    }
}
