//! Read every present physical page of a dump through the core API and report the rate.
//! Used by benches/bench_read.py, which compares it with `cat FILE > /dev/null` in the same run.
//!
//! usage: read_pages DUMP [threads]   (prints one JSON line)

use std::path::PathBuf;
use std::time::Instant;

use poolscope_core::{Dump, DumpOptions, PAGE_SIZE};
use rayon::prelude::*;

/// Pages per rayon task: large ranges so scheduling and faults don't dominate on 2 cores.
const CHUNK_PAGES: u64 = 4096;

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next().map(PathBuf::from) else {
        eprintln!("usage: read_pages DUMP [threads]");
        std::process::exit(2);
    };
    let threads: usize = args.next().and_then(|t| t.parse().ok()).unwrap_or(0);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("thread pool");

    let t0 = Instant::now();
    let dump = match Dump::open(&path, &DumpOptions::default()) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("read_pages: {e}");
            std::process::exit(1);
        }
    };
    let open_s = t0.elapsed().as_secs_f64();

    let t1 = Instant::now();
    let phys = dump.physical();
    let chunks: Vec<(u64, u64)> = dump
        .present_runs()
        .iter()
        .flat_map(|r| {
            (r.base_page..r.base_page + r.page_count)
                .step_by(CHUNK_PAGES as usize)
                .map(move |s| (s, (s + CHUNK_PAGES).min(r.base_page + r.page_count)))
        })
        .collect();
    // Every byte of every page is read (an XOR over u64 words), so nothing can be skipped.
    let (pages, digest) = pool.install(|| {
        chunks
            .par_iter()
            .map(|&(start, end)| {
                let mut x = 0u64;
                for pfn in start..end {
                    if let Ok(page) = phys.page(pfn) {
                        x ^= page.chunks_exact(8).fold(0u64, |a, w| {
                            a ^ u64::from_le_bytes(w.try_into().unwrap_or_default())
                        });
                    }
                }
                (end - start, x)
            })
            .reduce(|| (0, 0), |a, b| (a.0 + b.0, a.1 ^ b.1))
    });
    let read_s = t1.elapsed().as_secs_f64();
    let bytes = pages * PAGE_SIZE;
    println!(
        "{{\"open_s\": {open_s:.6}, \"read_s\": {read_s:.6}, \"pages\": {pages}, \"bytes\": {bytes}, \"gb_per_s\": {:.3}, \"threads\": {}, \"digest\": \"0x{digest:x}\"}}",
        bytes as f64 / read_s / 1e9,
        pool.current_num_threads()
    );
}
