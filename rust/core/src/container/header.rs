//! DUMP_HEADER64: the 0x2000-byte header at file offset 0 (shared/specs/dump-format.md §1).

use crate::bytes::{c_string, Le};
use crate::error::{Error, Result};

pub const PAGE_SIZE: u64 = 0x1000;
pub const HEADER64_SIZE: usize = 0x2000;

const SIG_PAGE: u32 = 0x4547_4150; // "PAGE"
const VALID_DU64: u32 = 0x3436_5544; // "DU64"
const VALID_DUMP: u32 = 0x504D_5544; // "DUMP" (32-bit header)
const PAGE_FILL_RUNS: u32 = SIG_PAGE; // descriptor still "PAGE"-filled when unused
/// 700-byte descriptor: (700 - 16) / 16 whole runs fit.
pub const MAX_RUNS: usize = 42;

/// The DumpType field (§2), by the names `poolscope info --json` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DumpType {
    Full,
    KernelBitmap,
    CompleteBitmap,
    LiveKernelBitmap,
    KernelMemory,
    KernelAndUserMemory,
    CompleteMemory,
}

impl DumpType {
    pub fn name(self) -> &'static str {
        match self {
            DumpType::Full => "full",
            DumpType::KernelBitmap => "kernel_bitmap",
            DumpType::CompleteBitmap => "complete_bitmap",
            DumpType::LiveKernelBitmap => "live_kernel_bitmap",
            DumpType::KernelMemory => "kernel_memory",
            DumpType::KernelAndUserMemory => "kernel_and_user_memory",
            DumpType::CompleteMemory => "complete_memory",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub base_page: u64,
    pub page_count: u64,
}

/// Every field of DUMP_HEADER64 that has a name in the sources.
#[derive(Debug, Clone)]
pub struct Header {
    pub major_version: u32,
    /// The NT build number (e.g. 7601, 19045).
    pub minor_version: u32,
    pub directory_table_base: u64,
    /// Address of nt!MmPfnDatabase per elf2dmp; whether Windows stores the variable's
    /// address or its value is unsure (spec uncertainty 1) — prefer KDBG.MmPfnDatabase.
    pub pfn_database: u64,
    pub ps_loaded_module_list: u64,
    pub ps_active_process_head: u64,
    pub machine_image_type: u32,
    pub number_processors: u32,
    pub bugcheck_code: u32,
    pub bugcheck_parameters: [u64; 4],
    pub version_user: [u8; 32],
    pub kd_debugger_data_block: u64,
    /// Runs of the PHYSICAL_MEMORY_DESCRIPTOR64; empty when the descriptor is unused ("PAGE"-filled).
    pub runs: Vec<Run>,
    /// NumberOfPages of the descriptor (0 when unused).
    pub number_of_pages: u64,
    pub dump_type_raw: u32,
    pub required_dump_space: u64,
    /// FILETIME: 100 ns units since 1601-01-01 UTC.
    pub system_time: u64,
    pub comment: String,
    /// 100 ns units since boot.
    pub system_up_time: u64,
    pub mini_dump_fields: u32,
    pub secondary_data_state: u32,
    pub product_type: u32,
    pub suite_mask: u32,
    pub writer_status: u32,
    pub kd_secondary_version: u8,
    pub attributes: u32,
    pub boot_id: u32,
    pub context_rip: u64,
    pub context_rsp: u64,
    pub exception_code: u32,
    pub exception_address: u64,
}

impl Header {
    pub fn build(&self) -> u32 {
        self.minor_version
    }
    /// SystemTime as seconds since the Unix epoch (None when unset or before 1970).
    pub fn system_time_unix(&self) -> Option<f64> {
        const EPOCH_DIFF: u64 = 116_444_736_000_000_000;
        self.system_time
            .checked_sub(EPOCH_DIFF)
            .map(|t| t as f64 / 1e7)
    }
    pub fn uptime_seconds(&self) -> f64 {
        self.system_up_time as f64 / 1e7
    }
}

/// Recognise the container and parse the header; refuses what cannot be scanned, saying why.
pub fn parse(file: &[u8]) -> Result<(Header, DumpType)> {
    let len = file.len() as u64;
    if file.len() < 8 {
        return Err(Error::format(
            0,
            format!("file of {len} bytes is too small to be a crash dump"),
        ));
    }
    let sig = file.u32_at(0).unwrap_or(0);
    let valid = file.u32_at(4).unwrap_or(0);
    if sig != SIG_PAGE {
        let what = if &file[..4] == b"MDMP" {
            return Err(Error::unsupported(
                "a user-mode minidump (MDMP), not a kernel crash dump: poolscope reads \
                 kernel and complete memory dumps only",
            ));
        } else {
            format!(
                "not a Windows crash dump: signature \"{}\" is not \"PAGE\"",
                file[..4].escape_ascii()
            )
        };
        return Err(Error::format(0, what));
    }
    if valid == VALID_DUMP {
        return Err(Error::unsupported(
            "32-bit kernel dump (PAGEDUMP header): poolscope scans x64 dumps only; \
             x86 page tables (PAE/non-PAE) and 32-bit pool layouts are not implemented",
        ));
    }
    if valid != VALID_DU64 {
        return Err(Error::format(
            4,
            format!("ValidDump 0x{valid:08x} is neither \"DU64\" nor \"DUMP\""),
        ));
    }
    if file.len() < HEADER64_SIZE {
        return Err(Error::format(
            len,
            format!("truncated DUMP_HEADER64: file ends at 0x{len:x}, header needs 0x2000 bytes"),
        ));
    }
    let u32_ = |o: usize| file.u32_at(o).unwrap_or(0);
    let u64_ = |o: usize| file.u64_at(o).unwrap_or(0);

    let machine = u32_(0x30);
    let dump_type_raw = u32_(0xF98);
    let mut h = Header {
        major_version: u32_(0x08),
        minor_version: u32_(0x0C),
        directory_table_base: u64_(0x10),
        pfn_database: u64_(0x18),
        ps_loaded_module_list: u64_(0x20),
        ps_active_process_head: u64_(0x28),
        machine_image_type: machine,
        number_processors: u32_(0x34),
        bugcheck_code: u32_(0x38),
        bugcheck_parameters: [u64_(0x40), u64_(0x48), u64_(0x50), u64_(0x58)],
        version_user: file[0x60..0x80].try_into().unwrap_or([0; 32]),
        kd_debugger_data_block: u64_(0x80),
        runs: Vec::new(),
        number_of_pages: 0,
        dump_type_raw,
        required_dump_space: u64_(0xFA0),
        system_time: u64_(0xFA8),
        comment: c_string(&file[0xFB0..0x1030]),
        system_up_time: u64_(0x1030),
        mini_dump_fields: u32_(0x1038),
        secondary_data_state: u32_(0x103C),
        product_type: u32_(0x1040),
        suite_mask: u32_(0x1044),
        writer_status: u32_(0x1048),
        kd_secondary_version: file[0x104D],
        attributes: u32_(0x1050),
        boot_id: u32_(0x1054),
        context_rip: u64_(0x348 + 0xF8),
        context_rsp: u64_(0x348 + 0x98),
        exception_code: u32_(0xF00),
        exception_address: u64_(0xF10),
    };
    if h.comment
        .bytes()
        .all(|b| b == b'P' || b == b'A' || b == b'G' || b == b'E')
    {
        h.comment.clear(); // unused comment keeps the "PAGE" fill
    }
    if machine != 0x8664 {
        return Err(Error::unsupported(format!(
            "machine type 0x{machine:x} is not AMD64 (0x8664): only x64 dumps are scanned"
        )));
    }
    let dump_type =
        match dump_type_raw {
            1 => DumpType::Full,
            5 | 6 => {
                // SDMP = kernel summary, FDMP = complete memory written in bitmap form.
                let bmp_sig = file.get(0x2000..0x2004);
                match (dump_type_raw, bmp_sig) {
                    (6, _) => DumpType::LiveKernelBitmap,
                    (_, Some(b"FDMP")) => DumpType::CompleteBitmap,
                    _ => DumpType::KernelBitmap,
                }
            }
            8 => DumpType::KernelMemory,
            9 => DumpType::KernelAndUserMemory,
            0xA => DumpType::CompleteMemory,
            2 => return Err(Error::unsupported(
                "DumpType 2 (legacy kernel summary dump): its page layout is not documented by \
                 any source poolscope relies on, so its physical memory cannot be located",
            )),
            4 => {
                return Err(Error::unsupported(
                    "DumpType 4: a triage/mini kernel dump (small memory dump) holds only a few \
                 selected pages, not the pool, so there is nothing to scan; collect a kernel \
                 or complete memory dump instead",
                ))
            }
            t => return Err(Error::format(0xF98, format!("unknown DumpType {t}"))),
        };
    // Full dumps locate pages through the runs; other types carry them for information only,
    // so a bad descriptor there is ignored rather than fatal.
    match parse_runs(file) {
        Ok((runs, pages)) => (h.runs, h.number_of_pages) = (runs, pages),
        Err(e) if dump_type == DumpType::Full => return Err(e),
        Err(_) => {}
    }
    Ok((h, dump_type))
}

fn parse_runs(file: &[u8]) -> Result<(Vec<Run>, u64)> {
    let n = file.u32_at(0x88).unwrap_or(0) as usize;
    if n == PAGE_FILL_RUNS as usize {
        return Err(Error::format(
            0x88,
            "full dump without a physical memory descriptor (still \"PAGE\"-filled)",
        ));
    }
    if n > MAX_RUNS {
        return Err(Error::format(
            0x88,
            format!("NumberOfRuns {n} exceeds the {MAX_RUNS} runs the header can hold"),
        ));
    }
    let number_of_pages = file.u64_at(0x90).unwrap_or(0);
    let mut runs = Vec::with_capacity(n);
    let mut prev_end = 0u64;
    for i in 0..n {
        let off = 0x98 + 0x10 * i;
        let base = file.u64_at(off).unwrap_or(0);
        let count = file.u64_at(off + 8).unwrap_or(0);
        let end = base.checked_add(count).filter(|&e| e <= (1 << 40));
        let Some(end) = end else {
            return Err(Error::format(off as u64, format!("run {i}: base page 0x{base:x} + 0x{count:x} pages exceeds the 52-bit physical address space")));
        };
        if base < prev_end {
            return Err(Error::format(
                off as u64,
                format!("run {i} starts at page 0x{base:x}, inside or before the previous run"),
            ));
        }
        prev_end = end;
        runs.push(Run {
            base_page: base,
            page_count: count,
        });
    }
    Ok((runs, number_of_pages))
}
