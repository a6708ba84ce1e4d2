//! Sharded checkpoints: `*.index.json` files mapping tensor names to shard files.

/// What is wrong with a shard index.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    /// Placeholder until the index reader lands.
    #[error("the shard index reader is not built yet")]
    NotBuilt,
}

use std::path::Path;

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::policy::LoadPolicy;

/// Opens a sharded checkpoint through its index, under `policy`.
pub fn open_sharded(index_path: &Path, policy: &LoadPolicy) -> Result<Checkpoint> {
    let _ = policy;
    Err(Error::ShardIndex {
        path: index_path.to_path_buf(),
        source: IndexError::NotBuilt,
    })
}
