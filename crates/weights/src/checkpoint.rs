//! A loaded set of named tensors, whatever file format they came from.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::dtype::Dtype;
use crate::error::{Error, Result};
use crate::format::FileFormat;
use crate::mapped::MappedFile;

/// One tensor: dtype, shape, and its bytes, contiguous, row-major and little-endian.
///
/// A safetensors tensor (and a contiguous PyTorch tensor) borrows straight from the memory
/// map; a strided PyTorch view is copied once into contiguous bytes when the checkpoint is
/// opened, and so is a safetensors tensor whose data is not aligned for its dtype in the file
/// (see [`Checkpoint::is_copied_for_alignment`]). Either way consumers see the same thing.
#[derive(Debug, Clone, Copy)]
pub struct TensorView<'a> {
    /// The tensor's name in the checkpoint (`bert.embeddings.word_embeddings.weight`).
    pub name: &'a str,
    /// Element type.
    pub dtype: Dtype,
    /// Dimensions, outermost first. An empty shape is a scalar.
    pub shape: &'a [usize],
    /// `shape.product() * dtype.bits() / 8` bytes.
    pub data: &'a [u8],
}

impl TensorView<'_> {
    /// Number of elements (1 for a scalar).
    pub fn element_count(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Where a tensor's bytes live.
#[derive(Debug)]
pub(crate) enum TensorBytes {
    /// A byte range of one of the checkpoint's mapped files.
    Mapped { source: usize, range: Range<usize> },
    /// Bytes the loader assembled (a strided PyTorch view made contiguous, a byte-swapped
    /// big-endian storage).
    #[allow(dead_code, reason = "constructed by the PyTorch loader (torch.rs)")]
    Owned(Vec<u8>),
    /// A byte range of a mapped file that is not aligned for the tensor's dtype there, copied
    /// into memory that is.
    CopiedForAlignment(AlignedBytes),
}

/// Bytes in owned memory whose first byte lies on a multiple of a chosen alignment.
///
/// A `Vec<u8>` promises no alignment, so the buffer is over-allocated by `alignment - 1` bytes
/// and the data starts at the first aligned address inside it. The buffer is never grown after
/// that, so its allocation (and the alignment) never moves.
#[derive(Debug)]
pub(crate) struct AlignedBytes {
    buffer: Vec<u8>,
    start: usize,
}

impl AlignedBytes {
    /// A copy of `bytes` starting on a multiple of `alignment` (a power of two).
    pub(crate) fn copy_of(bytes: &[u8], alignment: usize) -> AlignedBytes {
        let alignment = alignment.max(1);
        let mut buffer: Vec<u8> = Vec::with_capacity(bytes.len().saturating_add(alignment - 1));
        let start = (alignment - buffer.as_ptr().addr() % alignment) % alignment;
        buffer.resize(start, 0);
        // Within the capacity reserved above: the allocation does not move.
        buffer.extend_from_slice(bytes);
        AlignedBytes { buffer, start }
    }

    /// The copied bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        self.buffer.get(self.start..).unwrap_or(&[])
    }
}

#[derive(Debug)]
struct TensorEntry {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: TensorBytes,
    /// Index into `Checkpoint::sources` of the file this tensor was declared in.
    declared_in: usize,
}

/// Named tensors from one or more weight files (shards), validated and ready to hand out.
///
/// Build one with [`crate::open_checkpoint`] (a model folder, under a [`crate::LoadPolicy`]) or
/// with the format-specific openers in [`crate::safetensors`] and [`crate::torch`].
#[derive(Debug)]
pub struct Checkpoint {
    format: FileFormat,
    sources: Vec<Arc<MappedFile>>,
    tensors: BTreeMap<String, TensorEntry>,
    metadata: BTreeMap<String, String>,
}

impl Checkpoint {
    /// An empty checkpoint of the given format, to be filled by a loader.
    pub(crate) fn new(format: FileFormat) -> Checkpoint {
        Checkpoint {
            format,
            sources: Vec::new(),
            tensors: BTreeMap::new(),
            metadata: BTreeMap::new(),
        }
    }

    /// Registers a mapped file and returns its index for [`TensorBytes::Mapped`].
    pub(crate) fn add_source(&mut self, file: Arc<MappedFile>) -> usize {
        self.sources.push(file);
        self.sources.len() - 1
    }

    /// Adds a tensor; a name seen before (in this file or another shard) is an error.
    ///
    /// The caller has checked that `bytes` holds exactly `shape × dtype` bytes; this re-checks it
    /// because every consumer relies on it.
    pub(crate) fn insert(
        &mut self,
        name: String,
        dtype: Dtype,
        shape: Vec<usize>,
        bytes: TensorBytes,
        declared_in: usize,
    ) -> Result<()> {
        let declared_path = |index: usize| -> PathBuf {
            self.sources
                .get(index)
                .map(|source| source.path().to_path_buf())
                .unwrap_or_default()
        };
        let element_count = shape
            .iter()
            .try_fold(1u64, |acc, &dim| acc.checked_mul(dim as u64));
        let expected = element_count.and_then(|count| dtype.byte_len(count));
        let actual = match &bytes {
            TensorBytes::Mapped { range, .. } => range.len() as u64,
            TensorBytes::Owned(data) => data.len() as u64,
            TensorBytes::CopiedForAlignment(data) => data.bytes().len() as u64,
        };
        if expected != Some(actual) {
            return Err(Error::TensorSizeMismatch {
                path: declared_path(declared_in),
                tensor: name,
                expected,
                actual,
            });
        }
        if let TensorBytes::Mapped { source, range } = &bytes {
            let in_bounds = self
                .sources
                .get(*source)
                .is_some_and(|file| range.end <= file.bytes().len() && range.start <= range.end);
            if !in_bounds {
                return Err(Error::TensorOutOfBounds {
                    path: declared_path(*source),
                    tensor: name,
                });
            }
        }
        if let Some(first) = self.tensors.get(&name) {
            return Err(Error::DuplicateTensor {
                first: declared_path(first.declared_in),
                second: declared_path(declared_in),
                tensor: name,
            });
        }
        self.tensors.insert(
            name,
            TensorEntry {
                dtype,
                shape,
                bytes,
                declared_in,
            },
        );
        Ok(())
    }

    /// Records a `__metadata__` entry (safetensors) for `inspect`.
    pub(crate) fn insert_metadata(&mut self, key: String, value: String) {
        self.metadata.insert(key, value);
    }

    /// The format the tensors were read from (for a sharded checkpoint, the shards' format).
    pub fn format(&self) -> FileFormat {
        self.format
    }

    /// The files the tensors were read from, in the order they were opened.
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        self.sources.iter().map(|source| source.path())
    }

    /// The `__metadata__` map of the safetensors header(s), empty for other formats.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether there are no tensors at all.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// The tensor called `name`, if there is one.
    pub fn tensor(&self, name: &str) -> Option<TensorView<'_>> {
        let (name, entry) = self.tensors.get_key_value(name)?;
        Some(self.view(name, entry))
    }

    /// Every tensor, sorted by name.
    pub fn tensors(&self) -> impl Iterator<Item = TensorView<'_>> {
        self.tensors
            .iter()
            .map(|(name, entry)| self.view(name, entry))
    }

    /// Whether the tensor `name` was copied out of its file into aligned memory, because its
    /// data there does not start on a multiple of its element size (at most 8). Such
    /// safetensors files exist (the reference reads them); every other tensor is served
    /// straight from the memory map, or was assembled by the PyTorch loader.
    pub fn is_copied_for_alignment(&self, name: &str) -> bool {
        self.tensors
            .get(name)
            .is_some_and(|entry| matches!(entry.bytes, TensorBytes::CopiedForAlignment(_)))
    }

    /// Where the tensor `name`'s bytes lie when it is served straight from a mapped file: that
    /// file and the byte range in it (the range [`TensorView::data`] shows). `None` for a tensor
    /// the loader assembled or copied for alignment, and for an unknown name.
    pub fn mapped_range(&self, name: &str) -> Option<(&MappedFile, Range<usize>)> {
        match &self.tensors.get(name)?.bytes {
            TensorBytes::Mapped { source, range } => {
                Some((self.sources.get(*source)?.as_ref(), range.clone()))
            }
            TensorBytes::Owned(_) | TensorBytes::CopiedForAlignment(_) => None,
        }
    }

    /// Every tensor name, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    fn view<'a>(&'a self, name: &'a str, entry: &'a TensorEntry) -> TensorView<'a> {
        let data = match &entry.bytes {
            TensorBytes::Owned(data) => data.as_slice(),
            TensorBytes::CopiedForAlignment(data) => data.bytes(),
            // `insert` checked that the range lies inside the mapped file.
            TensorBytes::Mapped { source, range } => self
                .sources
                .get(*source)
                .and_then(|file| file.bytes().get(range.clone()))
                .unwrap_or(&[]),
        };
        TensorView {
            name,
            dtype: entry.dtype,
            shape: &entry.shape,
            data,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_copies_start_on_their_alignment_and_hold_the_bytes() {
        let source: Vec<u8> = (0..=255u8).collect();
        for alignment in [1, 2, 4, 8] {
            for start in 0..9 {
                for len in [0, 1, 7, 8, 9, 100] {
                    let bytes = &source[start..start + len];
                    let copy = AlignedBytes::copy_of(bytes, alignment);
                    assert_eq!(copy.bytes(), bytes);
                    assert_eq!(copy.bytes().as_ptr().addr() % alignment, 0);
                    // Moving the owner does not move the allocation.
                    let moved = [copy];
                    assert_eq!(moved[0].bytes().as_ptr().addr() % alignment, 0);
                }
            }
        }
    }
}
