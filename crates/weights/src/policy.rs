//! What a load is allowed to read, and the choice of weight files in a model folder.
//!
//! The policy is set by the user (CLI flags, library options) and by nobody else: nothing in
//! this module reads a setting from the model folder, so no file in a downloaded repo can widen
//! it.

use std::path::{Path, PathBuf};

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::format::{FileFormat, detect_format};
use crate::mapped::MappedFile;

/// Which weight formats a load may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightsPolicy {
    /// Only safetensors (the default). Pickle-based checkpoints are refused.
    #[default]
    SafetensorsOnly,
    /// Pickle-based checkpoints too, read by the restricted unpickler (never by running
    /// pickle). safetensors is still preferred whenever a folder has both.
    AllowPickle,
}

/// Whether code shipped inside a model repo may run (later issues build the sandbox).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RemoteCodePolicy {
    /// Never (the default).
    #[default]
    Deny,
    /// Only the code of this exact, pinned content.
    Trust {
        /// The 40-hex commit the code was reviewed at.
        pinned_commit: String,
    },
}

/// Everything a user decides about a load. The defaults are the safe choices.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LoadPolicy {
    /// Which weight formats may be read.
    pub weights: WeightsPolicy,
    /// Whether repo code may run.
    pub remote_code: RemoteCodePolicy,
    /// Never touch the network.
    pub offline: bool,
}

impl LoadPolicy {
    /// The default policy with pickle allowed (the CLI's `--allow-pickle`).
    pub fn allowing_pickle() -> LoadPolicy {
        LoadPolicy {
            weights: WeightsPolicy::AllowPickle,
            ..LoadPolicy::default()
        }
    }

    /// Refuses `path` unless its format may be read under this policy.
    pub fn check_format(&self, path: &Path, format: FileFormat) -> Result<()> {
        if format.is_pickle_based() && self.weights == WeightsPolicy::SafetensorsOnly {
            return Err(Error::PickleNotAllowed {
                path: path.to_path_buf(),
                format,
            });
        }
        Ok(())
    }
}

/// safetensors file names, in the order Transformers looks for them.
const SAFETENSORS_SINGLE: &str = "model.safetensors";
const SAFETENSORS_INDEX: &str = "model.safetensors.index.json";
/// PyTorch file names, in the order Transformers looks for them.
const PYTORCH_SINGLE: &str = "pytorch_model.bin";
const PYTORCH_INDEX: &str = "pytorch_model.bin.index.json";
/// Extensions of pickle-based checkpoints found by other names.
const PICKLE_EXTENSIONS: [&str; 4] = ["bin", "pt", "pth", "ckpt"];

/// The weight file (or shard index) chosen for a model folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WeightsSource {
    /// One safetensors file.
    Safetensors(PathBuf),
    /// A safetensors shard index.
    SafetensorsIndex(PathBuf),
    /// One pickle-based checkpoint (format decided by content when it is opened).
    Pickle(PathBuf),
    /// A pickle-based shard index.
    PickleIndex(PathBuf),
}

impl WeightsSource {
    /// The file.
    pub fn path(&self) -> &Path {
        match self {
            WeightsSource::Safetensors(path)
            | WeightsSource::SafetensorsIndex(path)
            | WeightsSource::Pickle(path)
            | WeightsSource::PickleIndex(path) => path,
        }
    }
}

/// Chooses the weights of a model folder: safetensors whenever there is any (the standard
/// names first, then a lone `*.safetensors` or `*.safetensors.index.json`), pickle-based files
/// only when there is no safetensors. This does not consult the policy; [`open_checkpoint`] does.
pub fn choose_weights(dir: &Path) -> Result<WeightsSource> {
    let io_error = |source| Error::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error)? {
        let entry = entry.map_err(io_error)?;
        if !entry.file_type().map_err(io_error)?.is_dir()
            && let Some(name) = entry.file_name().to_str()
        {
            names.push(name.to_string());
        }
    }
    names.sort();
    let has = |name: &str| names.iter().any(|candidate| candidate == name);
    let only_one = |suffixes: &[&str]| -> Option<PathBuf> {
        let mut matching = names
            .iter()
            .filter(|name| suffixes.iter().any(|suffix| name.ends_with(suffix)));
        match (matching.next(), matching.next()) {
            (Some(name), None) => Some(dir.join(name)),
            _ => None,
        }
    };

    if has(SAFETENSORS_SINGLE) {
        return Ok(WeightsSource::Safetensors(dir.join(SAFETENSORS_SINGLE)));
    }
    if has(SAFETENSORS_INDEX) {
        return Ok(WeightsSource::SafetensorsIndex(dir.join(SAFETENSORS_INDEX)));
    }
    if let Some(path) = only_one(&[".safetensors"]) {
        return Ok(WeightsSource::Safetensors(path));
    }
    if let Some(path) = only_one(&[".safetensors.index.json"]) {
        return Ok(WeightsSource::SafetensorsIndex(path));
    }
    if has(PYTORCH_SINGLE) {
        return Ok(WeightsSource::Pickle(dir.join(PYTORCH_SINGLE)));
    }
    if has(PYTORCH_INDEX) {
        return Ok(WeightsSource::PickleIndex(dir.join(PYTORCH_INDEX)));
    }
    let pickle_suffixes: Vec<String> = PICKLE_EXTENSIONS
        .iter()
        .map(|extension| format!(".{extension}"))
        .collect();
    let pickle_suffixes: Vec<&str> = pickle_suffixes.iter().map(String::as_str).collect();
    if let Some(path) = only_one(&pickle_suffixes) {
        return Ok(WeightsSource::Pickle(path));
    }
    if let Some(path) = only_one(&[".bin.index.json", ".pt.index.json"]) {
        return Ok(WeightsSource::PickleIndex(path));
    }
    Err(Error::NoWeights {
        path: dir.to_path_buf(),
    })
}

/// Opens the weights of a model folder, or one weights file, under `policy`.
///
/// A folder's weights are chosen by [`choose_weights`]. A file's format is decided by its
/// content, never by its name: a `model.safetensors` that holds a pickle is an error, and a
/// `.bin` that holds safetensors is read as safetensors.
pub fn open_checkpoint(path: &Path, policy: &LoadPolicy) -> Result<Checkpoint> {
    let is_dir = std::fs::metadata(path)
        .map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?
        .is_dir();
    let source = if is_dir {
        choose_weights(path)?
    } else if path
        .file_name()
        .and_then(|name| name.to_str())
        .is_some_and(|name| name.ends_with(".index.json"))
    {
        WeightsSource::SafetensorsIndex(path.to_path_buf())
    } else {
        WeightsSource::Pickle(path.to_path_buf())
    };
    match source {
        WeightsSource::SafetensorsIndex(index) | WeightsSource::PickleIndex(index) => {
            crate::sharded::open_sharded(&index, policy)
        }
        WeightsSource::Safetensors(file) => crate::safetensors::open(&file),
        WeightsSource::Pickle(file) => open_file_by_content(&file, policy),
    }
}

/// Opens one weights file whatever its name says, by its content, under `policy`.
fn open_file_by_content(path: &Path, policy: &LoadPolicy) -> Result<Checkpoint> {
    let file = MappedFile::open(path)?;
    let format = detect_format(file.bytes());
    match format {
        FileFormat::Safetensors => crate::safetensors::open(path),
        FileFormat::PytorchZip | FileFormat::PytorchLegacy => {
            policy.check_format(path, format)?;
            crate::torch::open(path)
        }
        FileFormat::Pickle => {
            policy.check_format(path, format)?;
            crate::torch::open(path)
        }
        FileFormat::Zip | FileFormat::Gguf | FileFormat::Unknown => Err(Error::UnsupportedFormat {
            path: path.to_path_buf(),
            format,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder_with(files: &[&str]) -> PathBuf {
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let unique = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "safeformers-policy-{}-{unique}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for file in files {
            std::fs::write(dir.join(file), b"").unwrap();
        }
        dir
    }

    #[test]
    fn safetensors_is_preferred_over_pickle() {
        let dir = folder_with(&["pytorch_model.bin", "model.safetensors", "config.json"]);
        assert_eq!(
            choose_weights(&dir).unwrap(),
            WeightsSource::Safetensors(dir.join("model.safetensors"))
        );
        let dir = folder_with(&["pytorch_model.bin", "model.safetensors.index.json"]);
        assert_eq!(
            choose_weights(&dir).unwrap(),
            WeightsSource::SafetensorsIndex(dir.join("model.safetensors.index.json"))
        );
        let dir = folder_with(&["weights.ckpt", "adapter.safetensors"]);
        assert_eq!(
            choose_weights(&dir).unwrap(),
            WeightsSource::Safetensors(dir.join("adapter.safetensors"))
        );
    }

    #[test]
    fn pickle_only_folders_choose_pickle() {
        let dir = folder_with(&["pytorch_model.bin", "config.json"]);
        assert_eq!(
            choose_weights(&dir).unwrap(),
            WeightsSource::Pickle(dir.join("pytorch_model.bin"))
        );
        let dir = folder_with(&["pytorch_model.bin.index.json"]);
        assert_eq!(
            choose_weights(&dir).unwrap(),
            WeightsSource::PickleIndex(dir.join("pytorch_model.bin.index.json"))
        );
        let dir = folder_with(&["model.ckpt"]);
        assert_eq!(
            choose_weights(&dir).unwrap(),
            WeightsSource::Pickle(dir.join("model.ckpt"))
        );
    }

    #[test]
    fn folders_without_weights_say_what_was_looked_for() {
        let dir = folder_with(&["config.json", "a.pt", "b.pt"]);
        let error = choose_weights(&dir).unwrap_err();
        assert!(matches!(error, Error::NoWeights { .. }));
        assert!(error.to_string().contains("model.safetensors"));
    }

    #[test]
    fn pickle_only_folder_is_refused_under_the_default_policy() {
        let dir = folder_with(&[]);
        // The legacy PyTorch signature is enough: the policy refuses before parsing.
        std::fs::write(
            dir.join("pytorch_model.bin"),
            crate::format::TORCH_LEGACY_PREFIX,
        )
        .unwrap();
        let error = open_checkpoint(&dir, &LoadPolicy::default()).unwrap_err();
        assert!(error.is_policy_refusal(), "{error}");
        assert!(error.to_string().contains("--allow-pickle"), "{error}");
        let error =
            open_checkpoint(&dir.join("pytorch_model.bin"), &LoadPolicy::default()).unwrap_err();
        assert!(error.is_policy_refusal(), "{error}");
    }

    #[test]
    fn nothing_in_the_folder_widens_the_policy() {
        let dir = folder_with(&[]);
        std::fs::write(
            dir.join("pytorch_model.bin"),
            crate::format::TORCH_LEGACY_PREFIX,
        )
        .unwrap();
        // Keys a hostile repo might try: none of them is read.
        std::fs::write(
            dir.join("config.json"),
            br#"{"use_safetensors": false, "allow_pickle": true, "weights_only": false,
                "safeformers": {"weights": "AllowPickle"}}"#,
        )
        .unwrap();
        std::fs::write(dir.join(".safeformers.toml"), b"allow_pickle = true\n").unwrap();
        let error = open_checkpoint(&dir, &LoadPolicy::default()).unwrap_err();
        assert!(error.is_policy_refusal(), "{error}");
    }

    #[test]
    fn a_pickle_named_safetensors_is_not_read_as_pickle() {
        let dir = folder_with(&[]);
        std::fs::write(dir.join("model.safetensors"), b"\x80\x02cos\nsystem\n.").unwrap();
        let error = open_checkpoint(&dir, &LoadPolicy::allowing_pickle()).unwrap_err();
        assert!(matches!(error, Error::Safetensors { .. }), "{error}");
    }

    #[test]
    fn default_policy_is_the_safe_one() {
        let policy = LoadPolicy::default();
        assert_eq!(policy.weights, WeightsPolicy::SafetensorsOnly);
        assert_eq!(policy.remote_code, RemoteCodePolicy::Deny);
    }
}
