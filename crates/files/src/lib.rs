//! The one way safeformers opens a file that it did not write itself: a file in a model folder, in
//! the cache (which Python or another user may have filled), or a path given on the command line.
//!
//! Three rules, each closing a class of attack:
//! - **Regular files only.** A FIFO in place of `config.json` would block a reader forever, a
//!   character device such as `/dev/zero` never ends, a directory is not content. The type is
//!   checked before opening (so a device is never even opened), the open itself is non-blocking
//!   (so a FIFO swapped in after the check cannot block it), and the type is checked again on the
//!   opened handle (so what is read is what was checked).
//! - **Every small-file read has a cap that fits its kind** ([`ReadCap`]): a ref is a 40-byte
//!   hash, not 20 GB of `/dev/zero` behind a symlink. The cap is enforced on the bytes actually
//!   read, not only on the size the file claims (`/proc` files claim 0).
//! - **Containment is checked on the resolved path** ([`resolve_within`]): a link may point
//!   anywhere inside the folder it belongs to, never outside.
//!
//! ```
//! # fn main() -> Result<(), safeformers_files::FileError> {
//! # let dir = std::env::temp_dir().join(format!("safeformers-files-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir).map_err(|e| safeformers_files::FileError::io(&dir, e))?;
//! # let path = dir.join("config.json");
//! # std::fs::write(&path, b"{}").map_err(|e| safeformers_files::FileError::io(&path, e))?;
//! use safeformers_files::{ReadCap, read_capped};
//! const CONFIG: ReadCap = ReadCap::new("a model config", 1 << 20);
//! let bytes = read_capped(&path, CONFIG)?;
//! assert_eq!(bytes, b"{}");
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

use std::fmt;
use std::fs::{File, FileType};
use std::io::{self, Read as _};
use std::path::{Path, PathBuf};

/// What a path turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A regular file: the only kind whose content is read.
    Regular,
    /// A directory.
    Directory,
    /// A symbolic link (only when links are not followed).
    Symlink,
    /// A named pipe: opening it for reading blocks until a writer comes.
    Fifo,
    /// A Unix socket.
    Socket,
    /// A character device, such as `/dev/zero` or a terminal.
    CharDevice,
    /// A block device, such as a disk.
    BlockDevice,
    /// Anything else the platform has.
    Other,
}

impl FileKind {
    /// The kind of a file type.
    pub fn of(file_type: FileType) -> FileKind {
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileTypeExt as _;
            if file_type.is_fifo() {
                return FileKind::Fifo;
            }
            if file_type.is_socket() {
                return FileKind::Socket;
            }
            if file_type.is_char_device() {
                return FileKind::CharDevice;
            }
            if file_type.is_block_device() {
                return FileKind::BlockDevice;
            }
        }
        if file_type.is_file() {
            FileKind::Regular
        } else if file_type.is_dir() {
            FileKind::Directory
        } else if file_type.is_symlink() {
            FileKind::Symlink
        } else {
            FileKind::Other
        }
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileKind::Regular => "a regular file",
            FileKind::Directory => "a directory",
            FileKind::Symlink => "a symbolic link",
            FileKind::Fifo => "a named pipe (FIFO)",
            FileKind::Socket => "a socket",
            FileKind::CharDevice => "a character device",
            FileKind::BlockDevice => "a block device",
            FileKind::Other => "a special file",
        })
    }
}

/// The most bytes a read of one kind of file may return, and the name of that kind for errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadCap {
    /// What kind of file this is, as errors say it ("a ref file").
    pub what: &'static str,
    /// The most bytes it may hold.
    pub bytes: u64,
}

impl ReadCap {
    /// A cap of `bytes` for files of kind `what`.
    pub const fn new(what: &'static str, bytes: u64) -> ReadCap {
        ReadCap { what, bytes }
    }
}

/// Caps used by more than one crate. Each crate's own small files (configs, tokenizers) have
/// their caps next to their readers; `SECURITY.md` lists them all.
pub mod caps {
    use super::ReadCap;

    /// `refs/<name>` in the cache: a 40-hex commit, maybe with a newline. 256 bytes leaves room
    /// for whitespace and nothing else.
    pub const REF: ReadCap = ReadCap::new("a ref file", 256);
    /// `safeformers.lock`: a few hundred bytes per file of every locked repo; 8 MiB is tens of
    /// thousands of files.
    pub const LOCKFILE: ReadCap = ReadCap::new("a lockfile", 8 << 20);
    /// The Hub token file (`HF_TOKEN_PATH`, `$HF_HOME/token`).
    pub const TOKEN_FILE: ReadCap = ReadCap::new("a token file", 4 << 10);
    /// `trees/<commit>.json` written by huggingface_hub 2.x: one entry per file of the repo.
    pub const TREE_LISTING: ReadCap = ReadCap::new("a cached file listing", 64 << 20);
}

/// Why a file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Nothing at that path (or a link to nothing).
    #[error("{path}: no such file")]
    NotFound {
        /// The path.
        path: PathBuf,
    },
    /// Something other than a regular file.
    #[error("{path} is {kind}, not a regular file; only regular files are read")]
    NotRegular {
        /// The path.
        path: PathBuf,
        /// What it is.
        kind: FileKind,
    },
    /// More bytes than its kind may hold.
    #[error("{path} is over the {cap}-byte cap for {what}{}", size_note(*size))]
    TooLarge {
        /// The path.
        path: PathBuf,
        /// The kind of file, as [`ReadCap::what`].
        what: &'static str,
        /// The cap.
        cap: u64,
        /// Its size, when the file says it.
        size: Option<u64>,
    },
    /// The path resolves (through symbolic links) to somewhere outside the folder it must stay in.
    #[error("{path} resolves to {target}, outside {root}; it is not read")]
    OutsideRoot {
        /// The path as given.
        path: PathBuf,
        /// Where it resolves to.
        target: PathBuf,
        /// The folder it must stay in.
        root: PathBuf,
    },
    /// Text that is not UTF-8.
    #[error("{path} is not valid UTF-8 (invalid byte at offset {offset})")]
    NotUtf8 {
        /// The path.
        path: PathBuf,
        /// The offset of the first invalid byte.
        offset: usize,
    },
    /// Any other I/O failure.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
}

fn size_note(size: Option<u64>) -> String {
    size.map(|size| format!(" ({size} bytes)"))
        .unwrap_or_default()
}

impl FileError {
    /// An I/O failure on `path`; a missing file becomes [`FileError::NotFound`].
    pub fn io(path: &Path, source: io::Error) -> FileError {
        if source.kind() == io::ErrorKind::NotFound {
            FileError::NotFound {
                path: path.to_path_buf(),
            }
        } else {
            FileError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    }

    /// The path the error concerns.
    pub fn path(&self) -> &Path {
        match self {
            FileError::NotFound { path }
            | FileError::NotRegular { path, .. }
            | FileError::TooLarge { path, .. }
            | FileError::OutsideRoot { path, .. }
            | FileError::NotUtf8 { path, .. }
            | FileError::Io { path, .. } => path,
        }
    }

    /// Whether the file does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, FileError::NotFound { .. })
    }
}

/// What `path` is, following symbolic links (a dangling link is [`FileError::NotFound`]).
pub fn file_kind(path: &Path) -> Result<FileKind, FileError> {
    std::fs::metadata(path)
        .map(|meta| FileKind::of(meta.file_type()))
        .map_err(|error| FileError::io(path, error))
}

/// Opens `path` for reading if, and only if, it is a regular file (following symbolic links).
///
/// The type is checked before the open, so a device is never opened; the open is non-blocking,
/// so a FIFO put in its place meanwhile cannot block; and the opened handle is checked again, so
/// the file that is read is one that passed.
pub fn open_regular(path: &Path) -> Result<File, FileError> {
    let kind = file_kind(path)?;
    if kind != FileKind::Regular {
        return Err(FileError::NotRegular {
            path: path.to_path_buf(),
            kind,
        });
    }
    let file = open_nonblocking(path).map_err(|error| FileError::io(path, error))?;
    let opened = file
        .metadata()
        .map_err(|error| FileError::io(path, error))?;
    let kind = FileKind::of(opened.file_type());
    if kind != FileKind::Regular {
        return Err(FileError::NotRegular {
            path: path.to_path_buf(),
            kind,
        });
    }
    Ok(file)
}

#[cfg(unix)]
fn open_nonblocking(path: &Path) -> io::Result<File> {
    use rustix::fs::{Mode, OFlags};
    // O_NONBLOCK has no effect on reads of regular files, which is all this handle is used for
    // once its type is confirmed; it only keeps the open itself from waiting on a FIFO writer.
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let fd = rustix::fs::open(path, flags, Mode::empty()).map_err(io::Error::from)?;
    Ok(File::from(fd))
}

#[cfg(not(unix))]
fn open_nonblocking(path: &Path) -> io::Result<File> {
    File::open(path)
}

/// Reads the whole of `path`, a regular file of at most `cap.bytes` bytes.
pub fn read_capped(path: &Path, cap: ReadCap) -> Result<Vec<u8>, FileError> {
    let file = open_regular(path)?;
    let size = file
        .metadata()
        .map_err(|error| FileError::io(path, error))?
        .len();
    let too_large = |size| FileError::TooLarge {
        path: path.to_path_buf(),
        what: cap.what,
        cap: cap.bytes,
        size,
    };
    if size > cap.bytes {
        return Err(too_large(Some(size)));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    // The cap holds on what is read, not only on the size claimed: a file that grows meanwhile,
    // or a `/proc` file that claims 0 bytes, stops one byte past it.
    file.take(cap.bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|error| FileError::io(path, error))?;
    if bytes.len() as u64 > cap.bytes {
        return Err(too_large(None));
    }
    Ok(bytes)
}

/// [`read_capped`], with `Ok(None)` when nothing is at `path`.
pub fn read_capped_if_exists(path: &Path, cap: ReadCap) -> Result<Option<Vec<u8>>, FileError> {
    match read_capped(path, cap) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(FileError::NotFound { .. }) => Ok(None),
        Err(error) => Err(error),
    }
}

/// [`read_capped`], as UTF-8 text.
pub fn read_capped_string(path: &Path, cap: ReadCap) -> Result<String, FileError> {
    let bytes = read_capped(path, cap)?;
    String::from_utf8(bytes).map_err(|error| FileError::NotUtf8 {
        path: path.to_path_buf(),
        offset: error.utf8_error().valid_up_to(),
    })
}

/// [`read_capped_string`], with `Ok(None)` when nothing is at `path`.
pub fn read_capped_string_if_exists(
    path: &Path,
    cap: ReadCap,
) -> Result<Option<String>, FileError> {
    match read_capped_string(path, cap) {
        Ok(text) => Ok(Some(text)),
        Err(FileError::NotFound { .. }) => Ok(None),
        Err(error) => Err(error),
    }
}

/// Where `path` resolves to (every symbolic link followed), if that is inside `root` (itself
/// resolved); [`FileError::OutsideRoot`] otherwise. `root` must exist.
pub fn resolve_within(path: &Path, root: &Path) -> Result<PathBuf, FileError> {
    let root = std::fs::canonicalize(root).map_err(|error| FileError::io(root, error))?;
    let target = std::fs::canonicalize(path).map_err(|error| FileError::io(path, error))?;
    if target.starts_with(&root) {
        Ok(target)
    } else {
        Err(FileError::OutsideRoot {
            path: path.to_path_buf(),
            target,
            root,
        })
    }
}

/// Deepest folder nesting [`links_leaving`] walks, and the most entries it looks at.
const MAX_LINK_WALK_DEPTH: usize = 32;
const MAX_LINK_WALK_ENTRIES: usize = 100_000;

/// The first symbolic link under `dir` (at any depth, links to folders included) that resolves
/// outside every one of `roots`, as [`FileError::OutsideRoot`]; `Ok(())` when there is none.
/// Dangling links are not reported (nothing can be read through them). The walk never follows a
/// link, is bounded in depth and entries, and opens no file.
pub fn links_leaving(dir: &Path, roots: &[PathBuf]) -> Result<(), FileError> {
    let resolved_roots: Vec<PathBuf> = roots
        .iter()
        .filter_map(|root| std::fs::canonicalize(root).ok())
        .collect();
    let mut pending = vec![(dir.to_path_buf(), 0usize)];
    let mut seen = 0usize;
    while let Some((folder, depth)) = pending.pop() {
        let entries = std::fs::read_dir(&folder).map_err(|error| FileError::io(&folder, error))?;
        for entry in entries {
            let entry = entry.map_err(|error| FileError::io(&folder, error))?;
            seen += 1;
            let path = entry.path();
            if seen > MAX_LINK_WALK_ENTRIES || depth >= MAX_LINK_WALK_DEPTH {
                return Err(FileError::TooLarge {
                    path: dir.to_path_buf(),
                    what: "a model folder (entries, or folder depth)",
                    cap: MAX_LINK_WALK_ENTRIES as u64,
                    size: None,
                });
            }
            let file_type = entry
                .file_type()
                .map_err(|error| FileError::io(&path, error))?;
            if file_type.is_dir() {
                pending.push((path, depth + 1));
            } else if file_type.is_symlink()
                && let Ok(target) = std::fs::canonicalize(&path)
                && !resolved_roots.iter().any(|root| target.starts_with(root))
            {
                return Err(FileError::OutsideRoot {
                    path,
                    target,
                    root: dir.to_path_buf(),
                });
            }
        }
    }
    Ok(())
}

/// Where a symbolic link points, for messages: its target as written, else the path itself.
pub fn link_target_for_message(path: &Path) -> PathBuf {
    std::fs::read_link(path).unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests;
