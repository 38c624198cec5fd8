"""Editing a forged dump file in place, for tests that corrupt one structure."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def patch_va(path: Path, dump: Any, va: int, data: bytes, truth: Any) -> None:
    """Overwrite the bytes at kernel VA ``va`` in the dump file (same page)."""
    pa = dump.translate(va).pa
    off = truth.file_offset(pa >> 12) + (pa & 0xFFF)
    with open(path, "r+b") as f:
        f.seek(off)
        f.write(data)
