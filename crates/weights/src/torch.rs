//! PyTorch checkpoints (zip and legacy), read without executing pickle.

use crate::pickle::PickleError;
use crate::zip::ZipError;

/// What is wrong with a PyTorch checkpoint, or what was refused in it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TorchError {
    /// The zip container is malformed or uses a feature we refuse.
    #[error(transparent)]
    Zip(#[from] ZipError),
    /// The pickle was malformed or refused.
    #[error(transparent)]
    Pickle(#[from] PickleError),
}

impl TorchError {
    /// Whether this is a refusal by policy (exit code 3) rather than malformed input.
    pub fn is_policy_refusal(&self) -> bool {
        match self {
            TorchError::Pickle(source) => source.is_policy_refusal(),
            TorchError::Zip(_) => false,
        }
    }
}

use std::path::Path;
use std::sync::Arc;

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::mapped::MappedFile;

/// Opens a PyTorch checkpoint (zip, legacy stacked-pickle, or a raw pickled state dict),
/// deciding which by content.
pub fn open(path: &Path) -> Result<Checkpoint> {
    Err(Error::Torch {
        path: path.to_path_buf(),
        source: TorchError::Zip(ZipError::NotBuilt),
    })
}

/// Reads `file` as a PyTorch checkpoint and adds its tensors to `checkpoint` (one shard of many).
pub(crate) fn load_into(checkpoint: &mut Checkpoint, file: Arc<MappedFile>) -> Result<()> {
    let _ = checkpoint;
    Err(Error::Torch {
        path: file.path().to_path_buf(),
        source: TorchError::Zip(ZipError::NotBuilt),
    })
}
