"""Windows 10 1909 (build 18363; 1903/1909 share the win10-18362-x64 profile) end to end on forge
dumps: the build selects its own profile, and the pool page scan (blocks and summaries),
!poolused with and without symbols, the big-pool table, the session pool and the Driver Verifier
state (17134-18362 layout) equal the forge's ground truth exactly. Before this profile the build
fell back to win10-17763-x64, whose legacy page-chain layout finds no pool page at all."""

from __future__ import annotations

import json

import pytest

import poolscope
from dump_util import (
    DRIVER_COUNTERS,
    by_tag,
    open_dump,
    poolused_rows,
    scanned_blocks,
    summed,
    truth_blocks,
)
from isf_util import isf
from poolscope.forge import load_profile

SCENARIO = "win10-18363"
VERIFIER = "win10-18363-verifier"
PROFILE = "win10-18362-x64"


@pytest.fixture(scope="module")
def w1909(forged):
    path, truth = forged(SCENARIO)
    return path, truth.to_dict()


def test_build_selects_the_1903_1909_profile(w1909):
    path, t = w1909
    assert t["build"] == 18363
    for build in (18362, 18363):
        assert load_profile(build)["name"] == PROFILE
    with poolscope.open(path) as dump:
        assert dump.header.build == 18363
        doc = dump.analyze()
    why = f"profile {PROFILE} (builds 18362..19040) matches build 18363"
    assert doc["sources"]["layout"] == why
    assert doc["unavailable"] == {}


def test_pool_page_scan_equals_truth(w1909):
    path, t = w1909
    assert t["pool"]["layout"] == "segment_heap"
    seg = t["pool"]["segment_heap"]
    assert seg["vs_subsegments"] >= 4 and seg["lfh_subsegments"] >= 20
    # as the kernel leaves them: VS subsegments partly committed, blocks on the delayed-free
    # list, LFH slots withheld
    assert seg["vs_committed"] < seg["vs_reserved"] and seg["vs_delayed_frees"] > 0
    assert seg["lfh_witheld"] > 0
    with poolscope.open(path) as dump:
        res = dump.scan_pool(blocks=True)
    s, scan = res.summary, t["pool"]["scan"]
    assert s["layouts"] == ["segment_heap"]
    assert (s["pool_pages"], s["rejected_pages"]) == (scan["pool_pages"], scan["rejected_pages"])
    assert by_tag(s["tags"]) == by_tag(scan["tags"])
    assert res.blocks is not None
    want = truth_blocks(t)
    assert scanned_blocks(res.blocks) == want
    assert any(not b[6] for b in want) and any(b[6] for b in want)


def test_heap_keys_are_recovered_or_come_from_symbols(w1909, tmp_path):
    path, t = w1909
    rep = poolscope.scan(path).to_dict()
    for key in ("HeapKey", "LfhKey"):
        assert rep["sources"][key].startswith("heuristic: recovered from the dump"), key
    sym = tmp_path / "kernel.json"
    isf(sym, t)
    with_syms = poolscope.scan(path, symbols=sym).to_dict()
    assert with_syms["sources"]["HeapKey"].startswith("ExPoolState -> heap globals (symbols")
    assert by_tag(with_syms["pool_scan"]["tags"]) == by_tag(t["pool"]["scan"]["tags"])


@pytest.mark.parametrize("symbols", [None, "isf"])
def test_poolused_equals_tracker_truth(w1909, tmp_path, symbols):
    path, t = w1909
    tr = t["pool"]["tracker"]
    want = summed(tr["rows"])
    with open_dump(path, t, symbols, tmp_path) as dump:
        rows = dump.poolused()
        doc = dump.analyze()
    assert poolused_rows(rows) == want
    for r in rows:
        assert r["nonpaged_in_use"] == r["nonpaged_allocs"] - r["nonpaged_frees"]
        assert r["paged_in_use"] == r["paged_allocs"] - r["paged_frees"]
    src = doc["sources"]
    how = "symbols kernel.json" if symbols else "heuristic: nt data within 0x10000 bytes"
    for name in ("PoolTrackTableSize", "ExPoolTagTables", "PoolTrackTableExpansion"):
        assert src[name].startswith(how), name
    kinds = [x["kind"] for x in tr["tables"]]
    assert kinds == ["global"] + ["per_cpu"] * (t["header"]["NumberProcessors"] - 1) + ["expansion"]
    assert src["tag_tables"].startswith(f"sum modulo 2^64 of {len(kinds)} distinct tables")


@pytest.mark.parametrize("symbols", [None, "isf"])
def test_big_pool_equals_truth(w1909, tmp_path, symbols):
    path, t = w1909
    with open_dump(path, t, symbols, tmp_path) as dump:
        rows = dump.big_pool()
        src = dump.analyze()["sources"]
    want = [dict(r, va=f"0x{r['va']:x}") for r in t["pool"]["bigpool"]["rows"]]
    key = lambda r: (int(r["va"], 16), r["tag"])  # noqa: E731
    assert sorted(rows, key=key) == sorted(want, key=key)
    assert any(r["free"] for r in rows) and any(not r["free"] for r in rows)
    how = "symbols kernel.json" if symbols else "heuristic: nt data within 0x10000 bytes"
    assert src["PoolBigPageTable"].startswith(how)


@pytest.mark.parametrize("symbols", [None, "isf"])
def test_session_pool_equals_truth(w1909, tmp_path, symbols):
    """The session table at _MM_SESSION_SPACE.PoolTags (+0x1000, 0x100 entries) and the
    session's expansion table, whose pointer and size 1903/1909 keep at +0x4E8/+0x4F0."""
    path, t = w1909
    st = t["pool"]["session_tracker"]
    assert (st["entries"], st["va"] - st["session_space"]) == (0x100, 0x1000)
    assert st["expansion"] is not None
    with open_dump(path, t, symbols, tmp_path) as dump:
        exp = dump.read_virtual(st["session_space"] + 0x4E8, 16)
        rows = dump.poolused(session=True)
        src = json.loads(dump.poolused_json("nonpaged", None, True))["sources"]
    assert int.from_bytes(exp[:8], "little") == st["expansion"]["va"]
    assert int.from_bytes(exp[8:], "little") == st["expansion"]["entries"]
    assert poolused_rows(rows) == summed(st["rows"])
    assert src["session PoolTrackTableExpansion"].startswith(f"{st['expansion']['va']:#x}")


def test_verifier_equals_truth(forged, tmp_path):
    """!verifier 3 / 80 / 100 on the 17134-18362 layout: VF_TARGET_VERIFIED_DRIVER_DATA of 0x120
    bytes with its counters from 0x60 (19041 moves them to 0x68)."""
    path, truth = forged(VERIFIER)
    t = truth.to_dict()
    tv = t["verifier"]
    sym = tmp_path / "kernel.json"
    isf(sym, t)
    with poolscope.open(path, symbols=sym) as dump:
        v = dump.verifier()
        data = tv["layout"]["verified_data"]["myfault.sys"]
        raw = dump.read_virtual(data + 0x60, 8)
    myfault = next(d for d in tv["drivers"] if d["name"] == "myfault.sys")
    assert (int.from_bytes(raw[:4], "little"), int.from_bytes(raw[4:], "little")) == (
        myfault["current_paged_allocs"],
        myfault["current_nonpaged_allocs"],
    )
    assert v.enabled and v.level == tv["level"]
    assert {k: v.stats[k] for k in tv["stats"]} == tv["stats"]
    assert [(d["name"], d["state"], d["loads"], d["unloads"]) for d in v.drivers] == [
        (d["name"], d["state"], d["loads"], d["unloads"]) for d in tv["drivers"]
    ]
    for got, want in zip(v.drivers, tv["drivers"], strict=True):
        assert {c: got[c] for c in DRIVER_COUNTERS} == {c: want[c] for c in DRIVER_COUNTERS}
    assert len(v.tracked) == len(tv["tracked"]) > 0
    assert [
        (
            v.tracked.drivers[v.tracked.driver[i]],
            v.tracked.va[i],
            v.tracked.bytes[i],
            v.tracked.tag[i].to_bytes(4, "little").decode(),
            v.tracked.caller[i],
        )
        for i in range(len(v.tracked))
    ] == [(e["driver"], e["va"], e["bytes"], e["tag"], e["caller"]) for e in tv["tracked"]]
    assert v.log.frames == 13 and v.log.info["ordered"]
    assert [
        (v.log.va[i], v.log.bytes[i], v.log.thread[i], v.log.stack(i)) for i in range(len(v.log))
    ] == [(e["va"], e["bytes"], e["thread"], e["stack"]) for e in tv["log"]["entries"]]
    assert [
        (v.irp_log.irp[i], v.irp_log.irql[i], v.irp_log.kernel_apc_disable[i],
         v.irp_log.special_apc_disable[i], v.irp_log.stack(i))
        for i in range(len(v.irp_log))
    ] == [
        (e["irp"], e["irql"], e["kernel_apc_disable"], e["special_apc_disable"], e["stack"])
        for e in tv["irp_log"]["entries"]
    ]  # fmt: skip
    assert [
        (s["driver"], int(s["caller"], 16), s["outstanding_bytes"], s["outstanding_allocs"])
        for s in v.sites
    ] == [
        (s["driver"], s["caller"], s["outstanding_bytes"], s["outstanding_allocs"])
        for s in tv["sites"]
    ]
    # Without symbols the pool log is the big-pool block tagged VfPT; the same records.
    with poolscope.open(path) as dump:
        bare = dump.verifier()
    assert bare.sources["VfPoolTraces"].startswith("heuristic: big-pool entry tagged VfPT ")
    assert sorted(
        (bare.log.va[i], bare.log.bytes[i], bare.log.thread[i], tuple(bare.log.stack(i)))
        for i in range(len(bare.log))
    ) == sorted((e["va"], e["bytes"], e["thread"], tuple(e["stack"])) for e in tv["log"]["entries"])


def test_the_17763_fallback_would_miss_the_pool(w1909, tmp_path):
    """Why 1903/1909 need their own profile: read with win10-17763-x64 (the family they fell back
    to), the page scan finds no pool page and the session expansion table is not found."""
    path, t = w1909
    user = tmp_path / "profile.json"
    user.write_text(json.dumps(load_profile(17763)))
    with poolscope.open(path, profile=user) as dump:
        s = dump.scan_pool().summary
        session = dump.poolused(session=True)
    assert s["layouts"] == ["legacy"] and s["pool_pages"] == 0 and s["tags"] == []
    assert t["pool"]["scan"]["pool_pages"] > 0
    assert poolused_rows(session) != summed(t["pool"]["session_tracker"]["rows"])
