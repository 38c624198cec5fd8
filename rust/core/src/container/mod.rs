//! The dump file as a container: its bytes (mapped, or decompressed into a spool and mapped),
//! the header, and where each physical page lives. No Windows semantics beyond the header.

pub mod header;
pub mod pages;
pub mod zst;

use std::fs::File;
use std::ops::Deref;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::error::{Error, Result};
pub use header::{DumpType, Header, Run, PAGE_SIZE};
pub use pages::{PageMap, Truncation};

/// How to open a dump.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// Largest decompressed size accepted from a `.zst` dump (a decompression bomb is refused).
    pub max_decompressed: u64,
    /// Where `.zst` dumps are spooled (default: the system temp dir).
    pub spool_dir: Option<PathBuf>,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self {
            max_decompressed: 64 << 30,
            spool_dir: None,
        }
    }
}

/// The bytes of a dump: a read-only mapping of the file or of its decompressed spool (whose
/// unlinked temp file lives as long as the mapping), or owned bytes (tests, fuzzing).
pub enum Bytes {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

pub struct Container {
    pub header: Header,
    pub dump_type: DumpType,
    pub pages: PageMap,
    /// Oddities that did not stop parsing (shown to the user, never silently dropped).
    pub notes: Vec<String>,
    /// True when the file was zstd-compressed and was spooled.
    pub decompressed: bool,
    /// Set when the file was cut short: the pages past its end are not present.
    pub truncated: Option<Truncation>,
    pub bytes: Bytes,
}

/// Open `path` for reading if it is a regular file. FIFOs, devices and sockets are refused at
/// once: the file is opened non-blocking (a FIFO without a writer would block a plain open)
/// and its type checked with fstat before a byte is read. Every error names the path.
pub fn open_regular(path: &Path) -> Result<File> {
    let mut o = std::fs::OpenOptions::new();
    o.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.custom_flags(libc::O_NONBLOCK);
    }
    let file = o
        .open(path)
        .map_err(|e| Error::io(format!("cannot open {}: {e}", path.display())))?;
    let ft = file
        .metadata()
        .map_err(|e| Error::io(format!("cannot stat {}: {e}", path.display())))?
        .file_type();
    if ft.is_file() {
        return Ok(file);
    }
    let kind = if ft.is_dir() {
        "a directory"
    } else {
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileTypeExt;
            if ft.is_fifo() {
                "a FIFO"
            } else if ft.is_socket() {
                "a socket"
            } else if ft.is_char_device() {
                "a character device"
            } else if ft.is_block_device() {
                "a block device"
            } else {
                "a special file"
            }
        }
        #[cfg(not(unix))]
        {
            "a special file"
        }
    };
    Err(Error::io(format!(
        "cannot open {}: it is {kind}, not a regular file (poolscope reads dump files only)",
        path.display()
    )))
}

impl Container {
    pub fn open(path: &Path, opts: &OpenOptions) -> Result<Self> {
        let at = |what: &str, e: std::io::Error| {
            Error::io(format!("cannot {what} {}: {e}", path.display()))
        };
        let file = open_regular(path)?;
        let len = file.metadata().map_err(|e| at("stat", e))?.len();
        let mut magic = [0u8; 4];
        if len >= 4 {
            use std::io::Read;
            (&file).read_exact(&mut magic).map_err(|e| at("read", e))?;
        }
        let (file, decompressed, spool_note) = if zst::is_zstd(&magic) {
            let (f, note) =
                zst::spool(file, opts).map_err(|e| e.context(&path.display().to_string()))?;
            (f, true, note)
        } else {
            (file, false, None)
        };
        let len = file.metadata().map_err(|e| at("stat", e))?.len();
        let bytes = if len == 0 {
            Bytes::Owned(Vec::new())
        } else {
            // SAFETY: the mapping is read-only; poolscope never writes the file, and a dump
            // truncated underneath us by another process is outside what any reader can guard.
            let map = unsafe { Mmap::map(&file) }
                .map_err(|e| Error::io(format!("cannot map {}: {e}", path.display())))?;
            #[cfg(unix)]
            let _ = map.advise(memmap2::Advice::Random);
            Bytes::Mapped(map)
        };
        let mut c = Self::parse(bytes)?;
        c.decompressed = decompressed;
        if let Some(n) = spool_note {
            c.notes.insert(0, n);
        }
        Ok(c)
    }

    pub fn from_bytes(data: Vec<u8>) -> Result<Self> {
        Self::parse(Bytes::Owned(data))
    }

    fn parse(bytes: Bytes) -> Result<Self> {
        let (header, dump_type) = header::parse(&bytes)?;
        let (pages, notes, truncated) = pages::build(&bytes, &header, dump_type)?;
        Ok(Self {
            header,
            dump_type,
            pages,
            notes,
            decompressed: false,
            truncated,
            bytes,
        })
    }

    /// The stored bytes of physical page `pfn`, if the dump holds it.
    #[inline]
    pub fn page(&self, pfn: u64) -> Option<&[u8]> {
        let off = self.pages.lookup(pfn, &self.bytes)? as usize;
        self.bytes.get(off..off + PAGE_SIZE as usize)
    }

    /// Drop this process's mapping of the file bytes holding PFNs `start..end` (the page cache
    /// keeps them; a later read faults them back). A whole-dump scan calls this per chunk so
    /// that its resident set stays a few chunks, not the dump.
    pub fn release(&self, start: u64, end: u64) {
        let Bytes::Mapped(map) = &self.bytes else {
            return;
        };
        let first = (start..end).find_map(|p| self.pages.lookup(p, &self.bytes));
        let last = (start..end)
            .rev()
            .find_map(|p| self.pages.lookup(p, &self.bytes));
        #[cfg(unix)]
        if let (Some(a), Some(b)) = (first, last) {
            if b >= a {
                // SAFETY: the mapping is read-only and file-backed; MADV_DONTNEED only drops
                // page-table entries, and the next access re-reads the same file bytes.
                let _ = unsafe {
                    map.unchecked_advise_range(
                        memmap2::UncheckedAdvice::DontNeed,
                        a as usize,
                        (b - a + PAGE_SIZE) as usize,
                    )
                };
            }
        }
    }

    pub fn file_size(&self) -> u64 {
        self.bytes.len() as u64
    }
}
