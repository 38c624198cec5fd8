//! The reader recovers every fact of the testkit dumps: header fields, page maps, 4 KiB / 2 MiB /
//! 1 GiB translations, holes with their location, modules and symbols, and the KDBG by each of
//! the four ways it can be found.

use poolscope_core::container::{Container, PageMap};
use poolscope_core::kernel::KdbgSource;
use poolscope_core::memory::Translation;
use poolscope_core::testkit::{self, Layout, Options, Variant};
use poolscope_core::{Dump, DumpOptions, DumpType, ErrorKind, Location, OpenOptions, Run};

fn open(t: &testkit::TestDump) -> Dump {
    Dump::from_bytes(t.bytes.clone(), None).expect("testkit dump opens")
}

fn expected_type(v: Variant) -> DumpType {
    match v {
        Variant::Full | Variant::EncodedKdbg => DumpType::Full,
        Variant::Bitmap => DumpType::KernelBitmap,
        Variant::Rdmp => DumpType::CompleteMemory,
    }
}

#[test]
fn sizes_are_small() {
    for v in Variant::ALL {
        let t = testkit::build(v);
        assert!(
            t.bytes.len() <= 64 * 1024,
            "{}: {}",
            v.name(),
            t.bytes.len()
        );
        assert_eq!(t.bytes.len() as u64, t.facts.required_dump_space);
    }
}

#[test]
fn header_fields() {
    for v in Variant::ALL {
        let t = testkit::build(v);
        let f = &t.facts;
        let d = open(&t);
        let h = d.header();
        assert_eq!(d.dump_type(), expected_type(v), "{}", v.name());
        assert_eq!(h.dump_type_raw, f.dump_type_raw);
        assert_eq!(h.major_version, f.major_version);
        assert_eq!(h.minor_version, f.build);
        assert_eq!(h.build(), f.build);
        assert_eq!(h.directory_table_base, f.dtb);
        assert_eq!(h.pfn_database, f.header_pfn_database);
        assert_eq!(h.ps_loaded_module_list, f.header_module_list);
        assert_eq!(h.ps_active_process_head, f.ps_active_process_head);
        assert_eq!(h.machine_image_type, f.machine);
        assert_eq!(h.number_processors, f.number_processors);
        assert_eq!(h.bugcheck_code, f.bugcheck_code);
        assert_eq!(h.bugcheck_parameters, f.bugcheck_parameters);
        assert_eq!(&h.version_user[..], &b"PAGE".repeat(8)[..]);
        assert_eq!(h.kd_debugger_data_block, f.header_kdbg_pointer);
        let runs: Vec<(u64, u64)> = h.runs.iter().map(|r| (r.base_page, r.page_count)).collect();
        assert_eq!(runs, f.descriptor_runs, "{}", v.name());
        assert_eq!(h.number_of_pages, f.descriptor_pages);
        assert_eq!(h.required_dump_space, f.required_dump_space);
        assert_eq!(h.system_time, f.system_time);
        assert_eq!(h.system_time_unix(), Some(1_704_067_200.0));
        assert_eq!(h.system_up_time, f.system_up_time);
        assert_eq!(h.uptime_seconds(), 3600.0);
        assert_eq!(h.comment, "", "a PAGE-filled comment reads as empty");
        assert_eq!(h.product_type, f.product_type);
        assert_eq!(h.suite_mask, f.suite_mask);
        assert_eq!(h.kd_secondary_version, f.kd_secondary_version);
        assert_eq!(h.context_rip, f.context_rip);
        assert_eq!(h.context_rsp, f.context_rsp);
        assert_eq!(h.exception_code, f.exception_code);
        assert_eq!(h.exception_address, f.exception_address);
    }
}

#[test]
fn page_maps_agree_with_layout() {
    for v in Variant::ALL {
        let t = testkit::build(v);
        let c = Container::from_bytes(t.bytes.clone()).unwrap();
        assert!(c.notes.is_empty(), "{}: {:?}", v.name(), c.notes);
        assert_eq!(c.pages.page_count(), t.facts.stored_pfns.len() as u64);
        assert_eq!(
            c.pages.present_runs(&c.bytes),
            vec![
                Run {
                    base_page: 1,
                    page_count: 8
                },
                Run {
                    base_page: 0x200,
                    page_count: 2
                }
            ]
        );
        for &(pfn, off) in &t.facts.page_offsets {
            assert_eq!(c.pages.lookup(pfn, &c.bytes), Some(off), "{}", v.name());
            let want = &t.bytes[off as usize..off as usize + 0x1000];
            assert_eq!(c.page(pfn), Some(want));
        }
        for pfn in [
            0,
            9,
            testkit::PFN_MISSING,
            0x1FF,
            0x202,
            0x2EF,
            0x2F0,
            1 << 40,
        ] {
            assert_eq!(c.pages.lookup(pfn, &c.bytes), None, "pfn 0x{pfn:x}");
        }
        match (&c.pages, t.facts.layout) {
            (
                PageMap::Bitmap {
                    bits, first_page, ..
                },
                Layout::Bitmap,
            ) => {
                assert_eq!(*bits, t.facts.bitmap_bits);
                assert_eq!(*first_page, t.facts.first_page);
            }
            (PageMap::Extents(_), Layout::Full | Layout::Rdmp) => {}
            _ => panic!("{}: wrong page map kind", v.name()),
        }
    }
}

#[test]
fn other_dump_types_of_each_layout() {
    let cases = [
        (Layout::Bitmap, 6, DumpType::LiveKernelBitmap),
        (Layout::Rdmp, 8, DumpType::KernelMemory),
        (Layout::Rdmp, 9, DumpType::KernelAndUserMemory),
    ];
    for (layout, ty, want) in cases {
        let t = testkit::build_with(&Options {
            layout,
            dump_type: Some(ty),
            ..Options::default()
        });
        let d = open(&t);
        assert_eq!(d.dump_type(), want);
        assert_eq!(d.modules.list.len(), 2);
        assert_eq!(d.kdbg.as_ref().unwrap().source, KdbgSource::HeaderPointer);
    }
    // "FDMP": a complete memory dump written in bitmap form.
    let mut t = testkit::build(Variant::Bitmap);
    t.patch(testkit::SUB_HEADER, b"FDMP");
    let d = open(&t);
    assert_eq!(d.dump_type(), DumpType::CompleteBitmap);
    assert_eq!(d.read_physical(0x7100, 4).unwrap(), t.facts.kdbg_block[..4]);
}

fn check_translations(t: &testkit::TestDump, d: &Dump, what: &str) {
    let space = d.space();
    let mut tr = space.translator();
    for f in &t.facts.translations {
        let want = Translation {
            pa: f.pa,
            page_size: f.page_size,
            transition: f.transition,
        };
        assert_eq!(d.translate(f.va).unwrap(), want, "{what}: va 0x{:x}", f.va);
        // twice through the cached translator: the cache must give the same answer
        assert_eq!(
            tr.translate(f.va).unwrap(),
            want,
            "{what}: cached 0x{:x}",
            f.va
        );
        assert_eq!(
            tr.translate(f.va).unwrap(),
            want,
            "{what}: cached 0x{:x}",
            f.va
        );
    }
    // and in reverse order with a fresh cache
    let mut tr = space.translator();
    for f in t.facts.translations.iter().rev() {
        assert_eq!(
            tr.translate(f.va).unwrap().pa,
            f.pa,
            "{what}: rev 0x{:x}",
            f.va
        );
    }
}

#[test]
fn translations_4k_2m_1g() {
    for v in Variant::ALL {
        let t = testkit::build(v);
        let d = open(&t);
        check_translations(&t, &d, v.name());
        let kinds: Vec<u64> = t.facts.translations.iter().map(|f| f.page_size).collect();
        for size in [0x1000, 0x20_0000, 0x4000_0000] {
            assert!(kinds.contains(&size));
        }
    }
}

#[test]
fn dtb_pcid_bits_are_ignored() {
    for layout in [Layout::Full, Layout::Bitmap, Layout::Rdmp] {
        let t = testkit::build_with(&Options {
            layout,
            dtb: (testkit::PFN_PML4 * 0x1000) | 0x2A,
            ..Options::default()
        });
        let d = open(&t);
        assert_eq!(d.space().dtb, 0x1000);
        check_translations(&t, &d, "pcid");
        assert_eq!(d.modules.list.len(), 2);
    }
}

#[test]
fn virtual_reads_match_physical() {
    for v in Variant::ALL {
        let t = testkit::build(v);
        let d = open(&t);
        for f in &t.facts.translations {
            if !t.facts.stored_pfns.contains(&(f.pa / 0x1000)) {
                // mapped, but not stored: the read fails at the virtual address
                let e = d.read_virtual(f.va, 1).unwrap_err();
                assert_eq!(e.location, Location::Virtual(f.va));
                continue;
            }
            let n = (0x1000 - (f.va & 0xFFF)).min(64) as usize;
            let virt = d.read_virtual(f.va, n).unwrap();
            let phys = d.read_physical(f.pa, n).unwrap();
            assert_eq!(virt, phys, "{}: va 0x{:x}", v.name(), f.va);
            let off = t.facts.file_offset_of_pa(f.pa).unwrap() as usize;
            assert_eq!(phys, &t.bytes[off..off + n]);
        }
        // the driver's pattern page through the 2 MiB page and through the 1 GiB page
        let want: Vec<u8> = (0x10..0x30u32).map(|i| (i as u8) ^ 0xA5).collect();
        assert_eq!(
            d.read_virtual(testkit::DRIVER_BASE + 0x1010, 0x20).unwrap(),
            want
        );
        assert_eq!(
            d.read_virtual(testkit::HUGE_VA + 0x20_1010, 0x20).unwrap(),
            want
        );
        // a read across two present 4 KiB pages
        let cross = d.read_virtual(testkit::KERN_BASE + 0xFF8, 16).unwrap();
        let mut want = d.read_physical(0x5FF8, 8).unwrap();
        want.extend(d.read_physical(0x6000, 8).unwrap());
        assert_eq!(cross, want);
        // MZ of both images
        assert_eq!(d.read_virtual(testkit::KERN_BASE, 2).unwrap(), b"MZ");
        assert_eq!(d.read_virtual(testkit::DRIVER_BASE, 2).unwrap(), b"MZ");
    }
}

#[test]
fn holes_report_their_location() {
    for v in Variant::ALL {
        let t = testkit::build(v);
        let d = open(&t);
        for &(va, why) in &t.facts.not_present {
            let e = d.translate(va).unwrap_err();
            assert_eq!(e.kind, ErrorKind::NotPresent, "{}: 0x{va:x}: {e}", v.name());
            assert_eq!(e.location, Location::Virtual(va));
            assert!(
                e.reason.contains(why),
                "0x{va:x}: {:?} lacks {why:?}",
                e.reason
            );
            let e = d.read_virtual(va, 8).unwrap_err();
            assert_eq!(
                (e.kind, e.location),
                (ErrorKind::NotPresent, Location::Virtual(va))
            );
        }
        for &(va, pa) in &t.facts.unreadable {
            assert_eq!(d.translate(va).unwrap().pa, pa);
            let e = d.read_virtual(va, 8).unwrap_err();
            assert_eq!(e.kind, ErrorKind::NotPresent);
            assert_eq!(e.location, Location::Virtual(va), "{e}");
            let e = d.read_physical(pa + 0x10, 8).unwrap_err();
            assert_eq!(e.kind, ErrorKind::NotPresent);
            assert_eq!(e.location, Location::Physical(pa + 0x10), "{e}");
        }
        // a virtual read that runs off the end of nt's data into the hole names the hole
        let e = d.read_virtual(testkit::NT_DATA + 0xFF8, 16).unwrap_err();
        assert_eq!(e.location, Location::Virtual(testkit::NT_HOLE), "{e}");
        // a physical read that runs past the last stored page of a run names the first lost byte
        let e = d.read_physical(0x8FF8, 16).unwrap_err();
        assert_eq!(
            (e.kind, e.location),
            (ErrorKind::NotPresent, Location::Physical(0x9000))
        );
        // physical addresses far outside anything stored
        for pa in [0, 0x2F_0000, 1 << 40, u64::MAX - 7] {
            let e = d.read_physical(pa, 8).unwrap_err();
            assert_eq!(e.kind, ErrorKind::NotPresent, "0x{pa:x}");
        }
        assert!(d.read_physical(u64::MAX, 2).is_err());
        assert!(d.read_virtual(u64::MAX, 2).is_err());
        assert_eq!(d.read_virtual(testkit::KERN_BASE, 0).unwrap(), b"");
    }
}

#[test]
fn modules_and_symbols() {
    for v in Variant::ALL {
        let t = testkit::build(v);
        let d = open(&t);
        let got: Vec<testkit::ModuleFact> = d
            .modules
            .list
            .iter()
            .map(|m| testkit::ModuleFact {
                name: m.name.clone(),
                path: m.path.clone(),
                base: m.base,
                size: m.size,
                entry: m.entry,
            })
            .collect();
        assert_eq!(got, t.facts.modules, "{}", v.name());
        assert!(d.modules.notes.is_empty(), "{:?}", d.modules.notes);
        for (addr, want) in &t.facts.symbols {
            assert_eq!(d.symbolize(*addr).as_deref(), Some(want.as_str()));
        }
        assert_eq!(d.modules.short_name(1), "testdrv");
        for addr in [
            0,
            testkit::KERN_BASE - 1,
            testkit::KERN_BASE + testkit::NT_SIZE,
            testkit::DRIVER_BASE + testkit::DRIVER_SIZE,
            u64::MAX,
        ] {
            assert_eq!(d.symbolize(addr), None, "0x{addr:x}");
        }
        assert_eq!(d.kernel_base(), Some(testkit::KERN_BASE));
        assert_eq!(
            d.symbolize(d.header().bugcheck_parameters[3]).as_deref(),
            Some("testdrv+0x1010")
        );
    }
}

fn check_kdbg_contents(t: &testkit::TestDump, d: &Dump) {
    let f = &t.facts;
    let k = d.kdbg.as_ref().expect("KDBG found");
    assert_eq!(k.size, f.kdbg_size);
    assert_eq!(k.block, f.kdbg_block);
    assert_eq!(k.kern_base(), Some(f.kern_base));
    assert_eq!(k.field("PsLoadedModuleList"), Some(f.ps_loaded_module_list));
    assert_eq!(
        k.field("PsActiveProcessHead"),
        Some(f.ps_active_process_head)
    );
    assert_eq!(k.value("MmPfnDatabase"), Some(f.mm_pfn_database));
    assert_eq!(
        k.value("CmNtCSDVersion"),
        Some(u64::from(f.cm_nt_csd_version))
    );
    assert_eq!(
        k.value("MmNumberOfPhysicalPages"),
        Some(f.mm_number_of_physical_pages)
    );
    assert_eq!(
        k.field("OffsetPrcbContext"),
        Some(u64::from(f.offset_prcb_context))
    );
    assert_eq!(k.strings.get("NtBuildLab"), Some(&f.nt_build_lab));
    assert!(k.notes.is_empty(), "{:?}", k.notes);
}

#[test]
fn kdbg_via_header_pointer() {
    for v in [Variant::Full, Variant::Bitmap, Variant::Rdmp] {
        let t = testkit::build(v);
        let d = open(&t);
        let k = d.kdbg.as_ref().unwrap();
        assert_eq!(k.source, KdbgSource::HeaderPointer, "{}", v.name());
        assert_eq!(k.va, Some(t.facts.kdbg_va));
        assert_eq!(d.profile.name, "win7sp1-x64");
        check_kdbg_contents(&t, &d);
    }
}

#[test]
fn kdbg_decoded() {
    let t = testkit::build(Variant::EncodedKdbg);
    // nothing in the file holds a plain owner tag
    assert!(!t.bytes.windows(4).any(|w| w == b"KDBG"));
    let d = open(&t);
    let enc = t.facts.encoding.unwrap();
    let k = d.kdbg.as_ref().unwrap();
    assert_eq!(
        k.source,
        KdbgSource::Decoded {
            kdp_data_block_encoded: enc.flag_va,
            ki_wait_never: enc.never,
            ki_wait_always: enc.always,
        }
    );
    assert_eq!(k.va, Some(t.facts.kdbg_va));
    assert_eq!(d.profile.name, "win10-19041-x64");
    assert_eq!(k.field("PteBase"), Some(testkit::PTE_BASE));
    check_kdbg_contents(&t, &d);
    assert_eq!(d.modules.list.len(), 2);
}

#[test]
fn encode_decode_roundtrip() {
    use poolscope_core::kernel::kdbg::{decode_word, encode_word};
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..1000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let (never, always, flag) = (x.rotate_left(7), x.rotate_left(23), x | (0xFFFF << 48));
        let w = encode_word(x, never, always, flag);
        assert_eq!(decode_word(w, never, always, flag), x);
    }
}

#[test]
fn kdbg_via_image_scan() {
    for layout in [Layout::Full, Layout::Bitmap, Layout::Rdmp] {
        let t = testkit::build_with(&Options {
            layout,
            header_kdbg_pointer: false,
            ..Options::default()
        });
        let d = open(&t);
        let k = d.kdbg.as_ref().unwrap();
        assert_eq!(k.source, KdbgSource::ImageScan, "{layout:?}: {:?}", d.notes);
        assert_eq!(k.va, Some(t.facts.kdbg_va));
        check_kdbg_contents(&t, &d);
        assert_eq!(d.modules.list.len(), 2);
    }
    // a header pointer into nt that is not the block: found by scanning below it
    let mut t = testkit::build(Variant::Full);
    t.patch_u64(testkit::HDR_KDBG, testkit::NT_DATA + 0x800);
    let d = open(&t);
    let k = d.kdbg.as_ref().unwrap();
    assert_eq!(k.source, KdbgSource::ImageScan, "{:?}", d.notes);
    assert_eq!(k.va, Some(t.facts.kdbg_va));
}

#[test]
fn kdbg_via_physical_scan() {
    for layout in [Layout::Full, Layout::Bitmap, Layout::Rdmp] {
        let t = testkit::build_with(&Options {
            layout,
            header_kdbg_pointer: false,
            header_module_list: false,
            ..Options::default()
        });
        let d = open(&t);
        let k = d.kdbg.as_ref().unwrap();
        assert_eq!(
            k.source,
            KdbgSource::PhysicalScan {
                pa: t.facts.kdbg_pa
            },
            "{layout:?}"
        );
        assert_eq!(k.va, None);
        check_kdbg_contents(&t, &d);
        // the module list comes from the KDBG's PsLoadedModuleList
        assert_eq!(d.modules.list.len(), 2);
        assert_eq!(
            d.symbolize(testkit::KERN_BASE + 0x10).as_deref(),
            Some("nt+0x10")
        );
    }
}

#[test]
fn open_from_file_and_zstd() {
    let dir = tempfile::tempdir().unwrap();
    for v in Variant::ALL {
        let t = testkit::build(v);
        let plain = dir.path().join(format!("{}.dmp", v.name()));
        std::fs::write(&plain, &t.bytes).unwrap();
        let d = Dump::open(&plain, &DumpOptions::default()).unwrap();
        assert!(!d.container.decompressed);
        assert_eq!(d.container.file_size(), t.bytes.len() as u64);
        assert_eq!(d.modules.list.len(), 2);
        check_translations(&t, &d, v.name());

        let zst = dir.path().join(format!("{}.dmp.zst", v.name()));
        std::fs::write(&zst, zstd::encode_all(&t.bytes[..], 3).unwrap()).unwrap();
        let d = Dump::open(&zst, &DumpOptions::default()).unwrap();
        assert!(d.container.decompressed);
        assert_eq!(d.container.file_size(), t.bytes.len() as u64);
        assert_eq!(
            d.symbolize(testkit::DRIVER_BASE + 4).as_deref(),
            Some("testdrv+0x4")
        );

        let small = DumpOptions {
            open: OpenOptions {
                max_decompressed: 0x2000,
                spool_dir: Some(dir.path().to_path_buf()),
            },
            ..Default::default()
        };
        let e = Dump::open(&zst, &small).err().unwrap();
        assert_eq!(e.kind, ErrorKind::Limit);
    }
}

// ---- bitmap rank lookup against a naive bit walk ----

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn naive_lookup(bitmap: &[u8], bits: u64, first_page: u64, pfn: u64) -> Option<u64> {
    let bit = |n: u64| bitmap[(n / 8) as usize] & (1 << (n % 8)) != 0;
    if pfn >= bits || !bit(pfn) {
        return None;
    }
    let rank = (0..pfn).filter(|&n| bit(n)).count() as u64;
    Some(first_page + rank * 0x1000)
}

#[test]
fn bitmap_rank_matches_naive_walk() {
    let mut rng = Rng(0x5DEE_CE66_D1CE_4E5B);
    let sizes = [
        1u64, 7, 8, 9, 63, 64, 65, 127, 511, 512, 513, 1000, 1023, 1024, 1025, 1537, 2500, 4099,
    ];
    for &bits in &sizes {
        for density in [0u64, 1, 8, 50, 99, 100] {
            // one extra byte of random garbage past the last bit: it must never count
            let mut bitmap: Vec<u8> = (0..bits.div_ceil(8) + 1).map(|_| 0).collect();
            for n in 0..bitmap.len() as u64 * 8 {
                if rng.next() % 100 < density {
                    bitmap[(n / 8) as usize] |= 1 << (n % 8);
                }
            }
            let (file, first_page) = testkit::bitmap_container(&bitmap, bits);
            let c = Container::from_bytes(file).unwrap();
            let set: Vec<u64> = (0..bits)
                .filter(|&n| bitmap[(n / 8) as usize] & (1 << (n % 8)) != 0)
                .collect();
            assert!(c.notes.is_empty(), "{bits}/{density}: {:?}", c.notes);
            assert_eq!(c.pages.page_count(), set.len() as u64);
            for pfn in 0..bits + 130 {
                let want = naive_lookup(&bitmap, bits, first_page, pfn);
                assert_eq!(
                    c.pages.lookup(pfn, &c.bytes),
                    want,
                    "bits {bits} density {density} pfn {pfn}"
                );
                if let Some(off) = want {
                    let page = c.page(pfn).unwrap();
                    assert_eq!(page[..8], pfn.to_le_bytes());
                    assert_eq!(page[8..16], ((off - first_page) / 0x1000).to_le_bytes());
                }
            }
            // present runs: maximal runs of consecutive set bits
            let mut runs: Vec<Run> = Vec::new();
            for &n in &set {
                match runs.last_mut() {
                    Some(r) if r.base_page + r.page_count == n => r.page_count += 1,
                    _ => runs.push(Run {
                        base_page: n,
                        page_count: 1,
                    }),
                }
            }
            assert_eq!(c.pages.present_runs(&c.bytes), runs, "bits {bits}");
        }
    }
}

#[test]
fn bitmap_rank_random_sizes() {
    let mut rng = Rng(0x0123_4567_89AB_CDEF);
    for _ in 0..40 {
        let bits = 1 + rng.next() % 3000;
        let density = rng.next() % 101;
        let bitmap: Vec<u8> = (0..bits.div_ceil(8))
            .map(|_| (0..8).fold(0u8, |b, i| b | (u8::from(rng.next() % 100 < density) << i)))
            .collect();
        let (file, first_page) = testkit::bitmap_container(&bitmap, bits);
        let c = Container::from_bytes(file).unwrap();
        let bit = |n: u64| bitmap[(n / 8) as usize] & (1 << (n % 8)) != 0;
        let mut rank = 0u64;
        for pfn in 0..bits + 64 {
            let want = (pfn < bits && bit(pfn)).then(|| first_page + rank * 0x1000);
            assert_eq!(c.pages.lookup(pfn, &c.bytes), want, "bits {bits} pfn {pfn}");
            if want.is_some() {
                rank += 1;
            }
        }
        assert_eq!(c.pages.page_count(), rank);
    }
}
