"""Fast page writer and the fill of pages that hold no kernel data.

Pages are written in big buffers (``CHUNK_PAGES`` pages per ``os.pwrite``). With fill
"zero" only the pages that hold data are written and the file is made whole with
``ftruncate``, so zero areas stay sparse. With fill "pattern" every other page is a
16-byte PFN stamp followed by one of 16 seed-derived templates whose bytes are all
>= 0x80, so no run of four printable ASCII bytes (a pool tag, "KDBG", a module string)
can appear by accident. The stamp's first 8 bytes are ``pfn << 8 | 0xF5``: its first byte
is never 0, so no fill page starts like a pool page (PreviousSize 0).
"""

from __future__ import annotations

import bisect
import os
import random
import struct
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from .layout import PAGE_SIZE

CHUNK_PAGES = 2048  # 8 MiB per write
_STAMP = struct.Struct("<QQ")
_GOLDEN = 0x9E3779B97F4A7C15
_M64 = (1 << 64) - 1
_HIGH = 0x8080808080808080
STAMP_LOW = 0xF5


class PageFill:
    """What a page that holds no kernel data contains."""

    def __init__(self, mode: str, seed: int) -> None:
        self.mode = mode
        rng = random.Random(seed ^ 0x46494C4C)  # "FILL"
        self.templates = [
            bytes(b | 0x80 for b in rng.randbytes(PAGE_SIZE - _STAMP.size)) for _ in range(16)
        ]
        self._zero = bytes(PAGE_SIZE)

    @staticmethod
    def stamp(pfn: int) -> bytes:
        return _STAMP.pack((pfn << 8) | STAMP_LOW, ((pfn * _GOLDEN) & _M64) | _HIGH)

    def page(self, pfn: int) -> bytes:
        if self.mode == "zero":
            return self._zero
        return self.stamp(pfn) + self.templates[pfn & 15]


class Placement:
    """Where each stored PFN sits in the file: ranges stored back to back from
    ``first_page``, in list order."""

    def __init__(self, ranges: list[tuple[int, int]], first_page: int) -> None:
        self.ranges = ranges
        self.first_page = first_page
        self.starts: list[int] = []  # file offset of each range
        self._order = sorted(range(len(ranges)), key=lambda i: ranges[i][0])
        self._bases = [ranges[i][0] for i in self._order]
        off = first_page
        for _, count in ranges:
            self.starts.append(off)
            off += count * PAGE_SIZE
        self.end = off

    def offset(self, pfn: int) -> int | None:
        k = bisect.bisect_right(self._bases, pfn) - 1
        if k < 0:
            return None
        i = self._order[k]
        base, count = self.ranges[i]
        if pfn >= base + count:
            return None
        return self.starts[i] + (pfn - base) * PAGE_SIZE


def write_dump(
    path: str | Path,
    prefix: bytes,
    placement: Placement,
    content: dict[int, bytes | bytearray],
    fill: PageFill,
) -> int:
    """Write ``prefix`` (headers, up to ``placement.first_page``) then every page.
    Returns the file size."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags, 0o644)
    try:
        _pwrite_all(fd, prefix, 0)
        if fill.mode == "zero":
            for pfn in sorted(content):
                off = placement.offset(pfn)
                if off is not None:
                    _pwrite_all(fd, bytes(content[pfn]), off)
        else:
            # build the next chunk while a worker thread writes the previous one
            # (os.pwrite releases the GIL); at most two chunks are in flight
            with ThreadPoolExecutor(max_workers=1) as pool:
                pending: list[Future[None]] = []
                for (base, count), start in zip(placement.ranges, placement.starts, strict=True):
                    for s in range(0, count, CHUNK_PAGES):
                        n = min(CHUNK_PAGES, count - s)
                        chunk = _pattern_chunk(base + s, n, content, fill)
                        if len(pending) >= 2:
                            pending.pop(0).result()
                        pending.append(pool.submit(_pwrite_all, fd, chunk, start + s * PAGE_SIZE))
                for f in pending:
                    f.result()
        size = max(placement.end, len(prefix))
        os.ftruncate(fd, size)
    finally:
        os.close(fd)
    return size


def _pattern_chunk(
    first: int, n: int, content: dict[int, bytes | bytearray], fill: PageFill
) -> bytes:
    parts: list[bytes | bytearray] = []
    append = parts.append
    get = content.get
    templates = fill.templates
    pack = _STAMP.pack
    for pfn in range(first, first + n):
        page = get(pfn)
        if page is not None:
            append(page)
        else:
            append(pack((pfn << 8) | STAMP_LOW, ((pfn * _GOLDEN) & _M64) | _HIGH))
            append(templates[pfn & 15])
    return b"".join(parts)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


def bitmap_bytes(ranges: Iterable[tuple[int, int]], bits: int) -> bytes:
    """Bitmap of ``bits`` bits (LSB first) with the PFNs of ``ranges`` set."""
    bm = bytearray(bits // 8)
    for base, count in ranges:
        end = base + count
        p = base
        while p < end and p % 8:
            bm[p >> 3] |= 1 << (p & 7)
            p += 1
        full_end = end - end % 8
        if p < full_end:
            bm[p >> 3 : full_end >> 3] = b"\xff" * ((full_end - p) >> 3)
            p = full_end
        while p < end:
            bm[p >> 3] |= 1 << (p & 7)
            p += 1
    return bytes(bm)
