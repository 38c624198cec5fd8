"""A minimal but well-formed PE32+ header (what a loaded image has at its base)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

IMAGE_FILE_MACHINE_AMD64 = 0x8664
E_LFANEW = 0xE8
SIZE_OF_HEADERS = 0x400

_DOS_STUB = (
    b"\x0e\x1f\xba\x0e\x00\xb4\x09\xcd\x21\xb8\x01\x4c\xcd\x21"
    b"This program cannot be run in DOS mode.\r\r\n$"
)

SCN_CODE = 0x60000020  # CNT_CODE | MEM_EXECUTE | MEM_READ
SCN_RDATA = 0x48000040  # INITIALIZED_DATA | NOT_PAGED | MEM_READ
SCN_DATA = 0xC8000040  # INITIALIZED_DATA | NOT_PAGED | MEM_READ | MEM_WRITE


@dataclass
class Section:
    name: str
    rva: int
    size: int
    characteristics: int


def pe_header(
    image_base: int,
    size_of_image: int,
    entry_rva: int,
    timestamp: int,
    sections: list[Section],
    dll: bool = False,
    debug: tuple[int, int] | None = None,
) -> bytes:
    """Bytes of the headers page content (``SIZE_OF_HEADERS`` bytes). ``debug`` is the debug
    directory's (RVA, size): data directory 6, IMAGE_DIRECTORY_ENTRY_DEBUG."""
    out = bytearray(SIZE_OF_HEADERS)
    # IMAGE_DOS_HEADER
    struct.pack_into(
        "<2sHHHHHHHHHHHH", out, 0, b"MZ", 0x90, 3, 0, 4, 0, 0xFFFF, 0, 0xB8, 0, 0, 0, 0x40
    )
    struct.pack_into("<I", out, 0x3C, E_LFANEW)
    out[0x40 : 0x40 + len(_DOS_STUB)] = _DOS_STUB
    nt = E_LFANEW
    out[nt : nt + 4] = b"PE\0\0"
    characteristics = 0x0022 | (0x2000 if dll else 0)  # EXECUTABLE | LARGE_ADDRESS_AWARE
    struct.pack_into(
        "<HHIIIHH", out, nt + 4, IMAGE_FILE_MACHINE_AMD64, len(sections), timestamp, 0, 0,
        0xF0, characteristics,
    )  # fmt: skip
    code = sum(s.size for s in sections if s.characteristics & 0x20)
    data = sum(s.size for s in sections if s.characteristics & 0x40)
    base_of_code = min((s.rva for s in sections if s.characteristics & 0x20), default=0x1000)
    opt = nt + 24
    struct.pack_into("<HBBIIIII", out, opt, 0x20B, 9, 0, code, data, 0, entry_rva, base_of_code)
    struct.pack_into("<QII", out, opt + 0x18, image_base, 0x1000, 0x200)
    struct.pack_into("<HHHHHHI", out, opt + 0x28, 6, 1, 6, 1, 6, 1, 0)
    struct.pack_into("<IIIHH", out, opt + 0x38, size_of_image, SIZE_OF_HEADERS, 0, 1, 0x0160)
    struct.pack_into("<QQQQII", out, opt + 0x48, 0x80000, 0x2000, 0x100000, 0x1000, 0, 16)
    if debug is not None:
        struct.pack_into("<II", out, opt + 0x70 + 6 * 8, *debug)
    sec = opt + 0xF0
    raw = SIZE_OF_HEADERS
    for i, s in enumerate(sections):
        name = s.name.encode("ascii")[:8].ljust(8, b"\0")
        raw_size = (s.size + 0x1FF) // 0x200 * 0x200
        struct.pack_into(
            "<8sIIIIIIHHI", out, sec + 40 * i, name, s.size, s.rva, raw_size, raw, 0, 0, 0, 0,
            s.characteristics,
        )  # fmt: skip
        raw += raw_size
    return bytes(out)


IMAGE_DEBUG_TYPE_CODEVIEW = 2
IMAGE_DEBUG_TYPE_REPRO = 16
DEBUG_ENTRY = 28


def debug_directory(rva: int, timestamp: int, guid: bytes, age: int, pdb_path: str) -> bytes:
    """IMAGE_DEBUG_DIRECTORY entries at ``rva`` followed by the CodeView ``RSDS`` record (GUID
    as its 16 bytes, age, PDB path), as MSVC's linker writes them: a REPRO entry (no data)
    first, then CODEVIEW pointing at the record right after the directory."""
    rsds = b"RSDS" + guid + struct.pack("<I", age) + pdb_path.encode() + b"\0"
    rec_rva = rva + 2 * DEBUG_ENTRY
    entries = struct.pack("<IIHHIIII", 0, timestamp, 0, 0, IMAGE_DEBUG_TYPE_REPRO, 0, 0, 0)
    entries += struct.pack(
        "<IIHHIIII", 0, timestamp, 0, 0, IMAGE_DEBUG_TYPE_CODEVIEW, len(rsds), rec_rva, rec_rva
    )
    return entries + rsds
