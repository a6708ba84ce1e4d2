//! `tool.json`: what a tool is, what it asks for, and how much it may use.
//!
//! ```json
//! {
//!   "name": "word_count",
//!   "description": "Counts the words of a text.",
//!   "parameters": {"type": "object", "properties": {"text": {"type": "string"}},
//!                  "required": ["text"]},
//!   "output_schema": {"type": "object", "properties": {"words": {"type": "integer"}}},
//!   "capabilities": {
//!     "fs": [{"guest": "/data", "access": "ro", "purpose": "the documents to count"}],
//!     "net": ["api.example.com:443"],
//!     "env": ["LANG"]
//!   },
//!   "limits": {"fuel": 1000000000, "wall_ms": 2000, "memory_bytes": 67108864,
//!              "output_bytes": 65536}
//! }
//! ```
//!
//! Parsing is strict: an unknown key at any level is an error, and so is a name that is not
//! `^[a-z][a-z0-9_]{0,63}$`, an empty or over-16-KiB description, a schema that [`schema`]
//! refuses, a guest path that is not absolute and normalized (or is listed twice), a `net`
//! entry that is not `host:port` with a DNS name or IP address and a port from 1 to 65535, an
//! environment variable name that is not `^[A-Za-z_][A-Za-z0-9_]*$`, and a limit of 0 or above
//! its hard maximum ([`ToolLimits::MAXIMUM`]). The file is at most 1 MiB. Every error names the
//! file and the field.
//!
//! [`schema`]: crate::schema

use std::collections::BTreeSet;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::canonical_json;
use crate::error::{Result, ToolError};
use crate::schema::{CompiledSchema, MAX_SCHEMA_DEPTH};

/// The manifest's file name in a package.
pub const TOOL_JSON: &str = "tool.json";
/// The component's file name in a package.
pub const TOOL_WASM: &str = "tool.wasm";
/// Largest `tool.json`.
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;
/// Largest description, in bytes of UTF-8.
pub const MAX_DESCRIPTION_BYTES: usize = 16 << 10;
/// Largest `purpose` of a filesystem request, in bytes.
pub const MAX_PURPOSE_BYTES: usize = 4 << 10;
/// Longest guest path.
pub const MAX_GUEST_PATH_BYTES: usize = 1024;
/// Deepest nesting of `tool.json` (a schema is two levels below the top).
const MAX_MANIFEST_DEPTH: usize = MAX_SCHEMA_DEPTH + 2;

/// A parsed and checked `tool.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolManifest {
    /// The tool's name as the model calls it: `^[a-z][a-z0-9_]{0,63}$`.
    pub name: String,
    /// What the tool does, as the model reads it (at most 16 KiB).
    pub description: String,
    /// The JSON Schema of the arguments object (an object schema; checked and compiled).
    pub parameters: Value,
    /// The JSON Schema of the result, if the tool declares one.
    pub output_schema: Option<Value>,
    /// What the tool asks to reach.
    pub capabilities: Capabilities,
    /// The limits the tool asks for (each within [`ToolLimits::MAXIMUM`]).
    pub limits: RequestedLimits,
}

/// The capabilities a manifest requests; none is granted until the user approves it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Capabilities {
    /// Folders, each at a guest path.
    pub fs: Vec<FsRequest>,
    /// Network destinations.
    pub net: Vec<NetTarget>,
    /// Environment variables, by name.
    pub env: Vec<String>,
}

/// A folder the tool asks to see at `guest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsRequest {
    /// Where the tool sees it: absolute, normalized.
    pub guest: String,
    /// Read-only or read-write.
    pub access: FsAccess,
    /// Why, in the author's words (shown at approval).
    pub purpose: String,
}

/// Read-only or read-write access to a folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum FsAccess {
    /// `ro`.
    #[serde(rename = "ro")]
    ReadOnly,
    /// `rw`.
    #[serde(rename = "rw")]
    ReadWrite,
}

impl FsAccess {
    /// `ro` or `rw`.
    pub fn as_str(self) -> &'static str {
        match self {
            FsAccess::ReadOnly => "ro",
            FsAccess::ReadWrite => "rw",
        }
    }
}

impl fmt::Display for FsAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A network destination: a DNS name (lowercase) or an IP address, and a port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NetTarget {
    /// The host: a DNS name in lowercase, an IPv4 address, or an IPv6 address (without
    /// brackets).
    pub host: String,
    /// The port, 1 to 65535.
    pub port: u16,
}

impl NetTarget {
    /// Parses `host:port` (`[v6]:port` for IPv6). DNS names are lowercased; ports are written
    /// without leading zeros.
    ///
    /// ```
    /// use safeformers_agents::manifest::NetTarget;
    /// assert_eq!(NetTarget::parse("API.example.com:443").unwrap().to_string(), "api.example.com:443");
    /// assert_eq!(NetTarget::parse("[::1]:8080").unwrap().host, "::1");
    /// assert!(NetTarget::parse("example.com:0").is_err());
    /// assert!(NetTarget::parse("exa_mple.com:80").is_err());
    /// ```
    pub fn parse(text: &str) -> std::result::Result<NetTarget, String> {
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, port) = rest
                .split_once("]:")
                .ok_or("an IPv6 address is written `[address]:port`")?;
            host.parse::<Ipv6Addr>()
                .map_err(|_| format!("`{host}` is not an IPv6 address"))?;
            (host.to_string(), port)
        } else {
            let (host, port) = text
                .rsplit_once(':')
                .ok_or("expected `host:port` (a port is required)")?;
            if host.contains(':') {
                return Err("an IPv6 address is written `[address]:port`".into());
            }
            (checked_host(host)?, port)
        };
        let number: u16 = port
            .parse()
            .ok()
            .filter(|number: &u16| *number > 0 && number.to_string() == port)
            .ok_or_else(|| format!("port `{port}` is not a number from 1 to 65535"))?;
        Ok(NetTarget { host, port: number })
    }
}

impl fmt::Display for NetTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// An IPv4 address, or a DNS name (lowercased): labels of 1 to 63 letters, digits and inner
/// hyphens, at most 253 bytes, the last label not all digits.
fn checked_host(host: &str) -> std::result::Result<String, String> {
    if host.parse::<Ipv4Addr>().is_ok() {
        return Ok(host.to_string());
    }
    let bad = |why: &str| {
        Err(format!(
            "`{}` is not a DNS name or IP address: {why}",
            host.escape_debug()
        ))
    };
    if host.is_empty() || host.len() > 253 {
        return bad("it must have 1 to 253 characters");
    }
    let labels: Vec<&str> = host.split('.').collect();
    for label in &labels {
        let valid = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !valid {
            return bad("each label has 1 to 63 letters, digits or inner hyphens");
        }
    }
    if labels
        .last()
        .is_some_and(|last| last.bytes().all(|byte| byte.is_ascii_digit()))
    {
        return bad("it is neither an IPv4 address nor a name");
    }
    Ok(host.to_ascii_lowercase())
}

/// The limits a manifest asks for (or an approval sets); a field left out means the default
/// (or, for an approval, the tool's own). The same record the lockfile keeps with an approval.
pub use safeformers_hub::lockfile::LockedToolLimits as RequestedLimits;

/// The limits a call runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ToolLimits {
    /// Wasm fuel per call.
    pub fuel: u64,
    /// Wall-clock milliseconds per call.
    pub wall_ms: u64,
    /// Linear-memory bytes.
    pub memory_bytes: u64,
    /// Bytes of a call's result.
    pub output_bytes: u64,
}

impl ToolLimits {
    /// What a tool gets when its manifest asks for nothing: 2·10^10 fuel (about 4 s of
    /// compute), 10 s, 256 MiB, a 1 MiB result.
    pub const DEFAULT: ToolLimits = ToolLimits {
        fuel: 20_000_000_000,
        wall_ms: 10_000,
        memory_bytes: 256 << 20,
        output_bytes: 1 << 20,
    };

    /// The most a manifest may ask for: 1.2·10^11 fuel, 60 s, 1 GiB, a 16 MiB result.
    pub const MAXIMUM: ToolLimits = ToolLimits {
        fuel: 120_000_000_000,
        wall_ms: 60_000,
        memory_bytes: 1 << 30,
        output_bytes: 16 << 20,
    };

    /// Each limit by name.
    pub fn fields(&self) -> [(&'static str, u64); 4] {
        [
            ("fuel", self.fuel),
            ("wall_ms", self.wall_ms),
            ("memory_bytes", self.memory_bytes),
            ("output_bytes", self.output_bytes),
        ]
    }

    /// The limits in force: what the manifest `requested` (else the default, and never above
    /// [`ToolLimits::MAXIMUM`]), lowered by what the user's approval set. An approval may lower
    /// a limit, never raise it: a larger approved value is ignored (approval itself refuses
    /// one, see [`ToolLimits::check_approval`]).
    ///
    /// ```
    /// use safeformers_agents::manifest::{RequestedLimits, ToolLimits};
    /// let requested = RequestedLimits { wall_ms: Some(30_000), ..Default::default() };
    /// let approved = RequestedLimits { wall_ms: Some(90_000), fuel: Some(1_000), ..Default::default() };
    /// let limits = ToolLimits::resolve(&requested, Some(&approved));
    /// assert_eq!(limits.wall_ms, 30_000);
    /// assert_eq!(limits.fuel, 1_000);
    /// assert_eq!(limits.memory_bytes, ToolLimits::DEFAULT.memory_bytes);
    /// ```
    pub fn resolve(requested: &RequestedLimits, approved: Option<&RequestedLimits>) -> ToolLimits {
        let pick = |asked: Option<u64>, default: u64, maximum: u64, lowered: Option<u64>| {
            let own = asked.unwrap_or(default).min(maximum);
            lowered.map_or(own, |lowered| lowered.min(own))
        };
        let approved = approved.copied().unwrap_or_default();
        let (default, maximum) = (ToolLimits::DEFAULT, ToolLimits::MAXIMUM);
        ToolLimits {
            fuel: pick(requested.fuel, default.fuel, maximum.fuel, approved.fuel),
            wall_ms: pick(
                requested.wall_ms,
                default.wall_ms,
                maximum.wall_ms,
                approved.wall_ms,
            ),
            memory_bytes: pick(
                requested.memory_bytes,
                default.memory_bytes,
                maximum.memory_bytes,
                approved.memory_bytes,
            ),
            output_bytes: pick(
                requested.output_bytes,
                default.output_bytes,
                maximum.output_bytes,
                approved.output_bytes,
            ),
        }
    }

    /// Checks limits a user sets at approval: each at least 1, and none above the tool's own
    /// ([`ToolError::LimitRaised`], a policy refusal).
    pub fn check_approval(requested: &RequestedLimits, approved: &RequestedLimits) -> Result<()> {
        let own = ToolLimits::resolve(requested, None);
        for ((field, value), (_, allowed)) in approved.fields().into_iter().zip(own.fields()) {
            match value {
                Some(0) => return Err(ToolError::ZeroLimit { field }),
                Some(value) if value > allowed => {
                    return Err(ToolError::LimitRaised {
                        field,
                        approved: value,
                        allowed,
                    });
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// `tool.json` as serde reads it, before any check.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    name: String,
    description: String,
    parameters: Value,
    #[serde(default)]
    output_schema: Option<Value>,
    #[serde(default)]
    capabilities: RawCapabilities,
    #[serde(default)]
    limits: RequestedLimits,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCapabilities {
    #[serde(default)]
    fs: Vec<RawFsRequest>,
    #[serde(default)]
    net: Vec<String>,
    #[serde(default)]
    env: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFsRequest {
    guest: String,
    access: FsAccess,
    purpose: String,
}

impl ToolManifest {
    /// Reads and checks the manifest at `path` (a regular file of at most 1 MiB).
    pub fn read(path: &Path) -> Result<ToolManifest> {
        let bytes = safeformers_files::read_capped(path, manifest_cap())?;
        ToolManifest::parse(&bytes, path)
    }

    /// Parses and checks manifest bytes; `path` names the file in errors.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<ToolManifest> {
        let syntax = |reason: String| ToolError::ManifestSyntax {
            path: path.to_path_buf(),
            reason,
        };
        if bytes.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(syntax(format!(
                "{} bytes, over the {MAX_MANIFEST_BYTES}-byte cap for a manifest",
                bytes.len()
            )));
        }
        check_nesting(bytes).map_err(syntax)?;
        let raw: RawManifest =
            serde_json::from_slice(bytes).map_err(|error| syntax(error.to_string()))?;
        let checker = Checker { path };
        checker.name(&raw.name)?;
        checker.description(&raw.description)?;
        CompiledSchema::compile_arguments(&raw.parameters)
            .map_err(|source| checker.schema("parameters", source))?;
        if let Some(schema) = &raw.output_schema {
            CompiledSchema::compile(schema)
                .map_err(|source| checker.schema("output_schema", source))?;
        }
        let capabilities = checker.capabilities(raw.capabilities)?;
        checker.limits(&raw.limits)?;
        Ok(ToolManifest {
            name: raw.name,
            description: raw.description,
            parameters: raw.parameters,
            output_schema: raw.output_schema,
            capabilities,
            limits: raw.limits,
        })
    }

    /// The definition a model sees: `{"name", "description", "parameters", "output_schema"}`
    /// (`output_schema` left out when absent).
    pub fn definition(&self) -> Value {
        let mut definition = serde_json::Map::new();
        definition.insert("name".into(), Value::String(self.name.clone()));
        definition.insert(
            "description".into(),
            Value::String(self.description.clone()),
        );
        definition.insert("parameters".into(), self.parameters.clone());
        if let Some(schema) = &self.output_schema {
            definition.insert("output_schema".into(), schema.clone());
        }
        Value::Object(definition)
    }

    /// The definition hash: SHA-256 of the RFC 8785 canonical JSON of [`Self::definition`].
    /// `path` names the manifest in the (unlikely) error.
    pub fn definition_sha256(&self, path: &Path) -> Result<String> {
        canonical_json::definition_sha256(
            &self.name,
            &self.description,
            &self.parameters,
            self.output_schema.as_ref(),
        )
        .map_err(|source| ToolError::Canonical {
            path: path.to_path_buf(),
            source,
        })
    }

    /// The limits the tool asks for, defaults filled in.
    pub fn requested_limits(&self) -> ToolLimits {
        ToolLimits::resolve(&self.limits, None)
    }
}

/// The read cap of `tool.json`.
pub fn manifest_cap() -> safeformers_files::ReadCap {
    safeformers_files::ReadCap::new("a tool manifest (tool.json)", MAX_MANIFEST_BYTES)
}

/// Refuses JSON text nested deeper than [`MAX_MANIFEST_DEPTH`], in one pass without recursion,
/// before the parser (which recurses) sees it.
fn check_nesting(bytes: &[u8]) -> std::result::Result<(), String> {
    let (mut depth, mut in_string, mut escaped) = (0_usize, false, false);
    for (offset, &byte) in bytes.iter().enumerate() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_MANIFEST_DEPTH {
                    return Err(format!(
                        "nested deeper than {MAX_MANIFEST_DEPTH} levels (at byte {offset}); a \
                         schema may nest {MAX_SCHEMA_DEPTH} levels"
                    ));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// The checks of a manifest's fields, naming the file in every error.
struct Checker<'a> {
    path: &'a Path,
}

impl Checker<'_> {
    fn invalid(&self, field: impl Into<String>, reason: impl Into<String>) -> ToolError {
        ToolError::InvalidManifest {
            path: self.path.to_path_buf(),
            field: field.into(),
            reason: reason.into(),
        }
    }

    fn schema(&self, field: &'static str, source: crate::schema::SchemaError) -> ToolError {
        ToolError::Schema {
            path: self.path.to_path_buf(),
            field,
            source,
        }
    }

    fn name(&self, name: &str) -> Result<()> {
        let mut bytes = name.bytes();
        let valid = bytes.next().is_some_and(|first| first.is_ascii_lowercase())
            && bytes.all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_')
            && name.len() <= 64;
        if valid {
            Ok(())
        } else {
            Err(self.invalid(
                "name",
                format!(
                    "`{}` does not match ^[a-z][a-z0-9_]{{0,63}}$",
                    shorten(name)
                ),
            ))
        }
    }

    fn description(&self, description: &str) -> Result<()> {
        if description.trim().is_empty() {
            return Err(self.invalid("description", "is empty"));
        }
        if description.len() > MAX_DESCRIPTION_BYTES {
            return Err(self.invalid(
                "description",
                format!(
                    "{} bytes, over the {MAX_DESCRIPTION_BYTES}-byte cap",
                    description.len()
                ),
            ));
        }
        Ok(())
    }

    fn capabilities(&self, raw: RawCapabilities) -> Result<Capabilities> {
        let mut fs = Vec::with_capacity(raw.fs.len());
        let mut guests = BTreeSet::new();
        for (index, request) in raw.fs.into_iter().enumerate() {
            let field = format!("capabilities.fs[{index}]");
            check_guest_path(&request.guest)
                .map_err(|reason| self.invalid(format!("{field}.guest"), reason))?;
            if !guests.insert(request.guest.clone()) {
                return Err(self.invalid(
                    format!("{field}.guest"),
                    format!("`{}` is requested twice", request.guest),
                ));
            }
            if request.purpose.trim().is_empty() || request.purpose.len() > MAX_PURPOSE_BYTES {
                return Err(self.invalid(
                    format!("{field}.purpose"),
                    format!("must say why, in 1 to {MAX_PURPOSE_BYTES} bytes"),
                ));
            }
            fs.push(FsRequest {
                guest: request.guest,
                access: request.access,
                purpose: request.purpose,
            });
        }
        let mut net = Vec::with_capacity(raw.net.len());
        for (index, entry) in raw.net.iter().enumerate() {
            let field = format!("capabilities.net[{index}]");
            let target = NetTarget::parse(entry).map_err(|reason| {
                self.invalid(&field, format!("`{}`: {reason}", shorten(entry)))
            })?;
            if net.contains(&target) {
                return Err(self.invalid(field, format!("`{target}` is requested twice")));
            }
            net.push(target);
        }
        let mut env: Vec<String> = Vec::with_capacity(raw.env.len());
        for (index, name) in raw.env.into_iter().enumerate() {
            let field = format!("capabilities.env[{index}]");
            if !is_env_name(&name) {
                return Err(self.invalid(
                    field,
                    format!(
                        "`{}` does not match ^[A-Za-z_][A-Za-z0-9_]*$",
                        shorten(&name)
                    ),
                ));
            }
            if env.contains(&name) {
                return Err(self.invalid(field, format!("`{name}` is requested twice")));
            }
            env.push(name);
        }
        Ok(Capabilities { fs, net, env })
    }

    fn limits(&self, limits: &RequestedLimits) -> Result<()> {
        for ((field, value), (_, maximum)) in limits
            .fields()
            .into_iter()
            .zip(ToolLimits::MAXIMUM.fields())
        {
            match value {
                Some(0) => {
                    return Err(self.invalid(format!("limits.{field}"), "must be at least 1"));
                }
                Some(value) if value > maximum => {
                    return Err(self.invalid(
                        format!("limits.{field}"),
                        format!("{value} is over the hard maximum {maximum}"),
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// A guest path: absolute, normalized (no empty, `.` or `..` segment, no trailing `/` but for
/// `/` itself), at most [`MAX_GUEST_PATH_BYTES`], without controls, `=` or `\`.
pub fn check_guest_path(guest: &str) -> std::result::Result<(), String> {
    let shown = shorten(guest);
    if !guest.starts_with('/') {
        return Err(format!("`{shown}` is not absolute"));
    }
    if guest.len() > MAX_GUEST_PATH_BYTES {
        return Err(format!("over {MAX_GUEST_PATH_BYTES} bytes"));
    }
    if guest
        .chars()
        .any(|c| c.is_control() || c == '=' || c == '\\')
    {
        return Err(format!("`{shown}` holds a control character, `=` or `\\`"));
    }
    if guest != "/"
        && guest[1..]
            .split('/')
            .any(|segment| segment.is_empty() || segment == "." || segment == "..")
    {
        return Err(format!(
            "`{shown}` is not normalized (no `//`, `.`, `..` or trailing `/`)"
        ));
    }
    Ok(())
}

/// `^[A-Za-z_][A-Za-z0-9_]*$`, at most 256 bytes.
pub fn is_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == b'_')
        && bytes.all(|byte| byte.is_ascii_alphanumeric() || byte == b'_')
        && name.len() <= 256
}

/// `text` escaped and cut to 80 characters, for error messages.
fn shorten(text: &str) -> String {
    let mut shown: String = text.chars().take(80).flat_map(char::escape_debug).collect();
    if text.chars().nth(80).is_some() {
        shown.push_str("...");
    }
    shown
}

#[cfg(test)]
mod tests;
