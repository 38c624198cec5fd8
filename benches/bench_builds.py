"""Scan speed across builds: the same-size forge dump of Windows 7 SP1 (legacy pool page
chains) and of Windows 10 22H2 / Windows 11 23H2 / 24H2 (segment-heap VS/LFH subsegments, as the
22631 kernel writes them), scanned in the same run, alternating, best of N, each against ``cat``
of its own file. The bar (issue 11): the 22631 scan within 10% of the 7601 one. Run:
``python benches/bench_builds.py [--ram-mib 8192] [--builds win7sp1,win11-22631,...]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import poolscope
from poolscope import forge


def cat_s(path: Path) -> float:
    t = time.perf_counter()
    subprocess.run(["sh", "-c", f"cat '{path}' > /dev/null"], check=True)
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--builds", default="win7sp1,win10-19045,win11-22631,win11-26100")
    ap.add_argument("--ram-mib", type=int, default=8192)
    ap.add_argument("--dir", default="/tmp")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--reuse", action="store_true", help="reuse dumps already forged")
    args = ap.parse_args()
    names = args.builds.split(",")
    paths: dict[str, Path] = {}
    forge_s: dict[str, float] = {}
    for n in names:
        p = Path(args.dir) / f"poolscope-bench-{n}-{args.ram_mib}.dmp"
        # Same size and container for every build: a full dump of the same RAM, pattern-filled.
        sc = forge.builtin(n).replace(ram_mib=args.ram_mib, dump_type="full", fill="pattern")
        t = time.perf_counter()
        if not (args.reuse and p.exists()):
            forge.forge(sc, p)
        forge_s[n] = round(time.perf_counter() - t, 1)
        paths[n] = p
    for p in paths.values():
        cat_s(p)  # warm the page cache
    scans: dict[str, list[float]] = {n: [] for n in names}
    cats: dict[str, list[float]] = {n: [] for n in names}
    pages: dict[str, int] = {}
    for _ in range(args.repeat):
        for n in names:  # alternate, so that machine load hits every build alike
            cats[n].append(cat_s(paths[n]))
            t = time.perf_counter()
            rep = poolscope.scan(paths[n])
            scans[n].append(time.perf_counter() - t)
            pages[n] = rep.pool_scan["pool_pages"] if rep.pool_scan else -1
    base = names[0]
    out = {
        "ram_mib": args.ram_mib,
        "file_bytes": {n: paths[n].stat().st_size for n in names},
        "forge_s": forge_s,
        "pool_pages": pages,
        "cat_s": {n: round(min(cats[n]), 4) for n in names},
        "scan_s": {n: round(min(scans[n]), 4) for n in names},
        "scan_ratio_to_cat": {n: round(min(scans[n]) / min(cats[n]), 3) for n in names},
        f"scan_ratio_to_{base}": {n: round(min(scans[n]) / min(scans[base]), 3) for n in names},
        "cores": os.cpu_count(),
    }
    print(json.dumps(out, indent=2))
    if os.environ.get("POOLSCOPE_BENCH_KEEP") is None and not args.reuse:
        for p in paths.values():
            p.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
