//! A field of a fixed-size kernel structure: offset and width, optionally a bit range. Layouts
//! come from profiles or symbol files; this is how either is read.

use serde::Deserialize;

use crate::bytes::{parse_int, Le};

/// A field of a fixed-size entry: offset and width, optionally a bit range of it.
#[derive(Debug, Clone, Deserialize)]
pub struct Field {
    pub offset: String,
    pub width: u8,
    #[serde(default)]
    pub shift: Option<u8>,
    #[serde(default)]
    pub bits: Option<u8>,
}

#[derive(Debug, Clone, Copy)]
pub struct FieldAt {
    offset: usize,
    width: u8,
    shift: u8,
    bits: u8,
}

impl FieldAt {
    /// A field at `offset` of `width` bytes, bits `shift..shift+bits` of it.
    pub fn at(offset: usize, width: u8, shift: u8, bits: u8) -> Option<Self> {
        matches!(width, 1 | 2 | 4 | 8).then_some(Self {
            offset,
            width,
            shift,
            bits: bits.min(64),
        })
    }

    pub fn new(f: &Field) -> Option<Self> {
        let offset = parse_int(&f.offset)? as usize;
        matches!(f.width, 1 | 2 | 4 | 8).then_some(Self {
            offset,
            width: f.width,
            shift: f.shift.unwrap_or(0),
            bits: f.bits.unwrap_or(f.width * 8),
        })
    }

    #[inline]
    pub fn read(&self, entry: &[u8]) -> u64 {
        let raw = match self.width {
            1 => entry.u8_at(self.offset).map(u64::from),
            2 => entry.u16_at(self.offset).map(u64::from),
            4 => entry.u32_at(self.offset).map(u64::from),
            _ => entry.u64_at(self.offset),
        }
        .unwrap_or(0);
        let v = raw >> self.shift;
        if self.bits >= 64 {
            v
        } else {
            v & ((1u64 << self.bits) - 1)
        }
    }

    pub fn end(&self) -> usize {
        self.offset + self.width as usize
    }
}
