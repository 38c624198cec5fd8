"""KDBG on Windows 8+: plain and encoded blocks, with and without the header's pointer, found
as dump-format.md sections 3-4 describe (nt from PsLoadedModuleList, KdCopyDataBlock's code,
KdpDataBlockEncoded / KiWaitNever / KiWaitAlways); broken code or keys end in a reason."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys

import pytest

import poolscope
from poolscope import forge, report

WIN8_PLUS = ["win10-19045", "win11-26100"]
NAMED_FIELDS = ["KernBase", "PsLoadedModuleList", "PoolTrackTable", "MmVerifierData"]


def _source(mode: str, pointer: bool) -> str:
    if mode == "encoded":
        return "decoded"
    return "header_pointer" if pointer else "image_scan"


@pytest.mark.parametrize("pointer", [True, False], ids=["pointer", "no_pointer"])
@pytest.mark.parametrize("mode", ["plain", "encoded"])
@pytest.mark.parametrize("scenario", WIN8_PLUS)
def test_kdbg_equals_truth(forged, scenario, mode, pointer):
    path, truth = forged(scenario, kdbg=mode, kdbg_pointer=pointer)
    t = truth.to_dict()
    th, tk = t["header"], t["kdbg"]
    # the ground truth says what was written
    assert tk["pointer"] is pointer and tk["encoded"] is (mode == "encoded")
    assert th["KdDebuggerDataBlock"] == tk["header_pointer"] == (tk["va"] if pointer else 0)
    assert tk["flag_value"] == (1 if mode == "encoded" else 0)
    syms = tk["key_symbols"]
    with poolscope.open(path) as dump:
        h = dump.header
        assert h.build == t["build"] == th["MinorVersion"]
        assert h.kd_debugger_data_block == th["KdDebuggerDataBlock"]
        assert h.ps_loaded_module_list == th["PsLoadedModuleList"]
        assert h.directory_table_base == th["DirectoryTableBase"]
        assert h.bugcheck.code == th["BugCheckCode"]
        assert h.bugcheck.params == th["BugCheckCodeParameters"]
        assert dump.kernel_base == t["kernel_base"]

        stored = dump.read_virtual(tk["va"], tk["size"])
        if mode == "encoded":
            assert stored[0x10:0x14] != b"KDBG"
            keys = tk["keys"]
            plain = forge.decode_block(
                stored, keys["KiWaitNever"], keys["KiWaitAlways"], keys["KdpDataBlockEncoded"]
            )
            assert plain.hex() == tk["plain_hex"]
        else:
            assert stored.hex() == tk["plain_hex"]

        k = dump.kdbg
        assert k is not None, dump.notes
        assert k.source == _source(mode, pointer)
        assert k.va == tk["va"] and k.size == tk["size"]
        assert dict(k.fields) == tk["fields"]
        for name in NAMED_FIELDS:
            assert k.fields[name] == tk["fields"][name], name
        assert k.kern_base == t["kernel_base"]
        assert k.fields["PsLoadedModuleList"] == th["PsLoadedModuleList"]
        numeric = {n: v for n, v in tk["values"].items() if isinstance(v, int)}
        assert dict(k.values) == numeric
        assert k.nt_build_lab == tk["values"]["NtBuildLab"]
        assert k.encoded is (mode == "encoded")
        if mode == "encoded":
            keys = tk["keys"]
            assert k.keys == (
                keys["KdpDataBlockEncoded"],
                keys["KiWaitNever"],
                keys["KiWaitAlways"],
            )
        else:
            assert k.keys is None

        # how it was found
        assert k.header_pointer == th["KdDebuggerDataBlock"]
        assert k.located_by == ("header_pointer" if pointer else "kd_copy_data_block")
        assert (k.header_pointer_problem is None) is pointer
        if not pointer:
            assert k.header_pointer_problem == "it is 0"
        if mode == "encoded" or not pointer:
            assert k.kd_copy_data_block == syms["KdCopyDataBlock"]
            nt = t["modules"][0]
            assert k.nt_image == (
                nt["base"],
                nt["size"],
                "the first entry of the header's PsLoadedModuleList",
            )
        else:
            assert k.kd_copy_data_block is None and k.nt_image is None
        assert k.description in dump.notes

        mods = [(m.name, m.path, m.base, m.size) for m in dump.modules()]
        assert mods == [(m["name"], m["path"], m["base"], m["size"]) for m in t["modules"]]

        info = report.info(dump)
        ik = info["kdbg"]
        assert ik["va"] == f"0x{tk['va']:x}" and ik["source"] == k.source
        assert ik["encoded"] is (mode == "encoded") and ik["size"] == tk["size"]
        assert ik["located_by"] == k.located_by
        assert ik["header_pointer"] == f"0x{th['KdDebuggerDataBlock']:x}"
        if k.nt_image is not None:
            assert ik["nt_image"]["base"] == f"0x{t['kernel_base']:x}"
            assert ik["kd_copy_data_block"] == f"0x{syms['KdCopyDataBlock']:x}"
        if mode == "encoded":
            assert ik["keys"]["KiWaitNever"] == f"0x{tk['keys']['KiWaitNever']:x}"


def test_info_json_reports_how_kdbg_was_found(forged):
    path, truth = forged("win10-19045", kdbg="encoded", kdbg_pointer=False)
    out = subprocess.run(
        [sys.executable, "-m", "poolscope.cli", "info", "--json", str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    info = json.loads(out)
    k = info["kdbg"]
    assert {"va", "source", "size", "encoded"} <= set(k)
    assert k["source"] == "decoded" and k["encoded"] is True
    assert k["located_by"] == "kd_copy_data_block"
    assert k["header_pointer"] == "0x0"
    assert k["header_pointer_problem"] == "it is 0"
    assert k["nt_image"]["found_by"] == "the first entry of the header's PsLoadedModuleList"
    note = next(n for n in info["notes"] if n.startswith("KDBG found"))
    assert "KdCopyDataBlock" in note and "encoded" in note and "it is 0" in note


def test_legacy_no_pointer_mode_is_plain_without_pointer(forged):
    _, a = forged("win10-19045", kdbg="no_pointer")
    _, b = forged("win10-19045", kdbg="plain", kdbg_pointer=False)
    assert a.header["KdDebuggerDataBlock"] == b.header["KdDebuggerDataBlock"] == 0
    assert a.kdbg["pointer"] is b.kdbg["pointer"] is False
    assert a.kdbg["plain_hex"] == b.kdbg["plain_hex"]


def test_scenario_parses_kdbg_pointer():
    sc = forge.Scenario.from_dict({"build": 19045, "kdbg": "encoded", "kdbg_pointer": "false"})
    assert sc.kdbg_pointer is False
    assert forge.Scenario.from_dict({}).kdbg_pointer is True
    assert sc.replace(kdbg_pointer=True).kdbg_pointer is True


# ------------------------------------------------------------------ win7 unaffected
@pytest.mark.parametrize("pointer", [True, False])
def test_win7_plain_kdbg_unaffected(forged, pointer):
    path, truth = forged("win7sp1", kdbg_pointer=pointer)
    t = truth.to_dict()
    assert t["header"]["KdDebuggerDataBlock"] == (t["kdbg"]["va"] if pointer else 0)
    assert "keys" not in t["kdbg"]  # Windows 7 has no KdCopyDataBlock encoding
    with poolscope.open(path) as dump:
        k = dump.kdbg
        assert k is not None and k.va == t["kdbg"]["va"]
        assert dict(k.fields) == t["kdbg"]["fields"]
        assert not k.encoded and k.keys is None and k.kd_copy_data_block is None
        if pointer:
            assert (k.source, k.located_by) == ("header_pointer", "header_pointer")
            assert k.nt_image is None and k.header_pointer_problem is None
        else:
            # no KdCopyDataBlock code on 7601: the owner-tag scan of nt finds it
            assert (k.source, k.located_by) == ("image_scan", "image_owner_tag_scan")
            assert k.nt_image[0] == t["kernel_base"]
        assert len(dump.modules()) == len(t["modules"])


# ------------------------------------------------------------------ broken inputs
def _patched(path, truth, tmp_path, patches):
    """A copy of ``path`` with ``{va: bytes}`` written at the VAs' file offsets."""
    out = tmp_path / f"patched-{path.name}"
    shutil.copyfile(path, out)
    with poolscope.open(path) as dump:
        spots = [(dump.translate(va).pa, data) for va, data in patches.items()]
    with open(out, "r+b") as f:
        for pa, data in spots:
            assert pa // 4096 == (pa + len(data) - 1) // 4096
            f.seek(truth.file_offset(pa // 4096) + pa % 4096)
            f.write(data)
    return out


def _not_found(path):
    with poolscope.open(path) as dump:  # opens: physical and virtual reads still work
        assert dump.kdbg is None
        assert len(dump.modules()) > 1  # the header's module list
        notes = "\n".join(dump.notes)
        assert "kernel debugger data block not found" in notes
        with pytest.raises(poolscope.UnsupportedDumpError, match="no KDBG"):
            dump.memory_summary()
    return notes


@pytest.mark.parametrize("pointer", [True, False], ids=["pointer", "no_pointer"])
def test_corrupted_kd_copy_data_block_code(forged, tmp_path, pointer):
    path, truth = forged("win10-19045", kdbg="encoded", kdbg_pointer=pointer)
    code = truth.kdbg["key_symbols"]["KdCopyDataBlock"]
    notes = _not_found(_patched(path, truth, tmp_path, {code: b"\xcc" * 7}))
    if pointer:
        assert f"header KdDebuggerDataBlock: 0x{truth.kdbg['va']:x}" in notes
        assert "no KdCopyDataBlock code naming it" in notes
    else:
        assert "header KdDebuggerDataBlock: it is 0" in notes
    assert "no KdCopyDataBlock code naming a block" in notes


@pytest.mark.parametrize("pointer", [True, False], ids=["pointer", "no_pointer"])
def test_wrong_ki_wait_never(forged, tmp_path, pointer):
    path, truth = forged("win11-26100", kdbg="encoded", kdbg_pointer=pointer)
    never_va = truth.kdbg["key_symbols"]["KiWaitNever"]
    wrong = truth.kdbg["keys"]["KiWaitNever"] ^ 0x5A5A_0000_0000_0101
    notes = _not_found(_patched(path, truth, tmp_path, {never_va: struct.pack("<Q", wrong)}))
    assert "wrong keys" in notes and f"KiWaitNever 0x{wrong:x}" in notes


def test_encoded_flag_cleared(forged, tmp_path):
    path, truth = forged("win10-19045", kdbg="encoded", kdbg_pointer=False)
    flag = truth.kdbg["key_symbols"]["KdpDataBlockEncoded"]
    notes = _not_found(_patched(path, truth, tmp_path, {flag: b"\0"}))
    assert f"KdpDataBlockEncoded (0x{flag:x}) is 0, not 1" in notes


def test_garbage_header_pointer_falls_back_to_code(forged, tmp_path):
    path, truth = forged("win10-19045", kdbg="encoded")
    out = tmp_path / "garbage-pointer.dmp"
    shutil.copyfile(path, out)
    bogus = truth.kdbg["va"] + 0x1000
    with open(out, "r+b") as f:
        f.seek(0x80)
        f.write(struct.pack("<Q", bogus))
    with poolscope.open(out) as dump:
        k = dump.kdbg
        assert k is not None and k.va == truth.kdbg["va"] and k.source == "decoded"
        assert k.located_by == "kd_copy_data_block" and k.header_pointer == bogus
        assert k.header_pointer_problem.startswith(f"0x{bogus:x}")
        assert dict(k.fields) == truth.kdbg["fields"]
