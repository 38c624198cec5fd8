"""Volatility 3 ISF symbol tables (``--symbols``) on Windows 7 SP1, 10 22H2 and 11 24H2 forge
dumps. The test writes the forged kernel's ISF in the format volatility3 reads (metadata format
6.2.0; base_types; user_types in the shapes a PDB gives them: anonymous members flat, embedded
structures and unions by name, bitfields, arrays; every global at its address relative to the
kernel base). Its globals replace the profile's heuristics and the symbol-free search, and its
structure layouts replace those of a deliberately wrong profile, so that the tagging database,
the big-pool table, the pool page scan and Driver Verifier's data equal the forge's truth."""

from __future__ import annotations

import copy
import json
import lzma
from typing import Any

import pytest

import poolscope
from dump_util import poolused_rows, scanned_blocks, summed, truth_blocks
from poolscope.forge import load_profile

BUILDS = ["win7sp1", "win10-19045", "win11-26100"]
"""Legacy pool (7601), segment heap with 0x38/0x18-byte tracker/big-page entries (19045) and
with 0x50/0x20-byte ones (26100); each with its ``-verifier`` twin for Driver Verifier."""

# ------------------------------------------------------------------ the ISF the test writes
BASE_TYPES = {
    name: {"size": size, "signed": signed, "kind": kind, "endian": "little"}
    for name, size, signed, kind in [
        ("void", 0, True, "void"),
        ("char", 1, True, "char"),
        ("unsigned char", 1, False, "char"),
        ("unsigned short", 2, False, "int"),
        ("long", 4, True, "int"),
        ("unsigned long", 4, False, "int"),
        ("long long", 8, True, "int"),
        ("unsigned long long", 8, False, "int"),
        ("pointer", 8, False, "int"),
    ]
}
WIDTH_TYPE = {1: "unsigned char", 2: "unsigned short", 4: "unsigned long", 8: "unsigned long long"}
PTR = {"kind": "pointer", "subtype": {"kind": "base", "name": "void"}}


def base(width: int) -> dict[str, Any]:
    return {"kind": "base", "name": WIDTH_TYPE[width]}


def bitfield(width: int, position: int, length: int) -> dict[str, Any]:
    return {"kind": "bitfield", "bit_position": position, "bit_length": length,
            "type": base(width)}  # fmt: skip


def ref(kind: str, name: str) -> dict[str, Any]:
    return {"kind": kind, "name": name}


def array(count: int, subtype: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "array", "count": count, "subtype": subtype}


def utype(size: int, kind: str = "struct", **fields: tuple[int, dict[str, Any]]) -> dict[str, Any]:
    return {"kind": kind, "size": size,
            "fields": {n: {"offset": o, "type": t} for n, (o, t) in fields.items()}}  # fmt: skip


SHARED_TYPES = {
    "_LIST_ENTRY": utype(0x10, Flink=(0, PTR), Blink=(8, PTR)),
    "_UNICODE_STRING": utype(0x10, Length=(0, base(2)), MaximumLength=(2, base(2)),
                             Buffer=(8, PTR)),
    # x64 SLIST_HEADER: Depth and NextEntry are bitfields of an unnamed struct.
    "_SLIST_HEADER": utype(0x10, "union", Alignment=(0, base(8)), Region=(8, base(8)),
                           HeaderX64=(0, ref("struct", "__unnamed_1f3c"))),
    "__unnamed_1f3c": utype(0x10, Depth=(0, bitfield(8, 0, 16)), Sequence=(0, bitfield(8, 16, 48)),
                            Reserved=(8, bitfield(8, 0, 4)), NextEntry=(8, bitfield(8, 4, 60))),
    "_RTL_BALANCED_LINKS": utype(0x20, Parent=(0, PTR), LeftChild=(8, PTR), RightChild=(0x10, PTR),
                                 Balance=(0x18, ref("base", "char")),
                                 Reserved=(0x19, array(3, base(1)))),
    "_RTL_AVL_TABLE": utype(0x68, BalancedRoot=(0, ref("struct", "_RTL_BALANCED_LINKS")),
                            OrderedPointer=(0x20, PTR), WhichOrderedElement=(0x28, base(4)),
                            NumberGenericTableElements=(0x2C, base(4)), DepthOfTree=(0x30, base(4)),
                            RestartKey=(0x38, PTR), DeleteCount=(0x40, base(4)),
                            CompareRoutine=(0x48, PTR), AllocateRoutine=(0x50, PTR),
                            FreeRoutine=(0x58, PTR), TableContext=(0x60, PTR)),
    "_VF_AVL_TREE_NODE": utype(0x10, p=(0, PTR), RangeSize=(8, base(8))),
    "_VF_AVL_TREE_NODE_EX": utype(0x18, Base=(0, ref("struct", "_VF_AVL_TREE_NODE")),
                                  SessionId=(0x10, base(4))),
}  # fmt: skip
"""Structures the verifier types embed, as their PDBs lay them out."""

VERIFIER_TYPES = {
    "mm_driver_verifier_data": "_MM_DRIVER_VERIFIER_DATA",
    "suspect_driver_entry": "_VF_SUSPECT_DRIVER_ENTRY",
    "target_driver": "_VF_TARGET_DRIVER",
    "verified_driver_data": "_VF_TARGET_VERIFIED_DRIVER_DATA",
    "pool_trace": "_VF_POOL_TRACE",
    "irp_trace": "_IOV_IRP_TRACE",
    "avl_tree": "_VF_AVL_TREE",
    "avl_table": "_VF_AVL_TABLE",
    "balanced_links": "_RTL_BALANCED_LINKS",
    "pool_page_header": "_VI_POOL_PAGE_HEADER",
    "pool_entry": "_VI_POOL_ENTRY_INUSE",
}
"""Profile section -> the PDB's type."""
NESTS = {
    "suspect_driver_entry": {"Flink": ("Links", 0), "Blink": ("Links", 8)},
    "avl_table": {"RightChild": ("RtlTable", 0x10),
                  "NumberGenericTableElements": ("RtlTable", 0x2C)},
    "target_driver": {"p": ("TreeNode", 0), "RangeSize": ("TreeNode", 8),
                      "SessionId": ("TreeNode", 0x10)},
}  # fmt: skip
"""Fields a profile names flat that a PDB holds in an embedded structure: (member, offset in it).
A profile's dotted name ("BaseName.Buffer") names the member and its field."""
MEMBER_TYPES = {"Links": "_LIST_ENTRY", "RtlTable": "_RTL_AVL_TABLE", "BaseName": "_UNICODE_STRING",
                "FullName": "_UNICODE_STRING", "PoolPageHeaders": "_SLIST_HEADER",
                "PoolTrackers": "_SLIST_HEADER"}  # fmt: skip
INNER = {"Length": 0, "Buffer": 8, "Depth": 0, "Next": 8}


def hexint(v: str | int) -> int:
    return int(v, 16) if isinstance(v, str) else v


def from_profile(entry: dict[str, Any], nests: dict | None = None, frames: int = 0) -> dict:
    """A profile entry ``{size, Field: {offset, width[, shift, bits]}}`` as the PDB's type:
    bit ranges as bitfields, StackTrace as an array of ``frames`` pointers, nested fields as
    members of their embedded structure."""
    fields: dict[str, tuple[int, dict[str, Any]]] = {}
    members: dict[str, int] = {}
    for name, f in entry.items():
        if not isinstance(f, dict):
            continue
        off, width = hexint(f["offset"]), f["width"]
        head, _, rest = name.partition(".")
        nest = (nests or {}).get(name) or (rest and (head, INNER[rest]))
        if nest:
            member, inner = nest
            assert members.setdefault(member, off - inner) == off - inner, name
        elif name == "StackTrace":
            fields[name] = (off, array(frames, PTR))
        elif "bits" in f:
            fields[name] = (off, bitfield(width, f.get("shift", 0), f["bits"]))
        else:
            fields[name] = (off, base(width))
    for member, off in members.items():
        ty = MEMBER_TYPES.get(member)
        if member == "TreeNode":
            ty = "_VF_AVL_TREE_NODE_EX" if "SessionId" in entry else "_VF_AVL_TREE_NODE"
        fields[member] = (off, ref(SHARED_TYPES[ty]["kind"], ty))
    return utype(hexint(entry["size"]), **fields)


def segment_heap_types(seg: dict[str, Any]) -> dict[str, Any]:
    """_HEAP_VS_SUBSEGMENT, _HEAP_VS_CHUNK_HEADER(_SIZE), _HEAP_LFH_SUBSEGMENT(_ENCODED_OFFSETS)
    and _RTLP_HP_HEAP_GLOBALS at the profile's offsets, in their PDB shapes (the chunk
    header's sizes are ULONG bitfields of a union; BlockBitmap is ULONGLONG[1])."""
    vs, ch, lfh, keys = (seg[k] for k in ("vs_subsegment", "vs_chunk_header", "lfh_subsegment",
                                          "keys"))  # fmt: skip

    def header_bits(name: str, length: int) -> tuple[int, dict[str, Any]]:
        shift = ch[name]["shift"]
        return shift // 32 * 4, bitfield(4, shift % 32, length)

    size, sig = hexint(vs["Size"]), hexint(vs["Signature"])
    lfh_at = {k: hexint(lfh[k]) for k in ("FreeCount", "BlockCount", "BlockOffsets", "BlockBitmap")}
    optional = {"Location": (hexint(lfh["Location"]), base(1))} if "Location" in lfh else {}
    heap_key, lfh_key = hexint(keys["HeapKey"]), hexint(keys["LfhKey"])
    return {
        "_HEAP_VS_SUBSEGMENT": utype(
            (max(size, sig) + 2 + 7) // 8 * 8,
            ListEntry=(0, ref("struct", "_LIST_ENTRY")), CommitBitmap=(0x10, base(8)),
            CommitLock=(0x18, base(8)), Size=(size, base(2)), Signature=(sig, bitfield(2, 0, 15)),
            FullCommit=(sig, bitfield(2, 15, 1)),
        ),
        "_HEAP_VS_CHUNK_HEADER_SIZE": utype(
            8, "union", MemoryCost=(0, bitfield(4, 0, 16)),
            UnsafeSize=header_bits("UnsafeSize", 16),
            UnsafePrevSize=header_bits("UnsafePrevSize", 16),
            Allocated=header_bits("Allocated", 8), KeyUShort=(0, base(2)), KeyULong=(0, base(4)),
            HeaderBits=(0, base(8)),
        ),
        "_HEAP_VS_CHUNK_HEADER": utype(
            hexint(ch["size"]), Sizes=(0, ref("union", "_HEAP_VS_CHUNK_HEADER_SIZE")),
            EncodedSegmentPageOffset=(8, bitfield(4, 0, 8)), UnusedBytes=(8, bitfield(4, 8, 1)),
            SkipDuringWalk=(8, bitfield(4, 9, 1)), Spare=(8, bitfield(4, 10, 22)),
            AllocatedChunkBits=(8, base(4)),
        ),
        "_HEAP_LFH_SUBSEGMENT_ENCODED_OFFSETS": utype(
            4, BlockSize=(0, base(2)), FirstBlockOffset=(2, base(2)), EncodedData=(0, base(4))
        ),
        "_HEAP_LFH_SUBSEGMENT": utype(
            lfh_at["BlockBitmap"] + 8,
            ListEntry=(0, ref("struct", "_LIST_ENTRY")), Owner=(0x10, PTR),
            CommitLock=(0x18, base(8)), FreeCount=(lfh_at["FreeCount"], base(2)),
            BlockCount=(lfh_at["BlockCount"], base(2)), **optional,
            BlockOffsets=(lfh_at["BlockOffsets"],
                          ref("struct", "_HEAP_LFH_SUBSEGMENT_ENCODED_OFFSETS")),
            BlockBitmap=(lfh_at["BlockBitmap"], array(1, base(8))),
        ),
        "_RTLP_HP_HEAP_GLOBALS": utype(
            max(heap_key, lfh_key) + 8, HeapKey=(heap_key, base(8)), LfhKey=(lfh_key, base(8))
        ),
    }  # fmt: skip


def kernel_isf(t: dict[str, Any]) -> dict[str, Any]:
    """The ISF of the forged kernel: the build's pool, segment-heap and verifier layouts and
    every global the forge placed, relative to the kernel base."""
    prof = load_profile(t["build"])
    pool, ver = prof["pool"], prof.get("verifier")
    types = dict(SHARED_TYPES)
    types["_POOL_TRACKER_TABLE"] = from_profile(pool["tracker"])
    types["_POOL_TRACKER_BIG_PAGES"] = from_profile(pool["big_page"])
    if "segment_heap" in pool:
        types.update(segment_heap_types(pool["segment_heap"]))
    if ver:
        consts = ver["constants"]
        for section, ty in VERIFIER_TYPES.items():
            frames = hexint(consts.get(f"{section}_frames", "0"))
            types[ty] = from_profile(ver[section], NESTS.get(section), frames)
    base_va = t["kernel_base"]
    return {
        "metadata": {
            "format": "6.2.0",
            "producer": {"name": "poolscope-tests", "version": "1"},
            "windows": {
                "pdb": {
                    "GUID": f"{t['build']:032X}",
                    "age": 1,
                    "database": "ntkrnlmp.pdb",
                    "machine_type": 0x8664,
                }
            },
        },
        "base_types": BASE_TYPES,
        "user_types": types,
        "enums": {},
        "symbols": {name: {"address": va - base_va} for name, va in t["symbols"].items()},
    }


def write_isf(path, t: dict[str, Any]) -> None:
    """``kernel.json``, or xz-compressed for ``.xz`` (volatility3 reads both)."""
    text = json.dumps(kernel_isf(t)).encode()
    path.write_bytes(lzma.compress(text) if path.suffix == ".xz" else text)


# ------------------------------------------------------------------ figures and their truth
DRIVER_FIELDS = ("name", "state", "loads", "unloads", "current_paged_allocs",
                 "current_nonpaged_allocs", "current_paged_bytes", "current_nonpaged_bytes",
                 "peak_paged_allocs", "peak_nonpaged_allocs", "peak_paged_bytes",
                 "peak_nonpaged_bytes")  # fmt: skip


def want_pool(t: dict[str, Any]) -> dict[str, Any]:
    """The truth's !poolused rows (per tag, summed mod 2^64 over the tables, rows without bytes
    dropped), big-pool rows, and pool scan (summary and every block)."""
    scan = t["pool"]["scan"]
    return {
        "poolused": summed(t["pool"]["tracker"]["rows"]),
        "bigpool": sorted((r["va"], r["tag"], r["bytes"], r["pool"], r["free"])
                          for r in t["pool"]["bigpool"]["rows"]),  # fmt: skip
        "scan": (scan["pool_pages"], scan["rejected_pages"],
                 sorted((r["tag"], r["pool"], r["allocated"], r["allocated_bytes"], r["free"],
                         r["free_bytes"]) for r in scan["tags"]),
                 truth_blocks(t)),
    }  # fmt: skip


def got_pool(dump: poolscope.Dump) -> dict[str, Any]:
    """The same figures read from the dump (an error stands for the figure)."""

    def poolused():
        return poolused_rows(dump.poolused())

    def bigpool():
        return sorted((int(r["va"], 16), r["tag"], r["bytes"], r["pool"], r["free"])
                      for r in dump.big_pool())  # fmt: skip

    def scan():
        res = dump.scan_pool(blocks=True)
        s = res.summary
        assert res.blocks is not None
        return (s["pool_pages"], s["rejected_pages"],
                sorted((r["tag"], r["pool"], r["allocated"], r["allocated_bytes"], r["free"],
                        r["free_bytes"]) for r in s["tags"]),
                scanned_blocks(res.blocks))  # fmt: skip

    return {name: attempt(f) for name, f in
            (("poolused", poolused), ("bigpool", bigpool), ("scan", scan))}  # fmt: skip


def attempt(f):
    try:
        return f()
    except poolscope.PoolscopeError as e:
        return f"{type(e).__name__}: {e.reason}"


def want_verifier(tv: dict[str, Any]) -> dict[str, Any]:
    return {
        "level": tv["level"],
        "stats": tv["stats"],
        "drivers": [tuple(d[f] for f in DRIVER_FIELDS) for d in tv["drivers"]],
        "tracked": [(e["driver"], e["va"], e["bytes"], e["tag"], e["caller"])
                    for e in tv["tracked"]],
        "log": [(e["va"], e["bytes"], e["thread"], e["stack"]) for e in tv["log"]["entries"]],
        "irp_log": [(e["irp"], e["irql"], e["kernel_apc_disable"], e["special_apc_disable"],
                     e["stack"]) for e in tv["irp_log"]["entries"]],
    }  # fmt: skip


def got_verifier(dump: poolscope.Dump, tv: dict[str, Any]) -> Any:
    def read():
        v = dump.verifier()
        tr, log, irp = v.tracked, v.log, v.irp_log
        return {
            "level": v.level,
            "stats": {k: v.stats.get(k) for k in tv["stats"]},
            "drivers": [tuple(d[f] for f in DRIVER_FIELDS) for d in v.drivers],
            "tracked": [(tr.drivers[tr.driver[i]], tr.va[i], tr.bytes[i],
                         tr.tag[i].to_bytes(4, "little").decode("latin-1"), tr.caller[i])
                        for i in range(len(tr))],
            "log": [(log.va[i], log.bytes[i], log.thread[i], log.stack(i))
                    for i in range(len(log))] if log is not None else None,
            "irp_log": [(irp.irp[i], irp.irql[i], irp.kernel_apc_disable[i],
                         irp.special_apc_disable[i], irp.stack(i))
                        for i in range(len(irp))] if irp is not None else None,
        }  # fmt: skip

    return attempt(read)


def symbol_types(build: int) -> list[str]:
    """The ISF types that replace the profile's layouts on this build."""
    seg = ["_HEAP_VS_SUBSEGMENT", "_HEAP_VS_CHUNK_HEADER", "_HEAP_LFH_SUBSEGMENT",
           "_RTLP_HP_HEAP_GLOBALS"] if build >= 19041 else []  # fmt: skip
    return ["_POOL_TRACKER_TABLE", "_POOL_TRACKER_BIG_PAGES", *seg]


# ------------------------------------------------------------------ tests
@pytest.fixture(scope="module", params=BUILDS)
def build(request, forged, tmp_path_factory):
    """(pool dump, its truth, its ISF; verifier dump, its truth, its ISF) of one build."""
    d = tmp_path_factory.mktemp(f"isf-{request.param}")
    out = []
    for scenario in (request.param, f"{request.param}-verifier"):
        path, truth = forged(scenario)
        t = truth.to_dict()
        isf = d / f"{scenario}.json"
        write_isf(isf, t)
        out += [path, t, isf]
    return tuple(out)


def test_the_isf_is_volatility3s_format(build):
    """What volatility3's schema 6.2.0 and its Windows loader require of the file: base types
    with kind/size/signed/endian, user types with kind/size/fields of {offset, type}, every
    type a field names defined, symbols as {address}."""
    _, t, isf, _, _, _ = build
    doc = json.loads(isf.read_text())
    assert doc["metadata"]["format"] == "6.2.0" and set(doc) == {
        "metadata", "base_types", "user_types", "enums", "symbols"}  # fmt: skip
    assert {"GUID", "age", "database", "machine_type"} == set(doc["metadata"]["windows"]["pdb"])
    for b in doc["base_types"].values():
        assert set(b) == {"size", "signed", "kind", "endian"}

    def check(ty: dict[str, Any]) -> None:
        kind = ty["kind"]
        if kind == "base":
            assert ty["name"] in doc["base_types"], ty
        elif kind in ("struct", "union"):
            assert doc["user_types"][ty["name"]]["kind"] == kind, ty
        elif kind == "bitfield":
            assert ty["bit_position"] + ty["bit_length"] <= 8 * doc["base_types"][
                ty["type"]["name"]]["size"]  # fmt: skip
            check(ty["type"])
        elif kind in ("pointer", "array"):
            check(ty["subtype"])
        else:
            raise AssertionError(ty)

    for name, u in doc["user_types"].items():
        assert set(u) == {"kind", "size", "fields"} and u["kind"] in ("struct", "union"), name
        for fname, f in u["fields"].items():
            assert set(f) == {"offset", "type"} and "." not in fname, (name, fname)
            check(f["type"])
    base = t["kernel_base"]
    assert {n: s["address"] + base for n, s in doc["symbols"].items()} == t["symbols"]


def test_symbols_replace_the_heuristics_and_the_search(build, tmp_path):
    """The built-in profile: without symbols the globals KDBG does not name come from the
    profile's heuristics (Win7) or the search of nt's data (Win10/11), the heap keys are
    recovered from the dump and the verifier's lists and logs are found by heuristics; with
    the ISF (.json or .json.xz) every one comes from the symbol table, and so do the structure
    layouts. The figures equal the truth either way."""
    path, t, _, vpath, vt, _ = build
    want, want_v = want_pool(t), want_verifier(vt["verifier"])
    without = poolscope.scan(path).to_dict()["sources"]
    assert any(v.startswith("heuristic") for v in without.values()), without
    with poolscope.open(vpath) as dump:
        v_without = dump.verifier().sources
    assert any(v.startswith("heuristic") for v in v_without.values()), v_without
    globals_ = ["PoolTrackTable", "PoolTrackTableSize", "PoolBigPageTable", "PoolBigPageTableSize"]
    if t["build"] >= 9200:
        globals_ += ["ExPoolTagTables", "PoolTrackTableExpansion", "PoolTrackTableExpansionSize"]
    for name in ("kernel.json", "kernel.json.xz"):
        isf, visf = tmp_path / name, tmp_path / f"verifier-{name}"
        write_isf(isf, t)
        write_isf(visf, vt)
        sources = poolscope.scan(path, symbols=isf).to_dict()["sources"]
        for key in [*globals_, *symbol_types(t["build"])]:
            assert sources[key] == f"symbols {name}", key
        if t["build"] >= 19041:
            assert sources["HeapKey"] == sources["LfhKey"] == (
                f"ExPoolState -> heap globals (symbols {name})")  # fmt: skip
        assert not [v for v in sources.values() if v.startswith("heuristic")], sources
        with poolscope.open(path, symbols=isf) as dump:
            assert got_pool(dump) == want
        with poolscope.open(vpath, symbols=visf) as dump:
            assert got_verifier(dump, vt["verifier"]) == want_v
            v_sources = dump.verifier().sources
        assert not [v for v in v_sources.values() if v.startswith("heuristic")], v_sources
        for key in ("VfSuspectDriversList", "ViTargetDriversAvl", "VfPoolTraces",
                    "_VF_TARGET_VERIFIED_DRIVER_DATA", "_VF_POOL_TRACE"):  # fmt: skip
            assert v_sources[key].startswith(f"symbols verifier-{name}"), key


def test_symbols_locate_what_the_profile_cannot(build, tmp_path):
    """A profile with no way to find the pool globals KDBG does not name (no heuristics, no
    search): the tagging database and the big-pool table are unavailable without symbols and
    equal the truth with them."""
    path, t, isf, _, _, _ = build
    profile = load_profile(t["build"])
    profile["pool"]["globals"] = {}
    profile["pool"]["globals_search_window"] = "0x0"
    with poolscope.open(path, profile=profile) as dump:
        doc = dump.analyze()
    assert "PoolBigPageTable" in doc["unavailable"].get("bigpool", "")
    assert "poolused" in doc["unavailable"] or t["build"] >= 9200  # per-CPU: PoolTrackTable only
    with poolscope.open(path, profile=profile, symbols=isf) as dump:
        doc = dump.analyze()
        assert not {"poolused", "bigpool", "pool_scan"} & set(doc["unavailable"]), doc
        assert got_pool(dump) == want_pool(t)


def shifted(profile: dict[str, Any], by: int = 8) -> dict[str, Any]:
    """The profile with every tracker, big-page and verifier field `by` bytes further into an
    entry `by` bytes longer, the segment-heap offsets, chunk header and heap keys moved and
    other pool-log and IRP-log depths: a wrong profile for every layout a symbol table has."""
    wrong = copy.deepcopy(profile)

    def shift(entry: dict[str, Any]) -> None:
        for name, f in entry.items():
            if name == "size":
                entry[name] = hex(hexint(f) + by)
            elif isinstance(f, dict):
                f["offset"] = hex(hexint(f["offset"]) + by)

    pool, ver = wrong["pool"], wrong.get("verifier")
    shift(pool["tracker"])
    shift(pool["big_page"])
    if "segment_heap" in pool:
        seg = pool["segment_heap"]
        for part, names in (("vs_subsegment", ["Size", "Signature"]),
                            ("lfh_subsegment", ["FreeCount", "BlockCount", "BlockOffsets",
                                                "BlockBitmap"]),
                            ("keys", ["HeapKey", "LfhKey"])):  # fmt: skip
            for n in names:
                seg[part][n] = hex(hexint(seg[part][n]) + by)
        seg["vs_chunk_header"]["size"] = hex(hexint(seg["vs_chunk_header"]["size"]) + 0x10)
        seg["vs_chunk_header"]["UnsafePrevSize"]["shift"] = 0
    if ver:
        for section in VERIFIER_TYPES:
            shift(ver[section])
        for k in ("pool_trace_frames", "irp_trace_frames"):
            ver["constants"][k] = hex(hexint(ver["constants"][k]) - 1)
    return wrong


def test_symbol_layouts_fix_a_wrong_profile(build, tmp_path):
    """A user profile whose tracker, big-page, segment-heap and verifier layouts are all wrong:
    its figures are wrong (or unavailable); with the ISF every layout is the symbol table's
    (sources say so) and every figure equals the truth exactly."""
    path, t, isf, vpath, vt, visf = build
    user = tmp_path / "wrong.json"
    user.write_text(json.dumps(shifted(load_profile(t["build"]))))
    want, want_v = want_pool(t), want_verifier(vt["verifier"])

    with poolscope.open(path, profile=user) as dump:
        bad = got_pool(dump)
    with poolscope.open(vpath, profile=user) as dump:
        bad_v = got_verifier(dump, vt["verifier"])
    wrong_figures = ["poolused", "bigpool"] + (["scan"] if t["build"] >= 19041 else [])
    for name in wrong_figures:
        assert bad[name] != want[name], name
    assert bad_v != want_v

    with poolscope.open(path, profile=user, symbols=isf) as dump:
        assert got_pool(dump) == want
    sources = poolscope.scan(path, profile=user, symbols=isf).to_dict()["sources"]
    for ty in symbol_types(t["build"]):
        assert sources[ty] == f"symbols {isf.name}", ty
    with poolscope.open(vpath, profile=user, symbols=visf) as dump:
        assert got_verifier(dump, vt["verifier"]) == want_v
        v_sources = dump.verifier().sources
    for ty in VERIFIER_TYPES.values():
        assert v_sources[ty] == f"symbols {visf.name}", ty
