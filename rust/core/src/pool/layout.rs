//! The `pool` section of a profile: POOL_HEADER, tracker and big-page entry layouts, the pool
//! type rule, and where globals that KDBG does not name are found (with the heuristic named).

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::bytes::parse_int;
use crate::error::{Error, Result};
use crate::kernel::fields::Entry;
use crate::kernel::{Profile, Symbols};

#[derive(Debug, Clone, Deserialize)]
pub struct Global {
    pub relative_to: String,
    pub delta: String,
    pub width: u8,
    /// The public source of the distance; such a figure is reported as heuristic.
    #[serde(default)]
    pub heuristic: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct Raw {
    layout: String,
    block_unit: String,
    pool_header: BTreeMap<String, String>,
    pool_type: BTreeMap<String, String>,
    big_pool_threshold: String,
    tracker: BTreeMap<String, serde_json::Value>,
    big_page: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    globals: BTreeMap<String, Global>,
    /// Win8+: per-processor tag tables (nt!ExPoolTagTables) and the expansion table
    /// (nt!PoolTrackTableExpansion) are summed with nt!PoolTrackTable.
    #[serde(default)]
    per_cpu_tag_tables: bool,
    /// Bytes each side of the PoolTrackTable variable searched for the globals KDBG does not
    /// name, when neither symbols nor `globals` place them (default 0x10000 on per-CPU builds).
    #[serde(default)]
    globals_search_window: Option<String>,
    /// VS/LFH subsegment layouts and where the heap keys live (segment-heap builds).
    #[serde(default)]
    segment_heap: Option<serde_json::Value>,
    /// The session pool's tagging database (nt!ExpSessionPoolTrackTable and the session
    /// expansion table of _MM_SESSION_SPACE).
    #[serde(default)]
    session: Option<RawSession>,
}

/// The `pool.session` section (its `sources`, `unsure` and `entries` are documentation and
/// the forge's; the reader takes the table's size from the kernel).
#[derive(Debug, Clone, Deserialize)]
struct RawSession {
    /// "variable": a variable of nt holds the table's address; "session_space": the
    /// `PoolTags` pointer of _MM_SESSION_SPACE does.
    table: String,
    #[serde(default)]
    table_variable: Option<String>,
    size_variable: String,
    #[serde(default)]
    mask_variable: Option<String>,
    #[serde(default)]
    session_space_variable: Option<String>,
    /// Where the table sits in session space (variable tables): the session space is the
    /// table's address minus this when no symbol names it.
    #[serde(default)]
    table_offset: Option<String>,
    #[serde(default)]
    mm_session_space: BTreeMap<String, String>,
    #[serde(default)]
    search_window: Option<String>,
}

const TRACKER_FIELDS: [&str; 7] = [
    "Key",
    "NonPagedAllocs",
    "NonPagedFrees",
    "NonPagedBytes",
    "PagedAllocs",
    "PagedFrees",
    "PagedBytes",
];
const BIG_PAGE_FIELDS: [&str; 4] = ["Va", "Key", "PoolType", "NumberOfBytes"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocator {
    /// Win7..RS4: blocks chained through PreviousSize/BlockSize within each 4 KiB page.
    Legacy,
    /// 19H1+: VS/LFH segment heap; blocks still begin with a POOL_HEADER, pages are no chains.
    SegmentHeap,
}

/// How the kernel hashes a VA to its big-page table slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BigHash {
    /// ExpAddTagForBigPages (22631): h = 40543 * (u32)(Va >> 12); (u32)h ^ (u32)(h >> 32).
    Kernel40543,
    /// ReactOS ExpComputePartialHashForAddress: p = (u32)(Va >> 12); p>>24 ^ p>>16 ^ p>>8 ^ p.
    ReactOs,
}

impl BigHash {
    /// The slot of `va` in a table of `mask + 1` entries.
    pub fn slot(self, va: u64, mask: usize) -> usize {
        let p = (va >> 12) as u32;
        let h = match self {
            BigHash::Kernel40543 => {
                let h = 40543u64 * u64::from(p);
                (h as u32) ^ ((h >> 32) as u32)
            }
            BigHash::ReactOs => (p >> 24) ^ (p >> 16) ^ (p >> 8) ^ p,
        };
        h as usize & mask
    }
}

#[derive(Debug, Clone)]
pub struct PoolLayout {
    pub allocator: Allocator,
    pub block_unit: u64,
    pub header_size: usize,
    pub previous_size: usize,
    pub pool_index: usize,
    pub block_size: usize,
    pub pool_type: usize,
    pub pool_tag: usize,
    pub paged_mask: u8,
    pub session_mask: u8,
    pub big_pool_threshold: u64,
    pub tracker: Entry,
    pub big_page: Entry,
    /// The big-page table's slot hash (`pool.big_page.hash`).
    pub big_hash: BigHash,
    pub globals: BTreeMap<String, Global>,
    /// Sum nt!ExPoolTagTables (one table per processor) and nt!PoolTrackTableExpansion with
    /// nt!PoolTrackTable (Win8 and later).
    pub per_cpu_tag_tables: bool,
    /// Bytes each side of the PoolTrackTable variable that the symbol-free search of the pool
    /// globals reads (0: no search).
    pub globals_search_window: u64,
    /// VS/LFH subsegment layouts and where the heap keys live (segment-heap builds).
    pub segment: Option<super::segheap::SegLayout>,
    /// The session pool's tagging database (None: the profile does not describe it).
    pub session: Option<SessionLayout>,
}

/// Where the session table's address is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionTable {
    /// A variable of nt (nt!ExpSessionPoolTrackTable).
    Variable(String),
    /// A pointer field of _MM_SESSION_SPACE at this offset (PoolTags, Windows 11 22000).
    SessionSpace(usize),
}

/// The profile's `pool.session` section: how the session pool's tagging database is found.
#[derive(Debug, Clone)]
pub struct SessionLayout {
    pub table: SessionTable,
    /// nt!ExpSessionPoolTrackTableSize: the table's entry count.
    pub size_variable: String,
    /// nt!ExpSessionPoolTrackTableMask (Size - 1), when the profile names it.
    pub mask_variable: Option<String>,
    /// The variable holding the current session's _MM_SESSION_SPACE (nt!MmSessionSpace).
    pub session_space_variable: String,
    /// The table's offset in session space (variable tables), when known.
    pub table_offset: Option<u64>,
    /// _MM_SESSION_SPACE.PoolTrackTableExpansion and PoolTrackTableExpansionSize.
    pub expansion: Option<(usize, usize)>,
    /// Bytes each side of the PoolTrackTable variable the symbol-free search reads.
    pub search_window: u64,
}

impl SessionLayout {
    fn parse(name: &str, r: &RawSession) -> Result<Self> {
        let bad = |what: &str| Error::format(0, format!("profile {name} pool.session: {what}"));
        let mm = |k: &str| -> Result<Option<usize>> {
            r.mm_session_space
                .get(k)
                .map(|v| parse_int(v).map(|x| x as usize).ok_or_else(|| bad(k)))
                .transpose()
        };
        let table = match r.table.as_str() {
            "variable" => SessionTable::Variable(
                r.table_variable
                    .clone()
                    .ok_or_else(|| bad("table_variable missing"))?,
            ),
            "session_space" => SessionTable::SessionSpace(
                mm("PoolTags")?.ok_or_else(|| bad("mm_session_space.PoolTags missing"))?,
            ),
            other => return Err(bad(&format!("unknown table kind {other:?}"))),
        };
        let expansion = match (
            mm("PoolTrackTableExpansion")?,
            mm("PoolTrackTableExpansionSize")?,
        ) {
            (Some(p), Some(n)) => Some((p, n)),
            (None, None) => None,
            _ => {
                return Err(bad(
                    "PoolTrackTableExpansion without its size, or the reverse",
                ))
            }
        };
        Ok(Self {
            table,
            size_variable: r.size_variable.clone(),
            mask_variable: r.mask_variable.clone(),
            session_space_variable: r
                .session_space_variable
                .clone()
                .unwrap_or_else(|| "MmSessionSpace".into()),
            table_offset: r
                .table_offset
                .as_deref()
                .map(|v| parse_int(v).ok_or_else(|| bad("table_offset")))
                .transpose()?,
            expansion,
            search_window: match r.search_window.as_deref() {
                Some(w) => parse_int(w)
                    .filter(|&w| w <= MAX_SEARCH_WINDOW)
                    .ok_or_else(|| bad("search_window"))?,
                None => DEFAULT_SEARCH_WINDOW,
            },
        })
    }
}

/// The default search window of per-CPU builds: 64 KiB each side of the PoolTrackTable variable.
const DEFAULT_SEARCH_WINDOW: u64 = 0x10000;
/// A larger window is not "near" PoolTrackTable any more (and costs reads).
const MAX_SEARCH_WINDOW: u64 = 0x10_0000;

impl PoolLayout {
    pub fn from_profile(p: &Profile) -> Result<Self> {
        let v = p
            .extra
            .get("pool")
            .ok_or_else(|| Error::format(0, format!("profile {} has no pool section", p.name)))?;
        let raw: Raw = serde_json::from_value(v.clone())
            .map_err(|e| Error::format(0, format!("profile {} pool: {e}", p.name)))?;
        let int = |m: &BTreeMap<String, String>, k: &str| {
            m.get(k)
                .and_then(|s| parse_int(s))
                .ok_or_else(|| Error::format(0, format!("profile {} pool: {k} missing", p.name)))
        };
        let allocator = match raw.layout.as_str() {
            "legacy" => Allocator::Legacy,
            "segment_heap" => Allocator::SegmentHeap,
            other => {
                return Err(Error::format(
                    0,
                    format!("profile {}: unknown pool layout {other}", p.name),
                ))
            }
        };
        let h = &raw.pool_header;
        Ok(Self {
            allocator,
            block_unit: parse_int(&raw.block_unit).unwrap_or(16),
            header_size: int(h, "size")? as usize,
            previous_size: int(h, "PreviousSize")? as usize,
            pool_index: int(h, "PoolIndex")? as usize,
            block_size: int(h, "BlockSize")? as usize,
            pool_type: int(h, "PoolType")? as usize,
            pool_tag: int(h, "PoolTag")? as usize,
            paged_mask: int(&raw.pool_type, "paged_mask")? as u8,
            session_mask: int(&raw.pool_type, "session_mask")? as u8,
            big_pool_threshold: parse_int(&raw.big_pool_threshold).unwrap_or(0xFF0),
            tracker: Entry::parse("pool.tracker", &raw.tracker)?,
            big_page: Entry::parse("pool.big_page", &raw.big_page)?,
            big_hash: match raw.big_page.get("hash").and_then(|v| v.as_str()) {
                Some("40543") => BigHash::Kernel40543,
                Some("reactos") | None => BigHash::ReactOs,
                Some(other) => {
                    return Err(Error::format(
                        0,
                        format!("profile {} pool.big_page.hash {other:?}", p.name),
                    ))
                }
            },
            globals: raw.globals,
            per_cpu_tag_tables: raw.per_cpu_tag_tables,
            globals_search_window: match raw.globals_search_window.as_deref() {
                Some(w) => parse_int(w)
                    .filter(|&w| w <= MAX_SEARCH_WINDOW)
                    .ok_or_else(|| {
                        Error::format(
                            0,
                            format!("profile {} pool: globals_search_window {w:?}", p.name),
                        )
                    })?,
                None if raw.per_cpu_tag_tables => DEFAULT_SEARCH_WINDOW,
                None => 0,
            },
            segment: raw
                .segment_heap
                .as_ref()
                .map(super::segheap::SegLayout::parse)
                .transpose()?,
            session: raw
                .session
                .as_ref()
                .map(|r| SessionLayout::parse(&p.name, r))
                .transpose()?,
        })
    }

    /// Replace the profile's entry layouts (and segment-heap layouts) with a symbol table's,
    /// where it has them.
    pub fn apply_symbols(&mut self, syms: &Symbols, sources: &mut super::globals::Sources) {
        for (ty, entry, names) in [
            (
                "_POOL_TRACKER_TABLE",
                &mut self.tracker,
                &TRACKER_FIELDS[..],
            ),
            (
                "_POOL_TRACKER_BIG_PAGES",
                &mut self.big_page,
                &BIG_PAGE_FIELDS[..],
            ),
        ] {
            let Some(t) = syms.types.get(ty) else {
                continue;
            };
            if t.size == 0 || !names.iter().all(|n| t.fields.contains_key(*n)) {
                continue;
            }
            entry.replace(
                t.size,
                names.iter().map(|n| ((*n).to_string(), t.fields[*n])),
            );
            sources.insert(ty.into(), syms.source.clone());
        }
        if let Some(seg) = self.segment.as_mut() {
            seg.apply_symbols(syms, sources);
        }
    }

    pub fn layout_name(&self) -> &'static str {
        match self.allocator {
            Allocator::Legacy => "legacy",
            Allocator::SegmentHeap => "segment_heap",
        }
    }
}
