"""The command line as people and pipelines meet it: every subcommand's --help, bad arguments
refused with the flag named and no traceback, a quiet exit on a closed pipe, output written to a
pipe at full width, WinDbg's tag wildcards, and TOTAL over every row."""

from __future__ import annotations

import argparse
import json
import subprocess

import pytest
import zstandard

from poolscope import cli
from service_util import child_env, poolscope_command

SMALL = {"ram_mib": 32, "fill": "zero"}


def _commands() -> list[str]:
    sub = next(a for a in cli.parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(sub.choices)


def _main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = cli.main(argv)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def test_every_command_has_help(capsys):
    names = _commands()
    assert {"scan", "poolfind", "forge", "serve", "submit", "jobs", "batch"} <= set(names)
    for name in names:
        code, out, err = _main([name, "--help"], capsys)
        assert code == 0 and "usage: poolscope " + name in out, (name, err)
        assert "Traceback" not in err
    code, out, _ = _main(["--help"], capsys)
    assert code == 0 and "poolscope forge --builtin win7sp1-leak" in out
    assert "Modules:" not in out  # the developers' docstring is not the command's help


def test_every_command_refuses_missing_arguments(capsys):
    # serve, jobs, aggregate and profiles need no argument: they would run
    for name in sorted(set(_commands()) - {"serve", "jobs", "aggregate", "profiles"}):
        code, out, err = _main([name], capsys)
        assert code == 2 and "Traceback" not in err and "error:" in err, (name, err)


BAD = [
    (["scan", "x.dmp", "--max-decompressed", "lots"], "--max-decompressed"),
    (["info", "x.dmp", "--symbol-timeout", "soon"], "--symbol-timeout"),
    (["scan", "x.dmp", "--dominant-share", "2"], "--dominant-share"),
    (["scan", "x.dmp", "--top", "-1"], "--top"),
    (["poolused", "x.dmp", "--top", "ten"], "--top"),
    (["poolused", "x.dmp", "--sort", "size"], "--sort"),
    (["poolfind", "x.dmp", "TooLongTag"], "1 to 4 characters"),
    (["verifier", "x.dmp", "--address", "zzz"], "--address"),
    (["verifier", "x.dmp", "--rows", "many"], "--rows"),
    (["forge", "--builtin", "nosuch", "-o", "x.dmp"], "win7sp1-leak"),
    (["forge", "--builtin", "win7sp1"], "--output"),
    (["profiles", "--build", "seven"], "--build"),
    (["--width", "0", "profiles"], "--width"),
    (["serve", "--max-upload", "huge"], "--max-upload"),
    (["serve", "--workers", "0"], "--workers"),
    (["serve", "--job-timeout", "-5"], "--job-timeout"),
    (["serve", "--log-level", "loud"], "--log-level"),
    (["submit", "x.dmp", "--label", "novalue"], "--label"),
    (["submit", "x.dmp", "--priority", "high"], "--priority"),
    (["jobs", "--since", "yesterday"], "--since"),
    (["jobs", "--limit", "x"], "--limit"),
    (["jobs", "--state", "done"], "--state"),
    (["report", "j1", "--top", "x"], "--top"),
    (["aggregate", "--min-growth", "big"], "--min-growth"),
    (["batch", "dir", "--max-decompressed", "1Q"], "--max-decompressed"),
    (["batch", "dir", "--workers", "-2"], "--workers"),
]


@pytest.mark.parametrize(("argv", "named"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_arguments_name_the_flag(argv, named, capsys):
    code, _, err = _main(argv, capsys)
    assert code == 2, err
    assert "Traceback" not in err and named in err, err
    assert "<lambda>" not in err


def test_bad_arguments_in_a_subprocess_print_no_traceback():
    for argv, named in [
        (["poolfind", "x.dmp", "TooLongTag"], "tag"),
        (["forge", "--builtin", "nosuch", "-o", "x.dmp"], "--builtin"),
        (["verifier", "x.dmp", "--address", "zzz"], "--address"),
    ]:
        r = subprocess.run(
            poolscope_command(*argv), capture_output=True, text=True, env=child_env(), timeout=60
        )
        assert r.returncode == 2 and "Traceback" not in r.stderr and named in r.stderr, r.stderr


def test_sizes_take_suffixes_everywhere(forged, tmp_path, capsys):
    path = forged("win7sp1", **SMALL)[0]
    zst = tmp_path / "small.dmp.zst"
    zst.write_bytes(zstandard.ZstdCompressor(level=1).compress(path.read_bytes()))
    code, out, _ = _main(["info", str(zst), "--json", "--max-decompressed", "100M"], capsys)
    assert code == 0 and json.loads(out)["decompressed"] is True
    code, _, err = _main(["info", str(zst), "--max-decompressed", "1M"], capsys)
    assert code == 2 and "LimitExceeded" in err and "--max-decompressed" in err
    assert "Traceback" not in err


def test_forge_lists_its_scenarios(capsys):
    from poolscope.forge import BUILTINS

    code, out, _ = _main(["forge", "--list"], capsys)
    assert code == 0 and out.split() == sorted(BUILTINS)
    code, out, _ = _main(["forge", "--help"], capsys)
    assert code == 0 and all(name in out for name in BUILTINS)


def test_closed_pipe_exits_quietly(forged):
    path = forged("win7sp1", **SMALL)[0]
    for argv in (["modules", str(path)], ["poolused", str(path), "--json"]):
        proc = subprocess.Popen(
            poolscope_command(*argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=child_env(),
        )
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()  # the reader is gone before the command writes a byte
        err = proc.stderr.read().decode()
        code = proc.wait(timeout=60)
        assert code in (0, 141) and err == "", (code, err)


def _piped(*argv: str) -> str:
    r = subprocess.run(
        poolscope_command(*argv), capture_output=True, text=True, env=child_env(), timeout=120
    )
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_piped_output_is_full_width(forged):
    path = forged("win7sp1-verifier")[0]
    mods = json.loads(_piped("modules", str(path), "--json"))
    text = _piped("modules", str(path))
    lines = text.splitlines()
    for m in mods:  # each module on one line, its path whole
        assert any(m["path"] in ln and m["name"] in ln and m["base"] in ln for ln in lines), m
    assert "…" not in text
    doc = json.loads(_piped("verifier", str(path), "--json"))
    text = _piped("verifier", str(path))
    assert "…" not in text and "Verified drivers" in text and "Tracked pool allocations" in text
    for d in doc["drivers"]:
        assert any(d["name"] in ln and d["state"] in ln for ln in text.splitlines()), d
    rep = json.loads(_piped("scan", str(path), "--json"))
    text = _piped("scan", str(path))
    assert "…" not in text
    for f in rep["findings"]:  # every finding's summary whole on one line
        assert any(f["summary"] in ln for ln in text.splitlines()), f["summary"]
    # --width still cuts to a chosen width
    narrow = _piped("--width", "60", "modules", str(path))
    assert max(len(ln) for ln in narrow.splitlines()) <= 60


def test_findings_group_thousands(forged):
    path = forged("win7sp1-leak")[0]
    rep = json.loads(_piped("scan", str(path), "--json"))
    assert any("615,424,000 bytes" in f["summary"] for f in rep["findings"])


def test_poolfind_takes_windbg_wildcards(forged, capsys):
    path = str(forged("win7sp1-leak")[0])
    found = {}
    for tag in ("Leak", "Le*", "L?ak", "*eak", "Lea?"):
        code, out, err = _main(["poolfind", path, tag, "--json"], capsys)
        assert code == 0, err
        doc = json.loads(out)
        found[tag] = (len(doc["bigpool"]), len(doc["blocks"]))
        assert all(b["tag"].rstrip() == "Leak" for b in doc["bigpool"] if b["tag"] != "Leak")
    assert found["Leak"][0] == 601 and set(found.values()) == {found["Leak"]}
    code, out, _ = _main(["poolfind", path, "Zz?q", "--json"], capsys)
    assert code == 0 and json.loads(out)["bigpool"] == []


def test_poolused_total_sums_every_row(forged, capsys):
    path = str(forged("win7sp1", **SMALL)[0])
    _, out, _ = _main(["poolused", path, "--json"], capsys)
    rows = json.loads(out)
    assert len(rows) > 3
    code, out, _ = _main(["poolused", path, "--top", "3"], capsys)
    assert code == 0
    total = next(ln for ln in out.splitlines() if ln.strip().startswith("TOTAL"))
    assert f"{sum(r['nonpaged_bytes'] for r in rows):,}" in total
    assert f"{len(rows) - 3:,} more tags" in out
    _, out, _ = _main(["poolused", path, "--json", "--top", "3"], capsys)
    assert json.loads(out) == rows[:3]  # the JSON form is unchanged: the first rows


def test_verifier_driver_filters_every_section(forged, capsys):
    path = str(forged("win7sp1-verifier")[0])
    code, out, _ = _main(["verifier", path, "--json"], capsys)
    every = json.loads(out)
    code, out, _ = _main(["verifier", path, "--json", "--driver", "myfault.sys"], capsys)
    assert code == 0
    doc = json.loads(out)
    assert [d["name"] for d in doc["drivers"]] == ["myfault.sys"]
    assert {t["driver"] for t in doc["tracked"]} == {"myfault.sys"}
    for key in ("log", "irp_log"):
        assert len(doc[key]) == doc[f"{key}_total"] <= len(every[key])
        for e in doc[key]:
            assert any(s.startswith("myfault+") for s in e["stack_symbols"]), e
    assert 0 < len(doc["log"]) < len(every["log"])
    argv = ["verifier", path, "--json", "--driver", "myfault.sys", "--rows", "2"]
    code, out, _ = _main(argv, capsys)
    limited = json.loads(out)
    assert len(limited["log"]) == 2 and limited["log_total"] == doc["log_total"]


def test_bugcheck_name_argument_shows_its_string(forged, capsys):
    path = str(forged("win7sp1-verifier")[0])
    code, out, _ = _main(["info", path, "--json"], capsys)
    bc = json.loads(out)["bugcheck"]
    assert bc["code"] == "0xc4" and bc["params"][0] == "0x62"
    assert bc["strings"] == [None, "myfault.sys", None, None]
    code, out, _ = _main(["info", path], capsys)
    assert code == 0 and 'name of the driver: "myfault.sys"' in out
