//! The crate's error type. Every variant names the file (and tensor, or member) it concerns.

use std::path::PathBuf;

use crate::format::FileFormat;
use crate::gguf::GgufError;
use crate::pickle::PickleError;
use crate::safetensors::SafetensorsError;
use crate::sharded::IndexError;
use crate::torch::TorchError;

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why weights could not be read. Refusals by policy are told apart by
/// [`Error::is_policy_refusal`], which the CLI maps to exit code 3.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file that is not a regular file (a FIFO, a device, a directory), is over the cap for its
    /// kind, or could not be read: the one opener of `safeformers-files` says which.
    #[error(transparent)]
    File(#[from] safeformers_files::FileError),

    /// A safetensors file broke one of the format's rules (or one of ours).
    #[error("{}: invalid safetensors file: {source}", path.display())]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// The rule it broke.
        source: SafetensorsError,
    },

    /// A GGUF file broke one of the format's rules (or one of ours).
    #[error("{}: invalid GGUF file: {source}", path.display())]
    Gguf {
        /// The file.
        path: PathBuf,
        /// The rule it broke.
        source: GgufError,
    },

    /// A `*.index.json` file for a sharded checkpoint is malformed or points outside the folder.
    #[error("{}: invalid shard index: {source}", path.display())]
    ShardIndex {
        /// The index file.
        path: PathBuf,
        /// What is wrong with it.
        source: IndexError,
    },

    /// A PyTorch checkpoint (zip or legacy) was malformed, or refused by the restricted
    /// unpickler.
    #[error("{}: {source}", path.display())]
    Torch {
        /// The checkpoint file.
        path: PathBuf,
        /// What was wrong, or what was refused.
        source: TorchError,
    },

    /// A raw pickle file was malformed or refused by the restricted unpickler.
    #[error("{}: {source}", path.display())]
    Pickle {
        /// The pickle file.
        path: PathBuf,
        /// What was wrong, or what was refused.
        source: PickleError,
    },

    /// A tensor's byte length is not `shape × dtype size`.
    #[error(
        "{}: tensor `{tensor}` holds {actual} bytes but its shape and dtype need {}",
        path.display(),
        expected.map_or_else(|| "more than 2^64".to_string(), |bytes| bytes.to_string())
    )]
    TensorSizeMismatch {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// Bytes the shape and dtype call for (`None` when that overflows).
        expected: Option<u64>,
        /// Bytes actually present.
        actual: u64,
    },

    /// A tensor's byte range lies outside its file.
    #[error("{}: tensor `{tensor}` lies outside the file", path.display())]
    TensorOutOfBounds {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
    },

    /// The same tensor name appears twice (in one file, or in two shards).
    #[error(
        "tensor `{tensor}` is defined twice: in {} and in {}",
        first.display(),
        second.display()
    )]
    DuplicateTensor {
        /// The tensor.
        tensor: String,
        /// Where it was seen first.
        first: PathBuf,
        /// Where it was seen again.
        second: PathBuf,
    },

    /// The model folder holds only pickle-based weights and the policy is safetensors-only.
    #[error(
        "{}: refusing to read pickle-based weights ({format}) under the safetensors-only policy; \
         pass --allow-pickle to read them with the restricted (non-executing) unpickler",
        path.display()
    )]
    PickleNotAllowed {
        /// The pickle-based file that would have been read.
        path: PathBuf,
        /// What it is.
        format: FileFormat,
    },

    /// A file named like a pickle-based checkpoint (`pytorch_model.bin`, `*.pt`, ...) whose
    /// content is not safetensors, under the safetensors-only policy. The name says what the
    /// file is meant to be; reading it is what the user did not allow, whatever its bytes.
    #[error(
        "{}: refusing a file named as a pickle-based checkpoint (content detected as \
         {content}, not safetensors) under the safetensors-only policy; pass --allow-pickle to \
         read pickle-based weights with the restricted (non-executing) unpickler",
        path.display()
    )]
    PickleNamedNotAllowed {
        /// The file.
        path: PathBuf,
        /// What its content looks like.
        content: FileFormat,
    },

    /// A shard index lists shards of more than one format, or pickle shards under the
    /// safetensors-only policy.
    #[error("{}: {reason}", path.display())]
    ShardFormatRefused {
        /// The index file.
        path: PathBuf,
        /// Which shards, and why they are refused.
        reason: String,
    },

    /// A model folder holds no weight file we know.
    #[error(
        "{}: no weights found (looked for model.safetensors, model.safetensors.index.json, \
         pytorch_model.bin, pytorch_model.bin.index.json, *.safetensors, *.bin, *.pt, *.pth, *.ckpt)",
        path.display()
    )]
    NoWeights {
        /// The folder.
        path: PathBuf,
    },

    /// The file's content is not a weights format we read (detected by content, not name).
    #[error("{}: not a weights file we can read (content looks like {format})", path.display())]
    UnsupportedFormat {
        /// The file.
        path: PathBuf,
        /// What the content looks like.
        format: FileFormat,
    },
}

impl Error {
    /// Whether this is a refusal by security policy (exit code 3 in the CLI) rather than
    /// malformed or unreadable input (exit code 1).
    pub fn is_policy_refusal(&self) -> bool {
        match self {
            Error::PickleNotAllowed { .. }
            | Error::PickleNamedNotAllowed { .. }
            | Error::ShardFormatRefused { .. } => true,
            Error::Torch { source, .. } => source.is_policy_refusal(),
            Error::Pickle { source, .. } => source.is_policy_refusal(),
            _ => false,
        }
    }
}
