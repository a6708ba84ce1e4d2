//! Approvals: a tool recorded in `safeformers.lock` at one commit, with its hashes, the grants
//! the user gave and the limits the user lowered; and loading a tool only exactly as approved.
//!
//! [`approval_entry`] builds the `[[tool]]` entry from a package fetched at a commit (a branch
//! or tag is refused: what is approved must never move), checking every grant against the
//! manifest. [`record_approval`] writes it, keeping every other entry.
//!
//! [`load_approved`] is what running a tool goes through (`tool call`, the agent): the entry
//! of the repo, the files at the pinned commit, and a refusal naming everything that differs
//! (the SHA-256 of `tool.json`, of `tool.wasm`, the definition hash), before anything is
//! compiled or run.

use std::path::{Path, PathBuf};

use safeformers_hub::lockfile::{LockedTool, Lockfile};
use safeformers_hub::{CommitHash, HubClient, HubSettings, RepoId, Revision};
use serde_json::Value;

use crate::error::{Result, ToolError};
use crate::grants::{Grant, check_grants};
use crate::manifest::{RequestedLimits, ToolLimits, ToolManifest};
use crate::package::{ToolPackage, ToolRequest, ToolSource, fetch_bytes};
use crate::schema::CompiledSchema;

/// A tool loaded exactly as approved: the package (files and definition identical to the
/// approval), the grants recorded, and the limits in force.
#[derive(Debug, Clone)]
pub struct ApprovedTool {
    /// The package at the approved commit; [`ToolPackage::wasm`] holds the verified bytes.
    pub package: ToolPackage,
    /// The grants recorded, parsed and re-checked against the manifest; host folders checked
    /// to resolve where they did at approval.
    pub grants: Vec<Grant>,
    /// The limits in force: the tool's own, lowered by the approval's.
    pub limits: ToolLimits,
    /// The lockfile entry.
    pub entry: LockedTool,
    /// The lockfile it came from.
    pub lockfile: PathBuf,
}

impl ApprovedTool {
    /// The tool's manifest.
    pub fn manifest(&self) -> &ToolManifest {
        &self.package.manifest
    }

    /// The compiled schema of the tool's arguments.
    pub fn arguments_schema(&self) -> Result<CompiledSchema> {
        CompiledSchema::compile_arguments(&self.package.manifest.parameters).map_err(|source| {
            ToolError::Schema {
                path: PathBuf::from(format!("{}/tool.json", self.package.source)),
                field: "parameters",
                source,
            }
        })
    }

    /// Validates a call's arguments against the tool's schema (bounded messages).
    pub fn validate_arguments(&self, arguments: &Value) -> std::result::Result<(), Vec<String>> {
        crate::schema::validate_arguments(&self.package.manifest.parameters, arguments)
    }
}

/// Parses `org/name@COMMIT`, as `tool approve` needs it: a 40-hex commit, never a branch or tag
/// ([`ToolError::NotPinned`], a policy refusal).
pub fn parse_pinned(spec: &str) -> Result<(RepoId, CommitHash)> {
    let request = ToolRequest::parse(spec)?;
    match request.revision {
        Some(Revision::Commit(commit)) => Ok((request.repo, commit)),
        Some(Revision::Ref(name)) => Err(ToolError::NotPinned {
            spec: spec.to_string(),
            what: format!("`{name}` is a branch or tag"),
        }),
        None => Err(ToolError::NotPinned {
            spec: spec.to_string(),
            what: "no `@COMMIT` is given".to_string(),
        }),
    }
}

/// The lockfile entry approving `package` with `grants` (checked against its manifest,
/// normalized) and the limits the user set (`approved_limits`: each may only lower the tool's
/// own). The package must come from the Hub at a commit asked for as such.
pub fn approval_entry(
    package: &ToolPackage,
    grants: &[Grant],
    approved_limits: &RequestedLimits,
) -> Result<LockedTool> {
    let ToolSource::Hub {
        repo,
        revision,
        commit,
    } = &package.source
    else {
        return Err(ToolError::NotPinned {
            spec: package.source.to_string(),
            what: "this is a local folder (publish it to a repo first)".into(),
        });
    };
    if revision.as_commit() != Some(commit) {
        return Err(ToolError::NotPinned {
            spec: format!("{repo}@{revision}"),
            what: format!("`{revision}` is a branch or tag"),
        });
    }
    let grants = check_grants(&package.manifest, grants)?;
    ToolLimits::check_approval(&package.manifest.limits, approved_limits)?;
    Ok(LockedTool {
        repo: repo.clone(),
        commit: commit.clone(),
        tool_json_sha256: package.tool_json_sha256.clone(),
        tool_wasm_sha256: package.tool_wasm_sha256.clone(),
        definition_sha256: package.definition_sha256.clone(),
        grants: grants.iter().map(ToString::to_string).collect(),
        limits: (!approved_limits.is_empty()).then_some(*approved_limits),
        ask: false,
    })
}

/// Writes `entry` into the lockfile at `path` (created if missing), replacing any earlier
/// approval of the same repo and keeping every other entry; returns the approval it replaced.
pub fn record_approval(path: &Path, entry: LockedTool) -> Result<Option<LockedTool>> {
    let mut lockfile = Lockfile::read_if_exists(path)?.unwrap_or_default();
    let replaced = lockfile.tool(&entry.repo).cloned();
    lockfile.insert_tool(entry);
    lockfile.write(path)?;
    Ok(replaced)
}

/// Loads the tool of `repo` exactly as `lockfile` approved it: its entry (at `commit`, when one
/// is asked for), `tool.json` and `tool.wasm` at the approved commit (from the cache, or fetched
/// with `settings` and verified), then every check:
///
/// - not in the lockfile, no lockfile, or approved at another commit than `commit`:
///   [`ToolError::NotApproved`];
/// - the SHA-256 of `tool.json` or `tool.wasm`, or the definition hash, differs:
///   [`ToolError::ApprovalMismatch`], naming each difference;
/// - a recorded grant the manifest does not request, or whose host folder now resolves
///   elsewhere: refused too.
///
/// All of these are policy refusals (exit code 3). Nothing is compiled or run here.
pub fn load_approved(
    repo: &RepoId,
    commit: Option<&CommitHash>,
    lockfile: &Path,
    settings: &HubSettings,
) -> Result<ApprovedTool> {
    let not_approved = |detail: String| ToolError::NotApproved {
        lockfile: lockfile.to_path_buf(),
        repo: repo.to_string(),
        detail,
    };
    let Some(locked) = Lockfile::read_if_exists(lockfile)? else {
        return Err(not_approved(" (there is no lockfile)".into()));
    };
    let entry = locked
        .tool(repo)
        .ok_or_else(|| not_approved(String::new()))?
        .clone();
    if let Some(asked) = commit
        && asked != &entry.commit
    {
        return Err(not_approved(format!(
            " at commit {asked} (it is approved at {})",
            entry.commit
        )));
    }
    let invalid = |reason: String| ToolError::InvalidApproval {
        lockfile: lockfile.to_path_buf(),
        repo: repo.to_string(),
        reason,
    };
    let grants: Vec<Grant> = entry
        .grants
        .iter()
        .map(|text| Grant::parse(text).map_err(|error| invalid(error.to_string())))
        .collect::<Result<_>>()?;
    let client = HubClient::new(settings.clone())?;
    let bytes = fetch_bytes(&client, repo, &entry.commit)?;
    let differences = differences(&entry, &bytes);
    if !differences.is_empty() {
        return Err(ToolError::ApprovalMismatch {
            lockfile: lockfile.to_path_buf(),
            repo: repo.to_string(),
            commit: entry.commit.to_string(),
            differences: differences.join("; "),
        });
    }
    let package = bytes.into_package(ToolSource::Hub {
        repo: repo.clone(),
        revision: Revision::Commit(entry.commit.clone()),
        commit: entry.commit.clone(),
    })?;
    for grant in &grants {
        grant.verify_recorded(lockfile, repo.as_str())?;
    }
    let grants = check_grants(&package.manifest, &grants)?;
    let limits = ToolLimits::resolve(&package.manifest.limits, entry.limits.as_ref());
    Ok(ApprovedTool {
        package,
        grants,
        limits,
        entry,
        lockfile: lockfile.to_path_buf(),
    })
}

/// Everything in which the files read differ from the approval: the hash of `tool.json`; the
/// definition hash (or that the manifest no longer parses); the hash of `tool.wasm`.
fn differences(entry: &LockedTool, bytes: &crate::package::PackageBytes) -> Vec<String> {
    let mut differences = Vec::new();
    if bytes.tool_json_sha256 != entry.tool_json_sha256 {
        differences.push(format!(
            "tool.json has sha256 {}, approved {}",
            bytes.tool_json_sha256, entry.tool_json_sha256
        ));
    }
    // The definition is checked even when tool.json's hash matched: the lockfile says what the
    // model may be shown, and the two hashes must agree with it.
    let definition = ToolManifest::parse(&bytes.tool_json, &bytes.manifest_name)
        .and_then(|manifest| manifest.definition_sha256(&bytes.manifest_name));
    match definition {
        Ok(hash) if hash == entry.definition_sha256 => {}
        Ok(hash) => differences.push(format!(
            "the definition (name, description, schemas the model sees) has sha256 {hash}, \
             approved {}",
            entry.definition_sha256
        )),
        Err(error) => differences.push(format!("tool.json no longer reads: {error}")),
    }
    if bytes.tool_wasm_sha256 != entry.tool_wasm_sha256 {
        differences.push(format!(
            "tool.wasm has sha256 {}, approved {}",
            bytes.tool_wasm_sha256, entry.tool_wasm_sha256
        ));
    }
    differences
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn approvals_need_a_commit() {
        let commit = "ab".repeat(20);
        let (repo, pinned) = parse_pinned(&format!("org/tool@{commit}")).unwrap();
        assert_eq!(
            (repo.as_str(), pinned.as_str()),
            ("org/tool", commit.as_str())
        );
        for spec in ["org/tool@main", "org/tool@v1.0", "org/tool"] {
            let error = parse_pinned(spec).unwrap_err();
            assert!(error.is_policy_refusal(), "{spec}: {error}");
        }
        assert!(!parse_pinned("not a repo").unwrap_err().is_policy_refusal());
    }
}
