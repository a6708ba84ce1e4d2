//! Grants: the capabilities a user gives a tool, each one the tool's manifest requested.
//!
//! The syntax is that of `safeformers tool approve --grant`, and of the `grants` of a
//! `[[tool]]` entry in `safeformers.lock`:
//!
//! | grant | gives |
//! |---|---|
//! | `fs:GUEST=HOSTDIR[:ro\|rw]` | the host folder HOSTDIR at the guest path GUEST, read-only unless `rw` |
//! | `net:HOST:PORT` (`net:[v6]:PORT`) | connections to HOST on PORT |
//! | `env:NAME` | the host's environment variable NAME |
//!
//! [`check_grants`] refuses a grant the manifest did not request, and `rw` for a folder
//! requested `ro` (policy refusals); a requested capability that is not granted is simply not
//! there when the tool runs. A host folder must exist and be a folder; it is recorded
//! canonicalized (absolute, links resolved), and [`Grant::verify_recorded`] refuses it if it
//! later resolves elsewhere.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::{Result, ToolError};
use crate::manifest::{FsAccess, NetTarget, ToolManifest, check_guest_path, is_env_name};

/// One capability given to a tool.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Grant {
    /// A host folder at a guest path.
    Fs {
        /// The guest path, as the manifest requested it.
        guest: String,
        /// The host folder (canonical once checked).
        host: PathBuf,
        /// Read-only or read-write.
        access: FsAccess,
    },
    /// Connections to one host and port.
    Net(NetTarget),
    /// One environment variable.
    Env(String),
}

impl Grant {
    /// Parses one grant (see the module doc). Only the syntax is checked here: whether the
    /// manifest requested it, and whether the host folder exists, is [`check_grants`]'s.
    ///
    /// ```
    /// use safeformers_agents::grants::Grant;
    /// assert_eq!(Grant::parse("fs:/data=/srv/docs").unwrap().to_string(), "fs:/data=/srv/docs:ro");
    /// assert_eq!(Grant::parse("net:API.example.com:443").unwrap().to_string(), "net:api.example.com:443");
    /// assert!(Grant::parse("ssh:key").is_err());
    /// ```
    pub fn parse(text: &str) -> Result<Grant> {
        let invalid = |reason: String| ToolError::InvalidGrant {
            grant: text
                .chars()
                .take(200)
                .flat_map(char::escape_debug)
                .collect(),
            reason,
        };
        if text.chars().any(char::is_control) {
            return Err(invalid("holds a control character".into()));
        }
        if let Some(rest) = text.strip_prefix("fs:") {
            let (guest, host) = rest
                .split_once('=')
                .ok_or_else(|| invalid("expected `fs:GUEST=HOSTDIR[:ro|rw]`".into()))?;
            check_guest_path(guest).map_err(|reason| invalid(format!("guest path: {reason}")))?;
            let (host, access) = if let Some(host) = host.strip_suffix(":rw") {
                (host, FsAccess::ReadWrite)
            } else {
                (host.strip_suffix(":ro").unwrap_or(host), FsAccess::ReadOnly)
            };
            if host.is_empty() {
                return Err(invalid("the host folder is empty".into()));
            }
            Ok(Grant::Fs {
                guest: guest.to_string(),
                host: PathBuf::from(host),
                access,
            })
        } else if let Some(rest) = text.strip_prefix("net:") {
            NetTarget::parse(rest).map(Grant::Net).map_err(invalid)
        } else if let Some(name) = text.strip_prefix("env:") {
            if is_env_name(name) {
                Ok(Grant::Env(name.to_string()))
            } else {
                Err(invalid(format!(
                    "`{}` does not match ^[A-Za-z_][A-Za-z0-9_]*$",
                    name.escape_debug()
                )))
            }
        } else {
            Err(invalid(
                "expected `fs:GUEST=HOSTDIR[:ro|rw]`, `net:HOST:PORT` or `env:NAME`".into(),
            ))
        }
    }

    /// Checks a grant read back from the lockfile: a host folder must still be a folder, and
    /// still resolve to the very path recorded (else [`ToolError::GrantMoved`], a policy
    /// refusal: a folder replaced by a link must not widen what the tool reaches).
    pub fn verify_recorded(&self, lockfile: &Path, repo: &str) -> Result<()> {
        let Grant::Fs { host, .. } = self else {
            return Ok(());
        };
        let resolved = canonical_dir(host, &self.to_string())?;
        if &resolved != host {
            return Err(ToolError::GrantMoved {
                lockfile: lockfile.to_path_buf(),
                repo: repo.to_string(),
                grant: self.to_string(),
                now: resolved,
            });
        }
        Ok(())
    }
}

impl fmt::Display for Grant {
    /// The normalized flag syntax: `fs:GUEST=HOSTDIR:ro|rw` (access always written),
    /// `net:host:port`, `env:NAME`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Grant::Fs {
                guest,
                host,
                access,
            } => write!(f, "fs:{guest}={}:{access}", host.display()),
            Grant::Net(target) => write!(f, "net:{target}"),
            Grant::Env(name) => write!(f, "env:{name}"),
        }
    }
}

/// `host`, canonicalized, if it is a folder; [`ToolError::GrantHostDir`] otherwise (or when its
/// canonical path is not UTF-8 text, which the lockfile could not record).
fn canonical_dir(host: &Path, grant: &str) -> Result<PathBuf> {
    let refused = |reason: String| ToolError::GrantHostDir {
        grant: grant.to_string(),
        path: host.to_path_buf(),
        reason,
    };
    let resolved = std::fs::canonicalize(host).map_err(|error| refused(error.to_string()))?;
    if !resolved.is_dir() {
        return Err(refused("not a folder".into()));
    }
    if resolved
        .to_str()
        .is_none_or(|text| text.chars().any(char::is_control))
    {
        return Err(refused(
            "its path is not printable UTF-8 text, which the lockfile cannot record".into(),
        ));
    }
    Ok(resolved)
}

/// Checks `grants` against what `manifest` requested and returns them normalized: host folders
/// canonicalized, sorted, each once.
///
/// Refused (policy): a folder, host:port or variable the manifest did not request; `rw` for a
/// folder requested `ro`. An error (bad input): a host folder that is missing or not a folder;
/// two different grants for one guest path.
pub fn check_grants(manifest: &ToolManifest, grants: &[Grant]) -> Result<Vec<Grant>> {
    let capabilities = &manifest.capabilities;
    let mut checked: Vec<Grant> = Vec::with_capacity(grants.len());
    for grant in grants {
        let refused = |reason: String| ToolError::GrantNotRequested {
            grant: grant.to_string(),
            reason,
        };
        let normalized = match grant {
            Grant::Fs {
                guest,
                host,
                access,
            } => {
                let request = capabilities
                    .fs
                    .iter()
                    .find(|request| &request.guest == guest)
                    .ok_or_else(|| {
                        refused(format!(
                            "tool `{}` requests no folder at `{guest}`{}",
                            manifest.name,
                            requested_list(capabilities.fs.iter().map(|r| r.guest.clone()))
                        ))
                    })?;
                if *access == FsAccess::ReadWrite && request.access == FsAccess::ReadOnly {
                    return Err(refused(format!(
                        "tool `{}` requests `{guest}` read-only; grant it `:ro`",
                        manifest.name
                    )));
                }
                Grant::Fs {
                    guest: guest.clone(),
                    host: canonical_dir(host, &grant.to_string())?,
                    access: *access,
                }
            }
            Grant::Net(target) => {
                if !capabilities.net.contains(target) {
                    return Err(refused(format!(
                        "tool `{}` requests no connection to `{target}`{}",
                        manifest.name,
                        requested_list(capabilities.net.iter().map(ToString::to_string))
                    )));
                }
                grant.clone()
            }
            Grant::Env(name) => {
                if !capabilities.env.contains(name) {
                    return Err(refused(format!(
                        "tool `{}` requests no variable `{name}`{}",
                        manifest.name,
                        requested_list(capabilities.env.iter().cloned())
                    )));
                }
                grant.clone()
            }
        };
        push_unique(&mut checked, normalized)?;
    }
    checked.sort_by_key(ToString::to_string);
    Ok(checked)
}

/// Adds `grant` unless it is there already; a second, different grant of one guest path is an
/// error.
fn push_unique(checked: &mut Vec<Grant>, grant: Grant) -> Result<()> {
    if checked.contains(&grant) {
        return Ok(());
    }
    if let Grant::Fs { guest, .. } = &grant
        && let Some(other) = checked
            .iter()
            .find(|other| matches!(other, Grant::Fs { guest: g, .. } if g == guest))
    {
        return Err(ToolError::InvalidGrant {
            grant: grant.to_string(),
            reason: format!("`{guest}` is granted twice (also `{other}`)"),
        });
    }
    checked.push(grant);
    Ok(())
}

/// ` (it requests: a, b)` or ` (it requests none)`.
fn requested_list(items: impl Iterator<Item = String>) -> String {
    let items: Vec<String> = items.collect();
    if items.is_empty() {
        " (it requests none)".to_string()
    } else {
        format!(" (it requests: {})", items.join(", "))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use serde_json::json;

    fn manifest() -> ToolManifest {
        let value = json!({
            "name": "files",
            "description": "d",
            "parameters": {"type": "object"},
            "capabilities": {
                "fs": [{"guest": "/data", "access": "ro", "purpose": "p"},
                       {"guest": "/out", "access": "rw", "purpose": "p"}],
                "net": ["api.example.com:443"],
                "env": ["LANG"]
            }
        });
        ToolManifest::parse(value.to_string().as_bytes(), Path::new("tool.json")).unwrap()
    }

    fn check(flags: &[&str]) -> Result<Vec<Grant>> {
        let grants: Vec<Grant> = flags
            .iter()
            .map(|flag| Grant::parse(flag))
            .collect::<Result<_>>()?;
        check_grants(&manifest(), &grants)
    }

    #[test]
    fn syntax() {
        for (flag, normalized) in [
            ("fs:/data=/srv:rw", "fs:/data=/srv:rw"),
            ("fs:/data=/srv:ro", "fs:/data=/srv:ro"),
            ("fs:/data=/srv", "fs:/data=/srv:ro"),
            ("fs:/data=C:/x=y", "fs:/data=C:/x=y:ro"),
            ("net:[::1]:443", "net:[::1]:443"),
            ("env:LANG", "env:LANG"),
        ] {
            let grant = Grant::parse(flag).unwrap();
            assert_eq!(grant.to_string(), normalized);
            assert_eq!(Grant::parse(normalized).unwrap(), grant);
        }
        for bad in [
            "fs:/data",
            "fs:data=/x",
            "fs:/data/=/x",
            "fs:/data=",
            "fs:/data=:rw",
            "net:example.com",
            "env:1X",
            "env:",
            "file:/x",
            "fs:/data=/x\n",
        ] {
            let error = Grant::parse(bad).unwrap_err();
            assert!(error.is_usage_error(), "{bad}: {error}");
        }
    }

    #[test]
    fn only_requested_capabilities_are_granted() {
        let dir = safeformers_testkit::scratch_dir("grants");
        let host = dir.to_str().unwrap();
        let granted = check(&[
            "env:LANG",
            &format!("fs:/data={host}"),
            "net:API.example.com:443",
            &format!("fs:/out={host}/:rw"),
            "env:LANG",
        ])
        .unwrap();
        let canonical = std::fs::canonicalize(&dir).unwrap();
        let flags: Vec<String> = granted.iter().map(ToString::to_string).collect();
        assert_eq!(
            flags,
            [
                "env:LANG".to_string(),
                format!("fs:/data={}:ro", canonical.display()),
                format!("fs:/out={}:rw", canonical.display()),
                "net:api.example.com:443".to_string(),
            ]
        );
        for (flag, needle) in [
            (
                "env:HOME",
                "requests no variable `HOME` (it requests: LANG)",
            ),
            ("net:api.example.com:80", "requests no connection"),
            ("net:evil.example:443", "requests no connection"),
            (
                &format!("fs:/etc={host}") as &str,
                "requests no folder at `/etc`",
            ),
            (&format!("fs:/data={host}:rw"), "read-only"),
        ] {
            let error = check(&[flag]).unwrap_err();
            assert!(error.is_policy_refusal(), "{flag}: {error}");
            assert!(error.to_string().contains(needle), "{flag}: {error}");
        }
        // A read-only grant of a read-write request gives less, which is allowed.
        assert!(check(&[&format!("fs:/out={host}:ro")]).is_ok());
        // Missing or not a folder: bad input, not policy.
        let missing = check(&[&format!("fs:/data={host}/missing")]).unwrap_err();
        assert!(
            !missing.is_policy_refusal() && !missing.is_usage_error(),
            "{missing}"
        );
        std::fs::write(dir.join("file"), b"x").unwrap();
        let file = check(&[&format!("fs:/data={host}/file")]).unwrap_err();
        assert!(file.to_string().contains("not a folder"), "{file}");
        // Two different folders at one guest path.
        std::fs::create_dir(dir.join("other")).unwrap();
        let twice = check(&[
            &format!("fs:/data={host}"),
            &format!("fs:/data={host}/other"),
        ]);
        assert!(twice.unwrap_err().to_string().contains("granted twice"));
        // Nothing granted is fine: the tool gets nothing.
        assert!(check(&[]).unwrap().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn recorded_folders_must_not_move() {
        let dir = safeformers_testkit::scratch_dir("grants-moved");
        let real = dir.join("real");
        let elsewhere = dir.join("elsewhere");
        std::fs::create_dir_all(&real).unwrap();
        std::fs::create_dir_all(&elsewhere).unwrap();
        let grant = check(&[&format!("fs:/data={}", real.display())])
            .unwrap()
            .remove(0);
        let lockfile = Path::new("safeformers.lock");
        grant.verify_recorded(lockfile, "org/tool").unwrap();
        std::fs::remove_dir(&real).unwrap();
        let gone = grant.verify_recorded(lockfile, "org/tool").unwrap_err();
        assert!(!gone.is_policy_refusal(), "{gone}");
        std::os::unix::fs::symlink(&elsewhere, &real).unwrap();
        let moved = grant.verify_recorded(lockfile, "org/tool").unwrap_err();
        assert!(moved.is_policy_refusal(), "{moved}");
        assert!(moved.to_string().contains("elsewhere"), "{moved}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
