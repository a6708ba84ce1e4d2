//! A strict reader for the zip container PyTorch checkpoints use, and a lenient one for the
//! scanner.
//!
//! PyTorch writes a narrow dialect of zip: every member *stored* (never compressed), a data
//! descriptor after each member, one `FB` extra field padding each member's data to 64 bytes,
//! and a Zip64 end record. Tools disagree about almost everything outside that dialect (which
//! of two duplicate names wins, whether a lookup is case-sensitive, whether the local or the
//! central header is believed, whether CRCs are checked, whether data before the first header
//! or after the end record is ignored), and each disagreement has been used to show a scanner
//! one pickle and the loader another. [`parse`] therefore accepts only archives on which every
//! reader must agree:
//!
//! - the file starts with a local header (`PK\x03\x04` at offset 0) and ends with the
//!   end-of-central-directory record and its comment (no trailing bytes);
//! - Zip64 end records are read with checked arithmetic and must agree with the classic record;
//! - every byte of the file belongs to exactly one structure: members (local header, data,
//!   data descriptor) follow each other without gaps or overlaps, then the central directory,
//!   then the end records;
//! - each member's local header repeats the central directory's name, method, flags, CRC and
//!   sizes (CRC and sizes may be zero in the local header when a data descriptor follows, and
//!   the descriptor must then repeat them);
//! - general-purpose flags ⊆ {0x8 data descriptor, 0x800 UTF-8}; method 0 (stored) only, with
//!   equal compressed and uncompressed sizes; the CRC-32 of the data is verified;
//! - names are UTF-8 (ASCII unless the UTF-8 flag is set), relative, without `..`, `.` or empty
//!   components, backslashes, colons or control characters; no directories, symlinks or other
//!   special files; no duplicates and no two names equal under ASCII case-folding (PyTorch's
//!   miniz lookup is case-insensitive).
//!
//! [`inspect`] reads the same structures leniently, the way Python's `zipfile` or PyTorch
//! would, so that `safeformers scan` sees every pickle another tool might load: each violation
//! becomes a problem in the report, DEFLATE members are inflated under hard caps, and local
//! headers the central directory does not list are reported and extracted too.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Range;

/// The most entries an archive may declare. A PyTorch checkpoint has one member per storage
/// plus a handful; a million is far beyond any real model.
pub const MAX_ENTRIES: u64 = 1_000_000;

const LOCAL_SIG: &[u8; 4] = b"PK\x03\x04";
const CENTRAL_SIG: &[u8; 4] = b"PK\x01\x02";
const EOCD_SIG: &[u8; 4] = b"PK\x05\x06";
const ZIP64_EOCD_SIG: &[u8; 4] = b"PK\x06\x06";
const ZIP64_LOCATOR_SIG: &[u8; 4] = b"PK\x06\x07";
const DESCRIPTOR_SIG: &[u8; 4] = b"PK\x07\x08";

const LOCAL_HEADER_LEN: usize = 30;
const CENTRAL_HEADER_LEN: usize = 46;
const EOCD_LEN: usize = 22;
const ZIP64_EOCD_LEN: usize = 56;
const ZIP64_LOCATOR_LEN: usize = 20;
const MAX_COMMENT_LEN: usize = 0xFFFF;

/// General-purpose flag: CRC and sizes follow the data in a data descriptor.
const FLAG_DATA_DESCRIPTOR: u16 = 0x8;
/// General-purpose flag: the name is UTF-8.
const FLAG_UTF8: u16 = 0x800;
const ALLOWED_FLAGS: u16 = FLAG_DATA_DESCRIPTOR | FLAG_UTF8;

const METHOD_STORED: u16 = 0;
const METHOD_DEFLATE: u16 = 8;

const ZIP64_EXTRA_ID: u16 = 0x0001;

/// What is wrong with a zip archive. Every variant names the member (when there is one) and the
/// byte offset of the structure concerned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ZipError {
    /// The file does not start with a local file header.
    #[error(
        "not a zip archive starting at offset 0 (no local file header `PK\\x03\\x04` there); \
         bytes before the first member are refused"
    )]
    NotAtStart,
    /// No end-of-central-directory record in the last 65,557 bytes.
    #[error("no end-of-central-directory record in the last 65,557 bytes of the file")]
    NoEndOfCentralDirectory,
    /// Bytes follow the end-of-central-directory record and its comment.
    #[error(
        "{trailing} bytes follow the end-of-central-directory record at offset {eocd_offset} \
         (data appended to the archive)"
    )]
    TrailingData {
        /// Offset of the end record.
        eocd_offset: u64,
        /// How many bytes follow it (beyond its declared comment).
        trailing: u64,
    },
    /// The archive comment holds another end-of-central-directory signature, so readers may
    /// disagree about where the archive ends.
    #[error(
        "the archive comment of the end record at offset {offset} contains another \
         end-of-central-directory signature"
    )]
    AmbiguousEnd {
        /// Offset of the end record.
        offset: u64,
    },
    /// A structure runs past the end of the file (or of the central directory).
    #[error("{structure} at offset {offset} is truncated")]
    Truncated {
        /// Which structure (`"central directory entry"`, `"member data"`, ...).
        structure: &'static str,
        /// Where it starts.
        offset: u64,
    },
    /// A structure does not start with its signature.
    #[error("{structure} at offset {offset} does not start with its signature")]
    BadSignature {
        /// Which structure.
        structure: &'static str,
        /// Where it should start.
        offset: u64,
    },
    /// The Zip64 end records are malformed or disagree with the classic end record.
    #[error("Zip64 end of central directory at offset {offset}: {reason}")]
    Zip64 {
        /// Offset of the record (or of the locator).
        offset: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// The archive claims to span several disks.
    #[error("multi-disk (spanned) archives are not supported (structure at offset {offset})")]
    MultiDisk {
        /// Offset of the record that says so.
        offset: u64,
    },
    /// More entries than [`MAX_ENTRIES`], or more than the central directory can hold.
    #[error("the archive declares {declared} entries; at most {max} fit")]
    TooManyEntries {
        /// Entries declared.
        declared: u64,
        /// The bound that was exceeded.
        max: u64,
    },
    /// The end record's entry counts disagree with each other or with the central directory.
    #[error(
        "the end-of-central-directory record declares {declared} entries but the central \
         directory holds {found}"
    )]
    EntryCountMismatch {
        /// Entries declared.
        declared: u64,
        /// Entries found.
        found: u64,
    },
    /// The central directory is not where the end record says, or does not end where the
    /// end records begin.
    #[error(
        "the central directory (offset {offset}, {size} bytes) does not end where the end \
         records begin (offset {expected_end})"
    )]
    CentralDirectoryMisplaced {
        /// Declared offset.
        offset: u64,
        /// Declared size.
        size: u64,
        /// Where the end records begin.
        expected_end: u64,
    },
    /// No local file header at the offset the central directory gives.
    #[error("member `{name}`: no local file header at offset {offset}")]
    MissingLocalHeader {
        /// The member.
        name: String,
        /// The offset the central directory gives.
        offset: u64,
    },
    /// The local header disagrees with the central directory.
    #[error(
        "member `{name}` (local header at offset {offset}): {field} differs between the local \
         header and the central directory"
    )]
    LocalHeaderMismatch {
        /// The member (central directory name).
        name: String,
        /// Offset of the local header.
        offset: u64,
        /// Which field.
        field: &'static str,
    },
    /// Encryption (0x1), patch data (0x20), strong encryption (0x40) or another unknown flag.
    #[error(
        "member `{name}` (local header at offset {offset}): general-purpose flags {flags:#06x} \
         are refused (only 0x8 data descriptor and 0x800 UTF-8 are allowed; 0x1 and 0x40 mean \
         encrypted, 0x20 patched)"
    )]
    ForbiddenFlags {
        /// The member.
        name: String,
        /// Offset of the local header.
        offset: u64,
        /// The flags as the central directory gives them.
        flags: u16,
    },
    /// A compressed member: PyTorch only ever stores, and inflating is how zip bombs work.
    #[error(
        "member `{name}` (local header at offset {offset}) uses compression method {method} \
         ({}); only stored (method 0) members are read",
        method_name(*method)
    )]
    Compressed {
        /// The member.
        name: String,
        /// Offset of the local header.
        offset: u64,
        /// The method.
        method: u16,
    },
    /// A stored member whose compressed and uncompressed sizes differ.
    #[error(
        "member `{name}` (local header at offset {offset}) is stored but declares {compressed} \
         compressed and {uncompressed} uncompressed bytes"
    )]
    StoredSizeMismatch {
        /// The member.
        name: String,
        /// Offset of the local header.
        offset: u64,
        /// Compressed size.
        compressed: u64,
        /// Uncompressed size.
        uncompressed: u64,
    },
    /// The data does not match its CRC-32.
    #[error(
        "member `{name}` (local header at offset {offset}): CRC-32 of the data is \
         {actual:#010x} but the archive says {expected:#010x}"
    )]
    CrcMismatch {
        /// The member.
        name: String,
        /// Offset of the local header.
        offset: u64,
        /// CRC the archive records.
        expected: u32,
        /// CRC of the bytes present.
        actual: u32,
    },
    /// A name that could escape a directory, or that readers could interpret differently.
    #[error(
        "member name {name:?} (central directory entry at offset {offset}) is refused: {reason}"
    )]
    BadName {
        /// The name (lossily decoded).
        name: String,
        /// Offset of the central directory entry.
        offset: u64,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A directory entry (trailing `/` or directory attributes).
    #[error("member `{name}` (central directory entry at offset {offset}) is a directory")]
    Directory {
        /// The member.
        name: String,
        /// Offset of the central directory entry.
        offset: u64,
    },
    /// A symbolic link or other special file (Unix mode in the external attributes).
    #[error(
        "member `{name}` (central directory entry at offset {offset}) is not a regular file \
         (Unix mode {mode:#o}: symlink, device or similar)"
    )]
    NotARegularFile {
        /// The member.
        name: String,
        /// Offset of the central directory entry.
        offset: u64,
        /// The Unix mode from the external attributes.
        mode: u32,
    },
    /// The same name twice: Python's `zipfile` reads the last, miniz an unspecified one.
    #[error("member name `{name}` appears twice (local headers at offsets {first} and {second})")]
    DuplicateName {
        /// The name.
        name: String,
        /// Local header of the first.
        first: u64,
        /// Local header of the second.
        second: u64,
    },
    /// Two names equal under ASCII case-folding, which PyTorch's lookup cannot tell apart.
    #[error(
        "member names `{first}` and `{second}` differ only in letter case (PyTorch's lookup is \
         case-insensitive); local header of the second at offset {offset}"
    )]
    CaseCollision {
        /// The earlier name.
        first: String,
        /// The later name.
        second: String,
        /// Local header of the later one.
        offset: u64,
    },
    /// Two members (or a member and the central directory) share bytes.
    #[error("member `{name}` (local header at offset {offset}) overlaps {other}")]
    Overlap {
        /// The member.
        name: String,
        /// Offset of its local header.
        offset: u64,
        /// What it overlaps (`` member `x` `` or `the central directory`).
        other: String,
    },
    /// Bytes that belong to no member and no directory record (hidden content).
    #[error("{len} bytes at offset {offset} belong to no member (hidden data between records)")]
    UnaccountedBytes {
        /// Where they start.
        offset: u64,
        /// How many.
        len: u64,
    },
    /// The data descriptor is missing or disagrees with the central directory.
    #[error(
        "member `{name}` (local header at offset {offset}): the data descriptor is missing or \
         disagrees with the central directory"
    )]
    BadDataDescriptor {
        /// The member.
        name: String,
        /// Offset of its local header.
        offset: u64,
    },
    /// An extra field that is not a well-formed list of (id, size, data) records, or lacks the
    /// Zip64 values its header calls for.
    #[error("member `{name}` ({header} at offset {offset}): malformed extra field")]
    BadExtraField {
        /// The member.
        name: String,
        /// `"local header"` or `"central directory entry"`.
        header: &'static str,
        /// Offset of that header.
        offset: u64,
    },
    /// Inspection only: a local header the central directory does not list.
    #[error(
        "local file header at offset {offset} (`{name}`) is not listed in the central \
         directory (hidden member)"
    )]
    HiddenMember {
        /// The name in the local header.
        name: String,
        /// Offset of the local header.
        offset: u64,
    },
    /// Inspection only: the central directory's offsets are relative to a later start, as
    /// when a zip is appended to other data (Python's `zipfile` accepts this).
    #[error("the archive's offsets are shifted by {shift} bytes (data prepended to the zip)")]
    PrependedData {
        /// Bytes before the archive proper.
        shift: u64,
    },
    /// Inspection only: a member whose bytes could not be extracted.
    #[error("member `{name}` (local header at offset {offset}) was not extracted: {reason}")]
    NotExtracted {
        /// The member.
        name: String,
        /// Offset of its local header.
        offset: u64,
        /// Why.
        reason: String,
    },
    /// Inspection only: a DEFLATE stream that is corrupt or longer than declared; the bytes
    /// inflated before that are still returned.
    #[error(
        "member `{name}` (local header at offset {offset}): inflating stopped after {inflated} \
         bytes: {reason}"
    )]
    InflateFailed {
        /// The member.
        name: String,
        /// Offset of its local header.
        offset: u64,
        /// Bytes inflated before the failure.
        inflated: u64,
        /// What the inflater said.
        reason: String,
    },
    /// Inspection only: a member that inflated to another size than it declares.
    #[error(
        "member `{name}` (local header at offset {offset}) inflated to {actual} bytes but \
         declares {declared}"
    )]
    InflatedSizeMismatch {
        /// The member.
        name: String,
        /// Offset of its local header.
        offset: u64,
        /// Declared uncompressed size.
        declared: u64,
        /// Bytes inflated.
        actual: u64,
    },
}

/// The human name of a compression method.
fn method_name(method: u16) -> &'static str {
    match method {
        0 => "stored",
        8 => "DEFLATE",
        9 => "DEFLATE64",
        12 => "bzip2",
        14 => "LZMA",
        93 => "Zstandard",
        95 => "XZ",
        99 => "AES-encrypted",
        _ => "unknown",
    }
}

/// One member of a strictly parsed archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZipEntry<'a> {
    /// The member's full name (`archive/data.pkl`).
    pub name: &'a str,
    /// The member's bytes, a slice of the archive (members are stored, so this is the content).
    pub data: &'a [u8],
    /// Offset of the local file header.
    pub local_header_offset: u64,
    /// Offset of the first data byte.
    pub data_offset: u64,
    /// CRC-32 of the data (verified).
    pub crc32: u32,
    /// Compressed size (equal to the uncompressed size: members are stored).
    pub compressed_size: u64,
    /// Uncompressed size.
    pub uncompressed_size: u64,
    /// General-purpose flags (a subset of 0x8 | 0x800).
    pub flags: u16,
}

/// A zip archive that passed every rule of [`parse`], with its members in central-directory
/// order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZipArchive<'a> {
    entries: Vec<ZipEntry<'a>>,
    index: HashMap<&'a str, usize>,
}

impl<'a> ZipArchive<'a> {
    /// Members in central-directory order.
    pub fn entries(&self) -> &[ZipEntry<'a>] {
        &self.entries
    }

    /// The member called exactly `name` (case-sensitive; [`parse`] has ruled out names that
    /// differ only in case).
    pub fn by_name(&self, name: &str) -> Option<&ZipEntry<'a>> {
        self.index.get(name).and_then(|&i| self.entries.get(i))
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the archive has no members.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Parses `bytes` (a whole file) as a strict zip archive; see the [module docs](self) for the
/// rules. Returns the first rule broken.
///
/// ```
/// use safeformers_weights::zip::{self, ZipError};
/// assert_eq!(zip::parse(b"not a zip").unwrap_err(), ZipError::NotAtStart);
/// ```
pub fn parse(bytes: &[u8]) -> Result<ZipArchive<'_>, ZipError> {
    let mut sink = Sink::Strict;
    let read = read_archive(bytes, &mut sink)?;
    let mut entries = Vec::with_capacity(read.members.len());
    let mut index = HashMap::with_capacity(read.members.len());
    for member in read.members {
        let (Ok(name), Some(data_range)) = (std::str::from_utf8(member.raw.name), member.data)
        else {
            // Strict reading has returned an error for any member without a name or data.
            continue;
        };
        let data = bytes.get(data_range.clone()).unwrap_or(&[]);
        index.insert(name, entries.len());
        entries.push(ZipEntry {
            name,
            data,
            local_header_offset: member.local_offset as u64,
            data_offset: data_range.start as u64,
            crc32: member.raw.crc32,
            compressed_size: member.raw.compressed_size,
            uncompressed_size: member.raw.uncompressed_size,
            flags: member.raw.flags,
        });
    }
    Ok(ZipArchive { entries, index })
}

/// Caps on what [`inspect`] inflates and how many hidden members it reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InspectLimits {
    /// Most bytes one compressed member may inflate to.
    pub max_member_bytes: u64,
    /// Most bytes all compressed members together may inflate to.
    pub max_total_inflated: u64,
    /// Most uncompressed bytes per compressed byte (DEFLATE cannot exceed about 1032).
    pub max_ratio: u64,
    /// Most local headers outside the central directory to report.
    pub max_hidden_members: usize,
}

impl Default for InspectLimits {
    fn default() -> InspectLimits {
        InspectLimits {
            max_member_bytes: 256 * 1024 * 1024,
            max_total_inflated: 1024 * 1024 * 1024,
            max_ratio: 1100,
            max_hidden_members: 10_000,
        }
    }
}

/// One member as [`inspect`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InspectedMember<'a> {
    /// The name (lossily decoded if it is not UTF-8).
    pub name: String,
    /// Whether the central directory lists it (`false`: found only as a local header).
    pub in_central_directory: bool,
    /// Offset of the local file header.
    pub local_header_offset: u64,
    /// Compression method.
    pub method: u16,
    /// General-purpose flags.
    pub flags: u16,
    /// Declared CRC-32.
    pub crc32: u32,
    /// Declared compressed size.
    pub compressed_size: u64,
    /// Declared uncompressed size.
    pub uncompressed_size: u64,
    /// The content as another reader would see it (borrowed when stored, inflated when
    /// DEFLATE), or `None` when it could not be extracted within the limits (the reason is
    /// among the problems).
    pub data: Option<Cow<'a, [u8]>>,
}

/// What [`inspect`] saw: every member it could find, every rule broken, and the error that
/// stopped it reading the central directory, if any.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ZipInspection<'a> {
    /// Members in central-directory order, then hidden members by offset.
    pub members: Vec<InspectedMember<'a>>,
    /// Every rule of [`parse`] that the archive breaks, plus inspection notes
    /// ([`ZipError::HiddenMember`], [`ZipError::NotExtracted`], [`ZipError::PrependedData`]).
    pub problems: Vec<ZipError>,
    /// Why the central directory could not be read; `members` then holds only what a scan of
    /// local headers found.
    pub fatal: Option<ZipError>,
}

impl ZipInspection<'_> {
    /// Whether [`parse`] would accept the archive.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty() && self.fatal.is_none()
    }
}

/// Reads `bytes` leniently for the scanner: reports every violation of [`parse`]'s rules
/// without stopping, and extracts every member another tool might read — duplicates, members
/// with forbidden flags or names, DEFLATE members (inflated under `limits`), and local headers
/// hidden from the central directory. Never panics, whatever the input.
pub fn inspect(bytes: &[u8], limits: InspectLimits) -> ZipInspection<'_> {
    let mut problems = Vec::new();
    let mut sink = Sink::Lenient(&mut problems);
    let result = read_archive(bytes, &mut sink);
    let mut inflated_total = 0u64;
    let mut members = Vec::new();
    let (read_members, gaps, fatal) = match result {
        Ok(read) => (read.members, read.gaps, None),
        Err(error) => {
            let whole_file = 0..bytes.len();
            (Vec::new(), vec![whole_file], Some(error))
        }
    };
    for member in read_members {
        let data = extract(bytes, &member, &limits, &mut inflated_total, &mut problems);
        members.push(InspectedMember {
            name: String::from_utf8_lossy(member.raw.name).into_owned(),
            in_central_directory: true,
            local_header_offset: member.local_offset as u64,
            method: member.raw.method,
            flags: member.raw.flags,
            crc32: member.raw.crc32,
            compressed_size: member.raw.compressed_size,
            uncompressed_size: member.raw.uncompressed_size,
            data,
        });
    }
    // Local headers in bytes no listed member accounts for.
    let mut hidden = 0usize;
    for gap in gaps {
        let mut at = gap.start;
        while hidden < limits.max_hidden_members {
            let Some(found) = find_signature(bytes, at, gap.end, LOCAL_SIG) else {
                break;
            };
            at = found + 1;
            let Some(member) = read_hidden_local(bytes, found) else {
                continue;
            };
            hidden += 1;
            problems.push(ZipError::HiddenMember {
                name: String::from_utf8_lossy(member.raw.name).into_owned(),
                offset: found as u64,
            });
            let data = extract(bytes, &member, &limits, &mut inflated_total, &mut problems);
            members.push(InspectedMember {
                name: String::from_utf8_lossy(member.raw.name).into_owned(),
                in_central_directory: false,
                local_header_offset: found as u64,
                method: member.raw.method,
                flags: member.raw.flags,
                crc32: member.raw.crc32,
                compressed_size: member.raw.compressed_size,
                uncompressed_size: member.raw.uncompressed_size,
                data,
            });
        }
    }
    ZipInspection {
        members,
        problems,
        fatal,
    }
}

// ---------------------------------------------------------------------------------------------
// Shared reading machinery.

/// Where rule violations go: strict reading stops at the first; lenient reading records it and
/// carries on where it can.
enum Sink<'p> {
    Strict,
    Lenient(&'p mut Vec<ZipError>),
}

impl Sink<'_> {
    fn report(&mut self, error: ZipError) -> Result<(), ZipError> {
        match self {
            Sink::Strict => Err(error),
            Sink::Lenient(problems) => {
                problems.push(error);
                Ok(())
            }
        }
    }

    fn is_strict(&self) -> bool {
        matches!(self, Sink::Strict)
    }
}

fn le16(bytes: &[u8], at: usize) -> u16 {
    bytes
        .get(at..at.saturating_add(2))
        .and_then(|slice| <[u8; 2]>::try_from(slice).ok())
        .map_or(0, u16::from_le_bytes)
}

fn le32(bytes: &[u8], at: usize) -> u32 {
    bytes
        .get(at..at.saturating_add(4))
        .and_then(|slice| <[u8; 4]>::try_from(slice).ok())
        .map_or(0, u32::from_le_bytes)
}

fn le64(bytes: &[u8], at: usize) -> u64 {
    bytes
        .get(at..at.saturating_add(8))
        .and_then(|slice| <[u8; 8]>::try_from(slice).ok())
        .map_or(0, u64::from_le_bytes)
}

fn has_sig(bytes: &[u8], at: usize, sig: &[u8; 4]) -> bool {
    bytes.get(at..at.saturating_add(4)) == Some(sig.as_slice())
}

fn find_signature(bytes: &[u8], from: usize, to: usize, sig: &[u8; 4]) -> Option<usize> {
    let window = bytes.get(from..to.min(bytes.len()))?;
    window
        .windows(4)
        .position(|candidate| candidate == sig.as_slice())
        .map(|position| from + position)
}

/// A central directory entry, fields resolved through the Zip64 extra field.
#[derive(Debug, Clone)]
struct RawEntry<'a> {
    name: &'a [u8],
    central_offset: usize,
    flags: u16,
    method: u16,
    crc32: u32,
    compressed_size: u64,
    uncompressed_size: u64,
    local_offset: u64,
    external_attributes: u32,
}

impl RawEntry<'_> {
    fn display_name(&self) -> String {
        String::from_utf8_lossy(self.name).into_owned()
    }
}

/// A member located in the file: its local header offset and (if found) the data range.
#[derive(Debug, Clone)]
struct ReadMember<'a> {
    raw: RawEntry<'a>,
    local_offset: usize,
    data: Option<Range<usize>>,
}

struct ReadArchive<'a> {
    members: Vec<ReadMember<'a>>,
    /// Byte ranges no structure accounts for (lenient reading scans them for local headers).
    gaps: Vec<Range<usize>>,
}

struct EndRecords {
    /// Where the central directory must end (the Zip64 record, or the classic end record).
    directory_end: usize,
    entries: u64,
    directory_size: u64,
    directory_offset: u64,
}

fn read_archive<'a>(bytes: &'a [u8], sink: &mut Sink<'_>) -> Result<ReadArchive<'a>, ZipError> {
    if !has_sig(bytes, 0, LOCAL_SIG) {
        sink.report(ZipError::NotAtStart)?;
    }
    let eocd = find_end_record(bytes, sink)?;
    let end = read_end_records(bytes, eocd, sink)?;

    // Where the central directory really is. Strictly, exactly where declared and ending where
    // the end records begin. Leniently, shifted like Python's zipfile does when data was
    // prepended to the archive.
    let declared_end = end.directory_offset.checked_add(end.directory_size);
    let mut shift = 0usize;
    if declared_end != Some(end.directory_end as u64) {
        sink.report(ZipError::CentralDirectoryMisplaced {
            offset: end.directory_offset,
            size: end.directory_size,
            expected_end: end.directory_end as u64,
        })?;
        if let Some(declared_end) = declared_end.filter(|&e| e < end.directory_end as u64) {
            shift = usize::try_from(end.directory_end as u64 - declared_end).unwrap_or(0);
            sink.report(ZipError::PrependedData {
                shift: shift as u64,
            })?;
        }
    }
    let directory_start = usize::try_from(end.directory_offset)
        .ok()
        .and_then(|offset| offset.checked_add(shift))
        .filter(|&start| start <= end.directory_end)
        .ok_or(ZipError::CentralDirectoryMisplaced {
            offset: end.directory_offset,
            size: end.directory_size,
            expected_end: end.directory_end as u64,
        })?;
    let directory = directory_start..end.directory_end;

    // Entry count: bounded, and plausible for the directory's size, before allocating.
    let max_by_size = (directory.len() / CENTRAL_HEADER_LEN) as u64;
    if end.entries > MAX_ENTRIES || end.entries > max_by_size {
        return Err(ZipError::TooManyEntries {
            declared: end.entries,
            max: MAX_ENTRIES.min(max_by_size),
        });
    }
    let raw_entries = read_central_directory(bytes, directory.clone(), end.entries, sink)?;

    let mut members = Vec::with_capacity(raw_entries.len());
    for raw in raw_entries {
        match check_member(bytes, raw.clone(), shift, sink) {
            Ok(member) => members.push(member),
            // Leniently, a member whose local header cannot be read is still listed (without
            // data), and the rest of the archive is read.
            Err(error) if !sink.is_strict() => {
                sink.report(error)?;
                let local_offset = usize::try_from(raw.local_offset)
                    .unwrap_or(usize::MAX)
                    .saturating_add(shift);
                members.push(ReadMember {
                    raw,
                    local_offset,
                    data: None,
                });
            }
            Err(error) => return Err(error),
        }
    }
    check_names(&members, sink)?;
    let gaps = check_layout(bytes, &members, directory, sink)?;
    Ok(ReadArchive { members, gaps })
}

/// Finds the end-of-central-directory record: the last signature in the final 65,557 bytes
/// whose comment ends exactly at the end of the file.
fn find_end_record(bytes: &[u8], sink: &mut Sink<'_>) -> Result<usize, ZipError> {
    let Some(last) = bytes.len().checked_sub(EOCD_LEN) else {
        return Err(ZipError::NoEndOfCentralDirectory);
    };
    let lowest = last.saturating_sub(MAX_COMMENT_LEN);
    let mut inconsistent = None;
    let mut position = last;
    loop {
        if has_sig(bytes, position, EOCD_SIG) {
            let comment_len = usize::from(le16(bytes, position + 20));
            let record_end = position + EOCD_LEN + comment_len;
            if record_end == bytes.len() {
                let comment = bytes.get(position + EOCD_LEN..).unwrap_or(&[]);
                if find_signature(comment, 0, comment.len(), EOCD_SIG).is_some() {
                    sink.report(ZipError::AmbiguousEnd {
                        offset: position as u64,
                    })?;
                }
                return Ok(position);
            }
            if inconsistent.is_none() && record_end < bytes.len() {
                inconsistent = Some((position, bytes.len() - record_end));
            }
        }
        if position == lowest {
            break;
        }
        position -= 1;
    }
    match inconsistent {
        Some((eocd_offset, trailing)) => {
            sink.report(ZipError::TrailingData {
                eocd_offset: eocd_offset as u64,
                trailing: trailing as u64,
            })?;
            Ok(eocd_offset)
        }
        None => Err(ZipError::NoEndOfCentralDirectory),
    }
}

fn read_end_records(
    bytes: &[u8],
    eocd: usize,
    sink: &mut Sink<'_>,
) -> Result<EndRecords, ZipError> {
    let disk = le16(bytes, eocd + 4);
    let directory_disk = le16(bytes, eocd + 6);
    let entries_on_disk = le16(bytes, eocd + 8);
    let entries = le16(bytes, eocd + 10);
    let directory_size = le32(bytes, eocd + 12);
    let directory_offset = le32(bytes, eocd + 16);
    let uses_sentinels = disk == 0xFFFF
        || directory_disk == 0xFFFF
        || entries_on_disk == 0xFFFF
        || entries == 0xFFFF
        || directory_size == 0xFFFF_FFFF
        || directory_offset == 0xFFFF_FFFF;

    let locator = eocd.checked_sub(ZIP64_LOCATOR_LEN);
    let Some(locator) = locator.filter(|&at| has_sig(bytes, at, ZIP64_LOCATOR_SIG)) else {
        if uses_sentinels {
            return Err(ZipError::Zip64 {
                offset: eocd as u64,
                reason: "the end record holds Zip64 placeholders but there is no Zip64 locator",
            });
        }
        if disk != 0 || directory_disk != 0 {
            sink.report(ZipError::MultiDisk {
                offset: eocd as u64,
            })?;
        }
        if entries_on_disk != entries {
            sink.report(ZipError::EntryCountMismatch {
                declared: u64::from(entries),
                found: u64::from(entries_on_disk),
            })?;
        }
        return Ok(EndRecords {
            directory_end: eocd,
            entries: u64::from(entries),
            directory_size: u64::from(directory_size),
            directory_offset: u64::from(directory_offset),
        });
    };

    // Zip64 locator: disk of the record, its offset, total disks.
    let record_disk = le32(bytes, locator + 4);
    let record_offset = le64(bytes, locator + 8);
    let total_disks = le32(bytes, locator + 16);
    if record_disk != 0 || total_disks > 1 {
        sink.report(ZipError::MultiDisk {
            offset: locator as u64,
        })?;
    }
    // The record sits right before its locator (where Python's zipfile reads it); the
    // locator's own offset for it must agree.
    let record = locator
        .checked_sub(ZIP64_EOCD_LEN)
        .filter(|&at| has_sig(bytes, at, ZIP64_EOCD_SIG))
        .ok_or(ZipError::BadSignature {
            structure: "Zip64 end of central directory record",
            offset: locator.saturating_sub(ZIP64_EOCD_LEN) as u64,
        })?;
    let zip64_error = |reason| ZipError::Zip64 {
        offset: record as u64,
        reason,
    };
    if record_offset != record as u64 {
        sink.report(zip64_error(
            "the locator gives another offset for the record than where it is",
        ))?;
    }
    // "Size of this record" counts the bytes after the first 12; 44 means no extensible data.
    if le64(bytes, record + 4) != 44 {
        sink.report(zip64_error("the record has extensible data"))?;
    }
    let disk64 = le32(bytes, record + 16);
    let directory_disk64 = le32(bytes, record + 20);
    let entries_on_disk64 = le64(bytes, record + 24);
    let entries64 = le64(bytes, record + 32);
    let directory_size64 = le64(bytes, record + 40);
    let directory_offset64 = le64(bytes, record + 48);
    if disk64 != 0 || directory_disk64 != 0 {
        sink.report(ZipError::MultiDisk {
            offset: record as u64,
        })?;
    }
    if entries_on_disk64 != entries64 {
        sink.report(ZipError::EntryCountMismatch {
            declared: entries64,
            found: entries_on_disk64,
        })?;
    }
    // The classic record must agree wherever it does not hold a placeholder.
    let agrees = (disk == 0xFFFF || u32::from(disk) == disk64)
        && (directory_disk == 0xFFFF || u32::from(directory_disk) == directory_disk64)
        && (entries_on_disk == 0xFFFF || u64::from(entries_on_disk) == entries_on_disk64)
        && (entries == 0xFFFF || u64::from(entries) == entries64)
        && (directory_size == 0xFFFF_FFFF || u64::from(directory_size) == directory_size64)
        && (directory_offset == 0xFFFF_FFFF || u64::from(directory_offset) == directory_offset64);
    if !agrees {
        sink.report(zip64_error(
            "the Zip64 record disagrees with the classic end record",
        ))?;
    }
    Ok(EndRecords {
        directory_end: record,
        entries: entries64,
        directory_size: directory_size64,
        directory_offset: directory_offset64,
    })
}

/// Walks the extra field: a sequence of (id u16, size u16, data) records that must fill it
/// exactly, each id at most once. Returns the Zip64 record's data, if any.
fn zip64_extra(extra: &[u8]) -> Result<Option<&[u8]>, ()> {
    let mut at = 0usize;
    let mut seen: Vec<u16> = Vec::new();
    let mut zip64 = None;
    while at < extra.len() {
        if at + 4 > extra.len() {
            return Err(());
        }
        let id = le16(extra, at);
        let size = usize::from(le16(extra, at + 2));
        let data = extra.get(at + 4..at + 4 + size).ok_or(())?;
        if seen.contains(&id) {
            return Err(());
        }
        seen.push(id);
        if id == ZIP64_EXTRA_ID {
            zip64 = Some(data);
        }
        at += 4 + size;
    }
    Ok(zip64)
}

/// Replaces 0xFFFFFFFF placeholders by the Zip64 extra field's values, in the order the
/// specification gives (uncompressed size, compressed size, local header offset).
fn resolve_zip64(values: &mut [&mut u64], zip64: Option<&[u8]>) -> Result<(), ()> {
    let mut at = 0usize;
    for value in values.iter_mut() {
        if **value == 0xFFFF_FFFF {
            let data = zip64.ok_or(())?;
            if at + 8 > data.len() {
                return Err(());
            }
            **value = le64(data, at);
            at += 8;
        }
    }
    Ok(())
}

fn read_central_directory<'a>(
    bytes: &'a [u8],
    directory: Range<usize>,
    declared: u64,
    sink: &mut Sink<'_>,
) -> Result<Vec<RawEntry<'a>>, ZipError> {
    let table = bytes.get(directory.clone()).ok_or(ZipError::Truncated {
        structure: "central directory",
        offset: directory.start as u64,
    })?;
    let mut entries = Vec::with_capacity(usize::try_from(declared).unwrap_or(0));
    let mut at = 0usize;
    // Read every entry the directory holds (its size bounds how many), then compare.
    while at < table.len() && (entries.len() as u64) < MAX_ENTRIES {
        let offset = directory.start + at;
        let truncated = ZipError::Truncated {
            structure: "central directory entry",
            offset: offset as u64,
        };
        let header = table
            .get(at..at + CENTRAL_HEADER_LEN)
            .ok_or(truncated.clone())?;
        if !has_sig(header, 0, CENTRAL_SIG) {
            return Err(ZipError::BadSignature {
                structure: "central directory entry",
                offset: offset as u64,
            });
        }
        let flags = le16(header, 8);
        let method = le16(header, 10);
        let crc32 = le32(header, 16);
        let mut compressed_size = u64::from(le32(header, 20));
        let mut uncompressed_size = u64::from(le32(header, 24));
        let name_len = usize::from(le16(header, 28));
        let extra_len = usize::from(le16(header, 30));
        let comment_len = usize::from(le16(header, 32));
        let disk_start = le16(header, 34);
        let external_attributes = le32(header, 38);
        let mut local_offset = u64::from(le32(header, 42));
        let name_start = at + CENTRAL_HEADER_LEN;
        let name = table
            .get(name_start..name_start + name_len)
            .ok_or(truncated.clone())?;
        let extra = table
            .get(name_start + name_len..name_start + name_len + extra_len)
            .ok_or(truncated.clone())?;
        let next = name_start + name_len + extra_len + comment_len;
        if next > table.len() {
            return Err(truncated);
        }
        let bad_extra = || ZipError::BadExtraField {
            name: String::from_utf8_lossy(name).into_owned(),
            header: "central directory entry",
            offset: offset as u64,
        };
        let zip64 = match zip64_extra(extra) {
            Ok(zip64) => zip64,
            Err(()) => {
                sink.report(bad_extra())?;
                None
            }
        };
        if resolve_zip64(
            &mut [
                &mut uncompressed_size,
                &mut compressed_size,
                &mut local_offset,
            ],
            zip64,
        )
        .is_err()
        {
            // Without the real values, nothing about this member can be located.
            return Err(bad_extra());
        }
        if disk_start != 0 {
            sink.report(ZipError::MultiDisk {
                offset: offset as u64,
            })?;
        }
        entries.push(RawEntry {
            name,
            central_offset: offset,
            flags,
            method,
            crc32,
            compressed_size,
            uncompressed_size,
            local_offset,
            external_attributes,
        });
        at = next;
    }
    if entries.len() as u64 != declared {
        sink.report(ZipError::EntryCountMismatch {
            declared,
            found: entries.len() as u64,
        })?;
    }
    if at != table.len() {
        sink.report(ZipError::UnaccountedBytes {
            offset: (directory.start + at) as u64,
            len: (table.len() - at) as u64,
        })?;
    }
    Ok(entries)
}

/// Why a name is refused, if it is.
fn name_problem(name: &[u8], flags: u16) -> Option<&'static str> {
    if name.is_empty() {
        return Some("empty name");
    }
    if name.iter().any(|&b| b < 0x20 || b == 0x7F) {
        return Some("control character or NUL");
    }
    if !name.is_ascii() && flags & FLAG_UTF8 == 0 {
        return Some("non-ASCII name without the UTF-8 flag (readers decode it differently)");
    }
    let Ok(text) = std::str::from_utf8(name) else {
        return Some("not valid UTF-8");
    };
    if text.contains('\\') {
        return Some("backslash");
    }
    if text.contains(':') {
        return Some("colon (drive letter or stream name)");
    }
    if text.starts_with('/') {
        return Some("absolute path");
    }
    let trimmed = text.strip_suffix('/').unwrap_or(text);
    for component in trimmed.split('/') {
        match component {
            ".." => return Some("`..` component"),
            "." | "" => return Some("empty or `.` component"),
            _ => {}
        }
    }
    None
}

const S_IFMT: u32 = 0o170_000;
const S_IFREG: u32 = 0o100_000;
const S_IFDIR: u32 = 0o040_000;
const DOS_DIRECTORY: u32 = 0x10;

/// Checks one central entry's own fields and its local header; returns where its data is.
fn check_member<'a>(
    bytes: &'a [u8],
    raw: RawEntry<'a>,
    shift: usize,
    sink: &mut Sink<'_>,
) -> Result<ReadMember<'a>, ZipError> {
    let name = raw.display_name();
    check_member_kind(&raw, &name, sink)?;
    let local_offset = usize::try_from(raw.local_offset)
        .ok()
        .and_then(|offset| offset.checked_add(shift))
        .filter(|&offset| offset < bytes.len())
        .ok_or_else(|| ZipError::MissingLocalHeader {
            name: name.clone(),
            offset: raw.local_offset,
        })?;
    check_member_encoding(&raw, &name, local_offset as u64, sink)?;
    let data_start = check_local_header(bytes, &raw, &name, local_offset, sink)?;
    let data = check_member_data(bytes, &raw, name, local_offset, data_start, sink)?;
    Ok(ReadMember {
        raw,
        local_offset,
        data,
    })
}

/// A member's name, and that it is a regular file (not a directory, link or device).
fn check_member_kind(raw: &RawEntry<'_>, name: &str, sink: &mut Sink<'_>) -> Result<(), ZipError> {
    let central = raw.central_offset as u64;
    let name = name.to_string();
    if let Some(reason) = name_problem(raw.name, raw.flags) {
        sink.report(ZipError::BadName {
            name: name.clone(),
            offset: central,
            reason,
        })?;
    }
    let mode = raw.external_attributes >> 16;
    if raw.name.ends_with(b"/")
        || mode & S_IFMT == S_IFDIR
        || raw.external_attributes & DOS_DIRECTORY != 0
    {
        sink.report(ZipError::Directory {
            name: name.clone(),
            offset: central,
        })?;
    } else if mode & S_IFMT != 0 && mode & S_IFMT != S_IFREG {
        sink.report(ZipError::NotARegularFile {
            name: name.clone(),
            offset: central,
            mode,
        })?;
    }
    Ok(())
}

/// The member is stored (not compressed), with only the flags we accept.
fn check_member_encoding(
    raw: &RawEntry<'_>,
    name: &str,
    local: u64,
    sink: &mut Sink<'_>,
) -> Result<(), ZipError> {
    let name = name.to_string();
    if raw.flags & !ALLOWED_FLAGS != 0 {
        sink.report(ZipError::ForbiddenFlags {
            name: name.clone(),
            offset: local,
            flags: raw.flags,
        })?;
    }
    if raw.method != METHOD_STORED {
        sink.report(ZipError::Compressed {
            name: name.clone(),
            offset: local,
            method: raw.method,
        })?;
    } else if raw.compressed_size != raw.uncompressed_size {
        sink.report(ZipError::StoredSizeMismatch {
            name: name.clone(),
            offset: local,
            compressed: raw.compressed_size,
            uncompressed: raw.uncompressed_size,
        })?;
    }
    Ok(())
}

/// The local header agrees with the central entry; returns where the member's data starts.
fn check_local_header(
    bytes: &[u8],
    raw: &RawEntry<'_>,
    name: &str,
    local_offset: usize,
    sink: &mut Sink<'_>,
) -> Result<usize, ZipError> {
    let local = local_offset as u64;
    let name = name.to_string();
    let missing = || ZipError::MissingLocalHeader {
        name: name.clone(),
        offset: local,
    };
    let header = bytes
        .get(local_offset..local_offset.saturating_add(LOCAL_HEADER_LEN))
        .ok_or_else(missing)?;
    if !has_sig(header, 0, LOCAL_SIG) {
        return Err(missing());
    }
    let local_flags = le16(header, 6);
    let local_method = le16(header, 8);
    let local_crc = le32(header, 14);
    let mut local_compressed = u64::from(le32(header, 18));
    let mut local_uncompressed = u64::from(le32(header, 22));
    let name_len = usize::from(le16(header, 26));
    let extra_len = usize::from(le16(header, 28));
    let name_start = local_offset + LOCAL_HEADER_LEN;
    let truncated = || ZipError::Truncated {
        structure: "local file header",
        offset: local,
    };
    let local_name = bytes
        .get(name_start..name_start + name_len)
        .ok_or_else(truncated)?;
    let extra = bytes
        .get(name_start + name_len..name_start + name_len + extra_len)
        .ok_or_else(truncated)?;
    let data_start = name_start + name_len + extra_len;
    let mismatch = |field| ZipError::LocalHeaderMismatch {
        name: name.clone(),
        offset: local,
        field,
    };
    if local_name != raw.name {
        sink.report(mismatch("the name"))?;
    }
    if local_method != raw.method {
        sink.report(mismatch("the compression method"))?;
    }
    if local_flags != raw.flags {
        sink.report(mismatch("the general-purpose flags"))?;
    }
    let bad_extra = ZipError::BadExtraField {
        name: name.clone(),
        header: "local header",
        offset: local,
    };
    match zip64_extra(extra) {
        Ok(zip64) => {
            if resolve_zip64(&mut [&mut local_uncompressed, &mut local_compressed], zip64).is_err()
            {
                sink.report(bad_extra)?;
            }
        }
        Err(()) => sink.report(bad_extra)?,
    }
    let deferred = raw.flags & FLAG_DATA_DESCRIPTOR != 0
        && local_crc == 0
        && local_compressed == 0
        && local_uncompressed == 0;
    if !deferred {
        if local_crc != raw.crc32 {
            sink.report(mismatch("the CRC-32"))?;
        }
        if local_compressed != raw.compressed_size || local_uncompressed != raw.uncompressed_size {
            sink.report(mismatch("the sizes"))?;
        }
    }
    Ok(data_start)
}

/// Where the member's data is: as every reader locates it, after the *local* name and extra
/// field, with the central directory's compressed size; its CRC-32 checked in strict mode.
fn check_member_data(
    bytes: &[u8],
    raw: &RawEntry<'_>,
    name: String,
    local_offset: usize,
    data_start: usize,
    sink: &mut Sink<'_>,
) -> Result<Option<Range<usize>>, ZipError> {
    let local = local_offset as u64;
    let data = usize::try_from(raw.compressed_size)
        .ok()
        .and_then(|len| data_start.checked_add(len))
        .filter(|&end| end <= bytes.len())
        .map(|end| data_start..end);
    if data.is_none() {
        sink.report(ZipError::Truncated {
            structure: "member data",
            offset: data_start as u64,
        })?;
    }
    if sink.is_strict()
        && let Some(content) = data.as_ref().and_then(|range| bytes.get(range.clone()))
    {
        let actual = crc32fast::hash(content);
        if actual != raw.crc32 {
            sink.report(ZipError::CrcMismatch {
                name,
                offset: local,
                expected: raw.crc32,
                actual,
            })?;
        }
    }
    Ok(data)
}

/// No duplicate names, no names equal under ASCII case-folding.
fn check_names(members: &[ReadMember<'_>], sink: &mut Sink<'_>) -> Result<(), ZipError> {
    let mut seen: HashMap<Vec<u8>, usize> = HashMap::with_capacity(members.len());
    for (i, member) in members.iter().enumerate() {
        let folded = member.raw.name.to_ascii_lowercase();
        if let Some(&first) = seen.get(&folded) {
            let Some(earlier) = members.get(first) else {
                continue;
            };
            let error = if earlier.raw.name == member.raw.name {
                ZipError::DuplicateName {
                    name: member.raw.display_name(),
                    first: earlier.local_offset as u64,
                    second: member.local_offset as u64,
                }
            } else {
                ZipError::CaseCollision {
                    first: earlier.raw.display_name(),
                    second: member.raw.display_name(),
                    offset: member.local_offset as u64,
                }
            };
            sink.report(error)?;
        } else {
            seen.insert(folded, i);
        }
    }
    Ok(())
}

/// Whether a data descriptor of `len` bytes at `at` repeats the member's CRC and sizes.
fn descriptor_matches(bytes: &[u8], at: usize, len: usize, raw: &RawEntry<'_>) -> bool {
    let Some(descriptor) = bytes.get(at..at.saturating_add(len)) else {
        return false;
    };
    let (body, wide) = match len {
        16 | 24 if has_sig(descriptor, 0, DESCRIPTOR_SIG) => {
            (descriptor.get(4..).unwrap_or(&[]), len == 24)
        }
        12 | 20 => (descriptor, len == 20),
        _ => return false,
    };
    let crc = le32(body, 0);
    let (compressed, uncompressed) = if wide {
        (le64(body, 4), le64(body, 12))
    } else {
        (u64::from(le32(body, 4)), u64::from(le32(body, 8)))
    };
    crc == raw.crc32 && compressed == raw.compressed_size && uncompressed == raw.uncompressed_size
}

/// Every byte before the central directory belongs to exactly one member: members follow each
/// other without gaps or overlaps from offset 0, each followed by its data descriptor when it
/// has one. Returns the gaps (for lenient reading).
fn check_layout(
    bytes: &[u8],
    members: &[ReadMember<'_>],
    directory: Range<usize>,
    sink: &mut Sink<'_>,
) -> Result<Vec<Range<usize>>, ZipError> {
    let mut order: Vec<&ReadMember<'_>> = members.iter().collect();
    order.sort_by_key(|member| member.local_offset);
    let mut gaps = Vec::new();
    let mut cursor = 0usize;
    let mut previous: Option<&ReadMember<'_>> = None;
    for (i, member) in order.iter().enumerate() {
        let next_start = order
            .get(i + 1)
            .map_or(directory.start, |next| next.local_offset);
        let name = member.raw.display_name();
        if member.local_offset < cursor {
            let other = previous.map_or_else(
                || "another member".to_string(),
                |p| format!("member `{}`", p.raw.display_name()),
            );
            sink.report(ZipError::Overlap {
                name: name.clone(),
                offset: member.local_offset as u64,
                other,
            })?;
        } else if member.local_offset > cursor {
            sink.report(ZipError::UnaccountedBytes {
                offset: cursor as u64,
                len: (member.local_offset - cursor) as u64,
            })?;
            gaps.push(cursor..member.local_offset);
        }
        let Some(data) = member.data.clone() else {
            // Lenient reading only: a member whose data runs off the file.
            previous = Some(member);
            cursor = cursor.max(member.local_offset);
            continue;
        };
        let mut end = data.end;
        if next_start < data.end {
            let other = order.get(i + 1).map_or_else(
                || "the central directory".to_string(),
                |next| format!("member `{}`", next.raw.display_name()),
            );
            sink.report(ZipError::Overlap {
                name: name.clone(),
                offset: member.local_offset as u64,
                other,
            })?;
        } else if member.raw.flags & FLAG_DATA_DESCRIPTOR != 0 {
            // With or without its signature, with 32- or 64-bit sizes.
            let room = next_start - data.end;
            match [16, 24, 12, 20]
                .into_iter()
                .find(|&len| len <= room && descriptor_matches(bytes, data.end, len, &member.raw))
            {
                Some(len) => end = data.end + len,
                None => sink.report(ZipError::BadDataDescriptor {
                    name: name.clone(),
                    offset: member.local_offset as u64,
                })?,
            }
        }
        previous = Some(member);
        cursor = cursor.max(end);
    }
    if cursor < directory.start {
        sink.report(ZipError::UnaccountedBytes {
            offset: cursor as u64,
            len: (directory.start - cursor) as u64,
        })?;
        gaps.push(cursor..directory.start);
    }
    Ok(gaps)
}

/// A local header found outside the central directory, read for inspection only. `None` when
/// it is not even a well-formed header.
fn read_hidden_local(bytes: &[u8], at: usize) -> Option<ReadMember<'_>> {
    let header = bytes.get(at..at.checked_add(LOCAL_HEADER_LEN)?)?;
    let flags = le16(header, 6);
    let method = le16(header, 8);
    let crc32 = le32(header, 14);
    let mut compressed_size = u64::from(le32(header, 18));
    let mut uncompressed_size = u64::from(le32(header, 22));
    let name_len = usize::from(le16(header, 26));
    let extra_len = usize::from(le16(header, 28));
    let name_start = at + LOCAL_HEADER_LEN;
    let name = bytes.get(name_start..name_start + name_len)?;
    let extra = bytes.get(name_start + name_len..name_start + name_len + extra_len)?;
    if let Ok(zip64) = zip64_extra(extra) {
        let _ = resolve_zip64(&mut [&mut uncompressed_size, &mut compressed_size], zip64);
    }
    let data_start = name_start + name_len + extra_len;
    // With a data descriptor and zero sizes here, only the (missing) central directory knows
    // where the data ends.
    let sizes_known = flags & FLAG_DATA_DESCRIPTOR == 0 || compressed_size != 0;
    let data = usize::try_from(compressed_size)
        .ok()
        .filter(|_| sizes_known)
        .and_then(|len| data_start.checked_add(len))
        .filter(|&end| end <= bytes.len())
        .map(|end| data_start..end);
    Some(ReadMember {
        raw: RawEntry {
            name,
            central_offset: at,
            flags,
            method,
            crc32,
            compressed_size,
            uncompressed_size,
            local_offset: at as u64,
            external_attributes: 0,
        },
        local_offset: at,
        data,
    })
}

/// The bytes another reader would get for `member`, within `limits`; problems recorded.
fn extract<'a>(
    bytes: &'a [u8],
    member: &ReadMember<'a>,
    limits: &InspectLimits,
    inflated_total: &mut u64,
    problems: &mut Vec<ZipError>,
) -> Option<Cow<'a, [u8]>> {
    let name = member.raw.display_name();
    let offset = member.local_offset as u64;
    let not_extracted = |reason: String| ZipError::NotExtracted {
        name: name.clone(),
        offset,
        reason,
    };
    let Some(raw_data) = member.data.clone().and_then(|range| bytes.get(range)) else {
        problems.push(not_extracted(
            "its data could not be located (sizes unknown or past the end of the file)".into(),
        ));
        return None;
    };
    // Encryption flags (0x1, 0x40) are already reported as forbidden. The bytes are still read
    // as they are: PyTorch ignores the flags (GHSA-w8jq-xcqf-f792), so a "encrypted" member that
    // is really plain text is exactly what it would load. Truly encrypted data then simply fails
    // to parse as anything.
    let content: Cow<'a, [u8]> = match member.raw.method {
        METHOD_STORED => Cow::Borrowed(raw_data),
        METHOD_DEFLATE => {
            let declared = member.raw.uncompressed_size;
            let remaining = limits.max_total_inflated.saturating_sub(*inflated_total);
            if declared > limits.max_member_bytes || declared > remaining {
                problems.push(not_extracted(format!(
                    "it declares {declared} inflated bytes, more than the inspection cap"
                )));
                return None;
            }
            let ratio_cap = (raw_data.len() as u64).saturating_mul(limits.max_ratio);
            if declared > ratio_cap.max(1024) {
                problems.push(not_extracted(format!(
                    "it declares {declared} inflated bytes from {} compressed bytes, a ratio no \
                     DEFLATE stream reaches",
                    raw_data.len()
                )));
                return None;
            }
            // Never inflate beyond the declared size: that is what readers that stop at the
            // declared size (Python's zipfile) would see, and it bounds the work.
            let cap = usize::try_from(declared).unwrap_or(usize::MAX);
            match miniz_oxide::inflate::decompress_to_vec_with_limit(raw_data, cap) {
                Ok(inflated) => {
                    *inflated_total += inflated.len() as u64;
                    Cow::Owned(inflated)
                }
                Err(error) => {
                    // What a streaming reader would have handed to `pickle.load` before it
                    // noticed: worth scanning.
                    let reason = error.to_string();
                    let partial = error.output;
                    *inflated_total += partial.len() as u64;
                    problems.push(ZipError::InflateFailed {
                        name: name.clone(),
                        offset,
                        inflated: partial.len() as u64,
                        reason,
                    });
                    Cow::Owned(partial)
                }
            }
        }
        other => {
            problems.push(not_extracted(format!(
                "compression method {other} ({}) is not supported",
                method_name(other)
            )));
            return None;
        }
    };
    let actual = crc32fast::hash(&content);
    if actual != member.raw.crc32 {
        problems.push(ZipError::CrcMismatch {
            name: name.clone(),
            offset,
            expected: member.raw.crc32,
            actual,
        });
    }
    if member.raw.method != METHOD_STORED && content.len() as u64 != member.raw.uncompressed_size {
        problems.push(ZipError::InflatedSizeMismatch {
            name: name.clone(),
            offset,
            declared: member.raw.uncompressed_size,
            actual: content.len() as u64,
        });
    }
    Some(content)
}
