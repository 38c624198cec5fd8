//! The verifier's circular logs: pool allocate/free records (`VfPoolTraces`, `!verifier 80`) and
//! IRP calls (`IovIrpTraces`, `!verifier 100`). The writer takes `slot = ++Index & (Length-1)`,
//! so the newest record is at `Index & (Length-1)` and `min(Index, Length)` slots are valid.
//! Without symbols the buffer is found by its pool tag, and the order is then unknown.
//!
//! A log is read in bulk (1 MiB of slots per translator read) into columns: one value per kept
//! record, and every record's stack as `frames` u64 (row-major, zero past its depth).

use std::collections::HashMap;
use std::hash::Hasher;

use super::layout::VerifierLayout;
use super::tracked::{FxBuild, FxHasher};
use super::{Context, Memory};
use crate::error::{Error, Result};
use crate::kernel::fields::{Entry, FieldAt};
use crate::pool::globals::Sources;
use crate::pool::tag;

/// Largest log accepted (Windows 11 caps an explicit length at 0x800000).
pub const MAX_LENGTH: u64 = 0x80_0000;
/// Bytes of slots read at once.
const CHUNK_BYTES: usize = 1 << 20;
/// Records reserved up front at most (an unordered heuristic log may be mostly empty).
const MAX_RESERVE: usize = 1 << 21;

/// One pool-log record (a row view of [`PoolLog`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolTrace {
    pub slot: u32,
    pub va: u64,
    /// Requested bytes on allocation; what the pool passed on free.
    pub bytes: u64,
    pub thread: u64,
    pub stack: Vec<u64>,
}

/// One IRP-log record (a row view of [`IrpLog`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IrpTrace {
    pub slot: u32,
    pub irp: u64,
    pub thread: u64,
    pub kernel_apc_disable: i16,
    pub special_apc_disable: i16,
    pub irql: u8,
    pub stack: Vec<u64>,
}

/// The pool log's own fields, one value per record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolColumns {
    pub va: Vec<u64>,
    pub bytes: Vec<u64>,
    pub thread: Vec<u64>,
}

/// The IRP log's own fields, one value per record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IrpColumns {
    pub irp: Vec<u64>,
    pub thread: Vec<u64>,
    pub irql: Vec<u8>,
    pub kernel_apc_disable: Vec<i16>,
    pub special_apc_disable: Vec<i16>,
}

/// A log as columns: `slot`, `depth` and `stack` for every kind of record, `cols` for its own
/// fields. Records are newest first when `ordered`, else in slot order; empty slots are left out.
#[derive(Debug, Clone, Default)]
pub struct TraceLog<C> {
    pub buffer: u64,
    /// The free-running write counter, when known (symbols).
    pub index: Option<u32>,
    pub length: u32,
    /// Records are newest first; false when the index is unknown (then slot order).
    pub ordered: bool,
    /// Slots whose page is absent from the dump.
    pub unreadable: u64,
    /// Stack slots of every record (the layout's frame count).
    pub frames: usize,
    pub slot: Vec<u32>,
    /// Frames used: up to the first 0.
    pub depth: Vec<u8>,
    /// `frames` u64 per record, row-major; zero past `depth`.
    pub stack: Vec<u64>,
    /// Records with equal stacks share an id (for grouping by stack without comparing frames).
    pub stack_id: Vec<u32>,
    pub cols: C,
    /// Stack hash → the first record with that stack (interning `stack_id`).
    interned: HashMap<u64, u32, FxBuild>,
}

pub type PoolLog = TraceLog<PoolColumns>;
pub type IrpLog = TraceLog<IrpColumns>;

impl<C> TraceLog<C> {
    pub fn len(&self) -> usize {
        self.slot.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slot.is_empty()
    }

    /// Record `i`'s frames (its depth of them).
    pub fn stack(&self, i: usize) -> &[u64] {
        let start = i * self.frames;
        &self.stack[start..start + usize::from(self.depth[i])]
    }
}

impl<C: Columns> TraceLog<C> {
    /// An empty log of `frames` stack slots per record.
    pub fn new(frames: usize) -> Self {
        Self {
            buffer: 0,
            index: None,
            length: 0,
            ordered: false,
            unreadable: 0,
            frames,
            slot: Vec::new(),
            depth: Vec::new(),
            stack: Vec::new(),
            stack_id: Vec::new(),
            cols: C::default(),
            interned: HashMap::default(),
        }
    }

    /// Record `i`'s stack id: that of the first record with the same stack, else a new one.
    fn intern(&mut self, i: usize) -> u32 {
        let f = self.frames;
        let row = &self.stack[i * f..(i + 1) * f];
        let mut h = FxHasher::default();
        for &x in row {
            h.write_u64(x);
        }
        let mut key = h.finish();
        loop {
            match self.interned.get(&key) {
                None => {
                    self.interned.insert(key, i as u32);
                    return self.interned.len() as u32 - 1;
                }
                Some(&j) if self.stack[j as usize * f..(j as usize + 1) * f] == *row => {
                    return self.stack_id[j as usize];
                }
                Some(_) => key = key.wrapping_add(1), // another stack with this hash
            }
        }
    }

    /// Append a record from its raw slot bytes (see [`Columns::push`]).
    fn push_stack(&mut self, slot: u32, frames: impl Iterator<Item = u64>) {
        let start = self.stack.len();
        self.stack.extend(frames.take(self.frames));
        self.stack.resize(start + self.frames, 0);
        let row = &mut self.stack[start..];
        let depth = row.iter().position(|&f| f == 0).unwrap_or(row.len());
        row[depth..].fill(0);
        self.depth.push(depth as u8);
        self.slot.push(slot);
        let id = self.intern(self.slot.len() - 1);
        self.stack_id.push(id);
    }

    /// Append a record given its fields (for tests and hand-built logs).
    pub fn push(&mut self, slot: u32, stack: &[u64], fields: C::Row) {
        self.push_stack(slot, stack.iter().copied());
        self.cols.push_row(fields);
    }

    /// Keep the records `keep(cols, i)` accepts, in order.
    pub fn retain(&mut self, keep: impl Fn(&C, usize) -> bool) {
        let mask: Vec<bool> = (0..self.len()).map(|i| keep(&self.cols, i)).collect();
        let mut k = mask.iter();
        self.slot.retain(|_| *k.next().unwrap_or(&true));
        let mut k = mask.iter();
        self.depth.retain(|_| *k.next().unwrap_or(&true));
        let f = self.frames;
        let mut w = 0;
        for (i, &m) in mask.iter().enumerate() {
            if m {
                self.stack.copy_within(i * f..(i + 1) * f, w * f);
                w += 1;
            }
        }
        self.stack.truncate(w * f);
        self.cols.retain(&mask);
        self.interned.clear();
        self.stack_id.clear();
        for i in 0..w {
            let id = self.intern(i);
            self.stack_id.push(id);
        }
    }
}

impl PoolLog {
    pub fn row(&self, i: usize) -> PoolTrace {
        PoolTrace {
            slot: self.slot[i],
            va: self.cols.va[i],
            bytes: self.cols.bytes[i],
            thread: self.cols.thread[i],
            stack: self.stack(i).to_vec(),
        }
    }
}

impl IrpLog {
    pub fn row(&self, i: usize) -> IrpTrace {
        let c = &self.cols;
        IrpTrace {
            slot: self.slot[i],
            irp: c.irp[i],
            thread: c.thread[i],
            kernel_apc_disable: c.kernel_apc_disable[i],
            special_apc_disable: c.special_apc_disable[i],
            irql: c.irql[i],
            stack: self.stack(i).to_vec(),
        }
    }
}

/// Slots newest first: `min(index, length)` of them from `index & (length-1)` backwards with
/// wrap-around. `length` must be a power of two.
pub fn newest_first(index: u32, length: u32) -> impl Iterator<Item = u32> {
    let mask = length.wrapping_sub(1);
    let n = index.min(length);
    (0..n).map(move |k| index.wrapping_sub(k) & mask)
}

/// [`newest_first`] as at most two descending runs of slots, `[lo, hi]` each.
pub fn newest_first_runs(index: u32, length: u32) -> Vec<(u32, u32)> {
    let n = index.min(length);
    if n == 0 || length == 0 {
        return Vec::new();
    }
    let newest = index & length.wrapping_sub(1);
    let first = n.min(newest + 1);
    let mut runs = vec![(newest + 1 - first, newest)];
    let rest = n - first;
    if rest > 0 {
        runs.push((length - rest, length - 1));
    }
    runs
}

/// A length the kernel could have set: a power of two no larger than [`MAX_LENGTH`].
pub fn check_length(name: &str, length: u64) -> Result<u32> {
    if length == 0 || !length.is_power_of_two() || length > MAX_LENGTH {
        return Err(Error::unsupported(format!(
            "{name} {length:#x} is not a power of two up to {MAX_LENGTH:#x}"
        )));
    }
    Ok(length as u32)
}

/// A log's own columns: how its entries are laid out and parsed.
pub trait Columns: Default {
    /// Field readers of one entry.
    type Fields: Copy;
    /// One record's own fields (for [`TraceLog::push`]).
    type Row;
    fn entry(l: &VerifierLayout) -> &Entry;
    fn frames(l: &VerifierLayout) -> usize;
    fn fields(e: &Entry) -> Result<Self::Fields>;
    /// The field that, zero with an empty stack, marks a slot never written.
    fn key(f: &Self::Fields, raw: &[u8]) -> u64;
    fn push(&mut self, f: &Self::Fields, raw: &[u8]);
    fn push_row(&mut self, r: Self::Row);
    fn reserve(&mut self, n: usize);
    fn retain(&mut self, keep: &[bool]);
}

fn retain_by<T>(v: &mut Vec<T>, keep: &[bool]) {
    let mut k = keep.iter();
    v.retain(|_| *k.next().unwrap_or(&true));
}

#[derive(Debug, Clone, Copy)]
pub struct PoolFields {
    va: FieldAt,
    bytes: FieldAt,
    thread: FieldAt,
}

impl Columns for PoolColumns {
    type Fields = PoolFields;
    /// (va, bytes, thread)
    type Row = (u64, u64, u64);
    fn entry(l: &VerifierLayout) -> &Entry {
        &l.pool_trace
    }
    fn frames(l: &VerifierLayout) -> usize {
        l.pool_trace_frames
    }
    fn fields(e: &Entry) -> Result<PoolFields> {
        Ok(PoolFields {
            va: e.field("Address")?,
            bytes: e.field("Size")?,
            thread: e.field("Thread")?,
        })
    }
    fn key(f: &PoolFields, raw: &[u8]) -> u64 {
        f.va.read(raw)
    }
    fn push(&mut self, f: &PoolFields, raw: &[u8]) {
        self.va.push(f.va.read(raw));
        self.bytes.push(f.bytes.read(raw));
        self.thread.push(f.thread.read(raw));
    }
    fn push_row(&mut self, (va, bytes, thread): (u64, u64, u64)) {
        self.va.push(va);
        self.bytes.push(bytes);
        self.thread.push(thread);
    }
    fn reserve(&mut self, n: usize) {
        self.va.reserve(n);
        self.bytes.reserve(n);
        self.thread.reserve(n);
    }
    fn retain(&mut self, keep: &[bool]) {
        retain_by(&mut self.va, keep);
        retain_by(&mut self.bytes, keep);
        retain_by(&mut self.thread, keep);
    }
}

#[derive(Debug, Clone, Copy)]
pub struct IrpFields {
    irp: FieldAt,
    thread: FieldAt,
    kernel_apc: FieldAt,
    special_apc: FieldAt,
    irql: FieldAt,
}

impl Columns for IrpColumns {
    type Fields = IrpFields;
    /// (irp, thread, irql, kernel_apc_disable, special_apc_disable)
    type Row = (u64, u64, u8, i16, i16);
    fn entry(l: &VerifierLayout) -> &Entry {
        &l.irp_trace
    }
    fn frames(l: &VerifierLayout) -> usize {
        l.irp_trace_frames
    }
    fn fields(e: &Entry) -> Result<IrpFields> {
        Ok(IrpFields {
            irp: e.field("Irp")?,
            thread: e.field("Thread")?,
            kernel_apc: e.field("KernelApcDisable")?,
            special_apc: e.field("SpecialApcDisable")?,
            irql: e.field("Irql")?,
        })
    }
    fn key(f: &IrpFields, raw: &[u8]) -> u64 {
        f.irp.read(raw)
    }
    fn push(&mut self, f: &IrpFields, raw: &[u8]) {
        self.irp.push(f.irp.read(raw));
        self.thread.push(f.thread.read(raw));
        self.kernel_apc_disable
            .push(f.kernel_apc.read(raw) as u16 as i16);
        self.special_apc_disable
            .push(f.special_apc.read(raw) as u16 as i16);
        self.irql.push(f.irql.read(raw) as u8);
    }
    fn push_row(&mut self, r: (u64, u64, u8, i16, i16)) {
        self.irp.push(r.0);
        self.thread.push(r.1);
        self.irql.push(r.2);
        self.kernel_apc_disable.push(r.3);
        self.special_apc_disable.push(r.4);
    }
    fn reserve(&mut self, n: usize) {
        self.irp.reserve(n);
        self.thread.reserve(n);
        self.irql.reserve(n);
        self.kernel_apc_disable.reserve(n);
        self.special_apc_disable.reserve(n);
    }
    fn retain(&mut self, keep: &[bool]) {
        retain_by(&mut self.irp, keep);
        retain_by(&mut self.thread, keep);
        retain_by(&mut self.irql, keep);
        retain_by(&mut self.kernel_apc_disable, keep);
        retain_by(&mut self.special_apc_disable, keep);
    }
}

/// How one entry's stack is read: contiguous u64 frames (the fast path), or field by field.
#[derive(Clone, Copy)]
enum Frames {
    Contiguous(usize),
    Fields(FieldAt),
}

/// Parse one slot's bytes into the log; an empty slot (key 0 and no first frame) is skipped.
fn parse_slot<C: Columns>(
    log: &mut TraceLog<C>,
    f: &C::Fields,
    frames: Frames,
    raw: &[u8],
    slot: u32,
) {
    let n = log.frames;
    match frames {
        Frames::Contiguous(off) => {
            let mut it = raw[off..off + 8 * n]
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])));
            let first = it.clone().next().unwrap_or(0);
            if first == 0 && C::key(f, raw) == 0 {
                return;
            }
            log.push_stack(slot, &mut it);
        }
        Frames::Fields(first) => {
            let frame = |k: usize| first.moved(k * 8).read(raw);
            if frame(0) == 0 && C::key(f, raw) == 0 {
                return;
            }
            log.push_stack(slot, (0..n).map(frame));
        }
    }
    log.cols.push(f, raw);
}

/// Read `length` entries at `buffer`: newest first when the index is known, else in slot
/// order. Absent pages are counted, not fatal.
pub fn read_log<C: Columns>(
    m: &mut impl Memory,
    l: &VerifierLayout,
    buffer: u64,
    index: Option<u32>,
    length: u32,
) -> Result<TraceLog<C>> {
    let entry = C::entry(l);
    let fields = C::fields(entry)?;
    let first = entry.field("StackTrace")?;
    let stride = entry.size;
    let mut log = TraceLog::<C>::new(C::frames(l));
    let frames = if first.width() == 8 && first.offset() + 8 * log.frames <= stride {
        Frames::Contiguous(first.offset())
    } else {
        Frames::Fields(first)
    };
    log.buffer = buffer;
    log.index = index;
    log.length = length;
    log.ordered = index.is_some();
    // (lo, hi, descending) runs of slots.
    let runs: Vec<(u32, u32, bool)> = match index {
        Some(i) => newest_first_runs(i, length)
            .into_iter()
            .map(|(lo, hi)| (lo, hi, true))
            .collect(),
        None if length > 0 => vec![(0, length - 1, false)],
        None => Vec::new(),
    };
    let total: usize = runs.iter().map(|r| (r.1 - r.0) as usize + 1).sum();
    let reserve = total.min(MAX_RESERVE);
    log.slot.reserve(reserve);
    log.depth.reserve(reserve);
    log.stack.reserve(reserve * log.frames);
    log.stack_id.reserve(reserve);
    log.cols.reserve(reserve);
    let per_chunk = (CHUNK_BYTES / stride.max(1)).max(1) as u32;
    let mut buf = vec![0u8; per_chunk as usize * stride];
    let at = |slot: u32| buffer.wrapping_add(u64::from(slot) * stride as u64);
    for (lo, hi, descending) in runs {
        // Chunks of [lo, hi], visited from hi down (descending) or from lo up.
        let chunks = ((hi - lo) / per_chunk) + 1;
        for c in 0..chunks {
            let (a, b) = if descending {
                let b = hi - c * per_chunk;
                (b.saturating_sub(per_chunk - 1).max(lo), b)
            } else {
                let a = lo + c * per_chunk;
                (a, a.saturating_add(per_chunk - 1).min(hi))
            };
            let n = (b - a) as usize + 1;
            let raw = &mut buf[..n * stride];
            let order = |k: usize| if descending { n - 1 - k } else { k };
            if m.read(at(a), raw).is_ok() {
                for k in 0..n {
                    let j = order(k);
                    let slot = a + j as u32;
                    parse_slot(
                        &mut log,
                        &fields,
                        frames,
                        &raw[j * stride..(j + 1) * stride],
                        slot,
                    );
                }
                continue;
            }
            // Some page of the chunk is absent: slot by slot.
            let mut one = vec![0u8; stride];
            for k in 0..n {
                let slot = a + order(k) as u32;
                if m.read(at(slot), &mut one).is_err() {
                    log.unreadable += 1;
                    continue;
                }
                parse_slot(&mut log, &fields, frames, &one, slot);
            }
        }
    }
    Ok(log)
}

/// Which log: its globals, and the pool tags of its buffer (from the profile).
#[derive(Debug, Clone, Copy)]
pub struct Which {
    pub buffer: &'static str,
    pub index: &'static str,
    pub length: &'static str,
    pub tags: fn(&VerifierLayout) -> &[u32],
}

pub const POOL_LOG: Which = Which {
    buffer: "VfPoolTraces",
    index: "VfPoolTracesIndex",
    length: "VfPoolTracesLength",
    tags: |l| &l.pool_trace_tags,
};

pub const IRP_LOG: Which = Which {
    buffer: "IovIrpTraces",
    index: "IovIrpTracesIndex",
    length: "IovIrpTracesLength",
    tags: |l| &l.irp_trace_tags,
};

/// "VfPT" or "ViIn or VfPT".
fn tag_names(tags: &[u32]) -> String {
    tags.iter()
        .map(|&t| tag::to_string(t))
        .collect::<Vec<_>>()
        .join(" or ")
}

/// Read a log through the symbol table's globals, else through its pool tag (a big-pool entry,
/// else a block from the page scan); `sources` says which.
pub fn read<C: Columns>(
    m: &mut impl Memory,
    ctx: &Context,
    which: Which,
    sources: &mut Sources,
) -> Result<TraceLog<C>> {
    let l = ctx.layout;
    let entry = C::entry(l);
    let globals = (
        ctx.symbol(which.buffer),
        ctx.symbol(which.index),
        ctx.symbol(which.length),
    );
    if let (Some(b), Some(i), Some(n)) = globals {
        let buffer = m.read_u64(b).map_err(|e| e.context(which.buffer))?;
        let index = m.read_u32(i).map_err(|e| e.context(which.index))?;
        let length = m.read_u32(n).map_err(|e| e.context(which.length))?;
        if buffer == 0 {
            return Err(Error::unsupported(format!(
                "{} is NULL: the log was not allocated",
                which.buffer
            )));
        }
        let length = check_length(which.length, u64::from(length))?;
        let origin = ctx.symbols.map_or("", |s| s.source.as_str());
        sources.insert(
            which.buffer.into(),
            format!(
                "{origin} (newest first from {} & ({} - 1))",
                which.index, which.length
            ),
        );
        return read_log(m, l, buffer, Some(index), length);
    }
    let tags = (which.tags)(l);
    let (buffer, bytes, how, found) = find_buffer(ctx, tags).ok_or_else(|| {
        let big = if ctx.bigpool.is_some() {
            "the big-pool table holds none"
        } else {
            "the big-pool table was not read"
        };
        let scan = match &ctx.blocks {
            Ok(_) => "the pool scan found none".to_string(),
            Err(why) => format!("no pool scan ({why})"),
        };
        Error::unsupported(format!(
            "no symbols for {}, and no pool allocation tagged {}: {big}; {scan}",
            which.buffer,
            tag_names(tags)
        ))
    })?;
    let length = (bytes / entry.size as u64).min(MAX_LENGTH) as u32;
    sources.insert(
        which.buffer.into(),
        format!(
            "heuristic: {how} tagged {} ({length} entries in slot order; which is newest is unknown without {})",
            tag::to_string(found), which.index
        ),
    );
    read_log(m, l, buffer, None, length)
}

/// The largest live allocation of the log's first tag that has one: (buffer VA, bytes, what it
/// was, its tag). Big-pool entries first, then blocks of the page scan.
fn find_buffer(ctx: &Context, tags: &[u32]) -> Option<(u64, u64, &'static str, u32)> {
    let header = ctx.pool.map_or(0, |p| p.header_size as u64);
    tags.iter().find_map(|&want| {
        let big = ctx
            .bigpool
            .into_iter()
            .flat_map(|b| b.pages.iter())
            .filter(|p| tag::normalize(p.tag) == want && !p.free && p.va != 0)
            .max_by_key(|p| p.bytes)
            .map(|p| (p.va, p.bytes, "big-pool entry", want));
        big.or_else(|| {
            ctx.blocks
                .as_ref()
                .ok()?
                .iter()
                .filter(|b| tag::normalize(b.tag) == want && b.bytes > header)
                .max_by_key(|b| b.bytes)
                .map(|b| (b.va + header, b.bytes - header, "pool block", want))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::super::testmem::Sparse;
    use super::*;
    use crate::kernel::Profile;

    #[test]
    fn order_newest_first_with_wrap() {
        assert_eq!(newest_first(3, 8).collect::<Vec<_>>(), [3, 2, 1]);
        assert_eq!(newest_first(0, 8).count(), 0);
        assert_eq!(
            newest_first(10, 8).collect::<Vec<_>>(),
            [2, 1, 0, 7, 6, 5, 4, 3]
        );
        // The counter wraps at 2^32: still every slot once, newest at index & mask.
        let v: Vec<u32> = newest_first(u32::MAX, 4).collect();
        assert_eq!(v, [3, 2, 1, 0]);
        assert_eq!(newest_first(8, 8).collect::<Vec<_>>()[0], 0);
    }

    #[test]
    fn runs_match_the_slot_order() {
        for (index, length) in [
            (3u32, 8u32),
            (0, 8),
            (10, 8),
            (8, 8),
            (7, 8),
            (9, 8),
            (u32::MAX, 4),
            (u32::MAX, 1),
            (0x18_0000, 0x10_0000),
            (1, 1),
        ] {
            let want: Vec<u32> = newest_first(index, length).collect();
            let got: Vec<u32> = newest_first_runs(index, length)
                .into_iter()
                .flat_map(|(lo, hi)| (lo..=hi).rev())
                .collect();
            assert_eq!(got, want, "index {index:#x} length {length:#x}");
        }
    }

    #[test]
    fn lengths() {
        assert!(check_length("n", 0x10000).is_ok());
        assert!(check_length("n", 0x80_0000).is_ok());
        for bad in [0, 3, 0x100_0000, 0x1_0000_0000] {
            assert!(check_length("n", bad).is_err(), "{bad:#x}");
        }
    }

    #[test]
    fn log_entries_and_stacks() {
        let l = VerifierLayout::from_profile(&Profile::for_build(19041).unwrap().0).unwrap();
        let mut m = Sparse::default();
        let buf = 0xFFFF_FA80_0070_0000u64;
        m.touch(buf, 8 * 0x80);
        // slot 1: oldest, 2: empty, 3: newest with a full 13-frame stack
        m.put_u64(buf + 0x80, 0xA000);
        m.put_u64(buf + 0x88, 0x20);
        m.put_u64(buf + 0x98, 0x111);
        m.put_u64(buf + 0xA0, 0);
        m.put_u64(buf + 0xA8, 0x222); // after the terminating 0: ignored
        let s3 = buf + 3 * 0x80;
        m.put_u64(s3, 0xB000);
        m.put_u64(s3 + 0x10, 0xCAFE);
        for k in 0..13 {
            m.put_u64(s3 + 0x18 + k * 8, 0x1000 + k);
        }
        let log: PoolLog = read_log(&mut m, &l, buf, Some(3), 8).unwrap();
        assert!(log.ordered);
        assert_eq!(log.len(), 2);
        assert_eq!(log.frames, 13);
        assert_eq!(log.cols.va[0], 0xB000);
        assert_eq!(log.stack(0).len(), 13);
        assert_eq!(log.cols.thread[0], 0xCAFE);
        assert_eq!(log.stack(1), [0x111]);
        assert_eq!(log.slot[1], 1);
        assert_eq!(log.depth, [13, 1]);
        // Zero-padded past the depth, the ignored frame included.
        assert_eq!(log.stack.len(), 2 * 13);
        assert!(log.stack[14..].iter().all(|&f| f == 0));
        assert_eq!(
            log.row(1),
            PoolTrace {
                slot: 1,
                va: 0xA000,
                bytes: 0x20,
                thread: 0,
                stack: vec![0x111]
            }
        );

        // IRP log: negative APC counts; pages 1..2 of the 2-page buffer are absent.
        m.put_u64(buf + 0x400, 0xFFFF_FA80_1234_0000);
        m.put_u16(buf + 0x410, 0xFFFF);
        m.put_u16(buf + 0x412, 0xFFFE);
        m.put(buf + 0x414, &[2]);
        let irps: IrpLog = read_log(&mut m, &l, buf, None, 64).unwrap();
        assert!(!irps.ordered);
        assert_eq!(irps.unreadable, 32);
        let i = irps.slot.iter().position(|&s| s == 8).unwrap();
        let e = irps.row(i);
        assert_eq!(
            (e.kernel_apc_disable, e.special_apc_disable, e.irql),
            (-1, -2, 2)
        );
        assert!(e.stack.is_empty() && irps.depth[i] == 0);
    }

    /// A log larger than one chunk, wrapped, read in bulk: the same records as slot-by-slot.
    #[test]
    fn bulk_read_spans_chunks_and_wraps() {
        let l = VerifierLayout::from_profile(&Profile::for_build(7601).unwrap().0).unwrap();
        let mut m = Sparse::default();
        let buf = 0xFFFF_FA80_0100_0000u64;
        let length = 0x8000u32; // 4 MiB of slots: four chunks
        m.touch(buf, u64::from(length) * 0x80);
        for s in 0..u64::from(length) {
            if s % 7 == 3 {
                continue; // empty slot
            }
            let e = buf + s * 0x80;
            m.put_u64(e, 0x1_0000 + s);
            m.put_u64(e + 8, s & 0xFF);
            m.put_u64(e + 0x18, 0xF000 + s);
            if s % 2 == 0 {
                m.put_u64(e + 0x20, 0xE000 + s);
            }
        }
        let index = length + 0x1234;
        let log: PoolLog = read_log(&mut m, &l, buf, Some(index), length).unwrap();
        let want: Vec<u32> = newest_first(index, length).filter(|s| s % 7 != 3).collect();
        assert_eq!(log.slot, want);
        for (i, &s) in log.slot.iter().enumerate() {
            let s = u64::from(s);
            assert_eq!(log.cols.va[i], 0x1_0000 + s);
            let stack: Vec<u64> = if s % 2 == 0 {
                vec![0xF000 + s, 0xE000 + s]
            } else {
                vec![0xF000 + s]
            };
            assert_eq!(log.stack(i), stack);
        }
        // Stacks differ between records: one id each.
        let mut ids = log.stack_id.clone();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), log.len());
        let mut only = log.clone();
        only.retain(|c, i| c.va[i] % 5 == 0);
        assert_eq!(only.stack_id, (0..only.len() as u32).collect::<Vec<_>>());
        assert_eq!(
            only.len(),
            log.cols.va.iter().filter(|&&v| v % 5 == 0).count()
        );
        for i in 0..only.len() {
            let j = log.slot.iter().position(|&s| s == only.slot[i]).unwrap();
            assert_eq!(only.row(i), log.row(j));
        }
    }
}
