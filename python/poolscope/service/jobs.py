"""The scheduler: a bounded priority queue of jobs and one thread per executor slot.

- At most ``max_queue`` jobs wait (uploads in progress count, so a full queue refuses an upload
  before its bytes are sent): ``QueueFull`` carries a retry hint (when the first running scan is
  expected to end).
- Higher ``priority`` runs first; ties run in submission order.
- Each scan has a timeout (the job's, at most the server's); a running scan is cancelled or
  timed out by killing its process (see ``executors``).
- The same content submitted again joins the existing job (``Store.add_job``).
- At start-up, jobs left running by a dead server are queued again (at most ``max_attempts``
  tries) and every queued job is scheduled.
- Progress of a running scan is an estimate: elapsed time over the time expected from the dump's
  size and the scan rate of earlier jobs (the scan reports none itself), capped below 100 until
  the report is in.
"""

from __future__ import annotations

import heapq
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from poolscope.service import aggregate
from poolscope.service.executors import Executor, ScanOutcome, ScanRequest
from poolscope.service.safepath import fd_path
from poolscope.service.spool import Spool
from poolscope.service.store import (
    CANCELLED,
    FAILED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    JobRecord,
    Store,
)

log = logging.getLogger("poolscope.service")


class QueueFull(Exception):
    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ShuttingDown(Exception):
    pass


class JobNotFound(KeyError):
    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "no such job"


class JobStateError(Exception):
    """The job is not in a state that allows the request (FAILED_PRECONDITION)."""


@dataclass
class _Running:
    job: JobRecord
    slot: int
    started: float  # time.monotonic()
    expected_s: float
    cancel: threading.Event = field(default_factory=threading.Event)
    cancel_requested: bool = False


class Scheduler:
    def __init__(
        self,
        store: Store,
        executor: Executor,
        spool: Spool | None = None,
        *,
        max_queue: int = 1000,
        default_timeout_s: float = 3600.0,
        max_attempts: int = 3,
        keep_dumps: bool = False,
        scan_options: dict[str, Any] | None = None,
    ) -> None:
        self.store = store
        self.executor = executor
        self.spool = spool
        self.max_queue = max_queue
        self.default_timeout_s = default_timeout_s
        self.max_attempts = max_attempts
        self.keep_dumps = keep_dumps
        self.scan_options = dict(scan_options or {})
        self._cv = threading.Condition()
        self._heap: list[tuple[int, int, str]] = []
        self._queued: dict[str, JobRecord] = {}
        self._reserved = 0
        self._running: dict[str, _Running] = {}
        self._version = 0
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._rate_bps = 200e6  # scan rate estimate: dump bytes per second
        self._avg_scan_s = 1.0
        #: Open descriptors of SubmitPath jobs' files: the scan reads the file that was checked
        #: and hashed, through its descriptor, never by name again.
        self._fds: dict[str, int] = {}
        #: Reopens a path job's file safely (after a restart, when its descriptor is gone);
        #: returns a descriptor or raises with the reason the job fails.
        self.reopen: Callable[[JobRecord], int] | None = None
        #: Called with an exception when the store or the spool fails to write (disk full, I/O
        #: error) and with None once a write succeeds again (the server's health follows it).
        self.on_storage_error: Callable[[BaseException | None], None] | None = None
        self.store_retry_s = 1.0
        #: Called (under the scheduler's lock: it must not block) after every state change.
        self.on_change: Callable[[], None] | None = None
        if spool is not None and keep_dumps:
            spool.on_full = self.make_room

    # ------------------------------------------------------------------ life cycle
    def start(self) -> None:
        requeued, failed = self.store.requeue_interrupted(self.max_attempts)
        if requeued:
            log.warning("re-queued %d job(s) interrupted by a restart", len(requeued))
        if failed:
            log.warning("failed %d job(s) interrupted too often: %s", len(failed), failed)
        with self._cv:
            for rec in self.store.queued():
                self._push(rec)
        for slot in range(self.executor.slots):
            t = threading.Thread(
                target=self._slot_loop, args=(slot,), name=f"poolscope-slot-{slot}", daemon=True
            )
            t.start()
            self._threads.append(t)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop scheduling; running scans are stopped and their jobs queued again (they run
        at the next start)."""
        with self._cv:
            self._stopping = True
            for run in self._running.values():
                run.cancel.set()
            self._cv.notify_all()
        deadline = time.monotonic() + timeout_s
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self.executor.close()
        with self._cv:
            fds, self._fds = list(self._fds.values()), {}
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass

    # ------------------------------------------------------------------ submission
    @contextmanager
    def reservation(self) -> Iterator[None]:
        """Hold a queue place while a submission is received (raises ``QueueFull``)."""
        with self._cv:
            if self._stopping:
                raise ShuttingDown("the server is shutting down; retry on another instance")
            if len(self._queued) + self._reserved >= self.max_queue:
                raise QueueFull(
                    f"the job queue is full ({len(self._queued)} queued, "
                    f"{self._reserved} uploads in progress, limit {self.max_queue}); retry in "
                    f"{self.retry_after_s():.0f} s or raise the server's --max-queue",
                    self.retry_after_s(),
                )
            self._reserved += 1
        try:
            yield
        finally:
            with self._cv:
                self._reserved -= 1

    def timeout_for(self, requested_s: float) -> float:
        if requested_s and requested_s > 0:
            return min(float(requested_s), self.default_timeout_s)
        return self.default_timeout_s

    def submit(
        self, rec: JobRecord, dedup_only: bool = False, fd: int | None = None
    ) -> tuple[JobRecord | None, bool]:
        """Queue ``rec`` (inside a ``reservation``), or return the live job with the same
        content and ``True``; with ``dedup_only``, only the latter (else ``(None, False)``).
        ``fd`` (a path job's checked file) is kept with a queued job before any slot can see
        it, so the scan never reopens the file nor reads a descriptor closed under it; the
        caller closes it when the job was not queued."""
        rec.timeout_s = self.timeout_for(rec.timeout_s)
        job, deduplicated = self.store.add_job(rec, dedup_only=dedup_only)
        if job is not None and not deduplicated:
            with self._cv:
                if fd is not None:
                    self._fds[job.id] = fd
                self._push(job)
        return job, deduplicated

    def _push(self, rec: JobRecord) -> None:
        self._queued[rec.id] = rec
        heapq.heappush(self._heap, (-rec.priority, rec.seq, rec.id))
        self._changed()

    def _changed(self) -> None:
        self._version += 1
        self._cv.notify_all()
        if self.on_change is not None:
            self.on_change()

    # ------------------------------------------------------------------ running
    def _slot_loop(self, slot: int) -> None:
        """One executor slot. Nothing raised here ends the thread: a store that cannot be
        written (disk full) leaves the job queued and is retried; an outcome that cannot be
        recorded is recorded again until it is (or the server stops: the job is then queued
        again at the next start)."""
        while True:
            try:
                if not self._run_next(slot):
                    return
            except Exception as e:  # noqa: BLE001 - the slot must survive anything
                log.exception("scheduler slot %d: unexpected error", slot)
                self._storage_error(e)
                with self._cv:
                    if self._stopping:
                        return
                    self._cv.wait(self.store_retry_s)

    def _storage_error(self, e: BaseException | None) -> None:
        if self.on_storage_error is not None:
            try:
                self.on_storage_error(e)
            except Exception:  # noqa: BLE001
                log.exception("storage error callback failed")

    def _run_next(self, slot: int) -> bool:
        """Run one job; False when the scheduler stops."""
        with self._cv:
            while not self._stopping and not self._heap:
                self._cv.wait()
            if self._stopping:
                return False
            _, _, job_id = heapq.heappop(self._heap)
            queued = self._queued.pop(job_id, None)
            if queued is None:
                return True  # cancelled while queued
            try:
                job = self.store.mark_running(job_id)
            except Exception as e:  # noqa: BLE001 - e.g. the disk is full: retry later
                log.warning("cannot mark job %s running (%s); retrying", job_id, e)
                self._push(queued)
                self._storage_error(e)
                self._cv.wait(self.store_retry_s)
                return True
            if job is None:
                self._close_fd(job_id)
                return True
            run = _Running(job, slot, time.monotonic(), self._expected_s(job))
            self._running[job_id] = run
            self._changed()
        outcome: ScanOutcome | None = None
        path = job.dump_path or ""
        if job.source == "path" and not getattr(self.executor, "remote", False):
            try:
                path = fd_path(self._path_fd(job))
            except Exception as e:  # noqa: BLE001 - the job fails with the reason
                outcome = ScanOutcome("failed", error=str(e))
        if outcome is None:
            request = ScanRequest(job_id, path, job.timeout_s, dict(self.scan_options))
            try:
                outcome = self.executor.run(slot, request, run.cancel)
            except Exception as e:  # noqa: BLE001 - an executor failure fails the job only
                log.exception("executor failed on job %s", job_id)
                outcome = ScanOutcome("failed", error=f"the executor failed: {e}")
        self._record(run, outcome)
        return True

    def _path_fd(self, job: JobRecord) -> int:
        with self._cv:
            fd = self._fds.get(job.id)
        if fd is not None:
            return fd
        if self.reopen is None:
            raise RuntimeError("the file's descriptor is gone and it cannot be reopened")
        fd = self.reopen(job)
        with self._cv:
            self._fds[job.id] = fd
        return fd

    def _close_fd(self, job_id: str) -> None:
        with self._cv:
            fd = self._fds.pop(job_id, None)
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def _record(self, run: _Running, outcome: ScanOutcome) -> None:
        """Record the outcome, retrying while the store cannot be written."""
        job_id = run.job.id
        while True:
            try:
                self._finish(run, outcome)
                self._storage_error(None)
                return
            except Exception as e:  # noqa: BLE001 - keep the slot alive, keep the outcome
                log.warning("could not record the outcome of job %s (%s); retrying", job_id, e)
                self._storage_error(e)
                with self._cv:
                    if self._stopping:
                        # left running in the store: queued again at the next start
                        self._running.pop(job_id, None)
                        self._changed()
                        self._close_fd(job_id)
                        return
                    self._cv.wait(self.store_retry_s)

    def _finish(self, run: _Running, outcome: ScanOutcome) -> None:
        job = run.job
        if outcome.status == "cancelled" and not run.cancel_requested:
            # stopped by a shutdown: run again at the next start
            self.store.requeue(job.id, "interrupted by a server shutdown; queued again")
            with self._cv:
                self._running.pop(job.id, None)
                self._changed()
            self._close_fd(job.id)
            return
        if outcome.status == "succeeded" and outcome.report_json is not None:
            try:
                doc = json.loads(outcome.report_json)
                if isinstance(doc.get("dump"), dict):
                    # not the server's spool path, nor the descriptor a path job is read through
                    doc["dump"]["path"] = job.file_name
                dg = aggregate.digest(doc)
                self.store.finish(
                    job.id,
                    SUCCEEDED,
                    report_json=json.dumps(doc),
                    digest=dg,
                    dump_time=aggregate.parse_time(dg.get("system_time")),
                    scan_s=outcome.elapsed_s,
                )
                self._learn(job.size_bytes, outcome.elapsed_s)
            except (ValueError, TypeError, KeyError) as e:
                self.store.finish(job.id, FAILED, error=f"the scan's report is unreadable: {e}")
        elif outcome.status == "cancelled":
            self.store.finish(job.id, CANCELLED, error="cancelled while running")
        else:
            self.store.finish(job.id, FAILED, error=outcome.error or "the scan failed")
        with self._cv:
            self._running.pop(job.id, None)
            self._changed()
        log.info(
            "job %s %s in %.2f s%s",
            job.id,
            {"succeeded": "succeeded", "cancelled": "cancelled"}.get(outcome.status, "failed"),
            outcome.elapsed_s,
            f": {outcome.error}" if outcome.error else "",
        )
        self._close_fd(job.id)
        self._dispose_dump(job)

    def _learn(self, size: int, seconds: float) -> None:
        with self._cv:
            self._avg_scan_s = 0.7 * self._avg_scan_s + 0.3 * max(seconds, 0.001)
            if size >= 1 << 20 and seconds > 0.01:
                self._rate_bps = 0.7 * self._rate_bps + 0.3 * (size / seconds)

    def _expected_s(self, job: JobRecord) -> float:
        return 0.1 + job.size_bytes / max(self._rate_bps, 1.0)

    def _dispose_dump(self, job: JobRecord) -> None:
        if self.spool is None or not job.spooled or not job.dump_path or self.keep_dumps:
            return
        if self.store.dump_in_use(job.dump_path, job.id):
            return
        self.spool.remove(job.dump_path)
        self.store.forget_dump(job.id)

    def make_room(self, need: int) -> None:
        """Delete kept dumps of finished jobs, oldest first, until ``need`` bytes fit."""
        if self.spool is None:
            return
        for path in self.spool.evict([Path(p) for p in self.store.kept_dumps()], need):
            self.store.forget_dump_path(str(path))
            log.info("spool quota: deleted the kept dump %s", path.name)

    # ------------------------------------------------------------------ requests
    def get(self, job_id: str) -> JobRecord:
        rec = self.store.get(job_id)
        if rec is None:
            raise JobNotFound(f"no job {job_id!r} (ListJobs shows the jobs this server knows)")
        return rec

    def cancel(self, job_id: str, wait_s: float = 10.0) -> JobRecord:
        with self._cv:
            rec = self.get(job_id)
            if rec.terminal:
                raise JobStateError(
                    f"job {job_id} has already {rec.state.replace('cancelled', 'been cancelled')}"
                    "; there is nothing to cancel"
                )
            if rec.state == QUEUED:
                self._queued.pop(job_id, None)  # its heap entry is skipped when popped
                self.store.finish(job_id, CANCELLED, error="cancelled while queued")
                self._changed()
                queued_cancel = True
            else:
                queued_cancel = False
                run = self._running.get(job_id)
                if run is None:  # running in the store but not here: recorded at once
                    self.store.finish(job_id, CANCELLED, error="cancelled while running")
                    self._changed()
                else:
                    run.cancel_requested = True
                    run.cancel.set()
                    deadline = time.monotonic() + wait_s
                    while job_id in self._running and time.monotonic() < deadline:
                        self._cv.wait(max(0.0, deadline - time.monotonic()))
        if queued_cancel:
            self._close_fd(job_id)
            self._dispose_dump(rec)
        return self.get(job_id)

    def progress(self, rec: JobRecord) -> tuple[float, str]:
        """(percent, stage) of a job."""
        if rec.state == QUEUED:
            return 0.0, "queued"
        if rec.state == RUNNING:
            with self._cv:
                run = self._running.get(rec.id)
            if run is None:
                return 0.0, "scanning"
            frac = (time.monotonic() - run.started) / max(run.expected_s, 0.05)
            pct = 95.0 * frac if frac < 1 else 95.0 + 4.0 * (1 - 1 / frac)
            return round(min(pct, 99.0), 1), "scanning"
        if rec.state == SUCCEEDED:
            return 100.0, "done"
        return (100.0 if rec.state == FAILED else 0.0), rec.state

    def queue_position(self, job_id: str) -> int:
        with self._cv:
            me = self._queued.get(job_id)
            if me is None:
                return 0
            key = (-me.priority, me.seq)
            return 1 + sum(1 for r in self._queued.values() if (-r.priority, r.seq) < key)

    def retry_after_s(self) -> float:
        now = time.monotonic()
        with self._cv:
            left = [max(0.0, r.expected_s - (now - r.started)) for r in self._running.values()]
            base = min(left) if left else self._avg_scan_s
        return max(1.0, round(base + 0.5, 1))

    def wait_for_change(self, version: int, timeout_s: float) -> int:
        """Block until the scheduler's state changes from ``version`` (or the timeout)."""
        with self._cv:
            if self._version == version:
                self._cv.wait(timeout_s)
            return self._version

    @property
    def version(self) -> int:
        return self._version

    def stats(self) -> dict[str, Any]:
        with self._cv:
            return {
                "queued": len(self._queued),
                "running": len(self._running),
                "reserved": self._reserved,
                "slots": self.executor.slots,
                "executor": self.executor.name,
            }
