//! What a hostile or broken server cannot make the client do: store content that does not match
//! its hash or size, write outside the cache, or replace a pinned commit.
#![allow(clippy::cloned_ref_to_slice_refs)]

mod support;

use safeformers_hub::{CommitHash, HubError, Revision};
use support::*;

/// Serves `announced` in the HEAD but `served` in the GET.
fn serve_substituted(server: &TestServer, commit: &str, announced: &FakeFile, served: Vec<u8>) {
    serve_repo(server, "org/model", &["main"], commit, &[announced.clone()]);
    server.route(
        "GET",
        &format!("/org/model/resolve/main/{}", announced.path),
        move |request, _| content_reply(request, &served),
    );
}

fn assert_nothing_stored(cache: &std::path::Path) {
    let repo_dir = cache.join("models--org--model");
    assert_eq!(files_under(&repo_dir.join("blobs")), Vec::<String>::new());
    assert_eq!(
        files_under(&repo_dir.join("snapshots")),
        Vec::<String>::new()
    );
}

#[test]
fn sha256_mismatch_discards_the_download() {
    let server = TestServer::start();
    let announced = FakeFile::new("model.safetensors", vec![1u8; 4096], true);
    serve_substituted(&server, &commit("a1"), &announced, vec![2u8; 4096]);
    let cache = temp_cache("sha256");
    let error = client(&server, &cache)
        .download_file(&repo(), &Revision::main(), &path("model.safetensors"))
        .unwrap_err();
    assert!(matches!(error, HubError::HashMismatch { .. }), "{error}");
    assert!(error.is_policy_refusal());
    assert_nothing_stored(&cache);
}

#[test]
fn git_sha1_mismatch_on_a_small_file_discards_it() {
    let server = TestServer::start();
    let announced = FakeFile::new("config.json", b"{\"a\": 1}".to_vec(), false);
    serve_substituted(&server, &commit("a2"), &announced, b"{\"a\": 2}".to_vec());
    let cache = temp_cache("sha1");
    let error = client(&server, &cache)
        .download_file(&repo(), &Revision::main(), &path("config.json"))
        .unwrap_err();
    assert!(matches!(error, HubError::HashMismatch { .. }), "{error}");
    assert!(error.is_policy_refusal());
    assert_nothing_stored(&cache);
}

#[test]
fn a_body_of_another_size_is_refused() {
    let server = TestServer::start();
    let announced = FakeFile::new("model.safetensors", vec![7u8; 1000], true);
    serve_substituted(&server, &commit("a3"), &announced, vec![7u8; 600]);
    let cache = temp_cache("size");
    let error = client(&server, &cache)
        .download_file(&repo(), &Revision::main(), &path("model.safetensors"))
        .unwrap_err();
    assert!(
        matches!(
            error,
            HubError::SizeMismatch {
                expected: 1000,
                actual: 600,
                ..
            }
        ),
        "{error}"
    );
    assert!(error.is_policy_refusal());
    assert_nothing_stored(&cache);
}

#[test]
fn an_endless_body_is_cut_off_at_the_announced_size() {
    let server = TestServer::start();
    let announced = FakeFile::new("model.safetensors", vec![b'x'; 10_000], true);
    serve_repo(
        &server,
        "org/model",
        &["main"],
        &commit("a4"),
        &[announced.clone()],
    );
    server.route(
        "GET",
        "/org/model/resolve/main/model.safetensors",
        |_, _| Reply::new(200).body(vec![b'x'; 4096]).endless(),
    );
    let cache = temp_cache("endless");
    let error = client(&server, &cache)
        .download_file(&repo(), &Revision::main(), &path("model.safetensors"))
        .unwrap_err();
    match error {
        HubError::SizeMismatch {
            expected, actual, ..
        } => {
            assert_eq!(expected, 10_000);
            assert!(actual > 10_000);
        }
        other => panic!("{other}"),
    }
    assert_nothing_stored(&cache);
}

#[test]
fn traversal_in_tree_names_refuses_the_listing() {
    for bad in [
        "../x",
        "/etc/x",
        "C:x",
        "a\\b",
        "a/../../x",
        "\\\\host\\share\\x",
    ] {
        let server = TestServer::start();
        let commit = commit("b5");
        let good = FakeFile::new("config.json", b"{}".to_vec(), false);
        serve_repo(&server, "org/model", &["main"], &commit, &[good.clone()]);
        let tree = serde_json::json!([
            {"type": "file", "path": "config.json", "size": 2, "oid": good.etag()},
            {"type": "file", "path": bad, "size": 2, "oid": good.etag()},
        ]);
        server.route(
            "GET",
            &format!("/api/models/org/model/tree/{commit}?recursive=true"),
            move |_, _| Reply::new(200).json(tree.clone()),
        );
        let root = temp_cache("traversal");
        let cache = root.join("cache");
        let error = client(&server, &cache)
            .snapshot(&repo(), &Revision::main(), &[])
            .unwrap_err();
        assert!(
            matches!(error, HubError::UnsafeFileName { .. }),
            "{bad}: {error}"
        );
        assert_eq!(
            files_under(&root),
            ["cache/models--org--model/refs/main"],
            "{bad}: nothing but the resolved ref is written"
        );
        assert!(
            server
                .log()
                .iter()
                .all(|request| !request.path.contains("/resolve/")),
            "{bad}: no file is fetched from a refused listing"
        );
    }
}

#[test]
fn a_non_hex_etag_is_refused() {
    let server = TestServer::start();
    let commit = commit("c6");
    server.route(
        "HEAD",
        "/org/model/resolve/main/model.safetensors",
        move |_, _| {
            Reply::new(200)
                .header("X-Repo-Commit", &commit)
                .header("X-Linked-Etag", "\"../../../../tmp/pwn\"")
                .header("X-Linked-Size", 4)
        },
    );
    let root = temp_cache("etag");
    let cache = root.join("cache");
    let error = client(&server, &cache)
        .download_file(&repo(), &Revision::main(), &path("model.safetensors"))
        .unwrap_err();
    assert!(
        matches!(error, HubError::InvalidServerValue { what: "etag", .. }),
        "{error}"
    );
    assert_eq!(files_under(&root), Vec::<String>::new());
    assert!(
        server
            .requests("GET", "/org/model/resolve/main/model.safetensors")
            .is_empty()
    );
}

#[test]
fn a_non_hex_etag_in_a_listing_is_refused() {
    let server = TestServer::start();
    let commit = commit("c7");
    server.route(
        "GET",
        &format!("/api/models/org/model/tree/{commit}?recursive=true"),
        |_, _| {
            Reply::new(200).json(serde_json::json!([
                {"type": "file", "path": "model.safetensors", "size": 4, "oid": "0".repeat(40),
                 "lfs": {"oid": "../../x", "size": 4}},
            ]))
        },
    );
    let error = client(&server, &temp_cache("tree-etag"))
        .list_files(&repo(), &CommitHash::parse(&commit).unwrap())
        .unwrap_err();
    assert!(
        matches!(error, HubError::InvalidServerValue { what: "etag", .. }),
        "{error}"
    );
}

#[test]
fn a_non_hex_commit_is_refused() {
    let server = TestServer::start();
    let file = FakeFile::new("config.json", b"{}".to_vec(), false);
    let etag = file.etag();
    server.route(
        "HEAD",
        "/org/model/resolve/main/config.json",
        move |_, _| {
            Reply::new(200)
                .header("X-Repo-Commit", "../../x")
                .header("ETag", format!("\"{etag}\""))
                .header("Content-Length", 2)
        },
    );
    server.route("GET", "/api/models/org/model/revision/main", |_, _| {
        Reply::new(200).json(serde_json::json!({"sha": "../../x"}))
    });
    let root = temp_cache("commit");
    let cache = root.join("cache");
    let client = client(&server, &cache);
    let error = client
        .download_file(&repo(), &Revision::main(), &path("config.json"))
        .unwrap_err();
    assert!(
        matches!(
            error,
            HubError::InvalidServerValue {
                what: "commit hash",
                ..
            }
        ),
        "{error}"
    );
    let error = client.resolve(&repo(), &Revision::main()).unwrap_err();
    assert!(
        matches!(
            error,
            HubError::InvalidServerValue {
                what: "commit hash",
                ..
            }
        ),
        "{error}"
    );
    assert_eq!(files_under(&root), Vec::<String>::new());
}

#[test]
fn a_non_hex_commit_on_a_missing_entry_writes_no_marker() {
    let server = TestServer::start();
    server.route("HEAD", "/org/model/resolve/main/missing.json", |_, _| {
        Reply::hub_error(404, "EntryNotFound", "no such file").header("X-Repo-Commit", "../../x")
    });
    let root = temp_cache("no-exist-commit");
    let error = client(&server, &root.join("cache"))
        .download_file(&repo(), &Revision::main(), &path("missing.json"))
        .unwrap_err();
    assert!(
        matches!(error, HubError::InvalidServerValue { .. }),
        "{error}"
    );
    assert_eq!(files_under(&root), Vec::<String>::new());
}

#[test]
fn a_pinned_commit_is_never_replaced_by_the_server() {
    let server = TestServer::start();
    let pinned = commit("d8");
    let other = commit("e9");
    let file = FakeFile::new("config.json", b"{\"evil\": true}".to_vec(), false);
    // The server answers the pinned URL for another commit.
    serve_repo(&server, "org/model", &[&pinned], &other, &[file]);
    let cache = temp_cache("pin-mismatch");
    let error = client(&server, &cache)
        .download_file(
            &repo(),
            &Revision::Commit(CommitHash::parse(&pinned).unwrap()),
            &path("config.json"),
        )
        .unwrap_err();
    assert!(
        matches!(error, HubError::PinnedCommitMismatch { .. }),
        "{error}"
    );
    assert!(error.is_policy_refusal());
    assert_nothing_stored(&cache);
}

#[test]
fn pagination_to_another_host_is_refused() {
    let server = TestServer::start();
    let elsewhere = TestServer::start_on("127.0.0.2");
    let commit = commit("fa");
    let link = format!("<{}>; rel=\"next\"", elsewhere.url("/steal"));
    server.route(
        "GET",
        &format!("/api/models/org/model/tree/{commit}?recursive=true"),
        move |_, _| {
            Reply::new(200)
                .header("Link", &link)
                .json(serde_json::json!([]))
        },
    );
    let error = client(&server, &temp_cache("pages-host"))
        .list_files(&repo(), &CommitHash::parse(&commit).unwrap())
        .unwrap_err();
    assert!(
        matches!(
            error,
            HubError::InvalidServerValue {
                what: "tree pagination link",
                ..
            }
        ),
        "{error}"
    );
    assert_eq!(elsewhere.connections(), 0);
}
