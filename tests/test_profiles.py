"""The built-in layout profiles: each parses (for the reader and for the forge), a build selects
its family or, failing that, the nearest older one and says so, and `poolscope profiles` lists
them all."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import pytest

from poolscope._native import builtin_profiles, profile_for_build
from poolscope.forge.layout import load_profile
from poolscope.forge.pool import PoolLayout
from poolscope.forge.verifier import VerifierLayout

NAMES = {
    "vista-x64",
    "win7sp1-x64",
    "win10-17763-x64",
    "win10-18362-x64",
    "win10-19041-x64",
    "win11-22000-x64",
    "win11-22621-x64",
    "win11-26100-x64",
}
NEAREST = "nearest older family"


def _profiles() -> list[dict]:
    return [json.loads(text) for _file, text in builtin_profiles()]


def _cli(*args: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "poolscope.cli", *args], check=True, capture_output=True, text=True
    ).stdout


def test_every_builtin_profile_parses():
    profiles = _profiles()
    assert {p["name"] for p in profiles} == NAMES
    for (file_name, _text), p in zip(builtin_profiles(), profiles, strict=True):
        assert file_name == f"{p['name']}.json"
        assert p["description"] and p["sources"], p["name"]
        # the reader picks it for its own first build, without the fallback note
        name, why = profile_for_build(p["builds"]["min"])
        assert name == p["name"] and NEAREST not in why, why
        # the forge reads the same sections
        PoolLayout.from_profile(p)
        v = VerifierLayout.from_profile(p)
        st = v.off("pool_trace", "StackTrace")
        assert st + 8 * v.const["pool_trace_frames"] <= v.size("pool_trace"), p["name"]
    ranges = sorted((p["builds"]["min"], p["builds"]["max"]) for p in profiles)
    assert all(a[1] < b[0] for a, b in itertools.pairwise(ranges)), ranges


@pytest.mark.parametrize(
    ("build", "name", "fallback"),
    [
        (7601, "win7sp1-x64", False),
        (17763, "win10-17763-x64", False),
        (18361, "win10-17763-x64", False),
        (18362, "win10-18362-x64", False),
        (18363, "win10-18362-x64", False),
        (19040, "win10-18362-x64", False),
        (19045, "win10-19041-x64", False),
        (22000, "win11-22000-x64", False),
        (22631, "win11-22621-x64", False),
        (26100, "win11-26100-x64", False),
        (30000, "win11-26100-x64", True),
    ],
)
def test_build_selects_profile(build, name, fallback):
    got, why = profile_for_build(build)
    assert got == name
    assert (NEAREST in why) == fallback, why
    assert load_profile(build)["name"] == name


def test_layout_facts_per_family():
    """A few facts each family exists for (shared/specs: pool-structures.md, verifier.md)."""
    rs5, w11, nkl = load_profile(17763), load_profile(22631), load_profile(26100)
    h19, vb = load_profile(18363), load_profile(19045)
    assert rs5["pool"]["layout"] == "legacy"
    assert (rs5["pool"]["tracker"]["size"], rs5["pool"]["big_page"]["size"]) == ("0x38", "0x18")
    # 1903/1909: 19041's segment heap and tracker sizes, 17763's verifier, their own session space
    assert h19["pool"]["layout"] == "segment_heap" and h19["pool"]["big_pool_threshold"] == "0xFE0"
    assert (h19["pool"]["tracker"]["size"], h19["pool"]["big_page"]["size"]) == ("0x38", "0x18")
    assert h19["pool"]["segment_heap"]["lfh_subsegment"]["va_shift"] == "low32"
    strip = lambda d: {n: x for n, x in d.items() if n not in ("note", "unsure")}  # noqa: E731
    for k in ("vs_subsegment", "vs_chunk_header", "lfh_subsegment", "keys"):
        assert strip(h19["pool"]["segment_heap"][k]) == strip(vb["pool"]["segment_heap"][k]), k
    assert h19["verifier"] == dict(rs5["verifier"], unsure=h19["verifier"]["unsure"])
    mm = h19["pool"]["session"]["mm_session_space"]
    assert (mm["PoolTags"], mm["PoolTrackTableExpansion"], h19["pool"]["session"]["entries"]) == (
        "0x1000",
        "0x4E8",
        "0x100",
    )
    for p in (w11, nkl):
        assert p["pool"]["layout"] == "segment_heap"
        assert (p["pool"]["tracker"]["size"], p["pool"]["big_page"]["size"]) == ("0x50", "0x20")
        assert p["pool"]["big_page"]["ProcessBilled"]["offset"] == "0x18"
        assert set(p["pool"]["segment_heap"]) == set(load_profile(19041)["pool"]["segment_heap"])
    assert w11["pool"]["segment_heap"]["lfh_subsegment"]["va_shift"] == "low32"
    assert nkl["pool"]["segment_heap"]["lfh_subsegment"]["va_shift"] == "full"
    builds = (7601, 17763, 18363, 19045, 22631, 26100)
    v = {b: VerifierLayout.from_profile(load_profile(b)) for b in builds}
    assert [v[b].const["pool_trace_frames"] for b in v] == [13] * 4 + [50] * 2
    assert [v[b].size("pool_trace") for b in v] == [0x80] * 4 + [0x1A8] * 2
    assert [v[b].off("suspect_driver_entry", "BaseName.Length") for b in v] == [0x18] * 5 + [0x28]
    assert [v[b].off("target_driver", "VerifiedData") for b in v] == [0x28] + [0x38] * 4 + [0x40]
    assert [v[b].size("avl_tree") for b in v] == [0x40] + [0x28] * 4 + [0x20]
    assert [v[b].off("mm_driver_verifier_data", "PagedBytes") for b in v] == [0x50] * 4 + [0x58] * 2
    assert [v[b].off("verified_driver_data", "CurrentPagedPoolAllocations") for b in v] == [
        0x50, 0x60, 0x60, 0x68, 0x70, 0x70
    ]  # fmt: skip
    sizes = [v[b].size("verified_driver_data") for b in v]
    assert sizes == [0x100, 0x120, 0x120, 0x130, 0x130, 0x120]
    assert [v[b].tags["pool_trace"][0] for b in v] == ["VfPT"] * 4 + ["ViIn"] * 2


def test_cli_profiles_json_lists_them_all():
    rows = json.loads(_cli("profiles", "--json"))
    by_name = {r["name"]: r for r in rows}
    assert set(by_name) == NAMES
    for p in _profiles():
        r = by_name[p["name"]]
        assert r["builds"] == [p["builds"]["min"], p["builds"]["max"]]
        assert r["description"] == p["description"] != ""
        assert r["file"] == f"{p['name']}.json"
    (chosen,) = json.loads(_cli("profiles", "--build", "30000", "--json"))
    assert chosen["name"] == "win11-26100-x64" and NEAREST in chosen["chosen"]
    text = _cli("profiles")
    assert all(name in text for name in NAMES)


def test_unknown_future_build_says_which_family_it_uses(forged):
    """A dump of a build newer than every family is read with the nearest older one, and the
    output says so (info --json notes, the scan's dump notes)."""
    path, truth = forged("win11-26100", build=30000)
    info = json.loads(_cli("info", str(path), "--json"))
    assert (info["build"], info["profile"]) == (30000, "win11-26100-x64")
    assert any(NEAREST in n and "win11-26100-x64" in n for n in info["notes"])
    assert info["modules"] == len(truth.to_dict()["modules"])
