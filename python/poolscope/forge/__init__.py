"""The dump forge: write realistic Windows x64 kernel crash dumps plus their ground truth.

    >>> from poolscope.forge import builtin, forge
    >>> truth = forge(builtin("win7sp1"), "demo.dmp")
    >>> truth.to_dict()["kdbg"]["va"]

Only the standard library is used. See ``Scenario`` for the scenario keys and
``GroundTruth`` for what comes back.

Modules: ``scenario`` (Scenario, builtins), ``layout`` (profiles), ``physmem`` (RAM and
allocator), ``paging`` (x64 page tables), ``kernel`` (nt, KDBG, drivers, stacks),
``pool`` (pool pages, big pool, tracker and big-page tables, tag owners),
``kdbg`` (Win8+ block encoding), ``verifier`` (Driver Verifier state: MmVerifierData,
suspect list, AVL tree, tracker pages, pool and IRP logs), ``pe`` (PE headers), ``header``
(DUMP_HEADER64, BMP and RDMP headers), ``writer`` (page fill and fast writing), ``truth``
(GroundTruth), ``core`` (forge()).
"""

from __future__ import annotations

from .core import forge
from .kdbg import decode_block, decode_word, encode_block, encode_word
from .layout import load_profile, parse_int
from .scenario import (
    BUILTINS,
    DUMP_TYPES,
    ApcDisabledSpec,
    BigPoolSpec,
    BugCheck,
    CorruptPagesSpec,
    IrpLogSpec,
    ModuleSpec,
    PoolLogSpec,
    PoolSpec,
    PoolTagSpec,
    Scenario,
    StringSpec,
    TagSiteSpec,
    VerifierAllocSpec,
    VerifierDriverSpec,
    VerifierSpec,
    builtin,
)
from .truth import GroundTruth

__all__ = [
    "BUILTINS",
    "DUMP_TYPES",
    "ApcDisabledSpec",
    "BigPoolSpec",
    "BugCheck",
    "CorruptPagesSpec",
    "GroundTruth",
    "IrpLogSpec",
    "ModuleSpec",
    "PoolLogSpec",
    "PoolSpec",
    "PoolTagSpec",
    "Scenario",
    "StringSpec",
    "TagSiteSpec",
    "VerifierAllocSpec",
    "VerifierDriverSpec",
    "VerifierSpec",
    "builtin",
    "decode_block",
    "decode_word",
    "encode_block",
    "encode_word",
    "forge",
    "load_profile",
    "parse_int",
]
