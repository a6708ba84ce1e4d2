//! Which GGUF file a load reads: Transformers' `gguf_file=` ([`crate::Options::gguf_file`]).
//!
//! A `.gguf` path is read as it is. A folder or repo holding one `.gguf` file at its top (and no
//! safetensors weights) loads that file; holding several, the caller names one, else the load is
//! an [`Error::GgufChoice`] naming them. A repo load fetches only the chosen file, never the
//! other quantizations beside it.

use std::path::{Path, PathBuf};

use safeformers_files::FileError;
use safeformers_hub::load_files::{is_loadable_weights, load_patterns};

use crate::error::{Error, Result};

/// The longest GGUF file name accepted (a file name on common file systems).
const MAX_NAME_BYTES: usize = 255;

/// Whether `name` (a file name or repo path) ends in `.gguf`, in any case.
pub fn is_gguf_name(name: &str) -> bool {
    name.len() > ".gguf".len()
        && name
            .get(name.len() - ".gguf".len()..)
            .is_some_and(|extension| extension.eq_ignore_ascii_case(".gguf"))
}

/// Whether `model` is, on the local file system, a GGUF model: a `.gguf` file, or a folder
/// without `config.json` holding a `.gguf` file at its top. (A repo id or a missing path is
/// not: its resolution says what it holds.)
pub fn is_local_gguf_model(model: &Path) -> bool {
    let named_gguf = |path: &Path| {
        path.file_name()
            .and_then(|name| name.to_str())
            .is_some_and(is_gguf_name)
    };
    if model.is_file() {
        return named_gguf(model);
    }
    if !model.is_dir() || model.join("config.json").exists() {
        return false;
    }
    std::fs::read_dir(model).is_ok_and(|entries| {
        entries
            .filter_map(|entry| entry.ok())
            .any(|entry| entry.path().is_file() && named_gguf(&entry.path()))
    })
}

/// Checks a GGUF file name from outside (a flag, an API argument) before it touches the file
/// system or becomes a download pattern: one plain file name ending in `.gguf`, without path
/// separators, `..`, control characters or glob characters. The error says what is wrong.
pub fn check_gguf_file_name(name: &str) -> std::result::Result<(), String> {
    let fault = if name.is_empty() {
        Some("is empty")
    } else if name.len() > MAX_NAME_BYTES {
        Some("is longer than 255 bytes")
    } else if name.contains(['/', '\\']) {
        Some("must be a file name in the folder or repo, without path separators")
    } else if name.contains("..") {
        Some("must not contain `..`")
    } else if name.chars().any(char::is_control) {
        Some("must not contain control characters")
    } else if name.contains(['*', '?', '[', ']']) {
        Some("must not contain glob characters (`*`, `?`, `[`, `]`)")
    } else if !is_gguf_name(name) {
        Some("must end in `.gguf`")
    } else {
        None
    };
    match fault {
        Some(fault) => Err(format!("`{}` {fault}", name.escape_debug())),
        None => Ok(()),
    }
}

/// The several GGUF files of `location` as an [`Error::GgufChoice`] asking for one.
fn several(location: &str, names: &[String]) -> Error {
    Error::GgufChoice {
        location: location.to_string(),
        reason: format!(
            "holds {} GGUF files ({}); pick one with --gguf-file NAME",
            names.len(),
            names.join(", ")
        ),
    }
}

/// The chosen file is not in `location`.
fn missing(location: &str, name: &str, names: &[String]) -> Error {
    let present = if names.is_empty() {
        "it holds no GGUF file".to_string()
    } else {
        format!("its GGUF files: {}", names.join(", "))
    };
    Error::GgufChoice {
        location: location.to_string(),
        reason: format!("has no GGUF file `{name}` ({present})"),
    }
}

/// The include patterns of a model load from a repo whose files are `paths` (its listing or
/// its lockfile entry): the chosen GGUF file alone; else, without safetensors (or, allowed,
/// pickle) weights, its one top-level GGUF file alone; else the policy's load patterns.
/// Several GGUF files and no choice is an [`Error::GgufChoice`] naming them (`repo` says where).
pub fn load_include<'a>(
    paths: impl Iterator<Item = &'a str> + Clone,
    allow_pickle: bool,
    gguf_file: Option<&str>,
    repo: &str,
) -> Result<Vec<String>> {
    let ggufs: Vec<String> = paths
        .clone()
        .filter(|path| !path.contains('/') && is_gguf_name(path))
        .map(str::to_string)
        .collect();
    if let Some(name) = gguf_file {
        if !ggufs.iter().any(|found| found == name) {
            return Err(missing(repo, name, &ggufs));
        }
        return Ok(vec![name.to_string()]);
    }
    let mut paths = paths;
    if paths.any(|path| is_loadable_weights(path, allow_pickle)) {
        return Ok(load_patterns(allow_pickle));
    }
    match ggufs.as_slice() {
        [] => Ok(load_patterns(allow_pickle)),
        [one] => Ok(vec![one.clone()]),
        names => Err(several(repo, names)),
    }
}

/// The top-level `.gguf` files of `dir` (links followed), sorted by name.
fn gguf_files_in(dir: &Path) -> Result<Vec<String>> {
    let io_error =
        |source| Error::from(safeformers_models::Error::from(FileError::io(dir, source)));
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error)? {
        let entry = entry.map_err(io_error)?;
        if let Some(name) = entry.file_name().to_str()
            && is_gguf_name(name)
            && entry.path().is_file()
        {
            names.push(name.to_string());
        }
    }
    names.sort();
    Ok(names)
}

/// The GGUF file a load of folder `dir` reads: `dir/gguf_file` when one is chosen (it must be
/// there), else the one top-level `.gguf` file of a folder without `config.json`. `None` for a
/// Transformers folder; several and no choice is an [`Error::GgufChoice`].
pub fn gguf_in_folder(dir: &Path, gguf_file: Option<&str>) -> Result<Option<PathBuf>> {
    let names = gguf_files_in(dir)?;
    let location = dir.display().to_string();
    if let Some(name) = gguf_file {
        if !names.iter().any(|found| found == name) {
            return Err(missing(&location, name, &names));
        }
        return Ok(Some(dir.join(name)));
    }
    if names.is_empty() || dir.join("config.json").exists() {
        return Ok(None);
    }
    match names.as_slice() {
        [one] => Ok(Some(dir.join(one))),
        names => Err(several(&location, names)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_outside_are_plain_gguf_file_names() {
        for good in [
            "model.Q4_1.gguf",
            "SmolLM2-135M-Instruct.Q4_1.GGUF",
            "a b.gguf",
        ] {
            assert_eq!(check_gguf_file_name(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            ".gguf",
            "../model.gguf",
            "dir/model.gguf",
            "dir\\model.gguf",
            "..gguf",
            "model.gguf/",
            "model.safetensors",
            "model.gguf.part",
            "*.gguf",
            "m[1].gguf",
            "m\n.gguf",
        ] {
            assert!(check_gguf_file_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_gguf_file_name(&format!("{}.gguf", "a".repeat(300))).is_err());
    }

    #[test]
    fn a_repo_load_fetches_the_chosen_gguf_only() -> Result<()> {
        let repo = ["README.md", "a.Q4_0.gguf", "b.Q8_0.gguf", "sub/c.gguf"];
        let paths = || repo.iter().copied();
        assert_eq!(
            load_include(paths(), false, Some("b.Q8_0.gguf"), "org/x")?,
            ["b.Q8_0.gguf"]
        );
        let several = load_include(paths(), false, None, "org/x");
        assert!(several.is_err_and(|error| error.to_string().contains("a.Q4_0.gguf, b.Q8_0.gguf")));
        let missing = load_include(paths(), false, Some("sub.gguf"), "org/x");
        assert!(missing.is_err_and(|error| error.to_string().contains("has no GGUF file")));
        let one = ["config.json", "only.gguf"];
        assert_eq!(
            load_include(one.iter().copied(), false, None, "org/x")?,
            ["only.gguf"]
        );
        // Safetensors weights beside GGUF files: the Transformers load, no GGUF fetched.
        let both = ["config.json", "model.safetensors", "a.gguf", "b.gguf"];
        assert_eq!(
            load_include(both.iter().copied(), false, None, "org/x")?,
            load_patterns(false)
        );
        Ok(())
    }
}
