//! The restricted unpickler against benign torch output and the hostile shapes of the research
//! notes' held-out suite (section 6.1). Streams are assembled opcode by opcode (`pickle_asm`);
//! the `pickle_fixtures/*.pkl` files are `data.pkl` members written by real `torch.save`
//! (`pickle_fixtures/gen.py`, torch 2.x, benign tensors only).

#![allow(
    clippy::panic,
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing
)]

mod pickle_asm;

use pickle_asm::{Asm, call, storage, tensor_v2};
use safeformers_weights::Dtype;
use safeformers_weights::pickle::{
    DecodeErrorKind, Limits, PersistentIds, PickleError, UnpickleOptions, Unpickled, Value,
    unpickle,
};

fn opts(persistent_ids: PersistentIds) -> UnpickleOptions {
    UnpickleOptions {
        persistent_ids,
        limits: Limits::default(),
    }
}

fn plain(bytes: &[u8]) -> Result<Unpickled, PickleError> {
    unpickle(bytes, &opts(PersistentIds::Forbidden))
}

fn zip(bytes: &[u8]) -> Result<Unpickled, PickleError> {
    unpickle(bytes, &opts(PersistentIds::ZipStorage))
}

/// Asserts a policy refusal naming `name`.
fn refused(result: Result<Unpickled, PickleError>, name: &str) -> PickleError {
    let err = result.expect_err("must be refused");
    assert!(err.is_policy_refusal(), "not a policy refusal: {err}");
    assert!(
        err.to_string().contains(name),
        "`{err}` does not name {name}"
    );
    err
}

fn not_allowed(result: Result<Unpickled, PickleError>, module: &str, name: &str) {
    match result {
        Err(PickleError::GlobalNotAllowed {
            module: m, name: n, ..
        }) => {
            assert_eq!((m.as_str(), n.as_str()), (module, name));
        }
        other => panic!("expected GlobalNotAllowed({module}.{name}), got {other:?}"),
    }
}

fn malformed(result: Result<Unpickled, PickleError>) -> PickleError {
    let err = result.expect_err("must be an error");
    assert!(!err.is_policy_refusal(), "unexpected policy refusal: {err}");
    err
}

fn dict_get<'a>(value: &'a Value, key: &str) -> &'a Value {
    let Value::Dict(items) = value else {
        panic!("not a dict: {value:?}")
    };
    items
        .iter()
        .find(|(k, _)| *k == Value::Str(key.to_string()))
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no key {key}"))
}

fn tensor(value: &Value) -> &safeformers_weights::pickle::TensorRecipe {
    match value {
        Value::Tensor(t) => t,
        other => panic!("not a tensor: {other:?}"),
    }
}

// ---------------------------------------------------------------- benign controls (6.1 #22)

#[test]
fn minimal_protocol_2_data_pkl() {
    let p = tensor_v2(Asm::new().proto(2), "0", 3, 4).stop().bytes();
    let out = zip(&p).unwrap();
    assert_eq!(out.consumed, p.len());
    let t = tensor(&out.value);
    assert_eq!(t.storage.key, "0");
    assert_eq!(t.storage.dtype, Dtype::F32);
    assert_eq!(t.storage.numel, 12);
    assert_eq!(t.storage.location, "cpu");
    assert_eq!(t.shape, vec![3, 4]);
    assert_eq!(t.stride, vec![4, 1]);
    assert_eq!(t.storage_offset, 0);
}

fn check_real_state_dict(bytes: &[u8]) {
    let out = zip(bytes).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.consumed, bytes.len());
    let value = &out.value;
    let Value::Dict(items) = value else {
        panic!("not a dict")
    };
    let keys: Vec<_> = items.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(
        keys,
        [
            "l.weight", "l.bias", "shared", "f8", "bf", "empty", "u16", "p", "t"
        ]
        .iter()
        .map(|k| Value::Str(k.to_string()))
        .collect::<Vec<_>>()
    );
    let w = tensor(dict_get(value, "l.weight"));
    assert_eq!(
        (w.dtype, w.shape.as_slice(), w.stride.as_slice()),
        (Dtype::F32, &[3, 2][..], &[2, 1][..])
    );
    let shared = tensor(dict_get(value, "shared"));
    assert_eq!(shared.storage.key, w.storage.key);
    assert_eq!(shared.storage_offset, 2);
    let f8 = tensor(dict_get(value, "f8"));
    assert_eq!((f8.dtype, f8.storage.dtype), (Dtype::F8E4M3, Dtype::U8));
    assert_eq!(tensor(dict_get(value, "bf")).dtype, Dtype::BF16);
    assert_eq!(tensor(dict_get(value, "empty")).shape, vec![0, 3]);
    assert_eq!(tensor(dict_get(value, "u16")).dtype, Dtype::U16);
    assert_eq!(tensor(dict_get(value, "p")).shape, vec![2]);
    let t = tensor(dict_get(value, "t"));
    assert_eq!(
        (t.shape.as_slice(), t.stride.as_slice()),
        (&[2, 4][..], &[1, 2][..])
    );
}

#[test]
fn real_torch_save_protocol_2() {
    check_real_state_dict(include_bytes!("pickle_fixtures/state_dict_p2.pkl"));
}

#[test]
fn real_torch_save_protocol_4_framed() {
    check_real_state_dict(include_bytes!("pickle_fixtures/state_dict_p4.pkl"));
}

#[test]
fn real_torch_save_protocol_5_framed() {
    check_real_state_dict(include_bytes!("pickle_fixtures/state_dict_p5.pkl"));
}

#[test]
fn real_python_protocol_0_and_1() {
    for bytes in [
        &include_bytes!("pickle_fixtures/list_p0.pkl")[..],
        &include_bytes!("pickle_fixtures/list_p1.pkl")[..],
    ] {
        let out = plain(bytes).unwrap();
        let Value::List(items) = out.value else {
            panic!()
        };
        assert_eq!(items.len(), 8);
        assert_eq!(items[0], Value::Str("a".into()));
        assert_eq!(items[3], Value::Int(1));
        assert_eq!(items[4], Value::Float(2.5));
        assert_eq!(items[6], Value::Bool(true));
        assert_eq!(
            items[7],
            Value::Dict(vec![(
                Value::Str("k".into()),
                Value::Tuple(vec![Value::Int(1), Value::Int(2)])
            )])
        );
    }
}

#[test]
fn ordered_dict_with_metadata_build_and_shared_storage_via_memo() {
    // OrderedDict() with two tensors over storage "0" (the second through BINGET of the
    // memoized persistent-id tuple), then BUILD {"_metadata": OrderedDict()}.
    let asm = Asm::new()
        .proto(2)
        .global("collections", "OrderedDict")
        .binput(0)
        .empty_tuple()
        .reduce()
        .mark()
        .binunicode("a")
        .global("torch._utils", "_rebuild_tensor_v2")
        .binput(1)
        .mark()
        .mark()
        .binunicode("storage")
        .global("torch", "HalfStorage")
        .binunicode("0")
        .binunicode("cpu")
        .binint1(8)
        .tuple()
        .binput(2)
        .binpersid()
        .binint1(0)
        .binint1(4)
        .tuple1()
        .binint1(1)
        .tuple1()
        .newfalse()
        .binget(0)
        .empty_tuple()
        .reduce()
        .tuple()
        .reduce()
        .binunicode("b")
        .binget(1)
        .mark()
        .binget(2)
        .binpersid()
        .binint1(4)
        .binint1(4)
        .tuple1()
        .binint1(1)
        .tuple1()
        .newfalse()
        .binget(0)
        .empty_tuple()
        .reduce()
        .tuple()
        .reduce()
        .setitems()
        .empty_dict()
        .binunicode("_metadata")
        .binget(0)
        .empty_tuple()
        .reduce()
        .setitem()
        .build()
        .stop()
        .bytes();
    let out = zip(&asm).unwrap();
    let a = tensor(dict_get(&out.value, "a"));
    let b = tensor(dict_get(&out.value, "b"));
    assert_eq!(a.storage, b.storage);
    assert_eq!((a.dtype, b.storage_offset), (Dtype::F16, 4));
}

#[test]
fn consumed_stops_at_stop_for_stacked_pickles() {
    let first = Asm::new().proto(2).binint2(1001).stop();
    let both = first
        .clone()
        .then(Asm::new().proto(2).empty_list().stop())
        .bytes();
    let out = plain(&both).unwrap();
    assert_eq!(out.value, Value::Int(1001));
    assert_eq!(out.consumed, first.0.len());
    let second = plain(&both[out.consumed..]).unwrap();
    assert_eq!(second.value, Value::List(vec![]));
}

#[test]
fn protocol_2_bytes_via_codecs_encode() {
    let p = Asm::new()
        .proto(2)
        .global("_codecs", "encode")
        .binunicode("\u{ff}a")
        .binunicode("latin1")
        .tuple2()
        .reduce()
        .stop()
        .bytes();
    assert_eq!(plain(&p).unwrap().value, Value::Bytes(vec![0xff, b'a']));
}

#[test]
fn legacy_persistent_id_with_view() {
    let p = Asm::new()
        .proto(2)
        .global("torch._utils", "_rebuild_tensor_v2")
        .mark()
        .mark()
        .binunicode("storage")
        .global("torch", "FloatStorage")
        .binunicode("140483767857136")
        .binunicode("cpu")
        .binint1(10)
        .binunicode("140483767857999")
        .binint1(2)
        .binint1(4)
        .tuple3()
        .tuple()
        .binpersid()
        .binint1(0)
        .binint1(4)
        .tuple1()
        .binint1(1)
        .tuple1()
        .newfalse()
        .global("collections", "OrderedDict")
        .empty_tuple()
        .reduce()
        .tuple()
        .reduce()
        .stop()
        .bytes();
    let out = unpickle(&p, &opts(PersistentIds::LegacyStorage)).unwrap();
    let t = tensor(&out.value);
    let view = t.storage.legacy_view.as_ref().unwrap();
    assert_eq!((view.offset, view.size), (2, 4));
    // The same stream in zip mode has the wrong arity.
    assert!(matches!(zip(&p), Err(PickleError::BadPersistentId { .. })));
}

// ------------------------------------------------------------------ 6.1 #1 classic REDUCE

#[test]
fn classic_reduce_all_protocols() {
    for (module, name) in [
        ("posix", "system"),
        ("nt", "system"),
        ("os", "system"),
        ("builtins", "eval"),
        ("__builtin__", "eval"),
    ] {
        // protocol 0: text
        let p0 = Asm::new()
            .global(module, name)
            .mark()
            .unicode("id")
            .tuple()
            .reduce()
            .stop()
            .bytes();
        not_allowed(plain(&p0), module, name);
        for proto in [2u8, 3] {
            let p = call(Asm::new().proto(proto), module, name).stop().bytes();
            not_allowed(plain(&p), module, name);
            not_allowed(zip(&p), module, name);
        }
        for proto in [4u8, 5] {
            let p = Asm::new()
                .proto(proto)
                .sglobal(module, name)
                .short_binunicode("id")
                .tuple1()
                .reduce()
                .stop()
                .bytes();
            let err = refused(plain(&p), &format!("{module}.{name}"));
            assert!(matches!(err, PickleError::GlobalNotAllowed { .. }));
        }
    }
}

// ------------------------------------------------------------------- 6.1 #2-#4 call opcodes

#[test]
fn inst_is_refused() {
    let p = Asm::new()
        .mark()
        .string("id")
        .inst("os", "system")
        .stop()
        .bytes();
    refused(plain(&p), "os.system");
    // Even an allowlisted global may not be called through INST.
    let p = Asm::new()
        .mark()
        .inst("collections", "OrderedDict")
        .stop()
        .bytes();
    let err = refused(plain(&p), "collections.OrderedDict");
    assert!(matches!(
        err,
        PickleError::ForbiddenOpcode { opcode: "INST", .. }
    ));
}

#[test]
fn obj_then_pop_is_refused() {
    let p = Asm::new()
        .proto(4)
        .mark()
        .sglobal("smtplib", "SMTP")
        .short_binunicode("127.0.0.1")
        .obj()
        .pop()
        .none()
        .stop()
        .bytes();
    not_allowed(plain(&p), "smtplib", "SMTP");
    // OBJ of an allowlisted class: the opcode itself is refused.
    let p = Asm::new()
        .proto(4)
        .mark()
        .sglobal("collections", "OrderedDict")
        .obj()
        .stop()
        .bytes();
    let err = refused(plain(&p), "OBJ");
    assert!(matches!(
        err,
        PickleError::ForbiddenOpcode { opcode: "OBJ", .. }
    ));
}

#[test]
fn newobj_newobj_ex_ext_are_refused() {
    let p = Asm::new()
        .proto(4)
        .sglobal("subprocess", "Popen")
        .empty_tuple()
        .newobj()
        .stop()
        .bytes();
    not_allowed(plain(&p), "subprocess", "Popen");
    for op in [0x81u8, 0x92] {
        let asm = Asm::new()
            .proto(4)
            .sglobal("collections", "OrderedDict")
            .empty_tuple();
        let asm = if op == 0x92 {
            asm.empty_dict().newobj_ex()
        } else {
            asm.newobj()
        };
        let err = refused(plain(&asm.stop().bytes()), "collections.OrderedDict");
        assert!(matches!(err, PickleError::ForbiddenOpcode { .. }));
    }
    let p = Asm::new().proto(2).ext1(1).stop().bytes();
    refused(plain(&p), "extension code 1");
}

// -------------------------------------------------------------- 6.1 #5-#8 import tricks

#[test]
fn stack_global_with_string_operands_no_proto() {
    let p = Asm::new()
        .string("os")
        .string("system")
        .stack_global()
        .string("ls")
        .tuple1()
        .reduce()
        .stop()
        .bytes();
    not_allowed(plain(&p), "os", "system");
}

fn memo_decoys() -> Asm {
    Asm::new()
        .unicode("os")
        .put(2)
        .pop()
        .unicode("system")
        .put(3)
        .pop()
        .unicode("torch")
        .put(0)
        .pop()
        .unicode("LongStorage")
        .put(1)
        .pop()
        .get(2)
        .get(3)
        .stack_global()
        .mark()
        .unicode("cat flag.txt")
        .tuple()
        .reduce()
        .stop()
}

#[test]
fn memo_decoys_resolve_to_the_real_import() {
    not_allowed(plain(&memo_decoys().bytes()), "os", "system");
    not_allowed(
        plain(&memo_decoys().raw(b"\n\n\t\t").bytes()),
        "os",
        "system",
    );
}

#[test]
fn computed_operand_via_benign_callable() {
    let p = Asm::new()
        .proto(4)
        .global("builtins", "str")
        .short_binunicode("os")
        .tuple1()
        .reduce()
        .memoize()
        .pop()
        .binget(0)
        .short_binunicode("system")
        .stack_global()
        .short_binunicode("id")
        .tuple1()
        .reduce()
        .stop()
        .bytes();
    not_allowed(plain(&p), "builtins", "str");
    // An int in the memo used as an operand (type confusion).
    let p = Asm::new()
        .proto(4)
        .binint(42)
        .memoize()
        .pop()
        .binget(0)
        .short_binunicode("system")
        .stack_global()
        .stop()
        .bytes();
    let err = refused(plain(&p), "int");
    assert!(matches!(
        err,
        PickleError::NonLiteralGlobal {
            operand: "module",
            found: "int",
            ..
        }
    ));
    // A REDUCE result (bytes from _codecs.encode) as the module operand.
    let p = Asm::new()
        .proto(4)
        .global("_codecs", "encode")
        .short_binunicode("torch")
        .short_binunicode("latin1")
        .tuple2()
        .reduce()
        .short_binunicode("FloatStorage")
        .stack_global()
        .stop()
        .bytes();
    refused(plain(&p), "bytes");
}

#[test]
fn dotted_and_dunder_names() {
    let p = Asm::new()
        .proto(4)
        .sglobal("pathlib", "os.system")
        .short_binunicode("id")
        .tuple1()
        .reduce()
        .stop()
        .bytes();
    not_allowed(plain(&p), "pathlib", "os.system");
    let p = Asm::new()
        .proto(5)
        .global("builtins", "eval.__call__")
        .stop()
        .bytes();
    not_allowed(plain(&p), "builtins", "eval.__call__");
    let p = Asm::new()
        .proto(2)
        .global("torch._utils", "_rebuild_tensor_v2.__globals__")
        .stop()
        .bytes();
    not_allowed(zip(&p), "torch._utils", "_rebuild_tensor_v2.__globals__");
    let p = Asm::new().proto(2).global("torch", "_utils").stop().bytes();
    not_allowed(zip(&p), "torch", "_utils");
}

// ------------------------------------------------------------------- 6.1 #9 mid-stream PROTO

#[test]
fn mid_stream_proto_is_an_error() {
    let p = Asm::new().none().pop().proto(4).none().stop().bytes();
    assert!(matches!(
        plain(&p),
        Err(PickleError::MisplacedProto { offset: 2 })
    ));
    let p = Asm::new().proto(2).proto(2).none().stop().bytes();
    assert!(matches!(
        plain(&p),
        Err(PickleError::MisplacedProto { offset: 2 })
    ));
    let p = Asm::new().proto(6).none().stop().bytes();
    assert!(matches!(
        plain(&p),
        Err(PickleError::UnsupportedProtocol { protocol: 6, .. })
    ));
}

// ------------------------------------------------------------------- 6.1 #10-#11 BUILD gadgets

#[test]
fn build_on_module_is_refused() {
    let p = Asm::new()
        .proto(4)
        .sglobal("torch", "_utils")
        .empty_dict()
        .short_binunicode("_rebuild_tensor")
        .short_binunicode("builtins")
        .setitem()
        .build()
        .stop()
        .bytes();
    not_allowed(zip(&p), "torch", "_utils");
    // BUILD on an allowlisted callable (attribute write on a function).
    let p = Asm::new()
        .proto(2)
        .global("torch._utils", "_rebuild_tensor_v2")
        .empty_dict()
        .binunicode("shape")
        .none()
        .setitem()
        .build()
        .stop()
        .bytes();
    let err = refused(zip(&p), "torch._utils._rebuild_tensor_v2");
    assert!(matches!(
        err,
        PickleError::ForbiddenOpcode {
            opcode: "BUILD",
            ..
        }
    ));
    // BUILD on an OrderedDict with anything but _metadata.
    let p = Asm::new()
        .proto(2)
        .global("collections", "OrderedDict")
        .empty_tuple()
        .reduce()
        .empty_dict()
        .binunicode("__class__")
        .none()
        .setitem()
        .build()
        .stop()
        .bytes();
    refused(zip(&p), "BUILD");
    // BUILD on a plain dict.
    let p = Asm::new()
        .proto(2)
        .empty_dict()
        .empty_dict()
        .build()
        .stop()
        .bytes();
    refused(zip(&p), "BUILD");
}

#[test]
fn numpy_gadget_is_refused() {
    let p = Asm::new().proto(4).sglobal("numpy", "size").stop().bytes();
    not_allowed(plain(&p), "numpy", "size");
    let p = Asm::new()
        .proto(4)
        .sglobal("numpy", "__builtins__")
        .stop()
        .bytes();
    not_allowed(plain(&p), "numpy", "__builtins__");
}

// ------------------------------------------------------------ 6.1 #12-#14 gadgets and nesting

#[test]
fn every_gadget_is_refused_by_the_allowlist() {
    for (module, name) in [
        ("pkgutil", "resolve_name"),
        ("pydoc", "locate"),
        ("importlib", "import_module"),
        ("inspect", "getattr_static"),
        ("builtins", "__import__"),
        ("builtins", "getattr"),
        ("_operator", "methodcaller"),
        ("operator", "attrgetter"),
        ("torch.utils.collect_env", "run"),
        ("torch._inductor.codecache", "compile_file"),
        ("torch.jit.unsupported_tensor_ops", "execWrapper"),
        ("multiprocessing.util", "spawnv_passfds"),
        ("uuid", "_get_command_stdout"),
        ("_posixsubprocess", "fork_exec"),
        ("ctypes", "CDLL"),
        ("marshal", "loads"),
        ("types", "FunctionType"),
        ("types", "CodeType"),
        ("numpy.testing._private.utils", "runstring"),
        ("pip", "main"),
        ("venv", "create"),
        ("logging", "FileHandler"),
        ("_io", "FileIO"),
        ("urllib.request", "urlopen"),
        ("ssl", "get_server_certificate"),
        ("pickle", "loads"),
        ("_pickle", "loads"),
        ("torch.storage", "_load_from_bytes"),
        ("torch.serialization", "load"),
        ("torch", "load"),
        ("torch.nn.parameter", "Parameter"),
    ] {
        let p = call(Asm::new().proto(2), module, name).stop().bytes();
        not_allowed(zip(&p), module, name);
    }
}

#[test]
fn nested_pickle_loader_is_refused() {
    let inner = call(Asm::new().proto(2), "os", "system").stop().bytes();
    let p = Asm::new()
        .proto(2)
        .global("pickle", "loads")
        .binbytes(&inner)
        .tuple1()
        .reduce()
        .pop()
        .none()
        .stop()
        .bytes();
    not_allowed(plain(&p), "pickle", "loads");
}

// ------------------------------------------------------------------- 6.1 #15-#16 parse errors

#[test]
fn payload_then_garbage() {
    let payload = call(Asm::new().proto(2), "os", "system").pop();
    // The global is refused before the garbage is reached.
    not_allowed(plain(&payload.clone().raw(&[0xff]).bytes()), "os", "system");
    // A benign prefix followed by an invalid opcode: a decode error at its offset.
    let p = Asm::new().proto(2).none().pop().raw(&[0xff]).bytes();
    match plain(&p) {
        Err(PickleError::Decode(e)) => {
            assert_eq!(e.offset, 4);
            assert_eq!(e.kind, DecodeErrorKind::UnknownOpcode(0xff));
        }
        other => panic!("{other:?}"),
    }
    let p = Asm::new().proto(2).mark().raw(b"X\xff\xff\xff\x7f").bytes();
    match plain(&p) {
        Err(PickleError::Decode(e)) => {
            assert_eq!(e.offset, 3);
            assert!(matches!(e.kind, DecodeErrorKind::Truncated { .. }));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn invalid_memo_index_and_missing_stop() {
    let p = Asm::new().proto(2).binget(3).stop().bytes();
    assert!(matches!(
        plain(&p),
        Err(PickleError::MemoMissing {
            offset: 2,
            index: 3
        })
    ));
    assert!(matches!(
        plain(&Asm::new().proto(2).none().bytes()),
        Err(PickleError::MissingStop { offset: 3 })
    ));
    assert!(matches!(
        plain(b""),
        Err(PickleError::MissingStop { offset: 0 })
    ));
}

// --------------------------------------------------------------------- 6.1 #18 FRAME straddle

/// fickling's construction: a 2-byte FRAME whose BINBYTES swallows a hidden call.
fn frame_straddle() -> Vec<u8> {
    let hidden = call(Asm::new(), "os", "system").mark().bytes();
    let mut hidden_padded = hidden.clone();
    hidden_padded.resize(261, b'N');
    Asm::new()
        .proto(5)
        .none()
        .pop()
        .mark()
        .frame(2)
        .raw(b"B")
        .raw(&0x107u32.to_le_bytes())
        .raw(b"ab")
        .raw(&hidden_padded)
        .pop_mark()
        .stop()
        .bytes()
}

#[test]
fn frame_violations_are_errors() {
    let err = malformed(plain(&frame_straddle()));
    assert!(
        matches!(&err, PickleError::Decode(e) if e.is_frame_violation()),
        "{err}"
    );
    // Each opcode kind crossing a frame end.
    for op in [
        &b"\x8c\x05hello"[..],
        b"cos\nsystem\n",
        b"Vabc\n",
        b"J\x01\x02\x03\x04",
    ] {
        let p = Asm::new().proto(4).frame(2).raw(op).stop().bytes();
        match plain(&p) {
            Err(PickleError::Decode(e)) => {
                assert!(
                    matches!(e.kind, DecodeErrorKind::FrameStraddle { .. }),
                    "{e}"
                );
                assert_eq!(e.offset, 11);
            }
            other => panic!("{other:?}"),
        }
    }
    // FRAME inside a frame.
    let p = Asm::new()
        .proto(4)
        .frame(20)
        .frame(2)
        .none()
        .stop()
        .raw(&[0; 10])
        .bytes();
    assert!(matches!(
        plain(&p),
        Err(PickleError::Decode(e)) if matches!(e.kind, DecodeErrorKind::NestedFrame { .. })
    ));
    // Frame longer than the input.
    let p = Asm::new().proto(4).frame(1000).none().stop().bytes();
    assert!(matches!(
        plain(&p),
        Err(PickleError::Decode(e)) if matches!(e.kind, DecodeErrorKind::FrameTooLong { .. })
    ));
    // A well-formed framed stream with an unframed tail is fine.
    let p = Asm::new().proto(4).frame(1).none().stop().bytes();
    assert_eq!(plain(&p).unwrap().value, Value::None);
}

// ------------------------------------------------------------------ 6.1 #19-#20 bombs and caps

#[test]
fn dup_expansion_bomb_is_bounded() {
    // 9 open MARKs, then 9 layers of DUP×8 · LIST over one empty list: ~10^9 elements if
    // copied.
    let mut asm = Asm::new().proto(2);
    for _ in 0..9 {
        asm = asm.mark();
    }
    asm = asm.empty_list();
    for _ in 0..9 {
        for _ in 0..8 {
            asm = asm.dup();
        }
        asm = asm.list();
    }
    let p = asm.stop().bytes();
    let err = malformed(plain(&p));
    assert!(matches!(err, PickleError::LimitExceeded { .. }), "{err}");
}

#[test]
fn memo_expansion_bomb_is_bounded() {
    // 10 layers of BINPUT/BINGET×9.
    let mut asm = Asm::new().proto(2).empty_list().binput(0).pop();
    for layer in 0..10u8 {
        asm = asm.mark();
        for _ in 0..9 {
            asm = asm.binget(layer);
        }
        asm = asm.list().binput(layer + 1);
        if layer < 9 {
            asm = asm.pop();
        }
    }
    let p = asm.stop().bytes();
    assert!(matches!(plain(&p), Err(PickleError::LimitExceeded { .. })));
}

#[test]
fn self_append_cycle_is_bounded() {
    let mut asm = Asm::new().proto(2).empty_list().binput(0);
    for _ in 0..60 {
        asm = asm.binget(0).append();
    }
    let p = asm.stop().bytes();
    assert!(matches!(plain(&p), Err(PickleError::LimitExceeded { .. })));
}

#[test]
fn huge_length_fields_are_errors_not_allocations() {
    for code in [0x8du8, 0x8e] {
        let mut p = vec![0x80, 4, code];
        p.extend_from_slice(&(2u64 << 30).to_le_bytes());
        p.resize(1024, b'N');
        match plain(&p) {
            Err(PickleError::Decode(e)) => {
                assert!(
                    matches!(e.kind, DecodeErrorKind::Truncated { needed, .. } if needed == 2 << 30)
                )
            }
            other => panic!("{other:?}"),
        }
    }
    let mut p = vec![0x80, 2, 0x8b];
    p.extend_from_slice(&(i32::MAX).to_le_bytes());
    p.resize(1024, 0);
    assert!(matches!(plain(&p), Err(PickleError::Decode(_))));
}

#[test]
fn deep_marks_memo_and_tuples_hit_limits() {
    let p = Asm::new().raw(&vec![b'('; 1_000_000]).stop().bytes();
    assert!(matches!(
        plain(&p),
        Err(PickleError::LimitExceeded {
            limit: "open MARKs",
            ..
        })
    ));
    let mut asm = Asm::new().proto(2).none();
    for i in 0..200_000u32 {
        asm = asm.long_binput(i);
    }
    let options = UnpickleOptions {
        persistent_ids: PersistentIds::Forbidden,
        limits: Limits {
            max_memo: 100_000,
            ..Limits::default()
        },
    };
    assert!(matches!(
        unpickle(&asm.stop().bytes(), &options),
        Err(PickleError::LimitExceeded {
            limit: "memo entries",
            ..
        })
    ));
    let mut p = vec![0x80, 2, b'N'];
    p.extend(std::iter::repeat_n(0x85u8, 1_000_000));
    p.push(b'.');
    assert!(matches!(plain(&p), Err(PickleError::LimitExceeded { .. })));
    // Deep nesting of lists (flat in the VM, nested in the output).
    let mut p = vec![0x80, 2];
    p.extend(std::iter::repeat_n(b']', 100_000));
    p.extend(std::iter::repeat_n(b'a', 99_999));
    p.push(b'.');
    assert!(matches!(plain(&p), Err(PickleError::LimitExceeded { .. })));
    // max_ops
    let options = UnpickleOptions {
        persistent_ids: PersistentIds::Forbidden,
        limits: Limits {
            max_ops: 10,
            ..Limits::default()
        },
    };
    let p = Asm::new()
        .proto(2)
        .raw(&[b'N', b'0'].repeat(10))
        .none()
        .stop()
        .bytes();
    assert!(matches!(
        unpickle(&p, &options),
        Err(PickleError::LimitExceeded {
            limit: "opcodes",
            ..
        })
    ));
}

// ------------------------------------------------------------- 6.1 #21 operand/type confusion

fn rebuild_with(args: Asm, global: &str) -> Vec<u8> {
    let asm = Asm::new().proto(2).global("torch._utils", global).mark();
    storage(asm, "FloatStorage", "0", 12)
        .then(args)
        .tuple()
        .reduce()
        .stop()
        .bytes()
}

fn hooks() -> Asm {
    Asm::new()
        .global("collections", "OrderedDict")
        .empty_tuple()
        .reduce()
}

fn good_tail() -> Asm {
    Asm::new()
        .binint1(0)
        .binint1(3)
        .binint1(4)
        .tuple2()
        .binint1(4)
        .binint1(1)
        .tuple2()
        .newfalse()
        .then(hooks())
}

/// Argument tuples `_rebuild_tensor_v2` must refuse as malformed, each with what is wrong.
fn malformed_rebuild_arguments() -> Vec<(&'static str, Asm)> {
    vec![
        (
            "float offset",
            Asm::new()
                .binfloat(0.0)
                .binint1(3)
                .tuple1()
                .binint1(1)
                .tuple1()
                .newfalse()
                .then(hooks()),
        ),
        (
            "negative stride",
            Asm::new()
                .binint1(0)
                .binint1(3)
                .tuple1()
                .binint(-1)
                .tuple1()
                .newfalse()
                .then(hooks()),
        ),
        (
            "string in size",
            Asm::new()
                .binint1(0)
                .binunicode("3")
                .tuple1()
                .binint1(1)
                .tuple1()
                .newfalse()
                .then(hooks()),
        ),
        (
            "5 args",
            Asm::new()
                .binint1(0)
                .binint1(3)
                .tuple1()
                .binint1(1)
                .tuple1(),
        ),
        ("8 args", good_tail().empty_dict().none()),
        (
            "requires_grad not bool",
            Asm::new()
                .binint1(0)
                .binint1(3)
                .tuple1()
                .binint1(1)
                .tuple1()
                .binint1(0)
                .then(hooks()),
        ),
        (
            "non-empty hooks",
            Asm::new()
                .binint1(0)
                .binint1(3)
                .tuple1()
                .binint1(1)
                .tuple1()
                .newfalse()
                .empty_dict()
                .binint1(1)
                .none()
                .setitem(),
        ),
        (
            "view past the storage",
            Asm::new()
                .binint1(1)
                .binint1(3)
                .binint1(4)
                .tuple2()
                .binint1(4)
                .binint1(1)
                .tuple2()
                .newfalse()
                .then(hooks()),
        ),
        (
            "size/stride rank mismatch",
            Asm::new()
                .binint1(0)
                .binint1(3)
                .tuple1()
                .binint1(4)
                .binint1(1)
                .tuple2()
                .newfalse()
                .then(hooks()),
        ),
        (
            "overflowing shape",
            Asm::new()
                .binint1(0)
                .long1(&[0, 0, 0, 0, 0, 0, 0, 0x40])
                .binint1(4)
                .tuple2()
                .binint1(4)
                .binint1(1)
                .tuple2()
                .newfalse()
                .then(hooks()),
        ),
    ]
}

#[test]
fn rebuild_tensor_argument_schema() {
    assert!(zip(&rebuild_with(good_tail(), "_rebuild_tensor_v2")).is_ok());
    for (what, args) in malformed_rebuild_arguments() {
        let err = malformed(zip(&rebuild_with(args, "_rebuild_tensor_v2")));
        assert!(
            matches!(err, PickleError::BadArguments { .. }),
            "{what}: {err}"
        );
    }
    // Metadata with conj/neg bits cannot be represented.
    let p = rebuild_with(
        good_tail()
            .empty_dict()
            .binunicode("neg")
            .newtrue()
            .setitem(),
        "_rebuild_tensor_v2",
    );
    assert!(matches!(zip(&p), Err(PickleError::Unsupported { .. })));
    // Empty metadata is fine.
    assert!(
        zip(&rebuild_with(
            good_tail().empty_dict(),
            "_rebuild_tensor_v2"
        ))
        .is_ok()
    );
}

#[test]
fn rebuild_tensor_v3_and_old_and_parameters() {
    let p = rebuild_with(
        good_tail().global("torch", "bfloat16"),
        "_rebuild_tensor_v3",
    );
    // A typed FloatStorage with a bf16 dtype: mismatch.
    assert!(matches!(zip(&p), Err(PickleError::BadArguments { .. })));
    let p = rebuild_with(good_tail().global("torch", "float32"), "_rebuild_tensor_v3");
    assert_eq!(tensor(&zip(&p).unwrap().value).dtype, Dtype::F32);
    // The dtype argument must be a dtype global.
    let p = rebuild_with(good_tail().none(), "_rebuild_tensor_v3");
    assert!(matches!(zip(&p), Err(PickleError::BadArguments { .. })));
    let p = rebuild_with(
        Asm::new()
            .binint1(0)
            .binint1(12)
            .tuple1()
            .binint1(1)
            .tuple1(),
        "_rebuild_tensor",
    );
    assert_eq!(tensor(&zip(&p).unwrap().value).shape, vec![12]);
    // _rebuild_parameter(tensor, True, OrderedDict())
    let inner = tensor_v2(
        Asm::new()
            .proto(2)
            .global("torch._utils", "_rebuild_parameter"),
        "0",
        2,
        2,
    );
    let p = inner
        .clone()
        .newtrue()
        .then(hooks())
        .tuple3()
        .reduce()
        .stop()
        .bytes();
    assert_eq!(tensor(&zip(&p).unwrap().value).shape, vec![2, 2]);
    let p = inner.clone().newtrue().tuple2().reduce().stop().bytes();
    assert!(matches!(zip(&p), Err(PickleError::BadArguments { .. })));
    let p = inner
        .binint1(1)
        .then(hooks())
        .tuple3()
        .reduce()
        .stop()
        .bytes();
    assert!(matches!(zip(&p), Err(PickleError::BadArguments { .. })));
}

#[test]
fn storage_and_dtype_globals_only_in_their_role() {
    let p = Asm::new()
        .proto(2)
        .global("torch", "FloatStorage")
        .empty_tuple()
        .reduce()
        .stop()
        .bytes();
    refused(zip(&p), "torch.FloatStorage");
    let p = Asm::new()
        .proto(2)
        .global("torch", "float32")
        .stop()
        .bytes();
    refused(zip(&p), "torch.float32");
    // A dtype global as the storage type of a persistent id.
    let p = Asm::new()
        .proto(2)
        .mark()
        .binunicode("storage")
        .global("torch", "float32")
        .binunicode("0")
        .binunicode("cpu")
        .binint1(1)
        .tuple()
        .binpersid()
        .stop()
        .bytes();
    refused(zip(&p), "torch.float32");
    let p = Asm::new()
        .proto(2)
        .global("torch", "ComplexDoubleStorage")
        .stop()
        .bytes();
    let err = zip(&p).unwrap_err();
    assert!(matches!(err, PickleError::UnsupportedStorage { .. }));
    assert!(err.to_string().contains("unsupported storage type"));
}

#[test]
fn persistent_id_rules() {
    let tensor = tensor_v2(Asm::new().proto(2), "0", 1, 1).stop().bytes();
    let err = refused(plain(&tensor), "persistent id");
    assert!(matches!(err, PickleError::PersistentIdForbidden { .. }));
    for (key, location) in [
        ("../0", "cpu"),
        ("0 ", "cpu"),
        ("", "cpu"),
        ("0", "cuda:0\n"),
    ] {
        let p = Asm::new()
            .proto(2)
            .mark()
            .binunicode("storage")
            .global("torch", "FloatStorage")
            .binunicode(key)
            .binunicode(location)
            .binint1(1)
            .tuple()
            .binpersid()
            .stop()
            .bytes();
        assert!(
            matches!(zip(&p), Err(PickleError::BadPersistentId { .. })),
            "{key:?}"
        );
    }
    // ("module", ...) and a bare string.
    let p = Asm::new()
        .proto(2)
        .binunicode("module")
        .binpersid()
        .stop()
        .bytes();
    assert!(matches!(zip(&p), Err(PickleError::BadPersistentId { .. })));
    let p = Asm::new().persid("0").stop().bytes();
    assert!(matches!(zip(&p), Err(PickleError::BadPersistentId { .. })));
    // Same key with two dtypes.
    let p = Asm::new()
        .proto(2)
        .mark()
        .binunicode("storage")
        .global("torch", "FloatStorage")
        .binunicode("0")
        .binunicode("cpu")
        .binint1(1)
        .tuple()
        .binpersid()
        .mark()
        .binunicode("storage")
        .global("torch", "LongStorage")
        .binunicode("0")
        .binunicode("cpu")
        .binint1(1)
        .tuple()
        .binpersid()
        .tuple2()
        .stop()
        .bytes();
    assert!(matches!(zip(&p), Err(PickleError::BadPersistentId { .. })));
    // A bare storage as a value is not representable.
    let p = storage(Asm::new().proto(2), "FloatStorage", "0", 1)
        .stop()
        .bytes();
    assert!(matches!(zip(&p), Err(PickleError::Unsupported { .. })));
}

#[test]
fn container_type_confusion() {
    // SETITEM on a list, on a tuple; APPEND on a dict; APPENDS on a tuple.
    let cases = [
        Asm::new()
            .proto(2)
            .empty_list()
            .none()
            .none()
            .setitem()
            .stop(),
        Asm::new()
            .proto(2)
            .empty_tuple()
            .none()
            .none()
            .setitem()
            .stop(),
        Asm::new().proto(2).empty_dict().none().append().stop(),
        Asm::new()
            .proto(2)
            .empty_tuple()
            .mark()
            .none()
            .appends()
            .stop(),
        Asm::new()
            .proto(2)
            .empty_list()
            .mark()
            .none()
            .none()
            .setitems()
            .stop(),
        // OrderedDict with non-empty args
        Asm::new()
            .proto(2)
            .global("collections", "OrderedDict")
            .empty_list()
            .tuple1()
            .reduce()
            .stop(),
        // unhashable key, duplicate key
        Asm::new()
            .proto(2)
            .empty_dict()
            .empty_list()
            .none()
            .setitem()
            .stop(),
        Asm::new()
            .proto(2)
            .empty_dict()
            .mark()
            .binint1(1)
            .none()
            .newtrue()
            .none()
            .setitems()
            .stop(),
        // REDUCE on a non-global
        Asm::new().proto(2).none().empty_tuple().reduce().stop(),
        // stack underflow across a mark, STOP with leftovers
        Asm::new().proto(2).none().mark().tuple1().stop(),
        Asm::new().proto(2).none().none().stop(),
        Asm::new().proto(2).none().mark().stop(),
        // sets and bytearrays are not read
        Asm::new().proto(4).empty_set().stop(),
    ];
    for asm in cases {
        let bytes = asm.bytes();
        assert!(plain(&bytes).is_err(), "{bytes:?}");
    }
    let err = plain(
        &Asm::new()
            .proto(2)
            .empty_dict()
            .none()
            .append()
            .stop()
            .bytes(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("not a list"), "{err}");
}

#[test]
fn text_opcodes_are_strict() {
    for bad in [
        &b"I12x\n."[..],
        b"I\n.",
        b"F1.0.0\n.",
        b"F 1.0\n.",
        b"S'abc\n.",
        b"S'ab\"\n.",
        b"g-1\n.",
        b"g\n.",
        b"Vabc",
        b"c\xff\xfe\nx\n.",
        b"cos",
        b"L1x\n.",
    ] {
        assert!(plain(bad).is_err(), "{bad:?}");
    }
    assert_eq!(plain(b"I01\n.").unwrap().value, Value::Bool(true));
    assert_eq!(plain(b"I-5\n.").unwrap().value, Value::Int(-5));
    assert_eq!(plain(b"L123L\n.").unwrap().value, Value::Int(123));
    assert_eq!(plain(b"F-2.5\n.").unwrap().value, Value::Float(-2.5));
    assert_eq!(
        plain(b"S'a\\x41\\n'\n.").unwrap().value,
        Value::Str("aA\n".into())
    );
    assert_eq!(
        plain(b"V\\u00e9t\\u00e9\n.").unwrap().value,
        Value::Str("\u{e9}t\u{e9}".into())
    );
    // A line longer than the bound.
    let mut long = b"I".to_vec();
    long.extend(std::iter::repeat_n(b'1', 5000));
    long.extend_from_slice(b"\n.");
    assert!(plain(&long).is_err());
}

#[test]
fn error_messages_carry_offsets() {
    let p = call(Asm::new().proto(2).none().pop(), "os", "system")
        .stop()
        .bytes();
    let err = plain(&p).unwrap_err();
    assert_eq!(err.offset(), 4);
    assert!(err.to_string().starts_with("offset 4:"), "{err}");
    // Control characters in a refused name are escaped in the message.
    let p = Asm::new().global("os\x1b[31m", "system").stop().bytes();
    let msg = plain(&p).unwrap_err().to_string();
    assert!(!msg.contains('\x1b'), "{msg}");
}
