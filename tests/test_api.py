"""The Python API on forge dumps: every figure equals what the forge wrote."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import zstandard

import poolscope
from poolscope import report

TYPES = [
    "full",
    "kernel_bitmap",
    "complete_bitmap",
    "live_kernel_bitmap",
    "kernel_memory",
    "complete_memory",
]
SCENARIOS = ["win7sp1", "win10-19045", "win11-26100"]
"""Every test here runs on Windows 7 SP1, Windows 10 22H2 and Windows 11 24H2 forge dumps."""


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("dump_type", TYPES)
def test_header_kdbg_modules_equal_ground_truth(forged, scenario, dump_type):
    path, truth = forged(scenario, dump_type=dump_type)
    t = truth.to_dict()
    th = t["header"]
    with poolscope.open(path) as dump:
        h = dump.header
        assert dump.dump_type == dump_type
        assert h.build == t["build"] == th["MinorVersion"]
        assert h.major_version == th["MajorVersion"]
        assert h.directory_table_base == th["DirectoryTableBase"]
        assert h.pfn_database == th["PfnDatabase"]
        assert h.ps_loaded_module_list == th["PsLoadedModuleList"]
        assert h.ps_active_process_head == th["PsActiveProcessHead"]
        assert h.number_processors == th["NumberProcessors"]
        assert h.bugcheck.code == th["BugCheckCode"]
        assert h.bugcheck.params == th["BugCheckCodeParameters"]
        assert h.kd_debugger_data_block == th["KdDebuggerDataBlock"]
        assert h.required_dump_space == th["RequiredDumpSpace"] == t["file_size"]
        assert h.system_time == th["SystemTime"]
        assert h.system_up_time == th["SystemUpTime"]
        assert h.comment == th["Comment"]
        assert h.product_type == th["ProductType"]
        assert h.suite_mask == th["SuiteMask"]
        assert h.attributes == th["Attributes"]
        assert dump.file_size == t["file_size"]
        assert dump.physical_page_count == t["physical_pages"]
        assert dump.kernel_base == t["kernel_base"]

        k = dump.kdbg
        assert k is not None
        assert k.va == t["kdbg"]["va"]
        assert k.size == t["kdbg"]["size"]
        assert k.source == "header_pointer" and not k.encoded
        assert dict(k.fields) == t["kdbg"]["fields"]
        numeric = {n: v for n, v in t["kdbg"]["values"].items() if isinstance(v, int)}
        assert dict(k.values) == numeric
        assert k.nt_build_lab == t["kdbg"]["values"]["NtBuildLab"]

        mods = [(m.name, m.path, m.base, m.size) for m in dump.modules()]
        assert mods == [(m["name"], m["path"], m["base"], m["size"]) for m in t["modules"]]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_translations_and_reads_equal_ground_truth(forged, scenario):
    path, truth = forged(scenario)
    t = truth.to_dict()
    sizes = set()
    with poolscope.open(path) as dump:
        for tr in t["translations"]:
            va = tr["va"]
            if "transition_pa" in tr:
                # A transition PTE names a page still in RAM: poolscope reads it (as WinDbg and
                # kdmp-parser-rs do) and says so; hardware would fault.
                got = dump.translate(va)
                assert got.transition and got.pa == tr["transition_pa"]
                continue
            if tr["reason"] == "not_present":
                with pytest.raises(poolscope.MemoryNotPresent) as e:
                    dump.translate(va)
                assert e.value.address == va and e.value.address_space == "virtual"
                continue
            got = dump.translate(va)
            assert got.pa == tr["pa"], hex(va)
            assert got.page_size == tr["page_size"]
            sizes.add(got.page_size)
            if tr["reason"] == "not_in_dump":
                with pytest.raises(poolscope.MemoryNotPresent) as e:
                    dump.read_virtual(va, 8)
                assert "not in the dump" in e.value.reason
            else:
                pfn, off = divmod(tr["pa"], 0x1000)
                page = truth.page_bytes(pfn)
                assert dump.read_virtual(va, 8) == page[off : off + 8]
        assert sizes == {0x1000, 0x200000, 0x40000000}

        # A read spanning pages equals the pages the forge wrote, concatenated.
        nt = dump.kernel_base
        data = dump.read_virtual(nt + 0xFF0, 0x2020)
        pieces = b""
        for va in range(nt, nt + 0x4000, 0x1000):
            pieces += truth.page_bytes(dump.translate(va).pa >> 12)
        assert data == pieces[0xFF0 : 0xFF0 + 0x2020]

        pfns = dump.physical_pages()
        assert list(pfns) == sorted(truth.present_pfns())
        with pytest.raises(poolscope.MemoryNotPresent) as e:
            dump.read_physical(0x0, 16)  # PFN 0 is never stored on a PC-like layout
        assert e.value.address_space == "physical"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_symbolize_names_module_and_offset(forged, scenario):
    path, truth = forged(scenario)
    with poolscope.open(path) as dump:
        by_name = {m.name: m for m in dump.modules()}
        myfault = by_name["myfault.sys"]
        assert dump.symbolize(myfault.base + 0x1634) == "myfault+0x1634"
        assert dump.symbolize(dump.kernel_base + 0x10) == "nt+0x10"
        assert dump.symbolize(myfault.base + myfault.size) != f"myfault+0x{myfault.size:x}"
        assert dump.symbolize(0x1000) is None
        for m in truth.to_dict()["modules"]:
            for s in m["strings"]:
                raw = dump.read_virtual(m["base"] + s["offset"], len(s["text"]))
                assert raw == s["text"].encode()


KDBG_CASES = [
    *[(sc, "encoded", "decoded") for sc in SCENARIOS[1:]],
    *[(sc, "no_pointer", "image_scan") for sc in SCENARIOS],
]
"""Windows 8 and later encode KDBG (Windows 7 does not); any header may lack the pointer."""


@pytest.mark.parametrize("scenario,mode,source", KDBG_CASES)
def test_kdbg_found_when_encoded_or_pointer_missing(forged, scenario, mode, source):
    path, truth = forged(scenario, kdbg=mode)
    t = truth.to_dict()
    with poolscope.open(path) as dump:
        k = dump.kdbg
        assert k is not None, dump.notes
        assert k.source == source
        assert k.va == t["kdbg"]["va"]
        assert dict(k.fields) == t["kdbg"]["fields"]
        if mode == "encoded":
            keys = t["kdbg"]["keys"]
            assert k.encoded
            assert k.keys == (
                keys["KdpDataBlockEncoded"],
                keys["KiWaitNever"],
                keys["KiWaitAlways"],
            )
        assert len(dump.modules()) == len(t["modules"])


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_zstd_dump_opens_transparently_and_bomb_is_refused(forged, tmp_path, scenario):
    path, truth = forged(scenario)
    zpath = tmp_path / "sample.dmp.zst"
    with open(path, "rb") as src, open(zpath, "wb") as dst:
        zstandard.ZstdCompressor(level=3, threads=-1).copy_stream(src, dst)
    with poolscope.open(zpath) as dump:
        assert dump.decompressed
        assert dump.file_size == truth.to_dict()["file_size"]
        assert dump.kdbg is not None and len(dump.modules()) == len(truth.to_dict()["modules"])
    with pytest.raises(poolscope.LimitExceeded) as e:
        poolscope.open(zpath, max_decompressed=1 << 20)
    assert "1048576" in e.value.reason
    broken = tmp_path / "broken.dmp.zst"
    broken.write_bytes(zpath.read_bytes()[: zpath.stat().st_size // 2])
    # a .zst cut short opens as a truncated dump: what decompressed is read, with a note
    with poolscope.open(broken) as dump:
        assert dump.truncated is not None and dump.truncated[3] > 0
        assert any("zstd stream ends early" in n for n in dump.notes), dump.notes
    # cut inside the header: still an error
    stub = tmp_path / "stub.dmp.zst"
    stub.write_bytes(zstandard.ZstdCompressor(level=3).compress(path.read_bytes()[:0x1000]))
    with pytest.raises(poolscope.DumpFormatError, match="DUMP_HEADER64"):
        poolscope.open(stub)


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("dump_type,needle", [("triage", "triage/mini"), ("dump32", "32-bit")])
def test_unscannable_dumps_are_refused_with_reason(forged, dump_type, needle, scenario):
    path, _ = forged(scenario, dump_type=dump_type)
    with pytest.raises(poolscope.UnsupportedDumpError) as e:
        poolscope.open(path)
    assert needle in e.value.reason


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_closed_dump_raises(forged, scenario):
    path, _ = forged(scenario)
    dump = poolscope.open(path)
    with dump:
        assert not dump.closed
    assert dump.closed
    with pytest.raises(ValueError, match="closed"):
        dump.header  # noqa: B018


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_info_json_prints_exactly_what_the_forge_wrote(forged, scenario):
    path, truth = forged(scenario)
    t = truth.to_dict()
    th = t["header"]
    out = subprocess.run(
        [sys.executable, "-m", "poolscope.cli", "info", str(path), "--json"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    info = json.loads(out)
    assert info["path"] == str(path)
    assert info["dump_type"] == t["dump_type"]
    assert info["build"] == t["build"] == th["MinorVersion"]
    assert info["major_version"] == th["MajorVersion"]
    assert info["machine"] == "x64"
    assert info["processors"] == th["NumberProcessors"]
    assert info["bugcheck"] == {
        "code": f"0x{th['BugCheckCode']:x}",
        "name": "DRIVER_IRQL_NOT_LESS_OR_EQUAL",
        "params": [f"0x{p:x}" for p in th["BugCheckCodeParameters"]],
        "meanings": info["bugcheck"]["meanings"],
        "strings": [None, None, None, None],
    }
    assert info["bugcheck"]["meanings"][1] == "IRQL at time of reference"
    assert info["system_time"] == t["system_time_iso"]
    assert info["uptime_s"] == t["uptime_s"]
    assert info["file_size"] == t["file_size"]
    assert info["physical_pages"] == t["physical_pages"]
    assert info["kernel_base"] == f"0x{t['kernel_base']:x}"
    assert info["modules"] == len(t["modules"])
    assert info["nt_build_lab"] == t["kdbg"]["values"]["NtBuildLab"]
    # Human output names the bugcheck too.
    human = subprocess.run(
        [sys.executable, "-m", "poolscope.cli", "info", str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "DRIVER_IRQL_NOT_LESS_OR_EQUAL" in human


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_report_info_keys_are_stable(forged, scenario):
    path, _ = forged(scenario)
    with poolscope.open(path) as dump:
        keys = set(report.info(dump))
    required = {
        "path",
        "dump_type",
        "build",
        "machine",
        "processors",
        "bugcheck",
        "system_time",
        "uptime_s",
        "file_size",
        "physical_pages",
        "kernel_base",
        "modules",
    }
    assert required <= keys


def test_cli_errors_are_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "x.dmp"
    bad.write_bytes(b"PAGEDU64" + b"\0" * 100)
    r = subprocess.run(
        [sys.executable, "-m", "poolscope.cli", "info", str(bad)], capture_output=True, text=True
    )
    assert r.returncode == 2
    assert "DumpFormatError" in r.stderr and "truncated" in r.stderr


@pytest.mark.parametrize(
    "code,name",
    [
        (0x133, "DPC_WATCHDOG_VIOLATION"),
        (0xA, "IRQL_NOT_LESS_OR_EQUAL"),
        (0xD1, "DRIVER_IRQL_NOT_LESS_OR_EQUAL"),
        (0x19, "BAD_POOL_HEADER"),
        (0xC2, "BAD_POOL_CALLER"),
        (0xC4, "DRIVER_VERIFIER_DETECTED_VIOLATION"),
        (0x7E, "SYSTEM_THREAD_EXCEPTION_NOT_HANDLED"),
        (0x1000007E, "SYSTEM_THREAD_EXCEPTION_NOT_HANDLED_M"),
        (0x3B, "SYSTEM_SERVICE_EXCEPTION"),
        (0x50, "PAGE_FAULT_IN_NONPAGED_AREA"),
        (0xEF, "CRITICAL_PROCESS_DIED"),
    ],
)
def test_bugcheck_names(code, name):
    from poolscope._native import bugcheck_name

    assert bugcheck_name(code) == name
