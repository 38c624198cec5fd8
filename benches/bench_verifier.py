"""Driver Verifier read benchmark: a forge dump with ~1 M tracked allocations and a 0x100000-entry
pool log (wrapped), read through the Rust API from Python (stats, drivers, tracker pages walked,
the log ordered newest first, allocation sites and findings; tracked allocations and logs as
arrays). Reports the native call (``Dump.verifier_raw``) and ``Dump.verifier()`` (rows=0).
Run: ``python benches/bench_verifier.py [--allocations 1000000] [--log 0x100000]``; forging
the 1 M dump takes minutes: ``--reuse`` keeps and reuses it at ``--path``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from array import array
from pathlib import Path

import poolscope
from poolscope import forge


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--allocations", type=int, default=1_000_000)
    ap.add_argument("--log", type=lambda s: int(s, 0), default=0x100000)
    ap.add_argument("--path", default="/tmp/poolscope-verifier-bench.dmp")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--reuse", action="store_true", help="reuse --path (and its .isf.json)")
    ap.add_argument("--forge-only", action="store_true", help="write the dump and stop")
    args = ap.parse_args()
    path = Path(args.path)
    isf = path.with_suffix(".isf.json")
    meta = path.with_suffix(".meta.json")

    sc = forge.builtin("win7sp1-verifier").to_dict()
    v = sc["verifier"]
    demo = next(d for d in v["drivers"] if d["name"] == "vrfdemo.sys")
    demo["allocations"] = [
        {
            "tag": "VDem",
            "bytes": 72,
            "pool": "nonpaged",
            "count": args.allocations,
            "site": 4672,
            "stack": [],
        }
    ]
    demo["freed"] = args.allocations // 10
    # Every allocate and free is logged once; more than the log holds makes it wrap.
    events = int(args.allocations * 1.3) + 1000
    v["pool_log"] = {"length": args.log, "entries_written": max(events, args.log + args.log // 2)}
    sc["ram_mib"] = max(sc.get("ram_mib") or 96, 1024)
    # Every 4 KiB tracker page (127 entries) is a big-pool allocation: size the table for them.
    big = args.allocations // 100 + 0x800
    sc["pool"]["big_table_entries"] = max(sc["pool"]["big_table_entries"], 1 << big.bit_length())
    t = time.perf_counter()
    if args.reuse and path.exists() and isf.exists() and meta.exists():
        saved = json.loads(meta.read_text())
        tracker_pages, forge_s = saved["tracker_pages"], saved["forge_s"]
        print(f"reusing {path} (forged in {forge_s} s)", file=sys.stderr)
    else:
        truth = forge.forge(sc, path).to_dict()
        forge_s = round(time.perf_counter() - t, 2)
        base = truth["kernel_base"]
        isf.write_text(
            json.dumps(
                {
                    "metadata": {},
                    "base_types": {},
                    "user_types": {},
                    "enums": {},
                    "symbols": {n: {"address": a - base} for n, a in truth["symbols"].items()},
                }
            )
        )
        tracker_pages = truth["verifier"]["tracker_pages"]
        meta.write_text(json.dumps({"tracker_pages": tracker_pages, "forge_s": forge_s}))
    if args.forge_only:
        print(json.dumps({"forge_s": forge_s, "tracker_pages": tracker_pages}))
        return 0

    with poolscope.open(path, symbols=isf) as dump:
        # Warm the page cache and the mapping once (the forge just wrote the file).
        dump.verifier_raw(None, None, 0)
        raw_times, api_times = [], []
        for k in range(args.repeat):
            t = time.perf_counter()
            summary, cols = dump.verifier_raw(None, None, 0)
            raw_times.append(time.perf_counter() - t)
            if k + 1 < args.repeat:
                del summary, cols  # freeing ~250 MB is not timed
            t = time.perf_counter()
            ver = dump.verifier()
            api_times.append(time.perf_counter() - t)
            if k + 1 < args.repeat:
                del ver
        t = time.perf_counter()
        first = ver.log.rows(100)
        rows_s = time.perf_counter() - t
        # What a caller that wants owned arrays pays on top: one copy of every column.
        t = time.perf_counter()
        owned = []
        for table in (ver.tracked, ver.log, ver.irp_log):
            for c in vars(table).values():
                if isinstance(c, memoryview):
                    a = array(c.format)
                    a.frombytes(c.cast("B"))
                    owned.append(a)
        arrays_s = time.perf_counter() - t
    # Columns are the reader's own vectors, lent to Python as buffers (no copy).
    column_bytes = sum(
        memoryview(c).nbytes
        for part in cols.values()
        if part
        for c in part.values()
        if not isinstance(c, int)
    )
    out = {
        "forge_s": forge_s,
        "tracked": len(ver.tracked),
        "log_entries": len(ver.log),
        "log_frames": ver.log.frames,
        "irp_log_entries": len(ver.irp_log),
        "sites": len(ver.sites),
        "tracker_pages": tracker_pages,
        # The native call: the reader once, the summary JSON (rows=0), the columns lent.
        "native_verifier_raw_s": round(min(raw_times), 4),
        # dump.verifier(): the native call plus decoding the JSON and viewing the columns.
        "verifier_s": round(min(api_times), 4),
        "verifier_s_all_runs": [round(x, 4) for x in api_times],
        "summary_json_bytes": len(summary),
        "column_bytes": column_bytes,
        "columns_copied_to_arrays_s": round(arrays_s, 4),
        "columns_copied_bytes": sum(a.itemsize * len(a) for a in owned),
        "log_rows_100_symbolized_s": round(rows_s, 4),
        "log_rows_100": len(first),
    }
    print(json.dumps(out, indent=2))
    if os.environ.get("POOLSCOPE_BENCH_KEEP") is None and not args.reuse:
        path.unlink()
        isf.unlink()
        meta.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
