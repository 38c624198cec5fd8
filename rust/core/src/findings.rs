//! Findings: what an engineer would conclude from the analyses, each with a kind, a severity,
//! a one-line summary and the figures that support it.

use std::collections::{HashMap, HashSet};

use serde::Serialize;
use serde_json::{json, Value};

use crate::kernel::Modules;
use crate::pool::owners::Owner;
use crate::pool::{tag, BigPool, MemorySummary, Pool, PoolScan, TagUsage};
use crate::verifier::tracked::{self, FxBuild};
use crate::verifier::{DriverState, Verifier, POOL_UNKNOWN};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub kind: &'static str,
    pub severity: Severity,
    pub summary: String,
    pub evidence: Value,
}

/// Thresholds (configurable from the API and CLI).
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    /// A tag whose bytes are at least this share of its pool's tracked bytes dominates it.
    pub dominant_share: f64,
    /// Big-pool entries hold at least this share of a dominant tag's bytes.
    pub bigpool_share: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            dominant_share: 0.5,
            bigpool_share: 0.5,
        }
    }
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
}

/// A count with thousands separators, as the tables print it: 615,424,000.
fn grouped(n: impl Into<u128>) -> String {
    let digits = n.into().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn memory(vm: &MemorySummary) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut pool = |kind, name: &str, used: Option<u64>, max: Option<u64>| {
        if let (Some(u), Some(m)) = (used, max) {
            out.push(Finding {
                kind,
                severity: Severity::High,
                summary: format!(
                    "excessive {name} pool usage: {u} pages ({}) of a {m}-page ({}) maximum, {:.0}%",
                    mib(u * 0x1000),
                    mib(m * 0x1000),
                    100.0 * u as f64 / m as f64
                ),
                evidence: json!({"usage_pages": u, "max_pages": m, "rule": vm.rule}),
            });
        }
    };
    if vm.excessive_nonpaged {
        pool(
            "excessive_nonpaged_pool",
            "nonpaged",
            vm.nonpaged_pool_pages,
            vm.nonpaged_pool_max_pages,
        );
    }
    if vm.excessive_paged {
        pool(
            "excessive_paged_pool",
            "paged",
            vm.paged_pool_pages,
            vm.paged_pool_max_pages,
        );
    }
    out
}

/// A dump cut short: what the analyses could not see.
pub fn truncated(c: &crate::container::Truncation) -> Finding {
    let share = c.pages_missing as f64 / c.pages_expected.max(1) as f64;
    Finding {
        kind: "dump_truncated",
        severity: Severity::Low,
        summary: format!(
            "the dump file is truncated ({} of {} bytes): {} of {} pages ({:.0}%) are missing; every figure below rests on the {} pages present",
            grouped(c.actual_size),
            grouped(c.expected_size),
            grouped(c.pages_missing),
            grouped(c.pages_expected),
            share * 100.0,
            c.pages_expected - c.pages_missing
        ),
        evidence: json!({"expected_size": c.expected_size, "actual_size": c.actual_size,
                         "pages_expected": c.pages_expected, "pages_missing": c.pages_missing,
                         "missing_share": (share * 10000.0).round() / 10000.0}),
    }
}

/// Where the per-tag figures of the dominant-tag findings come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagSource {
    /// The tagging database (`poolused`).
    Tracker,
    /// The pool page scan's blocks plus the big-pool table's live entries (the tagging database
    /// is unavailable or was refused).
    Found,
}

impl TagSource {
    pub fn name(self) -> &'static str {
        match self {
            TagSource::Tracker => "poolused",
            TagSource::Found => "pool_scan+bigpool",
        }
    }
    fn what(self) -> &'static str {
        match self {
            TagSource::Tracker => "tracked bytes",
            TagSource::Found => {
                "bytes found by the page scan and the big-pool table (the tagging database is unavailable)"
            }
        }
    }
}

/// At most this many dominant tags per pool become findings (whatever the threshold).
pub const MAX_DOMINANT_PER_POOL: usize = 8;

/// A count that became "negative" (a per-processor table read alone wraps below zero), as
/// the kernel's signed view sees it.
fn negative(v: u64) -> bool {
    v > i64::MAX as u64
}

/// Tags holding a dominant share of a pool's bytes: (tag, pool name, bytes, share). Only
/// plausible tags with non-negative counts take part, so no share exceeds 100%; at most
/// [`MAX_DOMINANT_PER_POOL`] per pool, the largest first.
pub fn dominant_tags(rows: &[TagUsage], t: &Thresholds) -> Vec<(u32, &'static str, u64, f64)> {
    let usable = |u: &&TagUsage| tag::plausible(u.tag);
    let total = |f: fn(&TagUsage) -> u64| -> u128 {
        rows.iter()
            .filter(usable)
            .map(f)
            .filter(|&b| !negative(b))
            .map(u128::from)
            .sum()
    };
    let np_total = total(|u| u.nonpaged_bytes);
    let p_total = total(|u| u.paged_bytes);
    let mut out = Vec::new();
    for (pool, total, get) in [
        (
            "nonpaged",
            np_total,
            (|u: &TagUsage| u.nonpaged_bytes) as fn(&TagUsage) -> u64,
        ),
        ("paged", p_total, |u: &TagUsage| u.paged_bytes),
    ] {
        let mut mine: Vec<(u32, &'static str, u64, f64)> = rows
            .iter()
            .filter(usable)
            .map(|u| (u.tag, get(u)))
            .filter(|&(_, b)| b > 0 && !negative(b))
            .filter(|&(_, b)| total > 0 && b as f64 >= t.dominant_share * total as f64)
            .map(|(tg, b)| (tg, pool, b, (b as f64 / total as f64).min(1.0)))
            .collect();
        mine.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
        mine.truncate(MAX_DOMINANT_PER_POOL);
        out.extend(mine);
    }
    out
}

pub fn dominant(
    rows: &[TagUsage],
    vm: Option<&MemorySummary>,
    t: &Thresholds,
    source: TagSource,
) -> Vec<Finding> {
    let by_tag: HashMap<u32, TagUsage> = rows.iter().map(|u| (u.tag, *u)).collect();
    dominant_tags(rows, t)
        .into_iter()
        .map(|(tg, pool, bytes, share)| {
            let u = by_tag.get(&tg).copied().unwrap_or_default();
            let in_use = if pool == "nonpaged" { u.nonpaged_in_use() } else { u.paged_in_use() };
            let excessive = vm.is_some_and(|v| if pool == "nonpaged" { v.excessive_nonpaged } else { v.excessive_paged });
            Finding {
                kind: "dominant_tag",
                severity: if excessive { Severity::High } else { Severity::Medium },
                summary: format!(
                    "tag {} holds {:.0}% of {pool} pool {}: {} allocations, {} bytes ({})",
                    tag::to_string(tg),
                    share * 100.0,
                    source.what(),
                    grouped(in_use),
                    grouped(bytes),
                    mib(bytes)
                ),
                evidence: json!({"tag": tag::to_string(tg), "pool": pool, "bytes": bytes, "allocations": in_use,
                                 "share": (share * 1000.0).round() / 1000.0, "threshold": t.dominant_share,
                                 "source": source.name()}),
            }
        })
        .collect()
}

/// Per-tag figures from what the dump shows directly: the page scan's allocated blocks and the
/// big-pool table's live entries, for the global pools (session pool has its own accounting),
/// as `!poolused`-shaped rows (allocations outstanding, no frees). Big-pool entries with an
/// implausible tag or more bytes than `ceiling` are left out.
pub fn found_usage(scan: Option<&PoolScan>, big: Option<&BigPool>, ceiling: u64) -> Vec<TagUsage> {
    let mut by: HashMap<u32, TagUsage> = HashMap::new();
    let mut add = |tg: u32, pool: Pool, n: u64, bytes: u64| {
        let u = by.entry(tg).or_insert(TagUsage {
            tag: tg,
            ..Default::default()
        });
        match pool {
            Pool::NonPaged => {
                u.nonpaged_allocs += n;
                u.nonpaged_bytes = u.nonpaged_bytes.saturating_add(bytes);
            }
            Pool::Paged => {
                u.paged_allocs += n;
                u.paged_bytes = u.paged_bytes.saturating_add(bytes);
            }
            _ => {}
        }
    };
    if let Some(s) = scan {
        for ((tg, pool), c) in &s.tags {
            if c.allocated > 0 && tag::plausible(*tg) {
                add(*tg, *pool, c.allocated, c.allocated_bytes);
            }
        }
    }
    if let Some(b) = big {
        for p in b.pages.iter().filter(|p| !p.free) {
            if tag::plausible(p.tag) && p.bytes > 0 && p.bytes <= ceiling {
                add(tag::normalize(p.tag), p.pool, 1, p.bytes);
            }
        }
    }
    let mut rows: Vec<TagUsage> = by
        .into_values()
        .filter(|u| u.nonpaged_bytes != 0 || u.paged_bytes != 0)
        .collect();
    rows.sort_by(|a, b| {
        (b.nonpaged_bytes, b.paged_bytes)
            .cmp(&(a.nonpaged_bytes, a.paged_bytes))
            .then(a.tag.cmp(&b.tag))
    });
    rows
}

/// Why the tagging database's figures cannot be true, if they cannot: a pool's bytes (summed
/// over plausible tags) larger than the pool can hold (its maximum, else physical memory), or
/// most rows with tags no allocator accepts.
pub fn implausible_tracker(
    rows: &[TagUsage],
    vm: Option<&MemorySummary>,
    present_pages: u64,
) -> Option<String> {
    if rows.is_empty() {
        return None;
    }
    let bad_tags = rows.iter().filter(|u| !tag::plausible(u.tag)).count();
    if bad_tags * 2 > rows.len() {
        return Some(format!(
            "{bad_tags} of its {} tags are not plausible pool tags (printable ASCII): not a tagging database",
            rows.len()
        ));
    }
    let phys = vm
        .and_then(|v| v.physical_pages)
        .unwrap_or(0)
        .max(present_pages)
        .saturating_mul(0x1000);
    for (pool, max_pages, get) in [
        (
            "nonpaged",
            vm.and_then(|v| v.nonpaged_pool_max_pages),
            (|u: &TagUsage| u.nonpaged_bytes) as fn(&TagUsage) -> u64,
        ),
        (
            "paged",
            vm.and_then(|v| v.paged_pool_max_pages.max(v.commit_limit_pages)),
            |u: &TagUsage| u.paged_bytes,
        ),
    ] {
        let (ceiling, what) = match max_pages.filter(|&m| m > 0) {
            Some(m) => (
                m.saturating_mul(0x1000)
                    .max(if pool == "nonpaged" { 0 } else { phys }),
                format!(
                    "the {pool} pool's maximum of {} bytes",
                    grouped(m.saturating_mul(0x1000))
                ),
            ),
            None if phys > 0 => (phys, format!("physical memory ({} bytes)", grouped(phys))),
            None => continue,
        };
        let sum: u128 = rows
            .iter()
            .filter(|u| tag::plausible(u.tag))
            .map(get)
            .filter(|&b| !negative(b))
            .map(u128::from)
            .sum();
        if sum > u128::from(ceiling) {
            return Some(format!(
                "its tags hold {} bytes of {pool} pool, more than {what}: the table is not what it claims",
                grouped(sum)
            ));
        }
    }
    None
}

pub fn owners(tg: u32, owners: &[Owner]) -> Finding {
    let name = tag::to_string(tg);
    if owners.is_empty() {
        return Finding {
            kind: "tag_owner",
            severity: Severity::Info,
            summary: format!("no loaded module's image contains tag {name}"),
            evidence: json!({"tag": name, "modules": []}),
        };
    }
    let list: Vec<String> = owners
        .iter()
        .map(|o| {
            let offs: Vec<String> = o
                .offsets
                .iter()
                .take(4)
                .map(|x| format!("+0x{x:x}"))
                .collect();
            format!("{} ({})", o.module, offs.join(", "))
        })
        .collect();
    Finding {
        kind: "tag_owner",
        severity: Severity::Medium,
        summary: format!("tag {name} is referenced by {}", list.join("; ")),
        evidence: json!({"tag": name, "modules": owners.iter().map(|o| json!({
            "module": o.module, "base": format!("0x{:x}", o.base),
            "offsets": o.offsets.iter().map(|x| format!("0x{x:x}")).collect::<Vec<_>>()})).collect::<Vec<_>>()}),
    }
}

pub fn bigpool_share(
    tg: u32,
    tracked_bytes: u64,
    big: &BigPool,
    t: &Thresholds,
) -> Option<Finding> {
    let live: Vec<_> = big
        .pages
        .iter()
        .filter(|p| p.tag == tg && !p.free)
        .collect();
    let bytes: u64 = live.iter().map(|p| p.bytes).sum();
    if tracked_bytes == 0 || (bytes as f64) < t.bigpool_share * tracked_bytes as f64 {
        return None;
    }
    let largest: Vec<Value> = {
        let mut v = live.clone();
        v.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.va.cmp(&b.va)));
        v.iter()
            .take(5)
            .map(|p| json!({"va": format!("0x{:x}", p.va), "bytes": p.bytes}))
            .collect()
    };
    Some(Finding {
        kind: "bigpool_dominates_tag",
        severity: Severity::Medium,
        summary: format!(
            "{} big-pool allocations hold {} bytes ({}) of tag {}, {:.0}% of its tracked bytes",
            grouped(live.len() as u64),
            grouped(bytes),
            mib(bytes),
            tag::to_string(tg),
            100.0 * bytes as f64 / tracked_bytes as f64
        ),
        evidence: json!({"tag": tag::to_string(tg), "entries": live.len(), "bytes": bytes,
                         "tracked_bytes": tracked_bytes, "largest": largest}),
    })
}

/// Tags whose outstanding tracked allocations differ from what the scan and the big-pool table
/// found. Only meaningful when the pool layout was recognised (some pool pages were found).
pub fn disagreement(rows: &[TagUsage], scan: &PoolScan, big: Option<&BigPool>) -> Option<Finding> {
    // Session pool has its own tracker tables (ExpSessionPoolTrackTable), so only the global
    // pools are compared with the global table.
    let global = |p: Pool| matches!(p, Pool::NonPaged | Pool::Paged);
    let mut found: HashMap<u32, u64> = HashMap::new();
    for ((tg, pool), c) in &scan.tags {
        if global(*pool) {
            *found.entry(*tg).or_default() += c.allocated;
        }
    }
    for p in big
        .map_or(&[][..], |b| &b.pages[..])
        .iter()
        .filter(|p| !p.free && global(p.pool))
    {
        *found.entry(p.tag).or_default() += 1;
    }
    let mut tracked: HashMap<u32, u64> = HashMap::new();
    for u in rows {
        *tracked.entry(u.tag).or_default() += u.nonpaged_in_use() + u.paged_in_use();
    }
    if scan.pool_pages == 0 {
        let tracked_total: u64 = tracked.values().sum();
        return (tracked_total > 0).then(|| Finding {
            kind: "pool_layout_not_recognised",
            severity: Severity::Medium,
            summary: format!(
                "the tagging database tracks {tracked_total} outstanding allocations but the page scan recognised no pool page"
            ),
            evidence: json!({"tracked_allocations": tracked_total, "pages_scanned": scan.pages_scanned,
                             "rejected_pages": scan.rejected_pages}),
        });
    }
    let mut diffs: Vec<(u32, u64, u64)> = tracked
        .keys()
        .chain(found.keys())
        .copied()
        .collect::<std::collections::BTreeSet<u32>>()
        .into_iter()
        .map(|t| {
            (
                t,
                tracked.get(&t).copied().unwrap_or(0),
                found.get(&t).copied().unwrap_or(0),
            )
        })
        .filter(|(_, a, b)| a != b)
        .collect();
    if diffs.is_empty() {
        return None;
    }
    diffs.sort_by_key(|(t, a, b)| (std::cmp::Reverse(a.abs_diff(*b)), *t));
    let examples: Vec<Value> = diffs
        .iter()
        .take(10)
        .map(|(t, a, b)| json!({"tag": tag::to_string(*t), "tracked": a, "found": b}))
        .collect();
    Some(Finding {
        kind: "tracker_scan_disagreement",
        severity: Severity::Low,
        summary: format!(
            "{} tags: outstanding allocations in the tagging database differ from the blocks found (largest: {} tracked {} found {})",
            diffs.len(),
            tag::to_string(diffs[0].0),
            diffs[0].1,
            diffs[0].2
        ),
        evidence: json!({"tags": examples, "rejected_pages": scan.rejected_pages,
            "note": "pool pages absent from the dump, corruption, or a layout the scanner did not recognise"}),
    })
}

fn hex(v: u64) -> String {
    format!("0x{v:x}")
}

/// `module+0xoffset`, else the address in hex.
fn sym(modules: &Modules, a: u64) -> String {
    modules.symbolize(a).unwrap_or_else(|| hex(a))
}

fn pool_name(p: u8) -> &'static str {
    match p {
        0 => Pool::NonPaged.name(),
        1 => Pool::Paged.name(),
        2 => Pool::SessionNonPaged.name(),
        3 => Pool::SessionPaged.name(),
        _ => "unknown",
    }
}

/// Per loaded verified driver and pool: its outstanding tracked allocations, grouped by
/// allocation site (the pool log's stack), the largest site first.
pub fn verifier_leaks(v: &Verifier, modules: &Modules) -> Vec<Finding> {
    let t = &v.tracked;
    let mut out = Vec::new();
    // Rows of each (driver, pool), in one pass; drivers in list order, pools ascending.
    let mut by_group: HashMap<(u32, u8), Vec<usize>, FxBuild> = HashMap::default();
    for r in 0..t.len() {
        by_group
            .entry((t.driver[r], t.pool[r]))
            .or_default()
            .push(r);
    }
    let mut groups: Vec<((u32, u8), Vec<usize>)> = by_group.into_iter().collect();
    groups.sort_unstable_by_key(|g| g.0);
    let records = if v.records.len() == t.len() {
        std::borrow::Cow::Borrowed(&v.records[..])
    } else {
        std::borrow::Cow::Owned(
            v.log
                .as_ref()
                .map(|l| tracked::allocation_records(t, l))
                .unwrap_or_default(),
        )
    };
    for ((i, p), rows) in groups {
        let Some(d) = v.drivers.get(i as usize) else {
            continue;
        };
        if d.state != DriverState::Loaded {
            continue;
        }
        let n = rows.len();
        let bytes: u64 = rows.iter().map(|&r| t.bytes[r]).sum();
        // Sites from the pool log; when it has no record of these blocks, by caller alone.
        let mut sites = tracked::sites_of(t, v.log.as_ref(), &records, rows.iter().copied());
        if sites.is_empty() {
            sites = tracked::sites_of(t, None, &[], rows.iter().copied());
        }
        let Some(top) = sites.first() else { continue };
        let mut by_tag: HashMap<u32, u64, FxBuild> = HashMap::default();
        for &r in &rows {
            *by_tag.entry(t.tag[r]).or_default() += t.bytes[r];
        }
        let mut tags: Vec<(u32, u64)> = by_tag.into_iter().collect();
        tags.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let tag_names: Vec<String> = tags.iter().map(|(tg, _)| tag::to_string(*tg)).collect();
        let what = if p == POOL_UNKNOWN {
            "tracked allocations (pool unknown)".to_string()
        } else {
            format!("tracked {} allocations", pool_name(p).replace('_', " "))
        };
        // The stack down to the driver's call site (at most 4 frames), as WinDbg reads it.
        let upto = top
            .stack
            .iter()
            .position(|&f| f == top.caller)
            .map_or(1, |k| k + 1)
            .min(4);
        let mut frames: Vec<String> = top
            .stack
            .iter()
            .take(upto)
            .map(|&f| sym(modules, f))
            .collect();
        if top.stack.len() > upto {
            frames.push("...".into());
        }
        let stack_part = if frames.is_empty() {
            String::new()
        } else {
            format!(" (stack: {})", frames.join(", "))
        };
        out.push(Finding {
            kind: "verifier_leak",
            severity: Severity::Medium,
            summary: format!(
                "{} holds {} {what}, {} bytes, from {} call sites; top site {}{stack_part}; tag {}",
                d.name,
                grouped(n as u64),
                grouped(bytes),
                sites.len(),
                sym(modules, top.caller),
                tag_names
                    .iter()
                    .take(3)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            evidence: json!({
                "driver": d.name, "pool": pool_name(p), "allocations": n, "bytes": bytes,
                "sites": sites.len(), "tags": tag_names,
                "top_site": {
                    "caller": hex(top.caller), "caller_symbol": modules.symbolize(top.caller),
                    "stack": top.stack.iter().map(|&f| hex(f)).collect::<Vec<_>>(),
                    "stack_symbols": top.stack.iter().map(|&f| sym(modules, f)).collect::<Vec<_>>(),
                    "outstanding_bytes": top.outstanding_bytes,
                    "outstanding_allocs": top.outstanding_allocs,
                },
            }),
        });
    }
    out
}

/// IRP-log records made with special kernel APCs disabled, by the module of the first frame
/// outside the kernel: I/O issued from inside a guarded region.
pub fn apc_disabled_io(v: &Verifier, modules: &Modules) -> Vec<Finding> {
    let Some(log) = &v.irp_log else {
        return Vec::new();
    };
    // module → (records, IRPs in first-seen order, first frame outside nt), and the IRPs seen
    let mut groups: Vec<(String, u64, Vec<u64>, Option<u64>)> = Vec::new();
    let mut seen: Vec<HashSet<u64>> = Vec::new();
    for i in (0..log.len()).filter(|&i| log.cols.special_apc_disable[i] != 0) {
        let irp = log.cols.irp[i];
        let frame = log
            .stack(i)
            .iter()
            .copied()
            .find(|&f| modules.containing(f).map(|(i, _)| i) != Some(0));
        let name = match frame {
            Some(f) => modules.containing(f).map(|(_, m)| m.name.as_str()),
            None => modules.list.first().map(|m| m.name.as_str()),
        }
        .unwrap_or("unknown");
        let k = match groups.iter().position(|g| g.0 == name) {
            Some(k) => k,
            None => {
                groups.push((name.to_string(), 0, Vec::new(), frame));
                seen.push(HashSet::new());
                groups.len() - 1
            }
        };
        let g = &mut groups[k];
        g.1 += 1;
        if seen[k].insert(irp) {
            g.2.push(irp);
        }
    }
    groups.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    groups
        .into_iter()
        .map(|(module, n, irps, frame)| Finding {
            kind: "apc_disabled_io",
            severity: Severity::Medium,
            summary: format!(
                "{module}: {n} logged IRP calls on {} IRPs ran with special kernel APCs disabled (SpecialApcDisable != 0){}",
                irps.len(),
                frame.map_or_else(String::new, |f| format!("; first frame {}", sym(modules, f)))
            ),
            evidence: json!({
                "module": module, "entries": n,
                "irps": irps.iter().take(32).map(|&i| hex(i)).collect::<Vec<_>>(),
                "frame": frame.map(hex), "frame_symbol": frame.and_then(|f| modules.symbolize(f)),
            }),
        })
        .collect()
}
