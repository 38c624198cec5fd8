"""Scan service soak: the server's memory under repeated bursts of concurrent uploads, and its
health latency meanwhile. A ``poolscope serve`` process takes ``--bursts`` bursts of
``--concurrency`` concurrent uploads of ``--mib`` MiB each (distinct, incompressible content,
size and sha256 declared as poolscope's client does; not dumps, so their jobs fail at once and
their files are deleted); a probe thread calls Health.Check every 50 ms throughout. Prints the
server's RSS after each burst (and its peak), the health latency (p50 / p99 / max) under load,
and the RSS once idle. Target: RSS under 400 MiB after 8 bursts of 64 x 32 MiB.

    python benches/bench_soak.py [--bursts 8] [--concurrency 64] [--mib 32] [--no-fsync] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
from bench_service import free_port, serve  # the same server start-up (benches/ is on sys.path)
from grpc_health.v1 import health_pb2, health_pb2_grpc

from poolscope.service import wire
from poolscope.service.client import ServiceClient
from poolscope.service.v1 import scan_pb2 as pb

CHUNK = 1 << 20


def rss_mib(pid: int, key: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--bursts", type=int, default=8)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--mib", type=int, default=32)
    ap.add_argument("--workers", type=int, default=1, help="server scan slots")
    ap.add_argument("--no-fsync", action="store_true")
    ap.add_argument("--idle-s", type=float, default=5.0, help="wait before the idle RSS")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    size = args.mib << 20
    base = bytearray(os.urandom(size))  # incompressible; each upload differs in its head
    tmp = Path(tempfile.mkdtemp(prefix="poolscope-bench-soak-"))
    port = free_port()
    extra = ["--max-uploads", str(args.concurrency), "--max-uploads-per-peer",
             str(args.concurrency), "--workers", str(args.workers), "--min-free", "1G"]  # fmt: skip
    if args.no_fsync:
        extra.append("--no-fsync")
    proc = serve(tmp / "data", port, extra)
    results: dict[str, object] = {
        "bursts": args.bursts,
        "concurrency": args.concurrency,
        "mib": args.mib,
        "cores": os.cpu_count(),
        "rss_start_mib": round(rss_mib(proc.pid), 1),
    }
    stop = threading.Event()
    latencies: list[float] = []
    failures: list[str] = []

    def probe() -> None:
        ch = grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = health_pb2_grpc.HealthStub(ch)
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
                latencies.append(time.perf_counter() - t0)
            except grpc.RpcError as e:
                failures.append(f"health: {e.code().name}")
            stop.wait(0.05)
        ch.close()

    counter = [0]
    lock = threading.Lock()

    def one(client: ServiceClient) -> str:
        with lock:
            counter[0] += 1
            n = counter[0]
        head = n.to_bytes(8, "little") + b"soak"
        sha = hashlib.sha256(head)
        sha.update(memoryview(base)[len(head) :])

        def requests() -> Iterator[object]:
            yield pb.UploadDumpRequest(
                metadata=pb.DumpMetadata(
                    file_name=f"soak-{n}.dmp", size_bytes=size, expected_sha256=sha.hexdigest()
                )
            )
            view = memoryview(base)
            yield wire.encode_chunk(head + bytes(view[len(head) : CHUNK]))
            for off in range(CHUNK, size, CHUNK):
                yield wire.encode_chunk(bytes(view[off : off + CHUNK]))

        for _ in range(20):
            try:
                client._upload(requests(), timeout=600)
                return "ok"
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                    return e.code().name
                time.sleep(0.5)
        return "RESOURCE_EXHAUSTED"

    prober = threading.Thread(target=probe)
    prober.start()
    per_burst = []
    clients = [ServiceClient(f"127.0.0.1:{port}") for _ in range(8)]
    try:
        for b in range(args.bursts):
            t0 = time.perf_counter()
            with ThreadPoolExecutor(args.concurrency) as pool:
                outcomes = list(pool.map(one, [clients[i % 8] for i in range(args.concurrency)]))
            dt = time.perf_counter() - t0
            bad = [o for o in outcomes if o != "ok"]
            failures += bad
            row = {
                "burst": b + 1,
                "seconds": round(dt, 2),
                "MBps": round(args.concurrency * size / dt / 1e6, 1),
                "rss_mib": round(rss_mib(proc.pid), 1),
                "failed": len(bad),
            }
            per_burst.append(row)
            if not args.json:
                print(
                    f"burst {row['burst']}: {args.concurrency} x {args.mib} MiB in {row['seconds']}"
                    f" s ({row['MBps']} MB/s), server RSS {row['rss_mib']} MiB"
                    + (f", {len(bad)} failed: {sorted(set(bad))}" if bad else ""),
                    flush=True,
                )
        time.sleep(args.idle_s)
        results["rss_idle_mib"] = round(rss_mib(proc.pid), 1)
        results["rss_peak_mib"] = round(rss_mib(proc.pid, "VmHWM"), 1)
    finally:
        stop.set()
        prober.join()
        for c in clients:
            c.close()
        proc.terminate()
        proc.wait(30)
        subprocess.run(["rm", "-rf", str(tmp)], check=False)
    lat = sorted(latencies)
    results["per_burst"] = per_burst
    results["health_checks"] = len(lat)
    results["health_p50_ms"] = round(statistics.median(lat) * 1e3, 2) if lat else None
    results["health_p99_ms"] = round(lat[int(len(lat) * 0.99)] * 1e3, 2) if lat else None
    results["health_max_ms"] = round(lat[-1] * 1e3, 2) if lat else None
    results["failures"] = failures
    worst = max(float(r["rss_mib"]) for r in per_burst) if per_burst else 0.0
    results["rss_max_after_burst_mib"] = worst
    results["pass"] = worst < 400 and not failures
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        r = results
        print(
            f"RSS: start {r['rss_start_mib']} MiB, worst after a burst {worst} MiB, peak "
            f"{r['rss_peak_mib']} MiB, idle {r['rss_idle_mib']} MiB (target < 400 MiB)"
        )
        print(
            f"health under load: {r['health_checks']} checks, p50 {r['health_p50_ms']} ms, "
            f"p99 {r['health_p99_ms']} ms, max {r['health_max_ms']} ms"
        )
        print("PASS" if r["pass"] else f"FAIL {failures[:5]}")
    return 0 if results["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
