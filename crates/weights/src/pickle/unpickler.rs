//! The restricted pickle virtual machine.
//!
//! It runs the opcodes of one stream over an inert value model: globals resolve through the
//! [`allowlist`](super::allowlist) to [`Global`] tags, `REDUCE` dispatches on the tag to a Rust
//! constructor with a fixed argument schema, and nothing is ever imported or called. Containers
//! live in an arena and are referenced by index, so memo sharing costs nothing while the VM runs
//! and cannot create reference cycles; the output [`Value`] tree is materialised at `STOP` under
//! the [`Limits`] budget, which is what turns a "billion laughs" stream into a quick error.
//!
//! Refused outright: `INST`, `OBJ`, `NEWOBJ`, `NEWOBJ_EX`, `EXT1/2/4`, sets, `BYTEARRAY8` and
//! out-of-band buffers, text `PERSID`, `PROTO` anywhere but first, `REDUCE` of anything but an
//! allowlisted callable, `BUILD` except an `OrderedDict`'s `{"_metadata": ...}` state (dropped)
//! and an empty state on a tensor, `APPEND(S)` onto anything but a list, `SETITEM(S)` onto
//! anything but a dict.

use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use super::allowlist::{self, Global};
use super::opcodes::{self, Decoder, Op};
use super::{
    Limits, PersistentIds, PickleError, StorageRef, TensorRecipe, UnpickleOptions, Unpickled,
    Value, printable_name,
};
use crate::dtype::Dtype;

/// Most dimensions a tensor may have.
pub const MAX_RANK: usize = 64;

/// Hard ceiling on [`Limits::max_depth`]: output materialisation recurses once per level.
pub const MAX_DEPTH_CEILING: usize = 1000;

/// Runs the restricted unpickler over one pickle stream at the start of `bytes`, up to and
/// including its `STOP` opcode. Bytes after `STOP` are not read; [`Unpickled::consumed`] says
/// where the stream ended.
///
/// ```
/// use safeformers_weights::pickle::{unpickle, UnpickleOptions, PersistentIds, Value};
/// let options = UnpickleOptions { persistent_ids: PersistentIds::Forbidden, limits: Default::default() };
/// // PROTO 2, BININT1 7, STOP, then unrelated bytes
/// let out = unpickle(b"\x80\x02K\x07.trailing", &options).unwrap();
/// assert_eq!(out.value, Value::Int(7));
/// assert_eq!(out.consumed, 5);
/// // GLOBAL os system: refused by policy, naming the global
/// let err = unpickle(b"cos\nsystem\n.", &options).unwrap_err();
/// assert!(err.is_policy_refusal());
/// assert!(err.to_string().contains("os.system"));
/// ```
pub fn unpickle(bytes: &[u8], options: &UnpickleOptions) -> Result<Unpickled, PickleError> {
    let mut vm = Vm::new(options);
    let mut decoder = Decoder::new(bytes);
    let mut ops: u64 = 0;
    loop {
        let Some(item) = decoder.next() else {
            return Err(PickleError::MissingStop {
                offset: decoder.position(),
            });
        };
        let (offset, op) = item?;
        ops += 1;
        if ops > options.limits.max_ops {
            return Err(PickleError::LimitExceeded {
                offset,
                limit: "opcodes",
                max: options.limits.max_ops,
            });
        }
        vm.offset = offset;
        if let Op::Stop = op {
            let value = vm.finish()?;
            return Ok(Unpickled {
                value,
                consumed: decoder.position(),
            });
        }
        vm.step(op)?;
    }
}

/// A value on the VM's stack or in its memo. Cheap to clone: containers are arena indices,
/// everything else is `Copy` or reference-counted and immutable.
#[derive(Debug, Clone)]
enum V {
    None,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
    Tuple(Rc<TupleNode>),
    List(usize),
    Dict(usize),
    Tensor(Rc<TensorRecipe>),
    /// A storage from a persistent id; `untyped` for `UntypedStorage` (numel in bytes).
    Storage {
        storage: Rc<StorageRef>,
        untyped: bool,
    },
    Global(Global, Rc<str>),
}

#[derive(Debug)]
struct TupleNode {
    /// Tuple nesting depth (tuples are the only values that nest by ownership).
    depth: usize,
    items: Vec<V>,
}

impl V {
    fn kind(&self) -> &'static str {
        match self {
            V::None => "None",
            V::Bool(_) => "bool",
            V::Int(_) => "int",
            V::Float(_) => "float",
            V::Str(_) => "str",
            V::Bytes(_) => "bytes",
            V::Tuple(_) => "tuple",
            V::List(_) => "list",
            V::Dict(_) => "dict",
            V::Tensor(_) => "tensor",
            V::Storage { .. } => "storage",
            V::Global(..) => "global",
        }
    }
}

#[derive(Debug)]
enum Container {
    List(Vec<V>),
    Dict {
        ordered: bool,
        items: Vec<(V, V)>,
        keys: HashSet<Key>,
    },
}

/// A dict key, compared the way Python compares them (`True == 1 == 1.0`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    None,
    Int(i128),
    Float(u64),
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
    Tuple(Vec<Key>),
}

fn key_of(value: &V) -> Option<Key> {
    Some(match value {
        V::None => Key::None,
        V::Bool(b) => Key::Int(i128::from(*b)),
        V::Int(i) => Key::Int(*i),
        V::Float(f) => {
            if f.fract() == 0.0 && f.abs() < 1e38 {
                // Integral floats equal the integer (1.0 == 1); the bound keeps the cast exact.
                #[allow(clippy::cast_possible_truncation)]
                Key::Int(*f as i128)
            } else {
                Key::Float(f.to_bits())
            }
        }
        V::Str(s) => Key::Str(s.clone()),
        V::Bytes(b) => Key::Bytes(b.clone()),
        V::Tuple(t) => Key::Tuple(t.items.iter().map(key_of).collect::<Option<_>>()?),
        _ => return None,
    })
}

struct Vm<'o> {
    options: &'o UnpickleOptions,
    /// Offset of the opcode being executed.
    offset: usize,
    stack: Vec<V>,
    /// Stack lengths at each open `MARK`.
    marks: Vec<usize>,
    memo: HashMap<u64, V>,
    arena: Vec<Container>,
    created: u64,
    string_bytes: u64,
    /// Storage key -> (dtype, numel, untyped), to reject one key with two meanings.
    storages: HashMap<String, (Dtype, u64, bool)>,
    seen_opcode: bool,
}

type R<T> = Result<T, PickleError>;

impl<'o> Vm<'o> {
    fn new(options: &'o UnpickleOptions) -> Vm<'o> {
        Vm {
            options,
            offset: 0,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            arena: Vec::new(),
            created: 0,
            string_bytes: 0,
            storages: HashMap::new(),
            seen_opcode: false,
        }
    }

    fn limits(&self) -> &Limits {
        &self.options.limits
    }

    fn limit(&self, limit: &'static str, max: u64) -> PickleError {
        PickleError::LimitExceeded {
            offset: self.offset,
            limit,
            max,
        }
    }

    fn invalid(&self, opcode: &'static str, reason: impl Into<String>) -> PickleError {
        PickleError::InvalidOperation {
            offset: self.offset,
            opcode,
            reason: reason.into(),
        }
    }

    fn forbidden(&self, opcode: &'static str, reason: impl Into<String>) -> PickleError {
        PickleError::ForbiddenOpcode {
            offset: self.offset,
            opcode,
            reason: reason.into(),
        }
    }

    /// Counts one newly created value against `max_values`.
    fn count_value(&mut self) -> R<()> {
        self.created += 1;
        if self.created > self.limits().max_values {
            return Err(self.limit("values", self.limits().max_values));
        }
        Ok(())
    }

    fn count_bytes(&mut self, n: usize) -> R<()> {
        self.string_bytes = self.string_bytes.saturating_add(n as u64);
        if self.string_bytes > self.limits().max_string_bytes {
            return Err(self.limit("bytes of strings", self.limits().max_string_bytes));
        }
        Ok(())
    }

    fn push(&mut self, value: V) -> R<()> {
        if self.stack.len() >= self.limits().max_stack {
            return Err(self.limit("stack entries", self.limits().max_stack as u64));
        }
        self.stack.push(value);
        Ok(())
    }

    /// Pushes a value created by this opcode.
    fn push_new(&mut self, value: V) -> R<()> {
        self.count_value()?;
        self.push(value)
    }

    fn fence(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self, opcode: &'static str) -> R<V> {
        if self.stack.len() <= self.fence() {
            return Err(self.invalid(opcode, "stack underflow"));
        }
        self.stack
            .pop()
            .ok_or_else(|| self.invalid(opcode, "stack underflow"))
    }

    fn top(&self, opcode: &'static str) -> R<&V> {
        if self.stack.len() <= self.fence() {
            return Err(self.invalid(opcode, "stack underflow"));
        }
        self.stack
            .last()
            .ok_or_else(|| self.invalid(opcode, "stack underflow"))
    }

    fn pop_mark(&mut self, opcode: &'static str) -> R<Vec<V>> {
        let Some(mark) = self.marks.pop() else {
            return Err(self.invalid(opcode, "no MARK on the stack"));
        };
        if mark > self.stack.len() {
            return Err(self.invalid(opcode, "no MARK on the stack"));
        }
        Ok(self.stack.split_off(mark))
    }

    fn new_container(&mut self, container: Container) -> R<usize> {
        self.count_value()?;
        self.arena.push(container);
        Ok(self.arena.len() - 1)
    }

    fn new_dict(&mut self, ordered: bool) -> R<usize> {
        self.new_container(Container::Dict {
            ordered,
            items: Vec::new(),
            keys: HashSet::new(),
        })
    }

    fn tuple(&mut self, items: Vec<V>) -> R<V> {
        let depth = 1 + items
            .iter()
            .map(|item| match item {
                V::Tuple(t) => t.depth,
                _ => 0,
            })
            .max()
            .unwrap_or(0);
        let max_depth = self.limits().max_depth.min(MAX_DEPTH_CEILING);
        if depth > max_depth {
            return Err(self.limit("levels of tuple nesting", max_depth as u64));
        }
        self.count_value()?;
        Ok(V::Tuple(Rc::new(TupleNode { depth, items })))
    }

    fn text(&mut self, opcode: &'static str, bytes: &[u8]) -> R<V> {
        let text = std::str::from_utf8(bytes).map_err(|_| PickleError::InvalidString {
            offset: self.offset,
            opcode,
        })?;
        self.count_bytes(text.len())?;
        Ok(V::Str(Rc::from(text)))
    }

    fn bytes(&mut self, bytes: &[u8]) -> R<V> {
        self.count_bytes(bytes.len())?;
        Ok(V::Bytes(Rc::from(bytes)))
    }

    fn global(&self, module: &str, name: &str) -> R<V> {
        match allowlist::resolve(module, name) {
            Some(Global::UnsupportedStorage) => Err(PickleError::UnsupportedStorage {
                offset: self.offset,
                name: printable_name(module, name),
            }),
            Some(global) => Ok(V::Global(global, Rc::from(format!("{module}.{name}")))),
            None => Err(PickleError::GlobalNotAllowed {
                module: module.to_string(),
                name: name.to_string(),
                offset: self.offset,
            }),
        }
    }

    fn memo_put(&mut self, opcode: &'static str, index: u64) -> R<()> {
        let value = self.top(opcode)?.clone();
        if !self.memo.contains_key(&index) && self.memo.len() >= self.limits().max_memo {
            return Err(self.limit("memo entries", self.limits().max_memo as u64));
        }
        self.memo.insert(index, value);
        Ok(())
    }

    fn memo_get(&mut self, index: u64) -> R<()> {
        let value = self
            .memo
            .get(&index)
            .cloned()
            .ok_or(PickleError::MemoMissing {
                offset: self.offset,
                index,
            })?;
        self.push(value)
    }

    fn int(&mut self, value: i128) -> R<()> {
        self.push_new(V::Int(value))
    }

    fn step(&mut self, op: Op<'_>) -> R<()> {
        let first = !self.seen_opcode;
        self.seen_opcode = true;
        match op {
            Op::Proto(protocol) => {
                if !first {
                    return Err(PickleError::MisplacedProto {
                        offset: self.offset,
                    });
                }
                if protocol > 5 {
                    return Err(PickleError::UnsupportedProtocol {
                        offset: self.offset,
                        protocol,
                    });
                }
            }
            // The decoder enforces frame boundaries; frames carry no meaning for values.
            Op::Frame(_) => {}
            // Handled by `unpickle` before `step`.
            Op::Stop => {}
            Op::Mark => {
                if self.marks.len() >= self.limits().max_mark_depth {
                    return Err(self.limit("open MARKs", self.limits().max_mark_depth as u64));
                }
                self.marks.push(self.stack.len());
            }
            Op::Pop => {
                // As Python does: POP with nothing above the last mark removes the mark.
                if self.stack.len() <= self.fence() && !self.marks.is_empty() {
                    self.marks.pop();
                } else {
                    self.pop("POP")?;
                }
            }
            Op::PopMark => {
                self.pop_mark("POP_MARK")?;
            }
            Op::Dup => {
                let value = self.top("DUP")?.clone();
                self.push(value)?;
            }
            Op::None => self.push_new(V::None)?,
            Op::NewTrue => self.push_new(V::Bool(true))?,
            Op::NewFalse => self.push_new(V::Bool(false))?,
            Op::IntBool(b) => self.push_new(V::Bool(b))?,
            Op::Int(i) | Op::Long(i) => self.int(i)?,
            Op::BinInt(i) => self.int(i128::from(i))?,
            Op::BinInt1(i) => self.int(i128::from(i))?,
            Op::BinInt2(i) => self.int(i128::from(i))?,
            Op::Long1(bytes) | Op::Long4(bytes) => {
                let value =
                    opcodes::le_signed_to_i128(bytes).ok_or(PickleError::IntegerTooLarge {
                        offset: self.offset,
                    })?;
                self.int(value)?;
            }
            Op::Float(f) | Op::BinFloat(f) => self.push_new(V::Float(f))?,
            Op::String(escaped) => {
                let raw =
                    opcodes::decode_string_escape(escaped).ok_or(PickleError::InvalidString {
                        offset: self.offset,
                        opcode: "STRING",
                    })?;
                let value = self.text("STRING", &raw)?;
                self.push_new(value)?;
            }
            Op::BinString(bytes) | Op::ShortBinString(bytes) => {
                // torch.load reads Python 2 `str` as UTF-8 text.
                let value = self.text(op.name(), bytes)?;
                self.push_new(value)?;
            }
            Op::Unicode(escaped) => {
                let text = opcodes::decode_raw_unicode_escape(escaped).ok_or(
                    PickleError::InvalidString {
                        offset: self.offset,
                        opcode: "UNICODE",
                    },
                )?;
                let value = self.text("UNICODE", text.as_bytes())?;
                self.push_new(value)?;
            }
            Op::ShortBinUnicode(bytes) | Op::BinUnicode(bytes) | Op::BinUnicode8(bytes) => {
                let value = self.text(op.name(), bytes)?;
                self.push_new(value)?;
            }
            Op::ShortBinBytes(bytes) | Op::BinBytes(bytes) | Op::BinBytes8(bytes) => {
                let value = self.bytes(bytes)?;
                self.push_new(value)?;
            }
            Op::ByteArray8(_)
            | Op::NextBuffer
            | Op::ReadonlyBuffer
            | Op::EmptySet
            | Op::AddItems
            | Op::FrozenSet => {
                return Err(self.forbidden(
                    op.name(),
                    "bytearrays, out-of-band buffers and sets never occur in weight files",
                ));
            }
            Op::EmptyTuple => {
                let value = self.tuple(Vec::new())?;
                self.push(value)?;
            }
            Op::Tuple => {
                let items = self.pop_mark("TUPLE")?;
                let value = self.tuple(items)?;
                self.push(value)?;
            }
            Op::Tuple1 | Op::Tuple2 | Op::Tuple3 => {
                let n = match op {
                    Op::Tuple1 => 1,
                    Op::Tuple2 => 2,
                    _ => 3,
                };
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.pop(op.name())?);
                }
                items.reverse();
                let value = self.tuple(items)?;
                self.push(value)?;
            }
            Op::EmptyList => {
                let id = self.new_container(Container::List(Vec::new()))?;
                self.push(V::List(id))?;
            }
            Op::List => {
                let items = self.pop_mark("LIST")?;
                let id = self.new_container(Container::List(items))?;
                self.push(V::List(id))?;
            }
            Op::Append => {
                let value = self.pop("APPEND")?;
                self.append("APPEND", vec![value])?;
            }
            Op::Appends => {
                let items = self.pop_mark("APPENDS")?;
                self.append("APPENDS", items)?;
            }
            Op::EmptyDict => {
                let id = self.new_dict(false)?;
                self.push(V::Dict(id))?;
            }
            Op::Dict => {
                let items = self.pop_mark("DICT")?;
                let id = self.new_dict(false)?;
                self.set_items("DICT", id, items)?;
                self.push(V::Dict(id))?;
            }
            Op::SetItem => {
                let value = self.pop("SETITEM")?;
                let key = self.pop("SETITEM")?;
                let id = self.dict_target("SETITEM")?;
                self.set_items("SETITEM", id, vec![key, value])?;
            }
            Op::SetItems => {
                let items = self.pop_mark("SETITEMS")?;
                let id = self.dict_target("SETITEMS")?;
                self.set_items("SETITEMS", id, items)?;
            }
            Op::Global { module, name } => {
                let value = self.global(module, name)?;
                self.push_new(value)?;
            }
            Op::StackGlobal => {
                let name = self.pop("STACK_GLOBAL")?;
                let module = self.pop("STACK_GLOBAL")?;
                let module = match module {
                    V::Str(s) => s,
                    other => {
                        return Err(PickleError::NonLiteralGlobal {
                            offset: self.offset,
                            operand: "module",
                            found: other.kind(),
                        });
                    }
                };
                let name = match name {
                    V::Str(s) => s,
                    other => {
                        return Err(PickleError::NonLiteralGlobal {
                            offset: self.offset,
                            operand: "name",
                            found: other.kind(),
                        });
                    }
                };
                let value = self.global(&module, &name)?;
                self.push_new(value)?;
            }
            Op::Inst { module, name } => {
                // Name the global if it is not allowed; refuse the opcode either way.
                let global = self.global(module, name)?;
                return Err(self.forbidden(
                    "INST",
                    format!(
                        "INST would call `{}`; the restricted unpickler only calls through REDUCE",
                        match global {
                            V::Global(_, qualified) => qualified.to_string(),
                            _ => printable_name(module, name),
                        }
                    ),
                ));
            }
            Op::Obj | Op::NewObj | Op::NewObjEx => {
                let callee = self
                    .stack
                    .iter()
                    .rev()
                    .find_map(|v| match v {
                        V::Global(_, name) => Some(name.to_string()),
                        _ => None,
                    })
                    .unwrap_or_else(|| "an object".to_string());
                return Err(self.forbidden(
                    op.name(),
                    format!("{} would instantiate {callee}", op.name()),
                ));
            }
            Op::Ext1(code) => return Err(self.ext(i64::from(code))),
            Op::Ext2(code) => return Err(self.ext(i64::from(code))),
            Op::Ext4(code) => return Err(self.ext(i64::from(code))),
            Op::Reduce => {
                let args = self.pop("REDUCE")?;
                let callable = self.pop("REDUCE")?;
                let value = self.reduce(callable, args)?;
                self.push(value)?;
            }
            Op::Build => self.build()?,
            Op::PersId(_) => {
                return Err(match self.options.persistent_ids {
                    PersistentIds::Forbidden => PickleError::PersistentIdForbidden {
                        offset: self.offset,
                    },
                    _ => PickleError::BadPersistentId {
                        offset: self.offset,
                        reason: "text PERSID ids are never storage tuples".to_string(),
                    },
                });
            }
            Op::BinPersId => {
                let pid = self.pop("BINPERSID")?;
                let storage = self.persistent_id(pid)?;
                self.push_new(storage)?;
            }
            Op::Put(index) => self.memo_put("PUT", index)?,
            Op::BinPut(index) => self.memo_put("BINPUT", u64::from(index))?,
            Op::LongBinPut(index) => self.memo_put("LONG_BINPUT", u64::from(index))?,
            Op::Memoize => {
                let index = self.memo.len() as u64;
                self.memo_put("MEMOIZE", index)?;
            }
            Op::Get(index) => self.memo_get(index)?,
            Op::BinGet(index) => self.memo_get(u64::from(index))?,
            Op::LongBinGet(index) => self.memo_get(u64::from(index))?,
        }
        Ok(())
    }

    fn ext(&self, code: i64) -> PickleError {
        self.forbidden(
            "EXT",
            format!("extension code {code} would import through the copyreg registry"),
        )
    }

    fn append(&mut self, opcode: &'static str, items: Vec<V>) -> R<()> {
        let target = self.top(opcode)?;
        let V::List(id) = *target else {
            return Err(self.invalid(opcode, format!("target is a {}, not a list", target.kind())));
        };
        match self.arena.get_mut(id) {
            Some(Container::List(list)) => {
                list.extend(items);
                Ok(())
            }
            _ => Err(self.invalid(opcode, "target is not a list")),
        }
    }

    fn dict_target(&self, opcode: &'static str) -> R<usize> {
        let target = self.top(opcode)?;
        match target {
            V::Dict(id) => Ok(*id),
            other => Err(self.invalid(opcode, format!("target is a {}, not a dict", other.kind()))),
        }
    }

    fn set_items(&mut self, opcode: &'static str, id: usize, items: Vec<V>) -> R<()> {
        if !items.len().is_multiple_of(2) {
            return Err(self.invalid(opcode, "odd number of keys and values"));
        }
        let offset = self.offset;
        let mut iter = items.into_iter();
        while let (Some(key), Some(value)) = (iter.next(), iter.next()) {
            let Some(hashed) = key_of(&key) else {
                return Err(self.invalid(opcode, format!("a {} cannot be a dict key", key.kind())));
            };
            let Some(Container::Dict { items, keys, .. }) = self.arena.get_mut(id) else {
                return Err(self.invalid(opcode, "target is not a dict"));
            };
            if !keys.insert(hashed) {
                return Err(PickleError::InvalidOperation {
                    offset,
                    opcode,
                    reason: "duplicate dict key".to_string(),
                });
            }
            items.push((key, value));
        }
        Ok(())
    }

    fn build(&mut self) -> R<()> {
        let state = self.pop("BUILD")?;
        let target = self.top("BUILD")?.clone();
        match target {
            V::Dict(id) if self.is_ordered_dict(id) => {
                // `nn.Module.state_dict()` pickles `{"_metadata": ...}` as the OrderedDict's
                // instance dict. Anything else would be an attribute write.
                let ok = match &state {
                    V::Dict(state_id) => match self.arena.get(*state_id) {
                        Some(Container::Dict { items, .. }) => items
                            .iter()
                            .all(|(key, _)| matches!(key, V::Str(s) if &**s == "_metadata")),
                        _ => false,
                    },
                    _ => false,
                };
                if ok {
                    Ok(())
                } else {
                    Err(self.forbidden(
                        "BUILD",
                        format!(
                            "an OrderedDict's state may only be {{\"_metadata\": ...}}, not this {}",
                            state.kind()
                        ),
                    ))
                }
            }
            V::Tensor(_) if self.is_empty_state(&state) => Ok(()),
            other => Err(self.forbidden(
                "BUILD",
                format!(
                    "BUILD would set state on a {} (only an OrderedDict's _metadata and an empty \
                     tensor state are accepted)",
                    match &other {
                        V::Global(_, name) => format!("global `{name}`"),
                        value => value.kind().to_string(),
                    }
                ),
            )),
        }
    }

    fn is_ordered_dict(&self, id: usize) -> bool {
        matches!(
            self.arena.get(id),
            Some(Container::Dict { ordered: true, .. })
        )
    }

    fn is_empty_dict(&self, value: &V) -> bool {
        match value {
            V::Dict(id) => matches!(
                self.arena.get(*id),
                Some(Container::Dict { items, .. }) if items.is_empty()
            ),
            _ => false,
        }
    }

    /// `None`, `{}`, or a `(dict_state, slot_state)` pair of those.
    fn is_empty_state(&self, value: &V) -> bool {
        match value {
            V::None => true,
            V::Tuple(t) if t.items.len() == 2 => t
                .items
                .iter()
                .all(|v| matches!(v, V::None) || self.is_empty_dict(v)),
            other => self.is_empty_dict(other),
        }
    }

    fn reduce(&mut self, callable: V, args: V) -> R<V> {
        let (global, name) = match callable {
            V::Global(global, name) => (global, name),
            other => {
                return Err(self.forbidden(
                    "REDUCE",
                    format!(
                        "REDUCE would call a {}, not an allowlisted callable",
                        other.kind()
                    ),
                ));
            }
        };
        if !global.is_callable() {
            return Err(PickleError::MisplacedGlobal {
                offset: self.offset,
                global: name.to_string(),
                reason: "called with REDUCE; it is only allowed as a storage type or dtype",
            });
        }
        let callee = callee_name(global);
        let V::Tuple(args) = args else {
            return Err(self.bad_args(
                callee,
                format!("arguments are a {}, not a tuple", args.kind()),
            ));
        };
        let args = &args.items;
        match global {
            Global::OrderedDict => {
                if !args.is_empty() {
                    return Err(self.bad_args(callee, "only OrderedDict() with no arguments"));
                }
                let id = self.new_dict(true)?;
                Ok(V::Dict(id))
            }
            Global::RebuildTensorV2 | Global::RebuildTensorV3 | Global::RebuildTensor => {
                let recipe = self.rebuild_tensor(global, callee, args)?;
                self.count_value()?;
                Ok(V::Tensor(Rc::new(recipe)))
            }
            Global::RebuildParameter | Global::RebuildParameterWithState => {
                let expected = if global == Global::RebuildParameter {
                    3
                } else {
                    4
                };
                if args.len() != expected {
                    return Err(self.bad_args(
                        callee,
                        format!("expected {expected} arguments, got {}", args.len()),
                    ));
                }
                let (data, requires_grad, hooks) = match args.as_slice() {
                    [data, requires_grad, hooks, ..] => (data, requires_grad, hooks),
                    _ => return Err(self.bad_args(callee, "too few arguments")),
                };
                let V::Tensor(tensor) = data else {
                    return Err(
                        self.bad_args(callee, format!("data is a {}, not a tensor", data.kind()))
                    );
                };
                if !matches!(requires_grad, V::Bool(_)) {
                    return Err(self.bad_args(callee, "requires_grad is not a bool"));
                }
                if !self.is_empty_dict(hooks) {
                    return Err(self.bad_args(callee, "backward_hooks is not an empty dict"));
                }
                if let Some(state) = args.get(3)
                    && !self.is_empty_state(state)
                {
                    return Err(self.bad_args(callee, "parameter state is not empty"));
                }
                Ok(V::Tensor(tensor.clone()))
            }
            Global::CodecsEncode => match args.as_slice() {
                [V::Str(text), V::Str(encoding)] if &**encoding == "latin1" => {
                    let bytes = text
                        .chars()
                        .map(|c| u8::try_from(u32::from(c)).ok())
                        .collect::<Option<Vec<u8>>>()
                        .ok_or_else(|| {
                            self.bad_args(callee, "text has characters beyond Latin-1")
                        })?;
                    self.count_value()?;
                    self.bytes(&bytes)
                }
                _ => Err(self.bad_args(callee, "only encode(str, \"latin1\")")),
            },
            Global::TorchSize => match args.as_slice() {
                [V::Tuple(dims)] if self.dims(&dims.items).is_some() => Ok(V::Tuple(dims.clone())),
                _ => Err(self.bad_args(callee, "only Size((int >= 0, ...))")),
            },
            Global::Storage(_) | Global::UnsupportedStorage | Global::Dtype(_) => {
                Err(PickleError::MisplacedGlobal {
                    offset: self.offset,
                    global: name.to_string(),
                    reason: "called with REDUCE; it is only allowed as a storage type or dtype",
                })
            }
        }
    }

    fn bad_args(&self, callee: &'static str, reason: impl Into<String>) -> PickleError {
        PickleError::BadArguments {
            offset: self.offset,
            callee,
            reason: reason.into(),
        }
    }

    /// A tuple of non-negative ints, at most [`MAX_RANK`] long.
    fn dims(&self, items: &[V]) -> Option<Vec<u64>> {
        if items.len() > MAX_RANK {
            return None;
        }
        items
            .iter()
            .map(|v| match v {
                V::Int(i) => u64::try_from(*i).ok(),
                _ => None,
            })
            .collect()
    }

    fn rebuild_tensor(&self, global: Global, callee: &'static str, args: &[V]) -> R<TensorRecipe> {
        let arity_ok = match global {
            Global::RebuildTensor => args.len() == 4,
            Global::RebuildTensorV2 => matches!(args.len(), 6 | 7),
            _ => matches!(args.len(), 7 | 8),
        };
        if !arity_ok {
            return Err(self.bad_args(callee, format!("wrong number of arguments: {}", args.len())));
        }
        let bad = |reason: &str| self.bad_args(callee, reason);
        let (storage, untyped) = match args.first() {
            Some(V::Storage { storage, untyped }) => (storage.clone(), *untyped),
            Some(other) => {
                return Err(bad(&format!(
                    "storage is a {}, not a storage",
                    other.kind()
                )));
            }
            None => return Err(bad("missing storage")),
        };
        let storage_offset = match args.get(1) {
            Some(V::Int(i)) => u64::try_from(*i).map_err(|_| bad("negative storage offset"))?,
            Some(other) => {
                return Err(bad(&format!(
                    "storage offset is a {}, not an int",
                    other.kind()
                )));
            }
            None => return Err(bad("missing storage offset")),
        };
        let shape = match args.get(2) {
            Some(V::Tuple(t)) => self
                .dims(&t.items)
                .ok_or_else(|| bad("size is not a tuple of at most 64 ints >= 0"))?,
            _ => return Err(bad("size is not a tuple")),
        };
        let stride = match args.get(3) {
            Some(V::Tuple(t)) => self
                .dims(&t.items)
                .ok_or_else(|| bad("stride is not a tuple of at most 64 ints >= 0"))?,
            _ => return Err(bad("stride is not a tuple")),
        };
        if shape.len() != stride.len() {
            return Err(bad("size and stride have different lengths"));
        }
        if global != Global::RebuildTensor {
            if !matches!(args.get(4), Some(V::Bool(_))) {
                return Err(bad("requires_grad is not a bool"));
            }
            if !args.get(5).is_some_and(|hooks| self.is_empty_dict(hooks)) {
                return Err(bad("backward_hooks is not an empty dict"));
            }
        }
        let (dtype, metadata) = match global {
            Global::RebuildTensorV3 => {
                let dtype = match args.get(6) {
                    Some(V::Global(Global::Dtype(dtype), _)) => *dtype,
                    _ => return Err(bad("dtype is not an allowlisted torch dtype")),
                };
                if !untyped && dtype != storage.dtype {
                    return Err(bad("dtype differs from the typed storage's dtype"));
                }
                (dtype, args.get(7))
            }
            Global::RebuildTensorV2 => (storage.dtype, args.get(6)),
            _ => (storage.dtype, None),
        };
        match metadata {
            None | Some(V::None) => {}
            Some(meta) if self.is_empty_dict(meta) => {}
            Some(_) => {
                return Err(PickleError::Unsupported {
                    offset: self.offset,
                    what: "tensor metadata (conjugate/negative bits)".to_string(),
                });
            }
        }
        self.check_view(&storage, untyped, dtype, storage_offset, &shape, &stride)
            .map_err(|reason| self.bad_args(callee, reason))?;
        Ok(TensorRecipe {
            storage: (*storage).clone(),
            dtype,
            storage_offset,
            shape,
            stride,
        })
    }

    /// The strided view must lie inside the storage (or the legacy storage view).
    fn check_view(
        &self,
        storage: &StorageRef,
        untyped: bool,
        dtype: Dtype,
        offset: u64,
        shape: &[u64],
        stride: &[u64],
    ) -> Result<(), String> {
        let overflow = || "size, stride and offset overflow 64 bits".to_string();
        let mut numel: u64 = 1;
        let mut last = offset;
        for (&size, &step) in shape.iter().zip(stride) {
            numel = numel.checked_mul(size).ok_or_else(overflow)?;
            if size > 0 {
                last = (size - 1)
                    .checked_mul(step)
                    .and_then(|span| last.checked_add(span))
                    .ok_or_else(overflow)?;
            }
        }
        let element_bits = super::pickled_element_bits(dtype);
        numel.checked_mul(element_bits).ok_or_else(overflow)?;
        if numel == 0 {
            return Ok(());
        }
        let mut capacity = match &storage.legacy_view {
            Some(view) => view.size,
            None => storage.numel,
        };
        if untyped {
            // numel counts bytes; the tensor's elements are `dtype`.
            capacity = capacity.saturating_mul(8) / element_bits;
        }
        if last >= capacity {
            return Err(format!(
                "the view reaches element {last} of a storage of {capacity} elements"
            ));
        }
        Ok(())
    }

    fn persistent_id(&mut self, pid: V) -> R<V> {
        let expected = match self.options.persistent_ids {
            PersistentIds::Forbidden => {
                return Err(PickleError::PersistentIdForbidden {
                    offset: self.offset,
                });
            }
            PersistentIds::ZipStorage => 5,
            PersistentIds::LegacyStorage => 6,
        };
        let bad = |reason: String| PickleError::BadPersistentId {
            offset: self.offset,
            reason,
        };
        let V::Tuple(tuple) = &pid else {
            return Err(bad(format!("a {}, not a tuple", pid.kind())));
        };
        let items = &tuple.items;
        if items.len() != expected {
            return Err(bad(format!(
                "{} elements, expected {expected}",
                items.len()
            )));
        }
        if !matches!(items.first(), Some(V::Str(tag)) if &**tag == "storage") {
            return Err(bad("the first element is not \"storage\"".to_string()));
        }
        let (dtype, untyped) = match items.get(1) {
            Some(V::Global(Global::Storage(dtype), name)) => {
                (*dtype, name.ends_with(".UntypedStorage"))
            }
            Some(V::Global(_, name)) => {
                return Err(PickleError::MisplacedGlobal {
                    offset: self.offset,
                    global: name.to_string(),
                    reason: "used as a storage type",
                });
            }
            Some(other) => {
                return Err(bad(format!(
                    "the storage type is a {}, not a storage class",
                    other.kind()
                )));
            }
            None => return Err(bad("no storage type".to_string())),
        };
        let key = match items.get(2) {
            Some(V::Str(key)) if is_storage_key(key) => key.to_string(),
            _ => {
                return Err(bad(
                    "the key is not a decimal string of 1 to 32 digits".to_string()
                ));
            }
        };
        let location = match items.get(3) {
            Some(V::Str(location)) if is_device_name(location) => location.to_string(),
            _ => {
                return Err(bad(
                    "the location is not a device name like `cpu` or `cuda:0`".to_string(),
                ));
            }
        };
        let numel = match items.get(4) {
            Some(V::Int(n)) => u64::try_from(*n).map_err(|_| bad("negative numel".to_string()))?,
            _ => return Err(bad("numel is not an int".to_string())),
        };
        let legacy_view = match items.get(5) {
            None | Some(V::None) => None,
            Some(V::Tuple(view)) => match view.items.as_slice() {
                [V::Str(view_key), V::Int(offset), V::Int(size)] if is_storage_key(view_key) => {
                    let offset = u64::try_from(*offset)
                        .map_err(|_| bad("negative view offset".to_string()))?;
                    let size =
                        u64::try_from(*size).map_err(|_| bad("negative view size".to_string()))?;
                    if offset.checked_add(size).is_none_or(|end| end > numel) {
                        return Err(bad("the view lies outside its storage".to_string()));
                    }
                    Some(super::LegacyStorageView {
                        view_key: view_key.to_string(),
                        offset,
                        size,
                    })
                }
                _ => return Err(bad("the view is not (key, offset, size)".to_string())),
            },
            Some(other) => {
                return Err(bad(format!("the view metadata is a {}", other.kind())));
            }
        };
        match self.storages.get(&key) {
            Some(&seen) if seen != (dtype, numel, untyped) => {
                return Err(bad(format!(
                    "storage key {key} is referenced with two different types or sizes"
                )));
            }
            Some(_) => {}
            None => {
                if self.storages.len() >= self.limits().max_memo {
                    return Err(self.limit("storages", self.limits().max_memo as u64));
                }
                self.storages.insert(key.clone(), (dtype, numel, untyped));
            }
        }
        Ok(V::Storage {
            storage: Rc::new(StorageRef {
                key,
                dtype,
                location,
                numel,
                legacy_view,
            }),
            untyped,
        })
    }

    fn finish(&mut self) -> R<Value> {
        if !self.marks.is_empty() || self.stack.len() != 1 {
            return Err(self.invalid(
                "STOP",
                format!(
                    "{} values and {} open MARKs on the stack (expected exactly one value)",
                    self.stack.len(),
                    self.marks.len()
                ),
            ));
        }
        let root = self
            .stack
            .pop()
            .ok_or_else(|| self.invalid("STOP", "empty stack"))?;
        let mut budget = Budget {
            values: 0,
            bytes: 0,
            limits: self.options.limits,
            offset: self.offset,
        };
        materialize(&self.arena, &root, 0, &mut budget)
    }
}

fn is_storage_key(key: &str) -> bool {
    (1..=32).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_digit())
}

fn callee_name(global: Global) -> &'static str {
    match global {
        Global::OrderedDict => "collections.OrderedDict",
        Global::RebuildTensorV2 => "torch._utils._rebuild_tensor_v2",
        Global::RebuildTensorV3 => "torch._utils._rebuild_tensor_v3",
        Global::RebuildTensor => "torch._utils._rebuild_tensor",
        Global::RebuildParameter => "torch._utils._rebuild_parameter",
        Global::RebuildParameterWithState => "torch._utils._rebuild_parameter_with_state",
        Global::CodecsEncode => "_codecs.encode",
        Global::TorchSize => "torch.Size",
        Global::Storage(_) | Global::UnsupportedStorage => "a storage type",
        Global::Dtype(_) => "a dtype",
    }
}

/// What the output tree may still use.
struct Budget {
    values: u64,
    bytes: u64,
    limits: Limits,
    offset: usize,
}

impl Budget {
    fn value(&mut self) -> R<()> {
        self.values += 1;
        if self.values > self.limits.max_values {
            return Err(PickleError::LimitExceeded {
                offset: self.offset,
                limit: "values in the result (shared references count each time)",
                max: self.limits.max_values,
            });
        }
        Ok(())
    }

    fn bytes(&mut self, n: usize) -> R<()> {
        self.bytes = self.bytes.saturating_add(n as u64);
        if self.bytes > self.limits.max_string_bytes {
            return Err(PickleError::LimitExceeded {
                offset: self.offset,
                limit: "bytes of strings in the result",
                max: self.limits.max_string_bytes,
            });
        }
        Ok(())
    }
}

/// Builds the output tree. Recursion is bounded by `max_depth`, which also ends cycles
/// (a list appended to itself).
fn materialize(arena: &[Container], value: &V, depth: usize, budget: &mut Budget) -> R<Value> {
    let max_depth = budget.limits.max_depth.min(MAX_DEPTH_CEILING);
    if depth > max_depth {
        return Err(PickleError::LimitExceeded {
            offset: budget.offset,
            limit: "levels of nesting in the result",
            max: max_depth as u64,
        });
    }
    budget.value()?;
    // Capacities come from values actually stored, never from a declared length.
    let items = |items: &[V], budget: &mut Budget| -> R<Vec<Value>> {
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            out.push(materialize(arena, item, depth + 1, budget)?);
        }
        Ok(out)
    };
    Ok(match value {
        V::None => Value::None,
        V::Bool(b) => Value::Bool(*b),
        V::Int(i) => Value::Int(*i),
        V::Float(f) => Value::Float(*f),
        V::Str(s) => {
            budget.bytes(s.len())?;
            Value::Str(s.to_string())
        }
        V::Bytes(b) => {
            budget.bytes(b.len())?;
            Value::Bytes(b.to_vec())
        }
        V::Tuple(t) => Value::Tuple(items(&t.items, budget)?),
        V::List(id) => match arena.get(*id) {
            Some(Container::List(list)) => Value::List(items(list, budget)?),
            _ => Value::List(Vec::new()),
        },
        V::Dict(id) => match arena.get(*id) {
            Some(Container::Dict { items: pairs, .. }) => {
                let mut out = Vec::with_capacity(pairs.len());
                for (key, val) in pairs {
                    out.push((
                        materialize(arena, key, depth + 1, budget)?,
                        materialize(arena, val, depth + 1, budget)?,
                    ));
                }
                Value::Dict(out)
            }
            _ => Value::Dict(Vec::new()),
        },
        V::Tensor(recipe) => {
            budget.bytes(recipe.storage.key.len() + recipe.storage.location.len())?;
            Value::Tensor((**recipe).clone())
        }
        V::Storage { .. } => {
            return Err(PickleError::Unsupported {
                offset: budget.offset,
                what: "a bare storage outside a tensor".to_string(),
            });
        }
        V::Global(_, name) => {
            return Err(PickleError::MisplacedGlobal {
                offset: budget.offset,
                global: name.to_string(),
                reason: "left as a value; it is only allowed as a storage type or dtype",
            });
        }
    })
}

/// A PyTorch device string as `torch.save` records it: a lowercase backend name, optionally
/// `:index` (`cpu`, `cuda:0`, `mps`, `meta`, `xpu:1`, `privateuseone:0`). It is never acted on;
/// anything else (`../../x`) means the file was not written by `torch.save`.
fn is_device_name(location: &str) -> bool {
    let (backend, index) = match location.split_once(':') {
        Some((backend, index)) => (backend, Some(index)),
        None => (location, None),
    };
    let backend_ok = !backend.is_empty()
        && backend.len() <= 32
        && backend.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    let index_ok = index.is_none_or(|index| {
        !index.is_empty() && index.len() <= 5 && index.bytes().all(|b| b.is_ascii_digit())
    });
    backend_ok && index_ok
}
