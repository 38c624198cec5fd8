//! Bounds-checked little-endian reads from byte slices: every read returns an Option, never panics.

pub trait Le {
    fn u8_at(&self, off: usize) -> Option<u8>;
    fn u16_at(&self, off: usize) -> Option<u16>;
    fn u32_at(&self, off: usize) -> Option<u32>;
    fn u64_at(&self, off: usize) -> Option<u64>;
    fn slice_at(&self, off: usize, len: usize) -> Option<&[u8]>;
}

impl Le for [u8] {
    fn u8_at(&self, off: usize) -> Option<u8> {
        self.get(off).copied()
    }
    fn u16_at(&self, off: usize) -> Option<u16> {
        Some(u16::from_le_bytes(
            self.get(off..off.checked_add(2)?)?.try_into().ok()?,
        ))
    }
    fn u32_at(&self, off: usize) -> Option<u32> {
        Some(u32::from_le_bytes(
            self.get(off..off.checked_add(4)?)?.try_into().ok()?,
        ))
    }
    fn u64_at(&self, off: usize) -> Option<u64> {
        Some(u64::from_le_bytes(
            self.get(off..off.checked_add(8)?)?.try_into().ok()?,
        ))
    }
    fn slice_at(&self, off: usize, len: usize) -> Option<&[u8]> {
        self.get(off..off.checked_add(len)?)
    }
}

/// Parse "0x1A8" or "424" (profile files write offsets in hex, as the specs do).
pub fn parse_int(s: &str) -> Option<u64> {
    let s = s.trim();
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// ASCII/Latin-1 text up to the first NUL.
pub fn c_string(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    b[..end].iter().map(|&c| c as char).collect()
}
