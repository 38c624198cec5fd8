"""The committed gRPC stubs match what grpcio-tools generates from proto/ (no drift)."""

from __future__ import annotations

from pathlib import Path

import pytest

from poolscope.service import codegen

# The source tree's proto/ and stubs: the installed package carries the stubs but not proto/.
ROOT = Path(__file__).resolve().parents[1]
PROTO_ROOT = ROOT / "proto"
STUBS_DIR = ROOT / "python" / "poolscope" / "service" / "v1"


def test_stubs_match_proto(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools", reason="grpcio-tools is in the test extra")
    assert (PROTO_ROOT / codegen.PROTO_FILE).is_file()
    written = codegen.generate(tmp_path, proto_root=PROTO_ROOT)
    assert sorted(p.name for p in written) == sorted(codegen.GENERATED)
    for fresh in written:
        committed = STUBS_DIR / fresh.name
        assert committed.is_file(), (
            f"{committed} is missing: run python -m poolscope.service.codegen"
        )
        assert committed.read_text() == fresh.read_text(), (
            f"{committed} differs from what {codegen.PROTO_FILE} generates: "
            "run python -m poolscope.service.codegen and commit the result"
        )


def test_stubs_import_and_describe_the_service() -> None:
    from poolscope.service.v1 import scan_pb2, scan_pb2_grpc

    service = scan_pb2.DESCRIPTOR.services_by_name["ScanService"]
    methods = {m.name: (m.client_streaming, m.server_streaming) for m in service.methods}
    assert methods == {
        "UploadDump": (True, False),
        "SubmitPath": (False, False),
        "GetJob": (False, False),
        "ListJobs": (False, False),
        "CancelJob": (False, False),
        "WatchJob": (False, True),
        "GetReport": (False, False),
        "Aggregate": (False, False),
    }
    assert hasattr(scan_pb2_grpc, "ScanServiceServicer")
    assert scan_pb2.JobState.Name(scan_pb2.JOB_STATE_QUEUED) == "JOB_STATE_QUEUED"
