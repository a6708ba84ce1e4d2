//! Read-only memory maps of weight files.

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::{Mmap, MmapMut, MmapOptions};
use safeformers_files::FileError;

use crate::error::{Error, Result};

/// A file mapped read-only into memory, with the path it came from (for error messages).
///
/// Mapping is what makes opening a multi-gigabyte checkpoint cost microseconds: nothing is read
/// until a tensor's bytes are touched. The caveat of every mmap applies: if another process
/// truncates the file while it is mapped, reading the lost pages raises SIGBUS. Files in the
/// cache are content-addressed blobs that nothing rewrites in place, which is why we accept it.
#[derive(Debug)]
pub struct MappedFile {
    path: PathBuf,
    map: Option<Mmap>,
    /// The open file, for [`MappedFile::copy_range`].
    file: File,
}

impl MappedFile {
    /// Maps `path` read-only, if it is a regular file (a FIFO, a device or a directory is
    /// refused without blocking: see `safeformers_files::open_regular`). Empty files are not
    /// mapped (mapping zero bytes is an error on some platforms) and read as an empty slice.
    pub fn open(path: &Path) -> Result<MappedFile> {
        let io_error = |source| Error::from(FileError::io(path, source));
        let file: File = safeformers_files::open_regular(path)?;
        let len = file.metadata().map_err(io_error)?.len();
        if len == 0 {
            return Ok(MappedFile {
                path: path.to_path_buf(),
                map: None,
                file,
            });
        }
        // SAFETY: the map is read-only and private to this process. The remaining hazard of
        // mmap (another process truncating the file underneath us) is documented on the type.
        #[allow(unsafe_code)]
        let map = unsafe { Mmap::map(&file) }.map_err(io_error)?;
        Ok(MappedFile {
            path: path.to_path_buf(),
            map: Some(map),
            file,
        })
    }

    /// The path this file was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The whole file's bytes.
    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    /// A second map of `range` of the same open file, private and writable: pages written to are
    /// copied into this process's memory (copy-on-write, `MAP_PRIVATE`), and the file itself is
    /// never changed. Tensors handed to code that may write to them in place (PyTorch's) view
    /// this map instead of copying the file, as `torch.load(mmap=True)` does. The map's first
    /// byte is the file's byte `range.start`; `None` for an empty range.
    ///
    /// It maps the file this `MappedFile` validated (the same open file, not the path again), so
    /// byte ranges checked against [`MappedFile::bytes`] hold in it too; `range` must lie inside
    /// them.
    pub fn map_copy_on_write(&self, range: std::ops::Range<usize>) -> Result<Option<MmapMut>> {
        let io_error = |source| Error::from(FileError::io(&self.path, source));
        if range.end > self.bytes().len() || range.start > range.end {
            return Err(io_error(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("bytes {range:?} are not inside the file"),
            )));
        }
        if range.is_empty() {
            return Ok(None);
        }
        // SAFETY: as for `open`: a private map. Writes through it stay in this process (the
        // file is opened read-only and the map is MAP_PRIVATE); the truncation hazard documented
        // on the type applies unchanged. memmap2 maps from the page boundary below the offset.
        #[allow(unsafe_code)]
        let map = unsafe {
            MmapOptions::new()
                .offset(range.start as u64)
                .len(range.len())
                .map_copy(&self.file)
        }
        .map_err(io_error)?;
        Ok(Some(map))
    }

    /// Copies `range` of the file into `dest` (of the same length), read from the file rather
    /// than through the map (on Unix): the copy is then the only one this process holds. Bytes
    /// copied out of the map stay mapped, counted in the process's resident memory beside the
    /// copy, until the map is dropped. `range` must lie inside the file (as
    /// [`MappedFile::bytes`] shows it).
    pub fn copy_range(&self, range: std::ops::Range<usize>, dest: &mut [u8]) -> Result<()> {
        let io_error = |source| Error::from(FileError::io(&self.path, source));
        let mapped = match self.bytes().get(range.clone()) {
            Some(mapped) if mapped.len() == dest.len() => mapped,
            _ => {
                return Err(io_error(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!(
                        "bytes {range:?} are not {} bytes inside the file",
                        dest.len()
                    ),
                )));
            }
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileExt;
            let _ = mapped;
            self.file
                .read_exact_at(dest, range.start as u64)
                .map_err(io_error)
        }
        #[cfg(not(unix))]
        {
            dest.copy_from_slice(mapped);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_on_write_maps_start_at_the_range_and_never_change_the_file() {
        let path = safeformers_testkit::scratch_dir("mapped").join("data.bin");
        let content: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &content).unwrap();
        let file = MappedFile::open(&path).unwrap();
        let mut map = file.map_copy_on_write(5000..9000).unwrap().unwrap();
        assert_eq!(&map[..], &content[5000..9000]);
        map.fill(0xff);
        assert!(map.iter().all(|&byte| byte == 0xff));
        assert_eq!(&file.bytes()[5000..9000], &content[5000..9000]);
        drop(map);
        assert_eq!(std::fs::read(&path).unwrap(), content);
        assert!(file.map_copy_on_write(0..0).unwrap().is_none());
        assert!(file.map_copy_on_write(19_000..20_001).is_err());
    }
}
