"""Scan benchmark: the full ``poolscope scan`` (tracker, page scan, big pool, owners, findings) on
a >= 8 GiB forge dump in the page cache, against ``cat DUMP > /dev/null`` in the same run; peak
RSS of the scan process (the mapping is file-backed page cache, not work memory, but RSS counts
touched mapped pages too, so both are reported); and the cost of handing a million scanned blocks
to Python as arrays. Also the peak RSS of ``poolscope scan --json`` on the same-size dump with
Driver Verifier data (``--verifier-scenario``, ``--tracked`` allocations of vrfdemo.sys, its
1,024-entry pool log; the bound is 300 MiB), forged, measured and deleted after the first dump
(so at most one big dump is on disk at a time). Run:
``python benches/bench_scan.py [--ram-mib 8192] [--tracked 45000]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import poolscope
from poolscope import forge


def timed(cmd: list[str]) -> tuple[float, str, str]:
    t = time.perf_counter()
    r = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return time.perf_counter() - t, r.stdout, r.stderr


def peak_rss_mib(path: Path) -> tuple[float, float]:
    """(peak RSS in MiB, wall seconds) of ``poolscope scan --json`` in a child process."""
    t, _, err = timed(
        ["/usr/bin/time", "-v", sys.executable, "-m", "poolscope.cli", "scan", str(path), "--json"]
    )
    kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", err).group(1))  # type: ignore[union-attr]
    return round(kib / 1024, 1), round(t, 3)


def verifier_scenario(name: str, ram_mib: int | None, tracked: int) -> forge.Scenario:
    """``name`` (a ``*-verifier`` builtin) with ``tracked`` outstanding allocations of its
    second driver and the pool log written past them (its 1,024 entries wrap)."""
    sc = forge.builtin(name)
    v = json.loads(json.dumps(sc.to_dict()["verifier"]))
    v["drivers"][1]["allocations"][0]["count"] = tracked
    v["pool_log"]["entries_written"] = tracked + 10_000
    return sc.replace(ram_mib=ram_mib or 8192, verifier=v)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scenario", default="win7sp1-8g")
    ap.add_argument("--ram-mib", type=int)
    ap.add_argument("--path", default="/tmp/poolscope-scan-bench.dmp")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--reuse", action="store_true", help="reuse --path if it exists")
    ap.add_argument("--verifier-scenario", default="win7sp1-verifier")
    ap.add_argument("--tracked", type=int, default=45_000, help="verifier-tracked allocations")
    ap.add_argument(
        "--pool-scale", type=int, help="multiply the pool's block counts (e.g. 850: ~1M blocks)"
    )
    args = ap.parse_args()
    path = Path(args.path)
    sc = forge.builtin(args.scenario)
    if args.ram_mib:
        sc = sc.replace(ram_mib=args.ram_mib)
    if args.pool_scale:
        sc = sc.replace(pool=dict(sc.to_dict()["pool"], scale=args.pool_scale))
    t = time.perf_counter()
    if not (args.reuse and path.exists()):
        forge.forge(sc, path)
    forge_s = time.perf_counter() - t
    size = path.stat().st_size

    subprocess.run(["cat", str(path)], check=True, stdout=subprocess.DEVNULL)
    cat_s = min(timed(["sh", "-c", f"cat '{path}' > /dev/null"])[0] for _ in range(args.repeat))

    # In-process scan time (no interpreter start-up), best of N.
    scan_times = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        rep = poolscope.scan(path)
        scan_times.append(time.perf_counter() - t)
    scan_s = min(scan_times)

    # The CLI end to end, with peak RSS from /usr/bin/time -v.
    rss_mib, cli_s = peak_rss_mib(path)

    # A million blocks to Python as arrays.
    with poolscope.open(path) as dump:
        t = time.perf_counter()
        res = dump.scan_pool(blocks=True)
        blocks_s = time.perf_counter() - t
        nblocks = len(res.blocks) if res.blocks is not None else 0

    gb = size / 1e9
    out = {
        "file_bytes": size,
        "forge_s": round(forge_s, 2),
        "cat_s": round(cat_s, 4),
        "cat_gb_per_s": round(gb / cat_s, 2),
        "scan_s": round(scan_s, 4),
        "scan_gb_per_s": round(gb / scan_s, 2),
        "scan_ratio_to_cat": round(scan_s / cat_s, 2),
        "cli_scan_s": round(cli_s, 3),
        "cli_peak_rss_mib": rss_mib,
        "pool_pages": rep.pool_scan["pool_pages"] if rep.pool_scan else None,
        "blocks": nblocks,
        "scan_with_blocks_to_python_s": round(blocks_s, 4),
        "cores": os.cpu_count(),
    }
    if os.environ.get("POOLSCOPE_BENCH_KEEP") is None:
        path.unlink()

    # The same size with Driver Verifier data: peak RSS with and without it.
    vpath = path.with_name(path.stem + "-verifier.dmp")
    forge.forge(verifier_scenario(args.verifier_scenario, args.ram_mib, args.tracked), vpath)
    subprocess.run(["cat", str(vpath)], check=True, stdout=subprocess.DEVNULL)
    out["verifier_tracked"] = args.tracked
    out["cli_peak_rss_verifier_mib"], out["cli_scan_verifier_s"] = peak_rss_mib(vpath)
    out["rss_bound_mib"] = 300
    vpath.unlink()
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
