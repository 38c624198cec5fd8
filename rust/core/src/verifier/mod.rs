//! Driver Verifier data (shared/specs/verifier.md): what `!verifier 3 <driver>`, `!verifier 80`
//! and `!verifier 100` show. `MmVerifierData` comes from KDBG; the driver lists and the logs
//! from a symbol table's globals, or, without one, from pool blocks found by tag (reported as
//! heuristic in `sources`). Layouts come from the profile's `verifier` section.
//!
//! Reading goes in two steps: [`read_stats`] (one structure; Level 0 means not enabled), then
//! [`read`] for drivers, tracked allocations, logs and allocation sites. Parts that cannot be
//! read are named in `unavailable`; only an unreadable `MmVerifierData` is an error.

pub mod drivers;
pub mod layout;
pub mod log;
pub mod mi_list;
pub mod stats;
pub mod tracked;

use std::collections::{BTreeMap, HashMap};

pub use drivers::{Counters, Driver, DriverState};
pub use layout::VerifierLayout;
pub use log::{IrpLog, IrpTrace, PoolLog, PoolTrace, TraceLog};
pub use stats::Stats;
pub use tracked::{Site, Tracked, NO_RECORD, POOL_UNKNOWN};

use crate::error::{Error, Result};
use crate::kernel::{Kdbg, Modules, Symbols};
use crate::memory::Translator;
use crate::pool::globals::Sources;
use crate::pool::{tag, BigPool, Blocks, Pool, PoolLayout};

/// Pool tags of the verifier's own allocations (shared/specs/verifier.md §4.2, §6.2, §7.1).
pub const TAG_VERIFIED_DATA: u32 = u32::from_le_bytes(*b"VfVD");
pub const TAG_POOL_TRACES: u32 = u32::from_le_bytes(*b"VfPT");
/// The pool log's tag in Windows 11 ViPtInitCircularPoolTrace (§6.2); profiles list it.
pub const TAG_POOL_TRACES_WIN11: u32 = u32::from_le_bytes(*b"ViIn");
pub const TAG_IRP_TRACES: u32 = u32::from_le_bytes(*b"VfIT");
/// MI_VERIFIER_DRIVER_ENTRY (Vista and older): 'dLmM' in Server 2003 verifier.c.
pub const TAG_MI_ENTRY: u32 = u32::from_le_bytes(*b"MmLd");
/// What the heuristics look for in a pool scan (a profile's `verifier.tags` are among them).
pub const HEURISTIC_TAGS: [u32; 5] = [
    TAG_VERIFIED_DATA,
    TAG_POOL_TRACES,
    TAG_POOL_TRACES_WIN11,
    TAG_IRP_TRACES,
    TAG_MI_ENTRY,
];

/// Virtual memory as the readers see it: the dump's translator, or a hand-built test buffer.
pub trait Memory {
    fn read(&mut self, va: u64, buf: &mut [u8]) -> Result<()>;

    fn read_vec(&mut self, va: u64, n: usize) -> Result<Vec<u8>> {
        let mut v = vec![0u8; n];
        self.read(va, &mut v)?;
        Ok(v)
    }
    fn read_u64(&mut self, va: u64) -> Result<u64> {
        let mut b = [0u8; 8];
        self.read(va, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    fn read_u32(&mut self, va: u64) -> Result<u32> {
        let mut b = [0u8; 4];
        self.read(va, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }
}

impl Memory for Translator<'_> {
    fn read(&mut self, va: u64, buf: &mut [u8]) -> Result<()> {
        Translator::read(self, va, buf)
    }
}

/// An allocated pool block of a heuristic tag, from the page scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolBlock {
    /// VA of the block (its POOL_HEADER).
    pub va: u64,
    /// Block bytes, header included.
    pub bytes: u64,
    pub tag: u32,
}

/// The heuristic-tag blocks of a scan's kept rows (allocated, with a known VA).
pub fn blocks_of(b: &Blocks) -> Vec<PoolBlock> {
    (0..b.len())
        .filter(|&i| b.allocated[i] && b.va[i] != 0 && HEURISTIC_TAGS.contains(&b.tag[i]))
        .map(|i| PoolBlock {
            va: b.va[i],
            bytes: u64::from(b.size[i]),
            tag: b.tag[i],
        })
        .collect()
}

/// Where the readers find the kernel's variables and the heuristics' inputs.
#[derive(Clone)]
pub struct Context<'a> {
    pub layout: &'a VerifierLayout,
    pub kdbg: Option<&'a Kdbg>,
    pub symbols: Option<&'a Symbols>,
    pub kernel_base: Option<u64>,
    pub modules: &'a Modules,
    /// POOL_HEADER layout: block bodies, and the pool type of tracked blocks.
    pub pool: Option<&'a PoolLayout>,
    pub bigpool: Option<&'a BigPool>,
    /// Heuristic-tag blocks from a page scan, or why there are none.
    pub blocks: std::result::Result<&'a [PoolBlock], String>,
}

impl Context<'_> {
    /// A global's VA from the symbol table.
    pub fn symbol(&self, name: &str) -> Option<u64> {
        self.symbols?.address(name, self.kernel_base?)
    }

    /// The driver lists have no symbols, so the VfVD heuristic needs a pool scan.
    pub fn needs_blocks(&self) -> bool {
        if self.layout.driver_list == layout::DriverList::MiList {
            return self.symbol("MiSuspectDriverList").is_none();
        }
        self.symbol("VfSuspectDriversList").is_none() || self.symbol("ViTargetDriversAvl").is_none()
    }
}

#[derive(Debug, Clone, Default)]
pub struct Verifier {
    pub stats: Stats,
    pub drivers: Vec<Driver>,
    pub tracked: Tracked,
    pub log: Option<PoolLog>,
    pub irp_log: Option<IrpLog>,
    /// Per tracked row, its allocation record in `log` ([`NO_RECORD`] when none or no log).
    pub records: Vec<u32>,
    /// Allocation sites of every driver's tracked allocations.
    pub sites: Vec<Site>,
    /// The loaded modules, to name callers and frames (`module+0xoffset`) on demand.
    pub modules: Modules,
    pub sources: Sources,
    /// Parts that could not be read ("drivers", "log", "irp_log"), and why.
    pub unavailable: BTreeMap<String, String>,
    pub notes: Vec<String>,
}

impl Verifier {
    pub fn enabled(&self) -> bool {
        self.stats.enabled()
    }

    /// `module+0xoffset`, or None when no module holds the address.
    pub fn symbol(&self, addr: u64) -> Option<String> {
        self.modules.symbolize(addr)
    }

    /// Keep one driver (BaseName, with or without its extension, any case) and its tracked
    /// rows and sites; keep the log records whose [Address, Address+Size) holds `address` and
    /// the IRP records of that IRP.
    pub fn select(&mut self, driver: Option<&str>, address: Option<u64>) {
        if let Some(want) = driver {
            let matches = |name: &str| {
                name.eq_ignore_ascii_case(want)
                    || name
                        .rsplit_once('.')
                        .is_some_and(|(stem, _)| stem.eq_ignore_ascii_case(want))
            };
            let mut map = HashMap::new();
            let mut kept = Vec::new();
            for (i, d) in self.drivers.drain(..).enumerate() {
                if matches(&d.name) {
                    map.insert(i as u32, kept.len() as u32);
                    kept.push(d);
                }
            }
            if kept.is_empty() {
                self.notes
                    .push(format!("no verified driver is named {want:?}"));
            }
            self.drivers = kept;
            let rows = self.tracked.retain(&map);
            if !self.records.is_empty() {
                self.records = rows.iter().map(|&i| self.records[i]).collect();
            }
            self.sites.retain(|s| map.contains_key(&s.driver));
            for s in &mut self.sites {
                s.driver = map[&s.driver];
            }
        }
        if let Some(a) = address {
            if let Some(l) = &mut self.log {
                let holds =
                    |c: &log::PoolColumns, i: usize| a.wrapping_sub(c.va[i]) < c.bytes[i].max(1);
                // Old record index → new, for the tracked rows' allocation records.
                let mut renumber = vec![NO_RECORD; l.len()];
                let mut kept = 0u32;
                for (i, r) in renumber.iter_mut().enumerate() {
                    if holds(&l.cols, i) {
                        *r = kept;
                        kept += 1;
                    }
                }
                l.retain(holds);
                for r in self.records.iter_mut().filter(|r| **r != NO_RECORD) {
                    *r = renumber[*r as usize];
                }
            }
            if let Some(l) = &mut self.irp_log {
                l.retain(|c, i| c.irp[i] == a);
            }
        }
    }
}

/// `MmVerifierData`'s VA: KDBG's field (it holds the address), else the symbol table.
fn mm_verifier_data(ctx: &Context, sources: &mut Sources) -> Result<u64> {
    if let Some(va) = ctx
        .kdbg
        .and_then(|k| k.field("MmVerifierData"))
        .filter(|&v| v != 0)
    {
        sources.insert("MmVerifierData".into(), "KDBG".into());
        return Ok(va);
    }
    if let Some(va) = ctx.symbol("MmVerifierData") {
        let origin = ctx.symbols.map_or("", |s| s.source.as_str());
        sources.insert("MmVerifierData".into(), origin.to_string());
        return Ok(va);
    }
    Err(Error::unsupported(
        "MmVerifierData: KDBG does not give its address and no symbol table names it",
    ))
}

/// The system-wide statistics; Level 0 means Driver Verifier is not enabled.
pub fn read_stats(m: &mut impl Memory, ctx: &Context, sources: &mut Sources) -> Result<Stats> {
    let va = mm_verifier_data(ctx, sources)?;
    Stats::read(m, va, ctx.layout)
}

/// Everything past the statistics. Nothing is read when the verifier is not enabled.
pub fn read(m: &mut impl Memory, ctx: &Context, stats: Stats, sources: Sources) -> Verifier {
    let mut v = Verifier {
        stats,
        sources,
        modules: ctx.modules.clone(),
        ..Default::default()
    };
    if !v.enabled() {
        return v;
    }
    match drivers::read(m, ctx, &mut v.sources, &mut v.notes) {
        Ok(d) => v.drivers = d,
        Err(e) => {
            v.unavailable.insert("drivers".into(), e.to_string());
        }
    }
    let live_slots = ctx.layout.entries_per_page.saturating_sub(1);
    let expected: usize = v
        .drivers
        .iter()
        .filter(|d| d.first_page != 0)
        .map(|d| usize::from(d.page_depth) * live_slots)
        .sum();
    v.tracked.reserve(expected.min(1 << 23));
    for (i, d) in v.drivers.iter().enumerate() {
        let (Some(vd), true) = (d.verified_data, d.first_page != 0) else {
            continue;
        };
        let before = v.tracked.len();
        if let Err(e) = tracked::walk(
            m,
            ctx.layout,
            i as u32,
            vd,
            d.first_page,
            &mut v.tracked,
            &mut v.notes,
        ) {
            v.notes.push(format!("{}: tracker pages: {e}", d.name));
        }
        let live = (v.tracked.len() - before) as u64;
        let current = d.counters.current_paged_allocs + d.counters.current_nonpaged_allocs;
        if live != current {
            v.notes.push(format!(
                "{}: {live} live tracker entries, but the driver's counters say {current} current allocations",
                d.name
            ));
        }
    }
    classify_pools(m, ctx, &v.drivers, &mut v.tracked);
    match log::read(m, ctx, log::POOL_LOG, &mut v.sources) {
        Ok(l) => v.log = Some(l),
        Err(e) => {
            v.unavailable.insert("log".into(), e.to_string());
        }
    }
    match log::read(m, ctx, log::IRP_LOG, &mut v.sources) {
        Ok(l) => v.irp_log = Some(l),
        Err(e) => {
            v.unavailable.insert("irp_log".into(), e.to_string());
        }
    }
    v.records = match &v.log {
        Some(l) => tracked::allocation_records(&v.tracked, l),
        None => vec![NO_RECORD; v.tracked.len()],
    };
    v.sites = tracked::sites_of(&v.tracked, v.log.as_ref(), &v.records, 0..v.tracked.len());
    v
}

/// The tracker does not store the pool type: a driver with current allocations in one pool
/// only says it; else a big-pool entry at the address, else the POOL_HEADER before the block
/// when its tag is the entry's.
fn classify_pools(m: &mut impl Memory, ctx: &Context, drivers: &[Driver], t: &mut Tracked) {
    // Per driver: its one pool, or None when rows must be classified one by one.
    let by_driver: Vec<Option<Pool>> = drivers
        .iter()
        .map(|d| {
            let c = &d.counters;
            match (c.current_nonpaged_allocs > 0, c.current_paged_allocs > 0) {
                (true, false) => Some(Pool::NonPaged),
                (false, true) => Some(Pool::Paged),
                _ => None,
            }
        })
        .collect();
    let mut big: Option<HashMap<u64, Pool>> = None;
    for i in 0..t.len() {
        let Some(one) = by_driver.get(t.driver[i] as usize) else {
            continue;
        };
        let pool = match one {
            Some(p) => Some(*p),
            None => big
                .get_or_insert_with(|| {
                    ctx.bigpool
                        .into_iter()
                        .flat_map(|b| b.pages.iter())
                        .filter(|p| !p.free)
                        .map(|p| (p.va, p.pool))
                        .collect()
                })
                .get(&t.va[i])
                .copied()
                .or_else(|| header_pool(m, ctx.pool?, t.va[i], t.tag[i])),
        };
        if let Some(p) = pool {
            t.pool[i] = p as u8;
        }
    }
}

fn header_pool(m: &mut impl Memory, l: &PoolLayout, va: u64, entry_tag: u32) -> Option<Pool> {
    let h = m
        .read_vec(va.checked_sub(l.header_size as u64)?, l.header_size)
        .ok()?;
    let pool_type = u64::from(*h.get(l.pool_type)?);
    let tag = u32::from_le_bytes(h.get(l.pool_tag..l.pool_tag + 4)?.try_into().ok()?);
    (pool_type != 0 && tag::normalize(tag) == tag::normalize(entry_tag))
        .then(|| Pool::classify(pool_type, l.paged_mask, l.session_mask))
}

/// Sparse virtual memory for unit tests: pages exist once written or touched.
#[cfg(test)]
pub(crate) mod testmem {
    use std::collections::HashMap;

    use super::Memory;
    use crate::error::{Error, Result};

    #[derive(Default)]
    pub struct Sparse {
        pages: HashMap<u64, Vec<u8>>,
    }

    impl Sparse {
        pub fn touch(&mut self, va: u64, len: u64) {
            let mut p = va & !0xFFF;
            while p < va + len {
                self.pages.entry(p).or_insert_with(|| vec![0; 0x1000]);
                p += 0x1000;
            }
        }
        pub fn put(&mut self, va: u64, data: &[u8]) {
            for (k, b) in data.iter().enumerate() {
                let a = va + k as u64;
                self.touch(a, 1);
                self.pages.get_mut(&(a & !0xFFF)).unwrap()[(a & 0xFFF) as usize] = *b;
            }
        }
        pub fn put_u64(&mut self, va: u64, v: u64) {
            self.put(va, &v.to_le_bytes());
        }
        pub fn put_u32(&mut self, va: u64, v: u32) {
            self.put(va, &v.to_le_bytes());
        }
        pub fn put_u16(&mut self, va: u64, v: u16) {
            self.put(va, &v.to_le_bytes());
        }
    }

    impl Memory for Sparse {
        fn read(&mut self, va: u64, buf: &mut [u8]) -> Result<()> {
            for (k, b) in buf.iter_mut().enumerate() {
                let a = va.wrapping_add(k as u64);
                let page = self
                    .pages
                    .get(&(a & !0xFFF))
                    .ok_or_else(|| Error::not_present(a, "page not in the test memory"))?;
                *b = page[(a & 0xFFF) as usize];
            }
            Ok(())
        }
    }
}
