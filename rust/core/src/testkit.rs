//! Tiny but valid x64 kernel crash dumps, built in memory with no dependencies, together with
//! the facts a reader must recover from them (for tests, fuzz seeds and oracles).
//!
//! Layouts follow shared/specs/dump-format.md and are written here from the spec, not from the
//! reader's profiles, so a wrong profile or parser shows up as a failing test:
//! DUMP_HEADER64 (§1), full / bitmap / RDMP page layouts (§2a-c), KDDEBUGGER_DATA64 (§3), the
//! Windows 8+ encoding of it (§4), 4-level paging with 4 KiB, 2 MiB and 1 GiB pages (§5) and the
//! KLDR_DATA_TABLE_ENTRY list with UNICODE_STRING names (§6).
//!
//! Physical memory (every stored page is listed in [`Facts::stored_pfns`]):
//!
//! | PFN   | holds                                                                     |
//! |-------|---------------------------------------------------------------------------|
//! | 1     | PML4 (DTB), self-map entry 0x1ED                                          |
//! | 2     | PDPT of PML4 slot 0x1F0 (entry 1 = 1 GiB page at PA 0, PAT bit set)       |
//! | 3     | PD (entry 1 = 2 MiB page at PA 0x200000, PAT bit set)                     |
//! | 4     | PT of the first 2 MiB of the kernel region                                |
//! | 5,6,7 | "nt": MZ/PE header, .text (KdCopyDataBlock snippet), .data (KDBG, globals) |
//! | 8     | pool page: the two KLDR_DATA_TABLE_ENTRYs and their name strings          |
//! | 0x200, 0x201 | "testdrv.sys", mapped by the 2 MiB page                            |
//!
//! PFN 0x40 is mapped (at [`NT_MISSING`]) but not stored; PFN 0x50 would be a page table (for
//! [`PT_MISSING_VA`]) and is not stored either.

use crate::kernel::kdbg::encode_word;

pub const PAGE: u64 = 0x1000;

// ---- virtual layout -------------------------------------------------------------------------
/// Start of the kernel region: PML4 slot 0x1F0, PDPT slot 0, PD slot 0 (one page table).
pub const KERNEL_REGION: u64 = 0xFFFF_F800_0000_0000;
/// nt's image base (4 KiB pages).
pub const KERN_BASE: u64 = KERNEL_REGION + 0x1_0000;
pub const NT_TEXT: u64 = KERN_BASE + 0x1000;
pub const NT_DATA: u64 = KERN_BASE + 0x2000;
/// nt page whose PTE is a non-present (paged-out style) entry.
pub const NT_HOLE: u64 = KERN_BASE + 0x3000;
/// nt page whose PTE is valid but names PFN 0x40, which the dump does not store.
pub const NT_MISSING: u64 = KERN_BASE + 0x4000;
/// SizeOfImage of nt (header, .text, .data, hole, missing).
pub const NT_SIZE: u64 = 0x5000;
/// Pool page with the loader entries.
pub const POOL_VA: u64 = KERNEL_REGION + 0x8_0000;
/// Transition PTE (bit 11, not present) naming the pool page's PFN.
pub const TRANSITION_VA: u64 = KERNEL_REGION + 0x8_1000;
/// Prototype PTE (bits 10 and 11, not present): not readable.
pub const PROTOTYPE_VA: u64 = KERNEL_REGION + 0x8_2000;
/// The driver image, mapped by a 2 MiB page (PD slot 1) at PA 0x200000.
pub const DRIVER_BASE: u64 = KERNEL_REGION + 0x20_0000;
pub const DRIVER_SIZE: u64 = 0x2000;
/// PD slot 2: PDE not present.
pub const PDE_NOT_PRESENT_VA: u64 = KERNEL_REGION + 0x40_0000;
/// PD slot 3: PDE present, its page table (PFN 0x50) is not in the dump.
pub const PT_MISSING_VA: u64 = KERNEL_REGION + 0x60_0000;
/// PDPT slot 1: a 1 GiB page mapping PA 0..1 GiB.
pub const HUGE_VA: u64 = KERNEL_REGION + 0x4000_0000;
/// PDPT slot 2: PDPTE not present.
pub const PDPTE_NOT_PRESENT_VA: u64 = KERNEL_REGION + 0x8000_0000;
/// PML4 slot 0x1F1: not present.
pub const PML4E_NOT_PRESENT_VA: u64 = 0xFFFF_F880_0000_0000;
/// Not canonical (bit 47 set, bits 48..63 clear).
pub const NON_CANONICAL_VA: u64 = 0x0000_8000_0000_0000;
/// PML4 self-map slot (Windows 7 uses 0x1ED): the VA whose walk ends at the PML4 itself.
pub const SELF_MAP_SLOT: u64 = 0x1ED;
pub const PML4_SELF_VA: u64 = 0xFFFF_0000_0000_0000
    | (SELF_MAP_SLOT << 39)
    | (SELF_MAP_SLOT << 30)
    | (SELF_MAP_SLOT << 21)
    | (SELF_MAP_SLOT << 12);

// ---- physical layout ------------------------------------------------------------------------
pub const PFN_PML4: u64 = 1;
pub const PFN_PDPT: u64 = 2;
pub const PFN_PD: u64 = 3;
pub const PFN_PT: u64 = 4;
pub const PFN_NT_HEADER: u64 = 5;
pub const PFN_NT_TEXT: u64 = 6;
pub const PFN_NT_DATA: u64 = 7;
pub const PFN_POOL: u64 = 8;
pub const PFN_DRIVER: u64 = 0x200;
pub const PFN_MISSING: u64 = 0x40;
pub const PFN_PT_MISSING: u64 = 0x50;
pub const STORED_PFNS: [u64; 10] = [1, 2, 3, 4, 5, 6, 7, 8, 0x200, 0x201];

// ---- nt .data layout (offsets in the data page) ---------------------------------------------
pub const DATA_PS_LOADED_MODULE_LIST: u64 = 0x000;
pub const DATA_PS_ACTIVE_PROCESS_HEAD: u64 = 0x010;
pub const DATA_KI_WAIT_NEVER: u64 = 0x020;
pub const DATA_KI_WAIT_ALWAYS: u64 = 0x028;
pub const DATA_KDP_DATA_BLOCK_ENCODED: u64 = 0x030;
pub const DATA_MM_PFN_DATABASE: u64 = 0x038;
pub const DATA_CM_NT_CSD_VERSION: u64 = 0x040;
pub const DATA_KI_PROCESSOR_BLOCK: u64 = 0x048;
pub const DATA_MM_NUMBER_OF_PHYSICAL_PAGES: u64 = 0x050;
pub const DATA_NT_BUILD_LAB: u64 = 0x060;
pub const DATA_KDBG_LIST_HEAD: u64 = 0x0F0;
pub const DATA_KDBG: u64 = 0x100;
/// Offset of the KdCopyDataBlock snippet in .text.
pub const TEXT_KD_COPY_DATA_BLOCK: u64 = 0x200;
/// Offsets of the two loader entries in the pool page.
pub const POOL_ENTRIES: [u64; 2] = [0x000, 0x100];

pub const KI_WAIT_NEVER: u64 = 0x1234_5678_9ABC_DE2B;
pub const KI_WAIT_ALWAYS: u64 = 0x0F1E_2D3C_4B5A_6978;
pub const MM_PFN_DATABASE: u64 = 0xFFFF_FA80_0000_0000;
pub const CM_NT_CSD_VERSION: u32 = 0x100;
pub const OFFSET_PRCB_CONTEXT: u16 = 0x4BD8;
pub const PTE_BASE: u64 = 0xFFFF_F680_0000_0000;

// ---- header / container constants (spec §1, §2) --------------------------------------------
pub const HDR_SIGNATURE: usize = 0x000;
pub const HDR_VALID_DUMP: usize = 0x004;
pub const HDR_MAJOR: usize = 0x008;
pub const HDR_MINOR: usize = 0x00C;
pub const HDR_DTB: usize = 0x010;
pub const HDR_PFN_DATABASE: usize = 0x018;
pub const HDR_PS_LOADED_MODULE_LIST: usize = 0x020;
pub const HDR_PS_ACTIVE_PROCESS_HEAD: usize = 0x028;
pub const HDR_MACHINE: usize = 0x030;
pub const HDR_NUMBER_PROCESSORS: usize = 0x034;
pub const HDR_BUGCHECK_CODE: usize = 0x038;
pub const HDR_BUGCHECK_PARAMS: usize = 0x040;
pub const HDR_KDBG: usize = 0x080;
pub const HDR_RUNS: usize = 0x088;
pub const HDR_NUMBER_OF_PAGES: usize = 0x090;
pub const HDR_RUN0: usize = 0x098;
pub const HDR_CONTEXT: usize = 0x348;
pub const HDR_EXCEPTION: usize = 0xF00;
pub const HDR_DUMP_TYPE: usize = 0xF98;
pub const HDR_REQUIRED_DUMP_SPACE: usize = 0xFA0;
pub const HDR_SYSTEM_TIME: usize = 0xFA8;
pub const HDR_COMMENT: usize = 0xFB0;
pub const HDR_SYSTEM_UP_TIME: usize = 0x1030;
pub const HDR_PRODUCT_TYPE: usize = 0x1040;
pub const HDR_SUITE_MASK: usize = 0x1044;
pub const HDR_KD_SECONDARY_VERSION: usize = 0x104D;
pub const HEADER_SIZE: usize = 0x2000;
/// BMP_HEADER64 / RDMP_HEADER64 start.
pub const SUB_HEADER: usize = 0x2000;
pub const BMP_FIRST_PAGE: usize = 0x2020;
pub const BMP_TOTAL_PRESENT: usize = 0x2028;
pub const BMP_BITS: usize = 0x2030;
pub const BMP_BITMAP: usize = 0x2038;
pub const RDMP_METADATA_SIZE: usize = 0x2010;
pub const RDMP_FIRST_PAGE: usize = 0x2018;
pub const RDMP_NUMBER_OF_RANGES: usize = 0x2020;
pub const RDMP_TOTAL_PAGES: usize = 0x2028;
pub const RDMP_RANGES: usize = 0x2030;
/// FirstPage / FirstPageOffset used by the bitmap and RDMP variants.
pub const SUB_FIRST_PAGE: u64 = 0x3000;

const PRESENT_RW: u64 = 0x63; // present, write, accessed, dirty
const LARGE: u64 = 0x80;
const PAT_LARGE: u64 = 1 << 12;
const NX: u64 = 1 << 63;
const TRANSITION: u64 = 1 << 11;
const PROTOTYPE: u64 = 1 << 10;

/// How the pages are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// DumpType 1: runs in the header, pages from 0x2000.
    Full,
    /// DumpType 5: "SDMP" bitmap header at 0x2000, pages from FirstPage.
    Bitmap,
    /// DumpType 0xA: "RDMP" header at 0x2000, PFN-range list, pages from FirstPageOffset.
    Rdmp,
}

/// The named variants: every layout with a plain KDBG, and a full dump with an encoded one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    Full,
    Bitmap,
    Rdmp,
    /// Full dump, Windows 10 build, KDBG encoded in memory (KdpDataBlockEncoded = 1).
    EncodedKdbg,
}

impl Variant {
    pub const ALL: [Variant; 4] = [
        Variant::Full,
        Variant::Bitmap,
        Variant::Rdmp,
        Variant::EncodedKdbg,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Variant::Full => "full",
            Variant::Bitmap => "bitmap",
            Variant::Rdmp => "rdmp",
            Variant::EncodedKdbg => "encoded_kdbg",
        }
    }

    pub fn options(self) -> Options {
        match self {
            Variant::Full => Options::default(),
            Variant::Bitmap => Options {
                layout: Layout::Bitmap,
                ..Options::default()
            },
            Variant::Rdmp => Options {
                layout: Layout::Rdmp,
                ..Options::default()
            },
            Variant::EncodedKdbg => Options {
                encode_kdbg: true,
                build: 19041,
                kdbg_size: 0x368,
                ..Options::default()
            },
        }
    }
}

/// Everything that can vary between test dumps.
#[derive(Debug, Clone)]
pub struct Options {
    pub layout: Layout,
    /// DumpType written at 0xF98 (default: 1, 5 or 0xA by layout).
    pub dump_type: Option<u32>,
    /// Store the KDBG encoded (Windows 8+ style) and set KdpDataBlockEncoded = 1.
    pub encode_kdbg: bool,
    /// Write the KDBG VA in the header (false: 0, so a reader must scan).
    pub header_kdbg_pointer: bool,
    /// Write PsLoadedModuleList in the header (false: 0).
    pub header_module_list: bool,
    /// NT build number (header MinorVersion).
    pub build: u32,
    /// KDBG Header.Size.
    pub kdbg_size: u32,
    /// Bit count of the bitmap (bitmap layout; must exceed the highest stored PFN).
    pub bitmap_bits: u64,
    /// Header DirectoryTableBase (low 12 bits may carry a PCID).
    pub dtb: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            layout: Layout::Full,
            dump_type: None,
            encode_kdbg: false,
            header_kdbg_pointer: true,
            header_module_list: true,
            build: 7601,
            kdbg_size: 0x340,
            bitmap_bits: 0x2F0,
            dtb: PFN_PML4 * PAGE,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleFact {
    pub name: String,
    pub path: String,
    pub base: u64,
    pub size: u64,
    /// VA of the KLDR_DATA_TABLE_ENTRY.
    pub entry: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TranslationFact {
    pub va: u64,
    pub pa: u64,
    pub page_size: u64,
    pub transition: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodingFact {
    /// VA of nt!KdpDataBlockEncoded.
    pub flag_va: u64,
    /// Values of nt!KiWaitNever / nt!KiWaitAlways.
    pub never: u64,
    pub always: u64,
}

/// What a correct reader reports for the dump.
#[derive(Debug, Clone)]
pub struct Facts {
    pub layout: Layout,
    pub dump_type_raw: u32,
    pub build: u32,
    pub major_version: u32,
    pub dtb: u64,
    pub machine: u32,
    pub number_processors: u32,
    pub bugcheck_code: u32,
    pub bugcheck_parameters: [u64; 4],
    pub header_kdbg_pointer: u64,
    pub header_module_list: u64,
    pub header_pfn_database: u64,
    pub ps_active_process_head: u64,
    pub context_rip: u64,
    pub context_rsp: u64,
    pub exception_code: u32,
    pub exception_address: u64,
    pub system_time: u64,
    pub system_up_time: u64,
    pub product_type: u32,
    pub suite_mask: u32,
    pub kd_secondary_version: u8,
    pub required_dump_space: u64,
    /// The header's physical memory descriptor as written (base page, page count).
    pub descriptor_runs: Vec<(u64, u64)>,
    pub descriptor_pages: u64,
    pub kern_base: u64,
    pub nt_size: u64,
    pub kdbg_va: u64,
    pub kdbg_pa: u64,
    pub kdbg_size: u32,
    /// The plain KDBG block (what a reader should hold after decoding).
    pub kdbg_block: Vec<u8>,
    pub encoding: Option<EncodingFact>,
    /// VA of the PsLoadedModuleList head (also in KDBG +0x48).
    pub ps_loaded_module_list: u64,
    pub modules: Vec<ModuleFact>,
    pub nt_build_lab: String,
    pub mm_pfn_database: u64,
    pub cm_nt_csd_version: u32,
    pub mm_number_of_physical_pages: u64,
    pub offset_prcb_context: u16,
    /// Successful translations, covering 4 KiB, 2 MiB, 1 GiB pages, a transition PTE and the
    /// PML4 self-map.
    pub translations: Vec<TranslationFact>,
    /// VAs whose translation fails, with a fragment of the expected reason.
    pub not_present: Vec<(u64, &'static str)>,
    /// VAs that translate, but whose physical page is not in the dump.
    pub unreadable: Vec<(u64, u64)>,
    /// Addresses and their expected `module+0xoffset`.
    pub symbols: Vec<(u64, String)>,
    pub stored_pfns: Vec<u64>,
    /// File offset of each stored PFN.
    pub page_offsets: Vec<(u64, u64)>,
    /// Bitmap layout: bit count and FirstPage.
    pub bitmap_bits: u64,
    pub first_page: u64,
    /// RDMP layout: MetadataSize.
    pub rdmp_metadata_size: u64,
}

impl Facts {
    pub fn file_offset(&self, pfn: u64) -> Option<u64> {
        self.page_offsets
            .iter()
            .find(|(p, _)| *p == pfn)
            .map(|(_, o)| *o)
    }
    /// File offset of physical address `pa` (its page must be stored).
    pub fn file_offset_of_pa(&self, pa: u64) -> Option<u64> {
        Some(self.file_offset(pa / PAGE)? + pa % PAGE)
    }
}

pub struct TestDump {
    pub bytes: Vec<u8>,
    pub facts: Facts,
}

impl TestDump {
    /// Overwrite bytes at physical address `pa` in the file (the page must be stored).
    pub fn patch_pa(&mut self, pa: u64, data: &[u8]) {
        let off = self
            .facts
            .file_offset_of_pa(pa)
            .expect("patch_pa: page not stored") as usize;
        self.bytes[off..off + data.len()].copy_from_slice(data);
    }
    pub fn patch_pa_u64(&mut self, pa: u64, v: u64) {
        self.patch_pa(pa, &v.to_le_bytes());
    }
    /// Overwrite a header/container field at a file offset.
    pub fn patch(&mut self, off: usize, data: &[u8]) {
        self.bytes[off..off + data.len()].copy_from_slice(data);
    }
    pub fn patch_u32(&mut self, off: usize, v: u32) {
        self.patch(off, &v.to_le_bytes());
    }
    pub fn patch_u64(&mut self, off: usize, v: u64) {
        self.patch(off, &v.to_le_bytes());
    }
}

/// Little-endian writers for tests that build or patch dumps.
pub fn put_u16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}
pub fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}
pub fn put_u64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

/// VA of the nt .data variable at `off`, and its physical address.
pub const fn data_va(off: u64) -> u64 {
    NT_DATA + off
}
pub const fn data_pa(off: u64) -> u64 {
    PFN_NT_DATA * PAGE + off
}
pub const fn pool_pa(off: u64) -> u64 {
    PFN_POOL * PAGE + off
}

pub fn build(variant: Variant) -> TestDump {
    build_with(&variant.options())
}

/// Physical memory under construction: stored pages by PFN.
struct Phys {
    pages: Vec<(u64, Vec<u8>)>,
}

impl Phys {
    fn page(&mut self, pa: u64) -> &mut Vec<u8> {
        let pfn = pa / PAGE;
        let i = self
            .pages
            .iter()
            .position(|(p, _)| *p == pfn)
            .expect("testkit writes only stored pages");
        &mut self.pages[i].1
    }
    fn bytes(&mut self, pa: u64, data: &[u8]) {
        let o = (pa % PAGE) as usize;
        self.page(pa)[o..o + data.len()].copy_from_slice(data);
    }
    fn u16(&mut self, pa: u64, v: u16) {
        self.bytes(pa, &v.to_le_bytes());
    }
    fn u32(&mut self, pa: u64, v: u32) {
        self.bytes(pa, &v.to_le_bytes());
    }
    fn u64(&mut self, pa: u64, v: u64) {
        self.bytes(pa, &v.to_le_bytes());
    }
}

/// A minimal PE image header: "MZ", e_lfanew 0x80, "PE\0\0", AMD64, PE32+ with SizeOfImage.
fn pe_header(p: &mut Phys, pa: u64, image_base: u64, size_of_image: u32) {
    p.bytes(pa, b"MZ");
    p.u32(pa + 0x3C, 0x80);
    p.bytes(pa + 0x80, b"PE\0\0");
    p.u16(pa + 0x84, 0x8664); // Machine
    p.u16(pa + 0x86, 3); // NumberOfSections
    p.u16(pa + 0x94, 0xF0); // SizeOfOptionalHeader
    p.u16(pa + 0x96, 0x22); // Characteristics: executable, large address aware
    p.u16(pa + 0x98, 0x20B); // PE32+ magic
    p.u64(pa + 0x98 + 0x18, image_base);
    p.u32(pa + 0x98 + 0x38, size_of_image); // SizeOfImage (NT headers + 0x50)
}

fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

pub fn build_with(o: &Options) -> TestDump {
    let mut p = Phys {
        pages: STORED_PFNS
            .iter()
            .map(|&pfn| (pfn, vec![0u8; PAGE as usize]))
            .collect(),
    };
    // Fill pages that hold no structure with a recognisable pattern.
    for (pfn, page) in &mut p.pages {
        if *pfn == PFN_DRIVER + 1 {
            for (i, b) in page.iter_mut().enumerate() {
                *b = (i as u8) ^ 0xA5;
            }
        }
    }

    // --- page tables (§5) ---
    let pml4 = PFN_PML4 * PAGE;
    let pdpt = PFN_PDPT * PAGE;
    let pd = PFN_PD * PAGE;
    let pt = PFN_PT * PAGE;
    let slot = |va: u64, shift: u32| (va >> shift) & 0x1FF;
    p.u64(pml4 + slot(KERNEL_REGION, 39) * 8, pdpt | PRESENT_RW);
    p.u64(pml4 + SELF_MAP_SLOT * 8, pml4 | PRESENT_RW | NX);
    p.u64(pdpt + slot(KERNEL_REGION, 30) * 8, pd | PRESENT_RW);
    // 1 GiB page at PA 0; the PAT bit (12) must not leak into the address.
    p.u64(
        pdpt + slot(HUGE_VA, 30) * 8,
        PRESENT_RW | LARGE | PAT_LARGE | NX,
    );
    p.u64(pd + slot(KERNEL_REGION, 21) * 8, pt | PRESENT_RW);
    p.u64(
        pd + slot(DRIVER_BASE, 21) * 8,
        (PFN_DRIVER * PAGE) | PRESENT_RW | LARGE | PAT_LARGE,
    );
    p.u64(
        pd + slot(PT_MISSING_VA, 21) * 8,
        (PFN_PT_MISSING * PAGE) | PRESENT_RW,
    );
    let pte = |va: u64| pt + slot(va, 12) * 8;
    p.u64(pte(KERN_BASE), (PFN_NT_HEADER * PAGE) | 0x21 | NX);
    p.u64(pte(NT_TEXT), (PFN_NT_TEXT * PAGE) | 0x21);
    p.u64(pte(NT_DATA), (PFN_NT_DATA * PAGE) | PRESENT_RW | NX);
    p.u64(pte(NT_HOLE), 0x0000_0123_0000_0080); // paged-out style: not present, no transition
    p.u64(pte(NT_MISSING), (PFN_MISSING * PAGE) | PRESENT_RW | NX);
    p.u64(pte(POOL_VA), (PFN_POOL * PAGE) | PRESENT_RW | NX);
    p.u64(pte(TRANSITION_VA), (PFN_POOL * PAGE) | TRANSITION | 0x60);
    p.u64(
        pte(PROTOTYPE_VA),
        (PFN_POOL * PAGE) | TRANSITION | PROTOTYPE | 0x60,
    );

    // --- nt image ---
    pe_header(&mut p, PFN_NT_HEADER * PAGE, KERN_BASE, NT_SIZE as u32);
    let text = PFN_NT_TEXT * PAGE;
    p.bytes(text, &[0xCC; 0x200]);
    // KdCopyDataBlock (§4): cmp byte [KdpDataBlockEncoded],0; je; lea rdx,[KdDebuggerDataBlock];
    // mov r10,[KiWaitNever]; mov r11,[KiWaitAlways]; all RIP-relative to the instruction end.
    let kdbg_va = data_va(DATA_KDBG);
    let at = NT_TEXT + TEXT_KD_COPY_DATA_BLOCK;
    let rel = |insn_end: u64, target: u64| (target.wrapping_sub(at + insn_end) as i64) as i32;
    let mut code = Vec::new();
    code.extend_from_slice(&[0x80, 0x3D]);
    code.extend_from_slice(&rel(7, data_va(DATA_KDP_DATA_BLOCK_ENCODED)).to_le_bytes());
    code.push(0x00);
    code.extend_from_slice(&[0x74, 0x15]);
    code.extend_from_slice(&[0x48, 0x8D, 0x15]);
    code.extend_from_slice(&rel(16, kdbg_va).to_le_bytes());
    code.extend_from_slice(&[0x4C, 0x8B, 0x15]);
    code.extend_from_slice(&rel(23, data_va(DATA_KI_WAIT_NEVER)).to_le_bytes());
    code.extend_from_slice(&[0x4C, 0x8B, 0x1D]);
    code.extend_from_slice(&rel(30, data_va(DATA_KI_WAIT_ALWAYS)).to_le_bytes());
    code.push(0xC3);
    p.bytes(text + TEXT_KD_COPY_DATA_BLOCK, &code);

    // --- nt .data: list heads, globals, KDBG (§3) ---
    let entry_va = |i: usize| POOL_VA + POOL_ENTRIES[i];
    let head = data_va(DATA_PS_LOADED_MODULE_LIST);
    p.u64(data_pa(DATA_PS_LOADED_MODULE_LIST), entry_va(0));
    p.u64(data_pa(DATA_PS_LOADED_MODULE_LIST) + 8, entry_va(1));
    let aph = data_va(DATA_PS_ACTIVE_PROCESS_HEAD);
    p.u64(data_pa(DATA_PS_ACTIVE_PROCESS_HEAD), aph);
    p.u64(data_pa(DATA_PS_ACTIVE_PROCESS_HEAD) + 8, aph);
    p.u64(data_pa(DATA_KI_WAIT_NEVER), KI_WAIT_NEVER);
    p.u64(data_pa(DATA_KI_WAIT_ALWAYS), KI_WAIT_ALWAYS);
    p.bytes(
        data_pa(DATA_KDP_DATA_BLOCK_ENCODED),
        &[u8::from(o.encode_kdbg)],
    );
    p.u64(data_pa(DATA_MM_PFN_DATABASE), MM_PFN_DATABASE);
    p.u32(data_pa(DATA_CM_NT_CSD_VERSION), CM_NT_CSD_VERSION);
    p.u64(data_pa(DATA_KI_PROCESSOR_BLOCK), 0xFFFF_F800_0001_3180);
    let phys_pages = STORED_PFNS.len() as u64;
    p.u64(data_pa(DATA_MM_NUMBER_OF_PHYSICAL_PAGES), phys_pages);
    let build_lab = format!("{}.24214.amd64fre.testkit.240101-0000", o.build);
    p.bytes(data_pa(DATA_NT_BUILD_LAB), build_lab.as_bytes());
    p.u64(data_pa(DATA_KDBG_LIST_HEAD), kdbg_va);
    p.u64(data_pa(DATA_KDBG_LIST_HEAD) + 8, kdbg_va);

    let size = o.kdbg_size as usize;
    let mut kdbg = vec![0u8; size.max(0x18)];
    let list_head = data_va(DATA_KDBG_LIST_HEAD);
    let mut field = |off: usize, v: &[u8]| {
        if off + v.len() <= kdbg.len() {
            kdbg[off..off + v.len()].copy_from_slice(v);
        }
    };
    field(0x00, &list_head.to_le_bytes());
    field(0x08, &list_head.to_le_bytes());
    field(0x10, b"KDBG");
    field(0x14, &o.kdbg_size.to_le_bytes());
    field(0x18, &KERN_BASE.to_le_bytes());
    field(0x20, &(NT_TEXT + 0x10).to_le_bytes()); // BreakpointWithStatus
    field(0x48, &head.to_le_bytes());
    field(0x50, &aph.to_le_bytes());
    field(0xC0, &data_va(DATA_MM_PFN_DATABASE).to_le_bytes());
    field(
        0xF8,
        &data_va(DATA_MM_NUMBER_OF_PHYSICAL_PAGES).to_le_bytes(),
    );
    field(0x138, &PAGE.to_le_bytes()); // MmPageSize (a value)
    field(0x208, &data_va(DATA_NT_BUILD_LAB).to_le_bytes());
    field(0x218, &data_va(DATA_KI_PROCESSOR_BLOCK).to_le_bytes());
    field(0x268, &data_va(DATA_CM_NT_CSD_VERSION).to_le_bytes());
    field(0x2B4, &8u16.to_le_bytes()); // OffsetPrcbCurrentThread
    field(0x338, &OFFSET_PRCB_CONTEXT.to_le_bytes());
    field(0x360, &PTE_BASE.to_le_bytes()); // present from 1607 (size 0x368)
    let kdbg_block = kdbg[..size.min(kdbg.len())].to_vec();
    let stored_kdbg = if o.encode_kdbg {
        let flag = data_va(DATA_KDP_DATA_BLOCK_ENCODED);
        kdbg.chunks(8)
            .flat_map(|c| {
                let mut w = [0u8; 8];
                w[..c.len()].copy_from_slice(c);
                let plain = u64::from_le_bytes(w);
                encode_word(plain, KI_WAIT_NEVER, KI_WAIT_ALWAYS, flag).to_le_bytes()
            })
            .collect::<Vec<u8>>()
    } else {
        kdbg.clone()
    };
    let room = (PAGE - DATA_KDBG) as usize;
    p.bytes(
        data_pa(DATA_KDBG),
        &stored_kdbg[..stored_kdbg.len().min(room)],
    );

    // --- loaded module list (§6) in the pool page ---
    let modules = vec![
        ModuleFact {
            name: "ntoskrnl.exe".into(),
            path: "\\SystemRoot\\system32\\ntoskrnl.exe".into(),
            base: KERN_BASE,
            size: NT_SIZE,
            entry: entry_va(0),
        },
        ModuleFact {
            name: "testdrv.sys".into(),
            path: "\\SystemRoot\\system32\\drivers\\testdrv.sys".into(),
            base: DRIVER_BASE,
            size: DRIVER_SIZE,
            entry: entry_va(1),
        },
    ];
    let mut strings = 0x400u64;
    for (i, m) in modules.iter().enumerate() {
        let e = pool_pa(POOL_ENTRIES[i]);
        let flink = if i + 1 < modules.len() {
            entry_va(i + 1)
        } else {
            head
        };
        let blink = if i == 0 { head } else { entry_va(i - 1) };
        p.u64(e, flink);
        p.u64(e + 8, blink);
        p.u64(e + 0x30, m.base); // DllBase
        p.u64(e + 0x38, m.base + 0x100); // EntryPoint
        p.u32(e + 0x40, m.size as u32); // SizeOfImage
        for (off, s) in [(0x48, &m.path), (0x58, &m.name)] {
            let units = utf16(s);
            p.u16(e + off, units.len() as u16); // Length (bytes)
            p.u16(e + off + 2, units.len() as u16 + 2); // MaximumLength
            p.u64(e + off + 8, POOL_VA + strings); // Buffer
            p.bytes(pool_pa(strings), &units);
            strings += (units.len() as u64 + 2).next_multiple_of(0x10);
        }
        p.u32(e + 0x68, 0x0904_4000); // Flags
    }

    // --- the driver: MZ header in the 2 MiB page, pattern in its second page ---
    pe_header(&mut p, PFN_DRIVER * PAGE, DRIVER_BASE, DRIVER_SIZE as u32);

    // --- container ---
    let dump_type = o.dump_type.unwrap_or(match o.layout {
        Layout::Full => 1,
        Layout::Bitmap => 5,
        Layout::Rdmp => 0xA,
    });
    let ranges: Vec<(u64, u64)> = vec![(1, 8), (PFN_DRIVER, 2)];
    let first_page = match o.layout {
        Layout::Full => HEADER_SIZE as u64,
        Layout::Bitmap | Layout::Rdmp => SUB_FIRST_PAGE,
    };
    let page_offsets: Vec<(u64, u64)> = STORED_PFNS
        .iter()
        .enumerate()
        .map(|(i, &pfn)| (pfn, first_page + PAGE * i as u64))
        .collect();
    let total_len = first_page as usize + STORED_PFNS.len() * PAGE as usize;
    let mut f = vec![0u8; total_len];
    for chunk in f[..HEADER_SIZE].chunks_mut(4) {
        chunk.copy_from_slice(b"PAGE");
    }
    // Full dumps describe the stored runs; bitmap and RDMP dumps carry the machine's RAM layout.
    let descriptor: Vec<(u64, u64)> = match o.layout {
        Layout::Full => ranges.clone(),
        _ => vec![(1, 0x9F), (0x100, 0x3_FF00)],
    };
    let descriptor_pages: u64 = descriptor.iter().map(|r| r.1).sum();
    let header_kdbg = if o.header_kdbg_pointer { kdbg_va } else { 0 };
    let header_list = if o.header_module_list { head } else { 0 };
    let params = [0x10, 2, 0, DRIVER_BASE + 0x1010];
    let rip = DRIVER_BASE + 0x1010;
    let rsp = 0xFFFF_F880_0311_2F58;
    let system_time = 133_485_408_000_000_000u64; // 2024-01-01T00:00:00Z
    let up_time = 3_600 * 10_000_000u64;
    {
        let h = &mut f;
        h[HDR_SIGNATURE..HDR_SIGNATURE + 4].copy_from_slice(b"PAGE");
        h[HDR_VALID_DUMP..HDR_VALID_DUMP + 4].copy_from_slice(b"DU64");
        put_u32(h, HDR_MAJOR, 0xF);
        put_u32(h, HDR_MINOR, o.build);
        put_u64(h, HDR_DTB, o.dtb);
        put_u64(h, HDR_PFN_DATABASE, data_va(DATA_MM_PFN_DATABASE));
        put_u64(h, HDR_PS_LOADED_MODULE_LIST, header_list);
        put_u64(h, HDR_PS_ACTIVE_PROCESS_HEAD, aph);
        put_u32(h, HDR_MACHINE, 0x8664);
        put_u32(h, HDR_NUMBER_PROCESSORS, 2);
        put_u32(h, HDR_BUGCHECK_CODE, 0xD1);
        put_u32(h, HDR_BUGCHECK_CODE + 4, 0);
        for (i, v) in params.iter().enumerate() {
            put_u64(h, HDR_BUGCHECK_PARAMS + 8 * i, *v);
        }
        put_u64(h, HDR_KDBG, header_kdbg);
        put_u32(h, HDR_RUNS, descriptor.len() as u32);
        put_u32(h, HDR_RUNS + 4, 0);
        put_u64(h, HDR_NUMBER_OF_PAGES, descriptor_pages);
        for (i, (base, count)) in descriptor.iter().enumerate() {
            put_u64(h, HDR_RUN0 + 0x10 * i, *base);
            put_u64(h, HDR_RUN0 + 0x10 * i + 8, *count);
        }
        // CONTEXT: zeroed, with flags, segments, RIP and RSP.
        h[HDR_CONTEXT..HDR_EXCEPTION].fill(0);
        put_u32(h, HDR_CONTEXT + 0x30, 0x10_001F); // ContextFlags (CONTEXT_AMD64 | FULL | ...)
        put_u32(h, HDR_CONTEXT + 0x34, 0x1F80); // MxCsr
        put_u16(h, HDR_CONTEXT + 0x38, 0x10); // SegCs
        put_u32(h, HDR_CONTEXT + 0x44, 0x282); // EFlags
        put_u64(h, HDR_CONTEXT + 0x98, rsp);
        put_u64(h, HDR_CONTEXT + 0xF8, rip);
        put_u32(h, HDR_CONTEXT + 0x118, 0x1F80); // FltSave.MxCsr

        // EXCEPTION_RECORD64
        h[HDR_EXCEPTION..HDR_DUMP_TYPE].fill(0);
        put_u32(h, HDR_EXCEPTION, 0xC000_0005);
        put_u64(h, HDR_EXCEPTION + 0x10, rip);
        put_u32(h, HDR_DUMP_TYPE, dump_type);
        put_u32(h, HDR_DUMP_TYPE + 4, 0);
        put_u64(h, HDR_REQUIRED_DUMP_SPACE, total_len as u64);
        put_u64(h, HDR_SYSTEM_TIME, system_time);
        put_u64(h, HDR_SYSTEM_UP_TIME, up_time);
        h[0x1038..0x1058].fill(0);
        put_u32(h, HDR_PRODUCT_TYPE, 1);
        put_u32(h, HDR_SUITE_MASK, 0x110);
        h[HDR_KD_SECONDARY_VERSION] = 2;
    }
    let mut rdmp_metadata_size = 0;
    match o.layout {
        Layout::Full => {}
        Layout::Bitmap => {
            let bits = o.bitmap_bits;
            assert!(
                bits > PFN_DRIVER + 1 && BMP_BITMAP as u64 + bits.div_ceil(8) <= SUB_FIRST_PAGE,
                "bitmap_bits must cover PFN 0x201 and fit below FirstPage"
            );
            f[SUB_HEADER..SUB_HEADER + 4].copy_from_slice(b"SDMP");
            f[SUB_HEADER + 4..SUB_HEADER + 8].copy_from_slice(b"DUMP");
            put_u64(&mut f, BMP_FIRST_PAGE, SUB_FIRST_PAGE);
            put_u64(&mut f, BMP_TOTAL_PRESENT, STORED_PFNS.len() as u64);
            put_u64(&mut f, BMP_BITS, bits);
            for &pfn in &STORED_PFNS {
                f[BMP_BITMAP + (pfn / 8) as usize] |= 1 << (pfn % 8);
            }
        }
        Layout::Rdmp => {
            // FirstPageOffset = 0x2020 + MetadataSize (kdmp-parser's check, spec §2c).
            rdmp_metadata_size = SUB_FIRST_PAGE - 0x2020;
            put_u32(&mut f, SUB_HEADER, 0x40);
            f[SUB_HEADER + 4..SUB_HEADER + 8].copy_from_slice(b"RDMP");
            f[SUB_HEADER + 8..SUB_HEADER + 12].copy_from_slice(b"DUMP");
            put_u64(&mut f, RDMP_METADATA_SIZE, rdmp_metadata_size);
            put_u64(&mut f, RDMP_FIRST_PAGE, SUB_FIRST_PAGE);
            if dump_type == 0xA {
                put_u32(&mut f, RDMP_NUMBER_OF_RANGES, ranges.len() as u32);
                put_u64(&mut f, RDMP_TOTAL_PAGES, STORED_PFNS.len() as u64);
            }
            for (i, (base, count)) in ranges.iter().enumerate() {
                put_u64(&mut f, RDMP_RANGES + 16 * i, *base);
                put_u64(&mut f, RDMP_RANGES + 16 * i + 8, *count);
            }
        }
    }
    for ((_, off), (_, page)) in page_offsets.iter().zip(&p.pages) {
        f[*off as usize..(*off + PAGE) as usize].copy_from_slice(page);
    }

    let t = |va: u64, pa: u64, page_size: u64, transition: bool| TranslationFact {
        va,
        pa,
        page_size,
        transition,
    };
    let translations = vec![
        t(KERN_BASE, PFN_NT_HEADER * PAGE, PAGE, false),
        t(NT_TEXT + 0x123, PFN_NT_TEXT * PAGE + 0x123, PAGE, false),
        t(kdbg_va, data_pa(DATA_KDBG), PAGE, false),
        t(NT_MISSING + 8, PFN_MISSING * PAGE + 8, PAGE, false),
        t(POOL_VA + 0xFFF, pool_pa(0xFFF), PAGE, false),
        t(TRANSITION_VA + 0x10, pool_pa(0x10), PAGE, true),
        t(DRIVER_BASE, PFN_DRIVER * PAGE, 0x20_0000, false),
        t(
            DRIVER_BASE + 0x1010,
            (PFN_DRIVER + 1) * PAGE + 0x10,
            0x20_0000,
            false,
        ),
        t(
            DRIVER_BASE + 0x1F_FFFF,
            PFN_DRIVER * PAGE + 0x1F_FFFF,
            0x20_0000,
            false,
        ),
        t(HUGE_VA, 0, 0x4000_0000, false),
        t(
            HUGE_VA + data_pa(DATA_KDBG),
            data_pa(DATA_KDBG),
            0x4000_0000,
            false,
        ),
        t(
            HUGE_VA + (PFN_DRIVER + 1) * PAGE + 0x10,
            (PFN_DRIVER + 1) * PAGE + 0x10,
            0x4000_0000,
            false,
        ),
        t(HUGE_VA + 0x3FFF_FFFF, 0x3FFF_FFFF, 0x4000_0000, false),
        t(PML4_SELF_VA + 0x10, pml4 + 0x10, PAGE, false),
    ];
    let not_present = vec![
        (NT_HOLE, "PTE"),
        (PROTOTYPE_VA, "PTE"),
        (PDE_NOT_PRESENT_VA, "PDE"),
        (PT_MISSING_VA + 0x5000, "PT page"),
        (PDPTE_NOT_PRESENT_VA, "PDPTE"),
        (PML4E_NOT_PRESENT_VA, "PML4E"),
        (NON_CANONICAL_VA, "non-canonical"),
    ];
    let unreadable = vec![(NT_MISSING, PFN_MISSING * PAGE)];
    let symbols = vec![
        (KERN_BASE, "nt+0x0".to_string()),
        (NT_TEXT + 0x234, "nt+0x1234".to_string()),
        (KERN_BASE + NT_SIZE - 1, "nt+0x4fff".to_string()),
        (DRIVER_BASE + 0x1010, "testdrv+0x1010".to_string()),
    ];
    let facts = Facts {
        layout: o.layout,
        dump_type_raw: dump_type,
        build: o.build,
        major_version: 0xF,
        dtb: o.dtb,
        machine: 0x8664,
        number_processors: 2,
        bugcheck_code: 0xD1,
        bugcheck_parameters: params,
        header_kdbg_pointer: header_kdbg,
        header_module_list: header_list,
        header_pfn_database: data_va(DATA_MM_PFN_DATABASE),
        ps_active_process_head: aph,
        context_rip: rip,
        context_rsp: rsp,
        exception_code: 0xC000_0005,
        exception_address: rip,
        system_time,
        system_up_time: up_time,
        product_type: 1,
        suite_mask: 0x110,
        kd_secondary_version: 2,
        required_dump_space: total_len as u64,
        descriptor_runs: descriptor,
        descriptor_pages,
        kern_base: KERN_BASE,
        nt_size: NT_SIZE,
        kdbg_va,
        kdbg_pa: data_pa(DATA_KDBG),
        kdbg_size: o.kdbg_size,
        kdbg_block,
        encoding: o.encode_kdbg.then_some(EncodingFact {
            flag_va: data_va(DATA_KDP_DATA_BLOCK_ENCODED),
            never: KI_WAIT_NEVER,
            always: KI_WAIT_ALWAYS,
        }),
        ps_loaded_module_list: head,
        modules,
        nt_build_lab: build_lab,
        mm_pfn_database: MM_PFN_DATABASE,
        cm_nt_csd_version: CM_NT_CSD_VERSION,
        mm_number_of_physical_pages: phys_pages,
        offset_prcb_context: OFFSET_PRCB_CONTEXT,
        translations,
        not_present,
        unreadable,
        symbols,
        stored_pfns: STORED_PFNS.to_vec(),
        page_offsets,
        bitmap_bits: if o.layout == Layout::Bitmap {
            o.bitmap_bits
        } else {
            0
        },
        first_page,
        rdmp_metadata_size,
    };
    TestDump { bytes: f, facts }
}

/// A bitmap dump (DumpType 5) holding only a bitmap and its pages: no page tables or kernel
/// data. Bit n of `bitmap` (LSB first) stores PFN n; each stored page begins with its PFN
/// (u64) and its rank (u64). Returns the bytes and FirstPage.
pub fn bitmap_container(bitmap: &[u8], bits: u64) -> (Vec<u8>, u64) {
    assert!(bits.div_ceil(8) as usize <= bitmap.len());
    let first_page = (BMP_BITMAP as u64 + bits.div_ceil(8)).next_multiple_of(PAGE);
    let set: Vec<u64> = (0..bits)
        .filter(|&n| bitmap[(n / 8) as usize] & (1 << (n % 8)) != 0)
        .collect();
    let mut f = vec![0u8; (first_page + PAGE * set.len() as u64) as usize];
    for chunk in f[..HEADER_SIZE].chunks_mut(4) {
        chunk.copy_from_slice(b"PAGE");
    }
    f[4..8].copy_from_slice(b"DU64");
    put_u32(&mut f, HDR_MAJOR, 0xF);
    put_u32(&mut f, HDR_MINOR, 7601);
    put_u64(&mut f, HDR_DTB, PAGE);
    put_u32(&mut f, HDR_MACHINE, 0x8664);
    put_u64(&mut f, HDR_KDBG, 0);
    put_u32(&mut f, HDR_DUMP_TYPE, 5);
    f[SUB_HEADER..SUB_HEADER + 8].copy_from_slice(b"SDMPDUMP");
    f[SUB_HEADER + 8..SUB_HEADER + 0x20].fill(0);
    put_u64(&mut f, BMP_FIRST_PAGE, first_page);
    put_u64(&mut f, BMP_TOTAL_PRESENT, set.len() as u64);
    put_u64(&mut f, BMP_BITS, bits);
    let n = bits.div_ceil(8) as usize;
    f[BMP_BITMAP..BMP_BITMAP + n].copy_from_slice(&bitmap[..n]);
    for (rank, pfn) in set.iter().enumerate() {
        let off = (first_page + PAGE * rank as u64) as usize;
        put_u64(&mut f, off, *pfn);
        put_u64(&mut f, off + 8, rank as u64);
    }
    (f, first_page)
}

/// The first 0x1000 bytes of a 32-bit kernel dump ("PAGE" "DUMP" header).
pub fn x86_pagedump() -> Vec<u8> {
    let mut f = vec![0u8; 0x1000 + 2 * PAGE as usize];
    for chunk in f[..0x1000].chunks_mut(4) {
        chunk.copy_from_slice(b"PAGE");
    }
    f[4..8].copy_from_slice(b"DUMP");
    put_u32(&mut f, 8, 0xF);
    put_u32(&mut f, 0xC, 2600);
    put_u32(&mut f, 0x10, 0x39000); // DirectoryTableBase
    put_u32(&mut f, 0x20, 0x14C); // MachineImageType i386
    put_u32(&mut f, 0xF88, 1); // DumpType (32-bit header offset)
    f
}

/// The start of a user-mode minidump ("MDMP", version 0xA793).
pub fn user_minidump() -> Vec<u8> {
    let mut f = vec![0u8; 0x400];
    f[..4].copy_from_slice(b"MDMP");
    put_u32(&mut f, 4, 0xA793);
    put_u32(&mut f, 8, 3); // NumberOfStreams
    put_u32(&mut f, 12, 0x20); // StreamDirectoryRva
    f
}
