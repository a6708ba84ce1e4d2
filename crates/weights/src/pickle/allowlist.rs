//! The exact `module.name` globals the restricted unpickler resolves, and to what.
//!
//! Each allowed global resolves to a [`Global`], a plain Rust enum; the unpickler gives each one
//! a fixed argument schema and never calls anything. Matching is by exact string on both the
//! module and the name: a dotted name (`_rebuild_tensor_v2.__globals__`), a dunder, an alias
//! (`torch.float`) or a module not listed here is refused, so there is nothing to bypass with
//! attribute traversal or trampoline modules. There are no Python 2 aliases, because no entry
//! lives in `__builtin__` or `copy_reg`.

use crate::dtype::Dtype;

/// What an allowlisted global stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Global {
    /// `collections.OrderedDict`: called with `()` only, yields an empty ordered dict.
    OrderedDict,
    /// `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad,
    /// backward_hooks[, metadata])`.
    RebuildTensorV2,
    /// `torch._utils._rebuild_tensor_v3(storage, offset, size, stride, requires_grad,
    /// backward_hooks, dtype[, metadata])`.
    RebuildTensorV3,
    /// `torch._utils._rebuild_tensor(storage, offset, size, stride)` (old checkpoints).
    RebuildTensor,
    /// `torch._utils._rebuild_parameter(data, requires_grad, backward_hooks)`.
    RebuildParameter,
    /// `torch._utils._rebuild_parameter_with_state(data, requires_grad, backward_hooks, state)`
    /// with an empty state.
    RebuildParameterWithState,
    /// A storage class: only legal as the second element of a `"storage"` persistent id.
    Storage(Dtype),
    /// A storage class we recognise but cannot represent (no safetensors dtype).
    UnsupportedStorage,
    /// A dtype object: only legal as the `dtype` argument of `_rebuild_tensor_v3`.
    Dtype(Dtype),
    /// `_codecs.encode(text, "latin1")`: how protocol 2 writes `bytes` objects.
    CodecsEncode,
    /// `torch.Size(tuple_of_ints)`: yields the tuple.
    TorchSize,
}

impl Global {
    /// Whether REDUCE may call it (with its argument schema still to be checked).
    pub fn is_callable(self) -> bool {
        matches!(
            self,
            Global::OrderedDict
                | Global::RebuildTensorV2
                | Global::RebuildTensorV3
                | Global::RebuildTensor
                | Global::RebuildParameter
                | Global::RebuildParameterWithState
                | Global::CodecsEncode
                | Global::TorchSize
        )
    }
}

/// One allowlist entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllowedGlobal {
    /// The module, exactly as the pickle must spell it.
    pub module: &'static str,
    /// The name inside the module, exactly.
    pub name: &'static str,
    /// What it resolves to.
    pub global: Global,
    /// Where it may appear and why it is safe, in one line.
    pub role: &'static str,
}

const TENSOR_ROLE: &str = "REDUCE only; arguments checked (storage, offset >= 0, int size/stride, bool, empty hooks); yields a tensor recipe";
const STORAGE_ROLE: &str =
    "only as the storage type (2nd element) of a \"storage\" persistent id; names the dtype";
const DTYPE_ROLE: &str = "only as the dtype argument of _rebuild_tensor_v3";

macro_rules! entry {
    ($module:literal, $name:literal, $global:expr, $role:expr) => {
        AllowedGlobal {
            module: $module,
            name: $name,
            global: $global,
            role: $role,
        }
    };
}

/// The allowlist, in documentation order.
pub const ALLOWLIST: &[AllowedGlobal] = &[
    entry!(
        "collections",
        "OrderedDict",
        Global::OrderedDict,
        "REDUCE with () only (state dicts, backward_hooks); BUILD only with {\"_metadata\": ...}, which is dropped"
    ),
    entry!(
        "torch._utils",
        "_rebuild_tensor_v2",
        Global::RebuildTensorV2,
        TENSOR_ROLE
    ),
    entry!(
        "torch._utils",
        "_rebuild_tensor_v3",
        Global::RebuildTensorV3,
        TENSOR_ROLE
    ),
    entry!(
        "torch._utils",
        "_rebuild_tensor",
        Global::RebuildTensor,
        "REDUCE only with (storage, offset, size, stride) (pre-1.0 checkpoints); yields a tensor recipe"
    ),
    entry!(
        "torch._utils",
        "_rebuild_parameter",
        Global::RebuildParameter,
        "REDUCE only with (tensor, bool, empty hooks); yields the tensor"
    ),
    entry!(
        "torch._utils",
        "_rebuild_parameter_with_state",
        Global::RebuildParameterWithState,
        "REDUCE only with (tensor, bool, empty hooks, empty state); yields the tensor"
    ),
    entry!(
        "torch",
        "DoubleStorage",
        Global::Storage(Dtype::F64),
        STORAGE_ROLE
    ),
    entry!(
        "torch",
        "FloatStorage",
        Global::Storage(Dtype::F32),
        STORAGE_ROLE
    ),
    entry!(
        "torch",
        "HalfStorage",
        Global::Storage(Dtype::F16),
        STORAGE_ROLE
    ),
    entry!(
        "torch",
        "BFloat16Storage",
        Global::Storage(Dtype::BF16),
        STORAGE_ROLE
    ),
    entry!(
        "torch",
        "LongStorage",
        Global::Storage(Dtype::I64),
        STORAGE_ROLE
    ),
    entry!(
        "torch",
        "IntStorage",
        Global::Storage(Dtype::I32),
        STORAGE_ROLE
    ),
    entry!(
        "torch",
        "ShortStorage",
        Global::Storage(Dtype::I16),
        STORAGE_ROLE
    ),
    entry!(
        "torch",
        "CharStorage",
        Global::Storage(Dtype::I8),
        STORAGE_ROLE
    ),
    entry!(
        "torch",
        "ByteStorage",
        Global::Storage(Dtype::U8),
        STORAGE_ROLE
    ),
    entry!(
        "torch",
        "BoolStorage",
        Global::Storage(Dtype::Bool),
        STORAGE_ROLE
    ),
    entry!(
        "torch",
        "ComplexFloatStorage",
        Global::Storage(Dtype::C64),
        STORAGE_ROLE
    ),
    entry!(
        "torch",
        "UntypedStorage",
        Global::Storage(Dtype::U8),
        "like the typed storages; numel counts bytes, the dtype comes from _rebuild_tensor_v3"
    ),
    entry!(
        "torch.storage",
        "UntypedStorage",
        Global::Storage(Dtype::U8),
        "the module recent torch.save writes for UntypedStorage; same role"
    ),
    entry!("torch", "float64", Global::Dtype(Dtype::F64), DTYPE_ROLE),
    entry!("torch", "float32", Global::Dtype(Dtype::F32), DTYPE_ROLE),
    entry!("torch", "float16", Global::Dtype(Dtype::F16), DTYPE_ROLE),
    entry!("torch", "bfloat16", Global::Dtype(Dtype::BF16), DTYPE_ROLE),
    entry!(
        "torch",
        "float8_e4m3fn",
        Global::Dtype(Dtype::F8E4M3),
        DTYPE_ROLE
    ),
    entry!(
        "torch",
        "float8_e5m2",
        Global::Dtype(Dtype::F8E5M2),
        DTYPE_ROLE
    ),
    entry!(
        "torch",
        "float8_e4m3fnuz",
        Global::Dtype(Dtype::F8E4M3Fnuz),
        DTYPE_ROLE
    ),
    entry!(
        "torch",
        "float8_e5m2fnuz",
        Global::Dtype(Dtype::F8E5M2Fnuz),
        DTYPE_ROLE
    ),
    entry!(
        "torch",
        "float8_e8m0fnu",
        Global::Dtype(Dtype::F8E8M0),
        DTYPE_ROLE
    ),
    entry!(
        "torch",
        "float4_e2m1fn_x2",
        Global::Dtype(Dtype::F4),
        "only as the dtype argument of _rebuild_tensor_v3 over an UntypedStorage; each indexed \
         element packs two F4 values (loaded as F4 with the last dimension doubled)"
    ),
    entry!("torch", "int64", Global::Dtype(Dtype::I64), DTYPE_ROLE),
    entry!("torch", "int32", Global::Dtype(Dtype::I32), DTYPE_ROLE),
    entry!("torch", "int16", Global::Dtype(Dtype::I16), DTYPE_ROLE),
    entry!("torch", "int8", Global::Dtype(Dtype::I8), DTYPE_ROLE),
    entry!("torch", "uint64", Global::Dtype(Dtype::U64), DTYPE_ROLE),
    entry!("torch", "uint32", Global::Dtype(Dtype::U32), DTYPE_ROLE),
    entry!("torch", "uint16", Global::Dtype(Dtype::U16), DTYPE_ROLE),
    entry!("torch", "uint8", Global::Dtype(Dtype::U8), DTYPE_ROLE),
    entry!("torch", "bool", Global::Dtype(Dtype::Bool), DTYPE_ROLE),
    entry!("torch", "complex64", Global::Dtype(Dtype::C64), DTYPE_ROLE),
    entry!(
        "_codecs",
        "encode",
        Global::CodecsEncode,
        "REDUCE only with (str, \"latin1\") where every char < 256; yields bytes (protocol-2 bytes objects)"
    ),
    entry!(
        "torch",
        "Size",
        Global::TorchSize,
        "REDUCE only with (tuple of ints >= 0,); yields the tuple"
    ),
];

/// Storage classes torch writes that have no safetensors dtype: recognised so that the error
/// says "unsupported storage type" rather than "not allowed".
pub const UNSUPPORTED_STORAGES: &[&str] = &[
    "ComplexDoubleStorage",
    "QInt8Storage",
    "QInt32Storage",
    "QUInt8Storage",
    "QUInt4x2Storage",
    "QUInt2x4Storage",
];

/// Resolves `module.name` by exact match; `None` when it is not allowlisted.
pub fn resolve(module: &str, name: &str) -> Option<Global> {
    if let Some(entry) = ALLOWLIST
        .iter()
        .find(|entry| entry.module == module && entry.name == name)
    {
        return Some(entry.global);
    }
    if module == "torch" && UNSUPPORTED_STORAGES.contains(&name) {
        return Some(Global::UnsupportedStorage);
    }
    None
}

/// Every allowlisted global as `("module.name", role)`, for the documentation and
/// `safeformers scan --help`.
pub fn allowed_globals() -> impl Iterator<Item = (String, &'static str)> {
    ALLOWLIST
        .iter()
        .map(|entry| (format!("{}.{}", entry.module, entry.name), entry.role))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_match_only() {
        assert_eq!(
            resolve("torch._utils", "_rebuild_tensor_v2"),
            Some(Global::RebuildTensorV2)
        );
        assert_eq!(
            resolve("torch._utils", "_rebuild_tensor_v2.__globals__"),
            None
        );
        assert_eq!(resolve("torch", "_utils"), None);
        assert_eq!(resolve("torch", "float"), None);
        assert_eq!(resolve("collections ", "OrderedDict"), None);
        assert_eq!(resolve("builtins", "eval"), None);
        assert_eq!(
            resolve("torch", "ComplexDoubleStorage"),
            Some(Global::UnsupportedStorage)
        );
    }

    #[test]
    fn no_entry_is_dotted_or_dunder() {
        for entry in ALLOWLIST {
            assert!(!entry.name.contains('.'), "{}", entry.name);
            assert!(!entry.name.contains("__"), "{}", entry.name);
        }
        assert_eq!(allowed_globals().count(), ALLOWLIST.len());
    }
}
