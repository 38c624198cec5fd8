"""The forge's segment heap and big-page table, rule by rule, against the 22631 kernel's code
(nohuto/decompiled-pseudocode, ntoskrnl/): each test names the routine whose lines it checks.
The forge must write what those routines write; the scan tests then hold the reader to it."""

from __future__ import annotations

import random
import struct
from types import SimpleNamespace

import pytest

import poolscope
from dump_util import copy_patched, truth_blocks
from poolscope.forge import load_profile
from poolscope.forge import paging as pg
from poolscope.forge.physmem import PhysicalMemory
from poolscope.forge.pool import PoolLayout, big_hash
from poolscope.forge.segheap import (
    LfhGeometry,
    SegLayout,
    SegmentHeapPoolBuilder,
    _LfhContext,
    _VsContext,
    lfh_commit_unit,
    lfh_subsegment_size,
    rtlp_hp_lfh_bucket_compute_new_subsegment_block_count,
)

HEAP_KEY = 0x0123_4567_89AB_CDEF
LFH_KEY = 0xFEDC_BA98_7654_3210


class Heap:
    """The parts of a SegmentHeapPoolBuilder the heap routines use, over fresh memory."""

    segment_va = SegmentHeapPoolBuilder.segment_va

    def __init__(self, build: int = 22631) -> None:
        mem = PhysicalMemory([(0x100, 0x8000)], [])
        self.kb = SimpleNamespace(
            mem=mem,
            pt=pg.PageTables(mem, 0x100),
            c=SimpleNamespace(
                paged_pool_start=0xFFFF_C400_0000_0000, session_pool_start=0xFFFF_D880_0000_0000
            ),
            referenced_va=0,
        )
        self.seg = SegLayout.from_profile(load_profile(build))
        self.seg_cursor: dict[str, int] = {}
        self.heap_key, self.lfh_key = HEAP_KEY, LFH_KEY
        self.rng = random.Random(1)
        self.heap = 0xFFFF_F800_1234_0000

    def q(self, va: int) -> int:
        pa, _, _, _ = self.kb.pt.walk(va)
        assert pa is not None, hex(va)
        return struct.unpack("<Q", self.kb.mem.page(pa >> 12)[pa & 0xFFF : (pa & 0xFFF) + 8])[0]

    def mapped(self, va: int) -> bool:
        return self.kb.pt.walk(va)[0] is not None

    def chunk(self, va: int) -> tuple[int, int, int, int]:
        """(MemoryCost, UnsafeSize, UnsafePrevSize, Allocated) of the chunk header at ``va``."""
        d = self.q(va) ^ HEAP_KEY ^ va
        return d & 0xFFFF, d >> 16 & 0xFFFF, d >> 32 & 0xFFFF, d >> 48 & 0xFF


@pytest.mark.parametrize(
    ("request_bytes", "size"), [(0x40, 0x10000), (0x7FE0, 0x20000), (0x10000, 0x40000)]
)
@pytest.mark.parametrize("full", [False, True])
def test_vs_subsegment_as_rtlphpvssubsegmentcreate_writes_it(request_bytes, size, full):
    """RtlpHpVsSubsegmentCreate: the next power of two of 2*request+72 (64..256 KiB);
    Size = (bytes - 0x30) >> 4; Signature = Size ^ 0x2BED with bit 15 = fully committed;
    CommitBitmap one bit a committed page (only the first unless fully committed); one free
    chunk of Size units at +0x30, encoded with HeapKey and its VA. Then
    RtlpHpVsContextAddSubsegment: list links XOR the subsegment's VA, and
    RtlpHpVsChunkAlignSplit splits the chunk at +0xFE0."""
    h = Heap()
    vs = _VsContext(h, "nonpaged", h.heap)  # type: ignore[arg-type]
    s = vs.rtlp_hp_vs_subsegment_create(request_bytes, full=full)
    va = s.rng.va
    assert s.size == size and va % 0x1000 == 0
    raw = s.rng.read(0, 0x30)
    units, sig = struct.unpack_from("<HH", raw, 0x20)
    assert units == (size - 0x30) >> 4
    assert sig & 0x7FFF == (units ^ 0x2BED) & 0x7FFF
    assert bool(sig & 0x8000) == full
    pages = size // 0x1000
    bitmap = struct.unpack_from("<Q", raw, 0x10)[0]
    assert bitmap == ((1 << pages) - 1 if full else 1)
    assert [h.mapped(va + i * 0x1000) for i in range(pages)] == [True] + [full] * (pages - 1)
    assert h.chunk(va + 0x30) == (0, units, 0, 0)
    vs.rtlp_hp_vs_context_add_subsegment(s)
    head = vs.va + 0x20
    assert h.q(va) ^ va == head and h.q(va + 8) ^ va == head
    first, second = h.chunk(va + 0x30), h.chunk(va + 0xFE0)
    assert first[1:] == (0xFB, 0, 0) and second[1:] == (units - 0xFB, 0xFB, 0)
    # MemoryCost (RtlpHpVsFreeChunkInsert): the uncommitted whole pages the chunk spans
    assert second[0] == (0 if full else pages - 1)


def test_vs_allocation_as_rtlphpvschunksplit_and_allocateinternal_write_it():
    """RtlpHpVsContextAllocateInternal / RtlpHpVsChunkSplit: a chunk of 1 + ceil(request/16)
    units, Allocated 1, its encoded segment page offset at +8; the remainder a free chunk whose
    UnsafePrevSize is the allocation's size; a remainder that would leave 0x30 bytes before the
    page grows the allocation by 0x10, one under 0x20 bytes is absorbed; a chunk at page - 0x20
    puts the user block (the POOL_HEADER) at the page; the pages it touches are committed."""
    h = Heap()
    vs = _VsContext(h, "nonpaged", h.heap)  # type: ignore[arg-type]
    s, c, user = vs.rtlp_hp_vs_context_allocate_internal(0x40)
    va = s.rng.va
    assert (c.off, user) == (0x30, 0x40)
    assert h.chunk(va + 0x30)[1:] == (5, 0, 1)
    assert s.rng.read(0x38, 4) == struct.pack("<I", (HEAP_KEY ^ (va + 0x30)) & 0xFF)
    assert h.chunk(va + 0x80)[1:] == (0xFB - 5, 5, 0)
    # 0xF6 units left before 0xFE0: an allocation ending at page - 0x30 (0xF5 units) is grown
    # by one unit; the next allocation then starts at page - 0x20.
    s2, c2, _ = vs.rtlp_hp_vs_context_allocate_internal(16 * (0xF5 - 1))
    assert (s2, c2.off, c2.units) == (s, 0x80, 0xFB - 5)
    s3, c3, user3 = vs.rtlp_hp_vs_context_allocate_internal(0x100)
    assert (s3, c3.off, user3) == (s, 0xFE0, 0x1000)
    assert c3.units == 1 + 0x10 + 1  # one unit more: the block starts the page
    assert struct.unpack_from("<Q", s.rng.read(0x10, 8))[0] == 0b11
    # delayed free (RtlpHpVsContextFree): still allocated, SList links over the POOL_HEADER
    vs.rtlp_hp_vs_context_free(s, c, user)
    vs.rtlp_hp_vs_context_free(s3, c3, user3)
    assert h.chunk(va + 0x30)[3] == 1 and h.q(va + user) == 0
    assert h.q(va + user3) == va + user


# Slots and FirstBlockOffset that RtlpHpLfhSubsegmentInitialize's formulas give (worked out
# by hand from its lines 39-96, U = 4 KiB): (block, subsegment) -> (first, BlockCount, withheld)
LFH_TABLE = {
    (0x20, 0x1000): (0x60, 125, 0),
    (0x30, 0x1000): (0x50, 83, 0),
    (0x50, 0x1000): (0x50, 50, 0),
    (0x80, 0x1000): (0x40, 31, 0),
    (0x100, 0x1000): (0x40, 15, 0),
    (0x200, 0x2000): (0x200, 15, 0),
    (0x20, 0x10000): (0x260, 2029, 0),
    (0x30, 0x10000): (0x1B0, 1346, 10),
    (0x50, 0x20000): (0x210, 1606, 25),
    (0x80, 0x40000): (0x300, 2042, 0),
}


@pytest.mark.parametrize(("key", "want"), sorted(LFH_TABLE.items()))
def test_lfh_geometry_as_rtlphplfhsubsegmentinitialize_computes_it(key, want):
    block, size = key
    g = LfhGeometry.compute(size, lfh_commit_unit(block, size), block)
    assert (g.first, g.slots - len(g.witheld), len(g.witheld)) == want
    assert g.first + g.slots * block <= size


def test_lfh_subsegment_sizes_as_rtlphplfhsubsegmentcreate_chooses_them():
    """RtlpHpLfhBucketComputeNewSubsegmentBlockCount: 16 blocks first (8 from 0x100 bytes),
    then 32 (16), then an eighth of the bucket's blocks, 4..1024; RtlpHpLfhSubsegmentCreate:
    the power of two that holds them, at least a page."""
    assert rtlp_hp_lfh_bucket_compute_new_subsegment_block_count(0x20, 0, 0) == 16
    assert rtlp_hp_lfh_bucket_compute_new_subsegment_block_count(0x20, 125, 1) == 32
    assert rtlp_hp_lfh_bucket_compute_new_subsegment_block_count(0x100, 0, 0) == 8
    assert rtlp_hp_lfh_bucket_compute_new_subsegment_block_count(0x20, 8000, 9) == 1000
    assert rtlp_hp_lfh_bucket_compute_new_subsegment_block_count(0x20, 80000, 9) == 1024
    assert lfh_subsegment_size(0x20, 16) == 0x1000
    assert lfh_subsegment_size(0x1F0, 16) == 0x2000
    assert lfh_subsegment_size(0x20, 1024) == 0x10000


def test_lfh_subsegment_as_rtlphplfhsubsegmentinitialize_writes_it():
    """The header: BlockOffsets = (BlockSize | FirstBlockOffset << 16) ^ (u32)LfhKey ^
    ((u32)va >> 12); the bitmap 2 bits a slot with 11 past the last; one commit word a unit,
    1 for the first (the header) and 0xFFFF for those never committed; only the first unit is
    mapped. A block handed out (RtlpHpLfhSlotAllocate) has bitmap 01 and commits its unit; one
    freed (RtlpHpLfhSubsegmentFreeBlock) has 00 and keeps its bytes."""
    h = Heap()
    vs = _VsContext(h, "nonpaged", h.heap)  # type: ignore[arg-type]
    lfh = _LfhContext(h, "nonpaged", h.heap, vs.segs)  # type: ignore[arg-type]
    sub, slot = lfh.rtlp_hp_lfh_slot_allocate(0x1F0)
    assert sub.geo.size == 0x1000  # the bucket's first: 8 blocks of 0x1F0 bytes fit a page
    while sub.geo.size == 0x1000:  # the second holds 16: two pages, one commit unit each
        sub, slot = lfh.rtlp_hp_lfh_slot_allocate(0x1F0)
    g, va, lay = sub.geo, sub.rng.va, h.seg
    assert (g.size, g.unit) == (0x2000, 0x1000)
    head = sub.rng.read(0, 0x100)
    enc = struct.unpack_from("<I", head, lay.lfh_offsets)[0]
    assert enc ^ (LFH_KEY & 0xFFFFFFFF) ^ ((va & 0xFFFFFFFF) >> 12) == 0x1F0 | g.first << 16
    count, witheld = struct.unpack_from("<H", head, lay.lfh_block_count)[0], head[lay.lfh_witheld]
    assert count + witheld == g.slots and witheld == len(g.witheld) > 0
    assert head[lay.lfh_unit_shift] == 12 and head[lay.lfh_unit_count] == 2
    assert struct.unpack_from("<H", head, lay.lfh_commit_state)[0] == g.commit_state
    bitmap = int.from_bytes(head[lay.lfh_bitmap : lay.lfh_bitmap + 8], "little")
    assert bitmap >> (2 * slot) & 3 == 1
    assert all(bitmap >> (2 * w) & 3 == 1 for w in g.witheld)
    assert bitmap >> (2 * g.slots) == (1 << (64 - 2 * g.slots)) - 1
    unit = (g.first + slot * 0x1F0) // 0x1000
    words = struct.unpack_from("<HH", head, g.commit_state)
    assert words[unit] >= 1 and words[1 - unit] == (1 if unit == 1 else 0xFFFF)
    assert h.mapped(va + unit * 0x1000) and h.mapped(va)
    lfh.rtlp_hp_lfh_subsegment_free_block(sub, slot)
    head = sub.rng.read(0, 0x100)
    assert (
        int.from_bytes(head[lay.lfh_bitmap : lay.lfh_bitmap + 8], "little") >> (2 * slot) & 3 == 0
    )


def test_big_page_slot_as_expaddtagforbigpages_hashes_it():
    """ExpAddTagForBigPages: v9 = 40543 * (unsigned int)(Va >> 12); slot = ((u32)v9 ^
    HIDWORD(v9)) & (PoolBigPageTableSize - 1)."""
    va = 0xFFFF_C001_2345_6000
    h = 40543 * ((va >> 12) & 0xFFFFFFFF)
    assert big_hash(va, 0x1FF, "40543") == ((h & 0xFFFFFFFF) ^ (h >> 32)) & 0x1FF
    lay = PoolLayout.from_profile(load_profile(22631))
    assert lay.big_hash == "40543"
    assert PoolLayout.from_profile(load_profile(7601)).big_hash == "reactos"


@pytest.mark.parametrize("scenario", ["win10-19045", "win11-22631", "win11-26100"])
def test_forged_big_table_entries_sit_at_their_hash_slots(forged, scenario):
    """Every live big-page entry is reached by probing from its hash slot over used entries,
    and the table holds its own entry (ExpResizeBigPageTable: tag Pool, its size)."""
    _, truth = forged(scenario)
    t = truth.to_dict()["pool"]["bigpool"]
    n = t["entries"]
    slots = dict(zip(t["slots"], t["rows"], strict=True))
    for s, row in slots.items():
        h = big_hash(row["va"], n - 1, "40543")
        assert all((h + k) % n in slots for k in range((s - h) % n)), row
    assert any(r["va"] == t["va"] and r["tag"] == "Pool" for r in t["rows"])


@pytest.mark.parametrize("scenario", ["win10-19045", "win11-22631", "win11-26100"])
def test_pool_headers_as_exallocateheappool_writes_them(forged, scenario):
    """ExAllocateHeapPool: PreviousSize 0, BlockSize = round16(N + 0x10) >> 4, PoolType
    ``type & 0x6D | 2`` (2 nonpaged, 3 paged); VS headers at chunk + 0x10 or, when that chunk
    ends at page - 0x20, at the page (RtlpHpVsContextAllocateInternal)."""
    path, truth = forged(scenario)
    t = truth.to_dict()
    blocks = truth_blocks(t)
    with poolscope.open(path) as dump:
        for pa, va, _tag, size, _prev, pool, allocated in blocks[:400]:
            raw = dump.read_physical(pa, 16)
            assert raw[0] == 0 and raw[2] * 16 == size
            if allocated:
                assert raw[3] == (3 if pool == "paged" else 2), (hex(va), pool)
    assert sum(1 for b in blocks if b[1] % 0x1000 == 0) >= 3


@pytest.mark.parametrize("scenario", ["win10-19045", "win11-22631", "win11-26100"])
def test_big_page_table_is_found_wherever_nt_keeps_its_variables(forged, scenario, tmp_path):
    """Without symbols the big-page table is found by what the kernel writes into it (its own
    entry, every live entry at its hash slot), not by where its variables sit: moved 512 KiB
    away from PoolTrackTable (outside the window searched first), it is found in nt's writable
    data and read whole."""
    src, truth = forged(scenario)
    t = truth.to_dict()
    g = t["pool"]["globals"]
    table, size = t["pool"]["bigpool"]["va"], t["pool"]["bigpool"]["entries"]
    far = g["PoolTrackTable"] + 0x80000
    path = copy_patched(
        src, tmp_path, truth,
        [(g["PoolBigPageTable"], bytes(8)), (g["PoolBigPageTableSize"], bytes(8)),
         (far, table.to_bytes(8, "little") + size.to_bytes(8, "little"))],
    )  # fmt: skip
    rep = poolscope.scan(path).to_dict()
    assert "a writable section of nt" in rep["sources"]["PoolBigPageTable"]
    assert "holding its own entry" in rep["sources"]["PoolBigPageTableSize"]
    rows = sorted((r["va"], r["tag"], r["bytes"], r["free"]) for r in rep["bigpool"])
    want = t["pool"]["bigpool"]["rows"]
    assert rows == sorted((hex(r["va"]), r["tag"], r["bytes"], r["free"]) for r in want)
