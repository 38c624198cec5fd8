"""``poolscope batch``: scan many dumps (directories, ``.tar``, ``.tar.zst``, ``.zip``, single
``.dmp`` / ``.dmp.zst`` files) in parallel, locally or on Dask, with one JSON line per dump and
the same aggregation as the service's ``Aggregate``.

Archive members are extracted one at a time into a scratch directory (sparse: zero blocks are
holes) while earlier ones are scanned; at most ``2 x workers`` extracted dumps wait, so a large
archive needs little scratch space. A dump that cannot be read, extracted or scanned yields an
``"status": "error"`` line and is skipped.

A JSON line: ``{"source", "status": "ok", "host", "size", "elapsed_s", "report"}`` or
``{"source", "status": "error", "host", "size", "error"}``; ``source`` is the file's path, or
``ARCHIVE!MEMBER`` for an archive member.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import stat
import tarfile
import tempfile
import threading
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

import zstandard

from poolscope.service import aggregate
from poolscope.service.executors import Executor, ScanRequest, make_executor
from poolscope.service.spool import all_zero

DUMP_SUFFIXES = (".dmp", ".dmp.zst")
ARCHIVE_SUFFIXES = (".tar", ".tar.zst", ".tzst", ".zip")
#: Archives are the user's own files: accept zstd windows up to 2 GiB (zstd --long=31).
ARCHIVE_MAX_WINDOW = 1 << 31


def is_dump(name: str) -> bool:
    return name.lower().endswith(DUMP_SUFFIXES)


def is_archive(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


@dataclass
class Work:
    source: str
    host: str
    size: int  # stored bytes (compressed for .dmp.zst)
    path: Path | None = None  # the dump to scan
    temporary: bool = False  # an extracted member: delete after the scan
    error: str = ""  # could not be prepared: reported, not scanned
    index: int = 0


@dataclass
class Totals:
    files_found: int = 0
    bytes_found: int = 0
    files_done: int = 0
    bytes_done: int = 0
    failed: int = 0
    discovering: bool = True


@dataclass
class BatchResult:
    lines: int = 0
    failed: int = 0
    aggregate: dict[str, Any] = field(default_factory=dict)


def not_regular(path: Path) -> str:
    """Why ``path`` cannot be read as a dump or an archive without blocking ("" when it is a
    regular file): FIFOs, devices, sockets and directories are refused before any open."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        return f"cannot read {path}: {e.strerror or e}"
    if stat.S_ISREG(mode):
        return ""
    kind = (
        "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
        else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
        else "a directory" if stat.S_ISDIR(mode) else "a special file"
    )  # fmt: skip
    return f"not a regular file: {path} is {kind}"


def _host_of(parts: tuple[str, ...], host_from: str) -> str:
    if host_from == "none" or len(parts) < 2:
        return ""
    return parts[-2]


def _copy_sparse(src: IO[bytes], dst: Path, limit: int, block: int = 1 << 20) -> int:
    """Copy a stream into ``dst`` leaving zero blocks as holes; at most ``limit`` bytes."""
    n = 0
    hole = 0
    with open(dst, "wb") as out:
        while True:
            data = src.read(block)
            if not data:
                break
            n += len(data)
            if n > limit:
                raise ValueError(f"decompresses to more than {limit} bytes (--max-decompressed)")
            if all_zero(data):
                hole += len(data)
                continue
            if hole:
                out.seek(hole, os.SEEK_CUR)
                hole = 0
            out.write(data)
        if hole:
            out.seek(hole, os.SEEK_CUR)
        out.truncate(n)
    return n


class Discovery:
    """Walks the inputs and yields ``Work`` (extracting archive members into ``scratch``)."""

    def __init__(
        self, inputs: list[str], scratch: Path, host_from: str, max_decompressed: int
    ) -> None:
        self.inputs = inputs
        self.scratch = scratch
        self.host_from = host_from
        self.max_decompressed = max_decompressed
        self._n = 0

    def _tmp(self, name: str) -> Path:
        self._n += 1
        return self.scratch / f"{self._n:06d}-{Path(name).name}"

    def survey(self) -> tuple[int, int]:
        """Files and bytes known without reading compressed archives (progress totals)."""
        files = size = 0
        for w in self._plain_files():
            files += 1
            size += w.size
        for path in self._archives():
            low = path.name.lower()
            if not_regular(path):
                files += 1
                continue
            try:
                if low.endswith(".zip"):
                    with zipfile.ZipFile(path) as zf:
                        for info in zf.infolist():
                            if not info.is_dir() and is_dump(info.filename):
                                files += 1
                                size += info.file_size
                elif low.endswith(".tar"):
                    with tarfile.open(path, "r:") as tf:
                        for m in tf.getmembers():
                            if m.isfile() and is_dump(m.name):
                                files += 1
                                size += m.size
            except (OSError, tarfile.TarError, zipfile.BadZipFile):
                files += 1
        return files, size

    def _walk(self) -> Iterator[tuple[Path, tuple[str, ...]]]:
        for raw in self.inputs:
            p = Path(raw)
            if p.is_dir():
                for dirpath, dirnames, filenames in os.walk(p):
                    dirnames.sort()
                    for name in sorted(filenames):
                        f = Path(dirpath) / name
                        yield f, f.relative_to(p.parent).parts
            else:
                yield p, (p.parent.name, p.name) if p.parent.name else (p.name,)

    def _plain_files(self) -> Iterator[Work]:
        for f, parts in self._walk():
            if is_dump(f.name) and not is_archive(f.name):
                try:
                    size = f.stat().st_size
                except OSError:
                    size = 0
                yield Work(str(f), _host_of(parts, self.host_from), size, path=f)

    def _archives(self) -> Iterator[Path]:
        for f, _ in self._walk():
            if is_archive(f.name):
                yield f

    def __iter__(self) -> Iterator[Work]:
        for f, parts in self._walk():
            name = f.name
            if (is_archive(name) or is_dump(name)) and (why := not_regular(f)):
                yield Work(str(f), "", 0, error=why)
            elif is_archive(name):
                yield from self._archive(f)
            elif is_dump(name):
                try:
                    size = f.stat().st_size
                except OSError as e:
                    yield Work(str(f), "", 0, error=f"cannot read: {e.strerror or e}")
                    continue
                yield Work(str(f), _host_of(parts, self.host_from), size, path=f)
            elif any(str(f) == str(Path(i)) for i in self.inputs):
                yield Work(
                    str(f),
                    "",
                    0,
                    error="not a dump or an archive (.dmp, .dmp.zst, .tar, .tar.zst, .zip)"
                    if f.exists()
                    else "no such file",
                )

    def _member(self, archive: Path, member: str, size: int, stream: IO[bytes]) -> Work:
        source = f"{archive}!{member}"
        host = _host_of(PurePosixPath(member).parts, self.host_from)
        tmp = self._tmp(member)
        try:
            _copy_sparse(stream, tmp, self.max_decompressed)
        except (OSError, ValueError, EOFError, tarfile.TarError, zipfile.BadZipFile) as e:
            tmp.unlink(missing_ok=True)
            return Work(source, host, size, error=f"cannot extract: {e}")
        except zstandard.ZstdError as e:
            tmp.unlink(missing_ok=True)
            return Work(source, host, size, error=f"cannot extract: zstd: {e}")
        return Work(source, host, size, path=tmp, temporary=True)

    def _archive(self, path: Path) -> Iterator[Work]:
        low = path.name.lower()
        try:
            if low.endswith(".zip"):
                with zipfile.ZipFile(path) as zf:
                    for info in zf.infolist():
                        if info.is_dir() or not is_dump(info.filename):
                            continue
                        with zf.open(info) as s:
                            yield self._member(path, info.filename, info.file_size, s)
                return
            with self._open_tar(path) as tf:
                for m in tf:
                    if not m.isfile() or not is_dump(m.name):
                        continue
                    if m.size > self.max_decompressed:
                        yield Work(
                            f"{path}!{m.name}", "", m.size, error="larger than --max-decompressed"
                        )
                        continue
                    member = tf.extractfile(m)
                    if member is None:
                        continue
                    yield self._member(path, m.name, m.size, member)
        except (OSError, EOFError, tarfile.TarError, zipfile.BadZipFile) as e:
            yield Work(str(path), "", 0, error=f"cannot read the archive: {e}")
        except zstandard.ZstdError as e:
            yield Work(str(path), "", 0, error=f"cannot read the archive: zstd: {e}")

    @contextmanager
    def _open_tar(self, path: Path) -> Iterator[tarfile.TarFile]:
        low = path.name.lower()
        if low.endswith((".tar.zst", ".tzst")):
            with open(path, "rb") as raw:
                dctx = zstandard.ZstdDecompressor(max_window_size=ARCHIVE_MAX_WINDOW)
                with (
                    dctx.stream_reader(raw, read_across_frames=True) as z,
                    tarfile.open(fileobj=z, mode="r|") as tf,
                ):
                    yield tf
        else:
            with tarfile.open(path, "r:") as tf:
                yield tf


def run_batch(
    inputs: list[str],
    *,
    executor: Executor | None = None,
    workers: int | None = None,
    dask: str | None = None,
    emit: Callable[[dict[str, Any]], None],
    timeout_s: float = 3600.0,
    host_from: str = "dir",
    max_decompressed: int = 64 << 30,
    scratch_dir: str | os.PathLike[str] | None = None,
    top: int = 10,
    on_progress: Callable[[Totals], None] | None = None,
    symbol_path: str | None = None,
    symbol_timeout: float = 30.0,
) -> BatchResult:
    """Scan every dump of ``inputs``; ``emit`` gets one JSON-ready dict per dump."""
    own_executor = executor is None
    ex = executor or make_executor(dask, workers)
    scratch = Path(tempfile.mkdtemp(prefix="poolscope-batch-", dir=scratch_dir))
    totals = Totals()
    lock = threading.Lock()
    work: queue.Queue[Work | None] = queue.Queue(maxsize=2 * ex.slots)
    items: list[aggregate.Item] = []
    result = BatchResult()
    disc = Discovery(inputs, scratch, host_from, max_decompressed)
    options: dict[str, Any] = {"max_decompressed": max_decompressed}
    if symbol_path:  # one cache for every dump; one download per GUID across the workers
        options.update(symbol_path=symbol_path, symbol_timeout=symbol_timeout)
    totals.files_found, totals.bytes_found = disc.survey()
    stop = threading.Event()

    def progress() -> None:
        if on_progress is not None:
            on_progress(totals)

    def produce() -> None:
        found_files = found_bytes = 0
        try:
            for i, w in enumerate(disc):
                if stop.is_set():
                    break
                w.index = i
                found_files += 1
                found_bytes += w.size
                with lock:
                    totals.files_found = max(totals.files_found, found_files)
                    totals.bytes_found = max(totals.bytes_found, found_bytes)
                work.put(w)
        finally:
            with lock:
                totals.files_found, totals.bytes_found = found_files, found_bytes
                totals.discovering = False
            for _ in range(ex.slots):
                work.put(None)

    def record(line: dict[str, Any], w: Work, ok: bool) -> None:
        with lock:
            totals.files_done += 1
            totals.bytes_done += w.size
            if not ok:
                totals.failed += 1
                result.failed += 1
            result.lines += 1
            emit(line)
        progress()

    def consume(slot: int) -> None:
        while True:
            w = work.get()
            if w is None:
                return
            try:
                if w.error or w.path is None:
                    record(
                        {"source": w.source, "status": "error", "host": w.host, "size": w.size,
                         "error": w.error},
                        w, False,
                    )  # fmt: skip
                    continue
                req = ScanRequest(
                    f"batch-{w.index}",
                    str(w.path),
                    timeout_s,
                    options,
                )
                out = ex.run(slot, req, threading.Event())
                if out.status == "succeeded" and out.report_json is not None:
                    report = json.loads(out.report_json)
                    with lock:
                        items.append(
                            aggregate.Item(w.source, w.host, aggregate.digest(report), w.index)
                        )
                    record(
                        {"source": w.source, "status": "ok", "host": w.host, "size": w.size,
                         "elapsed_s": out.elapsed_s, "report": report},
                        w, True,
                    )  # fmt: skip
                else:
                    record(
                        {"source": w.source, "status": "error", "host": w.host, "size": w.size,
                         "error": out.error},
                        w, False,
                    )  # fmt: skip
            finally:
                if w.temporary and w.path is not None:
                    w.path.unlink(missing_ok=True)

    producer = threading.Thread(target=produce, name="poolscope-batch-discovery", daemon=True)
    consumers = [
        threading.Thread(target=consume, args=(i,), name=f"poolscope-batch-{i}", daemon=True)
        for i in range(ex.slots)
    ]
    progress()
    try:
        producer.start()
        for t in consumers:
            t.start()
        while any(t.is_alive() for t in consumers):
            for t in consumers:
                t.join(0.2)
            progress()
        producer.join()
    finally:
        stop.set()
        if own_executor:
            ex.close()
        shutil.rmtree(scratch, ignore_errors=True)
    items.sort(key=lambda it: it.order)
    result.aggregate = aggregate.aggregate(items, top=top)
    return result


def progress_columns() -> list[Any]:
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    return [
        TextColumn("[bold]batch"),
        BarColumn(),
        TextColumn("{task.fields[files]}"),
        DownloadColumn(),
        TransferSpeedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TimeElapsedColumn(),
    ]


def files_text(t: Totals) -> str:
    found = f"{t.files_found}{'+' if t.discovering else ''}"
    failed = f", {t.failed} failed" if t.failed else ""
    return f"{t.files_done}/{found} files{failed}"
