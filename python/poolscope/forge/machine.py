"""What the pool and verifier builders need of the machine being forged.

``kernel.KernelBuilder`` implements ``Machine``; the builders (pool.py, segheap.py,
verifier.py) depend on this module only, so imports run one way: core -> kernel -> the
builders -> machine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from .paging import PageTables
from .physmem import PhysicalMemory
from .scenario import Scenario


@dataclass
class BuildConsts:
    """Per-family constants. Values marked synthetic in ``notes`` are not from a source."""

    pt_hint: int
    pfn_database: int
    paged_pool_start: int
    paged_pool_end: int
    session_pool_start: int
    nonpaged_system_start: int
    system_range_start: int
    offset_prcb_context: int
    prcb_size: int
    ldr_entry_size: int
    processor_block_slots: int


WIN7 = BuildConsts(
    pt_hint=0x187,
    pfn_database=0xFFFFFA8000000000,
    paged_pool_start=0xFFFFF8A000000000,
    paged_pool_end=0xFFFFF8BFFFFFFFFF,
    session_pool_start=0xFFFFF900C0000000,
    nonpaged_system_start=0xFFFFF88000000000,
    system_range_start=0xFFFF080000000000,
    offset_prcb_context=0x4BD8,
    prcb_size=0x4D00,
    ldr_entry_size=0xE0,
    processor_block_slots=64,
)
WIN10 = BuildConsts(
    pt_hint=0x1AD,
    pfn_database=0xFFFFE70000000000,
    paged_pool_start=0xFFFFC40000000000,
    paged_pool_end=0xFFFFC4FFFFFFFFFF,
    session_pool_start=0xFFFFD88000000000,
    nonpaged_system_start=0xFFFFF00000000000,
    system_range_start=0xFFFF800000000000,
    offset_prcb_context=0x6D40,
    prcb_size=0x7000,
    ldr_entry_size=0x120,
    processor_block_slots=64,
)


@dataclass
class ModuleLayout:
    name: str
    path: str
    base: int
    size: int
    entry: int
    strings: list[tuple[str, int]]
    ldr_entry: int = 0
    timestamp: int = 0
    tag_sites: list[tuple[str, int]] = field(default_factory=list)


class Machine(Protocol):
    """The forged machine as the builders see it: its memory and page tables, nt's data
    section (``nt_var``), its symbols, modules and notes."""

    sc: Scenario
    profile: dict[str, Any]
    c: BuildConsts
    mem: PhysicalMemory
    pt: PageTables
    symbols: dict[str, int]
    notes: list[str]
    modules: list[ModuleLayout]
    referenced_va: int
    kernel_base: int
    drivers_base: int
    nt_sections: list[Any]

    def pool_va(self, pa: int) -> int: ...
    def vwrite(self, va: int, data: bytes) -> None: ...
    def q(self, va: int, value: int) -> None: ...
    def nt_var(self, size: int, align: int = 8, name: str | None = None) -> int: ...
