"""Helpers of the scan service tests (tests/test_service*.py): small forge dumps, servers on a
loopback port, a gated executor. Every wait here is bounded."""

from __future__ import annotations

import copy
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from poolscope import forge
from poolscope.service.client import ServiceClient, state_name
from poolscope.service.executors import LocalExecutor, ScanOutcome, ScanRequest
from poolscope.service.server import PoolscopeServer, ServerConfig
from poolscope.service.v1 import scan_pb2 as pb

VOLATILE_DUMP_KEYS = ("path",)


def comparable(report: dict[str, Any]) -> dict[str, Any]:
    """A report without its volatile keys (the dump's path)."""
    doc = copy.deepcopy(report)
    for k in VOLATILE_DUMP_KEYS:
        doc["dump"].pop(k, None)
    return doc


def small(**overrides: Any) -> forge.Scenario:
    """A 32 MiB Windows 7 SP1 full dump (sparse), with ``overrides``."""
    data = {"ram_mib": 32, "fill": "zero"}
    data.update(overrides)
    return forge.builtin("win7sp1").replace(**data)


def leak_scenario(count: int, when: str, **overrides: Any) -> forge.Scenario:
    """A small dump whose tag Leak holds ``count`` x 64 KiB big-pool allocations (myfault.sys)."""
    pool = copy.deepcopy(forge.builtin("win7sp1").to_dict()["pool"])
    pool["big"].append({"tag": "Leak", "pool": "nonpaged", "count": count, "bytes": 65536})
    return small(pool=pool, system_time=when, **overrides)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Running:
    server: PoolscopeServer
    port: int
    data_dir: Path
    client: ServiceClient

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.client.close()
        self.server.stop(grace_s=1)


@contextmanager
def running_server(
    data_dir: Path, executor: Any = None, token: str | None = None, **config: Any
) -> Iterator[Running]:
    cfg = ServerConfig(address="127.0.0.1:0", data_dir=data_dir, token=token, **config)
    cfg.workers = cfg.workers or 2
    server = PoolscopeServer(cfg, executor=executor)
    port = server.start()
    run = Running(server, port, Path(data_dir), ServiceClient(f"127.0.0.1:{port}", token=token))
    try:
        yield run
    finally:
        run.stop()


class GatedExecutor:
    """A LocalExecutor whose scans start only once ``gate`` is set (for queue tests)."""

    def __init__(self, slots: int = 1) -> None:
        self.inner = LocalExecutor(slots)
        self.slots = slots
        self.name = "gated"
        self.gate = threading.Event()
        self.started = threading.Event()

    def run(self, slot: int, request: ScanRequest, cancel: threading.Event) -> ScanOutcome:
        self.started.set()
        deadline = time.monotonic() + 120
        while not self.gate.wait(0.02):
            if cancel.is_set():
                return ScanOutcome("cancelled", error="cancelled by request")
            if time.monotonic() > deadline:
                return ScanOutcome("failed", error="gate never opened")
        return self.inner.run(slot, request, cancel)

    def close(self) -> None:
        self.gate.set()
        self.inner.close()


def wait_until(pred: Callable[[], bool], timeout: float = 30.0, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


def wait_state(client: ServiceClient, job_id: str, state: int, timeout: float = 30.0) -> pb.Job:
    box: list[pb.Job] = []

    def check() -> bool:
        box[:] = [client.get_job(job_id)]
        return box[0].state == state

    if not wait_until(check, timeout):
        job = box[0]
        raise AssertionError(
            f"job {job_id} is {state_name(job.state)} ({job.error}), not {pb.JobState.Name(state)}"
        )
    return box[0]


def rpc_error(fn: Callable[[], Any]) -> grpc.RpcError:
    try:
        fn()
    except grpc.RpcError as e:
        return e
    raise AssertionError("the call succeeded")


def poolscope_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "poolscope.cli", *args]


def child_env() -> dict[str, str]:
    import poolscope

    env = dict(os.environ)
    root = str(Path(poolscope.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    env.pop("POOLSCOPE_TOKEN", None)
    return env


def start_serve(
    data_dir: Path,
    port: int,
    *extra: str,
    env: dict[str, str] | None = None,
    log: Path | None = None,
) -> subprocess.Popen[bytes]:
    """``poolscope serve`` in a subprocess, once it answers health checks."""
    out = open(log or data_dir.with_suffix(".log"), "ab")  # noqa: SIM115 - owned by the process
    proc = subprocess.Popen(
        poolscope_command(
            "serve", "--address", f"127.0.0.1:{port}", "--data-dir", str(data_dir), *extra
        ),
        stdout=out,
        stderr=subprocess.STDOUT,
        env=env or child_env(),
    )
    out.close()
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    ch = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = health_pb2_grpc.HealthStub(ch)

    def healthy() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"poolscope serve exited with {proc.returncode}")
        try:
            r = stub.Check(health_pb2.HealthCheckRequest(), timeout=0.5)
        except grpc.RpcError:
            return False
        return r.status == health_pb2.HealthCheckResponse.SERVING

    try:
        if not wait_until(healthy, timeout=60, step=0.1):
            proc.kill()
            raise AssertionError("poolscope serve did not become healthy")
    finally:
        ch.close()
    return proc
