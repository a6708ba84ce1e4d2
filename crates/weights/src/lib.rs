//! Model weights that strangers uploaded, read without trusting them.
//!
//! - [`safetensors`]: the safetensors format, validated more strictly than the reference crate
//!   before a single tensor is handed out, then served zero-copy from a read-only memory map.
//! - [`gguf`]: llama.cpp's GGUF format (v2 and v3), validated as strictly, its tensors served as
//!   raw blocks from a read-only memory map.
//! - [`sharded`]: `*.safetensors.index.json` (and `pytorch_model.bin.index.json`) with every shard
//!   path checked to stay inside the model folder.
//! - [`pickle`]: a pickle virtual machine that never imports or calls anything. Globals resolve
//!   against an exact allowlist to typed Rust values; the scanner runs the same decoder in
//!   observe mode and reports what Python would have imported and called.
//! - [`zip`] and [`torch`]: PyTorch checkpoints (zip and legacy stacked-pickle formats), read
//!   strictly, producing the same [`TensorView`]s as the safetensors path.
//! - [`policy`]: which formats a load may read ([`LoadPolicy`]); safe by default, and nothing in
//!   a model folder can widen it.
//! - [`python`]: a review of Python source (remote code) by parsing it, never running it.
//! - [`scan`]: the `safeformers scan` report, with the format of each file detected by content.

// `deny`, not `forbid`: the one memory map (`mapped.rs`) is the single documented exception;
// every other line of this crate is safe code.
#![deny(unsafe_code)]

pub mod checkpoint;
pub mod convert;
pub mod dtype;
pub mod error;
pub mod format;
pub mod gguf;
pub mod mapped;
pub mod pickle;
pub mod policy;
pub mod python;
pub mod safetensors;
pub mod scan;
pub mod sharded;
mod tensor_names;
pub mod torch;
pub mod zip;

pub use checkpoint::{Checkpoint, TensorView};
pub use dtype::Dtype;
pub use error::{Error, Result};
pub use format::{FileFormat, detect_format};
pub use policy::{LoadPolicy, WeightsPolicy, open_checkpoint};
