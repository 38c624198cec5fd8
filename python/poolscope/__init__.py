"""poolscope: scan Windows x64 kernel crash dumps for pool usage, leaks and their owners.

The fast path is the Rust core (``poolscope._native``); this package is its surface: ``open()``,
the exception types, the CLI, the report schema and the dump forge.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from poolscope._native import (
    Bugcheck,
    Dump,
    DumpFormatError,
    Header,
    Kdbg,
    LimitExceeded,
    MemoryNotPresent,
    Module,
    PoolscopeError,
    Translation,
    UnsupportedDumpError,
)

__all__ = [
    "Bugcheck",
    "Dump",
    "DumpFormatError",
    "Header",
    "Kdbg",
    "LimitExceeded",
    "MemoryNotPresent",
    "Module",
    "PoolscopeError",
    "Translation",
    "UnsupportedDumpError",
    "open",
]

__version__ = "0.1.0"

#: Default ceiling on the decompressed size of a ``.zst`` dump (a decompression bomb is refused).
DEFAULT_MAX_DECOMPRESSED = 64 << 30


def open(  # noqa: A001 - mirrors builtins.open on purpose: poolscope.open(path)
    path: str | os.PathLike[str],
    *,
    max_decompressed: int = DEFAULT_MAX_DECOMPRESSED,
    spool_dir: str | os.PathLike[str] | None = None,
    profile: str | os.PathLike[str] | dict[str, Any] | None = None,
) -> Dump:
    """Open a kernel dump (``.dmp`` or zstd-compressed ``.dmp.zst``) for reading.

    ``profile`` overrides the built-in structure layout chosen from the dump's build: a dict or
    the path of a profile JSON file. Use the returned ``Dump`` as a context manager.
    """
    profile_json = None
    if isinstance(profile, dict):
        profile_json = json.dumps(profile)
    elif profile is not None:
        profile_json = Path(profile).read_text()
    return Dump(
        os.fspath(path),
        max_decompressed=max_decompressed,
        spool_dir=None if spool_dir is None else os.fspath(spool_dir),
        profile_json=profile_json,
    )
