#!/usr/bin/env python3
"""Writes the weights-layer test fixtures into `tests/fixtures/weights/` (and its MANIFEST.json).

Run by hand, never in CI; the outputs are committed. From the repository root:

    python3 -m venv ~/.cache/safeformers/venv-torch
    ~/.cache/safeformers/venv-torch/bin/pip install torch numpy safetensors
    ~/.cache/safeformers/venv-torch/bin/python scripts/make_weight_fixtures.py

(made with torch 2.15, safetensors 0.8, numpy 2.4, CPython 3.11.)

What it writes, by folder (the held-out test spec is section 6 of
`/work/shared/research/pickle-safetensors.md`; every MANIFEST entry names its item):

* `benign/`      real `torch.save` outputs of tiny state dicts, each next to a safetensors twin
                 written by `safetensors.torch.save_file` from the same tensors made contiguous;
                 plus valid safetensors files with every dtype the format names (spec 6.1#22).
* `hostile/pickle/`       raw pickles assembled opcode by opcode (spec 6.1#1-21).
* `hostile/torch/`        container-level samples (spec 6.2#23-36), and `wrapped/`: each small
                          6.1 sample as `archive/data.pkl` of an otherwise valid torch zip.
* `hostile/safetensors/`  malformed and edge-case safetensors files (spec 6.3#37-44).
* `hostile/shards/`       model folders with a hostile `model.safetensors.index.json`.

SAFETY RULE. No hostile sample is ever loaded with Python's `pickle` or `torch.load`: they are
assembled from raw opcode bytes by the tiny assembler `Op` below, and their payloads are harmless
strings (`"id"`, `"echo pwned"`, `"1+1"`). Only benign files -- real `torch.save` outputs and the
hand-built baseline archive whose pickle uses nothing but allowlisted globals -- are read back
(with `torch.load(weights_only=True)`) to check them. Disassembling with `python -m pickletools`
does not execute anything and is safe for every file here.

Zips are written by `build_zip` below rather than Python's `zipfile`: `zipfile` cannot produce
most of the defects (duplicate names, local/central mismatches, flag bits, wrong CRCs, symlinks
with controlled attributes), and a single writer keeps the benign baseline and its hostile
variants byte-identical except for the defect. Every archive meant to be well-formed is read back
with `zipfile` as a check. Timestamps are fixed at 1980-01-01, so the output is deterministic,
except `benign/legacy_p2.pt`, whose storage keys are memory addresses chosen by torch.
"""

from __future__ import annotations

import gzip
import io
import json
import shutil
import struct
import sys
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "tests" / "fixtures" / "weights"

# Harmless payloads: what a hostile sample would "run" if someone unpickled it.
CMD = "id"
CMD2 = "echo pwned"
EXPR = "1+1"


# --------------------------------------------------------------------------------------------
# Pickle opcode assembler
# --------------------------------------------------------------------------------------------


class Op:
    """Pickle opcodes as bytes, one static method per opcode (names as in `pickletools`).

    Length-prefixed opcodes take an optional `length` to write a lying length field.
    """

    # Opcodes without an argument.
    MARK = staticmethod(lambda: b"(")
    STOP = staticmethod(lambda: b".")
    POP = staticmethod(lambda: b"0")
    POP_MARK = staticmethod(lambda: b"1")
    DUP = staticmethod(lambda: b"2")
    NONE = staticmethod(lambda: b"N")
    BINPERSID = staticmethod(lambda: b"Q")
    REDUCE = staticmethod(lambda: b"R")
    APPEND = staticmethod(lambda: b"a")
    BUILD = staticmethod(lambda: b"b")
    DICT = staticmethod(lambda: b"d")
    EMPTY_DICT = staticmethod(lambda: b"}")
    APPENDS = staticmethod(lambda: b"e")
    LIST = staticmethod(lambda: b"l")
    EMPTY_LIST = staticmethod(lambda: b"]")
    OBJ = staticmethod(lambda: b"o")
    SETITEM = staticmethod(lambda: b"s")
    TUPLE = staticmethod(lambda: b"t")
    EMPTY_TUPLE = staticmethod(lambda: b")")
    SETITEMS = staticmethod(lambda: b"u")
    NEWOBJ = staticmethod(lambda: b"\x81")
    TUPLE1 = staticmethod(lambda: b"\x85")
    TUPLE2 = staticmethod(lambda: b"\x86")
    TUPLE3 = staticmethod(lambda: b"\x87")
    NEWTRUE = staticmethod(lambda: b"\x88")
    NEWFALSE = staticmethod(lambda: b"\x89")
    EMPTY_SET = staticmethod(lambda: b"\x8f")
    NEWOBJ_EX = staticmethod(lambda: b"\x92")
    STACK_GLOBAL = staticmethod(lambda: b"\x93")
    MEMOIZE = staticmethod(lambda: b"\x94")

    @staticmethod
    def PROTO(n: int) -> bytes:
        return b"\x80" + bytes([n])

    @staticmethod
    def FRAME(n: int) -> bytes:
        return b"\x95" + struct.pack("<Q", n)

    @staticmethod
    def GLOBAL(module: str, name: str) -> bytes:
        return b"c" + module.encode() + b"\n" + name.encode() + b"\n"

    @staticmethod
    def INST(module: str, name: str) -> bytes:
        return b"i" + module.encode() + b"\n" + name.encode() + b"\n"

    @staticmethod
    def INT(n: int) -> bytes:
        return b"I%d\n" % n

    @staticmethod
    def BININT(n: int) -> bytes:
        return b"J" + struct.pack("<i", n)

    @staticmethod
    def BININT1(n: int) -> bytes:
        return b"K" + bytes([n])

    @staticmethod
    def BININT2(n: int) -> bytes:
        return b"M" + struct.pack("<H", n)

    @staticmethod
    def LONG1(n: int) -> bytes:
        data = _encode_long(n)
        return b"\x8a" + bytes([len(data)]) + data

    @staticmethod
    def LONG4(data: bytes, length: int | None = None) -> bytes:
        return b"\x8b" + struct.pack("<i", len(data) if length is None else length) + data

    @staticmethod
    def BINFLOAT(x: float) -> bytes:
        return b"G" + struct.pack(">d", x)

    @staticmethod
    def STRING(s: str) -> bytes:
        return b"S" + repr(s).encode() + b"\n"

    @staticmethod
    def UNICODE(s: str) -> bytes:
        return b"V" + s.encode("raw-unicode-escape") + b"\n"

    @staticmethod
    def BINUNICODE(s: str, length: int | None = None) -> bytes:
        data = s.encode()
        return b"X" + struct.pack("<I", len(data) if length is None else length) + data

    @staticmethod
    def SHORT_BINUNICODE(s: str) -> bytes:
        data = s.encode()
        return b"\x8c" + bytes([len(data)]) + data

    @staticmethod
    def BINUNICODE8(s: str, length: int | None = None) -> bytes:
        data = s.encode()
        return b"\x8d" + struct.pack("<Q", len(data) if length is None else length) + data

    @staticmethod
    def BINBYTES(b: bytes, length: int | None = None) -> bytes:
        return b"B" + struct.pack("<I", len(b) if length is None else length) + b

    @staticmethod
    def SHORT_BINBYTES(b: bytes) -> bytes:
        return b"C" + bytes([len(b)]) + b

    @staticmethod
    def BINBYTES8(b: bytes, length: int | None = None) -> bytes:
        return b"\x8e" + struct.pack("<Q", len(b) if length is None else length) + b

    @staticmethod
    def PUT(n: int) -> bytes:
        return b"p%d\n" % n

    @staticmethod
    def GET(n: int) -> bytes:
        return b"g%d\n" % n

    @staticmethod
    def BINPUT(n: int) -> bytes:
        return b"q" + bytes([n])

    @staticmethod
    def BINGET(n: int) -> bytes:
        return b"h" + bytes([n])

    @staticmethod
    def LONG_BINPUT(n: int) -> bytes:
        return b"r" + struct.pack("<I", n)

    @staticmethod
    def EXT1(code: int) -> bytes:
        return b"\x82" + bytes([code])


def _encode_long(n: int) -> bytes:
    """Two's-complement little-endian, the shortest form (what LONG1 carries)."""
    if n == 0:
        return b""
    length = (n.bit_length() >> 3) + 1
    data = n.to_bytes(length, "little", signed=True)
    if n < 0 and len(data) > 1 and data[-1] == 0xFF and (data[-2] & 0x80):
        data = data[:-1]
    return data


def asm(*parts: bytes) -> bytes:
    return b"".join(parts)


def lit(value) -> bytes:
    """Encodes a plain Python literal with protocol-2/3 opcodes (no globals)."""
    if value is None:
        return Op.NONE()
    if value is True:
        return Op.NEWTRUE()
    if value is False:
        return Op.NEWFALSE()
    if isinstance(value, int):
        if 0 <= value < 256:
            return Op.BININT1(value)
        if -(2**31) <= value < 2**31:
            return Op.BININT(value)
        return Op.LONG1(value)
    if isinstance(value, float):
        return Op.BINFLOAT(value)
    if isinstance(value, str):
        return Op.BINUNICODE(value)
    if isinstance(value, bytes):
        return Op.BINBYTES(value)
    if isinstance(value, tuple):
        if len(value) == 0:
            return Op.EMPTY_TUPLE()
        inner = b"".join(lit(v) for v in value)
        if len(value) <= 3:
            return inner + [Op.TUPLE1, Op.TUPLE2, Op.TUPLE3][len(value) - 1]()
        return Op.MARK() + inner + Op.TUPLE()
    if isinstance(value, list):
        if not value:
            return Op.EMPTY_LIST()
        return Op.EMPTY_LIST() + Op.MARK() + b"".join(lit(v) for v in value) + Op.APPENDS()
    if isinstance(value, dict):
        body = b"".join(lit(k) + lit(v) for k, v in value.items())
        return Op.EMPTY_DICT() + (Op.MARK() + body + Op.SETITEMS() if value else b"")
    raise TypeError(f"lit() cannot encode {type(value)}")


def call(module: str, name: str, *args) -> bytes:
    """`GLOBAL module name · args · TUPLE · REDUCE` (no PROTO, no STOP)."""
    return Op.GLOBAL(module, name) + lit(tuple(args)) + Op.REDUCE()


def p2_call(module: str, name: str, *args) -> bytes:
    """A whole protocol-2 pickle calling `module.name(*args)`."""
    return asm(Op.PROTO(2), call(module, name, *args), Op.STOP())


def sg(module: str, name: str) -> bytes:
    """`SHORT_BINUNICODE module · SHORT_BINUNICODE name · STACK_GLOBAL`."""
    return Op.SHORT_BINUNICODE(module) + Op.SHORT_BINUNICODE(name) + Op.STACK_GLOBAL()


def framed(proto: int, body: bytes) -> bytes:
    """`PROTO · FRAME · body · STOP`, the frame covering body and STOP like CPython writes it."""
    return Op.PROTO(proto) + Op.FRAME(len(body) + 1) + body + Op.STOP()


# --------------------------------------------------------------------------------------------
# PyTorch data.pkl builder (protocol 2, the shape torch.save writes)
# --------------------------------------------------------------------------------------------


def storage_pid(storage_type="FloatStorage", key="0", location="cpu", numel=12) -> bytes:
    """`BINPERSID ("storage", torch.<storage_type>, key, location, numel)`."""
    return asm(
        Op.MARK(),
        Op.BINUNICODE("storage"),
        Op.GLOBAL("torch", storage_type),
        lit(key),
        lit(location),
        lit(numel),
        Op.TUPLE(),
        Op.BINPERSID(),
    )


def ordered_dict(items: list[tuple[bytes, bytes]] | None = None) -> bytes:
    """`collections.OrderedDict()` filled with SETITEMS of pre-encoded (key, value) pairs."""
    out = Op.GLOBAL("collections", "OrderedDict") + Op.EMPTY_TUPLE() + Op.REDUCE()
    if items:
        out += Op.MARK() + b"".join(k + v for k, v in items) + Op.SETITEMS()
    return out


def rebuild_v2(
    pid: bytes | None = None,
    offset: bytes | None = None,
    size: bytes | None = None,
    stride: bytes | None = None,
    requires_grad: bytes | None = None,
    hooks: bytes | None = None,
    extra: bytes = b"",
    drop_last: int = 0,
) -> bytes:
    """`torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)`
    for a 3x4 float32 tensor over storage "0"; every argument can be replaced by raw opcodes."""
    args = [
        storage_pid() if pid is None else pid,
        lit(0) if offset is None else offset,
        lit((3, 4)) if size is None else size,
        lit((4, 1)) if stride is None else stride,
        lit(False) if requires_grad is None else requires_grad,
        ordered_dict() if hooks is None else hooks,
    ]
    if drop_last:
        args = args[:-drop_last]
    return asm(
        Op.GLOBAL("torch._utils", "_rebuild_tensor_v2"),
        Op.MARK(),
        *args,
        extra,
        Op.TUPLE(),
        Op.REDUCE(),
    )


def state_dict_pkl(tensors: list[tuple[str, bytes]]) -> bytes:
    """A protocol-2 `data.pkl`: an OrderedDict of name -> pre-encoded tensor."""
    return asm(Op.PROTO(2), ordered_dict([(lit(k), v) for k, v in tensors]), Op.STOP())


BASE_FLOATS = struct.pack("<12f", *[i / 4 for i in range(12)])  # arange(12)/4 as float32
BASE_PKL = state_dict_pkl([("weight", rebuild_v2())])


# --------------------------------------------------------------------------------------------
# Zip writer (stored members, torch-style 64-byte alignment)
# --------------------------------------------------------------------------------------------

DOS_DATE_1980 = (0 << 9) | (1 << 5) | 1  # 1980-01-01
ALIGN = 64


@dataclass
class Member:
    name: str
    data: bytes
    local_name: str | None = None  # name written in the local header, if it must differ
    flags: int = 0
    method: int = 0  # 0 stored, 8 deflate
    crc: int | None = None  # CRC to write instead of the real one
    uncompressed_size: int | None = None  # for deflated members: the inflated size
    external_attr: int = 0
    create_system: int = 0  # 3 = unix (needed for symlink mode bits to mean anything)
    data_descriptor: bool = False


def build_zip(members: list[Member]) -> bytes:
    """A zip whose data areas start at multiples of 64, like PyTorch's writer (an "FB" extra
    field of 'Z' padding in the local header only)."""
    out = bytearray()
    central = bytearray()
    for m in members:
        name = m.name.encode()
        local_name = (m.local_name or m.name).encode()
        if m.crc is not None:
            crc = m.crc
        elif m.uncompressed_size is not None:
            crc = zlib.crc32(bytes(m.uncompressed_size))  # deflated members here are all zeros
        else:
            crc = zlib.crc32(m.data)
        usize = len(m.data) if m.uncompressed_size is None else m.uncompressed_size
        csize = len(m.data)
        flags = m.flags | (0x08 if m.data_descriptor else 0)
        offset = len(out)
        pad = (ALIGN - (offset + 30 + len(local_name) + 4) % ALIGN) % ALIGN
        extra = b"FB" + struct.pack("<H", pad) + b"Z" * pad
        lh_crc, lh_csize, lh_usize = (0, 0, 0) if m.data_descriptor else (crc, csize, usize)
        out += struct.pack(
            "<4sHHHHHIIIHH",
            b"PK\x03\x04", 20, flags, m.method, 0, DOS_DATE_1980,
            lh_crc, lh_csize, lh_usize, len(local_name), len(extra),
        )
        out += local_name + extra + m.data
        if m.data_descriptor:
            out += struct.pack("<4sIII", b"PK\x07\x08", crc, csize, usize)
        central += struct.pack(
            "<4sHHHHHHIIIHHHHHII",
            b"PK\x01\x02", (m.create_system << 8) | 20, 20, flags, m.method, 0, DOS_DATE_1980,
            crc, csize, usize, len(name), 0, 0, 0, 0, m.external_attr, offset,
        )
        central += name
    cd_offset = len(out)
    out += central
    n = len(members)
    out += struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, n, n, len(central), cd_offset, 0)
    return bytes(out)


def torch_members(pkl: bytes, root: str = "archive", storages: dict[str, bytes] | None = None,
                  pkl_name: str = "data.pkl") -> list[Member]:
    """The members of a recent `torch.save` zip, in its order (serialization id omitted)."""
    storages = {"0": BASE_FLOATS} if storages is None else storages
    members = [
        Member(f"{root}/{pkl_name}", pkl),
        Member(f"{root}/.format_version", b"1"),
        Member(f"{root}/.storage_alignment", b"64"),
        Member(f"{root}/byteorder", b"little"),
    ]
    members += [Member(f"{root}/data/{k}", v) for k, v in storages.items()]
    members.append(Member(f"{root}/version", b"3\n"))
    return members


def torch_zip(pkl: bytes, **kw) -> bytes:
    return build_zip(torch_members(pkl, **kw))


def check_zip_readable(data: bytes) -> None:
    """Python's zipfile must read every member and agree on the CRCs."""
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        bad = z.testzip()
        assert bad is None, bad


# --------------------------------------------------------------------------------------------
# Manifest
# --------------------------------------------------------------------------------------------

MANIFEST: list[dict] = []


def record(path: str, spec: str, load: str, scan, *, must_name=(), note: str = "",
           strict: bool = True, policy: str | None = None, twin: str | None = None) -> None:
    """One MANIFEST entry. `scan` is a verdict or a list of acceptable verdicts."""
    assert load in ("ok", "refused", "invalid"), load
    for v in scan if isinstance(scan, list) else [scan]:
        assert v in ("safe", "unsafe", "invalid"), v
    assert (OUT / path).exists(), path
    entry: dict = {"path": path, "spec": spec}
    if policy:
        entry["policy"] = policy
    entry["expect"] = {"load": load, "scan": scan, "scan_must_name": list(must_name)}
    if load != "ok":
        entry["strict_kind"] = strict
    if twin:
        entry["twin"] = twin
    entry["note"] = note
    MANIFEST.append(entry)


def write(rel: str, data: bytes) -> str:
    path = OUT / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return rel


def is_pickle_based(rel: str) -> bool:
    return not rel.endswith(".safetensors")


# --------------------------------------------------------------------------------------------
# benign/
# --------------------------------------------------------------------------------------------


def t(shape, dtype=torch.float32, start=0):
    """A deterministic tensor: arange(numel)/4 (+start), reshaped, cast."""
    n = 1
    for d in shape:
        n *= d
    return ((torch.arange(n, dtype=torch.float64) + start) / 4).reshape(shape).to(dtype)


def twin_of(tensors: dict) -> dict:
    return {k: v.detach().contiguous().clone() for k, v in tensors.items()}


def save_benign(name: str, obj, tensors: dict, spec: str, note: str, **save_kw) -> None:
    """`torch.save(obj)` to benign/<name>, its safetensors twin next to it, and a check that
    torch reads back exactly `tensors`."""
    pt = OUT / "benign" / name
    pt.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, pt, **save_kw)
    # torch's weights-only unpickler rejects FRAME (protocol >= 4) although torch.save writes it;
    # these files were written just now from our own tensors, so a full load is safe.
    check_benign_torch(pt, tensors, weights_only=save_kw.get("pickle_protocol", 2) < 4)
    stem = pt.stem
    st_rel = f"benign/{stem}.safetensors"
    save_file(twin_of(tensors), OUT / st_rel, metadata={"format": "pt"})
    record(f"benign/{name}", spec, "ok", "safe", policy="allow_pickle", twin=st_rel, note=note)
    record(st_rel, spec, "ok", "safe", note=f"safetensors twin of benign/{name}")


def check_benign_torch(path: Path, tensors: dict, weights_only: bool = True) -> None:
    # Only ever called on files torch.save wrote a moment ago from our own tensors, or on the
    # hand-built baselines whose pickles use allowlisted globals only.
    loaded = torch.load(path, weights_only=weights_only)
    for k, v in tensors.items():
        assert torch.equal(loaded[k], v), (path, k)
        assert loaded[k].dtype == v.dtype and loaded[k].stride() == v.stride(), (path, k)


def make_benign() -> None:
    base = {"weight": t((3, 4)), "bias": t((4,), start=1)}
    save_benign("zip_p2.pt", base, base, "6.1#22",
                "torch.save default: zip, pickle protocol 2, root folder `zip_p2/`")
    save_benign("zip_p4.pt", base, base, "6.1#22",
                "pickle_protocol=4 (FRAME, SHORT_BINUNICODE, MEMOIZE); torch's own weights_only "
                "loader rejects it (FRAME unsupported), ours must accept", pickle_protocol=4)
    save_benign("zip_p5.pt", base, base, "6.1#22",
                "pickle_protocol=5 (as protocol 4 for these values)", pickle_protocol=5)
    save_benign("legacy_p2.pt", base, base, "6.1#22",
                "legacy stacked-pickle format (_use_new_zipfile_serialization=False); storage "
                "keys are memory addresses, so this file changes on every run",
                _use_new_zipfile_serialization=False)

    dtypes = {
        "f32": t((2, 3, 2)), "f16": t((2, 3, 2), torch.float16), "bf16": t((2, 3, 2), torch.bfloat16),
        "f64": t((2, 3, 2), torch.float64), "i64": t((3, 4), torch.int64) * 4,
        "i32": t((3, 4), torch.int32) * 4, "i16": (t((3, 4)) * 4).to(torch.int16),
        "i8": (t((3, 4)) * 4 - 6).to(torch.int8), "u8": (t((3, 4)) * 4).to(torch.uint8),
        "bool": (torch.arange(12) % 3 == 0).reshape(3, 4),
    }
    save_benign("dtypes.pt", dtypes, dtypes, "6.1#22",
                "classic dtypes, legacy typed storages (FloatStorage, HalfStorage, BFloat16Storage, ...)")

    new = {
        "f8_e4m3fn": t((2, 3)).to(torch.float8_e4m3fn),
        "f8_e5m2": t((2, 3)).to(torch.float8_e5m2),
        "f8_e4m3fnuz": t((2, 3)).to(torch.float8_e4m3fnuz),
        "f8_e5m2fnuz": t((2, 3)).to(torch.float8_e5m2fnuz),
        "f8_e8m0fnu": (t((2, 3)) + 1).to(torch.float8_e8m0fnu),
        "u16": (t((2, 3)) * 4).to(torch.uint16),
        "u32": (t((2, 3)) * 4).to(torch.uint32),
        "u64": (t((2, 3)) * 4).to(torch.uint64),
        "c64": torch.complex(t((2, 3)), -t((2, 3))),
        "f4_e2m1fn_x2": torch.arange(6, dtype=torch.uint8).reshape(2, 3).view(torch.float4_e2m1fn_x2),
    }
    # torch.equal is not implemented for every new dtype: compare the raw bytes instead.
    pt = OUT / "benign" / "dtypes_new.pt"
    torch.save(new, pt)
    loaded = torch.load(pt, weights_only=True)
    for k, v in new.items():
        assert loaded[k].dtype == v.dtype and loaded[k].shape == v.shape, k
        assert loaded[k].view(torch.uint8).equal(v.view(torch.uint8)), k
    save_file(twin_of(new), OUT / "benign" / "dtypes_new.safetensors", metadata={"format": "pt"})
    record("benign/dtypes_new.pt", "6.1#22", "ok", "safe", policy="allow_pickle",
           twin="benign/dtypes_new.safetensors",
           note="fp8/fp4/uint16-64/complex64: _rebuild_tensor_v3 + torch.storage.UntypedStorage "
                "(numel in bytes) + dtype global; complex64 uses ComplexFloatStorage")
    record("benign/dtypes_new.safetensors", "6.3#40", "ok", "safe",
           note="twin of benign/dtypes_new.pt: F8_E4M3, F8_E5M2, F8_E4M3FNUZ, F8_E5M2FNUZ, F8_E8M0, "
                "U16, U32, U64, C64, F4 (written by safetensors.torch)")

    shared_base = t((3, 4))
    tied = t((2, 3), start=5)
    shared = {"base": shared_base, "tail": shared_base[1:], "emb": tied, "lm_head": tied}
    save_benign("shared_storage.pt", shared, shared, "6.1#22",
                "`tail` is base[1:] (same storage key, storage_offset 4); `emb` and `lm_head` are "
                "the same tensor saved twice (one storage, two names); the twin holds copies")

    x = t((3, 4))
    y = t((3, 6), start=2)
    z = t((4, 4), start=3)
    noncontig = {"transposed": x.t(), "strided": y[:, ::2], "offset_view": z[1:, 1:3]}
    save_benign("noncontiguous.pt", noncontig, noncontig, "6.1#22",
                "transposed (stride (1,4)), column-sliced (stride (6,2)) and offset views: the "
                "whole storage is saved, the view is in offset/size/stride")

    empty = {"empty": torch.zeros(0, 3), "scalar": torch.tensor(1.5), "empty_i64": torch.zeros(2, 0, dtype=torch.int64)}
    save_benign("empty.pt", empty, empty, "6.1#22",
                "0-element tensors (shape (0,3) and (2,0)) and a 0-dim scalar")

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    sd = model.state_dict()
    sd_tensors = {k: v for k, v in sd.items()}
    pt = OUT / "benign" / "pytorch_model.bin"
    torch.save(sd, pt)
    check_benign_torch(pt, sd_tensors)
    assert hasattr(torch.load(pt, weights_only=True), "_metadata")
    save_file(twin_of(sd_tensors), OUT / "benign" / "pytorch_model.safetensors", metadata={"format": "pt"})
    record("benign/pytorch_model.bin", "6.1#22", "ok", "safe", policy="allow_pickle",
           twin="benign/pytorch_model.safetensors",
           note="nn.Sequential(Linear(4,3), LayerNorm(3)).state_dict() (seed 0): OrderedDict "
                "followed by BUILD {'_metadata': ...}; HF file name")
    record("benign/pytorch_model.safetensors", "6.1#22", "ok", "safe",
           note="safetensors twin of benign/pytorch_model.bin")

    params = {"w": torch.nn.Parameter(t((3, 4))), "frozen": torch.nn.Parameter(t((4,)), requires_grad=False)}
    pt = OUT / "benign" / "parameters.pt"
    torch.save(params, pt)
    loaded = torch.load(pt, weights_only=True)
    assert isinstance(loaded["w"], torch.nn.Parameter) and loaded["w"].requires_grad
    assert not loaded["frozen"].requires_grad and torch.equal(loaded["frozen"].data, params["frozen"].data)
    save_file(twin_of({k: v.data for k, v in params.items()}), OUT / "benign" / "parameters.safetensors")
    record("benign/parameters.pt", "6.1#22", "ok", "safe", policy="allow_pickle",
           twin="benign/parameters.safetensors",
           note="nn.Parameter values (_rebuild_parameter), requires_grad True and False")
    record("benign/parameters.safetensors", "6.1#22", "ok", "safe",
           note="safetensors twin of benign/parameters.pt")

    # Hand-built baseline: the archive every hostile/torch sample is a variant of.
    base_zip = torch_zip(BASE_PKL)
    check_zip_readable(base_zip)
    write("benign/handbuilt_baseline.pt", base_zip)
    check_benign_torch(OUT / "benign/handbuilt_baseline.pt", {"weight": t((3, 4))})
    save_file({"weight": t((3, 4))}, OUT / "benign/handbuilt_baseline.safetensors")
    record("benign/handbuilt_baseline.pt", "6.1#22", "ok", "safe", policy="allow_pickle",
           twin="benign/handbuilt_baseline.safetensors",
           note="written by this script's zip writer and pickle builder (not torch.save); every "
                "hostile/torch sample differs from it only by its defect. Checked with torch.load")
    record("benign/handbuilt_baseline.safetensors", "6.1#22", "ok", "safe",
           note="twin of benign/handbuilt_baseline.pt")

    # Big-endian: the baseline with byteorder "big" and byteswapped storage bytes.
    be_floats = struct.pack(">12f", *[i / 4 for i in range(12)])
    members = torch_members(BASE_PKL, storages={"0": be_floats})
    members[3] = Member("archive/byteorder", b"big")
    be_zip = build_zip(members)
    write("benign/big_endian.pt", be_zip)
    check_benign_torch(OUT / "benign/big_endian.pt", {"weight": t((3, 4))})
    save_file({"weight": t((3, 4))}, OUT / "benign/big_endian.safetensors")
    record("benign/big_endian.pt", "6.1#22", "ok", "safe", policy="allow_pickle",
           twin="benign/big_endian.safetensors",
           note="byteorder member says `big` and data/0 is big-endian float32; the loader must "
                "byteswap (torch.load gives the twin's values)")
    record("benign/big_endian.safetensors", "6.1#22", "ok", "safe",
           note="twin of benign/big_endian.pt")

    # Zip format with the data-descriptor flag (0x8) set: benign control for 6.2#26.
    members = torch_members(BASE_PKL)
    for m in members:
        m.data_descriptor = True
    dd_zip = build_zip(members)
    check_zip_readable(dd_zip)
    write("benign/data_descriptor.pt", dd_zip)
    check_benign_torch(OUT / "benign/data_descriptor.pt", {"weight": t((3, 4))})
    record("benign/data_descriptor.pt", "6.2#26", "ok", "safe", policy="allow_pickle",
           twin="benign/handbuilt_baseline.safetensors",
           note="baseline with general-purpose flag 0x8 (sizes/CRC in data descriptors, zeros in "
                "the local headers): the benign control for the flag-bit samples")

    make_benign_safetensors()


def st_file(header: bytes | str, data: bytes = b"", *, length: int | None = None, pad: bool = True) -> bytes:
    """safetensors bytes from a raw header text (space-padded to a multiple of 8 like the writer)."""
    h = header.encode() if isinstance(header, str) else header
    if pad:
        h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h) if length is None else length) + h + data


def st_header(entries: list[tuple[str, str, list[int], int]], metadata: dict | None = None) -> tuple[str, int]:
    """A header for contiguous tensors (name, dtype, shape, nbytes), in the given order."""
    obj: dict = {}
    if metadata is not None:
        obj["__metadata__"] = metadata
    off = 0
    for name, dtype, shape, nbytes in entries:
        obj[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + nbytes]}
        off += nbytes
    return json.dumps(obj, separators=(",", ":")), off


def pattern(n: int) -> bytes:
    return bytes((i * 37 + 11) & 0xFF for i in range(n))


def make_benign_safetensors() -> None:
    torch_dtypes = {
        "BOOL": torch.bool, "U8": torch.uint8, "I8": torch.int8, "F8_E5M2": torch.float8_e5m2,
        "F8_E4M3": torch.float8_e4m3fn, "F8_E8M0": torch.float8_e8m0fnu,
        "F8_E4M3FNUZ": torch.float8_e4m3fnuz, "F8_E5M2FNUZ": torch.float8_e5m2fnuz,
        "I16": torch.int16, "U16": torch.uint16, "F16": torch.float16, "BF16": torch.bfloat16,
        "I32": torch.int32, "U32": torch.uint32, "F32": torch.float32, "C64": torch.complex64,
        "F64": torch.float64, "I64": torch.int64, "U64": torch.uint64,
        "F4": torch.float4_e2m1fn_x2,
    }
    tensors = {}
    for name, dt in torch_dtypes.items():
        if dt == torch.float4_e2m1fn_x2:
            tensors[name] = torch.arange(6, dtype=torch.uint8).reshape(2, 3).view(dt)
        elif dt == torch.bool:
            tensors[name] = (torch.arange(6) % 2 == 0).reshape(2, 3)
        elif dt == torch.complex64:
            tensors[name] = torch.complex(t((2, 3)), t((2, 3), start=1))
        else:
            tensors[name] = (t((2, 3)) * 4 + 1).to(dt)
    save_file(tensors, OUT / "benign/all_dtypes.safetensors", metadata={"format": "pt"})
    record("benign/all_dtypes.safetensors", "6.3#40", "ok", "safe",
           note="one 2x3 tensor per dtype torch can make, named by its safetensors dtype: "
                + ", ".join(torch_dtypes) + " (F4 holds 2x3 packed bytes = 2x6 fp4 values)")

    # F6_E2M3 / F6_E3M2 cannot be made by torch: a hand-written header. Every tensor's bit
    # count is a multiple of 8 (F6 x4 = 3 bytes, F4 x2 = 1 byte).
    # Ordered by alignment (8-byte types first), as the reference writer does, so that every
    # tensor starts at a multiple of its element size (safeformers would copy misaligned data).
    raw = [
        ("C64", "C64", [2], 16), ("U64", "U64", [1], 8),
        ("scalar_F32", "F32", [], 4), ("empty_F32", "F32", [0, 5], 0),
        ("F4", "F4", [2, 2], 2), ("F6_E2M3", "F6_E2M3", [4], 3), ("F6_E3M2", "F6_E3M2", [2, 4], 6),
        ("F8_E8M0", "F8_E8M0", [3], 3), ("F8_E4M3FNUZ", "F8_E4M3FNUZ", [3], 3),
        ("F8_E5M2FNUZ", "F8_E5M2FNUZ", [3], 3),
    ]
    header, n = st_header(raw, metadata={"format": "pt", "note": "hand-written"})
    write("benign/exotic_dtypes_raw.safetensors", st_file(header, pattern(n)))
    record("benign/exotic_dtypes_raw.safetensors", "6.3#40", "ok", "safe",
           note="hand-written header: F4 [2,2], F6_E2M3 [4], F6_E3M2 [2,4], F8_E8M0, F8_E4M3FNUZ, "
                "F8_E5M2FNUZ, C64, U64, a 0-dim scalar and an empty [0,5] tensor; bytes are a "
                "fixed pattern (values may be NaN, which is allowed)")


# --------------------------------------------------------------------------------------------
# hostile/pickle/
# --------------------------------------------------------------------------------------------

# (relative path, spec, load, scan, must_name, note, strict) -- collected so that each small
# sample can also be wrapped as data.pkl of a torch zip.
PICKLES: list[tuple[str, bytes, str, str, object, list[str], str, bool]] = []


def hp(name: str, data: bytes, spec: str, load: str, scan, must=(), note: str = "", strict: bool = True) -> None:
    rel = write(f"hostile/pickle/{name}", data)
    PICKLES.append((name, data, spec, load, scan, list(must), note, strict))
    record(rel, spec, load, scan, must_name=must, note=note, strict=strict, policy="allow_pickle")


def os_system_p(proto: int, module: str = "posix", name: str = "system", arg: str = CMD) -> bytes:
    """What `pickle.dumps` writes for a reduce to module.name(arg) at `proto`."""
    if proto == 0:
        return asm(Op.GLOBAL(module, name), Op.MARK(), Op.UNICODE(arg), Op.TUPLE(), Op.REDUCE(), Op.STOP())
    if proto in (2, 3):
        return asm(Op.PROTO(proto), Op.GLOBAL(module, name), Op.BINUNICODE(arg), Op.TUPLE1(), Op.REDUCE(), Op.STOP())
    body = asm(
        Op.SHORT_BINUNICODE(module), Op.MEMOIZE(), Op.SHORT_BINUNICODE(name), Op.MEMOIZE(),
        Op.STACK_GLOBAL(), Op.MEMOIZE(), Op.SHORT_BINUNICODE(arg), Op.MEMOIZE(), Op.TUPLE1(),
        Op.MEMOIZE(), Op.REDUCE(), Op.MEMOIZE(),
    )
    return framed(proto, body)


def frame_straddle(hidden: bytes) -> bytes:
    """fickling's FRAME-straddle construction (research 1.3), own implementation.

    `FRAME 2` covers only `B` and the first length byte of BINBYTES. A linear disassembler reads
    the length as 0x00000107 and swallows the next 263 bytes (the hidden call included) as one
    bytes object. CPython's C unpickler reading from a file object drops the rest of an exhausted
    frame buffer and reads the length from the file, where it is 1, so it executes `hidden`.
    """
    filler = "a" * (8192 * 16 - 17)  # positions the frame at the C unpickler's buffer boundary
    payload = hidden + Op.MARK()
    assert len(payload) <= 261
    payload += Op.NONE() * (261 - len(payload))
    return asm(
        Op.PROTO(5), Op.NONE(), Op.UNICODE(filler), Op.POP(), Op.MARK(), Op.FRAME(2),
        b"B\x07", b"\x01\x00\x00", b"\x00", b"\x00", payload, Op.POP_MARK(), Op.STOP(),
    )


def make_hostile_pickle() -> None:
    for p in (0, 2, 3, 4, 5):
        hp(f"os_system_p{p}.pkl", os_system_p(p), "6.1#1", "refused", "unsafe", ["posix.system"],
           f"os.system('id') as pickle.dumps writes it at protocol {p} (module emitted as posix)")
    hp("nt_system_p2.pkl", os_system_p(2, "nt"), "6.1#1", "refused", "unsafe", ["nt.system"],
       "Windows spelling of os.system")
    hp("os_system_p2_module_os.pkl", os_system_p(2, "os"), "6.1#1", "refused", "unsafe", ["os.system"],
       "module spelled `os`")
    hp("builtins_eval_p2.pkl", os_system_p(2, "builtins", "eval", EXPR), "6.1#1", "refused", "unsafe",
       ["builtins.eval"], "builtins.eval('1+1')")
    hp("builtin_eval_p0.pkl", os_system_p(0, "__builtin__", "eval", EXPR), "6.1#1", "refused", "unsafe",
       ["eval"], "Python-2 spelling __builtin__.eval (scanners may normalise to builtins.eval)")
    hp("builtins_exec_p4.pkl", os_system_p(4, "builtins", "exec", "print('pwned')"), "6.1#1", "refused",
       "unsafe", ["builtins.exec"], "builtins.exec via STACK_GLOBAL")

    hp("inst_os_system.pkl", asm(Op.MARK(), Op.STRING(CMD), Op.INST("os", "system"), Op.STOP()),
       "6.1#2", "refused", "unsafe", ["os.system"], "protocol 0 INST: import and call in one opcode")
    hp("obj_then_pop_smtplib.pkl",
       asm(Op.PROTO(4), Op.MARK(), sg("smtplib", "SMTP"), Op.SHORT_BINUNICODE("127.0.0.1"), Op.OBJ(),
           Op.POP(), Op.NONE(), Op.STOP()),
       "6.1#3", "refused", "unsafe", ["smtplib.SMTP"],
       "OBJ call whose result is popped (GHSA-mxhj): the returned value is None, the call still happens")
    hp("obj_pty_spawn.pkl", asm(Op.MARK(), Op.GLOBAL("pty", "spawn"), Op.STRING(CMD), Op.OBJ(), Op.STOP()),
       "6.1#3", "refused", "unsafe", ["pty.spawn"], "protocol-0 MARK · GLOBAL · args · OBJ (fickling PR #108)")

    hp("newobj_popen.pkl",
       asm(Op.PROTO(2), Op.GLOBAL("subprocess", "Popen"), lit(([CMD],)), Op.NEWOBJ(), Op.STOP()),
       "6.1#4", "refused", "unsafe", ["subprocess.Popen"],
       "NEWOBJ of a non-allowlisted class (cls.__new__ only: the point is the import and the opcode)")
    hp("newobj_ex_popen.pkl",
       asm(Op.PROTO(4), sg("subprocess", "Popen"), Op.SHORT_BINUNICODE(CMD), Op.TUPLE1(),
           Op.EMPTY_DICT(), Op.SHORT_BINUNICODE("shell"), Op.NEWTRUE(), Op.SETITEM(), Op.NEWOBJ_EX(), Op.STOP()),
       "6.1#4", "refused", "unsafe", ["subprocess.Popen"], "NEWOBJ_EX with kwargs {'shell': True}")
    hp("ext1.pkl", asm(Op.PROTO(2), Op.EXT1(1), lit((CMD,)), Op.REDUCE(), Op.STOP()),
       "6.1#4", "refused", "unsafe", [],
       "EXT1 0x01: an import through the copyreg extension registry (empty by default); the scanner "
       "cannot name it and must flag the opcode; loader refuses the opcode", strict=False)

    hp("stack_global_string_operands.pkl",
       asm(Op.STRING("os"), Op.STRING("system"), Op.STACK_GLOBAL(), Op.STRING(CMD), Op.TUPLE1(),
           Op.REDUCE(), Op.STOP()),
       "6.1#5", "refused", "unsafe", ["os.system"],
       "no PROTO; STACK_GLOBAL operands pushed by STRING (GHSA-9gvj); CPython accepts this")

    decoy = asm(
        Op.UNICODE("os"), Op.PUT(2), Op.POP(), Op.UNICODE("system"), Op.PUT(3), Op.POP(),
        Op.UNICODE("torch"), Op.PUT(0), Op.POP(), Op.UNICODE("LongStorage"), Op.PUT(1), Op.POP(),
        Op.GET(2), Op.GET(3), Op.STACK_GLOBAL(), Op.MARK(), Op.UNICODE("cat flag.txt"), Op.TUPLE(),
        Op.REDUCE(), Op.STOP(),
    )
    hp("memo_decoy.pkl", decoy, "6.1#6", "refused", "unsafe", ["os.system"],
       "no PROTO; allowlisted torch.LongStorage strings as memo decoys, STACK_GLOBAL of GET 2 · GET 3")
    hp("memo_decoy_trailing_ws.pkl", decoy + b"\n\n\t\t", "6.1#6", "refused", "unsafe", ["os.system"],
       "same plus trailing `\\n\\n\\t\\t` after STOP; the import comes first, so refused")

    hp("computed_operand_str.pkl",
       asm(Op.PROTO(4), Op.GLOBAL("builtins", "str"), Op.SHORT_BINUNICODE("os"), Op.TUPLE1(), Op.REDUCE(),
           Op.MEMOIZE(), Op.POP(), Op.BINGET(0), Op.SHORT_BINUNICODE("system"), Op.STACK_GLOBAL(),
           Op.SHORT_BINUNICODE(CMD), Op.TUPLE1(), Op.REDUCE(), Op.STOP()),
       "6.1#7", "refused", "unsafe", ["builtins.str", "system"],
       "STACK_GLOBAL module operand is the result of builtins.str('os') (picklescan default: 0 issues)")

    hp("dotted_pathlib_os_system.pkl",
       asm(Op.PROTO(4), sg("pathlib", "os.system"), Op.SHORT_BINUNICODE(CMD), Op.TUPLE1(), Op.REDUCE(), Op.STOP()),
       "6.1#8", "refused", "unsafe", ["os.system"], "dotted name through a module that imported os (GHSA-5j3x)")
    hp("dotted_eval_call.pkl",
       asm(Op.PROTO(5), Op.GLOBAL("builtins", "eval.__call__"), Op.SHORT_BINUNICODE(EXPR), Op.TUPLE1(),
           Op.REDUCE(), Op.STOP()),
       "6.1#8", "refused", "unsafe", ["eval.__call__"], "GLOBAL builtins eval.__call__ after PROTO 5 (modelscan sample)")
    hp("dotted_rebuild_tensor_globals.pkl",
       asm(Op.PROTO(4), Op.GLOBAL("torch._utils", "_rebuild_tensor_v2.__globals__.get"),
           Op.SHORT_BINUNICODE("sys"), Op.TUPLE1(), Op.REDUCE(), Op.STOP()),
       "6.1#8", "refused", "unsafe", ["_rebuild_tensor_v2.__globals__"],
       "allowlisted prefix with a dunder tail: torch._utils._rebuild_tensor_v2.__globals__.get('sys')")

    midstream = asm(Op.NONE(), Op.POP(), Op.PROTO(4), Op.GLOBAL("pathlib", "os.system"),
                    Op.SHORT_BINUNICODE(CMD), Op.TUPLE1(), Op.REDUCE(), Op.STOP())
    hp("midstream_proto_dotted.pkl", midstream, "6.1#9", "refused", "unsafe", ["os.system"],
       "NONE · POP · PROTO 4 enables the dotted name; the scanner should also report the misplaced PROTO")
    hp("midstream_proto_absent_dotted.pkl",
       asm(Op.NONE(), Op.POP(), Op.GLOBAL("pathlib", "os.system"), Op.SHORT_BINUNICODE(CMD), Op.TUPLE1(),
           Op.REDUCE(), Op.STOP()),
       "6.1#9", "refused", "unsafe", ["os.system"],
       "control: same without the PROTO (CPython would fail to resolve the dotted name; still refused)")
    hp("duplicate_proto.pkl", asm(Op.PROTO(2), Op.PROTO(4), os_system_p(4)[2:]), "6.1#9", "refused", "unsafe",
       ["posix.system"], "PROTO 2 · PROTO 4 · framed os.system (duplicate PROTO)")

    build_module = asm(
        Op.PROTO(4),
        sg("torch", "_utils"), Op.EMPTY_DICT(),
        Op.SHORT_BINUNICODE("_rebuild_tensor"), Op.SHORT_BINUNICODE("builtins"), Op.SETITEM(),
        Op.SHORT_BINUNICODE("_rebuild_parameter"), Op.SHORT_BINUNICODE("eval"), Op.SETITEM(),
        Op.BUILD(), Op.POP(),
        sg("torch._utils", "_rebuild_tensor"), Op.MEMOIZE(), Op.POP(),
        sg("torch._utils", "_rebuild_parameter"), Op.MEMOIZE(), Op.POP(),
        Op.BINGET(0), Op.BINGET(1), Op.STACK_GLOBAL(), Op.SHORT_BINUNICODE(EXPR), Op.TUPLE1(),
        Op.REDUCE(), Op.STOP(),
    )
    hp("build_on_module_rewrite.pkl", build_module, "6.1#10", "refused", "unsafe", ["torch._utils"],
       "sys_module_override shape: BUILD on the torch._utils module rewrites _rebuild_tensor / "
       "_rebuild_parameter into the strings 'builtins' / 'eval', which then feed STACK_GLOBAL "
       "(final import builtins.eval is never written literally)")

    numpy_gadget = asm(
        Op.PROTO(4),
        sg("numpy", "size"), Op.MEMOIZE(),
        Op.EMPTY_DICT(), Op.EMPTY_DICT(), Op.SHORT_BINUNICODE("shape"), sg("numpy", "__builtins__"),
        Op.SETITEM(), Op.TUPLE2(), Op.BUILD(), Op.POP(),
        Op.BINGET(0), Op.BINGET(0), Op.SHORT_BINUNICODE("eval"), Op.TUPLE2(), Op.REDUCE(),
        Op.SHORT_BINUNICODE(EXPR), Op.TUPLE1(), Op.REDUCE(), Op.STOP(),
    )
    hp("numpy_size_builtins_gadget.pkl", numpy_gadget, "6.1#11", "refused", "unsafe", ["numpy.__builtins__"],
       "modelscan#330: BUILD writes shape=__builtins__ onto numpy.size, numpy.size(numpy.size,'eval') "
       "returns eval")

    hp("resolver_pkgutil_resolve_name.pkl",
       asm(Op.PROTO(2), call("pkgutil", "resolve_name", "os:system"), lit((CMD,)), Op.REDUCE(), Op.STOP()),
       "6.1#12", "refused", "unsafe", ["pkgutil.resolve_name"], "pkgutil.resolve_name('os:system')('id') (GHSA-vvpj)")
    hp("resolver_pydoc_locate.pkl",
       asm(Op.PROTO(2), call("pydoc", "locate", "os.system"), lit((CMD,)), Op.REDUCE(), Op.STOP()),
       "6.1#12", "refused", "unsafe", ["pydoc.locate"], "pydoc.locate('os.system')('id')")
    hp("resolver_importlib_getattr_static.pkl",
       asm(Op.PROTO(2), Op.GLOBAL("inspect", "getattr_static"), call("importlib", "import_module", "os"),
           lit("system"), Op.TUPLE2(), Op.REDUCE(), lit((CMD,)), Op.REDUCE(), Op.STOP()),
       "6.1#12", "refused", "unsafe", ["importlib.import_module", "inspect.getattr_static"],
       "inspect.getattr_static(importlib.import_module('os'), 'system')('id') (huntr PoC: both only "
       "'Suspicious' in picklescan)")
    hp("resolver_import_getattr_p0.pkl",
       asm(Op.GLOBAL("builtins", "getattr"), Op.PUT(0), Op.POP(),
           Op.GLOBAL("builtins", "__import__"), Op.MARK(), Op.STRING("os"), Op.TUPLE(), Op.REDUCE(), Op.PUT(1),
           Op.POP(), Op.GET(0), Op.MARK(), Op.GET(1), Op.STRING("system"), Op.TUPLE(), Op.REDUCE(),
           Op.MARK(), Op.STRING(CMD), Op.TUPLE(), Op.REDUCE(), Op.STOP()),
       "6.1#12", "refused", "unsafe", ["builtins.__import__", "builtins.getattr"],
       "getattr(__import__('os'), 'system')('id') with text PUT/GET (GHSA-h4rm)")
    hp("resolver_operator_methodcaller.pkl",
       asm(Op.PROTO(2), call("_operator", "methodcaller", "system", CMD), call("builtins", "__import__", "os"),
           Op.TUPLE1(), Op.REDUCE(), Op.STOP()),
       "6.1#12", "refused", "unsafe", ["_operator.methodcaller"],
       "_operator.methodcaller('system','id')(__import__('os'))")
    hp("resolver_operator_attrgetter.pkl",
       asm(Op.PROTO(4), sg("operator", "attrgetter"), Op.MEMOIZE(), Op.SHORT_BINUNICODE("system"), Op.MEMOIZE(),
           Op.TUPLE1(), Op.REDUCE(), Op.MEMOIZE(), sg("builtins", "__import__"), Op.MEMOIZE(),
           Op.SHORT_BINUNICODE("os"), Op.TUPLE1(), Op.REDUCE(), Op.MEMOIZE(), Op.TUPLE1(), Op.REDUCE(),
           Op.MEMOIZE(), Op.SHORT_BINUNICODE(CMD2), Op.TUPLE1(), Op.REDUCE(), Op.STOP()),
       "6.1#12", "refused", "unsafe", ["operator.attrgetter"],
       "operator.attrgetter('system')(__import__('os'))('echo pwned'), every value memoized (malicious12 shape)")

    gadgets = [
        ("torch.utils.collect_env", "run", (CMD,), "modelscan#338"),
        ("torch._inductor.codecache", "compile_file", ("", "", ["sh", "-c", CMD]), ""),
        ("torch.jit.unsupported_tensor_ops", "execWrapper", ("print('pwned')",), ""),
        ("multiprocessing.util", "spawnv_passfds", (b"/bin/sh", [b"/bin/sh", b"-c", CMD.encode()], ()), ""),
        ("uuid", "_get_command_stdout", (CMD,), ""),
        ("runpy", "_run_code", (EXPR, {}), ""),
        ("ctypes", "CDLL", (None,), "loads the C runtime; getattr(...,'system') would follow"),
        ("types", "CodeType", (0, 0, 0, 0, 0, 0, b"", (), (), (), "", "", "", 0, b"", b"", (), ()),
         "argument values are placeholders; the point is the name"),
        ("numpy.testing._private.utils", "runstring", (EXPR, {}), ""),
        ("pip", "main", (["--version"],), ""),
        ("venv", "create", ("/tmp/safeformers-fixture-venv",), ""),
        ("logging", "FileHandler", ("/tmp/safeformers-fixture.log",), ""),
        ("_io", "FileIO", ("/etc/hostname",), ""),
        ("urllib.request", "urlopen", ("http://127.0.0.1:9/",), ""),
        ("ssl", "get_server_certificate", (("127.0.0.1", 9),), ""),
        ("webbrowser", "open", ("http://127.0.0.1:9/",), ""),
        ("functools", "partial", (EXPR,), "partial of a string: the import alone must be refused"),
        ("cProfile", "run", ("print('pwned')",), ""),
    ]
    for module, name, args, why in gadgets:
        fname = f"gadget_{module.replace('.', '_')}_{name}.pkl"
        hp(fname, p2_call(module, name, *args), "6.1#13", "refused", "unsafe", [f"{module}.{name}"],
           f"denylist-gap gadget {module}.{name}; loader refuses it like any global outside the allowlist"
           + (f" ({why})" if why else ""))
    hp("gadget__posixsubprocess_fork_exec_name_only.pkl",
       asm(Op.PROTO(2), Op.GLOBAL("_posixsubprocess", "fork_exec"), Op.POP(), Op.NONE(), Op.STOP()),
       "6.1#13", "refused", "unsafe", ["_posixsubprocess.fork_exec"], "import only, never called")
    import marshal
    code = compile("print('pwned')", "<fixture>", "exec")
    hp("gadget_marshal_functiontype.pkl",
       asm(Op.PROTO(4), sg("types", "FunctionType"), sg("marshal", "loads"),
           Op.SHORT_BINBYTES(marshal.dumps(code)), Op.TUPLE1(), Op.REDUCE(), Op.EMPTY_DICT(), Op.TUPLE2(),
           Op.REDUCE(), Op.EMPTY_TUPLE(), Op.REDUCE(), Op.STOP()),
       "6.1#13", "refused", "unsafe", ["marshal.loads", "types.FunctionType"],
       "types.FunctionType(marshal.loads(<code of print('pwned'), CPython 3.11>), {})() (GHSA-565g)")

    inner = os_system_p(2)
    for module, name in (("pickle", "loads"), ("_pickle", "loads"), ("torch.storage", "_load_from_bytes"),
                         ("torch.serialization", "load")):
        fname = f"nested_{module.replace('.', '_')}_{name.strip('_')}.pkl"
        hp(fname,
           asm(Op.PROTO(2), Op.GLOBAL(module, name), Op.BINBYTES(inner), Op.TUPLE1(), Op.REDUCE(), Op.POP(),
               Op.NONE(), Op.STOP()),
           "6.1#14", "refused", "unsafe", [f"{module}.{name}"],
           f"{module}.{name}(BINBYTES <os.system pickle>) then POP · NONE; a recursing scanner also "
           "reports posix.system")

    payload = asm(Op.PROTO(2), Op.GLOBAL("posix", "system"), Op.BINUNICODE(CMD), Op.TUPLE1(), Op.REDUCE(), Op.POP())
    hp("payload_then_0xff.pkl", payload + b"\xff", "6.1#15", "refused", "unsafe", ["posix.system"],
       "nullifAI shape: the call, then an invalid opcode byte. Refused assumes the loader rejects the "
       "GLOBAL when it meets it; a loader that parses everything first says invalid", strict=False)
    hp("payload_then_truncated_binunicode.pkl", payload + b"X\xf0\xff\xff\x7fabc", "6.1#15", "refused", "unsafe",
       ["posix.system"], "the call, then BINUNICODE claiming 0x7ffffff0 bytes with 3 present", strict=False)
    hp("exec_then_bogus_binunicode.pkl",
       asm(Op.PROTO(2), Op.GLOBAL("builtins", "exec"), Op.MARK(), b"X\x10\x00\x00\x10print"),
       "6.1#15", "refused", "unsafe", ["builtins.exec"],
       "broken_model.pkl shape: GLOBAL builtins exec · MARK · BINUNICODE with a bogus length, no STOP",
       strict=False)

    hp("keyerror_after_call.pkl",
       asm(payload, Op.BINGET(3), Op.SHORT_BINUNICODE("system"), Op.STACK_GLOBAL(), Op.STOP()),
       "6.1#16", "refused", "unsafe", ["posix.system"],
       "os.system call first, then BINGET 3 of an unset memo slot feeding STACK_GLOBAL")
    hp("memo_int_operand.pkl",
       asm(Op.PROTO(4), Op.BININT1(42), Op.MEMOIZE(), Op.POP(), Op.BINGET(0), Op.SHORT_BINUNICODE("system"),
           Op.STACK_GLOBAL(), Op.SHORT_BINUNICODE(CMD), Op.TUPLE1(), Op.REDUCE(), Op.STOP()),
       "6.1#16", "invalid", "unsafe", [],
       "type confusion: memoized int 42 as STACK_GLOBAL module operand; scanner must not crash and "
       "must report an unresolvable import; a loader may call the non-literal operand a refusal",
       strict=False)

    benign_od = asm(Op.PROTO(2), ordered_dict(), Op.STOP())
    hp("stacked_benign_then_malicious.pkl", benign_od + os_system_p(2), "6.1#17", "invalid", "unsafe",
       ["posix.system"], "empty OrderedDict pickle, then os.system pickle: pickle.load reads only the "
       "first; our loader rejects bytes after STOP; the scanner must scan both streams")
    hp("stacked_malicious_then_benign.pkl", os_system_p(2) + benign_od, "6.1#17", "refused", "unsafe",
       ["posix.system"], "os.system pickle first, then a benign one")

    hidden = asm(Op.GLOBAL("posix", "system"), Op.UNICODE(CMD2), Op.TUPLE1(), Op.REDUCE())
    hp("frame_straddle_binbytes.pkl", frame_straddle(hidden), "6.1#18", "invalid", ["unsafe", "invalid"], [],
       "fickling construction: FRAME 2 · BINBYTES whose length straddles the frame; pickletools sees "
       "one bytes object and no GLOBAL, CPython 3.11's C unpickler (file-object path) runs "
       "posix.system('echo pwned'). Both tools must reject the frame violation", strict=False)
    hp("frame_straddle_short_binunicode.pkl",
       asm(Op.PROTO(4), Op.FRAME(3), Op.SHORT_BINUNICODE("posix"), Op.SHORT_BINUNICODE("system"),
           Op.STACK_GLOBAL(), Op.STOP()),
       "6.1#18", "invalid", ["unsafe", "invalid"], [],
       "FRAME 3 but the first SHORT_BINUNICODE needs 7 bytes", strict=False)
    hp("frame_straddle_global.pkl",
       asm(Op.PROTO(4), Op.FRAME(8), Op.GLOBAL("posix", "system"), Op.STOP()),
       "6.1#18", "invalid", ["unsafe", "invalid"], [],
       "FRAME 8 ends inside GLOBAL's module line", strict=False)
    hp("frame_inside_frame.pkl",
       asm(Op.PROTO(4), Op.FRAME(12), Op.FRAME(2), Op.NONE(), Op.STOP()),
       "6.1#18", "invalid", ["unsafe", "invalid"], [], "a FRAME opened inside another frame", strict=False)
    hp("frame_beyond_eof.pkl", asm(Op.PROTO(4), Op.FRAME(1 << 40), Op.NONE(), Op.STOP()),
       "6.1#18", "invalid", "invalid", [], "FRAME length 2^40 on a 13-byte file")

    dup_bomb = asm(Op.PROTO(2), Op.MARK() * 9, Op.NONE(), (Op.DUP() * 8 + Op.LIST()) * 9, Op.STOP())
    hp("bomb_dup_9x9.pkl", dup_bomb, "6.1#19", "invalid", ["unsafe", "invalid"], [],
       "9 nested layers of 9 copies (DUP x8 · LIST): 9^9 = 387M leaf references from ~40 bytes; "
       "bounded time/memory required (and the result is not a state dict)")
    memo_bomb = Op.PROTO(2) + Op.EMPTY_LIST() + Op.BINPUT(0) + Op.POP()
    for layer in range(1, 11):
        memo_bomb += Op.MARK() + Op.BINGET(layer - 1) * 9 + Op.LIST() + Op.BINPUT(layer) + Op.POP()
    hp("bomb_memo_10x9.pkl", memo_bomb + Op.BINGET(10) + Op.STOP(), "6.1#19", "invalid", ["unsafe", "invalid"], [],
       "10 layers of MARK · BINGET(prev) x9 · LIST · BINPUT: 9^10 references via the memo")
    hp("bomb_self_append_60.pkl",
       asm(Op.PROTO(4), Op.EMPTY_LIST(), Op.MEMOIZE(), (Op.BINGET(0) + Op.APPEND()) * 60, Op.STOP()),
       "6.1#19", "invalid", ["unsafe", "invalid"], [],
       "1 MEMOIZE + 60 BINGET 0 · APPEND: a list containing itself 60 times (cycle: validators must "
       "not recurse forever); GET/PUT ratio 60")

    hp("cap_binunicode8_2gb.pkl", asm(Op.PROTO(4), Op.BINUNICODE8("abc", length=2**31)), "6.1#20",
       "invalid", "invalid", [], "BINUNICODE8 claims 2 GiB on a 14-byte file: no allocation by length")
    hp("cap_binbytes8_2gb.pkl", asm(Op.PROTO(4), Op.BINBYTES8(b"abc", length=2**31)), "6.1#20",
       "invalid", "invalid", [], "BINBYTES8 claims 2 GiB")
    hp("cap_long4_2gb.pkl", asm(Op.PROTO(2), Op.LONG4(b"\x01\x02", length=2**31 - 1)), "6.1#20",
       "invalid", "invalid", [], "LONG4 with a 2^31-1 byte length (2^31 does not fit its signed field)")
    hp("cap_nested_marks_100k.pkl", Op.PROTO(2) + Op.MARK() * 100_000 + Op.STOP(), "6.1#20",
       "invalid", "invalid", [], "100,000 MARKs then STOP with an empty stack")
    hp("cap_deep_tuple_100k.pkl", Op.PROTO(2) + Op.EMPTY_TUPLE() + Op.TUPLE1() * 100_000 + Op.STOP(),
       "6.1#20", "invalid", ["safe", "invalid"], [],
       "a tuple nested 100,000 deep (valid pickle): no recursion overflow in the loader, validators "
       "or the scanner's printer; not a state dict")
    hp("cap_deep_list_100k.pkl",
       Op.PROTO(2) + Op.MARK() * 50_000 + Op.LIST() * 50_000 + Op.STOP(),
       "6.1#20", "invalid", ["safe", "invalid"], [], "a list nested 50,000 deep via MARK x50k · LIST x50k")


# --------------------------------------------------------------------------------------------
# hostile/torch/
# --------------------------------------------------------------------------------------------


def ht(name: str, data: bytes, spec: str, load: str, scan, must=(), note: str = "", strict: bool = True,
       policy: str = "allow_pickle") -> str:
    rel = write(f"hostile/torch/{name}", data)
    record(rel, spec, load, scan, must_name=must, note=note, strict=strict, policy=policy)
    return rel


def make_hostile_torch() -> None:
    evil = os_system_p(2)
    evil_member_note = "data.pkl is the protocol-2 os.system pickle"

    # 6.1 samples wrapped as archive/data.pkl.
    for name, data, spec, load, scan, must, note, strict in PICKLES:
        if len(data) > 16 * 1024:
            continue
        stem = name.rsplit(".", 1)[0]
        ht(f"wrapped/{stem}.pt", torch_zip(data), spec, load, scan, must,
           f"hostile/pickle/{name} as archive/data.pkl of the baseline zip: {note}", strict)

    ht("root_weights_os_system.pt", torch_zip(evil, root="weights"), "6.2#23", "refused", "unsafe",
       ["posix.system"], f"archive root `weights/`; {evil_member_note}")
    ht("upper_data_pkl_only.pt", torch_zip(evil, pkl_name="DATA.PKL"), "6.2#23", "invalid", "unsafe",
       ["posix.system"], "the only pickle member is archive/DATA.PKL (PyTorch's case-insensitive lookup "
       "reads it as data.pkl); exact-case lookup finds no data.pkl")
    members = torch_members(BASE_PKL)
    members.insert(0, Member("archive/DATA.PKL", evil))
    ht("upper_and_lower_data_pkl.pt", build_zip(members), "6.2#23", "invalid", "unsafe", ["posix.system"],
       "archive/DATA.PKL (os.system) and archive/data.pkl (benign): case-insensitive collision, which "
       "one PyTorch reads is undefined")

    members = torch_members(BASE_PKL)
    members.insert(0, Member("archive/data.pkl", evil))
    ht("duplicate_data_pkl.pt", build_zip(members), "6.2#24", "invalid", "unsafe", ["posix.system"],
       "two archive/data.pkl entries, malicious first, benign second (Python's zipfile picks the last: "
       "picklescan reported 0 issues)")

    members = torch_members(evil)
    members[0].local_name = "archive/datap.kl"
    ht("local_central_name_mismatch.pt", build_zip(members), "6.2#25", "invalid", "unsafe", ["posix.system"],
       "central directory says archive/data.pkl, local header says archive/datap.kl (GHSA-7q5r); "
       f"{evil_member_note}; zip validation comes before unpickling")
    zip_bytes = bytearray(torch_zip(evil))
    # Local header of data.pkl is at 0: make its compressed/uncompressed sizes disagree with the CD.
    struct.pack_into("<II", zip_bytes, 18, len(evil) + 64, len(evil) + 64)
    ht("local_central_size_mismatch.pt", bytes(zip_bytes), "6.2#25", "invalid", "unsafe", ["posix.system"],
       f"local header of data.pkl declares 64 bytes more than the central directory; {evil_member_note}")

    for bit in (0x1, 0x20, 0x40):
        members = torch_members(evil)
        members[0].flags = bit
        ht(f"flag_0x{bit:x}.pt", build_zip(members), "6.2#26", "invalid", "unsafe", ["posix.system"],
           f"general-purpose flag 0x{bit:x} on data.pkl in both headers (GHSA-w8jq: Python's zipfile "
           f"refuses, PyTorch loads); the bytes are plaintext; {evil_member_note}")

    members = torch_members(evil)
    members[0].crc = zlib.crc32(evil) ^ 0xFFFFFFFF
    ht("crc_mismatch.pt", build_zip(members), "6.2#27", "invalid", "unsafe", ["posix.system"],
       f"data.pkl CRC wrong in both headers (torch never checks CRCs); {evil_member_note}")

    bomb_size = 4 * 1024 * 1024
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    deflated = comp.compress(bytes(bomb_size)) + comp.flush()
    members = torch_members(BASE_PKL)
    members[4] = Member("archive/data/0", deflated, method=8, uncompressed_size=bomb_size)
    data = build_zip(members)
    check_zip_readable(data)
    ht("deflate_bomb.pt", data, "6.2#28", "invalid", ["safe", "invalid"], [],
       f"archive/data/0 is DEFLATE: {len(deflated)} bytes inflating to 4 MiB of zeros while the "
       "storage declares 12 float32 (48 bytes); the loader must refuse non-stored members or stop at "
       "the declared size")

    write_raw = ht("pytorch_model.bin", evil, "6.2#29", "refused", "unsafe", ["posix.system"],
                   "raw (non-zip) os.system pickle named like an HF checkpoint (GHSA-jgw4 / CVE-2025-10155)")
    del write_raw
    ht("torch_zip_named.pkl", torch_zip(BASE_PKL), "6.2#29", "ok", "safe", [],
       "the benign baseline zip named .pkl: formats are decided by content")
    ht("protocol0_named.pt", os_system_p(0), "6.2#29", "refused", "unsafe", ["posix.system"],
       "protocol-0 os.system pickle (no \\x80 magic) named .pt")
    png = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    png += struct.pack(">I", zlib.crc32(png[12:29]))
    idat = zlib.compress(b"\x00\x00")
    png += struct.pack(">I", len(idat)) + b"IDAT" + idat + struct.pack(">I", zlib.crc32(b"IDAT" + idat))
    png += struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
    ht("png_named.pt", png, "6.2#29", "invalid", "invalid", [],
       "a 1x1 grey PNG named .pt (picklescan's bad_pytorch.pt): a clean 'not a model' error")

    base_zip = torch_zip(BASE_PKL)
    ht("pickle_plus_zip.pkl", evil + base_zip, "6.2#30", "refused", "unsafe", ["posix.system"],
       "os.system pickle with the benign baseline zip appended (EOCD at the end, PK not at 0): a zip "
       "to zipfile.is_zipfile, a pickle to torch (picklescan: 0 issues for .pkl)")
    ht("pickle_plus_zip.bin", evil + base_zip, "6.2#30", "refused", "unsafe", ["posix.system"],
       "same bytes named .bin")
    ht("zip_plus_pickle.pt", base_zip + evil, "6.2#30", "invalid", "unsafe", ["posix.system"],
       "benign baseline zip with the os.system pickle appended after the EOCD: loader rejects trailing "
       "data; scanner reports both layers")
    ht("junk_before_first_header.pt", b"JUNKJUNKJUNKJUNK" + base_zip, "6.2#30", "invalid", "invalid", [],
       "16 bytes before the first local header (offsets not adjusted; Python's zipfile still opens it)")

    gz = io.BytesIO()
    with gzip.GzipFile(fileobj=gz, mode="wb", mtime=0, filename="") as f:
        f.write(torch_zip(evil))
    ht("gzip_wrapped.pt.gz", gz.getvalue(), "6.2#31", "invalid", ["unsafe", "invalid"], [],
       "gzip of a torch zip whose data.pkl is os.system: loader says unsupported container; the scanner "
       "either unpacks (unsafe) or reports an unscanned container (invalid), never safe")
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        blob = torch_zip(evil)
        info = tarfile.TarInfo("model.pt")
        info.size, info.mtime, info.mode = len(blob), 0, 0o644
        tf.addfile(info, io.BytesIO(blob))
    ht("tar_wrapped.pt", tar.getvalue(), "6.2#31", "invalid", ["unsafe", "invalid"], [],
       "tar holding a torch zip whose data.pkl is os.system (named .pt); unsupported container")

    def mismatch(name: str, pkl: bytes, note: str, storages=None, scan=("safe", "invalid")) -> None:
        ht(f"storage_{name}.pt", torch_zip(pkl, storages=storages), "6.2#32", "invalid", list(scan), [], note)

    mismatch("numel_too_large", state_dict_pkl([("weight", rebuild_v2(pid=storage_pid(numel=100), size=lit((10, 10)), stride=lit((10, 1))))]),
             "persistent id says 100 float32 (400 bytes), data/0 holds 48")
    mismatch("numel_too_small", state_dict_pkl([("weight", rebuild_v2(pid=storage_pid(numel=6), size=lit((2, 3)), stride=lit((3, 1))))]),
             "persistent id says 6 float32 (24 bytes), data/0 holds 48 (must be exact)")
    mismatch("missing_record", state_dict_pkl([("weight", rebuild_v2(pid=storage_pid(key="7")))]),
             "key '7' has no archive/data/7")
    mismatch("key_traversal", state_dict_pkl([("weight", rebuild_v2(pid=storage_pid(key="../0")))]),
             "key '../0': archive/data/../0 names archive/0 after normalising; only data/0 exists")
    mismatch("key_trailing_space", state_dict_pkl([("weight", rebuild_v2(pid=storage_pid(key="0 ")))]),
             "key '0 ' (not a decimal integer; data/0 exists)")
    mismatch("view_past_end", state_dict_pkl([("weight", rebuild_v2(offset=lit(10)))]),
             "storage_offset 10 + (3-1)*4 + (4-1)*1 = 21 >= 12 elements")
    mismatch("stride_overflow", state_dict_pkl([("weight", rebuild_v2(size=lit((2**62, 4)), stride=lit((4, 1))))]),
             "size (2^62, 4), stride (4, 1): the extent overflows u64")
    mismatch("two_dtypes_one_key", state_dict_pkl([
        ("weight", rebuild_v2()),
        ("as_long", rebuild_v2(pid=storage_pid("LongStorage", numel=6), size=lit((6,)), stride=lit((1,)))),
    ]), "key '0' referenced as FloatStorage (12) and as LongStorage (6)")

    pid7 = asm(Op.MARK(), Op.BINUNICODE("storage"), Op.GLOBAL("torch", "FloatStorage"), lit("0"), lit("cpu"),
               lit(12), lit(None), lit(None), Op.TUPLE(), Op.BINPERSID())
    ht("pid_7_tuple.pt", torch_zip(state_dict_pkl([("weight", rebuild_v2(pid=pid7))])), "6.2#33", "invalid",
       ["safe", "invalid"], [], "persistent id ('storage', FloatStorage, '0', 'cpu', 12, None, None)")
    ht("pid_string.pt", torch_zip(state_dict_pkl([("weight", rebuild_v2(pid=lit("0") + Op.BINPERSID()))])),
       "6.2#33", "invalid", ["safe", "invalid"], [], "persistent id is the string '0'", strict=False)
    ht("pid_location_traversal.pt",
       torch_zip(state_dict_pkl([("weight", rebuild_v2(pid=storage_pid(location="../../x")))])),
       "6.2#33", "invalid", ["safe", "invalid"], [],
       "location '../../x' (not cpu/cuda[:n]/mps/meta); rejecting is our choice, ignoring it safely "
       "would also meet the spec", strict=False)
    pid_module = asm(Op.MARK(), Op.BINUNICODE("module"), Op.GLOBAL("torch.nn.modules.linear", "Linear"),
                     lit("source.py"), lit("class Linear: ..."), Op.TUPLE(), Op.BINPERSID())
    ht("pid_module.pt", torch_zip(state_dict_pkl([("linear", pid_module)])), "6.2#33", "refused", "unsafe",
       ["torch.nn.modules.linear.Linear"], "legacy ('module', <class>, source file, source) persistent id")

    members = torch_members(BASE_PKL)
    members[1:1] = [Member("archive/constants.pkl", asm(Op.PROTO(2), Op.EMPTY_TUPLE(), Op.STOP())),
                    Member("archive/code/__torch__.py", b"def forward(self):\n    return 0\n")]
    ht("torchscript_markers.pt", build_zip(members), "6.2#34", "refused", "unsafe", ["code/__torch__.py"],
       "benign data.pkl next to constants.pkl and code/__torch__.py (CVE-2025-32434 shape): refuse, "
       "never dispatch to a TorchScript loader")

    make_legacy()

    members = torch_members(BASE_PKL)
    members.append(Member("archive/extra.pkl", evil))
    ht("member_extra_pkl.pt", build_zip(members), "6.2#36", "invalid", "unsafe", ["posix.system"],
       "unreferenced archive/extra.pkl holding os.system: torch never reads it, the scanner must; "
       "safeformers refuses any extra pickle member as possible TorchScript (policy), so the kind "
       "is not strict", strict=False)
    members = torch_members(BASE_PKL)
    members.append(Member("archive/data/5", BASE_FLOATS))
    ht("member_unreferenced_storage.pt", build_zip(members), "6.2#36", "invalid", ["safe", "invalid"], [],
       "archive/data/5 exists but no persistent id names it; rejecting is our choice (research 2.1 "
       "allows ignoring it in a documented way)", strict=False)
    members = torch_members(BASE_PKL)
    members.append(Member("archive/link", b"/etc/passwd", create_system=3, external_attr=(0o120777 << 16)))
    ht("member_symlink.pt", build_zip(members), "6.2#36", "invalid", ["safe", "invalid"], [],
       "unix symlink entry archive/link -> /etc/passwd")
    members = torch_members(BASE_PKL)
    members.append(Member("archive/data/", b"", external_attr=0x10 | (0o40755 << 16), create_system=3))
    ht("member_directory.pt", build_zip(members), "6.2#36", "invalid", ["safe", "invalid"], [],
       "directory entry archive/data/")
    members = torch_members(BASE_PKL)
    members.append(Member("archive/../x", b"x"))
    ht("member_dotdot.pt", build_zip(members), "6.2#36", "invalid", ["safe", "invalid"], [],
       "member archive/../x")
    members = torch_members(BASE_PKL)
    members.append(Member("/etc/x", b"x"))
    ht("member_absolute.pt", build_zip(members), "6.2#36", "invalid", ["safe", "invalid"], [],
       "member /etc/x (outside the archive root, absolute)")

    # 6.1#21: operand confusion in allowed calls (needs a storage persistent id, so torch zips).
    def confused(name: str, tensor: bytes, note: str, scan=("safe", "invalid"), whole: bytes | None = None):
        pkl = whole if whole is not None else state_dict_pkl([("weight", tensor)])
        ht(f"rebuild_{name}.pt", torch_zip(pkl), "6.1#21", "invalid", list(scan), [], note)

    confused("float_offset", rebuild_v2(offset=lit(0.0)), "storage_offset is the float 0.0")
    confused("negative_stride", rebuild_v2(size=lit((3, 4)), stride=lit((4, -1))), "stride (4, -1)")
    confused("str_in_size", rebuild_v2(size=lit(("3", 4))), "size ('3', 4)")
    confused("arity_5", rebuild_v2(drop_last=1), "5 arguments (backward_hooks missing)")
    confused("arity_8", rebuild_v2(extra=lit(None) + lit(None)), "8 arguments")
    confused("requires_grad_int", rebuild_v2(requires_grad=lit(1)), "requires_grad is the int 1")
    confused("hooks_non_empty", rebuild_v2(hooks=ordered_dict([(lit(0), lit("hook"))])),
             "backward_hooks OrderedDict holds {0: 'hook'}")
    confused("size_is_list", rebuild_v2(size=lit([3, 4])), "size is a list, not a tuple")
    confused("ordered_dict_args", b"", "the state-dict OrderedDict REDUCE gets ([('a', 1)],)",
             whole=asm(Op.PROTO(2), Op.GLOBAL("collections", "OrderedDict"), lit(([("a", 1)],)), Op.REDUCE(),
                       Op.MARK(), lit("weight"), rebuild_v2(), Op.SETITEMS(), Op.STOP()))
    confused("setitem_on_list", b"", "SETITEM applied to a list (CVE-2026-24747 class)",
             scan=("unsafe", "invalid"),
             whole=asm(Op.PROTO(2), Op.EMPTY_LIST(), lit(0), rebuild_v2(), Op.SETITEM(), Op.STOP()))
    confused("setitem_on_tuple", b"", "SETITEM applied to a tuple",
             scan=("unsafe", "invalid"),
             whole=asm(Op.PROTO(2), lit((1, 2)), lit(0), rebuild_v2(), Op.SETITEM(), Op.STOP()))
    confused("append_on_dict", b"", "APPEND applied to an OrderedDict",
             scan=("unsafe", "invalid"),
             whole=asm(Op.PROTO(2), ordered_dict(), rebuild_v2(), Op.APPEND(), Op.STOP()))
    confused("setitems_on_tensor", b"", "SETITEMS applied to the tensor REDUCE result",
             scan=("unsafe", "invalid"),
             whole=asm(Op.PROTO(2), rebuild_v2(), Op.MARK(), lit("a"), lit(1), Op.SETITEMS(), Op.STOP()))


def legacy_file(magic: bytes, version: bytes, sys_info: bytes, numel_header: int | None = None) -> bytes:
    """A legacy stacked-pickle checkpoint of one 3x4 float tensor, from its five pickles."""
    key = "140000000000000"
    pid = asm(Op.MARK(), Op.BINUNICODE("storage"), Op.GLOBAL("torch", "FloatStorage"), lit(key), lit("cpu"),
              lit(12), lit(None), Op.TUPLE(), Op.BINPERSID())
    obj = state_dict_pkl([("weight", rebuild_v2(pid=pid))])
    keys = asm(Op.PROTO(2), lit([key]), Op.STOP())
    storage = struct.pack("<q", 12 if numel_header is None else numel_header) + BASE_FLOATS
    return magic + version + sys_info + obj + keys + storage


LEGACY_MAGIC = asm(Op.PROTO(2), Op.LONG1(0x1950A86A20F9469CFC6C), Op.STOP())
LEGACY_VERSION = asm(Op.PROTO(2), Op.BININT2(1001), Op.STOP())
LEGACY_SYS_INFO = asm(Op.PROTO(2), lit({"protocol_version": 1001, "little_endian": True,
                                        "type_sizes": {"short": 2, "int": 4, "long": 4}}), Op.STOP())


def make_legacy() -> None:
    good = legacy_file(LEGACY_MAGIC, LEGACY_VERSION, LEGACY_SYS_INFO)
    path = write("benign/legacy_handbuilt.pt", good)
    check_benign_torch(OUT / path, {"weight": t((3, 4))})
    record(path, "6.2#35", "ok", "safe", policy="allow_pickle", twin="benign/handbuilt_baseline.safetensors",
           note="legacy format written by this script (fixed storage key); the baseline of the "
                "legacy_* hostile samples. Checked with torch.load")
    ht("legacy_magic_eval.pt",
       legacy_file(p2_call("builtins", "eval", "0x1950A86A20F9469CFC6C"), LEGACY_VERSION, LEGACY_SYS_INFO),
       "6.2#35", "refused", "unsafe", ["builtins.eval"],
       "first pickle computes the magic with builtins.eval (pytorch_magic_bypass.pt, GHSA-97f8)")
    ht("legacy_sys_info_os_system.pt", legacy_file(LEGACY_MAGIC, LEGACY_VERSION, os_system_p(2)),
       "6.2#35", "refused", "unsafe", ["posix.system"], "literal magic, but the sys_info pickle is os.system")
    ht("legacy_protocol_1000.pt",
       legacy_file(LEGACY_MAGIC, asm(Op.PROTO(2), Op.BININT2(1000), Op.STOP()), LEGACY_SYS_INFO),
       "6.2#35", "invalid", ["safe", "invalid"], [], "protocol version 1000 instead of 1001")
    ht("legacy_storage_count_too_large.pt", legacy_file(LEGACY_MAGIC, LEGACY_VERSION, LEGACY_SYS_INFO, 1 << 40),
       "6.2#35", "invalid", ["safe", "invalid"], [],
       "the storage's 8-byte element count says 2^40, 48 bytes follow")
    ht("legacy_storage_truncated.pt", legacy_file(LEGACY_MAGIC, LEGACY_VERSION, LEGACY_SYS_INFO)[:-20],
       "6.2#35", "invalid", ["safe", "invalid"], [], "the storage bytes stop 20 bytes short")

    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for name, blob in (("sys_info", LEGACY_SYS_INFO), ("pickle", asm(Op.PROTO(2), lit({}), Op.STOP())),
                           ("storages", asm(Op.PROTO(2), lit(0), Op.STOP())),
                           ("tensors", asm(Op.PROTO(2), lit(0), Op.STOP()))):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(blob), 0, 0o644
            tf.addfile(info, io.BytesIO(blob))
    ht("legacy_tar_format.pt", tar.getvalue(), "6.2#35", "invalid", ["safe", "invalid"], [],
       "PyTorch <= 0.1 tar checkpoint (sys_info, pickle, storages, tensors; empty model): unsupported")


# --------------------------------------------------------------------------------------------
# hostile/safetensors/
# --------------------------------------------------------------------------------------------


def hs(name: str, data: bytes, spec: str, note: str, load: str = "invalid", scan="invalid",
       strict: bool = True) -> None:
    rel = write(f"hostile/safetensors/{name}.safetensors", data)
    record(rel, spec, load, scan, note=note, strict=strict)


def one(dtype="F32", shape=(3,), offsets=(0, 12), extra: str = "") -> str:
    compact = {"separators": (",", ":")}
    return (f'"dtype":"{dtype}","shape":{json.dumps(list(shape), **compact)},'
            f'"data_offsets":{json.dumps(list(offsets), **compact)}{extra}')


def make_hostile_safetensors() -> None:
    d12 = pattern(12)
    valid_hdr = "{\"a\":{" + one() + "}}"

    hs("header_len_gt_file", st_file(valid_hdr, d12, length=1000), "6.3#37", "N = 1000 on a ~50-byte file")
    hs("header_len_100000001", st_file(valid_hdr, d12, length=100_000_001), "6.3#37", "N = 100,000,001 (cap + 1)")
    hs("header_len_u64_max", st_file(valid_hdr, d12, length=2**64 - 1), "6.3#37", "N = 2^64-1")
    hs("header_len_wraps_32bit", st_file(valid_hdr, d12, length=2**32 - 4), "6.3#37",
       "N = 2^32-4: 8+N wraps on 32-bit targets")
    hs("shorter_than_8_bytes", b"\x10\x00\x00\x00\x00", "6.3#37", "5-byte file")
    hs("empty_file", b"", "6.3#37", "0-byte file")
    hs("header_len_zero", struct.pack("<Q", 0), "6.3#37", "N = 0: no JSON at all")

    a, b = "{" + one(offsets=(0, 12)) + "}", "{" + one(offsets=(12, 24)) + "}"
    hs("dup_identical", st_file('{"a":' + a + ',"a":' + a + "}", d12), "6.3#38",
       "the same entry twice, byte-identical (reference: accepted)")
    hs("dup_f32_then_i32", st_file('{"a":' + a + ',"a":{' + one("I32") + "}}", d12), "6.3#38",
       "same name, same range, F32 then I32 (reference: last wins, silently)")
    hs("dup_different_ranges", st_file('{"a":' + a + ',"a":' + b + "}", pattern(24)), "6.3#38",
       "same name, two ranges")
    hs("dup_metadata", st_file('{"__metadata__":{"k":"1"},"__metadata__":{"k":"2"},"a":' + a + "}", d12),
       "6.3#38", "__metadata__ twice")

    hs("overlap", st_file('{"a":{' + one(offsets=(0, 12)) + '},"b":{' + one(offsets=(8, 20)) + "}}", pattern(20)),
       "6.3#39", "b starts inside a")
    hs("gap", st_file('{"a":{' + one(offsets=(0, 12)) + '},"b":{' + one(offsets=(16, 28)) + "}}", pattern(28)),
       "6.3#39", "4 unreferenced bytes between a and b")
    hs("reversed_range", st_file('{"a":{' + one(offsets=(12, 0)) + "}}", d12), "6.3#39", "data_offsets [12, 0]")
    hs("past_eof", st_file(valid_hdr, pattern(8)), "6.3#39", "a needs bytes [0,12), the file has 8")
    hs("trailing_zip", st_file(valid_hdr, d12) + torch_zip(BASE_PKL), "6.3#39",
       "a valid file with the benign torch zip appended (polyglot)")
    hs("trailing_pickle", st_file(valid_hdr, d12) + os_system_p(2), "6.3#39",
       "a valid file with an os.system pickle appended", scan="invalid")
    hs("overlap_all_same", st_file('{"a":{' + one() + '},"b":{' + one() + "}}", d12), "6.3#39",
       "two tensors over the same 12 bytes")

    hs("shape_overflow_i32", st_file('{"a":{' + one("I32", (2, 2**64 - 2), (0, 8)) + "}}", pattern(8)),
       "6.3#40", "shape [2, 2^64-2] I32: element count overflows u64")
    hs("shape_overflow_bits", st_file('{"a":{' + one("I32", (2, 2**63 - 1), (0, 8)) + "}}", pattern(8)),
       "6.3#40", "shape [2, 2^63-1] I32: bytes overflow u64")
    hs("shape_u64_max", st_file('{"a":{' + one("U8", (2**64 - 1,), (0, 8)) + "}}", pattern(8)),
       "6.3#40", "shape [2^64-1] U8")
    hs("shape_2p32_squared", st_file('{"a":{' + one("U8", (2**32, 2**32), (0, 8)) + "}}", pattern(8)),
       "6.3#40", "shape [2^32, 2^32] U8")
    hs("shape_zero_2p32_2p32", st_file('{"a":{' + one("F32", (0, 2**32, 2**32), (0, 0)) + "}}"), "6.3#40",
       "shape [0, 2^32, 2^32] F32: 0 elements. The reference crate accepts the header, "
       "safetensors.torch then fails with 'Stride calculation overflowed'; the row stride 2^64 does "
       "not fit u64, so our checked stride code rejects it (and must not panic)")
    rank = 100_000
    hs("rank_100000", st_file('{"a":{' + one("U8", (1,) * rank, (0, 1)) + "}}", b"\x01"), "6.3#40",
       "rank 100,000, all dims 1 (reference: accepted; we cap rank)")
    hs("f4_odd_count", st_file('{"a":{' + one("F4", (3,), (0, 2)) + "}}", pattern(2)), "6.3#40",
       "F4 with 3 elements = 12 bits, not a whole number of bytes")
    hs("f6_three", st_file('{"a":{' + one("F6_E2M3", (3,), (0, 3)) + "}}", pattern(3)), "6.3#40",
       "F6_E2M3 with 3 elements = 18 bits")
    hs("c64_odd_bytes", st_file('{"a":{' + one("C64", (1,), (0, 7)) + "}}", pattern(7)), "6.3#40",
       "C64 [1] needs 8 bytes, range holds 7")
    hs("size_mismatch", st_file('{"a":{' + one("F32", (3,), (0, 16)) + "}}", pattern(16)), "6.3#40",
       "F32 [3] over 16 bytes")

    hs("bom_prefix", st_file("\ufeff" + valid_hdr, d12), "6.3#41", "UTF-8 BOM before `{`")
    hs("nul_padding", st_file(valid_hdr.encode() + b"\x00" * 7, d12, pad=False), "6.3#41",
       "JSON followed by NUL padding instead of spaces")
    hs("trailing_non_whitespace", st_file(valid_hdr + "x", d12), "6.3#41", "`}x`")
    hs("leading_whitespace", st_file(" \t\r\n" + valid_hdr, d12), "6.3#41",
       "leading JSON whitespace: the reference accepts it (since #686); we require the header "
       "object to start at byte 8, as every writer produces", strict=True)
    hs("header_array", st_file("[]", b""), "6.3#41", "header is `[]`")
    hs("metadata_number", st_file('{"__metadata__":{"k":1},"a":{' + one() + "}}", d12), "6.3#41",
       "__metadata__ value is a number")
    hs("metadata_object", st_file('{"__metadata__":{"k":{"x":"y"}},"a":{' + one() + "}}", d12), "6.3#41",
       "__metadata__ value is an object")
    hs("unknown_tensor_field", st_file('{"a":{' + one(extra=',"endian":"big"') + "}}", d12), "6.3#41",
       "extra field in a tensor entry (reference: ignored; we reject)")
    hs("dtype_lowercase", st_file('{"a":{' + one("f32") + "}}", d12), "6.3#41", "dtype `f32`")
    hs("dtype_f128", st_file('{"a":{' + one("F128") + "}}", d12), "6.3#41", "dtype `F128`")
    hs("offset_float", st_file('{"a":{' + one(offsets=(0.0, 12.0)) + "}}", d12), "6.3#41", "data_offsets [0.0, 12.0]")
    hs("offset_negative", st_file('{"a":{' + one(offsets=(-12, 0)) + "}}", d12), "6.3#41", "data_offsets [-12, 0]")
    hs("shape_negative", st_file('{"a":{' + one(shape=(-3,)) + "}}", d12), "6.3#41", "shape [-3]")
    hs("offsets_three", st_file('{"a":{' + one(offsets=(0, 12, 12)) + "}}", d12), "6.3#41",
       "data_offsets with 3 elements")
    hs("nesting_5000", st_file('{"a":{' + one(extra=',"x":' + "[" * 5000 + "]" * 5000) + "}}", d12), "6.3#41",
       "5,000-deep array in an extra field (recursion)")
    hs("invalid_utf8", st_file(b'{"a\xff":{' + one().encode() + b"}}", d12), "6.3#41", "tensor name has byte 0xFF")
    hs("lone_surrogate", st_file('{"a\\ud800":{' + one() + "}}", d12), "6.3#41", "name with escape \\ud800")

    hs("name_nul", st_file('{"a\\u0000b":{' + one() + "}}", d12), "6.3#42",
       "tensor name contains NUL (escaped); reference accepts, we reject control characters")
    hs("name_traversal", st_file('{"../../x":{' + one() + "}}", d12), "6.3#42",
       "tensor name `../../x`: refused (names with a `..` segment are rejected, issue #2)", strict=True)
    hs("name_empty", st_file('{"":{' + one() + "}}", d12), "6.3#42",
       "empty tensor name (reference: accepted); we reject", strict=True)
    count = 20_000
    many = ",".join(f'"{i:x}":{{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}' for i in range(count))
    hs("many_tensors_same_range", st_file("{" + many + "}", pattern(4)), "6.3#42",
       f"{count:,} tensors all at [0,4] (the repo's abuse_attempt shape, scaled down to ~1 MB): fast "
       "rejection by the contiguity rule")

    zl = {"zlib_789c": 0x9C78, "zlib_7820": 0x2078}
    for name, size in zl.items():
        hdr = valid_hdr.encode()
        hdr += b" " * (size - len(hdr))
        data = struct.pack("<Q", size) + hdr + d12
        hs(name, data, "6.3#44", f"valid file whose first bytes are {data[0]:02x} {data[1]:02x} (a zlib "
           "header): must route as safetensors", load="ok", scan="safe")
    # Misaligned: header length 9 mod 8 puts the F32 data at an odd file offset.
    hdr = valid_hdr.encode()
    hdr += b" " * ((8 - len(hdr) % 8) % 8 + 1)
    hs("misaligned_f32", struct.pack("<Q", len(hdr)) + hdr + struct.pack("<3f", 1.0, 2.0, 3.0), "6.3#41",
       f"header length {len(hdr)} (odd) so F32 data starts at odd offset {8 + len(hdr)}: read as the "
       "reference reads it, the misaligned tensor copied into aligned memory (inspect says so)",
       load="ok", scan="safe", strict=True)


# --------------------------------------------------------------------------------------------
# hostile/shards/
# --------------------------------------------------------------------------------------------


def make_hostile_shards() -> None:
    def shard(tensors: dict) -> bytes:
        from safetensors.torch import save
        return save(tensors, metadata={"format": "pt"})

    def folder(name: str, weight_map, shards: dict[str, bytes], load: str, scan, note: str, *,
               strict: bool = True, raw_index: str | None = None, policy: str | None = None) -> None:
        base = OUT / "hostile" / "shards" / name
        base.mkdir(parents=True, exist_ok=True)
        for fname, blob in shards.items():
            (base / fname).write_bytes(blob)
        index = raw_index if raw_index is not None else json.dumps(
            {"metadata": {"total_size": sum(len(v) for v in shards.values())}, "weight_map": weight_map}, indent=2)
        (base / "model.safetensors.index.json").write_text(index + "\n")
        record(f"hostile/shards/{name}", "6.3#43", load, scan, note=note, strict=strict, policy=policy)

    s1 = shard({"a": t((2, 2))})
    s2 = shard({"b": t((3,), start=1)})
    n1, n2 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
    folder("valid", {"a": n1, "b": n2}, {n1: s1, n2: s2}, "ok", "safe",
           "control: two shards, each tensor in exactly one")
    folder("traversal", {"a": n1, "b": "../../etc/passwd"}, {n1: s1, n2: s2}, "invalid", ["unsafe", "invalid"],
           "weight_map points at ../../etc/passwd")
    folder("absolute", {"a": n1, "b": "/etc/passwd"}, {n1: s1, n2: s2}, "invalid", ["unsafe", "invalid"],
           "weight_map points at /etc/passwd")
    folder("url", {"a": n1, "b": "https://example.invalid/model.safetensors"}, {n1: s1, n2: s2}, "invalid",
           ["unsafe", "invalid"], "weight_map holds a URL")
    folder("backslash", {"a": n1, "b": "..\\" + n2}, {n1: s1, n2: s2}, "invalid", ["unsafe", "invalid"],
           "weight_map holds a backslash path `..\\model-00002-of-00002.safetensors`")
    folder("subdir", {"a": n1, "b": "sub/" + n2}, {n1: s1, n2: s2},
           "invalid", ["unsafe", "invalid"], "weight_map holds `sub/<shard>` (not a plain sibling file name)")
    folder("missing_tensor", {"a": n1, "b": n2, "c": n2}, {n1: s1, n2: s2}, "invalid", ["safe", "invalid"],
           "index lists `c` in shard 2, which does not hold it")
    both = shard({"b": t((3,), start=1), "a": t((2, 2), start=9)})
    folder("duplicate_tensor", {"a": n1, "b": n2}, {n1: s1, n2: both}, "invalid", ["unsafe", "invalid"],
           "tensor `a` is in both shards (with different values); the index names shard 1")
    folder("duplicate_key_in_index", None, {n1: s1, n2: s2}, "invalid", ["unsafe", "invalid"],
           "weight_map JSON has key `a` twice (shard 1 then shard 2)",
           raw_index='{"metadata": {}, "weight_map": {"a": "%s", "b": "%s", "a": "%s"}}' % (n1, n2, n2))

    p1, p2 = "pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin"
    blobs = {}
    for fname, tensors in ((p1, {"a": t((2, 2))}), (p2, {"b": t((3,), start=1)})):
        buf = io.BytesIO()
        torch.save(tensors, buf)
        blobs[fname] = buf.getvalue()
    folder("pickle_shards_in_safetensors_index", {"a": p1, "b": p2}, blobs, "refused", ["safe", "invalid"],
           "model.safetensors.index.json whose shards are torch zips (benign): refused under the default "
           "safetensors-only policy (ShardFormatRefused)", policy="default")


# --------------------------------------------------------------------------------------------


def main() -> None:
    if sys.version_info < (3, 10):
        raise SystemExit("needs Python >= 3.10")
    # Everything is regenerated except the hand-written README.md and .gitattributes.
    for sub in ("benign", "hostile", "MANIFEST.json"):
        path = OUT / sub
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    OUT.mkdir(parents=True, exist_ok=True)
    make_benign()
    make_hostile_pickle()
    make_hostile_torch()
    make_hostile_safetensors()
    make_hostile_shards()

    listed = {e["path"] for e in MANIFEST}
    assert len(listed) == len(MANIFEST), "duplicate manifest paths"
    for path in OUT.rglob("*"):
        if path.is_file():
            rel = path.relative_to(OUT).as_posix()
            if rel in ("README.md", ".gitattributes", "MANIFEST.json"):
                continue
            assert rel in listed or any(rel.startswith(p + "/") for p in listed), f"unlisted: {rel}"

    manifest = {
        "about": "Expected behaviour of every fixture; see README.md for the schema.",
        "generator": "scripts/make_weight_fixtures.py",
        "entries": sorted(MANIFEST, key=lambda e: e["path"]),
    }
    (OUT / "MANIFEST.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"{len(MANIFEST)} manifest entries, {total:,} bytes under {OUT.relative_to(REPO)}")


if __name__ == "__main__":
    main()
