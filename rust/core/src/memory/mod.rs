//! Memory as the kernel saw it: physical pages of the dump, then x64 virtual translation.

pub mod physical;
pub mod virt;

pub use physical::PhysicalMemory;
pub use virt::{AddressSpace, Translation, Translator};
