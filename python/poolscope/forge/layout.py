"""Build profiles (structure layouts as data) and small integer helpers.

The profiles are the JSON files of ``rust/core/profiles``, embedded in the extension: the
forge reads the same offsets as the Rust reader, so a layout offset appears once, in a profile.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from poolscope import _native

PAGE_SIZE = 0x1000


def parse_int(value: Any) -> int:
    """An int from an int or a string such as ``"0x18"``, ``"7601"`` or ``"0b101"``.

    Booleans are refused: ``True`` is almost always a mistake in a scenario.
    """
    if isinstance(value, bool):
        raise TypeError(f"expected an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        return int(value.strip().replace("_", ""), 0)
    raise TypeError(f"expected an integer or an integer string, got {value!r}")


@lru_cache(maxsize=1)
def _builtin() -> dict[str, str]:
    """Profile name -> JSON text, as embedded in the extension (the reader's own copy)."""
    return {json.loads(text)["name"]: text for _file, text in _native.builtin_profiles()}


def load_profile(build: int) -> dict[str, Any]:
    """The profile for an NT build number, as the parsed JSON dict (a fresh copy).

    The choice is the reader's (``poolscope._native.profile_for_build``): the family whose
    range holds ``build``, else the nearest older family. The forge refuses (``LookupError``)
    a build older than every family, rather than writing a layout no profile describes.
    """
    build = parse_int(build)
    name, _why = _native.profile_for_build(build)
    prof: dict[str, Any] = json.loads(_builtin()[name])
    if build < parse_int(prof["builds"]["min"]):
        raise LookupError(f"no build profile covers build {build} or an older family")
    return prof


def kdbg_size(profile: dict[str, Any]) -> int:
    return parse_int(profile["kdbg"]["size"])


def kdbg_fields(profile: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """KDBG fields of a profile, sorted by offset; each spec has ``offset`` as an int."""
    out = []
    for name, spec in profile["kdbg"]["fields"].items():
        s = dict(spec)
        s["offset"] = parse_int(spec["offset"])
        if "width" in s:
            s["width"] = parse_int(s["width"])
        out.append((name, s))
    out.sort(key=lambda item: item[1]["offset"])
    return out


def ldr_offsets(profile: dict[str, Any]) -> dict[str, int]:
    return {k: parse_int(v) for k, v in profile["ldr_data_table_entry"].items()}
