"""The kernel's PDB (issue 14): the forge writes nt's RSDS record and the matching PDB (MSF 7.0)
from the same types and globals as the test ISF; ``llvm-pdbutil`` (an independent reader) must
accept the PDB and show the same identity, types and symbols; poolscope must read it to the same
analysis as the ISF (through ``--symbols x.pdb``, a symbol store on loopback, and
``_NT_SYMBOL_PATH``), refuse another build's PDB naming both ids, never cache a broken or
interrupted download, and download once for concurrent jobs."""

from __future__ import annotations

import http.server
import json
import os
import random
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import poolscope
from poolscope import _native
from poolscope.forge import load_profile
from poolscope.forge.pdb import PdbSection, kernel_pdb, pdb_bytes
from test_symbols import (
    VERIFIER_TYPES,
    got_pool,
    got_verifier,
    kernel_isf,
    shifted,
    symbol_types,
    want_pool,
    want_verifier,
    write_isf,
)

LLVM_PDBUTIL = shutil.which("llvm-pdbutil") or shutil.which("llvm-pdbutil-14")


def store_id(t: dict[str, Any]) -> str:
    g = bytes.fromhex(t["pdb"]["guid"])
    d1, d2, d3 = int.from_bytes(g[:4], "little"), int.from_bytes(g[4:6], "little"), int.from_bytes(
        g[6:8], "little")  # fmt: skip
    return f"{d1:08X}{d2:04X}{d3:04X}{g[8:].hex().upper()}{t['pdb']['age']:X}"


@pytest.fixture(scope="module", params=["win7sp1", "win10-19045", "win11-26100"])
def build(request, forged, tmp_path_factory):
    """(dump, truth, ISF, PDB) for the pool scenario and its verifier twin of one build."""
    d = tmp_path_factory.mktemp(f"pdb-{request.param}")
    out = []
    for scenario in (request.param, f"{request.param}-verifier"):
        path, truth = forged(scenario)
        t = truth.to_dict()
        isf, pdb = d / f"{scenario}.json", d / f"{scenario}.pdb"
        write_isf(isf, t)
        kernel_pdb(pdb, kernel_isf(t), t)
        out.append((path, t, isf, pdb))
    return out


@pytest.mark.skipif(LLVM_PDBUTIL is None, reason="llvm-pdbutil (Debian package llvm) not installed")
def test_llvm_pdbutil_reads_the_forged_pdb(build):
    """The independent reader accepts every stream and shows the RSDS identity, every
    structure (forward reference and definition, with its size), every public and global and
    nt's sections."""
    _, t, _, pdb = build[1]
    out = subprocess.run(
        [LLVM_PDBUTIL, "dump", "-summary", "-types", "-publics", "-globals", "-section-headers",
         str(pdb)], capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "error" not in out.lower(), out[:2000]
    guid = re.search(r"GUID: \{([0-9A-F-]+)\}", out).group(1)
    sid = store_id(t)
    assert guid.replace("-", "") + f"{t['pdb']['age']:X}" == sid
    assert re.search(rf"\n\s+Age: {t['pdb']['age']}\n", out)
    isf = kernel_isf(t)
    for name, u in isf["user_types"].items():
        shown = "<unnamed-tag>" if name.startswith("__unnamed") else name
        kind = "LF_UNION" if u["kind"] == "union" else "LF_STRUCTURE"
        assert re.search(rf"{kind} \[size = \d+\] `{re.escape(shown)}`\n(.*\n){{1,3}}\s+options: "
                         rf"(forward ref|has unique name).*sizeof 0", out), name  # fmt: skip
        assert re.search(rf"{kind} \[size = \d+\] `{re.escape(shown)}`\n(.*\n){{0,3}}.*sizeof "
                         rf"{u['size']}\n", out), name  # fmt: skip
    publics = re.findall(r"S_PUB32 \[size = \d+\] `(\w+)`", out)
    assert sorted(publics) == sorted(t["symbols"])
    gdata = re.findall(r"S_GDATA32 \[size = \d+\] `(\w+)`", out)
    assert set(gdata) < set(t["symbols"]) and "PoolTrackTable" in gdata
    assert out.count("SECTION HEADER #") == len(t["pdb"]["sections"])
    for f in ("LF_BITFIELD", "LF_ARRAY", "LF_FIELDLIST", "LF_MEMBER"):
        assert f in out, f


def test_the_reader_gives_the_isfs_globals_and_layouts(build):
    """poolscope's PDB reader: identity as the RSDS record, every global at the ISF's RVA,
    every ISF type with its size and each scalar field's offset, width and bits."""
    _, t, _, pdb = build[1]
    d = _native.read_pdb(pdb.read_bytes(), "ntkrnlmp.pdb")
    assert (d["name"], d["age"], d["id"]) == ("ntkrnlmp.pdb", t["pdb"]["age"], store_id(t))
    assert d["source"] == f"pdb ntkrnlmp.pdb {store_id(t)}"
    base = t["kernel_base"]
    assert d["globals"] == {n: va - base for n, va in t["symbols"].items()}
    isf = kernel_isf(t)
    widths = {n: b["size"] for n, b in isf["base_types"].items()}
    for name, u in isf["user_types"].items():
        if name.startswith("__unnamed"):
            continue
        got = d["types"][name]
        assert got["size"] == u["size"], name
        for fname, f in u["fields"].items():
            ty, off = f["type"], f["offset"]
            if ty["kind"] == "base":
                w = widths[ty["name"]]
                assert got["fields"][fname] == (off, w, 0, 8 * w), (name, fname)
            elif ty["kind"] == "pointer":
                assert got["fields"][fname] == (off, 8, 0, 64), (name, fname)
            elif ty["kind"] == "bitfield":
                w = widths[ty["type"]["name"]]
                want = (off, w, ty["bit_position"], ty["bit_length"])
                assert got["fields"][fname] == want, (name, fname)
            elif ty["kind"] == "array":
                assert got["members"][fname][0::2] == (off, ty["count"]), (name, fname)
            else:  # embedded structure: the forward reference resolved to the definition
                inner = got["members"][fname][1]
                assert inner in d["types"], (name, fname)
                if not ty["name"].startswith("__unnamed"):
                    assert inner == ty["name"]


def test_enums_modifiers_and_struct_arrays(tmp_path):
    """LF_ENUM (its underlying type's width), LF_MODIFIER (volatile), an array of structures
    and a PDB with only S_GDATA32 (no publics)."""
    isf = {
        "base_types": {"unsigned long": {"size": 4}, "unsigned short": {"size": 2}},
        "enums": {"_POOL_TYPE": {"size": 4, "base": "unsigned long",
                                 "constants": {"NonPagedPool": 0, "PagedPool": 1}}},
        "user_types": {
            "_PAIR": {"kind": "struct", "size": 8, "fields": {
                "A": {"offset": 0, "type": {"kind": "base", "name": "unsigned long"}},
                "B": {"offset": 4, "type": {"kind": "base", "name": "unsigned long"}}}},
            "_T": {"kind": "struct", "size": 0x38, "fields": {
                "Next": {"offset": 0x30, "type": {"kind": "pointer", "subtype": {
                    "kind": "struct", "name": "_PAIR"}}},
                "Kind": {"offset": 0, "type": {"kind": "enum", "name": "_POOL_TYPE"}},
                "Count": {"offset": 4, "type": {"kind": "volatile", "subtype": {
                    "kind": "base", "name": "unsigned short"}}},
                "Pairs": {"offset": 8, "type": {"kind": "array", "count": 5, "subtype": {
                    "kind": "struct", "name": "_PAIR"}}}}},
        },
        "symbols": {"Var": {"address": 0x2010}},
    }  # fmt: skip
    sections = [PdbSection(".text", 0x1000, 0x1000, 0x60000020),
                PdbSection(".data", 0x2000, 0x1000, 0xC8000040)]  # fmt: skip
    data = pdb_bytes(isf, guid=bytes(range(16)), age=7, sections=sections, publics=False)
    d = _native.read_pdb(data, "t.pdb")
    assert (d["publics"], d["data_symbols"], d["globals"]) == (0, 1, {"Var": 0x2010})
    assert d["id"] == "03020100050407060809" + "0A0B0C0D0E0F" + "7"
    t = d["types"]["_T"]
    assert t["fields"]["Kind"] == (0, 4, 0, 32)
    assert t["fields"]["Count"] == (4, 2, 0, 16)
    assert t["members"]["Pairs"] == (8, None, 5)
    assert t["fields"]["Next"] == (0x30, 8, 0, 64)


def test_hostile_pdbs_are_typed_errors(build):
    """Truncated and bit-flipped PDBs: SymbolsError or a (partial) result, never a crash or
    another exception."""
    _, _, _, pdb = build[0]
    good = pdb.read_bytes()
    rng = random.Random(14)
    for i in range(150):
        data = bytearray(good)
        if i % 3 == 0:
            data = data[: rng.randrange(len(data))]
        else:
            for _ in range(rng.randrange(1, 64)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        try:
            _native.read_pdb(bytes(data), "bad.pdb")
        except poolscope.SymbolsError as e:
            assert "bad.pdb" in str(e)


def test_info_names_the_kernels_pdb(build, tmp_path):
    """``info --json`` ``symbols``: the RSDS record's name, GUID, age and store id."""
    path, t, _, pdb = build[0]
    out = subprocess.run([sys.executable, "-m", "poolscope.cli", "info", str(path), "--json"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    s = json.loads(out)["symbols"]
    assert (s["pdb"], s["id"], s["age"], s["problem"], s["used"]) == (
        "ntkrnlmp.pdb", store_id(t), t["pdb"]["age"], None, None)  # fmt: skip
    assert s["guid"].replace("-", "") + f"{t['pdb']['age']:X}" == store_id(t)
    assert f"RSDS record at 0x{t['pdb']['rsds_va']:x}" in s["found_by"]
    out = subprocess.run([sys.executable, "-m", "poolscope.cli", "info", str(path), "--json",
                          "--symbols", str(pdb)], capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    assert json.loads(out)["symbols"]["used"] == f"pdb {pdb.name} {store_id(t)}"


def test_an_unreadable_rsds_record_is_explained(forged, tmp_path):
    """nt's CodeView record overwritten with an old NB10 signature: no id, and ``info`` says
    why (which record, where); ``--symbol-path`` then runs on the profile and says so."""
    path, truth = forged("win10-19045")
    t = truth.to_dict()
    va = t["pdb"]["rsds_va"]
    with poolscope.open(path) as dump:
        pfn = dump.translate(va).pa >> 12
    copy = tmp_path / "nb10.dmp"
    shutil.copy(path, copy)
    with open(copy, "r+b") as f:
        f.seek(truth.file_offset(pfn) + (va & 0xFFF))
        f.write(b"NB10")
    with poolscope.open(copy, symbol_path=str(tmp_path)) as dump:
        assert dump.codeview is None
        info = poolscope.report.info(dump)["symbols"]
    assert info["problem"] == f'nt\'s CodeView record at 0x{va:x} is "NB10", not RSDS'
    assert info["id"] is None and info["used"] is None
    assert info["lookup_problem"].endswith("analysed on the profile")


def test_pdb_equals_the_isf(build, tmp_path):
    """With a deliberately wrong profile, ``--symbols x.pdb`` gives exactly the truth (every
    layout and global from the PDB, sources say ``pdb NAME GUIDAGE``) — the ISF's figures."""
    (path, t, isf, pdb), (vpath, vt, visf, vpdb) = build
    user = tmp_path / "wrong.json"
    user.write_text(json.dumps(shifted(load_profile(t["build"]))))
    with poolscope.open(path, profile=user, symbols=isf) as dump:
        via_isf = got_pool(dump)
    with poolscope.open(path, profile=user, symbols=pdb) as dump:
        via_pdb = got_pool(dump)
    assert via_pdb == via_isf == want_pool(t)
    sources = poolscope.scan(path, profile=user, symbols=pdb).to_dict()["sources"]
    for ty in symbol_types(t["build"]):
        assert sources[ty] == f"pdb {pdb.name} {store_id(t)}", ty
    with poolscope.open(vpath, profile=user, symbols=vpdb) as dump:
        assert got_verifier(dump, vt["verifier"]) == want_verifier(vt["verifier"])
        v_sources = dump.verifier().sources
    for ty in VERIFIER_TYPES.values():
        assert v_sources[ty] == f"pdb {vpdb.name} {store_id(vt)}", ty


def test_another_builds_pdb_is_refused(build):
    """The verifier twin's PDB (another GUID) for the pool dump: SymbolsError naming both."""
    (path, t, _, _), (_, vt, _, vpdb) = build
    with pytest.raises(poolscope.SymbolsError) as e:
        poolscope.open(path, symbols=vpdb)
    assert store_id(t) in str(e.value) and store_id(vt) in str(e.value)


# ------------------------------------------------------------------ a symbol server on loopback
class Server:
    """``http.server`` serving a symbol store directory; counts requests per path; ``mode``
    makes it misbehave: ``slow`` (sleeps before answering), ``cut`` (sends half the file and
    closes), ``delay`` (answers after a short pause, for concurrency)."""

    def __init__(self, root: Path) -> None:
        self.root, self.mode, self.hits = root, "ok", {}
        self.lock = threading.Lock()
        srv = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def do_GET(self):
                with srv.lock:
                    srv.hits[self.path] = srv.hits.get(self.path, 0) + 1
                f = srv.root / self.path.lstrip("/")
                if srv.mode == "slow":
                    time.sleep(2)
                if srv.mode == "delay":
                    time.sleep(0.3)
                if not f.is_file():
                    self.send_error(404)
                    return
                data = f.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if srv.mode == "cut":
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(data)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def total(self) -> int:
        return sum(self.hits.values())


@pytest.fixture()
def store(build, tmp_path):
    """A served store holding the pool dump's PDB as name.pdb/GUIDAGE/name.pdb."""
    (_, t, _, pdb), _ = build
    root = tmp_path / "served"
    (root / "ntkrnlmp.pdb" / store_id(t)).mkdir(parents=True)
    shutil.copy(pdb, root / "ntkrnlmp.pdb" / store_id(t) / "ntkrnlmp.pdb")
    s = Server(root)
    yield s, root
    s.httpd.shutdown()


def cache_files(cache: Path) -> list[str]:
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file()
                  and p.name != ".lock")  # fmt: skip


def test_symbol_server_download_once_then_cache(build, store, tmp_path):
    """srv*CACHE*URL: the first open downloads the PDB into CACHE (one request), the analysis
    equals the ISF's; the second open makes no request."""
    (path, t, isf, _), _ = build
    server, _ = store
    cache = tmp_path / "cache"
    sp = f"srv*{cache}*{server.url}"
    with poolscope.open(path, symbols=isf) as dump:
        want = got_pool(dump)
    with poolscope.open(path, symbol_path=sp) as dump:
        assert dump.symbols_source == f"pdb ntkrnlmp.pdb {store_id(t)}"
        assert got_pool(dump) == want
    assert server.total() == 1
    assert cache_files(cache) == [f"ntkrnlmp.pdb/{store_id(t)}/ntkrnlmp.pdb"]
    with poolscope.open(path, symbol_path=sp) as dump:
        assert "in the store" in dump.symbols_lookup["how"]
    assert server.total() == 1


def test_nt_symbol_path_through_the_cli(build, store, tmp_path):
    """``poolscope scan --json`` with _NT_SYMBOL_PATH (srv*URL with a cache* element) equals
    the scan with the ISF in every analysis; sources name the PDB."""
    (path, t, isf, _), _ = build
    server, _ = store
    env = dict(os.environ, _NT_SYMBOL_PATH=f"cache*{tmp_path / 'c'};srv*{server.url}")

    def scan(*extra, env=None):
        out = subprocess.run(
            [sys.executable, "-m", "poolscope.cli", "scan", str(path), "--json", *extra],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        )
        return json.loads(out.stdout)  # fmt: skip

    a, b = scan("--symbols", str(isf)), scan(env=env)
    for key in ("poolused", "poolused_session", "bigpool", "pool_scan", "verifier", "findings"):
        assert a[key] == b[key], key
    assert b["dump"]["symbols"]["used"] == f"pdb ntkrnlmp.pdb {store_id(t)}"
    assert f"pdb ntkrnlmp.pdb {store_id(t)}" in b["sources"].values()
    assert server.total() == 1 and (tmp_path / "c" / "ntkrnlmp.pdb" / store_id(t)).is_dir()


def test_concurrent_jobs_download_once(build, store, tmp_path):
    (path, t, _, _), _ = build
    server, _ = store
    server.mode = "delay"
    sp = f"srv*{tmp_path / 'cache'}*{server.url}"
    used = []

    def job():
        with poolscope.open(path, symbol_path=sp) as dump:
            used.append(dump.symbols_source)

    threads = [threading.Thread(target=job) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert used == [f"pdb ntkrnlmp.pdb {store_id(t)}"] * 4
    assert server.total() == 1


@pytest.mark.parametrize("mode", ["cut", "slow", "missing", "corrupt", "mismatch"])
def test_failed_downloads_leave_nothing_and_run_on_the_profile(build, store, tmp_path, mode):
    """An interrupted transfer, a server slower than the timeout, a 404, a corrupt file and
    another build's PDB: nothing enters the cache, the dump is analysed on its profile and
    ``symbols.lookup_problem`` says why (both ids for the mismatch)."""
    (path, t, _, _), (_, vt, _, vpdb) = build
    server, root = store
    served = root / "ntkrnlmp.pdb" / store_id(t) / "ntkrnlmp.pdb"
    if mode in ("cut", "slow"):
        server.mode = mode
    elif mode == "missing":
        served.unlink()
    elif mode == "corrupt":
        served.write_bytes(b"Microsoft C/C++ MSF 7.00\r\n\x1aDS\0\0\0" + bytes(5000))
    else:
        shutil.copy(vpdb, served)
    cache = tmp_path / "cache"
    with poolscope.open(path, symbol_path=f"srv*{cache}*{server.url}", symbol_timeout=0.5) as d:
        assert d.symbols_source is None
        problem = poolscope.report.info(d)["symbols"]["lookup_problem"]
        assert d.big_pool() is not None  # the profile still serves
    assert problem.endswith("analysed on the profile")
    want = {"cut": "nothing cached", "slow": "timed out", "missing": "HTTP 404",
            "corrupt": "not a readable PDB", "mismatch": store_id(vt)}[mode]  # fmt: skip
    assert want in problem and store_id(t) in problem, problem
    assert cache_files(cache) == []


def test_plain_directory_flat_pdb_is_checked(build, tmp_path):
    """A plain directory's flat name.pdb is used when its GUID and age match and refused (with
    both ids) when they do not."""
    (path, t, _, pdb), (_, vt, _, vpdb) = build
    d = tmp_path / "flat"
    d.mkdir()
    shutil.copy(vpdb, d / "ntkrnlmp.pdb")
    with poolscope.open(path, symbol_path=str(d)) as dump:
        assert dump.symbols_source is None
        assert store_id(vt) in dump.symbols_lookup["problem"]
    shutil.copy(pdb, d / "ntkrnlmp.pdb")
    with poolscope.open(path, symbol_path=f"{tmp_path / 'nothing'};{d}") as dump:
        assert dump.symbols_source == f"pdb ntkrnlmp.pdb {store_id(t)}"


# ------------------------------------------------------------------ service and batch
def test_service_uses_the_symbol_path(build, store, tmp_path):
    """``serve --symbol-path srv*URL``: the PDB lands in DATA_DIR/symbols (shared), the pool
    dump's report names it and equals the ISF scan; the verifier dump, whose PDB the server
    does not have, is scanned on its profile and its report says so."""
    from service_util import running_server

    (path, t, isf, _), (vpath, vt, _, _) = build
    server, _ = store
    want = poolscope.scan(path, symbols=isf).to_dict()
    with running_server(tmp_path / "data", symbol_path=f"srv*{server.url}") as srv:
        job = srv.client.wait(srv.client.upload(path).job.id, timeout=120)
        _, report = srv.client.report(job.id)
        vjob = srv.client.wait(srv.client.upload(vpath).job.id, timeout=120)
        _, vreport = srv.client.report(vjob.id)
    s = report["dump"]["symbols"]
    assert s["used"] == f"pdb ntkrnlmp.pdb {store_id(t)}" and s["lookup_problem"] is None
    assert s["file"] == str(
        (tmp_path / "data").resolve() / "symbols" / "ntkrnlmp.pdb" / store_id(t) / "ntkrnlmp.pdb"
    )
    for key in ("poolused", "bigpool", "pool_scan"):
        assert report[key] == want[key], key
    vs = vreport["dump"]["symbols"]
    assert vs["used"] is None and "HTTP 404" in vs["lookup_problem"]
    assert store_id(vt) in vs["lookup_problem"]
    assert vreport["bigpool"]  # scanned on the profile
    assert server.hits == {
        f"/ntkrnlmp.pdb/{store_id(t)}/ntkrnlmp.pdb": 1,
        f"/ntkrnlmp.pdb/{store_id(vt)}/ntkrnlmp.pdb": 1,
    }


def test_batch_scan_processes_download_once(build, store, tmp_path):
    """``batch --symbol-path`` over three copies of one dump, two scan processes at once: one
    download (the per-GUID lock holds across processes), every line names the PDB."""
    (path, t, _, _), _ = build
    server, _ = store
    server.mode = "delay"
    root = tmp_path / "dumps"
    root.mkdir()
    for i in range(3):
        shutil.copy(path, root / f"copy{i}.dmp")
    sp = f"srv*{tmp_path / 'cache'}*{server.url}"
    r = subprocess.run([sys.executable, "-m", "poolscope.cli", "batch", str(root), "--workers",
                        "2", "--symbol-path", sp], capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(lines) == 3
    for line in lines:
        assert line["report"]["dump"]["symbols"]["used"] == f"pdb ntkrnlmp.pdb {store_id(t)}"
    assert server.total() == 1
