"""Human output: WinDbg-like tables with rich. Reads report dicts; computes nothing."""

from __future__ import annotations

import os
from typing import Any

from rich.console import Console
from rich.table import Table

#: The width of output that is not a terminal (a pipe, a file, a log): wide enough that no
#: table is cut and no line is wrapped; a table is only as wide as its content.
UNBOUNDED_WIDTH = 100_000

width: int | None = None
"""``--width``: the columns of every console made here; None: the terminal's, or unbounded when
the output is not a terminal."""


class _Console(Console):
    def on_broken_pipe(self) -> None:
        # rich would exit(1); the command exits quietly as the shell expects (see cli.main).
        raise BrokenPipeError


def console(stderr: bool = False) -> Console:
    """A console for human output: the terminal's width on a terminal (tables cut only where
    the terminal is too narrow); full width, never wrapped, when written to a pipe or a file."""
    c = _Console(stderr=stderr, width=width)
    if width is None and not c.is_terminal and not os.environ.get("COLUMNS"):
        c = _Console(stderr=stderr, width=UNBOUNDED_WIDTH)
    return c


def info(report: dict[str, Any], console: Console) -> None:
    t = Table(title=f"[bold]{report['path']}[/]", show_header=False, box=None, pad_edge=False)
    t.add_column(style="bold cyan", no_wrap=True)
    t.add_column()
    bc = report["bugcheck"]
    size_mib = report["file_size"] / (1 << 20)
    zst = " (decompressed from zstd)" if report["decompressed"] else ""
    lab = f"  {report['nt_build_lab']}" if report["nt_build_lab"] else ""
    rows = [
        ("Dump type", report["dump_type"] + zst),
        ("OS build", f"{report['build']} ({report['machine']}){lab}"),
        ("Bugcheck", f"{bc['code']} {bc['name'] or '(unknown code)'}"),
    ]
    strings = bc.get("strings") or [None] * len(bc["params"])
    for i, (p, meaning, text) in enumerate(
        zip(bc["params"], bc["meanings"], strings, strict=True), 1
    ):
        shown = f'{meaning}: "{text}"' if text is not None else meaning
        rows.append((f"  Arg{i}", f"{p:<20} {shown}"))
    pages = report["physical_pages"]
    kdbg = report["kdbg"]
    rows += [
        ("Processors", str(report["processors"])),
        ("System time", str(report["system_time"])),
        ("Uptime", _duration(report["uptime_s"])),
        ("File size", f"{report['file_size']:,} bytes ({size_mib:,.1f} MiB)"),
        ("Physical pages", f"{pages:,} present ({pages * 4096 / (1 << 20):,.1f} MiB)"),
        ("Kernel base", str(report["kernel_base"])),
        ("Modules", str(report["modules"])),
        ("KDBG", "not found" if kdbg is None else f"{kdbg['va']} via {kdbg['source']}"),
        ("Profile", report["profile"]),
    ]
    if report.get("truncated"):
        tr = report["truncated"]
        rows.append((
            "[bold yellow]Truncated[/]",
            f"file ends at {tr['actual_size']:,} of {tr['expected_size']:,} bytes: "
            f"{tr['pages_missing']:,} of {tr['pages_expected']:,} pages missing "
            f"({tr['missing_share']:.0%}), read as not present",
        ))  # fmt: skip
    if report["comment"]:
        rows.append(("Comment", report["comment"]))
    for k, v in rows:
        t.add_row(k, v)
    console.print(t)
    for note in report["notes"]:
        console.print(f"[dim]note: {note}[/]")


def _duration(seconds: float) -> str:
    s = int(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return (f"{d} days " if d else "") + f"{h}:{m:02d}:{s:02d}"


def modules(mods: list[dict[str, Any]], console: Console) -> None:
    t = Table("Base", "End", "Name", "Path", title="Loaded modules")
    for m in mods:
        t.add_row(m["base"], m["end"], m["name"], m["path"])
    console.print(t)


def _kb(n: int) -> str:
    return f"{n:,}"


def poolused(
    rows: list[dict[str, Any]],
    console: Console,
    sort: str = "nonpaged",
    session: bool = False,
    all_rows: list[dict[str, Any]] | None = None,
) -> None:
    """``rows``: the rows shown; ``all_rows``: every row (``--top`` shows the first ones), which
    the TOTAL line sums."""
    every = rows if all_rows is None else all_rows
    hidden = len(every) - len(rows)
    by = {"nonpaged": "NonPaged Pool Consumed", "paged": "Paged Pool Consumed"}.get(sort, "Allocs")
    title = "Session pool tags (!poolused 8)" if session else "Pool tags (!poolused)"
    if session:
        console.print(" Session pool (the session of the dump's current address space)")
    console.print(f" Sorting by {by}\n")
    t = Table(
        "Tag", "NP Allocs", "NP Used", "P Allocs", "P Used", "Description", box=None, title=title
    )
    for r in rows:
        t.add_row(
            r["tag"],
            _kb(r["nonpaged_in_use"]),
            _kb(r["nonpaged_bytes"]),
            _kb(r["paged_in_use"]),
            _kb(r["paged_bytes"]),
            r.get("description", ""),
        )
    if hidden > 0:
        t.add_row(f"... {hidden:,} more tags", "", "", "", "", "", style="dim")
    t.add_row(
        "TOTAL",
        _kb(sum(r["nonpaged_in_use"] for r in every)),
        _kb(sum(r["nonpaged_bytes"] for r in every)),
        _kb(sum(r["paged_in_use"] for r in every)),
        _kb(sum(r["paged_bytes"] for r in every)),
        f"all {len(every):,} tags" if hidden > 0 else "",
        style="bold",
    )
    console.print(t)


def poolfind(
    tag: str, big: list[dict[str, Any]], blocks: list[dict[str, Any]], console: Console
) -> None:
    console.print(f"Scanning large pool allocation table for tag '{tag}'")
    for b in big:
        state = "Free" if b["free"] else "Allocated"
        console.print(f"{b['va']} : tag {b['tag']}, size {b['bytes']:#x}, {b['pool']} ({state})")
    console.print(f"\nScanning pool pages for tag '{tag}'")
    for b in blocks:
        state = "Allocated" if b["allocated"] else "Free"
        addr = b["va"] or f"{b['pa']} (phys)"
        console.print(
            f"{addr} size: {b['size']:5x} previous size: {b['previous_size']:5x}  "
            f"({state}) {b['tag']} {b['pool']}"
        )
    console.print(f"\n{len(big)} big-pool entries, {len(blocks)} pool blocks")


def scan(rep: Any, console: Console, top: int = 10) -> None:
    info(rep.dump, console)
    m = rep.memory
    if m:
        t = Table(title="Memory (!vm)", show_header=False, box=None)
        for label, key in [
            ("Physical pages", "physical_pages"),
            ("Available pages", "available_pages"),
            ("NonPagedPool Usage", "nonpaged_pool_pages"),
            ("NonPagedPool Max", "nonpaged_pool_max_pages"),
            ("PagedPool Usage", "paged_pool_pages"),
            ("PagedPool Maximum", "paged_pool_max_pages"),
            ("Committed pages", "commit_pages"),
            ("Commit limit", "commit_limit_pages"),
        ]:
            v = m.get(key)
            t.add_row(label, "?" if v is None else f"{v:>10,} ({v * 4:,} Kb)")
        console.print(t)
        if m["excessive_nonpaged"]:
            console.print("[bold red]********** Excessive NonPaged Pool Usage *****[/]")
        if m["excessive_paged"]:
            console.print("[bold red]********** Excessive Paged Pool Usage *****[/]")
    if rep.poolused:
        poolused(rep.poolused[:top], console, all_rows=rep.poolused)
    if rep.poolused_session:
        poolused(rep.poolused_session[:top], console, session=True, all_rows=rep.poolused_session)
    if rep.pool_scan:
        s = rep.pool_scan
        console.print(
            f"\nPool page scan ({', '.join(s['layouts'])}): {s['pages_scanned']:,} pages, "
            f"{s['pool_pages']:,} pool pages, {s['rejected_pages']:,} rejected"
        )
    live = sorted((b for b in rep.bigpool if not b["free"]), key=lambda b: -b["bytes"])
    if live:
        t = Table("VA", "Tag", "Bytes", "Pool", title="Big pool (largest)", box=None)
        for b in live[:top]:
            t.add_row(b["va"], b["tag"], _kb(b["bytes"]), b["pool"])
        console.print(t)
    if rep.findings:
        t = Table("Severity", "Kind", "Summary", title="Findings", box=None)
        for f in rep.findings:
            t.add_row(f.severity, f.kind, f.summary)
        console.print(t)
    for section, why in rep.unavailable.items():
        console.print(f"[yellow]{section} unavailable: {why}[/]")


def _stack(frames: list[str], console: Console) -> None:
    for f in frames:
        console.print(f"    {f}")


def _more(doc: dict[str, Any], key: str, what: str, console: Console) -> None:
    """Say how many rows of a table the document left out (``--rows``)."""
    left = int(doc.get(f"{key}_total") or 0) - len(doc.get(key) or [])
    if left > 0:
        console.print(f"... {left:,} more {what} (--rows)")


def verifier(doc: dict[str, Any], console: Console, address: int | None = None) -> None:
    if not doc.get("enabled"):
        console.print("Driver Verifier is not enabled in this dump.")
        return
    console.print(f"Verify Flags Level 0x{doc['level']:08x}: {', '.join(doc['options'])}\n")
    st = doc.get("stats") or {}
    t = Table(show_header=False, box=None, title="Summary of All Verifier Statistics")
    for k, v in st.items():
        t.add_row(k, f"0x{v:x}")
    console.print(t)
    t = Table(
        "Driver",
        "State",
        "NP allocs",
        "NP bytes",
        "P allocs",
        "P bytes",
        box=None,
        title="Verified drivers (current allocations)",
    )
    for d in doc.get("drivers", []):
        t.add_row(
            d["name"],
            d["state"],
            _kb(d["current_nonpaged_allocs"]),
            _kb(d["current_nonpaged_bytes"]),
            _kb(d["current_paged_allocs"]),
            _kb(d["current_paged_bytes"]),
        )
    console.print(t)
    tracked = doc.get("tracked", [])
    if tracked:
        t = Table(
            "Driver",
            "PoolAddress",
            "SizeInBytes",
            "Tag",
            "CallersAddress",
            box=None,
            title="Tracked pool allocations (!verifier 3)",
        )
        for e in tracked:
            caller = e["caller_symbol"] or e["caller"]
            t.add_row(e["driver"], e["va"], f"{e['bytes']:#x}", e["tag"], caller)
        console.print(t)
    _more(doc, "tracked", "tracked allocations", console)
    where = f", searching for address {address:#x}" if address is not None else ""
    log = doc.get("log", [])
    console.print(
        f"\n[bold]Log of recent kernel pool Allocate and Free operations (!verifier 80){where}:[/]"
    )
    for e in log:
        console.print(f"Pool block {e['va']}, Size {e['bytes']:#x}, Thread {e['thread']}")
        _stack(e.get("stack_symbols", []), console)
    _more(doc, "log", "log entries", console)
    irps = doc.get("irp_log", [])
    if irps or doc.get("irp_log_total"):
        console.print("\n[bold]IRP log (!verifier 100):[/]")
    for e in irps:
        console.print(
            f"IRP {e['irp']}, Thread {e['thread']}, IRQL {e['irql']:#x}, "
            f"KernelApcDisable {e['kernel_apc_disable']:#x}, "
            f"SpecialApcDisable {e['special_apc_disable']:#x}"
        )
        _stack(e.get("stack_symbols", []), console)
    _more(doc, "irp_log", "IRP log entries", console)
