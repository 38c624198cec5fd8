"""Pool analyses on forge dumps: every figure equals the forge's ground truth."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict

import pytest

import poolscope
from dump_util import (
    POOL_COUNTERS,
    by_tag,
    open_dump,
    patch_va,
    poolused_rows,
    scanned_blocks,
    summed,
    truth_blocks,
)
from poolscope.forge import load_profile


def expected_poolused(truth):
    """!poolused rows from the truth: summed per tag, rows with no bytes dropped."""
    acc = defaultdict(lambda: dict.fromkeys(POOL_COUNTERS, 0))
    for r in truth["pool"]["tracker"]["rows"]:
        for c in POOL_COUNTERS:
            acc[r["tag"]][c] += r[c]
    return {t: v for t, v in acc.items() if v["nonpaged_bytes"] or v["paged_bytes"]}


BUILDS = ["win7sp1", "win10-19045", "win11-22631", "win11-26100"]
"""Every pool test runs on Windows 7 SP1 (legacy pool), 10 22H2, 11 23H2 and 11 24H2 (segment
heap, written as the 22631 kernel writes it)."""


@pytest.fixture(scope="module", params=BUILDS)
def win7(forged, request):
    """The background-pool scenario of each build (named for the first one)."""
    path, truth = forged(request.param)
    return path, truth.to_dict()


@pytest.fixture(scope="module", params=[f"{b}-leak" for b in BUILDS])
def leak(forged, request):
    """The blog's leak (tag Leak, myfault.sys) on each build."""
    path, truth = forged(request.param)
    return path, truth.to_dict()


PER_CPU = ["win10-19045", "win11-22631", "win11-26100"]
"""Builds whose tagging database is PoolTrackTable + ExPoolTagTables + the expansion table."""
TRACKER_CASES = [
    ("win7sp1", None),
    ("win7sp1-leak", None),
    ("win7sp1", "isf"),
    *[(sc, symbols) for sc in PER_CPU for symbols in (None, "isf")],
]
"""(scenario, symbols): without symbols the per-CPU builds' globals come from the search of
nt data; with an ISF (written by the test from the forge's symbols) from the symbol table."""


@pytest.mark.parametrize("scenario,symbols", TRACKER_CASES)
def test_poolused_equals_tracker_truth(forged, scenario, symbols, tmp_path):
    path, truth = forged(scenario)
    t = truth.to_dict()
    want = expected_poolused(t)
    with open_dump(path, t, symbols, tmp_path) as dump:
        rows = dump.poolused()
        by_paged = dump.poolused(sort="paged", top=3)
    assert poolused_rows(rows) == want
    for r in rows:
        assert r["nonpaged_in_use"] == r["nonpaged_allocs"] - r["nonpaged_frees"]
    keys = [(r["nonpaged_bytes"], r["paged_bytes"]) for r in rows]
    assert keys == sorted(keys, reverse=True)
    assert len(by_paged) == 3
    assert [r["paged_bytes"] for r in by_paged] == sorted(
        (v["paged_bytes"] for v in want.values()), reverse=True
    )[:3]


@pytest.mark.parametrize("scenario,symbols", TRACKER_CASES)
def test_tagging_database_sources_name_every_table(forged, scenario, symbols, tmp_path):
    path, truth = forged(scenario)
    t = truth.to_dict()
    tr = t["pool"]["tracker"]
    with open_dump(path, t, symbols, tmp_path) as dump:
        doc = dump.analyze()
    assert "poolused" not in doc["unavailable"] and "bigpool" not in doc["unavailable"]
    src = doc["sources"]
    assert src["PoolTrackTable"] == ("symbols kernel.json" if symbols else "KDBG")
    if scenario not in PER_CPU:
        assert tr["tag_tables"] is None and [x["kind"] for x in tr["tables"]] == ["global"]
        assert "tag_tables" not in src and "ExPoolTagTables" not in src
        return
    names = ("PoolTrackTableSize", "ExPoolTagTables", "PoolTrackTableExpansion",
             "PoolTrackTableExpansionSize", "PoolBigPageTable", "PoolBigPageTableSize")  # fmt: skip
    for name in names:
        if symbols:
            assert src[name] == "symbols kernel.json", name
        else:
            assert src[name].startswith("heuristic: nt data within 0x10000 bytes"), name
    # every table summed, each once: PoolTrackTable is ExPoolTagTables[0]
    kinds = [x["kind"] for x in tr["tables"]]
    assert kinds == ["global"] + ["per_cpu"] * (t["header"]["NumberProcessors"] - 1) + ["expansion"]
    assert tr["tag_tables"]["slots"][0] == tr["va"]
    desc = src["tag_tables"]
    assert desc.startswith(f"sum modulo 2^64 of {len(kinds)} distinct tables")
    assert f"PoolTrackTable 0x{tr['va']:x} (= ExPoolTagTables[0], counted once)" in desc
    for x in tr["tables"]:
        assert f"0x{x['va']:x}" in desc
    # the truth's summed rows are the per-table rows summed
    per_table = [r for x in tr["tables"] for r in x["rows"]]
    assert summed(per_table) == expected_poolused(t)


@pytest.mark.parametrize(
    "scenario,seed,processors",
    [("win10-19045", 11, 1), ("win11-26100", 23, 8), ("win11-26100", 37, 3)],
)
def test_symbol_free_search_across_layouts(forged, scenario, seed, processors):
    """The forge places the pool variables in a seeded order with seeded gaps: the search
    finds them wherever they are, for any processor count."""
    path, truth = forged(scenario, seed=seed, processors=processors)
    t = truth.to_dict()
    with poolscope.open(path) as dump:
        assert poolused_rows(dump.poolused()) == expected_poolused(t)
        assert len(dump.big_pool()) == len(t["pool"]["bigpool"]["rows"])
        src = dump.analyze()["sources"]
    want = f"{processors + 1} distinct table{'s' if processors else ''}"
    assert src["tag_tables"].startswith(f"sum modulo 2^64 of {want}")
    assert src["ExPoolTagTables"].startswith("heuristic: ")


@pytest.mark.parametrize("scenario", PER_CPU)
def test_wrapped_per_cpu_bytes_sum_right(forged, scenario):
    """A free on another CPU than the allocation drives that CPU's Bytes below zero: the
    table stores it modulo 2^64, and the sum over the tables is the tag's true figure."""
    path, truth = forged(scenario)
    t = truth.to_dict()
    tr = t["pool"]["tracker"]
    negative = [
        (x, r) for x in tr["tables"] for r in x["rows"] if r["nonpaged_bytes"] < 0
    ]  # fmt: skip
    assert negative
    x, r = negative[0]
    entry = load_profile(t["build"])["pool"]["tracker"]
    at = x["va"] + r["slot"] * int(entry["size"], 16) + int(entry["NonPagedBytes"]["offset"], 16)
    with poolscope.open(path) as dump:
        raw = dump.read_virtual(at, 8)
        assert int.from_bytes(raw, "little") == r["nonpaged_bytes"] + (1 << 64)
        rows = poolused_rows(dump.poolused())
    total = sum(
        q["nonpaged_bytes"] for y in tr["tables"] for q in y["rows"] if q["tag"] == r["tag"]
    )
    assert 0 <= total == rows[r["tag"]]["nonpaged_bytes"] < 1 << 63
    assert rows == expected_poolused(t)


@pytest.mark.parametrize("symbols", [None, "isf"])
def test_a_table_listed_twice_is_counted_once(forged, tmp_path, symbols):
    src, truth = forged("win10-19045")
    t = truth.to_dict()
    tr = t["pool"]["tracker"]
    slots = tr["tag_tables"]["slots"]
    assert len(slots) == 4 and len(set(slots)) == 4
    path = tmp_path / "twice.dmp"
    path.write_bytes(src.read_bytes())
    with poolscope.open(path) as dump:  # ExPoolTagTables[2] := ExPoolTagTables[1]
        patch_va(path, dump, tr["tag_tables"]["va"] + 16, slots[1].to_bytes(8, "little"), truth)
    kept = [x for x in tr["tables"] if x["va"] != slots[2]]
    want = summed([r for x in kept for r in x["rows"]])
    with open_dump(path, t, symbols, tmp_path) as dump:
        got = poolused_rows(dump.poolused())
        desc = dump.analyze()["sources"]["tag_tables"]
    assert got == want != expected_poolused(t)
    assert desc.startswith("sum modulo 2^64 of 4 distinct tables")
    assert f"ExPoolTagTables[1,2] 0x{slots[1]:x}" in desc and f"0x{slots[2]:x}" not in desc


def test_no_expansion_table_and_missing_per_cpu_tables(forged, tmp_path):
    """PoolTrackTableExpansion NULL: nothing more is summed. ExPoolTagTables not to be found
    (no symbols, the array's first slot zeroed): no figures rather than one CPU's share."""
    src, truth = forged("win10-19045")
    t = truth.to_dict()
    tr = t["pool"]["tracker"]
    path = tmp_path / "noexp.dmp"
    path.write_bytes(src.read_bytes())
    with poolscope.open(path) as dump:
        patch_va(path, dump, t["symbols"]["PoolTrackTableExpansion"], bytes(8), truth)
    kept = [x for x in tr["tables"] if x["kind"] != "expansion"]
    with open_dump(path, t, "isf", tmp_path) as dump:
        assert poolused_rows(dump.poolused()) == summed([r for x in kept for r in x["rows"]])
    with poolscope.open(path) as dump:
        assert poolused_rows(dump.poolused()) == summed([r for x in kept for r in x["rows"]])
        doc = dump.analyze()
    assert doc["sources"]["PoolTrackTableExpansion"].startswith("not found")
    with poolscope.open(path) as dump:
        patch_va(path, dump, tr["tag_tables"]["va"], bytes(8), truth)
    with poolscope.open(path) as dump:
        doc = dump.analyze()
        with pytest.raises(poolscope.PoolscopeError, match="ExPoolTagTables"):
            dump.poolused()
    assert "ExPoolTagTables" in doc["unavailable"]["poolused"] and doc["poolused"] == []


def test_scan_pool_blocks_and_summaries_equal_truth(win7):
    path, t = win7
    with poolscope.open(path) as dump:
        res = dump.scan_pool(blocks=True)
    s = res.summary
    assert s["pool_pages"] == t["pool"]["scan"]["pool_pages"]
    assert s["rejected_pages"] == t["pool"]["scan"]["rejected_pages"]
    assert s["layouts"] == [t["pool"]["layout"]]
    assert by_tag(s["tags"]) == by_tag(t["pool"]["scan"]["tags"])

    assert res.blocks is not None
    assert scanned_blocks(res.blocks) == truth_blocks(t)


def test_scan_pool_filters_by_tag_and_finds_no_phantom_tags(win7):
    path, t = win7
    truth_tags = {(r["tag"], r["pool"]) for r in t["pool"]["scan"]["tags"]}
    with poolscope.open(path) as dump:
        res = dump.scan_pool(tags=["Thre"], blocks=True)
        every = dump.scan_pool()
    assert {(r["tag"], r["pool"]) for r in every.summary["tags"]} == truth_tags
    # the summaries are filtered like the blocks; the page counts are the whole scan's
    assert {(r["tag"], r["pool"]) for r in res.summary["tags"]} == {
        (tag, pool) for tag, pool in truth_tags if tag == "Thre"
    }
    assert res.summary["tags_filter"] == ["Thre"]
    assert res.summary["pages_scanned"] == every.summary["pages_scanned"]
    assert res.blocks is not None and len(res.blocks) > 0
    assert {b["tag"] for b in res.blocks.rows()} == {"Thre"}
    assert len(res.blocks) == sum(1 for b in t["pool"]["blocks"] if b["tag"] == "Thre")


@pytest.mark.parametrize("scenario,symbols", TRACKER_CASES)
def test_big_pool_equals_truth(forged, scenario, symbols, tmp_path):
    path, truth = forged(scenario)
    t = truth.to_dict()
    with open_dump(path, t, symbols, tmp_path) as dump:
        rows = dump.big_pool()
    want = [dict(r, va=f"0x{r['va']:x}") for r in t["pool"]["bigpool"]["rows"]]
    key = lambda r: (int(r["va"], 16), r["tag"])  # noqa: E731
    assert sorted(rows, key=key) == sorted(want, key=key)
    assert any(r["free"] for r in rows) and any(not r["free"] for r in rows)


def test_tag_owners_equal_truth(win7):
    path, t = win7
    with poolscope.open(path) as dump:
        for tag, owners in t["pool"]["owners"].items():
            got = dump.tag_owners(tag)
            assert [(o["module"], [int(x, 16) for x in o["offsets"]]) for o in got] == [
                (o["module"], o["offsets"]) for o in owners
            ], tag


def test_memory_summary_equals_truth(leak):
    path, t = leak
    m = t["pool"]["memory"]
    with poolscope.open(path) as dump:
        vm = dump.memory_summary()
    assert vm["nonpaged_pool_pages"] == m["MmAllocatedNonPagedPool"]
    assert vm["nonpaged_pool_max_pages"] == m["MmMaximumNonPagedPoolInBytes"] // 4096
    assert vm["paged_pool_pages"] == m["MmPagedPoolCommit"]
    assert vm["commit_pages"] == m["MmTotalCommittedPages"]
    assert vm["commit_limit_pages"] == m["MmTotalCommitLimit"]
    assert vm["physical_pages"] == m["MmNumberOfPhysicalPages"]
    assert vm["excessive_nonpaged"] is True
    assert (vm["nonpaged_pool_pages"], vm["nonpaged_pool_max_pages"]) == (152178, 152651)


def test_leak_scenario_findings_name_tag_driver_and_bytes(leak):
    path, _ = leak
    rep = poolscope.scan(path)
    kinds = {f.kind: f for f in rep.findings}
    assert "excessive_nonpaged_pool" in kinds
    dom = [f for f in rep.findings if f.kind == "dominant_tag"]
    assert dom and dom[0].evidence["tag"] == "Leak"
    assert dom[0].evidence["bytes"] == 615_424_000
    assert dom[0].evidence["allocations"] == 601
    owner = kinds["tag_owner"]
    assert owner.evidence["tag"] == "Leak"
    assert [m["module"] for m in owner.evidence["modules"]] == ["myfault.sys"]
    assert len(owner.evidence["modules"][0]["offsets"]) == 2
    assert "myfault.sys" in owner.summary
    big = kinds["bigpool_dominates_tag"]
    assert big.evidence["entries"] == 601 and big.evidence["bytes"] == 615_424_000
    assert "tracker_scan_disagreement" not in kinds
    top = rep.poolused[0]
    assert top["tag"] == "Leak" and top["nonpaged_bytes"] == 615_424_000
    assert top["nonpaged_in_use"] == 601
    assert top["description"].startswith("myfault.sys")


def test_consistent_dump_has_no_disagreement_and_corrupt_pages_are_counted(win7):
    path, t = win7
    rep = poolscope.scan(path)
    kinds = [f.kind for f in rep.findings]
    assert "tracker_scan_disagreement" not in kinds
    assert "pool_layout_not_recognised" not in kinds
    assert rep.pool_scan is not None
    assert rep.pool_scan["rejected_pages"] == t["pool"]["scan"]["rejected_pages"] > 0


def test_scan_json_has_the_stable_keys(leak):
    path, t = leak
    out = subprocess.run(
        [sys.executable, "-m", "poolscope.cli", "scan", str(path), "--json"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    doc = json.loads(out)
    for k in (
        "dump",
        "memory",
        "poolused",
        "pool_scan",
        "bigpool",
        "tag_owners",
        "findings",
        "sources",
    ):
        assert k in doc
    assert set(doc["poolused"][0]) >= {
        "tag",
        "nonpaged_allocs",
        "nonpaged_frees",
        "nonpaged_bytes",
        "paged_allocs",
        "paged_frees",
        "paged_bytes",
        "description",
    }
    assert set(doc["pool_scan"]) >= {"pages_scanned", "pool_pages", "layouts", "tags"}
    assert set(doc["bigpool"][0]) == {"va", "tag", "bytes", "pool", "free"}
    assert doc["bigpool"][0]["va"].startswith("0x")
    assert doc["tag_owners"]["Leak"][0]["module"] == "myfault.sys"
    assert set(doc["findings"][0]) == {"kind", "severity", "summary", "evidence"}
    assert doc["sources"]["PoolTrackTable"] == "KDBG"
    assert doc["sources"]["PoolBigPageTable"].startswith("heuristic")
    assert doc["dump"]["build"] == t["build"]


def test_poolfind_cli_lists_the_leak(leak):
    path, _ = leak
    out = subprocess.run(
        [sys.executable, "-m", "poolscope.cli", "poolfind", str(path), "Leak", "--json"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    doc = json.loads(out)
    live = [b for b in doc["bigpool"] if not b["free"]]
    assert len(live) == 601 and all(b["bytes"] == 1_024_000 for b in live)


def test_pooltag_file_overrides_descriptions(leak, tmp_path):
    path, _ = leak
    f = tmp_path / "pooltag.txt"
    f.write_text(
        "rem comment\n// another\nLeak - mydriver.sys - my own leak\nAfd? - afd.sys - AFD\n"
    )
    rep = poolscope.scan(path, pooltag=f)
    assert rep.poolused[0]["description"] == "mydriver.sys - my own leak"
    from poolscope.pooltag import TagTable

    table = TagTable.load(f)
    assert table.describe("AfdB") == "afd.sys - AFD"
    assert table.describe("Zzzz").startswith("UNKNOWN pooltag 'Zzzz'")
