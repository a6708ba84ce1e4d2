//! `safeformers.lock`: Cargo.lock for models.
//!
//! A lockfile pins each repo a project loads to one commit, and every file of that commit to its
//! size and SHA-256. A load with `--locked` resolves only through it: no ref is looked up, and a
//! snapshot that differs in any byte from what was locked is refused
//! ([`HubError::LockMismatch`], a policy refusal).
//!
//! ```toml
//! version = 1
//!
//! [[repo]]
//! repo = "sentence-transformers/all-MiniLM-L6-v2"
//! revision = "main"
//! commit = "c9745ed1d9f207416be6d2e6f8de32d1f16199bf"
//!
//! [[repo.file]]
//! path = "config.json"
//! size = 612
//! sha256 = "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"
//! ```
//!
//! It also records the tool packages the user approved (`safeformers tool approve`): each
//! `[[tool]]` pins a tool repo to one commit, the SHA-256 of its `tool.json` and `tool.wasm`, the
//! hash of the definition a model sees (`definition_sha256`, the SHA-256 of the RFC 8785
//! canonical JSON of name, description and schemas), the capabilities granted (in the syntax of
//! `--grant`, host folders absolute), and the limits the user lowered, if any. A tool whose
//! files or definition differ from its entry is refused; the `safeformers-agents` crate checks
//! that, this module only keeps the entries.
//!
//! ```toml
//! [[tool]]
//! repo = "org/word-count"
//! commit = "0123456789abcdef0123456789abcdef01234567"
//! tool_json_sha256 = "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"
//! tool_wasm_sha256 = "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
//! definition_sha256 = "5f2b3c0e0d1e6c4b1f0a9d8e7c6b5a4938271605f4e3d2c1b0a9f8e7d6c5b4a3"
//! grants = ["env:LANG", "fs:/data=/home/me/notes:ro"]
//!
//! [tool.limits]
//! wall_ms = 2000
//! ```
//!
//! `ask = true` in a `[[tool]]` (`tool approve --ask`) means each call also needs the user's yes.
//!
//! Approved tools of MCP servers (`safeformers mcp approve`) are `[[mcp_tool]]` entries: the
//! server's identity (`stdio:` and its exact command line, or `http:` and its URL), the tool's
//! name, the SHA-256 of the RFC 8785 canonical JSON of its definition, that definition (kept only
//! to show a diff when it changes), and whether each call asks.
//!
//! ```toml
//! [[mcp_tool]]
//! server = "stdio:mcp-notes --root /home/me/notes"
//! tool = "search"
//! definition_sha256 = "5f2b3c0e0d1e6c4b1f0a9d8e7c6b5a4938271605f4e3d2c1b0a9f8e7d6c5b4a3"
//! definition = '{"description":"Searches the notes.","inputSchema":{"type":"object"},"name":"search"}'
//! ask = true
//! ```
//!
//! A lockfile without tools reads as before, and one with only tools has no `[[repo]]`; both are
//! `version = 1`.
//!
//! Reading is strict: an unknown field, a duplicate repo, file or tool, a hash that is not 64
//! lowercase hex digits, a commit that is not 40, a file path that could escape a folder, a grant
//! that is not `fs:`, `net:` or `env:` text, or a limit of 0 is an [`HubError::InvalidLockfile`].
//! Writing is deterministic: repos and tools sorted by id, files by path, grants as text.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cache::{RepoCache, Snapshot, sha256_file, write_atomically};
use safeformers_files::{caps, read_capped_string, read_capped_string_if_exists};

use crate::error::{HubError, Result};
use crate::names::{CommitHash, RepoFilePath};
use crate::repo::{RepoId, Revision};

/// The lockfile's conventional name, looked for in the current folder.
pub const LOCKFILE_NAME: &str = "safeformers.lock";

/// The format version written (and the only one read).
pub const LOCKFILE_VERSION: u32 = 1;

/// The first lines of every written lockfile.
const HEADER: &str = "# safeformers.lock: written by `safeformers lock`, `safeformers tool \
approve` and `safeformers mcp approve`; do not edit by hand.\n\
# Loads with `--locked` use exactly these commits and files (sizes and sha256); tools run only as \
approved here.\n\n";

/// Longest grant text accepted in a `[[tool]]` entry (a host folder path is most of it).
const MAX_GRANT_LEN: usize = 4096;

/// A lockfile: the pinned repos and the approved tools, each sorted by id.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Lockfile {
    repos: Vec<LockedRepo>,
    tools: Vec<LockedTool>,
    mcp_tools: Vec<LockedMcpTool>,
}

/// One approved tool package: the commit, the hashes it was approved with, and what the user
/// granted. `safeformers-agents` refuses the tool when anything differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockedTool {
    /// The tool's repo.
    pub repo: RepoId,
    /// The commit approved (a tool is only ever approved at a commit, never a branch or tag).
    pub commit: CommitHash,
    /// SHA-256 of `tool.json` at that commit, 64 lowercase hex digits.
    pub tool_json_sha256: String,
    /// SHA-256 of `tool.wasm` at that commit.
    pub tool_wasm_sha256: String,
    /// SHA-256 of the RFC 8785 canonical JSON of the definition the model sees (name,
    /// description, parameters, output_schema).
    pub definition_sha256: String,
    /// The grants, in the syntax of `--grant` (`fs:/data=/abs/dir:ro`, `net:host:443`,
    /// `env:NAME`), sorted, each once.
    pub grants: Vec<String>,
    /// Limits the user set at approval (each may only lower the tool's own), if any.
    pub limits: Option<LockedToolLimits>,
    /// Whether each call of the tool also needs the user's yes, bound to the call's arguments
    /// and the agent's session (`tool approve --ask`).
    pub ask: bool,
}

/// One approved tool of an MCP server (`safeformers mcp approve`): trust on first use, made
/// explicit. The tool is offered only while its server sends the definition whose hash is
/// recorded here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockedMcpTool {
    /// The server's identity: `stdio:` and its exact command line, or `http:` and its URL.
    pub server: String,
    /// The tool's name on that server.
    pub tool: String,
    /// SHA-256 of the RFC 8785 canonical JSON of the approved definition (name, description,
    /// input schema): the only thing an approval checks.
    pub definition_sha256: String,
    /// The approved definition as canonical JSON, kept to show what changed when the server
    /// later sends another one. Never trusted for approval: only the hash is.
    pub definition: String,
    /// Whether each call also needs the user's yes (the default for MCP tools, which run
    /// outside the sandbox).
    pub ask: bool,
}

/// Limits recorded with an approval; a field left out keeps the tool's own limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedToolLimits {
    /// Most wasm fuel (instructions, roughly) per call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    /// Most wall-clock milliseconds per call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall_ms: Option<u64>,
    /// Most linear-memory bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// Most bytes of a call's result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_bytes: Option<u64>,
}

impl LockedToolLimits {
    /// Each limit by name, with its value if set.
    pub fn fields(&self) -> [(&'static str, Option<u64>); 4] {
        [
            ("fuel", self.fuel),
            ("wall_ms", self.wall_ms),
            ("memory_bytes", self.memory_bytes),
            ("output_bytes", self.output_bytes),
        ]
    }

    /// Whether no limit is set.
    pub fn is_empty(&self) -> bool {
        *self == LockedToolLimits::default()
    }
}

/// One repo pinned to one commit, with every file of its snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockedRepo {
    /// The repo.
    pub repo: RepoId,
    /// The revision as it was requested when locked (`main`, a tag, or a commit).
    pub revision: Revision,
    /// The commit it resolved to; `--locked` loads use this and nothing else.
    pub commit: CommitHash,
    /// Every file of the snapshot, sorted by path.
    pub files: Vec<LockedFile>,
}

/// One file of a locked snapshot.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LockedFile {
    /// Its path in the repo.
    pub path: RepoFilePath,
    /// Its size in bytes.
    pub size: u64,
    /// The SHA-256 of its content, 64 lowercase hex digits.
    pub sha256: String,
}

/// The lockfile as TOML, before any check.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLockfile {
    version: u32,
    #[serde(default, rename = "repo", skip_serializing_if = "Vec::is_empty")]
    repos: Vec<RawRepo>,
    #[serde(default, rename = "tool", skip_serializing_if = "Vec::is_empty")]
    tools: Vec<RawTool>,
    #[serde(default, rename = "mcp_tool", skip_serializing_if = "Vec::is_empty")]
    mcp_tools: Vec<RawMcpTool>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMcpTool {
    server: String,
    tool: String,
    definition_sha256: String,
    definition: String,
    ask: bool,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTool {
    repo: String,
    commit: String,
    tool_json_sha256: String,
    tool_wasm_sha256: String,
    definition_sha256: String,
    grants: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    limits: Option<LockedToolLimits>,
    #[serde(default, skip_serializing_if = "is_false")]
    ask: bool,
}

fn is_false(value: &bool) -> bool {
    !*value
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRepo {
    repo: String,
    revision: String,
    commit: String,
    #[serde(default, rename = "file")]
    files: Vec<RawFile>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    path: String,
    size: u64,
    sha256: String,
}

impl Lockfile {
    /// An empty lockfile.
    pub fn new() -> Lockfile {
        Lockfile::default()
    }

    /// Reads and checks `path`.
    pub fn read(path: &Path) -> Result<Lockfile> {
        let text = read_capped_string(path, caps::LOCKFILE)?;
        Lockfile::parse(&text, path)
    }

    /// Reads `path` if it exists; `None` when it does not.
    pub fn read_if_exists(path: &Path) -> Result<Option<Lockfile>> {
        match read_capped_string_if_exists(path, caps::LOCKFILE)? {
            Some(text) => Lockfile::parse(&text, path).map(Some),
            None => Ok(None),
        }
    }

    /// Parses and checks lockfile text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Lockfile> {
        let invalid = |reason: String| HubError::InvalidLockfile {
            path: path.to_path_buf(),
            reason,
        };
        let raw: RawLockfile =
            toml::from_str(text).map_err(|error| invalid(one_line(&error.to_string())))?;
        if raw.version != LOCKFILE_VERSION {
            return Err(invalid(format!(
                "version {} is not supported (this safeformers reads version {LOCKFILE_VERSION})",
                raw.version
            )));
        }
        let mut repos = Vec::with_capacity(raw.repos.len());
        let mut seen_repos = BTreeSet::new();
        for raw_repo in raw.repos {
            let locked = parse_repo(raw_repo).map_err(invalid)?;
            if !seen_repos.insert(locked.repo.clone()) {
                return Err(invalid(format!("repo `{}` is listed twice", locked.repo)));
            }
            repos.push(locked);
        }
        repos.sort_by(|a, b| a.repo.cmp(&b.repo));
        let mut tools = Vec::with_capacity(raw.tools.len());
        let mut seen_tools = BTreeSet::new();
        for raw_tool in raw.tools {
            let locked = parse_tool(raw_tool).map_err(invalid)?;
            if !seen_tools.insert(locked.repo.clone()) {
                return Err(invalid(format!("tool `{}` is listed twice", locked.repo)));
            }
            tools.push(locked);
        }
        tools.sort_by(|a, b| a.repo.cmp(&b.repo));
        let mut mcp_tools = Vec::with_capacity(raw.mcp_tools.len());
        let mut seen_mcp_tools = BTreeSet::new();
        for raw_mcp_tool in raw.mcp_tools {
            let locked = parse_mcp_tool(raw_mcp_tool).map_err(invalid)?;
            if !seen_mcp_tools.insert((locked.server.clone(), locked.tool.clone())) {
                return Err(invalid(format!(
                    "mcp_tool `{}` of `{}` is listed twice",
                    locked.tool, locked.server
                )));
            }
            mcp_tools.push(locked);
        }
        mcp_tools.sort_by(mcp_order);
        Ok(Lockfile {
            repos,
            tools,
            mcp_tools,
        })
    }

    /// The lockfile as TOML text: a comment header, `version`, then the repos sorted by id and
    /// their files sorted by path. The same content always gives the same bytes.
    pub fn to_toml(&self) -> String {
        let raw = RawLockfile {
            version: LOCKFILE_VERSION,
            repos: self
                .repos
                .iter()
                .map(|locked| {
                    let mut files: Vec<&LockedFile> = locked.files.iter().collect();
                    files.sort();
                    RawRepo {
                        repo: locked.repo.as_str().to_string(),
                        revision: locked.revision.as_str().to_string(),
                        commit: locked.commit.as_str().to_string(),
                        files: files
                            .into_iter()
                            .map(|file| RawFile {
                                path: file.path.as_str().to_string(),
                                size: file.size,
                                sha256: file.sha256.clone(),
                            })
                            .collect(),
                    }
                })
                .collect(),
            tools: self.tools.iter().map(raw_tool).collect(),
            mcp_tools: self
                .mcp_tools
                .iter()
                .map(|locked| RawMcpTool {
                    server: locked.server.clone(),
                    tool: locked.tool.clone(),
                    definition_sha256: locked.definition_sha256.clone(),
                    definition: locked.definition.clone(),
                    ask: locked.ask,
                })
                .collect(),
        };
        // Serialising plain strings and integers cannot fail; an empty body would only be
        // rejected on the next read, never silently accepted.
        let body = toml::to_string(&raw).unwrap_or_default();
        format!("{HEADER}{body}")
    }

    /// Writes the lockfile to `path` atomically (a temporary file, then a rename).
    pub fn write(&self, path: &Path) -> Result<()> {
        write_atomically(path, self.to_toml().as_bytes())
    }

    /// The pinned repos, sorted by id.
    pub fn repos(&self) -> &[LockedRepo] {
        &self.repos
    }

    /// The entry of `repo`, if it is locked.
    pub fn get(&self, repo: &RepoId) -> Option<&LockedRepo> {
        self.repos.iter().find(|locked| &locked.repo == repo)
    }

    /// Adds `locked`, replacing any entry of the same repo; keeps the repos sorted.
    pub fn insert(&mut self, locked: LockedRepo) {
        self.repos.retain(|existing| existing.repo != locked.repo);
        self.repos.push(locked);
        self.repos.sort_by(|a, b| a.repo.cmp(&b.repo));
    }

    /// The approved tools, sorted by repo id.
    pub fn tools(&self) -> &[LockedTool] {
        &self.tools
    }

    /// The approval of the tool in `repo`, if there is one.
    pub fn tool(&self, repo: &RepoId) -> Option<&LockedTool> {
        self.tools.iter().find(|locked| &locked.repo == repo)
    }

    /// Records an approval, replacing any earlier one of the same repo (at whatever commit);
    /// keeps the tools sorted and each entry's grants sorted, each once. Repo entries are not
    /// touched.
    pub fn insert_tool(&mut self, mut locked: LockedTool) {
        locked.grants.sort();
        locked.grants.dedup();
        if locked.limits.is_some_and(|limits| limits.is_empty()) {
            locked.limits = None;
        }
        self.tools.retain(|existing| existing.repo != locked.repo);
        self.tools.push(locked);
        self.tools.sort_by(|a, b| a.repo.cmp(&b.repo));
    }

    /// The approved MCP tools, sorted by server then tool.
    pub fn mcp_tools(&self) -> &[LockedMcpTool] {
        &self.mcp_tools
    }

    /// Records an MCP tool's approval, replacing any earlier one of the same tool of the same
    /// server. Other entries are not touched.
    pub fn insert_mcp_tool(&mut self, locked: LockedMcpTool) {
        self.mcp_tools.retain(|existing| {
            (&existing.server, &existing.tool) != (&locked.server, &locked.tool)
        });
        self.mcp_tools.push(locked);
        self.mcp_tools.sort_by(mcp_order);
    }

    /// The entry a `--locked` load of `repo` must use. `requested` is the revision the user
    /// asked for, if any: it must be the revision that was locked (or its commit), since the
    /// lockfile says nothing about any other.
    pub fn entry_for(
        &self,
        repo: &RepoId,
        requested: Option<&Revision>,
        lockfile: &Path,
    ) -> Result<&LockedRepo> {
        let mismatch = |reason: String| HubError::LockMismatch {
            lockfile: lockfile.to_path_buf(),
            reason,
        };
        let locked = self
            .get(repo)
            .ok_or_else(|| mismatch(format!("repo `{repo}` is not in the lockfile (--locked)")))?;
        if let Some(requested) = requested {
            let same =
                requested == &locked.revision || requested.as_commit() == Some(&locked.commit);
            if !same {
                return Err(mismatch(format!(
                    "repo `{repo}` is locked at revision `{}` (commit {}), not `{requested}`",
                    locked.revision, locked.commit
                )));
            }
        }
        Ok(locked)
    }
}

/// Checks one `[[repo]]` entry: its id, revision, commit and files. The error is the reason,
/// without the lockfile's path.
fn parse_repo(raw_repo: RawRepo) -> std::result::Result<LockedRepo, String> {
    let repo = RepoId::parse(&raw_repo.repo).map_err(|error| error.to_string())?;
    let revision =
        Revision::parse(&raw_repo.revision).map_err(|error| format!("repo `{repo}`: {error}"))?;
    let commit = CommitHash::parse(&raw_repo.commit)
        .map_err(|_| format!("repo `{repo}`: commit is not 40 lowercase hex digits"))?;
    if let Revision::Commit(requested) = &revision
        && requested != &commit
    {
        return Err(format!(
            "repo `{repo}`: revision {requested} is a commit, but commit is {commit}"
        ));
    }
    let mut files = Vec::with_capacity(raw_repo.files.len());
    let mut seen_files = BTreeSet::new();
    for raw_file in raw_repo.files {
        let file_path = RepoFilePath::parse(&raw_file.path)
            .map_err(|error| format!("repo `{repo}`: {error}"))?;
        if !seen_files.insert(file_path.clone()) {
            return Err(format!("repo `{repo}`: file `{file_path}` is listed twice"));
        }
        if !is_sha256_hex(&raw_file.sha256) {
            return Err(format!(
                "repo `{repo}`: file `{file_path}`: sha256 is not 64 lowercase hex digits"
            ));
        }
        files.push(LockedFile {
            path: file_path,
            size: raw_file.size,
            sha256: raw_file.sha256,
        });
    }
    files.sort();
    Ok(LockedRepo {
        repo,
        revision,
        commit,
        files,
    })
}

/// Checks one `[[tool]]` entry: its id, commit, hashes, grants (their form only: what they
/// mean is checked against the tool's manifest when it is loaded) and limits.
fn parse_tool(raw: RawTool) -> std::result::Result<LockedTool, String> {
    let repo = RepoId::parse(&raw.repo).map_err(|error| format!("tool: {error}"))?;
    let commit = CommitHash::parse(&raw.commit)
        .map_err(|_| format!("tool `{repo}`: commit is not 40 lowercase hex digits"))?;
    for (field, value) in [
        ("tool_json_sha256", &raw.tool_json_sha256),
        ("tool_wasm_sha256", &raw.tool_wasm_sha256),
        ("definition_sha256", &raw.definition_sha256),
    ] {
        if !is_sha256_hex(value) {
            return Err(format!(
                "tool `{repo}`: {field} is not 64 lowercase hex digits"
            ));
        }
    }
    let mut seen = BTreeSet::new();
    for grant in &raw.grants {
        check_grant_text(grant).map_err(|reason| format!("tool `{repo}`: grant: {reason}"))?;
        if !seen.insert(grant.as_str()) {
            return Err(format!("tool `{repo}`: grant `{grant}` is listed twice"));
        }
    }
    if let Some(limits) = &raw.limits {
        for (field, value) in limits.fields() {
            if value == Some(0) {
                return Err(format!("tool `{repo}`: limits.{field} is 0"));
            }
        }
    }
    let mut grants = raw.grants;
    grants.sort();
    Ok(LockedTool {
        repo,
        commit,
        tool_json_sha256: raw.tool_json_sha256,
        tool_wasm_sha256: raw.tool_wasm_sha256,
        definition_sha256: raw.definition_sha256,
        grants,
        limits: raw.limits.filter(|limits| !limits.is_empty()),
        ask: raw.ask,
    })
}

/// Longest MCP server identity (a command line or URL) and tool name accepted.
const MAX_MCP_SERVER_LEN: usize = 8192;
const MAX_MCP_TOOL_LEN: usize = 128;
/// Longest recorded MCP definition (a description of 16 KiB and a schema of 1 MiB, escaped).
const MAX_MCP_DEFINITION_LEN: usize = 2 << 20;

fn mcp_order(a: &LockedMcpTool, b: &LockedMcpTool) -> std::cmp::Ordering {
    (&a.server, &a.tool).cmp(&(&b.server, &b.tool))
}

/// Checks one `[[mcp_tool]]` entry: a server identity and tool name of bounded printable text,
/// and a hash of 64 lowercase hex digits. The definition is kept as text for display only.
fn parse_mcp_tool(raw: RawMcpTool) -> std::result::Result<LockedMcpTool, String> {
    let printable = |text: &str, max: usize| {
        !text.is_empty() && text.len() <= max && !text.chars().any(char::is_control)
    };
    let shown: String = raw
        .tool
        .chars()
        .take(80)
        .flat_map(char::escape_debug)
        .collect();
    if !printable(&raw.server, MAX_MCP_SERVER_LEN)
        || !(raw.server.starts_with("stdio:") || raw.server.starts_with("http:"))
    {
        return Err(format!(
            "mcp_tool `{shown}`: server is not `stdio:COMMAND` or `http:URL` of printable text              up to {MAX_MCP_SERVER_LEN} bytes"
        ));
    }
    if !printable(&raw.tool, MAX_MCP_TOOL_LEN) {
        return Err(format!(
            "mcp_tool `{shown}`: tool is not a printable name of 1 to {MAX_MCP_TOOL_LEN} bytes"
        ));
    }
    if !is_sha256_hex(&raw.definition_sha256) {
        return Err(format!(
            "mcp_tool `{shown}`: definition_sha256 is not 64 lowercase hex digits"
        ));
    }
    if raw.definition.len() > MAX_MCP_DEFINITION_LEN {
        return Err(format!(
            "mcp_tool `{shown}`: definition is over {MAX_MCP_DEFINITION_LEN} bytes"
        ));
    }
    Ok(LockedMcpTool {
        server: raw.server,
        tool: raw.tool,
        definition_sha256: raw.definition_sha256,
        definition: raw.definition,
        ask: raw.ask,
    })
}

/// The form a grant must have in the lockfile: `fs:`, `net:` or `env:` and something, one line
/// of printable text.
fn check_grant_text(grant: &str) -> std::result::Result<(), String> {
    let shown: String = grant
        .chars()
        .take(80)
        .flat_map(char::escape_debug)
        .collect();
    if grant.len() > MAX_GRANT_LEN {
        return Err(format!("`{shown}...` is over {MAX_GRANT_LEN} bytes"));
    }
    if grant.chars().any(char::is_control) {
        return Err(format!("`{shown}` holds a control character"));
    }
    let known = ["fs:", "net:", "env:"]
        .iter()
        .any(|prefix| grant.len() > prefix.len() && grant.starts_with(prefix));
    if !known {
        return Err(format!(
            "`{shown}` is not `fs:GUEST=HOSTDIR:ro|rw`, `net:HOST:PORT` or `env:NAME`"
        ));
    }
    Ok(())
}

/// A tool entry as TOML.
fn raw_tool(locked: &LockedTool) -> RawTool {
    let mut grants = locked.grants.clone();
    grants.sort();
    grants.dedup();
    RawTool {
        repo: locked.repo.as_str().to_string(),
        commit: locked.commit.as_str().to_string(),
        tool_json_sha256: locked.tool_json_sha256.clone(),
        tool_wasm_sha256: locked.tool_wasm_sha256.clone(),
        definition_sha256: locked.definition_sha256.clone(),
        grants,
        limits: locked.limits.filter(|limits| !limits.is_empty()),
        ask: locked.ask,
    }
}

/// Locks a cached snapshot: every file of `snapshot` is hashed with SHA-256 (whatever its blob
/// name says, so a lock never trusts the cache's bookkeeping). `revision` is recorded as the
/// revision that was requested.
pub fn lock_snapshot(
    repo_cache: &RepoCache,
    snapshot: &Snapshot,
    revision: &Revision,
) -> Result<LockedRepo> {
    lock_snapshot_matching(repo_cache, snapshot, revision, &|_| true)
}

/// [`lock_snapshot`] for the files of the snapshot for which `include` holds (the files a load
/// reads), so that what else happens to be cached at that commit does not end up in the lock.
pub fn lock_snapshot_matching(
    repo_cache: &RepoCache,
    snapshot: &Snapshot,
    revision: &Revision,
    include: &dyn Fn(&RepoFilePath) -> bool,
) -> Result<LockedRepo> {
    let mut files = Vec::new();
    for file in repo_cache.snapshot_files(&snapshot.commit)? {
        if !include(&file.path) {
            continue;
        }
        let sha256 = sha256_file(&file.local_path)?;
        // The size of what was hashed: metadata taken after hashing could disagree only if the
        // file is being rewritten, which the next `--locked` load would catch anyway.
        files.push(LockedFile {
            path: file.path,
            size: file.size,
            sha256,
        });
    }
    files.sort();
    Ok(LockedRepo {
        repo: snapshot.repo.clone(),
        revision: revision.clone(),
        commit: snapshot.commit.clone(),
        files,
    })
}

impl LockedRepo {
    /// The locked files for which `is_used` holds (the files a load would read).
    pub fn used_files<'a>(
        &'a self,
        is_used: &'a dyn Fn(&RepoFilePath) -> bool,
    ) -> impl Iterator<Item = &'a LockedFile> + 'a {
        self.files.iter().filter(move |file| is_used(&file.path))
    }

    /// Checks that `snapshot` is exactly what was locked, for every file a load would read
    /// (`is_used`): the same commit; each such locked file present with the same size and
    /// SHA-256; and no such file in the snapshot that the lockfile does not list. Every
    /// difference is named in the [`HubError::LockMismatch`].
    pub fn check_snapshot(
        &self,
        repo_cache: &RepoCache,
        snapshot: &Snapshot,
        is_used: &dyn Fn(&RepoFilePath) -> bool,
        lockfile: &Path,
    ) -> Result<()> {
        let mismatch = |reason: String| HubError::LockMismatch {
            lockfile: lockfile.to_path_buf(),
            reason,
        };
        if snapshot.repo != self.repo {
            return Err(mismatch(format!(
                "the snapshot is of repo `{}`, the entry of `{}`",
                snapshot.repo, self.repo
            )));
        }
        if snapshot.commit != self.commit {
            return Err(mismatch(format!(
                "repo `{}` resolved to commit {}, but is locked at {}",
                self.repo, snapshot.commit, self.commit
            )));
        }
        let cached = repo_cache.snapshot_files(&snapshot.commit)?;
        let mut problems = Vec::new();
        for locked in self.used_files(is_used) {
            let Some(file) = cached.iter().find(|file| file.path == locked.path) else {
                problems.push(format!("`{}` is missing", locked.path));
                continue;
            };
            if file.size != locked.size {
                problems.push(format!(
                    "`{}` has {} bytes, locked {}",
                    locked.path, file.size, locked.size
                ));
                continue;
            }
            let sha256 = sha256_file(&file.local_path)?;
            if sha256 != locked.sha256 {
                problems.push(format!(
                    "`{}` has sha256 {sha256}, locked {}",
                    locked.path, locked.sha256
                ));
            }
        }
        for file in cached.iter().filter(|file| is_used(&file.path)) {
            if !self.files.iter().any(|locked| locked.path == file.path) {
                problems.push(format!("`{}` is not in the lockfile", file.path));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(mismatch(format!(
                "repo `{}` at {}: {}",
                self.repo,
                self.commit,
                problems.join("; ")
            )))
        }
    }
}

/// The lockfile a command uses: `explicit` if given, else `safeformers.lock` in the current
/// folder.
pub fn lockfile_path(explicit: Option<&Path>) -> PathBuf {
    explicit
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(LOCKFILE_NAME))
}

fn is_sha256_hex(value: &str) -> bool {
    value.len() == 64
        && value
            .bytes()
            .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::indexing_slicing)]
    use super::*;
    use crate::cache::{HubCache, import_folder};
    use std::fs;

    fn temp_dir(label: &str) -> PathBuf {
        safeformers_testkit::scratch_dir(&format!("lock-{label}"))
    }

    const SHA: &str = "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41";
    const COMMIT: &str = "c9745ed1d9f207416be6d2e6f8de32d1f16199bf";

    fn sample(extra: &str) -> String {
        format!(
            "version = 1\n\n[[repo]]\nrepo = \"org/model\"\nrevision = \"main\"\ncommit = \
             \"{COMMIT}\"\n{extra}\n[[repo.file]]\npath = \"config.json\"\nsize = 2\nsha256 = \
             \"{SHA}\"\n"
        )
    }

    fn parse(text: &str) -> Result<Lockfile> {
        Lockfile::parse(text, Path::new("safeformers.lock"))
    }

    fn reason(text: &str) -> String {
        match parse(text) {
            Err(HubError::InvalidLockfile { reason, .. }) => reason,
            other => panic!("expected InvalidLockfile, got {other:?}"),
        }
    }

    #[test]
    fn round_trips_deterministically() {
        let lock = parse(&sample("")).unwrap();
        assert_eq!(lock.repos().len(), 1);
        let entry = &lock.repos()[0];
        assert_eq!(entry.repo.as_str(), "org/model");
        assert_eq!(entry.files[0].path.as_str(), "config.json");
        let text = lock.to_toml();
        assert!(text.starts_with("# safeformers.lock"), "{text}");
        assert_eq!(parse(&text).unwrap(), lock);
        assert_eq!(parse(&text).unwrap().to_toml(), text);
    }

    #[test]
    fn writing_sorts_repos_and_files() {
        let file = |path: &str| LockedFile {
            path: RepoFilePath::parse(path).unwrap(),
            size: 1,
            sha256: SHA.to_string(),
        };
        let entry = |repo: &str, files: Vec<LockedFile>| LockedRepo {
            repo: RepoId::parse(repo).unwrap(),
            revision: Revision::main(),
            commit: CommitHash::parse(COMMIT).unwrap(),
            files,
        };
        let mut a = Lockfile::new();
        a.insert(entry("org/b", vec![file("b"), file("a")]));
        a.insert(entry("org/a", vec![file("x")]));
        let mut b = Lockfile::new();
        b.insert(entry("org/a", vec![file("x")]));
        b.insert(entry("org/b", vec![file("b"), file("a")]));
        let text = a.to_toml();
        assert_eq!(parse(&text).unwrap().to_toml(), b.to_toml());
        let org_a = text.find("org/a").unwrap();
        let org_b = text.find("org/b").unwrap();
        assert!(org_a < org_b, "{text}");
        let reread = parse(&text).unwrap();
        let paths: Vec<&str> = reread.repos()[1]
            .files
            .iter()
            .map(|file| file.path.as_str())
            .collect();
        assert_eq!(paths, ["a", "b"]);
    }

    #[test]
    fn strict_reading() {
        assert!(reason(&sample("extra = 1")).contains("extra"));
        assert!(reason(&format!("{}\nunknown = true\n", "version = 1")).contains("unknown"));
        assert!(reason(&sample("").replace("version = 1", "version = 2")).contains("version 2"));
        assert!(reason(&sample("").replace(SHA, &SHA.to_uppercase())).contains("sha256"));
        assert!(reason(&sample("").replace(SHA, &SHA[..63])).contains("sha256"));
        assert!(reason(&sample("").replace(COMMIT, "main")).contains("commit"));
        assert!(reason(&sample("").replace("config.json", "../x")).contains("`..`"));
        assert!(reason(&sample("").replace("config.json", "/etc/passwd")).contains("absolute"));
        assert!(reason(&sample("").replace("config.json", "C:x")).contains("colon"));
        assert!(reason(&sample("").replace("org/model", "a/b/c")).contains("more than one"));
        let twice_file = format!(
            "{}\n[[repo.file]]\npath = \"config.json\"\nsize = 3\nsha256 = \"{SHA}\"\n",
            sample("")
        );
        assert!(reason(&twice_file).contains("listed twice"));
        let twice_repo = format!("{}{}", sample(""), sample("").replace("version = 1\n", ""));
        assert!(reason(&twice_repo).contains("listed twice"));
        assert!(reason(&sample("").replace("size = 2", "size = -2")).contains("size"));
        let pinned_elsewhere = sample("").replace("\"main\"", &format!("\"{}\"", "ab".repeat(20)));
        assert!(reason(&pinned_elsewhere).contains("is a commit"));
        assert!(parse("version = 1\n").unwrap().repos().is_empty());
    }

    #[test]
    fn snapshots_are_checked_against_their_entry() {
        let source = temp_dir("source");
        fs::write(source.join("config.json"), b"{}").unwrap();
        fs::write(source.join("model.safetensors"), b"weights").unwrap();
        fs::write(source.join("README.md"), b"readme").unwrap();
        let cache = HubCache::new(temp_dir("cache"));
        let repo = RepoId::parse("org/model").unwrap();
        let snapshot = import_folder(&cache, &source, &repo, "main").unwrap();
        let repo_cache = cache.repo(&repo);
        let locked = lock_snapshot(&repo_cache, &snapshot, &Revision::main()).unwrap();
        assert_eq!(locked.files.len(), 3);
        assert_eq!(locked.files[1].path.as_str(), "config.json");
        assert_eq!(locked.files[1].size, 2);
        assert_eq!(
            locked.files[1].sha256,
            "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        let lockfile = Path::new("safeformers.lock");
        let all: &dyn Fn(&RepoFilePath) -> bool = &|_| true;
        locked
            .check_snapshot(&repo_cache, &snapshot, all, lockfile)
            .unwrap();

        // Same commit, tampered content (size kept): named, with both hashes.
        let blob = snapshot.dir.join("config.json");
        let blob = fs::canonicalize(blob).unwrap();
        fs::write(&blob, b"[]").unwrap();
        let error = locked
            .check_snapshot(&repo_cache, &snapshot, all, lockfile)
            .unwrap_err();
        assert!(error.is_policy_refusal());
        let message = error.to_string();
        assert!(message.contains("`config.json` has sha256"), "{message}");

        // A different commit is refused before any file is read.
        fs::write(source.join("config.json"), b"{\"a\": 1}").unwrap();
        let changed = import_folder(&cache, &source, &repo, "main").unwrap();
        let message = locked
            .check_snapshot(&repo_cache, &changed, all, lockfile)
            .unwrap_err()
            .to_string();
        assert!(message.contains("is locked at"), "{message}");

        // Files the load would not read are not checked; a used file the lock lacks is refused.
        let mut partial = locked.clone();
        partial
            .files
            .retain(|file| file.path.as_str() != "README.md");
        fs::write(&blob, b"{}").unwrap();
        let only_weights: &dyn Fn(&RepoFilePath) -> bool = &|path| path.as_str() != "README.md";
        partial
            .check_snapshot(&repo_cache, &snapshot, only_weights, lockfile)
            .unwrap();
        let message = partial
            .check_snapshot(&repo_cache, &snapshot, all, lockfile)
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("`README.md` is not in the lockfile"),
            "{message}"
        );
    }

    const TOOL_COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

    fn tool_sample(extra: &str) -> String {
        format!(
            "[[tool]]\nrepo = \"org/tool\"\ncommit = \"{TOOL_COMMIT}\"\ntool_json_sha256 = \
             \"{SHA}\"\ntool_wasm_sha256 = \"{SHA}\"\ndefinition_sha256 = \"{SHA}\"\ngrants = \
             [\"net:example.com:443\", \"env:LANG\"]\n{extra}"
        )
    }

    fn locked_tool(repo: &str, grants: &[&str]) -> LockedTool {
        LockedTool {
            repo: RepoId::parse(repo).unwrap(),
            commit: CommitHash::parse(TOOL_COMMIT).unwrap(),
            tool_json_sha256: SHA.to_string(),
            tool_wasm_sha256: SHA.to_string(),
            definition_sha256: SHA.to_string(),
            grants: grants.iter().map(|grant| grant.to_string()).collect(),
            limits: None,
            ask: false,
        }
    }

    #[test]
    fn ask_is_written_only_when_set() {
        let mut lock = Lockfile::new();
        lock.insert_tool(locked_tool("org/a", &[]));
        assert!(!lock.to_toml().contains("ask"), "{}", lock.to_toml());
        let mut asking = locked_tool("org/a", &[]);
        asking.ask = true;
        lock.insert_tool(asking);
        let text = lock.to_toml();
        assert!(text.contains("ask = true"), "{text}");
        assert!(parse(&text).unwrap().tools()[0].ask);
        assert!(reason(&text.replace("ask = true", "ask = \"yes\"")).contains("ask"));
    }

    fn mcp_sample(server: &str, tool: &str, ask: bool) -> String {
        format!(
            "[[mcp_tool]]\nserver = \"{server}\"\ntool = \"{tool}\"\ndefinition_sha256 = \
             \"{SHA}\"\ndefinition = '{{\"name\":\"{tool}\"}}'\nask = {ask}\n"
        )
    }

    #[test]
    fn mcp_tools_round_trip_sorted_beside_the_rest() {
        let text = format!(
            "{}\n{}\n{}\n{}",
            sample(""),
            tool_sample(""),
            mcp_sample("stdio:server --b", "zeta", true),
            mcp_sample("http:https://mcp.example/", "alpha", false),
        );
        let lock = parse(&text).unwrap();
        let names: Vec<(&str, bool)> = lock
            .mcp_tools()
            .iter()
            .map(|entry| (entry.tool.as_str(), entry.ask))
            .collect();
        assert_eq!(names, [("alpha", false), ("zeta", true)]);
        let written = lock.to_toml();
        assert_eq!(parse(&written).unwrap(), lock);
        assert_eq!(parse(&written).unwrap().to_toml(), written);
        let mut again = lock.clone();
        let mut replaced = lock.mcp_tools()[1].clone();
        replaced.definition_sha256 = "b".repeat(64);
        again.insert_mcp_tool(replaced);
        assert_eq!(again.mcp_tools().len(), 2);
        assert_eq!(again.mcp_tools()[1].definition_sha256, "b".repeat(64));
        assert_eq!(again.tools(), lock.tools());
        assert_eq!(again.repos(), lock.repos());
    }

    #[test]
    fn strict_reading_of_mcp_tools() {
        let one =
            |server: &str, tool: &str| format!("version = 1\n{}", mcp_sample(server, tool, true));
        assert!(parse(&one("stdio:x", "echo")).is_ok());
        assert!(reason(&one("ssh:x", "echo")).contains("server is not"));
        assert!(reason(&one("stdio:x", "")).contains("tool is not"));
        assert!(reason(&one("stdio:x\\u0007", "echo")).contains("server is not"));
        let twice = format!(
            "{}{}",
            one("stdio:x", "echo"),
            mcp_sample("stdio:x", "echo", false)
        );
        assert!(reason(&twice).contains("listed twice"));
        let short = one("stdio:x", "echo").replace(SHA, &SHA[..10]);
        assert!(reason(&short).contains("definition_sha256"));
        let no_ask = one("stdio:x", "echo").replace("ask = true\n", "");
        assert!(reason(&no_ask).contains("ask"));
        let extra = format!("{}granted = true\n", one("stdio:x", "echo"));
        assert!(reason(&extra).contains("granted"));
    }

    #[test]
    fn tools_round_trip_beside_repos() {
        let text = format!(
            "{}\n{}\n[tool.limits]\nwall_ms = 2000\n",
            sample(""),
            tool_sample("")
        );
        let lock = parse(&text).unwrap();
        assert_eq!(lock.repos().len(), 1);
        let tool = lock.tool(&RepoId::parse("org/tool").unwrap()).unwrap();
        assert_eq!(tool.grants, ["env:LANG", "net:example.com:443"]);
        assert_eq!(
            tool.limits,
            Some(LockedToolLimits {
                wall_ms: Some(2000),
                ..LockedToolLimits::default()
            })
        );
        let written = lock.to_toml();
        assert_eq!(parse(&written).unwrap(), lock);
        assert_eq!(parse(&written).unwrap().to_toml(), written);
        assert!(written.contains("[[tool]]") && written.contains("[tool.limits]"));
        // The repo entries are written exactly as a lockfile without tools writes them.
        let mut without = lock.clone();
        without.tools.clear();
        assert_eq!(without.to_toml(), parse(&sample("")).unwrap().to_toml());
        assert!(written.starts_with(&without.to_toml()), "{written}");
        // A lockfile of tools only.
        let only_tools = parse(&format!("version = 1\n{}", tool_sample(""))).unwrap();
        assert!(only_tools.repos().is_empty());
        assert!(!only_tools.to_toml().contains("[[repo]]"));
        assert_eq!(parse(&only_tools.to_toml()).unwrap(), only_tools);
    }

    #[test]
    fn approving_a_tool_replaces_its_entry_and_keeps_the_rest() {
        let mut lock = parse(&sample("")).unwrap();
        let repos = lock.repos().to_vec();
        lock.insert_tool(locked_tool("org/b", &["env:B", "env:A", "env:A"]));
        lock.insert_tool(locked_tool("org/a", &[]));
        let mut again = locked_tool("org/b", &["env:C"]);
        again.limits = Some(LockedToolLimits::default());
        lock.insert_tool(again);
        assert_eq!(lock.repos(), repos.as_slice());
        let names: Vec<&str> = lock.tools().iter().map(|tool| tool.repo.as_str()).collect();
        assert_eq!(names, ["org/a", "org/b"]);
        assert_eq!(lock.tools()[1].grants, ["env:C"]);
        assert_eq!(lock.tools()[1].limits, None, "empty limits are no limits");
        let text = lock.to_toml();
        assert!(text.contains("grants = []"), "{text}");
        assert_eq!(parse(&text).unwrap(), lock);
        let mut sorted = locked_tool("org/b", &["env:B", "env:A", "env:A"]);
        let mut other = Lockfile::new();
        other.insert_tool(sorted.clone());
        sorted.grants = vec!["env:A".into(), "env:B".into()];
        assert_eq!(other.tools()[0], sorted);
    }

    #[test]
    fn strict_reading_of_tools() {
        let tool = |extra: &str| format!("version = 1\n{}", tool_sample(extra));
        assert!(parse(&tool("")).is_ok());
        assert!(reason(&tool("approver = \"me\"\n")).contains("approver"));
        assert!(reason(&tool("[tool.limits]\nfuel = 0\n")).contains("limits.fuel is 0"));
        assert!(reason(&tool("[tool.limits]\ncpu = 1\n")).contains("cpu"));
        assert!(reason(&tool("").replace(TOOL_COMMIT, "main")).contains("commit"));
        let short = tool("").replacen(SHA, &SHA[..10], 1);
        assert!(reason(&short).contains("tool_json_sha256"), "{short}");
        let no_grants = tool("").replace("grants = [\"net:example.com:443\", \"env:LANG\"]\n", "");
        assert!(reason(&no_grants).contains("grants"));
        for (grant, needle) in [
            ("env:LANG", "listed twice"),
            ("ssh:key", "not `fs:"),
            ("env:", "not `fs:"),
            ("env:A\\u0007", "control character"),
        ] {
            let text = tool("").replace("\"env:LANG\"", &format!("\"env:LANG\", \"{grant}\""));
            assert!(reason(&text).contains(needle), "{grant}: {}", reason(&text));
        }
        let twice = format!("{}{}", tool(""), tool_sample(""));
        assert!(reason(&twice).contains("tool `org/tool` is listed twice"));
    }

    #[test]
    fn entries_follow_the_requested_revision() {
        let lock = parse(&sample("")).unwrap();
        let repo = RepoId::parse("org/model").unwrap();
        let path = Path::new("safeformers.lock");
        assert!(lock.entry_for(&repo, None, path).is_ok());
        assert!(lock.entry_for(&repo, Some(&Revision::main()), path).is_ok());
        let commit = Revision::parse(COMMIT).unwrap();
        assert!(lock.entry_for(&repo, Some(&commit), path).is_ok());
        let other = Revision::parse("v2").unwrap();
        let error = lock.entry_for(&repo, Some(&other), path).unwrap_err();
        assert!(error.is_policy_refusal());
        let missing = RepoId::parse("org/other").unwrap();
        let message = lock
            .entry_for(&missing, None, path)
            .unwrap_err()
            .to_string();
        assert!(message.contains("not in the lockfile"), "{message}");
    }
}
