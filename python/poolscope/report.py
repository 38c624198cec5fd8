"""The stable JSON shapes that poolscope prints and serves. Keys here are a contract: add, never
rename or remove. Addresses and bug check codes/parameters are ``"0x..."`` strings."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from poolscope._native import Dump

MACHINES = {0x8664: "x64", 0x14C: "x86", 0xAA64: "arm64"}
KDBG_KEYS = ("KdpDataBlockEncoded", "KiWaitNever", "KiWaitAlways")
"""Names of ``Kdbg.keys``: the VA of the flag, and the values of the two variables."""


def hex_(value: int | None) -> str | None:
    return None if value is None else f"0x{value:x}"


def iso_time(unix_seconds: float | None) -> str | None:
    if unix_seconds is None:
        return None
    return datetime.fromtimestamp(unix_seconds, UTC).isoformat().replace("+00:00", "Z")


def truncated_json(dump: Dump) -> dict[str, Any] | None:
    """``info --json``'s ``truncated``: null, or where a dump cut short ends and what it lacks."""
    t = dump.truncated
    if t is None:
        return None
    expected, actual, pages, missing = t
    return {
        "expected_size": expected,
        "actual_size": actual,
        "pages_expected": pages,
        "pages_missing": missing,
        "pages_present": pages - missing,
        "missing_share": round(missing / pages, 4) if pages else 0.0,
    }


def _unicode_string(dump: Dump, va: int) -> str | None:
    """The text of the UNICODE_STRING at ``va`` (Length, MaximumLength, Buffer), or None when
    it is not present or not plausible."""
    try:
        raw = bytes(dump.read_virtual(va, 16))
        length, maximum = int.from_bytes(raw[0:2], "little"), int.from_bytes(raw[2:4], "little")
        buffer = int.from_bytes(raw[8:16], "little")
        if not 0 < length <= maximum or length % 2 or length > 1024:
            return None
        text = bytes(dump.read_virtual(buffer, length)).decode("utf-16-le")
    except Exception:  # noqa: BLE001 - a parameter that is not a string is simply not shown
        return None
    return text if text.isprintable() else None


def _bugcheck_strings(dump: Dump, params: list[int], meanings: list[str]) -> list[str | None]:
    """For each parameter the documentation calls a name (a UNICODE_STRING pointer, e.g. 0xC4
    / 0x62's driver name), the string it points at; None for the others."""
    return [
        _unicode_string(dump, p) if p and "name" in m.lower() else None
        for p, m in zip(params, meanings, strict=False)
    ]


def info(dump: Dump) -> dict[str, Any]:
    """What ``poolscope info --json`` prints.

    Keys (stable): path, dump_type, build, machine, processors, bugcheck {code, name, params,
    meanings}, system_time (ISO 8601 UTC), uptime_s, file_size, physical_pages, kernel_base,
    modules (count); and, added: major_version, nt_build_lab, profile, kdbg {va, source, size,
    encoded, located_by, header_pointer, header_pointer_problem, nt_image {base, size,
    found_by}, kd_copy_data_block, keys {KdpDataBlockEncoded, KiWaitNever, KiWaitAlways}},
    symbols {pdb, guid, age, id, found_by, problem, used, file, lookup, lookup_problem},
    directory_table_base, comment, decompressed, notes; truncated (null, or {expected_size,
    actual_size, pages_expected, pages_missing, pages_present, missing_share} for a dump cut
    short: its missing pages read as not present).
    """
    h = dump.header
    kdbg = dump.kdbg
    return {
        "path": dump.path,
        "dump_type": dump.dump_type,
        "build": h.build,
        "machine": MACHINES.get(h.machine_image_type, hex_(h.machine_image_type)),
        "processors": h.number_processors,
        "bugcheck": {
            "code": hex_(h.bugcheck.code),
            "name": h.bugcheck.name,
            "params": [hex_(p) for p in h.bugcheck.params],
            "meanings": h.bugcheck.meanings,
            "strings": _bugcheck_strings(dump, h.bugcheck.params, h.bugcheck.meanings),
        },
        "system_time": iso_time(h.system_time_unix),
        "uptime_s": round(h.uptime_s, 3),
        "file_size": dump.file_size,
        "physical_pages": dump.physical_page_count,
        "kernel_base": hex_(dump.kernel_base),
        "modules": len(dump.modules()),
        "major_version": h.major_version,
        "nt_build_lab": kdbg.nt_build_lab if kdbg else None,
        "profile": dump.profile_name,
        "kdbg": None
        if kdbg is None
        else {
            "va": hex_(kdbg.va),
            "source": kdbg.source,
            "size": kdbg.size,
            "encoded": kdbg.encoded,
            "located_by": kdbg.located_by,
            "header_pointer": hex_(kdbg.header_pointer),
            "header_pointer_problem": kdbg.header_pointer_problem,
            "nt_image": None
            if kdbg.nt_image is None
            else {
                "base": hex_(kdbg.nt_image[0]),
                "size": kdbg.nt_image[1],
                "found_by": kdbg.nt_image[2],
            },
            "kd_copy_data_block": hex_(kdbg.kd_copy_data_block),
            "keys": None
            if kdbg.keys is None
            else {k: hex_(v) for k, v in zip(KDBG_KEYS, kdbg.keys, strict=True)},
        },
        "symbols": symbols_info(dump),
        "directory_table_base": hex_(h.directory_table_base),
        "comment": h.comment,
        "decompressed": dump.decompressed,
        "truncated": truncated_json(dump),
        "notes": dump.notes,
    }


def symbols_info(dump: Dump) -> dict[str, Any]:
    """``info --json``'s ``symbols``: the kernel's PDB as nt's RSDS record names it (pdb, guid,
    age, id = the symbol store's GUIDAGE directory, found_by; or problem: why not), what the
    analyses use (``used``: what ``sources`` says, e.g. ``pdb ntkrnlmp.pdb GUIDAGE`` or
    ``symbols kernel.json``; None = the profile), the PDB file (``file``) and the symbol path
    lookup (``lookup``: what each place answered, ``lookup_problem``)."""
    cv = dump.codeview
    look = getattr(dump, "symbols_lookup", None) or {}
    out: dict[str, Any] = {
        "pdb": None, "guid": None, "age": None, "id": None, "found_by": None,
        "problem": dump.codeview_problem,
    }  # fmt: skip
    if cv is not None:
        out.update(pdb=cv[0], guid=cv[1], age=cv[2], id=cv[3], found_by=cv[4])
    out.update(
        used=dump.symbols_source,
        file=look.get("file"),
        lookup=look.get("notes", []),
        lookup_problem=look.get("problem"),
    )
    return out


@dataclass
class Finding:
    kind: str
    severity: str  # info | low | medium | high
    summary: str
    evidence: dict[str, Any]


@dataclass
class Report:
    """Everything poolscope says about one dump. ``to_dict()`` is the ``scan --json`` document;
    its top-level keys are stable: dump, memory, poolused, pool_scan, bigpool, tag_owners,
    findings, sources (and, added: unavailable — each section that could not be computed, and
    why; verifier — Driver Verifier statistics, drivers, tracked allocations and logs;
    poolused_session — the session pool's tagging database, ``!poolused 8``, rows with the keys
    of ``poolused``; coverage — whether the dump is truncated and how many pages every section
    could not see)."""

    dump: dict[str, Any]
    memory: dict[str, Any] | None
    poolused: list[dict[str, Any]]
    pool_scan: dict[str, Any] | None
    bigpool: list[dict[str, Any]]
    tag_owners: dict[str, list[dict[str, Any]]]
    findings: list[Finding]
    sources: dict[str, str]
    unavailable: dict[str, str] = field(default_factory=dict)
    verifier: dict[str, Any] | None = None
    poolused_session: list[dict[str, Any]] = field(default_factory=list)
    coverage: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Report:
        data = dict(d)
        data["findings"] = [Finding(**f) for f in d.get("findings", [])]
        return cls(**data)


def build_report(
    dump: Dump,
    *,
    pooltag: str | os.PathLike[str] | None = None,
    top: int | None = None,
    owner_tags: int = 5,
    dominant_share: float = 0.5,
) -> Report:
    from poolscope.pooltag import TagTable

    raw = dump.analyze_json(top=top, owner_tags=owner_tags, dominant_share=dominant_share)
    doc = json.loads(raw)
    tags = TagTable.load(pooltag)
    for row in [*doc["poolused"], *doc.get("poolused_session", [])]:
        row["description"] = tags.describe(row["tag"])
    doc["dump"] = info(dump)
    return Report.from_dict(doc)
