"""Generate the Python gRPC stubs of ``proto/poolscope/v1/scan.proto`` (a developer tool).

    python -m poolscope.service.codegen          # rewrite python/poolscope/service/v1/

Needs ``grpcio-tools`` (the ``test`` extra). The stubs are committed;
``tests/test_service_proto.py`` regenerates them into a temporary directory and fails when they
differ from the committed ones.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

#: The repository's ``proto/`` directory (this file is python/poolscope/service/codegen.py).
PROTO_ROOT = Path(__file__).resolve().parents[3] / "proto"
PROTO_FILE = "poolscope/v1/scan.proto"
#: Where the committed stubs live.
STUBS_DIR = Path(__file__).resolve().parent / "v1"
GENERATED = ("scan_pb2.py", "scan_pb2.pyi", "scan_pb2_grpc.py")

# protoc names the module after the proto's path (poolscope.v1); the stubs live one level down.
_FIXES = (
    ("from poolscope.v1 import scan_pb2", "from poolscope.service.v1 import scan_pb2"),
    ("'poolscope.v1.scan_pb2'", "'poolscope.service.v1.scan_pb2'"),
)


def generate(
    out_dir: str | os.PathLike[str], proto_root: str | os.PathLike[str] = PROTO_ROOT
) -> list[Path]:
    """Write ``scan_pb2.py``, ``scan_pb2.pyi`` and ``scan_pb2_grpc.py`` into ``out_dir``."""
    import grpc_tools
    from grpc_tools import protoc

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="poolscope-codegen-") as tmp:
        args = [
            "grpc_tools.protoc",
            f"-I{proto_root}",
            f"-I{well_known}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            PROTO_FILE,
        ]
        rc = protoc.main(args)
        if rc != 0:
            raise RuntimeError(f"protoc failed ({rc}) on {Path(proto_root) / PROTO_FILE}")
        written = []
        for name in GENERATED:
            src = Path(tmp) / "poolscope" / "v1" / name
            text = src.read_text(encoding="utf-8")
            for old, new in _FIXES:
                text = text.replace(old, new)
            dst = out / name
            dst.write_text(text, encoding="utf-8")
            written.append(dst)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", default=str(STUBS_DIR), help="output directory (default: %(default)s)")
    ap.add_argument("--proto-root", default=str(PROTO_ROOT))
    args = ap.parse_args(argv)
    for path in generate(args.out, args.proto_root):
        print(path)
    init = Path(args.out) / "__init__.py"
    if not init.exists():
        shutil.copyfile(STUBS_DIR / "__init__.py", init)
    return 0


if __name__ == "__main__":
    sys.exit(main())
