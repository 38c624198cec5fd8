"""Read-speed benchmark: a >= 4 GiB forge dump, in one run:

- ``cat FILE > /dev/null`` from the page cache (the baseline: page-cache copy bandwidth),
- opening the dump through the Rust API,
- reading every byte of every present physical page through the Rust API
  (``rust/core/examples/read_pages.rs``), with all cores and with one,
- opening it from Python (``poolscope.open``).

Figures are ratios against ``cat`` measured in the same run. Run: ``python benches/bench_read.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import poolscope
from poolscope import forge

ROOT = Path(__file__).resolve().parents[1]


def run(cmd: list[str], **kw: object) -> tuple[float, str, dict[str, int]]:
    """Wall time, stdout, and the child's page faults / peak RSS."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout  # type: ignore[call-overload]
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    usage = {
        "minor_faults": after.ru_minflt - before.ru_minflt,
        "max_rss_kib": after.ru_maxrss,
    }
    return wall, out, usage


def best(n: int, fn: object) -> tuple[float, object]:
    results = [fn() for _ in range(n)]  # type: ignore[operator]
    return min(results, key=lambda r: r[0])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ram-mib", type=int, default=4096)
    ap.add_argument("--path", default="/tmp/poolscope-bench.dmp")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    path = Path(args.path)

    sc = forge.builtin("win7sp1-4g").replace(ram_mib=args.ram_mib)
    t = time.perf_counter()
    truth = forge.forge(sc, path)
    forge_s = time.perf_counter() - t
    size = path.stat().st_size

    subprocess.run(
        ["cargo", "build", "--release", "-q", "-p", "poolscope-core", "--example", "read_pages"],
        check=True,
        cwd=ROOT,
    )
    exe = ROOT / "target" / "release" / "examples" / "read_pages"

    subprocess.run(["cat", str(path)], check=True, stdout=subprocess.DEVNULL)  # warm the cache
    cat_s, _ = best(args.repeat, lambda: run(["sh", "-c", f"cat '{path}' > /dev/null"])[:2])

    def rust(threads: int) -> tuple[float, dict[str, object]]:
        wall, out, usage = run([str(exe), str(path), str(threads)])
        rec = json.loads(out)
        rec.update(usage, wall_s=wall)
        return rec["read_s"], rec

    read_s, rec_all = best(args.repeat, lambda: rust(0))
    read1_s, rec_one = best(args.repeat, lambda: rust(1))

    t = time.perf_counter()
    with poolscope.open(path) as dump:
        py_open_s = time.perf_counter() - t
        assert dump.physical_page_count == truth.to_dict()["physical_pages"]

    gb = size / 1e9
    results = {
        "file_bytes": size,
        "forge_s": round(forge_s, 3),
        "cat_s": round(cat_s, 4),
        "cat_gb_per_s": round(gb / cat_s, 2),
        "open_s": rec_all["open_s"],
        "python_open_s": round(py_open_s, 4),
        "read_all_cores_s": round(read_s, 4),
        "read_all_cores_gb_per_s": rec_all["gb_per_s"],
        "read_all_cores_ratio_to_cat": round(read_s / cat_s, 2),
        "read_1_core_s": round(read1_s, 4),
        "read_1_core_ratio_to_cat": round(read1_s / cat_s, 2),
        "read_minor_faults": rec_all["minor_faults"],
        "threads": rec_all["threads"],
    }
    print(json.dumps(results, indent=2))
    print(
        f"\n{size / (1 << 30):.2f} GiB dump: forged in {forge_s:.1f} s; cat {cat_s:.3f} s "
        f"({gb / cat_s:.1f} GB/s); open {rec_all['open_s'] * 1e3:.2f} ms; read every page "
        f"{read_s:.3f} s ({rec_all['gb_per_s']} GB/s, {read_s / cat_s:.2f}x cat) on "
        f"{rec_all['threads']} threads, {read1_s:.3f} s ({read1_s / cat_s:.2f}x cat) on 1",
        file=sys.stderr,
    )
    if os.environ.get("POOLSCOPE_BENCH_KEEP") is None:
        path.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
