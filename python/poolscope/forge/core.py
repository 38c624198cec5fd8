"""forge(): scenario -> dump file + ground truth."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .header import (
    HEADER_SIZE,
    SIG_DU64,
    SIG_FDMP,
    SIG_PAGE,
    SIG_SDMP,
    bitmap_header,
    dump_header32,
    dump_header64,
    filetime,
    iso_utc,
    rdmp_header,
)
from .kernel import KernelBuilder, KernelImage
from .layout import PAGE_SIZE, load_profile
from .physmem import subtract_ranges
from .pooltruth import pool_truth
from .scenario import (
    BITMAP_TYPES,
    DUMP_TYPES,
    RDMP_TYPES,
    Scenario,
)
from .truth import GroundTruth
from .writer import PageFill, Placement, bitmap_bytes, write_dump

ScenarioLike = Scenario | dict[str, Any] | str | Path


def _align(x: int, a: int) -> int:
    return (x + a - 1) // a * a


def forge(scenario: ScenarioLike, out_path: str | Path) -> GroundTruth:
    """Write the dump described by ``scenario`` (a Scenario, a dict, a JSON path or a
    builtin name) to ``out_path`` and return the ground truth of what was written."""
    sc = Scenario.coerce(scenario).resolved()
    assert sc.runs is not None
    profile = load_profile(sc.build)
    kimg = KernelBuilder(sc, profile).build()

    runs = [(b, c) for b, c in sc.runs]
    usable = subtract_ranges(runs, [(b, c) for b, c in sc.omit_pages])
    dtype = sc.dump_type
    storage: dict[str, Any]
    if dtype == "full":
        stored = runs
        first = HEADER_SIZE
        prefix_tail = b""
        storage = {"kind": "runs", "first_page_offset": first}
    elif dtype in BITMAP_TYPES:
        stored = usable
        bits = _align(runs[-1][0] + runs[-1][1], 32)
        first = _align(HEADER_SIZE + 0x38 + bits // 8, PAGE_SIZE)
        sig = SIG_FDMP if dtype == "complete_bitmap" else SIG_SDMP
        present = sum(c for _, c in stored)
        prefix_tail = bitmap_header(sig, first, present, bits, bitmap_bytes(stored, bits))
        storage = {
            "kind": "bitmap",
            "signature": "FDMP" if sig == SIG_FDMP else "SDMP",
            "first_page_offset": first,
            "total_present_pages": present,
            "bits": bits,
        }
    elif dtype in RDMP_TYPES:
        stored = usable
        if stored and stored[0][0] == 0:
            raise ValueError("RDMP dumps cannot store PFN 0 (a PFN-0 entry ends the range list)")
        first = _align(HEADER_SIZE + 0x30 + (len(stored) + 1) * 16, PAGE_SIZE)
        present = sum(c for _, c in stored)
        complete = dtype == "complete_memory"
        prefix_tail = rdmp_header(complete, first, stored, present)
        storage = {
            "kind": "rdmp",
            "first_page_offset": first,
            "metadata_size": first - 0x2020,
            "ranges": [list(r) for r in stored],
            "total_number_of_pages": present if complete else None,
        }
    else:
        stored = []
        first = 0x1000 if dtype == "dump32" else HEADER_SIZE
        prefix_tail = b""
        storage = {"kind": "header_only", "first_page_offset": None}

    placement = Placement(stored, first)
    file_size = max(placement.end, first)
    fields = _header_fields(sc, kimg, file_size)
    if dtype == "dump32":
        fields["MachineImageType"] = 0x14C
        fields["ValidDump"] = 0x504D5544
        prefix = dump_header32(fields)
        header_truth = {
            k: fields[k]
            for k in (
                "Signature", "ValidDump", "MajorVersion", "MinorVersion", "MachineImageType",
                "NumberProcessors", "BugCheckCode", "DumpType",
            )
        }  # fmt: skip
    else:
        prefix = dump_header64(fields) + prefix_tail
        header_truth = _header_truth(fields)

    fill = PageFill(sc.fill, sc.seed)
    pool = pool_truth(kimg, fill, stored, placement)
    content = {pfn: bytes(page) for pfn, page in sorted(kimg.mem.pages.items())}
    size = write_dump(out_path, prefix, placement, content if stored else {}, fill)
    assert size == file_size, (size, file_size)

    translations = []
    if stored:
        for t in kimg.translations:
            t = dict(t)
            if t["pa"] is None:
                t["reason"] = "not_present"
            elif placement.offset(t["pa"] // PAGE_SIZE) is None:
                t["reason"] = "not_in_dump"
            else:
                t["reason"] = "ok"
            translations.append(t)

    return GroundTruth(
        path=str(out_path),
        scenario=sc.to_dict(),
        dump_type=dtype,
        build=sc.build,
        file_size=file_size,
        header=header_truth,
        storage=storage,
        runs=[list(r) for r in runs],
        present_ranges=[list(r) for r in stored],
        physical_pages=sum(c for _, c in stored),
        kernel_base=kimg.modules[0].base,
        kdbg=kimg.kdbg,
        modules=[
            {
                "name": m.name,
                "path": m.path,
                "base": m.base,
                "size": m.size,
                "entry": m.entry,
                "ldr_entry": m.ldr_entry,
                "timestamp": m.timestamp,
                "strings": [{"text": t, "offset": o} for t, o in m.strings],
                "tag_sites": [{"tag": t, "offset": o} for t, o in m.tag_sites],
            }
            for m in kimg.modules
        ],
        translations=translations,
        system_time_iso=iso_utc(sc.system_time),
        uptime_s=fields["SystemUpTime"] / 10_000_000,
        symbols=kimg.symbols,
        processors=kimg.processors,
        pool_allocations=kimg.pool_allocations,
        pool=pool,
        fill=sc.fill,
        seed=sc.seed,
        notes=kimg.notes,
        verifier=kimg.verifier,
        pdb=kimg.pdb,
        _content={p: c for p, c in content.items() if placement.offset(p) is not None},
        _fill=fill,
        _placement=placement,
    )


def _header_fields(sc: Scenario, k: KernelImage, file_size: int) -> dict[str, Any]:
    assert sc.runs is not None and sc.suite_mask is not None and sc.attributes is not None
    return {
        "Signature": SIG_PAGE,
        "ValidDump": SIG_DU64,
        "MajorVersion": sc.major_version,
        "MinorVersion": sc.build,
        "DirectoryTableBase": k.dtb,
        "PfnDatabase": k.pfn_database_var,
        "PsLoadedModuleList": k.ps_loaded_module_list,
        "PsActiveProcessHead": k.ps_active_process_head,
        "MachineImageType": 0x8664,
        "NumberProcessors": sc.processors,
        "BugCheckCode": sc.bugcheck.code,
        "BugCheckCodeParameters": list(k.bugcheck_params),
        "KdDebuggerDataBlock": k.kdbg["header_pointer"],
        "Runs": [list(r) for r in sc.runs],
        "NumberOfPages": sum(c for _, c in sc.runs),
        "ContextRecord": dict(k.context),
        "Exception": dict(k.exception),
        "DumpType": DUMP_TYPES[sc.dump_type],
        "RequiredDumpSpace": file_size,
        "SystemTime": filetime(sc.system_time),
        "Comment": sc.comment,
        "SystemUpTime": round(sc.uptime_s * 10_000_000),
        "MiniDumpFields": 0,
        "SecondaryDataState": 0,
        "ProductType": sc.product_type,
        "SuiteMask": sc.suite_mask,
        "WriterStatus": 0,
        "KdSecondaryVersion": sc.kd_secondary_version,
        "Attributes": sc.attributes,
        "BootId": sc.boot_id,
    }


def _header_truth(f: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in f.items() if k not in ("Runs", "NumberOfPages")}
    out["PhysicalMemoryBlock"] = {
        "NumberOfRuns": len(f["Runs"]),
        "NumberOfPages": f["NumberOfPages"],
        "Run": f["Runs"],
    }
    return out
