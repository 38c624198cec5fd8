//! Pool analyses: the tagging database, the pool page scan, the big-pool table, tag owners and
//! the memory summary. Each reads kernel memory through `memory`; none touches the file.

pub mod bigpool;
pub mod globals;
pub mod layout;
pub mod owners;
pub mod pages;
pub mod segheap;
pub mod session;
pub mod tag;
pub mod tracker;
pub mod vm;

pub use bigpool::{BigPage, BigPool};
pub use layout::PoolLayout;
pub use pages::{Blocks, Keep, Pool, PoolScan, TagCount};
pub use tracker::{SortBy, TagUsage, TrackerTable};
pub use vm::MemorySummary;
