//! The kernel as seen through its debugger data: build profile, KDBG, loaded modules, bugcheck.

pub mod bugcheck;
pub mod kdbg;
pub mod modules;
pub mod profile;

pub use kdbg::{Kdbg, KdbgSource};
pub use modules::{Module, Modules};
pub use profile::Profile;
