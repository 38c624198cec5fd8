//! Locating KDBG without (or despite) the header's KdDebuggerDataBlock (dump-format.md §3, §4):
//! nt from PsLoadedModuleList or a physical PE scan, KdCopyDataBlock's `lea`, plain or decoded;
//! and hostile variants of each step, which must end in a reason, never a panic or a hang.

use std::time::{Duration, Instant};

use poolscope_core::kernel::kdbg::Method;
use poolscope_core::kernel::KdbgSource;
use poolscope_core::testkit::{self, Layout, Options, TestDump, Variant};
use poolscope_core::Dump;

const CODE_VA: u64 = testkit::NT_TEXT + testkit::TEXT_KD_COPY_DATA_BLOCK;
const CODE_PA: u64 = testkit::PFN_NT_TEXT * testkit::PAGE + testkit::TEXT_KD_COPY_DATA_BLOCK;
const LDR0_PA: u64 = testkit::PFN_POOL * testkit::PAGE + testkit::POOL_ENTRIES[0];

fn open(t: &TestDump) -> Dump {
    let t0 = Instant::now();
    let d = Dump::from_bytes(t.bytes.clone(), None).expect("opens");
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t0.elapsed()
    );
    d
}

fn build(encode: bool, pointer: bool, module_list: bool) -> TestDump {
    let base = if encode {
        Variant::EncodedKdbg.options()
    } else {
        Options::default()
    };
    testkit::build_with(&Options {
        header_kdbg_pointer: pointer,
        header_module_list: module_list,
        ..base
    })
}

fn notes(d: &Dump) -> String {
    d.notes.join("\n")
}

#[track_caller]
fn check_block(t: &TestDump, d: &Dump) {
    let k = d.kdbg.as_ref().unwrap_or_else(|| panic!("{}", notes(d)));
    assert_eq!(k.va, Some(t.facts.kdbg_va), "{}", notes(d));
    assert_eq!(k.block, t.facts.kdbg_block);
    assert_eq!(k.kern_base(), Some(testkit::KERN_BASE));
    assert_eq!(
        k.field("PsLoadedModuleList"),
        Some(t.facts.ps_loaded_module_list)
    );
    assert_eq!(k.strings.get("NtBuildLab"), Some(&t.facts.nt_build_lab));
    assert_eq!(d.modules.list.len(), 2);
}

#[test]
fn encoded_without_header_pointer_via_module_list() {
    for layout in [Layout::Full, Layout::Bitmap, Layout::Rdmp] {
        let mut o = Variant::EncodedKdbg.options();
        o.layout = layout;
        o.header_kdbg_pointer = false;
        let t = testkit::build_with(&o);
        let d = open(&t);
        check_block(&t, &d);
        let k = d.kdbg.as_ref().unwrap();
        let enc = t.facts.encoding.unwrap();
        assert_eq!(
            k.source,
            KdbgSource::Decoded {
                kdp_data_block_encoded: enc.flag_va,
                ki_wait_never: enc.never,
                ki_wait_always: enc.always,
            }
        );
        let l = &k.located;
        assert_eq!(l.method, Method::KdCopyDataBlock);
        assert_eq!(l.header_pointer, 0);
        assert_eq!(l.header_pointer_problem.as_deref(), Some("it is 0"));
        assert_eq!(l.kd_copy_data_block, Some(CODE_VA));
        let nt = l.nt_image.as_ref().unwrap();
        assert_eq!((nt.base, nt.size), (testkit::KERN_BASE, testkit::NT_SIZE));
        assert!(nt.found_by.contains("PsLoadedModuleList"), "{nt:?}");
        let line = notes(&d);
        assert!(line.contains("KdCopyDataBlock (0x"), "{line}");
        assert!(line.contains("encoded"), "{line}");
        assert!(
            line.contains("header KdDebuggerDataBlock not used: it is 0"),
            "{line}"
        );
    }
}

#[test]
fn plain_without_header_pointer_via_kd_copy_data_block() {
    let t = build(false, false, true);
    let d = open(&t);
    check_block(&t, &d);
    let k = d.kdbg.as_ref().unwrap();
    assert_eq!(k.source, KdbgSource::ImageScan);
    assert_eq!(k.located.method, Method::KdCopyDataBlock);
    assert_eq!(k.located.kd_copy_data_block, Some(CODE_VA));
    assert!(notes(&d).contains("plain"), "{}", notes(&d));
}

#[test]
fn plain_without_header_pointer_or_code_via_owner_tag() {
    let mut t = build(false, false, true);
    t.patch_pa(CODE_PA, &[0xCC; 2]); // no `cmp byte [rip+x], 0` any more
    let d = open(&t);
    check_block(&t, &d);
    let k = d.kdbg.as_ref().unwrap();
    assert_eq!(k.source, KdbgSource::ImageScan);
    assert_eq!(k.located.method, Method::ImageOwnerTag);
    assert_eq!(k.located.kd_copy_data_block, None);
}

#[test]
fn encoded_at_header_pointer_says_where_keys_came_from() {
    let t = testkit::build(Variant::EncodedKdbg);
    let d = open(&t);
    check_block(&t, &d);
    let l = &d.kdbg.as_ref().unwrap().located;
    assert_eq!(l.method, Method::HeaderPointer);
    assert_eq!(l.header_pointer, t.facts.kdbg_va);
    assert_eq!(l.header_pointer_problem, None);
    assert_eq!(l.kd_copy_data_block, Some(CODE_VA));
    assert_eq!(
        l.nt_image.as_ref().map(|n| n.base),
        Some(testkit::KERN_BASE)
    );
}

#[test]
fn encoded_with_bad_header_pointer_found_through_code() {
    for ptr in [
        testkit::NT_DATA + 0x800,
        testkit::NT_HOLE,
        testkit::NT_MISSING,
        testkit::KERN_BASE,
        1,
        u64::MAX - 0x17,
        testkit::NON_CANONICAL_VA,
    ] {
        let mut t = testkit::build(Variant::EncodedKdbg);
        t.patch_u64(testkit::HDR_KDBG, ptr);
        let d = open(&t);
        check_block(&t, &d);
        let l = &d.kdbg.as_ref().unwrap().located;
        assert_eq!(l.method, Method::KdCopyDataBlock, "0x{ptr:x}");
        assert_eq!(l.header_pointer, ptr);
        assert!(l.header_pointer_problem.is_some());
    }
}

#[test]
fn encoded_without_pointer_or_module_list_via_physical_pe_scan() {
    for layout in [Layout::Full, Layout::Bitmap, Layout::Rdmp] {
        let mut o = Variant::EncodedKdbg.options();
        o.layout = layout;
        o.header_kdbg_pointer = false;
        o.header_module_list = false;
        let t = testkit::build_with(&o);
        let d = open(&t);
        let k = d.kdbg.as_ref().unwrap_or_else(|| panic!("{}", notes(&d)));
        assert!(matches!(k.source, KdbgSource::Decoded { .. }));
        assert_eq!(k.va, Some(t.facts.kdbg_va));
        assert_eq!(k.block, t.facts.kdbg_block);
        let nt = k.located.nt_image.as_ref().unwrap();
        assert_eq!(nt.base, testkit::KERN_BASE);
        assert!(nt.found_by.contains("physical"), "{nt:?}");
        // the module list comes from the decoded block's PsLoadedModuleList
        assert_eq!(d.modules.list.len(), 2);
    }
}

#[test]
fn encoded_without_pointer_flag_clear_or_keys_wrong() {
    let mut t = build(true, false, true);
    t.patch_pa(testkit::data_pa(testkit::DATA_KDP_DATA_BLOCK_ENCODED), &[0]);
    let d = open(&t);
    assert!(d.kdbg.is_none());
    let n = notes(&d);
    assert!(
        n.contains("KdpDataBlockEncoded") && n.contains("is 0, not 1"),
        "{n}"
    );
    assert!(n.contains("debugger data block not found"), "{n}");
    assert_eq!(d.modules.list.len(), 2);

    let mut t = build(true, false, true);
    t.patch_pa_u64(testkit::data_pa(testkit::DATA_KI_WAIT_NEVER), 0x1111);
    let d = open(&t);
    assert!(d.kdbg.is_none());
    assert!(notes(&d).contains("wrong keys"), "{}", notes(&d));

    // the code is gone: the reason says no code named a block
    let mut t = build(true, false, true);
    t.patch_pa(CODE_PA, &[0x90; 7]);
    let d = open(&t);
    assert!(d.kdbg.is_none());
    assert!(
        notes(&d).contains("no KdCopyDataBlock code naming a block"),
        "{}",
        notes(&d)
    );
}

#[test]
fn hostile_code_operands() {
    // each rel32 of the snippet (cmp, lea, mov, mov) pointed anywhere
    let rels = [CODE_PA + 2, CODE_PA + 12, CODE_PA + 19, CODE_PA + 26];
    let values = [
        0x7FFF_FFFFu32,
        0x8000_0000,
        0xFFFF_FFFF,
        0,
        0xFFFF_FFF0,
        0x0000_0E00,
    ];
    for pointer in [false, true] {
        for &rel in &rels {
            for v in values {
                let mut t = build(true, pointer, true);
                t.patch_pa(rel, &v.to_le_bytes());
                let d = open(&t);
                if let Some(k) = &d.kdbg {
                    // only a rel32 that still names the same targets may succeed
                    assert_eq!(k.block, t.facts.kdbg_block);
                }
            }
        }
    }
    // the lea names the last bytes of the image and of the address space's mapped pages
    let mut t = build(true, false, true);
    let end = testkit::KERN_BASE + testkit::NT_SIZE - 8;
    let rel = (end.wrapping_sub(CODE_VA + 16) as i64) as i32;
    t.patch_pa(CODE_PA + 12, &rel.to_le_bytes());
    let d = open(&t);
    assert!(d.kdbg.is_none());
}

#[test]
fn image_full_of_cmp_patterns_is_bounded() {
    // .text and .data filled with cmp/lea/mov/mov windows naming each other: every hit is
    // examined up to the bounds, nothing found, and the open stays fast
    let mut t = build(true, false, true);
    let mut snippet = vec![0x80, 0x3D, 0, 0, 0, 0, 0];
    snippet.extend_from_slice(&[0x48, 0x8D, 0x05, 0, 0, 0, 0]);
    snippet.extend_from_slice(&[0x48, 0x8B, 0x05, 0, 0, 0, 0]);
    snippet.extend_from_slice(&[0x48, 0x8B, 0x05, 0, 0, 0, 0]);
    let page: Vec<u8> = snippet.iter().copied().cycle().take(0x1000).collect();
    t.patch_pa(testkit::PFN_NT_TEXT * testkit::PAGE, &page);
    let d = open(&t);
    assert!(d.kdbg.is_none());
    let page: Vec<u8> = [0x80u8, 0x3D]
        .iter()
        .copied()
        .cycle()
        .take(0x1000)
        .collect();
    let mut t = build(true, false, true);
    t.patch_pa(testkit::PFN_NT_TEXT * testkit::PAGE, &page);
    t.patch_pa(testkit::PFN_NT_DATA * testkit::PAGE, &page);
    let d = open(&t);
    assert!(d.kdbg.is_none());
}

#[test]
fn hostile_first_module_entry() {
    let cases: [(u64, u64); 9] = [
        (0x30, 0),
        (0x30, u64::MAX),
        (0x30, !0xFFF),
        (0x30, testkit::NON_CANONICAL_VA),
        (0x30, testkit::NT_HOLE),
        (0x30, testkit::NT_DATA),
        (0x30, testkit::DRIVER_BASE),
        (0x40, 0),
        (0x40, 0xFFFF_FFFF),
    ];
    for (off, v) in cases {
        let mut t = build(true, false, true);
        if off == 0x40 {
            t.patch_pa(LDR0_PA + off, &(v as u32).to_le_bytes());
        } else {
            t.patch_pa_u64(LDR0_PA + off, v);
        }
        let d = open(&t);
        // a bad DllBase falls back to the image below the header's PsLoadedModuleList (nt
        // .data holds the list head); a bad SizeOfImage to the PE header's
        let k = d
            .kdbg
            .as_ref()
            .unwrap_or_else(|| panic!("+0x{off:x} = 0x{v:x}: {}", notes(&d)));
        assert_eq!(k.block, t.facts.kdbg_block, "+0x{off:x} = 0x{v:x}");
    }
    // the list head's Flink points at itself, at nothing, near the top of the address space
    for flink in [
        testkit::data_va(testkit::DATA_PS_LOADED_MODULE_LIST),
        0,
        u64::MAX - 3,
    ] {
        let mut t = build(true, false, true);
        t.patch_pa_u64(testkit::data_pa(testkit::DATA_PS_LOADED_MODULE_LIST), flink);
        let d = open(&t);
        let k = d.kdbg.as_ref().unwrap();
        assert_eq!(k.block, t.facts.kdbg_block);
    }
}

#[test]
fn hostile_pe_headers_in_physical_memory() {
    // no header pointer, no module list: only the physical PE scan can find nt
    let nt_pa = testkit::PFN_NT_HEADER * testkit::PAGE;
    let cases: [(u64, &[u8]); 8] = [
        (0x3C, &0xFFFF_FFFFu32.to_le_bytes()),
        (0x3C, &0xFFCu32.to_le_bytes()),
        (0x3C, &0xFB0u32.to_le_bytes()),
        (0x80 + 0x30, &u64::MAX.to_le_bytes()),
        (0x80 + 0x30, &testkit::DRIVER_BASE.to_le_bytes()),
        (0x80 + 0x50, &0u32.to_le_bytes()),
        (0x80 + 0x50, &0xFFFF_FFFFu32.to_le_bytes()),
        (0x80 + 0x18, &0x10Bu16.to_le_bytes()),
    ];
    for (off, bytes) in cases {
        let mut t = build(true, false, false);
        t.patch_pa(nt_pa + off, bytes);
        let d = open(&t);
        if let Some(k) = &d.kdbg {
            assert_eq!(k.block, t.facts.kdbg_block);
        } else {
            assert!(notes(&d).contains("physical memory"), "{}", notes(&d));
        }
    }
    // every stored page starts with an x64 PE header naming nt's base: each is tried, bounded
    let mut t = build(true, false, false);
    for pfn in testkit::STORED_PFNS {
        if pfn == testkit::PFN_NT_HEADER
            || pfn == testkit::PFN_NT_TEXT
            || pfn == testkit::PFN_NT_DATA
        {
            continue;
        }
        let pa = pfn * testkit::PAGE;
        t.patch_pa(pa, b"MZ");
        t.patch_pa(pa + 0x3C, &0x800u32.to_le_bytes());
    }
    let d = open(&t);
    exercise_kdbg(&d);
}

fn exercise_kdbg(d: &Dump) {
    if let Some(k) = &d.kdbg {
        let _ = k.describe();
        let _ = k.kern_base();
    }
    let _ = d.kernel_base();
    let _ = d.symbolize(testkit::KERN_BASE);
}
