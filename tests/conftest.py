"""Shared pytest fixtures. Keep each fixture small, documented and cheap; add new ones here.

Fixtures
--------
forged
    Session-scoped factory: ``forged(scenario="win7sp1", **overrides) -> (Path, GroundTruth)``.
    ``scenario`` is a builtin name (see ``poolscope.forge.BUILTINS``), a dict, a
    ``Scenario`` or a path to a scenario JSON file; ``overrides`` replace scenario fields
    with JSON-style values, e.g. ``forged("win7sp1", dump_type="kernel_bitmap")`` or
    ``forged("win10-19045", kdbg="encoded")``; the builtins per build are
    ``win7sp1``, ``win10-18363``, ``win10-19045``, ``win11-22631``, ``win11-26100``, each
    with a ``-verifier`` variant (Driver Verifier; ground truth in ``truth.verifier``), and
    ``-leak`` (the blog's pool leak) for 7601, 19045 and 26100 (``poolscope.forge.BUILTINS``).
    Results for names, dicts and paths are cached for the session, keyed by (scenario,
    overrides): treat the returned file and ground truth as read-only (copy the file before
    modifying it).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from poolscope import forge as _forge

ForgedFactory = Callable[..., tuple[Path, "_forge.GroundTruth"]]


@pytest.fixture(scope="session")
def forged(tmp_path_factory: pytest.TempPathFactory) -> ForgedFactory:
    root = tmp_path_factory.mktemp("forged")
    cache: dict[str, tuple[Path, _forge.GroundTruth]] = {}
    counter = itertools.count()

    def make(scenario: Any = "win7sp1", **overrides: Any) -> tuple[Path, _forge.GroundTruth]:
        key = None
        if isinstance(scenario, str | dict | Path):
            key = json.dumps([str(scenario) if isinstance(scenario, Path) else scenario,
                              overrides], sort_keys=True, default=str)  # fmt: skip
            if key in cache:
                return cache[key]
        sc = _forge.Scenario.coerce(scenario)
        if overrides:
            sc = sc.replace(**overrides)
        path = root / f"{next(counter):03d}-{sc.name}-{sc.dump_type}.dmp"
        truth = _forge.forge(sc, path)
        if key is not None:
            cache[key] = (path, truth)
        return path, truth

    return make
