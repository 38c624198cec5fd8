"""Where scans run. Every scan runs ``poolscope.scan`` in a child process
(``poolscope.service.scanproc``) so that cancelling or timing out a running scan kills it at once
and a dump that crashes the scanner fails only its own job.

``LocalExecutor`` (the default) keeps one long-lived scan process per slot on this machine and
replaces a process after it is killed or dies. ``DaskExecutor`` submits each scan as a task to a
Dask distributed cluster (``--dask tcp://scheduler:8786``, or ``--dask local`` for a
``LocalCluster`` of worker processes): the task starts a scan process on the worker, which reads
the dump from its path, so the spool (or the SubmitPath roots) must be shared storage mounted at
the same path on every worker. A cancelled Dask scan is stopped through a Dask ``Event`` that the
task polls.

An executor has ``slots`` (scans it runs at once) and a blocking ``run(slot, request, cancel)``
that returns a ``ScanOutcome``; the scheduler calls it from one thread per slot.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

log = logging.getLogger("poolscope.service")


@dataclass(frozen=True)
class ScanRequest:
    job_id: str
    path: str
    timeout_s: float
    options: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of ``poolscope.scan`` (e.g. ``max_decompressed``, ``spool_dir``)."""


@dataclass
class ScanOutcome:
    status: str  # succeeded | failed | cancelled | timeout
    report_json: str | None = None
    error: str = ""
    elapsed_s: float = 0.0
    where: str = ""


class Executor(Protocol):
    name: str
    slots: int

    def run(self, slot: int, request: ScanRequest, cancel: threading.Event) -> ScanOutcome: ...

    def close(self) -> None: ...


def _child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The child imports the same poolscope as this process, installed or not."""
    import poolscope

    env = dict(os.environ)
    env.update(extra or {})
    root = str(Path(poolscope.__file__).resolve().parents[1])
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if root not in parts:
        env["PYTHONPATH"] = os.pathsep.join([root, *parts])
    return env


def _scanproc_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "poolscope.service.scanproc", *args]


def _died(proc: subprocess.Popen[bytes]) -> str:
    try:
        rc = proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        return "the scan process stopped answering"
    if rc < 0:
        try:
            how = f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            how = f"killed by signal {-rc}"
    else:
        how = f"exited with status {rc}"
    hint = " (out of memory?)" if rc == -signal.SIGKILL else ""
    return (
        f"the scan process {how}{hint} while scanning: the dump may be malformed or hostile, "
        "or it triggered a scanner bug; the service itself is unaffected"
    )


def read_response(
    stream: IO[bytes],
    proc: subprocess.Popen[bytes],
    cancelled: Any,
    deadline: float,
    timeout_s: float,
    poll_s: float = 0.05,
) -> ScanOutcome:
    """Read one scanproc response, giving up when ``cancelled()`` turns true or at
    ``deadline`` (``time.monotonic()``). The caller kills the process on cancel/timeout."""
    fd = stream.fileno()
    t0 = time.monotonic()
    buf = bytearray()
    header: dict[str, Any] | None = None
    while True:
        if cancelled():
            return ScanOutcome("cancelled", error="cancelled by request", elapsed_s=_since(t0))
        now = time.monotonic()
        if now >= deadline:
            return ScanOutcome(
                "timeout",
                error=f"the scan did not finish within its timeout of {timeout_s:g} s",
                elapsed_s=_since(t0),
            )
        ready, _, _ = select.select([fd], [], [], min(poll_s, deadline - now))
        if not ready:
            continue
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return ScanOutcome("failed", error=_died(proc), elapsed_s=_since(t0))
        buf += chunk
        if header is None:
            nl = buf.find(b"\n")
            if nl < 0:
                continue
            header = json.loads(bytes(buf[:nl]))
            del buf[: nl + 1]
            if not header.get("ok"):
                return ScanOutcome(
                    "failed", error=str(header.get("error", "scan failed")), elapsed_s=_since(t0)
                )
        length = int(header["length"])
        if len(buf) >= length:
            return ScanOutcome(
                "succeeded",
                report_json=bytes(buf[:length]).decode("utf-8"),
                elapsed_s=float(header.get("elapsed_s", _since(t0))),
            )


def _since(t0: float) -> float:
    return round(time.monotonic() - t0, 6)


class _ScanProcess:
    """A long-lived ``scanproc --serve`` child."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            _scanproc_command("--serve"),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=_child_env(env),
            start_new_session=True,  # a terminal's Ctrl-C goes to the server, not its scans
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for s in (self.proc.stdin, self.proc.stdout):
            if s is not None:
                s.close()


class LocalExecutor:
    """Scans in ``slots`` long-lived child processes on this machine (``env``: more environment
    variables for them)."""

    def __init__(self, slots: int | None = None, env: dict[str, str] | None = None) -> None:
        self.slots = max(1, slots or os.cpu_count() or 1)
        self.name = "local"
        self.env = dict(env or {})
        self._lock = threading.Lock()
        self._closed = False
        # started now: the first scans need not wait for an interpreter to start
        self._procs: list[_ScanProcess | None] = [_ScanProcess(self.env) for _ in range(self.slots)]

    def _process(self, slot: int) -> _ScanProcess:
        with self._lock:
            if self._closed:
                raise RuntimeError("the executor is closed")
            p = self._procs[slot]
            if p is None or not p.alive():
                if p is not None:
                    p.kill()
                p = self._procs[slot] = _ScanProcess(self.env)
            return p

    def run(self, slot: int, request: ScanRequest, cancel: threading.Event) -> ScanOutcome:
        line = json.dumps({"path": request.path, "options": request.options}).encode() + b"\n"
        deadline = time.monotonic() + request.timeout_s
        for attempt in range(2):
            p = self._process(slot)
            try:
                assert p.proc.stdin is not None
                p.proc.stdin.write(line)
                p.proc.stdin.flush()
                break
            except (BrokenPipeError, OSError):
                self._discard(slot, p)
                if attempt:
                    return ScanOutcome("failed", error="could not start a scan process")
        assert p.proc.stdout is not None
        out = read_response(p.proc.stdout, p.proc, cancel.is_set, deadline, request.timeout_s)
        out.where = f"local pid {p.proc.pid}"
        if out.status != "succeeded" and not (out.status == "failed" and p.alive()):
            self._discard(slot, p)  # killed on cancel/timeout, or dead
        return out

    def _discard(self, slot: int, p: _ScanProcess) -> None:
        p.kill()
        with self._lock:
            if self._procs[slot] is p:
                self._procs[slot] = None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            procs, self._procs = self._procs, [None] * self.slots
        for p in procs:
            if p is not None:
                p.kill()


# ---------------------------------------------------------------------------------- Dask


def scan_task(
    path: str, timeout_s: float, options: dict[str, Any], cancel_event: str | None = None
) -> dict[str, Any]:
    """A Dask task: scan ``path`` in a child process of the worker; stop when the Dask
    ``Event`` named ``cancel_event`` is set. Returns a ``ScanOutcome`` as a dict."""
    event = None
    where = "dask worker"
    try:
        from distributed import Event, get_worker

        where = f"dask worker {get_worker().address}"
        if cancel_event:
            event = Event(cancel_event)
    except (ImportError, ValueError):
        pass
    checked = [0.0, False]

    def cancelled() -> bool:
        if event is None:
            return False
        now = time.monotonic()
        if now - float(checked[0]) >= 0.2:
            checked[0], checked[1] = now, bool(event.is_set())
        return bool(checked[1])

    proc = subprocess.Popen(
        _scanproc_command(path, "--options", json.dumps(options)),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        env=_child_env(),
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        out = read_response(proc.stdout, proc, cancelled, deadline, timeout_s)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    out.where = where
    return asdict(out)


class DaskExecutor:
    """Scans as tasks on a Dask distributed cluster: ``address`` is a scheduler address
    (``tcp://host:8786``) or ``"local"`` to start a ``LocalCluster`` of ``workers`` worker
    processes (one thread each)."""

    #: Scans run on other machines: a SubmitPath job's descriptor cannot be handed over, so
    #: the worker opens the path by name (see README, "Scan service").
    remote = True

    def __init__(self, address: str, workers: int | None = None, slots: int | None = None) -> None:
        from distributed import Client, LocalCluster

        self.cluster: Any = None
        if address == "local":
            self.cluster = LocalCluster(
                n_workers=workers or os.cpu_count() or 1,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                silence_logs=logging.ERROR,
            )
            self.client = Client(self.cluster, set_as_default=False)
        else:
            self.client = Client(address, timeout=30, set_as_default=False)
        threads = sum(self.client.nthreads().values())
        self.slots = max(1, slots or threads or 1)
        self.name = f"dask {self.client.scheduler.address}"

    def run(self, slot: int, request: ScanRequest, cancel: threading.Event) -> ScanOutcome:
        from distributed import Event

        t0 = time.monotonic()
        event_name = f"poolscope-cancel-{request.job_id}-{uuid.uuid4().hex[:8]}"
        future = self.client.submit(
            scan_task,
            request.path,
            request.timeout_s,
            request.options,
            event_name,
            key=f"poolscope-scan-{request.job_id}-{uuid.uuid4().hex[:8]}",
            pure=False,
        )
        # The task enforces the timeout once it runs; this is the safety net (queueing, a lost
        # worker).
        deadline = t0 + request.timeout_s + 60
        try:
            while True:
                # Poll done() rather than result(timeout=...): distributed's timed result() can
                # raise UnboundLocalError when the timeout races the result (seen under load).
                if future.done():
                    try:
                        return ScanOutcome(**future.result())
                    except Exception as e:  # noqa: BLE001 - whatever the cluster raises fails it
                        return ScanOutcome(
                            "failed",
                            error=f"the Dask task failed: {type(e).__name__}: {e}",
                            elapsed_s=_since(t0),
                            where=self.name,
                        )
                time.sleep(0.05)
                if cancel.is_set() or time.monotonic() >= deadline:
                    Event(event_name, client=self.client).set()
                    future.cancel()
                    if cancel.is_set():
                        return ScanOutcome(
                            "cancelled", error="cancelled by request", elapsed_s=_since(t0)
                        )
                    return ScanOutcome(
                        "timeout",
                        error=f"the scan did not finish within its timeout of "
                        f"{request.timeout_s:g} s (Dask)",
                        elapsed_s=_since(t0),
                    )
        finally:
            future.release()

    def close(self) -> None:
        try:
            self.client.close()
        finally:
            if self.cluster is not None:
                self.cluster.close()


def make_executor(dask: str | None = None, workers: int | None = None) -> Executor:
    """``LocalExecutor(workers)``, or a ``DaskExecutor`` when ``dask`` is an address or
    ``"local"`` (then ``workers`` is the LocalCluster's worker count)."""
    if dask:
        return DaskExecutor(dask, workers=workers)
    return LocalExecutor(workers)
