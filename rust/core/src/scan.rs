//! One pass over a dump: every pool analysis, the findings, and where each figure came from,
//! as the JSON document that `poolscope scan --json` prints (minus the `dump` header summary,
//! which the surfaces add). Keys and shapes here are a contract: add, never rename.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::dump::Dump;
use crate::error::{Error, Result};
use crate::findings::{self, Finding, Thresholds};
use crate::memory::ReverseMap;
use crate::pool::globals::{Kernel, Sources};
use crate::pool::layout::Allocator;
use crate::pool::owners::{self, Owner};
use crate::pool::{
    tag, BigPool, Keep, MemorySummary, PoolLayout, PoolScan, SortBy, TagUsage, TrackerTable,
};

#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// Rows of `poolused` kept (all when None) and tags whose owners are searched.
    pub top: Option<usize>,
    pub owner_tags: usize,
    pub thresholds: Thresholds,
    pub keep: Keep,
}

impl Default for ScanOptions {
    fn default() -> Self {
        Self {
            top: None,
            owner_tags: 5,
            thresholds: Thresholds::default(),
            keep: Keep::None,
        }
    }
}

/// Every analysis's result (None when it could not run; the reason is in `unavailable`).
#[derive(Debug, Default)]
pub struct Analysis {
    pub layout: Option<PoolLayout>,
    pub memory: Option<MemorySummary>,
    pub tracker: Option<TrackerTable>,
    pub pool_scan: Option<PoolScan>,
    pub bigpool: Option<BigPool>,
    pub owners: Vec<(u32, Vec<Owner>)>,
    pub findings: Vec<Finding>,
    pub sources: Sources,
    pub unavailable: BTreeMap<String, String>,
}

fn hex(v: u64) -> String {
    format!("0x{v:x}")
}

pub fn analyze(dump: &Dump, opts: &ScanOptions) -> Analysis {
    let mut a = Analysis::default();
    let space = dump.space();
    let mut tr = space.translator();
    let missing = |a: &mut Analysis, what: &str, e: Error| {
        a.unavailable.insert(what.into(), e.to_string());
    };
    let layout = match pool_layout(dump, &mut a.sources) {
        Ok(l) => Some(l),
        Err(e) => {
            missing(&mut a, "pool_layout", e);
            None
        }
    };
    a.sources
        .insert("layout".into(), format!("profile {}", dump.profile.name));
    match &dump.kdbg {
        Some(k) => {
            a.memory = Some(MemorySummary::from_kdbg(k));
            a.sources.insert("memory".into(), "KDBG variables".into());
            if let Some(l) = &layout {
                let kernel = Kernel {
                    kdbg: k,
                    symbols: dump.symbols.as_ref(),
                    layout: l,
                };
                match TrackerTable::read(&mut tr, kernel, &mut a.sources) {
                    Ok(t) => a.tracker = Some(t),
                    Err(e) => missing(&mut a, "poolused", e),
                }
                match BigPool::read(&mut tr, kernel, &mut a.sources) {
                    Ok(b) => a.bigpool = Some(b),
                    Err(e) => missing(&mut a, "bigpool", e),
                }
            }
        }
        None => {
            for s in ["memory", "poolused", "bigpool"] {
                a.unavailable.insert(
                    s.into(),
                    "no KDBG: the kernel's variables cannot be located".into(),
                );
            }
        }
    }
    if let Some(l) = &layout {
        match l.allocator {
            Allocator::Legacy => {
                let rmap = ReverseMap::build(&space);
                a.pool_scan = Some(crate::pool::pages::scan(
                    &dump.physical(),
                    &rmap,
                    l,
                    &opts.keep,
                ));
                a.sources.insert(
                    "pool_scan".into(),
                    "POOL_HEADER page chains (legacy allocator)".into(),
                );
            }
            Allocator::SegmentHeap => {
                a.unavailable.insert(
                    "pool_scan".into(),
                    "segment-heap pool (build 18362+): the page-chain scan does not apply and the tag scan is not implemented yet".into(),
                );
            }
        }
    }
    a.layout = layout;

    // Findings, in the order an engineer reads them: memory, dominant tags, owners, big pool,
    // consistency.
    let t = &opts.thresholds;
    if let Some(vm) = &a.memory {
        a.findings.extend(findings::memory(vm));
    }
    let rows = a
        .tracker
        .as_ref()
        .map(|t| t.poolused(SortBy::NonPagedBytes, None))
        .unwrap_or_default();
    let dominant = findings::dominant_tags(&rows, t);
    a.findings
        .extend(findings::dominant(&rows, a.memory.as_ref(), t));
    let mut owner_tags: Vec<u32> = dominant.iter().map(|d| d.0).collect();
    for r in rows.iter().take(opts.owner_tags) {
        if !owner_tags.contains(&r.tag) {
            owner_tags.push(r.tag);
        }
    }
    a.owners = owners::find(&space, &dump.modules, &owner_tags);
    for (tg, _, _, _) in &dominant {
        if let Some((_, o)) = a.owners.iter().find(|(t2, _)| t2 == tg) {
            a.findings.push(findings::owners(*tg, o));
        }
        if let (Some(big), Some(u)) = (&a.bigpool, rows.iter().find(|u| u.tag == *tg)) {
            a.findings.extend(findings::bigpool_share(
                *tg,
                u.nonpaged_bytes + u.paged_bytes,
                big,
                t,
            ));
        }
    }
    if let Some(scan) = &a.pool_scan {
        a.findings
            .extend(findings::disagreement(&rows, scan, a.bigpool.as_ref()));
    }
    a
}

/// `poolused` rows.
pub fn usage_json(u: &TagUsage) -> Value {
    json!({
        "tag": tag::to_string(u.tag),
        "nonpaged_allocs": u.nonpaged_allocs, "nonpaged_frees": u.nonpaged_frees,
        "nonpaged_in_use": u.nonpaged_in_use(), "nonpaged_bytes": u.nonpaged_bytes,
        "paged_allocs": u.paged_allocs, "paged_frees": u.paged_frees,
        "paged_in_use": u.paged_in_use(), "paged_bytes": u.paged_bytes,
    })
}

pub fn memory_json(m: &MemorySummary) -> Value {
    json!({
        "physical_pages": m.physical_pages, "available_pages": m.available_pages,
        "resident_available_pages": m.resident_available_pages,
        "nonpaged_pool_pages": m.nonpaged_pool_pages, "nonpaged_pool_max_pages": m.nonpaged_pool_max_pages,
        "paged_pool_pages": m.paged_pool_pages, "paged_pool_max_pages": m.paged_pool_max_pages,
        "commit_pages": m.commit_pages, "commit_limit_pages": m.commit_limit_pages,
        "peak_commit_pages": m.peak_commit_pages,
        "excessive_nonpaged": m.excessive_nonpaged, "excessive_paged": m.excessive_paged, "rule": m.rule,
    })
}

pub fn pool_scan_json(s: &PoolScan, layout: Option<&PoolLayout>) -> Value {
    let mut tags: Vec<_> = s.tags.iter().collect();
    tags.sort_by(|a, b| {
        b.1.allocated_bytes
            .cmp(&a.1.allocated_bytes)
            .then(a.0.cmp(b.0))
    });
    json!({
        "pages_scanned": s.pages_scanned, "pool_pages": s.pool_pages, "rejected_pages": s.rejected_pages,
        "layouts": layout.map(|l| vec![l.layout_name()]).unwrap_or_default(),
        "tags": tags.iter().map(|((t, p), c)| json!({
            "tag": tag::to_string(*t), "pool": p.name(), "allocated": c.allocated,
            "allocated_bytes": c.allocated_bytes, "free": c.free, "free_bytes": c.free_bytes,
        })).collect::<Vec<_>>(),
    })
}

pub fn bigpool_json(b: &BigPool) -> Value {
    Value::Array(b.pages.iter().map(|p| json!({
        "va": hex(p.va), "tag": tag::to_string(p.tag), "bytes": p.bytes, "pool": p.pool.name(), "free": p.free,
    })).collect())
}

pub fn owners_json(owners: &[(u32, Vec<Owner>)]) -> Value {
    let mut out = Map::new();
    for (t, os) in owners {
        out.insert(tag::to_string(*t), Value::Array(os.iter().map(|o| json!({
            "module": o.module, "base": hex(o.base), "offsets": o.offsets.iter().map(|x| hex(*x)).collect::<Vec<_>>(),
        })).collect()));
    }
    Value::Object(out)
}

impl Analysis {
    /// The report document (all sections; `dump` is added by the surfaces).
    pub fn to_json(&self, opts: &ScanOptions) -> Value {
        let rows = self
            .tracker
            .as_ref()
            .map(|t| t.poolused(SortBy::NonPagedBytes, opts.top))
            .unwrap_or_default();
        json!({
            "memory": self.memory.as_ref().map_or(Value::Null, memory_json),
            "poolused": rows.iter().map(usage_json).collect::<Vec<_>>(),
            "pool_scan": self.pool_scan.as_ref().map_or(Value::Null, |s| pool_scan_json(s, self.layout.as_ref())),
            "bigpool": self.bigpool.as_ref().map_or(Value::Array(vec![]), bigpool_json),
            "tag_owners": owners_json(&self.owners),
            "findings": serde_json::to_value(&self.findings).unwrap_or(Value::Null),
            "sources": self.sources,
            "unavailable": self.unavailable,
        })
    }
}

/// The profile's pool layout, with a symbol table's structure layouts applied when given.
fn pool_layout(dump: &Dump, sources: &mut Sources) -> Result<PoolLayout> {
    let mut l = PoolLayout::from_profile(&dump.profile)?;
    if let Some(s) = &dump.symbols {
        l.apply_symbols(s, sources);
    }
    Ok(l)
}

fn need_kdbg(dump: &Dump) -> Result<&crate::kernel::Kdbg> {
    dump.kdbg.as_ref().ok_or_else(|| {
        Error::unsupported("no KDBG in this dump: the kernel's pool variables cannot be located")
    })
}

/// The tagging database alone (`!poolused`).
pub fn poolused(dump: &Dump, sort: SortBy, top: Option<usize>) -> Result<(Vec<TagUsage>, Sources)> {
    let mut sources = Sources::new();
    let layout = pool_layout(dump, &mut sources)?;
    let kernel = Kernel {
        kdbg: need_kdbg(dump)?,
        symbols: dump.symbols.as_ref(),
        layout: &layout,
    };
    let t = TrackerTable::read(&mut dump.space().translator(), kernel, &mut sources)?;
    Ok((t.poolused(sort, top), sources))
}

/// The pool page scan alone (`!poolfind` over every page).
pub fn pool_scan(dump: &Dump, keep: &Keep) -> Result<(PoolScan, PoolLayout)> {
    let layout = pool_layout(dump, &mut Sources::new())?;
    if layout.allocator != Allocator::Legacy {
        return Err(Error::unsupported(
            "segment-heap pool (build 18362+): the page-chain scan does not apply and the tag scan is not implemented yet",
        ));
    }
    let space = dump.space();
    let rmap = ReverseMap::build(&space);
    Ok((
        crate::pool::pages::scan(&dump.physical(), &rmap, &layout, keep),
        layout,
    ))
}

/// The big-pool table alone.
pub fn big_pool(dump: &Dump) -> Result<BigPool> {
    let mut sources = Sources::new();
    let layout = pool_layout(dump, &mut sources)?;
    let kernel = Kernel {
        kdbg: need_kdbg(dump)?,
        symbols: dump.symbols.as_ref(),
        layout: &layout,
    };
    BigPool::read(&mut dump.space().translator(), kernel, &mut sources)
}

/// The memory summary alone.
pub fn memory_summary(dump: &Dump) -> Result<MemorySummary> {
    Ok(MemorySummary::from_kdbg(need_kdbg(dump)?))
}

/// Which modules hold each tag's bytes.
pub fn tag_owners(dump: &Dump, tags: &[u32]) -> Vec<(u32, Vec<Owner>)> {
    owners::find(&dump.space(), &dump.modules, tags)
}
