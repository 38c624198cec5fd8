//! Which PDB the kernel was built with: nt's debug directory (IMAGE_DIRECTORY_ENTRY_DEBUG) read
//! from memory, its IMAGE_DEBUG_TYPE_CODEVIEW entry and the `RSDS` record it points to (GUID,
//! age, PDB file name), as WinDbg and symchk read them from a loaded image.

use super::pdb::PdbId;
use crate::memory::AddressSpace;

const IMAGE_DIRECTORY_ENTRY_DEBUG: u64 = 6;
const IMAGE_DEBUG_TYPE_CODEVIEW: u32 = 2;
const DEBUG_ENTRY: usize = 28;
/// Entries read at most (a real image has 2-6: CodeView, POGO, REPRO, ...).
const MAX_ENTRIES: usize = 32;
/// RSDS record bytes read at most: header (24) and a file name of up to MAX_PATH.
const MAX_RSDS: usize = 24 + 260;

/// The kernel's PDB identity and how it was found.
#[derive(Debug, Clone)]
pub struct CodeView {
    pub id: PdbId,
    /// VA of the RSDS record.
    pub va: u64,
    pub found_by: String,
}

/// Read nt's RSDS record from the image mapped at `base`. The error says which step failed
/// (headers, debug directory or record missing from the dump, or malformed).
pub fn read(space: &AddressSpace<'_>, base: u64) -> Result<CodeView, String> {
    let mut t = space.translator();
    let rd = |t: &mut crate::memory::Translator<'_>, va: u64, n: usize, what: &str| {
        t.read_vec(va, n)
            .map_err(|e| format!("{what} at 0x{va:x}: {e}"))
    };
    let dos = rd(&mut t, base, 0x40, "nt's image header (MZ)")?;
    if &dos[..2] != b"MZ" {
        return Err(format!("no MZ signature at nt's image base 0x{base:x}"));
    }
    let lfanew = u64::from(u32::from_le_bytes([
        dos[0x3C], dos[0x3D], dos[0x3E], dos[0x3F],
    ]));
    if lfanew > 0x1000 {
        return Err(format!(
            "e_lfanew 0x{lfanew:x} of nt's image is implausible"
        ));
    }
    let nt = base + lfanew;
    let hdr = rd(&mut t, nt, 24 + 0x70 + 16 * 8, "nt's PE header")?;
    if &hdr[..4] != b"PE\0\0" || u16::from_le_bytes([hdr[24], hdr[25]]) != 0x20B {
        return Err(format!("no PE32+ header at 0x{nt:x}"));
    }
    let opt = 24usize;
    let count = u32::from_le_bytes(hdr[opt + 0x6C..opt + 0x70].try_into().unwrap_or_default());
    if u64::from(count) <= IMAGE_DIRECTORY_ENTRY_DEBUG {
        return Err("nt's image has no debug data directory".into());
    }
    let dd = opt + 0x70 + IMAGE_DIRECTORY_ENTRY_DEBUG as usize * 8;
    let rva = u32::from_le_bytes(hdr[dd..dd + 4].try_into().unwrap_or_default());
    let size = u32::from_le_bytes(hdr[dd + 4..dd + 8].try_into().unwrap_or_default()) as usize;
    if rva == 0 || size < DEBUG_ENTRY {
        return Err("nt's image has an empty debug directory".into());
    }
    let n = (size / DEBUG_ENTRY).min(MAX_ENTRIES);
    let dir_va = base + u64::from(rva);
    let dir = rd(&mut t, dir_va, n * DEBUG_ENTRY, "nt's debug directory")?;
    for (i, e) in dir.chunks_exact(DEBUG_ENTRY).enumerate() {
        let u32_at = |o: usize| u32::from_le_bytes(e[o..o + 4].try_into().unwrap_or_default());
        if u32_at(12) != IMAGE_DEBUG_TYPE_CODEVIEW {
            continue;
        }
        let (len, data_rva) = (u32_at(16) as usize, u32_at(20));
        if !(24..=MAX_RSDS * 4).contains(&len) || data_rva == 0 {
            return Err(format!(
                "nt's CodeView debug entry {i} has size {len} at RVA 0x{data_rva:x}"
            ));
        }
        let va = base + u64::from(data_rva);
        let rec = rd(&mut t, va, len.min(MAX_RSDS), "nt's CodeView record")?;
        if &rec[..4] != b"RSDS" {
            let sig = String::from_utf8_lossy(&rec[..4]).into_owned();
            return Err(format!(
                "nt's CodeView record at 0x{va:x} is {sig:?}, not RSDS"
            ));
        }
        let guid: [u8; 16] = rec[4..20].try_into().unwrap_or_default();
        let age = u32::from_le_bytes(rec[20..24].try_into().unwrap_or_default());
        let raw = &rec[24..];
        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        let path = String::from_utf8_lossy(&raw[..end]).into_owned();
        let name = path.rsplit(['\\', '/']).next().unwrap_or("").to_string();
        if name.is_empty() {
            return Err(format!("nt's RSDS record at 0x{va:x} names no PDB"));
        }
        return Ok(CodeView {
            id: PdbId::from_raw(&name, &guid, age),
            va,
            found_by: format!(
                "nt's debug directory at 0x{dir_va:x} (entry {i} of {n}, \
                 IMAGE_DEBUG_TYPE_CODEVIEW), RSDS record at 0x{va:x}"
            ),
        });
    }
    Err(format!(
        "nt's debug directory at 0x{dir_va:x} has no CodeView entry among its {n}"
    ))
}
