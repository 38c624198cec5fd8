//! Physical → virtual: which kernel VA maps a physical page. Built once by walking the kernel
//! half of the page tables (PML4 entries 256..511, minus the self-map), kept as merged ranges,
//! so a 1 GiB page costs one entry and a lookup is a binary search.

use super::virt::AddressSpace;

const PRESENT: u64 = 1;
const LARGE: u64 = 1 << 7;
const ADDR_MASK: u64 = 0x000F_FFFF_FFFF_F000;
const ADDR_2M: u64 = 0x000F_FFFF_FFE0_0000;
const ADDR_1G: u64 = 0x000F_FFFF_C000_0000;
/// Bounds the walk on hostile tables (a real kernel maps far fewer 4 KiB pages).
const MAX_PT_PAGES: usize = 1 << 20;

#[derive(Debug, Clone, Copy)]
struct Range {
    pfn: u64,
    pages: u64,
    va: u64,
}

#[derive(Debug, Default, Clone)]
pub struct ReverseMap {
    ranges: Vec<Range>,
}

fn sign_extend(va: u64) -> u64 {
    if va & (1 << 47) != 0 {
        va | 0xFFFF_0000_0000_0000
    } else {
        va
    }
}

impl ReverseMap {
    pub fn build(space: &AddressSpace) -> Self {
        let phys = space.phys;
        let entries = |table: u64| -> Option<[u64; 512]> {
            let page = phys.page(table >> 12).ok()?;
            let mut e = [0u64; 512];
            for (i, c) in page.chunks_exact(8).enumerate() {
                e[i] = u64::from_le_bytes(c.try_into().ok()?);
            }
            Some(e)
        };
        let mut out: Vec<Range> = Vec::new();
        let mut push = |pfn: u64, pages: u64, va: u64| match out.last_mut() {
            Some(r) if r.pfn + r.pages == pfn && r.va + r.pages * 0x1000 == va => r.pages += pages,
            _ => out.push(Range { pfn, pages, va }),
        };
        let mut budget = MAX_PT_PAGES;
        let Some(pml4) = entries(space.dtb) else {
            return Self::default();
        };
        for (i4, &e4) in pml4.iter().enumerate().skip(256) {
            // The self-map entry points back at the PML4: mapping it would list every table.
            if e4 & PRESENT == 0 || e4 & ADDR_MASK == space.dtb {
                continue;
            }
            let va4 = sign_extend((i4 as u64) << 39);
            let Some(pdpt) = entries(e4 & ADDR_MASK) else {
                continue;
            };
            for (i3, &e3) in pdpt.iter().enumerate() {
                if e3 & PRESENT == 0 {
                    continue;
                }
                let va3 = va4 | ((i3 as u64) << 30);
                if e3 & LARGE != 0 {
                    push((e3 & ADDR_1G) >> 12, 1 << 18, va3);
                    continue;
                }
                let Some(pd) = entries(e3 & ADDR_MASK) else {
                    continue;
                };
                for (i2, &e2) in pd.iter().enumerate() {
                    if e2 & PRESENT == 0 {
                        continue;
                    }
                    let va2 = va3 | ((i2 as u64) << 21);
                    if e2 & LARGE != 0 {
                        push((e2 & ADDR_2M) >> 12, 512, va2);
                        continue;
                    }
                    if budget == 0 {
                        continue;
                    }
                    budget -= 1;
                    let Some(pt) = entries(e2 & ADDR_MASK) else {
                        continue;
                    };
                    for (i1, &e1) in pt.iter().enumerate() {
                        if e1 & PRESENT != 0 {
                            push((e1 & ADDR_MASK) >> 12, 1, va2 | ((i1 as u64) << 12));
                        }
                    }
                }
            }
        }
        out.sort_by_key(|r| (r.pfn, r.va));
        Self { ranges: out }
    }

    /// A kernel VA that maps physical page `pfn`, if any. When a page is mapped twice, the
    /// range starting nearest below it wins (looking back over at most 64 ranges).
    pub fn va_of(&self, pfn: u64) -> Option<u64> {
        let i = self.ranges.partition_point(|r| r.pfn <= pfn);
        // Overlapping ranges: look back over those that start at or before pfn.
        self.ranges[..i]
            .iter()
            .rev()
            .take(64)
            .find(|r| pfn < r.pfn + r.pages)
            .map(|r| r.va + (pfn - r.pfn) * 0x1000)
    }

    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}
