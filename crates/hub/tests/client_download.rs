//! Downloads over real HTTP on loopback: the cache layout, resume, retries, concurrency,
//! redirects and where the token goes.
#![allow(clippy::cloned_ref_to_slice_refs)]

mod support;

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use safeformers_hub::client::RetryPolicy;
use safeformers_hub::{CommitHash, HubClient, HubError, RepoId, Revision};
use support::*;

fn model_bytes(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

#[test]
fn a_download_lays_out_blob_symlink_and_ref() {
    let server = TestServer::start();
    let commit = commit("a1");
    let config = FakeFile::new("config.json", b"{\"hidden_size\": 8}\n".to_vec(), false);
    let weights = FakeFile::new("model.safetensors", model_bytes(70_000), true);
    serve_repo(
        &server,
        "org/model",
        &["main"],
        &commit,
        &[config.clone(), weights.clone()],
    );
    let cache = temp_cache("normal");
    let client = client(&server, &cache);

    let local = client
        .download_file(&repo(), &Revision::main(), &path("config.json"))
        .unwrap();
    let repo_dir = cache.join("models--org--model");
    assert_eq!(
        local,
        repo_dir.join("snapshots").join(&commit).join("config.json")
    );
    assert_eq!(fs::read(&local).unwrap(), config.content);
    assert_eq!(
        fs::read_link(&local).unwrap(),
        PathBuf::from("../../blobs").join(config.etag())
    );
    assert_eq!(
        fs::read_to_string(repo_dir.join("refs/main")).unwrap(),
        commit
    );

    let local = client
        .download_file(&repo(), &Revision::main(), &path("model.safetensors"))
        .unwrap();
    assert_eq!(fs::read(&local).unwrap(), weights.content);
    assert_eq!(
        files_under(&repo_dir.join("blobs")),
        {
            let mut names = vec![config.etag(), weights.etag()];
            names.sort();
            names
        },
        "blobs are named by git sha1 / sha256, and no .incomplete is left"
    );

    let head = &server.requests("HEAD", "/org/model/resolve/main/config.json")[0];
    assert_eq!(
        head.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert!(
        head.header("user-agent")
            .unwrap()
            .starts_with("safeformers/")
    );
    assert_eq!(head.header("accept-encoding"), Some("identity"));
}

#[test]
fn a_cut_download_resumes_with_a_range_request() {
    let server = TestServer::start();
    let commit = commit("b2");
    let weights = FakeFile::new("model.safetensors", model_bytes(100_000), true);
    serve_repo(&server, "org/model", &["main"], &commit, &[weights.clone()]);
    let half = 40_000;
    let content = weights.content.clone();
    // Later routes win: the first GET is cut halfway, the others honour Range.
    server.route(
        "GET",
        "/org/model/resolve/main/model.safetensors",
        move |request, hit| {
            if hit == 0 {
                Reply::new(200).body(content.clone()).cut_after(half)
            } else {
                content_reply(request, &content)
            }
        },
    );
    let cache = temp_cache("resume");

    // One attempt only: the cut leaves a partial file behind.
    let single = HubClient::new(settings(&server, &cache))
        .unwrap()
        .with_retry_policy(RetryPolicy {
            attempts: 1,
            initial_backoff: Duration::ZERO,
        });
    let error = single
        .download_file(&repo(), &Revision::main(), &path("model.safetensors"))
        .unwrap_err();
    assert!(matches!(error, HubError::Network { .. }), "{error}");
    let partial = cache
        .join("models--org--model/blobs")
        .join(format!("{}.incomplete", weights.etag()));
    assert_eq!(fs::metadata(&partial).unwrap().len(), half as u64);

    // The next call hashes the partial bytes, then asks only for the rest.
    let local = client(&server, &cache)
        .download_file(&repo(), &Revision::main(), &path("model.safetensors"))
        .unwrap();
    assert_eq!(fs::read(&local).unwrap(), weights.content);
    let gets = server.requests("GET", "/org/model/resolve/main/model.safetensors");
    assert_eq!(gets.len(), 2);
    assert_eq!(gets[0].header("range"), None);
    assert_eq!(
        gets[1].header("range"),
        Some(format!("bytes={half}-").as_str())
    );
    assert!(!partial.exists());
}

#[test]
fn a_cut_download_is_retried_within_one_call() {
    let server = TestServer::start();
    let commit = commit("b3");
    let weights = FakeFile::new("model.safetensors", model_bytes(50_000), true);
    serve_repo(&server, "org/model", &["main"], &commit, &[weights.clone()]);
    let content = weights.content.clone();
    server.route(
        "GET",
        "/org/model/resolve/main/model.safetensors",
        move |request, hit| match hit {
            0 => Reply::new(200).body(content.clone()).cut_after(10_000),
            1 => content_reply(request, &content).cut_after(20_000),
            _ => content_reply(request, &content),
        },
    );
    let cache = temp_cache("retry-cut");
    let local = client(&server, &cache)
        .download_file(&repo(), &Revision::main(), &path("model.safetensors"))
        .unwrap();
    assert_eq!(fs::read(&local).unwrap(), weights.content);
    let ranges: Vec<Option<String>> = server
        .requests("GET", "/org/model/resolve/main/model.safetensors")
        .iter()
        .map(|request| request.header("range").map(str::to_string))
        .collect();
    assert_eq!(
        ranges,
        [
            None,
            Some("bytes=10000-".to_string()),
            Some("bytes=30000-".to_string())
        ]
    );
}

#[test]
fn a_server_error_is_retried() {
    let server = TestServer::start();
    let commit = commit("c3");
    let config = FakeFile::new("config.json", b"{}".to_vec(), false);
    serve_repo(&server, "org/model", &["main"], &commit, &[config.clone()]);
    let content = config.content.clone();
    server.route(
        "GET",
        "/org/model/resolve/main/config.json",
        move |request, hit| {
            if hit == 0 {
                Reply::new(503)
            } else {
                content_reply(request, &content)
            }
        },
    );
    let cache = temp_cache("retry-500");
    let local = client(&server, &cache)
        .download_file(&repo(), &Revision::main(), &path("config.json"))
        .unwrap();
    assert_eq!(fs::read(&local).unwrap(), b"{}");
    assert_eq!(
        server
            .requests("GET", "/org/model/resolve/main/config.json")
            .len(),
        2
    );
}

#[test]
fn retries_are_bounded() {
    let server = TestServer::start();
    let commit = commit("c4");
    let config = FakeFile::new("config.json", b"{}".to_vec(), false);
    serve_repo(&server, "org/model", &["main"], &commit, &[config]);
    server.route("GET", "/org/model/resolve/main/config.json", |_, _| {
        Reply::new(500)
    });
    let cache = temp_cache("retry-bounded");
    let error = client(&server, &cache)
        .download_file(&repo(), &Revision::main(), &path("config.json"))
        .unwrap_err();
    assert!(
        matches!(error, HubError::Http { status: 500, .. }),
        "{error}"
    );
    assert_eq!(
        server
            .requests("GET", "/org/model/resolve/main/config.json")
            .len(),
        4
    );
}

#[test]
fn concurrent_downloads_of_one_file_make_one_blob() {
    let server = TestServer::start();
    let commit = commit("d4");
    let weights = FakeFile::new("model.safetensors", model_bytes(200_000), true);
    serve_repo(&server, "org/model", &["main"], &commit, &[weights.clone()]);
    let content = weights.content.clone();
    server.route(
        "GET",
        "/org/model/resolve/main/model.safetensors",
        move |request, _| {
            // Slow enough that every thread is past its HEAD while the first one downloads.
            std::thread::sleep(Duration::from_millis(100));
            content_reply(request, &content)
        },
    );
    let cache = temp_cache("concurrent");
    let threads: Vec<_> = (0..6)
        .map(|_| {
            let settings = settings(&server, &cache);
            std::thread::spawn(move || {
                client_with(settings).download_file(
                    &repo(),
                    &Revision::main(),
                    &path("model.safetensors"),
                )
            })
        })
        .collect();
    for thread in threads {
        let local = thread.join().unwrap().unwrap();
        assert_eq!(fs::read(&local).unwrap(), weights.content);
    }
    assert_eq!(
        files_under(&cache.join("models--org--model/blobs")),
        [weights.etag()]
    );
    assert_eq!(
        server
            .requests("GET", "/org/model/resolve/main/model.safetensors")
            .len(),
        1,
        "the lock makes the others wait and reuse the blob"
    );
}

#[test]
fn a_relative_redirect_is_followed_with_the_token() {
    let server = TestServer::start();
    let commit = commit("e5");
    let config = FakeFile::new("config.json", b"{\"renamed\": true}".to_vec(), false);
    serve_repo(&server, "org/model", &["main"], &commit, &[config.clone()]);
    server.route("HEAD", "/org/old-name/resolve/main/config.json", |_, _| {
        Reply::new(307).header("Location", "/org/model/resolve/main/config.json")
    });
    let cache = temp_cache("relative-redirect");
    let local = client(&server, &cache)
        .download_file(
            &RepoId::parse("org/old-name").unwrap(),
            &Revision::main(),
            &path("config.json"),
        )
        .unwrap();
    assert_eq!(fs::read(&local).unwrap(), config.content);
    let bearer = format!("Bearer {TOKEN}");
    let followed = server.requests("HEAD", "/org/model/resolve/main/config.json");
    assert_eq!(followed.len(), 1);
    assert_eq!(followed[0].header("authorization"), Some(bearer.as_str()));
    let get = server.requests("GET", "/org/model/resolve/main/config.json");
    assert_eq!(get[0].header("authorization"), Some(bearer.as_str()));
}

#[test]
fn the_token_does_not_follow_a_redirect_to_another_host() {
    let hub = TestServer::start();
    let cdn = TestServer::start_on("127.0.0.2");
    let commit = commit("f6");
    let weights = FakeFile::new("model.safetensors", model_bytes(30_000), true);
    let cdn_path = "/blobs/xyz?X-Amz-Signature=abc";
    let (etag, size, location) = (weights.etag(), weights.content.len(), cdn.url(cdn_path));
    let head_commit = commit.clone();
    hub.route(
        "HEAD",
        "/org/model/resolve/main/model.safetensors",
        move |_, _| {
            Reply::new(302)
                .header("Location", &location)
                .header("X-Repo-Commit", &head_commit)
                .header("X-Linked-Etag", format!("\"{etag}\""))
                .header("X-Linked-Size", size)
                // The redirect's own body length: never the file's size.
                .header("Content-Length", 13)
        },
    );
    let content = weights.content.clone();
    cdn.route("GET", cdn_path, move |request, _| {
        content_reply(request, &content)
    });
    let cache = temp_cache("cdn");

    let local = client(&hub, &cache)
        .download_file(&repo(), &Revision::main(), &path("model.safetensors"))
        .unwrap();
    assert_eq!(fs::read(&local).unwrap(), weights.content);
    let bearer = format!("Bearer {TOKEN}");
    assert!(
        hub.log()
            .iter()
            .all(|request| request.header("authorization") == Some(bearer.as_str()))
    );
    let cdn_log = cdn.log();
    assert_eq!(cdn_log.len(), 1);
    assert_eq!(
        cdn_log[0].header("authorization"),
        None,
        "no token for the CDN"
    );
    assert!(
        cdn_log
            .iter()
            .all(|request| !format!("{request:?}").contains(TOKEN))
    );
}

#[test]
fn a_redirect_without_linked_size_is_not_sized_by_its_content_length() {
    let hub = TestServer::start();
    let commit = commit("f7");
    let weights = FakeFile::new("model.safetensors", model_bytes(1_000), true);
    let (etag, location) = (weights.etag(), hub.url("/cdn/x"));
    hub.route(
        "HEAD",
        "/org/model/resolve/main/model.safetensors",
        move |_, _| {
            Reply::new(302)
                .header("Location", &location)
                .header("X-Repo-Commit", &commit)
                .header("X-Linked-Etag", &etag)
                .header("Content-Length", 1_000)
        },
    );
    let cache = temp_cache("redirect-size");
    let error = client(&hub, &cache)
        .download_file(&repo(), &Revision::main(), &path("model.safetensors"))
        .unwrap_err();
    assert!(
        matches!(error, HubError::InvalidServerValue { .. }),
        "{error}"
    );
    assert!(hub.requests("GET", "/cdn/x").is_empty());
}

#[test]
fn snapshots_download_the_included_files_and_then_answer_from_the_cache() {
    let server = TestServer::start();
    let commit = commit("a7");
    let files = [
        FakeFile::new("config.json", b"{}".to_vec(), false),
        FakeFile::new("1_Pooling/config.json", b"{\"pooling\": 1}".to_vec(), false),
        FakeFile::new("model.safetensors", model_bytes(5_000), true),
        FakeFile::new("pytorch_model.bin", b"pickle".to_vec(), true),
    ];
    serve_repo(&server, "org/model", &["main"], &commit, &files);
    let cache = temp_cache("snapshot");
    let client = client(&server, &cache);
    let include = ["*.json".to_string(), "*.safetensors".to_string()];

    let snapshot = client
        .snapshot(&repo(), &Revision::main(), &include)
        .unwrap();
    assert_eq!(snapshot.commit.as_str(), commit);
    assert_eq!(
        files_under(&snapshot.dir),
        ["1_Pooling/config.json", "config.json", "model.safetensors"]
    );
    assert_eq!(
        fs::read(snapshot.dir.join("1_Pooling/config.json")).unwrap(),
        b"{\"pooling\": 1}"
    );
    assert!(
        server
            .log()
            .iter()
            .all(|request| !request.path.contains("pytorch_model.bin")),
        "excluded files are never requested"
    );

    let before = server.connections();
    let pinned = Revision::Commit(CommitHash::parse(&commit).unwrap());
    let again = client.snapshot(&repo(), &pinned, &include).unwrap();
    assert_eq!(again, snapshot);
    assert_eq!(
        server.connections(),
        before,
        "a cached pinned snapshot needs no request"
    );
}

#[test]
fn tree_listings_follow_pagination_on_the_endpoint() {
    let server = TestServer::start();
    let commit = commit("a8");
    let first = FakeFile::new("a.json", b"1".to_vec(), false);
    let second = FakeFile::new("b/c.json", b"2".to_vec(), false);
    let tree_path = format!("/api/models/org/model/tree/{commit}?recursive=true");
    let next = format!("{tree_path}&cursor=2");
    let (entry1, entry2) = (
        serde_json::json!([{"type": "file", "path": "a.json", "size": 1, "oid": first.etag()},
                           {"type": "directory", "path": "b", "oid": first.etag()}]),
        serde_json::json!([{"type": "file", "path": "b/c.json", "size": 1, "oid": second.etag()}]),
    );
    let link = format!("<{}>; rel=\"next\"", server.url(&next));
    server.route("GET", &tree_path, move |_, _| {
        Reply::new(200).header("Link", &link).json(entry1.clone())
    });
    server.route("GET", &next, move |_, _| {
        Reply::new(200).json(entry2.clone())
    });
    let cache = temp_cache("pages");
    let files = client(&server, &cache)
        .list_files(&repo(), &CommitHash::parse(&commit).unwrap())
        .unwrap();
    let names: Vec<&str> = files.iter().map(|file| file.path.as_str()).collect();
    assert_eq!(names, ["a.json", "b/c.json"]);
    assert_eq!(files[1].etag.as_str(), second.etag());
    assert_eq!(files[1].size, 1);
}
