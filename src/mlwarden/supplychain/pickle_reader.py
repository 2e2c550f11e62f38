"""A static pickle reader: walks every opcode without ever running `pickle.load`.

We write our own reader instead of using `pickletools.genops` because a scanner in
front of every model load must be (1) fast: payload bytes (tensor data in a raw
pickle, ``BINBYTES8`` blobs) are skipped by offset, never copied; (2) bounded:
hostile nesting, ``MARK`` runs and opcode floods stop at explicit limits with a
reason, instead of growing memory; (3) semantic: it simulates the unpickler's stack
and memo so that ``STACK_GLOBAL`` names that come from the memo, the callable of each
``REDUCE``/``NEWOBJ``/``BUILD`` and the value a pickle returns are all known.

Only small literal values (ints, short strings, tuples/lists/dicts of a bounded
size) are materialised; everything else is an opaque placeholder. The opcode
semantics follow CPython's ``Lib/pickle.py`` (``_Unpickler``) and PEP 307/3154/574.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Call",
    "Global",
    "Instance",
    "Opaque",
    "PickleLimits",
    "PickleTrace",
    "read_pickle",
    "looks_like_pickle",
    "OPCODES",
]


@dataclass(frozen=True)
class PickleLimits:
    """Resource limits of one pickle walk; exceeding one ends the walk with a reason."""

    max_opcodes: int = 20_000_000
    max_stack: int = 250_000
    max_marks: int = 10_000
    max_memo: int = 5_000_000
    max_string: int = 1 << 20  # longer strings are skipped, not decoded
    max_literal_items: int = 4096  # containers longer than this stop being tracked


@dataclass(frozen=True)
class Global:
    """A global that the pickle imports (``module``, ``name`` as spelled in the file)."""

    module: str
    name: str
    offset: int
    opcode: str

    @property
    def dotted(self) -> str:
        return f"{self.module}.{self.name}"


@dataclass(frozen=True)
class Call:
    """A call the pickle makes: ``callee`` is the `Global` called, or None when computed."""

    callee: Global | None
    offset: int
    opcode: str
    args: Any = None


class Opaque:
    """A value the reader does not materialise (a float, a large blob, a call result)."""

    __slots__ = ("kind",)

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __repr__(self) -> str:
        return f"<{self.kind}>"


class Instance(Opaque):
    """The result of calling or instantiating something: remembers what produced it."""

    __slots__ = ("call", "state")

    def __init__(self, call: Call) -> None:
        super().__init__("instance")
        self.call = call
        self.state: Any = None  # what a BUILD gave it (a numpy dtype's field layout)

    def made_from(self) -> str | None:
        """The class this instance is of: the callee, or the class that protocol 0/1's
        ``copyreg._reconstructor(cls, base, state)`` rebuilds."""
        callee = self.call.callee
        if callee is None:
            return None
        if callee.dotted in _RECONSTRUCTORS:
            args = self.call.args
            if args and isinstance(args[0], Global):
                return args[0].dotted
            return None
        return callee.dotted


class _Dict(dict):  # a tracked dict: a plain dict that also counts as "ours"
    pass


_JOBLIB_WRAPPER = "joblib.numpy_pickle.NumpyArrayWrapper"
_RECONSTRUCTORS = frozenset({"copyreg._reconstructor", "copy_reg._reconstructor"})
_FLOAT = Opaque("float")
_BLOB = Opaque("bytes")
_LONGSTR = Opaque("long-string")
_UNTRACKED = Opaque("container")
_PID = Opaque("persistent")
_BUFFER = Opaque("buffer")
_EXT = Opaque("extension")


@dataclass
class PickleTrace:
    """What one pickle imports and calls, where it ends, and why it stopped if it did."""

    start: int
    end: int = -1  # offset just after STOP; -1 when no STOP was reached
    protocol: int = 0
    opcodes: int = 0
    imports: list[Global] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    builds_on_globals: list[Call] = field(default_factory=list)
    dynamic_imports: list[int] = field(
        default_factory=list
    )  # offsets of STACK_GLOBAL on non-strings
    extensions: list[tuple[int, int]] = field(default_factory=list)  # (code, offset)
    persistent_ids: list[Any] = field(default_factory=list)
    result: Any = None
    error: str | None = None  # malformed input: the reason, at `error_offset`
    error_offset: int = -1
    limit: str | None = None  # a resource limit that ended the walk

    @property
    def complete(self) -> bool:
        return self.end >= 0 and self.error is None and self.limit is None


class _Stop(Exception):
    pass


def looks_like_pickle(head: bytes) -> bool:
    """True when ``head`` starts like a pickle of protocol 2-5 (``PROTO n`` + a valid opcode)."""
    return len(head) >= 3 and head[0] == 0x80 and 2 <= head[1] <= 5 and head[2] in _OPCODE_NAMES


def read_pickle(
    buf: Any, start: int = 0, end: int | None = None, limits: PickleLimits = PickleLimits()
) -> PickleTrace:
    """Walk one pickle in ``buf[start:end]`` (bytes, memoryview or mmap) up to its STOP.

    Never raises on hostile input: malformed data sets ``trace.error``; a limit sets
    ``trace.limit``. ``trace.end`` is where the next pickle of a stream would begin.
    """
    reader = _Reader(buf, start, len(buf) if end is None else end, limits)
    try:
        reader.run()
    except _Stop:
        pass
    except (IndexError, struct.error) as exc:  # truncated argument
        reader.fail(f"truncated pickle ({exc.__class__.__name__})")
    except RecursionError:  # pragma: no cover - we never recurse, kept as a fuse
        reader.trace.limit = "recursion"
    return reader.trace


_OPCODE_NAMES: dict[int, str] = {
    0x28: "MARK",
    0x2E: "STOP",
    0x30: "POP",
    0x31: "POP_MARK",
    0x32: "DUP",
    0x46: "FLOAT",
    0x49: "INT",
    0x4A: "BININT",
    0x4B: "BININT1",
    0x4C: "LONG",
    0x4D: "BININT2",
    0x4E: "NONE",
    0x50: "PERSID",
    0x51: "BINPERSID",
    0x52: "REDUCE",
    0x53: "STRING",
    0x54: "BINSTRING",
    0x55: "SHORT_BINSTRING",
    0x56: "UNICODE",
    0x58: "BINUNICODE",
    0x61: "APPEND",
    0x62: "BUILD",
    0x63: "GLOBAL",
    0x64: "DICT",
    0x7D: "EMPTY_DICT",
    0x65: "APPENDS",
    0x67: "GET",
    0x68: "BINGET",
    0x69: "INST",
    0x6A: "LONG_BINGET",
    0x6C: "LIST",
    0x5D: "EMPTY_LIST",
    0x6F: "OBJ",
    0x70: "PUT",
    0x71: "BINPUT",
    0x72: "LONG_BINPUT",
    0x73: "SETITEM",
    0x74: "TUPLE",
    0x29: "EMPTY_TUPLE",
    0x75: "SETITEMS",
    0x47: "BINFLOAT",
    0x80: "PROTO",
    0x81: "NEWOBJ",
    0x82: "EXT1",
    0x83: "EXT2",
    0x84: "EXT4",
    0x85: "TUPLE1",
    0x86: "TUPLE2",
    0x87: "TUPLE3",
    0x88: "NEWTRUE",
    0x89: "NEWFALSE",
    0x8A: "LONG1",
    0x8B: "LONG4",
    0x42: "BINBYTES",
    0x43: "SHORT_BINBYTES",
    0x8C: "SHORT_BINUNICODE",
    0x8D: "BINUNICODE8",
    0x8E: "BINBYTES8",
    0x8F: "EMPTY_SET",
    0x90: "ADDITEMS",
    0x91: "FROZENSET",
    0x92: "NEWOBJ_EX",
    0x93: "STACK_GLOBAL",
    0x94: "MEMOIZE",
    0x95: "FRAME",
    0x96: "BYTEARRAY8",
    0x97: "NEXT_BUFFER",
    0x98: "READONLY_BUFFER",
}

OPCODES = frozenset(_OPCODE_NAMES)  # every byte that ``pickle.load`` accepts as an opcode
_U2 = struct.Struct("<H")
_U4 = struct.Struct("<I")
_I4 = struct.Struct("<i")
_U8 = struct.Struct("<Q")


class _Reader:
    def __init__(self, buf: Any, start: int, end: int, limits: PickleLimits) -> None:
        self.buf = buf
        self.pos = start
        self.end = min(end, len(buf))
        self.limits = limits
        self.trace = PickleTrace(start=start)
        self.stack: list[Any] = []
        self.marks: list[list[Any]] = []
        self.memo: dict[int, Any] = {}
        self.has_find = hasattr(buf, "find")
        self.saved = 0  # items on the stacks saved under MARKs

    # -- helpers ----------------------------------------------------------
    def fail(self, reason: str, offset: int | None = None) -> None:
        if self.trace.error is None:
            self.trace.error = reason
            self.trace.error_offset = self.pos if offset is None else offset
        raise _Stop

    def limit(self, reason: str) -> None:
        self.trace.limit = reason
        self.trace.error_offset = self.pos
        raise _Stop

    def take(self, n: int) -> int:
        """Advance over ``n`` argument bytes; return where they begin."""
        at = self.pos
        if n < 0 or at + n > self.end:
            self.fail("truncated pickle: an argument runs past the end of the data", at)
        self.pos = at + n
        return at

    def line(self) -> bytes:
        stop = min(self.end, self.pos + self.limits.max_string)
        if self.has_find:
            nl = self.buf.find(b"\n", self.pos, stop)
        else:  # a memoryview: search growing windows, lines are short
            nl, window = -1, 256
            while True:
                hi = min(stop, self.pos + window)
                found = bytes(self.buf[self.pos : hi]).find(b"\n")
                if found >= 0:
                    nl = self.pos + found
                    break
                if hi >= stop:
                    break
                window *= 4
        if nl < 0:
            if stop == self.end and self.end - self.pos >= 2:
                # at the end of the data both unpicklers take the partial line and drop
                # its last byte as if it were the newline (pickle.py: readline()[:-1];
                # _pickle.c: _Unpickler_Readline, then len - 1): the import still runs
                text = bytes(self.buf[self.pos : self.end - 1])
                self.pos = self.end
                return text
            self.fail("truncated pickle: a text argument has no newline")
        text = bytes(self.buf[self.pos : nl])
        self.pos = nl + 1
        return text

    def pop(self) -> Any:
        if not self.stack:
            self.fail("stack underflow (malformed pickle)")
        return self.stack.pop()

    def pop_mark(self) -> list[Any]:
        if not self.marks:
            self.fail("no MARK to pop (malformed pickle)")
        items = self.stack
        self.stack = self.marks.pop()
        self.saved -= len(self.stack)
        return items

    def push(self, value: Any) -> None:
        self.stack.append(value)
        if len(self.stack) + self.saved > self.limits.max_stack:
            self.limit(f"stack deeper than {self.limits.max_stack} items")

    def text(self, at: int, n: int, encoding: str) -> Any:
        if n > self.limits.max_string:
            return _LONGSTR
        raw = bytes(self.buf[at : at + n])
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            self.fail(f"invalid {encoding} string", at)
            return None  # unreachable

    def bytes_value(self, at: int, n: int) -> Any:
        return bytes(self.buf[at : at + n]) if n <= 256 else _BLOB

    def tracked(self, items: list[Any], kind: type) -> Any:
        if len(items) > self.limits.max_literal_items:
            return _UNTRACKED
        return kind(items)

    def memo_put(self, key: int) -> None:
        if not self.stack:
            self.fail("memo store with an empty stack (malformed pickle)")
        if len(self.memo) >= self.limits.max_memo and key not in self.memo:
            self.limit(f"more than {self.limits.max_memo} memo entries")
        self.memo[key] = self.stack[-1]

    def memo_get(self, key: int) -> None:
        if key not in self.memo:
            self.fail(f"memo key {key} was never stored (malformed pickle)")
        self.push(self.memo[key])

    def make_global(self, module: Any, name: Any, offset: int, opcode: str) -> Any:
        if not isinstance(module, str) or not isinstance(name, str):
            self.trace.dynamic_imports.append(offset)
            return Opaque("dynamic-global")
        g = Global(module, name, offset, opcode)
        self.trace.imports.append(g)
        return g

    def call(self, func: Any, args: Any, offset: int, opcode: str) -> Instance:
        callee = func if isinstance(func, Global) else None
        c = Call(callee, offset, opcode, args if isinstance(args, tuple) else None)
        self.trace.calls.append(c)
        return Instance(c)

    # -- main loop ----------------------------------------------------------
    def run(self) -> None:  # noqa: C901 - one branch per opcode reads best as one table
        buf, tr, lim = self.buf, self.trace, self.limits
        max_ops = lim.max_opcodes
        while True:
            if self.pos >= self.end:
                self.fail("truncated pickle: no STOP opcode before the end of the data")
            at = self.pos
            op = buf[at]
            self.pos = at + 1
            tr.opcodes += 1
            if not tr.opcodes & 0x3FF:  # the stack grows by at most one item per opcode
                if tr.opcodes > max_ops:
                    self.limit(f"more than {max_ops} opcodes")
                if len(self.stack) + self.saved > lim.max_stack:
                    self.limit(f"stack deeper than {lim.max_stack} items")
            # ordered roughly by frequency in real checkpoints
            if op == 0x71:  # BINPUT
                self.memo_put(buf[self.take(1)])
            elif op == 0x68:  # BINGET
                self.memo_get(buf[self.take(1)])
            elif op == 0x94:  # MEMOIZE
                self.memo_put(len(self.memo))
            elif op == 0x4B:  # BININT1
                self.stack.append(buf[self.take(1)])
            elif op == 0x58:  # BINUNICODE
                n = _U4.unpack_from(buf, self.take(4))[0]
                self.stack.append(self.text(self.take(n), n, "utf-8"))
            elif op == 0x8C:  # SHORT_BINUNICODE
                n = buf[self.take(1)]
                self.stack.append(self.text(self.take(n), n, "utf-8"))
            elif op == 0x28:  # MARK
                if len(self.marks) >= lim.max_marks:
                    self.limit(f"more than {lim.max_marks} nested MARKs")
                self.marks.append(self.stack)
                self.saved += len(self.stack)
                self.stack = []
            elif op == 0x74:  # TUPLE
                items = self.pop_mark()
                self.stack.append(self.tracked(items, tuple))
            elif op == 0x29:  # EMPTY_TUPLE
                self.stack.append(())
            elif op in (0x85, 0x86, 0x87):  # TUPLE1..3
                n = op - 0x84
                if len(self.stack) < n:
                    self.fail("stack underflow (malformed pickle)")
                items = self.stack[-n:]
                del self.stack[-n:]
                self.stack.append(tuple(items))
            elif op == 0x52:  # REDUCE
                args = self.pop()
                func = self.pop()
                self.stack.append(self.call(func, args, at, "REDUCE"))
            elif op == 0x62:  # BUILD
                state = self.pop()
                if not self.stack:
                    self.fail("stack underflow (malformed pickle)")
                target = self.stack[-1]
                if isinstance(target, Global):  # setting attributes on an imported object
                    tr.builds_on_globals.append(Call(target, at, "BUILD"))
                elif isinstance(target, Instance):
                    if target.made_from() == _JOBLIB_WRAPPER:
                        self._skip_joblib_array(state, at)
                    else:
                        target.state = state
            elif op == 0x63:  # GLOBAL
                module = self.line().decode("utf-8", "replace")
                name = self.line().decode("utf-8", "replace")
                self.stack.append(self.make_global(module, name, at, "GLOBAL"))
            elif op == 0x93:  # STACK_GLOBAL
                name = self.pop()
                module = self.pop()
                self.stack.append(self.make_global(module, name, at, "STACK_GLOBAL"))
            elif op == 0x51:  # BINPERSID
                tr.persistent_ids.append(self.pop())
                self.stack.append(_PID)
            elif op == 0x50:  # PERSID
                tr.persistent_ids.append(self.line().decode("ascii", "replace"))
                self.stack.append(_PID)
            elif op in (0x88, 0x89):  # NEWTRUE / NEWFALSE
                self.stack.append(op == 0x88)
            elif op == 0x4E:  # NONE
                self.stack.append(None)
            elif op == 0x4D:  # BININT2
                self.stack.append(_U2.unpack_from(buf, self.take(2))[0])
            elif op == 0x4A:  # BININT
                self.stack.append(_I4.unpack_from(buf, self.take(4))[0])
            elif op == 0x47:  # BINFLOAT
                self.take(8)
                self.stack.append(_FLOAT)
            elif op == 0x7D:  # EMPTY_DICT
                self.stack.append(_Dict())
            elif op == 0x5D:  # EMPTY_LIST
                self.stack.append([])
            elif op == 0x8F:  # EMPTY_SET
                self.stack.append(_UNTRACKED)
            elif op == 0x73:  # SETITEM
                value = self.pop()
                key = self.pop()
                self._setitems([key, value])
            elif op == 0x75:  # SETITEMS
                items = self.pop_mark()
                if len(items) % 2:
                    self.fail("SETITEMS with an odd number of items (malformed pickle)")
                self._setitems(items)
            elif op == 0x61:  # APPEND
                self._extend([self.pop()])
            elif op == 0x65:  # APPENDS
                self._extend(self.pop_mark())
            elif op == 0x90:  # ADDITEMS
                self.pop_mark()
                if not self.stack:
                    self.fail("stack underflow (malformed pickle)")
            elif op == 0x91:  # FROZENSET
                self.pop_mark()
                self.stack.append(_UNTRACKED)
            elif op == 0x6C:  # LIST
                items = self.pop_mark()
                self.stack.append(self.tracked(items, list))
            elif op == 0x64:  # DICT
                items = self.pop_mark()
                if len(items) % 2:
                    self.fail("DICT with an odd number of items (malformed pickle)")
                d = _Dict()
                self.stack.append(d)
                self._setitems(items)
            elif op == 0x81:  # NEWOBJ
                args = self.pop()
                cls = self.pop()
                self.stack.append(self.call(cls, args, at, "NEWOBJ"))
            elif op == 0x92:  # NEWOBJ_EX
                self.pop()  # kwargs
                args = self.pop()
                cls = self.pop()
                self.stack.append(self.call(cls, args, at, "NEWOBJ_EX"))
            elif op == 0x69:  # INST
                module = self.line().decode("utf-8", "replace")
                name = self.line().decode("utf-8", "replace")
                # pickle.py's load_inst imports (find_class) before it pops the MARK
                g = self.make_global(module, name, at, "INST")
                args = tuple(self.pop_mark())
                self.stack.append(self.call(g, args, at, "INST"))
            elif op == 0x6F:  # OBJ
                items = self.pop_mark()
                if not items:
                    self.fail("OBJ without a class (malformed pickle)")
                self.stack.append(self.call(items[0], tuple(items[1:]), at, "OBJ"))
            elif op == 0x80:  # PROTO
                proto = buf[self.take(1)]
                if proto > 5:
                    self.fail(f"unsupported pickle protocol {proto}", at)
                tr.protocol = proto
            elif op == 0x95:  # FRAME: a length prefix only, the opcodes follow inline
                n = _U8.unpack_from(buf, self.take(8))[0]
                if self.pos + n > self.end and tr.error is None:
                    # record, but keep reading: the opcodes that are there still tell
                    # what the pickle tried to import
                    tr.error = "truncated pickle: a FRAME runs past the end of the data"
                    tr.error_offset = at
            elif op == 0x2E:  # STOP
                tr.result = self.pop() if self.stack else self.fail("STOP with an empty stack")
                tr.end = self.pos
                return
            elif op == 0x30:  # POP
                if self.stack:
                    self.stack.pop()
                else:
                    self.pop_mark()
            elif op == 0x31:  # POP_MARK
                self.pop_mark()
            elif op == 0x32:  # DUP
                if not self.stack:
                    self.fail("stack underflow (malformed pickle)")
                self.stack.append(self.stack[-1])
            elif op == 0x72:  # LONG_BINPUT
                self.memo_put(_U4.unpack_from(buf, self.take(4))[0])
            elif op == 0x6A:  # LONG_BINGET
                self.memo_get(_U4.unpack_from(buf, self.take(4))[0])
            elif op == 0x70:  # PUT
                self.memo_put(self._int_line())
            elif op == 0x67:  # GET
                self.memo_get(self._int_line())
            elif op == 0x43:  # SHORT_BINBYTES
                n = buf[self.take(1)]
                self.stack.append(self.bytes_value(self.take(n), n))
            elif op == 0x42:  # BINBYTES
                n = _U4.unpack_from(buf, self.take(4))[0]
                self.stack.append(self.bytes_value(self.take(n), n))
            elif op in (0x8E, 0x96):  # BINBYTES8, BYTEARRAY8
                n = _U8.unpack_from(buf, self.take(8))[0]
                self.stack.append(self.bytes_value(self.take(n), n))
            elif op == 0x8D:  # BINUNICODE8
                n = _U8.unpack_from(buf, self.take(8))[0]
                self.stack.append(self.text(self.take(n), n, "utf-8"))
            elif op == 0x55:  # SHORT_BINSTRING
                n = buf[self.take(1)]
                self.stack.append(self.text(self.take(n), n, "latin-1"))
            elif op == 0x54:  # BINSTRING
                n = _I4.unpack_from(buf, self.take(4))[0]
                if n < 0:
                    self.fail("BINSTRING with a negative length", at)
                self.stack.append(self.text(self.take(n), n, "latin-1"))
            elif op == 0x53:  # STRING: a quoted repr
                raw = self.line().strip()
                if len(raw) < 2 or raw[0] != raw[-1] or raw[:1] not in (b"'", b'"'):
                    self.fail("STRING argument is not quoted", at)
                # unescape the simple, common case; anything else stays opaque
                inner = raw[1:-1]
                self.stack.append(inner.decode("latin-1") if b"\\" not in inner else _LONGSTR)
            elif op == 0x56:  # UNICODE: raw-unicode-escape text
                raw = self.line()
                try:
                    self.stack.append(raw.decode("raw-unicode-escape"))
                except UnicodeDecodeError:
                    self.fail("invalid UNICODE argument", at)
            elif op == 0x49:  # INT (also the protocol-0 booleans I01/I00)
                raw = self.line()
                if raw in (b"01", b"00"):
                    self.stack.append(raw == b"01")
                else:
                    self.stack.append(self._parse_int(raw, at))
            elif op == 0x4C:  # LONG
                raw = self.line().rstrip(b"L")
                self.stack.append(self._parse_int(raw, at))
            elif op == 0x46:  # FLOAT
                self.line()
                self.stack.append(_FLOAT)
            elif op == 0x8A:  # LONG1
                n = buf[self.take(1)]
                self.stack.append(
                    int.from_bytes(buf[self.take(n) : self.pos], "little", signed=True)
                )
            elif op == 0x8B:  # LONG4
                n = _I4.unpack_from(buf, self.take(4))[0]
                if n < 0:
                    self.fail("LONG4 with a negative length", at)
                s = self.take(n)
                self.stack.append(
                    int.from_bytes(buf[s : self.pos], "little", signed=True) if n <= 64 else _BLOB
                )
            elif op in (0x82, 0x83, 0x84):  # EXT1, EXT2, EXT4: copyreg extension registry
                size = {0x82: 1, 0x83: 2, 0x84: 4}[op]
                s = self.take(size)
                code = int.from_bytes(buf[s : s + size], "little")
                tr.extensions.append((code, at))
                self.stack.append(_EXT)
            elif op == 0x97:  # NEXT_BUFFER (protocol 5 out-of-band data)
                self.stack.append(_BUFFER)
            elif op == 0x98:  # READONLY_BUFFER
                if not self.stack:
                    self.fail("stack underflow (malformed pickle)")
            else:
                self.fail(f"unknown opcode 0x{op:02x}", at)

    def _skip_joblib_array(self, state: Any, at: int) -> None:
        """Skip the array bytes joblib writes inline after a ``NumpyArrayWrapper``.

        joblib (``numpy_pickle.NumpyArrayWrapper.read_array``) writes the raw array right
        after the wrapper's BUILD, or a nested pickle for object arrays; that nested
        pickle is walked like the outer one.
        """
        if not isinstance(state, _Dict):
            self.fail("joblib array wrapper without a readable state", at)
        shape, dtype = state.get("shape"), state.get("dtype")
        if not isinstance(shape, tuple) or not all(isinstance(d, int) and d >= 0 for d in shape):
            self.fail("joblib array wrapper with an invalid shape", at)
        spelled = None
        if isinstance(dtype, Instance) and dtype.call.args:
            spelled = dtype.call.args[0]
        if not isinstance(spelled, str):
            self.fail("joblib array wrapper with an unreadable dtype", at)
        # numpy pickles a dtype as dtype(spelled, align, copy) plus a BUILD state tuple
        # (version, byteorder, subarray, names, fields, elsize, alignment, flags
        # [, metadata]). arraydescr_setstate trusts the state: flag bit 0
        # (NPY_ITEM_REFCOUNT) is dtype.hasobject, which joblib's read_array asks, for
        # every dtype; elsize replaces the item size of flexible dtypes (S, U, V and
        # records) only. Checked against numpy: 'f8' keeps 8 whatever elsize says.
        dstate = dtype.state if isinstance(dtype, Instance) else None
        kind = spelled.lstrip("<>=|")[:1]
        if dstate is not None and not (isinstance(dstate, tuple) and len(dstate) in (8, 9)):
            self.fail("joblib array whose dtype state is not numpy's", at)
        flags = dstate[7] if dstate is not None else 0
        elsize = dstate[5] if dstate is not None else -1
        if not isinstance(flags, int) or not isinstance(elsize, int):
            self.fail("joblib array whose dtype state is unreadable", at)
        if kind == "V" and dstate is None:
            self.fail("joblib record array whose dtype state is missing", at)
        if "O" in spelled or flags & 1:
            inner = read_pickle(self.buf, self.pos, self.end, self.limits)
            tr = self.trace
            tr.imports += inner.imports
            tr.calls += inner.calls
            tr.builds_on_globals += inner.builds_on_globals
            tr.dynamic_imports += inner.dynamic_imports
            tr.extensions += inner.extensions
            if not inner.complete:
                tr.error, tr.limit = inner.error, inner.limit
                tr.error_offset = inner.error_offset
                raise _Stop
            self.pos = inner.end
            return
        itemsize = dtype_itemsize(spelled)
        if kind in "SUVa" and elsize > 0:  # a flexible dtype: numpy takes the state's
            itemsize = elsize
        if itemsize is None:
            self.fail(f"joblib array with an unsupported dtype '{spelled}'", at)
        count = 1
        for d in shape:
            count *= d
        if state.get("numpy_array_alignment_bytes") is not None:
            # joblib reads one length byte, then that many padding bytes
            pad = self.buf[self.take(1)]
            self.take(pad)
        self.take(count * itemsize)

    def _int_line(self) -> int:
        at = self.pos
        value = self._parse_int(self.line(), at)
        return value

    def _parse_int(self, raw: bytes, at: int) -> int:
        try:
            if len(raw) > 64:
                raise ValueError
            return int(raw)
        except ValueError:
            self.fail("invalid integer argument", at)
            return 0  # unreachable

    def _setitems(self, items: list[Any]) -> None:
        if not self.stack:
            self.fail("stack underflow (malformed pickle)")
        target = self.stack[-1]
        if isinstance(target, _Dict):
            if len(target) + len(items) // 2 > self.limits.max_literal_items:
                target.clear()  # stop tracking a big dict: keep memory bounded
                return
            for i in range(0, len(items), 2):
                key = items[i]
                try:
                    target[key] = items[i + 1]
                except TypeError:  # unhashable key (a list): fine for us, not tracked
                    pass

    def _extend(self, items: list[Any]) -> None:
        if not self.stack:
            self.fail("stack underflow (malformed pickle)")
        target = self.stack[-1]
        if isinstance(target, list):
            if len(target) + len(items) > self.limits.max_literal_items:
                target.clear()
                self.stack[-1] = _UNTRACKED
                return
            target.extend(items)


def dtype_itemsize(spelled: str) -> int | None:
    """Item size of a NumPy dtype string such as ``'<f4'``, ``'u1'``, ``'S10'``, ``'<U5'``."""
    s = spelled.lstrip("<>=|")
    if not s:
        return None
    kind, rest = s[0], s[1:]
    if kind in "MmV" and "[" in rest:
        rest = rest.split("[", 1)[0]
    if kind == "?" and not rest:
        return 1
    if not rest.isdigit():
        return None
    n = int(rest)
    if kind in "biufcMmSaV":
        return n
    if kind == "U":
        return 4 * n
    return None
