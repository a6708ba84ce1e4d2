//! SECURITY.md documents the pickle allowlist; this keeps the page and the code in step.

use std::path::Path;

use safeformers_weights::pickle::allowlist::allowed_globals;

#[test]
fn security_md_lists_every_allowlisted_global() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../SECURITY.md");
    let page = std::fs::read_to_string(&path).unwrap_or_default();
    let missing: Vec<String> = allowed_globals()
        .map(|(name, _role)| name)
        .filter(|name| !page.contains(&format!("`{name}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "{} does not list these allowlisted globals: {missing:?}",
        path.display()
    );
}
