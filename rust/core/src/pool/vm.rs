//! The memory summary (`!vm 1`-like) from KDBG's variables.

use crate::kernel::Kdbg;

/// `!vm` flags excessive pool use; its exact rule is not documented, so poolscope states its
/// own: usage at or above this share of the maximum.
pub const EXCESSIVE_SHARE: f64 = 0.9;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemorySummary {
    pub physical_pages: Option<u64>,
    pub available_pages: Option<u64>,
    pub resident_available_pages: Option<u64>,
    /// MmAllocatedNonPagedPool (pages; the unit is assumed, see the profile's `unsure`).
    pub nonpaged_pool_pages: Option<u64>,
    pub nonpaged_pool_max_pages: Option<u64>,
    /// MmPagedPoolCommit (pages).
    pub paged_pool_pages: Option<u64>,
    pub paged_pool_max_pages: Option<u64>,
    pub commit_pages: Option<u64>,
    pub commit_limit_pages: Option<u64>,
    pub peak_commit_pages: Option<u64>,
    pub excessive_nonpaged: bool,
    pub excessive_paged: bool,
    pub rule: String,
}

fn excessive(used: Option<u64>, max: Option<u64>) -> bool {
    match (used, max) {
        (Some(u), Some(m)) if m > 0 => u as f64 >= EXCESSIVE_SHARE * m as f64,
        _ => false,
    }
}

impl MemorySummary {
    pub fn from_kdbg(k: &Kdbg) -> Self {
        let pages = |bytes: Option<u64>| bytes.map(|b| b / 0x1000);
        let mut s = MemorySummary {
            physical_pages: k.value("MmNumberOfPhysicalPages"),
            available_pages: k.value("MmAvailablePages"),
            resident_available_pages: k.value("MmResidentAvailablePages"),
            nonpaged_pool_pages: k.value("MmAllocatedNonPagedPool"),
            nonpaged_pool_max_pages: pages(k.value("MmMaximumNonPagedPoolInBytes")),
            paged_pool_pages: k.value("MmPagedPoolCommit"),
            paged_pool_max_pages: pages(k.value("MmSizeOfPagedPoolInBytes")),
            commit_pages: k.value("MmTotalCommittedPages"),
            commit_limit_pages: k.value("MmTotalCommitLimit"),
            peak_commit_pages: k.value("MmPeakCommitment"),
            excessive_nonpaged: false,
            excessive_paged: false,
            rule: format!(
                "pool usage is excessive when it reaches {:.0}% of the pool's maximum (!vm's own threshold is undocumented)",
                EXCESSIVE_SHARE * 100.0
            ),
        };
        s.excessive_nonpaged = excessive(s.nonpaged_pool_pages, s.nonpaged_pool_max_pages);
        s.excessive_paged = excessive(s.paged_pool_pages, s.paged_pool_max_pages);
        s
    }
}
