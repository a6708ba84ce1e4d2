#![no_main]
//! Feeds arbitrary text to the hub crate's own parsers of untrusted input: the mirror's request
//! routing (path and query) and `paths-info` bodies (form and JSON), repo ids, revisions and
//! repo file paths (names from a server or an index), and `.gitattributes` LFS rules (from a
//! folder being imported). None may panic or run away.

use safeformers_hub::lfs::LfsPatterns;
use safeformers_hub::mirror::parse_request_for_fuzzing;
use safeformers_hub::{RepoFilePath, RepoId, Revision};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // One input, cut into a path, a query and a body at the first two newlines.
    let mut parts = text.splitn(3, '\n');
    let path = parts.next().unwrap_or_default();
    let query = parts.next();
    let body = parts.next().unwrap_or_default().as_bytes();
    for content_type in [None, Some("application/json")] {
        let routes = parse_request_for_fuzzing(path, query, content_type, body);
        assert!(routes <= 2);
    }
    let _ = RepoId::parse(path);
    let _ = Revision::parse(path);
    if let Ok(file) = RepoFilePath::parse(path) {
        assert!(!file.as_str().split('/').any(|segment| segment == ".."));
    }
    let patterns = LfsPatterns::parse(&text);
    let _ = patterns.is_lfs(path, data.len() as u64);
});
