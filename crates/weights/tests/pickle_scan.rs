//! The scanner against the held-out suite's shapes (research notes 6.1 #1-#21): every finding
//! names the global, findings before a parse error are kept, stacked and nested pickles are
//! scanned, and benign torch output yields only `Info` findings.

#![allow(
    clippy::panic,
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing
)]

mod pickle_asm;

use pickle_asm::{Asm, call, tensor_v2};
use safeformers_weights::pickle::{
    Limits, PickleScan, ScanOptions, looks_like_pickle, scan_pickles,
};
use safeformers_weights::scan::Severity;

fn scan(bytes: &[u8]) -> PickleScan {
    scan_pickles(bytes, &ScanOptions::default())
}

/// Asserts a finding of `kind` and `severity` whose detail contains `needle`.
fn has(scan: &PickleScan, severity: Severity, kind: &str, needle: &str) {
    assert!(
        scan.findings
            .iter()
            .any(|f| f.severity == severity && f.kind == kind && f.detail.contains(needle)),
        "no {severity:?} {kind} finding containing {needle:?} in {:#?}",
        scan.findings
    );
}

fn dangerous_import(bytes: &[u8], name: &str) -> PickleScan {
    let s = scan(bytes);
    has(&s, Severity::Dangerous, "import", name);
    s
}

fn only_info(scan: &PickleScan) {
    assert!(
        scan.findings.iter().all(|f| f.severity == Severity::Info),
        "{:#?}",
        scan.findings
    );
}

#[test]
fn benign_torch_output_is_info_only() {
    for bytes in [
        &include_bytes!("pickle_fixtures/state_dict_p2.pkl")[..],
        include_bytes!("pickle_fixtures/state_dict_p4.pkl"),
        include_bytes!("pickle_fixtures/state_dict_p5.pkl"),
    ] {
        let s = scan(bytes);
        only_info(&s);
        assert_eq!((s.streams, s.end), (1, bytes.len()));
        has(
            &s,
            Severity::Info,
            "import",
            "torch._utils._rebuild_tensor_v2",
        );
        has(&s, Severity::Info, "import", "torch.FloatStorage");
        has(&s, Severity::Info, "call", "collections.OrderedDict");
        has(&s, Severity::Info, "persistent_id", "storage references");
        has(&s, Severity::Info, "build", "collections.OrderedDict");
    }
    let s = scan(include_bytes!("pickle_fixtures/list_p0.pkl"));
    only_info(&s);
    let minimal = tensor_v2(Asm::new().proto(2), "0", 3, 4).stop().bytes();
    only_info(&scan(&minimal));
}

#[test]
fn classic_reduce_names_the_global_and_the_call() {
    for (module, name) in [
        ("posix", "system"),
        ("nt", "system"),
        ("__builtin__", "eval"),
    ] {
        let p = call(Asm::new().proto(2), module, name).stop().bytes();
        let s = dangerous_import(&p, &format!("{module}.{name}"));
        has(
            &s,
            Severity::Dangerous,
            "call",
            &format!("REDUCE calls {module}.{name}"),
        );
        let p = Asm::new()
            .proto(4)
            .sglobal(module, name)
            .short_binunicode("id")
            .tuple1()
            .reduce()
            .stop()
            .bytes();
        dangerous_import(&p, &format!("{module}.{name}"));
    }
    let p = Asm::new()
        .global("os", "system")
        .mark()
        .unicode("id")
        .tuple()
        .reduce()
        .stop()
        .bytes();
    dangerous_import(&p, "os.system");
}

#[test]
fn inst_obj_newobj_ext() {
    let p = Asm::new()
        .mark()
        .string("id")
        .inst("os", "system")
        .stop()
        .bytes();
    let s = dangerous_import(&p, "os.system");
    has(&s, Severity::Dangerous, "call", "INST calls os.system");
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
    let s = dangerous_import(&p, "smtplib.SMTP");
    has(&s, Severity::Dangerous, "call", "OBJ calls smtplib.SMTP");
    has(
        &s,
        Severity::Suspicious,
        "discarded_call_result",
        "smtplib.SMTP",
    );
    let p = Asm::new()
        .proto(4)
        .sglobal("subprocess", "Popen")
        .empty_tuple()
        .newobj()
        .stop()
        .bytes();
    has(
        &scan(&p),
        Severity::Dangerous,
        "call",
        "NEWOBJ calls subprocess.Popen",
    );
    let p = Asm::new()
        .proto(4)
        .sglobal("subprocess", "Popen")
        .empty_tuple()
        .empty_dict()
        .newobj_ex()
        .stop()
        .bytes();
    has(
        &scan(&p),
        Severity::Dangerous,
        "call",
        "NEWOBJ_EX calls subprocess.Popen",
    );
    let p = Asm::new()
        .proto(2)
        .ext1(1)
        .empty_tuple()
        .reduce()
        .stop()
        .bytes();
    let s = scan(&p);
    has(&s, Severity::Dangerous, "extension_import", "EXT1 1");
    has(&s, Severity::Dangerous, "call", "<extension 1>");
    // NEWOBJ of an allowlisted class is still outside its role.
    let p = Asm::new()
        .proto(4)
        .sglobal("collections", "OrderedDict")
        .empty_tuple()
        .newobj()
        .stop()
        .bytes();
    has(
        &scan(&p),
        Severity::Dangerous,
        "call",
        "NEWOBJ calls collections.OrderedDict",
    );
}

#[test]
fn stack_global_operand_provenance() {
    // #5: STRING operands, no PROTO.
    let p = Asm::new()
        .string("os")
        .string("system")
        .stack_global()
        .string("ls")
        .tuple1()
        .reduce()
        .stop()
        .bytes();
    dangerous_import(&p, "os.system");
    // #6: memo decoys, with and without trailing whitespace.
    let decoys = Asm::new()
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
        .stop();
    let s = dangerous_import(&decoys.clone().bytes(), "os.system");
    has(&s, Severity::Dangerous, "import", "from the memo");
    let s = dangerous_import(&decoys.raw(b"\n\n\t\t").bytes(), "os.system");
    has(&s, Severity::Suspicious, "trailing_data", "whitespace");
    // #7: computed operand through builtins.str.
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
    let s = dangerous_import(&p, "builtins.str");
    has(&s, Severity::Dangerous, "unknown_import", "?.system");
    has(&s, Severity::Dangerous, "unknown_import", "builtins.str");
    // #16: int memo value as operand; unset memo slot after an earlier call.
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
    has(
        &scan(&p),
        Severity::Dangerous,
        "unknown_import",
        "computed number",
    );
    let p = call(Asm::new().proto(4), "os", "system")
        .pop()
        .binget(3)
        .short_binunicode("x")
        .stack_global()
        .stop()
        .bytes();
    let s = dangerous_import(&p, "os.system");
    has(&s, Severity::Suspicious, "invalid_memo", "slot 3");
    has(&s, Severity::Dangerous, "unknown_import", "unknown value");
}

#[test]
fn dotted_names_and_mid_stream_proto() {
    let p = Asm::new()
        .proto(4)
        .sglobal("pathlib", "os.system")
        .short_binunicode("id")
        .tuple1()
        .reduce()
        .stop()
        .bytes();
    let s = dangerous_import(&p, "pathlib.os.system");
    has(&s, Severity::Dangerous, "dotted_name", "pathlib.os.system");
    let p = Asm::new()
        .proto(5)
        .global("builtins", "eval.__call__")
        .stop()
        .bytes();
    has(
        &scan(&p),
        Severity::Dangerous,
        "dotted_name",
        "builtins.eval.__call__",
    );
    let p = Asm::new()
        .proto(2)
        .global("torch._utils", "_rebuild_tensor_v2.__globals__")
        .stop()
        .bytes();
    dangerous_import(&p, "torch._utils._rebuild_tensor_v2.__globals__");
    let p = Asm::new()
        .none()
        .pop()
        .proto(4)
        .global("builtins", "getattr")
        .stop()
        .bytes();
    let s = dangerous_import(&p, "builtins.getattr");
    has(&s, Severity::Suspicious, "misplaced_proto", "offset 2");
    let p = Asm::new().proto(2).proto(4).none().stop().bytes();
    has(
        &scan(&p),
        Severity::Suspicious,
        "duplicate_proto",
        "offset 2",
    );
}

#[test]
fn build_gadgets() {
    // #10: BUILD on a module object, then a STACK_GLOBAL of memoized strings.
    let p = Asm::new()
        .proto(4)
        .sglobal("torch", "_utils")
        .empty_dict()
        .short_binunicode("_rebuild_tensor")
        .short_binunicode("builtins")
        .memoize()
        .setitem()
        .build()
        .pop()
        .binget(0)
        .short_binunicode("eval")
        .stack_global()
        .stop()
        .bytes();
    let s = dangerous_import(&p, "torch._utils");
    has(&s, Severity::Dangerous, "build", "torch._utils");
    has(&s, Severity::Dangerous, "import", "builtins.eval");
    // #11: numpy attribute-write gadget.
    let p = Asm::new()
        .proto(4)
        .sglobal("numpy", "size")
        .memoize()
        .empty_tuple()
        .empty_dict()
        .short_binunicode("shape")
        .sglobal("numpy", "__builtins__")
        .setitem()
        .tuple2()
        .build()
        .pop()
        .binget(0)
        .binget(0)
        .short_binunicode("eval")
        .tuple2()
        .reduce()
        .stop()
        .bytes();
    let s = dangerous_import(&p, "numpy.size");
    has(&s, Severity::Dangerous, "dotted_name", "numpy.__builtins__");
    has(&s, Severity::Dangerous, "build", "numpy.size");
    has(&s, Severity::Dangerous, "call", "REDUCE calls numpy.size");
}

#[test]
fn gadget_list_is_dangerous() {
    for (module, name) in [
        ("pkgutil", "resolve_name"),
        ("pydoc", "locate"),
        ("importlib", "import_module"),
        ("_operator", "methodcaller"),
        ("torch.utils.collect_env", "run"),
        ("torch._inductor.codecache", "compile_file"),
        ("_posixsubprocess", "fork_exec"),
        ("ssl", "get_server_certificate"),
        ("torch", "ComplexDoubleStorage"),
    ] {
        let p = call(Asm::new().proto(2), module, name).stop().bytes();
        let s = dangerous_import(&p, &format!("{module}.{name}"));
        has(&s, Severity::Dangerous, "call", &format!("{module}.{name}"));
    }
}

#[test]
fn nested_pickles_are_scanned() {
    let inner = call(Asm::new().proto(2), "os", "system").stop().bytes();
    for (module, name) in [
        ("pickle", "loads"),
        ("_pickle", "loads"),
        ("torch.storage", "_load_from_bytes"),
        ("torch.serialization", "load"),
    ] {
        let p = Asm::new()
            .proto(2)
            .global(module, name)
            .binbytes(&inner)
            .tuple1()
            .reduce()
            .pop()
            .none()
            .stop()
            .bytes();
        let s = dangerous_import(&p, &format!("{module}.{name}"));
        has(&s, Severity::Dangerous, "nested_pickle", "itself a pickle");
        has(&s, Severity::Dangerous, "import", "nested pickle at offset");
        assert!(
            s.findings
                .iter()
                .any(|f| f.detail.starts_with("nested pickle at offset")
                    && f.detail.contains("os.system"))
        );
    }
    // Protocol-2 bytes through _codecs.encode, protocol-0 inner pickle.
    let inner0 = "cos\nsystem\n(S'id'\ntR.";
    let p = Asm::new()
        .proto(2)
        .global("pickle", "loads")
        .global("_codecs", "encode")
        .binunicode(inner0)
        .binunicode("latin1")
        .tuple2()
        .reduce()
        .tuple1()
        .reduce()
        .stop()
        .bytes();
    has(
        &scan(&p),
        Severity::Dangerous,
        "import",
        "nested pickle at offset",
    );
    // Depth 0: no recursion, but the outer import is still reported.
    let p = Asm::new()
        .proto(2)
        .global("pickle", "loads")
        .binbytes(&inner)
        .tuple1()
        .reduce()
        .stop()
        .bytes();
    let s = scan_pickles(
        &p,
        &ScanOptions {
            nested_depth: 0,
            ..ScanOptions::default()
        },
    );
    has(&s, Severity::Dangerous, "import", "pickle.loads");
    assert!(!s.findings.iter().any(|f| f.detail.contains("os.system")));
    // One nested blob reused through the memo by many calls is scanned once.
    let mut asm = Asm::new().proto(2).binbytes(&inner).binput(0).pop();
    for _ in 0..100 {
        asm = asm
            .global("pickle", "loads")
            .binget(0)
            .tuple1()
            .reduce()
            .pop();
    }
    let s = scan(&asm.none().stop().bytes());
    assert_eq!(
        s.findings
            .iter()
            .filter(|f| f.kind == "nested_pickle")
            .count(),
        1
    );
    // Self-nesting to any depth stays bounded.
    let mut blob = inner;
    for _ in 0..20 {
        blob = Asm::new()
            .proto(2)
            .global("pickle", "loads")
            .binbytes(&blob)
            .tuple1()
            .reduce()
            .stop()
            .bytes();
    }
    let s = scan(&blob);
    assert!(s.findings.len() < 100);
}

#[test]
fn findings_before_a_parse_error_are_kept() {
    let payload = call(Asm::new().proto(2), "os", "system").pop();
    let s = dangerous_import(&payload.clone().raw(&[0xff]).bytes(), "os.system");
    has(&s, Severity::Suspicious, "invalid_opcode", "offset 20");
    assert_eq!((s.streams, s.end), (1, 0));
    let s = dangerous_import(
        &payload.clone().mark().raw(b"X\xff\xff\xff\x7f").bytes(),
        "os.system",
    );
    has(&s, Severity::Suspicious, "parse_error", "offset 21");
    // broken_model.pkl: GLOBAL builtins exec · MARK · BINUNICODE with a bogus length.
    let p = Asm::new()
        .global("builtins", "exec")
        .mark()
        .raw(b"X\x00\x00\x00\x10abc")
        .bytes();
    dangerous_import(&p, "builtins.exec");
    let s = dangerous_import(&payload.bytes(), "os.system");
    has(&s, Severity::Suspicious, "parse_error", "without a STOP");
}

#[test]
fn stacked_pickles_are_all_scanned() {
    let benign = Asm::new()
        .proto(2)
        .mark()
        .binunicode("a")
        .binunicode("b")
        .list()
        .stop();
    let evil = call(Asm::new().proto(2), "os", "system").stop();
    let both = benign.clone().then(evil.clone()).bytes();
    let s = dangerous_import(&both, "os.system");
    assert_eq!((s.streams, s.end), (2, both.len()));
    has(&s, Severity::Suspicious, "stacked_pickle", "offset");
    let both = evil.clone().then(benign.clone()).bytes();
    let s = dangerous_import(&both, "os.system");
    assert_eq!(s.streams, 2);
    // max_streams: only the first is read, and the rest is left to the caller.
    let s = scan_pickles(
        &benign.clone().then(evil.clone()).bytes(),
        &ScanOptions {
            max_streams: Some(1),
            ..ScanOptions::default()
        },
    );
    assert_eq!((s.streams, s.end), (1, benign.0.len()));
    only_info(&s);
    // A protocol-0 malicious pickle after a benign one.
    let p0 = Asm::new()
        .global("os", "system")
        .mark()
        .string("id")
        .tuple()
        .reduce()
        .stop();
    let s = dangerous_import(&benign.clone().then(p0).bytes(), "os.system");
    assert_eq!(s.streams, 2);
    // A zip appended after the pickle (polyglot).
    let s = scan(
        &benign
            .clone()
            .raw(b"PK\x03\x04rest of a zip PK\x05\x06")
            .bytes(),
    );
    has(&s, Severity::Dangerous, "trailing_zip", "zip");
    let s = scan(&benign.raw(b"\x00\x01garbage").bytes());
    has(&s, Severity::Suspicious, "trailing_data", "00 01");
}

#[test]
fn frame_straddle_is_dangerous_and_nothing_hidden_is_trusted() {
    let hidden = call(Asm::new(), "os", "system").mark().bytes();
    let mut padded = hidden;
    padded.resize(261, b'N');
    let p = Asm::new()
        .proto(5)
        .none()
        .pop()
        .mark()
        .frame(2)
        .raw(b"B")
        .raw(&0x107u32.to_le_bytes())
        .raw(b"ab")
        .raw(&padded)
        .pop_mark()
        .stop()
        .bytes();
    let s = scan(&p);
    has(
        &s,
        Severity::Dangerous,
        "frame_violation",
        "crosses the end of the frame",
    );
    let p = Asm::new()
        .proto(4)
        .frame(20)
        .frame(2)
        .none()
        .stop()
        .raw(&[0; 10])
        .bytes();
    has(&scan(&p), Severity::Dangerous, "frame_violation", "inside");
    let p = Asm::new().proto(4).frame(1000).none().stop().bytes();
    has(
        &scan(&p),
        Severity::Dangerous,
        "frame_violation",
        "FRAME of 1000 bytes",
    );
}

#[test]
fn expansion_bombs_are_reported() {
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
    let s = scan(&asm.stop().bytes());
    has(&s, Severity::Dangerous, "expansion_bomb", "more than");
    let mut asm = Asm::new().proto(2).mark().none();
    for _ in 0..150 {
        asm = asm.dup();
    }
    has(
        &scan(&asm.list().stop().bytes()),
        Severity::Suspicious,
        "expansion_bomb",
        "150 DUP",
    );
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
    has(
        &scan(&asm.stop().bytes()),
        Severity::Dangerous,
        "expansion_bomb",
        "more than",
    );
    let mut asm = Asm::new().proto(2).empty_list().binput(0);
    for _ in 0..60 {
        asm = asm.binget(0).append();
    }
    has(
        &scan(&asm.stop().bytes()),
        Severity::Suspicious,
        "expansion_bomb",
        "60 memo GETs for 1 PUTs",
    );
}

#[test]
fn resource_caps_hold() {
    let mut p = vec![0x80, 4, 0x8d];
    p.extend_from_slice(&(2u64 << 30).to_le_bytes());
    p.resize(1024, b'N');
    has(
        &scan(&p),
        Severity::Suspicious,
        "parse_error",
        "needs 2147483648 bytes",
    );
    let p = Asm::new().raw(&vec![b'('; 1_000_000]).stop().bytes();
    has(&scan(&p), Severity::Suspicious, "resource_limit", "MARK");
    let mut p = vec![0x80, 2, b'N'];
    p.extend(std::iter::repeat_n(0x85u8, 1_000_000));
    p.push(b'.');
    let s = scan(&p);
    assert_eq!(s.streams, 1);
    let options = ScanOptions {
        limits: Limits {
            max_ops: 10,
            ..Limits::default()
        },
        ..ScanOptions::default()
    };
    let p = Asm::new()
        .proto(2)
        .raw(&[b'N', b'0'].repeat(10))
        .none()
        .stop()
        .bytes();
    has(
        &scan_pickles(&p, &options),
        Severity::Suspicious,
        "resource_limit",
        "opcodes",
    );
    // Findings are capped.
    let mut asm = Asm::new().proto(2);
    for _ in 0..3000 {
        asm = asm.global("os", "system").pop();
    }
    let s = scan(&asm.none().stop().bytes());
    assert_eq!(
        s.findings.len(),
        safeformers_weights::pickle::scanner::MAX_FINDINGS + 1
    );
    has(&s, Severity::Suspicious, "truncated", "more than");
}

/// `ScanOptions` with `limits` changed by `edit`.
fn with_limits(edit: impl Fn(&mut Limits)) -> ScanOptions {
    let mut limits = Limits::default();
    edit(&mut limits);
    ScanOptions {
        limits,
        ..ScanOptions::default()
    }
}

/// The resource-limit finding whose detail contains `needle`, and the dangerous import `name`
/// after it: a cap never hides an import.
fn cap_then_import(scan: &PickleScan, needle: &str, name: &str) {
    has(scan, Severity::Suspicious, "resource_limit", needle);
    has(scan, Severity::Dangerous, "import", name);
    assert_eq!(scan.worst(), Some(Severity::Dangerous));
    let position = |kind: &str, text: &str| {
        scan.findings
            .iter()
            .position(|f| f.kind == kind && f.detail.contains(text))
            .unwrap()
    };
    assert!(position("resource_limit", needle) < position("import", name));
}

#[test]
fn a_mark_bomb_does_not_hide_the_import_after_it() {
    // 200,000 MARKs (the loader allows 1,000), then os.system('id').
    let p = Asm::new()
        .proto(2)
        .raw(&vec![b'('; 200_000])
        .global("os", "system")
        .string("id")
        .tuple1()
        .reduce()
        .stop()
        .bytes();
    let s = scan(&p);
    cap_then_import(&s, "MARK", "os.system");
    has(&s, Severity::Dangerous, "import", "imported by GLOBAL");
    // Protocol 4 spelling: STACK_GLOBAL of two literal strings, memoized in between.
    let p = Asm::new()
        .proto(4)
        .raw(&vec![b'('; 200_000])
        .short_binunicode("posix")
        .memoize()
        .short_binunicode("system")
        .memoize()
        .stack_global()
        .stop()
        .bytes();
    cap_then_import(&scan(&p), "MARK", "posix.system");
}

#[test]
fn stack_memo_and_opcode_caps_do_not_hide_the_import_after_them() {
    // The stack cap (default: a million entries).
    let mut p = vec![0x80, 2];
    p.extend(std::iter::repeat_n(b'N', 1_000_001));
    let p = Asm::new()
        .raw(&p)
        .global("subprocess", "Popen")
        .stop()
        .bytes();
    cap_then_import(&scan(&p), "stack entries", "subprocess.Popen");
    // The memo cap (made small): later PUTs are not tracked, imports still are.
    let mut asm = Asm::new().proto(2).none();
    for slot in 0..20 {
        asm = asm.binput(slot);
    }
    let p = asm.global("builtins", "eval").stop().bytes();
    let s = scan_pickles(&p, &with_limits(|limits| limits.max_memo = 4));
    cap_then_import(&s, "memo entries", "builtins.eval");
    // The opcode cap (made small), with the import as the very opcode that crosses it and
    // another one after.
    let p = Asm::new()
        .proto(2)
        .raw(&[b'N', b'0'].repeat(5))
        .global("os", "system")
        .global("posix", "execv")
        .stop()
        .bytes();
    let s = scan_pickles(&p, &with_limits(|limits| limits.max_ops = 11));
    cap_then_import(&s, "opcodes", "os.system");
    cap_then_import(&s, "opcodes", "posix.execv");
}

#[test]
fn deep_nesting_does_not_hide_a_literal_stack_global() {
    // Lists nested 5,000 deep (MARK, EMPTY_LIST, ...), then STACK_GLOBAL of literal operands.
    let p = Asm::new()
        .proto(4)
        .raw(&b"(]".repeat(5_000))
        .sglobal("builtins", "exec")
        .stop()
        .bytes();
    let s = scan(&p);
    cap_then_import(&s, "MARK", "builtins.exec");
    has(
        &s,
        Severity::Dangerous,
        "import",
        "STACK_GLOBAL (literal operands)",
    );
    // Tuples nested deeper than the loader allows, then the same.
    let mut asm = Asm::new().proto(4).none();
    for _ in 0..300 {
        asm = asm.tuple1();
    }
    let p = asm.sglobal("builtins", "exec").stop().bytes();
    cap_then_import(&scan(&p), "nested deeper", "builtins.exec");
}

#[test]
fn after_a_cap_unresolvable_stack_global_operands_are_said_to_be_unknown() {
    // Operands from the memo, or separated from STACK_GLOBAL by a POP, are not guessed.
    for tail in [
        Asm::new()
            .short_binunicode("os")
            .binput(0)
            .short_binunicode("system")
            .binput(1)
            .pop()
            .pop()
            .binget(0)
            .binget(1)
            .stack_global(),
        Asm::new()
            .short_binunicode("os")
            .short_binunicode("system")
            .none()
            .pop()
            .stack_global(),
    ] {
        let p = Asm::new()
            .proto(4)
            .raw(&vec![b'('; 2_000])
            .then(tail)
            .stop()
            .bytes();
        let s = scan(&p);
        has(&s, Severity::Suspicious, "resource_limit", "MARK");
        has(&s, Severity::Dangerous, "unknown_import", "unresolved");
        assert!(
            !s.findings.iter().any(|f| f.kind == "import"),
            "{:#?}",
            s.findings
        );
    }
}

#[test]
fn a_string_cap_does_not_hide_a_literal_stack_global() {
    // Past the string-bytes cap the simulation keeps no text; the literal pushes still name it.
    let p = Asm::new()
        .proto(4)
        .short_binunicode(&"x".repeat(100))
        .pop()
        .sglobal("os", "system")
        .stop()
        .bytes();
    let s = scan_pickles(&p, &with_limits(|limits| limits.max_string_bytes = 50));
    has(&s, Severity::Dangerous, "import", "os.system");
}

#[test]
fn the_pass_after_a_cap_is_bounded_and_keeps_reading_the_stacked_streams() {
    // Findings stay capped.
    let mut asm = Asm::new().proto(2).raw(&vec![b'('; 2_000]);
    for _ in 0..3000 {
        asm = asm.global("os", "system");
    }
    let s = scan(&asm.stop().bytes());
    assert_eq!(
        s.findings.len(),
        safeformers_weights::pickle::scanner::MAX_FINDINGS + 1
    );
    has(&s, Severity::Suspicious, "truncated", "more than");
    // A STOP ends the pass; the next stacked pickle is scanned in full.
    let p = Asm::new()
        .proto(2)
        .raw(&vec![b'('; 2_000])
        .stop()
        .proto(2)
        .global("posix", "system")
        .string("id")
        .tuple1()
        .reduce()
        .stop()
        .bytes();
    let s = scan(&p);
    assert_eq!(s.streams, 2);
    has(&s, Severity::Dangerous, "import", "posix.system");
    has(&s, Severity::Dangerous, "call", "REDUCE calls posix.system");
    // The shared decoder still enforces frames after the cap.
    let p = Asm::new()
        .proto(4)
        .raw(&vec![b'('; 2_000])
        .frame(2)
        .sglobal("os", "system")
        .stop()
        .bytes();
    has(
        &scan(&p),
        Severity::Dangerous,
        "frame_violation",
        "crosses the end",
    );
}

#[test]
fn looks_like_pickle_by_content() {
    assert!(looks_like_pickle(include_bytes!(
        "pickle_fixtures/list_p0.pkl"
    )));
    assert!(looks_like_pickle(include_bytes!(
        "pickle_fixtures/list_p1.pkl"
    )));
    assert!(looks_like_pickle(include_bytes!(
        "pickle_fixtures/state_dict_p2.pkl"
    )));
    assert!(looks_like_pickle(b"cos\nsystem\n(S'id'\ntR."));
    assert!(looks_like_pickle(b"S'os'\nS'system'\n\x93S'ls'\n\x85R."));
    assert!(looks_like_pickle(b"N."));
    // Payload then garbage (nullifAI shape) still looks like a pickle.
    assert!(looks_like_pickle(b"cos\nsystem\n(S'id'\n\xff"));
    assert!(!looks_like_pickle(b"c\nmod\n\xff\xfe\xfd garbage"));
    assert!(!looks_like_pickle(b"cmod\n\xff\xfe\xfd\n"));
    assert!(!looks_like_pickle(
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10"
    ));
    assert!(!looks_like_pickle(
        b"# Model card\n\nThis model was trained on ...\n"
    ));
    assert!(!looks_like_pickle(b"Some text."));
    assert!(!looks_like_pickle(b"No."));
    assert!(!looks_like_pickle(b"(a.)"));
    assert!(!looks_like_pickle(b""));
    assert!(!looks_like_pickle(b"{\"json\": 1}"));
    // A `c` + invalid UTF-8 module line scans without crashing.
    let s = scan(b"cmod\n\xff\xfe\n.");
    has(&s, Severity::Suspicious, "parse_error", "UTF-8");
}
