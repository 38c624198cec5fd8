"""The gRPC server: ``ScanService`` (proto/poolscope/v1/scan.proto), standard health checking
(``grpc.health.v1``, open without a token so that load balancers can probe it) and server
reflection, optional bearer-token auth (``authorization: Bearer <token>`` metadata →
UNAUTHENTICATED otherwise) and optional TLS.

The server is ``grpc.aio`` on an event loop of its own thread: uploads, WatchJob and health run
on the loop (a stalled client holds no thread; uploads are capped in total and per client
address, and dropped when idle or overdue); the calls that read or write SQLite or hash files
run on a thread pool. SubmitPath opens its file once beneath its root (``safepath``) and the
scan reads that descriptor. Disk-full and I/O errors turn into RESOURCE_EXHAUSTED with a retry
hint and NOT_SERVING health until a probe write succeeds again.

    server = PoolscopeServer(ServerConfig(address="127.0.0.1:0", data_dir="data"))
    port = server.start()
    ...
    server.stop()
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ctypes
import hashlib
import hmac
import json
import logging
import os
import sqlite3
import ssl
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import grpc
from google.protobuf import json_format, timestamp_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from poolscope.report import iso_time
from poolscope.service import aggregate as agg
from poolscope.service import safepath, wire
from poolscope.service.executors import Executor, make_executor
from poolscope.service.jobs import JobNotFound, JobStateError, QueueFull, Scheduler, ShuttingDown
from poolscope.service.spool import (
    DEFAULT_MAX_ZSTD_WINDOW,
    BadUpload,
    ByteBudget,
    Spool,
    UploadRefused,
    UploadSink,
    human_bytes,
)
from poolscope.service.store import (
    CANCELLED,
    FAILED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    JobFilter,
    JobRecord,
    Store,
    new_job_id,
)
from poolscope.service.v1 import scan_pb2 as pb
from poolscope.service.v1 import scan_pb2_grpc as pb_grpc

log = logging.getLogger("poolscope.service")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ScanService"].full_name
STATE_TO_PB = {
    QUEUED: pb.JOB_STATE_QUEUED,
    RUNNING: pb.JOB_STATE_RUNNING,
    SUCCEEDED: pb.JOB_STATE_SUCCEEDED,
    FAILED: pb.JOB_STATE_FAILED,
    CANCELLED: pb.JOB_STATE_CANCELLED,
}
PB_TO_STATE = {v: k for k, v in STATE_TO_PB.items()}
SOURCE_TO_PB = {"upload": pb.JOB_SOURCE_UPLOAD, "path": pb.JOB_SOURCE_PATH}
RETRY_AFTER_KEY = "retry-after-ms"
MAX_LABELS = 64


@dataclass
class ServerConfig:
    address: str = "127.0.0.1:50051"
    data_dir: str | os.PathLike[str] = "poolscope-data"
    workers: int | None = None
    """Scans at once (default: cores; with ``dask="local"``: the LocalCluster's workers)."""
    max_queue: int = 1000
    job_timeout_s: float = 3600.0
    token: str | None = None
    tls_cert: str | os.PathLike[str] | None = None
    tls_key: str | os.PathLike[str] | None = None
    dask: str | None = None
    allowed_roots: list[str | os.PathLike[str]] = field(default_factory=list)
    max_upload_bytes: int = 64 << 30
    max_zstd_window: int = DEFAULT_MAX_ZSTD_WINDOW
    spool_quota_bytes: int = 0
    keep_dumps: bool = False
    max_message_bytes: int = 16 << 20
    threads: int = 64
    """Threads serving the calls that run on threads (GetJob, ListJobs, GetReport, SubmitPath,
    CancelJob, Aggregate). Uploads, WatchJob and health run on the event loop and hold none."""
    fsync: bool = True
    max_attempts: int = 3
    symbol_path: str | None = None
    """WinDbg symbol path for the kernels' PDBs (``srv*URL`` elements download into
    ``DATA_DIR/symbols``, shared by every job; one download per GUID across scan processes)."""
    symbol_timeout_s: float = 30.0
    max_uploads: int = 64
    """Uploads in progress at once (RESOURCE_EXHAUSTED with ``retry-after-ms`` beyond)."""
    max_uploads_per_peer: int = 32
    """Uploads in progress at once from one client address."""
    upload_idle_timeout_s: float = 60.0
    """An upload that sends nothing for this long is ended (DEADLINE_EXCEEDED) and dropped."""
    upload_timeout_s: float = 3600.0
    """An upload must end within this long of its start."""
    upload_buffer_bytes: int = 64 << 20
    """Received bytes waiting to be hashed and written, over all uploads (the memory bound)."""
    min_free_bytes: int = 256 << 20
    """Uploads are refused while the data dir's file system has less free space than this
    (room kept for the job store and reports)."""


class ConfigError(ValueError):
    """A server configuration that must not start (an empty token file, a bad TLS key)."""


# ---------------------------------------------------------------------------------- messages


def _ts(seconds: float | None) -> timestamp_pb2.Timestamp | None:
    if seconds is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def _iso(seconds: float | None) -> str:
    return iso_time(seconds) or ""


_INT_TYPES = {
    json_format.descriptor.FieldDescriptor.TYPE_UINT64,
    json_format.descriptor.FieldDescriptor.TYPE_UINT32,
    json_format.descriptor.FieldDescriptor.TYPE_INT64,
    json_format.descriptor.FieldDescriptor.TYPE_INT32,
}


def _fill(cls: Any, d: dict[str, Any] | None, **nested: Any) -> Any:
    """A message of type ``cls`` from the scalar keys of ``d`` that it has and whose values fit
    (a key missing, null or of another type is left unset), plus ``nested`` fields."""
    fd = json_format.descriptor.FieldDescriptor
    kwargs: dict[str, Any] = {}
    for f in cls.DESCRIPTOR.fields:
        if f.name in nested or d is None or d.get(f.name) is None:
            continue
        v = d[f.name]
        if f.message_type is not None:
            continue
        repeated = f.is_repeated
        values = v if repeated and isinstance(v, list) else [v]
        ok: list[Any] = []
        for x in values:
            if f.type == fd.TYPE_STRING and isinstance(x, str):
                ok.append(x)
            elif f.type == fd.TYPE_BOOL and isinstance(x, bool):
                ok.append(x)
            elif f.type in _INT_TYPES and isinstance(x, int) and not isinstance(x, bool):
                if x >= 0 or f.type in (fd.TYPE_INT64, fd.TYPE_INT32):
                    ok.append(x)
            elif (
                f.type == fd.TYPE_DOUBLE and isinstance(x, int | float) and not isinstance(x, bool)
            ):
                ok.append(float(x))
            elif f.type == fd.TYPE_STRING and repeated and x is None:
                ok.append("")
        if repeated:
            kwargs[f.name] = ok
        elif ok:
            kwargs[f.name] = ok[0]
    kwargs.update({k: v for k, v in nested.items() if v is not None})
    return cls(**kwargs)


def report_message(doc: dict[str, Any]) -> pb.Report:
    """The typed form of the main sections of a report document."""
    dump = doc.get("dump") or {}
    memory = doc.get("memory")
    pool_scan = doc.get("pool_scan")
    verifier = doc.get("verifier")
    return pb.Report(
        dump=_fill(pb.DumpInfo, dump, bugcheck=_fill(pb.Bugcheck, dump.get("bugcheck"))),
        memory=_fill(pb.MemorySummary, memory) if isinstance(memory, dict) else None,
        poolused=[_fill(pb.PoolUsage, r) for r in doc.get("poolused") or []],
        pool_scan=_fill(
            pb.PoolScan,
            pool_scan,
            tags=[_fill(pb.PoolScanTag, t) for t in pool_scan.get("tags") or []],
        )
        if isinstance(pool_scan, dict)
        else None,
        bigpool=[_fill(pb.BigPoolEntry, r) for r in doc.get("bigpool") or []],
        tag_owners=[
            pb.TagOwners(tag=tag, modules=[_fill(pb.TagOwner, m) for m in mods or []])
            for tag, mods in (doc.get("tag_owners") or {}).items()
        ],
        findings=[
            _fill(
                pb.Finding,
                f,
                evidence_json=json.dumps(f.get("evidence") or {}, sort_keys=True),
            )
            for f in doc.get("findings") or []
        ],
        sources={str(k): str(v) for k, v in (doc.get("sources") or {}).items()},
        unavailable={str(k): str(v) for k, v in (doc.get("unavailable") or {}).items()},
        verifier=_fill(
            pb.VerifierSummary,
            verifier,
            drivers=[_fill(pb.VerifierDriver, d) for d in verifier.get("drivers") or []],
        )
        if isinstance(verifier, dict)
        else None,
    )


def aggregate_message(doc: dict[str, Any]) -> pb.AggregateResponse:
    return json_format.ParseDict(doc, pb.AggregateResponse())


# ---------------------------------------------------------------------------------- auth


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    """Every call but health checks must carry ``authorization: Bearer <token>``."""

    def __init__(
        self, token: str, open_prefixes: Iterable[str] = ("/grpc.health.v1.Health/",)
    ) -> None:
        if not token:
            raise ConfigError("an empty bearer token would let every caller in")
        self._expected = f"Bearer {token}".encode()
        self._open = tuple(open_prefixes)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method  # type: ignore[attr-defined]
        if method.startswith(self._open):
            return await continuation(handler_call_details)
        metadata = handler_call_details.invocation_metadata or ()  # type: ignore[attr-defined]
        given = next((v for k, v in metadata if k == "authorization"), None)
        if given is not None:
            raw = given.encode() if isinstance(given, str) else bytes(given)
            if hmac.compare_digest(raw, self._expected):
                return await continuation(handler_call_details)
        why = "no bearer token" if given is None else "a wrong bearer token"
        message = (
            f"the call carries {why}: send the metadata 'authorization: Bearer <token>' with the "
            "server's token (poolscope --token or the POOLSCOPE_TOKEN environment variable)"
        )
        handler = await continuation(handler_call_details)
        return _denying(handler, message)


def _denying(handler: grpc.RpcMethodHandler | None, message: str) -> grpc.RpcMethodHandler:
    """A handler that refuses the call on the event loop (no thread, no request read)."""

    async def deny(_request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    async def deny_stream(
        _request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        yield None  # pragma: no cover - unreachable, makes this an async generator

    if handler is None:
        return grpc.unary_unary_rpc_method_handler(deny)
    kw = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(deny_stream, **kw)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(deny, **kw)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(deny_stream, **kw)
    return grpc.unary_unary_rpc_method_handler(deny, **kw)


# ---------------------------------------------------------------------------------- service


def _retry_after(context: Any, retry_after_s: float | None) -> None:
    """The client's retry hint: trailing metadata ``retry-after-ms``."""
    if retry_after_s is not None:
        context.set_trailing_metadata(((RETRY_AFTER_KEY, str(int(retry_after_s * 1000))),))


def _abort(
    context: grpc.ServicerContext,
    code: grpc.StatusCode,
    message: str,
    retry_after_s: float | None = None,
) -> NoReturn:
    _retry_after(context, retry_after_s)
    context.abort(code, message)
    raise AssertionError("unreachable")


async def _aabort(
    context: grpc.aio.ServicerContext[Any, Any],
    code: grpc.StatusCode,
    message: str,
    retry_after_s: float | None = None,
) -> NoReturn:
    """``_abort`` for the handlers that run on the event loop."""
    _retry_after(context, retry_after_s)
    await context.abort(code, message)
    raise AssertionError("unreachable")


class _Invalid(Exception):
    """INVALID_ARGUMENT, raised where there is no (synchronous) context to abort."""


def _invalid(context: grpc.ServicerContext | None, message: str) -> NoReturn:
    if context is None:
        raise _Invalid(message)
    _abort(context, grpc.StatusCode.INVALID_ARGUMENT, message)


async def _settled(fut: Awaitable[None] | None) -> None:
    """Wait for ``fut`` even while the calling task is being cancelled (a client that
    cancels its upload still gets its partial file removed before the handler ends)."""
    if fut is None:
        return
    try:
        await asyncio.shield(fut)
    except asyncio.CancelledError:
        await asyncio.shield(fut)
        raise


def peer_key(peer: str) -> str:
    """The client's address without its port: ``ipv4:10.0.0.7``, ``ipv6:[::1]``, ``unix:...``."""
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6") and ":" in rest:
        return f"{kind}:{rest.rsplit(':', 1)[0]}"
    return peer


class UploadSlots:
    """Uploads in progress, in total and per client address (used on the event loop only)."""

    def __init__(self, total: int, per_peer: int) -> None:
        self.total = max(1, total)
        self.per_peer = max(1, per_peer)
        self.active = 0
        self.by_peer: dict[str, int] = {}

    def enter(self, peer: str) -> str | None:
        """Take a slot for ``peer``; a refusal message when there is none."""
        if self.active >= self.total:
            return (
                f"the server takes at most {self.total} uploads at once and is at its limit: "
                "retry after the time in the trailing metadata 'retry-after-ms'"
            )
        if self.by_peer.get(peer, 0) >= self.per_peer:
            return (
                f"this client ({peer}) already has {self.per_peer} uploads in progress, the "
                "server's limit per client: finish those first or retry later"
            )
        self.active += 1
        self.by_peer[peer] = self.by_peer.get(peer, 0) + 1
        return None

    def leave(self, peer: str) -> None:
        self.active -= 1
        left = self.by_peer.get(peer, 1) - 1
        if left > 0:
            self.by_peer[peer] = left
        else:
            self.by_peer.pop(peer, None)


def hash_fd(fd: int, st: os.stat_result, store: Store, name: str) -> str:
    """The sha256 of the open file ``fd`` (remembered by name, device, inode, size and mtime,
    so that the same unchanged file is hashed once)."""
    key = (name, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    try:
        sha = store.path_hash(*key)
    except sqlite3.Error:
        sha = None
    if sha is None:
        h = hashlib.sha256()
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        offset = 0
        while True:
            n = os.preadv(fd, [view], offset)
            if not n:
                break
            h.update(view[:n])
            offset += n
        sha = h.hexdigest()
        try:
            store.remember_path_hash(*key, sha)
        except sqlite3.Error:
            pass  # only a cache
    return sha


def new_job(
    request: Any,
    source: str,
    name: str,
    sha: str,
    size: int,
    host: str,
    labels: dict[str, str],
    dump_path: str | None = None,
    spooled: bool = False,
) -> JobRecord:
    """A queued job for a dump an upload's metadata or a SubmitPath request describes (both
    carry timeout_seconds and priority)."""
    return JobRecord(
        id=new_job_id(),
        state=QUEUED,
        source=source,
        file_name=name,
        sha256=sha,
        size_bytes=size,
        timeout_s=request.timeout_seconds,
        host_id=host,
        labels=labels,
        priority=request.priority,
        dump_path=dump_path,
        spooled=spooled,
    )


class ScanServicer(pb_grpc.ScanServiceServicer):
    def __init__(self, server: PoolscopeServer) -> None:
        self.srv = server
        self.cfg = server.config
        self.store = server.store
        self.scheduler = server.scheduler
        self.spool = server.spool
        self.roots = [os.path.realpath(r) for r in self.cfg.allowed_roots]

    # ------------------------------------------------------------------ helpers
    def job_message(self, rec: JobRecord) -> pb.Job:
        pct, stage = self.scheduler.progress(rec)
        return pb.Job(
            id=rec.id,
            state=STATE_TO_PB[rec.state],
            source=SOURCE_TO_PB.get(rec.source, pb.JOB_SOURCE_UNSPECIFIED),
            file_name=rec.file_name,
            host_id=rec.host_id,
            labels=rec.labels,
            sha256=rec.sha256,
            size_bytes=rec.size_bytes,
            priority=rec.priority,
            create_time=_ts(rec.created_at),
            start_time=_ts(rec.started_at),
            finish_time=_ts(rec.finished_at),
            progress_percent=pct,
            stage=stage,
            error=rec.error,
            attempts=rec.attempts,
            submissions=rec.submissions,
            timeout_seconds=rec.timeout_s,
            queue_position=self.scheduler.queue_position(rec.id) if rec.state == QUEUED else 0,
            dump_time=_iso(rec.dump_time),
        )

    def _job(self, job_id: str, context: grpc.ServicerContext) -> JobRecord:
        if not job_id:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "job_id is empty")
        try:
            return self.scheduler.get(job_id)
        except JobNotFound as e:
            _abort(context, grpc.StatusCode.NOT_FOUND, str(e))

    @staticmethod
    def _labels(labels: Any, context: grpc.ServicerContext | None) -> dict[str, str]:
        out = dict(labels)
        if len(out) > MAX_LABELS:
            _invalid(context, f"at most {MAX_LABELS} labels per job")
        for k, v in out.items():
            if not k or len(k) > 128 or len(v) > 1024:
                _invalid(
                    context,
                    f"label {k[:40]!r}: keys must be 1..128 characters, values at most 1024",
                )
        return out

    @staticmethod
    def _host(host_id: str, context: grpc.ServicerContext | None) -> str:
        if len(host_id) > 256:
            _invalid(context, "host_id is longer than 256")
        return host_id

    def _filter(self, req: Any, context: grpc.ServicerContext) -> JobFilter:
        flt = JobFilter(
            host_id=req.host_id,
            labels=self._labels(req.labels, context),
            created_after=req.created_after.ToNanoseconds() / 1e9
            if req.HasField("created_after")
            else None,
            created_before=req.created_before.ToNanoseconds() / 1e9
            if req.HasField("created_before")
            else None,
        )
        return flt

    # ------------------------------------------------------------------ submit
    async def UploadDump(  # noqa: N802 - gRPC method name
        self,
        request_iterator: Any,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> pb.UploadDumpResponse:
        """Runs on the event loop: a stalled or slow stream holds no thread. The bytes are
        hashed and written by the upload's own spool thread (``UploadSink``)."""
        peer = peer_key(context.peer() or "")
        refusal = self.srv.uploads.enter(peer)
        if refusal is not None:
            await _aabort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, refusal, 1.0)
        try:
            return await self._upload(context)
        finally:
            self.srv.uploads.leave(peer)
            if self.srv.uploads.active == 0:
                self.srv.trim_memory()

    async def _read(self, context: grpc.aio.ServicerContext[Any, Any], deadline: float) -> Any:
        """The next message, or an abort when the stream idles or the upload runs too long."""
        loop = asyncio.get_running_loop()
        left = deadline - loop.time()
        idle = self.cfg.upload_idle_timeout_s
        if left <= 0:
            await _aabort(
                context,
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"the upload did not finish within the server's {self.cfg.upload_timeout_s:g} s "
                "limit (--upload-timeout); nothing was kept",
            )
        try:
            return await asyncio.wait_for(context.read(), min(idle, left))
        except TimeoutError:
            if left <= idle:
                await _aabort(
                    context,
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"the upload did not finish within the server's {self.cfg.upload_timeout_s:g}"
                    " s limit (--upload-timeout); nothing was kept",
                )
            await _aabort(
                context,
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"the upload sent nothing for {idle:g} s (the server's --upload-idle-timeout); "
                "it was dropped and nothing was kept",
            )

    async def _upload(self, context: grpc.aio.ServicerContext[Any, Any]) -> pb.UploadDumpResponse:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.cfg.upload_timeout_s
        first = await self._read(context, deadline)
        if not isinstance(first, pb.UploadDumpRequest) or first.WhichOneof("payload") != "metadata":
            await _aabort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "the first UploadDump message must carry the metadata (file name, host id, "
                "labels, compression); the dump's bytes follow as chunks",
            )
        md = first.metadata
        compression = {
            pb.COMPRESSION_UNSPECIFIED: "none",
            pb.COMPRESSION_NONE: "none",
            pb.COMPRESSION_ZSTD: "zstd",
        }.get(md.compression)
        if compression is None:
            await _aabort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"unknown compression {md.compression}: use COMPRESSION_NONE or COMPRESSION_ZSTD",
            )
        expected = md.expected_sha256.strip().lower()
        if expected and (len(expected) != 64 or any(c not in "0123456789abcdef" for c in expected)):
            await _aabort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "expected_sha256 must be 64 hexadecimal digits (or empty)",
            )
        if not expected and not md.size_bytes:
            # A client that cancels mid-stream can look to the server like one that ended its
            # stream (measured: gRPC reports both as the end of the stream), so only a declared
            # size or hash tells a complete upload from a cut one.
            await _aabort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "declare the dump in the metadata: size_bytes (its decompressed size) and/or "
                "expected_sha256; the server takes only uploads it can check are complete "
                "(poolscope's own client always declares both)",
            )
        limit = self.cfg.max_upload_bytes
        if md.size_bytes > limit:
            await _aabort(
                context,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the dump ({human_bytes(md.size_bytes)}) is larger than the server's upload "
                f"limit of {human_bytes(limit)}: scan it with 'poolscope scan' locally or ask "
                "for a larger --max-upload",
            )
        try:
            labels = self._labels(md.labels, None)
            host = self._host(md.host_id, None)
        except _Invalid as e:
            await _aabort(context, grpc.StatusCode.INVALID_ARGUMENT, str(e))
        name = os.path.basename(md.file_name.replace("\\", "/"))[:255] or "upload.dmp"
        try:
            self.spool.check_accepting()
            with self.scheduler.reservation():
                sink = self.spool.open_upload(
                    max_bytes=limit,
                    compression=compression,
                    max_window=self.cfg.max_zstd_window,
                    declared_size=md.size_bytes,
                    budget=self.srv.budget,
                )
                sink.expected_sha256 = expected
                try:
                    while True:
                        msg = await self._read(context, deadline)
                        if msg is grpc.aio.EOF:
                            break
                        if isinstance(msg, memoryview):  # the fast path (wire.py)
                            await sink.awrite(msg)
                        elif msg.WhichOneof("payload") == "chunk":
                            await sink.awrite(msg.chunk)
                        else:
                            await _aabort(
                                context,
                                grpc.StatusCode.INVALID_ARGUMENT,
                                "metadata may be sent only once, in the first message",
                            )

                    def complete() -> tuple[Any, bool, JobRecord]:
                        return self._complete_upload(sink, md, expected, name, host, labels)

                    job, deduplicated, rec = await sink.call(complete)
                finally:
                    # on the spool thread: removes what was not settled, before the answer
                    await _settled(sink.discard())
        except QueueFull as e:
            await _aabort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, str(e), e.retry_after_s)
        except UploadRefused as e:
            await _aabort(context, getattr(grpc.StatusCode, e.code), str(e), e.retry_after_s)
        except ShuttingDown as e:
            await _aabort(context, grpc.StatusCode.UNAVAILABLE, str(e))
        except sqlite3.Error as e:
            self.srv.storage_failed(e)
            await _aabort(
                context,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the server cannot record the job now ({e}; its disk may be full): retry later",
                30.0,
            )
        log.info(
            "upload %s (%s, %s) -> job %s%s",
            name,
            human_bytes(rec.size_bytes),
            compression,
            job.id,
            " (deduplicated)" if deduplicated else "",
        )
        msg = await asyncio.to_thread(self.job_message, job)
        return pb.UploadDumpResponse(
            job=msg, deduplicated=deduplicated, received_bytes=sink.received
        )

    def _complete_upload(
        self,
        sink: UploadSink,
        md: Any,
        expected: str,
        name: str,
        host: str,
        labels: dict[str, str],
    ) -> tuple[JobRecord, bool, JobRecord]:
        """On the upload's spool thread, after its last chunk: check, settle, queue."""
        sha = sink.finish()
        if expected and sha != expected:
            raise BadUpload(
                f"the dump's sha256 is {sha}, not the expected {expected}: the upload is "
                "corrupt, incomplete or another file; nothing was kept"
            )
        rec = new_job(md, "upload", name, sha, sink.size, host, labels, spooled=True)
        # A dump already submitted joins its job (the upload's file is dropped);
        # otherwise the file is spooled for good, then the job queued.
        job, deduplicated = self.scheduler.submit(rec, dedup_only=True)
        if job is None:
            rec.dump_path = str(self.spool.settle(sink))
            try:
                job, deduplicated = self.scheduler.submit(rec)
            except BaseException:
                if not sink.replaced:  # no job, no file (unless another job's file)
                    self.spool.remove(rec.dump_path)
                raise
        assert job is not None
        return job, deduplicated, rec

    def SubmitPath(  # noqa: N802
        self, request: pb.SubmitPathRequest, context: grpc.ServicerContext
    ) -> pb.SubmitPathResponse:
        if not self.roots:
            _abort(
                context,
                grpc.StatusCode.PERMISSION_DENIED,
                "SubmitPath is disabled on this server: start it with --allow-root DIR to scan "
                "dumps under DIR, or upload the dump with UploadDump",
            )
        return self._submit_path(request, context)

    def _beneath(self, path: str) -> tuple[int, str] | None:
        """(root descriptor, path relative to it) of the allowed root ``path`` names a file
        under, by its spelling alone (no link is resolved here)."""
        norm = os.path.normpath(path)
        for spellings, root_fd in self.srv.root_fds:
            for root in spellings:
                prefix = root.rstrip(os.sep) + os.sep
                if norm.startswith(prefix):
                    return root_fd, norm[len(prefix) :]
        return None

    def _submit_path(
        self, request: pb.SubmitPathRequest, context: grpc.ServicerContext
    ) -> pb.SubmitPathResponse:
        path = request.path
        if not path or not os.path.isabs(path) or "\x00" in path:
            _abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"path must be an absolute path on the server, got {path!r}",
            )
        host = self._host(request.host_id, context)
        labels = self._labels(request.labels, context)
        where = self._beneath(path)
        if where is None:
            _abort(
                context,
                grpc.StatusCode.PERMISSION_DENIED,
                f"{path} is outside the server's allowed roots; allowed: {', '.join(self.roots)}"
                " (paths are taken as written: no symbolic link is followed)",
            )
        root_fd, rel = where
        try:
            opened = safepath.open_beneath(root_fd, rel, path)
        except safepath.PathRefused as e:
            _abort(context, getattr(grpc.StatusCode, e.code), str(e))
        fd, st = opened.fd, opened.st
        keep_fd = False
        try:
            if st.st_size > self.cfg.max_upload_bytes:
                _abort(
                    context,
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"{path} ({human_bytes(st.st_size)}) is larger than the server's limit of "
                    f"{human_bytes(self.cfg.max_upload_bytes)} (--max-upload)",
                )
            name = os.path.normpath(path)
            # Hashing a large file holds a thread for seconds: at most half of them do it.
            if not self.srv.path_slots.acquire(blocking=False):
                _abort(
                    context,
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    "the server is hashing as many submitted files as it takes at once; retry "
                    "after the time in the trailing metadata 'retry-after-ms'",
                    1.0,
                )
            try:
                sha = hash_fd(fd, st, self.store, name)
            finally:
                self.srv.path_slots.release()
            rec = new_job(request, "path", name, sha, st.st_size, host, labels, dump_path=name)
            try:
                with self.scheduler.reservation():
                    # the scan reads this descriptor, kept with the job as it is queued
                    job, deduplicated = self.scheduler.submit(rec, fd=fd)
                    assert job is not None
                    keep_fd = not deduplicated
            except QueueFull as e:
                _abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, str(e), e.retry_after_s)
            except ShuttingDown as e:
                _abort(context, grpc.StatusCode.UNAVAILABLE, str(e))
            except sqlite3.Error as e:
                self.srv.storage_failed(e)
                _abort(
                    context,
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"the server cannot record the job now ({e}; its disk may be full): retry "
                    "later",
                    30.0,
                )
        finally:
            if not keep_fd:
                os.close(fd)
        log.info("path %s -> job %s%s", name, job.id, " (deduplicated)" if deduplicated else "")
        return pb.SubmitPathResponse(job=self.job_message(job), deduplicated=deduplicated)

    # ------------------------------------------------------------------ jobs
    def GetJob(self, request: pb.GetJobRequest, context: grpc.ServicerContext) -> pb.Job:  # noqa: N802
        return self.job_message(self._job(request.job_id, context))

    def ListJobs(  # noqa: N802
        self, request: pb.ListJobsRequest, context: grpc.ServicerContext
    ) -> pb.ListJobsResponse:
        flt = self._filter(request, context)
        try:
            flt.states = [PB_TO_STATE[s] for s in request.states]
        except KeyError:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "states holds an unknown JobState")
        if request.page_size < 0:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "page_size must not be negative")
        size = min(request.page_size or 50, 1000)
        before = None
        if request.page_token:
            before = self._decode_token(request.page_token, flt, context)
        jobs, total = self.store.list_jobs(flt, before_seq=before, limit=size + 1)
        token = ""
        if len(jobs) > size:
            jobs = jobs[:size]
            token = self._encode_token(jobs[-1].seq, flt)
        return pb.ListJobsResponse(
            jobs=[self.job_message(j) for j in jobs], next_page_token=token, total_size=total
        )

    @staticmethod
    def _encode_token(seq: int, flt: JobFilter) -> str:
        q = hashlib.sha256(flt.key().encode()).hexdigest()[:16]
        return base64.urlsafe_b64encode(json.dumps({"seq": seq, "q": q}).encode()).decode()

    @staticmethod
    def _decode_token(token: str, flt: JobFilter, context: grpc.ServicerContext) -> int:
        try:
            data = json.loads(base64.urlsafe_b64decode(token.encode()))
            seq, q = int(data["seq"]), str(data["q"])
        except (ValueError, KeyError, TypeError, binascii.Error):
            _abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "page_token is not a token this server issued; start without one",
            )
        if q != hashlib.sha256(flt.key().encode()).hexdigest()[:16]:
            _abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "page_token belongs to a query with other filters; repeat the filters of the "
                "first page or start without a token",
            )
        return seq

    def CancelJob(self, request: pb.CancelJobRequest, context: grpc.ServicerContext) -> pb.Job:  # noqa: N802
        self._job(request.job_id, context)
        try:
            rec = self.scheduler.cancel(request.job_id)
        except JobStateError as e:
            _abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(e))
        return self.job_message(rec)

    async def WatchJob(  # noqa: N802
        self, request: pb.WatchJobRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.JobEvent]:
        """Runs on the event loop (a watcher holds no thread): wakes on each scheduler change
        (or every 0.25 s, for progress) and reads the job from the store."""
        if not request.job_id:
            await _aabort(context, grpc.StatusCode.INVALID_ARGUMENT, "job_id is empty")
        try:
            rec = await asyncio.to_thread(self.scheduler.get, request.job_id)
        except JobNotFound as e:
            await _aabort(context, grpc.StatusCode.NOT_FOUND, str(e))
        msg = self.job_message(rec)
        yield pb.JobEvent(kind=pb.JobEvent.KIND_SNAPSHOT, job=msg)
        last_state, last_pct = rec.state, int(msg.progress_percent)
        while not rec.terminal:
            await self.srv.changed(0.25)  # a scheduler change, or time for a progress step
            try:
                current = await asyncio.to_thread(self.store.get, rec.id)
            except sqlite3.Error:
                continue  # the store is busy or failing: try again at the next poll
            if current is None:
                return
            rec = current
            msg = self.job_message(rec)
            if rec.state != last_state:
                yield pb.JobEvent(kind=pb.JobEvent.KIND_STATE_CHANGED, job=msg)
            elif int(msg.progress_percent) != last_pct:
                yield pb.JobEvent(kind=pb.JobEvent.KIND_PROGRESS, job=msg)
            last_state, last_pct = rec.state, int(msg.progress_percent)

    # ------------------------------------------------------------------ reports
    def GetReport(  # noqa: N802
        self, request: pb.GetReportRequest, context: grpc.ServicerContext
    ) -> pb.GetReportResponse:
        rec = self._job(request.job_id, context)
        if rec.state != SUCCEEDED:
            if rec.state in (QUEUED, RUNNING):
                pct, _ = self.scheduler.progress(rec)
                why = f"is {rec.state} ({pct:.0f}%); call WatchJob or retry when it has finished"
            else:
                why = f"{rec.state}: {rec.error or 'no reason recorded'}; there is no report"
            _abort(context, grpc.StatusCode.FAILED_PRECONDITION, f"job {rec.id} {why}")
        text = self.store.report_json(rec.id)
        if text is None:
            _abort(context, grpc.StatusCode.NOT_FOUND, f"the report of job {rec.id} is missing")
        view = request.view or pb.REPORT_VIEW_FULL
        resp = pb.GetReportResponse(job=self.job_message(rec))
        if view in (pb.REPORT_VIEW_JSON, pb.REPORT_VIEW_FULL):
            resp.report_json = text
        if view in (pb.REPORT_VIEW_TYPED, pb.REPORT_VIEW_FULL):
            resp.report.CopyFrom(report_message(json.loads(text)))
        return resp

    def Aggregate(  # noqa: N802
        self, request: pb.AggregateRequest, context: grpc.ServicerContext
    ) -> pb.AggregateResponse:
        if request.top < 0:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "top must not be negative")
        flt = self._filter(request, context)
        items = [
            agg.Item(rec.id, rec.host_id, digest, rec.created_at)
            for rec, digest in self.store.digests(flt)
        ]
        doc = agg.aggregate(
            items, top=request.top or 10, min_growth_bytes=request.min_growth_bytes or 1
        )
        return aggregate_message(doc)


# ---------------------------------------------------------------------------------- server


def scan_options(config: ServerConfig) -> dict[str, Any]:
    """Options every job's ``poolscope.scan`` gets: the decompression limit and the symbol
    path, whose default cache is the data dir's ``symbols/`` (a ``cache*`` element first)."""
    out: dict[str, Any] = {"max_decompressed": config.max_upload_bytes}
    if config.symbol_path:
        cache = Path(config.data_dir).resolve() / "symbols"
        out["symbol_path"] = f"cache*{cache};{config.symbol_path}"
        out["symbol_timeout"] = config.symbol_timeout_s
    return out


def _load_malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes = (ctypes.c_size_t,)
    fn.restype = ctypes.c_int
    return fn  # type: ignore[no-any-return]


_malloc_trim = _load_malloc_trim()


def _check_tls(cert: str | os.PathLike[str] | None, key: str | os.PathLike[str] | None) -> None:
    """Refuse a TLS configuration that cannot work, before anything listens."""
    if not (cert or key):
        return
    if not (cert and key):
        raise ConfigError(
            "TLS needs both a certificate (--tls-cert) and its private key (--tls-key); "
            f"only the {'certificate' if cert else 'key'} was given"
        )
    for what, path in (("certificate", cert), ("private key", key)):
        try:
            data = Path(path).read_bytes()
        except OSError as e:
            raise ConfigError(f"cannot read the TLS {what} {path}: {e.strerror}") from None
        if b"-----BEGIN" not in data:
            raise ConfigError(f"the TLS {what} {path} is not PEM")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(os.fspath(cert), os.fspath(key))
    except (ssl.SSLError, ValueError) as e:
        raise ConfigError(
            f"the TLS certificate {cert} and key {key} do not load as a pair ({e}): give the "
            "PEM certificate chain and the unencrypted private key that belongs to it"
        ) from None


class PoolscopeServer:
    """The gRPC server on an asyncio event loop of its own thread (``grpc.aio``): uploads,
    WatchJob and health run on the loop and hold no thread however long a client stalls; the
    other calls run on a thread pool (``threads``)."""

    def __init__(self, config: ServerConfig, executor: Executor | None = None) -> None:
        self.config = config
        if config.token is not None and not config.token.strip():
            raise ConfigError("the bearer token is empty: an empty token would let anyone in")
        _check_tls(config.tls_cert, config.tls_key)
        data = Path(config.data_dir)
        self.store = Store(data)
        self.spool = Spool(
            data / "spool",
            config.spool_quota_bytes,
            fsync=config.fsync,
            min_free_bytes=config.min_free_bytes,
        )
        self.root_fds: list[tuple[tuple[str, ...], int]] = []
        for root in config.allowed_roots:
            spellings = tuple(dict.fromkeys((os.path.abspath(root), os.path.realpath(root))))
            try:
                self.root_fds.append((spellings, safepath.open_root(os.fspath(root))))
            except OSError as e:
                raise ConfigError(f"cannot open the allowed root {root}: {e.strerror}") from None
        self.executor = executor or make_executor(config.dask, config.workers)
        self.scheduler = Scheduler(
            self.store,
            self.executor,
            self.spool,
            max_queue=config.max_queue,
            default_timeout_s=config.job_timeout_s,
            max_attempts=config.max_attempts,
            keep_dumps=config.keep_dumps,
            scan_options=scan_options(config),
        )
        self.scheduler.reopen = self._reopen_job
        self.scheduler.on_storage_error = self._store_result
        self._change: asyncio.Future[None] | None = None
        self.uploads = UploadSlots(config.max_uploads, config.max_uploads_per_peer)
        self.path_slots = threading.BoundedSemaphore(max(1, config.threads // 2))
        self.servicer = ScanServicer(self)
        self._store_error: str | None = None
        self.store_errors = 0  # write failures of the job store seen (disk full, I/O errors)
        self._trimming = False
        self._serving: bool | None = None
        self._threads = ThreadPoolExecutor(
            max_workers=config.threads, thread_name_prefix="poolscope-rpc"
        )
        self._loop = asyncio.new_event_loop()
        self._loop.set_default_executor(
            ThreadPoolExecutor(max_workers=16, thread_name_prefix="poolscope-io")
        )
        self._loop_thread = threading.Thread(
            target=self._loop.run_forever, name="poolscope-loop", daemon=True
        )
        self._loop_thread.start()
        self.scheduler.on_change = self._notify_change
        self._monitor: asyncio.Task[None] | None = None
        try:
            self.port = self._call(self._build())
        except BaseException:
            self._close_loop()
            self.executor.close()
            self.store.close()
            raise
        self.started_at = time.time()

    # ------------------------------------------------------------------ the loop
    def _call(self, coro: Any, timeout: float | None = None) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _close_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._loop_thread.join(10)
        self._threads.shutdown(wait=False, cancel_futures=True)

    async def _build(self) -> int:
        cfg = self.config
        self.budget = ByteBudget(cfg.upload_buffer_bytes)
        interceptors = [TokenAuthInterceptor(cfg.token)] if cfg.token else []
        self.server = grpc.aio.server(
            migration_thread_pool=self._threads,
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", cfg.max_message_bytes + (64 << 10)),
                ("grpc.max_send_message_length", -1),
                ("grpc.so_reuseport", 0),
                # No BDP probing: gRPC would grow each stream's receive window to megabytes, and
                # with 64 concurrent uploads the buffered bytes (then the heap) reached GiBs
                # (measured, benches/bench_soak.py); our own buffers are bounded instead.
                ("grpc.http2.bdp_probe", 0),
            ],
        )
        wire.add_servicer(self.servicer, self.server)
        self.health = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (
                SERVICE_NAME,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            self.server,
        )
        if cfg.tls_cert and cfg.tls_key:
            creds = grpc.ssl_server_credentials(
                [(Path(cfg.tls_key).read_bytes(), Path(cfg.tls_cert).read_bytes())]
            )
            port = self.server.add_secure_port(cfg.address, creds)
        else:
            port = self.server.add_insecure_port(cfg.address)
        if not port:
            raise ConfigError(f"cannot listen on {cfg.address}")
        return int(port)

    async def changed(self, timeout_s: float) -> None:
        """Wait (on the loop) until the scheduler's state changes, at most ``timeout_s``."""
        if self._change is None or self._change.done():
            self._change = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(asyncio.shield(self._change), timeout_s)
        except TimeoutError:
            pass

    def _notify_change(self) -> None:
        """From any thread: wake the watchers."""

        def wake() -> None:
            if self._change is not None and not self._change.done():
                self._change.set_result(None)

        try:
            self._loop.call_soon_threadsafe(wake)
        except RuntimeError:
            pass  # the loop is closed

    def trim_memory(self) -> None:
        """Give the heap's free memory back to the OS once no upload is in progress (glibc
        keeps freed chunk buffers of a burst of uploads otherwise)."""
        if _malloc_trim is None or self._trimming:
            return
        self._trimming = True

        def trim() -> None:
            try:
                _malloc_trim(0)
            finally:
                self._trimming = False

        self._loop.run_in_executor(None, trim)

    # ------------------------------------------------------------------ health
    def storage_failed(self, e: BaseException) -> None:
        """The job store could not be written: NOT_SERVING until a write succeeds again."""
        self._store_result(e)

    def _store_result(self, e: BaseException | None) -> None:
        if e is None:
            self._store_error = None
        else:
            self.store_errors += 1
            if self._store_error is None:
                log.warning("the job store cannot be written: %s", e)
            self._store_error = str(e)

    def storage_problem(self) -> str | None:
        """Why the server cannot take work now (the spool or the store cannot be written), or
        None. Probes by writing when an error was seen."""
        why = self.spool.problem()
        if why is not None:
            return why
        if self._store_error is not None:
            if self.store.writable():
                log.info("the job store can be written again")
                self._store_error = None
            else:
                return f"the job store cannot be written ({self._store_error})"
        return None

    async def _set_health(self, serving: bool, why: str | None) -> None:
        if serving == self._serving:
            return
        self._serving = serving
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", SERVICE_NAME):
            await self.health.set(name, status)
        if serving:
            log.info("health: SERVING")
        else:
            log.warning("health: NOT_SERVING: %s", why)

    async def _watch_storage(self) -> None:
        while True:
            try:
                why = await asyncio.to_thread(self.storage_problem)
                await self._set_health(why is None, why)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the monitor must go on
                log.exception("health monitor")
            await asyncio.sleep(0.5)

    def _reopen_job(self, job: JobRecord) -> int:
        """A path job's file after a restart: opened beneath its root again (no links), and
        its content checked against the hash taken at submission."""
        path = job.dump_path or job.file_name
        where = self.servicer._beneath(path)
        if where is None:
            raise RuntimeError(f"{path} is no longer under the server's allowed roots")
        try:
            opened = safepath.open_beneath(where[0], where[1], path)
        except safepath.PathRefused as e:
            raise RuntimeError(str(e)) from None
        try:
            sha = hash_fd(opened.fd, opened.st, self.store, path)
        except BaseException:
            os.close(opened.fd)
            raise
        if sha != job.sha256:
            os.close(opened.fd)
            raise RuntimeError(
                f"{path} changed since it was submitted (sha256 {sha}, submitted as "
                f"{job.sha256}); submit it again"
            )
        return opened.fd

    # ------------------------------------------------------------------ life cycle
    def start(self) -> int:
        self.scheduler.start()

        async def go() -> None:
            await self.server.start()
            why = await asyncio.to_thread(self.storage_problem)
            await self._set_health(why is None, why)
            self._monitor = asyncio.ensure_future(self._watch_storage())

        self._call(go())
        log.info(
            "poolscope serving on port %d (%s executor, %d slots, data %s)",
            self.port,
            self.executor.name,
            self.executor.slots,
            self.config.data_dir,
        )
        return self.port

    def stop(self, grace_s: float = 5.0) -> None:
        async def halt() -> None:
            if self._monitor is not None:
                self._monitor.cancel()
            await self.health.enter_graceful_shutdown()
            await self.server.stop(grace_s)

        try:
            self._call(halt(), timeout=grace_s + 30)
        finally:
            self.scheduler.stop()
            self._close_loop()
            self.store.close()
            for _, fd in self.root_fds:
                os.close(fd)
            self.root_fds = []

    def wait(self) -> None:
        self._call(self.server.wait_for_termination())
