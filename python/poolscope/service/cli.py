"""The service's commands of ``poolscope``: serve, submit, jobs, report, cancel, aggregate, batch.

Client commands find the server with ``--server HOST:PORT`` (or ``POOLSCOPE_SERVER``) and send
``--token`` (or ``POOLSCOPE_TOKEN``); ``--tls-ca FILE`` (or ``--tls`` for the system's roots)
makes the connection TLS.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from poolscope.argtypes import count, parse_size, positive_int, seconds

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["DEFAULT_SERVER", "add_commands", "parse_label", "parse_size", "parse_when"]

DEFAULT_SERVER = "127.0.0.1:50051"


def _console(stderr: bool = False) -> Console:
    from poolscope import render

    return render.console(stderr=stderr)


def parse_when(text: str) -> float:
    """An ISO 8601 time, or an age like ``30m``, ``12h``, ``7d`` → Unix seconds."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([smhdw])", text.strip())
    if m:
        unit = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[m.group(2)]
        return time.time() - float(m.group(1)) * unit
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a time: {text!r} (ISO 8601 like 2024-05-01T12:00:00Z, or an age like 12h)"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def parse_label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"a label is KEY=VALUE, got {text!r}")
    return key, value


# ---------------------------------------------------------------------------------- client


def _client(args: argparse.Namespace) -> Any:
    from poolscope.service.client import ServiceClient

    ca = Path(args.tls_ca).read_bytes() if args.tls_ca else None
    return ServiceClient(
        args.server,
        token=args.token,
        tls=args.tls or ca is not None,
        root_certificates=ca,
        server_name=args.tls_server_name,
    )


def _label_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--label", action="append", type=parse_label, metavar="KEY=VALUE",
        help="a label (repeatable)",
    )  # fmt: skip


def _client_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("server")
    g.add_argument(
        "--server",
        default=os.environ.get("POOLSCOPE_SERVER", DEFAULT_SERVER),
        help="HOST:PORT of the poolscope server (default: $POOLSCOPE_SERVER or %(default)s)",
    )
    g.add_argument(
        "--token",
        default=os.environ.get("POOLSCOPE_TOKEN"),
        help="bearer token (default: $POOLSCOPE_TOKEN)",
    )
    g.add_argument("--tls", action="store_true", help="connect with TLS (the system's roots)")
    g.add_argument("--tls-ca", metavar="PEM", help="connect with TLS, trusting this certificate")
    g.add_argument("--tls-server-name", help="the name the server's certificate holds")


def _rpc_errors(fn: Any) -> Any:
    def wrapped(args: argparse.Namespace) -> int:
        import grpc

        try:
            return int(fn(args))
        except grpc.RpcError as e:
            code = e.code()  # type: ignore[attr-defined]
            print(f"poolscope: {code.name}: {e.details()}", file=sys.stderr)  # type: ignore[attr-defined]
            return 2

    wrapped.__name__ = fn.__name__
    wrapped.__doc__ = fn.__doc__
    return wrapped


def _labels(args: argparse.Namespace) -> dict[str, str]:
    return dict(args.label or [])


def _job_row(job: Any) -> dict[str, Any]:
    from google.protobuf.json_format import MessageToDict

    d = MessageToDict(job, preserving_proto_field_name=True)
    d["state"] = _state(job.state)
    d["source"] = d.get("source", "").removeprefix("JOB_SOURCE_").lower()
    d["size_bytes"] = int(job.size_bytes)
    return d


def _state(state: int) -> str:
    from poolscope.service.client import state_name

    return state_name(state)


@_rpc_errors
def cmd_submit(args: argparse.Namespace) -> int:
    """Upload dumps, then (unless --no-wait) wait for their reports."""
    import socket

    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    console = _console(stderr=True)
    host_id = args.host_id if args.host_id is not None else socket.gethostname()
    jobs = []
    with _client(args) as client:
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=not console.is_terminal,
        ) as progress:
            for dump in args.dumps:
                path = Path(dump)
                task = progress.add_task(f"upload {path.name}", total=path.stat().st_size)
                resp = client.upload(
                    path,
                    host_id=host_id,
                    labels=_labels(args),
                    compress=not args.no_compress,
                    level=args.level,
                    priority=args.priority,
                    timeout_seconds=args.timeout or 0.0,
                    progress=lambda n, task=task: progress.advance(task, n),
                    verify=args.verify,
                )
                jobs.append((path, resp.job))
                what = "deduplicated: " if resp.deduplicated else ""
                progress.console.print(
                    f"{path.name}: {what}job {resp.job.id} {_state(resp.job.state)}"
                )
        if args.no_wait:
            if args.json:
                for _, job in jobs:
                    print(json.dumps(_job_row(job)))
            return 0
        failed = 0
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}% {task.fields[state]}"),
            console=console,
            transient=not console.is_terminal,
        ) as progress:
            tasks = {
                job.id: progress.add_task(f"scan {p.name}", total=100, state="") for p, job in jobs
            }
            finals = {}
            for _, job in jobs:

                def on_event(ev: Any, job_id: str = job.id) -> None:
                    progress.update(
                        tasks[job_id],
                        completed=ev.job.progress_percent,
                        state=_state(ev.job.state),
                    )

                finals[job.id] = client.wait(job.id, timeout=args.wait_timeout, on_event=on_event)
        from poolscope import render
        from poolscope.report import Report

        for path, job in jobs:
            final = finals[job.id]
            if _state(final.state) != "succeeded":
                failed += 1
                console.print(
                    f"[red]{path.name}: job {job.id} {_state(final.state)}: {final.error}"
                )
                continue
            _, doc = client.report(job.id)
            if args.json:
                print(json.dumps(doc))
            else:
                console.print(f"[bold]{path.name}[/bold]: job {job.id}")
                render.scan(Report.from_dict(doc), _console(), top=args.top)
    return 1 if failed else 0


@_rpc_errors
def cmd_jobs(args: argparse.Namespace) -> int:
    """List jobs, newest first."""
    from rich.table import Table

    from poolscope.service.spool import human_bytes
    from poolscope.service.v1 import scan_pb2 as pb

    states = [pb.JobState.Value(f"JOB_STATE_{s.upper()}") for s in args.state or []]
    with _client(args) as client:
        jobs = list(
            client.list_jobs(
                states=states,
                host_id=args.host or "",
                labels=_labels(args),
                created_after=args.since,
                created_before=args.until,
                limit=args.limit,
            )
        )
    if args.json:
        for job in jobs:
            print(json.dumps(_job_row(job)))
        return 0
    t = Table(title=f"jobs of {args.server}")
    for col in ("job", "state", "%", "file", "host", "size", "created (UTC)", "error"):
        t.add_column(
            col,
            justify="right" if col in ("%", "size") else "left",
            no_wrap=col in ("job", "state", "created (UTC)"),
        )
    for j in jobs:
        created = datetime.fromtimestamp(j.create_time.seconds, UTC).strftime("%m-%d %H:%M:%S")
        t.add_row(
            j.id,
            _state(j.state),
            f"{j.progress_percent:.0f}",
            j.file_name,
            j.host_id,
            human_bytes(j.size_bytes),
            created,
            j.error,
        )
    _console().print(t)
    return 0


@_rpc_errors
def cmd_report(args: argparse.Namespace) -> int:
    """Print the report of a finished job."""
    from poolscope import render
    from poolscope.report import Report

    with _client(args) as client:
        _, doc = client.report(args.job)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        render.scan(Report.from_dict(doc), _console(), top=args.top)
    return 0


@_rpc_errors
def cmd_cancel(args: argparse.Namespace) -> int:
    """Cancel queued or running jobs."""
    with _client(args) as client:
        for job_id in args.jobs:
            job = client.cancel(job_id)
            print(f"{job.id} {_state(job.state)}")
    return 0


@_rpc_errors
def cmd_aggregate(args: argparse.Namespace) -> int:
    """Top tags, suspect drivers, bug checks and growing tags across finished jobs."""
    from poolscope.service import aggregate

    with _client(args) as client:
        doc = client.aggregate(
            host_id=args.host or "",
            labels=_labels(args),
            created_after=args.since,
            created_before=args.until,
            top=args.top,
            min_growth_bytes=args.min_growth,
        )
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        aggregate.render(doc, _console(), title=f"aggregate of {args.server}")
    return 0


# ---------------------------------------------------------------------------------- serve


def _symbol_path(args: argparse.Namespace) -> str | None:
    """--symbol-path, else the environment's _NT_SYMBOL_PATH (WinDbg's variable)."""
    return args.symbol_path if args.symbol_path is not None else os.environ.get("_NT_SYMBOL_PATH")


def _symbol_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--symbol-path",
        help="WinDbg symbol path (srv*CACHE*URL;...) for the kernels' PDBs, found by GUID and "
        "age (default: $_NT_SYMBOL_PATH); a dump whose PDB cannot be had is scanned on its "
        "profile and its report says why",
    )
    p.add_argument("--symbol-timeout", type=seconds, default=30.0, help="seconds per PDB download")


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the scan service until SIGINT/SIGTERM."""
    import logging
    import signal

    from poolscope.service.server import ConfigError, PoolscopeServer, ServerConfig

    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )

    def refuse(message: str) -> int:
        print(f"poolscope serve: error: {message}", file=sys.stderr)
        return 2

    token = args.token
    if args.token_file:
        try:
            token = Path(args.token_file).read_text().strip()
        except (OSError, UnicodeDecodeError) as e:
            why = e.strerror if isinstance(e, OSError) else "it is not text"
            return refuse(f"cannot read the token file {args.token_file}: {why}")
        if not token:
            return refuse(
                f"the token file {args.token_file} is empty: the server would accept every "
                "caller; put the bearer token in it (or drop --token-file to run without auth)"
            )
    elif token is not None and not token.strip():
        return refuse(
            "the bearer token (--token or POOLSCOPE_TOKEN) is empty: give the token or leave "
            "both unset to run without auth"
        )
    config = ServerConfig(
        address=args.address,
        data_dir=args.data_dir,
        workers=args.workers,
        max_queue=args.max_queue,
        job_timeout_s=args.job_timeout,
        token=token or None,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        dask=args.dask,
        allowed_roots=args.allow_root or [],
        max_upload_bytes=args.max_upload,
        max_zstd_window=args.max_zstd_window,
        spool_quota_bytes=args.spool_quota,
        keep_dumps=args.keep_dumps,
        fsync=not args.no_fsync,
        threads=args.rpc_threads,
        symbol_path=_symbol_path(args),
        symbol_timeout_s=args.symbol_timeout,
        max_uploads=args.max_uploads,
        max_uploads_per_peer=args.max_uploads_per_peer,
        upload_idle_timeout_s=args.upload_idle_timeout,
        upload_timeout_s=args.upload_timeout,
        min_free_bytes=args.min_free,
    )
    try:
        server = PoolscopeServer(config)
    except ConfigError as e:
        return refuse(str(e))
    except (OSError, RuntimeError) as e:
        return refuse(f"cannot start: {e}")
    port = server.start()
    host = args.address.rsplit(":", 1)[0]
    scheme = "tls" if args.tls_cert else "plaintext"
    print(
        f"poolscope: serving on {host}:{port} ({scheme}, {server.executor.name} executor, "
        f"{server.executor.slots} scans at once, data in {args.data_dir}"
        f"{', token required' if token else ''})",
        flush=True,
    )
    done = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        done.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    while not done.wait(1.0):
        pass
    print("poolscope: stopping (running scans are queued again for the next start)", flush=True)
    server.stop(grace_s=5)
    return 0


# ---------------------------------------------------------------------------------- batch


def cmd_batch(args: argparse.Namespace) -> int:
    """Scan directories, archives and dumps in parallel; JSON lines and a summary."""
    from rich.progress import Progress

    from poolscope.service import aggregate, batch

    console = _console(stderr=True)
    out = open(args.output, "w") if args.output else sys.stdout  # noqa: SIM115
    write_lock = threading.Lock()

    def emit(line: dict[str, Any]) -> None:
        with write_lock:
            out.write(json.dumps(line) + "\n")
            out.flush()
        if line["status"] != "ok":
            console.print(f"[yellow]skipped {line['source']}: {line['error']}")

    try:
        with Progress(*batch.progress_columns(), console=console) as progress:
            task = progress.add_task("batch", total=None, files="")

            def on_progress(t: batch.Totals) -> None:
                progress.update(
                    task,
                    total=t.bytes_found or None,
                    completed=t.bytes_done,
                    files=batch.files_text(t),
                )

            result = batch.run_batch(
                args.paths,
                workers=args.workers,
                dask=args.dask,
                emit=emit,
                timeout_s=args.timeout,
                host_from=args.host_from,
                max_decompressed=args.max_decompressed,
                scratch_dir=args.scratch_dir,
                symbol_path=_symbol_path(args),
                symbol_timeout=args.symbol_timeout,
                top=args.top,
                on_progress=on_progress,
            )
    finally:
        if out is not sys.stdout:
            out.close()
    if args.summary_json:
        Path(args.summary_json).write_text(json.dumps(result.aggregate, indent=2))
    ok = result.lines - result.failed
    aggregate.render(result.aggregate, console, title="batch summary")
    console.print(f"{ok} scanned, {result.failed} failed or skipped")
    if result.lines == 0:
        console.print("[red]no dumps found (.dmp, .dmp.zst, .tar, .tar.zst, .zip)")
        return 2
    return 3 if result.failed else 0


# ---------------------------------------------------------------------------------- parser


def add_commands(sub: Any) -> None:
    """Add serve, submit, jobs, report, cancel, aggregate and batch to ``poolscope``."""
    import poolscope

    p = sub.add_parser("serve", help="run the gRPC scan service")
    _symbol_args(p)
    p.add_argument("--address", default=DEFAULT_SERVER, help="HOST:PORT (default %(default)s)")
    p.add_argument("--data-dir", default="poolscope-data", help="jobs, reports and the spool")
    p.add_argument("--workers", type=positive_int, help="scans at once (default: cores)")
    p.add_argument(
        "--max-queue", type=positive_int, default=1000, help="queued jobs before RESOURCE_EXHAUSTED"
    )
    p.add_argument("--job-timeout", type=seconds, default=3600.0, help="seconds per scan")
    p.add_argument(
        "--token", default=os.environ.get("POOLSCOPE_TOKEN"), help="require this bearer token"
    )
    p.add_argument("--token-file", help="read the bearer token from this file")
    p.add_argument("--tls-cert", help="serve TLS with this certificate (PEM) ...")
    p.add_argument("--tls-key", help="... and this private key (PEM)")
    p.add_argument(
        "--dask",
        metavar="ADDRESS",
        help="scan on Dask: a scheduler (tcp://host:8786) or 'local' for a LocalCluster of "
        "--workers processes; the data dir (spool) must be shared storage for remote workers",
    )
    p.add_argument(
        "--allow-root",
        action="append",
        metavar="DIR",
        help="SubmitPath may scan dumps under DIR (repeatable; none: SubmitPath is disabled)",
    )
    p.add_argument("--max-upload", type=parse_size, default=64 << 30, help="default 64G")
    p.add_argument(
        "--max-zstd-window",
        type=parse_size,
        default=1 << 27,
        help="largest zstd window accepted (default 128M, zstd's own default limit)",
    )
    p.add_argument("--spool-quota", type=parse_size, default=0, help="disk for spooled dumps")
    p.add_argument(
        "--keep-dumps",
        action="store_true",
        help="keep scanned dumps in the spool (oldest evicted when the quota is reached)",
    )
    p.add_argument(
        "--no-fsync", action="store_true", help="do not fsync uploaded dumps before accepting"
    )
    p.add_argument(
        "--rpc-threads",
        type=positive_int,
        default=64,
        help="threads for the calls served on threads (uploads, WatchJob and health hold none)",
    )
    p.add_argument(
        "--max-uploads",
        type=positive_int,
        default=64,
        help="uploads in progress at once (default 64)",
    )
    p.add_argument(
        "--max-uploads-per-peer",
        type=positive_int,
        default=32,
        help="uploads in progress at once from one client address (default 32)",
    )
    p.add_argument(
        "--upload-idle-timeout",
        type=seconds,
        default=60.0,
        help="drop an upload that sends nothing for this many seconds (default 60)",
    )
    p.add_argument(
        "--upload-timeout",
        type=seconds,
        default=3600.0,
        help="drop an upload not finished this many seconds after it began (default 3600)",
    )
    p.add_argument(
        "--min-free",
        type=parse_size,
        default=256 << 20,
        help="refuse uploads while the data dir has less free space (default 256M)",
    )
    p.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="least severe log record written to stderr (default info)",
    )
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("submit", help="upload dumps to a poolscope server and wait for reports")
    p.add_argument("dumps", nargs="+", metavar="DUMP", help=".dmp or .dmp.zst")
    _client_args(p)
    p.add_argument("--host-id", help="the dump's host (default: this host's name)")
    _label_arg(p)
    p.add_argument("--priority", type=int, default=0, help="higher runs first")
    p.add_argument("--timeout", type=seconds, help="scan timeout in seconds (at most the server's)")
    p.add_argument("--no-compress", action="store_true", help="send plain bytes (default zstd)")
    p.add_argument("--level", type=int, default=3, help="zstd level (default 3)")
    p.add_argument("--verify", action="store_true", help="hash while sending; check the server's")
    p.add_argument("--no-wait", action="store_true", help="print the job ids and exit")
    p.add_argument("--wait-timeout", type=seconds, help="give up waiting after this many seconds")
    p.add_argument("--json", action="store_true", help="print each report as one JSON line")
    p.add_argument("--top", type=count, default=10, help="rows per table")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("jobs", help="list a poolscope server's jobs")
    _client_args(p)
    p.add_argument(
        "--state",
        action="append",
        choices=["queued", "running", "succeeded", "failed", "cancelled"],
        help="only jobs in this state (repeatable)",
    )
    p.add_argument("--host", help="only this host id")
    _label_arg(p)
    p.add_argument("--since", type=parse_when, help="created at or after (ISO time or age: 12h)")
    p.add_argument("--until", type=parse_when, help="created before")
    p.add_argument("--limit", type=count, default=50, help="at most this many jobs (default 50)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=cmd_jobs)

    p = sub.add_parser("report", help="the report of a finished job")
    p.add_argument("job", help="the job's id (submit and jobs print it)")
    _client_args(p)
    p.add_argument("--json", action="store_true", help="the stable JSON document")
    p.add_argument("--top", type=count, default=10, help="rows per table (default 10)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("cancel", help="cancel queued or running jobs")
    p.add_argument("jobs", nargs="+", metavar="JOB")
    _client_args(p)
    p.set_defaults(func=cmd_cancel)

    p = sub.add_parser("aggregate", help="tags, drivers, bug checks and trends across jobs")
    _client_args(p)
    p.add_argument("--host", help="only this host id")
    _label_arg(p)
    p.add_argument("--since", type=parse_when, help="jobs created at or after")
    p.add_argument("--until", type=parse_when, help="jobs created before")
    p.add_argument("--top", type=count, default=10, help="rows per table (default 10)")
    p.add_argument(
        "--min-growth",
        type=parse_size,
        default=0,
        help="smallest growth reported as a trend (bytes, or K/M/G/T)",
    )
    p.add_argument("--json", action="store_true", help="print the aggregate as JSON")
    p.set_defaults(func=cmd_aggregate)

    p = sub.add_parser(
        "batch", help="scan directories and archives of dumps in parallel (locally or on Dask)"
    )
    _symbol_args(p)
    p.add_argument(
        "paths", nargs="+", metavar="PATH", help="directories, .tar, .tar.zst, .zip, .dmp, .dmp.zst"
    )
    p.add_argument("--workers", type=positive_int, help="scans at once (default: cores)")
    p.add_argument("--dask", metavar="ADDRESS", help="a Dask scheduler, or 'local'")
    p.add_argument("-o", "--output", help="write the JSON lines here (default: stdout)")
    p.add_argument("--summary-json", metavar="FILE", help="also write the aggregate as JSON")
    p.add_argument("--top", type=count, default=10, help="rows per summary table")
    p.add_argument("--timeout", type=seconds, default=3600.0, help="seconds per scan")
    p.add_argument(
        "--host-from",
        choices=["dir", "none"],
        default="dir",
        help="a dump's host for trends: the directory holding it (default), or none",
    )
    p.add_argument(
        "--max-decompressed",
        type=parse_size,
        default=poolscope.DEFAULT_MAX_DECOMPRESSED,
        help="refuse compressed dumps that decompress to more than this",
    )
    p.add_argument("--scratch-dir", help="where archive members are extracted (default: $TMPDIR)")
    p.set_defaults(func=cmd_batch)
