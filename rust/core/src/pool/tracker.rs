//! The pool tagging database (POOL_TRACKER_TABLE): what `!poolused` and poolmon show.
//!
//! Windows 7 keeps one table, nt!PoolTrackTable. Windows 8 and later (profiles with
//! `per_cpu_tag_tables`) count each allocation and free in the table of the processor that
//! made it: nt!ExPoolTagTables holds one table pointer per processor, every key is also written
//! to PoolTrackTable, and a tag that finds no slot goes to nt!PoolTrackTableExpansion. The
//! figures are the sum over PoolTrackTable, every distinct non-null ExPoolTagTables[i] (a table
//! is counted once, whichever slots name it) and the expansion table. A free on another
//! processor than the allocation drives that processor's Bytes (and Allocs − Frees) below zero,
//! so counters are summed modulo 2^64, as the kernel's own sums are.

use super::globals::{self, Kernel, Sources};
use super::layout::PoolLayout;
use super::tag;
use super::BigPool;
use crate::error::{Error, Result};
use crate::memory::Translator;

/// A table larger than this is not a tracker table (real ones hold a few thousand entries).
pub(crate) const MAX_ENTRIES: u64 = 1 << 22;
/// ExPoolTagTables slots (the kernel's crash-dump callback walks 0x800 of them).
pub(crate) const MAX_PROCESSORS: usize = 0x800;
/// An expansion table larger than this is not one (the kernel grows it a page at a time).
pub(crate) const MAX_EXPANSION: u64 = 0x1_0000;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TagUsage {
    pub tag: u32,
    pub nonpaged_allocs: u64,
    pub nonpaged_frees: u64,
    pub nonpaged_bytes: u64,
    pub paged_allocs: u64,
    pub paged_frees: u64,
    pub paged_bytes: u64,
}

impl TagUsage {
    /// Outstanding allocations (`!poolused`'s non-verbose "Allocs").
    pub fn nonpaged_in_use(&self) -> u64 {
        self.nonpaged_allocs.saturating_sub(self.nonpaged_frees)
    }
    pub fn paged_in_use(&self) -> u64 {
        self.paged_allocs.saturating_sub(self.paged_frees)
    }
    /// Add another table's counters, modulo 2^64 (per-processor counters wrap below zero).
    fn add(&mut self, o: &TagUsage) {
        self.nonpaged_allocs = self.nonpaged_allocs.wrapping_add(o.nonpaged_allocs);
        self.nonpaged_frees = self.nonpaged_frees.wrapping_add(o.nonpaged_frees);
        self.nonpaged_bytes = self.nonpaged_bytes.wrapping_add(o.nonpaged_bytes);
        self.paged_allocs = self.paged_allocs.wrapping_add(o.paged_allocs);
        self.paged_frees = self.paged_frees.wrapping_add(o.paged_frees);
        self.paged_bytes = self.paged_bytes.wrapping_add(o.paged_bytes);
    }
}

/// Which kernel table a set of rows came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    /// nt!PoolTrackTable.
    Global,
    /// A table named by nt!ExPoolTagTables that is not PoolTrackTable.
    PerCpu,
    /// nt!PoolTrackTableExpansion.
    Expansion,
    /// The session pool's table (nt!ExpSessionPoolTrackTable, or _MM_SESSION_SPACE.PoolTags).
    Session,
    /// The session's expansion table (_MM_SESSION_SPACE.PoolTrackTableExpansion).
    SessionExpansion,
}

impl TableKind {
    pub fn name(self) -> &'static str {
        match self {
            TableKind::Global => "PoolTrackTable",
            TableKind::PerCpu => "ExPoolTagTables",
            TableKind::Expansion => "PoolTrackTableExpansion",
            TableKind::Session => "ExpSessionPoolTrackTable",
            TableKind::SessionExpansion => "_MM_SESSION_SPACE.PoolTrackTableExpansion",
        }
    }
}

/// One table summed into the figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRead {
    pub kind: TableKind,
    pub va: u64,
    pub entries: u64,
    /// The processors whose ExPoolTagTables slot names this table.
    pub cpus: Vec<u32>,
    /// Rows (non-zero keys) read from it.
    pub rows: usize,
}

#[derive(Debug, Clone, Default)]
pub struct TrackerTable {
    /// nt!PoolTrackTable and its entry count.
    pub va: u64,
    pub entries: u64,
    /// One row per non-zero key of every table read (PoolTrackTable first, then the distinct
    /// per-processor tables, then the expansion table), each table in slot order.
    /// [`TrackerTable::poolused`] sums them per tag.
    pub usage: Vec<TagUsage>,
    /// The tables summed, in the order their rows appear in `usage`.
    pub tables: Vec<TableRead>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortBy {
    NonPagedBytes,
    PagedBytes,
    Allocs,
}

/// The rows (non-zero keys) of `entries` tracker entries at `va`.
pub(crate) fn read_rows(
    tr: &mut Translator,
    layout: &PoolLayout,
    va: u64,
    entries: u64,
    what: &str,
) -> Result<Vec<TagUsage>> {
    let e = &layout.tracker;
    let (key, npa, npf, npb, pa, pf, pb) = (
        e.field("Key")?,
        e.field("NonPagedAllocs")?,
        e.field("NonPagedFrees")?,
        e.field("NonPagedBytes")?,
        e.field("PagedAllocs")?,
        e.field("PagedFrees")?,
        e.field("PagedBytes")?,
    );
    let bytes = tr
        .read_vec(va, (entries as usize) * e.size)
        .map_err(|e| e.context(what))?;
    Ok(bytes
        .chunks_exact(e.size)
        .filter_map(|row| {
            let k = key.read(row) as u32;
            (k != 0).then(|| TagUsage {
                tag: tag::normalize(k),
                nonpaged_allocs: npa.read(row),
                nonpaged_frees: npf.read(row),
                nonpaged_bytes: npb.read(row),
                paged_allocs: pa.read(row),
                paged_frees: pf.read(row),
                paged_bytes: pb.read(row),
            })
        })
        .collect())
}

/// The tracker hash (ReactOS expool.c, the same constant in Win8+ kernels).
#[inline]
pub(crate) fn hash(key: u32, mask: u64) -> u64 {
    let r = 40543u64 * u64::from(key);
    ((r & 0xFFFF_FFFF) ^ (r >> 32)) & mask
}

/// Whether the keys of a hashed tracker table (PoolTrackTableSize = 2^k+1 entries, the last
/// the overflow bucket) are where linear probing puts them: every non-empty key at or after its
/// hash slot, no empty slot between (keys are never removed). At least one key and one empty
/// slot are required (a full or empty table proves nothing).
pub(crate) fn hashed_keys_valid(keys: &[u32]) -> bool {
    let n = keys.len();
    if n < 3 || !(n - 1).is_power_of_two() {
        return false;
    }
    let slots = &keys[..n - 1];
    probing_holds(slots, |s| slots[s] != 0, n - 1)
}

/// The session table's overflow key ('Ovfl'), the only key its last entry may hold.
pub(crate) const OVERFLOW_KEY: u32 = u32::from_le_bytes(*b"Ovfl");

/// Whether the keys of a session tracker table (ExpSessionPoolTrackTableSize = 2^k entries,
/// Mask = Size - 1) are where the kernel's probing puts them: every key of slots 0..Size-2 at
/// or after its hash slot with no empty slot between, where the last slot counts as taken (a
/// probe passes it by; only 'Ovfl' is ever stored there). At least one key and one empty slot
/// are required.
pub(crate) fn session_keys_valid(keys: &[u32]) -> bool {
    let n = keys.len();
    if n < 4 || !n.is_power_of_two() || !matches!(keys[n - 1], 0 | OVERFLOW_KEY) {
        return false;
    }
    probing_holds(keys, |s| keys[s] != 0 || s == n - 1, n - 1)
}

/// Linear probing over a ring of `n` (a power of two) slots, `taken` saying which are
/// occupied: run[s] = the taken slots ending at s, walking the ring from a free one, so a key at
/// s with hash slot h was put there by probing iff `(s - h) & (n - 1) < run[s]`. None when no
/// slot is free (a full ring proves nothing).
pub(crate) fn probe_runs(n: usize, taken: impl Fn(usize) -> bool) -> Option<Vec<usize>> {
    let mask = n - 1;
    let empty = (0..n).find(|&s| !taken(s))?;
    let mut run = vec![0usize; n];
    for step in 1..=n {
        let s = (empty + step) & mask;
        run[s] = if taken(s) {
            run[(s + mask) & mask] + 1
        } else {
            0
        };
    }
    Some(run)
}

/// Whether each key of the first `checked` slots of `ring` (a power-of-two ring, `taken` saying
/// which slots are occupied) sits where the tracker hash and linear probing put it. Needs a free
/// slot and at least one key.
fn probing_holds(ring: &[u32], taken: impl Fn(usize) -> bool, checked: usize) -> bool {
    let mask = ring.len() - 1;
    let Some(run) = probe_runs(ring.len(), taken) else {
        return false;
    };
    let mut any = false;
    for (s, &k) in ring[..checked].iter().enumerate() {
        if k == 0 {
            continue;
        }
        let h = hash(k, mask as u64) as usize;
        if (s.wrapping_sub(h) & mask) >= run[s] {
            return false;
        }
        any = true;
    }
    any
}

/// A cheap test before a candidate size is read whole: in the first 0x1000 slots, keys whose
/// hash slot is not after them validate without wrapping, and they outnumber the keys that
/// would have wrapped around the table (random data fails here).
pub(crate) fn prefix_plausible(
    tr: &mut Translator,
    layout: &PoolLayout,
    table: u64,
    n: u64,
) -> bool {
    let e = &layout.tracker;
    let Ok(key) = e.field("Key") else {
        return false;
    };
    let count = (n - 1).min(0x1000) as usize;
    let Ok(raw) = tr.read_vec(table, count * e.size) else {
        return false;
    };
    let mask = n - 2;
    let (mut run, mut plain, mut wrapped) = (0usize, 0usize, 0usize);
    for (s, row) in raw.chunks_exact(e.size).enumerate() {
        let k = key.read(row) as u32;
        if k == 0 {
            run = 0;
            continue;
        }
        run += 1;
        let h = hash(k, mask) as usize;
        if h > s {
            wrapped += 1;
        } else if s - h >= run {
            return false;
        } else {
            plain += 1;
        }
    }
    plain > 0 && wrapped <= plain
}

/// The distinct tables named by ExPoolTagTables slots, PoolTrackTable (`global`) excluded:
/// (processors naming `global`, [(table, processors naming it)] in slot order). Null slots are
/// skipped; a table named by several slots is listed once.
pub(crate) fn distinct_tables(global: u64, slots: &[u64]) -> (Vec<u32>, Vec<(u64, Vec<u32>)>) {
    let mut on_global = Vec::new();
    let mut out: Vec<(u64, Vec<u32>)> = Vec::new();
    for (cpu, &p) in slots.iter().enumerate() {
        let cpu = cpu as u32;
        if p == 0 {
            continue;
        }
        if p == global {
            on_global.push(cpu);
        } else if let Some((_, cpus)) = out.iter_mut().find(|(t, _)| *t == p) {
            cpus.push(cpu);
        } else {
            out.push((p, vec![cpu]));
        }
    }
    (on_global, out)
}

/// Whether PoolTrackTable at `table` holds `n` entries: `n` is 2^k+1 within the reader's bound,
/// fits the allocation holding the table (`holder` bytes, its big-pool entry, when known) and is
/// the largest 2^k+1 that fits it (a smaller one reads a prefix of the table), and the table's
/// keys sit where the tracker hash and linear probing put them with that size. The reason when
/// not.
fn check_size(
    tr: &mut Translator,
    layout: &PoolLayout,
    table: u64,
    n: u64,
    holder: Option<u64>,
) -> std::result::Result<(), String> {
    if !(17..=MAX_ENTRIES + 1).contains(&n) || !(n - 1).is_power_of_two() {
        return Err(format!(
            "{n} entries is not 2^k+1 between 17 and 0x{:x} (the kernel's sizes are)",
            MAX_ENTRIES + 1
        ));
    }
    let esize = layout.tracker.size as u64;
    if let Some(b) = holder {
        if n * esize > b {
            return Err(format!(
                "{n} entries ({} bytes) do not fit the table's big-pool allocation of {b} bytes",
                n * esize
            ));
        }
        if (2 * n - 1) * esize <= b {
            return Err(format!(
                "the table's big-pool allocation of {b} bytes holds {} entries: {n} would read a prefix of it",
                2 * n - 1
            ));
        }
    }
    // A cheap look at the first slots before the table is read whole (junk fails here).
    if !prefix_plausible(tr, layout, table, n) {
        return Err(format!(
            "with {n} entries the first keys of the table are not where the tracker hash puts them"
        ));
    }
    let key = layout.tracker.field("Key").map_err(|e| e.to_string())?;
    let rows = tr
        .read_vec(table, n as usize * layout.tracker.size)
        .map_err(|e| format!("the table's {n} entries are not readable: {e}"))?;
    let keys: Vec<u32> = rows
        .chunks_exact(layout.tracker.size)
        .map(|r| key.read(r) as u32)
        .collect();
    if !hashed_keys_valid(&keys) {
        return Err(format!(
            "with {n} entries the table's keys are not where the tracker hash and linear probing put them"
        ));
    }
    Ok(())
}

/// The largest 2^k+1 entry count whose entries fit `bytes`.
fn fits(bytes: u64, esize: u64) -> Option<u64> {
    let most = bytes / esize.max(1);
    (most >= 17).then(|| {
        let p = 1u64 << (63 - (most - 1).leading_zeros());
        p + 1
    })
}

/// PoolTrackTable's entry count, checked against the table itself ([`check_size`]): the
/// PoolTrackTableSize variable (symbols, KDBG, profile distance or the search near the table),
/// else the largest 2^k+1 that fits the table's own big-pool allocation. A candidate that fails
/// is refused with its reason (kept in `sources`); when none validates, the error says why each
/// failed.
fn validated_size(
    tr: &mut Translator,
    k: Kernel,
    table: u64,
    big: Option<&BigPool>,
    sources: &mut Sources,
) -> Result<u64> {
    const NAME: &str = "PoolTrackTableSize";
    let holder = big.and_then(|b| {
        b.pages
            .iter()
            .find(|p| p.va == table && !p.free)
            .map(|p| p.bytes)
    });
    let mut refused = Vec::new();
    match globals::value_of(tr, NAME, k, sources) {
        Ok(n) => {
            let how = sources.get(NAME).cloned().unwrap_or_default();
            match check_size(tr, k.layout, table, n, holder) {
                Ok(()) => {
                    let fit = holder.map_or(String::new(), |b| {
                        format!(" and fits its big-pool allocation of {b} bytes")
                    });
                    sources.insert(
                        "tracker_check".into(),
                        format!("PoolTrackTableSize {n}: the table's keys sit at their hash slots with {n} entries{fit}"),
                    );
                    return Ok(n);
                }
                Err(why) => refused.push(format!("the value {n} ({how}) is refused: {why}")),
            }
        }
        Err(e) => refused.push(format!("the variable was not found: {e}")),
    }
    match holder {
        Some(b) => match fits(b, k.layout.tracker.size as u64) {
            Some(n) => match check_size(tr, k.layout, table, n, holder) {
                Ok(()) => {
                    sources.insert(
                        "tracker_check".into(),
                        format!("PoolTrackTableSize {n}: from the table's allocation; the table's keys sit at their hash slots"),
                    );
                    sources.insert(
                        NAME.into(),
                        format!(
                            "heuristic: 0x{n:x}, the largest 2^k+1 entries that fit PoolTrackTable's big-pool allocation of {b} bytes, with the table's keys at their hash slots ({})",
                            refused.join("; ")
                        ),
                    );
                    return Ok(n);
                }
                Err(why) => refused.push(format!("the size of its big-pool allocation ({b} bytes) gives {n} entries, refused: {why}")),
            },
            None => refused.push(format!("its big-pool allocation of {b} bytes holds no table")),
        },
        None => refused.push(format!(
            "no live big-pool entry holds 0x{table:x}, so its allocation size is unknown"
        )),
    }
    sources.insert(
        "tracker_check".into(),
        format!("refused: {}", refused.join("; ")),
    );
    Err(Error::unsupported(format!(
        "PoolTrackTable 0x{table:x}: no entry count validates against the table ({})",
        refused.join("; ")
    )))
}

impl TrackerTable {
    pub fn read(tr: &mut Translator, k: Kernel, sources: &mut Sources) -> Result<Self> {
        Self::read_with(tr, k, None, sources)
    }

    /// The tagging database, its size checked against the table and, when `big` is given, the
    /// big-pool allocation that holds it.
    pub fn read_with(
        tr: &mut Translator,
        k: Kernel,
        big: Option<&BigPool>,
        sources: &mut Sources,
    ) -> Result<Self> {
        let layout = k.layout;
        let table = globals::value_of(tr, "PoolTrackTable", k, sources)?;
        if table == 0 || !globals::kernel_pointer(table) {
            return Err(Error::not_present(
                table,
                format!("PoolTrackTable 0x{table:x} is not a kernel address"),
            ));
        }
        let entries = validated_size(tr, k, table, big, sources)?;
        let k = Kernel {
            tracker_entries: Some(entries),
            ..k
        };
        let mut t = Self {
            va: table,
            entries,
            ..Self::default()
        };
        t.add(
            TableKind::Global,
            table,
            entries,
            Vec::new(),
            read_rows(tr, layout, table, entries, "PoolTrackTable")?,
        );
        if layout.per_cpu_tag_tables {
            t.read_per_cpu(tr, k, sources)?;
            t.read_expansion(tr, k, sources)?;
            sources.insert("tag_tables".into(), t.describe());
        }
        Ok(t)
    }

    pub(crate) fn add(
        &mut self,
        kind: TableKind,
        va: u64,
        entries: u64,
        cpus: Vec<u32>,
        rows: Vec<TagUsage>,
    ) {
        self.tables.push(TableRead {
            kind,
            va,
            entries,
            cpus,
            rows: rows.len(),
        });
        self.usage.extend(rows);
    }

    /// ExPoolTagTables[0..NumberProcessors]: every distinct non-null table but PoolTrackTable.
    fn read_per_cpu(
        &mut self,
        tr: &mut Translator,
        k: Kernel,
        sources: &mut Sources,
    ) -> Result<()> {
        let n = k.processors as usize;
        if n == 0 || n > MAX_PROCESSORS {
            return Err(Error::unsupported(format!(
                "the dump header's NumberProcessors {n} is not a plausible count of ExPoolTagTables slots"
            )));
        }
        let array = globals::locate(tr, "ExPoolTagTables", k, sources).map_err(|e| {
            Error::unsupported(format!(
                "the per-processor tag tables (nt!ExPoolTagTables) are needed for the tagging database of this build (PoolTrackTable alone holds one processor's share): {e}"
            ))
        })?;
        let raw = tr
            .read_vec(array, n * 8)
            .map_err(|e| e.context("ExPoolTagTables"))?;
        let slots: Vec<u64> = raw
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        let (on_global, tables) = distinct_tables(self.va, &slots);
        if let Some(g) = self.tables.first_mut() {
            g.cpus = on_global;
        }
        for (p, cpus) in tables {
            let what = format!("ExPoolTagTables[{}] (0x{p:x})", cpus[0]);
            let rows = read_rows(tr, k.layout, p, self.entries, &what)?;
            self.add(TableKind::PerCpu, p, self.entries, cpus, rows);
        }
        Ok(())
    }

    /// PoolTrackTableExpansion with PoolTrackTableExpansionSize entries, when there is one.
    fn read_expansion(
        &mut self,
        tr: &mut Translator,
        k: Kernel,
        sources: &mut Sources,
    ) -> Result<()> {
        let p = globals::value_of(tr, "PoolTrackTableExpansion", k, sources);
        let n = globals::value_of(tr, "PoolTrackTableExpansionSize", k, sources);
        let (p, n) = match (p, n) {
            (Ok(p), Ok(n)) => (p, n),
            (Err(e), _) | (_, Err(e)) => {
                sources.insert(
                    "PoolTrackTableExpansion".into(),
                    format!("not found, no expansion table summed: {e}"),
                );
                return Ok(());
            }
        };
        if p == 0 || n == 0 {
            return Ok(());
        }
        if n > MAX_EXPANSION {
            return Err(Error::not_present(
                p,
                format!("PoolTrackTableExpansion 0x{p:x} with {n} entries is not a plausible expansion table"),
            ));
        }
        let rows = read_rows(tr, k.layout, p, n, "PoolTrackTableExpansion")?;
        self.add(TableKind::Expansion, p, n, Vec::new(), rows);
        Ok(())
    }

    /// The tables summed, for `sources`.
    pub(crate) fn describe(&self) -> String {
        let cpus = |c: &[u32]| c.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
        let parts: Vec<String> = self
            .tables
            .iter()
            .map(|t| match t.kind {
                TableKind::Global if t.cpus.is_empty() => format!("PoolTrackTable 0x{:x}", t.va),
                TableKind::Global => format!(
                    "PoolTrackTable 0x{:x} (= ExPoolTagTables[{}], counted once)",
                    t.va,
                    cpus(&t.cpus)
                ),
                TableKind::PerCpu => format!("ExPoolTagTables[{}] 0x{:x}", cpus(&t.cpus), t.va),
                TableKind::Expansion => format!(
                    "PoolTrackTableExpansion 0x{:x} ({} entries; its layout is taken as _POOL_TRACKER_TABLE's, unsure)",
                    t.va, t.entries
                ),
                TableKind::Session => {
                    format!("session table 0x{:x} ({} entries)", t.va, t.entries)
                }
                TableKind::SessionExpansion => format!(
                    "the session's PoolTrackTableExpansion 0x{:x} ({} entries)",
                    t.va, t.entries
                ),
            })
            .collect();
        format!(
            "sum modulo 2^64 of {} distinct table{}: {}",
            self.tables.len(),
            if self.tables.len() == 1 { "" } else { "s" },
            parts.join("; ")
        )
    }

    /// `!poolused` rows: one per tag (rows of the same tag summed over every table, modulo
    /// 2^64), entries whose bytes are both 0 dropped (as WinDbg and ReactOS do), sorted,
    /// optionally the top N.
    pub fn poolused(&self, sort: SortBy, top: Option<usize>) -> Vec<TagUsage> {
        let mut by_tag: std::collections::HashMap<u32, TagUsage> = std::collections::HashMap::new();
        for u in &self.usage {
            by_tag
                .entry(u.tag)
                .or_insert(TagUsage {
                    tag: u.tag,
                    ..Default::default()
                })
                .add(u);
        }
        let mut rows: Vec<TagUsage> = by_tag
            .into_values()
            .filter(|u| u.nonpaged_bytes != 0 || u.paged_bytes != 0)
            .collect();
        rows.sort_by(|a, b| {
            let key = |u: &TagUsage| match sort {
                SortBy::NonPagedBytes => (u.nonpaged_bytes, u.paged_bytes),
                SortBy::PagedBytes => (u.paged_bytes, u.nonpaged_bytes),
                SortBy::Allocs => (
                    u.nonpaged_in_use().saturating_add(u.paged_in_use()),
                    u.nonpaged_bytes.wrapping_add(u.paged_bytes),
                ),
            };
            key(b).cmp(&key(a)).then(a.tag.cmp(&b.tag))
        });
        if let Some(n) = top {
            rows.truncate(n);
        }
        rows
    }

    pub fn total(rows: &[TagUsage]) -> TagUsage {
        let mut t = TagUsage::default();
        rows.iter().for_each(|u| t.add(u));
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(s: &[u8; 4]) -> u32 {
        u32::from_le_bytes(*s)
    }

    /// A hashed table of `n` (2^k+1) entries with `keys` inserted by linear probing.
    fn table(n: usize, keys: &[u32]) -> Vec<u32> {
        let mask = n - 2;
        let mut t = vec![0u32; n];
        for &k in keys {
            let mut s = hash(k, mask as u64) as usize;
            while t[s] != 0 {
                s = (s + 1) & mask;
            }
            t[s] = k;
        }
        t
    }

    #[test]
    fn hashed_keys_validate_only_where_probing_puts_them() {
        let keys: Vec<u32> = (0..40u32).map(|i| tag(b"Ab00") + (i << 24)).collect();
        let t = table(65, &keys);
        assert!(hashed_keys_valid(&t));
        let mut not_2k1 = t.clone();
        not_2k1.push(0);
        assert!(!hashed_keys_valid(&not_2k1));
        // the same keys read with a larger (wrong) size: most are now before their hash slot
        let mut bigger = t.clone();
        bigger.resize(129, 0);
        assert!(!hashed_keys_valid(&bigger));
        // a key one slot past its hash slot with that slot empty
        let k = tag(b"Move");
        let h = hash(k, 15) as usize;
        let mut moved = vec![0u32; 17];
        moved[(h + 1) & 15] = k;
        assert!(!hashed_keys_valid(&moved));
        moved[h] = tag(b"Fill");
        assert_eq!(
            hashed_keys_valid(&moved),
            hash(tag(b"Fill"), 15) as usize == h
        );
        // full and empty tables prove nothing
        assert!(!hashed_keys_valid(&[0u32; 33]));
        assert!(!hashed_keys_valid(&[tag(b"Full"); 17]));
    }

    /// A session table of `n` (2^k) entries with `keys` inserted as the kernel does: linear
    /// probing from the hash slot, the last entry passed by.
    fn session_table(n: usize, keys: &[u32]) -> Vec<u32> {
        let mask = n - 1;
        let mut t = vec![0u32; n];
        for &k in keys {
            let mut s = hash(k, mask as u64) as usize;
            while t[s] != 0 || s == n - 1 {
                s = (s + 1) & mask;
            }
            t[s] = k;
        }
        t
    }

    #[test]
    fn session_keys_validate_where_the_kernel_probes_them() {
        let keys: Vec<u32> = (0..30u32).map(|i| tag(b"Us00") + (i << 24)).collect();
        let t = session_table(64, &keys);
        assert!(session_keys_valid(&t));
        // a key whose probe passed the last slot lands at slot 0 and still validates
        let last = (0..u32::MAX)
            .map(|i| tag(b"La00") + i)
            .find(|&k| hash(k, 15) == 15)
            .unwrap();
        let t = session_table(16, &[last]);
        assert_eq!(t[0], last);
        assert!(session_keys_valid(&t));
        // a key stored in the last slot is no kernel's; 'Ovfl' there is
        let mut bad = vec![0u32; 16];
        bad[15] = last;
        assert!(!session_keys_valid(&bad));
        let mut ovfl = session_table(16, &[tag(b"Gla5")]);
        ovfl[15] = OVERFLOW_KEY;
        assert!(session_keys_valid(&ovfl));
        // the global layout (2^k+1) and a wrong size do not validate
        let g = session_table(64, &keys);
        assert!(!session_keys_valid(&g[..63]));
        let mut bigger = session_table(64, &keys);
        bigger.resize(128, 0);
        assert!(!session_keys_valid(&bigger));
        assert!(!session_keys_valid(&[0u32; 16]));
    }

    #[test]
    fn the_allocation_gives_the_largest_2k1_that_fits() {
        // the kernel's 1025-entry tables in their page-rounded big-pool allocations
        for esize in [0x28u64, 0x38, 0x50] {
            let bytes = (1025 * esize).div_ceil(0x1000) * 0x1000;
            assert_eq!(fits(bytes, esize), Some(1025), "{esize:#x}");
            assert_eq!(fits(1025 * esize, esize), Some(1025));
            assert_eq!(fits(1025 * esize - 1, esize), Some(513));
        }
        assert_eq!(fits(16 * 0x28, 0x28), None);
        assert_eq!(fits(0, 0x28), None);
        assert_eq!(fits(u64::MAX, 0), Some((1 << 63) + 1));
    }

    #[test]
    fn a_table_listed_twice_is_counted_once() {
        let g = 0xFFFF_FA80_0010_0000;
        let (a, b) = (0xFFFF_FA80_0020_0000, 0xFFFF_FA80_0030_0000);
        let (on_g, t) = distinct_tables(g, &[g, a, a, 0, b, g]);
        assert_eq!(on_g, vec![0, 5]);
        assert_eq!(t, vec![(a, vec![1, 2]), (b, vec![4])]);
        let (on_g, t) = distinct_tables(g, &[a, b, a]);
        assert!(on_g.is_empty());
        assert_eq!(t, vec![(a, vec![0, 2]), (b, vec![1])]);
    }

    #[test]
    fn per_cpu_counters_that_wrap_sum_to_the_kernel_figures() {
        let t = tag(b"Leak");
        let row = |npa: u64, npf: u64, npb: i64, pb: i64| TagUsage {
            tag: t,
            nonpaged_allocs: npa,
            nonpaged_frees: npf,
            nonpaged_bytes: npb as u64,
            paged_allocs: 0,
            paged_frees: 0,
            paged_bytes: pb as u64,
        };
        // CPU 0 allocated 10 (0x1000 each), CPU 1 freed 7 of them, CPU 2 freed 1 and allocated 2
        let tt = TrackerTable {
            usage: vec![
                row(10, 0, 0xA000, 0),
                row(0, 7, -0x7000, -0x30),
                row(2, 1, 0x1000, 0x30),
                TagUsage {
                    tag: tag(b"Zero"),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let rows = tt.poolused(SortBy::NonPagedBytes, None);
        assert_eq!(rows.len(), 1);
        let r = rows[0];
        assert_eq!(
            (
                r.nonpaged_allocs,
                r.nonpaged_frees,
                r.nonpaged_bytes,
                r.paged_bytes
            ),
            (12, 8, 0x4000, 0)
        );
        assert_eq!(r.nonpaged_in_use(), 4);
        // a table that alone is below zero keeps its wrapped value (no panic, no saturation)
        let one = TrackerTable {
            usage: vec![row(0, 7, -0x7000, 0)],
            ..Default::default()
        };
        let r = one.poolused(SortBy::Allocs, None)[0];
        assert_eq!(r.nonpaged_bytes, (-0x7000i64) as u64);
        assert_eq!(r.nonpaged_in_use(), 0);
        let total = TrackerTable::total(&[r, r]);
        assert_eq!(total.nonpaged_bytes, (-0xE000i64) as u64);
    }
}
