"""The session pool's tagging database (``!poolused 8``): rows of the session table and of the
session's expansion table equal the forge's ground truth, with and without symbols, through
the API, the CLI (``poolused --session``) and the scan report (``poolused_session``); a table
that cannot be found or read is ``unavailable`` with the reason, never zeros."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

import poolscope
from dump_util import POOL_COUNTERS, copy_patched, open_dump, poolused_rows, summed
from poolscope.forge import load_profile
from poolscope.report import Report

SESSION_TAGS = {"Gla5", "Usqm", "Ustx"}
"""The background pool's session tags (win32k's: session paged Gla5 and Usqm, nonpaged Ustx)."""

BUILDS = ["win7sp1", "win10-18363", "win10-19045"]
"""Builds whose profile describes the session tagging database (1909's session space keeps the
expansion table at +0x4E8, 19041's at +0x3D0). 22621+ (win11-26100) has no
source for it: its profiles leave it out and the reader says so (see the last tests)."""
CASES = [(b, s) for b in BUILDS for s in (None, "isf")]
"""(scenario, symbols): without symbols the session variables come from the search of nt data
near PoolTrackTable, with an ISF (the forge's symbols) from the symbol table."""


def expected(t: dict[str, Any]) -> dict[str, dict[str, int]]:
    """!poolused 8 rows from the truth: every session table's rows summed per tag, rows with
    no bytes dropped."""
    return summed(t["pool"]["session_tracker"]["rows"])


@pytest.mark.parametrize("scenario,symbols", CASES)
def test_session_rows_equal_the_truth(forged, tmp_path, scenario, symbols):
    path, truth = forged(scenario)
    t = truth.to_dict()
    st = t["pool"]["session_tracker"]
    want = expected(t)
    assert set(want) == SESSION_TAGS
    with open_dump(path, t, symbols, tmp_path) as dump:
        rows = dump.poolused(session=True)
        doc = json.loads(dump.poolused_json("nonpaged", None, True))
        top = dump.poolused(sort="paged", top=1, session=True)
        global_tags = {r["tag"] for r in dump.poolused()}
    assert poolused_rows(rows) == want
    assert doc["rows"] == rows
    for r in rows:
        assert set(r) == {*POOL_COUNTERS, "tag", "nonpaged_in_use", "paged_in_use"}
        assert r["nonpaged_in_use"] == r["nonpaged_allocs"] - r["nonpaged_frees"]
        assert r["paged_in_use"] == r["paged_allocs"] - r["paged_frees"]
    keys = [(r["nonpaged_bytes"], r["paged_bytes"]) for r in rows]
    assert keys == sorted(keys, reverse=True)
    assert [r["tag"] for r in top] == [max(want, key=lambda k: want[k]["paged_bytes"])]
    assert not SESSION_TAGS & global_tags  # session pool is not in the global tables
    # where each figure came from
    src = doc["sources"]
    how = "symbols" if symbols else "heuristic"
    names = set(st["globals"]) - {"ExpSessionPoolTrackTableMask"}
    if st["expansion"] is None:
        names.discard("MmSessionSpace")  # no session expansion table to find it for
    for name in names:
        if name == "MmSessionSpace" and not symbols:
            assert src[name].startswith("inferred: the session table"), src[name]
        else:
            assert src[name].startswith(how), (name, src[name])
    assert f"{st['va']:#x}" in src["session_tag_tables"]
    exp = src["session PoolTrackTableExpansion"]
    if st["expansion"] is None:
        assert exp.startswith("none")
    else:
        assert exp.startswith(f"{st['expansion']['va']:#x}")
        assert f"{st['expansion']['va']:#x}" in src["session_tag_tables"]


@pytest.mark.parametrize("scenario", BUILDS)
def test_session_table_in_memory_is_hashed_as_the_kernel_does(forged, scenario):
    """The forge's table against the facts (profile pool.session): Size a power of two, slot =
    tracker hash & (Size - 1), linear probing that passes the last entry by; entries in the
    profile's tracker layout; the session variables hold the table, its size and the mask."""
    path, truth = forged(scenario)
    t = truth.to_dict()
    st = t["pool"]["session_tracker"]
    prof = load_profile(t["build"])["pool"]
    tr = prof["tracker"]
    esz = int(tr["size"], 16)
    n = st["entries"]
    assert n == int(prof["session"]["entries"], 16) and n & (n - 1) == 0
    with poolscope.open(path) as dump:
        raw = dump.read_virtual(st["va"], n * esz)
        sym = t["symbols"]

        def q(name: str) -> int:
            return int.from_bytes(dump.read_virtual(sym[name], 8), "little")

        assert q("ExpSessionPoolTrackTableSize") == n
        assert q("ExpSessionPoolTrackTableMask") == n - 1
        assert q("ExpSessionPoolTrackTable") == st["va"]
        assert q("MmSessionSpace") == st["session_space"]

    def field(row: int, name: str) -> int:
        f = tr[name]
        off = row * esz + int(f["offset"], 16)
        return int.from_bytes(raw[off : off + f["width"]], "little")

    keys = [field(i, "Key") for i in range(n)]
    assert keys[n - 1] == 0  # passed by
    rows = []
    for s, k in enumerate(keys):
        if not k:
            continue
        r = 40543 * k
        h = ((r & 0xFFFFFFFF) ^ (r >> 32)) & (n - 1)
        while h != s:  # every slot on the probe path is taken or the last one
            assert keys[h] or h == n - 1
            h = (h + 1) & (n - 1)
        rows.append({"tag": k.to_bytes(4, "little").decode(), "slot": s,
                     **{c: field(s, c.replace("nonpaged", "NonPaged").replace("paged", "Paged")
                                 .replace("_allocs", "Allocs").replace("_frees", "Frees")
                                 .replace("_bytes", "Bytes")) for c in POOL_COUNTERS}})  # fmt: skip
    assert rows == st["tables"][0]["rows"]


def test_cli_session_flag(forged):
    path, truth = forged("win10-19045")
    want = expected(truth.to_dict())

    def cli(*args: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "poolscope.cli", "poolused", str(path), *args],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        return out.stdout

    rows = json.loads(cli("--session", "--json"))
    assert poolused_rows(rows) == want
    assert all("description" in r for r in rows)
    assert not SESSION_TAGS & {r["tag"] for r in json.loads(cli("--json"))}
    text = cli("--session", "--sort", "paged")
    assert "Session pool" in text and "Usqm" in text and "TOTAL" in text
    assert text.index("Usqm") < text.index("Gla5")  # paged bytes 5952 > 4320


@pytest.mark.parametrize("scenario", ["win7sp1", "win10-19045"])
def test_scan_report_has_poolused_session(forged, scenario):
    path, truth = forged(scenario)
    want = expected(truth.to_dict())
    rep = poolscope.scan(path)
    d = rep.to_dict()
    assert "poolused_session" in d and "poolused_session" not in d["unavailable"]
    assert poolused_rows(d["poolused_session"]) == want
    assert all("description" in r for r in d["poolused_session"])
    assert not SESSION_TAGS & {r["tag"] for r in d["poolused"]}
    # an older report (without the key) still loads, with no session rows
    old = {k: v for k, v in json.loads(rep.to_json()).items() if k != "poolused_session"}
    assert Report.from_dict(old).poolused_session == []
    out = subprocess.run(
        [sys.executable, "-m", "poolscope.cli", "scan", str(path), "--json"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert poolused_rows(json.loads(out.stdout)["poolused_session"]) == want


@pytest.mark.parametrize("scenario", ["win7sp1", "win10-19045"])
@pytest.mark.parametrize("symbols", [None, "isf"])
def test_missing_table_is_unavailable_with_a_reason(forged, tmp_path, scenario, symbols):
    src, truth = forged(scenario)
    t = truth.to_dict()
    var = t["symbols"]["ExpSessionPoolTrackTable"]
    path = copy_patched(src, tmp_path, truth, [(var, bytes(8))])
    with open_dump(path, t, symbols, tmp_path) as dump:
        with pytest.raises(poolscope.PoolscopeError) as err:
            dump.poolused(session=True)
        doc = dump.analyze()
    why = doc["unavailable"]["poolused_session"]
    assert err.value.reason in why
    if symbols:  # the variable is found and holds no table
        assert "not a plausible session tracker table" in why
    else:  # no pointer near PoolTrackTable leads to a session table
        assert "ExpSessionPoolTrackTable" in why and "not found" in why
    assert doc["poolused_session"] == []
    assert doc["poolused"]  # the global database is unaffected


def test_unmapped_session_space_is_unavailable(forged, tmp_path):
    """A table address whose page the dump's address space does not map: the reason says
    that session space is mapped only for a session's processes."""
    src, truth = forged("win10-19045")
    t = truth.to_dict()
    st = t["pool"]["session_tracker"]
    var = t["symbols"]["ExpSessionPoolTrackTable"]
    away = st["va"] + 0x4000_0000
    path = copy_patched(src, tmp_path, truth, [(var, away.to_bytes(8, "little"))])
    with open_dump(path, t, "isf", tmp_path) as dump:
        with pytest.raises(poolscope.MemoryNotPresent, match="session space is mapped only"):
            dump.poolused(session=True)
        doc = dump.analyze()
    assert "session space is mapped only" in doc["unavailable"]["poolused_session"]


@pytest.mark.parametrize("scenario", ["vista-sp2", "win11-26100"])
def test_build_without_a_session_profile_is_unavailable(forged, scenario):
    path, _ = forged(scenario)
    with poolscope.open(path) as dump:
        with pytest.raises(poolscope.UnsupportedDumpError, match="pool.session"):
            dump.poolused(session=True)
        doc = dump.analyze()
    assert "pool.session" in doc["unavailable"]["poolused_session"]
    assert doc["poolused_session"] == []


@pytest.mark.parametrize("symbols", [None, "isf"])
def test_without_the_session_expansion_table(forged, tmp_path, symbols):
    """_MM_SESSION_SPACE.PoolTrackTableExpansion cleared: the session table's rows alone."""
    src, truth = forged("win7sp1")
    t = truth.to_dict()
    st = t["pool"]["session_tracker"]
    off = int(load_profile(7601)["pool"]["session"]["mm_session_space"]["PoolTrackTableExpansion"],
              16)  # fmt: skip
    path = copy_patched(src, tmp_path, truth, [(st["session_space"] + off, bytes(8))])
    kept = st["tables"][0]["rows"]
    assert len(kept) == len(st["rows"]) - 1
    with open_dump(path, t, symbols, tmp_path) as dump:
        rows = dump.poolused(session=True)
        src_doc = json.loads(dump.poolused_json("nonpaged", None, True))["sources"]
    assert poolused_rows(rows) == {r["tag"]: {c: r[c] for c in POOL_COUNTERS} for r in kept}
    assert src_doc["session PoolTrackTableExpansion"].startswith("none")


@pytest.mark.parametrize("symbols", [None, "isf"])
def test_win11_22000_keeps_the_table_in_session_space(forged, tmp_path, symbols):
    """Build 22000 (profile win11-22000-x64): the table is _MM_SESSION_SPACE.PoolTags, the
    session space nt!MmSessionSpace; without symbols both are found near PoolTrackTable."""
    path, truth = forged("win11-26100", build=22000, name="win11-22000")
    t = truth.to_dict()
    st = t["pool"]["session_tracker"]
    assert st["table"] == "session_space" and "ExpSessionPoolTrackTable" not in st["globals"]
    with open_dump(path, t, symbols, tmp_path) as dump:
        rows = dump.poolused(session=True)
        src = json.loads(dump.poolused_json("nonpaged", None, True))["sources"]
    assert poolused_rows(rows) == expected(t)
    how = "symbols" if symbols else "heuristic"
    assert src["MmSessionSpace"].startswith(how)
    assert src["ExpSessionPoolTrackTableSize"].startswith(how)
    assert src["_MM_SESSION_SPACE.PoolTags"].endswith(f"{st['session_space']:#x}")
