//! KDDEBUGGER_DATA64 ("KDBG"): found through the header's pointer, decoded when Windows 8+ left
//! it encoded, or — when the pointer is missing or names something else — found through nt's
//! KdCopyDataBlock code, which names both the block and its decoding keys (dump-format.md §3, §4).
//!
//! Order of attempts, each bounded (hostile input cannot make one run long or read out of bounds):
//! 1. the header's KdDebuggerDataBlock: a plain block ("KDBG" at +0x10), or an encoded one decoded
//!    with the keys of the KdCopyDataBlock code whose `lea` names that address;
//! 2. nt's image — the first entry of the header's PsLoadedModuleList (DllBase, SizeOfImage), else
//!    the MZ/PE image found by walking down from the header's pointers: the block KdCopyDataBlock's
//!    `lea` names, plain if its OwnerTag is "KDBG", else decoded when the KdpDataBlockEncoded byte
//!    is 1; failing that, an owner-tag scan of the image;
//! 3. an owner-tag scan of physical memory (the block's virtual address stays unknown);
//! 4. a scan of physical memory for x64 PE images whose ImageBase maps back onto their header,
//!    tried as in 2 (largest first): the encoded block without a header pointer or module list.
//!
//! [`Kdbg::located`] records which step succeeded, nt's image and how it was found, the code that
//! named the block, and why the header's pointer was not used.

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
/// `cmp byte [rip+x], imm8` (80 3D) hits examined per image: a real nt has a few thousand; an
/// image filled with the two bytes stops here.
const MAX_CMP_HITS: usize = 1 << 17;
/// Bytes after the `cmp` searched for the `lea` / `mov` / `mov|xor` operands.
const SNIPPET_WINDOW: usize = 300;
/// Physical PE scan: images tried, and image bytes searched for the code in all.
const MAX_PE_IMAGES: usize = 512;
const MAX_PE_SCAN_BYTES: u64 = 1 << 30;
const IMAGE_NT_SIGNATURE: u32 = 0x0000_4550;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KdbgSource {
    /// Plain block at the header's KdDebuggerDataBlock.
    HeaderPointer,
    /// Encoded block, decoded with keys found in nt's KdCopyDataBlock ([`Located`] says whether
    /// the header's pointer or KdCopyDataBlock's `lea` gave its address).
    Decoded {
        kdp_data_block_encoded: u64,
        ki_wait_never: u64,
        ki_wait_always: u64,
    },
    /// Plain block found in the kernel image without the header's pointer: named by
    /// KdCopyDataBlock's `lea`, or found by its owner tag ([`Located::method`] says which).
    ImageScan,
    /// Found by scanning physical memory for the owner tag (virtual address unknown).
    PhysicalScan { pa: u64 },
}

impl KdbgSource {
    pub fn describe(&self) -> String {
        match self {
            KdbgSource::HeaderPointer => "at the header's KdDebuggerDataBlock".into(),
            KdbgSource::Decoded { .. } => {
                "encoded; decoded with the keys KdCopyDataBlock references".into()
            }
            KdbgSource::ImageScan => "in the kernel image".into(),
            KdbgSource::PhysicalScan { pa } => {
                format!("by scanning physical memory for its owner tag (at 0x{pa:x})")
            }
        }
    }
}

/// Which step found the block's address.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Method {
    /// The header's KdDebuggerDataBlock.
    #[default]
    HeaderPointer,
    /// The `lea` of nt!KdCopyDataBlock's code.
    KdCopyDataBlock,
    /// A scan of nt's image for the owner tag.
    ImageOwnerTag,
    /// A scan of physical memory for the owner tag.
    PhysicalOwnerTag,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::HeaderPointer => "header_pointer",
            Method::KdCopyDataBlock => "kd_copy_data_block",
            Method::ImageOwnerTag => "image_owner_tag_scan",
            Method::PhysicalOwnerTag => "physical_owner_tag_scan",
        }
    }
}

/// nt's image as the reader found it without KDBG.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NtImage {
    pub base: u64,
    pub size: u64,
    /// e.g. "the first entry of the header's PsLoadedModuleList".
    pub found_by: String,
}

/// How the block was located.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Located {
    pub method: Method,
    /// The header's KdDebuggerDataBlock as written (0 = missing).
    pub header_pointer: u64,
    /// Why the header's pointer was not used; None when it was.
    pub header_pointer_problem: Option<String>,
    /// nt's image, when a step used it (for decoding keys, the code, or an owner-tag scan).
    pub nt_image: Option<NtImage>,
    /// VA of the KdCopyDataBlock code that named the block or gave its keys.
    pub kd_copy_data_block: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Kdbg {
    /// VA of the block, when known.
    pub va: Option<u64>,
    pub source: KdbgSource,
    /// How the block was found (method, nt's image, the code, the header pointer's problem).
    pub located: Located,
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

    /// One sentence for the dump's notes: "KDBG found ..., plain|encoded ...".
    pub fn describe(&self) -> String {
        let l = &self.located;
        let va = self.va.map_or_else(
            || "an unknown virtual address".into(),
            |v| format!("0x{v:x}"),
        );
        let nt = l.nt_image.as_ref().map_or_else(
            || "nt".to_string(),
            |n| {
                format!(
                    "nt (0x{:x}, 0x{:x} bytes, found by {})",
                    n.base, n.size, n.found_by
                )
            },
        );
        let code = l.kd_copy_data_block.map_or_else(
            || "KdCopyDataBlock".into(),
            |c| format!("KdCopyDataBlock (0x{c:x})"),
        );
        let how = match l.method {
            Method::HeaderPointer => format!("at the header's KdDebuggerDataBlock {va}"),
            Method::KdCopyDataBlock => format!("at {va}, the block {code} names in {nt}"),
            Method::ImageOwnerTag => format!("at {va} by scanning {nt} for its owner tag"),
            Method::PhysicalOwnerTag => format!("at {va} {}", self.source.describe()),
        };
        let form = match &self.source {
            KdbgSource::Decoded {
                kdp_data_block_encoded,
                ..
            } => {
                let from = if l.method == Method::HeaderPointer {
                    format!("{code} in {nt}")
                } else {
                    "that code".into()
                };
                format!(
                    "encoded (KdpDataBlockEncoded at 0x{kdp_data_block_encoded:x} is 1), decoded with the values of the KiWaitNever and KiWaitAlways {from} references"
                )
            }
            _ => "plain".into(),
        };
        let mut s = format!("KDBG found {how}, {form}");
        if let Some(p) = &l.header_pointer_problem {
            s.push_str(&format!("; header KdDebuggerDataBlock not used: {p}"));
        }
        s
    }
}

/// A KdCopyDataBlock-like code window: `cmp byte [flag], 0` at `at`, then `lea r64, [block]`,
/// `mov r64, [never]`, `mov|xor r64, [always]` (all RIP-relative; targets are VAs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Snippet {
    at: u64,
    flag: u64,
    block: u64,
    never: u64,
    always: u64,
}

/// What reading a block at an address gave.
struct Found {
    va: u64,
    block: Vec<u8>,
    source: KdbgSource,
}

/// Locate and parse the block: the header pointer (plain, then encoded), nt's KdCopyDataBlock,
/// owner-tag scans of nt and of physical memory, then a physical scan for nt (module doc).
/// `hint_va` is the header's PsLoadedModuleList.
pub fn find(
    space: &AddressSpace,
    header_ptr: u64,
    hint_va: u64,
    profile: &Profile,
) -> Result<Kdbg> {
    let mut tr = space.translator();
    let mut located = Located {
        header_pointer: header_ptr,
        ..Located::default()
    };
    let mut why = Vec::new();
    let mut nts: Option<Vec<NtImage>> = None;
    let mut nt_why = Vec::new();
    let mut candidates = |tr: &mut Translator, nt_why: &mut Vec<String>| -> Vec<NtImage> {
        nts.get_or_insert_with(|| nt_candidates(tr, header_ptr, hint_va, profile, nt_why))
            .clone()
    };

    // 1. The header's pointer.
    let problem = if header_ptr == 0 {
        "it is 0".to_string()
    } else {
        match tr.read_vec(header_ptr, 0x18) {
            Err(e) => format!("0x{header_ptr:x} is unreadable: {}", e.reason),
            Ok(head) => {
                let attempt = if size_of(&head).is_some() {
                    plain_block(&mut tr, header_ptr).map(|block| {
                        (
                            Found {
                                va: header_ptr,
                                block,
                                source: KdbgSource::HeaderPointer,
                            },
                            None,
                            None,
                        )
                    })
                } else {
                    let nts = candidates(&mut tr, &mut nt_why);
                    decode_at_pointer(&mut tr, &nts, header_ptr)
                        .map(|(f, nt, at)| (f, Some(nt), Some(at)))
                };
                match attempt {
                    Ok((found, nt, at)) => {
                        located.nt_image = nt;
                        located.kd_copy_data_block = at;
                        return Ok(finish(&mut tr, found, located, profile));
                    }
                    Err(reason) => format!("0x{header_ptr:x}: {reason}"),
                }
            }
        }
    };
    why.push(format!("header KdDebuggerDataBlock: {problem}"));
    located.header_pointer_problem = Some(problem);

    // 2. nt's image: the block KdCopyDataBlock names, else its owner tag.
    let nts = candidates(&mut tr, &mut nt_why);
    why.append(&mut nt_why);
    for nt in nts.iter() {
        match from_image(&mut tr, nt, true) {
            Ok((found, method, at)) => {
                located.method = method;
                located.nt_image = Some(nt.clone());
                located.kd_copy_data_block = at;
                return Ok(finish(&mut tr, found, located, profile));
            }
            Err(reason) => why.push(reason),
        }
    }

    // 3. Physical memory, by owner tag.
    if let Some((pa, block)) = scan_physical(space) {
        located.method = Method::PhysicalOwnerTag;
        return Ok(parse(
            &mut tr,
            None,
            KdbgSource::PhysicalScan { pa },
            located,
            block,
            profile,
        ));
    }
    why.push("no \"KDBG\" owner tag found in physical memory".into());

    // 4. Physical memory, for PE images holding KdCopyDataBlock (an encoded block, no pointer).
    let tried: Vec<u64> = nts.iter().map(|n| n.base).collect();
    let images = pe_images_in_physical(space, &tried);
    let mut budget = MAX_PE_SCAN_BYTES;
    let mut searched = 0usize;
    for nt in images.iter().take(MAX_PE_IMAGES) {
        if nt.size > budget {
            continue;
        }
        budget -= nt.size;
        searched += 1;
        if let Ok((found, method, at)) = from_image(&mut tr, nt, false) {
            located.method = method;
            located.nt_image = Some(nt.clone());
            located.kd_copy_data_block = at;
            return Ok(finish(&mut tr, found, located, profile));
        }
    }
    why.push(format!(
        "no KdCopyDataBlock code naming a block in the {searched} other x64 PE image(s) found in physical memory"
    ));
    Err(Error::format(
        0x80,
        format!("kernel debugger data block not found: {}", why.join("; ")),
    ))
}

fn finish(tr: &mut Translator, f: Found, located: Located, profile: &Profile) -> Kdbg {
    parse(tr, Some(f.va), f.source, located, f.block, profile)
}

fn size_of(head: &[u8]) -> Option<u32> {
    (head.get(0x10..0x14)? == OWNER_TAG)
        .then(|| head.u32_at(0x14))
        .flatten()
        .filter(|s| (MIN_SIZE..=MAX_SIZE).contains(s))
}

/// The plain block at `va` (owner tag and a sane Header.Size), read whole.
fn plain_block(tr: &mut Translator, va: u64) -> std::result::Result<Vec<u8>, String> {
    let head = tr.read_vec(va, 0x18).map_err(|e| e.reason)?;
    let size = size_of(&head).ok_or("no \"KDBG\" owner tag with a sane Header.Size")?;
    tr.read_vec(va, size as usize)
        .map_err(|e| format!("the 0x{size:x}-byte block is unreadable: {}", e.reason))
}

/// The header's pointer names an encoded block: decode it with the keys of the KdCopyDataBlock
/// code (in one of the nt candidates) whose `lea` names the same address.
fn decode_at_pointer(
    tr: &mut Translator,
    nts: &[NtImage],
    va: u64,
) -> std::result::Result<(Found, NtImage, u64), String> {
    if nts.is_empty() {
        return Err(
            "no \"KDBG\" owner tag, and no kernel image found to take decoding keys from".into(),
        );
    }
    let mut first_err = None;
    for nt in nts {
        let got = each_snippet(tr, nt.base, nt.size, |tr, s| {
            if s.block != va {
                return None;
            }
            match decode_block(tr, va, s) {
                Ok(f) => Some(Ok((f, s.at))),
                Err(e) => Some(Err(e)),
            }
        });
        match got {
            Some(Ok((f, at))) => return Ok((f, nt.clone(), at)),
            Some(Err(e)) => {
                first_err.get_or_insert(e);
            }
            None => {}
        }
    }
    Err(first_err.unwrap_or_else(|| {
        format!(
            "no \"KDBG\" owner tag, and no KdCopyDataBlock code naming it in {}",
            nts.iter()
                .map(|n| format!("the image at 0x{:x}", n.base))
                .collect::<Vec<_>>()
                .join(" or ")
        )
    }))
}

/// The block KdCopyDataBlock's `lea` names in nt (plain, or decoded when the flag is 1), else
/// (with `tag_scan`) an 8-aligned owner tag whose KernBase is nt's base.
fn from_image(
    tr: &mut Translator,
    nt: &NtImage,
    tag_scan: bool,
) -> std::result::Result<(Found, Method, Option<u64>), String> {
    let (lo, hi) = (nt.base, nt.base.saturating_add(nt.size));
    let inside = |va: u64| lo <= va && va < hi;
    let mut first_err: Option<String> = None;
    let mut snippets = 0usize;
    let got = each_snippet(tr, nt.base, nt.size, |tr, s| {
        // The code and the variables it names all live in nt; the block is 8-aligned.
        if !(inside(s.flag) && inside(s.block) && inside(s.never) && inside(s.always))
            || s.block % 8 != 0
        {
            return None;
        }
        snippets += 1;
        if let Ok(block) = plain_block(tr, s.block) {
            let found = Found {
                va: s.block,
                block,
                source: KdbgSource::ImageScan,
            };
            return Some((found, s.at));
        }
        match decode_block(tr, s.block, s) {
            Ok(found) => Some((found, s.at)),
            Err(e) => {
                first_err.get_or_insert(format!("KdCopyDataBlock at 0x{:x}: {e}", s.at));
                None
            }
        }
    });
    if let Some((found, at)) = got {
        return Ok((found, Method::KdCopyDataBlock, Some(at)));
    }
    if tag_scan {
        if let Some((va, block)) = scan_image(tr, nt.base, nt.size) {
            let found = Found {
                va,
                block,
                source: KdbgSource::ImageScan,
            };
            return Ok((found, Method::ImageOwnerTag, None));
        }
    }
    let code = match first_err {
        Some(e) => e,
        None if snippets == 0 => "no KdCopyDataBlock code naming a block in it".into(),
        None => {
            format!("{snippets} KdCopyDataBlock-like code window(s), none naming a readable block")
        }
    };
    Err(format!(
        "nt at 0x{:x} (found by {}): {code}{}",
        nt.base,
        nt.found_by,
        if tag_scan {
            "; no \"KDBG\" owner tag in the image"
        } else {
            ""
        }
    ))
}

/// Where nt's image is, without KDBG: the first entry of the header's PsLoadedModuleList, then
/// the MZ/PE image below the header's KdDebuggerDataBlock and below its PsLoadedModuleList.
fn nt_candidates(
    tr: &mut Translator,
    header_ptr: u64,
    list_head: u64,
    profile: &Profile,
    why: &mut Vec<String>,
) -> Vec<NtImage> {
    let mut out: Vec<NtImage> = Vec::new();
    match nt_from_module_list(tr, list_head, profile) {
        Ok(nt) => out.push(nt),
        Err(e) => why.push(format!("nt from the header's PsLoadedModuleList: {e}")),
    }
    for (anchor, what) in [
        (header_ptr, "KdDebuggerDataBlock"),
        (list_head, "PsLoadedModuleList"),
    ] {
        if let Some(base) = image_base_below(tr, anchor) {
            if out.iter().all(|n| n.base != base) {
                let size = size_of_image(tr, base);
                out.push(NtImage {
                    base,
                    size,
                    found_by: format!("walking down from the header's {what} to an MZ/PE header"),
                });
            }
        }
    }
    if out.is_empty() {
        why.push("no kernel image found below the header's pointers".into());
    }
    out
}

fn nt_from_module_list(
    tr: &mut Translator,
    head: u64,
    profile: &Profile,
) -> std::result::Result<NtImage, String> {
    if head == 0 {
        return Err("it is 0".into());
    }
    let field = |name: &str| {
        profile
            .ldr(name)
            .ok_or_else(|| format!("profile {} lacks ldr_data_table_entry.{name}", profile.name))
    };
    let (links, dll_base, size_of) = (
        field("InLoadOrderLinks")?,
        field("DllBase")?,
        field("SizeOfImage")?,
    );
    let first = tr.read_u64(head).map_err(|e| e.reason)?;
    if first == head {
        return Err("the list is empty".into());
    }
    let entry = first.wrapping_sub(links);
    let base = tr
        .read_u64(entry.wrapping_add(dll_base))
        .map_err(|e| format!("first entry 0x{entry:x}: {}", e.reason))?;
    let size = tr
        .read_u32(entry.wrapping_add(size_of))
        .map_err(|e| format!("first entry 0x{entry:x}: {}", e.reason))?;
    if base & (PAGE_SIZE - 1) != 0 || base >> 47 != 0x1FFFF || pe_size(tr, base).is_none() {
        return Err(format!(
            "first entry's DllBase 0x{base:x} is not a kernel-space MZ/PE image"
        ));
    }
    let size = match u64::from(size) {
        s if (PAGE_SIZE..=MAX_IMAGE_SCAN).contains(&s) => s,
        _ => size_of_image(tr, base),
    };
    Ok(NtImage {
        base,
        size,
        found_by: "the first entry of the header's PsLoadedModuleList".into(),
    })
}

/// SizeOfImage from an "MZ" / "PE\0\0" header at `base`, if there is one.
fn pe_size(tr: &mut Translator, base: u64) -> Option<u64> {
    let h = tr.read_vec(base, 0x40).ok()?;
    if &h[..2] != b"MZ" {
        return None;
    }
    let lfanew = u64::from(h.u32_at(0x3C)?);
    if lfanew >= PAGE_SIZE || tr.read_u32(base.checked_add(lfanew)?).ok()? != IMAGE_NT_SIGNATURE {
        return None;
    }
    Some(u64::from(
        tr.read_u32(base.checked_add(lfanew + 0x50)?).unwrap_or(0),
    ))
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
                if lfanew < PAGE_SIZE && tr.read_u32(page + lfanew).ok() == Some(IMAGE_NT_SIGNATURE)
                {
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
fn scan_image(tr: &mut Translator, base: u64, size: u64) -> Option<(u64, Vec<u8>)> {
    let size = size.clamp(PAGE_SIZE, MAX_IMAGE_SCAN);
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

/// x64 PE images in physical memory whose OptionalHeader.ImageBase is a kernel address that maps
/// back onto the header's page (the loader writes the relocated base there), largest first;
/// bases in `skip` were tried already.
fn pe_images_in_physical(space: &AddressSpace, skip: &[u64]) -> Vec<NtImage> {
    let runs = space.phys.present_runs();
    let mut found: Vec<NtImage> = runs
        .par_iter()
        .flat_map_iter(|r| r.base_page..r.base_page.saturating_add(r.page_count))
        .filter_map(|pfn| {
            let page = space.phys.page(pfn).ok()?;
            if page.get(..2)? != b"MZ" {
                return None;
            }
            let nt = page.u32_at(0x3C)? as usize;
            let ok = page.u32_at(nt)? == IMAGE_NT_SIGNATURE
                && page.u16_at(nt.checked_add(4)?)? == 0x8664
                && page.u16_at(nt.checked_add(0x18)?)? == 0x20B;
            let base = page.u64_at(nt.checked_add(0x30)?)?;
            let size = u64::from(page.u32_at(nt.checked_add(0x50)?)?);
            if !ok
                || base >> 47 != 0x1FFFF
                || base & (PAGE_SIZE - 1) != 0
                || !(PAGE_SIZE..=MAX_IMAGE_SCAN).contains(&size)
                || skip.contains(&base)
            {
                return None;
            }
            let pa = pfn.checked_mul(PAGE_SIZE)?;
            (space.translate(base).ok()?.pa == pa).then(|| NtImage {
                base,
                size,
                found_by: format!(
                    "scanning physical memory for x64 PE images (header at physical 0x{pa:x})"
                ),
            })
        })
        .collect();
    found.sort_by(|a, b| b.size.cmp(&a.size).then(a.base.cmp(&b.base)));
    found.dedup_by_key(|n| n.base);
    found
}

/// Windows 8+ encoding (§4): plain = bswap(rol(w ^ N, N & 0x3F) ^ A) ^ W.
pub fn decode_word(w: u64, never: u64, always: u64, encoded_flag_va: u64) -> u64 {
    ((w ^ never).rotate_left((never & 0x3F) as u32) ^ encoded_flag_va).swap_bytes() ^ always
}

/// The inverse of [`decode_word`] (used by tests and fuzz oracles).
pub fn encode_word(plain: u64, never: u64, always: u64, encoded_flag_va: u64) -> u64 {
    ((plain ^ always).swap_bytes() ^ encoded_flag_va).rotate_right((never & 0x3F) as u32) ^ never
}

/// Each KdCopyDataBlock-like snippet in the image at `base`, in address order, passed to `f`
/// until it returns Some. Pages are read two at a time so a snippet crossing a page is seen
/// whole; absent pages are skipped. Bounded by [`MAX_CMP_HITS`] (each window
/// handed on costs `f` at most a few reads).
fn each_snippet<T>(
    tr: &mut Translator,
    base: u64,
    size: u64,
    mut f: impl FnMut(&mut Translator, &Snippet) -> Option<T>,
) -> Option<T> {
    let size = size.min(MAX_IMAGE_SCAN);
    let page = PAGE_SIZE as usize;
    let mut chunk = vec![0u8; 2 * page];
    let mut hits = 0usize;
    let mut p = 0;
    while p < size {
        let va = base.checked_add(p)?;
        p += PAGE_SIZE;
        if tr.read(va, &mut chunk[..page]).is_err() {
            continue;
        }
        let next_ok = va
            .checked_add(PAGE_SIZE)
            .is_some_and(|n| tr.read(n, &mut chunk[page..]).is_ok());
        if !next_ok {
            chunk[page..].fill(0);
        }
        for hit in memmem::find_iter(&chunk[..page], &[0x80, 0x3D]) {
            hits += 1;
            if hits > MAX_CMP_HITS {
                return None;
            }
            let Some(s) = snippet_keys(&chunk[hit..], va.wrapping_add(hit as u64)) else {
                continue;
            };
            if let Some(t) = f(tr, &s) {
                return Some(t);
            }
        }
    }
    None
}

/// The operands of a code window starting at a `80 3D rel32 00` instruction located at `at`:
/// `cmp byte [KdpDataBlockEncoded], 0`, then the first `lea r64, [KdDebuggerDataBlock]`, the
/// first `mov r64, [KiWaitNever]` and the next `mov|xor r64, [KiWaitAlways]`, all RIP-relative
/// (the pattern volatility2 looks for).
fn snippet_keys(code: &[u8], at: u64) -> Option<Snippet> {
    let rip = |insn_end: usize, rel: i32| {
        at.wrapping_add(insn_end as u64)
            .wrapping_add(rel as i64 as u64)
    };
    if code.get(6) != Some(&0) {
        return None;
    }
    let flag = rip(7, code.u32_at(2)? as i32);
    let (mut lea, mut never, mut always) = (None, None, None);
    let window = code.len().min(SNIPPET_WINDOW);
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
            if let (Some(block), Some(never), Some(always)) = (lea, never, always) {
                return Some(Snippet {
                    at,
                    flag,
                    block,
                    never,
                    always,
                });
            }
            i += 7;
            continue;
        }
        i += 1;
    }
    None
}

/// Decode the block at `va` with the snippet's keys, if its KdpDataBlockEncoded byte is 1.
fn decode_block(tr: &mut Translator, va: u64, s: &Snippet) -> std::result::Result<Found, String> {
    let flag = tr.read_vec(s.flag, 1).map_err(|e| {
        format!(
            "KdpDataBlockEncoded (0x{:x}) is unreadable: {}",
            s.flag, e.reason
        )
    })?[0];
    if flag != 1 {
        return Err(format!(
            "no \"KDBG\" owner tag, and KdpDataBlockEncoded (0x{:x}) is {flag}, not 1",
            s.flag
        ));
    }
    let never = tr
        .read_u64(s.never)
        .map_err(|e| format!("KiWaitNever (0x{:x}) is unreadable: {}", s.never, e.reason))?;
    let always = tr.read_u64(s.always).map_err(|e| {
        format!(
            "KiWaitAlways (0x{:x}) is unreadable: {}",
            s.always, e.reason
        )
    })?;
    let decode = |raw: &[u8]| -> Vec<u8> {
        raw.chunks_exact(8)
            .flat_map(|c| {
                decode_word(c.u64_at(0).unwrap_or(0), never, always, s.flag).to_le_bytes()
            })
            .collect()
    };
    let raw = tr.read_vec(va, 0x18).map_err(|e| e.reason)?;
    let head = decode(&raw);
    let size = size_of(&head).ok_or_else(|| {
        format!(
            "decoded block has no \"KDBG\" owner tag with a sane Header.Size: wrong keys (KiWaitNever 0x{:x} at 0x{:x}, KiWaitAlways at 0x{:x}) or not a KDBG",
            never, s.never, s.always
        )
    })?;
    let raw = tr.read_vec(va, (size as usize) & !7).map_err(|e| {
        format!(
            "the 0x{size:x}-byte encoded block is unreadable: {}",
            e.reason
        )
    })?;
    Ok(Found {
        va,
        block: decode(&raw),
        source: KdbgSource::Decoded {
            kdp_data_block_encoded: s.flag,
            ki_wait_never: never,
            ki_wait_always: always,
        },
    })
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
    located: Located,
    block: Vec<u8>,
    profile: &Profile,
) -> Kdbg {
    let size = block.u32_at(0x14).unwrap_or(0);
    let mut k = Kdbg {
        va,
        source,
        located,
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
