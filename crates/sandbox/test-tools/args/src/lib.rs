//! The test tools take JSON objects of string fields (`{"path": "/data/a.txt"}`). This reads one
//! such field without serde, to keep the components small. It is test code: it understands
//! exactly the JSON the sandbox's tests send (a flat object of strings, `\"`, `\\`, `\n` and
//! `\uXXXX` escapes), and answers `None` for anything else.

/// The value of the string field `key` of the flat JSON object `json`, unescaped.
pub fn string_field(json: &str, key: &str) -> Option<String> {
    let needle = format!("\"{key}\"");
    let after_key = &json[json.find(&needle)? + needle.len()..];
    let after_colon = after_key.trim_start().strip_prefix(':')?.trim_start();
    let mut chars = after_colon.strip_prefix('"')?.chars();
    let mut value = String::new();
    loop {
        match chars.next()? {
            '"' => return Some(value),
            '\\' => match chars.next()? {
                'n' => value.push('\n'),
                't' => value.push('\t'),
                'u' => {
                    let hex: String = chars.by_ref().take(4).collect();
                    value.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                }
                other => value.push(other),
            },
            other => value.push(other),
        }
    }
}

/// The boolean field `key` of the flat JSON object `json` (`"key": true` or `false`).
pub fn bool_field(json: &str, key: &str) -> Option<bool> {
    let needle = format!("\"{key}\"");
    let after_key = &json[json.find(&needle)? + needle.len()..];
    let value = after_key.trim_start().strip_prefix(':')?.trim_start();
    if value.starts_with("true") {
        Some(true)
    } else if value.starts_with("false") {
        Some(false)
    } else {
        None
    }
}
