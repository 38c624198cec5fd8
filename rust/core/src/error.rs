//! The one error type of the core: what went wrong, where (file offset or address), and why.

use std::fmt;

/// What kind of failure; each maps to one Python exception type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The file is not a well-formed dump: bad signature, truncated, inconsistent sizes.
    Format,
    /// A real dump of a kind poolscope cannot scan (triage/mini, 32-bit, unknown type).
    Unsupported,
    /// An address whose page is not present in the page tables or not stored in the dump.
    NotPresent,
    /// A configured limit was hit (decompressed size, entry counts).
    Limit,
    /// The operating system refused a read, map or write.
    Io,
    /// A symbol file (PDB) that is malformed or is not the dump's kernel's.
    Symbols,
}

/// Where an error points: a byte offset in the (decompressed) dump file, or a memory address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    None,
    FileOffset(u64),
    Physical(u64),
    Virtual(u64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub kind: ErrorKind,
    pub location: Location,
    pub reason: String,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn format(offset: u64, reason: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Format,
            location: Location::FileOffset(offset),
            reason: reason.into(),
        }
    }
    pub fn unsupported(reason: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Unsupported,
            location: Location::None,
            reason: reason.into(),
        }
    }
    pub fn not_in_dump(pa: u64) -> Self {
        Self {
            kind: ErrorKind::NotPresent,
            location: Location::Physical(pa),
            reason: format!(
                "physical page 0x{:x} is not stored in the dump",
                pa & !0xfff
            ),
        }
    }
    pub fn not_present(va: u64, reason: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::NotPresent,
            location: Location::Virtual(va),
            reason: reason.into(),
        }
    }
    pub fn limit(reason: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Limit,
            location: Location::None,
            reason: reason.into(),
        }
    }
    pub fn symbols(reason: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Symbols,
            location: Location::None,
            reason: reason.into(),
        }
    }
    pub fn io(reason: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Io,
            location: Location::None,
            reason: reason.into(),
        }
    }
    /// Re-anchor an error raised while reading at a virtual address (keeps the reason).
    pub fn at_virtual(mut self, va: u64) -> Self {
        if matches!(self.location, Location::Physical(_) | Location::None) {
            self.reason = format!("{} (reading virtual 0x{va:x})", self.reason);
            self.location = Location::Virtual(va);
        }
        self
    }
    pub fn context(mut self, what: &str) -> Self {
        self.reason = format!("{what}: {}", self.reason);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.location {
            Location::None => write!(f, "{}", self.reason),
            Location::FileOffset(o) => write!(f, "{} (file offset 0x{o:x})", self.reason),
            Location::Physical(a) => write!(f, "{} (physical 0x{a:x})", self.reason),
            Location::Virtual(a) => write!(f, "{} (virtual 0x{a:x})", self.reason),
        }
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::io(e.to_string())
    }
}
