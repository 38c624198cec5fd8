"""The kernel memory image: page tables, nt (with KDBG), drivers, pool objects, stacks.

Everything is written into a ``PhysicalMemory`` through real x64 page tables, so a
reader that translates virtual addresses the way the CPU does finds what the ground
truth says. Addresses not backed by a cited fact (PRCB offsets, pool tags of some
objects, global values) are synthetic but self-consistent; see ``KernelImage.notes``.
"""

from __future__ import annotations

import hashlib
import random
import struct
from dataclasses import dataclass, field
from typing import Any

from . import paging as pg
from .header import context_bytes
from .kdbg import encode_block, kd_copy_data_block_code
from .layout import PAGE_SIZE, kdbg_fields, kdbg_size, ldr_offsets
from .machine import WIN7, WIN10, ModuleLayout
from .paging import PageTables, canonical
from .pe import DEBUG_ENTRY, SCN_CODE, SCN_DATA, SCN_RDATA, Section, debug_directory, pe_header
from .physmem import PhysicalMemory
from .pool import PoolBuilder, PoolLayout
from .scenario import ModuleSpec, Scenario, TagSiteSpec, tag_bytes
from .segheap import SegmentHeapPoolBuilder
from .verifier import VerifierBuilder

_Q = struct.Struct("<Q")
_I = struct.Struct("<I")
_H = struct.Struct("<H")

KDBG_TAG = b"KDBG"
CONTEXT_SIZE = 0x4D0
PML4E_SPAN = 1 << 39


DRIVER_HINT = 0x800
STACK_HINT = 0x3000
STACK_PAGES = 6
TAG_SITE_LEN = 22  # mov ecx, imm32; mov edx, imm32; mov r8d, tag; call [rip+x] / call rel32
TAG_SITE_TAG_AT = 12


@dataclass
class KernelImage:
    mem: PhysicalMemory
    dtb: int
    kdbg_va: int
    kdbg: dict[str, Any]
    modules: list[ModuleLayout]
    translations: list[dict[str, Any]]
    context: dict[str, int]
    exception: dict[str, int]
    bugcheck_params: list[int]
    ps_loaded_module_list: int
    ps_active_process_head: int
    pfn_database_var: int
    symbols: dict[str, int]
    processors: list[dict[str, int]]
    pool_allocations: list[dict[str, Any]]
    pool: PoolBuilder
    memory: dict[str, int]
    pt: PageTables
    notes: list[str] = field(default_factory=list)
    verifier: dict[str, Any] | None = None
    pdb: dict[str, Any] | None = None


def pdb_identity(sc: Scenario) -> tuple[bytes, int]:
    """The GUID (its 16 bytes as RSDS and the PDB info stream hold them) and age of the forged
    kernel's PDB: fixed by the scenario's name, build and seed."""
    digest = hashlib.sha256(f"{sc.name}/{sc.build}/{sc.seed}".encode()).digest()
    return digest[:16], 1 + digest[16] % 3


class KernelBuilder:
    def __init__(self, sc: Scenario, profile: dict[str, Any]) -> None:
        assert sc.runs is not None and sc.modules is not None
        assert sc.kernel_base is not None and sc.kernel_size is not None
        self.sc = sc
        self.profile = profile
        self.rng = random.Random(sc.seed)
        self.c = WIN7 if sc.win7_like else WIN10
        self.mem = PhysicalMemory([(b, n) for b, n in sc.runs], [(b, n) for b, n in sc.omit_pages])
        self.kernel_base: int = sc.kernel_base
        self.kernel_size: int = sc.kernel_size
        assert sc.pool_base is not None and sc.drivers_base is not None
        self.pool_base: int = sc.pool_base
        self.drivers_base: int = sc.drivers_base
        self.symbols: dict[str, int] = {}
        self.translations: list[dict[str, Any]] = []
        self.referenced_va = 0
        self.notes: list[str] = [
            "POOL_HEADERs use the Win7 page-chain layout on every build (no segment heap)",
            f"OffsetPrcbContext {self.c.offset_prcb_context:#x} and PRCB layout are synthetic",
        ]
        self.modules: list[ModuleLayout] = []
        self.transition_va = 0

    # ---------------------------------------------------------------- helpers
    def pool_va(self, pa: int) -> int:
        return self.pool_base + pa

    def vwrite(self, va: int, data: bytes) -> None:
        pos = 0
        while pos < len(data):
            cur = va + pos
            pa, _, _, _ = self.pt.walk(cur)
            if pa is None:
                raise ValueError(f"forge: writing to unmapped VA {cur:#x}")
            n = min(PAGE_SIZE - (cur & 0xFFF), len(data) - pos)
            self.mem.write(pa, data[pos : pos + n])
            pos += n

    def q(self, va: int, value: int) -> None:
        self.vwrite(va, _Q.pack(value & (1 << 64) - 1))

    def nt_var(self, size: int, align: int = 8, name: str | None = None) -> int:
        va = (self._data_cursor + align - 1) // align * align
        self._data_cursor = va + size
        if self._data_cursor > self.kernel_base + self.kernel_size:
            raise ValueError("forge: nt .data overflow (kernel_size too small)")
        if name:
            self.symbols[name] = va
        self.vwrite(va, bytes(size))  # initialised data: zeros, never the page fill
        return va

    def nt_code(self, code: bytes, name: str) -> int:
        va = (self._text_cursor + 15) // 16 * 16
        self._text_cursor = va + len(code)
        self.vwrite(va, code)
        self.symbols[name] = va
        return va

    def add_translation(self, va: int, note: str, quirk: str | None = None) -> None:
        va = canonical(va)
        pa, size, leaf, level = self.pt.walk(va)
        if pa is None:
            size = {4: PML4E_SPAN, 3: pg.SIZE_1G, 2: pg.SIZE_2M, 1: pg.SIZE_4K}[level]
        t: dict[str, Any] = {
            "va": va,
            "pa": pa,
            "page_size": size,
            "pte": leaf,
            "level": level,
            "note": note,
        }
        if quirk:
            t["quirk"] = quirk
        if pa is None and level == 1 and leaf & pg.TRANSITION and not leaf & 0x400:
            # hardware: not present. Readers that resolve standby pages (kdmp-parser-rs,
            # the debugger) find the data here; the page is stored in the dump.
            t["transition_pa"] = (leaf & pg.ADDR_MASK) | (va & 0xFFF)
        self.translations.append(t)

    # ------------------------------------------------------------------ build
    def build(self) -> KernelImage:
        sc = self.sc
        self._place_nt()
        self.pt = PageTables(self.mem, self.c.pt_hint)
        self._map_fixed()
        self._nt_image()
        assert sc.pool is not None
        lay = PoolLayout.from_profile(self.profile)
        builder = SegmentHeapPoolBuilder if lay.name == "segment_heap" else PoolBuilder
        self.pool = builder(self, sc.pool, lay)
        self._drivers()
        self._stack()
        self._special_mappings()
        params = self._bugcheck_params()
        self.verifier = VerifierBuilder(self, self.pool)
        self.verifier.build()
        if sc.bugcheck.code == 0xC4 and sc.bugcheck.params is None and self.verifier.enabled:
            params = self.verifier.bugcheck_params()
        context = self._context(params)
        processors = self._processors(context)
        list_head = self._loaded_modules()
        kdbg_truth = self._kdbg(list_head, processors)
        self.verifier.finish()  # after the pool is final: the logs and the ground truth
        self._translations_common()
        exception = {
            "ExceptionCode": 0x80000003,
            "ExceptionFlags": 1,
            "ExceptionRecord": 0,
            "ExceptionAddress": context["Rip"],
            "NumberParameters": 0,
        }
        return KernelImage(
            mem=self.mem,
            dtb=self.pt.dtb,
            kdbg_va=kdbg_truth["va"],
            kdbg=kdbg_truth,
            modules=self.modules,
            translations=self.translations,
            context=context,
            exception=exception,
            bugcheck_params=params,
            ps_loaded_module_list=list_head,
            ps_active_process_head=self.symbols["PsActiveProcessHead"],
            pfn_database_var=self.symbols["MmPfnDatabase"],
            symbols=dict(sorted(self.symbols.items())),
            processors=processors,
            pool_allocations=self.pool.internal,
            pool=self.pool,
            memory=self.memory,
            pt=self.pt,
            notes=self.notes + [f"scenario {sc.name}"],
            verifier=self.verifier.truth,
            pdb=self.pdb,
        )

    # --------------------------------------------------------- physical / PT
    def _place_nt(self) -> None:
        self.nt_large = (self.kernel_size + pg.SIZE_2M - 1) // pg.SIZE_2M
        prefer = (self.kernel_base & (pg.SIZE_1G - 1)) >> 12
        self.nt_pfn = self.mem.alloc_contiguous(
            self.nt_large * 512, align=512, hint=0x1000, prefer=prefer
        )

    def _map_fixed(self) -> None:
        sc = self.sc
        assert sc.self_map_index is not None
        idx = sc.self_map_index
        self.pte_base = canonical(idx << 39)
        self.pt.set_pml4e(idx, self.pt.dtb | pg.KERNEL_RW | pg.NX)
        for i in range(self.nt_large):
            self.pt.map_2m(self.kernel_base + i * pg.SIZE_2M, self.nt_pfn + i * 512, pg.KERNEL_RW)
        top = (self.mem.max_pfn + 1) * PAGE_SIZE
        self.pool_gib = (top + pg.SIZE_1G - 1) // pg.SIZE_1G
        for g in range(self.pool_gib):
            self.pt.map_1g(self.pool_base + g * pg.SIZE_1G, g << 18, pg.KERNEL_RW | pg.NX)

    # ------------------------------------------------------------------- nt
    def _nt_image(self) -> None:
        size = self.kernel_size
        if size < 0x100000:
            raise ValueError("kernel_size must be at least 1 MiB")
        data_rva = (size * 3 // 4) & ~0xFFFF
        rdata_rva = data_rva - 0x40000
        self.nt_sections = [
            Section(".text", 0x1000, rdata_rva - 0x1000, SCN_CODE),
            Section(".rdata", rdata_rva, 0x40000, SCN_RDATA),
            Section(".data", data_rva, size - data_rva, SCN_DATA),
        ]
        self._text_cursor = self.kernel_base + 0x1000
        self._data_cursor = self.kernel_base + data_rva
        base = self.kernel_base
        # a KiSystemStartup-ish entry point, KeBugCheckEx prologue, an idle loop
        text_span = rdata_rva - 0x1000
        self._text_cursor = base + 0x1000 + ((text_span // 7) & ~0xFFF)
        self.nt_code(
            bytes.fromhex("48894c2408 4889542410 4c89442418 4c894c2420 9c 4883ec30 fa"),
            "KeBugCheckEx",
        )
        self._text_cursor = base + 0x1000 + ((text_span * 2 // 7) & ~0xFFF)
        self.nt_code(bytes.fromhex("4883ec28 fb f390 ebfc"), "KiIdleLoop")
        self.nt_code(bytes.fromhex("4883ec28 e800000000 4883c428 c3"), "KiSystemStartup")
        self._text_cursor = base + 0x1000 + ((text_span * 4 // 7) & ~0xFFF)
        alloc_fn = self.nt_code(
            bytes.fromhex("48895c2408 48896c2410 4889742418 57 4883ec30 8bf9 488bea c3"),
            "ExAllocatePoolWithTag",
        )
        sites_at = (self._text_cursor + 0x3F) & ~0x3F
        self._text_cursor = base + 0x1000 + ((text_span * 3 // 7) & ~0xFFF)
        ts = 0x4CE7979D if self.sc.win7_like else 0x9E9C1A6B
        entry = self.symbols["KiSystemStartup"] - base
        # The debug directory and RSDS record, at the end of .rdata (as the linker puts them).
        guid, age = pdb_identity(self.sc)
        pdb_path = "ntkrnlmp.pdb"
        debug_rva = rdata_rva + 0x40000 - 0x100
        debug = debug_directory(debug_rva, ts, guid, age, pdb_path)
        self.vwrite(base + debug_rva, debug)
        self.pdb = {
            "name": pdb_path,
            "guid": guid.hex(),
            "age": age,
            "debug_directory_va": base + debug_rva,
            "rsds_va": base + debug_rva + 2 * DEBUG_ENTRY,
            "sections": [[s.name, s.rva, s.size, s.characteristics] for s in self.nt_sections],
        }
        self.vwrite(
            base,
            pe_header(base, size, entry, ts, self.nt_sections, debug=(debug_rva, 2 * DEBUG_ENTRY)),
        )
        nt_spec = next((m for m in self.sc.modules or [] if m.name.lower() == "ntoskrnl.exe"), None)
        strings: list[tuple[str, int]] = []
        if nt_spec is not None:
            cursor = rdata_rva + 0x100
            for s in nt_spec.strings:
                off = s.offset if s.offset is not None else cursor
                self.vwrite(base + off, s.text.encode("latin-1") + b"\0")
                strings.append((s.text, off))
                if s.offset is None:
                    cursor = (off + len(s.text) + 1 + 7) // 8 * 8
        path = nt_spec.path if nt_spec and nt_spec.path else "\\SystemRoot\\system32\\ntoskrnl.exe"
        sites = self._tag_sites(nt_spec, base, size, sites_at - base, rdata_rva, alloc_fn, False)
        self.modules.append(
            ModuleLayout(
                "ntoskrnl.exe", path, base, size, base + entry, strings, timestamp=ts,
                tag_sites=sites,
            )
        )  # fmt: skip

    def _tag_site_offsets(
        self, spec: ModuleSpec | None, size: int, auto: int, auto_end: int
    ) -> list[tuple[TagSiteSpec, int]]:
        """Where each tag site's 4 tag bytes go (auto-placed ones every 0x20 from ``auto``);
        overlapping or out-of-image sites are refused."""
        out: list[tuple[TagSiteSpec, int]] = []
        spans: list[tuple[int, int]] = []
        for site in spec.tag_sites if spec else []:
            if site.offset is None:
                off = auto + TAG_SITE_TAG_AT
                auto += 0x20
                if off - TAG_SITE_TAG_AT + TAG_SITE_LEN > auto_end:
                    raise ValueError(f"module {spec.name if spec else ''}: too many tag sites")
            else:
                off = site.offset
            start = off - TAG_SITE_TAG_AT
            if start < 0x400 or start + TAG_SITE_LEN > size:
                raise ValueError(
                    f"module {spec.name if spec else ''}: tag site {off:#x} does not fit"
                )
            if any(start < e and s < start + TAG_SITE_LEN for s, e in spans):
                raise ValueError(
                    f"module {spec.name if spec else ''}: tag sites overlap at {off:#x}"
                )
            spans.append((start, start + TAG_SITE_LEN))
            out.append((site, off))
        return out

    def _tag_sites(
        self, spec: ModuleSpec | None, base: int, size: int, auto: int, auto_end: int,
        target: int, via_import: bool,
    ) -> list[tuple[str, int]]:  # fmt: skip
        """Write ``mov ecx, PoolType; mov edx, NumberOfBytes; mov r8d, Tag`` and a call to
        ExAllocatePoolWithTag (through the import slot at ``target``, or directly)."""
        sites = []
        for site, off in self._tag_site_offsets(spec, size, auto, auto_end):
            va = base + off - TAG_SITE_TAG_AT
            code = b"\xb9" + _I.pack(site.pool_type & 0xFFFFFFFF)
            code += b"\xba" + _I.pack(site.size & 0xFFFFFFFF)
            code += b"\x41\xb8" + tag_bytes(site.tag)
            end = va + len(code)
            if via_import:
                code += b"\xff\x15" + struct.pack("<i", target - (end + 6))
            else:
                code += b"\xe8" + struct.pack("<i", target - (end + 5)) + b"\x90"
            assert len(code) == TAG_SITE_LEN
            self.vwrite(va, code)
            sites.append((site.tag.ljust(4), off))
        return sites

    # -------------------------------------------------------------- drivers
    def _drivers(self) -> None:
        specs = [m for m in self.sc.modules or [] if m.name.lower() != "ntoskrnl.exe"]
        if specs:
            big = max(specs, key=lambda m: m.size)
            trans_name = next((m.name for m in specs if m.name.lower() == "ntfs.sys"), big.name)
        else:
            trans_name = ""
        cursor = self.drivers_base
        self.module_gap_va = 0
        for spec in specs:
            pages = (spec.size + PAGE_SIZE - 1) // PAGE_SIZE
            if pages < 2:
                raise ValueError(f"module {spec.name}: size must be at least 0x2000")
            size = pages * PAGE_SIZE
            base = cursor
            text_pages = max(1, (pages - 1) // 2)
            data_rva = (1 + text_pages) * PAGE_SIZE
            string_pages: set[int] = {data_rva // PAGE_SIZE}  # the import slot's page
            for _, off in self._tag_site_offsets(spec, size, 0x1200, data_rva):
                a = off - TAG_SITE_TAG_AT
                string_pages.update(range(a // PAGE_SIZE, (a + TAG_SITE_LEN - 1) // PAGE_SIZE + 1))
            strings: list[tuple[str, int]] = []
            packed = data_rva + 0x40
            for s in spec.strings:
                raw = s.text.encode("latin-1") + b"\0"
                off = s.offset if s.offset is not None else packed
                if off < 0x400 or off + len(raw) > size:
                    raise ValueError(f"module {spec.name}: string {s.text!r} does not fit")
                if s.offset is None:
                    packed = (off + len(raw) + 7) // 8 * 8
                strings.append((s.text, off))
                string_pages.update(range(off // PAGE_SIZE, (off + len(raw) - 1) // PAGE_SIZE + 1))
            transition_page = pages - 1 if (spec.name == trans_name and pages >= 4) else -1
            if transition_page in string_pages:
                transition_page = -1
            for i in range(pages):
                pfn = self.mem.alloc(DRIVER_HINT)
                va = base + i * PAGE_SIZE
                if i == transition_page:
                    # a standby page: PTE not valid, Transition bit 11, protection READWRITE
                    raw_pte = (pfn << 12) | pg.TRANSITION | (4 << 5)
                    self.pt.set_pte(va, raw_pte)
                    self.transition_va = va + 0x80
                    continue
                code = 1 <= i <= text_pages
                self.pt.map_4k(va, pfn, pg.KERNEL_RW if code else pg.KERNEL_RW | pg.NX)
            sections = [
                Section(".text", 0x1000, text_pages * PAGE_SIZE, SCN_CODE),
                Section(".data", data_rva, size - data_rva, SCN_DATA),
            ]
            ts = self.rng.randrange(0x4A000000, 0x5F000000)
            entry_rva = 0x1000 + 0x10
            dll = spec.name.lower().endswith(".dll")
            self.vwrite(base, pe_header(base, size, entry_rva, ts, sections, dll=dll))
            self.vwrite(base + entry_rva, bytes.fromhex("48895c2408 4883ec20 33c0 4883c420 c3"))
            for text, off in strings:
                self.vwrite(base + off, text.encode("latin-1") + b"\0")
            slot = base + data_rva + 8
            self.q(slot, self.symbols["ExAllocatePoolWithTag"])  # the import address table slot
            sites = self._tag_sites(spec, base, size, 0x1200, data_rva, slot, True)
            path = spec.path or "\\SystemRoot\\system32\\drivers\\" + spec.name
            self.modules.append(
                ModuleLayout(
                    spec.name, path, base, size, base + entry_rva, strings, timestamp=ts,
                    tag_sites=sites,
                )
            )  # fmt: skip
            if not self.module_gap_va:
                self.module_gap_va = base + size  # the unmapped page after the first driver
            cursor = base + size + PAGE_SIZE
        self.drivers_end = cursor

    # ---------------------------------------------------------------- stack
    def _stack(self) -> None:
        guard = (self.drivers_end + 0xFFFF) // 0x10000 * 0x10000
        self.pt.set_pte(guard, 0)  # guard page: PTE zero (not present)
        for i in range(STACK_PAGES):
            self.pt.map_4k(
                guard + (i + 1) * PAGE_SIZE, self.mem.alloc(STACK_HINT), pg.KERNEL_RW | pg.NX
            )
        self.stack_guard = guard
        self.stack_limit = guard + PAGE_SIZE
        self.stack_base = guard + (STACK_PAGES + 1) * PAGE_SIZE
        self.rsp = self.stack_base - 0x1D8

    def _special_mappings(self) -> None:
        # legacy VGA frame buffer: a hole PFN, mapped uncached like a device
        dev = 0xA0
        while dev in self.mem.run_set:
            dev += 1
        self.device_pfn = dev
        self.device_va = self.stack_base + PAGE_SIZE
        self.pt.map_4k(self.device_va, dev, pg.KERNEL_RW | pg.PCD | pg.NX)
        self.pat_va = 0
        if self.sc.pat_large_page:
            va = self.kernel_base + 0x2000000
            pfn = self.mem.alloc_contiguous(512, align=512, hint=0x1000)
            self.pt.map_2m(va, pfn, pg.KERNEL_RW | pg.PWT | pg.PAT_LARGE | pg.NX)
            self.pat_va = va

    # ------------------------------------------------------------- bugcheck
    def _bugcheck_params(self) -> list[int]:
        bc = self.sc.bugcheck
        if bc.params is not None:
            return [p & (1 << 64) - 1 for p in bc.params]
        if bc.code != 0xD1:
            return [0, 0, 0, 0]
        mf = next((m for m in self.modules if m.name.lower() == "myfault.sys"), self.modules[0])
        referenced = self.c.paged_pool_start + (self.rng.randrange(0x100000, 0x4000000) & ~0xF)
        self.referenced_va = referenced
        return [referenced, 2, 0, mf.base + 0x1000 + 0x3E0]

    def _context(self, params: list[int]) -> dict[str, int]:
        r = self.rng
        ctx = {
            "ContextFlags": 0x10001F,
            "MxCsr": 0x1F80,
            "SegCs": 0x10,
            "SegDs": 0x2B,
            "SegEs": 0x2B,
            "SegFs": 0x53,
            "SegGs": 0x2B,
            "SegSs": 0x18,
            "EFlags": 0x286,
            "Dr6": 0xFFFF0FF0,
            "Dr7": 0x400,
            "Rax": self.c.paged_pool_start + (r.getrandbits(24) << 4),
            "Rcx": self.sc.bugcheck.code,
            "Rdx": params[0],
            "Rbx": r.getrandbits(16),
            "Rsp": self.rsp,
            "Rbp": self.rsp + 0x80,
            "Rsi": self.pool_base + (r.getrandbits(20) << 4),
            "Rdi": 0,
            "R8": params[1],
            "R9": params[2],
            "R10": r.getrandbits(32),
            "R11": self.rsp - 0x40,
            "R12": 0,
            "R13": 0,
            "R14": 0,
            "R15": 0,
            "Rip": self.symbols["KeBugCheckEx"],
            "ControlWord": 0x27F,
            "MxCsr2": 0x1F80,
            "MxCsr_Mask": 0xFFFF,
        }
        # the crashing thread's stack: return address into KiBugCheckDispatch-ish code
        ret = self.symbols["KiIdleLoop"] + 0x69
        frame = _Q.pack(ret) + _Q.pack(self.sc.bugcheck.code) + b"".join(_Q.pack(p) for p in params)
        self.vwrite(self.rsp, frame)
        return ctx

    # ----------------------------------------------------------- processors
    def _processors(self, ctx: dict[str, int]) -> list[dict[str, int]]:
        n = self.sc.processors
        pcr0 = self.nt_var(0x180 + self.c.prcb_size, align=PAGE_SIZE, name="KiInitialPcr")
        out = []
        prcbs = [pcr0 + 0x180]
        for _ in range(1, n):
            pcr = self.pool.alloc_big(0x180 + self.c.prcb_size, "Pcr ", internal=True)
            prcbs.append(pcr + 0x180)
        for i, prcb in enumerate(prcbs):
            c = dict(ctx)
            if i:
                c["Rip"] = self.symbols["KiIdleLoop"] + 4
                c["Rsp"] = self.pool_base + 0x0100000 * (i + 1) - 0x38
                c["Rcx"] = c["Rdx"] = c["R8"] = c["R9"] = 0
            ctx_va = prcb + 0x130
            self.vwrite(ctx_va, context_bytes(c))
            self.q(prcb + self.c.offset_prcb_context, ctx_va)
            self.vwrite(prcb + 0x24, _H.pack(i))
            out.append(
                {"index": i, "prcb": prcb, "context": ctx_va, "rsp": c["Rsp"], "rip": c["Rip"]}
            )
        return out

    # -------------------------------------------------------- module list
    def _loaded_modules(self) -> int:
        off = ldr_offsets(self.profile)
        head = self.nt_var(16, 16, "PsLoadedModuleList")
        entries = []
        for m in self.modules:
            base_name = m.name
            full = m.path.encode("utf-16-le")
            short = base_name.encode("utf-16-le")
            esz = self.c.ldr_entry_size
            body = self.pool.alloc(esz + len(full) + 2 + len(short) + 2, "MmLd")
            full_va = body + esz
            short_va = full_va + len(full) + 2
            self.vwrite(full_va, full + b"\0\0")
            self.vwrite(short_va, short + b"\0\0")
            self.q(body + off["DllBase"], m.base)
            self.q(body + off["EntryPoint"], m.entry)
            self.vwrite(body + off["SizeOfImage"], _I.pack(m.size))
            for key, va, raw in (("FullDllName", full_va, full), ("BaseDllName", short_va, short)):
                self.vwrite(body + off[key], _H.pack(len(raw)) + _H.pack(len(raw) + 2) + bytes(4))
                self.q(body + off[key] + 8, va)
            m.ldr_entry = body
            entries.append(body + off["InLoadOrderLinks"])
        ring = [head, *entries]
        for i, node in enumerate(ring):
            self.q(node, ring[(i + 1) % len(ring)])
            self.q(node + 8, ring[i - 1])
        return head

    # ---------------------------------------------------------------- KDBG
    def _global_values(self, processors: list[dict[str, int]]) -> dict[str, int | str]:
        total = self.mem.run_set.count()
        runs = self.mem.runs
        desc = self.pool.alloc(16 + 16 * len(runs), "MmPh")
        raw = _I.pack(len(runs)) + bytes(4) + _Q.pack(total)
        raw += b"".join(_Q.pack(b) + _Q.pack(c) for b, c in runs)
        self.vwrite(desc, raw)
        self.memory = self._memory(total, self.pool.finalize())
        return {
            "ExpNumberOfPagedPools": 4,
            "MmPfnDatabase": self.c.pfn_database,
            "MmLowestPhysicalPage": runs[0][0],
            "MmHighestPhysicalPage": self.mem.max_pfn,
            **self.memory,
            "MmNonPagedSystemStart": self.c.nonpaged_system_start,
            "MmNonPagedPoolStart": self.pool_base,
            "MmNonPagedPoolEnd": self.pool_base + self.pool_gib * pg.SIZE_1G,
            "MmPagedPoolStart": self.c.paged_pool_start,
            "MmPagedPoolEnd": self.c.paged_pool_end,
            "PoolTrackTable": self.pool.tracker_va,
            "MmSystemRangeStart": self.c.system_range_start,
            "NtBuildLab": self.sc.build_lab or "",
            "MmSpecialPoolTag": self.sc.special_pool_tag,
            "KernelVerifier": self.sc.kernel_verifier,
            "MmTotalCommitLimitMaximum": max(total * 3, self.memory["MmTotalCommitLimit"]),
            # CSDVersion: service pack number << 8 (7601 = Win7 SP1, 6001/6002 = Vista SP1/SP2)
            "CmNtCSDVersion": {7601: 0x100, 6001: 0x100, 6002: 0x200}.get(self.sc.build, 0),
            "MmPhysicalMemoryBlock": desc,
        }

    def _memory(self, total: int, counts: dict[str, int]) -> dict[str, int]:
        """The !vm variables, consistent with the pool the forge wrote (pages)."""
        sc = self.sc
        forged = counts["nonpaged_total"]
        nonpaged = forged if sc.nonpaged_pool_pages is None else sc.nonpaged_pool_pages
        if nonpaged < forged:
            raise ValueError(
                f"nonpaged_pool_pages {nonpaged} is below the {forged} nonpaged pool pages forged"
            )
        if sc.nonpaged_pool_max_pages is None:
            np_max = max(total * 3 // 4, nonpaged)
        else:
            np_max = sc.nonpaged_pool_max_pages
        if nonpaged > np_max:
            raise ValueError(f"nonpaged_pool_pages {nonpaged} exceeds the maximum {np_max}")
        paged = counts["paged_total"]
        committed = nonpaged + paged + total // 8
        limit = max(total * 2 - total // 64, committed + total // 8)
        available = max(total - nonpaged - paged - total // 10, total // 50)
        return {
            "MmNumberOfPhysicalPages": total,
            "MmAvailablePages": available,
            "MmResidentAvailablePages": min(total, available + total // 25),
            "MmAllocatedNonPagedPool": nonpaged,
            "MmMaximumNonPagedPoolInBytes": np_max * PAGE_SIZE,
            "MmPagedPoolCommit": paged,
            "MmSizeOfPagedPoolInBytes": self.c.paged_pool_end - self.c.paged_pool_start + 1,
            "MmTotalCommittedPages": committed,
            "MmTotalCommitLimit": limit,
            "MmPeakCommitment": min(limit, committed + total // 16),
        }

    def _kdbg(self, list_head: int, processors: list[dict[str, int]]) -> dict[str, Any]:
        sc = self.sc
        size = kdbg_size(self.profile)
        if size % 8:
            raise ValueError("profile kdbg.size must be a multiple of 8")
        dl_head = self.nt_var(16, 16, "KdpDebuggerDataListHead")
        kdbg_va = self.nt_var(size, 16, "KdDebuggerDataBlock")
        active = self.nt_var(16, 16, "PsActiveProcessHead")
        self.q(active, active)
        self.q(active + 8, active)
        self.q(dl_head, kdbg_va)
        self.q(dl_head + 8, kdbg_va)
        values = self._global_values(processors)

        block = bytearray(size)
        _Q.pack_into(block, 0, dl_head)
        _Q.pack_into(block, 8, dl_head)
        block[0x10:0x14] = KDBG_TAG
        _I.pack_into(block, 0x14, size)
        fields: dict[str, int] = {}
        targets: dict[str, int | str] = {}
        value_fields = {
            "KernBase": self.kernel_base,
            "OffsetPrcbContext": self.c.offset_prcb_context,
            "PteBase": self.pte_base,
        }
        for name, spec in kdbg_fields(self.profile):
            offset = spec["offset"]
            if offset + 8 > size and spec.get("kind") == "address":
                continue
            if spec.get("kind") == "value":
                width = spec.get("width", 8)
                raw = value_fields.get(name, 0)
                if name not in value_fields:
                    self.notes.append(f"KDBG value field {name} has no known value; wrote 0")
                block[offset : offset + width] = raw.to_bytes(width, "little")
                fields[name] = raw
                continue
            target = spec.get("target")
            if name == "PsLoadedModuleList":
                va = list_head
            elif name == "PsActiveProcessHead":
                va = active
            elif name == "KiProcessorBlock":
                slots = self.c.processor_block_slots
                va = self.nt_var(8 * slots, 16, name)
                self.vwrite(va, b"".join(_Q.pack(p["prcb"]) for p in processors))
            elif name == "MmVerifierData":
                va = self.verifier.data_va()  # the struct (zero unless the verifier is on)
            elif name in self.pool.globals:
                va = self.pool.globals[name]  # written by the pool builder
                targets[name] = values[name]
            elif target is None:
                va = self.nt_var(0x40, 16, name)  # an (all-zero) structure
            else:
                val = values.get(name, 0)
                if name not in values:
                    self.notes.append(f"KDBG target {name} has no known value; wrote 0")
                if target == "cstr":
                    data = str(val).encode("ascii") + b"\0"
                    va = self.nt_var(len(data), 8, name)
                    self.vwrite(va, data)
                else:
                    width = 4 if target == "u32" else 8
                    va = self.nt_var(8, 8, name)
                    self.vwrite(va, int(val).to_bytes(width, "little"))
                targets[name] = val
            self.symbols.setdefault(name, va)
            _Q.pack_into(block, offset, va)
            fields[name] = va
        if "MmPfnDatabase" not in self.symbols:
            self.symbols["MmPfnDatabase"] = self.nt_var(8, 8, "MmPfnDatabase")
            self.q(self.symbols["MmPfnDatabase"], self.c.pfn_database)

        pointer = sc.kdbg_pointer and sc.kdbg != "no_pointer"
        truth: dict[str, Any] = {
            "va": kdbg_va,
            "mode": sc.kdbg,
            "encoded": sc.kdbg == "encoded",
            # what the header's KdDebuggerDataBlock holds: the block's VA, or 0
            "pointer": pointer,
            "header_pointer": kdbg_va if pointer else 0,
            "size": size,
            "list_head": dl_head,
            "header": {"Flink": dl_head, "Blink": dl_head, "OwnerTag": "KDBG", "Size": size},
            "fields": fields,
            "values": targets,
        }
        stored = bytes(block)
        if sc.kdbg == "encoded" or not sc.win7_like:
            flag = self.nt_var(8, 8, "KdpDataBlockEncoded")
            never_va = self.nt_var(8, 8, "KiWaitNever")
            always_va = self.nt_var(8, 8, "KiWaitAlways")
            never = self.rng.getrandbits(64)
            always = self.rng.getrandbits(64)
            encoded = sc.kdbg == "encoded"
            self.vwrite(flag, bytes([1 if encoded else 0]))
            self.q(never_va, never)
            self.q(always_va, always)
            code = kd_copy_data_block_code(
                self._text_cursor + (-self._text_cursor % 16),
                flag,
                kdbg_va,
                never_va,
                always_va,
                size,
            )
            code_va = self.nt_code(code, "KdCopyDataBlock")
            # the three decode inputs: A = VA of the flag, N and W = the variables' values
            truth["keys"] = {
                "KdpDataBlockEncoded": flag,
                "KiWaitNever": never,
                "KiWaitAlways": always,
            }
            truth["key_symbols"] = {
                "KdpDataBlockEncoded": flag,
                "KiWaitNever": never_va,
                "KiWaitAlways": always_va,
                "KdCopyDataBlock": code_va,
            }
            truth["flag_value"] = 1 if encoded else 0
            if encoded:
                stored = encode_block(stored, never, always, flag)
        self.vwrite(kdbg_va, stored)
        truth["plain_hex"] = bytes(block).hex()
        return truth

    # --------------------------------------------------------- translations
    def _translations_common(self) -> None:
        nt = self.modules[0]
        add = self.add_translation
        add(nt.base, "nt image base (2 MiB page)")
        add(self.symbols["KdDebuggerDataBlock"] + 0x10, "KDBG OwnerTag (2 MiB page)")
        ldr = self.modules[-1].ldr_entry
        add(ldr + 0x30, "last KLDR_DATA_TABLE_ENTRY.DllBase (1 GiB page)")
        if self.device_pfn * PAGE_SIZE < self.pool_gib * pg.SIZE_1G:
            add(
                self.pool_va(self.device_pfn * PAGE_SIZE) + 0x123, "hole PFN through the 1 GiB page"
            )
        for b, _c in self.sc.omit_pages:
            if b * PAGE_SIZE < self.pool_gib * pg.SIZE_1G:
                add(self.pool_va(b * PAGE_SIZE) + 0x40, "omit_pages PFN through the 1 GiB page")
        for m in self.modules[1:]:
            if m.name.lower() == "myfault.sys":
                add(m.base, "myfault.sys image base (4 KiB page)")
                for text, off in m.strings:
                    add(m.base + off, f"string {text!r} in myfault.sys")
                for tag, off in m.tag_sites:
                    add(m.base + off, f"tag {tag!r} in myfault.sys code")
        if self.module_gap_va:
            add(self.module_gap_va + 0x10, "unmapped page between two driver images")
        if self.transition_va:
            add(self.transition_va, "transition PTE (bit 11, not valid)")
        add(self.stack_guard + 0x800, "kernel stack guard page (PTE 0)")
        add(self.rsp, "crashing thread stack (Rsp)")
        add(self.device_va + 0x10, "4 KiB mapping of a device PFN outside the runs")
        idx = self.sc.self_map_index or 0
        add(
            canonical((idx << 39) | (idx << 30) | (idx << 21) | (idx << 12)),
            "self-map: the PML4 itself",
        )
        add(self.drivers_base + 0x10000000, "unmapped 2 MiB range (PDE not present)")
        add(0x10000, "user address with no PML4E")
        if self.pat_va:
            add(self.pat_va + 0x1234, "2 MiB page with PAT bit 12 set", quirk="pat_bit12")
