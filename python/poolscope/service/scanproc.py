"""The scan child process: ``poolscope.scan`` in a process of its own, so that the service can
stop a running scan at once (by killing the process) and a dump that crashes or hangs the scanner
takes down only this process, never the server or a Dask worker.

    python -m poolscope.service.scanproc --serve    # long-lived: one request per stdin line
    python -m poolscope.service.scanproc DUMP [--options JSON]   # one scan, then exit

A request is one JSON line ``{"path": "...", "options": {...}}`` (``options`` are keyword
arguments of ``poolscope.scan``). Each response is one JSON header line, ``{"ok": true,
"length": N, "elapsed_s": T}`` followed by N bytes of the report JSON (UTF-8), or ``{"ok":
false, "error": "DumpFormatError: ...", "error_type": "DumpFormatError"}``. The protocol owns
the process's original stdout; anything else printed goes to stderr.

The child dies with its parent (Linux ``PR_SET_PDEATHSIG``), so a killed server leaves no scan
running.

Testing aid: ``POOLSCOPE_SCAN_HOLD_S=N`` in the child's environment makes every scan wait N
seconds before it starts, so that tests can cancel, time out or kill a scan that is certainly
still running however fast the scanner has become.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from typing import Any, BinaryIO


def _die_with_parent() -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return


def scan_json(path: str, options: dict[str, Any]) -> str:
    import poolscope

    return poolscope.scan(path, **options).to_json(indent=None)


def _respond(out: BinaryIO, payload: dict[str, Any], body: bytes = b"") -> None:
    out.write(json.dumps(payload).encode() + b"\n")
    if body:
        out.write(body)
    out.flush()


def handle(request: dict[str, Any], out: BinaryIO) -> None:
    t0 = time.perf_counter()
    hold = float(os.environ.get("POOLSCOPE_SCAN_HOLD_S") or 0)
    if hold > 0:
        time.sleep(hold)
    try:
        body = scan_json(str(request["path"]), dict(request.get("options") or {})).encode()
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # noqa: BLE001 - PyO3 panics derive from BaseException
        name = type(e).__name__
        message = str(e) or repr(e)
        _respond(out, {"ok": False, "error": f"{name}: {message}", "error_type": name})
        return
    _respond(
        out,
        {"ok": True, "length": len(body), "elapsed_s": round(time.perf_counter() - t0, 6)},
        body,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m poolscope.service.scanproc")
    ap.add_argument("dump", nargs="?")
    ap.add_argument("--serve", action="store_true")
    ap.add_argument("--options", default="{}", help="poolscope.scan keyword arguments (JSON)")
    args = ap.parse_args(argv)
    ppid = os.getppid()
    _die_with_parent()
    if os.getppid() != ppid:  # the parent died before the death signal was armed
        return 1
    # The protocol owns the original stdout; stray prints go to stderr.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    if not args.serve:
        if not args.dump:
            ap.error("give a DUMP or --serve")
        handle({"path": args.dump, "options": json.loads(args.options)}, out)
        return 0
    import poolscope  # noqa: F401 - import once, before the first request

    for line in sys.stdin.buffer:
        if not line.strip():
            continue
        handle(json.loads(line), out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
