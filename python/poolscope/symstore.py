"""Symbol paths in WinDbg's syntax (``--symbol-path``, ``_NT_SYMBOL_PATH``): find the kernel's
PDB by the name, GUID and age of nt's RSDS record in symbol stores, caches and directories, and
download it into a cache.

Elements are separated by ``;``:

* ``srv*CACHE*URL`` (or ``symsrv*symsrv.dll*CACHE*URL``): look in CACHE, then on the server;
  a download lands in CACHE. More stores may be chained (``srv*A*B*URL``): each is tried in
  order, and a file found further along is copied into the stores before it, as symsrv does.
* ``srv*URL``: the same with the default cache (``cache*DIR`` given earlier, else
  ``$XDG_CACHE_HOME/poolscope/symbols`` or ``~/.cache/poolscope/symbols``).
* ``cache*DIR`` (``cache*`` = the default): the cache for the elements after it.
* a plain directory: a symbol store layout ``DIR/name.pdb/GUIDAGE/name.pdb``, then the flat
  ``DIR/name.pdb``.

Every file is checked against the dump's GUID and age before it is used (and before a
download is moved into a cache): a PDB of another build is refused with both identities, never
used. Downloads have a timeout (per read and overall), are written to a temporary file in the
cache directory and renamed into place only once complete and checked, so no half-written
file is ever seen; one download per GUID at a time (an exclusive lock file per
``name.pdb/GUIDAGE`` directory, across threads and processes), and whoever waited finds the
file in the cache.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from poolscope import _native

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: in-process locks only
    fcntl = None  # type: ignore[assignment]

ENV = "_NT_SYMBOL_PATH"
DEFAULT_TIMEOUT = 30.0
MAX_PDB_BYTES = 2 << 30
USER_AGENT = "Microsoft-Symbol-Server/10.0.0.0 (poolscope)"
"""Microsoft's symbol server answers clients that say they are symsrv."""


class SymbolLookupError(Exception):
    """No usable PDB on the symbol path; ``.notes`` says what each element answered."""

    def __init__(self, message: str, notes: list[str]) -> None:
        super().__init__(message)
        self.notes = notes


@dataclass(frozen=True)
class PdbWanted:
    """What nt's RSDS record names: the PDB's file name, GUID, age and store id."""

    name: str
    guid: str
    age: int
    id: str


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "poolscope" / "symbols"


@dataclass
class Element:
    kind: str  # "srv", "cache", "dir"
    stores: list[str] = field(default_factory=list)


def is_remote(store: str) -> bool:
    return store.lower().startswith(("http://", "https://"))


def parse(text: str) -> list[Element]:
    """The elements of a WinDbg symbol path."""
    out: list[Element] = []
    for raw in text.split(";"):
        item = raw.strip()
        if not item:
            continue
        parts = item.split("*")
        head = parts[0].lower()
        if head == "symsrv" and len(parts) >= 2:  # symsrv*symsrv.dll*...
            out.append(Element("srv", [p for p in parts[2:]]))
        elif head == "srv":
            out.append(Element("srv", parts[1:]))
        elif head == "cache":
            out.append(Element("cache", ["*".join(parts[1:])]))
        else:
            out.append(Element("dir", [item]))
    return out


_thread_locks: dict[str, threading.Lock] = {}
_thread_locks_guard = threading.Lock()


@contextlib.contextmanager
def guid_lock(directory: Path) -> Iterator[None]:
    """Exclusive per ``name.pdb/GUIDAGE`` directory: a thread lock (this process) and an
    ``flock`` on ``.lock`` in it (other processes, e.g. the service's scan processes)."""
    directory.mkdir(parents=True, exist_ok=True)
    key = str(directory.resolve())
    with _thread_locks_guard:
        lock = _thread_locks.setdefault(key, threading.Lock())
    with lock:
        if fcntl is None:
            yield
            return
        with open(directory / ".lock", "a+b") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def identity_of(data: bytes, where: str) -> tuple[str, str, int, str]:
    """(name, guid, age, id) of a PDB's bytes; SymbolsError when it is not a readable PDB."""
    return _native.pdb_identity(data, where)


@dataclass
class Lookup:
    """One search of a symbol path for one PDB: what it found and what each place said."""

    wanted: PdbWanted
    timeout: float = DEFAULT_TIMEOUT
    notes: list[str] = field(default_factory=list)
    requests: int = 0

    def check(self, data: bytes, where: str) -> bool:
        try:
            _, guid, age, pid = identity_of(data, where)
        except _native.SymbolsError as e:
            self.notes.append(f"{where}: not a readable PDB ({e}): refused")
            return False
        if pid != self.wanted.id:
            self.notes.append(
                f"{where}: PDB {pid} (GUID {guid}, age {age}) is not the dump's kernel's "
                f"{self.wanted.id} (GUID {self.wanted.guid}, age {self.wanted.age}): refused"
            )
            return False
        return True

    def local(self, path: Path) -> bytes | None:
        if not path.is_file():
            return None
        data = path.read_bytes()
        return data if self.check(data, str(path)) else None

    def store_path(self, store: str) -> Path:
        w = self.wanted
        return Path(store).expanduser() / w.name / w.id / w.name

    def install(self, data: bytes, target: Path) -> None:
        """Write ``data`` to ``target`` atomically (temporary file in its directory, rename)."""
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def download(self, url: str, target: Path) -> bytes | None:
        """GET ``url`` into ``target`` (through a temporary file, checked before the rename)."""
        w = self.wanted
        full = f"{url.rstrip('/')}/{w.name}/{w.id}/{w.name}"
        with guid_lock(target.parent):
            if target.is_file():  # another job fetched it while this one waited
                data = self.local(target)
                if data is not None:
                    self.notes.append(f"{target}: in the cache (fetched by a concurrent job)")
                    return data
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
            try:
                deadline = time.monotonic() + self.timeout
                req = urllib.request.Request(full, headers={"User-Agent": USER_AGENT})
                self.requests += 1
                with (
                    os.fdopen(fd, "wb") as f,
                    urllib.request.urlopen(  # noqa: S310 - http(s) only
                        req, timeout=self.timeout
                    ) as resp,
                ):
                    total = 0
                    while True:
                        if time.monotonic() > deadline:
                            raise TimeoutError(f"no complete answer within {self.timeout:g} s")
                        chunk = resp.read(1 << 20)
                        if not chunk:
                            break
                        total += len(chunk)
                        if total > MAX_PDB_BYTES:
                            raise ValueError(f"larger than {MAX_PDB_BYTES} bytes")
                        f.write(chunk)
                    length = resp.headers.get("Content-Length")
                    if length is not None and int(length) != total:
                        raise ValueError(f"connection closed after {total} of {length} bytes")
                    f.flush()
                    os.fsync(f.fileno())
                data = Path(tmp).read_bytes()
                if not self.check(data, full):
                    os.unlink(tmp)
                    return None
                os.replace(tmp, target)
                self.notes.append(f"{full}: downloaded into {target}")
                return data
            except urllib.error.HTTPError as e:
                self.notes.append(f"{full}: HTTP {e.code} {e.reason}")
            except (OSError, ValueError) as e:  # URLError, timeouts, resets, short reads
                reason = getattr(e, "reason", None) or e
                self.notes.append(f"{full}: download failed ({reason}); nothing cached")
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            return None

    def srv(self, stores: list[str], cache: Path | None) -> tuple[bytes, Path] | None:
        chain = [s for s in stores]
        if not chain or is_remote(chain[0]) or not chain[0]:
            # srv*URL / srv**URL: the downstream store is the cache
            chain = [str(cache or default_cache())] + [s for s in chain if s]
        for i, store in enumerate(chain):
            if is_remote(store):
                local = next((s for s in chain[:i] if not is_remote(s)), None)
                if local is None:
                    self.notes.append(f"{store}: no local store before it to download into")
                    continue
                target = self.store_path(local)
                data = self.download(store, target)
                if data is None:
                    continue
                self.copy_back(data, [s for s in chain[:i] if not is_remote(s)][1:])
                return data, target
            path = self.store_path(store)
            data = self.local(path)
            if data is not None:
                self.notes.append(f"{path}: in the store")
                self.copy_back(data, [s for s in chain[:i] if not is_remote(s)])
                return data, path
        return None

    def copy_back(self, data: bytes, stores: list[str]) -> None:
        for s in stores:
            target = self.store_path(s)
            if not target.is_file():
                self.install(data, target)
                self.notes.append(f"{target}: copied into the downstream store")

    def directory(self, d: str) -> tuple[bytes, Path] | None:
        for path in (self.store_path(d), Path(d).expanduser() / self.wanted.name):
            data = self.local(path)
            if data is not None:
                self.notes.append(f"{path}: found")
                return data, path
        return None

    def run(self, symbol_path: str) -> tuple[bytes, Path]:
        cache: Path | None = None
        elements = parse(symbol_path)
        for e in elements:
            if e.kind == "cache":
                cache = Path(e.stores[0]).expanduser() if e.stores[0] else default_cache()
                continue
            found = self.srv(e.stores, cache) if e.kind == "srv" else self.directory(e.stores[0])
            if found is not None:
                data, path = found
                if cache is not None and e.kind == "dir":
                    self.copy_back(data, [str(cache)])
                return found
        w = self.wanted
        if not elements:
            self.notes.append("the symbol path is empty")
        raise SymbolLookupError(
            f"{w.name} {w.id} (GUID {w.guid}, age {w.age}) not found on the symbol path "
            f"{symbol_path!r}: " + "; ".join(self.notes),
            self.notes,
        )
