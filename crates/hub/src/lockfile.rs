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
//! Reading is strict: an unknown field, a duplicate repo or file, a hash that is not 64
//! lowercase hex digits, a commit that is not 40, or a file path that could escape a folder is an
//! [`HubError::InvalidLockfile`]. Writing is deterministic: repos sorted by id, files by path.

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
const HEADER: &str = "# safeformers.lock: written by `safeformers lock`; do not edit by hand.\n\
# Loads with `--locked` use exactly these commits and files (sizes and sha256).\n\n";

/// A lockfile: the pinned repos, sorted by id.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Lockfile {
    repos: Vec<LockedRepo>,
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
    #[serde(default, rename = "repo")]
    repos: Vec<RawRepo>,
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
            let repo = RepoId::parse(&raw_repo.repo).map_err(|error| invalid(error.to_string()))?;
            if !seen_repos.insert(repo.clone()) {
                return Err(invalid(format!("repo `{repo}` is listed twice")));
            }
            let revision = Revision::parse(&raw_repo.revision)
                .map_err(|error| invalid(format!("repo `{repo}`: {error}")))?;
            let commit = CommitHash::parse(&raw_repo.commit).map_err(|_| {
                invalid(format!(
                    "repo `{repo}`: commit is not 40 lowercase hex digits"
                ))
            })?;
            if let Revision::Commit(requested) = &revision
                && requested != &commit
            {
                return Err(invalid(format!(
                    "repo `{repo}`: revision {requested} is a commit, but commit is {commit}"
                )));
            }
            let mut files = Vec::with_capacity(raw_repo.files.len());
            let mut seen_files = BTreeSet::new();
            for raw_file in raw_repo.files {
                let file_path = RepoFilePath::parse(&raw_file.path)
                    .map_err(|error| invalid(format!("repo `{repo}`: {error}")))?;
                if !seen_files.insert(file_path.clone()) {
                    return Err(invalid(format!(
                        "repo `{repo}`: file `{file_path}` is listed twice"
                    )));
                }
                if !is_sha256_hex(&raw_file.sha256) {
                    return Err(invalid(format!(
                        "repo `{repo}`: file `{file_path}`: sha256 is not 64 lowercase hex digits"
                    )));
                }
                files.push(LockedFile {
                    path: file_path,
                    size: raw_file.size,
                    sha256: raw_file.sha256,
                });
            }
            files.sort();
            repos.push(LockedRepo {
                repo,
                revision,
                commit,
                files,
            });
        }
        repos.sort_by(|a, b| a.repo.cmp(&b.repo));
        Ok(Lockfile { repos })
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
