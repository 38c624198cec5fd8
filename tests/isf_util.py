"""A Volatility 3 ISF symbol table naming the forged kernel's globals (addresses relative to
the kernel base, as volatility3 stores them): how tests hand the reader the globals that KDBG
does not name."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def isf(path: Path, truth: dict[str, Any]) -> None:
    base = truth["kernel_base"]
    doc = {
        "metadata": {"format": "6.2.0"},
        "base_types": {},
        "user_types": {},
        "enums": {},
        "symbols": {n: {"address": va - base} for n, va in truth["symbols"].items()},
    }
    path.write_text(json.dumps(doc))
