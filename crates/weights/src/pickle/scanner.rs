//! Observe-mode pickle analysis: what Python would import and call.
//!
//! [`scan_pickles`] runs the same [`Decoder`] as the unpickler, over a symbolic stack that
//! tracks only what matters for the verdict: literal strings (with where they came from: an
//! opcode, or the memo), globals, call results, and an estimate of how many objects each value
//! would expand to. It never stops at the first problem: every import (`GLOBAL`, `INST`,
//! `STACK_GLOBAL`, with computed operands reported as an unknown import), every call site
//! (`REDUCE`, `NEWOBJ`, `NEWOBJ_EX`, `OBJ`, `INST`, `BUILD`), every `EXT*`, structural anomalies
//! (misplaced `PROTO`, frame violations, invalid opcodes, parse errors with their offset, trailing
//! bytes) and expansion-bomb indicators become [`Finding`]s, and findings seen before a parse
//! error are kept (the nullifAI shape). Stacked pickles are scanned one after another; a pickle
//! nested in a byte-string argument of a call is scanned too, up to `nested_depth` levels.
//!
//! A resource cap (opcodes, stack entries, open `MARK`s) stops the simulation, never the
//! reading: the rest of the stream is decoded linearly and every import in it is still named
//! (a MARK bomb in front of `os.system` yields both the resource-limit finding and the import).
//!
//! Severity follows the loader: a global the allowlist admits, used in its role, is
//! [`Severity::Info`]; anything the loader would refuse is [`Severity::Dangerous`]; structural
//! oddities that parsers disagree on are [`Severity::Suspicious`] (frame violations, which hide
//! opcodes from other tools, are dangerous).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;

use super::allowlist::{self, Global};
use super::opcodes::{self, DecodeErrorKind, Decoder, Op};
use super::{Limits, looks_like_pickle, printable_name};
use crate::scan::{Finding, Severity};

/// Most findings one scan returns; the last one then says the list was truncated.
pub const MAX_FINDINGS: usize = 1000;

/// A byte string that may be a nested pickle: (identity of its allocation, bytes, offset).
type NestedCandidate = ((usize, usize), Rc<[u8]>, usize);

/// Most nested pickles scanned per stream.
const MAX_NESTED_PER_STREAM: usize = 64;

/// Options of [`scan_pickles`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanOptions {
    /// How many stacked pickle streams to read; `None` reads every stream until the bytes end
    /// or stop looking like a pickle.
    pub max_streams: Option<usize>,
    /// Work bounds, per stream.
    pub limits: Limits,
    /// How deep to recurse into pickles nested in byte-string arguments of calls.
    pub nested_depth: usize,
}

impl Default for ScanOptions {
    fn default() -> ScanOptions {
        ScanOptions {
            max_streams: None,
            limits: Limits::default(),
            nested_depth: 3,
        }
    }
}

/// What [`scan_pickles`] found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PickleScan {
    /// Every finding, in stream order (at most [`MAX_FINDINGS`] + 1).
    pub findings: Vec<Finding>,
    /// Streams read (including one that ended in an error).
    pub streams: usize,
    /// Offset after the last successfully decoded `STOP`.
    pub end: usize,
}

impl PickleScan {
    /// The most severe finding's severity, `None` when there are no findings.
    pub fn worst(&self) -> Option<Severity> {
        self.findings.iter().map(|f| f.severity).max()
    }
}

/// Scans the stacked pickle streams at the start of `bytes`.
///
/// The first stream is read whatever it looks like; later ones only while the remaining bytes
/// look like a pickle ([`looks_like_pickle`]) and `max_streams` allows. Bytes left after the
/// last stream are reported as `trailing_data` (or `trailing_zip`), except when `max_streams`
/// was reached: then the caller knows what follows, and [`PickleScan::end`] says where.
///
/// ```
/// use safeformers_weights::pickle::{scan_pickles, ScanOptions};
/// use safeformers_weights::scan::Severity;
/// let scan = scan_pickles(b"cposix\nsystem\n(S'id'\ntR.", &ScanOptions::default());
/// assert!(scan.findings.iter().any(|f| f.severity == Severity::Dangerous
///     && f.detail.contains("posix.system")));
/// ```
pub fn scan_pickles(bytes: &[u8], options: &ScanOptions) -> PickleScan {
    let mut report = Report::default();
    let (streams, end) = scan_streams(bytes, options, options.nested_depth, &mut report);
    PickleScan {
        findings: report.findings,
        streams,
        end,
    }
}

#[derive(Default)]
struct Report {
    findings: Vec<Finding>,
    truncated: bool,
    /// Prepended to every detail (nested pickles).
    prefix: String,
}

impl Report {
    fn add(&mut self, severity: Severity, kind: &str, detail: String) {
        if self.findings.len() >= MAX_FINDINGS {
            if !self.truncated {
                self.truncated = true;
                self.findings.push(Finding::new(
                    Severity::Suspicious,
                    "truncated",
                    format!("more than {MAX_FINDINGS} findings; the rest are not listed"),
                ));
            }
            return;
        }
        self.findings.push(Finding::new(
            severity,
            kind,
            format!("{}{detail}", self.prefix),
        ));
    }
}

fn scan_streams(
    bytes: &[u8],
    options: &ScanOptions,
    depth_left: usize,
    report: &mut Report,
) -> (usize, usize) {
    let mut pos = 0usize;
    let mut streams = 0usize;
    let mut end = 0usize;
    loop {
        if options.max_streams.is_some_and(|max| streams >= max) {
            break;
        }
        let rest = bytes.get(pos..).unwrap_or_default();
        if rest.is_empty() {
            break;
        }
        if streams > 0 && !looks_like_pickle(rest) {
            trailing(rest, pos, report);
            break;
        }
        if streams > 0 {
            report.add(
                Severity::Suspicious,
                "stacked_pickle",
                format!("offset {pos}: another pickle stream follows the previous STOP"),
            );
        }
        streams += 1;
        let mut stream = Stream::new(pos, options, depth_left);
        let outcome = stream.run(rest, report);
        stream.summarise(report);
        match outcome {
            Some(consumed) => {
                pos += consumed;
                end = pos;
            }
            None => break,
        }
    }
    (streams, end)
}

fn trailing(rest: &[u8], pos: usize, report: &mut Report) {
    let zip_at = rest
        .windows(4)
        .position(|w| w == b"PK\x03\x04" || w == b"PK\x05\x06");
    if let Some(at) = zip_at {
        report.add(
            Severity::Dangerous,
            "trailing_zip",
            format!(
                "offset {pos}: {} bytes after the last STOP contain a zip structure at offset {} \
                 (a pickle/zip polyglot: tools that look for a zip find different content)",
                rest.len(),
                pos + at
            ),
        );
    } else if rest.iter().all(u8::is_ascii_whitespace) {
        report.add(
            Severity::Suspicious,
            "trailing_data",
            format!(
                "offset {pos}: {} bytes of whitespace after the last STOP",
                rest.len()
            ),
        );
    } else {
        let head: String = rest
            .iter()
            .take(16)
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" ");
        report.add(
            Severity::Suspicious,
            "trailing_data",
            format!(
                "offset {pos}: {} bytes after the last STOP that are not a pickle (starting {head})",
                rest.len()
            ),
        );
    }
}

/// Where a string came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Literal,
    Memo,
}

#[derive(Debug, Clone)]
enum Sym {
    Str {
        text: Rc<str>,
        origin: Origin,
    },
    Bytes {
        data: Rc<[u8]>,
        offset: usize,
    },
    Global {
        name: Rc<str>,
        allowed: Option<Global>,
    },
    /// The result of a call to `callee`.
    Call {
        callee: Rc<str>,
        allowed: Option<Global>,
    },
    Tuple {
        items: Rc<[Sym]>,
        weight: u64,
        depth: usize,
    },
    /// Anything else, with the number of objects it would expand to.
    Other {
        kind: &'static str,
        weight: u64,
    },
}

impl Sym {
    fn weight(&self) -> u64 {
        match self {
            Sym::Tuple { weight, .. } | Sym::Other { weight, .. } => *weight,
            _ => 1,
        }
    }

    fn other(kind: &'static str) -> Sym {
        Sym::Other { kind, weight: 1 }
    }

    fn unknown() -> Sym {
        Sym::other("unknown value")
    }

    /// How this value was obtained, for an unknown-import finding.
    fn describe(&self) -> String {
        match self {
            Sym::Str {
                text,
                origin: Origin::Literal,
            } => format!("literal {:?}", truncate(text)),
            Sym::Str {
                text,
                origin: Origin::Memo,
            } => format!("{:?} from the memo", truncate(text)),
            Sym::Bytes { .. } => "a bytes object".to_string(),
            Sym::Global { name, .. } => format!("the global {name}"),
            Sym::Call { callee, .. } => format!("the result of calling {callee}"),
            Sym::Tuple { .. } => "a tuple".to_string(),
            Sym::Other { kind, .. } => format!("a computed {kind}"),
        }
    }

    fn callee_name(&self) -> String {
        match self {
            Sym::Global { name, .. } => name.to_string(),
            other => format!("<{}>", other.describe()),
        }
    }
}

fn truncate(text: &str) -> String {
    printable_name(text, "")
        .trim_end_matches('.')
        .chars()
        .take(80)
        .collect()
}

struct Stream<'o> {
    base: usize,
    options: &'o ScanOptions,
    depth_left: usize,
    stack: Vec<Sym>,
    marks: Vec<usize>,
    memo: HashMap<u64, Sym>,
    ops: u64,
    string_bytes: u64,
    dups: u64,
    gets: u64,
    puts: u64,
    missing_memo: u64,
    heaviest: u64,
    proto_seen: bool,
    memo_full: bool,
    /// Tuples were nested deeper than the loader allows (reported once per stream).
    too_deep: bool,
    too_deep_reported: bool,
    /// Allowlisted imports and calls, summarised at the end of the stream:
    /// (kind, name) -> (count, first offset).
    benign: BTreeMap<(&'static str, String), (u64, usize)>,
    nested_seen: HashSet<(usize, usize)>,
    nested_count: usize,
}

impl<'o> Stream<'o> {
    fn new(base: usize, options: &'o ScanOptions, depth_left: usize) -> Stream<'o> {
        Stream {
            base,
            options,
            depth_left,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            ops: 0,
            string_bytes: 0,
            dups: 0,
            gets: 0,
            puts: 0,
            missing_memo: 0,
            heaviest: 0,
            proto_seen: false,
            memo_full: false,
            too_deep: false,
            too_deep_reported: false,
            benign: BTreeMap::new(),
            nested_seen: HashSet::new(),
            nested_count: 0,
        }
    }

    /// Scans one stream; `Some(consumed)` when it ended with `STOP`.
    ///
    /// When a cap on the simulation is hit (opcodes, stack entries, open `MARK`s), the rest of
    /// the stream is still read, linearly and for imports only ([`Stream::read_imports_only`]),
    /// so that a bomb in front of a payload cannot hide the payload's name.
    fn run(&mut self, bytes: &[u8], report: &mut Report) -> Option<usize> {
        let mut decoder = Decoder::new(bytes);
        let mut recent = RecentPushes::default();
        loop {
            let Some(item) = decoder.next() else {
                self.missing_stop(&decoder, report);
                return None;
            };
            let (offset, op) = match item {
                Ok(item) => item,
                Err(error) => {
                    self.decode_failure(&error, report);
                    return None;
                }
            };
            self.ops += 1;
            let limits = self.options.limits;
            if self.ops > limits.max_ops {
                report.add(
                    Severity::Suspicious,
                    "resource_limit",
                    format!(
                        "offset {}: more than {} opcodes; {IMPORTS_ONLY}",
                        self.base + offset,
                        limits.max_ops
                    ),
                );
                return self.read_imports_only(Some((offset, op)), &mut decoder, recent, report);
            }
            if let Op::Stop = op {
                return Some(decoder.position());
            }
            if let Op::StackGlobal = op {
                self.stack_global(self.base + offset, &recent, report);
            } else {
                self.step(self.base + offset, op, report);
            }
            recent.observe(op);
            if self.too_deep && !self.too_deep_reported {
                self.too_deep_reported = true;
                report.add(
                    Severity::Suspicious,
                    "resource_limit",
                    format!(
                        "offset {}: containers nested deeper than {} levels (the loader refuses \
                         this; deep nesting is how recursive readers are crashed)",
                        self.base + offset,
                        limits.max_depth.min(super::unpickler::MAX_DEPTH_CEILING)
                    ),
                );
            }
            if self.stack.len() > limits.max_stack || self.marks.len() > limits.max_mark_depth {
                report.add(
                    Severity::Suspicious,
                    "resource_limit",
                    format!(
                        "offset {}: more than {} stack entries or {} open MARKs; {IMPORTS_ONLY}",
                        self.base + offset,
                        limits.max_stack,
                        limits.max_mark_depth
                    ),
                );
                // The simulated stack is dropped: the linear pass needs none of it.
                self.stack = Vec::new();
                self.marks = Vec::new();
                return self.read_imports_only(None, &mut decoder, recent, report);
            }
        }
    }

    /// The rest of a stream after a cap: opcodes are decoded (by the same [`Decoder`], so frames
    /// are still enforced) but not simulated, and every import is reported: `GLOBAL` and `INST`
    /// by name, `STACK_GLOBAL` by the two literal strings pushed just before it, or as
    /// unresolved, and `EXT*` by code. Its work is one decode per opcode, bounded by the
    /// stream's bytes, and it stops once the findings are full. `pending` is an opcode already
    /// decoded but not yet handled. `Some(consumed)` when the stream ends with `STOP`.
    fn read_imports_only<'a>(
        &mut self,
        mut pending: Option<(usize, Op<'a>)>,
        decoder: &mut Decoder<'a>,
        mut recent: RecentPushes<'a>,
        report: &mut Report,
    ) -> Option<usize> {
        loop {
            if report.truncated {
                return None;
            }
            let (offset, op) = match pending.take().map(Ok).or_else(|| decoder.next()) {
                None => {
                    self.missing_stop(decoder, report);
                    return None;
                }
                Some(Err(error)) => {
                    self.decode_failure(&error, report);
                    return None;
                }
                Some(Ok(item)) => item,
            };
            let offset = self.base + offset;
            match op {
                Op::Stop => return Some(Decoder::position(decoder)),
                Op::Global { module, name } => {
                    self.import(offset, module, name, "GLOBAL", report);
                }
                Op::Inst { module, name } => {
                    self.import(offset, module, name, "INST", report);
                }
                Op::StackGlobal => match recent.literal_operands() {
                    Some((module, name)) => {
                        self.import(offset, &module, &name, LITERAL_STACK_GLOBAL, report);
                    }
                    None => report.add(
                        Severity::Dangerous,
                        "unknown_import",
                        format!(
                            "offset {offset}: STACK_GLOBAL with unresolved operands (read after \
                             a resource limit, and not two literal strings pushed just before \
                             it); the real import is unknown"
                        ),
                    ),
                },
                Op::Ext1(code) => report_ext(offset, "EXT1", i64::from(code), report),
                Op::Ext2(code) => report_ext(offset, "EXT2", i64::from(code), report),
                Op::Ext4(code) => report_ext(offset, "EXT4", i64::from(code), report),
                _ => {}
            }
            recent.observe(op);
        }
    }

    fn missing_stop(&self, decoder: &Decoder<'_>, report: &mut Report) {
        report.add(
            Severity::Suspicious,
            "parse_error",
            format!(
                "offset {}: the stream ends without a STOP opcode",
                self.base + decoder.position()
            ),
        );
    }

    fn decode_failure(&self, error: &opcodes::DecodeError, report: &mut Report) {
        let at = self.base + error.offset;
        let (severity, kind) = if error.is_frame_violation() {
            (Severity::Dangerous, "frame_violation")
        } else if matches!(error.kind, DecodeErrorKind::UnknownOpcode(_)) {
            (Severity::Suspicious, "invalid_opcode")
        } else {
            (Severity::Suspicious, "parse_error")
        };
        report.add(severity, kind, format!("offset {at}: {}", error.kind));
    }

    fn fence(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self) -> Sym {
        if self.stack.len() > self.fence() {
            self.stack.pop().unwrap_or_else(Sym::unknown)
        } else {
            Sym::unknown()
        }
    }

    fn pop_mark(&mut self) -> Vec<Sym> {
        let mark = self.marks.pop().unwrap_or(0).min(self.stack.len());
        self.stack.split_off(mark)
    }

    fn top_mut(&mut self) -> Option<&mut Sym> {
        if self.stack.len() > self.fence() {
            self.stack.last_mut()
        } else {
            None
        }
    }

    fn push(&mut self, sym: Sym) {
        self.heaviest = self.heaviest.max(sym.weight());
        self.stack.push(sym);
    }

    fn container(&mut self, kind: &'static str, items: &[Sym]) -> Sym {
        let weight = items
            .iter()
            .fold(1u64, |acc, item| acc.saturating_add(item.weight()));
        Sym::Other { kind, weight }
    }

    fn tuple(&mut self, items: Vec<Sym>) -> Sym {
        let weight = items
            .iter()
            .fold(1u64, |acc, item| acc.saturating_add(item.weight()));
        let depth = 1 + items
            .iter()
            .map(|item| match item {
                Sym::Tuple { depth, .. } => *depth,
                _ => 0,
            })
            .max()
            .unwrap_or(0);
        if depth
            > self
                .options
                .limits
                .max_depth
                .min(super::unpickler::MAX_DEPTH_CEILING)
        {
            // Keep the weight, drop the structure (bounded drop depth).
            self.too_deep = true;
            return Sym::Other {
                kind: "tuple",
                weight,
            };
        }
        Sym::Tuple {
            items: items.into(),
            weight,
            depth,
        }
    }

    /// Adds `weight` to the container on top of the stack (APPEND and friends).
    fn grow_top(&mut self, weight: u64) {
        if let Some(Sym::Other { weight: w, .. }) = self.top_mut() {
            *w = w.saturating_add(weight);
            let w = *w;
            self.heaviest = self.heaviest.max(w);
        }
    }

    fn text_sym(&mut self, text: &str) -> Sym {
        self.string_bytes = self.string_bytes.saturating_add(text.len() as u64);
        if self.string_bytes > self.options.limits.max_string_bytes {
            return Sym::other("str");
        }
        Sym::Str {
            text: Rc::from(text),
            origin: Origin::Literal,
        }
    }

    fn bytes_sym(&mut self, bytes: &[u8], offset: usize) -> Sym {
        self.string_bytes = self.string_bytes.saturating_add(bytes.len() as u64);
        if self.string_bytes > self.options.limits.max_string_bytes {
            return Sym::other("bytes");
        }
        Sym::Bytes {
            data: Rc::from(bytes),
            offset,
        }
    }

    /// Python 2 `str` (and protocol-0 `STRING`): text when it is UTF-8, bytes otherwise.
    fn py2_str(&mut self, bytes: &[u8], offset: usize) -> Sym {
        match std::str::from_utf8(bytes) {
            Ok(text) => self.text_sym(text),
            Err(_) => self.bytes_sym(bytes, offset),
        }
    }

    fn benign(&mut self, kind: &'static str, name: &str, offset: usize) {
        let entry = self
            .benign
            .entry((kind, name.to_string()))
            .or_insert((0, offset));
        entry.0 += 1;
    }

    fn import(
        &mut self,
        offset: usize,
        module: &str,
        name: &str,
        how: &str,
        report: &mut Report,
    ) -> Sym {
        let qualified = printable_name(module, name);
        let allowed = allowlist::resolve(module, name);
        if name.contains('.') || module.split('.').chain(name.split('.')).any(is_dunder) {
            report.add(
                Severity::Dangerous,
                "dotted_name",
                format!(
                    "offset {offset}: {qualified} uses attribute traversal or a dunder name \
                     (reaches objects other than the named one)"
                ),
            );
        }
        match allowed {
            Some(Global::UnsupportedStorage) | None => report.add(
                Severity::Dangerous,
                "import",
                format!("offset {offset}: {qualified} imported by {how}; not in the allowlist"),
            ),
            Some(_) => self.benign("import", &qualified, offset),
        }
        Sym::Global {
            name: Rc::from(qualified),
            allowed: allowed.filter(|g| *g != Global::UnsupportedStorage),
        }
    }

    fn call(&mut self, offset: usize, opcode: &str, callee: &Sym, report: &mut Report) -> Sym {
        let name = callee.callee_name();
        let allowed = match callee {
            Sym::Global {
                allowed: Some(global),
                ..
            } if opcode == "REDUCE" && global.is_callable() => Some(*global),
            _ => None,
        };
        if allowed.is_some() {
            self.benign("call", &name, offset);
        } else {
            report.add(
                Severity::Dangerous,
                "call",
                format!("offset {offset}: {opcode} calls {name}"),
            );
        }
        Sym::Call {
            callee: Rc::from(name),
            allowed,
        }
    }

    /// Scans byte strings in call arguments that look like pickles.
    fn nested(&mut self, args: &Sym, report: &mut Report) {
        // Each candidate is keyed by the allocation it came from, so a value reused through
        // the memo is scanned once: the total nested work per level is bounded by the size of
        // the stream's own arguments.
        let mut candidates: Vec<NestedCandidate> = Vec::new();
        let mut visit = |sym: &Sym| match sym {
            Sym::Bytes { data, offset } => {
                candidates.push(((data.as_ptr() as usize, data.len()), data.clone(), *offset));
            }
            Sym::Str { text, .. } => {
                // `pickle.loads` takes bytes; a text argument matters once latin-1 encoded.
                if let Some(data) = latin1(text) {
                    candidates.push(((text.as_ptr() as usize, text.len()), data.into(), 0));
                }
            }
            _ => {}
        };
        match args {
            Sym::Tuple { items, .. } => {
                for item in items.iter() {
                    visit(item);
                    if let Sym::Tuple { items, .. } = item {
                        items.iter().for_each(&mut visit);
                    }
                }
            }
            other => visit(other),
        }
        for (identity, data, offset) in candidates {
            if self.depth_left == 0 || !self.nested_seen.insert(identity) {
                continue;
            }
            if !looks_like_pickle(&data) {
                continue;
            }
            self.nested_count += 1;
            if self.nested_count > MAX_NESTED_PER_STREAM {
                return;
            }
            report.add(
                Severity::Dangerous,
                "nested_pickle",
                format!(
                    "offset {offset}: a call argument of {} bytes is itself a pickle",
                    data.len()
                ),
            );
            let saved = std::mem::take(&mut report.prefix);
            report.prefix = format!("{saved}nested pickle at offset {offset}: ");
            let nested_options = ScanOptions {
                max_streams: None,
                ..*self.options
            };
            scan_streams(&data, &nested_options, self.depth_left - 1, report);
            report.prefix = saved;
        }
    }

    fn step(&mut self, offset: usize, op: Op<'_>, report: &mut Report) {
        match op {
            Op::Proto(protocol) => {
                if self.proto_seen {
                    report.add(
                        Severity::Suspicious,
                        "duplicate_proto",
                        format!("offset {offset}: a second PROTO opcode"),
                    );
                } else if offset != self.base {
                    report.add(
                        Severity::Suspicious,
                        "misplaced_proto",
                        format!(
                            "offset {offset}: PROTO {protocol} after the first opcode (switches \
                             how CPython resolves names mid-stream)"
                        ),
                    );
                }
                if protocol > 5 {
                    report.add(
                        Severity::Suspicious,
                        "unsupported_protocol",
                        format!("offset {offset}: PROTO {protocol} (0 to 5 exist)"),
                    );
                }
                self.proto_seen = true;
            }
            Op::Frame(_) | Op::Stop => {}
            Op::Mark => self.marks.push(self.stack.len()),
            Op::Pop => {
                if self.stack.len() <= self.fence() && !self.marks.is_empty() {
                    self.marks.pop();
                } else if let Sym::Call {
                    callee,
                    allowed: None,
                } = self.pop()
                {
                    report.add(
                        Severity::Suspicious,
                        "discarded_call_result",
                        format!(
                            "offset {offset}: the result of {callee} is discarded (a call made \
                             only for its side effects)"
                        ),
                    );
                }
            }
            Op::PopMark => {
                self.pop_mark();
            }
            Op::Dup => {
                self.dups += 1;
                let top = self.top_mut().cloned().unwrap_or_else(Sym::unknown);
                self.push(top);
            }
            Op::None
            | Op::NewTrue
            | Op::NewFalse
            | Op::Int(_)
            | Op::IntBool(_)
            | Op::BinInt(_)
            | Op::BinInt1(_)
            | Op::BinInt2(_)
            | Op::Long(_)
            | Op::Long1(_)
            | Op::Long4(_)
            | Op::Float(_)
            | Op::BinFloat(_) => self.push(Sym::other("number")),
            Op::String(escaped) => {
                let sym = match opcodes::decode_string_escape(escaped) {
                    Some(raw) => self.py2_str(&raw, offset),
                    None => Sym::other("str"),
                };
                self.push(sym);
            }
            Op::BinString(bytes) | Op::ShortBinString(bytes) => {
                let sym = self.py2_str(bytes, offset);
                self.push(sym);
            }
            Op::Unicode(escaped) => {
                let sym = match opcodes::decode_raw_unicode_escape(escaped) {
                    Some(text) => self.text_sym(&text),
                    None => Sym::other("str"),
                };
                self.push(sym);
            }
            Op::ShortBinUnicode(bytes) | Op::BinUnicode(bytes) | Op::BinUnicode8(bytes) => {
                let sym = match std::str::from_utf8(bytes) {
                    Ok(text) => self.text_sym(text),
                    Err(_) => Sym::other("str"),
                };
                self.push(sym);
            }
            Op::ShortBinBytes(bytes)
            | Op::BinBytes(bytes)
            | Op::BinBytes8(bytes)
            | Op::ByteArray8(bytes) => {
                let sym = self.bytes_sym(bytes, offset);
                self.push(sym);
            }
            Op::NextBuffer => {
                report.add(
                    Severity::Suspicious,
                    "out_of_band_buffer",
                    format!("offset {offset}: NEXT_BUFFER refers to data outside the pickle"),
                );
                self.push(Sym::other("buffer"));
            }
            Op::ReadonlyBuffer => {}
            Op::EmptyTuple => {
                let sym = self.tuple(Vec::new());
                self.push(sym);
            }
            Op::Tuple => {
                let items = self.pop_mark();
                let sym = self.tuple(items);
                self.push(sym);
            }
            Op::Tuple1 | Op::Tuple2 | Op::Tuple3 => {
                let n = match op {
                    Op::Tuple1 => 1,
                    Op::Tuple2 => 2,
                    _ => 3,
                };
                let mut items: Vec<Sym> = (0..n).map(|_| self.pop()).collect();
                items.reverse();
                let sym = self.tuple(items);
                self.push(sym);
            }
            Op::EmptyList | Op::EmptyDict | Op::EmptySet => self.push(Sym::other("container")),
            Op::List | Op::Dict | Op::FrozenSet => {
                let items = self.pop_mark();
                let sym = self.container("container", &items);
                self.push(sym);
            }
            Op::Append => {
                let item = self.pop();
                self.grow_top(item.weight());
            }
            Op::SetItem => {
                let value = self.pop();
                let key = self.pop();
                self.grow_top(value.weight().saturating_add(key.weight()));
            }
            Op::Appends | Op::SetItems | Op::AddItems => {
                let items = self.pop_mark();
                let weight = items
                    .iter()
                    .fold(0u64, |acc, item| acc.saturating_add(item.weight()));
                self.grow_top(weight);
            }
            Op::Global { module, name } => {
                let sym = self.import(offset, module, name, "GLOBAL", report);
                self.push(sym);
            }
            Op::Inst { module, name } => {
                let global = self.import(offset, module, name, "INST", report);
                let args = self.pop_mark();
                let args = self.tuple(args);
                let result = self.call(offset, "INST", &global, report);
                self.nested(&args, report);
                self.push(result);
            }
            // Handled by `stack_global`, which also sees the recent literal pushes.
            Op::StackGlobal => {}
            Op::Reduce => {
                let args = self.pop();
                let callable = self.pop();
                let result = self.call(offset, "REDUCE", &callable, report);
                self.nested(&args, report);
                // `_codecs.encode(str, "latin1")` is how protocol 2 writes bytes; keep them
                // visible for nested-pickle detection.
                let result = match (&callable, &args) {
                    (
                        Sym::Global {
                            allowed: Some(Global::CodecsEncode),
                            ..
                        },
                        Sym::Tuple { items, .. },
                    ) => match items.first() {
                        Some(Sym::Str { text, .. }) => match latin1(text) {
                            Some(data) => self.bytes_sym(&data, offset),
                            None => result,
                        },
                        _ => result,
                    },
                    _ => result,
                };
                self.push(result);
            }
            Op::NewObj => {
                let args = self.pop();
                let cls = self.pop();
                let result = self.call(offset, "NEWOBJ", &cls, report);
                self.nested(&args, report);
                self.push(result);
            }
            Op::NewObjEx => {
                let _kwargs = self.pop();
                let args = self.pop();
                let cls = self.pop();
                let result = self.call(offset, "NEWOBJ_EX", &cls, report);
                self.nested(&args, report);
                self.push(result);
            }
            Op::Obj => {
                let mut items = self.pop_mark();
                let cls = if items.is_empty() {
                    Sym::unknown()
                } else {
                    items.remove(0)
                };
                let result = self.call(offset, "OBJ", &cls, report);
                let args = self.tuple(items);
                self.nested(&args, report);
                self.push(result);
            }
            Op::Build => {
                let _state = self.pop();
                let target = self.top_mut().cloned().unwrap_or_else(Sym::unknown);
                match &target {
                    Sym::Call {
                        callee,
                        allowed:
                            Some(
                                Global::OrderedDict
                                | Global::RebuildTensorV2
                                | Global::RebuildTensorV3
                                | Global::RebuildTensor
                                | Global::RebuildParameter
                                | Global::RebuildParameterWithState,
                            ),
                    } => {
                        let callee = callee.to_string();
                        self.benign("build", &callee, offset);
                    }
                    Sym::Global { name, .. } => report.add(
                        Severity::Dangerous,
                        "build",
                        format!(
                            "offset {offset}: BUILD writes attributes of {name} itself (a module \
                             or function: changes it for the whole process)"
                        ),
                    ),
                    other => report.add(
                        Severity::Dangerous,
                        "build",
                        format!(
                            "offset {offset}: BUILD sets state on {} (__setstate__ or attribute \
                             writes)",
                            other.describe()
                        ),
                    ),
                }
            }
            Op::Ext1(code) => self.ext(offset, "EXT1", i64::from(code), report),
            Op::Ext2(code) => self.ext(offset, "EXT2", i64::from(code), report),
            Op::Ext4(code) => self.ext(offset, "EXT4", i64::from(code), report),
            Op::PersId(_) => {
                self.benign("persistent_id", "PERSID", offset);
                self.push(Sym::other("persistent object"));
            }
            Op::BinPersId => {
                self.pop();
                self.benign("persistent_id", "BINPERSID", offset);
                self.push(Sym::other("persistent object"));
            }
            Op::Put(index) => self.put(index, report, offset),
            Op::BinPut(index) => self.put(u64::from(index), report, offset),
            Op::LongBinPut(index) => self.put(u64::from(index), report, offset),
            Op::Memoize => {
                let index = self.memo.len() as u64;
                self.put(index, report, offset);
            }
            Op::Get(index) => self.get(index, report, offset),
            Op::BinGet(index) => self.get(u64::from(index), report, offset),
            Op::LongBinGet(index) => self.get(u64::from(index), report, offset),
        }
    }

    /// `STACK_GLOBAL`: module and name from the simulated stack; when they are not strings
    /// there (a string past the string-bytes cap is not kept), the two literal strings pushed
    /// just before it, if that is what they were.
    fn stack_global(&mut self, offset: usize, recent: &RecentPushes<'_>, report: &mut Report) {
        let name = self.pop();
        let module = self.pop();
        let sym = match (&module, &name) {
            (
                Sym::Str {
                    text: m,
                    origin: mo,
                },
                Sym::Str {
                    text: n,
                    origin: no,
                },
            ) => {
                let how = if *mo == Origin::Literal && *no == Origin::Literal {
                    LITERAL_STACK_GLOBAL
                } else {
                    "STACK_GLOBAL (operands from the memo)"
                };
                let (m, n) = (m.clone(), n.clone());
                self.import(offset, &m, &n, how, report)
            }
            _ => match recent.literal_operands() {
                Some((m, n)) => self.import(offset, &m, &n, LITERAL_STACK_GLOBAL, report),
                None => {
                    let part = |sym: &Sym| match sym {
                        Sym::Str { text, .. } => truncate(text),
                        _ => "?".to_string(),
                    };
                    let qualified = format!("{}.{}", part(&module), part(&name));
                    report.add(
                        Severity::Dangerous,
                        "unknown_import",
                        format!(
                            "offset {offset}: STACK_GLOBAL imports {qualified} with computed \
                             operands (module: {}; name: {}); the real import is unknown",
                            module.describe(),
                            name.describe()
                        ),
                    );
                    Sym::Global {
                        name: Rc::from(qualified),
                        allowed: None,
                    }
                }
            },
        };
        self.push(sym);
    }

    fn ext(&mut self, offset: usize, opcode: &str, code: i64, report: &mut Report) {
        report_ext(offset, opcode, code, report);
        self.push(Sym::Global {
            name: Rc::from(format!("<extension {code}>")),
            allowed: None,
        });
    }

    fn put(&mut self, index: u64, report: &mut Report, offset: usize) {
        self.puts += 1;
        let mut value = self.top_mut().cloned().unwrap_or_else(Sym::unknown);
        if let Sym::Str { origin, .. } = &mut value {
            *origin = Origin::Memo;
        }
        if !self.memo.contains_key(&index) && self.memo.len() >= self.options.limits.max_memo {
            if !self.memo_full {
                self.memo_full = true;
                report.add(
                    Severity::Suspicious,
                    "resource_limit",
                    format!(
                        "offset {offset}: more than {} memo entries; later ones are not tracked",
                        self.options.limits.max_memo
                    ),
                );
            }
            return;
        }
        self.memo.insert(index, value);
    }

    fn get(&mut self, index: u64, report: &mut Report, offset: usize) {
        self.gets += 1;
        let value = match self.memo.get(&index) {
            Some(value) => value.clone(),
            None => {
                self.missing_memo += 1;
                if self.missing_memo <= 10 {
                    report.add(
                        Severity::Suspicious,
                        "invalid_memo",
                        format!(
                            "offset {offset}: GET of memo slot {index}, which was never stored"
                        ),
                    );
                }
                Sym::unknown()
            }
        };
        self.push(value);
    }

    fn summarise(&mut self, report: &mut Report) {
        let benign = std::mem::take(&mut self.benign);
        for ((kind, name), (count, first)) in benign {
            let detail = match kind {
                "import" => format!("offset {first}: {name} (allowlisted)"),
                "persistent_id" => {
                    format!("offset {first}: {count} storage references ({name})")
                }
                _ => format!("offset {first}: {name} ({count} times, allowlisted)"),
            };
            report.add(Severity::Info, kind, detail);
        }
        let limits = self.options.limits;
        if self.heaviest > limits.max_values {
            report.add(
                Severity::Dangerous,
                "expansion_bomb",
                format!(
                    "stream at offset {}: a value would expand to more than {} objects \
                     (shared references copied)",
                    self.base, limits.max_values
                ),
            );
        }
        if self.dups > 100 {
            report.add(
                Severity::Suspicious,
                "expansion_bomb",
                format!(
                    "stream at offset {}: {} DUP opcodes (torch.save writes none)",
                    self.base, self.dups
                ),
            );
        }
        if self.gets >= 50 && self.gets > self.puts.saturating_mul(10) {
            report.add(
                Severity::Suspicious,
                "expansion_bomb",
                format!(
                    "stream at offset {}: {} memo GETs for {} PUTs",
                    self.base, self.gets, self.puts
                ),
            );
        }
    }
}

/// How a `STACK_GLOBAL` with two literal string operands is named in findings.
const LITERAL_STACK_GLOBAL: &str = "STACK_GLOBAL (literal operands)";

/// What a resource-limit finding says happens next.
const IMPORTS_ONLY: &str =
    "the stack is no longer simulated; the rest of the stream is read for imports only";

fn report_ext(offset: usize, opcode: &str, code: i64, report: &mut Report) {
    report.add(
        Severity::Dangerous,
        "extension_import",
        format!(
            "offset {offset}: {opcode} {code} imports whatever the copyreg extension registry \
             maps code {code} to (unknown import)"
        ),
    );
}

/// The two values on top of the stack, as far as the opcodes just read tell without a
/// simulated stack: each is the literal string opcode that pushed it, or `None` (not a string,
/// or not known). Opcodes that leave the stack as it is (`PUT`, `MEMOIZE`, `FRAME`, ...) keep
/// them; an opcode that pops, or whose effect is not a plain push, forgets both. So when both
/// are `Some`, they are exactly the operands a `STACK_GLOBAL` would pop.
#[derive(Debug, Clone, Copy, Default)]
struct RecentPushes<'a> {
    below_top: Option<Op<'a>>,
    top: Option<Op<'a>>,
}

impl<'a> RecentPushes<'a> {
    fn observe(&mut self, op: Op<'a>) {
        match op {
            Op::String(_)
            | Op::BinString(_)
            | Op::ShortBinString(_)
            | Op::Unicode(_)
            | Op::ShortBinUnicode(_)
            | Op::BinUnicode(_)
            | Op::BinUnicode8(_) => self.push(Some(op)),
            Op::Put(_)
            | Op::BinPut(_)
            | Op::LongBinPut(_)
            | Op::Memoize
            | Op::Frame(_)
            | Op::Proto(_) => {}
            Op::Dup => self.below_top = self.top,
            Op::None
            | Op::NewTrue
            | Op::NewFalse
            | Op::Int(_)
            | Op::IntBool(_)
            | Op::BinInt(_)
            | Op::BinInt1(_)
            | Op::BinInt2(_)
            | Op::Long(_)
            | Op::Long1(_)
            | Op::Long4(_)
            | Op::Float(_)
            | Op::BinFloat(_)
            | Op::ShortBinBytes(_)
            | Op::BinBytes(_)
            | Op::BinBytes8(_)
            | Op::ByteArray8(_)
            | Op::EmptyTuple
            | Op::EmptyList
            | Op::EmptyDict
            | Op::EmptySet
            | Op::Get(_)
            | Op::BinGet(_)
            | Op::LongBinGet(_)
            | Op::Global { .. }
            | Op::PersId(_)
            | Op::NextBuffer => self.push(None),
            _ => *self = RecentPushes::default(),
        }
    }

    fn push(&mut self, value: Option<Op<'a>>) {
        self.below_top = self.top;
        self.top = value;
    }

    /// `(module, name)` when the two values on top are literal strings (decoded as the
    /// simulation decodes them: UTF-8, or the protocol-0 escapes).
    fn literal_operands(&self) -> Option<(String, String)> {
        Some((literal_text(self.below_top?)?, literal_text(self.top?)?))
    }
}

/// The text a string-pushing opcode pushes, when it is valid text.
fn literal_text(op: Op<'_>) -> Option<String> {
    match op {
        Op::String(escaped) => String::from_utf8(opcodes::decode_string_escape(escaped)?).ok(),
        Op::Unicode(escaped) => opcodes::decode_raw_unicode_escape(escaped),
        Op::BinString(bytes)
        | Op::ShortBinString(bytes)
        | Op::ShortBinUnicode(bytes)
        | Op::BinUnicode(bytes)
        | Op::BinUnicode8(bytes) => std::str::from_utf8(bytes).ok().map(str::to_string),
        _ => None,
    }
}

fn is_dunder(part: &str) -> bool {
    part.len() > 4 && part.starts_with("__") && part.ends_with("__")
}

fn latin1(text: &str) -> Option<Vec<u8>> {
    text.chars()
        .map(|c| u8::try_from(u32::from(c)).ok())
        .collect()
}
