"""Driver Verifier state in the forged kernel (shared/specs/verifier.md, sections 3-7, 10).

Every structure size and field offset comes from the build profile's ``verifier`` section
(the one the Rust reader uses). What the forge writes for a scenario ``verifier``:

* ``MmVerifierData`` (the struct KDBG.MmVerifierData points at): Level and every counter
  of the profile's ``mm_driver_verifier_data``; Current/Peak allocations and bytes follow
  from the tracked allocations (spec 3, 10);
* ``VfSuspectDriversList``: VF_SUSPECT_DRIVER_ENTRY blocks (tag VfSD, name inline after the
  structure, inserted at the tail; spec 4.2);
* ``ViTargetDriversAvl`` (VF_AVL_TREE) -> ``TablesNo`` VF_AVL_TABLEs whose
  BalancedRoot.RightChild is the root of a balanced binary search tree keyed by image base;
  nodes are VfAT blocks, RTL_BALANCED_LINKS at +0, VF_TARGET_DRIVER at +avl_node_links;
  table index = (base >> 12) % TablesNo (spec 4.2);
* per loaded driver a VF_TARGET_VERIFIED_DRIVER_DATA (VfVD) with the PoolPageHeaders and
  PoolTrackers SLISTs and counters, and 4 KiB tracker pages (big-pool pages tagged Vepp):
  slot 0 the VI_POOL_PAGE_HEADER, slots 1..127 VI_POOL_ENTRY_INUSE entries; the tracker is
  simulated as ViGrowPoolAllocation / ViFreeTrackedPool do it (Server 2003 verifier.c: a new
  page pushes slots 1..126 on PoolTrackers and hands out slot 127; frees OR 1 into
  NumberOfBytes and push the entry back), so live and free entries interleave;
* with a ``driver_list: "mi_list"`` profile (Vista, spec 4.1) instead of the three items
  above: ``MiSuspectDriverList`` with one MI_VERIFIER_DRIVER_ENTRY per driver (tag MmLd, name
  inline after the 0xA0-byte entry, tail insertion, Flags VI_VERIFYING_DIRECTLY, Signature,
  Start/EndAddress = the image range while loaded and 0 after unload) holding the counters
  and both SLISTs itself; the tracker pages' VerifierEntry is that entry;
* the tracked allocations themselves: pool blocks or big-pool allocations with the tag, the
  verifier back-pointer at VA + NumberOfBytes - 8 (spec 5.3);
* the pool log (VfPoolTraces / VfPoolTracesIndex / VfPoolTracesLength, VF_POOL_TRACE
  entries of the profile's size and frame count: 0x80 / 13 up to 19045, 0x1A8 / 50 from
  22000) with an allocate and a free trace per event, slot = n & (Length - 1) for the n-th
  event (1-based), and the IRP log (IovIrpTraces..., IOV_IRP_TRACE); each buffer carries the
  first pool tag of the profile's ``verifier.tags`` (VfPT / VfIT when it has none; ViIn for
  the Windows 11 pool log).

Synthetic (not from a source; also listed in the dump's notes): the nt function stubs used as
stack frames and their return offsets, ETHREAD = "Thre" block body + 0x50, IRPs = "Irp "
blocks, VF_AVL_TREE.NodeRangeSize = sizeof(VF_TARGET_DRIVER), the Tables array tagged VfAT,
SLIST Next low bits 0x3 (HeaderType | Init) below build 9200 and 0 from 9200, SLIST
Sequence = the number of pushes, big tracked allocations charged round4(bytes) + 8 (the Win8.1
sample; WRK's EX_REAL_POOL_USAGE would round to pages), free traces carry the charged size.
"""

from __future__ import annotations

import bisect
import gc
import random
import struct
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .layout import PAGE_SIZE, parse_int
from .pool import EntryLayout
from .scenario import (
    NT_NAMES,
    VerifierAllocSpec,
    VerifierDriverSpec,
    VerifierSpec,
    verifier_unloads,
)

if TYPE_CHECKING:
    from .machine import Machine, ModuleLayout
    from .pool import Block, PoolBuilder

_Q = struct.Struct("<Q")
MASK64 = (1 << 64) - 1
BUGCHECK_POOL_LEAK = 0x62
UNLOADED_BASE_OFFSET = 0x0C000000
"""Unloaded drivers' (unmapped) image range: drivers_base + this + 0x100000 * i."""
ETHREAD_IN_BLOCK = 0x50

# nt stubs: name -> (function size, the return offset used in stack frames)
NT_FUNCTIONS: dict[str, tuple[int, int]] = {
    "VeAllocatePoolWithTagPriority": (0x480, 0x2CB),
    "VerifierExAllocatePoolWithTag": (0x60, 0x1D),
    "ExFreePoolWithTag": (0x700, 0x4AF),
    "VerifierExFreePoolWithTag": (0x60, 0x1B),
    "IopXxxControlFile": (0xA00, 0x607),
    "NtDeviceIoControlFile": (0x80, 0x56),
    "KiSystemServiceCopyEnd": (0x40, 0x13),
    "IopProcessWorkItem": (0xA0, 0x5F),
    "ExpWorkerThread": (0x200, 0x111),
    "PspSystemThreadStartup": (0x80, 0x5A),
    "KiStartSystemThread": (0x40, 0x16),
    "IovAllocateIrp": (0x100, 0x27),
    "IoAllocateIrp": (0x300, 0x2D6),
    "IovCompleteRequest": (0x240, 0x1A5),
    "IofCompleteRequest": (0x80, 0x3B),
    "IofCallDriver": (0x80, 0x4E),
}
IOCTL_TAIL = ("IopXxxControlFile", "NtDeviceIoControlFile", "KiSystemServiceCopyEnd")
WORKER_TAIL = ("IopProcessWorkItem", "ExpWorkerThread", "PspSystemThreadStartup",
               "KiStartSystemThread")  # fmt: skip
STUB_PROLOGUE = bytes.fromhex("48895c2408 4889742410 57 4883ec30 488bf9")
REQUIRED = (
    "mm_driver_verifier_data", "suspect_driver_entry", "pool_page_header", "pool_entry",
    "pool_trace", "irp_trace", "avl_tree", "avl_table", "target_driver",
    "verified_driver_data", "balanced_links",
)  # fmt: skip
REQUIRED_MI = (
    "mm_driver_verifier_data", "mi_verifier_driver_entry", "pool_page_header", "pool_entry",
    "pool_trace", "irp_trace",
)  # fmt: skip
"""What a ``driver_list: "mi_list"`` (Vista) profile needs: MI_VERIFIER_DRIVER_ENTRY replaces
the suspect entry, AVL tree and verified data (spec 4.1)."""
DEFAULT_TAGS = {"pool_trace": ("VfPT",), "irp_trace": ("VfIT",)}
"""The log buffers' pool tags when the profile's ``verifier.tags`` does not list them."""
MI_ENTRY_TAG = "MmLd"
"""MI_VERIFIER_DRIVER_ENTRY's pool tag ('dLmM' in Server 2003 verifier.c; assumed for Vista)."""
VI_VERIFYING_DIRECTLY = 1


# ------------------------------------------------------------------------ layout
@dataclass(frozen=True)
class VerifierLayout:
    """The profile's ``verifier`` section: constants and structure layouts."""

    const: dict[str, int]
    s: dict[str, EntryLayout]
    driver_list: str = "suspect_list+avl"
    """"suspect_list+avl" (Win7+) or "mi_list" (Vista: MI_VERIFIER_DRIVER_ENTRY)."""
    tags: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_TAGS))
    """Pool tags of the log buffers (``verifier.tags``); the forge writes the first."""

    @property
    def mi(self) -> bool:
        return self.driver_list == "mi_list"

    @classmethod
    def from_profile(cls, profile: dict[str, Any]) -> VerifierLayout:
        v = profile.get("verifier")
        if not isinstance(v, dict):
            raise ValueError(f"profile {profile.get('name')!r} has no verifier section")
        const = {k: parse_int(x) for k, x in v.get("constants", {}).items()}
        structs = {
            k: EntryLayout.parse(x)
            for k, x in v.items()
            if k not in ("constants", "tags") and isinstance(x, dict)
        }
        tags = dict(DEFAULT_TAGS)
        for k, x in v.get("tags", {}).items():
            ok = isinstance(x, list) and x and all(isinstance(t, str) and len(t) == 4 for t in x)
            if not ok:
                raise ValueError(f"profile verifier.tags.{k} must be a list of 4-character tags")
            tags[k] = tuple(x)
        driver_list = v.get("driver_list", "suspect_list+avl")
        if driver_list not in ("suspect_list+avl", "mi_list"):
            raise ValueError(f"profile verifier.driver_list {driver_list!r} is unknown")
        required = REQUIRED_MI if driver_list == "mi_list" else REQUIRED
        missing = [k for k in required if k not in structs]
        if missing:
            raise ValueError(f"profile verifier section lacks {', '.join(missing)}")
        return cls(const, structs, driver_list, tags)

    def size(self, what: str) -> int:
        return self.s[what].size

    def off(self, what: str, name: str) -> int:
        return self.s[what][name].offset

    def put(self, buf: bytearray, at: int, what: str, name: str, value: int) -> None:
        """Overwrite a field (negative values are stored two's complement)."""
        f = self.s[what][name]
        bits = f.width * 8
        if value < 0:
            value &= (1 << bits) - 1
        if not 0 <= value < 1 << bits:
            raise ValueError(f"forge: {value:#x} does not fit {what}.{name}")
        lo = at + f.offset
        buf[lo : lo + f.width] = value.to_bytes(f.width, "little")


# ------------------------------------------------------------------ the model
@dataclass
class _Alloc:
    drv: _Driver
    tag: str
    pool: str
    req: int
    charged: int
    """The tracker's NumberOfBytes."""
    big: bool
    caller: int
    stack: list[int]
    free_stack: list[int]
    live: bool
    va: int = 0
    entry: int = 0
    alloc_n: int = 0
    """The event number of the allocation (1-based, pool-log order), 0 before numbering."""
    alloc_thread: int = 0
    free_thread: int = 0


@dataclass
class _Page:
    va: int
    slots: list[tuple[str, _Alloc | None]]
    """Per slot 1..N-1: ("never", None) / ("live", a) / ("freed", a)."""


@dataclass
class _Driver:
    spec: VerifierDriverSpec
    name: str
    loaded: bool
    loads: int
    unloads: int
    base: int
    size: int
    suspect: int = 0
    vd: int = 0
    node: int = 0
    pages: list[_Page] = field(default_factory=list)
    free: list[tuple[int, int]] = field(default_factory=list)
    """The PoolTrackers stack (bottom first) of (page index, slot)."""
    page_pushes: int = 0
    tracker_pushes: int = 0
    cur: dict[str, list[int]] = field(default_factory=dict)
    peak: dict[str, list[int]] = field(default_factory=dict)
    allocs: list[_Alloc] = field(default_factory=list)


@dataclass
class _Event:
    kind: str  # "alloc" / "free"
    a: _Alloc


def _pools() -> dict[str, list[int]]:
    return {"nonpaged": [0, 0], "paged": [0, 0]}


# ---------------------------------------------------------------- the builder
class VerifierBuilder:
    """Phase 1 (``build``, before the pool is finalized) allocates and writes every
    structure; phase 2 (``finish``, after) picks the addresses of freed small blocks among
    the pool's free blocks, writes both logs and makes the ground truth."""

    def __init__(self, kb: Machine, pool: PoolBuilder) -> None:
        self.kb = kb
        self.pool = pool
        self.spec: VerifierSpec | None = kb.sc.verifier
        self._data_va = 0
        self.truth: dict[str, Any] | None = None
        self.notes: list[str] = []

    @property
    def enabled(self) -> bool:
        return self.spec is not None

    def data_va(self) -> int:
        """nt!MmVerifierData: the profile's structure size, zero unless the verifier is on."""
        if not self._data_va:
            v = self.kb.profile.get("verifier")
            size = 0x40
            if isinstance(v, dict) and "mm_driver_verifier_data" in v:
                size = parse_int(v["mm_driver_verifier_data"]["size"])
            self._data_va = self.kb.nt_var((size + 15) // 16 * 16, 16, "MmVerifierData")
        return self._data_va

    # ------------------------------------------------------------ phase 1
    def build(self) -> None:
        if self.spec is None:
            return
        kb = self.kb
        self.L = VerifierLayout.from_profile(kb.profile)
        self.rng = random.Random(kb.sc.seed ^ 0x56455249)  # "VERI"
        self.frames = self.L.const.get("pool_trace_frames", 13)
        self.irp_frames = self.L.const.get("irp_trace_frames", 13)
        self.per_page = self.L.const.get("entries_per_tracker_page", PAGE_SIZE // 0x20)
        self.mi = self.L.mi
        self.links = self.L.const.get("avl_node_links", 0x20)
        self.slist_low = 0x3 if kb.sc.win7_like else 0x0
        self._nt_functions()
        self.vars = self._variables()
        self.drivers = self._drivers()
        self.threads = self._threads()
        self.irps = self._irps()
        if self.mi:
            for d in self.drivers:  # the entry is the tracker pages' VerifierEntry too
                raw = d.name.encode("utf-16-le")
                d.suspect = d.vd = self.pool.alloc(
                    self.L.size("mi_verifier_driver_entry") + len(raw) + 2, MI_ENTRY_TAG
                )
        else:
            self._suspect_list()
            for d in self.drivers:
                if d.loaded:
                    d.vd = self.pool.alloc(self.L.size("verified_driver_data"), "VfVD")
                    d.node = self.pool.alloc(self.links + self.L.size("target_driver"), "VfAT")
        self.events = self._timeline()
        self._simulate()
        self._write_trackers()
        if self.mi:
            self._write_mi_list()
            self.tables_va, self.tables_no, self.table_of = 0, 0, {}
        else:
            self._write_verified_data()
            self._avl()
        self._logs_phase1()
        self._write_mm_verifier_data()
        self.notes += [
            "verifier: nt function stubs (VeAllocatePoolWithTagPriority...) and their return "
            "offsets are synthetic; ETHREAD = 'Thre' block body + 0x50; IRPs are 'Irp ' blocks",
            "verifier: MI_VERIFIER_DRIVER_ENTRY tagged MmLd with the name inline (Server 2003 "
            "code, assumed for Vista); unloaded entries have StartAddress/EndAddress 0"
            if self.mi
            else "verifier: VF_AVL_TREE.NodeRangeSize = sizeof(VF_TARGET_DRIVER), Tables array "
            "tagged VfAT, RTL_BALANCED_LINKS.Balance left 0 (synthetic)",
            f"verifier: SLIST Next low bits {self.slist_low:#x}, Sequence = number of pushes",
            "verifier: big tracked allocations record round4(bytes) + 8 (Win8.1 sample); "
            "free traces carry the charged size",
        ]
        if not self.mi and "FullName.Length" in self.L.s["suspect_driver_entry"].fields:
            self.notes.append(
                "verifier: VF_SUSPECT_DRIVER_ENTRY.FullName is left empty; only BaseName is "
                "written, inline after the entry (synthetic)"
            )
        if self.spec.irp_log is not None and not self.spec.level & 0x10:
            self.notes.append(
                "verifier: an IRP log without Level bit 0x10 (I/O verification): a real "
                "kernel allocates IovIrpTraces only with 0x10 (spec 2)"
            )

    # nt stubs ---------------------------------------------------------------
    def _nt_functions(self) -> None:
        kb = self.kb
        text = kb.nt_sections[0]
        cursor = kb.kernel_base + text.rva + ((text.size * 5 // 7) & ~0xFFF)
        for name, (size, _ret) in NT_FUNCTIONS.items():
            if name in kb.symbols:
                continue
            cursor = (cursor + 15) // 16 * 16
            body = STUB_PROLOGUE + bytes.fromhex("4883c430 5f c3")
            kb.vwrite(cursor, body + b"\xcc" * (size - len(body)))
            kb.symbols[name] = cursor
            cursor += size

    def nt(self, name: str) -> int:
        return self.kb.symbols[name] + NT_FUNCTIONS[name][1]

    # variables ---------------------------------------------------------------
    def _variables(self) -> dict[str, int]:
        kb = self.kb
        out = {"MmVerifierData": self.data_va()}
        if self.mi:
            out["MiSuspectDriverList"] = kb.nt_var(16, 16, "MiSuspectDriverList")
        else:
            out["VfSuspectDriversList"] = kb.nt_var(16, 16, "VfSuspectDriversList")
            tree = self.L.size("avl_tree")
            out["ViTargetDriversAvl"] = kb.nt_var(tree, 16, "ViTargetDriversAvl")
        for prefix in ("VfPoolTraces", "IovIrpTraces"):
            out[prefix] = kb.nt_var(8, 8, prefix)
            out[prefix + "Index"] = kb.nt_var(4, 4, prefix + "Index")
            out[prefix + "Length"] = kb.nt_var(4, 4, prefix + "Length")
        return out

    # drivers -----------------------------------------------------------------
    def _module(self, name: str) -> ModuleLayout | None:
        for m in self.kb.modules:
            if m.name.lower() == name.lower():
                return m
        return None

    def _drivers(self) -> list[_Driver]:
        assert self.spec is not None
        out = []
        unloaded = 0
        for d in self.spec.drivers:
            loads, unloads = verifier_unloads(d)
            m = self._module(d.name)
            if d.loaded:
                if m is None:  # pragma: no cover - Scenario.resolved adds it
                    raise ValueError(f"verifier driver {d.name!r} is not in the module list")
                base, size = m.base, m.size
            else:
                base = self.kb.drivers_base + UNLOADED_BASE_OFFSET + unloaded * 0x100000
                size = ((d.size or 0x8000) + PAGE_SIZE - 1) // PAGE_SIZE * PAGE_SIZE
                unloaded += 1
            drv = _Driver(d, d.name, d.loaded, loads, unloads, base, size)
            drv.cur, drv.peak = _pools(), _pools()
            for a in d.allocations:
                if a.site + 6 >= size:
                    raise ValueError(
                        f"verifier driver {d.name!r}: site {a.site:#x} is outside its "
                        f"{size:#x}-byte image"
                    )
            out.append(drv)
        return out

    def _threads(self) -> list[int]:
        size = 0x4F0 if self.kb.sc.win7_like else 0x890
        return [self.pool.alloc(size, "Thre") + ETHREAD_IN_BLOCK for _ in range(4)]

    def _irps(self) -> list[int]:
        assert self.spec is not None
        if self.spec.irp_log is None:
            return []
        return [self.pool.alloc(0x3A0, "Irp ") for _ in range(8)]

    # suspect list -------------------------------------------------------------
    def _suspect_list(self) -> None:
        kb, L = self.kb, self.L
        esize = L.size("suspect_driver_entry")
        head = self.vars["VfSuspectDriversList"]
        nodes = [head]
        for d in self.drivers:
            raw = d.name.encode("utf-16-le")
            d.suspect = self.pool.alloc(esize + len(raw) + 2, "VfSD")
            nodes.append(d.suspect)
        for i in range(len(nodes)):
            buf = bytearray(16)
            L.put(buf, 0, "suspect_driver_entry", "Flink", nodes[(i + 1) % len(nodes)])
            L.put(buf, 0, "suspect_driver_entry", "Blink", nodes[i - 1])
            if i == 0:
                kb.vwrite(head, bytes(buf))
                continue
            d = self.drivers[i - 1]
            raw = d.name.encode("utf-16-le")
            entry = bytearray(esize)
            entry[:16] = buf
            L.put(entry, 0, "suspect_driver_entry", "Loads", d.loads)
            L.put(entry, 0, "suspect_driver_entry", "Unloads", d.unloads)
            L.put(entry, 0, "suspect_driver_entry", "BaseName.Length", len(raw))
            max_at = L.off("suspect_driver_entry", "BaseName.Length") + 2  # MaximumLength
            entry[max_at : max_at + 2] = (len(raw) + 2).to_bytes(2, "little")
            L.put(entry, 0, "suspect_driver_entry", "BaseName.Buffer", d.suspect + esize)
            kb.vwrite(d.suspect, bytes(entry) + raw + b"\0\0")

    # stacks -------------------------------------------------------------------
    def _in_image(self, d: _Driver, off: int) -> int:
        if off < d.size:
            return off
        return 0x1000 + off % (d.size - 0x1000)

    def _default_stacks(self, d: _Driver, site: int, index: int) -> tuple[list[int], list[int]]:
        """(allocation stack, free stack) through the driver's code at ``site``."""
        caller = d.base + site + 6
        outer = d.base + self._in_image(d, site + 6 + 0xCC)
        free_site = d.base + self._in_image(d, site + 6 + 0x40)
        if index % 2 == 0:  # an IOCTL from user mode
            tail = [self.nt(f) for f in IOCTL_TAIL]
        else:  # a work item: one more driver frame (the work routine), then the worker thread
            tail = [d.base + self._in_image(d, site + 6 + 0x1A0)]
            tail += [self.nt(f) for f in WORKER_TAIL]
        alloc = [self.nt("VeAllocatePoolWithTagPriority"),
                 self.nt("VerifierExAllocatePoolWithTag"), caller, outer, *tail]  # fmt: skip
        free = [self.nt("ExFreePoolWithTag"), self.nt("VerifierExFreePoolWithTag"), free_site,
                outer, *tail]  # fmt: skip
        return alloc[: self.frames], free[: self.frames]

    def resolve(self, frame: int | str) -> int:
        """A scenario stack frame as a VA."""
        if isinstance(frame, int):
            return frame & MASK64
        head, _, off_s = frame.partition("+")
        off = parse_int(off_s) if off_s else 0
        mod, bang, sym = head.strip().partition("!")
        if mod.lower() in NT_NAMES:
            if bang:
                if sym not in self.kb.symbols:
                    raise ValueError(f"stack frame {frame!r}: no nt symbol {sym!r} in the forge")
                return self.kb.symbols[sym] + off
            return self.kb.kernel_base + off
        if bang:
            raise ValueError(f"stack frame {frame!r}: symbols are only known for nt")
        key = mod.lower()
        for d in self.drivers:
            if key in (d.name.lower(), d.name.lower().rsplit(".", 1)[0]):
                return d.base + off
        for m in self.kb.modules:
            if key in (m.name.lower(), m.name.lower().rsplit(".", 1)[0]):
                return m.base + off
        raise ValueError(f"stack frame {frame!r}: unknown module {mod!r}")

    def _stacks(self, d: _Driver, a: VerifierAllocSpec, index: int) -> tuple[list[int], list[int]]:
        if not a.stack:
            return self._default_stacks(d, a.site, index)
        alloc = [self.resolve(f) for f in a.stack][: self.frames]
        if not all(alloc):
            raise ValueError(f"verifier driver {d.name!r}: stack frames must be non-zero")
        caller = d.base + a.site + 6
        if caller in alloc:
            rest = alloc[alloc.index(caller) + 1 :]
        else:
            inside = [i for i, f in enumerate(alloc) if d.base <= f < d.base + d.size]
            rest = alloc[inside[0] + 1 :] if inside else []
        free_site = d.base + self._in_image(d, a.site + 6 + 0x40)
        free = [self.nt("ExFreePoolWithTag"), self.nt("VerifierExFreePoolWithTag"), free_site]
        return alloc, (free + rest)[: self.frames]

    # allocations ---------------------------------------------------------------
    def charged(self, req: int) -> tuple[int, bool]:
        """(NumberOfBytes the tracker records, big?) for a request (spec 5.3)."""
        c = (req + 3) // 4 * 4 + 8
        if c > self.pool.lay.big_threshold:
            return c, True
        return self.pool.small_body_bytes(c), False

    def _default_spec(self, d: _Driver) -> VerifierAllocSpec:
        tag = "".join(ch for ch in d.name if ch.isalnum())[:4].capitalize().ljust(4, "x")
        return VerifierAllocSpec(tag=tag, bytes=0x80, pool="nonpaged", count=0, site=0x1100)

    def _make(self, d: _Driver, a: VerifierAllocSpec, index: int, live: bool) -> _Alloc:
        charged, big = self.charged(a.bytes)
        alloc_stack, free_stack = self._stacks(d, a, index)
        return _Alloc(
            drv=d, tag=a.tag.ljust(4), pool=a.pool, req=a.bytes, charged=charged, big=big,
            caller=d.base + a.site + 6, stack=alloc_stack, free_stack=free_stack, live=live,
            alloc_thread=self.rng.choice(self.threads), free_thread=self.rng.choice(self.threads),
        )  # fmt: skip

    def _timeline(self) -> list[_Event]:
        """Every allocate/free event of the verified drivers in time order: unloaded drivers'
        (all freed) first, then the loaded drivers' events randomly interleaved; within a
        driver, allocations in random order and each freed one freed a little later."""
        rng = self.rng
        per: list[list[_Event]] = []
        for d in self.drivers:
            specs = d.spec.allocations
            items: list[_Alloc] = []
            for i, a in enumerate(specs):
                items += [self._make(d, a, i, True) for _ in range(a.count)]
            for j in range(d.spec.freed):
                if specs:
                    i = j % len(specs)
                    items.append(self._make(d, specs[i], i, False))
                else:
                    items.append(self._make(d, self._default_spec(d), j, False))
            rng.shuffle(items)
            keyed: list[tuple[float, int, _Event]] = []
            span = max(1.5, len(items) / 4)
            for t, it in enumerate(items):
                keyed.append((float(t), len(keyed), _Event("alloc", it)))
                if not it.live:
                    keyed.append((t + rng.uniform(0.5, span), len(keyed), _Event("free", it)))
            keyed.sort(key=lambda k: (k[0], k[1]))
            per.append([e for _, _, e in keyed])
            d.allocs = items
        out: list[_Event] = []
        for d, evs in zip(self.drivers, per, strict=True):
            if not d.loaded:
                out += evs
        loaded = [i for i, d in enumerate(self.drivers) if d.loaded]
        order = [i for i in loaded for _ in per[i]]
        rng.shuffle(order)
        pos = dict.fromkeys(loaded, 0)
        for i in order:
            out.append(per[i][pos[i]])
            pos[i] += 1
        return out

    def _simulate(self) -> None:
        """Run the events: tracker entries, memory of the allocations, counters."""
        pool = self.pool
        g_cur, g_peak = _pools(), _pools()
        self.big_allocs = 0
        for ev in self.events:
            a, d = ev.a, ev.a.drv
            sign = 1 if ev.kind == "alloc" else -1
            for cur, peak in ((g_cur, g_peak), (d.cur, d.peak)):
                c = cur[a.pool]
                c[0] += sign
                c[1] += sign * a.charged
                p = peak[a.pool]
                p[0], p[1] = max(p[0], c[0]), max(p[1], c[1])
            if ev.kind == "alloc":
                self.big_allocs += a.big
                if a.live:
                    # a small block's body is the charged size: the same block as for
                    # round4(bytes) + 8; a big one is exactly that size
                    a.va = pool.alloc(a.charged, a.tag, a.pool, record=False)
                elif a.big:
                    a.va = pool.freed_big(a.charged, a.tag, a.pool)
                if d.loaded:
                    a.entry = self._pop(d, a)
            elif d.loaded:
                self._push_freed(d, a)
        self.g_cur, self.g_peak = g_cur, g_peak
        # frees that never show as blocks: small freed blocks and the unloaded drivers'
        counts: dict[tuple[str, str], int] = {}
        for d in self.drivers:
            for a in d.allocs:
                if not a.live and not a.big:
                    counts[(a.tag, a.pool)] = counts.get((a.tag, a.pool), 0) + 1
        for (tag, pool_name), n in sorted(counts.items()):
            pool.add_frees(tag, pool_name, n)

    def _pop(self, d: _Driver, a: _Alloc) -> int:
        if not d.free:
            va = self.pool.alloc_big(PAGE_SIZE, "Vepp", "nonpaged", internal=True)
            n = self.per_page
            d.pages.append(_Page(va, [("never", None)] * (n - 1)))
            d.page_pushes += 1
            pi = len(d.pages) - 1
            d.free += [(pi, k) for k in range(1, n - 1)]  # ViGrowPoolAllocation's pushes
            d.tracker_pushes += n - 2
            pi, slot = pi, n - 1
        else:
            pi, slot = d.free.pop()
        d.pages[pi].slots[slot - 1] = ("live", a)
        return d.pages[pi].va + slot * self.L.size("pool_entry")

    def _push_freed(self, d: _Driver, a: _Alloc) -> None:
        esize = self.L.size("pool_entry")
        for pi, page in enumerate(d.pages):
            if page.va <= a.entry < page.va + PAGE_SIZE:
                slot = (a.entry - page.va) // esize
                page.slots[slot - 1] = ("freed", a)
                d.free.append((pi, slot))
                d.tracker_pushes += 1
                return
        raise AssertionError("forge: freed tracker entry not found")  # pragma: no cover

    # writing the tracker ----------------------------------------------------------
    def _entry_va(self, d: _Driver, ref: tuple[int, int]) -> int:
        return d.pages[ref[0]].va + ref[1] * self.L.size("pool_entry")

    def _write_trackers(self) -> None:
        kb, L = self.kb, self.L
        esize = L.size("pool_entry")
        sig = self.L.const["pool_page_signature"]
        for d in self.drivers:
            if not d.pages:
                continue
            link: dict[tuple[int, int], int] = {}
            for i, ref in enumerate(d.free):
                link[ref] = self._entry_va(d, d.free[i - 1]) if i else 0
            for pi, page in enumerate(d.pages):
                buf = bytearray(PAGE_SIZE)
                L.put(buf, 0, "pool_page_header", "NextPage", d.pages[pi - 1].va if pi else 0)
                L.put(buf, 0, "pool_page_header", "VerifierEntry", d.vd)
                L.put(buf, 0, "pool_page_header", "Signature", sig)
                for slot in range(1, self.per_page):
                    at = slot * esize
                    state, a = page.slots[slot - 1]
                    if state == "live":
                        assert a is not None
                        L.put(buf, at, "pool_entry", "VirtualAddress", a.va)
                        L.put(buf, at, "pool_entry", "CallingAddress", a.caller)
                        L.put(buf, at, "pool_entry", "NumberOfBytes", a.charged)
                        L.put(buf, at, "pool_entry", "Tag", _tag_int(a.tag))
                        continue
                    # free: NextFree at +0 (the VirtualAddress field), NumberOfBytes odd
                    L.put(buf, at, "pool_entry", "VirtualAddress", link[(pi, slot)])
                    if state == "freed":
                        assert a is not None
                        L.put(buf, at, "pool_entry", "CallingAddress", a.caller)
                        L.put(buf, at, "pool_entry", "NumberOfBytes", a.charged | 1)
                        L.put(buf, at, "pool_entry", "Tag", _tag_int(a.tag))
                    else:
                        L.put(buf, at, "pool_entry", "NumberOfBytes", 1)
                kb.vwrite(page.va, bytes(buf))
            for a in d.allocs:  # the verifier back-pointers (VerifierPoolEntry)
                if a.live:
                    kb.q(a.va + a.charged - 8, a.entry)

    def _slist(
        self,
        buf: bytearray,
        name: str,
        depth: int,
        seq: int,
        first: int,
        what: str = "verified_driver_data",
    ) -> None:
        L = self.L
        L.put(buf, 0, what, f"{name}.Depth", depth)
        at = L.off(what, f"{name}.Depth") + 2  # Sequence:48 after Depth:16
        buf[at : at + 6] = (seq & (1 << 48) - 1).to_bytes(6, "little")
        L.put(buf, 0, what, f"{name}.Next", first | self.slist_low)

    def _write_mi_list(self) -> None:
        """MiSuspectDriverList and its MI_VERIFIER_DRIVER_ENTRYs (spec 4.1; tail insertion,
        name inline after the entry, Start/EndAddress the image range while loaded)."""
        kb, L, what = self.kb, self.L, "mi_verifier_driver_entry"
        esize = L.size(what)
        head = self.vars["MiSuspectDriverList"]
        nodes = [head] + [d.suspect for d in self.drivers]
        for i, va in enumerate(nodes):
            buf = bytearray(esize if i else 16)
            L.put(buf, 0, what, "Flink", nodes[(i + 1) % len(nodes)])
            L.put(buf, 0, what, "Blink", nodes[i - 1])
            if i == 0:
                kb.vwrite(head, bytes(buf))
                continue
            d = self.drivers[i - 1]
            raw = d.name.encode("utf-16-le")
            L.put(buf, 0, what, "Loads", d.loads)
            L.put(buf, 0, what, "Unloads", d.unloads)
            L.put(buf, 0, what, "BaseName.Length", len(raw))
            max_at = L.off(what, "BaseName.Length") + 2  # MaximumLength
            buf[max_at : max_at + 2] = (len(raw) + 2).to_bytes(2, "little")
            L.put(buf, 0, what, "BaseName.Buffer", va + esize)
            if d.loaded:
                L.put(buf, 0, what, "StartAddress", d.base)
                L.put(buf, 0, what, "EndAddress", d.base + d.size)
            L.put(buf, 0, what, "Flags", VI_VERIFYING_DIRECTLY)
            L.put(buf, 0, what, "Signature", L.const["verified_data_signature"])
            if d.loaded:
                top_page = d.pages[-1].va if d.pages else 0
                self._slist(buf, "PoolPageHeaders", len(d.pages), d.page_pushes, top_page, what)
                top = self._entry_va(d, d.free[-1]) if d.free else 0
                self._slist(buf, "PoolTrackers", len(d.free), d.tracker_pushes, top, what)
                for key, value in self._counters(d.cur, d.peak).items():
                    L.put(buf, 0, what, key, value)
            kb.vwrite(va, bytes(buf) + raw + b"\0\0")

    def _write_verified_data(self) -> None:
        L = self.L
        for d in self.drivers:
            if not d.loaded:
                continue
            buf = bytearray(L.size("verified_driver_data"))
            L.put(buf, 0, "verified_driver_data", "SuspectDriverEntry", d.suspect)
            L.put(buf, 0, "verified_driver_data", "Signature",
                  L.const["verified_data_signature"])  # fmt: skip
            head = d.pages[-1].va if d.pages else 0
            self._slist(buf, "PoolPageHeaders", len(d.pages), d.page_pushes, head)
            top = self._entry_va(d, d.free[-1]) if d.free else 0
            self._slist(buf, "PoolTrackers", len(d.free), d.tracker_pushes, top)
            for key, value in self._counters(d.cur, d.peak).items():
                L.put(buf, 0, "verified_driver_data", key, value)
            self.kb.vwrite(d.vd, bytes(buf))

    @staticmethod
    def _counters(cur: dict[str, list[int]], peak: dict[str, list[int]]) -> dict[str, int]:
        return {
            "CurrentPagedPoolAllocations": cur["paged"][0],
            "CurrentNonPagedPoolAllocations": cur["nonpaged"][0],
            "PeakPagedPoolAllocations": peak["paged"][0],
            "PeakNonPagedPoolAllocations": peak["nonpaged"][0],
            "PagedBytes": cur["paged"][1],
            "NonPagedBytes": cur["nonpaged"][1],
            "PeakPagedBytes": peak["paged"][1],
            "PeakNonPagedBytes": peak["nonpaged"][1],
        }

    # AVL ------------------------------------------------------------------------
    def _avl(self) -> None:
        assert self.spec is not None
        kb, L = self.kb, self.L
        n_tables = self.spec.avl_tables or (1 if kb.sc.win7_like else 2)
        stride = L.size("avl_table")
        tables = self.pool.alloc(n_tables * stride, "VfAT")
        self.tables_va, self.tables_no = tables, n_tables
        loaded = [d for d in self.drivers if d.loaded]
        buf = bytearray(n_tables * stride)
        self.table_of: dict[str, int] = {}
        for t in range(n_tables):
            at = t * stride
            members = sorted(
                (d for d in loaded if (d.base >> 12) % n_tables == t), key=lambda d: d.base
            )
            for d in members:
                self.table_of[d.name] = t
            L.put(buf, at, "balanced_links", "Parent", tables + at)  # BalancedRoot.Parent
            root = self._subtree(members, tables + at)
            L.put(buf, at, "avl_table", "RightChild", root)
            L.put(buf, at, "avl_table", "NumberGenericTableElements", len(members))
        kb.vwrite(tables, bytes(buf))
        tree = bytearray(L.size("avl_tree"))
        L.put(tree, 0, "avl_tree", "NodeRangeSize", L.size("target_driver"))
        L.put(tree, 0, "avl_tree", "NodeCount", len(loaded))
        L.put(tree, 0, "avl_tree", "Tables", tables)
        L.put(tree, 0, "avl_tree", "TablesNo", n_tables)
        kb.vwrite(self.vars["ViTargetDriversAvl"], bytes(tree))

    def _subtree(self, members: list[_Driver], parent: int) -> int:
        """Write a balanced BST over ``members`` (sorted by base); returns its root node."""
        if not members:
            return 0
        L = self.L
        mid = len(members) // 2
        d = members[mid]
        left = self._subtree(members[:mid], d.node)
        right = self._subtree(members[mid + 1 :], d.node)
        buf = bytearray(self.links + L.size("target_driver"))
        L.put(buf, 0, "balanced_links", "Parent", parent)
        L.put(buf, 0, "balanced_links", "LeftChild", left)
        L.put(buf, 0, "balanced_links", "RightChild", right)
        L.put(buf, self.links, "target_driver", "p", d.base)
        L.put(buf, self.links, "target_driver", "RangeSize", d.size)
        L.put(buf, self.links, "target_driver", "VerifiedData", d.vd)
        self.kb.vwrite(d.node, bytes(buf))
        return d.node

    # logs (phase 1: buffers, variables, filler counts) -------------------------------
    def _logs_phase1(self) -> None:
        assert self.spec is not None
        kb, L = self.kb, self.L
        self.n_events = len(self.events)
        self.pool_buf = self.irp_buf = 0
        self.filler = 0
        self.fill_drivers = [d for d in self.drivers if d.loaded] or list(self.drivers)
        pl = self.spec.pool_log
        if pl is not None:
            index = self.n_events if pl.entries_written is None else pl.entries_written
            if index < self.n_events:
                raise ValueError(
                    f"verifier.pool_log.entries_written {index} is below the "
                    f"{self.n_events} allocate/free events of the verified drivers"
                )
            self.filler = index - self.n_events
            if self.filler and not self.fill_drivers:
                raise ValueError("verifier.pool_log: older entries need a verified driver")
            self.pool_index = index
            self.pool_buf = self.pool.alloc(
                pl.length * L.size("pool_trace"), L.tags["pool_trace"][0]
            )
            kb.q(self.vars["VfPoolTraces"], self.pool_buf)
            kb.vwrite(self.vars["VfPoolTracesIndex"], (index & 0xFFFFFFFF).to_bytes(4, "little"))
            kb.vwrite(self.vars["VfPoolTracesLength"], pl.length.to_bytes(4, "little"))
            # the filler pairs (pair j = events P-2j-1 (alloc) and P-2j (free)) are the
            # drivers' churn: one Alloc and one Free each in the pool tracker table
            pairs = (self.filler + 1) // 2
            n = len(self.fill_drivers)
            for i, d in enumerate(self.fill_drivers):
                cnt = (pairs - i + n - 1) // n if pairs > i else 0
                if cnt:
                    spec = self._fill_spec(d)
                    self.pool.add_frees(spec.tag, spec.pool, cnt)
        il = self.spec.irp_log
        if il is not None:
            index = il.length + il.length // 2 if il.entries_written is None else il.entries_written
            self.irp_index = index
            self.irp_buf = self.pool.alloc(il.length * L.size("irp_trace"), L.tags["irp_trace"][0])
            kb.q(self.vars["IovIrpTraces"], self.irp_buf)
            kb.vwrite(self.vars["IovIrpTracesIndex"], (index & 0xFFFFFFFF).to_bytes(4, "little"))
            kb.vwrite(self.vars["IovIrpTracesLength"], il.length.to_bytes(4, "little"))
            valid = min(index, il.length)
            want = sum(a.count for a in il.apc_disabled)
            if want > valid:
                raise ValueError(
                    f"verifier.irp_log.apc_disabled: {want} entries do not fit the {valid} "
                    "valid entries of the log"
                )
            for a in il.apc_disabled:
                if self._module(a.module) is None:  # pragma: no cover - resolved() adds it
                    raise ValueError(f"apc_disabled module {a.module!r} is not loaded")

    def _fill_spec(self, d: _Driver) -> VerifierAllocSpec:
        return d.spec.allocations[0] if d.spec.allocations else self._default_spec(d)

    # MmVerifierData -----------------------------------------------------------------
    def _write_mm_verifier_data(self) -> None:
        assert self.spec is not None
        L, rng, spec = self.L, self.rng, self.spec
        allocs = sum(1 for e in self.events if e.kind == "alloc") + (self.filler + 1) // 2
        frees = sum(1 for e in self.events if e.kind == "free") + (self.filler + 1) // 2
        level = spec.level
        untracked = rng.randrange(0, 24)
        failed = rng.randrange(0, 3)
        deliberately = rng.randrange(40, 400) if level & 0x4 else 0
        succeeded = allocs + untracked + rng.randrange(0, 64)
        stats: dict[str, int] = {
            "Level": level,
            "RaiseIrqls": rng.randrange(0x800, 0x40000),
            "AcquireSpinLocks": rng.randrange(0x1000, 0x80000),
            "SynchronizeExecutions": rng.randrange(0, 0x200),
            "AllocationsAttempted": succeeded + failed + deliberately,
            "AllocationsSucceeded": succeeded,
            # WRK counts big (> POOL_BUDDY_MAX) allocations here too; with special pool (0x1)
            # most allocations come from it
            "AllocationsSucceededSpecialPool": max(self.big_allocs, succeeded * 9 // 10)
            if level & 0x1
            else self.big_allocs,
            "AllocationsWithNoTag": 0,
            "TrimRequests": rng.randrange(0, 0x400) if level & 0x2 else 0,
            "Trims": rng.randrange(0, 0x100) if level & 0x2 else 0,
            "AllocationsFailed": failed,
            "AllocationsFailedDeliberately": deliberately,
            # 22000+: counts verifier-thunked frees (synthetic: the logged frees)
            "AllocationFreed": frees,
            "Loads": sum(d.loads for d in self.drivers),
            "Unloads": sum(d.unloads for d in self.drivers),
            "UnTrackedPool": untracked,
            "UserTrims": 0,
            **self._counters(self.g_cur, self.g_peak),
            "BurstAllocationsFailedDeliberately": 0,
            "SessionTrims": 0,
            "OptionChanges": 0,
            "VerifyMode": 0,
        }
        fields = [k for k in L.s["mm_driver_verifier_data"].fields]
        unknown = sorted(set(spec.stats) - set(fields))
        if unknown:
            raise ValueError(f"verifier.stats: {', '.join(unknown)} not in the profile")
        stats.update(spec.stats)
        self.stats = {k: stats.get(k, 0) for k in fields}
        buf = bytearray(L.size("mm_driver_verifier_data"))
        for k, v in self.stats.items():
            L.put(buf, 0, "mm_driver_verifier_data", k, v)
        self.kb.vwrite(self.vars["MmVerifierData"], bytes(buf))

    def bugcheck_params(self) -> list[int]:
        """0xC4 / 0x62 (driver unloading without freeing its pool): the driver's name
        (UNICODE_STRING), its verified data, its outstanding allocations."""
        loaded = [d for d in self.drivers if d.loaded]
        leaking = [d for d in loaded if d.cur["paged"][0] + d.cur["nonpaged"][0]] or loaded
        if not leaking:
            return [BUGCHECK_POOL_LEAK, 0, 0, 0]
        d = leaking[0]
        what = "mi_verifier_driver_entry" if self.mi else "suspect_driver_entry"
        name = d.suspect + self.L.off(what, "BaseName.Length")
        return [BUGCHECK_POOL_LEAK, name, d.vd, d.cur["paged"][0] + d.cur["nonpaged"][0]]

    # ------------------------------------------------------------ phase 2
    def finish(self) -> None:
        if self.spec is None:
            return
        self.rng2 = random.Random(self.kb.sc.seed ^ 0x56455232)  # "VER2"
        self._addresses()
        enabled = gc.isenabled()
        gc.disable()  # the logs make ~10^5 small objects that all stay alive
        try:
            log = self._write_pool_log() if self.spec.pool_log is not None else None
            irp = self._write_irp_log() if self.spec.irp_log is not None else None
        finally:
            if enabled:
                gc.enable()
        self.truth = self._truth(log, irp)
        self.kb.notes += self.notes

    def _addresses(self) -> None:
        """Freed small blocks: free blocks of their pool (a freed block), else another
        block of that pool (reused since), never a live tracked block."""
        pb = self.pool
        live = {a.va for d in self.drivers for a in d.allocs if a.live}
        free: dict[str, list[Block]] = {"nonpaged": [], "paged": []}
        used: dict[str, list[Block]] = {"nonpaged": [], "paged": []}
        for page in pb.pages:
            if page.pool not in free:
                continue
            for b in page.blocks:
                if not b.allocated:
                    free[page.pool].append(b)
                elif not b.internal and b.va + pb.lay.header_size not in live:
                    used[page.pool].append(b)
        hs, unit = pb.lay.header_size, pb.lay.unit
        self._free_blocks = {p: sorted(bs, key=lambda b: (b.units, b.va)) for p, bs in free.items()}
        self._free_sizes = {
            p: [b.units * unit - hs for b in bs] for p, bs in self._free_blocks.items()
        }
        self._used_blocks = used
        self._taken: set[int] = set()
        for ev in self.events:
            a = ev.a
            if ev.kind == "alloc" and not a.live and not a.big:
                a.va = self._freed_address(a.pool, a.charged, distinct=True)

    def _freed_address(self, pool: str, nbytes: int, distinct: bool = False) -> int:
        """A freed block's body VA: a free block big enough (a different one each time if
        ``distinct`` and possible), else a background block of the pool (reused since)."""
        rng = self.rng2
        blocks = self._free_blocks[pool]
        lo = bisect.bisect_left(self._free_sizes[pool], nbytes)
        if lo < len(blocks):
            span = len(blocks) - lo
            b = blocks[lo + int(rng.random() * span)]
            for _ in range(8 if distinct else 0):
                if b.va not in self._taken:
                    break
                b = blocks[lo + int(rng.random() * span)]
        else:
            fits = self._used_blocks[pool] or blocks
            if not fits:
                return self.pool_va(rng.randrange(0x100000, 0x400000) & ~0xF)
            b = fits[int(rng.random() * len(fits))]
        if distinct:
            self._taken.add(b.va)
        return b.va + self.pool.lay.header_size

    def _head_struct(self, what: str, names: tuple[str, ...]) -> tuple[struct.Struct, list[int]]:
        """A packer for an entry's fields before StackTrace (profile offsets and widths) and
        the order in which ``names``' values go into it."""
        lay = self.L.s[what]
        order = sorted(range(len(names)), key=lambda i: lay[names[i]].offset)
        fmt, pos = "<", 0
        for i in order:
            f = lay[names[i]]
            if f.offset < pos:
                raise ValueError(f"profile {what}: overlapping fields")
            fmt += "x" * (f.offset - pos) + {1: "B", 2: "H", 4: "I", 8: "Q"}[f.width]
            pos = f.offset + f.width
        st = lay["StackTrace"].offset
        if st < pos:
            raise ValueError(f"profile {what}: StackTrace overlaps the header fields")
        return struct.Struct(fmt + "x" * (st - pos)), order

    def _write_entries(
        self, buf: bytearray, length: int, index: int, what: str, names: tuple[str, ...],
        entry: Any,
    ) -> list[tuple[tuple[int, ...], list[int]]]:  # fmt: skip
        """Write events max(1, index - 2*length + 1) .. index into their slots: the header
        fields, the frames and a 0 terminator when shorter than the array (older frames
        after it stay, as the kernel leaves them). ``entry(n)`` gives (values of ``names``
        (unsigned), stack). Returns the valid entries' (values, stack), newest first."""
        esize = self.L.size(what)
        frames = self.frames if what == "pool_trace" else self.irp_frames
        head, order = self._head_struct(what, names)
        st = self.L.off(what, "StackTrace")
        packers = [struct.Struct(f"<{k}Q") for k in range(frames + 1)]
        out: list[tuple[tuple[int, ...], list[int]]] = []
        first = max(1, index - 2 * length + 1)
        valid_from = index - min(index, length) + 1
        mask = length - 1
        identity = order == list(range(len(names)))
        for n in range(first, index + 1):
            values, stack = entry(n)
            at = (n & mask) * esize
            if identity:
                head.pack_into(buf, at, *values)
            else:
                head.pack_into(buf, at, *(values[i] for i in order))
            stack = stack[:frames]
            if len(stack) < frames:
                packers[len(stack) + 1].pack_into(buf, at + st, *stack, 0)
            else:
                packers[frames].pack_into(buf, at + st, *stack)
            if n >= valid_from:
                out.append((values, stack))
        out.reverse()
        return out

    def _write_pool_log(self) -> dict[str, Any]:
        assert self.spec is not None and self.spec.pool_log is not None
        L = self.L
        length, index, P = self.spec.pool_log.length, self.pool_index, self.filler
        esize = L.size("pool_trace")
        for i, ev in enumerate(self.events):  # number the scenario's events
            if ev.kind == "alloc":
                ev.a.alloc_n = P + 1 + i
        # filler pairs needed: those whose events fall in the rewritten window
        first = max(1, index - 2 * length + 1)
        pairs: list[tuple[int, int, int, int, int, list[int], list[int]]] = []
        if P and first <= P:
            rng = self.rng2
            n_drv = len(self.fill_drivers)
            fill = [(d, self._fill_spec(d)) for d in self.fill_drivers]
            # I/O and worker-thread stacks alternate (their depths differ, so a newer, shorter
            # trace leaves older frames after its terminator, as in a real log)
            stacks = [[self._stacks(d, spec, k) for k in (0, 1)] for d, spec in fill]
            sizes = (0x20, 0x48, 0x80, 0x100, 0x1A0, 0x300)
            charged = {req: self.charged(req)[0] for req in sizes}
            threads = self.threads
            rnd, nt_, ns = rng.random, len(threads), len(sizes)
            for j in range((P - first) // 2 + 1):
                _d, spec = fill[j % n_drv]
                req = sizes[int(rnd() * ns)]
                va = self._freed_address(spec.pool, charged[req])
                t1, t2 = threads[int(rnd() * nt_)], threads[int(rnd() * nt_)]
                sa, sf = stacks[j % n_drv][j // n_drv % 2]
                pairs.append((va, req, charged[req], t1, t2, sa, sf))
        events = self.events

        def entry(n: int) -> tuple[tuple[int, int, int], list[int]]:
            if n <= P:
                k = P - n
                va, req, charged_, t1, t2, sa, sf = pairs[k // 2]
                if k % 2 == 0:  # the pair's free (the newer event)
                    return (va, charged_, t2), sf
                return (va, req, t1), sa
            ev = events[n - P - 1]
            a = ev.a
            if ev.kind == "free":
                return (a.va, a.charged, a.free_thread), a.free_stack
            return (a.va, a.req, a.alloc_thread), a.stack

        buf = bytearray(length * esize)
        names = ("Address", "Size", "Thread")
        written = self._write_entries(buf, length, index, "pool_trace", names, entry)
        self.kb.vwrite(self.pool_buf, bytes(buf))
        self.valid_from = index - min(index, length) + 1
        return {
            "va": self.pool_buf,
            "length": length,
            "index": index,
            "entries": [
                {"va": v[0], "bytes": v[1], "thread": v[2], "stack": list(stack)}
                for v, stack in written
            ],
        }

    def _irp_modules(self) -> list[ModuleLayout]:
        return [m for m in self.kb.modules[1:] if m.name.lower().endswith(".sys")]

    def _mod_off(self, m: ModuleLayout, salt: str) -> int:
        return 0x1000 + zlib.crc32(f"{m.name.lower()}:{salt}".encode()) % (m.size - 0x1800)

    def _irp_stack(self, m: ModuleLayout | None, kind: str, worker: bool) -> list[int]:
        if kind == "alloc":
            top = [self.nt("IovAllocateIrp"), self.nt("IoAllocateIrp")]
        else:
            top = [self.nt("IovCompleteRequest"), self.nt("IofCompleteRequest")]
        mid = []
        if m is not None:
            mid = [m.base + self._mod_off(m, kind), m.base + self._mod_off(m, "outer")]
        tail = [self.nt(f) for f in (WORKER_TAIL if worker else ("IofCallDriver", *IOCTL_TAIL))]
        return (top + mid + tail)[: self.irp_frames]

    def _write_irp_log(self) -> dict[str, Any]:
        assert self.spec is not None and self.spec.irp_log is not None
        L, rng = self.L, self.rng2
        il = self.spec.irp_log
        length, index = il.length, self.irp_index
        valid_from = index - min(index, length) + 1
        apc_slots = rng.sample(range(valid_from, index + 1), sum(a.count for a in il.apc_disabled))
        apc: dict[int, ModuleLayout] = {}
        pos = 0
        for a in il.apc_disabled:
            m = self._module(a.module)
            assert m is not None
            for n in apc_slots[pos : pos + a.count]:
                apc[n] = m
            pos += a.count
        mods = self._irp_modules()
        kad_w = L.s["irp_trace"]["KernelApcDisable"].width * 8
        sad_w = L.s["irp_trace"]["SpecialApcDisable"].width * 8

        def entry(n: int) -> tuple[tuple[int, ...], list[int]]:
            kind = "alloc" if rng.random() < 0.4 else "complete"
            worker = rng.random() < 0.3
            if n in apc:
                m: ModuleLayout | None = apc[n]
                sad, kad = -1, rng.choice((0, -1))
                irql = rng.choice((0, 0, 1))
            else:
                m = rng.choice(mods) if mods else None
                sad, kad = 0, (-1 if rng.random() < 0.15 else 0)
                irql = rng.choices((0, 1, 2), (7, 1, 2))[0]
            irp, thread = rng.choice(self.irps), rng.choice(self.threads)
            values = (irp, thread, kad & (1 << kad_w) - 1, sad & (1 << sad_w) - 1, irql)
            return values, self._irp_stack(m, kind, worker)

        buf = bytearray(length * L.size("irp_trace"))
        names = ("Irp", "Thread", "KernelApcDisable", "SpecialApcDisable", "Irql")
        written = self._write_entries(buf, length, index, "irp_trace", names, entry)
        self.kb.vwrite(self.irp_buf, bytes(buf))

        def signed(v: int, bits: int) -> int:
            return v - (1 << bits) if v >> (bits - 1) else v

        return {
            "va": self.irp_buf,
            "length": length,
            "index": index,
            "entries": [
                {
                    "irp": v[0],
                    "thread": v[1],
                    "irql": v[4],
                    "kernel_apc_disable": signed(v[2], kad_w),
                    "special_apc_disable": signed(v[3], sad_w),
                    "stack": list(stack),
                }
                for v, stack in written
            ],  # fmt: skip
        }

    # ---------------------------------------------------------------- truth
    def _walk(self, d: _Driver) -> list[_Alloc]:
        """Live entries in the order a reader walks them: newest page first, slot order."""
        out = []
        for page in reversed(d.pages):
            for state, a in page.slots:
                if state == "live":
                    assert a is not None
                    out.append(a)
        return out

    def _truth(self, log: dict[str, Any] | None, irp: dict[str, Any] | None) -> dict[str, Any]:
        assert self.spec is not None
        drivers = []
        for d in self.drivers:
            # an unloaded driver's counters went with its verified data: zero
            c = (
                self._counters(d.cur, d.peak)
                if d.loaded
                else dict.fromkeys(self._counters(_pools(), _pools()), 0)
            )
            drivers.append(
                {
                    "name": d.name,
                    "state": "loaded" if d.loaded else "unloaded",
                    "loads": d.loads,
                    "unloads": d.unloads,
                    "base": d.base if d.loaded else None,
                    "size": d.size if d.loaded else None,
                    "current_paged_allocs": c["CurrentPagedPoolAllocations"],
                    "current_nonpaged_allocs": c["CurrentNonPagedPoolAllocations"],
                    "current_paged_bytes": c["PagedBytes"],
                    "current_nonpaged_bytes": c["NonPagedBytes"],
                    "peak_paged_allocs": c["PeakPagedPoolAllocations"],
                    "peak_nonpaged_allocs": c["PeakNonPagedPoolAllocations"],
                    "peak_paged_bytes": c["PeakPagedBytes"],
                    "peak_nonpaged_bytes": c["PeakNonPagedBytes"],
                }
            )
        tracked = []
        sites: dict[tuple[str, int, tuple[int, ...]], list[int]] = {}
        valid_from = self.valid_from if log is not None else None
        for d in self.drivers:
            for a in self._walk(d):
                tracked.append({"driver": d.name, "va": a.va, "bytes": a.charged,
                                "tag": a.tag, "caller": a.caller})  # fmt: skip
                logged = valid_from is not None and a.alloc_n >= valid_from
                key = (d.name, a.caller, tuple(a.stack) if logged else ())
                s = sites.setdefault(key, [0, 0])
                s[0] += a.charged
                s[1] += 1
        ranked = sorted(sites.items(), key=lambda kv: (-kv[1][0], -kv[1][1], kv[0]))
        return {
            "level": self.spec.level,
            "stats": dict(self.stats),
            "drivers": drivers,
            "tracked": tracked,
            "tracker_pages": sum(len(d.pages) for d in self.drivers),
            "free_entries": sum(len(d.free) for d in self.drivers),
            "log": log,
            "irp_log": irp,
            "sites": [
                {
                    "driver": k[0],
                    "caller": k[1],
                    "outstanding_bytes": v[0],
                    "outstanding_allocs": v[1],
                    "stack": list(k[2]),
                }
                for k, v in ranked
            ],  # fmt: skip
            "layout": {
                "symbols": dict(self.vars),
                "suspect_entries": {d.name: d.suspect for d in self.drivers},
                "verified_data": {d.name: d.vd for d in self.drivers if d.loaded},
                "avl_nodes": {d.name: d.node for d in self.drivers if d.loaded},
                "avl_tables": self.tables_va,
                "tables_no": self.tables_no,
                "avl_table_of": dict(self.table_of),
                "tracker_page_vas": {
                    d.name: [p.va for p in reversed(d.pages)] for d in self.drivers if d.loaded
                },
                "unloaded_images": {
                    d.name: {"base": d.base, "size": d.size} for d in self.drivers if not d.loaded
                },
                "threads": list(self.threads),
                "irps": list(self.irps),
            },
        }


def _tag_int(tag: str) -> int:
    return int.from_bytes(tag.ljust(4).encode("ascii"), "little")
