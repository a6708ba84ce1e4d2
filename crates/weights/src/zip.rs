//! A strict reader for the zip container PyTorch checkpoints use.

/// What is wrong with a zip archive.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ZipError {
    /// Placeholder until the zip reader lands.
    #[error("the zip reader is not built yet")]
    NotBuilt,
}
