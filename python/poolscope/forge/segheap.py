"""Small pool on the kernel segment heap (build 18362 and later): VS and LFH subsegments.

Layouts come from the profile's ``pool.segment_heap`` section (the Rust reader's copy);
facts from shared/specs/pool-structures.md section 2, MemProcFS ``vmmwinpool.c`` and the
vergilius type dumps:

* a VS subsegment (``_HEAP_VS_SUBSEGMENT``) begins with ListEntry, CommitBitmap,
  CommitLock, then ``Size`` (16-byte units) and ``Signature = Size ^ 0x2BED`` (15 bits);
  its chunks start at +0x30. Each chunk begins with a 16-byte ``_HEAP_VS_CHUNK_HEADER``
  whose first 8 bytes are encoded (XOR the header's VA and HeapKey): UnsafeSize,
  UnsafePrevSize (16-byte units) and Allocated. An allocated chunk holds a plain
  POOL_HEADER at +0x10; a free chunk holds the free-tree node at +0x8 instead
  (``_HEAP_VS_CHUNK_FREE_HEADER``), so it has no pool header;
* an LFH subsegment (``_HEAP_LFH_SUBSEGMENT``) holds equal-size blocks, each beginning
  with a POOL_HEADER, from ``FirstBlockOffset``; ``BlockOffsets`` (BlockSize |
  FirstBlockOffset << 16) is XORed with LfhKey and the subsegment's VA >> 12; the block
  bitmap has 2 bits a block, 01 = allocated; a freed block keeps its stale header;
* ExPoolState's first pointer leads to the heap globals: HeapKey +0, LfhKey +8.

Not from a source (synthetic choices, stated in the dump's notes): LFH serves blocks of up
to 0x200 bytes, one page per LFH subsegment; VS subsegments are 4 pages; chunks never
cross a page (the page's tail is a free chunk, or slack in the last allocated chunk);
PreviousSize and PoolIndex of segment-heap pool headers are 0; the LFH FirstBlockOffset is
the bitmap's end rounded up to 16.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import paging as pg
from .layout import PAGE_SIZE, parse_int
from .pool import (
    NONPAGED_HINT,
    PAGED_HINT,
    POOLS,
    SESSION_HINT,
    Block,
    PoolBuilder,
    PoolLayout,
    PoolPage,
    _Item,
    tag_str,
)

if TYPE_CHECKING:
    from .kernel import KernelBuilder
    from .scenario import PoolSpec

LFH_MAX_BYTES = 0x200
VS_PAGES = 4
M64 = (1 << 64) - 1
_Q = struct.Struct("<Q")


@dataclass(frozen=True)
class SegLayout:
    """The profile's ``pool.segment_heap`` section."""

    heap_key: int
    lfh_key: int
    vs_size: int
    vs_signature: int
    vs_xor: int
    vs_first: int
    vs_unit: int
    chunk: int
    size_shift: int
    prev_shift: int
    alloc_shift: int
    lfh_free_count: int
    lfh_block_count: int
    lfh_location: int | None
    lfh_offsets: int
    lfh_bitmap: int
    va_shift_full: bool

    @classmethod
    def from_profile(cls, profile: dict[str, Any]) -> SegLayout:
        s = profile["pool"]["segment_heap"]
        k, vs, ch, lf = s["keys"], s["vs_subsegment"], s["vs_chunk_header"], s["lfh_subsegment"]
        return cls(
            heap_key=parse_int(k["HeapKey"]),
            lfh_key=parse_int(k["LfhKey"]),
            vs_size=parse_int(vs["Size"]),
            vs_signature=parse_int(vs["Signature"]),
            vs_xor=parse_int(vs["signature_xor"]),
            vs_first=parse_int(vs["first_chunk"]),
            vs_unit=parse_int(vs["size_unit"]),
            chunk=parse_int(ch["size"]),
            size_shift=ch["UnsafeSize"]["shift"],
            prev_shift=ch["UnsafePrevSize"]["shift"],
            alloc_shift=ch["Allocated"]["shift"],
            lfh_free_count=parse_int(lf["FreeCount"]),
            lfh_block_count=parse_int(lf["BlockCount"]),
            lfh_location=parse_int(lf["Location"]) if "Location" in lf else None,
            lfh_offsets=parse_int(lf["BlockOffsets"]),
            lfh_bitmap=parse_int(lf["BlockBitmap"]),
            va_shift_full=lf["va_shift"] == "full",
        )

    def lfh_va_bits(self, va: int) -> int:
        """The VA term of BlockOffsets: (u32)(va >> 12) from 26100, else (u32)va >> 12."""
        return ((va >> 12) if self.va_shift_full else (va & 0xFFFFFFFF) >> 12) & 0xFFFFFFFF


def lfh_geometry(size: int, bitmap: int, unit: int = 16) -> tuple[int, int]:
    """(FirstBlockOffset, BlockCount) of a one-page LFH subsegment of ``size``-byte blocks:
    the header up to the bitmap (at ``bitmap``), the 2-bit-per-block bitmap in 8-byte words,
    rounded up to 16."""
    count = (PAGE_SIZE - bitmap) // size
    while True:
        first = -(-(bitmap + -(-count // 32) * 8) // unit) * unit
        if first + count * size <= PAGE_SIZE:
            return first, count
        count -= 1


@dataclass
class _Lfh:
    pool: str
    units: int
    pfn: int
    va: int
    first: int
    count: int
    slots: list[tuple[bool, int, bool] | None] = field(default_factory=list)
    """Per block: (allocated, tag, internal), or None for a never-used block."""


@dataclass
class _Chunk:
    off: int
    units: int
    """Chunk size in 16-byte units (VS header included)."""
    allocated: bool
    tag: int = 0
    block_units: int = 0
    internal: bool = False
    cross: int = 0
    """Bytes from the chunk header to the next page, where the pool header of a block that
    would straddle the page starts (0: the header follows the chunk header)."""


@dataclass
class _Vs:
    pool: str
    va: int
    pfns: list[int]
    chunks: list[_Chunk] = field(default_factory=list)
    off: int = 0


class SegmentHeapPoolBuilder(PoolBuilder):
    """PoolBuilder whose small blocks live in VS and LFH subsegments."""

    def __init__(self, kb: KernelBuilder, spec: PoolSpec, layout: PoolLayout) -> None:
        self.seg = SegLayout.from_profile(kb.profile)
        self.lfh: dict[tuple[str, int], _Lfh] = {}
        self.vs: dict[str, _Vs] = {}
        self.subsegments = {"vs": 0, "lfh": 0}
        super().__init__(kb, spec, layout)
        self.heap_key = self.rng.getrandbits(64)
        self.lfh_key = self.rng.getrandbits(64)
        # One _SEGMENT_HEAP-like object per pool: the Owner/list pointers point into it.
        self.heaps = {p: kb.nt_var(0x100, 16) for p in POOLS}

    # --------------------------------------------------------------- placing
    def _pages(self, pool: str, n: int) -> tuple[int, list[int]]:
        """``n`` VA-contiguous pages: nonpaged pools in the linear pool mapping (one
        physical run), paged pools page by page (scattered frames)."""
        if pool in ("nonpaged", "session_nonpaged"):
            base = self.kb.mem.alloc_run(n, NONPAGED_HINT)
            pfns = list(range(base, base + n))
            va = self.kb.pool_va(base * PAGE_SIZE)
        else:
            va = self._next_va(pool, n)
            hint = PAGED_HINT if pool == "paged" else SESSION_HINT
            pfns = [self.kb.mem.alloc(hint) for _ in range(n)]
            for i, pfn in enumerate(pfns):
                self.kb.pt.map_4k(va + i * PAGE_SIZE, pfn, pg.KERNEL_RW | pg.NX)
        for pfn in pfns:
            self.kb.mem.page(pfn)
        return va, pfns

    def _place(self, pool: str, item: _Item, internal: bool = False) -> Block | None:
        if item.units * self.lay.unit <= LFH_MAX_BYTES:
            return self._place_lfh(pool, item, internal)
        return self._place_vs(pool, item, internal)

    def _place_lfh(self, pool: str, item: _Item, internal: bool) -> Block | None:
        key = (pool, item.units)
        sub = self.lfh.get(key)
        if sub is None or len(sub.slots) >= sub.count:
            if sub is not None:
                self._close_lfh(sub)
            va, (pfn,) = self._pages(pool, 1)
            first, count = lfh_geometry(
                item.units * self.lay.unit, self.seg.lfh_bitmap, self.lay.unit
            )
            sub = self.lfh[key] = _Lfh(pool, item.units, pfn, va, first, count)
        i = len(sub.slots)
        if not item.allocated and item.tag == 0:
            sub.slots.append(None)  # never used: zeros
            return None
        sub.slots.append((item.allocated, item.tag, internal))
        off = sub.first + i * item.units * self.lay.unit
        return Block(sub.pfn * PAGE_SIZE + off, sub.va + off, item.tag, item.units, 0, pool,
                     item.allocated, internal)  # fmt: skip

    def _place_vs(self, pool: str, item: _Item, internal: bool) -> Block | None:
        need = (item.units * self.lay.unit + self.seg.chunk) // 16
        body = item.units * self.lay.unit
        sub = self.vs.get(pool)
        cross = 0
        while True:
            if sub is None:
                va, pfns = self._pages(pool, VS_PAGES)
                sub = self.vs[pool] = _Vs(pool, va, pfns, off=self.seg.vs_first)
            page_end = (sub.off // PAGE_SIZE + 1) * PAGE_SIZE
            if sub.off + need * 16 <= page_end:
                break
            rest = page_end - sub.off
            # A block may not straddle a page: the chunk spans the boundary and the pool
            # header starts the next page (MemProcFS adjusts blocks crossing by over 0x40).
            straddle = item.allocated and body > 0x40 and rest >= 0x20
            if straddle and page_end + body <= VS_PAGES * PAGE_SIZE and self.rng.random() < 0.3:
                cross = rest
                need = (rest + body) // 16
                break
            self._pad(sub, page_end)
            if page_end >= VS_PAGES * PAGE_SIZE:
                self._close_vs(sub)
                sub = None
        c = _Chunk(sub.off, need, item.allocated, item.tag, item.units, internal, cross)
        sub.chunks.append(c)
        sub.off += need * 16
        if not item.allocated:
            return None
        off = c.off + (cross or self.seg.chunk)
        pfn = sub.pfns[off // PAGE_SIZE]
        return Block(pfn * PAGE_SIZE + off % PAGE_SIZE, sub.va + off, item.tag, item.units, 0,
                     pool, True, internal)  # fmt: skip

    def _pad(self, sub: _Vs, page_end: int) -> None:
        """Fill the page's tail: a free chunk, or slack in the last chunk if too short."""
        rest = page_end - sub.off
        if rest >= 0x30 or (rest and not sub.chunks):
            sub.chunks.append(_Chunk(sub.off, rest // 16, False))
        elif rest:
            sub.chunks[-1].units += rest // 16
        sub.off = page_end

    def _close(self, pool: str) -> None:
        for key in [k for k in self.lfh if k[0] == pool]:
            self._close_lfh(self.lfh.pop(key))
        sub = self.vs.pop(pool, None)
        if sub is not None:
            self._close_vs(sub)

    # --------------------------------------------------------------- writing
    def _hdr(self, units: int, pool: str, allocated: bool, tag: int) -> bytes:
        return self.lay.make_header(0, 0, units, self.lay.stored_type(pool) if allocated else 0,
                                    tag)  # fmt: skip

    def _body(self, buf: bytearray, at: int, n: int, seed: int) -> None:
        start = (seed * 0x1F0) % 0x1000
        buf[at : at + n] = self.template[start : start + n]

    def _close_lfh(self, sub: _Lfh, record: bool = True) -> None:
        s, lay = self.seg, self.lay
        size = sub.units * lay.unit
        buf = self.kb.mem.page(sub.pfn)
        heap = self.heaps[sub.pool]
        struct.pack_into("<QQQ", buf, 0, heap + 0x40, heap + 0x40, heap + 0x80)
        bitmap = 0
        page = PoolPage(sub.pool, sub.pfn, sub.va)
        allocated = 0
        for i, slot in enumerate(sub.slots):
            if slot is None:
                continue
            alloc, tag, internal = slot
            off = sub.first + i * size
            # a freed block keeps the header it had when allocated
            buf[off : off + lay.header_size] = self._hdr(sub.units, sub.pool, True, tag)
            if not internal:
                self._body(buf, off + lay.header_size, size - lay.header_size, sub.pfn + i)
            if alloc:
                bitmap |= 1 << (2 * i)
                allocated += 1
            page.blocks.append(Block(sub.pfn * PAGE_SIZE + off, sub.va + off, tag, sub.units, 0,
                                     sub.pool, alloc, internal))  # fmt: skip
        struct.pack_into("<H", buf, s.lfh_free_count, sub.count - allocated)
        struct.pack_into("<H", buf, s.lfh_block_count, sub.count)
        if s.lfh_location is not None:
            buf[s.lfh_location] = 1
        plain = size | sub.first << 16
        enc = plain ^ (self.lfh_key & 0xFFFFFFFF) ^ s.lfh_va_bits(sub.va)
        struct.pack_into("<I", buf, s.lfh_offsets, enc)
        nbytes = -(-sub.count // 32) * 8
        buf[s.lfh_bitmap : s.lfh_bitmap + nbytes] = bitmap.to_bytes(nbytes, "little")
        if record:
            self.pages.append(page)
            self.subsegments["lfh"] += 1

    def _close_vs(self, sub: _Vs, corrupt_at: int | None = None, record: bool = True) -> None:
        """Write the subsegment; ``corrupt_at`` breaks that chunk's size (a corrupt
        subsegment, not recorded as pool)."""
        s, lay = self.seg, self.lay
        end = VS_PAGES * PAGE_SIZE
        while sub.off < end:
            self._pad(sub, (sub.off // PAGE_SIZE + 1) * PAGE_SIZE)
        bufs = [self.kb.mem.page(p) for p in sub.pfns]
        heap = self.heaps[sub.pool]
        size = end // s.vs_unit
        struct.pack_into("<QQQQ", bufs[0], 0, heap + 0x60, heap + 0x60, (1 << VS_PAGES) - 1, 0)
        sig = (size ^ s.vs_xor) & 0x7FFF | 0x8000  # FullCommit
        struct.pack_into("<H", bufs[0], s.vs_size, size)
        struct.pack_into("<H", bufs[0], s.vs_signature, sig)
        pages = [PoolPage(sub.pool, pfn, sub.va + i * PAGE_SIZE) for i, pfn in enumerate(sub.pfns)]
        prev = 0
        for n, c in enumerate(sub.chunks):
            buf, at = bufs[c.off // PAGE_SIZE], c.off % PAGE_SIZE
            va = sub.va + c.off
            units = c.units if corrupt_at != n else c.units + 3
            plain = units << s.size_shift | prev << s.prev_shift | int(c.allocated) << s.alloc_shift
            _Q.pack_into(buf, at, plain ^ va ^ self.heap_key)
            prev = c.units
            if c.allocated:
                head = c.cross or s.chunk
                slack = c.units * 16 - head - c.block_units * lay.unit
                seg_page = (c.off // PAGE_SIZE) & 0xFF
                struct.pack_into("<II", buf, at + 8, seg_page | (0x100 if slack else 0), 0)
                if c.cross:  # the chunk's tail in this page: stale bytes
                    self._body(buf, at + s.chunk, c.cross - s.chunk, sub.pfns[0] + n)
                hoff = c.off + head
                hpage, h = hoff // PAGE_SIZE, hoff % PAGE_SIZE
                hbuf = bufs[hpage]
                hbuf[h : h + lay.header_size] = self._hdr(c.block_units, sub.pool, True, c.tag)
                if not c.internal:
                    n_body = c.units * 16 - head - lay.header_size
                    self._body(hbuf, h + lay.header_size, n_body, sub.pfns[0] + n)
                pages[hpage].blocks.append(
                    Block(sub.pfns[hpage] * PAGE_SIZE + h, sub.va + hoff, c.tag,
                          c.block_units, 0, sub.pool, True, c.internal)
                )  # fmt: skip
            else:
                # the free-tree node (Left, Right, ParentValue) overlays the pool header
                struct.pack_into("<QQQ", buf, at + 8, 0, 0, heap + 0xA0)
                self._body(buf, at + 0x20, c.units * 16 - 0x20, sub.pfns[0] + n)
        if record:
            self.pages += pages
            self.subsegments["vs"] += 1

    # --------------------------------------------------------------- corrupt
    def _corrupt_pages(self) -> None:
        """Corrupt subsegments the reader must reject whole: a VS chunk whose size breaks
        the chain (broken_chain), an LFH subsegment with an allocated block whose header is
        garbage (garbage_header), a VS subsegment whose pages after the first are random
        bytes (half_page)."""
        c = self.spec.corrupt_pages
        tags = sorted({b.tag for p in self.pages for b in p.blocks if b.allocated} or {0x6B61654C})
        kinds = ["broken_chain"] * c.broken_chain + ["garbage_header"] * c.garbage_header
        kinds += ["half_page"] * c.half_page
        for kind in kinds:
            pool = "nonpaged"
            if kind in ("broken_chain", "half_page"):
                va, pfns = self._pages(pool, VS_PAGES)
                sub = _Vs(pool, va, pfns, off=self.seg.vs_first)
                for _ in range(12):
                    units = self.rng.randrange(0x22, 0x60)
                    need = units + 1
                    if sub.off + need * 16 > PAGE_SIZE:
                        break
                    sub.chunks.append(_Chunk(sub.off, need, True, self.rng.choice(tags), units))
                    sub.off += need * 16
                at = self.rng.randrange(1, len(sub.chunks)) if kind == "broken_chain" else None
                self._close_vs(sub, corrupt_at=at, record=False)
                if kind == "half_page":  # the chunks past the first page are garbage
                    for pfn in pfns[1:]:
                        self.kb.mem.write(pfn * PAGE_SIZE, self.rng.randbytes(PAGE_SIZE))
                first_tag, first_size = sub.chunks[0].tag, sub.chunks[0].block_units * 16
                pfn0 = pfns[0]
            else:
                va, (pfn,) = self._pages(pool, 1)
                units = self.rng.randrange(3, 12)
                first, count = lfh_geometry(units * self.lay.unit, self.seg.lfh_bitmap,
                                            self.lay.unit)  # fmt: skip
                sub = _Lfh(pool, units, pfn, va, first, count)
                sub.slots = [(True, self.rng.choice(tags), False) for _ in range(count // 2)]
                self._close_lfh(sub, record=False)
                # block 1: a header no pool block has
                at = first + units * 16
                self.kb.mem.page(pfn)[at : at + 8] = self.rng.randbytes(4) + b"\1\2\3\4"
                first_tag, first_size = sub.slots[0][1], units * 16  # type: ignore[index]
                pfn0 = pfn
            self.corrupt.append(
                {"pfn": pfn0, "pa": pfn0 * PAGE_SIZE, "va": va, "kind": kind,
                 "first_tag": tag_str(first_tag), "first_size": first_size}
            )  # fmt: skip

    # ----------------------------------------------------------------- truth
    def _write_globals(self) -> dict[str, int]:
        """The pool globals, and ExPoolState (its first pointer leads to the heap
        globals: HeapKey, LfhKey)."""
        out = super()._write_globals()
        kb, s = self.kb, self.seg
        globals_va = kb.nt_var(0x10, 16, name="RtlpHpHeapGlobals")
        kb.vwrite(globals_va + s.heap_key, _Q.pack(self.heap_key))
        kb.vwrite(globals_va + s.lfh_key, _Q.pack(self.lfh_key))
        state = kb.nt_var(0x40, 16, name="ExPoolState")
        kb.vwrite(state, _Q.pack(globals_va))
        return {**out, "ExPoolState": state, "RtlpHpHeapGlobals": globals_va}

    def truth(self) -> dict[str, Any]:
        out = super().truth()
        out["segment_heap"] = {
            "heap_key": self.heap_key,
            "lfh_key": self.lfh_key,
            "vs_subsegments": self.subsegments["vs"],
            "lfh_subsegments": self.subsegments["lfh"],
        }
        return out
