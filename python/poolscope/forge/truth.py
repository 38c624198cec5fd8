"""Ground truth: what the forge wrote, in a JSON-friendly form (ints stay ints)."""

from __future__ import annotations

import gc
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .layout import PAGE_SIZE
from .writer import PageFill, Placement


@dataclass
class GroundTruth:
    """What a forged dump holds. ``to_dict()`` gives the JSON form; ``page_bytes`` and
    ``present_pfns`` give the page contents without keeping them in that form."""

    path: str
    scenario: dict[str, Any]
    dump_type: str
    build: int
    file_size: int
    header: dict[str, Any]
    storage: dict[str, Any]
    runs: list[list[int]]
    present_ranges: list[list[int]]
    physical_pages: int
    kernel_base: int
    kdbg: dict[str, Any]
    modules: list[dict[str, Any]]
    translations: list[dict[str, Any]]
    system_time_iso: str
    uptime_s: float
    symbols: dict[str, int]
    processors: list[dict[str, int]]
    pool_allocations: list[dict[str, Any]]
    fill: str
    seed: int
    notes: list[str] = field(default_factory=list)
    pool: dict[str, Any] = field(default_factory=dict)
    """Pool ground truth (ints stay ints; tags are 4-character strings, protected bit
    cleared, trailing spaces kept, non-printable bytes as "?"; pool names "nonpaged",
    "paged", "session_nonpaged", "session_paged")::

        layout      profile pool.layout ("legacy" / "segment_heap": the forge writes
                    POOL_HEADER page chains on every build)
        tracker     {va, entries, rows: [{tag, nonpaged_allocs, nonpaged_frees,
                    nonpaged_bytes, paged_allocs, paged_frees, paged_bytes}] (one per
                    non-empty key, table order), slots: [table index of each row]}
        session_tracker  the session pool's tagging database (None when the build profile has
                    no pool.session): {va, entries (a power of two), table ("variable":
                    nt!ExpSessionPoolTrackTable holds va; "session_space":
                    _MM_SESSION_SPACE.PoolTags does), session_space (the _MM_SESSION_SPACE
                    VA), rows: [{tag, <the six counters>}] (the session table's keys in slot
                    order, then the expansion table's), slots: [slot or None for an
                    expansion row], tables: [{kind "session" / "session_expansion", va,
                    entries, rows: [{tag, slot, <counters>}]}], expansion: {va, entries} or
                    None, globals: {variable: VA} (also in ``symbols``)}
        blocks      [{pa, va, tag, size, previous_size, pool, allocated}] every block of
                    every valid pool page, PA order; sizes in bytes with the header; a
                    free block's pool is its page's pool
        scan        {pool_pages, rejected_pages, rejected: [{pfn, pa, va, kind, first_tag,
                    first_size}], rejected_free_first_pages, rejected_free_first: [{pfn,
                    pa, va}], tags: [{tag, pool, allocated, allocated_bytes, free,
                    free_bytes}]}
        bigpool     {va, entries, rows: [{va, tag, bytes, pool, free}] (every entry with
                    Key != 0, table order, va without the free bit), slots}
        owners      {tag: [{module, offsets}]} for every tag used or referenced by code
        memory      {MmNumberOfPhysicalPages, MmAvailablePages, MmResidentAvailablePages,
                    MmAllocatedNonPagedPool, MmMaximumNonPagedPoolInBytes,
                    MmPagedPoolCommit, MmSizeOfPagedPoolInBytes, MmTotalCommittedPages,
                    MmTotalCommitLimit, MmPeakCommitment}
        globals     {PoolTrackTable, PoolTrackTableSize, PoolBigPageTable,
                    PoolBigPageTableSize}: variable addresses
        protected_tags  tags stored with the protected bit in allocated headers
        pages       page counts: small_<pool>, corrupt, big_nonpaged, big_paged,
                    nonpaged_total, paged_total
    """
    verifier: dict[str, Any] | None = None
    """Driver Verifier ground truth, ``None`` when the scenario does not enable it (ints
    everywhere; tags are 4-character strings)::

        level           MmVerifierData.Level
        stats           {MmVerifierData field (profile name): value} for every profile field
        drivers         [{name, state ("loaded"/"unloaded"), loads, unloads, base, size (None
                        when unloaded), current_paged_allocs, current_nonpaged_allocs,
                        current_paged_bytes, current_nonpaged_bytes, peak_paged_allocs,
                        peak_nonpaged_allocs, peak_paged_bytes, peak_nonpaged_bytes}] in
                        VfSuspectDriversList order
        tracked         [{driver, va, bytes (charged = NumberOfBytes), tag, caller}] in walk
                        order: loaded drivers in list order, PoolPageHeaders from the head
                        (newest page), slots 1..127, free entries skipped
        tracker_pages   tracker pages of all drivers
        free_entries    free tracker entries (NumberOfBytes odd) of all drivers
        log             {va, length, index, entries: [{va, bytes, thread, stack}]} newest
                        first: min(index, length) entries from slot index & (length - 1)
                        backwards; stack = frames up to the first 0 (None: no pool log)
        irp_log         {va, length, index, entries: [{irp, thread, irql, kernel_apc_disable,
                        special_apc_disable (signed), stack}]} likewise, or None
        sites           [{driver, caller, outstanding_bytes, outstanding_allocs, stack}]: the
                        tracked blocks grouped by (driver, caller, allocation stack), ranked by
                        bytes then allocations; stack = the block's allocation trace if it is
                        still in the pool log (the newest entry with its address), else []
        layout          forge extras: symbols (variable VAs), suspect_entries, verified_data,
                        avl_nodes, avl_tables, tables_no, avl_table_of, tracker_page_vas
                        (newest first), unloaded_images ({name: {base, size}}: where an
                        unloaded driver's old frames point, unmapped), threads, irps
    """
    pdb: dict[str, Any] | None = None
    """The kernel's PDB identity as nt's RSDS record holds it: {name, guid (the 16 bytes as
    hex, in file order), age, debug_directory_va, rsds_va, sections [[name, rva, size,
    characteristics]]} (what ``forge.pdb`` needs to write the matching PDB)."""
    _content: dict[int, bytes] = field(default_factory=dict, repr=False)
    _fill: PageFill | None = field(default=None, repr=False)
    _placement: Placement | None = field(default=None, repr=False)

    # ----------------------------------------------------------------- export
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        enabled = gc.isenabled()
        gc.disable()  # a copy of many small objects: collections would only slow it down
        try:
            for name in self.__dataclass_fields__:
                if not name.startswith("_"):
                    out[name] = _plain(getattr(self, name))
        finally:
            if enabled:
                gc.enable()
        return out

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")

    # ------------------------------------------------------------------ pages
    def present_pfns(self) -> list[int]:
        """Sorted PFNs stored in the dump (see ``present_ranges`` for the compact form)."""
        out: list[int] = []
        for base, count in sorted(self.present_ranges):
            out.extend(range(base, base + count))
        return out

    def is_present(self, pfn: int) -> bool:
        return self._placement is not None and self._placement.offset(pfn) is not None

    def file_offset(self, pfn: int) -> int | None:
        """File offset of a stored PFN, or None."""
        return None if self._placement is None else self._placement.offset(pfn)

    def page_bytes(self, pfn: int) -> bytes:
        """The exact 4096 bytes written for ``pfn``. KeyError if the dump lacks it."""
        if not self.is_present(pfn):
            raise KeyError(f"PFN {pfn:#x} is not stored in this dump")
        page = self._content.get(pfn)
        if page is not None:
            return bytes(page)
        assert self._fill is not None
        return self._fill.page(pfn)

    def content_pfns(self) -> list[int]:
        """PFNs that hold kernel data (page tables, images, pool...), sorted."""
        return sorted(self._content)

    # ---------------------------------------------------------------- lookups
    def module(self, name: str) -> dict[str, Any]:
        for m in self.modules:
            if m["name"].lower() == name.lower():
                return m
        raise KeyError(name)

    @property
    def page_size(self) -> int:
        return PAGE_SIZE


def _plain(value: Any) -> Any:
    t = type(value)
    if t is int or t is str or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        if all(type(v) is int for v in value):  # stacks, slots...: copy without recursion
            return list(value)
        return [_plain(v) for v in value]
    return value
