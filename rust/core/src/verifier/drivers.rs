//! Verified drivers (Windows 7+): the configured ("suspect") drivers on `VfSuspectDriversList`,
//! the loaded verified images in the `ViTargetDriversAvl` tables, and each image's
//! VF_TARGET_VERIFIED_DRIVER_DATA (pool counters and tracker pages), which points back to its
//! suspect entry. Without symbols the verified data blocks are found by their pool tag.

use std::collections::HashSet;

use super::layout::{DriverList, VerifierLayout};
use super::{Context, Memory, TAG_VERIFIED_DATA};
use crate::error::{Error, Result};
use crate::kernel::fields::Entry;
use crate::pool::globals::Sources;

/// Bounds for hostile lists and trees (a real system verifies a handful of drivers).
const MAX_SUSPECTS: usize = 4096;
const MAX_TABLES: u64 = 1024;
const MAX_NODES: usize = 65536;
const MAX_NAME_BYTES: usize = 0x800;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverState {
    /// Has verified data: the image is loaded and verified now.
    Loaded,
    /// Configured and loaded at least once, not loaded now.
    Unloaded,
    /// Configured, never loaded since boot.
    NeverLoaded,
}

impl DriverState {
    pub fn name(self) -> &'static str {
        match self {
            DriverState::Loaded => "loaded",
            DriverState::Unloaded => "unloaded",
            DriverState::NeverLoaded => "never_loaded",
        }
    }
}

/// A driver's pool counters (VF_TARGET_VERIFIED_DRIVER_DATA), zero when it has none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub current_paged_allocs: u64,
    pub current_nonpaged_allocs: u64,
    pub peak_paged_allocs: u64,
    pub peak_nonpaged_allocs: u64,
    pub paged_bytes: u64,
    pub nonpaged_bytes: u64,
    pub peak_paged_bytes: u64,
    pub peak_nonpaged_bytes: u64,
}

impl Counters {
    /// The eight counters, by the field names that the Win7+ verified-data record and the
    /// Vista MI_VERIFIER_DRIVER_ENTRY share.
    pub fn read(f: &impl Fn(&str) -> Result<u64>) -> Result<Self> {
        Ok(Self {
            current_paged_allocs: f("CurrentPagedPoolAllocations")?,
            current_nonpaged_allocs: f("CurrentNonPagedPoolAllocations")?,
            peak_paged_allocs: f("PeakPagedPoolAllocations")?,
            peak_nonpaged_allocs: f("PeakNonPagedPoolAllocations")?,
            paged_bytes: f("PagedBytes")?,
            nonpaged_bytes: f("NonPagedBytes")?,
            peak_paged_bytes: f("PeakPagedBytes")?,
            peak_nonpaged_bytes: f("PeakNonPagedBytes")?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Driver {
    /// BaseName, e.g. "myfault.sys".
    pub name: String,
    pub state: DriverState,
    pub loads: u32,
    pub unloads: u32,
    /// VF_SUSPECT_DRIVER_ENTRY, when known (WinDbg's Win7 "Entry" column).
    pub entry: Option<u64>,
    /// Image base and size (VF_TARGET_DRIVER, or the loaded module of that name).
    pub base: Option<u64>,
    pub size: Option<u64>,
    pub verified_data: Option<u64>,
    pub counters: Counters,
    /// First tracker page (PoolPageHeaders with the low 4 bits masked off), 0 when none.
    pub first_page: u64,
    /// PoolPageHeaders.Depth: the number of tracker pages.
    pub page_depth: u16,
}

/// A VF_SUSPECT_DRIVER_ENTRY.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Suspect {
    pub va: u64,
    pub name: String,
    pub loads: u32,
    pub unloads: u32,
    pub flink: u64,
}

/// One AVL node's VF_TARGET_DRIVER.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetNode {
    pub node: u64,
    pub base: u64,
    pub size: u64,
    pub verified_data: u64,
}

/// The first entry of an x64 16-byte SLIST_HEADER from its second qword: the low 4 bits are
/// flags (HeaderType/Init on Win7/8, reserved on 8.1+), never address.
pub fn slist_first(qword1: u64) -> u64 {
    qword1 & !0xF
}

/// A suspect entry; an unreadable name is a note (the counters and link still count).
pub(crate) fn read_suspect(
    m: &mut impl Memory,
    l: &VerifierLayout,
    va: u64,
    notes: &mut Vec<String>,
) -> Result<Suspect> {
    read_named(m, &l.suspect, "VF_SUSPECT_DRIVER_ENTRY", va, notes)
}

/// The list-entry part shared by VF_SUSPECT_DRIVER_ENTRY and MI_VERIFIER_DRIVER_ENTRY
/// (`e` names Flink, Loads, Unloads, BaseName.Length and BaseName.Buffer).
pub(crate) fn read_named(
    m: &mut impl Memory,
    e: &Entry,
    kind: &str,
    va: u64,
    notes: &mut Vec<String>,
) -> Result<Suspect> {
    let raw = m.read_vec(va, e.size).map_err(|err| err.context(kind))?;
    let len = (e.field("BaseName.Length")?.read(&raw) as usize).min(MAX_NAME_BYTES) & !1;
    let buf = e.field("BaseName.Buffer")?.read(&raw);
    let name = match (len, buf) {
        (0, _) | (_, 0) => String::new(),
        _ => match m.read_vec(buf, len) {
            Ok(b) => {
                let units: Vec<u16> = b
                    .chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .collect();
                String::from_utf16_lossy(&units)
            }
            Err(err) => {
                notes.push(format!("suspect entry 0x{va:x}: BaseName: {err}"));
                String::new()
            }
        },
    };
    Ok(Suspect {
        va,
        name,
        loads: e.field("Loads")?.read(&raw) as u32,
        unloads: e.field("Unloads")?.read(&raw) as u32,
        flink: e.field("Flink")?.read(&raw),
    })
}

/// Walk a LIST_ENTRY list of suspect entries from its head (bounded, cycle-safe). A broken link
/// ends the walk with a note; what was read is kept.
pub fn walk_suspects(
    m: &mut impl Memory,
    l: &VerifierLayout,
    head: u64,
    notes: &mut Vec<String>,
) -> Result<Vec<Suspect>> {
    walk_list(
        m,
        &l.suspect,
        "VF_SUSPECT_DRIVER_ENTRY",
        "VfSuspectDriversList",
        head,
        notes,
    )
}

/// [`walk_suspects`] for any entry layout with the named-entry fields (see [`read_named`]).
pub(crate) fn walk_list(
    m: &mut impl Memory,
    e: &Entry,
    kind: &str,
    list: &str,
    head: u64,
    notes: &mut Vec<String>,
) -> Result<Vec<Suspect>> {
    let links = e.field("Flink")?.offset() as u64;
    let mut link = m
        .read_u64(head)
        .map_err(|err| err.context(&format!("{list} head")))?;
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    while link != head {
        if link == 0 || out.len() >= MAX_SUSPECTS || !seen.insert(link) {
            notes.push(format!(
                "suspect driver list: link 0x{link:x} is null, repeats or exceeds {MAX_SUSPECTS} entries; walk stopped"
            ));
            break;
        }
        match read_named(m, e, kind, link.wrapping_sub(links), notes) {
            Ok(s) => {
                link = s.flink;
                out.push(s);
            }
            Err(err) => {
                notes.push(format!("suspect driver list: {err}; walk stopped"));
                break;
            }
        }
    }
    Ok(out)
}

/// From one suspect entry, go round its ring to the list head (the link inside the kernel
/// image, `is_head`), then walk the list properly. Without a head, the entries seen are kept.
pub fn ring_from(
    m: &mut impl Memory,
    l: &VerifierLayout,
    entry: u64,
    is_head: impl Fn(u64) -> bool,
    notes: &mut Vec<String>,
) -> Result<(Option<u64>, Vec<Suspect>)> {
    ring_list(
        m,
        &l.suspect,
        "VF_SUSPECT_DRIVER_ENTRY",
        "VfSuspectDriversList",
        entry,
        is_head,
        notes,
    )
}

/// [`ring_from`] for any entry layout with the named-entry fields (see [`read_named`]).
pub(crate) fn ring_list(
    m: &mut impl Memory,
    e: &Entry,
    kind: &str,
    list: &str,
    entry: u64,
    is_head: impl Fn(u64) -> bool,
    notes: &mut Vec<String>,
) -> Result<(Option<u64>, Vec<Suspect>)> {
    let links = e.field("Flink")?.offset() as u64;
    let start = entry.wrapping_add(links);
    let mut link = start;
    let mut seen = Vec::new();
    let mut visited = HashSet::new();
    for _ in 0..=MAX_SUSPECTS {
        if is_head(link) {
            return Ok((Some(link), walk_list(m, e, kind, list, link, notes)?));
        }
        if link == 0 || !visited.insert(link) {
            break;
        }
        let s = read_named(m, e, kind, link.wrapping_sub(links), notes)?;
        link = s.flink;
        seen.push(s);
        if link == start {
            break;
        }
    }
    Ok((None, seen))
}

/// Every VF_TARGET_DRIVER in the verifier's AVL tables (iterative DFS from each table's
/// BalancedRoot.RightChild; visited set and node cap), sorted by image base.
pub fn walk_avl(
    m: &mut impl Memory,
    l: &VerifierLayout,
    tree: u64,
    notes: &mut Vec<String>,
) -> Result<Vec<TargetNode>> {
    let raw = m
        .read_vec(tree, l.avl_tree.size)
        .map_err(|e| e.context("ViTargetDriversAvl"))?;
    let tables = l.avl_tree.field("Tables")?.read(&raw);
    let count = l.avl_tree.field("TablesNo")?.read(&raw);
    if tables == 0 || count == 0 || count > MAX_TABLES {
        return Err(Error::not_present(
            tree,
            format!("ViTargetDriversAvl: Tables 0x{tables:x} with TablesNo {count} is not a plausible table array"),
        ));
    }
    let (root_f, left_f, right_f) = (
        l.avl_table.field("RightChild")?,
        l.links.field("LeftChild")?,
        l.links.field("RightChild")?,
    );
    let (p_f, size_f, vd_f) = (
        l.target.field("p")?,
        l.target.field("RangeSize")?,
        l.target.field("VerifiedData")?,
    );
    let mut out = Vec::new();
    let mut visited = HashSet::new();
    for i in 0..count {
        let table = tables.wrapping_add(i * l.avl_table.size as u64);
        let root = match m.read_vec(table, l.avl_table.size) {
            Ok(t) => root_f.read(&t),
            Err(e) => {
                notes.push(format!("verifier AVL table {i}: {e}"));
                continue;
            }
        };
        let mut stack = vec![root];
        while let Some(node) = stack.pop() {
            if node == 0 {
                continue;
            }
            if !visited.insert(node) {
                notes.push(format!(
                    "verifier AVL table {i}: node 0x{node:x} reached twice; not followed again"
                ));
                continue;
            }
            if visited.len() > MAX_NODES {
                notes.push(format!(
                    "verifier AVL tables exceed {MAX_NODES} nodes; walk stopped"
                ));
                return Ok(sorted(out));
            }
            let links = match m.read_vec(node, l.links.size) {
                Ok(b) => b,
                Err(e) => {
                    notes.push(format!("verifier AVL node: {e}; subtree skipped"));
                    continue;
                }
            };
            stack.push(right_f.read(&links));
            stack.push(left_f.read(&links));
            let target = node.wrapping_add(l.node_links);
            match m.read_vec(target, l.target.size) {
                Ok(t) => out.push(TargetNode {
                    node,
                    base: p_f.read(&t),
                    size: size_f.read(&t),
                    verified_data: vd_f.read(&t),
                }),
                Err(e) => notes.push(format!("VF_TARGET_DRIVER: {e}")),
            }
        }
    }
    Ok(sorted(out))
}

fn sorted(mut v: Vec<TargetNode>) -> Vec<TargetNode> {
    v.sort_by_key(|n| (n.base, n.node));
    v
}

/// A VF_TARGET_VERIFIED_DRIVER_DATA whose signature holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub va: u64,
    pub suspect: u64,
    pub counters: Counters,
    pub first_page: u64,
    pub page_depth: u16,
}

pub fn read_verified(m: &mut impl Memory, l: &VerifierLayout, va: u64) -> Result<Verified> {
    let e = &l.verified;
    let raw = m
        .read_vec(va, e.size)
        .map_err(|err| err.context("VF_TARGET_VERIFIED_DRIVER_DATA"))?;
    let sig = e.field("Signature")?.read(&raw);
    if sig != l.verified_signature {
        return Err(Error::not_present(
            va,
            format!(
                "VF_TARGET_VERIFIED_DRIVER_DATA signature 0x{sig:x} is not 0x{:x}",
                l.verified_signature
            ),
        ));
    }
    let f = |n: &str| e.field(n).map(|f| f.read(&raw));
    Ok(Verified {
        va,
        suspect: f("SuspectDriverEntry")?,
        counters: Counters::read(&f)?,
        first_page: slist_first(f("PoolPageHeaders.Next")?),
        page_depth: f("PoolPageHeaders.Depth")? as u16,
    })
}

fn from_suspect(s: &Suspect) -> Driver {
    Driver {
        name: s.name.clone(),
        state: if s.loads > 0 || s.unloads > 0 {
            DriverState::Unloaded
        } else {
            DriverState::NeverLoaded
        },
        loads: s.loads,
        unloads: s.unloads,
        entry: Some(s.va),
        base: None,
        size: None,
        verified_data: None,
        counters: Counters::default(),
        first_page: 0,
        page_depth: 0,
    }
}

/// Join suspect entries and verified data (each with its AVL node when known) into drivers:
/// suspect-list order first, then verified drivers whose back-pointer names no listed entry.
/// A bad signature is a note and that driver is skipped.
pub fn assemble(
    m: &mut impl Memory,
    ctx: &Context,
    suspects: &[Suspect],
    verified: &[(Option<TargetNode>, u64)],
    notes: &mut Vec<String>,
) -> Vec<Driver> {
    let l = ctx.layout;
    let mut out: Vec<Driver> = suspects.iter().map(from_suspect).collect();
    for (node, va) in verified {
        let vd = match read_verified(m, l, *va) {
            Ok(v) => v,
            Err(e) => {
                notes.push(format!("{e}; driver skipped"));
                continue;
            }
        };
        let idx = match out.iter().position(|d| d.entry == Some(vd.suspect)) {
            Some(i) => i,
            None => {
                let d = match read_suspect(m, l, vd.suspect, notes) {
                    Ok(s) => from_suspect(&s),
                    Err(e) => {
                        notes.push(format!(
                            "verified data 0x{va:x}: suspect entry 0x{:x} unreadable ({e})",
                            vd.suspect
                        ));
                        // Name it after the image its AVL node covers, if any.
                        let name = node
                            .and_then(|n| ctx.modules.containing(n.base))
                            .map_or_else(String::new, |(_, m)| m.name.clone());
                        Driver {
                            name,
                            entry: None,
                            ..from_suspect(&Suspect::default())
                        }
                    }
                };
                out.push(d);
                out.len() - 1
            }
        };
        let d = &mut out[idx];
        if d.verified_data.is_some() {
            notes.push(format!(
                "verified data 0x{va:x} names suspect entry 0x{:x}, which already has verified data 0x{:x}; ignored",
                vd.suspect,
                d.verified_data.unwrap_or(0)
            ));
            continue;
        }
        d.state = DriverState::Loaded;
        d.verified_data = Some(vd.va);
        d.counters = vd.counters;
        d.first_page = vd.first_page;
        d.page_depth = vd.page_depth;
        if let Some(n) = node {
            d.base = Some(n.base);
            d.size = Some(n.size);
        }
    }
    // An unreadable name: the loaded module at the image base names the driver.
    for d in out.iter_mut().filter(|d| d.name.is_empty()) {
        if let Some((_, m)) = d.base.and_then(|b| ctx.modules.containing(b)) {
            d.name = m.name.clone();
        }
    }
    // Without an AVL node the image range comes from the loaded module of the same name.
    for d in out
        .iter_mut()
        .filter(|d| d.base.is_none() && d.state == DriverState::Loaded)
    {
        if let Some(m) = ctx
            .modules
            .list
            .iter()
            .find(|m| !d.name.is_empty() && m.name.eq_ignore_ascii_case(&d.name))
        {
            d.base = Some(m.base);
            d.size = Some(m.size);
        }
    }
    out
}

/// Drivers from the symbol table's globals, else from VfVD pool blocks.
pub fn read(
    m: &mut impl Memory,
    ctx: &Context,
    sources: &mut Sources,
    notes: &mut Vec<String>,
) -> Result<Vec<Driver>> {
    if ctx.layout.driver_list == DriverList::MiList {
        return super::mi_list::read(m, ctx, sources, notes);
    }
    let list = ctx.symbol("VfSuspectDriversList");
    let avl = ctx.symbol("ViTargetDriversAvl");
    if let (Some(list), Some(avl)) = (list, avl) {
        let origin = ctx.symbols.map_or("", |s| s.source.as_str());
        sources.insert("VfSuspectDriversList".into(), origin.to_string());
        sources.insert("ViTargetDriversAvl".into(), origin.to_string());
        let suspects = walk_suspects(m, ctx.layout, list, notes)?;
        let nodes = walk_avl(m, ctx.layout, avl, notes)?;
        let thunked = nodes.iter().filter(|n| n.verified_data == 0).count();
        if thunked > 0 {
            notes.push(format!(
                "{thunked} verifier AVL nodes have no verified data (thunked images, not verified drivers)"
            ));
        }
        let verified: Vec<(Option<TargetNode>, u64)> = nodes
            .iter()
            .filter(|n| n.verified_data != 0)
            .map(|n| (Some(*n), n.verified_data))
            .collect();
        sources.insert(
            "verifier_drivers".into(),
            "VfSuspectDriversList and ViTargetDriversAvl (symbols)".into(),
        );
        return Ok(assemble(m, ctx, &suspects, &verified, notes));
    }
    heuristic(m, ctx, sources, notes)
}

/// No symbols: VF_TARGET_VERIFIED_DRIVER_DATA blocks are nonpaged pool blocks tagged VfVD whose
/// body carries the signature; their back-pointers lead to suspect entries, and round the ring
/// to the list head in the kernel image (which yields configured drivers never loaded too).
fn heuristic(
    m: &mut impl Memory,
    ctx: &Context,
    sources: &mut Sources,
    notes: &mut Vec<String>,
) -> Result<Vec<Driver>> {
    let blocks = ctx.blocks.as_ref().map_err(|why| {
        Error::unsupported(format!(
            "no symbols for VfSuspectDriversList/ViTargetDriversAvl, and no pool scan for VfVD blocks: {why}"
        ))
    })?;
    let header = ctx.pool.map_or(0, |p| p.header_size as u64);
    let mut verified = Vec::new();
    let mut bad = 0usize;
    for b in blocks.iter().filter(|b| b.tag == TAG_VERIFIED_DATA) {
        let body = b.va.wrapping_add(header);
        match read_verified(m, ctx.layout, body) {
            Ok(_) => verified.push((None, body)),
            Err(_) => bad += 1,
        }
    }
    if bad > 0 {
        notes.push(format!(
            "{bad} VfVD pool blocks lack the verified-data signature (freed or reused); ignored"
        ));
    }
    if verified.is_empty() {
        return Err(Error::unsupported(
            "no symbols for VfSuspectDriversList/ViTargetDriversAvl, and no VfVD pool block with the verified-data signature was found",
        ));
    }
    sources.insert(
        "verifier_drivers".into(),
        "heuristic: VfVD pool blocks".into(),
    );
    let kernel = ctx.modules.list.first().map(|k| (k.base, k.size));
    let is_head = |va: u64| kernel.is_some_and(|(b, s)| va.wrapping_sub(b) < s);
    let mut suspects: Vec<Suspect> = Vec::new();
    for (_, va) in &verified {
        let Ok(vd) = read_verified(m, ctx.layout, *va) else {
            continue;
        };
        if vd.suspect == 0 || suspects.iter().any(|s| s.va == vd.suspect) {
            continue;
        }
        match ring_from(m, ctx.layout, vd.suspect, is_head, notes) {
            Ok((Some(head), list)) => {
                sources.insert(
                    "VfSuspectDriversList".into(),
                    format!("heuristic: list head 0x{head:x} in the kernel image, reached from a VfVD back-pointer"),
                );
                suspects = list;
                break;
            }
            Ok((None, list)) => {
                for s in list {
                    if !suspects.iter().any(|x| x.va == s.va) {
                        suspects.push(s);
                    }
                }
            }
            Err(e) => notes.push(format!("suspect entry 0x{:x}: {e}", vd.suspect)),
        }
    }
    sources
        .entry("VfSuspectDriversList".into())
        .or_insert_with(|| "heuristic: VfVD back-pointers (list head not found)".into());
    Ok(assemble(m, ctx, &suspects, &verified, notes))
}

#[cfg(test)]
mod tests {
    use super::super::testmem::Sparse;
    use super::*;
    use crate::kernel::Profile;

    fn layout() -> VerifierLayout {
        VerifierLayout::from_profile(&Profile::for_build(19041).unwrap().0).unwrap()
    }

    #[test]
    fn slist_masks_flag_bits() {
        assert_eq!(slist_first(0xFFFF_FA80_0123_4001), 0xFFFF_FA80_0123_4000);
        assert_eq!(slist_first(0xFFFF_FA80_0123_400F), 0xFFFF_FA80_0123_4000);
        assert_eq!(slist_first(0x3), 0);
    }

    /// A tree of three nodes in one table plus one in a second table, a cycle back to the
    /// root, and a node whose page is missing.
    #[test]
    fn avl_walk_hand_built() {
        let l = layout();
        let mut m = Sparse::default();
        let tree = 0xFFFF_F800_0010_0000u64;
        let tables = 0xFFFF_FA80_0020_0000u64;
        let stride = l.avl_table.size as u64;
        m.put_u64(tree + 0x10, tables); // Tables
        m.put_u32(tree + 0x18, 2); // TablesNo
        m.put_u64(tree, 0); // NodeRangeSize
        let n = |i: u64| 0xFFFF_FA80_0030_0000u64 + i * 0x100;
        // table 0: root n0 with left n1 and right n2; n2's right child points back to n0.
        m.put_u64(tables + 0x10, n(0));
        m.put_u64(n(0) + 0x08, n(1));
        m.put_u64(n(0) + 0x10, n(2));
        m.put_u64(n(2) + 0x10, n(0));
        // table 1: root n3 whose left child is unreadable.
        m.put_u64(tables + stride + 0x10, n(3));
        m.put_u64(n(3) + 0x08, 0xFFFF_FA80_0900_0000);
        for (i, base) in [(0, 0x3000u64), (1, 0x1000), (2, 0x4000), (3, 0x2000)] {
            let t = n(i) + 0x20;
            m.put_u64(t, 0xFFFF_F880_0000_0000 + base);
            m.put_u64(t + 8, 0x1000);
            m.put_u64(t + 0x38, 0xFFFF_FA80_0040_0000 + i * 0x200);
        }
        m.touch(tables, 2 * stride);
        let mut notes = Vec::new();
        let nodes = walk_avl(&mut m, &l, tree, &mut notes).unwrap();
        let bases: Vec<u64> = nodes.iter().map(|n| n.base & 0xFFFF).collect();
        assert_eq!(bases, [0x1000, 0x2000, 0x3000, 0x4000]);
        assert_eq!(nodes[0].node, n(1));
        assert_eq!(nodes[0].verified_data, 0xFFFF_FA80_0040_0200);
        assert!(
            notes.iter().any(|s| s.contains("reached twice")),
            "{notes:?}"
        );
        assert!(
            notes.iter().any(|s| s.contains("subtree skipped")),
            "{notes:?}"
        );
    }

    #[test]
    fn avl_rejects_implausible_tables() {
        let l = layout();
        let mut m = Sparse::default();
        let tree = 0xFFFF_F800_0010_0000u64;
        m.put_u64(tree + 0x10, 0xFFFF_FA80_0020_0000);
        m.put_u32(tree + 0x18, 100_000);
        m.touch(tree, 0x40);
        assert!(walk_avl(&mut m, &l, tree, &mut Vec::new()).is_err());
    }

    #[test]
    fn suspect_list_walk_is_bounded() {
        let l = layout();
        let mut m = Sparse::default();
        let head = 0xFFFF_F800_0010_0100u64;
        let e = |i: u64| 0xFFFF_FA80_0050_0000u64 + i * 0x50;
        m.put_u64(head, e(0));
        // e0 -> e1 -> e0 (a loop that never returns to the head)
        m.put_u64(e(0), e(1));
        m.put_u64(e(1), e(0));
        for i in 0..2 {
            let name: Vec<u8> = format!("d{i}.sys")
                .encode_utf16()
                .flat_map(u16::to_le_bytes)
                .collect();
            m.put_u32(e(i) + 0x10, i as u32);
            m.put_u16(e(i) + 0x18, name.len() as u16);
            m.put_u64(e(i) + 0x20, e(i) + 0x28);
            m.put(e(i) + 0x28, &name);
        }
        let mut notes = Vec::new();
        let s = walk_suspects(&mut m, &l, head, &mut notes).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].name, "d1.sys");
        assert_eq!(s[1].loads, 1);
        assert_eq!(notes.len(), 1);
    }
}
