//! What a load is allowed to read, and the choice of weight files in a model folder.
//!
//! The policy is set by the user (CLI flags, library options) and by nobody else: nothing in
//! this module reads a setting from the model folder, so no file in a downloaded repo can widen
//! it.

use std::path::{Path, PathBuf};

use safeformers_files::FileError;

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

/// Everything a user decides about reading weights. The defaults are the safe choices.
///
/// Code shipped in a model repo never runs, so there is no setting for it: a config whose
/// `auto_map` names code for an architecture we do not implement is refused by the models
/// crate. Whether the network may be used (offline) is the Hub layer's setting
/// (`HubSettings::offline`, `safeformers::Options::offline`): reading weights never touches it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LoadPolicy {
    /// Which weight formats may be read.
    pub weights: WeightsPolicy,
}

impl LoadPolicy {
    /// The default policy with pickle allowed (the CLI's `--allow-pickle`).
    pub fn allowing_pickle() -> LoadPolicy {
        LoadPolicy {
            weights: WeightsPolicy::AllowPickle,
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

    /// Refuses the weights file `path`, whose content was detected as `content`, unless this
    /// policy lets it be read. This runs before any parser sees the content, so that what the
    /// policy forbids is refused whatever its bytes.
    ///
    /// Under [`WeightsPolicy::SafetensorsOnly`] that is any pickle-based content, and any file
    /// named like a pickle-based checkpoint ([`is_pickle_named`]) whose content is not
    /// safetensors: a `pytorch_model.bin` that is a malformed zip, a gzip or a tar is a
    /// checkpoint the user did not allow, not a format error. A pickle-named file holding
    /// safetensors is read, strictly, as safetensors (no pickle is involved).
    pub fn check_weights_file(&self, path: &Path, content: FileFormat) -> Result<()> {
        self.check_format(path, content)?;
        if self.weights == WeightsPolicy::SafetensorsOnly
            && content != FileFormat::Safetensors
            && is_pickle_named(path)
        {
            return Err(Error::PickleNamedNotAllowed {
                path: path.to_path_buf(),
                content,
            });
        }
        Ok(())
    }
}

/// Extensions that name a pickle-based checkpoint (compared without regard to case).
const PICKLE_NAMED_EXTENSIONS: [&str; 7] = ["bin", "pt", "pth", "ckpt", "pkl", "pickle", "joblib"];

/// Whether `path`'s file name says it is a pickle-based checkpoint (`pytorch_model.bin`,
/// `*.pt`, `*.pth`, `*.ckpt`, `*.pkl`, `*.pickle`, `*.joblib`, in any case).
///
/// ```
/// use std::path::Path;
/// use safeformers_weights::policy::is_pickle_named;
/// assert!(is_pickle_named(Path::new("snapshots/abc/pytorch_model.bin")));
/// assert!(is_pickle_named(Path::new("model.PTH")));
/// assert!(!is_pickle_named(Path::new("model.safetensors")));
/// ```
pub fn is_pickle_named(path: &Path) -> bool {
    path.extension()
        .and_then(|extension| extension.to_str())
        .is_some_and(|extension| {
            PICKLE_NAMED_EXTENSIONS
                .iter()
                .any(|known| extension.eq_ignore_ascii_case(known))
        })
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
    let io_error = |source| Error::from(FileError::io(dir, source));
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
        .map_err(|source| FileError::io(path, source))?
        .is_dir();
    let source = if is_dir {
        choose_weights(path)?
    } else if path
        .file_name()
        .and_then(|name| name.to_str())
        .is_some_and(|name| name.ends_with(".index.json"))
    {
        if is_pickle_named(&path.with_extension("").with_extension("")) {
            WeightsSource::PickleIndex(path.to_path_buf())
        } else {
            WeightsSource::SafetensorsIndex(path.to_path_buf())
        }
    } else {
        WeightsSource::Pickle(path.to_path_buf())
    };
    match source {
        // The policy decides first: a pickle checkpoint's index is refused before it is parsed,
        // whatever its bytes.
        WeightsSource::PickleIndex(index) if policy.weights == WeightsPolicy::SafetensorsOnly => {
            Err(Error::ShardFormatRefused {
                path: index,
                reason: "the shard index of a pickle-based checkpoint, and pickle is not \
                         allowed (use --allow-pickle to read it with the restricted unpickler)"
                    .to_string(),
            })
        }
        WeightsSource::SafetensorsIndex(index) | WeightsSource::PickleIndex(index) => {
            crate::sharded::open_sharded(&index, policy)
        }
        WeightsSource::Safetensors(file) => crate::safetensors::open(&file),
        WeightsSource::Pickle(file) => open_file_by_content(&file, policy),
    }
}

/// Opens one weights file by its content, under `policy`: the policy judges the name and the
/// detected format before any parser reads the content.
fn open_file_by_content(path: &Path, policy: &LoadPolicy) -> Result<Checkpoint> {
    let file = MappedFile::open(path)?;
    let format = detect_format(file.bytes());
    policy.check_weights_file(path, format)?;
    match format {
        FileFormat::Safetensors => crate::safetensors::open(path),
        FileFormat::PytorchZip | FileFormat::PytorchLegacy | FileFormat::Pickle => {
            crate::torch::open(path)
        }
        FileFormat::Zip | FileFormat::Gguf | FileFormat::Python | FileFormat::Unknown => {
            Err(Error::UnsupportedFormat {
                path: path.to_path_buf(),
                format,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder_with(files: &[&str]) -> PathBuf {
        let dir = safeformers_testkit::scratch_dir("policy");
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

    /// Contents a `pytorch_model.bin` may hold that no weights reader accepts.
    fn unreadable_checkpoint_contents() -> Vec<(&'static str, Vec<u8>)> {
        // A tar: a 512-byte header with the `ustar` magic at offset 257, then the member.
        let mut tar = vec![0u8; 1024];
        tar[..8].copy_from_slice(b"data.pkl");
        tar[257..263].copy_from_slice(b"ustar\0");
        vec![
            (
                "malformed zip",
                b"PK\x03\x04\x14\x00 truncated central directory".to_vec(),
            ),
            (
                "gzip",
                b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03garbage".to_vec(),
            ),
            ("tar", tar),
            ("empty", Vec::new()),
            ("GGUF", b"GGUF\x03\x00\x00\x00".to_vec()),
        ]
    }

    #[test]
    fn a_pickle_named_file_is_refused_by_policy_whatever_its_bytes() {
        for (what, bytes) in unreadable_checkpoint_contents() {
            let dir = folder_with(&["config.json"]);
            std::fs::write(dir.join("pytorch_model.bin"), &bytes).unwrap();
            for path in [dir.clone(), dir.join("pytorch_model.bin")] {
                let error = open_checkpoint(&path, &LoadPolicy::default()).unwrap_err();
                assert!(error.is_policy_refusal(), "{what}: {error}");
                assert!(
                    error.to_string().contains("--allow-pickle"),
                    "{what}: {error}"
                );
                // Allowed, the content decides: none of these is a checkpoint.
                let error = open_checkpoint(&path, &LoadPolicy::allowing_pickle()).unwrap_err();
                assert!(!error.is_policy_refusal(), "{what}: {error}");
            }
            for name in ["model.pt", "model.PTH", "last.ckpt", "state.pkl"] {
                std::fs::write(dir.join(name), &bytes).unwrap();
                let error = open_checkpoint(&dir.join(name), &LoadPolicy::default()).unwrap_err();
                assert!(error.is_policy_refusal(), "{what} as {name}: {error}");
            }
        }
    }

    #[test]
    fn a_pickle_named_shard_is_refused_by_policy_whatever_its_bytes() {
        for (what, bytes) in unreadable_checkpoint_contents() {
            let dir = folder_with(&[]);
            std::fs::write(
                dir.join("pytorch_model.bin.index.json"),
                br#"{"weight_map": {"a": "pytorch_model-00001-of-00001.bin"}}"#,
            )
            .unwrap();
            std::fs::write(dir.join("pytorch_model-00001-of-00001.bin"), &bytes).unwrap();
            let error = open_checkpoint(&dir, &LoadPolicy::default()).unwrap_err();
            assert!(error.is_policy_refusal(), "{what}: {error}");
        }
    }

    #[test]
    fn a_malformed_pickle_index_is_refused_by_policy_before_it_is_parsed() {
        let dir = folder_with(&[]);
        std::fs::write(dir.join("pytorch_model.bin.index.json"), b"{not json").unwrap();
        let error = open_checkpoint(&dir, &LoadPolicy::default()).unwrap_err();
        assert!(error.is_policy_refusal(), "{error}");
        let named = dir.join("pytorch_model.bin.index.json");
        let error = open_checkpoint(&named, &LoadPolicy::default()).unwrap_err();
        assert!(error.is_policy_refusal(), "{error}");
        // With pickle allowed it is parsed, and a malformed index is a format error.
        let error = open_checkpoint(&dir, &LoadPolicy::allowing_pickle()).unwrap_err();
        assert!(!error.is_policy_refusal(), "{error}");
    }

    #[test]
    fn a_pickle_named_file_holding_safetensors_is_read_as_safetensors() {
        let data = 2.5f32.to_le_bytes();
        let view = crate::TensorView {
            name: "w",
            dtype: crate::Dtype::F32,
            shape: &[1],
            data: &data,
        };
        let bytes = crate::safetensors::serialize(&[view], &Default::default()).unwrap();
        let dir = folder_with(&[]);
        std::fs::write(dir.join("pytorch_model.bin"), bytes).unwrap();
        let checkpoint = open_checkpoint(&dir, &LoadPolicy::default()).unwrap();
        assert_eq!(checkpoint.format(), FileFormat::Safetensors);
        assert_eq!(checkpoint.tensor("w").unwrap().data, data);
        // A broken safetensors file is a format error, not a refusal: nothing pickle is read.
        std::fs::write(dir.join("pytorch_model.bin"), b"\x10\0\0\0\0\0\0\0{\"a\":").unwrap();
        let error = open_checkpoint(&dir, &LoadPolicy::default()).unwrap_err();
        assert!(matches!(error, Error::Safetensors { .. }), "{error}");
    }

    #[test]
    fn pickle_names_are_recognised_in_any_case() {
        for name in [
            "pytorch_model.bin",
            "a.PT",
            "b.Pth",
            "c.ckpt",
            "d.pkl",
            "e.pickle",
        ] {
            assert!(is_pickle_named(Path::new(name)), "{name}");
        }
        for name in [
            "model.safetensors",
            "config.json",
            "bin",
            "model.bin.index.json",
            "x.gguf",
        ] {
            assert!(!is_pickle_named(Path::new(name)), "{name}");
        }
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
    }
}
