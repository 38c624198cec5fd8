//! Tag owners: the modules whose images hold a tag's four bytes (what
//! `!for_each_module s -a @#Base @#End "Leak"` finds). A driver that references a leaking tag is
//! a suspect.

use memchr::memmem;
use rayon::prelude::*;

use crate::container::PAGE_SIZE;
use crate::kernel::Modules;
use crate::memory::AddressSpace;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub module: String,
    pub base: u64,
    /// Offsets of the tag bytes from the image base.
    pub offsets: Vec<u64>,
}

/// Largest image searched (a kernel image is tens of MiB; a bigger SizeOfImage is corrupt).
const MAX_IMAGE: u64 = 256 << 20;

/// For each tag, the modules holding its bytes; pages of an image absent from the dump are
/// skipped (kernel dumps may lack discardable sections). Matches spanning two pages count.
pub fn find(space: &AddressSpace, modules: &Modules, tags: &[u32]) -> Vec<(u32, Vec<Owner>)> {
    let finders: Vec<(u32, memmem::Finder)> = tags
        .iter()
        .map(|&t| (t, memmem::Finder::new(&t.to_le_bytes()).into_owned()))
        .collect();
    let per_module: Vec<Vec<Vec<u64>>> = modules
        .list
        .par_iter()
        .map(|m| {
            let mut hits = vec![Vec::new(); finders.len()];
            let mut tr = space.translator();
            let size = m.size.min(MAX_IMAGE);
            // Read page by page with a 3-byte overlap so tags across page edges are found.
            let mut buf = vec![0u8; PAGE_SIZE as usize + 3];
            let mut carry = 0usize;
            let mut off = 0u64;
            while off < size {
                let n = PAGE_SIZE.min(size - off) as usize;
                if tr.read(m.base + off, &mut buf[carry..carry + n]).is_err() {
                    carry = 0;
                    off += PAGE_SIZE;
                    continue;
                }
                let window = &buf[..carry + n];
                let origin = off - carry as u64;
                for (i, (_, f)) in finders.iter().enumerate() {
                    hits[i].extend(f.find_iter(window).map(|p| origin + p as u64));
                }
                let keep = 3.min(window.len());
                let tail_start = window.len() - keep;
                buf.copy_within(tail_start..tail_start + keep, 0);
                carry = keep;
                off += PAGE_SIZE;
            }
            for h in &mut hits {
                h.sort_unstable();
                h.dedup();
            }
            hits
        })
        .collect();
    finders
        .iter()
        .enumerate()
        .map(|(i, (t, _))| {
            let owners = modules
                .list
                .iter()
                .enumerate()
                .filter(|(j, _)| !per_module[*j][i].is_empty())
                .map(|(j, m)| Owner {
                    module: m.name.clone(),
                    base: m.base,
                    offsets: per_module[j][i].clone(),
                })
                .collect();
            (*t, owners)
        })
        .collect()
}
