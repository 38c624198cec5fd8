//! Write the seed corpus: testkit dumps of every variant plus the neighbouring cases (KDBG by
//! scan, other dump types, foreign formats). Usage: `cargo run --example seeds -- <dir>`.

use std::path::PathBuf;

use poolscope_core::testkit::{self, Layout, Options, Variant};

fn main() {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "corpus/open_translate_read".into()),
    );
    std::fs::create_dir_all(&dir).expect("create corpus dir");
    let mut seeds: Vec<(String, Vec<u8>)> = Vec::new();
    for v in Variant::ALL {
        seeds.push((v.name().into(), testkit::build(v).bytes));
        for (tag, kdbg_ptr, list) in [("image_scan", false, true), ("phys_scan", false, false)] {
            let mut o = v.options();
            o.header_kdbg_pointer = kdbg_ptr;
            o.header_module_list = list;
            seeds.push((format!("{}_{tag}", v.name()), testkit::build_with(&o).bytes));
        }
    }
    for (name, layout, ty) in [
        ("live_bitmap", Layout::Bitmap, 6),
        ("rdmp_kernel", Layout::Rdmp, 8),
        ("rdmp_kernel_user", Layout::Rdmp, 9),
    ] {
        let o = Options {
            layout,
            dump_type: Some(ty),
            ..Options::default()
        };
        seeds.push((name.into(), testkit::build_with(&o).bytes));
    }
    // a sparse 700-bit bitmap (not a multiple of 64) over pages with no kernel structures
    let mut bitmap = vec![0u8; 88];
    for n in (0..700).step_by(37) {
        bitmap[n / 8] |= 1 << (n % 8);
    }
    seeds.push((
        "bitmap_only".into(),
        testkit::bitmap_container(&bitmap, 700).0,
    ));
    seeds.push(("x86_pagedump".into(), testkit::x86_pagedump()));
    seeds.push(("user_minidump".into(), testkit::user_minidump()));
    for (name, bytes) in &seeds {
        std::fs::write(dir.join(format!("seed_{name}")), bytes).expect("write seed");
    }
    println!("wrote {} seeds to {}", seeds.len(), dir.display());
}
