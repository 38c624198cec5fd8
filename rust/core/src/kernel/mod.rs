//! The kernel as seen through its debugger data: build profile, KDBG, loaded modules, bugcheck.

pub mod bugcheck;
pub mod codeview;
pub mod fields;
pub mod kdbg;
pub mod modules;
pub mod pdb;
pub mod profile;
pub mod symbols;

pub use kdbg::{Kdbg, KdbgSource};
pub use modules::{Module, Modules};
pub use profile::Profile;
pub use symbols::Symbols;
