"""The client side of the scan service (what ``poolscope submit/jobs/report/aggregate`` use).

with ServiceClient("127.0.0.1:50051", token="...") as c:
    resp = c.upload("MEMORY.DMP", host_id="web-7", labels={"fleet": "prod"})
    job = c.wait(resp.job.id)
    job, report = c.report(job.id)          # report: the ``scan --json`` document
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

import grpc
import zstandard

from poolscope.service import wire
from poolscope.service.v1 import scan_pb2 as pb
from poolscope.service.v1 import scan_pb2_grpc as pb_grpc

TERMINAL_STATES = frozenset({pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED})
DEFAULT_CHUNK = 1 << 20


def state_name(state: int) -> str:
    return pb.JobState.Name(state).removeprefix("JOB_STATE_").lower()


def retry_after_s(err: grpc.RpcError) -> float | None:
    """The server's retry hint of a RESOURCE_EXHAUSTED error, in seconds."""
    for k, v in err.trailing_metadata() or ():  # type: ignore[attr-defined]
        if k == "retry-after-ms":
            return int(v) / 1000
    return None


def is_zstd_file(path: str | os.PathLike[str]) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"\x28\xb5\x2f\xfd"


def dump_digest(path: str | os.PathLike[str], compressed: bool | None = None) -> tuple[str, int]:
    """(sha256, size) of a dump's bytes; of its decompressed bytes when it is zstd."""
    if compressed is None:
        compressed = is_zstd_file(path)
    h = hashlib.sha256()
    n = 0
    with open(path, "rb") as f:
        if compressed:
            reader: Any = zstandard.ZstdDecompressor(max_window_size=1 << 31).stream_reader(
                f, read_across_frames=True
            )
        else:
            reader = f
        with reader:
            while True:
                data = reader.read(4 << 20)
                if not data:
                    break
                h.update(data)
                n += len(data)
    return h.hexdigest(), n


class _Tee:
    """A reader that hashes and counts what it hands out."""

    def __init__(self, f: BinaryIO, progress: Callable[[int], None] | None, hash_: bool) -> None:
        self.f = f
        self.sha = hashlib.sha256()
        self.progress = progress
        self.hash = hash_

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        if data:
            if self.hash:
                self.sha.update(data)
            if self.progress is not None:
                self.progress(len(data))
        return data


class ServiceClient:
    def __init__(
        self,
        target: str,
        *,
        token: str | None = None,
        tls: bool = False,
        root_certificates: bytes | None = None,
        server_name: str | None = None,
    ) -> None:
        options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", -1),
            ("grpc.max_send_message_length", 64 << 20),
        ]
        if tls or root_certificates is not None:
            if server_name:
                options.append(("grpc.ssl_target_name_override", server_name))
            creds = grpc.ssl_channel_credentials(root_certificates=root_certificates)
            self.channel = grpc.secure_channel(target, creds, options=options)
        else:
            self.channel = grpc.insecure_channel(target, options=options)
        self.stub = pb_grpc.ScanServiceStub(self.channel)
        # UploadDump with chunks serialized by wire.encode_chunk (no protobuf copy per chunk)
        self._upload = self.channel.stream_unary(
            wire.UPLOAD_METHOD,
            request_serializer=wire.serialize_upload_request,
            response_deserializer=pb.UploadDumpResponse.FromString,
            _registered_method=True,
        )
        self.metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {token}"),) if token else ()
        )

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ submit
    def upload(
        self,
        path: str | os.PathLike[str],
        *,
        host_id: str = "",
        labels: dict[str, str] | None = None,
        compress: bool = True,
        level: int = 3,
        chunk_size: int = DEFAULT_CHUNK,
        priority: int = 0,
        timeout_seconds: float = 0.0,
        file_name: str | None = None,
        expected_sha256: str = "",
        progress: Callable[[int], None] | None = None,
        rpc_timeout: float | None = None,
        verify: bool = False,
    ) -> pb.UploadDumpResponse:
        """Stream a dump (``.dmp``, or an already compressed ``.dmp.zst`` sent as it is).
        ``compress`` compresses a plain dump with zstd on the way; ``progress`` is called with
        the bytes of the file read so far (increments); ``verify`` hashes the file while sending
        and checks the server's hash against it. The metadata always declares the dump's size
        and sha256 (of the decompressed bytes for a ``.zst``), computed by reading the file once
        before sending unless ``expected_sha256`` is given: the server takes only uploads it can
        check are complete."""
        p = Path(path)
        size = p.stat().st_size
        pre_compressed = is_zstd_file(p)
        zstd = pre_compressed or compress
        name = file_name or (p.name[:-4] if pre_compressed and p.name.endswith(".zst") else p.name)
        tee_holder: list[_Tee] = []
        # The server takes only uploads it can check are complete: declare the dump's size
        # and sha256 (of the decompressed bytes for a .zst), computed before sending.
        if expected_sha256:
            dump_size = 0 if pre_compressed else size
        else:
            expected_sha256, dump_size = dump_digest(p, pre_compressed)

        def requests() -> Iterator[pb.UploadDumpRequest | bytes]:
            yield pb.UploadDumpRequest(
                metadata=pb.DumpMetadata(
                    file_name=name,
                    host_id=host_id,
                    labels=labels or {},
                    compression=pb.COMPRESSION_ZSTD if zstd else pb.COMPRESSION_NONE,
                    expected_sha256=expected_sha256,
                    priority=priority,
                    timeout_seconds=timeout_seconds,
                    size_bytes=dump_size,
                )
            )
            with open(p, "rb") as f:
                tee = _Tee(f, progress, verify)
                tee_holder.append(tee)
                if pre_compressed or not compress:
                    while True:
                        data = tee.read(chunk_size)
                        if not data:
                            return
                        yield wire.encode_chunk(data)
                cctx = zstandard.ZstdCompressor(level=level, write_checksum=True)
                pending: list[bytes] = []
                pending_n = 0
                for out in cctx.read_to_iter(
                    cast(IO[bytes], tee), size=size, read_size=chunk_size, write_size=chunk_size
                ):
                    pending.append(out)
                    pending_n += len(out)
                    if pending_n >= chunk_size:
                        yield wire.encode_chunk(b"".join(pending))
                        pending, pending_n = [], 0
                if pending:
                    yield wire.encode_chunk(b"".join(pending))

        resp: pb.UploadDumpResponse = self._upload(
            requests(), metadata=self.metadata, timeout=rpc_timeout
        )
        if verify and tee_holder and not pre_compressed:
            local = tee_holder[0].sha.hexdigest()
            if resp.job.sha256 and resp.job.sha256 != local:
                raise RuntimeError(
                    f"the server hashed {resp.job.sha256} but the file hashes {local}: the "
                    "upload was corrupted"
                )
        return resp

    def submit_path(
        self,
        path: str,
        *,
        host_id: str = "",
        labels: dict[str, str] | None = None,
        priority: int = 0,
        timeout_seconds: float = 0.0,
    ) -> pb.SubmitPathResponse:
        return self.stub.SubmitPath(
            pb.SubmitPathRequest(
                path=path,
                host_id=host_id,
                labels=labels or {},
                priority=priority,
                timeout_seconds=timeout_seconds,
            ),
            metadata=self.metadata,
        )

    # ------------------------------------------------------------------ jobs
    def get_job(self, job_id: str) -> pb.Job:
        return self.stub.GetJob(pb.GetJobRequest(job_id=job_id), metadata=self.metadata)

    def cancel(self, job_id: str) -> pb.Job:
        return self.stub.CancelJob(pb.CancelJobRequest(job_id=job_id), metadata=self.metadata)

    def list_jobs(
        self,
        *,
        states: list[int] | None = None,
        host_id: str = "",
        labels: dict[str, str] | None = None,
        created_after: float | None = None,
        created_before: float | None = None,
        page_size: int = 100,
        limit: int | None = None,
    ) -> Iterator[pb.Job]:
        """Every matching job, newest first, across pages (at most ``limit``)."""
        req = pb.ListJobsRequest(
            states=cast(Any, states or []),
            host_id=host_id,
            labels=labels or {},
            page_size=page_size,
        )
        if created_after is not None:
            req.created_after.FromNanoseconds(int(created_after * 1e9))
        if created_before is not None:
            req.created_before.FromNanoseconds(int(created_before * 1e9))
        n = 0
        while True:
            resp = self.stub.ListJobs(req, metadata=self.metadata)
            for job in resp.jobs:
                yield job
                n += 1
                if limit is not None and n >= limit:
                    return
            if not resp.next_page_token:
                return
            req.page_token = resp.next_page_token

    def watch(self, job_id: str, timeout: float | None = None) -> Iterator[pb.JobEvent]:
        yield from self.stub.WatchJob(
            pb.WatchJobRequest(job_id=job_id), metadata=self.metadata, timeout=timeout
        )

    def wait(
        self,
        job_id: str,
        *,
        timeout: float | None = None,
        on_event: Callable[[pb.JobEvent], None] | None = None,
    ) -> pb.Job:
        """Follow ``WatchJob`` until the job finishes (reconnecting when the server restarts)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                for ev in self.watch(job_id, timeout=left):
                    if on_event is not None:
                        on_event(ev)
                    if ev.job.state in TERMINAL_STATES:
                        return ev.job
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.UNAVAILABLE:  # type: ignore[attr-defined]
                    raise
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} did not finish within {timeout} s")
            time.sleep(0.2)

    # ------------------------------------------------------------------ reports
    def report(self, job_id: str) -> tuple[pb.Job, dict[str, Any]]:
        """The finished job and its report document."""
        import json

        resp = self.stub.GetReport(
            pb.GetReportRequest(job_id=job_id, view=pb.REPORT_VIEW_JSON), metadata=self.metadata
        )
        return resp.job, json.loads(resp.report_json)

    def report_message(
        self, job_id: str, view: pb.ReportView = pb.REPORT_VIEW_FULL
    ) -> pb.GetReportResponse:
        return self.stub.GetReport(
            pb.GetReportRequest(job_id=job_id, view=view), metadata=self.metadata
        )

    def aggregate(
        self,
        *,
        host_id: str = "",
        labels: dict[str, str] | None = None,
        created_after: float | None = None,
        created_before: float | None = None,
        top: int = 10,
        min_growth_bytes: int = 0,
    ) -> dict[str, Any]:
        """The ``Aggregate`` answer as the aggregate document (``aggregate.aggregate`` keys)."""
        req = pb.AggregateRequest(
            host_id=host_id, labels=labels or {}, top=top, min_growth_bytes=min_growth_bytes
        )
        if created_after is not None:
            req.created_after.FromNanoseconds(int(created_after * 1e9))
        if created_before is not None:
            req.created_before.FromNanoseconds(int(created_before * 1e9))
        resp = self.stub.Aggregate(req, metadata=self.metadata)
        return message_dict(resp)


def message_dict(msg: Any) -> dict[str, Any]:
    """A message as a dict of every field (defaults included), integers as ints."""
    out: dict[str, Any] = {}
    for f in msg.DESCRIPTOR.fields:
        v = getattr(msg, f.name)
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            out[f.name] = dict(v)
        elif f.is_repeated:
            out[f.name] = [message_dict(x) if f.message_type is not None else x for x in v]
        elif f.message_type is not None:
            out[f.name] = message_dict(v)
        else:
            out[f.name] = v
    return out
