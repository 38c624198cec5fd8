"""The service's commands as a user runs them: ``poolscope serve`` in a subprocess (killed with
SIGKILL mid-scan and restarted), ``submit``, ``jobs``, ``report``, ``aggregate`` and ``batch``
over a directory and archives holding a corrupt file."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import uuid
import zipfile
from pathlib import Path

import pytest
import zstandard

import poolscope
from poolscope.service import aggregate
from poolscope.service.client import ServiceClient, state_name
from poolscope.service.v1 import scan_pb2 as pb
from service_util import (
    child_env,
    comparable,
    free_port,
    poolscope_command,
    start_serve,
    wait_until,
)

SMALL = {"ram_mib": 32, "fill": "zero"}


def _run(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        poolscope_command(*args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or child_env(),
    )


def _marked_processes(marker: str) -> list[int]:
    """Processes whose environment carries ``marker`` (the server's scan children)."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if marker.encode() in (d / "environ").read_bytes():
                pids.append(int(d.name))
        except OSError:
            continue
    return pids


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc")
def test_kill_9_during_scan_then_restart_finishes_the_job(tmp_path, forged):
    dumps = [forged("win7sp1", **SMALL, uptime_s=8000.0 + i)[0] for i in range(3)]
    data = tmp_path / "data"
    port = free_port()
    marker = f"POOLSCOPE_TEST_MARK={uuid.uuid4().hex}"
    env = child_env()
    env[marker.split("=")[0]] = marker.split("=")[1]
    # first life: every scan holds 60 s, so the scan is surely running when the server dies
    env_hold = dict(env, POOLSCOPE_SCAN_HOLD_S="60")
    proc = _serve(data, port, env_hold, "--workers", "1")
    try:
        with ServiceClient(f"127.0.0.1:{port}") as c:
            running = c.upload(dumps[0], host_id="h").job
            queued = c.upload(dumps[1], host_id="h").job
            assert wait_until(
                lambda: c.get_job(running.id).state == pb.JOB_STATE_RUNNING, timeout=30
            )
            assert len(_marked_processes(marker)) >= 2  # the server and its scan process
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    # the scan process died with its server (PR_SET_PDEATHSIG)
    assert wait_until(lambda: not _marked_processes(marker), timeout=10)
    # second life, same data dir: the interrupted job runs again, the queued one too
    proc = _serve(data, port, env, "--workers", "1")
    try:
        with ServiceClient(f"127.0.0.1:{port}") as c:
            for j in (running, queued):
                final = c.wait(j.id, timeout=60)
                assert state_name(final.state) == "succeeded", final.error
            assert c.get_job(running.id).attempts == 2
            assert c.get_job(queued.id).attempts == 1
            _, report = c.report(running.id)
            assert comparable(report) == comparable(poolscope.scan(dumps[0]).to_dict())
            third = c.upload(dumps[2]).job
            assert state_name(c.wait(third.id, timeout=60).state) == "succeeded"
            assert len(list(c.list_jobs())) == 3
        proc.send_signal(signal.SIGTERM)  # graceful stop
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _serve(data: Path, port: int, env: dict, *extra: str) -> subprocess.Popen:
    return start_serve(data, port, *extra, env=env)


def test_submit_jobs_report_aggregate_commands(tmp_path, forged):
    a = forged("win7sp1", **SMALL, uptime_s=9001.0)[0]
    b = forged("win7sp1", **SMALL, uptime_s=9002.0)[0]
    port = free_port()
    env = dict(child_env(), POOLSCOPE_TOKEN="tok", POOLSCOPE_SERVER=f"127.0.0.1:{port}")
    proc = _serve(tmp_path / "data", port, env, "--workers", "2")
    try:
        r = _run("submit", str(a), str(b), "--json", "--host-id", "cli", "--label", "k=v", env=env)
        assert r.returncode == 0, r.stderr
        lines = [json.loads(x) for x in r.stdout.splitlines()]
        assert [comparable(x) for x in lines] == [
            comparable(poolscope.scan(p).to_dict()) for p in (a, b)
        ]
        r = _run("jobs", "--json", "--host", "cli", env=env)
        jobs = [json.loads(x) for x in r.stdout.splitlines()]
        assert r.returncode == 0 and len(jobs) == 2
        assert {j["state"] for j in jobs} == {"succeeded"} and jobs[0]["labels"] == {"k": "v"}
        r = _run("jobs", env=env)
        assert r.returncode == 0 and jobs[0]["id"] in r.stdout
        # piped, each job is one full line: id, state and file name uncut
        for j in jobs:
            assert any(
                j["id"] in ln and "succeeded" in ln and j["file_name"] in ln
                for ln in r.stdout.splitlines()
            ), r.stdout
        assert "…" not in r.stdout
        r = _run("report", jobs[0]["id"], "--json", env=env)
        assert r.returncode == 0 and json.loads(r.stdout)["dump"]["uptime_s"] == 9002.0
        r = _run("report", jobs[0]["id"], env=env)
        assert r.returncode == 0 and "Pool page scan" in r.stdout
        r = _run("aggregate", "--json", env=env)
        assert r.returncode == 0 and json.loads(r.stdout)["job_count"] == 2
        r = _run("aggregate", env=env)
        assert r.returncode == 0 and "top tags by bytes" in r.stdout
        r = _run("submit", str(a), "--no-wait", "--json", env=env)
        again = json.loads(r.stdout)
        assert r.returncode == 0 and again["id"] == jobs[1]["id"] and again["submissions"] == 2
        # errors are actionable and map to exit status 2
        r = _run("report", "nope", env=env)
        assert r.returncode == 2 and "NOT_FOUND" in r.stderr
        bad = dict(env, POOLSCOPE_TOKEN="wrong")
        r = _run("jobs", env=bad)
        assert r.returncode == 2 and "UNAUTHENTICATED" in r.stderr
    finally:
        proc.kill()
        proc.wait()


# ---------------------------------------------------------------------------------- batch


def _layout(tmp_path: Path, forged) -> tuple[Path, dict[str, Path]]:
    """A directory of dumps in host folders, with a zstd dump, a corrupt one and a stray file."""
    base = forged("win7sp1", **SMALL, uptime_s=100.0)[0]
    grown = forged("win7sp1-verifier")[0]
    other = forged("win7sp1", **SMALL, uptime_s=300.0, system_time="2020-02-01T00:00:00Z")[0]
    root = tmp_path / "dumps"
    files = {
        "hostA/one.dmp": base,
        "hostA/two.dmp": grown,
        "hostB/three.dmp.zst": other,
    }
    for rel, src in files.items():
        dst = root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith(".zst"):
            dst.write_bytes(zstandard.ZstdCompressor(level=1).compress(src.read_bytes()))
        else:
            shutil.copyfile(src, dst)
    (root / "hostB" / "corrupt.dmp").write_bytes(b"PAGEDU64" + bytes(4096))
    (root / "notes.txt").write_text("not a dump")
    return root, files


def _check_batch(stdout: str, prefix: str, root: Path, files: dict[str, Path]) -> list[dict]:
    lines = [json.loads(x) for x in stdout.splitlines()]
    by_source = {x["source"]: x for x in lines}
    assert len(lines) == 4, [x["source"] for x in lines]
    bad = [x for x in lines if x["status"] != "ok"]
    assert len(bad) == 1 and bad[0]["source"].endswith("corrupt.dmp") and bad[0]["error"]
    for rel in files:
        source = next(s for s in by_source if s.startswith(prefix) and s.endswith(rel))
        line = by_source[source]
        assert line["status"] == "ok" and line["host"] == rel.split("/")[0]
        direct = poolscope.scan(root / rel).to_dict()  # the .dmp.zst one decompressed
        assert comparable(line["report"]) == comparable(direct)
    return lines


def _expected_summary(lines: list[dict]) -> dict:
    items = [
        aggregate.Item(x["source"], x["host"], aggregate.digest(x["report"]))
        for x in lines
        if x["status"] == "ok"
    ]
    return aggregate.aggregate(items)


def test_batch_directory_and_archives(tmp_path, forged):
    root, files = _layout(tmp_path, forged)
    # the same tree as .tar.zst and .zip
    tzst = tmp_path / "dumps.tar.zst"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for p in sorted(root.rglob("*")):
            tf.add(p, arcname=str(p.relative_to(root)), recursive=False)
    tzst.write_bytes(zstandard.ZstdCompressor(level=3).compress(buf.getvalue()))
    zpath = tmp_path / "dumps.zip"
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for p in sorted(root.rglob("*")):
            if p.is_file():
                zf.write(p, str(p.relative_to(root)))

    for target, prefix in ((root, str(root)), (tzst, f"{tzst}!"), (zpath, f"{zpath}!")):
        summary = tmp_path / f"{target.name}.summary.json"
        r = _run("batch", str(target), "--workers", "2", "--summary-json", str(summary))
        assert r.returncode == 3, r.stderr  # one dump was skipped
        lines = _check_batch(r.stdout, prefix, root, files)
        doc = json.loads(summary.read_text())
        assert doc == _expected_summary(lines)
        assert doc["job_count"] == 3 and doc["host_count"] == 2
        assert doc["top_tags"][0]["tag"] == "Leak"
        assert doc["top_drivers"][0]["driver"] == "myfault.sys"
        assert {b["code"] for b in doc["bugchecks"]} == {"0xd1", "0xc4"}
        assert "top tags by bytes" in r.stderr and "skipped" in r.stderr
        assert "3 scanned, 1 failed or skipped" in r.stderr

    # several inputs at once, JSON lines to a file; a missing input is reported
    out = tmp_path / "all.jsonl"
    r = _run("batch", str(tzst), str(root / "hostA" / "one.dmp"), str(tmp_path / "missing.dmp"),
             "-o", str(out), "--host-from", "none")  # fmt: skip
    assert r.returncode == 3
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 6 and sum(x["status"] == "ok" for x in lines) == 4
    assert {x["host"] for x in lines} == {""}
    assert any(
        x["source"].endswith("missing.dmp") and "no such file" in x["error"].lower() for x in lines
    )


def test_batch_corrupt_archive_and_nothing_found(tmp_path):
    broken = tmp_path / "broken.tar.zst"
    broken.write_bytes(zstandard.ZstdCompressor().compress(b"not a tar" * 1000)[:-10])
    r = _run("batch", str(broken))
    assert r.returncode == 3
    (line,) = [json.loads(x) for x in r.stdout.splitlines()]
    assert line["status"] == "error" and "archive" in line["error"]
    empty = tmp_path / "empty"
    empty.mkdir()
    r = _run("batch", str(empty))
    assert r.returncode == 2 and "no dumps found" in r.stderr
