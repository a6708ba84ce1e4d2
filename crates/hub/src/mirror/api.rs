//! The calls of `huggingface_hub`'s `HfApi` beyond downloading, as far as a cache can answer them
//! (the URLs and fields are those `huggingface_hub` 2.x requests and parses):
//!
//! | call | request | answer |
//! |---|---|---|
//! | `list_repo_refs` | `GET /api/{type}s/{repo}/refs[?include_prs=1]` | the cached refs |
//! | `list_repo_commits` | `GET /api/{type}s/{repo}/commits/{rev}` | the one commit `rev` is |
//! | `get_paths_info` | `POST /api/{type}s/{repo}/paths-info/{rev}` | tree entries of the paths |
//! | `auth_check` | `GET /api/{type}s/{repo}/auth-check[/write]` | 200 (read), 403 (write) |
//! | `list_models(search=)` | `GET /api/{type}s?search=&author=&limit=` | the cached repos |
//!
//! A cache records files, not history: a commit's title, author and date are unknown, so
//! `list_repo_commits` gives the commit id with the Unix epoch as its date and a title saying so,
//! and `get_paths_info(expand=True)` leaves out the (optional) last commit and security scan. A
//! tag fetched by name is cached as `refs/<name>`, exactly like a branch, so both are listed as
//! branches.

use std::collections::{BTreeMap, BTreeSet};

use axum::http::StatusCode;
use percent_encoding::percent_decode_str;

use super::{
    Blob, Parsed, Reply, file_entry, folder_entry, resolve_commit, served_files, set_field,
};
use crate::cache::{HubCache, RepoCache};
use crate::names::{RepoFilePath, printable};
use crate::repo::RepoType;

/// Most paths one `paths-info` request may ask about (`huggingface_hub` sends at most 500).
pub const MAX_PATHS_PER_REQUEST: usize = 1000;

/// Most repos one listing returns.
pub const MAX_LISTED_REPOS: usize = 1000;

/// The date given for a commit: the cache does not know it, and no Hub commit is this old.
const UNKNOWN_COMMIT_DATE: &str = "1970-01-01T00:00:00.000Z";

/// The title given for a commit, which the cache does not know either.
const UNKNOWN_COMMIT_TITLE: &str = "(unknown: this mirror has only the files of this commit)";

/// What `get_paths_info` asks: form fields (`paths=a&paths=b&expand=false`, as
/// `huggingface_hub` sends them) or JSON (`{"paths": [...], "expand": false}`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PathsRequest {
    /// The paths, as sent (checked when they are looked up).
    pub paths: Vec<String>,
    /// Whether more information was asked for (the mirror has none to add).
    pub expand: bool,
}

impl PathsRequest {
    /// Parses a request body; more than [`MAX_PATHS_PER_REQUEST`] paths is a 400.
    pub(super) fn parse(content_type: Option<&str>, body: &[u8]) -> Parsed<PathsRequest> {
        let is_json = content_type.is_some_and(|value| {
            value
                .trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
        let request = if is_json {
            PathsRequest::from_json(body)?
        } else {
            PathsRequest::from_form(body)?
        };
        if request.paths.len() > MAX_PATHS_PER_REQUEST {
            return Err(bad_request(&format!(
                "too many paths: {} (at most {MAX_PATHS_PER_REQUEST} per request)",
                request.paths.len()
            )));
        }
        Ok(request)
    }

    fn from_form(body: &[u8]) -> Parsed<PathsRequest> {
        let text = std::str::from_utf8(body)
            .map_err(|_| bad_request("the request body is not valid UTF-8"))?;
        let mut request = PathsRequest::default();
        for (key, value) in form_pairs(text)? {
            match key.as_str() {
                "paths" | "paths[]" => {
                    request.paths.push(value);
                    if request.paths.len() > MAX_PATHS_PER_REQUEST {
                        break;
                    }
                }
                "expand" => request.expand = is_true(&value),
                _ => {}
            }
        }
        Ok(request)
    }

    fn from_json(body: &[u8]) -> Parsed<PathsRequest> {
        let value: serde_json::Value = serde_json::from_slice(body)
            .map_err(|error| bad_request(&format!("the request body is not JSON: {error}")))?;
        let paths = match value.get("paths") {
            None => Vec::new(),
            Some(serde_json::Value::String(path)) => vec![path.clone()],
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .map(|item| {
                    item.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| bad_request("`paths` holds something other than a string"))
                })
                .collect::<Parsed<Vec<String>>>()?,
            Some(_) => return Err(bad_request("`paths` is not a list of strings")),
        };
        let expand = value
            .get("expand")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false);
        Ok(PathsRequest { paths, expand })
    }
}

fn bad_request(message: &str) -> Reply {
    Reply::error(StatusCode::BAD_REQUEST, None, message)
}

fn is_true(value: &str) -> bool {
    matches!(value, "1" | "true" | "True")
}

/// The pairs of an `application/x-www-form-urlencoded` text (a query string or a form body),
/// `+` read as a space and then percent-decoded; every name and value must be UTF-8.
fn form_pairs(text: &str) -> Parsed<Vec<(String, String)>> {
    text.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((form_decode(key)?, form_decode(value)?))
        })
        .collect()
}

fn form_decode(raw: &str) -> Parsed<String> {
    percent_decode_str(&raw.replace('+', " "))
        .decode_utf8()
        .map(|text| text.into_owned())
        .map_err(|_| bad_request("a form field is not valid UTF-8 once percent-decoded"))
}

/// `list_repo_refs`: every cached ref whose commit has a snapshot, by kind.
pub(super) fn refs(repo: &RepoCache, include_prs: bool) -> Parsed<Reply> {
    let listing = repo.ref_listing().map_err(|error| {
        eprintln!("mirror: cannot list the refs of {}: {error}", repo.repo());
        Reply::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            None,
            "the cached refs cannot be read",
        )
    })?;
    // A ref that cannot be read (a FIFO, over its cap, not a commit) is left out, not fatal.
    for (_, error) in &listing.invalid {
        eprintln!("mirror: not listing a ref of {}: {error}", repo.repo());
    }
    let cached = listing.refs;
    // Keyed by full ref, so that `main` and `refs/heads/main` are one branch.
    let mut kinds: BTreeMap<(&str, String), (String, String)> = BTreeMap::new();
    for (name, commit) in &cached {
        if !repo.snapshot_dir(commit).is_dir() {
            continue;
        }
        let (kind, prefix, short) = if name.starts_with("refs/") {
            match ref_kind(name) {
                Some(kind) => kind,
                None => continue,
            }
        } else {
            ("branches", "refs/heads/", name.as_str())
        };
        let full = format!("{prefix}{short}");
        kinds
            .entry((kind, full))
            .or_insert_with(|| (short.to_string(), commit.as_str().to_string()));
    }
    let listed = |wanted: &str| -> Vec<serde_json::Value> {
        kinds
            .iter()
            .filter(|((kind, _), _)| *kind == wanted)
            .map(|((_, full), (name, commit))| {
                serde_json::json!({ "name": name, "ref": full, "targetCommit": commit })
            })
            .collect()
    };
    let mut answer = serde_json::json!({
        "branches": listed("branches"),
        "converts": listed("converts"),
        "tags": listed("tags"),
    });
    if include_prs {
        set_field(
            &mut answer,
            "pullRequests",
            serde_json::Value::Array(listed("pullRequests")),
        );
    }
    Ok(Reply::json(&answer))
}

/// The kind, full-ref prefix and short name of a cached ref under `refs/`; `None` for a
/// namespace the Hub does not list.
fn ref_kind(name: &str) -> Option<(&'static str, &'static str, &str)> {
    [
        ("branches", "refs/heads/"),
        ("tags", "refs/tags/"),
        ("converts", "refs/convert/"),
        ("pullRequests", "refs/pr/"),
    ]
    .into_iter()
    .find_map(|(kind, prefix)| {
        name.strip_prefix(prefix)
            .filter(|short| !short.is_empty())
            .map(|short| (kind, prefix, short))
    })
}

/// `list_repo_commits`: the commit the revision resolves to, the only one the cache knows.
pub(super) fn commits(repo: &RepoCache, revision: &str) -> Parsed<Reply> {
    let commit = resolve_commit(repo, revision)?;
    Ok(Reply::json(&serde_json::json!([{
        "id": commit.as_str(),
        "title": UNKNOWN_COMMIT_TITLE,
        "message": "",
        "authors": [],
        "date": UNKNOWN_COMMIT_DATE,
    }])))
}

/// `get_paths_info`: the tree entry of each requested path that exists (files and folders);
/// the others are left out, as the Hub does.
pub(super) fn paths_info(
    repo: &RepoCache,
    revision: &str,
    request: &PathsRequest,
) -> Parsed<Reply> {
    let commit = resolve_commit(repo, revision)?;
    let mut wanted = Vec::new();
    let mut seen = BTreeSet::new();
    for raw in &request.paths {
        let trimmed = raw.strip_suffix('/').unwrap_or(raw);
        let path = RepoFilePath::parse(trimmed).map_err(|error| Reply::bad_request(&error))?;
        if seen.insert(path.as_str().to_string()) {
            wanted.push(path);
        }
    }
    let files = served_files(repo, &commit)?;
    let by_path: BTreeMap<&str, &Blob> = files
        .iter()
        .map(|(path, blob)| (path.as_str(), blob))
        .collect();
    let mut entries = Vec::new();
    for path in &wanted {
        let path = path.as_str();
        if let Some(blob) = by_path.get(path) {
            entries.push(file_entry(path, blob));
            continue;
        }
        let prefix = format!("{path}/");
        let children: Vec<(&str, &Blob)> = by_path
            .range(prefix.as_str()..)
            .map_while(|(file, blob)| file.strip_prefix(&prefix).map(|rel| (rel, *blob)))
            .collect();
        if !children.is_empty() {
            entries.push(folder_entry(path, &children));
        }
    }
    Ok(Reply::json(&serde_json::Value::Array(entries)))
}

/// `auth_check`: anyone may read what the mirror serves; nobody may write.
pub(super) fn auth_check(repo: &RepoCache, write: bool) -> Reply {
    if write {
        Reply::error(
            StatusCode::FORBIDDEN,
            None,
            &format!(
                "the mirror is read-only: no write access to {}",
                repo.repo()
            ),
        )
    } else {
        Reply::json(&serde_json::json!({}))
    }
}

/// What a listing asks for.
#[derive(Debug, Default)]
struct ListingQuery {
    search: Option<String>,
    author: Option<String>,
    limit: Option<usize>,
    /// `gated=true`: only gated repos, which the mirror has none of.
    gated_only: bool,
}

impl ListingQuery {
    /// Parses the query; a filter the mirror cannot apply is a 400 rather than an answer that
    /// ignores it.
    fn parse(query: Option<&str>) -> Parsed<ListingQuery> {
        let mut listing = ListingQuery::default();
        for (key, value) in form_pairs(query.unwrap_or_default())? {
            match key.as_str() {
                "search" => listing.search = Some(value.to_lowercase()),
                "author" => listing.author = Some(value.to_lowercase()),
                "limit" => {
                    let limit = value.parse().map_err(|_| {
                        bad_request(&format!("limit `{}` is not a number", printable(&value)))
                    })?;
                    listing.limit = Some(limit);
                }
                "gated" => listing.gated_only = is_true(&value),
                // What to include or in which order: the mirror answers with what it has.
                "sort" | "direction" | "full" | "config" | "cardData" | "expand" | "expand[]" => {}
                _ => {
                    return Err(bad_request(&format!(
                        "the mirror cannot filter repos by `{}`; it knows search, author, limit \
                         and gated",
                        printable(&key)
                    )));
                }
            }
        }
        Ok(listing)
    }

    fn matches(&self, id: &str) -> bool {
        let id = id.to_lowercase();
        let author = id.split_once('/').map(|(org, _)| org);
        !self.gated_only
            && self
                .search
                .as_ref()
                .is_none_or(|search| id.contains(search.as_str()))
            && self
                .author
                .as_ref()
                .is_none_or(|wanted| author == Some(wanted.as_str()))
    }
}

/// `list_models` (and `list_datasets`, `list_spaces`): the cached repos of a type that have a
/// snapshot, filtered by `search` (part of the id, any case) and `author`.
pub(super) fn list_repos(
    cache: &HubCache,
    repo_type: RepoType,
    query: Option<&str>,
) -> Parsed<Reply> {
    let listing = ListingQuery::parse(query)?;
    let limit = listing
        .limit
        .unwrap_or(MAX_LISTED_REPOS)
        .min(MAX_LISTED_REPOS);
    let repos = cache.repos().map_err(|error| {
        eprintln!("mirror: cannot list the repos of the cache: {error}");
        Reply::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            None,
            "the cache cannot be listed",
        )
    })?;
    let mut entries = Vec::new();
    for repo in repos {
        let id = repo.repo();
        if id.repo_type() != repo_type || !listing.matches(id.as_str()) {
            continue;
        }
        if !repo.snapshots().is_ok_and(|commits| !commits.is_empty()) {
            continue;
        }
        if entries.len() == limit {
            if listing.limit.is_none() {
                eprintln!("mirror: listing only the first {MAX_LISTED_REPOS} matching repos");
            }
            break;
        }
        entries.push(listing_entry(&repo));
    }
    Ok(Reply::json(&serde_json::Value::Array(entries)))
}

/// One repo of a listing; `sha` is its `main`, when that is served.
fn listing_entry(repo: &RepoCache) -> serde_json::Value {
    let id = repo.repo().as_str();
    let mut entry = serde_json::json!({
        "_id": id,
        "id": id,
        "author": id.split_once('/').map(|(org, _)| org),
        "private": false,
        "disabled": false,
        "gated": false,
        "tags": [],
    });
    if let Ok(commit) = resolve_commit(repo, "main") {
        set_field(&mut entry, "sha", serde_json::Value::from(commit.as_str()));
    }
    if repo.repo().repo_type() == RepoType::Model {
        set_field(&mut entry, "modelId", serde_json::Value::from(id));
    }
    entry
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_requests_are_read_as_huggingface_hub_sends_them() {
        let form = PathsRequest::parse(
            Some("application/x-www-form-urlencoded"),
            b"paths=config.json&paths=1_Pooling%2Fconfig.json&paths=a+b&expand=false",
        )
        .unwrap();
        assert_eq!(form.paths, ["config.json", "1_Pooling/config.json", "a b"]);
        assert!(!form.expand);
        let json = PathsRequest::parse(
            Some("application/json; charset=utf-8"),
            br#"{"paths": ["x", "y/z"], "expand": true}"#,
        )
        .unwrap();
        assert_eq!(json.paths, ["x", "y/z"]);
        assert!(json.expand);

        let many = vec!["paths=x"; MAX_PATHS_PER_REQUEST + 1].join("&");
        let refused = PathsRequest::parse(None, many.as_bytes()).unwrap_err();
        assert_eq!(refused.status, StatusCode::BAD_REQUEST);
        for bad in [
            (Some("application/json"), &b"{\"paths\": [1]}"[..]),
            (Some("application/json"), b"{\"paths\": {}}"),
            (Some("application/json"), b"[[[["),
            (None, b"paths=%FF"),
            (None, b"\xff"),
        ] {
            let reply = PathsRequest::parse(bad.0, bad.1).unwrap_err();
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad:?}");
        }
    }

    #[test]
    fn listings_refuse_filters_they_cannot_apply() {
        let listing =
            ListingQuery::parse(Some("search=MiniLM&author=sentence-transformers")).unwrap();
        assert!(listing.matches("sentence-transformers/all-MiniLM-L6-v2"));
        assert!(!listing.matches("other/all-MiniLM-L6-v2"));
        assert!(!listing.matches("sentence-transformers/bert"));
        assert!(ListingQuery::parse(Some("search=a&sort=downloads&limit=3")).is_ok());
        assert!(
            !ListingQuery::parse(Some("gated=True"))
                .unwrap()
                .matches("x")
        );
        for refused in [
            "filter=text-classification",
            "pipeline_tag=fill-mask",
            "limit=-1",
        ] {
            let reply = ListingQuery::parse(Some(refused)).unwrap_err();
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{refused}");
        }
    }

    #[test]
    fn cached_refs_are_sorted_by_kind() {
        assert_eq!(
            ref_kind("refs/pr/1"),
            Some(("pullRequests", "refs/pr/", "1"))
        );
        assert_eq!(
            ref_kind("refs/convert/parquet"),
            Some(("converts", "refs/convert/", "parquet"))
        );
        assert_eq!(ref_kind("refs/tags/v1"), Some(("tags", "refs/tags/", "v1")));
        assert_eq!(
            ref_kind("refs/heads/dev"),
            Some(("branches", "refs/heads/", "dev"))
        );
        assert_eq!(ref_kind("refs/other/x"), None);
        assert_eq!(ref_kind("refs/pr/"), None);
    }
}
