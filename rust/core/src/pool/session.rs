//! The session pool's tagging database: what `!poolused 8` shows.
//!
//! Session pool (pool type bit 0x20) is counted apart from the global tables: the kernel keys
//! its allocations into the session table (nt!ExpSessionPoolTrackTable with
//! nt!ExpSessionPoolTrackTableSize entries; on Windows 11 22000 the `PoolTags` pointer of
//! _MM_SESSION_SPACE) and, when that is full, into the session's own expansion table
//! (_MM_SESSION_SPACE.PoolTrackTableExpansion). The figures are the sum over both, as the
//! kernel's ExGetSessionPoolTagInfo reports them (profile `pool.session` gives the sources).
//!
//! The table is in session space, which a dump maps for the session of the address space its
//! header names (the process current at the crash): a dump whose current process has no
//! session has no session table to read.

use super::globals::{self, kernel_pointer, Kernel, Sources};
use super::layout::{SessionLayout, SessionTable};
use super::tag;
use super::tracker::{self, TableKind, TrackerTable};
use crate::error::{Error, Result};
use crate::memory::Translator;

/// A session table larger than this is not one (the kernel's hold 0x80 or 0x100 entries).
pub(crate) const MAX_ENTRIES: u64 = 0x1_0000;

/// Why a session-space read can fail, said once.
const SESSION_SPACE: &str = "session space is mapped only in the address space of a process of a session (the dump's current process may have none)";

/// The session pool's tagging database (rows of the session table, then of the session's
/// expansion table), as a [`TrackerTable`] whose `poolused` gives the `!poolused 8` rows.
pub fn read(tr: &mut Translator, k: Kernel, sources: &mut Sources) -> Result<TrackerTable> {
    let s = k.layout.session.as_ref().ok_or_else(|| {
        Error::unsupported(
            "the build profile does not describe the session pool's tagging database (no pool.session section)",
        )
    })?;
    let size = globals::value_of(tr, &s.size_variable, k, sources).map_err(|e| {
        Error::unsupported(format!(
            "the session pool tracker's size (nt!{}) was not found: {e}",
            s.size_variable
        ))
    })?;
    let (table, table_name, space) = match &s.table {
        SessionTable::Variable(name) => {
            let t = globals::value_of(tr, name, k, sources).map_err(|e| {
                Error::unsupported(format!(
                    "the session pool tracker table (nt!{name}) was not found: {e}"
                ))
            })?;
            (t, name.clone(), None)
        }
        SessionTable::SessionSpace(off) => {
            let ss = globals::value_of(tr, &s.session_space_variable, k, sources).map_err(|e| {
                Error::unsupported(format!(
                    "the session space (nt!{}), whose PoolTags field holds the session pool tracker table, was not found: {e}",
                    s.session_space_variable
                ))
            })?;
            let t = tr.read_u64(ss.wrapping_add(*off as u64)).map_err(|e| {
                e.context(&format!(
                    "_MM_SESSION_SPACE.PoolTags of 0x{ss:x} ({SESSION_SPACE})"
                ))
            })?;
            let name = "_MM_SESSION_SPACE.PoolTags".to_string();
            sources.insert(
                name.clone(),
                format!("the pointer at +0x{off:x} of the session space 0x{ss:x}"),
            );
            (t, name, Some(ss))
        }
    };
    if !size.is_power_of_two() || !(4..=MAX_ENTRIES).contains(&size) || !kernel_pointer(table) {
        return Err(Error::not_present(
            table,
            format!("{table_name} 0x{table:x} with {size} entries is not a plausible session tracker table (a power-of-two entry count up to {MAX_ENTRIES} at a kernel address)"),
        ));
    }
    let rows = tracker::read_rows(tr, k.layout, table, size, &table_name)
        .map_err(|e| e.context(SESSION_SPACE))?;
    let mut t = TrackerTable {
        va: table,
        entries: size,
        ..TrackerTable::default()
    };
    t.add(TableKind::Session, table, size, Vec::new(), rows);
    read_expansion(tr, k, s, table, space, &mut t, sources);
    sources.insert("session_tag_tables".into(), t.describe());
    Ok(t)
}

/// The current session's _MM_SESSION_SPACE: the profile's variable when a symbol table or the
/// profile places it, else the session table's address minus the profile's `table_offset`
/// (inferred), or None (the reason in `sources`).
fn session_space(
    tr: &mut Translator,
    k: Kernel,
    s: &SessionLayout,
    table: u64,
    sources: &mut Sources,
) -> Option<(u64, bool)> {
    let name = &s.session_space_variable;
    let mut found = Sources::new();
    if let Ok(va) = globals::address_of(name, k, &mut found) {
        match tr.read_u64(va) {
            Ok(ss) if kernel_pointer(ss) => {
                sources.extend(found);
                return Some((ss, true));
            }
            Ok(ss) => {
                sources.insert(
                    name.clone(),
                    format!("0x{ss:x} (at 0x{va:x}) is not a session space address"),
                );
            }
            Err(e) => {
                sources.insert(name.clone(), format!("not readable: {e}"));
            }
        }
    }
    let off = s.table_offset?;
    let ss = table.wrapping_sub(off);
    sources.insert(
        name.clone(),
        format!("inferred: the session table 0x{table:x} - 0x{off:x} (profile pool.session.table_offset)"),
    );
    Some((ss, false))
}

/// The session's expansion table (_MM_SESSION_SPACE.PoolTrackTableExpansion), added to `t`
/// when there is one; what was done is said in `sources`. A session space that only the
/// table's offset places is trusted only when its expansion table validates: distinct plausible
/// tags from the first entry on (the kernel appends), empty entries after them.
fn read_expansion(
    tr: &mut Translator,
    k: Kernel,
    s: &SessionLayout,
    table: u64,
    space: Option<u64>,
    t: &mut TrackerTable,
    sources: &mut Sources,
) {
    const KEY: &str = "session PoolTrackTableExpansion";
    let Some((pe, pn)) = s.expansion else {
        sources.insert(
            KEY.into(),
            "none: the profile gives no _MM_SESSION_SPACE.PoolTrackTableExpansion for this build"
                .into(),
        );
        return;
    };
    let (ss, trusted) = match space {
        Some(ss) => (ss, true),
        None => match session_space(tr, k, s, table, sources) {
            Some(x) => x,
            None => {
                sources.insert(
                    KEY.into(),
                    format!(
                        "not read: nt!{} was not found and the profile gives no table offset to infer the session space from",
                        s.session_space_variable
                    ),
                );
                return;
            }
        },
    };
    let read = |tr: &mut Translator, off: usize| tr.read_u64(ss.wrapping_add(off as u64));
    let (p, n) = match (read(tr, pe), read(tr, pn)) {
        (Ok(p), Ok(n)) => (p, n),
        (Err(e), _) | (_, Err(e)) => {
            sources.insert(
                KEY.into(),
                format!("not read: the session space 0x{ss:x} is not readable: {e}"),
            );
            return;
        }
    };
    if p == 0 || n == 0 {
        sources.insert(KEY.into(), format!("none (session space 0x{ss:x})"));
        return;
    }
    if !kernel_pointer(p) || n > tracker::MAX_EXPANSION {
        sources.insert(
            KEY.into(),
            format!("not summed: 0x{p:x} with {n} entries (session space 0x{ss:x}) is not a plausible expansion table"),
        );
        return;
    }
    let rows = match tracker::read_rows(tr, k.layout, p, n, KEY) {
        Ok(r) => r,
        Err(e) => {
            sources.insert(KEY.into(), format!("not read: {e}"));
            return;
        }
    };
    if !trusted && !appended(tr, k, p, n) {
        sources.insert(
            KEY.into(),
            format!("not summed: the table 0x{p:x} ({n} entries) of the inferred session space 0x{ss:x} does not hold appended plausible tags"),
        );
        return;
    }
    sources.insert(
        KEY.into(),
        format!(
            "0x{p:x} ({n} entries; _MM_SESSION_SPACE +0x{pe:x} of 0x{ss:x}; the tracker entry layout)"
        ),
    );
    t.add(TableKind::SessionExpansion, p, n, Vec::new(), rows);
}

/// Whether the keys of an expansion table are appended: distinct plausible tags from the first
/// entry on, zeros after them.
fn appended(tr: &mut Translator, k: Kernel, p: u64, n: u64) -> bool {
    let e = &k.layout.tracker;
    let (Ok(key), Ok(raw)) = (e.field("Key"), tr.read_vec(p, n as usize * e.size)) else {
        return false;
    };
    let keys: Vec<u32> = raw
        .chunks_exact(e.size)
        .map(|r| key.read(r) as u32)
        .collect();
    let used = keys.iter().take_while(|&&x| x != 0).count();
    let mut seen = std::collections::BTreeSet::new();
    keys[used..].iter().all(|&x| x == 0)
        && keys[..used]
            .iter()
            .all(|&x| tag::plausible(x) && seen.insert(x))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::Profile;
    use crate::pool::PoolLayout;

    fn layout(build: u32) -> SessionLayout {
        let p = Profile::for_build(build).unwrap().0;
        PoolLayout::from_profile(&p).unwrap().session.unwrap()
    }

    #[test]
    fn profiles_say_where_each_build_keeps_the_session_table() {
        let w7 = layout(7601);
        assert_eq!(
            w7.table,
            SessionTable::Variable("ExpSessionPoolTrackTable".into())
        );
        assert_eq!(
            (w7.table_offset, w7.expansion),
            (Some(0x2000), Some((0x1F30, 0x1F38)))
        );
        // 1903/1909: PoolTags at 0x1000 as on 19041, the expansion fields further on.
        for b in [18362, 18363] {
            let w = layout(b);
            assert_eq!(
                (w.table_offset, w.expansion),
                (Some(0x1000), Some((0x4E8, 0x4F0))),
                "{b}"
            );
        }
        let w10 = layout(19045);
        assert_eq!(
            (w10.table_offset, w10.expansion),
            (Some(0x1000), Some((0x3D0, 0x3D8)))
        );
        let w11 = layout(22000);
        assert_eq!(w11.table, SessionTable::SessionSpace(0x380));
        assert_eq!(w11.expansion, Some((0x328, 0x330)));
        // No source describes it on Vista or on 22621+: those profiles leave it out.
        for b in [6002, 22621, 26100] {
            let p = Profile::for_build(b).unwrap().0;
            assert!(
                PoolLayout::from_profile(&p).unwrap().session.is_none(),
                "{b}"
            );
        }
    }
}
