"""Scenarios: what a forged dump should contain.

A ``Scenario`` is a dataclass whose JSON form uses the field names as keys. Every field
is optional; ``None`` means "derive a realistic default from the build" (see
``Scenario.resolved``). Wherever an int is expected a string such as ``"0xD1"`` is
accepted.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .layout import parse_int

DUMP_TYPES: dict[str, int] = {
    "full": 1,
    "triage": 4,
    "kernel_bitmap": 5,
    "complete_bitmap": 5,
    "live_kernel_bitmap": 6,
    "kernel_memory": 8,
    "complete_memory": 0xA,
    "dump32": 1,
}
"""Scenario ``dump_type`` name -> DUMP_HEADER64.DumpType value."""

BITMAP_TYPES = frozenset({"kernel_bitmap", "complete_bitmap", "live_kernel_bitmap"})
RDMP_TYPES = frozenset({"kernel_memory", "complete_memory"})
HEADER_ONLY_TYPES = frozenset({"triage", "dump32"})
FILLS = frozenset({"zero", "pattern"})
KDBG_MODES = frozenset({"plain", "encoded", "no_pointer"})

WIN7_CUTOFF = 9200  # builds below this are Win7-like (no KDBG encoding, Win7 address map)
VISTA_BUILD_LABS = {
    6000: "6000.16386.amd64fre.vista_rtm.061101-2205",
    6001: "6001.18000.amd64fre.longhorn_rtm.080118-1840",
    6002: "6002.18005.amd64fre.lh_sp2rtm.090410-1830",
}
"""NtBuildLab of the Vista releases (the Vergilius header names: 6000.16386, 6001.18000,
6002.18005); the dates are synthetic."""
WIN10_BUILD_LABS = {
    17763: "17763.1.amd64fre.rs5_release.180914-1434",
    18362: "18362.1.amd64fre.19h1_release.190318-1202",
    18363: "18362.1.amd64fre.19h1_release.190318-1202",  # 1909: enablement package on 18362
    19041: "19041.1.amd64fre.vb_release.191206-1406",
    19045: "19041.1.amd64fre.vb_release.191206-1406",  # 22H2 is an enablement package on 19041
    22000: "22000.1.amd64fre.co_release.210604-1628",
    22621: "22621.1.amd64fre.ni_release.220506-1250",
    22631: "22621.1.amd64fre.ni_release.220506-1250",  # 23H2: enablement package on 22621
    26100: "26100.1.amd64fre.ge_release.240331-1435",
}
"""NtBuildLab of the RTM kernels (the enablement-package releases keep their base's lab)."""


@dataclass
class BugCheck:
    code: int = 0xD1
    params: list[int] | None = None
    """Four parameters; ``None`` derives DRIVER_IRQL_NOT_LESS_OR_EQUAL-like values
    pointing into myfault.sys (or nt) from the layout."""


@dataclass
class StringSpec:
    text: str
    offset: int | None = None
    """Offset from the image base; ``None`` = packed into the image's data section."""


@dataclass
class TagSiteSpec:
    """A pool tag as the immediate of an ``ExAllocatePoolWithTag`` call in the image's code:
    ``mov ecx, pool_type; mov edx, size; mov r8d, tag; call [rip+import]`` (the tag bytes are
    ``41 B8 <tag>``, e.g. ``41 B8 4C 65 61 6B`` for "Leak")."""

    tag: str
    offset: int | None = None
    """Offset of the 4 tag bytes from the image base (the snippet starts 12 bytes before);
    ``None`` = packed into the image's .text."""
    size: int = 0
    """The NumberOfBytes immediate."""
    pool_type: int = 0
    """The POOL_TYPE immediate (0 NonPagedPool, 1 PagedPool)."""


@dataclass
class ModuleSpec:
    name: str
    path: str | None = None
    """FullDllName; ``None`` derives ``\\SystemRoot\\system32\\drivers\\<name>``."""
    size: int = 0x10000
    strings: list[StringSpec] = field(default_factory=list)
    tag_sites: list[TagSiteSpec] = field(default_factory=list)
    """Pool tags referenced by the image's code (what ``!for_each_module s -a`` finds)."""


POOL_NAMES = ("nonpaged", "paged", "session_nonpaged", "session_paged")


@dataclass
class PoolTagSpec:
    """Small allocations of one tag in one pool (blocks of the 4 KiB pool pages)."""

    tag: str
    """1 to 4 printable ASCII characters, padded with spaces ("Irp" = "Irp ")."""
    pool: str = "nonpaged"
    """One of ``POOL_NAMES``. Session blocks live in session pool pages and are not counted
    by the global tracker table: session pool has its own table (the profile's
    ``pool.session``), which counts them and their ``frees``."""
    count: int = 0
    """Outstanding (allocated) blocks."""
    size: int | list[int] = 0x40
    """Request size in bytes (the block is round_up(size, 16) + the 16-byte header); a list
    is cycled over the blocks. A request above the profile's big_pool_threshold is a
    big-pool allocation instead."""
    frees: int | None = None
    """Frees in the tracker (Allocs = count + frees); ``None`` derives a deterministic
    number from the tag. ``count`` 0 with frees > 0 gives a tag that only has frees."""
    protected: bool = False
    """Store the tag with the protected bit (bit 31) in the headers (Win7 object tags)."""


@dataclass
class BigPoolSpec:
    """Big-pool allocations (page-aligned, no POOL_HEADER, listed in the big-page table)."""

    tag: str
    pool: str = "nonpaged"
    """"nonpaged" or "paged" (session big pages have their own table and are not forged)."""
    count: int = 1
    bytes: int = 0x2000
    """NumberOfBytes of each; rounded up to whole pages (the forge writes and tracks the
    rounded value)."""


@dataclass
class CorruptPagesSpec:
    """Pages in the nonpaged pool region whose first header is a plausible allocated header
    (PreviousSize 0, plausible tag) but whose chain is not valid."""

    broken_chain: int = 0
    """A valid-looking chain with one PreviousSize mismatch."""
    garbage_header: int = 0
    """One plausible header, then random bytes."""
    half_page: int = 0
    """A valid chain over the first half (128 units), garbage after it."""


@dataclass
class PoolSpec:
    """The pool of the forged machine beyond what the kernel structures themselves use (the
    forge always allocates module-list entries (MmLd), the physical memory block (MmPh),
    PRCBs (Pcr ) and the two pool tables (Pool))."""

    tags: list[PoolTagSpec] = field(default_factory=list)
    big: list[BigPoolSpec] = field(default_factory=list)
    freed_big: list[BigPoolSpec] = field(default_factory=list)
    """Freed big allocations: big-page entries with the free bit (Va | 1), tag kept; each
    counts as one Alloc and one Free in the tracker."""
    free_blocks: int = 0
    """Free blocks interleaved between allocations (PoolType 0, stale tag or 0); the
    remainders at page ends are free blocks too, on top of these."""
    corrupt_pages: CorruptPagesSpec = field(default_factory=CorruptPagesSpec)
    tracker_entries: int = 0x401
    """PoolTrackTableSize: a power of two plus one (the last entry is the overflow bucket)."""
    big_table_entries: int = 0x800
    """PoolBigPageTableSize: a power of two."""
    scale: int = 1
    """Multiplies every ``tags[].count`` and ``tags[].frees`` (for benchmark dumps)."""


VERIFIER_POOLS = ("nonpaged", "paged")


@dataclass
class VerifierAllocSpec:
    """Outstanding (tracked) allocations of one verified driver from one call site."""

    tag: str = "Leak"
    bytes: int = 0x100
    """The requested size. The tracker records the charged size (spec 5.3): the pool block
    size minus its header for small blocks, ``round4(bytes) + 8`` for big (page-aligned)
    ones."""
    pool: str = "nonpaged"
    """"nonpaged" or "paged"."""
    count: int = 1
    site: int = 0x1100
    """Offset of the 6-byte ``call [rip+x]`` in the driver image: the tracker's
    CallingAddress (the return address) is ``base + site + 6``."""
    stack: list[int | str] = field(default_factory=list)
    """The allocation stack as logged (innermost first, at most 13 frames): ints are VAs,
    strings ``"module+0xoff"``, ``"nt+0xoff"`` or ``"nt!Symbol+0xoff"`` (forge nt symbols).
    Empty = a default stack: nt!VeAllocatePoolWithTagPriority, nt!VerifierExAllocatePool-
    WithTag, the caller, an outer driver frame (caller + 0xCC), then (even allocation index)
    nt!IopXxxControlFile, nt!NtDeviceIoControlFile, nt!KiSystemServiceCopyEnd, or (odd) a
    work routine (caller + 0x1A0) and nt!IopProcessWorkItem, nt!ExpWorkerThread,
    nt!PspSystemThreadStartup, nt!KiStartSystemThread. Free stacks: nt!ExFreePoolWithTag,
    nt!VerifierExFreePoolWithTag, caller + 0x40, then the allocation stack's frames after
    the caller."""


@dataclass
class VerifierDriverSpec:
    """A driver on the verifier's list (VfSuspectDriversList)."""

    name: str
    loaded: bool = True
    """Loaded drivers are in the module list (added with a default image when missing) and
    have a node in ViTargetDriversAvl with VF_TARGET_VERIFIED_DRIVER_DATA; unloaded ones only
    a suspect entry (their past frames point into an unmapped image range)."""
    loads: int | None = None
    """None = 1."""
    unloads: int | None = None
    """None = loads - 1 when loaded, loads when not (a loaded driver needs loads > unloads,
    an unloaded one loads == unloads)."""
    allocations: list[VerifierAllocSpec] = field(default_factory=list)
    freed: int = 0
    """Allocations made and freed (cycling over ``allocations``, or small nonpaged ones when
    there are none): each is an allocate and a free trace in the pool log, a free tracker
    entry (unless reused) and an Alloc + Free in the pool tracker table."""
    size: int | None = None
    """SizeOfImage of an unloaded driver (default 0x8000) or of a loaded one the forge adds
    to the module list; ignored for modules the scenario lists."""


@dataclass
class PoolLogSpec:
    """VfPoolTraces: the pool allocate/free log (VF_POOL_TRACE entries)."""

    length: int = 0x10000
    """VfPoolTracesLength, a power of two."""
    entries_written: int | None = None
    """VfPoolTracesIndex (the free-running counter). None = exactly the allocate and free
    events of the verified drivers; more adds older allocate/free pairs of those drivers
    before them (> length wraps the log)."""


@dataclass
class ApcDisabledSpec:
    module: str
    """A loaded module (added to the module list when missing)."""
    count: int = 1
    """IRP-log entries (among the valid ones) with SpecialApcDisable -1 whose first non-nt
    frame is in ``module``."""


@dataclass
class IrpLogSpec:
    """IovIrpTraces: the IRP log (IOV_IRP_TRACE entries)."""

    length: int = 0x100
    """IovIrpTracesLength, a power of two."""
    entries_written: int | None = None
    """IovIrpTracesIndex; None = length + length // 2 (wrapped)."""
    apc_disabled: list[ApcDisabledSpec] = field(default_factory=list)


@dataclass
class VerifierSpec:
    """Driver Verifier state (shared/specs/verifier.md). ``None`` in the scenario = verifier
    not enabled: MmVerifierData (the KDBG target) is all zero and nothing else is written."""

    level: int = 0x8
    """MmVerifierData.Level (the ``verifier /flags`` value)."""
    drivers: list[VerifierDriverSpec] = field(default_factory=list)
    pool_log: PoolLogSpec | None = None
    """None = no pool log (VfPoolTraces NULL)."""
    irp_log: IrpLogSpec | None = None
    """None = no IRP log (IovIrpTraces NULL)."""
    avl_tables: int | None = None
    """ViTargetDriversAvl.TablesNo; None = 1 for builds below 9200, else 2."""
    stats: dict[str, int] = field(default_factory=dict)
    """Overrides of MmVerifierData counters by profile field name (not Level and not the
    Current/Peak allocation and byte figures, which follow from the tracked allocations)."""


@dataclass
class Scenario:
    """What to forge. ``None`` fields are filled by ``resolved()`` from the build."""

    name: str = "custom"
    dump_type: str = "full"
    build: int = 7601
    major_version: int = 0xF
    processors: int = 2
    bugcheck: BugCheck = field(default_factory=BugCheck)
    system_time: str = "2020-01-15T10:42:17Z"
    uptime_s: float = 5025.5
    comment: str = ""
    product_type: int = 1
    suite_mask: int | None = None
    runs: list[list[int]] | None = None
    """[[base_pfn, page_count], ...] sorted and non-overlapping; ``None`` = PC-like
    runs summing to ``ram_mib``."""
    ram_mib: int = 96
    omit_pages: list[list[int]] = field(default_factory=list)
    """[[base_pfn, count], ...] not stored by bitmap/RDMP dumps (ignored by full dumps;
    the memory layout never places kernel data there, whatever the dump type)."""
    fill: str = "zero"
    kdbg: str = "plain"
    """How the KDBG is stored: "plain", "encoded" (Windows 8+ KdpDataBlockEncoded form) or
    "no_pointer" (= "plain" with ``kdbg_pointer`` false, kept for old scenarios)."""
    kdbg_pointer: bool = True
    """Write the block's VA into the header's KdDebuggerDataBlock; false writes 0 (a reader
    must find nt and KdCopyDataBlock's reference to the block). Works with both forms."""
    modules: list[ModuleSpec] | None = None
    """Loaded modules after ntoskrnl.exe (an entry named ntoskrnl.exe overrides nt's
    size and strings). ``None`` = a default driver set including myfault.sys."""
    kernel_base: int | None = None
    kernel_size: int | None = None
    drivers_base: int | None = None
    pool_base: int | None = None
    """VA mapped by 1 GiB page(s) onto physical address 0 (nonpaged-pool-like)."""
    self_map_index: int | None = None
    seed: int = 0
    build_lab: str | None = None
    attributes: int | None = None
    boot_id: int = 0
    kd_secondary_version: int = 0
    special_pool_tag: int = 0
    kernel_verifier: int = 0
    pat_large_page: bool = False
    """Add a 2 MiB mapping whose PDE has the PAT bit (12) set: hardware and elf2dmp
    ignore bit 12 for the address, kdmp-parser 0.7.4 adds it (spec section 5)."""
    pool: PoolSpec | None = None
    """Background pool (see ``PoolSpec``); ``None`` = only the kernel's own allocations.
    JSON form::

        {"tags": [{"tag": "Thre", "pool": "nonpaged", "count": 96, "size": 1264,
                   "frees": 2310, "protected": true}],
         "big": [{"tag": "Leak", "pool": "nonpaged", "count": 601, "bytes": 1024000}],
         "freed_big": [{"tag": "EtwB", "count": 2, "bytes": 65536}],
         "free_blocks": 60,
         "corrupt_pages": {"broken_chain": 2, "garbage_header": 2, "half_page": 2},
         "tracker_entries": 1025, "big_table_entries": 2048, "scale": 1}
    """
    nonpaged_pool_pages: int | None = None
    """MmAllocatedNonPagedPool (pages); ``None`` = the nonpaged pool pages the forge wrote
    (small-block pages, corrupt pages, big allocations). Must not be below that count."""
    nonpaged_pool_max_pages: int | None = None
    """MmMaximumNonPagedPoolInBytes / 4096; ``None`` = 3/4 of RAM (at least the usage)."""
    verifier: VerifierSpec | None = None
    """Driver Verifier state (see ``VerifierSpec``); ``None`` = not enabled. JSON form::

        {"level": 8,
         "drivers": [{"name": "myfault.sys", "loaded": true, "loads": 1, "unloads": 0,
                      "allocations": [{"tag": "Leak", "bytes": "0xFB000", "pool": "nonpaged",
                                       "count": 10, "site": "0x162E", "stack": []}],
                      "freed": 3},
                     {"name": "oldfilt.sys", "loaded": false, "loads": 2, "unloads": 2,
                      "freed": 4}],
         "pool_log": {"length": "0x400", "entries_written": 7221},
         "irp_log": {"length": "0x100", "entries_written": 935,
                     "apc_disabled": [{"module": "fltdemo.sys", "count": 5}]},
         "avl_tables": null, "stats": {"RaiseIrqls": 1234}}
    """

    # ------------------------------------------------------------------ parsing
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Scenario:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown scenario keys: {', '.join(unknown)}")
        kw: dict[str, Any] = {}
        for key, value in data.items():
            kw[key] = _convert(key, value)
        sc = cls(**kw)
        sc.validate()
        return sc

    @classmethod
    def from_json(cls, path: str | Path) -> Scenario:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    @classmethod
    def coerce(cls, value: Scenario | dict[str, Any] | str | Path) -> Scenario:
        """A Scenario from a Scenario, a dict, a JSON path or a builtin name."""
        if isinstance(value, Scenario):
            sc = copy.deepcopy(value)
            sc.validate()
            return sc
        if isinstance(value, dict):
            return cls.from_dict(value)
        if isinstance(value, str) and value in BUILTINS and not Path(value).exists():
            return builtin(value)
        return cls.from_json(value)

    def replace(self, **overrides: Any) -> Scenario:
        """A copy with fields replaced; values are converted like JSON values."""
        data = self.to_dict()
        data.update(overrides)
        return Scenario.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        if self.dump_type not in DUMP_TYPES:
            raise ValueError(f"dump_type {self.dump_type!r} not in {sorted(DUMP_TYPES)}")
        if self.fill not in FILLS:
            raise ValueError(f"fill {self.fill!r} not in {sorted(FILLS)}")
        if self.kdbg not in KDBG_MODES:
            raise ValueError(f"kdbg {self.kdbg!r} not in {sorted(KDBG_MODES)}")
        if not 1 <= self.processors <= 64:
            raise ValueError("processors must be 1..64")
        if self.bugcheck.params is not None and len(self.bugcheck.params) != 4:
            raise ValueError("bugcheck.params needs exactly 4 values")
        if self.runs is not None:
            check_ranges(self.runs, "runs")
            if not self.runs:
                raise ValueError("runs must not be empty")
        check_ranges(self.omit_pages, "omit_pages")
        if self.kernel_base is not None and self.kernel_base & 0x1FFFFF:
            raise ValueError("kernel_base must be 2 MiB aligned (nt is mapped by 2 MiB pages)")
        if self.pool_base is not None and self.pool_base & 0x3FFFFFFF:
            raise ValueError("pool_base must be 1 GiB aligned (mapped by 1 GiB pages)")
        if len(self.comment.encode("ascii", "replace")) > 127:
            raise ValueError("comment is limited to 127 ASCII characters")
        for m in self.modules or []:
            for site in m.tag_sites:
                check_tag(site.tag, f"module {m.name} tag site")
        if self.pool is not None:
            check_pool(self.pool)
        if self.verifier is not None:
            check_verifier(self.verifier)
        for key in ("nonpaged_pool_pages", "nonpaged_pool_max_pages"):
            v = getattr(self, key)
            if v is not None and v < 0:
                raise ValueError(f"{key} must be >= 0")

    # --------------------------------------------------------------- defaults
    @property
    def win7_like(self) -> bool:
        return self.build < WIN7_CUTOFF

    def resolved(self) -> Scenario:
        """A copy with every ``None`` replaced by the build's default."""
        sc = copy.deepcopy(self)
        w7 = sc.win7_like
        if sc.runs is None:
            sc.runs = default_runs(sc.ram_mib)
        if sc.kernel_base is None:
            sc.kernel_base = 0xFFFFF80002A00000 if w7 else 0xFFFFF80576C00000
        if sc.kernel_size is None:
            sc.kernel_size = 0x3F6000 if w7 else 0xA4F000
        if sc.drivers_base is None:
            sc.drivers_base = 0xFFFFF88000E00000 if w7 else sc.kernel_base + 0x03000000
        if sc.pool_base is None:
            sc.pool_base = 0xFFFFFA8040000000 if w7 else 0xFFFFB30000000000
        if sc.self_map_index is None:
            sc.self_map_index = 0x1ED if w7 else 0x12B
        if sc.suite_mask is None:
            sc.suite_mask = 0x110  # VER_SUITE_TERMINAL | VER_SUITE_SINGLEUSERTS (workstation)
        if sc.build_lab is None:
            sc.build_lab = (
                VISTA_BUILD_LABS.get(sc.build, "6002.18005.amd64fre.lh_sp2rtm.090410-1830")
                if sc.build < 7600
                else "7601.24545.amd64fre.win7sp1_ldr_escrow.200102-1707"
                if w7
                else WIN10_BUILD_LABS.get(sc.build, f"{sc.build}.1.amd64fre.unknown_release")
            )
        if sc.attributes is None:
            sc.attributes = 0x10 if sc.dump_type == "live_kernel_bitmap" else 0
        if sc.modules is None:
            sc.modules = default_modules()
        if sc.pool is None:
            sc.pool = PoolSpec()
        if sc.verifier is not None:
            _verifier_modules(sc.modules, sc.verifier)
        return sc


def check_ranges(ranges: list[list[int]], what: str) -> None:
    prev_end = -1
    for r in ranges:
        if len(r) != 2:
            raise ValueError(f"{what}: each entry is [base_pfn, count], got {r!r}")
        base, count = r
        if base < 0 or count <= 0:
            raise ValueError(f"{what}: bad range {r!r}")
        if base < prev_end:
            raise ValueError(f"{what}: ranges must be sorted and non-overlapping ({r!r})")
        prev_end = base + count


def check_tag(tag: str, what: str) -> None:
    """A tag is 1..4 printable ASCII characters, the first not a space."""
    if not 1 <= len(tag) <= 4 or not all(0x20 <= ord(c) < 0x7F for c in tag) or tag[0] == " ":
        raise ValueError(f"{what}: tag {tag!r} must be 1..4 printable ASCII characters")


def tag_bytes(tag: str) -> bytes:
    """The 4 bytes of a tag, first character first, padded with spaces."""
    return tag.ljust(4).encode("ascii")


def check_pool(p: PoolSpec) -> None:
    n = p.tracker_entries - 1
    if n < 2 or n & (n - 1):
        raise ValueError("pool.tracker_entries must be a power of two plus one (e.g. 0x401)")
    m = p.big_table_entries
    if m < 2 or m & (m - 1):
        raise ValueError("pool.big_table_entries must be a power of two (e.g. 0x800)")
    if p.free_blocks < 0 or p.scale < 1:
        raise ValueError("pool.free_blocks must be >= 0 and pool.scale >= 1")
    for t in p.tags:
        check_tag(t.tag, "pool.tags")
        if t.pool not in POOL_NAMES:
            raise ValueError(f"pool.tags {t.tag!r}: pool {t.pool!r} not in {POOL_NAMES}")
        sizes = t.size if isinstance(t.size, list) else [t.size]
        if t.count < 0 or (t.frees is not None and t.frees < 0) or not sizes:
            raise ValueError(f"pool.tags {t.tag!r}: count/frees must be >= 0, size given")
        if any(s < 0 for s in sizes):
            raise ValueError(f"pool.tags {t.tag!r}: sizes must be >= 0")
    for what, entries in (("big", p.big), ("freed_big", p.freed_big)):
        for b in entries:
            check_tag(b.tag, f"pool.{what}")
            if b.pool not in ("nonpaged", "paged"):
                raise ValueError(f"pool.{what} {b.tag!r}: pool must be nonpaged or paged")
            if b.count < 0 or b.bytes <= 0:
                raise ValueError(f"pool.{what} {b.tag!r}: count >= 0 and bytes > 0 required")
    c = p.corrupt_pages
    if min(c.broken_chain, c.garbage_header, c.half_page) < 0:
        raise ValueError("pool.corrupt_pages counts must be >= 0")


VERIFIER_TAGS = ("VfSD", "VfAT", "VfVD", "Vepp", "VfPT", "VfIT")
"""Pool tags of the verifier's own allocations (spec 4.2, 5.2, 6.2, 7.1); the forge adds
them as tag sites to nt's image when a scenario enables the verifier."""
DERIVED_STATS = frozenset(
    {"Level", "CurrentPagedPoolAllocations", "CurrentNonPagedPoolAllocations",
     "PeakPagedPoolAllocations", "PeakNonPagedPoolAllocations", "PagedBytes",
     "NonPagedBytes", "PeakPagedBytes", "PeakNonPagedBytes"}
)  # fmt: skip
NT_NAMES = frozenset({"nt", "ntoskrnl", "ntoskrnl.exe"})


def _pow2(n: int) -> bool:
    return n >= 2 and not n & (n - 1)


def check_frame(frame: int | str, what: str) -> None:
    """A stack frame: a non-zero VA, or ``module[+off]`` / ``nt!Symbol[+off]``."""
    if isinstance(frame, int) and not isinstance(frame, bool):
        if not 0 < frame < 1 << 64:
            raise ValueError(f"{what}: frame {frame!r} must be a non-zero 64-bit VA")
        return
    if not isinstance(frame, str) or not frame.strip():
        raise ValueError(f"{what}: frame {frame!r} must be an int or 'module+0xoff'")
    head, _, off = frame.partition("+")
    if not head.strip():
        raise ValueError(f"{what}: frame {frame!r} has no module")
    if off:
        try:
            parse_int(off)
        except ValueError:
            raise ValueError(f"{what}: frame {frame!r}: bad offset") from None


def verifier_unloads(d: VerifierDriverSpec) -> tuple[int, int]:
    """(Loads, Unloads) of a driver with the defaults applied."""
    loads = 1 if d.loads is None else d.loads
    if d.unloads is not None:
        return loads, d.unloads
    return loads, (loads - 1 if d.loaded else loads)


def check_verifier(v: VerifierSpec) -> None:
    if not 0 <= v.level < 1 << 32:
        raise ValueError("verifier.level must be a 32-bit value")
    seen: set[str] = set()
    for d in v.drivers:
        what = f"verifier driver {d.name!r}"
        key = d.name.lower()
        if not d.name or key in NT_NAMES or key in seen:
            raise ValueError(f"{what}: names must be non-empty, unique and not nt")
        seen.add(key)
        loads, unloads = verifier_unloads(d)
        if min(loads, unloads, d.freed) < 0 or loads >= 1 << 32 or unloads >= 1 << 32:
            raise ValueError(f"{what}: loads, unloads and freed must be >= 0")
        if d.loaded and loads <= unloads:
            raise ValueError(f"{what}: a loaded driver needs loads > unloads")
        if not d.loaded and loads != unloads:
            raise ValueError(f"{what}: an unloaded driver needs loads == unloads")
        if d.size is not None and d.size < 0x2000:
            raise ValueError(f"{what}: size must be at least 0x2000")
        for a in d.allocations:
            check_tag(a.tag, what)
            if a.pool not in VERIFIER_POOLS:
                raise ValueError(f"{what}: allocation pool {a.pool!r} not in {VERIFIER_POOLS}")
            if a.count < 0 or a.bytes <= 0 or a.bytes >= 1 << 40 or a.site < 0:
                raise ValueError(f"{what}: allocations need count >= 0, bytes > 0, site >= 0")
            if a.count and not d.loaded:
                raise ValueError(f"{what}: an unloaded driver has no outstanding allocations")
            if len(a.stack) > 64:
                raise ValueError(f"{what}: stack too long")
            for f in a.stack:
                check_frame(f, what)
    for name, log in (("pool_log", v.pool_log), ("irp_log", v.irp_log)):
        if log is None:
            continue
        if not _pow2(log.length) or log.length > 0x1000000:
            raise ValueError(f"verifier.{name}.length must be a power of two (2..0x1000000)")
        if log.entries_written is not None and not 0 <= log.entries_written < 1 << 32:
            raise ValueError(f"verifier.{name}.entries_written must be a 32-bit count")
    if v.irp_log is not None:
        for apc in v.irp_log.apc_disabled:
            if not apc.module or apc.module.lower() in NT_NAMES or apc.count < 0:
                raise ValueError("verifier.irp_log.apc_disabled: a non-nt module, count >= 0")
    if v.avl_tables is not None and not 1 <= v.avl_tables <= 64:
        raise ValueError("verifier.avl_tables must be 1..64")
    for k, val in v.stats.items():
        if k in DERIVED_STATS:
            raise ValueError(f"verifier.stats: {k} follows from the scenario, not an override")
        if not isinstance(val, int) or val < 0:
            raise ValueError(f"verifier.stats.{k} must be an int >= 0")


def _verifier_modules(modules: list[ModuleSpec], v: VerifierSpec) -> None:
    """Add what a verifier scenario needs to the module list: loaded verified drivers and
    apc_disabled modules that are missing (images with tag sites for their allocation tags),
    and the verifier's own tags as tag sites in nt's image."""
    names = {m.name.lower() for m in modules}
    for d in v.drivers:
        if d.name.lower() in names:
            if not d.loaded:
                raise ValueError(f"verifier driver {d.name!r} is unloaded but in the module list")
            continue
        if not d.loaded:
            continue
        sites = []
        done: set[tuple[str, str]] = set()
        for a in d.allocations:
            if (a.tag, a.pool) not in done:
                done.add((a.tag, a.pool))
                size = min(a.bytes, 0xFFFFFFFF)
                sites.append(TagSiteSpec(a.tag, None, size, 1 if a.pool == "paged" else 0))
        modules.append(ModuleSpec(d.name, None, d.size or 0x8000, tag_sites=sites))
        names.add(d.name.lower())
    for apc in v.irp_log.apc_disabled if v.irp_log else []:
        if apc.module.lower() not in names:
            modules.append(ModuleSpec(apc.module, None, 0x8000))
            names.add(apc.module.lower())
    nt = next((m for m in modules if m.name.lower() == "ntoskrnl.exe"), None)
    if nt is None:
        nt = ModuleSpec("ntoskrnl.exe")
        modules.insert(0, nt)
    have = {s.tag.ljust(4) for s in nt.tag_sites}
    for tag in VERIFIER_TAGS:
        if tag not in have:
            nt.tag_sites.append(TagSiteSpec(tag, None, 0x1000 if tag == "Vepp" else 0x100))


def default_runs(ram_mib: int) -> list[list[int]]:
    """PC-like runs: a low run below 640 KiB, then two runs separated by a hole."""
    total = ram_mib * 256
    if total < 0x2000:
        raise ValueError("ram_mib must be at least 32")
    rest = total - 0x9E
    c2 = min((rest * 2 // 3) // 0x100 * 0x100 - 0x100, 0xBFE00)
    end2 = 0x100 + c2
    base3 = 0x100000 if end2 >= 0xBFE00 else (end2 // 0x1000 + 1) * 0x1000
    return [[0x1, 0x9E], [0x100, c2], [base3, rest - c2]]


def default_modules() -> list[ModuleSpec]:
    """nt's tag sites, then a Win7-like driver set; every default pool tag is referenced by
    the code of the module that allocates it (myfault.sys: "Leak" at +0x1634 and +0x16A0)."""
    s32 = "\\SystemRoot\\system32\\"
    drv = "\\SystemRoot\\system32\\drivers\\"
    T = TagSiteSpec
    nt_sites = [
        T("Thre", None, 0x4F0), T("Thre", None, 0x4F0), T("Proc", None, 0x530),
        T("Pool", None, 0xB000), T("EtwB", None, 0x10000), T("EtwB", None, 0x1B0),
        T("MmSt", None, 0x170, 1), T("File", None, 0x140), T("Irp ", None, 0x3A0),
        T("Irp ", None, 0x1F0), T("Even", None, 0x70), T("CM31", None, 0x1F0, 1),
        T("MmLd", None, 0x100), T("MmPh", None, 0x40), T("Pcr ", None, 0x4E80),
        T("MmRe", None, 0x200, 1), T("Toke", None, 0x3A0, 1), T("ObNm", None, 0x50, 1),
    ]  # fmt: skip
    return [
        ModuleSpec("ntoskrnl.exe", None, 0x10000, tag_sites=nt_sites),
        ModuleSpec("hal.dll", s32 + "hal.dll", 0x49000),
        ModuleSpec("kdcom.dll", s32 + "kdcom.dll", 0xA000),
        ModuleSpec("PSHED.dll", s32 + "PSHED.dll", 0x14000),
        ModuleSpec("CLFS.SYS", s32 + "CLFS.SYS", 0x5E000),
        ModuleSpec("CI.dll", s32 + "CI.dll", 0xC0000),
        ModuleSpec("ACPI.sys", drv + "ACPI.sys", 0x57000),
        ModuleSpec(
            "Ntfs.sys",
            drv + "Ntfs.sys",
            0x1A3000,
            tag_sites=[T("NtFs", None, 0xC0, 1), T("NtFs", None, 0x100), T("NtFs", None, 0xC0, 1)],
        ),
        ModuleSpec("netvsc.sys", drv + "netvsc.sys", 0x20000, tag_sites=[T("netv", None, 0x160)]),
        ModuleSpec(
            "nvlddmkm.sys", drv + "nvlddmkm.sys", 0x80000, tag_sites=[T("nVsC", None, 0x60)]
        ),
        ModuleSpec(
            "win32k.sys",
            s32 + "win32k.sys",
            0x40000,
            tag_sites=[
                T("Gla5", None, 0x80, 0x21),
                T("Usqm", None, 0x1E0, 0x21),
                T("Ustx", None, 0x40, 0x20),
            ],
        ),  # fmt: skip
        ModuleSpec(
            "myfault.sys",
            "\\??\\C:\\Windows\\system32\\drivers\\myfault.sys",
            0x7000,
            tag_sites=[T("Leak", 0x1634, 0xFA000), T("Leak", 0x16A0, 0xFA000)],
        ),
    ]


def _convert(key: str, value: Any) -> Any:
    int_keys = {
        "build",
        "major_version",
        "processors",
        "product_type",
        "suite_mask",
        "ram_mib",
        "kernel_base",
        "kernel_size",
        "drivers_base",
        "pool_base",
        "self_map_index",
        "seed",
        "attributes",
        "boot_id",
        "kd_secondary_version",
        "kernel_verifier",
        "nonpaged_pool_pages",
        "nonpaged_pool_max_pages",
    }
    if value is None:
        return None
    if key in int_keys:
        return parse_int(value)
    if key == "uptime_s":
        if isinstance(value, str) and value.strip().lower().startswith("0x"):
            return float(int(value, 16))
        return float(value)
    if key == "special_pool_tag":
        if isinstance(value, str) and not value.lower().startswith("0x") and len(value) <= 4:
            return int.from_bytes(value.ljust(4).encode("ascii"), "little")
        return parse_int(value)
    if key in ("runs", "omit_pages"):
        return [[parse_int(a), parse_int(b)] for a, b in value]
    if key == "bugcheck":
        if isinstance(value, BugCheck):
            return copy.deepcopy(value)
        params = value.get("params")
        return BugCheck(
            code=parse_int(value.get("code", 0xD1)),
            params=None if params is None else [parse_int(p) for p in params],
        )
    if key == "modules":
        return [_module(m) for m in value]
    if key in ("pat_large_page", "kdbg_pointer"):
        return _bool(value)
    if key == "pool":
        return _pool(value)
    if key == "verifier":
        return _verifier(value)
    return value


def _bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _keys(what: str, d: Any, allowed: set[str]) -> None:
    if not isinstance(d, dict):
        raise ValueError(f"{what}: expected an object, got {d!r}")
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise ValueError(f"unknown {what} keys: {', '.join(unknown)}")


def _big(what: str, b: Any) -> BigPoolSpec:
    if isinstance(b, BigPoolSpec):
        return copy.deepcopy(b)
    _keys(what, b, {"tag", "pool", "count", "bytes"})
    return BigPoolSpec(
        tag=b["tag"],
        pool=b.get("pool", "nonpaged"),
        count=parse_int(b.get("count", 1)),
        bytes=parse_int(b.get("bytes", 0x2000)),
    )


def _pool(v: Any) -> PoolSpec:
    if isinstance(v, PoolSpec):
        return copy.deepcopy(v)
    _keys(
        "pool",
        v,
        {"tags", "big", "freed_big", "free_blocks", "corrupt_pages", "tracker_entries",
         "big_table_entries", "scale"},
    )  # fmt: skip
    tags = []
    for t in v.get("tags", []):
        if isinstance(t, PoolTagSpec):
            tags.append(copy.deepcopy(t))
            continue
        _keys("pool.tags", t, {"tag", "pool", "count", "size", "frees", "protected"})
        size = t.get("size", 0x40)
        frees = t.get("frees")
        tags.append(
            PoolTagSpec(
                tag=t["tag"],
                pool=t.get("pool", "nonpaged"),
                count=parse_int(t.get("count", 0)),
                size=[parse_int(x) for x in size] if isinstance(size, list) else parse_int(size),
                frees=None if frees is None else parse_int(frees),
                protected=_bool(t.get("protected", False)),
            )
        )
    cp = v.get("corrupt_pages", {})
    if isinstance(cp, CorruptPagesSpec):
        corrupt = copy.deepcopy(cp)
    else:
        _keys("pool.corrupt_pages", cp, {"broken_chain", "garbage_header", "half_page"})
        corrupt = CorruptPagesSpec(**{k: parse_int(x) for k, x in cp.items()})
    return PoolSpec(
        tags=tags,
        big=[_big("pool.big", b) for b in v.get("big", [])],
        freed_big=[_big("pool.freed_big", b) for b in v.get("freed_big", [])],
        free_blocks=parse_int(v.get("free_blocks", 0)),
        corrupt_pages=corrupt,
        tracker_entries=parse_int(v.get("tracker_entries", 0x401)),
        big_table_entries=parse_int(v.get("big_table_entries", 0x800)),
        scale=parse_int(v.get("scale", 1)),
    )


def _alloc(a: Any) -> VerifierAllocSpec:
    if isinstance(a, VerifierAllocSpec):
        return copy.deepcopy(a)
    _keys("verifier allocation", a, {"tag", "bytes", "pool", "count", "site", "stack"})
    stack = a.get("stack", [])
    if not isinstance(stack, list):
        raise ValueError("verifier allocation stack must be a list")
    return VerifierAllocSpec(
        tag=a.get("tag", "Leak"),
        bytes=parse_int(a.get("bytes", 0x100)),
        pool=a.get("pool", "nonpaged"),
        count=parse_int(a.get("count", 1)),
        site=parse_int(a.get("site", 0x1100)),
        stack=[f if isinstance(f, int) and not isinstance(f, bool) else str(f) for f in stack],
    )


def _opt_int(v: Any) -> int | None:
    return None if v is None else parse_int(v)


def _verifier(v: Any) -> VerifierSpec:
    if isinstance(v, VerifierSpec):
        return copy.deepcopy(v)
    _keys("verifier", v, {"level", "drivers", "pool_log", "irp_log", "avl_tables", "stats"})
    drivers = []
    for d in v.get("drivers", []):
        if isinstance(d, VerifierDriverSpec):
            drivers.append(copy.deepcopy(d))
            continue
        _keys(
            "verifier driver", d,
            {"name", "loaded", "loads", "unloads", "allocations", "freed", "size"},
        )  # fmt: skip
        drivers.append(
            VerifierDriverSpec(
                name=str(d["name"]),
                loaded=_bool(d.get("loaded", True)),
                loads=_opt_int(d.get("loads")),
                unloads=_opt_int(d.get("unloads")),
                allocations=[_alloc(a) for a in d.get("allocations", [])],
                freed=parse_int(d.get("freed", 0)),
                size=_opt_int(d.get("size")),
            )
        )
    pool_log = v.get("pool_log")
    if pool_log is not None and not isinstance(pool_log, PoolLogSpec):
        _keys("verifier.pool_log", pool_log, {"length", "entries_written"})
        pool_log = PoolLogSpec(
            length=parse_int(pool_log.get("length", 0x10000)),
            entries_written=_opt_int(pool_log.get("entries_written")),
        )
    irp_log = v.get("irp_log")
    if irp_log is not None and not isinstance(irp_log, IrpLogSpec):
        _keys("verifier.irp_log", irp_log, {"length", "entries_written", "apc_disabled"})
        apc = []
        for a in irp_log.get("apc_disabled", []):
            _keys("verifier.irp_log.apc_disabled", a, {"module", "count"})
            apc.append(ApcDisabledSpec(str(a["module"]), parse_int(a.get("count", 1))))
        irp_log = IrpLogSpec(
            length=parse_int(irp_log.get("length", 0x100)),
            entries_written=_opt_int(irp_log.get("entries_written")),
            apc_disabled=apc,
        )
    stats = v.get("stats", {})
    if not isinstance(stats, dict):
        raise ValueError("verifier.stats must be an object")
    return VerifierSpec(
        level=parse_int(v.get("level", 0x8)),
        drivers=drivers,
        pool_log=copy.deepcopy(pool_log),
        irp_log=copy.deepcopy(irp_log),
        avl_tables=_opt_int(v.get("avl_tables")),
        stats={str(k): parse_int(x) for k, x in stats.items()},
    )


def _module(m: Any) -> ModuleSpec:
    if isinstance(m, ModuleSpec):
        return copy.deepcopy(m)
    unknown = set(m) - {"name", "path", "size", "strings", "tag_sites"}
    if unknown:
        raise ValueError(f"unknown module keys: {sorted(unknown)}")
    sites = []
    for t in m.get("tag_sites", []):
        if isinstance(t, TagSiteSpec):
            sites.append(copy.deepcopy(t))
        elif isinstance(t, str):
            sites.append(TagSiteSpec(t))
        else:
            _keys("module tag_sites", t, {"tag", "offset", "size", "pool_type"})
            off = t.get("offset")
            sites.append(
                TagSiteSpec(
                    tag=t["tag"],
                    offset=None if off is None else parse_int(off),
                    size=parse_int(t.get("size", 0)),
                    pool_type=parse_int(t.get("pool_type", 0)),
                )
            )
    strings = []
    for s in m.get("strings", []):
        if isinstance(s, StringSpec):
            strings.append(copy.deepcopy(s))
        elif isinstance(s, str):
            strings.append(StringSpec(s))
        else:
            off = s.get("offset")
            strings.append(StringSpec(s["text"], None if off is None else parse_int(off)))
    return ModuleSpec(
        name=m["name"],
        path=m.get("path"),
        size=parse_int(m.get("size", 0x10000)),
        strings=strings,
        tag_sites=sites,
    )


# --------------------------------------------------------------------- builtins
_WIN7_OMIT = [[0x4800, 0x200], [0x5400, 0x80], [0x5FFF, 1]]
_WIN10_OMIT = [[0x4A00, 0x300], [0x7000, 0x100]]


def _t(
    tag: str, pool: str, count: int, size: int, frees: int, prot: bool = False
) -> dict[str, Any]:
    return {"tag": tag, "pool": pool, "count": count, "size": size, "frees": frees,
            "protected": prot}  # fmt: skip


WIN7_BACKGROUND_POOL: dict[str, Any] = {
    "tags": [
        _t("Thre", "nonpaged", 96, 0x4F0, 2310, True),
        _t("Proc", "nonpaged", 28, 0x530, 61, True),
        _t("File", "nonpaged", 150, 0x140, 48211, True),
        _t("Even", "nonpaged", 200, 0x70, 91544, True),
        _t("Irp ", "nonpaged", 20, 0x3A0, 1203399),
        _t("Pool", "nonpaged", 6, 0x90, 3),
        _t("EtwB", "nonpaged", 12, 0x1B0, 40),
        _t("nVsC", "nonpaged", 40, 0x60, 1877),
        _t("netv", "nonpaged", 24, 0x160, 355),
        _t("NtFs", "nonpaged", 10, 0x100, 7040),
        _t("NtFs", "paged", 60, 0xC0, 25112),
        _t("MmSt", "paged", 120, 0x170, 10370),
        _t("CM31", "paged", 40, 0x1F0, 612),
        _t("Toke", "paged", 40, 0x3A0, 5125, True),
        _t("ObNm", "paged", 150, 0x50, 30877),
        _t("MmRe", "paged", 0, 0x200, 9),
        _t("Gla5", "session_paged", 30, 0x80, 1530),
        _t("Usqm", "session_paged", 12, 0x1E0, 212),
        _t("Ustx", "session_nonpaged", 6, 0x40, 47),
    ],
    "big": [
        {"tag": "EtwB", "pool": "nonpaged", "count": 3, "bytes": 0x10000},
        {"tag": "MmSt", "pool": "paged", "count": 1, "bytes": 0x6000},
        {"tag": "CM31", "pool": "paged", "count": 2, "bytes": 0x4000},
    ],
    "freed_big": [
        {"tag": "MmSt", "pool": "paged", "count": 4, "bytes": 0x3000},
        {"tag": "EtwB", "pool": "nonpaged", "count": 2, "bytes": 0x10000},
    ],
    "free_blocks": 60,
    "corrupt_pages": {"broken_chain": 2, "garbage_header": 2, "half_page": 2},
}
"""The demo's background pool: Win7 object tags carry the protected bit."""

BUILTINS: dict[str, dict[str, Any]] = {
    "win7sp1": {
        "name": "win7sp1",
        "dump_type": "full",
        "build": 7601,
        "processors": 2,
        "bugcheck": {"code": "0xD1"},
        "system_time": "2020-01-15T10:42:17Z",
        "uptime_s": 5025.5,
        "ram_mib": 96,
        "omit_pages": _WIN7_OMIT,
        "fill": "pattern",
        "kdbg": "plain",
        "seed": 7601,
        "pool": WIN7_BACKGROUND_POOL,
    },
    "win10-19045": {
        "name": "win10-19045",
        "dump_type": "kernel_bitmap",
        "build": 19045,
        "processors": 4,
        "bugcheck": {"code": "0xD1"},
        "system_time": "2023-06-02T08:15:00Z",
        "uptime_s": 86400.25,
        "ram_mib": 128,
        "omit_pages": _WIN10_OMIT,
        "fill": "pattern",
        "kdbg": "plain",
        "product_type": 1,
        "suite_mask": "0x110",
        "boot_id": 7,
        "kd_secondary_version": 2,
        "seed": 19045,
    },
}
WIN10_BACKGROUND_POOL: dict[str, Any] = dict(
    WIN7_BACKGROUND_POOL,
    tags=[dict(t, protected=False) for t in WIN7_BACKGROUND_POOL["tags"]],
)
"""The demo's background pool on Windows 8+: object tags without the protected bit."""
BUILTINS["win10-19045"]["pool"] = WIN10_BACKGROUND_POOL
BUILTINS["win10-18363"] = dict(
    BUILTINS["win10-19045"], name="win10-18363", build=18363,
    system_time="2020-09-14T16:48:05Z", seed=18363,
)  # fmt: skip
"""Windows 10 1909 (the win10-18362-x64 profile): the segment-heap pool of 19041 with 1903/1909's
_MM_SESSION_SPACE (expansion table at 0x4E8) and the same background pool as win10-19045."""
BUILTINS["win11-22631"] = dict(
    BUILTINS["win10-19045"], name="win11-22631", build=22631,
    system_time="2025-05-20T14:02:11Z", seed=22631,
)  # fmt: skip
BUILTINS["win11-26100"] = dict(
    BUILTINS["win10-19045"], name="win11-26100", build=26100,
    system_time="2026-03-10T09:30:00Z", seed=26100,
)  # fmt: skip
BUILTINS["win7sp1-bitmap"] = dict(BUILTINS["win7sp1"], name="win7sp1-bitmap")
BUILTINS["win7sp1-bitmap"]["dump_type"] = "kernel_bitmap"
BUILTINS["win10-19045-encoded"] = dict(
    BUILTINS["win10-19045"], name="win10-19045-encoded", kdbg="encoded"
)
BUILTINS["win7sp1-4g"] = dict(BUILTINS["win7sp1"], name="win7sp1-4g", ram_mib=4096)
BUILTINS["win7sp1-8g"] = dict(BUILTINS["win7sp1"], name="win7sp1-8g", ram_mib=8192)
BUILTINS["win7sp1-leak"] = dict(
    BUILTINS["win7sp1"],
    name="win7sp1-leak",
    ram_mib=1024,
    fill="zero",
    uptime_s=412877.0,
    nonpaged_pool_max_pages=152651,
    nonpaged_pool_pages=152178,
    pool=dict(
        WIN7_BACKGROUND_POOL,
        big=[
            *WIN7_BACKGROUND_POOL["big"],
            {"tag": "Leak", "pool": "nonpaged", "count": 601, "bytes": 1024000},
        ],
    ),
)
"""The NTDebugging "Troubleshooting Pool Leaks" case: myfault.sys leaks 601 nonpaged
big-pool allocations of 1,024,000 bytes (615,424,000 bytes) under tag "Leak"; nonpaged pool
usage 152178 of a 152651-page maximum."""
for _base in ("win10-19045", "win11-22631", "win11-26100"):
    BUILTINS[f"{_base}-leak"] = dict(
        BUILTINS["win7sp1-leak"],
        name=f"{_base}-leak",
        build=BUILTINS[_base]["build"],
        dump_type=BUILTINS[_base]["dump_type"],
        processors=BUILTINS[_base]["processors"],
        system_time=BUILTINS[_base]["system_time"],
        seed=BUILTINS[_base]["seed"] + 1,
        pool=dict(BUILTINS["win7sp1-leak"]["pool"], tags=WIN10_BACKGROUND_POOL["tags"]),
    )
"""The same leak on Windows 10 22H2, Windows 11 23H2 and 24H2 (segment-heap small pool, per-CPU
tag tables; on Windows 11 the big-page entries are 0x20 bytes)."""


VERIFIER_DEMO: dict[str, Any] = {
    "level": "0x8",
    "drivers": [
        {"name": "myfault.sys", "loaded": True, "loads": 1, "unloads": 0,
         "allocations": [{"tag": "Leak", "bytes": "0xFB000", "pool": "nonpaged", "count": 10,
                          "site": "0x162E"}],
         "freed": 3},
        {"name": "vrfdemo.sys", "loaded": True, "loads": 1, "unloads": 0,
         "allocations": [
             {"tag": "VDem", "bytes": "0x48", "pool": "paged", "count": 180, "site": "0x1240"},
             {"tag": "VDem", "bytes": "0x130", "pool": "paged", "count": 80, "site": "0x12C0"},
             {"tag": "VDnp", "bytes": "0x60", "pool": "nonpaged", "count": 6, "site": "0x1340"},
         ],
         "freed": 90},
        {"name": "fltdemo.sys", "loaded": True, "loads": 3, "unloads": 2,
         "allocations": [
             {"tag": "Fltd", "bytes": "0x2400", "pool": "nonpaged", "count": 2, "site": "0x1480"},
             {"tag": "Fltd", "bytes": "0xA0", "pool": "paged", "count": 12, "site": "0x1500"},
         ],
         "freed": 20},
        {"name": "oldfilt.sys", "loaded": False, "loads": 2, "unloads": 2, "freed": 6},
    ],
    "pool_log": {"length": "0x400", "entries_written": 7221},
    "irp_log": {"length": "0x100", "entries_written": 935,
                "apc_disabled": [{"module": "fltdemo.sys", "count": 5}]},
}  # fmt: skip
"""The Driver Verifier demo (NTDebugging / Microsoft docs 0xC4 leak debugging): myfault.sys
verified with flags 0x8 leaks ten nonpaged 0xFB000-byte "Leak" allocations from
myfault+0x1634; vrfdemo.sys holds 266 small allocations (three tracker pages) with 90 frees
interleaved; fltdemo.sys (loaded a third time) holds two big and twelve small ones and is the
driver whose IRP-log entries have SpecialApcDisable set (the NTDebugging "Another Who Done It"
pattern); oldfilt.sys was loaded and unloaded twice."""

BUILTINS["win7sp1-verifier"] = dict(
    BUILTINS["win7sp1"],
    name="win7sp1-verifier",
    bugcheck={"code": "0xC4"},
    seed=76010,
    verifier=VERIFIER_DEMO,
)
"""Bug check 0xC4 / 0x62 (parameters derived: the driver's name, its verified data, its
outstanding allocations)."""
BUILTINS["win10-19045-verifier"] = dict(
    BUILTINS["win10-19045"],
    name="win10-19045-verifier",
    bugcheck={"code": "0xC4"},
    seed=190450,
    verifier=dict(VERIFIER_DEMO, pool_log={"length": "0x10000", "entries_written": 0x10000 + 7221}),
)
"""The verifier demo on the 19041 layout (two AVL tables, a 0x10000-entry pool log as
Win10 enforces, background pool without protected tags)."""
BUILTINS["win10-18363-verifier"] = dict(
    BUILTINS["win10-19045-verifier"],
    name="win10-18363-verifier",
    build=18363,
    system_time=BUILTINS["win10-18363"]["system_time"],
    seed=183630,
)
"""The verifier demo on 1909 (win10-18362-x64 profile: the 17134-18362 layout,
VF_TARGET_VERIFIED_DRIVER_DATA of 0x120 bytes with its counters from 0x60)."""
VERIFIER_DEMO_WIN11: dict[str, Any] = dict(
    VERIFIER_DEMO,
    drivers=[
        *VERIFIER_DEMO["drivers"],
        {"name": "deepstk.sys", "loaded": True, "loads": 1, "unloads": 0, "freed": 2,
         "allocations": [{
             "tag": "Deep", "bytes": "0x90", "pool": "nonpaged", "count": 3, "site": "0x1100",
             "stack": [
                 "nt!VeAllocatePoolWithTagPriority+0x2cb", "nt!VerifierExAllocatePoolWithTag+0x1d",
                 *[f"deepstk.sys+{0x1106 + 0x40 * k:#x}" for k in range(24)],
                 "nt!IopXxxControlFile+0x607", "nt!NtDeviceIoControlFile+0x56",
                 "nt!KiSystemServiceCopyEnd+0x13",
             ],
         }]},
    ],
    pool_log={"length": "0x10000", "entries_written": 0x10000 + 7221},
)  # fmt: skip
"""The verifier demo on Windows 11, plus deepstk.sys whose allocations come through 24 of its
own frames (29 in all): deeper than the 13 frames a pre-22000 VF_POOL_TRACE holds, within the
50 of a 0x1A8-byte one."""
BUILTINS["win11-22631-verifier"] = dict(
    BUILTINS["win11-22631"],
    name="win11-22631-verifier",
    bugcheck={"code": "0xC4"},
    seed=226310,
    verifier=VERIFIER_DEMO_WIN11,
)
"""The verifier demo on the 22000-22631 layout (win11-22621-x64 profile): MmVerifierData with
AllocationFreed, VF_TARGET_VERIFIED_DRIVER_DATA counters from 0x70, 0x1A8-byte pool-log entries
with 50 frames (a 0x10000-entry log, the default below 4 GiB of RAM)."""
BUILTINS["win11-26100-verifier"] = dict(
    BUILTINS["win11-26100"],
    name="win11-26100-verifier",
    bugcheck={"code": "0xC4"},
    seed=261000,
    verifier=VERIFIER_DEMO_WIN11,
)
"""The verifier demo on the 26100 layout (win11-26100-x64 profile): VF_SUSPECT_DRIVER_ENTRY with
FullName (BaseName at 0x28), a 0x20-byte VF_AVL_TREE, VF_TARGET_DRIVER.VerifiedData at 0x40, a
0x98-byte MmVerifierData, 50-frame pool-log entries tagged ViIn."""


BUILTINS["vista-sp2"] = dict(
    BUILTINS["win7sp1"],
    name="vista-sp2",
    build=6002,
    system_time="2010-03-09T16:20:31Z",
    seed=6002,
)
"""Windows Vista SP2 x64 (the vista-x64 profile: KDBG of 0x328 bytes, legacy pool as on
Win7), with the Win7 demo's background pool."""
BUILTINS["vista-sp2-verifier"] = dict(
    BUILTINS["vista-sp2"],
    name="vista-sp2-verifier",
    bugcheck={"code": "0xC4"},
    seed=60020,
    verifier=dict(VERIFIER_DEMO, irp_log=None),
)
"""The verifier demo on Vista SP2: the drivers are MI_VERIFIER_DRIVER_ENTRYs on
MiSuspectDriverList (spec 4.1) owning their tracker pages; myfault.sys leaks ten nonpaged
0xFB000-byte "Leak" allocations from myfault+0x1634, vrfdemo.sys has three tracker pages with
free entries, oldfilt.sys is unloaded, the 0x400-entry pool log is wrapped. No IRP log
(IOV_IRP_TRACE has no Vista type)."""


def builtin(name: str) -> Scenario:
    """A built-in scenario: ``win7sp1`` (the demo, with a background pool),
    ``win7sp1-bitmap``, ``win7sp1-leak`` (1 GiB, sparse: the "Leak" pool leak),
    ``win10-19045``, ``win10-18363``, ``win10-19045-encoded``, ``win7sp1-4g`` and
    ``win7sp1-8g`` (pattern-filled full dumps for benchmarks), ``win7sp1-verifier``,
    ``win10-18363-verifier`` and ``win10-19045-verifier``
    (Driver Verifier state: see ``VERIFIER_DEMO``), ``vista-sp2`` and ``vista-sp2-verifier``
    (build 6002, the vista-x64 profile; the verifier demo on MiSuspectDriverList)."""
    try:
        data = BUILTINS[name]
    except KeyError:
        raise KeyError(f"no builtin scenario {name!r}; known: {sorted(BUILTINS)}") from None
    return Scenario.from_dict(copy.deepcopy(data))
