"""Persistence: jobs, reports and per-report digests (what ``Aggregate`` sums) in SQLite, in the
service's data directory (``<data>/poolscope.db``, WAL journal, synchronous=FULL: a job is on
disk before its submission is answered, and a kill -9 loses nothing that was answered).

Job states: ``queued`` → ``running`` → ``succeeded`` | ``failed`` | ``cancelled``. A job left
``running`` by a dead server is put back to ``queued`` at start-up (``requeue_interrupted``).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zstandard

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = (
    "queued",
    "running",
    "succeeded",
    "failed",
    "cancelled",
)
STATES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED})
LIVE = (QUEUED, RUNNING, SUCCEEDED)  # a new submission of the same content joins these

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL,
    source TEXT NOT NULL,
    file_name TEXT NOT NULL,
    host_id TEXT NOT NULL DEFAULT '',
    labels TEXT NOT NULL DEFAULT '{}',
    sha256 TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    dump_path TEXT,
    spooled INTEGER NOT NULL DEFAULT 0,
    priority INTEGER NOT NULL DEFAULT 0,
    timeout_s REAL NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    submissions INTEGER NOT NULL DEFAULT 1,
    error TEXT NOT NULL DEFAULT '',
    dump_time REAL,
    scan_s REAL
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, seq);
CREATE INDEX IF NOT EXISTS jobs_sha ON jobs (sha256, state);
CREATE INDEX IF NOT EXISTS jobs_host ON jobs (host_id, seq);
CREATE TABLE IF NOT EXISTS job_labels (
    job_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (job_id, key)
);
CREATE INDEX IF NOT EXISTS job_labels_kv ON job_labels (key, value);
CREATE TABLE IF NOT EXISTS reports (
    job_id TEXT PRIMARY KEY,
    report BLOB NOT NULL,
    digest TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS path_hashes (
    path TEXT PRIMARY KEY,
    dev INTEGER NOT NULL,
    ino INTEGER NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL
);
"""


@dataclass
class JobRecord:
    id: str
    state: str
    source: str  # upload | path
    file_name: str
    sha256: str
    size_bytes: int
    timeout_s: float
    host_id: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    dump_path: str | None = None
    spooled: bool = False
    priority: int = 0
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    attempts: int = 0
    submissions: int = 1
    error: str = ""
    dump_time: float | None = None
    scan_s: float | None = None
    seq: int = 0

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL


@dataclass
class JobFilter:
    states: list[str] = field(default_factory=list)
    host_id: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    created_after: float | None = None
    created_before: float | None = None

    def where(self) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        args: list[Any] = []
        if self.states:
            clauses.append(f"state IN ({', '.join('?' * len(self.states))})")
            args += self.states
        if self.host_id:
            clauses.append("host_id = ?")
            args.append(self.host_id)
        for k, v in sorted(self.labels.items()):
            clauses.append(
                "EXISTS (SELECT 1 FROM job_labels l WHERE l.job_id = jobs.id AND l.key = ? "
                "AND l.value = ?)"
            )
            args += [k, v]
        if self.created_after is not None:
            clauses.append("created_at >= ?")
            args.append(self.created_after)
        if self.created_before is not None:
            clauses.append("created_at < ?")
            args.append(self.created_before)
        return (" AND ".join(clauses) or "1"), args

    def key(self) -> str:
        """A stable text of the filter (page tokens are bound to it)."""
        return json.dumps(
            [
                sorted(self.states),
                self.host_id,
                sorted(self.labels.items()),
                self.created_after,
                self.created_before,
            ]
        )


_COLUMNS = (
    "seq, id, state, source, file_name, host_id, labels, sha256, size_bytes, dump_path, spooled, "
    "priority, timeout_s, created_at, started_at, finished_at, attempts, submissions, error, "
    "dump_time, scan_s"
)


def _record(row: sqlite3.Row) -> JobRecord:
    d = dict(row)
    d["labels"] = json.loads(d["labels"])
    d["spooled"] = bool(d["spooled"])
    return JobRecord(**d)


def new_job_id() -> str:
    return uuid.uuid4().hex[:16]


class Store:
    """Thread-safe (one connection, one lock)."""

    def __init__(self, data_dir: str | Path) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.data_dir / "poolscope.db"
        self._lock = threading.RLock()
        self._db = sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None, timeout=30
        )
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)
        with self._tx() as db:
            row = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if row is None:
                db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            elif int(row["value"]) > SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self.path} was written by a newer poolscope (schema {row['value']})"
                )
        self._zc = zstandard.ZstdCompressor(level=3)
        self._zd = zstandard.ZstdDecompressor()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction. A failed statement or COMMIT (``SQLITE_FULL`` on a full disk,
        an I/O error) rolls the transaction back and raises; the connection stays usable, so
        the next transaction succeeds once there is room again."""
        with self._lock:
            if self._db.in_transaction:  # left open by an earlier failure: never build on it
                self._rollback()
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise

    def _rollback(self) -> None:
        try:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # SQLite may have rolled back itself (SQLITE_FULL); nothing is left open

    def writable(self) -> bool:
        """Whether a write transaction succeeds now (the health check's probe)."""
        try:
            with self._tx() as db:
                db.execute("INSERT OR REPLACE INTO meta VALUES ('probe', ?)", (str(time.time()),))
        except sqlite3.Error:
            return False
        return True

    # ------------------------------------------------------------------ jobs
    def find_live(self, sha256: str) -> JobRecord | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE sha256 = ? AND state IN (?, ?, ?) "
                "ORDER BY seq DESC LIMIT 1",
                (sha256, *LIVE),
            ).fetchone()
        return None if row is None else _record(row)

    def add_job(self, rec: JobRecord, dedup_only: bool = False) -> tuple[JobRecord | None, bool]:
        """Insert ``rec`` as queued, unless a live job has the same content: then count one
        more submission on that job and return it with ``True`` (deduplicated). With
        ``dedup_only``, insert nothing when there is no such job (returns ``None``)."""
        with self._tx() as db:
            row = db.execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE sha256 = ? AND state IN (?, ?, ?) "
                "ORDER BY seq DESC LIMIT 1",
                (rec.sha256, *LIVE),
            ).fetchone()
            if row is not None:
                db.execute("UPDATE jobs SET submissions = submissions + 1 WHERE seq = ?", (row[0],))
                existing = _record(row)
                existing.submissions += 1
                return existing, True
            if dedup_only:
                return None, False
            rec.state = QUEUED
            rec.created_at = rec.created_at or time.time()
            cur = db.execute(
                "INSERT INTO jobs (id, state, source, file_name, host_id, labels, sha256, "
                "size_bytes, dump_path, spooled, priority, timeout_s, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    rec.id,
                    rec.state,
                    rec.source,
                    rec.file_name,
                    rec.host_id,
                    json.dumps(rec.labels, sort_keys=True),
                    rec.sha256,
                    rec.size_bytes,
                    rec.dump_path,
                    int(rec.spooled),
                    rec.priority,
                    rec.timeout_s,
                    rec.created_at,
                ),
            )
            rec.seq = int(cur.lastrowid or 0)
            db.executemany(
                "INSERT INTO job_labels (job_id, key, value) VALUES (?, ?, ?)",
                [(rec.id, k, v) for k, v in rec.labels.items()],
            )
        return rec, False

    def get(self, job_id: str) -> JobRecord | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,)
            ).fetchone()
        return None if row is None else _record(row)

    def list_jobs(
        self, flt: JobFilter, *, before_seq: int | None = None, limit: int = 50
    ) -> tuple[list[JobRecord], int]:
        """Jobs newest first (``seq < before_seq`` for the next page) and the total count."""
        where, args = flt.where()
        with self._lock:
            total = int(
                self._db.execute(f"SELECT COUNT(*) FROM jobs WHERE {where}", args).fetchone()[0]
            )
            page_where, page_args = where, list(args)
            if before_seq is not None:
                page_where += " AND seq < ?"
                page_args.append(before_seq)
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE {page_where} ORDER BY seq DESC LIMIT ?",
                [*page_args, limit],
            ).fetchall()
        return [_record(r) for r in rows], total

    def queued(self) -> list[JobRecord]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE state = ? ORDER BY seq", (QUEUED,)
            ).fetchall()
        return [_record(r) for r in rows]

    def mark_running(self, job_id: str) -> JobRecord | None:
        """queued → running (attempts + 1); None when the job is no longer queued."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE jobs SET state = ?, started_at = ?, attempts = attempts + 1, error = '' "
                "WHERE id = ? AND state = ?",
                (RUNNING, time.time(), job_id, QUEUED),
            )
            if cur.rowcount != 1:
                return None
        return self.get(job_id)

    def requeue(self, job_id: str, note: str = "") -> None:
        """running → queued (the scan was interrupted, e.g. by a server shutdown)."""
        with self._tx() as db:
            db.execute(
                "UPDATE jobs SET state = ?, started_at = NULL, error = ? "
                "WHERE id = ? AND state = ?",
                (QUEUED, note, job_id, RUNNING),
            )

    def requeue_interrupted(self, max_attempts: int) -> tuple[list[str], list[str]]:
        """At start-up: jobs left running by a dead server go back to the queue, or fail when
        they were already tried ``max_attempts`` times. Returns (requeued ids, failed ids)."""
        with self._tx() as db:
            rows = db.execute(
                "SELECT id, attempts FROM jobs WHERE state = ? ORDER BY seq", (RUNNING,)
            ).fetchall()
            requeued, failed = [], []
            for row in rows:
                if row["attempts"] >= max_attempts:
                    db.execute(
                        "UPDATE jobs SET state = ?, finished_at = ?, error = ? WHERE id = ?",
                        (
                            FAILED,
                            time.time(),
                            f"the server stopped during each of the {row['attempts']} attempts "
                            "to scan this dump; not retried again",
                            row["id"],
                        ),
                    )
                    failed.append(row["id"])
                else:
                    db.execute(
                        "UPDATE jobs SET state = ?, started_at = NULL, error = ? WHERE id = ?",
                        (QUEUED, "interrupted by a server restart; queued again", row["id"]),
                    )
                    requeued.append(row["id"])
        return requeued, failed

    def finish(
        self,
        job_id: str,
        state: str,
        *,
        error: str = "",
        report_json: str | None = None,
        digest: dict[str, Any] | None = None,
        dump_time: float | None = None,
        scan_s: float | None = None,
        from_states: tuple[str, ...] = (QUEUED, RUNNING),
    ) -> bool:
        """Move a job to a terminal state (with its report when it succeeded), atomically."""
        assert state in TERMINAL
        with self._tx() as db:
            cur = db.execute(
                f"UPDATE jobs SET state = ?, finished_at = ?, error = ?, dump_time = ?, "
                f"scan_s = ? WHERE id = ? AND state IN ({', '.join('?' * len(from_states))})",
                (state, time.time(), error, dump_time, scan_s, job_id, *from_states),
            )
            if cur.rowcount != 1:
                return False
            if report_json is not None:
                db.execute(
                    "INSERT OR REPLACE INTO reports (job_id, report, digest) VALUES (?, ?, ?)",
                    (job_id, self._zc.compress(report_json.encode()), json.dumps(digest or {})),
                )
        return True

    def forget_dump(self, job_id: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE jobs SET dump_path = NULL WHERE id = ?", (job_id,))

    def dump_in_use(self, path: str, except_job: str) -> bool:
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM jobs WHERE dump_path = ? AND id != ? AND state IN (?, ?) LIMIT 1",
                (path, except_job, QUEUED, RUNNING),
            ).fetchone()
        return row is not None

    def kept_dumps(self) -> list[str]:
        """Spooled dumps of finished jobs, oldest first (what a full spool evicts)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT dump_path FROM jobs WHERE spooled = 1 AND dump_path IS NOT NULL AND "
                "state IN (?, ?, ?) AND dump_path NOT IN (SELECT dump_path FROM jobs WHERE "
                "state IN (?, ?) AND dump_path IS NOT NULL) ORDER BY finished_at",
                (*sorted(TERMINAL), QUEUED, RUNNING),
            ).fetchall()
        return list(dict.fromkeys(r[0] for r in rows))

    def forget_dump_path(self, path: str) -> None:
        """The spooled file ``path`` was deleted: no job reads it any more."""
        with self._tx() as db:
            db.execute("UPDATE jobs SET dump_path = NULL WHERE dump_path = ?", (path,))

    # ------------------------------------------------------------------ reports
    def report_json(self, job_id: str) -> str | None:
        with self._lock:
            row = self._db.execute(
                "SELECT report FROM reports WHERE job_id = ?", (job_id,)
            ).fetchone()
        return None if row is None else self._zd.decompress(row[0]).decode()

    def digests(self, flt: JobFilter) -> list[tuple[JobRecord, dict[str, Any]]]:
        """Finished jobs matching ``flt`` with their report digests, oldest first."""
        where, args = flt.where()
        with self._lock:
            rows = self._db.execute(
                f"SELECT {', '.join('jobs.' + c.strip() for c in _COLUMNS.split(','))}, "
                f"reports.digest FROM jobs JOIN reports ON reports.job_id = jobs.id "
                f"WHERE jobs.state = ? AND ({where}) ORDER BY jobs.seq",
                [SUCCEEDED, *args],
            ).fetchall()
        out = []
        for row in rows:
            d = dict(row)
            digest = json.loads(d.pop("digest"))
            out.append((_record_from_dict(d), digest))
        return out

    # ------------------------------------------------------------------ path hashes
    def path_hash(self, path: str, dev: int, ino: int, size: int, mtime_ns: int) -> str | None:
        with self._lock:
            row = self._db.execute(
                "SELECT sha256 FROM path_hashes WHERE path = ? AND dev = ? AND ino = ? AND "
                "size = ? AND mtime_ns = ?",
                (path, dev, ino, size, mtime_ns),
            ).fetchone()
        return None if row is None else str(row[0])

    def remember_path_hash(
        self, path: str, dev: int, ino: int, size: int, mtime_ns: int, sha256: str
    ) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO path_hashes VALUES (?, ?, ?, ?, ?, ?)",
                (path, dev, ino, size, mtime_ns, sha256),
            )

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        return {r[0]: int(r[1]) for r in rows}


def _record_from_dict(d: dict[str, Any]) -> JobRecord:
    d["labels"] = json.loads(d["labels"])
    d["spooled"] = bool(d["spooled"])
    return JobRecord(**d)
