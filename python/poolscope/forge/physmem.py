"""Physical memory of the forged machine: runs, a page allocator and the written pages."""

from __future__ import annotations

import bisect

from .layout import PAGE_SIZE

Range = tuple[int, int]  # (base_pfn, page_count)


def subtract_ranges(ranges: list[Range], holes: list[Range]) -> list[Range]:
    """``ranges`` minus ``holes``; both sorted lists of (base, count)."""
    out: list[Range] = []
    for base, count in ranges:
        pieces = [(base, base + count)]
        for hb, hc in holes:
            he = hb + hc
            nxt = []
            for s, e in pieces:
                if he <= s or hb >= e:
                    nxt.append((s, e))
                    continue
                if s < hb:
                    nxt.append((s, hb))
                if he < e:
                    nxt.append((he, e))
            pieces = nxt
        out.extend((s, e - s) for s, e in pieces if e > s)
    return out


def ranges_from_pfns(pfns: list[int]) -> list[Range]:
    """Range-compress a sorted list of PFNs."""
    out: list[Range] = []
    for p in pfns:
        if out and out[-1][0] + out[-1][1] == p:
            out[-1] = (out[-1][0], out[-1][1] + 1)
        else:
            out.append((p, 1))
    return out


class RangeSet:
    """Membership test over sorted, non-overlapping (base, count) ranges."""

    def __init__(self, ranges: list[Range]) -> None:
        self.ranges = list(ranges)
        self._bases = [b for b, _ in self.ranges]

    def __contains__(self, pfn: int) -> bool:
        i = bisect.bisect_right(self._bases, pfn) - 1
        return i >= 0 and pfn < self.ranges[i][0] + self.ranges[i][1]

    def count(self) -> int:
        return sum(c for _, c in self.ranges)

    def next_at_or_after(self, pfn: int) -> int | None:
        """The smallest member >= pfn, or None."""
        i = bisect.bisect_right(self._bases, pfn) - 1
        if i >= 0 and pfn < self.ranges[i][0] + self.ranges[i][1]:
            return pfn
        if i + 1 < len(self.ranges):
            return self.ranges[i + 1][0]
        return None

    def end_of(self, pfn: int) -> int:
        """One past the last PFN of the range holding ``pfn`` (``pfn`` must be a member)."""
        i = bisect.bisect_right(self._bases, pfn) - 1
        return self.ranges[i][0] + self.ranges[i][1]

    def covers(self, base: int, count: int) -> bool:
        i = bisect.bisect_right(self._bases, base) - 1
        return i >= 0 and base + count <= self.ranges[i][0] + self.ranges[i][1]


class PhysicalMemory:
    """Machine RAM: the runs, the pages that may hold kernel data, and written pages.

    ``usable`` = runs minus omit_pages: the allocator only hands out pages that every
    dump type stores, so the same scenario has the same memory in every dump type.
    """

    def __init__(self, runs: list[Range], omit: list[Range]) -> None:
        self.runs = [(int(b), int(c)) for b, c in runs]
        self.run_set = RangeSet(self.runs)
        self.usable = RangeSet(subtract_ranges(self.runs, omit))
        self.pages: dict[int, bytearray] = {}
        self.used: set[int] = set()
        self._cursors: dict[int, int] = {}
        self._run_cursors: dict[int, int] = {}

    @property
    def max_pfn(self) -> int:
        b, c = self.runs[-1]
        return b + c - 1

    # ------------------------------------------------------------- allocation
    def alloc(self, hint: int = 0x100) -> int:
        """One free usable page at or after ``hint`` (allocations with the same hint
        continue where the previous one stopped)."""
        pfn = self._cursors.get(hint, hint)
        wrapped = False
        while True:
            nxt = self.usable.next_at_or_after(pfn)
            if nxt is None:
                if wrapped or not self.usable.ranges:
                    raise MemoryError("forge: out of physical pages (make the runs larger)")
                wrapped = True  # the hint lies above all usable memory: take the lowest
                nxt = self.usable.ranges[0][0]
            pfn = nxt
            if pfn not in self.used:
                break
            pfn += 1
        self.used.add(pfn)
        self._cursors[hint] = pfn + 1
        return pfn

    def alloc_contiguous(
        self, count: int, align: int = 1, hint: int = 0x100, prefer: int | None = None
    ) -> int:
        """``count`` free usable pages in a row, the first a multiple of ``align``."""
        if prefer is not None and prefer % align == 0 and self._free_block(prefer, count):
            base = prefer
        else:
            base = (hint + align - 1) // align * align
            wrapped = False
            while not self._free_block(base, count):
                nxt = self.usable.next_at_or_after(base + 1)
                if nxt is None:
                    if wrapped:
                        raise MemoryError(f"forge: no {count} contiguous free pages")
                    wrapped = True
                    nxt = 0
                base = (nxt + align - 1) // align * align
        self.used.update(range(base, base + count))
        return base

    def alloc_run(self, count: int, hint: int) -> int:
        """``count`` free usable pages in a row, first fit from where the previous run with
        the same ``hint`` ended (fast for many large runs: skips past conflicts)."""
        start = self._run_cursors.get(hint, hint)
        base = start
        wrapped = False
        while True:
            nxt = self.usable.next_at_or_after(base)
            if nxt is None or (wrapped and nxt >= start):
                if wrapped or not self.usable.ranges:
                    raise MemoryError(f"forge: no {count} contiguous free pages")
                wrapped = True
                base = self.usable.ranges[0][0]
                continue
            base = nxt
            end = self.usable.end_of(base)
            if base + count > end:
                base = end
                continue
            clash = next((p for p in range(base + count - 1, base - 1, -1) if p in self.used), None)
            if clash is None:
                break
            base = clash + 1
        self.used.update(range(base, base + count))
        self._run_cursors[hint] = base + count
        return base

    def _free_block(self, base: int, count: int) -> bool:
        if not self.usable.covers(base, count):
            return False
        return not any(p in self.used for p in range(base, base + count))

    # ------------------------------------------------------------ page content
    def page(self, pfn: int) -> bytearray:
        pg = self.pages.get(pfn)
        if pg is None:
            if pfn not in self.usable:
                raise ValueError(f"forge: writing to PFN {pfn:#x}, which no dump stores")
            pg = self.pages[pfn] = bytearray(PAGE_SIZE)
        return pg

    def write(self, pa: int, data: bytes) -> None:
        pos = 0
        while pos < len(data):
            pfn, off = divmod(pa + pos, PAGE_SIZE)
            n = min(PAGE_SIZE - off, len(data) - pos)
            self.page(pfn)[off : off + n] = data[pos : pos + n]
            pos += n

    def read(self, pa: int, size: int) -> bytes:
        out = bytearray()
        while len(out) < size:
            pfn, off = divmod(pa + len(out), PAGE_SIZE)
            n = min(PAGE_SIZE - off, size - len(out))
            pg = self.pages.get(pfn)
            out += pg[off : off + n] if pg is not None else bytes(n)
        return bytes(out)
