"""Driver Verifier data on forge dumps (Windows 7 SP1, Windows 10 19041, Windows 11 22631 and 26100
layouts: 13- and 50-frame pool logs, BaseName at 0x18 and 0x28, both AVL tree layouts, three
MmVerifierData layouts): every figure equals the forge's ground truth, read the way
`!verifier 3`, `!verifier 80` and `!verifier 100` read it."""

from __future__ import annotations

import ctypes
import json
import struct
import subprocess
import sys

import pytest

import poolscope
from dump_util import DRIVER_COUNTERS, patch_va
from isf_util import isf

SCENARIOS = [
    "win7sp1-verifier",
    "win10-19045-verifier",
    "win11-22631-verifier",
    "win11-26100-verifier",
]


@pytest.fixture(scope="module", params=SCENARIOS)
def verified(request, forged, tmp_path_factory):
    path, truth = forged(request.param)
    t = truth.to_dict()
    sym = tmp_path_factory.mktemp("isf") / "kernel.json"
    isf(sym, t)
    return path, t, sym


def hexs(v: int) -> str:
    return f"0x{v:x}"


def test_stats_drivers_tracked_and_logs_equal_truth(verified):
    path, t, sym = verified
    tv = t["verifier"]
    with poolscope.open(path, symbols=sym) as dump:
        v = dump.verifier()
    assert v.enabled and v.level == tv["level"]
    assert "Pool Tracking" in v.options
    for name, value in tv["stats"].items():
        assert v.stats[name] == value, name
    assert [(d["name"], d["state"], d["loads"], d["unloads"]) for d in v.drivers] == [
        (d["name"], d["state"], d["loads"], d["unloads"]) for d in tv["drivers"]
    ]
    for got, want in zip(v.drivers, tv["drivers"], strict=True):
        counters = {c: got[c] for c in DRIVER_COUNTERS}
        assert counters == {c: want[c] for c in DRIVER_COUNTERS}, want["name"]
    # Tracked allocations, in walk order, free entries skipped.
    assert len(v.tracked) == len(tv["tracked"]) > 0
    got = [
        (
            v.tracked.drivers[v.tracked.driver[i]],
            v.tracked.va[i],
            v.tracked.bytes[i],
            v.tracked.tag[i].to_bytes(4, "little").decode(),
            v.tracked.caller[i],
        )
        for i in range(len(v.tracked))
    ]
    want = [(e["driver"], e["va"], e["bytes"], e["tag"], e["caller"]) for e in tv["tracked"]]
    assert got == want
    # The pool log, newest first, wrapped, with full stacks.
    assert tv["log"]["index"] > tv["log"]["length"]
    assert [
        (v.log.va[i], v.log.bytes[i], v.log.thread[i], v.log.stack(i)) for i in range(len(v.log))
    ] == [(e["va"], e["bytes"], e["thread"], e["stack"]) for e in tv["log"]["entries"]]
    info, n, index = v.log.info, tv["log"]["length"], tv["log"]["index"]
    assert info["ordered"] and info["entries"] == len(v.log)
    assert (info["buffer"], info["index"], info["length"]) == (hexs(tv["log"]["va"]), index, n)
    # Wrapped: every slot written, read from index & (length - 1) backwards.
    assert list(v.log.slot) == [(index - k) & (n - 1) for k in range(n)]
    assert [
        (
            v.irp_log.irp[i],
            v.irp_log.irql[i],
            v.irp_log.kernel_apc_disable[i],
            v.irp_log.special_apc_disable[i],
            v.irp_log.stack(i),
        )
        for i in range(len(v.irp_log))
    ] == [
        (e["irp"], e["irql"], e["kernel_apc_disable"], e["special_apc_disable"], e["stack"])
        for e in tv["irp_log"]["entries"]
    ]
    assert [
        (s["driver"], int(s["caller"], 16), s["outstanding_bytes"], s["outstanding_allocs"])
        for s in v.sites
    ] == [
        (s["driver"], s["caller"], s["outstanding_bytes"], s["outstanding_allocs"])
        for s in tv["sites"]
    ]
    assert [[int(f, 16) for f in s["stack"]] for s in v.sites] == [s["stack"] for s in tv["sites"]]


def test_log_depth_follows_the_layout(verified):
    """13 stack slots per pool-log record before build 22000, 50 from it: the deep stacks of the
    Windows 11 demo keep all 29 frames, and every record's depth is its truth stack's length."""
    path, t, sym = verified
    with poolscope.open(path, symbols=sym) as dump:
        v = dump.verifier()
    win11 = t["build"] >= 22000
    assert v.log.frames == v.log.info["frames"] == (50 if win11 else 13)
    assert v.irp_log.frames == 13
    want = [len(e["stack"]) for e in t["verifier"]["log"]["entries"]]
    assert list(v.log.depth) == want
    assert max(want) == (29 if win11 else max(want)) and (max(want) > 13) == win11
    if win11:
        assert v.stats["AllocationFreed"] == t["verifier"]["stats"]["AllocationFreed"] > 0


def test_log_without_symbols_is_found_by_the_profiles_tag(verified):
    """No symbol table: the pool log is the big-pool allocation of the profile's tag (VfPT up to
    19045, ViIn from 22000), read in slot order; as a multiset it equals the truth's records."""
    path, t, _sym = verified
    with poolscope.open(path) as dump:
        v = dump.verifier()
    tag = "ViIn" if t["build"] >= 22000 else "VfPT"
    assert v.sources["VfPoolTraces"].startswith(f"heuristic: big-pool entry tagged {tag} ")
    assert not v.log.info["ordered"]

    def rows(entries):
        return sorted((e[0], e[1], e[2], tuple(e[3])) for e in entries)

    got = [
        (v.log.va[i], v.log.bytes[i], v.log.thread[i], v.log.stack(i)) for i in range(len(v.log))
    ]
    want = [(e["va"], e["bytes"], e["thread"], e["stack"]) for e in t["verifier"]["log"]["entries"]]
    assert rows(got) == rows(want)


def test_drivers_and_tracked_without_symbols_equal_truth(verified):
    """No symbol table: the verified drivers come from their VF_TARGET_VERIFIED_DRIVER_DATA
    pool blocks (VfVD, found by the pool scan: on 19041+ in the segment heap as the kernel
    writes it) and the tracked allocations from their tracker pages; both equal the truth,
    and `sources` says they rest on heuristics."""
    path, t, _sym = verified
    tv = t["verifier"]
    with poolscope.open(path) as dump:
        v = dump.verifier()
    assert v.sources["verifier_drivers"].startswith("heuristic: ")
    assert sorted((d["name"], d["state"], d["loads"], d["unloads"]) for d in v.drivers) == sorted(
        (d["name"], d["state"], d["loads"], d["unloads"]) for d in tv["drivers"]
    )
    got = sorted(
        (v.tracked.va[i], v.tracked.bytes[i], v.tracked.tag[i].to_bytes(4, "little").decode(),
         v.tracked.caller[i])
        for i in range(len(v.tracked))
    )  # fmt: skip
    want = sorted((e["va"], e["bytes"], e["tag"], e["caller"]) for e in tv["tracked"])
    assert got == want and len(got) > 0


def test_columns_rows_and_document_agree(verified):
    """One read: the summary has no bulk rows by default; `rows` asks for the first rows, which
    equal the full JSON document's and the columns' own rows (symbolized through the dump)."""
    path, _, sym = verified
    with poolscope.open(path, symbols=sym) as dump:
        v = dump.verifier()
        some = dump.verifier(rows=5)
        full = json.loads(dump.verifier_json())
        doc = v.document
        assert doc["tracked"] == doc["log"] == doc["irp_log"] == []
        assert (doc["tracked_total"], doc["log_total"], doc["irp_log_total"]) == (
            len(v.tracked),
            len(v.log),
            len(v.irp_log),
        )
        for k in full.keys() - {"tracked", "log", "irp_log"}:
            assert doc[k] == some.document[k] == full[k], k
        for key, table in (("tracked", v.tracked), ("log", v.log), ("irp_log", v.irp_log)):
            assert some.document[key] == full[key][:5] == table.rows(5), key
            assert table.rows() == full[key], key
        assert v.findings == full["findings"] and v.sources == full["sources"]
        assert v.unavailable == full["unavailable"] == {} and v.notes == full["notes"]
        # Stacks: `frames` per record, zero-padded past each record's depth.
        for log in (v.log, v.irp_log):
            assert log.frames == log.info["frames"] > 0
            assert len(log.stacks) == len(log) * log.frames == len(log.depth) * log.frames
            for i in range(len(log)):
                pad = log.stacks[i * log.frames + log.depth[i] : (i + 1) * log.frames]
                assert not any(pad) and 0 not in log.stack(i)
        rows = dump.verifier(rows=None).document
        assert {k: rows[k] for k in full} == full
        # The native columns: read-only typed buffers of little-endian numbers, lent uncopied.
        summary, cols = dump.verifier_raw()
    assert json.loads(summary) == doc
    formats = {
        "tracked": dict(driver="I", va="Q", bytes="Q", tag="I", caller="Q", pool="B"),
        "log": dict(va="Q", bytes="Q", thread="Q", slot="I", depth="B", stack="Q"),
        "irp_log": dict(
            irp="Q",
            thread="Q",
            irql="B",
            kernel_apc_disable="h",
            special_apc_disable="h",
            slot="I",
            depth="B",
            stack="Q",
        ),
    }
    for table, fmts in formats.items():
        assert set(cols[table]) - {"frames"} == set(fmts), table
        for name, fmt in fmts.items():
            col = cols[table][name]
            mv = memoryview(col)
            assert (mv.format, mv.readonly, mv.c_contiguous) == (fmt, True, True), name
            assert bytes(col) == struct.pack(f"<{len(mv)}{fmt}", *mv), name
            with pytest.raises(TypeError):
                (ctypes.c_char * 1).from_buffer(col)
    assert memoryview(cols["log"]["va"]).tolist() == v.log.va.tolist()
    assert cols["log"]["frames"] == v.log.frames


def test_blog_finding_names_driver_tag_bytes_and_site(verified):
    path, t, sym = verified
    myfault = next(d for d in t["verifier"]["drivers"] if d["name"] == "myfault.sys")
    rep = poolscope.scan(path, symbols=sym)
    leaks = [f for f in rep.findings if f.kind == "verifier_leak"]
    f = next(f for f in leaks if f.evidence["driver"] == "myfault.sys")
    assert f.evidence["allocations"] == myfault["current_nonpaged_allocs"] == 10
    assert f.evidence["bytes"] == myfault["current_nonpaged_bytes"]
    assert "myfault.sys" in f.summary and "Leak" in f.summary
    assert f"{myfault['current_nonpaged_bytes']:,}" in f.summary
    assert "myfault+0x1634" in f.summary
    apc = [f for f in rep.findings if f.kind == "apc_disabled_io"]
    assert apc and apc[0].evidence["module"]
    assert rep.verifier is not None and rep.verifier["enabled"]


def test_log_lookup_by_address_and_driver_filter(verified):
    path, t, sym = verified
    entry = t["verifier"]["log"]["entries"][3]
    inside = entry["va"] + max(entry["bytes"] - 1, 0) // 2
    want = [
        e
        for e in t["verifier"]["log"]["entries"]
        if e["va"] <= inside < e["va"] + max(e["bytes"], 1)
    ]
    with poolscope.open(path, symbols=sym) as dump:
        v = dump.verifier(address=inside)
        assert list(v.log.va) == [e["va"] for e in want]
        assert [v.log.stack(i) for i in range(len(v.log))] == [e["stack"] for e in want]
        only = dump.verifier(driver="myfault.sys")
    assert {d["name"] for d in only.drivers} == {"myfault.sys"}
    assert set(only.tracked.drivers[i] for i in only.tracked.driver) == {"myfault.sys"}


def test_not_enabled_is_reported_cleanly(forged):
    path, _ = forged("win7sp1")
    with poolscope.open(path) as dump:
        v = dump.verifier()
    assert not v.enabled and v.level == 0 and len(v.tracked) == 0


def test_cli_verifier_json(verified):
    path, t, sym = verified
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "poolscope.cli",
            "verifier",
            str(path),
            "--symbols",
            str(sym),
            "--driver",
            "myfault.sys",
            "--json",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    doc = json.loads(out)
    for k in ("level", "options", "stats", "drivers", "tracked", "log", "irp_log"):
        assert k in doc
    d = doc["drivers"][0]
    assert d["name"] == "myfault.sys"
    assert set(d) >= {"name", "state", *DRIVER_COUNTERS}
    e = doc["tracked"][0]
    assert set(e) >= {"driver", "va", "bytes", "tag", "caller", "caller_symbol"}
    assert e["va"].startswith("0x") and e["tag"] == "Leak"
    assert e["caller_symbol"] == "myfault+0x1634"


def test_corrupt_tracker_page_and_log_are_reported_and_skipped(forged, tmp_path):
    src, truth = forged("win7sp1-verifier")
    t = truth.to_dict()
    path = tmp_path / "corrupt.dmp"
    path.write_bytes(src.read_bytes())
    sym = tmp_path / "kernel.json"
    isf(sym, t)
    lay = t["verifier"]["layout"]
    pages = lay["tracker_page_vas"]["vrfdemo.sys"]
    assert len(pages) >= 2
    with poolscope.open(path) as dump:
        # The second tracker page of vrfdemo.sys loses its signature (page header +0x10) ...
        patch_va(path, dump, pages[1] + 0x10, b"\xde\xad\xbe\xef" * 2, truth)
        # ... and the pool log's length variable stops being a power of two.
        patch_va(
            path, dump, t["symbols"]["VfPoolTracesLength"], (0x3FF).to_bytes(4, "little"), truth
        )
    with poolscope.open(path, symbols=sym) as dump:
        v = dump.verifier()
        rep = poolscope.scan(path, symbols=sym)
    # Pages before the bad one are still read; the bad page and those after it are skipped.
    demo = [e for e in t["verifier"]["tracked"] if e["driver"] == "vrfdemo.sys"]
    got_demo = [
        i for i in range(len(v.tracked)) if v.tracked.drivers[v.tracked.driver[i]] == "vrfdemo.sys"
    ]
    assert 0 < len(got_demo) < len(demo)
    others = [e for e in t["verifier"]["tracked"] if e["driver"] != "vrfdemo.sys"]
    assert len(v.tracked) - len(got_demo) == len(others)
    text = " ".join(v.notes) + json.dumps(v.unavailable)
    assert "0x21321345" in text or "signature" in text.lower()
    assert "verifier_log" in v.unavailable or "verifier_log" in rep.unavailable
    assert v.log is None or len(v.log) == 0
    assert rep.verifier is not None and rep.verifier["enabled"]
