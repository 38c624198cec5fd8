"""The spool: where uploaded dumps are written, hashed as they arrive, before and while they are
scanned. Uploads are never held whole in memory; zstd uploads are decompressed on the fly with a
window limit and a total-size limit (a decompression bomb is refused after at most ``limit``
bytes), and all-zero chunks are written as holes (sparse files), as the forge writes them.

Layout of the spool directory: ``incoming/`` holds uploads in progress (``*.part``, removed on
failure and at start-up); finished uploads are ``<sha256>.dmp``.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import hashlib
import logging
import os
import queue
import sys
import threading
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import IO, Any, cast

import zstandard

log = logging.getLogger("poolscope.service")

ZSTD_MAGIC = 0xFD2FB528
#: The zstd window a decoder accepts by default (ZSTD_WINDOWLOG_LIMIT_DEFAULT): 128 MiB.
DEFAULT_MAX_ZSTD_WINDOW = 1 << 27


class UploadRefused(Exception):
    """An upload the server will not take. ``code`` is the gRPC status name."""

    code = "INVALID_ARGUMENT"

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class UploadTooLarge(UploadRefused):
    code = "RESOURCE_EXHAUSTED"


class SpoolFull(UploadRefused):
    code = "RESOURCE_EXHAUSTED"


class BadUpload(UploadRefused):
    code = "INVALID_ARGUMENT"


#: errno values that mean "the disk cannot take this now" (RESOURCE_EXHAUSTED, retry later).
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EFBIG})
RETRY_FULL_S = 30.0


class ByteBudget:
    """Bytes received but not yet written, over all uploads: a reader waits (on the event loop,
    holding no thread; gRPC flow control then holds the client) while the budget is spent. At
    least one chunk is always let through, so a chunk larger than the budget cannot stall."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self.used = 0
        self.peak = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def acquire(self, n: int) -> None:
        while self.used and self.used + n > self.limit:
            fut = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            try:
                await fut
            finally:
                if not fut.done():
                    fut.cancel()
        self.used += n
        self.peak = max(self.peak, self.used)

    def release(self, n: int) -> None:
        """On the event loop."""
        self.used -= n
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _sync_file_range() -> Callable[[int, int, int], None] | None:
    """Linux ``sync_file_range(fd, off, n, SYNC_FILE_RANGE_WRITE)``: start writing a range back
    without waiting, so that the fsync before a job is accepted has little left to do."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.sync_file_range
        fn.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    except (OSError, AttributeError):
        return None

    def start_writeback(fd: int, offset: int, n: int) -> None:
        fn(fd, offset, n, 2)  # SYNC_FILE_RANGE_WRITE; errors only lose the head start

    return start_writeback


START_WRITEBACK = _sync_file_range()
WRITEBACK_STEP = 32 << 20


@lru_cache(maxsize=8)
def _zeros(n: int) -> bytes:
    return bytes(n)


def all_zero(data: bytes | memoryview) -> bool:
    n = len(data)
    if n and (data[0] or data[n - 1] or data[n >> 1] or data[n >> 2]):
        return False  # the common case, without touching the rest
    # (comparing a memoryview to bytes goes item by item; bytes to bytes is a memcmp)
    return (data if isinstance(data, bytes) else bytes(data)) == _zeros(n)


def disk_usage(path: Path) -> int:
    """Bytes a file occupies on disk (holes not counted); 0 when it does not exist."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return 0
    return int(getattr(st, "st_blocks", 0)) * 512 or st.st_size


class Spool:
    """The spool directory and its quota (``quota_bytes``; 0 = unlimited)."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        quota_bytes: int = 0,
        fsync: bool = True,
        min_free_bytes: int = 0,
    ) -> None:
        self.root = Path(root)
        self.min_free_bytes = min_free_bytes
        #: Why the spool cannot be written (a write failed: disk full, I/O error); cleared by
        #: ``problem()`` once a probe write succeeds.
        self.broken: str | None = None
        self.incoming = self.root / "incoming"
        self.incoming.mkdir(parents=True, exist_ok=True)
        for stale in self.incoming.glob("*.part"):
            stale.unlink(missing_ok=True)
        self.quota_bytes = quota_bytes
        self.fsync = fsync
        self._lock = threading.Lock()
        self._in_flight = 0  # bytes written by uploads in progress
        self._settled = sum(disk_usage(p) for p in self.root.glob("*.dmp"))
        #: Called with the bytes needed when the quota is reached, before refusing.
        self.on_full: Callable[[int], None] | None = None

    # ------------------------------------------------------------------ health
    def free_bytes(self) -> int:
        try:
            st = os.statvfs(self.root)
        except OSError:
            return 0
        return int(st.f_bavail) * int(st.f_frsize)

    def low_on_space(self) -> str | None:
        if not self.min_free_bytes:
            return None
        free = self.free_bytes()
        if free < self.min_free_bytes:
            return (
                f"the spool's file system has {human_bytes(free)} free, less than the "
                f"{human_bytes(self.min_free_bytes)} the server keeps free (--min-free)"
            )
        return None

    def mark_broken(self, e: BaseException) -> None:
        if self.broken is None:
            log.warning("the spool cannot be written: %s", e)
        self.broken = str(e)

    def probe(self) -> bool:
        """Write, fsync and delete a small file: can the spool take bytes again?"""
        p = self.incoming / f"probe-{uuid.uuid4().hex}.part"
        try:
            with open(p, "wb") as f:
                f.write(b"\xa5" * (64 << 10))
                f.flush()
                os.fsync(f.fileno())
            return True
        except OSError:
            return False
        finally:
            p.unlink(missing_ok=True)

    def problem(self) -> str | None:
        """Why the spool cannot take uploads now, or None (probes when a write had failed)."""
        low = self.low_on_space()
        if low is not None:
            return low
        if self.broken is not None:
            if not self.probe():
                return f"the spool cannot be written ({self.broken})"
            log.info("the spool can be written again")
            self.broken = None
        return None

    def check_accepting(self) -> None:
        """Refuse an upload at once while the spool cannot take it."""
        why = self.low_on_space() or (
            f"the spool cannot be written ({self.broken})" if self.broken else None
        )
        if why is not None:
            raise SpoolFull(
                f"{why}: the server takes no uploads until there is room; retry later",
                retry_after_s=RETRY_FULL_S,
            )

    def disk_error(self, e: OSError, what: str) -> UploadRefused:
        """The refusal for a failed spool write (and the spool marked broken when the disk is
        full or failing)."""
        if e.errno in DISK_ERRNOS:
            self.mark_broken(e)
            return SpoolFull(
                f"the server could not {what}: {e.strerror}; nothing was kept, retry later",
                retry_after_s=RETRY_FULL_S,
            )
        return SpoolFull(
            f"the server could not {what}: {e}; nothing was kept, retry later",
            retry_after_s=RETRY_FULL_S,
        )

    # ------------------------------------------------------------------ accounting
    def usage(self) -> int:
        with self._lock:
            return self._settled + self._in_flight

    def _charge(self, n: int) -> None:
        for attempt in range(2):
            with self._lock:
                used = self._settled + self._in_flight
                if not self.quota_bytes or used + n <= self.quota_bytes:
                    self._in_flight += n
                    return
            if attempt == 0 and self.on_full is not None:
                self.on_full(n)  # e.g. evict kept dumps of finished jobs
        raise SpoolFull(
            f"the server's spool is full ({human_bytes(used)} of its "
            f"{human_bytes(self.quota_bytes)} quota in use): retry when queued scans have "
            "finished, or raise the server's --spool-quota",
            retry_after_s=30.0,
        )

    def _release(self, n: int, settled: int = 0) -> None:
        with self._lock:
            self._in_flight -= n
            self._settled += settled

    def check_room(self, n: int) -> None:
        """Refuse early when ``n`` more bytes would not fit the quota."""
        self._charge(n)
        self._release(n)

    def path_for(self, sha256: str) -> Path:
        return self.root / f"{sha256}.dmp"

    def remove(self, path: str | os.PathLike[str]) -> None:
        p = Path(path)
        if p.parent != self.root:
            return  # never delete what is not ours
        size = disk_usage(p)
        p.unlink(missing_ok=True)
        with self._lock:
            self._settled = max(0, self._settled - size)

    def evict(self, candidates: list[Path], need: int) -> list[Path]:
        """Delete kept dumps (oldest first, as given) until ``need`` bytes fit the quota;
        returns the deleted ones."""
        removed = []
        for p in candidates:
            if not self.quota_bytes or self.usage() + need <= self.quota_bytes:
                break
            self.remove(p)
            removed.append(p)
        return removed

    # ------------------------------------------------------------------ writing
    def open_upload(
        self,
        *,
        max_bytes: int,
        compression: str = "none",
        max_window: int = DEFAULT_MAX_ZSTD_WINDOW,
        declared_size: int = 0,
        budget: ByteBudget | None = None,
    ) -> UploadSink:
        """A sink for one upload's wire bytes, with a thread of its own. The caller ends it
        with ``discard()`` whatever happens: a file not settled is removed."""
        part = self.incoming / f"{uuid.uuid4().hex}.part"
        try:
            return UploadSink(self, part, max_bytes, compression, max_window, declared_size, budget)
        except OSError as e:
            part.unlink(missing_ok=True)
            raise self.disk_error(e, "create the upload's spool file") from None

    def settle(self, sink: UploadSink) -> Path:
        """Move a finished upload to ``<sha256>.dmp`` (replacing an identical file)."""
        dst = self.path_for(sink.sha256)
        old = disk_usage(dst)
        sink.replaced = dst.exists()
        try:
            if self.fsync and not sink._file.closed:
                os.fsync(sink._file.fileno())
            sink.close_file()
            os.replace(sink.path, dst)
            if self.fsync:
                fd = os.open(self.root, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        except OSError as e:
            raise self.disk_error(e, "write the upload to its spool") from None
        with self._lock:
            self._settled += disk_usage(dst) - old
        return dst


class _FileWriter:
    """Decompressed bytes → hash, size limit, quota, sparse write."""

    def __init__(self, sink: UploadSink) -> None:
        self.sink = sink

    def write(self, data: bytes | memoryview) -> int:
        self.sink._write_plain(data)
        return len(data)


_Done = Callable[[BaseException | None, Any], None]


class _Call:
    """A function to run on the pipeline's thread, in order with the chunks."""

    def __init__(self, fn: Callable[[], Any], done: _Done) -> None:
        self.fn = fn
        self.done = done


class _Pipeline:
    """Runs ``fn`` on the items ``put`` from another thread (the event loop), in order, so that
    receiving the next chunk overlaps hashing and writing this one (hashlib and file writes
    release the GIL). The first error is kept in ``error``: later chunks are skipped and
    ``error`` is raised to the producer by its next ``put``. ``call`` runs a function there
    after the chunks before it; ``stop`` ends the thread after what was queued."""

    def __init__(self, fn: Callable[[Any], None]) -> None:
        self._fn = fn
        self._q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="poolscope-upload", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is _STOP:
                return
            if isinstance(item, _Call):
                try:
                    result = item.fn()
                except BaseException as e:  # noqa: BLE001 - handed to the caller
                    item.done(e, None)
                else:
                    item.done(None, result)
                continue
            data, after = item
            if self.error is None:
                try:
                    self._fn(data)
                except BaseException as e:  # noqa: BLE001 - handed to the producer
                    self.error = e
            del data
            after()

    def put(self, item: Any, after: Callable[[], None]) -> None:
        if self.error is not None:
            raise self.error
        self._q.put((item, after))

    def call(self, fn: Callable[[], Any], done: _Done) -> None:
        self._q.put(_Call(fn, done))

    def stop(self) -> None:
        self._q.put(_STOP)

    def join(self) -> None:
        if threading.current_thread() is not self._thread:
            self._thread.join()


_STOP = object()
#: Bytes of one upload received but not yet written (its share of the pipeline).
PER_UPLOAD_BUFFER = 8 << 20


class UploadSink:
    """Takes an upload's wire bytes (``awrite``, on the event loop), decompresses them when
    zstd, hashes and spools the dump on a thread of its own. Raises ``UploadRefused``
    subclasses. ``finish`` and ``settle`` run on that thread too (``call``); ``discard`` ends
    the sink, removing the file unless it was settled."""

    def __init__(
        self,
        spool: Spool,
        path: Path,
        max_bytes: int,
        compression: str,
        max_window: int,
        declared_size: int,
        budget: ByteBudget | None = None,
    ) -> None:
        self.spool = spool
        self.path = path
        self.max_bytes = max_bytes
        self.compression = compression
        self.declared_size = declared_size
        self.received = 0  # wire bytes
        self.size = 0  # dump bytes
        self.charged = 0
        self._hash = hashlib.sha256()
        self._file = open(path, "wb")  # noqa: SIM115 - closed in close_file()
        self._pending_hole = 0
        self._synced = 0  # bytes whose writeback has been started
        self.sha256 = ""
        self._zstd: zstandard.ZstdDecompressionWriter | None = None
        self._frames: ZstdFrameWalker | None = None
        if compression == "zstd":
            dctx = zstandard.ZstdDecompressor(max_window_size=max_window)
            self._zstd = dctx.stream_writer(
                cast(IO[bytes], _FileWriter(self)), write_size=1 << 20, closefd=False
            )
            self._frames = ZstdFrameWalker(max_window)
        self.max_window = max_window
        self._budget = budget
        self._mine = ByteBudget(PER_UPLOAD_BUFFER)
        self._pipe = _Pipeline(self._consume)
        self._discarded = False
        self.replaced = False  # settle() found the same content spooled already
        #: The sha256 the client declared ('' for none): without it, a zstd frame that carries
        #: no checksum cannot be checked and is refused.
        self.expected_sha256 = ""

    async def awrite(self, data: bytes | memoryview) -> None:
        """Take the next wire bytes (kept, not copied: do not modify them afterwards); waits
        while this upload's or all uploads' buffers are full."""
        self.received += len(data)
        if self.received > self.max_bytes:
            what = "the upload is" if self._zstd is not None else "the dump is"
            raise UploadTooLarge(
                f"{what} more than the server's upload limit of {human_bytes(self.max_bytes)}; "
                f"refused after {human_bytes(self.received)}"
            )
        if self._pipe.error is not None:
            raise self._pipe.error
        n = len(data)
        loop = asyncio.get_running_loop()
        budget = self._budget
        await self._mine.acquire(n)
        if budget is not None:
            try:
                await budget.acquire(n)
            except BaseException:
                self._mine.release(n)
                raise

        def released() -> None:
            self._mine.release(n)
            if budget is not None:
                budget.release(n)

        def after() -> None:
            try:
                loop.call_soon_threadsafe(released)
            except RuntimeError:
                pass  # the loop is closed: the server is gone

        try:
            self._pipe.put(data, after)
        except BaseException:
            released()
            raise

    def call(self, fn: Callable[[], Any]) -> Awaitable[Any]:
        """Run ``fn`` on the sink's thread once every chunk before it was written."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()

        def resolve(err: BaseException | None, result: Any) -> None:
            if fut.done():
                return
            if err is not None:
                fut.set_exception(err)
            else:
                fut.set_result(result)

        def done(err: BaseException | None, result: Any) -> None:
            try:
                loop.call_soon_threadsafe(resolve, err, result)
            except RuntimeError:
                pass

        self._pipe.call(fn, done)
        return fut

    def discard(self) -> Awaitable[None] | None:
        """End the sink without blocking: on its own thread, after what is queued, close the
        file, remove it unless settled, give back its quota charge. Called on the event loop,
        returns a future that is done when that has happened."""
        if self._discarded:
            return None
        self._discarded = True
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        fut: asyncio.Future[None] | None = loop.create_future() if loop is not None else None

        def cleanup() -> None:
            self.close_file()
            try:
                self.path.unlink(missing_ok=True)
            except OSError:
                pass
            self.spool._release(self.charged)
            self.charged = 0

        def done(_err: BaseException | None, _result: Any) -> None:
            if loop is None or fut is None:
                return

            def resolve() -> None:
                if not fut.done():
                    fut.set_result(None)

            try:
                loop.call_soon_threadsafe(resolve)
            except RuntimeError:
                pass

        self._pipe.call(cleanup, done)
        self._pipe.stop()
        return fut

    def join(self) -> None:
        """Wait until the sink's thread has ended (tests)."""
        self._pipe.join()

    def _consume(self, data: bytes | memoryview) -> None:
        if self._zstd is None:
            self._write_plain(data)
            return
        assert self._frames is not None and self._zstd is not None
        self._frames.feed(data)
        try:
            self._zstd.write(data)
        except zstandard.ZstdError as e:
            text = str(e)
            if "memory" in text or "window" in text.lower():
                raise UploadTooLarge(
                    f"the zstd stream needs a larger window than the server allows "
                    f"({human_bytes(self.max_window)}): compress without --long (or with "
                    f"--long={self.max_window.bit_length() - 1} or less), or raise the "
                    f"server's --max-zstd-window ({text})"
                ) from None
            raise BadUpload(f"the upload is not a valid zstd stream: {text}") from None

    def _write_plain(self, data: bytes | memoryview) -> None:
        n = len(data)
        if self.size + n > self.max_bytes:
            what = "decompresses to" if self._zstd is not None else "is"
            raise UploadTooLarge(
                f"the dump {what} more than the server's upload limit of "
                f"{human_bytes(self.max_bytes)}; refused after {human_bytes(self.size + n)}"
            )
        if self.declared_size and self.size + n > self.declared_size:
            raise BadUpload(
                f"the upload is longer than the size its metadata declares ({self.declared_size}"
                " bytes)"
            )
        self.size += n
        self._hash.update(data)
        if all_zero(data):
            self._pending_hole += n  # a hole: sparse files stay sparse in the spool
            return
        self.spool._charge(n)
        self.charged += n
        try:
            if self._pending_hole:
                self._file.seek(self._pending_hole, os.SEEK_CUR)
                self._pending_hole = 0
            self._file.write(data)
            if self.size >= self._synced + WRITEBACK_STEP:
                self._file.flush()
                if self.spool.fsync and START_WRITEBACK is not None:
                    START_WRITEBACK(self._file.fileno(), self._synced, self.size - self._synced)
                self._synced = self.size
                low = self.spool.low_on_space()
                if low is not None:
                    raise SpoolFull(
                        f"{low}: the upload was stopped and nothing was kept; retry later",
                        retry_after_s=RETRY_FULL_S,
                    )
        except OSError as e:
            raise self.spool.disk_error(e, "write the upload to its spool") from None

    def finish(self) -> str:
        """End of the upload, on the sink's thread: check it is complete and intact; returns
        the dump's sha256."""
        if self._pipe.error is not None:
            raise self._pipe.error
        if self._zstd is not None:
            assert self._frames is not None
            if not self._frames.complete():
                raise BadUpload(
                    "the zstd stream ends inside a frame: the upload is truncated or not zstd "
                    f"({self._frames.describe()})"
                )
            try:
                self._zstd.flush()
            except zstandard.ZstdError as e:
                raise BadUpload(f"the upload is not a valid zstd stream: {e}") from None
            if self._frames.unchecked and not self.expected_sha256:
                raise BadUpload(
                    f"{self._frames.unchecked} zstd frame(s) of the upload carry no checksum and "
                    "the metadata declares no expected_sha256, so damaged bytes could go "
                    "unnoticed: compress with checksums (zstd's default; not --no-check) or "
                    "declare expected_sha256"
                )
        if self.size == 0:
            raise BadUpload("the upload holds no dump bytes (an empty file?)")
        if self.declared_size and self.size != self.declared_size:
            raise BadUpload(
                f"the upload is truncated: {self.size} bytes received of the {self.declared_size}"
                " its metadata declares; nothing was kept"
            )
        try:
            if self._pending_hole:
                self._file.seek(self._pending_hole, os.SEEK_CUR)
                self._pending_hole = 0
            self._file.truncate(self.size)
            self._file.flush()
        except OSError as e:
            raise self.spool.disk_error(e, "write the upload to its spool") from None
        self.sha256 = self._hash.hexdigest()
        return self.sha256

    def close_file(self) -> None:
        if not self._file.closed:
            try:
                self._file.close()
            except OSError:
                pass  # a failed flush of a file that is dropped anyway


@dataclass
class _Need:
    what: str  # magic | fhd | header | block_header | skip | checksum
    n: int


class ZstdFrameWalker:
    """Follows the frame structure of a zstd stream as it arrives (frame headers, block headers,
    skippable frames) without decompressing, so that the end of an upload can be checked to fall
    on a frame boundary and a frame declaring a too-large window is refused from its header."""

    def __init__(self, max_window: int) -> None:
        self.max_window = max_window
        self.frames = 0
        self.unchecked = 0  # frames without a content checksum
        self._buf = bytearray()
        self._need = _Need("magic", 4)
        self._skip = 0
        self._checksum = False
        self._single = False
        self._header_did = 0
        self._fcs_len = 0
        self._state_after_skip = "magic"

    def feed(self, data: bytes | memoryview) -> None:
        mv = memoryview(data)
        pos = 0
        while pos < len(mv):
            if self._need.what == "skip":
                take = min(self._skip, len(mv) - pos)
                self._skip -= take
                pos += take
                if self._skip == 0:
                    self._after_skip()
                continue
            take = min(self._need.n - len(self._buf), len(mv) - pos)
            self._buf += mv[pos : pos + take]
            pos += take
            if len(self._buf) == self._need.n:
                buf = bytes(self._buf)
                self._buf.clear()
                self._step(buf)

    def _after_skip(self) -> None:
        if self._state_after_skip == "block":
            self._need = _Need("block_header", 3)
        elif self._state_after_skip == "checksum":
            self._need = _Need("checksum", 4)
        else:
            self._need = _Need("magic", 4)

    def _skip_then(self, n: int, then: str) -> None:
        self._state_after_skip = then
        if n == 0:
            self._after_skip()
        else:
            self._skip = n
            self._need = _Need("skip", n)

    def _step(self, buf: bytes) -> None:
        what = self._need.what
        if what == "magic":
            magic = int.from_bytes(buf, "little")
            if magic == ZSTD_MAGIC:
                self._need = _Need("fhd", 1)
            elif magic & 0xFFFFFFF0 == 0x184D2A50:
                self._need = _Need("skippable_size", 4)
            else:
                raise BadUpload(
                    f"the upload is not zstd (frame {self.frames} starts with 0x{magic:08x}); "
                    "send COMPRESSION_NONE for a plain dump"
                )
        elif what == "skippable_size":
            self._skip_then(int.from_bytes(buf, "little"), "magic")
        elif what == "fhd":
            fhd = buf[0]
            fcs_flag, single, checksum, did_flag = fhd >> 6, (fhd >> 5) & 1, (fhd >> 2) & 1, fhd & 3
            if fhd & 0x08:
                raise BadUpload("the upload is not a valid zstd stream (reserved bit set)")
            self._checksum = bool(checksum)
            self._fcs_len = (1 if single else 0, 2, 4, 8)[fcs_flag]
            self._single = bool(single)
            size = (0 if single else 1) + (0, 1, 2, 4)[did_flag] + self._fcs_len
            self._header_did = (0, 1, 2, 4)[did_flag]
            if size:
                self._need = _Need("header", size)
            else:
                self._frame_header_done(b"")
        elif what == "header":
            self._frame_header_done(buf)
        elif what == "block_header":
            bh = int.from_bytes(buf, "little")
            last, btype, bsize = bh & 1, (bh >> 1) & 3, bh >> 3
            if btype == 3:
                raise BadUpload("the upload is not a valid zstd stream (reserved block type)")
            payload = 1 if btype == 1 else bsize
            then = "block" if not last else ("checksum" if self._checksum else "end")
            if last and not self._checksum:
                self.frames += 1
                self.unchecked += 1
            self._skip_then(payload, then)
        elif what == "checksum":
            self.frames += 1
            self._need = _Need("magic", 4)

    def _frame_header_done(self, buf: bytes) -> None:
        start = (0 if self._single else 1) + self._header_did
        fcs = buf[start:]
        content = int.from_bytes(fcs, "little") + (256 if len(fcs) == 2 else 0) if fcs else None
        if self._single:
            window = content or 0
        else:
            exponent, mantissa = buf[0] >> 3, buf[0] & 7
            base = 1 << (10 + exponent)
            window = base + (base // 8) * mantissa
            if content is not None:
                window = min(window, content)  # as the decoder does
        if window > self.max_window:
            raise UploadTooLarge(
                f"the zstd stream needs a {human_bytes(window)} window, more than the server "
                f"allows ({human_bytes(self.max_window)}): compress without --long (or with "
                f"--long={self.max_window.bit_length() - 1} or less), or raise the server's "
                "--max-zstd-window"
            )
        self._need = _Need("block_header", 3)

    def complete(self) -> bool:
        return self.frames > 0 and self._need.what == "magic" and not self._buf

    def describe(self) -> str:
        return f"{self.frames} complete frames, then expecting {self._need.what}"
