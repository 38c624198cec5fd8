"""The segment-heap pool scan (builds 18362+) on forge dumps of 19045, 22631 and 26100: every
block and summary equals the ground truth, with the heap keys from symbols or recovered from
the dump, and pages that only look like pool add nothing."""

from __future__ import annotations

import json
import random
import struct

import pytest

import poolscope
from dump_util import by_tag, open_dump, scanned_blocks, truth_blocks
from isf_util import isf
from poolscope.forge import load_profile

BUILDS = ["win10-19045", "win11-22631", "win11-26100"]


@pytest.mark.parametrize("symbols", [None, "isf"])
@pytest.mark.parametrize("dump_type", ["full", "kernel_bitmap"])
@pytest.mark.parametrize("scenario", [*BUILDS, "win11-22631-verifier"])
def test_segment_heap_scan_equals_truth(forged, scenario, dump_type, symbols, tmp_path):
    """On dumps written as the 22631 kernel writes its heap (full and kernel-bitmap, Driver
    Verifier on), without symbols and with an ISF: every block and per-tag figure, the pool
    pages and the rejected subsegments equal the truth."""
    path, truth = forged(scenario, dump_type=dump_type)
    t = truth.to_dict()
    assert t["pool"]["layout"] == "segment_heap"
    seg = t["pool"]["segment_heap"]
    assert seg["vs_subsegments"] >= 4 and seg["lfh_subsegments"] >= 20
    # as the kernel leaves them: VS subsegments partly committed, blocks on the delayed-free
    # list, LFH slots withheld
    assert seg["vs_committed"] < seg["vs_reserved"] and seg["vs_delayed_frees"] > 0
    assert seg["lfh_witheld"] > 0
    with open_dump(path, t, symbols, tmp_path) as dump:
        res = dump.scan_pool(blocks=True)
    s = res.summary
    assert s["layouts"] == ["segment_heap"]
    assert sum(s["rejected_reasons"].values()) == s["rejected_pages"]
    assert s["pool_pages"] == t["pool"]["scan"]["pool_pages"]
    assert s["rejected_pages"] == t["pool"]["scan"]["rejected_pages"] == 6
    assert by_tag(s["tags"]) == by_tag(t["pool"]["scan"]["tags"])
    assert res.blocks is not None
    assert scanned_blocks(res.blocks) == truth_blocks(t)
    # A VS chunk at page - 0x20 puts its block at the page (RtlpHpVsContextAllocateInternal).
    assert sum(1 for b in truth_blocks(t) if b[1] % 0x1000 == 0) >= 3
    # Freed LFH blocks keep their header: the bitmap, not the header, says they are free.
    assert any(not b[6] for b in truth_blocks(t)) and any(b[6] for b in truth_blocks(t))


@pytest.mark.parametrize("scenario", BUILDS)
def test_keys_come_from_symbols_or_are_recovered(forged, scenario, tmp_path):
    path, truth = forged(scenario)
    t = truth.to_dict()
    rep = poolscope.scan(path).to_dict()
    assert rep["sources"]["HeapKey"].startswith("heuristic: recovered from the dump")
    assert rep["sources"]["LfhKey"].startswith("heuristic: recovered from the dump")
    sym = tmp_path / "kernel.json"
    isf(sym, t)
    with_syms = poolscope.scan(path, symbols=sym).to_dict()
    assert with_syms["sources"]["HeapKey"].startswith("ExPoolState -> heap globals (symbols")
    assert by_tag(with_syms["pool_scan"]["tags"]) == by_tag(t["pool"]["scan"]["tags"])
    assert with_syms["pool_scan"]["rejected_pages"] == t["pool"]["scan"]["rejected_pages"]


def _fake_pages(rng: random.Random) -> list[bytes]:
    """Pages that look like pool to a naive tag scanner: a legacy POOL_HEADER chain with
    plausible tags, a page that starts like a subsegment (kernel LIST_ENTRY) with random
    bytes after, and random bytes strewn with plausible headers."""
    out = []
    chain = bytearray()
    while len(chain) < 0x1000:
        units = min(rng.randrange(2, 20), (0x1000 - len(chain)) // 16)
        chain += bytes([0, 0, units, 2]) + b"Fake" + bytes(8) + rng.randbytes(units * 16 - 16)
    out.append(bytes(chain))
    ptr = 0xFFFF_A000_0000_0000 | rng.getrandbits(40) << 4
    out.append(struct.pack("<QQQ", ptr, ptr, ptr) + rng.randbytes(0x1000 - 24))
    rnd = bytearray(rng.randbytes(0x1000))
    for off in range(0x40, 0x1000, 0x100):
        rnd[off : off + 16] = struct.pack("<QQ", ptr ^ off, 0)
        rnd[off + 16 : off + 24] = bytes([0, 0, 5, 2]) + b"Phan"
    out.append(bytes(rnd))
    return out


@pytest.mark.parametrize("scenario", ["win10-19045", "win11-26100"])
def test_pages_that_only_look_like_pool_add_nothing(forged, scenario, tmp_path):
    src, truth = forged(scenario)
    t = truth.to_dict()
    path = tmp_path / "phantom.dmp"
    path.write_bytes(src.read_bytes())
    used = {b["pa"] >> 12 for b in t["pool"]["blocks"]}
    rng = random.Random(7)
    lo, n = t["present_ranges"][-1]
    pfns = [p for p in range(lo + n - 200, lo + n) if p not in used][:60]
    fakes = _fake_pages(rng)
    with open(path, "r+b") as f:
        for i, pfn in enumerate(pfns):
            off = truth.file_offset(pfn)
            if off is None:
                continue
            f.seek(off)
            f.write(fakes[i % len(fakes)])
    with poolscope.open(path) as dump:
        s = dump.scan_pool().summary
    assert by_tag(s["tags"]) == by_tag(t["pool"]["scan"]["tags"])
    assert s["rejected_pages"] == t["pool"]["scan"]["rejected_pages"]
    assert s["pool_pages"] == t["pool"]["scan"]["pool_pages"]


def test_corrupting_subsegments_never_crashes(forged, tmp_path):
    """Random bytes written over subsegment headers and chunks: a clean result every time
    (no exception), and no tag the forge never wrote."""
    src, truth = forged("win10-19045")
    t = truth.to_dict()
    known = {(r["tag"], r["pool"]) for r in t["pool"]["scan"]["tags"]}
    pfns = sorted({b["pa"] >> 12 for b in t["pool"]["blocks"]})
    rng = random.Random(19045)
    for round_ in range(12):
        path = tmp_path / f"c{round_}.dmp"
        path.write_bytes(src.read_bytes())
        with open(path, "r+b") as f:
            for pfn in rng.sample(pfns, 8):
                off = truth.file_offset(pfn)
                if off is None:
                    continue
                at = rng.choice([0, 0x20, 0x28, 0x30, rng.randrange(0, 0xFF0)])
                f.seek(off + at)
                f.write(rng.randbytes(rng.choice([2, 4, 8, 16])))
        with poolscope.open(path) as dump:
            s = dump.scan_pool().summary
        assert {(r["tag"], r["pool"]) for r in s["tags"]} <= known | {
            (r["tag"], r["pool"]) for r in s["tags"] if r["allocated"] == 0
        }


def test_future_build_uses_the_nearest_older_family_and_says_so(forged):
    path, truth = forged("win11-26100", build=30000, name="future")
    t = truth.to_dict()
    rep = poolscope.scan(path).to_dict()
    assert rep["dump"]["build"] == 30000 and rep["dump"]["modules"] == len(t["modules"])
    assert "nearest older family win11-26100-x64" in rep["sources"]["layout"]
    assert by_tag(rep["pool_scan"]["tags"]) == by_tag(t["pool"]["scan"]["tags"])


def test_a_profile_without_the_segment_heap_layout_says_what_is_missing(forged, tmp_path):
    """A user profile that lacks the segment-heap layouts: the header, modules and the
    tagging database still come out; the page scan is reported unavailable, with why."""
    path, truth = forged("win10-19045")
    prof = load_profile(19045)
    del prof["pool"]["segment_heap"]
    user = tmp_path / "profile.json"
    user.write_text(json.dumps(prof))
    with poolscope.open(path, profile=user) as dump:
        doc = dump.analyze()
        assert len(dump.modules()) == len(truth.to_dict()["modules"])
    assert doc["pool_scan"] is None
    assert "segment_heap" in doc["unavailable"]["pool_scan"]
    assert doc["poolused"]
