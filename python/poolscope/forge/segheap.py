"""Small pool on the kernel segment heap (build 18362 and later), written the way the kernel
writes it.

The source is the kernel's own code: GitHub ``nohuto/decompiled-pseudocode``, folder
``ntoskrnl/`` (Hex-Rays pseudocode of the Windows 11 23H2 kernel, build 22631). Each function
below named after a kernel routine imitates that routine (cited by file) and nothing else, so
that each can be held against its source; the reader (``rust/core/src/pool/segheap.rs``) is
never the reference. Other builds use the same code by analogy (the profiles' ``unsure``).

What the heap does for a pool allocation of N bytes (``ExAllocateHeapPool.c``): the request
is ``v20 = round16(N + 0x10)``; LFH serves it when ``v20 <= MaxBlockSize - 0x10`` (0x1F0) and
its bucket is active, else the VS allocator; the POOL_HEADER goes at the start of the heap
block with PreviousSize 0, BlockSize ``v20 >> 4``, PoolType ``type & 0x6D | 2`` and the tag;
PoolIndex is not written.

Synthetic choices (no code says them; stated in the dump's notes): an LFH bucket activates at
its ``LFH_ACTIVATION``-th allocation; LFH buckets are 16 bytes apart (``RtlpBucketBlockSizes``
is data the decompile lacks); no page is decommitted after a free (the kernel's thresholds
depend on heap-wide counters); the free tree's node links are zero; the dynamic lookaside
and LFH delayed frees are not modelled.
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
    from .machine import Machine
    from .scenario import PoolSpec

M64 = (1 << 64) - 1
_Q = struct.Struct("<Q")
VS_SIGNATURE_XOR = 0x2BED
VS_MIN_SUBSEGMENT, VS_MAX_SUBSEGMENT = 0x10000, 0x40000
LFH_MAX_BLOCK = 0x200  # LfhConfig.MaxBlockSize (ExInitializePoolHeapManagement: 0x500010200)
SEGMENT_BYTES = 0x100000  # SegContexts[0] (RtlpHpHeapCreate: RtlpHpSegContextInitialize)
SEGMENT_HEADER_PAGES = 2  # FirstDescriptorIndex of a 1 MiB segment
SEGMENT_SIGNATURE = 0xA2E64EADA2E64EAD
RANGE_VS, RANGE_LFH = 0xC, 0x8  # RangeFlags type bits (RtlpHpSegPageRangeAllocate)
DELAY_FREE_DEPTH = 0x20  # RtlpHpVsContextFree: the delayed-free SList holds < 0x20
LFH_ACTIVATION = 0x10  # synthetic: allocations of a bucket before LFH serves it


@dataclass(frozen=True)
class SegLayout:
    """The profile's ``pool.segment_heap`` section."""

    heap_key: int
    lfh_key: int
    vs_size: int
    vs_signature: int
    vs_first: int
    chunk: int
    lfh_free_count: int
    lfh_block_count: int
    lfh_location: int | None
    lfh_witheld: int
    lfh_unit_shift: int
    lfh_unit_count: int
    lfh_commit_state: int | None
    lfh_offsets: int
    lfh_bitmap: int
    va_shift_full: bool

    @classmethod
    def from_profile(cls, profile: dict[str, Any]) -> SegLayout:
        s = profile["pool"]["segment_heap"]
        k, vs, ch, lf = s["keys"], s["vs_subsegment"], s["vs_chunk_header"], s["lfh_subsegment"]

        def opt(name: str) -> int | None:
            return parse_int(lf[name]) if name in lf else None

        return cls(
            heap_key=parse_int(k["HeapKey"]),
            lfh_key=parse_int(k["LfhKey"]),
            vs_size=parse_int(vs["Size"]),
            vs_signature=parse_int(vs["Signature"]),
            vs_first=parse_int(vs["first_chunk"]),
            chunk=parse_int(ch["size"]),
            lfh_free_count=parse_int(lf["FreeCount"]),
            lfh_block_count=parse_int(lf["BlockCount"]),
            lfh_location=opt("Location"),
            lfh_witheld=parse_int(lf["WitheldBlockCount"]),
            lfh_unit_shift=parse_int(lf["CommitUnitShift"]),
            lfh_unit_count=parse_int(lf["CommitUnitCount"]),
            lfh_commit_state=opt("CommitStateOffset"),
            lfh_offsets=parse_int(lf["BlockOffsets"]),
            lfh_bitmap=parse_int(lf["BlockBitmap"]),
            va_shift_full=lf["va_shift"] == "full",
        )

    def lfh_va_bits(self, va: int) -> int:
        """The VA term of BlockOffsets: ``(u32)va >> 12`` (RtlpHpLfhSubsegmentInitialize.c:
        ``v22 ^ LfhKey ^ ((unsigned int)a1 >> 12)``); 26100 uses ``(u32)(va >> 12)``."""
        return ((va >> 12) if self.va_shift_full else (va & 0xFFFFFFFF) >> 12) & 0xFFFFFFFF


def _bits(first: int, last: int) -> int:
    """A mask of bits ``first..last`` (inclusive)."""
    return ((1 << (last - first + 1)) - 1) << first if last >= first else 0


# ------------------------------------------------------------------ LFH geometry
def rtlp_calculate_subsegment_size_index(n: int) -> int:
    """RtlpCalculateSubsegmentSizeIndex.c: ceil(log2(n)) clamped to 7..18 (n to 0xF0000)."""
    n = min(n, 0xF0000)
    return min(max((n - 1).bit_length(), 7), 18)


def rtlp_hp_lfh_bucket_compute_new_subsegment_block_count(
    block: int, total_blocks: int, subsegments: int
) -> int:
    """RtlpHpLfhBucketComputeNewSubsegmentBlockCount.c, one slot, stats not hot: at least
    16 blocks (8 from 0x100 bytes) for a bucket's first subsegment, 32 (16) after, else an
    eighth of the bucket's blocks so far; 4..1024."""
    v8 = 0 if block >= 0x100 else -1
    v9 = v8 if subsegments == 0 else v8 - 1
    n = max(total_blocks >> 3, 1 << (3 - v9))
    return min(max(n, 4), 1024)


def lfh_subsegment_size(block: int, count: int) -> int:
    """RtlpHpLfhSubsegmentCreate.c: the header and bitmap (16-aligned), one commit word a
    page and the blocks, to the next power of two (at least a page)."""
    v9 = (8 * ((2 * count + 63) >> 6) + 63) & 0xFFFFFFF0
    need = v9 + 2 * ((block * count + v9 + 4095) >> 12) + block * count
    return 1 << max(rtlp_calculate_subsegment_size_index(need), 12)


def lfh_commit_unit(block: int, size: int) -> int:
    """RtlpHpLfhSubsegmentCreate.c (bucket not hot): the next power of two of twice the block
    size, at least a page, at most the subsegment."""
    u = 1 << (2 * block - 1).bit_length()
    return min(max(u, PAGE_SIZE), size)


@dataclass(frozen=True)
class LfhGeometry:
    """What RtlpHpLfhSubsegmentInitialize.c computes for a subsegment of ``size`` bytes,
    commit unit ``unit``, ``block``-byte blocks, with the bitmap at ``bitmap`` (0x30)."""

    size: int
    unit: int
    block: int
    first: int
    """FirstBlockOffset."""
    slots: int
    """Blocks the bitmap covers (BlockCount + WitheldBlockCount)."""
    witheld: tuple[int, ...]
    """Slots that straddle a page (WitholdPageCrossingBlocks): marked busy, never used."""
    commit_state: int
    """CommitStateOffset: one WORD a commit unit."""

    @classmethod
    def compute(cls, size: int, unit: int, block: int, bitmap: int = 0x30) -> LfhGeometry:
        units = size // unit
        v9 = (8 * (size - 2 * units) - 8 * bitmap) // (8 * block + 2)
        first = (2 * units + 8 * ((2 * v9 + 63) >> 6) + bitmap + 15) & 0xFFF0
        slots = min(v9, (size - first) // block)
        witheld: list[int] = []
        if size > PAGE_SIZE:  # WitholdPageCrossingBlocks is set for pool
            if block & (block - 1):
                witheld = [
                    (b - first) // block
                    for b in range(PAGE_SIZE, size, PAGE_SIZE)
                    if (b - first) % block
                ]
            else:
                first = (first + block - 1) & ~(block - 1)
        state = bitmap + 8 * ((2 * slots + 63) >> 6)
        return cls(size, unit, block, first, slots, tuple(witheld), state)


# ------------------------------------------------------------------ memory
class _Range:
    """Pages of a segment range, VA-contiguous; only committed pages are mapped (and so in
    the dump)."""

    def __init__(self, b: SegmentHeapPoolBuilder, pool: str, va: int, pages: int) -> None:
        self.b, self.pool, self.va, self.pages = b, pool, va, pages
        self.pfns: dict[int, int] = {}

    def commit(self, first: int, last: int) -> None:
        kb = self.b.kb
        hint = {"paged": PAGED_HINT, "session_paged": SESSION_HINT}.get(self.pool, NONPAGED_HINT)
        for i in range(first, last + 1):
            if i not in self.pfns:
                pfn = self.pfns[i] = kb.mem.alloc(hint)
                kb.pt.map_4k(self.va + i * PAGE_SIZE, pfn, pg.KERNEL_RW | pg.NX)
                kb.mem.page(pfn)

    def decommit_all(self) -> None:
        for i in list(self.pfns):
            self.b.kb.pt.set_pte(self.va + i * PAGE_SIZE, 0)
        self.pfns.clear()

    def write(self, off: int, data: bytes) -> None:
        pos = 0
        while pos < len(data):
            i, at = divmod(off + pos, PAGE_SIZE)
            n = min(PAGE_SIZE - at, len(data) - pos)
            if i in self.pfns:
                self.b.kb.mem.page(self.pfns[i])[at : at + n] = data[pos : pos + n]
            pos += n

    def read(self, off: int, n: int) -> bytes:
        i, at = divmod(off, PAGE_SIZE)
        return bytes(self.b.kb.mem.page(self.pfns[i])[at : at + n])

    def pa(self, off: int) -> int:
        return self.pfns[off // PAGE_SIZE] * PAGE_SIZE + off % PAGE_SIZE


class _Segments:
    """One heap's SegContexts[0]: 1 MiB segments aligned to their size, the first two pages
    the segment header and its 256 page-range descriptors (RtlpHpSegSegmentInitialize,
    RtlpHpSegHeapAddSegment)."""

    def __init__(self, b: SegmentHeapPoolBuilder, pool: str, heap: int) -> None:
        self.b, self.pool, self.heap = b, pool, heap
        self.seg: _Range | None = None
        self.next = 0

    def rtlp_hp_seg_sub_allocate(self, size: int, kind: int) -> _Range:
        """RtlpHpSegSubAllocate.c / RtlpHpSegAlloc.c: a page range; from 64 KiB a trailing
        page that is never committed (``v6 = a3 | 4``). The range's descriptors say its type
        (RtlpHpSegPageRangeAllocate.c: ``RangeFlags |= 4 * type | 1``)."""
        pages = size // PAGE_SIZE + (1 if size >= 0x10000 else 0)
        if self.seg is None or self.next + pages > SEGMENT_BYTES // PAGE_SIZE:
            self.seg = self._new_segment()
            self.next = SEGMENT_HEADER_PAGES
        first = self.next
        self.next += pages
        for i in range(pages):  # _HEAP_PAGE_RANGE_DESCRIPTOR, 32 bytes a page
            d = bytearray(32)
            if i == 0:
                d[0:4] = (0xCCDDCCDD).to_bytes(4, "little")  # TreeSignature
                d[0x1F] = pages
            else:
                d[0x1F] = i  # the offset back to the range's first unit
            d[0x18] = kind | 1 | (2 if i == 0 else 0)
            self.seg.write(32 * (first + i), bytes(d))
        return _Range(self.b, self.pool, self.seg.va + first * PAGE_SIZE, size // PAGE_SIZE)

    def _new_segment(self) -> _Range:
        b = self.b
        va = b.segment_va(self.pool)
        seg = _Range(b, self.pool, va, SEGMENT_BYTES // PAGE_SIZE)
        seg.commit(0, SEGMENT_HEADER_PAGES - 1)
        ctx = self.heap + 0x140  # SegContexts[0] (RtlpHpHeapCreate: v11 + 320)
        seg.write(0, _Q.pack(ctx + 0x40) * 2)  # ListEntry: the context's segment list
        seg.write(0x10, _Q.pack(va ^ b.heap_key ^ ctx ^ SEGMENT_SIGNATURE))
        return seg


# ------------------------------------------------------------------ VS
@dataclass
class _Chunk:
    off: int
    units: int
    prev: int
    allocated: bool
    cost: int = 0
    block: Block | None = None
    delayed: bool = False
    user: int = 0
    """Offset of the user block (the POOL_HEADER) of an allocated chunk."""


@dataclass
class _VsSubsegment:
    rng: _Range
    size: int
    units: int
    commit: int
    chunks: dict[int, _Chunk] = field(default_factory=dict)


class _VsContext:
    """One heap's _HEAP_VS_CONTEXT (Config.PageAlignLargeAllocs = 1: ExInitializePoolHeap
    Management's 0x500010200, VS flags 5)."""

    def __init__(self, b: SegmentHeapPoolBuilder, pool: str, heap: int) -> None:
        self.b, self.pool, self.heap = b, pool, heap
        self.va = heap + 0x2C0  # VsContext (RtlpHpHeapCreate: v11 + 704)
        self.segs = _Segments(b, pool, heap)
        self.subsegments: list[_VsSubsegment] = []
        self.free: dict[tuple[int, int], tuple[_VsSubsegment, _Chunk]] = {}
        self.delayed: list[tuple[_VsSubsegment, _Chunk]] = []

    # chunk headers ---------------------------------------------------------
    def _write_header(self, s: _VsSubsegment, c: _Chunk) -> None:
        """HeaderBits: MemoryCost, UnsafeSize, UnsafePrevSize, Allocated, XORed with HeapKey
        and the chunk's VA (RtlpHpVsChunkSplit.c)."""
        plain = c.cost | c.units << 16 | c.prev << 32 | int(c.allocated) << 48
        s.rng.write(c.off, _Q.pack(plain ^ self.b.heap_key ^ (s.rng.va + c.off)))

    def _cost(self, s: _VsSubsegment, c: _Chunk) -> int:
        """MemoryCost of a free chunk (RtlpHpVsFreeChunkInsert.c): pages it spans beyond the
        fewest it could, plus the uncommitted whole pages past its first 0x20 bytes."""
        n = 16 * c.units
        spans = ((c.off & 0xFFF) + n + 4095) >> 12
        least = (n + 4095) >> 12
        lo, hi = (c.off + 0x101F) & ~0xFFF, (c.off + n) & ~0xFFF
        whole = (hi - lo) >> 12 if lo < hi else 0
        committed = bin(s.commit & _bits(lo >> 12, (hi - 1) >> 12)).count("1") if whole else 0
        return spans - least + whole - committed

    def _set_prev_of_next(self, s: _VsSubsegment, c: _Chunk) -> None:
        nxt = s.chunks.get(c.off + 16 * c.units)
        if nxt is not None:
            nxt.prev = c.units
            self._write_header(s, nxt)

    def rtlp_hp_vs_free_chunk_insert(self, s: _VsSubsegment, c: _Chunk) -> None:
        """RtlpHpVsFreeChunkInsert.c: MemoryCost, then the free-tree node at +8 (Left,
        Right, ParentValue; zero here: the tree's shape is not modelled)."""
        c.allocated, c.block, c.delayed = False, None, False
        c.cost = self._cost(s, c)
        self._write_header(s, c)
        s.rng.write(c.off + 8, bytes(24))
        self.free[(id(s), c.off)] = (s, c)

    def _take(self, s: _VsSubsegment, c: _Chunk) -> None:
        self.free.pop((id(s), c.off), None)

    def _absorb_free_next(self, s: _VsSubsegment, c: _Chunk) -> None:
        """Merge the free chunk after ``c`` into it, then (PageAlignLargeAllocs) the one after
        that (RtlpHpVsChunkSplit's remainder loop, RtlpHpVsChunkCoalesce)."""
        for _ in range(2):
            nxt = s.chunks.get(c.off + 16 * c.units)
            if nxt is None or nxt.allocated:
                break
            self._take(s, nxt)
            del s.chunks[nxt.off]
            c.units += nxt.units

    def rtlp_hp_vs_chunk_align_split(self, s: _VsSubsegment, c: _Chunk) -> _Chunk | None:
        """RtlpHpVsChunkAlignSplit.c: a free chunk that crosses a page is split at the page
        boundary after its first 0x10 bytes, minus 0x20."""
        va = s.rng.va + c.off
        boundary = ((va + 0x100F) & ~0xFFF) - va
        first = (boundary - 0x20) // 16
        if boundary >= 16 * c.units or first <= 0:
            return None
        at = c.off + 16 * first
        second = _Chunk(at, c.units - first, first, False)
        c.units = first
        s.chunks[at] = second
        self._set_prev_of_next(s, second)
        return second

    # subsegments -------------------------------------------------------------
    def rtlp_hp_vs_subsegment_create(self, request: int, full: bool = False) -> _VsSubsegment:
        """RtlpHpVsSubsegmentCreate.c: the next power of two of ``2 * request + 72``, 64 to
        256 KiB; only the first page committed unless the callback committed the whole (bit 15
        of the Signature says so; the pool heaps' do not); Size = (bytes - 0x30) >> 4;
        Signature = Size ^ 0x2BED (15 bits);
        CommitBitmap one bit a committed page; one free chunk of Size units at +0x30."""
        lay = self.b.seg
        want = 1 << (2 * request + 72 - 1).bit_length()
        size = min(max(want, VS_MIN_SUBSEGMENT), VS_MAX_SUBSEGMENT)
        rng = self.segs.rtlp_hp_seg_sub_allocate(size, RANGE_VS)
        pages = size // PAGE_SIZE if full else 1  # ``full``: the callback committed it all
        rng.commit(0, pages - 1)
        units = (size - 0x30) >> 4
        s = _VsSubsegment(rng, size, units, commit=_bits(0, pages - 1))
        head = bytearray(0x30)
        struct.pack_into("<Q", head, 0x10, s.commit)
        struct.pack_into("<H", head, lay.vs_size, units)
        sig = (units ^ VS_SIGNATURE_XOR) & 0x7FFF | (0x8000 if full else 0)
        struct.pack_into("<H", head, lay.vs_signature, sig)
        rng.write(0, bytes(head))
        c = _Chunk(lay.vs_first, units, 0, False)
        s.chunks[c.off] = c
        rng.write(c.off, bytes(16))
        self._write_header(s, c)
        return s

    def rtlp_hp_vs_context_add_subsegment(self, s: _VsSubsegment) -> None:
        """RtlpHpVsContextAddSubsegment.c: link it at the list's tail (ListEntry encoded: each
        link XOR the subsegment's own VA), align-split the first chunk, insert both."""
        head = self.va + 0x20  # SubsegmentList
        last = self.subsegments[-1].rng.va if self.subsegments else head
        va = s.rng.va
        s.rng.write(0, _Q.pack(va ^ head) + _Q.pack(va ^ last))
        if self.subsegments:  # the previous tail's Flink now leads here
            prev = self.subsegments[-1]
            prev.rng.write(0, _Q.pack(prev.rng.va ^ va))
        self.subsegments.append(s)
        first = s.chunks[self.b.seg.vs_first]
        second = self.rtlp_hp_vs_chunk_align_split(s, first)
        if second is not None:
            self.rtlp_hp_vs_free_chunk_insert(s, second)
        self.rtlp_hp_vs_free_chunk_insert(s, first)

    def rtlp_hp_vs_subsegment_commit_pages(self, s: _VsSubsegment, mask: int) -> None:
        """RtlpHpVsSubsegmentCommitPages.c: commit the pages and set their bitmap bits."""
        new = mask & ~s.commit
        for i in range(s.size // PAGE_SIZE):
            if new >> i & 1:
                s.rng.commit(i, i)
        s.commit |= mask
        s.rng.write(0x10, _Q.pack(s.commit))

    # allocation --------------------------------------------------------------
    def rtlp_hp_vs_chunk_split(self, s: _VsSubsegment, c: _Chunk, units: int) -> int:
        """RtlpHpVsChunkSplit.c: take ``units`` from the free chunk ``c``; a remainder that
        would leave 0x10 or 0x30 bytes before the next page grows the allocation, one under
        0x20 bytes is absorbed; commit the pages the allocation and the remainder's header
        touch; mark it allocated with its encoded segment page offset; the remainder is
        coalesced with the free chunks after it, align-split and inserted. Returns units."""
        self._take(s, c)
        rest = c.units - units
        if rest:
            at = s.rng.va + c.off + 16 * units
            gap = (((at + 4095) & ~4095) - at) >> 4
            if 16 * gap < 0x20:
                units, rest = units + gap, rest - gap
            elif 16 * gap == 0x30:
                units, rest = units + 1, rest - 1
        if 16 * rest < 0x20:
            units, rest = units + rest, 0
        span = 16 * units + (0x20 if rest else 0)
        self.rtlp_hp_vs_subsegment_commit_pages(s, _bits(c.off >> 12, (c.off + span - 1) >> 12))
        c.units, c.allocated = units, True
        self._write_header(s, c)
        if rest:
            r = _Chunk(c.off + 16 * units, rest, units, True)
            s.chunks[r.off] = r
            self._set_prev_of_next(s, r)
            self._absorb_free_next(s, r)
            self._set_prev_of_next(s, r)
            second = None
            if (s.rng.va + r.off + 0x20) & 0xFFF:
                second = self.rtlp_hp_vs_chunk_align_split(s, r)
            if second is not None:
                self.rtlp_hp_vs_free_chunk_insert(s, second)
            self.rtlp_hp_vs_free_chunk_insert(s, r)
        return units

    def rtlp_hp_vs_context_allocate_internal(
        self, request: int
    ) -> tuple[_VsSubsegment, _Chunk, int]:
        """RtlpHpVsContextAllocateInternal.c: best fit (size, then MemoryCost) among free
        chunks of at least ``1 + ceil(request / 16) + 1`` units, a new subsegment when there
        is none; one unit more when the user block would start a page (chunk + 0x20 page
        aligned: the block starts there, at the page). Returns the subsegment, the chunk and
        the user block's offset (where ExAllocateHeapPool puts the POOL_HEADER)."""
        need = 1 + (request + 15) // 16
        while True:
            fits = [sc for sc in self.free.values() if sc[1].units >= need + 1]
            if fits:
                s, c = min(fits, key=lambda sc: (sc[1].units, sc[1].cost, sc[0].rng.va + sc[1].off))
                break
            s = self.rtlp_hp_vs_subsegment_create(request)
            self.rtlp_hp_vs_context_add_subsegment(s)
        shifted = (s.rng.va + c.off + 0x20) & 0xFFF == 0
        self.rtlp_hp_vs_chunk_split(s, c, need + int(shifted))
        user = c.user = c.off + (0x20 if shifted else 0x10)
        usable = 16 * c.units - (0x20 if shifted else 0x10)
        # EncodedSegmentPageOffset, UnusedBytes, and the unused-bytes trailer
        page = (self.b.heap_key ^ (s.rng.va + c.off) ^ (c.off >> 12)) & 0xFF
        unused = usable - request
        s.rng.write(c.off + 8, struct.pack("<I", page | (0x100 if unused else 0)))
        if unused:
            s.rng.write(user + usable - 2, struct.pack("<H", unused & 0x1FFF))
        return s, c, user

    # free ----------------------------------------------------------------------
    def rtlp_hp_vs_context_free(self, s: _VsSubsegment, c: _Chunk, user: int) -> None:
        """RtlpHpVsContextFree.c: a block under a page goes on the delayed-free SList (its
        Next pointer over the first 8 bytes of the user block, the POOL_HEADER; the chunk
        stays allocated) until the list is full; then the list is freed whole."""
        if len(self.delayed) < DELAY_FREE_DEPTH:
            top = self.delayed[-1] if self.delayed else None
            s.rng.write(user, _Q.pack(top[0].rng.va + top[1].user if top else 0))
            c.delayed, c.block = True, None
            self.delayed.append((s, c))
            return
        for ds, dc in [*self.delayed, (s, c)]:
            self.rtlp_hp_vs_chunk_free(ds, dc)
        self.delayed.clear()

    def rtlp_hp_vs_chunk_free(self, s: _VsSubsegment, c: _Chunk) -> None:
        """RtlpHpVsChunkCoalesce.c / RtlpHpVsChunkFree.c: mark free, merge with a free
        previous chunk and up to two free next ones, insert; a subsegment free whole goes
        back to the segment (RtlpHpVsSubsegmentCleanup: its pages leave the dump)."""
        c.allocated, c.block = False, None
        prev = s.chunks.get(c.off - 16 * c.prev) if c.prev else None
        if prev is not None and not prev.allocated:
            self._take(s, prev)
            del s.chunks[c.off]
            prev.units += c.units
            c = prev
        self._absorb_free_next(s, c)
        if c.units == s.units:
            self._take(s, c)
            self.subsegments.remove(s)
            s.rng.decommit_all()
            return
        self._set_prev_of_next(s, c)
        self.rtlp_hp_vs_free_chunk_insert(s, c)


# ------------------------------------------------------------------ LFH
@dataclass
class _LfhSubsegment:
    rng: _Range
    geo: LfhGeometry
    blocks: dict[int, Block] = field(default_factory=dict)
    """Slot -> the block whose header it holds (allocated, or freed with a stale header)."""
    busy: set[int] = field(default_factory=set)
    counts: dict[int, int] = field(default_factory=dict)
    """Commit unit -> live blocks (unit 0 also counts the header); absent = never committed."""


class _LfhBucket:
    def __init__(self, block: int) -> None:
        self.block = block
        self.subsegments: list[_LfhSubsegment] = []
        self.total_blocks = 0


class _LfhContext:
    """One heap's _HEAP_LFH_CONTEXT (MaxBlockSize 0x200, WitholdPageCrossingBlocks 1)."""

    def __init__(self, b: SegmentHeapPoolBuilder, pool: str, heap: int, segs: _Segments) -> None:
        self.b, self.pool, self.heap, self.segs = b, pool, heap, segs
        self.buckets: dict[int, _LfhBucket] = {}

    def rtlp_hp_lfh_subsegment_create(self, bucket: _LfhBucket) -> _LfhSubsegment:
        """RtlpHpLfhSubsegmentCreate.c + RtlpHpLfhSubsegmentInitialize.c: the header, the
        encoded BlockOffsets, the bitmap (01 for withheld slots, 11 past the last slot), the
        commit words (1 for the first unit, 0xFFFF for the rest); only the first commit unit
        is committed."""
        lay, blk = self.b.seg, bucket.block
        count = rtlp_hp_lfh_bucket_compute_new_subsegment_block_count(
            blk, bucket.total_blocks, len(bucket.subsegments)
        )
        size = lfh_subsegment_size(blk, count)
        unit = lfh_commit_unit(blk, size)
        geo = LfhGeometry.compute(size, unit, blk, lay.lfh_bitmap)
        rng = self.segs.rtlp_hp_seg_sub_allocate(size, RANGE_LFH)
        rng.commit(0, unit // PAGE_SIZE - 1)
        sub = _LfhSubsegment(rng, geo, counts={0: 1})
        sub.busy.update(geo.witheld)
        bucket.subsegments.append(sub)
        bucket.total_blocks += geo.slots - len(geo.witheld)
        self._write_header(sub, owner=self.heap + 0x380 + 0x40 * (blk >> 4))
        return sub

    def _write_header(self, sub: _LfhSubsegment, owner: int | None = None) -> None:
        lay, geo, rng = self.b.seg, sub.geo, sub.rng
        head = bytearray(rng.read(0, geo.commit_state + 2 * (geo.size // geo.unit)))
        if owner is not None:
            struct.pack_into("<QQQ", head, 0, owner + 0x10, owner + 0x10, owner)
        live = len(sub.busy) - len(geo.witheld)
        free = geo.slots - len(geo.witheld) - live
        struct.pack_into("<H", head, lay.lfh_free_count, free)
        struct.pack_into("<H", head, lay.lfh_block_count, geo.slots - len(geo.witheld))
        if lay.lfh_location is not None:
            head[lay.lfh_location] = 1 if free == 0 else 0  # full list / available list
        head[lay.lfh_witheld] = len(geo.witheld)
        head[lay.lfh_unit_shift] = geo.unit.bit_length() - 1
        head[lay.lfh_unit_count] = geo.size // geo.unit
        if lay.lfh_commit_state is not None:
            struct.pack_into("<H", head, lay.lfh_commit_state, geo.commit_state)
        plain = geo.block | geo.first << 16
        enc = plain ^ (self.b.lfh_key & 0xFFFFFFFF) ^ lay.lfh_va_bits(rng.va)
        struct.pack_into("<I", head, lay.lfh_offsets, enc)
        bitmap = 0
        for i in sub.busy:
            bitmap |= 1 << (2 * i)
        words = (2 * geo.slots + 63) >> 6
        tail = (2 * geo.slots) & 0x3F
        if tail:
            bitmap |= (M64 & ~((1 << tail) - 1)) << (64 * (words - 1))
        head[lay.lfh_bitmap : lay.lfh_bitmap + 8 * words] = bitmap.to_bytes(8 * words, "little")
        for u in range(geo.size // geo.unit):
            struct.pack_into("<H", head, geo.commit_state + 2 * u, sub.counts.get(u, 0xFFFF))
        rng.write(0, bytes(head))

    def _units(self, sub: _LfhSubsegment, slot: int) -> range:
        at = sub.geo.first + slot * sub.geo.block
        return range(at // sub.geo.unit, (at + sub.geo.block - 1) // sub.geo.unit + 1)

    def rtlp_hp_lfh_slot_allocate(self, block: int) -> tuple[_LfhSubsegment, int]:
        """RtlpHpLfhSlotAllocate.c / RtlpLfhBlockBitmapAllocate.c: the first free slot from a
        random start in a subsegment with a free block (a new one when none has); commit the
        units the block covers; bitmap 01 (pool requests fill the block)."""
        bucket = self.buckets.setdefault(block, _LfhBucket(block))
        subs = [s for s in bucket.subsegments if len(s.busy) < s.geo.slots]
        sub = subs[0] if subs else self.rtlp_hp_lfh_subsegment_create(bucket)
        start = self.b.rng.randrange(sub.geo.slots)
        slot = next(
            i % sub.geo.slots
            for i in range(start, start + sub.geo.slots)
            if i % sub.geo.slots not in sub.busy
        )
        sub.busy.add(slot)
        for u in self._units(sub, slot):
            if u not in sub.counts:
                page = u * sub.geo.unit // PAGE_SIZE
                sub.rng.commit(page, page + sub.geo.unit // PAGE_SIZE - 1)
                sub.counts[u] = 0
            sub.counts[u] += 1
        self._write_header(sub)
        return sub, slot

    def rtlp_hp_lfh_subsegment_free_block(self, sub: _LfhSubsegment, slot: int) -> None:
        """RtlpHpLfhSubsegmentFreeBlock.c: clear the slot's bits, count down its commit units;
        nothing inside the block is written (its POOL_HEADER stays)."""
        sub.busy.discard(slot)
        for u in self._units(sub, slot):
            sub.counts[u] -= 1
        blk = sub.blocks.get(slot)
        if blk is not None:
            blk.allocated = False
        self._write_header(sub)


# ------------------------------------------------------------------ the builder
@dataclass
class _Live:
    """A pool block the heap handed out: where, and how to free it."""

    block: Block
    free: Any


class SegmentHeapPoolBuilder(PoolBuilder):
    """PoolBuilder whose small blocks come from the VS and LFH allocators above."""

    def __init__(self, kb: Machine, spec: PoolSpec, layout: PoolLayout) -> None:
        self.seg = SegLayout.from_profile(kb.profile)
        self.seg_cursor: dict[str, int] = {}
        self.subsegments = {"vs": 0, "lfh": 0}
        self.heap_pages = dict.fromkeys(
            ["vs_reserved", "vs_committed", "vs_delayed_frees", "lfh_reserved", "lfh_committed",
             "lfh_witheld"], 0)  # fmt: skip
        super().__init__(kb, spec, layout)
        self.heap_key = self.rng.getrandbits(64)
        self.lfh_key = self.rng.getrandbits(64)
        # One _SEGMENT_HEAP per pool: its contexts' addresses are what the links point to.
        self.heaps = {p: kb.nt_var(0x1000, 16) for p in POOLS}
        self.vs = {p: _VsContext(self, p, self.heaps[p]) for p in POOLS}
        self.lfh = {p: _LfhContext(self, p, self.heaps[p], self.vs[p].segs) for p in POOLS}
        self.to_free: dict[str, list[_Live]] = {p: [] for p in POOLS}
        # A freed block was an allocation of one of the pool's tags, of that tag's size.
        for stream in self.streams.values():
            made = [(i.units, i.tag) for i in stream if i.allocated]
            for item in stream:
                if not item.allocated and made:
                    item.units, item.tag = self.rng.choice(made)
        self.requests: dict[tuple[str, int], int] = {}
        """Allocations per (pool, request size): an LFH bucket activates after a few."""

    def segment_va(self, pool: str) -> int:
        """A fresh 1 MiB-aligned segment VA in the pool's own region (the bugcheck's
        referenced page stays out of every segment)."""
        if pool not in self.seg_cursor:
            base = (
                self.kb.c.session_pool_start
                if pool.startswith("session")
                else (self.kb.c.paged_pool_start)
            )
            region = {"nonpaged": 2, "paged": 1, "session_nonpaged": 2, "session_paged": 1}
            self.seg_cursor[pool] = base + region[pool] * 0x10_0000_0000
        va = self.seg_cursor[pool]
        skip = self.kb.referenced_va & ~0xFFF
        if skip and va <= skip < va + SEGMENT_BYTES:
            va += SEGMENT_BYTES
        self.seg_cursor[pool] = va + SEGMENT_BYTES
        return va

    # ------------------------------------------------------------ ExAllocateHeapPool
    def ex_allocate_heap_pool(self, pool: str, request: int, tag: int, internal: bool) -> _Live:
        """ExAllocateHeapPool.c for ``request = round16(N + 0x10)``: LFH when the request
        fits MaxBlockSize - 0x10 and the bucket is active, else VS; the POOL_HEADER at the
        block: PreviousSize 0, BlockSize request >> 4, PoolType ``type & 0x6D | 2``, the tag
        (PoolIndex and ProcessBilled are not written)."""
        lay = self.lay
        lfh = self.lfh[pool]
        seen = self.requests[(pool, request)] = self.requests.get((pool, request), 0) + 1
        in_lfh = request <= LFH_MAX_BLOCK - 0x10 and seen > LFH_ACTIVATION
        if in_lfh:
            sub, slot = lfh.rtlp_hp_lfh_slot_allocate(request)
            rng, off = sub.rng, sub.geo.first + slot * sub.geo.block

            def free() -> None:
                lfh.rtlp_hp_lfh_subsegment_free_block(sub, slot)

        else:
            vs = self.vs[pool]
            s, c, off = vs.rtlp_hp_vs_context_allocate_internal(request)
            rng = s.rng

            def free() -> None:
                vs.rtlp_hp_vs_context_free(s, c, off)

        h = bytearray(rng.read(off, lay.header_size))
        hd = lay.header
        h[hd["PreviousSize"]] = 0
        h[hd["BlockSize"]] = request >> 4
        h[hd["PoolType"]] = lay.stored_type(pool)
        h[hd["PoolTag"] : hd["PoolTag"] + 4] = tag.to_bytes(4, "little")
        rng.write(off, bytes(h))
        body = request - lay.header_size
        if not internal:
            start = (rng.va + off) % 0x1000
            rng.write(off + lay.header_size, self.template[start : start + body])
        else:
            rng.write(off + lay.header_size, bytes(body))
        blk = Block(rng.pa(off), rng.va + off, tag, request >> 4, 0, pool, True, internal)
        if in_lfh:
            sub.blocks[slot] = blk  # a freed LFH block keeps its header: listed as free
        else:
            c.block = blk
        return _Live(blk, free)

    # ------------------------------------------------------------ PoolBuilder hooks
    def _place(self, pool: str, item: _Item, internal: bool = False) -> Block | None:
        request = item.units * self.lay.unit
        if not item.allocated:  # a block that was in use and is freed later
            if item.tag == 0:
                return None
            self.to_free[pool].append(self.ex_allocate_heap_pool(pool, request, item.tag, False))
            return None
        live = self.ex_allocate_heap_pool(pool, request, item.tag, internal)
        pending = self.to_free[pool]
        if pending and self.rng.random() < 0.5:
            pending.pop(self.rng.randrange(len(pending))).free()
        return live.block

    def _close(self, pool: str) -> None:
        """Free what is still to be freed, then list the committed pages of every live
        subsegment with the blocks whose headers they hold."""
        pending = self.to_free[pool]
        self.rng.shuffle(pending)
        for live in pending:
            live.free()
        pending.clear()
        heap = self.heap_pages
        vs = self.vs[pool].subsegments
        for s in vs:
            blocks = [c.block for c in s.chunks.values() if c.block is not None and c.allocated]
            self._list_pages(pool, s.rng, blocks)
            heap["vs_reserved"] += s.size // PAGE_SIZE
            heap["vs_committed"] += len(s.rng.pfns)
            heap["vs_delayed_frees"] += sum(c.delayed for c in s.chunks.values())
        lfh = [sub for bucket in self.lfh[pool].buckets.values() for sub in bucket.subsegments]
        for sub in lfh:
            self._list_pages(pool, sub.rng, list(sub.blocks.values()))
            heap["lfh_reserved"] += sub.geo.size // PAGE_SIZE
            heap["lfh_committed"] += len(sub.rng.pfns)
            heap["lfh_witheld"] += len(sub.geo.witheld)
        self.subsegments["vs"] += len(vs)
        self.subsegments["lfh"] += len(lfh)

    def _list_pages(self, pool: str, rng: _Range, blocks: list[Block]) -> None:
        pages = {i: PoolPage(pool, pfn, rng.va + i * PAGE_SIZE) for i, pfn in rng.pfns.items()}
        for b in blocks:
            pages[(b.va - rng.va) // PAGE_SIZE].blocks.append(b)
        self.pages += [pages[i] for i in sorted(pages)]

    # --------------------------------------------------------------- corrupt
    def _corrupt_pages(self) -> None:
        """Corrupt subsegments the reader must reject whole, each in a heap of its own: a VS
        chunk whose size breaks the chain (broken_chain), an LFH subsegment with an allocated
        block whose header is garbage (garbage_header), a VS subsegment whose committed pages
        after the first are random bytes (half_page)."""
        c = self.spec.corrupt_pages
        tags = sorted({b.tag for p in self.pages for b in p.blocks if b.allocated} or {0x6B61654C})
        kinds = ["broken_chain"] * c.broken_chain + ["garbage_header"] * c.garbage_header
        kinds += ["half_page"] * c.half_page
        for kind in kinds:
            heap = self.heaps["nonpaged"]
            if kind in ("broken_chain", "half_page"):
                vs = _VsContext(self, "nonpaged", heap)
                chunks = []
                while not vs.subsegments or len(vs.subsegments[0].rng.pfns) < 3:
                    units = self.rng.randrange(0x22, 0x60)
                    s, ch, off = vs.rtlp_hp_vs_context_allocate_internal(units * 16)
                    s.rng.write(off, self.lay.make_header(0, 0, units, 2, self.rng.choice(tags)))
                    chunks.append((s, ch, off, units))
                s = vs.subsegments[0]
                first_tag = int.from_bytes(s.rng.read(chunks[0][2] + 4, 4), "little")
                first_size = chunks[0][3] * 16
                if kind == "broken_chain":
                    _, ch, _, _ = chunks[self.rng.randrange(1, len(chunks))]
                    ch.units += 3
                    vs._write_header(s, ch)
                else:
                    for i in sorted(s.rng.pfns)[1:]:
                        s.rng.write(i * PAGE_SIZE, self.rng.randbytes(PAGE_SIZE))
                rng = s.rng
            else:
                lfh = _LfhContext(self, "nonpaged", heap, _Segments(self, "nonpaged", heap))
                units = self.rng.randrange(3, 12)
                for _ in range(8):
                    sub, slot = lfh.rtlp_hp_lfh_slot_allocate(units * 16)
                    at = sub.geo.first + slot * sub.geo.block
                    sub.rng.write(at, self.lay.make_header(0, 0, units, 2, self.rng.choice(tags)))
                first, slot = min(sub.busy), max(sub.busy)
                at = sub.geo.first + slot * sub.geo.block
                # a header no pool block has, and no SList link either
                sub.rng.write(at, self.rng.randbytes(4) + b"\1\2\3\4" + bytes(8))
                at0 = sub.geo.first + first * sub.geo.block
                first_tag = int.from_bytes(sub.rng.read(at0 + 4, 4), "little")
                first_size, rng = units * 16, sub.rng
            self.corrupt.append(
                {"pfn": rng.pfns[0], "pa": rng.pfns[0] * PAGE_SIZE, "va": rng.va, "kind": kind,
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
        self.kb.notes += [
            "segment heap: written after the 22631 kernel's code (nohuto/decompiled-pseudocode "
            "ntoskrnl/); synthetic: LFH buckets activate at their "
            f"{LFH_ACTIVATION + 1}th allocation and are 16 bytes apart, no page is decommitted "
            "after a free, free-tree links are zero, no dynamic lookaside",
        ]
        return {**out, "ExPoolState": state, "RtlpHpHeapGlobals": globals_va}

    def truth(self) -> dict[str, Any]:
        out = super().truth()
        out["segment_heap"] = {
            "heap_key": self.heap_key,
            "lfh_key": self.lfh_key,
            "vs_subsegments": self.subsegments["vs"],
            "lfh_subsegments": self.subsegments["lfh"],
            **self.heap_pages,
        }
        return out
