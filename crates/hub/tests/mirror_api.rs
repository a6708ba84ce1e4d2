//! The mirror speaks the Hub's download protocol: repo info, tree listings, and `resolve` with
//! the headers `huggingface_hub` reads, ranges included.

mod mirror_support;

use std::fs;

use mirror_support::{get, model_cache, request, start, temp_dir, weights};
use safeformers_hub::cache::{git_blob_sha1_file, sha256_file};
use safeformers_hub::{CommitHash, HubCache, RepoId};

#[test]
fn revision_api_resolves_refs_and_commits() {
    let (cache, snapshot) = model_cache("info");
    let repo = cache.repo(&RepoId::parse("org/name").unwrap());
    repo.write_ref("refs/pr/1", &snapshot.commit).unwrap();
    repo.write_ref("v1.0", &snapshot.commit).unwrap();
    let mirror = start(&cache);
    let addr = mirror.local_addr();
    let commit = snapshot.commit.as_str();

    for target in [
        "/api/models/org/name".to_string(),
        "/api/models/org/name/revision/main".to_string(),
        "/api/models/org/name/revision/v1.0".to_string(),
        "/api/models/org/name/revision/refs%2Fpr%2F1".to_string(),
        "/api/models/org/name/revision/refs/pr/1".to_string(),
        format!("/api/models/org/name/revision/{commit}"),
    ] {
        let reply = get(addr, &target);
        assert_eq!(reply.status, 200, "{target}");
        assert_eq!(reply.header("content-type"), Some("application/json"));
        let info = reply.json();
        assert_eq!(info["id"], "org/name", "{target}");
        assert_eq!(info["modelId"], "org/name");
        assert_eq!(info["sha"], commit);
        assert_eq!(info["private"], false);
        assert_eq!(info["gated"], false);
        assert_eq!(info["disabled"], false);
        let names: Vec<&str> = info["siblings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|sibling| sibling["rfilename"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["1_Pooling/config.json", "config.json", "model.safetensors"]
        );
    }

    let info = get(addr, "/api/models/org/name").json();
    let weights_sha = sha256_file(&snapshot.dir.join("model.safetensors")).unwrap();
    assert_eq!(info["siblings"][2]["size"], 3_000_000);
    assert_eq!(info["siblings"][2]["lfs"]["sha256"], weights_sha.as_str());
    assert_eq!(info["siblings"][2]["lfs"]["size"], 3_000_000);
    assert!(info["siblings"][2]["blobId"].as_str().unwrap().len() == 40);

    let unknown_rev = get(addr, "/api/models/org/name/revision/nope");
    assert_eq!(unknown_rev.status, 404);
    assert_eq!(unknown_rev.header("x-error-code"), Some("RevisionNotFound"));
    assert!(unknown_rev.header("x-error-message").is_some());
    let unknown_commit = get(
        addr,
        &format!("/api/models/org/name/revision/{}", "0".repeat(40)),
    );
    assert_eq!(
        unknown_commit.header("x-error-code"),
        Some("RevisionNotFound")
    );
    let unknown_repo = get(addr, "/api/models/org/other");
    assert_eq!(unknown_repo.status, 404);
    assert_eq!(unknown_repo.header("x-error-code"), Some("RepoNotFound"));
    let bad_repo = get(addr, "/api/models/org--x/name");
    assert_eq!(bad_repo.status, 400);
    let bad_rev = get(addr, "/api/models/org/name/revision/a%20b");
    assert_eq!(bad_rev.status, 400);
    mirror.shutdown().unwrap();
}

#[test]
fn tree_lists_files_and_folders_like_the_hub() {
    let (cache, snapshot) = model_cache("tree");
    let mirror = start(&cache);
    let addr = mirror.local_addr();
    let config_sha = git_blob_sha1_file(&snapshot.dir.join("config.json")).unwrap();
    let weights_sha = sha256_file(&snapshot.dir.join("model.safetensors")).unwrap();

    let root = get(addr, "/api/models/org/name/tree/main").json();
    let paths: Vec<(&str, &str)> = root
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            (
                entry["type"].as_str().unwrap(),
                entry["path"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        paths,
        [
            ("directory", "1_Pooling"),
            ("file", "config.json"),
            ("file", "model.safetensors")
        ]
    );
    // A config is a plain git file (imported under its git blob SHA-1, as the Hub stores it):
    // no LFS fields, its oid is that SHA-1.
    let config = &root[1];
    assert_eq!(config["size"], 22);
    assert!(config.get("lfs").is_none(), "{config}");
    assert_eq!(config["oid"], config_sha.as_str());
    let weights = &root[2];
    let weights_size = weights["size"].as_u64().unwrap();
    assert_eq!(weights["lfs"]["oid"], weights_sha.as_str());
    assert_eq!(weights["lfs"]["size"], weights_size);
    // The LFS pointer: "version https://git-lfs.github.com/spec/v1\noid sha256:<64>\nsize N\n".
    assert_eq!(
        weights["lfs"]["pointerSize"],
        125 + weights_size.to_string().len()
    );
    assert_eq!(weights["oid"].as_str().unwrap().len(), 40);
    assert_eq!(root[0]["oid"].as_str().unwrap().len(), 40);

    let recursive = get(
        addr,
        &format!(
            "/api/models/org/name/tree/{}?recursive=true&expand=false",
            snapshot.commit
        ),
    )
    .json();
    let paths: Vec<&str> = recursive
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "1_Pooling",
            "1_Pooling/config.json",
            "config.json",
            "model.safetensors"
        ]
    );

    let folder = get(addr, "/api/models/org/name/tree/main/1_Pooling").json();
    assert_eq!(folder.as_array().unwrap().len(), 1);
    assert_eq!(folder[0]["path"], "1_Pooling/config.json");

    let missing = get(addr, "/api/models/org/name/tree/main/nope");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.header("x-error-code"), Some("EntryNotFound"));
    let bad_rev = get(addr, "/api/models/org/name/tree/nope");
    assert_eq!(bad_rev.header("x-error-code"), Some("RevisionNotFound"));
}

#[test]
fn resolve_serves_files_with_hub_headers_and_ranges() {
    let (cache, snapshot) = model_cache("resolve");
    let mirror = start(&cache);
    let addr = mirror.local_addr();
    let commit = snapshot.commit.as_str();
    let weights_sha = sha256_file(&snapshot.dir.join("model.safetensors")).unwrap();
    let url = "/org/name/resolve/main/model.safetensors";

    // The metadata request of `huggingface_hub`; any token is ignored.
    let head = request(
        addr,
        "HEAD",
        url,
        &[
            ("Accept-Encoding", "identity"),
            ("Authorization", "Bearer hf_secret"),
        ],
    );
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(head.header("x-repo-commit"), Some(commit));
    let quoted = format!("\"{weights_sha}\"");
    assert_eq!(head.header("etag"), Some(quoted.as_str()));
    assert_eq!(head.header("x-linked-etag"), Some(quoted.as_str()));
    assert_eq!(head.header("x-linked-size"), Some("3000000"));
    assert_eq!(head.header("content-length"), Some("3000000"));
    assert_eq!(head.header("accept-ranges"), Some("bytes"));
    assert_eq!(
        head.header("content-type"),
        Some("application/octet-stream")
    );

    let whole = get(addr, url);
    assert_eq!(whole.status, 200);
    assert_eq!(whole.body, weights());
    let by_commit = get(
        addr,
        &format!("/org/name/resolve/{commit}/1_Pooling/config.json"),
    );
    assert_eq!(by_commit.body, b"{\"pooling\": 1}");
    let encoded = get(addr, "/org/name/resolve/main/1_Pooling%2Fconfig.json");
    assert_eq!(encoded.body, b"{\"pooling\": 1}");

    let expected = weights();
    for (range, start, end) in [
        ("bytes=10-19", 10usize, 19usize),
        ("bytes=2999990-", 2_999_990, 2_999_999),
        ("bytes=-5", 2_999_995, 2_999_999),
        ("bytes=2999998-5000000", 2_999_998, 2_999_999),
    ] {
        let part = request(addr, "GET", url, &[("Range", range)]);
        assert_eq!(part.status, 206, "{range}");
        assert_eq!(
            part.header("content-range").unwrap(),
            format!("bytes {start}-{end}/3000000")
        );
        assert_eq!(part.body, expected[start..=end], "{range}");
        assert_eq!(
            part.header("content-length").unwrap(),
            (end - start + 1).to_string()
        );
    }
    let past_end = request(addr, "GET", url, &[("Range", "bytes=3000000-")]);
    assert_eq!(past_end.status, 416);
    assert_eq!(past_end.header("content-range"), Some("bytes */3000000"));
    assert!(past_end.body.is_empty());
    let ignored = request(addr, "GET", url, &[("Range", "bytes=5-1")]);
    assert_eq!(ignored.status, 200);
    assert_eq!(ignored.body.len(), 3_000_000);

    let missing = get(addr, "/org/name/resolve/main/pytorch_model.bin");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.header("x-error-code"), Some("EntryNotFound"));
    assert_eq!(missing.header("x-repo-commit"), Some(commit));
    let missing_head = request(addr, "HEAD", "/org/name/resolve/main/nope.bin", &[]);
    assert_eq!(missing_head.status, 404);
    assert_eq!(missing_head.header("x-repo-commit"), Some(commit));
    let unknown_repo = get(addr, "/org/other/resolve/main/config.json");
    assert_eq!(unknown_repo.header("x-error-code"), Some("RepoNotFound"));
    let unknown_rev = get(addr, "/org/name/resolve/v9/config.json");
    assert_eq!(unknown_rev.header("x-error-code"), Some("RevisionNotFound"));
    let post = request(addr, "POST", url, &[("Content-Length", "0")]);
    assert_eq!(post.status, 405);
}

/// A cache written by Python for a small, non-LFS file: the blob is named by its git blob SHA-1.
#[test]
fn git_sha1_blobs_are_served_with_their_name_as_etag() {
    let root = temp_dir("sha1-cache");
    let repo_dir = root.join("models--gpt2");
    let content = b"hello\n";
    let blob = "ce013625030ba8dba906f756967f9e9ca394464a";
    let commit = "0123456789abcdef0123456789abcdef01234567";
    fs::create_dir_all(repo_dir.join("blobs")).unwrap();
    fs::write(repo_dir.join("blobs").join(blob), content).unwrap();
    assert_eq!(
        git_blob_sha1_file(&repo_dir.join("blobs").join(blob)).unwrap(),
        blob
    );
    let snapshot = repo_dir.join("snapshots").join(commit);
    fs::create_dir_all(&snapshot).unwrap();
    std::os::unix::fs::symlink(format!("../../blobs/{blob}"), snapshot.join("vocab.txt")).unwrap();
    fs::create_dir_all(repo_dir.join("refs")).unwrap();
    fs::write(repo_dir.join("refs/main"), commit).unwrap();
    let cache = HubCache::new(&root);
    assert_eq!(
        cache
            .repo(&RepoId::parse("gpt2").unwrap())
            .read_ref("main")
            .unwrap(),
        Some(CommitHash::parse(commit).unwrap())
    );
    let mirror = start(&cache);
    let addr = mirror.local_addr();

    let head = request(addr, "HEAD", "/gpt2/resolve/main/vocab.txt", &[]);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("etag"), Some(format!("\"{blob}\"").as_str()));
    assert_eq!(head.header("x-linked-etag"), None);
    assert_eq!(head.header("x-linked-size"), None);
    assert_eq!(head.header("content-length"), Some("6"));
    assert_eq!(head.header("x-repo-commit"), Some(commit));
    assert_eq!(get(addr, "/gpt2/resolve/main/vocab.txt").body, content);

    let tree = get(addr, "/api/models/gpt2/tree/main").json();
    assert_eq!(tree[0]["oid"], blob);
    assert_eq!(tree[0]["size"], 6);
    assert!(tree[0].get("lfs").is_none());
    let info = get(addr, "/api/models/gpt2").json();
    assert_eq!(info["id"], "gpt2");
    assert_eq!(info["sha"], commit);
    assert_eq!(info["siblings"][0]["blobId"], blob);
}

#[test]
fn datasets_are_served_under_their_prefix() {
    let source = temp_dir("dataset-source");
    fs::write(source.join("train.csv"), b"a,b\n1,2\n").unwrap();
    let cache = HubCache::new(temp_dir("dataset-cache"));
    let repo = RepoId::parse_typed("org/data", safeformers_hub::RepoType::Dataset).unwrap();
    safeformers_hub::cache::import_folder(&cache, &source, &repo, "main").unwrap();
    let mirror = start(&cache);
    let addr = mirror.local_addr();
    assert_eq!(
        get(addr, "/datasets/org/data/resolve/main/train.csv").body,
        b"a,b\n1,2\n"
    );
    let info = get(addr, "/api/datasets/org/data").json();
    assert_eq!(info["id"], "org/data");
    assert!(info.get("modelId").is_none());
    // A dataset is not a model.
    let as_model = get(addr, "/org/data/resolve/main/train.csv");
    assert_eq!(as_model.header("x-error-code"), Some("RepoNotFound"));
}

#[test]
fn shutdown_releases_the_port() {
    let (cache, _) = model_cache("shutdown");
    let mirror = start(&cache);
    let addr = mirror.local_addr();
    assert_ne!(addr.port(), 0);
    assert_eq!(get(addr, "/api/models/org/name").status, 200);
    drop(mirror);
    assert!(std::net::TcpStream::connect(addr).is_err());
}
