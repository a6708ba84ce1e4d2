//! T1: a tool reads host files. A granted directory is all it sees: `..`, symlinks out of it,
//! absolute host paths and `/etc/passwd` all fail, and a canary planted next to the granted
//! directory never comes out; a read-only grant refuses writes, a writable one allows writes
//! inside only.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use safeformers_sandbox::{FsGrant, Grants};

use crate::{call, everything, json, quick_limits, sandbox, tool};

const CANARY: &str = "CANARY-5f0c1e9a-never-leaves-the-host";
const INSIDE: &str = "inside the granted directory";

/// `root/canary.txt` (the secret), `root/granted/inside.txt`, and inside `granted/`: symlinks
/// out (relative and absolute) and one that stays in.
fn planted() -> (PathBuf, PathBuf) {
    let root = safeformers_testkit::scratch_dir("sandbox-t1");
    let granted = root.join("granted");
    std::fs::create_dir(&granted).unwrap();
    std::fs::create_dir(granted.join("sub")).unwrap();
    std::fs::write(root.join("canary.txt"), CANARY).unwrap();
    std::fs::write(granted.join("inside.txt"), INSIDE).unwrap();
    symlink("../canary.txt", granted.join("escape")).unwrap();
    symlink(root.join("canary.txt"), granted.join("absolute_escape")).unwrap();
    symlink("..", granted.join("parent")).unwrap();
    symlink("inside.txt", granted.join("inside_link")).unwrap();
    (root, granted)
}

fn grant(guest: &str, host: &Path, writable: bool) -> Grants {
    Grants {
        fs: vec![FsGrant {
            guest: guest.to_owned(),
            host: host.to_owned(),
            writable,
        }],
        ..Grants::default()
    }
}

#[test]
fn reads_never_leave_the_granted_directory() {
    let (root, granted) = planted();
    let grants = grant("/data", &granted, false);
    let read_file = tool("read_file");
    let canary_host_path = root.join("canary.txt").display().to_string();
    let escapes = [
        "/data/../canary.txt",
        "/data/sub/../../canary.txt",
        "/data/escape",
        "/data/absolute_escape",
        "/data/parent/canary.txt",
        "../canary.txt",
        "canary.txt",
        "/canary.txt",
        canary_host_path.as_str(),
        "/etc/passwd",
        "/proc/self/environ",
    ];
    for path in escapes {
        let outcome = call(
            &sandbox(),
            &read_file,
            &grants,
            &quick_limits(),
            &json("path", path),
        );
        let leaked = String::from_utf8_lossy(&everything(&outcome)).into_owned();
        assert!(
            !leaked.contains(CANARY),
            "{path}: the canary came out: {leaked}"
        );
        assert!(
            !leaked.contains("root:"),
            "{path}: /etc/passwd came out: {leaked}"
        );
        let output = outcome.unwrap_or_else(|error| panic!("{path}: {error}"));
        assert!(
            output.result.is_err(),
            "{path}: read succeeded: {:?}",
            output.result
        );
    }
    for path in [
        "/data/inside.txt",
        "/data/inside_link",
        "/data/sub/../inside.txt",
    ] {
        let output = call(
            &sandbox(),
            &read_file,
            &grants,
            &quick_limits(),
            &json("path", path),
        );
        assert_eq!(output.unwrap().result, Ok(INSIDE.to_owned()), "{path}");
    }
}

#[test]
fn nothing_is_visible_without_a_grant() {
    let (_root, granted) = planted();
    let path = granted.join("inside.txt").display().to_string();
    let outcome = call(
        &sandbox(),
        &tool("read_file"),
        &Grants::default(),
        &quick_limits(),
        &json("path", &path),
    );
    assert!(outcome.unwrap().result.is_err());
}

#[test]
fn a_read_only_grant_refuses_writes() {
    let (_root, granted) = planted();
    let grants = grant("/data", &granted, false);
    let read_file = tool("read_file");
    for path in ["/data/new.txt", "/data/inside.txt"] {
        let arguments = format!("{{\"path\": \"{path}\", \"content\": \"overwritten\"}}");
        let output = call(&sandbox(), &read_file, &grants, &quick_limits(), &arguments).unwrap();
        assert!(output.result.is_err(), "{path}: write succeeded");
    }
    assert!(!granted.join("new.txt").exists());
    assert_eq!(
        std::fs::read_to_string(granted.join("inside.txt")).unwrap(),
        INSIDE
    );
}

#[test]
fn a_writable_grant_allows_writes_inside_only() {
    let (root, granted) = planted();
    let grants = grant("/out", &granted, true);
    let read_file = tool("read_file");
    let write = |path: &str| {
        let arguments = format!("{{\"path\": \"{path}\", \"content\": \"written by the tool\"}}");
        call(&sandbox(), &read_file, &grants, &quick_limits(), &arguments)
            .unwrap()
            .result
    };
    assert_eq!(write("/out/new.txt"), Ok("written".to_owned()));
    assert_eq!(
        std::fs::read_to_string(granted.join("new.txt")).unwrap(),
        "written by the tool"
    );
    for path in [
        "/out/../escaped.txt",
        "/out/escape",
        "/out/absolute_escape",
        "/out/parent/x.txt",
    ] {
        assert!(write(path).is_err(), "{path}: write succeeded");
    }
    assert!(!root.join("escaped.txt").exists() && !root.join("x.txt").exists());
    assert_eq!(
        std::fs::read_to_string(root.join("canary.txt")).unwrap(),
        CANARY
    );
}

#[test]
fn bad_file_grants_are_refused() {
    let (root, granted) = planted();
    let read_file = tool("read_file");
    for guest in ["data", "/data/../etc", "/./data", "/data/", "//data", ""] {
        let outcome = call(
            &sandbox(),
            &read_file,
            &grant(guest, &granted, false),
            &quick_limits(),
            "{}",
        );
        assert!(
            matches!(
                outcome,
                Err(safeformers_sandbox::SandboxError::Grant { .. })
            ),
            "{guest:?}: {outcome:?}"
        );
    }
    let missing = grant("/data", &root.join("missing"), false);
    let outcome = call(&sandbox(), &read_file, &missing, &quick_limits(), "{}");
    assert!(matches!(
        outcome,
        Err(safeformers_sandbox::SandboxError::Grant { .. })
    ));
}
