"""``poolscope.Dump``: the native dump with the pool analyses as typed Python results.

Every figure is computed in Rust; this layer only decodes the JSON and column bytes it returns.
"""

from __future__ import annotations

import json
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from poolscope import _native

POOLS = ("nonpaged", "paged", "session_nonpaged", "session_paged")


@dataclass
class PoolBlocks:
    """Scanned pool blocks as columns (one array per field, same length)."""

    pa: array[int]
    va: array[int]  # 0 when no kernel mapping of the page was found
    tag: array[int]  # the tag as a little-endian u32 (protected bit cleared)
    size: array[int]  # bytes, header included
    previous_size: array[int]
    pool: bytes  # index into POOLS
    allocated: bytes  # 1 allocated, 0 free

    def __len__(self) -> int:
        return len(self.pa)

    def rows(self) -> list[dict[str, Any]]:
        """The blocks as dicts (for small results; use the columns for millions)."""
        return [
            {
                "pa": f"0x{self.pa[i]:x}",
                "va": f"0x{self.va[i]:x}" if self.va[i] else None,
                "tag": _native.tag_name(self.tag[i]),
                "size": self.size[i],
                "previous_size": self.previous_size[i],
                "pool": POOLS[self.pool[i]],
                "allocated": bool(self.allocated[i]),
            }
            for i in range(len(self))
        ]


def _array(code: str, raw: bytes) -> array[int]:
    a = array(code)
    a.frombytes(raw)
    return a


@dataclass
class PoolScanResult:
    summary: dict[str, Any]
    blocks: PoolBlocks | None


Symbolize = Callable[[int], "str | None"]

# Columns: read-only typed views (format Q/I/h/B) of the reader's own vectors, lent without a
# copy. ``col[i]``, ``col.tolist()`` and ``numpy.asarray(col)`` work; an owned copy is
# ``a = array(col.format); a.frombytes(col.cast("B"))``.
Column = memoryview


def _no_symbols(_addr: int) -> str | None:
    return None


class _Names:
    """``module+0xoffset`` of addresses through the dump, remembered per call."""

    def __init__(self, symbolize: Symbolize) -> None:
        self._symbolize = symbolize
        self._known: dict[int, str | None] = {}

    def __call__(self, addr: int) -> str | None:
        if addr not in self._known:
            self._known[addr] = self._symbolize(addr)
        return self._known[addr]

    def frames(self, stack: list[int]) -> list[str]:
        return [self(f) or f"0x{f:x}" for f in stack]


def _col(cols: dict[str, Any], key: str, fmt: Literal["Q", "I", "h", "B"]) -> Column:
    """A column of the native result as a typed view (empty when absent)."""
    c = cols.get(key)
    return memoryview(c) if c is not None else memoryview(b"").cast(fmt)


@dataclass
class TrackedAllocations:
    """Driver Verifier's tracked pool allocations as columns (``!verifier 3``), in walk order."""

    drivers: list[str]  # names; ``driver`` indexes into this list
    driver: Column  # u32
    va: Column  # u64
    bytes: Column  # u64: charged bytes (request rounded to 4, plus the 8-byte verifier header)
    tag: Column  # u32, first character in the low byte
    caller: Column  # u64
    pool: Column  # u8: index into POOLS, 255 when unknown
    _symbolize: Symbolize = field(default=_no_symbols, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.va)

    def _driver_name(self, i: int) -> str:
        return self.drivers[i] if i < len(self.drivers) else ""

    def rows(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The first ``limit`` rows (all when None) as the JSON document's tracked rows, callers
        symbolized through the dump (which must still be open)."""
        names = _Names(self._symbolize)
        n = len(self) if limit is None else min(limit, len(self))
        return [
            {
                "driver": self._driver_name(self.driver[i]),
                "va": f"0x{self.va[i]:x}",
                "bytes": self.bytes[i],
                "tag": _native.tag_name(self.tag[i]),
                "caller": f"0x{self.caller[i]:x}",
                "caller_symbol": names(self.caller[i]),
                "pool": POOLS[self.pool[i]] if self.pool[i] < len(POOLS) else "unknown",
            }
            for i in range(n)
        ]


@dataclass
class _Stacks:
    """What every verifier log has: slots, stack depths and stacks (``frames`` per record)."""

    slot: Column  # u32
    depth: Column  # u8: frames used by each record
    stacks: Column  # u64: ``frames`` per record, row-major, zero past ``depth``
    frames: int
    info: dict[str, Any] | None  # buffer, index, length, ordered, entries, unreadable_slots...

    def __len__(self) -> int:
        return len(self.slot)

    def stack(self, i: int) -> list[int]:
        """Record ``i``'s stack (innermost frame first)."""
        if not 0 <= i < len(self):
            raise IndexError(i)
        start = i * self.frames
        return list(self.stacks[start : start + self.depth[i]].tolist())

    @staticmethod
    def _columns(cols: dict[str, Any], info: Any) -> dict[str, Any]:
        return {
            "slot": _col(cols, "slot", "I"),
            "depth": _col(cols, "depth", "B"),
            "stacks": _col(cols, "stack", "Q"),
            "frames": int(cols.get("frames", 0)),
            "info": info,
        }


_EMPTY_Q = memoryview(b"").cast("Q")
_EMPTY_H = memoryview(b"").cast("h")
_EMPTY_B = memoryview(b"").cast("B")


@dataclass
class TraceLog(_Stacks):
    """The pool allocate/free log (``!verifier 80``) as columns: newest first when
    ``info["ordered"]``, else in slot order; empty slots left out."""

    va: Column = _EMPTY_Q  # u64
    bytes: Column = _EMPTY_Q  # u64: requested on allocation, what the pool passed on free
    thread: Column = _EMPTY_Q  # u64
    _symbolize: Symbolize = field(default=_no_symbols, repr=False, compare=False)

    def rows(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The first ``limit`` records (all when None) as the JSON document's log rows, frames
        symbolized through the dump (which must still be open)."""
        names = _Names(self._symbolize)
        n = len(self) if limit is None else min(limit, len(self))
        out = []
        for i in range(n):
            stack = self.stack(i)
            out.append(
                {
                    "slot": self.slot[i],
                    "va": f"0x{self.va[i]:x}",
                    "bytes": self.bytes[i],
                    "thread": f"0x{self.thread[i]:x}",
                    "stack": [f"0x{f:x}" for f in stack],
                    "stack_symbols": names.frames(stack),
                }
            )
        return out


@dataclass
class IrpLog(_Stacks):
    """The IRP log (``!verifier 100``) as columns, ordered like :class:`TraceLog`."""

    irp: Column = _EMPTY_Q  # u64
    thread: Column = _EMPTY_Q  # u64
    irql: Column = _EMPTY_B  # u8
    kernel_apc_disable: Column = _EMPTY_H  # i16
    special_apc_disable: Column = _EMPTY_H  # i16
    _symbolize: Symbolize = field(default=_no_symbols, repr=False, compare=False)

    def rows(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The first ``limit`` records (all when None) as the JSON document's IRP-log rows."""
        names = _Names(self._symbolize)
        n = len(self) if limit is None else min(limit, len(self))
        out = []
        for i in range(n):
            stack = self.stack(i)
            out.append(
                {
                    "slot": self.slot[i],
                    "irp": f"0x{self.irp[i]:x}",
                    "thread": f"0x{self.thread[i]:x}",
                    "irql": self.irql[i],
                    "kernel_apc_disable": self.kernel_apc_disable[i],
                    "special_apc_disable": self.special_apc_disable[i],
                    "stack": [f"0x{f:x}" for f in stack],
                    "stack_symbols": names.frames(stack),
                }
            )
        return out


@dataclass
class Verifier:
    """Driver Verifier state (``!verifier 3``, ``!verifier 80``, ``!verifier 100``): summaries
    as Python objects, the bulk (tracked allocations, logs) as columns."""

    enabled: bool
    level: int
    options: list[str]
    stats: dict[str, int]
    drivers: list[dict[str, Any]]
    sites: list[dict[str, Any]]  # allocation sites ranked by outstanding bytes
    sources: dict[str, str]
    findings: list[dict[str, Any]]
    unavailable: dict[str, str]  # parts not read ("drivers", "log", "irp_log") and why
    notes: list[str]
    tracked: TrackedAllocations
    log: TraceLog  # pool allocate/free log
    irp_log: IrpLog
    document: dict[str, Any]  # the summary JSON (with the first ``rows`` rows of each table)


class Dump(_native.Dump):
    """An open kernel dump (see ``poolscope.open``)."""

    def poolused(
        self,
        sort: Literal["nonpaged", "paged", "allocs"] = "nonpaged",
        top: int | None = None,
        session: bool = False,
    ) -> list[dict[str, Any]]:
        """The tagging database per tag, sorted, as ``!poolused`` shows it; ``session=True``:
        the session pool's (``!poolused 8``: the session of the dump's current address space),
        rows with the same keys."""
        return list(json.loads(self.poolused_json(sort, top, session))["rows"])

    def scan_pool(self, tags: list[str] | None = None, blocks: bool = False) -> PoolScanResult:
        """Scan every present page for pool blocks. Summaries per (tag, pool) always (of
        ``tags`` when given: ``summary["tags"]`` then holds only theirs, and
        ``summary["tags_filter"]`` names them; the page counts are the whole scan's); the blocks
        themselves (of ``tags``, or all) as columns when ``blocks`` is true."""
        summary, cols = self.scan_pool_raw(tags, blocks)
        doc = json.loads(summary)
        if tags is not None:
            wanted = {t.rstrip() for t in tags}
            doc["tags"] = [t for t in doc.get("tags", []) if t["tag"].rstrip() in wanted]
            doc["tags_filter"] = list(tags)
        pb = None
        if cols is not None:
            pb = PoolBlocks(
                pa=_array("Q", cols["pa"]),
                va=_array("Q", cols["va"]),
                tag=_array("I", cols["tag"]),
                size=_array("I", cols["size"]),
                previous_size=_array("I", cols["previous_size"]),
                pool=cols["pool"],
                allocated=cols["allocated"],
            )
        return PoolScanResult(doc, pb)

    def big_pool(self) -> list[dict[str, Any]]:
        """Big-pool table entries with a tag: ``{va, tag, bytes, pool, free}``."""
        return list(json.loads(self.big_pool_json()))

    def tag_owners(self, tag: str) -> list[dict[str, Any]]:
        """Modules whose image holds the tag's bytes: ``[{module, base, offsets}]``."""
        return list(json.loads(self.tag_owners_json([tag])).popitem()[1])

    def memory_summary(self) -> dict[str, Any]:
        """The ``!vm``-like summary from KDBG's variables."""
        return dict(json.loads(self.memory_summary_json()))

    def analyze(self, **options: Any) -> dict[str, Any]:
        """Every analysis in one pass (the report without its ``dump`` section)."""
        return dict(json.loads(self.analyze_json(**options)))

    def verifier(
        self, driver: str | None = None, address: int | None = None, rows: int | None = 0
    ) -> Verifier:
        """Driver Verifier data, read once. ``driver`` limits drivers and tracked allocations to
        one driver, ``address`` limits the logs to records whose block contains it (or that
        IRP). Tracked allocations and logs come as columns; ``document`` also carries the first
        ``rows`` of each as symbolized dicts (all when None)."""
        summary, cols = self.verifier_raw(driver, address, rows)
        doc = json.loads(summary)
        symbolize = self.symbolize
        t: dict[str, Any] = cols.get("tracked") or {}
        tracked = TrackedAllocations(
            drivers=[d["name"] for d in doc.get("drivers", [])],
            driver=_col(t, "driver", "I"),
            va=_col(t, "va", "Q"),
            bytes=_col(t, "bytes", "Q"),
            tag=_col(t, "tag", "I"),
            caller=_col(t, "caller", "Q"),
            pool=_col(t, "pool", "B"),
            _symbolize=symbolize,
        )
        lc: dict[str, Any] = cols.get("log") or {}
        log = TraceLog(
            **_Stacks._columns(lc, doc.get("log_info")),
            va=_col(lc, "va", "Q"),
            bytes=_col(lc, "bytes", "Q"),
            thread=_col(lc, "thread", "Q"),
            _symbolize=symbolize,
        )
        ic: dict[str, Any] = cols.get("irp_log") or {}
        irp_log = IrpLog(
            **_Stacks._columns(ic, doc.get("irp_log_info")),
            irp=_col(ic, "irp", "Q"),
            thread=_col(ic, "thread", "Q"),
            irql=_col(ic, "irql", "B"),
            kernel_apc_disable=_col(ic, "kernel_apc_disable", "h"),
            special_apc_disable=_col(ic, "special_apc_disable", "h"),
            _symbolize=symbolize,
        )
        return Verifier(
            enabled=bool(doc.get("enabled")),
            level=int(doc.get("level", 0)),
            options=list(doc.get("options", [])),
            stats=dict(doc.get("stats") or {}),
            drivers=list(doc.get("drivers", [])),
            sites=list(doc.get("sites", [])),
            sources=dict(doc.get("sources") or {}),
            findings=list(doc.get("findings") or []),
            unavailable=dict(doc.get("unavailable") or {}),
            notes=list(doc.get("notes") or []),
            tracked=tracked,
            log=log,
            irp_log=irp_log,
            document=doc,
        )

    def findings(self, **options: Any) -> list[dict[str, Any]]:
        return list(self.analyze(**options)["findings"])
