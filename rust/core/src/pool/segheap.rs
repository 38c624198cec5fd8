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
/// The largest VS subsegment (RtlpHpVsSubsegmentCreate: 0x40000 bytes), in pages.
const MAX_VS_PAGES: u64 = 0x40;
/// The largest LFH subsegment (RtlpCalculateSubsegmentSizeIndex caps the index at 18).
const MAX_LFH_SUBSEGMENT: u64 = 0x4_0000;
/// The largest LFH block size tried (MaxBlockSize is 0x200 for pool; larger buckets exist).
const MAX_LFH_BLOCK: u64 = 0x800;
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
    /// _HEAP_VS_SUBSEGMENT.CommitBitmap: one bit a committed page.
    vs_commit: usize,
    chunk: u64,
    size_shift: u32,
    prev_shift: u32,
    alloc_shift: u32,
    lfh_free_count: usize,
    lfh_block_count: usize,
    lfh_location: Option<usize>,
    lfh_witheld: usize,
    lfh_unit_shift: usize,
    lfh_unit_count: usize,
    lfh_commit_state: Option<usize>,
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
            vs_commit: num(&["vs_subsegment", "CommitBitmap"])? as usize,
            chunk: num(&["vs_chunk_header", "size"])?,
            size_shift: num(&["vs_chunk_header", "UnsafeSize", "shift"])? as u32,
            prev_shift: num(&["vs_chunk_header", "UnsafePrevSize", "shift"])? as u32,
            alloc_shift: num(&["vs_chunk_header", "Allocated", "shift"])? as u32,
            lfh_free_count: num(&["lfh_subsegment", "FreeCount"])? as usize,
            lfh_block_count: num(&["lfh_subsegment", "BlockCount"])? as usize,
            lfh_location: num(&["lfh_subsegment", "Location"])
                .ok()
                .map(|v| v as usize),
            lfh_witheld: num(&["lfh_subsegment", "WitheldBlockCount"])? as usize,
            lfh_unit_shift: num(&["lfh_subsegment", "CommitUnitShift"])? as usize,
            lfh_unit_count: num(&["lfh_subsegment", "CommitUnitCount"])? as usize,
            lfh_commit_state: num(&["lfh_subsegment", "CommitStateOffset"])
                .ok()
                .map(|v| v as usize),
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
            sources.insert(ty.into(), syms.source.clone());
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

/// What a page's first bytes say: the first page of a VS or an LFH subsegment, or not. Only
/// plain fields are checked here (the encoded ones need the page's VA and the keys). The list
/// links decide first, as cheaply as the legacy scan's first header: an LFH subsegment's are
/// kernel pointers, a VS subsegment's are XORed with its own VA (RtlpHpVsContextAddSubsegment),
/// so both fall below 2^47.
#[inline]
fn candidate(page: &[u8], s: &SegLayout) -> Option<Kind> {
    let (q0, q1) = (u64_at(page, 0)?, u64_at(page, 8)?);
    match (q0 >> 47, q1 >> 47) {
        (0, 0) if q0 != 0 && q1 != 0 => {
            let size = s.vs_size.read(page);
            let sig = s.vs_signature.read(page);
            let signed =
                size != 0 && (sig ^ size ^ u64::from(s.vs_xor)) & s.vs_signature.mask() == 0;
            (signed && vs_extent(page, s).is_some()).then_some(Kind::Vs)
        }
        (0x1_FFFF, 0x1_FFFF) => lfh_header(page, s).map(|_| Kind::Lfh),
        _ => None,
    }
}

/// A VS subsegment's bytes (Size * 16 + 0x30: RtlpHpVsSubsegmentCreate) and its commit
/// bitmap, when they fit each other: a page multiple of at most 256 KiB, the first page
/// committed, no bit past the last page.
fn vs_extent(page: &[u8], s: &SegLayout) -> Option<(u64, u64)> {
    let bytes = s.vs_size.read(page) * s.vs_unit + s.vs_first;
    let commit = u64_at(page, s.vs_commit)?;
    let pages = bytes / PAGE_SIZE;
    let fits = bytes.is_multiple_of(PAGE_SIZE)
        && (1..=MAX_VS_PAGES).contains(&pages)
        && commit & 1 == 1
        && (pages == 64 || commit >> pages == 0);
    fits.then_some((bytes, commit))
}

/// The plain fields of an LFH subsegment's header.
struct LfhHeader {
    /// Subsegment bytes (CommitUnitCount << CommitUnitShift) and the commit unit.
    size: u64,
    unit: u64,
    /// Slots the bitmap covers: BlockCount + WitheldBlockCount.
    slots: u64,
}

fn lfh_header(page: &[u8], s: &SegLayout) -> Option<LfhHeader> {
    let shift = u32::from(*page.get(s.lfh_unit_shift)?);
    let units = u64::from(*page.get(s.lfh_unit_count)?);
    let count = u64::from(u16_at(page, s.lfh_block_count)?);
    let free = u64::from(u16_at(page, s.lfh_free_count)?);
    let witheld = u64::from(*page.get(s.lfh_witheld)?);
    if !(12..=18).contains(&shift) || units == 0 || count == 0 || free > count {
        return None;
    }
    let size = units << shift;
    if !size.is_power_of_two() || !(PAGE_SIZE..=MAX_LFH_SUBSEGMENT).contains(&size) {
        return None;
    }
    if s.lfh_location
        .is_some_and(|at| page.get(at).is_none_or(|&l| l > 2))
    {
        return None;
    }
    let slots = count + witheld;
    let state = s.lfh_bitmap as u64 + 8 * (2 * slots).div_ceil(64);
    if s.lfh_commit_state
        .is_some_and(|at| u16_at(page, at).is_none_or(|v| u64::from(v) != state))
    {
        return None;
    }
    Some(LfhHeader {
        size,
        unit: 1 << shift,
        slots,
    })
}

/// A plausible in-use pool header: a tag scanners accept, a non-zero size and pool type.
#[inline]
fn in_use(h: &Header) -> bool {
    h.size != 0 && h.pool_type != 0 && tag::plausible(h.tag)
}

/// The first 8 bytes of a block on a delayed-free or lookaside SList: its Next link (0 or a
/// 16-aligned kernel pointer) over the POOL_HEADER (RtlpHpVsContextFree).
#[inline]
fn slist_link(q: u64) -> bool {
    q == 0 || (kernel_ptr(q) && q & 0xF == 0)
}

fn mode<K: std::hash::Hash + Eq + Copy>(votes: &HashMap<K, usize>) -> Option<(K, usize)> {
    let total: usize = votes.values().sum();
    let (k, n) = votes.iter().max_by_key(|(_, n)| **n)?;
    // Two agreeing subsegments, or the only one there is.
    (*n >= 2 || total == 1).then_some((*k, *n))
}

/// Recover HeapKey from the first chunk of VS subsegments that is allocated with a pool header:
/// its size/allocated bits (BlockSize + 1 units, allocated) and, from its encoded segment page
/// offset (page 0), the key's low byte; then the previous-size bits from the second chunk
/// (whose UnsafePrevSize is the first's size).
fn recover_heap(
    pages: &[(&[u8], u64)],
    s: &SegLayout,
    l: &PoolLayout,
) -> Option<(u64, u64, String)> {
    let mut v1: HashMap<u64, usize> = HashMap::new();
    let mut lo: HashMap<u64, usize> = HashMap::new();
    for (page, va) in pages {
        let off = s.vs_first as usize;
        let (Some(enc), Some(h), Some(&page_off)) = (
            u64_at(page, off),
            header(page, off + s.chunk as usize, l),
            page.get(off + 8),
        ) else {
            continue;
        };
        if in_use(&h) {
            let cva = va + off as u64;
            let plain = (h.size + 1) << s.size_shift | 1 << s.alloc_shift;
            *v1.entry((enc ^ cva ^ plain) & s.size_mask()).or_default() += 1;
            *lo.entry(u64::from(page_off) ^ (cva & 0xFF)).or_default() += 1;
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
    let (mut key, mut mask) = (k1, s.size_mask());
    if let Some((k2, _)) = mode(&v2) {
        (key, mask) = (key | k2, mask | s.prev_mask());
    }
    if let Some((b, _)) = mode(&lo) {
        (key, mask) = (key | b, mask | 0xFF);
    }
    let why = format!(
        "recovered from the dump: {n1} of {} VS subsegments agree (known bits {mask:#x})",
        v1.values().sum::<usize>()
    );
    Some((key, mask, why))
}

/// What RtlpHpLfhSubsegmentInitialize computes for `block`-byte blocks in a subsegment of
/// `h.size` bytes: FirstBlockOffset and the slot count, which must be the header's.
/// Returns (FirstBlockOffset before and after the power-of-two rounding, slots).
fn lfh_expected(h: &LfhHeader, block: u64, bitmap: u64) -> Option<(u64, u64, u64)> {
    if block < 0x20 || !block.is_multiple_of(16) || block > MAX_LFH_BLOCK {
        return None;
    }
    let units = h.size / h.unit;
    let v9 = (8 * (h.size.checked_sub(2 * units)?)).checked_sub(8 * bitmap)? / (8 * block + 2);
    let raw = (2 * units + 8 * (2 * v9).div_ceil(64) + bitmap + 15) & !0xF;
    let slots = v9.min(h.size.checked_sub(raw)? / block);
    let first = if h.size > PAGE_SIZE && block.is_power_of_two() {
        raw.div_ceil(block) * block
    } else {
        raw
    };
    Some((raw, first, slots))
}

/// Whether an LFH slot is withheld: in a subsegment over a page, a block of a size that is no
/// power of two with a page boundary inside it is marked busy and never handed out.
fn lfh_witheld(g: &LfhGeometry, slot: u64) -> bool {
    let start = g.first_raw + slot * g.size;
    g.extent > PAGE_SIZE
        && !g.size.is_power_of_two()
        && (start + g.size - 1) / PAGE_SIZE > start / PAGE_SIZE
}

/// Recover LfhKey: for each candidate header, every block size whose geometry gives the
/// header's slot count proposes a key (BlockOffsets XOR the plain offsets XOR the VA term);
/// the key every subsegment proposes wins.
fn recover_lfh(pages: &[(&[u8], u64)], s: &SegLayout) -> Option<(u32, String)> {
    let mut votes: HashMap<u32, usize> = HashMap::new();
    let mut seen = 0usize;
    for (page, va) in pages {
        let (Some(enc), Some(h)) = (u32_at(page, s.lfh_offsets), lfh_header(page, s)) else {
            continue;
        };
        seen += 1;
        for block in (0x20..=MAX_LFH_BLOCK).step_by(16) {
            if let Some((_, first, slots)) = lfh_expected(&h, block, s.lfh_bitmap as u64) {
                if slots == h.slots {
                    let plain = (block | first << 16) as u32;
                    *votes.entry(enc ^ s.lfh_va_bits(*va) ^ plain).or_default() += 1;
                }
            }
        }
    }
    let (k, n) = mode(&votes)?;
    Some((
        k,
        format!("recovered from the dump: {n} of {seen} LFH subsegments agree"),
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
    let lfh = recover_lfh(lfh, s).map(|(key, why)| {
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

/// Why a subsegment was rejected (its own invariants failed).
type Reject = &'static str;

/// Walk a VS subsegment's chunk chain over its committed pages (RtlpHpVsChunkSplit's rules):
/// every chunk header on a committed page, the chain covering the subsegment exactly, each
/// UnsafePrevSize the previous chunk's size, each allocated chunk's pages committed, its
/// encoded segment page offset its page, and its POOL_HEADER at chunk + 0x10 (chunk + 0x20
/// when that is page-aligned) or, for a block on the delayed-free list, an SList link there.
/// The walk stops early, keeping what it validated, at a committed page the dump lacks.
fn walk_vs(
    p: &Pages,
    (size, commit): (u64, u64),
    s: &SegLayout,
    l: &PoolLayout,
    key: (u64, u64),
) -> std::result::Result<Found, Reject> {
    let (key, mask) = key;
    let check_prev = mask & s.prev_mask() == s.prev_mask();
    let check_page = mask & 0xFF == 0xFF;
    let committed = |off: u64| commit >> (off / PAGE_SIZE).min(63) & 1 == 1;
    let mut out = Vec::new();
    let mut off = s.vs_first;
    let mut prev: Option<u64> = None;
    while off < size {
        if !committed(off) {
            return Err("a chunk header on an uncommitted page");
        }
        let Some(enc) = p.bytes(off, 8).and_then(|b| u64_at(b, 0)) else {
            break;
        };
        let cva = p.va + off;
        let d = enc ^ cva ^ key;
        let units = (d >> s.size_shift) & 0xFFFF;
        let allocated = (d >> s.alloc_shift) & 0xFF;
        let bytes = units * 16;
        if bytes < 2 * s.chunk || off + bytes > size || allocated > 1 {
            return Err("a chunk header that does not decode");
        }
        if check_prev && prev.is_some_and(|pv| (d >> s.prev_shift) & 0xFFFF != pv) {
            return Err("a chunk whose previous size is not its neighbour's");
        }
        if allocated == 1 {
            let end = off + bytes;
            if (off / PAGE_SIZE..=(end - 1) / PAGE_SIZE).any(|pg| commit >> pg.min(63) & 1 == 0) {
                return Err("an allocated chunk on an uncommitted page");
            }
            let page_off = p.bytes(off + 8, 1).map(|b| u64::from(b[0]));
            if check_page && page_off.is_some_and(|b| (b ^ key ^ cva) & 0xFF != (off >> 12) & 0xFF)
            {
                return Err("an allocated chunk whose segment page offset is not its page");
            }
            let at = off
                + if (cva + 0x20) & 0xFFF == 0 {
                    0x20
                } else {
                    0x10
                };
            let Some(q) = p.bytes(at, 8).and_then(|b| u64_at(b, 0)) else {
                break;
            };
            match p.header(at, l) {
                Some(h) if in_use(&h) => {
                    let b = h.size * l.block_unit;
                    if at + b > end || end - at - b >= MAX_SLACK {
                        return Err("a pool header whose size does not fit its chunk");
                    }
                    out.push((at, h, true));
                }
                _ if slist_link(q) => {} // freed: on the delayed-free list
                _ => return Err("an allocated chunk without a pool header"),
            }
        }
        prev = Some(units);
        off += bytes;
    }
    Ok(out)
}

/// An LFH subsegment's geometry, decoded from its first page (BlockOffsets XOR LfhKey XOR the
/// VA term) and checked against what RtlpHpLfhSubsegmentInitialize computes.
struct LfhGeometry {
    size: u64,
    first: u64,
    /// FirstBlockOffset before any power-of-two rounding (where withheld slots are counted).
    first_raw: u64,
    slots: u64,
    extent: u64,
    unit: u64,
}

/// `None` = not an LFH subsegment: its offsets do not decode to the geometry its header implies.
fn lfh_geometry(first_page: &[u8], va: u64, s: &SegLayout, key: u32) -> Option<LfhGeometry> {
    let h = lfh_header(first_page, s)?;
    let enc = u32_at(first_page, s.lfh_offsets)?;
    let d = enc ^ key ^ s.lfh_va_bits(va);
    let (block, first) = (u64::from(d & 0xFFFF), u64::from(d >> 16));
    let (first_raw, want, slots) = lfh_expected(&h, block, s.lfh_bitmap as u64)?;
    if first != want || slots != h.slots {
        return None;
    }
    Some(LfhGeometry {
        size: block,
        first,
        first_raw,
        slots,
        extent: h.size,
        unit: h.unit,
    })
}

/// Walk a decoded LFH subsegment's blocks. Withheld slots are skipped; a block in a commit
/// unit whose commit word says never committed (0xFFFF) must not be allocated. `Err` =
/// rejected: an allocated block's header is not a pool header of the subsegment's block size.
fn walk_lfh(
    p: &Pages,
    first_page: &[u8],
    g: &LfhGeometry,
    s: &SegLayout,
    l: &PoolLayout,
) -> std::result::Result<Found, Reject> {
    let bitmap_end = s.lfh_bitmap + (2 * g.slots).div_ceil(64) as usize * 8;
    let bitmap = first_page
        .get(s.lfh_bitmap..bitmap_end)
        .ok_or("a bitmap past the first page")?;
    let words = lfh_commit_words(first_page, s, g);
    let committed = |u: u64| lfh_unit_committed(first_page, words, u);
    let mut out = Vec::new();
    for i in 0..g.slots {
        if lfh_witheld(g, i) {
            continue;
        }
        let bits = (bitmap[(i / 4) as usize] >> ((i % 4) * 2)) & 3;
        let at = g.first + i * g.size;
        let allocated = bits & 1 == 1;
        if allocated && !committed(at / g.unit) {
            return Err("an allocated block in a commit unit never committed");
        }
        let h = p.header(at, l);
        let fits = |h: &Header| in_use(h) && h.size * l.block_unit <= g.size;
        match h {
            Some(h) if allocated && fits(&h) && (bits == 3 || h.size * l.block_unit == g.size) => {
                out.push((at, h, true))
            }
            Some(_) if allocated => return Err("an allocated block without a pool header"),
            Some(h) if fits(&h) && h.size * l.block_unit == g.size => out.push((at, h, false)),
            _ => {} // never used, or on a page the dump lacks
        }
    }
    Ok(out)
}

/// Where an LFH subsegment's commit words are (CommitStateOffset, else after the bitmap).
fn lfh_commit_words(first_page: &[u8], s: &SegLayout, g: &LfhGeometry) -> usize {
    let bitmap_end = s.lfh_bitmap + (2 * g.slots).div_ceil(64) as usize * 8;
    s.lfh_commit_state
        .and_then(|at| u16_at(first_page, at))
        .map_or(bitmap_end, usize::from)
}

/// Whether an LFH commit unit is committed: its commit word is not 0xFFFF.
fn lfh_unit_committed(first_page: &[u8], words: usize, unit: u64) -> bool {
    u16_at(first_page, words + 2 * unit as usize).is_some_and(|v| v != 0xFFFF)
}

/// The committed pages of an LFH subsegment.
fn lfh_committed_pages(first_page: &[u8], s: &SegLayout, g: &LfhGeometry) -> u64 {
    let words = lfh_commit_words(first_page, s, g);
    let units = (0..g.extent / g.unit).filter(|&u| lfh_unit_committed(first_page, words, u));
    units.count() as u64 * (g.unit / PAGE_SIZE)
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
                let (pages, res) = match (kind, keys.heap, keys.lfh) {
                    (Kind::Vs, Some(key), _) => {
                        let Some((size, commit)) = vs_extent(page, seg) else {
                            continue;
                        };
                        // ListEntry links are encoded: each XOR the subsegment's own VA.
                        let links = [0, 8].map(|at| u64_at(page, at).map(|q| q ^ va));
                        if !links.iter().all(|q| q.is_some_and(kernel_ptr)) {
                            continue;
                        }
                        let p = Pages::read(&mut tr, &phys, va, size);
                        let res = walk_vs(&p, (size, commit), seg, layout, key);
                        (u64::from(commit.count_ones()), res.map(|f| (p, f)))
                    }
                    (Kind::Lfh, _, Some(key)) => {
                        let Some(g) = lfh_geometry(page, va, seg, key) else {
                            continue;
                        };
                        let p = Pages::read(&mut tr, &phys, va, g.extent);
                        let res = walk_lfh(&p, page, &g, seg, layout);
                        (lfh_committed_pages(page, seg, &g), res.map(|f| (p, f)))
                    }
                    _ => continue,
                };
                let (p, blocks) = match res {
                    Ok(r) => r,
                    Err(why) => {
                        s.rejected_pages += 1;
                        *s.rejected_why.entry(why.to_string()).or_default() += 1;
                        continue;
                    }
                };
                s.pool_pages += pages;
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

    /// A one-page VS subsegment as RtlpHpVsSubsegmentCreate lays it out (Size = (bytes -
    /// 0x30) >> 4, the page committed, list links XOR its VA): chunks of `units` (16-byte
    /// units, VS header included), the allocated ones holding their encoded segment page
    /// offset and a pool header of `units - 1` with tag "Test".
    fn vs_page(s: &SegLayout, chunks: &[(u64, bool)]) -> Vec<u8> {
        let mut p = vec![0u8; 0x1000];
        p[..8].copy_from_slice(&(VA ^ (VA + 0x100)).to_le_bytes());
        p[8..16].copy_from_slice(&(VA ^ (VA + 0x100)).to_le_bytes());
        p[s.vs_commit..s.vs_commit + 8].copy_from_slice(&1u64.to_le_bytes());
        let size = (0x1000 - s.vs_first) / s.vs_unit;
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
                p[at + 8] = ((KEY ^ (VA + off)) & 0xFF) as u8;
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
        assert_eq!(vs_extent(&page, &s), Some((0x1000, 1)));
        let p = Pages {
            va: VA,
            pages: vec![Some(&page[..])],
        };
        let found = walk_vs(&p, (0x1000, 1), &s, &l, (KEY, u64::MAX)).unwrap();
        assert_eq!(found.len(), 3);
        assert_eq!(found[0].0, s.vs_first + s.chunk);
        assert!(found
            .iter()
            .all(|f| f.2 && f.1.tag == u32::from_le_bytes(*b"Test")));
        // a wrong key, or a chunk size that overruns the subsegment: rejected, no panic
        assert!(walk_vs(&p, (0x1000, 1), &s, &l, (KEY ^ 0x10000, u64::MAX)).is_err());
        let bad = vs_page(&s, &[(0x10, true), (0xFFFF, true)]);
        let p = Pages {
            va: VA,
            pages: vec![Some(&bad[..])],
        };
        assert!(walk_vs(&p, (0x1000, 1), &s, &l, (KEY, u64::MAX)).is_err());
    }

    /// A VS subsegment of `total` bytes with commit bitmap `commit` (as RtlpHpVsSubsegmentCreate
    /// and RtlpHpVsChunkSplit write it) and chunks at the given offsets: (offset, units,
    /// allocated, what sits at the block: None = a pool header of `units - 1` tagged "Test",
    /// Some(q) = that qword, e.g. a delayed-free SList link). Returns one page slice per page.
    fn vs_sub(
        s: &SegLayout,
        total: u64,
        commit: u64,
        chunks: &[(u64, u64, bool, Option<u64>)],
    ) -> Vec<Vec<u8>> {
        let mut b = vec![0u8; total as usize];
        b[..8].copy_from_slice(&(VA ^ (VA + 0x100)).to_le_bytes());
        b[8..16].copy_from_slice(&(VA ^ (VA + 0x100)).to_le_bytes());
        b[s.vs_commit..s.vs_commit + 8].copy_from_slice(&commit.to_le_bytes());
        let size = (total - s.vs_first) / s.vs_unit;
        let (at, sig_at) = (s.vs_size.offset(), s.vs_signature.offset());
        b[at..at + 2].copy_from_slice(&(size as u16).to_le_bytes());
        let full = if commit.count_ones() as u64 == total / 0x1000 {
            0x8000
        } else {
            0
        };
        let sig = (size as u16 ^ s.vs_xor) & 0x7FFF | full;
        b[sig_at..sig_at + 2].copy_from_slice(&sig.to_le_bytes());
        let mut prev = 0u64;
        for &(off, units, alloc, what) in chunks {
            let plain =
                units << s.size_shift | prev << s.prev_shift | u64::from(alloc) << s.alloc_shift;
            let at = off as usize;
            b[at..at + 8].copy_from_slice(&(plain ^ (VA + off) ^ KEY).to_le_bytes());
            if alloc {
                b[at + 8] = ((KEY ^ (VA + off) ^ (off >> 12)) & 0xFF) as u8;
                let shifted = (VA + off + 0x20) & 0xFFF == 0;
                let h = at + if shifted { 0x20 } else { 0x10 };
                let hdr = match what {
                    None => {
                        let n = units - 1 - u64::from(shifted);
                        [0, 0, n as u8, 2, b'T', b'e', b's', b't']
                    }
                    Some(q) => q.to_le_bytes(),
                };
                b[h..h + 8].copy_from_slice(&hdr);
            }
            prev = units;
        }
        b.chunks(0x1000).map(|p| p.to_vec()).collect()
    }

    fn pages_of(bufs: &[Vec<u8>], commit: u64) -> Pages<'_> {
        Pages {
            va: VA,
            pages: bufs
                .iter()
                .enumerate()
                .map(|(i, p)| (commit >> i & 1 == 1).then_some(&p[..]))
                .collect(),
        }
    }

    #[test]
    fn a_256k_subsegment_is_walked_over_its_uncommitted_pages() {
        // RtlpHpVsSubsegmentCreate: Size = (0x40000 - 0x30) >> 4; only pages 0, 1 and 63
        // committed, a free chunk over the uncommitted ones, the last chunk on page 63.
        let (s, l) = (seg(), pool());
        let total = 0x40000u64;
        let units = (total - 0x30) / 16;
        let commit = 0b11 | 1 << 63;
        let last = 0x3F800u64;
        let chunks = [
            (0x30, 0x10, true, None),
            (0x130, (last - 0x130) / 16, false, None),
            (last, (total - last) / 16, true, None),
        ];
        assert_eq!(chunks.iter().map(|c| c.1).sum::<u64>(), units);
        let bufs = vs_sub(&s, total, commit, &chunks);
        assert_eq!(candidate(&bufs[0], &s), Some(Kind::Vs));
        assert_eq!(vs_extent(&bufs[0], &s), Some((total, commit)));
        let p = pages_of(&bufs, commit);
        let found = walk_vs(&p, (total, commit), &s, &l, (KEY, u64::MAX)).unwrap();
        assert_eq!(
            found.iter().map(|f| f.0).collect::<Vec<_>>(),
            [0x40, last + 0x10]
        );
        // The bitmap says page 63 is not committed, yet a chunk header is there: rejected.
        let lie = commit & !(1 << 63);
        let p = pages_of(&bufs, commit);
        let why = walk_vs(&p, (total, lie), &s, &l, (KEY, u64::MAX)).unwrap_err();
        assert_eq!(why, "a chunk header on an uncommitted page");
        // A bitmap bit past the subsegment's pages is no subsegment at all.
        let mut bad = bufs[0].clone();
        bad[s.vs_commit..s.vs_commit + 8].copy_from_slice(&(1u64 << 20 | 1).to_le_bytes());
        let small = vs_sub(
            &s,
            0x10000,
            1,
            &[(0x30, (0x10000 - 0x30) / 16, false, None)],
        );
        let mut small0 = small[0].clone();
        small0[s.vs_commit..s.vs_commit + 8].copy_from_slice(&(1u64 << 20 | 1).to_le_bytes());
        assert_eq!(vs_extent(&small0, &s), None);
        assert!(vs_extent(&bad, &s).is_some()); // 64 pages: every bit is a page
    }

    #[test]
    fn a_fully_committed_subsegment_and_a_block_at_the_page() {
        // Signature bit 15 (fully committed at creation) does not change the 15-bit check; a
        // chunk at page - 0x20 has its block at the page (RtlpHpVsContextAllocateInternal).
        let (s, l) = (seg(), pool());
        let total = 0x10000u64;
        let commit = u64::MAX >> 48;
        let rest = (total - 0x1030) / 16;
        let chunks = [
            (0x30, 0xFB, true, None),
            (0xFE0, 0x12, true, None),
            (0x1100, (total - 0x1100) / 16, false, None),
        ];
        assert_eq!(0xFB + 0x12 + (total - 0x1100) / 16, rest + 0x100);
        let bufs = vs_sub(&s, total, commit, &chunks);
        assert_eq!(
            u16_at(&bufs[0], s.vs_signature.offset()).unwrap() & 0x8000,
            0x8000
        );
        assert_eq!(candidate(&bufs[0], &s), Some(Kind::Vs));
        let p = pages_of(&bufs, commit);
        let found = walk_vs(&p, (total, commit), &s, &l, (KEY, u64::MAX)).unwrap();
        assert_eq!(
            found.iter().map(|f| f.0).collect::<Vec<_>>(),
            [0x40, 0x1000]
        );
    }

    #[test]
    fn a_delayed_free_block_is_skipped_and_garbage_rejected() {
        // RtlpHpVsContextFree: a freed block stays Allocated with an SList link over its
        // POOL_HEADER (0 at the list's end, else the next block's kernel address).
        let (s, l) = (seg(), pool());
        let total = 0x10000u64;
        let tail = (total - 0x130) / 16;
        for (link, ok) in [
            (0u64, true),
            (0xFFFF_A080_1234_5670, true),
            (0x0102_0304_0506_0708, false),
        ] {
            let chunks = [
                (0x30, 0x8, true, None),
                (0xB0, 0x8, true, Some(link)),
                (0x130, tail, false, None),
            ];
            let bufs = vs_sub(&s, total, 1, &chunks);
            let p = pages_of(&bufs, 1);
            let got = walk_vs(&p, (total, 1), &s, &l, (KEY, u64::MAX));
            match ok {
                true => assert_eq!(got.unwrap().len(), 1),
                false => assert_eq!(got.unwrap_err(), "an allocated chunk without a pool header"),
            }
        }
    }

    #[test]
    fn lfh_geometry_is_rtlphplfhsubsegmentinitialize_s() {
        // (block, subsegment) -> (FirstBlockOffset, BlockCount + withheld): the formulas of
        // RtlpHpLfhSubsegmentInitialize with 4 KiB commit units.
        let s = seg();
        for (block, size, first, slots) in [
            (0x20u64, 0x1000u64, 0x60u64, 125u64),
            (0x30, 0x1000, 0x50, 83),
            (0x100, 0x1000, 0x40, 15),
            (0x200, 0x2000, 0x200, 15),
            (0x30, 0x10000, 0x1B0, 1356),
            (0x80, 0x40000, 0x300, 2042),
        ] {
            let h = LfhHeader {
                size,
                unit: 0x1000,
                slots,
            };
            let (_, f, n) = lfh_expected(&h, block, s.lfh_bitmap as u64).unwrap();
            assert_eq!((f, n), (first, slots), "block {block:#x} in {size:#x}");
        }
        // 0x30-byte blocks over 16 pages: the 10 that straddle a page are withheld
        let g = LfhGeometry {
            size: 0x30,
            first: 0x1B0,
            first_raw: 0x1B0,
            slots: 1356,
            extent: 0x10000,
            unit: 0x1000,
        };
        assert_eq!((0..1356).filter(|&i| lfh_witheld(&g, i)).count(), 10);
    }

    #[test]
    fn heap_key_is_recovered_from_first_chunks() {
        let (s, l) = (seg(), pool());
        let a = vs_page(&s, &[(0x10, true), (0x20, true)]);
        let b = vs_page(&s, &[(0x31, true), (0x20, false)]);
        let (key, mask, _) = recover_heap(&[(&a, VA), (&b, VA)], &s, &l).unwrap();
        assert_eq!(key & mask, KEY & mask);
        assert_eq!(mask, s.size_mask() | s.prev_mask() | 0xFF);
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
            ((0xFD ^ 0x2BED) as u16 & 0x7FFF).to_le_bytes()
        );
        assert_eq!(candidate(&page, &s), Some(Kind::Vs));
        let p = Pages {
            va: VA,
            pages: vec![Some(&page[..])],
        };
        assert_eq!(
            walk_vs(&p, (0x1000, 1), &s, &l, (KEY, u64::MAX))
                .unwrap()
                .len(),
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
            let _ = walk_vs(&p, (0x1000 + (next() & 0xFFFF), next()), &s, &l, key);
            if let Some(g) = lfh_geometry(&page, VA, &s, next() as u32) {
                let _ = walk_lfh(&p, &page, &g, &s, &l);
            }
            let _ = recover_heap(&[(&page, VA)], &s, &l);
            let _ = recover_lfh(&[(&page, VA)], &s);
            let _ = vs_extent(&page, &s);
            let _ = lfh_header(&page, &s);
        }
    }
}
