"""Aggregation across dumps: what ``Aggregate`` serves and ``poolscope batch`` summarises.

Each finished report is reduced to a small *digest* (stored next to the report), and the
aggregate is computed from the digests:

- ``top_tags``: bytes in use per pool tag, summed over the dumps (nonpaged + paged, from the pool
  tagging database; from the pool page scan plus live big-pool entries when a dump has no
  tagging database), with the number of dumps holding the tag and the largest figure in one.
- ``top_drivers``: drivers that findings name as suspects: owners of a tag (``tag_owner``),
  Driver Verifier leaks (``verifier_leak``), I/O with APCs disabled (``apc_disabled_io``). Per
  driver: the dumps naming it, and the bytes attributed to it (per dump, the larger of its
  owned tags' bytes and its Verifier-tracked bytes), its tags and the finding kinds.
- ``bugchecks``: dumps per bug check code.
- ``trends``: per host, the tags whose bytes grew at every step from one dump to the next, in
  crash-time order (a leak suspect, as a series of poolmon logs shows), by total growth.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

DIGEST_VERSION = 1


def digest(report: dict[str, Any]) -> dict[str, Any]:
    """The figures of one report that aggregation needs."""
    dump = report.get("dump") or {}
    bugcheck = dump.get("bugcheck") or {}
    tags: dict[str, list[int]] = {}  # tag -> [nonpaged bytes, paged bytes]
    for row in report.get("poolused") or []:
        np_, p_ = int(row.get("nonpaged_bytes") or 0), int(row.get("paged_bytes") or 0)
        if np_ or p_:
            tags[str(row.get("tag", ""))] = [np_, p_]
    source = "poolused"
    if not tags:
        source = "pool_scan"
        for row in (report.get("pool_scan") or {}).get("tags") or []:
            _add(
                tags, str(row.get("tag", "")), str(row.get("pool", "")), row.get("allocated_bytes")
            )
        for row in report.get("bigpool") or []:
            if not row.get("free"):
                _add(tags, str(row.get("tag", "")), str(row.get("pool", "")), row.get("bytes"))
    drivers: dict[str, dict[str, Any]] = {}

    def driver(name: str) -> dict[str, Any]:
        return drivers.setdefault(
            name, {"owned_bytes": 0, "verifier_bytes": 0, "tags": set(), "reasons": set()}
        )

    for f in report.get("findings") or []:
        ev = f.get("evidence") or {}
        kind = str(f.get("kind", ""))
        if kind == "tag_owner":
            tag = str(ev.get("tag", ""))
            for m in ev.get("modules") or []:
                d = driver(str(m.get("module", "?")))
                if tag not in d["tags"]:
                    d["owned_bytes"] += sum(tags.get(tag, (0, 0)))
                d["tags"].add(tag)
                d["reasons"].add(kind)
        elif kind == "verifier_leak" and ev.get("driver"):
            d = driver(str(ev["driver"]))
            d["verifier_bytes"] += int(ev.get("bytes") or 0)
            d["tags"].update(str(t) for t in ev.get("tags") or [])
            d["reasons"].add(kind)
        elif kind == "apc_disabled_io" and ev.get("module"):
            driver(str(ev["module"]))["reasons"].add(kind)
    return {
        "version": DIGEST_VERSION,
        "bugcheck": {"code": bugcheck.get("code") or "", "name": bugcheck.get("name") or ""},
        "system_time": dump.get("system_time"),
        "build": dump.get("build"),
        "tags_source": source,
        "tags": tags,
        "drivers": {
            name: {
                "bytes": max(d["owned_bytes"], d["verifier_bytes"]),
                "tags": sorted(d["tags"]),
                "reasons": sorted(d["reasons"]),
            }
            for name, d in drivers.items()
        },
    }


def _add(tags: dict[str, list[int]], tag: str, pool: str, n: Any) -> None:
    if not n:
        return
    slot = tags.setdefault(tag, [0, 0])
    slot[0 if "nonpaged" in pool or "paged" not in pool else 1] += int(n)


def parse_time(iso: str | None) -> float | None:
    if not iso:
        return None
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@dataclass
class Item:
    """One finished dump for aggregation."""

    job_id: str
    host_id: str
    digest: dict[str, Any]
    order: float = 0.0  # tie-break after the crash time (e.g. the submission time)


def aggregate(items: Iterable[Item], top: int = 10, min_growth_bytes: int = 1) -> dict[str, Any]:
    """The aggregate document (the keys of ``AggregateResponse``)."""
    items = list(items)
    tag_tot: dict[str, dict[str, int]] = {}
    drv_tot: dict[str, dict[str, Any]] = {}
    bugchecks: Counter[tuple[str, str]] = Counter()
    for it in items:
        dg = it.digest
        for tag, (np_, p_) in (dg.get("tags") or {}).items():
            t = tag_tot.setdefault(
                tag, {"bytes": 0, "nonpaged_bytes": 0, "paged_bytes": 0, "dumps": 0, "max_bytes": 0}
            )
            t["bytes"] += np_ + p_
            t["nonpaged_bytes"] += np_
            t["paged_bytes"] += p_
            t["dumps"] += 1
            t["max_bytes"] = max(t["max_bytes"], np_ + p_)
        for name, d in (dg.get("drivers") or {}).items():
            t2 = drv_tot.setdefault(name, {"dumps": 0, "bytes": 0, "tags": set(), "reasons": set()})
            t2["dumps"] += 1
            t2["bytes"] += int(d.get("bytes") or 0)
            t2["tags"].update(d.get("tags") or [])
            t2["reasons"].update(d.get("reasons") or [])
        bc = dg.get("bugcheck") or {}
        bugchecks[(str(bc.get("code") or ""), str(bc.get("name") or ""))] += 1

    top_tags = sorted(tag_tot.items(), key=lambda kv: (-kv[1]["bytes"], kv[0]))[:top]
    top_drivers = sorted(drv_tot.items(), key=lambda kv: (-kv[1]["dumps"], -kv[1]["bytes"], kv[0]))[
        :top
    ]
    hosts = {it.host_id for it in items if it.host_id}
    return {
        "job_count": len(items),
        "host_count": len(hosts),
        "top_tags": [{"tag": tag, **t} for tag, t in top_tags],
        "top_drivers": [
            {
                "driver": name,
                "dumps": d["dumps"],
                "bytes": d["bytes"],
                "tags": sorted(d["tags"]),
                "reasons": sorted(d["reasons"]),
            }
            for name, d in top_drivers
        ],
        "bugchecks": [
            {"code": code, "name": name, "count": n}
            for (code, name), n in sorted(bugchecks.items(), key=lambda kv: (-kv[1], kv[0]))
        ],
        "trends": trends(items, min_growth_bytes)[:top],
    }


def trends(items: list[Item], min_growth_bytes: int = 1) -> list[dict[str, Any]]:
    """Per host: tags whose bytes grew at every step from one dump to the next."""
    by_host: dict[str, list[Item]] = {}
    for it in items:
        if it.host_id:
            by_host.setdefault(it.host_id, []).append(it)
    out: list[dict[str, Any]] = []
    for host, series in by_host.items():
        if len(series) < 2:
            continue
        series.sort(key=lambda it: (parse_time(it.digest.get("system_time")) or 0.0, it.order))
        all_tags = set().union(*((it.digest.get("tags") or {}).keys() for it in series))
        for tag in all_tags:
            values = [sum((it.digest.get("tags") or {}).get(tag, (0, 0))) for it in series]
            growth = values[-1] - values[0]
            if growth < max(1, min_growth_bytes):
                continue
            if any(b <= a for a, b in zip(values, values[1:], strict=False)):
                continue
            out.append(
                {
                    "host_id": host,
                    "tag": tag,
                    "dumps": len(series),
                    "first_bytes": values[0],
                    "last_bytes": values[-1],
                    "growth_bytes": growth,
                    "points": [
                        {
                            "job_id": it.job_id,
                            "dump_time": it.digest.get("system_time") or "",
                            "bytes": v,
                        }
                        for it, v in zip(series, values, strict=True)
                    ],
                }
            )
    out.sort(key=lambda t: (-t["growth_bytes"], t["host_id"], t["tag"]))
    return out


def render(agg: dict[str, Any], console: Any, title: str = "aggregate") -> None:
    """The aggregate as rich tables."""
    from rich.table import Table

    from poolscope.service.spool import human_bytes

    console.print(f"[bold]{title}[/bold]: {agg['job_count']} dumps from {agg['host_count']} hosts")
    t = Table(title="top tags by bytes", title_justify="left")
    for col in ("tag", "bytes", "nonpaged", "paged", "dumps", "max in one dump"):
        t.add_column(col, justify="left" if col == "tag" else "right")
    for r in agg["top_tags"]:
        t.add_row(
            r["tag"],
            f"{r['bytes']:,}",
            human_bytes(r["nonpaged_bytes"]),
            human_bytes(r["paged_bytes"]),
            str(r["dumps"]),
            human_bytes(r["max_bytes"]),
        )
    console.print(t)
    t = Table(title="top suspect drivers", title_justify="left")
    for col in ("driver", "dumps", "bytes", "tags", "why"):
        t.add_column(col, justify="right" if col in ("dumps", "bytes") else "left")
    for r in agg["top_drivers"]:
        t.add_row(
            r["driver"],
            str(r["dumps"]),
            f"{r['bytes']:,}",
            ", ".join(r["tags"]),
            ", ".join(r["reasons"]),
        )
    console.print(t)
    t = Table(title="bug checks", title_justify="left")
    for col in ("code", "name", "dumps"):
        t.add_column(col, justify="right" if col == "dumps" else "left")
    for r in agg["bugchecks"]:
        t.add_row(r["code"], r["name"], str(r["count"]))
    console.print(t)
    t = Table(title="growing tags per host (leak suspects)", title_justify="left")
    for col in ("host", "tag", "dumps", "first", "last", "growth"):
        t.add_column(col, justify="left" if col in ("host", "tag") else "right")
    for r in agg["trends"]:
        t.add_row(
            r["host_id"],
            r["tag"],
            str(r["dumps"]),
            f"{r['first_bytes']:,}",
            f"{r['last_bytes']:,}",
            f"+{r['growth_bytes']:,}",
        )
    console.print(t)
