//! Which files of a repo a model load may fetch: security policy, not convenience.
//!
//! A load fetches configuration, tokenizer and chat-template files and safetensors weights.
//! Code (`*.py`) is never fetched for a load, and pickle-based weights only when the user allowed
//! them (`--allow-pickle`, `Options::allow_pickle`), to be read by the restricted unpickler.

use crate::glob::glob_match;

/// Files a load reads under the default policy: configuration and tokenizer files (JSON, text,
/// sentencepiece models, chat templates as `chat_template.jinja` and
/// `additional_chat_templates/*.jinja`) and safetensors weights with their shard index. Code
/// (`*.py`) and pickle-based weights are never fetched for a load.
pub const MODEL_FILE_PATTERNS: &[&str] = &[
    "*.json",
    "*.txt",
    "*.model",
    "*.jinja",
    "*.safetensors",
    "*.safetensors.index.json",
];

/// Pickle-based weights and their shard index, fetched only when pickle is allowed (and then
/// read by the restricted unpickler).
pub const PICKLE_FILE_PATTERNS: &[&str] = &["*.bin", "*.pt", "*.pth", "*.ckpt", "*.bin.index.json"];

/// The include patterns of a load: [`MODEL_FILE_PATTERNS`], plus [`PICKLE_FILE_PATTERNS`] when
/// pickle is allowed.
pub fn load_patterns(allow_pickle: bool) -> Vec<String> {
    let pickle: &[&str] = if allow_pickle {
        PICKLE_FILE_PATTERNS
    } else {
        &[]
    };
    MODEL_FILE_PATTERNS
        .iter()
        .chain(pickle)
        .map(|pattern| pattern.to_string())
        .collect()
}

/// Whether `path` (a repo file path) is a weights file a load may read: safetensors, and with
/// `allow_pickle` a pickle-based checkpoint.
pub fn is_loadable_weights(path: &str, allow_pickle: bool) -> bool {
    glob_match("*.safetensors", path)
        || (allow_pickle
            && PICKLE_FILE_PATTERNS
                .iter()
                .any(|pattern| glob_match(pattern, path)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::glob::matches_any;

    #[test]
    fn the_default_policy_never_fetches_pickle_or_code() {
        let default = load_patterns(false);
        for never in [
            "pytorch_model.bin",
            "model.pt",
            "x.ckpt",
            "modeling_x.py",
            "w.pth",
        ] {
            assert!(!matches_any(&default, never), "{never}");
            assert!(!is_loadable_weights(never, false), "{never}");
        }
        for wanted in [
            "config.json",
            "tokenizer.json",
            "vocab.txt",
            "model.safetensors",
            "model.safetensors.index.json",
            "1_Pooling/config.json",
            "generation_config.json",
            "chat_template.jinja",
            "additional_chat_templates/tool_use.jinja",
        ] {
            assert!(matches_any(&default, wanted), "{wanted}");
        }
        let pickle = load_patterns(true);
        assert!(matches_any(&pickle, "pytorch_model.bin"));
        assert!(is_loadable_weights("pytorch_model.bin", true));
        assert!(!matches_any(&pickle, "modeling_x.py"));
        assert!(is_loadable_weights("model.safetensors", false));
    }
}
