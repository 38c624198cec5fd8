"""DUMP_HEADER64 (spec section 1), BMP/RDMP headers (2b/2c) and the CONTEXT record."""

from __future__ import annotations

import struct
from datetime import UTC, datetime
from typing import Any

HEADER_SIZE = 0x2000
PAGE_FILL = b"PAGE"
SIG_PAGE = 0x45474150  # "PAGE"
SIG_DU64 = 0x34365544  # "DU64"
SIG_DUMP = 0x504D5544  # "DUMP"
SIG_SDMP = 0x504D4453  # "SDMP"
SIG_FDMP = 0x504D4446  # "FDMP"
SIG_RDMP = 0x504D4452  # "RDMP"
MAX_RUNS = 42  # (700 - 16) // 16 whole runs fit in PhysicalMemoryBlockBuffer

_CTX_U64 = [
    ("Dr0", 0x48), ("Dr1", 0x50), ("Dr2", 0x58), ("Dr3", 0x60), ("Dr6", 0x68), ("Dr7", 0x70),
    ("Rax", 0x78), ("Rcx", 0x80), ("Rdx", 0x88), ("Rbx", 0x90), ("Rsp", 0x98), ("Rbp", 0xA0),
    ("Rsi", 0xA8), ("Rdi", 0xB0), ("R8", 0xB8), ("R9", 0xC0), ("R10", 0xC8), ("R11", 0xD0),
    ("R12", 0xD8), ("R13", 0xE0), ("R14", 0xE8), ("R15", 0xF0), ("Rip", 0xF8),
]  # fmt: skip
_CTX_U16 = [
    ("SegCs", 0x38), ("SegDs", 0x3A), ("SegEs", 0x3C), ("SegFs", 0x3E), ("SegGs", 0x40),
    ("SegSs", 0x42), ("ControlWord", 0x100),
]  # fmt: skip
_CTX_U32 = [
    ("ContextFlags", 0x30), ("MxCsr", 0x34), ("EFlags", 0x44), ("MxCsr2", 0x118),
    ("MxCsr_Mask", 0x11C),
]  # fmt: skip
CONTEXT_SIZE = 0x4D0


def context_bytes(ctx: dict[str, int]) -> bytes:
    """An AMD64 CONTEXT (0x4D0 bytes). MxCsr (+0x34) must equal FltSave.MxCsr (+0x118)."""
    out = bytearray(CONTEXT_SIZE)
    for name, off in _CTX_U64:
        struct.pack_into("<Q", out, off, ctx.get(name, 0))
    for name, off in _CTX_U16:
        struct.pack_into("<H", out, off, ctx.get(name, 0))
    for name, off in _CTX_U32:
        struct.pack_into("<I", out, off, ctx.get(name, 0))
    return bytes(out)


def filetime(iso: str) -> int:
    """ISO 8601 (UTC if no zone) -> FILETIME (100 ns units since 1601-01-01 UTC)."""
    dt = datetime.fromisoformat(iso)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    delta = dt - datetime(1601, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * 10_000_000 + delta.microseconds * 10


def iso_utc(iso: str) -> str:
    """Canonical form of a scenario time: UTC, ``YYYY-MM-DDTHH:MM:SS[.ffffff]Z``."""
    dt = datetime.fromisoformat(iso)
    dt = dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
    fmt = "%Y-%m-%dT%H:%M:%S.%fZ" if dt.microsecond else "%Y-%m-%dT%H:%M:%SZ"
    return dt.strftime(fmt)


def dump_header64(f: dict[str, Any]) -> bytes:
    """The 0x2000-byte header. ``f`` holds the field values by spec name; the
    PhysicalMemoryBlock is given as ``Runs`` [[base, count], ...] plus ``NumberOfPages``.
    Bytes that no field covers keep the "PAGE" fill, as in dumps Windows writes."""
    h = bytearray(PAGE_FILL * (HEADER_SIZE // 4))
    struct.pack_into(
        "<IIIIQQQQIII", h, 0, SIG_PAGE, f["ValidDump"], f["MajorVersion"], f["MinorVersion"],
        f["DirectoryTableBase"], f["PfnDatabase"], f["PsLoadedModuleList"],
        f["PsActiveProcessHead"], f["MachineImageType"], f["NumberProcessors"], f["BugCheckCode"],
    )  # fmt: skip
    struct.pack_into("<I4Q", h, 0x3C, 0, *f["BugCheckCodeParameters"])
    h[0x60:0x80] = bytes(32)  # VersionUser
    struct.pack_into("<Q", h, 0x80, f["KdDebuggerDataBlock"])
    runs = f["Runs"]
    if len(runs) > MAX_RUNS:
        raise ValueError(f"at most {MAX_RUNS} runs fit in the dump header")
    struct.pack_into("<IIQ", h, 0x88, len(runs), 0, f["NumberOfPages"])
    for i, (base, count) in enumerate(runs):
        struct.pack_into("<QQ", h, 0x98 + 16 * i, base, count)
    h[0x348 : 0x348 + CONTEXT_SIZE] = context_bytes(f["ContextRecord"])
    exc = f["Exception"]
    h[0xF00:0xF98] = bytes(0x98)
    struct.pack_into(
        "<IIQQI", h, 0xF00, exc["ExceptionCode"], exc["ExceptionFlags"], exc["ExceptionRecord"],
        exc["ExceptionAddress"], exc["NumberParameters"],
    )  # fmt: skip
    struct.pack_into("<IIqq", h, 0xF98, f["DumpType"], 0, f["RequiredDumpSpace"], f["SystemTime"])
    comment = f["Comment"].encode("ascii", "replace")[:127]
    h[0xFB0:0x1030] = comment.ljust(128, b"\0")
    struct.pack_into(
        "<qIIIIIBBHII", h, 0x1030, f["SystemUpTime"], f["MiniDumpFields"],
        f["SecondaryDataState"], f["ProductType"], f["SuiteMask"], f["WriterStatus"], 0,
        f["KdSecondaryVersion"], 0, f["Attributes"], f["BootId"],
    )  # fmt: skip
    return bytes(h)


def dump_header32(f: dict[str, Any]) -> bytes:
    """A 32-bit "PAGE"+"DUMP" 0x1000-byte header, for refusal tests only.

    Layout beyond the signatures is from the classic DUMP_HEADER32 (not in the spec;
    unverified): fields at 0x08.., KdDebuggerDataBlock at 0x60, DumpType at 0xF88.
    """
    h = bytearray(PAGE_FILL * (0x1000 // 4))
    params = [p & 0xFFFFFFFF for p in f["BugCheckCodeParameters"]]
    struct.pack_into(
        "<IIIIIIIIIII4I", h, 0, SIG_PAGE, SIG_DUMP, f["MajorVersion"], f["MinorVersion"],
        f["DirectoryTableBase"] & 0xFFFFFFFF, 0, 0, 0, f["MachineImageType"],
        f["NumberProcessors"], f["BugCheckCode"], *params,
    )  # fmt: skip
    struct.pack_into("<I", h, 0xF88, f["DumpType"])
    return bytes(h)


def bitmap_header(signature: int, first_page: int, present: int, bits: int, bitmap: bytes) -> bytes:
    """BMP_HEADER64 at 0x2000 + bitmap, padded with zeros up to ``first_page``."""
    out = bytearray(first_page - HEADER_SIZE)
    struct.pack_into("<II", out, 0, signature, SIG_DUMP)
    struct.pack_into("<QQQ", out, 0x20, first_page, present, bits)
    out[0x38 : 0x38 + len(bitmap)] = bitmap
    return bytes(out)


def rdmp_header(
    complete: bool, first_page: int, ranges: list[tuple[int, int]], total_pages: int
) -> bytes:
    """RDMP_HEADER64 at 0x2000 (spec 2c) followed by the PFN-range list and a zero
    terminator entry. MetadataSize = FirstPageOffset - 0x2020 (the check kdmp-parser uses).
    Type 0xA also records NumberOfRanges and TotalNumberOfPages at 0x2020."""
    out = bytearray(first_page - HEADER_SIZE)
    metadata = first_page - 0x2020
    struct.pack_into("<IIIIQQ", out, 0, 0x40, SIG_RDMP, SIG_DUMP, 0, metadata, first_page)
    if complete:
        struct.pack_into("<IHHQ", out, 0x20, len(ranges), 0, 0, total_pages)
    for i, (base, count) in enumerate(ranges):
        struct.pack_into("<QQ", out, 0x30 + 16 * i, base, count)
    return bytes(out)
