//! Pool on the kernel segment heap (build 18362 and later): a tag scan of VS and LFH
//! subsegments.
//!
//! Pages are no PreviousSize chains there, but each allocated VS chunk and each LFH block still
//! begins with a plain POOL_HEADER (MemProcFS `vmmwinpool.c`). Random data must not yield
//! phantom tags, so a header counts only inside a subsegment whose own encoded structure
//! decodes: the VS chunk chain (each 16-byte chunk header XORed with its VA and HeapKey) must
//! cover the subsegment exactly, and an LFH subsegment's BlockOffsets (XORed with LfhKey and
//! its VA >> 12) must give a block size and first offset that its allocated blocks' headers
//! confirm. Whether a block is allocated comes from the VS chunk's Allocated field or the LFH
//! bitmap (2 bits a block, 01 = allocated), never from the header, which a freed LFH block
//! keeps. A free VS chunk has no header: its free-tree node overlays it.
//!
//! The scan reads the first 0x30 bytes of every page (a subsegment's first page starts with a
//! LIST_ENTRY of kernel pointers; a VS one has Signature = Size ^ 0x2BED), so it costs what the
//! legacy scan costs; only candidate subsegments are read whole, by VA.

use std::collections::HashMap;

use rayon::prelude::*;
use serde_json::Value;

use super::globals::{self, Kernel, Sources};
use super::layout::PoolLayout;
use super::pages::{header, page_chunks, Header, Keep, Pool, PoolScan};
use super::tag;
use crate::bytes::parse_int;
use crate::container::PAGE_SIZE;
use crate::error::{Error, Result};
use crate::kernel::fields::FieldAt;
use crate::kernel::Symbols;
use crate::memory::{AddressSpace, PhysicalMemory, ReverseMap, Translator};

/// Candidate subsegments per task in the walk pass.
const WALK_BATCH: usize = 64;
/// Subsegments larger than this are not believed (MemProcFS's 1 MiB sanity bound).
const MAX_SUBSEGMENT: u64 = 0x10_0000;
/// Candidates the key recovery looks at.
const KEY_SAMPLE: usize = 4096;
/// Slack an allocated VS chunk may have beyond its pool block (alignment / unused bytes).
const MAX_SLACK: u64 = 0x40;

/// ISF types that replace the profile's segment-heap layouts ([`SegLayout::apply_symbols`]).
const VS_SUBSEGMENT: &str = "_HEAP_VS_SUBSEGMENT";
const VS_CHUNK_HEADER: &str = "_HEAP_VS_CHUNK_HEADER";
const LFH_SUBSEGMENT: &str = "_HEAP_LFH_SUBSEGMENT";
const HEAP_GLOBALS: &str = "_RTLP_HP_HEAP_GLOBALS";
/// A plausible _HEAP_VS_CHUNK_HEADER size from a symbol table (0x10 on every build).
const MAX_CHUNK_HEADER: usize = 0x100;

/// The profile's `pool.segment_heap` section (a symbol table's types replace its layouts).
#[derive(Debug, Clone)]
pub struct SegLayout {
    pub keys_global: String,
    heap_key: u64,
    lfh_key: u64,
    /// _HEAP_VS_SUBSEGMENT.Size (in `vs_unit`s) and .Signature (15 bits: Size ^ `vs_xor`).
    vs_size: FieldAt,
    vs_signature: FieldAt,
    vs_xor: u16,
    vs_first: u64,
    vs_unit: u64,
    chunk: u64,
    size_shift: u32,
    prev_shift: u32,
    alloc_shift: u32,
    lfh_free_count: usize,
    lfh_block_count: usize,
    lfh_offsets: usize,
    lfh_bitmap: usize,
    va_shift_full: bool,
}

impl SegLayout {
    pub fn parse(v: &Value) -> Result<Self> {
        let get = |path: &[&str]| -> Result<&Value> {
            path.iter()
                .try_fold(v, |v, k| v.get(k))
                .ok_or_else(|| Error::format(0, format!("pool.segment_heap.{}", path.join("."))))
        };
        let num = |path: &[&str]| -> Result<u64> {
            let x = get(path)?;
            x.as_u64()
                .or_else(|| x.as_str().and_then(parse_int))
                .ok_or_else(|| {
                    Error::format(0, format!("pool.segment_heap.{}: {x}", path.join(".")))
                })
        };
        Ok(Self {
            keys_global: get(&["keys", "global"])?
                .as_str()
                .unwrap_or("ExPoolState")
                .to_string(),
            heap_key: num(&["keys", "HeapKey"])?,
            lfh_key: num(&["keys", "LfhKey"])?,
            vs_size: u16_field(num(&["vs_subsegment", "Size"])?, 16)?,
            vs_signature: u16_field(num(&["vs_subsegment", "Signature"])?, 15)?,
            vs_xor: num(&["vs_subsegment", "signature_xor"])? as u16,
            vs_first: num(&["vs_subsegment", "first_chunk"])?,
            vs_unit: num(&["vs_subsegment", "size_unit"])?,
            chunk: num(&["vs_chunk_header", "size"])?,
            size_shift: num(&["vs_chunk_header", "UnsafeSize", "shift"])? as u32,
            prev_shift: num(&["vs_chunk_header", "UnsafePrevSize", "shift"])? as u32,
            alloc_shift: num(&["vs_chunk_header", "Allocated", "shift"])? as u32,
            lfh_free_count: num(&["lfh_subsegment", "FreeCount"])? as usize,
            lfh_block_count: num(&["lfh_subsegment", "BlockCount"])? as usize,
            lfh_offsets: num(&["lfh_subsegment", "BlockOffsets"])? as usize,
            lfh_bitmap: num(&["lfh_subsegment", "BlockBitmap"])? as usize,
            va_shift_full: get(&["lfh_subsegment", "va_shift"])?.as_str() == Some("full"),
        })
    }

    /// Replace the profile's layouts with a symbol table's, type by type: a type is taken only
    /// when it has every member read here (so a type's layout never mixes the two), and each
    /// one taken is recorded in `sources`. The chunk header's bit positions are taken where
    /// the table gives `Sizes.UnsafeSize`, `.UnsafePrevSize` and `.Allocated` as bitfields.
    pub fn apply_symbols(&mut self, syms: &Symbols, sources: &mut Sources) {
        let mut took = |ty: &str| {
            sources.insert(ty.into(), format!("symbols {}", syms.origin));
        };
        // Offsets inside a subsegment's first page (or the heap globals' first page).
        let offsets = |ty: &str, names: [&str; 2]| {
            names.map(|n| {
                syms.member_offset(ty, n)
                    .filter(|&o| o + 8 <= PAGE_SIZE as usize)
            })
        };
        let in_page = |f: FieldAt| f.end() <= PAGE_SIZE as usize;
        let vs =
            ["Size", "Signature"].map(|n| syms.resolve(VS_SUBSEGMENT, n).filter(|f| in_page(*f)));
        if let [Some(size), Some(sig)] = vs {
            (self.vs_size, self.vs_signature) = (size, sig);
            took(VS_SUBSEGMENT);
        }
        let chunk = syms.types.get(VS_CHUNK_HEADER).map(|t| t.size);
        if let Some(size) = chunk.filter(|s| (1..=MAX_CHUNK_HEADER).contains(s)) {
            // Bit position in HeaderBits (the u64 at +0) of a field of the expected length.
            let bit = |name: &str, bits: u8| {
                let f = syms.resolve(VS_CHUNK_HEADER, &format!("Sizes.{name}"))?;
                (f.bits() == bits && f.end() <= 8)
                    .then(|| f.offset() as u32 * 8 + u32::from(f.shift()))
            };
            let sizes = (
                bit("UnsafeSize", 16),
                bit("UnsafePrevSize", 16),
                bit("Allocated", 8),
            );
            if let (Some(size), Some(prev), Some(alloc)) = sizes {
                (self.size_shift, self.prev_shift, self.alloc_shift) = (size, prev, alloc);
            }
            self.chunk = size as u64;
            took(VS_CHUNK_HEADER);
        }
        let lfh = offsets(LFH_SUBSEGMENT, ["FreeCount", "BlockCount"]);
        let blocks = offsets(LFH_SUBSEGMENT, ["BlockOffsets", "BlockBitmap"]);
        if let ([Some(free), Some(count)], [Some(offs), Some(bitmap)]) = (lfh, blocks) {
            self.lfh_free_count = free;
            self.lfh_block_count = count;
            self.lfh_offsets = offs;
            self.lfh_bitmap = bitmap;
            took(LFH_SUBSEGMENT);
        }
        if let [Some(heap), Some(lfh)] = offsets(HEAP_GLOBALS, ["HeapKey", "LfhKey"]) {
            (self.heap_key, self.lfh_key) = (heap as u64, lfh as u64);
            took(HEAP_GLOBALS);
        }
    }

    fn size_mask(&self) -> u64 {
        0xFFFF << self.size_shift | 0xFF << self.alloc_shift
    }
    fn prev_mask(&self) -> u64 {
        0xFFFF << self.prev_shift
    }
    /// The VA term of BlockOffsets: (u32)(va >> 12) from 26100, else (u32)va >> 12.
    fn lfh_va_bits(&self, va: u64) -> u32 {
        if self.va_shift_full {
            (va >> 12) as u32
        } else {
            (va as u32) >> 12
        }
    }
    fn bitmap_bytes(&self, count: u64) -> u64 {
        count.div_ceil(4)
    }
}

/// A profile's 16-bit field at `offset`, its low `bits` bits.
fn u16_field(offset: u64, bits: u8) -> Result<FieldAt> {
    FieldAt::at(offset as usize, 2, 0, bits)
        .filter(|f| f.end() <= PAGE_SIZE as usize)
        .ok_or_else(|| Error::format(0, format!("pool.segment_heap: offset {offset:#x}")))
}

/// HeapKey and LfhKey. `heap` is (key, mask): the mask says which HeapKey bits are known, all
/// of them from symbols, the size, previous-size and allocated fields when recovered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keys {
    pub heap: Option<(u64, u64)>,
    pub lfh: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Vs,
    Lfh,
}

#[inline]
fn kernel_ptr(q: u64) -> bool {
    q >> 47 == 0x1_FFFF
}

#[inline]
fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
#[inline]
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
#[inline]
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// What a page's first 0x30 bytes say: the first page of a VS or an LFH subsegment, or not.
#[inline]
fn candidate(page: &[u8], s: &SegLayout) -> Option<Kind> {
    let (q0, q1) = (u64_at(page, 0)?, u64_at(page, 8)?);
    if !kernel_ptr(q0) || !kernel_ptr(q1) {
        return None;
    }
    let size = s.vs_size.read(page);
    let sig = s.vs_signature.read(page);
    if size != 0 && (sig ^ size ^ u64::from(s.vs_xor)) & s.vs_signature.mask() == 0 {
        return Some(Kind::Vs);
    }
    let count = u16_at(page, s.lfh_block_count)?;
    let free = u16_at(page, s.lfh_free_count)?;
    (count != 0 && free <= count).then_some(Kind::Lfh)
}

/// A plausible in-use pool header: a tag scanners accept, a non-zero size and pool type.
#[inline]
fn in_use(h: &Header) -> bool {
    h.size != 0 && h.pool_type != 0 && tag::plausible(h.tag)
}

fn mode<K: std::hash::Hash + Eq + Copy>(votes: &HashMap<K, usize>) -> Option<(K, usize)> {
    let total: usize = votes.values().sum();
    let (k, n) = votes.iter().max_by_key(|(_, n)| **n)?;
    // Two agreeing subsegments, or the only one there is.
    (*n >= 2 || total == 1).then_some((*k, *n))
}

/// Recover HeapKey's size/allocated bits from the first chunk of VS subsegments whose pool
/// header says how big the chunk is (BlockSize + 1 units, allocated), then its previous-size
/// bits from the second chunk (whose UnsafePrevSize is the first's size).
fn recover_heap(
    pages: &[(&[u8], u64)],
    s: &SegLayout,
    l: &PoolLayout,
) -> Option<(u64, u64, String)> {
    let mut v1: HashMap<u64, usize> = HashMap::new();
    for (page, va) in pages {
        let off = s.vs_first as usize;
        let (Some(enc), Some(h)) = (u64_at(page, off), header(page, off + s.chunk as usize, l))
        else {
            continue;
        };
        if in_use(&h) {
            let plain = (h.size + 1) << s.size_shift | 1 << s.alloc_shift;
            *v1.entry((enc ^ (va + off as u64) ^ plain) & s.size_mask())
                .or_default() += 1;
        }
    }
    let (k1, n1) = mode(&v1)?;
    let mut v2: HashMap<u64, usize> = HashMap::new();
    for (page, va) in pages {
        let off = s.vs_first;
        let Some(enc) = u64_at(page, off as usize) else {
            continue;
        };
        let units = ((enc ^ (va + off) ^ k1) >> s.size_shift) & 0xFFFF;
        let off2 = off + units * 16;
        if let Some(enc2) = u64_at(page, off2 as usize).filter(|_| units != 0) {
            let plain = units << s.prev_shift;
            *v2.entry((enc2 ^ (va + off2) ^ plain) & s.prev_mask())
                .or_default() += 1;
        }
    }
    let (key, mask) = match mode(&v2) {
        Some((k2, _)) => (k1 | k2, s.size_mask() | s.prev_mask()),
        None => (k1, s.size_mask()),
    };
    let why = format!(
        "recovered from the dump: {n1} of {} VS subsegments agree (known bits {mask:#x})",
        v1.values().sum::<usize>()
    );
    Some((key, mask, why))
}

/// Recover LfhKey from LFH subsegments whose first page shows two equal-size blocks in a row:
/// their size and the first block offset that fits the bitmap give the plain BlockOffsets.
fn recover_lfh(pages: &[(&[u8], u64)], s: &SegLayout, l: &PoolLayout) -> Option<(u32, String)> {
    let mut votes: HashMap<u32, usize> = HashMap::new();
    for (page, va) in pages {
        let (Some(enc), Some(count)) =
            (u32_at(page, s.lfh_offsets), u16_at(page, s.lfh_block_count))
        else {
            continue;
        };
        let min_first = (s.lfh_bitmap as u64 + s.bitmap_bytes(u64::from(count))).div_ceil(16) * 16;
        let mut off = min_first as usize;
        while off + 2 * l.header_size <= PAGE_SIZE as usize {
            let found = header(page, off, l).filter(in_use).and_then(|h| {
                let size = h.size * l.block_unit;
                let next = off + size as usize;
                let ok = next + l.header_size > PAGE_SIZE as usize
                    || header(page, next, l)
                        .is_some_and(|n| n.size == h.size && tag::plausible(n.tag));
                ok.then_some(size)
            });
            if let Some(size) = found {
                let first = off as u64 - (off as u64 - min_first) / size * size;
                let plain = (size | first << 16) as u32;
                *votes.entry(enc ^ s.lfh_va_bits(*va) ^ plain).or_default() += 1;
                break;
            }
            off += 16;
        }
    }
    let (k, n) = mode(&votes)?;
    Some((
        k,
        format!(
            "recovered from the dump: {n} of {} LFH subsegments agree",
            votes.values().sum::<usize>()
        ),
    ))
}

/// The keys: from the heap globals that ExPoolState's first pointer leads to (symbols or
/// profile), else recovered from the candidates. Each key's origin goes into `sources`.
fn keys(
    tr: &mut Translator,
    k: Option<Kernel>,
    (s, l): (&SegLayout, &PoolLayout),
    vs: &[(&[u8], u64)],
    lfh: &[(&[u8], u64)],
    sources: &mut Sources,
) -> Keys {
    let from_globals = k.and_then(|k| {
        let mut src = Sources::new();
        let state = globals::address_of(&s.keys_global, k, &mut src).ok()?;
        let g = tr.read_u64(state).ok().filter(|&g| kernel_ptr(g))?;
        let heap = tr.read_u64(g + s.heap_key).ok()?;
        let lfh = tr.read_u64(g + s.lfh_key).ok()?;
        let how = src.remove(&s.keys_global).unwrap_or_default();
        Some((heap, lfh as u32, how))
    });
    if let Some((heap, lfh, how)) = from_globals {
        let why = format!("{} -> heap globals ({how})", s.keys_global);
        sources.insert("HeapKey".into(), why.clone());
        sources.insert("LfhKey".into(), why);
        return Keys {
            heap: Some((heap, u64::MAX)),
            lfh: Some(lfh),
        };
    }
    let heap = recover_heap(vs, s, l).map(|(key, mask, why)| {
        sources.insert("HeapKey".into(), format!("heuristic: {why}"));
        (key, mask)
    });
    let lfh = recover_lfh(lfh, s, l).map(|(key, why)| {
        sources.insert("LfhKey".into(), format!("heuristic: {why}"));
        key
    });
    Keys { heap, lfh }
}

/// One subsegment's blocks: (offset of the header from the subsegment, header, allocated).
type Found = Vec<(u64, Header, bool)>;

/// A subsegment's pages, read by VA (its pages need not be physically contiguous); None for
/// a page the dump does not hold.
struct Pages<'p> {
    va: u64,
    pages: Vec<Option<&'p [u8]>>,
}

impl<'p> Pages<'p> {
    fn read(tr: &mut Translator<'p>, phys: &PhysicalMemory<'p>, va: u64, bytes: u64) -> Self {
        let n = bytes.div_ceil(PAGE_SIZE) as usize;
        let pages = (0..n as u64)
            .map(|i| {
                let t = tr.translate(va + i * PAGE_SIZE).ok()?;
                phys.page(t.pa >> 12).ok()
            })
            .collect();
        Self { va, pages }
    }
    fn bytes(&self, off: u64, n: usize) -> Option<&'p [u8]> {
        let p = self.pages.get((off / PAGE_SIZE) as usize)?.as_ref()?;
        let at = (off % PAGE_SIZE) as usize;
        p.get(at..at + n)
    }
    fn header(&self, off: u64, l: &PoolLayout) -> Option<Header> {
        header(self.bytes(off, l.header_size)?, 0, l)
    }
}

/// Walk a VS subsegment's chunk chain. `Err` = rejected (its signature matched but the chain
/// does not hold); the walk stops early, keeping what it validated, at a page the dump lacks.
fn walk_vs(
    p: &Pages,
    size: u64,
    s: &SegLayout,
    l: &PoolLayout,
    key: (u64, u64),
) -> std::result::Result<Found, ()> {
    let (key, mask) = key;
    let check_prev = mask & s.prev_mask() == s.prev_mask();
    let mut out = Vec::new();
    let mut off = s.vs_first;
    let mut prev: Option<u64> = None;
    while off < size {
        let Some(enc) = p.bytes(off, 8).and_then(|b| u64_at(b, 0)) else {
            break;
        };
        let d = enc ^ (p.va + off) ^ key;
        let units = (d >> s.size_shift) & 0xFFFF;
        let allocated = (d >> s.alloc_shift) & 0xFF;
        let bytes = units * 16;
        let prev_ok = !check_prev || prev.is_none_or(|pv| (d >> s.prev_shift) & 0xFFFF == pv);
        if bytes < 2 * s.chunk || off + bytes > size || allocated > 1 || !prev_ok {
            return Err(());
        }
        if allocated == 1 {
            let end = off + bytes;
            let fits = |at: u64, h: &Header| {
                let b = h.size * l.block_unit;
                in_use(h) && at + b <= end && end - at - b < MAX_SLACK
            };
            let at = off + s.chunk;
            let h = match p.header(at, l) {
                Some(h) if fits(at, &h) => Some((at, h)),
                // MemProcFS: a block that crosses a page has its header at the next page.
                _ => {
                    let next = (at | (PAGE_SIZE - 1)) + 1;
                    (next < end)
                        .then(|| p.header(next, l))
                        .flatten()
                        .filter(|h| fits(next, h))
                        .map(|h| (next, h))
                }
            };
            match h {
                Some((at, h)) => out.push((at, h, true)),
                None if p.bytes(at, l.header_size).is_none() => break,
                None => return Err(()),
            }
        }
        prev = Some(units);
        off += bytes;
    }
    Ok(out)
}

/// An LFH subsegment's block size, first block offset and block count, decoded from its first
/// page (BlockOffsets XOR LfhKey XOR the VA term).
struct LfhGeometry {
    size: u64,
    first: u64,
    count: u64,
}

impl LfhGeometry {
    /// Bytes from the subsegment's start to the end of its last block.
    fn extent(&self) -> u64 {
        self.first + self.count * self.size
    }
}

/// `None` = not an LFH subsegment: its offsets do not decode to a geometry that fits.
fn lfh_geometry(first_page: &[u8], va: u64, s: &SegLayout, key: u32) -> Option<LfhGeometry> {
    let enc = u32_at(first_page, s.lfh_offsets)?;
    let count = u64::from(u16_at(first_page, s.lfh_block_count)?);
    let d = enc ^ key ^ s.lfh_va_bits(va);
    let g = LfhGeometry {
        size: u64::from(d & 0xFFFF),
        first: u64::from(d >> 16),
        count,
    };
    let bitmap_end = s.lfh_bitmap as u64 + s.bitmap_bytes(count);
    let fits = g.size >= 16
        && g.size.is_multiple_of(16)
        && g.size < 0xFF8
        && g.first >= bitmap_end
        && g.first < PAGE_SIZE
        && g.extent() <= MAX_SUBSEGMENT
        && first_page.len() as u64 >= bitmap_end;
    fits.then_some(g)
}

/// Walk a decoded LFH subsegment's blocks. `Err` = rejected: an allocated block's header is
/// not a pool header of the subsegment's block size.
fn walk_lfh(
    p: &Pages,
    first_page: &[u8],
    g: &LfhGeometry,
    s: &SegLayout,
    l: &PoolLayout,
) -> std::result::Result<Found, ()> {
    let bitmap_end = s.lfh_bitmap + s.bitmap_bytes(g.count) as usize;
    let bitmap = first_page.get(s.lfh_bitmap..bitmap_end).ok_or(())?;
    let mut out = Vec::new();
    for i in 0..g.count {
        let bits = (bitmap[(i / 4) as usize] >> ((i % 4) * 2)) & 3;
        let at = g.first + i * g.size;
        let h = p.header(at, l);
        let valid = h
            .as_ref()
            .is_some_and(|h| in_use(h) && h.size * l.block_unit == g.size);
        match (h, bits == 1, valid) {
            (Some(h), allocated, true) => out.push((at, h, allocated)),
            (Some(_), true, false) => return Err(()),
            _ => {} // never used, or on a page the dump lacks
        }
    }
    Ok(out)
}

/// Scan the segment-heap pool. `k` locates the keys through symbols when it can; `sources`
/// says where the keys came from.
pub fn scan(
    space: &AddressSpace,
    rmap: &ReverseMap,
    layout: &PoolLayout,
    seg: &SegLayout,
    k: Option<Kernel>,
    keep: &Keep,
    sources: &mut Sources,
) -> PoolScan {
    let phys = space.phys;
    // Pass 1: candidate first pages (one cache line a page).
    let found: Vec<(u64, Vec<(u64, Kind)>)> = page_chunks(&phys)
        .par_iter()
        .map(|&(start, end)| {
            let mut c = Vec::new();
            let mut n = 0;
            for pfn in start..end {
                let Ok(page) = phys.page(pfn) else { continue };
                n += 1;
                if let Some(kind) = candidate(page, seg) {
                    c.push((pfn, kind));
                }
            }
            phys.release(start, end);
            (n, c)
        })
        .collect();
    let mut out = PoolScan {
        pages_scanned: found.iter().map(|(n, _)| n).sum(),
        ..Default::default()
    };
    // Candidates with a kernel mapping (the decoding needs their VA).
    let cands: Vec<(u64, u64, Kind)> = found
        .into_iter()
        .flat_map(|(_, c)| c)
        .filter_map(|(pfn, kind)| Some((pfn, rmap.va_of(pfn)?, kind)))
        .collect();
    let sample = |want: Kind| -> Vec<(&[u8], u64)> {
        cands
            .iter()
            .filter(|c| c.2 == want)
            .take(KEY_SAMPLE)
            .filter_map(|&(pfn, va, _)| Some((phys.page(pfn).ok()?, va)))
            .collect()
    };
    let mut tr = space.translator();
    let (vs, lfh) = (sample(Kind::Vs), sample(Kind::Lfh));
    let keys = keys(&mut tr, k, (seg, layout), &vs, &lfh, sources);
    if keys.heap.is_none() && !vs.is_empty() {
        let why = "skipped: HeapKey is neither in symbols nor recoverable";
        sources.insert("pool_scan_vs".into(), why.into());
    }
    if keys.lfh.is_none() && !lfh.is_empty() {
        let why = "skipped: LfhKey is neither in symbols nor recoverable";
        sources.insert("pool_scan_lfh".into(), why.into());
    }
    // Pass 2: walk each candidate subsegment by VA.
    let walked = cands
        .par_chunks(WALK_BATCH)
        .map(|batch| {
            let mut tr = space.translator();
            let mut s = PoolScan::default();
            for &(pfn, va, kind) in batch {
                let Ok(page) = phys.page(pfn) else { continue };
                let (extent, res) = match (kind, keys.heap, keys.lfh) {
                    (Kind::Vs, Some(key), _) => {
                        let size = seg.vs_size.read(page).saturating_mul(seg.vs_unit);
                        if size > MAX_SUBSEGMENT {
                            s.rejected_pages += 1;
                            continue;
                        }
                        let p = Pages::read(&mut tr, &phys, va, size);
                        (size, walk_vs(&p, size, seg, layout, key).map(|f| (p, f)))
                    }
                    (Kind::Lfh, _, Some(key)) => {
                        let Some(g) = lfh_geometry(page, va, seg, key) else {
                            continue;
                        };
                        let p = Pages::read(&mut tr, &phys, va, g.extent());
                        let res = walk_lfh(&p, page, &g, seg, layout);
                        (g.extent(), res.map(|f| (p, f)))
                    }
                    _ => continue,
                };
                let Ok((p, blocks)) = res else {
                    s.rejected_pages += 1;
                    continue;
                };
                s.pool_pages += extent.div_ceil(PAGE_SIZE);
                let page_pool =
                    blocks.iter().find(|b| b.2).or(blocks.first()).map(|b| {
                        Pool::classify(b.1.pool_type, layout.paged_mask, layout.session_mask)
                    });
                for (off, h, allocated) in &blocks {
                    let pool = if *allocated {
                        Pool::classify(h.pool_type, layout.paged_mask, layout.session_mask)
                    } else {
                        page_pool.unwrap_or(Pool::NonPaged)
                    };
                    let bva = p.va + off;
                    let pa = tr.translate(bva).map(|t| t.pa).unwrap_or(0);
                    s.count(keep, pa, || bva, h, layout, pool, *allocated);
                }
            }
            s
        })
        .collect::<Vec<_>>();
    for s in walked {
        out = out.merge(s);
    }
    out.blocks.sort_by_pa();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg() -> SegLayout {
        let p = crate::kernel::Profile::for_build(19045).unwrap().0;
        PoolLayout::from_profile(&p).unwrap().segment.unwrap()
    }
    fn pool() -> PoolLayout {
        PoolLayout::from_profile(&crate::kernel::Profile::for_build(19045).unwrap().0).unwrap()
    }

    const VA: u64 = 0xFFFF_A080_1234_0000;
    const KEY: u64 = 0x1122_3344_5566_7788;

    /// A one-page VS subsegment: chunks of `units` (16-byte units, VS header included), the
    /// allocated ones holding a pool header of `units - 1` with tag "Test".
    fn vs_page(s: &SegLayout, chunks: &[(u64, bool)]) -> Vec<u8> {
        let mut p = vec![0u8; 0x1000];
        p[..8].copy_from_slice(&(VA + 0x100).to_le_bytes());
        p[8..16].copy_from_slice(&(VA + 0x100).to_le_bytes());
        let size = 0x1000 / s.vs_unit;
        let (at, sig_at) = (s.vs_size.offset(), s.vs_signature.offset());
        p[at..at + 2].copy_from_slice(&(size as u16).to_le_bytes());
        let sig = (size as u16 ^ s.vs_xor) & 0x7FFF;
        p[sig_at..sig_at + 2].copy_from_slice(&sig.to_le_bytes());
        let (mut off, mut prev) = (s.vs_first, 0u64);
        for &(units, alloc) in chunks {
            let plain =
                units << s.size_shift | prev << s.prev_shift | u64::from(alloc) << s.alloc_shift;
            let at = off as usize;
            p[at..at + 8].copy_from_slice(&(plain ^ (VA + off) ^ KEY).to_le_bytes());
            if alloc {
                let h = at + s.chunk as usize;
                p[h..h + 8].copy_from_slice(&[0, 0, (units - 1) as u8, 2, b'T', b'e', b's', b't']);
            }
            prev = units;
            off += units * 16;
        }
        p
    }

    #[test]
    fn vs_chain_decodes_and_a_broken_one_is_rejected() {
        let (s, l) = (seg(), pool());
        let page = vs_page(
            &s,
            &[(0x10, true), (0x20, false), (0xC5, true), (0x8, true)],
        );
        assert_eq!(candidate(&page, &s), Some(Kind::Vs));
        let p = Pages {
            va: VA,
            pages: vec![Some(&page[..])],
        };
        let found = walk_vs(&p, 0x1000, &s, &l, (KEY, u64::MAX)).unwrap();
        assert_eq!(found.len(), 3);
        assert_eq!(found[0].0, s.vs_first + s.chunk);
        assert!(found
            .iter()
            .all(|f| f.2 && f.1.tag == u32::from_le_bytes(*b"Test")));
        // a wrong key, or a chunk size that overruns the subsegment: rejected, no panic
        assert!(walk_vs(&p, 0x1000, &s, &l, (KEY ^ 0x10000, u64::MAX)).is_err());
        let bad = vs_page(&s, &[(0x10, true), (0xFFFF, true)]);
        let p = Pages {
            va: VA,
            pages: vec![Some(&bad[..])],
        };
        assert!(walk_vs(&p, 0x1000, &s, &l, (KEY, u64::MAX)).is_err());
    }

    #[test]
    fn heap_key_is_recovered_from_first_chunks() {
        let (s, l) = (seg(), pool());
        let a = vs_page(&s, &[(0x10, true), (0x20, true)]);
        let b = vs_page(&s, &[(0x31, true), (0x20, false)]);
        let (key, mask, _) = recover_heap(&[(&a, VA), (&b, VA)], &s, &l).unwrap();
        assert_eq!(key & mask, KEY & mask);
        assert_eq!(mask, s.size_mask() | s.prev_mask());
        assert!(recover_heap(&[], &s, &l).is_none());
    }

    /// A Volatility 3 ISF of the segment-heap types (PDB shapes: the chunk header's sizes are
    /// bitfields of a union, BlockOffsets a struct, BlockBitmap an array), with the 26100 VS
    /// signature and LFH bitmap offsets: they replace the 19045 profile's.
    const SEG_ISF: &str = r#"{
      "metadata": {"format": "6.2.0"},
      "base_types": {"unsigned short": {"size": 2}, "unsigned long": {"size": 4},
                     "unsigned long long": {"size": 8}},
      "enums": {}, "symbols": {},
      "user_types": {
        "_HEAP_VS_SUBSEGMENT": {"kind": "struct", "size": 40, "fields": {
          "Size": {"offset": 32, "type": {"kind": "base", "name": "unsigned short"}},
          "Signature": {"offset": 36, "type": {"kind": "bitfield", "bit_position": 0,
            "bit_length": 15, "type": {"kind": "base", "name": "unsigned short"}}}}},
        "_HEAP_VS_CHUNK_HEADER_SIZE": {"kind": "union", "size": 8, "fields": {
          "UnsafeSize": {"offset": 0, "type": {"kind": "bitfield", "bit_position": 16,
            "bit_length": 16, "type": {"kind": "base", "name": "unsigned long"}}},
          "UnsafePrevSize": {"offset": 4, "type": {"kind": "bitfield", "bit_position": 0,
            "bit_length": 16, "type": {"kind": "base", "name": "unsigned long"}}},
          "Allocated": {"offset": 4, "type": {"kind": "bitfield", "bit_position": 16,
            "bit_length": 8, "type": {"kind": "base", "name": "unsigned long"}}},
          "HeaderBits": {"offset": 0, "type": {"kind": "base", "name": "unsigned long long"}}}},
        "_HEAP_VS_CHUNK_HEADER": {"kind": "struct", "size": 16, "fields": {
          "Sizes": {"offset": 0, "type": {"kind": "union", "name": "_HEAP_VS_CHUNK_HEADER_SIZE"}}}},
        "_HEAP_LFH_SUBSEGMENT_ENCODED_OFFSETS": {"kind": "struct", "size": 4, "fields": {
          "BlockSize": {"offset": 0, "type": {"kind": "base", "name": "unsigned short"}},
          "FirstBlockOffset": {"offset": 2, "type": {"kind": "base", "name": "unsigned short"}}}},
        "_HEAP_LFH_SUBSEGMENT": {"kind": "struct", "size": 72, "fields": {
          "FreeCount": {"offset": 32, "type": {"kind": "base", "name": "unsigned short"}},
          "BlockCount": {"offset": 34, "type": {"kind": "base", "name": "unsigned short"}},
          "BlockOffsets": {"offset": 40, "type": {"kind": "struct",
            "name": "_HEAP_LFH_SUBSEGMENT_ENCODED_OFFSETS"}},
          "BlockBitmap": {"offset": 64, "type": {"kind": "array", "count": 1,
            "subtype": {"kind": "base", "name": "unsigned long long"}}}}},
        "_RTLP_HP_HEAP_GLOBALS": {"kind": "struct", "size": 16, "fields": {
          "HeapKey": {"offset": 0, "type": {"kind": "base", "name": "unsigned long long"}},
          "LfhKey": {"offset": 8, "type": {"kind": "base", "name": "unsigned long long"}}}}
      }
    }"#;

    #[test]
    fn isf_types_replace_the_profile_layouts() {
        let (mut s, l) = (seg(), pool());
        let syms = Symbols::from_isf(SEG_ISF, "k.json").unwrap();
        let mut src = Sources::new();
        s.apply_symbols(&syms, &mut src);
        for ty in [VS_SUBSEGMENT, VS_CHUNK_HEADER, LFH_SUBSEGMENT, HEAP_GLOBALS] {
            assert_eq!(src[ty], "symbols k.json", "{ty}");
        }
        assert_eq!((s.vs_size.offset(), s.vs_signature.offset()), (0x20, 0x24));
        assert_eq!(s.vs_signature.mask(), 0x7FFF);
        assert_eq!((s.size_shift, s.prev_shift, s.alloc_shift), (16, 32, 48));
        assert_eq!((s.lfh_free_count, s.lfh_block_count), (0x20, 0x22));
        assert_eq!((s.lfh_offsets, s.lfh_bitmap, s.chunk), (0x28, 0x40, 0x10));
        // The moved signature is where the scan looks for it.
        let page = vs_page(&s, &[(0x10, true), (0xED, false)]);
        assert_eq!(
            page[0x24..0x26],
            ((0x100 ^ 0x2BED) as u16 & 0x7FFF).to_le_bytes()
        );
        assert_eq!(candidate(&page, &s), Some(Kind::Vs));
        let p = Pages {
            va: VA,
            pages: vec![Some(&page[..])],
        };
        assert_eq!(
            walk_vs(&p, 0x1000, &s, &l, (KEY, u64::MAX)).unwrap().len(),
            1
        );
    }

    #[test]
    fn implausible_isf_types_leave_the_profile_layouts() {
        let bad = SEG_ISF
            .replace(r#""offset": 36"#, r#""offset": 1099511627776"#)
            .replace(r#""bit_position": 16,"#, r#""bit_position": 300,"#)
            .replace(r#""offset": 64"#, r#""offset": 4096"#)
            .replace(
                r#""size": 16, "fields": {
          "Sizes""#,
                r#""size": 0, "fields": {
          "Sizes""#,
            );
        let syms = Symbols::from_isf(&bad, "bad.json").unwrap();
        let (mut s, before) = (seg(), seg());
        let mut src = Sources::new();
        s.apply_symbols(&syms, &mut src);
        assert_eq!(src.keys().collect::<Vec<_>>(), [HEAP_GLOBALS]);
        assert_eq!(s.vs_signature.offset(), before.vs_signature.offset());
        assert_eq!((s.lfh_bitmap, s.chunk), (before.lfh_bitmap, before.chunk));
        assert_eq!(s.size_shift, before.size_shift);
    }

    #[test]
    fn hostile_pages_never_panic() {
        let (s, l) = (seg(), pool());
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for i in 0..3000 {
            let mut page: Vec<u8> = (0..0x1000).map(|_| next() as u8).collect();
            // half of them start like a subsegment, so the deeper checks run
            if i % 2 == 0 {
                page[..8].copy_from_slice(&VA.to_le_bytes());
                page[8..16].copy_from_slice(&VA.to_le_bytes());
            }
            let _ = candidate(&page, &s);
            let p = Pages {
                va: VA,
                pages: vec![Some(&page[..]), None],
            };
            let key = (next(), if i % 3 == 0 { u64::MAX } else { s.size_mask() });
            let _ = walk_vs(&p, 0x1000 + (next() & 0xFFFF), &s, &l, key);
            if let Some(g) = lfh_geometry(&page, VA, &s, next() as u32) {
                let _ = walk_lfh(&p, &page, &g, &s, &l);
            }
            let _ = recover_heap(&[(&page, VA)], &s, &l);
            let _ = recover_lfh(&[(&page, VA)], &s, &l);
        }
    }
}
