//! A dump opened for reading: the container, its memory, and what the kernel data says.
//! Kernel-level failures (no KDBG, broken module list) do not fail `open`: physical and virtual
//! reads still work, and the reason is kept in `notes`.

use std::path::Path;

use crate::container::{Container, DumpType, Header, OpenOptions, Run};
use crate::error::Error;
use crate::error::Result;
use crate::kernel::codeview::{self, CodeView};
use crate::kernel::pdb::Pdb;
use crate::kernel::{Kdbg, Modules, Profile, Symbols};
use crate::memory::{AddressSpace, PhysicalMemory, Translation};

pub struct Dump {
    pub container: Container,
    pub profile: Profile,
    /// Why this profile: the user's, the family covering the build, or the nearest older one.
    pub profile_choice: String,
    pub kdbg: Option<Kdbg>,
    pub modules: Modules,
    /// A Volatility 3 symbol table for this kernel, when the user gave one.
    pub symbols: Option<Symbols>,
    /// Where each kernel-level figure came from, and what could not be found.
    pub notes: Vec<String>,
    /// The kernel's PDB identity from nt's RSDS record, or why it could not be read.
    pub codeview: std::result::Result<CodeView, String>,
}

/// Options for [`Dump::open`]; the profile overrides the built-in one chosen by build.
#[derive(Default, Clone)]
pub struct DumpOptions {
    pub open: OpenOptions,
    pub profile: Option<Profile>,
    pub symbols: Option<Symbols>,
}

impl Dump {
    pub fn open(path: &Path, opts: &DumpOptions) -> Result<Dump> {
        let mut d = Self::from_container(Container::open(path, &opts.open)?, opts.profile.clone())?;
        if let Some(s) = &opts.symbols {
            d.notes
                .push(format!("symbol table {} supplied by the user", s.origin));
            d.symbols = Some(s.clone());
        }
        Ok(d)
    }

    pub fn from_bytes(data: Vec<u8>, profile: Option<Profile>) -> Result<Dump> {
        Self::from_container(Container::from_bytes(data)?, profile)
    }

    fn from_container(container: Container, profile: Option<Profile>) -> Result<Dump> {
        let mut notes = container.notes.clone();
        let build = container.header.build();
        let (profile, profile_choice) = match profile {
            Some(p) => {
                let why = format!("profile {} supplied by the user", p.name);
                (p, why)
            }
            None => Profile::for_build(build)?,
        };
        notes.push(profile_choice.clone());
        let (kdbg, modules) = load_kernel(&container, &profile, &mut notes);
        let base = kdbg
            .as_ref()
            .and_then(Kdbg::kern_base)
            .or_else(|| modules.list.first().map(|m| m.base));
        let codeview = match base {
            Some(b) => {
                let space = AddressSpace::new(
                    PhysicalMemory::new(&container),
                    container.header.directory_table_base,
                );
                codeview::read(&space, b)
            }
            None => Err("nt's image base is unknown (no KDBG, no module list)".into()),
        };
        match &codeview {
            Ok(c) => notes.push(format!(
                "kernel PDB {} {} from {}",
                c.id.name,
                c.id.store_id(),
                c.found_by
            )),
            Err(why) => notes.push(format!("kernel PDB not identified: {why}")),
        }
        Ok(Dump {
            container,
            profile,
            profile_choice,
            kdbg,
            modules,
            symbols: None,
            notes,
            codeview,
        })
    }

    /// Use a PDB's symbols, once its GUID and age are checked against nt's RSDS record: a PDB of
    /// another build is refused with both identities. When the dump's record cannot be read the
    /// PDB is used and a note says it could not be checked.
    pub fn use_pdb(&mut self, pdb: Pdb) -> Result<()> {
        match &self.codeview {
            Ok(cv) if !cv.id.same_build(&pdb.id) => {
                return Err(Error::symbols(format!(
                    "PDB {} is {} {} (GUID {}, age {}), but the dump's kernel was built with {} \
                     {} (GUID {}, age {}): refused, its addresses and layouts would be another \
                     build's",
                    pdb.symbols.origin,
                    pdb.id.name,
                    pdb.id.store_id(),
                    pdb.id.guid(),
                    pdb.id.age,
                    cv.id.name,
                    cv.id.store_id(),
                    cv.id.guid(),
                    cv.id.age
                )));
            }
            Ok(_) => self.notes.push(format!(
                "symbols: {} ({}), GUID and age match nt's RSDS record",
                pdb.symbols.source, pdb.symbols.origin
            )),
            Err(why) => self.notes.push(format!(
                "symbols: {} ({}) used unchecked: the dump's kernel PDB is not identified ({why})",
                pdb.symbols.source, pdb.symbols.origin
            )),
        }
        self.symbols = Some(pdb.symbols);
        Ok(())
    }

    pub fn header(&self) -> &Header {
        &self.container.header
    }

    pub fn dump_type(&self) -> DumpType {
        self.container.dump_type
    }

    pub fn physical(&self) -> PhysicalMemory<'_> {
        PhysicalMemory::new(&self.container)
    }

    /// The kernel address space (the header's DirectoryTableBase).
    pub fn space(&self) -> AddressSpace<'_> {
        AddressSpace::new(self.physical(), self.container.header.directory_table_base)
    }

    pub fn translate(&self, va: u64) -> Result<Translation> {
        self.space().translate(va)
    }

    pub fn read_virtual(&self, va: u64, n: usize) -> Result<Vec<u8>> {
        self.space().translator().read_vec(va, n)
    }

    pub fn read_physical(&self, pa: u64, n: usize) -> Result<Vec<u8>> {
        let mut v = vec![0u8; n];
        self.physical().read(pa, &mut v)?;
        Ok(v)
    }

    pub fn present_runs(&self) -> Vec<Run> {
        self.physical().present_runs()
    }

    pub fn symbolize(&self, addr: u64) -> Option<String> {
        self.modules.symbolize(addr)
    }

    pub fn kernel_base(&self) -> Option<u64> {
        self.kdbg
            .as_ref()
            .and_then(Kdbg::kern_base)
            .or_else(|| self.modules.list.first().map(|m| m.base))
    }
}

fn load_kernel(
    container: &Container,
    profile: &Profile,
    notes: &mut Vec<String>,
) -> (Option<Kdbg>, Modules) {
    let h = &container.header;
    let space = AddressSpace::new(PhysicalMemory::new(container), h.directory_table_base);
    let kdbg = match crate::kernel::kdbg::find(
        &space,
        h.kd_debugger_data_block,
        h.ps_loaded_module_list,
        profile,
    ) {
        Ok(k) => {
            notes.push(k.describe());
            notes.extend(k.notes.iter().cloned());
            Some(k)
        }
        Err(e) => {
            notes.push(e.to_string());
            None
        }
    };
    // KDBG's list head is the kernel's own; the header's copy is the fallback.
    let head = kdbg
        .as_ref()
        .and_then(|k| k.field("PsLoadedModuleList"))
        .unwrap_or(h.ps_loaded_module_list);
    let modules = match Modules::walk(&mut space.translator(), head, profile) {
        Ok(m) => {
            notes.extend(m.notes.iter().cloned());
            m
        }
        Err(e) => {
            notes.push(format!("loaded module list at 0x{head:x}: {e}"));
            Modules::default()
        }
    };
    (kdbg, modules)
}
