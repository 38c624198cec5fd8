"""Pool analyses on forge dumps: every figure equals the forge's ground truth."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict

import pytest

import poolscope

COUNTERS = (
    "nonpaged_allocs",
    "nonpaged_frees",
    "nonpaged_bytes",
    "paged_allocs",
    "paged_frees",
    "paged_bytes",
)


def expected_poolused(truth):
    """!poolused rows from the truth: summed per tag, rows with no bytes dropped."""
    acc = defaultdict(lambda: dict.fromkeys(COUNTERS, 0))
    for r in truth["pool"]["tracker"]["rows"]:
        for c in COUNTERS:
            acc[r["tag"]][c] += r[c]
    return {t: v for t, v in acc.items() if v["nonpaged_bytes"] or v["paged_bytes"]}


@pytest.fixture(scope="module")
def win7(forged):
    path, truth = forged("win7sp1")
    return path, truth.to_dict()


@pytest.fixture(scope="module")
def leak(forged):
    path, truth = forged("win7sp1-leak")
    return path, truth.to_dict()


@pytest.mark.parametrize("scenario", ["win7sp1", "win7sp1-leak"])
def test_poolused_equals_tracker_truth(forged, scenario):
    path, truth = forged(scenario)
    t = truth.to_dict()
    want = expected_poolused(t)
    with poolscope.open(path) as dump:
        rows = dump.poolused()
    got = {r["tag"]: {c: r[c] for c in COUNTERS} for r in rows}
    assert got == want
    for r in rows:
        assert r["nonpaged_in_use"] == r["nonpaged_allocs"] - r["nonpaged_frees"]
    keys = [(r["nonpaged_bytes"], r["paged_bytes"]) for r in rows]
    assert keys == sorted(keys, reverse=True)
    with poolscope.open(path) as dump:
        by_paged = dump.poolused(sort="paged", top=3)
    assert len(by_paged) == 3
    assert [r["paged_bytes"] for r in by_paged] == sorted(
        (v["paged_bytes"] for v in want.values()), reverse=True
    )[:3]


def test_scan_pool_blocks_and_summaries_equal_truth(win7):
    path, t = win7
    with poolscope.open(path) as dump:
        res = dump.scan_pool(blocks=True)
    s = res.summary
    assert s["pool_pages"] == t["pool"]["scan"]["pool_pages"]
    assert s["rejected_pages"] == t["pool"]["scan"]["rejected_pages"]
    assert s["layouts"] == ["legacy"]
    key = lambda r: (r["tag"], r["pool"])  # noqa: E731
    assert sorted(s["tags"], key=key) == sorted(t["pool"]["scan"]["tags"], key=key)

    assert res.blocks is not None
    got = sorted(
        (
            int(b["pa"], 16),
            int(b["va"], 16) if b["va"] else 0,
            b["tag"],
            b["size"],
            b["previous_size"],
            b["pool"],
            b["allocated"],
        )
        for b in res.blocks.rows()
    )
    want = sorted(
        (b["pa"], b["va"], b["tag"], b["size"], b["previous_size"], b["pool"], b["allocated"])
        for b in t["pool"]["blocks"]
    )
    assert got == want


def test_scan_pool_filters_by_tag_and_finds_no_phantom_tags(win7):
    path, t = win7
    truth_tags = {(r["tag"], r["pool"]) for r in t["pool"]["scan"]["tags"]}
    with poolscope.open(path) as dump:
        res = dump.scan_pool(tags=["Thre"], blocks=True)
    assert {(r["tag"], r["pool"]) for r in res.summary["tags"]} == truth_tags
    assert res.blocks is not None and len(res.blocks) > 0
    assert {b["tag"] for b in res.blocks.rows()} == {"Thre"}
    assert len(res.blocks) == sum(1 for b in t["pool"]["blocks"] if b["tag"] == "Thre")


def test_big_pool_equals_truth(win7):
    path, t = win7
    with poolscope.open(path) as dump:
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
    path, _ = leak
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
    assert doc["dump"]["build"] == 7601


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
