"""Start-up of the ``poolscope`` command: ``import poolscope.cli`` (``-X importtime``),
``poolscope --help``, and ``poolscope scan --json`` of the 1 GiB ``win7sp1-leak`` sample against
``cat`` of the same file, medians of N runs in the same process tree.

    python benches/bench_startup.py [--runs 9] [--dump PATH]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _median(cmd: list[str], runs: int, shell: bool = False) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(
            " ".join(cmd) if shell else cmd,
            shell=shell,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=True,
        )
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _import_us(runs: int) -> int:
    values = []
    for _ in range(runs):
        r = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", "import poolscope.cli"],
            capture_output=True,
            text=True,
            check=True,
        )
        last = r.stderr.strip().splitlines()[-1]
        values.append(int(last.split("|")[1]))
    return int(statistics.median(values))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--dump", help="an existing dump (default: forge win7sp1-leak)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        dump = args.dump
        if dump is None:
            from poolscope import forge

            dump = str(Path(tmp) / "sample.dmp")
            forge.forge(forge.builtin("win7sp1-leak"), dump)
        cli = [sys.executable, "-m", "poolscope.cli"]
        subprocess.run(["cat", dump], stdout=subprocess.DEVNULL, check=True)  # page cache
        imp = _import_us(args.runs)
        helps = _median([*cli, "--help"], args.runs)
        cat = _median(["cat", dump, ">", "/dev/null"], args.runs, shell=True)
        scan = _median([*cli, "scan", "--json", dump], args.runs)
    print(f"import poolscope.cli (-X importtime, cumulative): {imp / 1000:.1f} ms")
    print(f"poolscope --help: {helps:.3f} s")
    print(f"cat {Path(dump).name}: {cat:.3f} s")
    print(f"poolscope scan --json: {scan:.3f} s = {scan / cat:.2f}x cat")
    return 0


if __name__ == "__main__":
    sys.exit(main())
