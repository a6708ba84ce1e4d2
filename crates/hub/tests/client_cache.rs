//! When the cache answers instead of the network (offline, pinned commits, `.no_exist`), and how
//! the server's error codes reach the caller.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::cloned_ref_to_slice_refs
)]

mod support;

use std::fs;

use safeformers_hub::{CommitHash, HubError, HubSettings, RepoId, Revision};
use support::*;

fn pinned(commit: &str) -> Revision {
    Revision::Commit(CommitHash::parse(commit).unwrap())
}

fn offline(server: &TestServer, cache: &std::path::Path) -> HubSettings {
    HubSettings {
        offline: true,
        ..settings(server, cache)
    }
}

#[test]
fn offline_opens_no_socket() {
    let server = TestServer::start();
    let commit = commit("a1");
    let config = FakeFile::new("config.json", b"{}".to_vec(), false);
    serve_repo(&server, "org/model", &["main"], &commit, &[config]);
    let cache = temp_cache("offline");
    let online = client(&server, &cache)
        .download_file(&repo(), &Revision::main(), &path("config.json"))
        .unwrap();
    let before = server.connections();

    let client = client_with(offline(&server, &cache));
    assert_eq!(
        client
            .download_file(&repo(), &Revision::main(), &path("config.json"))
            .unwrap(),
        online
    );
    assert_eq!(
        client
            .download_file(&repo(), &pinned(&commit), &path("config.json"))
            .unwrap(),
        online
    );
    assert_eq!(
        client.resolve(&repo(), &Revision::main()).unwrap().as_str(),
        commit
    );
    let snapshot = client
        .snapshot(&repo(), &Revision::main(), &["*.json".to_string()])
        .unwrap();
    assert_eq!(snapshot.commit.as_str(), commit);

    let error = client
        .download_file(&repo(), &Revision::main(), &path("model.safetensors"))
        .unwrap_err();
    assert!(
        matches!(error, HubError::NotCachedOffline { .. }),
        "{error}"
    );
    assert!(error.is_policy_refusal());
    assert!(error.to_string().contains("model.safetensors"), "{error}");
    for error in [
        client
            .snapshot(&repo(), &Revision::main(), &["*.safetensors".to_string()])
            .unwrap_err(),
        client
            .resolve(&repo(), &Revision::parse("v2").unwrap())
            .unwrap_err(),
        client
            .list_files(&repo(), &CommitHash::parse(&commit).unwrap())
            .unwrap_err(),
        client
            .download_file(
                &RepoId::parse("org/other").unwrap(),
                &Revision::main(),
                &path("config.json"),
            )
            .unwrap_err(),
    ] {
        assert!(
            matches!(error, HubError::NotCachedOffline { .. }),
            "{error}"
        );
    }
    assert_eq!(server.connections(), before, "offline: zero connections");
}

#[test]
fn a_cached_pinned_commit_needs_no_request_online() {
    let server = TestServer::start();
    let commit = commit("b2");
    let config = FakeFile::new("config.json", b"{}".to_vec(), false);
    serve_repo(&server, "org/model", &["main"], &commit, &[config]);
    let cache = temp_cache("pinned");
    let client = client(&server, &cache);
    let first = client
        .download_file(&repo(), &pinned(&commit), &path("config.json"))
        .unwrap();
    let before = server.connections();
    assert_eq!(
        client
            .download_file(&repo(), &pinned(&commit), &path("config.json"))
            .unwrap(),
        first
    );
    assert_eq!(
        client.resolve(&repo(), &pinned(&commit)).unwrap().as_str(),
        commit
    );
    client
        .snapshot(&repo(), &pinned(&commit), &["config.json".to_string()])
        .unwrap();
    assert_eq!(server.connections(), before);
}

#[test]
fn a_moved_branch_is_followed_and_the_old_pin_still_served_from_the_cache() {
    let server = TestServer::start();
    let (old, new) = (commit("c3"), commit("d4"));
    let v1 = FakeFile::new("config.json", b"{\"v\": 1}".to_vec(), false);
    let v2 = FakeFile::new("config.json", b"{\"v\": 2}".to_vec(), false);
    serve_repo(&server, "org/model", &["main"], &old, &[v1.clone()]);
    let cache = temp_cache("moved");
    let client = client(&server, &cache);
    let first = client
        .download_file(&repo(), &Revision::main(), &path("config.json"))
        .unwrap();
    assert_eq!(fs::read(&first).unwrap(), v1.content);

    // main moves on the server.
    serve_repo(&server, "org/model", &["main"], &new, &[v2.clone()]);
    let second = client
        .download_file(&repo(), &Revision::main(), &path("config.json"))
        .unwrap();
    assert_eq!(fs::read(&second).unwrap(), v2.content);
    assert_eq!(
        fs::read_to_string(cache.join("models--org--model/refs/main")).unwrap(),
        new
    );

    let before = server.connections();
    let old_file = client
        .download_file(&repo(), &pinned(&old), &path("config.json"))
        .unwrap();
    assert_eq!(fs::read(&old_file).unwrap(), v1.content);
    assert_eq!(server.connections(), before);
}

#[test]
fn a_tampered_ref_does_not_override_a_pin() {
    let server = TestServer::start();
    let (good, evil) = (commit("e5"), commit("f6"));
    let config = FakeFile::new("config.json", b"{\"good\": true}".to_vec(), false);
    serve_repo(&server, "org/model", &["main"], &good, &[config.clone()]);
    let cache = temp_cache("tampered-ref");
    let client = client(&server, &cache);
    client
        .download_file(&repo(), &Revision::main(), &path("config.json"))
        .unwrap();

    // Someone points refs/main at another snapshot in the cache.
    let repo_dir = cache.join("models--org--model");
    let evil_dir = repo_dir.join("snapshots").join(&evil);
    fs::create_dir_all(&evil_dir).unwrap();
    fs::write(evil_dir.join("config.json"), b"{\"evil\": true}").unwrap();
    fs::write(repo_dir.join("refs/main"), &evil).unwrap();

    let before = server.connections();
    let file = client
        .download_file(&repo(), &pinned(&good), &path("config.json"))
        .unwrap();
    assert_eq!(fs::read(&file).unwrap(), config.content);
    let snapshot = client
        .snapshot(&repo(), &pinned(&good), &["config.json".to_string()])
        .unwrap();
    assert_eq!(snapshot.commit.as_str(), good);
    let offline = client_with(offline(&server, &cache));
    let file = offline
        .download_file(&repo(), &pinned(&good), &path("config.json"))
        .unwrap();
    assert_eq!(fs::read(&file).unwrap(), config.content);
    assert_eq!(server.connections(), before);
}

#[test]
fn a_missing_entry_is_recorded_and_then_answered_from_the_cache() {
    let server = TestServer::start();
    let commit = commit("a7");
    let head_commit = commit.clone();
    server.route(
        "HEAD",
        "/org/model/resolve/main/missing.json",
        move |_, _| {
            Reply::hub_error(404, "EntryNotFound", "Entry not found")
                .header("X-Repo-Commit", &head_commit)
        },
    );
    let cache = temp_cache("no-exist");
    let client = client(&server, &cache);
    let error = client
        .download_file(&repo(), &Revision::main(), &path("missing.json"))
        .unwrap_err();
    assert!(matches!(error, HubError::EntryNotFound { .. }), "{error}");
    assert!(
        cache
            .join("models--org--model/.no_exist")
            .join(&commit)
            .join("missing.json")
            .is_file()
    );

    let before = server.connections();
    let error = client
        .download_file(&repo(), &pinned(&commit), &path("missing.json"))
        .unwrap_err();
    assert!(matches!(error, HubError::EntryNotFound { .. }), "{error}");
    assert_eq!(server.connections(), before);
}

#[test]
fn error_codes_map_to_typed_errors_without_the_token() {
    let server = TestServer::start();
    server.route("GET", "/api/models/org/model/revision/main", |_, _| {
        Reply::hub_error(
            404,
            "RepoNotFound",
            &format!("Repository not found {TOKEN}"),
        )
    });
    server.route("GET", "/api/models/org/private/revision/main", |_, _| {
        Reply::new(401)
    });
    server.route("GET", "/api/models/org/model/revision/nope", |_, _| {
        Reply::hub_error(404, "RevisionNotFound", "Invalid rev id: nope")
    });
    server.route("HEAD", "/org/model/resolve/main/config.json", |_, _| {
        Reply::hub_error(
            403,
            "GatedRepo",
            &format!("Access to model org/model is restricted {TOKEN}"),
        )
    });
    server.route("HEAD", "/org/model/resolve/v1/config.json", |_, _| {
        Reply::new(418).header("X-Error-Message", "teapot")
    });
    let cache = temp_cache("errors");
    let client = client(&server, &cache);

    let error = client.resolve(&repo(), &Revision::main()).unwrap_err();
    assert!(matches!(error, HubError::RepoNotFound { .. }), "{error}");
    let error = client
        .resolve(&RepoId::parse("org/private").unwrap(), &Revision::main())
        .unwrap_err();
    assert!(matches!(error, HubError::RepoNotFound { .. }), "{error}");
    assert!(error.to_string().contains("HF_TOKEN"), "{error}");
    let error = client
        .resolve(&repo(), &Revision::parse("nope").unwrap())
        .unwrap_err();
    assert!(
        matches!(error, HubError::RevisionNotFound { ref revision, .. } if revision == "nope"),
        "{error}"
    );
    let error = client
        .download_file(&repo(), &Revision::main(), &path("config.json"))
        .unwrap_err();
    assert!(matches!(error, HubError::GatedRepo { .. }), "{error}");
    assert!(!error.to_string().contains(TOKEN), "{error}");
    assert!(!format!("{error:?}").contains(TOKEN), "{error:?}");
    let error = client
        .download_file(
            &repo(),
            &Revision::parse("v1").unwrap(),
            &path("config.json"),
        )
        .unwrap_err();
    assert!(
        matches!(error, HubError::Http { status: 418, ref message, .. } if message == "teapot"),
        "{error}"
    );
    assert!(!format!("{client:?}").contains(TOKEN));
}

#[test]
fn refs_with_slashes_are_one_url_segment() {
    let server = TestServer::start();
    let commit = commit("b8");
    let config = FakeFile::new("config.json", b"{}".to_vec(), false);
    serve_repo(&server, "org/model", &["refs/pr/1"], &commit, &[config]);
    let cache = temp_cache("pr-ref");
    let client = client(&server, &cache);
    let revision = Revision::parse("refs/pr/1").unwrap();
    assert_eq!(client.resolve(&repo(), &revision).unwrap().as_str(), commit);
    assert_eq!(
        server.log()[0].path,
        "/api/models/org/model/revision/refs%2Fpr%2F1"
    );
    client
        .download_file(&repo(), &revision, &path("config.json"))
        .unwrap();
    assert_eq!(
        fs::read_to_string(cache.join("models--org--model/refs/refs/pr/1")).unwrap(),
        commit
    );
}
