//! The mirror never serves a byte from outside the cache: not through a crafted URL (encoded
//! `..`, backslashes, absolute paths, NULs), and not through a tampered cache (a snapshot symlink
//! or a ref pointing elsewhere). Each test plants a secret next to the cache and checks that no
//! response carries it.

#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

mod mirror_support;

use std::fs;
use std::path::Path;

use mirror_support::{HttpReply, get, in_snapshot, model_cache, relink, start, temp_dir};
use safeformers_hub::{HubCache, RepoId};
use safeformers_testkit::make_fifo;

const SECRET: &[u8] = b"TOP-SECRET-not-in-the-cache";

fn plant_secret(cache: &HubCache) -> std::path::PathBuf {
    // Beside the cache root, and inside the cache root but outside any repo.
    let outside = cache.root().parent().unwrap().join("secret.txt");
    fs::write(&outside, SECRET).unwrap();
    fs::write(cache.root().join("secret.txt"), SECRET).unwrap();
    outside
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

fn assert_refused(reply: &HttpReply, target: &str) {
    assert!(
        reply.status == 400 || reply.status == 404,
        "{target}: HTTP {} {:?}",
        reply.status,
        reply.headers
    );
    assert!(!contains(&reply.body, SECRET), "{target} served the secret");
    assert!(
        !contains(&reply.body, b"root:"),
        "{target} served /etc/passwd"
    );
}

#[test]
fn crafted_paths_never_leave_the_cache() {
    let (cache, snapshot) = model_cache("traversal");
    plant_secret(&cache);
    let mirror = start(&cache);
    let addr = mirror.local_addr();
    let commit = snapshot.commit.as_str();
    let targets = [
        // In the file path.
        "/org/name/resolve/main/..%2F..%2F..%2F..%2Fsecret.txt".to_string(),
        "/org/name/resolve/main/..%2F..%2F..%2F..%2F..%2Fsecret.txt".to_string(),
        "/org/name/resolve/main/../../../../secret.txt".to_string(),
        "/org/name/resolve/main/%2e%2e/%2e%2e/%2e%2e/%2e%2e/secret.txt".to_string(),
        "/org/name/resolve/main/%2E%2E%2F%2E%2E%2F%2E%2E%2F%2E%2E%2Fsecret.txt".to_string(),
        "/org/name/resolve/main/..%5C..%5C..%5C..%5Csecret.txt".to_string(),
        "/org/name/resolve/main/%2Fetc%2Fpasswd".to_string(),
        "/org/name/resolve/main//etc/passwd".to_string(),
        "/org/name/resolve/main/..%2F..%2F..%2F..%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd".to_string(),
        "/org/name/resolve/main/C:%5Cwindows%5Cwin.ini".to_string(),
        "/org/name/resolve/main/config.json%00.txt".to_string(),
        "/org/name/resolve/main/%C0%AE%C0%AE/secret.txt".to_string(),
        format!("/org/name/resolve/{commit}/..%2F..%2Frefs%2Fmain"),
        "/org/name/resolve/main/1_Pooling/..%2F..%2F..%2F..%2Fsecret.txt".to_string(),
        // In the revision.
        "/org/name/resolve/..%2F..%2F..%2F..%2F/secret.txt".to_string(),
        "/org/name/resolve/..%2F..%2Fsnapshots/config.json".to_string(),
        "/org/name/resolve/refs%2F..%2F..%2Fx/config.json".to_string(),
        "/api/models/org/name/revision/..%2F..%2F..%2Fsecret.txt".to_string(),
        // In the repo id.
        "/..%2F..%2Fsecret.txt/resolve/main/config.json".to_string(),
        "/%2e%2e/%2e%2e/resolve/main/secret.txt".to_string(),
        "/org%2F..%2F../name/resolve/main/secret.txt".to_string(),
        "/api/models/..%2F..%2F/tree/main".to_string(),
        "/datasets/../../resolve/main/secret.txt".to_string(),
        // In a tree path.
        "/api/models/org/name/tree/main/..%2F..%2F..".to_string(),
        "/api/models/org/name/tree/main/%2Fetc".to_string(),
        // Raw files of the cache are not routes.
        "/secret.txt".to_string(),
        "/models--org--name/blobs".to_string(),
    ];
    for target in &targets {
        assert_refused(&get(addr, target), target);
    }
    // Still serving the real thing.
    assert_eq!(
        get(addr, "/org/name/resolve/main/1_Pooling/config.json").body,
        b"{\"pooling\": 1}"
    );
}

#[test]
fn tampered_snapshot_links_are_not_followed_out_of_blobs() {
    let (cache, snapshot) = model_cache("tampered");
    let outside = plant_secret(&cache);
    let outside_dir = temp_dir("tampered-outside");
    fs::write(outside_dir.join("passwd"), SECRET).unwrap();
    let repo = cache.repo(&RepoId::parse("org/name").unwrap());

    // An absolute link out of the cache, a relative one, one to a non-blob file inside the
    // repo, one to a folder outside, and one to a blob-named file outside `blobs/`.
    relink(&in_snapshot(&snapshot, "config.json"), &outside);
    relink(
        &in_snapshot(&snapshot, "1_Pooling/config.json"),
        Path::new("../../../../secret.txt"),
    );
    fs::write(repo.dir().join("refs").join("notes"), SECRET).unwrap();
    relink(
        &in_snapshot(&snapshot, "notes.txt"),
        Path::new("../../refs/notes"),
    );
    relink(&in_snapshot(&snapshot, "etc"), &outside_dir);
    let fake_blob = outside_dir.join("a".repeat(64));
    fs::write(&fake_blob, SECRET).unwrap();
    relink(&in_snapshot(&snapshot, "fake.bin"), &fake_blob);

    let mirror = start(&cache);
    let addr = mirror.local_addr();
    for path in [
        "config.json",
        "1_Pooling/config.json",
        "notes.txt",
        "etc/passwd",
        "fake.bin",
    ] {
        let target = format!("/org/name/resolve/main/{path}");
        let reply = get(addr, &target);
        assert_refused(&reply, &target);
        assert_eq!(
            reply.header("x-error-code"),
            Some("EntryNotFound"),
            "{path}"
        );
    }
    // Left out of listings too, so a client is never told to fetch them.
    let info = get(addr, "/api/models/org/name").json();
    let names: Vec<&str> = info["siblings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|sibling| sibling["rfilename"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["model.safetensors"]);
    let tree = get(addr, "/api/models/org/name/tree/main?recursive=1").json();
    assert_eq!(tree.as_array().unwrap().len(), 1);
    assert!(!contains(
        &get(addr, "/api/models/org/name/tree/main/etc").body,
        b"passwd"
    ));
    // The untouched file is still served.
    assert_eq!(
        get(addr, "/org/name/resolve/main/model.safetensors")
            .body
            .len(),
        3_000_000
    );
}

#[test]
fn a_blobs_folder_that_is_a_symlink_is_not_served() {
    let (cache, snapshot) = model_cache("blobs-link");
    let repo = cache.repo(&RepoId::parse("org/name").unwrap());
    let elsewhere = temp_dir("blobs-elsewhere");
    let blobs = repo.dir().join("blobs");
    for entry in fs::read_dir(&blobs).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), elsewhere.join(entry.file_name())).unwrap();
    }
    fs::remove_dir_all(&blobs).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &blobs).unwrap();
    assert!(in_snapshot(&snapshot, "config.json").is_file());

    let mirror = start(&cache);
    let reply = get(mirror.local_addr(), "/org/name/resolve/main/config.json");
    assert_eq!(reply.status, 404);
    assert_eq!(reply.header("x-error-code"), Some("EntryNotFound"));
}

#[test]
fn a_tampered_ref_is_not_a_path() {
    let (cache, _) = model_cache("tampered-ref");
    let repo = cache.repo(&RepoId::parse("org/name").unwrap());
    fs::write(repo.dir().join("refs/main"), "../../../../etc").unwrap();
    let mirror = start(&cache);
    let addr = mirror.local_addr();
    for target in [
        "/api/models/org/name",
        "/org/name/resolve/main/config.json",
        "/api/models/org/name/tree/main",
    ] {
        let reply = get(addr, target);
        assert_eq!(reply.status, 404, "{target}");
        assert_eq!(reply.header("x-error-code"), Some("RevisionNotFound"));
    }
}

#[test]
fn hostile_requests_get_answers_not_crashes() {
    let (cache, _) = model_cache("hostile");
    let mirror = start(&cache);
    let addr = mirror.local_addr();
    let long = format!("/org/name/resolve/main/{}", "a/".repeat(5000));
    for target in [
        long.as_str(),
        "/org/name/resolve",
        "/org/name/resolve/",
        "/org/name/resolve/main",
        "/org/name/resolve/main/",
        "/api/models//revision/main",
        "/api/models/org/name/revision/",
        "/api/models/org/name/tree/",
        "/%",
        "/%zz/%",
        "/api/models/%FF%FE",
        "/org/name/resolve/%FF/x",
        "/org/name/resolve/refs/x",
    ] {
        let reply = get(addr, target);
        assert!(
            (400..500).contains(&reply.status),
            "{target}: HTTP {}",
            reply.status
        );
    }
    for range in [
        "bytes=-",
        "bytes=18446744073709551615-",
        "bytes=0-18446744073709551615",
        "bytes=--1",
    ] {
        let reply = mirror_support::request(
            addr,
            "GET",
            "/org/name/resolve/main/config.json",
            &[("Range", range)],
        );
        assert!(matches!(reply.status, 200 | 206 | 416), "{range}");
    }
    // The server is still up.
    assert_eq!(get(addr, "/api/models/org/name").status, 200);
}

/// A FIFO or a device where the mirror reads a ref or a blob: each request is answered at once
/// (the client gives up after 60 s, which fails the test), never left waiting on a writer, and
/// `/dev/zero` is never read until memory runs out.
#[cfg(unix)]
#[test]
fn special_files_in_the_cache_never_block_a_request() {
    let (cache, snapshot) = model_cache("special-files");
    let repo = cache.repo(&RepoId::parse("org/name").unwrap());
    let mirror = start(&cache);
    let addr = mirror.local_addr();
    let commit = snapshot.commit.as_str();

    let blob = fs::canonicalize(snapshot.dir.join("config.json")).unwrap();
    fs::remove_file(&blob).unwrap();
    make_fifo(&blob);
    let reply = get(addr, &format!("/org/name/resolve/{commit}/config.json"));
    assert_eq!(reply.status, 404, "a FIFO blob");
    fs::remove_file(&blob).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &blob).unwrap();
    let reply = get(addr, &format!("/org/name/resolve/{commit}/config.json"));
    assert_eq!(reply.status, 404, "a /dev/zero blob");

    let main = repo.dir().join("refs/main");
    fs::remove_file(&main).unwrap();
    make_fifo(&main);
    let reply = get(addr, "/api/models/org/name/revision/main");
    assert!(reply.status >= 400, "a FIFO ref: HTTP {}", reply.status);
    fs::remove_file(&main).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &main).unwrap();
    let reply = get(addr, "/org/name/resolve/main/model.safetensors");
    assert!(
        reply.status >= 400,
        "a /dev/zero ref: HTTP {}",
        reply.status
    );
    // The pinned commit still serves what is a blob.
    let reply = get(
        addr,
        &format!("/org/name/resolve/{commit}/model.safetensors"),
    );
    assert_eq!(reply.status, 200);
    mirror.shutdown().unwrap();
}
