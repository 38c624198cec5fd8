"""Human output: WinDbg-like tables with rich. Reads report dicts; computes nothing."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


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
    for i, (p, meaning) in enumerate(zip(bc["params"], bc["meanings"], strict=True), 1):
        rows.append((f"  Arg{i}", f"{p:<20} {meaning}"))
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
    t = Table("Base", "End", "Name", "Path")
    for m in mods:
        t.add_row(m["base"], m["end"], m["name"], m["path"])
    console.print(t)
