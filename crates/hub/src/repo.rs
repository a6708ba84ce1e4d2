//! Repo ids and revisions, validated as the Hub validates them.

use std::fmt;
use std::str::FromStr;

use crate::error::HubError;
use crate::names::{CommitHash, printable};

/// What kind of repo: it decides the cache folder prefix and the URL prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum RepoType {
    /// A model (the default).
    #[default]
    Model,
    /// A dataset.
    Dataset,
    /// A Space.
    Space,
}

impl RepoType {
    /// The plural used in cache folder names and API paths (`models`, `datasets`, `spaces`).
    pub fn plural(self) -> &'static str {
        match self {
            RepoType::Model => "models",
            RepoType::Dataset => "datasets",
            RepoType::Space => "spaces",
        }
    }

    /// Prefix of `resolve` URLs (`""`, `"datasets/"`, `"spaces/"`).
    pub fn url_prefix(self) -> &'static str {
        match self {
            RepoType::Model => "",
            RepoType::Dataset => "datasets/",
            RepoType::Space => "spaces/",
        }
    }
}

/// Longest repo name part, as on the Hub.
const MAX_NAME_LEN: usize = 96;

/// A repo id: `name` or `org/name`, each part 1 to 96 of `[A-Za-z0-9_.-]`, not starting or
/// ending with `-` or `.`, with no `--` (it is the separator in cache folder names) and no
/// `..` — the rules of `huggingface_hub.validate_repo_id`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoId {
    repo_type: RepoType,
    id: String,
}

impl RepoId {
    /// Parses a model repo id.
    pub fn parse(id: &str) -> Result<RepoId, HubError> {
        RepoId::parse_typed(id, RepoType::Model)
    }

    /// Parses a repo id of the given type.
    pub fn parse_typed(id: &str, repo_type: RepoType) -> Result<RepoId, HubError> {
        let refuse = |reason: &'static str| HubError::InvalidRepoId {
            id: printable(id),
            reason,
        };
        let parts: Vec<&str> = id.split('/').collect();
        if parts.len() > 2 {
            return Err(refuse("it has more than one `/`"));
        }
        if id.contains("--") {
            return Err(refuse("`--` is not allowed"));
        }
        if id.contains("..") {
            return Err(refuse("`..` is not allowed"));
        }
        for part in parts {
            if part.is_empty() || part.len() > MAX_NAME_LEN {
                return Err(refuse("each part must be 1 to 96 characters"));
            }
            if !part
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-' | b'.'))
            {
                return Err(refuse("only letters, digits, `_`, `-` and `.` are allowed"));
            }
            if part.starts_with(['-', '.']) || part.ends_with(['-', '.']) {
                return Err(refuse("a part cannot start or end with `-` or `.`"));
            }
        }
        Ok(RepoId {
            repo_type,
            id: id.to_string(),
        })
    }

    /// The id as written (`org/name`).
    pub fn as_str(&self) -> &str {
        &self.id
    }

    /// The repo's type.
    pub fn repo_type(&self) -> RepoType {
        self.repo_type
    }

    /// The cache folder name: `models--org--name`, as `huggingface_hub` names it.
    pub fn cache_folder_name(&self) -> String {
        format!(
            "{}--{}",
            self.repo_type().plural(),
            self.id.replace('/', "--")
        )
    }

    /// Parses a cache folder name (`models--org--name`) back into a repo id.
    pub fn from_cache_folder_name(folder: &str) -> Option<RepoId> {
        let (plural, rest) = folder.split_once("--")?;
        let repo_type = match plural {
            "models" => RepoType::Model,
            "datasets" => RepoType::Dataset,
            "spaces" => RepoType::Space,
            _ => return None,
        };
        RepoId::parse_typed(&rest.replacen("--", "/", 1), repo_type).ok()
    }
}

impl fmt::Display for RepoId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

impl FromStr for RepoId {
    type Err = HubError;

    fn from_str(id: &str) -> Result<RepoId, HubError> {
        RepoId::parse(id)
    }
}

/// Longest ref name we accept.
const MAX_REF_LEN: usize = 255;

/// A revision: a full commit hash (pinned: wins over any ref, and a cached one needs no
/// request), or a ref name — a branch, a tag, or `refs/pr/N`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Revision {
    /// A full 40-hex commit hash.
    Commit(CommitHash),
    /// A branch, tag or `refs/pr/N` (a moving name the server resolves).
    Ref(String),
}

impl Revision {
    /// `main`, the default branch.
    pub fn main() -> Revision {
        Revision::Ref("main".to_string())
    }

    /// Parses a revision: 40 lowercase hex digits are a commit; anything else must be a safe ref
    /// name (it becomes a file under `refs/` in the cache): `[A-Za-z0-9._/-]`, no `..`, no empty
    /// segment, not starting or ending with `/`, at most 255 bytes.
    pub fn parse(value: &str) -> Result<Revision, HubError> {
        if CommitHash::is_commit_hash(value) {
            return CommitHash::parse(value).map(Revision::Commit);
        }
        let refuse = |reason: &'static str| HubError::InvalidRevision {
            revision: printable(value),
            reason,
        };
        if value.is_empty() || value.len() > MAX_REF_LEN {
            return Err(refuse("it must be 1 to 255 characters"));
        }
        if !value
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-' | b'.' | b'/'))
        {
            return Err(refuse(
                "only letters, digits, `_`, `-`, `.` and `/` are allowed",
            ));
        }
        if value
            .split('/')
            .any(|segment| segment.is_empty() || segment == "." || segment == "..")
        {
            return Err(refuse("it has an empty, `.` or `..` segment"));
        }
        if value.ends_with(".lock") {
            return Err(refuse("it cannot end with `.lock`"));
        }
        Ok(Revision::Ref(value.to_string()))
    }

    /// The commit, when this revision is pinned to one.
    pub fn as_commit(&self) -> Option<&CommitHash> {
        match self {
            Revision::Commit(commit) => Some(commit),
            Revision::Ref(_) => None,
        }
    }

    /// The revision as written.
    pub fn as_str(&self) -> &str {
        match self {
            Revision::Commit(commit) => commit.as_str(),
            Revision::Ref(name) => name,
        }
    }
}

impl Default for Revision {
    fn default() -> Revision {
        Revision::main()
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Revision {
    type Err = HubError;

    fn from_str(value: &str) -> Result<Revision, HubError> {
        Revision::parse(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids_follow_the_hub_rules() {
        for good in [
            "gpt2",
            "sentence-transformers/all-MiniLM-L6-v2",
            "org/name.v2",
            "a/b",
        ] {
            assert!(RepoId::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "a/b/c",
            "a--b/c",
            "a/b..c",
            "../x",
            "a/.x",
            "a/x-",
            "/x",
            "x/",
            "a b/c",
            "a/c\0",
            &"x".repeat(97),
        ] {
            assert!(RepoId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cache_folder_names_round_trip() {
        let id = RepoId::parse("sentence-transformers/all-MiniLM-L6-v2").unwrap();
        assert_eq!(
            id.cache_folder_name(),
            "models--sentence-transformers--all-MiniLM-L6-v2"
        );
        assert_eq!(
            RepoId::from_cache_folder_name(&id.cache_folder_name()),
            Some(id)
        );
        let dataset = RepoId::parse_typed("org/data", RepoType::Dataset).unwrap();
        assert_eq!(dataset.cache_folder_name(), "datasets--org--data");
        assert_eq!(
            RepoId::from_cache_folder_name("models--gpt2")
                .unwrap()
                .as_str(),
            "gpt2"
        );
        assert_eq!(RepoId::from_cache_folder_name(".locks"), None);
    }

    #[test]
    fn revisions_are_commits_or_safe_ref_names() {
        let commit = "0123456789abcdef0123456789abcdef01234567";
        assert!(matches!(Revision::parse(commit), Ok(Revision::Commit(_))));
        for good in ["main", "v1.0", "refs/pr/1", "release_2"] {
            assert!(
                matches!(Revision::parse(good), Ok(Revision::Ref(_))),
                "{good}"
            );
        }
        for bad in [
            "",
            "../x",
            "a//b",
            "/main",
            "main/",
            "a b",
            "x.lock",
            "a\\b",
            "refs/../x",
        ] {
            assert!(Revision::parse(bad).is_err(), "{bad:?}");
        }
    }
}
