//! A tiny pickle assembler for tests: hostile and benign streams written opcode by opcode.
#![allow(dead_code)]

/// A pickle under construction.
#[derive(Debug, Clone, Default)]
pub struct Asm(pub Vec<u8>);

impl Asm {
    pub fn new() -> Asm {
        Asm(Vec::new())
    }
    pub fn bytes(self) -> Vec<u8> {
        self.0
    }
    pub fn raw(mut self, bytes: &[u8]) -> Asm {
        self.0.extend_from_slice(bytes);
        self
    }
    fn op(self, code: u8) -> Asm {
        self.raw(&[code])
    }
    pub fn proto(self, n: u8) -> Asm {
        self.raw(&[0x80, n])
    }
    pub fn frame(self, n: u64) -> Asm {
        self.op(0x95).raw(&n.to_le_bytes())
    }
    pub fn stop(self) -> Asm {
        self.op(b'.')
    }
    pub fn mark(self) -> Asm {
        self.op(b'(')
    }
    pub fn pop(self) -> Asm {
        self.op(b'0')
    }
    pub fn pop_mark(self) -> Asm {
        self.op(b'1')
    }
    pub fn dup(self) -> Asm {
        self.op(b'2')
    }
    pub fn none(self) -> Asm {
        self.op(b'N')
    }
    pub fn newtrue(self) -> Asm {
        self.op(0x88)
    }
    pub fn newfalse(self) -> Asm {
        self.op(0x89)
    }
    pub fn int_text(self, text: &str) -> Asm {
        self.op(b'I').raw(text.as_bytes()).raw(b"\n")
    }
    pub fn binint(self, n: i32) -> Asm {
        self.op(b'J').raw(&n.to_le_bytes())
    }
    pub fn binint1(self, n: u8) -> Asm {
        self.raw(&[b'K', n])
    }
    pub fn binint2(self, n: u16) -> Asm {
        self.op(b'M').raw(&n.to_le_bytes())
    }
    pub fn long1(self, bytes: &[u8]) -> Asm {
        self.raw(&[0x8a, bytes.len() as u8]).raw(bytes)
    }
    pub fn binfloat(self, f: f64) -> Asm {
        self.op(b'G').raw(&f.to_be_bytes())
    }
    /// Text STRING with single quotes (no escaping of the content).
    pub fn string(self, s: &str) -> Asm {
        self.op(b'S').raw(b"'").raw(s.as_bytes()).raw(b"'\n")
    }
    pub fn short_binstring(self, s: &str) -> Asm {
        self.raw(&[b'U', s.len() as u8]).raw(s.as_bytes())
    }
    /// Text UNICODE (raw-unicode-escape; ASCII content written as is).
    pub fn unicode(self, s: &str) -> Asm {
        self.op(b'V').raw(s.as_bytes()).raw(b"\n")
    }
    pub fn binunicode(self, s: &str) -> Asm {
        self.op(b'X')
            .raw(&(s.len() as u32).to_le_bytes())
            .raw(s.as_bytes())
    }
    pub fn short_binunicode(self, s: &str) -> Asm {
        self.raw(&[0x8c, s.len() as u8]).raw(s.as_bytes())
    }
    pub fn binbytes(self, b: &[u8]) -> Asm {
        self.op(b'B').raw(&(b.len() as u32).to_le_bytes()).raw(b)
    }
    pub fn short_binbytes(self, b: &[u8]) -> Asm {
        self.raw(&[b'C', b.len() as u8]).raw(b)
    }
    pub fn empty_tuple(self) -> Asm {
        self.op(b')')
    }
    pub fn tuple(self) -> Asm {
        self.op(b't')
    }
    pub fn tuple1(self) -> Asm {
        self.op(0x85)
    }
    pub fn tuple2(self) -> Asm {
        self.op(0x86)
    }
    pub fn tuple3(self) -> Asm {
        self.op(0x87)
    }
    pub fn empty_list(self) -> Asm {
        self.op(b']')
    }
    pub fn list(self) -> Asm {
        self.op(b'l')
    }
    pub fn append(self) -> Asm {
        self.op(b'a')
    }
    pub fn appends(self) -> Asm {
        self.op(b'e')
    }
    pub fn empty_dict(self) -> Asm {
        self.op(b'}')
    }
    pub fn dict(self) -> Asm {
        self.op(b'd')
    }
    pub fn setitem(self) -> Asm {
        self.op(b's')
    }
    pub fn setitems(self) -> Asm {
        self.op(b'u')
    }
    pub fn empty_set(self) -> Asm {
        self.op(0x8f)
    }
    pub fn global(self, module: &str, name: &str) -> Asm {
        self.op(b'c')
            .raw(module.as_bytes())
            .raw(b"\n")
            .raw(name.as_bytes())
            .raw(b"\n")
    }
    pub fn inst(self, module: &str, name: &str) -> Asm {
        self.op(b'i')
            .raw(module.as_bytes())
            .raw(b"\n")
            .raw(name.as_bytes())
            .raw(b"\n")
    }
    pub fn stack_global(self) -> Asm {
        self.op(0x93)
    }
    /// SHORT_BINUNICODE module, SHORT_BINUNICODE name, STACK_GLOBAL.
    pub fn sglobal(self, module: &str, name: &str) -> Asm {
        self.short_binunicode(module)
            .short_binunicode(name)
            .stack_global()
    }
    pub fn reduce(self) -> Asm {
        self.op(b'R')
    }
    pub fn build(self) -> Asm {
        self.op(b'b')
    }
    pub fn obj(self) -> Asm {
        self.op(b'o')
    }
    pub fn newobj(self) -> Asm {
        self.op(0x81)
    }
    pub fn newobj_ex(self) -> Asm {
        self.op(0x92)
    }
    pub fn ext1(self, code: u8) -> Asm {
        self.raw(&[0x82, code])
    }
    pub fn binpersid(self) -> Asm {
        self.op(b'Q')
    }
    pub fn persid(self, id: &str) -> Asm {
        self.op(b'P').raw(id.as_bytes()).raw(b"\n")
    }
    pub fn put(self, n: u64) -> Asm {
        self.op(b'p').raw(n.to_string().as_bytes()).raw(b"\n")
    }
    pub fn get(self, n: u64) -> Asm {
        self.op(b'g').raw(n.to_string().as_bytes()).raw(b"\n")
    }
    pub fn binput(self, n: u8) -> Asm {
        self.raw(&[b'q', n])
    }
    pub fn binget(self, n: u8) -> Asm {
        self.raw(&[b'h', n])
    }
    pub fn long_binput(self, n: u32) -> Asm {
        self.op(b'r').raw(&n.to_le_bytes())
    }
    pub fn long_binget(self, n: u32) -> Asm {
        self.op(b'j').raw(&n.to_le_bytes())
    }
    pub fn memoize(self) -> Asm {
        self.op(0x94)
    }
    /// Appends `other`'s bytes.
    pub fn then(self, other: Asm) -> Asm {
        self.raw(&other.0)
    }
}

/// `("storage", torch.<storage>, key, "cpu", numel)` then BINPERSID.
pub fn storage(asm: Asm, storage: &str, key: &str, numel: u8) -> Asm {
    asm.mark()
        .binunicode("storage")
        .global("torch", storage)
        .binunicode(key)
        .binunicode("cpu")
        .binint1(numel)
        .tuple()
        .binpersid()
}

/// A protocol-2 `_rebuild_tensor_v2(storage, 0, (rows, cols), (cols, 1), False, OrderedDict())`
/// as torch.save writes it (without memo ops).
pub fn tensor_v2(asm: Asm, key: &str, rows: u8, cols: u8) -> Asm {
    let asm = asm.global("torch._utils", "_rebuild_tensor_v2").mark();
    storage(asm, "FloatStorage", key, rows * cols)
        .binint1(0)
        .binint1(rows)
        .binint1(cols)
        .tuple2()
        .binint1(cols)
        .binint1(1)
        .tuple2()
        .newfalse()
        .global("collections", "OrderedDict")
        .empty_tuple()
        .reduce()
        .tuple()
        .reduce()
}

/// `GLOBAL module name · SHORT_BINUNICODE "id" · TUPLE1 · REDUCE` (a call with one string).
pub fn call(asm: Asm, module: &str, name: &str) -> Asm {
    asm.global(module, name)
        .short_binunicode("id")
        .tuple1()
        .reduce()
}
