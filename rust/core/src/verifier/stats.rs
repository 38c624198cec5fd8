//! System-wide verifier statistics: `MmVerifierData` (MM_DRIVER_VERIFIER_DATA), whose `Level`
//! is the active `verifier /flags` set; 0 means Driver Verifier is not enabled.

use std::collections::BTreeMap;

use super::layout::VerifierLayout;
use super::Memory;
use crate::error::Result;

/// `verifier /flags` bits and their option names (shared/specs/verifier.md §2, from the
/// `verifier` command-line documentation). Bits not listed print as "Unknown (0x...)".
pub const OPTIONS: [(u32, &str); 23] = [
    (0x1, "Special Pool"),
    (0x2, "Force IRQL Checking"),
    (0x4, "Low Resources Simulation"),
    (0x8, "Pool Tracking"),
    (0x10, "I/O Verification"),
    (0x20, "Deadlock Detection"),
    (0x40, "Enhanced I/O Verification"),
    (0x80, "DMA Verification"),
    (0x100, "Security Checks"),
    (0x200, "Force Pending I/O Requests"),
    (0x400, "IRP Logging"),
    (0x800, "Miscellaneous Checks"),
    (0x2000, "Invariant MDL Checking for Stack"),
    (0x4000, "Invariant MDL Checking for Driver"),
    (0x8000, "Power Framework Delay Fuzzing"),
    (0x10000, "Port/Miniport Interface Checking"),
    (0x20000, "DDI Compliance Checking"),
    (0x40000, "Systematic Low Resources Simulation"),
    (0x80000, "DDI Compliance Checking (Additional)"),
    (0x200000, "NDIS/WIFI Verification"),
    (0x800000, "Kernel Synchronization Delay Fuzzing"),
    (0x1000000, "VM Switch Verification"),
    (0x2000000, "Code Integrity Checks"),
];

/// Option names of a Level, lowest bit first.
pub fn option_names(level: u32) -> Vec<String> {
    (0..32)
        .map(|b| 1u32 << b)
        .filter(|bit| level & bit != 0)
        .map(|bit| match OPTIONS.iter().find(|(v, _)| *v == bit) {
            Some((_, name)) => (*name).to_string(),
            None => format!("Unknown (0x{bit:x})"),
        })
        .collect()
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// VA of MmVerifierData.
    pub va: u64,
    pub level: u32,
    /// Every profile field of MM_DRIVER_VERIFIER_DATA (Level included), by name.
    pub counters: BTreeMap<String, u64>,
}

impl Stats {
    pub fn read(m: &mut impl Memory, va: u64, l: &VerifierLayout) -> Result<Self> {
        let raw = m
            .read_vec(va, l.mm_data.size)
            .map_err(|e| e.context("MmVerifierData"))?;
        let level = l.mm_data.field("Level")?.read(&raw) as u32;
        let counters = l
            .mm_data
            .names()
            .filter_map(|n| Some((n.to_string(), l.mm_data.get(n)?.read(&raw))))
            .collect();
        Ok(Self {
            va,
            level,
            counters,
        })
    }

    pub fn enabled(&self) -> bool {
        self.level != 0
    }

    pub fn options(&self) -> Vec<String> {
        option_names(self.level)
    }

    pub fn counter(&self, name: &str) -> u64 {
        self.counters.get(name).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_decode() {
        assert!(option_names(0).is_empty());
        assert_eq!(
            option_names(0x9BB),
            [
                "Special Pool",
                "Force IRQL Checking",
                "Pool Tracking",
                "I/O Verification",
                "Deadlock Detection",
                "DMA Verification",
                "Security Checks",
                "Miscellaneous Checks"
            ]
        );
        assert_eq!(
            option_names(0x1000 | 0x8 | 0x8000_0000),
            ["Pool Tracking", "Unknown (0x1000)", "Unknown (0x80000000)"]
        );
        assert_eq!(option_names(0x209BB).len(), 9);
        assert!(option_names(0x209BB).contains(&"DDI Compliance Checking".to_string()));
    }
}
