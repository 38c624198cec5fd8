"""``poolscope.Dump``: the native dump with the pool analyses as typed Python results.

Every figure is computed in Rust; this layer only decodes the JSON and column bytes it returns.
"""

from __future__ import annotations

import json
from array import array
from dataclasses import dataclass
from typing import Any, Literal

from poolscope import _native

POOLS = ("nonpaged", "paged", "session_nonpaged", "session_paged")


@dataclass
class PoolBlocks:
    """Scanned pool blocks as columns (one array per field, same length)."""

    pa: array[int]
    va: array[int]  # 0 when no kernel mapping of the page was found
    tag: array[int]  # the tag as a little-endian u32 (protected bit cleared)
    size: array[int]  # bytes, header included
    previous_size: array[int]
    pool: bytes  # index into POOLS
    allocated: bytes  # 1 allocated, 0 free

    def __len__(self) -> int:
        return len(self.pa)

    def rows(self) -> list[dict[str, Any]]:
        """The blocks as dicts (for small results; use the columns for millions)."""
        return [
            {
                "pa": f"0x{self.pa[i]:x}",
                "va": f"0x{self.va[i]:x}" if self.va[i] else None,
                "tag": _native.tag_name(self.tag[i]),
                "size": self.size[i],
                "previous_size": self.previous_size[i],
                "pool": POOLS[self.pool[i]],
                "allocated": bool(self.allocated[i]),
            }
            for i in range(len(self))
        ]


def _array(code: str, raw: bytes) -> array[int]:
    a = array(code)
    a.frombytes(raw)
    return a


@dataclass
class PoolScanResult:
    summary: dict[str, Any]
    blocks: PoolBlocks | None


@dataclass
class TrackedAllocations:
    """Driver Verifier's tracked pool allocations as columns (``!verifier 3``)."""

    drivers: list[str]  # names; ``driver`` indexes into this list
    driver: array[int]
    va: array[int]
    bytes: array[int]  # charged bytes (request rounded to 4, plus the 8-byte verifier header)
    tag: array[int]
    caller: array[int]

    def __len__(self) -> int:
        return len(self.va)


@dataclass
class Verifier:
    """Driver Verifier state (``!verifier 3``, ``!verifier 80``, ``!verifier 100``)."""

    enabled: bool
    level: int
    options: list[str]
    stats: dict[str, int]
    drivers: list[dict[str, Any]]
    tracked: TrackedAllocations
    log: list[dict[str, Any]]  # pool allocate/free log, newest first
    irp_log: list[dict[str, Any]]
    sites: list[dict[str, Any]]  # allocation sites ranked by outstanding bytes
    sources: dict[str, str]
    document: dict[str, Any]  # the ``verifier`` section of the scan report


class Dump(_native.Dump):
    """An open kernel dump (see ``poolscope.open``)."""

    def poolused(
        self, sort: Literal["nonpaged", "paged", "allocs"] = "nonpaged", top: int | None = None
    ) -> list[dict[str, Any]]:
        """The tagging database per tag, sorted, as ``!poolused`` shows it."""
        return list(json.loads(self.poolused_json(sort, top))["rows"])

    def scan_pool(self, tags: list[str] | None = None, blocks: bool = False) -> PoolScanResult:
        """Scan every present page for pool blocks. Summaries per (tag, pool) always; the blocks
        themselves (of ``tags``, or all) as columns when ``blocks`` is true."""
        summary, cols = self.scan_pool_raw(tags, blocks)
        pb = None
        if cols is not None:
            pb = PoolBlocks(
                pa=_array("Q", cols["pa"]),
                va=_array("Q", cols["va"]),
                tag=_array("I", cols["tag"]),
                size=_array("I", cols["size"]),
                previous_size=_array("I", cols["previous_size"]),
                pool=cols["pool"],
                allocated=cols["allocated"],
            )
        return PoolScanResult(json.loads(summary), pb)

    def big_pool(self) -> list[dict[str, Any]]:
        """Big-pool table entries with a tag: ``{va, tag, bytes, pool, free}``."""
        return list(json.loads(self.big_pool_json()))

    def tag_owners(self, tag: str) -> list[dict[str, Any]]:
        """Modules whose image holds the tag's bytes: ``[{module, base, offsets}]``."""
        return list(json.loads(self.tag_owners_json([tag])).popitem()[1])

    def memory_summary(self) -> dict[str, Any]:
        """The ``!vm``-like summary from KDBG's variables."""
        return dict(json.loads(self.memory_summary_json()))

    def analyze(self, **options: Any) -> dict[str, Any]:
        """Every analysis in one pass (the report without its ``dump`` section)."""
        return dict(json.loads(self.analyze_json(**options)))

    def verifier(self, driver: str | None = None, address: int | None = None) -> Verifier:
        """Driver Verifier data; ``driver`` limits drivers and tracked allocations to one
        driver, ``address`` limits the logs to entries whose block contains it (or that IRP)."""
        doc = json.loads(self.verifier_json(driver, address))
        cols = self.verifier_tracked_raw(driver)
        tracked = TrackedAllocations(
            drivers=[d["name"] for d in doc.get("drivers", [])],
            driver=_array("I", cols["driver"]),
            va=_array("Q", cols["va"]),
            bytes=_array("Q", cols["bytes"]),
            tag=_array("I", cols["tag"]),
            caller=_array("Q", cols["caller"]),
        )
        return Verifier(
            enabled=bool(doc.get("enabled")),
            level=int(doc.get("level", 0)),
            options=list(doc.get("options", [])),
            stats=dict(doc.get("stats") or {}),
            drivers=list(doc.get("drivers", [])),
            tracked=tracked,
            log=list(doc.get("log", [])),
            irp_log=list(doc.get("irp_log", [])),
            sites=list(doc.get("sites", [])),
            sources=dict(doc.get("sources") or {}),
            document=doc,
        )

    def findings(self, **options: Any) -> list[dict[str, Any]]:
        return list(self.analyze(**options)["findings"])
