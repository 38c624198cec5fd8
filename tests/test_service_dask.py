"""The Dask executor on a real LocalCluster with 2 worker processes: the same reports as the
local executor, and cancellation of a running scan."""

from __future__ import annotations

import time

import pytest

import poolscope
from poolscope.service.client import state_name
from poolscope.service.v1 import scan_pb2 as pb
from service_util import comparable, running_server, wait_state

pytest.importorskip("distributed")

SMALL = {"ram_mib": 32, "fill": "zero"}


def test_dask_local_cluster_reports_equal_local_executor(tmp_path, forged, monkeypatch):
    dumps = [
        forged("win7sp1", **SMALL)[0],
        forged("win7sp1", ram_mib=32)[0],
        forged("win7sp1-verifier")[0],
        forged("win10-19045")[0],
    ]
    # Each scan holds 1 s before it starts (so that one can be cancelled while it runs); the
    # worker processes inherit this.
    monkeypatch.setenv("POOLSCOPE_SCAN_HOLD_S", "1")
    with running_server(tmp_path / "dask", dask="local", workers=2) as srv:
        executor = srv.server.executor
        assert executor.name.startswith("dask ") and executor.slots == 2
        workers = executor.client.scheduler_info()["workers"]
        assert len(workers) == 2 and all(w["nthreads"] == 1 for w in workers.values())
        ids = [srv.client.upload(d, host_id="h").job.id for d in dumps]
        dask_reports = []
        for job_id in ids:
            job = srv.client.wait(job_id, timeout=120)
            assert state_name(job.state) == "succeeded", job.error
            dask_reports.append(srv.client.report(job_id)[1])
        # cancel a scan running on a worker
        extra = forged("win7sp1", **SMALL, uptime_s=77.0)[0]
        job = srv.client.upload(extra).job
        wait_state(srv.client, job.id, pb.JOB_STATE_RUNNING, timeout=60)
        t0 = time.monotonic()
        cancelled = srv.client.cancel(job.id)
        assert state_name(cancelled.state) == "cancelled" and time.monotonic() - t0 < 5
        # the cluster goes on
        again = srv.client.upload(extra)
        assert not again.deduplicated
        assert state_name(srv.client.wait(again.job.id, timeout=120).state) == "succeeded"
    monkeypatch.delenv("POOLSCOPE_SCAN_HOLD_S")
    with running_server(tmp_path / "local", workers=2) as srv:
        ids = [srv.client.upload(d, host_id="h").job.id for d in dumps]
        local_reports = [srv.client.report(srv.client.wait(i, timeout=120).id)[1] for i in ids]
    assert dask_reports == local_reports
    for d, rep in zip(dumps, dask_reports, strict=True):
        assert comparable(rep) == comparable(poolscope.scan(d).to_dict())


def test_batch_on_dask_local_cluster(tmp_path, forged):
    from poolscope.service.batch import run_batch

    root = tmp_path / "dumps"
    (root / "h1").mkdir(parents=True)
    for i in range(3):
        src = forged("win7sp1", **SMALL, uptime_s=50.0 + i)[0]
        (root / "h1" / f"d{i}.dmp").write_bytes(src.read_bytes())
    (root / "h1" / "bad.dmp").write_bytes(b"PAGEDU64" + bytes(100))

    def run(**kw):
        lines = []
        res = run_batch([str(root)], emit=lines.append, **kw)
        return sorted(lines, key=lambda x: x["source"]), res

    dask_lines, dask_res = run(dask="local", workers=2)
    local_lines, local_res = run(workers=2)
    assert dask_res.failed == local_res.failed == 1
    strip = [{k: v for k, v in x.items() if k != "elapsed_s"} for x in dask_lines]
    assert strip == [{k: v for k, v in x.items() if k != "elapsed_s"} for x in local_lines]
    assert dask_res.aggregate == local_res.aggregate and dask_res.aggregate["job_count"] == 3
