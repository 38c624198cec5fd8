"""The scan service against a real gRPC server on a loopback port: uploads, reports, scheduling,
cancellation, limits, auth, SubmitPath roots, persistence and aggregation."""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
import zstandard
from grpc_health.v1 import health_pb2, health_pb2_grpc

import poolscope
from poolscope import forge
from poolscope.service import wire
from poolscope.service.client import ServiceClient, retry_after_s, state_name
from poolscope.service.executors import LocalExecutor
from poolscope.service.v1 import scan_pb2 as pb
from service_util import (
    GatedExecutor,
    comparable,
    rpc_error,
    running_server,
    wait_state,
    wait_until,
)

SMALL = {"ram_mib": 32, "fill": "zero"}


@pytest.fixture(scope="module")
def small_dump(forged):
    return forged("win7sp1", **SMALL)[0]


@pytest.fixture(scope="module")
def pattern_dump(forged):
    """Small, and not sparse: its pages hold a fill pattern."""
    return forged("win7sp1", ram_mib=32)[0]


def holding_executor(hold_s: float, slots: int = 1) -> LocalExecutor:
    """Real scan processes that wait ``hold_s`` before each scan (POOLSCOPE_SCAN_HOLD_S), so a
    test can stop a scan that is certainly still running."""
    return LocalExecutor(slots, env={"POOLSCOPE_SCAN_HOLD_S": str(hold_s)})


@pytest.fixture(scope="module")
def slow_dump(forged):
    """1 GiB sparse (win7sp1-leak)."""
    return forged("win7sp1-leak")[0]


def leak_overrides(count: int, when: str) -> dict:
    pool = copy.deepcopy(forge.builtin("win7sp1").to_dict()["pool"])
    pool["big"].append({"tag": "Leak", "pool": "nonpaged", "count": count, "bytes": 65536})
    return dict(SMALL, pool=pool, system_time=when)


# ---------------------------------------------------------------------------------- reports


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "zstd"])
def test_upload_report_equals_direct_scan(tmp_path, pattern_dump, compress):
    direct = poolscope.scan(pattern_dump).to_dict()
    with running_server(tmp_path / "data") as srv:
        resp = srv.client.upload(
            pattern_dump, host_id="h1", labels={"fleet": "test"}, compress=compress, verify=True
        )
        assert not resp.deduplicated
        assert resp.job.file_name == pattern_dump.name
        assert resp.job.size_bytes == pattern_dump.stat().st_size
        if compress:
            assert resp.received_bytes < resp.job.size_bytes
        job = srv.client.wait(resp.job.id, timeout=60)
        assert state_name(job.state) == "succeeded", job.error
        assert job.progress_percent == 100 and job.dump_time == direct["dump"]["system_time"]
        _, report = srv.client.report(job.id)
        assert comparable(report) == comparable(direct)
        assert report["dump"]["path"] == pattern_dump.name  # the uploaded name, not the spool
        # the typed view carries the same figures
        typed = srv.client.report_message(job.id, pb.REPORT_VIEW_TYPED)
        assert typed.report_json == ""
        r = typed.report
        assert r.dump.bugcheck.code == direct["dump"]["bugcheck"]["code"]
        assert r.dump.build == direct["dump"]["build"]
        assert [u.tag for u in r.poolused] == [u["tag"] for u in direct["poolused"]]
        assert [u.nonpaged_bytes for u in r.poolused] == [
            u["nonpaged_bytes"] for u in direct["poolused"]
        ]
        assert r.memory.nonpaged_pool_pages == direct["memory"]["nonpaged_pool_pages"]
        assert r.pool_scan.pages_scanned == direct["pool_scan"]["pages_scanned"]
        assert len(r.bigpool) == len(direct["bigpool"])
        assert {t.tag for t in r.tag_owners} == set(direct["tag_owners"])
        assert [json.loads(f.evidence_json) for f in r.findings] == [
            f["evidence"] for f in direct["findings"]
        ]
        assert r.verifier.status == direct["verifier"]["status"]
        # the spooled dump is deleted once scanned (default policy)
        assert not list((srv.data_dir / "spool").glob("*.dmp"))


def test_verifier_dump_typed_sections(tmp_path, forged):
    path, _ = forged("win7sp1-verifier")
    direct = poolscope.scan(path).to_dict()
    with running_server(tmp_path / "data") as srv:
        job = srv.client.wait(srv.client.upload(path).job.id, timeout=60)
        _, report = srv.client.report(job.id)
        assert comparable(report) == comparable(direct)
        v = srv.client.report_message(job.id).report.verifier
        assert v.enabled and [d.name for d in v.drivers] == [
            d["name"] for d in direct["verifier"]["drivers"]
        ]
        assert v.tracked_total == direct["verifier"]["tracked_total"]


def test_32_concurrent_uploads(tmp_path, forged):
    dumps = [forged("win7sp1", **SMALL, uptime_s=1000.0 + i)[0] for i in range(32)]
    with running_server(tmp_path / "data", workers=2, max_queue=64) as srv:

        def upload(i: int) -> pb.UploadDumpResponse:
            with ServiceClient(srv.target) as c:
                return c.upload(dumps[i], host_id=f"h{i % 4}", compress=i % 2 == 0)

        with ThreadPoolExecutor(32) as pool:
            responses = list(pool.map(upload, range(32), timeout=120))
        ids = {r.job.id for r in responses}
        assert len(ids) == 32 and not any(r.deduplicated for r in responses)
        for job_id in ids:
            job = srv.client.wait(job_id, timeout=120)
            assert state_name(job.state) == "succeeded", job.error
        listed = list(srv.client.list_jobs(page_size=10))
        assert {j.id for j in listed} == ids
        uptimes = set()
        for job_id in ids:
            _, report = srv.client.report(job_id)
            uptimes.add(report["dump"]["uptime_s"])
        assert uptimes == {1000.0 + i for i in range(32)}


# ---------------------------------------------------------------------------------- scheduling


def test_full_queue_is_resource_exhausted_with_retry_hint(tmp_path, forged):
    dumps = [forged("win7sp1", **SMALL, uptime_s=2000.0 + i)[0] for i in range(4)]
    gated = GatedExecutor(slots=1)
    with running_server(tmp_path / "data", executor=gated, max_queue=2) as srv:
        first = srv.client.upload(dumps[0]).job
        assert gated.started.wait(10)  # the first job holds the only slot
        wait_state(srv.client, first.id, pb.JOB_STATE_RUNNING)
        queued = [srv.client.upload(d).job for d in dumps[1:3]]
        assert [j.queue_position for j in queued] == [1, 2]
        err = rpc_error(lambda: srv.client.upload(dumps[3]))
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "queue is full" in err.details() and "retry" in err.details()
        assert retry_after_s(err) is not None and retry_after_s(err) >= 1
        # the same for SubmitPath... (no roots here: PERMISSION_DENIED comes first), and a
        # duplicate of a queued dump still answers: it needs no queue place? It does (the
        # server cannot know before the upload ends); after the gate opens all finish.
        gated.gate.set()
        for j in [first, *queued]:
            assert state_name(srv.client.wait(j.id, timeout=60).state) == "succeeded"
        # room again
        last = srv.client.upload(dumps[3]).job
        assert state_name(srv.client.wait(last.id, timeout=60).state) == "succeeded"


def test_priority_order(tmp_path, forged):
    dumps = [forged("win7sp1", **SMALL, uptime_s=3000.0 + i)[0] for i in range(4)]
    gated = GatedExecutor(slots=1)
    with running_server(tmp_path / "data", executor=gated) as srv:
        blocker = srv.client.upload(dumps[0]).job
        assert gated.started.wait(10)
        low = srv.client.upload(dumps[1], priority=-1).job
        mid = srv.client.upload(dumps[2]).job
        high = srv.client.upload(dumps[3], priority=5).job
        positions = [srv.client.get_job(j.id).queue_position for j in (high, mid, low)]
        assert positions == [1, 2, 3]
        gated.gate.set()
        done = [srv.client.wait(j.id, timeout=60) for j in (blocker, low, mid, high)]
        starts = {j.id: j.start_time.ToNanoseconds() for j in done}
        assert starts[high.id] < starts[mid.id] < starts[low.id]


def test_duplicate_upload_is_deduplicated(tmp_path, small_dump):
    root = tmp_path / "root"
    root.mkdir()
    copy_ = root / "same.dmp"
    shutil.copyfile(small_dump, copy_)
    with running_server(tmp_path / "data", allowed_roots=[root]) as srv:
        a = srv.client.upload(small_dump, compress=False)
        b = srv.client.upload(small_dump, compress=True)
        assert not a.deduplicated and b.deduplicated and b.job.id == a.job.id
        assert b.job.submissions == 2
        srv.client.wait(a.job.id, timeout=60)
        c = srv.client.upload(small_dump)  # after it finished: the same job and report
        d = srv.client.submit_path(str(copy_))  # same content by another way
        assert c.deduplicated and d.deduplicated and c.job.id == d.job.id == a.job.id
        assert state_name(d.job.state) == "succeeded" and d.job.submissions == 4
        assert len(list(srv.client.list_jobs())) == 1


def test_cancel_queued_job(tmp_path, forged):
    dumps = [forged("win7sp1", **SMALL, uptime_s=4000.0 + i)[0] for i in range(2)]
    gated = GatedExecutor(slots=1)
    with running_server(tmp_path / "data", executor=gated) as srv:
        first = srv.client.upload(dumps[0]).job
        assert gated.started.wait(10)
        queued = srv.client.upload(dumps[1]).job
        assert state_name(queued.state) == "queued"
        cancelled = srv.client.cancel(queued.id)
        assert state_name(cancelled.state) == "cancelled"
        assert "queued" in cancelled.error
        err = rpc_error(lambda: srv.client.cancel(queued.id))
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
        err = rpc_error(lambda: srv.client.report(queued.id))
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and "cancelled" in err.details()
        gated.gate.set()
        assert state_name(srv.client.wait(first.id, timeout=60).state) == "succeeded"
        assert state_name(srv.client.get_job(queued.id).state) == "cancelled"
        # a cancelled dump may be submitted again: a new job
        again = srv.client.upload(dumps[1])
        assert not again.deduplicated and again.job.id != queued.id


def test_cancel_running_job_kills_the_scan(tmp_path, small_dump, forged):
    with running_server(tmp_path / "data", executor=holding_executor(60)) as srv:
        job = srv.client.upload(small_dump).job
        wait_state(srv.client, job.id, pb.JOB_STATE_RUNNING)
        procs = srv.server.executor._procs
        assert wait_until(lambda: procs[0] is not None and procs[0].alive(), 10)
        proc = procs[0]
        time.sleep(0.2)  # well into the scan
        t0 = time.monotonic()
        cancelled = srv.client.cancel(job.id)
        assert time.monotonic() - t0 < 5.0
        assert state_name(cancelled.state) == "cancelled" and "running" in cancelled.error
        assert not proc.alive()  # the scan process was killed (and reaped)
        with pytest.raises(ProcessLookupError):
            os.kill(proc.proc.pid, 0)
        # the slot works on (with a fresh scan process, which holds no more)
        srv.server.executor.env["POOLSCOPE_SCAN_HOLD_S"] = "0"
        nxt = srv.client.upload(forged("win7sp1", **SMALL, uptime_s=11.0)[0]).job
        assert state_name(srv.client.wait(nxt.id, timeout=60).state) == "succeeded"


def test_watch_job_streams_progress(tmp_path, small_dump):
    with running_server(tmp_path / "data", executor=holding_executor(1.5)) as srv:
        job = srv.client.upload(small_dump).job
        events = []
        final = srv.client.wait(job.id, timeout=60, on_event=events.append)
        assert state_name(final.state) == "succeeded", final.error
        kinds = [e.kind for e in events]
        assert kinds[0] == pb.JobEvent.KIND_SNAPSHOT
        states = [state_name(e.job.state) for e in events if e.kind != pb.JobEvent.KIND_PROGRESS]
        assert states[-1] == "succeeded" and "running" in states
        progress = [e.job.progress_percent for e in events if e.kind == pb.JobEvent.KIND_PROGRESS]
        assert len(progress) >= 2 and progress == sorted(progress) and 0 < progress[0] < 100
        assert all(e.job.stage == "scanning" for e in events if e.kind == pb.JobEvent.KIND_PROGRESS)
        assert events[-1].job.progress_percent == 100 and events[-1].job.stage == "done"


def test_job_timeout(tmp_path, small_dump):
    with running_server(tmp_path / "data", executor=holding_executor(60)) as srv:
        job = srv.client.upload(small_dump, timeout_seconds=0.3).job
        assert job.timeout_seconds == pytest.approx(0.3)
        final = srv.client.wait(job.id, timeout=60)
        assert state_name(final.state) == "failed" and "timeout" in final.error


def test_hostile_dumps_fail_their_job_only(tmp_path, small_dump):
    garbage = tmp_path / "garbage.dmp"
    garbage.write_bytes(b"PAGEDU64" + os.urandom(1 << 16))
    truncated = tmp_path / "truncated.dmp"
    truncated.write_bytes(small_dump.read_bytes()[:0x1000])  # header cut short
    with running_server(tmp_path / "data", workers=1) as srv:
        for bad in (garbage, truncated):
            job = srv.client.wait(srv.client.upload(bad).job.id, timeout=60)
            assert state_name(job.state) == "failed"
            assert "Error" in job.error, job.error  # e.g. DumpFormatError: ...
        # an idle scan process that died is replaced for the next scan
        p = srv.server.executor._procs[0]
        assert p is not None
        os.kill(p.proc.pid, signal.SIGKILL)
        job = srv.client.wait(srv.client.upload(small_dump).job.id, timeout=60)
        assert state_name(job.state) == "succeeded", job.error
        health = health_pb2_grpc.HealthStub(srv.client.channel)
        assert health.Check(health_pb2.HealthCheckRequest()).status == 1


def test_scan_process_crash_fails_job(tmp_path, small_dump, forged):
    with running_server(tmp_path / "data", executor=holding_executor(60)) as srv:
        job = srv.client.upload(small_dump).job
        wait_state(srv.client, job.id, pb.JOB_STATE_RUNNING)
        procs = srv.server.executor._procs
        assert wait_until(lambda: procs[0] is not None and procs[0].alive(), 10)
        time.sleep(0.2)
        os.kill(procs[0].proc.pid, signal.SIGSEGV)
        final = srv.client.wait(job.id, timeout=30)
        assert state_name(final.state) == "failed"
        assert "SIGSEGV" in final.error and "service itself is unaffected" in final.error
        srv.server.executor.env["POOLSCOPE_SCAN_HOLD_S"] = "0"
        nxt = srv.client.upload(forged("win7sp1", **SMALL, uptime_s=12.0)[0]).job
        assert state_name(srv.client.wait(nxt.id, timeout=60).state) == "succeeded"


# ---------------------------------------------------------------------------------- limits


def _raw_upload(client: ServiceClient, metadata: pb.DumpMetadata, chunks):
    def requests():
        yield pb.UploadDumpRequest(metadata=metadata)
        for c in chunks:
            yield wire.encode_chunk(c)

    return client._upload(requests(), metadata=client.metadata, timeout=60)


def test_upload_limits(tmp_path, pattern_dump):
    limit = 4 << 20
    with running_server(tmp_path / "data", max_upload_bytes=limit) as srv:
        # declared size over the limit: refused before any byte
        err = rpc_error(lambda: srv.client.upload(pattern_dump, compress=False))
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "upload limit" in err.details()
        # no declared size (a hash only): refused once the bytes pass the limit
        chunks = (b"\x01" * (1 << 20) for _ in range(8))
        meta = pb.DumpMetadata(file_name="big.dmp", expected_sha256="0" * 64)
        err = rpc_error(lambda: _raw_upload(srv.client, meta, chunks))
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # a zstd bomb: 1 GiB of zeros in ~32 KiB, no content size, refused at the limit
        cobj = zstandard.ZstdCompressor(level=3).compressobj()
        bomb = b"".join([cobj.compress(bytes(1 << 20)) for _ in range(1024)]) + cobj.flush()
        assert len(bomb) < 1 << 20
        t0 = time.monotonic()
        meta = pb.DumpMetadata(
            file_name="bomb.dmp", compression=pb.COMPRESSION_ZSTD, expected_sha256="0" * 64
        )
        err = rpc_error(lambda: _raw_upload(srv.client, meta, [bomb]))
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "decompresses to more than" in err.details()
        assert time.monotonic() - t0 < 10
        # a window beyond the server's limit
        params = zstandard.ZstdCompressionParameters.from_level(3, window_log=30)
        cobj = zstandard.ZstdCompressor(compression_params=params).compressobj()
        wide = cobj.compress(b"x" * 1000) + cobj.flush()
        err = rpc_error(lambda: _raw_upload(srv.client, meta, [wide]))
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "window" in err.details()
        # nothing was left behind in the spool
        assert not list((srv.data_dir / "spool" / "incoming").iterdir())
        health = health_pb2_grpc.HealthStub(srv.client.channel)
        assert health.Check(health_pb2.HealthCheckRequest()).status == 1


def _chunks(data: bytes, n: int = 1 << 20) -> list[bytes]:
    return [data[i : i + n] for i in range(0, len(data), n)]


def test_malformed_uploads_are_invalid_argument(tmp_path, small_dump):
    data = small_dump.read_bytes()
    with running_server(tmp_path / "data") as srv:
        zmeta = pb.DumpMetadata(file_name="a.dmp", compression=pb.COMPRESSION_ZSTD)
        cases = {
            "not zstd": (zmeta, [data[: 1 << 16]]),
            "truncated zstd": (zmeta, [zstandard.ZstdCompressor().compress(data)[:-100]]),
            "sha mismatch": (
                pb.DumpMetadata(file_name="a.dmp", expected_sha256="0" * 64),
                _chunks(data),
            ),
            "bad sha": (pb.DumpMetadata(file_name="a.dmp", expected_sha256="xyz"), _chunks(data)),
            "short": (pb.DumpMetadata(file_name="a.dmp", size_bytes=len(data) + 1), _chunks(data)),
            "long": (pb.DumpMetadata(file_name="a.dmp", size_bytes=len(data) - 1), _chunks(data)),
            "empty": (pb.DumpMetadata(file_name="a.dmp"), []),
        }
        for name, (meta, chunks) in cases.items():
            err = rpc_error(lambda meta=meta, chunks=chunks: _raw_upload(srv.client, meta, chunks))
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (name, err.details())

        def no_metadata():
            yield wire.encode_chunk(b"abc")

        err = rpc_error(lambda: srv.client._upload(no_metadata(), metadata=srv.client.metadata))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "metadata" in err.details()
        # a correct expected sha256 is accepted
        import hashlib

        meta = pb.DumpMetadata(file_name="a.dmp", expected_sha256=hashlib.sha256(data).hexdigest())
        assert _raw_upload(
            srv.client, meta, [data[i : i + (1 << 20)] for i in range(0, len(data), 1 << 20)]
        ).job.id


def test_spool_quota(tmp_path, pattern_dump):
    with running_server(tmp_path / "data", spool_quota_bytes=2 << 20) as srv:
        err = rpc_error(lambda: srv.client.upload(pattern_dump))
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "spool" in err.details()
        assert not list((srv.data_dir / "spool" / "incoming").iterdir())


def test_keep_dumps_evicts_oldest_when_the_quota_is_reached(tmp_path, forged):
    a = forged("win7sp1", ram_mib=32)[0]  # pattern fill: 32 MiB on disk each
    b = forged("win7sp1", ram_mib=32, uptime_s=1.0)[0]
    quota = a.stat().st_size + (8 << 20)
    with running_server(tmp_path / "data", keep_dumps=True, spool_quota_bytes=quota) as srv:
        spool = srv.data_dir / "spool"
        ja = srv.client.wait(srv.client.upload(a).job.id, timeout=60)
        assert state_name(ja.state) == "succeeded"
        assert [p.name for p in spool.glob("*.dmp")] == [f"{ja.sha256}.dmp"]  # kept
        jb = srv.client.wait(srv.client.upload(b).job.id, timeout=60)
        assert state_name(jb.state) == "succeeded"
        assert [p.name for p in spool.glob("*.dmp")] == [f"{jb.sha256}.dmp"]  # a evicted
        assert srv.server.store.get(ja.id).dump_path is None
        assert srv.client.report(ja.id)[1]["dump"]["uptime_s"] == 5025.5  # reports stay


# ---------------------------------------------------------------------------------- security


def test_bearer_token(tmp_path, small_dump):
    with running_server(tmp_path / "data", token="s3cret") as srv:
        good = srv.client
        for token in (None, "wrong"):
            with ServiceClient(srv.target, token=token) as bad:
                for call in (
                    lambda bad=bad: list(bad.list_jobs()),
                    lambda bad=bad: bad.upload(small_dump),
                    lambda bad=bad: list(bad.watch("x")),
                    lambda bad=bad: bad.aggregate(),
                ):
                    err = rpc_error(call)
                    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
                    assert "Bearer" in err.details()
        job = good.wait(good.upload(small_dump).job.id, timeout=60)
        assert state_name(job.state) == "succeeded"
        # health checks stay open for probes
        health = health_pb2_grpc.HealthStub(grpc.insecure_channel(srv.target))
        assert health.Check(health_pb2.HealthCheckRequest()).status == 1


def test_submit_path_roots(tmp_path, small_dump):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copyfile(small_dump, outside / "secret.dmp")
    inside = root / "sub" / "ok.dmp"
    shutil.copyfile(small_dump, inside)
    (root / "escape.dmp").symlink_to(outside / "secret.dmp")
    (root / "escape-dir").symlink_to(outside)
    (root / "inner-link.dmp").symlink_to(inside)  # stays inside, yet no link is followed
    (tmp_path / "root-sibling").mkdir()
    shutil.copyfile(small_dump, tmp_path / "root-sibling" / "x.dmp")
    with running_server(tmp_path / "data", allowed_roots=[root]) as srv:
        denied = [
            outside / "secret.dmp",
            root / "escape.dmp",
            root / "escape-dir" / "secret.dmp",
            root / "inner-link.dmp",
            Path(f"{root}/../outside/secret.dmp"),
            tmp_path / "root-sibling" / "x.dmp",  # a prefix of the root's name is not inside
            Path("/etc/passwd"),
        ]
        for p in denied:
            err = rpc_error(lambda p=p: srv.client.submit_path(str(p)))
            assert err.code() == grpc.StatusCode.PERMISSION_DENIED, p
            assert "allowed root" in err.details()
        err = rpc_error(lambda: srv.client.submit_path("relative.dmp"))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        err = rpc_error(lambda: srv.client.submit_path(str(root / "missing.dmp")))
        assert err.code() == grpc.StatusCode.NOT_FOUND
        err = rpc_error(lambda: srv.client.submit_path(str(root / "sub")))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        ok = srv.client.submit_path(str(root / "sub" / "." / "ok.dmp"))
        assert ok.job.file_name == str(inside)
        job = srv.client.wait(ok.job.id, timeout=60)
        assert state_name(job.state) == "succeeded"
        assert inside.exists()  # dumps given by path are never deleted
    with running_server(tmp_path / "data2") as srv:  # no roots: disabled
        err = rpc_error(lambda: srv.client.submit_path(str(inside)))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED and "--allow-root" in err.details()


def test_tls(tmp_path, small_dump):
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    with running_server(tmp_path / "data", tls_cert=cert, tls_key=key) as srv:
        with ServiceClient(srv.target, root_certificates=cert.read_bytes()) as c:
            job = c.wait(c.upload(small_dump).job.id, timeout=60)
            assert state_name(job.state) == "succeeded"
        with ServiceClient(srv.target) as plain:  # not TLS: no connection
            err = rpc_error(lambda: plain.stub.GetJob(pb.GetJobRequest(job_id="x"), timeout=3))
            assert err.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def test_health_and_reflection(tmp_path):
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    with running_server(tmp_path / "data") as srv:
        health = health_pb2_grpc.HealthStub(srv.client.channel)
        for service in ("", "poolscope.v1.ScanService"):
            r = health.Check(health_pb2.HealthCheckRequest(service=service))
            assert r.status == health_pb2.HealthCheckResponse.SERVING
        db = ProtoReflectionDescriptorDatabase(srv.client.channel)
        services = set(db.get_services())
        assert {"poolscope.v1.ScanService", "grpc.health.v1.Health"} <= services
        fd = db.FindFileContainingSymbol("poolscope.v1.ScanService")
        assert fd.name == "poolscope/v1/scan.proto"


# ---------------------------------------------------------------------------------- queries


def test_errors_are_actionable(tmp_path):
    with running_server(tmp_path / "data") as srv:
        for call, code in (
            (lambda: srv.client.get_job("nope"), grpc.StatusCode.NOT_FOUND),
            (lambda: srv.client.get_job(""), grpc.StatusCode.INVALID_ARGUMENT),
            (lambda: srv.client.cancel("nope"), grpc.StatusCode.NOT_FOUND),
            (lambda: srv.client.report("nope"), grpc.StatusCode.NOT_FOUND),
            (lambda: list(srv.client.watch("nope")), grpc.StatusCode.NOT_FOUND),
        ):
            err = rpc_error(call)
            assert err.code() == code and err.details()
        err = rpc_error(lambda: srv.client.stub.ListJobs(pb.ListJobsRequest(page_token="garbage")))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_list_jobs_filters_and_pages(tmp_path, forged):
    dumps = [forged("win7sp1", **SMALL, uptime_s=5000.0 + i)[0] for i in range(5)]
    with running_server(tmp_path / "data") as srv:
        t0 = time.time()
        ids = []
        for i, d in enumerate(dumps):
            labels = {"fleet": "a" if i < 3 else "b", "n": str(i)}
            ids.append(srv.client.upload(d, host_id=f"h{i % 2}", labels=labels).job.id)
        for job_id in ids:
            srv.client.wait(job_id, timeout=60)
        resp = srv.client.stub.ListJobs(pb.ListJobsRequest(page_size=2))
        assert [j.id for j in resp.jobs] == ids[::-1][:2] and resp.total_size == 5
        pages = [list(resp.jobs)]
        while resp.next_page_token:
            resp = srv.client.stub.ListJobs(
                pb.ListJobsRequest(page_size=2, page_token=resp.next_page_token)
            )
            pages.append(list(resp.jobs))
        assert [len(p) for p in pages] == [2, 2, 1]
        assert [j.id for p in pages for j in p] == ids[::-1]
        assert {j.id for j in srv.client.list_jobs(host_id="h0")} == {ids[0], ids[2], ids[4]}
        assert {j.id for j in srv.client.list_jobs(labels={"fleet": "b"})} == {ids[3], ids[4]}
        assert {j.id for j in srv.client.list_jobs(labels={"fleet": "a", "n": "1"})} == {ids[1]}
        done = srv.client.list_jobs(states=[pb.JOB_STATE_SUCCEEDED])
        assert len(list(done)) == 5
        assert not list(srv.client.list_jobs(states=[pb.JOB_STATE_QUEUED]))
        assert len(list(srv.client.list_jobs(created_after=t0 - 1))) == 5
        assert not list(srv.client.list_jobs(created_before=t0 - 1))
        first = srv.client.stub.ListJobs(pb.ListJobsRequest(page_size=2))
        err = rpc_error(
            lambda: srv.client.stub.ListJobs(
                pb.ListJobsRequest(page_size=2, host_id="h0", page_token=first.next_page_token)
            )
        )
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "filters" in err.details()


def test_aggregate_and_trends(tmp_path, forged):
    series = [
        forged("win7sp1", **leak_overrides(n, f"2021-0{k + 1}-01T00:00:00Z"))[0]
        for k, n in enumerate((16, 24, 32))
    ]
    other = forged("win7sp1", **leak_overrides(20, "2021-02-15T00:00:00Z"), uptime_s=7.0)[0]
    with running_server(tmp_path / "data") as srv:
        # uploaded out of crash-time order: trends follow the dumps' own times
        jobs = [srv.client.upload(p, host_id="web-1", labels={"fleet": "prod"}).job for p in
                (series[2], series[0], series[1])]  # fmt: skip
        jobs.append(srv.client.upload(other, host_id="db-1", labels={"fleet": "dev"}).job)
        for j in jobs:
            assert state_name(srv.client.wait(j.id, timeout=60).state) == "succeeded"
        agg = srv.client.aggregate()
        assert agg["job_count"] == 4 and agg["host_count"] == 2
        top = agg["top_tags"][0]
        assert top["tag"] == "Leak" and top["dumps"] == 4
        assert top["bytes"] == (16 + 24 + 32 + 20) * 65536
        assert top["max_bytes"] == 32 * 65536
        drivers = {d["driver"]: d for d in agg["top_drivers"]}
        assert drivers["myfault.sys"]["dumps"] == 4 and "Leak" in drivers["myfault.sys"]["tags"]
        assert "tag_owner" in drivers["myfault.sys"]["reasons"]
        assert agg["bugchecks"] == [
            {"code": "0xd1", "name": "DRIVER_IRQL_NOT_LESS_OR_EQUAL", "count": 4}
        ]
        trend = [t for t in agg["trends"] if t["tag"] == "Leak"]
        assert len(trend) == 1 and trend[0]["host_id"] == "web-1"
        assert [p["bytes"] for p in trend[0]["points"]] == [16 * 65536, 24 * 65536, 32 * 65536]
        assert trend[0]["growth_bytes"] == 16 * 65536
        # filters
        prod = srv.client.aggregate(labels={"fleet": "prod"})
        assert prod["job_count"] == 3 and prod["host_count"] == 1
        assert srv.client.aggregate(host_id="db-1")["trends"] == []
        assert srv.client.aggregate(min_growth_bytes=1 << 30)["trends"] == []
        assert len(srv.client.aggregate(top=1)["top_tags"]) == 1


# ---------------------------------------------------------------------------------- restarts


def test_restart_requeues_and_keeps_reports(tmp_path, forged):
    dumps = [forged("win7sp1", **SMALL, uptime_s=6000.0 + i)[0] for i in range(3)]
    data = tmp_path / "data"
    gated = GatedExecutor(slots=1)
    with running_server(data, executor=gated) as srv:
        done = srv.client.upload(dumps[0]).job
        gated.gate.set()
        srv.client.wait(done.id, timeout=60)
        gated.gate.clear()
        gated.started.clear()
        running = srv.client.upload(dumps[1]).job
        assert gated.started.wait(10)
        queued = srv.client.upload(dumps[2]).job
        # the server stops (gracefully) with one job running and one queued
    with running_server(data) as srv:
        for j in (running, queued):
            final = srv.client.wait(j.id, timeout=60)
            assert state_name(final.state) == "succeeded", final.error
        assert srv.client.get_job(running.id).attempts == 2
        _, report = srv.client.report(done.id)
        assert report["dump"]["uptime_s"] == 6000.0


def test_concurrent_watchers_and_cancel(tmp_path, small_dump):
    """Many watchers on one job; a cancel while they watch; all streams end."""
    with running_server(tmp_path / "data", executor=holding_executor(60)) as srv:
        job = srv.client.upload(small_dump).job
        results: list[int] = []

        def watch() -> None:
            with ServiceClient(srv.target) as c:
                results.append(c.wait(job.id, timeout=60).state)

        threads = [threading.Thread(target=watch) for _ in range(8)]
        for t in threads:
            t.start()
        wait_state(srv.client, job.id, pb.JOB_STATE_RUNNING)
        srv.client.cancel(job.id)
        for t in threads:
            t.join(60)
        assert results == [pb.JOB_STATE_CANCELLED] * 8
        assert wait_until(lambda: srv.server.scheduler.stats()["running"] == 0, 10)
