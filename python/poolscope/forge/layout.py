"""Build profiles (structure layouts as data) and small integer helpers.

The profiles are the JSON files of ``rust/core/profiles``: the forge reads the same
offsets as the Rust reader, so a layout offset appears once, in a profile.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

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


def _profile_dirs() -> list[Path]:
    """Where profiles are looked for, in order: the source tree, then package data."""
    dirs: list[Path] = []
    here = Path(__file__).resolve()
    if len(here.parents) > 3:
        dirs.append(here.parents[3] / "rust" / "core" / "profiles")
    try:
        pkg = resources.files("poolscope") / "profiles"
        dirs.append(Path(str(pkg)))
    except (ModuleNotFoundError, TypeError):  # pragma: no cover - package not importable
        pass
    dirs.append(here.parents[1] / "profiles")
    return dirs


@lru_cache(maxsize=1)
def _all_profiles() -> tuple[tuple[Path, str], ...]:
    for d in _profile_dirs():
        files = sorted(d.glob("*.json")) if d.is_dir() else []
        if files:
            return tuple((f, f.read_text(encoding="utf-8")) for f in files)
    searched = ", ".join(str(d) for d in _profile_dirs())
    raise FileNotFoundError(f"no build profiles found (searched {searched})")


def profile_paths() -> list[Path]:
    """The profile JSON files that ``load_profile`` chooses from."""
    return [p for p, _ in _all_profiles()]


def load_profile(build: int) -> dict[str, Any]:
    """The profile for an NT build number, as the parsed JSON dict (a fresh copy).

    The profile whose ``builds.min <= build <= builds.max`` wins; otherwise the nearest
    older family (the one with the greatest ``builds.max`` below ``build``).
    Raises ``LookupError`` when no profile is as old as ``build``.
    """
    build = parse_int(build)
    candidates: list[tuple[int, int, dict[str, Any]]] = []
    for _path, text in _all_profiles():
        prof = json.loads(text)
        b = prof.get("builds", {})
        lo, hi = parse_int(b.get("min", 0)), parse_int(b.get("max", 0))
        if lo <= build <= hi:
            return prof
        candidates.append((lo, hi, prof))
    older = [c for c in candidates if c[1] < build]
    if not older:
        raise LookupError(f"no build profile covers build {build} or an older family")
    return max(older, key=lambda c: c[1])[2]


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
