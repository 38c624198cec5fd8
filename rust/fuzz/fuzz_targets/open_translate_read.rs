//! Open arbitrary bytes as a dump; when it opens, translate and read addresses taken from the
//! header, the KDBG, the module list and the input itself, read the stored physical pages, and
//! symbolize. Oracles: nothing panics; every error is typed NotPresent for a read; a VA that
//! translates to a stored page reads the same bytes virtually and physically; every page the
//! page map calls present is readable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use poolscope_core::{Dump, ErrorKind};

const MAX_RUNS: usize = 16;

fn check_va(dump: &Dump, va: u64) {
    let _ = dump.symbolize(va);
    match dump.translate(va) {
        Ok(t) => {
            assert!(matches!(t.page_size, 0x1000 | 0x20_0000 | 0x4000_0000));
            assert_eq!(t.pa & 0xFFF, va & 0xFFF, "in-page offset kept");
            assert!(t.pa < 1 << 52, "PA inside the 52-bit space");
            let virt = dump.read_virtual(va, 1);
            match dump.read_physical(t.pa, 1) {
                Ok(phys) => assert_eq!(virt.expect("virtual read of a stored page"), phys),
                Err(e) => {
                    assert_eq!(e.kind, ErrorKind::NotPresent);
                    assert_eq!(virt.unwrap_err().kind, ErrorKind::NotPresent);
                }
            }
        }
        Err(e) => assert_eq!(e.kind, ErrorKind::NotPresent, "{e}"),
    }
    // a read that may cross into the next page
    if let Err(e) = dump.read_virtual(va | 0xFF8, 16) {
        assert_eq!(e.kind, ErrorKind::NotPresent, "{e}");
    }
    let _ = dump.read_virtual(va, 0x100);
}

fuzz_target!(|data: &[u8]| {
    let tail: Vec<u64> = data
        .rchunks_exact(8)
        .take(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let Ok(dump) = Dump::from_bytes(data.to_vec(), None) else {
        return;
    };
    let h = dump.header().clone();

    // physical: the page-table root, and every present run's first and last page
    let dtb = h.directory_table_base & 0x000F_FFFF_FFFF_F000;
    let _ = dump.read_physical(dtb, 0x1000);
    let runs = dump.present_runs();
    for r in runs.iter().take(MAX_RUNS) {
        assert!(r.page_count > 0);
        let first = r.base_page * 0x1000;
        let last = (r.base_page + r.page_count - 1) * 0x1000;
        for pa in [first, last] {
            let page = dump.read_physical(pa, 0x1000).expect("present page reads");
            assert_eq!(page.len(), 0x1000);
        }
    }
    for w in runs.windows(2) {
        assert!(
            w[0].base_page + w[0].page_count < w[1].base_page,
            "maximal, sorted runs"
        );
    }

    // virtual: header pointers, KDBG fields, module entries, input-derived addresses
    let mut vas = vec![
        h.kd_debugger_data_block,
        h.ps_loaded_module_list,
        h.ps_active_process_head,
        h.pfn_database,
        h.context_rip,
        h.context_rsp,
        h.exception_address,
    ];
    vas.extend(h.bugcheck_parameters);
    vas.extend(&tail);
    if let Some(k) = &dump.kdbg {
        vas.extend(k.va);
        vas.extend(k.fields.values().take(16));
        vas.extend(k.kern_base());
    }
    for m in dump.modules.list.iter().take(8) {
        vas.extend([m.base, m.entry, m.base.wrapping_add(m.size)]);
    }
    for va in vas {
        check_va(&dump, va);
    }

    // a cached translator walking a few pages from an input-chosen address
    if let Some(&start) = tail.first() {
        let space = dump.space();
        let mut tr = space.translator();
        for i in 0..4u64 {
            let va = start.wrapping_add(i * 0x1000);
            let a = tr.translate(va).ok();
            let b = space.translate(va).ok();
            assert_eq!(a, b, "cached and uncached translation agree");
        }
    }
    let _ = dump.kernel_base();
});
