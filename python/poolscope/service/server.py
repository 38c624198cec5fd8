"""The gRPC server: ``ScanService`` (proto/poolscope/v1/scan.proto), standard health checking
(``grpc.health.v1``, open without a token so that load balancers can probe it) and server
reflection, optional bearer-token auth (``authorization: Bearer <token>`` metadata →
UNAUTHENTICATED otherwise) and optional TLS.

    server = PoolscopeServer(ServerConfig(address="127.0.0.1:0", data_dir="data"))
    port = server.start()
    ...
    server.stop()
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import grpc
from google.protobuf import json_format, timestamp_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from poolscope.report import iso_time
from poolscope.service import aggregate as agg
from poolscope.service import wire
from poolscope.service.executors import Executor, make_executor
from poolscope.service.jobs import JobNotFound, JobStateError, QueueFull, Scheduler, ShuttingDown
from poolscope.service.spool import (
    DEFAULT_MAX_ZSTD_WINDOW,
    BadUpload,
    Spool,
    UploadRefused,
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
    fsync: bool = True
    max_attempts: int = 3
    symbol_path: str | None = None
    """WinDbg symbol path for the kernels' PDBs (``srv*URL`` elements download into
    ``DATA_DIR/symbols``, shared by every job; one download per GUID across scan processes)."""
    symbol_timeout_s: float = 30.0


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


class TokenAuthInterceptor(grpc.ServerInterceptor):
    """Every call but health checks must carry ``authorization: Bearer <token>``."""

    def __init__(
        self, token: str, open_prefixes: Iterable[str] = ("/grpc.health.v1.Health/",)
    ) -> None:
        self._expected = f"Bearer {token}".encode()
        self._open = tuple(open_prefixes)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method  # type: ignore[attr-defined]
        if method.startswith(self._open):
            return continuation(handler_call_details)
        metadata = handler_call_details.invocation_metadata or ()  # type: ignore[attr-defined]
        given = next((v for k, v in metadata if k == "authorization"), None)
        if given is not None:
            raw = given.encode() if isinstance(given, str) else bytes(given)
            if hmac.compare_digest(raw, self._expected):
                return continuation(handler_call_details)
        why = "no bearer token" if given is None else "a wrong bearer token"
        message = (
            f"the call carries {why}: send the metadata 'authorization: Bearer <token>' with the "
            "server's token (poolscope --token or the POOLSCOPE_TOKEN environment variable)"
        )
        handler = continuation(handler_call_details)
        return _denying(handler, message)


def _denying(handler: grpc.RpcMethodHandler | None, message: str) -> grpc.RpcMethodHandler | None:
    if handler is None:
        return None

    def deny(_request: Any, context: grpc.ServicerContext) -> NoReturn:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        raise AssertionError("unreachable")

    kw = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(deny, **kw)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(deny, **kw)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(deny, **kw)
    return grpc.unary_unary_rpc_method_handler(deny, **kw)


# ---------------------------------------------------------------------------------- service


def _abort(
    context: grpc.ServicerContext,
    code: grpc.StatusCode,
    message: str,
    retry_after_s: float | None = None,
) -> NoReturn:
    if retry_after_s is not None:
        context.set_trailing_metadata(((RETRY_AFTER_KEY, str(int(retry_after_s * 1000))),))
    context.abort(code, message)
    raise AssertionError("unreachable")


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
    def _labels(labels: Any, context: grpc.ServicerContext) -> dict[str, str]:
        out = dict(labels)
        if len(out) > MAX_LABELS:
            _abort(
                context, grpc.StatusCode.INVALID_ARGUMENT, f"at most {MAX_LABELS} labels per job"
            )
        for k, v in out.items():
            if not k or len(k) > 128 or len(v) > 1024:
                _abort(
                    context,
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"label {k[:40]!r}: keys must be 1..128 characters, values at most 1024",
                )
        return out

    @staticmethod
    def _host(host_id: str, context: grpc.ServicerContext) -> str:
        if len(host_id) > 256:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "host_id is longer than 256")
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
    def UploadDump(  # noqa: N802 - gRPC method name
        self,
        request_iterator: Iterator[pb.UploadDumpRequest | memoryview],
        context: grpc.ServicerContext,
    ) -> pb.UploadDumpResponse:
        first = next(request_iterator, None)
        if not isinstance(first, pb.UploadDumpRequest) or first.WhichOneof("payload") != "metadata":
            _abort(
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
            _abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"unknown compression {md.compression}: use COMPRESSION_NONE or COMPRESSION_ZSTD",
            )
        expected = md.expected_sha256.strip().lower()
        if expected and (len(expected) != 64 or any(c not in "0123456789abcdef" for c in expected)):
            _abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "expected_sha256 must be 64 hexadecimal digits (or empty)",
            )
        limit = self.cfg.max_upload_bytes
        if md.size_bytes > limit:
            _abort(
                context,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the dump ({human_bytes(md.size_bytes)}) is larger than the server's upload "
                f"limit of {human_bytes(limit)}: scan it with 'poolscope scan' locally or ask "
                "for a larger --max-upload",
            )
        labels = self._labels(md.labels, context)
        host = self._host(md.host_id, context)
        name = os.path.basename(md.file_name.replace("\\", "/"))[:255] or "upload.dmp"
        received = 0
        try:
            with (
                self.scheduler.reservation(),
                self.spool.upload(
                    max_bytes=limit,
                    compression=compression,
                    max_window=self.cfg.max_zstd_window,
                    declared_size=md.size_bytes,
                ) as sink,
            ):
                for msg in request_iterator:
                    if isinstance(msg, memoryview):  # the fast path (wire.py)
                        sink.write(msg)
                    elif msg.WhichOneof("payload") == "chunk":
                        sink.write(msg.chunk)
                    else:
                        _abort(
                            context,
                            grpc.StatusCode.INVALID_ARGUMENT,
                            "metadata may be sent only once, in the first message",
                        )
                if not context.is_active():
                    _abort(context, grpc.StatusCode.CANCELLED, "the upload was cancelled")
                sha = sink.finish()
                received = sink.received
                if expected and sha != expected:
                    raise BadUpload(
                        f"the dump's sha256 is {sha}, not the expected {expected}: the upload is "
                        "corrupt or it is another file"
                    )
                rec = JobRecord(
                    id=new_job_id(),
                    state=QUEUED,
                    source="upload",
                    file_name=name,
                    sha256=sha,
                    size_bytes=sink.size,
                    timeout_s=md.timeout_seconds,
                    host_id=host,
                    labels=labels,
                    priority=md.priority,
                    spooled=True,
                )
                # A dump already submitted joins its job (the upload's file is dropped);
                # otherwise the file is spooled for good, then the job queued.
                job, deduplicated = self.scheduler.submit(rec, dedup_only=True)
                if job is None:
                    rec.dump_path = str(self.spool.settle(sink))
                    job, deduplicated = self.scheduler.submit(rec)
                assert job is not None
        except QueueFull as e:
            _abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, str(e), e.retry_after_s)
        except UploadRefused as e:
            _abort(context, getattr(grpc.StatusCode, e.code), str(e), e.retry_after_s)
        except ShuttingDown as e:
            _abort(context, grpc.StatusCode.UNAVAILABLE, str(e))
        log.info(
            "upload %s (%s, %s) -> job %s%s",
            name,
            human_bytes(rec.size_bytes),
            compression,
            job.id,
            " (deduplicated)" if deduplicated else "",
        )
        return pb.UploadDumpResponse(
            job=self.job_message(job), deduplicated=deduplicated, received_bytes=received
        )

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
        path = request.path
        if not path or not os.path.isabs(path) or "\x00" in path:
            _abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"path must be an absolute path on the server, got {path!r}",
            )
        real = os.path.realpath(path)
        if not any(real == r or real.startswith(r.rstrip(os.sep) + os.sep) for r in self.roots):
            via = "" if real == os.path.normpath(path) else f" (it resolves to {real})"
            _abort(
                context,
                grpc.StatusCode.PERMISSION_DENIED,
                f"{path} is outside the server's allowed roots{via}; allowed: "
                f"{', '.join(self.roots)}",
            )
        try:
            fd = os.open(real, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            _abort(context, grpc.StatusCode.NOT_FOUND, f"no such file on the server: {path}")
        except PermissionError:
            _abort(context, grpc.StatusCode.PERMISSION_DENIED, f"the server cannot read {path}")
        except OSError as e:
            _abort(context, grpc.StatusCode.PERMISSION_DENIED, f"cannot open {path}: {e.strerror}")
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"{path} is not a regular file")
        with os.fdopen(fd, "rb") as f:
            if st.st_size > self.cfg.max_upload_bytes:
                _abort(
                    context,
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"{path} ({human_bytes(st.st_size)}) is larger than the server's limit of "
                    f"{human_bytes(self.cfg.max_upload_bytes)} (--max-upload)",
                )
            key = (real, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            sha = self.store.path_hash(*key)
            if sha is None:
                sha = hashlib.file_digest(f, "sha256").hexdigest()
                self.store.remember_path_hash(*key, sha)
        rec = JobRecord(
            id=new_job_id(),
            state=QUEUED,
            source="path",
            file_name=real,
            sha256=sha,
            size_bytes=st.st_size,
            timeout_s=request.timeout_seconds,
            host_id=self._host(request.host_id, context),
            labels=self._labels(request.labels, context),
            priority=request.priority,
            dump_path=real,
            spooled=False,
        )
        try:
            with self.scheduler.reservation():
                job, deduplicated = self.scheduler.submit(rec)
                assert job is not None
        except QueueFull as e:
            _abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, str(e), e.retry_after_s)
        except ShuttingDown as e:
            _abort(context, grpc.StatusCode.UNAVAILABLE, str(e))
        log.info("path %s -> job %s%s", real, job.id, " (deduplicated)" if deduplicated else "")
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

    def WatchJob(  # noqa: N802
        self, request: pb.WatchJobRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.JobEvent]:
        rec = self._job(request.job_id, context)
        msg = self.job_message(rec)
        yield pb.JobEvent(kind=pb.JobEvent.KIND_SNAPSHOT, job=msg)
        last_state, last_pct = rec.state, int(msg.progress_percent)
        version = self.scheduler.version
        while not rec.terminal and context.is_active():
            version = self.scheduler.wait_for_change(version, 0.25)
            current = self.store.get(rec.id)
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


class PoolscopeServer:
    def __init__(self, config: ServerConfig, executor: Executor | None = None) -> None:
        self.config = config
        data = Path(config.data_dir)
        self.store = Store(data)
        self.spool = Spool(data / "spool", config.spool_quota_bytes, fsync=config.fsync)
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
        interceptors = [TokenAuthInterceptor(config.token)] if config.token else []
        self.server = grpc.server(
            ThreadPoolExecutor(max_workers=config.threads, thread_name_prefix="poolscope-rpc"),
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", config.max_message_bytes + (64 << 10)),
                ("grpc.max_send_message_length", -1),
                ("grpc.so_reuseport", 0),
            ],
        )
        self.servicer = ScanServicer(self)
        wire.add_servicer(self.servicer, self.server)
        self.health = health.HealthServicer(experimental_non_blocking=True)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (
                SERVICE_NAME,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            self.server,
        )
        if config.tls_cert or config.tls_key:
            if not (config.tls_cert and config.tls_key):
                raise ValueError("TLS needs both a certificate (--tls-cert) and a key (--tls-key)")
            creds = grpc.ssl_server_credentials(
                [(Path(config.tls_key).read_bytes(), Path(config.tls_cert).read_bytes())]
            )
            self.port = self.server.add_secure_port(config.address, creds)
        else:
            self.port = self.server.add_insecure_port(config.address)
        if not self.port:
            raise OSError(f"cannot listen on {config.address}")
        self.started_at = time.time()

    def start(self) -> int:
        self.scheduler.start()
        self.server.start()
        for name in ("", SERVICE_NAME):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "poolscope serving on port %d (%s executor, %d slots, data %s)",
            self.port,
            self.executor.name,
            self.executor.slots,
            self.config.data_dir,
        )
        return self.port

    def stop(self, grace_s: float = 5.0) -> None:
        self.health.enter_graceful_shutdown()
        self.server.stop(grace_s).wait()
        self.scheduler.stop()
        self.store.close()

    def wait(self) -> None:
        self.server.wait_for_termination()
