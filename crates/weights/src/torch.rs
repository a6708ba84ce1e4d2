//! PyTorch checkpoints (zip and legacy), read without executing pickle.
//!
//! Three containers are recognised by content ([`crate::format::detect_format`]), never by
//! name:
//!
//! - **Zip** (`torch.save` since 1.6): read by the strict [`crate::zip::parse`], then held to
//!   what `torch.save` writes: one root folder shared by every member; members `data.pkl`,
//!   `data/<decimal key>`, `version` or `.data/version` (an integer in 1..=10), `byteorder`
//!   (`little`/`big`), `.format_version`, `.storage_alignment`, `.data/serialization_id`, and
//!   nothing else. TorchScript members (`constants.pkl`, `code/…`, `model.json`,
//!   `attributes.pkl`, other `.data/…` records, any other pickle) are refused by policy: they
//!   are code, and are never handed to anything else. `data.pkl` is read by the restricted
//!   unpickler with [`PersistentIds::ZipStorage`]; it must end at its `STOP`.
//! - **Legacy** (`_use_new_zipfile_serialization=False`): five stacked pickles, all read by the
//!   same restricted unpickler — the literal magic number, protocol version 1001, the `sys_info`
//!   dict, the object (with [`PersistentIds::LegacyStorage`]) and the list of storage keys —
//!   then, per key in that order, an 8-byte little-endian element count and the storage's bytes,
//!   and nothing after the last storage.
//! - **Raw pickle**: a pickle with no storages is not a checkpoint. It is still run through the
//!   restricted unpickler (so a malicious one is refused *by policy*), then reported as
//!   [`TorchError::RawPickle`].
//!
//! **State dicts.** The object must be a dict (`dict` or `OrderedDict`). Nested dicts, lists
//! and tuples are flattened with `.`-joined names (`{"model": {"w": t}}` → `model.w`,
//! `{"layers": [t0, t1]}` → `layers.0`, `layers.1`), the way PyTorch names submodule
//! parameters, so training checkpoints (`{"state_dict": …, "epoch": 3}`) load too; integer
//! keys are written in decimal. Leaves that are not tensors (`None`, booleans, numbers,
//! strings, bytes) are metadata and ignored. Names must be unique after flattening.
//!
//! **Tensors.** Each persistent id must name an existing storage whose byte length is exactly
//! `numel × element size`; a storage referenced twice must be referenced with the same dtype
//! and element count; every storage must be referenced. Each tensor view must stay inside its
//! storage (`storage_offset + Σ (size_i − 1)·stride_i < storage elements`, checked arithmetic,
//! rank ≤ [`MAX_RANK`]); a tensor's dtype may differ from its storage's only over an untyped
//! (byte) storage. A contiguous little-endian tensor borrows a byte range of the file
//! (zero-copy); a strided view (transposed, sliced, expanded) is gathered into contiguous
//! row-major bytes, and big-endian storages (`byteorder: big`) are byte-swapped into owned
//! bytes — at most [`MAX_OWNED_BEYOND_FILE`] bytes more than the file's own size in total.

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use crate::checkpoint::{Checkpoint, TensorBytes};
use crate::dtype::Dtype;
use crate::error::{Error, Result};
use crate::format::{FileFormat, TORCH_LEGACY_PREFIX, detect_format};
use crate::mapped::MappedFile;
use crate::pickle::{
    self, PersistentIds, PickleError, StorageRef, TensorRecipe, UnpickleOptions, Value,
};
use crate::zip::{self, ZipArchive, ZipError};

/// Most dimensions a tensor may have.
pub const MAX_RANK: usize = 32;

/// Bytes the loader may assemble (strided views made contiguous, byte-swapped storages)
/// beyond the size of the file itself, so that expanded views cannot amplify a small file into
/// a huge allocation.
pub const MAX_OWNED_BEYOND_FILE: u64 = 256 * 1024 * 1024;

/// The legacy format's magic number, as a literal integer.
const LEGACY_MAGIC: i128 = 0x1950a86a20f9469cfc6c;
/// The legacy format's protocol version.
const LEGACY_PROTOCOL_VERSION: i128 = 1001;
/// Versions of the zip format PyTorch reads (`kMinSupportedFileFormatVersion` ..
/// `kMaxSupportedFileFormatVersion`).
const ZIP_VERSIONS: std::ops::RangeInclusive<i64> = 1..=10;
/// Largest small metadata record (`version`, `byteorder`, ...).
const MAX_SMALL_RECORD: usize = 128;
/// Longest storage key (decimal).
const MAX_KEY_LEN: usize = 20;

/// What is wrong with a PyTorch checkpoint, or what was refused in it. Variants name the
/// record (zip member or legacy section) and the tensor or storage concerned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TorchError {
    /// The zip container is malformed or uses a feature we refuse.
    #[error("invalid zip container: {0}")]
    Zip(#[from] ZipError),
    /// The pickle was malformed or refused.
    #[error(transparent)]
    Pickle(#[from] PickleError),
    /// A pickle in a named record was malformed or refused.
    #[error("{record}: {source}")]
    PickleIn {
        /// The record (`archive/data.pkl`, `legacy sys_info pickle`, ...).
        record: String,
        /// What the unpickler said.
        source: PickleError,
    },
    /// Bytes after the pickle's `STOP` inside its record.
    #[error("{record}: {len} bytes after the pickle's STOP opcode (offset {offset})")]
    TrailingPickleBytes {
        /// The record.
        record: String,
        /// Offset of the first byte after `STOP`, within the record.
        offset: u64,
        /// How many bytes follow.
        len: u64,
    },
    /// A member name without a `/`: a PyTorch archive keeps everything under one folder.
    #[error("zip member `{name}` is not inside a root folder (expected `<root>/data.pkl`, ...)")]
    NoRootFolder {
        /// The member.
        name: String,
    },
    /// Members under different root folders.
    #[error("zip member `{name}` is outside the archive's root folder `{root}/`")]
    MixedRoots {
        /// The root taken from the first member.
        root: String,
        /// The member outside it.
        name: String,
    },
    /// TorchScript content (code), refused by policy and never handed to another loader.
    #[error(
        "zip member `{name}` is TorchScript content ({what}); TorchScript archives contain \
         code and are not read"
    )]
    TorchScript {
        /// The member.
        name: String,
        /// What kind of content.
        what: &'static str,
    },
    /// A member a `torch.save` checkpoint does not contain.
    #[error("zip member `{name}` is not part of a PyTorch checkpoint")]
    UnexpectedRecord {
        /// The member.
        name: String,
    },
    /// A required record is missing.
    #[error("the checkpoint has no `{name}` record")]
    MissingRecord {
        /// The record's full name.
        name: String,
    },
    /// A small metadata record with a bad value.
    #[error("record `{name}`: {reason}")]
    BadRecord {
        /// The record.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A storage member (`data/<key>`) no tensor refers to.
    #[error("storage record `{name}` is not referenced by any tensor (hidden data)")]
    UnreferencedStorage {
        /// The record (or legacy key).
        name: String,
    },
    /// The pickled object is not a state dict.
    #[error("the pickled object is {found}, not a dict of tensors")]
    NotAStateDict {
        /// What it is.
        found: &'static str,
    },
    /// A dict key that cannot be part of a tensor name.
    #[error("state dict key at `{path}` is {found}, not a string or integer")]
    BadKey {
        /// The name of the enclosing dict (empty at top level).
        path: String,
        /// What the key is.
        found: &'static str,
    },
    /// A persistent id names a storage with a malformed key.
    #[error("tensor `{tensor}`: storage key {key:?} is not a canonical decimal number")]
    BadStorageKey {
        /// The tensor.
        tensor: String,
        /// The key.
        key: String,
    },
    /// A persistent id names a storage the file does not hold.
    #[error("tensor `{tensor}`: storage `{key}` does not exist in the checkpoint")]
    MissingStorage {
        /// The tensor.
        tensor: String,
        /// The storage key.
        key: String,
    },
    /// A storage's bytes are not `numel × element size`.
    #[error(
        "storage `{key}` holds {actual} bytes but its persistent id declares {numel} elements of \
         {dtype} ({})",
        expected.map_or_else(|| "more than 2^64 bytes".to_string(), |b| format!("{b} bytes"))
    )]
    StorageSizeMismatch {
        /// The storage key.
        key: String,
        /// Declared element type.
        dtype: Dtype,
        /// Declared element count.
        numel: u64,
        /// Bytes that calls for (`None` on overflow).
        expected: Option<u64>,
        /// Bytes present.
        actual: u64,
    },
    /// The same storage referenced with two different dtypes or sizes.
    #[error(
        "storage `{key}` is referenced as {first_numel} × {first_dtype} and as {second_numel} × \
         {second_dtype} (tensor `{tensor}`)"
    )]
    StorageConflict {
        /// The storage key.
        key: String,
        /// The tensor with the second reference.
        tensor: String,
        /// First dtype seen.
        first_dtype: Dtype,
        /// First element count seen.
        first_numel: u64,
        /// Second dtype.
        second_dtype: Dtype,
        /// Second element count.
        second_numel: u64,
    },
    /// A tensor's shape, strides or offset are inconsistent, overflow, or reach outside its
    /// storage.
    #[error("tensor `{tensor}`: {reason}")]
    BadView {
        /// The tensor.
        tensor: String,
        /// What is wrong.
        reason: String,
    },
    /// Copying strided or byte-swapped tensors would allocate too much.
    #[error(
        "tensor `{tensor}`: assembling it would take the loader's copies past {limit} bytes \
         (strided or expanded views amplifying the file)"
    )]
    TooMuchCopying {
        /// The tensor.
        tensor: String,
        /// The limit.
        limit: u64,
    },
    /// The legacy format's header pickles are wrong.
    #[error("legacy checkpoint: {reason}")]
    LegacyHeader {
        /// What is wrong.
        reason: String,
    },
    /// The legacy format's raw storage section is wrong.
    #[error("legacy checkpoint, storage `{key}` at offset {offset}: {reason}")]
    LegacyStorage {
        /// The storage key.
        key: String,
        /// Offset of its section in the file.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// Bytes after the last legacy storage.
    #[error("legacy checkpoint: {len} bytes after the last storage (offset {offset})")]
    LegacyTrailingBytes {
        /// Where they start.
        offset: u64,
        /// How many.
        len: u64,
    },
    /// A pickle with no storages: not a checkpoint.
    #[error(
        "a raw pickle ({found}) holds no tensor storages, so it is not a PyTorch checkpoint; \
         save with torch.save, or convert to safetensors"
    )]
    RawPickle {
        /// What the pickle evaluates to.
        found: &'static str,
    },
    /// The bytes are not a PyTorch checkpoint at all.
    #[error("not a PyTorch checkpoint (content looks like {format})")]
    NotPytorch {
        /// What the content looks like.
        format: FileFormat,
    },
}

impl TorchError {
    /// Whether this is a refusal by policy (exit code 3) rather than malformed input.
    pub fn is_policy_refusal(&self) -> bool {
        match self {
            TorchError::Pickle(source) | TorchError::PickleIn { source, .. } => {
                source.is_policy_refusal()
            }
            TorchError::TorchScript { .. } => true,
            _ => false,
        }
    }
}

/// Where a loaded tensor's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadedBytes {
    /// A byte range of the input (zero-copy).
    Range(Range<usize>),
    /// Bytes the loader assembled (a strided view made contiguous, a byte-swapped storage).
    Owned(Vec<u8>),
}

/// One tensor of a checkpoint read by [`load_from_bytes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedTensor {
    /// The (flattened) state-dict name.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Contiguous, row-major, little-endian bytes.
    pub data: LoadedBytes,
}

/// The tensors of a checkpoint read by [`load_from_bytes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedCheckpoint {
    /// [`FileFormat::PytorchZip`] or [`FileFormat::PytorchLegacy`].
    pub format: FileFormat,
    /// The tensors, in state-dict order.
    pub tensors: Vec<LoadedTensor>,
}

impl LoadedTensor {
    /// The tensor's bytes, given the input they may borrow from.
    pub fn bytes<'a>(&'a self, input: &'a [u8]) -> &'a [u8] {
        match &self.data {
            LoadedBytes::Range(range) => input.get(range.clone()).unwrap_or(&[]),
            LoadedBytes::Owned(bytes) => bytes,
        }
    }
}

/// Opens a PyTorch checkpoint (zip, legacy stacked-pickle, or a raw pickled state dict),
/// deciding which by content.
pub fn open(path: &Path) -> Result<Checkpoint> {
    let file = Arc::new(MappedFile::open(path)?);
    let loaded = load_file(&file)?;
    let mut checkpoint = Checkpoint::new(loaded.format);
    add_tensors(&mut checkpoint, file, loaded)?;
    Ok(checkpoint)
}

/// Reads `file` as a PyTorch checkpoint and adds its tensors to `checkpoint` (one shard of many).
#[allow(
    dead_code,
    reason = "called by crate::sharded, whose index reader lands separately"
)]
pub(crate) fn load_into(checkpoint: &mut Checkpoint, file: Arc<MappedFile>) -> Result<()> {
    let loaded = load_file(&file)?;
    add_tensors(checkpoint, file, loaded)
}

fn load_file(file: &MappedFile) -> Result<LoadedCheckpoint> {
    let path = file.path();
    let format = detect_format(file.bytes());
    if !matches!(
        format,
        FileFormat::PytorchZip | FileFormat::Zip | FileFormat::PytorchLegacy | FileFormat::Pickle
    ) {
        return Err(Error::UnsupportedFormat {
            path: path.to_path_buf(),
            format,
        });
    }
    load_from_bytes(file.bytes()).map_err(|source| Error::Torch {
        path: path.to_path_buf(),
        source,
    })
}

fn add_tensors(
    checkpoint: &mut Checkpoint,
    file: Arc<MappedFile>,
    loaded: LoadedCheckpoint,
) -> Result<()> {
    let source = checkpoint.add_source(file);
    for tensor in loaded.tensors {
        let bytes = match tensor.data {
            LoadedBytes::Range(range) => TensorBytes::Mapped { source, range },
            LoadedBytes::Owned(bytes) => TensorBytes::Owned(bytes),
        };
        checkpoint.insert(tensor.name, tensor.dtype, tensor.shape, bytes, source)?;
    }
    Ok(())
}

/// Reads a PyTorch checkpoint held in memory (the whole file), deciding its container by
/// content. This is what [`open`] runs on the mapped file; it is public for fuzzing and for
/// callers that already hold the bytes.
///
/// ```
/// use safeformers_weights::torch::{self, TorchError};
/// assert!(matches!(torch::load_from_bytes(b"\x89PNG"), Err(TorchError::NotPytorch { .. })));
/// ```
pub fn load_from_bytes(bytes: &[u8]) -> Result<LoadedCheckpoint, TorchError> {
    match detect_format(bytes) {
        // A zip whose first member is not `data.pkl` is still read (and refused) by the zip
        // rules, so the error says what is wrong with it.
        FileFormat::PytorchZip | FileFormat::Zip => load_zip(bytes),
        FileFormat::PytorchLegacy => load_legacy(bytes),
        FileFormat::Pickle => Err(raw_pickle(bytes)),
        format => Err(TorchError::NotPytorch { format }),
    }
}

fn options(persistent_ids: PersistentIds) -> UnpickleOptions {
    UnpickleOptions {
        persistent_ids,
        limits: pickle::Limits::default(),
    }
}

fn value_kind(value: &Value) -> &'static str {
    match value {
        Value::None => "None",
        Value::Bool(_) => "a bool",
        Value::Int(_) => "an int",
        Value::Float(_) => "a float",
        Value::Str(_) => "a str",
        Value::Bytes(_) => "bytes",
        Value::Tuple(_) => "a tuple",
        Value::List(_) => "a list",
        Value::Dict(_) => "a dict",
        Value::Tensor(_) => "a tensor",
    }
}

fn raw_pickle(bytes: &[u8]) -> TorchError {
    match pickle::unpickle(bytes, &options(PersistentIds::Forbidden)) {
        Ok(unpickled) => TorchError::RawPickle {
            found: value_kind(&unpickled.value),
        },
        Err(source) => TorchError::PickleIn {
            record: "raw pickle".to_string(),
            source,
        },
    }
}

// ---------------------------------------------------------------------------------------------
// Zip checkpoints.

/// What a member of a PyTorch zip is, by its name under the root folder.
enum Record<'n> {
    Pickle,
    Storage(&'n str),
    Version,
    DataVersion,
    ByteOrder,
    SmallNumber,
    SerializationId,
}

fn classify<'n>(name: &str, relative: &'n str) -> Result<Record<'n>, TorchError> {
    let torchscript = |what| TorchError::TorchScript {
        name: name.to_string(),
        what,
    };
    Ok(match relative {
        "data.pkl" => Record::Pickle,
        "version" => Record::Version,
        ".data/version" => Record::DataVersion,
        "byteorder" => Record::ByteOrder,
        ".format_version" | ".storage_alignment" => Record::SmallNumber,
        ".data/serialization_id" => Record::SerializationId,
        "constants.pkl" => return Err(torchscript("constants pickle")),
        "attributes.pkl" => return Err(torchscript("attributes pickle")),
        "model.json" => return Err(torchscript("model.json")),
        _ if relative.starts_with("code/") => return Err(torchscript("code")),
        _ if relative.starts_with(".data/") => return Err(torchscript("`.data/` record")),
        _ if relative.to_ascii_lowercase().ends_with(".pkl") => {
            return Err(torchscript("an extra pickle"));
        }
        _ if relative.to_ascii_lowercase().ends_with(".py") => {
            return Err(torchscript("Python source"));
        }
        _ => match relative.strip_prefix("data/") {
            Some(key) => Record::Storage(key),
            None => {
                return Err(TorchError::UnexpectedRecord {
                    name: name.to_string(),
                });
            }
        },
    })
}

/// Whether `key` is a canonical decimal storage key (`0`, `17`; not `00`, `+1`, `0 `, `../0`).
fn is_canonical_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_KEY_LEN
        && key.bytes().all(|b| b.is_ascii_digit())
        && (key == "0" || !key.starts_with('0'))
}

fn small_record<'a>(name: &str, data: &'a [u8]) -> Result<&'a str, TorchError> {
    let bad = |reason: &str| TorchError::BadRecord {
        name: name.to_string(),
        reason: reason.to_string(),
    };
    if data.len() > MAX_SMALL_RECORD {
        return Err(bad("too large for a metadata record"));
    }
    std::str::from_utf8(data).map_err(|_| bad("not UTF-8 text"))
}

fn parse_small_integer(name: &str, data: &[u8]) -> Result<i64, TorchError> {
    let text = small_record(name, data)?;
    let digits = text.strip_suffix('\n').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.len() > 18 {
        return Err(TorchError::BadRecord {
            name: name.to_string(),
            reason: format!("{text:?} is not a decimal integer"),
        });
    }
    digits.parse().map_err(|_| TorchError::BadRecord {
        name: name.to_string(),
        reason: format!("{text:?} is not a decimal integer"),
    })
}

fn load_zip(bytes: &[u8]) -> Result<LoadedCheckpoint, TorchError> {
    let archive = zip::parse(bytes)?;
    let layout = ZipLayout::read(&archive)?;
    let record = layout.pickle_name.clone();
    let unpickled =
        pickle::unpickle(layout.pickle, &options(PersistentIds::ZipStorage)).map_err(|source| {
            TorchError::PickleIn {
                record: record.clone(),
                source,
            }
        })?;
    if unpickled.consumed != layout.pickle.len() {
        return Err(TorchError::TrailingPickleBytes {
            record,
            offset: unpickled.consumed as u64,
            len: layout.pickle.len().saturating_sub(unpickled.consumed) as u64,
        });
    }
    let mut storages = Storages {
        slots: layout.storages,
        views: HashMap::new(),
    };
    let tensors = materialize(
        &unpickled.value,
        &mut storages,
        layout.big_endian,
        bytes.len(),
    )?;
    storages.all_referenced()?;
    Ok(LoadedCheckpoint {
        format: FileFormat::PytorchZip,
        tensors,
    })
}

struct ZipLayout<'a> {
    pickle: &'a [u8],
    pickle_name: String,
    storages: HashMap<String, Slot<'a>>,
    big_endian: bool,
}

impl<'a> ZipLayout<'a> {
    fn read(archive: &ZipArchive<'a>) -> Result<ZipLayout<'a>, TorchError> {
        let first = archive.entries().first().ok_or(TorchError::MissingRecord {
            name: "<root>/data.pkl".to_string(),
        })?;
        let root = match first.name.split_once('/') {
            Some((root, _)) if !root.is_empty() => root,
            _ => {
                return Err(TorchError::NoRootFolder {
                    name: first.name.to_string(),
                });
            }
        };
        let mut pickle = None;
        let mut storages = HashMap::new();
        let mut version = None;
        let mut data_version = None;
        let mut big_endian = false;
        for entry in archive.entries() {
            let relative = entry
                .name
                .strip_prefix(root)
                .and_then(|rest| rest.strip_prefix('/'))
                .ok_or_else(|| TorchError::MixedRoots {
                    root: root.to_string(),
                    name: entry.name.to_string(),
                })?;
            match classify(entry.name, relative)? {
                Record::Pickle => pickle = Some(entry.data),
                Record::Storage(key) => {
                    if !is_canonical_key(key) {
                        return Err(TorchError::UnexpectedRecord {
                            name: entry.name.to_string(),
                        });
                    }
                    storages.insert(
                        key.to_string(),
                        Slot {
                            name: entry.name.to_string(),
                            data: entry.data,
                            file_offset: usize::try_from(entry.data_offset).unwrap_or(usize::MAX),
                            seen: None,
                        },
                    );
                }
                Record::Version => version = Some(parse_small_integer(entry.name, entry.data)?),
                Record::DataVersion => {
                    data_version = Some(parse_small_integer(entry.name, entry.data)?);
                }
                Record::ByteOrder => {
                    big_endian = match small_record(entry.name, entry.data)? {
                        "little" => false,
                        "big" => true,
                        other => {
                            return Err(TorchError::BadRecord {
                                name: entry.name.to_string(),
                                reason: format!("{other:?} is neither \"little\" nor \"big\""),
                            });
                        }
                    };
                }
                Record::SmallNumber => {
                    parse_small_integer(entry.name, entry.data)?;
                }
                Record::SerializationId => {
                    small_record(entry.name, entry.data)?;
                }
            }
        }
        // PyTorch prefers `.data/version`; two different versions is a contradiction.
        let version_name = format!("{root}/version");
        let version = match (data_version, version) {
            (Some(a), Some(b)) if a != b => {
                return Err(TorchError::BadRecord {
                    name: version_name,
                    reason: format!("says {b} but `.data/version` says {a}"),
                });
            }
            (Some(v), _) | (None, Some(v)) => v,
            (None, None) => {
                return Err(TorchError::MissingRecord { name: version_name });
            }
        };
        if !ZIP_VERSIONS.contains(&version) {
            return Err(TorchError::BadRecord {
                name: version_name,
                reason: format!(
                    "format version {version} is outside the supported range {}..={}",
                    ZIP_VERSIONS.start(),
                    ZIP_VERSIONS.end()
                ),
            });
        }
        let pickle_name = format!("{root}/data.pkl");
        let pickle = pickle.ok_or(TorchError::MissingRecord {
            name: pickle_name.clone(),
        })?;
        Ok(ZipLayout {
            pickle,
            pickle_name,
            storages,
            big_endian,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Legacy checkpoints.

fn legacy_header(reason: impl Into<String>) -> TorchError {
    TorchError::LegacyHeader {
        reason: reason.into(),
    }
}

fn load_legacy(bytes: &[u8]) -> Result<LoadedCheckpoint, TorchError> {
    if !bytes.starts_with(&TORCH_LEGACY_PREFIX) {
        return Err(legacy_header(
            "the file does not start with the literal magic number",
        ));
    }
    let mut offset = 0usize;
    let mut next = |what: &str, ids: PersistentIds| -> Result<Value, TorchError> {
        let rest = bytes.get(offset..).unwrap_or(&[]);
        let unpickled =
            pickle::unpickle(rest, &options(ids)).map_err(|source| TorchError::PickleIn {
                record: format!("legacy {what} pickle at offset {offset}"),
                source,
            })?;
        offset = offset.saturating_add(unpickled.consumed);
        Ok(unpickled.value)
    };
    if next("magic number", PersistentIds::Forbidden)? != Value::Int(LEGACY_MAGIC) {
        return Err(legacy_header("wrong magic number"));
    }
    match next("protocol version", PersistentIds::Forbidden)? {
        Value::Int(LEGACY_PROTOCOL_VERSION) => {}
        other => {
            return Err(legacy_header(format!(
                "protocol version is {other:?}, not {LEGACY_PROTOCOL_VERSION}"
            )));
        }
    }
    check_sys_info(&next("sys_info", PersistentIds::Forbidden)?)?;
    let object = next("object", PersistentIds::LegacyStorage)?;
    let keys = match next("storage keys", PersistentIds::Forbidden)? {
        Value::List(keys) => keys,
        other => {
            return Err(legacy_header(format!(
                "the storage key list is {}, not a list",
                value_kind(&other)
            )));
        }
    };

    let declared = declared_storages(&object)?;
    let (slots, offset) = legacy_storages(bytes, offset, &keys, &declared)?;
    if offset != bytes.len() {
        return Err(TorchError::LegacyTrailingBytes {
            offset: offset as u64,
            len: bytes.len().saturating_sub(offset) as u64,
        });
    }
    let mut storages = Storages {
        slots,
        views: HashMap::new(),
    };
    let tensors = materialize(&object, &mut storages, false, bytes.len())?;
    storages.all_referenced()?;
    Ok(LoadedCheckpoint {
        format: FileFormat::PytorchLegacy,
        tensors,
    })
}

/// The storages a legacy checkpoint's tensors declare in their persistent ids:
/// key -> (dtype, numel); one key declared twice with different types or sizes is an error.
fn declared_storages(object: &Value) -> Result<HashMap<String, (Dtype, u64)>, TorchError> {
    let mut declared: HashMap<String, (Dtype, u64)> = HashMap::new();
    let mut conflict = None;
    visit_tensors(object, &mut |recipe| {
        let storage = &recipe.storage;
        let entry = declared
            .entry(storage.key.clone())
            .or_insert((storage.dtype, storage.numel));
        if *entry != (storage.dtype, storage.numel) && conflict.is_none() {
            conflict = Some(TorchError::StorageConflict {
                key: storage.key.clone(),
                tensor: String::new(),
                first_dtype: entry.0,
                first_numel: entry.1,
                second_dtype: storage.dtype,
                second_numel: storage.numel,
            });
        }
    });
    if let Some(error) = conflict {
        return Err(error);
    }

    Ok(declared)
}

/// The raw section after the pickles: per key, an 8-byte little-endian element count and the
/// bytes. Returns the storages and the offset where the section ends.
fn legacy_storages<'a>(
    bytes: &'a [u8],
    mut offset: usize,
    keys: &[Value],
    declared: &HashMap<String, (Dtype, u64)>,
) -> Result<(HashMap<String, Slot<'a>>, usize), TorchError> {
    let mut slots = HashMap::new();
    for key in keys {
        let Value::Str(key) = key else {
            return Err(legacy_header(format!(
                "a storage key is {}, not a str",
                value_kind(key)
            )));
        };
        let section = offset;
        let storage_error = |reason: String| TorchError::LegacyStorage {
            key: key.clone(),
            offset: section as u64,
            reason,
        };
        if !is_canonical_key(key) {
            return Err(storage_error(
                "the key is not a canonical decimal number".into(),
            ));
        }
        if slots.contains_key(key) {
            return Err(storage_error("the key is listed twice".into()));
        }
        let &(dtype, numel) = declared
            .get(key)
            .ok_or_else(|| storage_error("no tensor refers to this storage".into()))?;
        let count = bytes
            .get(offset..offset.saturating_add(8))
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_le_bytes)
            .ok_or_else(|| {
                storage_error("the element count runs past the end of the file".into())
            })?;
        if count != numel {
            return Err(storage_error(format!(
                "the file holds {count} elements but the persistent id declares {numel}"
            )));
        }
        let len = dtype
            .byte_len(numel)
            .and_then(|len| usize::try_from(len).ok())
            .ok_or_else(|| storage_error("the storage size overflows".into()))?;
        let start = offset + 8;
        let data = start
            .checked_add(len)
            .and_then(|end| bytes.get(start..end))
            .ok_or_else(|| {
                storage_error(format!(
                    "{len} bytes of {dtype} data run past the end of the file"
                ))
            })?;
        slots.insert(
            key.clone(),
            Slot {
                name: format!("legacy storage {key}"),
                data,
                file_offset: start,
                seen: None,
            },
        );
        offset = start + len;
    }
    Ok((slots, offset))
}

/// `sys_info`: `{"protocol_version": 1001, "little_endian": bool, "type_sizes": {...}}`.
///
/// Modern PyTorch writes legacy storages little-endian whatever the host, but old releases
/// wrote the host's order, and `little_endian` records only the host: a big-endian file is
/// ambiguous, so it is refused rather than guessed.
fn check_sys_info(value: &Value) -> Result<(), TorchError> {
    let Value::Dict(items) = value else {
        return Err(legacy_header(format!(
            "sys_info is {}, not a dict",
            value_kind(value)
        )));
    };
    let get = |name: &str| {
        items
            .iter()
            .find(|(key, _)| matches!(key, Value::Str(k) if k == name))
            .map(|(_, value)| value)
    };
    match get("little_endian") {
        Some(Value::Bool(true)) => {}
        Some(Value::Bool(false)) => {
            return Err(legacy_header(
                "sys_info says the file was written on a big-endian host; whether its \
                 storages are big- or little-endian depends on the PyTorch release that \
                 wrote it, so it is refused rather than guessed",
            ));
        }
        _ => return Err(legacy_header("sys_info has no boolean `little_endian`")),
    }
    if let Some(version) = get("protocol_version")
        && *version != Value::Int(LEGACY_PROTOCOL_VERSION)
    {
        return Err(legacy_header("sys_info has another protocol_version"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Storages, views and materialisation (shared by both containers).

/// One storage's bytes and how tensors have referred to it.
struct Slot<'a> {
    /// The record it came from, for error messages.
    name: String,
    data: &'a [u8],
    /// Offset of `data` in the file.
    file_offset: usize,
    /// The (dtype, numel) of the first reference.
    seen: Option<(Dtype, u64)>,
}

struct Storages<'a> {
    slots: HashMap<String, Slot<'a>>,
    /// Legacy storage views: view key -> (base key, offset, size).
    views: HashMap<String, (String, u64, u64)>,
}

/// A storage as one tensor sees it: bytes, where they are in the file, and its dtype.
struct Resolved<'a> {
    data: &'a [u8],
    file_offset: usize,
}

impl<'a> Storages<'a> {
    fn resolve(&mut self, tensor: &str, storage: &StorageRef) -> Result<Resolved<'a>, TorchError> {
        if !is_canonical_key(&storage.key) {
            return Err(TorchError::BadStorageKey {
                tensor: tensor.to_string(),
                key: storage.key.clone(),
            });
        }
        let slot = self
            .slots
            .get_mut(&storage.key)
            .ok_or_else(|| TorchError::MissingStorage {
                tensor: tensor.to_string(),
                key: storage.key.clone(),
            })?;
        let this = (storage.dtype, storage.numel);
        match slot.seen {
            Some(first) if first != this => {
                return Err(TorchError::StorageConflict {
                    key: storage.key.clone(),
                    tensor: tensor.to_string(),
                    first_dtype: first.0,
                    first_numel: first.1,
                    second_dtype: this.0,
                    second_numel: this.1,
                });
            }
            Some(_) => {}
            None => {
                let expected = storage.dtype.byte_len(storage.numel);
                if expected != Some(slot.data.len() as u64) {
                    return Err(TorchError::StorageSizeMismatch {
                        key: slot.name.clone(),
                        dtype: storage.dtype,
                        numel: storage.numel,
                        expected,
                        actual: slot.data.len() as u64,
                    });
                }
                slot.seen = Some(this);
            }
        }
        let mut resolved = Resolved {
            data: slot.data,
            file_offset: slot.file_offset,
        };
        // Legacy storage views: a slice of the base storage, in its elements.
        if let Some(view) = &storage.legacy_view {
            let bad = |reason: String| TorchError::BadView {
                tensor: tensor.to_string(),
                reason,
            };
            let this_view = (storage.key.clone(), view.offset, view.size);
            match self.views.get(&view.view_key) {
                Some(known) if *known != this_view => {
                    return Err(bad(format!(
                        "legacy storage view `{}` is declared twice differently",
                        view.view_key
                    )));
                }
                Some(_) => {}
                None => {
                    self.views.insert(view.view_key.clone(), this_view);
                }
            }
            let range = storage
                .dtype
                .byte_len(view.offset)
                .zip(
                    view.offset
                        .checked_add(view.size)
                        .and_then(|end| storage.dtype.byte_len(end)),
                )
                .and_then(|(start, end)| {
                    Some(usize::try_from(start).ok()?..usize::try_from(end).ok()?)
                })
                .filter(|range| range.end <= resolved.data.len())
                .ok_or_else(|| {
                    bad(format!(
                        "legacy storage view (offset {}, size {}) lies outside storage `{}` \
                         of {} elements",
                        view.offset, view.size, storage.key, storage.numel
                    ))
                })?;
            resolved = Resolved {
                data: resolved.data.get(range.clone()).unwrap_or(&[]),
                file_offset: resolved.file_offset + range.start,
            };
        }
        Ok(resolved)
    }

    fn all_referenced(&self) -> Result<(), TorchError> {
        let mut unreferenced: Vec<&Slot<'_>> = self
            .slots
            .values()
            .filter(|slot| slot.seen.is_none())
            .collect();
        unreferenced.sort_by_key(|slot| slot.file_offset);
        match unreferenced.first() {
            Some(slot) => Err(TorchError::UnreferencedStorage {
                name: slot.name.clone(),
            }),
            None => Ok(()),
        }
    }
}

/// Calls `visit` for every tensor recipe in `value`, depth first.
fn visit_tensors<'v>(value: &'v Value, visit: &mut dyn FnMut(&'v TensorRecipe)) {
    match value {
        Value::Tensor(recipe) => visit(recipe),
        Value::Dict(items) => {
            for (_, item) in items {
                visit_tensors(item, visit);
            }
        }
        Value::List(items) | Value::Tuple(items) => {
            for item in items {
                visit_tensors(item, visit);
            }
        }
        _ => {}
    }
}

/// The state dict's tensors with flattened names; see the module docs.
fn flatten(value: &Value) -> Result<Vec<(String, &TensorRecipe)>, TorchError> {
    fn walk<'v>(
        value: &'v Value,
        name: &str,
        out: &mut Vec<(String, &'v TensorRecipe)>,
    ) -> Result<(), TorchError> {
        let join = |key: &str| {
            if name.is_empty() {
                key.to_string()
            } else {
                format!("{name}.{key}")
            }
        };
        match value {
            Value::Tensor(recipe) => out.push((name.to_string(), recipe)),
            Value::Dict(items) => {
                for (key, item) in items {
                    let key = match key {
                        Value::Str(key) => key.clone(),
                        Value::Int(key) => key.to_string(),
                        other => {
                            return Err(TorchError::BadKey {
                                path: name.to_string(),
                                found: value_kind(other),
                            });
                        }
                    };
                    walk(item, &join(&key), out)?;
                }
            }
            Value::List(items) | Value::Tuple(items) => {
                for (index, item) in items.iter().enumerate() {
                    walk(item, &join(&index.to_string()), out)?;
                }
            }
            Value::None
            | Value::Bool(_)
            | Value::Int(_)
            | Value::Float(_)
            | Value::Str(_)
            | Value::Bytes(_) => {}
        }
        Ok(())
    }
    if !matches!(value, Value::Dict(_)) {
        return Err(TorchError::NotAStateDict {
            found: value_kind(value),
        });
    }
    let mut out = Vec::new();
    walk(value, "", &mut out)?;
    Ok(out)
}

/// Checks every tensor against its storage and produces its bytes.
fn materialize(
    value: &Value,
    storages: &mut Storages<'_>,
    big_endian: bool,
    file_len: usize,
) -> Result<Vec<LoadedTensor>, TorchError> {
    let owned_limit = (file_len as u64).saturating_add(MAX_OWNED_BEYOND_FILE);
    let mut owned_total = 0u64;
    let mut tensors = Vec::new();
    for (name, recipe) in flatten(value)? {
        let storage = storages.resolve(&name, &recipe.storage)?;
        let view = check_view(&name, recipe, storage.data.len())?;
        let needs_copy = big_endian && view.element_bytes > 1 || !view.contiguous;
        let data = if view.byte_len == 0 {
            LoadedBytes::Owned(Vec::new())
        } else if needs_copy {
            owned_total = owned_total.saturating_add(view.byte_len as u64);
            if owned_total > owned_limit {
                return Err(TorchError::TooMuchCopying {
                    tensor: name,
                    limit: owned_limit,
                });
            }
            let mut bytes = gather(&name, storage.data, &view, recipe)?;
            if big_endian {
                swap_bytes(&mut bytes, recipe.dtype);
            }
            LoadedBytes::Owned(bytes)
        } else {
            let start = storage.file_offset + view.first_byte;
            LoadedBytes::Range(start..start + view.byte_len)
        };
        let mut shape = view.shape;
        if recipe.dtype == Dtype::F4 {
            // float4_e2m1fn_x2: each indexed element is a pair of F4 values.
            match shape
                .last_mut()
                .and_then(|last| last.checked_mul(2).map(|pairs| (last, pairs)))
            {
                Some((last, pairs)) => *last = pairs,
                None => {
                    return Err(TorchError::BadView {
                        tensor: name,
                        reason: "a float4_e2m1fn_x2 scalar has no dimension to hold its pair"
                            .to_string(),
                    });
                }
            }
        }
        tensors.push(LoadedTensor {
            name,
            dtype: recipe.dtype,
            shape,
            data,
        });
    }
    Ok(tensors)
}

/// A tensor view checked against its storage.
struct CheckedView {
    shape: Vec<usize>,
    element_bytes: usize,
    /// Total bytes of the contiguous result.
    byte_len: usize,
    /// Offset of the first element in the storage, in bytes.
    first_byte: usize,
    /// Row-major contiguous: its bytes are `first_byte..first_byte + byte_len` of the storage.
    contiguous: bool,
}

fn check_view(
    tensor: &str,
    recipe: &TensorRecipe,
    storage_bytes: usize,
) -> Result<CheckedView, TorchError> {
    let bad = |reason: String| TorchError::BadView {
        tensor: tensor.to_string(),
        reason,
    };
    let overflow = || bad("shape, strides and offset overflow".to_string());
    if recipe.dtype != recipe.storage.dtype && recipe.storage.dtype != Dtype::U8 {
        return Err(bad(format!(
            "the tensor is {} but its storage is {} (only untyped byte storages may be \
             reinterpreted)",
            recipe.dtype, recipe.storage.dtype
        )));
    }
    let element_bits = crate::pickle::pickled_element_bits(recipe.dtype);
    if !element_bits.is_multiple_of(8) {
        return Err(bad(format!(
            "{} elements are smaller than a byte, which pickled storages cannot address",
            recipe.dtype
        )));
    }
    let rank = recipe.shape.len();
    if rank != recipe.stride.len() {
        return Err(bad(format!(
            "{rank} dimensions but {} strides",
            recipe.stride.len()
        )));
    }
    if rank > MAX_RANK {
        return Err(bad(format!(
            "{rank} dimensions; at most {MAX_RANK} are allowed"
        )));
    }
    let element_bytes = usize::try_from(element_bits / 8).map_err(|_| overflow())?;
    let shape = recipe
        .shape
        .iter()
        .map(|&dim| usize::try_from(dim).map_err(|_| overflow()))
        .collect::<Result<Vec<usize>, TorchError>>()?;
    let numel = shape
        .iter()
        .try_fold(1usize, |acc, &dim| acc.checked_mul(dim))
        .ok_or_else(overflow)?;
    let byte_len = numel.checked_mul(element_bytes).ok_or_else(overflow)?;
    if numel == 0 {
        // Zero-size tensors touch no storage bytes, wherever their offset points.
        return Ok(CheckedView {
            shape,
            element_bytes,
            byte_len: 0,
            first_byte: 0,
            contiguous: true,
        });
    }
    // Highest element index the view touches, in elements of the tensor's dtype.
    let mut last = recipe.storage_offset;
    for (&size, &stride) in recipe.shape.iter().zip(&recipe.stride) {
        let reach = (size - 1).checked_mul(stride).ok_or_else(overflow)?;
        last = last.checked_add(reach).ok_or_else(overflow)?;
    }
    let storage_elements = (storage_bytes / element_bytes) as u64;
    if last >= storage_elements {
        return Err(bad(format!(
            "the view reaches element {last} but its storage holds {storage_elements} elements \
             of {}",
            recipe.dtype
        )));
    }
    let first_byte = usize::try_from(recipe.storage_offset)
        .ok()
        .and_then(|offset| offset.checked_mul(element_bytes))
        .ok_or_else(overflow)?;
    let mut expected_stride = 1u64;
    let mut contiguous = true;
    for (&size, &stride) in recipe.shape.iter().zip(&recipe.stride).rev() {
        if size != 1 && stride != expected_stride {
            contiguous = false;
        }
        expected_stride = expected_stride.saturating_mul(size);
    }
    Ok(CheckedView {
        shape,
        element_bytes,
        byte_len,
        first_byte,
        contiguous,
    })
}

/// Copies a checked view into contiguous row-major bytes.
fn gather(
    tensor: &str,
    storage: &[u8],
    view: &CheckedView,
    recipe: &TensorRecipe,
) -> Result<Vec<u8>, TorchError> {
    let out_of_bounds = || TorchError::BadView {
        tensor: tensor.to_string(),
        reason: "the view reaches outside its storage".to_string(),
    };
    let mut out = Vec::with_capacity(view.byte_len);
    if view.contiguous {
        let bytes = storage
            .get(view.first_byte..view.first_byte + view.byte_len)
            .ok_or_else(out_of_bounds)?;
        out.extend_from_slice(bytes);
        return Ok(out);
    }
    let element = view.element_bytes;
    // `check_view` bounded every index below the storage's element count, so these fit.
    let strides: Vec<usize> = recipe
        .stride
        .iter()
        .map(|&s| usize::try_from(s).unwrap_or(usize::MAX))
        .collect();
    let offset = usize::try_from(recipe.storage_offset).map_err(|_| out_of_bounds())?;
    let rank = view.shape.len();
    let (inner_size, inner_stride) = match (view.shape.last(), strides.last()) {
        (Some(&size), Some(&stride)) => (size, stride),
        _ => (1, 1),
    };
    let outer = view.shape.get(..rank.saturating_sub(1)).unwrap_or(&[]);
    let mut index = vec![0usize; outer.len()];
    loop {
        let base = index
            .iter()
            .zip(&strides)
            .fold(offset, |acc, (&i, &stride)| acc + i * stride);
        if inner_stride == 1 {
            let start = base * element;
            let run = storage
                .get(start..start + inner_size * element)
                .ok_or_else(out_of_bounds)?;
            out.extend_from_slice(run);
        } else {
            for i in 0..inner_size {
                let start = (base + i * inner_stride) * element;
                let bytes = storage
                    .get(start..start + element)
                    .ok_or_else(out_of_bounds)?;
                out.extend_from_slice(bytes);
            }
        }
        // Odometer over the outer dimensions.
        let mut dim = outer.len();
        loop {
            if dim == 0 {
                return Ok(out);
            }
            dim -= 1;
            let (Some(i), Some(&size)) = (index.get_mut(dim), outer.get(dim)) else {
                return Ok(out);
            };
            *i += 1;
            if *i < size {
                break;
            }
            *i = 0;
        }
    }
}

/// Reverses the byte order of every element (each half of a complex number separately).
fn swap_bytes(bytes: &mut [u8], dtype: Dtype) {
    let unit = match dtype {
        Dtype::C64 => 4,
        other => usize::try_from(other.bits() / 8).unwrap_or(1),
    };
    if unit > 1 {
        for chunk in bytes.chunks_exact_mut(unit) {
            chunk.reverse();
        }
    }
}

#[cfg(test)]
#[allow(clippy::panic, clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::pickle::LegacyStorageView;

    fn storage(key: &str, dtype: Dtype, numel: u64) -> StorageRef {
        StorageRef {
            key: key.to_string(),
            dtype,
            location: "cpu".to_string(),
            numel,
            legacy_view: None,
        }
    }

    fn tensor(storage: StorageRef, offset: u64, shape: &[u64], stride: &[u64]) -> Value {
        Value::Tensor(TensorRecipe {
            dtype: storage.dtype,
            storage,
            storage_offset: offset,
            shape: shape.to_vec(),
            stride: stride.to_vec(),
        })
    }

    fn dict(items: Vec<(&str, Value)>) -> Value {
        Value::Dict(
            items
                .into_iter()
                .map(|(k, v)| (Value::Str(k.to_string()), v))
                .collect(),
        )
    }

    /// Storages "0".. laid out back to back in a fake file starting at offset 100.
    fn storages<'a>(data: &[&'a [u8]]) -> Storages<'a> {
        let mut offset = 100;
        let mut slots = HashMap::new();
        for (i, bytes) in data.iter().enumerate() {
            slots.insert(
                i.to_string(),
                Slot {
                    name: format!("archive/data/{i}"),
                    data: bytes,
                    file_offset: offset,
                    seen: None,
                },
            );
            offset += bytes.len();
        }
        Storages {
            slots,
            views: HashMap::new(),
        }
    }

    fn load(
        value: &Value,
        data: &[&[u8]],
        big_endian: bool,
    ) -> Result<Vec<LoadedTensor>, TorchError> {
        let mut storages = storages(data);
        let tensors = materialize(value, &mut storages, big_endian, 1000)?;
        storages.all_referenced()?;
        Ok(tensors)
    }

    fn owned(tensor: &LoadedTensor) -> Vec<u8> {
        match &tensor.data {
            LoadedBytes::Owned(bytes) => bytes.clone(),
            LoadedBytes::Range(range) => panic!("expected owned bytes, got range {range:?}"),
        }
    }

    const SIX_BYTES: &[u8] = &[0, 1, 2, 3, 4, 5];

    #[test]
    fn contiguous_tensors_are_ranges_of_the_file() {
        let value = dict(vec![
            ("a", tensor(storage("0", Dtype::U8, 6), 0, &[2, 3], &[3, 1])),
            ("b", tensor(storage("0", Dtype::U8, 6), 2, &[4], &[1])),
            (
                "empty",
                tensor(storage("0", Dtype::U8, 6), 99, &[0, 5], &[5, 1]),
            ),
        ]);
        let tensors = load(&value, &[SIX_BYTES], false).unwrap();
        assert_eq!(tensors[0].data, LoadedBytes::Range(100..106));
        assert_eq!(tensors[1].data, LoadedBytes::Range(102..106));
        assert_eq!(tensors[2].data, LoadedBytes::Owned(Vec::new()));
        assert_eq!(tensors[0].shape, vec![2, 3]);
    }

    #[test]
    fn strided_views_are_gathered_row_major() {
        let value = dict(vec![
            // Transpose of the 2×3 matrix [[0,1,2],[3,4,5]].
            ("t", tensor(storage("0", Dtype::U8, 6), 0, &[3, 2], &[1, 3])),
            // Column 1, expanded (stride 0) to 2×2.
            ("x", tensor(storage("0", Dtype::U8, 6), 1, &[2, 2], &[3, 0])),
            // Every other element.
            ("s", tensor(storage("0", Dtype::U8, 6), 1, &[3], &[2])),
        ]);
        let tensors = load(&value, &[SIX_BYTES], false).unwrap();
        assert_eq!(owned(&tensors[0]), [0, 3, 1, 4, 2, 5]);
        assert_eq!(owned(&tensors[1]), [1, 1, 4, 4]);
        assert_eq!(owned(&tensors[2]), [1, 3, 5]);
    }

    #[test]
    fn big_endian_storages_are_swapped() {
        let value = dict(vec![(
            "w",
            tensor(storage("0", Dtype::I16, 3), 0, &[3], &[1]),
        )]);
        let tensors = load(&value, &[SIX_BYTES], true).unwrap();
        assert_eq!(owned(&tensors[0]), [1, 0, 3, 2, 5, 4]);
    }

    #[test]
    fn nested_dicts_and_lists_are_flattened_and_metadata_ignored() {
        let value = dict(vec![
            ("epoch", Value::Int(3)),
            ("note", Value::Str("hi".into())),
            (
                "model",
                dict(vec![(
                    "w",
                    tensor(storage("0", Dtype::U8, 6), 0, &[6], &[1]),
                )]),
            ),
            (
                "layers",
                Value::List(vec![tensor(storage("0", Dtype::U8, 6), 0, &[1], &[1])]),
            ),
        ]);
        let names: Vec<String> = load(&value, &[SIX_BYTES], false)
            .unwrap()
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert_eq!(names, ["model.w", "layers.0"]);
    }

    #[test]
    fn refuses_non_dict_objects_and_bad_keys() {
        let t = tensor(storage("0", Dtype::U8, 6), 0, &[6], &[1]);
        assert!(matches!(
            load(&Value::List(vec![t.clone()]), &[SIX_BYTES], false),
            Err(TorchError::NotAStateDict { found: "a list" })
        ));
        let value = Value::Dict(vec![(Value::Float(1.0), t)]);
        assert!(matches!(
            load(&value, &[SIX_BYTES], false),
            Err(TorchError::BadKey {
                found: "a float",
                ..
            })
        ));
    }

    #[test]
    fn refuses_views_past_the_storage_end() {
        for (offset, shape, stride) in [
            (0u64, vec![7u64], vec![1u64]),
            (1, vec![6], vec![1]),
            (0, vec![2, 3], vec![3, 2]),
            (6, vec![1], vec![1]),
        ] {
            let value = dict(vec![(
                "w",
                tensor(storage("0", Dtype::U8, 6), offset, &shape, &stride),
            )]);
            let error = load(&value, &[SIX_BYTES], false).unwrap_err();
            assert!(matches!(error, TorchError::BadView { .. }), "{error}");
        }
    }

    #[test]
    fn refuses_overflowing_shapes_and_strides() {
        for (shape, stride) in [
            (vec![1u64 << 62, 4], vec![4u64, 1]),
            (vec![2, 2], vec![u64::MAX, 1]),
            (vec![u64::MAX, u64::MAX], vec![0, 0]),
        ] {
            let value = dict(vec![(
                "w",
                tensor(storage("0", Dtype::U8, 6), 0, &shape, &stride),
            )]);
            let error = load(&value, &[SIX_BYTES], false).unwrap_err();
            assert!(matches!(error, TorchError::BadView { .. }), "{error}");
        }
        let value = dict(vec![(
            "w",
            tensor(storage("0", Dtype::U8, 6), u64::MAX, &[1], &[1]),
        )]);
        assert!(matches!(
            load(&value, &[SIX_BYTES], false),
            Err(TorchError::BadView { .. })
        ));
    }

    #[test]
    fn refuses_rank_and_stride_count_mismatches() {
        let value = dict(vec![(
            "w",
            tensor(storage("0", Dtype::U8, 6), 0, &[1; 33], &[1; 33]),
        )]);
        assert!(matches!(
            load(&value, &[SIX_BYTES], false),
            Err(TorchError::BadView { .. })
        ));
        let value = dict(vec![(
            "w",
            tensor(storage("0", Dtype::U8, 6), 0, &[6], &[1, 1]),
        )]);
        assert!(matches!(
            load(&value, &[SIX_BYTES], false),
            Err(TorchError::BadView { .. })
        ));
    }

    #[test]
    fn refuses_storage_size_and_key_problems() {
        let value = dict(vec![(
            "w",
            tensor(storage("0", Dtype::F32, 2), 0, &[1], &[1]),
        )]);
        assert!(matches!(
            load(&value, &[SIX_BYTES], false),
            Err(TorchError::StorageSizeMismatch {
                actual: 6,
                expected: Some(8),
                ..
            })
        ));
        let value = dict(vec![(
            "w",
            tensor(storage("1", Dtype::U8, 6), 0, &[1], &[1]),
        )]);
        assert!(matches!(
            load(&value, &[SIX_BYTES], false),
            Err(TorchError::MissingStorage { .. })
        ));
        for key in ["../0", "0 ", "00", "+0", "", "-1"] {
            let value = dict(vec![(
                "w",
                tensor(storage(key, Dtype::U8, 6), 0, &[1], &[1]),
            )]);
            assert!(
                matches!(
                    load(&value, &[SIX_BYTES], false),
                    Err(TorchError::BadStorageKey { .. })
                ),
                "{key:?}"
            );
        }
    }

    #[test]
    fn refuses_one_storage_seen_with_two_dtypes() {
        let value = dict(vec![
            ("a", tensor(storage("0", Dtype::U8, 6), 0, &[6], &[1])),
            ("b", tensor(storage("0", Dtype::I16, 3), 0, &[3], &[1])),
        ]);
        assert!(matches!(
            load(&value, &[SIX_BYTES], false),
            Err(TorchError::StorageConflict {
                first_dtype: Dtype::U8,
                second_dtype: Dtype::I16,
                ..
            })
        ));
    }

    #[test]
    fn refuses_typed_storage_reinterpretation_but_reads_untyped_bytes() {
        let mut recipe = TensorRecipe {
            storage: storage("0", Dtype::I16, 3),
            dtype: Dtype::U8,
            storage_offset: 0,
            shape: vec![6],
            stride: vec![1],
        };
        let value = dict(vec![("w", Value::Tensor(recipe.clone()))]);
        assert!(matches!(
            load(&value, &[SIX_BYTES], false),
            Err(TorchError::BadView { .. })
        ));
        // `_rebuild_tensor_v3` over an UntypedStorage: offsets are in the tensor's elements.
        recipe.storage = storage("0", Dtype::U8, 6);
        recipe.dtype = Dtype::I16;
        recipe.storage_offset = 1;
        recipe.shape = vec![2];
        let value = dict(vec![("w", Value::Tensor(recipe.clone()))]);
        let tensors = load(&value, &[SIX_BYTES], false).unwrap();
        assert_eq!(tensors[0].data, LoadedBytes::Range(102..106));
        recipe.shape = vec![3];
        let value = dict(vec![("w", Value::Tensor(recipe))]);
        assert!(matches!(
            load(&value, &[SIX_BYTES], false),
            Err(TorchError::BadView { .. })
        ));
    }

    #[test]
    fn refuses_unreferenced_storages() {
        let value = dict(vec![(
            "w",
            tensor(storage("0", Dtype::U8, 6), 0, &[6], &[1]),
        )]);
        assert!(matches!(
            load(&value, &[SIX_BYTES, b"hidden"], false),
            Err(TorchError::UnreferencedStorage { name }) if name == "archive/data/1"
        ));
    }

    #[test]
    fn caps_the_bytes_copied_for_expanded_views() {
        let value = dict(vec![(
            "w",
            tensor(storage("0", Dtype::U8, 6), 0, &[1 << 40], &[0]),
        )]);
        assert!(matches!(
            load(&value, &[SIX_BYTES], false),
            Err(TorchError::TooMuchCopying { .. })
        ));
    }

    #[test]
    fn reads_legacy_storage_views() {
        let mut base = storage("0", Dtype::U8, 6);
        base.legacy_view = Some(LegacyStorageView {
            view_key: "7".into(),
            offset: 2,
            size: 3,
        });
        let value = dict(vec![("w", tensor(base.clone(), 1, &[2], &[1]))]);
        let tensors = load(&value, &[SIX_BYTES], false).unwrap();
        assert_eq!(tensors[0].data, LoadedBytes::Range(103..105));
        // Past the view's end (though inside the base storage).
        let value = dict(vec![("w", tensor(base.clone(), 2, &[2], &[1]))]);
        assert!(matches!(
            load(&value, &[SIX_BYTES], false),
            Err(TorchError::BadView { .. })
        ));
        // A view past the base storage.
        base.legacy_view = Some(LegacyStorageView {
            view_key: "7".into(),
            offset: 4,
            size: 3,
        });
        let value = dict(vec![("w", tensor(base, 0, &[1], &[1]))]);
        assert!(matches!(
            load(&value, &[SIX_BYTES], false),
            Err(TorchError::BadView { .. })
        ));
    }

    #[test]
    fn swaps_complex_halves_separately() {
        let mut bytes = [0, 1, 2, 3, 4, 5, 6, 7];
        swap_bytes(&mut bytes, Dtype::C64);
        assert_eq!(bytes, [3, 2, 1, 0, 7, 6, 5, 4]);
    }
}
