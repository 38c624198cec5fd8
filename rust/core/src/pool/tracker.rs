//! The pool tagging database (POOL_TRACKER_TABLE): what `!poolused` and poolmon show.

use super::globals::{self, Kernel, Sources};
use super::tag;
use crate::error::{Error, Result};
use crate::memory::Translator;

/// A table larger than this is not a tracker table (real ones hold a few thousand entries).
const MAX_ENTRIES: u64 = 1 << 22;

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
    fn add(&mut self, o: &TagUsage) {
        self.nonpaged_allocs += o.nonpaged_allocs;
        self.nonpaged_frees += o.nonpaged_frees;
        self.nonpaged_bytes += o.nonpaged_bytes;
        self.paged_allocs += o.paged_allocs;
        self.paged_frees += o.paged_frees;
        self.paged_bytes += o.paged_bytes;
    }
}

#[derive(Debug, Clone, Default)]
pub struct TrackerTable {
    pub va: u64,
    pub entries: u64,
    /// One row per tag with a non-zero key, in table order.
    pub usage: Vec<TagUsage>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortBy {
    NonPagedBytes,
    PagedBytes,
    Allocs,
}

impl TrackerTable {
    pub fn read(tr: &mut Translator, k: Kernel, sources: &mut Sources) -> Result<Self> {
        let layout = k.layout;
        let table = globals::value_of(tr, "PoolTrackTable", k, sources)?;
        let entries = globals::value_of(tr, "PoolTrackTableSize", k, sources)?;
        if table == 0 || entries == 0 || entries > MAX_ENTRIES {
            return Err(Error::not_present(
                table,
                format!("PoolTrackTable 0x{table:x} with {entries} entries is not a plausible tracker table"),
            ));
        }
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
            .read_vec(table, (entries as usize) * e.size)
            .map_err(|e| e.context("PoolTrackTable"))?;
        let usage = bytes
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
            .collect();
        Ok(Self {
            va: table,
            entries,
            usage,
        })
    }

    /// `!poolused` rows: one per tag (rows of the same tag summed), entries whose bytes are
    /// both 0 dropped (as WinDbg and ReactOS do), sorted, optionally the top N.
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
                    u.nonpaged_in_use() + u.paged_in_use(),
                    u.nonpaged_bytes + u.paged_bytes,
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
