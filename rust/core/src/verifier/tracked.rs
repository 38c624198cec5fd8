//! Tracked pool allocations (`!verifier 3 <driver>`'s PoolAddress/SizeInBytes/Tag/Callers
//! table): each verified driver's 4 KiB tracker pages, chained from PoolPageHeaders through
//! NextPage; slot 0 is the page header, the other slots entries, free when NumberOfBytes is odd.
//! Then allocation sites: the pool-log records of allocations still outstanding, by stack.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use super::layout::VerifierLayout;
use super::log::PoolLog;
use super::Memory;
use crate::error::{Error, Result};

/// Tracker pages followed per driver (0x8000 pages = 4M entries; real drivers use far fewer).
const MAX_PAGES: usize = 0x8000;
/// `pool` of an entry whose pool type could not be told.
pub const POOL_UNKNOWN: u8 = 0xFF;

/// Live tracker entries as columns (struct of arrays), like `pool::Blocks`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tracked {
    /// Index into the verifier's driver list.
    pub driver: Vec<u32>,
    pub va: Vec<u64>,
    /// Charged bytes (NumberOfBytes).
    pub bytes: Vec<u64>,
    pub tag: Vec<u32>,
    pub caller: Vec<u64>,
    /// `pool::Pool as u8`, or [`POOL_UNKNOWN`] (the tracker does not store it).
    pub pool: Vec<u8>,
}

impl Tracked {
    pub fn len(&self) -> usize {
        self.va.len()
    }
    pub fn is_empty(&self) -> bool {
        self.va.is_empty()
    }
    pub fn reserve(&mut self, n: usize) {
        self.driver.reserve(n);
        self.va.reserve(n);
        self.bytes.reserve(n);
        self.tag.reserve(n);
        self.caller.reserve(n);
        self.pool.reserve(n);
    }
    fn push(&mut self, driver: u32, va: u64, bytes: u64, tag: u32, caller: u64) {
        self.driver.push(driver);
        self.va.push(va);
        self.bytes.push(bytes);
        self.tag.push(tag);
        self.caller.push(caller);
        self.pool.push(POOL_UNKNOWN);
    }
    /// Keep the rows of the drivers `map` names, renumbering them (old → new index); returns
    /// the kept rows' old indexes.
    pub fn retain(&mut self, map: &HashMap<u32, u32>) -> Vec<usize> {
        let rows: Vec<usize> = (0..self.len())
            .filter(|&i| map.contains_key(&self.driver[i]))
            .collect();
        let pick = |v: &Vec<u64>| rows.iter().map(|&i| v[i]).collect::<Vec<_>>();
        let (va, bytes, caller) = (pick(&self.va), pick(&self.bytes), pick(&self.caller));
        self.tag = rows.iter().map(|&i| self.tag[i]).collect();
        self.pool = rows.iter().map(|&i| self.pool[i]).collect();
        self.driver = rows.iter().map(|&i| map[&self.driver[i]]).collect();
        (self.va, self.bytes, self.caller) = (va, bytes, caller);
        rows
    }
}

/// Walk one driver's tracker pages from `first_page`; live entries are appended to `out`.
/// A page without the signature, or owned by other verified data, ends the walk with a note.
pub fn walk(
    m: &mut impl Memory,
    l: &VerifierLayout,
    driver: u32,
    verified: u64,
    first_page: u64,
    out: &mut Tracked,
    notes: &mut Vec<String>,
) -> Result<()> {
    let h = &l.page_header;
    let (next_f, owner_f, sig_f) = (
        h.field("NextPage")?,
        h.field("VerifierEntry")?,
        h.field("Signature")?,
    );
    let e = &l.pool_entry;
    let (va_f, caller_f, bytes_f, tag_f) = (
        e.field("VirtualAddress")?,
        e.field("CallingAddress")?,
        e.field("NumberOfBytes")?,
        e.field("Tag")?,
    );
    let stride = e.size;
    let mut page = first_page;
    let mut seen = HashSet::new();
    while page != 0 {
        if seen.len() >= MAX_PAGES || !seen.insert(page) {
            notes.push(format!(
                "tracker pages of verified data 0x{verified:x}: page 0x{page:x} repeats or exceeds {MAX_PAGES} pages; walk stopped"
            ));
            break;
        }
        let raw = match m.read_vec(page, l.entries_per_page * stride) {
            Ok(r) => r,
            Err(err) => {
                notes.push(format!(
                    "tracker page of verified data 0x{verified:x}: {err}; walk stopped"
                ));
                break;
            }
        };
        let (sig, owner) = (sig_f.read(&raw), owner_f.read(&raw));
        if sig != l.page_signature || owner != verified {
            let err = Error::not_present(
                page,
                format!(
                    "tracker page signature 0x{sig:x} (expected 0x{:x}), VerifierEntry 0x{owner:x} (expected 0x{verified:x})",
                    l.page_signature
                ),
            );
            notes.push(format!("{err}; walk stopped"));
            break;
        }
        for k in 1..l.entries_per_page {
            let Some(slot) = raw.get(k * stride..(k + 1) * stride) else {
                break;
            };
            let bytes = bytes_f.read(slot);
            if bytes & 1 != 0 {
                continue; // free (never used, or freed: NumberOfBytes | 1)
            }
            out.push(
                driver,
                va_f.read(slot),
                bytes,
                tag_f.read(slot) as u32,
                caller_f.read(slot),
            );
        }
        page = next_f.read(&raw);
    }
    Ok(())
}

/// Outstanding allocations that share an allocation stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    pub driver: u32,
    /// The tracked entries' CallingAddress.
    pub caller: u64,
    /// The allocation's stack from the pool log; empty when the log has no record of it.
    pub stack: Vec<u64>,
    pub outstanding_bytes: u64,
    pub outstanding_allocs: u64,
}

/// A tracked row without an allocation record in the pool log.
pub const NO_RECORD: u32 = u32::MAX;

/// Multiply-rotate hashing of addresses and stacks (as rustc-hash 2): fast for the millions of
/// keys a read hashes. The final rotate brings the well-mixed high bits down, so keys aligned to
/// 16 bytes still spread over the table. A hostile dump can only slow its own read.
#[derive(Default, Clone, Copy)]
pub struct FxHasher(u64);

pub(crate) const FX_K: u64 = 0xf135_7aea_2e62_a9c5;

impl Hasher for FxHasher {
    fn finish(&self) -> u64 {
        self.0.rotate_left(26)
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut c = bytes.chunks_exact(8);
        for w in &mut c {
            self.write_u64(u64::from_le_bytes(w.try_into().unwrap_or([0; 8])));
        }
        let rest = c.remainder();
        if !rest.is_empty() {
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            self.write_u64(u64::from_le_bytes(b));
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = self.0.wrapping_add(v).wrapping_mul(FX_K);
    }
    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }
    fn write_u8(&mut self, v: u8) {
        self.write_u64(u64::from(v));
    }
    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }
}

pub type FxBuild = BuildHasherDefault<FxHasher>;

/// Scatter `keys` into `2^bits` partitions by their hash: (key, index) pairs, each partition's
/// in index order, and where each partition starts (one more entry than partitions).
fn partition(keys: &[u64], bits: u32) -> (Vec<(u64, u32)>, Vec<usize>) {
    let part = |k: u64| {
        if bits == 0 {
            0
        } else {
            (k.wrapping_mul(FX_K) >> (64 - bits)) as usize
        }
    };
    let mut start = vec![0usize; (1 << bits) + 1];
    for &k in keys {
        start[part(k) + 1] += 1;
    }
    for p in 0..1usize << bits {
        start[p + 1] += start[p];
    }
    let mut at = start.clone();
    let mut out = vec![(0u64, 0u32); keys.len()];
    for (i, &k) in keys.iter().enumerate() {
        let p = part(k);
        out[at[p]] = (k, i as u32);
        at[p] += 1;
    }
    (out, start)
}

/// Each tracked row's allocation record in the pool log ([`NO_RECORD`] when none): the newest
/// record of its address (frees of a live block are older). When the log's order is unknown, a
/// record whose stack holds the tracked caller is preferred (allocation stacks pass through the
/// driver's call site). O(rows + records): both sides are partitioned by address hash first,
/// so each partition's table stays in cache (a radix join).
pub fn allocation_records(t: &Tracked, log: &PoolLog) -> Vec<u32> {
    // About 2048 records per partition.
    let bits = (log.len() / 2048).max(1).ilog2().min(12);
    let (records, rstart) = partition(&log.cols.va, bits);
    let (rows, tstart) = partition(&t.va, bits);
    let mut out = vec![NO_RECORD; t.len()];
    // Unordered logs: each record's next record of the same address, in log order.
    let mut next = if log.ordered {
        Vec::new()
    } else {
        vec![NO_RECORD; log.len()]
    };
    let mut first: HashMap<u64, u32, FxBuild> = HashMap::default();
    for p in 0..rstart.len() - 1 {
        first.clear();
        for &(va, i) in records[rstart[p]..rstart[p + 1]].iter().rev() {
            let prev = first.insert(va, i);
            if !log.ordered {
                next[i as usize] = prev.unwrap_or(NO_RECORD);
            }
        }
        for &(va, r) in &rows[tstart[p]..tstart[p + 1]] {
            let Some(&head) = first.get(&va) else {
                continue;
            };
            out[r as usize] = if log.ordered {
                head
            } else {
                let caller = t.caller[r as usize];
                let mut i = head;
                while i != NO_RECORD && !log.stack(i as usize).contains(&caller) {
                    i = next[i as usize];
                }
                if i == NO_RECORD {
                    head
                } else {
                    i
                }
            };
        }
    }
    out
}

/// Group `rows` of the tracked allocations by (driver, allocation stack, caller), ranked by
/// outstanding bytes, then allocations. With a log, `records` (from [`allocation_records`])
/// gives each row's stack and rows without one are left out; without a log every row counts,
/// grouped by caller with an empty stack. Stacks are compared by the log's stack ids: O(rows)
/// integer hashing.
pub fn sites_of(
    t: &Tracked,
    log: Option<&PoolLog>,
    records: &[u32],
    rows: impl IntoIterator<Item = usize>,
) -> Vec<Site> {
    // (driver, caller, stack id) → (bytes, allocations, a record with that stack)
    let mut groups: HashMap<(u32, u64, u32), (u64, u64, u32), FxBuild> = HashMap::default();
    for i in rows {
        let (id, rec) = match log {
            Some(l) => match records.get(i) {
                Some(&r) if r != NO_RECORD => (l.stack_id[r as usize], r),
                _ => continue,
            },
            None => (0, NO_RECORD),
        };
        let g = groups
            .entry((t.driver[i], t.caller[i], id))
            .or_insert((0, 0, rec));
        g.0 += t.bytes[i];
        g.1 += 1;
    }
    let mut out: Vec<Site> = groups
        .into_iter()
        .map(|((driver, caller, _), (bytes, allocs, rec))| Site {
            driver,
            caller,
            stack: match log {
                Some(l) if rec != NO_RECORD => l.stack(rec as usize).to_vec(),
                _ => Vec::new(),
            },
            outstanding_bytes: bytes,
            outstanding_allocs: allocs,
        })
        .collect();
    out.sort_by(|a, b| {
        (b.outstanding_bytes, b.outstanding_allocs)
            .cmp(&(a.outstanding_bytes, a.outstanding_allocs))
            .then((a.driver, a.caller, &a.stack).cmp(&(b.driver, b.caller, &b.stack)))
    });
    out
}

/// [`sites_of`] for the rows `want(i)` accepts, computing the allocation records.
pub fn sites(t: &Tracked, log: Option<&PoolLog>, want: impl Fn(usize) -> bool) -> Vec<Site> {
    let records = log.map(|l| allocation_records(t, l)).unwrap_or_default();
    sites_of(t, log, &records, (0..t.len()).filter(|&i| want(i)))
}

#[cfg(test)]
mod tests {
    use super::super::testmem::Sparse;
    use super::*;
    use crate::kernel::Profile;

    const VD: u64 = 0xFFFF_FA80_0040_0000;

    fn layout() -> VerifierLayout {
        VerifierLayout::from_profile(&Profile::for_build(7601).unwrap().0).unwrap()
    }

    fn page(m: &mut Sparse, va: u64, next: u64, owner: u64, live: &[(u64, u64)]) {
        m.touch(va, 0x1000);
        m.put_u64(va, next);
        m.put_u64(va + 8, owner);
        m.put_u64(va + 0x10, 0x2132_1345);
        for k in 1..0x80u64 {
            m.put_u64(va + k * 0x20 + 0x10, 1); // free
        }
        for (k, &(slot, bytes)) in live.iter().enumerate() {
            let e = va + slot * 0x20;
            m.put_u64(e, 0xFFFF_FA80_1000_0000 + k as u64 * 0x1000);
            m.put_u64(e + 8, 0xFFFF_F880_0000_1634);
            m.put_u64(e + 0x10, bytes);
            m.put_u64(
                e + 0x18,
                u64::from(u32::from_le_bytes(*b"Leak")) | 0xAB << 32,
            );
        }
    }

    #[test]
    fn tracker_pages() {
        let l = layout();
        let mut m = Sparse::default();
        let (p1, p2, p3) = (
            0xFFFF_FA80_0060_0000u64,
            0xFFFF_FA80_0061_0000,
            0xFFFF_FA80_0062_0000,
        );
        page(&mut m, p1, p2, VD, &[(1, 0x100), (127, 0x20)]);
        page(&mut m, p2, p3, VD, &[(5, 0x41)]); // odd: a freed entry
        page(&mut m, p3, 0, VD + 0x1000, &[(1, 0x10)]); // another owner
        let mut t = Tracked::default();
        let mut notes = Vec::new();
        walk(&mut m, &l, 3, VD, p1, &mut t, &mut notes).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t.bytes, [0x100, 0x20]);
        assert_eq!(t.driver, [3, 3]);
        assert_eq!(t.tag[0], u32::from_le_bytes(*b"Leak"));
        assert_eq!(t.pool, [POOL_UNKNOWN; 2]);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("VerifierEntry"));

        // A loop of pages is followed once.
        let mut m = Sparse::default();
        page(&mut m, p1, p2, VD, &[(1, 0x100)]);
        page(&mut m, p2, p1, VD, &[(2, 0x200)]);
        let (mut t, mut notes) = (Tracked::default(), Vec::new());
        walk(&mut m, &l, 0, VD, p1, &mut t, &mut notes).unwrap();
        assert_eq!(t.len(), 2);
        assert!(notes[0].contains("repeats"));
    }

    fn log_of(ordered: bool, rows: &[(u64, &[u64])]) -> PoolLog {
        let mut log = PoolLog::new(13);
        log.ordered = ordered;
        for &(va, stack) in rows {
            log.push(0, stack, (va, 0x10, 0));
        }
        log
    }

    #[test]
    fn sites_group_by_allocation_stack() {
        let mut t = Tracked::default();
        for (i, va) in [0xA000u64, 0xB000, 0xC000].iter().enumerate() {
            t.push(0, *va, 0x100 * (i as u64 + 1), 0, 0x1634);
        }
        t.push(1, 0xD000, 0x10, 0, 0x99);
        let free = [0x1, 0x2];
        let alloc = [0x5, 0x1634, 0x7];
        let log = log_of(
            true,
            &[
                (0xA000, &alloc), // newest record of 0xA000: its allocation
                (0xB000, &alloc),
                (0xA000, &free), // older: a previous block at the same address was freed
                (0xC000, &[0x5, 0x1634, 0x8]),
            ],
        );
        assert_eq!(allocation_records(&t, &log), [0, 1, 3, NO_RECORD]);
        assert_eq!(log.stack_id, [0, 0, 1, 2], "equal stacks share an id");
        let s = sites(&t, Some(&log), |_| true);
        assert_eq!(s.len(), 2, "the row without a record is no site");
        // Equal bytes: more allocations first.
        assert_eq!(s[0].stack, alloc);
        assert_eq!(
            (s[0].outstanding_bytes, s[0].outstanding_allocs),
            (0x300, 2)
        );
        assert_eq!(s[1].stack, [0x5, 0x1634, 0x8]);
        assert_eq!(
            (s[1].outstanding_bytes, s[1].outstanding_allocs),
            (0x300, 1)
        );
        let s = sites(&t, None, |i| i == 3);
        assert!(s[0].stack.is_empty() && s[0].driver == 1 && s[0].caller == 0x99);

        // Unknown order: the record through the caller wins.
        let log = log_of(false, &[(0xA000, &free), (0xA000, &alloc), (0xA000, &free)]);
        assert_eq!(allocation_records(&t, &log)[0], 1);
        let s = sites(&t, Some(&log), |i| i == 0);
        assert_eq!(s[0].stack, alloc);
        // No record through the caller: the first one.
        let log = log_of(false, &[(0xA000, &free), (0xA000, &[0x3])]);
        assert_eq!(allocation_records(&t, &log)[0], 0);

        let mut map = HashMap::new();
        map.insert(1u32, 0u32);
        assert_eq!(t.retain(&map), [3]);
        assert_eq!((t.len(), t.driver[0], t.va[0]), (1, 0, 0xD000));
    }

    /// The partitioned join equals the plain definition on a log large enough to partition.
    #[test]
    fn records_join_matches_definition() {
        let mut t = Tracked::default();
        let va = |k: u64| 0xFFFF_FA80_0000_0000 + (k % 9000) * 0x50;
        for r in 0..12_000u64 {
            t.push(0, va(r * 7), 0x40, 0, 0x1000 + r % 3);
        }
        for ordered in [true, false] {
            let mut log = PoolLog::new(13);
            log.ordered = ordered;
            for i in 0..40_000u64 {
                let stack = [0x5, 0x1000 + i % 4, 0x7];
                log.push(0, &stack, (va(i * 13), 0x40, 0));
            }
            let got = allocation_records(&t, &log);
            let mut by_va: HashMap<u64, Vec<u32>> = HashMap::new();
            for i in 0..log.len() {
                by_va.entry(log.cols.va[i]).or_default().push(i as u32);
            }
            for (r, &got) in got.iter().enumerate() {
                let same = by_va.get(&t.va[r]).cloned().unwrap_or_default();
                let want = if ordered {
                    same.first().copied()
                } else {
                    same.iter()
                        .copied()
                        .find(|&i| log.stack(i as usize).contains(&t.caller[r]))
                        .or(same.first().copied())
                };
                assert_eq!(got, want.unwrap_or(NO_RECORD), "row {r} ordered {ordered}");
            }
        }
    }
}
