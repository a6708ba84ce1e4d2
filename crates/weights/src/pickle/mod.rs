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

pub use allowlist::allowed_globals;
pub use opcodes::{DecodeError, DecodeErrorKind};
pub use scanner::{PickleScan, ScanOptions, scan_pickles};
pub use unpickler::unpickle;

/// Why a pickle stream could not be read, or was refused. Every variant carries the byte offset
/// (from the start of the stream) of the opcode at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PickleError {
    /// An opcode could not be decoded: unknown byte, truncated argument, malformed text
    /// argument, or a `FRAME` violation.
    #[error("malformed pickle at {0}")]
    Decode(#[from] DecodeError),
    /// The input ended before `STOP`.
    #[error("malformed pickle: the stream ends at offset {offset} without a STOP opcode")]
    MissingStop {
        /// Where the input ended.
        offset: usize,
    },
    /// `PROTO` names a protocol above 5.
    #[error("offset {offset}: unsupported pickle protocol {protocol} (0 to 5 exist)")]
    UnsupportedProtocol {
        /// Offset of the `PROTO` opcode.
        offset: usize,
        /// The protocol it names.
        protocol: u8,
    },
    /// `PROTO` appears anywhere but as the very first opcode (a trick that switches CPython's
    /// name resolution mid-stream).
    #[error("offset {offset}: PROTO is only allowed as the first opcode")]
    MisplacedProto {
        /// Offset of the `PROTO` opcode.
        offset: usize,
    },
    /// A global outside the allowlist. Loading this file with Python would import
    /// `module.name` (and most likely call it).
    #[error(
        "offset {offset}: refusing global `{}`: not in the allowlist of the restricted unpickler \
         (listed in SECURITY.md); Python would import it, and most likely call it, on load",
        printable_name(module, name)
    )]
    GlobalNotAllowed {
        /// The module as written in the pickle.
        module: String,
        /// The name as written in the pickle.
        name: String,
        /// Offset of the importing opcode.
        offset: usize,
    },
    /// An opcode the restricted unpickler never executes (`INST`, `OBJ`, `NEWOBJ`, `EXT*`,
    /// sets, buffers), or an opcode used on a value it may not act on (`REDUCE` of a
    /// non-callable, `BUILD` on anything but an `OrderedDict`'s `_metadata`).
    #[error("offset {offset}: refusing {opcode}: {reason}")]
    ForbiddenOpcode {
        /// Offset of the opcode.
        offset: usize,
        /// The opcode's name.
        opcode: &'static str,
        /// Why, naming the value or global involved.
        reason: String,
    },
    /// An allowlisted global used outside its role (a storage type called, a dtype stored as a
    /// value).
    #[error("offset {offset}: refusing `{global}` {reason}")]
    MisplacedGlobal {
        /// Offset of the opcode that misused it.
        offset: usize,
        /// The global, `module.name`.
        global: String,
        /// What was done with it.
        reason: &'static str,
    },
    /// `STACK_GLOBAL` whose module or name is not a literal string.
    #[error(
        "offset {offset}: refusing STACK_GLOBAL: its {operand} operand is a {found}, not a literal string"
    )]
    NonLiteralGlobal {
        /// Offset of the `STACK_GLOBAL`.
        offset: usize,
        /// `"module"` or `"name"`.
        operand: &'static str,
        /// What was found instead.
        found: &'static str,
    },
    /// A persistent id in a pickle that may not have any.
    #[error(
        "offset {offset}: refusing a persistent id: this pickle may not reference external objects"
    )]
    PersistentIdForbidden {
        /// Offset of the `PERSID`/`BINPERSID`.
        offset: usize,
    },
    /// A persistent id that is not a well-formed storage reference.
    #[error("offset {offset}: invalid storage persistent id: {reason}")]
    BadPersistentId {
        /// Offset of the `BINPERSID`.
        offset: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A storage class that exists in torch but has no safetensors dtype.
    #[error("offset {offset}: unsupported storage type `{name}` (no safetensors dtype for it)")]
    UnsupportedStorage {
        /// Offset of the global.
        offset: usize,
        /// The storage class, `module.name`.
        name: String,
    },
    /// An allowlisted callable called with arguments outside its schema.
    #[error("offset {offset}: invalid arguments to {callee}: {reason}")]
    BadArguments {
        /// Offset of the `REDUCE`.
        offset: usize,
        /// The callable, `module.name`.
        callee: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// An opcode applied to the wrong kind of value, or with too few values on the stack
    /// (`APPEND` onto a dict, `SETITEM` on a list, stack underflow, missing `MARK`, an
    /// unhashable or duplicate dict key).
    #[error("offset {offset}: invalid {opcode}: {reason}")]
    InvalidOperation {
        /// Offset of the opcode.
        offset: usize,
        /// The opcode's name.
        opcode: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// `GET` of a memo slot that was never stored.
    #[error("offset {offset}: memo slot {index} was never stored")]
    MemoMissing {
        /// Offset of the `GET`.
        offset: usize,
        /// The slot.
        index: u64,
    },
    /// A string argument that is not valid UTF-8 or has a malformed escape.
    #[error("offset {offset}: {opcode} holds invalid text")]
    InvalidString {
        /// Offset of the opcode.
        offset: usize,
        /// The opcode's name.
        opcode: &'static str,
    },
    /// An integer wider than 128 bits.
    #[error("offset {offset}: integer wider than 128 bits")]
    IntegerTooLarge {
        /// Offset of the opcode.
        offset: usize,
    },
    /// One of the [`Limits`] was exceeded.
    #[error("offset {offset}: limit exceeded: more than {max} {limit}")]
    LimitExceeded {
        /// Offset of the opcode that crossed it.
        offset: usize,
        /// Which limit (`"opcodes"`, `"values"`, `"memo entries"`, ...).
        limit: &'static str,
        /// Its value.
        max: u64,
    },
    /// Well-formed and allowed, but not something we can represent (a bare storage as a
    /// value, tensor metadata such as conjugate bits).
    #[error("offset {offset}: unsupported: {what}")]
    Unsupported {
        /// Offset of the opcode.
        offset: usize,
        /// What.
        what: String,
    },
}

impl PickleError {
    /// Whether this is a refusal by policy (a global outside the allowlist, a forbidden opcode
    /// use) rather than a malformed stream.
    pub fn is_policy_refusal(&self) -> bool {
        matches!(
            self,
            PickleError::GlobalNotAllowed { .. }
                | PickleError::ForbiddenOpcode { .. }
                | PickleError::MisplacedGlobal { .. }
                | PickleError::NonLiteralGlobal { .. }
                | PickleError::PersistentIdForbidden { .. }
                // A PROTO after the first opcode changes how CPython resolves names (dotted
                // names from protocol 4 on): a known trick, refused like a forbidden opcode.
                | PickleError::MisplacedProto { .. }
        )
    }

    /// Byte offset, from the start of the stream, of the opcode at fault.
    pub fn offset(&self) -> usize {
        match self {
            PickleError::Decode(error) => error.offset,
            PickleError::MissingStop { offset }
            | PickleError::UnsupportedProtocol { offset, .. }
            | PickleError::MisplacedProto { offset }
            | PickleError::GlobalNotAllowed { offset, .. }
            | PickleError::ForbiddenOpcode { offset, .. }
            | PickleError::MisplacedGlobal { offset, .. }
            | PickleError::NonLiteralGlobal { offset, .. }
            | PickleError::PersistentIdForbidden { offset }
            | PickleError::BadPersistentId { offset, .. }
            | PickleError::UnsupportedStorage { offset, .. }
            | PickleError::BadArguments { offset, .. }
            | PickleError::InvalidOperation { offset, .. }
            | PickleError::MemoMissing { offset, .. }
            | PickleError::InvalidString { offset, .. }
            | PickleError::IntegerTooLarge { offset }
            | PickleError::LimitExceeded { offset, .. }
            | PickleError::Unsupported { offset, .. } => *offset,
        }
    }
}

/// `module.name` for an error message: control characters escaped, at most 200 characters.
pub(crate) fn printable_name(module: &str, name: &str) -> String {
    let full = format!("{module}.{name}");
    let mut out: String = full
        .chars()
        .take(200)
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect();
    if full.chars().count() > 200 {
        out.push_str("...");
    }
    out
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
    /// Value nodes created in total, counted twice over: once for the values the VM creates,
    /// and separately for the nodes of the output tree, where a shared reference counts each
    /// time it is materialised (which is what stops DUP/memo expansion bombs). The default
    /// (2 M) bounds the output tree to a few hundred MB; a state dict needs a few values per
    /// tensor.
    pub max_values: u64,
    /// Nesting depth of containers in the output (at most
    /// [`unpickler::MAX_DEPTH_CEILING`], whatever is set here).
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
            max_values: 2_000_000,
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
    /// an untyped storage). [`Dtype::F4`] means `float4_e2m1fn_x2`: see
    /// [`pickled_element_bits`].
    pub dtype: Dtype,
    /// Offset of the first element, in elements of `dtype`.
    pub storage_offset: u64,
    /// Dimensions.
    pub shape: Vec<u64>,
    /// Strides in elements, one per dimension.
    pub stride: Vec<u64>,
}

/// Bits of one indexed element of a pickled tensor of `dtype`.
///
/// PyTorch's one sub-byte dtype, `torch.float4_e2m1fn_x2`, packs two F4 values into each element
/// it indexes. A [`TensorRecipe`] of that dtype has `dtype` [`Dtype::F4`] with its shape, strides
/// and offset counting those byte-sized pairs; the loaded tensor's last dimension is doubled,
/// which is how safetensors stores the same tensor.
pub fn pickled_element_bits(dtype: Dtype) -> u64 {
    if dtype == Dtype::F4 { 8 } else { dtype.bits() }
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
/// have no magic) a run of well-formed opcodes from offset 0 with a consistent stack that
/// reaches `STOP`, or that holds an import among its first few opcodes before an error, or that
/// runs on for many opcodes (a long stream cut short, when only the head of a file is given).
///
/// ```
/// use safeformers_weights::pickle::looks_like_pickle;
/// assert!(looks_like_pickle(b"\x80\x02N."));
/// assert!(looks_like_pickle(b"cos\nsystem\n(S'id'\ntR."));
/// assert!(looks_like_pickle(b"(lp0\nVa\np1\na."));
/// assert!(!looks_like_pickle(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"));
/// assert!(!looks_like_pickle(b"# A model\n\nThis repository holds weights.\n"));
/// assert!(!looks_like_pickle(b"No."));
/// ```
pub fn looks_like_pickle(bytes: &[u8]) -> bool {
    if matches!(bytes, [0x80, 0..=5, ..]) {
        return true;
    }
    if !bytes
        .first()
        .is_some_and(|&b| opcodes::is_text_protocol_opcode(b))
    {
        return false;
    }
    /// Opcodes after which a run without error or STOP counts as a pickle.
    const LONG_RUN: usize = 64;
    let mut depth: usize = 0;
    let mut marks: Vec<usize> = Vec::new();
    let mut valid = 0usize;
    let mut imports = false;
    for item in opcodes::Decoder::new(bytes).take(LONG_RUN) {
        let Ok((_, op)) = item else {
            break;
        };
        let fence = marks.last().copied().unwrap_or(0);
        // (values popped, values pushed) above the fence, or a MARK-consuming opcode.
        let (pops, pushes, to_mark) = match op {
            opcodes::Op::Stop => return depth == 1 && marks.is_empty(),
            opcodes::Op::Mark => {
                if marks.len() >= 1000 {
                    return false;
                }
                marks.push(depth);
                (0, 0, false)
            }
            // A PROTO (or FRAME) after well-formed text opcodes: a pickle switching protocol
            // mid-stream, which Python accepts and which is a trick worth scanning.
            opcodes::Op::Proto(_) | opcodes::Op::Frame(_) => return valid > 0,
            opcodes::Op::Pop => (1, 0, false),
            opcodes::Op::Dup => (1, 2, false),
            opcodes::Op::PopMark => (0, 0, true),
            opcodes::Op::Tuple
            | opcodes::Op::List
            | opcodes::Op::Dict
            | opcodes::Op::FrozenSet
            | opcodes::Op::Inst { .. }
            | opcodes::Op::Obj => (0, 1, true),
            opcodes::Op::Appends | opcodes::Op::SetItems | opcodes::Op::AddItems => (0, 0, true),
            opcodes::Op::Append => (2, 1, false),
            opcodes::Op::SetItem => (3, 1, false),
            opcodes::Op::Reduce | opcodes::Op::Build | opcodes::Op::NewObj => (2, 1, false),
            opcodes::Op::NewObjEx => (3, 1, false),
            opcodes::Op::StackGlobal => (2, 1, false),
            opcodes::Op::Tuple1 | opcodes::Op::BinPersId | opcodes::Op::ReadonlyBuffer => {
                (1, 1, false)
            }
            opcodes::Op::Tuple2 => (2, 1, false),
            opcodes::Op::Tuple3 => (3, 1, false),
            opcodes::Op::Put(_)
            | opcodes::Op::BinPut(_)
            | opcodes::Op::LongBinPut(_)
            | opcodes::Op::Memoize => (1, 1, false),
            _ => (0, 1, false),
        };
        if matches!(
            op,
            opcodes::Op::Global { .. } | opcodes::Op::Inst { .. } | opcodes::Op::StackGlobal
        ) {
            imports = true;
        }
        if to_mark {
            let Some(mark) = marks.pop() else {
                return false;
            };
            depth = mark;
            if matches!(
                op,
                opcodes::Op::Appends | opcodes::Op::SetItems | opcodes::Op::AddItems
            ) && depth <= marks.last().copied().unwrap_or(0)
            {
                return false;
            }
        } else {
            if depth < fence + pops {
                return false;
            }
            depth -= pops;
        }
        depth += pushes;
        valid += 1;
    }
    valid >= LONG_RUN || (valid >= 3 && imports)
}
