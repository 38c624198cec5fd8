//! Physical memory: reads by physical address over the container's page map.

use crate::container::{Container, Run, PAGE_SIZE};
use crate::error::{Error, Result};

/// A cheap, copyable view of the dump's physical memory.
#[derive(Clone, Copy)]
pub struct PhysicalMemory<'a> {
    container: &'a Container,
}

impl<'a> PhysicalMemory<'a> {
    pub fn new(container: &'a Container) -> Self {
        Self { container }
    }

    /// The stored page of `pfn`, or a NotPresent error naming its physical address.
    #[inline]
    pub fn page(&self, pfn: u64) -> Result<&'a [u8]> {
        self.container
            .page(pfn)
            .ok_or_else(|| Error::not_in_dump(pfn.wrapping_mul(PAGE_SIZE)))
    }

    /// Fill `buf` from physical address `pa`; fails at the first page the dump lacks.
    pub fn read(&self, pa: u64, buf: &mut [u8]) -> Result<()> {
        let mut done = 0usize;
        while done < buf.len() {
            let addr = pa
                .checked_add(done as u64)
                .ok_or_else(|| Error::not_in_dump(u64::MAX))?;
            let page = self
                .page(addr / PAGE_SIZE)
                .map_err(|_| Error::not_in_dump(addr))?;
            let in_page = (addr % PAGE_SIZE) as usize;
            let n = (PAGE_SIZE as usize - in_page).min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&page[in_page..in_page + n]);
            done += n;
        }
        Ok(())
    }

    #[inline]
    pub fn read_u64(&self, pa: u64) -> Result<u64> {
        let page = self.page(pa / PAGE_SIZE)?;
        let o = (pa % PAGE_SIZE) as usize;
        match page.get(o..o + 8) {
            Some(b) => Ok(u64::from_le_bytes(b.try_into().unwrap_or_default())),
            None => {
                let mut b = [0u8; 8];
                self.read(pa, &mut b)?;
                Ok(u64::from_le_bytes(b))
            }
        }
    }

    /// Present PFNs as maximal runs, ascending.
    pub fn present_runs(&self) -> Vec<Run> {
        self.container.pages.present_runs(&self.container.bytes)
    }

    /// See [`Container::release`]: keep a whole-dump pass from growing the resident set.
    pub fn release(&self, start_pfn: u64, end_pfn: u64) {
        self.container.release(start_pfn, end_pfn);
    }

    pub fn page_count(&self) -> u64 {
        self.container.pages.page_count()
    }

    pub fn container(&self) -> &'a Container {
        self.container
    }
}
