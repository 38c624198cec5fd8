//! Open arbitrary bytes as a dump and run every analysis (`scan::analyze`: tracker and per-CPU
//! tables, the pool scan, big pool, owners, verifier, findings), once with the profile the
//! header's build selects and once with the Windows 10 19041 profile, so the segment-heap scan
//! and the symbol-free searches of its globals run on every input too. Oracle: nothing panics,
//! and the report serializes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use poolscope_core::kernel::Profile;
use poolscope_core::scan::{analyze, ScanOptions};
use poolscope_core::Dump;

fuzz_target!(|data: &[u8]| {
    let opts = ScanOptions::default();
    let seg = Profile::for_build(19045).ok().map(|(p, _)| p);
    for profile in [None, seg] {
        if let Ok(dump) = Dump::from_bytes(data.to_vec(), profile) {
            let a = analyze(&dump, &opts);
            let _ = a.to_json(&opts).to_string();
        }
    }
});
