//! Python's `huggingface_hub` against our mirror, for the `HfApi` calls beyond downloads:
//! `list_repo_refs`, `list_repo_commits`, `get_paths_info`, `auth_check` and
//! `list_models(search=)`. (Downloads through the mirror are covered by
//! crates/cli/tests/interop_python.rs.)
//!
//! Needs the pure-Python `huggingface_hub` in a venv: `scripts/test.sh` creates it
//! (scripts/setup-hub-venv.sh) and exports `SAFEFORMERS_HUB_PYTHON`.

#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

mod mirror_support;

use mirror_support::{model_cache, start, temp_dir};
use safeformers_hub::RepoId;
use safeformers_testkit::hub_python_command;

/// Calls each `HfApi` method and prints what it returned, as JSON.
const PY_HF_API_CALLS: &str = r#"
import json, sys
import huggingface_hub
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

api = HfApi()
repo = "org/name"
out = {"version": huggingface_hub.__version__}

refs = api.list_repo_refs(repo, include_pull_requests=True)
out["branches"] = [[r.name, r.ref, r.target_commit] for r in refs.branches]
out["tags"] = [[r.name, r.ref] for r in refs.tags]
out["converts"] = [[r.name, r.ref] for r in refs.converts]
out["pull_requests"] = [[r.name, r.ref] for r in refs.pull_requests]
out["no_prs"] = api.list_repo_refs(repo).pull_requests

commits = api.list_repo_commits(repo)
out["commits"] = [[c.commit_id, c.created_at.year, c.title, c.authors] for c in commits]
out["pr_commits"] = [c.commit_id for c in api.list_repo_commits(repo, revision="refs/pr/1")]
try:
    api.list_repo_commits(repo, revision="nope")
except RevisionNotFoundError:
    out["unknown_revision"] = "RevisionNotFoundError"

infos = api.get_paths_info(repo, ["config.json", "1_Pooling", "model.safetensors", "missing.bin"])
out["paths"] = [[type(i).__name__, i.path] for i in infos]
weights = [i for i in infos if i.path == "model.safetensors"][0]
out["weights"] = [weights.size, weights.lfs.sha256, weights.blob_id]
folder = [i for i in infos if i.path == "1_Pooling"][0]
out["folder_tree_id"] = folder.tree_id
expanded = api.get_paths_info(repo, "config.json", expand=True, revision=sys.argv[1])
out["expanded"] = [[i.path, i.last_commit] for i in expanded]
try:
    api.get_paths_info(repo, ["../secret.txt"])
except HfHubHTTPError as error:
    out["traversal"] = error.response.status_code

api.auth_check(repo)
out["auth_read"] = "ok"
try:
    api.auth_check(repo, write=True)
except HfHubHTTPError as error:
    out["auth_write"] = error.response.status_code
try:
    api.auth_check("org/other")
except RepositoryNotFoundError:
    out["auth_unknown"] = "RepositoryNotFoundError"

out["search"] = [[m.id, m.author, m.sha] for m in api.list_models(search="NAM")]
out["search_none"] = [m.id for m in api.list_models(search="zzz")]
out["search_author"] = [m.id for m in api.list_models(author="org", search="name", limit=5)]
print(json.dumps(out))
"#;

#[test]
fn python_hf_api_calls_work_against_our_mirror() {
    let (cache, snapshot) = model_cache("python-api");
    let repo = cache.repo(&RepoId::parse("org/name").unwrap());
    repo.write_ref("refs/pr/1", &snapshot.commit).unwrap();
    repo.write_ref("refs/convert/parquet", &snapshot.commit)
        .unwrap();
    repo.write_ref("v1.0", &snapshot.commit).unwrap();
    let mirror = start(&cache);
    let home = temp_dir("python-api-home");

    let output = hub_python_command(&home, &mirror.url(), false)
        .arg("-c")
        .arg(PY_HF_API_CALLS)
        .arg(snapshot.commit.as_str())
        .current_dir(&home)
        .output()
        .expect("the venv's python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "python failed\nstdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let out: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let commit = snapshot.commit.as_str();
    eprintln!("huggingface_hub {}", out["version"]);

    assert_eq!(
        out["branches"],
        serde_json::json!([
            ["main", "refs/heads/main", commit],
            ["v1.0", "refs/heads/v1.0", commit]
        ])
    );
    assert_eq!(out["tags"], serde_json::json!([]));
    assert_eq!(
        out["converts"],
        serde_json::json!([["parquet", "refs/convert/parquet"]])
    );
    assert_eq!(
        out["pull_requests"],
        serde_json::json!([["1", "refs/pr/1"]])
    );
    assert_eq!(out["no_prs"], serde_json::Value::Null);

    assert_eq!(out["commits"][0][0], commit);
    assert_eq!(out["commits"][0][1], 1970);
    assert_eq!(out["commits"].as_array().unwrap().len(), 1);
    assert_eq!(out["pr_commits"], serde_json::json!([commit]));
    assert_eq!(out["unknown_revision"], "RevisionNotFoundError");

    assert_eq!(
        out["paths"],
        serde_json::json!([
            ["RepoFile", "config.json"],
            ["RepoFolder", "1_Pooling"],
            ["RepoFile", "model.safetensors"]
        ])
    );
    assert_eq!(out["weights"][0], 3_000_000);
    assert_eq!(out["weights"][1].as_str().unwrap().len(), 64);
    assert_eq!(out["weights"][2].as_str().unwrap().len(), 40);
    assert_eq!(out["folder_tree_id"].as_str().unwrap().len(), 40);
    assert_eq!(out["expanded"], serde_json::json!([["config.json", null]]));
    assert_eq!(out["traversal"], 400);

    assert_eq!(out["auth_read"], "ok");
    assert_eq!(out["auth_write"], 403);
    assert_eq!(out["auth_unknown"], "RepositoryNotFoundError");

    assert_eq!(
        out["search"],
        serde_json::json!([["org/name", "org", commit]])
    );
    assert_eq!(out["search_none"], serde_json::json!([]));
    assert_eq!(out["search_author"], serde_json::json!(["org/name"]));
}
