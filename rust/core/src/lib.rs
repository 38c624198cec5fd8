//! poolscope-core: read Windows x64 kernel crash dumps at memory speed.
//!
//! Data flows one way: `container` (file → header, page map) → `memory` (physical, virtual) →
//! `kernel` (profile, KDBG, modules) → analyses. Every read is bounds-checked and returns an
//! [`Error`] naming the file offset or address; nothing here panics on a hostile dump.

pub mod bytes;
pub mod container;
pub mod dump;
pub mod error;
pub mod findings;
pub mod kernel;
pub mod memory;
pub mod pool;
pub mod scan;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod verifier;

pub use container::{DumpType, Header, OpenOptions, Run, PAGE_SIZE};
pub use dump::{Dump, DumpOptions};
pub use error::{Error, ErrorKind, Location, Result};
