//! A restricted unpickler for the `data.pkl` of a `torch.save` archive.
//!
//! It understands the opcodes that a pickled state dict uses (protocols 2 to 5) and
//! builds plain values from them. It never imports or calls anything: the only globals
//! it accepts are the handful a state dict needs (OrderedDict, the tensor-rebuild
//! functions, storage types), each interpreted here by name. Any other global (say
//! `os.system`) stops the read with an error naming it.
//!
//! A hostile file cannot exhaust memory or the stack through it: containers are shared,
//! never copied (a tuple duplicated 60 times over is 60 objects, not 2^60), nest at most
//! [`MAX_DEPTH`] deep, and are frozen once put into another (no cycles; a state dict
//! fills every container before it is used).

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use crate::error::{Error, Result};

/// Element types of torch storages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageType {
    F32,
    F16,
    BF16,
    I64,
    /// Any other storage type (double, int, bool, ...), kept by name so that an error
    /// can say which tensor has it if one is ever used.
    Other(&'static str),
}

#[derive(Debug, Clone)]
pub struct TensorRef {
    pub storage_key: String,
    pub storage_type: StorageType,
    /// In elements.
    pub offset: usize,
    pub shape: Vec<usize>,
    pub stride: Vec<usize>,
}

/// How deep containers may nest (a state dict nests 4 deep).
const MAX_DEPTH: usize = 100;

/// A tuple, list or dict, shared between the places that refer to it.
#[derive(Debug)]
pub struct Container<T> {
    items: RefCell<T>,
    /// 1 + the deepest item's depth.
    depth: Cell<usize>,
    /// Put into another container: frozen from then on.
    nested: Cell<bool>,
}

impl<T> Container<T> {
    pub fn borrow(&self) -> std::cell::Ref<'_, T> {
        self.items.borrow()
    }
}

#[derive(Debug, Clone)]
pub enum Value {
    None,
    /// A bool, float or bytes object: valid in a checkpoint, of no use to this reader.
    Scalar,
    Int(i64),
    Str(String),
    Tuple(Rc<Container<Vec<Value>>>),
    List(Rc<Container<Vec<Value>>>),
    Dict(Rc<Container<Vec<(Value, Value)>>>),
    /// One of the accepted globals, as "module.name".
    Global(&'static str),
    Storage { key: String, storage_type: StorageType },
    Tensor(TensorRef),
}

impl Value {
    fn depth(&self) -> usize {
        match self {
            Value::Tuple(c) | Value::List(c) => c.depth.get(),
            Value::Dict(c) => c.depth.get(),
            _ => 0,
        }
    }

    /// Marks a container as inside another.
    fn nest(&self) {
        match self {
            Value::Tuple(c) | Value::List(c) => c.nested.set(true),
            Value::Dict(c) => c.nested.set(true),
            _ => {}
        }
    }

    fn tuple(items: Vec<Value>) -> Result<Value> {
        Ok(Value::Tuple(container(depth_of(items.iter())?, items)))
    }

    fn list(items: Vec<Value>) -> Result<Value> {
        Ok(Value::List(container(depth_of(items.iter())?, items)))
    }

    fn dict(pairs: Vec<(Value, Value)>) -> Result<Value> {
        Ok(Value::Dict(container(depth_of(pairs.iter().flat_map(|(k, v)| [k, v]))?, pairs)))
    }
}

/// The depth of a container of `values`, each marked as nested.
fn depth_of<'v>(values: impl Iterator<Item = &'v Value>) -> Result<usize> {
    let mut depth = 1;
    for v in values {
        v.nest();
        depth = depth.max(1 + v.depth());
    }
    if depth > MAX_DEPTH {
        return Err(bad(format!("containers nested more than {MAX_DEPTH} deep")));
    }
    Ok(depth)
}

fn container<T>(depth: usize, items: T) -> Rc<Container<T>> {
    Rc::new(Container { items: RefCell::new(items), depth: Cell::new(depth), nested: Cell::new(false) })
}

/// Adds to a list or dict: refused once it is inside another container, or to itself.
fn extend<T>(target: &Container<T>, values: &[&Value], add: impl FnOnce(&mut T)) -> Result<()> {
    let is_target = |v: &Value| match v {
        Value::Tuple(c) | Value::List(c) => std::ptr::addr_eq(Rc::as_ptr(c), target),
        Value::Dict(c) => std::ptr::addr_eq(Rc::as_ptr(c), target),
        _ => false,
    };
    if target.nested.get() || values.iter().any(|v| is_target(v)) {
        return Err(bad("a container changed after it was put into another, or into itself (a recursive structure, never in a state dict)"));
    }
    let depth = depth_of(values.iter().copied())?;
    target.depth.set(target.depth.get().max(depth));
    add(&mut target.items.borrow_mut());
    Ok(())
}

/// The globals a state dict may reference.
const ALLOWED: &[&str] = &[
    "collections.OrderedDict",
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_parameter",
    "torch.FloatStorage",
    "torch.HalfStorage",
    "torch.BFloat16Storage",
    "torch.LongStorage",
    "torch.DoubleStorage",
    "torch.IntStorage",
    "torch.ShortStorage",
    "torch.CharStorage",
    "torch.ByteStorage",
    "torch.BoolStorage",
];

fn storage_type(global: &'static str) -> Option<StorageType> {
    Some(match global {
        "torch.FloatStorage" => StorageType::F32,
        "torch.HalfStorage" => StorageType::F16,
        "torch.BFloat16Storage" => StorageType::BF16,
        "torch.LongStorage" => StorageType::I64,
        g if g.ends_with("Storage") => StorageType::Other(g),
        _ => return None,
    })
}

fn bad(msg: impl std::fmt::Display) -> Error {
    Error::Checkpoint(format!("data.pkl: {msg}"))
}

enum Item {
    Mark,
    Value(Value),
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Item>,
    memo: Vec<Option<Value>>,
}

impl<'a> Machine<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len()).ok_or_else(|| bad("truncated pickle"))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }

    fn line(&mut self) -> Result<String> {
        let rest = &self.data[self.pos..];
        let n = rest.iter().position(|&b| b == b'\n').ok_or_else(|| bad("unterminated line"))?;
        let s = String::from_utf8_lossy(&rest[..n]).into_owned();
        self.pos += n + 1;
        Ok(s)
    }

    fn push(&mut self, v: Value) {
        self.stack.push(Item::Value(v));
    }

    fn pop(&mut self) -> Result<Value> {
        match self.stack.pop() {
            Some(Item::Value(v)) => Ok(v),
            _ => Err(bad("stack underflow")),
        }
    }

    fn top(&mut self) -> Result<&mut Value> {
        match self.stack.last_mut() {
            Some(Item::Value(v)) => Ok(v),
            _ => Err(bad("stack underflow")),
        }
    }

    /// Values above the topmost mark, removing the mark.
    fn pop_mark(&mut self) -> Result<Vec<Value>> {
        let at = self.stack.iter().rposition(|i| matches!(i, Item::Mark)).ok_or_else(|| bad("missing mark"))?;
        let items = self.stack.split_off(at + 1);
        self.stack.pop();
        Ok(items.into_iter().map(|i| match i { Item::Value(v) => v, Item::Mark => unreachable!() }).collect())
    }

    fn memo_put(&mut self, idx: usize) -> Result<()> {
        let v = self.top()?.clone();
        // Each entry takes at least one opcode: an index past the pickle's length is
        // not one a pickler wrote, and would size the memo from a number in the file.
        if idx > self.data.len() {
            return Err(bad("absurd memo index"));
        }
        if self.memo.len() <= idx {
            self.memo.resize(idx + 1, None);
        }
        self.memo[idx] = Some(v);
        Ok(())
    }

    fn memo_get(&mut self, idx: usize) -> Result<()> {
        let v = self.memo.get(idx).cloned().flatten().ok_or_else(|| bad("memo index not set"))?;
        self.push(v);
        Ok(())
    }

    fn global(&self, module: &str, name: &str) -> Result<Value> {
        let full = format!("{module}.{name}");
        match ALLOWED.iter().find(|&&g| g == full) {
            Some(g) => Ok(Value::Global(g)),
            None => Err(Error::Checkpoint(format!(
                "the checkpoint references the Python global `{full}`, which a state dict never needs; \
                 refusing to read it (this reader executes nothing, but such a file is not a plain checkpoint)"
            ))),
        }
    }

    fn reduce(&mut self, callable: Value, args: Value) -> Result<Value> {
        let Value::Global(g) = callable else { return Err(bad("call of a non-global")) };
        let Value::Tuple(args) = args else { return Err(bad(format!("{g} called without an argument tuple"))) };
        let args = args.borrow();
        match g {
            "collections.OrderedDict" if args.is_empty() => Value::dict(Vec::new()),
            "torch._utils._rebuild_tensor_v2" => {
                let (Some(Value::Storage { key, storage_type }), Some(Value::Int(offset)), Some(Value::Tuple(size)), Some(Value::Tuple(stride))) =
                    (args.first(), args.get(1), args.get(2), args.get(3))
                else {
                    return Err(bad("malformed _rebuild_tensor_v2 arguments"));
                };
                let dims = |t: &[Value]| -> Result<Vec<usize>> {
                    t.iter().map(|v| match v {
                        Value::Int(i) if *i >= 0 => Ok(*i as usize),
                        _ => Err(bad("negative or non-integer tensor dimension")),
                    }).collect()
                };
                Ok(Value::Tensor(TensorRef {
                    storage_key: key.clone(),
                    storage_type: *storage_type,
                    offset: usize::try_from(*offset).map_err(|_| bad("negative storage offset"))?,
                    shape: dims(&size.borrow())?,
                    stride: dims(&stride.borrow())?,
                }))
            }
            "torch._utils._rebuild_parameter" => args.first().cloned().ok_or_else(|| bad("empty _rebuild_parameter")),
            _ => Err(bad(format!("`{g}` cannot be called here"))),
        }
    }

    fn persistent_load(&self, pid: Value) -> Result<Value> {
        // ('storage', storage_type, key, location, numel)
        let Value::Tuple(t) = pid else { return Err(bad("persistent id is not a tuple")) };
        let t = t.borrow();
        match (t.first(), t.get(1), t.get(2)) {
            (Some(Value::Str(kind)), Some(Value::Global(g)), Some(Value::Str(key))) if kind == "storage" => {
                let storage_type = storage_type(g).ok_or_else(|| bad(format!("{g} is not a storage type")))?;
                Ok(Value::Storage { key: key.clone(), storage_type })
            }
            _ => Err(bad("unsupported persistent id")),
        }
    }

    fn run(mut self) -> Result<Value> {
        loop {
            let op = self.u8()?;
            match op {
                0x80 => { self.u8()?; } // PROTO
                0x95 => { self.take(8)?; } // FRAME
                b'.' => return self.pop(), // STOP
                b'(' => self.stack.push(Item::Mark),
                b'}' => self.push(Value::dict(Vec::new())?),
                b']' => self.push(Value::list(Vec::new())?),
                b')' => self.push(Value::tuple(Vec::new())?),
                b'N' => self.push(Value::None),
                0x88 => self.push(Value::Scalar),
                0x89 => self.push(Value::Scalar),
                b'K' => { let v = self.u8()? as i64; self.push(Value::Int(v)); }
                b'M' => { let b = self.take(2)?; self.push(Value::Int(u16::from_le_bytes([b[0], b[1]]) as i64)); }
                b'J' => { let v = self.u32()? as i32 as i64; self.push(Value::Int(v)); }
                0x8a | 0x8b => { // LONG1, LONG4
                    let n = if op == 0x8a { self.u8()? as usize } else { self.u32()? as usize };
                    if n > 8 { return Err(bad("integer wider than 64 bits")); }
                    let b = self.take(n)?;
                    let mut buf = [if b.last().is_some_and(|&x| x & 0x80 != 0) { 0xFF } else { 0 }; 8];
                    buf[..n].copy_from_slice(b);
                    self.push(Value::Int(i64::from_le_bytes(buf)));
                }
                b'G' => { self.take(8)?; self.push(Value::Scalar); }
                b'X' | 0x8c | 0x8d => { // BINUNICODE, SHORT_BINUNICODE, BINUNICODE8
                    let n = match op { b'X' => self.u32()? as usize, 0x8c => self.u8()? as usize, _ => u64::from_le_bytes(self.take(8)?.try_into().unwrap()) as usize };
                    let s = std::str::from_utf8(self.take(n)?).map_err(|_| bad("invalid UTF-8 string"))?.to_string();
                    self.push(Value::Str(s));
                }
                b'T' | b'U' | b'B' | b'C' => { // BINSTRING, SHORT_BINSTRING, BINBYTES, SHORT_BINBYTES
                    let n = if op == b'U' || op == b'C' { self.u8()? as usize } else { self.u32()? as usize };
                    self.take(n)?;
                    self.push(Value::Scalar);
                }
                b'c' => { let m = self.line()?; let n = self.line()?; let g = self.global(&m, &n)?; self.push(g); }
                0x93 => { // STACK_GLOBAL
                    let (Value::Str(n), Value::Str(m)) = (self.pop()?, self.pop()?) else { return Err(bad("STACK_GLOBAL of non-strings")) };
                    let g = self.global(&m, &n)?;
                    self.push(g);
                }
                b'q' => { let i = self.u8()? as usize; self.memo_put(i)?; }
                b'r' => { let i = self.u32()? as usize; self.memo_put(i)?; }
                0x94 => { let i = self.memo.len(); self.memo_put(i)?; }
                b'h' => { let i = self.u8()? as usize; self.memo_get(i)?; }
                b'j' => { let i = self.u32()? as usize; self.memo_get(i)?; }
                b't' => { let items = self.pop_mark()?; self.push(Value::tuple(items)?); }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let mut items = (0..n).map(|_| self.pop()).collect::<Result<Vec<_>>>()?;
                    items.reverse();
                    self.push(Value::tuple(items)?);
                }
                b'l' => { let items = self.pop_mark()?; self.push(Value::list(items)?); }
                b'd' => { let items = self.pop_mark()?; self.push(Value::dict(pairs(items)?)?); }
                b'a' => { let v = self.pop()?; list_extend(self.top()?, vec![v])?; }
                b'e' => { let items = self.pop_mark()?; list_extend(self.top()?, items)?; }
                b's' => { let v = self.pop()?; let k = self.pop()?; dict_extend(self.top()?, vec![(k, v)])?; }
                b'u' => { let items = self.pop_mark()?; let p = pairs(items)?; dict_extend(self.top()?, p)?; }
                b'R' => { let args = self.pop()?; let f = self.pop()?; let v = self.reduce(f, args)?; self.push(v); }
                // BUILD sets object state; the only objects here are OrderedDicts whose
                // state is their `_metadata` (module versions), which a reader ignores.
                b'b' => { self.pop()?; }
                b'Q' => { let pid = self.pop()?; let v = self.persistent_load(pid)?; self.push(v); }
                b'0' => { self.stack.pop(); }
                b'1' => { self.pop_mark()?; }
                b'2' => { let v = self.top()?.clone(); self.push(v); }
                other => return Err(bad(format!("unsupported pickle opcode 0x{other:02x} at byte {}", self.pos - 1))),
            }
        }
    }
}

fn pairs(items: Vec<Value>) -> Result<Vec<(Value, Value)>> {
    if !items.len().is_multiple_of(2) {
        return Err(bad("odd number of dict items"));
    }
    let mut it = items.into_iter();
    let mut out = Vec::new();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}

fn list_extend(target: &mut Value, items: Vec<Value>) -> Result<()> {
    match target {
        Value::List(l) => extend(l, &items.iter().collect::<Vec<_>>(), |l| l.extend(items.iter().cloned())),
        _ => Err(bad("append to a non-list")),
    }
}

fn dict_extend(target: &mut Value, items: Vec<(Value, Value)>) -> Result<()> {
    match target {
        Value::Dict(d) => extend(d, &items.iter().flat_map(|(k, v)| [k, v]).collect::<Vec<_>>(), |d| d.extend(items.iter().cloned())),
        _ => Err(bad("setitem on a non-dict")),
    }
}

/// Unpickles `data`, refusing anything a state dict does not contain.
pub fn load(data: &[u8]) -> Result<Value> {
    Machine { data, pos: 0, stack: Vec::new(), memo: Vec::new() }.run()
}
