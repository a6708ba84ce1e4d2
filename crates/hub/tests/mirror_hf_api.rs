//! The `HfApi` calls beyond downloads, on the wire: `list_repo_refs`, `list_repo_commits`,
//! `get_paths_info` (a read-only POST), `auth_check` and `list_models(search=)`. Every name in
//! these requests is checked as the download routes check them.

mod mirror_support;

use mirror_support::{get, in_snapshot, model_cache, post, relink, request, start, temp_dir};
use safeformers_hub::mirror::MAX_REQUEST_BODY;
use safeformers_hub::{CommitHash, RepoId, RepoType};

const FORM: &str = "application/x-www-form-urlencoded";

#[test]
fn refs_are_listed_by_kind() {
    let (cache, snapshot) = model_cache("refs");
    let repo = cache.repo(&RepoId::parse("org/name").unwrap());
    for name in [
        "v1.0",
        "refs/pr/1",
        "refs/convert/parquet",
        "refs/heads/dev",
    ] {
        repo.write_ref(name, &snapshot.commit).unwrap();
    }
    // A ref to a commit the mirror cannot serve is not listed.
    let gone = CommitHash::parse(&"0".repeat(40)).unwrap();
    repo.write_ref("stale", &gone).unwrap();
    let mirror = start(&cache);
    let addr = mirror.local_addr();
    let commit = snapshot.commit.as_str();

    let refs = get(addr, "/api/models/org/name/refs");
    assert_eq!(refs.status, 200);
    let refs = refs.json();
    let branches: Vec<(&str, &str)> = refs["branches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|branch| {
            assert_eq!(branch["targetCommit"], commit);
            (
                branch["name"].as_str().unwrap(),
                branch["ref"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        branches,
        [
            ("dev", "refs/heads/dev"),
            ("main", "refs/heads/main"),
            ("v1.0", "refs/heads/v1.0")
        ]
    );
    assert_eq!(refs["converts"][0]["ref"], "refs/convert/parquet");
    assert_eq!(refs["converts"][0]["name"], "parquet");
    assert_eq!(refs["tags"], serde_json::json!([]));
    assert!(refs.get("pullRequests").is_none());

    let with_prs = get(addr, "/api/models/org/name/refs?include_prs=1").json();
    assert_eq!(with_prs["pullRequests"][0]["ref"], "refs/pr/1");
    assert_eq!(with_prs["pullRequests"][0]["targetCommit"], commit);

    let unknown = get(addr, "/api/models/org/other/refs");
    assert_eq!(unknown.header("x-error-code"), Some("RepoNotFound"));
    assert_eq!(get(addr, "/api/models/org--x/name/refs").status, 400);
    assert_eq!(get(addr, "/api/models/org/name/refs/extra").status, 404);
}

#[test]
fn commits_are_the_one_the_revision_is() {
    let (cache, snapshot) = model_cache("commits");
    let repo = cache.repo(&RepoId::parse("org/name").unwrap());
    repo.write_ref("refs/pr/1", &snapshot.commit).unwrap();
    let mirror = start(&cache);
    let addr = mirror.local_addr();
    let commit = snapshot.commit.as_str();

    for revision in ["main", "refs%2Fpr%2F1", "refs/pr/1", commit] {
        let reply = get(addr, &format!("/api/models/org/name/commits/{revision}"));
        assert_eq!(reply.status, 200, "{revision}");
        let commits = reply.json();
        assert_eq!(commits.as_array().unwrap().len(), 1);
        assert_eq!(commits[0]["id"], commit);
        // What the cache does not know is said plainly, never made up to look real.
        assert_eq!(commits[0]["date"], "1970-01-01T00:00:00.000Z");
        assert!(commits[0]["title"].as_str().unwrap().contains("unknown"));
        assert_eq!(commits[0]["authors"], serde_json::json!([]));
    }
    let unknown = get(addr, "/api/models/org/name/commits/nope");
    assert_eq!(unknown.header("x-error-code"), Some("RevisionNotFound"));
    for bad in [
        "/api/models/org/name/commits/a%20b",
        "/api/models/org/name/commits/..",
        "/api/models/org/name/commits/%2e%2e",
        "/api/models/org/name/commits/refs%2F..%2Fx",
    ] {
        assert_eq!(get(addr, bad).status, 400, "{bad}");
    }
    assert_eq!(
        get(addr, "/api/models/org/name/commits/main/extra").status,
        404
    );
}

#[test]
fn paths_info_answers_a_read_only_post() {
    let (cache, snapshot) = model_cache("paths-info");
    let mirror = start(&cache);
    let addr = mirror.local_addr();
    let url = "/api/models/org/name/paths-info/main";
    let tree = get(addr, "/api/models/org/name/tree/main").json();

    // As huggingface_hub sends it: form fields, a path repeated per entry.
    let reply = post(
        addr,
        url,
        FORM,
        b"paths=config.json&paths=1_Pooling&paths=missing.bin&paths=config.json&expand=True",
    );
    assert_eq!(reply.status, 200);
    let entries = reply.json();
    // Missing paths are left out; the entries are those of the tree listing.
    assert_eq!(entries.as_array().unwrap().len(), 2);
    assert_eq!(entries[0], tree[1]);
    assert_eq!(entries[1], tree[0]);
    assert_eq!(entries[1]["type"], "directory");

    let json = post(
        addr,
        &format!("/api/models/org/name/paths-info/{}", snapshot.commit),
        "application/json",
        br#"{"paths": ["1_Pooling/config.json", "model.safetensors"]}"#,
    );
    assert_eq!(json.status, 200);
    let entries = json.json();
    assert_eq!(entries[0]["path"], "1_Pooling/config.json");
    assert_eq!(entries[1]["lfs"]["size"], 3_000_000);

    // Every path is checked as a resolve path is.
    for bad in [
        &b"paths=..%2Fsecret.txt"[..],
        b"paths=%2Fetc%2Fpasswd",
        b"paths=a%5Cb",
        b"paths=a%00b",
        b"paths=",
    ] {
        let reply = post(addr, url, FORM, bad);
        assert_eq!(reply.status, 400, "{}", String::from_utf8_lossy(bad));
    }
    let too_many = vec!["paths=config.json"; 1001].join("&");
    assert_eq!(post(addr, url, FORM, too_many.as_bytes()).status, 400);
    let huge = vec![b'a'; MAX_REQUEST_BODY + 1];
    assert_eq!(post(addr, url, FORM, &huge).status, 413);

    // Only POST; and POST only here.
    let as_get = get(addr, url);
    assert_eq!(as_get.status, 405);
    assert_eq!(as_get.header("allow"), Some("POST"));
    let post_elsewhere = post(addr, "/api/models/org/name/tree/main", FORM, b"");
    assert_eq!(post_elsewhere.status, 405);
    let unknown_rev = post(addr, "/api/models/org/name/paths-info/nope", FORM, b"");
    assert_eq!(unknown_rev.header("x-error-code"), Some("RevisionNotFound"));
}

#[test]
fn paths_info_leaves_out_entries_that_leave_the_cache() {
    let (cache, snapshot) = model_cache("paths-info-tampered");
    let secret = temp_dir("paths-info-secret").join("secret.txt");
    std::fs::write(&secret, b"secret").unwrap();
    relink(&in_snapshot(&snapshot, "config.json"), &secret);
    let mirror = start(&cache);
    let reply = post(
        mirror.local_addr(),
        "/api/models/org/name/paths-info/main",
        FORM,
        b"paths=config.json&paths=model.safetensors",
    );
    assert_eq!(reply.status, 200);
    let entries = reply.json();
    assert_eq!(entries.as_array().unwrap().len(), 1);
    assert_eq!(entries[0]["path"], "model.safetensors");
}

#[test]
fn auth_check_allows_reading_only() {
    let (cache, _) = model_cache("auth-check");
    let mirror = start(&cache);
    let addr = mirror.local_addr();
    let read = request(
        addr,
        "GET",
        "/api/models/org/name/auth-check",
        &[("Authorization", "Bearer hf_secret")],
    );
    assert_eq!(read.status, 200);
    assert_eq!(
        get(addr, "/api/models/org/name/auth-check/write").status,
        403
    );
    let unknown = get(addr, "/api/models/org/other/auth-check");
    assert_eq!(unknown.header("x-error-code"), Some("RepoNotFound"));
    assert_eq!(get(addr, "/api/models/%2e%2e/x/auth-check").status, 400);
}

#[test]
fn listings_search_the_cached_repos() {
    let (cache, _) = model_cache("listing");
    let source = temp_dir("listing-dataset");
    std::fs::write(source.join("train.csv"), b"a\n").unwrap();
    let dataset = RepoId::parse_typed("org/data", RepoType::Dataset).unwrap();
    safeformers_hub::cache::import_folder(&cache, &source, &dataset, "main").unwrap();
    let mirror = start(&cache);
    let addr = mirror.local_addr();
    let ids = |target: &str| -> Vec<String> {
        let reply = get(addr, target);
        assert_eq!(reply.status, 200, "{target}");
        reply
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|entry| entry["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids("/api/models"), ["org/name"]);
    assert_eq!(ids("/api/models?search=NAM"), ["org/name"]);
    assert_eq!(ids("/api/models?search=org%2Fna&author=org"), ["org/name"]);
    assert!(ids("/api/models?search=zzz").is_empty());
    assert!(ids("/api/models?author=someone").is_empty());
    assert!(ids("/api/models?search=name&limit=0").is_empty());
    assert_eq!(ids("/api/datasets?search=data"), ["org/data"]);
    let entry = &get(addr, "/api/models?search=name").json()[0];
    assert_eq!(entry["modelId"], "org/name");
    assert_eq!(entry["author"], "org");
    assert_eq!(entry["sha"].as_str().unwrap().len(), 40);
    // A filter the mirror cannot apply is refused, not ignored.
    assert_eq!(
        get(addr, "/api/models?filter=text-classification").status,
        400
    );
    assert_eq!(get(addr, "/api/models?search=%FF").status, 400);
    assert_eq!(
        request(addr, "POST", "/api/models", &[("Content-Length", "0")]).status,
        405
    );
}
