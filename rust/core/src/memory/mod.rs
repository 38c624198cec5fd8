//! Memory as the kernel saw it: physical pages of the dump, then x64 virtual translation.

pub mod physical;
pub mod reverse;
pub mod virt;

pub use physical::PhysicalMemory;
pub use reverse::ReverseMap;
pub use virt::{AddressSpace, Translation, Translator};
