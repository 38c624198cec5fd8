"""The kernel pool: POOL_HEADER page chains, big-pool allocations, the tracker table
(POOL_TRACKER_TABLE) and the big-page table (POOL_TRACKER_BIG_PAGES).

Every layout offset comes from the build profile's ``pool`` section (the one the Rust
reader uses); facts are from shared/specs/pool-structures.md:

* a 4 KiB pool page is a chain of blocks: the first has PreviousSize 0, each next one's
  PreviousSize is the BlockSize before it, BlockSizes (16-byte units, header included)
  sum to 256 (section 1);
* the stored PoolType is ``POOL_TYPE | 2`` for an allocated block (2 nonpaged, 3 paged,
  0x22 / 0x23 session), 0 for a free one (section 1, inferred there);
* tracker slots: ``(40543*tag ^ (40543*tag >> 32)) & (Size - 2)`` with linear probing,
  the last entry is the overflow bucket (section 3, ReactOS expool.c);
* big-page slots: ``p = (ULONG)(Va >> 12); (p>>24 ^ p>>16 ^ p>>8 ^ p) & (Size - 1)``
  with linear probing; a free entry has Va bit 0 set (section 4, ReactOS expool.c);
* big allocations (requests above the profile's big_pool_threshold) are page-aligned and
  have no POOL_HEADER.

What is not from a source: the tables are big allocations tagged "Pool"; PoolIndex is 0
for nonpaged and session pools and 1 for paged pool; free blocks keep the PoolIndex of
their page; NumberOfBytes of a big entry and the tracker's Bytes are the page-rounded size.
"""

from __future__ import annotations

import random
import struct
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from . import paging as pg
from .layout import PAGE_SIZE, parse_int
from .scenario import PoolSpec, tag_bytes

if TYPE_CHECKING:
    from .machine import Machine

POOLS = ("nonpaged", "paged", "session_nonpaged", "session_paged")
GLOBAL_POOLS = ("nonpaged", "paged")
PROTECTED = 0x80000000
IN_USE = 2
"""The bit ORed into POOL_TYPE in an allocated block's header (spec 1: inferred; the
profile's pool_type section gives the paged and session masks but not this bit)."""

NONPAGED_HINT = 0x1800  # the PFN where nonpaged pool pages start (as before)
PAGED_HINT = 0x2400
SESSION_HINT = 0x2C00
BIG_HINT = 0x3800

_Q = struct.Struct("<Q")

# Internal allocations the kernel builder makes, and the tracker Frees given to them.
INTERNAL_FREES = {"MmLd": 4, "MmPh": 1, "Pcr ": 0, "Pool": 2}


# ------------------------------------------------------------------------ layout
@dataclass(frozen=True)
class EntryField:
    offset: int
    width: int
    shift: int = 0
    bits: int = 0

    def put(self, buf: bytearray, at: int, value: int) -> None:
        bits = self.bits or self.width * 8
        if not 0 <= value < 1 << bits:
            raise ValueError(f"forge: {value} does not fit a {bits}-bit field")
        lo, hi = at + self.offset, at + self.offset + self.width
        cur = int.from_bytes(buf[lo:hi], "little")
        cur |= (value & ((1 << bits) - 1)) << self.shift
        buf[lo:hi] = cur.to_bytes(self.width, "little")

    def get(self, buf: bytes, at: int) -> int:
        bits = self.bits or self.width * 8
        raw = int.from_bytes(buf[at + self.offset : at + self.offset + self.width], "little")
        return (raw >> self.shift) & ((1 << bits) - 1)


@dataclass(frozen=True)
class EntryLayout:
    size: int
    fields: dict[str, EntryField]

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> EntryLayout:
        fields = {}
        for name, spec in raw.items():
            if name == "size" or isinstance(spec, str):  # strings are notes (hash, source)
                continue
            fields[name] = EntryField(
                parse_int(spec["offset"]),
                parse_int(spec["width"]),
                parse_int(spec.get("shift", 0)),
                parse_int(spec.get("bits", 0)),
            )
        return cls(parse_int(raw["size"]), fields)

    def __getitem__(self, name: str) -> EntryField:
        return self.fields[name]


@dataclass(frozen=True)
class PoolLayout:
    """The profile's ``pool`` section."""

    name: str
    unit: int
    header_size: int
    header: dict[str, int]
    paged_mask: int
    session_mask: int
    big_threshold: int
    tracker: EntryLayout
    big_page: EntryLayout
    globals: dict[str, tuple[str, int, int]]
    """name -> (relative_to, delta, width)."""
    big_hash: str = "reactos"
    """The big-page slot hash: "40543" (ExpAddTagForBigPages) or "reactos"."""

    @classmethod
    def from_profile(cls, profile: dict[str, Any]) -> PoolLayout:
        p = profile["pool"]
        h = p["pool_header"]
        return cls(
            name=p["layout"],
            unit=parse_int(p.get("block_unit", 16)),
            header_size=parse_int(h["size"]),
            header={k: parse_int(v) for k, v in h.items() if k != "size"},
            paged_mask=parse_int(p["pool_type"]["paged_mask"]),
            session_mask=parse_int(p["pool_type"]["session_mask"]),
            big_threshold=parse_int(p["big_pool_threshold"]),
            tracker=EntryLayout.parse(p["tracker"]),
            big_page=EntryLayout.parse(p["big_page"]),
            globals={
                k: (g["relative_to"], parse_int(g["delta"]), parse_int(g["width"]))
                for k, g in p.get("globals", {}).items()
            },
            big_hash=p["big_page"].get("hash", "reactos"),
        )

    @property
    def units_per_page(self) -> int:
        return PAGE_SIZE // self.unit

    def pool_type(self, pool: str) -> int:
        """The POOL_TYPE requested for ``pool`` (0 nonpaged, 1 paged, 0x20/0x21 session)."""
        t = self.paged_mask if pool in ("paged", "session_paged") else 0
        return t | (self.session_mask if pool.startswith("session") else 0)

    def stored_type(self, pool: str) -> int:
        return self.pool_type(pool) | IN_USE

    def pool_name(self, pool_type: int) -> str:
        paged = bool(pool_type & self.paged_mask)
        session = bool(pool_type & self.session_mask)
        return ("session_" if session else "") + ("paged" if paged else "nonpaged")

    def make_header(self, prev: int, index: int, units: int, ptype: int, tag: int) -> bytes:
        h = bytearray(self.header_size)
        hd = self.header
        h[hd["PreviousSize"]] = prev
        h[hd["PoolIndex"]] = index
        h[hd["BlockSize"]] = units
        h[hd["PoolType"]] = ptype
        h[hd["PoolTag"] : hd["PoolTag"] + 4] = tag.to_bytes(4, "little")
        return bytes(h)

    def read_header(self, page: bytes, off: int) -> tuple[int, int, int, int]:
        """(PreviousSize, BlockSize, PoolType, tag) of the header at ``off``."""
        hd = self.header
        t = hd["PoolTag"]
        return (
            page[off + hd["PreviousSize"]],
            page[off + hd["BlockSize"]],
            page[off + hd["PoolType"]],
            int.from_bytes(page[off + t : off + t + 4], "little"),
        )


# ------------------------------------------------------------------------- tags
def tag_u32(tag: str) -> int:
    return int.from_bytes(tag_bytes(tag), "little")


@lru_cache(maxsize=4096)
def tag_str(tag: int) -> str:
    """Four characters, protected bit cleared, non-printable bytes as '?' (as the reader)."""
    raw = (tag & ~PROTECTED & 0xFFFFFFFF).to_bytes(4, "little")
    return "".join(chr(b) if 0x20 <= b < 0x7F else "?" for b in raw)


@lru_cache(maxsize=4096)
def plausible_tag(tag: int) -> bool:
    """The first three bytes printable ASCII, the fourth printable once the protected bit is
    cleared, the first not a space (what pool scanners accept)."""
    b = (tag & ~PROTECTED).to_bytes(4, "little")
    return all(0x20 <= c < 0x7F for c in b) and b[0] != 0x20


def tracker_hash(tag: int, mask: int) -> int:
    r = 40543 * (tag & 0xFFFFFFFF)
    return ((r & 0xFFFFFFFF) ^ (r >> 32)) & mask


def big_hash(va: int, mask: int, kind: str = "reactos") -> int:
    """The big-page table slot of ``va``: "40543" as the 22631 kernel's
    ExpAddTagForBigPages computes it (``h = 40543 * (u32)(Va >> 12)``, low and high halves
    XORed), else ReactOS's ExpComputePartialHashForAddress."""
    r = (va >> 12) & 0xFFFFFFFF
    if kind == "40543":
        h = 40543 * r
        return ((h & 0xFFFFFFFF) ^ (h >> 32)) & mask
    return ((r >> 24) ^ (r >> 16) ^ (r >> 8) ^ r) & mask


# ---------------------------------------------------------------- page checking
def first_header(page: bytes, lay: PoolLayout) -> str | None:
    """Whether the page's first header looks like pool: "allocated" / "free" (PreviousSize 0,
    BlockSize 1..256, an allocated block with a plausible tag, or a free block with a
    plausible or zero tag), else None."""
    prev, units, ptype, tag = lay.read_header(page, 0)
    if prev != 0 or units == 0 or units > lay.units_per_page:
        return None
    if ptype != 0:
        return "allocated" if plausible_tag(tag) else None
    return "free" if plausible_tag(tag) or tag == 0 else None


def chain_valid(page: bytes, lay: PoolLayout) -> bool:
    """The whole page is a valid chain with at least one allocated block, and every
    allocated block has the same paged/nonpaged parity."""
    total = lay.units_per_page
    off = prev = 0
    parity = None
    while off < total:
        p, units, ptype, tag = lay.read_header(page, off * lay.unit)
        if p != prev or units == 0 or off + units > total:
            return False
        if ptype:
            if not plausible_tag(tag):
                return False
            par = ptype & lay.paged_mask
            if parity is None:
                parity = par
            elif par != parity:
                return False
        elif not (plausible_tag(tag) or tag == 0):
            return False
        prev = units
        off += units
    return parity is not None


def classify_page(page: bytes, lay: PoolLayout) -> str | None:
    """The page's kind: "pool" (valid chain), "rejected" (first header allocated-looking,
    chain invalid), "rejected_free_first" (first header free-looking, chain invalid) or
    None."""
    kind = first_header(page, lay)
    if kind is None:
        return None
    if chain_valid(page, lay):
        return "pool"
    return "rejected" if kind == "allocated" else "rejected_free_first"


def _row(rows: dict[int, dict[str, int]], tag: int) -> dict[str, int]:
    """The tracker row of ``tag`` (protected bit cleared), created with zero counters."""
    tag &= ~PROTECTED
    if tag not in rows:
        rows[tag] = {f"{p}_{f}": 0 for p in GLOBAL_POOLS for f in ("allocs", "frees", "bytes")}
    return rows[tag]


PoolOf = Callable[[str], "str | None"]
"""Which tracker pool (nonpaged / paged) a forge pool counts in, or None: not this table's."""


def _global_pool(pool: str) -> str | None:
    """The global tables count nonpaged and paged pool."""
    return pool if pool in GLOBAL_POOLS else None


def _session_pool(pool: str) -> str | None:
    """The session table counts session nonpaged pool as NonPaged, session paged as Paged."""
    return pool.removeprefix("session_") if pool.startswith("session_") else None


def _count_frees(
    rows: dict[int, dict[str, int]], frees: dict[tuple[int, str], int], pool_of: PoolOf
) -> None:
    """Into ``rows``: ``n`` allocations of a tag made and freed (n Allocs and n Frees)."""
    for (tag, pool), n in sorted(frees.items()):
        target = pool_of(pool)
        if n and target is not None:
            r = _row(rows, tag)
            r[f"{target}_allocs"] += n
            r[f"{target}_frees"] += n


# ------------------------------------------------------------------- the builder
@dataclass
class Block:
    pa: int
    va: int
    tag: int
    """As stored in the header (protected bit included)."""
    units: int
    prev: int
    pool: str
    allocated: bool
    internal: bool = False


@dataclass
class PoolPage:
    pool: str
    pfn: int
    va: int
    blocks: list[Block] = field(default_factory=list)
    off: int = 0
    prev: int = 0
    allocated: int = 0


@dataclass
class BigAlloc:
    va: int
    tag: int
    nbytes: int
    pool: str
    free: bool = False
    pfns: list[int] = field(default_factory=list)


@dataclass
class _Item:
    units: int
    tag: int
    allocated: bool


class PoolBuilder:
    """Lays out the pool of the forged machine and writes it through the kernel builder."""

    def __init__(self, kb: Machine, spec: PoolSpec, layout: PoolLayout) -> None:
        self.kb = kb
        self.spec = spec
        self.lay = layout
        self.rng = random.Random(kb.sc.seed ^ 0x504F4F4C)  # "POOL"
        self.template = bytes(b | 0x80 for b in self.rng.randbytes(0x2000))
        self.open: dict[str, PoolPage | None] = dict.fromkeys(POOLS)
        self.pending: dict[str, list[_Item]] = {p: [] for p in POOLS}
        self.pages: list[PoolPage] = []
        self.big: list[BigAlloc] = []
        self.freed: list[BigAlloc] = []
        self.corrupt: list[dict[str, Any]] = []
        self.internal: list[dict[str, Any]] = []
        self.frees: dict[tuple[int, str], int] = {}
        self.session_frees: dict[tuple[int, str], int] = {}
        """Frees of session-pool tags: they count in the session table, not the global one."""
        self.protected: set[str] = set()
        self.va_cursor = {
            "paged": kb.c.paged_pool_start,
            "session_paged": kb.c.session_pool_start,
        }
        self.finalized = False
        self._headers: dict[tuple[int, int, int, int, int], bytes] = {}
        # the two tables are boot-time allocations: the first big-pool entries
        t = self.lay.tracker.size * spec.tracker_entries
        b = self.lay.big_page.size * spec.big_table_entries
        self.tracker_va = self.alloc_big(t, "Pool", internal=True)
        self.big_table_va = self.alloc_big(b, "Pool", internal=True)
        self.stale: dict[str, list[int]] = {p: [] for p in POOLS}
        self.streams = {p: deque(items) for p, items in self._streams().items()}

    # ------------------------------------------------------------- addresses
    def _page_va(self, pool: str, pfn: int) -> int:
        if pool in ("nonpaged", "session_nonpaged"):
            return self.kb.pool_va(pfn * PAGE_SIZE)
        va = self._next_va(pool, 1)
        self.kb.pt.map_4k(va, pfn, pg.KERNEL_RW | pg.NX)
        return va

    def _next_va(self, pool: str, pages: int) -> int:
        """A fresh virtual range in paged or session pool (skipping the page the bugcheck
        parameters reference, so that it stays unmapped)."""
        va = self.va_cursor[pool]
        skip = self.kb.referenced_va & ~0xFFF
        if skip and va <= skip < va + pages * PAGE_SIZE:
            va = skip + PAGE_SIZE
        self.va_cursor[pool] = va + pages * PAGE_SIZE
        return va

    # ------------------------------------------------------------ small pool
    def _streams(self) -> dict[str, list[_Item]]:
        """The background allocations per pool, shuffled, with free blocks mixed in."""
        streams: dict[str, list[_Item]] = {p: [] for p in POOLS}
        stale = self.stale
        for t in self.spec.tags:
            raw = tag_u32(t.tag)
            stale[t.pool].append(raw)
            stored = raw | PROTECTED if t.protected else raw
            if t.protected:
                self.protected.add(tag_str(raw))
            sizes = t.size if isinstance(t.size, list) else [t.size]
            count = t.count * self.spec.scale
            for i in range(count):
                size = sizes[i % len(sizes)]
                if size > self.lay.big_threshold:
                    if t.pool.startswith("session"):
                        raise ValueError(f"pool.tags {t.tag!r}: session big pool is not forged")
                    self.alloc_big(size, t.tag, t.pool)
                    continue
                units = (size + self.lay.unit - 1) // self.lay.unit + 1
                streams[t.pool].append(_Item(units, stored, True))
            frees = t.frees if t.frees is not None else zlib.crc32(tag_bytes(t.tag)) % 97
            target = self.session_frees if t.pool.startswith("session") else self.frees
            key = (raw, t.pool)
            target[key] = target.get(key, 0) + frees * self.spec.scale
        for p in POOLS:
            self.rng.shuffle(streams[p])
        kinds = [p for p in POOLS if streams[p]]
        for _ in range(self.spec.free_blocks if kinds else 0):
            p = self.rng.choice(kinds)
            units = self.rng.randrange(2, 24)
            tag = self.rng.choice(stale[p]) if self.rng.random() < 0.8 else 0
            streams[p].insert(self.rng.randrange(len(streams[p]) + 1), _Item(units, tag, False))
        return streams

    def _stale_tag(self, pool: str) -> int:
        """A free block's tag: that of an earlier allocation in this pool, or 0."""
        tags = self.stale[pool] or [t for p in POOLS for t in self.stale[p]]
        if not tags or self.rng.random() < 0.25:
            return 0
        return self.rng.choice(tags)

    def _new_page(self, pool: str) -> PoolPage:
        hint = {"paged": PAGED_HINT, "session_paged": SESSION_HINT}.get(pool, NONPAGED_HINT)
        pfn = self.kb.mem.alloc(hint)
        self.kb.mem.page(pfn)
        page = PoolPage(pool, pfn, self._page_va(pool, pfn))
        self.open[pool] = page
        return page

    def _add(self, page: PoolPage, units: int, tag: int, allocated: bool, internal: bool) -> Block:
        blk = Block(
            pa=page.pfn * PAGE_SIZE + page.off * self.lay.unit,
            va=page.va + page.off * self.lay.unit,
            tag=tag,
            units=units,
            prev=page.prev,
            pool=page.pool,
            allocated=allocated,
            internal=internal,
        )
        page.blocks.append(blk)
        page.off += units
        page.prev = units
        page.allocated += allocated
        return blk

    def _place(self, pool: str, item: _Item, internal: bool = False) -> Block | None:
        total = self.lay.units_per_page
        pending = self.pending[pool]
        if not item.allocated:
            page = self.open[pool]
            if page is not None and page.allocated and page.off + item.units <= total:
                return self._add(page, item.units, item.tag, False, False)
            pending.append(item)
            return None
        page = self.open[pool]
        if page is None or page.off + item.units > total:
            self._close(pool)
            page = self._new_page(pool)
            while pending and page.off + pending[0].units + item.units <= total:
                f = pending.pop(0)
                self._add(page, f.units, f.tag, False, False)
        blk = self._add(page, item.units, item.tag, True, internal)
        while pending and page.off + pending[0].units <= total:
            f = pending.pop(0)
            self._add(page, f.units, f.tag, False, False)
        return blk

    def _close(self, pool: str) -> None:
        page = self.open[pool]
        if page is None:
            return
        self.open[pool] = None
        rest = self.lay.units_per_page - page.off
        if rest:
            self._add(page, rest, self._stale_tag(pool), False, False)
        index = 1 if pool == "paged" else 0
        stored = self.lay.stored_type(pool)
        buf = self.kb.mem.page(page.pfn)
        hsize = self.lay.header_size
        headers = self._headers
        for i, b in enumerate(page.blocks):
            key = (b.prev, index, b.units, stored if b.allocated else 0, b.tag)
            hdr = headers.get(key)
            if hdr is None:
                hdr = headers[key] = self.lay.make_header(*key)
            off = b.pa & 0xFFF
            buf[off : off + hsize] = hdr
            if b.internal:
                continue
            n = b.units * self.lay.unit - hsize
            start = ((b.pa >> 4) * 0x1F0 + i * 0x30) % 0x1000
            buf[off + hsize : off + hsize + n] = self.template[start : start + n]
            if not b.allocated and n >= 16:
                link = b.va + hsize  # an empty LIST_ENTRY: Flink = Blink = itself
                buf[off + hsize : off + hsize + 16] = _Q.pack(link) * 2
        self.pages.append(page)

    def _drain(self, pool: str, n: int) -> None:
        s = self.streams[pool]
        for _ in range(min(n, len(s))):
            self._place(pool, s.popleft())

    def alloc(self, size: int, tag: str, pool: str = "nonpaged", record: bool = True) -> int:
        """A kernel structure's block: returns the VA of its body (after the header). A few
        background allocations go first, so the kernel's blocks are mixed in. The body is
        left zero for the caller to write. ``record`` lists it in ``internal`` (the kernel's
        own allocations); a tag the scenario stores protected is stored protected here too."""
        if self.finalized:
            raise RuntimeError("forge: pool allocation after the pool was finalized")
        units = (size + self.lay.unit - 1) // self.lay.unit + 1
        if size > self.lay.big_threshold:
            return self.alloc_big(size, tag, pool, internal=record)
        self._drain(pool, self.rng.randrange(0, 4))
        raw = tag_u32(tag)
        if tag_str(raw) in self.protected:
            raw |= PROTECTED
        blk = self._place(pool, _Item(units, raw, True), internal=True)
        assert blk is not None
        if record:
            self.internal.append({"va": blk.va, "tag": tag, "size": units * 16, "kind": "small"})
        return blk.va + self.lay.header_size

    def small_body_bytes(self, size: int) -> int:
        """The body size (block size minus header) of a small block for a ``size`` request."""
        units = (size + self.lay.unit - 1) // self.lay.unit + 1
        return units * self.lay.unit - self.lay.header_size

    def add_frees(self, tag: str, pool: str, n: int) -> None:
        """``n`` allocations of ``tag`` made and freed: n Allocs and n Frees in the tracker."""
        if self.finalized:
            raise RuntimeError("forge: pool frees after the pool was finalized")
        key = (tag_u32(tag), pool)
        target = self.session_frees if pool.startswith("session") else self.frees
        target[key] = target.get(key, 0) + n

    # -------------------------------------------------------------- big pool
    def alloc_big(self, size: int, tag: str, pool: str = "nonpaged", internal: bool = False) -> int:
        """A page-aligned allocation without header, listed in the big-page table."""
        pages = max(1, (size + PAGE_SIZE - 1) // PAGE_SIZE)
        if pool == "nonpaged":
            base = self.kb.mem.alloc_run(pages, BIG_HINT)
            pfns = list(range(base, base + pages))
            va = self.kb.pool_va(base * PAGE_SIZE)
        elif pool == "paged":
            va = self._next_va("paged", pages)
            pfns = [self.kb.mem.alloc(PAGED_HINT) for _ in range(pages)]
            for i, pfn in enumerate(pfns):
                self.kb.pt.map_4k(va + i * PAGE_SIZE, pfn, pg.KERNEL_RW | pg.NX)
        else:
            raise ValueError(f"big pool allocations in {pool} pool are not forged")
        self.big.append(BigAlloc(va, tag_u32(tag), pages * PAGE_SIZE, pool, pfns=pfns))
        if internal:
            self.internal.append({"va": va, "tag": tag, "size": pages * PAGE_SIZE, "kind": "big"})
        return va

    def _freed_big(self, size: int, tag: str, pool: str) -> int:
        """A freed big allocation (a big-page entry with the free bit); returns its VA."""
        pages = max(1, (size + PAGE_SIZE - 1) // PAGE_SIZE)
        if pool == "nonpaged":
            va = self.kb.pool_va(self.kb.mem.alloc_run(pages, BIG_HINT) * PAGE_SIZE)
        else:
            va = self._next_va("paged", pages)  # released: left unmapped
        self.freed.append(BigAlloc(va, tag_u32(tag), pages * PAGE_SIZE, pool, free=True))
        return va

    def freed_big(self, size: int, tag: str, pool: str) -> int:
        if self.finalized:
            raise RuntimeError("forge: pool allocation after the pool was finalized")
        return self._freed_big(size, tag, pool)

    # -------------------------------------------------------------- corrupt
    def _corrupt_pages(self) -> None:
        c = self.spec.corrupt_pages
        kinds = ["broken_chain"] * c.broken_chain + ["garbage_header"] * c.garbage_header
        kinds += ["half_page"] * c.half_page
        tags = sorted({b.tag for p in self.pages for b in p.blocks if b.allocated} or {0x6B61654C})
        for kind in kinds:
            for _ in range(1000):
                page = self._corrupt_page(kind, tags)
                if first_header(page, self.lay) == "allocated" and not chain_valid(page, self.lay):
                    break
            else:  # pragma: no cover - the generator always finds one quickly
                raise RuntimeError("forge: could not make a corrupt pool page")
            pfn = self.kb.mem.alloc(NONPAGED_HINT)
            self.kb.mem.write(pfn * PAGE_SIZE, page)
            _, units, ptype, tag = self.lay.read_header(page, 0)
            self.corrupt.append(
                {
                    "pfn": pfn,
                    "pa": pfn * PAGE_SIZE,
                    "va": self.kb.pool_va(pfn * PAGE_SIZE),
                    "kind": kind,
                    "first_tag": tag_str(tag),
                    "first_size": units * self.lay.unit,
                }
            )

    def _chain(self, units_total: int, tags: list[int]) -> tuple[bytearray, list[int]]:
        """A valid chain of allocated nonpaged blocks covering ``units_total`` units."""
        out = bytearray()
        sizes: list[int] = []
        prev = 0
        left = units_total
        stored = self.lay.stored_type("nonpaged")
        while left:
            units = min(left, self.rng.randrange(2, 40))
            if left - units == 1:
                units += 1
            hdr = self.lay.make_header(prev, 0, units, stored, self.rng.choice(tags))
            body = self.template[: units * self.lay.unit - len(hdr)]
            out += hdr + body
            sizes.append(units)
            prev = units
            left -= units
        return out, sizes

    def _corrupt_page(self, kind: str, tags: list[int]) -> bytes:
        total = self.lay.units_per_page
        if kind == "broken_chain":
            page, sizes = self._chain(total, tags)
            k = self.rng.randrange(1, len(sizes))
            off = sum(sizes[:k]) * self.lay.unit + self.lay.header["PreviousSize"]
            page[off] = (sizes[k - 1] + self.rng.randrange(1, 5)) & 0xFF
            return bytes(page)
        if kind == "half_page":
            page, _ = self._chain(total // 2, tags)
            return bytes(page) + self.rng.randbytes(PAGE_SIZE - len(page))
        stored = self.lay.stored_type("nonpaged")
        units = self.rng.randrange(2, 30)
        hdr = self.lay.make_header(0, 0, units, stored, self.rng.choice(tags))
        return hdr + self.rng.randbytes(PAGE_SIZE - len(hdr))

    # -------------------------------------------------------------- finalize
    def finalize(self) -> dict[str, Any]:
        """Flush the background, write both tables and the nt variables that locate them.
        Returns the figures the memory summary needs."""
        if self.finalized:
            raise RuntimeError("forge: pool finalized twice")
        for p in POOLS:
            self._drain(p, len(self.streams[p]))
            self._close(p)
        for b in self.spec.big:
            for _ in range(b.count):
                self.alloc_big(b.bytes, b.tag, b.pool)
        for b in self.spec.freed_big:
            for _ in range(b.count):
                self._freed_big(b.bytes, b.tag, b.pool)
        for tag, n in INTERNAL_FREES.items():
            key = (tag_u32(tag), "nonpaged")
            self.frees[key] = self.frees.get(key, 0) + n
        self._corrupt_pages()
        self.finalized = True
        self.rows = self._tracker_rows()
        self.tracker_slots = self._write_tracker()
        self.big_slots = self._write_big_table()
        self.globals = self._write_globals()
        self.session = self._write_session()
        self.kb.notes += [
            "pool: PoolTrackTable and PoolBigPageTable are big allocations tagged 'Pool' "
            "(synthetic); PoolIndex 1 for paged pool, 0 otherwise (synthetic)",
            "pool: big-page NumberOfBytes and tracker Bytes of big allocations are the "
            "page-rounded size (spec 4: requested or rounded is unsure)",
            f"pool: big-page slot hash {self.lay.big_hash!r} (profile pool.big_page.hash)",
            "pool: free blocks belong to the pool of their page (their header PoolType is 0)",
        ]
        return self.page_counts()

    def page_counts(self) -> dict[str, int]:
        out = {f"small_{p}": 0 for p in POOLS}
        for page in self.pages:
            out[f"small_{page.pool}"] += 1
        out["corrupt"] = len(self.corrupt)
        for p in GLOBAL_POOLS:
            out[f"big_{p}"] = sum(len(b.pfns) for b in self.big if b.pool == p)
        out["nonpaged_total"] = (
            out["small_nonpaged"] + out["small_session_nonpaged"] + out["corrupt"]
            + out["big_nonpaged"]
        )  # fmt: skip
        out["paged_total"] = out["small_paged"] + out["big_paged"]
        return out

    def _tracker_rows(self) -> dict[int, dict[str, int]]:
        """The summed tracker figures per tag (what !poolused shows). On per-CPU builds the
        per-processor and expansion tables are big allocations tagged "Pool" themselves, so
        they are made first."""
        self._alloc_tag_tables()
        self._alloc_session()
        rows: dict[int, dict[str, int]] = {}
        for b in self.big:
            r = _row(rows, b.tag)
            r[f"{b.pool}_allocs"] += 1
            r[f"{b.pool}_bytes"] += b.nbytes
        self._count_blocks(rows, _global_pool)
        for b in self.freed:
            r = _row(rows, b.tag)
            r[f"{b.pool}_allocs"] += 1
            r[f"{b.pool}_frees"] += 1
        _count_frees(rows, self.frees, _global_pool)
        return rows

    def _count_blocks(self, rows: dict[int, dict[str, int]], pool_of: PoolOf) -> None:
        """Into ``rows``: one Alloc and the bytes of each allocated small block of the pages
        whose pool ``pool_of`` maps to a tracker pool (nonpaged / paged)."""
        for page in self.pages:
            pool = pool_of(page.pool)
            if pool is None:
                continue
            for b in page.blocks:
                if b.allocated:
                    r = _row(rows, b.tag)
                    r[f"{pool}_allocs"] += 1
                    r[f"{pool}_bytes"] += b.units * self.lay.unit

    # ------------------------------------------------------- tag tables (Win8+)
    def _per_cpu(self) -> bool:
        """Whether the profile says the build keeps per-processor tag tables."""
        return bool(self.kb.profile["pool"].get("per_cpu_tag_tables"))

    def _alloc_tag_tables(self) -> None:
        """ExPoolTagTables[0] is PoolTrackTable itself; every other processor gets its own
        table, and a one-page PoolTrackTableExpansion holds the tags the hashed tables did
        not take (all big allocations tagged "Pool", as the kernel's are)."""
        if hasattr(self, "cpu_tables"):
            return
        self.cpu_tables: list[int] = [self.tracker_va]
        self.expansion_va = 0
        self.expansion_entries = 0
        if not self._per_cpu():
            return
        size = self.lay.tracker.size * self.spec.tracker_entries
        for _ in range(1, self.kb.sc.processors):
            self.cpu_tables.append(self.alloc_big(size, "Pool", internal=True))
        self.expansion_va = self.alloc_big(PAGE_SIZE, "Pool", internal=True)
        # the kernel sizes it as bytes / sizeof(POOL_TRACKER_TABLE) (decompiled
        # ExpInsertPoolTrackerExpansion); its entry layout is taken as the tracker's (unsure)
        self.expansion_entries = PAGE_SIZE // self.lay.tracker.size

    def _expansion_tags(self) -> list[int]:
        """Two background tags whose figures live in the expansion table (synthetic: the
        kernel sends a tag there when probing finds no free slot; the forge's hashed table is
        not full, so the choice is the forge's)."""
        if not self._per_cpu():
            return []
        rng = random.Random(self.kb.sc.seed ^ 0x45585041)  # "EXPA"
        eligible = sorted(
            t for t, r in self.rows.items()
            if tag_str(t) not in INTERNAL_FREES and plausible_tag(t)
            and (r["nonpaged_bytes"] or r["paged_bytes"])
        )  # fmt: skip
        return rng.sample(eligible, min(2, len(eligible)))

    def _cpu_shares(self, tags: list[int]) -> dict[int, list[dict[str, int]]]:
        """Each tag's summed figures split over the processors as the kernel counts them:
        an allocation in the table of the CPU that made it, a free in the table of the CPU
        that freed it, so a CPU that freed more than it allocated holds negative Bytes (and
        Frees above Allocs). Live blocks stay with the CPU that allocated them; freed ones
        are taken as the tag's average block size. The tag with the most nonpaged frees is
        freed only on the last CPU, so at least one CPU's Bytes wraps below zero."""
        n = len(self.cpu_tables)
        rng = random.Random(self.kb.sc.seed ^ 0x43505553)  # "CPUS"

        def split(total: int) -> list[int]:
            cuts = sorted(rng.randrange(total + 1) for _ in range(n - 1))
            return [b - a for a, b in zip([0, *cuts], [*cuts, total], strict=True)]

        forced = max(
            tags, key=lambda t: (self.rows[t]["nonpaged_frees"], -t), default=None
        )  # fmt: skip
        out: dict[int, list[dict[str, int]]] = {}
        for tag in tags:
            r = self.rows[tag]
            shares: list[dict[str, int]] = [{} for _ in range(n)]
            for pool in GLOBAL_POOLS:
                allocs, frees, nbytes = (r[f"{pool}_{k}"] for k in ("allocs", "frees", "bytes"))
                live = allocs - frees
                units = nbytes // 16
                unit = max(16, units // live * 16) if live else 0x100
                if n > 1 and tag == forced and pool == "nonpaged" and frees:
                    lives = split(live)[: n - 1] + [0]
                    lives[0] += live - sum(lives)
                    fa = split(frees)[: n - 1] + [0]
                    fa[0] += frees - sum(fa)
                    ff = [0] * (n - 1) + [frees]
                else:
                    lives, fa, ff = split(live), split(frees), split(frees)
                # the live bytes in 16-byte units, in proportion to the live blocks
                lb = [units * x // live if live else 0 for x in lives]
                holder = next((i for i, x in enumerate(lives) if x), 0)
                lb[holder] += units - sum(lb)
                for i in range(n):
                    shares[i][f"{pool}_allocs"] = lives[i] + fa[i]
                    shares[i][f"{pool}_frees"] = ff[i]
                    shares[i][f"{pool}_bytes"] = lb[i] * 16 + (fa[i] - ff[i]) * unit
            out[tag] = shares
        return out

    def _write_tracker(self) -> dict[int, int]:
        """PoolTrackTable (and on per-CPU builds the other processors' tables and the
        expansion table); returns the PoolTrackTable slot of each hashed tag. Per-table
        figures are kept for the ground truth (counters as signed integers: a negative one is
        stored modulo 2^64)."""
        n = self.spec.tracker_entries
        mask = n - 2
        e = self.lay.tracker
        expansion = self._expansion_tags()
        hashed = [t for t in self.rows if t not in expansion]
        if len(hashed) > n - 1:
            raise ValueError(f"pool: {len(hashed)} tags do not fit a {n:#x}-entry tracker")
        if len(expansion) > self.expansion_entries:  # pragma: no cover - two tags, 73 entries
            raise ValueError("pool: the expansion table is too small")
        slots: dict[int, int] = {}
        used: set[int] = set()
        for tag in hashed:  # big allocations (the tables' own "Pool" first), then blocks
            h = tracker_hash(tag, mask)
            while h in used:
                h = (h + 1) & mask
            used.add(h)
            slots[tag] = h
        if self._per_cpu():
            shares = self._cpu_shares(hashed)
        else:
            shares = {t: [self.rows[t]] for t in hashed}
        caps = (("nonpaged", "NonPaged"), ("paged", "Paged"))

        def put(table: bytearray, at: int, tag: int, r: dict[str, int]) -> dict[str, Any]:
            e["Key"].put(table, at, tag)
            for pool, cap in caps:
                for k, f in (("allocs", "Allocs"), ("frees", "Frees"), ("bytes", "Bytes")):
                    fld = e[f"{cap}{f}"]
                    fld.put(table, at, r[f"{pool}_{k}"] & ((1 << (fld.bits or fld.width * 8)) - 1))
            return {"tag": tag_str(tag), "slot": at // e.size,
                    **{f"{p}_{k}": r[f"{p}_{k}"] for p in GLOBAL_POOLS
                       for k in ("allocs", "frees", "bytes")}}  # fmt: skip

        tables: list[dict[str, Any]] = []
        for cpu, va in enumerate(self.cpu_tables):
            table = bytearray(n * e.size)
            rows = []
            for tag in sorted(hashed, key=slots.__getitem__):
                r = shares[tag][cpu]
                if cpu and not any(r.values()):
                    continue  # a CPU that never counted the tag has no key for it
                rows.append(put(table, slots[tag] * e.size, tag, r))
            self.kb.vwrite(va, bytes(table))
            tables.append({"kind": "per_cpu" if cpu else "global", "va": va, "entries": n,
                           "cpus": [cpu] if self._per_cpu() else [], "rows": rows})  # fmt: skip
        if self.expansion_va:
            table = bytearray(self.expansion_entries * e.size)
            rows = [put(table, i * e.size, t, self.rows[t]) for i, t in enumerate(expansion)]
            self.kb.vwrite(self.expansion_va, bytes(table))
            tables.append({"kind": "expansion", "va": self.expansion_va, "cpus": [],
                           "entries": self.expansion_entries, "rows": rows})  # fmt: skip
        self.tag_tables = tables
        self.expansion_tags = expansion
        if self._per_cpu():
            self.kb.notes.append(
                "pool: ExPoolTagTables[0] is PoolTrackTable, the other processors' tables are "
                "big allocations tagged 'Pool'; each tag's counts are split over the processors "
                "(synthetic), a free on another processor drives its Bytes below zero (stored "
                "modulo 2^64); two tags live in PoolTrackTableExpansion (synthetic choice; entry "
                "layout taken as the tracker's, unsure); the order of the pool variables in nt "
                ".data is seeded (synthetic)"
            )
        return slots

    def _write_big_table(self) -> list[tuple[int, BigAlloc]]:
        n = self.spec.big_table_entries
        mask = n - 1
        e = self.lay.big_page
        entries = self.big + self.freed  # live first, then those freed later
        if len(entries) >= n:
            raise ValueError(f"pool: {len(entries)} big allocations do not fit {n:#x} entries")
        table = bytearray(n * e.size)
        for i in range(n):
            e["Va"].put(table, i * e.size, 1)  # POOL_BIG_TABLE_ENTRY_FREE
        used: set[int] = set()
        slots: list[tuple[int, BigAlloc]] = []
        for b in entries:
            h = big_hash(b.va, mask, self.lay.big_hash)
            while h in used:
                h = (h + 1) & mask
            used.add(h)
            at = h * e.size
            table[at : at + e.size] = bytes(e.size)
            e["Va"].put(table, at, b.va | (1 if b.free else 0))
            e["Key"].put(table, at, b.tag)
            e["PoolType"].put(table, at, self.lay.pool_type(b.pool))
            e["NumberOfBytes"].put(table, at, b.nbytes)
            slots.append((h, b))
        self.kb.vwrite(self.big_table_va, bytes(table))
        slots.sort(key=lambda s: s[0])
        return slots

    def _write_globals(self) -> dict[str, int]:
        """nt!PoolTrackTable and the variables found relative to it (profile ``globals``);
        variables the profile does not place get their own (symbol-only) addresses. Per-CPU
        builds get the cluster of pool variables of ``_write_pool_data``."""
        if self._per_cpu():
            return self._write_pool_data()
        kb = self.kb
        values = {
            "PoolTrackTable": (self.tracker_va, 8),
            "PoolTrackTableSize": (self.spec.tracker_entries, 8),
            "PoolBigPageTable": (self.big_table_va, 8),
            "PoolBigPageTableSize": (self.spec.big_table_entries, 8),
        }
        rel = {
            k: (d, w) for k, (r, d, w) in self.lay.globals.items()
            if r == "PoolTrackTable" and k in values
        }  # fmt: skip
        lo = min([0, *(d for d, _ in rel.values())])
        hi = max([8, *(d + w for d, w in rel.values())])
        block = kb.nt_var(hi - lo, 16)
        out = {"PoolTrackTable": block - lo}
        for k, (d, w) in rel.items():
            out[k] = out["PoolTrackTable"] + d
            values[k] = (values[k][0], w)
        for k in values:
            if k not in out:
                out[k] = kb.nt_var(8, 8)
        for k, va in out.items():
            v, w = values[k]
            kb.vwrite(va, v.to_bytes(w, "little"))
            kb.symbols[k] = va
        return out

    def _write_pool_data(self) -> dict[str, int]:
        """The pool variables of a per-CPU build, in one stretch of nt .data in a seeded
        order with seeded gaps (so no distance between them is fixed): PoolTrackTable,
        PoolTrackTableSize, ExPoolTagTables (0x800 slots: PoolTrackTable, then the other
        processors' tables, then nulls), PoolTrackTableExpansion beside its size,
        PoolBigPageTable beside its size, and look-alikes the kernel keeps near them
        (PoolTrackTableMask = Size - 2, PoolBigPageTableHash = Size - 1, flags, a lock).
        Which variables the kernel keeps together, and in which order, is not from a source."""
        kb = self.kb
        rng = random.Random(kb.sc.seed ^ 0x474C4F42)  # "GLOB"
        n, big = self.spec.tracker_entries, self.spec.big_table_entries
        slots = [*self.cpu_tables, *[0] * (0x800 - len(self.cpu_tables))]

        def pair(a: tuple[str, int], b: tuple[str, int]) -> list[tuple[str, int]]:
            return [a, b] if rng.random() < 0.5 else [b, a]

        items: list[list[tuple[str, int | list[int]]]] = [
            [("PoolTrackTable", self.tracker_va)],
            [("PoolTrackTableSize", n)],
            [("PoolTrackTableMask", n - 2)],
            pair(("PoolBigPageTable", self.big_table_va), ("PoolBigPageTableSize", big)),
            [("PoolBigPageTableHash", big - 1)],
            pair(("PoolTrackTableExpansion", self.expansion_va),
                 ("PoolTrackTableExpansionSize", self.expansion_entries)),
            [("ExPoolTagTables", slots)],
            [("ExpPoolFlags", 0x21)],
            [("ExpTaggedPoolLock", 0)],
        ]  # fmt: skip
        rng.shuffle(items)
        placed: list[tuple[str, int, bytes]] = []
        off = 0
        for item in items:
            off += 8 * rng.randrange(0, 40)
            for name, value in item:
                words = value if isinstance(value, list) else [value]
                raw = b"".join(_Q.pack(v) for v in words)
                placed.append((name, off, raw))
                off += len(raw)
        base = kb.nt_var(off + 8 * rng.randrange(1, 40), 16)
        out: dict[str, int] = {}
        for name, o, raw in placed:
            kb.vwrite(base + o, raw)
            kb.symbols[name] = out[name] = base + o
        return out

    # ------------------------------------------------------ session pool (!poolused 8)
    def _session_profile(self) -> dict[str, Any] | None:
        """The profile's ``pool.session`` section (None: no session tagging database)."""
        s: dict[str, Any] | None = self.kb.profile["pool"].get("session")
        return s

    def _session_rows(self) -> dict[int, dict[str, int]]:
        """The session table's figures per tag: the allocated blocks of session pool pages
        (session_nonpaged counts as NonPaged, session_paged as Paged) and the session tags'
        frees (each an Alloc and a Free)."""
        rows: dict[int, dict[str, int]] = {}
        self._count_blocks(rows, _session_pool)
        _count_frees(rows, self.session_frees, _session_pool)
        return rows

    def _alloc_session(self) -> None:
        """The session figures, and (where _MM_SESSION_SPACE has PoolTrackTableExpansion) the
        session's expansion table: one page of nonpaged pool (a big allocation tagged "Pool",
        as the forge's other tables; the kernel counts it under "Pool" too, decompiled
        ExpInsertPoolTrackerExpansion) holding one session tag (synthetic choice, as for
        PoolTrackTableExpansion: the hashed table is not full)."""
        if hasattr(self, "session_rows"):
            return
        self.session_rows = self._session_rows()
        self.session_expansion_va = 0
        self.session_expansion_entries = 0
        self.session_expansion_tags: list[int] = []
        s = self._session_profile()
        if s is None or "PoolTrackTableExpansion" not in s.get("mm_session_space", {}):
            return
        rng = random.Random(self.kb.sc.seed ^ 0x53455853)  # "SEXS"
        eligible = sorted(t for t in self.session_rows if plausible_tag(t))
        if len(eligible) < 2:
            return
        self.session_expansion_tags = rng.sample(eligible, 1)
        self.session_expansion_va = self.alloc_big(PAGE_SIZE, "Pool", internal=True)
        # sized as the kernel sizes it: bytes / sizeof(POOL_TRACKER_TABLE)
        self.session_expansion_entries = PAGE_SIZE // self.lay.tracker.size

    def _session_space_va(self) -> int:
        """The session space of the forged session: 0xFFFFF90000000000 on Win7-like builds (the
        constant MmSessionSpace of the decompiled pre-1607 x64 ExInitializePoolDescriptor:
        ExpSessionPoolLookaside = 0xFFFFF900000000C0 = MmSessionSpace + Lookaside), 3 GiB
        below the session pool on later ones (synthetic: randomized there)."""
        return self.kb.c.session_pool_start - 0xC000_0000

    def _put_row(self, table: bytearray, at: int, tag: int, r: dict[str, int]) -> dict[str, Any]:
        e = self.lay.tracker
        e["Key"].put(table, at, tag)
        for pool, cap in (("nonpaged", "NonPaged"), ("paged", "Paged")):
            for k, f in (("allocs", "Allocs"), ("frees", "Frees"), ("bytes", "Bytes")):
                e[f"{cap}{f}"].put(table, at, r[f"{pool}_{k}"])
        return {"tag": tag_str(tag), "slot": at // e.size,
                **{f"{p}_{k}": r[f"{p}_{k}"] for p in GLOBAL_POOLS
                   for k in ("allocs", "frees", "bytes")}}  # fmt: skip

    def _write_session(self) -> dict[str, Any] | None:
        """The session pool's tagging database (profile ``pool.session``): the session space
        (_MM_SESSION_SPACE: PoolTrackTableExpansion/Size, or PoolTags on 22000), the session
        table (Size = the profile's ``entries``, a power of two; slot = tracker hash & (Size -
        1), linear probing that passes the last entry by), the expansion table, and the nt
        variables: ExpSessionPoolTrackTable (the table's address; not on 22000),
        ExpSessionPoolTrackTableSize, ExpSessionPoolTrackTableMask = Size - 1 and
        MmSessionSpace, in nt .data after the other pool variables, in a seeded order with
        seeded gaps (which variables the kernel keeps together is not from a source). Returns
        the ``session_tracker`` ground truth (None when the profile has no session
        section)."""
        s = self._session_profile()
        if s is None:
            return None
        kb, e = self.kb, self.lay.tracker
        n = parse_int(s["entries"])
        if n < 4 or n & (n - 1):
            raise ValueError(f"pool.session.entries {n:#x} is not a power of two")
        mm = {k: parse_int(v) for k, v in s.get("mm_session_space", {}).items()}
        ss = self._session_space_va()
        struct_size = mm.get("size", PAGE_SIZE)
        if s["table"] == "variable" and "table_offset" in s:
            table_off = parse_int(s["table_offset"])
        else:  # where the table lives is not from a source: the page after the structure
            table_off = (struct_size + PAGE_SIZE - 1) // PAGE_SIZE * PAGE_SIZE
        table_va = ss + table_off
        end = max(struct_size, table_off + n * e.size)
        for off in range(0, end, PAGE_SIZE):
            pfn = kb.mem.alloc(SESSION_HINT)
            kb.mem.page(pfn)
            kb.pt.map_4k(ss + off, pfn, pg.KERNEL_RW | pg.NX)
        # the hashed table
        rows = self.session_rows
        hashed = [t for t in rows if t not in self.session_expansion_tags]
        if len(hashed) > n - 1:
            raise ValueError(f"pool: {len(hashed)} session tags do not fit {n:#x} entries")
        mask = n - 1
        slots: dict[int, int] = {}
        for tag in hashed:
            h = tracker_hash(tag, mask)
            while h in slots.values() or h == n - 1:  # the last entry is passed by
                h = (h + 1) & mask
            slots[tag] = h
        table = bytearray(n * e.size)
        trows = [self._put_row(table, slots[t] * e.size, t, rows[t])
                 for t in sorted(hashed, key=slots.__getitem__)]  # fmt: skip
        kb.vwrite(table_va, bytes(table))
        tables = [{"kind": "session", "va": table_va, "entries": n, "rows": trows}]
        if self.session_expansion_va:
            exp = bytearray(self.session_expansion_entries * e.size)
            erows = [self._put_row(exp, i * e.size, t, rows[t])
                     for i, t in enumerate(self.session_expansion_tags)]  # fmt: skip
            kb.vwrite(self.session_expansion_va, bytes(exp))
            kb.q(ss + mm["PoolTrackTableExpansion"], self.session_expansion_va)
            kb.q(ss + mm["PoolTrackTableExpansionSize"], self.session_expansion_entries)
            tables.append({"kind": "session_expansion", "va": self.session_expansion_va,
                           "entries": self.session_expansion_entries, "rows": erows})  # fmt: skip
        if s["table"] == "session_space":
            kb.q(ss + mm["PoolTags"], table_va)
        # the nt variables
        rng = random.Random(kb.sc.seed ^ 0x53455353)  # "SESS"
        group = [("ExpSessionPoolTrackTableSize", n), ("ExpSessionPoolTrackTableMask", n - 1)]
        if s["table"] == "variable":
            group.append((s["table_variable"], table_va))
        rng.shuffle(group)
        items = [group, [("MmSessionSpace", ss)]]
        rng.shuffle(items)
        placed: list[tuple[str, int, int]] = []
        off = 0
        for item in items:
            off += 8 * rng.randrange(0, 40)
            for name, value in item:
                placed.append((name, off, value))
                off += 8
        base = kb.nt_var(off + 8 * rng.randrange(1, 40), 16)
        variables: dict[str, int] = {}
        for name, o, value in placed:
            kb.q(base + o, value)
            kb.symbols[name] = variables[name] = base + o
        kb.notes.append(
            "pool: the session table and _MM_SESSION_SPACE are in session space "
            f"({ss:#x}, mapped in the dump's address space); session frees count as Allocs and "
            "Frees there; one session tag lives in the session's PoolTrackTableExpansion where "
            "the build has one (synthetic choice); the session variables' order in nt .data is "
            "seeded (synthetic)"
        )
        order = [*sorted(hashed, key=slots.__getitem__), *self.session_expansion_tags]
        return {
            "va": table_va,
            "entries": n,
            "table": s["table"],
            "session_space": ss,
            "rows": [{"tag": tag_str(t), **{k: rows[t][k] for k in rows[t]}} for t in order],
            "slots": [slots.get(t) for t in order],
            "tables": tables,
            "expansion": {"va": self.session_expansion_va,
                          "entries": self.session_expansion_entries}
            if self.session_expansion_va else None,
            "globals": variables,
        }  # fmt: skip

    # ----------------------------------------------------------------- truth
    def truth(self) -> dict[str, Any]:
        """The pool section of the ground truth (without owners, rejected-page extras and
        memory, which core adds)."""
        lay = self.lay
        blocks = []
        scan: dict[tuple[str, str], list[int]] = {}
        for page in self.pages:
            for b in page.blocks:
                size = b.units * lay.unit
                blocks.append(
                    {
                        "pa": b.pa,
                        "va": b.va,
                        "tag": tag_str(b.tag),
                        "size": size,
                        "previous_size": b.prev * lay.unit,
                        "pool": b.pool,
                        "allocated": b.allocated,
                    }
                )
                c = scan.setdefault((tag_str(b.tag), b.pool), [0, 0, 0, 0])
                if b.allocated:
                    c[0] += 1
                    c[1] += size
                else:
                    c[2] += 1
                    c[3] += size
        blocks.sort(key=lambda x: x["pa"])
        tags = [
            {"tag": t, "pool": p, "allocated": c[0], "allocated_bytes": c[1], "free": c[2],
             "free_bytes": c[3]}
            for (t, p), c in sorted(scan.items(), key=lambda kv: (-kv[1][1], kv[0]))
        ]  # fmt: skip
        return {
            "layout": lay.name,
            "tracker": self._tracker_truth(),
            "session_tracker": self.session,
            "blocks": blocks,
            "scan": {
                "pool_pages": len(self.pages),
                "rejected_pages": len(self.corrupt),
                "rejected": list(self.corrupt),
                "tags": tags,
            },
            "bigpool": {
                "va": self.big_table_va,
                "entries": self.spec.big_table_entries,
                "rows": [
                    {
                        "va": b.va,
                        "tag": tag_str(b.tag),
                        "bytes": b.nbytes,
                        "pool": b.pool,
                        "free": b.free,
                    }
                    for _, b in self.big_slots
                ],  # fmt: skip
                "slots": [s for s, _ in self.big_slots],
            },
            "globals": dict(self.globals),
            "protected_tags": sorted(self.protected),
            "pages": self.page_counts(),
        }

    def _tracker_truth(self) -> dict[str, Any]:
        """``rows``: one per tag, the figures summed over every table (what !poolused shows),
        PoolTrackTable's tags in slot order then the expansion table's; ``slots``: each row's
        PoolTrackTable slot (None for an expansion row). ``tables``: what each table holds
        (``kind`` global / per_cpu / expansion, ``va``, ``entries``, ``cpus`` = the
        ExPoolTagTables slots naming it, ``rows`` with ``slot`` and signed counters: a
        negative one is stored modulo 2^64). ``tag_tables``: the ExPoolTagTables array
        (``va``, ``slots`` = its first NumberProcessors pointers) on per-CPU builds, else
        None."""
        by_slot = sorted(self.tracker_slots.items(), key=lambda kv: kv[1])
        order: list[tuple[int, int | None]] = [*by_slot, *((t, None) for t in self.expansion_tags)]
        return {
            "va": self.tracker_va,
            "entries": self.spec.tracker_entries,
            "rows": [{"tag": tag_str(t), **self._row_fields(t)} for t, _ in order],
            "slots": [s for _, s in order],
            "tables": self.tag_tables,
            "tag_tables": {
                "va": self.globals["ExPoolTagTables"],
                "slots": list(self.cpu_tables),
            } if self._per_cpu() else None,
        }  # fmt: skip

    def _row_fields(self, tag: int) -> dict[str, int]:
        r = self.rows[tag]
        keys = ("allocs", "frees", "bytes")
        return {f"{p}_{k}": r[f"{p}_{k}"] for p in GLOBAL_POOLS for k in keys}

    def used_tags(self) -> list[int]:
        """Every tag the pool uses (normalized): tracker rows, blocks, big entries."""
        tags = set(self.rows)
        tags |= {b.tag & ~PROTECTED for p in self.pages for b in p.blocks if b.tag}
        tags |= {b.tag for b in self.big + self.freed}
        return sorted(tags)
