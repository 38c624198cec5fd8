"""Windows Vista SP2 (build 6002, the vista-x64 profile): KDBG, modules and pool, and Driver
Verifier on MiSuspectDriverList (MI_VERIFIER_DRIVER_ENTRY, spec verifier.md 4.1) equal the
forge's ground truth."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import poolscope
from dump_util import DRIVER_COUNTERS, POOL_COUNTERS
from isf_util import isf
from poolscope.forge import load_profile


def num(v) -> int:
    return int(v, 16) if isinstance(v, str) else v


@pytest.fixture(scope="module")
def vista(forged):
    path, truth = forged("vista-sp2")
    return path, truth.to_dict()


@pytest.fixture(scope="module")
def verified(forged, tmp_path_factory):
    path, truth = forged("vista-sp2-verifier")
    t = truth.to_dict()
    sym = tmp_path_factory.mktemp("isf-vista") / "kernel.json"
    isf(sym, t)
    with poolscope.open(path, symbols=sym) as dump:
        doc = json.loads(dump.verifier_json(None, None))
    return path, t, sym, doc


def test_profile_is_vista_with_mi_list():
    p = load_profile(6002)
    assert p["name"] == "vista-x64"
    assert p["kdbg"]["size"] == "0x328"
    assert p["verifier"]["driver_list"] == "mi_list"
    assert p["verifier"]["mi_verifier_driver_entry"]["size"] == "0xA0"
    assert load_profile(7601)["verifier"]["driver_list"] == "suspect_list+avl"


def test_kdbg_modules_and_poolused_equal_truth(vista):
    path, t = vista
    assert t["kdbg"]["size"] == 0x328
    with poolscope.open(path) as dump:
        assert dump.header.build == t["build"] == 6002
        k = dump.kdbg
        assert k is not None and k.va == t["kdbg"]["va"] and k.size == 0x328
        assert dict(k.fields) == t["kdbg"]["fields"]
        numeric = {n: v for n, v in t["kdbg"]["values"].items() if isinstance(v, int)}
        assert dict(k.values) == numeric
        assert k.nt_build_lab == t["kdbg"]["values"]["NtBuildLab"]
        assert k.nt_build_lab.startswith("6002.")
        mods = [(m.name, m.path, m.base, m.size) for m in dump.modules()]
        assert mods == [(m["name"], m["path"], m["base"], m["size"]) for m in t["modules"]]
        rows = dump.poolused()
    want: dict[str, dict[str, int]] = {}
    for r in t["pool"]["tracker"]["rows"]:
        acc = want.setdefault(r["tag"], dict.fromkeys(POOL_COUNTERS, 0))
        for c in POOL_COUNTERS:
            acc[c] += r[c]
    want = {tag: v for tag, v in want.items() if v["nonpaged_bytes"] or v["paged_bytes"]}
    assert {r["tag"]: {c: r[c] for c in POOL_COUNTERS} for r in rows} == want


def test_cli_info_and_scan_work(vista):
    path, t = vista
    run = [sys.executable, "-m", "poolscope.cli"]
    info = json.loads(
        subprocess.run(
            [*run, "info", str(path), "--json"], check=True, capture_output=True, text=True
        ).stdout
    )
    assert info["build"] == 6002
    assert info["modules"] == len(t["modules"])
    assert info["kernel_base"] == f"0x{t['kernel_base']:x}"
    assert info["nt_build_lab"] == t["kdbg"]["values"]["NtBuildLab"]
    doc = json.loads(
        subprocess.run(
            [*run, "scan", str(path), "--json"], check=True, capture_output=True, text=True
        ).stdout
    )
    assert doc["poolused"] and {"poolused", "pool_scan", "bigpool"} <= set(doc)


def test_verifier_figures_equal_truth(verified):
    _path, t, _sym, v = verified
    tv = t["verifier"]
    assert "MiSuspectDriverList" in t["symbols"]
    assert "VfSuspectDriversList" not in t["symbols"]
    assert v["level"] == tv["level"] and "Pool Tracking" in v["options"]
    assert v["stats"] == tv["stats"]
    assert [(d["name"], d["state"], d["loads"], d["unloads"]) for d in v["drivers"]] == [
        (d["name"], d["state"], d["loads"], d["unloads"]) for d in tv["drivers"]
    ]
    for got, want in zip(v["drivers"], tv["drivers"], strict=True):
        counters = {c: got[c] for c in DRIVER_COUNTERS}
        assert counters == {c: want[c] for c in DRIVER_COUNTERS}, want["name"]
        if want["state"] == "loaded":
            assert (num(got["base"]), got["size"]) == (want["base"], want["size"])
    assert [d["state"] for d in v["drivers"]].count("unloaded") == 1
    # Tracked rows in walk order: the tracker pages' VerifierEntry is the MI entry.
    assert len(v["tracked"]) == len(tv["tracked"]) > 0
    assert [
        (e["driver"], num(e["va"]), e["bytes"], e["tag"], num(e["caller"])) for e in v["tracked"]
    ] == [(e["driver"], e["va"], e["bytes"], e["tag"], e["caller"]) for e in tv["tracked"]]
    assert tv["tracker_pages"] > 3 and tv["free_entries"] > 0
    # The pool log, newest first, wrapped.
    assert tv["log"]["index"] > tv["log"]["length"]
    assert [
        (num(e["va"]), e["bytes"], num(e["thread"]), [num(f) for f in e["stack"]]) for e in v["log"]
    ] == [(e["va"], e["bytes"], e["thread"], e["stack"]) for e in tv["log"]["entries"]]
    assert [
        (s["driver"], num(s["caller"]), s["outstanding_bytes"], s["outstanding_allocs"])
        for s in v["sites"]
    ] == [
        (s["driver"], s["caller"], s["outstanding_bytes"], s["outstanding_allocs"])
        for s in tv["sites"]
    ]


def test_blog_finding_names_myfault_leak_bytes_and_site(verified):
    path, t, sym, _v = verified
    myfault = next(d for d in t["verifier"]["drivers"] if d["name"] == "myfault.sys")
    assert myfault["current_nonpaged_allocs"] == 10
    rows = [e for e in t["verifier"]["tracked"] if e["driver"] == "myfault.sys"]
    assert len(rows) == 10 and all(e["tag"] == "Leak" for e in rows)
    rep = poolscope.scan(path, symbols=sym)
    f = next(
        f
        for f in rep.findings
        if f.kind == "verifier_leak" and f.evidence["driver"] == "myfault.sys"
    )
    assert f.evidence["allocations"] == 10
    assert f.evidence["bytes"] == myfault["current_nonpaged_bytes"]
    assert "myfault.sys" in f.summary and "Leak" in f.summary
    assert f"{myfault['current_nonpaged_bytes']:,}" in f.summary
    assert "myfault+0x1634" in f.summary


def test_mi_list_without_symbols_from_pool_tag(verified):
    path, t, _sym, _v = verified
    with poolscope.open(path) as dump:
        v = json.loads(dump.verifier_json(None, None))
    assert [(d["name"], d["state"]) for d in v["drivers"]] == [
        (d["name"], d["state"]) for d in t["verifier"]["drivers"]
    ]
    assert len(v["tracked"]) == len(t["verifier"]["tracked"])
    assert v["sources"]["MiSuspectDriverList"].startswith("heuristic")
