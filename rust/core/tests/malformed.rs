//! Hostile and broken inputs: every case yields the right typed error (or opens with a note)
//! and nothing panics or hangs.

use std::time::{Duration, Instant};

use poolscope_core::container::Container;
use poolscope_core::testkit::{self, Layout, Options, TestDump, Variant};
use poolscope_core::{Dump, DumpOptions, Error, ErrorKind, Location};

fn open(bytes: &[u8]) -> Result<Dump, Error> {
    Dump::from_bytes(bytes.to_vec(), None)
}

fn open_err(bytes: &[u8]) -> Error {
    match open(bytes) {
        Ok(_) => panic!("expected an error, but the dump opened"),
        Err(e) => e,
    }
}

#[track_caller]
fn assert_format_at(bytes: &[u8], offset: u64) -> Error {
    let e = open_err(bytes);
    assert_eq!(e.kind, ErrorKind::Format, "{e}");
    assert_eq!(e.location, Location::FileOffset(offset), "{e}");
    e
}

/// After opening, the reader must answer every query without panicking.
fn exercise(d: &Dump) {
    let h = d.header();
    for va in [
        h.kd_debugger_data_block,
        h.ps_loaded_module_list,
        h.ps_active_process_head,
        h.pfn_database,
        testkit::KERN_BASE,
        testkit::DRIVER_BASE,
        testkit::HUGE_VA,
        0,
        u64::MAX,
    ] {
        let _ = d.translate(va);
        let _ = d.read_virtual(va, 0x20);
        let _ = d.symbolize(va);
    }
    for r in d.present_runs().iter().take(8) {
        let _ = d.read_physical(r.base_page.wrapping_mul(0x1000), 0x40);
    }
}

// ---- truncation ----

fn cut_points(t: &TestDump) -> Vec<usize> {
    let mut cuts = vec![0, 1, 4, 7, 8, 0x88, 0x98, 0xF98, 0x1000, 0x1FFF, 0x2000];
    match t.facts.layout {
        Layout::Full => cuts.extend([0x2001, 0x2800, 0x3000]),
        Layout::Bitmap => cuts.extend([0x2004, 0x2010, 0x2030, 0x2037, 0x2038, 0x2040, 0x2078]),
        Layout::Rdmp => cuts.extend([0x2004, 0x2010, 0x202F, 0x2030, 0x2038, 0x2048, 0x2FFF]),
    }
    let first = t.facts.first_page as usize;
    let len = t.bytes.len();
    cuts.extend([first, first + 0x800, first + 0x1000, len - 0x1000, len - 1]);
    cuts
}

/// A cut before the end of the first stored page is a header (or bitmap, or range list) cut
/// short: a format error at a file offset. A cut after it opens as a truncated dump: the pages
/// wholly inside the file are read, the rest are missing, and the truncation says how many.
#[track_caller]
fn check_cut(t: &TestDump, cut: usize) {
    let v = t.facts.layout;
    let first = t.facts.first_page as usize;
    if cut < first + 0x1000 {
        let e = open_err(&t.bytes[..cut]);
        assert_eq!(e.kind, ErrorKind::Format, "{v:?} cut 0x{cut:x}: {e}");
        assert!(
            matches!(e.location, Location::FileOffset(_)),
            "{v:?} cut 0x{cut:x}: {e}"
        );
        let c = Container::from_bytes(t.bytes[..cut].to_vec());
        assert_eq!(c.err().map(|e| e.kind), Some(ErrorKind::Format));
        return;
    }
    let whole = open(&t.bytes).unwrap().container.pages.page_count();
    let d = open(&t.bytes[..cut]).unwrap_or_else(|e| panic!("{v:?} cut 0x{cut:x}: {e}"));
    let present = (((cut - first) / 0x1000) as u64).min(whole);
    assert_eq!(
        d.container.pages.page_count(),
        present,
        "{v:?} cut 0x{cut:x}"
    );
    match d.container.truncated {
        Some(tr) => {
            assert!(present < whole, "{v:?} cut 0x{cut:x}");
            assert_eq!(tr.actual_size, cut as u64);
            assert_eq!(tr.pages_expected, whole);
            assert_eq!(tr.pages_missing, whole - present);
            assert!(
                d.notes.iter().any(|n| n.contains("truncated")),
                "{:?}",
                d.notes
            );
        }
        None => assert_eq!(present, whole, "{v:?} cut 0x{cut:x}"),
    }
    // every stored page reads, every missing one is not present
    let runs = d.present_runs();
    assert_eq!(runs.iter().map(|r| r.page_count).sum::<u64>(), present);
    exercise(&d);
}

#[test]
fn truncated_at_every_boundary() {
    for v in Variant::ALL {
        let t = testkit::build(v);
        for cut in cut_points(&t) {
            check_cut(&t, cut);
        }
        // the header says where it ends
        let e = open_err(&t.bytes[..0x1000]);
        assert_eq!(e.location, Location::FileOffset(0x1000));
        assert!(e.reason.contains("truncated DUMP_HEADER64"), "{e}");
    }
}

#[test]
fn truncated_anywhere() {
    for v in Variant::ALL {
        let t = testkit::build(v);
        for cut in (0..t.bytes.len()).step_by(0x1C0) {
            check_cut(&t, cut);
        }
        // one byte too long is fine: pages are located from the front
        let mut longer = t.bytes.clone();
        longer.push(0);
        exercise(&open(&longer).unwrap());
    }
}

#[test]
fn truncation_needs_the_header_to_promise_the_pages() {
    // RequiredDumpSpace smaller than the pages named: a corrupt descriptor, not a cut file
    for v in Variant::ALL {
        let mut t = testkit::build(v);
        let cut = t.bytes.len() - 0x1000;
        t.patch_u64(testkit::HDR_REQUIRED_DUMP_SPACE, cut as u64);
        let e = open_err(&t.bytes[..cut]);
        assert_eq!(e.kind, ErrorKind::Format, "{v:?}: {e}");
    }
}

// ---- full-dump run descriptor ----

#[test]
fn runs_past_end_of_file() {
    let mut t = testkit::build(Variant::Full);
    t.patch_u64(testkit::HDR_RUN0 + 0x18, 3); // run 1: 3 pages, the file holds 2
    let e = assert_format_at(&t.bytes, 0xA8);
    assert!(e.reason.contains("file ends"), "{e}");

    let mut t = testkit::build(Variant::Full);
    t.patch_u64(testkit::HDR_RUN0 + 8, u64::MAX / 0x1000 + 1); // pages * 0x1000 overflows
    assert_format_at(&t.bytes, 0x98);
}

#[test]
fn absurd_run_counts() {
    for n in [43u32, 0x100, 0x4547_4150, 0xFFFF_FFFF] {
        let mut t = testkit::build(Variant::Full);
        t.patch_u32(testkit::HDR_RUNS, n);
        let e = assert_format_at(&t.bytes, 0x88);
        assert!(!e.reason.is_empty());
        // bitmap and RDMP dumps locate pages elsewhere: the descriptor is informational
        for v in [Variant::Bitmap, Variant::Rdmp] {
            let mut t = testkit::build(v);
            t.patch_u32(testkit::HDR_RUNS, n);
            let d = open(&t.bytes).unwrap();
            assert!(d.header().runs.is_empty());
            assert_eq!(d.modules.list.len(), 2);
        }
    }
    // 42 runs is the most the header holds; runs past the real ones are zero-length
    let mut t = testkit::build(Variant::Full);
    t.patch_u32(testkit::HDR_RUNS, 42);
    for i in 2..42 {
        t.patch_u64(testkit::HDR_RUN0 + 0x10 * i, 0x1000 + i as u64);
        t.patch_u64(testkit::HDR_RUN0 + 0x10 * i + 8, 0);
    }
    let d = open(&t.bytes).unwrap();
    assert_eq!(d.header().runs.len(), 42);
    assert_eq!(d.modules.list.len(), 2);
}

#[test]
fn zero_runs_opens_empty() {
    let mut t = testkit::build(Variant::Full);
    t.patch_u32(testkit::HDR_RUNS, 0);
    let d = open(&t.bytes).unwrap();
    assert!(d.present_runs().is_empty());
    assert!(d.kdbg.is_none());
    let e = d.translate(testkit::KERN_BASE).unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotPresent);
    assert!(e.reason.contains("PML4 page"), "{e}");
    assert!(
        d.notes.iter().any(|n| n.contains("not found")),
        "{:?}",
        d.notes
    );
}

#[test]
fn run_base_plus_count_overflows() {
    for (base, count) in [
        (u64::MAX - 2, 8),
        (u64::MAX, 1),
        (1 << 40, 1),
        ((1 << 40) - 1, 2),
    ] {
        let mut t = testkit::build(Variant::Full);
        t.patch_u64(testkit::HDR_RUN0 + 0x10, base);
        t.patch_u64(testkit::HDR_RUN0 + 0x18, count);
        let e = assert_format_at(&t.bytes, 0xA8);
        assert!(e.reason.contains("exceeds"), "{e}");
    }
}

#[test]
fn overlapping_or_unsorted_runs() {
    for base in [1u64, 5, 8, 0] {
        let mut t = testkit::build(Variant::Full);
        t.patch_u64(testkit::HDR_RUN0 + 0x10, base);
        let e = assert_format_at(&t.bytes, 0xA8);
        assert!(e.reason.contains("previous run"), "{e}");
    }
    // adjacent is fine
    let mut t = testkit::build(Variant::Full);
    t.patch_u64(testkit::HDR_RUN0 + 0x10, 9);
    let d = open(&t.bytes).unwrap();
    assert_eq!(d.present_runs().len(), 1);
}

// ---- bitmap header ----

#[test]
fn bitmap_bit_count_huge() {
    let len = testkit::build(Variant::Bitmap).bytes.len() as u64;
    for bits in [u64::MAX, u64::MAX - 63, 1 << 40, (len - 0x2038) * 8 + 1] {
        let mut t = testkit::build(Variant::Bitmap);
        t.patch_u64(testkit::BMP_BITS, bits);
        let e = open_err(&t.bytes);
        assert_eq!(e.kind, ErrorKind::Format, "bits 0x{bits:x}: {e}");
        assert_eq!(
            e.location,
            Location::FileOffset(0x2030),
            "bits 0x{bits:x}: {e}"
        );
    }
    // a bitmap that reaches into the first page: FirstPage overlaps it
    let mut t = testkit::build(Variant::Bitmap);
    t.patch_u64(testkit::BMP_BITS, 0x8000);
    assert_format_at(&t.bytes, 0x2020);
}

#[test]
fn bitmap_bit_count_small() {
    // fewer bits than the stored pages: the pages past the end are simply absent
    let mut t = testkit::build(Variant::Bitmap);
    t.patch_u64(testkit::BMP_BITS, 0x1FF);
    let d = open(&t.bytes).unwrap();
    assert!(
        d.notes.iter().any(|n| n.contains("TotalPresentPages")),
        "{:?}",
        d.notes
    );
    assert_eq!(d.present_runs().len(), 1);
    assert_eq!(
        d.read_virtual(testkit::DRIVER_BASE, 2).unwrap_err().kind,
        ErrorKind::NotPresent
    );
    // zero bits: nothing stored
    t.patch_u64(testkit::BMP_BITS, 0);
    let d = open(&t.bytes).unwrap();
    assert!(d.present_runs().is_empty());
    exercise(&d);
}

#[test]
fn bitmap_first_page_bad() {
    let len = testkit::build(Variant::Bitmap).bytes.len() as u64;
    for first in [
        len,
        len - 0x1000,
        0x1_0000_0000,
        0xFFFF_FFFF_FFFF_F000,
        0x3001,
        0x3008,
        0x2000,
        0x2038,
        0,
    ] {
        let mut t = testkit::build(Variant::Bitmap);
        t.patch_u64(testkit::BMP_FIRST_PAGE, first);
        let e = assert_format_at(&t.bytes, 0x2020);
        assert!(
            e.reason.contains("FirstPage") || e.reason.contains("past the end"),
            "0x{first:x}: {e}"
        );
    }
}

#[test]
fn bitmap_header_signatures() {
    let mut t = testkit::build(Variant::Bitmap);
    t.patch(testkit::SUB_HEADER, b"XDMP");
    assert_format_at(&t.bytes, 0x2000);
    let mut t = testkit::build(Variant::Bitmap);
    t.patch(testkit::SUB_HEADER + 4, b"DU64");
    assert_format_at(&t.bytes, 0x2004);
    // TotalPresentPages that disagrees with the bitmap: the bitmap is trusted, with a note
    let mut t = testkit::build(Variant::Bitmap);
    t.patch_u64(testkit::BMP_TOTAL_PRESENT, 99);
    let d = open(&t.bytes).unwrap();
    assert!(
        d.notes.iter().any(|n| n.contains("TotalPresentPages = 99")),
        "{:?}",
        d.notes
    );
    assert_eq!(d.modules.list.len(), 2);
}

// ---- RDMP header ----

#[test]
fn rdmp_bad_metadata_size() {
    for size in [0u64, 0x1F, 0x20, 0xFD0, 0xFF0, 0x1000, u64::MAX] {
        let mut t = testkit::build(Variant::Rdmp);
        t.patch_u64(testkit::RDMP_METADATA_SIZE, size);
        let e = assert_format_at(&t.bytes, 0x2010);
        assert!(e.reason.contains("MetadataSize"), "0x{size:x}: {e}");
    }
    // MetadataSize and FirstPageOffset that agree only modulo 2^64
    let mut t = testkit::build(Variant::Rdmp);
    t.patch_u64(testkit::RDMP_METADATA_SIZE, u64::MAX);
    t.patch_u64(testkit::RDMP_FIRST_PAGE, 0x201F);
    assert_format_at(&t.bytes, 0x2010);
    // consistent, but the pages would start past the end of the file
    let mut t = testkit::build(Variant::Rdmp);
    t.patch_u64(testkit::RDMP_METADATA_SIZE, 0x10_0000 - 0x2020);
    t.patch_u64(testkit::RDMP_FIRST_PAGE, 0x10_0000);
    let e = open_err(&t.bytes);
    assert_eq!(e.kind, ErrorKind::Format, "{e}");
}

#[test]
fn rdmp_bad_ranges() {
    let m = testkit::build(Variant::Rdmp);
    let cases: [(u64, u64, u64, u64); 6] = [
        (1, 8, 0x200, 3),                 // more pages than stored
        (1, 8, 5, 2),                     // overlapping
        (1, 8, u64::MAX, 2),              // PFN + count overflows
        (1, 8, u64::MAX - 1, 1),          // PFN past the physical address space
        (1, u64::MAX / 0x1000 + 1, 0, 0), // page bytes overflow
        (1, 0xFFFF_FFFF, 0x200, 2),       // far too many pages
    ];
    for (a, an, b, bn) in cases {
        let mut t = testkit::build(Variant::Rdmp);
        t.patch_u64(testkit::RDMP_TOTAL_PAGES, u64::MAX);
        t.patch_u64(testkit::RDMP_RANGES, a);
        t.patch_u64(testkit::RDMP_RANGES + 8, an);
        t.patch_u64(testkit::RDMP_RANGES + 16, b);
        t.patch_u64(testkit::RDMP_RANGES + 24, bn);
        let e = open_err(&t.bytes);
        assert_eq!(e.kind, ErrorKind::Format, "{a:x}/{an:x} {b:x}/{bn:x}: {e}");
        assert!(
            matches!(e.location, Location::FileOffset(o) if o >= 0x2030),
            "{e}"
        );
    }
    // TotalNumberOfPages bounds the list (type 0xA): the driver range is not read
    let mut t = testkit::build(Variant::Rdmp);
    t.patch_u64(testkit::RDMP_TOTAL_PAGES, 8);
    let d = open(&t.bytes).unwrap();
    assert_eq!(d.present_runs().len(), 1);
    assert_eq!(d.modules.list.len(), 2, "entries live below PFN 9");
    assert!(d.read_virtual(testkit::DRIVER_BASE, 2).is_err());
    // a PFN-0 entry ends the list
    let mut t = testkit::build(Variant::Rdmp);
    t.patch_u64(testkit::RDMP_RANGES + 16, 0);
    assert_eq!(open(&t.bytes).unwrap().present_runs().len(), 1);
    // marker / signatures
    let mut t = testkit::build(Variant::Rdmp);
    t.patch_u32(testkit::SUB_HEADER, 0x41);
    assert_format_at(&t.bytes, 0x2000);
    let mut t = testkit::build(Variant::Rdmp);
    t.patch(testkit::SUB_HEADER + 4, b"SDMP");
    assert_format_at(&t.bytes, 0x2000);
    drop(m);
}

// ---- page tables ----

#[track_caller]
fn within(limit_ms: u64, f: impl FnOnce()) {
    let t0 = Instant::now();
    f();
    assert!(
        t0.elapsed() < Duration::from_millis(limit_ms),
        "took {:?}",
        t0.elapsed()
    );
}

#[test]
fn page_table_loops_terminate() {
    for v in Variant::ALL {
        // PML4[0] -> the PML4 itself: VA 0 walks PML4 four times and lands on the PML4 page
        let mut t = testkit::build(v);
        t.patch_pa_u64(0x1000, 0x1000 | 0x63);
        let d = open(&t.bytes).unwrap();
        within(5_000, || {
            let tr = d.translate(0x10).unwrap();
            assert_eq!((tr.pa, tr.page_size), (0x1010, 0x1000));
            assert_eq!(
                d.read_virtual(0x0, 8).unwrap(),
                (0x1000u64 | 0x63).to_le_bytes()
            );
        });
        // PD[4] -> the PD: the PD is read as a page table
        let mut t = testkit::build(v);
        t.patch_pa_u64(0x3000 + 4 * 8, 0x3000 | 0x63);
        let d = open(&t.bytes).unwrap();
        let va = testkit::KERNEL_REGION + 4 * 0x20_0000;
        // PT slot 0 of that "page table" is PD[0], which names the real PT page
        assert_eq!(d.translate(va).unwrap().pa, 0x4000);
        // PT slot 1 is the 2 MiB PDE, read as a PTE: its PFN 0x201 (PAT bit) is taken as is
        assert_eq!(d.translate(va + 0x1000).unwrap().pa, 0x20_1000);
        assert!(d.translate(va + 0x2000).is_err());
        exercise(&d);
    }
}

#[test]
fn every_entry_points_to_the_pml4() {
    // All 512 entries of the PML4 name the PML4: every canonical VA translates (to the PML4
    // page), and the KDBG / image / module scans over that address space must still end.
    let mut t = testkit::build(Variant::Full);
    for i in 0..512 {
        t.patch_pa_u64(0x1000 + 8 * i, 0x1000 | 0x63);
    }
    within(60_000, || {
        let d = open(&t.bytes).unwrap();
        // the tag is in physical memory, but its KernBase maps to the PML4 page, not an image
        assert!(d.kdbg.is_none(), "{:?}", d.notes);
        exercise(&d);
        assert_eq!(d.translate(testkit::KERN_BASE + 0x18).unwrap().pa, 0x1018);
    });
}

#[test]
fn page_table_entries_with_huge_pfns() {
    let mut t = testkit::build(Variant::Full);
    // PTE naming the top of the 52-bit space, PDE 2 MiB page at the top, PDPTE 1 GiB at the top
    t.patch_pa_u64(0x4000 + 0x13 * 8, 0xFFFF_FFFF_FFFF_FFFF);
    t.patch_pa_u64(0x3000 + 2 * 8, 0x7FFF_FFFF_FFFF_FFFF);
    t.patch_pa_u64(0x2000 + 2 * 8, 0xFFFF_FFFF_FFFF_FFFF);
    let d = open(&t.bytes).unwrap();
    let a = d.translate(testkit::NT_HOLE).unwrap();
    assert_eq!(a.pa, 0x000F_FFFF_FFFF_F000);
    let e = d.read_virtual(testkit::NT_HOLE + 0xFF8, 16).unwrap_err();
    assert_eq!(e.location, Location::Virtual(testkit::NT_HOLE + 0xFF8));
    assert_eq!(
        d.translate(testkit::PDE_NOT_PRESENT_VA + 0x1F_FFFF)
            .unwrap()
            .pa,
        0x000F_FFFF_FFFF_FFFF
    );
    assert_eq!(
        d.translate(testkit::PDPTE_NOT_PRESENT_VA + 0x3FFF_FFFF)
            .unwrap()
            .pa,
        0x000F_FFFF_FFFF_FFFF
    );
    exercise(&d);
}

// ---- module list ----

fn entry_pa(i: usize) -> u64 {
    testkit::pool_pa(testkit::POOL_ENTRIES[i])
}

#[test]
fn module_list_cycle_not_through_head() {
    for v in Variant::ALL {
        // entry 1 -> entry 0 -> entry 1 -> ...
        let mut t = testkit::build(v);
        t.patch_pa_u64(entry_pa(1), testkit::POOL_VA + testkit::POOL_ENTRIES[0]);
        let d = within_open(&t);
        assert_eq!(d.modules.list.len(), 2);
        assert!(
            d.modules.notes.iter().any(|n| n.contains("loops")),
            "{:?}",
            d.modules.notes
        );
        assert!(d.notes.iter().any(|n| n.contains("loops")));
        // entry 0 -> itself
        let mut t = testkit::build(v);
        t.patch_pa_u64(entry_pa(0), testkit::POOL_VA + testkit::POOL_ENTRIES[0]);
        let d = within_open(&t);
        assert_eq!(d.modules.list.len(), 1);
        assert!(d.modules.notes.iter().any(|n| n.contains("loops")));
    }
}

fn within_open(t: &TestDump) -> Dump {
    let t0 = Instant::now();
    let d = open(&t.bytes).unwrap();
    assert!(t0.elapsed() < Duration::from_secs(20));
    d
}

#[test]
fn module_list_broken_links() {
    let cases: [(u64, &str); 5] = [
        (testkit::NT_HOLE, "unreadable"),    // Flink into a non-present page
        (testkit::NT_MISSING, "unreadable"), // Flink into a page not in the dump
        (u64::MAX - 7, "unreadable"),        // entry + field offsets wrap around
        (u64::MAX, "unreadable"),
        (0, "unreadable"),
    ];
    for (flink, why) in cases {
        let mut t = testkit::build(Variant::Full);
        t.patch_pa_u64(entry_pa(0), flink);
        let d = open(&t.bytes).unwrap();
        assert_eq!(d.modules.list.len(), 1, "flink 0x{flink:x}");
        assert!(
            d.modules.notes.iter().any(|n| n.contains(why)),
            "flink 0x{flink:x}: {:?}",
            d.modules.notes
        );
        exercise(&d);
    }
    // empty list: the head points to itself
    let mut t = testkit::build(Variant::Full);
    let head = testkit::data_va(testkit::DATA_PS_LOADED_MODULE_LIST);
    t.patch_pa_u64(testkit::data_pa(testkit::DATA_PS_LOADED_MODULE_LIST), head);
    let d = open(&t.bytes).unwrap();
    assert!(d.modules.list.is_empty());
    assert!(d.modules.notes.is_empty());
    assert_eq!(d.symbolize(testkit::KERN_BASE), None);
    assert_eq!(d.kernel_base(), Some(testkit::KERN_BASE), "from the KDBG");
    // an unreadable head (no KDBG to correct it): the module list is empty, with a note
    let mut t = testkit::build_with(&Options {
        header_kdbg_pointer: false,
        ..Options::default()
    });
    t.patch_u64(testkit::HDR_PS_LOADED_MODULE_LIST, testkit::NT_HOLE);
    let kdbg_tag = testkit::data_pa(testkit::DATA_KDBG) + 0x10;
    t.patch_pa(kdbg_tag, b"XXXX");
    let d = open(&t.bytes).unwrap();
    assert!(d.kdbg.is_none());
    assert!(d.modules.list.is_empty());
    assert!(
        d.notes
            .iter()
            .any(|n| n.contains("PsLoadedModuleList head")),
        "{:?}",
        d.notes
    );
}

#[test]
fn module_names_hostile() {
    let mut t = testkit::build(Variant::Full);
    let e = entry_pa(0);
    t.patch_pa(e + 0x58, &0xFFFFu16.to_le_bytes()); // BaseDllName.Length: capped
    t.patch_pa(e + 0x48, &0x0007u16.to_le_bytes()); // odd FullDllName.Length
    t.patch_pa_u64(entry_pa(1) + 0x58 + 8, testkit::NT_HOLE); // Buffer in a hole
    let d = open(&t.bytes).unwrap();
    assert_eq!(d.modules.list.len(), 1, "{:?}", d.modules.notes);
    assert_eq!(d.modules.list[0].path, "\\Sy");
    assert!(d.modules.list[0].name.len() > 12);
    assert!(d.modules.notes.iter().any(|n| n.contains("unreadable")));
    exercise(&d);
    // zero-length names and a null buffer read as empty names
    let mut t = testkit::build(Variant::Full);
    t.patch_pa(entry_pa(1) + 0x58, &0u16.to_le_bytes());
    t.patch_pa_u64(entry_pa(1) + 0x48 + 8, 0);
    let d = open(&t.bytes).unwrap();
    assert_eq!(d.modules.list[1].name, "");
    assert_eq!(d.modules.list[1].path, "");
    assert_eq!(d.modules.short_name(1), "");
}

#[test]
fn modules_overlapping_and_wrapping() {
    let mut t = testkit::build(Variant::Full);
    // the driver claims a size that runs past the top of the address space
    t.patch_pa(entry_pa(1) + 0x40, &u32::MAX.to_le_bytes());
    t.patch_pa_u64(entry_pa(1) + 0x30, u64::MAX - 0x10);
    let d = open(&t.bytes).unwrap();
    assert_eq!(d.symbolize(u64::MAX).as_deref(), Some("testdrv+0x10"));
    assert_eq!(
        d.symbolize(testkit::KERN_BASE + 1).as_deref(),
        Some("nt+0x1")
    );
    exercise(&d);
}

// ---- KDBG ----

#[test]
fn kdbg_size_bad() {
    let size_pa = testkit::data_pa(testkit::DATA_KDBG) + 0x14;
    for size in [0u32, 8, 0x2FF, 0x1001, 0xFFFF_FFFF] {
        let mut t = testkit::build(Variant::Full);
        t.patch_pa(size_pa, &size.to_le_bytes());
        let d = open(&t.bytes).unwrap();
        assert!(d.kdbg.is_none(), "size 0x{size:x}");
        assert!(
            d.notes
                .iter()
                .any(|n| n.contains("debugger data block not found")),
            "{:?}",
            d.notes
        );
        // the header's module list still works
        assert_eq!(d.modules.list.len(), 2);
        exercise(&d);
    }
    // the largest accepted size reads past the block into the pool page: the block is
    // taken, with a note that the size differs from the profile's
    let mut t = testkit::build(Variant::Full);
    t.patch_pa(size_pa, &0x1000u32.to_le_bytes());
    let d = open(&t.bytes).unwrap();
    let k = d.kdbg.as_ref().expect("found by physical scan");
    assert_eq!(k.size, 0x1000);
    assert!(
        k.notes.iter().any(|n| n.contains("Header.Size")),
        "{:?}",
        k.notes
    );
}

#[test]
fn kdbg_encoded_but_flag_clear_or_keys_wrong() {
    let mut t = testkit::build(Variant::EncodedKdbg);
    t.patch_pa(testkit::data_pa(testkit::DATA_KDP_DATA_BLOCK_ENCODED), &[0]);
    let d = open(&t.bytes).unwrap();
    assert!(d.kdbg.is_none());
    assert!(
        d.notes.iter().any(|n| n.contains("KdpDataBlockEncoded")),
        "{:?}",
        d.notes
    );
    assert_eq!(d.modules.list.len(), 2);

    let mut t = testkit::build(Variant::EncodedKdbg);
    t.patch_pa_u64(testkit::data_pa(testkit::DATA_KI_WAIT_NEVER), 0x1111);
    let d = open(&t.bytes).unwrap();
    assert!(d.kdbg.is_none());
    assert!(
        d.notes.iter().any(|n| n.contains("wrong keys")),
        "{:?}",
        d.notes
    );

    // the snippet's RIP-relative operands point anywhere: no panic, no KDBG
    let mut t = testkit::build(Variant::EncodedKdbg);
    let code = testkit::PFN_NT_TEXT * 0x1000 + testkit::TEXT_KD_COPY_DATA_BLOCK;
    for rel in [code + 2, code + 12, code + 19, code + 26] {
        t.patch_pa(rel, &0x7FFF_FFFFu32.to_le_bytes());
    }
    let d = open(&t.bytes).unwrap();
    assert!(d.kdbg.is_none());
    exercise(&d);
}

#[test]
fn kdbg_pointer_hostile() {
    for ptr in [
        1,
        u64::MAX,
        u64::MAX - 0x17,
        0xFFFF_FFFF_FFFF_F000,
        testkit::NT_HOLE,
        testkit::NT_MISSING,
        testkit::KERN_BASE,
        testkit::NON_CANONICAL_VA,
    ] {
        let mut t = testkit::build(Variant::Full);
        t.patch_u64(testkit::HDR_KDBG, ptr);
        let d = open(&t.bytes).unwrap();
        // always recovered by a scan
        let k = d.kdbg.as_ref().unwrap();
        assert_eq!(k.kern_base(), Some(testkit::KERN_BASE), "0x{ptr:x}");
        exercise(&d);
    }
}

#[test]
fn kdbg_mz_near_top_of_address_space() {
    // The top 4 KiB page of the address space holds an "MZ"/"PE" header (PT of PML4 slot
    // 0x1FF): image arithmetic near u64::MAX must not overflow.
    let mut t = testkit::build(Variant::Full);
    // PML4[0x1FF] -> PDPT; PDPT[0x1FF] -> PD; PD[0x1FF] -> PT; PT[0x1FF] -> nt header page
    t.patch_pa_u64(0x1000 + 0x1FF * 8, 0x2000 | 0x63);
    t.patch_pa_u64(0x2000 + 0x1FF * 8, 0x3000 | 0x63);
    t.patch_pa_u64(0x3000 + 0x1FF * 8, 0x4000 | 0x63);
    t.patch_pa_u64(0x4000 + 0x1FF * 8, 0x5000 | 0x63);
    // lfanew at its largest: PE signature at the last bytes of the page
    t.patch_pa(0x5000 + 0x3C, &0xFFCu32.to_le_bytes());
    t.patch_pa(0x5000 + 0xFFC, b"PE\0\0");
    for ptr in [u64::MAX - 0x17, u64::MAX - 0x100] {
        t.patch_u64(testkit::HDR_KDBG, ptr);
        t.patch_u64(testkit::HDR_PS_LOADED_MODULE_LIST, u64::MAX - 0xF);
        let d = open(&t.bytes).unwrap();
        exercise(&d);
    }
    // module list head near the top, with Flink wrapping
    let mut t2 = testkit::build(Variant::Full);
    t2.patch_pa_u64(testkit::data_pa(0), u64::MAX - 3);
    let d = open(&t2.bytes).unwrap();
    assert!(!d.modules.notes.is_empty());
}

// ---- not a (supported) dump ----

#[test]
fn empty_and_tiny_files() {
    for n in 0..8 {
        let e = assert_format_at(&b"PAGEDU64"[..n], 0);
        assert!(e.reason.contains("too small"), "{e}");
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("empty.dmp");
    std::fs::write(&p, b"").unwrap();
    let e = Dump::open(&p, &DumpOptions::default()).err().unwrap();
    assert_eq!(
        (e.kind, e.location),
        (ErrorKind::Format, Location::FileOffset(0))
    );
    let e = Dump::open(&dir.path().join("absent.dmp"), &DumpOptions::default())
        .err()
        .unwrap();
    assert_eq!(e.kind, ErrorKind::Io);
    // a corrupt .zst
    let p = dir.path().join("bad.dmp.zst");
    std::fs::write(&p, [0x28, 0xB5, 0x2F, 0xFD, 1, 2, 3, 4, 5, 6]).unwrap();
    let e = Dump::open(&p, &DumpOptions::default()).err().unwrap();
    assert_eq!(e.kind, ErrorKind::Format);
}

#[test]
fn random_bytes() {
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    for len in [8usize, 100, 0x1FFF, 0x2000, 0x3000, 0x9000] {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let e = assert_format_at(&bytes, 0);
        assert!(e.reason.contains("not a Windows crash dump"), "{e}");
    }
    let e = assert_format_at(b"PAGEXXXXXXXXXXXX", 4);
    assert!(e.reason.contains("ValidDump"));
}

#[test]
fn user_minidump_is_unsupported() {
    let e = open_err(&testkit::user_minidump());
    assert_eq!(e.kind, ErrorKind::Unsupported, "{e}");
    assert!(e.reason.contains("user-mode minidump"), "{e}");
}

#[test]
fn x86_pagedump_is_unsupported() {
    let e = open_err(&testkit::x86_pagedump());
    assert_eq!(e.kind, ErrorKind::Unsupported, "{e}");
    assert!(e.reason.contains("32-bit"), "{e}");
    // even when truncated right after the signature
    let e = open_err(b"PAGEDUMP");
    assert_eq!(e.kind, ErrorKind::Unsupported);
}

#[test]
fn triage_and_unknown_dump_types() {
    for v in Variant::ALL {
        let mut t = testkit::build(v);
        t.patch_u32(testkit::HDR_DUMP_TYPE, 4);
        let e = open_err(&t.bytes);
        assert_eq!(e.kind, ErrorKind::Unsupported, "{e}");
        assert!(e.reason.contains("triage"), "{e}");
        t.patch_u32(testkit::HDR_DUMP_TYPE, 2);
        let e = open_err(&t.bytes);
        assert_eq!(e.kind, ErrorKind::Unsupported, "{e}");
        assert!(e.reason.contains("DumpType 2"), "{e}");
        for ty in [0u32, 3, 7, 0xB, 0x4547_4150, u32::MAX] {
            t.patch_u32(testkit::HDR_DUMP_TYPE, ty);
            let e = assert_format_at(&t.bytes, 0xF98);
            assert!(e.reason.contains("unknown DumpType"), "{e}");
        }
    }
    // an x86 machine type in a 64-bit header
    let mut t = testkit::build(Variant::Full);
    t.patch_u32(testkit::HDR_MACHINE, 0x14C);
    let e = open_err(&t.bytes);
    assert_eq!(e.kind, ErrorKind::Unsupported);
    assert!(e.reason.contains("AMD64"), "{e}");
}

// ---- random corruption (a fuzzer in miniature, deterministic) ----

#[test]
fn random_corruption_never_panics() {
    let mut x = 0xDEAD_BEEF_CAFE_F00Du64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let interesting: [u64; 8] = [
        0,
        1,
        0xFFFF_FFFF,
        u64::MAX,
        u64::MAX - 0xF,
        0x8000_0000_0000_0000,
        0xFFFF_F800_0001_0000,
        0x1000,
    ];
    for v in Variant::ALL {
        let base = testkit::build(v);
        for _ in 0..150 {
            let mut b = base.bytes.clone();
            for _ in 0..1 + next() % 6 {
                // aim mostly at the header, the sub-header and the structure pages
                let region = match next() % 4 {
                    0 => 0..0x1100,
                    1 => 0x2000..0x2100,
                    _ => 0..b.len(),
                };
                let off = region.start + (next() as usize) % (region.end - region.start);
                let off = off.min(b.len() - 8) & !7;
                let val = if next() % 2 == 0 {
                    interesting[(next() % 8) as usize]
                } else {
                    next()
                };
                b[off..off + 8].copy_from_slice(&val.to_le_bytes());
            }
            if let Ok(d) = open(&b) {
                exercise(&d);
            }
        }
    }
}
