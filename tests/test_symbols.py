"""Volatility 3 ISF symbol tables: exact global addresses and structure layouts that override the
profile. The test writes an ISF for the forge's kernel in the format volatility3 reads."""

from __future__ import annotations

import copy
import json
import lzma

import poolscope
from poolscope.forge import load_profile

BASE_TYPES = {
    "unsigned char": {"size": 1, "signed": False, "kind": "char", "endian": "little"},
    "unsigned short": {"size": 2, "signed": False, "kind": "int", "endian": "little"},
    "unsigned long": {"size": 4, "signed": False, "kind": "int", "endian": "little"},
    "unsigned long long": {"size": 8, "signed": False, "kind": "int", "endian": "little"},
    "pointer": {"size": 8, "signed": False, "kind": "int", "endian": "little"},
}
WIDTH_TYPE = {1: "unsigned char", 2: "unsigned short", 4: "unsigned long", 8: "unsigned long long"}


def struct_from_profile(entry: dict) -> dict:
    fields = {}
    for name, f in entry.items():
        if name == "size":
            continue
        ty = {"kind": "base", "name": WIDTH_TYPE[f["width"]]}
        if "bits" in f:
            ty = {
                "kind": "bitfield",
                "bit_position": f.get("shift", 0),
                "bit_length": f["bits"],
                "type": ty,
            }
        fields[name] = {"offset": int(f["offset"], 16), "type": ty}
    return {"kind": "struct", "size": int(entry["size"], 16), "fields": fields}


def write_isf(path, truth: dict, build: int) -> None:
    pool = load_profile(build)["pool"]
    base = truth["kernel_base"]
    isf = {
        "metadata": {
            "format": "6.2.0",
            "producer": {"name": "poolscope-tests", "version": "1"},
            "windows": {
                "pdb": {
                    "GUID": "0" * 32,
                    "age": 1,
                    "database": "ntkrnlmp.pdb",
                    "machine_type": 34404,
                }
            },
        },
        "base_types": BASE_TYPES,
        "user_types": {
            "_POOL_TRACKER_TABLE": struct_from_profile(pool["tracker"]),
            "_POOL_TRACKER_BIG_PAGES": struct_from_profile(pool["big_page"]),
        },
        "enums": {},
        "symbols": {name: {"address": va - base} for name, va in truth["symbols"].items()},
    }
    text = json.dumps(isf).encode()
    path.write_bytes(lzma.compress(text) if path.suffix == ".xz" else text)


def test_symbols_replace_profile_heuristics(forged, tmp_path):
    path, truth = forged("win7sp1")
    t = truth.to_dict()
    assert {"PoolTrackTable", "PoolTrackTableSize", "PoolBigPageTable"} <= set(t["symbols"])
    profile = copy.deepcopy(load_profile(7601))
    profile["pool"]["globals"] = {}  # without symbols nothing says where the size/big table are

    with poolscope.open(path, profile=profile) as dump:
        rep_without = dump.analyze()
    assert "poolused" in rep_without["unavailable"]
    assert "bigpool" in rep_without["unavailable"]

    for name in ("kernel.json", "kernel.json.xz"):
        isf = tmp_path / name
        write_isf(isf, t, 7601)
        with poolscope.open(path, profile=profile, symbols=isf) as dump:
            doc = dump.analyze()
            assert doc["unavailable"] == {}
            assert doc["sources"]["PoolTrackTableSize"] == f"symbols {name}"
            assert doc["sources"]["PoolBigPageTable"] == f"symbols {name}"
            assert doc["sources"]["_POOL_TRACKER_TABLE"] == f"symbols {name}"
        with poolscope.open(path) as plain:
            assert doc["poolused"] == plain.analyze()["poolused"]
            assert doc["bigpool"] == plain.analyze()["bigpool"]


def test_symbol_layout_overrides_a_wrong_profile_layout(forged, tmp_path):
    path, truth = forged("win7sp1")
    t = truth.to_dict()
    wrong = copy.deepcopy(load_profile(7601))
    # A profile whose tracker layout is wrong (counters swapped)...
    tr = wrong["pool"]["tracker"]
    tr["NonPagedAllocs"], tr["NonPagedFrees"] = tr["NonPagedFrees"], tr["NonPagedAllocs"]
    isf = tmp_path / "kernel.json"
    write_isf(isf, t, 7601)  # ...corrected by the symbol table's exact layout.
    with poolscope.open(path) as good:
        want = good.poolused()
    with poolscope.open(path, profile=wrong) as bad:
        assert bad.poolused() != want
    with poolscope.open(path, profile=wrong, symbols=isf) as fixed:
        assert fixed.poolused() == want
