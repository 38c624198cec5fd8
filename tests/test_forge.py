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
    assert load_profile(26100)["name"] == "win10-19041-x64"
    assert load_profile("0x4A65")["name"] == "win10-19041-x64"
    with pytest.raises(LookupError):
        load_profile(6000)


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
    assert [s["text"] for s in myfault["strings"]] == ["Leak"]

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
    assert struct.unpack_from("<Q", page)[0] == unused and all(b >= 0x80 for b in page[16:])
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
