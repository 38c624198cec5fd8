"""Scan service benchmark over loopback: upload throughput of one large forge dump (plain and
zstd; MB/s of dump bytes, best of N, server in its own process as ``poolscope serve``), and jobs
per minute for small dumps (distinct 32 MiB dumps uploaded by 4 concurrent clients, from the
first byte sent to the last report ready). Target: >= 500 MB/s plain upload.

    python benches/bench_service.py [--mib 512] [--jobs 60] [--repeat 3] [--no-fsync] [--json]

The dump has the forge's "pattern" fill (every other page filled), so zstd shrinks it far more
than a real dump; the wire bytes are reported next to the rate.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from poolscope import forge
from poolscope.service.client import ServiceClient, dump_digest, state_name


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(data: Path, port: int, extra: list[str]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "poolscope.cli", "serve", "--address", f"127.0.0.1:{port}",
         "--data-dir", str(data), "--log-level", "warning", *extra],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    stub = health_pb2_grpc.HealthStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if stub.Check(health_pb2.HealthCheckRequest(), timeout=0.5).status == 1:
                return proc
        except grpc.RpcError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("poolscope serve did not start")


def dd_fsync_seconds(src: Path, dst_dir: Path) -> float:
    """The disk's own write speed, as the spool sees it: ``dd conv=fsync`` of the dump into the
    data dir's file system (1 MiB blocks), the file then removed."""
    dst_dir.mkdir(parents=True, exist_ok=True)
    dst = dst_dir / "dd.tmp"
    t = time.perf_counter()
    subprocess.run(
        ["dd", f"if={src}", f"of={dst}", "bs=1M", "conv=fsync", "status=none"], check=True
    )
    dt = time.perf_counter() - t
    dst.unlink()
    return dt


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--mib", type=int, default=512, help="size of the upload dump (RAM MiB)")
    ap.add_argument("--jobs", type=int, default=60, help="small dumps for jobs per minute")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--chunk-kib", type=int, default=1024)
    ap.add_argument("--workers", type=int, help="server scan slots (default: cores)")
    ap.add_argument("--no-fsync", action="store_true", help="server does not fsync uploads")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="poolscope-bench-service-"))
    big = tmp / "big.dmp"
    forge.forge(forge.builtin("win7sp1").replace(ram_mib=args.mib, fill="pattern"), big)
    size = big.stat().st_size
    smalls = []
    for i in range(args.jobs):
        p = tmp / f"small-{i}.dmp"
        sc = forge.builtin("win7sp1").replace(ram_mib=32, fill="zero", uptime_s=100.0 + i)
        forge.forge(sc, p)
        smalls.append(p)
    subprocess.run(["cat", str(big)], check=True, stdout=subprocess.DEVNULL)  # page cache

    extra = ["--no-fsync"] if args.no_fsync else []
    if args.workers:
        extra += ["--workers", str(args.workers)]
    results: dict[str, object] = {
        "dump_bytes": size,
        "chunk_kib": args.chunk_kib,
        "fsync": not args.no_fsync,
        "cores": os.cpu_count(),
        "loadavg_before": os.getloadavg()[0],
    }
    # Uploads: a fresh server and data dir per run, so every upload is new content (spooled for
    # good: hashed, written, fsynced unless --no-fsync, renamed), never a deduplicated one.
    # The client declares the dump's sha256 (it hashes the file first); that pass is timed
    # apart from the upload.
    t = time.perf_counter()
    digest, _ = dump_digest(big, False)
    results["client_prehash_s"] = round(time.perf_counter() - t, 3)
    dd_runs: list[float] = []
    for mode in ("plain", "zstd"):
        runs = []
        for i in range(args.repeat):
            port = free_port()
            if mode == "plain":  # the disk's own speed, in the same run, before each upload
                dd_runs.append(dd_fsync_seconds(big, tmp / "dd"))
            proc = serve(tmp / f"data-{mode}-{i}", port, extra)
            try:
                with ServiceClient(f"127.0.0.1:{port}") as c:
                    cpu0 = cpu_seconds(proc.pid)
                    t = time.perf_counter()
                    r = c.upload(
                        big,
                        compress=mode == "zstd",
                        level=1,
                        chunk_size=args.chunk_kib << 10,
                        expected_sha256=digest,
                    )
                    dt = time.perf_counter() - t
                    runs.append((dt, r.received_bytes, cpu_seconds(proc.pid) - cpu0))
            finally:
                proc.terminate()
                proc.wait(30)
                subprocess.run(["rm", "-rf", str(tmp / f"data-{mode}-{i}")], check=False)
        runs.sort()
        best, median = runs[0], runs[len(runs) // 2]
        results[f"upload_{mode}_MBps"] = round(size / best[0] / 1e6, 1)
        results[f"upload_{mode}_median_MBps"] = round(size / median[0] / 1e6, 1)
        results[f"upload_{mode}_wire_bytes"] = best[1]
        results[f"upload_{mode}_server_cpu_s"] = round(best[2], 2)
    dd_runs.sort()
    results["dd_fsync_MBps"] = round(size / dd_runs[0] / 1e6, 1)
    results["dd_fsync_median_MBps"] = round(size / dd_runs[len(dd_runs) // 2] / 1e6, 1)
    results["plain_vs_dd_best"] = round(
        float(results["upload_plain_MBps"]) / float(results["dd_fsync_MBps"]),
        2,  # type: ignore[arg-type]
    )
    results["plain_vs_dd_median"] = round(
        float(results["upload_plain_median_MBps"])  # type: ignore[arg-type]
        / float(results["dd_fsync_median_MBps"]),  # type: ignore[arg-type]
        2,
    )

    port = free_port()
    proc = serve(tmp / "data", port, extra)
    try:
        with ServiceClient(f"127.0.0.1:{port}") as c:

            def one(p: Path) -> str:
                with ServiceClient(f"127.0.0.1:{port}") as cc:
                    return cc.upload(p, compress=True, level=1).job.id

            t = time.perf_counter()
            with ThreadPoolExecutor(4) as pool:
                ids = list(pool.map(one, smalls))
            for job_id in ids:
                job = c.wait(job_id, timeout=600)
                if state_name(job.state) != "succeeded":
                    raise SystemExit(f"job {job_id} {state_name(job.state)}: {job.error}")
            dt = time.perf_counter() - t
            results["small_jobs"] = len(ids)
            results["small_jobs_seconds"] = round(dt, 2)
            results["jobs_per_minute"] = round(len(ids) / dt * 60, 1)
    finally:
        proc.terminate()
        proc.wait(30)
        subprocess.run(["rm", "-rf", str(tmp)], check=False)
    results["loadavg_after"] = os.getloadavg()[0]
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        r = results
        fsync = "on" if not args.no_fsync else "off"
        print(
            f"upload of a {size / 1e6:.0f} MB dump over loopback ({args.chunk_kib} KiB chunks, "
            f"server fsync {fsync}; best and median of {args.repeat} fresh servers):"
        )
        for mode in ("plain", "zstd"):
            wire = int(r[f"upload_{mode}_wire_bytes"])  # type: ignore[call-overload]
            best, median = r[f"upload_{mode}_MBps"], r[f"upload_{mode}_median_MBps"]
            cpu = r[f"upload_{mode}_server_cpu_s"]
            print(
                f"  {mode:5} {best:>7} MB/s (median {median})  wire {wire / 1e6:.1f} MB  "
                f"server CPU {cpu} s"
            )
        print(
            f"  dd conv=fsync {r['dd_fsync_MBps']} MB/s (median {r['dd_fsync_median_MBps']}): "
            f"plain upload / dd = {r['plain_vs_dd_best']}x best, {r['plain_vs_dd_median']}x "
            f"median (aim: 0.9x); client pre-hash {r['client_prehash_s']} s, not timed"
        )
        print(
            f"small dumps (32 MiB, zstd, 4 clients): {r['small_jobs']} jobs in "
            f"{r['small_jobs_seconds']} s = {r['jobs_per_minute']} jobs/min"
        )
        print(
            f"load average {r['loadavg_before']:.2f} -> {r['loadavg_after']:.2f} on {r['cores']} "
            "cores (target: >= 500 MB/s plain)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
