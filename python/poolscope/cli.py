"""poolscope: scan Windows x64 kernel crash dumps for pool usage, leaks and their owners.

Start with `poolscope forge --builtin win7sp1-leak -o sample.dmp` and `poolscope scan
sample.dmp`. Sizes take K, M, G and T suffixes (64G); addresses are hexadecimal. Human output is
as wide as the terminal; written to a pipe or a file it is never cut or wrapped (--width N sets
it). `poolscope COMMAND --help` describes each command.
"""

# The command's modules (rich, the report, the service's) are imported by the commands that
# need them, not here: every scan job and every batch member pays this module's start-up.

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import poolscope
from poolscope.argtypes import (
    count,
    has_wildcard,
    parse_address,
    parse_size,
    parse_tag,
    positive_int,
    seconds,
    share,
    tag_matcher,
)

if TYPE_CHECKING:
    from rich.console import Console

_SYMBOL_ENV = "_NT_SYMBOL_PATH"  # poolscope.symstore.ENV, without importing it
_SYMBOL_TIMEOUT = 30.0  # poolscope.symstore.DEFAULT_TIMEOUT


def _console(stderr: bool = False) -> Console:
    from poolscope import render

    return render.console(stderr=stderr)


def _symbol_options(args: argparse.Namespace) -> dict[str, Any]:
    """--symbols, --symbol-path (default: the environment's _NT_SYMBOL_PATH), --symbol-timeout."""
    path = args.symbol_path if args.symbol_path is not None else os.environ.get(_SYMBOL_ENV)
    return {"symbols": args.symbols, "symbol_path": path, "symbol_timeout": args.symbol_timeout}


def _warn_symbols(dump: poolscope.Dump | None, info: dict[str, Any] | None = None) -> None:
    look = (info or {}).get("symbols") or {}
    problem = look.get("lookup_problem")
    if problem is None and dump is not None:
        problem = (getattr(dump, "symbols_lookup", None) or {}).get("problem")
    if problem:
        print(f"poolscope: symbols: {problem}", file=sys.stderr)


def _open(args: argparse.Namespace) -> poolscope.Dump:
    dump = poolscope.open(
        args.dump,
        max_decompressed=args.max_decompressed,
        profile=args.profile,
        **_symbol_options(args),
    )
    _warn_symbols(dump)
    return dump


def cmd_info(args: argparse.Namespace) -> int:
    from poolscope import report

    with _open(args) as dump:
        data = report.info(dump)
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        from poolscope import render

        render.info(data, _console())
    return 0


def cmd_modules(args: argparse.Namespace) -> int:
    from poolscope import report

    with _open(args) as dump:
        mods = [
            {
                "name": m.name,
                "path": m.path,
                "base": report.hex_(m.base),
                "end": report.hex_(m.base + m.size),
                "size": m.size,
            }
            for m in dump.modules()
        ]
    if args.json:
        print(json.dumps(mods, indent=2))
    else:
        from poolscope import render

        render.modules(mods, _console())
    return 0


def cmd_scan(args: argparse.Namespace) -> int:
    from poolscope import render

    console = _console(stderr=True)
    with console.status(f"scanning {args.dump} ..."):
        rep = poolscope.scan(
            args.dump,
            pooltag=args.pooltag,
            top=args.top,
            owner_tags=args.owner_tags,
            dominant_share=args.dominant_share,
            max_decompressed=args.max_decompressed,
            profile=args.profile,
            **_symbol_options(args),
        )
    _warn_symbols(None, rep.dump)
    if args.json:
        print(rep.to_json())
    else:
        render.scan(rep, _console(), top=args.top or 10)
    return 0


def cmd_poolused(args: argparse.Namespace) -> int:
    from poolscope.pooltag import TagTable

    tags = TagTable.load(args.pooltag)
    with _open(args) as dump:
        every = dump.poolused(sort=args.sort, top=None, session=args.session)
    rows = every if args.top is None else every[: args.top]
    for r in rows:
        r["description"] = tags.describe(r["tag"])
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        from poolscope import render

        render.poolused(rows, _console(), sort=args.sort, session=args.session, all_rows=every)
    return 0


def _matching_tags(dump: poolscope.Dump, pattern: str) -> list[str]:
    """The tags a WinDbg tag pattern (``Le*``, ``L?ak``) names: those of the tagging
    database, the big-pool table and the pool pages that match it."""
    match = tag_matcher(pattern)
    seen = {r["tag"] for r in dump.poolused(top=None)}
    seen |= {b["tag"] for b in dump.big_pool()}
    seen |= {t["tag"] for t in dump.scan_pool().summary.get("tags", [])}
    return sorted(t for t in seen if match.match(t))


def cmd_poolfind(args: argparse.Namespace) -> int:
    with _open(args) as dump:
        if has_wildcard(args.tag):
            tags = _matching_tags(dump, args.tag)
        else:
            tags = [args.tag]
        wanted = {t.rstrip() for t in tags}
        big = [b for b in dump.big_pool() if b["tag"].rstrip() in wanted]
        blocks = []
        if tags:
            res = dump.scan_pool(tags=tags, blocks=True)
            blocks = res.blocks.rows() if res.blocks is not None else []
    if args.json:
        print(json.dumps({"tag": args.tag, "bigpool": big, "blocks": blocks}, indent=2))
    else:
        from poolscope import render

        render.poolfind(args.tag, big, blocks, _console())
    return 0


def _only_driver(doc: dict[str, Any], dump: poolscope.Dump, driver: str, rows: int | None) -> None:
    """Keep the pool-log and IRP-log entries whose stack passes through ``driver``'s image
    (the drivers and tracked allocations are already the driver's); ``*_total`` count them."""
    name = driver.lower()
    ranges = [
        (m.base, m.base + m.size) for m in dump.modules() if m.name.lower() in (name, name + ".sys")
    ]

    def through(entry: dict[str, Any]) -> bool:
        frames = [int(f, 16) for f in entry.get("stack", [])]
        return any(lo <= f < hi for f in frames for lo, hi in ranges)

    for key in ("log", "irp_log"):
        kept = [e for e in doc.get(key) or [] if through(e)]
        doc[f"{key}_total"] = len(kept)
        doc[key] = kept if rows is None else kept[:rows]
    doc["logs_driver"] = driver


def cmd_verifier(args: argparse.Namespace) -> int:
    with _open(args) as dump:
        rows = None if args.driver else args.rows
        v = dump.verifier(driver=args.driver, address=args.address, rows=rows)
        if args.driver:
            _only_driver(v.document, dump, args.driver, args.rows)
    if args.json:
        print(json.dumps(v.document, indent=2))
    else:
        from poolscope import render

        render.verifier(v.document, _console(), address=args.address)
    return 0


def _builtin_names() -> list[str]:
    from poolscope.forge.scenario import BUILTINS

    return sorted(BUILTINS)


def _builtin_name(text: str) -> str:
    names = _builtin_names()
    if text not in names:
        raise argparse.ArgumentTypeError(
            f"no built-in scenario {text!r}; known: {', '.join(names)} (forge --list)"
        )
    return text


def cmd_forge(args: argparse.Namespace) -> int:
    if args.list:
        for name in _builtin_names():
            print(name)
        return 0
    if not args.output:
        args.parser.error("the following arguments are required: -o/--output")
    if not args.builtin and not args.scenario:
        args.parser.error("give a scenario: SCENARIO.json or --builtin NAME (forge --list)")
    from poolscope import forge

    scenario: Any = forge.builtin(args.builtin) if args.builtin else Path(args.scenario)
    truth = forge.forge(scenario, args.output)
    if args.truth:
        Path(args.truth).write_text(json.dumps(truth.to_dict(), indent=2))
    print(f"wrote {args.output} ({Path(args.output).stat().st_size:,} bytes)", file=sys.stderr)
    return 0


def cmd_profiles(args: argparse.Namespace) -> int:
    from poolscope._native import builtin_profiles, profile_for_build

    rows = []
    for file_name, text in builtin_profiles():
        p = json.loads(text)
        rows.append(
            {
                "name": p["name"],
                "file": file_name,
                "builds": [p["builds"]["min"], p["builds"]["max"]],
                "description": p.get("description", ""),
            }
        )
    if args.build is not None:
        name, why = profile_for_build(args.build)
        rows = [dict(r, chosen=why) for r in rows if r["name"] == name]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            line = f"{r['name']:<20} builds {r['builds'][0]}..{r['builds'][1]}  {r['description']}"
            print(line + (f"\n  {r['chosen']}" if "chosen" in r else ""))
    return 0


class _Parser(argparse.ArgumentParser):
    """A parser whose help may end with text computed only when help is asked for
    (``late_epilog``), so listing the forge's scenarios costs nothing otherwise."""

    late_epilog: Callable[[], str] | None = None

    def format_help(self) -> str:
        if self.late_epilog is not None:
            self.epilog = self.late_epilog()
        return super().format_help()


def _dump_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("dump", help="kernel dump (.dmp, or zstd-compressed .dmp.zst)")
    p.add_argument("--json", action="store_true", help="print the stable JSON form")
    p.add_argument("--profile", help="layout profile JSON overriding the built-in one")
    p.add_argument(
        "--symbols",
        help="the kernel's PDB (.pdb, checked against the dump's GUID and age) or a Volatility 3 "
        "ISF symbol table (.json or .json.xz)",
    )
    p.add_argument(
        "--symbol-path",
        help="WinDbg symbol path (srv*CACHE*URL;cache*DIR;DIR...) to find the kernel's PDB by "
        f"GUID and age (default: ${_SYMBOL_ENV})",
    )
    p.add_argument(
        "--symbol-timeout",
        type=seconds,
        default=_SYMBOL_TIMEOUT,
        help="seconds a symbol server download may take (default %(default)s)",
    )
    p.add_argument(
        "--max-decompressed",
        type=parse_size,
        default=poolscope.DEFAULT_MAX_DECOMPRESSED,
        metavar="SIZE",
        help="refuse .zst dumps that decompress to more than this (bytes, or K/M/G/T: 100M, "
        "64G; default 64G)",
    )


def _forge_epilog() -> str:
    return "built-in scenarios: " + ", ".join(_builtin_names())


def parser() -> argparse.ArgumentParser:
    ap = _Parser(
        prog="poolscope",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--version", action="version", version=poolscope.__version__)
    ap.add_argument(
        "--width",
        type=positive_int,
        metavar="N",
        help="columns of human output (default: the terminal's; unlimited when the output is "
        "a pipe or a file)",
    )
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("info", help="dump type, OS build, bugcheck, memory, kernel base")
    _dump_args(p)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("modules", help="loaded kernel modules (PsLoadedModuleList)")
    _dump_args(p)
    p.set_defaults(func=cmd_modules)

    p = sub.add_parser("scan", help="every pool analysis and the findings, in one pass")
    _dump_args(p)
    p.add_argument(
        "--pooltag",
        metavar="FILE",
        help="pooltag.txt (from the Windows Debugging Tools' triage folder, or any file of "
        "'Tag - driver.sys - description' lines) for tag descriptions",
    )
    p.add_argument("--top", type=count, help="rows of poolused to print / keep (default: 10 / all)")
    p.add_argument("--owner-tags", type=count, default=5, help="top tags whose owners are searched")
    p.add_argument(
        "--dominant-share",
        type=share,
        default=0.5,
        help="a tag holding this share of a pool's bytes is a finding (default 0.5)",
    )
    p.set_defaults(func=cmd_scan)

    p = sub.add_parser("poolused", help="the pool tagging database, like !poolused")
    _dump_args(p)
    p.add_argument(
        "--sort",
        choices=["nonpaged", "paged", "allocs"],
        default="nonpaged",
        help="order of the rows: nonpaged or paged bytes, or allocations (default nonpaged)",
    )
    p.add_argument(
        "--top",
        type=count,
        metavar="N",
        help="print the first N rows (TOTAL still sums every tag)",
    )
    p.add_argument("--pooltag", metavar="FILE", help="pooltag.txt file for tag descriptions")
    p.add_argument(
        "--session",
        action="store_true",
        help="the session pool's tagging database (like !poolused 8): the session of the "
        "dump's current address space",
    )
    p.set_defaults(func=cmd_poolused)

    p = sub.add_parser("poolfind", help="every block of one tag, like !poolfind")
    _dump_args(p)
    p.add_argument(
        "tag",
        type=parse_tag,
        help="pool tag, e.g. Leak: 1 to 4 characters, with WinDbg's wildcards * and ? (Le*, L?ak)",
    )
    p.set_defaults(func=cmd_poolfind)

    p = sub.add_parser("verifier", help="Driver Verifier data, like !verifier 3 / 80 / 100")
    _dump_args(p)
    p.add_argument(
        "--driver",
        help="only this verified driver, e.g. myfault.sys: its tracked allocations, and the "
        "pool-log and IRP-log entries whose stack passes through it",
    )
    p.add_argument(
        "--address",
        type=parse_address,
        metavar="ADDR",
        help="only log entries whose block contains this address (or this IRP); hexadecimal",
    )
    p.add_argument(
        "--rows",
        type=count,
        metavar="N",
        help="at most N tracked allocations and log entries of each log (default: all)",
    )
    p.set_defaults(func=cmd_verifier)

    p = sub.add_parser(
        "forge",
        help="write a realistic test dump from a scenario (--list: the built-in ones)",
    )
    p.late_epilog = _forge_epilog  # type: ignore[attr-defined]
    src = p.add_mutually_exclusive_group()
    src.add_argument("scenario", nargs="?", help="scenario JSON file")
    src.add_argument(
        "--builtin",
        metavar="NAME",
        type=_builtin_name,
        help="a built-in scenario, e.g. win7sp1-leak (listed below and by --list)",
    )
    src.add_argument("--list", action="store_true", help="list the built-in scenarios")
    p.add_argument("-o", "--output", help="dump file to write (required)")
    p.add_argument("--truth", help="also write the ground truth JSON here")
    p.set_defaults(func=cmd_forge, parser=p)

    # The service's commands (serve, submit, jobs, report, aggregate, batch) live with it.
    from poolscope.service import cli as service_cli

    service_cli.add_commands(sub)

    p = sub.add_parser("profiles", help="list the built-in structure layout profiles")
    p.add_argument("--build", type=count, help="show the profile chosen for this build")
    p.add_argument("--json", action="store_true", help="print the profiles as JSON")
    p.set_defaults(func=cmd_profiles)
    return ap


def _quiet_broken_pipe() -> int:
    """stdout's reader went away (``poolscope ... | head``): point stdout at /dev/null so the
    interpreter's final flush says nothing, and exit as a shell's SIGPIPE would (141)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
    return 141


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.width is not None:
        from poolscope import render

        render.width = args.width
    try:
        code = int(args.func(args))
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except poolscope.LimitExceeded as e:
        hint = ""
        if "max_decompressed" in str(e):
            hint = " (the command's --max-decompressed SIZE, e.g. --max-decompressed 100G)"
        print(f"poolscope: LimitExceeded: {e}{hint}", file=sys.stderr)
        return 2
    except poolscope.PoolscopeError as e:
        print(f"poolscope: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"poolscope: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
