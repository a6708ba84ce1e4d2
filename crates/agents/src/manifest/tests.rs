#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

use super::*;
use serde_json::json;

fn parse(value: &Value) -> Result<ToolManifest> {
    ToolManifest::parse(value.to_string().as_bytes(), Path::new("pkg/tool.json"))
}

fn minimal() -> Value {
    json!({
        "name": "word_count",
        "description": "Counts words.",
        "parameters": {"type": "object", "properties": {"text": {"type": "string"}}}
    })
}

fn full() -> Value {
    json!({
        "name": "word_count",
        "description": "Counts words.",
        "parameters": {"type": "object", "properties": {"text": {"type": "string"}}},
        "output_schema": {"type": "object"},
        "capabilities": {
            "fs": [{"guest": "/data", "access": "ro", "purpose": "documents"},
                   {"guest": "/out", "access": "rw", "purpose": "results"}],
            "net": ["API.example.com:443", "10.0.0.1:80", "[::1]:8080"],
            "env": ["LANG", "_X1"]
        },
        "limits": {"fuel": 1000, "wall_ms": 60000, "memory_bytes": 1048576, "output_bytes": 10}
    })
}

/// The error's field and message, for a manifest `change` turned invalid.
fn field_error(change: impl FnOnce(&mut Value)) -> (String, String) {
    let mut value = full();
    change(&mut value);
    match parse(&value) {
        Err(error @ ToolError::InvalidManifest { .. }) => {
            let ToolError::InvalidManifest { ref field, .. } = error else {
                unreachable!()
            };
            (field.clone(), error.to_string())
        }
        other => panic!("expected InvalidManifest, got {other:?}"),
    }
}

fn syntax_error(value: &Value) -> String {
    match parse(value) {
        Err(error @ ToolError::ManifestSyntax { .. }) => error.to_string(),
        other => panic!("expected ManifestSyntax, got {other:?}"),
    }
}

#[test]
fn a_full_manifest_parses() {
    let manifest = parse(&full()).unwrap();
    assert_eq!(manifest.name, "word_count");
    assert_eq!(manifest.capabilities.fs[1].access, FsAccess::ReadWrite);
    let net: Vec<String> = manifest
        .capabilities
        .net
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(net, ["api.example.com:443", "10.0.0.1:80", "[::1]:8080"]);
    assert_eq!(manifest.capabilities.env, ["LANG", "_X1"]);
    assert_eq!(manifest.limits.fuel, Some(1000));
    let minimal = parse(&minimal()).unwrap();
    assert_eq!(minimal.capabilities, Capabilities::default());
    assert_eq!(minimal.requested_limits(), ToolLimits::DEFAULT);
    assert_eq!(minimal.output_schema, None);
}

#[test]
fn unknown_keys_are_errors_at_every_level() {
    let paths: [&[&str]; 4] = [
        &[],
        &["capabilities"],
        &["limits"],
        &["capabilities", "fs", "0"],
    ];
    for path in paths {
        let mut value = full();
        let mut target = &mut value;
        for segment in path {
            target = match segment.parse::<usize>() {
                Ok(index) => &mut target[index],
                Err(_) => &mut target[*segment],
            };
        }
        target["surprise"] = json!(1);
        let message = syntax_error(&value);
        assert!(
            message.contains("unknown field `surprise`") && message.contains("pkg/tool.json"),
            "{path:?}: {message}"
        );
    }
    let mut missing = minimal();
    missing.as_object_mut().unwrap().remove("description");
    assert!(syntax_error(&missing).contains("description"));
    let mut wrong_access = full();
    wrong_access["capabilities"]["fs"][0]["access"] = json!("write");
    assert!(syntax_error(&wrong_access).contains("unknown variant"));
    let mut float_limit = full();
    float_limit["limits"]["fuel"] = json!(2e10);
    assert!(
        syntax_error(&float_limit).contains("fuel") || syntax_error(&float_limit).contains("u64")
    );
}

#[test]
fn names_follow_the_pattern() {
    for bad in [
        "",
        "Word",
        "1st",
        "_x",
        "word-count",
        "wörd",
        &"a".repeat(65),
    ] {
        let (field, message) = field_error(|value| value["name"] = json!(bad));
        assert_eq!(field, "name", "{message}");
    }
    for good in ["a", "word_count", "a1_", &"a".repeat(64)] {
        let mut value = minimal();
        value["name"] = json!(good);
        assert!(parse(&value).is_ok(), "{good}");
    }
}

#[test]
fn descriptions_are_bounded() {
    let (field, message) =
        field_error(|value| value["description"] = json!("x".repeat(MAX_DESCRIPTION_BYTES + 1)));
    assert_eq!(field, "description");
    assert!(message.contains("16384"), "{message}");
    let (field, _) = field_error(|value| value["description"] = json!(" \n"));
    assert_eq!(field, "description");
    let mut at_cap = minimal();
    at_cap["description"] = json!("x".repeat(MAX_DESCRIPTION_BYTES));
    assert!(parse(&at_cap).is_ok());
}

#[test]
fn manifests_are_at_most_one_mebibyte() {
    let mut value = minimal();
    value["parameters"]["description"] = json!("x".repeat(MAX_MANIFEST_BYTES as usize));
    assert!(syntax_error(&value).contains("1048576"));
}

#[test]
fn guest_paths_are_absolute_normalized_and_unique() {
    for bad in [
        "data", "/data/", "//data", "/a//b", "/a/./b", "/a/../b", "/..", "/a=b", "/a\\b",
        "/a\u{0}b",
    ] {
        let (field, message) =
            field_error(|value| value["capabilities"]["fs"][0]["guest"] = json!(bad));
        assert_eq!(field, "capabilities.fs[0].guest", "{bad}: {message}");
    }
    let (field, message) =
        field_error(|value| value["capabilities"]["fs"][1]["guest"] = json!("/data"));
    assert_eq!(field, "capabilities.fs[1].guest");
    assert!(message.contains("twice"), "{message}");
    let (field, _) = field_error(|value| value["capabilities"]["fs"][0]["purpose"] = json!(""));
    assert_eq!(field, "capabilities.fs[0].purpose");
    assert!(check_guest_path("/").is_ok());
    assert!(check_guest_path("/a/b.c/d e").is_ok());
}

#[test]
fn net_entries_are_host_and_port() {
    for bad in [
        "example.com",
        "example.com:0",
        "example.com:65536",
        "example.com:080",
        "example.com:+80",
        "exa_mple.com:80",
        "-a.com:80",
        "a..com:80",
        "example.com.:80",
        "1.2.3:80",
        "::1:80",
        "[::1]80",
        "[nope]:80",
        "*.example.com:443",
        ":443",
        "ex ample.com:80",
    ] {
        let (field, message) = field_error(|value| value["capabilities"]["net"][0] = json!(bad));
        assert_eq!(field, "capabilities.net[0]", "{bad}: {message}");
    }
    let (_, message) =
        field_error(|value| value["capabilities"]["net"][1] = json!("api.EXAMPLE.com:443"));
    assert!(message.contains("twice"), "{message}");
    assert_eq!(
        NetTarget::parse("xn--nxasmq6b.example:65535").unwrap().port,
        65535
    );
}

#[test]
fn env_names_follow_the_pattern() {
    for bad in ["", "1A", "A-B", "A B", "É"] {
        let (field, _) = field_error(|value| value["capabilities"]["env"][0] = json!(bad));
        assert_eq!(field, "capabilities.env[0]", "{bad}");
    }
    let (_, message) = field_error(|value| value["capabilities"]["env"][1] = json!("LANG"));
    assert!(message.contains("twice"));
}

#[test]
fn limits_stay_within_the_hard_maxima() {
    for (field, over) in [
        ("fuel", 120_000_000_001_u64),
        ("wall_ms", 60_001),
        ("memory_bytes", (1 << 30) + 1),
        ("output_bytes", (16 << 20) + 1),
    ] {
        let (name, message) = field_error(|value| value["limits"][field] = json!(over));
        assert_eq!(name, format!("limits.{field}"));
        assert!(message.contains("hard maximum"), "{message}");
        let (_, message) = field_error(|value| value["limits"][field] = json!(0));
        assert!(message.contains("at least 1"), "{message}");
    }
    let mut at_max = full();
    at_max["limits"] = json!({"fuel": 120_000_000_000_u64, "wall_ms": 60_000,
                              "memory_bytes": 1_u64 << 30, "output_bytes": 16 << 20});
    assert_eq!(
        parse(&at_max).unwrap().requested_limits(),
        ToolLimits::MAXIMUM
    );
}

#[test]
fn approvals_lower_limits_and_never_raise_them() {
    let requested = RequestedLimits {
        wall_ms: Some(5_000),
        ..RequestedLimits::default()
    };
    let lower = RequestedLimits {
        wall_ms: Some(1_000),
        memory_bytes: Some(1 << 20),
        ..RequestedLimits::default()
    };
    assert!(ToolLimits::check_approval(&requested, &lower).is_ok());
    let limits = ToolLimits::resolve(&requested, Some(&lower));
    assert_eq!(limits.wall_ms, 1_000);
    assert_eq!(limits.memory_bytes, 1 << 20);
    assert_eq!(limits.fuel, ToolLimits::DEFAULT.fuel);
    let higher = RequestedLimits {
        wall_ms: Some(6_000),
        ..RequestedLimits::default()
    };
    let error = ToolLimits::check_approval(&requested, &higher).unwrap_err();
    assert!(error.is_policy_refusal(), "{error}");
    assert!(error.to_string().contains("wall_ms"), "{error}");
    // Even when recorded (a lockfile edited by hand), a higher value changes nothing.
    assert_eq!(
        ToolLimits::resolve(&requested, Some(&higher)).wall_ms,
        5_000
    );
    // Above the default but within what the tool asked for is not raising.
    let asked_more = RequestedLimits {
        fuel: Some(100_000_000_000),
        ..RequestedLimits::default()
    };
    let error = ToolLimits::check_approval(&RequestedLimits::default(), &asked_more).unwrap_err();
    assert!(matches!(error, ToolError::LimitRaised { .. }));
    let zero = RequestedLimits {
        fuel: Some(0),
        ..RequestedLimits::default()
    };
    assert!(
        ToolLimits::check_approval(&requested, &zero)
            .unwrap_err()
            .is_usage_error()
    );
}

#[test]
fn schemas_are_checked() {
    let (message, policy) = {
        let mut value = minimal();
        value["parameters"]["properties"]["text"] = json!({"$ref": "file:///etc/passwd"});
        let error = parse(&value).unwrap_err();
        (error.to_string(), error.is_policy_refusal())
    };
    assert!(policy, "{message}");
    assert!(
        message.contains("pkg/tool.json")
            && message.contains("`parameters`")
            && message.contains("$ref"),
        "{message}"
    );
    let mut output = minimal();
    output["output_schema"] = json!({"$ref": "http://127.0.0.1:1/x"});
    assert!(
        parse(&output)
            .unwrap_err()
            .to_string()
            .contains("`output_schema`")
    );
    let mut not_object = minimal();
    not_object["parameters"] = json!({"type": "string"});
    let error = parse(&not_object).unwrap_err();
    assert!(!error.is_policy_refusal());
    assert!(
        error.to_string().contains("\"type\": \"object\""),
        "{error}"
    );
}

/// T9: a deeply nested `allOf` in `tool.json` is refused by the nesting pre-check, before the
/// (recursive) JSON parser sees it; 10^5 levels are over the size cap already.
#[test]
fn t9_deep_nesting_is_refused_before_parsing() {
    let deep = |levels: usize| {
        format!(
            "{{\"name\":\"t\",\"description\":\"d\",\"parameters\":{}{{}}{}}}",
            "{\"allOf\":[".repeat(levels),
            "]}".repeat(levels)
        )
    };
    let error = ToolManifest::parse(deep(70_000).as_bytes(), Path::new("tool.json")).unwrap_err();
    assert!(
        error.to_string().contains("nested deeper than 66"),
        "{error}"
    );
    let error = ToolManifest::parse(deep(100_000).as_bytes(), Path::new("tool.json")).unwrap_err();
    assert!(matches!(error, ToolError::ManifestSyntax { .. }), "{error}");
    // Brackets inside strings do not count.
    let mut value = minimal();
    value["description"] = json!("[[[[".repeat(1000));
    assert!(parse(&value).is_ok());
}

#[test]
fn the_definition_hash_covers_what_the_model_sees() {
    let manifest = parse(&full()).unwrap();
    let path = Path::new("tool.json");
    let hash = manifest.definition_sha256(path).unwrap();
    assert_eq!(hash.len(), 64);
    assert_eq!(
        hash,
        canonical_json::canonical_sha256(&manifest.definition()).unwrap()
    );
    // Capabilities and limits are not part of the definition (they are approved as grants).
    let mut other = manifest.clone();
    other.limits = RequestedLimits::default();
    other.capabilities = Capabilities::default();
    assert_eq!(other.definition_sha256(path).unwrap(), hash);
    let mut changed = manifest.clone();
    changed.description.push('\u{200b}');
    assert_ne!(changed.definition_sha256(path).unwrap(), hash);
    // Key order and spacing in the file do not matter.
    let reordered = r#"{"parameters": {"properties": {"text": {"type": "string"}}, "type": "object"},
        "description": "Counts words.", "name": "word_count"}"#;
    let reparsed = ToolManifest::parse(reordered.as_bytes(), path).unwrap();
    assert_eq!(
        reparsed.definition_sha256(path).unwrap(),
        parse(&minimal()).unwrap().definition_sha256(path).unwrap()
    );
}

mod hostile {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Random bytes are an error, never a panic.
        #[test]
        fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = ToolManifest::parse(&bytes, Path::new("tool.json"));
        }

        /// A valid manifest with one byte changed (or cut short) is parsed or refused, never
        /// a panic.
        #[test]
        fn mutated_manifests_never_panic(at in any::<prop::sample::Index>(), byte in any::<u8>(),
                                         cut in any::<bool>()) {
            let mut bytes = full().to_string().into_bytes();
            let index = at.index(bytes.len());
            bytes[index] = byte;
            if cut {
                bytes.truncate(index);
            }
            let _ = ToolManifest::parse(&bytes, Path::new("tool.json"));
        }

        /// Grants, net targets and guest paths from any text: parsed or refused, never a panic;
        /// what parses prints as something that parses to the same grant.
        #[test]
        fn grant_texts_never_panic(text in "(fs:|net:|env:)?\\PC{0,40}") {
            let _ = NetTarget::parse(&text);
            let _ = check_guest_path(&text);
            if let Ok(grant) = crate::grants::Grant::parse(&text) {
                let again = crate::grants::Grant::parse(&grant.to_string()).unwrap();
                prop_assert_eq!(again, grant);
            }
        }
    }
}
