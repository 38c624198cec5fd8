#!/bin/sh
# Regenerate the (gitignored) seed corpus for the fuzz targets (open_translate_read; analyze
# takes the same seeds: cp corpus/open_translate_read/* corpus/analyze/) from the
# testkit: every dump variant and its neighbours (KDBG by scan, dump types 6/8/9, a bare
# bitmap, 32-bit and minidump headers). Run from anywhere.
#
# Then fuzz (stable toolchain, hence RUSTC_BOOTSTRAP; -a keeps overflow checks on; the core
# is safe Rust outside its mmap, so no sanitizer buys ~8x more executions):
#   cd rust/fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run -a -s none --fuzz-dir . \
#     open_translate_read corpus/open_translate_read -- \
#     -max_total_time=600 -rss_limit_mb=4096 -max_len=262144
set -eu
cd "$(dirname "$0")"
cargo run --quiet --example seeds -- corpus/open_translate_read
