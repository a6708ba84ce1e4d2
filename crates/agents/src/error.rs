//! The agents crate's error type.

use std::path::PathBuf;

use safeformers_hub::HubError;

use crate::canonical_json::CanonicalJsonError;
use crate::schema::SchemaError;

/// Result with [`ToolError`].
pub type Result<T, E = ToolError> = std::result::Result<T, E>;

/// What went wrong reading, checking, approving or loading a tool package. Refusals by security
/// policy (a grant the tool did not request, a branch where a commit is needed, a tool that is
/// not approved or differs from its approval, a schema that refers outside itself) are told
/// apart by [`ToolError::is_policy_refusal`] (CLI exit code 3); malformed `--grant` values by
/// [`ToolError::is_usage_error`] (exit code 2); everything else is bad input (exit code 1).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ToolError {
    /// `tool.json` is not JSON of the manifest's shape (an unknown key, a missing one, a wrong
    /// type, too deep).
    #[error("{}: {reason}", path.display())]
    ManifestSyntax {
        /// The manifest.
        path: PathBuf,
        /// What serde or the depth check said.
        reason: String,
    },

    /// A field of `tool.json` has a value the format does not allow.
    #[error("{}: field `{field}`: {reason}", path.display())]
    InvalidManifest {
        /// The manifest.
        path: PathBuf,
        /// The field (`name`, `capabilities.fs[0].guest`, `limits.wall_ms`).
        field: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A JSON Schema of the manifest that cannot be used: too deep or large, not a valid
    /// schema, or (a policy refusal) referring outside itself.
    #[error("{}: field `{field}`: {source}", path.display())]
    Schema {
        /// The manifest.
        path: PathBuf,
        /// `parameters` or `output_schema`.
        field: &'static str,
        /// What is wrong.
        source: SchemaError,
    },

    /// The definition could not be canonicalized (RFC 8785) for hashing.
    #[error("{}: the definition cannot be hashed: {source}", path.display())]
    Canonical {
        /// The manifest.
        path: PathBuf,
        /// Why.
        source: CanonicalJsonError,
    },

    /// A `--grant` value that is not `fs:GUEST=HOSTDIR[:ro|rw]`, `net:HOST:PORT` or `env:NAME`.
    #[error("--grant `{grant}`: {reason}")]
    InvalidGrant {
        /// The grant as given (escaped).
        grant: String,
        /// What is wrong.
        reason: String,
    },

    /// A grant the tool's manifest did not request, or wider than requested (`rw` for an `ro`
    /// request).
    #[error("--grant `{grant}` refused: {reason}")]
    GrantNotRequested {
        /// The grant.
        grant: String,
        /// Why.
        reason: String,
    },

    /// The host folder of a filesystem grant is missing or not a folder.
    #[error("--grant `{grant}`: {}: {reason}", path.display())]
    GrantHostDir {
        /// The grant.
        grant: String,
        /// The host folder.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// A recorded grant whose host folder now resolves elsewhere than when it was approved (a
    /// folder replaced by a link).
    #[error(
        "{}: tool `{repo}`: grant `{grant}` now resolves to {}; approve the tool again if that \
         is intended",
        lockfile.display(),
        now.display()
    )]
    GrantMoved {
        /// The lockfile.
        lockfile: PathBuf,
        /// The tool.
        repo: String,
        /// The grant recorded.
        grant: String,
        /// Where its host folder resolves now.
        now: PathBuf,
    },

    /// An approval that would raise a limit above the tool's own.
    #[error(
        "limit `{field}` = {approved} refused: the tool asks for {allowed} at most, and an \
         approval may only lower a limit"
    )]
    LimitRaised {
        /// Which limit.
        field: &'static str,
        /// The value asked for at approval.
        approved: u64,
        /// The tool's own (requested or default) value.
        allowed: u64,
    },

    /// A limit given at approval that is 0.
    #[error("limit `{field}` must be at least 1")]
    ZeroLimit {
        /// Which limit.
        field: &'static str,
    },

    /// A tool spec that is neither a folder nor `org/name[@REV]`.
    #[error("`{spec}`: {reason}")]
    InvalidSpec {
        /// The spec as given.
        spec: String,
        /// What is wrong.
        reason: String,
    },

    /// An approval names a branch or tag (or nothing): a tool is approved at a commit only.
    #[error(
        "`{spec}`: a tool is approved at a 40-hex commit only, and {what}; run `safeformers tool \
         inspect` to see its commit, then approve `REPO@COMMIT`"
    )]
    NotPinned {
        /// The spec as given.
        spec: String,
        /// What it named instead (``main` is a branch or tag`, `no `@COMMIT` is given`).
        what: String,
    },

    /// A file the package must have is missing.
    #[error("{source_name}: the tool package has no `{file}`")]
    MissingFile {
        /// The repo (`org/name@commit`) or folder.
        source_name: String,
        /// `tool.json` or `tool.wasm`.
        file: &'static str,
    },

    /// The tool is not in the lockfile (or not at the commit asked for).
    #[error(
        "{}: tool `{repo}` is not approved{detail}; inspect it with `safeformers tool inspect`, \
         then approve it with `safeformers tool approve {repo}@COMMIT`",
        lockfile.display()
    )]
    NotApproved {
        /// The lockfile.
        lockfile: PathBuf,
        /// The tool.
        repo: String,
        /// More (`at commit X (approved: Y)`), or empty.
        detail: String,
    },

    /// The tool differs from its approval: every difference is named.
    #[error(
        "{}: tool `{repo}` at {commit} differs from its approval: {differences}; refusing it \
         (inspect it, and approve it again if the change is intended)",
        lockfile.display()
    )]
    ApprovalMismatch {
        /// The lockfile.
        lockfile: PathBuf,
        /// The tool.
        repo: String,
        /// The approved commit.
        commit: String,
        /// What differs (`tool.wasm sha256 X, approved Y; ...`).
        differences: String,
    },

    /// A recorded grant or limit that cannot be used (the lockfile was edited by hand).
    #[error("{}: tool `{repo}`: {reason}", lockfile.display())]
    InvalidApproval {
        /// The lockfile.
        lockfile: PathBuf,
        /// The tool.
        repo: String,
        /// What is wrong.
        reason: String,
    },

    /// The Hub or the cache (its own policy refusals stay refusals).
    #[error(transparent)]
    Hub(#[from] HubError),

    /// A file that is not a regular file, is over its cap, or could not be read.
    #[error(transparent)]
    File(#[from] safeformers_files::FileError),
}

impl ToolError {
    /// Whether this is a refusal by security policy (exit code 3 in the CLI).
    pub fn is_policy_refusal(&self) -> bool {
        match self {
            ToolError::Schema { source, .. } => source.is_policy_refusal(),
            ToolError::GrantNotRequested { .. }
            | ToolError::GrantMoved { .. }
            | ToolError::LimitRaised { .. }
            | ToolError::NotPinned { .. }
            | ToolError::NotApproved { .. }
            | ToolError::ApprovalMismatch { .. } => true,
            ToolError::Hub(error) => error.is_policy_refusal(),
            _ => false,
        }
    }

    /// Whether this is a malformed flag value (exit code 2 in the CLI).
    pub fn is_usage_error(&self) -> bool {
        matches!(
            self,
            ToolError::InvalidGrant { .. } | ToolError::ZeroLimit { .. }
        )
    }
}
