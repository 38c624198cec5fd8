"""x64 4-level page tables built in the forged physical memory."""

from __future__ import annotations

import struct

from .layout import PAGE_SIZE
from .physmem import PhysicalMemory

PRESENT = 0x1
WRITE = 0x2
USER = 0x4
PWT = 0x8
PCD = 0x10
ACCESSED = 0x20
DIRTY = 0x40
LARGE = 0x80  # PS
GLOBAL = 0x100
TRANSITION = 0x800  # Windows software bit in a non-present PTE
PAT_LARGE = 0x1000  # PAT bit of a 2 MiB / 1 GiB entry
NX = 1 << 63

KERNEL_RW = PRESENT | WRITE | ACCESSED | DIRTY  # 0x63, what Windows writes for kernel data
TABLE = KERNEL_RW  # intermediate entries
ADDR_MASK = 0x000FFFFFFFFFF000

SIZE_4K = 0x1000
SIZE_2M = 0x200000
SIZE_1G = 0x40000000

_Q = struct.Struct("<Q")


def indices(va: int) -> tuple[int, int, int, int]:
    return ((va >> 39) & 0x1FF, (va >> 30) & 0x1FF, (va >> 21) & 0x1FF, (va >> 12) & 0x1FF)


def canonical(va: int) -> int:
    va &= (1 << 48) - 1
    return va | 0xFFFF000000000000 if va & (1 << 47) else va


class PageTables:
    """A PML4 and the tables under it, written into ``mem`` as they are created."""

    def __init__(self, mem: PhysicalMemory, hint: int) -> None:
        self.mem = mem
        self.hint = hint
        self.pml4_pfn = mem.alloc(hint)
        mem.page(self.pml4_pfn)
        self.table_pfns: list[int] = [self.pml4_pfn]

    @property
    def dtb(self) -> int:
        return self.pml4_pfn * PAGE_SIZE

    # ------------------------------------------------------------- raw access
    def get(self, table_pfn: int, idx: int) -> int:
        pg = self.mem.pages.get(table_pfn)
        return 0 if pg is None else _Q.unpack_from(pg, idx * 8)[0]

    def set(self, table_pfn: int, idx: int, value: int) -> None:
        _Q.pack_into(self.mem.page(table_pfn), idx * 8, value)

    def _child(self, table_pfn: int, idx: int) -> int:
        e = self.get(table_pfn, idx)
        if e & PRESENT:
            if e & LARGE:
                raise ValueError("forge: a large page already maps this range")
            return (e & ADDR_MASK) >> 12
        if e:
            raise ValueError("forge: a non-present entry already sits here")
        pfn = self.mem.alloc(self.hint)
        self.mem.page(pfn)
        self.table_pfns.append(pfn)
        self.set(table_pfn, idx, (pfn << 12) | TABLE)
        return pfn

    def _table_for(self, va: int, level: int) -> tuple[int, int]:
        """(table pfn, index) of the entry for ``va`` at ``level`` (3 = PDPT, 2 = PD,
        1 = PT), creating the tables above it."""
        idxs = indices(va)
        t = self.pml4_pfn
        for depth in range(4 - level):
            t = self._child(t, idxs[depth])
        return t, idxs[4 - level]

    # ---------------------------------------------------------------- mapping
    def _set_leaf(self, t: int, i: int, value: int) -> None:
        if self.get(t, i):
            raise ValueError("forge: this virtual range is already mapped")
        self.set(t, i, value)

    def map_4k(self, va: int, pfn: int, flags: int = KERNEL_RW) -> None:
        t, i = self._table_for(va, 1)
        self._set_leaf(t, i, (pfn << 12) | flags)

    def map_2m(self, va: int, pfn: int, flags: int = KERNEL_RW) -> None:
        if va & (SIZE_2M - 1) or pfn & 0x1FF:
            raise ValueError("forge: 2 MiB mapping must be 2 MiB aligned")
        t, i = self._table_for(va, 2)
        self._set_leaf(t, i, (pfn << 12) | flags | LARGE)

    def map_1g(self, va: int, pfn: int, flags: int = KERNEL_RW) -> None:
        if va & (SIZE_1G - 1) or pfn & 0x3FFFF:
            raise ValueError("forge: 1 GiB mapping must be 1 GiB aligned")
        t, i = self._table_for(va, 3)
        self._set_leaf(t, i, (pfn << 12) | flags | LARGE)

    def set_pte(self, va: int, raw: int) -> None:
        """Write a raw last-level PTE (present or not), creating the tables above."""
        t, i = self._table_for(va, 1)
        self._set_leaf(t, i, raw)

    def set_pml4e(self, idx: int, raw: int) -> None:
        self.set(self.pml4_pfn, idx, raw)

    # ------------------------------------------------------------ translation
    def walk(self, va: int) -> tuple[int | None, int, int, int]:
        """Hardware-style walk: (pa or None, page size, leaf entry, level of the leaf
        (4 = PML4E ... 1 = PTE)). Large-page addresses ignore bits 12..20/29 of the entry."""
        i4, i3, i2, i1 = indices(va)
        e = self.get(self.pml4_pfn, i4)
        if not e & PRESENT:
            return None, 0, e, 4
        e = self.get((e & ADDR_MASK) >> 12, i3)
        if not e & PRESENT:
            return None, SIZE_1G, e, 3
        if e & LARGE:
            return (e & ADDR_MASK & ~(SIZE_1G - 1)) | (va & (SIZE_1G - 1)), SIZE_1G, e, 3
        e = self.get((e & ADDR_MASK) >> 12, i2)
        if not e & PRESENT:
            return None, SIZE_2M, e, 2
        if e & LARGE:
            return (e & ADDR_MASK & ~(SIZE_2M - 1)) | (va & (SIZE_2M - 1)), SIZE_2M, e, 2
        e = self.get((e & ADDR_MASK) >> 12, i1)
        if not e & PRESENT:
            return None, SIZE_4K, e, 1
        return (e & ADDR_MASK) | (va & 0xFFF), SIZE_4K, e, 1
