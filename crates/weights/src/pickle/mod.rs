//! Pickle, read by a virtual machine that never imports or calls anything.
//!
//! Python's pickle is a small stack machine whose `GLOBAL`/`STACK_GLOBAL` opcodes import any
//! attribute of any module and whose `REDUCE`/`NEWOBJ`/`BUILD` opcodes call it. Loading one is
//! running code. This module decodes the same opcodes but resolves globals against an exact
//! allowlist ([`allowlist`]) to typed Rust constructors with fixed argument schemas, and builds
//! an inert [`Value`] tree; anything else is refused with the offending `module.name`.
//!
//! The same opcode decoder ([`opcodes`]) runs in observe mode in [`scanner`], which reports every
//! import and call Python *would* make, without refusing early, so `safeformers scan` and the
//! loader can never disagree about what a byte stream says.

pub mod allowlist;
pub mod opcodes;
pub mod scanner;
pub mod unpickler;

use crate::dtype::Dtype;

pub use unpickler::unpickle;

/// Why a pickle stream could not be read, or was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PickleError {
    /// Placeholder until the unpickler lands.
    #[error("the restricted unpickler is not built yet")]
    NotBuilt,
}

impl PickleError {
    /// Whether this is a refusal by policy (a global outside the allowlist, a forbidden opcode
    /// use) rather than a malformed stream.
    pub fn is_policy_refusal(&self) -> bool {
        false
    }
}

/// How `BINPERSID`/`PERSID` persistent ids are interpreted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PersistentIds {
    /// No persistent ids are allowed (a plain pickle, the legacy header pickles).
    Forbidden,
    /// PyTorch zip checkpoints: `("storage", storage_type, key, location, numel)`.
    ZipStorage,
    /// Legacy PyTorch checkpoints: `("storage", storage_type, key, location, numel, view_metadata)`
    /// where `view_metadata` is `None` or `(view_key, offset, size)`.
    LegacyStorage,
}

/// Bounds on the work and memory one unpickle may use. Every one of them is hit by some
/// hostile file; the defaults are far above what any real checkpoint needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Opcodes executed.
    pub max_ops: u64,
    /// Entries in the memo.
    pub max_memo: usize,
    /// Values on the stack (including those below marks).
    pub max_stack: usize,
    /// Nested `MARK`s open at once.
    pub max_mark_depth: usize,
    /// Value nodes created in total (shared references count once each time they are
    /// materialised into the output tree, which is what stops DUP/memo expansion bombs).
    pub max_values: u64,
    /// Nesting depth of containers in the output.
    pub max_depth: usize,
    /// Bytes of strings and byte strings in total.
    pub max_string_bytes: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_ops: 50_000_000,
            max_memo: 1_000_000,
            max_stack: 1_000_000,
            max_mark_depth: 1_000,
            max_values: 10_000_000,
            max_depth: 100,
            max_string_bytes: 256 * 1024 * 1024,
        }
    }
}

/// Options of one [`unpickle`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpickleOptions {
    /// How persistent ids are read.
    pub persistent_ids: PersistentIds,
    /// Work and memory bounds.
    pub limits: Limits,
}

/// A storage a tensor lives in, as named by a persistent id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageRef {
    /// The record key: `data/<key>` in a zip, the storage's id in a legacy file.
    pub key: String,
    /// Element type of the storage (`torch.FloatStorage` is F32; `torch.UntypedStorage` is U8).
    pub dtype: Dtype,
    /// Device string as saved (`"cpu"`, `"cuda:0"`); informational only, never acted on.
    pub location: String,
    /// Number of elements of `dtype` the storage holds (bytes for `UntypedStorage`).
    pub numel: u64,
    /// Legacy format only: this storage is a view `(view_key, offset, size)` of another.
    pub legacy_view: Option<LegacyStorageView>,
}

/// Legacy checkpoints' storage views: `(view_key, offset, size)` in elements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyStorageView {
    /// Key of the view.
    pub view_key: String,
    /// Offset into the base storage, in elements.
    pub offset: u64,
    /// Length of the view, in elements.
    pub size: u64,
}

/// A tensor as `torch._utils._rebuild_tensor_v2/_v3` (or `_rebuild_parameter` around it)
/// describes it: a strided view of a storage. Not yet checked against the storage's bytes;
/// that is the container's job ([`crate::torch`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorRecipe {
    /// The storage.
    pub storage: StorageRef,
    /// The tensor's element type (equals the storage's, except for `_rebuild_tensor_v3` over
    /// an untyped storage).
    pub dtype: Dtype,
    /// Offset of the first element, in elements of `dtype`.
    pub storage_offset: u64,
    /// Dimensions.
    pub shape: Vec<u64>,
    /// Strides in elements, one per dimension.
    pub stride: Vec<u64>,
}

/// An inert value: what the restricted unpickler produces. No variant can hold code.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An integer (pickle `LONG`s up to 16 bytes; larger ones are refused).
    Int(i128),
    /// A float.
    Float(f64),
    /// A text string.
    Str(String),
    /// A byte string.
    Bytes(Vec<u8>),
    /// A tuple.
    Tuple(Vec<Value>),
    /// A list.
    List(Vec<Value>),
    /// A `dict` or `collections.OrderedDict`, in insertion order.
    Dict(Vec<(Value, Value)>),
    /// A tensor (or `torch.nn.Parameter`), not yet materialised.
    Tensor(TensorRecipe),
}

/// The result of one [`unpickle`]: the value and how many bytes its stream took (up to and
/// including `STOP`), so that stacked pickles can be read one after another.
#[derive(Debug, Clone, PartialEq)]
pub struct Unpickled {
    /// The value the stream evaluates to.
    pub value: Value,
    /// Bytes consumed, including the `STOP` opcode.
    pub consumed: usize,
}

/// Whether `bytes` starts like a pickle stream: a `PROTO` opcode, or (protocols 0 and 1, which
/// have no magic) a run of well-formed opcodes ending in `STOP`.
pub fn looks_like_pickle(bytes: &[u8]) -> bool {
    matches!(bytes, [0x80, 0..=5, ..])
}
