//! x64 4-level translation (shared/specs/dump-format.md §5): 4 KiB, 2 MiB and 1 GiB pages.
//!
//! Masks follow the hardware (and qemu elf2dmp): a 52-bit physical address space, and large-page
//! bases with bits 12..20 / 12..29 cleared (bit 12 is PAT there, not address) — kdmp-parser does not
//! clear them (spec uncertainty 8). A non-present PTE in transition (bit 11 set, prototype bit 10
//! clear) still names a page in RAM, which WinDbg and kdmp-parser-rs read; so does poolscope.

use super::physical::PhysicalMemory;
use crate::error::{Error, Result};

const PRESENT: u64 = 1;
const LARGE: u64 = 1 << 7;
const PROTOTYPE: u64 = 1 << 10;
const TRANSITION: u64 = 1 << 11;
const ADDR_MASK: u64 = 0x000F_FFFF_FFFF_F000;
const ADDR_2M: u64 = 0x000F_FFFF_FFE0_0000;
const ADDR_1G: u64 = 0x000F_FFFF_C000_0000;
const LEVELS: [&str; 4] = ["PML4E", "PDPTE", "PDE", "PTE"];
const TABLES: [&str; 4] = ["PML4", "PDPT", "PD", "PT"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Translation {
    pub pa: u64,
    /// 0x1000, 0x200000 or 0x40000000.
    pub page_size: u64,
    /// The final entry was a transition PTE (page in RAM but not valid in the tables).
    pub transition: bool,
}

/// The kernel's address space: physical memory plus a page-table root (CR3).
#[derive(Clone, Copy)]
pub struct AddressSpace<'a> {
    pub phys: PhysicalMemory<'a>,
    /// PML4 physical base (PCID bits cleared).
    pub dtb: u64,
}

fn is_canonical(va: u64) -> bool {
    let top = va >> 47;
    top == 0 || top == 0x1FFFF
}

impl<'a> AddressSpace<'a> {
    pub fn new(phys: PhysicalMemory<'a>, dtb: u64) -> Self {
        Self {
            phys,
            dtb: dtb & ADDR_MASK,
        }
    }

    /// Walk PML4 → PDPT → PD (→ PT). Returns the leaf translation and, for 4 KiB pages, the PT base.
    fn walk(&self, va: u64) -> Result<(Leaf, Translation)> {
        if !is_canonical(va) {
            return Err(Error::not_present(va, "non-canonical address"));
        }
        let mut table = self.dtb;
        for (level, name) in LEVELS.iter().enumerate().take(3) {
            let idx = (va >> (39 - 9 * level)) & 0x1FF;
            let entry = self.entry(va, level, table, idx)?;
            if entry & PRESENT == 0 {
                return Err(Error::not_present(
                    va,
                    format!("{name} 0x{entry:x} is not present"),
                ));
            }
            if level > 0 && entry & LARGE != 0 {
                let (mask, size) = if level == 1 {
                    (ADDR_1G, 1u64 << 30)
                } else {
                    (ADDR_2M, 1u64 << 21)
                };
                let pa = (entry & mask) | (va & (size - 1));
                let leaf = Leaf::Large(pa & !((1 << 21) - 1), size);
                return Ok((
                    leaf,
                    Translation {
                        pa,
                        page_size: size,
                        transition: false,
                    },
                ));
            }
            table = entry & ADDR_MASK;
        }
        let t = self.pte(va, table)?;
        Ok((Leaf::Table(table), t))
    }

    fn entry(&self, va: u64, level: usize, table: u64, idx: u64) -> Result<u64> {
        self.phys.read_u64(table + idx * 8).map_err(|_| {
            Error::not_present(
                va,
                format!(
                    "{} page at physical 0x{table:x} is not in the dump",
                    TABLES[level]
                ),
            )
        })
    }

    fn pte(&self, va: u64, pt: u64) -> Result<Translation> {
        let pte = self.entry(va, 3, pt, (va >> 12) & 0x1FF)?;
        let transition = pte & PRESENT == 0;
        if transition && (pte & TRANSITION == 0 || pte & PROTOTYPE != 0) {
            return Err(Error::not_present(
                va,
                format!("PTE 0x{pte:x} is not present"),
            ));
        }
        Ok(Translation {
            pa: (pte & ADDR_MASK) | (va & 0xFFF),
            page_size: 0x1000,
            transition,
        })
    }

    /// Translate without caching (a handful of reads from the mapping).
    pub fn translate(&self, va: u64) -> Result<Translation> {
        self.walk(va).map(|(_, t)| t)
    }

    /// A translator with a small cache, for reading ranges and structures.
    pub fn translator(&self) -> Translator<'a> {
        Translator {
            space: *self,
            cache: [(u64::MAX, Leaf::Table(0)); CACHE],
        }
    }
}

const CACHE: usize = 64;

/// What a 2 MiB region resolves to: its page table, or the physical base of the region inside
/// a 2 MiB or 1 GiB page (with that page's size).
#[derive(Clone, Copy)]
enum Leaf {
    Table(u64),
    Large(u64, u64),
}

/// Translation with a direct-mapped cache keyed by the 2 MiB region: walking a range costs one
/// PTE read per 4 KiB page after the first. Owned by one reader; no locks, no sharing.
pub struct Translator<'a> {
    space: AddressSpace<'a>,
    cache: [(u64, Leaf); CACHE],
}

impl<'a> Translator<'a> {
    pub fn space(&self) -> &AddressSpace<'a> {
        &self.space
    }

    pub fn translate(&mut self, va: u64) -> Result<Translation> {
        let key = va >> 21;
        let slot = (key as usize) % CACHE;
        if self.cache[slot].0 == key {
            return match self.cache[slot].1 {
                Leaf::Table(pt) => self.space.pte(va, pt),
                Leaf::Large(base, page_size) => Ok(Translation {
                    pa: base | (va & 0x1F_FFFF),
                    page_size,
                    transition: false,
                }),
            };
        }
        let (leaf, t) = self.space.walk(va)?;
        self.cache[slot] = (key, leaf);
        Ok(t)
    }

    /// Fill `buf` from virtual address `va`; fails at the first absent page, naming its address.
    pub fn read(&mut self, va: u64, buf: &mut [u8]) -> Result<()> {
        let mut done = 0usize;
        while done < buf.len() {
            let addr = va.wrapping_add(done as u64);
            let t = self.translate(addr)?;
            let n = (0x1000 - (addr & 0xFFF) as usize).min(buf.len() - done);
            self.space
                .phys
                .read(t.pa, &mut buf[done..done + n])
                .map_err(|_| {
                    Error::not_present(
                        addr,
                        format!(
                            "maps physical 0x{:x}, which is not in the dump",
                            t.pa & !0xFFF
                        ),
                    )
                })?;
            done += n;
        }
        Ok(())
    }

    pub fn read_vec(&mut self, va: u64, n: usize) -> Result<Vec<u8>> {
        let mut v = vec![0u8; n];
        self.read(va, &mut v)?;
        Ok(v)
    }

    pub fn read_u64(&mut self, va: u64) -> Result<u64> {
        let mut b = [0u8; 8];
        self.read(va, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    pub fn read_u32(&mut self, va: u64) -> Result<u32> {
        let mut b = [0u8; 4];
        self.read(va, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    pub fn read_u16(&mut self, va: u64) -> Result<u16> {
        let mut b = [0u8; 2];
        self.read(va, &mut b)?;
        Ok(u16::from_le_bytes(b))
    }
}
