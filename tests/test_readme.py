"""The README as a new user reads it: its Python snippet runs as written on the forged sample
(the first command's ``win7sp1-leak``), its links stay inside the repository, and the scenarios
it names exist."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

from poolscope import cli
from poolscope.forge import BUILTINS

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _using_it() -> str:
    section = README[README.index("## Using it") :]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_using_it_snippet_runs_on_the_sample(forged, tmp_path, monkeypatch):
    path = forged("win7sp1-leak")[0]
    code = _using_it()
    assert code.count('"MEMORY.DMP"') == 2
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code.replace('"MEMORY.DMP"', repr(str(path))), "README.md", "exec"), {})
    text = out.getvalue()
    # the comments say what the lines give on the sample
    assert "myfault+0x1634" in text.splitlines()
    assert "DRIVER_IRQL_NOT_LESS_OR_EQUAL" in text
    assert "615,424,000 bytes" in text and "myfault.sys" in text


def test_first_command_scans_the_sample(forged, capsys):
    path = forged("win7sp1-leak")[0]
    assert "poolscope forge --builtin win7sp1-leak -o sample.dmp && poolscope scan" in README
    assert cli.main(["scan", str(path)]) == 0
    out = capsys.readouterr().out
    assert "Leak" in out and "myfault.sys" in out and "615,424,000" in out


def test_links_stay_in_the_repository():
    for target in re.findall(r"\]\(([^)]+)\)", README):
        if target.startswith(("http://", "https://", "#")):
            continue
        assert (ROOT / target.split("#")[0]).exists(), target


def test_named_scenarios_exist():
    row = next(ln for ln in README.splitlines() if "forge --list" in ln)
    names = re.findall(r"`((?:win|vista)[\w-]+)`", row)
    assert names and set(names) <= set(BUILTINS), set(names) - set(BUILTINS)
