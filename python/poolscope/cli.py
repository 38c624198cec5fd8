"""The ``poolscope`` command: one function per subcommand, no analysis logic."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

import poolscope
from poolscope import render, report, symstore
from poolscope._native import builtin_profiles, profile_for_build


def _symbol_options(args: argparse.Namespace) -> dict[str, Any]:
    """--symbols, --symbol-path (default: the environment's _NT_SYMBOL_PATH), --symbol-timeout."""
    path = args.symbol_path if args.symbol_path is not None else os.environ.get(symstore.ENV)
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
    with _open(args) as dump:
        data = report.info(dump)
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        render.info(data, Console())
    return 0


def cmd_modules(args: argparse.Namespace) -> int:
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
        render.modules(mods, Console())
    return 0


def cmd_scan(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
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
        render.scan(rep, Console(), top=args.top or 10)
    return 0


def cmd_poolused(args: argparse.Namespace) -> int:
    from poolscope.pooltag import TagTable

    tags = TagTable.load(args.pooltag)
    with _open(args) as dump:
        rows = dump.poolused(sort=args.sort, top=args.top, session=args.session)
    for r in rows:
        r["description"] = tags.describe(r["tag"])
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        render.poolused(rows, Console(), sort=args.sort, session=args.session)
    return 0


def cmd_poolfind(args: argparse.Namespace) -> int:
    with _open(args) as dump:
        big = [b for b in dump.big_pool() if b["tag"].rstrip() == args.tag.rstrip()]
        res = dump.scan_pool(tags=[args.tag], blocks=True)
    blocks = res.blocks.rows() if res.blocks is not None else []
    if args.json:
        print(json.dumps({"tag": args.tag, "bigpool": big, "blocks": blocks}, indent=2))
    else:
        render.poolfind(args.tag, big, blocks, Console())
    return 0


def cmd_verifier(args: argparse.Namespace) -> int:
    with _open(args) as dump:
        v = dump.verifier(driver=args.driver, address=args.address, rows=args.rows)
    if args.json:
        print(json.dumps(v.document, indent=2))
    else:
        render.verifier(v.document, Console(), address=args.address)
    return 0


def cmd_forge(args: argparse.Namespace) -> int:
    from poolscope import forge

    scenario: Any = forge.builtin(args.builtin) if args.builtin else Path(args.scenario)
    truth = forge.forge(scenario, args.output)
    if args.truth:
        Path(args.truth).write_text(json.dumps(truth.to_dict(), indent=2))
    print(f"wrote {args.output} ({Path(args.output).stat().st_size:,} bytes)", file=sys.stderr)
    return 0


def cmd_profiles(args: argparse.Namespace) -> int:
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
        f"GUID and age (default: ${symstore.ENV})",
    )
    p.add_argument(
        "--symbol-timeout",
        type=float,
        default=symstore.DEFAULT_TIMEOUT,
        help="seconds a symbol server download may take (default %(default)s)",
    )
    p.add_argument(
        "--max-decompressed",
        type=int,
        default=poolscope.DEFAULT_MAX_DECOMPRESSED,
        help="refuse .zst dumps that decompress to more bytes than this",
    )


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="poolscope", description=__doc__)
    ap.add_argument("--version", action="version", version=poolscope.__version__)
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="dump type, OS build, bugcheck, memory, kernel base")
    _dump_args(p)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("modules", help="loaded kernel modules (PsLoadedModuleList)")
    _dump_args(p)
    p.set_defaults(func=cmd_modules)

    p = sub.add_parser("scan", help="every pool analysis and the findings, in one pass")
    _dump_args(p)
    p.add_argument("--pooltag", help="pooltag.txt file for tag descriptions")
    p.add_argument("--top", type=int, help="rows of poolused to print / keep (default: 10 / all)")
    p.add_argument("--owner-tags", type=int, default=5, help="top tags whose owners are searched")
    p.add_argument(
        "--dominant-share",
        type=float,
        default=0.5,
        help="a tag holding this share of a pool's bytes is a finding (default 0.5)",
    )
    p.set_defaults(func=cmd_scan)

    p = sub.add_parser("poolused", help="the pool tagging database, like !poolused")
    _dump_args(p)
    p.add_argument("--sort", choices=["nonpaged", "paged", "allocs"], default="nonpaged")
    p.add_argument("--top", type=int)
    p.add_argument("--pooltag", help="pooltag.txt file for tag descriptions")
    p.add_argument(
        "--session",
        action="store_true",
        help="the session pool's tagging database (like !poolused 8): the session of the "
        "dump's current address space",
    )
    p.set_defaults(func=cmd_poolused)

    p = sub.add_parser("poolfind", help="every block of one tag, like !poolfind")
    _dump_args(p)
    p.add_argument("tag", help="pool tag, e.g. Leak")
    p.set_defaults(func=cmd_poolfind)

    p = sub.add_parser("verifier", help="Driver Verifier data, like !verifier 3 / 80 / 100")
    _dump_args(p)
    p.add_argument("--driver", help="only this verified driver, e.g. myfault.sys")
    p.add_argument(
        "--address",
        type=lambda s: int(s, 0),
        help="only log entries whose block contains this address (or this IRP)",
    )
    p.add_argument(
        "--rows",
        type=int,
        metavar="N",
        help="at most N tracked allocations and log entries of each log (default: all)",
    )
    p.set_defaults(func=cmd_verifier)

    p = sub.add_parser("forge", help="write a realistic test dump from a scenario")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("scenario", nargs="?", help="scenario JSON file")
    src.add_argument("--builtin", metavar="NAME", help="a built-in scenario, e.g. win7sp1")
    p.add_argument("-o", "--output", required=True, help="dump file to write")
    p.add_argument("--truth", help="also write the ground truth JSON here")
    p.set_defaults(func=cmd_forge)

    # The service's commands (serve, submit, jobs, report, aggregate, batch) live with it.
    from poolscope.service import cli as service_cli

    service_cli.add_commands(sub)

    p = sub.add_parser("profiles", help="list the built-in structure layout profiles")
    p.add_argument("--build", type=int, help="show the profile chosen for this build")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_profiles)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except poolscope.PoolscopeError as e:
        print(f"poolscope: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"poolscope: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
