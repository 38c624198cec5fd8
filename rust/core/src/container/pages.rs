//! Where each physical page lives in the file: runs (full and RDMP dumps) or a bitmap with a
//! precomputed rank index (bitmap dumps). Lookup is O(log runs) or O(1); nothing walks the
//! bitmap per read.

use super::header::{DumpType, Header, Run, PAGE_SIZE};
use crate::bytes::Le;
use crate::error::{Error, Result};

/// Pages counted per rank-index entry: one u64 of cumulative popcount per 512 bits.
const RANK_BLOCK_BITS: u64 = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub base_pfn: u64,
    pub count: u64,
    /// File offset of the extent's first page.
    pub file_offset: u64,
}

#[derive(Debug)]
pub enum PageMap {
    /// Sorted, non-overlapping extents (full dumps, RDMP range lists).
    Extents(Vec<Extent>),
    /// Bit n set => PFN n stored at first_page + PAGE_SIZE * rank(n), when rank(n) < stored
    /// (a truncated file stores only the first `stored` of the pages its bitmap names).
    Bitmap {
        bitmap_offset: usize,
        bits: u64,
        first_page: u64,
        ranks: Vec<u64>,
        stored: u64,
    },
}

/// A dump cut short: the page map names pages past the end of the file. The pages the file
/// holds are read; the others are treated as not present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncation {
    /// File bytes the page map needs (the end of its last page).
    pub expected_size: u64,
    /// The file's (decompressed) size.
    pub actual_size: u64,
    /// Pages the page map names.
    pub pages_expected: u64,
    /// Pages it names that lie (wholly or partly) past the end of the file.
    pub pages_missing: u64,
}

impl Truncation {
    pub fn describe(&self) -> String {
        format!(
            "the dump is truncated: the file ends at 0x{:x} but its pages run to 0x{:x}; {} of {} pages ({:.1}%) are missing and read as not present",
            self.actual_size,
            self.expected_size,
            self.pages_missing,
            self.pages_expected,
            100.0 * self.pages_missing as f64 / self.pages_expected.max(1) as f64
        )
    }
}

impl PageMap {
    /// File offset of `pfn`'s page, if the dump stores it.
    #[inline]
    pub fn lookup(&self, pfn: u64, file: &[u8]) -> Option<u64> {
        match self {
            PageMap::Extents(ext) => {
                let i = ext.partition_point(|e| e.base_pfn + e.count <= pfn);
                let e = ext.get(i)?;
                (pfn >= e.base_pfn).then(|| e.file_offset + (pfn - e.base_pfn) * PAGE_SIZE)
            }
            PageMap::Bitmap {
                bitmap_offset,
                bits,
                first_page,
                ranks,
                stored,
            } => {
                if pfn >= *bits {
                    return None;
                }
                let word = bitmap_word(file, *bitmap_offset, *bits, pfn / 64);
                if word & (1u64 << (pfn % 64)) == 0 {
                    return None;
                }
                let block = pfn / RANK_BLOCK_BITS;
                let mut rank = *ranks.get(block as usize)?;
                let first_word = block * (RANK_BLOCK_BITS / 64);
                for w in first_word..pfn / 64 {
                    rank += bitmap_word(file, *bitmap_offset, *bits, w).count_ones() as u64;
                }
                rank += (word & ((1u64 << (pfn % 64)) - 1)).count_ones() as u64;
                (rank < *stored).then(|| first_page + rank * PAGE_SIZE)
            }
        }
    }

    /// Present pages as maximal runs of consecutive PFNs (ascending).
    pub fn present_runs(&self, file: &[u8]) -> Vec<Run> {
        match self {
            PageMap::Extents(ext) => {
                // Adjacent extents (runs stored apart in the file) form one run of PFNs.
                let mut out: Vec<Run> = Vec::with_capacity(ext.len());
                for e in ext {
                    match out.last_mut() {
                        Some(r) if r.base_page + r.page_count == e.base_pfn => {
                            r.page_count += e.count
                        }
                        _ => out.push(Run {
                            base_page: e.base_pfn,
                            page_count: e.count,
                        }),
                    }
                }
                out
            }
            PageMap::Bitmap {
                bitmap_offset,
                bits,
                stored,
                ..
            } => {
                let mut out: Vec<Run> = Vec::new();
                let mut left = *stored;
                for w in 0..bits.div_ceil(64) {
                    let mut word = bitmap_word(file, *bitmap_offset, *bits, w);
                    while word != 0 && left > 0 {
                        left -= 1;
                        let pfn = w * 64 + word.trailing_zeros() as u64;
                        word &= word - 1;
                        match out.last_mut() {
                            Some(r) if r.base_page + r.page_count == pfn => r.page_count += 1,
                            _ => out.push(Run {
                                base_page: pfn,
                                page_count: 1,
                            }),
                        }
                    }
                }
                out
            }
        }
    }

    pub fn page_count(&self) -> u64 {
        match self {
            PageMap::Extents(ext) => ext.iter().map(|e| e.count).sum(),
            PageMap::Bitmap { ranks, stored, .. } => {
                ranks.last().copied().unwrap_or(0).min(*stored)
            }
        }
    }
}

/// Build the page map for the container. Every page it names must lie inside the file, unless
/// the file was cut short (disk full, a page file too small while writing): then the header's
/// RequiredDumpSpace must cover the pages named, at least one page must be stored, and the
/// pages past the end are dropped from the map (a [`Truncation`] says how many). A header,
/// bitmap or range list cut short is still an error.
pub fn build(
    file: &[u8],
    header: &Header,
    dump_type: DumpType,
) -> Result<(PageMap, Vec<String>, Option<Truncation>)> {
    let mut notes = Vec::new();
    let required = header.required_dump_space;
    let (map, cut) = match dump_type {
        DumpType::Full => {
            extents_from_runs(&header.runs, 0x2000, file.len() as u64, 0x98, required)?
        }
        DumpType::KernelBitmap | DumpType::CompleteBitmap | DumpType::LiveKernelBitmap => {
            bitmap(file, &mut notes, required)?
        }
        DumpType::KernelMemory | DumpType::KernelAndUserMemory | DumpType::CompleteMemory => {
            rdmp(file, dump_type, required)?
        }
    };
    if let Some(t) = &cut {
        notes.push(t.describe());
    }
    Ok((map, notes, cut))
}

/// Whether pages ending at `need` (past the file's end `len`) are a truncation the reader
/// accepts: the header's RequiredDumpSpace covers them and at least one page is stored.
fn truncation(
    need: u64,
    len: u64,
    required: u64,
    expected: u64,
    missing: u64,
) -> Option<Truncation> {
    (need <= required && missing < expected).then_some(Truncation {
        expected_size: need,
        actual_size: len,
        pages_expected: expected,
        pages_missing: missing,
    })
}

fn extents_from_runs(
    runs: &[Run],
    first: u64,
    file_len: u64,
    desc_off: u64,
    required: u64,
) -> Result<(PageMap, Option<Truncation>)> {
    let mut offset = first;
    let mut out = Vec::with_capacity(runs.len());
    let (mut expected, mut missing) = (0u64, 0u64);
    let mut first_cut: Option<(usize, Run, u64)> = None;
    for (i, r) in runs.iter().enumerate() {
        // The same bound as the header's runs: RDMP ranges must not wrap the PFN space.
        if r.base_page
            .checked_add(r.page_count)
            .is_none_or(|e| e > 1 << 40)
        {
            return Err(Error::format(
                desc_off + 0x10 * i as u64,
                format!(
                    "range {i}: base page 0x{:x} + 0x{:x} pages exceeds the 52-bit physical address space",
                    r.base_page, r.page_count
                ),
            ));
        }
        let end = r
            .page_count
            .checked_mul(PAGE_SIZE)
            .and_then(|b| b.checked_add(offset));
        let Some(end) = end else {
            return Err(Error::format(
                desc_off + 0x10 * i as u64,
                format!(
                    "run {i} (PFN 0x{:x}, 0x{:x} pages) needs more file bytes than 64 bits address",
                    r.base_page, r.page_count
                ),
            ));
        };
        // Pages wholly inside the file are stored; the rest of the run is missing.
        let stored = (file_len.saturating_sub(offset) / PAGE_SIZE).min(r.page_count);
        if stored < r.page_count && first_cut.is_none() {
            first_cut = Some((i, *r, end));
        }
        expected += r.page_count;
        missing += r.page_count - stored;
        if stored > 0 {
            out.push(Extent {
                base_pfn: r.base_page,
                count: stored,
                file_offset: offset,
            });
        }
        offset = end;
    }
    let mut cut = None;
    if let Some((i, r, _)) = first_cut {
        cut = truncation(offset, file_len, required, expected, missing);
        if cut.is_none() {
            return Err(Error::format(
                desc_off + 0x10 * i as u64,
                format!(
                    "run {i} (PFN 0x{:x}, 0x{:x} pages) needs file bytes up to 0x{offset:x} but the file ends at 0x{file_len:x}{}",
                    r.base_page,
                    r.page_count,
                    if missing >= expected {
                        " (no page is stored)".to_string()
                    } else {
                        format!(", beyond the header's RequiredDumpSpace 0x{required:x}")
                    }
                ),
            ));
        }
    }
    out.sort_by_key(|e| e.base_pfn);
    if out
        .windows(2)
        .any(|w| w[0].base_pfn + w[0].count > w[1].base_pfn)
    {
        return Err(Error::format(desc_off, "physical memory runs overlap"));
    }
    Ok((PageMap::Extents(out), cut))
}

/// BMP_HEADER64 at 0x2000 (§2b): FirstPage 0x20, TotalPresentPages 0x28, Pages (bit count) 0x30.
fn bitmap(
    file: &[u8],
    notes: &mut Vec<String>,
    required: u64,
) -> Result<(PageMap, Option<Truncation>)> {
    const B: usize = 0x2000;
    let len = file.len() as u64;
    let hdr = file.slice_at(B, 0x38).ok_or_else(|| {
        Error::format(
            len,
            "truncated bitmap dump: the BMP_HEADER64 at 0x2000 needs 0x38 bytes",
        )
    })?;
    let sig = &hdr[..4];
    if sig != b"SDMP" && sig != b"FDMP" {
        return Err(Error::format(
            B as u64,
            format!("bitmap header signature {sig:02x?} is neither \"SDMP\" nor \"FDMP\""),
        ));
    }
    if &hdr[4..8] != b"DUMP" {
        return Err(Error::format(
            B as u64 + 4,
            "bitmap header ValidDump is not \"DUMP\"",
        ));
    }
    let first_page = hdr.u64_at(0x20).unwrap_or(0);
    let total_present = hdr.u64_at(0x28).unwrap_or(0);
    let bits = hdr.u64_at(0x30).unwrap_or(0);
    let bitmap_offset = B + 0x38;
    let bitmap_bytes = bits.div_ceil(8);
    if bitmap_bytes > len.saturating_sub(bitmap_offset as u64) {
        return Err(Error::format(
            (B + 0x30) as u64,
            format!("bitmap of 0x{bits:x} bits (0x{bitmap_bytes:x} bytes) runs past the end of the file at 0x{len:x}"),
        ));
    }
    if first_page < bitmap_offset as u64 + bitmap_bytes || first_page % PAGE_SIZE != 0 {
        return Err(Error::format(
            (B + 0x20) as u64,
            format!("FirstPage 0x{first_page:x} overlaps the bitmap or is not page-aligned"),
        ));
    }
    // Rank index: cumulative set bits before each 512-bit block. Bits past `bits` in the last
    // word are masked; words are read whole only when they lie fully inside the bitmap bytes.
    let words = bits.div_ceil(64);
    let mut ranks = Vec::with_capacity((bits / RANK_BLOCK_BITS + 2) as usize);
    let mut count = 0u64;
    for w in 0..words {
        if w % (RANK_BLOCK_BITS / 64) == 0 {
            ranks.push(count);
        }
        count += bitmap_word(file, bitmap_offset, bits, w).count_ones() as u64;
    }
    ranks.push(count);
    if count != total_present {
        notes.push(format!(
            "bitmap has {count} pages set but its header says TotalPresentPages = {total_present}; the bitmap was trusted"
        ));
    }
    let need = count
        .checked_mul(PAGE_SIZE)
        .and_then(|b| b.checked_add(first_page));
    let stored = (len.saturating_sub(first_page) / PAGE_SIZE).min(count);
    let mut cut = None;
    if need.is_none_or(|n| n > len) {
        cut = need.and_then(|n| truncation(n, len, required, count, count - stored));
        if cut.is_none() {
            return Err(Error::format(
                (B + 0x20) as u64,
                format!("bitmap stores {count} pages from 0x{first_page:x}, past the end of the file at 0x{len:x}{}",
                    if stored == 0 { " (no page is stored)".to_string() } else { format!(" and the header's RequiredDumpSpace 0x{required:x}") }),
            ));
        }
    }
    Ok((
        PageMap::Bitmap {
            bitmap_offset,
            bits,
            first_page,
            ranks,
            stored,
        },
        cut,
    ))
}

/// Word `w` of the bitmap (LSB = lowest PFN); bits at or past `bits` read as 0, so bytes after
/// the bitmap (the first stored page) never count as present pages.
#[inline]
fn bitmap_word(file: &[u8], off: usize, bits: u64, w: u64) -> u64 {
    let start = off + w as usize * 8;
    if (w + 1) * 64 <= bits {
        return file.u64_at(start).unwrap_or(0);
    }
    let valid_bits = bits.saturating_sub(w * 64);
    let mut buf = [0u8; 8];
    let n = valid_bits.div_ceil(8) as usize;
    if let Some(src) = file.slice_at(start, n) {
        buf[..n].copy_from_slice(src);
    }
    let word = u64::from_le_bytes(buf);
    if valid_bits >= 64 {
        word
    } else {
        word & ((1u64 << valid_bits) - 1)
    }
}

/// RDMP_HEADER64 at 0x2000 (§2c): range list at 0x2030, pages from FirstPageOffset.
fn rdmp(file: &[u8], dump_type: DumpType, required: u64) -> Result<(PageMap, Option<Truncation>)> {
    const B: usize = 0x2000;
    let len = file.len() as u64;
    let hdr = file.slice_at(B, 0x30).ok_or_else(|| {
        Error::format(
            len,
            "truncated RDMP dump: the header at 0x2000 needs 0x30 bytes",
        )
    })?;
    if hdr.u32_at(0) != Some(0x40) || &hdr[4..8] != b"RDMP" || &hdr[8..12] != b"DUMP" {
        return Err(Error::format(
            B as u64,
            "RDMP header at 0x2000 lacks Marker 0x40 / \"RDMP\" / \"DUMP\"",
        ));
    }
    let metadata_size = hdr.u64_at(0x10).unwrap_or(0);
    let first_page = hdr.u64_at(0x18).unwrap_or(0);
    // kdmp-parser's sanity check; the meaning of MetadataSize is inferred (spec uncertainty 5).
    if metadata_size < 0x20 || first_page.checked_sub(0x2040) != Some(metadata_size - 0x20) {
        return Err(Error::format((B + 0x10) as u64, format!("RDMP MetadataSize 0x{metadata_size:x} disagrees with FirstPageOffset 0x{first_page:x}")));
    }
    let total = (dump_type == DumpType::CompleteMemory).then(|| hdr.u64_at(0x28).unwrap_or(0));
    let max_entries = (metadata_size / 16).min(len / 16);
    let mut runs = Vec::new();
    let mut seen = 0u64;
    for i in 0..max_entries {
        let off = 0x2030 + 16 * i as usize;
        let (Some(pfn), Some(n)) = (file.u64_at(off), file.u64_at(off + 8)) else {
            return Err(Error::format(
                off as u64,
                "RDMP range list runs past the end of the file",
            ));
        };
        if pfn == 0 || total.is_some_and(|t| seen >= t) {
            break;
        }
        runs.push(Run {
            base_page: pfn,
            page_count: n,
        });
        seen = seen.saturating_add(n);
    }
    if first_page > len {
        return Err(Error::format(
            (B + 0x18) as u64,
            format!("RDMP FirstPageOffset 0x{first_page:x} is past the end of the file at 0x{len:x}: the range list is cut short"),
        ));
    }
    extents_from_runs(&runs, first_page, len, 0x2030, required)
}
