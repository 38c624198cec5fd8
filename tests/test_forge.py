"""The dump forge against kdmp-parser 0.7.4 (an independent reader) and against the spec.

Every dump type kdmp-parser reads is opened with it; header fields, the set of stored
pages, page contents, virtual translations and the kernel structures reached through
them (KDBG, PsLoadedModuleList, PE headers, strings) must equal the ground truth.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import struct
import time

import kdmp_parser
import pytest

from poolscope import forge
from poolscope.forge import kdbg as kdbg_codec
from poolscope.forge.layout import kdbg_fields, ldr_offsets, load_profile

READABLE = [
    "full",
    "kernel_bitmap",
    "complete_bitmap",
    "live_kernel_bitmap",
    "kernel_memory",
    "complete_memory",
]
DUMP_TYPE_VALUES = {
    "full": 1,
    "kernel_bitmap": 5,
    "complete_bitmap": 5,
    "live_kernel_bitmap": 6,
    "kernel_memory": 8,
    "complete_memory": 0xA,
}
PAGE = 0x1000


class KdView:
    """Virtual reads through kdmp-parser (translation + physical pages), split per page."""

    def __init__(self, path):
        self.kd = kdmp_parser.KernelDumpParser(path)

    def read(self, va: int, size: int) -> bytes:
        out = b""
        while len(out) < size:
            cur = va + len(out)
            pa = self.kd.translate_virtual(cur)
            assert pa is not None, hex(cur)
            page = self.kd.read_physical_page(pa & ~0xFFF)
            assert page is not None, hex(pa)
            off = pa & 0xFFF
            out += bytes(page[off : off + min(PAGE - off, size - len(out))])
        return out

    def q(self, va: int) -> int:
        return struct.unpack("<Q", self.read(va, 8))[0]

    def unicode_string(self, va: int) -> str:
        length, _maxlen, _pad, buf = struct.unpack("<HHIQ", self.read(va, 16))
        return self.read(buf, length).decode("utf-16-le")


# --------------------------------------------------------------------- profiles
def test_load_profile_selects_family_by_build():
    assert load_profile(7601)["name"] == "win7sp1-x64"
    assert load_profile(19045)["name"] == "win10-19041-x64"
    assert load_profile(9600)["name"] == "win7sp1-x64"  # nearest older family
    assert load_profile(26100)["name"] == "win11-26100-x64"
    assert load_profile(30000)["name"] == "win11-26100-x64"  # nearest older family
    assert load_profile("0x4A65")["name"] == "win10-19041-x64"
    assert load_profile(6002)["name"] == "vista-x64"
    with pytest.raises(LookupError):
        load_profile(3790)


# ------------------------------------------------------------------- KDBG codec
def _spec_decode_word(w: int, never: int, always: int, addr: int) -> int:
    """Spec section 4, literally (volatility2 style: rotate one bit at a time by the
    low byte of KiWaitNever, OR the canonical bits into the address)."""
    m = (1 << 64) - 1
    t = w ^ never
    for _ in range(never & 0xFF):
        t = ((t << 1) | (t >> 63)) & m
    t ^= addr | 0xFFFF000000000000
    t = int.from_bytes(t.to_bytes(8, "little"), "big")
    return t ^ always


def test_kdbg_encode_decode_round_trip():
    rng = random.Random(1)
    addr = 0xFFFFF80576E1C2A8
    for _ in range(300):
        never, always, plain = (rng.getrandbits(64) for _ in range(3))
        w = forge.encode_word(plain, never, always, addr)
        assert forge.decode_word(w, never, always, addr) == plain
        assert _spec_decode_word(w, never, always, addr) == plain
    block = rng.randbytes(0x368)
    enc = forge.encode_block(block, 0x1234_5678_9ABC_DEF1, 0x0FED_CBA9_8765_4321, addr)
    assert enc != block
    assert forge.decode_block(enc, 0x1234_5678_9ABC_DEF1, 0x0FED_CBA9_8765_4321, addr) == block


def test_kd_copy_data_block_snippet_shape():
    code = kdbg_codec.kd_copy_data_block_code(
        0xFFFFF80000001000, 0xFFFFF80000201000, 0xFFFFF80000202000,
        0xFFFFF80000203000, 0xFFFFF80000204000, 0x368,
    )  # fmt: skip
    assert code[:2] == b"\x80\x3d" and code[6] == 0
    assert code[7] == 0x74 and code[9:12] == b"\x48\x8d\x15"
    assert code[16:19] == b"\x4c\x8b\x15" and code[23:26] == b"\x4c\x8b\x1d"
    assert code[30] == 0xB9 and struct.unpack_from("<I", code, 31)[0] == 0x368 // 8
    assert code[35] == 0xB8 and struct.unpack_from("<I", code, 36)[0] == 0x368
    assert code[-1] == 0xC3 and 9 + code[8] == len(code) - 1
    rel = struct.unpack_from("<i", code, 2)[0]
    assert 0xFFFFF80000001000 + 7 + rel == 0xFFFFF80000201000


# ----------------------------------------------------------- kdmp cross-checks
@pytest.mark.parametrize("dump_type", READABLE)
def test_kdmp_parser_agrees(forged, dump_type):
    path, truth = forged("win7sp1", dump_type=dump_type)
    t = truth.to_dict()
    th = t["header"]
    kd = kdmp_parser.KernelDumpParser(path)
    h = kd.header
    assert int(kd.type) == DUMP_TYPE_VALUES[dump_type] == th["DumpType"] == h.DumpType.value
    for name in (
        "MajorVersion", "MinorVersion", "DirectoryTableBase", "PfnDatabase",
        "PsLoadedModuleList", "PsActiveProcessHead", "MachineImageType", "NumberProcessors",
        "BugCheckCode", "KdDebuggerDataBlock", "RequiredDumpSpace", "SystemTime",
        "SystemUpTime", "ProductType", "SuiteMask", "KdSecondaryVersion", "BootId",
        "MiniDumpFields", "SecondaryDataState", "WriterStatus",
    ):  # fmt: skip
        assert getattr(h, name) == th[name], name
    assert list(h.BugCheckCodeParameter) == th["BugCheckCodeParameters"]
    with open(path, "rb") as f:  # kdmp-parser's binding cannot convert Attributes
        f.seek(0x1050)
        assert struct.unpack("<I", f.read(4))[0] == th["Attributes"]
    assert bytes(h.Comment).rstrip(b"\0").decode() == th["Comment"]
    assert kd.directory_table_base == th["DirectoryTableBase"]
    pmb = h.PhysicalMemoryBlock
    assert pmb.NumberOfRuns == th["PhysicalMemoryBlock"]["NumberOfRuns"] == len(t["runs"])
    assert pmb.NumberOfPages == th["PhysicalMemoryBlock"]["NumberOfPages"]
    ctx = kd.context
    for name in ("Rip", "Rsp", "Rcx", "Rdx", "ContextFlags", "MxCsr", "MxCsr2", "SegCs"):
        assert getattr(ctx, name) == th["ContextRecord"][name], name
    exc = h.Exception
    assert exc.ExceptionCode == th["Exception"]["ExceptionCode"] == 0x80000003
    assert exc.ExceptionAddress == th["Exception"]["ExceptionAddress"] == ctx.Rip
    assert os.path.getsize(path) == t["file_size"] == th["RequiredDumpSpace"]

    pages = sorted(kd.pages.keys())
    assert pages == [pfn * PAGE for pfn in truth.present_pfns()]
    assert len(pages) == t["physical_pages"]
    sample = truth.content_pfns() + truth.present_pfns()[::97] + truth.present_pfns()[-3:]
    for pfn in sample:
        assert bytes(kd.read_physical_page(pfn * PAGE)) == truth.page_bytes(pfn), hex(pfn)

    reasons = {tr["reason"] for tr in t["translations"]}
    assert reasons == {"ok", "not_present", "not_in_dump"}
    ok_sizes = {tr["page_size"] for tr in t["translations"] if tr["reason"] == "ok"}
    assert ok_sizes == {0x1000, 0x200000, 0x40000000}
    for tr in t["translations"]:
        assert kd.translate_virtual(tr["va"]) == tr["pa"], tr


def test_bitmap_and_rdmp_headers(forged):
    path, truth = forged("win7sp1", dump_type="kernel_bitmap")
    st = truth.storage
    kd = kdmp_parser.KernelDumpParser(path)  # keep it alive: header points into its mapping
    bmp = kd.header.BmpHeader
    assert bmp.FirstPage == st["first_page_offset"] and bmp.FirstPage % PAGE == 0
    assert bmp.TotalPresentPages == truth.physical_pages
    assert bmp.Pages == st["bits"] and bmp.Pages % 32 == 0
    max_pfn = truth.runs[-1][0] + truth.runs[-1][1] - 1
    assert max_pfn < bmp.Pages <= max_pfn + 32
    with open(path, "rb") as f:
        raw = f.read(0x3000)
    assert raw[0x2000:0x2008] == b"SDMP" + b"DUMP"
    assert raw[:8] == b"PAGEDU64"
    # unused header bytes keep the PAGE fill (reserved area and padding at 0x344)
    assert raw[0x1060:0x1070] == b"PAGE" * 4 and raw[0x344:0x348] == b"PAGE"

    path, truth = forged("win7sp1", dump_type="complete_memory")
    with open(path, "rb") as f:
        raw = f.read(0x3000)
    marker, sig, valid, _, meta, first = struct.unpack_from("<I4s4sIQQ", raw, 0x2000)
    assert (marker, sig, valid) == (0x40, b"RDMP", b"DUMP")
    assert first % PAGE == 0 and meta - 0x20 == first - 0x2040
    nranges, _, _, total = struct.unpack_from("<IHHQ", raw, 0x2020)
    assert nranges == len(truth.present_ranges) and total == truth.physical_pages
    ranges = [struct.unpack_from("<QQ", raw, 0x2030 + 16 * i) for i in range(nranges + 1)]
    assert [list(r) for r in ranges[:-1]] == truth.present_ranges
    assert ranges[-1] == (0, 0)  # terminator


def test_pat_large_page_quirk_of_kdmp_parser(forged):
    """Spec section 5: kdmp-parser adds a 2 MiB PDE's PAT bit (12) to the address."""
    path, truth = forged("win7sp1", pat_large_page=True, fill="zero")
    kd = kdmp_parser.KernelDumpParser(path)
    quirky = [tr for tr in truth.translations if tr.get("quirk") == "pat_bit12"]
    assert len(quirky) == 1 and quirky[0]["pte"] & 0x1000
    for tr in truth.translations:
        got = kd.translate_virtual(tr["va"])
        expected = tr["pa"] + 0x1000 if tr.get("quirk") == "pat_bit12" else tr["pa"]
        assert got == expected, tr


# --------------------------------------------- kernel structures through kdmp
@pytest.mark.parametrize("scenario", ["win7sp1", "win10-19045"])
def test_kdbg_modules_and_images_through_kdmp(forged, scenario):
    path, truth = forged(scenario)
    t = truth.to_dict()
    view = KdView(path)
    h = view.kd.header
    profile = load_profile(t["build"])
    k = t["kdbg"]
    va = h.KdDebuggerDataBlock
    assert va == k["va"]
    block = view.read(va, k["size"])
    assert block.hex() == k["plain_hex"]
    flink, blink, tag, size = struct.unpack_from("<QQ4sI", block)
    assert tag == b"KDBG" and size == k["size"] == int(profile["kdbg"]["size"], 16)
    assert flink == blink == k["list_head"]
    assert view.q(k["list_head"]) == view.q(k["list_head"] + 8) == va
    assert struct.unpack_from("<Q", block, 0x18)[0] == t["kernel_base"]
    for name, spec in kdbg_fields(profile):
        width = spec.get("width", 8)
        raw = int.from_bytes(block[spec["offset"] : spec["offset"] + width], "little")
        assert raw == k["fields"][name], name
        target = spec.get("target")
        if target == "cstr":
            text = view.read(raw, len(k["values"][name]) + 1)
            assert text == k["values"][name].encode() + b"\0"
        elif target in ("u32", "u64"):
            n = 4 if target == "u32" else 8
            assert int.from_bytes(view.read(raw, n), "little") == k["values"][name], name
    vals = k["values"]
    assert vals["MmNumberOfPhysicalPages"] == sum(c for _, c in t["runs"])
    assert h.PsLoadedModuleList == k["fields"]["PsLoadedModuleList"]
    assert h.PsActiveProcessHead == k["fields"]["PsActiveProcessHead"]
    assert h.PfnDatabase == k["fields"]["MmPfnDatabase"]
    assert view.q(h.PfnDatabase) == vals["MmPfnDatabase"]
    assert view.q(h.PsActiveProcessHead) == h.PsActiveProcessHead  # empty, self-linked

    # PsLoadedModuleList: circular, doubly linked, nt first
    off = ldr_offsets(profile)
    head = h.PsLoadedModuleList
    seen = []
    node, prev = view.q(head), head
    while node != head:
        assert view.q(node + 8) == prev
        e = node - off["InLoadOrderLinks"]
        seen.append(
            {
                "name": view.unicode_string(e + off["BaseDllName"]),
                "path": view.unicode_string(e + off["FullDllName"]),
                "base": view.q(e + off["DllBase"]),
                "size": struct.unpack("<I", view.read(e + off["SizeOfImage"], 4))[0],
                "entry": view.q(e + off["EntryPoint"]),
            }
        )
        prev, node = node, view.q(node)
        assert len(seen) < 100
    assert view.q(head + 8) == prev
    assert seen == [
        {x: m[x] for x in ("name", "path", "base", "size", "entry")} for m in t["modules"]
    ]
    assert seen[0]["name"] == "ntoskrnl.exe"
    assert seen[0]["path"] == "\\SystemRoot\\system32\\ntoskrnl.exe"

    for m in t["modules"]:
        hdr = view.read(m["base"], 0x400)
        assert hdr[:2] == b"MZ"
        e_lfanew = struct.unpack_from("<I", hdr, 0x3C)[0]
        assert hdr[e_lfanew : e_lfanew + 4] == b"PE\0\0"
        assert struct.unpack_from("<H", hdr, e_lfanew + 4)[0] == 0x8664
        assert struct.unpack_from("<I", hdr, e_lfanew + 24 + 0x38)[0] == m["size"]
        assert struct.unpack_from("<Q", hdr, e_lfanew + 24 + 0x18)[0] == m["base"]
        for s in m["strings"]:
            assert view.read(m["base"] + s["offset"], len(s["text"])) == s["text"].encode()
    myfault = truth.module("myfault.sys")
    assert [(s["tag"], s["offset"]) for s in myfault["tag_sites"]] == [
        ("Leak", 0x1634),
        ("Leak", 0x16A0),
    ]
    for m in t["modules"]:
        for s in m["tag_sites"]:  # mov r8d, tag
            assert view.read(m["base"] + s["offset"] - 2, 6) == b"\x41\xb8" + s["tag"].encode()

    # KiProcessorBlock -> PRCB -> Context: CPU 0's context is the header context
    prcb_ctx = k["fields"]["OffsetPrcbContext"]
    procs = t["processors"]
    assert len(procs) == h.NumberProcessors
    for i, p in enumerate(procs):
        prcb = view.q(k["fields"]["KiProcessorBlock"] + 8 * i)
        assert prcb == p["prcb"]
        ctx = view.q(prcb + prcb_ctx)
        assert ctx == p["context"]
        rsp, rip = struct.unpack("<Q", view.read(ctx + 0x98, 8))[0], view.q(ctx + 0xF8)
        assert (rsp, rip) == (p["rsp"], p["rip"])
    assert procs[0]["rsp"] == h.ContextRecord.Rsp


def test_encoded_kdbg_is_found_and_decoded_from_the_snippet(forged):
    path, truth = forged("win10-19045", kdbg="encoded")
    t = truth.to_dict()
    k = t["kdbg"]
    view = KdView(path)
    assert view.kd.header.KdDebuggerDataBlock == k["va"]
    stored = view.read(k["va"], k["size"])
    assert stored[0x10:0x14] != b"KDBG" and k["encoded"]
    # find KdCopyDataBlock by its bytes in nt's image and take its RIP-relative operands
    nt = t["kernel_base"]
    code_va = k["key_symbols"]["KdCopyDataBlock"]
    page_va = code_va & ~0xFFF
    page = view.read(page_va, PAGE * 2)
    at = page.find(b"\x80\x3d")
    assert at >= 0 and page_va + at == code_va and nt < code_va < nt + t["modules"][0]["size"]

    def rip(insn_off, disp_off, length):
        disp = struct.unpack_from("<i", page, at + disp_off)[0]
        return page_va + at + insn_off + length + disp

    flag_va = rip(0, 2, 7)
    kdbg_va = rip(9, 12, 7)
    never_va = rip(16, 19, 7)
    always_va = rip(23, 26, 7)
    assert kdbg_va == k["va"]
    assert view.read(flag_va, 1) == b"\x01"
    never, always = view.q(never_va), view.q(always_va)
    assert (flag_va, never, always) == (
        k["keys"]["KdpDataBlockEncoded"], k["keys"]["KiWaitNever"], k["keys"]["KiWaitAlways"],
    )  # fmt: skip
    size = struct.unpack_from("<I", page, at + 36)[0]
    assert size == k["size"]
    plain = forge.decode_block(stored, never, always, flag_va)
    assert plain.hex() == k["plain_hex"] and plain[0x10:0x14] == b"KDBG"


def test_kdbg_without_header_pointer(forged):
    path, truth = forged("win7sp1", kdbg="no_pointer", fill="zero")
    kd = KdView(path)
    assert kd.kd.header.KdDebuggerDataBlock == 0 == truth.header["KdDebuggerDataBlock"]
    assert kd.read(truth.kdbg["va"] + 0x10, 4) == b"KDBG"
    assert truth.kdbg["mode"] == "no_pointer"


# ------------------------------------------------------------ refusal inputs
@pytest.mark.parametrize(
    "dump_type,size,magic", [("triage", 0x2000, b"PAGEDU64"), ("dump32", 0x1000, b"PAGEDUMP")]
)
def test_header_only_types_are_refused_by_kdmp_parser(forged, dump_type, size, magic):
    path, truth = forged("win7sp1", dump_type=dump_type)
    assert os.path.getsize(path) == size == truth.file_size
    with open(path, "rb") as f:
        assert f.read(8) == magic
    assert truth.physical_pages == 0 and truth.translations == []
    with pytest.raises(RuntimeError):
        kdmp_parser.KernelDumpParser(path)


# ------------------------------------------------------ determinism and fill
def _sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_deterministic_output(tmp_path):
    sc = forge.builtin("win7sp1").replace(ram_mib=32)
    a = forge.forge(sc, tmp_path / "a.dmp")
    b = forge.forge(sc, tmp_path / "b.dmp")
    assert _sha(tmp_path / "a.dmp") == _sha(tmp_path / "b.dmp")
    da, db = a.to_dict(), b.to_dict()
    assert da.pop("path") != db.pop("path")
    assert json.dumps(da, sort_keys=True) == json.dumps(db, sort_keys=True)
    forge.forge(sc.replace(seed=8), tmp_path / "c.dmp")
    assert _sha(tmp_path / "a.dmp") != _sha(tmp_path / "c.dmp")


def test_fill_pattern_and_zero(tmp_path):
    sc = forge.builtin("win7sp1").replace(ram_mib=32)
    pat = forge.forge(sc, tmp_path / "p.dmp")
    zero = forge.forge(sc.replace(fill="zero"), tmp_path / "z.dmp")
    assert pat.content_pfns() == zero.content_pfns()
    for pfn in pat.content_pfns():
        assert pat.page_bytes(pfn) == zero.page_bytes(pfn)
    unused = next(p for p in pat.present_pfns() if p not in set(pat.content_pfns()))
    page = pat.page_bytes(unused)
    assert struct.unpack_from("<Q", page)[0] == unused << 8 | 0xF5
    assert all(b >= 0x80 for b in page[16:])
    assert zero.page_bytes(unused) == bytes(PAGE)
    with pytest.raises(KeyError):
        pat.page_bytes(0)
    st = os.stat(tmp_path / "z.dmp")
    if hasattr(st, "st_blocks"):
        assert st.st_blocks * 512 < st.st_size // 4  # zero areas are sparse
    with open(tmp_path / "p.dmp", "rb") as f:
        off = pat.file_offset(unused)
        assert off is not None
        f.seek(off)
        assert f.read(PAGE) == page


def test_large_sparse_dump_is_fast_and_readable(tmp_path):
    sc = forge.builtin("win7sp1").replace(ram_mib=2048, fill="zero")
    truth = forge.forge(sc, tmp_path / "big.dmp")
    kd = kdmp_parser.KernelDumpParser(tmp_path / "big.dmp")
    assert truth.physical_pages == 2048 * 256
    assert truth.file_size == 0x2000 + 2048 * 256 * PAGE
    for tr in truth.translations:
        assert kd.translate_virtual(tr["va"]) == tr["pa"]


# --------------------------------------------------------- scenario handling
def test_scenario_from_dict_json_and_hex(tmp_path):
    data = {
        "name": "t",
        "build": "0x1DB1",
        "bugcheck": {"code": "0x19", "params": ["0x20", 1, "0x2", 3]},
        "runs": [["0x1", "0x9e"], ["0x100", "0x1f00"]],
        "modules": [
            {
                "name": "foo.sys",
                "size": "0x4000",
                "strings": ["Foo1", {"text": "Bar2", "offset": "0x2ffe"}],
            }
        ],
        "fill": "zero",
        "special_pool_tag": "Leak",
    }
    sc = forge.Scenario.from_dict(data)
    assert sc.build == 7601 and sc.bugcheck.code == 0x19 and sc.bugcheck.params == [0x20, 1, 2, 3]
    assert sc.runs == [[1, 0x9E], [0x100, 0x1F00]]
    assert sc.special_pool_tag == 0x6B61654C
    jp = tmp_path / "s.json"
    jp.write_text(json.dumps(data))
    truth = forge.forge(jp, tmp_path / "s.dmp")
    assert truth.header["BugCheckCodeParameters"] == [0x20, 1, 2, 3]
    foo = truth.module("foo.sys")
    assert foo["path"] == "\\SystemRoot\\system32\\drivers\\foo.sys"
    assert [s["offset"] for s in foo["strings"]][1] == 0x2FFE  # crosses a page boundary
    view = KdView(tmp_path / "s.dmp")
    assert view.read(foo["base"] + 0x2FFE, 4) == b"Bar2"
    assert truth.kdbg["values"]["MmSpecialPoolTag"] == 0x6B61654C
    with pytest.raises(ValueError, match="unknown scenario keys"):
        forge.Scenario.from_dict({"dumptype": "full"})
    with pytest.raises(ValueError):
        forge.Scenario.from_dict({"runs": [[0x100, 4], [0x80, 4]]})
    with pytest.raises(KeyError):
        forge.builtin("nope")


def test_ground_truth_is_json_with_int_values(forged):
    _, truth = forged("win7sp1")
    d = truth.to_dict()
    back = json.loads(json.dumps(d))
    assert back == d
    required = {"header", "dump_type", "build", "file_size", "runs", "physical_pages"}
    required |= {"kernel_base", "kdbg", "modules", "translations", "system_time_iso", "uptime_s"}
    assert required <= set(d)
    assert isinstance(d["header"]["DirectoryTableBase"], int)
    assert d["system_time_iso"] == "2020-01-15T10:42:17Z" and d["uptime_s"] == 5025.5
    unix = 1579084937  # calendar.timegm of 2020-01-15 10:42:17 UTC
    assert d["header"]["SystemTime"] == (unix + 11644473600) * 10_000_000
    assert d["header"]["SystemUpTime"] == 50255000000
    assert d["physical_pages"] == len(truth.present_pfns())


def test_pool_blocks_have_page_chained_headers(forged):
    path, truth = forged("win7sp1")
    view = KdView(path)
    ldr = truth.module("hal.dll")["ldr_entry"]
    hdr = view.read(ldr - 16, 16)
    assert hdr[4:8] == b"MmLd" and hdr[3] == 2
    page_va = (ldr - 16) & ~0xFFF
    page = view.read(page_va, PAGE)
    off, prev, units_total = 0, 0, 0
    while off < PAGE:
        assert page[off] == prev
        units = page[off + 2]
        assert units >= 1
        prev, units_total, off = units, units_total + units, off + units * 16
    assert units_total == PAGE // 16


# ---------------------------------------------------------------------- pool
POOL_TYPE_STORED = {"nonpaged": 2, "paged": 3, "session_nonpaged": 0x22, "session_paged": 0x23}
COUNTERS = ("allocs", "frees", "bytes")


class PoolLayoutView:
    """The profile's pool section, parsed here independently of the forge."""

    def __init__(self, build: int):
        p = load_profile(build)["pool"]
        self.p = p
        self.hdr = {k: int(v, 16) for k, v in p["pool_header"].items()}
        self.globals = p.get("globals", {})

    def entry(self, what: str, raw: bytes, at: int) -> dict[str, int]:
        out = {}
        for name, f in self.p[what].items():
            if name == "size" or isinstance(f, str):  # strings are notes
                continue
            off, width = int(f["offset"], 16), f["width"]
            v = int.from_bytes(raw[at + off : at + off + width], "little") >> f.get("shift", 0)
            out[name] = v & ((1 << f["bits"]) - 1) if "bits" in f else v
        return out

    def size(self, what: str) -> int:
        return int(self.p[what]["size"], 16)

    def header(self, page: bytes, off: int) -> tuple[int, int, int, int, int]:
        """(PreviousSize, PoolIndex, BlockSize, PoolType, tag) in units / raw."""
        h = self.hdr
        t = h["PoolTag"]
        return (
            page[off + h["PreviousSize"]],
            page[off + h["PoolIndex"]],
            page[off + h["BlockSize"]],
            page[off + h["PoolType"]],
            int.from_bytes(page[off + t : off + t + 4], "little"),
        )


def _tag(raw: int) -> str:
    b = (raw & 0x7FFFFFFF).to_bytes(4, "little")
    return "".join(chr(c) if 0x20 <= c < 0x7F else "?" for c in b)


def _plausible(raw: int) -> bool:
    b = (raw & 0x7FFFFFFF).to_bytes(4, "little")
    return all(0x20 <= c < 0x7F for c in b) and b[0] != 0x20


def _chain(page: bytes, lay: PoolLayoutView) -> list[tuple[int, int, int, int, int]] | None:
    """The page's headers if it is a valid chain, else None (spec section 1)."""
    out, off, prev = [], 0, 0
    while off < 256:
        h = lay.header(page, off * 16)
        p, _, units, ptype, tag = h
        if p != prev or units == 0 or off + units > 256:
            return None
        if not (_plausible(tag) or (ptype == 0 and tag == 0)):
            return None
        out.append(h)
        prev, off = units, off + units
    alloc = [h[3] & 1 for h in out if h[3]]
    return out if alloc and len(set(alloc)) == 1 else None


def _spec_tracker_hash(tag: int, mask: int) -> int:
    r = 40543 * tag
    return (r ^ (r >> 32)) & mask


def _spec_big_hash(va: int, mask: int) -> int:
    p = (va >> 12) & 0xFFFFFFFF  # ReactOS: (ULONG)(Va >> PAGE_SHIFT)
    return (p ^ (p >> 8) ^ (p >> 16) ^ (p >> 24)) & mask


def _probed(table_keys: list[int], home: int, at: int, mask: int) -> bool:
    """Linear probing: every slot from ``home`` up to ``at`` is taken."""
    i = home
    while i != at:
        if not table_keys[i]:
            return False
        i = (i + 1) & mask
    return True


def _by_page(blocks):
    pages: dict[int, list] = {}
    for b in blocks:
        pages.setdefault(b["pa"] >> 12, []).append(b)
    return pages


def test_pool_pages_are_valid_chains_matching_the_truth(forged):
    path, truth = forged("win7sp1")
    p = truth.pool
    lay = PoolLayoutView(7601)
    kd = kdmp_parser.KernelDumpParser(path)
    pages = _by_page(p["blocks"])
    assert len(pages) == p["scan"]["pool_pages"] > 50
    pools = set()
    for pfn, blocks in pages.items():
        page = bytes(kd.read_physical_page(pfn * PAGE))
        assert page == truth.page_bytes(pfn)
        chain = _chain(page, lay)
        assert chain is not None, hex(pfn)
        assert len(chain) == len(blocks) and sum(h[2] for h in chain) == 256
        assert any(b["allocated"] for b in blocks)
        pool = {b["pool"] for b in blocks}
        assert len(pool) == 1
        pool = pool.pop()
        pools.add(pool)
        page_va = blocks[0]["va"] & ~0xFFF
        assert kd.translate_virtual(page_va) == pfn * PAGE
        for h, b in zip(chain, blocks, strict=True):
            prev, index, units, ptype, tag = h
            assert (b["size"], b["previous_size"]) == (units * 16, prev * 16)
            assert b["va"] - page_va == b["pa"] - pfn * PAGE
            assert index == (1 if pool == "paged" else 0)
            assert ptype == (POOL_TYPE_STORED[pool] if b["allocated"] else 0)
            assert _tag(tag) == b["tag"]
            protected = bool(tag & 0x80000000)
            assert protected == (b["allocated"] and b["tag"] in p["protected_tags"])
            body = page[(b["pa"] & 0xFFF) + 16 : (b["pa"] & 0xFFF) + b["size"]]
            assert not body or any(body)
    assert pools == {"nonpaged", "paged", "session_nonpaged", "session_paged"}
    # Win7 object tags carry the protected bit: Proc = 50 72 6F E3, Thre = 54 68 72 E5
    raw = open(path, "rb").read()
    assert b"\x02\x50\x72\x6f\xe3" in raw and b"\x02\x54\x68\x72\xe5" in raw
    # the kernel's own small allocations are blocks of these pages
    blocks = {b["va"]: b for b in p["blocks"]}
    small = [a for a in truth.pool_allocations if a["kind"] == "small"]
    assert {a["tag"] for a in small} == {"MmLd", "MmPh"}
    for a in small:
        b = blocks[a["va"]]
        assert (b["tag"], b["size"], b["allocated"]) == (a["tag"], a["size"], True)
    free = [b for b in p["blocks"] if not b["allocated"]]
    assert len(free) >= 60 and any(b["tag"] == "????" for b in free)
    assert any(b["tag"] != "????" for b in free)


def test_scan_summary_and_tracker_agree_with_blocks_and_big_pool(forged):
    for name in ("win7sp1", "win7sp1-leak"):
        _, truth = forged(name)
        p = truth.pool
        agg: dict[tuple[str, str], list[int]] = {}
        for b in p["blocks"]:
            c = agg.setdefault((b["tag"], b["pool"]), [0, 0, 0, 0])
            i = 0 if b["allocated"] else 2
            c[i] += 1
            c[i + 1] += b["size"]
        assert {(t["tag"], t["pool"]): [t["allocated"], t["allocated_bytes"], t["free"],
                t["free_bytes"]] for t in p["scan"]["tags"]} == agg  # fmt: skip
        # Allocs - Frees = allocated blocks + live big entries; Bytes = their sizes
        want: dict[tuple[str, str], list[int]] = {}
        for b in p["blocks"]:
            if b["allocated"] and b["pool"] in ("nonpaged", "paged"):
                w = want.setdefault((b["tag"], b["pool"]), [0, 0])
                w[0] += 1
                w[1] += b["size"]
        for b in p["bigpool"]["rows"]:
            if not b["free"]:
                w = want.setdefault((b["tag"], b["pool"]), [0, 0])
                w[0] += 1
                w[1] += b["bytes"]
        got = {}
        only_frees = 0
        for r in p["tracker"]["rows"]:
            for pool in ("nonpaged", "paged"):
                a, f, n = (r[f"{pool}_{c}"] for c in COUNTERS)
                assert a >= f >= 0
                if a - f or n:
                    got[(r["tag"], pool)] = [a - f, n]
                if a and a == f and not n:
                    only_frees += 1
        assert got == want
        assert only_frees >= 1
        tracked = {r["tag"] for r in p["tracker"]["rows"]}
        assert not {"Gla5", "Usqm", "Ustx"} & tracked  # session pool: its own tables
        assert len(tracked) == len(p["tracker"]["rows"])


def test_tracker_table_in_memory_hash_placement(forged):
    path, truth = forged("win7sp1")
    p = truth.pool
    lay = PoolLayoutView(7601)
    view = KdView(path)
    var = truth.kdbg["fields"]["PoolTrackTable"]
    assert var == p["globals"]["PoolTrackTable"]
    table = view.q(var)
    assert table == p["tracker"]["va"] == truth.kdbg["values"]["PoolTrackTable"]
    g = lay.globals["PoolTrackTableSize"]
    entries = view.q(var + int(g["delta"], 16))
    assert entries == p["tracker"]["entries"] == 0x401
    esz = lay.size("tracker")
    raw = view.read(table, entries * esz)
    rows = [lay.entry("tracker", raw, i * esz) for i in range(entries)]
    keys = [r["Key"] for r in rows]
    assert not any(raw[(entries - 1) * esz :])  # the overflow bucket is unused
    mask = entries - 2
    got = []
    for i, r in enumerate(rows):
        if not r["Key"]:
            continue
        assert _probed(keys, _spec_tracker_hash(r["Key"], mask), i, mask)
        got.append(
            {"tag": _tag(r["Key"]), "nonpaged_allocs": r["NonPagedAllocs"],
             "nonpaged_frees": r["NonPagedFrees"], "nonpaged_bytes": r["NonPagedBytes"],
             "paged_allocs": r["PagedAllocs"], "paged_frees": r["PagedFrees"],
             "paged_bytes": r["PagedBytes"]}
        )  # fmt: skip
    assert got == p["tracker"]["rows"]
    assert all(r["Key"] & 0x80000000 == 0 for r in rows)  # protected bit stripped
    # the table is itself a big allocation tagged Pool, in nonpaged pool
    big = {b["va"]: b for b in p["bigpool"]["rows"]}
    assert big[table]["tag"] == "Pool" and big[table]["pool"] == "nonpaged"
    assert big[table]["bytes"] >= entries * esz


def test_big_page_table_in_memory_hash_placement(forged):
    path, truth = forged("win7sp1")
    p = truth.pool
    lay = PoolLayoutView(7601)
    view = KdView(path)
    var = truth.kdbg["fields"]["PoolTrackTable"]
    table = view.q(var + int(lay.globals["PoolBigPageTable"]["delta"], 16))
    entries = view.q(var + int(lay.globals["PoolBigPageTableSize"]["delta"], 16))
    assert (table, entries) == (p["bigpool"]["va"], p["bigpool"]["entries"]) == (table, 0x800)
    esz = lay.size("big_page")
    raw = view.read(table, entries * esz)
    rows = [lay.entry("big_page", raw, i * esz) for i in range(entries)]
    keys = [r["Key"] for r in rows]
    got = []
    for i, r in enumerate(rows):
        if not r["Key"]:
            assert r["Va"] == 1 and r["NumberOfBytes"] == 0  # never used
            continue
        va = r["Va"] & ~1
        assert _probed(keys, _spec_big_hash(va, entries - 1), i, entries - 1)
        pool = ("session_" if r["PoolType"] & 0x20 else "") + (
            "paged" if r["PoolType"] & 1 else "nonpaged"
        )
        got.append({"va": va, "tag": _tag(r["Key"]), "bytes": r["NumberOfBytes"], "pool": pool,
                    "free": bool(r["Va"] & 1)})  # fmt: skip
        assert va % PAGE == 0 and r["PoolType"] in (0, 1)
        if not r["Va"] & 1:  # live: every page mapped and stored
            for off in (0, r["NumberOfBytes"] - PAGE):
                pa = view.kd.translate_virtual(va + off)
                assert pa is not None and view.kd.read_physical_page(pa) is not None
    assert got == p["bigpool"]["rows"]
    assert {r["tag"] for r in got if r["free"]} == {"MmSt", "EtwB"}
    assert {(r["tag"], r["pool"]) for r in got if not r["free"]} >= {
        ("EtwB", "nonpaged"), ("MmSt", "paged"), ("Pool", "nonpaged"), ("Pcr ", "nonpaged"),
    }  # fmt: skip


def test_small_tables_force_linear_probing(tmp_path):
    tags = [{"tag": f"T{i:03d}", "count": 3, "size": 0x30} for i in range(9)]
    sc = forge.builtin("win7sp1").replace(
        ram_mib=32, fill="zero",
        pool={"tags": tags, "tracker_entries": 17, "big_table_entries": 32,
              "big": [{"tag": "Bigg", "count": 20, "bytes": 0x1000}]},
    )  # fmt: skip
    p = forge.forge(sc, tmp_path / "probe.dmp").pool
    rows, slots = p["tracker"]["rows"], p["tracker"]["slots"]
    keys = [0] * 17
    for r, s in zip(rows, slots, strict=True):
        keys[s] = int.from_bytes(r["tag"].encode(), "little")
    homes = [_spec_tracker_hash(k, 15) for k in keys if k]
    assert len(set(homes)) < len(homes)  # collisions happened
    for r, s in zip(rows, slots, strict=True):
        k = int.from_bytes(r["tag"].encode(), "little")
        assert _probed(keys, _spec_tracker_hash(k, 15), s, 15)
    bkeys = [0] * 32
    for s in p["bigpool"]["slots"]:
        bkeys[s] = 1
    moved = 0
    for r, s in zip(p["bigpool"]["rows"], p["bigpool"]["slots"], strict=True):
        home = _spec_big_hash(r["va"], 31)
        moved += home != s
        assert _probed(bkeys, home, s, 31)
    assert moved > 0
    with pytest.raises(ValueError, match="do not fit"):
        forge.forge(sc.replace(pool={"tags": tags, "tracker_entries": 9}), tmp_path / "x.dmp")
    with pytest.raises(ValueError, match="do not fit"):
        forge.forge(sc.replace(pool={"big_table_entries": 2}), tmp_path / "y.dmp")


def _classify(page: bytes, lay: PoolLayoutView) -> str | None:
    prev, _, units, ptype, tag = lay.header(page, 0)
    if prev or not units:
        return None
    if ptype and not _plausible(tag):
        return None
    if not ptype and not (_plausible(tag) or tag == 0):
        return None
    if _chain(page, lay) is not None:
        return "pool"
    return "rejected" if ptype else "rejected_free_first"


def test_corrupt_pages_are_rejected_and_no_other_page_looks_like_pool(forged):
    path, truth = forged("win7sp1")
    p = truth.pool
    lay = PoolLayoutView(7601)
    rej = p["scan"]["rejected"]
    assert p["scan"]["rejected_pages"] == len(rej) == 6
    assert (
        sorted(r["kind"] for r in rej)
        == ["broken_chain"] * 2 + ["garbage_header"] * 2 + ["half_page"] * 2
    )
    block_pages = set(_by_page(p["blocks"]))
    kd = kdmp_parser.KernelDumpParser(path)
    for r in rej:
        page = bytes(kd.read_physical_page(r["pa"]))
        prev, _, units, ptype, tag = lay.header(page, 0)
        assert (prev, ptype) == (0, 2) and _plausible(tag) and units * 16 == r["first_size"]
        assert _tag(tag) == r["first_tag"] and _chain(page, lay) is None
        assert r["pfn"] not in block_pages
        assert kd.translate_virtual(r["va"]) == r["pa"]
        if r["kind"] == "half_page":
            off = 0
            while off < 128:
                off += lay.header(page, off * 16)[2]
            assert off == 128
    # every page the forge wrote, classified from its bytes
    found: dict[str, set[int]] = {"pool": set(), "rejected": set(), "rejected_free_first": set()}
    for pfn in truth.content_pfns():
        kind = _classify(truth.page_bytes(pfn), lay)
        if kind:
            found[kind].add(pfn)
    assert found["pool"] == block_pages
    assert found["rejected"] == {r["pfn"] for r in rej}
    assert len(found["rejected_free_first"]) == p["scan"]["rejected_free_first_pages"] == 0
    # and the fill pages (sampled) never look like pool
    for pfn in truth.present_pfns()[::37]:
        if pfn not in found["pool"] | found["rejected"]:
            assert _classify(truth.page_bytes(pfn), lay) is None


def test_tag_owners_are_the_tag_bytes_in_module_images(forged):
    path, truth = forged("win7sp1")
    p = truth.pool
    view = KdView(path)
    images = {}
    for m in truth.modules:
        data = bytearray()
        for off in range(0, m["size"], PAGE):
            pa = view.kd.translate_virtual(m["base"] + off)
            data += (
                bytes(view.kd.read_physical_page(pa & ~0xFFF)) if pa is not None else b"\0" * PAGE
            )
        images[m["name"]] = bytes(data)
    used = {r["tag"] for r in p["tracker"]["rows"]} | {b["tag"] for b in p["bigpool"]["rows"]}
    used |= {b["tag"] for b in p["blocks"] if b["tag"] != "????"}
    assert set(p["owners"]) >= used
    for tag, owners in p["owners"].items():
        needle = tag.encode("latin-1")
        want = []
        for name, img in images.items():
            offs, i = [], img.find(needle)
            while i >= 0:
                offs.append(i)
                i = img.find(needle, i + 4)
            if offs:
                want.append({"module": name, "offsets": offs})
        assert owners == want, tag
    assert p["owners"]["Leak"] == [{"module": "myfault.sys", "offsets": [0x1634, 0x16A0]}]
    assert "Leak" not in {r["tag"] for r in p["tracker"]["rows"]}  # referenced, never allocated
    assert [o["module"] for o in p["owners"]["Thre"]] == ["ntoskrnl.exe"]
    assert [o["module"] for o in p["owners"]["Gla5"]] == ["win32k.sys"]
    myfault = truth.module("myfault.sys")
    code = view.read(myfault["base"] + 0x1634 - 12, 22)
    assert code[10:16] == bytes.fromhex("41b84c65616b")  # mov r8d, 'kaeL'
    assert code[5:10] == b"\xba" + (1024000).to_bytes(4, "little")  # mov edx, 1024000


def test_memory_summary_variables(forged):
    for name in ("win7sp1", "win7sp1-leak"):
        path, truth = forged(name)
        p = truth.pool
        m = p["memory"]
        vals = truth.kdbg["values"]
        assert {k: vals[k] for k in m} == m
        view = KdView(path)
        for k, v in m.items():
            assert view.q(truth.kdbg["fields"][k]) == v, k
        pg = p["pages"]
        assert m["MmAllocatedNonPagedPool"] >= pg["nonpaged_total"] > 0
        assert m["MmPagedPoolCommit"] == pg["paged_total"] > 0
        assert m["MmNumberOfPhysicalPages"] == sum(c for _, c in truth.runs)
        assert 0 < m["MmAvailablePages"] < m["MmNumberOfPhysicalPages"]
        assert m["MmTotalCommittedPages"] <= m["MmPeakCommitment"] <= m["MmTotalCommitLimit"]
        big_np = sum(b["bytes"] for b in p["bigpool"]["rows"]
                     if not b["free"] and b["pool"] == "nonpaged")  # fmt: skip
        assert pg["big_nonpaged"] * PAGE == big_np
        max_pages = m["MmMaximumNonPagedPoolInBytes"] // PAGE
        if name == "win7sp1":
            assert m["MmAllocatedNonPagedPool"] == pg["nonpaged_total"]
            assert m["MmAllocatedNonPagedPool"] < 0.9 * max_pages
        else:
            assert (m["MmAllocatedNonPagedPool"], max_pages) == (152178, 152651)
            assert m["MmAllocatedNonPagedPool"] >= 0.9 * max_pages


def test_leak_scenario_is_fast_sparse_and_dominated_by_leak(tmp_path):
    t0 = time.perf_counter()
    truth = forge.forge("win7sp1-leak", tmp_path / "leak.dmp")
    elapsed = time.perf_counter() - t0
    assert elapsed < 2.0, elapsed
    p = truth.pool
    live = [b for b in p["bigpool"]["rows"] if b["tag"] == "Leak" and not b["free"]]
    assert len(live) == 601 and {b["bytes"] for b in live} == {1_024_000}
    assert sum(b["bytes"] for b in live) == 615_424_000
    assert all(b["pool"] == "nonpaged" for b in live)
    row = next(r for r in p["tracker"]["rows"] if r["tag"] == "Leak")
    assert row["nonpaged_allocs"] - row["nonpaged_frees"] == 601
    assert row["nonpaged_bytes"] == 615_424_000 and row["paged_bytes"] == 0
    top = max(p["tracker"]["rows"], key=lambda r: r["nonpaged_bytes"])
    assert top["tag"] == "Leak"
    assert p["owners"]["Leak"] == [{"module": "myfault.sys", "offsets": [0x1634, 0x16A0]}]
    assert truth.physical_pages == 1024 * 256 and truth.fill == "zero"
    st = os.stat(tmp_path / "leak.dmp")
    if hasattr(st, "st_blocks"):
        assert st.st_blocks * 512 < st.st_size // 20
    # the big-page table's page starts hold NumberOfBytes 0xFA000: they read as a free,
    # zero-tag first header (PreviousSize 0, BlockSize 15), counted apart from rejected_pages
    assert p["scan"]["rejected_pages"] == 6
    ff = p["scan"]["rejected_free_first"]
    assert len(ff) == p["scan"]["rejected_free_first_pages"] >= 1
    table = p["bigpool"]["va"]
    assert all(table <= f["va"] < table + 0x800 * 0x18 for f in ff)
    kd = kdmp_parser.KernelDumpParser(tmp_path / "leak.dmp")
    for b in live[::100]:
        pa = kd.translate_virtual(b["va"] + b["bytes"] - 1)
        assert pa is not None and bytes(kd.read_physical_page(pa & ~0xFFF)) == bytes(PAGE)
    page = bytes(kd.read_physical_page(ff[0]["pa"]))
    assert page[:8] == (1_024_000).to_bytes(8, "little")


def test_win10_tables_use_the_profile_layouts(forged):
    path, truth = forged("win10-19045")
    p = truth.pool
    lay = PoolLayoutView(19045)
    view = KdView(path)
    assert lay.size("tracker") == 0x38 and not lay.globals
    var = truth.kdbg["fields"]["PoolTrackTable"]
    table = view.q(var)
    assert table == p["tracker"]["va"]
    entries = view.q(truth.symbols["PoolTrackTableSize"])
    assert entries == p["tracker"]["entries"]
    # per-CPU tables: ExPoolTagTables[0] is PoolTrackTable, the other CPUs have their own
    assert lay.p["per_cpu_tag_tables"] is True
    tt = p["tracker"]["tag_tables"]
    assert tt["va"] == truth.symbols["ExPoolTagTables"]
    cpus = truth.header["NumberProcessors"]
    assert [view.q(tt["va"] + 8 * i) for i in range(cpus + 1)] == [*tt["slots"], 0]
    assert tt["slots"][0] == table and len(set(tt["slots"])) == cpus
    exp = view.q(truth.symbols["PoolTrackTableExpansion"])
    n_exp = view.q(truth.symbols["PoolTrackTableExpansionSize"])
    tables = p["tracker"]["tables"]
    assert [(x["kind"], x["va"]) for x in tables] == [
        ("global", table), *(("per_cpu", v) for v in tt["slots"][1:]), ("expansion", exp)
    ]  # fmt: skip
    assert n_exp == 0x1000 // 0x38 == tables[-1]["entries"]
    big_rows = {b["va"]: b for b in p["bigpool"]["rows"]}
    fields = {f"{pool}_{c.lower()}": f"{cap}{c}" for pool, cap in (("nonpaged", "NonPaged"),
              ("paged", "Paged")) for c in ("Allocs", "Frees", "Bytes")}  # fmt: skip
    sums: dict[str, list[int]] = {}
    global_keys = {}
    wrapped = 0
    for x in tables:
        raw = view.read(x["va"], x["entries"] * 0x38)
        got = [lay.entry("tracker", raw, i * 0x38) for i in range(x["entries"])]
        keyed = {i: g for i, g in enumerate(got) if g["Key"]}
        assert sorted(keyed) == [r["slot"] for r in x["rows"]]
        for r in x["rows"]:
            g = keyed[r["slot"]]
            assert _tag(g["Key"]) == r["tag"]
            for c, f in fields.items():
                assert g[f] == r[c] % (1 << 64), (x["kind"], r["tag"], c)
                wrapped += r[c] < 0
            acc = sums.setdefault(r["tag"], [0] * 6)
            for i, c in enumerate(fields):
                acc[i] += r[c]
            if x["kind"] == "global":
                global_keys[r["slot"]] = r["tag"]
            elif x["kind"] == "per_cpu":  # a CPU's keys are PoolTrackTable's, in the same slot
                assert global_keys[r["slot"]] == r["tag"]
            else:
                assert r["tag"] not in global_keys.values()
        assert big_rows[x["va"]]["tag"] == "Pool" or x["va"] == table
    assert wrapped >= 1
    assert sums == {r["tag"]: [r[c] for c in fields] for r in p["tracker"]["rows"]}
    assert p["tracker"]["slots"][-2:] == [None, None]  # the expansion table's tags
    big = view.q(truth.symbols["PoolBigPageTable"])
    n = view.q(truth.symbols["PoolBigPageTableSize"])
    raw = view.read(big, n * 0x18)
    for r, s in zip(p["bigpool"]["rows"], p["bigpool"]["slots"], strict=True):
        e = lay.entry("big_page", raw, s * 0x18)
        assert (e["Va"] & ~1, e["NumberOfBytes"], _tag(e["Key"])) == (r["va"], r["bytes"], r["tag"])
        word = struct.unpack_from("<I", raw, s * 0x18 + 0xC)[0]
        assert word == (1 if r["pool"] == "paged" else 0) << 8  # PoolType in bits 8..19
    assert p["layout"] == "segment_heap"


def test_pool_scenario_keys_are_validated_and_round_trip():
    sc = forge.builtin("win7sp1")
    assert forge.Scenario.from_dict(json.loads(json.dumps(sc.to_dict()))) == sc
    assert sc.pool is not None and sc.pool.corrupt_pages.half_page == 2
    bad = [
        {"tags": [{"tag": "TooLong"}]},
        {"tags": [{"tag": " ab"}]},
        {"tags": [{"tag": "Abcd", "pool": "special"}]},
        {"big": [{"tag": "Abcd", "pool": "session_paged"}]},
        {"tracker_entries": 0x400},
        {"big_table_entries": 0x801},
        {"corrupt_pages": {"broken": 1}},
        {"tags": [{"tag": "Abcd", "sizes": 3}]},
    ]
    for pool in bad:
        with pytest.raises(ValueError):
            sc.replace(pool=pool)
    with pytest.raises(ValueError, match="below"):
        forge.forge(sc.replace(nonpaged_pool_pages=10, ram_mib=32), "/dev/null")


# ------------------------------------------------------------------ verifier
VERIFIER_VARS = (
    "MmVerifierData", "KernelVerifier", "VfSuspectDriversList", "ViTargetDriversAvl",
    "VfPoolTraces", "VfPoolTracesIndex", "VfPoolTracesLength", "IovIrpTraces",
    "IovIrpTracesIndex", "IovIrpTracesLength",
)  # fmt: skip
VERIFIER_BUILTINS = ["win7sp1-verifier", "win10-19045-verifier"]


class VerifierView:
    """The profile's verifier section parsed here (independently of the forge) plus reads
    through kdmp-parser."""

    def __init__(self, path, build: int):
        self.p = load_profile(build)["verifier"]
        self.c = {k: int(v, 16) for k, v in self.p["constants"].items()}
        self.view = KdView(path)

    def size(self, what: str) -> int:
        return int(self.p[what]["size"], 16)

    def off(self, what: str, name: str) -> int:
        return int(self.p[what][name]["offset"], 16)

    def get(self, raw: bytes, at: int, what: str, name: str) -> int:
        f = self.p[what][name]
        off = at + int(f["offset"], 16)
        return int.from_bytes(raw[off : off + f["width"]], "little")

    def struct(self, va: int, what: str) -> dict[str, int]:
        raw = self.view.read(va, self.size(what))
        return {n: self.get(raw, 0, what, n) for n in self.p[what] if n != "size"}

    def read(self, va: int, size: int) -> bytes:
        if size <= PAGE:
            return self.view.read(va, size)
        out = bytearray()  # large reads (the logs): page by page, without quadratic copies
        kd = self.view.kd
        while len(out) < size:
            cur = va + len(out)
            pa = kd.translate_virtual(cur)
            assert pa is not None, hex(cur)
            off = pa & 0xFFF
            page = kd.read_physical_page(pa - off)
            out += bytes(page)[off : off + min(PAGE - off, size - len(out))]
        return bytes(out)

    def q(self, va: int) -> int:
        return self.view.q(va)

    def u32(self, va: int) -> int:
        return struct.unpack("<I", self.read(va, 4))[0]


def _pool_tag_at(view: VerifierView, body: int) -> str:
    return view.read(body - 16 + 4, 4).decode("latin-1")


class _Owners:
    """Which module image holds a VA (memoized: log frames repeat)."""

    def __init__(self, truth):
        self.mods = sorted((m["base"], m["base"] + m["size"], m["name"]) for m in truth.modules)
        self.unloaded = [
            (u["base"], u["base"] + u["size"])
            for u in truth.verifier["layout"]["unloaded_images"].values()
        ]
        self.cache: dict[int, str | None] = {}

    def __call__(self, va: int) -> str | None:
        if va not in self.cache:
            self.cache[va] = next((n for b, e, n in self.mods if b <= va < e), None)
        return self.cache[va]

    def frame_ok(self, va: int) -> bool:
        return self(va) is not None or any(b <= va < e for b, e in self.unloaded)


def _walk_list(view: VerifierView, head: int) -> list[int]:
    out, node, prev = [], view.q(head), head
    while node != head:
        assert view.q(node + 8) == prev
        out.append(node)
        prev, node = node, view.q(node)
        assert len(out) < 1000
    assert view.q(head + 8) == prev
    return out


def _read_log(view: VerifierView, base: int, length: int, index: int, what: str, names):
    """Newest first: min(index, length) entries from slot index & (length - 1) backwards."""
    esize = view.size(what)
    raw = view.read(base, length * esize)
    st = view.off(what, "StackTrace")
    frames = view.c["pool_trace_frames" if what == "pool_trace" else "irp_trace_frames"]
    frames_at = struct.Struct(f"<{frames}Q")
    fields = [(n, int(view.p[what][n]["offset"], 16), view.p[what][n]["width"]) for n in names]
    out = []
    for i in range(min(index, length)):
        at = ((index - i) & (length - 1)) * esize
        e = {n: int.from_bytes(raw[at + o : at + o + w], "little") for n, o, w in fields}
        stack = frames_at.unpack_from(raw, at + st)
        e["stack"] = list(stack[: stack.index(0)] if 0 in stack else stack)
        out.append(e)
    return out, raw


def _check_tracker(view: VerifierView, truth, name: str, vd: int) -> dict:
    """Walk one driver's tracker pages and free list; returns its figures."""
    v = truth.verifier
    data = view.struct(vd, "verified_driver_data")
    assert data["Signature"] == view.c["verified_data_signature"] == 0x98761940
    low = 0x3 if truth.build < 9200 else 0
    raw = view.read(vd, view.size("verified_driver_data"))
    for head in ("PoolPageHeaders", "PoolTrackers"):
        nxt = view.off("verified_driver_data", f"{head}.Next")
        assert struct.unpack_from("<Q", raw, nxt)[0] & 0xF == low
    depth = data["PoolPageHeaders.Depth"]
    page = data["PoolPageHeaders.Next"] & ~0xF
    esize = view.size("pool_entry")
    per_page = view.c["entries_per_tracker_page"]
    bigpool = {b["va"]: b for b in truth.pool["bigpool"]["rows"]}
    blocks = {b["va"]: b for b in truth.pool["blocks"]}
    live, odd, pages = [], set(), []
    while page:
        assert page % PAGE == 0 and len(pages) < 100
        pages.append(page)
        hdr = view.struct(page, "pool_page_header")
        assert hdr["Signature"] == view.c["pool_page_signature"] == 0x21321345
        assert hdr["VerifierEntry"] == vd
        b = bigpool[page]
        assert (b["tag"], b["pool"], b["bytes"], b["free"]) == ("Vepp", "nonpaged", PAGE, False)
        buf = view.read(page, PAGE)
        for slot in range(1, per_page):
            e = {n: view.get(buf, slot * esize, "pool_entry", n)
                 for n in ("VirtualAddress", "CallingAddress", "NumberOfBytes", "Tag")}  # fmt: skip
            if e["NumberOfBytes"] & 1:
                odd.add(page + slot * esize)
                continue
            live.append((page + slot * esize, e))
        page = hdr["NextPage"]
    assert len(pages) == depth == len(v["layout"]["tracker_page_vas"][name])
    assert pages == v["layout"]["tracker_page_vas"][name]
    # the free list (PoolTrackers) visits exactly the odd entries
    free, entry = [], data["PoolTrackers.Next"] & ~0xF
    while entry:
        free.append(entry)
        entry = view.q(entry)
        assert len(free) <= len(odd)
    assert len(free) == len(set(free)) == data["PoolTrackers.Depth"] and set(free) == odd
    drv = next(d for d in v["drivers"] if d["name"] == name)
    counts = {"paged": [0, 0], "nonpaged": [0, 0]}
    for entry_va, e in live:
        va, n, tag = e["VirtualAddress"], e["NumberOfBytes"], e["Tag"].to_bytes(4, "little")
        assert n and n % 2 == 0 and va
        assert drv["base"] <= e["CallingAddress"] < drv["base"] + drv["size"]
        assert view.q(va + n - 8) == entry_va  # VerifierPoolEntry back-pointer
        if va % PAGE == 0 and va in bigpool:
            b = bigpool[va]
            assert not b["free"] and b["bytes"] >= n > 0xFE0
        else:
            b = blocks[va - 16]
            assert b["allocated"] and b["size"] - 16 == n and n % 16 == 0
            assert _pool_tag_at(view, va) == tag.decode()
        assert b["tag"] == tag.decode()
        counts[b["pool"]][0] += 1
        counts[b["pool"]][1] += n
    got = [{"driver": name, "va": e["VirtualAddress"], "bytes": e["NumberOfBytes"],
            "tag": e["Tag"].to_bytes(4, "little").decode(), "caller": e["CallingAddress"]}
           for _, e in live]  # fmt: skip
    assert got == [x for x in v["tracked"] if x["driver"] == name]
    for pool, cap in (("paged", "Paged"), ("nonpaged", "NonPaged")):
        cur = data[f"Current{cap}PoolAllocations"]
        assert cur == counts[pool][0] == drv[f"current_{pool}_allocs"]
        assert data[f"{cap}Bytes"] == counts[pool][1] == drv[f"current_{pool}_bytes"]
        assert data[f"Peak{cap}PoolAllocations"] == drv[f"peak_{pool}_allocs"] >= cur
        assert data[f"Peak{cap}Bytes"] == drv[f"peak_{pool}_bytes"] >= data[f"{cap}Bytes"]
    # live and free entries interleave on some page
    layout = "".join("L" if p + s * esize in {x for x, _ in live} else "F"
                     for p in pages for s in range(1, per_page))  # fmt: skip
    return {"pages": len(pages), "free": len(odd), "counts": counts, "data": data,
            "interleaved": "LFL" in layout, "live": live}  # fmt: skip


@pytest.mark.parametrize("scenario", ["win7sp1", "win10-19045"])
def test_verifier_not_enabled_leaves_mm_verifier_data_zero(forged, scenario):
    path, truth = forged(scenario)
    view = VerifierView(path, truth.build)
    va = truth.kdbg["fields"]["MmVerifierData"]
    assert va == truth.symbols["MmVerifierData"]
    assert view.read(va, view.size("mm_driver_verifier_data")) == bytes(
        view.size("mm_driver_verifier_data")
    )
    assert view.u32(truth.kdbg["fields"]["KernelVerifier"]) == 0
    assert truth.verifier is None and truth.to_dict()["verifier"] is None
    assert "VfSuspectDriversList" not in truth.symbols


@pytest.mark.parametrize("scenario", VERIFIER_BUILTINS)
def test_verifier_structures_through_kdmp(forged, scenario):
    path, truth = forged(scenario)
    t = {"symbols": truth.symbols, "kdbg": truth.kdbg, "header": truth.header,
         "build": truth.build, "pool": truth.pool}  # fmt: skip
    v = truth.verifier
    view = VerifierView(path, t["build"])
    for name in VERIFIER_VARS:
        assert name in t["symbols"], name
    assert v["layout"]["symbols"] == {k: t["symbols"][k] for k in v["layout"]["symbols"]}
    # MmVerifierData through KDBG (an address field), KernelVerifier = 0
    assert t["kdbg"]["fields"]["MmVerifierData"] == t["symbols"]["MmVerifierData"]
    stats = view.struct(t["symbols"]["MmVerifierData"], "mm_driver_verifier_data")
    assert stats == v["stats"] and stats["Level"] == v["level"] == 0x8
    assert view.u32(t["kdbg"]["fields"]["KernelVerifier"]) == 0
    # bug check 0xC4 / 0x62: name, verified data, outstanding allocations of myfault.sys
    bc = t["header"]["BugCheckCodeParameters"]
    assert t["header"]["BugCheckCode"] == 0xC4 and bc[0] == 0x62
    assert view.view.unicode_string(bc[1]) == "myfault.sys" and bc[3] == 10

    # VfSuspectDriversList: entries in scenario order, name inline after the structure
    esize = view.size("suspect_driver_entry")
    entries = _walk_list(view, t["symbols"]["VfSuspectDriversList"])
    names = []
    for e in entries:
        s = view.struct(e, "suspect_driver_entry")
        assert s["BaseName.Buffer"] == e + esize == e + 0x28
        name = view.read(s["BaseName.Buffer"], s["BaseName.Length"]).decode("utf-16-le")
        names.append((name, s["Loads"], s["Unloads"]))
        assert _pool_tag_at(view, e) == "VfSD"
        assert v["layout"]["suspect_entries"][name] == e
    assert names == [(d["name"], d["loads"], d["unloads"]) for d in v["drivers"]]
    assert [d["state"] for d in v["drivers"]] == ["loaded"] * 3 + ["unloaded"]

    # ViTargetDriversAvl: every table a BST keyed by image base, one node per loaded driver
    tree = view.struct(t["symbols"]["ViTargetDriversAvl"], "avl_tree")
    tables_no = tree["TablesNo"]
    assert tables_no == (1 if t["build"] < 9200 else 2) == v["layout"]["tables_no"]
    stride = view.size("avl_table")
    links = view.c["avl_node_links"]
    found = {}
    for ti in range(tables_no):
        table = tree["Tables"] + ti * stride
        assert view.q(table + view.off("balanced_links", "Parent")) == table
        root = view.q(table + view.off("avl_table", "RightChild"))
        keys = []

        def walk(node, parent, lo, hi, table=table, ti=ti, keys=keys):
            if not node:
                return
            bl = view.struct(node, "balanced_links")
            assert bl["Parent"] == parent
            td = view.struct(node + links, "target_driver")
            assert lo < td["p"] < hi and (td["p"] >> 12) % tables_no == ti
            assert _pool_tag_at(view, node) == "VfAT"
            walk(bl["LeftChild"], node, lo, td["p"])
            keys.append(td["p"])
            found[td["p"]] = (td, node)
            walk(bl["RightChild"], node, td["p"], hi)

        walk(root, table, 0, 1 << 64)
        assert keys == sorted(keys)
        count = struct.unpack("<I", view.read(table + view.off("avl_table",
                              "NumberGenericTableElements"), 4))[0]  # fmt: skip
        assert count == len(keys)
    if tables_no > 1:
        assert len(set(v["layout"]["avl_table_of"].values())) == tables_no  # all used
    loaded = [d for d in v["drivers"] if d["state"] == "loaded"]
    assert tree["NodeCount"] == len(found) == len(loaded)
    figures = {}
    for d in loaded:
        m = truth.module(d["name"])
        assert (d["base"], d["size"]) == (m["base"], m["size"])
        td, node = found[d["base"]]
        assert td["RangeSize"] == d["size"] and node == v["layout"]["avl_nodes"][d["name"]]
        vd = td["VerifiedData"]
        assert _pool_tag_at(view, vd) == "VfVD" and vd == v["layout"]["verified_data"][d["name"]]
        assert view.q(vd) == v["layout"]["suspect_entries"][d["name"]]  # SuspectDriverEntry
        figures[d["name"]] = _check_tracker(view, truth, d["name"], vd)
    assert v["tracker_pages"] == sum(f["pages"] for f in figures.values())
    assert v["free_entries"] == sum(f["free"] for f in figures.values())
    assert figures["vrfdemo.sys"]["pages"] >= 3 and figures["vrfdemo.sys"]["interleaved"]
    # MmVerifierData figures: sums over the tracked entries (and peaks above them)
    for pool, cap in (("paged", "Paged"), ("nonpaged", "NonPaged")):
        cur = sum(f["counts"][pool][0] for f in figures.values())
        nbytes = sum(f["counts"][pool][1] for f in figures.values())
        assert stats[f"Current{cap}PoolAllocations"] == cur
        assert stats[f"{cap}Bytes"] == nbytes
        assert stats[f"Peak{cap}PoolAllocations"] >= cur
        assert stats[f"Peak{cap}Bytes"] >= nbytes
    tracked = len(v["tracked"])
    assert stats["AllocationsAttempted"] >= stats["AllocationsSucceeded"] >= tracked
    assert stats["AllocationsSucceeded"] >= stats["AllocationsSucceededSpecialPool"] >= 10
    assert (stats["Loads"], stats["Unloads"]) == (1 + 1 + 3 + 2, 0 + 0 + 2 + 2)
    # the blog's leak: ten 0xFB000-byte requests from myfault+0x1634, charged 0xFB008
    mf = truth.module("myfault.sys")
    leak = [x for x in v["tracked"] if x["driver"] == "myfault.sys"]
    assert len(leak) == 10
    assert {(x["tag"], x["bytes"], x["caller"] - mf["base"]) for x in leak} == {
        ("Leak", 0xFB008, 0x1634)
    }
    # the pool scan stays consistent: nothing but the scenario's corrupt pages is rejected
    assert {r["kind"] for r in t["pool"]["scan"]["rejected"]} <= {
        "broken_chain", "garbage_header", "half_page"
    }  # fmt: skip
    rows = {r["tag"]: r for r in t["pool"]["tracker"]["rows"]}
    assert rows["Leak"]["nonpaged_allocs"] - rows["Leak"]["nonpaged_frees"] == 10
    # three freed big ones (big-page entries with Va | 1), plus small churn in the pool log
    assert rows["Leak"]["nonpaged_frees"] > 3
    assert [b["bytes"] for b in t["pool"]["bigpool"]["rows"] if b["tag"] == "Leak" and b["free"]
            ] == [0xFC000] * 3  # fmt: skip
    for tag in ("VfSD", "VfAT", "VfVD", "Vepp", "VfPT", "VfIT"):
        assert [o["module"] for o in t["pool"]["owners"][tag]] == ["ntoskrnl.exe"], tag


@pytest.mark.parametrize("scenario", VERIFIER_BUILTINS)
def test_verifier_logs_wrap_newest_first(forged, scenario):
    path, truth = forged(scenario)
    t = {"pool": truth.pool, "kernel_base": truth.kernel_base}
    v, sym = truth.verifier, truth.symbols
    view = VerifierView(path, truth.build)
    owner = _Owners(truth)
    base, index = view.q(sym["VfPoolTraces"]), view.u32(sym["VfPoolTracesIndex"])
    length = view.u32(sym["VfPoolTracesLength"])
    log = v["log"]
    assert (base, length, index) == (log["va"], log["length"], log["index"])
    assert index > length and length & (length - 1) == 0  # wrapped, power of two
    b = {r["va"]: r for r in t["pool"]["bigpool"]["rows"]}[base]
    assert (b["tag"], b["pool"]) == ("VfPT", "nonpaged")
    entries, raw = _read_log(view, base, length, index, "pool_trace", ("Address", "Size", "Thread"))
    assert len(entries) == length
    assert [{"va": e["Address"], "bytes": e["Size"], "thread": e["Thread"], "stack": e["stack"]}
            for e in entries] == log["entries"]  # fmt: skip
    # old frames stay after a shorter stack's terminator (the kernel writes only one 0)
    st, esize = view.off("pool_trace", "StackTrace"), view.size("pool_trace")
    stale = 0
    for slot in range(length):
        frames = struct.unpack_from("<13Q", raw, slot * esize + st)
        k = frames.index(0) if 0 in frames else 13
        stale += any(frames[k + 1 :])
    assert stale > 0
    alloc_top = sym["VeAllocatePoolWithTagPriority"]
    free_top = sym["ExFreePoolWithTag"]
    threads = set(v["layout"]["threads"])
    for th in threads:  # ETHREADs: 16-aligned, in nonpaged pool ("Thre" blocks)
        assert th % 16 == 0 and view.view.kd.translate_virtual(th) is not None
    kinds = {"alloc": 0, "free": 0}
    frames: set[int] = set()
    for e in entries:
        assert e["Thread"] in threads and len(e["stack"]) <= 13
        top = e["stack"][0]
        kind = "alloc" if alloc_top <= top < alloc_top + 0x480 else "free"
        if kind == "free":
            assert free_top <= top < free_top + 0x700
        kinds[kind] += 1
        frames.update(e["stack"])
    assert kinds["alloc"] and kinds["free"]
    assert all(owner.frame_ok(f) for f in frames)  # frames lie in module images
    # allocation sites: tracked blocks joined with their (newest) allocation trace
    newest = {}
    for e in reversed(entries):  # oldest first, so newer entries win
        if alloc_top <= e["stack"][0] < alloc_top + 0x480:
            newest[e["Address"]] = e["stack"]
    sites: dict[tuple, list[int]] = {}
    for x in v["tracked"]:
        key = (x["driver"], x["caller"], tuple(newest.get(x["va"], ())))
        s = sites.setdefault(key, [0, 0])
        s[0] += x["bytes"]
        s[1] += 1
    ranked = sorted(sites.items(), key=lambda kv: (-kv[1][0], -kv[1][1], kv[0]))
    assert [{"driver": k[0], "caller": k[1], "outstanding_bytes": s[0],
             "outstanding_allocs": s[1], "stack": list(k[2])}
            for k, s in ranked] == v["sites"]  # fmt: skip
    top_site = v["sites"][0]
    mf = truth.module("myfault.sys")
    assert top_site["driver"] == "myfault.sys" and top_site["outstanding_allocs"] == 10
    assert top_site["stack"][2:4] == [mf["base"] + 0x1634, mf["base"] + 0x1700]
    assert owner(top_site["stack"][4]) == "ntoskrnl.exe"

    # the IRP log
    ib, ii = view.q(sym["IovIrpTraces"]), view.u32(sym["IovIrpTracesIndex"])
    il = view.u32(sym["IovIrpTracesLength"])
    irp = v["irp_log"]
    assert (ib, il, ii) == (irp["va"], irp["length"], irp["index"]) and ii > il == 0x100
    names = ("Irp", "Thread", "KernelApcDisable", "SpecialApcDisable", "Irql")
    got, _ = _read_log(view, ib, il, ii, "irp_trace", names)

    def s16(x):
        return x - 0x10000 if x & 0x8000 else x

    assert [{"irp": e["Irp"], "thread": e["Thread"], "irql": e["Irql"],
             "kernel_apc_disable": s16(e["KernelApcDisable"]),
             "special_apc_disable": s16(e["SpecialApcDisable"]), "stack": e["stack"]}
            for e in got] == irp["entries"]  # fmt: skip
    irps = set(v["layout"]["irps"])
    culprits = []
    for e in got:
        assert e["Irp"] in irps and e["Irql"] <= 2
        first = next((owner(f) for f in e["stack"] if owner(f) != "ntoskrnl.exe"), None)
        if e["SpecialApcDisable"]:
            culprits.append(first)
    assert culprits == ["fltdemo.sys"] * 5


def test_verifier_custom_scenario_defaults_and_options(tmp_path):
    sc = forge.builtin("win7sp1").replace(
        ram_mib=48, fill="zero", pool=None, bugcheck={"code": "0xC4"},
        verifier={
            "level": "0x9BB",
            "drivers": [{
                "name": "custom.sys", "size": "0x6000", "freed": 40,
                "allocations": [
                    {"tag": "Cus1", "bytes": 0x30, "pool": "nonpaged", "count": 300,
                     "site": "0x1200",
                     "stack": ["nt!VeAllocatePoolWithTagPriority+0x2cb", "nt+0x1234",
                               "custom+0x1206", "custom.sys+0x1500", "Ntfs.sys+0x2000"]},
                    {"tag": "Cus2", "bytes": 0x3000, "pool": "paged", "count": 2},
                ]}],
            "pool_log": {"length": 0x800},
            "avl_tables": 3,
            "stats": {"RaiseIrqls": 77, "Trims": 5},
        },
    )  # fmt: skip
    truth = forge.forge(sc, tmp_path / "c.dmp")
    t = truth.to_dict()
    v = t["verifier"]
    view = VerifierView(tmp_path / "c.dmp", 7601)
    custom = truth.module("custom.sys")  # added to the module list, with its tag sites
    assert custom["size"] == 0x6000 and {s["tag"] for s in custom["tag_sites"]} == {"Cus1", "Cus2"}
    stats = view.struct(t["symbols"]["MmVerifierData"], "mm_driver_verifier_data")
    assert stats == v["stats"] and (stats["Level"], stats["RaiseIrqls"], stats["Trims"]) == (
        0x9BB,
        77,
        5,
    )
    assert stats["CurrentNonPagedPoolAllocations"] == 300
    assert stats["CurrentPagedPoolAllocations"] == 2
    assert stats["PagedBytes"] == 2 * (0x3000 + 8)
    tree = view.struct(t["symbols"]["ViTargetDriversAvl"], "avl_tree")
    assert tree["TablesNo"] == 3 and tree["NodeCount"] == 1
    fig = _check_tracker(view, truth, "custom.sys", v["layout"]["verified_data"]["custom.sys"])
    assert fig["pages"] >= 3 and v["tracker_pages"] == fig["pages"]
    # the pool log: exactly the driver's events (not wrapped: slot 0 empty), user stacks
    log = v["log"]
    assert log["index"] == 302 + 2 * 40 and log["index"] < log["length"]
    assert view.u32(t["symbols"]["VfPoolTracesIndex"]) == log["index"]
    assert view.read(log["va"], 0x80) == bytes(0x80)
    want = [t["symbols"]["VeAllocatePoolWithTagPriority"] + 0x2CB, t["kernel_base"] + 0x1234,
            custom["base"] + 0x1206, custom["base"] + 0x1500,
            truth.module("Ntfs.sys")["base"] + 0x2000]  # fmt: skip
    user = [e for e in log["entries"] if e["stack"] == want]
    assert len(user) >= 300  # every Cus1 allocation trace (freed ones too)
    frees = [e for e in log["entries"] if e["stack"][0] != want[0]
             and e["stack"][0] - t["symbols"]["ExFreePoolWithTag"] == 0x4AF]  # fmt: skip
    assert len(frees) == 40
    assert v["irp_log"] is None and view.q(t["symbols"]["IovIrpTraces"]) == 0
    assert view.u32(t["symbols"]["IovIrpTracesLength"]) == 0
    assert t["header"]["BugCheckCodeParameters"][:1] == [0x62]


def test_verifier_is_deterministic(tmp_path):
    sc = forge.builtin("win7sp1-verifier").replace(ram_mib=64)
    a = forge.forge(sc, tmp_path / "a.dmp")
    b = forge.forge(sc, tmp_path / "b.dmp")
    assert _sha(tmp_path / "a.dmp") == _sha(tmp_path / "b.dmp")
    assert json.dumps(a.to_dict()["verifier"]) == json.dumps(b.to_dict()["verifier"])
    back = json.loads(json.dumps(a.to_dict()))
    assert back["verifier"] == a.to_dict()["verifier"]


def test_verifier_scenario_keys_are_validated_and_round_trip(tmp_path):
    sc = forge.builtin("win7sp1-verifier")
    assert forge.Scenario.from_dict(json.loads(json.dumps(sc.to_dict()))) == sc
    assert sc.verifier is not None and sc.verifier.level == 8
    good = {"drivers": [{"name": "a.sys"}]}
    bad = [
        {"levels": 8},
        {"drivers": [{"name": "a.sys", "loaded": False, "allocations": [{"count": 1}]}]},
        {"drivers": [{"name": "a.sys", "loads": 1, "unloads": 1}]},
        {"drivers": [{"name": "a.sys", "loaded": False, "loads": 2, "unloads": 1}]},
        {"drivers": [{"name": "a.sys"}, {"name": "A.SYS"}]},
        {"drivers": [{"name": "ntoskrnl.exe"}]},
        {"drivers": [{"name": "a.sys", "allocations": [{"pool": "session_paged"}]}]},
        {"drivers": [{"name": "a.sys", "allocations": [{"tag": "TooLong"}]}]},
        {"drivers": [{"name": "a.sys", "allocations": [{"stack": [0]}]}]},
        {"drivers": [{"name": "a.sys", "allocations": [{"stack": ["a.sys+zz"]}]}]},
        {"drivers": [{"name": "a.sys", "bogus": 1}]},
        {"pool_log": {"length": 0x300}},
        {"irp_log": {"length": 0x100, "apc_disabled": [{"module": "nt"}]}},
        {"stats": {"PagedBytes": 5}},
        {"avl_tables": 0},
    ]
    for v in bad:
        with pytest.raises(ValueError):
            sc.replace(verifier=v)
    small = forge.builtin("win7sp1").replace(ram_mib=32, fill="zero", pool=None)
    errors = [
        ({**good, "pool_log": {"length": 4, "entries_written": 0}, "drivers": [
            {"name": "a.sys", "freed": 2}]}, "below"),
        ({**good, "irp_log": {"length": 4, "entries_written": 2,
                              "apc_disabled": [{"module": "a.sys", "count": 3}]}}, "fit"),
        ({"drivers": [{"name": "a.sys", "allocations": [{"site": 0x9000}]}]}, "outside"),
        ({**good, "stats": {"Nope": 1}}, "not in the profile"),
        ({"drivers": [{"name": "a.sys", "allocations": [{"stack": ["zz.sys+4"]}]}]}, "unknown"),
    ]  # fmt: skip
    for v, msg in errors:
        with pytest.raises(ValueError, match=msg):
            forge.forge(small.replace(verifier=v), tmp_path / "x.dmp")
    with pytest.raises(ValueError, match="unloaded but in the module list"):
        forge.forge(small.replace(verifier={"drivers": [
            {"name": "myfault.sys", "loaded": False}]}), tmp_path / "y.dmp")  # fmt: skip


@pytest.mark.parametrize("scenario", VERIFIER_BUILTINS)
def test_verifier_builtins_are_quick(tmp_path, scenario):
    t0 = time.perf_counter()
    forge.forge(scenario, tmp_path / "v.dmp")
    assert time.perf_counter() - t0 < 3.0
