"""A kernel PDB written byte for byte as MSVC's linker lays it out (MSF 7.0), so that tests can
hand poolscope a real ``ntkrnlmp.pdb`` for a forged dump without anything from outside.

What is written, stream by stream (the layout follows LLVM's PDB documentation and
microsoft-pdb's ``PDB/dbi``, ``PDB/include/msf.h``; ``llvm-pdbutil dump`` checks the result in
the tests):

* the MSF container: superblock, two free page maps (block 1 active, block 2 inactive), the
  stream directory and the block that lists the directory's blocks; 4096-byte blocks;
* stream 1, PDB info (VC70): signature, age, GUID, an empty named-stream map, feature VC140;
* stream 2, TPI (V80) and stream 4, IPI (empty): type records from 0x1000 — for every
  structure and union a forward reference (LF_STRUCTURE/LF_UNION with the fwdref property),
  then its LF_FIELDLIST (LF_MEMBER entries) and definition; members of structure type refer to
  the forward reference, as MSVC writes them; LF_POINTER, LF_ARRAY, LF_BITFIELD, LF_MODIFIER,
  LF_ENUM (+ LF_ENUMERATE) where the types need them; unnamed types as ``<unnamed-tag>`` with a
  unique name;
* stream 3, DBI (V70): header, no modules, the optional debug header whose SectionHdr entry
  names the section header stream (IMAGE_SECTION_HEADERs of nt's image);
* the symbol record stream: S_PUB32 for every global (functions flagged), S_GDATA32 for data;
* the publics stream (GSI hash over the S_PUB32 records, address map) and the globals stream
  (GSI hash over the S_GDATA32 records): hashStringV1 buckets, as the linker builds them.

Types come in Volatility 3 ISF shape (``user_types``: ``{name: {kind, size, fields: {name:
{offset, type}}}}``, field types ``base``/``pointer``/``bitfield``/``struct``/``union``/
``array``/``enum``), so that the same description gives the ISF and the PDB.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BLOCK = 4096
MSF_MAGIC = b"Microsoft C/C++ MSF 7.00\r\n\x1aDS\0\0\0"

# type leaves
LF_MODIFIER, LF_POINTER, LF_FIELDLIST, LF_BITFIELD = 0x1001, 0x1002, 0x1203, 0x1205
LF_ENUMERATE, LF_ARRAY, LF_STRUCTURE, LF_UNION, LF_ENUM, LF_MEMBER = (
    0x1502, 0x1503, 0x1505, 0x1506, 0x1507, 0x150D)  # fmt: skip
LF_ULONG, LF_UQUADWORD = 0x8004, 0x800A
PROP_FWDREF, PROP_HASUNIQUENAME = 0x80, 0x200
# symbol kinds
S_PUB32, S_GDATA32 = 0x110E, 0x110D
# primitive type indexes
PRIMITIVE = {"void": 0x03, "char": 0x10, "unsigned char": 0x20, "short": 0x11,
             "unsigned short": 0x21, "long": 0x12, "unsigned long": 0x22, "long long": 0x13,
             "unsigned long long": 0x23, "int": 0x74, "unsigned int": 0x75}  # fmt: skip
T_64PVOID, T_UQUAD = 0x603, 0x23
PDB_VC70, TPI_V80, DBI_V70, VC140 = 20000404, 20040203, 19990903, 20140508
GSI_HDR_VERSION = 0xEFFE0000 + 19990810
IPHR_HASH = 4096


@dataclass(frozen=True)
class PdbSection:
    name: str
    rva: int
    size: int
    characteristics: int


def numeric(value: int) -> bytes:
    """A CodeView numeric leaf."""
    if 0 <= value < 0x8000:
        return struct.pack("<H", value)
    if 0 <= value < 1 << 32:
        return struct.pack("<HI", LF_ULONG, value)
    return struct.pack("<HQ", LF_UQUADWORD, value)


def cstr(s: str) -> bytes:
    return s.encode("utf-8") + b"\0"


def pad4(data: bytes) -> bytes:
    """LF_PADn bytes up to a 4-byte boundary (0xF0 | bytes left)."""
    n = -len(data) % 4
    return data + bytes(0xF0 | (n - i) for i in range(n))


def record(kind: int, payload: bytes) -> bytes:
    """A type or symbol record: u16 length (after itself), u16 kind, payload, padding."""
    # the length counts from the kind; padding makes length + 2 a multiple of 4
    body = struct.pack("<H", kind) + payload
    n = -(len(body) + 2) % 4
    body += bytes(0xF0 | (n - i) for i in range(n))
    return struct.pack("<H", len(body)) + body


# ------------------------------------------------------------------------------------ types
class TypeTable:
    """TPI records in ISF terms. ``add_isf`` writes every user type (forward references first)."""

    def __init__(self) -> None:
        self.records: list[bytes] = []
        self.memo: dict[Any, int] = {}
        self.fwd: dict[str, int] = {}
        self.defs: dict[str, int] = {}
        self.enums: dict[str, int] = {}

    def add(self, kind: int, payload: bytes) -> int:
        self.records.append(record(kind, payload))
        return 0x1000 + len(self.records) - 1

    def once(self, key: Any, kind: int, payload: bytes) -> int:
        if key not in self.memo:
            self.memo[key] = self.add(kind, payload)
        return self.memo[key]

    @staticmethod
    def names(name: str) -> tuple[str, str | None]:
        """(the record's name, its unique name): unnamed ISF types become <unnamed-tag>."""
        if name.startswith("__unnamed"):
            return "<unnamed-tag>", f".?AT<unnamed-type-{name}>@@"
        return name, None

    def aggregate(self, kind: str, name: str, fields: int, size: int, count: int, fwd: bool) -> int:
        rec_name, unique = self.names(name)
        props = (PROP_FWDREF if fwd else 0) | (PROP_HASUNIQUENAME if unique else 0)
        tail = numeric(size) + cstr(rec_name) + (cstr(unique) if unique else b"")
        if kind == "union":
            return self.add(LF_UNION, struct.pack("<HHI", count, props, fields) + tail)
        return self.add(LF_STRUCTURE, struct.pack("<HHIII", count, props, fields, 0, 0) + tail)

    def type_index(self, t: dict[str, Any], isf: dict[str, Any]) -> tuple[int, int]:
        """(type index, size in bytes) of an ISF field type."""
        kind = t["kind"]
        if kind == "base":
            size = isf["base_types"].get(t["name"], {}).get("size", 0)
            return PRIMITIVE[t["name"]], size
        if kind == "pointer":
            sub = t.get("subtype", {"kind": "base", "name": "void"})
            if sub["kind"] == "base" and sub["name"] == "void":
                return T_64PVOID, 8
            target, _ = self.type_index(sub, isf)
            attrs = 0x0C | (8 << 13)  # CV_PTR_64, mode pointer, size 8
            return self.once(("ptr", target), LF_POINTER, struct.pack("<II", target, attrs)), 8
        if kind == "bitfield":
            under, size = self.type_index(t["type"], isf)
            key = ("bits", under, t["bit_length"], t["bit_position"])
            payload = struct.pack("<IBB", under, t["bit_length"], t["bit_position"])
            return self.once(key, LF_BITFIELD, payload), size
        if kind in ("struct", "union"):
            return self.fwd[t["name"]], isf["user_types"][t["name"]]["size"]
        if kind == "enum":
            return self.enums[t["name"]], isf["enums"][t["name"]]["size"]
        if kind == "array":
            elem, size = self.type_index(t["subtype"], isf)
            total = size * t["count"]
            key = ("array", elem, total)
            payload = struct.pack("<II", elem, T_UQUAD) + numeric(total) + cstr("")
            return self.once(key, LF_ARRAY, payload), total
        if kind == "volatile":  # forge extension: a volatile-qualified subtype (LF_MODIFIER)
            under, size = self.type_index(t["subtype"], isf)
            return self.once(("mod", under), LF_MODIFIER, struct.pack("<IH", under, 2)), size
        raise ValueError(f"forge pdb: field type {t!r} not supported")

    def add_isf(self, isf: dict[str, Any]) -> None:
        for name, e in isf.get("enums", {}).items():
            items = b"".join(
                pad4(struct.pack("<HH", LF_ENUMERATE, 3) + numeric(v) + cstr(k))
                for k, v in e["constants"].items()
            )
            flist = self.add(LF_FIELDLIST, items)
            under = PRIMITIVE[e["base"]]
            payload = struct.pack("<HHII", len(e["constants"]), 0, under, flist) + cstr(name)
            self.enums[name] = self.add(LF_ENUM, payload)
        users = isf["user_types"]
        for name, u in users.items():
            self.fwd[name] = self.aggregate(u["kind"], name, 0, 0, 0, fwd=True)
        for name, u in users.items():
            members = b""
            for fname, f in sorted(u["fields"].items(), key=lambda kv: kv[1]["offset"]):
                ti, _ = self.type_index(f["type"], isf)
                members += pad4(
                    struct.pack("<HHI", LF_MEMBER, 3, ti) + numeric(f["offset"]) + cstr(fname)
                )
            flist = self.add(LF_FIELDLIST, members)
            count = len(u["fields"])
            self.defs[name] = self.aggregate(u["kind"], name, flist, u["size"], count, fwd=False)

    def stream(self) -> bytes:
        data = b"".join(self.records)
        return tpi_stream(0x1000 + len(self.records), data)


def tpi_stream(end: int, data: bytes) -> bytes:
    """TPI/IPI header (V80, no hash stream) and the records."""
    header = struct.pack(
        "<IIIIIHHIIiIiIiI", TPI_V80, 56, 0x1000, end, len(data), 0xFFFF, 0xFFFF, 4, 0x3FFFF,
        0, 0, 0, 0, 0, 0,
    )  # fmt: skip
    assert len(header) == 56
    return header + data


# ---------------------------------------------------------------------------------- symbols
def hash_string_v1(name: bytes) -> int:
    """LLVM's hashStringV1 (microsoft-pdb's LHashPbCb), what GSI buckets use."""
    result = 0
    n4 = len(name) // 4
    for i in range(n4):
        result ^= struct.unpack_from("<I", name, 4 * i)[0]
    rest = name[4 * n4 :]
    if len(rest) >= 2:
        result ^= struct.unpack_from("<H", rest)[0]
        rest = rest[2:]
    if rest:
        result ^= rest[0]
    result |= 0x20202020
    result ^= result >> 11
    return (result ^ (result >> 16)) & 0xFFFFFFFF


def gsi_hash(entries: list[tuple[bytes, int]]) -> bytes:
    """A GSI hash table over (name, offset in the symbol record stream) pairs."""
    buckets: list[list[tuple[bytes, int]]] = [[] for _ in range(IPHR_HASH)]
    for name, off in entries:
        buckets[hash_string_v1(name) % IPHR_HASH].append((name, off))
    records, starts = b"", []
    bitmap = [0] * ((IPHR_HASH + 32) // 32)
    count = 0
    for i, b in enumerate(buckets):
        if not b:
            continue
        bitmap[i // 32] |= 1 << (i % 32)
        starts.append(count * 12)
        for _name, off in sorted(b):
            records += struct.pack("<II", off + 1, 1)
            count += 1
    tail = struct.pack(f"<{len(bitmap)}I", *bitmap) + struct.pack(f"<{len(starts)}I", *starts)
    return struct.pack("<IIII", 0xFFFFFFFF, GSI_HDR_VERSION, len(records), len(tail)) + (
        records + tail
    )


@dataclass
class Symbols:
    records: bytes
    publics: list[tuple[bytes, int, int, int]]  # name, record offset, segment, offset
    data: list[tuple[bytes, int]]


def symbol_records(
    globals_: dict[str, int],
    functions: set[str],
    sections: list[PdbSection],
    *,
    publics: bool = True,
    data: bool = True,
) -> Symbols:
    recs = bytearray()
    pubs, datas = [], []

    def where(rva: int) -> tuple[int, int]:
        for i, s in enumerate(sections):
            if s.rva <= rva < s.rva + max(s.size, 1):
                return i + 1, rva - s.rva
        raise ValueError(f"forge pdb: RVA {rva:#x} in no section")

    for name, rva in sorted(globals_.items(), key=lambda kv: (kv[1], kv[0])):
        seg, off = where(rva)
        raw = name.encode()
        if publics:
            flags = 2 if name in functions else 0
            pubs.append((raw, len(recs), seg, off))
            recs += record(S_PUB32, struct.pack("<IIH", flags, off, seg) + cstr(name))
        if data and name not in functions:
            datas.append((raw, len(recs)))
            recs += record(S_GDATA32, struct.pack("<IIH", T_64PVOID, off, seg) + cstr(name))
    return Symbols(bytes(recs), pubs, datas)


def publics_stream(syms: Symbols) -> bytes:
    table = gsi_hash([(n, o) for n, o, _, _ in syms.publics])
    order = sorted(syms.publics, key=lambda p: (p[2], p[3], p[0]))
    addr_map = b"".join(struct.pack("<I", o) for _, o, _, _ in order)
    header = struct.pack("<IIIIHHII", len(table), len(addr_map), 0, 0, 0, 0, 0, 0)
    return header + table + addr_map


# ------------------------------------------------------------------------------ other streams
def info_stream(guid: bytes, age: int, signature: int) -> bytes:
    named = struct.pack("<I", 0)  # string buffer size
    named += struct.pack("<II", 0, 1)  # hash table: size 0, capacity 1
    named += struct.pack("<I", 0) + struct.pack("<I", 0)  # present, deleted bit vectors
    return struct.pack("<III", PDB_VC70, signature, age) + guid + named + struct.pack("<I", VC140)


def section_headers(sections: list[PdbSection]) -> bytes:
    out = b""
    raw = 0x400
    for s in sections:
        raw_size = (s.size + 0x1FF) // 0x200 * 0x200
        out += struct.pack(
            "<8sIIIIIIHHI", s.name.encode()[:8], s.size, s.rva, raw_size, raw, 0, 0, 0, 0,
            s.characteristics,
        )  # fmt: skip
        raw += raw_size
    return out


def dbi_stream(age: int, globals_si: int, publics_si: int, symrec_si: int, sechdr_si: int) -> bytes:
    dbg = [0xFFFF] * 11
    dbg[5] = sechdr_si  # DbgHeaderType::SectionHdr
    optional = struct.pack("<11H", *dbg)
    file_info = struct.pack("<HH", 0, 0)  # no modules, no source files
    header = struct.pack(
        "<iIIHHHHHHiiiiiIiiHHI",
        -1, DBI_V70, age, globals_si, 0x8E00, publics_si, 0, symrec_si, 0,
        0, 0, 0, len(file_info), 0, 0, len(optional), 0, 0, 0x8664, 0,
    )  # fmt: skip
    assert len(header) == 64
    return header + file_info + optional


# ------------------------------------------------------------------------------------- MSF
def msf(streams: list[bytes]) -> bytes:
    """The MSF 7.0 container holding ``streams`` (index = stream number)."""
    blocks: list[bytes] = [b"", b"", b""]  # superblock, FPM1, FPM2 (filled below)
    stream_blocks: list[list[int]] = []
    for s in streams:
        ids = []
        for i in range(0, len(s), BLOCK):
            ids.append(len(blocks))
            blocks.append(s[i : i + BLOCK])
        stream_blocks.append(ids)
    directory = struct.pack("<I", len(streams)) + b"".join(
        struct.pack("<I", len(s)) for s in streams
    )
    directory += b"".join(struct.pack(f"<{len(ids)}I", *ids) for ids in stream_blocks)
    dir_ids = []
    for i in range(0, len(directory), BLOCK):
        dir_ids.append(len(blocks))
        blocks.append(directory[i : i + BLOCK])
    assert len(dir_ids) * 4 <= BLOCK, "forge pdb: stream directory too large"
    block_map = len(blocks)
    blocks.append(struct.pack(f"<{len(dir_ids)}I", *dir_ids))
    n = len(blocks)
    assert n < BLOCK * 8, "forge pdb: more than one free page map interval"
    fpm = bytearray(b"\xff" * BLOCK)  # bit set = free
    for b in range(n):
        fpm[b // 8] &= ~(1 << (b % 8)) & 0xFF
    blocks[1] = bytes(fpm)
    blocks[2] = bytes(fpm)
    blocks[0] = MSF_MAGIC + struct.pack("<IIIIII", BLOCK, 1, n, len(directory), 0, block_map)
    return b"".join(b.ljust(BLOCK, b"\0") for b in blocks)


def pdb_bytes(
    isf: dict[str, Any],
    *,
    guid: bytes,
    age: int,
    sections: list[PdbSection],
    functions: set[str] | None = None,
    signature: int = 0x5F3759DF,
    publics: bool = True,
    data: bool = True,
) -> bytes:
    """The PDB of a kernel described by an ISF document (its ``symbols`` are RVAs)."""
    types = TypeTable()
    types.add_isf(isf)
    globals_ = {n: s["address"] for n, s in isf["symbols"].items()}
    if functions is None:  # symbols in code sections are functions
        functions = {
            n for n, rva in globals_.items()
            if any(s.rva <= rva < s.rva + s.size and s.characteristics & 0x20 for s in sections)
        }  # fmt: skip
    syms = symbol_records(globals_, functions, sections, publics=publics, data=data)
    # streams: 0 old directory, 1 info, 2 TPI, 3 DBI, 4 IPI, 5 section headers, 6 symbol
    # records, 7 publics, 8 globals
    streams = [
        b"",
        info_stream(guid, age, signature),
        types.stream(),
        dbi_stream(age, 8, 7, 6, 5),
        tpi_stream(0x1000, b""),
        section_headers(sections),
        syms.records,
        publics_stream(syms),
        gsi_hash(syms.data),
    ]
    return msf(streams)


def write_pdb(path: str | Path, isf: dict[str, Any], **kw: Any) -> Path:
    p = Path(path)
    p.write_bytes(pdb_bytes(isf, **kw))
    return p


def kernel_pdb(path: str | Path, isf: dict[str, Any], truth: dict[str, Any], **kw: Any) -> Path:
    """The PDB matching a forged dump: its GUID, age and nt's sections from the truth's
    ``pdb``, its types and globals from ``isf`` (RVAs)."""
    p = truth["pdb"]
    sections = [PdbSection(*s) for s in p["sections"]]
    return write_pdb(path, isf, guid=bytes.fromhex(p["guid"]), age=p["age"], sections=sections,
                     **kw)  # fmt: skip
