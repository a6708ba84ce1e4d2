//! File-name patterns as `huggingface_hub`'s `allow_patterns` reads them (Python's
//! `fnmatch.fnmatchcase`), shared by the client (`snapshot` includes) and the CLI (`--include`,
//! the files a load needs, `--locked` filtering).

/// Whether `path` matches any of `patterns` (all paths when there are none).
pub fn matches_any(patterns: &[String], path: &str) -> bool {
    patterns.is_empty() || patterns.iter().any(|pattern| glob_match(pattern, path))
}

/// `fnmatch`-style matching as `huggingface_hub`'s `allow_patterns` does it (Python's
/// `fnmatch.fnmatchcase`): `*` matches any run of characters (`/` included), `?` any one
/// character, `[abc]` / `[a-z]` / `[!abc]` one character of (or not of) a set; an unclosed `[`
/// is literal.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    // Two-pointer matching with backtracking to the last `*`.
    let (mut p, mut t) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while let Some(&c) = text.get(t) {
        let step = match pattern.get(p) {
            Some('*') => {
                star = Some((p, t));
                p += 1;
                continue;
            }
            Some('?') => Some(p + 1),
            Some('[') => match match_class(&pattern, p, c) {
                Some((true, next)) => Some(next),
                Some((false, _)) => None,
                None => (c == '[').then_some(p + 1),
            },
            Some(&literal) => (literal == c).then_some(p + 1),
            None => None,
        };
        match (step, star) {
            (Some(next), _) => {
                p = next;
                t += 1;
            }
            (None, Some((star_p, star_t))) => {
                p = star_p + 1;
                t = star_t + 1;
                star = Some((star_p, star_t + 1));
            }
            (None, None) => return false,
        }
    }
    pattern
        .get(p..)
        .is_some_and(|rest| rest.iter().all(|&c| c == '*'))
}

/// Matches `c` against the set that starts at `pattern[open] == '['`: whether it matched, and
/// the index after the closing `]`; `None` when the set is not closed.
fn match_class(pattern: &[char], open: usize, c: char) -> Option<(bool, usize)> {
    let mut i = open + 1;
    let negated = matches!(pattern.get(i), Some('!'));
    if negated {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let &start = pattern.get(i)?;
        if start == ']' && !first {
            return Some((matched != negated, i + 1));
        }
        first = false;
        match (pattern.get(i + 1), pattern.get(i + 2)) {
            (Some('-'), Some(&end)) if end != ']' => {
                matched |= start <= c && c <= end;
                i += 3;
            }
            _ => {
                matched |= start == c;
                i += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_fnmatch() {
        assert!(glob_match("*.json", "config.json"));
        assert!(glob_match("*.json", "1_Pooling/config.json"));
        assert!(glob_match("*.safetensors", "model.safetensors"));
        assert!(!glob_match("*.safetensors", "model.safetensors.index.json"));
        assert!(glob_match("model-?????.bin", "model-00001.bin"));
        assert!(glob_match("*", "anything/at/all"));
        assert!(!glob_match("*.bin", "model.bin.py"));
        assert!(glob_match("a*b*c", "a-b-b-c"));
        assert!(!glob_match("a*b*c", "a-b-b-d"));
        assert!(glob_match(
            "model-0000[1-3].safetensors",
            "model-00002.safetensors"
        ));
        assert!(!glob_match(
            "model-0000[!1-3].safetensors",
            "model-00002.safetensors"
        ));
        assert!(glob_match("[]]x", "]x"));
        assert!(glob_match("a[b", "a[b"), "an unclosed `[` is literal");
        assert!(glob_match("*.[jt]s*", "config.json"));
    }

    #[test]
    fn fnmatch_follows_python() {
        let m = glob_match;
        assert!(m("*.json", "config.json"));
        assert!(m("*.json", "1_Pooling/config.json"), "`*` crosses `/`");
        assert!(!m("*.json", "model.safetensors"));
        assert!(m(
            "model-?????-of-*.safetensors",
            "model-00001-of-00002.safetensors"
        ));
        assert!(m("[!.]*", "config.json"));
        assert!(!m("[!.]*", ".gitattributes"));
        assert!(m("model[0-9].bin", "model3.bin"));
        assert!(m("*", ""));
        assert!(m("a*b*c", "aXbYbZc"));
        assert!(!m("a*b*c", "aXbYbZ"));
        assert!(m("[", "["));
        assert!(m("config.json", "config.json"));
        assert!(!m("config.json", "xconfig.json"));
    }
}
