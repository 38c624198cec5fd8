//! Kernel variables the pool analyses need, and where each came from: a symbol table, KDBG, a
//! profile heuristic (a fixed distance from a KDBG-named variable, as volatility2 uses), or, on
//! builds whose profile enables it, a bounded and validated search of nt's data near the
//! KDBG-named PoolTrackTable variable (each found figure names its rule in `sources`).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::layout::{BigHash, PoolLayout, SessionTable};
use super::tag;
use super::tracker;
use crate::bytes::parse_int;
use crate::error::{Error, Result};
use crate::kernel::{Kdbg, Symbols};
use crate::memory::Translator;

/// Name → how the figure was found; the report's `sources` section.
pub type Sources = BTreeMap<String, String>;

/// Where kernel variables are found: KDBG, an optional symbol table, the profile.
#[derive(Clone, Copy)]
pub struct Kernel<'a> {
    pub kdbg: &'a Kdbg,
    pub symbols: Option<&'a Symbols>,
    pub layout: &'a PoolLayout,
    /// The dump header's NumberProcessors: how many nt!ExPoolTagTables slots are read.
    pub processors: u32,
    /// PoolTrackTable's entry count once validated against the table (the searches for the
    /// per-processor and expansion tables use it rather than looking the variable up again).
    pub tracker_entries: Option<u64>,
}

/// PoolTrackTableSize: the validated count when known, else the variable's value.
pub(crate) fn tracker_entries(
    tr: &mut Translator,
    k: Kernel,
    sources: &mut Sources,
) -> Result<u64> {
    match k.tracker_entries {
        Some(n) => Ok(n),
        None => value_of(tr, "PoolTrackTableSize", k, sources),
    }
}

/// The address of variable `name`: from the symbol table when given, else KDBG's field, else
/// the profile's distance from another KDBG variable (recorded as heuristic in `sources`).
pub fn address_of(name: &str, k: Kernel, sources: &mut Sources) -> Result<u64> {
    let (kdbg, layout) = (k.kdbg, k.layout);
    if let (Some(s), Some(base)) = (k.symbols, kdbg.kern_base()) {
        if let Some(va) = s.address(name, base) {
            sources.insert(name.into(), s.source.clone());
            return Ok(va);
        }
    }
    if let Some(va) = kdbg.field(name).filter(|&v| v != 0) {
        sources.insert(name.into(), "KDBG".into());
        return Ok(va);
    }
    let g = layout.globals.get(name).ok_or_else(|| {
        Error::unsupported(format!(
            "{name}: not in KDBG and the profile gives no way to find it"
        ))
    })?;
    let base = kdbg
        .field(&g.relative_to)
        .filter(|&v| v != 0)
        .ok_or_else(|| Error::unsupported(format!("{name}: KDBG lacks {}", g.relative_to)))?;
    let delta = g.delta.trim();
    let (neg, mag) = match delta.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, delta),
    };
    let mag = parse_int(mag)
        .ok_or_else(|| Error::format(0, format!("profile global {name}: delta {delta:?}")))?;
    let va = if neg {
        base.wrapping_sub(mag)
    } else {
        base.wrapping_add(mag)
    };
    sources.insert(
        name.into(),
        format!(
            "heuristic: {} {delta} ({})",
            g.relative_to,
            g.heuristic.as_deref().unwrap_or("profile")
        ),
    );
    Ok(va)
}

/// The address of variable `name`: [`address_of`], else (on builds whose profile enables it)
/// the validated search of nt's data near the PoolTrackTable variable.
pub fn locate(tr: &mut Translator, name: &str, k: Kernel, sources: &mut Sources) -> Result<u64> {
    match address_of(name, k, sources) {
        Ok(va) => Ok(va),
        Err(e) => match search::locate(tr, name, k, sources) {
            Some(Ok(va)) => Ok(va),
            Some(Err(why)) => Err(Error::unsupported(format!("{e}; {why}"))),
            None => Err(e),
        },
    }
}

/// The value of variable `name` (read with the profile's width, default 8).
pub fn value_of(tr: &mut Translator, name: &str, k: Kernel, sources: &mut Sources) -> Result<u64> {
    let va = locate(tr, name, k, sources)?;
    let width = k.layout.globals.get(name).map_or(8, |g| g.width);
    match width {
        4 => tr.read_u32(va).map(u64::from),
        _ => tr.read_u64(va),
    }
    .map_err(|e| e.context(name))
}

/// The entry count of the big-page table at `p` from its own entry (ExpResizeBigPageTable
/// registers the table in itself with its size), found by probing from its hash slot.
pub(crate) fn big_table_self_size(tr: &mut Translator, k: Kernel, p: u64) -> Option<u64> {
    search::self_entry(tr, k, p)
}

/// MemProcFS's bound on PoolBigPageTableSize (as the big-pool reader's).
const BIG_MAX_ENTRIES: u64 = 0x100_0000;
/// The most nt data the big-page search reads beyond the window near PoolTrackTable.
const NT_DATA_MAX: u64 = 0x80_0000;
/// Slots probed from a candidate table's hash slot for its own entry.
const BIG_SELF_PROBES: usize = 64;

/// A canonical upper-half (kernel) address, 8-byte aligned: what a pointer to a table is.
pub(crate) fn kernel_pointer(v: u64) -> bool {
    v >> 47 == 0x1_FFFF && v & 7 == 0
}

/// The symbol-free search of the pool globals KDBG does not name. Each rule reads the nt data
/// within the profile's window of the PoolTrackTable variable, takes the candidates of the
/// variable's shape and keeps those whose table validates; the rule is named in `sources`.
mod search {
    use super::*;

    /// The 8-byte words of nt data within `radius` bytes of `center` (None: page not readable).
    struct Window {
        start: u64,
        center: u64,
        words: Vec<Option<u64>>,
    }

    impl Window {
        fn read(tr: &mut Translator, center: u64, radius: u64) -> Self {
            let start = center.saturating_sub(radius) & !0xFFF;
            let end = center.saturating_add(radius).saturating_add(0xFFF) & !0xFFF;
            let mut words = Vec::with_capacity(((end - start) / 8) as usize);
            let mut page = start;
            while page < end {
                match tr.read_vec(page, 0x1000) {
                    Ok(b) => words.extend(
                        b.chunks_exact(8)
                            .map(|c| Some(u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))),
                    ),
                    Err(_) => words.extend(std::iter::repeat_n(None, 0x200)),
                }
                page += 0x1000;
            }
            Self {
                start,
                center,
                words,
            }
        }

        fn addr(&self, i: usize) -> u64 {
            self.start + 8 * i as u64
        }

        fn get(&self, i: usize) -> Option<u64> {
            self.words.get(i).copied().flatten()
        }

        fn distance(&self, i: usize) -> u64 {
            self.addr(i).abs_diff(self.center)
        }

        /// Index of the word at `addr` (8-aligned, inside the window).
        fn index(&self, addr: u64) -> Option<usize> {
            let off = addr.checked_sub(self.start)?;
            (off % 8 == 0 && off / 8 < self.words.len() as u64).then_some((off / 8) as usize)
        }
    }

    /// The context every rule needs: the PoolTrackTable variable (the window's centre), the
    /// global table it points to, and the window.
    struct Ctx {
        var: u64,
        table: u64,
        window: Window,
    }

    fn ctx(tr: &mut Translator, k: Kernel, radius: u64) -> std::result::Result<Ctx, String> {
        let var = address_of("PoolTrackTable", k, &mut Sources::new())
            .map_err(|e| format!("no PoolTrackTable variable to search near: {e}"))?;
        let table = tr
            .read_u64(var)
            .map_err(|e| format!("PoolTrackTable variable not readable: {e}"))?;
        let window = Window::read(tr, var, radius);
        Ok(Ctx { var, table, window })
    }

    /// The session variables the profile's `pool.session` section names, and the rule and
    /// window that find them (None: `name` is not one of them).
    fn session_rule(name: &str, k: Kernel) -> Option<(Rule, u64)> {
        let s = k.layout.session.as_ref()?;
        let mine = name == s.size_variable
            || match &s.table {
                SessionTable::Variable(v) => name == v,
                SessionTable::SessionSpace(_) => name == s.session_space_variable,
            };
        let rule: Rule = match s.table {
            SessionTable::Variable(_) => session_variables,
            SessionTable::SessionSpace(_) => session_space,
        };
        (mine && s.search_window > 0).then_some((rule, s.search_window))
    }

    type Rule = fn(&mut Translator, &str, Kernel, &Ctx) -> std::result::Result<Found, String>;

    pub(super) fn locate(
        tr: &mut Translator,
        name: &str,
        k: Kernel,
        sources: &mut Sources,
    ) -> Option<std::result::Result<u64, String>> {
        let (rule, w): (Rule, u64) = match session_rule(name, k) {
            Some(r) => r,
            None => {
                if k.layout.globals_search_window == 0 {
                    return None;
                }
                let rule: Rule = match name {
                    "PoolTrackTableSize" => tracker_size,
                    "ExPoolTagTables" => tag_tables,
                    "PoolTrackTableExpansion" | "PoolTrackTableExpansionSize" => expansion,
                    "PoolBigPageTable" | "PoolBigPageTableSize" => big_pages,
                    _ => return None,
                };
                (rule, k.layout.globals_search_window)
            }
        };
        let found = ctx(tr, k, w).and_then(|c| rule(tr, name, k, &c).map(|f| (f, c)));
        Some(found.map(|(f, c)| {
            let rel = f.addr as i128 - c.var as i128;
            let sign = if rel < 0 { "-" } else { "+" };
            sources.insert(
                name.into(),
                format!(
                    "heuristic: {}, found at PoolTrackTable {sign}0x{:x}: {} ({} candidate{})",
                    f.scope.unwrap_or_else(|| format!(
                        "nt data within 0x{w:x} bytes of PoolTrackTable"
                    )),
                    rel.unsigned_abs(),
                    f.rule,
                    f.candidates,
                    if f.candidates == 1 { "" } else { "s" }
                ),
            );
            f.addr
        }))
    }

    /// The writable sections of nt's image (IMAGE_SCN_MEM_WRITE), each as a window of words
    /// (at most `NT_DATA_MAX` bytes in all): where the kernel's global variables live.
    fn nt_writable(tr: &mut Translator, k: Kernel) -> Vec<Window> {
        let Some(base) = k.kdbg.kern_base() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let Ok(lfanew) = tr.read_u32(base + 0x3C).map(u64::from) else {
            return out;
        };
        if lfanew >= 0x1000 {
            return out;
        }
        let (Ok(count), Ok(opt)) = (
            tr.read_vec(base + lfanew + 6, 2),
            tr.read_vec(base + lfanew + 0x14, 2),
        ) else {
            return out;
        };
        let count = u16::from_le_bytes([count[0], count[1]]).min(96) as u64;
        let table = base + lfanew + 0x18 + u64::from(u16::from_le_bytes([opt[0], opt[1]]));
        let mut budget = NT_DATA_MAX;
        for i in 0..count {
            let Ok(h) = tr.read_vec(table + 40 * i, 40) else {
                break;
            };
            let word = |at: usize| u32::from_le_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
            let (size, rva, flags) = (u64::from(word(8)), u64::from(word(12)), word(36));
            if flags & 0x8000_0000 == 0 || size == 0 {
                continue;
            }
            let size = size.min(budget);
            budget -= size;
            let start = base + rva;
            out.push(Window::read(tr, start + size / 2, size.div_ceil(2)));
        }
        out
    }

    struct Found {
        addr: u64,
        rule: String,
        /// How many candidates validated (the chosen one included).
        candidates: usize,
        /// Where it was found when not in the window near PoolTrackTable.
        scope: Option<String>,
    }

    /// The Key of each of `n` tracker entries at `table` (None: not readable).
    fn tracker_keys(tr: &mut Translator, k: Kernel, table: u64, n: u64) -> Option<Vec<u32>> {
        let e = &k.layout.tracker;
        let key = e.field("Key").ok()?;
        let bytes = tr.read_vec(table, (n as usize).checked_mul(e.size)?).ok()?;
        Some(
            bytes
                .chunks_exact(e.size)
                .map(|r| key.read(r) as u32)
                .collect(),
        )
    }

    /// The keys of the entries of a candidate table that fit its first page (a cheap first
    /// look before a candidate is read whole: most pointers in nt data lead elsewhere).
    fn first_keys(tr: &mut Translator, k: Kernel, table: u64, n: u64) -> Option<Vec<u32>> {
        let per_page = (0x1000 / k.layout.tracker.size.max(1)).max(1) as u64;
        tracker_keys(tr, k, table, n.min(per_page))
    }

    /// PoolTrackTableSize: a word of the form 2^k+1 (at least 17, at most the reader's bound)
    /// such that the PoolTrackTable read with that many entries keeps every non-empty key at or
    /// after its hash slot with no empty slot between (linear probing, keys never removed).
    /// A smaller 2^k+1 can validate too (a prefix of the table), so the largest wins.
    fn tracker_size(
        tr: &mut Translator,
        _: &str,
        k: Kernel,
        c: &Ctx,
    ) -> std::result::Result<Found, String> {
        let values: BTreeSet<u64> = c
            .window
            .words
            .iter()
            .flatten()
            .copied()
            .filter(|&v| (17..=tracker::MAX_ENTRIES + 1).contains(&v) && (v - 1).is_power_of_two())
            .collect();
        let mut valid = Vec::new();
        for &v in values.iter().rev() {
            if !tracker::prefix_plausible(tr, k.layout, c.table, v) {
                continue;
            }
            if tracker_keys(tr, k, c.table, v).is_some_and(|keys| tracker::hashed_keys_valid(&keys))
            {
                valid.push(v);
            }
        }
        let &size = valid.first().ok_or_else(|| {
            format!(
                "no 2^k+1 value near PoolTrackTable sizes its table ({} candidates tried)",
                values.len()
            )
        })?;
        let at = (0..c.window.words.len())
            .filter(|&i| c.window.get(i) == Some(size))
            .min_by_key(|&i| c.window.distance(i))
            .ok_or("no candidate")?;
        Ok(Found {
            addr: c.window.addr(at),
            rule: format!(
                "the largest 2^k+1 value (0x{size:x}) for which PoolTrackTable keeps every key at or after its hash slot"
            ),
            candidates: valid.len(),
            scope: None,
        })
    }

    /// ExPoolTagTables: an array of NumberProcessors kernel pointers, each to PoolTrackTable or
    /// to a table (of PoolTrackTableSize entries) with at least one key, every key equal to
    /// PoolTrackTable's key in the same slot (the kernel copies keys from the global table;
    /// PoolTrackTable itself must validate with the hash). The PoolTrackTable
    /// variable itself is no candidate; an array followed by a null slot (the rest of the
    /// kernel's array) is preferred, then the nearest.
    fn tag_tables(
        tr: &mut Translator,
        _: &str,
        k: Kernel,
        c: &Ctx,
    ) -> std::result::Result<Found, String> {
        let n = k.processors as usize;
        if n == 0 || n > tracker::MAX_PROCESSORS {
            return Err(format!("NumberProcessors {n} is not plausible"));
        }
        let mut scratch = Sources::new();
        let size = tracker_entries(tr, k, &mut scratch)
            .map_err(|e| format!("ExPoolTagTables cannot be validated without the size: {e}"))?;
        let global = tracker_keys(tr, k, c.table, size)
            .ok_or("PoolTrackTable is not readable with PoolTrackTableSize entries")?;
        // Per-CPU tables hold a subset of the global keys, each in the global key's slot (the
        // kernel copies a key from PoolTrackTable into the CPU's table on first use), so they
        // may have holes on a probe path: the hash is checked on PoolTrackTable alone.
        if !tracker::hashed_keys_valid(&global) {
            return Err("PoolTrackTable does not validate with PoolTrackTableSize".into());
        }
        let mut checked: HashMap<u64, bool> = HashMap::new();
        let mut ok = |tr: &mut Translator, p: u64| -> bool {
            *checked.entry(p).or_insert_with(|| {
                let same_slots =
                    |keys: &[u32]| keys.iter().zip(&global).all(|(&a, &g)| a == 0 || a == g);
                if p == c.table {
                    return true;
                }
                first_keys(tr, k, p, size).is_some_and(|keys| same_slots(&keys))
                    && tracker_keys(tr, k, p, size).is_some_and(|keys| {
                        let slots = &keys[..keys.len() - 1];
                        slots.iter().any(|&a| a != 0) && same_slots(slots)
                    })
            })
        };
        let words = &c.window.words;
        let skip = c.window.index(c.var);
        let mut valid: Vec<usize> = Vec::new();
        for i in 0..words.len().saturating_sub(n - 1) {
            if Some(i) == skip {
                continue;
            }
            let ptrs: Option<Vec<u64>> = (i..i + n)
                .map(|j| c.window.get(j).filter(|&p| kernel_pointer(p)))
                .collect();
            let Some(ptrs) = ptrs else { continue };
            if ptrs.iter().all(|&p| ok(tr, p)) {
                valid.push(i);
            }
        }
        let best = valid
            .iter()
            .copied()
            .min_by_key(|&i| (c.window.get(i + n) != Some(0), c.window.distance(i)))
            .ok_or_else(|| {
                format!("no array of {n} pointers to tables that validate against PoolTrackTable")
            })?;
        Ok(Found {
            addr: c.window.addr(best),
            rule: format!(
                "an array of NumberProcessors ({n}) kernel pointers to tables whose every key equals PoolTrackTable's key in the same slot"
            ),
            candidates: valid.len(),
            scope: None,
        })
    }

    /// (pointer, size) pairs: a kernel pointer and, 8 or 16 bytes before or after it, a size
    /// that `size_ok` accepts. Yields (pointer index, size index).
    fn pairs(
        w: &Window,
        ptr_ok: impl Fn(u64) -> bool,
        size_ok: impl Fn(u64) -> bool,
    ) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for i in 0..w.words.len() {
            if !w.get(i).is_some_and(|p| kernel_pointer(p) && ptr_ok(p)) {
                continue;
            }
            for d in [-2isize, -1, 1, 2] {
                let Some(j) = i.checked_add_signed(d) else {
                    continue;
                };
                if w.get(j).is_some_and(&size_ok) {
                    out.push((i, j));
                }
            }
        }
        out
    }

    /// Choose among validated pairs: the nearest to the PoolTrackTable variable.
    fn choose(
        name: &str,
        w: &Window,
        valid: &[(usize, usize)],
        rule: String,
        what: &str,
    ) -> std::result::Result<Found, String> {
        let &(p, s) = valid
            .iter()
            .min_by_key(|(p, s)| (w.distance(*p).min(w.distance(*s)), *p))
            .ok_or_else(|| format!("no {what} found"))?;
        let pointer = !name.ends_with("Size");
        Ok(Found {
            addr: w.addr(if pointer { p } else { s }),
            rule,
            candidates: valid.len(),
            scope: None,
        })
    }

    /// PoolTrackTableExpansion(Size): a kernel pointer next to an entry count (1..=0x10000) whose
    /// table (the tracker entry layout, unsure) holds distinct plausible tags in its first
    /// entries, zeros after them (the kernel appends), and none of PoolTrackTable's keys (a tag
    /// goes there only when the hashed tables have no slot for it).
    fn expansion(
        tr: &mut Translator,
        name: &str,
        k: Kernel,
        c: &Ctx,
    ) -> std::result::Result<Found, String> {
        let mut scratch = Sources::new();
        let size = tracker_entries(tr, k, &mut scratch)
            .map_err(|e| format!("the expansion table is validated against PoolTrackTable: {e}"))?;
        let global: BTreeSet<u32> = tracker_keys(tr, k, c.table, size)
            .ok_or("PoolTrackTable is not readable with PoolTrackTableSize entries")?
            .into_iter()
            .filter(|&k| k != 0)
            .collect();
        let table = c.table;
        let cands = pairs(
            &c.window,
            |p| p != table,
            |n| (1..=tracker::MAX_EXPANSION).contains(&n),
        );
        let mut valid = Vec::new();
        for (i, j) in cands {
            let (Some(p), Some(n)) = (c.window.get(i), c.window.get(j)) else {
                continue;
            };
            let Some(head) = first_keys(tr, k, p, n) else {
                continue;
            };
            let used = head.iter().take_while(|&&k| k != 0).count();
            let plausible_head = used > 0
                && head[used..].iter().all(|&k| k == 0)
                && head[..used]
                    .iter()
                    .all(|t| tag::plausible(*t) && !global.contains(t));
            if !plausible_head {
                continue;
            }
            let Some(keys) = tracker_keys(tr, k, p, n) else {
                continue;
            };
            let used = keys.iter().take_while(|&&k| k != 0).count();
            let distinct: BTreeSet<u32> = keys[..used].iter().copied().collect();
            if used > 0
                && keys[used..].iter().all(|&k| k == 0)
                && distinct.len() == used
                && keys[..used].iter().all(|&t| tag::plausible(t))
                && distinct.is_disjoint(&global)
            {
                valid.push((i, j));
            }
        }
        choose(
            name,
            &c.window,
            &valid,
            "a kernel pointer beside an entry count whose table holds distinct plausible tags (none in PoolTrackTable) followed by empty entries".into(),
            "expansion table (none assumed)",
        )
    }

    /// The big-page entries (Va, Key) of an `n`-entry table at `p` (None: not readable).
    fn big_rows(tr: &mut Translator, k: Kernel, p: u64, n: u64) -> Option<Vec<(u64, u32)>> {
        let e = &k.layout.big_page;
        let (va_f, key_f) = (e.field("Va").ok()?, e.field("Key").ok()?);
        let raw = tr.read_vec(p, (n as usize).checked_mul(e.size)?).ok()?;
        Some(
            raw.chunks_exact(e.size)
                .map(|r| (va_f.read(r), key_f.read(r) as u32))
                .collect(),
        )
    }

    /// The entry count of a big-page table at `p` that holds its own entry, as
    /// ExpResizeBigPageTable writes it (Va = the table, NumberOfBytes = its size in bytes): the
    /// power of two n for which probing from `p`'s hash slot over used entries reaches it.
    pub(super) fn self_entry(tr: &mut Translator, k: Kernel, p: u64) -> Option<u64> {
        let e = &k.layout.big_page;
        let (va_f, bytes_f) = (e.field("Va").ok()?, e.field("NumberOfBytes").ok()?);
        let key_f = e.field("Key").ok()?;
        let mut n = 0x10u64;
        while n <= BIG_MAX_ENTRIES {
            let mut slot = k.layout.big_hash.slot(p, n as usize - 1) as u64;
            for _ in 0..BIG_SELF_PROBES {
                let Ok(row) = tr.read_vec(p + slot * e.size as u64, e.size) else {
                    break;
                };
                if va_f.read(&row) == p && bytes_f.read(&row) == n * e.size as u64 {
                    return Some(n);
                }
                if key_f.read(&row) == 0 {
                    break; // never used: probing would have stopped here
                }
                slot = (slot + 1) % n;
            }
            n *= 2;
        }
        None
    }

    /// Whether the first page of entries at `p` could be big-page entries: each never used
    /// (key 0) or a kernel Va, page-aligned but for the free bit (a cheap first look: most
    /// pointers in nt data lead elsewhere).
    fn big_head(tr: &mut Translator, k: Kernel, p: u64, n: u64) -> bool {
        let per_page = (0x1000 / k.layout.big_page.size.max(1)) as u64;
        big_rows(tr, k, p, n.min(per_page)).is_some_and(|head| {
            head.iter()
                .all(|&(va, key)| key == 0 || (kernel_pointer(va & !1) && va & 0xFFE == 0))
        })
    }

    /// Tables in `w` that hold their own entry and validate: (pointer index, size index). When
    /// no word equals the table's entry count (the size variable lost or corrupt) the pointer
    /// still counts unless `need_size` (its size index is then its own).
    fn self_registered(
        tr: &mut Translator,
        k: Kernel,
        w: &Window,
        need_size: bool,
    ) -> Vec<(usize, usize)> {
        let mut valid = Vec::new();
        for i in 0..w.words.len() {
            let Some(p) = w.get(i).filter(|&p| kernel_pointer(p) && p & 0xFFF == 0) else {
                continue;
            };
            if !big_head(tr, k, p, BIG_MAX_ENTRIES) {
                continue;
            }
            let Some(n) = self_entry(tr, k, p) else {
                continue;
            };
            if !big_rows(tr, k, p, n).is_some_and(|rows| big_pages_valid(&rows, k.layout.big_hash))
            {
                continue;
            }
            let size_at = (0..w.words.len())
                .filter(|&j| w.get(j) == Some(n))
                .min_by_key(|&j| w.addr(j).abs_diff(w.addr(i)));
            match size_at {
                Some(j) => valid.push((i, j)),
                None if !need_size => valid.push((i, i)),
                None => {}
            }
        }
        valid
    }

    /// PoolBigPageTable(Size). The table registers itself (ExpResizeBigPageTable: an entry with
    /// Va = the table and NumberOfBytes = its size), so the table is a page-aligned kernel
    /// pointer in nt data whose own entry is found from its hash slot and whose live entries
    /// all validate with the profile's hash ([`big_pages_valid`]); the size variable is the word
    /// equal to its entry count nearest to the pointer. Searched near PoolTrackTable first, then
    /// in every writable section of nt (the kernel's order of its globals is not known). A
    /// table without its own entry (builds whose code no source shows) falls back to a pointer
    /// beside a count near PoolTrackTable.
    fn big_pages(
        tr: &mut Translator,
        name: &str,
        k: Kernel,
        c: &Ctx,
    ) -> std::result::Result<Found, String> {
        const RULE: &str = "a page-aligned kernel pointer to a table holding its own entry (tag and size, as ExpResizeBigPageTable writes it) whose live entries sit at or after their hash slot; the size is the nearest word equal to its entry count";
        let hash = k.layout.big_hash;
        let need_size = name.ends_with("Size");
        let valid = self_registered(tr, k, &c.window, need_size);
        if !valid.is_empty() {
            return choose(name, &c.window, &valid, RULE.into(), "big-page table");
        }
        for w in nt_writable(tr, k) {
            let valid = self_registered(tr, k, &w, need_size);
            if !valid.is_empty() {
                let mut f = choose(name, &w, &valid, RULE.into(), "big-page table")?;
                f.scope = Some("a writable section of nt".into());
                return Ok(f);
            }
        }
        let mut valid = Vec::new();
        let cands = pairs(
            &c.window,
            |p| p & 0xFFF == 0,
            |n| (0x10..=BIG_MAX_ENTRIES).contains(&n) && n.is_power_of_two(),
        );
        for (i, j) in cands {
            let (Some(p), Some(n)) = (c.window.get(i), c.window.get(j)) else {
                continue;
            };
            if big_head(tr, k, p, n)
                && big_rows(tr, k, p, n).is_some_and(|rows| big_pages_valid(&rows, hash))
            {
                valid.push((i, j));
            }
        }
        choose(
            name,
            &c.window,
            &valid,
            "a page-aligned kernel pointer beside a power-of-two entry count whose live big-page entries sit at or after their hash slot".into(),
            "big-page table",
        )
    }

    /// The largest session-table entry count a search tries (the kernel's are 0x80 or 0x100).
    const SESSION_MAX_SEARCH: u64 = 0x1000;
    /// Candidate session tables a search reads whole at most (arbitrary data can hold many
    /// pointer/count look-alikes; a kernel's nt data holds a handful).
    const SESSION_MAX_CANDIDATES: usize = 256;

    /// Whether `n` tracker entries at `p` are a session table: plausible distinct tags where the
    /// kernel's probing puts them ([`tracker::session_keys_valid`]).
    fn session_table_valid(tr: &mut Translator, k: Kernel, p: u64, n: u64) -> bool {
        let Some(head) = first_keys(tr, k, p, n) else {
            return false;
        };
        if !head.iter().all(|&x| x == 0 || tag::plausible(x)) {
            return false;
        }
        let Some(keys) = tracker_keys(tr, k, p, n) else {
            return false;
        };
        let used: Vec<u32> = keys.iter().copied().filter(|&x| x != 0).collect();
        let distinct: BTreeSet<u32> = used.iter().copied().collect();
        distinct.len() == used.len()
            && used.iter().all(|&x| tag::plausible(x))
            && tracker::session_keys_valid(&keys)
    }

    /// ExpSessionPoolTrackTable(Size): a kernel pointer (not PoolTrackTable) beside a
    /// power-of-two entry count (0x10..=0x4000) whose table is a session table (see
    /// [`session_table_valid`]); the nearest to the PoolTrackTable variable wins.
    fn session_variables(
        tr: &mut Translator,
        name: &str,
        k: Kernel,
        c: &Ctx,
    ) -> std::result::Result<Found, String> {
        let table = c.table;
        let cands = pairs(
            &c.window,
            |p| p != table,
            |n| (0x10..=SESSION_MAX_SEARCH).contains(&n) && n.is_power_of_two(),
        );
        let mut checked: HashMap<(u64, u64), bool> = HashMap::new();
        let mut valid = Vec::new();
        for (i, j) in cands {
            let (Some(p), Some(n)) = (c.window.get(i), c.window.get(j)) else {
                continue;
            };
            if !checked.contains_key(&(p, n)) && checked.len() >= SESSION_MAX_CANDIDATES {
                return Err(format!(
                    "more than {SESSION_MAX_CANDIDATES} pointer/count candidates near PoolTrackTable: not nt data"
                ));
            }
            if *checked
                .entry((p, n))
                .or_insert_with(|| session_table_valid(tr, k, p, n))
            {
                valid.push((i, j));
            }
        }
        choose(
            name,
            &c.window,
            &valid,
            "a kernel pointer beside a power-of-two entry count whose table keeps distinct plausible tags where the session table's probing puts them (mask = count - 1, the last entry passed by)".into(),
            "session tracker table",
        )
    }

    /// MmSessionSpace and ExpSessionPoolTrackTableSize when the session table is the PoolTags
    /// pointer of _MM_SESSION_SPACE: a power-of-two count (0x10..=0x4000) with its mask (count - 1)
    /// within two words, and a kernel pointer to a session space whose PoolTags pointer leads to
    /// a session table of that many entries (see [`session_table_valid`]); the nearest wins.
    fn session_space(
        tr: &mut Translator,
        name: &str,
        k: Kernel,
        c: &Ctx,
    ) -> std::result::Result<Found, String> {
        let off = match k.layout.session.as_ref().map(|s| &s.table) {
            Some(SessionTable::SessionSpace(off)) => *off as u64,
            _ => return Err("the profile keeps no session table in _MM_SESSION_SPACE".into()),
        };
        let w = &c.window;
        let sizes: Vec<usize> = (0..w.words.len())
            .filter(|&i| {
                w.get(i).is_some_and(|v| {
                    (0x10..=SESSION_MAX_SEARCH).contains(&v)
                        && v.is_power_of_two()
                        && [-2isize, -1, 1, 2]
                            .iter()
                            .any(|&d| i.checked_add_signed(d).and_then(|j| w.get(j)) == Some(v - 1))
                })
            })
            .collect();
        if sizes.is_empty() {
            return Err("no power-of-two value beside its mask near PoolTrackTable".into());
        }
        let mut tags_of: HashMap<u64, Option<u64>> = HashMap::new();
        let mut checked: HashMap<(u64, u64), bool> = HashMap::new();
        let mut valid = Vec::new();
        for i in 0..w.words.len() {
            let Some(q) = w.get(i).filter(|&q| kernel_pointer(q) && q != c.table) else {
                continue;
            };
            let t = *tags_of.entry(q).or_insert_with(|| {
                tr.read_u64(q.wrapping_add(off))
                    .ok()
                    .filter(|&t| kernel_pointer(t))
            });
            let Some(t) = t else { continue };
            for &j in &sizes {
                let Some(n) = w.get(j) else { continue };
                if !checked.contains_key(&(t, n)) && checked.len() >= SESSION_MAX_CANDIDATES {
                    return Err(format!(
                        "more than {SESSION_MAX_CANDIDATES} session space/count candidates near PoolTrackTable: not nt data"
                    ));
                }
                if *checked
                    .entry((t, n))
                    .or_insert_with(|| session_table_valid(tr, k, t, n))
                {
                    valid.push((i, j));
                }
            }
        }
        choose(
            name,
            w,
            &valid,
            format!("a kernel pointer to a session space whose PoolTags (+0x{off:x}) leads to a session table of a power-of-two count kept beside its mask"),
            "session space with a session tracker table",
        )
    }

    /// Big-page entries (Va, Key) that validate with `hash`: at least one live entry (Va bit 0
    /// clear, non-zero key), each a page-aligned kernel Va reached from its hash slot over
    /// entries that were all used once (non-zero key: ExpAddTagForBigPages probes forward to the
    /// first free slot, and a freed entry keeps its key).
    pub(super) fn big_pages_valid(rows: &[(u64, u32)], hash: BigHash) -> bool {
        let n = rows.len();
        if n < 2 || !n.is_power_of_two() {
            return false;
        }
        let mask = n - 1;
        let Some(run) = tracker::probe_runs(n, |i| rows[i].1 != 0) else {
            return false;
        };
        let mut live = 0;
        for (s, &(va, key)) in rows.iter().enumerate() {
            if key == 0 || va & 1 != 0 {
                continue;
            }
            if !kernel_pointer(va) || va & 0xFFF != 0 {
                return false;
            }
            let h = hash.slot(va, mask);
            if (s.wrapping_sub(h) & mask) >= run[s] {
                return false;
            }
            live += 1;
        }
        live > 0
    }
}

#[cfg(test)]
mod tests {
    use super::search::big_pages_valid;
    use super::BigHash;

    /// A 16-entry table with three live entries inserted by probing from their slots.
    fn table(hash: BigHash, vas: &[u64]) -> Vec<(u64, u32)> {
        let mut rows = vec![(1u64, 0u32); 16];
        for &va in vas {
            let mut s = hash.slot(va, 15);
            while rows[s].1 != 0 {
                s = (s + 1) & 15;
            }
            rows[s] = (va, u32::from_le_bytes(*b"Pool"));
        }
        rows
    }

    const VAS: [u64; 3] = [
        0xFFFF_FA80_0123_4000u64,
        0xFFFF_FA80_0223_5000,
        0xFFFF_FA80_0323_4000,
    ];

    #[test]
    fn the_kernel_hash_is_expaddtagforbigpages() {
        // h = 40543 * (u32)(Va >> 12); slot = ((u32)h ^ (u32)(h >> 32)) & mask
        let va = 0xFFFF_C001_2345_6000u64;
        let p = u64::from((va >> 12) as u32);
        let h = 40543 * p;
        let want = ((h as u32) ^ ((h >> 32) as u32)) as usize & 0x1FF;
        assert_eq!(BigHash::Kernel40543.slot(va, 0x1FF), want);
        // the table wraps: a run from the last slot continues at slot 0
        let mut rows = vec![(1u64, 0u32); 16];
        let last = (0u64..)
            .map(|i| 0xFFFF_C001_0000_0000 + (i << 12))
            .filter(|&va| BigHash::Kernel40543.slot(va, 15) == 15)
            .take(2)
            .collect::<Vec<_>>();
        rows[15] = (last[0], 1);
        rows[0] = (last[1], 2);
        assert!(big_pages_valid(&rows, BigHash::Kernel40543));
        rows[15] = (1, 0); // the run is broken: slot 0's entry is not reachable
        assert!(!big_pages_valid(&rows, BigHash::Kernel40543));
    }

    #[test]
    fn big_pages_validate_with_their_hash() {
        for hash in [BigHash::ReactOs, BigHash::Kernel40543] {
            let rows = table(hash, &VAS);
            assert!(big_pages_valid(&rows, hash));
            // a live entry away from its hash slot, with an unused entry between, does not validate
            let mut moved = rows.clone();
            let s = hash.slot(VAS[0], 15);
            moved[(s + 2) & 15] = moved[s];
            moved[s] = (1, 0);
            moved[(s + 1) & 15] = (1, 0);
            assert!(!big_pages_valid(&moved, hash));
            // freed entries (Va | 1) may sit anywhere; no live entry at all is no table
            let freed: Vec<(u64, u32)> = rows
                .iter()
                .map(|&(va, k)| if k != 0 { (va | 1, k) } else { (va, k) })
                .collect();
            assert!(!big_pages_valid(&freed, hash));
            assert!(!big_pages_valid(&rows[..15], hash));
        }
    }
}
