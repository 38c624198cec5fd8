"""poolscope: scan Windows x64 kernel crash dumps for pool usage, leaks and their owners.

The fast path is the Rust core (``poolscope._native``); this package is its surface: ``open()``,
the exception types, the CLI, the report schema and the dump forge.
"""

from __future__ import annotations

import json
import lzma
import os
import stat
from pathlib import Path
from typing import Any

from poolscope._native import (
    Bugcheck,
    DumpFormatError,
    DumpIOError,
    Header,
    Kdbg,
    LimitExceeded,
    MemoryNotPresent,
    Module,
    PoolscopeError,
    SymbolsError,
    Translation,
    UnsupportedDumpError,
)
from poolscope.dump import Dump, PoolBlocks, PoolScanResult

__all__ = [
    "Bugcheck",
    "Dump",
    "DumpFormatError",
    "DumpIOError",
    "Header",
    "Kdbg",
    "LimitExceeded",
    "MemoryNotPresent",
    "Module",
    "PoolBlocks",
    "PoolScanResult",
    "PoolscopeError",
    "Report",
    "SymbolsError",
    "Translation",
    "UnsupportedDumpError",
    "open",
    "scan",
]

__version__ = "0.1.0"

#: Default ceiling on the decompressed size of a ``.zst`` dump (a decompression bomb is refused).
DEFAULT_MAX_DECOMPRESSED = 64 << 30


def _read_regular(path: str | os.PathLike[str], what: str) -> bytes:
    """The bytes of a regular file; anything else (FIFO, device, directory) or an OS error is a
    ``DumpIOError`` naming the path, raised without blocking."""

    def error(reason: str, errno: int | None = None) -> DumpIOError:
        e = DumpIOError(reason) if errno is None else DumpIOError(errno, reason)
        e.reason, e.offset, e.address, e.address_space = reason, None, None, None
        return e

    name = os.fspath(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise error(f"cannot open {what} {name}: {e.strerror}", e.errno) from e
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise error(f"cannot open {what} {name}: not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read()
    finally:
        os.close(fd)


def open(  # noqa: A001 - mirrors builtins.open on purpose: poolscope.open(path)
    path: str | os.PathLike[str],
    *,
    max_decompressed: int = DEFAULT_MAX_DECOMPRESSED,
    spool_dir: str | os.PathLike[str] | None = None,
    profile: str | os.PathLike[str] | dict[str, Any] | None = None,
    symbols: str | os.PathLike[str] | None = None,
    symbol_path: str | None = None,
    symbol_timeout: float | None = None,
) -> Dump:
    """Open a kernel dump (``.dmp`` or zstd-compressed ``.dmp.zst``) for reading.

    ``profile`` overrides the built-in structure layout chosen from the dump's build: a dict or
    the path of a profile JSON file. ``symbols`` is a Volatility 3 ISF symbol table of the
    dump's kernel (``.json`` or ``.json.xz``): its global addresses and structure layouts
    override the profile; it may also be the kernel's PDB (``.pdb``), which is refused
    (``SymbolsError``) unless its GUID and age are those of nt's RSDS record in the dump.
    ``symbol_path`` is a symbol path in WinDbg's syntax (``srv*CACHE*URL;...``, see
    ``poolscope.symstore``; the environment's ``_NT_SYMBOL_PATH`` is the CLI's and service's
    default, not the API's): the kernel's PDB is looked up by its GUID and age, downloaded into
    the cache when needed, and used; when it cannot be had the dump is analysed on its profile
    and ``dump.symbols_lookup`` says why (``symbols`` wins over ``symbol_path``). Use the
    returned ``Dump`` as a context manager.
    """
    symbols_json = None
    pdb = None
    if symbols is not None:
        raw = _read_regular(symbols, "symbol table")
        if raw.startswith(PDB_MAGIC):
            pdb = raw
        else:
            symbols_json = (lzma.decompress(raw) if raw[:6] == b"\xfd7zXZ\x00" else raw).decode()
    profile_json = None
    if isinstance(profile, dict):
        profile_json = json.dumps(profile)
    elif profile is not None:
        profile_json = _read_regular(profile, "profile").decode()
    dump = Dump(
        os.fspath(path),
        max_decompressed=max_decompressed,
        spool_dir=None if spool_dir is None else os.fspath(spool_dir),
        profile_json=profile_json,
        symbols_json=symbols_json,
        symbols_origin=None if symbols is None else Path(symbols).name,
    )
    try:
        if pdb is not None:
            dump.use_pdb(pdb, Path(symbols).name)  # type: ignore[arg-type]
            dump.symbols_lookup = {"file": os.fspath(symbols), "how": "given", "notes": []}  # type: ignore[arg-type]
        elif symbols is None and symbol_path:
            _symbols_from_path(dump, symbol_path, symbol_timeout)
    except BaseException:
        dump.close()
        raise
    return dump


PDB_MAGIC = b"Microsoft C/C++ MSF 7.00\r\n\x1aDS\0\0\0"


def _symbols_from_path(dump: Dump, symbol_path: str, timeout: float | None) -> None:
    """Find, fetch and use the dump's kernel PDB; a failure leaves the profile in use and says
    why in ``dump.symbols_lookup``."""
    from poolscope import symstore

    cv = dump.codeview
    if cv is None:
        dump.symbols_lookup = {
            "file": None,
            "how": None,
            "notes": [],
            "problem": f"the kernel's PDB is not identified ({dump.codeview_problem}); "
            "analysed on the profile",
        }
        return
    name, guid, age, pid, _ = cv
    look = symstore.Lookup(
        symstore.PdbWanted(name, guid, age, pid),
        timeout=symstore.DEFAULT_TIMEOUT if timeout is None else timeout,
    )
    try:
        data, where = look.run(symbol_path)
        dump.use_pdb(data, name)
    except (symstore.SymbolLookupError, SymbolsError) as e:
        dump.symbols_lookup = {
            "file": None,
            "how": None,
            "notes": look.notes,
            "problem": f"{e}; analysed on the profile",
        }
        return
    dump.symbols_lookup = {"file": str(where), "how": look.notes[-1], "notes": look.notes}


def scan(
    path: str | os.PathLike[str],
    *,
    pooltag: str | os.PathLike[str] | None = None,
    top: int | None = None,
    owner_tags: int = 5,
    dominant_share: float = 0.5,
    **open_options: Any,
) -> Report:
    """Open a dump and run every analysis in one pass: the header summary, memory summary,
    tagging database, pool page scan, big pool, tag owners, findings and sources."""
    from poolscope.report import build_report

    with open(path, **open_options) as dump:
        return build_report(
            dump, pooltag=pooltag, top=top, owner_tags=owner_tags, dominant_share=dominant_share
        )


from poolscope.report import Report  # noqa: E402  (report imports this package's types)
