//! A tiny zip *writer* for tests, with a knob for every defect the strict reader must refuse.
//!
//! By default it writes what `torch.save` writes: stored members, the UTF-8 flag, an `FB` extra
//! field padding each member's data to a multiple of 64 bytes, a data descriptor after each
//! non-empty member, and Zip64 end records.
#![allow(dead_code, clippy::indexing_slicing, clippy::unwrap_used)]

/// Where a central directory entry says its local header is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalOffset {
    /// Where the writer put this member's local header.
    Own,
    /// At the first data byte of member `index` (whose data holds a crafted local header).
    DataOf(usize),
}

/// One member and its knobs.
#[derive(Debug, Clone)]
pub struct Member {
    pub name: Vec<u8>,
    pub data: Vec<u8>,
    pub flags: u16,
    pub method: u16,
    /// Bytes written as the member's (compressed) data instead of `data`; sizes and CRC are
    /// still those of `data` unless overridden.
    pub stored_bytes: Option<Vec<u8>>,
    /// Write a `PK\x07\x08` data descriptor and zero CRC/sizes in the local header.
    pub descriptor: bool,
    pub local_name: Option<Vec<u8>>,
    pub local_flags: Option<u16>,
    pub local_method: Option<u16>,
    pub local_size: Option<u32>,
    pub crc: Option<u32>,
    pub compressed_size: Option<u32>,
    pub uncompressed_size: Option<u32>,
    pub external_attributes: u32,
    pub made_by: u16,
    /// Write a local header (false: only a central entry, pointing at `local_offset`).
    pub write_local: bool,
    /// Write a central directory entry (false: a hidden member).
    pub write_central: bool,
    pub local_offset: LocalOffset,
    /// Extra bytes between this member and the next structure.
    pub gap_after: Vec<u8>,
}

impl Member {
    pub fn new(name: &str, data: &[u8]) -> Member {
        Member {
            name: name.as_bytes().to_vec(),
            data: data.to_vec(),
            flags: 0x800,
            method: 0,
            stored_bytes: None,
            descriptor: !data.is_empty(),
            local_name: None,
            local_flags: None,
            local_method: None,
            local_size: None,
            crc: None,
            compressed_size: None,
            uncompressed_size: None,
            external_attributes: 0,
            made_by: 0,
            write_local: true,
            write_central: true,
            local_offset: LocalOffset::Own,
            gap_after: Vec::new(),
        }
    }

    pub fn raw_name(name: &[u8], data: &[u8]) -> Member {
        let mut member = Member::new("", data);
        member.name = name.to_vec();
        member
    }

    /// A DEFLATE member holding `data`.
    pub fn deflated(name: &str, data: &[u8]) -> Member {
        let mut member = Member::new(name, data);
        member.method = 8;
        member.stored_bytes = Some(miniz_oxide::deflate::compress_to_vec(data, 9));
        member
    }

    fn flags_written(&self) -> u16 {
        if self.descriptor {
            self.flags | 0x8
        } else {
            self.flags
        }
    }

    fn payload(&self) -> &[u8] {
        self.stored_bytes.as_deref().unwrap_or(&self.data)
    }

    fn crc(&self) -> u32 {
        self.crc.unwrap_or_else(|| crc32fast::hash(&self.data))
    }

    fn sizes(&self) -> (u32, u32) {
        (
            self.compressed_size.unwrap_or(self.payload().len() as u32),
            self.uncompressed_size.unwrap_or(self.data.len() as u32),
        )
    }
}

/// A whole archive and its knobs.
#[derive(Debug, Clone)]
pub struct Archive {
    pub members: Vec<Member>,
    /// Bytes before the first local header, not counted in any offset (an appended zip).
    pub prefix: Vec<u8>,
    /// Bytes after the end record.
    pub suffix: Vec<u8>,
    pub comment: Vec<u8>,
    /// Pad every member's data to 64 bytes with an `FB` extra field, as torch does.
    pub align: bool,
    pub zip64: bool,
    pub entry_count: Option<u16>,
}

impl Archive {
    pub fn new(members: Vec<Member>) -> Archive {
        Archive {
            members,
            prefix: Vec::new(),
            suffix: Vec::new(),
            comment: Vec::new(),
            align: true,
            zip64: true,
            entry_count: None,
        }
    }

    /// A torch-style checkpoint archive under `root/`.
    pub fn torch(root: &str, members: &[(&str, &[u8])]) -> Archive {
        Archive::new(
            members
                .iter()
                .map(|(name, data)| Member::new(&format!("{root}/{name}"), data))
                .collect(),
        )
    }

    pub fn member(&mut self, name: &str) -> &mut Member {
        self.members
            .iter_mut()
            .find(|member| member.name == name.as_bytes())
            .unwrap()
    }

    pub fn build(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut local_offsets = Vec::new();
        let mut data_offsets = Vec::new();
        for member in &self.members {
            local_offsets.push(out.len() as u32);
            if !member.write_local {
                data_offsets.push(out.len() as u32);
                continue;
            }
            let local_name = member.local_name.as_deref().unwrap_or(&member.name);
            let mut extra = Vec::new();
            if self.align {
                let unpadded = out.len() + 30 + local_name.len() + 4;
                let pad = (64 - unpadded % 64) % 64;
                extra.extend_from_slice(b"FB");
                extra.extend_from_slice(&(pad as u16).to_le_bytes());
                extra.extend(std::iter::repeat_n(b'Z', pad));
            }
            let (compressed, uncompressed) = member.sizes();
            let (crc, compressed, uncompressed) = if member.descriptor {
                (0, 0, 0)
            } else {
                (member.crc(), compressed, uncompressed)
            };
            out.extend_from_slice(b"PK\x03\x04");
            out.extend_from_slice(&20u16.to_le_bytes());
            out.extend_from_slice(
                &member
                    .local_flags
                    .unwrap_or(member.flags_written())
                    .to_le_bytes(),
            );
            out.extend_from_slice(&member.local_method.unwrap_or(member.method).to_le_bytes());
            out.extend_from_slice(&[0, 0, 0x21, 0]); // time, date
            out.extend_from_slice(&crc.to_le_bytes());
            out.extend_from_slice(&member.local_size.unwrap_or(compressed).to_le_bytes());
            out.extend_from_slice(&member.local_size.unwrap_or(uncompressed).to_le_bytes());
            out.extend_from_slice(&(local_name.len() as u16).to_le_bytes());
            out.extend_from_slice(&(extra.len() as u16).to_le_bytes());
            out.extend_from_slice(local_name);
            out.extend_from_slice(&extra);
            data_offsets.push(out.len() as u32);
            out.extend_from_slice(member.payload());
            if member.descriptor {
                let (compressed, uncompressed) = member.sizes();
                out.extend_from_slice(b"PK\x07\x08");
                out.extend_from_slice(&member.crc().to_le_bytes());
                out.extend_from_slice(&compressed.to_le_bytes());
                out.extend_from_slice(&uncompressed.to_le_bytes());
            }
            out.extend_from_slice(&member.gap_after);
        }
        let directory_offset = out.len() as u32;
        let mut count = 0u16;
        for (i, member) in self.members.iter().enumerate() {
            if !member.write_central {
                continue;
            }
            count += 1;
            let (compressed, uncompressed) = member.sizes();
            let offset = match member.local_offset {
                LocalOffset::Own => local_offsets[i],
                LocalOffset::DataOf(index) => data_offsets[index],
            };
            out.extend_from_slice(b"PK\x01\x02");
            out.extend_from_slice(&member.made_by.to_le_bytes());
            out.extend_from_slice(&20u16.to_le_bytes());
            out.extend_from_slice(&member.flags_written().to_le_bytes());
            out.extend_from_slice(&member.method.to_le_bytes());
            out.extend_from_slice(&[0, 0, 0x21, 0]);
            out.extend_from_slice(&member.crc().to_le_bytes());
            out.extend_from_slice(&compressed.to_le_bytes());
            out.extend_from_slice(&uncompressed.to_le_bytes());
            out.extend_from_slice(&(member.name.len() as u16).to_le_bytes());
            out.extend_from_slice(&0u16.to_le_bytes()); // extra
            out.extend_from_slice(&0u16.to_le_bytes()); // comment
            out.extend_from_slice(&0u16.to_le_bytes()); // disk
            out.extend_from_slice(&0u16.to_le_bytes()); // internal attributes
            out.extend_from_slice(&member.external_attributes.to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            out.extend_from_slice(&member.name);
        }
        let directory_size = out.len() as u32 - directory_offset;
        let count = self.entry_count.unwrap_or(count);
        if self.zip64 {
            let record = out.len() as u64;
            out.extend_from_slice(b"PK\x06\x06");
            out.extend_from_slice(&44u64.to_le_bytes());
            out.extend_from_slice(&0x031eu16.to_le_bytes());
            out.extend_from_slice(&45u16.to_le_bytes());
            out.extend_from_slice(&0u32.to_le_bytes());
            out.extend_from_slice(&0u32.to_le_bytes());
            out.extend_from_slice(&u64::from(count).to_le_bytes());
            out.extend_from_slice(&u64::from(count).to_le_bytes());
            out.extend_from_slice(&u64::from(directory_size).to_le_bytes());
            out.extend_from_slice(&u64::from(directory_offset).to_le_bytes());
            out.extend_from_slice(b"PK\x06\x07");
            out.extend_from_slice(&0u32.to_le_bytes());
            out.extend_from_slice(&record.to_le_bytes());
            out.extend_from_slice(&1u32.to_le_bytes());
        }
        out.extend_from_slice(b"PK\x05\x06");
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(&directory_size.to_le_bytes());
        out.extend_from_slice(&directory_offset.to_le_bytes());
        out.extend_from_slice(&(self.comment.len() as u16).to_le_bytes());
        out.extend_from_slice(&self.comment);
        out.extend_from_slice(&self.suffix);
        let mut file = self.prefix.clone();
        file.extend_from_slice(&out);
        file
    }
}
