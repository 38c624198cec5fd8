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
class ModuleSpec:
    name: str
    path: str | None = None
    """FullDllName; ``None`` derives ``\\SystemRoot\\system32\\drivers\\<name>``."""
    size: int = 0x10000
    strings: list[StringSpec] = field(default_factory=list)


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
                "7601.24545.amd64fre.win7sp1_ldr_escrow.200102-1707"
                if w7
                else "19041.1.amd64fre.vb_release.191206-1406"
            )
        if sc.attributes is None:
            sc.attributes = 0x10 if sc.dump_type == "live_kernel_bitmap" else 0
        if sc.modules is None:
            sc.modules = default_modules()
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
    s32 = "\\SystemRoot\\system32\\"
    drv = "\\SystemRoot\\system32\\drivers\\"
    return [
        ModuleSpec("hal.dll", s32 + "hal.dll", 0x49000),
        ModuleSpec("kdcom.dll", s32 + "kdcom.dll", 0xA000),
        ModuleSpec("PSHED.dll", s32 + "PSHED.dll", 0x14000),
        ModuleSpec("CLFS.SYS", s32 + "CLFS.SYS", 0x5E000),
        ModuleSpec("CI.dll", s32 + "CI.dll", 0xC0000),
        ModuleSpec("ACPI.sys", drv + "ACPI.sys", 0x57000),
        ModuleSpec("Ntfs.sys", drv + "Ntfs.sys", 0x1A3000, [StringSpec("NtFs")]),
        ModuleSpec(
            "myfault.sys",
            "\\??\\C:\\Windows\\system32\\drivers\\myfault.sys",
            0x7000,
            [StringSpec("Leak")],
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
    if key == "pat_large_page":
        if isinstance(value, str):
            return value.strip().lower() in ("1", "true", "yes", "on")
        return bool(value)
    return value


def _module(m: Any) -> ModuleSpec:
    if isinstance(m, ModuleSpec):
        return copy.deepcopy(m)
    unknown = set(m) - {"name", "path", "size", "strings"}
    if unknown:
        raise ValueError(f"unknown module keys: {sorted(unknown)}")
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
    )


# --------------------------------------------------------------------- builtins
_WIN7_OMIT = [[0x4800, 0x200], [0x5400, 0x80], [0x5FFF, 1]]
_WIN10_OMIT = [[0x4A00, 0x300], [0x7000, 0x100]]

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
BUILTINS["win7sp1-bitmap"] = dict(BUILTINS["win7sp1"], name="win7sp1-bitmap")
BUILTINS["win7sp1-bitmap"]["dump_type"] = "kernel_bitmap"
BUILTINS["win10-19045-encoded"] = dict(
    BUILTINS["win10-19045"], name="win10-19045-encoded", kdbg="encoded"
)
BUILTINS["win7sp1-4g"] = dict(BUILTINS["win7sp1"], name="win7sp1-4g", ram_mib=4096)


def builtin(name: str) -> Scenario:
    """A built-in scenario: ``win7sp1`` (the demo), ``win7sp1-bitmap``, ``win10-19045``,
    ``win10-19045-encoded``, ``win7sp1-4g`` (a 4 GiB pattern-filled full dump)."""
    try:
        data = BUILTINS[name]
    except KeyError:
        raise KeyError(f"no builtin scenario {name!r}; known: {sorted(BUILTINS)}") from None
    return Scenario.from_dict(copy.deepcopy(data))
