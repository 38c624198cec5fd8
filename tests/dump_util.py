"""What the tests share about forged dumps: opening one with an ISF of its kernel, editing
one in place, and the figures compared with the ground truth, in one comparable form."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import poolscope
from isf_util import isf

POOL_COUNTERS = (
    "nonpaged_allocs",
    "nonpaged_frees",
    "nonpaged_bytes",
    "paged_allocs",
    "paged_frees",
    "paged_bytes",
)
"""The counters of a `!poolused` row."""
DRIVER_COUNTERS = (
    "current_paged_allocs",
    "current_nonpaged_allocs",
    "current_paged_bytes",
    "current_nonpaged_bytes",
    "peak_paged_allocs",
    "peak_nonpaged_allocs",
    "peak_paged_bytes",
    "peak_nonpaged_bytes",
)
"""The counters of a verified driver (`!verifier 3`)."""


def open_dump(path: Path, t: dict[str, Any], symbols: str | None, tmp_path: Path) -> Any:
    """The dump, with an ISF of the forged kernel when ``symbols`` is "isf"."""
    if symbols is None:
        return poolscope.open(path)
    f = tmp_path / "kernel.json"
    isf(f, t)
    return poolscope.open(path, symbols=f)


def patch_va(path: Path, dump: Any, va: int, data: bytes, truth: Any) -> None:
    """Overwrite the bytes at kernel VA ``va`` in the dump file (same page)."""
    pa = dump.translate(va).pa
    off = truth.file_offset(pa >> 12) + (pa & 0xFFF)
    with open(path, "r+b") as f:
        f.seek(off)
        f.write(data)


def copy_patched(src: Path, tmp_path: Path, truth: Any, edits: list[tuple[int, bytes]]) -> Path:
    """A copy of the dump with the bytes at each kernel VA replaced (same page)."""
    path = tmp_path / f"patched-{src.name}"
    path.write_bytes(src.read_bytes())
    with poolscope.open(src) as dump:
        for va, data in edits:
            patch_va(path, dump, va, data, truth)
    return path


def summed(rows: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Counters summed per tag modulo 2^64 (as the reader sums tables), rows with no bytes
    dropped: what !poolused shows."""
    acc: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(POOL_COUNTERS, 0))
    for r in rows:
        for c in POOL_COUNTERS:
            acc[r["tag"]][c] = (acc[r["tag"]][c] + r[c]) % (1 << 64)
    return {k: v for k, v in acc.items() if v["nonpaged_bytes"] or v["paged_bytes"]}


def poolused_rows(rows: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """The reader's !poolused rows, keyed by tag, counters only."""
    return {r["tag"]: {c: r[c] for c in POOL_COUNTERS} for r in rows}


def scanned_blocks(blocks: Any) -> list[tuple[Any, ...]]:
    """The pool scan's block rows as sorted tuples (VA 0 when no mapping was found)."""
    return sorted(
        (int(b["pa"], 16), int(b["va"], 16) if b["va"] else 0, b["tag"], b["size"],
         b["previous_size"], b["pool"], b["allocated"])
        for b in blocks.rows()
    )  # fmt: skip


def truth_blocks(t: dict[str, Any]) -> list[tuple[Any, ...]]:
    """The forge's pool blocks in the form of ``scanned_blocks``."""
    return sorted(
        (b["pa"], b["va"], b["tag"], b["size"], b["previous_size"], b["pool"], b["allocated"])
        for b in t["pool"]["blocks"]
    )


def by_tag(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-(tag, pool) scan summaries in a fixed order."""
    return sorted(rows, key=lambda r: (r["tag"], r["pool"]))
