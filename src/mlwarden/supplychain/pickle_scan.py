"""Turn what the static reader saw in a pickle into findings, and read pickle streams."""

from __future__ import annotations

from typing import Any

from mlwarden.supplychain.context import ScanContext
from mlwarden.supplychain.pickle_reader import PickleTrace, read_pickle
from mlwarden.supplychain.policy import ImportClass

__all__ = [
    "first_unimportable",
    "importable",
    "judge_trace",
    "scan_pickle_stream",
    "starts_pickle",
]

# Opcodes a protocol 0/1 pickle may start with (no PROTO opcode): marks, containers,
# globals, scalars. Used only to decide whether trailing bytes are another pickle.
_P0_STARTS = frozenset(b"(]}).cNIJKLFSVXTUGpqgh")


def _dotted(text: str) -> bool:
    """A dotted Python identifier (Unicode letters included, as ``str.isidentifier``)."""
    return bool(text) and all(part.isidentifier() for part in text.split("."))


def importable(module: str, name: str) -> bool:
    """Whether ``find_class`` could import this global: both parts dotted identifiers
    (anything else makes ``__import__``/``getattr`` fail before the pickle acts)."""
    return _dotted(module) and _dotted(name)


def first_unimportable(trace: PickleTrace) -> int | None:
    """Offset of the first global whose *module* cannot be imported: ``find_class``
    calls ``__import__(module)`` first, so only a module that is not a dotted
    identifier stops pickle.load before any import runs."""
    for g in trace.imports:
        if not _dotted(g.module):
            return g.offset
    return None


def starts_pickle(buf: Any, pos: int, end: int) -> bool:
    """True when the bytes at ``pos`` could start another pickle."""
    if pos >= end:
        return False
    first = buf[pos]
    if first == 0x80:
        return pos + 1 < end and buf[pos + 1] <= 5
    return first in _P0_STARTS


def judge_trace(trace: PickleTrace, ctx: ScanContext, member: str | None = None) -> None:
    """Findings for the imports, calls and defects of one pickle."""
    ctx.members += 1
    policy = ctx.policy
    seen: set[tuple[str, str]] = set()
    for g in trace.imports:
        kind = policy.classify(g.module, g.name)
        if kind is ImportClass.SAFE:
            continue
        if ctx.torchscript and (g.module == "__torch__" or g.module.startswith("__torch__.")):
            continue  # TorchScript types, resolved by TorchScript, reported once per archive
        key = (g.module, g.name)
        if key in seen:
            continue
        seen.add(key)
        calls = [c.opcode for c in trace.calls if c.callee is g]
        how = f" and calls it ({', '.join(sorted(set(calls)))})" if calls else ""
        if kind is ImportClass.DANGEROUS:
            ctx.add(
                "MLW-SCAN-001",
                f"imports {g.dotted} ({g.opcode}){how}: it can run code, touch files or the "
                "network when the file is loaded",
                member=member,
                offset=g.offset,
                module=g.module,
                name=g.name,
                opcode=g.opcode,
            )
        else:
            ctx.add(
                "MLW-SCAN-002",
                f"imports {g.dotted} ({g.opcode}){how}, which is not a known-safe "
                f"reconstruction helper; review it and pass --allow {g.dotted} if trusted",
                member=member,
                offset=g.offset,
                module=g.module,
                name=g.name,
                opcode=g.opcode,
            )
    for offset in trace.dynamic_imports:
        ctx.add(
            "MLW-SCAN-003",
            "STACK_GLOBAL takes its module or name from a computed value, not a literal string",
            member=member,
            offset=offset,
        )
    for c in trace.calls:
        if c.callee is None:
            ctx.add(
                "MLW-SCAN-004",
                f"{c.opcode} calls a value the pickle computed (e.g. the result of getattr), "
                "not a named global",
                member=member,
                offset=c.offset,
                opcode=c.opcode,
            )
    for b in trace.builds_on_globals:
        assert b.callee is not None
        ctx.add(
            "MLW-SCAN-005",
            f"BUILD sets attributes on the imported object {b.callee.dotted}, which can "
            "rewire code that runs later",
            member=member,
            offset=b.offset,
            target=b.callee.dotted,
        )
    for code, offset in trace.extensions:
        ctx.add(
            "MLW-SCAN-006",
            f"EXT opcode loads extension code {code}: the global it imports depends on the "
            "loading process's copyreg registry and cannot be checked statically",
            member=member,
            offset=offset,
            code=code,
        )
    if trace.limit is not None:
        ctx.add(
            "MLW-SCAN-011",
            f"stopped reading: {trace.limit}; the rest of the pickle was not checked",
            member=member,
            offset=trace.error_offset,
            opcodes=trace.opcodes,
        )
    elif trace.error is not None:
        ctx.add(
            "MLW-SCAN-010",
            f"{trace.error}; the rest of the pickle was not checked",
            member=member,
            offset=trace.error_offset,
        )


def scan_pickle_stream(
    buf: Any,
    ctx: ScanContext,
    *,
    start: int = 0,
    end: int | None = None,
    member: str | None = None,
    max_pickles: int | None = None,
) -> list[PickleTrace]:
    """Read every pickle stored back to back in ``buf[start:end]`` and judge each one.

    Bytes after the last pickle that do not form another pickle are a defect: a loader
    that calls ``pickle.load`` again would read them.
    """
    end = len(buf) if end is None else end
    traces: list[PickleTrace] = []
    pos = start
    while pos < end and (max_pickles is None or len(traces) < max_pickles):
        if traces and not starts_pickle(buf, pos, end):
            ctx.add(
                "MLW-SCAN-010",
                f"{end - pos} bytes after the last pickle are not a pickle",
                member=member,
                offset=pos,
                trailing_bytes=end - pos,
            )
            break
        trace = read_pickle(buf, pos, end, ctx.limits.pickle)
        traces.append(trace)
        judge_trace(trace, ctx, member)
        if not trace.complete:
            break
        pos = trace.end
    return traces
