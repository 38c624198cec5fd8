"""The ``pool`` section of the ground truth: the pool builder's figures, checked against a
classification of every page the dump stores, plus tag owners and the memory summary."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import paging as pg
from .kernel import KernelImage
from .layout import PAGE_SIZE
from .pool import classify_page, tag_str, tag_u32
from .writer import PageFill, Placement


# ----------------------------------------------------------------------- owners
def find_owners(
    modules: list[tuple[str, int, int]],
    tags: list[int],
    read_page: Callable[[int], bytes | None],
) -> dict[str, list[dict[str, Any]]]:
    """For each tag, the modules whose image bytes hold it: ``{tag: [{"module", "offsets"}]}``
    (offsets from the image base, every non-overlapping occurrence, unreadable pages
    skipped as the reader does). ``modules`` = (name, base, size); ``read_page(va)`` gives
    the 4 KiB at a page VA or None."""
    images: list[tuple[str, list[tuple[int, bytes]]]] = []
    for name, base, size in modules:
        pieces: list[tuple[int, bytes]] = []  # (offset, contiguous readable bytes)
        cur_off, cur = 0, bytearray()
        for off in range(0, size, PAGE_SIZE):
            data = read_page(base + off)
            if data is None:
                if cur:
                    pieces.append((cur_off, bytes(cur)))
                cur = bytearray()
                continue
            if not cur:
                cur_off = off
            cur += data[: min(PAGE_SIZE, size - off)]
        if cur:
            pieces.append((cur_off, bytes(cur)))
        images.append((name, pieces))
    out: dict[str, list[dict[str, Any]]] = {}
    for tag in tags:
        needle = tag.to_bytes(4, "little")
        owners = []
        for name, pieces in images:
            offs = []
            for start, data in pieces:
                i = data.find(needle)
                while i >= 0:
                    offs.append(start + i)
                    i = data.find(needle, i + 4)
            if offs:
                owners.append({"module": name, "offsets": offs})
        out[tag_str(tag)] = owners
    return out


# ------------------------------------------------------------------ final truth
def pool_truth(
    kimg: KernelImage, fill: PageFill, stored_ranges: list[tuple[int, int]], placement: Placement
) -> dict[str, Any]:
    """The ``pool`` section of the ground truth: the builder's figures, checked against a
    classification of every page the dump stores, plus tag owners and the memory summary.

    Dumps that store no pages (triage, 32-bit) get the truth of the machine's memory."""
    pb = kimg.pool
    if not stored_ranges:
        stored_ranges = list(kimg.mem.usable.ranges)

        def stored(pfn: int) -> bool:
            return True
    else:

        def stored(pfn: int) -> bool:
            return placement.offset(pfn) is not None

    lay = pb.lay
    out = pb.truth()
    mem = kimg.mem

    def page_of(pfn: int) -> bytes:
        c = mem.pages.get(pfn)
        return bytes(c) if c is not None else fill.page(pfn)

    # Every content page, and (belt and braces) the fill pages at multiples of 256 PFNs,
    # which would start with a zero byte if the stamp were the bare PFN.
    mine_pool = {p.pfn for p in pb.pages}
    mine_rejected = {c["pfn"] for c in pb.corrupt}
    found: dict[str, list[int]] = {"pool": [], "rejected": [], "rejected_free_first": []}
    candidates = [p for p in mem.pages if stored(p)]
    if fill.mode != "zero":
        for base, count in stored_ranges:
            first = (max(base, 0x10000) + 0xFF) & ~0xFF
            candidates += [
                p for p in range(first, min(base + count, 1 << 24), 0x100)
                if p not in mem.pages
            ]  # fmt: skip
    if lay.name != "legacy":  # no page chains to classify: the builder's figures stand
        candidates = []
        out["scan"]["rejected_free_first_pages"] = 0
        out["scan"]["rejected_free_first"] = []
    for pfn in candidates:
        kind = classify_page(page_of(pfn), lay)
        if kind is not None:
            found[kind].append(pfn)
    if lay.name == "legacy":
        if set(found["pool"]) != mine_pool:
            extra = sorted(set(found["pool"]) - mine_pool)[:5]
            missing = sorted(mine_pool - set(found["pool"]))[:5]
            raise RuntimeError(f"forge bug: pool pages differ (extra {extra}, missing {missing})")
        if not mine_rejected <= set(found["rejected"]):
            raise RuntimeError("forge bug: a corrupt page is not recognisably corrupt")
    incidental = sorted(set(found["rejected"]) - mine_rejected)
    for pfn in incidental:
        _, units, _, tag = lay.read_header(page_of(pfn), 0)
        out["scan"]["rejected"].append(
            {"pfn": pfn, "pa": pfn * PAGE_SIZE, "va": pb.kb.pool_va(pfn * PAGE_SIZE),
             "kind": "incidental", "first_tag": tag_str(tag), "first_size": units * lay.unit}
        )  # fmt: skip
    out["scan"]["rejected_pages"] = len(out["scan"]["rejected"])
    if lay.name == "legacy":
        out["scan"]["rejected_free_first_pages"] = len(found["rejected_free_first"])
        out["scan"]["rejected_free_first"] = [
            {"pfn": pfn, "pa": pfn * PAGE_SIZE, "va": pb.kb.pool_va(pfn * PAGE_SIZE)}
            for pfn in sorted(found["rejected_free_first"])
        ]

    def read_page(va: int) -> bytes | None:
        pa, _, leaf, level = kimg.pt.walk(va)
        if pa is None:
            if level != 1 or not leaf & pg.TRANSITION or leaf & 0x400:
                return None
            pa = leaf & pg.ADDR_MASK
        pfn = pa // PAGE_SIZE
        if pfn not in mem.pages:
            # A fill page cannot hold (part of) a tag: its bytes are >= 0x80 except the
            # PFN stamp (0xF5, the PFN, zero bytes: some byte of each window is 0 or >= 0x80
            # for PFNs below 2^32) or all zero, and tags are
            # 4 printable ASCII bytes. Skipping it (like an unreadable page) finds the same.
            return None
        return page_of(pfn) if stored(pfn) else None

    mods = [(m.name, m.base, m.size) for m in kimg.modules]
    tags = set(pb.used_tags()) | {tag_u32(t) for m in kimg.modules for t, _ in m.tag_sites}
    out["owners"] = find_owners(mods, sorted(tags), read_page)
    out["memory"] = dict(kimg.memory)
    return out
