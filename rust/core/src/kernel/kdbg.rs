//! KDDEBUGGER_DATA64 ("KDBG"): found through the header's pointer, decoded when Windows 8+ left
//! it encoded, or found by scanning when the pointer is missing or bad (dump-format.md §3, §4).

use std::collections::BTreeMap;

use memchr::memmem;
use rayon::prelude::*;

use super::profile::Profile;
use crate::bytes::{c_string, parse_int, Le};
use crate::container::PAGE_SIZE;
use crate::error::{Error, Result};
use crate::memory::{AddressSpace, Translator};

const OWNER_TAG: &[u8; 4] = b"KDBG";
/// Largest block read: Header.Size grows per release (0x340 Win7 .. ~0x3A0); anything past a
/// page is not a KDBG.
const MAX_SIZE: u32 = 0x1000;
const MIN_SIZE: u32 = 0x300;
/// nt images are a few MiB; scanning further down for "MZ" than this is looking at something else.
const MAX_IMAGE_SCAN: u64 = 64 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KdbgSource {
    /// Plain block at the header's KdDebuggerDataBlock.
    HeaderPointer,
    /// Encoded block at the header's pointer, decoded with keys found in nt's KdCopyDataBlock.
    Decoded {
        kdp_data_block_encoded: u64,
        ki_wait_never: u64,
        ki_wait_always: u64,
    },
    /// Found by scanning the kernel image for the "KDBG" owner tag.
    ImageScan,
    /// Found by scanning physical memory for the owner tag (virtual address unknown).
    PhysicalScan { pa: u64 },
}

impl KdbgSource {
    pub fn describe(&self) -> String {
        match self {
            KdbgSource::HeaderPointer => "at the header's KdDebuggerDataBlock".into(),
            KdbgSource::Decoded { .. } => {
                "at the header's KdDebuggerDataBlock, encoded; decoded with the keys KdCopyDataBlock references".into()
            }
            KdbgSource::ImageScan => "by scanning the kernel image for its owner tag".into(),
            KdbgSource::PhysicalScan { pa } => format!("by scanning physical memory for its owner tag (at 0x{pa:x})"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Kdbg {
    /// VA of the block, when known.
    pub va: Option<u64>,
    pub source: KdbgSource,
    /// Header.Size: how many bytes of the block exist on this build.
    pub size: u32,
    /// The (decoded) block bytes.
    pub block: Vec<u8>,
    /// Each profile field as stored in the block.
    pub fields: BTreeMap<String, u64>,
    /// For address fields with a numeric target: the value of the variable they point to.
    pub values: BTreeMap<String, u64>,
    /// For address fields with a string target (NtBuildLab).
    pub strings: BTreeMap<String, String>,
    /// Fields that could not be read, and why.
    pub notes: Vec<String>,
}

impl Kdbg {
    pub fn field(&self, name: &str) -> Option<u64> {
        self.fields.get(name).copied()
    }
    pub fn value(&self, name: &str) -> Option<u64> {
        self.values.get(name).copied()
    }
    pub fn kern_base(&self) -> Option<u64> {
        self.field("KernBase")
    }
}

/// Locate and parse the block. Tries the header pointer (plain, then encoded), then a scan.
pub fn find(
    space: &AddressSpace,
    header_ptr: u64,
    hint_va: u64,
    profile: &Profile,
) -> Result<Kdbg> {
    let mut tr = space.translator();
    let mut why = Vec::new();
    if header_ptr != 0 {
        match from_pointer(&mut tr, header_ptr) {
            Ok((block, source)) => {
                return Ok(parse(&mut tr, Some(header_ptr), source, block, profile))
            }
            Err(e) => why.push(format!(
                "header KdDebuggerDataBlock 0x{header_ptr:x}: {}",
                e.reason
            )),
        }
    } else {
        why.push("header KdDebuggerDataBlock is 0".into());
    }
    // The block lives in nt's data, as does every list head the header names.
    for anchor in [header_ptr, hint_va] {
        if let Some(base) = image_base_below(&mut tr, anchor) {
            if let Some((va, block)) = scan_image(&mut tr, base) {
                return Ok(parse(
                    &mut tr,
                    Some(va),
                    KdbgSource::ImageScan,
                    block,
                    profile,
                ));
            }
        }
    }
    if let Some((pa, block)) = scan_physical(space) {
        return Ok(parse(
            &mut tr,
            None,
            KdbgSource::PhysicalScan { pa },
            block,
            profile,
        ));
    }
    why.push("no \"KDBG\" owner tag found in the kernel image or physical memory".into());
    Err(Error::format(
        0x80,
        format!("kernel debugger data block not found: {}", why.join("; ")),
    ))
}

fn size_of(head: &[u8]) -> Option<u32> {
    (head.get(0x10..0x14)? == OWNER_TAG)
        .then(|| head.u32_at(0x14))
        .flatten()
        .filter(|s| (MIN_SIZE..=MAX_SIZE).contains(s))
}

fn from_pointer(tr: &mut Translator, va: u64) -> Result<(Vec<u8>, KdbgSource)> {
    let head = tr.read_vec(va, 0x18)?;
    if let Some(size) = size_of(&head) {
        return Ok((tr.read_vec(va, size as usize)?, KdbgSource::HeaderPointer));
    }
    let base = image_base_below(tr, va).ok_or_else(|| {
        Error::not_present(
            va,
            "no \"KDBG\" owner tag, and no kernel image below it to find decoding keys in",
        )
    })?;
    decode_with_image_keys(tr, base, va)
}

/// Walk down from `va` page by page to the "MZ"+"PE" header of the image that holds it.
fn image_base_below(tr: &mut Translator, va: u64) -> Option<u64> {
    if va >> 47 != 0x1FFFF {
        return None;
    }
    let mut page = va & !(PAGE_SIZE - 1);
    let floor = page.saturating_sub(MAX_IMAGE_SCAN);
    while page >= floor && page != 0 {
        if let Ok(h) = tr.read_vec(page, 0x40) {
            if &h[..2] == b"MZ" {
                let lfanew = h.u32_at(0x3C).unwrap_or(0) as u64;
                if lfanew < PAGE_SIZE && tr.read_u32(page + lfanew).ok() == Some(0x0000_4550) {
                    return Some(page);
                }
            }
        }
        page -= PAGE_SIZE;
    }
    None
}

fn size_of_image(tr: &mut Translator, base: u64) -> u64 {
    let lfanew = tr.read_u32(base.wrapping_add(0x3C)).unwrap_or(0) as u64;
    // IMAGE_NT_HEADERS64: SizeOfImage at +0x50 (4 signature + 0x14 file header + 0x38 in optional).
    let size = tr
        .read_u32(base.wrapping_add(lfanew).wrapping_add(0x50))
        .unwrap_or(0) as u64;
    size.clamp(PAGE_SIZE, MAX_IMAGE_SCAN)
}

/// Scan the image at `base` for an 8-aligned block whose KernBase is `base`.
fn scan_image(tr: &mut Translator, base: u64) -> Option<(u64, Vec<u8>)> {
    let size = size_of_image(tr, base);
    let mut page = vec![0u8; PAGE_SIZE as usize];
    for p in (0..size).step_by(PAGE_SIZE as usize) {
        if tr.read(base.wrapping_add(p), &mut page).is_err() {
            continue;
        }
        for hit in memmem::find_iter(&page, OWNER_TAG) {
            if hit % 8 != 0 || hit < 0x10 {
                continue;
            }
            let va = base.wrapping_add(p + hit as u64 - 0x10);
            let Ok(head) = tr.read_vec(va, 0x20) else {
                continue;
            };
            if let Some(size) = size_of(&head) {
                if head.u64_at(0x18) == Some(base) {
                    if let Ok(block) = tr.read_vec(va, size as usize) {
                        return Some((va, block));
                    }
                }
            }
        }
    }
    None
}

/// Last resort: every present page, in parallel; the block must name a KernBase that maps to an
/// "MZ" image. The block is assumed physically contiguous when it crosses a page (nt is mapped
/// with large pages on x64).
fn scan_physical(space: &AddressSpace) -> Option<(u64, Vec<u8>)> {
    let runs = space.phys.present_runs();
    runs.par_iter()
        .flat_map_iter(|r| r.base_page..r.base_page + r.page_count)
        .find_map_first(|pfn| {
            let page = space.phys.page(pfn).ok()?;
            memmem::find_iter(page, OWNER_TAG).find_map(|hit| {
                if hit % 8 != 0 || hit < 0x10 {
                    return None;
                }
                let pa = pfn * PAGE_SIZE + hit as u64 - 0x10;
                let mut head = [0u8; 0x20];
                space.phys.read(pa, &mut head).ok()?;
                let size = size_of(&head)?;
                let kern_base = head.u64_at(0x18)?;
                let mut tr = space.translator();
                if tr.read_vec(kern_base, 2).ok()? != b"MZ" {
                    return None;
                }
                let mut block = vec![0u8; size as usize];
                space.phys.read(pa, &mut block).ok()?;
                Some((pa, block))
            })
        })
}

/// Windows 8+ encoding (§4): plain = bswap(rol(w ^ N, N & 0x3F) ^ A) ^ W.
pub fn decode_word(w: u64, never: u64, always: u64, encoded_flag_va: u64) -> u64 {
    ((w ^ never).rotate_left((never & 0x3F) as u32) ^ encoded_flag_va).swap_bytes() ^ always
}

/// The inverse of [`decode_word`] (used by tests and fuzz oracles).
pub fn encode_word(plain: u64, never: u64, always: u64, encoded_flag_va: u64) -> u64 {
    ((plain ^ always).swap_bytes() ^ encoded_flag_va).rotate_right((never & 0x3F) as u32) ^ never
}

/// Keys referenced by nt!KdCopyDataBlock: `cmp byte [KdpDataBlockEncoded], 0`, `lea r64,
/// [KdDebuggerDataBlock]`, then `mov r64, [KiWaitNever]` and `mov|xor r64, [KiWaitAlways]`, all
/// RIP-relative (the pattern volatility2 looks for). Decoded only if the flag byte is set.
fn decode_with_image_keys(
    tr: &mut Translator,
    base: u64,
    kdbg_va: u64,
) -> Result<(Vec<u8>, KdbgSource)> {
    let size = size_of_image(tr, base);
    let mut chunk = vec![0u8; (PAGE_SIZE * 2) as usize];
    let mut p = 0;
    while p < size {
        // Two pages at a time, advancing one, so a snippet crossing a page is seen whole.
        let have = tr.read(base.wrapping_add(p), &mut chunk).is_ok()
            || tr
                .read(base.wrapping_add(p), &mut chunk[..PAGE_SIZE as usize])
                .is_ok();
        if have {
            for hit in memmem::find_iter(&chunk[..PAGE_SIZE as usize], &[0x80, 0x3D]) {
                let at = base.wrapping_add(p + hit as u64);
                if let Some(keys) = snippet_keys(&chunk[hit..], at) {
                    if keys.1 == kdbg_va {
                        return decode_block(tr, kdbg_va, keys.0, keys.2, keys.3);
                    }
                }
            }
        }
        p += PAGE_SIZE;
    }
    Err(Error::not_present(kdbg_va, "no \"KDBG\" owner tag, and no KdCopyDataBlock code referencing it was found in the kernel image"))
}

/// (KdpDataBlockEncoded, KdDebuggerDataBlock, &KiWaitNever, &KiWaitAlways) from a code window
/// starting at a `80 3D rel32 00` instruction located at `at`.
fn snippet_keys(code: &[u8], at: u64) -> Option<(u64, u64, u64, u64)> {
    let rip = |insn_end: usize, rel: i32| {
        at.wrapping_add(insn_end as u64)
            .wrapping_add(rel as i64 as u64)
    };
    if code.get(6) != Some(&0) {
        return None;
    }
    let flag = rip(7, code.u32_at(2)? as i32);
    let (mut lea, mut never, mut always) = (None, None, None);
    let window = code.len().min(300);
    let mut i = 7;
    while i + 7 <= window {
        let (rex, op, modrm) = (code[i], code[i + 1], code[i + 2]);
        if (rex == 0x48 || rex == 0x4C) && modrm & 0xC7 == 0x05 {
            let target = rip(i + 7, code.u32_at(i + 3)? as i32);
            match op {
                0x8D if lea.is_none() => lea = Some(target),
                0x8B if never.is_none() => never = Some(target),
                0x8B | 0x33 if always.is_none() => always = Some(target),
                _ => {}
            }
            if lea.is_some() && never.is_some() && always.is_some() {
                return Some((flag, lea?, never?, always?));
            }
            i += 7;
            continue;
        }
        i += 1;
    }
    None
}

fn decode_block(
    tr: &mut Translator,
    va: u64,
    flag_va: u64,
    never_va: u64,
    always_va: u64,
) -> Result<(Vec<u8>, KdbgSource)> {
    let flag = tr.read_vec(flag_va, 1)?[0];
    if flag != 1 {
        return Err(Error::not_present(
            va,
            format!(
                "no \"KDBG\" owner tag, and KdpDataBlockEncoded (0x{flag_va:x}) is {flag}, not 1"
            ),
        ));
    }
    let never = tr.read_u64(never_va)?;
    let always = tr.read_u64(always_va)?;
    let decode = |raw: &[u8]| -> Vec<u8> {
        raw.chunks_exact(8)
            .flat_map(|c| {
                decode_word(c.u64_at(0).unwrap_or(0), never, always, flag_va).to_le_bytes()
            })
            .collect()
    };
    let head = decode(&tr.read_vec(va, 0x18)?);
    let size = size_of(&head).ok_or_else(|| {
        Error::not_present(
            va,
            "decoded block has no \"KDBG\" owner tag: wrong keys or not a KDBG",
        )
    })?;
    let block = decode(&tr.read_vec(va, (size as usize) & !7)?);
    Ok((
        block,
        KdbgSource::Decoded {
            kdp_data_block_encoded: flag_va,
            ki_wait_never: never,
            ki_wait_always: always,
        },
    ))
}

fn read_cstr(tr: &mut Translator, va: u64, max: usize) -> Result<String> {
    let mut out = Vec::new();
    let mut addr = va;
    while out.len() < max {
        let n = (PAGE_SIZE - (addr & (PAGE_SIZE - 1))) as usize;
        let chunk = tr.read_vec(addr, n.min(max - out.len()))?;
        let end = chunk.iter().position(|&c| c == 0);
        out.extend_from_slice(&chunk[..end.unwrap_or(chunk.len())]);
        if end.is_some() {
            break;
        }
        addr = addr.wrapping_add(chunk.len() as u64);
    }
    Ok(c_string(&out))
}

/// Read each profile field that the block's Header.Size covers; dereference address fields.
fn parse(
    tr: &mut Translator,
    va: Option<u64>,
    source: KdbgSource,
    block: Vec<u8>,
    profile: &Profile,
) -> Kdbg {
    let size = block.u32_at(0x14).unwrap_or(0);
    let mut k = Kdbg {
        va,
        source,
        size,
        block,
        fields: BTreeMap::new(),
        values: BTreeMap::new(),
        strings: BTreeMap::new(),
        notes: Vec::new(),
    };
    if u64::from(size) != profile.kdbg_size() {
        k.notes.push(format!(
            "KDBG Header.Size is 0x{size:x}; profile {} expects 0x{:x} (fields past 0x{size:x} are not read)",
            profile.name,
            profile.kdbg_size()
        ));
    }
    for (name, f) in &profile.kdbg.fields {
        let Some(off) = parse_int(&f.offset).map(|o| o as usize) else {
            continue;
        };
        let width = if f.kind == "value" {
            f.width.unwrap_or(8) as usize
        } else {
            8
        };
        if off + width > k.block.len() {
            continue; // this build's block ends before the field
        }
        let raw = match width {
            2 => k.block.u16_at(off).map(u64::from),
            4 => k.block.u32_at(off).map(u64::from),
            _ => k.block.u64_at(off),
        };
        let Some(raw) = raw else { continue };
        k.fields.insert(name.clone(), raw);
        if f.kind != "address" || raw == 0 {
            continue;
        }
        let read = match f.target.as_deref() {
            Some("u64") => tr
                .read_u64(raw)
                .map(|v| k.values.insert(name.clone(), v))
                .map(drop),
            Some("u32") => tr
                .read_u32(raw)
                .map(|v| k.values.insert(name.clone(), v.into()))
                .map(drop),
            Some("cstr") => read_cstr(tr, raw, 256)
                .map(|s| k.strings.insert(name.clone(), s))
                .map(drop),
            _ => Ok(()),
        };
        if let Err(e) = read {
            k.notes.push(format!("{name} at 0x{raw:x}: {e}"));
        }
    }
    k
}
