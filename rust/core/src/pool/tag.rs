//! Pool tags: four bytes, first character first; bit 31 is the protected-pool bit (Win7 object
//! tags), which the tracker strips — so does poolscope before comparing or counting.

pub const PROTECTED: u32 = 0x8000_0000;

/// The tag as the tracker keys it (protected bit cleared).
#[inline]
pub fn normalize(tag: u32) -> u32 {
    tag & !PROTECTED
}

/// Printable form: four characters, non-printable bytes as '?'. Trailing spaces are kept, as
/// WinDbg prints them ("Abc ").
pub fn to_string(tag: u32) -> String {
    normalize(tag)
        .to_le_bytes()
        .iter()
        .map(|&b| {
            if (0x20..0x7F).contains(&b) {
                b as char
            } else {
                '?'
            }
        })
        .collect()
}

/// Parse "Leak", "Abc" (padded with spaces) or "0x6B61654C".
pub fn parse(s: &str) -> Option<u32> {
    if let Some(h) = s.strip_prefix("0x") {
        return u32::from_str_radix(h, 16).ok();
    }
    let b = s.as_bytes();
    if b.is_empty() || b.len() > 4 || !b.iter().all(|c| (0x20..0x7F).contains(c)) {
        return None;
    }
    let mut t = [b' '; 4];
    t[..b.len()].copy_from_slice(b);
    Some(u32::from_le_bytes(t))
}

/// A plausible tag in a header: the first three bytes printable ASCII (MemProcFS's test), the
/// fourth printable once the protected bit is cleared. Scanners accept nothing else, so random
/// data does not produce phantom tags.
#[inline]
pub fn plausible(tag: u32) -> bool {
    let b = normalize(tag).to_le_bytes();
    b.iter().all(|c| (0x20..0x7F).contains(c)) && b[0] != b' '
}
