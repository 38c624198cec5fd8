"""The scan service against hostile clients and a full disk, with a real server on loopback:
roots cannot be escaped by swapping a checked directory for a link (rename-exchange race),
FIFOs, devices and sockets are refused at once, stalled and trickling streams cannot starve the
server, a cancelled or unverifiable upload leaves nothing behind, and a disk filled while jobs
run and freed again leaves every job finished or failed with a reason. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import os
import shutil
import socket
import sqlite3
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
import zstandard
from grpc_health.v1 import health_pb2, health_pb2_grpc

import poolscope
from poolscope.service import safepath, wire
from poolscope.service.client import ServiceClient, state_name
from poolscope.service.store import JobRecord, Store, new_job_id
from poolscope.service.v1 import scan_pb2 as pb
from service_util import (
    GatedExecutor,
    child_env,
    comparable,
    poolscope_command,
    rpc_error,
    running_server,
    wait_until,
)

SMALL = {"ram_mib": 32, "fill": "zero"}
RENAME_EXCHANGE = 2
AT_FDCWD = -100


@pytest.fixture(scope="module")
def small_dump(forged):
    return forged("win7sp1", **SMALL)[0]


@pytest.fixture(scope="module")
def other_dump(forged):
    """Another small dump, with a leak (its report differs from small_dump's)."""
    return forged("win7sp1", **SMALL, system_time="2024-03-01T00:00:00Z")[0]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def exchange(a: Path, b: Path) -> None:
    """Swap two names atomically: ``renameat2(RENAME_EXCHANGE)``."""
    libc = ctypes.CDLL(None, use_errno=True)
    fn = getattr(libc, "renameat2", None)
    if fn is None:
        pytest.skip("libc has no renameat2")
    if fn(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) != 0:
        e = ctypes.get_errno()
        if e in (errno.ENOSYS, errno.EINVAL):
            pytest.skip(f"renameat2(RENAME_EXCHANGE) unsupported here: {os.strerror(e)}")
        raise OSError(e, os.strerror(e))


def health_latency(channel: grpc.Channel) -> float:
    stub = health_pb2_grpc.HealthStub(channel)
    t0 = time.monotonic()
    r = stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert r.status == health_pb2.HealthCheckResponse.SERVING
    return time.monotonic() - t0


def answers_within(client: ServiceClient, limit_s: float = 1.0) -> dict[str, float]:
    """Health, GetJob, ListJobs and GetReport each answer within ``limit_s``."""
    out = {"health": health_latency(client.channel)}
    for name, call in (
        ("GetJob", lambda: client.stub.GetJob(pb.GetJobRequest(job_id="nope"), timeout=5)),
        ("GetReport", lambda: client.stub.GetReport(pb.GetReportRequest(job_id="n"), timeout=5)),
    ):
        t0 = time.monotonic()
        assert rpc_error(call).code() == grpc.StatusCode.NOT_FOUND
        out[name] = time.monotonic() - t0
    t0 = time.monotonic()
    client.stub.ListJobs(pb.ListJobsRequest(), timeout=5)
    out["ListJobs"] = time.monotonic() - t0
    assert max(out.values()) < limit_s, out
    return out


# ---------------------------------------------------------------------------------- paths


def test_rename_exchange_cannot_escape_the_root(tmp_path, small_dump, other_dump):
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "dir").mkdir(parents=True)
    outside.mkdir()
    shutil.copyfile(small_dump, root / "dir" / "dump.dmp")
    shutil.copyfile(other_dump, outside / "dump.dmp")
    (root / "swap").symlink_to(outside)  # exchanged with dir: dir becomes a link to outside
    inside_sha, outside_sha = sha256(small_dump), sha256(other_dump)
    assert inside_sha != outside_sha
    direct_inside = comparable(poolscope.scan(small_dump).to_dict())
    direct_outside = comparable(poolscope.scan(other_dump).to_dict())
    assert direct_inside != direct_outside
    target = root / "dir" / "dump.dmp"
    executor = GatedExecutor(slots=1)
    with running_server(tmp_path / "data", executor=executor, allowed_roots=[root]) as srv:
        # 1. swapped after the check, before the scan: the scan reads the checked file
        job = srv.client.submit_path(str(target)).job
        assert job.sha256 == inside_sha
        exchange(root / "dir", root / "swap")
        assert (root / "dir").is_symlink() and sha256(target) == outside_sha
        executor.gate.set()
        done = srv.client.wait(job.id, timeout=60)
        assert state_name(done.state) == "succeeded", done.error
        _, report = srv.client.report(job.id)
        assert comparable(report) == direct_inside
        assert report["dump"]["path"] == str(target)  # not the descriptor it was read through
        # 2. swapping while submitting: never hashes nor queues the outside file
        exchange(root / "dir", root / "swap")  # back: dir is the directory again
        stop = threading.Event()
        swaps = [0]

        def swapper() -> None:
            while not stop.is_set():
                exchange(root / "dir", root / "swap")
                swaps[0] += 1

        t = threading.Thread(target=swapper)
        t.start()
        outcomes: dict[str, int] = {}
        try:
            for _ in range(60):
                try:
                    r = srv.client.submit_path(str(target))
                except grpc.RpcError as e:
                    assert e.code() in (
                        grpc.StatusCode.PERMISSION_DENIED,
                        grpc.StatusCode.NOT_FOUND,
                    ), e.details()
                    outcomes[e.code().name] = outcomes.get(e.code().name, 0) + 1
                else:
                    assert r.job.sha256 == inside_sha
                    outcomes["ok"] = outcomes.get("ok", 0) + 1
        finally:
            stop.set()
            t.join()
        assert swaps[0] > 60 and sum(outcomes.values()) == 60
        jobs = srv.client.stub.ListJobs(pb.ListJobsRequest(page_size=1000)).jobs
        assert {j.sha256 for j in jobs} == {inside_sha}


def submit(client: ServiceClient, path: str) -> pb.SubmitPathResponse:
    return client.stub.SubmitPath(pb.SubmitPathRequest(path=path), timeout=5)


@pytest.mark.parametrize("openat2", [True, False], ids=["openat2", "walk"])
def test_open_beneath(tmp_path, monkeypatch, openat2):
    """Both resolvers: ``openat2`` and the component walk for kernels without it."""
    if not openat2:
        monkeypatch.setattr(safepath, "_openat2_works", False)
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "d").mkdir(parents=True)
    outside.mkdir()
    (root / "d" / "f.dmp").write_bytes(b"inside")
    (outside / "f.dmp").write_bytes(b"outside")
    (root / "link-dir").symlink_to(outside)
    (root / "d" / "link.dmp").symlink_to(root / "d" / "f.dmp")
    (root / "abs").symlink_to("/")
    os.mkfifo(root / "d" / "fifo")
    root_fd = safepath.open_root(str(root))
    try:
        opened = safepath.open_beneath(root_fd, "d/./f.dmp", "f")
        try:
            assert os.pread(opened.fd, 100, 0) == b"inside"
            assert os.path.realpath(f"/proc/self/fd/{opened.fd}") == str(root / "d" / "f.dmp")
        finally:
            os.close(opened.fd)
        cases = {
            "link-dir/f.dmp": "PERMISSION_DENIED",
            "d/link.dmp": "PERMISSION_DENIED",
            "abs/etc/passwd": "PERMISSION_DENIED",
            "d/../../outside/f.dmp": "PERMISSION_DENIED",
            "d/missing.dmp": "NOT_FOUND",
            "d/f.dmp/x": "NOT_FOUND",
            "d/fifo": "INVALID_ARGUMENT",
            "d": "INVALID_ARGUMENT",
        }
        for rel, code in cases.items():
            t0 = time.monotonic()
            with pytest.raises(safepath.PathRefused) as e:
                safepath.open_beneath(root_fd, rel, rel)
            assert e.value.code == code, (rel, str(e.value))
            assert time.monotonic() - t0 < 1.0
        if openat2:
            assert safepath._openat2_works is not False  # this kernel has it
    finally:
        os.close(root_fd)


def test_fifo_device_and_socket_in_the_root_are_refused_at_once(tmp_path, small_dump):
    root = tmp_path / "root"
    root.mkdir()
    os.mkfifo(root / "pipe.dmp")
    specials = [root / "pipe.dmp"]
    with contextlib.suppress(PermissionError):
        os.mknod(root / "null.dmp", stat.S_IFCHR | 0o600, os.makedev(1, 3))
        specials.append(root / "null.dmp")
    sock = socket.socket(socket.AF_UNIX)
    sock_path = root / "s.dmp"
    if len(os.fsencode(sock_path)) < 100:
        sock.bind(str(sock_path))
        specials.append(sock_path)
    shutil.copyfile(small_dump, root / "ok.dmp")
    try:
        with running_server(tmp_path / "data", allowed_roots=[root]) as srv:
            for p in specials:
                t0 = time.monotonic()
                err = rpc_error(lambda p=p: submit(srv.client, str(p)))
                assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
                assert "regular files" in err.details()
                assert time.monotonic() - t0 < 1.0
            # 70 FIFO submits at once: all refused, health and the other calls keep answering
            fifo = str(root / "pipe.dmp")
            with ThreadPoolExecutor(70) as pool:
                futs = [pool.submit(rpc_error, lambda: submit(srv.client, fifo)) for _ in range(70)]
                lat = answers_within(srv.client)
                codes = {f.result().code() for f in futs}
            assert codes == {grpc.StatusCode.INVALID_ARGUMENT}, codes
            print("latencies during 70 FIFO submits:", lat)
            job = srv.client.wait(srv.client.submit_path(str(root / "ok.dmp")).job.id, timeout=60)
            assert state_name(job.state) == "succeeded"
    finally:
        sock.close()


def test_path_jobs_after_a_restart_reopen_safely_and_check_the_content(
    tmp_path, small_dump, other_dump
):
    root = tmp_path / "root"
    root.mkdir()
    for name in ("a.dmp", "b.dmp"):
        shutil.copyfile(small_dump, root / name)
    shutil.copyfile(other_dump, root / "c.dmp")
    executor = GatedExecutor(slots=1)  # nothing runs before the restart
    with running_server(tmp_path / "data", executor=executor, allowed_roots=[root]) as srv:
        a = srv.client.submit_path(str(root / "a.dmp")).job
        c = srv.client.submit_path(str(root / "c.dmp")).job
    (root / "c.dmp").write_bytes(small_dump.read_bytes()[:-4096] + bytes(4096))  # changed
    with running_server(tmp_path / "data", allowed_roots=[root]) as srv:
        ja = srv.client.wait(a.id, timeout=60)
        jc = srv.client.wait(c.id, timeout=60)
        assert state_name(ja.state) == "succeeded", ja.error
        assert state_name(jc.state) == "failed" and "changed since it was submitted" in jc.error


# ---------------------------------------------------------------------------------- streams


def _stalled(client: ServiceClient, release: threading.Event, declared: int) -> grpc.Future:
    def requests() -> Iterator[object]:
        yield pb.UploadDumpRequest(
            metadata=pb.DumpMetadata(file_name="stall.dmp", size_bytes=declared)
        )
        yield wire.encode_chunk(b"\x01" * 4096)
        release.wait(30)

    return client._upload.future(requests(), metadata=client.metadata, timeout=30)


def test_stalled_streams_cannot_starve_the_server(tmp_path, small_dump):
    release = threading.Event()
    cfg = {"upload_idle_timeout_s": 4.0, "upload_timeout_s": 5.0, "threads": 8}
    ex = grpc.StatusCode.RESOURCE_EXHAUSTED
    with running_server(tmp_path / "data", **cfg) as srv:
        clients = [ServiceClient(srv.target) for _ in range(7)]
        try:
            t0 = time.monotonic()
            futs = [_stalled(clients[i % 7], release, 64 << 20) for i in range(70)]

            def refused() -> list[grpc.Future]:
                return [f for f in futs if f.done() and f.code() == ex]

            # the per-client cap (32) refuses the rest at once, with a retry hint
            assert wait_until(lambda: len(refused()) >= 38, timeout=10)
            assert wait_until(lambda: srv.server.uploads.active == 32, timeout=5)
            assert time.monotonic() - t0 < 4, "too slow to see the uploads held"
            for f in refused():
                hints = dict(f.trailing_metadata() or ())
                assert int(hints["retry-after-ms"]) > 0
                assert "uploads in progress" in f.details()
            for _ in range(3):
                lat = answers_within(srv.client)
            print("latencies with 32 stalled uploads held, 38 refused:", lat)
            # the idle timeout drops the stalled ones: nothing is kept
            held = [f for f in futs if f not in refused()]
            assert len(held) == 32
            for f in held:
                assert f.exception(timeout=15) is not None
                assert f.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                assert "sent nothing" in f.details()
            assert time.monotonic() - t0 < 12

            # a stream that trickles (never idle) still ends at the upload deadline
            def trickle() -> Iterator[object]:
                yield pb.UploadDumpRequest(
                    metadata=pb.DumpMetadata(file_name="slow.dmp", size_bytes=1 << 20)
                )
                for _ in range(60):
                    yield wire.encode_chunk(b"\x02")
                    time.sleep(0.25)

            slow = rpc_error(lambda: clients[0]._upload(trickle(), timeout=30))
            assert slow.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert "--upload-timeout" in slow.details()
            assert wait_until(lambda: srv.server.uploads.active == 0, timeout=5)
            assert not list((srv.data_dir / "spool" / "incoming").iterdir())
            assert srv.client.stub.ListJobs(pb.ListJobsRequest()).total_size == 0
            job = srv.client.wait(srv.client.upload(small_dump).job.id, timeout=60)
            assert state_name(job.state) == "succeeded"
        finally:
            release.set()
            for c in clients:
                c.close()


def test_cancelled_upload_leaves_nothing(tmp_path, small_dump):
    data = small_dump.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    chunks = [data[i : i + (1 << 20)] for i in range(0, len(data), 1 << 20)]
    with running_server(tmp_path / "data") as srv:
        incoming = srv.data_dir / "spool" / "incoming"
        for cut in (1, len(chunks) // 2, len(chunks) - 1):  # at the start, mid-way, last chunk
            sent = threading.Event()
            hold = threading.Event()

            def requests(
                cut: int = cut, sent: threading.Event = sent, hold: threading.Event = hold
            ) -> Iterator[object]:
                yield pb.UploadDumpRequest(
                    metadata=pb.DumpMetadata(
                        file_name="cut.dmp", size_bytes=len(data), expected_sha256=digest
                    )
                )
                for c in chunks[:cut]:
                    yield wire.encode_chunk(c)
                sent.set()
                hold.wait(10)

            fut = srv.client._upload.future(requests(), timeout=30)
            assert sent.wait(10)
            assert wait_until(lambda: any(incoming.iterdir()), timeout=5)
            fut.cancel()
            hold.set()
            assert wait_until(lambda: srv.server.uploads.active == 0, timeout=5)
            assert wait_until(lambda: not any(incoming.iterdir()), timeout=5)
            assert srv.client.stub.ListJobs(pb.ListJobsRequest()).total_size == 0
            assert not list((srv.data_dir / "spool").glob("*.dmp"))
        # a stream cut short but ended normally is refused by its declared size
        meta = pb.DumpMetadata(file_name="cut.dmp", size_bytes=len(data))
        err = rpc_error(lambda: _send(srv.client, meta, chunks[:-1]))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "truncated" in err.details()
        # an upload that declares neither size nor hash cannot be checked: refused
        meta = pb.DumpMetadata(file_name="undeclared.dmp")
        err = rpc_error(lambda: _send(srv.client, meta, chunks))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "declare" in err.details()
        assert srv.client.stub.ListJobs(pb.ListJobsRequest()).total_size == 0
        assert not any(incoming.iterdir())


def _send(client: ServiceClient, metadata: pb.DumpMetadata, chunks: list[bytes]) -> object:
    def requests() -> Iterator[object]:
        yield pb.UploadDumpRequest(metadata=metadata)
        for c in chunks:
            yield wire.encode_chunk(c)

    return client._upload(requests(), timeout=60)


def test_zstd_frame_without_checksum_is_not_taken_as_intact(tmp_path):
    data = bytes(range(256)) * 4096 + os.urandom(1 << 20)  # 2 MiB, half compressible
    digest = hashlib.sha256(data).hexdigest()
    cctx = zstandard.ZstdCompressor(level=3, write_checksum=False, write_content_size=True)
    frame = bytearray(cctx.compress(data))
    assert not frame[4] & 0x04  # no content checksum flag
    flipped = bytearray(frame)
    flipped[len(flipped) // 2] ^= 0xFF
    zmeta = {"file_name": "z.dmp", "compression": pb.COMPRESSION_ZSTD}
    with running_server(tmp_path / "data") as srv:
        # flipped bytes, the size declared: not checkable (no checksum, no hash) -> refused
        for body in (bytes(flipped), bytes(frame)):
            meta = pb.DumpMetadata(**zmeta, size_bytes=len(data))
            err = rpc_error(lambda meta=meta, body=body: _send(srv.client, meta, [body]))
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
        # flipped bytes with the hash declared: refused (decompression error or hash mismatch)
        meta = pb.DumpMetadata(**zmeta, size_bytes=len(data), expected_sha256=digest)
        err = rpc_error(lambda: _send(srv.client, meta, [bytes(flipped)]))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
        assert srv.client.stub.ListJobs(pb.ListJobsRequest()).total_size == 0
        # the intact frame with the hash declared is verifiable: taken
        resp = _send(srv.client, meta, [bytes(frame)])
        assert resp.job.sha256 == digest  # type: ignore[attr-defined]
        assert not any((srv.data_dir / "spool" / "incoming").iterdir())


# ---------------------------------------------------------------------------------- disk full


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {r.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(fs: Path) -> Path:
    filler = fs / "filler"
    block = b"\xff" * (256 << 10)
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(block)
                f.flush()
        except OSError as e:
            assert e.errno == errno.ENOSPC
    # and the last crumbs
    with contextlib.suppress(OSError), open(fs / "crumbs", "wb") as f:
        for _ in range(1 << 16):
            f.write(b"\xff" * 512)
            f.flush()
    return filler


def test_store_survives_a_full_disk(tmp_path):
    with small_tmpfs(tmp_path / "fs", "8m") as fs:
        store = Store(fs / "data")

        def job(i: int) -> JobRecord:
            labels = {f"k{j}": "v" * 1000 for j in range(64)}
            return JobRecord(new_job_id(), "queued", "upload", f"{i}.dmp", f"{i:064x}", 1, 60.0,
                             labels=labels)  # fmt: skip

        store.add_job(job(0))
        fill(fs)
        with pytest.raises(sqlite3.OperationalError):
            for i in range(1, 50):
                store.add_job(job(i))
        assert not store.writable()
        assert store.get(store.list_jobs(store_filter())[0][0].id) is not None  # reads work
        for p in (fs / "filler", fs / "crumbs"):
            p.unlink(missing_ok=True)
        assert store.writable()
        rec, _ = store.add_job(job(99))
        assert rec is not None and store.get(rec.id) is not None
        store.close()


def store_filter() -> object:
    from poolscope.service.store import JobFilter

    return JobFilter()


def test_disk_filled_while_jobs_run_and_freed(tmp_path, forged):
    dumps = [
        forged("win7sp1", **SMALL, system_time=f"2024-02-0{i + 1}T00:00:00Z")[0] for i in range(3)
    ]
    with small_tmpfs(tmp_path / "fs", "96m") as fs:
        executor = GatedExecutor(slots=1)
        cfg = {"min_free_bytes": 4 << 20, "executor": executor}
        with running_server(fs / "data", **cfg) as srv:
            srv.server.scheduler.store_retry_s = 0.2
            jobs = [srv.client.upload(d, compress=False).job.id for d in dumps]
            health = health_pb2_grpc.HealthStub(srv.client.channel)

            def status() -> int:
                return health.Check(health_pb2.HealthCheckRequest(), timeout=2).status

            filler = fill(fs)
            assert wait_until(lambda: status() == health_pb2.HealthCheckResponse.NOT_SERVING, 5)
            err = rpc_error(lambda: srv.client.upload(dumps[0], file_name="again.dmp"))
            assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err.details()
            assert int(dict(err.trailing_metadata())["retry-after-ms"]) > 0
            executor.gate.set()  # the jobs run, and record their outcomes, on a full disk
            time.sleep(1.5)
            slots = srv.server.scheduler._threads
            assert slots and all(t.is_alive() for t in slots)
            filler.unlink()
            (fs / "crumbs").unlink(missing_ok=True)
            assert wait_until(lambda: status() == health_pb2.HealthCheckResponse.SERVING, 10)

            def all_done() -> bool:
                return all(srv.client.get_job(j).state in (3, 4, 5) for j in jobs)

            assert wait_until(all_done, timeout=60)
            for j in jobs:
                job = srv.client.get_job(j)
                assert state_name(job.state) == "succeeded" or job.error, job
            print("store write failures seen:", srv.server.store_errors)
            new = srv.client.upload(
                forged("win7sp1", **SMALL, system_time="2024-02-09T00:00:00Z")[0]
            )
            job = srv.client.wait(new.job.id, timeout=60)
            assert state_name(job.state) == "succeeded", job.error
            assert all(t.is_alive() for t in slots)


# ---------------------------------------------------------------------------------- fail closed


def test_serve_fails_closed_on_bad_auth_config(tmp_path):
    empty = tmp_path / "empty-token"
    empty.write_text("  \n")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    cert = tmp_path / "cert.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\nnot a cert\n-----END CERTIFICATE-----\n")
    cases = {
        "empty token file": ["--token-file", str(empty)],
        "missing token file": ["--token-file", str(tmp_path / "nope")],
        "token file is a directory": ["--token-file", str(tmp_path)],
        "cert without key": ["--tls-cert", str(cert)],
        "key without cert": ["--tls-key", str(garbage)],
        "bad key": ["--tls-cert", str(cert), "--tls-key", str(garbage)],
    }
    if shutil.which("openssl"):  # a real certificate with another key than its own
        for n in ("1", "2"):
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                 "-subj", "/CN=localhost", "-keyout", str(tmp_path / f"key{n}.pem"),
                 "-out", str(tmp_path / f"cert{n}.pem")],
                check=True, capture_output=True,
            )  # fmt: skip
        cases["key of another certificate"] = [
            "--tls-cert", str(tmp_path / "cert1.pem"), "--tls-key", str(tmp_path / "key2.pem")
        ]  # fmt: skip
    env = child_env()
    for what, args in cases.items():
        r = subprocess.run(
            poolscope_command(
                "serve", "--address", "127.0.0.1:0", "--data-dir", str(tmp_path / "d"), *args
            ),
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert r.returncode == 2, (what, r.returncode, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr and "error:" in r.stderr, (what, r.stderr)
        assert "serving" not in r.stdout, what
