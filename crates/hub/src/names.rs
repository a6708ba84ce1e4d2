//! Names that come from a server or an index, checked before they touch the filesystem.
//!
//! `huggingface_hub` joins the `X-Repo-Commit` and `ETag` headers into cache paths without
//! checking them; a hostile or broken mirror could steer writes outside the cache that way. Here
//! every such value becomes one of these types first, and the types can only hold safe values.

use std::fmt;
use std::path::{Component, Path, PathBuf};

use crate::error::HubError;

/// Longest file path in a repo we accept, in bytes.
pub const MAX_REPO_PATH_LEN: usize = 1024;

/// A full commit hash: exactly 40 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CommitHash(String);

impl CommitHash {
    /// Parses a commit hash; anything but 40 lowercase hex digits is refused.
    pub fn parse(value: &str) -> Result<CommitHash, HubError> {
        if is_lower_hex(value, 40) {
            Ok(CommitHash(value.to_string()))
        } else {
            Err(HubError::InvalidServerValue {
                what: "commit hash",
                value: printable(value),
                expected: "40 lowercase hex digits",
            })
        }
    }

    /// Whether `value` is a full commit hash (used to tell a pinned revision from a ref name).
    pub fn is_commit_hash(value: &str) -> bool {
        is_lower_hex(value, 40)
    }

    /// The 40 hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CommitHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A blob id: the git blob SHA-1 (40 hex) of a regular file, or the SHA-256 (64 hex) of an LFS
/// file. It names the file in `blobs/`, and for LFS files it is the hash the content must have.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Etag(String);

impl Etag {
    /// Parses an `ETag` / `X-Linked-Etag` header value the way `huggingface_hub` normalises it
    /// (a leading `W/` and surrounding quotes are dropped), then requires 40 or 64 lowercase hex
    /// digits.
    pub fn from_header(value: &str) -> Result<Etag, HubError> {
        let trimmed = value.trim();
        let unweak = trimmed.strip_prefix("W/").unwrap_or(trimmed);
        let unquoted = unweak
            .strip_prefix('"')
            .and_then(|rest| rest.strip_suffix('"'))
            .unwrap_or(unweak);
        Etag::parse(unquoted)
    }

    /// Parses a bare blob id (40 or 64 lowercase hex digits).
    pub fn parse(value: &str) -> Result<Etag, HubError> {
        if is_lower_hex(value, 40) || is_lower_hex(value, 64) {
            Ok(Etag(value.to_string()))
        } else {
            Err(HubError::InvalidServerValue {
                what: "etag",
                value: printable(value),
                expected: "40 or 64 lowercase hex digits",
            })
        }
    }

    /// Whether this is a SHA-256 (an LFS file), i.e. the content's hash, checkable on download.
    pub fn is_sha256(&self) -> bool {
        self.0.len() == 64
    }

    /// The hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Etag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A file's path inside a repo (`config.json`, `1_Pooling/config.json`): relative, `/`-separated,
/// with no `..`, `.` or empty segments, no absolute, drive (`C:`), UNC (`\\host`) or
/// backslash forms, and no control characters. The same rules as `huggingface_hub`'s fix for
/// CVE-2026-15717, applied for POSIX and Windows at once whatever the platform.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoFilePath(String);

impl RepoFilePath {
    /// Parses and checks a path in a repo.
    pub fn parse(value: &str) -> Result<RepoFilePath, HubError> {
        let refuse = |reason: &'static str| HubError::UnsafeFileName {
            name: printable(value),
            reason,
        };
        if value.is_empty() {
            return Err(refuse("it is empty"));
        }
        if value.len() > MAX_REPO_PATH_LEN {
            return Err(refuse("it is longer than 1024 bytes"));
        }
        if value.chars().any(char::is_control) {
            return Err(refuse("it contains control characters"));
        }
        if value.contains('\\') {
            return Err(refuse("it contains a backslash"));
        }
        if value.starts_with('/') {
            return Err(refuse("it is absolute"));
        }
        if value.contains(':') {
            // `C:x`, `D:/x` and alternate data streams on Windows; never in a Hub file name.
            return Err(refuse("it contains a colon (a drive or stream on Windows)"));
        }
        for segment in value.split('/') {
            match segment {
                "" => return Err(refuse("it has an empty segment")),
                "." | ".." => return Err(refuse("it has a `.` or `..` segment")),
                _ => {}
            }
        }
        Ok(RepoFilePath(value.to_string()))
    }

    /// The path as the repo spells it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path's components as a relative filesystem path (only normal components, by
    /// construction).
    pub fn to_relative_path(&self) -> PathBuf {
        self.0.split('/').collect()
    }

    /// How many directories deep the file is (0 for `config.json`).
    pub fn depth(&self) -> usize {
        self.0.matches('/').count()
    }
}

impl fmt::Display for RepoFilePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether `relative` stays inside whatever directory it is joined to (normal components only).
pub fn is_contained(relative: &Path) -> bool {
    relative
        .components()
        .all(|component| matches!(component, Component::Normal(_)))
}

fn is_lower_hex(value: &str, len: usize) -> bool {
    value.len() == len
        && value
            .bytes()
            .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
}

/// A value for an error message: control characters escaped, at most 200 characters.
pub(crate) fn printable(value: &str) -> String {
    let escaped: String = value.escape_debug().collect();
    if escaped.chars().count() > 200 {
        let cut: String = escaped.chars().take(200).collect();
        format!("{cut}...")
    } else {
        escaped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_hashes_are_40_lowercase_hex() {
        assert!(CommitHash::parse(&"a".repeat(40)).is_ok());
        for bad in [
            "",
            "main",
            "../../x",
            &"A".repeat(40),
            &"a".repeat(39),
            &"a".repeat(41),
            &"g".repeat(40),
        ] {
            assert!(CommitHash::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn etags_are_normalised_then_checked() {
        let sha1 = "0".repeat(40);
        let sha256 = "f".repeat(64);
        assert_eq!(
            Etag::from_header(&format!("\"{sha1}\"")).unwrap().as_str(),
            sha1
        );
        assert_eq!(
            Etag::from_header(&format!("W/\"{sha256}\""))
                .unwrap()
                .as_str(),
            sha256
        );
        assert!(
            Etag::from_header(&format!("\"{sha256}\""))
                .unwrap()
                .is_sha256()
        );
        for bad in ["../../../../tmp/pwn", "\"abc\"", "", &"0".repeat(50)] {
            assert!(Etag::from_header(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn repo_paths_refuse_every_escape() {
        for good in [
            "config.json",
            "1_Pooling/config.json",
            "a/b/c.bin",
            "..weird",
            "a..b",
        ] {
            assert!(RepoFilePath::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "../x",
            "a/../../x",
            "/etc/passwd",
            "C:x",
            "D:/x",
            "\\\\host\\share\\x",
            "a\\b",
            "a//b",
            "./a",
            "a/",
            "a\0b",
            "a\nb",
        ] {
            assert!(RepoFilePath::parse(bad).is_err(), "{bad:?}");
        }
        assert!(RepoFilePath::parse(&"a".repeat(2000)).is_err());
    }

    #[test]
    fn relative_paths_stay_inside() {
        let path = RepoFilePath::parse("1_Pooling/config.json").unwrap();
        assert!(is_contained(&path.to_relative_path()));
        assert_eq!(path.depth(), 1);
        assert!(!is_contained(Path::new("../x")));
    }
}
