//! The pickle opcode decoder shared by the unpickler and the scanner.
//!
//! [`Decoder`] walks a byte slice from offset 0 and yields `(offset, Op)` pairs with typed,
//! borrowed arguments, for every opcode of protocols 0 to 5. It never allocates in proportion
//! to a length field: every length is checked against the bytes that remain before the argument
//! is sliced. `FRAME` boundaries are enforced the way the pure-Python unpickler (and CPython
//! 3.13.15+) enforce them: an opcode and its argument must lie entirely inside the current frame,
//! a frame cannot open inside an unfinished one, and a frame cannot claim more bytes than remain.
//! This closes the frame-straddle differential in which linear scanners and the C unpickler read
//! different opcodes from the same bytes.
//!
//! The decoder interprets nothing: it does not know about the stack, the memo or globals. The
//! unpickler and the scanner give the opcodes meaning.

/// Longest line a protocol-0 `STRING`, `UNICODE` or `PERSID` argument may have, in bytes.
pub const MAX_TEXT_LINE: usize = 1 << 20;

/// Longest line a protocol-0 name or number argument (`GLOBAL`, `INST`, `INT`, `LONG`, `FLOAT`,
/// `PUT`, `GET`) may have, in bytes. Real module paths and numbers are far shorter.
pub const MAX_NAME_LINE: usize = 1024;

/// One decoded opcode with its argument. Byte-string and text arguments borrow from the input;
/// text-encoded ones (`STRING`, `UNICODE`) are returned still escaped, see
/// [`decode_string_escape`] and [`decode_raw_unicode_escape`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Op<'a> {
    /// `PROTO n` (protocol 2+): the protocol version.
    Proto(u8),
    /// `FRAME n` (protocol 4+): the length of the frame that follows.
    Frame(u64),
    /// `STOP`: end of the stream.
    Stop,
    /// `MARK`: push a mark.
    Mark,
    /// `POP`: discard the top of the stack.
    Pop,
    /// `POP_MARK`: discard everything down to the last mark.
    PopMark,
    /// `DUP`: duplicate the top of the stack.
    Dup,
    /// `NONE`.
    None,
    /// `NEWTRUE`.
    NewTrue,
    /// `NEWFALSE`.
    NewFalse,
    /// Text `INT`: a decimal integer.
    Int(i128),
    /// Text `INT` with the protocol-0 boolean spellings `01` / `00`.
    IntBool(bool),
    /// `BININT`: a signed 32-bit integer.
    BinInt(i32),
    /// `BININT1`: an unsigned 8-bit integer.
    BinInt1(u8),
    /// `BININT2`: an unsigned 16-bit integer.
    BinInt2(u16),
    /// Text `LONG`: a decimal integer with an optional `L` suffix.
    Long(i128),
    /// `LONG1`: little-endian two's-complement bytes (at most 255).
    Long1(&'a [u8]),
    /// `LONG4`: little-endian two's-complement bytes.
    Long4(&'a [u8]),
    /// Text `FLOAT`.
    Float(f64),
    /// `BINFLOAT`: a big-endian IEEE double.
    BinFloat(f64),
    /// Text `STRING`: the contents between the quotes, still escaped.
    String(&'a [u8]),
    /// `BINSTRING`: a Python 2 `str` (bytes).
    BinString(&'a [u8]),
    /// `SHORT_BINSTRING`: a Python 2 `str` of at most 255 bytes.
    ShortBinString(&'a [u8]),
    /// Text `UNICODE`: raw-unicode-escape encoded text, still escaped.
    Unicode(&'a [u8]),
    /// `SHORT_BINUNICODE`: UTF-8 text of at most 255 bytes (not yet validated).
    ShortBinUnicode(&'a [u8]),
    /// `BINUNICODE`: UTF-8 text (not yet validated).
    BinUnicode(&'a [u8]),
    /// `BINUNICODE8`: UTF-8 text with a 64-bit length (not yet validated).
    BinUnicode8(&'a [u8]),
    /// `SHORT_BINBYTES`: bytes.
    ShortBinBytes(&'a [u8]),
    /// `BINBYTES`: bytes.
    BinBytes(&'a [u8]),
    /// `BINBYTES8`: bytes with a 64-bit length.
    BinBytes8(&'a [u8]),
    /// `BYTEARRAY8`: a `bytearray`.
    ByteArray8(&'a [u8]),
    /// `NEXT_BUFFER`: an out-of-band buffer.
    NextBuffer,
    /// `READONLY_BUFFER`.
    ReadonlyBuffer,
    /// `EMPTY_TUPLE`.
    EmptyTuple,
    /// `TUPLE`: a tuple of everything above the last mark.
    Tuple,
    /// `TUPLE1`.
    Tuple1,
    /// `TUPLE2`.
    Tuple2,
    /// `TUPLE3`.
    Tuple3,
    /// `EMPTY_LIST`.
    EmptyList,
    /// `LIST`: a list of everything above the last mark.
    List,
    /// `APPEND`.
    Append,
    /// `APPENDS`.
    Appends,
    /// `EMPTY_DICT`.
    EmptyDict,
    /// `DICT`: a dict of the key/value pairs above the last mark.
    Dict,
    /// `SETITEM`.
    SetItem,
    /// `SETITEMS`.
    SetItems,
    /// `EMPTY_SET`.
    EmptySet,
    /// `ADDITEMS`.
    AddItems,
    /// `FROZENSET`.
    FrozenSet,
    /// `GLOBAL module name` (text lines, UTF-8).
    Global {
        /// The module line.
        module: &'a str,
        /// The name line.
        name: &'a str,
    },
    /// `STACK_GLOBAL`: module and name taken from the stack.
    StackGlobal,
    /// `INST module name`: import, then call with the values above the last mark.
    Inst {
        /// The module line.
        module: &'a str,
        /// The name line.
        name: &'a str,
    },
    /// `OBJ`: call the first value above the last mark with the rest.
    Obj,
    /// `REDUCE`: call `callable(*args)`.
    Reduce,
    /// `BUILD`: `__setstate__` or attribute writes.
    Build,
    /// `NEWOBJ`: `cls.__new__(cls, *args)`.
    NewObj,
    /// `NEWOBJ_EX`: `cls.__new__(cls, *args, **kwargs)`.
    NewObjEx,
    /// `EXT1 code`: import through the copyreg extension registry.
    Ext1(u8),
    /// `EXT2 code`.
    Ext2(u16),
    /// `EXT4 code`.
    Ext4(i32),
    /// Text `PERSID`: a persistent id line (ASCII).
    PersId(&'a str),
    /// `BINPERSID`: persistent id taken from the stack.
    BinPersId,
    /// Text `PUT n`.
    Put(u64),
    /// `BINPUT n`.
    BinPut(u8),
    /// `LONG_BINPUT n`.
    LongBinPut(u32),
    /// `MEMOIZE` (protocol 4+): store the top of the stack at index `len(memo)`.
    Memoize,
    /// Text `GET n`.
    Get(u64),
    /// `BINGET n`.
    BinGet(u8),
    /// `LONG_BINGET n`.
    LongBinGet(u32),
}

impl Op<'_> {
    /// The opcode's name as `pickletools` spells it (`"BINUNICODE"`).
    pub fn name(&self) -> &'static str {
        match self {
            Op::Proto(_) => "PROTO",
            Op::Frame(_) => "FRAME",
            Op::Stop => "STOP",
            Op::Mark => "MARK",
            Op::Pop => "POP",
            Op::PopMark => "POP_MARK",
            Op::Dup => "DUP",
            Op::None => "NONE",
            Op::NewTrue => "NEWTRUE",
            Op::NewFalse => "NEWFALSE",
            Op::Int(_) | Op::IntBool(_) => "INT",
            Op::BinInt(_) => "BININT",
            Op::BinInt1(_) => "BININT1",
            Op::BinInt2(_) => "BININT2",
            Op::Long(_) => "LONG",
            Op::Long1(_) => "LONG1",
            Op::Long4(_) => "LONG4",
            Op::Float(_) => "FLOAT",
            Op::BinFloat(_) => "BINFLOAT",
            Op::String(_) => "STRING",
            Op::BinString(_) => "BINSTRING",
            Op::ShortBinString(_) => "SHORT_BINSTRING",
            Op::Unicode(_) => "UNICODE",
            Op::ShortBinUnicode(_) => "SHORT_BINUNICODE",
            Op::BinUnicode(_) => "BINUNICODE",
            Op::BinUnicode8(_) => "BINUNICODE8",
            Op::ShortBinBytes(_) => "SHORT_BINBYTES",
            Op::BinBytes(_) => "BINBYTES",
            Op::BinBytes8(_) => "BINBYTES8",
            Op::ByteArray8(_) => "BYTEARRAY8",
            Op::NextBuffer => "NEXT_BUFFER",
            Op::ReadonlyBuffer => "READONLY_BUFFER",
            Op::EmptyTuple => "EMPTY_TUPLE",
            Op::Tuple => "TUPLE",
            Op::Tuple1 => "TUPLE1",
            Op::Tuple2 => "TUPLE2",
            Op::Tuple3 => "TUPLE3",
            Op::EmptyList => "EMPTY_LIST",
            Op::List => "LIST",
            Op::Append => "APPEND",
            Op::Appends => "APPENDS",
            Op::EmptyDict => "EMPTY_DICT",
            Op::Dict => "DICT",
            Op::SetItem => "SETITEM",
            Op::SetItems => "SETITEMS",
            Op::EmptySet => "EMPTY_SET",
            Op::AddItems => "ADDITEMS",
            Op::FrozenSet => "FROZENSET",
            Op::Global { .. } => "GLOBAL",
            Op::StackGlobal => "STACK_GLOBAL",
            Op::Inst { .. } => "INST",
            Op::Obj => "OBJ",
            Op::Reduce => "REDUCE",
            Op::Build => "BUILD",
            Op::NewObj => "NEWOBJ",
            Op::NewObjEx => "NEWOBJ_EX",
            Op::Ext1(_) => "EXT1",
            Op::Ext2(_) => "EXT2",
            Op::Ext4(_) => "EXT4",
            Op::PersId(_) => "PERSID",
            Op::BinPersId => "BINPERSID",
            Op::Put(_) => "PUT",
            Op::BinPut(_) => "BINPUT",
            Op::LongBinPut(_) => "LONG_BINPUT",
            Op::Memoize => "MEMOIZE",
            Op::Get(_) => "GET",
            Op::BinGet(_) => "BINGET",
            Op::LongBinGet(_) => "LONG_BINGET",
        }
    }
}

/// Why the decoder could not read an opcode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeErrorKind {
    /// The byte is not a pickle opcode of any protocol.
    #[error("unknown opcode byte 0x{0:02x}")]
    UnknownOpcode(u8),
    /// The opcode's argument runs past the end of the input.
    #[error("{opcode} needs {needed} bytes of argument but only {available} remain")]
    Truncated {
        /// The opcode.
        opcode: &'static str,
        /// Bytes the argument needs (as declared, possibly huge).
        needed: u64,
        /// Bytes left in the input after the opcode byte.
        available: usize,
    },
    /// A length field is negative.
    #[error("{opcode} has a negative length {length}")]
    NegativeLength {
        /// The opcode.
        opcode: &'static str,
        /// The length as read.
        length: i64,
    },
    /// A text argument has no terminating newline within the allowed line length.
    #[error("{opcode} argument has no newline within {max} bytes")]
    UnterminatedLine {
        /// The opcode.
        opcode: &'static str,
        /// The maximum line length.
        max: usize,
    },
    /// A text argument is not what the opcode requires.
    #[error("{opcode} has a malformed argument: {reason}")]
    BadTextArgument {
        /// The opcode.
        opcode: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The opcode (with its argument) crosses the end of the current `FRAME`.
    #[error("{opcode} crosses the end of the frame that ends at offset {frame_end}")]
    FrameStraddle {
        /// The opcode.
        opcode: &'static str,
        /// Where the current frame ends.
        frame_end: usize,
    },
    /// A `FRAME` opens before the current one is finished.
    #[error("FRAME opened inside the frame that ends at offset {frame_end}")]
    NestedFrame {
        /// Where the current frame ends.
        frame_end: usize,
    },
    /// A `FRAME` claims more bytes than remain in the input.
    #[error("FRAME of {length} bytes but only {remaining} remain")]
    FrameTooLong {
        /// The declared length.
        length: u64,
        /// Bytes left after the `FRAME` opcode.
        remaining: usize,
    },
}

/// An opcode the decoder could not read, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("offset {offset}: {kind}")]
pub struct DecodeError {
    /// Offset of the opcode byte.
    pub offset: usize,
    /// What is wrong.
    pub kind: DecodeErrorKind,
}

impl DecodeError {
    /// Whether this is a `FRAME` violation (straddle, nested frame, frame beyond the input):
    /// the shape of parser-differential tricks, rather than plain truncation or garbage.
    pub fn is_frame_violation(&self) -> bool {
        matches!(
            self.kind,
            DecodeErrorKind::FrameStraddle { .. }
                | DecodeErrorKind::NestedFrame { .. }
                | DecodeErrorKind::FrameTooLong { .. }
        )
    }
}

/// Iterator over the opcodes of a pickle stream starting at offset 0 of `data`.
///
/// It yields `Ok((offset, op))` for each opcode and ends after the first error (which it yields)
/// or at the end of the input. It does not stop at `STOP`: the caller does, and reads
/// [`Decoder::position`] to learn how many bytes the stream took.
#[derive(Debug, Clone)]
pub struct Decoder<'a> {
    data: &'a [u8],
    pos: usize,
    frame_end: Option<usize>,
    failed: bool,
}

impl<'a> Decoder<'a> {
    /// A decoder over `data`, starting at offset 0.
    pub fn new(data: &'a [u8]) -> Decoder<'a> {
        Decoder {
            data,
            pos: 0,
            frame_end: None,
            failed: false,
        }
    }

    /// Offset of the next opcode (after the last one yielded).
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Where the current frame ends, if one is open.
    pub fn frame_end(&self) -> Option<usize> {
        self.frame_end
    }

    fn decode_one(&mut self) -> Result<(usize, Op<'a>), DecodeError> {
        let start = self.pos;
        // A frame that ends exactly here is finished.
        if self.frame_end == Some(start) {
            self.frame_end = None;
        }
        let err = |kind| DecodeError {
            offset: start,
            kind,
        };
        let code = *self.data.get(start).ok_or_else(|| {
            err(DecodeErrorKind::Truncated {
                opcode: "opcode",
                needed: 1,
                available: 0,
            })
        })?;
        let mut cursor = Cursor {
            data: self.data,
            pos: start + 1,
            start,
        };
        let op = decode_op(code, &mut cursor)?;
        let end = cursor.pos;
        match (op, self.frame_end) {
            (Op::Frame(_), Some(frame_end)) => {
                return Err(err(DecodeErrorKind::NestedFrame { frame_end }));
            }
            (_, Some(frame_end)) if end > frame_end => {
                return Err(err(DecodeErrorKind::FrameStraddle {
                    opcode: op.name(),
                    frame_end,
                }));
            }
            (Op::Frame(length), None) => {
                let remaining = self.data.len().saturating_sub(end);
                match usize::try_from(length) {
                    Ok(length) if length <= remaining => {
                        self.frame_end = Some(end + length);
                    }
                    _ => return Err(err(DecodeErrorKind::FrameTooLong { length, remaining })),
                }
            }
            _ => {}
        }
        self.pos = end;
        Ok((start, op))
    }
}

impl<'a> Iterator for Decoder<'a> {
    type Item = Result<(usize, Op<'a>), DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.data.len() {
            return None;
        }
        let item = self.decode_one();
        if item.is_err() {
            self.failed = true;
        }
        Some(item)
    }
}

/// Reads the arguments of one opcode.
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
    /// Offset of the opcode byte, for errors.
    start: usize,
}

impl<'a> Cursor<'a> {
    fn err(&self, kind: DecodeErrorKind) -> DecodeError {
        DecodeError {
            offset: self.start,
            kind,
        }
    }

    fn remaining(&self) -> usize {
        self.data.len().saturating_sub(self.pos)
    }

    /// `n` bytes, checked against what remains before anything is sliced.
    fn take(&mut self, opcode: &'static str, n: u64) -> Result<&'a [u8], DecodeError> {
        let available = self.remaining();
        let truncated = DecodeErrorKind::Truncated {
            opcode,
            needed: n,
            available,
        };
        let n = match usize::try_from(n) {
            Ok(n) if n <= available => n,
            _ => return Err(self.err(truncated)),
        };
        let bytes = self
            .data
            .get(self.pos..self.pos + n)
            .ok_or_else(|| self.err(truncated))?;
        self.pos += n;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self, opcode: &'static str) -> Result<[u8; N], DecodeError> {
        let bytes = self.take(opcode, N as u64)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn u8(&mut self, opcode: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(opcode)?[0])
    }

    fn u16(&mut self, opcode: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array(opcode)?))
    }

    fn u32(&mut self, opcode: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array(opcode)?))
    }

    fn i32(&mut self, opcode: &'static str) -> Result<i32, DecodeError> {
        Ok(i32::from_le_bytes(self.array(opcode)?))
    }

    fn u64(&mut self, opcode: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array(opcode)?))
    }

    /// A length-prefixed byte string with a signed 32-bit length.
    fn signed_len_bytes(&mut self, opcode: &'static str) -> Result<&'a [u8], DecodeError> {
        let length = self.i32(opcode)?;
        let length = u64::try_from(length).map_err(|_| {
            self.err(DecodeErrorKind::NegativeLength {
                opcode,
                length: i64::from(length),
            })
        })?;
        self.take(opcode, length)
    }

    /// A newline-terminated line of at most `max` bytes (newline excluded).
    fn line(&mut self, opcode: &'static str, max: usize) -> Result<&'a [u8], DecodeError> {
        let rest = self.data.get(self.pos..).unwrap_or_default();
        let window = rest.get(..max.saturating_add(1)).unwrap_or(rest);
        let Some(newline) = window.iter().position(|&b| b == b'\n') else {
            return Err(self.err(DecodeErrorKind::UnterminatedLine { opcode, max }));
        };
        let line = window.get(..newline).unwrap_or_default();
        self.pos += newline + 1;
        Ok(line)
    }

    fn bad(&self, opcode: &'static str, reason: &'static str) -> DecodeError {
        self.err(DecodeErrorKind::BadTextArgument { opcode, reason })
    }

    /// A line that must be UTF-8 (module and name lines, persistent ids).
    fn utf8_line(&mut self, opcode: &'static str, max: usize) -> Result<&'a str, DecodeError> {
        let line = self.line(opcode, max)?;
        std::str::from_utf8(line).map_err(|_| self.bad(opcode, "not valid UTF-8"))
    }

    fn index_line(&mut self, opcode: &'static str) -> Result<u64, DecodeError> {
        let line = self.line(opcode, MAX_NAME_LINE)?;
        if line.is_empty() || !line.iter().all(u8::is_ascii_digit) {
            return Err(self.bad(opcode, "memo index is not a decimal number"));
        }
        std::str::from_utf8(line)
            .ok()
            .and_then(|text| text.parse::<u64>().ok())
            .ok_or_else(|| self.bad(opcode, "memo index out of range"))
    }
}

/// Parses `[+-]?[0-9]+` into an `i128`.
fn parse_decimal(line: &[u8]) -> Option<i128> {
    let digits = match line {
        [b'-' | b'+', rest @ ..] => rest,
        _ => line,
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(line).ok()?.parse::<i128>().ok()
}

fn decode_op<'a>(code: u8, c: &mut Cursor<'a>) -> Result<Op<'a>, DecodeError> {
    Ok(match code {
        b'(' => Op::Mark,
        b'.' => Op::Stop,
        b'0' => Op::Pop,
        b'1' => Op::PopMark,
        b'2' => Op::Dup,
        b'F' => {
            let line = c.line("FLOAT", MAX_NAME_LINE)?;
            let text = std::str::from_utf8(line).map_err(|_| c.bad("FLOAT", "not ASCII"))?;
            let valid = !text.is_empty()
                && text
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'+'));
            match text.parse::<f64>() {
                Ok(value) if valid => Op::Float(value),
                _ => return Err(c.bad("FLOAT", "not a decimal float")),
            }
        }
        b'I' => {
            let line = c.line("INT", MAX_NAME_LINE)?;
            match line {
                b"00" => Op::IntBool(false),
                b"01" => Op::IntBool(true),
                _ => Op::Int(
                    parse_decimal(line)
                        .ok_or_else(|| c.bad("INT", "not a decimal integer within 128 bits"))?,
                ),
            }
        }
        b'J' => Op::BinInt(c.i32("BININT")?),
        b'K' => Op::BinInt1(c.u8("BININT1")?),
        b'L' => {
            let line = c.line("LONG", MAX_NAME_LINE)?;
            let digits = line.strip_suffix(b"L").unwrap_or(line);
            Op::Long(
                parse_decimal(digits)
                    .ok_or_else(|| c.bad("LONG", "not a decimal integer within 128 bits"))?,
            )
        }
        b'M' => Op::BinInt2(c.u16("BININT2")?),
        b'N' => Op::None,
        b'P' => Op::PersId(c.utf8_line("PERSID", MAX_TEXT_LINE)?),
        b'Q' => Op::BinPersId,
        b'R' => Op::Reduce,
        b'S' => {
            let line = c.line("STRING", MAX_TEXT_LINE)?;
            match line {
                [b'\'', inner @ .., b'\''] | [b'"', inner @ .., b'"'] => Op::String(inner),
                _ => return Err(c.bad("STRING", "not enclosed in matching quotes")),
            }
        }
        b'T' => Op::BinString(c.signed_len_bytes("BINSTRING")?),
        b'U' => {
            let n = c.u8("SHORT_BINSTRING")?;
            Op::ShortBinString(c.take("SHORT_BINSTRING", u64::from(n))?)
        }
        b'V' => Op::Unicode(c.line("UNICODE", MAX_TEXT_LINE)?),
        b'X' => {
            let n = c.u32("BINUNICODE")?;
            Op::BinUnicode(c.take("BINUNICODE", u64::from(n))?)
        }
        b'a' => Op::Append,
        b'b' => Op::Build,
        b'c' => {
            let module = c.utf8_line("GLOBAL", MAX_NAME_LINE)?;
            let name = c.utf8_line("GLOBAL", MAX_NAME_LINE)?;
            Op::Global { module, name }
        }
        b'd' => Op::Dict,
        b'}' => Op::EmptyDict,
        b'e' => Op::Appends,
        b'g' => Op::Get(c.index_line("GET")?),
        b'h' => Op::BinGet(c.u8("BINGET")?),
        b'i' => {
            let module = c.utf8_line("INST", MAX_NAME_LINE)?;
            let name = c.utf8_line("INST", MAX_NAME_LINE)?;
            Op::Inst { module, name }
        }
        b'j' => Op::LongBinGet(c.u32("LONG_BINGET")?),
        b'l' => Op::List,
        b']' => Op::EmptyList,
        b'o' => Op::Obj,
        b'p' => Op::Put(c.index_line("PUT")?),
        b'q' => Op::BinPut(c.u8("BINPUT")?),
        b'r' => Op::LongBinPut(c.u32("LONG_BINPUT")?),
        b's' => Op::SetItem,
        b't' => Op::Tuple,
        b')' => Op::EmptyTuple,
        b'u' => Op::SetItems,
        b'G' => Op::BinFloat(f64::from_be_bytes(c.array("BINFLOAT")?)),
        0x80 => Op::Proto(c.u8("PROTO")?),
        0x81 => Op::NewObj,
        0x82 => Op::Ext1(c.u8("EXT1")?),
        0x83 => Op::Ext2(c.u16("EXT2")?),
        0x84 => Op::Ext4(c.i32("EXT4")?),
        0x85 => Op::Tuple1,
        0x86 => Op::Tuple2,
        0x87 => Op::Tuple3,
        0x88 => Op::NewTrue,
        0x89 => Op::NewFalse,
        0x8a => {
            let n = c.u8("LONG1")?;
            Op::Long1(c.take("LONG1", u64::from(n))?)
        }
        0x8b => Op::Long4(c.signed_len_bytes("LONG4")?),
        b'B' => {
            let n = c.u32("BINBYTES")?;
            Op::BinBytes(c.take("BINBYTES", u64::from(n))?)
        }
        b'C' => {
            let n = c.u8("SHORT_BINBYTES")?;
            Op::ShortBinBytes(c.take("SHORT_BINBYTES", u64::from(n))?)
        }
        0x8c => {
            let n = c.u8("SHORT_BINUNICODE")?;
            Op::ShortBinUnicode(c.take("SHORT_BINUNICODE", u64::from(n))?)
        }
        0x8d => {
            let n = c.u64("BINUNICODE8")?;
            Op::BinUnicode8(c.take("BINUNICODE8", n)?)
        }
        0x8e => {
            let n = c.u64("BINBYTES8")?;
            Op::BinBytes8(c.take("BINBYTES8", n)?)
        }
        0x8f => Op::EmptySet,
        0x90 => Op::AddItems,
        0x91 => Op::FrozenSet,
        0x92 => Op::NewObjEx,
        0x93 => Op::StackGlobal,
        0x94 => Op::Memoize,
        0x95 => Op::Frame(c.u64("FRAME")?),
        0x96 => {
            let n = c.u64("BYTEARRAY8")?;
            Op::ByteArray8(c.take("BYTEARRAY8", n)?)
        }
        0x97 => Op::NextBuffer,
        0x98 => Op::ReadonlyBuffer,
        other => return Err(c.err(DecodeErrorKind::UnknownOpcode(other))),
    })
}

/// Whether `byte` is an opcode of protocol 0 or 1 (the printable ones), which is what a
/// pickle without a `PROTO` header can start with.
pub fn is_text_protocol_opcode(byte: u8) -> bool {
    matches!(
        byte,
        b'(' | b'.'
            | b'0'
            | b'1'
            | b'2'
            | b'F'
            | b'I'
            | b'J'
            | b'K'
            | b'L'
            | b'M'
            | b'N'
            | b'P'
            | b'Q'
            | b'R'
            | b'S'
            | b'T'
            | b'U'
            | b'V'
            | b'X'
            | b'a'
            | b'b'
            | b'c'
            | b'd'
            | b'}'
            | b'e'
            | b'g'
            | b'h'
            | b'i'
            | b'j'
            | b'l'
            | b']'
            | b'o'
            | b'p'
            | b'q'
            | b'r'
            | b's'
            | b't'
            | b')'
            | b'u'
            | b'G'
    )
}

/// Little-endian two's-complement bytes (`LONG1`/`LONG4`) as an `i128`, or `None` when the
/// value needs more than 16 bytes.
pub fn le_signed_to_i128(bytes: &[u8]) -> Option<i128> {
    if bytes.len() > 16 {
        return None;
    }
    let negative = bytes.last().is_some_and(|&b| b & 0x80 != 0);
    let mut buf = if negative { [0xffu8; 16] } else { [0u8; 16] };
    for (slot, &b) in buf.iter_mut().zip(bytes) {
        *slot = b;
    }
    Some(i128::from_le_bytes(buf))
}

/// Decodes the body of a protocol-0 `STRING` (Python's `repr` of a byte string, quotes
/// removed) into bytes, or `None` when an escape is malformed.
pub fn decode_string_escape(escaped: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(escaped.len());
    let mut iter = escaped.iter().copied().peekable();
    while let Some(b) = iter.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        let e = iter.next()?;
        match e {
            b'\\' => out.push(b'\\'),
            b'\'' => out.push(b'\''),
            b'"' => out.push(b'"'),
            b'a' => out.push(0x07),
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(0x0b),
            b'\n' => {}
            b'x' => {
                let hi = hex_digit(iter.next()?)?;
                let lo = hex_digit(iter.next()?)?;
                out.push(hi * 16 + lo);
            }
            b'0'..=b'7' => {
                let mut value = u32::from(e - b'0');
                for _ in 0..2 {
                    match iter.peek() {
                        Some(&d @ b'0'..=b'7') => {
                            value = value * 8 + u32::from(d - b'0');
                            iter.next();
                        }
                        _ => break,
                    }
                }
                out.push(u8::try_from(value).ok()?);
            }
            // Python keeps unknown escapes verbatim.
            other => {
                out.push(b'\\');
                out.push(other);
            }
        }
    }
    Some(out)
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes a protocol-0 `UNICODE` argument (Python's `raw-unicode-escape`: bytes are Latin-1
/// characters, except `\uXXXX` and `\UXXXXXXXX` after an odd number of backslashes), or `None`
/// when an escape is malformed or names a surrogate or a code point beyond U+10FFFF.
pub fn decode_raw_unicode_escape(escaped: &[u8]) -> Option<String> {
    let mut out = String::with_capacity(escaped.len());
    let mut i = 0usize;
    while let Some(&b) = escaped.get(i) {
        if b != b'\\' {
            out.push(char::from(b));
            i += 1;
            continue;
        }
        let run = escaped
            .get(i..)?
            .iter()
            .take_while(|&&c| c == b'\\')
            .count();
        let after = i + run;
        let digits = match escaped.get(after) {
            Some(b'u') if run % 2 == 1 => 4,
            Some(b'U') if run % 2 == 1 => 8,
            _ => {
                out.extend(std::iter::repeat_n('\\', run));
                i = after;
                continue;
            }
        };
        out.extend(std::iter::repeat_n('\\', run - 1));
        let hex = escaped.get(after + 1..after + 1 + digits)?;
        let mut value = 0u32;
        for &h in hex {
            value = value * 16 + u32::from(hex_digit(h)?);
        }
        out.push(char::from_u32(value)?);
        i = after + 1 + digits;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(data: &[u8]) -> Vec<Result<(usize, Op<'_>), DecodeError>> {
        Decoder::new(data).collect()
    }

    #[test]
    fn decodes_protocol_2_header() {
        let all = ops(b"\x80\x02K\x05.");
        assert_eq!(
            all,
            vec![
                Ok((0, Op::Proto(2))),
                Ok((2, Op::BinInt1(5))),
                Ok((4, Op::Stop))
            ]
        );
    }

    #[test]
    fn huge_length_is_an_error_not_an_allocation() {
        let mut data = vec![0x8d];
        data.extend_from_slice(&(2u64 << 30).to_le_bytes());
        data.extend_from_slice(&[0; 16]);
        let all = ops(&data);
        assert!(matches!(
            all.as_slice(),
            [Err(DecodeError {
                offset: 0,
                kind: DecodeErrorKind::Truncated { needed, .. }
            })] if *needed == 2 << 30
        ));
    }

    #[test]
    fn frame_straddle_is_an_error() {
        // FRAME of 2 bytes, then BINBYTES claiming 3 bytes: crosses the frame end.
        let mut data = vec![0x80, 4, 0x95];
        data.extend_from_slice(&2u64.to_le_bytes());
        data.extend_from_slice(b"B\x03\x00\x00\x00abc.");
        let all = ops(&data);
        assert!(matches!(
            all.last(),
            Some(Err(DecodeError {
                offset: 11,
                kind: DecodeErrorKind::FrameStraddle { .. }
            }))
        ));
    }

    #[test]
    fn raw_unicode_escape() {
        assert_eq!(
            decode_raw_unicode_escape(br"a\u00e9\\u0041\x").as_deref(),
            Some("a\u{e9}\\\\u0041\\x")
        );
        assert_eq!(decode_raw_unicode_escape(br"\ud800"), None);
    }

    #[test]
    fn string_escape() {
        assert_eq!(
            decode_string_escape(br"a\x41\n\'\101").as_deref(),
            Some(&b"aA\n'A"[..])
        );
    }

    #[test]
    fn long_bytes() {
        assert_eq!(le_signed_to_i128(&[]), Some(0));
        assert_eq!(le_signed_to_i128(&[0xff]), Some(-1));
        assert_eq!(le_signed_to_i128(&[0x00, 0x80]), Some(-32768));
        assert_eq!(le_signed_to_i128(&[0; 17]), None);
    }
}
