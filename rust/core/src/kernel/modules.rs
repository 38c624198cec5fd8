//! PsLoadedModuleList: the loaded kernel modules, and `module+0xoffset` for any address.

use std::collections::HashSet;

use super::profile::Profile;
use crate::error::{Error, Result};
use crate::memory::Translator;

/// A hostile list cannot make the walk run forever or allocate without bound.
const MAX_MODULES: usize = 16384;
const MAX_NAME_BYTES: u16 = 0x800;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// BaseDllName, e.g. "myfault.sys".
    pub name: String,
    /// FullDllName, e.g. "\SystemRoot\system32\drivers\myfault.sys".
    pub path: String,
    pub base: u64,
    pub size: u64,
    /// VA of the KLDR_DATA_TABLE_ENTRY.
    pub entry: u64,
}

/// The modules in load order, and an index by base address for symbolizing.
#[derive(Debug, Clone, Default)]
pub struct Modules {
    pub list: Vec<Module>,
    by_base: Vec<usize>,
    /// Why the walk stopped early, if it did.
    pub notes: Vec<String>,
}

impl Modules {
    pub fn walk(tr: &mut Translator, head: u64, profile: &Profile) -> Result<Modules> {
        let field = |name: &str| {
            profile.ldr(name).ok_or_else(|| {
                Error::format(
                    0,
                    format!("profile {} lacks ldr_data_table_entry.{name}", profile.name),
                )
            })
        };
        let (links, dll_base, size_of_image, full, base_name) = (
            field("InLoadOrderLinks")?,
            field("DllBase")?,
            field("SizeOfImage")?,
            field("FullDllName")?,
            field("BaseDllName")?,
        );
        let mut out = Modules::default();
        let mut seen = HashSet::new();
        let mut link = tr
            .read_u64(head)
            .map_err(|e| e.context("PsLoadedModuleList head"))?;
        while link != head {
            if out.list.len() >= MAX_MODULES || !seen.insert(link) {
                out.notes.push(format!("module list loops or exceeds {MAX_MODULES} entries at 0x{link:x}; walk stopped"));
                break;
            }
            let entry = link.wrapping_sub(links);
            let module = (|| -> Result<Module> {
                Ok(Module {
                    base: tr.read_u64(entry.wrapping_add(dll_base))?,
                    size: u64::from(tr.read_u32(entry.wrapping_add(size_of_image))?),
                    name: unicode_string(tr, entry.wrapping_add(base_name))?,
                    path: unicode_string(tr, entry.wrapping_add(full))?,
                    entry,
                })
            })();
            match module {
                Ok(m) => out.list.push(m),
                Err(e) => {
                    out.notes.push(format!(
                        "module entry 0x{entry:x} unreadable ({e}); walk stopped"
                    ));
                    break;
                }
            }
            match tr.read_u64(link) {
                Ok(next) => link = next,
                Err(e) => {
                    out.notes.push(format!(
                        "Flink of 0x{link:x} unreadable ({e}); walk stopped"
                    ));
                    break;
                }
            }
        }
        out.index();
        Ok(out)
    }

    fn index(&mut self) {
        self.by_base = (0..self.list.len()).collect();
        self.by_base.sort_by_key(|&i| self.list[i].base);
    }

    /// The module whose image holds `addr`.
    pub fn containing(&self, addr: u64) -> Option<(usize, &Module)> {
        let i = self.by_base.partition_point(|&i| self.list[i].base <= addr);
        let idx = *self.by_base.get(i.checked_sub(1)?)?;
        let m = &self.list[idx];
        (addr - m.base < m.size).then_some((idx, m))
    }

    /// WinDbg's module name: "nt" for the kernel (first in load order), else the file name
    /// without its extension.
    pub fn short_name(&self, idx: usize) -> String {
        if idx == 0 {
            return "nt".into();
        }
        let name = &self.list[idx].name;
        name.rsplit_once('.')
            .map_or(name.as_str(), |(stem, _)| stem)
            .to_string()
    }

    /// `module+0xoffset`, or None when no module holds the address.
    pub fn symbolize(&self, addr: u64) -> Option<String> {
        let (idx, m) = self.containing(addr)?;
        Some(format!("{}+0x{:x}", self.short_name(idx), addr - m.base))
    }
}

fn unicode_string(tr: &mut Translator, va: u64) -> Result<String> {
    let len = tr.read_u16(va)?.min(MAX_NAME_BYTES);
    let buf = tr.read_u64(va.wrapping_add(8))?;
    if len == 0 || buf == 0 {
        return Ok(String::new());
    }
    let bytes = tr.read_vec(buf, usize::from(len & !1))?;
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    Ok(String::from_utf16_lossy(&units))
}
