//! The pool page scan (what `!poolfind` does, over every present page at once).
//!
//! Legacy allocator (Win7..RS4): a 4 KiB pool page is a chain of blocks, each starting with a
//! POOL_HEADER; the first has PreviousSize 0, each next one's PreviousSize equals the BlockSize
//! before it, and the BlockSizes sum to exactly one page (ReactOS ExpCheckPoolBlocks). A page is
//! accepted only if the whole chain holds, every tag is plausible and the paged/nonpaged parity
//! is the same for every allocated block, so random data yields no phantom tags. Most pages are
//! rejected on their first 16 bytes: the scan touches a cache line per non-pool page.

use std::collections::HashMap;

use rayon::prelude::*;

use super::layout::PoolLayout;
use super::tag;
use crate::container::PAGE_SIZE;
use crate::memory::{PhysicalMemory, ReverseMap};

/// Pages per rayon task: MiBs per task, so scheduling and faults don't dominate on 2 cores.
const CHUNK_PAGES: u64 = 8192;

/// Which pool a block belongs to, from the header's PoolType.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Pool {
    NonPaged = 0,
    Paged = 1,
    SessionNonPaged = 2,
    SessionPaged = 3,
}

impl Pool {
    pub fn name(self) -> &'static str {
        match self {
            Pool::NonPaged => "nonpaged",
            Pool::Paged => "paged",
            Pool::SessionNonPaged => "session_nonpaged",
            Pool::SessionPaged => "session_paged",
        }
    }
    pub fn classify(pool_type: u64, paged_mask: u8, session_mask: u8) -> Pool {
        let paged = pool_type & u64::from(paged_mask) != 0;
        let session = pool_type & u64::from(session_mask) != 0;
        match (session, paged) {
            (false, false) => Pool::NonPaged,
            (false, true) => Pool::Paged,
            (true, false) => Pool::SessionNonPaged,
            (true, true) => Pool::SessionPaged,
        }
    }
}

/// Per (tag, pool): allocated and free blocks and bytes (bytes include the header).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TagCount {
    pub allocated: u64,
    pub allocated_bytes: u64,
    pub free: u64,
    pub free_bytes: u64,
}

/// Blocks as columns (struct of arrays): millions of blocks cost a few bytes each, and cross
/// into Python as arrays, not objects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Blocks {
    pub pa: Vec<u64>,
    /// 0 when no kernel mapping of the page was found.
    pub va: Vec<u64>,
    pub tag: Vec<u32>,
    pub size: Vec<u32>,
    pub previous_size: Vec<u32>,
    pub pool: Vec<u8>,
    pub allocated: Vec<bool>,
}

impl Blocks {
    pub(crate) fn push_block(
        &mut self,
        pa: u64,
        va: u64,
        h: &Header,
        l: &PoolLayout,
        pool: Pool,
        allocated: bool,
    ) {
        self.pa.push(pa);
        self.va.push(va);
        self.tag.push(tag::normalize(h.tag));
        self.size.push((h.size * l.block_unit) as u32);
        self.previous_size.push((h.prev * l.block_unit) as u32);
        self.pool.push(pool as u8);
        self.allocated.push(allocated);
    }
    /// Reorder the rows by physical address (the legacy scan's natural order).
    pub(crate) fn sort_by_pa(&mut self) {
        let mut idx: Vec<usize> = (0..self.pa.len()).collect();
        idx.sort_by_key(|&i| self.pa[i]);
        fn take<T: Copy>(v: &[T], idx: &[usize]) -> Vec<T> {
            idx.iter().map(|&i| v[i]).collect()
        }
        self.pa = take(&self.pa, &idx);
        self.va = take(&self.va, &idx);
        self.tag = take(&self.tag, &idx);
        self.size = take(&self.size, &idx);
        self.previous_size = take(&self.previous_size, &idx);
        self.pool = take(&self.pool, &idx);
        self.allocated = take(&self.allocated, &idx);
    }
    fn append(&mut self, o: &mut Blocks) {
        self.pa.append(&mut o.pa);
        self.va.append(&mut o.va);
        self.tag.append(&mut o.tag);
        self.size.append(&mut o.size);
        self.previous_size.append(&mut o.previous_size);
        self.pool.append(&mut o.pool);
        self.allocated.append(&mut o.allocated);
    }
    pub fn len(&self) -> usize {
        self.pa.len()
    }
    pub fn is_empty(&self) -> bool {
        self.pa.is_empty()
    }
}

/// Which blocks to keep as rows (summaries always cover every block).
#[derive(Debug, Clone, Default)]
pub enum Keep {
    #[default]
    None,
    All,
    /// Only blocks of these (normalized) tags.
    Tags(Vec<u32>),
}

#[derive(Debug, Clone, Default)]
pub struct PoolScan {
    pub pages_scanned: u64,
    pub pool_pages: u64,
    /// Pages whose first header looked like pool but whose chain broke: corruption, or a
    /// layout the scanner does not know. Skipped, never half-counted.
    pub rejected_pages: u64,
    /// Why subsegments were rejected (segment heap): reason -> count.
    pub rejected_why: std::collections::BTreeMap<String, u64>,
    pub tags: HashMap<(u32, Pool), TagCount>,
    pub blocks: Blocks,
}

impl PoolScan {
    pub(crate) fn merge(mut self, mut o: PoolScan) -> PoolScan {
        self.pages_scanned += o.pages_scanned;
        self.pool_pages += o.pool_pages;
        self.rejected_pages += o.rejected_pages;
        for (why, n) in std::mem::take(&mut o.rejected_why) {
            *self.rejected_why.entry(why).or_default() += n;
        }
        for (k, v) in o.tags.drain() {
            let e = self.tags.entry(k).or_default();
            e.allocated += v.allocated;
            e.allocated_bytes += v.allocated_bytes;
            e.free += v.free;
            e.free_bytes += v.free_bytes;
        }
        self.blocks.append(&mut o.blocks);
        self
    }
}

#[derive(Debug)]
pub(crate) struct Header {
    pub prev: u64,
    pub size: u64,
    pub pool_type: u64,
    pub tag: u32,
}

impl PoolScan {
    /// Count one block in the per-(tag, pool) summary, and keep its row if `keep` wants it.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn count(
        &mut self,
        keep: &Keep,
        pa: u64,
        va: impl FnOnce() -> u64,
        h: &Header,
        l: &PoolLayout,
        pool: Pool,
        allocated: bool,
    ) {
        let t = tag::normalize(h.tag);
        let bytes = h.size * l.block_unit;
        let c = self.tags.entry((t, pool)).or_default();
        if allocated {
            c.allocated += 1;
            c.allocated_bytes += bytes;
        } else {
            c.free += 1;
            c.free_bytes += bytes;
        }
        let wanted = match keep {
            Keep::None => false,
            Keep::All => true,
            Keep::Tags(ts) => ts.contains(&t),
        };
        if wanted {
            self.blocks.push_block(pa, va(), h, l, pool, allocated);
        }
    }
}

#[inline]
pub(crate) fn header(page: &[u8], off: usize, l: &PoolLayout) -> Option<Header> {
    let h = page.get(off..off + l.header_size)?;
    Some(Header {
        prev: u64::from(h[l.previous_size]),
        size: u64::from(h[l.block_size]),
        pool_type: u64::from(h[l.pool_type]),
        tag: u32::from_le_bytes(h.get(l.pool_tag..l.pool_tag + 4)?.try_into().ok()?),
    })
}

/// A block header is acceptable: size non-zero, tag plausible (a free block may carry a zero
/// tag). Returns whether the block is allocated.
#[inline]
fn acceptable(h: &Header) -> Option<bool> {
    let allocated = h.pool_type != 0;
    (h.size != 0 && (tag::plausible(h.tag) || (!allocated && h.tag == 0))).then_some(allocated)
}

/// Validate one page's chain; on success, call `each(offset, header, pool_type)` per block,
/// where a free block (PoolType 0) is given the pool of the page's first allocated block.
/// `Err(true)` marks a rejected page: its first header was a plausible allocated one with
/// PreviousSize 0, but the chain broke (corruption, or a layout the scanner does not know).
#[inline]
fn walk_chain(
    page: &[u8],
    l: &PoolLayout,
    mut each: impl FnMut(usize, &Header, u64),
) -> Result<(), bool> {
    let units = PAGE_SIZE / l.block_unit;
    // First header: cheap checks that reject almost every non-pool page.
    let first = header(page, 0, l).ok_or(false)?;
    let Some(first_allocated) = acceptable(&first) else {
        return Err(false);
    };
    if first.prev != 0 || first.size > units {
        return Err(false);
    }
    let broken = first_allocated;
    let mut page_type = None;
    let mut off = 0u64;
    let mut prev_size = 0u64;
    while off < units {
        let h = header(page, (off * l.block_unit) as usize, l).ok_or(broken)?;
        let allocated = acceptable(&h).ok_or(broken)?;
        if h.prev != prev_size || off + h.size > units {
            return Err(broken);
        }
        if allocated {
            let parity = |t: u64| t & u64::from(l.paged_mask);
            if parity(*page_type.get_or_insert(h.pool_type)) != parity(h.pool_type) {
                return Err(broken);
            }
        }
        prev_size = h.size;
        off += h.size;
    }
    // Only free blocks: structurally valid, but no evidence of pool (a page of small zero-tag
    // records can look like this), so it is not counted.
    let page_type = page_type.ok_or(false)?;
    let mut off = 0u64;
    while off < units {
        let h = header(page, (off * l.block_unit) as usize, l).ok_or(broken)?;
        each(
            (off * l.block_unit) as usize,
            &h,
            if h.pool_type != 0 {
                h.pool_type
            } else {
                page_type
            },
        );
        off += h.size;
    }
    Ok(())
}

fn scan_range(
    phys: &PhysicalMemory,
    rmap: &ReverseMap,
    l: &PoolLayout,
    start: u64,
    end: u64,
    keep: &Keep,
) -> PoolScan {
    let mut s = PoolScan::default();
    for pfn in start..end {
        let Ok(page) = phys.page(pfn) else { continue };
        s.pages_scanned += 1;
        let mut va_base = None;
        let res = walk_chain(page, l, |off, h, pool_type| {
            let pool = Pool::classify(pool_type, l.paged_mask, l.session_mask);
            let va = || {
                let base = *va_base.get_or_insert_with(|| rmap.va_of(pfn).unwrap_or(0));
                if base == 0 {
                    0
                } else {
                    base + off as u64
                }
            };
            let pa = pfn * PAGE_SIZE + off as u64;
            s.count(keep, pa, va, h, l, pool, h.pool_type != 0);
        });
        match res {
            Ok(()) => s.pool_pages += 1,
            Err(true) => s.rejected_pages += 1,
            Err(false) => {}
        }
    }
    s
}

/// The present pages in rayon-task-sized ranges `(first PFN, end PFN)`.
pub(crate) fn page_chunks(phys: &PhysicalMemory) -> Vec<(u64, u64)> {
    phys.present_runs()
        .iter()
        .flat_map(|r| {
            let end = r.base_page + r.page_count;
            (r.base_page..end)
                .step_by(CHUNK_PAGES as usize)
                .map(move |s| (s, (s + CHUNK_PAGES).min(end)))
        })
        .collect()
}

/// Scan every present page in parallel (legacy allocator). Blocks come back in PA order.
pub fn scan(
    phys: &PhysicalMemory,
    rmap: &ReverseMap,
    layout: &PoolLayout,
    keep: &Keep,
) -> PoolScan {
    page_chunks(phys)
        .par_iter()
        .map(|&(s, e)| {
            let r = scan_range(phys, rmap, layout, s, e, keep);
            phys.release(s, e);
            r
        })
        .collect::<Vec<_>>()
        .into_iter()
        .fold(PoolScan::default(), PoolScan::merge)
}
