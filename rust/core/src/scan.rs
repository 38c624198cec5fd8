//! One pass over a dump: every pool analysis, the findings, and where each figure came from,
//! as the JSON document that `poolscope scan --json` prints (minus the `dump` header summary,
//! which the surfaces add). Keys and shapes here are a contract: add, never rename.

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Map, Value};

use crate::container::Truncation;
use crate::dump::Dump;
use crate::error::{Error, Result};
use crate::findings::{self, Finding, TagSource, Thresholds};
use crate::memory::ReverseMap;
use crate::pool::globals::{Kernel, Sources};
use crate::pool::layout::Allocator;
use crate::pool::owners::{self, Owner};
use crate::pool::session;
use crate::pool::{
    tag, BigPool, Blocks, Keep, MemorySummary, PoolLayout, PoolScan, SortBy, TagUsage, TrackerTable,
};
use crate::verifier::{
    self, Context, PoolBlock, TraceLog, Verifier, VerifierLayout, HEURISTIC_TAGS, POOL_UNKNOWN,
};

#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// Rows of `poolused` kept (all when None) and tags whose owners are searched.
    pub top: Option<usize>,
    pub owner_tags: usize,
    pub thresholds: Thresholds,
    pub keep: Keep,
    /// Rows of the verifier's tracked allocations and of each log kept in the report (all
    /// when None); the totals are always reported.
    pub verifier_rows: Option<usize>,
}

impl Default for ScanOptions {
    fn default() -> Self {
        Self {
            top: None,
            owner_tags: 5,
            thresholds: Thresholds::default(),
            keep: Keep::None,
            verifier_rows: Some(1000),
        }
    }
}

/// Every analysis's result (None when it could not run; the reason is in `unavailable`).
#[derive(Debug, Default)]
pub struct Analysis {
    pub layout: Option<PoolLayout>,
    pub memory: Option<MemorySummary>,
    pub tracker: Option<TrackerTable>,
    /// The session pool's tagging database (`!poolused 8`).
    pub session_tracker: Option<TrackerTable>,
    pub pool_scan: Option<PoolScan>,
    pub bigpool: Option<BigPool>,
    pub owners: Vec<(u32, Vec<Owner>)>,
    pub verifier: Option<Verifier>,
    pub findings: Vec<Finding>,
    pub sources: Sources,
    pub unavailable: BTreeMap<String, String>,
    /// Set when the dump file is cut short: every analysis saw only the pages present.
    pub truncated: Option<Truncation>,
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
        .insert("layout".into(), dump.profile_choice.clone());
    match &dump.kdbg {
        Some(k) => {
            a.memory = Some(MemorySummary::from_kdbg(k));
            a.sources.insert("memory".into(), "KDBG variables".into());
            if let Some(l) = &layout {
                let kernel = kernel_of(dump, k, l);
                // The big-pool table first: it holds the tracker table's own allocation, whose
                // size the tracker's entry count is checked against.
                match BigPool::read(&mut tr, kernel, &mut a.sources) {
                    Ok(b) => a.bigpool = Some(b),
                    Err(e) => missing(&mut a, "bigpool", e),
                }
                match TrackerTable::read_with(&mut tr, kernel, a.bigpool.as_ref(), &mut a.sources) {
                    Ok(t) => {
                        let rows = t.poolused(SortBy::NonPagedBytes, None);
                        let present = dump.container.pages.page_count();
                        match findings::implausible_tracker(&rows, a.memory.as_ref(), present) {
                            None => a.tracker = Some(t),
                            Some(why) => {
                                a.unavailable
                                    .insert("poolused".into(), format!("refused: {why}"));
                            }
                        }
                    }
                    Err(e) => missing(&mut a, "poolused", e),
                }
                match session::read(&mut tr, kernel, &mut a.sources) {
                    Ok(t) => a.session_tracker = Some(t),
                    Err(e) => missing(&mut a, "poolused_session", e),
                }
            }
        }
        None => {
            for s in ["memory", "poolused", "poolused_session", "bigpool"] {
                a.unavailable.insert(
                    s.into(),
                    "no KDBG: the kernel's variables cannot be located".into(),
                );
            }
        }
    }
    // Verifier statistics first: without symbols for its driver lists, the verifier's own pool
    // blocks are found by the page scan below, so their tags ride along with it.
    let mut vsources = Sources::new();
    let vstats = verifier_layout(dump, &mut a.sources).and_then(|vl| {
        let ctx = context(dump, &vl, layout.as_ref(), None, Err(String::new()));
        let stats = verifier::read_stats(&mut tr, &ctx, &mut vsources)?;
        let need = ctx.needs_blocks();
        Ok((vl, stats, need))
    });
    let want_blocks = matches!(&vstats, Ok((_, s, need)) if s.enabled() && *need);
    let mut blocks: std::result::Result<Vec<PoolBlock>, String> = Err("no pool scan ran".into());
    if let Some(l) = &layout {
        let (keep, added) = if want_blocks {
            with_heuristic_tags(&opts.keep)
        } else {
            (opts.keep.clone(), Vec::new())
        };
        match page_scan(dump, l, &keep, &mut a.sources) {
            Ok(mut scan) => {
                if want_blocks {
                    blocks = Ok(verifier::blocks_of(&scan.blocks));
                    drop_rows(&mut scan.blocks, |t| added.contains(&t));
                }
                a.pool_scan = Some(scan);
            }
            Err(e) => {
                blocks = Err(e.to_string());
                missing(&mut a, "pool_scan", e);
            }
        }
    }
    match vstats {
        Ok((vl, stats, _)) => {
            let ctx = context(
                dump,
                &vl,
                layout.as_ref(),
                a.bigpool.as_ref(),
                blocks.as_deref().map_err(Clone::clone),
            );
            let v = verifier::read(&mut tr, &ctx, stats, vsources);
            for (k, why) in &v.unavailable {
                a.unavailable.insert(format!("verifier_{k}"), why.clone());
            }
            a.sources
                .extend(v.sources.iter().map(|(k, s)| (k.clone(), s.clone())));
            a.verifier = Some(v);
        }
        Err(e) => missing(&mut a, "verifier", e),
    }
    a.layout = layout;

    // Findings, in the order an engineer reads them: memory, dominant tags, owners, big pool,
    // consistency.
    let t = &opts.thresholds;
    if let Some(vm) = &a.memory {
        a.findings.extend(findings::memory(vm));
    }
    // Per-tag figures: the tagging database, or, when it is unavailable or refused, what the
    // page scan and the big-pool table found (each finding names its source).
    let (rows, source) = match &a.tracker {
        Some(tt) => (tt.poolused(SortBy::NonPagedBytes, None), TagSource::Tracker),
        None => {
            let phys = a
                .memory
                .as_ref()
                .and_then(|m| m.physical_pages)
                .unwrap_or(0)
                .max(dump.container.pages.page_count())
                .saturating_mul(0x1000);
            (
                findings::found_usage(a.pool_scan.as_ref(), a.bigpool.as_ref(), phys),
                TagSource::Found,
            )
        }
    };
    let dominant = findings::dominant_tags(&rows, t);
    a.findings
        .extend(findings::dominant(&rows, a.memory.as_ref(), t, source));
    let mut owner_tags: Vec<u32> = dominant.iter().map(|d| d.0).collect();
    for r in rows.iter().take(opts.owner_tags) {
        if !owner_tags.contains(&r.tag) {
            owner_tags.push(r.tag);
        }
    }
    a.owners = owners::find(&space, &dump.modules, &owner_tags);
    for (tg, _, _, _) in &dominant {
        if let Some((_, o)) = a.owners.iter().find(|(t2, _)| t2 == tg) {
            let mut f = findings::owners(*tg, o);
            f.evidence["source"] = Value::String(source.name().into());
            a.findings.push(f);
        }
        if let (Some(big), Some(u)) = (&a.bigpool, rows.iter().find(|u| u.tag == *tg)) {
            a.findings.extend(findings::bigpool_share(
                *tg,
                u.nonpaged_bytes.saturating_add(u.paged_bytes),
                big,
                t,
            ));
        }
    }
    // Without the tagging database there is nothing to disagree with.
    if let (Some(scan), Some(_)) = (&a.pool_scan, &a.tracker) {
        a.findings
            .extend(findings::disagreement(&rows, scan, a.bigpool.as_ref()));
    }
    if let Some(v) = &a.verifier {
        a.findings
            .extend(findings::verifier_leaks(v, &dump.modules));
        a.findings
            .extend(findings::apc_disabled_io(v, &dump.modules));
    }
    a.truncated = dump.container.truncated;
    if let Some(c) = &a.truncated {
        // Every finding rests on the pages present: say how many were not.
        for f in &mut a.findings {
            if let Value::Object(m) = &mut f.evidence {
                m.insert("pages_missing".into(), json!(c.pages_missing));
            }
        }
        a.findings.insert(0, findings::truncated(c));
    }
    a
}

/// The pool page scan for the layout's allocator: page chains (legacy) or the VS/LFH
/// subsegment tag scan (segment heap). Says in `sources` which one ran and where keys came from.
fn page_scan(dump: &Dump, l: &PoolLayout, keep: &Keep, sources: &mut Sources) -> Result<PoolScan> {
    let space = dump.space();
    let rmap = ReverseMap::build(&space);
    match (l.allocator, &l.segment) {
        (Allocator::Legacy, _) => {
            sources.insert(
                "pool_scan".into(),
                "POOL_HEADER page chains (legacy allocator)".into(),
            );
            Ok(crate::pool::pages::scan(&dump.physical(), &rmap, l, keep))
        }
        (Allocator::SegmentHeap, Some(seg)) => {
            let kernel = dump.kdbg.as_ref().map(|kdbg| kernel_of(dump, kdbg, l));
            sources.insert(
                "pool_scan".into(),
                "segment heap: POOL_HEADERs of VS chunks and LFH blocks inside decoded subsegments"
                    .into(),
            );
            Ok(crate::pool::segheap::scan(
                &space, &rmap, l, seg, kernel, keep, sources,
            ))
        }
        (Allocator::SegmentHeap, None) => Err(Error::unsupported(
            "segment-heap pool: the profile has no segment_heap layout",
        )),
    }
}

/// The scan's keep set plus the verifier's heuristic tags, and which tags were added.
fn with_heuristic_tags(k: &Keep) -> (Keep, Vec<u32>) {
    match k {
        Keep::All => (Keep::All, Vec::new()),
        Keep::None => (Keep::Tags(HEURISTIC_TAGS.to_vec()), HEURISTIC_TAGS.to_vec()),
        Keep::Tags(ts) => {
            let added: Vec<u32> = HEURISTIC_TAGS
                .iter()
                .copied()
                .filter(|t| !ts.contains(t))
                .collect();
            (Keep::Tags([&ts[..], &added[..]].concat()), added)
        }
    }
}

/// Drop kept rows whose tag `drop` names (rows kept only for the verifier's heuristics).
fn drop_rows(b: &mut Blocks, drop: impl Fn(u32) -> bool) {
    let keep: Vec<bool> = b.tag.iter().map(|&t| !drop(t)).collect();
    fn retain<T>(v: &mut Vec<T>, keep: &[bool]) {
        let mut k = keep.iter();
        v.retain(|_| k.next().copied().unwrap_or(true));
    }
    retain(&mut b.pa, &keep);
    retain(&mut b.va, &keep);
    retain(&mut b.tag, &keep);
    retain(&mut b.size, &keep);
    retain(&mut b.previous_size, &keep);
    retain(&mut b.pool, &keep);
    retain(&mut b.allocated, &keep);
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
        "rejected_reasons": &s.rejected_why,
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
        let session_rows = self
            .session_tracker
            .as_ref()
            .map(|t| t.poolused(SortBy::NonPagedBytes, opts.top))
            .unwrap_or_default();
        json!({
            "memory": self.memory.as_ref().map_or(Value::Null, memory_json),
            "poolused": rows.iter().map(usage_json).collect::<Vec<_>>(),
            "poolused_session": session_rows.iter().map(usage_json).collect::<Vec<_>>(),
            "pool_scan": self.pool_scan.as_ref().map_or(Value::Null, |s| {
                // the pages a truncated file lacks were not scanned: say how many
                let mut doc = pool_scan_json(s, self.layout.as_ref());
                doc["pages_missing"] = json!(self.truncated.map_or(0, |c| c.pages_missing));
                doc
            }),
            "bigpool": self.bigpool.as_ref().map_or(Value::Array(vec![]), bigpool_json),
            "tag_owners": owners_json(&self.owners),
            "verifier": match &self.verifier {
                Some(v) => verifier_json(v, opts.verifier_rows),
                None => verifier_empty_json("unavailable"),
            },
            "findings": serde_json::to_value(&self.findings).unwrap_or(Value::Null),
            "sources": self.sources,
            "unavailable": self.unavailable,
            "coverage": match &self.truncated {
                None => json!({"truncated": false, "pages_missing": 0}),
                Some(c) => json!({
                    "truncated": true, "pages_expected": c.pages_expected,
                    "pages_present": c.pages_expected - c.pages_missing,
                    "pages_missing": c.pages_missing,
                    "note": "every section was computed from the pages present; a table or block on a missing page reads as not present",
                }),
            },
        })
    }
}

/// The profile's pool layout, with a symbol table's structure layouts applied when given.
fn pool_layout(dump: &Dump, sources: &mut Sources) -> Result<PoolLayout> {
    let mut l = PoolLayout::from_profile(&dump.profile)?;
    // Which layout each figure is read with (symbols replace these below when they can).
    let name = &dump.profile.name;
    for (ty, size) in [
        ("_POOL_TRACKER_TABLE", l.tracker.size),
        ("_POOL_TRACKER_BIG_PAGES", l.big_page.size),
    ] {
        sources.insert(ty.into(), format!("profile {name}: {size:#x}-byte entries"));
    }
    sources.insert(
        "pool_allocator".into(),
        format!("profile {name}: {}", l.layout_name()),
    );
    if let Some(s) = &dump.symbols {
        l.apply_symbols(s, sources);
    }
    Ok(l)
}

/// Where the kernel's variables are found: KDBG, the dump's symbols, the pool layout.
fn kernel_of<'a>(
    dump: &'a Dump,
    kdbg: &'a crate::kernel::Kdbg,
    layout: &'a PoolLayout,
) -> Kernel<'a> {
    Kernel {
        kdbg,
        symbols: dump.symbols.as_ref(),
        layout,
        processors: dump.header().number_processors,
        tracker_entries: None,
    }
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
    let kernel = kernel_of(dump, need_kdbg(dump)?, &layout);
    let mut tr = dump.space().translator();
    // The table's own big-pool allocation bounds its size (when the table can be read).
    let big = BigPool::read(&mut tr, kernel, &mut Sources::new()).ok();
    let t = TrackerTable::read_with(&mut tr, kernel, big.as_ref(), &mut sources)?;
    Ok((t.poolused(sort, top), sources))
}

/// The session pool's tagging database alone (`!poolused 8`): rows with the keys of
/// [`poolused`]'s.
pub fn poolused_session(
    dump: &Dump,
    sort: SortBy,
    top: Option<usize>,
) -> Result<(Vec<TagUsage>, Sources)> {
    let mut sources = Sources::new();
    let layout = pool_layout(dump, &mut sources)?;
    let kernel = kernel_of(dump, need_kdbg(dump)?, &layout);
    let t = session::read(&mut dump.space().translator(), kernel, &mut sources)?;
    Ok((t.poolused(sort, top), sources))
}

/// The pool page scan alone (`!poolfind` over every page).
pub fn pool_scan(dump: &Dump, keep: &Keep) -> Result<(PoolScan, PoolLayout)> {
    let mut sources = Sources::new();
    let layout = pool_layout(dump, &mut sources)?;
    Ok((page_scan(dump, &layout, keep, &mut sources)?, layout))
}

/// The big-pool table alone.
pub fn big_pool(dump: &Dump) -> Result<BigPool> {
    let mut sources = Sources::new();
    let layout = pool_layout(dump, &mut sources)?;
    let kernel = kernel_of(dump, need_kdbg(dump)?, &layout);
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

/// The profile's verifier layout, with a symbol table's structure layouts applied when given.
fn verifier_layout(dump: &Dump, sources: &mut Sources) -> Result<VerifierLayout> {
    let mut l = VerifierLayout::from_profile(&dump.profile)?;
    if let Some(s) = &dump.symbols {
        l.apply_symbols(s, sources);
    }
    Ok(l)
}

fn context<'a>(
    dump: &'a Dump,
    layout: &'a VerifierLayout,
    pool: Option<&'a PoolLayout>,
    bigpool: Option<&'a BigPool>,
    blocks: std::result::Result<&'a [PoolBlock], String>,
) -> Context<'a> {
    Context {
        layout,
        kdbg: dump.kdbg.as_ref(),
        symbols: dump.symbols.as_ref(),
        kernel_base: dump.kernel_base(),
        modules: &dump.modules,
        pool,
        bigpool,
        blocks,
    }
}

/// Driver Verifier alone (`!verifier 3 [driver]`, `!verifier 80 [address]`, `!verifier 100
/// [irp]`): `driver` keeps one driver's rows, `address` the log records that hold it and the
/// IRP records of that IRP. Not enabled is a result (Level 0), not an error; an error means
/// `MmVerifierData` itself could not be read.
pub fn verifier(dump: &Dump, driver: Option<&str>, address: Option<u64>) -> Result<Verifier> {
    let mut sources = Sources::new();
    let vl = verifier_layout(dump, &mut sources)?;
    let pool = pool_layout(dump, &mut sources).ok();
    let space = dump.space();
    let mut tr = space.translator();
    let ctx = context(
        dump,
        &vl,
        pool.as_ref(),
        None,
        Err("no pool scan ran".into()),
    );
    let stats = verifier::read_stats(&mut tr, &ctx, &mut sources)?;
    if !stats.enabled() {
        return Ok(verifier::read(&mut tr, &ctx, stats, sources));
    }
    let bigpool = match (&pool, &dump.kdbg) {
        (Some(l), Some(k)) => {
            let kernel = kernel_of(dump, k, l);
            BigPool::read(&mut tr, kernel, &mut sources).ok()
        }
        _ => None,
    };
    let blocks: std::result::Result<Vec<PoolBlock>, String> = if !ctx.needs_blocks() {
        Err("symbols name the driver lists".into())
    } else {
        match &pool {
            Some(l) => {
                let keep = Keep::Tags(HEURISTIC_TAGS.to_vec());
                page_scan(dump, l, &keep, &mut Sources::new())
                    .map(|scan| verifier::blocks_of(&scan.blocks))
                    .map_err(|e| e.to_string())
            }
            None => Err("the profile has no pool layout".into()),
        }
    };
    let ctx = Context {
        bigpool: bigpool.as_ref(),
        blocks: blocks.as_deref().map_err(Clone::clone),
        ..ctx
    };
    let mut v = verifier::read(&mut tr, &ctx, stats, sources);
    v.select(driver, address);
    Ok(v)
}

fn hex_opt(v: Option<u64>) -> Value {
    v.map_or(Value::Null, |x| Value::String(hex(x)))
}

/// `module+0xoffset` of addresses, remembered (rows repeat their callers and frames).
struct Names<'a> {
    v: &'a Verifier,
    known: HashMap<u64, Option<String>>,
}

impl Names<'_> {
    fn get(&mut self, a: u64) -> Option<String> {
        let v = self.v;
        self.known.entry(a).or_insert_with(|| v.symbol(a)).clone()
    }

    /// Frames in hex, and as `module+0xoffset` (hex where no module holds the frame).
    fn stack(&mut self, stack: &[u64]) -> (Value, Value) {
        (
            stack.iter().map(|&f| hex(f)).collect(),
            stack
                .iter()
                .map(|&f| self.get(f).unwrap_or_else(|| hex(f)))
                .collect(),
        )
    }
}

fn pool_label(p: u8) -> &'static str {
    use crate::pool::Pool;
    [
        Pool::NonPaged,
        Pool::Paged,
        Pool::SessionNonPaged,
        Pool::SessionPaged,
    ]
    .into_iter()
    .find(|x| *x as u8 == p && p != POOL_UNKNOWN)
    .map_or("unknown", |x| x.name())
}

/// The report's `verifier` section when there is no verifier data to show.
pub fn verifier_empty_json(status: &str) -> Value {
    json!({
        "enabled": false, "status": status, "level": 0, "options": [], "stats": {},
        "drivers": [], "tracked": [], "tracked_total": 0, "log": [], "log_total": 0,
        "log_info": null, "irp_log": [], "irp_log_total": 0, "irp_log_info": null,
        "sites": [], "notes": [],
    })
}

/// The report's `verifier` section; `limit` caps the tracked and log rows (totals are kept).
pub fn verifier_json(v: &Verifier, limit: Option<usize>) -> Value {
    if !v.enabled() {
        let mut doc = verifier_empty_json("not_enabled");
        doc["mm_verifier_data"] = Value::String(hex(v.stats.va));
        doc["stats"] = json!(v.stats.counters);
        return doc;
    }
    let cap = limit.unwrap_or(usize::MAX);
    let mut names = Names {
        v,
        known: HashMap::new(),
    };
    let name = |i: u32| v.drivers.get(i as usize).map_or("", |d| d.name.as_str());
    let drivers: Vec<Value> = v
        .drivers
        .iter()
        .map(|d| {
            let c = &d.counters;
            json!({
                "name": d.name, "state": d.state.name(), "loads": d.loads, "unloads": d.unloads,
                "base": hex_opt(d.base), "size": d.size, "entry": hex_opt(d.entry),
                "verified_data": hex_opt(d.verified_data),
                "current_nonpaged_allocs": c.current_nonpaged_allocs, "current_nonpaged_bytes": c.nonpaged_bytes,
                "current_paged_allocs": c.current_paged_allocs, "current_paged_bytes": c.paged_bytes,
                "peak_nonpaged_allocs": c.peak_nonpaged_allocs, "peak_nonpaged_bytes": c.peak_nonpaged_bytes,
                "peak_paged_allocs": c.peak_paged_allocs, "peak_paged_bytes": c.peak_paged_bytes,
                "tracker_pages": d.page_depth,
            })
        })
        .collect();
    let t = &v.tracked;
    let tracked: Vec<Value> = (0..t.len())
        .take(cap)
        .map(|i| {
            json!({
                "driver": name(t.driver[i]), "va": hex(t.va[i]), "bytes": t.bytes[i],
                "tag": tag::to_string(t.tag[i]), "caller": hex(t.caller[i]),
                "caller_symbol": names.get(t.caller[i]), "pool": pool_label(t.pool[i]),
            })
        })
        .collect();
    fn log_info<C>(l: &TraceLog<C>) -> Value {
        json!({"buffer": hex(l.buffer), "index": l.index, "length": l.length, "ordered": l.ordered,
               "entries": l.len(), "unreadable_slots": l.unreadable, "frames": l.frames})
    }
    let mut log: Vec<Value> = Vec::new();
    if let Some(l) = &v.log {
        for i in 0..l.len().min(cap) {
            let (stack, symbols) = names.stack(l.stack(i));
            let c = &l.cols;
            log.push(json!({
                "slot": l.slot[i], "va": hex(c.va[i]), "bytes": c.bytes[i],
                "thread": hex(c.thread[i]), "stack": stack, "stack_symbols": symbols,
            }));
        }
    }
    let mut irp_log: Vec<Value> = Vec::new();
    if let Some(l) = &v.irp_log {
        for i in 0..l.len().min(cap) {
            let (stack, symbols) = names.stack(l.stack(i));
            let c = &l.cols;
            irp_log.push(json!({
                "slot": l.slot[i], "irp": hex(c.irp[i]), "thread": hex(c.thread[i]),
                "irql": c.irql[i], "kernel_apc_disable": c.kernel_apc_disable[i],
                "special_apc_disable": c.special_apc_disable[i],
                "stack": stack, "stack_symbols": symbols,
            }));
        }
    }
    let sites: Vec<Value> = v
        .sites
        .iter()
        .map(|s| {
            let (stack, symbols) = names.stack(&s.stack);
            json!({"driver": name(s.driver), "caller": hex(s.caller),
                   "caller_symbol": names.get(s.caller), "outstanding_bytes": s.outstanding_bytes,
                   "outstanding_allocs": s.outstanding_allocs, "stack": stack,
                   "stack_symbols": symbols})
        })
        .collect();
    json!({
        "enabled": true, "status": "enabled", "level": v.stats.level,
        "options": v.stats.options(), "mm_verifier_data": hex(v.stats.va),
        "stats": v.stats.counters,
        "drivers": drivers,
        "tracked": tracked, "tracked_total": t.len(),
        "log": log, "log_total": v.log.as_ref().map_or(0, TraceLog::len),
        "log_info": v.log.as_ref().map_or(Value::Null, log_info),
        "irp_log": irp_log, "irp_log_total": v.irp_log.as_ref().map_or(0, TraceLog::len),
        "irp_log_info": v.irp_log.as_ref().map_or(Value::Null, log_info),
        "sites": sites,
        "notes": v.notes,
    })
}

/// [`verifier`]'s result as one document: the `verifier` section plus its findings, `sources`
/// and `unavailable`; `limit` caps the tracked and log rows (all when None; totals are kept).
pub fn verifier_report(
    v: &Verifier,
    modules: &crate::kernel::Modules,
    limit: Option<usize>,
) -> Value {
    let mut doc = verifier_json(v, limit);
    let mut f = findings::verifier_leaks(v, modules);
    f.extend(findings::apc_disabled_io(v, modules));
    doc["findings"] = serde_json::to_value(&f).unwrap_or(Value::Null);
    doc["sources"] = json!(v.sources);
    doc["unavailable"] = json!(v.unavailable);
    doc
}
