//! Which files of a folder the Hub would store in LFS, so that `cache import` names each blob as
//! the Hub names it: LFS files by SHA-256, other files by their git blob SHA-1.

use std::path::Path;

use safeformers_files::{ReadCap, read_capped_string_if_exists};

use crate::error::Result;
use crate::glob::glob_match;

/// The LFS patterns of the `.gitattributes` the Hub writes into a new model repo.
const HUB_DEFAULT_LFS_PATTERNS: &[&str] = &[
    "*.7z",
    "*.arrow",
    "*.bin",
    "*.bz2",
    "*.ckpt",
    "*.ftz",
    "*.gz",
    "*.h5",
    "*.joblib",
    "*.lfs.*",
    "*.mlmodel",
    "*.model",
    "*.msgpack",
    "*.npy",
    "*.npz",
    "*.onnx",
    "*.ot",
    "*.parquet",
    "*.pb",
    "*.pickle",
    "*.pkl",
    "*.pt",
    "*.pth",
    "*.rar",
    "*.safetensors",
    "saved_model/**/*",
    "*.tar.*",
    "*.tar",
    "*.tflite",
    "*.tgz",
    "*.wasm",
    "*.xz",
    "*.zip",
    "*.zst",
    "*tfevents*",
];

/// The Hub refuses plain git files of 10 MiB or more: such files are always LFS.
const HUB_LFS_SIZE_THRESHOLD: u64 = 10 * 1024 * 1024;

/// `.gitattributes` of a folder being imported: a few KiB in practice.
const GITATTRIBUTES_CAP: ReadCap = ReadCap::new("a .gitattributes file", 1 << 20);

/// One `.gitattributes` line about LFS: a pattern, and whether it turns LFS on or off.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LfsRule {
    pattern: String,
    is_lfs: bool,
}

/// The LFS rules of a folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LfsPatterns {
    rules: Vec<LfsRule>,
}

impl LfsPatterns {
    /// The rules of `dir/.gitattributes`, or the Hub's default ones when there is none.
    pub fn for_folder(dir: &Path) -> Result<LfsPatterns> {
        let path = dir.join(".gitattributes");
        Ok(
            match read_capped_string_if_exists(&path, GITATTRIBUTES_CAP)? {
                Some(text) => LfsPatterns::parse(&text),
                None => LfsPatterns::hub_default(),
            },
        )
    }

    /// The `.gitattributes` the Hub gives a new model repo.
    pub fn hub_default() -> LfsPatterns {
        LfsPatterns {
            rules: HUB_DEFAULT_LFS_PATTERNS
                .iter()
                .map(|pattern| LfsRule {
                    pattern: (*pattern).to_string(),
                    is_lfs: true,
                })
                .collect(),
        }
    }

    /// The LFS rules of `.gitattributes` text: `PATTERN ... filter=lfs ...` turns LFS on,
    /// `-filter` / `!filter` / another `filter=` turns it off; other lines are ignored.
    pub fn parse(text: &str) -> LfsPatterns {
        let mut rules = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut words = line.split_whitespace();
            let Some(pattern) = words.next() else {
                continue;
            };
            let mut is_lfs = None;
            for attribute in words {
                match attribute {
                    "filter=lfs" => is_lfs = Some(true),
                    "-filter" | "!filter" => is_lfs = Some(false),
                    other if other.starts_with("filter=") => is_lfs = Some(false),
                    _ => {}
                }
            }
            if let Some(is_lfs) = is_lfs {
                rules.push(LfsRule {
                    pattern: pattern.trim_start_matches('/').to_string(),
                    is_lfs,
                });
            }
        }
        LfsPatterns { rules }
    }

    /// Whether the Hub would store the file at `path` (a repo path) of `size` bytes in LFS: the
    /// last rule that matches decides (as in git), and large files always are.
    pub fn is_lfs(&self, path: &str, size: u64) -> bool {
        if size >= HUB_LFS_SIZE_THRESHOLD {
            return true;
        }
        let name = path.rsplit('/').next().unwrap_or(path);
        self.rules
            .iter()
            .rev()
            .find(|rule| {
                // As in git: a pattern without a slash matches the name at any depth.
                if rule.pattern.contains('/') {
                    glob_match(&rule.pattern, path)
                } else {
                    glob_match(&rule.pattern, name)
                }
            })
            .is_some_and(|rule| rule.is_lfs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hub_default_sends_weights_to_lfs_and_configs_to_git() {
        let default = LfsPatterns::hub_default();
        assert!(default.is_lfs("model.safetensors", 10));
        assert!(default.is_lfs("onnx/model.onnx", 10));
        assert!(default.is_lfs("saved_model/variables/x", 10));
        assert!(!default.is_lfs("config.json", 500));
        assert!(!default.is_lfs("tokenizer.json", 700_000));
        assert!(default.is_lfs("tokenizer.json", 11 * 1024 * 1024));
    }

    #[test]
    fn a_folder_gitattributes_decides_last_rule_first() {
        let patterns = LfsPatterns::parse(
            "# comment\n*.json filter=lfs diff=lfs merge=lfs -text\nconfig.json -filter\n\
             *.txt text\n",
        );
        assert!(patterns.is_lfs("tokenizer.json", 1));
        assert!(!patterns.is_lfs("config.json", 1));
        assert!(!patterns.is_lfs("vocab.txt", 1));
        assert!(!patterns.is_lfs("model.safetensors", 1));
    }
}
