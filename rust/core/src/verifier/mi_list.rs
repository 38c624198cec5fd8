//! Verified drivers on Vista and older (shared/specs/verifier.md §4.1): one
//! MI_VERIFIER_DRIVER_ENTRY per configured driver on `MiSuspectDriverList`, holding the name,
//! load counts, image range, pool counters and tracker-page SLISTs itself (the tracker pages'
//! VerifierEntry is the entry). Without symbols the entries are found by their pool tag
//! (`MmLd`, Server 2003 verifier.c) and the list head by going round the ring.

use super::drivers::{read_named, ring_list, slist_first, walk_list, Counters, Driver};
use super::drivers::{DriverState, Suspect};
use super::{Context, Memory, TAG_MI_ENTRY};
use crate::error::{Error, Result};
use crate::kernel::fields::Entry;
use crate::pool::globals::Sources;

const KIND: &str = "MI_VERIFIER_DRIVER_ENTRY";
const LIST: &str = "MiSuspectDriverList";
/// MI_VERIFIER_DRIVER_ENTRY.Flags: VI_VERIFYING_DIRECTLY (spec 4.1; the 2003 kdexts lists
/// only these entries).
pub const VERIFYING_DIRECTLY: u64 = 1;

/// The parts of an MI_VERIFIER_DRIVER_ENTRY past its list fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MiEntry {
    pub start: u64,
    pub end: u64,
    pub flags: u64,
    pub counters: Counters,
    pub first_page: u64,
    pub page_depth: u16,
}

fn layout<'a>(ctx: &Context<'a>) -> Result<&'a Entry> {
    ctx.layout.mi_entry.as_ref().ok_or_else(|| {
        Error::unsupported("profile has driver_list mi_list but no mi_verifier_driver_entry")
    })
}

/// An entry whose signature holds.
pub fn read_entry(m: &mut impl Memory, e: &Entry, signature: u64, va: u64) -> Result<MiEntry> {
    let raw = m.read_vec(va, e.size).map_err(|err| err.context(KIND))?;
    let sig = e.field("Signature")?.read(&raw);
    if sig != signature {
        return Err(Error::not_present(
            va,
            format!("{KIND} signature 0x{sig:x} is not 0x{signature:x}"),
        ));
    }
    let f = |n: &str| e.field(n).map(|f| f.read(&raw));
    Ok(MiEntry {
        start: f("StartAddress")?,
        end: f("EndAddress")?,
        flags: f("Flags")?,
        counters: Counters::read(&f)?,
        first_page: slist_first(f("PoolPageHeaders.Next")?),
        page_depth: f("PoolPageHeaders.Depth")? as u16,
    })
}

/// Entries (list order) into drivers. The entry is both the suspect entry and the "verified
/// data" (owner of the tracker pages). Loaded = loaded more often than unloaded and an image
/// range (StartAddress, cleared at unload) or a loaded module of that name; a bad signature
/// is a note and that entry is skipped, as are entries not verified directly.
pub fn assemble(
    m: &mut impl Memory,
    ctx: &Context,
    e: &Entry,
    entries: &[Suspect],
    notes: &mut Vec<String>,
) -> Vec<Driver> {
    let signature = ctx.layout.verified_signature;
    let mut out = Vec::new();
    let mut indirect = 0usize;
    for s in entries {
        let mi = match read_entry(m, e, signature, s.va) {
            Ok(x) => x,
            Err(err) => {
                notes.push(format!("{err}; driver skipped"));
                continue;
            }
        };
        if mi.flags & VERIFYING_DIRECTLY == 0 {
            indirect += 1;
            continue;
        }
        let module = ctx
            .modules
            .list
            .iter()
            .find(|md| !s.name.is_empty() && md.name.eq_ignore_ascii_case(&s.name));
        let loaded = s.loads > s.unloads && (mi.start != 0 || module.is_some());
        let state = if loaded {
            DriverState::Loaded
        } else if s.loads > 0 || s.unloads > 0 {
            DriverState::Unloaded
        } else {
            DriverState::NeverLoaded
        };
        let (base, size) = match (loaded, mi.start, module) {
            (false, _, _) => (None, None),
            (true, start, _) if start != 0 && mi.end > start => (Some(start), Some(mi.end - start)),
            (true, _, Some(md)) => (Some(md.base), Some(md.size)),
            (true, _, None) => (None, None),
        };
        let mut name = s.name.clone();
        if name.is_empty() {
            if let Some((_, md)) = base.and_then(|b| ctx.modules.containing(b)) {
                name = md.name.clone();
            }
        }
        out.push(Driver {
            name,
            state,
            loads: s.loads,
            unloads: s.unloads,
            entry: Some(s.va),
            base,
            size,
            verified_data: Some(s.va),
            counters: mi.counters,
            first_page: mi.first_page,
            page_depth: mi.page_depth,
        });
    }
    if indirect > 0 {
        notes.push(format!(
            "{indirect} {KIND}s are not verified directly (Flags lack VI_VERIFYING_DIRECTLY: kernel verifier or disabled); not listed"
        ));
    }
    out
}

/// Drivers from `MiSuspectDriverList` (symbol table), else from `MmLd` pool blocks.
pub fn read(
    m: &mut impl Memory,
    ctx: &Context,
    sources: &mut Sources,
    notes: &mut Vec<String>,
) -> Result<Vec<Driver>> {
    let e = layout(ctx)?;
    if let Some(head) = ctx.symbol(LIST) {
        let origin = ctx.symbols.map_or("", |s| s.source.as_str());
        sources.insert(LIST.into(), origin.to_string());
        sources.insert("verifier_drivers".into(), format!("{LIST} (symbols)"));
        let entries = walk_list(m, e, KIND, LIST, head, notes)?;
        return Ok(assemble(m, ctx, e, &entries, notes));
    }
    heuristic(m, ctx, e, sources, notes)
}

/// No symbols: MI_VERIFIER_DRIVER_ENTRYs are nonpaged pool blocks tagged MmLd whose body has
/// the signature; from one of them round the ring to the list head in the kernel image.
fn heuristic(
    m: &mut impl Memory,
    ctx: &Context,
    e: &Entry,
    sources: &mut Sources,
    notes: &mut Vec<String>,
) -> Result<Vec<Driver>> {
    let blocks = ctx.blocks.as_ref().map_err(|why| {
        Error::unsupported(format!(
            "no symbol for {LIST}, and no pool scan for MmLd blocks: {why}"
        ))
    })?;
    let header = ctx.pool.map_or(0, |p| p.header_size as u64);
    let signature = ctx.layout.verified_signature;
    let mut found = Vec::new();
    let mut bad = 0usize;
    for b in blocks.iter().filter(|b| b.tag == TAG_MI_ENTRY) {
        let body = b.va.wrapping_add(header);
        match read_entry(m, e, signature, body) {
            Ok(_) => found.push(body),
            Err(_) => bad += 1,
        }
    }
    if bad > 0 {
        notes.push(format!(
            "{bad} MmLd pool blocks lack the {KIND} signature (freed or reused); ignored"
        ));
    }
    let Some(&first) = found.first() else {
        return Err(Error::unsupported(format!(
            "no symbol for {LIST}, and no MmLd pool block with the {KIND} signature was found"
        )));
    };
    sources.insert(
        "verifier_drivers".into(),
        "heuristic: MmLd pool blocks".into(),
    );
    let kernel = ctx.modules.list.first().map(|k| (k.base, k.size));
    let is_head = |va: u64| kernel.is_some_and(|(b, s)| va.wrapping_sub(b) < s);
    let entries = match ring_list(m, e, KIND, LIST, first, is_head, notes) {
        Ok((Some(head), list)) => {
            sources.insert(
                LIST.into(),
                format!("heuristic: list head 0x{head:x} in the kernel image, reached from an MmLd block"),
            );
            list
        }
        other => {
            if let Err(err) = other {
                notes.push(format!("{KIND} 0x{first:x}: {err}"));
            }
            sources.insert(
                LIST.into(),
                "heuristic: MmLd pool blocks (list head not found)".into(),
            );
            let mut list = Vec::new();
            for va in found {
                match read_named(m, e, KIND, va, notes) {
                    Ok(s) => list.push(s),
                    Err(err) => notes.push(format!("{err}")),
                }
            }
            list
        }
    };
    Ok(assemble(m, ctx, e, &entries, notes))
}

#[cfg(test)]
mod tests {
    use super::super::testmem::Sparse;
    use super::super::VerifierLayout;
    use super::*;
    use crate::kernel::{Modules, Profile};

    fn vista() -> VerifierLayout {
        VerifierLayout::from_profile(&Profile::for_build(6002).unwrap().0).unwrap()
    }

    fn put_entry(m: &mut Sparse, va: u64, flink: u64, name: &str, loads: u32, start: u64) {
        let n: Vec<u8> = name.encode_utf16().flat_map(u16::to_le_bytes).collect();
        m.put_u64(va, flink);
        m.put_u32(va + 0x10, loads);
        m.put_u32(va + 0x14, if start != 0 { loads - 1 } else { loads });
        m.put_u16(va + 0x18, n.len() as u16);
        m.put_u64(va + 0x20, va + 0xA0);
        m.put_u64(va + 0x28, start);
        m.put_u64(va + 0x30, if start != 0 { start + 0x8000 } else { 0 });
        m.put_u32(va + 0x38, 1);
        m.put_u64(va + 0x40, 0x9876_1940);
        m.put_u16(va + 0x50, 2);
        m.put_u64(va + 0x58, 0xFFFF_FA80_0077_0003);
        m.put_u32(va + 0x74, 7);
        m.put_u64(va + 0x88, 0x700);
        m.put(va + 0xA0, &n);
    }

    #[test]
    fn mi_list_walk_and_states() {
        let l = vista();
        let mut m = Sparse::default();
        let head = 0xFFFF_F800_0200_0100u64;
        let e = |i: u64| 0xFFFF_FA80_0050_0000u64 + i * 0x100;
        m.put_u64(head, e(0));
        put_entry(&mut m, e(0), e(1), "myfault.sys", 1, 0xFFFF_F880_0400_0000);
        put_entry(&mut m, e(1), e(2), "old.sys", 2, 0);
        put_entry(&mut m, e(2), head, "bad.sys", 1, 0);
        m.put_u64(e(2) + 0x40, 0x1234); // bad signature
        let modules = Modules::default();
        let ctx = Context {
            layout: &l,
            kdbg: None,
            symbols: None,
            kernel_base: None,
            modules: &modules,
            pool: None,
            bigpool: None,
            blocks: Err("test".into()),
        };
        let mi = l.mi_entry.as_ref().unwrap();
        let mut notes = Vec::new();
        let list = walk_list(&mut m, mi, KIND, LIST, head, &mut notes).unwrap();
        assert_eq!(list.len(), 3);
        let d = assemble(&mut m, &ctx, mi, &list, &mut notes);
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].name, "myfault.sys");
        assert_eq!(d[0].state, DriverState::Loaded);
        assert_eq!(d[0].base, Some(0xFFFF_F880_0400_0000));
        assert_eq!(d[0].size, Some(0x8000));
        assert_eq!(d[0].verified_data, Some(e(0)));
        assert_eq!(d[0].first_page, 0xFFFF_FA80_0077_0000);
        assert_eq!(d[0].page_depth, 2);
        assert_eq!(d[0].counters.current_nonpaged_allocs, 7);
        assert_eq!(d[0].counters.nonpaged_bytes, 0x700);
        assert_eq!(d[1].state, DriverState::Unloaded);
        assert_eq!(d[1].base, None);
        assert!(notes.iter().any(|n| n.contains("signature")), "{notes:?}");
        // No symbols and no pool scan: unavailable with the reason.
        let err = read(&mut m, &ctx, &mut Sources::new(), &mut notes).unwrap_err();
        assert!(err.to_string().contains("MmLd"), "{err}");
    }
}
